"""The centroid keys that decide which tables hold the same spots: the compiled kernel
equals a plain numpy statement of the rule, on real tables and on awkward values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dials_spot_size_analysis.algorithms.same_spots import (
    CENTROID_QUANTUM,
    MAX_TABLES_PER_CENTROID,
    centroid_keys,
    shared_centroid_counts,
    tables_with_same_spots,
)
from dials_spot_size_analysis.formats import read_reflections


def reference_keys(xyz):
    """The rule in numpy: finite, within 1e9 px, not (0, 0, 0), not on the half-pixel
    grid in x and y; each rounded to the quantum and hashed."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(xyz).all(axis=1) & (np.abs(xyz) < 1e9).all(axis=1)
        usable &= (xyz != 0).any(axis=1)
        on_half_grid = ((xyz[:, :2] * 2) % 1 == 0).all(axis=1)
    quanta = np.round(xyz[usable & ~on_half_grid] / CENTROID_QUANTUM)
    q = quanta.astype(np.int64).view(np.uint64)
    key = q[:, 0] * np.uint64(0x9E3779B97F4A7C15)
    key ^= q[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F)
    key ^= q[:, 2] * np.uint64(0x165667B19E3779F9)
    key ^= key >> np.uint64(29)
    key *= np.uint64(0xBF58476D1CE4E5B9)
    key ^= key >> np.uint64(32)
    return np.unique(key)


def test_keys_of_every_real_table(shared_data):
    tables = sorted(shared_data.glob("*/*.refl"))
    assert len(tables) >= 9
    for path in tables:
        xyz = read_reflections(path, index_shoeboxes=False).columns.get(
            "xyzobs.px.value"
        )
        if xyz is not None:
            assert np.array_equal(centroid_keys(xyz), reference_keys(xyz)), path


AWKWARD = st.sampled_from(
    [0.0, -0.0, 0.5, 1.5, 2.0, -3.5, 1e-7, 5e-7, 1.0000005, 1e9, -1e9, 1e9 - 1]
    + [np.nan, np.inf, -np.inf]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.one_of(AWKWARD, st.floats(-1e4, 1e4, allow_nan=False))] * 3),
        max_size=40,
    )
)
def test_keys_equal_the_rule_on_awkward_values(rows):
    xyz = np.array(rows, dtype=np.float64).reshape(-1, 3)
    assert np.array_equal(centroid_keys(xyz), reference_keys(xyz))


def test_strong_and_indexed_tables_hold_the_same_spots(shared_data):
    keys = [
        centroid_keys(
            read_reflections(shared_data / f"I23_P12M_thau/{name}.refl")[
                "xyzobs.px.value"
            ]
        )
        for name in ("strong", "indexed")
    ] + [
        centroid_keys(
            read_reflections(shared_data / "eiger_therm/strong.refl")["xyzobs.px.value"]
        )
    ]
    assert tables_with_same_spots(keys) == [(0, 1, 208, 208)]


def test_keys_of_a_mostly_unobserved_table_hold_no_buffer_of_every_row():
    xyz = np.zeros((1000, 3))
    xyz[3] = (10.25, 20.75, 3.1)
    keys = centroid_keys(xyz)
    assert np.array_equal(keys, reference_keys(xyz)) and keys.size == 1
    assert keys.base is None  # its own memory, not a view of a 1000-row buffer


def reference_pairs(keys) -> list[tuple[int, int, int]]:
    """Plainly: for every key, the tables holding it (a table once per time it holds
    it, in table order); where there are 2 to MAX_TABLES_PER_CENTROID of them, each
    pair of those places counts once for (its first table, its second)."""
    owners: dict[int, list[int]] = {}
    for table, table_keys in enumerate(keys):
        for key in table_keys.tolist():
            owners.setdefault(key, []).append(table)
    counted: dict[tuple[int, int], int] = {}
    for places in owners.values():
        if not 1 < len(places) <= MAX_TABLES_PER_CENTROID:
            continue
        for a in range(len(places)):
            for b in range(a + 1, len(places)):
                pair = (places[a], places[b])
                counted[pair] = counted.get(pair, 0) + 1
    return sorted((first, second, n) for (first, second), n in counted.items())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(0, 40), max_size=12),  # small keys: many shared
        max_size=MAX_TABLES_PER_CENTROID + 3,
    )
)
def test_pairs_of_tables_sharing_keys_equal_the_plain_count(tables):
    keys = [np.array(sorted(t), dtype=np.uint64) for t in tables]
    found = list(zip(*(x.tolist() for x in shared_centroid_counts(keys))))
    assert found == reference_pairs(keys)


def test_pairs_of_tables_sharing_keys_where_none_or_all_recur():
    distinct = [np.array([3, 9], np.uint64), np.array([4, 10], np.uint64)]
    assert [x.tolist() for x in shared_centroid_counts(distinct)] == [[], [], []]
    same = [np.array([3, 9], np.uint64)] * 3
    found = [x.tolist() for x in shared_centroid_counts(same)]
    assert found == [[0, 0, 1], [1, 2, 2], [2, 2, 2]]
    assert [x.tolist() for x in shared_centroid_counts([])] == [[], [], []]


def test_a_key_pairs_tables_up_to_the_limit_of_tables_per_centroid():
    """Key 7 in exactly MAX_TABLES_PER_CENTROID tables pairs each two of them; key 8,
    in one table more, pairs none (it is a hot pixel, not a shared spot)."""
    at_limit = [np.array([7], np.uint64)] * MAX_TABLES_PER_CENTROID
    first, second, counts = shared_centroid_counts(at_limit)
    n_pairs = MAX_TABLES_PER_CENTROID * (MAX_TABLES_PER_CENTROID - 1) // 2
    assert first.size == n_pairs and set(counts.tolist()) == {1}
    assert (first < second).all() and second.max() == MAX_TABLES_PER_CENTROID - 1
    over = [np.array([8], np.uint64)] * (MAX_TABLES_PER_CENTROID + 1)
    assert [x.tolist() for x in shared_centroid_counts(over)] == [[], [], []]
    mixed = [np.array([7, 8], np.uint64)] * 2 + over  # key 7 in 2 tables, 8 in 67
    assert [x.tolist() for x in shared_centroid_counts(mixed)] == [[0], [1], [1]]
