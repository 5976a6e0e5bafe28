"""Flags, mask codes, flex.histogram-exact binning, statistics."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from conftest import REFLECTION_FILES, flex
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dials_spot_size_analysis.algorithms import statistics
from dials_spot_size_analysis.algorithms.flags import (
    REFLECTION_FLAGS,
    UnknownFlagError,
    parse_flag_names,
    select_by_flags,
)
from dials_spot_size_analysis.algorithms.geometry import (
    image_numbers,
    shell_edges,
    shell_numbers,
)
from dials_spot_size_analysis.algorithms.histogram import automatic_range, histogram
from dials_spot_size_analysis.algorithms.mask_codes import (
    canonical_names,
    describe,
    mask_code_value,
)
from dials_spot_size_analysis.algorithms.sorting import SPLIT_FROM_KEYS, sorted_uint64
from dials_spot_size_analysis.algorithms.spot_sizes import resolve_required_flags
from dials_spot_size_analysis.algorithms.statistics import (
    group_statistics,
    summary_statistics,
    value_counts,
)

needs_flex = pytest.mark.skipif(
    flex is None, reason="scitbx.array_family.flex (cctbx-base) is not importable"
)


@pytest.mark.parametrize("name", sorted(REFLECTION_FILES))
@pytest.mark.parametrize(
    "which", ["histogram_indexed_foreground", "histogram_all_rows_foreground"]
)
def test_histogram_equals_dials_on_recorded_counts(ground_truth, name, which):
    truth = ground_truth[name]
    counts = np.array(truth["count_mask_values"]["4"])
    if which == "histogram_indexed_foreground":
        counts = counts[(np.array(truth["flags"], dtype=np.uint64) & np.uint64(4)) != 0]
    expected = truth[which]
    result = histogram(
        counts, expected["data_min"], expected["data_max"], expected["n_slots"]
    )
    assert result.counts.tolist() == expected["slots"]
    assert result.bin_centers.tolist() == expected["slot_centers"]
    assert result.n_out_of_range == expected["n_out_of_slot_range"]


def test_histogram_edges_and_tolerance():
    width = 10.0
    values = [
        0.0,
        -0.5e-4 * width,
        -2e-4 * width,
        9.999999,
        10.0,
        999.0,
        1000.0,
        1000 + 0.5e-4 * width,
        1000 + 2e-4 * width,
    ]
    result = histogram(values, 0, 1000, 100)
    assert result.counts[0] == 3  # 0, just below 0 within tolerance, 9.999999
    assert result.counts[1] == 1  # 10.0 starts the second bin (half-open)
    assert (
        result.counts[99] == 3
    )  # 999, 1000 (last bin is closed), just above within tolerance
    assert result.n_out_of_range == 2
    assert result.bin_width == 10.0 and result.n_bins == 100


@pytest.mark.parametrize(
    "bad",
    [{"n_bins": 0}, {"data_min": 5, "data_max": 5}, {"data_min": 6, "data_max": 5}],
)
def test_histogram_refuses_bad_ranges(bad):
    arguments = {"values": [1, 2], "data_min": 0, "data_max": 10, "n_bins": 10} | bad
    with pytest.raises(ValueError, match="must be at least 1|must be greater than"):
        histogram(**arguments)


@needs_flex
@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.floats(-50, 1050, allow_nan=False) | st.integers(-5, 1005).map(float),
        max_size=60,
    ),
    data_min=st.floats(-20, 100, allow_nan=False),
    span=st.floats(0.1, 1200),
    n_bins=st.integers(1, 120),
)
def test_histogram_matches_scitbx_flex_histogram(values, data_min, span, n_bins):
    data_max = data_min + span
    ours = histogram(values, data_min, data_max, n_bins)
    theirs = flex.histogram(
        flex.double(values), data_min=data_min, data_max=data_max, n_slots=n_bins
    )
    assert ours.counts.tolist() == list(theirs.slots())
    assert ours.n_out_of_range == theirs.n_out_of_slot_range()
    assert ours.bin_centers.tolist() == list(theirs.slot_centers())


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, 2000), max_size=200), cut=st.integers(0, 200))
def test_histograms_merge_exactly(values, cut):
    whole = histogram(values, 0, 1000, 100)
    merged = histogram(values[:cut], 0, 1000, 100) + histogram(
        values[cut:], 0, 1000, 100
    )
    assert (
        merged.counts.tolist() == whole.counts.tolist()
        and merged.n_out_of_range == whole.n_out_of_range
    )


def test_histograms_with_other_ranges_do_not_merge():
    with pytest.raises(ValueError, match="same range and number of bins"):
        histogram([1], 0, 10, 10) + histogram([1], 0, 20, 10)


def test_automatic_range():
    assert automatic_range(np.array([3, 9, 4])) == (3.0, 9.0)
    assert automatic_range(np.array([7, 7])) == (7.0, 8.0)


def test_flag_selection_all_bits_required_any_bit_excluded():
    flags = np.array([4, 36, 32, 4 | 1024, 256, 768], dtype=np.uint64)
    assert select_by_flags(flags, ["indexed"]).tolist() == [
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    assert select_by_flags(flags, ["indexed", "strong"]).tolist() == [
        False,
        True,
        False,
        False,
        False,
        False,
    ]
    assert select_by_flags(flags, [], ["overloaded"]).tolist() == [
        True,
        True,
        True,
        False,
        True,
        True,
    ]
    # integrated = integrated_sum | integrated_prf: requiring it needs both bits
    assert select_by_flags(flags, ["integrated"]).tolist() == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert select_by_flags(flags, [], ["integrated"]).tolist() == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


def test_flag_names_parse_and_unknown_names_list_the_valid_ones():
    assert parse_flag_names(
        ["indexed strong", "used_in_refinement,Overloaded+scaled"]
    ) == ["indexed", "strong", "used_in_refinement", "overloaded", "scaled"]
    assert parse_flag_names(None) == []
    with pytest.raises(UnknownFlagError) as caught:
        parse_flag_names(["indexd"])
    assert "unrecognised flag name 'indexd'" in str(caught.value)
    assert all(name in str(caught.value) for name in REFLECTION_FLAGS)


def test_automatic_flag_choice():
    assert resolve_required_flags("Auto", np.array([32, 36], np.uint64)) == (
        ["indexed"],
        True,
    )
    assert resolve_required_flags(["Auto"], np.array([32, 32], np.uint64)) == ([], True)
    assert resolve_required_flags(["strong"], np.array([32], np.uint64)) == (
        ["strong"],
        False,
    )
    assert resolve_required_flags(None, np.array([32], np.uint64)) == ([], False)


def test_mask_codes():
    assert mask_code_value(["Foreground"]) == 4
    assert mask_code_value(["foreground", "VALID"]) == 5
    assert mask_code_value([]) == 0
    assert canonical_names(["overlapped", "valid"]) == ["Valid", "Overlapped"]
    assert describe(["Valid", "Foreground"]) == "Valid|Foreground (5)"
    with pytest.raises(ValueError, match="unknown mask code 'Signal'"):
        mask_code_value(["Signal"])


def test_summary_statistics():
    stats = summary_statistics(np.array([1, 2, 3, 4, 100]))
    assert (
        stats["n"] == 5
        and stats["median"] == 3.0
        and stats["min"] == 1.0
        and stats["max"] == 100.0
    )
    assert stats["mean"] == pytest.approx(22.0) and stats["std"] == pytest.approx(
        np.std([1, 2, 3, 4, 100])
    )
    assert (
        stats["p25"] == 2.0
        and stats["p75"] == 4.0
        and stats["p5"] == pytest.approx(1.2)
    )
    assert summary_statistics(np.array([]))["median"] is None


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 100)), min_size=1, max_size=80)
)
def test_grouped_statistics_equal_per_group_numpy(pairs):
    keys, values = np.array(pairs).T
    for entry in group_statistics(keys, values).entries():
        group = values[keys == entry["key"]]
        assert entry["n"] == group.size
        assert entry["median"] == np.median(group) and entry["mean"] == pytest.approx(
            group.mean()
        )
        assert (entry["min"], entry["max"]) == (group.min(), group.max())


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-3, 40), st.integers(0, 60)), min_size=1, max_size=120
    )
)
def test_counting_and_sorting_group_statistics_agree(pairs):
    keys, values = np.array(pairs).T
    by_counting = group_statistics(
        keys, values
    ).entries()  # integer sizes: the counting path
    by_sorting = group_statistics(
        keys, values.astype(np.float64)
    ).entries()  # floats: the sorting path
    assert by_counting == by_sorting


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=300))
def test_statistics_from_value_counts_equal_numpy_on_floats_to_the_last_bit(sizes):
    """Integer sizes take the counting path (quantiles from value counts, mean and std
    from the integers); floats take numpy's percentile on a float copy. Same bits."""
    sizes = np.array(sizes, dtype=np.int64)
    by_counting = summary_statistics(sizes)
    floats = sizes.astype(np.float64)
    assert value_counts(floats) is None  # the reference below does not count
    assert by_counting == summary_statistics(floats)
    expected = np.percentile(floats, [50, 5, 25, 75, 95])
    assert [
        by_counting[key] for key in ("median", "p5", "p25", "p75", "p95")
    ] == expected.tolist()
    assert (by_counting["mean"], by_counting["std"]) == (floats.mean(), floats.std())


