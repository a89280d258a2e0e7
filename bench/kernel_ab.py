#!/usr/bin/env python3
"""Paired A/B of the pairing kernels: this checkout's `tunescout/engine/kernels.py` against the same file
at a base git revision, on the peaks of real clips.

  .venv/bin/python bench/kernel_ab.py --base HEAD~1 [--queries /work/cache/queries] [--clips 40] \
      [--out bench/results/kernel_ab.json]

Times `pair_peaks` (a query's zone and fan-out, and a stored track's) and `strongest_targets` (a query's
pairs cut to the hypothesis and jitter fan-outs) per 10 s clip, the two versions in alternating order in
one process (this machine's speed drifts by 20-40 % between runs), and asserts that both give the same
pairs. Prints medians over the rounds and writes them as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from engine_bench import PARAMS, _git_describe

from tunescout.engine import decode, hashes, kernels
from tunescout.engine.fingerprint import extract_peaks
from tunescout.engine.pairs import target_zone
from tunescout.engine.params import DEFAULT_MATCH_PARAMS
from tunescout.engine.peaks import Role

ROOT = Path(__file__).resolve().parents[1]


def kernels_at(rev: str, tmp: Path) -> ModuleType:
    """`tunescout/engine/kernels.py` as of git revision `rev`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:tunescout/engine/kernels.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = tmp / "kernels_base.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("kernels_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def zone(role: Role) -> tuple[int, int, int, int]:
    return target_zone(PARAMS, role)


def clip_peaks(path: Path, role: Role) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pcm, _ = decode.decode_all(path, sample_rate_hz=PARAMS.sample_rate_hz)
    peaks = extract_peaks([pcm], PARAMS, role)
    cells = hashes.freq_to_cell(peaks.freq_hz, PARAMS)
    inband = cells >= 0
    return peaks.t[inband].copy(), cells[inband].copy(), peaks.magnitude[inband].copy()


def same(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> bool:
    return all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision whose kernels.py is the baseline")
    ap.add_argument("--queries", type=Path, default=Path("/work/cache/queries"))
    ap.add_argument("--clips", type=int, default=40, help="10 s clips (white noise SNR 5 dB) to pair")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("bench/results/kernel_ab.json"))
    args = ap.parse_args()

    files = sorted((args.queries / "clips").glob("q*_10s_white_snr5.flac"))[: args.clips]
    if not files:
        sys.exit(f"no 10 s clips under {args.queries / 'clips'}: build the queries first (bench/README.md)")
    peaks = {role: [clip_peaks(f, role) for f in files] for role in (Role.QUERY, Role.REFERENCE)}
    narrower = sorted({DEFAULT_MATCH_PARAMS.hypothesis_fan_out, DEFAULT_MATCH_PARAMS.jitter_fan_out})

    with tempfile.TemporaryDirectory() as tmp:
        base = kernels_at(args.base, Path(tmp))
        versions = {"base": base, "this": kernels}
        times: dict[str, dict[str, list[float]]] = {name: {} for name in versions}
        wide = [kernels.pair_peaks(t, c, m, *zone(Role.QUERY)) for t, c, m in peaks[Role.QUERY]]
        for name, mod in versions.items():  # compile, and check that both give the same pairs
            for role in (Role.QUERY, Role.REFERENCE):
                for t, c, m in peaks[role]:
                    got = mod.pair_peaks(t, c, m, *zone(role))
                    ref = kernels.pair_peaks_reference(t, c, m, *zone(role))
                    assert same(got, ref), f"{name}: pairs differ from the reference"
            for (a, b), (_, _, m) in zip(wide, peaks[Role.QUERY], strict=True):
                for fan_out in narrower:
                    got = mod.strongest_targets(a, b, m, fan_out)
                    ref = kernels.strongest_targets_reference(a, b, m, fan_out)
                    assert same(got, ref), f"{name}: narrowed pairs differ from the reference"
        for r in range(args.rounds):
            for name in ("base", "this") if r % 2 == 0 else ("this", "base"):
                mod = versions[name]
                for role in (Role.QUERY, Role.REFERENCE):
                    t0 = time.perf_counter()
                    for t, c, m in peaks[role]:
                        mod.pair_peaks(t, c, m, *zone(role))
                    key = f"pair_peaks_{role.value}_ms_per_clip"
                    times[name].setdefault(key, []).append(1e3 * (time.perf_counter() - t0) / len(files))
                t0 = time.perf_counter()
                for (a, b), (_, _, m) in zip(wide, peaks[Role.QUERY], strict=True):
                    for fan_out in narrower:
                        mod.strongest_targets(a, b, m, fan_out)
                key = f"strongest_targets_{'_'.join(map(str, narrower))}_ms_per_clip"
                times[name].setdefault(key, []).append(1e3 * (time.perf_counter() - t0) / len(files))

    medians = {name: {k: round(float(np.median(v)), 4) for k, v in t.items()} for name, t in times.items()}
    result: dict[str, Any] = {
        "base": args.base,
        "this": _git_describe(),
        "clips": len(files),
        "rounds": args.rounds,
        "median": medians,
    }
    for key in result["median"]["this"]:
        b, t = result["median"]["base"][key], result["median"]["this"][key]
        print(f"{key:<40} base {b:7.3f}  this {t:7.3f}  ({b / t:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
