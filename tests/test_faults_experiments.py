"""Experiment lists that are malformed, huge, old or polychromatic: each read, or refused
in one sentence, never a traceback, a numpy warning or a MemoryError.

Every case starts from a real DIALS-written ``.expt`` (``../shared/data``) changed as
described and written into ``tmp_path``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from dials_spot_size_analysis.algorithms.flags import REFLECTION_FLAGS
from dials_spot_size_analysis.formats import FileFormatError, read_experiments

INDEXED = REFLECTION_FLAGS["indexed"]
I23 = "I23_P12M_thau/indexed.expt"
CENTROID = "centroid_test_data/indexed.expt"
INFINITY = "__INFINITY__"  # written as the bare JSON token Infinity
HUGE = "__HUGE__"  # written as 1e400, which json.loads reads as inf


def _write(tmp_path, document, name="changed.expt"):
    text = json.dumps(document)
    text = text.replace(f'"{INFINITY}"', "Infinity").replace(f'"{HUGE}"', "1e400")
    path = tmp_path / name
    path.write_text(text)
    return path


def _read_strictly(path):
    """Read with every numpy floating-point problem and every warning an error."""
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        return read_experiments(path)


def _panel(document, index=3):
    return document["detector"][0]["panels"][index]


def _set(path_in_document, value):
    def change(document):
        *parents, last = path_in_document
        node = document
        for key in parents:
            node = node[key]
        node[last] = value

    return change


# (name, file, change, message the refusal must match)
MALFORMED = [
    (
        "experiment number",
        I23,
        _set(["experiment"], [1]),
        r"experiment 0 is 1, not an object",
    ),
    (
        "experiment string",
        I23,
        _set(["experiment"], ["abc"]),
        r"experiment 0 is 'abc', not an object",
    ),
    (
        "experiment null",
        I23,
        _set(["experiment"], [None]),
        r"experiment 0 is None, not an object",
    ),
    (
        "model list a number",
        I23,
        _set(["beam"], 5),
        r"its beam models are 5, not a list",
    ),
    (
        "reference a bool",
        I23,
        _set(["experiment", 0, "beam"], True),
        r"refers to beam True, not an index",
    ),
    (
        "identifier a number",
        I23,
        _set(["experiment", 0, "identifier"], 7),
        r"identifier 7, not a string",
    ),
    (
        "wavelength 10**400",
        I23,
        _set(["beam", 0, "wavelength"], 10**400),
        r"invalid beam model \(number 0\): wavelength is 1000.*too large",
    ),
    (
        "wavelength 1e400",
        I23,
        _set(["beam", 0, "wavelength"], HUGE),
        r"invalid beam model \(number 0\): wavelength is inf, not a finite number",
    ),
    (
        "wavelength negative",
        I23,
        _set(["beam", 0, "wavelength"], -1.0),
        r"invalid beam model \(number 0\): wavelength is -1, outside the range",
    ),
    (
        "image_size Infinity",
        I23,
        lambda d: _panel(d)["image_size"].__setitem__(0, INFINITY),
        r"invalid detector model \(number 0\): panel 3 \('row-03'\) image_size is inf, not a whole number",
    ),
    (
        "hierarchy Infinity",
        I23,
        lambda d: d["detector"][0]["hierarchy"]["origin"].__setitem__(2, INFINITY),
        r"invalid detector model \(number 0\): the hierarchy root origin component 2 is inf",
    ),
    (
        "hierarchy child index",
        I23,
        lambda d: d["detector"][0]["hierarchy"]["children"].__setitem__(
            0, {"panel": 99}
        ),
        r"invalid detector model \(number 0\): a hierarchy panel is 99, outside the range 0 to 23",
    ),
    (
        "hierarchy children a number",
        I23,
        _set(["detector", 0, "hierarchy", "children"], 3),
        r"children is 3, not a list",
    ),
    (
        "panels a string",
        I23,
        _set(["detector", 0, "panels"], "x"),
        r"invalid detector model \(number 0\): panels is 'x', not a list",
    ),
    (
        "image_range Infinity",
        I23,
        _set(["scan", 0, "image_range"], [1, INFINITY]),
        r"invalid scan model \(number 0\): image_range is inf, not a whole number",
    ),
    (
        "image_range 10**30",
        I23,
        _set(["scan", 0, "image_range"], [10**30, 10**30]),
        r"invalid scan model \(number 0\): image_range is 10{30}, outside the range 0 to 2147483646",
    ),
    (
        "image_range reversed",
        I23,
        _set(["scan", 0, "image_range"], [5, 2]),
        r"image_range \[5, 2\] ends before it starts",
    ),
    (
        "batch_offset Infinity",
        I23,
        _set(["scan", 0, "batch_offset"], INFINITY),
        r"invalid scan model \(number 0\): batch_offset is inf, not a whole number",
    ),
    (
        "scan_axis Infinity",
        I23,
        _set(["goniometer", 0, "scan_axis"], INFINITY),
        r"invalid goniometer model \(number 0\): scan_axis is inf, not a whole number",
    ),
    (
        "scan_axis beyond the axes",
        I23,
        _set(["goniometer", 0, "scan_axis"], 3),
        r"scan_axis is 3, outside the range 0 to 2",
    ),
    (
        "angles too few",
        I23,
        _set(["goniometer", 0, "angles"], [0.0]),
        r"angles has 1 values, not 3",
    ),
    (
        "px_mm_strategy list",
        I23,
        lambda d: _panel(d).__setitem__("px_mm_strategy", [1]),
        r"panel 3 \('row-03'\) px_mm_strategy is \[1\], not an object",
    ),
    (
        "panel type a number",
        I23,
        lambda d: _panel(d).__setitem__("type", 7),
        r"panel 3 \('row-03'\) type is 7, not a string",
    ),
    (
        "properties list",
        I23,
        _set(["scan", 0, "properties"], []),
        r"invalid scan model \(number 0\): properties is \[\], not an object",
    ),
    (
        "oscillation a string",
        I23,
        _set(["scan", 0, "properties", "oscillation"], "x"),
        r"properties oscillation is 'x', not a list",
    ),
    (
        "beam direction zero",
        I23,
        _set(["beam", 0, "direction"], [0, 0, 0]),
        r"invalid beam model \(number 0\): direction is \[0.0, 0.0, 0.0\], which has no direction",
    ),
    (
        "panel axes parallel",
        I23,
        lambda d: _panel(d).__setitem__("slow_axis", [2.0, 0.0, 0.0]),
        r"panel 3 \('row-03'\) fast_axis and slow_axis are parallel",
    ),
    (
        "panel axes antiparallel",
        CENTROID,
        lambda d: _panel(d, 0).__setitem__(
            "slow_axis", [-3 * v for v in _panel(d, 0)["fast_axis"]]
        ),
        r"panel 0 .*fast_axis and slow_axis are parallel",
    ),
    (
        "crystal 1e200",
        I23,
        _set(["crystal", 0, "real_space_a"], [1e200, 1e200, 1e200]),
        r"invalid crystal model \(number 0\): real_space_a component 0 is 1e\+200, outside",
    ),
    (
        "crystal degenerate",
        CENTROID,
        lambda d: d["crystal"][0].__setitem__(
            "real_space_c", d["crystal"][0]["real_space_a"]
        ),
        r"invalid crystal model \(number 0\): the real-space cell is degenerate",
    ),
    (
        "crystal vector zero",
        CENTROID,
        _set(["crystal", 0, "real_space_b"], [0.0, 0.0, 0.0]),
        r"real_space_b is \[0.0, 0.0, 0.0\], which has no direction",
    ),
    (
        "pixel size zero",
        CENTROID,
        lambda d: _panel(d, 0).__setitem__("pixel_size", [0.0, 0.172]),
        r"panel 0 .*pixel_size is 0, outside the range",
    ),
    (
        "oscillation width Infinity",
        CENTROID,
        _set(["scan", 0, "oscillation"], [0.0, INFINITY]),
        r"invalid scan model \(number 0\): oscillation width is inf",
    ),
]


@pytest.mark.parametrize(
    "name, file, change, message", MALFORMED, ids=[case[0] for case in MALFORMED]
)
def test_malformed_values_are_refused_in_one_sentence(
    shared_data, tmp_path, name, file, change, message
):
    document = json.loads((shared_data / file).read_text())
    change(document)
    path = _write(tmp_path, document)
    with pytest.raises(FileFormatError, match=message) as caught:
        _read_strictly(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


# Numbers a DIALS file holds that this program never uses: a NaN there is harmless.
UNUSED_KEYS = {
    "B_covariance",
    "divergence",
    "sigma_divergence",
    "polarization_normal",
    "polarization_fraction",
    "flux",
    "transmission",
    "sample_to_source_distance",
    "trusted_range",
    "raw_image_offset",
    "gain",
    "pedestal",
    "projection_2d",
    "epochs",
    "exposure_time",
    "valid_image_ranges",
    "mask",
}


def _numeric_paths(node, path=()):
    """Every number in ``node`` a reader uses (not under UNUSED_KEYS)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in UNUSED_KEYS:
                yield from _numeric_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _numeric_paths(value, (*path, index))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path