@pytest.mark.parametrize(
    "dtype",
    [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64],
)
def test_value_counts_equal_bincount(dtype):
    values = np.random.default_rng(7).integers(0, 100, 5000).astype(dtype)
    expected = np.bincount(values.astype(np.int64))
    assert value_counts(values).tolist() == expected.tolist()
    assert value_counts(values[::3]).tolist() == np.bincount(values[::3]).tolist()
    assert value_counts(values.reshape(50, 100)).tolist() == expected.tolist()
    assert value_counts(values[:1]).tolist() == [0] * int(values[0]) + [1]
    assert value_counts(values[:0]) is None
    if np.issubdtype(dtype, np.signedinteger):
        assert value_counts(np.array([3, -1, 2], dtype)) is None
    too_large = np.array([5, statistics.COUNTING_CELLS], np.int64)
    assert value_counts(too_large) is None
    assert value_counts(too_large - 1).size == statistics.COUNTING_CELLS
    assert value_counts(np.array([1.0, 2.0])) is None
    assert value_counts(np.array([True, False])) is None


def test_statistics_from_value_counts_on_many_rows():
    """Beyond numpy's 8192-element reduction buffers, and over several counting passes."""
    sizes = np.random.default_rng(3).integers(0, 400, 2_500_000) ** 2 // 97
    floats = sizes.astype(np.float64)
    result = summary_statistics(sizes)
    assert [
        result[key] for key in ("median", "p5", "p25", "p75", "p95")
    ] == np.percentile(floats, [50, 5, 25, 75, 95]).tolist()
    assert (result["mean"], result["std"], result["n"]) == (
        floats.mean(),
        floats.std(),
        2_500_000,
    )
    assert (
        value_counts(sizes).sum() == 2_500_000
        and value_counts(np.array([3, -1])) is None
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 150), min_size=1, max_size=200),
    st.integers(1, 30),
    st.sampled_from([(0, 100), (5, 60), (0, 7)]),
)
def test_weighted_histogram_equals_histogram_of_every_row(sizes, n_bins, bounds):
    sizes = np.array(sizes)
    counts = np.bincount(sizes)
    present = np.flatnonzero(counts)
    weighted = histogram(present, *bounds, n_bins, weights=counts[present])
    every_row = histogram(sizes, *bounds, n_bins)
    assert (
        weighted.counts.tolist() == every_row.counts.tolist()
        and weighted.n_out_of_range == every_row.n_out_of_range
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-2, 30), st.integers(0, 60)), min_size=1, max_size=150
    ),
    st.sampled_from([np.int16, np.int32, np.int64, np.uint8]),
)
def test_group_statistics_skipping_unknown_keys(pairs, value_type):
    keys, values = np.array(pairs).T
    values = values.astype(value_type)
    skipped = group_statistics(keys, values, skip_negative_keys=True)
    known = keys >= 0
    assert skipped == group_statistics(keys[known], values[known])
    assert skipped == group_statistics(
        keys[known], values[known].astype(np.float64)
    )  # the sorting path
    assert all(key >= 0 for key in skipped.key)


