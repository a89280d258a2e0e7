#!/usr/bin/env python3
"""Speed and tempo sweep: recall at every change from -5.5 to +5.5 %, not only at the bench's +-5 %.

  .venv/bin/python bench/speed_sweep.py --set 'speed_factors=[0.955,0.97,0.985,1.015,1.03,1.045]' \
      [--store /work/cache/bench/store/shard] [--queries /work/cache/queries] [--clips 40] \
      [--out bench/results/speed_sweep.json]

The speed/tempo hypotheses form a grid; a clip changed by a factor between two grid points is the hard
case, and the engine bench's clips (exactly +-5 %) say nothing of it. For the first `--clips` clean clips
of each length asked for, the clip is cut again from its source track at each change (speed: resampled,
pitch and tempo together, as a tape or a DJ deck; tempo: ffmpeg's `atempo`, pitch kept), optionally with
white noise at SNR 10 dB, and matched under the default `MatchParams` and under the variant (`--set
FIELD=VALUE`, as in match_ab.py) against one store built by engine_bench.py. Reports recall (right track
within 0.2 s) at each change, its mean and minimum over +-5 %, and the mean over +-5.5 %. Needs the
`ffmpeg` command for the tempo sweep (as make_queries.py does).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from engine_bench import (
    FINGERPRINT_VERSION,
    MATCH_PARAMS,
    PARAMS,
    _git_describe,
    _titles,
    load_queries,
    right_answer,
)
from match_ab import variant

from tunescout.engine.decode import decode_all
from tunescout.engine.fingerprint import extract_peaks
from tunescout.engine.match import match_peaks, shard_track_sizes
from tunescout.engine.peaks import Role
from tunescout.store.embedded import EmbeddedShard

# (name, kind, clip seconds, white noise SNR dB or None, step %)
SWEEPS = (
    ("speed, 10 s, white noise SNR 10 dB", "speed", 10.0, 10.0, 0.25),
    ("speed, 3 s, clean", "speed", 3.0, None, 0.25),
    ("tempo, 10 s, white noise SNR 10 dB", "tempo", 10.0, 10.0, 0.5),
)


def atempo(pcm: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "-"]
    cmd += ["-af", f"atempo={factor}", "-f", "f32le", "-"]
    out = subprocess.run(cmd, input=pcm.astype(np.float32).tobytes(), capture_output=True, check=True)
    return np.frombuffer(out.stdout, np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="the variant (repeat)")
    ap.add_argument("--store", type=Path, default=Path("/work/cache/bench/store/shard"))
    ap.add_argument("--queries", type=Path, default=Path("/work/cache/queries"))
    ap.add_argument("--corpus", type=Path, default=Path("/work/cache/corpus/extract"))
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("bench/results/speed_sweep.json"))
    args = ap.parse_args()
    if not args.set:
        raise SystemExit("give the variant with --set FIELD=VALUE (see MatchParams)")
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the tempo sweep needs the ffmpeg command")
    settings = {"default": MATCH_PARAMS, "variant": variant(args.set)}
    sr = PARAMS.sample_rate_hz
    rng = np.random.default_rng(0)
    clean = [q for q in load_queries(args.queries) if q.degradation == "clean" and q.source_track]
    sources: dict[str, np.ndarray] = {}
    result: dict[str, Any] = {
        "git": _git_describe(),
        "store": str(args.store),
        "variant": {s.partition("=")[0]: json.loads(s.partition("=")[2]) for s in args.set},
        "sweeps": {},
    }
    with EmbeddedShard(args.store, fingerprint_version=FINGERPRINT_VERSION) as shard:
        sizes, stored, titles = shard_track_sizes(shard), shard.stats().n_hashes, _titles(shard)
        for name, kind, seconds, snr_db, step in SWEEPS:
            clips = [q for q in clean if q.duration_s == seconds][: args.clips]
            changes = np.round(np.arange(-5.5, 5.5 + step / 2, step), 2)
            right = {k: [] for k in settings}
            ms: dict[str, list[float]] = {k: [] for k in settings}
            for pct in changes:
                factor = 1 + pct / 100
                hits = dict.fromkeys(settings, 0)
                for q in clips:
                    if q.source_track not in sources:
                        sources[q.source_track] = decode_all(args.corpus / q.source_track, sample_rate_hz=sr)[
                            0
                        ]
                    a, n = round(q.start_s * sr), int(seconds * sr)
                    span = sources[q.source_track][a : a + round((seconds * factor + 0.4) * sr)]
                    if kind == "speed":
                        y = np.interp(np.arange(n) * factor, np.arange(span.size), span)
                    else:
                        y = atempo(span, factor, sr)[:n]
                    if snr_db is not None:
                        noise = rng.standard_normal(y.size)
                        y = y + noise * np.sqrt(np.mean(y**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
                    peaks = extract_peaks([y.astype(np.float32)], PARAMS, Role.QUERY)
                    for key, mp in settings.items():
                        t0 = time.perf_counter()
                        found = match_peaks(peaks, shard.lookup, sizes, PARAMS, mp, stored)
                        ms[key].append(1e3 * (time.perf_counter() - t0))
                        top = found[0] if found else None
                        track = titles.get(top.track_id) if top else None
                        hits[key] += right_answer(q, track, top.offset_s if top else None)
                for key in settings:
                    right[key].append(hits[key])
            inner = np.abs(changes) <= 5.0
            summary = {}
            for key in settings:
                share = 100 * np.array(right[key]) / max(1, len(clips))
                summary[key] = {
                    "mean_pct_within_5": round(float(share[inner].mean()), 1),
                    "min_pct_within_5": round(float(share[inner].min()), 1),
                    "mean_pct_within_5_5": round(float(share.mean()), 1),
                    "match_ms_p50": round(float(np.percentile(ms[key], 50)), 2),
                    "match_ms_mean": round(float(np.mean(ms[key])), 2),
                    "right_by_change_pct": dict(zip(map(str, changes.tolist()), right[key], strict=True)),
                }
                print(
                    f"{name} ({len(clips)} clips), {key}: mean {summary[key]['mean_pct_within_5']} %,"
                    f" worst {summary[key]['min_pct_within_5']} % within +-5 %;"
                    f" {summary[key]['mean_pct_within_5_5']} % within +-5.5 %;"
                    f" match mean {summary[key]['match_ms_mean']} ms",
                    flush=True,
                )
            result["sweeps"][name] = {"clips": len(clips), **summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
