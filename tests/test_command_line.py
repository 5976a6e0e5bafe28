"""dials.spot_size_analysis as users and pipelines run it: the installed console script in a
temporary directory, and run([...]) in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROGRAM, REFLECTION_FILES, REPOSITORY, console

from dials_spot_size_analysis.command_line.spot_size_analysis import run
from dials_spot_size_analysis.report.document import SCHEMA_FILE

EXAMPLE = REPOSITORY / "examples" / "data"


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("name", sorted(REFLECTION_FILES))
def test_console_script_on_every_dataset(shared_data, ground_truth, tmp_path, name):
    truth = ground_truth[name]
    result = console(
        shared_data / REFLECTION_FILES[name],
        shared_data / name,
        "bins=100",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert files_in(tmp_path) == [
        f"{PROGRAM}.html",
        f"{PROGRAM}.json",
        f"{PROGRAM}.log",
    ]
    document = json.loads((tmp_path / f"{PROGRAM}.json").read_text())
    log = (tmp_path / f"{PROGRAM}.log").read_text()
    assert log.startswith(f"{PROGRAM} v") and log == result.stdout
    histogram = document["histogram"]
    if truth["n_indexed"] and all(truth["shoebox_allocated"]):
        tutorial = truth["histogram_indexed_foreground"]
        assert histogram["counts"] == tutorial["slots"]
        assert histogram["bin_centers"] == tutorial["slot_centers"]
        assert histogram["n_out_of_range"] == tutorial["n_out_of_slot_range"]
    else:
        flags = np.array(truth["flags"], dtype=np.uint64)
        keep = np.array(truth["shoebox_allocated"]) & (
            ((flags & np.uint64(4)) != 0) if truth["n_indexed"] else True
        )
        expected = np.bincount(
            np.minimum(np.array(truth["count_mask_values"]["4"])[keep] // 10, 99),
            minlength=100,
        )
        assert histogram["counts"] == expected.tolist()
    assert document["selection"]["n_rows"] == truth["nrows"]


def in_fresh_python(arguments: list, report: str) -> str:
    """run(arguments) in a new interpreter; returns what ``report`` (an expression) says after."""
    script = f"import sys\nfrom dials_spot_size_analysis.command_line.spot_size_analysis import run\nanalysis = run(sys.argv[1:])\nprint({report})\n"
    arguments = [
        *map(str, arguments),
        "output.json=None",
        "output.html=None",
        "output.log=None",
    ]
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def test_program_skips_numbas_blas_probe_and_scipy_still_imports(shared_data):
    """numba looks for scipy's BLAS when it starts (a third of its start-up); the program's
    kernels do no linear algebra, so it hides scipy.linalg from that probe, and only then."""
    pytest.importorskip("numba")
    report = "'scipy.linalg' in sys.modules, __import__('scipy.linalg') and 'numba.np.arraymath' in sys.modules, analysis.result.statistics['n']"
    assert (
        in_fresh_python(
            [
                shared_data / "eiger_therm/imported.expt",
                shared_data / "eiger_therm/strong.refl",
            ],
            report,
        )
        == "False True 112"
    )


def test_json_follows_its_schema(shared_data, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    run(
        [
            str(shared_data / "I23_P12M_thau/indexed.expt"),
            str(shared_data / "I23_P12M_thau/indexed.refl"),
            f"output.json={tmp_path / 'out.json'}",
            f"output.log={tmp_path / 'out.log'}",
            f"output.html={tmp_path / 'out.html'}",
        ]
    )
    document = json.loads((tmp_path / "out.json").read_text())
    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text()))
    assert document["program"] == PROGRAM and document["schema_version"] == 2
    assert document["selection"]["n_counted"] == 205
    shape = document["spot_shape"]  # one still: every spot on one image
    assert shape["extent_z"]["statistics"]["max"] == 1
    assert shape["extent_z"]["histogram"]["counts"][0] == 205
    assert shape["footprint"]["statistics"] == document["statistics"]
    assert shape["counts"]["rows_with_coded_pixels"] == 205
    assert document["parameters"]["flags"]["require"] == "Auto"
    assert document["parameters"]["histogram"] == {
        "bins": 100,
        "data_min": 0.0,
        "data_max": 1000.0,
    }
    for figure in document["plots"].values():
        assert set(figure) == {"data", "layout", "help"}


def test_run_returns_the_result_and_logs_modified_parameters(
    shared_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    result = run(
        [
            str(shared_data / "centroid_test_data/indexed.refl"),
            "bins=50",
            "data_max=500",
            "mask_code=Valid+Foreground",
        ]
    )
    assert result.histogram.n_bins == 50 and result.histogram.data_max == 500
    assert result.result.mask_code == ["Valid", "Foreground"]
    log = (tmp_path / f"{PROGRAM}.log").read_text()
    assert "The following parameters have been modified:" in log
    assert "bins = 50" in log and "data_max = 500" in log
    assert "flags.require=Auto chose indexed" in log
    assert "No resolution breakdown: it needs the experiment list" in log
    assert capsys.readouterr().err == ""


def test_phil_file_and_unique_suffixes(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.phil").write_text(
        "histogram {\n  bins = 20\n}\nmask_code = Valid Foreground\n"
    )
    result = run(
        [
            str(shared_data / "eiger_therm/strong.refl"),
            "settings.phil",
            "max=200",
            "exclude=overloaded",
        ]
    )
    assert (result.histogram.n_bins, result.histogram.data_max) == (20, 200.0)
    assert result.parameters["flags"]["exclude"] == ["overloaded"]
    result = run(
        [
            str(shared_data / "eiger_therm/strong.refl"),
            "--phil",
            "settings.phil",
            "output.json=None",
            "output.log=None",
        ]
    )
    assert result.histogram.n_bins == 20


def test_show_config_and_help(tmp_path):
    config = console("-c", "bins=42", cwd=tmp_path)
    assert (
        config.returncode == 0
        and "bins = 42" in config.stdout
        and "mask_code = Foreground" in config.stdout
    )
    config_with_help = console("-c", "-a1", cwd=tmp_path)
    assert "Number of bins" in config_with_help.stdout
    for args in (["-h"], []):
        shown = console(*args, cwd=tmp_path)
        assert (
            shown.returncode == 0
            and "How big are my spots?" in shown.stdout
            and "Examples" in shown.stdout
        )
        assert "flags" in shown.stdout and shown.stderr == ""
    assert files_in(tmp_path) == []


def test_example_data_shipped_with_the_repository(tmp_path):
    result = console(EXAMPLE / "indexed.expt", EXAMPLE / "indexed.refl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / f"{PROGRAM}.json").read_text())
    assert (
        document["selection"]["n_rows"] == 400
        and document["selection"]["n_counted"] == 357
    )


def error_cases(shared_data, tmp_path):
    data = shared_data
    i23 = [data / "I23_P12M_thau/indexed.expt", data / "I23_P12M_thau/indexed.refl"]
    return {
        "missing file": ([tmp_path / "nothing.refl"], "nothing.refl: no such file"),
        "legacy pickle": (
            [data / "centroid_test_data/strong.pickle"],
            "is a Python pickle (DIALS wrote reflection tables this way before 2019), which is never unpickled",
        ),
        "image as reflections": (
            [tmp_path / "image.cbf"],
            "image.cbf: is not a DIALS experiment list, reflection table, list of files or PHIL file: it looks like a CBF",
        ),
        "experiments only": (
            [data / "eiger_therm/imported.expt"],
            "no reflection file given",
        ),
        "mismatched pair": (
            [data / "eiger_therm/imported.expt", data / "I23_P12M_thau/indexed.refl"],
            "which are not in the experiment list(s) given",
        ),
        "nothing selected": (
            [*i23, "flags.require=scaled"],
            "no reflection of 208 passes flags.require=scaled",
        ),
        "unknown flag": (
            [*i23, "flags.exclude=indexd"],
            "unrecognised flag name 'indexd': choose from predicted",
        ),
        "unknown parameter": ([*i23, "bogus=1"], "bogus=1: unknown parameter"),
        "bad mask code": (
            [*i23, "mask_code=Signal"],
            "unknown mask code 'Signal': choose from Valid, Background, Foreground",
        ),
        "empty range": (
            [*i23, "data_min=10", "data_max=10"],
            "must be greater than histogram.data_min",
        ),
        "no bins": (
            [*i23, "bins=0"],
            "histogram.bins element is less than the minimum allowed value: 0 < 1 "
            f"({PROGRAM} -c -a2 lists each parameter's type and range)",
        ),
        "n_sigma not a number": (
            [*i23, "n_sigma=nan"],
            "profile.n_sigma must be a finite number, not nan "
            f"({PROGRAM} -c -a2 lists each parameter's type and range)",
        ),
        "memory limit not a number": (
            [*i23, "memory_limit=nan"],
            "profile.memory_limit must be a finite number, not nan "
            f"({PROGRAM} -c -a2 lists each parameter's type and range)",
        ),
        "memory limit below 1 MB": (
            [*i23, "memory_limit=0"],
            "profile.memory_limit element is less than the minimum allowed value: "
            "0 < 0.001",
        ),
        "memory limit beyond any machine": (
            [*i23, "memory_limit=1e12"],
            "profile.memory_limit element is greater than the maximum allowed value: "
            "1e+12 > 100000",
        ),
        "histogram edge not a number": (
            [*i23, "data_max=nan"],
            "histogram.data_max must be a finite number or Auto, not nan",
        ),
        "unwritable output": (
            [*i23, f"output.json={tmp_path / 'no' / 'such' / 'dir.json'}"],
            "cannot be written",
        ),
        "truncated file": ([tmp_path / "cut.refl"], "is truncated"),
        "unknown option": ([*i23, "--frobnicate"], "unknown option --frobnicate"),
    }


ERROR_NAMES = [
    "missing file",
    "legacy pickle",
    "image as reflections",
    "experiments only",
    "mismatched pair",
    "nothing selected",
    "unknown flag",
    "unknown parameter",
    "bad mask code",
    "empty range",
    "no bins",
    "n_sigma not a number",
    "memory limit not a number",
    "memory limit below 1 MB",
    "memory limit beyond any machine",
    "histogram edge not a number",
    "unwritable output",
    "truncated file",
    "unknown option",
]


def test_every_error_case_is_run(shared_data, tmp_path):
    assert sorted(error_cases(shared_data, tmp_path)) == sorted(ERROR_NAMES)


@pytest.mark.parametrize("case", ERROR_NAMES)
def test_errors_are_one_sentence_exit_1_and_leave_nothing(
    shared_data, tmp_path, monkeypatch, capsys, case
):
    (tmp_path / "image.cbf").write_bytes(b"###CBF: VERSION 1.5\n" + bytes(64))
    original = (shared_data / "eiger_therm/strong.refl").read_bytes()
    (tmp_path / "cut.refl").write_bytes(original[: len(original) // 3])
    before = files_in(tmp_path)
    args, message = error_cases(shared_data, tmp_path)[case]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        run([str(a) for a in args])
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{PROGRAM}: ") and message in err, (
        err
    )
    assert "Traceback" not in err
    assert files_in(tmp_path) == before


def test_error_through_the_console_script(tmp_path):
    result = console(tmp_path / "missing.refl", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert (
        result.stderr
        == f"{PROGRAM}: {tmp_path / 'missing.refl'}: no such file or directory (parameters are given as name=value)\n"
    )
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    "parameter, message",
    [
        *(
            (name, f"{name} takes a file name (or None), not Auto")
            for name in (
                "output.log",
                "output.json",
                "output.html",
                "output.plot",
                "output.suggestions",
                "output.reflections",
                "input.find_spots",
            )
        ),
        ("mask_code", "mask_code takes mask code names (e.g. Foreground), not Auto"),
        ("profile.n_sigma", "profile.n_sigma must be a finite number, not Auto"),
        ("flags.exclude", "flags.exclude takes flag names (or None), not Auto"),
    ],
)
def test_auto_where_it_means_nothing_is_one_sentence(
    shared_data, tmp_path, monkeypatch, capsys, parameter, message
):
    """PHIL accepts Auto for any parameter; these have no automatic value (each
    ended in a traceback)."""
    monkeypatch.chdir(tmp_path)
    i23 = shared_data / "I23_P12M_thau"
    with pytest.raises(SystemExit) as caught:
        run([str(i23 / "indexed.expt"), str(i23 / "indexed.refl"), f"{parameter}=Auto"])
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROGRAM}: {message}") and err.count("\n") == 1, err
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    "text", ["include file other.phil\n", "histogram {\n  include scope a.b\n}\n"]
)
def test_a_phil_file_with_an_include_is_refused(
    shared_data, tmp_path, monkeypatch, capsys, text
):
    """An include line was passed over in silence: its parameters ignored."""
    (tmp_path / "other.phil").write_text("histogram.bins = 7\n")
    (tmp_path / "p.phil").write_text(text)
    monkeypatch.chdir(tmp_path)
    i23 = shared_data / "I23_P12M_thau"
    with pytest.raises(SystemExit):
        run([str(i23 / "indexed.expt"), str(i23 / "indexed.refl"), "p.phil"])
    err = capsys.readouterr().err
    assert err == (
        f"{PROGRAM}: p.phil: includes another file or scope, which this program does "
        "not follow (its parameters would be ignored): put them in the file itself\n"
    )
    assert sorted(files_in(tmp_path)) == ["other.phil", "p.phil"]


def test_running_out_of_memory_is_one_sentence_and_leaves_nothing(
    shared_data, tmp_path, monkeypatch, capsys
):
    from dials_spot_size_analysis.command_line import spot_size_analysis as program

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 16.0 GiB")

    monkeypatch.setattr(program, "run_analysis", exhausted)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        run([str(shared_data / "eiger_therm/strong.refl")])
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err == (
        f"{PROGRAM}: out of memory: no output was written; free memory, or measure "
        "fewer files at once or with fewer processes (mp.nproc)\n"
    )
    assert files_in(tmp_path) == []


def test_failure_after_reading_leaves_no_partial_output(
    shared_data, tmp_path, monkeypatch
):
    """A failure while writing the JSON removes the temporary files and keeps no log."""
    from dials_spot_size_analysis.command_line import outputs
    from dials_spot_size_analysis.command_line import spot_size_analysis as program

    def broken(document, path):
        raise outputs.OutputError(
            f"{path}: cannot be written (disk full): choose another output path"
        )

    monkeypatch.setattr(program, "write_json", broken)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        run([str(shared_data / "eiger_therm/strong.refl")])
    assert files_in(tmp_path) == []


def test_json_of_many_files_is_written_in_pieces_with_json_dumps_bytes(tmp_path):
    """A document for thousands of files is compact and streamed a slice of entries at a
    time: byte for byte what json.dumps gives, without the whole text in memory at once."""
    from dials_spot_size_analysis.command_line.outputs import (
        COMPACT_JSON_INPUTS,
        write_json,
    )
    from dials_spot_size_analysis.report.document import (
        ITEMS_PER_PIECE,
        compact_json_pieces,
    )

    n = max(2 * ITEMS_PER_PIECE, COMPACT_JSON_INPUTS) + 3  # compact, and sliced
    document = {
        "program": PROGRAM,
        "inputs": [
            {"reflections": f"still-{i:06d}.refl", "n_rows": i, "skipped_columns": []}
            for i in range(n)
        ],
        "selection": {
            "n_rows": 7,
            "datasets": [
                {"name": f"still-{i}", "require": ["indexed"]} for i in range(n)
            ],
        },
        "statistics": {"mean": 2.5, "std": None, "note": 'Å, "quoted"\n'},
        "by_image": [],
    }
    write_json(document, str(tmp_path / "many.json"))
    assert (tmp_path / "many.json").read_bytes() == (
        json.dumps(document, separators=(",", ":")) + "\n"
    ).encode()
    slices = -(-n // ITEMS_PER_PIECE)
    assert slices >= 3
    pieces = list(compact_json_pieces(document["inputs"]))
    assert len(pieces) == slices + 2  # "[", the slices, "]"
    small = {
        "inputs": document["inputs"][:COMPACT_JSON_INPUTS],
        "statistics": document["statistics"],
    }
    write_json(small, str(tmp_path / "small.json"))
    assert (tmp_path / "small.json").read_text() == json.dumps(small, indent=2) + "\n"


def test_json_writer_turns_nan_and_infinity_into_null_where_it_finds_them(tmp_path):
    """The program hands the writer a document whose NaN and infinities are not yet
    replaced (copying every number of thousands of files first costs more than the
    writing): each comes out as null, compact or indented, and nothing else changes."""
    from dials_spot_size_analysis.command_line.outputs import (
        COMPACT_JSON_INPUTS,
        write_json,
    )
    from dials_spot_size_analysis.report.document import ITEMS_PER_PIECE, finite

    n = max(ITEMS_PER_PIECE, COMPACT_JSON_INPUTS) + 5  # compact, and sliced
    inputs = [{"name": f"NaN-{i}.refl", "n": i} for i in range(n)]
    inputs[ITEMS_PER_PIECE + 2]["n"] = float("nan")  # in the second slice only
    document = {
        "inputs": inputs,
        "statistics": {"mean": float("inf"), "std": [1.5, float("-inf")], "n": 3},
        "shoebox": {"median_size_px": (float("nan"), 3.0, 1.0)},  # a tuple too
        "plain": {"x": 0.25, "name": "Infinity"},
    }
    expected = finite(document)
    assert expected["inputs"][ITEMS_PER_PIECE + 2]["n"] is None
    assert expected["statistics"] == {"mean": None, "std": [1.5, None], "n": 3}
    assert expected["shoebox"] == {"median_size_px": [None, 3.0, 1.0]}
    for name, value, dumped in [
        ("many.json", document, json.dumps(expected, separators=(",", ":"))),
        (
            "small.json",
            {**document, "inputs": inputs[:COMPACT_JSON_INPUTS]},
            json.dumps(
                finite({**document, "inputs": inputs[:COMPACT_JSON_INPUTS]}), indent=2
            ),
        ),
    ]:
        write_json(value, str(tmp_path / name))
        text = (tmp_path / name).read_text()
        assert text == dumped + "\n"
        json.loads(text, parse_constant=lambda token: pytest.fail(token))
    assert inputs[ITEMS_PER_PIECE + 2]["n"] != inputs[ITEMS_PER_PIECE + 2]["n"]  # NaN
    assert files_in(tmp_path) == ["many.json", "small.json"]