def test_group_statistics_with_sparse_keys_count_only_the_keys_present():
    """Keys spread over a range too wide to give every key a row of the count table (here
    a million images, 40 of them present) are found first; the same numbers as sorting."""
    rng = np.random.default_rng(6)
    keys = rng.choice(1_000_000, 40, replace=False)[rng.integers(0, 40, 5000)]
    values = rng.integers(0, 500, 5000)
    assert (
        1_000_000 * 500 > statistics.COUNTING_CELLS
    )  # not one row per key in the range
    counted = group_statistics(keys, values)
    assert (
        counted == group_statistics(keys, values.astype(np.float64))
        and len(counted.key) == 40
    )
    unsigned = group_statistics(
        keys.astype(np.uint64), values
    )  # keys numpy cannot take as signed: sorted
    assert unsigned.n == counted.n and unsigned.median == counted.median


def _plain_shells(d, edges):
    """The shell of each d written plainly with numpy: the reference for the kernel."""
    usable = np.isfinite(d) & (d > 0)
    shell = np.full(d.shape, -1)
    with np.errstate(divide="ignore", over="ignore"):  # 1/d² of tiny and huge d
        found = np.searchsorted(edges, 1.0 / d[usable] ** 2, side="right") - 1
    shell[usable] = np.clip(found, 0, len(edges) - 2)
    return shell


@pytest.mark.parametrize("n_shells", [1, 2, 10, 33])
def test_resolution_shells_equal_a_plain_numpy_reference(n_shells):
    d = np.random.default_rng(4).random(1000) * 4 + 1.2
    d[::17] = np.nan
    d[5], d[6], d[7], d[8], d[9] = -1.0, -0.0, 0.0, np.inf, -np.inf
    edges = shell_edges(d, n_shells)
    usable = 1.0 / d[np.isfinite(d) & (d > 0)] ** 2
    assert (
        edges.tolist() == np.linspace(usable.min(), usable.max(), n_shells + 1).tolist()
    )
    # Every d, each edge's own d (searchsorted's "right": the shell above the edge), a
    # d whose 1/d² is infinite, and rows of a 2-D array.
    on_edges = 1.0 / np.sqrt(edges)
    for values in (d, on_edges, np.array([1e-200, 1e200, 5e-324])):
        assert (
            shell_numbers(values, edges).tolist()
            == _plain_shells(values, edges).tolist()
        )
    shell = shell_numbers(d, edges)
    assert shell[0::17].tolist() == [-1] * len(d[::17])
    assert shell[5:10].tolist() == [-1] * 5
    assert np.bincount(shell[shell >= 0]).size == n_shells
    assert (
        shell_numbers(d.reshape(20, 50), edges).tolist()
        == shell.reshape(20, 50).tolist()
    )
    assert shell_numbers(d, np.zeros(0)).tolist() == [-1] * d.size
    assert shell_edges(np.full(4, np.nan), 10).size == 0
    single = shell_edges(np.full(3, 2.0), 4)  # one value: a sliver above it
    assert single[0] == 0.25 and single[-1] == 0.25 * (1 + 1e-9) + 1e-12