def _nan_cases(shared_data):
    document = json.loads((shared_data / CENTROID).read_text())
    models = {
        k: document[k] for k in ("beam", "detector", "goniometer", "scan", "crystal")
    }
    return [(kind, *rest) for kind, *rest in _numeric_paths(models)]


def _used(path) -> bool:
    """Whether the reader uses the number at ``path`` (a hierarchy group's frame, not
    its placeholder sizes); one panel of the 24 is enough, all read by the same code."""
    if path[0] != "detector":
        return True
    if path[2] == "panels":
        return path[3] <= 1
    return path[-1] == "panel" or any(
        key in path for key in ("fast_axis", "slow_axis", "origin")
    )


@pytest.mark.parametrize("file", [CENTROID, I23])
def test_nan_anywhere_numeric_is_refused(shared_data, tmp_path, file):
    original = json.loads((shared_data / file).read_text())
    models = {
        k: original[k] for k in ("beam", "detector", "goniometer", "scan", "crystal")
    }
    paths = [p for p in _numeric_paths(models) if _used(p)]
    assert len(paths) > 30
    for path_in_document in paths:
        document = json.loads(json.dumps(original))
        node = document
        for key in path_in_document[:-1]:
            node = node[key]
        node[path_in_document[-1]] = float("nan")
        path = _write(tmp_path, document)
        try:
            _read_strictly(path)
        except FileFormatError as error:
            message = str(error)
        else:
            raise AssertionError(f"NaN at {path_in_document} was read")
        kind = path_in_document[0]
        assert f"invalid {kind} model (number 0)" in message, path_in_document
        assert (
            "nan, not a finite number" in message or "not a whole number" in message
        ), (path_in_document, message)


