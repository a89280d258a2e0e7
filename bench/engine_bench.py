#!/usr/bin/env python3
"""Engine benchmark: fingerprint and ingest speed, recall per degradation, false positives, match latency
at the corpus size and at 10,000 tracks, bytes stored per hour, peak RSS of a 3-hour ingest.

  .venv/bin/python bench/engine_bench.py --corpus /work/cache/corpus/extract --queries /work/cache/queries \
      --store /work/cache/bench/store [--jobs 2] [--limit N] [--max-tracks N] [--skip-ingest] \
      [--filler 10000] [--out bench/results/engine.json]

Everything heavy is cached so a rerun is cheap: the ingested shard (STORE/shard, with STORE/ingest.json and
the tracks' fingerprints in STORE/fingerprints.npz for the filler) is reused with --skip-ingest; the
10,000-track copy (STORE/shard_10000) is reused (or an interrupted fill resumed) while it was grown from
that shard with the current filler recipe; the 3-hour file is built once. See bench/README.md for what each
figure means.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from audiofile import write_audio

from tunescout.common.memory import tune_malloc
from tunescout.engine import hashes as hash_layout
from tunescout.engine import verify
from tunescout.engine.decode import decode_all, open_audio
from tunescout.engine.errors import AudioError
from tunescout.engine.fingerprint import extract_peaks, fingerprint_audio, fingerprint_pcm
from tunescout.engine.match import match_peaks, shard_track_sizes
from tunescout.engine.params import (
    DEFAULT_MATCH_PARAMS,
    DEFAULT_PARAMS,
    FINGERPRINT_VERSION,
    FingerprintParams,
)
from tunescout.engine.peaks import Peaks, Role
from tunescout.store.embedded import EmbeddedShard
from tunescout.store.shard import TrackMeta

PARAMS = DEFAULT_PARAMS
MATCH_PARAMS = DEFAULT_MATCH_PARAMS
OFFSET_TOLERANCE_S = 0.2  # a hit must place the clip within this many seconds of the truth
SHARD_DIR = "shard"
INGEST_JSON = "ingest.json"
FINGERPRINTS_NPZ = "fingerprints.npz"
LONG_FILE_DIR = Path("/work/cache/bench")  # the long file is built once and kept here
LONG_FILE_HOURS = 3.0
LONG_FILE_RATE_HZ = 48000  # Opus works at 48 kHz; the engine resamples it like any upload
LONG_FILE_BIT_RATE = 64000
REPEAT_MIN_SHARE = 0.5  # a wrong offset is "at a repeat" when half the truth window's landmarks recur there
FILLER_SHIFT_CELLS = (16, 48)  # |anchor-cell shift| of filler hashes; a 5 % speed change moves ~9 cells
FILLER_SOURCES = 2  # real tracks mixed into each filler track
FILLER_BLOCK_FRAMES = 256  # filler offsets are shuffled in blocks of this many frames (~4 s)
PHONE_DEGRADATION = "phone_room"
# order of the recall table (make_queries.py's, then ours); unknown degradations follow alphabetically
DEGRADATION_ORDER = (
    "clean",
    "white_snr10",
    "white_snr5",
    "white_snr0",
    "pink_snr5",
    "recnoise_snr5",
    "mp3_64k",
    "lowpass_3k",
    "speed_up5",
    "speed_down5",
    "tempo_up5",
    "tempo_down5",
    PHONE_DEGRADATION,
)

# recall@1 targets in %, by (clip duration s, degradation); the hit includes the offset check
RECALL_TARGETS: dict[tuple[float, str], float] = {
    (10.0, "clean"): 100.0,
    (10.0, "mp3_64k"): 99.0,
    (10.0, "white_snr5"): 95.0,
    (10.0, "white_snr0"): 85.0,
    (10.0, "pink_snr5"): 98.0,
    (10.0, "lowpass_3k"): 98.0,
    (10.0, "speed_up5"): 95.0,
    (10.0, "speed_down5"): 95.0,
    (10.0, "tempo_up5"): 99.0,
    (10.0, "tempo_down5"): 99.0,
    (10.0, PHONE_DEGRADATION): 90.0,
    (5.0, "clean"): 100.0,
    (3.0, "clean"): 98.0,
}
FINGERPRINT_TARGET_X = 1000.0  # x real time per core
INGEST_TARGET_X = 200.0  # x real time, whole machine
FALSE_POSITIVE_TARGET_PCT = 0.5
MATCH_P50_TARGET_MS = 10.0
MATCH_P99_TARGET_MS = 50.0
BYTES_PER_HOUR_TARGET_MB = 7.2
PEAK_RSS_TARGET_MB = 400.0


# -- inputs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    key: str  # package/relpath, the id used by ground_truth.csv
    path: Path
    duration_s: float


@dataclass(frozen=True)
class Query:
    query_file: str
    path: Path
    source_track: str | None  # None: a negative (its track is not enrolled)
    start_s: float  # in the source track's time
    duration_s: float
    degradation: str
    source_span_s: float  # seconds of the source the clip covers (duration x speed)

    @property
    def excerpt(self) -> str:
        """The excerpt id shared by all lengths and degradations of one cut (q0001, n0003...)."""
        return Path(self.query_file).name.split("_", 1)[0]


def load_reference(queries_dir: Path, corpus: Path) -> list[Track]:
    with (queries_dir / "reference.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        Track(
            key=f"{r['package']}/{r['relpath']}",
            path=corpus / r["package"] / r["relpath"],
            duration_s=float(r["duration_s"]),
        )
        for r in rows
    ]


def _read_truth(path: Path, queries_dir: Path, keep: Callable[[str], bool]) -> list[Query]:
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if keep(r["degradation"])]
    return [
        Query(
            query_file=r["query_file"],
            path=queries_dir / r["query_file"],
            source_track=None if r["source_track"] == "NONE" else r["source_track"],
            start_s=float(r["start_s"]),
            duration_s=float(r["duration_s"]),
            degradation=r["degradation"],
            source_span_s=float(r["source_span_s"] or r["duration_s"]),
        )
        for r in rows
    ]


def load_queries(queries_dir: Path) -> list[Query]:
    """ground_truth.csv, plus the phone_room rows of ground_truth_phone.csv when bench/phone.py made it."""
    truth = queries_dir / "ground_truth.csv"
    if not truth.exists():
        sys.exit(f"{truth} not found: generate the queries first (see bench/README.md)")
    queries = _read_truth(truth, queries_dir, lambda d: d != PHONE_DEGRADATION)
    phone = queries_dir / "ground_truth_phone.csv"
    if phone.exists():
        queries += _read_truth(phone, queries_dir, lambda d: d == PHONE_DEGRADATION)
    return [q for q in queries if q.path.exists()]


def select_queries(queries: Sequence[Query], limit: int, seed: int) -> list[Query]:
    """Whole excerpts (every length and degradation of a cut) until `limit` queries, positives and
    negatives interleaved in proportion, so a small subset still covers every condition."""
    if not limit or limit >= len(queries):
        return list(queries)
    by_excerpt: dict[str, list[Query]] = defaultdict(list)
    for q in queries:
        by_excerpt[q.excerpt].append(q)
    rng = np.random.default_rng(seed)
    ranked: list[tuple[float, str]] = []
    for negative in (False, True):
        excerpts = sorted(e for e, qs in by_excerpt.items() if (qs[0].source_track is None) == negative)
        for rank, i in enumerate(rng.permutation(len(excerpts))):
            ranked.append(((rank + 0.5) / len(excerpts), excerpts[i]))
    chosen: list[Query] = []
    for _, excerpt in sorted(ranked):
        if len(chosen) >= limit:
            break
        chosen += by_excerpt[excerpt]
    return chosen


def select_tracks(reference: Sequence[Track], queries: Sequence[Query], max_tracks: int) -> list[Track]:
    """All tracks, or `max_tracks` of them: the selected positives' sources first, then in order."""
    if not max_tracks or max_tracks >= len(reference):
        return list(reference)
    by_key = {t.key: t for t in reference}
    wanted = dict.fromkeys(q.source_track for q in queries if q.source_track in by_key)
    chosen = [by_key[k] for k in wanted if k is not None][:max_tracks]
    taken = {t.key for t in chosen}
    return chosen + [t for t in reference if t.key not in taken][: max_tracks - len(chosen)]