def test_image_numbers_equal_floor_plus_one():
    z = np.array(
        [
            0.0,
            0.5,
            -0.5,
            -1.0,
            16999.5,
            2.0**31 - 2.5,
            2.0**31 - 2,
            np.nan,
            np.inf,
            -np.inf,
            -0.0,
            -(2.0**31) + 3,
        ]
    )
    expected = np.where(
        np.isfinite(z) & (np.abs(z) < 2**31 - 2),
        np.floor(np.nan_to_num(z, posinf=0, neginf=0)).astype(np.int64) + 1,
        -1,
    )
    assert image_numbers(z).tolist() == expected.tolist()
    assert image_numbers(z[::2]).tolist() == expected[::2].tolist()  # a strided view
    assert image_numbers(z.reshape(3, 4)).tolist() == expected.reshape(3, 4).tolist()


def _plain_d_spacings(experiments, panel, xy_mm):
    """d = 1 / |s1 - s0| with s1 towards the spot on its panel: the reference for the
    compiled kernel, written plainly, row by row."""
    d = []
    beam = experiments[0].beam
    for p, (x, y) in zip(panel, xy_mm):
        frame = experiments[0].detector.panels[p]
        lab = frame.origin + x * frame.fast_axis + y * frame.slow_axis
        s1 = lab / np.linalg.norm(lab) * np.linalg.norm(beam.s0)
        d.append(1.0 / np.linalg.norm(s1 - beam.s0))
    return np.array(d)


@pytest.mark.parametrize(
    "refl, expt, positions",
    [
        ("I23_P12M_thau/indexed.refl", "I23_P12M_thau/indexed.expt", "mm"),
        ("centroid_test_data/integrated.refl", "centroid_test_data/indexed.expt", "mm"),
        ("eiger_therm/strong.refl", "eiger_therm/imported.expt", "px"),
    ],
)
def test_d_spacings_equal_a_plain_computation(shared_data, refl, expt, positions):
    """The compiled d-spacing kernel against a plain row-by-row computation, from the
    millimetre positions, or from pixel positions times the pixel size."""
    from dials_spot_size_analysis.api import analyse
    from dials_spot_size_analysis.formats import read_experiments, read_reflections

    result = analyse(shared_data / refl, shared_data / expt, require=None)
    table = read_reflections(shared_data / refl)
    experiments = read_experiments(shared_data / expt)
    rows = table.shoeboxes.has_pixel_data
    panel = table["panel"][rows].astype(int)
    assigned = table["id"][rows] >= 0  # unassigned rows have no experiment: NaN
    if positions == "mm":
        xy = table["xyzobs.mm.value"][rows, :2]
    else:
        sizes = np.array([experiments[0].detector.panels[p].pixel_size for p in panel])
        xy = table["xyzobs.px.value"][rows, :2] * sizes
    expected = np.where(assigned, _plain_d_spacings(experiments, panel, xy), np.nan)
    d = result.result.spot_sizes.d_spacing
    assert d == pytest.approx(expected, rel=1e-12, nan_ok=True)
    assert np.isnan(d).sum() == (~assigned).sum()
    assert len(result.result.by_resolution) == 10


def test_warm_up_loads_the_kernels_real_calls_use(shared_data):
    """Forked workers inherit what warm_up_kernels loaded; a kernel specialised for
    other argument types (e.g. a writable array where files give read-only ones) would
    be loaded again in every worker."""
    from dials_spot_size_analysis.algorithms.geometry import _d_spacing_kernel
    from dials_spot_size_analysis.api import analyse
    from dials_spot_size_analysis.formats.shoeboxes import scan_and_count
    from dials_spot_size_analysis.parallel.pool import warm_up_kernels

    warm_up_kernels()
    kernels = (_d_spacing_kernel, scan_and_count)
    loaded = [list(kernel.signatures) for kernel in kernels]
    assert all(loaded)
    for refl, expt in [
        ("I23_P12M_thau/indexed.refl", "I23_P12M_thau/indexed.expt"),
        ("eiger_therm/strong.refl", "eiger_therm/imported.expt"),
    ]:
        analyse(shared_data / refl, shared_data / expt)
    assert [list(kernel.signatures) for kernel in kernels] == loaded


# ------------------------------------- sorted quantiles, shared groups, grouped summaries


def _bits(number) -> bytes | None:
    """A number's float64 bits (telling -0.0 from 0.0 and comparing NaN with NaN)."""
    return None if number is None else np.float64(number).tobytes()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_bits(a[k]) == _bits(b[k]) for k in a)


def _numpy_statistics(values: np.ndarray) -> dict:
    """The statistics as numpy gives them on a float64 copy (what summary_statistics
    computed before it read quantiles from sorted values)."""
    if values.size == 0:
        return summary_statistics(values)
    copy = values.astype(np.float64)
    quantiles = np.percentile(copy, [50, 5, 25, 75, 95])
    numbers = [copy.mean(), copy.std(), copy.min(), copy.max(), *quantiles]
    keys = ["mean", "std", "min", "max", "median", "p5", "p25", "p75", "p95"]
    return {"n": values.size, **{k: float(x) for k, x in zip(keys, numbers)}}


