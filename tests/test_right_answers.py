"""Right answers on real layouts, and the DIALS command-line habits users type."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROGRAM, SCRIPT, console

from dials_spot_size_analysis import __version__
from dials_spot_size_analysis.api import (
    ParameterError,
    SelectionError,
    analyse,
    json_document,
)
from dials_spot_size_analysis.command_line.spot_size_analysis import run
from dials_spot_size_analysis.formats import read_reflections, write_reflections

NO_FILES = ["output.log=None", "output.json=None", "output.html=None"]


def test_image_numbers_of_stills_whose_scans_do_not_start_at_one(shared_data):
    """z counts frames from image_range[0] - 1: the five CuNiR stills are images
    17000-17004 (z = 16999.5 ... 17003.5), not 33999 and on."""
    result = analyse(
        shared_data / "ssx_CuNiR/indexed.refl", shared_data / "ssx_CuNiR/indexed.expt"
    )
    table = read_reflections(shared_data / "ssx_CuNiR/indexed.refl")
    indexed = (table["flags"] & 4) != 0
    expected = np.floor(table["xyzobs.px.value"][indexed, 2]).astype(int) + 1
    images, counts = np.unique(expected, return_counts=True)
    assert images.tolist() == [17000, 17001, 17002, 17003, 17004]
    by_image = json_document(result)["by_image"]
    assert [(e["image"], e["n"]) for e in by_image] == list(
        zip(images.tolist(), counts.tolist())
    )


def test_image_numbers_of_a_rotation_scan_starting_at_one(shared_data):
    result = analyse(
        shared_data / "centroid_test_data/indexed.refl",
        shared_data / "centroid_test_data/indexed.expt",
    )
    assert [e["image"] for e in result.result.by_image] == list(range(1, 10))


def test_non_finite_z_has_no_image(shared_data, tmp_path):
    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    xyz = np.array(table["xyzobs.px.value"])
    xyz[:3, 2] = [np.nan, np.inf, 1e300]
    table.columns["xyzobs.px.value"] = xyz
    write_reflections(table, tmp_path / "odd.refl")
    with np.errstate(all="raise"):  # no numpy warning on the way
        result = analyse(tmp_path / "odd.refl", require=None)
    assert sum(e["n"] for e in result.result.by_image) == 208 - 3


@pytest.mark.parametrize(
    "mask_code",
    [
        "Valid+Foreground",
        "Valid Foreground",
        "Valid,Foreground",
        "*Valid *Foreground",
        "valid+foreground",
    ],
)
def test_mask_code_forms_all_mean_every_one_of_these(shared_data, mask_code):
    result = run(
        [
            str(shared_data / "I23_P12M_thau/indexed.refl"),
            f"mask_code={mask_code}",
            *NO_FILES,
        ]
    )
    assert result.result.mask_code == ["Valid", "Foreground"]
    assert result.result.mask_code_value == 5


def test_mask_code_none_counts_every_pixel_and_unknown_names_are_refused(shared_data):
    every = analyse(shared_data / "I23_P12M_thau/indexed.refl", mask_code=None)
    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    assert every.result.mask_code_value == 0
    indexed = (table["flags"] & 4) != 0
    assert every.sizes.sum() == table.shoeboxes.n_voxels[indexed].sum()
    with pytest.raises(ParameterError, match="unknown mask code 'Fourground'"):
        analyse(shared_data / "I23_P12M_thau/indexed.refl", mask_code="Fourground")


@pytest.mark.parametrize(
    "text",
    [
        "mask_code = Valid+Foreground\n",
        "mask_code = Valid Foreground\n",
        'mask_code = "*Valid *Foreground"\n',
    ],
)
def test_mask_code_in_a_phil_file(shared_data, tmp_path, text):
    (tmp_path / "settings.phil").write_text(text)
    result = run(
        [
            str(shared_data / "I23_P12M_thau/indexed.refl"),
            str(tmp_path / "settings.phil"),
            *NO_FILES,
        ]
    )
    assert result.result.mask_code == ["Valid", "Foreground"]


def test_unknown_parameters_in_a_phil_file_are_refused(shared_data, tmp_path):
    (tmp_path / "settings.phil").write_text("histogram {\n  binz = 30\n}\n")
    done = console(
        shared_data / "I23_P12M_thau/indexed.refl", "settings.phil", cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"{PROGRAM}: unknown parameter histogram.binz (settings.phil, line 2): "
        f"see {PROGRAM} -c for the parameters and their names\n"
    )
    assert os.listdir(tmp_path) == ["settings.phil"]


def test_n_signal_zero_means_no_pixel_data(shared_data, tmp_path):
    """Where n_signal stands in for the shoeboxes, a 0 is "unknown", not a spot of no
    pixels: such rows are excluded and reported."""
    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    n_signal = np.array(table["n_signal"])
    n_signal[:10] = 0
    table.columns["n_signal"] = n_signal
    table.shoeboxes = None
    table.column_order = [c for c in table.column_order if c != "shoebox"]
    write_reflections(table, tmp_path / "no_shoeboxes.refl")
    result = analyse(tmp_path / "no_shoeboxes.refl", require=None)
    assert result.selection["n_without_pixel_data"] == 10
    assert result.selection["n_counted"] == 198
    assert result.statistics["min"] == n_signal[10:].min() > 0
    assert (
        "a row where it is 0 had no pixel data"
        in result.result.datasets[0].size_source_note
    )
    shape = result.result.spot_shape  # no shoeboxes: no shapes, not shapes of 0
    assert shape["rows_with_coded_pixels"] == 0
    assert shape["quantities"]["extent_x"]["statistics"]["n"] == 0


def test_the_message_for_a_table_without_shoeboxes_names_the_debug_files(shared_data):
    with pytest.raises(
        Exception, match="writes them to separate shoeboxes_.*refl files"
    ):
        analyse(shared_data / "ssx_CuNiR/integrated.refl")


@pytest.mark.parametrize(
    "options, shown",
    [
        (["-c", "-a1"], "Number of bins"),
        (["-ca1"], "Number of bins"),
        (["--show-config", "--attributes-level=1"], "Number of bins"),
        (["-c", "-e1"], "bins = 42"),
    ],
)
def test_configuration_options_as_in_dials(tmp_path, options, shown):
    done = console(*options, "bins=42", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert shown in done.stdout and "bins = 42" in done.stdout
    assert "Number of bins" not in console("-c", cwd=tmp_path).stdout


def test_help_lists_the_options_and_version_prints_it(tmp_path):
    shown = console("-h", cwd=tmp_path).stdout
    for option in (
        "-c, --show-config",
        "-a N",
        "-e N",
        "-v",
        "--phil FILE",
        "--version",
    ):
        assert option in shown
    done = console("--version", cwd=tmp_path)
    assert done.stdout == f"{PROGRAM} {__version__}\n" and done.returncode == 0


def _console_with_imports_listed(args: list[str], cwd) -> subprocess.CompletedProcess:
    """The console script's main() with ``args`` in a fresh interpreter, then its
    exit status and which of numba, numpy and libtbx it had imported, printed."""
    check = (
        "import sys\n"
        "from dials_spot_size_analysis.command_line.entry import main\n"
        f"sys.argv = ['dials.spot_size_analysis', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code)\n"
        "print(sorted(m for m in ('numba', 'numpy', 'libtbx') if m in sys.modules))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, cwd=cwd
    )


def test_version_is_answered_before_the_heavy_imports(tmp_path):
    """``--version`` (whatever else the options ask) is answered by the console
    script before numba, numpy and cctbx are imported (most of a second); an unknown
    option beside it is still the program's one sentence."""
    done = _console_with_imports_listed(["-c", "--version"], tmp_path)
    assert done.stdout == f"{PROGRAM} {__version__}\nexit 0\n[]\n", done.stderr
    unknown = console("--version", "--bogus", cwd=tmp_path)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr == f"{PROGRAM}: unknown option --bogus: see {PROGRAM} -h\n"


