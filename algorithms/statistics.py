"""Summary statistics of spot sizes, overall and per group, vectorised."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..jit import njit
from .sorting import sorted_uint64

PERCENTILES = (5, 25, 75, 95)
COUNTING_CELLS = 1 << 24


def value_counts(values: np.ndarray) -> np.ndarray | None:
    """How many values are 0, 1, 2, ... (up to the largest); None unless the values are
    non-negative integers below COUNTING_CELLS, as spot sizes are. Histograms and
    percentiles of sizes come from these counts, not from sorted copies: with a hundred
    million rows, that is gigabytes less.

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
    values = values.reshape(-1)
    low, high = _extremes(values)
    if low < 0 or high >= COUNTING_CELLS:
        return None
    counts = np.zeros(int(high) + 1, dtype=np.int64)
    _tally_values(values, counts)
    return counts


@njit
def _extremes(values):
    """The smallest and largest of one or more values, in one pass."""
    low = high = values[0]
    for value in values:
        low = min(low, value)
        high = max(high, value)
    return low, high


@njit
def _tally_values(values, counts):
    """``counts[v] += 1`` for every value (each known to be in range)."""
    for value in values:
        counts[value] += 1


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
    result = np.asarray(a + difference * weight)  # 0-d for a scalar q, to write into
    np.subtract(b, difference * (1 - weight), out=result, where=weight >= 0.5)
    return result


def median(values: np.ndarray) -> float:
    """numpy's median of whole numbers or finite reals (at least one) as float64:
    from the whole numbers' tally (see :func:`percentiles_from_counts`), or by
    selection (:func:`median_of_finite`), the same number either way.

    Parameters
    ----------
    values : numpy.ndarray
        Integers, or finite reals.

    Returns
    -------
    float
        The median.
    """
    values = np.asarray(values).ravel()
    counts = value_counts(values)
    if counts is not None:
        return float(percentiles_from_counts(counts, 50))
    return median_of_finite(values.astype(np.float64, copy=False))