SPECIALS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 3.4e38, np.inf, -np.inf, np.nan]
reals = st.one_of(
    st.sampled_from(SPECIALS),
    st.floats(-100, 100, width=32),
    st.integers(-3, 3).map(float),  # ties
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(reals.filter(lambda x: not np.isnan(x)), min_size=1, max_size=40),
    st.sampled_from([np.float32, np.float64]),
    st.lists(st.floats(0, 100), max_size=6),
)
def test_percentiles_from_sorted_equal_numpy_to_the_last_bit(values, dtype, q):
    values = np.array(values, dtype)
    zeros = values[values == 0]
    plain = not np.signbit(zeros).any()  # a negative zero: numpy's choice of zero
    assert statistics.plainly_ordered(values, np.sort(values)) == plain
    assume(plain)
    q = [0, 5, 25, 50, 75, 95, 100, *q]
    with np.errstate(invalid="ignore"):
        expected = np.percentile(values.astype(np.float64), q)
        found = statistics.percentiles_from_sorted(np.sort(values), q)
    assert found.tobytes() == expected.tobytes()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(reals, max_size=40),
    st.sampled_from([np.float32, np.float64]),
)
def test_summary_statistics_of_reals_equal_numpy_to_the_last_bit(values, dtype):
    """NaN, infinities, negative zeros (numpy's own answer then), ties, one value."""
    values = np.array(values, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        assert _same(summary_statistics(values), _numpy_statistics(values))


@pytest.mark.parametrize("q", [0, 5, 50, 62.5, 95, 100])
def test_percentiles_from_counts_of_a_scalar_percentile(q):
    values = np.array([4, 4, 7, 9, 9, 9, 30])
    found = statistics.percentiles_from_counts(np.bincount(values), q)
    assert found.shape == () and found == np.percentile(values.astype(float), q)


def test_mean_and_std_equal_numpy_on_every_length_and_special_values():
    rng = np.random.default_rng(3)
    for n in range(1, 700):
        values = rng.standard_normal(n) * 10.0 ** rng.integers(-5, 9)
        expected = (float(values.mean()), float(values.std()))
        assert statistics.mean_and_std(values) == expected, n
    specials = (
        [-0.0],
        [-0.0] * 20,
        [0.0, -0.0] * 80,
        [np.nan, 1.0],
        [np.inf, 1.0] * 9,
        [np.inf, -np.inf],
        [1e308, 1e308, -1e308],
    )
    for special in specials:
        values = np.array(special)
        with np.errstate(all="ignore"):  # overflow and inf - inf, as numpy meets them
            found = np.array(statistics.mean_and_std(values))
            expected = np.array([values.mean(), values.std()])
        assert found.view(np.int64).tolist() == expected.view(np.int64).tolist(), (
            special
        )


def test_median_of_finite_is_numpys_median_to_the_last_bit():
    rng = np.random.default_rng(5)
    for n in [*range(1, 40), 1000, 1001, 65_536, 65_537]:
        for kind in ("normal", "few values", "signed zeros"):
            if kind == "normal":
                values = rng.standard_normal(n) * 10.0 ** rng.integers(-5, 9)
            else:
                values = rng.integers(-2, 3, n).astype(np.float64)
            if kind == "signed zeros":
                values[values == 0] = -0.0
            expected = np.float64(np.median(values))
            found = np.float64(statistics.median_of_finite(values.copy()))
            assert found.view(np.int64) == expected.view(np.int64), (n, kind)
    # numpy's partition mostly leaves the lower middle value last in the lower half,
    # but not always: not in a descending run of 1,776 values
    values = np.arange(1776, 0, -1.0)
    assert statistics.median_of_finite(values.copy()) == np.median(values) == 888.5
    # the selection's histogram: the middle ranks in one crowded bin, in two bins,
    # and values spanning every binade (the bins then as wide as whole binades)
    crowded = np.concatenate([np.full(500_000, 1.25), rng.random(500_001) + 1.0])
    split = np.concatenate([np.zeros(50_000), np.full(50_000, 1e300)])
    spread = rng.standard_normal(100_001) * 10.0 ** rng.integers(-300, 300, 100_001)
    extremes = np.array([1e300, -1e300, 3.0])  # the top bin's end past 2**64 - 1
    for values in (
        crowded,
        split,
        spread,
        -np.abs(spread),
        np.full(10, -0.0),
        extremes,
    ):
        rng.shuffle(values)
        expected = np.float64(np.median(values))
        found = np.float64(statistics.median_of_finite(values))
        assert found.view(np.int64) == expected.view(np.int64)
    assert statistics.median_of_finite(split) == 0.5e300


def test_median_of_whole_numbers_and_reals_is_numpys():
    rng = np.random.default_rng(6)
    for n in (1, 2, 7, 10_000, 10_001):
        whole = rng.integers(0, 40, n)
        real = rng.gamma(2.0, 1.0, n).astype(np.float32)
        for values in (whole, whole.astype(np.int32), real, -real.astype(np.float64)):
            expected = np.float64(np.median(values.astype(np.float64)))
            found = np.float64(statistics.median(values))
            assert found.view(np.int64) == expected.view(np.int64), (n, values.dtype)
    assert statistics.median(np.array([3, 8])) == 5.5
    assert statistics.median(np.array([3.0, 8.5, -1.0])) == 3.0
    values = np.array([5.0, 1.0, 3.0, 2.0])
    statistics.median_of_finite(values)
    assert values.tolist() == [5.0, 1.0, 3.0, 2.0]  # the caller's values untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize(
    "n",
    [
        1,
        2,
        5,
        7,
        8,
        9,
        15,
        16,
        17,
        100,
        127,
        128,
        129,
        136,
        255,
        257,
        8191,
        8192,
        8193,
        300_001,
    ],
)
def test_mean_and_std_equal_numpy_to_the_last_bit(dtype, n):
    rng = np.random.default_rng(n)
    values = (rng.standard_normal(n) * 1000).astype(dtype)
    copy = values.astype(np.float64)
    expected = (float(copy.mean()), float(copy.std()))
    assert statistics.mean_and_std(values) == expected
    assert statistics.mean_and_std(values[::-1]) == (
        float(copy[::-1].mean()),
        float(copy[::-1].std()),
    )  # a strided view
    if np.issubdtype(dtype, np.integer):  # sums of integers are exact in any order
        assert expected == (values.mean(dtype=np.float64), values.std(dtype=np.float64))


