"""The sort-based set helpers the hot paths use instead of np.unique."""

import numpy as np
import pytest

from tunescout.engine import arrays


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_unique_and_runs_match_numpy(n):
    values = np.random.default_rng(n).integers(0, max(1, n // 3), n).astype(np.uint64)  # many repeats
    np.testing.assert_array_equal(arrays.unique(values), np.unique(values))
    ordered = np.sort(values)
    _, want_first = np.unique(ordered, return_index=True)
    np.testing.assert_array_equal(arrays.first_of_runs(ordered), want_first)
    mask = arrays.starts_of_runs(ordered)
    assert mask.dtype == bool and mask.size == n
    np.testing.assert_array_equal(np.flatnonzero(mask), want_first)
