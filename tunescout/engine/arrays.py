"""Set operations on integer arrays that the hot paths need.

NumPy 2.4's `np.unique` hashes before it sorts and is ~15x slower than a sort on the few-thousand-element
arrays of a query; these sort and compare neighbours instead.
"""

from __future__ import annotations

import numpy as np


def unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (same as `np.unique(values)`)."""
    ordered = np.sort(values)
    return ordered[first_of_runs(ordered)]


def first_of_runs(ordered: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in an already sorted array."""
    if ordered.size == 0:
        return np.empty(0, np.intp)
    return np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