def test_the_real_files_read_without_any_warning(shared_data):
    for name in (
        I23,
        CENTROID,
        "ssx_CuNiR/integrated.expt",
        "centroid_test_data_refined/refined.expt",
        "eiger_therm/imported.expt",
        "I23_P12M_thau/imported.expt",
        "ssx_CuNiR/imported_no_ref_5.expt",
    ):
        assert len(_read_strictly(shared_data / name)) >= 1


def test_an_integer_too_long_for_python_is_refused(tmp_path, shared_data):
    text = (
        (shared_data / CENTROID)
        .read_text()
        .replace('"batch_offset": 0', '"batch_offset": ' + "9" * 5000, 1)
    )
    assert "9" * 5000 in text
    path = tmp_path / "digits.expt"
    path.write_text(text)
    with pytest.raises(FileFormatError, match="is not valid JSON"):
        _read_strictly(path)


# ------------------------------------------------------------------ bounded parsing

MEMORY_LIMIT_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from dials_spot_size_analysis.formats import FileFormatError, read_experiments
    limit = int(1.5e9)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        experiments = read_experiments(sys.argv[1])
    except FileFormatError as error:
        print("REFUSED", error)
    except MemoryError:
        print("MEMORYERROR")
    else:
        print("READ", len(experiments))
    """
)


def test_a_huge_history_is_refused_or_read_within_bounded_memory(shared_data, tmp_path):
    """200 MB of ``[{},{},...]`` would take more than 4 GB once parsed: under a 1.5 GB
    address-space limit it is refused in one sentence (or read), never a
    MemoryError."""
    document = json.loads((shared_data / I23).read_text())
    document["history"] = "__HISTORY__"
    head, tail = json.dumps(document).split('"__HISTORY__"')
    path = tmp_path / "history.expt"
    n = 60_000_000 // 3  # "{}," is 3 bytes: about 60 MB of history
    with open(path, "w") as handle:
        handle.write(head + "[")
        block = "{}," * 1_000_000
        for _ in range(n // 1_000_000):
            handle.write(block)
        handle.write("{}]" + tail)
    assert path.stat().st_size > 60_000_000
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_LIMIT_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MEMORYERROR" not in done.stdout and "Traceback" not in done.stderr
    assert done.stdout.startswith(("REFUSED", "READ 1")), done.stdout
    if done.stdout.startswith("REFUSED"):
        assert "too large to parse" in done.stdout


# ------------------------------------------------------------------ old formats

DATABLOCK = [
    {
        "__id__": "DataBlock",
        "imageset": [
            {
                "__id__": "ImageSweep",
                "template": "centroid_####.cbf",
                "beam": 0,
                "detector": 0,
                "goniometer": 0,
                "scan": 0,
            }
        ],
        "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 0.9795}],
        "detector": [],
        "goniometer": [],
        "scan": [],
    }
]


@pytest.mark.parametrize("suffix", ["datablock.json", "datablock.json.gz"])
def test_a_datablock_gets_the_way_to_convert_it(tmp_path, suffix):
    path = tmp_path / suffix
    text = json.dumps(DATABLOCK, indent=2).encode()
    if suffix.endswith(".gz"):
        import gzip

        text = gzip.compress(text)
    path.write_bytes(text)
    with pytest.raises(FileFormatError) as caught:
        read_experiments(path)
    message = str(caught.value)
    assert "DataBlock list" in message and "dials.import" in message
    assert "imported.expt" in message and "perhaps an experiment list" not in message


def test_another_json_list_is_called_a_list(tmp_path):
    path = tmp_path / "list.expt"
    path.write_text("[1, 2, 3]")
    with pytest.raises(FileFormatError, match="is a JSON list, not a DIALS experiment"):
        read_experiments(path)


# ------------------------------------------------------------------ through the program


def _pairs(shared_data, folder):
    """Good pairs (each .refl beside its own .expt) and one whose .expt is bad."""
    folder.mkdir()
    sources = [
        ("a", I23, "I23_P12M_thau/indexed.refl"),
        ("b", CENTROID, "centroid_test_data/indexed.refl"),
        ("c", "eiger_therm/imported.expt", "eiger_therm/strong.refl"),
        ("d", "ssx_CuNiR/indexed.expt", "ssx_CuNiR/indexed.refl"),
    ]
    for stem, expt, refl in sources:
        shutil.copy(shared_data / expt, folder / f"{stem}.expt")
        shutil.copy(shared_data / refl, folder / f"{stem}.refl")
    bad = json.loads((folder / "d.expt").read_text())
    bad["beam"][0]["wavelength"] = INFINITY
    _write(folder, bad, "d.expt")
    expts = sorted(str(p) for p in folder.glob("*.expt"))
    refls = sorted(str(p) for p in folder.glob("*.refl"))
    return [*expts, *refls], str(folder / "d.expt")


def test_a_bad_expt_among_good_pairs_is_skipped_with_its_reason(
    shared_data, tmp_path, monkeypatch, capsys
):
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    files, bad = _pairs(shared_data, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    run([*files, "input.bad_files=skip", "output.json=out.json", "nproc=1"])
    document = json.loads((tmp_path / "out.json").read_text())
    skipped = {entry["file"]: entry["reason"] for entry in document["skipped_files"]}
    # The pair is measured as one: its table is skipped, the reason names the .expt.
    assert list(skipped) == [bad.replace(".expt", ".refl")]
    reason = skipped[bad.replace(".expt", ".refl")]
    assert reason.startswith(f"{bad}: ")
    assert "invalid beam model (number 0): wavelength is inf" in reason
    assert document["selection"]["n_datasets"] == 3, document["selection"]


def test_a_bad_expt_ends_the_run_in_one_sentence_when_bad_files_fail(
    shared_data, tmp_path, monkeypatch, capsys
):
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    files, bad = _pairs(shared_data, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        run([*files, "input.bad_files=fail", "output.json=out.json", "nproc=1"])
    assert caught.value.code == 1
    error = capsys.readouterr().err.strip()
    assert "Traceback" not in error
    assert error.splitlines()[-1].count(bad) == 1
    assert "wavelength is inf, not a finite number" in error
    assert not (tmp_path / "out.json").exists()


# ------------------------------------------------------------------ polychromatic beams


def _polychromatic_beam(direction):
    """A beam as dxtbx's PolychromaticBeam.to_dict writes it: no wavelength."""
    return {
        "__id__": "polychromatic",
        "direction": direction,
        "divergence": 0.0,
        "sigma_divergence": 0.0,
        "polarization_normal": [0.0, 1.0, 0.0],
        "polarization_fraction": 0.5,
        "flux": 0.0,
        "transmission": 1.0,
        "probe": "neutron",
        "sample_to_source_distance": 8300.0,
        "wavelength_range": [0.5, 5.0],
    }


