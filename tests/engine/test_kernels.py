"""Each numba kernel against its plain NumPy reference, on random and edge-case inputs."""

import numpy as np
import pytest

from tunescout.engine import hashes, kernels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("rt", "rf"), [(1, 1), (3, 2), (12, 6)])
@pytest.mark.parametrize("span", [(5, 75, 3, 55), (0, 80, 0, 59)], ids=["inside", "to-the-edges"])
def test_local_peaks_matches_reference(seed, rt, rf, span):
    rng = np.random.default_rng(seed)
    spec = rng.normal(size=(80, 60)).astype(np.float32)
    spec[10:14, 20:25] = 5.0  # a plateau must yield exactly one peak
    spec[40:, :] = np.round(spec[40:, :])  # many ties
    spec[0, 0] = spec[79, 59] = 9.0  # corner peaks: the rectangle is clipped to the array
    args = (*span, rt, rf, -0.5)
    got = kernels.local_peaks(spec, *args)
    want = kernels.local_peaks_reference(spec, *args)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].size > 0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("rt", "rf"), [(0, 0), (6, 4), (40, 2)])
def test_local_peaks_across_blocks_matches_reference(seed, rt, rf):
    # the kernel filters PEAK_BLOCK_FRAMES frames at a time: spans that start, end and fall between blocks
    rng = np.random.default_rng(seed)
    n_t = 3 * kernels.PEAK_BLOCK_FRAMES + 7
    spec = np.round(rng.normal(size=(n_t, 37)), 1).astype(np.float32)  # ties across block edges too
    spec[kernels.PEAK_BLOCK_FRAMES - 2 : kernels.PEAK_BLOCK_FRAMES + 3, 10:13] = 6.0  # a plateau astride
    for span in [
        (0, n_t, 0, 36),
        (1, kernels.PEAK_BLOCK_FRAMES + 1, 2, 30),
        (70, 71, 5, 5),
        (n_t - 3, n_t + 9, 0, 40),
    ]:
        got = kernels.local_peaks(spec, *span, rt, rf, 0.0)
        want = kernels.local_peaks_reference(spec, *span, rt, rf, 0.0)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_local_peaks_plateau_gives_one_peak():
    spec = np.zeros((20, 20), np.float32)
    spec[5:8, 5:8] = 1.0
    t, k = kernels.local_peaks(spec, 0, 20, 0, 19, 3, 3, 0.5)
    assert list(zip(t, k, strict=True)) == [(5, 5)]


@pytest.mark.parametrize("seed", range(5))
def test_strongest_per_block_matches_reference(seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 500, 400)).astype(np.int32)
    mag = rng.integers(0, 20, 400).astype(np.float32)  # ties on purpose
    for block, per in [(32, 3), (7, 1), (100, 50)]:
        np.testing.assert_array_equal(
            kernels.strongest_per_block(t, mag, block, per),
            kernels.strongest_per_block_reference(t, mag, block, per),
        )


def _random_peaks(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames sorted, frequency cells, magnitudes) of 250 peaks; magnitudes tie on purpose."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 300, 250)).astype(np.int32)
    cell = rng.integers(0, 256, 250).astype(np.int32)
    mag = rng.integers(0, 8, 250).astype(np.float32)
    return t, cell, mag


@pytest.mark.parametrize("seed", range(5))
def test_pair_peaks_matches_reference(seed):
    t, cell, mag = _random_peaks(seed)
    for args in [(2, 63, 31, 5), (0, 10, 5, 2), (1, 70, 127, 15)]:
        got = kernels.pair_peaks(t, cell, mag, *args)
        want = kernels.pair_peaks_reference(t, cell, mag, *args)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", range(4))
def test_strongest_targets_of_wider_pairs_are_the_pairs_of_a_smaller_fan_out(seed):
    t, cell, mag = _random_peaks(seed)
    wide = kernels.pair_peaks(t, cell, mag, 2, 67, 33, 10)
    for fan_out in (1, 4, 7, 8, 10, 12):
        got = kernels.strongest_targets(wide[0], wide[1], mag, fan_out)
        want = kernels.strongest_targets_reference(wide[0], wide[1], mag, fan_out)
        direct = kernels.pair_peaks(t, cell, mag, 2, 67, 33, min(fan_out, 10))
        for g, w, d in zip(got, want, direct, strict=True):
            assert g.dtype == np.int32
            np.testing.assert_array_equal(g, w)
            np.testing.assert_array_equal(g, d)


