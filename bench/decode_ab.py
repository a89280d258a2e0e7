#!/usr/bin/env python3
"""Paired A/B of stage 1 (decode + downmix + resample to the fingerprint rate): this checkout against a
base git revision, on real corpus files, beside ffmpeg decoding alone (no resampling) as the yardstick.

  .venv/bin/python bench/decode_ab.py --base HEAD~1 --corpus /work/cache/corpus/extract \
      [--every 6] [--rounds 2] [--out bench/results/decode_ab.json]

Three long-lived processes decode each file in turn (this machine's speed drifts by 20-40 % within
minutes, so the versions alternate file by file): `decode_all` of the base revision (a temporary git
worktree), of this checkout, and PyAV's decoder alone at the file's own rate and layout (what
`ffmpeg -i FILE -f null -` does). CPU ms per minute of audio per round, and the medians over the rounds.
Also the level of the difference between the two versions' PCM in the fingerprint's band, per file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from engine_bench import _git_describe

ROOT = Path(__file__).resolve().parents[1]

_WORKER = r"""
import json, sys, time
import av
from tunescout.engine.decode import decode_all

def native(path):
    with av.open(path) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate

def ours(path):
    return decode_all(path, sample_rate_hz=8000)[0].size / 8000

run = native if sys.argv[1] == "native" else ours
for line in sys.stdin:
    began = time.process_time()
    audio_s = run(line.strip())
    print(json.dumps([audio_s, time.process_time() - began]), flush=True)
"""

_PCM = r"""
import sys
import numpy as np
from tunescout.engine.decode import decode_all
np.save(sys.argv[2], decode_all(sys.argv[1], sample_rate_hz=8000)[0])
"""


class Worker:
    """A process that decodes the paths it is sent, with `tree`'s code, and answers the CPU time of each."""

    def __init__(self, tree: Path, mode: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, mode],
            cwd=tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def decode(self, path: str) -> tuple[float, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(path + "\n")
        self.process.stdin.flush()
        audio_s, cpu_s = json.loads(self.process.stdout.readline())
        return audio_s, cpu_s

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


def band_difference_db(tree_a: Path, tree_b: Path, path: str, tmp: Path) -> float | None:
    """Level of (b - a) relative to a, in the 250-3400 Hz band the fingerprint reads, in dB; None when the
    two PCMs are the same."""
    pcm = []
    for i, tree in enumerate((tree_a, tree_b)):
        target = tmp / f"pcm{i}.npy"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, "-c", _PCM, path, str(target)], cwd=tree, env=env, check=True)
        pcm.append(np.load(target))
    n = min(a.size for a in pcm)
    spectra = [np.fft.rfft(a[:n].astype(np.float64)) for a in pcm]
    freqs = np.fft.rfftfreq(n, 1 / 8000)
    band = (freqs >= 250) & (freqs <= 3400)
    error = np.sum(np.abs(spectra[1][band] - spectra[0][band]) ** 2)
    if error == 0:
        return None  # the same PCM
    return float(10 * np.log10(error / np.sum(np.abs(spectra[0][band]) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare with")
    ap.add_argument("--corpus", type=Path, required=True, help="CACHE/extract of build_dev_corpus.sh")
    ap.add_argument("--tracks", type=Path, default=ROOT.parent / "shared/corpus/dev_tracks.tsv")
    ap.add_argument("--every", type=int, default=6, help="take every Nth track of the list")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/decode_ab.json")
    args = ap.parse_args()

    with args.tracks.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    files = [str(args.corpus / r["package"] / r["relpath"]) for r in rows]
    files = [p for p in files if Path(p).exists()][:: args.every]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = tmp / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-f", str(base), args.base],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        workers = {
            "base": Worker(base, "ours"),
            "this": Worker(ROOT, "ours"),
            "native": Worker(ROOT, "native"),
        }
        try:
            for worker in workers.values():
                worker.decode(files[0])  # imports, numba's cache
            runs: dict[str, list[float]] = {name: [] for name in workers}
            audio_s = 0.0
            for round_ in range(args.rounds):
                cpu = dict.fromkeys(workers, 0.0)
                audio_s = 0.0
                for i, path in enumerate(files):
                    names = list(workers)
                    for name in names[i % 3 :] + names[: i % 3]:  # each goes first in turn
                        seconds, cpu_s = workers[name].decode(path)
                        cpu[name] += cpu_s
                    audio_s += seconds
                for name in workers:
                    runs[name].append(1000 * cpu[name] / (audio_s / 60))
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{name} {runs[name][-1]:.1f}" for name in workers)
                    + " ms CPU per audio minute"
                )
            differences = [band_difference_db(base, ROOT, p, tmp) for p in files[:: max(1, len(files) // 8)]]
        finally:
            for worker in workers.values():
                worker.close()
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    report = {
        "base": subprocess.run(
            ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "this": _git_describe(),
        "files": len(files),
        "audio_minutes": audio_s / 60,
        "cpu_ms_per_audio_minute": {name: median(values) for name, values in runs.items()},
        "rounds": runs,
        "pcm_difference_in_band_db": differences,
    }
    ms = report["cpu_ms_per_audio_minute"]
    print(
        f"{len(files)} files, {report['audio_minutes']:.0f} min of audio: base {ms['base']:.1f}, this "
        f"{ms['this']:.1f}, ffmpeg decoding alone {ms['native']:.1f} ms CPU per audio minute; the PCM "
        + (
            f"differs by {max(differing):.1f} dB at most in the fingerprint's band"
            if (differing := [d for d in differences if d is not None])
            else "is the same"
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
