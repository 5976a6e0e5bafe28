"""Sorting unsigned 64-bit keys by their bytes.

The summaries sort a million packed keys per quantity (a value above its row's group)
and the search for tables holding the same spots sorts every centroid key. numpy
sorts by comparisons, whose cost grows with n log n; a least-significant-digit radix
sort moves each key once per byte, and skips every byte that is the same in all the
keys (the high bytes of small numbers). The result is the array ``np.sort`` gives,
element for element: equal keys are equal bits. Where only the high bytes matter (a
value above its row's group, when only the values' order is wanted), the low bytes can
be left out of the order: the sort is stable, so keys equal in their high bytes keep
the order they came in.
"""

from __future__ import annotations

import numpy as np

from ..jit import njit

_BYTES = 8
_VALUES = 256


@njit
def _radix_sort(keys, spare, from_byte):
    """Sort ``keys`` by their bytes from ``from_byte`` up, least significant first,
    moving them between ``keys`` and ``spare``; returns whichever of the two holds
    them sorted."""
    n = keys.size
    counts = np.zeros((_BYTES, _VALUES), np.int64)
    mask = np.uint64(_VALUES - 1)
    for i in range(n):
        key = keys[i]
        for byte in range(from_byte, _BYTES):
            counts[byte, (key >> np.uint64(8 * byte)) & mask] += 1
    source, target = keys, spare
    starts = np.empty(_VALUES, np.int64)
    for byte in range(from_byte, _BYTES):
        if counts[byte].max() == n:  # the same in every key: the order stands
            continue
        total = 0
        for value in range(_VALUES):
            starts[value] = total
            total += counts[byte, value]
        shift = np.uint64(8 * byte)
        for i in range(n):
            key = source[i]
            value = (key >> shift) & mask
            target[starts[value]] = key
            starts[value] += 1
        source, target = target, source
    return source


def sorted_uint64(
    keys: np.ndarray, spare: np.ndarray | None = None, from_byte: int = 0
) -> np.ndarray:
    """``keys`` sorted ascending, in place: the array returned is ``keys`` itself or
    ``spare``, whichever the last pass wrote (the other is left in pieces).

    Parameters
    ----------
    keys : numpy.ndarray
        uint64, contiguous; overwritten.
    spare : numpy.ndarray, optional
        uint64, contiguous, at least as long as ``keys``; overwritten. None allocates.
    from_byte : int
        The lowest byte (0-7) of the order: keys equal in their bytes from this one up
        keep the order they came in. 0 orders the whole keys.

    Returns
    -------
    numpy.ndarray
        The sorted keys: ``keys``, or the first ``keys.size`` elements of ``spare``.
    """
    if keys.dtype != np.uint64 or not keys.flags.c_contiguous:
        raise ValueError("sorted_uint64 sorts a contiguous uint64 array")
    if spare is None:
        spare = np.empty_like(keys)
    elif spare.dtype != np.uint64 or spare.size < keys.size:
        raise ValueError("the spare array must be uint64 and as long as the keys")
    if not 0 <= from_byte < _BYTES:
        raise ValueError("from_byte must be 0 to 7")
    if keys.size < 2:
        return keys
    return _radix_sort(keys, spare[: keys.size], from_byte)