@pytest.fixture
def tof_pair(shared_data, tmp_path):
    """I23's experiment with a polychromatic beam, and its table with a per-reflection
    wavelength column (Å) added and three early rows no longer indexed (left out by
    the selection, so that a counted spot's place differs from its row)."""
    from dials_spot_size_analysis.formats import read_reflections
    from dials_spot_size_analysis.formats.reflections import write_reflections

    document = json.loads((shared_data / I23).read_text())
    document["beam"][0] = _polychromatic_beam(document["beam"][0]["direction"])
    expt = _write(tmp_path, document, "tof.expt")
    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    flags = np.array(table.columns["flags"])  # a copy: the file's columns are read-only
    flags[[0, 7, 50]] &= ~np.uint64(INDEXED)
    table.columns["flags"] = flags
    wavelengths = np.random.default_rng(7).uniform(0.8, 4.0, table.nrows)
    table.columns["wavelength"] = wavelengths
    if table.column_order:
        table.column_order.append("wavelength")
    refl = tmp_path / "tof.refl"
    write_reflections(table, refl)
    return expt, refl, wavelengths


def _expected_d(experiment, table, wavelengths, from_pixels=False):
    """1/|s1 - s0| with |s0| = |s1| = 1/λ per row, from the panels and positions (in
    millimetres, or the pixel positions times the pixel size)."""
    panels = experiment.detector.panels
    index = table["panel"].astype(int)
    origin, fast, slow, pixel_size = (
        np.array([getattr(p, name) for p in panels])[index]
        for name in ("origin", "fast_axis", "slow_axis", "pixel_size")
    )
    if from_pixels:
        xy = table["xyzobs.px.value"][:, :2] * pixel_size
    else:
        xy = table["xyzobs.mm.value"]
    lab = origin + xy[:, :1] * fast + xy[:, 1:2] * slow
    unit_s1 = lab / np.linalg.norm(lab, axis=1)[:, None]
    unit_s0 = -experiment.beam.direction / np.linalg.norm(experiment.beam.direction)
    s1, s0 = unit_s1 / wavelengths[:, None], unit_s0 / wavelengths[:, None]
    return 1.0 / np.linalg.norm(s1 - s0, axis=1)


