#!/usr/bin/env python3
"""Paired A/B of matching settings: the default `MatchParams` against a variant, query by query.

  .venv/bin/python bench/match_ab.py --set hypothesis_max_triplets=1000000000 \
      [--store /work/cache/bench/store/shard_10000] [--queries /work/cache/queries] [--limit 600] \
      [--whole-tracks N --corpus /work/cache/corpus/extract] [--out bench/results/match_ab.json]

On a shared machine timings drift by 20-40 % between runs, more than most changes to matching save, so
comparing two engine_bench runs says little. Here each query is matched under both settings back to back,
in alternating order, against the same shard in one process: the drift falls on both alike. Also reports
answers that differ (track and offset of the top result) and the hashes each setting looked up.
`--whole-tracks N` queries N whole corpus tracks (an upload of the song itself) and each reversed (as
long and dense, stored nowhere: it runs every stage) instead of the clips.
The store is one that engine_bench.py built (STORE/shard or its 10,000-track copy STORE/shard_10000).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from engine_bench import (
    FINGERPRINT_VERSION,
    MATCH_PARAMS,
    PARAMS,
    Query,
    _git_describe,
    _query_peaks,
    _read_files,
    _titles,
    load_queries,
    load_reference,
    select_queries,
)

from tunescout.engine.decode import decode_all
from tunescout.engine.errors import AudioError
from tunescout.engine.fingerprint import extract_peaks
from tunescout.engine.match import TrackMatch, match_peaks, shard_track_sizes
from tunescout.engine.params import MatchParams
from tunescout.engine.peaks import Peaks, Role
from tunescout.store.embedded import EmbeddedShard
from tunescout.store.shard import Postings


def variant(settings: Sequence[str]) -> MatchParams:
    """The default MatchParams with FIELD=VALUE settings applied (values parsed as JSON: 8, 0.5, [1, 2])."""
    fields = {f.name: f for f in dataclasses.fields(MatchParams)}
    changes: dict[str, Any] = {}
    for setting in settings:
        name, sep, raw = setting.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {setting!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        value = json.loads(raw)
        changes[name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(MATCH_PARAMS, **changes)


def _summary(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def _answer(matches: list[TrackMatch]) -> tuple[int, int] | None:
    return (matches[0].track_id, matches[0].offset_frames) if matches else None


WHOLE = "whole track"
WHOLE_REVERSED = "whole track reversed"  # as long, as dense, and stored nowhere


def _group(q: Query) -> str:
    return q.degradation if q.degradation in (WHOLE, WHOLE_REVERSED) else f"{q.duration_s:g}s"


def whole_tracks(queries_dir: Path, corpus: Path, n: int) -> list[tuple[Query, Peaks]]:
    """The first `n` corpus tracks of 2-5 minutes as queries, whole (an upload of the song itself: its
    start is at 0) and reversed (what an unstored song costs)."""
    chosen = [t for t in load_reference(queries_dir, corpus) if 120 <= t.duration_s <= 300][:n]
    out = []
    for track in chosen:
        pcm, _ = decode_all(track.path, sample_rate_hz=PARAMS.sample_rate_hz)
        for kind, signal, truth in ((WHOLE, pcm, track.key), (WHOLE_REVERSED, pcm[::-1].copy(), None)):
            query = Query(
                query_file=f"{track.key} ({kind})", path=track.path, source_track=truth, start_s=0.0,
                duration_s=track.duration_s, degradation=kind, source_span_s=track.duration_s,
            )  # fmt: skip
            out.append((query, extract_peaks([signal], PARAMS, Role.QUERY)))
    return out


def _named(answer: tuple[int, int] | None, titles: dict[int, str]) -> list[Any] | None:
    """[track title, offset in seconds] of an answer, for the report."""
    if answer is None:
        return None
    return [titles.get(answer[0], f"#{answer[0]}"), round(answer[1] * PARAMS.frame_seconds, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="the variant (repeat)")
    ap.add_argument("--store", type=Path, default=Path("/work/cache/bench/store/shard_10000"))
    ap.add_argument("--queries", type=Path, default=Path("/work/cache/queries"))
    ap.add_argument("--limit", type=int, default=600, help="about N queries (whole excerpts), 0 = all")
    ap.add_argument(
        "--whole-tracks", type=int, default=0, metavar="N",
        help="instead of the clips: N whole corpus tracks as queries, and each reversed (unstored)",
    )  # fmt: skip
    ap.add_argument(
        "--corpus", type=Path, default=Path("/work/cache/corpus/extract"), help="for --whole-tracks"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/results/match_ab.json"))
    args = ap.parse_args()
    if not args.set:
        raise SystemExit("give the variant with --set FIELD=VALUE (see MatchParams)")
    other = variant(args.set)

    queries = select_queries(load_queries(args.queries), args.limit, args.seed)
    shard = EmbeddedShard(args.store, fingerprint_version=FINGERPRINT_VERSION)
    try:
        sizes = shard_track_sizes(shard)
        stored = shard.stats().n_hashes
        titles = _titles(shard)
        _read_files(shard.path)  # the store in the page cache, as a serving matcher has it
        looked = [0]

        def lookup(hashes: np.ndarray, cap: int) -> Postings:
            looked[0] += hashes.size
            return shard.lookup(hashes, cap)

        peaks = whole_tracks(args.queries, args.corpus, args.whole_tracks) if args.whole_tracks else []
        for q in [] if args.whole_tracks else queries:
            try:
                peaks.append((q, _query_peaks(q, PARAMS)[0]))
            except AudioError:
                continue

        def run(p: Any, mp: MatchParams) -> tuple[float, int, tuple[int, int] | None]:
            looked[0] = 0
            t0 = time.perf_counter()
            found = match_peaks(p, lookup, sizes, PARAMS, mp, stored)
            return time.perf_counter() - t0, looked[0], _answer(found)

        for _, p in peaks[:3]:  # every stage's kernels loaded before anything is timed
            run(p, MATCH_PARAMS)
            run(p, other)
        base_ms, var_ms, base_hashes, var_hashes, differ = [], [], [], [], []
        for i, (q, p) in enumerate(peaks):
            if i % 2:
                a, b = run(p, MATCH_PARAMS), run(p, other)
            else:
                b, a = run(p, other), run(p, MATCH_PARAMS)
            base_ms.append(1e3 * a[0])
            var_ms.append(1e3 * b[0])
            base_hashes.append(a[1])
            var_hashes.append(b[1])
            if a[2] != b[2]:
                differ.append(
                    {
                        "query": q.query_file,
                        "truth": q.source_track,
                        "default": _named(a[2], titles),
                        "variant": _named(b[2], titles),
                    }
                )
    finally:
        shard.close()

    groups = np.array([_group(q) for q, _ in peaks])
    base, var = np.array(base_ms), np.array(var_ms)
    result = {
        "git": _git_describe(),
        "store": {"path": str(args.store), "tracks": len(titles), "hashes": stored},
        "variant": {s.partition("=")[0]: json.loads(s.partition("=")[2]) for s in args.set},
        "queries": len(peaks),
        "default": _summary(base) | {"hashes_per_query": round(float(np.mean(base_hashes)))},
        "with_variant": _summary(var) | {"hashes_per_query": round(float(np.mean(var_hashes)))},
        "by_group": {  # clip length, or whole track / reversed
            g: {"default": _summary(base[groups == g]), "with_variant": _summary(var[groups == g])}
            for g in sorted(set(groups.tolist()))
        },
        "answers_differ": differ,
    }
    print(f"{len(peaks)} queries against {len(titles)} tracks; variant {result['variant']}")
    for label in ("default", "with_variant"):
        s = result[label]
        print(
            f"  {label:13s} p50 {s['p50_ms']:6.1f} ms  p99 {s['p99_ms']:6.1f} ms  mean {s['mean_ms']:6.1f} ms"
            f"  {s['hashes_per_query']:,} hashes looked up per query"
        )
    for d, s in result["by_group"].items():
        print(
            f"  {d:>20}: mean {s['default']['mean_ms']:.1f} -> {s['with_variant']['mean_ms']:.1f} ms, "
            f"p99 {s['default']['p99_ms']:.1f} -> {s['with_variant']['p99_ms']:.1f} ms"
        )
    print(f"  answers that differ: {len(differ)}")
    for d in differ:
        print(f"    {d['query']}: {d['default']} -> {d['variant']} (truth {d['truth']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
