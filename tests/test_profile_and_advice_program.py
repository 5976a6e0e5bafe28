"""The profile model and the advice through the program and the API, on the real files
whose sigma_b and sigma_m DIALS itself computed (../shared/data/profile_reference.json)."""

from __future__ import annotations

import html
import json
import math
import os
import resource
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import libtbx
import libtbx.phil

from dials_spot_size_analysis.algorithms import profile_model
from dials_spot_size_analysis.api import analyse, json_document
from dials_spot_size_analysis.command_line.spot_size_analysis import run
from dials_spot_size_analysis.formats import (
    ShoeboxColumn,
    read_reflections,
    write_reflections,
)
from dials_spot_size_analysis.formats.shoebox_encoding import encode_shoeboxes
from dials_spot_size_analysis.parallel import pool
from dials_spot_size_analysis.report import text
from dials_spot_size_analysis.report.document import SCHEMA_FILE
from dials_spot_size_analysis.report.text import REFERENCE_ONLY, profile_model_lines


@pytest.fixture(scope="module")
def references(shared_data):
    return json.loads((shared_data / "profile_reference.json").read_text())


def test_every_reference_file_matches_dials(shared_data, references):
    for reference in references:
        result = analyse(
            shared_data / reference["reflections"],
            shared_data / reference["experiments"],
        )
        [model] = result.profile_model["experiments"]
        assert model["sigma_b_deg"] == pytest.approx(reference["sigma_b_deg"], rel=1e-3)
        assert model["sigma_m_deg"] == pytest.approx(reference["sigma_m_deg"], rel=1e-3)
        assert model["n_matched"] == reference["n_reference_reflections"]
        assert model["identifier"] == result.experiments[0].identifier
        width = abs(result.experiments[0].scan.oscillation_width)
        assert model["sigma_m_images"] == pytest.approx(model["sigma_m_deg"] / width)


def test_stills_give_sigma_b_only_and_say_why(shared_data):
    """DIALS's stills gaussian_rs model computes sigma_b and sets sigma_m to 0; here
    sigma_b is estimated about each spot's own centroid, and labelled so."""
    result = analyse(
        shared_data / "ssx_CuNiR/indexed.refl", shared_data / "ssx_CuNiR/indexed.expt"
    )
    assert result.profile_model["not_applicable"] == []
    entries = result.profile_model["experiments"]
    assert [e["n_selected"] for e in entries] == [34, 36, 194, 34, 62]
    for entry in entries:
        assert entry["applicable"] and entry["sigma_m_deg"] is None
        assert entry["label"] == profile_model.STILLS_LABEL
        assert "sets sigma_m to 0" in entry["reason"] and entry["n_images"] == 0
        assert 0.02 < entry["sigma_b_deg"] < 0.03 and entry["shoebox"] is None
    lines = profile_model_lines(result.profile_model)
    assert lines.count(f"Each experiment above: {profile_model.STILLS_LABEL}") == 1
    assert "shoebox memory (none: estimates only)" in "\n".join(lines)


def test_before_indexing_sigma_b_is_an_estimate(shared_data):
    result = analyse(
        shared_data / "eiger_therm/strong.refl",
        shared_data / "eiger_therm/imported.expt",
    )
    entries = result.profile_model["experiments"] + [
        {"label": r["reason"]} for r in result.profile_model["not_applicable"]
    ]
    assert any(
        "estimate" in e.get("label", "") or "still" in e.get("label", "")
        for e in entries
    )
    # no box and no memory before indexing: nothing to say of reference reflections
    assert REFERENCE_ONLY not in profile_model_lines(result.profile_model)