def test_a_polychromatic_beam_is_read_without_a_wavelength(tof_pair):
    experiment = _read_strictly(tof_pair[0])[0]
    beam = experiment.beam
    assert beam.polychromatic and beam.wavelength is None
    assert beam.probe == "neutron" and beam.wavelength_range == (0.5, 5.0)
    assert np.isnan(beam.s0).all()
    assert beam.unit_s0 @ beam.direction < 0
    assert len(experiment.detector) == 24 and experiment.crystal is not None


@pytest.mark.parametrize("beam_id", ["PolychromaticBeam", "TOFBeam"])
def test_other_names_of_polychromatic_beams(shared_data, tmp_path, beam_id):
    document = json.loads((shared_data / CENTROID).read_text())
    beam = _polychromatic_beam(document["beam"][0]["direction"])
    beam["__id__"] = beam_id
    del beam["wavelength_range"]
    document["beam"][0] = beam
    experiment = _read_strictly(_write(tmp_path, document))[0]
    assert experiment.beam.polychromatic and experiment.beam.wavelength_range is None


def test_polychromatic_d_spacings_from_the_wavelength_column(tof_pair, shared_data):
    from dials_spot_size_analysis.algorithms.geometry import ExperimentGeometry
    from dials_spot_size_analysis.formats import read_reflections

    expt, refl, wavelengths = tof_pair
    experiment = read_experiments(expt)[0]
    table = read_reflections(refl)
    np.testing.assert_array_equal(table["wavelength"], wavelengths)
    geometry = ExperimentGeometry([experiment])
    n = table.nrows
    rows = np.arange(n)
    experiments, panels = np.zeros(n, np.int64), table["panel"].astype(np.int64)
    expected = _expected_d(experiment, table, wavelengths)
    with np.errstate(all="raise"):
        d = geometry.d_spacings(
            table["xyzobs.mm.value"],
            experiments,
            panels,
            take=rows,
            wavelengths=wavelengths,
        )
        np.testing.assert_allclose(d, expected, rtol=1e-12)
        # Without a wavelength per reflection there is no d under this beam.
        assert np.isnan(
            geometry.d_spacings(table["xyzobs.mm.value"], experiments, panels)
        ).all()
    assert geometry.polychromatic.tolist() == [True]
    # Under I23's own monochromatic beam the column is not used: the beam's λ is.
    mono = ExperimentGeometry(read_experiments(shared_data / I23))
    args = (table["xyzobs.mm.value"], experiments, panels)
    np.testing.assert_array_equal(
        mono.d_spacings(*args, take=rows, wavelengths=wavelengths),
        mono.d_spacings(*args, take=rows),
    )
    assert mono.polychromatic.tolist() == [False]


