#!/usr/bin/env python3
"""Paired A/B of stage 1 (decode + downmix + resample to the fingerprint rate): this checkout against a
base git revision, on real corpus files, beside ffmpeg decoding alone (no resampling) as the yardstick.

  .venv/bin/python bench/decode_ab.py --base HEAD~1 --corpus /work/cache/corpus/extract \
      [--every 6] [--rounds 2] [--out bench/results/decode_ab.json]

Each round decodes the same files in three fresh processes, in turn: `decode_all` of the base revision
(a temporary git worktree), of this checkout, and PyAV's decoder alone at the file's own rate and layout
(what `ffmpeg -i FILE -f null -` does). CPU seconds per minute of audio, medians over the rounds. Also the
level of the difference between the two versions' PCM in the fingerprint's band, per file.
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

from engine_bench import _git_describe

ROOT = Path(__file__).resolve().parents[1]

_TIMED = r"""
import json, sys, time
import av
from tunescout.engine.decode import decode_all

files, mode = json.loads(sys.argv[1]), sys.argv[2]

def native(path):
    with av.open(path) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate

def ours(path):
    return decode_all(path, sample_rate_hz=8000)[0].size / 8000

run = native if mode == "native" else ours
run(files[0])  # imports, numba's cache
began, audio_s = time.process_time(), 0.0
for path in files:
    audio_s += run(path)
print(json.dumps({"audio_s": audio_s, "cpu_s": time.process_time() - began}))
"""

_PCM = r"""
import sys
import numpy as np
from tunescout.engine.decode import decode_all
np.save(sys.argv[2], decode_all(sys.argv[1], sample_rate_hz=8000)[0])
"""


def trees(base: Path) -> tuple[tuple[str, Path, str], ...]:
    return (("base", base, "ours"), ("this", ROOT, "ours"), ("native", ROOT, "native"))


def timed(tree: Path, files: list[str], mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _TIMED, json.dumps(files), mode],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["cpu_ms_per_audio_minute"] = 1000 * result["cpu_s"] / (result["audio_s"] / 60)
    return result


def band_difference_db(tree_a: Path, tree_b: Path, path: str, tmp: Path) -> float:
    """Level of (b - a) relative to a, in the 250-3400 Hz band the fingerprint reads, in dB."""
    import numpy as np

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
        try:
            runs: dict[str, list[float]] = {"base": [], "this": [], "native": []}
            for round_ in range(args.rounds):
                for name, tree, mode in (
                    ("base", base, "ours"),
                    ("this", ROOT, "ours"),
                    ("native", ROOT, "native"),
                ):
                    result = timed(tree, files, mode)
                    runs[name].append(result["cpu_ms_per_audio_minute"])
                    ms = result["cpu_ms_per_audio_minute"]
                    print(f"round {round_ + 1} {name:6s} {ms:6.1f} ms CPU per audio minute")
            differences = [band_difference_db(base, ROOT, p, tmp) for p in files[:: max(1, len(files) // 8)]]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    report = {
        "base": subprocess.run(
            ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "this": _git_describe(),
        "files": len(files),
        "audio_minutes": result["audio_s"] / 60,
        "cpu_ms_per_audio_minute": {name: median(values) for name, values in runs.items()},
        "rounds": runs,
        "pcm_difference_in_band_db": differences,
    }
    ms = report["cpu_ms_per_audio_minute"]
    print(
        f"{len(files)} files, {report['audio_minutes']:.0f} min of audio: base {ms['base']:.1f}, this "
        f"{ms['this']:.1f}, ffmpeg decoding alone {ms['native']:.1f} ms CPU per audio minute; the PCM "
        f"differs by {max(differences):.1f} dB at most in the fingerprint's band"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
