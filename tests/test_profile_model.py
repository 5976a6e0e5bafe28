"""sigma_b and sigma_m against what DIALS 3.30's dials.integrate computed on the real
files (profile_reference.json), and the stills / pre-indexing / shoebox cases."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from unittest import mock

import numpy as np
import pytest

from dials_spot_size_analysis.algorithms import prediction
from dials_spot_size_analysis.algorithms import profile_model as pm
from dials_spot_size_analysis.formats import read_experiments, read_reflections
from dials_spot_size_analysis.formats.experiments import parse_experiments


@pytest.fixture(scope="module")
def reference(shared_data):
    return json.loads((shared_data / "profile_reference.json").read_text())


def _load(shared_data, entry):
    table = read_reflections(shared_data / entry["reflections"])
    return table, read_experiments(shared_data / entry["experiments"])


@pytest.mark.parametrize("number", [0, 1, 2])
def test_sigmas_match_dials_integrate(shared_data, reference, number):
    entry = reference[number]
    table, experiments = _load(shared_data, entry)
    result = pm.profile_model(table.columns, table.shoeboxes, experiments)
    model = result.experiments[0]
    assert model.applicable
    # Measured: sigma_b to 1e-10 and sigma_m to 6e-6 (DIALS's simplex stops short of
    # the maximum) with a static crystal; 5e-6 and 1.1e-4 with the scan-varying one.
    static = number < 2
    assert model.sigma_b_deg == pytest.approx(
        entry["sigma_b_deg"], rel=1e-9 if static else 1e-5
    )
    assert model.sigma_m_deg == pytest.approx(
        entry["sigma_m_deg"], rel=1e-5 if static else 2e-4
    )
    assert model.n_matched == entry["n_reference_reflections"]
    json.dumps(result.as_dict())


def _table_columns(table, rows) -> pm._Columns:
    """The calculator's columns of the table's own rows (no re-prediction)."""
    return pm._Columns(
        miller_index=table["miller_index"][rows].astype(np.int64),
        panel=table["panel"][rows],
        s1=table["s1"][rows],
        phi=table["xyzcal.mm"][rows, 2],
        flags=table["flags"][rows],
        rows=rows,
    )


def test_a_row_without_a_beam_vector_is_left_out_without_a_warning(shared_data):
    """refined.refl holds one indexed row whose s1 is zero (never predicted): its
    zeta is NaN, so the |zeta| filter leaves it out, as any row near the rotation
    axis, and the sigmas are those of the other rows (it warned of an invalid value
    before)."""
    folder = shared_data / "centroid_test_data_refined"
    table = read_reflections(folder / "refined.refl")
    [experiment] = read_experiments(folder / "refined.expt")
    rows = np.flatnonzero((table["flags"] & pm.INDEXED) != 0)
    zero = np.linalg.norm(table["s1"][rows], axis=1) == 0
    assert zero.sum() == 1
    zeta = pm.zeta_factor(
        experiment.goniometer.rotation_axis_lab,
        np.asarray(experiment.beam.s0),
        table["s1"][rows],
    )
    assert np.isnan(zeta[zero]).all() and np.isfinite(zeta[~zero]).all()
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        found = pm.compute_sigmas(
            _table_columns(table, rows), table.shoeboxes, experiment
        )
        without = pm.compute_sigmas(
            _table_columns(table, rows[~zero]), table.shoeboxes, experiment
        )
    assert found == without


@pytest.mark.parametrize("number", [0, 1])
def test_calculator_alone_on_the_table_as_it_is(shared_data, reference, number):
    """The same calculator on the table's own columns (indexed rows, no
    re-prediction): DIALS's computed_on_the_table_as_it_is."""
    entry = reference[number]
    expected = entry["computed_on_the_table_as_it_is"]
    table, experiments = _load(shared_data, entry)
    rows = np.flatnonzero((table["flags"] & pm.INDEXED) != 0)
    assert len(rows) == expected["n"]
    columns = _table_columns(table, rows)
    sigma_b, sigma_m, _ = pm.compute_sigmas(columns, table.shoeboxes, experiments[0])
    assert math.degrees(sigma_b) == pytest.approx(expected["sigma_b_deg"], rel=1e-6)
    assert math.degrees(sigma_m) == pytest.approx(expected["sigma_m_deg"], rel=1e-4)


def test_pixel_sums_of_a_subset_are_taken_not_summed_again(shared_data, reference):
    """The blocks of a scan share the pixel sums of all its reflections: the sums of
    any subset (in any order), and the sigmas computed from them, are the numbers
    summed afresh for those rows, to the last bit."""
    table, experiments = _load(shared_data, reference[0])  # boxes of 1 to 9 frames
    experiment = experiments[0]
    rows = np.flatnonzero((table["flags"] & pm.INDEXED) != 0)
    columns = _table_columns(table, rows)
    every = pm._pixel_sums(columns, table.shoeboxes, experiment, True)
    assert (every.frames > 1).sum() > 100  # boxes over several frames
    index = np.random.default_rng(3).permutation(len(rows))[: len(rows) // 2]
    subset = pm._subset(columns, index)
    alone = pm._pixel_sums(subset, table.shoeboxes, experiment, True)
    for taken, summed in zip(every.subset(index), alone):
        assert taken.dtype == summed.dtype and taken.tobytes() == summed.tobytes()
    # Every row in another order (DIALS's used rows first) is a reordering, and only
    # every row in order is the whole itself.
    shuffled = np.random.default_rng(4).permutation(len(rows))
    reordered = pm._subset(columns, shuffled)
    assert np.array_equal(reordered.rows, columns.rows[shuffled])
    alone = pm._pixel_sums(reordered, table.shoeboxes, experiment, True)
    for taken, summed in zip(every.subset(shuffled), alone):
        assert taken.tobytes() == summed.tobytes()
    in_order = np.arange(len(rows))
    assert pm._subset(columns, in_order) is columns
    assert every.subset(in_order) is every
    two = pm._subset(columns, np.array([0, 1]))  # a mask that compares as 0, 1
    assert len(pm._subset(two, np.array([False, True])).rows) == 1
    by_frame = np.argsort(subset.phi, kind="stable")[: len(index) // 2]  # a block
    block = pm._subset(subset, by_frame)
    shared = pm.compute_sigmas(
        block, table.shoeboxes, experiment, sums=every.subset(index[by_frame])
    )
    assert shared == pm.compute_sigmas(block, table.shoeboxes, experiment)
    assert shared[0] is not None and shared[2] > 50
    # Where DIALS thins the rows used (10,000 or more), their own sums are taken.
    every_other = lambda flags: np.arange(0, len(flags), 2)  # noqa: E731
    with mock.patch.object(pm, "select_for_sigma", every_other):
        thinned = pm.compute_sigmas(
            block, table.shoeboxes, experiment, sums=every.subset(index[by_frame])
        )
        assert thinned == pm.compute_sigmas(block, table.shoeboxes, experiment)
    assert thinned[2] < shared[2] and thinned != shared


@pytest.mark.parametrize("threads", [2, 3])
def test_the_likelihood_on_threads_gives_the_same_numbers(
    shared_data, reference, threads
):
    """sigma_m's likelihood split over threads (here from one frame on): each
    reflection's term made on some thread, added in order, the same sigmas to the last
    bit, overall and per block."""
    table, experiments = _load(shared_data, reference[2])
    arguments = (table.columns, table.shoeboxes, experiments)
    alone = pm.profile_model(*arguments, block_degrees=0.6).experiments[0]
    with mock.patch.object(pm, "THREADED_FROM_FRAMES", 1):
        starts = np.array([0, 3, 4, 9, 10, 20])  # 5 reflections, 20 frames
        assert pm._parts(starts, threads) == (  # about equal frames, none empty
            [(0, 4), (4, 5)] if threads == 2 else [(0, 3), (3, 5)]
        )
        split = pm.profile_model(*arguments, block_degrees=0.6, threads=threads)
    split = split.experiments[0]
    assert (split.sigma_b_deg, split.sigma_m_deg) == (
        alone.sigma_b_deg,
        alone.sigma_m_deg,
    )
    assert split.blocks == alone.blocks and len(split.blocks) == 3
    assert pm._parts(starts, threads) == [(0, 5)]  # few frames: one part


def test_reprediction_reproduces_the_table_positions(shared_data, reference):
    """Scan-static prediction with the same models gives the indexer's xyzcal.px."""
    table, experiments = _load(shared_data, reference[0])
    rows = np.flatnonzero(
        pm.reference_selection(table["flags"], table["miller_index"], table["id"])
    )
    predicted = prediction.predict_reflections(
        table["miller_index"][rows],
        table["entering"][rows],
        table["xyzcal.px"][rows, 2],
        experiments[0],
    )
    ok = predicted.ok
    assert ok.sum() == 438
    assert np.allclose(predicted.xyzcal_px[ok], table["xyzcal.px"][rows][ok], atol=1e-6)


def test_i23_resolution_limit_drops_one_reflection(shared_data, reference):
    """A reflection beyond the detector's corner resolution is not predicted."""
    table, experiments = _load(shared_data, reference[1])
    experiment = experiments[0]
    d_min = prediction.detector_max_resolution(experiment.detector, experiment.beam.s0)
    assert d_min == pytest.approx(1.8253, abs=1e-4)
    result = pm.profile_model(table.columns, table.shoeboxes, experiments)
    assert result.experiments[0].n_matched == 173


def test_data_units_and_xds(shared_data, reference):
    table, experiments = _load(shared_data, reference[0])
    model = pm.profile_model(table.columns, table.shoeboxes, experiments).experiments[0]
    experiment = experiments[0]
    distance, pixel = pm._beam_distance_and_pixel(experiment)
    panel = experiment.detector.panels[0]
    assert pixel == pytest.approx(np.mean(panel.pixel_size))
    assert model.sigma_b_px == pytest.approx(
        math.radians(model.sigma_b_deg) * distance / pixel
    )
    assert model.sigma_m_images == pytest.approx(model.sigma_m_deg / 0.2)
    assert model.xds["BEAM_DIVERGENCE_E.S.D."] == model.sigma_b_deg
    assert model.xds["REFLECTING_RANGE_E.S.D."] == model.sigma_m_deg
    assert [(b.first_image, b.last_image) for b in model.blocks] == [(1, 9)]
    [whole] = model.blocks  # one block: the overall values, not computed again
    assert (whole.sigma_b_deg, whole.sigma_m_deg) == (
        model.sigma_b_deg,
        model.sigma_m_deg,
    )
    blocked = pm.profile_model(
        table.columns, table.shoeboxes, experiments, block_degrees=0.6
    ).experiments[0]
    assert [(b.first_image, b.last_image) for b in blocked.blocks] == [
        (1, 3),
        (4, 6),
        (7, 9),
    ]
    assert (whole.sigma_b_px, whole.sigma_m_images) == (
        model.sigma_b_px,
        model.sigma_m_images,
    )
    assert sum(b.n_reflections for b in blocked.blocks) == whole.n_reflections
    computed = [b for b in blocked.blocks if b.sigma_b_deg is not None]
    assert computed and all(b.sigma_b_deg != model.sigma_b_deg for b in computed)
    for block in computed:  # in data units as the experiment's values are
        assert block.sigma_b_px == pytest.approx(
            math.radians(block.sigma_b_deg) * distance / pixel, rel=1e-12
        )
        assert block.sigma_m_images == pytest.approx(block.sigma_m_deg / 0.2)
        assert 0.5 < block.sigma_b_px < 2 and 0.5 < block.sigma_m_images < 2


@pytest.mark.parametrize(
    "reflections, experiments",
    [("strong.refl", "imported.expt"), ("indexed.refl", "indexed.expt")],
)
def test_an_experiment_without_beam_or_detector_says_so_beside_the_others(
    shared_data, reflections, experiments
):
    """Rows of experiments 1 and 2 (no detector, no beam) beside those of experiment
    0: those two get the reason, experiment 0 the same model as alone."""
    folder = shared_data / "I23_P12M_thau"
    table = read_reflections(folder / reflections)
    whole = read_experiments(folder / experiments)
    alone = pm.profile_model(table.columns, table.shoeboxes, whole)
    first = whole[0]
    mixed = [
        first,
        dataclasses.replace(first, detector=None),
        dataclasses.replace(first, beam=None),
    ]
    columns = dict(table.columns)
    ids = np.asarray(columns["id"]).copy()
    ids[1::7], ids[2::7] = 1, 2  # a few rows of each, the rest stay experiment 0
    columns["id"] = ids
    result = pm.profile_model(columns, table.shoeboxes, mixed).experiments
    assert [model.applicable for model in result] == [True, False, False]
    assert result[1].reason == pm.NO_MODELS_REASON.format("detector")
    assert result[2].reason == pm.NO_MODELS_REASON.format("beam")
    complete = pm.profile_model(columns, table.shoeboxes, [first] * 3).experiments
    assert dataclasses.asdict(result[0]) == dataclasses.asdict(complete[0])
    assert result[0].sigma_b_deg != alone.experiments[0].sigma_b_deg  # rows moved


def test_an_indexed_table_without_predicted_positions_says_so(shared_data):
    table = read_reflections(shared_data / "centroid_test_data/indexed.refl")
    experiments = read_experiments(shared_data / "centroid_test_data/indexed.expt")
    columns = {k: v for k, v in table.columns.items() if k != "xyzcal.px"}
    [model] = pm.profile_model(columns, table.shoeboxes, experiments).experiments
    assert not model.applicable
    assert model.reason.startswith("the table lacks the column(s) xyzcal.px")


@pytest.mark.parametrize("direction", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)])
def test_sigma_b_in_pixels_is_none_where_the_beam_meets_no_panel(
    shared_data, direction
):
    """A beam in the detector's plane (eiger_therm's panel is the x-y plane): the
    angle sigma_b stands, its size in pixels has no distance to stand on; no numpy
    warning on the way (there was a division by zero, and inf in the log)."""
    table = read_reflections(shared_data / "eiger_therm/strong.refl")
    [experiment] = read_experiments(shared_data / "eiger_therm/imported.expt")
    beam = dataclasses.replace(experiment.beam, direction=np.array(direction))
    sideways = dataclasses.replace(experiment, beam=beam)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        [model] = pm.profile_model(
            table.columns, table.shoeboxes, [sideways]
        ).experiments
    assert model.applicable and model.sigma_b_deg > 0
    assert model.sigma_b_px is None