def _measured_d(refl, expt) -> np.ndarray:
    """The d-spacings measure_file gives the counted rows of ``refl`` (its own
    experiment list ``expt``)."""
    from dials_spot_size_analysis.algorithms.spot_sizes import MeasureOptions
    from dials_spot_size_analysis.parallel.measure_file import (
        MeasureRequest,
        measure_file,
    )

    request = MeasureRequest(
        experiments=[],
        list_offsets=[],
        have_experiment_lists=True,
        options=MeasureOptions(),
        paired_experiments={0: str(expt)},
    )
    outcome = measure_file(0, str(refl), request, 1)
    assert outcome.error is None, outcome.error
    return outcome.spot_sizes.d_spacing


def _assert_each_d_expected(d: np.ndarray, expected: np.ndarray, refl) -> None:
    """Every counted spot (an indexed row with pixel data, in row order) has the
    expected d of its own row."""
    from dials_spot_size_analysis.formats import read_reflections

    table = read_reflections(refl)
    indexed = (table["flags"] & np.uint64(INDEXED)) != 0
    counted = np.flatnonzero(indexed & (table.shoeboxes.present != 0))
    assert len(d) == len(counted) > 150 and counted[0] != 0
    np.testing.assert_allclose(d, expected[counted], rtol=1e-9)


def test_polychromatic_d_spacings_through_the_measurement(tof_pair):
    """measure_file passes the table's wavelength column on: every counted spot gets
    the d of its own wavelength; without the column every d is NaN."""
    from dials_spot_size_analysis.formats import read_reflections
    from dials_spot_size_analysis.formats.reflections import write_reflections

    expt, refl, wavelengths = tof_pair
    experiment = read_experiments(expt)[0]
    table = read_reflections(refl)
    d = _measured_d(refl, expt)
    _assert_each_d_expected(d, _expected_d(experiment, table, wavelengths), refl)

    del table.columns["wavelength"]
    table.column_order.remove("wavelength")
    plain = refl.parent / "plain.refl"
    write_reflections(table, plain)
    without = _measured_d(plain, expt)
    assert len(without) == len(d) and np.isnan(without).all()


