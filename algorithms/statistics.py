"""Summary statistics of spot sizes, overall and per group, vectorised."""

from __future__ import annotations

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


def grouped_statistics(keys: np.ndarray, values: np.ndarray) -> list[dict]:
    """Per distinct key (in ascending order): n, mean, median, min and max of the values."""
    keys, values = np.asarray(keys), np.asarray(values, dtype=np.float64)
    if keys.size == 0:
        return []
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    unique, starts, counts = np.unique(keys, return_index=True, return_counts=True)
    sums = np.add.reduceat(values, starts)
    medians = (values[starts + (counts - 1) // 2] + values[starts + counts // 2]) / 2
    return [
        {"key": key.item(), "n": int(n), "mean": float(total / n), "median": float(median), "min": float(values[start]), "max": float(values[start + n - 1])}
        for key, start, n, total, median in zip(unique, starts, counts, sums, medians)
    ]