# -- small helpers -------------------------------------------------------------------------------------


def _pcm_chunks(pcm: np.ndarray, params: FingerprintParams) -> Iterator[np.ndarray]:
    chunk = int(params.chunk_seconds * params.sample_rate_hz)
    for i in range(0, max(pcm.size, 1), chunk):
        yield pcm[i : i + chunk]


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else None


def _rate_summary(durations_s: Sequence[float], seconds: Sequence[float]) -> float | None:
    total = float(np.sum(seconds))
    return float(np.sum(durations_s)) / total if total > 0 else None


def _windows(values: Sequence[float], durations_s: Sequence[float]) -> dict[str, float | None]:
    """x real time over the first and the last tenth of a sequence of per-track costs (seconds)."""
    n = len(values)
    w = max(1, n // 10)
    return {
        "window_tracks": w,
        "first_x": _rate_summary(durations_s[:w], values[:w]),
        "last_x": _rate_summary(durations_s[n - w :], values[n - w :]),
    }


def _titles(shard: EmbeddedShard) -> dict[int, str]:
    # track ids are SQLite rowids from 1 upwards; ask for a generous range
    n = shard.stats().n_tracks
    return {tid: r.title for tid, r in shard.get_tracks(range(1, 2 * n + 100)).items()}


def _git_describe() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = (getattr(exc, "stderr", "") or str(exc)).strip().splitlines()
        return f"unknown ({reason[0] if reason else 'git failed'})"


def _warm_up(params: FingerprintParams) -> None:
    """Load the numba kernels (cached on disk) before anything is timed or a pool is forked."""
    rng = np.random.default_rng(0)
    pcm = (0.1 * rng.standard_normal(params.sample_rate_hz * 3)).astype(np.float32)
    fingerprint_pcm(pcm, params, Role.REFERENCE)
    extract_peaks(iter([pcm]), params, Role.QUERY)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- 1. fingerprint speed ------------------------------------------------------------------------------


def bench_fingerprint(tracks: Sequence[Track], params: FingerprintParams, seconds: float) -> dict[str, Any]:
    """PCM -> hashes (reference role) in this process; decoding is done first and not timed."""
    pcms: list[np.ndarray] = []
    remaining = seconds
    for track in tracks:
        if remaining <= 0:
            break
        pcm, _ = decode_all(track.path, sample_rate_hz=params.sample_rate_hz, duration_s=remaining)
        pcms.append(pcm)
        remaining -= pcm.size / params.sample_rate_hz
    audio_s = sum(p.size for p in pcms) / params.sample_rate_hz
    wall = cpu = 0.0
    n_hashes = 0
    for pcm in pcms:
        w0, c0 = time.perf_counter(), time.process_time()
        fp = fingerprint_pcm(pcm, params, Role.REFERENCE)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        n_hashes += len(fp)
    return {
        "tracks": len(pcms),
        "audio_s": audio_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "x_realtime_wall": audio_s / wall,
        "x_realtime_cpu": audio_s / cpu,
        "hashes_per_s": n_hashes / audio_s,
    }


# -- 2. ingest -----------------------------------------------------------------------------------------


def _fingerprint_file(path: str) -> dict[str, Any]:
    """Worker: file -> (sha1, hashes, offsets) with its costs; audio errors are returned, not raised."""
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        audio = fingerprint_audio(path, PARAMS, Role.REFERENCE)
    except (AudioError, OSError) as exc:  # a broken or missing corpus file: reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "sha1": audio.file_sha1,
        "hashes": audio.fingerprint.hashes,
        "offsets": audio.fingerprint.offsets,
        "peaks": verify.encode(audio.peaks, PARAMS),
        "duration_s": audio.duration_s,
        "wall_s": time.perf_counter() - w0,
        "cpu_s": time.process_time() - c0,
    }


