"""Stage 4: peaks -> anchor/target pairs (the landmarks that get hashed)."""

from __future__ import annotations

import math

import numpy as np

from tunescout.engine import kernels
from tunescout.engine.params import FingerprintParams
from tunescout.engine.peaks import Peaks, Role

# A query may be hashed under time scales up to this far from 1 (speed/tempo hypotheses): its target zone
# is widened by it so that the pairs a stored track made are still formed.
MAX_TIME_SCALE_DEVIATION = 0.06


def pair_peaks(
    peaks: Peaks, cells: np.ndarray, params: FingerprintParams, role: Role
) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, target) indices into `peaks`: each anchor with the strongest fan-out peaks of its zone."""
    if role is Role.REFERENCE:
        dt_min, dt_max, fan_out = params.pair_dt_min, params.pair_dt_max, params.fan_out
    else:
        dt_min = math.floor(params.pair_dt_min / (1 + MAX_TIME_SCALE_DEVIATION))
        dt_max = math.ceil(params.pair_dt_max * (1 + MAX_TIME_SCALE_DEVIATION))
        fan_out = params.query_fan_out
    # peaks outside the band (cell -1) never pair; the kernel's zone test needs them gone
    inband = np.flatnonzero(cells >= 0).astype(np.int32)
    a, b = kernels.pair_peaks(
        peaks.t[inband],
        cells[inband],
        peaks.magnitude[inband],
        dt_min,
        dt_max,
        params.pair_df_max_cells,
        fan_out,
    )
    return inband[a], inband[b]
