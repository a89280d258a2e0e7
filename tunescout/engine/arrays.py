"""Set operations on integer arrays that the hot paths need.

NumPy 2.4's `np.unique` hashes before it sorts and is ~15x slower than a sort on the few-thousand-element
arrays of a query; these sort and compare neighbours instead.
"""

from __future__ import annotations

import numpy as np


def unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (same as `np.unique(values)`)."""
    ordered = np.sort(values)
    return ordered[starts_of_runs(ordered)]


def first_of_runs(ordered: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in an already sorted array."""
    return np.flatnonzero(starts_of_runs(ordered))


def starts_of_runs(ordered: np.ndarray) -> np.ndarray:
    """Which elements of an already sorted array start a run of equal values (a bool mask: an eighth of
    an index array's memory, which matters for a long track's millions of rows)."""
    first = np.empty(ordered.size, bool)
    if ordered.size:
        first[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first