@pytest.mark.parametrize(
    "reflections, experiments",
    [("strong.refl", "imported.expt"), ("indexed.refl", "indexed.expt")],
)
def test_a_shoebox_on_a_panel_the_detector_lacks_is_left_out(
    shared_data, reflections, experiments
):
    """Every third record claims panel 2**32 - 1 (the I23 detector has 24): those
    rows count as rows without pixels (they were read far outside the panel arrays, a
    segmentation fault)."""
    folder = shared_data / "I23_P12M_thau"
    table = read_reflections(folder / reflections)
    models = read_experiments(folder / experiments)
    shoeboxes = table.shoeboxes
    panel = shoeboxes.panel.copy()
    panel[::3] = 0xFFFFFFFF
    elsewhere = dataclasses.replace(shoeboxes, panel=panel)
    present = shoeboxes.present.copy()
    present[::3] = 0
    without = dataclasses.replace(shoeboxes, present=present)
    [found] = pm.profile_model(table.columns, elsewhere, models).experiments
    [expected] = pm.profile_model(table.columns, without, models).experiments
    [whole] = pm.profile_model(table.columns, shoeboxes, models).experiments
    assert found.applicable and found.sigma_b_deg == expected.sigma_b_deg
    assert found.sigma_m_deg == expected.sigma_m_deg
    assert found.sigma_b_deg != whole.sigma_b_deg


def _with_pixel_value(shoeboxes, value, rows):
    """The shoeboxes with every data pixel of ``rows`` set to ``value``."""
    blob = np.array(shoeboxes.blob)  # a writable copy
    for row in rows:
        if shoeboxes.present[row]:
            x0, x1, y0, y1, z0, z1 = (int(v) for v in shoeboxes.bbox[row])
            n = (x1 - x0) * (y1 - y0) * (z1 - z0)
            start = int(shoeboxes.data_offset[row])
            blob[start : start + 4 * n] = np.full(n, value, "<f4").view(np.uint8)
    return dataclasses.replace(shoeboxes, blob=blob)


@pytest.mark.parametrize(
    "reflections, experiments",
    [("strong.refl", "imported.expt"), ("indexed.refl", "indexed.expt")],
)
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("rows", ["all", "one"])
def test_pixel_values_that_are_not_finite_give_no_model_and_say_so(
    shared_data, reflections, experiments, value, rows
):
    """The sums of infinite pixels are NaN: sigma_m's search never settled (a hang)
    and sigma_b came out NaN. Such values are named instead, without a warning;
    pixels that no sum takes (below their background, as DIALS's estimators leave
    out, or NaN, which no comparison keeps) may leave a finite model."""
    folder = shared_data / "I23_P12M_thau"
    table = read_reflections(folder / reflections)
    models = read_experiments(folder / experiments)
    chosen = range(table.nrows) if rows == "all" else [1]
    shoeboxes = _with_pixel_value(table.shoeboxes, value, chosen)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        try:
            [model] = pm.profile_model(table.columns, shoeboxes, models).experiments
        except pm.ProfileModelError as error:  # the program says it in one line
            assert str(error) == pm.NOT_FINITE_PIXELS
            return
    if value == np.inf:
        assert not model.applicable and model.reason == pm.NOT_FINITE_PIXELS
    elif model.applicable:
        assert math.isfinite(model.sigma_b_deg) and model.sigma_b_deg > 0
    else:  # every pixel left out
        assert model.reason == "no spot has more than 1 count in its shoebox"


def test_rows_on_a_panel_the_detector_lacks_match_no_prediction(shared_data):
    """A panel column of 2**64 - 1 (unsigned, as DIALS writes it) on some rows: those
    rows match nothing, as rows on another panel than predicted, and no warning
    (the keys were made through float64 and cast back)."""
    folder = shared_data / "I23_P12M_thau"
    table = read_reflections(folder / "indexed.refl")
    models = read_experiments(folder / "indexed.expt")
    panel = np.asarray(table.columns["panel"]).copy()
    elsewhere = panel.copy()
    elsewhere[::4] = np.iinfo(panel.dtype).max
    moved = panel.copy()
    moved[::4] = (panel[::4] + 1) % 24  # a real panel, but not the predicted one
    found = {}
    for name, column in (("elsewhere", elsewhere), ("moved", moved)):
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            columns = {**table.columns, "panel": column}
            [found[name]] = pm.profile_model(
                columns, table.shoeboxes, models
            ).experiments
    assert dataclasses.asdict(found["elsewhere"]) == dataclasses.asdict(found["moved"])
    assert found["elsewhere"].n_matched < 208 * 3 // 4 + 1


