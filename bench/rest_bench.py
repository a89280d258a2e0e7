"""REST benchmark: the whole service as a user runs it (`tunescout up`), through its HTTP API.

1. ingest: every track of reference.tsv through POST /api/fingerprint, `--jobs` uploads at once; audio hours
   per wall-clock hour (x real time) for the machine. Skipped with --skip-ingest (the data dir keeps them).
2. latency: `--requests` recognitions of 10 s clean clips (uploads of the clip files), one at a time;
   p50 / p99 of the wall time of each POST /api/recognize, upload included; recall@1 on the way.
3. throughput: `--clients` concurrent clients recognising for `--seconds`; recognitions per second and
   the error count (any answer other than 200).
4. sequential ingest: the first `--sequential` tracks uploaded one at a time (as a simple bulk uploader does)
   to a fresh service, against decoding the same files in one process.
Both ingest figures are compared with two yardsticks: decoding the files to the engine's PCM (mono, 8 kHz)
and ffmpeg's decoder alone at the files' own rate and channels (`ffmpeg -i FILE -f null -`).

Usage (after building the corpus and queries as in bench/README.md):
  .venv/bin/python bench/rest_bench.py --corpus /work/cache/corpus/extract --queries /work/cache/queries \
      --data-dir /work/cache/bench/rest
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_service(data_dir: Path, port: int) -> subprocess.Popen:
    config = data_dir / "bench-config.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        json.dumps(
            {
                "fingerprinting": {"token": "bench-token"},
                "recognizing": {"max_duration": 10},
                "rate_limit": {
                    "recognizing": "100000 per second",
                    "fingerprinting": "100000 per second",
                    "fetching_results": "100000 per second",
                },
            }
        )
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tunescout.cli.main",
            "up",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(data_dir / "service.log", "w"),
    )
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start; see {data_dir / 'service.log'}")
        time.sleep(0.5)


async def ingest(url: str, files: list[Path], jobs: int) -> dict:
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for f in files:
        queue.put_nowait(f)
    codes: dict[int, int] = {}
    audio_s = 0.0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal audio_s
        while not queue.empty():
            path = queue.get_nowait()
            r = await client.post(
                f"{url}/api/fingerprint",
                headers={"Authorization": "Bearer bench-token"},
                files={"file": (path.name, path.read_bytes())},
            )
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200:
                audio_s += r.json()["duration_seconds"]

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=900) as client:
        await asyncio.gather(*(worker(client) for _ in range(jobs)))
    wall = time.perf_counter() - began
    return {
        "files": len(files),
        "codes": codes,
        "audio_hours": audio_s / 3600,
        "wall_s": wall,
        "x_real_time": audio_s / wall if wall else 0.0,
    }


def _decode_seconds(path: Path) -> float:
    from tunescout.engine.decode import decode_all

    pcm, _ = decode_all(path, sample_rate_hz=8000)
    return pcm.size / 8000


def _ffmpeg_decode_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def decode_only(files: list[Path], jobs: int, *, resample: bool = True) -> dict:
    """The yardstick of ingest: decoding the same files to the engine's PCM (`resample`), or with ffmpeg's
    decoder alone at the files' own rate and channels (what `ffmpeg -i FILE -f null -` does), `jobs`
    processes, no service."""
    from concurrent.futures import ProcessPoolExecutor

    began = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        audio_s = sum(pool.map(_decode_seconds if resample else _ffmpeg_decode_seconds, files))
    wall = time.perf_counter() - began
    return {"files": len(files), "audio_hours": audio_s / 3600, "wall_s": wall, "x_real_time": audio_s / wall}


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_tree(root: int) -> dict[int, int]:
    """pid -> parent pid of `root` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, frontier = {root: parents.get(root, 0)}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree[pid] = ppid
                frontier.append(pid)
    return tree