def test_program_log_json_and_suggestion_files(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(
        [
            str(shared_data / "centroid_test_data/indexed.expt"),
            str(shared_data / "centroid_test_data/indexed.refl"),
            "output.suggestions=suggested.phil",
        ]
    )
    log = (tmp_path / "dials.spot_size_analysis.log").read_text()
    assert "Profile model, as dials.integrate would compute it" in log
    assert "shoebox memory (reference only)" in log
    assert REFERENCE_ONLY in log.splitlines()  # what the memory figure leaves out
    assert "0.0539" in log and "0.197" in log
    assert "Your spots are about" in log
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    assert document["advice"]["suggestions"] == []  # the defaults serve these spots
    assert document["advice"]["summary"].startswith("your spots are about")
    checks = {c.get("parameter", "profile") for c in document["advice"]["checks"]}
    assert {
        "spotfinder.filter.max_spot_size",
        "spotfinder.filter.max_separation",
    } <= checks
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    assert "<td>n_sigma (box half-width in sigmas)</td><td>3</td>" in page
    for program in ("find_spots", "integrate"):
        text = (tmp_path / f"suggested.{program}.phil").read_text()
        assert text.startswith("# The spots call for no change")
        libtbx.phil.parse(text)  # a PHIL file DIALS can read


def test_a_raised_n_sigma_is_suggested_back_on_real_data(
    shared_data, tmp_path, monkeypatch
):
    """centroid_test_data with n_sigma = 10: boxes 64 px across for spots of 6 px;
    at DIALS's 3 they fit, so n_sigma is suggested, not new sigmas."""
    monkeypatch.chdir(tmp_path)
    data = shared_data / "centroid_test_data"
    run(
        [
            str(data / "indexed.expt"),
            str(data / "indexed.refl"),
            "profile.n_sigma=10",
            "output.suggestions=suggested.phil",
            "output.html=None",
        ]
    )
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    [item] = document["advice"]["suggestions"]
    assert (item["parameter"], item["current"], item["suggested"]) == (
        "profile.gaussian_rs.parameters.n_sigma", 10.0, 3.0,
    )  # fmt: skip
    assert "at 3 it is about 19 px x 5.9 images" in item["reason"]
    text = (tmp_path / "suggested.integrate.phil").read_text()
    assert "profile.gaussian_rs.parameters.n_sigma = 3" in text.splitlines()
    libtbx.phil.parse(text)


def test_boxes_off_the_detector_are_said_in_the_log_json_and_html(
    shared_data, tmp_path, monkeypatch
):
    """A sigma_b too large for the detector (8 deg, forced): dials.integrate would
    stop on every box; the log, the JSON and the HTML say how many, and size none."""
    monkeypatch.chdir(tmp_path)
    absurd = (math.radians(8.0), math.radians(0.5), 500)
    with mock.patch.object(profile_model, "compute_sigmas", return_value=absurd):
        result = run(
            [
                str(shared_data / "centroid_test_data/indexed.expt"),
                str(shared_data / "centroid_test_data/indexed.refl"),
            ]
        )
    [model] = result.profile_model["experiments"]
    n = model["n_matched"]
    assert model["shoebox"]["n_off_detector"] == n > 0
    assert model["shoebox"]["median_size_px"] is None
    words = f"{n:,} of the {n:,} integration boxes have a corner whose ray never meets"
    log = (tmp_path / "dials.spot_size_analysis.log").read_text()
    assert f": {words}" in log and "; no box is left to size\n" in log
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    [entry] = document["profile_model"]["experiments"]
    assert entry["shoebox"]["n_off_detector"] == n
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    assert "integration boxes with a corner off the detector" in page
    assert "Integration box against the spots found" not in page  # nothing to draw


def test_the_shoebox_memory_of_every_prediction(shared_data, tmp_path, monkeypatch):
    """profile.shoebox_memory=all_predictions counts the memory of the 4,204
    reflections dials.integrate predicts on centroid_test_data (9 images and 1 degree
    either side), not of the 438 matched reference reflections: more memory, said so
    in the log, the JSON and the HTML; sigma_b, sigma_m and the box sizes (of the
    spots measured) unchanged."""
    monkeypatch.chdir(tmp_path)
    expt, refl = (
        str(shared_data / "centroid_test_data" / name)
        for name in ("indexed.expt", "indexed.refl")
    )
    every = run([expt, refl, "profile.shoebox_memory=all_predictions"])
    log = (tmp_path / "dials.spot_size_analysis.log").read_text()
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    reference = analyse(refl, expt)
    [all_model] = every.profile_model["experiments"]
    [reference_model] = reference.profile_model["experiments"]
    boxes, fewer = all_model["shoebox"], reference_model["shoebox"]
    assert (boxes["counted"], boxes["n_boxes"]) == ("all predictions", 4204)
    assert (fewer["counted"], fewer["n_boxes"]) == ("reference reflections", 438)
    assert boxes["peak_bytes"] > 10 * fewer["peak_bytes"]
    assert boxes["note"] == profile_model.ALL_PREDICTIONS_NOTE
    assert boxes["median_size_px"] == fewer["median_size_px"]  # the same spots' boxes
    for key in ("sigma_b_deg", "sigma_m_deg", "n_matched"):
        assert all_model[key] == reference_model[key]
    assert "shoebox memory (all predictions)" in log
    gb = boxes["peak_bytes"] / 1e9  # GB, as DIALS and profile.memory_limit: 0.127
    assert f"{gb:.3g} GB (4,204 boxes)" in log and round(gb, 3) == 0.127
    assert f"{fewer['peak_bytes'] / 1e9:.3g} GB" not in log  # 438 reference ones
    assert "GiB" not in log and "GiB" not in page
    assert REFERENCE_ONLY not in log
    assert "shoebox memory at the peak (all predictions)" in page


@pytest.mark.parametrize(
    "limit_gb, counted, block",
    [(0.001, "reference", None), (0.1, "all", 1.0), (100.0, "all", None)],
)
def test_the_shoebox_memory_against_the_machine_that_will_integrate(
    shared_data, tmp_path, monkeypatch, limit_gb, counted, block
):
    """profile.memory_limit (GB) checks the shoebox memory against 80% of it, as
    dials.integrate checks its machine's before reading an image: beyond it, the
    reason with the figures and a smaller block (the scan's 9 images of 0.2 deg
    scaled by the memory allowed over the memory needed), or none where not even one
    image's share fits; within it, a line saying so; where only the reference reflections'
    boxes were counted (0.011 GB of them, 0.127 GB of every prediction), that too.
    Log, JSON and HTML."""
    monkeypatch.chdir(tmp_path)
    expt, refl = (
        str(shared_data / "centroid_test_data" / name)
        for name in ("indexed.expt", "indexed.refl")
    )
    arguments = [expt, refl, f"profile.memory_limit={limit_gb}"]
    if counted == "all":
        arguments.append("profile.shoebox_memory=all_predictions")
    result = run(arguments)
    [check] = [c for c in result.advice["checks"] if "sigma_m_deg" in c]
    required = result.profile_model["experiments"][0]["shoebox"]["peak_bytes"] / 1e9
    assert round(required, 3) == (0.011 if counted == "reference" else 0.127)
    assert check["memory_required_gb"] == required
    assert check["memory_limit_gb"] == limit_gb
    assert check["memory_allowed_gb"] == pytest.approx(0.8 * limit_gb)
    assert check["max_memory_usage"] == 0.8
    exceeds = limit_gb < 1.0
    assert check["flags"]["memory_exceeds_limit"] is exceeds
    suggested = [(s["parameter"], s["suggested"]) for s in result.advice["suggestions"]]
    assert suggested == ([("integration.block.size", block)] if exceeds else [])
    if exceeds and block is None:
        reason = result.advice["suggestions"][0]["reason"]
        assert reason.startswith(
            f"even a block of one image would need about {required / 9:.3g} GB"
        )
    log = (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    page = html.unescape((tmp_path / "dials.spot_size_analysis.html").read_text())
    allowed = f"{0.8 * limit_gb:.3g}"
    if exceeds:
        line = (
            f"  the shoeboxes need {required:.3g} GB, more than the {allowed} GB "
            f"allowed (80% of {limit_gb:.3g} GB: integration.block.max_memory_usage)"
        )
    else:
        line = (
            f"  the shoeboxes need {required:.3g} GB, within the {allowed} GB allowed "
            f"(80% of {limit_gb:.3g} GB)"
        )
    assert line in log and line.strip() in page
    # the table's memory is the advice's figure, in the same unit (GB, not GiB)
    boxes = " (4,204 boxes)" if counted == "all" else ""
    identifier = result.profile_model["experiments"][0]["identifier"]
    [row] = [entry for entry in log if entry.startswith(identifier)]
    assert row.endswith(f"  {required:.3g} GB{boxes}")
    assert f"<td>{required:.3g} GB</td>" in page and "GiB" not in page
    caveat = "(the memory of the reference reflections' boxes: dials.integrate"
    assert any(caveat in entry for entry in log) is (counted == "reference")
    assert (
        json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())["advice"][
            "checks"
        ][-1]["memory_limit_gb"]
        == limit_gb
    )


def test_the_machine_memory_as_dials_reads_it(tmp_path):
    """The physical memory (the total), lowered to a cgroup's limit or the RSS
    resource limit where one is set and smaller, as dials.util.system.memory_limit
    reads it; a cgroup's "max" or an absent file sets none."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    (tmp_path / "max").write_text("max\n")
    (tmp_path / "one_gib").write_text(f"{2**30}\n")
    (tmp_path / "above").write_text(f"{2 * total}\n")
    files = [str(tmp_path / name) for name in ("absent", "max", "above")]
    with mock.patch.object(resource, "getrlimit", return_value=unlimited):
        assert pool.machine_memory_bytes(()) == total
        assert pool.machine_memory_bytes(files) == total
        limited = [*files, str(tmp_path / "one_gib")]
        assert pool.machine_memory_bytes(limited) == 2**30
    with mock.patch.object(resource, "getrlimit", return_value=(-1, 2**29)):
        assert pool.machine_memory_bytes(limited) == 2**29
    assert pool.CGROUP_MEMORY_LIMITS[2] == "/sys/fs/cgroup/memory.max"


def test_the_machine_memory_auto_and_its_absence(
    shared_data, tmp_path, monkeypatch, capsys
):
    """profile.memory_limit=Auto is this machine's memory, as dials.integrate reads
    it; where the system does not say, one sentence asks for a number; without it
    (the default) or without a profile model, nothing is checked."""
    monkeypatch.chdir(tmp_path)
    expt, refl = (
        str(shared_data / "centroid_test_data" / name)
        for name in ("indexed.expt", "indexed.refl")
    )
    result = analyse(refl, expt, memory_limit=libtbx.Auto)
    [check] = [c for c in result.advice["checks"] if "sigma_m_deg" in c]
    assert check["memory_limit_gb"] == pool.machine_memory_bytes() / 1e9
    for unchecked in ({}, {"compute": False, "memory_limit": 64.0}):
        result = analyse(refl, expt, **unchecked)
        checks = [c for c in result.advice["checks"] if "sigma_m_deg" in c]
        assert all(c["memory_allowed_gb"] is None for c in checks)
    with mock.patch.object(os, "sysconf", side_effect=ValueError("no such name")):
        assert pool.machine_memory_bytes() is None
        with pytest.raises(SystemExit) as stopped:
            run([expt, refl, "profile.memory_limit=Auto"])
    assert stopped.value.code == 1
    assert capsys.readouterr().err == (
        "dials.spot_size_analysis: profile.memory_limit=Auto: this system does not "
        "say how much memory it has; give the machine's memory in GB, e.g. "
        "profile.memory_limit=64 (dials.spot_size_analysis -c -a2 lists each "
        "parameter's type and range)\n"
    )
    assert not list(tmp_path.glob("dials.spot_size_analysis.*"))


def test_the_find_spots_log_sets_the_limits(shared_data, tmp_path):
    """The limits used and the spots removed, read from the user's dials.find_spots
    log (DIALS's wording), replace the defaults in the checks."""
    (tmp_path / "dials.find_spots.log").write_text(
        "DIALS (2018) Acta Cryst. D74, 85-97. https://doi.org/10.1107/S2059798317010348\n"
        "DIALS 3.30.0\n"
        "The following parameters have been modified:\n\n"
        "spotfinder {\n  filter {\n    max_spot_size = 200\n  }\n}\n\n"
        "Removed 12 spots with size < 3 pixels\n"
        "Removed 40 spots with size > 200 pixels\n"
    )
    result = analyse(
        shared_data / "centroid_test_data/indexed.refl",
        shared_data / "centroid_test_data/indexed.expt",
        find_spots=str(tmp_path / "dials.find_spots.log"),
    )
    maximum = _limit_check(result.advice, "max_spot_size")
    assert maximum["value"] == 200 and maximum["removed"] == 40
    document = json_document(result)
    assert document["advice"]["checks"][1]["value"] == 200


@pytest.mark.parametrize(
    "folder, table, value, source",
    [
        # a pixel-array detector whose smallest spots are 3 px: DIALS's Auto (3)
        (
            "I23_P12M_thau", "indexed", 3,
            "DIALS Auto for a SENSOR_PAD detector, assumed; "
            "src/dials/array_family/flex_ext.py, from_observations",
        ),
        # spots of 2 px were kept: spot finding ran below Auto's 3
        (
            "ssx_CuNiR", "indexed", 2,
            "inferred: the smallest spot found, below the 3 of DIALS Auto for a "
            "SENSOR_PAD detector: spot finding ran with a smaller value",
        ),
        # an old file whose panel type is SENSOR_UNKNOWN (Auto: 6) with 3 px spots
        (
            "centroid_test_data", "indexed", 3,
            "inferred: the smallest spot found, below the 6 of DIALS Auto for a "
            "SENSOR_UNKNOWN detector: spot finding ran with a smaller value",
        ),
    ],
)  # fmt: skip
def test_min_spot_size_is_dials_auto_for_the_detector_unless_spots_are_smaller(
    shared_data, tmp_path, monkeypatch, folder, table, value, source
):
    """Through the API (the experiments given) and the program (the .expt paired with
    its table, read where the table is measured)."""
    paths = [shared_data / folder / f"{table}.{kind}" for kind in ("refl", "expt")]
    result = analyse(*paths, compute=False)  # no profile model: the limits only
    monkeypatch.chdir(tmp_path)
    run([str(paths[1]), str(paths[0]), "output.html=None", "output.log=None"])
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    auto = 3 if folder != "centroid_test_data" else 6
    for advice in (result.advice, document["advice"]):
        check = _limit_check(advice, "min_spot_size")
        assert (check["value"], check["source"]) == (value, source)
        assert f"spots of at least {auto} px in all" in advice["summary"]


def _limit_check(advice, name):
    """The one check of ``spotfinder.filter.<name>`` in ``advice``."""
    [check] = [
        c for c in advice["checks"] if c.get("parameter") == f"spotfinder.filter.{name}"
    ]
    return check


def test_min_spot_size_of_mixed_detectors_does_not_hang_on_the_order(shared_data):
    """centroid's SENSOR_UNKNOWN (Auto 6) beside I23's SENSOR_PAD (Auto 3): no one
    Auto stands for both, whichever comes first; two SENSOR_PAD tables keep theirs."""
    centroid, i23, ssx = (
        shared_data / name
        for name in ("centroid_test_data", "I23_P12M_thau", "ssx_CuNiR")
    )
    pairs = [(centroid, "indexed"), (i23, "indexed"), (ssx, "indexed")]
    sources = []
    for order in (pairs, pairs[::-1]):
        result = analyse(
            [folder / f"{name}.refl" for folder, name in order],
            [folder / f"{name}.expt" for folder, name in order],
            compute=False,
        )
        sources.append(_limit_check(result.advice, "min_spot_size")["source"])
    assert sources == ["inferred: the smallest spot found"] * 2
    result = analyse(
        [i23 / "indexed.refl", ssx / "indexed.refl"],
        [i23 / "indexed.expt", ssx / "indexed.expt"],
        compute=False,
    )
    assert (
        "below the 3 of DIALS Auto for a SENSOR_PAD detector"
        in (_limit_check(result.advice, "min_spot_size")["source"])
    )


def _advised(reflections, experiments, phil: Path, text: str):
    """The analysis of a table, without the profile model, given ``text`` written to
    ``phil`` as the limits spot finding used."""
    phil.write_text(text)
    return analyse(reflections, experiments, find_spots=str(phil), compute=False)


def test_a_stated_auto_and_a_contradicted_min_spot_size(shared_data, tmp_path):
    """min_spot_size = Auto in the user's file is DIALS's choice for the detector; a
    value the table's own spots contradict (smaller spots were kept) is said, and no
    change is suggested from it."""
    data = shared_data / "ssx_CuNiR"
    stated = tmp_path / "auto.phil"
    result = _advised(
        data / "indexed.refl", data / "indexed.expt", stated,
        "spotfinder { filter { min_spot_size = Auto } }\n",
    )  # fmt: skip
    check = _limit_check(result.advice, "min_spot_size")
    assert check["value"] == 2 and check["source"].endswith(
        "below the 3 of DIALS Auto for a SENSOR_PAD detector: spot finding ran with "
        f"a smaller value than the Auto {stated.name} states"
    )
    contradicted = tmp_path / "four.phil"
    result = _advised(
        data / "strong_5.refl", data / "imported_no_ref_5.expt", contradicted,
        "spotfinder.filter.min_spot_size = 4\n",
    )  # fmt: skip
    check = _limit_check(result.advice, "min_spot_size")
    assert (check["value"], check["n_below_limit"], check["n_spots"]) == (4, 414, 759)
    assert check["reasons"] == [
        f"414 of 759 spots are smaller than min_spot_size=4 ({contradicted.name}): "
        "spot finding for this table used a smaller value, so the spots cannot judge "
        "this one"
    ]
    assert check["suggestion"] is None and not check["change_called_for"]
    assert result.advice["summary"].count("the limits used assume spots of at least 4")


def test_definitions_of_the_phil_not_used_are_said(shared_data, tmp_path, monkeypatch):
    """A shortened name (DIALS too reads a file's definitions by their full path), a
    profile parameter of dials.integrate, and every other definition (a misspelt
    limit among them) are named in the log, JSON and HTML."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.phil").write_text(
        "min_spot_size = 4\n"
        "profile.gaussian_rs.parameters.n_sigma = 6\n"
        "profile.gaussian_rs.parameters.sigma_b = None\n"  # the default: not set
        "profile.gaussian_rs.parameters.sigma_m = 2.0\n"
        "spotfinder.threshold.dispersion.gain = 0.5\n"  # read by no check
        "spotfinder.filter.max_spotsize = 30\n"  # a misspelt limit
        "integration { block { size = 5 } }\n"
    )
    data = shared_data / "centroid_test_data"
    run(
        [
            str(data / "indexed.expt"),
            str(data / "indexed.refl"),
            "input.find_spots=mine.phil",
        ]
    )
    unused = [
        "mine.phil: min_spot_size = 4 (not spotfinder.filter.min_spot_size: give the "
        "full name)",
        "mine.phil: profile.gaussian_rs.parameters.n_sigma = 6 (not applied: set "
        "this program's profile.n_sigma=6 for it)",
        "mine.phil: profile.gaussian_rs.parameters.sigma_m = 2.0 (not applied: "
        "dials.integrate given this file stops, as it needs sigma_b and sigma_m fixed "
        "together (gaussian_rs/model.py, create_from_reflections))",
        "mine.phil: spotfinder.threshold.dispersion.gain = 0.5, "
        "spotfinder.filter.max_spotsize = 30, integration.block.size = 5 (not read: "
        "this program reads only the spot-finding limits and the profile parameters)",
    ]
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    assert document["advice"]["unused"] == unused
    log = (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    assert [line for line in log if line.startswith("Not used: ")] == [
        f"Not used: {item}" for item in unused
    ]
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    assert all(html.escape(f"Not used: {item}") in page for item in unused)


def test_an_unreadable_find_spots_file_is_one_sentence(shared_data, tmp_path):
    (tmp_path / "notes.txt").write_text("nothing DIALS wrote\n")
    with pytest.raises(Exception, match="notes.txt"):
        analyse(
            shared_data / "centroid_test_data/indexed.refl",
            find_spots=str(tmp_path / "notes.txt"),
        )


def test_the_profile_model_can_be_left_out(shared_data):
    result = analyse(
        shared_data / "centroid_test_data/indexed.refl",
        shared_data / "centroid_test_data/indexed.expt",
        compute=False,
    )
    assert result.profile_model == {"experiments": [], "not_applicable": []}
    assert result.statistics["n"] == 569  # the rest as usual


@pytest.mark.parametrize(
    "folder, table, n_images, one_image",
    [
        ("I23_P12M_thau", "indexed", 1, True),
        ("centroid_test_data", "indexed", 9, False),
    ],
)
def test_sigma_m_of_a_one_image_scan_is_not_passed_as_fitting(
    shared_data, tmp_path, monkeypatch, folder, table, n_images, one_image
):
    """DIALS computes sigma_m from a one-image scan too (its own source notes the
    estimator is unstable there): the advice says it cannot be measured so."""
    monkeypatch.chdir(tmp_path)
    run([str(shared_data / folder / f"{table}.{kind}") for kind in ("expt", "refl")])
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    [model] = document["profile_model"]["experiments"]
    assert model["n_images"] == n_images
    [check] = [c for c in document["advice"]["checks"] if "sigma_m_deg" in c]
    assert check["flags"]["sigma_m_from_one_image"] is one_image
    log = (tmp_path / "dials.spot_size_analysis.log").read_text()
    said = (
        "  a scan of one image cannot measure sigma_m: each spot lies on its one frame"
    )
    assert any(line.startswith(said) for line in log.splitlines()) is one_image
    assert ("the model fits the spots found: no change" in log) is not one_image


def test_xds_full_widths_from_the_spots(shared_data):
    """BEAM_DIVERGENCE= is arctan(spot diameter / distance), REFLECTING_RANGE= the
    images a spot spans times the oscillation width (XDS's own definitions)."""
    import math

    import numpy as np

    result = analyse(
        shared_data / "centroid_test_data/indexed.refl",
        shared_data / "centroid_test_data/indexed.expt",
    )
    [model] = result.profile_model["experiments"]
    spots = result.result.spot_sizes
    diameter = np.median(np.maximum(spots.extent_x, spots.extent_y))  # 4 px
    distance_px = model["sigma_b_px"] / math.radians(model["sigma_b_deg"])
    xds = model["xds"]
    assert xds["BEAM_DIVERGENCE"] == pytest.approx(
        math.degrees(math.atan(diameter / distance_px))
    )
    assert diameter == 4 and xds["REFLECTING_RANGE"] == pytest.approx(3 * 0.2)
    assert xds["BEAM_DIVERGENCE_E.S.D."] == model["sigma_b_deg"]


def test_xds_keywords_in_the_log_and_the_html(shared_data, tmp_path, monkeypatch):
    """All four XDS equivalents the JSON holds are in the log as one XDS.INP line to
    paste (the experiment after XDS's comment mark) and in the HTML as rows and the
    same line: on centroid_test_data the spots are 4 px across (0.206 deg) and span
    3 images of 0.2 deg."""
    monkeypatch.chdir(tmp_path)
    run(
        [
            str(shared_data / "centroid_test_data/indexed.expt"),
            str(shared_data / "centroid_test_data/indexed.refl"),
        ]
    )
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    [model] = document["profile_model"]["experiments"]
    xds = model["xds"]
    assert round(xds["BEAM_DIVERGENCE"], 3) == 0.206
    assert xds["REFLECTING_RANGE"] == pytest.approx(0.6)
    line = (
        "BEAM_DIVERGENCE= 0.206 BEAM_DIVERGENCE_E.S.D.= 0.0539 "
        "REFLECTING_RANGE= 0.6 REFLECTING_RANGE_E.S.D.= 0.197 ! " + model["identifier"]
    )
    log = (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    assert f"  {line}" in log
    assert log[log.index(f"  {line}") - 1].startswith("As XDS.INP keywords")
    page = html.unescape((tmp_path / "dials.spot_size_analysis.html").read_text())
    assert f"<pre>{line}</pre>" in page
    for name in ("BEAM_DIVERGENCE", "REFLECTING_RANGE"):
        assert f"<td>{name}= {xds[name]:.4g}</td>" in page
        assert f"<td>{name}_E.S.D.= {xds[name + '_E.S.D.']:.4g}</td>" in page


def test_the_blocks_of_a_long_scan_in_the_log_json_and_html(
    shared_data, tmp_path, monkeypatch
):
    """centroid_test_data's experiment with its scan made 90 images of 0.2 deg (the
    static crystal predicts the same reflections on images 1-9): four blocks of 5 deg.
    Each block carries sigma_b in px and sigma_m in images beside degrees; the log has
    a table of the blocks, the HTML their memory, both in GB."""
    document = json.loads((shared_data / "centroid_test_data/indexed.expt").read_text())
    [scan] = document["scan"]
    scan["image_range"] = [1, 90]
    for key in ("exposure_time", "epochs"):  # a value per image
        if isinstance(scan.get(key), list):
            scan[key] = (scan[key] * 10)[:90]
    (tmp_path / "long.expt").write_text(json.dumps(document))
    monkeypatch.chdir(tmp_path)
    run(["long.expt", str(shared_data / "centroid_test_data/indexed.refl")])
    output = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    [model] = output["profile_model"]["experiments"]
    blocks = model["blocks"]
    spans = [(b["first_image"], b["last_image"]) for b in blocks]
    assert spans == [(1, 25), (26, 50), (51, 75), (76, 90)]
    # The blocks hold the reflections the sigmas use: one of the 439 matched has
    # |zeta| below 0.05 (it counted in the first block before).
    assert (model["n_matched"], model["n_selected"]) == (439, 438)
    assert [b["n_reflections"] for b in blocks] == [model["n_selected"], 0, 0, 0]
    first = blocks[0]  # every reflection: the whole scan's sigmas again
    assert first["sigma_b_deg"] == pytest.approx(model["sigma_b_deg"], rel=1e-12)
    assert first["sigma_b_px"] == pytest.approx(model["sigma_b_px"], rel=1e-12)
    assert first["sigma_m_images"] == pytest.approx(first["sigma_m_deg"] / 0.2)
    assert (
        round(first["sigma_b_px"], 2) == 1.05
        and round(first["sigma_m_images"], 2) == 0.98
    )
    for block in blocks[1:]:
        assert block["sigma_b_px"] is None and block["sigma_m_images"] is None
    peaks = [b["shoebox_peak_bytes"] for b in blocks]
    assert round(peaks[0] / 1e9, 4) == 0.0143 and all(peaks)
    log = (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    start = log.index(text.BLOCKS_TITLE)
    assert log[start + 1].split() == [
        "images", "reflections", "sigma_b", "(deg)", "(px)", "sigma_m", "(deg)",
        "(images)", "shoebox", "memory", "(reference", "only)",
    ]  # fmt: skip
    for line, block in zip(log[start + 3 : start + 7], blocks):
        expected = [
            f"{block['first_image']}-{block['last_image']}",
            str(block["n_reflections"]),
            *(
                "-" if block[key] is None else f"{block[key]:.3g}"
                for key in (
                    "sigma_b_deg",
                    "sigma_b_px",
                    "sigma_m_deg",
                    "sigma_m_images",
                )
            ),
            f"{block['shoebox_peak_bytes'] / 1e9:.3g}",
            "GB",
        ]
        assert line.split() == expected
    assert log[start + 7] == ""  # four blocks, no more
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    for block in blocks:
        cells = (
            f"<td>{block['first_image']}-{block['last_image']}</td>"
            f"<td>{block['n_reflections']}</td>"
        )
        at = page.index(cells)
        memory = f"<td>{block['shoebox_peak_bytes'] / 1e9:.3g} GB</td></tr>"
        assert page[at : page.index("</tr>", at) + 5].endswith(memory)


def _stored_words(model: dict) -> str:
    """An ellipsoid model of the .expt in words, from its JSON read here, apart from
    the program: DIALS's names and numbers, to 3 significant figures."""
    numbers = ", ".join(f"{v:.3g}" for v in model["parameters"])
    spreads = ", ".join(f"{math.sqrt(model['sigma'][i][i]):.3g}" for i in range(3))
    return (
        f"ellipsoid, mosaicity parameterisation {model['parameterisation']}; "
        f"parameters {numbers}; square roots of the diagonal of its sigma {spreads}"
    )


def test_a_stored_ellipsoid_model_in_the_log_json_and_html(
    shared_data, tmp_path, monkeypatch
):
    """ssx_CuNiR's integrated.expt holds an ellipsoid model (angular4) per still: the
    log tabulates each experiment's, by identifier, the HTML says it under each
    experiment, the JSON has it as stored; no sigma shown as a dash five times."""
    jsonschema = pytest.importorskip("jsonschema")
    expt = shared_data / "ssx_CuNiR/integrated.expt"
    stored = json.loads(expt.read_text())
    monkeypatch.chdir(tmp_path)
    run([str(expt), str(shared_data / "ssx_CuNiR/indexed.refl")])
    log = (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text()))
    page = html.unescape((tmp_path / "dials.spot_size_analysis.html").read_text())
    assert not any("sigma_b - deg" in line for line in log)
    start = log.index(text.STORED_TITLE)
    assert log[start + 1].split() == ["experiment", "stored", "model"]
    entries = document["profile_model"]["experiments"]
    assert len(entries) == 5
    for line, entry, experiment in zip(log[start + 3 :], entries, stored["experiment"]):
        model = stored["profile"][experiment["profile"]]
        assert entry["identifier"] == experiment["identifier"]
        assert line.split(None, 1) == [entry["identifier"], _stored_words(model)]
        assert entry["stored_profile"]["kind"] == "ellipsoid"
        assert entry["stored_profile"]["parameters"] == model["parameters"]
        assert entry["stored_profile"]["sigma"] == model["sigma"]
        assert entry["stored_profile"]["parameterisation"] == "angular4"
        assert page.count(f"{_stored_words(model)}.</p>") == 1
    assert log[start + 3].endswith(
        "parameters 0.000509, 1.76e-06, 0.000115, 0.000498; square roots of the "
        "diagonal of its sigma 0.000509, 0.000115, 0.000498"
    )
    assert log[start + 8] == ""  # five experiments, five rows
    assert "stored in the .expt (ellipsoid)" not in page  # no column of dashes


def test_the_same_stored_model_is_said_once(shared_data, tmp_path, monkeypatch):
    """Every experiment holding the same model: one line, not one per experiment."""
    document = json.loads((shared_data / "ssx_CuNiR/integrated.expt").read_text())
    for experiment in document["experiment"]:
        experiment["profile"] = 0
    (tmp_path / "same.expt").write_text(json.dumps(document))
    monkeypatch.chdir(tmp_path)
    run(["same.expt", str(shared_data / "ssx_CuNiR/indexed.refl")])
    log = (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    line = (
        "The .expt holds a profile model already for each experiment above: "
        + _stored_words(document["profile"][0])
    )
    assert log.count(line) == 1 and text.STORED_TITLE not in log


def test_the_program_never_imports_scipy_linalg(shared_data, tmp_path):
    """The profile model's kernels (prediction, bounding boxes, pixel sums) do their
    3 x 3 algebra without ``@`` or ``np.linalg``, which would make numba import
    scipy.linalg (0.4 s) to reach BLAS: a short run must not pay for it. The
    program, a static and a scan-varying rotation dataset, every output written."""
    code = """
import sys
from dials_spot_size_analysis.command_line.entry import main
for expt, refl in zip(sys.argv[1::2], sys.argv[2::2]):
    sys.argv = ["dials.spot_size_analysis", expt, refl]
    try:
        main()
    except SystemExit as end:
        assert not end.code, end.code
print("scipy.linalg" in sys.modules, file=sys.stderr)
"""
    pairs = [
        shared_data / "centroid_test_data_refined/refined.expt",
        shared_data / "centroid_test_data_refined/refined.refl",
        shared_data / "I23_P12M_thau/indexed.expt",
        shared_data / "I23_P12M_thau/indexed.refl",
    ]
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, pairs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "False"
    profile = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    assert profile["profile_model"]["experiments"][0]["sigma_m_deg"] > 0
    assert (tmp_path / "dials.spot_size_analysis.html").stat().st_size > 0


def test_many_other_definitions_are_named_in_one_item():
    """Beyond MOST_OTHERS_LISTED, the rest are counted, not listed."""
    from dials_spot_size_analysis.formats import dials_logs

    text = "".join(f"spotfinder.mp.p{n} = {n}\n" for n in range(13))
    [item] = dials_logs.parse_phil_parameters(text, "many.phil")["unused"]
    assert item == (
        "many.phil: "
        + ", ".join(f"spotfinder.mp.p{n} = {n}" for n in range(10))
        + " and 3 more (not read: this program reads only the spot-finding limits "
        "and the profile parameters)"
    )


def test_upper_limits_that_spots_lie_beyond_are_not_judged(
    shared_data, tmp_path, monkeypatch
):
    """A cap below spots the table holds (spot finding ran with another value): said
    in the check, nothing suggested from it (a raise from 30 to 60 would still cut
    spots of 102 px), and the last sentence says which limits could not be judged."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "low.phil").write_text(
        "spotfinder.filter.max_spot_size = 30\nspotfinder.filter.max_separation = 0.5\n"
    )
    data = shared_data / "centroid_test_data"
    run(
        [
            str(data / "indexed.expt"),
            str(data / "indexed.refl"),
            "input.find_spots=low.phil",
            "output.suggestions=suggested.phil",
        ]
    )
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    advice = document["advice"]
    size, separation = (
        _limit_check(advice, name) for name in ("max_spot_size", "max_separation")
    )
    assert (size["n_beyond_limit"], size["over_images"]["max_size"]) == (71, 102.0)
    assert size["reasons"] == [
        "71 of 569 spots are larger than max_spot_size=30 (low.phil): spot finding "
        "for this table used a larger value (or none), so the spots cannot judge "
        "this one"
    ]
    assert separation["reasons"] == [
        "470 of 569 spots have their brightest pixel further from the centroid than "
        "max_separation=0.5 px (low.phil): spot finding for this table used a larger "
        "value (or none), so the spots cannot judge this one"
    ]
    for check in (size, separation):
        assert check["suggestion"] is None and check["judged"] is False
        assert check["change_called_for"] is False
    assert _limit_check(advice, "min_spot_size")["judged"] is True
    assert advice["suggestions"] == []
    last = (
        "No parameter change suggested, but these spots cannot judge max_spot_size "
        "or max_separation: spots lie beyond them, so spot finding used another "
        "value; give the values it used for this table "
        "(input.find_spots=dials.find_spots.log)."
    )
    log = (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    assert last in log
    assert any(
        line.startswith("spotfinder.filter.max_spot_size = 30 (low.phil): ")
        and line.endswith("; these spots cannot judge it")
        for line in log
    )
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    assert html.escape(last) in page
    assert "max_spot_size = 30: these spots cannot judge it (see the reasons)" in page
    text = (tmp_path / "suggested.find_spots.phil").read_text()
    assert text.startswith("# The spots call for no change")


def test_max_separation_none_is_the_filter_off(shared_data, tmp_path):
    """DIALS's spot finding leaves the peak-centroid filter out where max_separation
    is None (factory.py, configure_filter): nothing to check, and the summary says so;
    below DIALS's minimum of 0 it is refused."""
    data = shared_data / "centroid_test_data"
    result = _advised(
        data / "indexed.refl", data / "indexed.expt", tmp_path / "off.phil",
        "spotfinder.filter.max_separation = None\n",
    )  # fmt: skip
    parameters = [c.get("parameter") for c in result.advice["checks"]]
    assert parameters == [
        "spotfinder.filter.min_spot_size",
        "spotfinder.filter.max_spot_size",
    ]
    assert result.advice["summary"].endswith(
        "with no limit on how far the brightest pixel lies from the centroid "
        "(max_separation = None)"
    )
    assert result.advice["summary"].count("the limits used assume")
    negative = tmp_path / "negative.phil"
    negative.write_text("spotfinder.filter.max_separation = -1\n")
    with pytest.raises(
        Exception,
        match=r"negative.phil: spotfinder.filter.max_separation = -1 is not a value "
        r"DIALS takes \(a number from 0 to 1e\+06\)",
    ):
        analyse(data / "indexed.refl", find_spots=str(negative), compute=False)


@pytest.mark.parametrize(
    "given, what",
    [
        ("/dev/stdout", "a device or an open file"),
        ("/dev/null", "a device or an open file"),
        ("folder/", "no file name"),
        ("folder", "a folder"),
        (".phil", "no file name"),
    ],
)
def test_suggestions_named_after_a_folder_or_device_are_refused(
    shared_data, tmp_path, monkeypatch, given, what, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    data = shared_data / "centroid_test_data"
    with pytest.raises(SystemExit) as stopped:
        run(
            [
                str(data / "indexed.expt"),
                str(data / "indexed.refl"),
                f"output.suggestions={given}",
                f"output.json={tmp_path / 'out.json'}",
            ]
        )
    assert stopped.value.code == 1
    assert capsys.readouterr().err == (
        f"dials.spot_size_analysis: output.suggestions={given} names {what}, but the "
        "suggestions are two files named after it: give a file name, e.g. "
        "output.suggestions=suggested.phil for suggested.find_spots.phil and "
        "suggested.integrate.phil\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["folder"]
    assert os.listdir(tmp_path / "folder") == []


@pytest.mark.parametrize("given", ["x.find_spots.phil", "x.integrate.phil", "x"])
def test_suggestions_named_after_one_of_their_files(
    shared_data, tmp_path, monkeypatch, given
):
    monkeypatch.chdir(tmp_path)
    data = shared_data / "centroid_test_data"
    run(
        [
            str(data / "indexed.expt"),
            str(data / "indexed.refl"),
            f"output.suggestions={given}",
            "output.html=None",
            "output.json=None",
            "output.log=None",
        ]
    )
    assert sorted(os.listdir(tmp_path)) == ["x.find_spots.phil", "x.integrate.phil"]


SPLIT_SHIFT_PX = 9  # how far the copy of a split spot lies from the spot, along x
SPLIT_SHARE = 0.6  # the copy's counts over the spot's


def _with_split_spots(source: Path, target: Path, rows: set[int]) -> None:
    """``source`` with each of ``rows`` merged with a copy of itself SPLIT_SHIFT_PX
    along x at SPLIT_SHARE of its counts: a split spot whose brightest pixel lies some
    3 px from its centroid, one spot finding keeps without the peak-centroid filter."""
    table = read_reflections(source)
    shoeboxes = table.shoeboxes
    bbox = np.array(shoeboxes.bbox, dtype=np.int32)
    pixels = []
    for row in range(len(shoeboxes)):
        data, mask, background = (np.array(a) for a in shoeboxes.pixels(row))
        if row in rows:
            nz, ny, nx = data.shape
            data = np.zeros((nz, ny, nx + SPLIT_SHIFT_PX), np.float32)
            data[..., :nx] += shoeboxes.pixels(row)[0]
            data[..., SPLIT_SHIFT_PX:] += SPLIT_SHARE * shoeboxes.pixels(row)[0]
            mask = np.where(data > 0, 5, 0).astype(np.uint8)
            background = np.zeros(data.shape, np.float32)
            bbox[row, 1] += SPLIT_SHIFT_PX
        pixels.append((data, mask, background))
    table.columns["bbox"] = bbox
    blob = encode_shoeboxes(shoeboxes.panel, bbox, pixels, mask_kind=2)
    table.shoeboxes = ShoeboxColumn.from_blob(blob, len(shoeboxes))
    write_reflections(table, target)


def test_a_default_limit_with_spots_beyond_it_is_not_judged_either(tmp_path):
    """A table whose spot finding applied no peak-centroid filter (the example with
    40 of its indexed spots split), given without its log: DIALS's default
    max_separation is one these spots cannot judge, as the same value given in a
    file is; nothing is suggested from a pile-up below a limit spot finding did not
    apply."""
    example = Path(__file__).resolve().parents[1] / "examples" / "data"
    flags = read_reflections(example / "indexed.refl").columns["flags"]
    split = set(np.flatnonzero(flags & 4)[:40].tolist())
    _with_split_spots(example / "indexed.refl", tmp_path / "split.refl", split)
    (tmp_path / "given.phil").write_text("spotfinder.filter.max_separation = 2\n")
    for found, source in (
        (None, "DIALS default; src/dials/algorithms/spot_finding/factory.py"),
        (str(tmp_path / "given.phil"), "given.phil"),
    ):
        result = analyse(
            tmp_path / "split.refl", example / "indexed.expt", find_spots=found,
            compute=False,
        )  # fmt: skip
        check = _limit_check(result.advice, "max_separation")
        assert (check["n_beyond_limit"], check["n_spots"]) == (40, 357)
        assert check["judged"] is False and check["suggestion"] is None
        assert check["reasons"] == [
            "40 of 357 spots have their brightest pixel further from the centroid "
            f"than max_separation=2 px ({source}): spot finding for this table used "
            "a larger value (or none), so the spots cannot judge this one"
        ]
    plain = analyse(example / "indexed.refl", example / "indexed.expt", compute=False)
    assert _limit_check(plain.advice, "max_separation")["judged"] is True


def test_sigmas_fixed_in_the_file_set_the_boxes_memory_and_advice(
    shared_data, tmp_path, monkeypatch
):
    """dials.integrate boxes with sigma_b and sigma_m where a file fixes both
    (gaussian_rs/model.py, create_from_reflections): the boxes, their memory and the
    advice are then theirs, the computed sigmas stay beside them, and a suggestion
    keeps the fixed value it does not change."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fixed.phil").write_text(
        "profile.gaussian_rs.parameters.sigma_b = 0.5\n"
        "profile.gaussian_rs.parameters.sigma_m = 0.2\n"
    )
    data = shared_data / "centroid_test_data"
    arguments = [str(data / "indexed.expt"), str(data / "indexed.refl")]
    run([*arguments, "output.json=computed.json", "output.log=None"])
    run([*arguments, "input.find_spots=fixed.phil", "output.suggestions=s.phil"])
    computed, document = (
        json.loads((tmp_path / name).read_text())
        for name in ("computed.json", "dials.spot_size_analysis.json")
    )
    plain = computed["profile_model"]["experiments"][0]
    entry = document["profile_model"]["experiments"][0]
    assert plain["fixed_sigmas"] is None
    fixed = entry["fixed_sigmas"]
    assert (fixed["sigma_b_deg"], fixed["sigma_m_deg"], fixed["source"]) == (
        0.5, 0.2, "fixed.phil"
    )  # fmt: skip
    assert fixed["sigma_b_px"] == pytest.approx(9.698993267, rel=1e-8)
    assert fixed["sigma_m_images"] == pytest.approx(1.0, rel=1e-12)  # 0.2 deg images
    for key in ("sigma_b_deg", "sigma_m_deg", "sigma_b_px", "sigma_m_images"):
        assert entry[key] == plain[key]  # still computed from the spots
    assert plain["shoebox"]["median_size_px"] == [19.0, 20.0, 6.0]
    assert entry["shoebox"]["median_size_px"] == [172.0, 176.0, 6.0]
    assert entry["shoebox"]["peak_bytes"] == 913316928
    assert entry["shoebox"]["note"].endswith(
        "; boxed with sigma_b and sigma_m as fixed.phil fixes them (dials.integrate "
        "given it uses them), not the computed ones"
    )
    advice = document["advice"]
    assert advice["unused"] == []
    [check] = [c for c in advice["checks"] if "sigma_m_deg" in c]
    assert (check["sigma_b_deg"], check["sigma_m_deg"], check["fixed_in"]) == (
        0.5, 0.2, "fixed.phil"
    )  # fmt: skip
    assert [
        (s["parameter"].rpartition(".")[2], s["current"], s["suggested"], s["reason"])
        for s in advice["suggestions"]
    ] == [
        ("sigma_b", 0.5, 0.103, "a box twice the spots: 95% are <= 6 px across"),
        (
            "sigma_m", 0.2, 0.2,
            "sigma_m kept at the value fixed.phil fixes: DIALS needs sigma_b and "
            "sigma_m set together",
        ),
    ]  # fmt: skip
    said = (
        "The boxes and their memory are those of sigma_b = 0.5 deg (9.7 px) and "
        "sigma_m = 0.2 deg (1 images) as fixed.phil fixes them: dials.integrate given "
        "it boxes with them, not with the sigmas computed here."
    )
    log = (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    assert said in log
    assert (
        "  dials.integrate given fixed.phil boxes with these, not the sigmas computed "
        "from the spots (sigma_b = 0.05394 deg, sigma_m = 0.1967 deg)" in log
    )
    assert html.escape(said) in (tmp_path / "dials.spot_size_analysis.html").read_text()
    integrate = (tmp_path / "s.integrate.phil").read_text()
    assert "profile.gaussian_rs.parameters.sigma_b = 0.103" in integrate
    every = analyse(
        data / "indexed.refl", data / "indexed.expt", find_spots="fixed.phil",
        shoebox_memory="all_predictions",
    )  # fmt: skip
    shoebox = every.profile_model["experiments"][0]["shoebox"]
    assert (shoebox["n_boxes"], shoebox["peak_bytes"]) == (4204, 10524511680)


@pytest.mark.parametrize(
    "text, fixed, why",
    [
        ("sigma_b = 0.05\nsigma_m = 0.3\n", (0.05, 0.3), None),
        (
            "sigma_b = 0.05\n", None,
            "not applied: dials.integrate given this file stops, as it needs sigma_b "
            "and sigma_m fixed together (gaussian_rs/model.py, create_from_reflections)",
        ),
        (
            "sigma_b = 0.05\nsigma_m = 0\n", None,
            "not applied: a sigma of 0 gives boxes of no size",
        ),
        ("sigma_b = None\nsigma_m = Auto\n", None, None),  # dials.integrate's own
    ],
)  # fmt: skip
def test_which_fixed_sigmas_are_used(text, fixed, why):
    from dials_spot_size_analysis.formats import dials_logs

    phil = "".join(
        f"profile.gaussian_rs.parameters.{line}\n" for line in text.splitlines()
    )
    found = dials_logs.parse_phil_parameters(phil, "x.phil")
    got = dials_logs.fixed_sigmas(found)
    assert (None if got is None else (got["sigma_b_deg"], got["sigma_m_deg"])) == fixed
    whys = [item.split(" (", 1)[1] for item in found["unused"]]
    assert whys == ([] if why is None else [why + ")"] * len(whys))
    assert bool(found["unused"]) == (why is not None)


def test_the_log_says_how_many_experiments_its_table_leaves_out(shared_data):
    from dials_spot_size_analysis.report.text import MOST_DATASETS_LISTED

    data = shared_data / "centroid_test_data"
    result = analyse(data / "indexed.refl", data / "indexed.expt")
    [entry] = result.profile_model["experiments"]
    many = {**result.profile_model, "experiments": [entry] * (MOST_DATASETS_LISTED + 3)}
    lines = profile_model_lines(many)
    assert "And 3 more experiments: every one is in the JSON's profile_model." in lines
    assert not any(
        line.startswith("And ") for line in profile_model_lines(result.profile_model)
    )


def test_a_memory_limit_with_no_boxes_to_weigh_is_said_not_checked(
    shared_data, tmp_path, monkeypatch
):
    """Stills have no integration boxes here: a memory limit given is said to check
    nothing (log, JSON, HTML share the sentence); with boxes, nothing is said."""
    stills, rotation = shared_data / "ssx_CuNiR", shared_data / "centroid_test_data"
    result = analyse(stills / "indexed.refl", stills / "indexed.expt", memory_limit=16)
    assert result.advice["notes"] == [
        "profile.memory_limit = 16 GB: nothing is checked against it, as no "
        "experiment here has integration boxes (they need a rotation scan with a "
        "crystal and indexed reflections; stills and spots before indexing have none)"
    ]
    assert json_document(result)["advice"]["notes"] == result.advice["notes"]
    assert (
        analyse(stills / "indexed.refl", stills / "indexed.expt").advice["notes"] == []
    )
    checked = analyse(
        rotation / "indexed.refl", rotation / "indexed.expt", memory_limit=16
    )
    assert checked.advice["notes"] == []
    monkeypatch.chdir(tmp_path)
    run([str(stills / "indexed.expt"), str(stills / "indexed.refl"), "memory_limit=16"])
    said = f"Not checked: {result.advice['notes'][0]}"
    assert said in (tmp_path / "dials.spot_size_analysis.log").read_text().splitlines()
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    assert html.escape(said) in page
    assert "n_sigma (box half-width" not in page  # stills: no box, no half-width


def test_an_estimate_before_indexing_is_shown_not_advised_on(shared_data, tmp_path):
    """The sigma_m estimated before indexing (about each spot's own angle) is shown,
    but no box of dials.integrate's is drawn from it, so no advice on the model."""
    data = shared_data / "centroid_test_data"
    listing = json.loads((data / "indexed.expt").read_text())
    for experiment in listing["experiment"]:
        experiment.pop("crystal", None)
    listing["crystal"] = []
    (tmp_path / "imported.expt").write_text(json.dumps(listing))
    result = analyse(data / "indexed.refl", tmp_path / "imported.expt")
    [entry] = result.profile_model["experiments"]
    assert entry["label"] == profile_model.SIGMA_M_ESTIMATE_LABEL
    assert entry["sigma_m_deg"] == pytest.approx(0.17257301403, rel=1e-8)
    assert [c for c in result.advice["checks"] if "sigma_m_deg" in c] == []


def test_a_find_spots_log_that_contradicts_itself_says_which_value_it_took(
    shared_data, tmp_path
):
    """Lines later in the log win (the "Removed" line says what spot finding did);
    the values they overrule are named as not used, with the line that overrules
    them; an Auto that a "Setting" line resolves is no contradiction."""
    from dials_spot_size_analysis.formats import dials_logs

    (tmp_path / "pasted.log").write_text(
        "DIALS 3.30.0\nThe following parameters have been modified:\n\n"
        "spotfinder {\n  filter {\n    min_spot_size = 5\n  }\n}\n\n"
        "Setting spotfinder.filter.min_spot_size=3\n"
        "Removed 4 spots with size < 2 pixels\n"
        "Removed 6 spots with size < 2 pixels\n"
    )
    data = shared_data / "centroid_test_data"
    result = analyse(
        data / "indexed.refl", data / "indexed.expt",
        find_spots=str(tmp_path / "pasted.log"), compute=False,
    )  # fmt: skip
    assert _limit_check(result.advice, "min_spot_size")["value"] == 2
    assert result.advice["unused"] == [
        "pasted.log line 2: the modified parameters: spotfinder.filter.min_spot_size "
        "= 5 (not used: pasted.log line 10: 'Setting spotfinder.filter.min_spot_size=3' "
        "says 3 was)",
        "pasted.log line 10: 'Setting spotfinder.filter.min_spot_size=3': "
        "spotfinder.filter.min_spot_size = 3 (not used: pasted.log line 11: 'Removed 4 "
        "spots with size < 2 pixels' says 2 was)",
    ]
    auto = dials_logs.parse_find_spots_log(
        "The following parameters have been modified:\n\n"
        "spotfinder.filter.min_spot_size = Auto\n\n"
        "Setting spotfinder.filter.min_spot_size=3\n"
        "Removed 4 spots with size < 3 pixels\n",
        "auto.log",
    )
    assert auto["unused"] == []
    assert auto["parameters"]["spotfinder.filter.min_spot_size"]["value"] == 3


def test_an_even_subset_of_the_reference_reflections_is_said(
    shared_data, tmp_path, monkeypatch
):
    """profile.max_reflections: beyond it an even subset of the reference
    reflections is re-predicted and measured, and the JSON, the log and the HTML say
    so; None takes every one, as dials.integrate does. centroid_test_data's table
    three times over (DIALS's bytes, by the shared replicate_refl.py) holds 1,323."""
    table = tmp_path / "x3.refl"
    subprocess.run(
        [
            sys.executable,
            str(shared_data.parent / "tools" / "replicate_refl.py"),
            str(shared_data / "centroid_test_data/indexed.refl"),
            "3",
            str(table),
        ],
        check=True,
    )
    expt = str(shared_data / "centroid_test_data/indexed.expt")
    monkeypatch.chdir(tmp_path)
    words = "an even subset of 662 of its 1,323 reference reflections"
    for value, taken in (("1000", 662), ("None", 1323)):
        run(
            [
                expt,
                str(table),
                f"profile.max_reflections={value}",
                f"output.json={value}.json",
            ]
        )
        document = json.loads(Path(f"{value}.json").read_text())
        [model] = document["profile_model"]["experiments"]
        assert (model["n_reference"], model["n_repredicted"]) == (1323, taken)
        assert model["n_matched"] <= taken
        log = Path("dials.spot_size_analysis.log").read_text()
        page = Path("dials.spot_size_analysis.html").read_text()
        assert (words in log, words in page) == (taken < 1323,) * 2
