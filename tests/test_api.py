"""The Python API on real DIALS files, against DIALS's own per-row counts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REFLECTION_FILES

from dials_spot_size_analysis.algorithms.histogram import histogram
from dials_spot_size_analysis.algorithms.spot_sizes import (
    SelectionError,
    whole_pixel_range,
)
from dials_spot_size_analysis.api import (
    ParameterError,
    analyse,
    analyse_sizes,
    json_document,
)
from dials_spot_size_analysis.formats import read_reflections
from dials_spot_size_analysis.formats.reflections import parse_reflections


def expected_sizes(truth, code="4", require=4, exclude=0):
    flags = np.array(truth["flags"], dtype=np.uint64)
    keep = ((flags & np.uint64(require)) == np.uint64(require)) & (
        (flags & np.uint64(exclude)) == 0
    )
    keep &= np.array(truth["shoebox_allocated"])
    return np.array(truth["count_mask_values"][code])[keep]


@pytest.mark.parametrize("name", sorted(REFLECTION_FILES))
def test_default_histogram_is_the_tutorials(shared_data, ground_truth, name):
    truth = ground_truth[name]
    result = analyse(shared_data / name, shared_data / REFLECTION_FILES[name])
    indexed = truth["n_indexed"] > 0
    sizes = expected_sizes(truth, require=4 if indexed else 0)
    assert sorted(result.sizes.tolist()) == sorted(sizes.tolist())
    if indexed and all(truth["shoebox_allocated"]):
        tutorial = truth["histogram_indexed_foreground"]
        assert result.histogram.counts.tolist() == tutorial["slots"]
        assert result.histogram.bin_centers.tolist() == tutorial["slot_centers"]
        assert result.histogram.n_out_of_range == tutorial["n_out_of_slot_range"]
    assert result.selection["n_rows"] == truth["nrows"]
    assert result.selection["n_counted"] == len(sizes)


def test_rows_without_pixel_data_are_excluded_not_zero(shared_data, ground_truth):
    truth = ground_truth["centroid_test_data/integrated.refl"]
    result = analyse(
        shared_data / "centroid_test_data/integrated.refl",
        shared_data / "centroid_test_data/indexed.expt",
    )
    flags = np.array(truth["flags"], dtype=np.uint64)
    indexed = (flags & np.uint64(4)) != 0
    allocated = np.array(truth["shoebox_allocated"])
    assert result.selection["n_selected"] == int(indexed.sum()) == 544
    assert result.selection["n_without_pixel_data"] == int((indexed & ~allocated).sum())
    assert result.selection["n_counted"] == int((indexed & allocated).sum())
    # DIALS's histogram counts the rows without pixel data as 0: ours does not.
    dials = truth["histogram_indexed_foreground"]["slots"]
    assert (
        result.histogram.counts[0]
        == dials[0] - result.selection["n_without_pixel_data"]
    )
    assert result.histogram.counts[1:].tolist() == dials[1:]


@pytest.mark.parametrize(
    "name,overrides,code,require,exclude",
    [
        (
            "centroid_test_data/indexed.refl",
            {"mask_code": "Valid+Foreground", "bins": 37, "data_max": 200},
            "5",
            4,
            0,
        ),
        (
            "centroid_test_data/indexed.refl",
            {
                "require": None,
                "mask_code": None,
                "data_min": 10,
                "data_max": 60,
                "bins": 5,
            },
            "0",
            0,
            0,
        ),
        (
            "I23_P12M_thau/indexed.refl",
            {"require": "indexed", "exclude": "centroid_outlier", "mask_code": "Valid"},
            "1",
            4,
            1 << 17,
        ),
        (
            "eiger_therm/strong.refl",
            {"require": "strong", "mask_code": "Valid+Background"},
            "2",
            32,
            0,
        ),
        (
            "centroid_test_data/integrated.refl",
            {"require": None, "mask_code": None, "bins": 20, "data_max": "Auto"},
            "0",
            0,
            0,
        ),
        (
            "eiger_therm/strong.refl",
            {
                "mask_code": "BackgroundUsed+Valid+Background",
                "bins": 20,
                "data_max": 10,
            },
            "19",
            0,
            0,
        ),
    ],
)
def test_other_flags_codes_and_ranges_match_recorded_counts(
    shared_data, ground_truth, name, overrides, code, require, exclude
):
    truth = ground_truth[name]
    result = analyse(
        shared_data / name, shared_data / REFLECTION_FILES[name], **overrides
    )
    sizes = expected_sizes(truth, code=code, require=require, exclude=exclude)
    params = result.parameters["histogram"]
    data_max = (
        whole_pixel_range(sizes, params["data_min"], None, params["bins"])[1]
        if overrides.get("data_max") == "Auto"
        else params["data_max"]
    )
    expected = histogram(sizes, params["data_min"], data_max, params["bins"])
    assert result.histogram.counts.tolist() == expected.counts.tolist()
    assert result.histogram.n_out_of_range == expected.n_out_of_range
    assert result.statistics["n"] == len(sizes) and result.statistics[
        "median"
    ] == np.median(sizes)


def test_dials_reflection_table_through_as_msgpack(shared_data):
    class FakeDialsTable:  # what DIALS's flex.reflection_table offers
        def as_msgpack(self):
            return (shared_data / "I23_P12M_thau/indexed.refl").read_bytes()

    result = analyse(FakeDialsTable(), shared_data / "I23_P12M_thau/indexed.expt")
    assert result.selection["n_counted"] == 205
    assert (
        analyse(parse_reflections(FakeDialsTable().as_msgpack())).selection["n_counted"]
        == 205
    )


def test_sizes_from_arrays():
    result = analyse_sizes(
        [3, 10, 25, 0, 7],
        flags=[4, 4, 4, 32, 36],
        has_pixel_data=[True, True, True, True, False],
        bins=10,
        data_max=100,
    )
    assert result.selection == {
        "n_datasets": 1,
        "n_rows": 5,
        "n_selected": 4,
        "n_without_pixel_data": 1,
        "n_counted": 3,
        "n_in_histogram": 3,
        "n_out_of_range": 0,
    }
    assert result.histogram.counts.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert json_document(result)["histogram"]["counts"] == [
        1,
        1,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]


def test_table_without_shoeboxes_uses_n_signal_and_says_so(shared_data, ground_truth):
    table = read_reflections(shared_data / "I23_P12M_thau/strong.refl")
    table.shoeboxes, table.shoebox_column_name = None, None
    result = analyse(table, shared_data / "I23_P12M_thau/imported.expt")
    truth = ground_truth["I23_P12M_thau/strong.refl"]
    assert result.sizes.tolist() == truth["count_mask_values"]["4"] == truth["n_signal"]
    assert "n_signal" in result.result.datasets[0].size_source_note


def test_table_without_shoeboxes_or_a_matching_column_is_an_error(shared_data):
    table = read_reflections(shared_data / "I23_P12M_thau/strong.refl")
    table.shoeboxes, table.shoebox_column_name = None, None
    with pytest.raises(
        SelectionError,
        match="has no shoebox column.*dials.find_spots.*integration.debug.output=True",
    ):
        analyse(table, mask_code="Background")


def test_experiments_that_do_not_belong(shared_data):
    with pytest.raises(
        SelectionError,
        match="not in the experiment list.*pass the .expt file written together",
    ):
        analyse(
            shared_data / "I23_P12M_thau/indexed.refl",
            shared_data / "eiger_therm/imported.expt",
        )


@pytest.mark.parametrize(
    "refl, expt",
    [
        ("I23_P12M_thau/indexed.refl", "I23_P12M_thau/indexed.expt"),  # one identifier
        ("ssx_CuNiR/indexed.refl", "ssx_CuNiR/indexed.expt"),  # five
    ],
)
def test_ids_the_identifier_map_does_not_name(shared_data, refl, expt):
    table = read_reflections(shared_data / refl)
    ids = np.array(table.columns["id"])
    ids[[3, 4]] = [7, 9]
    table.columns["id"] = ids
    with pytest.raises(
        SelectionError,
        match=r"has rows with id \[7, 9\] that its identifier map does not name: "
        "the file is inconsistent",
    ):
        analyse(table, shared_data / expt)


def test_several_datasets_together_and_apart(shared_data):
    pairs = [
        ("I23_P12M_thau/indexed.refl", "I23_P12M_thau/indexed.expt"),
        ("eiger_therm/strong.refl", "eiger_therm/imported.expt"),
    ]
    together = analyse(
        [shared_data / r for r, _ in pairs], [shared_data / e for _, e in pairs]
    )
    apart = [analyse(shared_data / r, shared_data / e) for r, e in pairs]
    assert (
        together.histogram.counts.tolist()
        == (apart[0].histogram + apart[1].histogram).counts.tolist()
    )
    assert [d.n_counted for d in together.result.datasets] == [205, 112]
    assert [d.require for d in together.result.datasets] == [["indexed"], []]
    assert len(together.result.by_experiment) == 2
    assert {e["identifier"] for e in together.result.by_experiment} == {
        "f2631175-384a-00b1-a281-8ca7ffd90066",
        "5684a4f6-055b-79c4-db71-81f3df1142b7",
    }


def test_multi_panel_breakdown_and_resolution(shared_data):
    result = analyse(
        shared_data / "I23_P12M_thau/indexed.refl",
        shared_data / "I23_P12M_thau/indexed.expt",
    )
    assert len(result.result.by_panel) == 24
    assert sum(p["n"] for p in result.result.by_panel) == 205
    shells = result.result.by_resolution
    assert sum(s["n"] for s in shells) == 205 and len(shells) == 10
    assert all(s["d_max"] > s["d_min"] for s in shells)
    assert {
        "spot_size_histogram",
        "spot_size_per_image",
        "spot_size_per_resolution",
        "spot_size_per_panel",
    } <= set(json_document(result)["plots"])


def test_parameter_errors(shared_data):
    path = shared_data / "eiger_therm/strong.refl"
    with pytest.raises(
        ParameterError, match="data_max .5. must be greater than histogram.data_min .5."
    ):
        analyse(path, data_min=5, data_max=5)
    with pytest.raises(ParameterError, match="unrecognised flag name 'indexd'"):
        analyse(path, require="indexd")
    with pytest.raises(
        SelectionError, match="no reflection of 112 passes flags.require=indexed"
    ):
        analyse(path, require="indexed")
