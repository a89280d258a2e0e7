"""Shard backends side by side: ingest rate and match latency per backend (embedded, MySQL/MariaDB,
ClickHouse) with 1, 2 and 4 shards, lookup cache cold and warm.

The dev corpus's reference tracks are fingerprinted once (in a process pool) and stored through the
matcher's ShardSet (least-loaded routing, as the service does); the 10 s clean query clips are matched with
the engine's match_peaks over the ShardSet fan-out. For every configuration it reports ingest x real time
(store only: fingerprinting is timed apart), match p50/p99 with a cold cache and with a warm one, and, for
the fan-out, the slowest shard's lookup time beside the sum over shards (parallel fan-out keeps the wall
time near the slowest, not the sum).

  .venv/bin/python bench/backends_bench.py --corpus /work/cache/corpus/extract --queries /work/cache/queries
Servers: MariaDB on 127.0.0.1:3306 (root), ClickHouse HTTP on 127.0.0.1:8123 (.ci/clickhouse.sh).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.matcher.cache import MemoryLookupCache  # noqa: E402
from services.matcher.shards import open_shard  # noqa: E402
from services.matcher.shardset import FanoutReport, ShardHandle, ShardSet  # noqa: E402
from tunescout.common.config import parse_config  # noqa: E402
from tunescout.common.memory import tune_malloc  # noqa: E402
from tunescout.engine.fingerprint import fingerprint_audio  # noqa: E402
from tunescout.engine.match import TrackSize, match_peaks  # noqa: E402
from tunescout.engine.peaks import Role  # noqa: E402
from tunescout.store.shard import TrackMeta  # noqa: E402


def _reference(path: str) -> tuple[str, str, float, np.ndarray, np.ndarray]:
    fp = fingerprint_audio(path, role=Role.REFERENCE)
    return path, fp.file_sha1, fp.duration_s, fp.fingerprint.hashes, fp.fingerprint.offsets


class TimedHandle(ShardHandle):
    """Records how long each of its lookups took (for the fan-out: slowest vs sum)."""

    times: list[float]

    def lookup(self, hashes: np.ndarray, cap: int):  # type: ignore[no-untyped-def]
        began = time.perf_counter()
        try:
            return super().lookup(hashes, cap)
        finally:
            self.times.append(time.perf_counter() - began)


def _instances(backend: str, n: int, suffix: str) -> list[dict]:
    out = []
    for i in range(n):
        name = f"{backend}{i}"
        if backend == "embedded":
            out.append({"name": name, "database_type": "embedded"})
        elif backend == "mysql":
            out.append(
                {
                    "name": name,
                    "database_type": "mysql",
                    "database": {
                        "host": "127.0.0.1",
                        "port": 3306,
                        "user": "root",
                        "database": f"bench_{suffix}_{i}",
                    },
                }
            )
        else:
            out.append(
                {
                    "name": name,
                    "database_type": "clickhouse",
                    "database": {"host": "127.0.0.1", "port": 8123, "database": f"bench_{suffix}_{i}"},
                }
            )
    return out


def _drop(backend: str, instances: list[dict]) -> None:
    for inst in instances:
        db = inst.get("database", {}).get("database")
        if backend == "mysql":
            import pymysql

            conn = pymysql.connect(host="127.0.0.1", user="root")
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            conn.close()
        elif backend == "clickhouse":
            import clickhouse_connect

            client = clickhouse_connect.get_client(host="127.0.0.1", port=8123, compress=False)
            client.command(f"DROP DATABASE IF EXISTS {db}")
            client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run_config(backend: str, n: int, refs: list, queries: list, data_dir: Path) -> dict:
    suffix = uuid.uuid4().hex[:8]
    instances = _instances(backend, n, suffix)
    stores = parse_config({"instances": instances}).instances
    handles = []
    for i, store in enumerate(stores):
        handle = TimedHandle(i, store, lambda c: open_shard(c, data_dir), MemoryLookupCache(256 << 20, 3600))
        handle.times = []
        handles.append(handle)
    shardset = ShardSet(handles, deadline_s=30.0)
    try:
        began = time.perf_counter()
        audio_s = 0.0
        for path, sha1, duration_s, hashes, offsets in refs:
            shardset.ingest(TrackMeta(sha1, Path(path).stem, duration_s=duration_s), hashes, offsets)
            audio_s += duration_s
        ingest_s = time.perf_counter() - began
        for handle in handles:  # an embedded shard is compacted when its writes pause, as the matcher does
            handle.compact_if_idle(0.0)
        result: dict = {
            "backend": backend,
            "shards": n,
            "tracks": len(refs),
            "ingest_x_real_time": audio_s / ingest_s,
            "ingest_s": ingest_s,
        }
        stored = shardset.count_stored_hashes()  # as the matcher keeps it, counted off the timed path
        for label in ("cold", "warm"):
            for handle in handles:
                handle.times = []
            latencies, slowest, summed, correct = [], [], [], 0
            for peaks, truth in queries:
                for handle in handles:
                    handle.times = []
                report = FanoutReport()
                began = time.perf_counter()
                found = match_peaks(
                    peaks,
                    lambda h, cap, r=report: shardset.lookup(h, cap, r),
                    lambda gids: {g: TrackSize(s.track.n_hashes) for g, s in shardset.tracks(gids).items()},
                    stored_hashes=stored,
                )
                latencies.append((time.perf_counter() - began) * 1000)
                tracks = shardset.tracks(m.track_id for m in found[:1])
                correct += bool(found) and tracks[found[0].track_id].track.title == truth
                per_shard = [sum(h.times) for h in handles]
                slowest.append(max(per_shard) * 1000)
                summed.append(sum(per_shard) * 1000)
            result[label] = {
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "lookup_slowest_shard_ms_mean": statistics.fmean(slowest),
                "lookup_sum_over_shards_ms_mean": statistics.fmean(summed),
                "recall_at_1": correct / len(queries),
            }
        return result
    finally:
        shardset.close()
        _drop(backend, instances)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--backends", default="embedded,mysql,clickhouse")
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--limit-queries", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/backends.json")
    args = ap.parse_args()
    tune_malloc()
    with (args.queries / "reference.tsv").open() as f:
        tracks = [str(args.corpus / r["package"] / r["relpath"]) for r in csv.DictReader(f, delimiter="\t")]
    began = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        refs = list(pool.map(_reference, tracks))
    print(f"fingerprinted {len(refs)} tracks in {time.perf_counter() - began:.0f} s")
    with (args.queries / "ground_truth.csv").open() as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["degradation"] == "clean" and r["duration_s"] == "10" and r["source_track"] != "NONE"
        ][: args.limit_queries]
    queries = [
        (
            fingerprint_audio(args.queries / r["query_file"], role=Role.QUERY).peaks,
            Path(r["source_track"]).stem,
        )
        for r in rows
    ]
    report = {"machine": {"cpus": os.cpu_count()}, "configs": []}
    for backend in args.backends.split(","):
        for n in (int(x) for x in args.shards.split(",")):
            data_dir = Path(tempfile.mkdtemp(prefix="tunescout-bench-"))
            try:
                r = run_config(backend, n, refs, queries, data_dir)
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
            report["configs"].append(r)
            print(
                f"{backend:10s} {n} shard(s): ingest {r['ingest_x_real_time']:6.0f}x | "
                f"cold p50 {r['cold']['p50_ms']:6.1f} p99 {r['cold']['p99_ms']:6.1f} ms | "
                f"warm p50 {r['warm']['p50_ms']:6.1f} p99 {r['warm']['p99_ms']:6.1f} ms | "
                f"lookup slowest {r['cold']['lookup_slowest_shard_ms_mean']:6.1f} vs sum "
                f"{r['cold']['lookup_sum_over_shards_ms_mean']:6.1f} ms | "
                f"recall {r['cold']['recall_at_1']:.0%}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
