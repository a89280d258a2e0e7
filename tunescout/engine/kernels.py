"""The numba kernels of the fingerprint pipeline, each beside the NumPy reference a test compares it with.

Kernels take and return flat NumPy arrays only, so they compile once (`cache=True`) and release the GIL.
Units: frames (spectrogram hops), bins (FFT bins), cells (quantised frequency, see `hashes.py`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# -- peaks: local maxima of the log-power spectrogram ---------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _is_strict_peak(logspec: np.ndarray, t: int, k: int, rt: int, rf: int) -> bool:
    """The tie rule: `logspec[t, k]` is strictly greater than the cells of its rectangle before it in
    row-major order and at least equal to those after it, so a plateau yields exactly one peak."""
    n_t, n_k = logspec.shape
    v = logspec[t, k]
    for tt in range(max(0, t - rt), min(n_t, t + rt + 1)):
        for kk in range(max(0, k - rf), min(n_k, k + rf + 1)):
            if tt == t and kk == k:
                continue
            w = logspec[tt, kk]
            if w > v or (w == v and (tt < t or (tt == t and kk < k))):
                return False
    return True


@njit(cache=True, nogil=True)
def _shifted_max(src: np.ndarray, dst: np.ndarray, n: int, shift: int) -> None:
    # dst[i] = max(src[i], src[i + shift]) for i < n. A kernel of its own, over views indexed from 0 and
    # with `max`: that is the form the compiler turns into packed maxima (inlined into `local_peaks`, or
    # indexed as src[i + shift], the loop stayed scalar: 3x slower)
    lo = src[:n]
    hi = src[shift : shift + n]
    out = dst[:n]
    for i in range(n):
        out[i] = max(lo[i], hi[i])


@njit(cache=True, nogil=True, inline="always")
def _window_max(a: np.ndarray, b: np.ndarray, n: int, unit: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # a[i] = max(a[i], a[i + unit], ..., a[i + (w - 1) * unit]) for i < n - (w - 1) * unit, by doubling
    # the window (1, 2, 4, ... units, then the rest): returns (the result, the spare buffer)
    p = 1
    valid = n
    while 2 * p <= w:
        valid -= p * unit
        _shifted_max(a, b, valid, p * unit)
        a, b = b, a
        p *= 2
    if p < w:
        valid -= (w - p) * unit
        _shifted_max(a, b, valid, (w - p) * unit)
        a, b = b, a
    return a, b


# frames of the spectrogram filtered at a time by `local_peaks`: the block and its maxima stay in the CPU
# cache (measured 32-256 alike)
PEAK_BLOCK_FRAMES = 64


@njit(cache=True, nogil=True)
def local_peaks(
    logspec: np.ndarray, t_lo: int, t_hi: int, k_lo: int, k_hi: int, rt: int, rf: int, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cells (t, k) with t_lo <= t < t_hi and k_lo <= k <= k_hi that are the maximum of the rectangle
    t +- rt frames, k +- rf bins (clipped to the array), and above `floor`.

    Ties: a cell must be strictly greater than neighbours before it in row-major order and at least equal
    to those after it, so a plateau yields exactly one peak. Returns (t, k) as int32, in (t, k) order.

    A separable maximum filter finds the cells equal to their rectangle's maximum; only those few
    candidates get the exact tie check. The filter works on blocks of `PEAK_BLOCK_FRAMES` frames, copied
    flat with -inf around them (the rectangle's clipping), by doubling windows: maxima over 2, 4, 8 bins
    then the rest, the same over frames, each step one packed pass over the block (3.4x faster than
    sliding the whole window cell by cell, which the compiler left scalar).
    """
    n_t, n_k = logspec.shape
    out_t = np.empty(64, np.int32)
    out_k = np.empty(64, np.int32)
    n = 0
    t_lo, t_hi = max(t_lo, 0), min(t_hi, n_t)
    k_lo, k_hi = max(k_lo, 0), min(k_hi, n_k - 1)
    if t_lo >= t_hi or k_lo > k_hi:
        return out_t[:0], out_k[:0]
    width = k_hi - k_lo + 1
    row = width + 2 * rf  # a block row: the bins k_lo - rf .. k_hi + rf
    a = np.empty((PEAK_BLOCK_FRAMES + 2 * rt) * row, logspec.dtype)
    b = np.empty_like(a)
    minus_inf = logspec.dtype.type(-np.inf)
    for t0 in range(t_lo, t_hi, PEAK_BLOCK_FRAMES):
        t1 = min(t_hi, t0 + PEAK_BLOCK_FRAMES)
        rows = t1 - t0 + 2 * rt  # frames t0 - rt .. t1 + rt - 1
        for r in range(rows):
            t = t0 - rt + r
            for c in range(row):
                k = k_lo - rf + c
                a[r * row + c] = logspec[t, k] if 0 <= t < n_t and 0 <= k < n_k else minus_inf
        # across each row's bins, then across frames; columns past `width` mix two rows and are not read
        m, spare = _window_max(a, b, rows * row, 1, 2 * rf + 1)
        m, spare = _window_max(m, spare, rows * row, row, 2 * rt + 1)
        for r in range(t1 - t0):
            t = t0 + r
            for c in range(width):
                k = k_lo + c
                v = logspec[t, k]
                if v != m[r * row + c] or v <= floor:
                    continue
                if not _is_strict_peak(logspec, t, k, rt, rf):
                    continue
                if n == out_t.shape[0]:
                    out_t = np.concatenate((out_t, np.empty(n, np.int32)))
                    out_k = np.concatenate((out_k, np.empty(n, np.int32)))
                out_t[n] = t
                out_k[n] = k
                n += 1
    return out_t[:n], out_k[:n]


