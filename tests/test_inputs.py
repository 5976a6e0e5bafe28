"""Which files a run reads, which tables hold the same spots, which experiment list goes
with which table, and arguments that are not regular files: on the real DIALS files."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from dials_spot_size_analysis.algorithms.consistency import table_mismatch
from dials_spot_size_analysis.command_line.inputs import (
    InputError,
    _stage,
    find_inputs,
    pair_by_name,
    set_aside_same_spots,
)
from dials_spot_size_analysis.formats import (
    read_experiments,
    read_reflections,
    write_reflections,
)
from dials_spot_size_analysis.phil import phil_scope

PROGRAM = [
    sys.executable,
    "-m",
    "dials_spot_size_analysis.command_line.spot_size_analysis",
]
NO_OUTPUTS = ["output.json=None", "output.html=None", "output.log=None"]

# What a folder (or the whole data folder, "") keeps: one table per set of spots.
KEPT = {
    "I23_P12M_thau": ["I23_P12M_thau/indexed.refl"],
    "centroid_test_data": ["centroid_test_data/integrated.refl"],
    "centroid_test_data_refined": ["centroid_test_data_refined/refined.refl"],
    "eiger_therm": ["eiger_therm/strong.refl"],
    "ssx_CuNiR": ["ssx_CuNiR/indexed.refl", "ssx_CuNiR/integrated.refl"],
    "": [
        "I23_P12M_thau/indexed.refl",
        "centroid_test_data/integrated.refl",
        "eiger_therm/strong.refl",
        "ssx_CuNiR/indexed.refl",
        "ssx_CuNiR/integrated.refl",
    ],
}


def relative(paths, root) -> list[str]:
    return [os.path.relpath(path, root) for path in paths]


def run_program(args, timeout=60, cwd=None) -> subprocess.CompletedProcess:
    """The program in a subprocess, so that a hang fails the test instead of the run."""
    return subprocess.run(
        [*PROGRAM, *map(os.fsencode, args)],
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
    )


# ---------------------------------------------------------------- the same spots


@pytest.mark.parametrize("folder", sorted(KEPT))
def test_a_folder_keeps_one_table_of_each_set_of_spots(
    shared_data, folder, tmp_path, monkeypatch
):
    """Every folder of DIALS output, and all of them at once: the latest stage is
    kept, each other stage set aside with a line in the log, and the run counts the
    spots of the kept tables once."""
    monkeypatch.chdir(tmp_path)
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    inputs = find_inputs([str(shared_data / folder)], phil_scope)
    assert relative(inputs.reflection_files, shared_data) == KEPT[folder]
    everything = sorted(
        os.path.relpath(path, shared_data)
        for path in (shared_data / folder).rglob("*.refl")
    )
    aside = sorted(set(everything) - set(KEPT[folder]))
    assert len(inputs.notes) == len(aside)
    for name, note in zip(aside, sorted(inputs.notes)):
        assert note.startswith(f"{shared_data / name} set aside: it holds the same")

    by_folder = run([str(shared_data / folder), "output.log=run.log"])
    kept = [str(shared_data / name) for name in KEPT[folder]]
    experiments = sorted(str(p) for p in (shared_data / folder).rglob("*.expt"))
    by_name = run([*experiments, *kept, "output.log=None", "output.json=None"])
    assert by_folder.selection["n_counted"] == by_name.selection["n_counted"] > 0
    log = (tmp_path / "run.log").read_text()
    for name in aside:
        assert f"{shared_data / name} set aside" in log


def test_strong_and_indexed_of_one_image_share_every_centroid(shared_data):
    """The I23 strong.refl and indexed.refl share no experiment identifier (dials.index
    renames its experiments) but all 208 centroids: they are the same spots."""
    strong = read_reflections(shared_data / "I23_P12M_thau/strong.refl", False)
    indexed = read_reflections(shared_data / "I23_P12M_thau/indexed.refl", False)
    assert set(strong.identifiers.values()).isdisjoint(indexed.identifiers.values())
    paths = [
        str(shared_data / "I23_P12M_thau" / n) for n in ("strong.refl", "indexed.refl")
    ]
    kept, notes = set_aside_same_spots(paths, found=set(paths))
    assert kept == paths[1:]
    assert notes == [
        f"{paths[0]} set aside: it holds the same spots as {paths[1]} (208 of 208 "
        "observed centroids in common), kept as the later DIALS stage"
    ]


def test_tables_without_identifiers_are_compared_by_centroid(shared_data, tmp_path):
    """integrated.refl has no identifier map; it keeps 269 of indexed.refl's 654
    centroids (268 of 650 off the half-pixel grid): a glob finds both, one is kept."""
    assert not read_reflections(
        shared_data / "centroid_test_data/integrated.refl"
    ).identifiers
    inputs = find_inputs([str(shared_data / "centroid_test_data/*.refl")], phil_scope)
    assert relative(inputs.reflection_files, shared_data) == [
        "centroid_test_data/integrated.refl"
    ]
    assert inputs.notes == [
        f"{shared_data}/centroid_test_data/indexed.refl set aside: it holds the same "
        f"spots as {shared_data}/centroid_test_data/integrated.refl (268 of 650 "
        "observed centroids in common), kept as the later DIALS stage"
    ]


def test_tables_split_by_rows_or_by_experiment_are_all_kept(shared_data, tmp_path):
    """Splits share no spot: every piece is measured, as tests/test_many_files.py
    merges them."""
    integrated = read_reflections(shared_data / "centroid_test_data/integrated.refl")
    bounds = np.linspace(0, integrated.nrows, 8).astype(int)
    rows = []
    for number, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows.append(str(tmp_path / f"part_{number}.refl"))
        write_reflections(integrated.slice_rows(a, b), rows[-1])
    assert set_aside_same_spots(rows, found=set(rows)) == (rows, [])

    stills = read_reflections(shared_data / "ssx_CuNiR/strong_5.refl")
    ids = np.asarray(stills["id"])  # sorted: each experiment's rows are one stretch
    starts = np.searchsorted(ids, np.arange(6))
    by_experiment = []
    for k in range(5):
        part = stills.slice_rows(starts[k], starts[k + 1])
        assert set(np.asarray(part["id"]).tolist()) == {k}
        by_experiment.append(str(tmp_path / f"still_{k}.refl"))
        write_reflections(part, by_experiment[-1])
    assert set_aside_same_spots(by_experiment, found=set(by_experiment)) == (
        by_experiment,
        [],
    )


def test_tables_named_by_the_user_that_hold_the_same_spots_are_refused(
    shared_data, tmp_path, capsys
):
    """Only the user knows which was meant: one sentence naming both, on the command
    line or in a list file."""
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    strong = shared_data / "I23_P12M_thau/strong.refl"
    indexed = shared_data / "I23_P12M_thau/indexed.refl"
    listing = tmp_path / "files.txt"
    listing.write_text(f"{strong}\n{indexed}\n")
    sentence = (
        f"{indexed} and {strong} hold the same spots (208 of 208 observed centroids "
        "in common): pass only one of them, e.g. indexed.refl"
    )
    expt = str(shared_data / "I23_P12M_thau/indexed.expt")
    # With the experiment list, strong.refl could not even be measured (its identifier
    # is not in indexed.expt): refused all the same, not skipped as unusable.
    for args in ([str(strong), str(indexed)], [str(listing)], [str(listing), expt]):
        inputs = find_inputs(args, phil_scope)  # checked as they are measured
        assert inputs.compare_while_measuring
        assert inputs.reflection_files == [str(strong), str(indexed)]
        for nproc in (1, 2):
            with pytest.raises(SystemExit) as caught:
                run([*args, f"nproc={nproc}", *NO_OUTPUTS])
            assert caught.value.code == 1
            err = capsys.readouterr().err
            assert err == f"dials.spot_size_analysis: {sentence}\n"
    # A table found in a folder beside them: all are compared before measuring.
    with pytest.raises(InputError, match=re.escape(sentence)):
        find_inputs(
            [str(strong), str(indexed), str(shared_data / "eiger_therm")], phil_scope
        )


def test_a_named_table_is_kept_over_one_found(shared_data):
    strong = shared_data / "I23_P12M_thau/strong.refl"
    inputs = find_inputs([str(strong), str(shared_data / "I23_P12M_thau")], phil_scope)
    assert inputs.reflection_files == [str(strong)]
    assert inputs.notes[0].endswith("kept as named by you (not found in a folder)")


def test_stage_is_a_word_of_the_name():
    stages = ("strong", "indexed", "refined", "integrated")
    assert _stage("run/idx-0001_strong.refl", stages) == 0
    assert _stage("integrated.refl.gz", stages) == 3
    assert _stage("strongest.refl", stages) is None


# ---------------------------------------------------------------- pairing


def test_one_name_pair_is_a_pair(shared_data):
    refl = str(shared_data / "I23_P12M_thau/indexed.refl")
    expt = str(shared_data / "I23_P12M_thau/indexed.expt")
    assert pair_by_name([refl], [expt]) == ({0: expt}, [])


def test_a_table_without_identifiers_takes_the_list_of_its_own_folder(shared_data):
    """integrated.refl (no identifiers) beside indexed.expt belongs to it, not to the
    other dataset's list given first."""
    other = str(shared_data / "I23_P12M_thau/imported.expt")
    own = str(shared_data / "centroid_test_data/indexed.expt")
    legacy = str(shared_data / "centroid_test_data/integrated.refl")
    assert pair_by_name([legacy], [other, own]) == ({0: own}, [other])


