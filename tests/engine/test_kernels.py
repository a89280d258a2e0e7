"""Each numba kernel against its plain NumPy reference, on random and edge-case inputs."""

import numpy as np
import pytest

from tunescout.engine import hashes, kernels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("rt", "rf"), [(1, 1), (3, 2), (12, 6)])
def test_local_peaks_matches_reference(seed, rt, rf):
    rng = np.random.default_rng(seed)
    spec = rng.normal(size=(80, 60)).astype(np.float32)
    spec[10:14, 20:25] = 5.0  # a plateau must yield exactly one peak
    spec[40:, :] = np.round(spec[40:, :])  # many ties
    args = (5, 75, 3, 55, rt, rf, -0.5)
    got = kernels.local_peaks(spec, *args)
    want = kernels.local_peaks_reference(spec, *args)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].size > 0


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


@pytest.mark.parametrize("seed", range(5))
def test_pair_peaks_matches_reference(seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 300, 250)).astype(np.int32)
    cell = rng.integers(0, 256, 250).astype(np.int32)
    for args in [(2, 63, 63, 5), (0, 10, 5, 2), (1, 70, 127, 15)]:
        got = kernels.pair_peaks(t, cell, *args)
        want = kernels.pair_peaks_reference(t, cell, *args)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("scale", [1.0, 0.95, 1.0375, 1.05])
def test_hash_pairs_matches_reference(scale):
    rng = np.random.default_rng(1)
    t = np.sort(rng.integers(0, 2000, 600)).astype(np.int32)
    cell = rng.integers(-1, 256, 600).astype(np.int32)
    a, b = kernels.pair_peaks(t, np.maximum(cell, 0), 1, 70, 127, 8)
    args = (t, cell, a, b, scale, 2, 63, 63, hashes.F_SHIFT, hashes.DF_SHIFT, hashes.DF_BIAS)
    got = kernels.hash_pairs(*args)
    want = kernels.hash_pairs_reference(*args)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].size > 100


def test_hash_layout_round_trip():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 1 << hashes.F_BITS, 10_000)
    df = rng.integers(-hashes.DF_BIAS, hashes.DF_BIAS, 10_000)
    dt = rng.integers(0, 1 << hashes.DT_BITS, 10_000)
    h = hashes.pack(f, df, dt)
    assert h.dtype == np.uint32
    assert int(h.max()) < (1 << hashes.HASH_BITS)
    for got, want in zip(hashes.unpack(h), (f, df, dt), strict=True):
        np.testing.assert_array_equal(got, want)
    # fields do not overlap: every field's extreme values survive
    edge = hashes.pack([hashes.F_MASK, 0], [hashes.DF_BIAS - 1, -hashes.DF_BIAS], [hashes.DT_MASK, 0])
    assert [list(x) for x in hashes.unpack(edge)] == [
        [hashes.F_MASK, 0],
        [hashes.DF_BIAS - 1, -hashes.DF_BIAS],
        [hashes.DT_MASK, 0],
    ]


def test_hash_pack_refuses_out_of_range():
    with pytest.raises(ValueError, match="frame delta"):
        hashes.pack([1], [0], [1 << hashes.DT_BITS])
    with pytest.raises(ValueError, match="frequency"):
        hashes.pack([1 << hashes.F_BITS], [0], [1])


def test_kernel_hashes_agree_with_pack():
    t = np.array([0, 5, 9], np.int32)
    cell = np.array([10, 30, 2], np.int32)
    a, b = np.array([0, 0, 1], np.int32), np.array([1, 2, 2], np.int32)
    h, off = kernels.hash_pairs(
        t, cell, a, b, 1.0, 2, 63, 63, hashes.F_SHIFT, hashes.DF_SHIFT, hashes.DF_BIAS
    )
    np.testing.assert_array_equal(h, hashes.pack([10, 10, 30], [20, -8, -28], [5, 9, 4]))
    np.testing.assert_array_equal(off, [0, 0, 5])
