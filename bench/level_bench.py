#!/usr/bin/env python3
"""Level benchmark: recall of quiet recordings and of quietly stored tracks, for one or more peak floors.

  .venv/bin/python bench/level_bench.py --corpus /work/cache/corpus/extract --queries /work/cache/queries \
      [--tracks 25] [--floors -100 -70] [--out bench/results/levels.json]

Peaks below `FingerprintParams.peak_floor_db` are never picked, so the floor decides how quiet a clip or a
stored track may be and still be recognised. For each floor, `--tracks` corpus tracks (the sources of the
first positive clips) are stored in a temporary shard, then
- **quiet queries**: their 10 s and 3 s clean, phone and white-noise (SNR 10 dB) clips, made 0 to 70 dB
  quieter, are recognised against the tracks stored at full level;
- **quiet tracks**: the tracks are stored 30, 45 and 60 dB quieter, and their 10 s clean, MP3, white-noise
  (SNR 5 dB) and phone clips at full level are recognised against them.
Quieter audio is kept as 16-bit samples (as a file would hold it). A hit is the right track within
0.2 s of the clip's start. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from engine_bench import (
    FINGERPRINT_VERSION,
    MATCH_PARAMS,
    PARAMS,
    Query,
    _git_describe,
    _titles,
    load_queries,
    right_answer,
)

from tunescout.engine.decode import decode_all
from tunescout.engine.fingerprint import extract_peaks, fingerprint_pcm
from tunescout.engine.match import match_peaks, shard_track_sizes
from tunescout.engine.params import FingerprintParams
from tunescout.engine.peaks import Role
from tunescout.store.embedded import EmbeddedShard
from tunescout.store.shard import TrackMeta

QUERY_GAINS_DB = (0, -30, -45, -60, -70)
QUERY_DEGRADATIONS = ("clean", "phone_room", "white_snr10")
TRACK_GAINS_DB = (0, -30, -45, -60)
TRACK_DEGRADATIONS = ("clean", "mp3_64k", "white_snr5", "phone_room")


def at_gain(pcm: np.ndarray, gain_db: float) -> np.ndarray:
    """`pcm` made `gain_db` louder (negative: quieter), rounded to 16-bit steps."""
    return (np.round(pcm * 10 ** (gain_db / 20) * 32767) / 32767).astype(np.float32)


def store_tracks(
    directory: Path, tracks: dict[str, np.ndarray], gain_db: float, params: FingerprintParams
) -> tuple[EmbeddedShard, int]:
    shard = EmbeddedShard(directory, fingerprint_version=FINGERPRINT_VERSION)
    n_hashes = 0
    for i, (key, pcm) in enumerate(sorted(tracks.items())):
        fp = fingerprint_pcm(at_gain(pcm, gain_db), params, Role.REFERENCE)
        n_hashes += len(fp)
        meta = TrackMeta(file_sha1=f"{i:040x}", title=key, duration_s=pcm.size / params.sample_rate_hz)
        shard.ingest(meta, fp.hashes, fp.offsets)
    return shard, n_hashes


def right_answers(
    shard: EmbeddedShard, clips: Sequence[tuple[Query, np.ndarray]], params: FingerprintParams
) -> int:
    titles, sizes, stored = _titles(shard), shard_track_sizes(shard), shard.stats().n_hashes
    right = 0
    for q, pcm in clips:
        found = match_peaks(
            extract_peaks([pcm], params, Role.QUERY), shard.lookup, sizes, params, MATCH_PARAMS, stored
        )
        top = found[0] if found else None
        right += right_answer(q, titles.get(top.track_id) if top else None, top.offset_s if top else None)
    return right


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/work/cache/corpus/extract"))
    ap.add_argument("--queries", type=Path, default=Path("/work/cache/queries"))
    ap.add_argument("--tracks", type=int, default=25)
    ap.add_argument("--floors", type=float, nargs="+", default=[PARAMS.peak_floor_db, -70.0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/levels.json"))
    args = ap.parse_args()

    positives = [q for q in load_queries(args.queries) if q.source_track is not None]
    keys = list(dict.fromkeys(q.source_track for q in positives))[: args.tracks]
    sr = PARAMS.sample_rate_hz
    tracks = {k: decode_all(args.corpus / k, sample_rate_hz=sr)[0] for k in keys}

    def clips(degradations: Sequence[str], seconds: Sequence[float]) -> list[tuple[Query, np.ndarray]]:
        chosen = [
            q
            for q in positives
            if q.source_track in tracks and q.degradation in degradations and q.duration_s in seconds
        ]
        return [(q, decode_all(q.path, sample_rate_hz=sr)[0]) for q in chosen]

    query_clips = clips(QUERY_DEGRADATIONS, (10.0, 3.0))
    track_clips = clips(TRACK_DEGRADATIONS, (10.0,))
    result: dict[str, Any] = {
        "git": _git_describe(),
        "tracks": len(tracks),
        "quiet_queries": {"clips": len(query_clips), "degradations": QUERY_DEGRADATIONS, "by_floor": {}},
        "quiet_tracks": {"clips": len(track_clips), "degradations": TRACK_DEGRADATIONS, "by_floor": {}},
    }
    for floor in args.floors:
        params = replace(PARAMS, peak_floor_db=floor)
        with tempfile.TemporaryDirectory() as tmp:
            shard, _ = store_tracks(Path(tmp) / "full", tracks, 0.0, params)
            with shard:
                quiet_queries = {
                    f"{gain} dB": right_answers(
                        shard, [(q, at_gain(p, gain)) for q, p in query_clips], params
                    )
                    for gain in QUERY_GAINS_DB
                }
            quiet_tracks = {}
            for gain in TRACK_GAINS_DB:
                shard, n_hashes = store_tracks(Path(tmp) / f"at{gain}", tracks, gain, params)
                with shard:
                    quiet_tracks[f"{gain} dB"] = {
                        "hashes_stored": n_hashes,
                        "right": right_answers(shard, track_clips, params),
                    }
        result["quiet_queries"]["by_floor"][f"{floor:g} dB"] = quiet_queries
        result["quiet_tracks"]["by_floor"][f"{floor:g} dB"] = quiet_tracks
        print(f"peak floor {floor:g} dB")
        print(
            f"  quiet clips ({len(query_clips)}), right: "
            + ", ".join(f"{g} {n}" for g, n in quiet_queries.items())
        )
        print(
            f"  quiet stored tracks ({len(tracks)}; {len(track_clips)} clips at full level), right / hashes: "
            + ", ".join(f"{g} {v['right']} / {v['hashes_stored']:,}" for g, v in quiet_tracks.items())
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
