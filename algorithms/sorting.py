"""Sorting unsigned 64-bit keys by their bytes.

The summaries sort a million packed keys per quantity (a value above its row's group)
and the search for tables holding the same spots sorts every centroid key. numpy
sorts by comparisons, whose cost grows with n log n; a radix sort moves each key once
per digit. Many keys are first split by the top 16 of the bits in which they differ
(one pass through memory), and each part, small enough for the cache, is then sorted
by its remaining bytes, least significant first, skipping every byte that is the same
in all its keys (the high bytes of small numbers). A least-significant-digit sort of
the whole array would move every key through memory once per byte instead.

The result is the array ``np.sort`` gives, element for element: equal keys are equal
bits. Where only the high bytes matter (a value above its row's group, when only the
values' order is wanted), the low bytes can be left out of the order: every pass is
stable, so keys equal in their high bytes keep the order they came in.
"""

from __future__ import annotations

import numpy as np

from ..jit import njit

_BYTES = 8
_VALUES = 256
SPLIT_FROM_KEYS = 1 << 16  # from this many keys, split first by the top bits
_SPLIT_BITS = 16  # the bits of that first digit, at most
_INSERTION_KEYS = 32  # parts of at most this many keys are sorted by insertion


@njit
def _radix_sort(keys, spare, from_byte, to_byte, counts):
    """Sort ``keys`` by their bytes ``from_byte`` to ``to_byte - 1``, least significant
    first, moving them between ``keys`` and ``spare``; returns whether they end in
    ``keys`` (else in ``spare``). ``counts`` is a (8, 256) int64 work table."""
    n = keys.size
    counts[from_byte:to_byte] = 0
    mask = np.uint64(_VALUES - 1)
    for i in range(n):
        key = keys[i]
        for byte in range(from_byte, to_byte):
            counts[byte, (key >> np.uint64(8 * byte)) & mask] += 1
    source, target, in_keys = keys, spare, True
    for byte in range(from_byte, to_byte):
        if counts[byte].max() == n:  # the same in every key: the order stands
            continue
        total = 0
        for value in range(_VALUES):  # counts become each value's next place
            count = counts[byte, value]
            counts[byte, value] = total
            total += count
        shift = np.uint64(8 * byte)
        for i in range(n):
            key = source[i]
            value = (key >> shift) & mask
            target[counts[byte, value]] = key
            counts[byte, value] += 1
        source, target, in_keys = target, source, not in_keys
    return in_keys


@njit
def _insertion_sort(keys, shift):
    """Sort a few ``keys`` in place by their bits from ``shift`` up, stably."""
    for i in range(1, keys.size):
        key = keys[i]
        high = key >> shift
        j = i - 1
        while j >= 0 and keys[j] >> shift > high:
            keys[j + 1] = keys[j]
            j -= 1
        keys[j + 1] = key


@njit
def _split_sort(keys, spare, from_byte):
    """Sort ``keys`` by their bytes from ``from_byte`` up: split them into ``spare`` by
    the top (at most) 16 bits in which they differ, then sort each part there by the
    bytes below that digit. Returns whichever of the two holds them sorted."""
    n = keys.size
    low = np.uint64(8 * from_byte)
    first = keys[0] >> low
    differing = np.uint64(0)
    for i in range(n):
        differing |= (keys[i] >> low) ^ first
    if differing == 0:  # equal in every byte of the order
        return keys
    top = 8 * from_byte
    while differing > np.uint64(1):
        differing >>= np.uint64(1)
        top += 1
    shift = max(top - _SPLIT_BITS + 1, 8 * from_byte)
    digit_shift, digit_mask = np.uint64(shift), np.uint64((1 << (top - shift + 1)) - 1)
    starts = np.zeros((1 << (top - shift + 1)) + 1, np.int64)
    for i in range(n):
        starts[((keys[i] >> digit_shift) & digit_mask) + 1] += 1
    for digit in range(starts.size - 1):
        starts[digit + 1] += starts[digit]
    places = starts[:-1].copy()
    for i in range(n):
        key = keys[i]
        digit = (key >> digit_shift) & digit_mask
        spare[places[digit]] = key
        places[digit] += 1
    # The bytes below the digit (a byte it shares holds bits equal in every key of
    # a part: the digit's own, or those above it, the same in all keys).
    to_byte = (shift + 7) // 8
    if to_byte <= from_byte:
        return spare
    counts = np.empty((_BYTES, _VALUES), np.int64)
    for digit in range(starts.size - 1):
        begin, end = starts[digit], starts[digit + 1]
        if end - begin < 2:
            continue
        part = spare[begin:end]
        if end - begin <= _INSERTION_KEYS:
            _insertion_sort(part, low)
            continue
        own = keys[begin:end]
        if not _radix_sort(part, own, from_byte, to_byte, counts):
            part[:] = own
    return spare


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
    if keys.size >= SPLIT_FROM_KEYS:
        return _split_sort(keys, spare[: keys.size], from_byte)
    spare, counts = spare[: keys.size], np.empty((_BYTES, _VALUES), np.int64)
    return keys if _radix_sort(keys, spare, from_byte, _BYTES, counts) else spare
