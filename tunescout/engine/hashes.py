"""Hash bit layout and frequency quantisation.

A hash packs one anchor/target pair of peaks into an unsigned 32-bit integer:

    bit 31 ........................................ 0
    [ unused | anchor cell | cell delta + bias | frame delta ]
               F_BITS        DF_BITS              DT_BITS

Frequencies are quantised to cells on a mel-like scale (linear below `mel_break_hz`, logarithmic above),
so that a speed change moves every peak by about the same number of cells.
"""

from __future__ import annotations

import numpy as np

from tunescout.engine.params import FingerprintParams

F_BITS = 8  # anchor frequency cell, 0 .. 2**F_BITS - 1
DF_BITS = 8  # target cell minus anchor cell, stored with DF_BIAS added
DT_BITS = 6  # target frame minus anchor frame, 0 .. 2**DT_BITS - 1
HASH_BITS = F_BITS + DF_BITS + DT_BITS
DF_BIAS = 1 << (DF_BITS - 1)

DT_SHIFT = 0
DF_SHIFT = DT_BITS
F_SHIFT = DT_BITS + DF_BITS
F_MASK = (1 << F_BITS) - 1
DF_MASK = (1 << DF_BITS) - 1
DT_MASK = (1 << DT_BITS) - 1


def pack(anchor_cell: np.ndarray, cell_delta: np.ndarray, frame_delta: np.ndarray) -> np.ndarray:
    """Hashes (uint32) from anchor cells, signed cell deltas and frame deltas (each within its field)."""
    a = np.asarray(anchor_cell, np.int64)
    d = np.asarray(cell_delta, np.int64) + DF_BIAS
    t = np.asarray(frame_delta, np.int64)
    if (a < 0).any() or (a > F_MASK).any() or (d < 0).any() or (d > DF_MASK).any():
        raise ValueError("frequency field out of range for the hash layout")
    if (t < 0).any() or (t > DT_MASK).any():
        raise ValueError("frame delta out of range for the hash layout")
    return ((a << F_SHIFT) | (d << DF_SHIFT) | (t << DT_SHIFT)).astype(np.uint32)


def unpack(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `pack`: (anchor cell, signed cell delta, frame delta) as int32 arrays."""
    h = np.asarray(hashes, np.uint32).astype(np.int64)
    return (
        ((h >> F_SHIFT) & F_MASK).astype(np.int32),
        (((h >> DF_SHIFT) & DF_MASK) - DF_BIAS).astype(np.int32),
        ((h >> DT_SHIFT) & DT_MASK).astype(np.int32),
    )


def check_layout(params: FingerprintParams) -> None:
    """Refuse parameters whose values do not fit the bit fields (a silent wrap would corrupt hashes)."""
    if params.freq_cells > F_MASK + 1:
        raise ValueError(f"freq_cells={params.freq_cells} does not fit F_BITS={F_BITS}")
    if params.pair_df_max_cells >= DF_BIAS:
        raise ValueError(f"pair_df_max_cells={params.pair_df_max_cells} does not fit DF_BITS={DF_BITS}")
    if params.pair_dt_max > DT_MASK:
        raise ValueError(f"pair_dt_max={params.pair_dt_max} does not fit DT_BITS={DT_BITS}")


def _mel(freq_hz: np.ndarray, break_hz: float) -> np.ndarray:
    return np.log1p(np.asarray(freq_hz, np.float64) / break_hz)


def freq_to_cell(freq_hz: np.ndarray, params: FingerprintParams) -> np.ndarray:
    """Frequency cells (int32) of frequencies in Hz; -1 where outside [f_min_hz, f_max_hz)."""
    lo = _mel(np.float64(params.f_min_hz), params.mel_break_hz)
    hi = _mel(np.float64(params.f_max_hz), params.mel_break_hz)
    pos = (_mel(freq_hz, params.mel_break_hz) - lo) / (hi - lo) * params.freq_cells
    cell = np.floor(pos).astype(np.int32)
    cell[(pos < 0) | (pos >= params.freq_cells)] = -1
    return cell