def cpu_by_service(root: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each service of `tunescout up` (workers under their
    service's name + "_workers"), and by this benchmark's own process (the HTTP clients)."""
    tree = _process_tree(root)
    names: dict[int, str] = {root: "supervisor"}
    for pid in tree:
        try:
            cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        module = next((c.decode() for c in cmd if c.startswith(b"services.")), None)
        if module:
            names[pid] = module.split(".")[1]
    out: dict[str, float] = {}
    for pid, ppid in tree.items():
        name = names.get(pid) or (names.get(ppid, "other") + "_workers")
        try:
            stat = (Path("/proc") / str(pid) / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK_TCK
    self_times = os.times()
    out["bench_client"] = self_times.user + self_times.system
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float], per: int) -> dict[str, float]:
    """CPU milliseconds per unit of work (`per` units) of each process group between two readings."""
    return {k: round((after[k] - before.get(k, 0.0)) * 1000 / max(1, per), 2) for k in sorted(after)}


def recognise(client: httpx.Client, url: str, clip: Path) -> tuple[float, httpx.Response]:
    data = clip.read_bytes()
    began = time.perf_counter()
    r = client.post(f"{url}/api/recognize", files={"file": (clip.name, data)})
    return time.perf_counter() - began, r


async def throughput(url: str, clips: list[tuple[Path, str]], clients: int, seconds: float) -> dict:
    payloads = [(c.name, c.read_bytes()) for c, _ in clips]
    done = errors = 0
    stop_at = time.perf_counter() + seconds

    async def client_loop(i: int, client: httpx.AsyncClient) -> None:
        nonlocal done, errors
        k = i
        while time.perf_counter() < stop_at:
            name, data = payloads[k % len(payloads)]
            k += clients
            try:
                r = await client.post(f"{url}/api/recognize", files={"file": (name, data)})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            done += ok
            errors += not ok

    began = time.perf_counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(i, client) for i in range(clients)))
    wall = time.perf_counter() - began
    return {
        "clients": clients,
        "seconds": wall,
        "recognitions": done,
        "errors": errors,
        "per_second": done / wall,
    }


def sequential_ingest(files: list[Path], data_dir: Path, port: int) -> dict:
    """One upload at a time to a fresh service, against decoding the same files in one process: with one
    upload in flight, only the service's own pipelining can use a second core."""
    report = {
        "decode_only": decode_only(files, 1),
        "ffmpeg_decode_only": decode_only(files, 1, resample=False),
    }
    fresh = data_dir / "sequential"
    shutil.rmtree(fresh, ignore_errors=True)
    process = start_service(fresh, port)
    try:
        cpu_before = cpu_by_service(process.pid)
        ing = report["ingest"] = asyncio.run(ingest(f"http://127.0.0.1:{port}", files, 1))
        ing["cpu_ms_per_audio_minute"] = cpu_delta(
            cpu_before, cpu_by_service(process.pid), round(ing["audio_hours"] * 60)
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    report["vs_decode_only"] = ing["x_real_time"] / report["decode_only"]["x_real_time"]
    report["vs_ffmpeg_decode_only"] = ing["x_real_time"] / report["ffmpeg_decode_only"]["x_real_time"]
    print(
        f"sequential ingest ({len(files)} files, one upload at a time): {ing['x_real_time']:.0f}x real time; "
        f"decoding alone in one process {report['decode_only']['x_real_time']:.0f}x to the engine's PCM, "
        f"{report['ffmpeg_decode_only']['x_real_time']:.0f}x with ffmpeg's decoder alone; ratios "
        f"{report['vs_decode_only']:.2f} and {report['vs_ffmpeg_decode_only']:.2f}; answers {ing['codes']}"
    )
    print(f"CPU ms per audio minute ingested: {ing['cpu_ms_per_audio_minute']}")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="CACHE/extract of build_dev_corpus.sh")
    ap.add_argument("--queries", type=Path, required=True, help="the make_queries.py output dir")
    ap.add_argument("--data-dir", type=Path, default=Path("/work/cache/bench/rest"))
    ap.add_argument("--port", type=int, default=18800)
    ap.add_argument("--jobs", type=int, default=4, help="concurrent uploads while ingesting")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--ingest-only", action="store_true", help="stop after ingesting (no results written)")
    ap.add_argument("--requests", type=int, default=300, help="sequential recognitions for p50/p99")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--sequential", type=int, default=24, help="tracks ingested one at a time, 0: skip")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/rest.json")
    args = ap.parse_args()

    with (args.queries / "reference.tsv").open() as f:
        tracks = [args.corpus / row["package"] / row["relpath"] for row in csv.DictReader(f, delimiter="\t")]
    url = f"http://127.0.0.1:{args.port}"
    held = sorted(p.name for p in args.data_dir.glob("*") if p.name != "bench-config.json")
    if not args.skip_ingest and held:
        # every upload would be answered 409 (already fingerprinted) and the ingest rate read 0x
        raise SystemExit(
            f"--data-dir {args.data_dir} already holds a service's data ({', '.join(held)}): remove it to "
            "measure ingest into a fresh store, or pass --skip-ingest to reuse it"
        )
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    if not args.skip_ingest:
        report["decode_only"] = decode_only(tracks, os.cpu_count() or 1)
        report["ffmpeg_decode_only"] = decode_only(tracks, os.cpu_count() or 1, resample=False)
        print(
            f"decoding alone ({os.cpu_count()} processes): {report['decode_only']['x_real_time']:.0f}x real "
            f"time to the engine's PCM, {report['ffmpeg_decode_only']['x_real_time']:.0f}x with ffmpeg's "
            "decoder alone"
        )
    process = start_service(args.data_dir, args.port)
    try:
        if not args.skip_ingest:
            cpu_before = cpu_by_service(process.pid)
            report["ingest"] = asyncio.run(ingest(url, tracks, args.jobs))
            ing = report["ingest"]
            ing["cpu_ms_per_audio_minute"] = cpu_delta(
                cpu_before, cpu_by_service(process.pid), round(ing["audio_hours"] * 60)
            )
            print(
                f"ingest: {ing['files']} files, {ing['audio_hours']:.2f} h in {ing['wall_s']:.0f} s = "
                f"{ing['x_real_time']:.0f}x real time; answers {ing['codes']}"
            )
            if "decode_only" in report:
                speed = ing["x_real_time"]
                ing["vs_decode_only"] = speed / report["decode_only"]["x_real_time"]
                ing["vs_ffmpeg_decode_only"] = speed / report["ffmpeg_decode_only"]["x_real_time"]
                print(
                    f"ingest / decoding alone: {ing['vs_decode_only']:.2f} (to the engine's PCM), "
                    f"{ing['vs_ffmpeg_decode_only']:.2f} (ffmpeg's decoder alone)"
                )
            print(f"CPU ms per audio minute ingested: {ing['cpu_ms_per_audio_minute']}")
        if args.ingest_only:
            return
        with (args.queries / "ground_truth.csv").open() as f:
            rows = [
                r for r in csv.DictReader(f) if r["degradation"] == "clean" and float(r["duration_s"]) == 10
            ]
        clips = [(args.queries / r["query_file"], r["source_track"]) for r in rows]
        clips = [(p, t) for p, t in clips if t != "NONE"]
        titles = {Path(t).stem for _, t in clips}
        latencies, correct = [], 0
        with httpx.Client(timeout=60) as client:
            for i in range(args.requests):
                clip, track = clips[i % len(clips)]
                seconds, r = recognise(client, url, clip)
                latencies.append(seconds * 1000)
                results = r.json().get("results", []) if r.status_code == 200 else []
                correct += bool(results) and results[0]["song_name"] == Path(track).stem
        report["latency_ms"] = {
            "requests": args.requests,
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "mean": statistics.fmean(latencies),
            "recall_at_1": correct / args.requests,
            "distinct_clips": len(clips),
            "distinct_tracks": len(titles),
        }
        lat = report["latency_ms"]
        print(
            f"latency (10 s clip, upload included): p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
            f"recall@1 {lat['recall_at_1']:.1%}"
        )
        cpu_before = cpu_by_service(process.pid)
        report["throughput"] = asyncio.run(throughput(url, clips, args.clients, args.seconds))
        tp = report["throughput"]
        tp["cpu_ms_per_recognition"] = cpu_delta(cpu_before, cpu_by_service(process.pid), tp["recognitions"])
        print(
            f"throughput: {tp['per_second']:.1f} recognitions/s with {tp['clients']} clients, "
            f"{tp['errors']} errors"
        )
        print(f"CPU ms per recognition: {tp['cpu_ms_per_recognition']}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    if args.ingest_only:
        return
    if args.sequential and not args.skip_ingest:
        report["sequential"] = sequential_ingest(tracks[: args.sequential], args.data_dir, args.port + 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
