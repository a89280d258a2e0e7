"""Benchmark of EmbeddedShard: ingest rate (and whether it stays flat), bytes per posting, lookup latency,
and the merge kernel against NumPy sorts. Synthetic postings; prints figures.

    .venv/bin/python bench/store_lookup.py                        # quick: ~10M postings
    .venv/bin/python bench/store_lookup.py --tracks 7000          # ~100M postings (the design target)

Synthetic tracks: `--postings-per-track` distinct-ish hashes drawn uniformly from 2**hash_bits (22 bits,
as `tunescout.engine.hashes` packs them), offsets uniform over a 3-minute track (11,250 frames of 16 ms).
Real hash distributions are skewed; uniform hashes are the easy case for the cap and the hard case for
locality.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from tunescout.engine.hashes import HASH_BITS
from tunescout.store import EmbeddedShard, TrackMeta
from tunescout.store import segments as seg

FRAMES_PER_TRACK = 11_250  # 3 minutes at 16 ms per frame


def track_fingerprints(seed: int, n: int, hash_bits: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 1 << hash_bits, n, dtype=np.uint64).astype(np.uint32)
    offsets = rng.integers(0, FRAMES_PER_TRACK, n).astype(np.int32)
    return hashes, offsets


def deciles(times: list[float]) -> list[float]:
    """Mean per-track ms in each tenth of the run (compaction included where it happened)."""
    parts = np.array_split(np.asarray(times) * 1e3, 10)
    return [round(float(p.mean()), 2) for p in parts]


def ingest(shard: EmbeddedShard, n_tracks: int, postings: int, hash_bits: int, first_seed: int) -> dict:
    times = []
    started = time.perf_counter()
    for i in range(n_tracks):
        hashes, offsets = track_fingerprints(first_seed + i, postings, hash_bits)
        t0 = time.perf_counter()
        shard.ingest(TrackMeta(f"{first_seed + i:040x}", f"track {i}"), hashes, offsets)
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    ingest_s = sum(times)
    return {
        "tracks": n_tracks,
        "postings_per_track": postings,
        "tracks_per_s": round(n_tracks / ingest_s, 1),
        "postings_per_s": round(n_tracks * postings / ingest_s),
        "wall_s_incl_generation": round(elapsed, 1),
        "ms_per_track_by_decile": deciles(times),
        "last_decile_over_first": round(
            float(np.mean(times[-n_tracks // 10 :]) / np.mean(times[: n_tracks // 10])), 2
        ),
        "max_stall_ms": round(max(times) * 1e3, 1),
    }


def lookup_latency(
    shard: EmbeddedShard, n_tracks: int, postings: int, hash_bits: int, first_seed: int
) -> dict:
    rng = np.random.default_rng(12345)
    queries = []
    for _ in range(200):
        # a realistic query: a third of a stored track's hashes (the clip) plus as many unknown hashes
        hashes, _ = track_fingerprints(first_seed + int(rng.integers(0, n_tracks)), postings, hash_bits)
        clip = rng.choice(hashes, 1500, replace=False)
        noise = rng.integers(0, 1 << hash_bits, 1600, dtype=np.uint64).astype(np.uint32)
        queries.append(np.unique(np.concatenate([clip, noise]))[:3000])
    out = {}
    for cap in (0, 2000):
        for q in queries[:5]:  # warm the page cache and the kernels
            shard.lookup(q, cap)
        latencies = []
        found = []
        for q in queries:
            t0 = time.perf_counter()
            postings_found = shard.lookup(q, cap)
            latencies.append(time.perf_counter() - t0)
            found.append(len(postings_found))
        ms = np.asarray(latencies) * 1e3
        out[f"cap={cap}"] = {
            "query_hashes": int(np.mean([q.shape[0] for q in queries])),
            "postings_returned_mean": int(np.mean(found)),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
        }
    return out


def merge_methods(n_runs: int, rows_per_run: int) -> dict:
    """rows/s of the numba k-way merge against concatenate + np.lexsort / + np.sort of uint64 keys."""
    rng = np.random.default_rng(7)
    runs_h, runs_v = [], []
    for r in range(n_runs):
        keys = np.unique(
            (rng.integers(0, 1 << HASH_BITS, rows_per_run, dtype=np.uint64) << np.uint64(32))
            | rng.integers(0, 1 << 30, rows_per_run, dtype=np.uint64) * np.uint64(n_runs) + np.uint64(r)
        )
        runs_h.append((keys >> np.uint64(32)).astype(np.uint32))
        runs_v.append(keys.astype(np.uint32))
    hashes, values = np.concatenate(runs_h), np.concatenate(runs_v)
    bounds = np.concatenate([[0], np.cumsum([h.shape[0] for h in runs_h])]).astype(np.int64)
    none = np.empty(0, np.uint32)
    out_h, out_v = np.empty_like(hashes), np.empty_like(values)
    seg.merge_runs(hashes[:10], values[:10], np.array([0, 10]), none, none, out_h, out_v)  # compile
    n = hashes.shape[0]
    timings: dict[str, float] = defaultdict(lambda: float("inf"))
    for _ in range(3):  # best of 3: the first call also pays page faults of fresh buffers
        t0 = time.perf_counter()
        seg.merge_runs(hashes, values, bounds, none, none, out_h, out_v)
        timings["numba_pairwise_merge"] = min(timings["numba_pairwise_merge"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        order = np.lexsort((values, hashes))
        _ = (hashes[order], values[order])  # the gather is part of the cost
        timings["np_lexsort"] = min(timings["np_lexsort"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.sort((hashes.astype(np.uint64) << np.uint64(32)) | values, kind="stable")
        timings["np_sort_uint64_stable"] = min(timings["np_sort_uint64_stable"], time.perf_counter() - t0)
    return {name: f"{n / s / 1e6:.1f} M rows/s" for name, s in timings.items()} | {"rows": n, "runs": n_runs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracks", type=int, default=700, help="tracks of the big store")
    parser.add_argument("--postings-per-track", type=int, default=14_400, help="3 min x 80 hashes/s")
    parser.add_argument("--small-tracks", type=int, default=2000, help="tracks of the flatness run")
    parser.add_argument("--hash-bits", type=int, default=HASH_BITS)
    parser.add_argument("--path", type=Path, default=None, help="store directory (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    root = args.path or Path(tempfile.mkdtemp(prefix="tunescout-bench-"))
    report: dict = {"hash_bits": args.hash_bits}
    try:
        with EmbeddedShard(root / "small", fingerprint_version=1) as shard:
            report["ingest_small_tracks"] = ingest(shard, args.small_tracks, 1000, args.hash_bits, 10_000_000)
        shutil.rmtree(root / "small")
        print(json.dumps({"ingest_small_tracks": report["ingest_small_tracks"]}, indent=1), flush=True)

        with EmbeddedShard(root / "big", fingerprint_version=1) as shard:
            report["ingest"] = ingest(shard, args.tracks, args.postings_per_track, args.hash_bits, 0)
            stats = shard.stats()
            summary = shard.segment_summary()
            report["store"] = {
                "postings": stats.n_hashes,
                "segment_files": len(summary.file_rows),
                "level0_segments": summary.level0_segments,
                "file_rows": list(summary.file_rows),
                "bytes_on_disk": stats.bytes_on_disk,
                "bytes_per_posting_all": round(stats.bytes_on_disk / stats.n_hashes, 2),
                "bytes_per_posting_segment_files": round(
                    summary.file_nbytes / max(1, sum(summary.file_rows)), 2
                ),
            }
            print(json.dumps({k: report[k] for k in ("ingest", "store")}, indent=1), flush=True)
            report["lookup_tiered"] = lookup_latency(
                shard, args.tracks, args.postings_per_track, args.hash_bits, 0
            )
            print(json.dumps({"lookup_tiered": report["lookup_tiered"]}, indent=1), flush=True)
            t0 = time.perf_counter()
            shard.compact(full=True)
            report["full_compaction_s"] = round(time.perf_counter() - t0, 1)
            stats = shard.stats()
            report["bytes_per_posting_after_full_compaction"] = round(stats.bytes_on_disk / stats.n_hashes, 2)
            report["lookup_one_segment"] = lookup_latency(
                shard, args.tracks, args.postings_per_track, args.hash_bits, 0
            )
        report["merge_4_runs"] = merge_methods(4, 2_000_000)
        report["merge_32_runs"] = merge_methods(32, 14_000)
        print(json.dumps({k: report[k] for k in list(report)[-5:]}, indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    finally:
        if args.path is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