def median_of_finite(values: np.ndarray) -> float:
    """``np.median(values)`` of finite float values, by selection rather than a sort.

    The middle values are found by their bits: a histogram of the top bits in which
    the values differ gives the one or two bins holding the middle ranks, and only
    those bins' values are gathered and sorted (a few passes over the values, where
    numpy's median partitions the whole array at both middle ranks). The two middle
    values are averaged as numpy's mean averages them (from 0), so the result is the
    same number.

    Parameters
    ----------
    values : numpy.ndarray
        Finite float64 values, at least one, one-dimensional (not written to).

    Returns
    -------
    float
        The median.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    lower, upper = _middle_values(values.view(np.uint64))
    if values.size % 2:
        return float(0.0 + upper)
    return float((0.0 + lower + upper) / 2.0)


_SIGN_64 = np.uint64(1 << 63)
_ALL_BITS = np.uint64((1 << 64) - 1)
_SELECTION_BITS = 16  # the histogram's bits, at most


@njit
def _order_key(bits):
    """A float64's bits as an unsigned integer in the order of the values (negative
    zero just below zero)."""
    if bits & _SIGN_64:
        return bits ^ _ALL_BITS  # numba's ~ would give a signed integer
    return bits | _SIGN_64


@njit
def _gather_between(bits, lowest, past, gathered):
    """The values whose order keys lie from ``lowest`` to before ``past`` (0: no
    end), in their order, into ``gathered``."""
    values = bits.view(np.float64)
    m = 0
    for i in range(bits.size):
        key = _order_key(bits[i])
        if lowest <= key and (key < past or past == 0):
            gathered[m] = values[i]
            m += 1


@njit
def _middle_values(bits):
    """The values of ranks (n - 1) // 2 and n // 2 of the finite float64 values whose
    bits are ``bits``: the histogram's bins holding those ranks are gathered and
    sorted."""
    n = bits.size
    low = high = _order_key(bits[0])
    for i in range(n):
        key = _order_key(bits[i])
        low = min(low, key)
        high = max(high, key)
    values = bits.view(np.float64)
    if low == high:
        return values[0], values[0]
    digits = np.uint64(1 << min(_SELECTION_BITS, max(1, int(np.log2(n)) + 1)))
    shift = np.uint64(0)
    while (high >> shift) - (low >> shift) >= digits:
        shift += np.uint64(1)
    base = low >> shift
    counts = np.zeros(int((high >> shift) - base) + 1, np.int64)
    for i in range(n):
        counts[(_order_key(bits[i]) >> shift) - base] += 1
    ranks = ((n - 1) // 2, n // 2)
    first_bin = last_bin = -1
    below = 0  # the values in bins before first_bin
    total = 0
    for digit in range(counts.size):
        if first_bin < 0 and total + counts[digit] > ranks[0]:
            first_bin, below = digit, total
        total += counts[digit]
        if total > ranks[1]:
            last_bin = digit
            break
    # the values of those bins: keys from the first bin's lowest to past the last's
    lowest = (base + np.uint64(first_bin)) << shift
    past = (base + np.uint64(last_bin + 1)) << shift
    gathered = np.empty(total - below, np.float64)
    _gather_between(bits, lowest, past, gathered)
    gathered.sort()
    return gathered[ranks[0] - below], gathered[ranks[1] - below]


def mean_and_std(values: np.ndarray) -> tuple[float, float]:
    """The mean and population standard deviation numpy gives for a float64 copy of
    the values (``copy.mean()``, ``copy.std()``): numpy's steps (its ``_mean`` and
    ``_var``) with its pairwise summation (:func:`_pairwise_sum`), so the same bits,
    in two compiled passes over the values and without the copy.

    Parameters
    ----------
    values : numpy.ndarray
        Real or integer, at least one value.

    Returns
    -------
    tuple of float
        The mean and the population standard deviation.
    """
    values = np.asarray(values).ravel()
    count = np.float64(values.size)
    # numpy's reduction starts from the identity, 0, and adds the pairwise sum.
    mean = (0.0 + _pairwise_sum(values, 0, values.size, 0.0, False)) / count
    squares = 0.0 + _pairwise_sum(values, 0, values.size, mean, True)
    return float(mean), float(np.sqrt(squares / count))


# numpy's pairwise summation: blocks of at most this many values summed by 8 running
# sums (``pairwise_sum`` in numpy/_core/src/umath/loops_utils.h.src).
PAIRWISE_BLOCK = 128


@njit
def _term(values, i, mean, squared):
    """values[i] as float64, or its squared deviation from ``mean``."""
    value = np.float64(values[i])
    if squared:
        value = value - mean
        return value * value
    return value


@njit
def _pairwise_sum(values, start, n, mean, squared):
    """The pairwise sum of the n terms from ``start`` (see :func:`_term`) as numpy
    makes it: its blocks, its unrolling and its order of additions."""
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total += _term(values, i, mean, squared)
        return total
    if n <= PAIRWISE_BLOCK:
        r0 = _term(values, start, mean, squared)
        r1 = _term(values, start + 1, mean, squared)
        r2 = _term(values, start + 2, mean, squared)
        r3 = _term(values, start + 3, mean, squared)
        r4 = _term(values, start + 4, mean, squared)
        r5 = _term(values, start + 5, mean, squared)
        r6 = _term(values, start + 6, mean, squared)
        r7 = _term(values, start + 7, mean, squared)
        i = start + 8
        stop = start + n - n % 8
        while i < stop:
            r0 += _term(values, i, mean, squared)
            r1 += _term(values, i + 1, mean, squared)
            r2 += _term(values, i + 2, mean, squared)
            r3 += _term(values, i + 3, mean, squared)
            r4 += _term(values, i + 4, mean, squared)
            r5 += _term(values, i + 5, mean, squared)
            r6 += _term(values, i + 6, mean, squared)
            r7 += _term(values, i + 7, mean, squared)
            i += 8
        total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < start + n:
            total += _term(values, i, mean, squared)
            i += 1
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum(values, start, half, mean, squared) + _pairwise_sum(
        values, start + half, n - half, mean, squared
    )


def summary_statistics(
    values: np.ndarray,
    counts: np.ndarray | None = None,
    ordered: np.ndarray | None = None,
    ordered_plainly: bool = False,
) -> dict[str, float | int | None]:
    """Count, mean, population standard deviation, min, max, median and the 5th, 25th,
    75th and 95th percentiles (numpy's linear interpolation); None where there are no
    values. For integer sizes, the quantiles come from value counts (``counts``, where
    the caller has them already): the numbers are the same as numpy's on floats.
    Other values are sorted once (``ordered``, where the caller has them sorted
    already) and the quantiles read from the sorted values with numpy's steps
    (:func:`percentiles_from_sorted`); a sort is cheaper than numpy's partition for
    five percentiles. The mean and standard deviation are numpy's for the values as
    float64, summed in the rows' own order (:func:`mean_and_std`; a sum in another
    order could differ in the last bits); for integers that is numpy's answer on the
    integers too, their sums being exact below 2**53.

    Parameters
    ----------
    values : numpy.ndarray
        One value per row (spot sizes, in pixels).
    counts : numpy.ndarray, optional
        The values' tally from :func:`value_counts`, where already made; None makes it
        here (where the values allow).
    ordered : numpy.ndarray, optional
        The same values sorted ascending (any dtype that holds them exactly), where
        already sorted; used only where there are no value counts.
    ordered_plainly : bool
        The caller has found the values free of NaN and negative zero (as
        :func:`plainly_ordered` would): they are not searched again.

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
    moments = None
    if counts is not None:
        quantiles = percentiles_from_counts(counts, [50, *PERCENTILES])
        present = np.flatnonzero(counts)  # the smallest and largest value, as tallied
        extremes = [present[0], present[-1]]
        if (counts.size - 1) * values.size >= 1 << 53:  # integer sums may round
            moments = values.mean(dtype=np.float64), values.std(dtype=np.float64)
    else:
        if ordered is None:
            ordered = np.sort(values.ravel())
        if ordered_plainly or plainly_ordered(values, ordered):
            quantiles = percentiles_from_sorted(ordered, [50, *PERCENTILES])
            extremes = ordered[[0, -1]].astype(np.float64).tolist()
        else:  # NaN or a negative zero: numpy's own answer
            copy = values.astype(np.float64)
            quantiles = np.percentile(copy, [50, *PERCENTILES])
            extremes = [copy.min(), copy.max()]
    if moments is None:  # integer sums below 2**53 are exact in any order
        moments = mean_and_std(values)
    numbers = [*moments, *extremes, *quantiles]
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
    value, filled in one compiled pass (no sort, no row-sized temporaries); otherwise from
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
    key_range, cells_allowed = (
        high - low + 1,
        max(COUNTING_CELLS, 2 * keys.size),
    )  # no table larger than the rows
    keys, values = keys.reshape(-1), values.reshape(-1)
    if key_range * span <= cells_allowed:
        # A row of the table for every key in the range: one pass.
        table = np.zeros(key_range * span, dtype=np.int64)
        _tally_by_group(keys, values, low, span, np.zeros(0, np.int64), table)
        table = table.reshape(key_range, span)
        present = table.any(axis=1)
        return np.flatnonzero(present) + low, table[present]
    present = np.zeros(key_range, dtype=bool)  # sparse keys: find those present first
    _mark_keys(keys, low, present)
    unique = np.flatnonzero(present)
    if len(unique) * span > cells_allowed:
        return None
    table = np.zeros(len(unique) * span, dtype=np.int64)
    _tally_by_group(keys, values, low, span, np.cumsum(present) - 1, table)
    return unique + low, table.reshape(len(unique), span)