def test_the_log_names_the_experiment_list_of_each_table(
    shared_data, tmp_path, monkeypatch
):
    """Named, in a folder and by a glob."""
    monkeypatch.chdir(tmp_path)
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    centroid = shared_data / "centroid_test_data"
    expected = {
        "centroid_test_data/integrated.refl": "centroid_test_data/indexed.expt",
        "I23_P12M_thau/indexed.refl": "I23_P12M_thau/indexed.expt",
        "eiger_therm/strong.refl": "eiger_therm/imported.expt",
    }
    for number, args in enumerate(
        (
            [
                str(shared_data / "I23_P12M_thau/imported.expt"),
                str(centroid / "indexed.expt"),
                str(centroid / "integrated.refl"),
            ],
            [str(centroid)],
            [str(shared_data / "*" / "*.expt"), str(shared_data / "[Ie]*" / "*.refl")],
        )
    ):
        result = run([*args, f"output.log={number}.log", "output.json=None"])
        log = (tmp_path / f"{number}.log").read_text()
        tables = [e for e in result.inputs if "reflections" in e]
        assert tables
        for entry in tables:
            name = os.path.relpath(entry["reflections"], shared_data)
            assert (
                f"from {entry['reflections']} (table version" in log
                and f"with the experiments of {shared_data / expected[name]}\n" in log
            )