def test_pair_peaks_prefers_strong_targets():
    t = np.array([0, 3, 4, 5], np.int32)
    cell = np.array([10, 11, 12, 13], np.int32)
    mag = np.array([5.0, 1.0, 9.0, 7.0], np.float32)
    a, b = kernels.pair_peaks(t, cell, mag, 2, 63, 31, 2)
    assert list(b[a == 0]) == [2, 3]  # the weak peak at t=3 is skipped, order stays by time


@pytest.mark.parametrize("seed", range(3))
def test_triplets_from_pairs_matches_reference(seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 300, 120)).astype(np.int32)
    cell = rng.integers(0, 256, 120).astype(np.int32)
    mag = rng.normal(size=120).astype(np.float32)
    a, b = kernels.pair_peaks(t, cell, mag, 2, 63, 40, 6)
    for got, want in zip(
        kernels.triplets_from_pairs(a, b), kernels.triplets_from_pairs_reference(a, b), strict=True
    ):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("scale", [1.0, 0.955, 1.0375, 1.05])
def test_hash_triplets_matches_reference(scale):
    rng = np.random.default_rng(1)
    t = np.sort(rng.integers(0, 2000, 600)).astype(np.int32)
    cell = rng.integers(-1, 256, 600).astype(np.int32)
    mag = rng.normal(size=600).astype(np.float32)
    a, b, c = kernels.triplets_from_pairs(*kernels.pair_peaks(t, np.maximum(cell, 0), mag, 1, 70, 40, 6))
    args = (t, cell, a, b, c, scale, 2, 63, 31, hashes.KERNEL_LAYOUT)
    got = kernels.hash_triplets(*args)
    want = kernels.hash_triplets_reference(*args)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].size > 100