@njit
def _mark_keys(keys, low, present):
    """present[key - low] for every key at or above ``low``."""
    for key in keys:
        shifted = np.int64(key) - low
        if shifted >= 0:
            present[shifted] = True


@njit
def _tally_by_group(keys, values, low, span, group_of, table):
    """table[g * span + value] += 1 for every row whose key is at or above ``low``,
    g being ``key - low`` or, where ``group_of`` is given, its entry there."""
    for i in range(keys.size):
        shifted = np.int64(keys[i]) - low
        if shifted < 0:
            continue  # an unknown (negative) key, left out
        group = group_of[shifted] if group_of.size else shifted
        table[group * span + np.int64(values[i])] += 1


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


# ------------------------------------------------------- quantiles from sorted values


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's ``_lerp`` (``np.percentile``'s linear interpolation), step for step."""
    difference = b - a
    result = a + difference * t
    np.subtract(b, difference * (1 - t), out=result, where=t >= 0.5)
    return result


def percentiles_from_sorted(ordered: np.ndarray, q) -> np.ndarray:
    """``np.percentile(ordered.astype(np.float64), q)`` (its default, linear
    interpolation) of values already sorted ascending: numpy's order statistics,
    indices and interpolation steps, so the same numbers to the last bit, without the
    partition numpy makes per call (a sort of the values can serve many statistics).

    Parameters
    ----------
    ordered : numpy.ndarray
        One-dimensional, sorted ascending, at least one value, such that
        :func:`plainly_ordered` holds (no NaN, no negative zero).
    q : sequence of float
        The percentiles, from 0 to 100.

    Returns
    -------
    numpy.ndarray
        float64, one value per percentile.
    """
    n = ordered.size
    virtual = np.asarray((n - 1) * np.true_divide(np.asarray(q), 100), np.float64)
    virtual = virtual.reshape(-1)
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1
    previous[above], following[above] = -1, -1
    below = virtual < 0
    previous[below], following[below] = 0, 0
    previous, following = previous.astype(np.intp), following.astype(np.intp)
    gamma = np.asarray(virtual - previous, dtype=virtual.dtype)
    return _lerp(
        ordered[previous].astype(np.float64),
        ordered[following].astype(np.float64),
        gamma,
    )


def plainly_ordered(values: np.ndarray, ordered: np.ndarray) -> bool:
    """Whether values have one bit pattern per value: no NaN (numpy's quantiles are NaN
    then) and no negative zero (which numpy's partition and a sort may place either
    side of a positive zero; numpy's vectorised float sort may even return it as a
    positive one). Where this holds, any algorithm's k-th smallest value is the same
    bits.

    Parameters
    ----------
    values : numpy.ndarray
        The values.
    ordered : numpy.ndarray
        The same values sorted ascending (NaN last, as ``np.sort`` places them): where
        they have no zero, the values are not searched.
    """
    if ordered.size == 0 or not np.issubdtype(ordered.dtype, np.floating):
        return True
    if np.isnan(ordered[-1]):
        return False
    zero = ordered.dtype.type(0)  # a Python 0 would make numpy search a float64 copy
    if np.searchsorted(ordered, zero, "left") == np.searchsorted(
        ordered, zero, "right"
    ):
        return True
    return not np.signbit(values[values == 0]).any()


# ----------------------------------------- many quantities summarised over shared groups


class KeyGroups(NamedTuple):
    """Each row's group under one or more keys (e.g. image, shell and panel), numbered
    once and shared by every quantity summarised over them.

    A row's groups are bit fields of one number: field k holds its group number under
    key k plus one (0: unknown). Kernels read a row's groups with shifts, not through
    a table of the combinations present: a million spots on 24 panels and a thousand
    images make hundreds of thousands of combinations, and each visit to such a table
    missed the cache.
    """

    fields: np.ndarray  # uint64, per row: the bit fields of its groups
    shifts: np.ndarray  # int64, per key: the lowest bit of its field
    masks: np.ndarray  # uint64, per key: its field's bits, shifted down
    keys: tuple[np.ndarray, ...]  # per key, the key of each group number, ascending
    # per key and one past the last: its first slot (slot starts[k] + g: group g of
    # key k; one slot per group of each key, counts and medians are kept per slot)
    starts: np.ndarray

    @property
    def n_slots(self) -> int:
        return int(self.starts[-1])

    @property
    def bits(self) -> int:
        """How many of the low bits of ``fields`` the groups take."""
        if not len(self.keys):
            return 0
        return int(self.shifts[-1]) + int(self.masks[-1]).bit_length()

    def field_values(self, per_value: int = 1) -> int:
        """How many field values a table of counts per field value (``per_value``
        counts each) has: all of them where they are few (FIELD_TABLE_CELLS), else 0
        (the counts are then made per key)."""
        values = 1 << self.bits
        return values if values * per_value <= FIELD_TABLE_CELLS else 0

    def groups_of(self, k: int) -> np.ndarray:
        """Each row's group number under the k-th key (-1 where unknown).

        Parameters
        ----------
        k : int
            Which key.
        """
        field = (self.fields >> np.uint64(self.shifts[k])) & self.masks[k]
        return field.astype(np.int64) - 1

    def walked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shifts, masks, first slots) of WALKED_KEYS keys, those of no key with an
        empty mask: what the compiled walks take."""
        shifts = np.zeros(WALKED_KEYS, np.int64)
        masks = np.zeros(WALKED_KEYS, np.uint64)
        shifts[: len(self.keys)], masks[: len(self.keys)] = self.shifts, self.masks
        firsts = np.zeros(WALKED_KEYS, np.int64)
        firsts[: len(self.keys)] = self.starts[:-1]
        return shifts, masks, firsts


WALKED_KEYS = 3  # the keys one compiled walk serves (image, shell and panel)
_FOLDABLE = (np.int32, np.int64, np.uint32)  # smaller integers are widened to int32


@njit
def _known_range(key):
    """The smallest and largest non-negative key (-1, -1 where there is none)."""
    low, high = -1, -1
    for row in range(key.size):
        if key[row] >= 0:
            value = np.int64(key[row])
            if low < 0 or value < low:
                low = value
            high = max(high, value)
    return low, high


@njit
def _mark(key, low, present):
    for row in range(key.size):
        if key[row] >= 0:
            present[np.int64(key[row]) - low] = True


@njit
def _add_field(fields, key, low, numbers, shift):
    """fields[row] |= (the group number of the row's key + 1) << shift (0: unknown)."""
    for row in range(fields.size):
        if key[row] >= 0:
            group = numbers[np.int64(key[row]) - low] + 1
            fields[row] |= np.uint64(group) << np.uint64(shift)


class _Numbering(NamedTuple):
    """A key's distinct known values, and how to find each row's group number: through
    ``numbers`` (a table over the key range from ``low``) or as ``digits`` (the group
    number plus one, 0 for an unknown key, per row)."""

    distinct: np.ndarray
    low: int
    numbers: np.ndarray | None
    digits: np.ndarray | None


