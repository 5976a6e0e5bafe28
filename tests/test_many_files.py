"""Many files: split and merged exactly, in parallel and over MPI, with bad files skipped."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PROGRAM, SCRIPT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dials_spot_size_analysis.api import UnusableFilesError, analyse
from dials_spot_size_analysis.command_line.spot_size_analysis import run
from dials_spot_size_analysis.formats import read_reflections, write_reflections

INTEGRATED = "centroid_test_data/integrated.refl"  # 2269 rows, 278 with pixel data, no identifiers
EXPT = "centroid_test_data/indexed.expt"
# What a test plants by monkeypatching reaches worker processes only when they fork.
needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(),
    reason="needs fork: what the test plants by monkeypatching must reach the workers",
)


def without_run_details(document: dict) -> dict:
    """The document less what legitimately differs between ways of running: how the work
    was spread (mp.*) and where the inputs were (file names)."""
    document = json.loads(json.dumps(document))
    document["parameters"].pop("mp")
    document["parameters"].pop("output")
    document.pop("inputs")
    for dataset in document["selection"]["datasets"]:
        dataset.pop("name")
    return document


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_split_merges_to_the_whole(shared_data, data):
    """However the rows are split into tables, the merged analysis equals the whole's."""
    table = read_reflections(shared_data / INTEGRATED)
    cuts = sorted(data.draw(st.lists(st.integers(0, table.nrows), max_size=6)))
    bounds = [0, *cuts, table.nrows]
    parts = [table.slice_rows(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    options = {
        "require": None,
        "bins": data.draw(st.integers(1, 60)),
        "data_max": data.draw(st.sampled_from([100, 1000, "Auto"])),
    }
    whole = analyse(table, shared_data / EXPT, **options)
    merged = analyse(parts, shared_data / EXPT, **options)
    assert merged.histogram.counts.tolist() == whole.histogram.counts.tolist()
    assert (merged.histogram.data_min, merged.histogram.data_max) == (
        whole.histogram.data_min,
        whole.histogram.data_max,
    )
    assert merged.histogram.n_out_of_range == whole.histogram.n_out_of_range
    assert merged.statistics == whole.statistics
    assert (
        merged.result.by_image == whole.result.by_image
        and merged.result.by_resolution == whole.result.by_resolution
    )
    assert merged.selection["n_counted"] == whole.selection["n_counted"] == 278
    assert merged.result.spot_shape == whole.result.spot_shape  # shapes merge exactly
    for name in ("extent_z", "footprint", "rms_width_radial", "elongation"):
        np.testing.assert_array_equal(
            getattr(merged.result.spot_sizes, name),
            getattr(whole.result.spot_sizes, name),
        )


@pytest.fixture
def pieces(shared_data, tmp_path):
    """integrated.refl cut into 7 files."""
    table = read_reflections(shared_data / INTEGRATED)
    bounds = np.linspace(0, table.nrows, 8).astype(int)
    folder = tmp_path / "pieces"
    folder.mkdir()
    for number, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        write_reflections(table.slice_rows(a, b), folder / f"part_{number}.refl")
    return folder


def run_json(tmp_path, args, name) -> dict:
    out = tmp_path / name
    run([*map(str, args), f"output.json={out}", "output.log=None", "output.html=None"])
    return json.loads(out.read_text())


def test_parallel_equals_serial_and_the_whole(shared_data, pieces, tmp_path):
    files = sorted(pieces.glob("*.refl"))
    serial = run_json(tmp_path, [shared_data / EXPT, *files], "serial.json")
    parallel = run_json(
        tmp_path, [shared_data / EXPT, *files, "nproc=2"], "parallel.json"
    )
    whole = run_json(
        tmp_path, [shared_data / EXPT, shared_data / INTEGRATED], "whole.json"
    )
    assert without_run_details(parallel) == without_run_details(serial)
    assert (
        serial["histogram"] == whole["histogram"]
        and serial["statistics"] == whole["statistics"]
    )
    assert (
        len(serial["selection"]["datasets"]) == 7
        and serial["selection"]["n_counted"] == whole["selection"]["n_counted"]
    )


@needs_fork
def test_garbage_collection_pauses_while_results_are_made_but_not_in_workers(
    shared_data, pieces, monkeypatch
):
    """The process that gathers thousands of files' results does so without garbage
    collections (they would walk every result again and again), also for the files it
    measures itself; workers collect as usual; afterwards collection is on again."""
    import gc

    from dials_spot_size_analysis.parallel import pool

    measure_sources = pool.measure_sources

    def probed(*args):
        outcomes = measure_sources(*args)
        for outcome in outcomes:
            outcome.info["collecting"] = gc.isenabled()
            outcome.info["in_a_worker"] = os.getpid() != this_process
        return outcomes

    this_process = os.getpid()
    monkeypatch.setattr(pool, "measure_sources", probed)
    files = [str(path) for path in sorted(pieces.glob("*.refl"))]
    for nproc in (1, 2):
        inputs = analyse(files, shared_data / EXPT, nproc=nproc).inputs
        measured = [entry for entry in inputs if "reflections" in entry]
        assert len(measured) == 7
        assert [e["collecting"] for e in measured] == [
            e["in_a_worker"] for e in measured
        ]
        assert nproc == 2 or not any(e["in_a_worker"] for e in measured)
        assert gc.isenabled()
    gc.disable()
    try:
        analyse(files, shared_data / EXPT)
        assert not gc.isenabled()  # as the caller left it
    finally:
        gc.enable()


def test_directory_glob_and_list_file_inputs(
    shared_data, pieces, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "files.txt"
    listing.write_text(
        "# the pieces\n"
        + "\n".join(f"pieces/{p.name}" for p in sorted(pieces.glob("*.refl")))
        + "\n"
    )
    by_directory = run_json(tmp_path, [shared_data / EXPT, pieces], "directory.json")
    by_glob = run_json(
        tmp_path, [shared_data / EXPT, str(pieces / "part_*.refl")], "glob.json"
    )
    by_list = run_json(tmp_path, [shared_data / EXPT, listing], "list.json")
    assert (
        by_directory["selection"]["n_datasets"]
        == by_glob["selection"]["n_datasets"]
        == by_list["selection"]["n_datasets"]
        == 7
    )
    assert by_directory["histogram"] == by_glob["histogram"] == by_list["histogram"]


def test_list_names_are_relative_to_the_list_and_each_file_counts_once(
    tmp_path, monkeypatch
):
    """A list file's relative names are relative to its folder ('#' comments and blank
    lines ignored); a file named twice (relative or absolute, in a list or on the command
    line) is added once; x.refl pairs with x.expt in its folder however each was named."""
    from dials_spot_size_analysis.command_line.inputs import find_inputs, pair_by_name
    from dials_spot_size_analysis.phil import phil_scope

    monkeypatch.chdir(tmp_path)
    stills, lists = tmp_path / "stills", tmp_path / "lists"
    stills.mkdir()
    lists.mkdir()
    for name in ("a.refl", "a.expt", "b.refl", "b.expt", "c.refl.gz"):
        (stills / name).touch()
    (lists / "files.txt").write_text(
        f"# run 1\n\n../stills/a.refl\n  ../stills/a.expt  \n{stills / 'b.refl'}\n../stills/./a.refl\n../stills/c.refl.gz\n"
    )
    command_line = find_inputs(
        ["stills/b.expt", "lists/files.txt", "stills/b.refl", str(stills / "a.expt")],
        phil_scope,
    )
    listed = os.path.join("lists", "../stills")
    assert command_line.reflection_files == [
        f"{listed}/a.refl",
        str(stills / "b.refl"),
        f"{listed}/c.refl.gz",
    ]
    assert command_line.experiment_files == ["stills/b.expt", f"{listed}/a.expt"]
    assert pair_by_name(
        command_line.reflection_files, command_line.experiment_files
    ) == ({0: f"{listed}/a.expt", 1: "stills/b.expt"}, [])


def test_a_corrupt_file_among_good_ones_is_skipped_and_reported(
    shared_data, pieces, tmp_path, capsys
):
    corrupt = pieces / "part_3.refl"
    content = corrupt.read_bytes()
    corrupt.write_bytes(content[: len(content) - 100])
    (pieces / "notes.refl").write_bytes(b"\x80\x04K\x01.")  # a pickle named .refl
    files = sorted(pieces.glob("*.refl"))
    document = run_json(tmp_path, [shared_data / EXPT, *files, "nproc=2"], "out.json")
    log = capsys.readouterr().out
    skipped = {entry["file"]: entry["reason"] for entry in document["skipped_files"]}
    assert set(skipped) == {str(corrupt), str(pieces / "notes.refl")}
    assert (
        "truncated" in skipped[str(corrupt)]
        and "never unpickled" in skipped[str(pieces / "notes.refl")]
    )
    assert "Skipped 2 file(s) that could not be used" in log and str(corrupt) in log
    assert document["selection"]["n_datasets"] == 6


def test_bad_files_can_be_made_fatal(shared_data, pieces, tmp_path, capsys):
    (pieces / "part_5.refl").write_bytes(b"\x93\xa3bad")
    files = sorted(pieces.glob("*.refl"))
    with pytest.raises(SystemExit) as caught:
        run(
            [
                str(shared_data / EXPT),
                *map(str, files),
                "bad_files=fail",
                f"output.json={tmp_path / 'x.json'}",
                "output.log=None",
            ]
        )
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert (
        "1 of 7 reflection files could not be used (input.bad_files=fail); the first:"
        in err
        and "part_5.refl" in err
    )
    assert not (tmp_path / "x.json").exists()


def test_every_file_bad_is_an_error(tmp_path):
    for number in range(2):
        (tmp_path / f"{number}.refl").write_bytes(b"")
    with pytest.raises(
        UnusableFilesError,
        match="every reflection file was unusable; the first: .*0.refl: is empty",
    ):
        analyse([tmp_path / "0.refl", tmp_path / "1.refl"])


def test_files_without_experiment_lists_are_merged_by_identifier(shared_data, tmp_path):
    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    for number, (a, b) in enumerate([(0, 100), (100, 208)]):
        write_reflections(table.slice_rows(a, b), tmp_path / f"{number}.refl")
    result = analyse(
        [
            tmp_path / "0.refl",
            tmp_path / "1.refl",
            shared_data / "eiger_therm/strong.refl",
        ],
        require=None,
    )
    by_experiment = [
        (e["experiment"], e["identifier"], e["n"]) for e in result.result.by_experiment
    ]
    assert by_experiment == [
        (-1, None, 3),  # unindexed rows (id -1) belong to no experiment
        (0, "f2631175-384a-00b1-a281-8ca7ffd90066", 205),
        (1, "5684a4f6-055b-79c4-db71-81f3df1142b7", 112),
    ]


def test_tables_of_several_experiments_merge_by_identifier(shared_data, tmp_path):
    """A table's own experiment ids (0, 1; -1 for unindexed rows) become positions in the
    union of every table's identifiers, in input order."""

    def two_experiments(
        source: str, identifiers: tuple[str, str], name: str
    ) -> tuple[int, int]:
        table = read_reflections(shared_data / source)
        ids = table["id"].copy()
        ids[(np.arange(table.nrows) >= table.nrows // 2) & (ids == 0)] = 1
        table.columns["id"] = ids
        table.identifiers = dict(enumerate(identifiers))
        write_reflections(table, tmp_path / name)
        return int((ids == 0).sum()), int((ids == 1).sum())

    c, d = two_experiments("eiger_therm/strong.refl", ("C", "D"), "cd.refl")
    e, f = two_experiments("eiger_therm/strong.refl", ("E", "F"), "ef.refl")
    a, b = two_experiments("I23_P12M_thau/indexed.refl", ("A", "B"), "ab.refl")

    def by_experiment(*names):
        result = analyse([tmp_path / name for name in names], require=None)
        return [
            (entry["experiment"], entry["identifier"], entry["n"])
            for entry in result.result.by_experiment
        ]

    assert (c, d, e, f) == (56, 56, 56, 56)
    assert by_experiment("cd.refl", "ef.refl") == [
        (0, "C", c),
        (1, "D", d),
        (2, "E", e),
        (3, "F", f),
    ]
    assert by_experiment("cd.refl", "ab.refl") == [
        (-1, None, 3),
        (0, "C", c),
        (1, "D", d),
        (2, "A", a),
        (3, "B", b),
    ]
    assert a + b == 205 and a > 0 and b > 0


def mpi_unavailable() -> str | None:
    """Why MPI cannot be tested here, or None. Checked in a subprocess: importing
    mpi4py.MPI here would make this process an MPI singleton, which confuses mpirun."""
    if not shutil.which("mpirun"):
        return "mpirun not found (Debian package openmpi-bin)"
    check = subprocess.run(
        [sys.executable, "-c", "from mpi4py import MPI"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check.returncode != 0:
        return f"mpi4py cannot be used here ({check.stderr.strip().splitlines()[-1] if check.stderr.strip() else 'import failed'})"
    return None


MPI_UNAVAILABLE = mpi_unavailable()


@pytest.mark.skipif(MPI_UNAVAILABLE is not None, reason=str(MPI_UNAVAILABLE))
def test_mpi_run_equals_the_serial_run(shared_data, pieces, tmp_path):
    files = sorted(pieces.glob("*.refl"))
    serial = run_json(tmp_path, [shared_data / EXPT, *files], "serial.json")
    command = ["mpirun", "-n", "2", "--oversubscribe"] + (
        ["--allow-run-as-root"] if os.geteuid() == 0 else []
    )
    result = subprocess.run(
        [
            *command,
            SCRIPT,
            str(shared_data / EXPT),
            *map(str, files),
            "mp.method=mpi",
            "output.json=mpi.json",
            "output.html=None",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"{PROGRAM} v") == 1  # rank 0 reports; rank 1 is quiet
    mpi = json.loads((tmp_path / "mpi.json").read_text())
    assert mpi["parameters"]["mp"]["method"] == "mpi"
    assert without_run_details(mpi) == without_run_details(serial)
    assert [d["name"] for d in mpi["selection"]["datasets"]] == [
        d["name"] for d in serial["selection"]["datasets"]
    ]


def test_progress_bar_on_request_and_quiet_otherwise(shared_data, pieces, capsys):
    from dials_spot_size_analysis.parallel.pool import run_serial_or_pool

    settings = _worker_settings()
    files = sorted(pieces.glob("*.refl"))
    run_serial_or_pool(files, settings, 1, progress=True)
    assert "Measuring" in capsys.readouterr().err
    run_serial_or_pool(
        files, settings, 1, progress=None
    )  # stderr is not a terminal here
    assert capsys.readouterr().err == ""


def test_log_lists_the_first_datasets_and_sums_up_the_rest(shared_data):
    from dials_spot_size_analysis.report.text import report_lines

    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    parts = [table.slice_rows(8 * n, 8 * n + 8) for n in range(26)]
    lines = "\n".join(report_lines(analyse(parts, require=None).result))
    assert "... 6 more (all in the JSON)" in lines
    assert "reflections 19" in lines and "reflections 20" not in lines
    assert "(none: unindexed)" in lines  # id -1 rows belong to no experiment


def _worker_settings():
    from dials_spot_size_analysis.algorithms.spot_sizes import MeasureOptions
    from dials_spot_size_analysis.parallel.measure_file import MeasureRequest

    return MeasureRequest(
        experiments=[],
        list_offsets=[],
        have_experiment_lists=False,
        options=MeasureOptions(),
    )


@needs_fork
@pytest.mark.parametrize("failure", ["killed", "bug", "memory"])
def test_a_failing_worker_ends_the_run_with_a_clear_error(pieces, monkeypatch, failure):
    """A worker that dies (e.g. killed for memory), runs out of memory or hits a bug
    stops the run with an error saying so; the parent neither hangs nor returns a
    partial result."""
    from dials_spot_size_analysis.parallel import pool

    measure_sources = pool.measure_sources

    def failing(items, settings, n_sources):
        if any(index == 5 for index, _ in items):
            if failure == "killed":
                os._exit(9)
            if failure == "memory":
                raise MemoryError("Allocation failed (probably too large).")
            raise ZeroDivisionError("planted")
        return measure_sources(items, settings, n_sources)

    monkeypatch.setattr(pool, "measure_sources", failing)
    monkeypatch.setattr(pool, "_read_not_mapped", lambda source: False)  # workers only
    files = sorted(pieces.glob("*.refl"))
    expected = {
        "killed": "exit code 9",
        "bug": "ZeroDivisionError..planted",
        "memory": f"^{re.escape(pool.OUT_OF_MEMORY)}$",
    }
    with pytest.raises(pool.WorkerError, match=expected[failure]):
        pool.run_serial_or_pool(files, _worker_settings(), 2)


def test_workers_measure_every_file_once(pieces):
    from dials_spot_size_analysis.parallel.pool import run_serial_or_pool

    files = sorted(pieces.glob("*.refl"))
    batches = run_serial_or_pool(files, _worker_settings(), 3)
    assert sorted(o.index for b in batches for o in b.outcomes) == list(
        range(len(files))
    )
    [serial] = run_serial_or_pool(files, _worker_settings(), 1)
    assert (
        sum(len(b.spot_sizes) for b in batches) == len(serial.spot_sizes) == 196
    )  # flags.require=Auto, file by file


def _probe_processes(pool, monkeypatch) -> None:
    """Plant a probe in the pool's measuring: each outcome's ``info["pid"]`` is the
    process that measured it, ``info["mapping"]`` whether it could map files. This
    process measures the first chunk it claimed only once a (forked) worker has
    measured one: else a worker slow to start on a loaded machine could find every
    chunk claimed by the parent, and which process measured what would be a race."""
    from dials_spot_size_analysis.formats import source

    measure_sources = pool.measure_sources
    parent = os.getpid()
    a_worker_measured = multiprocessing.get_context("fork").Event()
    parent_waits = [True]  # until its first chunk

    def probed(items, request, n_sources):
        if os.getpid() == parent and parent_waits:
            parent_waits.clear()
            a_worker_measured.wait(timeout=60)
        outcomes = measure_sources(items, request, n_sources)
        for outcome in outcomes:
            outcome.info["pid"] = os.getpid()
            outcome.info["mapping"] = source._MAPPING.get()
        if os.getpid() != parent:
            a_worker_measured.set()
        return outcomes

    monkeypatch.setattr(pool, "measure_sources", probed)


@needs_fork
@pytest.mark.parametrize("mapped", ["none", "the last", "every"])
def test_the_parent_measures_beside_its_workers_only_files_it_reads_whole(
    pieces, monkeypatch, mapped
):
    """With nproc=2 the parent measures chunks itself between receipts, beside one
    worker, but never a file it would memory-map (a truncation would kill it by SIGBUS
    without a sentence): where the first chunk holds one, two workers measure."""
    from dials_spot_size_analysis.parallel import pool

    files = sorted(pieces.glob("*.refl"), key=lambda path: path.stat().st_size)
    sizes = [path.stat().st_size for path in files]
    assert sizes[-2] < sizes[-1]  # one file larger than the rest
    threshold = {"none": sizes[-1] + 1, "the last": sizes[-1], "every": sizes[0]}
    monkeypatch.setattr(pool, "MAP_FROM_BYTES", threshold[mapped])
    [serial] = pool.run_serial_or_pool(files, _worker_settings(), 1)
    _probe_processes(pool, monkeypatch)
    [batch] = pool.run_serial_or_pool(files, _worker_settings(), 2)
    outcomes = sorted(batch.outcomes, key=lambda outcome: outcome.index)
    assert [o.index for o in outcomes] == list(range(len(files)))
    assert batch.spot_sizes.size.tolist() == serial.spot_sizes.size.tolist()
    here = [o.index for o in outcomes if o.info["pid"] == os.getpid()]
    # the parent maps no file, even one grown past the size looked at
    assert [o.index for o in outcomes if not o.info["mapping"]] == here
    assert {o.info["pid"] for o in outcomes} - {os.getpid()}  # a worker took some
    if mapped == "none":
        assert here  # the parent took the first chunk before its worker had started
    elif mapped == "the last":
        assert len(files) - 1 not in here
    else:
        assert here == []


@needs_fork
@pytest.mark.parametrize("nproc, chunk", [(1, 64), (2, 8)])
def test_a_stop_requested_ends_the_measuring_after_the_chunk_in_hand(
    pieces, monkeypatch, nproc, chunk
):
    """A signal that could only be remembered (it landed in numba's loading of a
    kernel) ends the run once this process has measured the chunk in hand: before,
    the run measured every file (and with workers, which stop at once, the parent
    measured all that was left alone, then said a worker had ended early)."""
    from dials_spot_size_analysis.parallel import pool

    measure_sources = pool.measure_sources
    here = []

    def probed(items, request, n_sources):
        if os.getpid() == this_process:
            here.extend(index for index, _ in items)
        return measure_sources(items, request, n_sources)

    def stop():  # as if remembered in this process's first chunk
        if here:
            raise KeyboardInterrupt

    this_process = os.getpid()
    monkeypatch.setattr(pool, "measure_sources", probed)
    files = sorted(pieces.glob("*.refl")) * 20  # 140 files
    with pytest.raises(KeyboardInterrupt):
        pool.run_serial_or_pool(files, _worker_settings(), nproc, stop_requested=stop)
    assert len(here) == chunk


def test_a_stop_requested_is_looked_for_as_workers_batches_arrive(pieces, monkeypatch):
    """Where the parent measures nothing itself (files it would map), a remembered
    signal is still looked for as each worker's batch arrives (it was only looked for
    after the parent's own chunks: every file was measured before the run stopped)."""
    from dials_spot_size_analysis.parallel import pool

    calls = []

    def stop_at_the_second_look():  # the first is before the workers start
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(pool, "_read_not_mapped", lambda source: False)  # workers only
    files = sorted(pieces.glob("*.refl")) * 20
    with pytest.raises(KeyboardInterrupt):
        pool.run_serial_or_pool(
            files, _worker_settings(), 2, stop_requested=stop_at_the_second_look
        )


@needs_fork
@pytest.mark.parametrize("signalled_too", [False, True])
def test_a_worker_stopped_by_a_signal_is_said_to_be(pieces, monkeypatch, signalled_too):
    """A worker interrupted in the middle of a chunk ends with the signal's status (it
    ended with 0, as if done, and the parent measured on); the parent says so, or,
    where it was signalled too, stops for its own signal."""
    from dials_spot_size_analysis.parallel import pool

    measure_sources = pool.measure_sources

    def interrupted(items, request, n_sources):
        if os.getpid() != this_process:
            raise KeyboardInterrupt
        return measure_sources(items, request, n_sources)

    def stop():
        if signalled_too:
            raise KeyboardInterrupt

    this_process = os.getpid()
    monkeypatch.setattr(pool, "measure_sources", interrupted)
    monkeypatch.setattr(pool, "_read_not_mapped", lambda source: False)  # workers only
    files = sorted(pieces.glob("*.refl"))
    expected = (
        pytest.raises(KeyboardInterrupt)
        if signalled_too
        else pytest.raises(
            pool.WorkerError, match="^a worker process was stopped by SIGINT"
        )
    )
    with expected:
        pool.run_serial_or_pool(files, _worker_settings(), 2, stop_requested=stop)


def test_only_bytes_and_files_read_whole_are_measured_by_the_parent(
    shared_data, tmp_path, monkeypatch
):
    from dials_spot_size_analysis.parallel import pool

    table = read_reflections(shared_data / INTEGRATED)
    path = shared_data / INTEGRATED
    assert pool._read_not_mapped(str(path)) and pool._read_not_mapped(path)
    monkeypatch.setattr(pool, "MAP_FROM_BYTES", path.stat().st_size)
    assert not pool._read_not_mapped(path)  # it would be mapped
    assert pool._read_not_mapped(path.read_bytes())
    assert pool._read_not_mapped(tmp_path / "missing.refl")  # its reading says so
    assert not pool._read_not_mapped(table)  # its arrays may be views of a map
    assert not pool._read_not_mapped(memoryview(b"x"))  # perhaps of a map


@needs_fork
def test_a_worker_dying_with_the_claim_lock_does_not_hang_the_parent(
    pieces, monkeypatch
):
    """The parent claims chunks under the lock its workers take: a worker killed while
    holding it would leave the parent waiting for ever, so it looks at its workers
    while it waits, and says how one ended."""
    import signal

    from dials_spot_size_analysis.parallel import pool

    def holding_the_lock_dies(chunks, claimed, lock, *rest):
        lock.acquire()
        time.sleep(0.5)  # the parent has looked at it, found it alive, and waits
        os._exit(9)

    def hung(signum, frame):
        raise AssertionError("the parent waits for ever for the claim lock")

    monkeypatch.setattr(pool, "_worker", holding_the_lock_dies)
    files = sorted(pieces.glob("*.refl")) * 30
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(pool.WorkerError, match="exit code 9"):
            pool.run_serial_or_pool(files, _worker_settings(), 2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_workers_started_by_spawn_give_the_same_batches(pieces, monkeypatch):
    """Where fork is unavailable (macOS, Windows default to spawn), workers start fresh and
    get their work by pickle: same rows, same order once merged."""
    from dials_spot_size_analysis.parallel.pool import run_serial_or_pool

    files = sorted(pieces.glob("*.refl"))
    [serial] = run_serial_or_pool(files, _worker_settings(), 1)
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    batches = sorted(
        run_serial_or_pool(files, _worker_settings(), 2),
        key=lambda b: b.outcomes[0].index,
    )
    assert [o.index for b in batches for o in b.outcomes] == list(range(len(files)))
    assert (
        np.concatenate([b.spot_sizes.size for b in batches]).tolist()
        == serial.spot_sizes.size.tolist()
    )


def test_merge_puts_rows_in_input_order_and_lets_the_batches_go(shared_data, tmp_path):
    """Batches hold files in any order; merging puts their rows in input order and holds
    them once: each batch's arrays are released as they are copied (a million files' rows
    are gigabytes)."""
    from dials_spot_size_analysis.algorithms.spot_sizes import SpotSizes
    from dials_spot_size_analysis.parallel.batches import pack
    from dials_spot_size_analysis.parallel.measure_file import measure_file
    from dials_spot_size_analysis.parallel.merge import merge
    from dials_spot_size_analysis.parallel.pool import run_serial_or_pool

    table = read_reflections(shared_data / INTEGRATED)
    files = []
    for number, start in enumerate(
        range(1991, 2269, 60)
    ):  # the rows with pixel data, in 5 files
        files.append(tmp_path / f"part_{number}.refl")
        write_reflections(table.slice_rows(start, min(start + 60, 2269)), files[-1])
    settings = _worker_settings()
    in_order = merge(run_serial_or_pool(files, settings, 1), []).spot_sizes
    assert np.all(np.diff(in_order.dataset) >= 0) and set(
        in_order.dataset.tolist()
    ) == set(range(5))
    interleaved = [
        [4, 2, 0],
        [3, 1],
    ]  # as no worker pool sends them: rows out of input order within each batch
    batches = [
        pack(
            [measure_file(index, files[index], settings, len(files)) for index in batch]
        )
        for batch in interleaved
    ]
    result = merge(batches, [])
    merged, datasets, skipped = result.spot_sizes, result.datasets, result.skipped
    for name in (
        SpotSizes.__dataclass_fields__
    ):  # NaN d-spacings (no experiments given) compare equal here
        np.testing.assert_array_equal(getattr(merged, name), getattr(in_order, name))
    assert [dataset.name for dataset in datasets] == [
        str(path) for path in files
    ] and not skipped
    assert all(
        getattr(batch.spot_sizes, name) is None
        for batch in batches
        for name in SpotSizes.__dataclass_fields__
    )


@pytest.mark.parametrize("expected_sources", [6, 1])  # 1: the columns must grow
def test_batches_collected_as_they_arrive_merge_to_the_same_rows(
    shared_data, tmp_path, expected_sources
):
    """A pool's batches, gathered into one as they arrive (in any order, some without
    rows), merge to exactly the rows of the batches merged as they are; contiguous runs
    of files are put in input order as they come, so merging need not reorder them; a
    lone batch is kept as it is, not copied."""
    from dials_spot_size_analysis.algorithms.spot_sizes import SpotSizes
    from dials_spot_size_analysis.parallel.batches import BatchCollector, pack
    from dials_spot_size_analysis.parallel.measure_file import measure_file
    from dials_spot_size_analysis.parallel.merge import merge

    table = read_reflections(shared_data / INTEGRATED)
    files = [tmp_path / "no_pixels.refl"]
    write_reflections(table.slice_rows(0, 60), files[0])  # counts no row
    for start in range(1991, 2269, 60):  # the rows with pixel data, in 5 files
        files.append(tmp_path / f"part_{start}.refl")
        write_reflections(table.slice_rows(start, min(start + 60, 2269)), files[-1])
    settings = _worker_settings()

    def batches(groups):
        return [
            pack([measure_file(i, files[i], settings, len(files)) for i in group])
            for group in groups
        ]

    expected = merge(batches([[0, 1], [2, 3, 4], [5]]), [])
    assert len(expected.spot_sizes) == 256
    for arrival, contiguous in [
        ([[5], [0, 1], [2, 3, 4]], True),
        ([[2, 3, 4], [5], [0, 1]], True),
        ([[0], [1], [2], [3], [4], [5]], True),
        ([[5, 3], [0], [1, 2, 4]], False),  # as no pool sends them: merge reorders
    ]:
        collector = BatchCollector(expected_sources)
        for batch in batches(arrival):
            collector.add(batch)
        one = collector.batch()
        assert len(one.spot_sizes) == 256
        if contiguous:
            assert [o.index for o in one.outcomes] == list(range(6))
        merged = merge([one], [])
        for name in SpotSizes.__dataclass_fields__:
            np.testing.assert_array_equal(
                getattr(merged.spot_sizes, name), getattr(expected.spot_sizes, name)
            )
        assert [d.name for d in merged.datasets] == [str(path) for path in files]
    [lone] = batches([[1, 2]])
    collector = BatchCollector(expected_sources)
    collector.add(lone)
    assert collector.batch() is lone


def _made_up_batches(rows_per_file, files_per_batch=64):
    """Batches of ``len(rows_per_file)`` files, each file's rows numbered in order (in
    ``size``), as a pool sends them."""
    from dials_spot_size_analysis.algorithms.spot_sizes import SpotSizes
    from dials_spot_size_analysis.parallel.batches import Batch
    from dials_spot_size_analysis.parallel.measure_file import FileOutcome

    starts = np.cumsum([0, *rows_per_file])
    for first in range(0, len(rows_per_file), files_per_batch):
        files = range(first, min(first + files_per_batch, len(rows_per_file)))
        rows = SpotSizes.empty(int(starts[files[-1] + 1] - starts[first]))
        rows.size[:] = np.arange(starts[first], starts[files[-1] + 1])
        outcomes = [
            FileOutcome(index=i, name=f"{i}", n_rows=int(rows_per_file[i]))
            for i in files
        ]
        yield Batch(rows, outcomes)


def test_batch_collector_sizes_its_columns_once_for_files_alike(monkeypatch):
    """Stills alike: the columns are made once, for the rows the first batches promise
    (a second growth would copy most rows again)."""
    from dials_spot_size_analysis.parallel.batches import BatchCollector

    grown = []
    real_grow = BatchCollector._grow
    monkeypatch.setattr(
        BatchCollector,
        "_grow",
        lambda self, needed, wanted: (
            grown.append(wanted) or real_grow(self, needed, wanted)
        ),
    )
    collector = BatchCollector(10_000)
    for batch in _made_up_batches([112] * 10_000):
        collector.add(batch)
    rows = collector.batch().spot_sizes
    assert rows.size.tolist() == list(range(1_120_000))
    assert grown == [1_400_000]  # 1.25 x the 1,120,000 rows, at the first copy


def test_batch_collector_falls_back_where_its_room_is_refused(monkeypatch):
    """A heavy file among the first makes the rows expected many times the real ones:
    where the system refuses that much address space (a limit on it), the columns grow
    by doubling instead, and every row is there."""
    from dials_spot_size_analysis.algorithms.spot_sizes import SpotSizes
    from dials_spot_size_analysis.parallel.batches import BatchCollector

    real_empty, real_grow = SpotSizes.empty.__func__, BatchCollector._grow
    grown, made = [], []

    def limited(cls, n):
        if n > 10_000_000:  # as a limit on address space would
            raise MemoryError
        made.append(n)
        return real_empty(cls, n)

    monkeypatch.setattr(SpotSizes, "empty", classmethod(limited))
    monkeypatch.setattr(
        BatchCollector,
        "_grow",
        lambda self, needed, wanted: (
            grown.append((needed, wanted)) or real_grow(self, needed, wanted)
        ),
    )
    rows_per_file = [100] * 10_000
    rows_per_file[0] = 2_000_000
    collector = BatchCollector(10_000)
    for batch in _made_up_batches(rows_per_file):
        collector.add(batch)
    rows = collector.batch().spot_sizes
    assert rows.size.tolist() == list(range(2_999_900))
    needed, wanted = grown[0]
    assert wanted > 300_000_000 and needed == 2_006_300  # the first batch's rows
    assert needed in made  # refused the room, it made room for the rows


def test_serial_runs_pack_files_as_they_go(pieces, monkeypatch):
    """In one process too, results are packed a batch of files at a time (each file's
    arrays let go as it is packed); merged, the same rows as one batch of every file."""
    from dials_spot_size_analysis.parallel import batches as batching
    from dials_spot_size_analysis.parallel.merge import merge
    from dials_spot_size_analysis.parallel.pool import run_serial_or_pool

    files = sorted(pieces.glob("*.refl"))
    settings = _worker_settings()
    [whole] = run_serial_or_pool(files, settings, 1)
    monkeypatch.setattr(batching, "FILES_PER_BATCH", 3)
    batches = run_serial_or_pool(files, settings, 1)
    assert [[o.index for o in batch.outcomes] for batch in batches] == [
        [0, 1, 2],
        [3, 4, 5],
        [6],
    ]
    assert merge(batches, []).spot_sizes.size.tolist() == whole.spot_sizes.size.tolist()
    monkeypatch.setattr(batching, "FILES_PER_BATCH", 7)
    assert [len(b.outcomes) for b in run_serial_or_pool(files, settings, 1)] == [7]


@pytest.mark.parametrize("n_experiments", [1, 2])
def test_rows_of_an_experiment_the_identifier_map_does_not_name_are_refused(
    shared_data, tmp_path, n_experiments
):
    """A still's table maps its one id to its identifier; a row with another id is an
    inconsistent file, named in one sentence (one experiment or several)."""
    table = read_reflections(shared_data / "ssx_CuNiR/strong_5.refl")
    ids = np.asarray(table["id"])  # sorted: each experiment's rows are one stretch
    part = table.slice_rows(0, int(np.searchsorted(ids, n_experiments)))
    part.identifiers = {k: table.identifiers[k] for k in range(n_experiments)}
    ids = np.array(part["id"])
    ids[-1] = 7  # no experiment of the map
    part.columns["id"] = ids
    path = tmp_path / "still.refl"
    write_reflections(part, path)
    with pytest.raises(
        Exception,
        match=r"still\.refl has rows with id \[7\] that its identifier map does not "
        r"name: the file is inconsistent",
    ):
        analyse([str(path)], [str(shared_data / "ssx_CuNiR/imported_no_ref_5.expt")])
    ids[-1] = -1  # an unassigned row is fine
    part.columns["id"] = ids
    write_reflections(part, path)
    result = analyse(
        [str(path)], [str(shared_data / "ssx_CuNiR/imported_no_ref_5.expt")]
    )
    experiments = result.result.spot_sizes.experiment.tolist()
    assert experiments[-1] == -1  # counted, with no experiment
    assert set(experiments[:-1]) == set(range(n_experiments))


def _stills(shared_data, folder):
    """Stills as dials.stills_process writes them (each table with its own .expt and
    identifier), of three kinds of columns, one with a corrupt shoebox column and one
    whose ids its identifier map does not name; as (path, its .expt) in input order."""
    kinds = [
        ("eiger_therm/strong.refl", "eiger_therm/imported.expt"),
        ("I23_P12M_thau/indexed.refl", "I23_P12M_thau/indexed.expt"),
        ("I23_P12M_thau/strong.refl", "I23_P12M_thau/imported.expt"),
        (INTEGRATED, EXPT),  # most rows without pixel data
    ]
    order = [0, 0, "bbox", 0, 1, 1, 2, 2, 3, 3, "corrupt", 0, "unnamed", 0, 0]
    stills = []
    for number, kind in enumerate(order):  # text kinds: a changed eiger still
        refl, expt = kinds[0 if isinstance(kind, str) else kind]
        table = read_reflections(shared_data / refl)
        identifier = f"still-{number}"
        table.identifiers = {0: identifier} if kind != "unnamed" else {5: identifier}
        if kind == "bbox":  # two rows whose bbox column is not their shoebox's
            bbox = np.array(table.columns["bbox"])
            bbox[[1, 4], 1] += 1
            table.columns["bbox"] = bbox
        if kind == "corrupt":  # the first record's pixel-data marker: 7
            blob = bytearray(table._shoebox_blob.tobytes())
            blob[28] = 7
            table._shoebox_blob = np.frombuffer(bytes(blob), np.uint8)
            table._shoebox_index = None
        document = json.loads((shared_data / expt).read_text())
        document["experiment"][0]["identifier"] = identifier
        stills.append((folder / f"{identifier}.refl", folder / f"{identifier}.expt"))
        write_reflections(table, stills[-1][0])
        stills[-1][1].write_text(json.dumps(document))
    return stills


def _outcome_fields(outcome) -> dict:
    fields = {
        k: v for k, v in vars(outcome).items() if k not in ("spot_sizes", "compared")
    }
    if outcome.compared is not None:
        fields["compared"] = vars(outcome.compared) | {
            "keys": outcome.compared.keys.tolist()
        }
    if outcome.spot_sizes is not None:
        for name, values in vars(outcome.spot_sizes).items():
            fields[name] = np.asarray(values).tobytes()  # NaN included, bit for bit
    return fields


def test_stills_measured_together_equal_each_measured_alone(
    shared_data, tmp_path, monkeypatch
):
    """Small tables joined for measuring give every file the outcome it has alone:
    rows, counts, experiment numbers, profile model, errors."""
    from dials_spot_size_analysis.algorithms.spot_sizes import MeasureOptions
    from dials_spot_size_analysis.parallel import measure_stills
    from dials_spot_size_analysis.parallel.measure_file import (
        MeasureRequest,
        measure_file,
    )

    stills = _stills(shared_data, tmp_path)
    request = MeasureRequest(
        experiments=[],
        list_offsets=[],
        have_experiment_lists=True,
        options=MeasureOptions(),
        paired_experiments={i: str(expt) for i, (_, expt) in enumerate(stills)},
        compare_spots=True,
    )
    items = [(i, str(refl)) for i, (refl, _) in enumerate(stills)]
    joined_sizes, measure_table = [], measure_stills.measure_table

    def spied(table, geometry, *args, **kwargs):
        joined_sizes.append(len(geometry))  # one experiment per still
        return measure_table(table, geometry, *args, **kwargs)

    monkeypatch.setattr(measure_stills, "measure_table", spied)
    profiled_together, profile_model = [], measure_stills.profile_model

    def spied_profiles(columns, shoeboxes, experiments, **kwargs):
        profiled_together.append(len(experiments))
        return profile_model(columns, shoeboxes, experiments, **kwargs)

    monkeypatch.setattr(measure_stills, "profile_model", spied_profiles)
    together = measure_stills.measure_sources(items, request, len(items))
    # runs of joinable stills alike; the corrupt and the unnamed one alone, the
    # latter without ending the run around it
    assert joined_sizes == [4, 2, 2, 2, 3]
    # the estimates before indexing of a run in one computation; the indexed runs
    # (whose experiments re-predict their reflections) each alone
    assert profiled_together == [4, 2, 3]
    alone = [measure_file(i, source, request, len(items)) for i, source in items]
    assert [o.index for o in together] == list(range(len(items)))
    for joined, single in zip(together, alone):
        assert _outcome_fields(joined) == _outcome_fields(single), single.name
    errors = [o.error for o in together]
    assert "pixel-data marker 7" in errors[10] and "does not name" in errors[12]
    assert sum(error is None for error in errors) == 13
    selections = [o.selection for o in together]
    assert [s.n_bbox_disagreements for s in selections[:4]] == [0, 0, 2, 0]
    assert [s.require for s in selections[4:10]] == [["indexed"]] * 2 + [[]] * 2 + [
        ["indexed"]
    ] * 2
    assert (
        selections[8].n_without_pixel_data == 348 and selections[8].n_bbox_disagreements
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pipes only")
def test_worker_pipes_hold_a_whole_batch_and_a_refusal_is_no_error():
    import fcntl

    from dials_spot_size_analysis.parallel.pool import PIPE_BYTES, _widen

    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    before = fcntl.fcntl(receiver.fileno(), fcntl.F_GETPIPE_SZ)
    _widen(receiver)
    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= PIPE_BYTES
    expected = PIPE_BYTES if allowed or os.geteuid() == 0 else before  # else refused
    assert fcntl.fcntl(receiver.fileno(), fcntl.F_GETPIPE_SZ) == expected
    sender.close()
    receiver.close()
    _widen(receiver)  # closed: its descriptor cannot be had, and nothing is raised