def _plain_groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = keys >= 0
    distinct = np.unique(keys[known])
    return distinct, np.where(known, np.searchsorted(distinct, keys), -1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-2, 5), st.integers(-1, 3), st.integers(0, 2)),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([np.int16, np.int32, np.int64, np.uint32, np.float64]),
    st.integers(1, 3),
)
def test_key_groups_number_the_keys_in_bit_fields(rows, dtype, n_keys):
    columns = [np.array(column)[: len(rows)] for column in zip(*rows)][:n_keys]
    if dtype is np.uint32:
        columns = [np.abs(column) for column in columns]
    columns = [column.astype(dtype) for column in columns]
    groups = statistics.key_groups(columns, len(rows))
    # one number per combination of groups, each field as wide as its groups need
    combinations = {
        tuple(groups.groups_of(k)[row] for k in range(n_keys))
        for row in range(len(rows))
    }
    assert len(np.unique(groups.fields)) == len(combinations)
    assert groups.bits == sum(len(d).bit_length() for d in groups.keys)
    for k, column in enumerate(columns):
        distinct, numbers = _plain_groups(column)
        assert groups.keys[k].tolist() == distinct.tolist()
        assert groups.groups_of(k).tolist() == numbers.tolist()


def test_key_groups_of_sparse_keys_and_too_many_groups():
    """Keys too spread for a table of their range: numbered by sorting, the same
    numbers. Keys whose group numbers need more bits together than a row holds are
    refused."""
    rng = np.random.default_rng(11)
    n = 5000
    columns = [
        rng.choice([-7, 3, 10**12, 2**40], n),  # sparse: a sort numbers them
        rng.integers(-1, 300, n),
        rng.integers(0, 200, n).astype(np.int16),
    ]
    with mock.patch.object(statistics, "COUNTING_CELLS", 64):
        groups = statistics.key_groups(columns, n)
    for k, column in enumerate(columns):
        distinct, numbers = _plain_groups(column)
        assert groups.keys[k].tolist() == distinct.tolist()
        assert groups.groups_of(k).tolist() == numbers.tolist()
    with pytest.raises(ValueError, match="one entry per row"):
        statistics.key_groups([np.zeros(3, int)], 4)
    with mock.patch.object(statistics, "FIELD_BITS", 16):  # 2 + 9 + 8 bits needed
        with pytest.raises(ValueError, match="too many groups"):
            statistics.key_groups(columns, n)


def _reference_medians(values, kept, keys) -> tuple:
    """Per known key with a finite kept value: the key, the count and numpy's median."""
    chosen = kept & np.isfinite(values.astype(np.float64))
    found = [], [], []
    for key in np.unique(keys[keys >= 0]):
        group = values[chosen & (keys == key)].astype(np.float64)
        if group.size:
            for part, number in zip(found, (key, group.size, np.median(group))):
                part.append(number)
    return found


