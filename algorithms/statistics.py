"""Summary statistics of spot sizes, overall and per group, vectorised."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..jit import njit

PERCENTILES = (5, 25, 75, 95)
COUNTING_CELLS = 1 << 24
ROWS_PER_PASS = 1 << 20  # row-sized temporaries are made this many rows at a time


def row_slices(n: int, rows_per_pass: int | None = None):
    """Slices of ``n`` rows, ``rows_per_pass`` (by default ROWS_PER_PASS) at a time.

    Parameters
    ----------
    n : int
        The number of rows.
    rows_per_pass : int, optional
        Rows per slice; None (or 0) means ROWS_PER_PASS.

    Returns
    -------
    generator of slice
        Consecutive slices covering rows 0 to ``n``; the last may be shorter.
    """
    step = rows_per_pass or ROWS_PER_PASS
    return (slice(start, min(n, start + step)) for start in range(0, n, step))


def value_counts(values: np.ndarray) -> np.ndarray | None:
    """How many values are 0, 1, 2, ... (up to the largest), counted a pass at a time; None
    unless the values are non-negative integers below COUNTING_CELLS, as spot sizes are.
    Histograms and percentiles of sizes come from these counts, not from sorted copies:
    with a hundred million rows, that is gigabytes less.

    Parameters
    ----------
    values : numpy.ndarray
        The values to tally (spot sizes, in pixels).

    Returns
    -------
    numpy.ndarray or None
        int64, ``counts[v]`` the number of values equal to ``v``; None where there are
        no values or they are not integers in [0, COUNTING_CELLS).
    """
    values = np.asarray(values)
    if values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        return None
    if values.min() < 0 or values.max() >= COUNTING_CELLS:
        return None
    counts = np.zeros(int(values.max()) + 1, dtype=np.int64)
    for rows in row_slices(values.size):
        counts += np.bincount(values[rows], minlength=counts.size)
    return counts


def percentiles_from_counts(counts: np.ndarray, q) -> np.ndarray:
    """``np.percentile(values, q)`` (its default, linear interpolation) of the values that
    ``counts`` tallies (see value_counts): the same order statistics, interpolated by the
    same floating-point steps as numpy's, so the same numbers to the last bit.

    Parameters
    ----------
    counts : numpy.ndarray
        How many values are 0, 1, 2, ... (at least one value in all).
    q : float or array_like
        The percentile(s), from 0 to 100.

    Returns
    -------
    numpy.ndarray
        float64, one value per percentile (0-d for a scalar ``q``).
    """
    n = int(counts.sum())
    virtual = (n - 1) * np.true_divide(np.asarray(q), 100)
    below = np.floor(virtual)
    weight = virtual - below
    lower = below.astype(np.int64)
    cumulative = np.cumsum(counts)
    a = np.searchsorted(cumulative, lower, side="right").astype(
        np.float64
    )  # the lower-th smallest value
    b = np.searchsorted(cumulative, np.minimum(lower + 1, n - 1), side="right").astype(
        np.float64
    )
    difference = b - a
    result = a + difference * weight
    np.subtract(b, difference * (1 - weight), out=result, where=weight >= 0.5)
    return result


def summary_statistics(
    values: np.ndarray, counts: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """Count, mean, population standard deviation, min, max, median and the 5th, 25th,
    75th and 95th percentiles (numpy's linear interpolation); None where there are no
    values. For integer sizes, the quantiles come from value counts (``counts``, where
    the caller has them already) and the mean and standard deviation from the integers
    themselves, without a float copy: the numbers are the same as numpy's on floats
    (integer sums below 2**53 are exact).

    Parameters
    ----------
    values : numpy.ndarray
        One value per row (spot sizes, in pixels).
    counts : numpy.ndarray, optional
        The values' tally from :func:`value_counts`, where already made; None makes it
        here (where the values allow).

    Returns
    -------
    dict
        ``n`` (int), then ``mean``, ``std``, ``min``, ``max``, ``median``, ``p5``,
        ``p25``, ``p75`` and ``p95`` as float (all None where ``n`` is 0).
    """
    values = np.asarray(values)
    keys = ["mean", "std", "min", "max", "median"] + [f"p{q}" for q in PERCENTILES]
    if values.size == 0:
        return {"n": 0, **dict.fromkeys(keys)}
    if counts is None:
        counts = value_counts(values)
    if counts is None:
        values = values.astype(np.float64)
        quantiles = np.percentile(values, [50, *PERCENTILES])
    else:
        quantiles = percentiles_from_counts(counts, [50, *PERCENTILES])
    numbers = [
        values.mean(dtype=np.float64),
        values.std(dtype=np.float64),
        values.min(),
        values.max(),
        *quantiles,
    ]
    return {
        "n": int(values.size),
        **{key: float(number) for key, number in zip(keys, numbers)},
    }


class Groups(NamedTuple):
    """Statistics per group, one list per quantity (plain Python numbers)."""

    key: list
    n: list[int]
    mean: list[float]
    median: list[float]
    min: list[float]
    max: list[float]

    def entries(self, name: str = "key") -> list[dict]:
        """One dict per group, its key under ``name`` first.

        Parameters
        ----------
        name : str
            The dict key for each group's key (e.g. ``"panel"``).

        Returns
        -------
        list of dict
            Per group: ``name``, ``n``, ``mean``, ``median``, ``min`` and ``max``.
        """
        return [
            {name: key, "n": n, "mean": mean, "median": median, "min": low, "max": high}
            for key, n, mean, median, low, high in zip(*self)
        ]


def group_statistics(
    keys: np.ndarray, values: np.ndarray, skip_negative_keys: bool = False
) -> Groups:
    """Per distinct key (in ascending order): n, mean, median, min and max of the values;
    with ``skip_negative_keys``, rows whose key is negative (unknown) are left out.

    Spot sizes are small non-negative integers, so where the keys are integers too (panels,
    images, shells, experiments) the statistics come from a table of counts per key and
    value, filled a pass at a time (no sort, no row-sized temporaries); otherwise from
    one lexicographic sort. Both give the same numbers.

    Parameters
    ----------
    keys : numpy.ndarray
        The group key of each row (experiment, panel, image or shell number).
    values : numpy.ndarray
        The value of each row (e.g. a spot size in pixels).
    skip_negative_keys : bool
        Leave out rows whose key is negative.

    Returns
    -------
    Groups
        One entry per distinct key, keys ascending; empty lists where no row is kept.
    """
    keys, values = np.asarray(keys), np.asarray(values)
    tallied = _tally_by_key(keys, values, skip_negative_keys)
    if tallied is not None:
        return _groups_from_tally(*tallied)
    if skip_negative_keys:
        known = keys >= 0
        keys, values = keys[known], values[known]
    if keys.size == 0:
        return Groups([], [], [], [], [], [])
    values = values.astype(np.float64)
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    unique, starts, counts = np.unique(keys, return_index=True, return_counts=True)
    sums = np.add.reduceat(values, starts)
    medians = (values[starts + (counts - 1) // 2] + values[starts + counts // 2]) / 2
    return _groups(
        unique, counts, sums, medians, values[starts], values[starts + counts - 1]
    )


def _groups(unique, counts, sums, medians, smallest, largest) -> Groups:
    return Groups(
        unique.tolist(),
        counts.tolist(),
        (sums / counts).tolist(),
        medians.tolist(),
        smallest.tolist(),
        largest.tolist(),
    )


def _countable(keys: np.ndarray, values: np.ndarray) -> bool:
    """Integer keys and non-negative integer values: what a table of counts can hold."""
    return bool(
        keys.size
        and np.can_cast(keys.dtype, np.intp)
        and np.issubdtype(keys.dtype, np.integer)
        and np.issubdtype(values.dtype, np.integer)
        and values.min() >= 0
    )


def _tally_by_key(
    keys: np.ndarray, values: np.ndarray, skip_negative_keys: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct keys (ascending) and ``table[g, v]``, how many rows of the g-th key have
    value v; None unless keys and values are integers, the values non-negative, and the
    key range and the table small enough to count into."""
    if not _countable(keys, values):
        return None
    low, high = int(keys.min()), int(keys.max())
    if skip_negative_keys:
        low = max(low, 0)
    if high < low:  # every key negative, and skipped
        return np.zeros(0, np.int64), np.zeros((0, 1), np.int64)
    span = int(values.max()) + 1
    if high - low >= COUNTING_CELLS or span > COUNTING_CELLS:
        return None

    def shifted_keys(
        rows: slice,
    ) -> tuple[np.ndarray, np.ndarray]:  # kept rows: key - low, value
        chunk_keys, chunk_values = (
            np.subtract(keys[rows], low, dtype=np.intp),
            values[rows],
        )
        if skip_negative_keys:
            kept = chunk_keys >= 0
            return chunk_keys[kept], chunk_values[kept]
        return chunk_keys, chunk_values

    def counted(group_of: np.ndarray | None, n_groups: int) -> np.ndarray:
        table = np.zeros(n_groups * span, dtype=np.int64)
        for rows in row_slices(keys.size):
            chunk_keys, chunk_values = shifted_keys(rows)
            groups = chunk_keys if group_of is None else group_of[chunk_keys]
            table += np.bincount(groups * span + chunk_values, minlength=table.size)
        return table.reshape(n_groups, span)

    key_range, cells_allowed = (
        high - low + 1,
        max(COUNTING_CELLS, 2 * keys.size),
    )  # no table larger than the rows
    if (
        key_range * span <= cells_allowed
    ):  # a row of the table for every key in the range: one pass
        table = counted(None, key_range)
        present = table.any(axis=1)
        return np.flatnonzero(present) + low, table[present]
    present = np.zeros(key_range, dtype=bool)  # sparse keys: find those present first
    for rows in row_slices(keys.size):
        present |= np.bincount(shifted_keys(rows)[0], minlength=key_range) > 0
    unique = np.flatnonzero(present)
    if len(unique) * span > cells_allowed:
        return None
    return unique + low, counted(np.cumsum(present) - 1, len(unique))


def _groups_from_tally(unique: np.ndarray, table: np.ndarray) -> Groups:
    span = table.shape[1]
    counts = table.sum(axis=1)
    cumulative = table.cumsum(axis=1)
    sums = (table @ np.arange(span, dtype=np.int64)).astype(
        np.float64
    )  # exact: integer sums

    def value_at(
        rank: np.ndarray,
    ) -> np.ndarray:  # the rank-th smallest value of each group
        return (cumulative > rank[:, None]).argmax(axis=1).astype(np.float64)

    medians = (value_at((counts - 1) // 2) + value_at(counts // 2)) / 2
    smallest, largest = value_at(np.zeros_like(counts)), value_at(counts - 1)
    return _groups(unique, counts, sums, medians, smallest, largest)


@njit
def _segment_medians(values, starts, ends, counts, medians):
    """Median of the finite values of each segment [starts[g], ends[g])."""
    buffer = np.empty(values.size, np.float64)
    for g in range(starts.size):
        n = 0
        for i in range(starts[g], ends[g]):
            if np.isfinite(values[i]):
                buffer[n] = values[i]
                n += 1
        counts[g] = n
        medians[g] = np.median(buffer[:n]) if n else np.nan


class GroupOrder(NamedTuple):
    """Rows ordered by key, once for every quantity grouped by the same keys."""

    order: np.ndarray
    unique: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def group_order(keys: np.ndarray) -> GroupOrder:
    """The rows with a non-negative key, ordered by key (stable), and each key's
    stretch: a sort shared by the medians of every quantity (:func:`group_medians`).

    Parameters
    ----------
    keys : numpy.ndarray
        Integer, one per row; negative means unknown and the row is left out.

    Returns
    -------
    GroupOrder
        ``order`` (row indices sorted by key), ``unique`` (each key) and ``starts`` and
        ``ends`` (each key's stretch of ``order``).
    """
    keys = np.asarray(keys)
    kept = np.flatnonzero(keys >= 0)
    order = kept[np.argsort(keys[kept], kind="stable")]
    ordered = keys[order]
    starts = (
        np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        if ordered.size
        else np.zeros(0, np.intp)
    )
    ends = np.r_[starts[1:], ordered.size].astype(np.intp)
    return GroupOrder(order, ordered[starts], starts.astype(np.intp), ends)


def group_medians(
    grouping: GroupOrder, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key of ``grouping``: the key, how many finite values, and their median
    (numpy's, the mean of the two middle values for an even count); NaN values are
    left out. A selection per group, not a sort of every row per quantity.

    Parameters
    ----------
    grouping : GroupOrder
        From :func:`group_order` of the rows' keys.
    values : numpy.ndarray
        One real value per row.
    """
    ordered = np.asarray(values, dtype=np.float64)[grouping.order]
    counts = np.zeros(len(grouping.starts), np.int64)
    medians = np.zeros(len(grouping.starts), np.float64)
    _segment_medians(ordered, grouping.starts, grouping.ends, counts, medians)
    present = counts > 0
    return grouping.unique[present], counts[present], medians[present]