@pytest.mark.parametrize(
    "function, words",
    [
        (lambda x: math.nan, "not a finite number at ln"),
        (lambda x: math.inf if x > 1.5 else (x - 2.0) ** 2, "not a finite number"),
        (lambda x: -x, "keeps falling"),
        (lambda x: -math.exp(-x), "not a finite number"),  # math.exp overflows
    ],
)
def test_a_search_that_never_settles_ends(function, words):
    with mock.patch.object(pm, "MAX_SEARCH_STEPS", 50):
        with pytest.raises(pm.ProfileModelError, match="did not settle") as error:
            pm._minimise_1d(function, 0.0, 1.0, 1e-8)
    assert words in str(error.value)


def test_before_indexing_is_a_labelled_estimate(shared_data):
    table = read_reflections(shared_data / "I23_P12M_thau/strong.refl")
    experiments = read_experiments(shared_data / "I23_P12M_thau/imported.expt")
    model = pm.profile_model(table.columns, table.shoeboxes, experiments).experiments[0]
    assert model.label.startswith("estimate")
    assert model.sigma_m_deg is None
    assert "sigma_m" in model.reason
    assert 0.01 < model.sigma_b_deg < 0.1


def plain_estimate_before_indexing(columns, shoeboxes, experiment, index):
    """(rows of experiment ``index``, sigma_b in degrees) from the definition: per
    spot, the angle between the lab vector of each pixel with mask != 0 and that of the
    spot's centroid, no parallax; the variance sum(w a^2)/(sum(w) - 1) of each spot
    with sum(w) > 1; sigma_b the square root of their mean."""
    panels = experiment.detector.panels

    def lab(panel, x, y):  # x, y: (n,) pixels
        p = panels[int(panel)]
        x_mm, y_mm = np.multiply.outer(x, p.pixel_size[0]), y * p.pixel_size[1]
        return p.origin + x_mm[:, None] * p.fast_axis + y_mm[:, None] * p.slow_axis

    rows = np.flatnonzero(np.asarray(columns["id"]) == index)
    variances = []
    for row in rows:
        pixels = shoeboxes.pixels(row)
        if pixels is None:
            continue
        data, mask, _ = pixels
        z, y, x = np.nonzero(mask != 0)
        x0, _, y0, _, _, _ = (int(v) for v in shoeboxes.bbox[row])
        xc, yc, _ = columns["xyzobs.px.value"][row]
        spot = lab(columns["panel"][row], np.array([xc]), np.array([yc]))[0]
        pixel = lab(shoeboxes.panel[row], x0 + x + 0.5, y0 + y + 0.5)
        cosine = pixel @ spot / (np.linalg.norm(pixel, axis=1) * np.linalg.norm(spot))
        angle = np.arccos(np.clip(cosine, -1, 1))
        weight = data[z, y, x].astype(np.float64)
        if weight.sum() > 1:
            variances.append((weight * angle**2).sum() / (weight.sum() - 1))
    return len(rows), math.degrees(math.sqrt(np.mean(variances)))


def test_stills_estimate_equals_its_definition(shared_data):
    """Indexed stills (no scan): sigma_b about each spot's own centroid, per still."""
    table = read_reflections(shared_data / "ssx_CuNiR/indexed.refl")
    experiments = read_experiments(shared_data / "ssx_CuNiR/indexed.expt")
    models = pm.profile_model(table.columns, table.shoeboxes, experiments).experiments
    assert len(models) == 5
    for index, model in enumerate(models):
        n_rows, sigma_b_deg = plain_estimate_before_indexing(
            table.columns, table.shoeboxes, experiments[index], index
        )
        assert (model.label, model.sigma_m_deg) == (pm.STILLS_LABEL, None)
        assert model.applicable and model.reason == pm.STILLS_REASON
        assert model.n_reference == n_rows
        assert model.sigma_b_deg == pytest.approx(sigma_b_deg, rel=1e-9)


@pytest.mark.parametrize("missing", ["panel", "id"])
def test_an_estimate_without_a_panel_or_id_column_takes_zero(shared_data, missing):
    """Without a panel column every row is on panel 0: the SSX stills have one
    panel each, so the estimates are the same. Without an id column every row is
    the first still's, and the other stills have none."""
    table = read_reflections(shared_data / "ssx_CuNiR/indexed.refl")
    experiments = read_experiments(shared_data / "ssx_CuNiR/indexed.expt")
    whole = pm.profile_model(table.columns, table.shoeboxes, experiments).experiments
    columns = {k: v for k, v in table.columns.items() if k != missing}
    models = pm.profile_model(columns, table.shoeboxes, experiments).experiments
    if missing == "panel":
        assert [m.sigma_b_deg for m in models] == [m.sigma_b_deg for m in whole]
    else:  # every row is the first still's
        assert models[0].n_reference == table.nrows
        assert [m.applicable for m in models[1:]] == [False] * 4


def test_a_table_without_centroids_has_no_estimate(shared_data):
    table = read_reflections(shared_data / "ssx_CuNiR/indexed.refl")
    experiments = read_experiments(shared_data / "ssx_CuNiR/indexed.expt")
    columns = {k: v for k, v in table.columns.items() if k != "xyzobs.px.value"}
    models = pm.profile_model(columns, table.shoeboxes, experiments).experiments
    assert {(m.applicable, m.reason) for m in models} == {
        (False, "the table lacks the column xyzobs.px.value (the spots' centroids)")
    }


@pytest.mark.parametrize(
    "name", ["eiger_therm/strong.refl", "I23_P12M_thau/strong.refl"]
)
def test_estimate_before_indexing_equals_its_definition(shared_data, name):
    table = read_reflections(shared_data / name)
    experiments = read_experiments(
        shared_data / name.replace("strong.refl", "imported.expt")
    )
    model = pm.profile_model(table.columns, table.shoeboxes, experiments).experiments[0]
    n_rows, sigma_b_deg = plain_estimate_before_indexing(
        table.columns, table.shoeboxes, experiments[0], 0
    )
    assert model.n_reference == model.n_selected == n_rows == table.nrows
    assert model.sigma_b_deg == pytest.approx(sigma_b_deg, rel=1e-9)
    # each experiment's own rows: the table split in two by its ids
    columns = dict(table.columns)
    columns["id"] = (np.arange(table.nrows) % 3 == 0).astype(np.int32)
    models = pm.profile_model(columns, table.shoeboxes, [experiments[0]] * 2)
    for index, model in enumerate(models.experiments):
        n_rows, sigma_b_deg = plain_estimate_before_indexing(
            columns, table.shoeboxes, experiments[0], index
        )
        assert model.n_reference == n_rows == np.sum(columns["id"] == index)
        assert model.sigma_b_deg == pytest.approx(sigma_b_deg, rel=1e-9)
    # ... and with two detectors, the second 50 mm further away: each experiment's
    # rows on its own detector's panels
    farther = dataclasses.replace(
        experiments[0].detector,
        panels=tuple(
            dataclasses.replace(p, origin=tuple(np.add(p.origin, (0, 0, -50))))
            for p in experiments[0].detector.panels
        ),
    )
    two = [experiments[0], dataclasses.replace(experiments[0], detector=farther)]
    models = pm.profile_model(columns, table.shoeboxes, two)
    estimates = [model.sigma_b_deg for model in models.experiments]
    for index, model in enumerate(models.experiments):
        n_rows, sigma_b_deg = plain_estimate_before_indexing(
            columns, table.shoeboxes, two[index], index
        )
        assert model.n_reference == n_rows
        assert model.sigma_b_deg == pytest.approx(sigma_b_deg, rel=1e-9)
    _, nearer = plain_estimate_before_indexing(
        columns, table.shoeboxes, experiments[0], 1
    )
    assert estimates[1] < 0.95 * nearer  # which detector matters


def test_estimate_before_indexing_leaves_out_empty_and_faint_spots(shared_data):
    """Rows without pixel data count as rows but give no variance, nor do spots with at
    most 1 count of weight; with no spot left there is no estimate, and it says why."""
    table = read_reflections(shared_data / "eiger_therm/strong.refl")
    experiments = read_experiments(shared_data / "eiger_therm/imported.expt")
    column = table.shoeboxes
    present = column.present.copy()
    present[::5] = 0  # no pixel data (their bytes are still there, unread)
    changed = dataclasses.replace(column, blob=column.blob.copy(), present=present)
    faint = [row for row in range(1, table.nrows, 7) if present[row]]
    for row in faint:
        data = changed.pixels(row)[0]
        data[...] = 0.5 / data.size  # at most 0.5 counts over its coded pixels
    model = pm.profile_model(table.columns, changed, experiments).experiments[0]
    n_rows, sigma_b_deg = plain_estimate_before_indexing(
        table.columns, changed, experiments[0], 0
    )
    assert model.n_reference == n_rows == table.nrows
    assert model.sigma_b_deg == pytest.approx(sigma_b_deg, rel=1e-9)
    assert model.sigma_b_deg != pytest.approx(
        pm.profile_model(table.columns, column, experiments).experiments[0].sigma_b_deg,
        rel=1e-6,
    )
    for row in np.flatnonzero(present):
        data = changed.pixels(row)[0]
        data[...] = 0.5 / data.size
    model = pm.profile_model(table.columns, changed, experiments).experiments[0]
    assert not model.applicable and model.sigma_b_deg is None
    assert model.reason == "no spot has more than 1 count in its shoebox"


def test_stored_profile_is_returned(shared_data, tmp_path, reference):
    document = json.loads((shared_data / "centroid_test_data/indexed.expt").read_text())
    document["profile"] = [
        {"__id__": "gaussian_rs", "n_sigma": 3, "sigma_b": 0.05, "sigma_m": 0.2}
    ]
    document["experiment"][0]["profile"] = 0
    path = tmp_path / "integrated.expt"
    path.write_text(json.dumps(document))
    experiments = read_experiments(path)
    table = read_reflections(shared_data / "centroid_test_data/indexed.refl")
    model = pm.profile_model(table.columns, table.shoeboxes, experiments).experiments[0]
    assert model.stored_profile == {
        "kind": "gaussian_rs",
        "n_sigma": 3.0,
        "sigma_b_deg": 0.05,
        "sigma_m_deg": 0.2,
        "parameterisation": None,
        "parameters": None,
        "sigma": None,
        "sigma_sqrt_diagonal": None,
    }
    assert model.sigma_b_deg == pytest.approx(reference[0]["sigma_b_deg"], rel=1e-6)