def ingest_corpus(tracks: Sequence[Track], store: Path, jobs: int) -> dict[str, Any]:
    """Fresh shard in STORE/shard: decode + fingerprint in `jobs` forked workers, ingest here, in order."""
    shard_dir = store / SHARD_DIR
    shutil.rmtree(shard_dir, ignore_errors=True)
    store.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    durations: list[float] = []
    done_at: list[float] = []
    ingest_s: list[float] = []
    worker_wall: list[float] = []
    worker_cpu: list[float] = []
    all_hashes: list[np.ndarray] = []
    all_offsets: list[np.ndarray] = []
    errors: dict[str, str] = {}
    already_present = 0
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        started = time.perf_counter()
        results = pool.map(_fingerprint_file, [str(t.path) for t in tracks])  # forks before the shard opens
        shard = EmbeddedShard(shard_dir, fingerprint_version=FINGERPRINT_VERSION)
        try:
            for i, (track, result) in enumerate(zip(tracks, results, strict=True)):
                if "error" in result:
                    errors[track.key] = result["error"]
                    continue
                meta = TrackMeta(file_sha1=result["sha1"], title=track.key, duration_s=result["duration_s"])
                t0 = time.perf_counter()
                outcome = shard.ingest(meta, result["hashes"], result["offsets"], result["peaks"])
                ingest_s.append(time.perf_counter() - t0)
                done_at.append(time.perf_counter() - started)
                already_present += outcome.already_present
                keys.append(track.key)
                durations.append(result["duration_s"])
                worker_wall.append(result["wall_s"])
                worker_cpu.append(result["cpu_s"])
                all_hashes.append(result["hashes"])
                all_offsets.append(result["offsets"])
                if (i + 1) % 20 == 0:
                    _log(f"  ingested {i + 1}/{len(tracks)} tracks")
            wall = time.perf_counter() - started
            stats = shard.stats()
            segments = asdict(shard.segment_summary())
            # what the matcher does once writes pause (TUNESCOUT_COMPACT_IDLE_S): one segment file
            t0 = time.perf_counter()
            shard.compact(full=True)
            compact_s = time.perf_counter() - t0
            compacted = shard.stats()
        finally:
            shard.close()
    audio_s = float(np.sum(durations))
    # completion-to-completion time of each track: what the whole machine spent per track
    spans = np.diff(np.concatenate(([0.0], done_at))).tolist()
    starts = np.cumsum([0, *(len(h) for h in all_hashes)])
    np.savez(
        store / FINGERPRINTS_NPZ,
        hashes=np.concatenate(all_hashes) if all_hashes else np.empty(0, np.uint32),
        offsets=np.concatenate(all_offsets) if all_offsets else np.empty(0, np.int32),
        starts=starts,
        durations_s=np.asarray(durations),
        keys=np.asarray(keys),
    )
    report = {
        "tracks": len(keys),
        "already_present": already_present,
        "errors": errors,
        "jobs": jobs,
        "audio_s": audio_s,
        "audio_h": audio_s / 3600,
        "wall_s": wall,
        "x_realtime_machine": audio_s / wall if wall > 0 else None,
        "completion": _windows(spans, durations),
        "store_only": {
            **_windows(ingest_s, durations),
            "x_realtime": _rate_summary(durations, ingest_s),
            "ingest_ms_p50": 1000 * (_percentile(ingest_s, 50) or 0.0),
            "ingest_ms_max": 1000 * max(ingest_s, default=0.0),
        },
        "decode_fingerprint_x_realtime_per_worker_cpu": _rate_summary(durations, worker_cpu),
        "stats": asdict(stats),
        "bytes_per_hour_mb": stats.bytes_on_disk / 1e6 / (audio_s / 3600) if audio_s else None,
        "segments": segments,
        "compacted": {
            "seconds": compact_s,
            "stats": asdict(compacted),
            "bytes_per_hour_mb": compacted.bytes_on_disk / 1e6 / (audio_s / 3600) if audio_s else None,
        },
    }
    (store / INGEST_JSON).write_text(json.dumps(report, indent=1))
    return report


# -- 3. queries ----------------------------------------------------------------------------------------


def right_answer(query: Query, track: str | None, offset_s: float | None) -> bool:
    """The answer (top track's title and offset) names the clip's track within OFFSET_TOLERANCE_S."""
    return (
        query.source_track is not None
        and track == query.source_track
        and offset_s is not None
        and abs(offset_s - query.start_s) <= OFFSET_TOLERANCE_S
    )


@dataclass(frozen=True)
class QueryOutcome:
    query: Query
    top_track: str | None
    offset_s: float | None
    confidence: float | None
    n_results: int
    peaks_ms: float
    match_ms: float
    error: str = ""
    repeat_share: float | None = None  # set by `mark_repeats` when the track is right but the offset is not

    @property
    def track_hit(self) -> bool:
        return self.query.source_track is not None and self.top_track == self.query.source_track

    @property
    def hit(self) -> bool:
        return right_answer(self.query, self.top_track, self.offset_s)

    @property
    def hit_or_repeat(self) -> bool:
        """A hit, or the right track at a place where it repeats the clip's music (loops are common)."""
        return self.hit or (self.repeat_share is not None and self.repeat_share >= REPEAT_MIN_SHARE)


def _query_peaks(q: Query, params: FingerprintParams) -> tuple[Peaks, float]:
    pcm, _ = decode_all(q.path, sample_rate_hz=params.sample_rate_hz, min_duration_s=params.min_clip_seconds)
    t0 = time.perf_counter()
    peaks = extract_peaks(_pcm_chunks(pcm, params), params, Role.QUERY)
    return peaks, 1000 * (time.perf_counter() - t0)


def _read_files(directory: Path) -> float:
    """Read every file under `directory` once (into the page cache); MB read."""
    total = 0
    for path in sorted(directory.iterdir()):
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(1 << 24):
                    total += len(chunk)
    return total / 1e6


def run_queries(shard: EmbeddedShard, queries: Sequence[Query], label: str) -> list[QueryOutcome]:
    """Each query in turn, in this process: decode (untimed), peaks (timed), match_peaks (timed)."""
    titles = _titles(shard)
    sizes = shard_track_sizes(shard)
    stored = shard.stats().n_hashes  # calibrates the confidences, as the matcher does
    # as a matcher that has been serving a while: the store's files in the page cache (a cold read from
    # disk cost single queries up to 4 s at 10,000 tracks), and every stage's kernels loaded (the first
    # query is found by its plain lookup; a clip of an unstored track runs every stage)
    read_mb = _read_files(shard.path)
    _log(f"  {label}: read the store's {read_mb:.0f} MB once (page cache)")
    warm = queries[:1] + [q for q in queries if q.source_track is None][:1]
    for q in warm:
        peaks, _ = _query_peaks(q, PARAMS)
        match_peaks(peaks, shard.lookup, sizes, PARAMS, MATCH_PARAMS, stored, shard.track_peaks)
    outcomes = []
    for i, q in enumerate(queries):
        try:
            peaks, peaks_ms = _query_peaks(q, PARAMS)
        except AudioError as exc:
            outcomes.append(
                QueryOutcome(q, None, None, None, 0, 0.0, 0.0, error=f"{type(exc).__name__}: {exc}")
            )
            continue
        t0 = time.perf_counter()
        matches = match_peaks(peaks, shard.lookup, sizes, PARAMS, MATCH_PARAMS, stored, shard.track_peaks)
        match_ms = 1000 * (time.perf_counter() - t0)
        top = matches[0] if matches else None
        outcomes.append(
            QueryOutcome(
                query=q,
                top_track=titles.get(top.track_id, f"#{top.track_id}") if top else None,
                offset_s=top.offset_s if top else None,
                confidence=top.confidence if top else None,
                n_results=len(matches),
                peaks_ms=peaks_ms,
                match_ms=match_ms,
            )
        )
        if (i + 1) % 500 == 0:
            _log(f"  {label}: {i + 1}/{len(queries)} queries")
    return outcomes


