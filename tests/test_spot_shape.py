"""Spot shapes (algorithms/spot_shape.py): every quantity against a plain per-row
reference written here, against what DIALS itself wrote, on constructed edge cases, and
the summaries."""

from __future__ import annotations

import dataclasses
import json
import mmap
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dials_spot_size_analysis.algorithms.spot_shape import (
    STORED_INTEGERS,
    STORED_REALS,
    ShapesToMeasure,
    SpotShapes,
    bbox_disagreements,
    beam_centres_px,
    elongation,
    measure_records,
    measure_spot_shapes,
    radial_tangential_widths,
    store_shapes,
    summarise_spot_shapes,
)
from dials_spot_size_analysis.formats import (
    ShoeboxColumn,
    read_experiments,
    read_reflections,
    source,
)
from dials_spot_size_analysis.formats.experiments import Beam, Panel
from dials_spot_size_analysis.formats.shoebox_encoding import encode_shoeboxes

SHOEBOX_FILES = (
    "centroid_test_data/indexed.refl",  # int32 masks
    "centroid_test_data/integrated.refl",  # most rows without pixel data
    "centroid_test_data_refined/refined.refl",
    "I23_P12M_thau/indexed.refl",
    "I23_P12M_thau/strong.refl",
    "eiger_therm/strong.refl",
    "ssx_CuNiR/indexed.refl",
    "ssx_CuNiR/strong_5.refl",
)
SPOT_FINDING_FILES = (
    "I23_P12M_thau/strong.refl",
    "eiger_therm/strong.refl",
    "ssx_CuNiR/strong_5.refl",
)
INTEGER_FIELDS = ("n_coded", "extent_x", "extent_y", "extent_z", "footprint")
REAL_FIELDS = (
    "total_weight",
    "rms_width_x",
    "rms_width_y",
    "rms_width_z",
    "covariance_xy",
    "elongation",
    "peak_centroid_distance",
    "fill",
)
_column_cache: dict = {}


def column_of(shared_data, name: str):
    if name not in _column_cache:
        table = read_reflections(shared_data / name)
        _column_cache[name] = (table, table.shoeboxes)
    return _column_cache[name]


# --------------------------------------------------------------- the plain reference


def reference_row(column: ShoeboxColumn, row: int, code: int) -> dict:
    """Every quantity of one row, straight from the definitions, in float64 numpy."""
    nan = float("nan")
    result = dict.fromkeys(INTEGER_FIELDS, 0)
    result.update(dict.fromkeys(REAL_FIELDS, nan), total_weight=0.0)
    result["centroid"] = [nan, nan, nan]
    pixels = column.pixels(row)
    if pixels is None:
        return result
    data, mask, background = pixels
    coded = (mask & code) == code
    k, j, i = np.nonzero(coded)  # C order: z, then y, then x
    if len(i) == 0:
        return result
    x0, _, y0, _, z0, _ = (int(v) for v in column.bbox[row])
    x, y, z = x0 + i + 0.5, y0 + j + 0.5, z0 + k + 0.5
    result["n_coded"] = len(i)
    result["extent_x"] = int(i.max() - i.min() + 1)
    result["extent_y"] = int(j.max() - j.min() + 1)
    result["extent_z"] = int(k.max() - k.min() + 1)
    result["footprint"] = int(max(np.sum(k == image) for image in set(k.tolist())))
    result["fill"] = len(i) / (
        result["extent_x"] * result["extent_y"] * result["extent_z"]
    )
    signal = data[coded].astype(np.float64)
    weight = np.maximum(signal - background[coded].astype(np.float64), 0.0)
    total = weight.sum()
    result["total_weight"] = total
    if total == 0:
        return result
    mx, my, mz = (weight @ x) / total, (weight @ y) / total, (weight @ z) / total
    vx = (weight @ (x - mx) ** 2) / total
    vy = (weight @ (y - my) ** 2) / total
    cxy = (weight @ ((x - mx) * (y - my))) / total
    result["centroid"] = [mx, my, mz]
    result["rms_width_x"], result["rms_width_y"] = np.sqrt(vx), np.sqrt(vy)
    result["rms_width_z"] = np.sqrt((weight @ (z - mz) ** 2) / total)
    result["covariance_xy"] = cxy
    smallest, largest = np.linalg.eigvalsh([[vx + 1 / 12, cxy], [cxy, vy + 1 / 12]])
    result["elongation"] = np.sqrt(largest / smallest)
    peak = int(np.argmax(signal))  # the first maximum, in C order
    result["peak_centroid_distance"] = np.sqrt(
        (x[peak] - mx) ** 2 + (y[peak] - my) ** 2 + (z[peak] - mz) ** 2
    )
    return result