def test_polychromatic_d_spacings_of_a_table_in_pixels_only(tof_pair):
    """A table without millimetre positions (as dials.find_spots writes them) takes
    its d from the pixel positions, each with its own wavelength: no NaN."""
    from dials_spot_size_analysis.formats import read_reflections
    from dials_spot_size_analysis.formats.reflections import write_reflections

    expt, refl, wavelengths = tof_pair
    experiment = read_experiments(expt)[0]
    table = read_reflections(refl)
    expected = _expected_d(experiment, table, wavelengths, from_pixels=True)
    del table.columns["xyzobs.mm.value"]
    table.column_order.remove("xyzobs.mm.value")
    pixels_only = refl.parent / "pixels.refl"
    write_reflections(table, pixels_only)
    _assert_each_d_expected(_measured_d(pixels_only, expt), expected, pixels_only)


# Geometries a rotation's prediction cannot use: (name, data set, change of the
# experiment list, start of the reason the profile model gives). Each once ended in a
# traceback, a hang, a MemoryError or a segmentation fault.
REFINED = "centroid_test_data_refined/refined"  # a scan-varying crystal
UNPREDICTABLE = [
    (
        "axis along the beam",
        "centroid_test_data/indexed",
        _set(("beam", 0, "direction"), [1.0, 0.0, 0.0]),
        "the rotation axis lies along the beam",
    ),
    (
        "axis against the beam",
        "I23_P12M_thau/indexed",
        _set(("beam", 0, "direction"), [-1.0, 0.0, 0.0]),
        "the rotation axis lies along the beam",
    ),
    (
        "setting rotation turning the axis onto the beam",
        "centroid_test_data/indexed",
        lambda document: [
            _set(("beam", 0, "direction"), [0.0, 0.0, 1.0])(document),
            _set(
                ("goniometer", 0, "setting_rotation"),
                [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0],
            )(document),
        ],
        "the rotation axis lies along the beam",
    ),
    (
        "subnormal oscillation",
        "centroid_test_data/indexed",
        _set(("scan", 0, "oscillation"), [0.0, 5e-324]),
        "the scan (9 images of 4.94066e-324 degrees) with its 1 degree padding",
    ),
    (
        "tiny oscillation of a scan-varying crystal",
        REFINED,
        _set(("scan", 0, "properties", "oscillation"), [0.0, 1e-9] * 9),
        "the scan (9 images of 1e-09 degrees)",
    ),
    (
        "billions of images",
        "centroid_test_data/indexed",
        _set(("scan", 0, "image_range"), [1, 2147483646]),
        "the scan (2,147,483,646 images of 0.2 degrees)",
    ),
    (
        "polychromatic beam",
        "centroid_test_data/indexed",
        _set(("beam", 0, "__id__"), "PolychromaticBeam"),
        "a polychromatic beam has no single wavelength",
    ),
]


@pytest.mark.parametrize(
    "folder, change, reason",
    [case[1:] for case in UNPREDICTABLE],
    ids=[case[0] for case in UNPREDICTABLE],
)
def test_a_geometry_that_cannot_be_predicted_gets_no_profile_model_and_says_why(
    shared_data, tmp_path, folder, change, reason
):
    from conftest import PROGRAM, console

    document = json.loads((shared_data / f"{folder}.expt").read_text())
    change(document)
    _write(tmp_path, document, "in.expt")
    shutil.copyfile(shared_data / f"{folder}.refl", tmp_path / "in.refl")
    done = console("in.expt", "in.refl", "output.html=None", cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    result = json.loads((tmp_path / f"{PROGRAM}.json").read_text())
    assert result["profile_model"]["experiments"] == []
    [why] = result["profile_model"]["not_applicable"]
    assert why["reason"].startswith(reason), why["reason"]
    assert result["selection"]["n_counted"] > 0  # the spots are measured as ever


def test_json_nested_too_deeply_is_refused_for_what_it_is(tmp_path):
    """Python's parser gives up on deep nesting (RecursionError): said as such, not
    as a truncated file."""
    path = tmp_path / "deep.expt"
    path.write_text(
        '{"__id__": "ExperimentList", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    with pytest.raises(FileFormatError, match="is JSON nested too deeply to be read"):
        read_experiments(path)