def test_too_few_reflections(shared_data, reference):
    table, experiments = _load(shared_data, reference[0])
    columns = {name: table[name][:30] for name in table.columns}
    model = pm.profile_model(columns, table.shoeboxes, experiments).experiments[0]
    assert not model.applicable
    assert "too few reflections" in model.reason


def test_reference_reflections_another_model_predicted_are_counted_out(shared_data):
    """centroid's integrated.refl was indexed in another setting than indexed.expt
    (its (-19, 17, 1) lies where indexed.refl has (-9, 12, -21)): none of its 394
    reference reflections is re-predicted where the table put it, and the reason says
    which step lost them."""
    table = read_reflections(shared_data / "centroid_test_data/integrated.refl")
    experiments = read_experiments(shared_data / "centroid_test_data/indexed.expt")
    model = pm.profile_model(table.columns, table.shoeboxes, experiments).experiments[0]
    assert (model.applicable, model.n_reference, model.n_matched) == (False, 394, 0)
    assert model.reason == (
        "too few reflections for profile modelling: 0 of the 394 reference "
        "reflections (indexed, not bad_for_refinement) are re-predicted from these "
        "experiments within 2 px of the table's own predictions (dials.integrate "
        "needs 50 in total or 20 per degree); were the table's predictions made with "
        "other models (another .expt)?"
    )


def _flat_experiment(**parts):
    """A 1000 x 1000 panel of 0.1 mm pixels 100 mm from the sample, facing the beam
    along +z, rotation about x, 0.5 degree images: small angles map simply. ``parts``
    replace or add entries of the document (a ``crystal``, another ``scan``)."""
    document = {
        "__id__": "ExperimentList",
        "experiment": [{"beam": 0, "detector": 0, "goniometer": 0, "scan": 0}],
        "beam": [{"direction": [0, 0, 1], "wavelength": 1.0}],
        "detector": [
            {
                "panels": [
                    {
                        "fast_axis": [1, 0, 0],
                        "slow_axis": [0, -1, 0],
                        "origin": [-50, 50, -100],
                        "pixel_size": [0.1, 0.1],
                        "image_size": [1000, 1000],
                    }
                ]
            }
        ],
        "goniometer": [{"rotation_axis": [1, 0, 0]}],
        "scan": [{"image_range": [1, 100], "oscillation": [0.0, 0.5]}],
    }
    for name, part in parts.items():
        document[name] = [part]
        document["experiment"][0][name] = 0
    return parse_experiments(document)[0]


def test_bbox_and_memory_by_hand():
    experiment = _flat_experiment()
    # A reflection diffracted along (0, 0.1, -1) (towards the detector at -z),
    # predicted on frame 50.5. e1 = s1 x s0 is along -x: zeta = |m2 . e1| = 1.
    s1 = np.array([[0.0, 0.1, -1.0]])
    s1 = s1 / np.linalg.norm(s1) * 1.0
    sigma_b = math.radians(0.05)
    sigma_m = math.radians(0.5)
    bbox = pm.integration_bboxes(
        s1, np.array([50.5]), np.array([0]), experiment, sigma_b, sigma_m, n_sigma=3
    )[0]
    # Across the sphere: 3 x 2 x 0.05 deg either side; at 100.5 mm from the sample,
    # 0.3 deg = 0.526 mm = 5.26 px, so the box is about 11 px wide (floor/ceil).
    assert bbox[1] - bbox[0] in (11, 12)
    assert bbox[3] - bbox[2] in (11, 12, 13)
    # Along the rotation: 3 x 0.5 deg = 3 images either side of 50.5, zeta = 1.
    assert (bbox[4], bbox[5]) == (47, 54)
    # Two such boxes alive on the same frames, then one: peak = 2 boxes x 12 bytes.
    boxes = np.array([[0, 10, 0, 10, 0, 5], [0, 10, 0, 10, 2, 6], [0, 1, 0, 1, 7, 8]])
    assert pm.peak_shoebox_memory(boxes, (0, 10)) == (500 + 400) * 12
    assert pm.peak_shoebox_memory(boxes, (6, 10)) == 12  # only the last box lives


def test_block_peaks_are_each_blocks_peak_over_every_box():
    """Each block's peak from only the boxes that can reach it is the peak over all
    of them: boxes of 1 to 40 frames, starting anywhere, blocks of 1 to 30 frames."""
    rng = np.random.default_rng(11)
    z0 = rng.integers(-5, 300, 2000)
    x0, y0 = rng.integers(0, 100, (2, 2000))
    size = rng.integers(1, 8, (2, 2000))
    boxes = np.stack(
        [x0, x0 + size[0], y0, y0 + size[1], z0, z0 + rng.integers(1, 41, 2000)],
        axis=1,
    )
    for per_block in (1, 7, 30):
        spans = [(start, start + per_block) for start in range(0, 300, per_block)]
        expected = [pm.peak_shoebox_memory(boxes, span) for span in spans]
        assert pm.block_peaks(boxes, spans) == expected
        assert min(expected) > 0 and len(set(expected)) > 5


def test_boxes_dials_has_none_for_are_marked_not_made_up():
    """zeta 0 (s1 in the plane of the axis and the beam) spans the scan, where it
    divided by zero; a corner behind the detector's plane (6 deg, the 45 deg ray) or
    off the Ewald sphere (8 deg, every ray) gives OFF_DETECTOR, where it gave the
    floor of a NaN."""
    experiment = _flat_experiment()
    s1 = np.array([[0.1, 0.0, -1.0], [0.0, 0.1, -1.0], [0.0, 1.0, -1.0]])
    s1 /= np.linalg.norm(s1, axis=1)[:, None]

    def boxes(sigma_b_deg):
        return pm.integration_bboxes(
            s1, np.full(3, 50.5), np.zeros(3, int), experiment,
            math.radians(sigma_b_deg), math.radians(0.5),
        ).tolist()  # fmt: skip

    off = [pm.OFF_DETECTOR] * 4
    assert boxes(0.05) == [
        [594, 606, 494, 506, 0, 100],  # zeta 0: the whole scan
        [494, 506, 394, 406, 47, 54],
        [492, 508, -511, -489, 47, 54],
    ]
    six = boxes(6.0)
    assert six[0][4:] == [0, 100] and six[1][:4] == [-1095, 2095, -1203, 1617]
    assert six[2] == [*off, 47, 54]
    assert boxes(8.0) == [[*off, 0, 100], [*off, 47, 54], [*off, 47, 54]]


def test_a_shoebox_estimate_says_how_many_boxes_are_off_the_detector():
    bbox = np.array([[0, 10, 0, 20, 5, 8], [0, 30, 0, 10, 5, 6]])
    off = np.array([[pm.OFF_DETECTOR] * 4 + [5, 9]])
    with_off = np.concatenate([bbox, off])
    estimate = pm._shoebox(with_off, with_off, 3.0)
    assert estimate.n_off_detector == 1
    assert estimate.median_size_px == (20.0, 15.0, 2.0)
    assert estimate.max_size_px == (30, 20, 3)
    assert estimate.note.endswith(
        "; 1 of the 3 integration boxes have a corner whose ray never meets the "
        "detector's plane (sigma_b is too large for it): dials.integrate would stop "
        "on them (dxtbx's ray intersection asserts); sizes and memory are of the others"
    )
    assert estimate.n_boxes == 3
    none_left = pm._shoebox(off, off, 3.0)
    assert none_left.median_size_px is None and none_left.max_size_px is None
    assert none_left.median_bytes_per_reflection is None
    assert pm._shoebox(bbox, bbox, 3.0).note == pm.SHOEBOX_NOTE
    # sizes of the first boxes, the count of the second (every prediction's)
    every = pm._shoebox(bbox, with_off, 3.0, pm.ALL_PREDICTIONS)
    assert every.median_size_px == (20.0, 15.0, 2.0) and every.n_boxes == 3
    assert every.note.startswith(pm.ALL_PREDICTIONS_NOTE + "; 1 of the 3 ")


def test_a_sigma_b_too_large_for_the_detector_leaves_no_box_and_no_memory(
    shared_data, reference
):
    """Every box off the detector (sigma_b 8 deg on a real scan): none is sized and
    no memory is made up, overall or per block; the count says why."""
    table, experiments = _load(shared_data, reference[0])
    absurd = (math.radians(8.0), math.radians(0.5), 500)
    with mock.patch.object(pm, "compute_sigmas", return_value=absurd):
        model = pm.profile_model(table, table.shoeboxes, experiments).experiments[0]
    assert model.applicable and model.sigma_b_deg == pytest.approx(8.0)
    assert model.shoebox.n_off_detector == model.n_matched > 0
    assert model.shoebox.median_size_px is None and model.shoebox.peak_bytes is None
    assert [block.shoebox_peak_bytes for block in model.blocks] == [None] * len(
        model.blocks
    )


@pytest.mark.parametrize(
    "function, expected, most",
    [
        (lambda x: (x - 0.3) ** 2 + 1.0, 0.3, 8),  # a parabola: one parabolic step
        (lambda x: (x + 7.0) ** 2, -7.0, 12),  # outside the start: the bracket walks
        (lambda x: abs(x - 0.71), 0.71, 60),  # a kink: golden sections
        (lambda x: math.cosh(3.0 * (x - 2.5)) + 0.1 * x, 2.48890, 30),
    ],
)
def test_brent_finds_minima_in_few_evaluations(function, expected, most):
    """The minimum to the tolerance, whichever side of the start it lies, in about
    as many evaluations as Brent's method takes (a search that lost its parabolic
    steps would take several times as many)."""
    evaluations = []

    def counted(x):
        evaluations.append(x)
        return function(x)

    minimum = pm._minimise_1d(counted, 0.0, 1.0, 1e-8)
    assert minimum == pytest.approx(expected, abs=1e-5 if expected == 2.48890 else 3e-8)
    assert len(evaluations) <= most


@pytest.mark.parametrize("number", [0, 1, 2])
def test_sigma_m_is_the_likelihood_maximum(shared_data, reference, number):
    """The search stops at the maximum of the likelihood (ln sigma_m to 1e-8; one
    step either side is no better), having evaluated it at most 20 times (DIALS's
    simplex takes 60 to 100; the sigmas are those of the test against DIALS)."""
    table, experiments = _load(shared_data, reference[number])
    searches = []
    search = pm._minimise_1d

    def watched(function, start, stop, tolerance):
        calls = []

        def counted(x):
            calls.append(x)
            return function(x)

        found = search(counted, start, stop, tolerance)
        searches.append((function, found, len(calls)))
        return found

    with mock.patch.object(pm, "_minimise_1d", watched):
        model = pm.profile_model(table.columns, table.shoeboxes, experiments)
    [(likelihood, found, n_evaluations)] = searches
    assert math.degrees(math.exp(found)) == model.experiments[0].sigma_m_deg
    assert n_evaluations <= 20
    at_found = likelihood(found)
    for step in (-1e-6, 1e-6, -1e-4, 1e-4):
        assert likelihood(found + step) >= at_found


def test_the_likelihood_shares_image_edges_and_is_dials_formula(shared_data):
    """The likelihood with each image edge's erf taken once is DIALS's formula, two
    erfs a frame, e± = (tau ± width/2)|zeta|/sqrt(2) divided by sigma, to 1e-13
    (real rows, and frames with no counts left out so that some edges are not
    shared)."""
    folder = shared_data / "centroid_test_data"
    table = read_reflections(folder / "indexed.refl")
    [experiment] = read_experiments(folder / "indexed.expt")
    rows = np.flatnonzero((table["flags"] & pm.INDEXED) != 0)
    columns = _table_columns(table, rows)
    scan = prediction.ScanGeometry.from_experiment(experiment)
    zeta = pm.zeta_factor(
        experiment.goniometer.rotation_axis_lab,
        np.asarray(experiment.beam.s0),
        columns.s1,
    )
    sums = pm._pixel_sums(columns, table.shoeboxes, experiment, True)
    frame_sum = sums.frame_sum.copy()
    frame_sum[1::3] = 0.0  # some frames without counts: edges on both sides of gaps
    bbox_z0 = np.asarray(table.shoeboxes.bbox)[rows, 4].astype(np.int64)
    likelihoods = []
    with mock.patch.object(
        pm, "_minimise_1d", lambda f, *_: likelihoods.append(f) or -7.0
    ):
        pm._sigma_m(
            columns, frame_sum, sums.frame_start, sums.frames, bbox_z0, zeta, scan
        )
    expected = 0.0
    for row in range(len(rows)):
        first, n_frames = sums.frame_start[row], sums.frames[row]
        counts = frame_sum[first : first + n_frames]
        frame = bbox_z0[row] + np.arange(n_frames)
        kept = counts > 0
        if not kept.any():
            continue
        tau = scan.angle(frame[kept] + 0.5) - columns.phi[row]
        e_plus = (tau + scan.width / 2) * abs(zeta[row]) / math.sqrt(2.0)
        e_minus = (tau - scan.width / 2) * abs(zeta[row]) / math.sqrt(2.0)
        sigma = math.radians(0.2)
        z = np.array(
            [
                0.5 * (math.erf(a / sigma) - math.erf(b / sigma))
                for a, b in zip(e_plus, e_minus)
            ]
        )
        z = np.maximum(z, 1e-10)
        n = counts[kept]
        expected += np.sum(n * np.log(z)) - (n.sum() - 1) * math.log(z.sum())
    [likelihood] = likelihoods
    assert likelihood(math.log(math.radians(0.2))) == pytest.approx(
        -expected, rel=1e-13
    )


def test_select_for_sigma_tops_up_with_every_nth_row():
    flags = np.zeros(25000, dtype=np.uint64)
    flags[:4000] = pm.USED_IN_REFINEMENT
    chosen = pm.select_for_sigma(flags)
    assert np.array_equal(chosen[:4000], np.arange(4000))
    # 21000 others, step floor(21000 / 6000) = 3: every 3rd, 7000 of them.
    assert np.array_equal(chosen[4000:], np.arange(4000, 25000, 3))
    assert len(pm.select_for_sigma(flags[:100])) == 100


@pytest.mark.parametrize(
    "n_used, n_others",
    [(4000, 21000), (0, 19999), (0, 20000), (9999, 2), (0, 39999), (12000, 5000)],
)
def test_dials_choice_taken_again_is_the_same(n_used, n_others):
    """The profile model takes DIALS's choice once and gives it to the calculator,
    which takes it again: every row, in order, whatever the counts (a top-up of
    every n-th other row never leaves as many as twice the rows it tops up)."""
    rng = np.random.default_rng(n_used + n_others)
    flags = np.zeros(n_used + n_others, dtype=np.uint64)
    flags[rng.permutation(len(flags))[:n_used]] = pm.USED_IN_REFINEMENT
    chosen = pm.select_for_sigma(flags)
    assert np.array_equal(pm.select_for_sigma(flags[chosen]), np.arange(len(chosen)))


def test_reference_selection_equals_the_flags_written_plainly(shared_data, reference):
    table, _ = _load(shared_data, reference[0])
    rng = np.random.default_rng(5)
    n = 5000
    bits = np.uint64(1) << rng.integers(0, 64, (n, 3)).astype(np.uint64)
    flags = np.bitwise_or.reduce(bits, axis=1)
    flags[::3] |= np.uint64(pm.INDEXED)
    hkl = rng.integers(-1, 2, (n, 3)).astype(np.int32)  # (0, 0, 0) about 1 in 27
    ids = np.zeros(n, np.int64)
    for f, m, i in (
        (flags, hkl, ids),
        (flags.astype(np.int64), hkl, ids),  # flags read as signed
        (table["flags"], table["miller_index"], table["id"]),
    ):
        unsigned = np.asarray(f).astype(np.uint64)
        expected = (
            ((unsigned & np.uint64(pm.INDEXED)) != 0)
            & ((unsigned & np.uint64(pm.BAD_FOR_REFINEMENT)) == 0)
            & np.any(np.asarray(m) != 0, axis=1)
        )
        assert expected.sum() > 0 and not expected.all()
        assert pm.reference_selection(f, m, i).tolist() == expected.tolist()


def test_negative_experiment_id_is_an_error():
    flags = np.array([pm.INDEXED], dtype=np.uint64)
    with pytest.raises(pm.ProfileModelError, match="invalid experiment id"):
        pm.reference_selection(flags, np.array([[1, 2, 3]]), np.array([-1]))
    # A negative id on a row that is not kept is no error (DIALS checks kept rows).
    unkept = np.array([pm.INDEXED, 0], dtype=np.uint64)
    hkl = np.array([[1, 2, 3], [1, 2, 3]])
    assert pm.reference_selection(unkept, hkl, np.array([0, -1])).tolist() == [
        True,
        False,
    ]


def _plain_match(keys, xyzcal_px, predictions, max_distance_px=2.0):
    """The matching written plainly, row by row: within each (h, k, l, entering, id,
    panel) group of candidate rows the nearest to its prediction wins (the first row
    on ties), if nearer than the limit; the winners in frame order (stable)."""
    best = {}
    for row in range(len(keys)):
        if not predictions.ok[row] or predictions.panel[row] != keys[row, 5]:
            continue
        offset = predictions.xyzcal_px[row] - xyzcal_px[row]
        distance = math.sqrt(float(np.sum(offset**2)))
        key = tuple(int(v) for v in keys[row])
        if key not in best or distance < best[key][0]:
            best[key] = (distance, row)
    winners = sorted(row for d, row in best.values() if d < max_distance_px)
    return sorted(winners, key=lambda row: predictions.xyzcal_px[row, 2])


@pytest.mark.parametrize("wide", [False, True])
def test_matching_equals_the_rule_written_plainly(wide):
    rng = np.random.default_rng(12 + wide)
    n = 3000
    keys = np.column_stack(
        [
            rng.integers(-3, 3, (n, 3)),
            rng.integers(0, 2, n),
            rng.integers(0, 3, n),
            rng.integers(0, 4, n),
        ]
    )
    if wide:  # beyond what packs into two numbers: the six columns are sorted
        keys[::7, 0] = rng.integers(-(2**40), 2**40, len(keys[::7]))
        keys[5, 4] = -1
    xyzcal = rng.uniform(0, 100, (n, 3))
    offsets = rng.choice([0.0, 0.5, 1.0, 2.5], (n, 3))  # ties, and misses beyond 2
    predictions = prediction.Predictions(
        ok=rng.random(n) > 0.1,
        panel=np.where(rng.random(n) > 0.1, keys[:, 5], 9),
        xyzcal_mm=np.zeros((n, 3)),
        xyzcal_px=xyzcal + offsets * rng.choice([-1, 1], (n, 3)),
        s1=np.zeros((n, 3)),
    )
    found = prediction.match_with_reference(keys, xyzcal, predictions)
    expected = _plain_match(keys, xyzcal, predictions)
    assert 100 < len(expected) < n
    assert found.tolist() == expected