def test_resolutions_come_from_the_right_detector(shared_data, tmp_path):
    """integrated.refl given with the I23 list as well as its own: 16.3-1.45 A, not
    3.67-2.10 A out of the I23 detector."""
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    result = run(
        [
            str(shared_data / "I23_P12M_thau/imported.expt"),
            str(shared_data / "centroid_test_data/indexed.expt"),
            str(shared_data / "centroid_test_data/integrated.refl"),
            *NO_OUTPUTS,
        ]
    )
    shells = result.result.by_resolution
    assert (
        round(shells[0]["d_max"], 2) == 16.34 and round(shells[-1]["d_min"], 2) == 1.45
    )


# ---------------------------------------------------------------- consistency


@pytest.mark.parametrize(
    "table, experiments",
    [
        ("centroid_test_data/indexed.refl", "centroid_test_data/indexed.expt"),
        ("centroid_test_data/integrated.refl", "centroid_test_data/indexed.expt"),
        ("I23_P12M_thau/indexed.refl", "I23_P12M_thau/indexed.expt"),
        ("I23_P12M_thau/strong.refl", "I23_P12M_thau/imported.expt"),
        ("eiger_therm/strong.refl", "eiger_therm/imported.expt"),
        (
            "centroid_test_data_refined/refined.refl",
            "centroid_test_data_refined/refined.expt",
        ),
        ("ssx_CuNiR/strong_5.refl", "ssx_CuNiR/imported_no_ref_5.expt"),
        ("ssx_CuNiR/indexed.refl", "ssx_CuNiR/indexed.expt"),
        ("ssx_CuNiR/integrated.refl", "ssx_CuNiR/integrated.expt"),
    ],
)
def test_tables_fit_their_own_experiments(shared_data, table, experiments):
    t = read_reflections(shared_data / table, index_shoeboxes=False)
    e = list(read_experiments(shared_data / experiments))
    assert (
        table_mismatch(
            t["id"], t.columns.get("panel"), t["xyzobs.px.value"], e, table, experiments
        )
        is None
    )


@pytest.mark.parametrize(
    "table, experiments, problem",
    [
        (
            "centroid_test_data/integrated.refl",
            "I23_P12M_thau/imported.expt",
            r"2022 of 2188 spots lie outside their panels \(e\.g\. x, y = .* px on panel 0 of 2463 x 195 pixels\)",
        ),
        (
            "I23_P12M_thau/strong.refl",
            "centroid_test_data/indexed.expt",
            "it has spots on panel 1 but that detector has 1 panel",
        ),
        (
            "centroid_test_data/indexed.refl",
            "eiger_therm/imported.expt",
            r"488 of 569 spots lie outside the scan \(e\.g\. z = .*, but the scan holds images 1 to 1\)",
        ),
        (
            "ssx_CuNiR/strong_5.refl",
            "centroid_test_data/indexed.expt",
            r"refers to experiment id 4 but the list has 1 experiment",
        ),
    ],
)
def test_a_table_of_another_dataset_is_refused_in_one_sentence(
    shared_data, table, experiments, problem
):
    t = read_reflections(shared_data / table, index_shoeboxes=False)
    e = list(read_experiments(shared_data / experiments))
    message = table_mismatch(
        t["id"], t.columns.get("panel"), t["xyzobs.px.value"], e, table, experiments
    )
    assert message is not None
    assert message.startswith(f"{table} does not fit {experiments}: ")
    assert message.endswith(": pass the .expt file written together with this table")
    assert "\n" not in message
    assert __import__("re").search(problem, message)


