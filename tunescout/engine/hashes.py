"""Hash bit layout and frequency quantisation.

A hash packs one triplet of peaks (an anchor and two of its targets) into an unsigned 32-bit integer:

    bit 31 ............................................................................. 0
    [ anchor cell | cell delta 1 + bias | cell delta 2 + bias | frame delta 1 | frame delta 2 ]
      F_BITS        DF_BITS               DF_BITS               DT_BITS         DT_BITS

Three peaks give about 30 bits of real information where a pair gives about 20: posting lists stay short
at catalogue scale, and chance agreement between unrelated tracks becomes rare.
Frequencies are quantised to cells on a mel-like scale (linear below `mel_break_hz`, logarithmic above),
so that a speed change moves every peak by about the same number of cells.
"""

from __future__ import annotations

import numpy as np

from tunescout.engine.params import FingerprintParams

F_BITS = 8  # anchor frequency cell, 0 .. 2**F_BITS - 1
DF_BITS = 6  # each target's cell minus the anchor's, stored with DF_BIAS added
DT_BITS = 6  # each target's frame minus the anchor's, 0 .. 2**DT_BITS - 1
HASH_BITS = F_BITS + 2 * DF_BITS + 2 * DT_BITS
DF_BIAS = 1 << (DF_BITS - 1)

DT2_SHIFT = 0
DT1_SHIFT = DT2_SHIFT + DT_BITS
DF2_SHIFT = DT1_SHIFT + DT_BITS
DF1_SHIFT = DF2_SHIFT + DF_BITS
F_SHIFT = DF1_SHIFT + DF_BITS
F_MASK = (1 << F_BITS) - 1
DF_MASK = (1 << DF_BITS) - 1
DT_MASK = (1 << DT_BITS) - 1
# the shifts in the order the hashing kernel takes them
KERNEL_LAYOUT = np.array([F_SHIFT, DF1_SHIFT, DF2_SHIFT, DT1_SHIFT, DT2_SHIFT, DF_BIAS], np.int64)


def pack(
    anchor_cell: np.ndarray,
    cell_delta_1: np.ndarray,
    cell_delta_2: np.ndarray,
    frame_delta_1: np.ndarray,
    frame_delta_2: np.ndarray,
) -> np.ndarray:
    """Hashes (uint32) of triplets: the anchor's cell, each target's signed cell delta and frame delta."""
    a = np.asarray(anchor_cell, np.int64)
    d1 = np.asarray(cell_delta_1, np.int64) + DF_BIAS
    d2 = np.asarray(cell_delta_2, np.int64) + DF_BIAS
    t1 = np.asarray(frame_delta_1, np.int64)
    t2 = np.asarray(frame_delta_2, np.int64)
    for name, v, mask in (
        ("anchor cell", a, F_MASK),
        ("cell delta", d1, DF_MASK),
        ("cell delta", d2, DF_MASK),
    ):
        if (v < 0).any() or (v > mask).any():
            raise ValueError(f"frequency field ({name}) out of range for the hash layout")
    if (t1 < 0).any() or (t1 > DT_MASK).any() or (t2 < 0).any() or (t2 > DT_MASK).any():
        raise ValueError("frame delta out of range for the hash layout")
    h = (a << F_SHIFT) | (d1 << DF1_SHIFT) | (d2 << DF2_SHIFT) | (t1 << DT1_SHIFT) | (t2 << DT2_SHIFT)
    return h.astype(np.uint32)


def unpack(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `pack`: (anchor cell, cell delta 1, cell delta 2, frame delta 1, frame delta 2), int32."""
    h = np.asarray(hashes, np.uint32).astype(np.int64)
    return (
        ((h >> F_SHIFT) & F_MASK).astype(np.int32),
        (((h >> DF1_SHIFT) & DF_MASK) - DF_BIAS).astype(np.int32),
        (((h >> DF2_SHIFT) & DF_MASK) - DF_BIAS).astype(np.int32),
        ((h >> DT1_SHIFT) & DT_MASK).astype(np.int32),
        ((h >> DT2_SHIFT) & DT_MASK).astype(np.int32),
    )


def jitter_frame_deltas(hashes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Every hash with its two frame deltas moved by each (i, j) in [-radius, radius]**2 where both stay
    in 0 .. DT_MASK, variant by variant (i, j = 0 among them), and the row of `hashes` each comes from.
    For a query whose peaks moved a frame or two (reverb smears onsets, noise shifts maxima)."""
    h = np.asarray(hashes, np.uint32).astype(np.int64)
    t1 = (h >> DT1_SHIFT) & DT_MASK
    t2 = (h >> DT2_SHIFT) & DT_MASK
    rest = h & ~((DT_MASK << DT1_SHIFT) | (DT_MASK << DT2_SHIFT))
    rows = np.arange(h.size, dtype=np.int64)
    out_h, out_rows = [], []
    for i in range(-radius, radius + 1):
        for j in range(-radius, radius + 1):
            a, b = t1 + i, t2 + j
            ok = (a >= 0) & (a <= DT_MASK) & (b >= 0) & (b <= DT_MASK)
            out_h.append((rest | (a << DT1_SHIFT) | (b << DT2_SHIFT))[ok])
            out_rows.append(rows[ok])
    return np.concatenate(out_h).astype(np.uint32), np.concatenate(out_rows)


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