def random_hash_fields(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """n random values of each field of the hash layout, over its whole range."""
    return (
        rng.integers(0, 1 << hashes.F_BITS, n),
        rng.integers(-hashes.DF_BIAS, hashes.DF_BIAS, n),
        rng.integers(-hashes.DF_BIAS, hashes.DF_BIAS, n),
        rng.integers(0, 1 << hashes.DT_BITS, n),
        rng.integers(0, 1 << hashes.DT_BITS, n),
    )


def test_hash_layout_round_trip():
    rng = np.random.default_rng(0)
    n = 10_000
    fields = random_hash_fields(rng, n)
    h = hashes.pack(*fields)
    assert h.dtype == np.uint32
    assert hashes.HASH_BITS == 32
    for got, want in zip(hashes.unpack(h), fields, strict=True):
        np.testing.assert_array_equal(got, want)
    # fields do not overlap: every field's extreme values survive
    lo = (0, -hashes.DF_BIAS, -hashes.DF_BIAS, 0, 0)
    hi = (hashes.F_MASK, hashes.DF_BIAS - 1, hashes.DF_BIAS - 1, hashes.DT_MASK, hashes.DT_MASK)
    edge = hashes.pack(*([x, y] for x, y in zip(hi, lo, strict=True)))
    assert [list(x) for x in hashes.unpack(edge)] == [[x, y] for x, y in zip(hi, lo, strict=True)]


def test_hash_pack_refuses_out_of_range():
    with pytest.raises(ValueError, match="frame delta"):
        hashes.pack([1], [0], [0], [1 << hashes.DT_BITS], [0])
    with pytest.raises(ValueError, match="frequency"):
        hashes.pack([1 << hashes.F_BITS], [0], [0], [1], [2])
    with pytest.raises(ValueError, match="cell delta"):
        hashes.pack([1], [hashes.DF_BIAS], [0], [1], [2])


def test_kernel_hashes_agree_with_pack():
    t = np.array([0, 5, 9], np.int32)
    cell = np.array([10, 30, 2], np.int32)
    a, b, c = np.array([0, 1], np.int32), np.array([1, 2], np.int32), np.array([2, 2], np.int32)
    h, off = kernels.hash_triplets(t, cell, a, b, c, 1.0, 2, 63, 25, hashes.KERNEL_LAYOUT)
    # the second triplet's cell delta (2 - 30 = -28) exceeds df_max=25: dropped
    np.testing.assert_array_equal(h, hashes.pack([10], [20], [-8], [5], [9]))
    np.testing.assert_array_equal(off, [0])


def _keys(track: np.ndarray, group: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return np.sort(
        (track.astype(np.int64) << 32)
        | (group.astype(np.int64) << kernels.GROUP_SHIFT)
        | (delta.astype(np.int64) + kernels.KEY_DELTA_BIAS)
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tol", [0, 1, 3])
def test_best_window_per_bin_matches_reference(seed, tol):
    rng = np.random.default_rng(seed)
    n = 3000
    keys = _keys(rng.integers(0, 12, n), rng.integers(0, 3, n), rng.integers(-40, 40, n))
    got = kernels.best_window_per_bin(keys, tol, kernels.BIN_SHIFT)
    want = kernels.best_window_per_bin_reference(keys, tol, kernels.BIN_SHIFT)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_best_window_finds_the_consistent_offset_of_each_hypothesis():
    delta = np.array([5, 5, 6, 4, 5, 100, 101, -30], np.int64)
    track = np.full(delta.size + 3, 7)
    group = np.array([0] * delta.size + [2] * 3)  # another hypothesis of the same track: a bin of its own
    keys = _keys(track, group, np.concatenate([delta, [100, 100, 100]]))
    bins, best, first, last, total = kernels.best_window_per_bin(keys, 1, kernels.BIN_SHIFT)
    assert list(bins) == [7 << kernels.GROUP_BITS, (7 << kernels.GROUP_BITS) | 2]
    assert list(best) == [5, 3] and list(total) == [8, 3]
    offset = (
        (first[0] & kernels.DELTA_MASK) - kernels.KEY_DELTA_BIAS,
        (last[0] & kernels.DELTA_MASK) - kernels.KEY_DELTA_BIAS,
    )
    assert offset == (4, 6)


def _query_index(rng: np.random.Generator, n_hashes: int, n_rows: int) -> tuple[np.ndarray, ...]:
    hash_of_row = rng.integers(0, n_hashes, n_rows)  # query rows sharing hashes
    order = np.argsort(hash_of_row, kind="stable").astype(np.int32)
    counts = np.bincount(hash_of_row, minlength=n_hashes).astype(np.int64)
    starts = (np.cumsum(counts) - counts).astype(np.int64)
    return order, starts, counts


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("least", [1, 3, 8])
def test_match_keys_matches_reference(seed, least):
    rng = np.random.default_rng(seed)
    n_hashes, n_rows, n_groups = 50, 300, 3
    order, starts, counts = _query_index(rng, n_hashes, n_rows)
    query_offsets = rng.integers(0, 600, n_rows).astype(np.int32)
    query_group = rng.integers(0, n_groups, n_rows).astype(np.int8)
    hash_index = np.sort(rng.integers(0, n_hashes, 400)).astype(np.int32)
    track_id = (rng.zipf(1.3, hash_index.size) % 300 * 7_000_000).astype(np.int64)  # few busy, ids to 2**31
    slot = np.unique(track_id, return_inverse=True)[1]
    offset = rng.integers(0, 1 << 24, hash_index.size).astype(np.int32)
    args = (
        hash_index,
        track_id,
        slot,
        offset,
        order,
        starts,
        counts,
        query_offsets,
        query_group,
        n_groups,
        least,
    )
    got, want = kernels.match_keys(*args), kernels.match_keys_reference(*args)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    track = got[0] >> 32
    group = (got[0] >> kernels.GROUP_SHIFT) & (kernels.MAX_GROUPS - 1)
    delta = (got[0] & kernels.DELTA_MASK) - kernels.KEY_DELTA_BIAS
    assert (
        (track >= 0).all() and (group < n_groups).all() and (delta < 1 << 24).all() and (delta > -600).all()
    )
    np.testing.assert_array_equal(group, query_group[got[1]])
    # every bin kept has at least `least` matches; with least=1 nothing is left out
    _, per_bin = np.unique(got[0] >> kernels.BIN_SHIFT, return_counts=True)
    assert (per_bin >= least).all()
    if least == 1:
        assert got[0].size == int(counts[hash_index].sum())
    else:
        assert got[0].size < int(counts[hash_index].sum())


def test_match_keys_leaves_out_offset_differences_beyond_the_key():
    order, starts, counts = np.array([0], np.int32), np.array([0], np.int64), np.array([1], np.int64)
    offset = np.array([5, kernels.KEY_DELTA_BIAS - 1, kernels.KEY_DELTA_BIAS + 100], np.int64).astype(
        np.int32
    )
    args = (
        np.zeros(3, np.int32), np.ones(3, np.int64), np.zeros(3, np.int64), offset,
        order, starts, counts, np.array([10], np.int32), np.zeros(1, np.int8), 1, 1,
    )  # fmt: skip
    keys, _ = kernels.match_keys(*args)
    delta = (keys & kernels.DELTA_MASK) - kernels.KEY_DELTA_BIAS
    assert list(delta) == [-5, kernels.KEY_DELTA_BIAS - 11]  # the third, 298 hours in, cannot be keyed
    np.testing.assert_array_equal(keys, kernels.match_keys_reference(*args)[0])


@pytest.mark.parametrize("seed", range(4))
def test_describe_windows_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = 4000
    track = rng.integers(0, 6, n)
    group = rng.integers(0, 2, n)
    # a consistent offset per bin plus chance matches, query frames repeating (sustained sounds)
    delta = np.where(rng.random(n) < 0.4, 20 * track + group, rng.integers(-50, 300, n))
    delta += rng.integers(-1, 2, n)
    frames = rng.integers(0, 150, n).astype(np.int32)
    order = np.argsort(
        (track.astype(np.int64) << 32) | (group << kernels.GROUP_SHIFT) | (delta + kernels.KEY_DELTA_BIAS),
        kind="stable",
    )
    keys = _keys(track, group, delta)
    frames = frames[order]
    bins = np.unique(keys >> kernels.BIN_SHIFT)
    lo = np.searchsorted(keys, bins << kernels.BIN_SHIFT, side="left")
    hi = np.searchsorted(keys, (bins << kernels.BIN_SHIFT) | kernels.DELTA_MASK, side="right")
    for tol, drift in ((0, 0), (1, 40), (3, 10)):
        args = (keys, frames, lo, hi, kernels.DELTA_MASK, kernels.KEY_DELTA_BIAS, tol, drift)
        got, want = kernels.describe_windows(*args), kernels.describe_windows_reference(*args)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_describe_windows_counts_a_repeated_sound_once():
    # offset 10: one query frame matched five times; offset 30: three frames once each
    delta = np.array([10, 10, 10, 10, 10, 30, 30, 31])
    frames = np.array([4, 4, 4, 4, 4, 7, 8, 9], np.int32)
    keys = _keys(np.zeros(8), np.zeros(8), delta)
    offset, distinct, matches, nearby, _, _ = kernels.describe_windows(
        keys, frames, np.array([0]), np.array([8]), kernels.DELTA_MASK, kernels.KEY_DELTA_BIAS, 1, 40
    )
    assert (offset[0], distinct[0], matches[0], nearby[0]) == (30, 3, 3, 4)


def test_describe_windows_ranks_by_distinct_frames_then_pairs():
    # offset 10/11: five query frames, each matched at both (a passage alike, smeared over two offsets);
    # offset 30: six frames once each (the clip's own place): 6 distinct frames beat 5 (10 pairs)
    delta = np.array([10] * 5 + [11] * 5 + [30] * 6)
    frames = np.array([1, 2, 3, 4, 5] * 2 + [1, 2, 3, 4, 5, 6], np.int32)
    keys = _keys(np.zeros(16), np.zeros(16), delta)
    offset, distinct, matches, _, _, _ = kernels.describe_windows(
        keys, frames, np.array([0]), np.array([16]), kernels.DELTA_MASK, kernels.KEY_DELTA_BIAS, 1, 40
    )
    assert (offset[0], distinct[0], matches[0]) == (30, 6, 6)
    # as many distinct frames at 10 as at 40/41: then the (offset, frame) pairs decide, not the offset
    delta = np.array([10] * 3 + [40] * 3 + [41] * 3)
    frames = np.array([1, 2, 3] * 3, np.int32)
    keys = _keys(np.zeros(9), np.zeros(9), delta)
    offset, distinct, matches, _, _, _ = kernels.describe_windows(
        keys, frames, np.array([0]), np.array([9]), kernels.DELTA_MASK, kernels.KEY_DELTA_BIAS, 1, 40
    )
    assert (offset[0], distinct[0], matches[0]) == (40, 3, 6)


def test_describe_windows_reports_the_best_place_beyond_the_drift_as_the_rival():
    # the clip's place at 30 (6 frames), its neighbourhood within +-drift (31: 4 frames, 60: 5 frames) and
    # a repeat of the passage at 200 (5 frames): the rival is the repeat, never a neighbour of the answer
    delta = np.array([30] * 6 + [31] * 4 + [60] * 5 + [200] * 5)
    frames = np.array([1, 2, 3, 4, 5, 6] + [11, 12, 13, 14] + [21, 22, 23, 24, 25] * 2, np.int32)
    keys = _keys(np.zeros(20), np.zeros(20), delta)
    args = (keys, frames, np.array([0]), np.array([20]), kernels.DELTA_MASK, kernels.KEY_DELTA_BIAS, 0, 40)
    offset, distinct, _, _, rival, rival_offset = kernels.describe_windows(*args)
    assert (offset[0], distinct[0], rival[0], rival_offset[0]) == (30, 6, 5, 200)
    # with the drift wider than the repeat's distance, no place is far enough to be a rival
    offset, _, _, _, rival, _ = kernels.describe_windows(*args[:-1], 200)
    assert (offset[0], rival[0]) == (30, 0)


@pytest.mark.parametrize("seed", range(3))
def test_positions_in_sorted_matches_reference(seed):
    rng = np.random.default_rng(seed)
    haystack = np.unique(rng.integers(0, 5000, 800)).astype(np.uint32)
    for needles in (np.unique(rng.integers(0, 5000, 900)).astype(np.uint32), haystack[:0], haystack[::7]):
        got = kernels.positions_in_sorted(haystack, needles)
        np.testing.assert_array_equal(got, kernels.positions_in_sorted_reference(haystack, needles))
    assert (kernels.positions_in_sorted(haystack[:0], haystack) == -1).all()


@pytest.mark.parametrize("seed", range(3))
def test_gather_groups_matches_reference(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, 200).astype(np.int64)
    starts = (np.cumsum(counts) - counts).astype(np.int64)
    track_id = rng.integers(0, 1 << 31, int(counts.sum())).astype(np.int64)
    offset = rng.integers(0, 1 << 20, track_id.size).astype(np.int32)
    picked = np.sort(rng.choice(200, 70, replace=False)).astype(np.int64)
    args = (starts, counts, picked, track_id, offset)
    got, want = kernels.gather_groups(*args), kernels.gather_groups_reference(*args)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize(
    "keys",
    [
        np.array([], np.int64),
        np.array([7], np.int64),
        np.array([5, 5, 5, 1, 1], np.int64),  # ties: stability is visible in the payload
        np.random.default_rng(1).integers(0, 40, 5000).astype(np.int64),  # one radix pass
        np.random.default_rng(2).integers(-(1 << 62), 1 << 62, 5000).astype(np.int64),  # six passes
        (np.random.default_rng(3).integers(0, 10_000, 20_000).astype(np.int64) << 32)
        + np.random.default_rng(4).integers(0, 1 << 22, 20_000),
    ],
)
def test_sort_pairs_matches_reference(keys):
    payload = np.arange(keys.size, dtype=np.int32)
    got, want = kernels.sort_pairs(keys, payload), kernels.sort_pairs_reference(keys, payload)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_jitter_frame_deltas_moves_only_the_frame_deltas(radius: int) -> None:
    rng = np.random.default_rng(radius)
    n = 500
    fields = random_hash_fields(rng, n)
    fields[3][:3] = [0, hashes.DT_MASK, 1]  # the edges of the range: variants past them are left out
    moved, rows = hashes.jitter_frame_deltas(hashes.pack(*fields), radius)
    expected = set()
    for row in range(n):
        a, d1, d2, t1, t2 = (int(f[row]) for f in fields)
        for i in range(-radius, radius + 1):
            for j in range(-radius, radius + 1):
                if 0 <= t1 + i <= hashes.DT_MASK and 0 <= t2 + j <= hashes.DT_MASK:
                    expected.add((row, int(hashes.pack(a, d1, d2, t1 + i, t2 + j))))
    got = list(zip(rows.tolist(), moved.tolist(), strict=True))
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected
