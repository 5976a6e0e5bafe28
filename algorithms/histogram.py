"""``scitbx`` ``flex.histogram``, exactly, vectorised and mergeable (doc/dials_facts.md §4).

Slot width ``w = (data_max - data_min) / n_slots``. A value more than ``1e-4 * w`` outside
[data_min, data_max] is counted out of range; otherwise ``d = value - data_min`` goes to
slot 0 if ``d == 0`` or ``d < w``, else to ``int(d / w)`` clamped to the last slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..jit import njit

RELATIVE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Histogram:
    data_min: float
    data_max: float
    counts: np.ndarray
    n_out_of_range: int = 0

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    @property
    def bin_width(self) -> float:
        return (self.data_max - self.data_min) / self.n_bins

    @property
    def bin_centers(self) -> np.ndarray:
        """As ``flex.histogram.slot_centers()``: edges accumulated one width at a time."""
        steps = np.full(self.n_bins + 1, self.bin_width)
        steps[0] = self.data_min
        edges = np.cumsum(steps)
        return (edges[1:] + edges[:-1]) / 2

    @property
    def n_in_range(self) -> int:
        return int(self.counts.sum())

    def __add__(self, other: "Histogram") -> "Histogram":
        """Histograms over the same slots add exactly (as scitbx's ``update``)."""
        if (self.data_min, self.data_max, self.n_bins) != (
            other.data_min,
            other.data_max,
            other.n_bins,
        ):
            raise ValueError(
                "only histograms with the same range and number of bins can be merged"
            )
        return Histogram(
            self.data_min,
            self.data_max,
            self.counts + other.counts,
            self.n_out_of_range + other.n_out_of_range,
        )


def histogram(
    values: np.ndarray,
    data_min: float,
    data_max: float,
    n_bins: int,
    weights: np.ndarray | None = None,
    is_sorted: bool = False,
) -> Histogram:
    """Bin ``values`` exactly as ``flex.histogram(values, data_min, data_max, n_bins)``;
    with integer ``weights``, each value counts that many times (so the distinct sizes
    and their counts give the histogram of every row).

    Parameters
    ----------
    values : numpy.ndarray
        The values to bin (any shape; flattened, compared as float64).
    data_min, data_max : float
        The histogram's range; ``data_max`` must be greater than ``data_min``.
    n_bins : int
        The number of slots, at least 1.
    weights : numpy.ndarray, optional
        Integer, one per value: how many times each value counts. None counts each
        value once.
    is_sorted : bool
        The values (one-dimensional, unweighted) are sorted ascending and free of
        NaN: each slot's first value is then found by bisection, with the same rule,
        instead of binning every value.

    Returns
    -------
    Histogram
        The counts per slot and how many values (or weights) fell out of range.

    Raises
    ------
    ValueError
        Where ``n_bins`` is below 1 or ``data_max`` is not above ``data_min``.
    """
    if n_bins < 1:
        raise ValueError(f"the number of bins must be at least 1, not {n_bins}")
    data_min, data_max = float(data_min), float(data_max)
    if not data_max > data_min:
        raise ValueError(
            f"data_max ({data_max:g}) must be greater than data_min ({data_min:g})"
        )
    if weights is None:
        values = np.asarray(values)
        if values.dtype.kind not in "iuf":
            values = values.astype(np.float64)
        counts = np.zeros(n_bins, dtype=np.int64)
        binning = _bin_sorted if is_sorted else _bin
        outside = binning(values.ravel(), data_min, data_max, n_bins, counts)
        return Histogram(data_min, data_max, counts, int(outside))
    values = np.asarray(values, dtype=np.float64).ravel()
    width = (data_max - data_min) / n_bins
    tolerance = width * RELATIVE_TOLERANCE
    outside = (values < data_min - tolerance) | (values > data_max + tolerance)
    offsets = values[~outside] - data_min
    slots = np.zeros(offsets.shape, dtype=np.int64)
    beyond_first = (offsets != 0) & (offsets >= width)
    slots[beyond_first] = np.minimum(
        (offsets[beyond_first] / width).astype(np.int64), n_bins - 1
    )
    weights = np.asarray(weights, dtype=np.int64).ravel()
    counts = np.zeros(n_bins, dtype=np.int64)
    np.add.at(
        counts, slots, weights[~outside]
    )  # integers throughout: exact at any count
    return Histogram(data_min, data_max, counts, int(weights[outside].sum()))


@njit(inline="always")
def _slot(value, data_min, width, n_bins):
    """flex.histogram's slot of an in-range value (never smaller for a larger value:
    subtraction, division and truncation each keep the order)."""
    offset = value - data_min
    if offset != 0 and offset >= width:
        return min(np.int64(offset / width), n_bins - 1)
    return 0


@njit
def _bin(values, data_min, data_max, n_bins, counts):
    """Count each value (as float64) into its slot as flex.histogram does (see the
    module's text; a NaN goes to slot 0, as the vectorised rule puts it); returns how
    many are out of range."""
    width = (data_max - data_min) / n_bins
    tolerance = width * RELATIVE_TOLERANCE
    below, above = data_min - tolerance, data_max + tolerance
    outside = 0
    for i in range(values.size):
        value = np.float64(values[i])
        if value < below or value > above:
            outside += 1
        else:
            counts[_slot(value, data_min, width, n_bins)] += 1
    return outside


@njit
def _bin_sorted(ordered, data_min, data_max, n_bins, counts):
    """As _bin for values sorted ascending without NaN: the in-range values are a
    stretch of them whose slots never decrease, so each slot's first value is found
    by bisection."""
    width = (data_max - data_min) / n_bins
    tolerance = width * RELATIVE_TOLERANCE
    below, above = data_min - tolerance, data_max + tolerance
    low, high = 0, ordered.size  # first value not below the range
    while low < high:
        middle = (low + high) // 2
        if np.float64(ordered[middle]) < below:
            low = middle + 1
        else:
            high = middle
    start, high = low, ordered.size  # first value above the range
    while low < high:
        middle = (low + high) // 2
        if np.float64(ordered[middle]) > above:
            high = middle
        else:
            low = middle + 1
    stop = low
    for slot in range(n_bins - 1):  # the first value in a later slot
        low, high = start, stop
        while low < high:
            middle = (low + high) // 2
            if _slot(np.float64(ordered[middle]), data_min, width, n_bins) > slot:
                high = middle
            else:
                low = middle + 1
        counts[slot] = low - start
        start = low
    counts[n_bins - 1] = stop - start
    return ordered.size - (stop - start) - counts[: n_bins - 1].sum()


def automatic_range(values: np.ndarray) -> tuple[float, float]:
    """``flex.histogram``'s own range (the data's min and max), widened to one unit where
    every value is the same, so that bins have a width.

    Parameters
    ----------
    values : numpy.ndarray
        The values to be binned.

    Returns
    -------
    tuple of float
        ``(data_min, data_max)``; ``(0.0, 1.0)`` where there are no values.
    """
    values = np.asarray(values)
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low, low + 1.0)


CROWDED_BINS = 3  # "most spots fall into the first bins": this many bins
CROWDED_FRACTION = 0.8  # ... holding at least this fraction of the spots


def crowded_share(binned: Histogram) -> float | None:
    """The fraction of the binned values in the first CROWDED_BINS bins, where it is at
    least CROWDED_FRACTION (the range, such as the tutorial's 0..1000 for spots of ten
    pixels, crowds them into a few bins and shows nothing of their distribution);
    None otherwise.

    Parameters
    ----------
    binned : Histogram
        The histogram shown.
    """
    total = int(binned.counts.sum())
    first = int(binned.counts[:CROWDED_BINS].sum())
    if not total or first < CROWDED_FRACTION * total:
        return None
    return first / total


def whole_pixel_counts(sizes: np.ndarray, percentile: float = 99) -> np.ndarray:
    """How many sizes are 0, 1, 2, ... pixels, up to the ``percentile``-th (the tail
    beyond it would stretch the picture).

    Parameters
    ----------
    sizes : numpy.ndarray
        Whole-pixel sizes.
    percentile : float
        Where the counts stop.
    """
    sizes = np.asarray(sizes)
    if not sizes.size:
        return np.zeros(0, np.int64)
    return np.bincount(
        sizes[(sizes >= 0) & (sizes <= np.percentile(sizes, percentile))]
    )