def local_peaks_reference(
    logspec: np.ndarray, t_lo: int, t_hi: int, k_lo: int, k_hi: int, rt: int, rf: int, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `local_peaks`: compare each cell with its rectangle via sliding windows."""
    n_t, n_k = logspec.shape
    padded = np.full((n_t + 2 * rt, n_k + 2 * rf), -np.inf, dtype=np.float64)
    padded[rt : rt + n_t, rf : rf + n_k] = logspec
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * rt + 1, 2 * rf + 1))
    flat = windows.reshape(n_t, n_k, -1)
    centre = rt * (2 * rf + 1) + rf
    v = logspec.astype(np.float64)
    before = flat[:, :, :centre]
    after = flat[:, :, centre + 1 :]
    ok = (before < v[:, :, None]).all(axis=2) & (after <= v[:, :, None]).all(axis=2) & (v > floor)
    mask = np.zeros_like(ok)
    mask[t_lo:t_hi, k_lo : k_hi + 1] = ok[t_lo:t_hi, k_lo : k_hi + 1]
    t, k = np.nonzero(mask)
    return t.astype(np.int32), k.astype(np.int32)


# -- density control: keep the strongest peaks of each block of frames ----------------------------------


@njit(cache=True, nogil=True)
def strongest_per_block(
    t: np.ndarray, magnitude: np.ndarray, block_frames: int, per_block: int
) -> np.ndarray:
    """Boolean mask keeping the `per_block` largest magnitudes in each block of `block_frames` frames
    (blocks aligned to frame 0, so chunked and whole processing agree). `t` must be sorted ascending.
    Ties keep the earlier peak."""
    n = t.shape[0]
    keep = np.zeros(n, np.bool_)
    start = 0
    while start < n:
        block = t[start] // block_frames
        end = start
        while end < n and t[end] // block_frames == block:
            end += 1
        if end - start <= per_block:
            keep[start:end] = True
        else:
            order = np.argsort(-magnitude[start:end], kind="mergesort")
            for i in range(per_block):
                keep[start + order[i]] = True
        start = end
    return keep


def strongest_per_block_reference(
    t: np.ndarray, magnitude: np.ndarray, block_frames: int, per_block: int
) -> np.ndarray:
    """NumPy reference of `strongest_per_block`: rank within block by a stable lexsort."""
    block = t // block_frames
    order = np.lexsort((np.arange(t.size), -magnitude.astype(np.float64), block))
    sorted_block = block[order]
    first = np.searchsorted(sorted_block, sorted_block, side="left")
    rank = np.arange(t.size) - first
    keep = np.zeros(t.size, bool)
    keep[order[rank < per_block]] = True
    return keep


# -- pairs: each anchor with the strongest peaks in its target zone --------------------------------------


@njit(cache=True, nogil=True)
def pair_peaks(
    t: np.ndarray,
    cell: np.ndarray,
    magnitude: np.ndarray,
    dt_min: int,
    dt_max: int,
    df_max: int,
    fan_out: int,
) -> tuple[np.ndarray, np.ndarray]:
    """For each anchor i (peaks sorted by t), the `fan_out` strongest later peaks j with
    dt_min <= t[j] - t[i] <= dt_max and |cell[j] - cell[i]| <= df_max, in index order. Strength, not
    nearness, picks them: noise adds weak peaks, which then never displace the music's own targets.
    Ties keep the earlier peak. Returns (anchor, target) indices grouped by anchor."""
    n = t.shape[0]
    anchors = np.empty(n * fan_out, np.int32)
    targets = np.empty(n * fan_out, np.int32)
    top = np.empty(max(fan_out, 1), np.int32)
    m = 0
    for i in range(n):
        k = 0
        j = i + 1
        while j < n and t[j] - t[i] <= dt_max:
            if t[j] - t[i] >= dt_min and abs(cell[j] - cell[i]) <= df_max:
                k = _keep_strongest(top, k, fan_out, magnitude, j)
            j += 1
        m = _emit_by_index(top, k, i, anchors, targets, m)
    return anchors[:m], targets[:m]


@njit(cache=True, nogil=True, inline="always")
def _keep_strongest(top: np.ndarray, k: int, fan_out: int, magnitude: np.ndarray, j: int) -> int:
    # `top[:k]` holds the strongest candidates so far, strongest first, earlier first among equals; offer
    # it candidate `j` (a later index than all of them) and return its new length. A bounded insertion with
    # no allocation: a query's zone holds about 60 peaks and keeps 10, and sorting every zone whole made
    # pairing 2.2-2.5x slower (bench/kernel_ab.py)
    if fan_out <= 0:
        return 0
    v = magnitude[j]
    if k < fan_out:
        pos = k
        k += 1
    elif v > magnitude[top[k - 1]]:
        pos = k - 1
    else:
        return k
    while pos > 0 and magnitude[top[pos - 1]] < v:
        top[pos] = top[pos - 1]
        pos -= 1
    top[pos] = j
    return k


@njit(cache=True, nogil=True, inline="always")
def _emit_by_index(
    top: np.ndarray, k: int, anchor: int, anchors: np.ndarray, targets: np.ndarray, m: int
) -> int:
    # append (anchor, top[q]) for q < k in index order (an insertion sort of at most fan_out entries)
    for q in range(1, k):
        v = top[q]
        p = q
        while p > 0 and top[p - 1] > v:
            top[p] = top[p - 1]
            p -= 1
        top[p] = v
    for q in range(k):
        anchors[m] = anchor
        targets[m] = top[q]
        m += 1
    return m


def pair_peaks_reference(
    t: np.ndarray,
    cell: np.ndarray,
    magnitude: np.ndarray,
    dt_min: int,
    dt_max: int,
    df_max: int,
    fan_out: int,
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `pair_peaks`: per anchor, a vectorised zone test and a stable strength ranking."""
    anchors: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for i in range(t.size):
        later = np.arange(i + 1, t.size)
        dt = t[later] - t[i]
        zone = later[(dt >= dt_min) & (dt <= dt_max) & (np.abs(cell[later] - cell[i]) <= df_max)]
        chosen = np.sort(zone[np.argsort(-magnitude[zone].astype(np.float64), kind="stable")[:fan_out]])
        anchors.append(np.full(chosen.size, i, np.int32))
        targets.append(chosen.astype(np.int32))
    if not anchors:
        return np.empty(0, np.int32), np.empty(0, np.int32)
    return np.concatenate(anchors), np.concatenate(targets)


@njit(cache=True, nogil=True, inline="always")
def _run_end(keys: np.ndarray, start: int) -> int:
    # the end of the run of equal keys that begins at `start` (pairs are grouped by anchor)
    end = start
    while end < keys.shape[0] and keys[end] == keys[start]:
        end += 1
    return end


@njit(cache=True, nogil=True)
def strongest_targets(
    anchors: np.ndarray, targets: np.ndarray, magnitude: np.ndarray, fan_out: int
) -> tuple[np.ndarray, np.ndarray]:
    """Of pairs grouped by anchor (targets in index order), each anchor's `fan_out` strongest targets, in
    index order; ties keep the earlier peak. Applied to `pair_peaks` output of a larger fan-out, it gives
    what `pair_peaks` gives with this one (the strongest k of the strongest n are the strongest k)."""
    m = anchors.shape[0]
    out_a = np.empty(m, np.int32)
    out_t = np.empty(m, np.int32)
    top = np.empty(max(fan_out, 1), np.int32)
    k = 0
    start = 0
    while start < m:
        end = _run_end(anchors, start)
        z = 0
        for q in range(start, end):
            z = _keep_strongest(top, z, fan_out, magnitude, targets[q])
        k = _emit_by_index(top, z, anchors[start], out_a, out_t, k)
        start = end
    return out_a[:k], out_t[:k]


def strongest_targets_reference(
    anchors: np.ndarray, targets: np.ndarray, magnitude: np.ndarray, fan_out: int
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `strongest_targets`: rank within each anchor by a stable sort on (anchor,
    strength), keep ranks below fan_out."""
    if anchors.size == 0:
        return anchors.astype(np.int32), targets.astype(np.int32)
    order = np.lexsort((-magnitude[targets].astype(np.float64), anchors))  # stable: index order on ties
    first = np.searchsorted(anchors[order], anchors[order], side="left")
    rank = np.arange(order.size) - first
    keep = np.sort(order[rank < fan_out])
    return anchors[keep].astype(np.int32), targets[keep].astype(np.int32)


# -- triplets: each anchor with two of its targets ------------------------------------------------------


@njit(cache=True, nogil=True)
def triplets_from_pairs(
    anchors: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (anchor, first target, second target) with both targets among the anchor's pairs and the
    first earlier in `pair_peaks` order. Pairs must be grouped by anchor, as `pair_peaks` returns them."""
    m = anchors.shape[0]
    total = 0
    start = 0
    while start < m:
        end = _run_end(anchors, start)
        k = end - start
        total += k * (k - 1) // 2
        start = end
    a = np.empty(total, np.int32)
    b = np.empty(total, np.int32)
    c = np.empty(total, np.int32)
    n = 0
    start = 0
    while start < m:
        end = _run_end(anchors, start)
        for x in range(start, end):
            for y in range(x + 1, end):
                a[n] = anchors[x]
                b[n] = targets[x]
                c[n] = targets[y]
                n += 1
        start = end
    return a, b, c


def triplets_from_pairs_reference(
    anchors: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy reference of `triplets_from_pairs`: upper-triangle index pairs within each anchor's group."""
    out_a: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    out_c: list[np.ndarray] = []
    for anchor in np.unique(anchors):
        group = targets[anchors == anchor]
        x, y = np.triu_indices(group.size, k=1)
        out_a.append(np.full(x.size, anchor, np.int32))
        out_b.append(group[x].astype(np.int32))
        out_c.append(group[y].astype(np.int32))
    if not out_a:
        return np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_c)


# -- hashes: pack each triplet, optionally under a time scale (speed/tempo hypotheses) ------------------


@njit(cache=True, nogil=True)
def hash_triplets(
    t: np.ndarray,
    cell: np.ndarray,
    anchors: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    time_scale: float,
    dt_min: int,
    dt_max: int,
    df_max: int,
    layout: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Hash (uint32) and anchor offset (int32 frames) of each triplet, with peak times multiplied by
    `time_scale` first. `layout` = (f_shift, df1_shift, df2_shift, dt1_shift, dt2_shift, df_bias).
    Triplets whose scaled frame deltas leave [dt_min, dt_max], whose cell deltas exceed df_max, or with a
    peak outside the band (cell < 0) are dropped."""
    m = anchors.shape[0]
    hashes = np.empty(m, np.uint32)
    offsets = np.empty(m, np.int32)
    bias = layout[5]
    n = 0
    for p in range(m):
        i = anchors[p]
        j = first[p]
        k = second[p]
        ci = cell[i]
        cj = cell[j]
        ck = cell[k]
        if ci < 0 or cj < 0 or ck < 0:
            continue
        d1 = cj - ci
        d2 = ck - ci
        if d1 > df_max or d1 < -df_max or d2 > df_max or d2 < -df_max:
            continue
        t1 = int(np.round((t[j] - t[i]) * time_scale))
        t2 = int(np.round((t[k] - t[i]) * time_scale))
        if t1 < dt_min or t2 > dt_max:
            continue
        hashes[n] = np.uint32(
            (ci << layout[0])
            | ((d1 + bias) << layout[1])
            | ((d2 + bias) << layout[2])
            | (t1 << layout[3])
            | (t2 << layout[4])
        )
        offsets[n] = np.int32(np.round(t[i] * time_scale))
        n += 1
    return hashes[:n], offsets[:n]


def hash_triplets_reference(
    t: np.ndarray,
    cell: np.ndarray,
    anchors: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    time_scale: float,
    dt_min: int,
    dt_max: int,
    df_max: int,
    layout: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `hash_triplets`, vectorised over all triplets."""
    ci = cell[anchors].astype(np.int64)
    cj = cell[first].astype(np.int64)
    ck = cell[second].astype(np.int64)
    d1, d2 = cj - ci, ck - ci
    t1 = np.round((t[first] - t[anchors]).astype(np.float64) * time_scale).astype(np.int64)
    t2 = np.round((t[second] - t[anchors]).astype(np.float64) * time_scale).astype(np.int64)
    ok = (ci >= 0) & (cj >= 0) & (ck >= 0) & (np.abs(d1) <= df_max) & (np.abs(d2) <= df_max)
    ok &= (t1 >= dt_min) & (t2 <= dt_max)
    f_shift, s1, s2, s3, s4, bias = (int(v) for v in layout)
    h = (ci << f_shift) | ((d1 + bias) << s1) | ((d2 + bias) << s2) | (t1 << s3) | (t2 << s4)
    offsets = np.round(t[anchors].astype(np.float64) * time_scale)[ok].astype(np.int32)
    return h[ok].astype(np.uint32), offsets


# -- scoring: (track, hypothesis, offset difference) keys of every match, sorted --------------------------

# A match key packs the bin it votes for and its offset difference into one int64:
#     track << 32 | group << GROUP_SHIFT | (stored offset - query offset + KEY_DELTA_BIAS)
# `group` is the speed/tempo hypothesis the query row was hashed under: the hypotheses of a query are
# scored in one pass, each (track, group) a bin of its own. Tracks < 2**31 keep keys below 2**63.
GROUP_BITS = 5  # at most 2**GROUP_BITS hypotheses scored together
DELTA_BITS = 27  # offset differences within +-2**26 frames (298 hours at 16 ms): longer tracks lose matches
GROUP_SHIFT = DELTA_BITS
BIN_SHIFT = DELTA_BITS  # key >> BIN_SHIFT = track << GROUP_BITS | group
KEY_DELTA_BIAS = 1 << (DELTA_BITS - 1)
DELTA_MASK = (1 << DELTA_BITS) - 1
MAX_GROUPS = 1 << GROUP_BITS


@njit(cache=True, nogil=True)
def match_keys(
    hash_index: np.ndarray,
    track_id: np.ndarray,
    track_slot: np.ndarray,
    offset: np.ndarray,
    query_order: np.ndarray,
    query_starts: np.ndarray,
    query_counts: np.ndarray,
    query_offsets: np.ndarray,
    query_group: np.ndarray,
    n_groups: int,
    least: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One (key, query row) per (stored posting, query row) pair sharing a hash, key as above with group =
    query_group[row]. Query rows of hash h are query_order[query_starts[h] : query_starts[h] +
    query_counts[h]]. Left out: pairs of a (track, group) with fewer than `least` pairs in all (no window
    of that bin can hold more), and pairs whose offset difference does not fit DELTA_BITS. `track_slot`
    numbers the postings' tracks densely from 0 (it sizes the per-bin count). Postings in order, then rows.

    Counts every pair once; only the postings of tracks with a busy bin (few: chance agreement spreads
    over thousands of tracks) are visited again to make keys."""
    n = hash_index.shape[0]
    n_slots = 0
    for p in range(n):
        n_slots = max(n_slots, np.int64(track_slot[p]) + 1)
    per_bin = np.zeros(n_slots * n_groups, np.int32)
    for p in range(n):
        h = hash_index[p]
        s = query_starts[h]
        base = np.int64(track_slot[p]) * n_groups
        for j in range(query_counts[h]):
            per_bin[base + query_group[query_order[s + j]]] += 1
    busy_slot = np.zeros(n_slots, np.bool_)
    for b in range(n_slots * n_groups):
        if per_bin[b] >= least:
            busy_slot[b // n_groups] = True
    total = 0
    for p in range(n):
        if busy_slot[track_slot[p]]:
            total += query_counts[hash_index[p]]
    keys = np.empty(total, np.int64)
    rows = np.empty(total, np.int32)
    k = 0
    for p in range(n):
        if not busy_slot[track_slot[p]]:
            continue
        h = hash_index[p]
        s = query_starts[h]
        base = np.int64(track_slot[p]) * n_groups
        track = np.int64(track_id[p]) << 32
        for j in range(query_counts[h]):
            r = query_order[s + j]
            g = np.int64(query_group[r])
            if per_bin[base + g] < least:
                continue
            delta = np.int64(offset[p]) - np.int64(query_offsets[r])
            if delta < -KEY_DELTA_BIAS or delta >= KEY_DELTA_BIAS:
                continue
            keys[k] = track | (g << GROUP_SHIFT) | (delta + KEY_DELTA_BIAS)
            rows[k] = r
            k += 1
    return keys[:k], rows[:k]


def match_keys_reference(
    hash_index: np.ndarray,
    track_id: np.ndarray,
    track_slot: np.ndarray,
    offset: np.ndarray,
    query_order: np.ndarray,
    query_starts: np.ndarray,
    query_counts: np.ndarray,
    query_offsets: np.ndarray,
    query_group: np.ndarray,
    n_groups: int,
    least: int,
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `match_keys`: every pair by repeat/cumsum index arithmetic, then a bincount of
    the bins."""
    reps = query_counts[hash_index]
    total = int(reps.sum())
    posting_of = np.repeat(np.arange(hash_index.size), reps)
    within = np.arange(total) - np.repeat(np.cumsum(reps) - reps, reps)
    rows = query_order[query_starts[hash_index[posting_of]] + within].astype(np.int32)
    group = query_group[rows].astype(np.int64)
    bin_of = track_slot[posting_of].astype(np.int64) * n_groups + group
    busy = np.bincount(bin_of, minlength=1)[bin_of] >= least
    delta = offset[posting_of].astype(np.int64) - query_offsets[rows].astype(np.int64)
    keep = busy & (delta >= -KEY_DELTA_BIAS) & (delta < KEY_DELTA_BIAS)
    keys = (track_id[posting_of].astype(np.int64) << 32) | (group << GROUP_SHIFT) | (delta + KEY_DELTA_BIAS)
    return keys[keep], rows[keep]


@njit(cache=True, nogil=True)
def gather_groups(
    starts: np.ndarray, counts: np.ndarray, picked: np.ndarray, track_id: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows [starts[g], starts[g] + counts[g]) of (track_id, offset) for each group g = picked[i] in turn,
    with i as their hash index: one hypothesis's postings out of the lookup of all hypotheses' hashes."""
    total = 0
    for i in range(picked.shape[0]):
        total += counts[picked[i]]
    out_h = np.empty(total, np.int32)
    out_t = np.empty(total, track_id.dtype)
    out_o = np.empty(total, offset.dtype)
    k = 0
    for i in range(picked.shape[0]):
        g = picked[i]
        for r in range(starts[g], starts[g] + counts[g]):
            out_h[k] = i
            out_t[k] = track_id[r]
            out_o[k] = offset[r]
            k += 1
    return out_h, out_t, out_o


def gather_groups_reference(
    starts: np.ndarray, counts: np.ndarray, picked: np.ndarray, track_id: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy reference of `gather_groups`: repeat/cumsum index arithmetic."""
    c = counts[picked]
    hash_index = np.repeat(np.arange(picked.size, dtype=np.int32), c)
    first_out = np.cumsum(c) - c
    rows = np.arange(int(c.sum())) + np.repeat(starts[picked] - first_out, c)
    return hash_index, track_id[rows], offset[rows]


@njit(cache=True, nogil=True)
def positions_in_sorted(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """For sorted distinct `needles`, the index of each in sorted distinct `haystack`, -1 where absent:
    one merge pass (a binary search per needle cost 1 ms per query for the 70k hashes of a clip)."""
    out = np.full(needles.shape[0], -1, np.int64)
    j = 0
    m = haystack.shape[0]
    for i in range(needles.shape[0]):
        v = needles[i]
        while j < m and haystack[j] < v:
            j += 1
        if j < m and haystack[j] == v:
            out[i] = j
    return out


def positions_in_sorted_reference(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """NumPy reference of `positions_in_sorted`: a binary search per needle."""
    at = np.searchsorted(haystack, needles)
    found = at < haystack.size
    found[found] = haystack[at[found]] == needles[found]
    return np.where(found, at, -1).astype(np.int64)


_RADIX_BITS = 11


@njit(cache=True, nogil=True)
def sort_pairs(keys: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`keys` sorted ascending with `payload` carried along, stable (equal keys keep their order): an LSD
    radix sort over the bits the keys' range spans, 11 per pass (2x faster than NumPy's sort on the
    50k-600k keys of a query)."""
    n = keys.shape[0]
    if n == 0:
        return keys.copy(), payload.copy()
    lo = keys.min()
    span = np.uint64(keys.max() - lo)
    a = np.empty(n, np.uint64)
    for i in range(n):
        a[i] = np.uint64(keys[i] - lo)
    pa = payload.copy()
    b = np.empty(n, np.uint64)
    pb = np.empty_like(payload)
    mask = np.uint64((1 << _RADIX_BITS) - 1)
    count = np.empty(1 << _RADIX_BITS, np.int64)
    shift = 0
    while shift < 64 and (span >> np.uint64(shift)) != 0:
        count[:] = 0
        s = np.uint64(shift)
        for i in range(n):
            count[(a[i] >> s) & mask] += 1
        total = 0
        for d in range(1 << _RADIX_BITS):
            c = count[d]
            count[d] = total
            total += c
        for i in range(n):
            d = (a[i] >> s) & mask
            j = count[d]
            b[j] = a[i]
            pb[j] = pa[i]
            count[d] = j + 1
        a, b = b, a
        pa, pb = pb, pa
        shift += _RADIX_BITS
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = np.int64(a[i]) + lo
    return out, pa


def sort_pairs_reference(keys: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `sort_pairs`: a stable argsort."""
    order = np.argsort(keys, kind="stable")
    return keys[order], payload[order]


# -- scoring: the best offset window of every bin, and a description of the chosen ones ------------------


@njit(cache=True, nogil=True)
def best_window_per_bin(
    keys: np.ndarray, tol: int, shift: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For sorted int64 keys (bin << shift | offset difference + bias), per bin: (bin, matches in its best
    window of +-tol offset units, that window's first and last key, all the bin's matches). A window is
    centred on a key present in the data; ties keep the lowest offset."""
    n = keys.shape[0]
    # distinct keys and their counts
    uk = np.empty(n, np.int64)
    uc = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        if m > 0 and keys[i] == uk[m - 1]:
            uc[m - 1] += 1
        else:
            uk[m] = keys[i]
            uc[m] = 1
            m += 1
    bins = np.empty(m, np.int64)
    best = np.empty(m, np.int64)
    first = np.empty(m, np.int64)
    last = np.empty(m, np.int64)
    total = np.empty(m, np.int64)
    t = 0
    lo = 0
    hi = 0
    window = 0
    for i in range(m):
        b = uk[i] >> shift
        if t == 0 or bins[t - 1] != b:
            bins[t] = b
            best[t] = -1
            total[t] = 0
            t += 1
        total[t - 1] += uc[i]
        while hi < m and uk[hi] <= uk[i] + tol and (uk[hi] >> shift) == b:
            window += uc[hi]
            hi += 1
        while uk[lo] < uk[i] - tol or (uk[lo] >> shift) != b:
            window -= uc[lo]
            lo += 1
        if window > best[t - 1]:
            best[t - 1] = window
            first[t - 1] = uk[lo]
            last[t - 1] = uk[hi - 1]
    return bins[:t], best[:t], first[:t], last[:t], total[:t]


def best_window_per_bin_reference(
    keys: np.ndarray, tol: int, shift: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """NumPy reference of `best_window_per_bin`: windowed sums by binary search over the distinct keys."""
    uniq, counts = np.unique(keys, return_counts=True)
    bin_of = uniq >> shift
    lo = np.maximum(np.searchsorted(uniq, uniq - tol, side="left"), np.searchsorted(bin_of, bin_of))
    hi = np.minimum(
        np.searchsorted(uniq, uniq + tol, side="right"), np.searchsorted(bin_of, bin_of, side="right")
    )
    csum = np.concatenate(([0], np.cumsum(counts)))
    window = csum[hi] - csum[lo]
    bins, bin_first = np.unique(bin_of, return_index=True)
    total = np.add.reduceat(counts, bin_first)
    order = np.lexsort((-window, bin_of))  # per bin: largest window, then lowest offset
    pick = order[np.searchsorted(bin_of[order], bins)]
    return bins, window[pick], uniq[lo[pick]], uniq[hi[pick] - 1], total


@njit(cache=True, nogil=True)
def describe_windows(
    keys: np.ndarray,
    frames: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    delta_mask: int,
    delta_bias: int,
    tol: int,
    drift: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each chosen bin c, whose matches are keys[lo[c]:hi[c]] (sorted: by offset difference
    `(key & delta_mask) - delta_bias`) with the query frames they come from (`frames`, >= 0):
    (offset, distinct frames, matches, nearby frames) of the window of +-tol, centred on an offset
    difference present, that holds the most distinct query frames (ties: see below). `offset` is
    the window's mean offset difference rounded (half to even), `distinct frames` the distinct query
    frames in it (the evidence the confidence is computed from), `matches` all its matches, `nearby frames`
    the distinct query frames within +-drift of its centre. Ranking windows by raw matches instead lets a
    sustained sound, which matches many stored frames at once, pull the offset to a lookalike passage
    elsewhere in the track; ranking them by distinct (offset, frame) pairs lets a passage whose matches
    straddle two offsets (each frame counted at both) outrank the clip's own place. Those pairs only
    break ties of distinct frames (then the lowest offset wins): frames of a noisy clip's true place
    match at neighbouring offsets too. A fifth array, `rival frames`, holds the most distinct frames of a
    window centred more than `drift` away from the chosen one (0 if none): the evidence of another place
    in the same track, such as a repeat of the clip's passage; a sixth, `rival offset`, the offset
    difference that window is centred on (0 if none)."""
    n_bins = lo.shape[0]
    out_offset = np.empty(n_bins, np.int64)
    out_frames = np.empty(n_bins, np.int64)
    out_matches = np.empty(n_bins, np.int64)
    out_nearby = np.empty(n_bins, np.int64)
    out_rival = np.zeros(n_bins, np.int64)
    out_rival_offset = np.zeros(n_bins, np.int64)
    top_frame = 0
    for c in range(n_bins):
        for i in range(lo[c], hi[c]):
            top_frame = max(top_frame, np.int64(frames[i]))
    # matches of each frame inside the sliding window (zero again after each bin)
    in_window = np.zeros(top_frame + 1, np.int32)
    # the last pass that counted a frame, so no clearing between passes
    stamp = np.full(top_frame + 1, -1, np.int64)
    stamp_near = np.full(top_frame + 1, -1, np.int64)
    pass_id = 0
    run_delta = np.empty(0, np.int64)
    run_count = np.empty(0, np.int64)
    run_start = np.empty(1, np.int64)
    run_window = np.empty(0, np.int64)
    for c in range(n_bins):
        a = lo[c]
        b = hi[c]
        if b - a > run_delta.shape[0]:
            run_delta = np.empty(b - a, np.int64)
            run_count = np.empty(b - a, np.int64)
            run_start = np.empty(b - a + 1, np.int64)
            run_window = np.empty(b - a, np.int64)
        # runs of equal offset difference, each with its distinct query frames
        n_runs = 0
        i = a
        while i < b:
            d = (keys[i] & delta_mask) - delta_bias
            run_delta[n_runs] = d
            run_start[n_runs] = i
            pass_id += 1
            run_count[n_runs] = 0
            while i < b and (keys[i] & delta_mask) - delta_bias == d:
                if stamp[frames[i]] != pass_id:
                    stamp[frames[i]] = pass_id
                    run_count[n_runs] += 1
                i += 1
            n_runs += 1
        run_start[n_runs] = b
        # slide a window over the runs, counting the distinct frames in it (and the distinct
        # (offset, frame) pairs, which break ties); the first best wins
        best = -1
        best_pairs = -1
        centre = 0
        w_lo = 0
        w_hi = 0
        distinct = 0
        pairs = 0
        for r in range(n_runs):
            while w_hi < n_runs and run_delta[w_hi] <= run_delta[r] + tol:
                for j in range(run_start[w_hi], run_start[w_hi + 1]):
                    in_window[frames[j]] += 1
                    if in_window[frames[j]] == 1:
                        distinct += 1
                pairs += run_count[w_hi]
                w_hi += 1
            while run_delta[w_lo] < run_delta[r] - tol:
                for j in range(run_start[w_lo], run_start[w_lo + 1]):
                    in_window[frames[j]] -= 1
                    if in_window[frames[j]] == 0:
                        distinct -= 1
                pairs -= run_count[w_lo]
                w_lo += 1
            run_window[r] = distinct
            if distinct > best or (distinct == best and pairs > best_pairs):
                best = distinct
                best_pairs = pairs
                centre = run_delta[r]
        for j in range(run_start[w_lo], run_start[w_hi]):
            in_window[frames[j]] = 0
        rival = 0
        for r in range(n_runs):
            if abs(run_delta[r] - centre) > drift and run_window[r] > rival:
                rival = run_window[r]
                out_rival_offset[c] = run_delta[r]
        out_rival[c] = rival
        # its matches, and the frames near it
        pass_id += 1
        matches = 0
        total = 0
        frames_in = 0
        frames_near = 0
        for i in range(a, b):
            d = (keys[i] & delta_mask) - delta_bias
            f = frames[i]
            if abs(d - centre) <= drift and stamp_near[f] != pass_id:
                stamp_near[f] = pass_id
                frames_near += 1
            if abs(d - centre) <= tol:
                matches += 1
                total += d
                if stamp[f] != pass_id:
                    stamp[f] = pass_id
                    frames_in += 1
        out_offset[c] = np.int64(np.round(total / matches))
        out_frames[c] = frames_in
        out_matches[c] = matches
        out_nearby[c] = frames_near
    return out_offset, out_frames, out_matches, out_nearby, out_rival, out_rival_offset


def describe_windows_reference(
    keys: np.ndarray,
    frames: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    delta_mask: int,
    delta_bias: int,
    tol: int,
    drift: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """NumPy reference of `describe_windows`, bin by bin: every window's distinct frames by np.unique."""
    out = []
    for a, b in zip(lo, hi, strict=True):
        d = (keys[a:b] & delta_mask) - delta_bias
        f = frames[a:b].astype(np.int64)
        present = np.unique(d)
        # distinct frames, then distinct (offset, frame) pairs; lexsort is stable: the lowest offset
        distinct = [np.unique(f[np.abs(d - x) <= tol]).size for x in present]
        pairs = [np.unique(np.stack([d, f])[:, np.abs(d - x) <= tol], axis=1).shape[1] for x in present]
        centre = present[np.lexsort((-np.asarray(pairs), -np.asarray(distinct)))[0]]
        in_window = np.abs(d - centre) <= tol
        away = np.abs(present - centre) > drift
        rival_at = np.flatnonzero(away)
        # the first (lowest) offset difference holding the most distinct frames, as the kernel's scan
        rival_offset = (
            int(present[rival_at[np.argmax(np.asarray(distinct)[rival_at])]]) if rival_at.size else 0
        )
        out.append(
            (
                round(float(d[in_window].mean())),
                np.unique(f[in_window]).size,
                int(in_window.sum()),
                np.unique(f[np.abs(d - centre) <= drift]).size,
                max(np.asarray(distinct)[away], default=0),
                rival_offset,
            )
        )
    if not out:
        return tuple(np.empty(0, np.int64) for _ in range(6))  # type: ignore[return-value]
    return tuple(np.asarray(col, np.int64) for col in zip(*out, strict=True))  # type: ignore[return-value]


# -- verification: a query's single peaks that meet a stored track's peaks at given offsets ---------------


@njit(cache=True, nogil=True)
def peak_coincidences(
    frame_start: np.ndarray,
    stored_cell: np.ndarray,
    query_t: np.ndarray,
    query_cell: np.ndarray,
    offsets: np.ndarray,
    frame_reach: int,
    cell_reach: int,
) -> np.ndarray:
    """For each offset o: the query peaks (frame `query_t[i]`, cell `query_cell[i]`) that meet a stored
    peak within +-`frame_reach` frames of `query_t[i] + o` and +-`cell_reach` cells. The stored track's
    peaks are given frame by frame: those of frame f have cells `stored_cell[frame_start[f] :
    frame_start[f + 1]]` (`frame_start` has one entry per stored frame, plus one)."""
    n_frames = frame_start.shape[0] - 1
    out = np.zeros(offsets.shape[0], np.int64)
    for k in range(offsets.shape[0]):
        count = 0
        for i in range(query_t.shape[0]):
            centre = np.int64(query_t[i]) + offsets[k]
            c = query_cell[i]
            met = False
            for f in range(
                max(np.int64(0), centre - frame_reach), min(np.int64(n_frames), centre + frame_reach + 1)
            ):
                for j in range(frame_start[f], frame_start[f + 1]):
                    if abs(np.int64(stored_cell[j]) - c) <= cell_reach:
                        met = True
                        break
                if met:
                    break
            if met:
                count += 1
        out[k] = count
    return out


def peak_coincidences_reference(
    frame_start: np.ndarray,
    stored_cell: np.ndarray,
    query_t: np.ndarray,
    query_cell: np.ndarray,
    offsets: np.ndarray,
    frame_reach: int,
    cell_reach: int,
) -> np.ndarray:
    """NumPy reference of `peak_coincidences`: every (query peak, stored peak) distance at once."""
    counts = np.diff(frame_start)
    stored_t = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    out = []
    for o in offsets:
        dt = np.abs(stored_t[None, :] - (query_t.astype(np.int64)[:, None] + int(o)))
        dc = np.abs(stored_cell.astype(np.int64)[None, :] - query_cell.astype(np.int64)[:, None])
        out.append(int(((dt <= frame_reach) & (dc <= cell_reach)).any(axis=1).sum()))
    return np.asarray(out, np.int64)