def _check_grouped_summary(values, kept, columns, scratch=None):
    groups = statistics.key_groups(columns, len(values))
    with np.errstate(invalid="ignore", over="ignore"):
        summary = statistics.grouped_summary(values, kept, groups, scratch)
        plain = statistics._plain_summary(values, kept, groups)  # the former functions
        assert _same(summary.statistics, _numpy_statistics(values[kept]))
    assert summary.values.tobytes() == values[kept].tobytes()
    if summary.ordered is not None:  # values sorted (a zero's sign aside), no NaN
        assert summary.ordered.tolist() == np.sort(values[kept]).tolist()
        assert not np.isnan(summary.ordered).any()
    if summary.counts is not None:
        assert summary.counts.tolist() == np.bincount(values[kept]).tolist()
    for found, before, keys in zip(summary.medians, plain.medians, columns):
        assert [part.tolist() for part in found[:2]] == [p.tolist() for p in before[:2]]
        assert found[2].tobytes() == np.asarray(before[2], np.float64).tobytes()
        expected = _reference_medians(values, kept, np.asarray(keys))
        assert [part.tolist() for part in found] == [list(part) for part in expected]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(reals, st.booleans()), max_size=50),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 3),
    st.randoms(use_true_random=False),
)
def test_grouped_summary_of_reals_equals_numpy_and_the_plain_functions(
    rows, dtype, n_keys, random
):
    """NaN (left out of the medians), infinities, negative zeros, ties, empty groups,
    single values, keys unknown (negative) and groups without a finite value."""
    values = np.array([value for value, _ in rows], dtype)
    kept = np.array([keep for _, keep in rows], bool)
    columns = [
        np.array([random.randint(-1, 3) for _ in rows], np.int32) for _ in range(n_keys)
    ]
    _check_grouped_summary(values, kept, columns)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "values",
    [
        [0.0, -0.0, 0.0],  # a zero's sign: numpy's selection decides
        [-0.0, 0.0, -0.0, 0.0, 5.0, -0.0, 0.0],
        [np.nan, np.nan],
        [np.nan, 2.0, np.nan],
        [3.0],
        [],
        [np.inf, -np.inf, 1.0],
        [-5.0, -5.0, -1.0, 2.0, 2.0, 2.0],
    ],
)
def test_grouped_summary_edge_cases(values, dtype):
    values = np.array(values, dtype)
    n = values.size
    four_keys = [np.arange(n) % 2, np.zeros(n, int), np.arange(n) % 3, -np.ones(n, int)]
    for columns in (
        [],
        [np.zeros(n, np.int32)],
        [np.arange(n) % 2, -np.ones(n, int)],
        four_keys,  # more than one walk serves: sorted the general way
    ):
        _check_grouped_summary(values, np.ones(n, bool), columns)
        _check_grouped_summary(values, np.arange(n) % 3 != 1, columns)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-2, 40), st.booleans()), max_size=60),
    st.sampled_from([np.int32, np.int64]),
    st.integers(0, 3),
    st.randoms(use_true_random=False),
)
def test_grouped_summary_of_integers_equals_numpy_and_the_plain_functions(
    rows, dtype, n_keys, random
):
    values = np.array([value for value, _ in rows], dtype)
    kept = np.array([keep for _, keep in rows], bool)
    if random.random() < 0.7:
        values = np.abs(values)  # non-negative: counted; negative ones: the plain way
    columns = [
        np.array([random.randint(-1, 4) for _ in rows], np.int64) for _ in range(n_keys)
    ]
    _check_grouped_summary(values, kept, columns)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_grouped_summary_on_many_rows(dtype):
    """A quarter of a million rows, a thousand images, panels and shells with unknown
    keys, values with many ties, NaN absent and present, through one shared work array
    (also with the keys numbered by sorting)."""
    rng = np.random.default_rng(5)
    n = 250_000
    columns = [
        rng.integers(1, 1000, n),
        rng.integers(-1, 10, n).astype(np.int16),
        rng.integers(0, 24, n).astype(np.int32),
    ]
    values = (rng.gamma(2.0, 1.5, n) * 7).round(1).astype(dtype)
    kept = rng.random(n) < 0.9
    scratch = np.empty(n, np.uint64)
    _check_grouped_summary(values, kept, columns, scratch)
    with mock.patch.object(statistics, "COUNTING_CELLS", 1 << 16):
        _check_grouped_summary(values, kept, columns, scratch)
    if dtype in (np.float32, np.float64):
        values[::1000] = np.nan  # the plain functions then
        _check_grouped_summary(values, kept, columns, scratch)


def test_grouped_summary_of_groups_beyond_32_bits():
    """float32 values whose rows' group fields need more than the 32 bits beside a
    packed value (three keys of 3,000 groups: 36 bits) take the general sort."""
    rng = np.random.default_rng(8)
    n = 9000
    columns = [rng.permutation(n) % 3000 for _ in range(3)]
    assert statistics.key_groups(columns, n).bits == 36
    values = rng.gamma(2.0, 1.5, n).astype(np.float32)
    _check_grouped_summary(values, rng.random(n) < 0.9, columns)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(reals, max_size=60),
    st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8]),
    st.sampled_from([(0.0, 5.0, 50), (1.0, 6.0, 50), (0.0, 1.0, 20), (-0.5, 7.5, 8)]),
)
def test_compiled_histogram_equals_the_vectorised_rule(values, dtype, bins):
    """Unweighted values take a compiled kernel; weights of one take the vectorised
    rule (flex.histogram's, as the module's text states): the same counts, with NaN
    in the first slot and infinities out of range."""
    values = np.array(values, np.float64)
    if np.issubdtype(dtype, np.integer):
        values = np.nan_to_num(values, posinf=300, neginf=-300).clip(
            0 if dtype is np.uint8 else -300, 255
        )
    values = values.astype(dtype)
    compiled = histogram(values, *bins)
    vectorised = histogram(values, *bins, weights=np.ones(values.size, np.int64))
    assert compiled.counts.tolist() == vectorised.counts.tolist()
    assert compiled.n_out_of_range == vectorised.n_out_of_range
    ordered = np.sort(values)
    if not (ordered.size and np.isnan(ordered[-1])):  # sorted: slots by bisection
        bisected = histogram(ordered, *bins, is_sorted=True)
        assert bisected.counts.tolist() == vectorised.counts.tolist()
        assert bisected.n_out_of_range == vectorised.n_out_of_range


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_of_sorted_values_on_slot_edges(dtype):
    """Values on and beside every slot edge and the tolerance limits (the same slots
    by bisection as value by value), many rows."""
    rng = np.random.default_rng(8)
    for low, high, n_bins in [(0.0, 5.0, 50), (1.0, 6.0, 50), (0.0, 1.0, 20)]:
        edges = np.linspace(low, high, n_bins + 1)
        width = (high - low) / n_bins
        near = np.concatenate(
            [edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)]
        )
        near = np.concatenate(
            [near, [low - width * 1e-4, high + width * 1e-4, -np.inf, np.inf]]
        )
        values = np.concatenate([near, rng.uniform(low - 1, high + 1, 100_000)])
        values = np.sort(values.astype(dtype))
        every = histogram(values, low, high, n_bins)
        bisected = histogram(values, low, high, n_bins, is_sorted=True)
        assert bisected.counts.tolist() == every.counts.tolist()
        assert bisected.n_out_of_range == every.n_out_of_range


