#!/usr/bin/env bash
# Builds the held-out corpus: 69 freely licensed tracks (about 6 hours) from Debian game packages that the
# dev corpus (../shared/corpus) does not draw from, for checking that tuning on the dev corpus carries
# over to music it has not seen. Tracks are listed in bench/heldout_tracks.tsv (same columns as the dev
# corpus's dev_tracks.tsv, so ../shared/corpus/make_queries.py reads it).
# Usage: bench/build_heldout_corpus.sh [CACHE_DIR]   (default: /work/cache/heldout); prints CACHE_DIR.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-/work/cache/heldout}
mkdir -p "$cache/debs" "$cache/extract"
for pkg in $(tail -n +2 "$here/heldout_tracks.tsv" | cut -f1 | sort -u); do
  [ -d "$cache/extract/$pkg" ] && continue
  ( cd "$cache/debs" && (apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1; apt-get download "$pkg" >/dev/null; }) )
  dpkg-deb -x "$cache/debs/${pkg}"_*.deb "$cache/extract/$pkg"
done
missing=0
while IFS=$'\t' read -r pkg rel dur codec sr ch sha; do
  [ "$pkg" = package ] && continue
  [ -f "$cache/extract/$pkg/$rel" ] || { missing=$((missing+1)); echo "missing: $pkg/$rel" >&2; }
done < "$here/heldout_tracks.tsv"
[ $missing -eq 0 ] || echo "warning: $missing tracks missing (a newer package version?)" >&2
echo "$cache"