def _numbering(key: np.ndarray, limit: int) -> _Numbering:
    if key.dtype in _FOLDABLE:
        everywhere = key.size and key.min() >= 0
        low, high = (key.min(), key.max()) if everywhere else _known_range(key)
        low, high = int(low), int(high)
        if low >= 0 and high - low < limit:  # numbered through a table of the range
            present = np.zeros(high - low + 1, bool)
            _mark(key, low, present)
            numbers = np.cumsum(present, dtype=np.int64) - 1
            return _Numbering(np.flatnonzero(present) + low, low, numbers, None)
    known = key >= 0
    unique, inverse = np.unique(key[known], return_inverse=True)
    digits = np.zeros(key.size, np.int64)
    digits[known] = inverse.reshape(-1) + 1
    return _Numbering(unique, 0, None, digits)


FIELD_BITS = 64  # the bits of a row's groups; keys needing more are refused
# Counts per field value (one count a row, spread over the slots once) where a table of
# every field value has at most this many cells: few groups, each counted often.
FIELD_TABLE_CELLS = 1 << 16


def key_groups(keys: list[np.ndarray], n: int) -> KeyGroups:
    """Number the distinct non-negative keys of each key array 0, 1, ... in ascending
    order (negative keys are unknown: left out of every group), and put each row's
    group numbers into bit fields of one number. A summary walks rows in value order;
    it reads each row's groups from that number with shifts.

    Parameters
    ----------
    keys : list of numpy.ndarray
        Per key, one entry per row (image, shell or panel numbers).
    n : int
        The number of rows.

    Returns
    -------
    KeyGroups
        The rows' bit fields, where each key's field lies, and each key's distinct
        values.

    Raises
    ------
    ValueError
        Where a key array has not one entry per row, or the keys have so many groups
        that their numbers do not fit in 64 bits.
    """
    fields = np.zeros(n, np.uint64)
    shifts, masks, distinct = [], [], []
    shift = 0
    limit = max(COUNTING_CELLS, 2 * n)
    for key in keys:
        key = np.asarray(key)
        if key.shape != (n,):
            raise ValueError(f"group keys must have one entry per row ({n})")
        if key.dtype.kind in "iu" and key.dtype.itemsize < 4:
            key = key.astype(np.int32)  # one compiled kernel for every small type
        numbering = _numbering(key, limit)
        bits = len(numbering.distinct).bit_length()  # a field holds 0 ... groups
        if shift + bits > FIELD_BITS:
            raise ValueError(
                f"the {len(keys)} group keys have too many groups to number together"
            )
        if numbering.numbers is not None:
            _add_field(fields, key, numbering.low, numbering.numbers, shift)
        else:
            fields |= numbering.digits.astype(np.uint64) << np.uint64(shift)
        shifts.append(shift)
        masks.append((1 << bits) - 1)
        distinct.append(numbering.distinct)
        shift += bits
    starts = np.cumsum([0, *map(len, distinct)], dtype=np.int64)
    return KeyGroups(
        fields,
        np.array(shifts, np.int64),
        np.array(masks, np.uint64),
        tuple(distinct),
        starts,
    )


class QuantitySummary(NamedTuple):
    """One quantity's statistics over the chosen rows, and its medians per group."""

    statistics: dict  # as summary_statistics
    values: np.ndarray  # the kept rows' values
    ordered: np.ndarray | None  # the same sorted, where real and free of NaN
    counts: np.ndarray | None  # integer values: how many are 0, 1, 2, ... (else None)
    medians: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per key: key, n, median


_SIGN = 0x80000000
_EXPONENT = 0x7F800000


@njit(inline="always")
def _slot_of(field, shift, mask, first):
    """The slot of a row's group under one key, from the row's group fields (the key's
    field at ``shift``, ``mask`` wide; its groups' slots from ``first``), or -1 where
    the group is unknown: the one statement of that rule for every kernel below.
    Scalars only, so that a call per row costs nothing."""
    group = np.int64((field >> np.uint64(shift)) & mask)
    return first + group - 1 if group else -1


@njit
def _spread(per_field, shifts, masks, firsts, counts):
    """counts[firsts[k] + g - 1] += per_field[f] for the group g of each key k in
    field value f (0: unknown, not counted): counts per field value made counts per
    slot."""
    for field in range(per_field.shape[0]):
        if per_field[field].any():
            for k in range(shifts.size):
                slot = _slot_of(np.uint64(field), shifts[k], masks[k], firsts[k])
                if slot >= 0:
                    counts[slot] += per_field[field]


