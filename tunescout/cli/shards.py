"""`tunescout export | import | move`: carry a shard's tracks and fingerprints between instances of any type.

Works on the stores directly, not through the services: stop `tunescout up` (or the matcher) first when an
embedded shard is involved, since one process owns its directory. The export file is a zip holding
`manifest.json` (format and fingerprint versions, the tracks' metadata) and one `.npy` pair per track
(read back with allow_pickle=False: no code in a data file), plus its stored peaks (`.peaks`, the blob of
`engine.verify`) where it has them; an export without them imports as before. Import skips a track whose
audio any shard of the destination config already holds, so a rerun after Ctrl-C just goes on.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from services.matcher.shards import open_shard
from tunescout.common.config import Config, ConfigError, load_config
from tunescout.engine.errors import EngineError
from tunescout.engine.params import FINGERPRINT_VERSION
from tunescout.store.shard import FingerprintShard, TrackMeta, TrackRecord

logger = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1
BATCH_TRACKS = 64  # tracks read per scan of the source shard


@contextmanager
def _opened(config: Config, name: str, data_dir: Path) -> Iterator[FingerprintShard]:
    stores = {s.name: s for s in config.instances}
    if name not in stores:
        raise ConfigError(f"{config.source} has no instance named {name!r}; it has {', '.join(stores)}")
    shard = open_shard(stores[name], data_dir)
    try:
        yield shard
    finally:
        shard.close()


def _meta(track: TrackRecord) -> TrackMeta:
    return TrackMeta(track.file_sha1, track.title, track.artist, track.album, track.year, track.duration_s)


def _batches(
    shard: FingerprintShard, tracks: list[TrackRecord]
) -> Iterator[tuple[TrackRecord, np.ndarray, np.ndarray, bytes]]:
    """Each track with its fingerprints and its stored peaks (b"" if it has none)."""
    for i in range(0, len(tracks), BATCH_TRACKS):
        part = tracks[i : i + BATCH_TRACKS]
        ids = [t.track_id for t in part]
        postings = shard.track_postings(ids)
        peaks = shard.track_peaks(ids)
        for track in part:
            if track.track_id in postings:  # deleted meanwhile otherwise
                hashes, offsets = postings[track.track_id]
                yield track, hashes, offsets, peaks.get(track.track_id, b"")


def export_shard(config: Config, name: str, data_dir: Path, out: Path) -> int:
    """Writes every live track of shard `name` to the zip `out`; returns how many."""
    with _opened(config, name, data_dir) as shard, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        tracks = shard.list_tracks()
        manifest = {
            "format_version": EXPORT_FORMAT_VERSION,
            "fingerprint_version": FINGERPRINT_VERSION,
            "tracks": [],
        }
        for track, hashes, offsets, peaks in tqdm(
            _batches(shard, tracks), total=len(tracks), unit="track", file=sys.stderr
        ):
            key = f"tracks/{track.track_id}"
            for suffix, array in (("hashes", hashes.astype("<u4")), ("offsets", offsets.astype("<i4"))):
                buffer = io.BytesIO()
                np.save(buffer, array, allow_pickle=False)
                archive.writestr(f"{key}.{suffix}.npy", buffer.getvalue())
            if peaks:
                archive.writestr(f"{key}.peaks", peaks)
            manifest["tracks"].append(
                {
                    "key": key,
                    "file_sha1": track.file_sha1,
                    "title": track.title,
                    "artist": track.artist,
                    "album": track.album,
                    "year": track.year,
                    "duration_s": track.duration_s,
                }
            )
        archive.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False))
    return len(manifest["tracks"])


def _holders(config: Config, data_dir: Path, target: str) -> list[FingerprintShard]:
    return [open_shard(s, data_dir) for s in config.instances if s.name != target]


def import_shard(config: Config, name: str, data_dir: Path, source: Path) -> tuple[int, int]:
    """Stores the tracks of the export `source` in shard `name`; returns (stored, already there)."""
    with zipfile.ZipFile(source) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        if manifest.get("format_version") != EXPORT_FORMAT_VERSION:
            raise EngineError(
                f"{source}: export format {manifest.get('format_version')} is not one this "
                f"tunescout reads ({EXPORT_FORMAT_VERSION})"
            )
        if manifest.get("fingerprint_version") != FINGERPRINT_VERSION:
            raise EngineError(
                f"{source} holds fingerprints of version {manifest.get('fingerprint_version')}; "
                f"this tunescout stores version {FINGERPRINT_VERSION}: re-fingerprint the audio"
            )
        names = set(archive.namelist())
        others = _holders(config, data_dir, name)
        stored = present = 0
        try:
            with _opened(config, name, data_dir) as shard:
                for entry in tqdm(manifest["tracks"], unit="track", file=sys.stderr):
                    if any(o.find_by_sha1(entry["file_sha1"]) is not None for o in others):
                        present += 1
                        continue
                    hashes = np.load(
                        io.BytesIO(archive.read(f"{entry['key']}.hashes.npy")), allow_pickle=False
                    )
                    offsets = np.load(
                        io.BytesIO(archive.read(f"{entry['key']}.offsets.npy")), allow_pickle=False
                    )
                    meta = TrackMeta(
                        entry["file_sha1"],
                        entry["title"],
                        entry["artist"],
                        entry["album"],
                        entry["year"],
                        entry["duration_s"],
                    )
                    peaks_name = f"{entry['key']}.peaks"
                    peaks = archive.read(peaks_name) if peaks_name in names else b""
                    outcome = shard.ingest(meta, hashes, offsets, peaks)
                    present += outcome.already_present
                    stored += not outcome.already_present
        finally:
            for other in others:
                other.close()
    return stored, present


def move_tracks(config: Config, source: str, target: str, data_dir: Path, limit: int | None) -> int:
    """Moves up to `limit` tracks (all by default) from shard `source` to shard `target` of one config:
    each is stored in the target, then deleted from the source. Returns how many moved."""
    if source == target:
        raise ConfigError("--from and --to name the same shard")
    with _opened(config, source, data_dir) as src, _opened(config, target, data_dir) as dst:
        tracks = src.list_tracks()[: limit if limit is not None else None]
        moved = 0
        for track, hashes, offsets, peaks in tqdm(
            _batches(src, tracks), total=len(tracks), unit="track", file=sys.stderr
        ):
            dst.ingest(_meta(track), hashes, offsets, peaks)  # idempotent: a rerun after a crash goes on
            src.delete_track(track.track_id)
            moved += 1
    return moved


def run_shard_command(
    command: str,
    config_path: Path | None,
    data_dir: Path,
    shard: str | None = None,
    file: Path | None = None,
    source: str | None = None,
    target: str | None = None,
    limit: int | None = None,
) -> int:
    """The `export`, `import` and `move` commands: prints what was done; 2 and a message on error."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(config_path)
        if command == "export":
            assert shard is not None and file is not None
            print(
                f"exported {export_shard(config, shard, data_dir, file)} tracks of shard {shard!r} to {file}"
            )
        elif command == "import":
            assert shard is not None and file is not None
            stored, present = import_shard(config, shard, data_dir, file)
            print(f"imported into shard {shard!r}: {stored} stored, {present} already there")
        else:
            assert source is not None and target is not None
            moved = move_tracks(config, source, target, data_dir, limit)
            print(f"moved {moved} tracks from shard {source!r} to shard {target!r}")
    except (ConfigError, EngineError, OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        print(f"tunescout {command}: {exc}", file=sys.stderr)
        return 2
    return 0