def load_stored_prints(store: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The corpus tracks' fingerprints as ingested (STORE/fingerprints.npz), by track key."""
    # each item access of an NpzFile reads its array again: read each once (slicing the item in the loop
    # kept two whole copies alive per track, 16 GB for the 165-track corpus)
    with np.load(store / FINGERPRINTS_NPZ, allow_pickle=False) as prints:
        starts, keys, hashes, offsets = prints["starts"], prints["keys"], prints["hashes"], prints["offsets"]
    return {
        str(key): (hashes[starts[i] : starts[i + 1]], offsets[starts[i] : starts[i + 1]])
        for i, key in enumerate(keys)
    }


def repeat_share(
    hashes: np.ndarray, offsets: np.ndarray, truth_s: float, found_s: float, span_s: float, frame_s: float
) -> float:
    """Share of the track's landmarks in [truth_s, truth_s + span_s) that recur, at the same relative
    offset (+-1 frame), in [found_s, found_s + span_s): about 1 where the track loops, about 0 elsewhere."""
    length = round(span_s / frame_s)

    def window(start: int) -> np.ndarray:
        inside = (offsets >= start) & (offsets < start + length)
        return (hashes[inside].astype(np.int64) << 32) | (offsets[inside].astype(np.int64) - start)

    truth = window(round(truth_s / frame_s))
    if truth.size == 0:
        return 0.0
    found = np.concatenate([window(round(found_s / frame_s) + d) for d in (-1, 0, 1)])
    return float(np.isin(truth, found).mean())


def mark_repeats(
    outcomes: Sequence[QueryOutcome], prints: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> list[QueryOutcome]:
    marked = []
    for o in outcomes:
        if o.track_hit and not o.hit and o.offset_s is not None and o.query.source_track in prints:
            h, off = prints[o.query.source_track]
            share = repeat_share(
                h, off, o.query.start_s, o.offset_s, o.query.source_span_s, PARAMS.frame_seconds
            )
            o = replace(o, repeat_share=share)
        marked.append(o)
    return marked


def _degradation_rank(name: str) -> tuple[int, str]:
    return (
        (DEGRADATION_ORDER.index(name), "") if name in DEGRADATION_ORDER else (len(DEGRADATION_ORDER), name)
    )


def recall_table(outcomes: Sequence[QueryOutcome]) -> list[dict[str, Any]]:
    groups: dict[tuple[float, str], list[QueryOutcome]] = defaultdict(list)
    for o in outcomes:
        if o.query.source_track is not None:
            groups[(o.query.duration_s, o.query.degradation)].append(o)
    rows = []
    for (duration, degradation), group in sorted(
        groups.items(), key=lambda kv: (-kv[0][0], _degradation_rank(kv[0][1]))
    ):
        n = len(group)
        rows.append(
            {
                "duration_s": duration,
                "degradation": degradation,
                "n": n,
                "recall_pct": 100 * sum(o.hit for o in group) / n,
                "repeat_recall_pct": 100 * sum(o.hit_or_repeat for o in group) / n,
                "track_recall_pct": 100 * sum(o.track_hit for o in group) / n,
                "errors": sum(bool(o.error) for o in group),
                "target_pct": RECALL_TARGETS.get((duration, degradation)),
            }
        )
    return rows


def false_positives(outcomes: Sequence[QueryOutcome]) -> dict[str, Any]:
    negatives = [o for o in outcomes if o.query.source_track is None]
    by_condition: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for o in negatives:
        cell = by_condition[f"{o.query.duration_s:g}s {o.query.degradation}"]
        cell[0] += 1
        cell[1] += o.n_results > 0
    n_fp = sum(o.n_results > 0 for o in negatives)
    return {
        "n": len(negatives),
        "false_positives": n_fp,
        "rate_pct": 100 * n_fp / len(negatives) if negatives else None,
        "by_condition": {k: {"n": v[0], "false_positives": v[1]} for k, v in sorted(by_condition.items())},
        "examples": [
            {"query": o.query.query_file, "top": o.top_track, "confidence": o.confidence}
            for o in negatives
            if o.n_results
        ][:20],
    }


def latency(outcomes: Sequence[QueryOutcome]) -> dict[str, Any]:
    timed = [o for o in outcomes if not o.error]
    match_ms = [o.match_ms for o in timed]
    peaks_ms = [o.peaks_ms for o in timed]
    by_duration = {}
    for duration in sorted({o.query.duration_s for o in timed}, reverse=True):
        ms = [o.match_ms for o in timed if o.query.duration_s == duration]
        by_duration[f"{duration:g}s"] = {"p50": _percentile(ms, 50), "p99": _percentile(ms, 99)}
    return {
        "n": len(timed),
        "match_ms_p50": _percentile(match_ms, 50),
        "match_ms_p99": _percentile(match_ms, 99),
        "match_ms_max": max(match_ms, default=None),
        "peaks_ms_p50": _percentile(peaks_ms, 50),
        "peaks_ms_p99": _percentile(peaks_ms, 99),
        "match_ms_by_duration": by_duration,
        # queries the plain hypothesis does not settle also try the speed/tempo hypotheses: slower
        "match_ms_p50_no_result": _percentile([o.match_ms for o in timed if not o.n_results], 50),
    }


def write_outcomes_csv(path: Path, outcomes: Sequence[QueryOutcome]) -> None:
    columns = [
        "query_file", "source_track", "start_s", "duration_s", "degradation", "top_track", "offset_s",
        "confidence", "n_results", "hit", "track_hit", "repeat_share", "peaks_ms", "match_ms", "error",
    ]  # fmt: skip
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for o in outcomes:
            q = o.query
            writer.writerow([
                q.query_file, q.source_track or "NONE", q.start_s, q.duration_s, q.degradation,
                o.top_track or "",
                "" if o.offset_s is None else f"{o.offset_s:.3f}",
                "" if o.confidence is None else f"{o.confidence:.3f}",
                o.n_results, int(o.hit), int(o.track_hit),
                "" if o.repeat_share is None else f"{o.repeat_share:.2f}",
                f"{o.peaks_ms:.2f}", f"{o.match_ms:.2f}", o.error,
            ])  # fmt: skip


# -- 4. 10,000 tracks ----------------------------------------------------------------------------------


def _shift_anchors(hashes: np.ndarray, shift: int, params: FingerprintParams) -> np.ndarray:
    """Move every hash's anchor cell by `shift` cells, reflecting at the band edges (where the cell delta
    is mirrored too, as a reflected spectrum would have it)."""
    anchor, delta_1, delta_2, dt_1, dt_2 = hash_layout.unpack(hashes)
    cells = params.freq_cells
    moved = anchor + shift
    mirrored = (moved < 0) | (moved >= cells)
    moved = np.where(moved >= cells, 2 * cells - 1 - moved, moved)
    moved = np.where(moved < 0, -moved - 1, moved)
    return hash_layout.pack(
        moved, np.where(mirrored, -delta_1, delta_1), np.where(mirrored, -delta_2, delta_2), dt_1, dt_2
    )


def filler_fingerprint(
    sources: Sequence[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, params: FingerprintParams
) -> tuple[np.ndarray, np.ndarray]:
    """A realistic but foreign track from real fingerprints (hashes, offsets): each source's anchor cells
    move by 16-48 cells (its own shift), and the track is a medley of ~4 s blocks of the sources in random
    order, as long as the first source. Hash statistics (frequency shapes, density, repeats) stay those of
    real music and no two filler tracks are alike; no query can match one (that takes a 9 % pitch change)."""
    block = FILLER_BLOCK_FRAMES
    prepared = []  # per source: shifted hashes and in-block offsets sorted by block, block boundaries
    for hashes, offsets in sources:
        shift = int(rng.integers(FILLER_SHIFT_CELLS[0], FILLER_SHIFT_CELLS[1] + 1)) * int(rng.choice([-1, 1]))
        order = np.argsort(offsets // block, kind="stable")
        blocks = offsets[order] // block
        n_blocks = int(blocks[-1]) + 1 if blocks.size else 0
        bounds = np.searchsorted(blocks, np.arange(n_blocks + 1))
        prepared.append(
            (_shift_anchors(hashes[order], shift, params), offsets[order] % block, bounds, n_blocks)
        )
    n_slots = max(1, prepared[0][3])
    source_of_slot = rng.integers(len(prepared), size=n_slots)
    next_block = [rng.permutation(max(1, p[3])) for p in prepared]
    used = [0] * len(prepared)
    out_hashes, out_offsets = [], []
    for slot, j in enumerate(source_of_slot):
        hashes, in_block, bounds, n_blocks = prepared[j]
        if n_blocks == 0:
            continue
        k = next_block[j][used[j] % n_blocks]  # without repeats until the source runs out of blocks
        used[j] += 1
        out_hashes.append(hashes[bounds[k] : bounds[k + 1]])
        out_offsets.append(in_block[bounds[k] : bounds[k + 1]] + slot * block)
    if not out_hashes:
        return np.empty(0, np.uint32), np.empty(0, np.int32)
    return np.concatenate(out_hashes), np.concatenate(out_offsets).astype(np.int32)


def grow_with_filler(store: Path, total_tracks: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """STORE/shard copied to STORE/shard_<total>, then filler tracks ingested until `total_tracks`.
    Resumes an interrupted fill (filler i is a pure function of (seed, i))."""
    source_dir = store / SHARD_DIR
    scale_dir = store / f"{SHARD_DIR}_{total_tracks}"
    marker = scale_dir.with_name(scale_dir.name + ".source")
    # what the copy was grown from: this ingest of the corpus, this filler recipe and seed
    source_stamp = json.dumps(
        {
            "ingest_sha1": hashlib.sha1((store / INGEST_JSON).read_bytes()).hexdigest(),
            "filler": [FILLER_SOURCES, FILLER_BLOCK_FRAMES, FILLER_SHIFT_CELLS, seed],
        }
    )
    if scale_dir.exists() and (not marker.exists() or marker.read_text() != source_stamp):
        shutil.rmtree(scale_dir)
    if not scale_dir.exists():
        shutil.copytree(source_dir, scale_dir, ignore=shutil.ignore_patterns("LOCK"))
        marker.write_text(source_stamp)
    prints = np.load(store / FINGERPRINTS_NPZ, allow_pickle=False)
    hashes, offsets, starts, durations = (
        prints["hashes"],
        prints["offsets"],
        prints["starts"],
        prints["durations_s"],
    )
    ingest_s: list[float] = []
    filler_durations: list[float] = []
    shard = EmbeddedShard(scale_dir, fingerprint_version=FINGERPRINT_VERSION)
    try:
        first = sum(title.startswith("filler/") for title in _titles(shard).values())  # resume point
        n_filler = total_tracks - shard.stats().n_tracks + first
        for i in range(first, n_filler):
            rng = np.random.default_rng([seed, i])
            picked = rng.choice(len(durations), size=min(FILLER_SOURCES, len(durations)), replace=False)
            src = int(picked[0])
            sources = [
                (hashes[starts[j] : starts[j + 1]], offsets[starts[j] : starts[j + 1]]) for j in picked
            ]
            h, off = filler_fingerprint(sources, rng, PARAMS)
            meta = TrackMeta(
                file_sha1=hashlib.sha1(f"filler:{seed}:{i}".encode()).hexdigest(),
                title=f"filler/{i:05d}",
                duration_s=float(durations[src]),
            )
            t0 = time.perf_counter()
            shard.ingest(meta, h, off)
            ingest_s.append(time.perf_counter() - t0)
            filler_durations.append(float(durations[src]))
            if (i + 1) % 1000 == 0:
                _log(f"  filler: {i + 1}/{n_filler} tracks")
        # what the matcher does once writes pause: one segment file (services/matcher/shardset.py)
        t0 = time.perf_counter()
        shard.compact(full=True)
        compact_s = time.perf_counter() - t0
        stats = shard.stats()
        segments = asdict(shard.segment_summary())
        records = shard.get_tracks(range(1, 2 * stats.n_tracks + 100))
    finally:
        shard.close()
    audio_h = sum(r.duration_s for r in records.values()) / 3600
    return scale_dir, {
        "tracks": stats.n_tracks,
        "filler_tracks": sum(r.title.startswith("filler/") for r in records.values()),
        "filler_added_now": len(ingest_s),
        "store_only_ingest": {
            **_windows(ingest_s, filler_durations),
            "x_realtime": _rate_summary(filler_durations, ingest_s),
            "ingest_ms_p50": 1000 * (_percentile(ingest_s, 50) or 0.0),
            "ingest_ms_max": 1000 * max(ingest_s, default=0.0),
        }
        if ingest_s
        else None,
        "stats": asdict(stats),
        "audio_h": audio_h,
        "bytes_per_hour_mb": stats.bytes_on_disk / 1e6 / audio_h,
        "compact_s": compact_s,
        "segments": segments,
    }


# -- 5. peak RSS of a 3-hour file ----------------------------------------------------------------------


def build_long_file(tracks: Sequence[Track], path: Path, hours: float) -> None:
    """Concatenate corpus tracks into one Ogg/Opus file of `hours` (streamed: never all in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def chunks() -> Iterator[np.ndarray]:
        remaining = int(hours * 3600 * LONG_FILE_RATE_HZ)
        while True:
            for track in tracks:
                with open_audio(
                    track.path, sample_rate_hz=LONG_FILE_RATE_HZ, chunk_samples=LONG_FILE_RATE_HZ * 10
                ) as pcm:
                    for chunk in pcm:
                        yield chunk[:remaining]
                        remaining -= min(remaining, chunk.size)
                        if remaining == 0:
                            return

    write_audio(path, chunks(), LONG_FILE_RATE_HZ, codec="libopus", bit_rate=LONG_FILE_BIT_RATE)


def _peak_rss_mb() -> float:
    """This address space's peak RSS (VmHWM). `ru_maxrss` would do on its own, but Linux carries it over
    fork + exec, so a child of this (large) benchmark process would start at the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def rss_child(audio_path: Path, store: Path) -> None:
    """In a fresh process: fingerprint + ingest one file; print what the peak RSS was (JSON, one line)."""
    after_imports_mb = _peak_rss_mb()
    t0 = time.perf_counter()
    audio = fingerprint_audio(audio_path, PARAMS, Role.REFERENCE)
    fingerprint_s = time.perf_counter() - t0
    after_fingerprint_mb = _peak_rss_mb()
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    with EmbeddedShard(store, fingerprint_version=FINGERPRINT_VERSION) as shard:
        meta = TrackMeta(file_sha1=audio.file_sha1, title=audio_path.name, duration_s=audio.duration_s)
        shard.ingest(meta, audio.fingerprint.hashes, audio.fingerprint.offsets)
    ingest_s = time.perf_counter() - t0
    shutil.rmtree(store, ignore_errors=True)
    report = {
        "audio_s": audio.duration_s,
        "hashes": len(audio.fingerprint),
        "peaks": len(audio.peaks),
        "fingerprint_s": fingerprint_s,
        "ingest_s": ingest_s,
        "rss_after_imports_mb": after_imports_mb,
        "rss_after_fingerprint_mb": after_fingerprint_mb,
        "peak_rss_mb": _peak_rss_mb(),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # includes the parent's
    }
    print(json.dumps(report))


def measure_rss(long_file: Path, hours: float, reference: Sequence[Track], store: Path) -> dict[str, Any]:
    if not long_file.exists():
        _log(f"building {long_file} ({hours:g} h of corpus tracks as Ogg/Opus); done once")
        t0 = time.perf_counter()
        build_long_file(reference, long_file, hours)
        _log(f"  built in {time.perf_counter() - t0:.0f} s")
    # the child measures memory, not numba compiling: with --skip-ingest nothing in this process has
    # compiled (and cached) the store's kernels yet, and compiling them in the child added 40 MB. The
    # child's one track exceeds level 0 and is merged into a file at once: so is the warm-up's
    warm = store / "rss_warm_shard"
    shutil.rmtree(warm, ignore_errors=True)
    with EmbeddedShard(warm, fingerprint_version=FINGERPRINT_VERSION, level0_max_rows=1) as shard:
        warm_prints = fingerprint_pcm(
            np.random.default_rng(0).standard_normal(PARAMS.sample_rate_hz * 5).astype(np.float32)
        )
        shard.ingest(TrackMeta("0" * 40, "warm-up"), warm_prints.hashes, warm_prints.offsets)
    shutil.rmtree(warm, ignore_errors=True)
    t0 = time.perf_counter()
    child = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(long_file), "--store", str(store / "rss_shard")],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        return {"error": child.stderr.strip()[-2000:], "file": str(long_file)}
    report = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        **report,
        "file": str(long_file),
        "file_bytes": long_file.stat().st_size,
        "wall_s": time.perf_counter() - t0,
    }


# -- report --------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def evaluate_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every target beside its figure; `ok` is None where the figure was not measured."""
    checks: list[dict[str, Any]] = []

    def check(figure: str, value: float | None, op: str, target: float, unit: str) -> None:
        ok = (
            None
            if value is None
            else (value >= target if op == ">=" else value <= target if op == "<=" else value < target)
        )
        checks.append({"figure": figure, "value": value, "target": f"{op} {target:g}{unit}", "ok": ok})

    fp = results.get("fingerprint") or {}
    check("fingerprint x real time per core (CPU)", fp.get("x_realtime_cpu"), ">=", FINGERPRINT_TARGET_X, "x")
    ing = results.get("ingest") or {}
    check("ingest x real time, whole machine", ing.get("x_realtime_machine"), ">=", INGEST_TARGET_X, "x")
    recall = {(r["duration_s"], r["degradation"]): r for r in results.get("recall", [])}
    for (duration, degradation), target in RECALL_TARGETS.items():
        row = recall.get((duration, degradation))
        check(f"recall@1 {duration:g}s {degradation} %", row and row["recall_pct"], ">=", target, "%")
    fpos = results.get("false_positives") or {}
    check("false positives %", fpos.get("rate_pct"), "<=", FALSE_POSITIVE_TARGET_PCT, "%")
    scale = results.get("scale") or {}
    lat = scale.get("latency") or {}
    size = f"{scale['store']['tracks']} tracks" if scale else "scale (--filler)"
    check(f"match p50 ms at {size}", lat.get("match_ms_p50"), "<=", MATCH_P50_TARGET_MS, " ms")
    check(f"match p99 ms at {size}", lat.get("match_ms_p99"), "<=", MATCH_P99_TARGET_MS, " ms")
    check("MB stored per hour", ing.get("bytes_per_hour_mb"), "<=", BYTES_PER_HOUR_TARGET_MB, " MB")
    compacted = ing.get("compacted") or {}
    check(
        "MB stored per hour, compacted",
        compacted.get("bytes_per_hour_mb"),
        "<=",
        BYTES_PER_HOUR_TARGET_MB,
        " MB",
    )
    rss = results.get("rss") or {}
    hours = f"{rss['audio_s'] / 3600:.1f}" if "audio_s" in rss else "?"
    check(f"peak RSS MB, {hours} h file", rss.get("peak_rss_mb"), "<", PEAK_RSS_TARGET_MB, " MB")
    return checks


def _x(value: float | None) -> str:
    return _fmt(value, ".0f", "x")


def _ms(value: float | None) -> str:
    return _fmt(value, ".2f", " ms")


def _latency(summary: Mapping[str, Any]) -> str:
    return (
        f"p50 {_ms(summary['match_ms_p50'])}, p99 {_ms(summary['match_ms_p99'])}, "
        f"max {_ms(summary['match_ms_max'])}"
    )


def print_report(results: Mapping[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\n== engine benchmark {m['date']}, git {m['git_describe']}, nproc {m['nproc']}, load {m['loadavg']}"
    )
    fp = results.get("fingerprint")
    if fp:
        print(
            f"fingerprint, PCM -> hashes, 1 process ({fp['tracks']} tracks, {fp['audio_s']:.0f} s of audio):"
        )
        print(
            f"  {_x(fp['x_realtime_cpu'])} real time per core (CPU time), {_x(fp['x_realtime_wall'])} (wall)"
        )
        print(f"  {fp['hashes_per_s']:.0f} hashes per second of audio")
    ing = results.get("ingest")
    if ing:
        reused = ", reused with --skip-ingest" if results.get("ingest_reused") else ""
        done, store = ing["completion"], ing["store_only"]
        window = done["window_tracks"]
        what = f"{ing['tracks']} tracks, {ing['audio_h']:.2f} h, {ing['jobs']} workers{reused}"
        print(f"ingest, file -> stored ({what}):")
        print(f"  {_x(ing['x_realtime_machine'])} real time for the machine ({ing['wall_s']:.1f} s)")
        print(f"  first / last {window} tracks: {_x(done['first_x'])} / {_x(done['last_x'])} end to end")
        print(
            f"  store.ingest() alone: {_x(store['first_x'])} / {_x(store['last_x'])} (first / last {window}),"
        )
        print(f"    p50 {store['ingest_ms_p50']:.1f} ms, max {store['ingest_ms_max']:.0f} ms per track")
        worker_x = _x(ing["decode_fingerprint_x_realtime_per_worker_cpu"])
        print(f"  decode + fingerprint: {worker_x} real time per worker (CPU time)")
        mb = ing["stats"]["bytes_on_disk"] / 1e6
        per_hour = _fmt(ing["bytes_per_hour_mb"], ".2f")
        print(f"storage: {mb:.1f} MB for {ing['audio_h']:.2f} h = {per_hour} MB/hour")
        if "compacted" in ing:
            c = ing["compacted"]
            print(
                f"  after compaction into one segment ({c['seconds']:.1f} s, as the matcher does once "
                f"writes pause): {c['stats']['bytes_on_disk'] / 1e6:.1f} MB = "
                f"{_fmt(c['bytes_per_hour_mb'], '.2f')} MB/hour"
            )
    rows = results.get("recall") or []
    if rows:
        enrolled = results["queries"]["tracks_enrolled"]
        tolerance = f"{OFFSET_TOLERANCE_S:g} s"
        print(f"recall@1 at {enrolled} tracks, hit = right track and |offset - start| <= {tolerance}:")
        print(
            f"  {'clip':>4}  {'degradation':<14} {'n':>4}  {'recall':>7}  {'+repeats':>8}  {'track only':>10}"
            f"  {'target':>7}"
        )
        for r in rows:
            target = r["target_pct"]
            mark = "" if target is None else ("  ok" if r["recall_pct"] >= target else "  MISS")
            shares = (
                f"{r['recall_pct']:>6.1f}%  {r['repeat_recall_pct']:>7.1f}%  {r['track_recall_pct']:>9.1f}%"
            )
            condition = f"{r['duration_s']:>3g}s  {r['degradation']:<14} {r['n']:>4}"
            print(f"  {condition}  {shares}  {_fmt(target, '.0f', '%'):>7}{mark}")
    fpos = results.get("false_positives")
    if fpos:
        rate = _fmt(fpos["rate_pct"], ".2f", "%")
        print(f"false positives: {fpos['false_positives']} of {fpos['n']} negatives got a result = {rate}")
    lat = results.get("latency")
    if lat:
        print(f"latency at the corpus size ({lat['n']} queries):")
        print(f"  match_peaks {_latency(lat)}")
        print(f"  peaks (not in match) p50 {_ms(lat['peaks_ms_p50'])}, p99 {_ms(lat['peaks_ms_p99'])}")
    scale = results.get("scale")
    if scale:
        st, sl, base = scale["store"], scale["latency"], scale["same_queries_at_corpus_size"]
        hashes_m = st["stats"]["n_hashes"] / 1e6
        print(
            f"at {st['tracks']} tracks ({st['audio_h']:.0f} h, {hashes_m:.1f} M hashes), {sl['n']} queries:"
        )
        print(f"  match_peaks {_latency(sl)}")
        print(f"  same queries at the corpus size: {_latency(base)}")
        print(
            f"  recall {scale['recall_pct']:.1f}% (corpus size {base['recall_pct']:.1f}%), false positives "
            f"{scale['false_positives']} (corpus size {base['false_positives']})"
        )
        print(f"  storage {_fmt(st['bytes_per_hour_mb'], '.2f')} MB/hour")
        fi = st.get("store_only_ingest")
        if fi:
            print(
                f"  filler store.ingest(): first / last {fi['window_tracks']}: {_x(fi['first_x'])} / "
                f"{_x(fi['last_x'])}, p50 {fi['ingest_ms_p50']:.1f} ms, max {fi['ingest_ms_max']:.0f} ms"
            )
    rss = results.get("rss")
    if rss and "error" in rss:
        print(f"peak RSS: failed: {rss['error']}")
    elif rss:
        hours = rss["audio_s"] / 3600
        print(f"peak RSS, fingerprint + ingest of one {hours:.1f} h file in a fresh process:")
        print(f"  {rss['peak_rss_mb']:.0f} MB (after imports {rss['rss_after_imports_mb']:.0f} MB)")
        print(f"  fingerprinting took {rss['fingerprint_s']:.0f} s")
    checks = results.get("targets") or []
    measured = [c for c in checks if c["ok"] is not None]
    print(f"targets: {sum(c['ok'] for c in measured)} of {len(measured)} measured are met")
    for c in checks:
        status = "n/a " if c["ok"] is None else ("ok  " if c["ok"] else "MISS")
        print(f"  {status} {c['figure']:<42} {_fmt(c['value'], '.2f'):>10}  {c['target']}")


# -- main ----------------------------------------------------------------------------------------------


def _subset_summary(outcomes: Sequence[QueryOutcome]) -> dict[str, Any]:
    positives = [o for o in outcomes if o.query.source_track is not None]
    return {
        **latency(outcomes),
        "recall_pct": 100 * sum(o.hit for o in positives) / len(positives) if positives else 0.0,
        "false_positives": sum(o.n_results > 0 for o in outcomes if o.query.source_track is None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--corpus", type=Path, default=Path("/work/cache/corpus/extract"), help="corpus extract/ dir"
    )
    ap.add_argument(
        "--queries", type=Path, default=Path("/work/cache/queries"), help="make_queries.py output dir"
    )
    ap.add_argument(
        "--store", type=Path, default=Path("/work/cache/bench/store"), help="where shards are kept"
    )
    ap.add_argument("--jobs", type=int, default=2, help="decode+fingerprint workers while ingesting")
    ap.add_argument("--limit", type=int, default=0, help="about N queries (whole excerpts), 0 = all")
    ap.add_argument("--max-tracks", type=int, default=0, help="enrol N tracks (sources of the queries first)")
    ap.add_argument("--skip-ingest", action="store_true", help="reuse STORE/shard and its ingest figures")
    ap.add_argument("--filler", type=int, default=10000, help="total tracks of the scale test, 0 skips it")
    ap.add_argument("--scale-queries", type=int, default=600, help="queries rerun at the scale size")
    ap.add_argument("--fp-seconds", type=float, default=600.0, help="audio for the fingerprint speed test")
    ap.add_argument("--long-hours", type=float, default=LONG_FILE_HOURS, help="length of the long file")
    ap.add_argument("--long-file", type=Path, help="the long file (default /work/cache/bench/long_<H>h.ogg)")
    ap.add_argument("--skip-rss", action="store_true", help="skip the 3 h peak-RSS test")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/results/engine.json"))
    ap.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    tune_malloc()  # as every service process does (forked workers inherit it)
    if args.rss_child:
        rss_child(args.rss_child, args.store)
        return

    results: dict[str, Any] = {
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git_describe": _git_describe(),
        },
        "fingerprint_version": FINGERPRINT_VERSION,
        "params": repr(PARAMS),
        "match_params": repr(MATCH_PARAMS),
        "args": {k: str(v) for k, v in vars(args).items() if k != "rss_child"},
    }
    reference = load_reference(args.queries, args.corpus)
    queries = select_queries(load_queries(args.queries), args.limit, args.seed)
    tracks = select_tracks(reference, queries, args.max_tracks)
    _warm_up(PARAMS)

    _log(f"fingerprint speed over up to {args.fp_seconds:g} s of audio")
    results["fingerprint"] = bench_fingerprint(tracks, PARAMS, args.fp_seconds)

    if args.skip_ingest:
        ingest_json = args.store / INGEST_JSON
        if not ingest_json.exists():
            sys.exit(f"--skip-ingest: {ingest_json} not found; run once without --skip-ingest")
        results["ingest"] = json.loads(ingest_json.read_text())
        results["ingest_reused"] = True
    else:
        _log(f"ingesting {len(tracks)} tracks into {args.store / SHARD_DIR} with {args.jobs} workers")
        results["ingest"] = ingest_corpus(tracks, args.store, args.jobs)

    stored_prints = load_stored_prints(args.store)
    shard = EmbeddedShard(args.store / SHARD_DIR, fingerprint_version=FINGERPRINT_VERSION)
    try:
        enrolled = set(_titles(shard).values())
        runnable = [q for q in queries if q.source_track is None or q.source_track in enrolled]
        results["queries"] = {
            "selected": len(queries),
            "run": len(runnable),
            "dropped_source_not_enrolled": len(queries) - len(runnable),
            "tracks_enrolled": len(enrolled),
            "phone_room": sum(q.degradation == PHONE_DEGRADATION for q in runnable),
        }
        _log(f"running {len(runnable)} queries against {len(enrolled)} tracks")
        outcomes = mark_repeats(run_queries(shard, runnable, "corpus"), stored_prints)
    finally:
        shard.close()
    results["recall"] = recall_table(outcomes)
    results["false_positives"] = false_positives(outcomes)
    results["latency"] = latency(outcomes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_outcomes_csv(args.out.with_name(args.out.stem + "_queries.csv"), outcomes)

    if args.filler and args.filler > len(enrolled):
        _log(f"growing a copy of the shard to {args.filler} tracks with filler")
        scale_dir, scale_store = grow_with_filler(args.store, args.filler, args.seed)
        subset = select_queries(runnable, args.scale_queries, args.seed)
        shard = EmbeddedShard(scale_dir, fingerprint_version=FINGERPRINT_VERSION)
        try:
            _log(f"running {len(subset)} queries against {scale_store['tracks']} tracks")
            scale_outcomes = mark_repeats(run_queries(shard, subset, "scale"), stored_prints)
        finally:
            shard.close()
        in_subset = {q.query_file for q in subset}
        results["scale"] = {
            "store": scale_store,
            "latency": latency(scale_outcomes),
            **{
                k: v
                for k, v in _subset_summary(scale_outcomes).items()
                if k in ("recall_pct", "false_positives")
            },
            "same_queries_at_corpus_size": _subset_summary(
                [o for o in outcomes if o.query.query_file in in_subset]
            ),
        }
        write_outcomes_csv(args.out.with_name(args.out.stem + "_scale_queries.csv"), scale_outcomes)

    if not args.skip_rss:
        _log("peak RSS of a 3-hour ingest")
        long_file = args.long_file or LONG_FILE_DIR / f"long_{args.long_hours:g}h.ogg"
        results["rss"] = measure_rss(long_file, args.long_hours, reference, args.store)

    results["targets"] = evaluate_targets(results)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, args.out)
    print_report(results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