def assert_rows_equal_reference(shapes: SpotShapes, column, rows, code) -> None:
    for position, row in enumerate(rows):
        expected = reference_row(column, int(row), code)
        for name in INTEGER_FIELDS:
            assert getattr(shapes, name)[position] == expected[name], (row, name)
        assert shapes.has_pixel_data[position] == (column.present[row] != 0)
        for name in REAL_FIELDS:
            np.testing.assert_allclose(
                getattr(shapes, name)[position],
                expected[name],
                rtol=1e-9,
                atol=1e-12,
                err_msg=f"row {row}: {name}",
            )
        np.testing.assert_allclose(
            shapes.centroid[position], expected["centroid"], rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize("name", SHOEBOX_FILES)
@pytest.mark.parametrize("code", [4, 5, 0])
def test_every_quantity_equals_plain_reference(shared_data, name, code):
    _, column = column_of(shared_data, name)
    rows = np.arange(len(column))
    if len(rows) > 400:  # a fixed sample of the bigger files keeps this to seconds
        rows = np.sort(np.random.default_rng(3).choice(rows, 400, replace=False))
    whole = measure_spot_shapes(column, code)
    assert len(whole) == len(column)
    assert_rows_equal_reference(
        measure_spot_shapes(column, code, rows=rows), column, rows, code
    )
    for field in ("n_coded", "elongation", "centroid"):  # a subset is the same rows
        np.testing.assert_array_equal(
            getattr(measure_spot_shapes(column, code, rows=rows), field),
            getattr(whole, field)[rows],
        )


def test_the_reference_checks_every_measured_field():
    """The plain reference names the fields it checks itself (no shared code); a field
    the product adds must be added to it, or this fails."""
    from dataclasses import fields

    from dials_spot_size_analysis.algorithms.spot_shape import SpotShapes

    derived = {"has_pixel_data", "centroid", "rms_width_radial", "rms_width_tangential"}
    measured = {f.name for f in fields(SpotShapes)} - derived
    assert measured == set(INTEGER_FIELDS) | set(REAL_FIELDS)


@pytest.mark.parametrize("name", SHOEBOX_FILES)
def test_sizes_equal_dials_count_mask_values(shared_data, ground_truth, name):
    _, column = column_of(shared_data, name)
    for code in ("0", "4", "5", "1", "19"):
        shapes = measure_spot_shapes(column, int(code))
        assert shapes.n_coded.tolist() == ground_truth[name]["count_mask_values"][code]
    assert shapes.has_pixel_data.tolist() == ground_truth[name]["shoebox_allocated"]


# ------------------------------------------------------- against what DIALS wrote


@pytest.mark.parametrize(
    "name",
    SPOT_FINDING_FILES
    + (
        "I23_P12M_thau/indexed.refl",  # dials.index and dials.refine carry the
        "centroid_test_data/indexed.refl",  # spot-finding shoeboxes and columns on
        "centroid_test_data_refined/refined.refl",
        "ssx_CuNiR/indexed.refl",
    ),
)
@pytest.mark.parametrize("code", [4, 5])
def test_spot_finding_tables_agree_with_dials_columns(shared_data, name, code):
    """On spot-finding shoeboxes the bbox is the spot's tight extent, xyzobs.px.value the
    data-weighted mean of the spot pixels' centres (background 0 there, so the weight
    is the data), and n_signal the Valid|Foreground count. The centroids agree to
    2e-15 px: only the order of the floating-point sums differs from DIALS's."""
    table, column = column_of(shared_data, name)
    shapes = measure_spot_shapes(column, code)
    bbox = table["bbox"].astype(np.int64)
    assert (shapes.extent_x == bbox[:, 1] - bbox[:, 0]).all()
    assert (shapes.extent_y == bbox[:, 3] - bbox[:, 2]).all()
    assert (shapes.extent_z == bbox[:, 5] - bbox[:, 4]).all()
    if "n_signal" in table:
        assert (shapes.n_coded == table["n_signal"]).all()
    difference = np.abs(shapes.centroid - table["xyzobs.px.value"]).max()
    assert difference < 1e-12, difference  # measured: at most 1.8e-15 px
    assert (shapes.peak_centroid_distance <= 2.0 + 1e-9).all()  # max_separation = 2


# ------------------------------------------------------------ constructed shoeboxes


def constructed(boxes, mask_kind=2):
    """A column from (bbox, data, mask, background) tuples (None arrays: no pixel data)."""
    bbox = np.array([box[0] for box in boxes], dtype=np.int32)
    pixels = [None if box[1] is None else box[1:] for box in boxes]
    blob = encode_shoeboxes(np.zeros(len(boxes)), bbox, pixels, mask_kind=mask_kind)
    return ShoeboxColumn.from_blob(blob, len(boxes))


def plane(values, dtype=np.float32):
    return np.array(values, dtype=dtype)[None, :, :]


def test_no_coded_pixel_and_no_pixel_data():
    box = (10, 13, 20, 21, 5, 6)
    column = constructed(
        [
            (box, plane([[1, 2, 3]]), plane([[1, 2, 1]], np.uint8), plane([[0, 0, 0]])),
            (box, None, None, None),
        ]
    )
    shapes = measure_spot_shapes(column, 4)
    assert shapes.has_pixel_data.tolist() == [True, False]
    for name in INTEGER_FIELDS:
        assert getattr(shapes, name).tolist() == [0, 0]
    assert shapes.total_weight.tolist() == [0.0, 0.0]
    for name in REAL_FIELDS[1:]:
        assert np.isnan(getattr(shapes, name)).all(), name
    assert np.isnan(shapes.centroid).all()
    summary = summarise_spot_shapes(shapes)
    assert summary["rows_with_pixel_data"] == 1
    assert summary["rows_with_coded_pixels"] == 0
    assert "n_coded" not in summary["quantities"]  # the size: the main statistics
    assert summary["quantities"]["extent_x"]["statistics"]["median"] is None


def test_zero_total_weight_keeps_counts_and_makes_weighted_values_nan():
    box = (0, 3, 0, 1, 0, 1)
    column = constructed(
        [(box, plane([[2, 5, 1]]), plane([[5, 5, 0]], np.uint8), plane([[2, 7, 0]]))]
    )
    shapes = measure_spot_shapes(column, 5)
    assert (shapes.n_coded[0], shapes.extent_x[0], shapes.fill[0]) == (2, 2, 1.0)
    assert shapes.total_weight[0] == 0.0
    assert np.isnan(shapes.centroid).all() and np.isnan(shapes.elongation[0])
    assert np.isnan(shapes.peak_centroid_distance[0])
    summary = summarise_spot_shapes(shapes)
    assert summary["rows_with_zero_weight"] == 1
    assert summary["quantities"]["rms_width_x"]["statistics"]["n"] == 0
    assert summary["quantities"]["fill"]["statistics"]["n"] == 1
    json.dumps(summary, allow_nan=False)


def test_negative_signal_counts_as_zero_weight():
    box = (100, 103, 50, 51, 7, 8)
    column = constructed(
        [(box, plane([[1, 1, 3]]), plane([[4, 4, 4]], np.uint8), plane([[0, 5, 0]]))]
    )
    shapes = measure_spot_shapes(column, 4)
    # weights 1, 0, 3 at x = 100.5, 101.5, 102.5 (with -4 the total would be 0)
    assert shapes.centroid[0].tolist() == [102.0, 50.5, 7.5]
    assert shapes.total_weight[0] == 4.0
    assert shapes.rms_width_x[0] == pytest.approx(np.sqrt(0.75), rel=1e-12)
    assert shapes.peak_centroid_distance[0] == pytest.approx(0.5, rel=1e-12)


def test_single_pixel():
    box = (7, 8, 9, 10, 0, 1)
    column = constructed(
        [(box, plane([[12.5]]), plane([[5]], np.uint8), plane([[0.5]]))]
    )
    shapes = measure_spot_shapes(column, 4)
    assert shapes.centroid[0].tolist() == [7.5, 9.5, 0.5]
    assert [getattr(shapes, name)[0] for name in INTEGER_FIELDS] == [1, 1, 1, 1, 1]
    assert shapes.rms_width_x[0] == shapes.rms_width_y[0] == shapes.rms_width_z[0] == 0
    assert shapes.elongation[0] == 1.0  # round, by the 1/12 px^2 pixel variance
    assert shapes.fill[0] == 1.0 and shapes.peak_centroid_distance[0] == 0.0


@pytest.mark.parametrize("length", [2, 5, 17])
def test_streaks(length):
    """A uniform line of L pixels has elongation exactly L (L pixels long, 1 wide); a
    diagonal one sqrt(2 L^2 - 1), and fills 1/L of its box."""
    straight = (0, length, 3, 4, 0, 1)
    diagonal = (0, length, 0, length, 0, 1)
    line = np.ones((1, 1, length), np.float32)
    eye = np.eye(length, dtype=np.float32)[None]
    column = constructed(
        [
            (straight, 3 * line, 4 * line.astype(np.uint8), 0 * line),
            (diagonal, 3 * eye, 4 * eye.astype(np.uint8), 0 * eye),
        ]
    )
    shapes = measure_spot_shapes(column, 4)
    assert shapes.elongation[0] == pytest.approx(length, rel=1e-12)
    assert shapes.elongation[1] == pytest.approx(np.sqrt(2 * length**2 - 1), rel=1e-12)
    assert shapes.rms_width_x[0] == pytest.approx(np.sqrt((length**2 - 1) / 12))
    assert shapes.rms_width_y[0] == 0.0
    assert shapes.fill.tolist() == [1.0, 1 / length]
    assert shapes.extent_x.tolist() == [length, length]
    assert shapes.footprint.tolist() == [length, length]
    assert shapes.covariance_xy[1] == pytest.approx((length**2 - 1) / 12)


def test_spots_one_pixel_thick_have_widths_of_exactly_zero():
    """A spot on one image (or one row, or one column) of a bigger box has a width of
    exactly 0 along that axis, whatever its weights: the sums are taken relative to the
    first coded pixel, so no rounding is left to survive the square root."""
    rng = np.random.default_rng(11)
    boxes = []
    for _ in range(30):
        data = np.zeros((4, 5, 6), np.float32)
        # on image 3: a line in x and one in y, weights of very different sizes (so that
        # float64 sums of them round)
        data[3, 3, 1:] = 10 ** rng.uniform(-6, 6, 5)
        data[3, 1:, 4] = 10 ** rng.uniform(-6, 6, 4)
        mask = np.where(data > 0, 5, 0).astype(np.uint8)
        boxes.append(((1000, 1006, 2000, 2005, 97, 101), data, mask, 0 * data))
    shapes = measure_spot_shapes(constructed(boxes), 4)
    assert (shapes.rms_width_z == 0.0).all()
    assert (shapes.centroid[:, 2] == 100.5).all()
    assert (shapes.rms_width_x > 0).all() and (shapes.rms_width_y > 0).all()


def test_peak_ties_take_the_first_in_c_order_and_footprint_per_image():
    box = (0, 3, 0, 2, 0, 3)  # nz = 3, ny = 2, nx = 3
    data = np.zeros((3, 2, 3), np.float32)
    mask = np.zeros((3, 2, 3), np.uint8)
    mask[0, 0, :2] = mask[1] = mask[2, 1, 2] = 5  # 2, 6 and 1 pixels per image
    data[mask != 0] = 1.0
    data[1, 1, 0] = data[1, 0, 2] = data[2, 1, 2] = 9.0  # three tied maxima
    column = constructed([(box, data, mask, np.zeros_like(data))])
    shapes = measure_spot_shapes(column, 4)
    assert shapes.footprint[0] == 6 and shapes.extent_z[0] == 3
    centroid = shapes.centroid[0]
    peak = np.array([2.5, 0.5, 1.5])  # image 1, row 0, column 2: first in C order
    assert shapes.peak_centroid_distance[0] == pytest.approx(
        np.linalg.norm(peak - centroid), rel=1e-12
    )
    assert shapes.fill[0] == pytest.approx(9 / 18)


def test_int32_masks_use_the_low_byte_and_give_the_same_shapes():
    box = (0, 2, 0, 2, 0, 1)
    data = plane([[1, 2], [3, 4]])
    mask = plane([[4 | 256, 256], [5, 0]], np.int32)
    wide = constructed([(box, data, mask, 0 * data)], mask_kind=1)
    narrow = constructed([(box, data, mask & 255, 0 * data)], mask_kind=2)
    for column in (wide, narrow):
        shapes = measure_spot_shapes(column, 4)
        assert shapes.n_coded[0] == 2
        assert shapes.centroid[0].tolist() == [0.5, 0.5 + 3 / 4, 0.5]
    assert measure_spot_shapes(wide, 0).n_coded[0] == 4


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mask_kind=st.sampled_from([1, 2]))
def test_random_shoeboxes_equal_plain_reference(seed, mask_kind):
    """Boxes anywhere, coded pixels anywhere in them (first coded pixel on any image),
    negative and zero signals, ties: every quantity as the plain reference says."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(rng.integers(1, 6)):
        shape = rng.integers(1, 6, size=3)  # nz, ny, nx
        origin = rng.integers(-50, 3000, size=3)
        bbox = (
            origin[2],
            origin[2] + shape[2],
            origin[1],
            origin[1] + shape[1],
            origin[0],
            origin[0] + shape[0],
        )
        mask = rng.choice([0, 1, 4, 5, 21], size=shape, p=[0.4, 0.1, 0.2, 0.2, 0.1])
        data = rng.integers(0, 6, size=shape).astype(np.float32)  # small: ties
        background = rng.choice([0.0, 0.5, 2.0, 9.0], size=shape).astype(np.float32)
        boxes.append((bbox, data, mask.astype(np.uint8), background))
    if rng.random() < 0.2:
        boxes.append(((0, 2, 0, 2, 0, 1), None, None, None))
    column = constructed(boxes, mask_kind=mask_kind)
    for code in (4, 5, 0, 16):
        shapes = measure_spot_shapes(column, code)
        assert_rows_equal_reference(shapes, column, range(len(column)), code)


def test_errors():
    column = constructed(
        [((0, 1, 0, 1, 0, 1), plane([[1]]), plane([[4]], np.uint8), plane([[0]]))]
    )
    with pytest.raises(ValueError, match="outside 0..255"):
        measure_spot_shapes(column, 256)
    with pytest.raises(IndexError):
        measure_spot_shapes(column, 4, rows=np.array([1]))
    with pytest.raises(ValueError, match="one entry per record"):
        measure_records(
            column.blob, column.present, column.data_offset[:0], column.bbox, 4
        )
    with pytest.raises(ValueError, match="rows"):
        measure_records(
            column.blob,
            column.present,
            column.data_offset,
            column.bbox,
            4,
            out=SpotShapes.empty(2),
        )
    outside = column.data_offset + column.blob.size
    with pytest.raises(ValueError, match="outside the column"):
        measure_records(column.blob, column.present, outside, column.bbox, 4)
    with pytest.raises(ValueError, match="outside the column"):
        measure_records(
            column.blob[:-1], column.present, column.data_offset, column.bbox, 4
        )
    with pytest.raises(ValueError, match="marker"):
        measure_records(
            column.blob, column.present + 3, column.data_offset, column.bbox, 4
        )
    huge = np.array([[0, 2**31 - 1, 0, 2**31 - 1, -(2**31), 2**31 - 1]], np.int32)
    with pytest.raises(ValueError, match="outside the column"):
        measure_records(column.blob, column.present, column.data_offset, huge, 4)
    with pytest.raises(ValueError, match="inverted bbox"):
        measure_records(column.blob, column.present, column.data_offset, -huge, 4)
    with pytest.raises(ValueError, match="one entry per row"):
        summarise_spot_shapes(measure_spot_shapes(column, 4), panel=np.zeros(2, int))
    # Measured straight into a caller's arrays: the same checks, naming the row.
    broken = dataclasses.replace(column, present=column.present + 3)
    with pytest.raises(ValueError, match="record 0 has an unknown pixel-data marker"):
        ShapesToMeasure.of(broken, 4).store(
            np.zeros((1, 2)),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            [np.zeros(1, np.int32) for _ in STORED_INTEGERS],
            [np.zeros(1) for _ in STORED_REALS],
        )
    assert len(measure_spot_shapes(column, 4, rows=np.array([], int))) == 0
    assert measure_spot_shapes(column, 4, rows=np.array([True])).n_coded.tolist() == [1]
    assert measure_spot_shapes(column, 4, rows=[-1]).n_coded.tolist() == [1]


# ------------------------------------------------------------ splits and streaming


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_row_splits_concatenated_equal_the_whole(shared_data, data):
    _, column = column_of(shared_data, "centroid_test_data/integrated.refl")
    n = len(column)
    whole = measure_spot_shapes(column, 5)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    parts = [
        measure_spot_shapes(column, 5, rows=np.arange(a, b))
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    joined = SpotShapes.concatenate(parts)
    for field in dataclasses.fields(SpotShapes):
        np.testing.assert_array_equal(
            getattr(joined, field.name), getattr(whole, field.name)
        )
    chosen = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=40)), int)
    picked = measure_spot_shapes(column, 5, rows=chosen)  # any order, repeats
    np.testing.assert_array_equal(picked.centroid, whole.centroid[chosen])
    np.testing.assert_array_equal(picked.fill, whole.fill[chosen])


def test_chunked_and_memory_mapped_measuring_equals_one_pass(shared_data, tmp_path):
    """Stretch by stretch over a memory-mapped copy, as the program measures a big
    table (the reader releasing each stretch's pages), equals one pass."""
    from dials_spot_size_analysis.formats.shoeboxes import indexed_chunks

    _, column = column_of(shared_data, "centroid_test_data/indexed.refl")
    copies = 12
    path = tmp_path / "column.bin"
    path.write_bytes(np.tile(np.asarray(column.blob), copies).tobytes())
    released = []
    really_release = source.release_pages

    def release(array):
        released.append(source._mapped_range(array) is not None)
        really_release(array)

    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        blob = np.frombuffer(mapped, np.uint8)
        expected = measure_spot_shapes(column, 4)
        with mock.patch.object(source, "release_pages", release):
            parts = [
                measure_spot_shapes(stretch, 4)
                for _, _, stretch in indexed_chunks(
                    blob, copies * len(column), 3 * len(column), release_pages=True
                )
            ]
        shapes = SpotShapes.concatenate(parts)
        assert released == [True] * 4
        for field in ("n_coded", "centroid", "elongation", "footprint"):
            np.testing.assert_array_equal(
                getattr(shapes, field),
                np.concatenate([getattr(expected, field)] * copies),
            )
        del blob, parts
    finally:
        mapped.close()


# ----------------------------------------------------------------- beam geometry


def plain_beam_centre(s0, panel):
    """Ray-plane intersection written out: t s0 on the plane through origin with the
    panel's normal, then its coordinates along the (orthonormal) panel axes."""
    normal = np.cross(panel.fast_axis, panel.slow_axis)
    t = (panel.origin @ normal) / (s0 @ normal)
    offset = t * s0 - panel.origin
    return (
        offset @ panel.fast_axis / panel.pixel_size[0],
        offset @ panel.slow_axis / panel.pixel_size[1],
    )


@pytest.mark.parametrize(
    "name,n_panels",
    [("I23_P12M_thau/indexed.expt", 24), ("centroid_test_data/indexed.expt", 1)],
)
def test_beam_centres_equal_plain_ray_plane_intersection(shared_data, name, n_panels):
    experiment = read_experiments(shared_data / name)[0]
    panels = experiment.detector.panels
    centres = beam_centres_px(experiment.beam, experiment.detector)
    assert centres.shape == (n_panels, 2)
    for panel, centre in zip(panels, centres):
        assert abs(panel.fast_axis @ panel.slow_axis) < 1e-9
        np.testing.assert_allclose(
            centre, plain_beam_centre(experiment.beam.s0, panel), rtol=1e-9, atol=1e-6
        )
    if n_panels == 1:  # PILATUS 6M, 2463 x 2527 pixels: the beam near the middle
        width, height = panels[0].image_size
        assert (
            abs(centres[0, 0] - width / 2) < 50 and abs(centres[0, 1] - height / 2) < 50
        )
    np.testing.assert_array_equal(beam_centres_px(experiment.beam.s0, panels), centres)


def test_beam_parallel_to_a_panel_gives_nan():
    beam = Beam(wavelength=1.0, direction=np.array([0.0, 0.0, 1.0]))
    square = Panel(
        "facing",
        np.array([-10.0, 10.0, -100.0]),
        np.array([1.0, 0.0, 0.0]),
        np.array([0.0, -1.0, 0.0]),
        (0.1, 0.2),
        (200, 100),
    )
    edge_on = Panel(
        "edge-on",
        np.array([5.0, -5.0, -100.0]),
        np.array([0.0, 0.0, 1.0]),
        np.array([0.0, 1.0, 0.0]),
        (0.1, 0.1),
        (100, 100),
    )
    centres = beam_centres_px(beam, [square, edge_on])
    np.testing.assert_allclose(centres[0], [100.0, 50.0])
    assert np.isnan(centres[1]).all()


def test_radial_and_tangential_widths():
    centroid = np.array([[10.0, 0.0], [0.0, -7.0], [3.0, 3.0], [0.0, 0.0]])
    beam = np.zeros((4, 2))
    vx, vy, cxy = np.array([4.0, 4.0, 2.5, 4.0]), np.array([1.0, 1.0, 2.5, 1.0]), 1.5
    radial, tangential = radial_tangential_widths(
        centroid, vx, vy, np.array([0.0, 0.0, cxy, 0.0]), beam
    )
    np.testing.assert_allclose(radial[:3], [2.0, 1.0, 2.0])
    np.testing.assert_allclose(tangential[:3], [1.0, 2.0, 1.0])
    assert np.isnan(radial[3]) and np.isnan(tangential[3])  # at the beam centre


def test_radial_tangential_on_real_spots(shared_data):
    table, column = column_of(shared_data, "I23_P12M_thau/indexed.refl")
    experiment = read_experiments(shared_data / "I23_P12M_thau/indexed.expt")[0]
    centres = beam_centres_px(experiment.beam, experiment.detector)[column.panel]
    shapes = measure_spot_shapes(column, 4, beam_centre=centres)
    radial, tangential = shapes.rms_width_radial, shapes.rms_width_tangential
    assert np.isfinite(radial).all()
    np.testing.assert_allclose(
        radial**2 + tangential**2, shapes.rms_width_x**2 + shapes.rms_width_y**2
    )
    for row in range(0, len(column), 17):  # the projection, written out per row
        u = shapes.centroid[row, :2] - centres[row]
        u /= np.linalg.norm(u)
        c = np.array(
            [
                [shapes.rms_width_x[row] ** 2, shapes.covariance_xy[row]],
                [shapes.covariance_xy[row], shapes.rms_width_y[row] ** 2],
            ]
        )
        assert radial[row] == pytest.approx(np.sqrt(u @ c @ u), rel=1e-9)
    plain = measure_spot_shapes(column, 4)
    assert np.isnan(plain.rms_width_radial).all()
    again = plain.with_beam_centres(centres)
    np.testing.assert_array_equal(again.rms_width_tangential, tangential)


def test_store_shapes_equals_beam_centres_then_a_copy(shared_data):
    _, column = column_of(shared_data, "I23_P12M_thau/indexed.refl")
    experiment = read_experiments(shared_data / "I23_P12M_thau/indexed.expt")[0]
    table = beam_centres_px(experiment.beam, experiment.detector)
    rows = column.panel.astype(np.int64)
    rows[::5] = -1  # unknown: no beam centre
    rows[1] = len(table)  # past the table: unknown too
    shapes = measure_spot_shapes(column, 4)
    gathered = np.where(
        (rows >= 0)[:, None] & (rows < len(table))[:, None],
        table[rows % len(table)],
        np.nan,
    )
    expected = shapes.with_beam_centres(gathered)
    integers = [np.empty(len(rows), np.int32) for _ in STORED_INTEGERS]
    reals = [np.empty(len(rows), np.float32) for _ in STORED_REALS]
    store_shapes(shapes, table, rows, integers, reals)
    for name, stored in zip(STORED_INTEGERS, integers):
        assert stored.tolist() == getattr(expected, name).tolist(), name
    for name, stored in zip(STORED_REALS, reals):
        want = getattr(expected, name).astype(np.float32)
        assert np.array_equal(stored.view(np.int32), want.view(np.int32)), name
    assert np.isnan(reals[4][::5]).all() and np.isfinite(reals[4][2:5]).all()
    with pytest.raises(ValueError, match="one destination per stored quantity"):
        store_shapes(shapes, table, rows, integers[:3], reals)


def test_shapes_measured_in_place_equal_measured_then_stored(shared_data):
    from dials_spot_size_analysis.algorithms import spot_shape

    _, column = column_of(shared_data, "I23_P12M_thau/indexed.refl")
    experiment = read_experiments(shared_data / "I23_P12M_thau/indexed.expt")[0]
    table = beam_centres_px(experiment.beam, experiment.detector)
    chosen = np.ones(len(column), bool)
    chosen[::9] = False
    beam_rows = column.panel[chosen].astype(np.int64)
    beam_rows[::4] = -1  # unknown: no beam centre
    beam_rows[1] = len(table)  # past the table: unknown too

    def destinations(n):
        integers = [np.full(n, -7, np.int32) for _ in STORED_INTEGERS]
        return integers, [np.full(n, -7.0, np.float32) for _ in STORED_REALS]

    expected_integers, expected_reals = destinations(len(beam_rows))
    measured = measure_spot_shapes(column, 4, rows=chosen)
    store_shapes(measured, table, beam_rows, expected_integers, expected_reals)
    integers, reals = destinations(len(beam_rows))
    sizes = np.zeros(len(beam_rows), np.int64)
    to_measure = spot_shape.ShapesToMeasure.of(column, 4, chosen)
    assert len(to_measure) == len(beam_rows) == 184
    to_measure.store(table, beam_rows, sizes, integers, reals)
    assert sizes.tolist() == measured.n_coded.tolist()
    for got, want in zip(integers + reals, expected_integers + expected_reals):
        assert np.array_equal(got.view(np.int32), want.view(np.int32))
    assert np.isnan(reals[4][::4]).all() and np.isfinite(reals[4][2:4]).all()
    with pytest.raises(ValueError, match="one destination per stored quantity"):
        to_measure.store(table, beam_rows, sizes, integers[:3], reals)
    with pytest.raises(ValueError, match="one entry per row measured"):
        to_measure.store(table, beam_rows, sizes[:-1], integers, reals)
    with pytest.raises(ValueError, match="one entry per row measured"):
        to_measure.store(table, beam_rows, sizes, integers, [*reals[:-1], reals[0][1:]])
    # Rows as numbers, negative ones from the end, and every row by default.
    numbers = spot_shape.ShapesToMeasure.of(column, 4, [-1, 0]).rows
    assert numbers.tolist() == [len(column) - 1, 0]
    assert len(spot_shape.ShapesToMeasure.of(column, 4)) == len(column)
    with pytest.raises(IndexError):
        spot_shape.ShapesToMeasure.of(column, 4, [len(column)])
    with pytest.raises(ValueError, match="outside 0..255"):
        spot_shape.ShapesToMeasure.of(column, 256)


def test_the_analysis_keeps_each_spots_radial_and_tangential_widths(shared_data):
    from dials_spot_size_analysis.api import analyse

    folder = shared_data / "I23_P12M_thau"
    spots = analyse(folder / "indexed.refl", folder / "indexed.expt").result.spot_sizes
    table, column = column_of(shared_data, "I23_P12M_thau/indexed.refl")
    experiment = read_experiments(folder / "indexed.expt")[0]
    centres = beam_centres_px(experiment.beam, experiment.detector)[column.panel]
    shapes = measure_spot_shapes(column, 4, beam_centre=centres)
    counted = np.flatnonzero(table["flags"] & 4)  # indexed, every row with pixels
    assert len(spots) == len(counted) == 205
    for name in STORED_INTEGERS + STORED_REALS:
        kept = getattr(spots, name)
        assert (
            kept.tolist() == getattr(shapes, name)[counted].astype(kept.dtype).tolist()
        ), name
    assert (spots.rms_width_radial != spots.rms_width_tangential).all()


def test_elongation_function_matches_the_kernel(shared_data):
    _, column = column_of(shared_data, "centroid_test_data/indexed.refl")
    shapes = measure_spot_shapes(column, 4)
    np.testing.assert_allclose(
        elongation(shapes.variance_x, shapes.variance_y, shapes.covariance_xy),
        shapes.elongation,
        rtol=1e-12,
    )


# --------------------------------------------------------------- bbox disagreement


def test_bbox_disagreements_on_a_real_file(shared_data, ground_truth):
    name = "centroid_test_data/integrated.refl"
    table, column = column_of(shared_data, name)
    shoebox_bbox = np.array(ground_truth[name]["shoebox_bbox"])
    expected = np.flatnonzero((shoebox_bbox != table["bbox"]).any(axis=1))
    count, rows = bbox_disagreements(column.bbox, table["bbox"])
    assert count == len(expected) == 1991
    assert rows.tolist() == expected.tolist()
    table, column = column_of(shared_data, "I23_P12M_thau/indexed.refl")
    assert bbox_disagreements(column.bbox, table["bbox"])[0] == 0


def test_bbox_disagreements_never_raise():
    boxes = np.arange(18, dtype=np.int32).reshape(3, 6)
    assert bbox_disagreements(boxes, None)[0] == 0
    assert bbox_disagreements(None, boxes)[0] == 0
    count, rows = bbox_disagreements(boxes, boxes[:2])
    assert (count, rows.tolist()) == (1, [2])
    assert bbox_disagreements(boxes, np.zeros(7))[0] == 3
    assert bbox_disagreements(boxes, "nonsense")[0] >= 0
    words = np.array([["a"] * 6] * 3)  # not numbers: numpy compares, all differ
    assert bbox_disagreements(boxes, words)[0] == 3
    assert bbox_disagreements(boxes, boxes.astype(float))[0] == 0
    moved = boxes.astype(np.int64)
    moved[1, 5] += 1
    assert bbox_disagreements(boxes, moved)[1].tolist() == [1]


# --------------------------------------------------------------------- summaries


def test_summary_on_real_file_is_plain_json_and_correct(shared_data):
    table, column = column_of(shared_data, "centroid_test_data/indexed.refl")
    shapes = measure_spot_shapes(column, 4)
    image = np.floor(table["xyzobs.px.value"][:, 2]).astype(np.int64) + 1
    panel = column.panel.astype(np.int64)
    summary = summarise_spot_shapes(shapes, image=image, panel=panel)
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    assert summary["rows"] == summary["rows_with_pixel_data"] == 654
    extent_z = summary["quantities"]["extent_z"]
    assert extent_z["unit"] == "images"
    coded = shapes.n_coded > 0
    values = shapes.extent_z[coded]
    assert extent_z["statistics"]["n"] == coded.sum()
    assert extent_z["statistics"]["median"] == np.median(values)
    assert extent_z["statistics"]["p95"] == np.percentile(values, 95)
    histogram = extent_z["histogram"]
    assert histogram["bin_centres"][:3] == [1, 2, 3]
    assert histogram["counts"] == np.bincount(values)[1:].tolist()
    widths = summary["quantities"]["rms_width_x"]
    finite = shapes.rms_width_x[np.isfinite(shapes.rms_width_x)]
    assert widths["statistics"]["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    in_range = ((finite >= 0) & (finite <= 5)).sum()
    assert sum(widths["histogram"]["counts"]) == in_range
    assert in_range + widths["histogram"]["n_out_of_range"] == len(finite)
    assert len(widths["histogram"]["counts"]) == 50
    for entry in summary["quantities"]["elongation"]["median_by_image"]:
        chosen = (image == entry["image"]) & np.isfinite(shapes.elongation)
        assert entry["n"] == chosen.sum()
        assert entry["median"] == pytest.approx(np.median(shapes.elongation[chosen]))
    assert [e["panel"] for e in extent_z["median_by_panel"]] == [0]
    assert extent_z["median_by_shell"] == []
    assert summary["quantities"]["rms_width_radial"]["statistics"]["n"] == 0
    assert summary["quantities"]["rms_width_radial"]["statistics"]["mean"] is None


def test_summary_of_nothing():
    summary = summarise_spot_shapes(SpotShapes.empty(0))
    json.dumps(summary, allow_nan=False)
    assert summary["quantities"]["extent_z"]["statistics"]["n"] == 0
    assert len(SpotShapes.concatenate([])) == 0


def _former_summary(shapes, keys: dict) -> dict:
    """summarise_spot_shapes as it was before its statistics came from sorted and
    tallied values: numpy's percentiles, mean and standard deviation on float copies,
    the plain histogram rule, and the per-key medians of the plain functions."""
    from dials_spot_size_analysis.algorithms import spot_shape, statistics

    quantities = {}
    for name, (unit, _, _) in spot_shape.QUANTITIES.items():
        kept = spot_shape._rows_of(shapes, name)
        every = getattr(shapes, name)
        values = every[kept]
        if values.size:
            copy = values.astype(np.float64)
            numbers = [copy.mean(), copy.std(), copy.min(), copy.max()]
            numbers += list(np.percentile(copy, [50, 5, 25, 75, 95]))
            names = ["mean", "std", "min", "max", "median", "p5", "p25", "p75", "p95"]
            stats = {"n": values.size, **dict(zip(names, map(float, numbers)))}
        else:
            stats = statistics.summary_statistics(values)
        entry = {
            "unit": unit,
            "statistics": stats,
            "histogram": spot_shape._histogram(values, name),
        }
        for label in ("image", "shell", "panel"):
            found = []
            if keys.get(label) is not None:
                key = np.asarray(keys[label])
                if np.issubdtype(every.dtype, np.integer):
                    groups = statistics.group_statistics(
                        key[kept], values, skip_negative_keys=True
                    )
                    found = zip(groups.key, groups.n, groups.median)
                else:
                    order = statistics.group_order(key)
                    found = zip(
                        *statistics.group_medians(order, np.where(kept, every, np.nan))
                    )
            entry[f"median_by_{label}"] = [
                {label: int(k), "n": int(n), "median": float(m)} for k, n, m in found
            ]
        quantities[name] = entry
    return spot_shape._json_safe({"quantities": quantities})["quantities"]


@pytest.mark.parametrize("real", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summaries_equal_the_former_computation_to_the_last_bit(real, seed):
    """Random shapes with NaN, negative zeros (in some quantities), ties, infinities
    in the fill, unknown keys: the same JSON, to the last bit, as before."""
    rng = np.random.default_rng(seed)
    n = 20_000
    shapes = SpotShapes.empty(n)
    for name in INTEGER_FIELDS:
        getattr(shapes, name)[:] = rng.integers(0, 12, n)
    shapes.extent_z[rng.random(n) < 0.05] = 0
    for name in REAL_FIELDS + ("rms_width_radial", "rms_width_tangential"):
        column = (rng.gamma(2.0, 0.8, n) * 20).round() / 20
        column[rng.random(n) < 0.03] = np.nan
        setattr(shapes, name, column.astype(real))
    shapes.rms_width_x[rng.random(n) < 0.01] = -0.0
    shapes.rms_width_z[rng.random(n) < 0.6] = 0.0  # one image thick: many zeros
    shapes.rms_width_y[rng.random(n) < 0.6] = 0.0
    shapes.rms_width_y[rng.random(n) < 0.001] = -0.0
    shapes.fill[:3] = np.inf
    shapes.elongation[:] = np.nan  # nothing measured
    keys = {
        "image": rng.integers(-1, 90, n).astype(np.int32),
        "shell": rng.integers(-1, 10, n).astype(np.int16),
        "panel": rng.integers(0, 24, n),
    }
    for chosen in (keys, {"panel": keys["panel"]}, {}):
        with np.errstate(invalid="ignore"):
            summary = summarise_spot_shapes(shapes, **chosen)
            former = _former_summary(shapes, chosen)
        assert json.dumps(summary["quantities"]) == json.dumps(former)


def test_summaries_of_huge_values_and_real_keys_equal_the_former_computation():
    """A group median that overflows (the mean of two huge middle values) is None, as
    any number JSON cannot hold; keys given as floats are whole numbers, as before."""
    shapes = SpotShapes.empty(4)
    for name in INTEGER_FIELDS:
        getattr(shapes, name)[:] = [3, 1, 2, 5]
    for name in REAL_FIELDS:
        getattr(shapes, name)[:] = [1.7e308, 1.6e308, 0.5, 2.5]
    keys = {"image": np.array([7.0, 7.0, 2.0, -1.0]), "panel": np.zeros(4, int)}
    with np.errstate(over="ignore", invalid="ignore"):
        summary = summarise_spot_shapes(shapes, **keys)
        former = _former_summary(shapes, keys)
    assert json.dumps(summary["quantities"]) == json.dumps(former)
    by_image = summary["quantities"]["rms_width_x"]["median_by_image"]
    assert by_image == [
        {"image": 2, "n": 1, "median": 0.5},
        {"image": 7, "n": 2, "median": None},
    ]


def _radial_tangential_numpy(centroid, variance_x, variance_y, covariance_xy, centre):
    """The widths as numpy states them: the reference for the compiled pass."""
    dx = centroid[:, 0] - centre[:, 0]
    dy = centroid[:, 1] - centre[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        squared = dx * dx + dy * dy  # |d|^2, u = d / |d|
        radial = (
            dx * dx * variance_x + 2 * dx * dy * covariance_xy + dy * dy * variance_y
        ) / squared
        tangential = (
            dy * dy * variance_x - 2 * dx * dy * covariance_xy + dx * dx * variance_y
        ) / squared
        return np.sqrt(np.maximum(radial, 0.0)), np.sqrt(np.maximum(tangential, 0.0))


def test_radial_and_tangential_widths_equal_numpys_bit_for_bit():
    from dials_spot_size_analysis.algorithms.spot_shape import radial_tangential_widths

    rng = np.random.default_rng(11)
    n = 20_000
    centroid = rng.uniform(-50, 4000, (n, 3))
    centre = np.repeat([[2000.5, 2100.25]], n, axis=0)
    centroid[:5, :2] = centre[:5]  # at the beam centre: no direction
    variance_x, variance_y = rng.uniform(0, 9, n), rng.uniform(0, 9, n)
    covariance_xy = rng.uniform(-3, 3, n)  # some make a negative variance: clipped
    variance_x[7], covariance_xy[8], centre[9, 0] = np.nan, np.inf, np.nan
    got = radial_tangential_widths(
        centroid, variance_x, variance_y, covariance_xy, centre
    )
    want = _radial_tangential_numpy(
        centroid, variance_x, variance_y, covariance_xy, centre
    )
    for a, b in zip(got, want):
        assert np.array_equal(a.view(np.int64), b.view(np.int64))
