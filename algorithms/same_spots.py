"""Which reflection tables hold the same spots, from their observed centroids alone.

A DIALS working folder holds the same spots at several stages (``strong.refl`` ->
``indexed.refl`` -> ``refined.refl`` -> ``integrated.refl``), and DIALS copies each
observed centroid (``xyzobs.px.value``) exactly from stage to stage. Two tables hold the
same spots when at least ``MIN_SHARED_CENTROIDS`` of their centroids are equal, and
these make at least ``SHARED_FRACTION`` of the smaller table's. Centroids are equal
when they round to the same multiple of ``CENTROID_QUANTUM`` in x, y and z. Left out,
as they recur in unrelated tables: centroids at (0, 0, 0) or not finite (unobserved
rows), those on the half-pixel grid in both x and y (single-pixel spots, hot pixels),
and any centroid found in more than ``MAX_TABLES_PER_CENTROID`` tables. The fraction is
10% rather than a half because ``dials.integrate`` re-centroids most spots: the
centroid_test_data ``integrated.refl`` keeps 269 of the 654 centroids of
``indexed.refl`` exactly, and none at random.

Each centroid is hashed into one 64-bit key, and keys shared between tables are found
with one sort over all of them; only pairs of tables sharing a key are counted, so
100,000 stills cost one sort of their spots, not a comparison of every pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from ..jit import njit
from .sorting import sorted_uint64

CENTROID_QUANTUM = 1e-6  # px
MIN_SHARED_CENTROIDS = 3
SHARED_FRACTION = 0.1
MAX_TABLES_PER_CENTROID = 64


def centroid_keys(xyz: np.ndarray) -> np.ndarray:
    """One 64-bit key per distinct comparable centroid (unobserved, non-finite and
    half-pixel-grid centroids left out), sorted.

    Parameters
    ----------
    xyz : numpy.ndarray
        A table's ``xyzobs.px.value`` column, shape (n, 3).

    Returns
    -------
    numpy.ndarray
        uint64, sorted, distinct.
    """
    xyz = np.ascontiguousarray(xyz, dtype=np.float64).reshape(-1, 3)
    buffer = np.empty(len(xyz), np.uint64)
    keys = buffer[: _centroid_keys(xyz, CENTROID_QUANTUM, buffer)]
    keys.sort()  # in place: np.unique's work without its copies and masks
    distinct = keys[: _distinct_sorted(keys)]
    # a view keeps the buffer of every row alive: copied where most of it is waste
    return distinct.copy() if distinct.size < buffer.size // 2 else distinct


@njit
def _distinct_sorted(values):
    """Move each distinct value of the sorted ``values`` to the front, in order;
    returns how many there are."""
    n = min(values.size, 1)
    for i in range(1, values.size):
        if values[i] != values[n - 1]:
            values[n] = values[i]
            n += 1
    return n


@njit
def _centroid_keys(xyz, quantum, keys):
    """The key of each comparable centroid into ``keys``; returns how many."""
    n = 0
    for i in range(xyz.shape[0]):
        x, y, z = xyz[i, 0], xyz[i, 1], xyz[i, 2]
        if not (abs(x) < 1e9 and abs(y) < 1e9 and abs(z) < 1e9):  # NaN fails too
            continue
        if x == 0 and y == 0 and z == 0:  # unobserved
            continue
        if (x * 2) % 1 == 0 and (y * 2) % 1 == 0:  # half-pixel grid: 1-pixel spots
            continue
        key = np.uint64(np.int64(np.round(x / quantum))) * np.uint64(0x9E3779B97F4A7C15)
        key ^= np.uint64(np.int64(np.round(y / quantum))) * np.uint64(
            0xC2B2AE3D27D4EB4F
        )
        key ^= np.uint64(np.int64(np.round(z / quantum))) * np.uint64(
            0x165667B19E3779F9
        )
        key ^= key >> np.uint64(29)
        key *= np.uint64(0xBF58476D1CE4E5B9)
        key ^= key >> np.uint64(32)
        keys[n] = key
        n += 1
    return n


@dataclass
class ComparedTable:
    """What the comparison needs of one table: its place among the inputs, whether the
    user named it (or the program found it), its centroid keys, and what decides
    which of two tables is kept (its columns, rows and experiment identifiers)."""

    position: int
    path: str
    named: bool
    keys: np.ndarray
    n_columns: int
    n_rows: int
    identifiers: frozenset


class SharedSpots(NamedTuple):
    """Two tables (indices into the key lists, first < second) holding the same spots:
    how many centroids they share, and how many the smaller of them has."""

    first: int
    second: int
    n_shared: int
    n_smaller: int


def shared_centroid_counts(keys: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Pairs of tables sharing centroid keys, and how many: one sort over every key,
    pairs only where a key recurs (in at most MAX_TABLES_PER_CENTROID tables).

    Parameters
    ----------
    keys : sequence of numpy.ndarray
        Each table's :func:`centroid_keys`.

    Returns
    -------
    first, second, counts : numpy.ndarray
        int64: the pairs (first < second) and the keys they share.
    """
    n = len(keys)
    empty = np.zeros(0, np.int64)
    if not n:
        return empty, empty, empty
    # Only a key met in 2 to MAX_TABLES_PER_CENTROID tables can pair them. Which keys
    # those are is found from the sorted keys alone, many times cheaper than ordering
    # the rows with their owners, which is then done for the rows of those keys only
    # (of distinct stills: none; of one still repeated: none either).
    ordered = sorted_uint64(np.concatenate(keys))
    pairing_keys, longest, every_key_pairs = _recurring_keys(
        ordered, MAX_TABLES_PER_CENTROID
    )
    del ordered
    if not pairing_keys.size:
        return empty, empty, empty
    every = np.concatenate(keys)
    owner = np.repeat(np.arange(n, dtype=np.int64), [len(k) for k in keys])
    if not every_key_pairs:  # rows of other keys to leave out
        place = np.searchsorted(pairing_keys, every)
        place[place == pairing_keys.size] = 0
        kept = np.flatnonzero(pairing_keys[place] == every)
        every, owner = every[kept], owner[kept]
    order = np.argsort(every, kind="stable")  # owners ascending within a key
    every, owner = every[order], owner[order]
    run = np.cumsum(np.r_[True, every[1:] != every[:-1]]) - 1
    codes = []
    for d in range(1, longest):
        same_run = run[d:] == run[:-d]
        codes.append(owner[:-d][same_run] * n + owner[d:][same_run])
    pair_codes, counts = np.unique(np.concatenate(codes), return_counts=True)
    return pair_codes // n, pair_codes % n, counts