def test_reflection_keys_sort_as_the_indices_and_refuse_what_does_not_pack():
    rng = np.random.default_rng(21)
    hkl = rng.integers(-(2**20), 2**20, (4000, 3))
    hkl[:1000] = rng.integers(-2, 3, (1000, 3))  # many equal reflections
    hkl[5] = [-(2**20), 2**20 - 1, 0]  # the ends of the range
    entering = rng.integers(0, 2, 4000)
    keys = prediction.reflection_keys(hkl, entering)
    by_columns = np.lexsort((entering, hkl[:, 2], hkl[:, 1], hkl[:, 0]))
    assert keys.dtype == np.uint64
    assert np.array_equal(np.argsort(keys, kind="stable"), by_columns)
    same = (hkl[:, None] == hkl[None, :1000]).all(axis=2) & (
        entering[:, None] == entering[None, :1000]
    )
    assert np.array_equal(keys[:, None] == keys[None, :1000], same)
    for too_large in ([2**20, 0, 0], [0, -(2**20) - 1, 0]):
        assert prediction.reflection_keys(np.array([too_large]), [1]) is None
    assert prediction.reflection_keys(np.array([[1, 2, 3]]), [2]) is None


@pytest.mark.parametrize("number", [0, 2])
def test_profile_model_without_packed_keys_is_the_same(shared_data, reference, number):
    """Indices too large to pack take np.unique over whole rows: the same model."""
    from unittest import mock

    table, experiments = _load(shared_data, reference[number])
    packed = pm.profile_model(table.columns, table.shoeboxes, experiments)
    with mock.patch.object(prediction, "reflection_keys", return_value=None):
        whole = pm.profile_model(table.columns, table.shoeboxes, experiments)
    assert whole.as_dict() == packed.as_dict()


def _rotation(axis, angle):
    """The right-handed rotation matrix about the unit ``axis`` by ``angle`` (rad)."""
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def plain_neighbour_pixels(table, rows, hkl, experiment):
    """Per chosen row, per pixel of its shoebox (z, y, x), whether the pixel centre
    maps to another Miller index than the row's at the start or the end of its frame
    (dials.integrate's mask_neighbouring: h = A^-1 F^-1 R(phi)^T S^-1 (s1 - s0),
    rounded, s1 along the pixel with the length of s0)."""
    goniometer, scan, detector = (
        experiment.goniometer,
        experiment.scan,
        experiment.detector,
    )
    fixed = (
        np.eye(3) if goniometer.fixed_rotation is None else goniometer.fixed_rotation
    )
    setting = (
        np.eye(3)
        if goniometer.setting_rotation is None
        else goniometer.setting_rotation
    )
    axis = np.asarray(goniometer.rotation_axis, float)
    axis = axis / np.linalg.norm(axis)
    to_hkl = np.linalg.inv(experiment.crystal.A) @ np.linalg.inv(fixed)
    s0 = np.asarray(experiment.beam.s0, float)
    start, width = (
        math.radians(v) for v in (scan.oscillation[0], scan.oscillation_width)
    )
    arrays = prediction.DetectorArrays.of(detector)
    flagged = []
    for number, row in enumerate(rows):
        x0, x1, y0, y1, z0, z1 = (int(v) for v in table.shoeboxes.bbox[row])
        p = int(table.shoeboxes.panel[row])
        lab = np.empty((y1 - y0, x1 - x0, 3))
        for j in range(y1 - y0):
            for k in range(x1 - x0):
                prediction.pixel_lab_coord(
                    p, x0 + k + 0.5, y0 + j + 0.5, arrays.origin, arrays.fast,
                    arrays.slow, arrays.pixel_size, arrays.mu, arrays.thickness,
                    lab[j, k],
                )  # fmt: skip
        s1 = lab / np.linalg.norm(lab, axis=2)[..., None] * np.linalg.norm(s0)
        r = (s1 - s0) @ np.linalg.inv(setting).T
        mask = np.zeros((z1 - z0, y1 - y0, x1 - x0), bool)
        for z in range(z1 - z0):
            phi = start + (z0 + z - scan.image_range[0] + 1) * width
            for angle in (phi, phi + width):
                h = r @ _rotation(axis, -angle).T @ to_hkl.T
                mask[z] |= (np.floor(h + 0.5).astype(int) != hkl[number]).any(axis=2)
        flagged.append(mask)
    return flagged


@pytest.mark.parametrize("pixels", ["real", "every pixel 1.5"])
def test_mask_neighbouring_equals_its_definition(shared_data, reference, pixels):
    """The pixels mask_neighbouring takes out of the signal (Valid|Background from
    then on) are those a plain statement of the rule finds. On the real rows it finds
    none (as DIALS does on these files); with a cell five times longer each spot's
    pixels map to several Miller indices, so that the decision turns on every step
    of the rule, pixel by pixel and frame by frame. The spot finder's shoeboxes hold
    0 in their pixels with mask 0; with a value there (as in shoeboxes read from the
    images), such a pixel once masked counts for sigma_b, as in DIALS."""
    table, experiments = _load(shared_data, reference[0])
    real = experiments[0]
    rows = np.flatnonzero((table["flags"] & pm.INDEXED) != 0)[:60]
    shoeboxes = table.shoeboxes
    if pixels != "real":
        shoeboxes = _with_pixel_value(shoeboxes, 1.5, rows)
    hkl = table["miller_index"][rows].astype(np.int64)
    columns = _table_columns(table, rows)
    assert not any(f.any() for f in plain_neighbour_pixels(table, rows, hkl, real))
    unmasked = pm._pixel_sums(columns, shoeboxes, real, False)
    np.testing.assert_array_equal(
        pm._pixel_sums(columns, shoeboxes, real, True)[2], unmasked[2]
    )
    crystal = dataclasses.replace(real.crystal, real_space=real.crystal.real_space * 5)
    longer = dataclasses.replace(real, crystal=crystal)
    columns = dataclasses.replace(columns, miller_index=hkl * 5)
    masked = pm._pixel_sums(columns, shoeboxes, longer, True)
    flagged = plain_neighbour_pixels(table, rows, hkl * 5, longer)
    share = sum(f.sum() for f in flagged) / sum(f.size for f in flagged)
    assert 0.2 < share < 0.95  # decided pixel by pixel, not row by row
    frame_sum, sum_w = np.zeros_like(unmasked[2]), np.zeros(len(rows))
    for number, row in enumerate(rows):
        data, mask, _ = shoeboxes.pixels(row)
        code = np.where(flagged[number], pm.VALID_BACKGROUND, mask)
        sum_w[number] = data[code != 0].astype(np.float64).sum()
        foreground = np.where(code == pm.VALID_FOREGROUND, data, 0).sum(axis=(1, 2))
        start = masked[3][number]
        frame_sum[start : start + len(foreground)] = foreground
    np.testing.assert_allclose(masked[0], sum_w, rtol=1e-12)
    np.testing.assert_allclose(masked[2], frame_sum, rtol=1e-12, atol=1e-9)
    assert not np.allclose(masked[2], unmasked[2])  # the rule changed the signal


# ------------------------------------------------- every prediction (DIALS's memory)


def test_a_hall_symbol_gives_its_lattice():
    assert prediction.lattice_symbol(" P 4 2") == "P"
    assert prediction.lattice_symbol("-C 2y") == "C"
    assert prediction.lattice_symbol(" R 3 2") == "R"
    assert prediction.lattice_symbol("-I 4 2") == "I"
    assert prediction.lattice_symbol("") == "P"  # no space group given
    assert prediction.lattice_symbol("?") == "P"


@pytest.mark.parametrize(
    "lattice, present",
    [
        ("P", lambda h, k, l: np.ones_like(h, bool)),
        ("A", lambda h, k, l: (k + l) % 2 == 0),
        ("B", lambda h, k, l: (h + l) % 2 == 0),
        ("C", lambda h, k, l: (h + k) % 2 == 0),
        ("I", lambda h, k, l: (h + k + l) % 2 == 0),
        ("R", lambda h, k, l: (-h + k + l) % 3 == 0),
        ("F", lambda h, k, l: ((h + k) % 2 == 0) & ((k + l) % 2 == 0)),
    ],
)
def test_the_indices_in_the_sphere_are_every_present_one(shared_data, lattice, present):
    """Against every (h, k, l) of a box around the sphere, tested one by one: the
    same indices within 1/d_min (the enumeration may add a margin the predictor
    checks), none absent for the lattice, never (0, 0, 0)."""
    [experiment] = read_experiments(shared_data / "centroid_test_data/indexed.expt")
    ub, d_min = np.asarray(experiment.crystal.A), 3.0
    found = prediction.indices_in_sphere(ub, d_min, lattice)
    limit = 40  # beyond every index within 3 A of this cell
    axis = np.arange(-limit, limit + 1)
    box = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    h, k, l = box.T  # noqa: E741
    inside = ((box @ ub.T) ** 2).sum(1) <= 1 / d_min**2
    expected = box[inside & present(h, k, l) & np.any(box != 0, axis=1)]
    assert np.abs(found).max() < limit
    r_sq = ((found @ ub.T) ** 2).sum(1)
    within = found[r_sq <= 1 / d_min**2]
    assert sorted(map(tuple, within.tolist())) == sorted(map(tuple, expected.tolist()))
    assert len(expected) > 1000
    h, k, l = found.T  # noqa: E741
    assert present(h, k, l).all() and np.any(found != 0, axis=1).all()


def _nearest_distances(points, others):
    """Each point's distance to the nearest of ``others`` (both (n, 3))."""
    return np.array([np.sqrt(((others - point) ** 2).sum(1)).min() for point in points])