def test_the_scan_starts_at_its_first_image(shared_data):
    """Stills of images 17000-17004: z = 16999.5 ... 17003.5 lies inside each scan;
    against the scan of image 1 it does not."""
    t = read_reflections(shared_data / "ssx_CuNiR/strong_5.refl", index_shoeboxes=False)
    stills = list(read_experiments(shared_data / "ssx_CuNiR/imported_no_ref_5.expt"))
    assert table_mismatch(t["id"], None, t["xyzobs.px.value"], stills, "t", "e") is None
    first = list(read_experiments(shared_data / "centroid_test_data/indexed.expt")) * 5
    assert "lie outside the scan" in table_mismatch(
        t["id"], None, t["xyzobs.px.value"], first, "t", "e"
    )


# ---------------------------------------------------------------- not regular files


@pytest.mark.parametrize("name", ["x.refl", "x.expt", "x.refl.gz", "x"])
def test_a_fifo_argument_is_refused_without_opening_it(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    done = run_program([str(fifo), *NO_OUTPUTS])
    assert done.returncode == 1
    assert done.stderr.decode().endswith(
        f"{fifo}: is not a regular file (a FIFO): pass the .refl, .expt, list or .phil "
        "file itself\n"
    )


def test_a_fifo_among_500_good_files_is_refused(shared_data, tmp_path):
    good = []
    for number in range(500):
        link = tmp_path / f"still_{number:03d}.refl"
        link.symlink_to(shared_data / "eiger_therm/strong.refl")
        good.append(str(link))
    os.mkfifo(tmp_path / "zzz.refl")
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join([*good, str(tmp_path / "zzz.refl")]) + "\n")
    for args in ([*good, str(tmp_path / "zzz.refl")], [str(listing)]):
        done = run_program([*args, *NO_OUTPUTS])
        assert done.returncode == 1
        assert "zzz.refl: is not a regular file (a FIFO)" in done.stderr.decode()


def test_a_fifo_in_a_folder_is_skipped_and_reported(shared_data, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "strong.refl").symlink_to(shared_data / "eiger_therm/strong.refl")
    (folder / "imported.expt").symlink_to(shared_data / "eiger_therm/imported.expt")
    os.mkfifo(folder / "pipe.refl")
    done = run_program(
        [
            str(folder),
            f"output.log={tmp_path / 'run.log'}",
            "output.json=None",
            "output.html=None",
        ]
    )
    assert done.returncode == 0, done.stderr.decode()
    log = (tmp_path / "run.log").read_text()
    assert f"{folder / 'pipe.refl'} skipped: it is not a regular file (a FIFO)" in log
    assert "Read 112 reflections" in log


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_as_an_argument_and_in_a_list(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"{device} is absent here")
    listing = tmp_path / "files.txt"
    listing.write_text(f"{device}\n")
    for args in ([device], [str(listing)]):
        done = run_program([*args, *NO_OUTPUTS])
        assert done.returncode == 1
        assert (
            f"{device}: is not a regular file (a character device)"
            in done.stderr.decode()
        )


def test_a_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "s.refl"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        with pytest.raises(
            InputError, match=r"s\.refl: is not a regular file \(a socket\)"
        ):
            find_inputs([str(path)], phil_scope)
    finally:
        server.close()