@njit
def _recurring_keys(ordered, most):
    """Of the sorted keys ``ordered``: the distinct keys met 2 to ``most`` times, the
    most times any of those is met, and whether every distinct key is one of them."""
    found = np.empty(ordered.size // 2, ordered.dtype)  # each takes two places or more
    n_found, longest, every_key = 0, 0, True
    start = 0
    for i in range(1, ordered.size + 1):
        if i < ordered.size and ordered[i] == ordered[start]:
            continue
        count = i - start
        if 1 < count <= most:
            found[n_found] = ordered[start]
            n_found += 1
            longest = max(longest, count)
        else:
            every_key = False
        start = i
    return found[:n_found], longest, every_key


def tables_with_same_spots(keys: Sequence[np.ndarray]) -> list[SharedSpots]:
    """Every pair of tables that hold the same spots (see the module's description).

    Parameters
    ----------
    keys : sequence of numpy.ndarray
        Each table's :func:`centroid_keys`.

    Returns
    -------
    list of SharedSpots
        In ascending order of (first, second).
    """
    if len(keys) < 2:
        return []
    first, second, counts = shared_centroid_counts(keys)
    sizes = np.array([len(k) for k in keys], dtype=np.int64)
    smaller = np.minimum(sizes[first], sizes[second])
    same = (counts >= MIN_SHARED_CENTROIDS) & (counts >= SHARED_FRACTION * smaller)
    return [
        SharedSpots(*pair)
        for pair in zip(*(x[same].tolist() for x in (first, second, counts, smaller)))
    ]