@njit
def _pack_float32(
    bits, kept, fields, shifts, masks, firsts, packed, counts, chosen, per_field
):
    """For each kept row, in row order: its float32 value's bits turned into an unsigned
    integer of the same order (sign bit set on positives, every bit inverted on
    negatives) in the high half and the row's group fields (at most 32 bits) in the
    low half, and the bits themselves into ``chosen`` (``values[kept]``, without
    numpy's pass of its own); counts[s] the finite values of slot s (group g of key k
    being slot firsts[k] + g - 1; the WALKED_KEYS keys of :meth:`KeyGroups.walked`).
    Where ``per_field`` has a place for every field value, the finite values are
    counted there, one count a row, and spread over the slots at the end; otherwise
    once per key. Returns whether the values are free of NaN and negative zero."""
    sign, low_half = np.uint64(_SIGN), np.uint64(0xFFFFFFFF)
    exponent, magnitude = np.uint64(_EXPONENT), np.uint64(0x7FFFFFFF)
    by_field = per_field.size > 0
    m, plain = 0, True
    for row in range(bits.size):
        if not kept[row]:
            continue
        pattern = np.uint64(bits[row])
        if pattern & magnitude > exponent or pattern == sign:  # NaN or -0.0
            plain = False
        ordered = pattern ^ low_half if pattern & sign else pattern | sign
        field = fields[row]
        packed[m] = (ordered << np.uint64(32)) | field
        chosen[m] = bits[row]
        m += 1
        if pattern & exponent == exponent:  # not finite
            continue
        if by_field:
            per_field[field] += 1
            continue
        for k in range(WALKED_KEYS):
            slot = _slot_of(field, shifts[k], masks[k], firsts[k])
            if slot >= 0:
                counts[slot] += 1
    if by_field:
        _spread(per_field.reshape(-1, 1), shifts, masks, firsts, counts.reshape(-1, 1))
    return plain


@njit
def _count_finite(values, kept, fields, shifts, masks, starts, counts):
    """counts[s]: the kept rows of slot s with a finite value."""
    for row in range(values.size):
        if kept[row] and np.isfinite(values[row]):
            for k in range(shifts.size):
                slot = _slot_of(fields[row], shifts[k], masks[k], starts[k])
                if slot >= 0:
                    counts[slot] += 1


@njit
def _unpack_and_walk(
    packed, bits, values, shifts, masks, firsts, lower_rank, upper_rank, lower, upper
):
    """The sorted keys of _pack_float32 apart, and their groups' middle values, in one
    ascending walk: bits[i] the float32 bits of key i (``values`` their float32 view),
    and in lower and upper the lower_rank-th and upper_rank-th smallest finite value of
    each slot (a slot without a value has lower_rank -1). The groups of the
    WALKED_KEYS keys are read from the low half (see :func:`_pack_float32`). NaN is
    not among the keys (refused when packing). The keys are visited in a loop of the
    constant WALKED_KEYS, which the compiler unrolls (a loop over a count known only
    when running took a third longer), each visit written out, as in
    :func:`_walk_sorted`: a helper taking the arrays, even inlined, made the
    summaries of a million rows 2.7 times as slow."""
    sign, low_half = np.uint64(_SIGN), np.uint64(0xFFFFFFFF)
    exponent = np.uint32(_EXPONENT)
    seen = np.zeros(lower_rank.size, np.int64)
    for i in range(packed.size):
        key = packed[i]
        ordered = key >> np.uint64(32)
        pattern = np.uint32(ordered ^ sign if ordered & sign else ordered ^ low_half)
        bits[i] = pattern
        if pattern & exponent == exponent:  # an infinity: in no group's middle
            continue
        field = key & low_half
        value = values[i]
        for k in range(WALKED_KEYS):  # a constant count: unrolled by the compiler
            slot = _slot_of(field, shifts[k], masks[k], firsts[k])
            if slot >= 0:
                rank = seen[slot]
                seen[slot] = rank + 1
                if rank == lower_rank[slot]:
                    lower[slot] = value
                if rank == upper_rank[slot]:
                    upper[slot] = value


@njit
def _walk_sorted(
    fields, ordered, shifts, masks, starts, lower_rank, upper_rank, lower, upper
):
    """Sorted values and their rows' group fields, in ascending order: in lower and
    upper the lower_rank-th and upper_rank-th smallest finite value of each slot (a
    slot without a value has lower_rank -1). One walk per key, each ending once every
    group of its key has both: a key of one group stops at the middle. The visit of a
    value is written out here: a helper taking the arrays would cost reference
    counting on every value."""
    first, stop = 0, ordered.size  # the finite values, between -inf and +inf
    while first < stop and not np.isfinite(ordered[first]):
        first += 1
    while stop > first and not np.isfinite(ordered[stop - 1]):
        stop -= 1
    seen = np.zeros(lower_rank.size, np.int64)
    for k in range(shifts.size):
        pending = 0
        for slot in range(starts[k], starts[k + 1]):
            if lower_rank[slot] >= 0:
                pending += 1
        for i in range(first, stop):
            if pending == 0:
                break
            slot = _slot_of(fields[i], shifts[k], masks[k], starts[k])
            if slot >= 0:
                rank = seen[slot]
                seen[slot] = rank + 1
                if rank == lower_rank[slot]:
                    lower[slot] = ordered[i]
                if rank == upper_rank[slot]:
                    upper[slot] = ordered[i]
                    pending -= 1