def test_file_names_that_are_not_utf8_get_through_and_are_shown_escaped(
    shared_data, tmp_path
):
    folder = tmp_path / "run"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9")
    (folder / f"{name}.refl").symlink_to(shared_data / "eiger_therm/strong.refl")
    (folder / f"{name}.expt").symlink_to(shared_data / "eiger_therm/imported.expt")
    inputs = find_inputs([str(folder)], phil_scope)
    assert inputs.reflection_files == [str(folder / f"{name}.refl")]
    assert pair_by_name(inputs.reflection_files, inputs.experiment_files) == (
        {0: str(folder / f"{name}.expt")},
        [],
    )
    os.mkfifo(folder / f"{name}2.refl")
    with pytest.raises(InputError, match=r"caf\\xe92\.refl: is not a regular file"):
        find_inputs([str(folder / f"{name}2.refl")], phil_scope)
    done = run_program([str(folder / f"{name}2.refl"), *NO_OUTPUTS])
    assert (
        done.returncode == 1 and b"caf\\xe92.refl: is not a regular file" in done.stderr
    )
    done = run_program(
        [
            str(folder),
            "output.json=None",
            "output.html=None",
            f"output.log={tmp_path / 'run.log'}",
        ]
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Traceback" not in done.stderr and b"Logging error" not in done.stderr


def test_the_one_list_given_still_describes_the_other_tables(shared_data, tmp_path):
    """indexed.expt pairs with indexed.refl by name; a part of that table elsewhere
    (with the same identifiers) is matched to it by identifier, as before."""
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    write_reflections(table.slice_rows(0, 100), tmp_path / "part.refl")
    expt = str(shared_data / "I23_P12M_thau/indexed.expt")
    refl = str(shared_data / "I23_P12M_thau/indexed.refl")
    assert pair_by_name([refl, str(tmp_path / "part.refl")], [expt]) == (
        {0: expt},
        [expt],
    )
    result = run([expt, str(tmp_path / "part.refl"), *NO_OUTPUTS])
    assert result.selection["n_counted"] == 100


def test_a_list_naming_a_missing_file_is_still_a_list(
    shared_data, tmp_path, monkeypatch
):
    """The missing file is named (and skipped), not the list called "a text file"."""
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    monkeypatch.chdir(tmp_path)
    folder = shared_data / "I23_P12M_thau"
    (tmp_path / "files.txt").write_text(
        f"{folder / 'indexed.refl'}\n{folder / 'indexed.expt'}\nmissing.refl\n"
    )
    result = run(["files.txt", "output.html=None"])
    assert result.selection["n_counted"] == 205
    [skipped] = result.skipped_files
    assert skipped["reason"].endswith("missing.refl: does not exist: check the path")


GLOB_PATTERNS = [
    "**/*.refl",
    "a/**/*.refl",
    "a/**",
    "**",
    "*/**/z.refl",
    "a/**/b/**/*.refl",
    "**/b",
    "a/**/",
    "**/",
    "a/*.refl",
]


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """Nested folders with tables, hidden folders and a hidden file."""
    for folder in ("a/b/c", ".hidden", "a/.hidden"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("x", "a/y", "a/b/z", "a/b/c/w", ".hidden/h", "a/.hidden/h", "a/.d"):
        (tmp_path / f"{name}.refl").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("pattern", GLOB_PATTERNS)
def test_globs_match_as_glob_does_where_there_are_no_links(tree, pattern):
    import glob

    from dials_spot_size_analysis.command_line.inputs import glob_without_links

    assert sorted(glob_without_links(pattern)) == sorted(
        glob.glob(pattern, recursive=True)
    )
    absolute = str(tree / pattern)
    assert sorted(glob_without_links(absolute)) == sorted(
        glob.glob(absolute, recursive=True)
    )


def test_a_glob_through_links_back_up_the_tree_ends(tree):
    """Two links to the folder itself: glob's paths double at every level (a run that
    never ended); links are not descended, as in the search of a folder."""
    from dials_spot_size_analysis.command_line.inputs import glob_without_links

    os.symlink(".", tree / "a" / "up1")
    os.symlink("..", tree / "a" / "up2")
    assert sorted(glob_without_links("**/*.refl")) == [
        "a/b/c/w.refl",
        "a/b/z.refl",
        "a/y.refl",
        "x.refl",
    ]


def test_a_folder_with_a_link_to_itself_is_searched(tmp_path, monkeypatch):
    """``self.refl -> self.refl`` made the search of the folder end in a traceback
    (too many levels of symbolic links): it is found, and reported when read, as a
    dangling link is; a link back up the tree is not followed."""
    (tmp_path / "g" / "sub").mkdir(parents=True)
    (tmp_path / "g" / "sub" / "x.refl").write_bytes(b"\x93")
    os.symlink("self.refl", tmp_path / "g" / "self.refl")
    os.symlink("nowhere.refl", tmp_path / "g" / "dangling.refl")
    os.symlink("..", tmp_path / "g" / "sub" / "up")
    monkeypatch.chdir(tmp_path)
    inputs = find_inputs(["g"], phil_scope)
    assert sorted(inputs.reflection_files) == [
        "g/dangling.refl",
        "g/self.refl",
        "g/sub/x.refl",
    ]