@pytest.mark.parametrize("args", [["-h"], [], ["-h", "-a", "2", "x.refl"]])
def test_help_is_answered_before_the_heavy_imports(tmp_path, args):
    """``-h`` (or no arguments) is answered by the console script with libtbx.phil
    alone, before numba and numpy are imported: the same text, to the byte, as the
    program's own run(["-h"])."""
    done = _console_with_imports_listed(args, tmp_path)
    printed, _, ending = done.stdout.rpartition("exit 0\n")
    assert ending == "['libtbx']\n", done.stderr
    assert printed.startswith(f"Usage: {PROGRAM} [options]")
    assert "computes sigma_b and sigma_m as\ndials.integrate would" in printed
    program = io.StringIO()
    with contextlib.redirect_stdout(program):
        assert run(args) is None
    assert printed == program.getvalue()


def test_verbose_adds_debug_lines(shared_data, tmp_path):
    quiet = console(shared_data / "I23_P12M_thau/indexed.refl", cwd=tmp_path).stdout
    verbose = console(
        shared_data / "I23_P12M_thau/indexed.refl", "-v", cwd=tmp_path
    ).stdout
    assert "Timing" not in quiet and "Timing: reading experiment lists" in verbose
    assert "indexed.refl has no experiment list" in verbose


@pytest.mark.parametrize(
    "value", ["bins=None", "data_min=None", "nproc=None", "shells=None"]
)
def test_none_for_a_number_is_one_sentence(shared_data, tmp_path, value):
    done = console(shared_data / "I23_P12M_thau/indexed.refl", value, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and value.split("=")[0] in done.stderr
    with pytest.raises(ParameterError):
        analyse(shared_data / "I23_P12M_thau/indexed.refl", **dict([value.split("=")]))


def test_stdout_that_goes_away_stops_terminal_output_quietly(shared_data, tmp_path):
    """| head -1: no BrokenPipeError, the outputs still written; > /dev/full the same."""
    pipeline = subprocess.run(
        f"'{SCRIPT}' '{shared_data / 'I23_P12M_thau/indexed.refl'}' | head -1",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pipeline.stdout == f"{PROGRAM} v{__version__}\n" and pipeline.stderr == ""
    assert sorted(os.listdir(tmp_path)) == [
        f"{PROGRAM}.html",
        f"{PROGRAM}.json",
        f"{PROGRAM}.log",
    ]
    document = json.loads((tmp_path / f"{PROGRAM}.json").read_text())
    assert document["selection"]["n_counted"] == 205
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [SCRIPT, shared_data / "I23_P12M_thau/indexed.refl"],
                cwd=tmp_path,
                stdout=full,
                stderr=subprocess.PIPE,
                timeout=120,
            )
        assert done.returncode == 0 and done.stderr == b""


def test_a_legacy_table_with_another_datasets_experiments_is_refused(shared_data):
    """integrated.refl names no experiment: paired by position with the I23 detector its
    resolutions would come out of the wrong geometry; its spots lie off those panels."""
    with pytest.raises(
        SelectionError, match="2022 of 2188 spots lie outside their panels"
    ):
        analyse(
            shared_data / "centroid_test_data/integrated.refl",
            shared_data / "I23_P12M_thau/imported.expt",
        )
    right = analyse(
        shared_data / "centroid_test_data/integrated.refl",
        shared_data / "centroid_test_data/indexed.expt",
    )
    d = [(e["d_max"], e["d_min"]) for e in right.result.by_resolution]
    assert round(d[0][0], 2) == 16.34 and round(d[-1][1], 2) == 1.45


def test_automatic_ranges_are_aligned_to_whole_pixels(shared_data):
    """Sizes are whole pixels: with data_max=Auto each bin is a whole number of pixels
    wide, its edges half-way between whole pixels, so no bin is empty for want of an
    integer inside it (the comb of 0.3-pixel bins)."""
    result = analyse(
        shared_data / "I23_P12M_thau/indexed.refl", data_min="Auto", data_max="Auto"
    )
    h = result.histogram
    assert (h.data_min, h.bin_width) == (2.5, 1.0)  # sizes 3..30 in 100 bins
    assert h.counts.sum() == 205 and h.n_out_of_range == 0
    occupied = h.bin_centers[h.counts > 0]
    assert np.allclose(occupied, np.round(occupied))
    wide = analyse(shared_data / "I23_P12M_thau/indexed.refl", bins=10, data_max="Auto")
    assert (wide.histogram.data_min, wide.histogram.bin_width) == (0.0, 4.0)
    assert wide.histogram.data_max == 40.0


def test_a_polychromatic_beam_without_wavelengths_says_why_there_is_no_resolution(
    shared_data, tmp_path
):
    from dials_spot_size_analysis.report.text import report_lines

    document = json.loads((shared_data / "I23_P12M_thau/indexed.expt").read_text())
    beam = document["beam"][0]
    document["beam"][0] = {
        "__id__": "polychromatic",
        "direction": beam["direction"],
        "probe": "neutron",
        "sample_to_source_distance": 8300.0,
        "wavelength_range": [0.5, 5.0],
    }
    (tmp_path / "tof.expt").write_text(json.dumps(document))
    result = analyse(shared_data / "I23_P12M_thau/indexed.refl", tmp_path / "tof.expt")
    assert np.isnan(result.result.spot_sizes.d_spacing).all()
    text = "\n".join(report_lines(result.result))
    assert (
        "No resolution breakdown: the experiments have a polychromatic (Laue or "
        "time-of-flight) beam" in text
    )
    plain = analyse(shared_data / "I23_P12M_thau/indexed.refl")
    assert "it needs the experiment list (.expt)" in "\n".join(
        report_lines(plain.result)
    )


def test_unrelated_datasets_are_not_pooled_by_panel_or_image(shared_data):
    """Panel 0 of a PILATUS 6M and panel 0 of a 24-panel PILATUS 12M are not one thing:
    the breakdowns keep each dataset apart; tables split from one dataset pool."""
    data = shared_data
    both = analyse(
        [data / "I23_P12M_thau/indexed.refl", data / "centroid_test_data/indexed.refl"],
        [data / "I23_P12M_thau/indexed.expt", data / "centroid_test_data/indexed.expt"],
    )
    panel_zero = [e for e in both.result.by_panel if e["panel"] == 0]
    assert [(e["dataset"].split("/")[-2], e["n"]) for e in panel_zero] == [
        ("I23_P12M_thau", 3),
        ("centroid_test_data", 569),
    ]
    first_images = [e["n"] for e in both.result.by_image if e["image"] == 1]
    assert first_images == [205, 80]
    table = read_reflections(data / "I23_P12M_thau/indexed.refl")
    halves = [table.slice_rows(0, 100), table.slice_rows(100, 208)]
    pooled = analyse(halves, data / "I23_P12M_thau/indexed.expt")
    assert all("dataset" not in e for e in pooled.result.by_panel)
    assert sum(e["n"] for e in pooled.result.by_panel) == 205