def test_every_prediction_lies_where_dials_integrate_predicted_it(shared_data):
    """centroid_test_data's integrated.refl holds DIALS's own predictions of the scan
    (flag predicted; indexed in another basis, so compared by position): all but 13
    of its 1,991 have one of ours within 1 px, and ours in the scan are as many."""
    folder = shared_data / "centroid_test_data"
    [experiment] = read_experiments(folder / "indexed.expt")
    hkl, entering, predicted = prediction.predict_all(experiment)
    assert predicted.ok.all() and len(hkl) == len(entering) == 4204
    z = predicted.xyzcal_px[:, 2]
    assert -5 < z.min() and z.max() < 14  # the 9 images and 1 degree either side
    ours = predicted.xyzcal_px[(z >= 0) & (z < 9)]
    table = read_reflections(folder / "integrated.refl")
    flagged = (np.asarray(table["flags"]).astype(np.uint64) & np.uint64(1)) != 0
    theirs = np.asarray(table["xyzcal.px"])[flagged]
    assert (len(theirs), len(ours)) == (1991, 1986)
    distance = _nearest_distances(theirs, ours)
    assert (distance < 1).sum() == 1978 and np.median(distance) < 0.1


def test_a_scan_varying_crystal_loses_no_prediction_to_the_static_first_look(
    shared_data,
):
    """Only reflections the static crystal puts near the scan are searched frame by
    frame: the same predictions as searching every index."""
    [experiment] = read_experiments(
        shared_data / "centroid_test_data_refined/refined.expt"
    )
    hkl, entering, predicted = prediction.predict_all(experiment)
    tried = prediction.indices_in_sphere(
        experiment.crystal.A,
        prediction.detector_max_resolution(
            experiment.detector, np.asarray(experiment.beam.s0)
        ),
    )
    every = np.concatenate([tried, tried])
    flags = np.repeat([False, True], len(tried))
    plain = prediction.predict_reflections(
        every, flags, np.zeros(len(every)), experiment
    )
    assert len(hkl) == int(plain.ok.sum()) == 4366
    assert np.array_equal(hkl, every[plain.ok])
    assert np.array_equal(entering, flags[plain.ok])
    assert np.array_equal(predicted.xyzcal_px, plain.xyzcal_px[plain.ok])


def test_a_scan_over_a_turn_predicts_a_reflection_once_per_turn():
    """400 degrees (800 images of 0.5 degrees, 1 degree of padding): a ray crossing
    in the first 42 degrees crosses again one turn (720 images) later; every other
    ray once."""
    experiment = _flat_experiment(
        scan={"image_range": [1, 800], "oscillation": [0.0, 0.5]},
        crystal={
            "__id__": "crystal",
            "real_space_a": [40.0, 0, 0],
            "real_space_b": [0, 40.0, 0],
            "real_space_c": [0, 0, 40.0],
            "space_group_hall_symbol": " P 1",
        },
    )
    hkl, entering, predicted = prediction.predict_all(experiment)
    z = predicted.xyzcal_px[:, 2]
    keys = [(*row, flag) for row, flag in zip(hkl.tolist(), entering.tolist())]
    seen: dict = {}
    for key, frame in zip(keys, z.tolist()):
        seen.setdefault(key, []).append(frame)
    twice = [sorted(frames) for frames in seen.values() if len(frames) == 2]
    assert twice and all(len(frames) <= 2 for frames in seen.values())
    assert all(abs(b - a - 720) < 1e-6 for a, b in twice)
    assert all(a < 82 for a, _ in twice)  # within the first 40 + 1 degrees


def test_a_prediction_too_large_is_refused_and_the_reference_boxes_kept(
    shared_data, reference, monkeypatch
):
    """indices_expected is the sphere over the reciprocal cell (centroid: within 1%
    of the 286,926 indices found); over MAX_INDICES, predict_all refuses, and the
    profile model keeps sigma_b, sigma_m and the reference reflections' boxes, saying
    why."""
    table, experiments = _load(shared_data, reference[0])
    [experiment] = experiments
    d_min = prediction.detector_max_resolution(
        experiment.detector, np.asarray(experiment.beam.s0)
    )
    found = prediction.indices_in_sphere(experiment.crystal.A, d_min)
    inside = ((found @ np.asarray(experiment.crystal.A).T) ** 2).sum(1) <= d_min**-2
    assert int(inside.sum()) == 286926
    expected = prediction.indices_expected(experiment)
    assert expected == pytest.approx(286926, rel=0.01)
    monkeypatch.setattr(prediction, "MAX_INDICES", 1000)
    with pytest.raises(prediction.TooManyIndices, match="more than 1,000"):
        prediction.predict_all(experiment)
    model = pm.profile_model(
        table, table.shoeboxes, experiments, all_predictions=True
    ).experiments[0]
    assert model.sigma_b_deg == pytest.approx(reference[0]["sigma_b_deg"], rel=1e-3)
    assert model.shoebox.counted == "reference reflections"
    assert model.shoebox.n_boxes == model.n_matched == 438
    assert model.shoebox.note == (
        f"{pm.SHOEBOX_NOTE}; not every prediction was boxed (about "
        f"{expected:.3g} Miller indices lie within {d_min:.3g} A, more than 1,000): "
        "the memory is the reference reflections'"
    )


@pytest.mark.parametrize(
    "name, sigma_m_deg",
    [
        ("centroid_test_data/indexed", 0.17257301403),
        ("centroid_test_data_refined/refined", 0.17257527093),
    ],
)
def test_sigma_m_before_indexing_is_an_estimate_about_the_spots_own_angles(
    shared_data, name, sigma_m_deg
):
    """A rotation scan of several images without a crystal: DIALS's sigma_m
    estimator about each spot's own centroid and angle (no prediction to measure it
    about), labelled an estimate; it runs 10-12% below what DIALS computed about the
    predictions of the same scan (profile_reference.json)."""
    table = read_reflections(shared_data / f"{name}.refl")
    experiment = read_experiments(shared_data / f"{name}.expt")[0]
    unindexed = [dataclasses.replace(experiment, crystal=None)]
    model = pm.profile_model(table.columns, table.shoeboxes, unindexed).experiments[0]
    assert model.label == pm.SIGMA_M_ESTIMATE_LABEL and model.reason == ""
    assert model.sigma_m_deg == pytest.approx(sigma_m_deg, rel=1e-8)
    assert model.sigma_m_images == pytest.approx(model.sigma_m_deg / 0.2, rel=1e-12)
    assert model.shoebox is None and model.n_selected == 569
    reference = {
        entry["reflections"]: entry["sigma_m_deg"]
        for entry in json.loads((shared_data / "profile_reference.json").read_text())
    }[f"{name}.refl"]
    assert 0.87 < model.sigma_m_deg / reference < 0.91
    # profile.max_reflections caps the spots it is estimated from: an even subset.
    sizes = []
    estimate = pm._sigma_m_before_indexing

    def watched(result, spots, *rest):
        sizes.append(len(spots.rows))
        return estimate(result, spots, *rest)

    with mock.patch.object(pm, "_sigma_m_before_indexing", watched):
        capped = pm.profile_model(
            table.columns, table.shoeboxes, unindexed, max_reference=200
        ).experiments[0]
        pm.profile_model(table.columns, table.shoeboxes, unindexed, max_reference=None)
    every = sizes[1]
    assert every == 569 and sizes[0] == len(range(0, every, 3)) == 190
    assert capped.sigma_m_deg != model.sigma_m_deg
    assert capped.sigma_m_deg == pytest.approx(model.sigma_m_deg, rel=0.1)


def _tiled(columns: pm._Columns, copies: int) -> pm._Columns:
    """The same reflections ``copies`` times over (each copy reads the same boxes):
    a likelihood ``copies`` times the one of the rows alone, with the same maximum."""
    return pm._Columns(
        **{
            field.name: np.concatenate([getattr(columns, field.name)] * copies)
            for field in dataclasses.fields(columns)
        }
    )


@pytest.fixture(scope="module")
def centroid_as_it_is(shared_data):
    """centroid_test_data's indexed rows, with their own columns (569 rows)."""
    folder = shared_data / "centroid_test_data"
    table = read_reflections(folder / "indexed.refl")
    [experiment] = read_experiments(folder / "indexed.expt")
    rows = np.flatnonzero((table["flags"] & pm.INDEXED) != 0)
    return table, experiment, _table_columns(table, rows)


def _newtons_function(columns, table, experiment, **options):
    """compute_sigmas with Newton's steps watched: its result and the function
    (value, slope, curvature of the likelihood in ln sigma_m) the steps were given."""
    seen = []

    def watched(function, start):
        seen.append(function)
        return newton(function, start)

    newton = pm._newton_maximum
    with mock.patch.object(pm, "_newton_maximum", watched):
        result = pm.compute_sigmas(columns, table.shoeboxes, experiment, **options)
    return result, seen