def _sorted_by_bytes(keys, spare=None):
    keys = np.array(keys, np.uint64)
    expected = np.sort(keys)
    found = sorted_uint64(keys, spare)
    assert found.dtype == np.uint64 and found.size == expected.size
    assert found.tobytes() == expected.tobytes()
    return found


@pytest.mark.parametrize(
    "keys",
    [
        [],
        [7],
        [2, 1],
        [5, 5, 5],
        [2**64 - 1, 0, 2**63, 2**63 - 1, 1, 256, 255],
        list(range(1000, 0, -1)),  # reversed
        list(range(1000)),  # already sorted
    ],
)
def test_sorting_by_bytes_equals_numpy(keys):
    _sorted_by_bytes(keys)


@pytest.mark.parametrize("n", [SPLIT_FROM_KEYS - 1, 200_000])
def test_sorting_by_bytes_on_many_keys(n):
    """Below SPLIT_FROM_KEYS the keys are sorted byte by byte, from there split first:
    full 64-bit keys (small parts, sorted by insertion), packed values above a few
    groups (large parts, sorted by an odd number of byte passes: they end in the keys'
    own array and are copied back), keys differing only in their top and bottom
    bytes (the passes between skipped), and keys all equal."""
    rng = np.random.default_rng(9)
    full = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    _sorted_by_bytes(full)
    values = rng.gamma(2.0, 1.5, n).astype(np.float32).view(np.uint32)
    packed = (values.astype(np.uint64) << np.uint64(32)) | rng.integers(
        0, 30, n, dtype=np.uint64
    )
    spare = np.empty(n + 1000, np.uint64)
    ends = set()
    for keys in (packed, packed & np.uint64(0xFF00_0000_0000_00FF)):
        own = keys.copy()
        found = _sorted_by_bytes(own, spare)
        ends.add(np.shares_memory(found, spare))
    assert ends == ({True} if n >= SPLIT_FROM_KEYS else {True, False})
    same = np.full(n, 12345, np.uint64)
    assert _sorted_by_bytes(same.copy(), spare).tolist() == same.tolist()


@pytest.mark.parametrize(
    ("n", "distinct"),
    [(50_000, 40), (SPLIT_FROM_KEYS + 1, 40), (SPLIT_FROM_KEYS + 1, 2**17)],
)
@pytest.mark.parametrize("from_byte", [1, 4, 6])
def test_sorting_by_high_bytes_keeps_the_order_of_equal_ones(from_byte, n, distinct):
    """Keys ordered by their bytes from ``from_byte`` up only: those equal there keep
    the order they came in (as a stable sort of the high bytes), whatever their low
    bytes. Sorted byte by byte, or split first into a few large parts, or (many
    distinct values) into many parts of a few keys sorted by insertion."""
    rng = np.random.default_rng(10)
    shift = np.uint64(8 * from_byte)
    low = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    keys = rng.integers(0, distinct, n, dtype=np.uint64) << shift  # many ties
    if distinct < 2**16:
        keys[::3] |= np.uint64(1) << np.uint64(63)  # the top byte too
    keys |= low & ((np.uint64(1) << shift) - np.uint64(1))
    high = keys >> shift
    expected = keys[np.argsort(high, kind="stable")]
    found = sorted_uint64(keys.copy(), from_byte=from_byte)
    assert found.tobytes() == expected.tobytes()


def test_sorting_by_bytes_refuses_other_arrays():
    with pytest.raises(ValueError, match="contiguous uint64"):
        sorted_uint64(np.arange(4))
    with pytest.raises(ValueError, match="contiguous uint64"):
        sorted_uint64(np.arange(8, dtype=np.uint64)[::2])
    with pytest.raises(ValueError, match="as long as the keys"):
        sorted_uint64(np.arange(4, dtype=np.uint64), np.empty(3, np.uint64))
    with pytest.raises(ValueError, match="from_byte"):
        sorted_uint64(np.arange(4, dtype=np.uint64), from_byte=8)
