"""Summary statistics of spot sizes, overall and per group, vectorised."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PERCENTILES = (5, 25, 75, 95)


def summary_statistics(values: np.ndarray) -> dict[str, float | int | None]:
    """Count, mean, population standard deviation, min, max, median and the 5th, 25th,
    75th and 95th percentiles (numpy's linear interpolation); None where there are no
    values."""
    values = np.asarray(values, dtype=np.float64)
    keys = ["mean", "std", "min", "max", "median"] + [f"p{q}" for q in PERCENTILES]
    if values.size == 0:
        return {"n": 0, **{key: None for key in keys}}
    quantiles = np.percentile(values, [50, *PERCENTILES])
    numbers = [values.mean(), values.std(), values.min(), values.max(), *quantiles]
    return {"n": int(values.size), **{key: float(number) for key, number in zip(keys, numbers)}}


COUNTING_CELLS = 1 << 24


class Groups(NamedTuple):
    """Statistics per group, one list per quantity (plain Python numbers)."""

    key: list
    n: list[int]
    mean: list[float]
    median: list[float]
    min: list[float]
    max: list[float]

    def entries(self, name: str = "key") -> list[dict]:
        """One dict per group, its key under ``name`` first."""
        return [
            {name: key, "n": n, "mean": mean, "median": median, "min": low, "max": high}
            for key, n, mean, median, low, high in zip(*self)
        ]


def grouped_statistics(keys: np.ndarray, values: np.ndarray) -> list[dict]:
    """Per distinct key (in ascending order): n, mean, median, min and max of the values."""
    return group_statistics(keys, values).entries()


def group_statistics(keys: np.ndarray, values: np.ndarray) -> Groups:
    """Per distinct key (in ascending order): n, mean, median, min and max of the values.

    Spot sizes are small non-negative integers, so where groups x distinct values fit in
    COUNTING_CELLS the medians come from a 2-D count table (no sort); otherwise from one
    lexicographic sort. Both give the same numbers."""
    keys, values = np.asarray(keys), np.asarray(values)
    if keys.size == 0:
        return Groups([], [], [], [], [], [])
    if np.issubdtype(values.dtype, np.integer) and values.min() >= 0:
        unique, group = _dense_groups(keys)
        span = int(values.max()) + 1
        if len(unique) * span <= COUNTING_CELLS:
            return _grouped_by_counting(unique, group.ravel(), np.asarray(values, dtype=np.int64), span)
    values = values.astype(np.float64)
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    unique, starts, counts = np.unique(keys, return_index=True, return_counts=True)
    sums = np.add.reduceat(values, starts)
    medians = (values[starts + (counts - 1) // 2] + values[starts + counts // 2]) / 2
    return _groups(unique, counts, sums, medians, values[starts], values[starts + counts - 1])


def _groups(unique, counts, sums, medians, smallest, largest) -> Groups:
    return Groups(unique.tolist(), counts.tolist(), (sums / counts).tolist(), medians.tolist(), smallest.tolist(), largest.tolist())


def _dense_groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys (ascending) and each row's group number; without a sort where the
    keys are integers in a small range (panels, images, shells, experiments)."""
    if np.issubdtype(keys.dtype, np.integer):
        low, high = int(keys.min()), int(keys.max())
        if high - low < COUNTING_CELLS:
            shifted = keys.astype(np.intp, copy=False) if low == 0 else (keys - low).astype(np.intp)
            present = np.bincount(shifted, minlength=high - low + 1) > 0
            if present.all():  # every key in the range occurs: the shifted key is the group
                return np.arange(low, high + 1), shifted
            return np.flatnonzero(present) + low, (np.cumsum(present) - 1)[shifted]
    unique, group = np.unique(keys, return_inverse=True)
    return unique, group.ravel()


def _grouped_by_counting(unique: np.ndarray, group: np.ndarray, values: np.ndarray, span: int) -> Groups:
    table = np.bincount(group * span + values, minlength=len(unique) * span).reshape(len(unique), span)
    counts = table.sum(axis=1)
    cumulative = table.cumsum(axis=1)
    sums = (table @ np.arange(span, dtype=np.int64)).astype(np.float64)  # exact: integer sums

    def value_at(rank: np.ndarray) -> np.ndarray:  # the rank-th smallest value of each group
        return (cumulative > rank[:, None]).argmax(axis=1).astype(np.float64)

    medians = (value_at((counts - 1) // 2) + value_at(counts // 2)) / 2
    smallest, largest = value_at(np.zeros_like(counts)), value_at(counts - 1)
    return _groups(unique, counts, sums, medians, smallest, largest)