def test_newtons_steps_find_the_maximum_of_many_reflections(
    shared_data, reference, centroid_as_it_is
):
    """From 4,000 reflections without a start, sigma_m is found by Newton's steps
    from Brent's search over an even subset of 2,000 to 4,000. Eight copies of the
    569 rows have the likelihood of one times eight, so the same maximum: the
    copies' sigma_m is the rows' own (found by Brent's search alone, to its
    tolerance) and DIALS's; at it the likelihood's slope is nil, to rounding."""
    table, experiment, columns = centroid_as_it_is
    alone = pm.compute_sigmas(columns, table.shoeboxes, experiment)
    searches = mock.Mock(wraps=pm._sigma_m)
    with mock.patch.object(pm, "_sigma_m", searches):
        (sigma_b, sigma_m, n), seen = _newtons_function(
            _tiled(columns, 8), table, experiment
        )
    assert n == 8 * alone[2] == 4536
    sizes = [len(call.args[0].rows) for call in searches.call_args_list]
    assert sizes == [2268, 4536]  # the subset's search, then the steps over all
    [likelihood] = seen
    assert sigma_b == pytest.approx(alone[0], rel=1e-12)
    assert sigma_m == pytest.approx(alone[1], rel=1e-7)
    expected = reference[0]["computed_on_the_table_as_it_is"]["sigma_m_deg"]
    assert math.degrees(sigma_m) == pytest.approx(expected, rel=1e-4)
    _, slope, curvature = likelihood(math.log(sigma_m))
    assert curvature < 0 and abs(slope / curvature) < 1e-12
    # Brent's search over the same copies, to its tolerance, finds the same maximum.
    with mock.patch.object(pm, "NEWTON_FROM_REFLECTIONS", 10**9):
        searched = pm.compute_sigmas(_tiled(columns, 8), table.shoeboxes, experiment)
    assert searched[1] == pytest.approx(sigma_m, rel=1e-7)


def test_fewer_reflections_without_a_start_are_searched_as_dials_starts(
    centroid_as_it_is,
):
    """Below twice the subset's 2,000, a subset's search would cost about as much as
    one over all: Brent's search alone, as below 1,000."""
    table, experiment, columns = centroid_as_it_is
    for copies in (2, 6):  # 1,134 and 3,402 reflections
        _, seen = _newtons_function(_tiled(columns, copies), table, experiment)
        assert seen == []


def test_the_likelihoods_slopes_are_its_derivatives(centroid_as_it_is):
    """The slope and curvature Newton's steps take are the first and second
    derivatives of the likelihood the search maximises (central differences). Where
    the rocking curve is narrow, frames' z cross the clamp at 1e-10, whose kinks
    spoil the second difference: there, the slope only."""
    table, experiment, columns = centroid_as_it_is
    _, [likelihood] = _newtons_function(
        _tiled(columns, 2), table, experiment, sigma_m_start=math.radians(0.2)
    )
    for sigma_deg in (0.02, 0.05, 0.1, 0.2, 1.0):
        at = math.log(math.radians(sigma_deg))
        value, slope, curvature = likelihood(at)
        below, above = likelihood(at - 1e-4)[0], likelihood(at + 1e-4)[0]
        assert slope == pytest.approx((above - below) / 2e-4, rel=1e-6)
        if sigma_deg >= 0.1:
            below, above = likelihood(at - 1e-3)[0], likelihood(at + 1e-3)[0]
            second = (above - 2 * value + below) / 1e-6
            assert curvature == pytest.approx(second, rel=1e-5)


def _log_cosh_peak(x: float) -> tuple[float, float, float]:
    """-ln cosh(5 (x - 3)): a maximum at 3 that a full Newton step from 3.3
    overshoots to a lower value, and back again, for ever; halved, it settles."""
    u = 5.0 * (x - 3.0)
    return -math.log(math.cosh(u)), -5.0 * math.tanh(u), -25.0 / math.cosh(u) ** 2


@pytest.mark.parametrize(
    "function, start, expected",
    [
        (lambda x: (-((x - 2.5) ** 2), -2 * (x - 2.5), -2.0), 0.0, 2.5),  # steps of 1
        (_log_cosh_peak, 3.3, 3.0),  # steps halved
        (lambda x: (x**2, 2 * x, 2.0), 0.5, None),  # a minimum, not a maximum
        (lambda x: (math.nan, 0.0, -1.0), 0.0, None),
        (lambda x: (-math.exp(1e3 * x), 1.0, -1.0), 0.0, None),  # overflows
        (lambda x: (-x, 1.0, -1e-9), 0.0, None),  # no step lands higher: falls
        (lambda x: (-abs(x - 1), math.copysign(1.0, 1 - x), -1.0), 0.0, None),  # kink
    ],
)
def test_newtons_steps_trust_only_a_rising_concave_function(function, start, expected):
    found = pm._newton_maximum(function, start)
    assert found == (None if expected is None else pytest.approx(expected, abs=1e-9))


def test_sigma_m_falls_back_to_brents_search(centroid_as_it_is):
    """Where Newton's steps cannot be trusted, the search of few reflections runs
    instead: the same numbers as below NEWTON_FROM_REFLECTIONS, to the last bit."""
    table, experiment, columns = centroid_as_it_is
    tiled = _tiled(columns, 3)
    start = {"sigma_m_start": math.radians(0.2)}
    with mock.patch.object(pm, "_newton_maximum", lambda *_: None):
        fallen = pm.compute_sigmas(tiled, table.shoeboxes, experiment, **start)
    with mock.patch.object(pm, "NEWTON_FROM_REFLECTIONS", 10**9):
        assert fallen == pm.compute_sigmas(tiled, table.shoeboxes, experiment, **start)
    assert fallen != pm.compute_sigmas(tiled, table.shoeboxes, experiment, **start)


@pytest.mark.parametrize("threads", [2, 3])
def test_pixel_sums_on_threads_are_the_same_numbers(centroid_as_it_is, threads):
    """Each thread sums its own run of reflections into its own places: every array
    is the one-thread array, to the last bit."""
    table, experiment, columns = centroid_as_it_is
    tiled = _tiled(columns, 12)
    alone = pm._pixel_sums(tiled, table.shoeboxes, experiment, True)
    assert alone.frame_start[-1] >= pm.THREADED_FROM_FRAMES
    assert len(pm._parts(alone.frame_start, threads)) == threads
    split = pm._pixel_sums(tiled, table.shoeboxes, experiment, True, threads)
    for one, many in zip(alone, split):
        assert one.dtype == many.dtype and one.tobytes() == many.tobytes()


def test_blocks_start_newtons_steps_from_the_whole_scan(shared_data, reference):
    """With Newton's steps from one reflection (blocks from the whole scan's sigma_m,
    the scan from a subset's of about 100), the refined scan's sigmas, overall and in
    each of its three blocks, are those Brent's search finds, to its tolerance."""
    table, experiments = _load(shared_data, reference[2])
    arguments = (table.columns, table.shoeboxes, experiments)
    searched = pm.profile_model(*arguments, block_degrees=0.6).experiments[0]
    steps = mock.Mock(wraps=pm._newton_maximum)
    with (
        mock.patch.object(pm, "NEWTON_FROM_REFLECTIONS", 1),
        mock.patch.object(pm, "NEWTON_START_REFLECTIONS", 100),
        mock.patch.object(pm, "_newton_maximum", steps),
    ):
        stepped = pm.profile_model(*arguments, block_degrees=0.6).experiments[0]
    assert steps.call_count == 4  # the scan and three blocks
    starts = [math.degrees(math.exp(call.args[1])) for call in steps.call_args_list]
    assert starts[1:] == pytest.approx([stepped.sigma_m_deg] * 3, rel=1e-12)
    assert stepped.sigma_m_deg == pytest.approx(searched.sigma_m_deg, rel=1e-7)
    assert stepped.sigma_b_deg == searched.sigma_b_deg
    assert len(stepped.blocks) == 3
    for mine, theirs in zip(stepped.blocks, searched.blocks):
        assert mine.sigma_b_deg == theirs.sigma_b_deg
        assert mine.sigma_m_deg == pytest.approx(theirs.sigma_m_deg, rel=1e-7)


def test_blocks_take_the_reflections_the_whole_scan_takes(shared_data, reference):
    """From 10,000 reflections DIALS's calculator takes those used in refinement
    first; the blocks take the same ones, split by image, not every row of each
    block. The real files hold reference rows refinement did not use (3 of 441 in
    centroid_test_data, 17 of 177 in I23): in a block of all its rows they would
    count where the whole scan leaves them out (on a scan assembled from real spots,
    a block's sigma_b came out up to 90 times the scan's). The refined scan's 408
    are too few for DIALS to choose: here every other one stands for its choice, and
    the blocks hold those 204, once each."""
    table, experiments = _load(shared_data, reference[2])
    arguments = (table.columns, table.shoeboxes, experiments)
    every = pm.profile_model(*arguments, block_degrees=0.6).experiments[0]

    def every_other(flags):  # DIALS's choice is the same taken again: so is this one
        return np.arange(0, len(flags), 1 if len(flags) < 408 else 2)

    with mock.patch.object(pm, "select_for_sigma", every_other):
        chosen = pm.profile_model(*arguments, block_degrees=0.6).experiments[0]
    assert sum(block.n_reflections for block in every.blocks) == 408
    assert sum(block.n_reflections for block in chosen.blocks) == 204
    assert chosen.n_selected == 204
    assert chosen.n_matched == every.n_matched == 408
    assert chosen.sigma_b_deg != every.sigma_b_deg
    for mine, theirs in zip(chosen.blocks, every.blocks):
        assert 0 < mine.n_reflections < theirs.n_reflections
        assert mine.sigma_b_deg != theirs.sigma_b_deg


def test_the_blocks_reflections_add_up_to_the_scans(shared_data, reference):
    """The blocks count the reflections the scan's sigmas use, past the zeta filter:
    they add up to the experiment's reflections used, where the filter leaves some
    out (here a filter at |zeta| 0.5 instead of 0.05, which leaves out 46 of 408)."""
    table, experiments = _load(shared_data, reference[2])
    arguments = (table.columns, table.shoeboxes, experiments)
    with mock.patch.object(pm, "MIN_ZETA", 0.5):
        model = pm.profile_model(*arguments, block_degrees=0.6).experiments[0]
    assert model.n_matched == 408 and model.n_selected == 362
    assert sum(block.n_reflections for block in model.blocks) == 362
