"""Stage 4: peaks -> landmarks: each anchor with the strongest peaks of its target zone, and every two of
those targets with the anchor make a triplet (what `hashes.py` packs).

A query's landmarks are formed once, from its unscaled peaks, with a zone widened enough to hold every
speed/tempo hypothesis; each hypothesis only re-hashes them (the kernel re-checks the exact zone)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tunescout.engine import kernels
from tunescout.engine.params import FingerprintParams
from tunescout.engine.peaks import Peaks, Role

# A query may be hashed under time and frequency scales up to this far from 1 (speed/tempo hypotheses):
# its target zone is widened by it so that the triplets a stored track made are still formed.
MAX_SCALE_DEVIATION = 0.06


@dataclass(frozen=True)
class Triplets:
    """Indices into the peaks: (anchor, first target, second target), the first earlier."""

    anchor: np.ndarray  # int32
    first: np.ndarray  # int32
    second: np.ndarray  # int32


def triplets(peaks: Peaks, cells: np.ndarray, params: FingerprintParams, role: Role) -> Triplets:
    """Every anchor with each two of its strongest targets."""
    return triplets_of(pair_peaks(peaks, cells, params, role))


def triplets_of(pairs: tuple[np.ndarray, np.ndarray]) -> Triplets:
    """The triplets of (anchor, target) pairs grouped by anchor."""
    return Triplets(*kernels.triplets_from_pairs(*pairs))


def narrowed(
    pairs: tuple[np.ndarray, np.ndarray], peaks: Peaks, fan_out: int
) -> tuple[np.ndarray, np.ndarray]:
    """`pair_peaks` pairs cut to each anchor's `fan_out` strongest targets: the pairs a smaller fan-out
    forms, without searching the target zones again."""
    return kernels.strongest_targets(pairs[0], pairs[1], peaks.magnitude, fan_out)


def target_zone(params: FingerprintParams, role: Role) -> tuple[int, int, int, int]:
    """(dt_min, dt_max, df_max, fan_out) of `role`'s pairing, as `kernels.pair_peaks` takes them: a
    query's zone is widened to hold every speed/tempo hypothesis."""
    if role is Role.REFERENCE:
        return params.pair_dt_min, params.pair_dt_max, params.pair_df_max_cells, params.fan_out
    return (
        math.floor(params.pair_dt_min / (1 + MAX_SCALE_DEVIATION)),
        math.ceil(params.pair_dt_max * (1 + MAX_SCALE_DEVIATION)),
        params.pair_df_max_cells + math.ceil(params.pair_df_max_cells * MAX_SCALE_DEVIATION),
        params.query_fan_out,
    )


def pair_peaks(
    peaks: Peaks, cells: np.ndarray, params: FingerprintParams, role: Role
) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, target) indices into `peaks`: each anchor with the strongest fan-out peaks of its zone."""
    # peaks outside the band (cell -1) never pair; the kernel's zone test needs them gone
    inband = np.flatnonzero(cells >= 0).astype(np.int32)
    a, b = kernels.pair_peaks(
        peaks.t[inband], cells[inband], peaks.magnitude[inband], *target_zone(params, role)
    )
    return inband[a], inband[b]