@njit
def _tally(values, kept, fields, shifts, masks, starts, overall, tables, per_field):
    """overall[v]: the kept rows of value v; tables[s, v]: those of slot s (values in
    [0, overall.size)). Where ``per_field`` has a row for every field value, the rows
    are counted there, one count a row, and spread over the slots at the end;
    otherwise once per key."""
    by_field = per_field.shape[0] > 0
    for row in range(values.size):
        if kept[row]:
            value = values[row]
            overall[value] += 1
            if by_field:
                per_field[fields[row], value] += 1
                continue
            for k in range(shifts.size):
                slot = _slot_of(fields[row], shifts[k], masks[k], starts[k])
                if slot >= 0:
                    tables[slot, value] += 1
    if by_field:
        _spread(per_field, shifts, masks, starts, tables)


def _per_key(groups: KeyGroups, counts: np.ndarray, medians: np.ndarray) -> list:
    """Per key: the keys, counts and medians of its groups with a value (from the
    counts and medians of every slot)."""
    found = []
    for k, distinct in enumerate(groups.keys):
        first = groups.starts[k]
        present = np.flatnonzero(counts[first : first + len(distinct)])
        found.append(
            (distinct[present], counts[first + present], medians[first + present])
        )
    return found


def work_array(n: int) -> np.ndarray:
    """A work array for :func:`grouped_summary` of ``n`` rows (20 bytes a row: the
    packed keys, their spare for the sort, the sorted values), to be passed to every
    call: row-sized allocations cost more than the work where several are alive at
    once.

    Parameters
    ----------
    n : int
        The number of rows.
    """
    return np.empty(2 * n + (n + 1) // 2, np.uint64)


def grouped_summary(
    values: np.ndarray,
    kept: np.ndarray,
    groups: KeyGroups,
    scratch: np.ndarray | None = None,
) -> QuantitySummary:
    """:func:`summary_statistics` of the kept rows' values, and per key of ``groups``
    each group's median of the kept rows' finite values (numpy's median: the mean of
    the two middle values for an even count), groups without such a value left out:
    the numbers :func:`summary_statistics`, :func:`group_statistics` (integer values)
    and :func:`group_medians` (real ones) give, for every key at once.

    Integer values are tallied per value and group in one pass. float32 values are
    sorted once, by the bytes of the value, as 64-bit integers with the value's bits
    above the row's group fields: the sorted values give the quantiles, and
    one walk through them in ascending order finds the middle values of every group of
    every key (equal values are equal, whichever rows they come from). float64
    values are sorted by an argsort and walked likewise. Values with NaN or negative
    zero (whose place among equal values numpy's selection leaves to its algorithm),
    and values of other types, take the plain functions.

    Parameters
    ----------
    values : numpy.ndarray
        One value per row.
    kept : numpy.ndarray
        bool, one per row: the rows summarised.
    groups : KeyGroups
        From :func:`key_groups`, for the same rows.
    scratch : numpy.ndarray, optional
        From :func:`work_array` for at least as many rows, overwritten (the sorted
        values returned may lie in it: valid until the next call). None allocates.

    Returns
    -------
    QuantitySummary
        The statistics, the kept values (also sorted, where real and free of NaN),
        their counts where they are integers (for histograms), and per key the keys,
        counts and medians of its groups, keys ascending.
    """
    values, kept = np.asarray(values), np.asarray(kept, dtype=bool)
    if scratch is None or scratch.size < work_array(values.size).size:
        scratch = work_array(values.size)
    summary = None
    if values.dtype in (np.int32, np.int64):
        summary = _tallied_summary(values, kept, groups)
    elif values.dtype in (np.float32, np.float64):
        summary = _sorted_summary(values, kept, groups, scratch)
    return _plain_summary(values, kept, groups) if summary is None else summary


def _sorted_summary(
    values: np.ndarray, kept: np.ndarray, groups: KeyGroups, scratch: np.ndarray
) -> QuantitySummary | None:
    """The summary of real values; None where they have NaN or negative zero."""
    walked = groups.bits <= 32 and len(groups.keys) <= WALKED_KEYS
    if values.dtype == np.float32 and walked and groups.keys:
        return _packed_summary(np.ascontiguousarray(values), kept, groups, scratch)
    chosen = values[kept]
    if not groups.keys:
        ordered = np.sort(chosen)
        statistics = summary_statistics(chosen, ordered=ordered)
        if ordered.size and np.isnan(ordered[-1]):
            ordered = None
        return QuantitySummary(statistics, chosen, ordered, None, [])
    counts = np.zeros(groups.n_slots, np.int64)  # finite values per slot
    order = np.argsort(chosen)
    ordered = chosen[order]
    if not plainly_ordered(chosen, ordered):
        return None
    layout = (groups.shifts, groups.masks, groups.starts)
    _count_finite(values, kept, groups.fields, *layout, counts)
    fields = groups.fields[kept][order]
    del order
    lower, upper = np.zeros(counts.size), np.zeros(counts.size)
    ranks = (counts - 1) // 2, counts // 2
    _walk_sorted(fields, ordered, *layout, *ranks, lower, upper)
    return _with_medians(chosen, ordered, groups, counts, lower, upper)


def _packed_summary(
    values: np.ndarray, kept: np.ndarray, groups: KeyGroups, scratch: np.ndarray
) -> QuantitySummary | None:
    """The summary of float32 values by their packed keys (see grouped_summary); None
    where they have NaN or negative zero."""
    counts = np.zeros(groups.n_slots, np.int64)  # finite values per slot
    chosen = np.empty(np.count_nonzero(kept), np.float32)
    packed = scratch[: chosen.size]
    walked = groups.walked()
    arguments = (groups.fields, *walked, packed, counts, chosen.view(np.uint32))
    per_field = np.zeros(groups.field_values(), np.int64)
    if not _pack_float32(values.view(np.uint32), kept, *arguments, per_field):
        return None
    # by the values alone: rows of equal values may come in any order
    packed = sorted_uint64(packed, scratch[values.size : 2 * values.size], 4)
    bits = scratch.view(np.uint32)[4 * values.size :][: packed.size]  # after both
    ordered = bits.view(np.float32)
    lower, upper = (np.zeros(counts.size, np.float32) for _ in range(2))
    ranks = (counts - 1) // 2, counts // 2
    _unpack_and_walk(packed, bits, ordered, *walked, *ranks, lower, upper)
    return _with_medians(chosen, ordered, groups, counts, lower, upper)


def _with_medians(chosen, ordered, groups, counts, lower, upper) -> QuantitySummary:
    """The summary from the kept values, sorted and free of NaN and negative zero, and
    each slot's lower and upper middle value."""
    lower, upper = lower.astype(np.float64), upper.astype(np.float64)
    medians = np.where(counts % 2 == 1, lower, (lower + upper) / 2)
    return QuantitySummary(
        summary_statistics(chosen, ordered=ordered, ordered_plainly=True),
        chosen,
        ordered,
        None,
        _per_key(groups, counts, medians),
    )


def _tallied_summary(
    values: np.ndarray, kept: np.ndarray, groups: KeyGroups
) -> QuantitySummary | None:
    chosen = values[kept]
    if chosen.size == 0:
        return None
    lowest, highest = _extremes(chosen)
    if lowest < 0 or highest >= COUNTING_CELLS:
        return None
    span = int(highest) + 1
    if groups.n_slots * span > max(COUNTING_CELLS, 2 * values.size):
        return None
    overall = np.zeros(span, np.int64)
    tables = np.zeros((groups.n_slots, span), np.int64)
    layout = (groups.fields, groups.shifts, groups.masks, groups.starts)
    per_field = np.zeros((groups.field_values(span), span), np.int64)
    _tally(np.ascontiguousarray(values), kept, *layout, overall, tables, per_field)
    counts = tables.sum(axis=1)
    present = np.flatnonzero(counts)
    medians = np.zeros(counts.size)
    medians[present] = _groups_from_tally(present, tables[present]).median
    return QuantitySummary(
        summary_statistics(chosen, overall),
        chosen,
        None,
        overall,
        _per_key(groups, counts, medians),
    )


def _plain_summary(
    values: np.ndarray, kept: np.ndarray, groups: KeyGroups
) -> QuantitySummary:
    """The plain functions, one key at a time (the reference for the faster paths)."""
    chosen = values[kept]
    medians = []
    for k, distinct in enumerate(groups.keys):
        numbers = groups.groups_of(k)
        if np.issubdtype(values.dtype, np.integer):
            found = group_statistics(numbers[kept], chosen, skip_negative_keys=True)
            which, n, middle = map(np.asarray, (found.key, found.n, found.median))
        else:
            which, n, middle = group_medians(
                group_order(numbers), np.where(kept, values, np.nan)
            )
        medians.append((distinct[which.astype(np.intp)], n, middle))
    return QuantitySummary(summary_statistics(chosen), chosen, None, None, medians)
