#!/usr/bin/env python3
"""Would counting single peaks tell a clip's true offset from the repeat the matcher answered?

  .venv/bin/python bench/offset_check.py --corpus /work/cache/corpus/extract --queries /work/cache/queries \
      --answers bench/results/engine_queries.csv [--hits 40] [--out bench/results/offset_check.json]

Many misses name the right track at another passage (`hit` 0, `track_hit` 1 in the engine bench's
per-query CSV): a noisy clip matches a near-repeat of its passage with about as many consistent triplets.
A triplet needs three peaks to survive the noise; a single peak needs one. This counts, at the true offset
and at the answered one, the clip's peaks (query role) that meet a peak of the stored track (reference role,
re-analysed from the corpus file) within +-1 frame and +-1 frequency cell, best of +-2 frames around each
offset. For `--hits` clips answered right (10 s, pink noise and phone), it checks that no other offset of
the whole track counts more than the true one: a stage that re-ranked a track's offsets by this count would
then not break them. Speed- and tempo-changed clips are left out (their peaks would need the hypothesis's
transform first).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from tunescout.engine.decode import decode_all
from tunescout.engine.fingerprint import extract_peaks
from tunescout.engine.hashes import freq_to_cell
from tunescout.engine.params import DEFAULT_PARAMS as PARAMS
from tunescout.engine.peaks import Role

ROOT = Path(__file__).resolve().parents[1]
FRAMES_PER_S = PARAMS.sample_rate_hz / PARAMS.hop
SEARCH_FRAMES = 2  # best count within this many frames of an offset
CLEAR_MARGIN = 1.03  # one count "clearly" above another: more than 3 % higher


def peak_cells(path: Path, role: Role) -> tuple[np.ndarray, np.ndarray, int]:
    pcm, _ = decode_all(path, sample_rate_hz=PARAMS.sample_rate_hz)
    peaks = extract_peaks([pcm], PARAMS, role)
    cells = freq_to_cell(peaks.freq_hz, PARAMS)
    inside = cells >= 0
    return peaks.t[inside], cells[inside], peaks.n_frames


def stored_grid(path: Path) -> np.ndarray:
    """grid[frame, cell + 1]: a stored peak lies within +-1 frame and +-1 cell."""
    t, cells, n_frames = peak_cells(path, Role.REFERENCE)
    grid = np.zeros((n_frames + 1, PARAMS.freq_cells + 2), bool)
    grid[t, cells + 1] = True
    wide = grid.copy()
    wide[1:] |= grid[:-1]
    wide[:-1] |= grid[1:]
    out = wide.copy()
    out[:, 1:] |= wide[:, :-1]
    out[:, :-1] |= wide[:, 1:]
    return out


def coincidences(grid: np.ndarray, t: np.ndarray, cells: np.ndarray, offset: int) -> int:
    at = t + offset
    inside = (at >= 0) & (at < grid.shape[0])
    return int(grid[at[inside], cells[inside] + 1].sum())


def best_near(grid: np.ndarray, t: np.ndarray, cells: np.ndarray, offset: int) -> int:
    return max(coincidences(grid, t, cells, offset + d) for d in range(-SEARCH_FRAMES, SEARCH_FRAMES + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="CACHE/extract of build_dev_corpus.sh")
    ap.add_argument("--queries", type=Path, required=True, help="the make_queries.py output dir")
    ap.add_argument("--answers", type=Path, required=True, help="engine_bench.py's per-query CSV")
    ap.add_argument("--hits", type=int, default=40, help="right answers checked for a better other offset")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/offset_check.json")
    args = ap.parse_args()

    with args.answers.open() as f:
        rows = list(csv.DictReader(f))
    plain = [r for r in rows if not r["degradation"].startswith(("speed", "tempo"))]
    wrong = [r for r in plain if r["hit"] == "0" and r["track_hit"] == "1" and r["duration_s"] != "3.0"]
    right = [
        r
        for r in plain
        if r["hit"] == "1" and r["duration_s"] == "10.0" and r["degradation"] in ("pink_snr5", "phone_room")
    ][: args.hits]
    grids: dict[str, np.ndarray] = {}
    report: dict = {"wrong_offset": [], "right": []}
    for row in wrong + right:
        track = row["source_track"]
        if track not in grids:
            grids[track] = stored_grid(args.corpus / track)
        grid = grids[track]
        t, cells, _ = peak_cells(args.queries / row["query_file"], Role.QUERY)
        truth = round(float(row["start_s"]) * FRAMES_PER_S)
        at_truth = best_near(grid, t, cells, truth)
        entry = {"query": row["query_file"], "repeat_share": row["repeat_share"], "peaks": int(t.size)}
        if row["hit"] == "1":
            span = range(-int(t.max(initial=0)), grid.shape[0])
            best_other = max(
                coincidences(grid, t, cells, o) for o in span if abs(o - truth) > SEARCH_FRAMES + 1
            )
            report["right"].append({**entry, "at_truth": at_truth, "best_other": best_other})
        else:
            answered = round(float(row["offset_s"]) * FRAMES_PER_S)
            at_answer = best_near(grid, t, cells, answered)
            report["wrong_offset"].append({**entry, "at_truth": at_truth, "at_answer": at_answer})
            print(f"{row['query_file']:40s} truth {at_truth:4d}  answered {at_answer:4d}  of {t.size} peaks")
    wrong_rows, right_rows = report["wrong_offset"], report["right"]
    report["summary"] = {
        "wrong_offset_clips": len(wrong_rows),
        "truth_clearly_higher": sum(r["at_truth"] > CLEAR_MARGIN * r["at_answer"] for r in wrong_rows),
        "answer_clearly_higher": sum(r["at_answer"] > CLEAR_MARGIN * r["at_truth"] for r in wrong_rows),
        "right_clips": len(right_rows),
        "right_truth_best": sum(r["at_truth"] > r["best_other"] for r in right_rows),
    }
    s = report["summary"]
    print(
        f"{s['wrong_offset_clips']} clips answered at the wrong offset: the true offset counts clearly more "
        f"single-peak coincidences in {s['truth_clearly_higher']}, the answered one in "
        f"{s['answer_clearly_higher']}, the rest are within 3 % (repeats); of {s['right_clips']} clips "
        f"answered right, the true offset counts most of the whole track in {s['right_truth_best']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
