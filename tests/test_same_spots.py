"""The centroid keys that decide which tables hold the same spots: the compiled kernel
equals a plain numpy statement of the rule, on real tables and on awkward values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dials_spot_size_analysis.algorithms.same_spots import (
    CENTROID_QUANTUM,
    centroid_keys,
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
