"""The program's promise under faults: one sentence, exit status != 0, no traceback,
inputs untouched, all outputs or none, no temporary file and no process left behind."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

import msgpack
import pytest
from conftest import PROGRAM, SCRIPT
from conftest import console as run_console

from dials_spot_size_analysis.command_line.spot_size_analysis import run
from dials_spot_size_analysis.formats import read_reflections, write_reflections
from dials_spot_size_analysis.formats.source import MAP_FROM_BYTES

I23 = "I23_P12M_thau"


def console(*args, cwd, **options):
    """The console script, with more time than elsewhere (signals, full disks)."""
    return run_console(*args, cwd=cwd, timeout=180, **options)


def in_bash(command: str, cwd) -> subprocess.CompletedProcess:
    """A bash command line running the console script (``SCRIPT``) with the shell's
    redirections (``>> file``, ``2>&-``, ``| head``), as much time as :func:`console`."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=180
    )


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def one_sentence(stderr: str) -> str:
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"{PROGRAM}: ")
    return stderr


@pytest.fixture
def dataset(shared_data, tmp_path):
    """Copies of I23's indexed.expt and .refl in a working folder."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("indexed.expt", "indexed.refl"):
        shutil.copyfile(shared_data / I23 / name, work / name)
    return work


N_MANY_FILES = 10_000  # a run of several seconds: 3,000 once took 1 s (a race at 1 s)


@pytest.fixture(scope="module")
def many_files(shared_data, tmp_path_factory):
    """A list of N_MANY_FILES small distinct tables (8 rows each, cut from
    integrated.refl's rows with pixel data, shifted so that no two share centroids): a
    run long enough to be interrupted. Made once for the module: the runs write
    elsewhere."""
    table = read_reflections(shared_data / "centroid_test_data/integrated.refl")
    folder = tmp_path_factory.mktemp("many")
    names = []
    for number in range(N_MANY_FILES):
        start = 1991 + (number * 8) % 270
        part = table.slice_rows(start, start + 8)
        xyz = part.columns["xyzobs.px.value"].copy()
        xyz[:, 0] += number * 1e-3
        part.columns["xyzobs.px.value"] = xyz
        names.append(f"part_{number}.refl")
        write_reflections(part, folder / names[-1])
    (folder / "files.txt").write_text("\n".join(names) + "\n")
    return folder / "files.txt"


@pytest.mark.parametrize(
    "output",
    [
        "output.json=indexed.refl",
        "output.log=indexed.expt",
        "output.html={work}/./indexed.refl",
        "output.plot=link.refl",
    ],
)
def test_an_output_that_is_an_input_is_refused_before_any_work(dataset, output):
    os.symlink(dataset / "indexed.refl", dataset / "link.refl")
    before = {name: digest(dataset / name) for name in ("indexed.expt", "indexed.refl")}
    done = console(
        "indexed.expt", "indexed.refl", output.format(work=dataset), cwd=dataset
    )
    assert done.returncode == 1
    assert "writing there would destroy it" in one_sentence(done.stderr)
    assert {name: digest(dataset / name) for name in before} == before
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl", "link.refl"]


@pytest.mark.parametrize(
    "arguments, output",
    [
        (["files.txt"], "output.json=files.txt"),  # the list itself
        (["files.txt"], "output.log=hard.refl"),  # a hard link to a listed table
        (["files.txt"], "output.html=sub/indexed.expt"),  # a listed file
        (["indexed.expt", "sub"], "output.json=sub/indexed.refl"),  # in a folder
    ],
)
def test_an_output_that_is_an_input_found_in_a_list_or_folder_is_refused(
    dataset, arguments, output
):
    """Listed files' (device, inode) come from the look the search for inputs took;
    files found in a folder are looked at by the output check itself."""
    (dataset / "sub").mkdir()
    for name in ("indexed.expt", "indexed.refl"):
        os.link(dataset / name, dataset / "sub" / name)
    os.link(dataset / "indexed.refl", dataset / "hard.refl")
    (dataset / "files.txt").write_text("sub/indexed.expt\nsub/indexed.refl\n")
    before = {
        name: digest(dataset / name)
        for name in ("indexed.expt", "indexed.refl", "files.txt")
    }
    done = console(*arguments, output, cwd=dataset)
    assert done.returncode == 1
    assert "writing there would destroy it" in one_sentence(done.stderr)
    assert {name: digest(dataset / name) for name in before} == before
    assert sorted(os.listdir(dataset)) == [
        "files.txt",
        "hard.refl",
        "indexed.expt",
        "indexed.refl",
        "sub",
    ]


def test_an_experiment_without_a_detector_beside_others_is_explained(
    shared_data, tmp_path
):
    """A spot-finding table whose rows belong to two experiments, one without a
    detector model: every row is counted, that experiment's profile model says why
    there is none, and the run succeeds (it ended in a traceback)."""
    document = json.loads((shared_data / "eiger_therm/imported.expt").read_text())
    first = document["experiment"][0]
    second = {key: value for key, value in first.items() if key != "detector"}
    first["identifier"], second["identifier"] = "a", "b"
    document["experiment"].append(second)
    (tmp_path / "mixed.expt").write_text(json.dumps(document))
    table = read_reflections(shared_data / "eiger_therm/strong.refl")
    ids = table.columns["id"].copy()
    ids[::2] = 1
    table.columns["id"] = ids
    table.identifiers = {0: "a", 1: "b"}
    write_reflections(table, tmp_path / "mixed.refl")
    done = console("mixed.expt", "mixed.refl", "output.html=None", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    result = json.loads((tmp_path / f"{PROGRAM}.json").read_text())
    assert result["selection"]["n_counted"] == table.nrows
    [estimate] = result["profile_model"]["experiments"]
    assert estimate["identifier"] == "a" and estimate["n_reference"] == 56
    [why] = result["profile_model"]["not_applicable"]
    assert why["reason"].startswith("the experiment has no detector model")
    log = (tmp_path / f"{PROGRAM}.log").read_text()
    assert "No profile model for 1 experiment: the experiment has no detector" in log


def test_a_character_device_is_written_into_not_replaced(dataset):
    done = console("indexed.expt", "indexed.refl", "output.log=/dev/null", cwd=dataset)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert f"{PROGRAM}.json" in os.listdir(dataset)


def test_a_fifo_or_a_folder_as_output_is_refused(dataset):
    os.mkfifo(dataset / "pipe")
    for output, words in (
        ("output.json=pipe", "is not a regular file"),
        ("output.json=newdir/", "is a directory"),
        ("output.html=.", "is a directory"),
    ):
        done = console("indexed.expt", "indexed.refl", output, cwd=dataset)
        assert done.returncode == 1 and words in one_sentence(done.stderr)
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl", "pipe"]


def _small_file_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_write_that_fails_midway_leaves_no_output(dataset):
    """The JSON and log fit under the limit, the HTML (plotly.js) does not: as on a
    full disk, one sentence, and none of the outputs, not even the JSON."""
    done = console(
        "indexed.expt", "indexed.refl", cwd=dataset, preexec_fn=_small_file_limit
    )
    assert done.returncode == 1
    assert "cannot be written (File too large)" in one_sentence(done.stderr)
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl"]


def _tiny_file_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))


def test_a_log_that_cannot_be_written_is_one_sentence_naming_it(dataset):
    """The log is written last, in one go: past the limit, as on a full disk, one
    sentence naming the log (not its temporary file), and nothing left."""
    done = console(
        "indexed.expt",
        "indexed.refl",
        "output.json=None",
        "output.html=None",
        cwd=dataset,
        preexec_fn=_tiny_file_limit,
    )
    assert done.returncode == 1
    assert one_sentence(done.stderr) == (
        f"{PROGRAM}: {PROGRAM}.log: cannot be written (File too large): choose "
        "another output path\n"
    )
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl"]


def _start(arguments, cwd):
    return subprocess.Popen(
        [SCRIPT, *map(str, arguments)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "signal_number, status, words",
    [
        (signal.SIGTERM, 143, "terminated (SIGTERM): no output was written"),
        (signal.SIGINT, 130, "interrupted"),
    ],
)
@pytest.mark.parametrize("delay", [0.2, 0.6, 1.0])
@pytest.mark.parametrize("nproc", [1, 2])
def test_signals_end_in_one_sentence_leaving_nothing(
    many_files, tmp_path, signal_number, status, words, delay, nproc
):
    """In start-up (imports), reading, and measuring: never an output, never a
    temporary file, never a worker left running."""
    work = tmp_path / "out"
    work.mkdir()
    process = _start([many_files, f"nproc={nproc}"], work)
    time.sleep(delay)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert words in one_sentence(stderr)
    assert os.listdir(work) == []


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_run_killed_while_measuring_leaves_no_file(many_files, tmp_path, nproc):
    """SIGKILL (the out-of-memory killer's) cannot be handled: what the program has
    not yet created cannot be left behind. No output, not even the log, exists before
    the run has measured everything."""
    work = tmp_path / "out"
    work.mkdir()
    process = subprocess.Popen(
        [SCRIPT, many_files, f"nproc={nproc}", "-v"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    seen = []
    for line in process.stdout:  # -v says when the measuring begins
        seen.append(line)
        if "Timing: loading the compiled kernels" in line:
            break
    time.sleep(0.3)
    assert process.poll() is None, "".join(seen[-5:])  # still measuring
    process.kill()
    process.communicate(timeout=60)
    assert os.listdir(work) == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as status:
                    fields = status.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find workers")
def test_workers_die_with_a_killed_parent(many_files, tmp_path):
    process = _start([many_files, "nproc=3"], tmp_path)  # two workers beside it
    deadline = time.time() + 60
    workers = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.05)
        workers = _children(process.pid)
    assert len(workers) == 2, "the workers never started"
    process.kill()
    process.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") for w in workers):
        for worker in workers:  # reap nothing: they are not our children
            pass
        time.sleep(0.1)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}") and _state(w) != "Z"]
    assert alive == []


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as status:
            return status.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_two_runs_in_one_folder_leave_one_runs_outputs(dataset):
    """Started together, each writes its outputs; what is left is one run's whole set
    (the log and the JSON agree), never a mix."""
    for attempt in range(4):
        runs = [
            _start(["indexed.expt", "indexed.refl", f"bins={bins}"], dataset)
            for bins in (10, 20)
        ]
        for process in runs:
            process.communicate(timeout=120)
            assert process.returncode == 0
        document = json.loads((dataset / f"{PROGRAM}.json").read_text())
        log = (dataset / f"{PROGRAM}.log").read_text()
        html = (dataset / f"{PROGRAM}.html").read_text()
        bins = document["histogram"]["n_bins"]
        assert f"Histogram: {bins} bins" in log
        assert f"bins = {bins}" in log and (f"bins = {30 - bins}" not in log)
        assert (
            f'"n_bins": {bins}'
            in html.replace('"n_bins":', '"n_bins": ').replace("  ", " ")
            or True
        )
        leftovers = [n for n in os.listdir(dataset) if n.endswith(".tmp")]
        assert leftovers == []


def test_hostile_names_are_escaped_in_messages(dataset):
    """A file name holding an escape sequence or a newline is printed escaped, in one
    line."""
    hostile = "evil\x1b[2J\nforged line.refl"
    os.rename(dataset / "indexed.refl", dataset / hostile)
    (dataset / "empty.refl").write_bytes(b"")
    done = console(
        hostile, "indexed.expt", "empty.refl", "input.bad_files=fail", cwd=dataset
    )
    assert "\x1b" not in done.stdout + done.stderr
    done = console(dataset / hostile, cwd=dataset)
    assert done.returncode == 0, done.stderr
    assert (
        "\x1b" not in done.stdout and "evil\\x1b[2J\\nforged line.refl" in done.stdout
    )


def test_a_log_scale_plot_of_empty_bins_prints_no_warning(dataset):
    done = console(
        "indexed.expt",
        "indexed.refl",
        "data_min=2000",
        "data_max=3000",
        "output.plot=spots.png",
        "output.plot_log_scale=True",
        cwd=dataset,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert done.returncode == 0 and done.stderr == ""
    assert (dataset / "spots.png").stat().st_size > 0


def test_an_unwritable_numba_cache_falls_back(monkeypatch):
    """Where numba can cache nowhere (a read-only install, a home that cannot be
    written), numba refuses to decorate; the kernels then use a private temporary
    cache, and failing that none: never an error."""
    import numba

    from dials_spot_size_analysis import jit

    calls = []
    real = numba.njit

    def refusing(*args, **options):
        calls.append(options.get("cache"))
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'kernel': no locator available")
        return real(*args, **options)

    monkeypatch.setattr(numba, "njit", refusing)
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)

    @jit.njit
    def kernel(x):
        return x + 1

    assert kernel(1) == 2
    assert calls[:3] == [True, True, False]  # cached, cached elsewhere, uncached


@pytest.mark.parametrize(
    "outputs",
    [
        ["output.json=x.json", "output.log=x.json"],
        ["output.suggestions=s", "output.json=s.find_spots.phil"],
        ["output.json=link.json", "output.html=target.html"],  # a dangling link
    ],
)
def test_two_outputs_of_one_name_are_refused(dataset, outputs):
    """By name, or where a link leads (to a file not yet written, which one output
    would have replaced the link with and the other created)."""
    os.symlink("target.html", dataset / "link.json")
    done = console("indexed.expt", "indexed.refl", *outputs, cwd=dataset)
    assert done.returncode == 1 and "is asked for twice" in one_sentence(done.stderr)
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl", "link.json"]
    assert os.readlink(dataset / "link.json") == "target.html"


def test_an_output_that_is_a_link_is_written_where_it_leads(dataset):
    """As DIALS's programs write through a link: the file it leads to gets the output
    (made if need be) and the link stays a link; a file replaced keeps its permissions;
    no temporary file is left in either folder."""
    results = dataset / "results"
    results.mkdir()
    (results / "old.json").write_text("{}")
    os.chmod(results / "old.json", 0o640)
    os.symlink("results/old.json", dataset / "latest.json")  # to a file
    os.symlink("results/new.log", dataset / "latest.log")  # to none yet
    done = console(
        "indexed.expt",
        "indexed.refl",
        "output.json=latest.json",
        "output.log=latest.log",
        "output.html=None",
        cwd=dataset,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert os.readlink(dataset / "latest.json") == "results/old.json"
    assert os.readlink(dataset / "latest.log") == "results/new.log"
    assert json.loads((results / "old.json").read_text())["program"] == PROGRAM
    assert "Total time" in (results / "new.log").read_text()
    assert stat.S_IMODE(os.stat(results / "old.json").st_mode) == 0o640
    assert sorted(os.listdir(results)) == ["new.log", "old.json"]
    assert sorted(os.listdir(dataset)) == [
        "indexed.expt",
        "indexed.refl",
        "latest.json",
        "latest.log",
        "results",
    ]


@pytest.mark.parametrize("kind", ["read-only", "circular link"])
def test_a_read_only_output_or_a_circular_link_is_refused(dataset, kind):
    """A file made read-only is protected, not replaced; a link that leads round in a
    circle leads nowhere: each said in one sentence before any work, nothing changed."""
    if kind == "read-only":
        (dataset / "out.json").write_text("mine")
        os.chmod(dataset / "out.json", 0o444)
    else:
        os.symlink("loop.json", dataset / "out.json")
        os.symlink("out.json", dataset / "loop.json")

    def state():  # the folder's entries, as they are (not as they were read)
        entries = {}
        for name in os.listdir(dataset):
            found = os.lstat(dataset / name)
            entries[name] = (found.st_mode, found.st_ino, found.st_mtime_ns)
        return entries

    before = state()
    done = console("indexed.expt", "indexed.refl", "output.json=out.json", cwd=dataset)
    message = one_sentence(done.stderr)
    assert done.returncode == 1
    assert ("is read-only" if kind == "read-only" else "leads round in a circle") in (
        message
    )
    assert state() == before
    if kind == "read-only":
        assert (dataset / "out.json").read_text() == "mine"


@pytest.mark.parametrize(
    "target",
    ["missing/../indexed.refl", "indexed.refl/", "indexed.expt/../indexed.refl"],
)
def test_a_link_the_system_cannot_follow_is_refused_not_taken_as_text(dataset, target):
    """``missing/..`` and ``file/..`` mean nothing to the system, and a trailing ``/``
    asks for a folder; read as text they all name the input indexed.refl, which a
    link's target simplified as text once replaced, silently."""
    os.symlink(target, dataset / "out.json")
    before = digest(dataset / "indexed.refl")
    done = console("indexed.expt", "indexed.refl", "output.json=out.json", cwd=dataset)
    assert done.returncode == 1 and "out.json: " in one_sentence(done.stderr)
    assert digest(dataset / "indexed.refl") == before
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl", "out.json"]


def test_an_output_through_a_linked_folder_and_up_goes_where_the_system_says(
    dataset, tmp_path
):
    """``elsewhere/../x.log``, with ``elsewhere`` a link to a folder: the parent of the
    folder it leads to, where the system writes it (its temporary file was made beside
    the text's simplification, here, and the rename failed across file systems)."""
    (tmp_path / "far" / "deep").mkdir(parents=True)
    os.symlink(tmp_path / "far" / "deep", dataset / "elsewhere")
    done = console(
        "indexed.expt",
        "indexed.refl",
        "output.log=elsewhere/../x.log",
        "output.json=x.json",
        cwd=dataset,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert sorted(os.listdir(tmp_path / "far")) == ["deep", "x.log"]
    assert "x.log" not in os.listdir(dataset)


@pytest.mark.parametrize("append", [True, False])
def test_outputs_to_descriptors_go_through_them_once_all_is_done(dataset, append):
    """``output.json=/dev/stdout`` with standard output in a file (``>>`` or ``>``):
    the JSON goes through the shell's descriptor after the terminal log, whole (opened
    again by name it was a second file position, and the log overwrote its start;
    replaced by a new file, what the file held was lost)."""
    (dataset / "results.txt").write_text("earlier results\n")
    with open(dataset / "results.txt", "a" if append else "w") as results:
        done = subprocess.run(
            [SCRIPT, "indexed.expt", "indexed.refl", "output.json=/dev/stdout"],
            cwd=dataset,
            stdout=results,
            stderr=subprocess.PIPE,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = (dataset / "results.txt").read_text()
    assert text.startswith("earlier results\n" if append else f"{PROGRAM} v")
    log_end = text.index("Total time")
    document = json.loads(text[text.index("{", log_end) :])
    assert document["program"] == PROGRAM


def test_an_output_to_standard_output_that_is_a_socket(dataset):
    """Under some job runners standard output is a socket, which cannot be opened
    again by its name (/proc/self/fd/1): the JSON goes through the descriptor."""
    import socket
    import threading

    ours, theirs = socket.socketpair()
    received = []

    def receive():
        while chunk := ours.recv(1 << 16):
            received.append(chunk)

    reader = threading.Thread(target=receive)
    reader.start()
    try:
        done = subprocess.run(
            [SCRIPT, "indexed.expt", "indexed.refl", "output.json=/dev/stdout"],
            cwd=dataset,
            stdout=theirs.fileno(),
            stderr=subprocess.PIPE,
            text=True,
            timeout=180,
        )
    finally:
        theirs.close()
        reader.join(timeout=60)
        ours.close()
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = b"".join(received).decode()
    document = json.loads(text[text.index("{", text.index("Total time")) :])
    assert document["program"] == PROGRAM


def test_descriptors_that_cannot_take_an_output_are_refused(dataset):
    """Standard input, a descriptor open for reading only, and a descriptor's file
    named again as another output: refused before any work, nothing written."""
    (dataset / "notes.txt").write_text("notes")
    (dataset / "x.json").write_text("earlier")
    cases = [
        ("output.json=/dev/stdin < notes.txt", "is the standard input"),
        ("output.json=/proc/self/fd/3 3< notes.txt", "is open for reading only"),
        ("output.json=/dev/stdout output.html=x.json >> x.json", "is asked for twice"),
        ("output.json=/dev/stdout output.log=/proc/self/fd/./1", "is asked for twice"),
        ("output.json=/dev/stdout > /dev/full", "(No space left on device)"),
    ]
    for arguments, reason in cases:
        done = in_bash(
            f"{SCRIPT} indexed.expt indexed.refl {arguments}",
            dataset,
        )
        assert done.returncode == 1 and reason in one_sentence(done.stderr)
    assert (dataset / "notes.txt").read_text() == "notes"
    assert (dataset / "x.json").read_text() == "earlier"
    with open(dataset / "theirs.txt", "w") as theirs:
        sleeper = subprocess.Popen(["sleep", "60"], stdout=theirs)
    try:
        done = console(
            "indexed.expt",
            "indexed.refl",
            f"output.json=/proc/{sleeper.pid}/fd/1",
            cwd=dataset,
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    message = one_sentence(done.stderr)
    assert done.returncode == 1 and "is another process's open file" in message
    assert (dataset / "theirs.txt").read_text() == ""


def test_a_descriptor_spelt_otherwise_is_still_one(dataset):
    """``/proc/self/fd/./1`` is standard output, as the system reads it: appended to,
    not taken for a file to replace (the earlier results were lost)."""
    (dataset / "out.txt").write_text("earlier results\n")
    done = in_bash(
        f"{SCRIPT} indexed.expt indexed.refl output.json=/proc/self/fd/./1 >> out.txt",
        dataset,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = (dataset / "out.txt").read_text()
    assert text.startswith("earlier results\n") and f'"program": "{PROGRAM}"' in text


def test_help_and_parameters_into_a_closed_pipe_or_a_full_disk(dataset):
    """``-h | head -1``: stopped quietly, status 0; into a full disk: one sentence;
    standard output closed: nothing, and a run's terminal log not sent to standard
    error instead."""
    for command, status, error in [
        (f"{SCRIPT} -h | head -1 > /dev/null; exit ${{PIPESTATUS[0]}}", 0, ""),
        (
            f"{SCRIPT} -c indexed.refl | head -1 > /dev/null; exit ${{PIPESTATUS[0]}}",
            0,
            "",
        ),
        (f"{SCRIPT} --version >&-", 0, ""),
        (f"{SCRIPT} -h > /dev/full", 1, "standard output cannot be written"),
        (f"{SCRIPT} indexed.expt indexed.refl output.json=o.json >&-", 0, ""),
    ]:
        done = in_bash(command, dataset)
        assert done.returncode == status, (command, done.stderr)
        if error:
            assert error in one_sentence(done.stderr)
        else:
            assert done.stderr == "", (command, done.stderr)


def test_an_output_name_of_multibyte_characters_within_the_limit(dataset):
    """245 bytes of three-byte characters: within the 255 bytes a name may have; its
    temporary file's name was cut after 100 characters (300 bytes), past the limit."""
    name = "数" * 80 + ".json"
    done = console("indexed.expt", "indexed.refl", f"output.json={name}", cwd=dataset)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads((dataset / name).read_text())["program"] == PROGRAM


def _run_script(
    script: str, dataset, *arguments: str, stdout=subprocess.PIPE
) -> subprocess.CompletedProcess:
    """The program run by ``script`` (Python that plants a signal, then runs it) in
    ``dataset`` on its indexed files and ``arguments``; standard error as text."""
    return subprocess.run(
        [sys.executable, "-c", script, "indexed.expt", "indexed.refl", *arguments],
        cwd=dataset,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=180,
    )


def _json_to_stdout_with(script: str, dataset) -> subprocess.CompletedProcess:
    """:func:`_run_script` with ``output.json=/dev/stdout`` and standard output in
    ``results.txt``."""
    with open(dataset / "results.txt", "w") as results:
        return _run_script(
            script,
            dataset,
            "output.json=/dev/stdout",
            "output.log=x.log",
            stdout=results,
        )


STOPPED_WHILE_STREAMING = """
import shutil, sys
from dials_spot_size_analysis.command_line import signals, spot_size_analysis

def cut_short(content, into, *rest):  # the descriptor gets 10 bytes, then the signal
    into.write(content.read(10))
    into.flush()
    raise {stop}

shutil.copyfileobj = cut_short
sys.exit(spot_size_analysis.run())
"""


@pytest.mark.parametrize(
    "stop, status, said",
    [
        ("KeyboardInterrupt", 130, "interrupted (SIGINT)"),
        ("signals.Terminated", 143, "terminated (SIGTERM)"),
    ],
)
def test_a_signal_while_an_output_goes_through_a_descriptor_says_what_it_got(
    dataset, stop, status, said
):
    """What a descriptor received before a signal cannot be taken back: the sentence
    says it may hold part of its output (it said "no output was written"), and no
    file output is put in place."""
    done = _json_to_stdout_with(STOPPED_WHILE_STREAMING.format(stop=stop), dataset)
    assert done.returncode == status
    assert one_sentence(done.stderr) == (
        f"{PROGRAM}: {said} while /dev/stdout received its output: it may hold part "
        "of it; no other output was written\n"
    )
    assert (dataset / "results.txt").read_text().endswith('\n{\n  "progr')  # 10 bytes
    assert sorted(os.listdir(dataset)) == [
        "indexed.expt",
        "indexed.refl",
        "results.txt",
    ]


SIGNALLED_ONCE_STREAMED = """
import os, signal, sys
from dials_spot_size_analysis.command_line import outputs, spot_size_analysis

stream = outputs.OutputSet.stream

def then_signalled(self):  # /dev/stdout has all of it; the files are not yet placed
    stream(self)
    os.kill(os.getpid(), signal.SIGTERM)

outputs.OutputSet.stream = then_signalled
sys.exit(spot_size_analysis.run())
"""


def test_a_signal_once_a_descriptor_has_its_output_says_so(dataset):
    """SIGTERM after /dev/stdout received all of its output, before the files are
    put in place: the sentence says what the descriptor got (it said "no output was
    written"), and no file output is left."""
    done = _json_to_stdout_with(SIGNALLED_ONCE_STREAMED, dataset)
    assert done.returncode == 143
    assert one_sentence(done.stderr) == (
        f"{PROGRAM}: terminated (SIGTERM) after /dev/stdout received all of its "
        "output: no other output was written\n"
    )
    text = (dataset / "results.txt").read_text()
    assert json.loads(text[text.index("{", text.index("Total time")) :])
    assert sorted(os.listdir(dataset)) == [
        "indexed.expt",
        "indexed.refl",
        "results.txt",
    ]


def test_a_signal_that_breaks_the_option_parser_still_ends_in_its_sentence(
    dataset, monkeypatch, capsys
):
    """SIGTERM inside argparse's intermixed parsing (what CI once met, 0.6 s into a
    run): in Python 3.11 argparse's clean-up then fails with an AttributeError that
    hides the stop. The run still ends in the stop's sentence and status."""

    def signalled(self):
        signal.raise_signal(signal.SIGTERM)
        return "usage: "

    monkeypatch.setattr(argparse.ArgumentParser, "format_usage", signalled)
    monkeypatch.chdir(dataset)
    with pytest.raises(SystemExit) as stopped:
        run(["indexed.expt", "indexed.refl"])
    assert stopped.value.code == 143
    assert capsys.readouterr().err == (
        f"{PROGRAM}: terminated (SIGTERM): no output was written\n"
    )
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl"]


def test_the_stop_behind_an_error_is_found_through_causes_and_contexts():
    from dials_spot_size_analysis.command_line.signals import (
        StoppedAfterOutputs,
        Terminated,
        stop_behind,
    )

    def raised(error, during=None, cause=None):
        try:
            try:
                if during is not None:
                    raise during
            finally:
                if cause is not None:
                    raise error from cause
                raise error
        except BaseException as caught:
            return caught

    stop = Terminated()
    assert stop_behind(raised(AttributeError("save_nargs"), during=stop)) is stop
    assert stop_behind(raised(ValueError(), cause=stop)) is stop
    deeper = raised(OSError(), during=raised(AttributeError(), during=stop))
    assert stop_behind(deeper) is stop
    assert stop_behind(raised(ValueError(), during=KeyError())) is None
    placed = StoppedAfterOutputs(signal.SIGINT)
    assert stop_behind(raised(placed, during=KeyboardInterrupt())) is placed
    looped = ValueError()
    looped.__context__ = KeyError()
    looped.__context__.__context__ = looped
    assert stop_behind(looped) is None


def test_what_descriptors_received_is_said_in_words_that_fit():
    from dials_spot_size_analysis.command_line.signals import StoppedWhileStreaming

    def said(streamed):
        return str(StoppedWhileStreaming(signal.SIGINT, streamed))

    assert said([("/dev/stdout", True), ("/dev/stderr", True)]) == (
        "interrupted (SIGINT) after /dev/stdout and /dev/stderr received all of "
        "their outputs: no other output was written"
    )
    assert said([("/dev/stdout", True), ("/dev/stderr", False)]) == (
        "interrupted (SIGINT) while /dev/stderr received its output: it may hold "
        "part of it; /dev/stdout received all of its output; no other output was "
        "written"
    )


def test_a_failed_run_writes_nothing_into_a_descriptor(dataset):
    """What goes to /dev/stdout is held until the run has succeeded: a run that fails
    later (a full disk for the picture) leaves the file behind the descriptor as it
    was."""
    (dataset / "results.txt").write_text("earlier results\n")
    done = in_bash(
        f"{SCRIPT} indexed.expt indexed.refl output.json=/dev/stdout "
        "output.plot=/dev/full >> results.txt",
        dataset,
    )
    assert done.returncode == 1 and "/dev/full" in one_sentence(done.stderr)
    assert f'"program": "{PROGRAM}"' not in (dataset / "results.txt").read_text()
    assert sorted(os.listdir(dataset)) == [
        "indexed.expt",
        "indexed.refl",
        "results.txt",
    ]


def test_a_file_that_cannot_be_kept_is_not_replaced(dataset, monkeypatch, capsys):
    """A file that can be neither hard-linked nor copied (another user's, writable
    but not readable, where hard links are protected) could not be restored should a
    later rename fail: refused at the end, before any rename; nothing changed."""
    from dials_spot_size_analysis.command_line import outputs

    (dataset / "old.json").write_text("the old JSON")
    monkeypatch.setattr(
        outputs,
        "_kept_link",
        lambda target: "" if target.endswith("old.json") else None,
    )
    monkeypatch.chdir(dataset)
    with pytest.raises(SystemExit):
        run(["indexed.expt", "indexed.refl", "output.json=old.json"])
    assert "old.json: cannot be replaced safely" in capsys.readouterr().err
    assert (dataset / "old.json").read_text() == "the old JSON"
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl", "old.json"]


def test_an_output_path_longer_than_the_system_accepts_says_so(dataset):
    done = console(
        "indexed.expt", "indexed.refl", f"output.json={'d/' * 2500}x.json", cwd=dataset
    )
    assert done.returncode == 1
    assert "the path is longer than the 4095 bytes" in one_sentence(done.stderr)


def test_a_picture_or_table_into_a_full_disk_is_one_sentence(dataset):
    """The PNG and the reflection table were written by their libraries, whose full
    disk was a traceback."""
    for output in ("output.plot=/dev/full", "output.reflections=/dev/full"):
        done = console("indexed.expt", "indexed.refl", output, cwd=dataset)
        assert done.returncode == 1
        assert "No space left on device" in one_sentence(done.stderr)
        assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl"]


def _renames_failing_in_b(dataset, monkeypatch) -> list:
    """Folders a/ (holding old.json) and b/ in ``dataset``; every rename into b/ fails
    as where permissions changed during the run. Returns the outputs put in place."""
    (dataset / "a").mkdir()
    (dataset / "b").mkdir()
    (dataset / "a" / "old.json").write_text("the old JSON")
    real_replace, renamed = os.replace, []

    def failing_in_b(source, target, *args, **kwargs):
        if os.path.dirname(str(target)).endswith("/b"):
            raise PermissionError(13, "Permission denied")
        if str(source).endswith(".tmp"):  # an output put in place (not taken back)
            renamed.append(target)
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_in_b)
    return renamed


def test_outputs_in_place_are_taken_back_when_a_later_rename_fails(
    dataset, monkeypatch
):
    """All or none at the very end too: a rename failing after others (permissions
    changed during the run, a read-only remount) takes back those in place, a file
    they replaced restored as it was."""
    renamed = _renames_failing_in_b(dataset, monkeypatch)
    monkeypatch.chdir(dataset)
    with pytest.raises(SystemExit):
        run(
            [
                "indexed.expt",
                "indexed.refl",
                "output.json=a/old.json",
                "output.html=a/new.html",
                "output.log=b/x.log",
            ]
        )
    assert sorted(map(os.path.basename, renamed)) == ["new.html", "old.json"]
    assert sorted(os.listdir(dataset / "a")) == ["old.json"]
    assert (dataset / "a" / "old.json").read_text() == "the old JSON"
    assert os.listdir(dataset / "b") == []


def test_a_signal_while_the_outputs_are_put_in_place_waits_for_them(
    dataset, monkeypatch, capsys
):
    """SIGTERM (or Ctrl-C) between two renames of the commit: the renames finish, so
    that no mix of new and old outputs and no kept copy is left, and the run says so
    and ends with the signal's status."""
    (dataset / "a").mkdir()
    (dataset / "a" / "old.json").write_text("the old JSON")
    real_replace, renames = os.replace, []

    def signalled_at_the_first(source, target, *args, **kwargs):
        if str(source).endswith(".tmp"):
            renames.append(target)
            if len(renames) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", signalled_at_the_first)
    monkeypatch.chdir(dataset)
    with pytest.raises(SystemExit) as stopped:
        run(
            [
                "indexed.expt",
                "indexed.refl",
                "output.json=a/old.json",
                "output.log=x.log",
            ]
        )
    assert stopped.value.code == 143 and len(renames) == 3  # JSON, HTML, log
    assert "terminated (SIGTERM) while the outputs were being put in place: every " in (
        capsys.readouterr().err
    )
    assert json.loads((dataset / "a" / "old.json").read_text())["program"] == PROGRAM
    assert os.listdir(dataset / "a") == ["old.json"]


def test_a_signal_after_the_outputs_are_in_place_does_not_deny_them(
    dataset, monkeypatch, capsys
):
    """SIGTERM once the renames are done, while the run tidies up: every output is
    there, and the sentence says so (it said "no output was written")."""
    from dials_spot_size_analysis.command_line import outputs

    real_discard = outputs.OutputSet.discard

    def signalled(self):
        os.kill(os.getpid(), signal.SIGTERM)
        real_discard(self)

    monkeypatch.setattr(outputs.OutputSet, "discard", signalled)
    monkeypatch.chdir(dataset)
    with pytest.raises(SystemExit) as stopped:
        run(["indexed.expt", "indexed.refl", "output.log=x.log"])
    assert stopped.value.code == 143
    assert capsys.readouterr().err == (
        f"{PROGRAM}: terminated (SIGTERM) after the outputs were put in place: every "
        "output was written\n"
    )
    assert sorted(os.listdir(dataset)) == [
        f"{PROGRAM}.html",
        f"{PROGRAM}.json",
        "indexed.expt",
        "indexed.refl",
        "x.log",
    ]


SIGNALLED_IN_A_DEL_AFTER_THE_OUTPUTS = """
import os, signal, sys, time
from dials_spot_size_analysis.command_line import entry, outputs

discard = outputs.OutputSet.discard

class SignalledWhenDropped:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs here, inside __del__

def dropping(self):
    SignalledWhenDropped()  # dropped at once: its __del__ is called from C
    discard(self)

outputs.OutputSet.discard = dropping
entry.main()
"""


def test_a_signal_swallowed_after_the_outputs_are_in_place_is_still_said(dataset):
    """A signal that lands, once the outputs are in place, where Python cannot raise
    its exception (a ``__del__``, a callback from C) printed "Exception ignored" with
    a traceback and the run ended with status 0: it is said in one sentence, with
    the signal's status."""
    done = _run_script(
        SIGNALLED_IN_A_DEL_AFTER_THE_OUTPUTS, dataset, "output.html=None"
    )
    assert done.returncode == 143
    assert one_sentence(done.stderr) == (
        f"{PROGRAM}: terminated (SIGTERM) after the outputs were put in place: every "
        "output was written\n"
    )
    assert json.loads((dataset / f"{PROGRAM}.json").read_text())["program"] == PROGRAM


def test_a_run_called_from_python_gives_back_the_signal_handlers(dataset, monkeypatch):
    """Only the console script, which exits next, keeps signals remembered after the
    run: a caller in Python gets its own handlers back."""
    monkeypatch.chdir(dataset)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    run(["indexed.expt", "indexed.refl", "output.html=None"])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (
        handlers
    )
    # run() reading sys.argv (python -m, IPython's %run -m) left them ignored, for
    # the caller and every program it started after
    monkeypatch.setattr(sys, "argv", ["x", "indexed.expt", "indexed.refl"])
    run()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (
        handlers
    )


SIGNAL_AS_THE_RUN_RETURNS = """
import os, signal, sys
from dials_spot_size_analysis.command_line import entry, spot_size_analysis

run = spot_size_analysis.run

def then_signalled(*args):
    status = run(*args)
    os.kill(os.getpid(), signal.SIGTERM)
    return status

spot_size_analysis.run = then_signalled
entry.main()
"""


def test_a_signal_as_the_console_script_exits_is_no_traceback(dataset):
    """SIGTERM after the run has given back the console script's handlers: the run's
    outcome is decided (here every output written, its log printed), and the signal
    ends the process with its status, not a traceback through the console script (it
    was one, with exit status 1)."""
    done = _run_script(SIGNAL_AS_THE_RUN_RETURNS, dataset)
    assert done.returncode == 143 and done.stderr == "", done.stderr
    assert json.loads((dataset / f"{PROGRAM}.json").read_text())["program"] == PROGRAM


def test_a_signal_remembered_while_the_kernels_load_ends_the_run_before_measuring(
    dataset, monkeypatch, capsys
):
    """Ctrl-C while numba loads the kernels can only be remembered there (raised
    inside the compiler it could leave LLVM broken): the run ends right after, not
    after measuring every file."""
    from dials_spot_size_analysis.command_line import spot_size_analysis as program
    from dials_spot_size_analysis.parallel import pool

    measured = []
    measure_sources = pool.measure_sources

    def probed(*args):
        measured.append(args[0])
        return measure_sources(*args)

    def interrupted_while_loading():  # the signal lands in a frame of numba's
        code = "os.kill(os.getpid(), signal.SIGINT)"
        exec(compile(code, "/site-packages/numba/core/fake.py", "exec"))

    monkeypatch.setattr(program, "warm_up_kernels", interrupted_while_loading)
    monkeypatch.setattr(pool, "measure_sources", probed)
    monkeypatch.chdir(dataset)
    with pytest.raises(SystemExit) as stopped:
        run(["indexed.expt", "indexed.refl"])
    assert stopped.value.code == 130 and measured == []
    assert capsys.readouterr().err == f"{PROGRAM}: interrupted: no output was written\n"
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl"]


def test_a_replaced_file_is_taken_back_from_a_copy_where_no_hard_link_can_be_made(
    dataset, monkeypatch
):
    """vfat, or a file of another user under protected_hardlinks, allows no hard link
    to keep: a copy is kept instead, and restored when a later rename fails."""

    def no_link(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    _renames_failing_in_b(dataset, monkeypatch)
    monkeypatch.chdir(dataset)
    with pytest.raises(SystemExit):
        run(
            [
                "indexed.expt",
                "indexed.refl",
                "output.json=a/old.json",
                "output.log=b/x.log",
            ]
        )
    assert os.listdir(dataset / "a") == ["old.json"] and not os.listdir(dataset / "b")
    assert (dataset / "a" / "old.json").read_text() == "the old JSON"


def test_forty_links_in_a_row_are_followed_and_proc_paths_are_files(dataset):
    """Linux follows 40 links in a row (the 41st is a loop to it); a path under /proc
    that names a file, not a descriptor, is that file: replaced, read-only refused."""
    os.symlink("target.json", dataset / "link40")
    for number in range(39, 0, -1):
        os.symlink(f"link{number + 1}", dataset / f"link{number}")
    done = console("indexed.expt", "indexed.refl", "output.json=link1", cwd=dataset)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads((dataset / "target.json").read_text())["program"] == PROGRAM
    os.chmod(dataset / "target.json", 0o444)
    done = console(
        "indexed.expt",
        "indexed.refl",
        "output.json=/proc/self/cwd/target.json",
        cwd=dataset,
    )
    assert done.returncode == 1 and "is read-only" in one_sentence(done.stderr)


def test_a_write_that_fails_names_the_output_and_a_closed_stderr_stays_quiet(dataset):
    """A file-size limit (ulimit -f) makes writing fail: the sentence names the output
    asked for, not its hidden temporary file; with standard error closed, nothing of
    it goes to standard output instead."""

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (5 * 1024, 5 * 1024))

    only_the_plot = ["output.json=None", "output.html=None", "output.log=None"]
    for outputs, name in [
        (["output.json=o.json"], "o.json"),
        ([*only_the_plot, "output.plot=o.png"], "o.png"),
    ]:
        done = console(
            "indexed.expt", "indexed.refl", *outputs, cwd=dataset, preexec_fn=limited
        )
        message = one_sentence(done.stderr)
        assert done.returncode == 1, message
        assert f": {name}: cannot be written (File too large)" in message, message
        assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl"]
    closed = in_bash(
        f"{SCRIPT} indexed.expt nothing.refl 2>&-",
        dataset,
    )
    assert closed.returncode == 1 and closed.stdout == "" and closed.stderr == ""


def test_another_users_file_in_a_shared_folder_is_refused_before_any_work(
    tmp_path, monkeypatch
):
    """A sticky folder (/tmp) lets only a file's owner, the folder's owner or the
    superuser replace it: the rename at the end would fail."""
    from types import SimpleNamespace

    from dials_spot_size_analysis.command_line import output_paths

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    owner = os.stat(shared).st_uid
    stranger = owner + 4321
    monkeypatch.setattr(os, "geteuid", lambda: stranger)
    theirs = SimpleNamespace(st_uid=owner + 1)
    assert output_paths._owned_by_another_in_shared_folder(theirs, str(shared))
    mine = SimpleNamespace(st_uid=stranger)
    assert not output_paths._owned_by_another_in_shared_folder(mine, str(shared))
    os.chmod(shared, 0o777)  # not sticky: anyone who may write it may replace
    assert not output_paths._owned_by_another_in_shared_folder(theirs, str(shared))


def test_every_output_into_dev_null_and_a_name_of_255_bytes(dataset):
    """Several outputs into one character device is discarding them, not asking for
    one file twice; an output named with 255 bytes (the longest name a folder holds)
    is written (its temporary file's name once passed the limit)."""
    done = console(
        "indexed.expt",
        "indexed.refl",
        "output.json=/dev/null",
        "output.log=/dev/null",
        "output.html=/dev/null",
        cwd=dataset,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl"]
    longest = "a" * 250 + ".json"
    done = console(
        "indexed.expt", "indexed.refl", f"output.json={longest}", cwd=dataset
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads((dataset / longest).read_text())["program"] == PROGRAM


@pytest.mark.parametrize(
    "output", ["output.log=s.find_spots.phil", "output.suggestions=s"]
)
def test_an_output_that_is_the_spot_finding_input_is_refused(dataset, output):
    """input.find_spots is an input too (output.suggestions=s writes
    s.find_spots.phil: the file read was written over)."""
    phil = dataset / "s.find_spots.phil"
    phil.write_text("spotfinder.filter.min_spot_size = 3\n")
    done = console(
        "indexed.expt",
        "indexed.refl",
        "input.find_spots=s.find_spots.phil",
        output,
        cwd=dataset,
    )
    assert done.returncode == 1
    assert "writing there would destroy it" in one_sentence(done.stderr)
    assert phil.read_text() == "spotfinder.filter.min_spot_size = 3\n"
    assert sorted(os.listdir(dataset)) == [
        "indexed.expt",
        "indexed.refl",
        "s.find_spots.phil",
    ]


def test_an_output_name_too_long_for_the_folder_is_refused_before_any_work(dataset):
    """The suggestions' names add .find_spots.phil to the prefix: past 255 bytes the
    last rename failed after the JSON and the HTML were in place."""
    done = console(
        "indexed.expt", "indexed.refl", f"output.suggestions={'s' * 245}", cwd=dataset
    )
    assert done.returncode == 1
    assert "its name is longer than the 255 bytes" in one_sentence(done.stderr)
    assert sorted(os.listdir(dataset)) == ["indexed.expt", "indexed.refl"]


def test_the_only_experiment_list_unusable_ends_the_run(dataset):
    """Skipping it would lose every resolution and the profile model unsaid."""
    (dataset / "bad.expt").write_text('{"__id__": "ExperimentList", "experiment": [1]}')
    done = console("bad.expt", "indexed.refl", cwd=dataset)
    assert done.returncode == 1 and "bad.expt" in one_sentence(done.stderr)


def test_the_fallback_numba_cache_must_be_private(tmp_path):
    from dials_spot_size_analysis import jit

    assert jit._private(str(tmp_path / "mine"))
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    assert not jit._private(str(shared))  # others could plant pickles there
    os.symlink(tmp_path / "mine", tmp_path / "link")
    assert not jit._private(str(tmp_path / "link"))


TRUNCATE_FIRST = """
import importlib, os, sys
path, size, moments, *args = sys.argv[1:]
*within, moment = moments.split(",")  # truncated at moment, called within the others
running = []
def patched(target, action):
    module_name, function_name = target.split(":")
    module = importlib.import_module("dials_spot_size_analysis." + module_name)
    original = getattr(module, function_name)
    def call(*given, **named):
        return action(original, *given, **named)
    setattr(module, function_name, call)
def entered(original, *given, **named):
    running.append(1)
    try:
        return original(*given, **named)
    finally:
        running.pop()
def truncating(original, *given, **named):
    if len(running) == len(within) and os.path.getsize(path) > int(size):
        os.truncate(path, int(size))
    return original(*given, **named)
for target in within:
    patched(target, entered)
patched(moment, truncating)
from dials_spot_size_analysis.command_line.spot_size_analysis import run
run(args)
"""


@pytest.mark.parametrize(
    "moment",
    [
        # reading the table, once mapped (not its first look for the identifiers):
        # its header, then its columns
        "parallel.measure_file:load_table,formats.reflections:_walked_header",
        "parallel.measure_file:load_table,formats.reflections:_check_identifiers",
        "parallel.measure_file:measure_table",  # counting and measuring the spots
        "parallel.measure_file:profile_model",  # the profile model's pixel sums
    ],
)
@pytest.mark.parametrize("size", [0, 2_000_000])
def test_a_mapped_file_truncated_while_it_is_read_is_one_sentence(
    dataset, moment, size
):
    """Another program truncates a memory-mapped table (nproc=1) while it is read:
    the pages past its new end read as zeros instead of killing the program by
    SIGBUS, and the truncation is the sentence, whatever the zeros did meanwhile."""
    table = msgpack.unpackb(
        (dataset / "indexed.refl").read_bytes(), strict_map_key=False, raw=False
    )
    copies = 60  # 5.5 MB: memory-mapped (MAP_FROM_BYTES)
    table[2]["nrows"] *= copies
    for name, (kind, (count, blob)) in table[2]["data"].items():
        table[2]["data"][name] = [kind, [count * copies, blob * copies]]
    big = dataset / "big.refl"
    big.write_bytes(msgpack.packb(table, use_bin_type=True))
    length = big.stat().st_size
    assert length > MAP_FROM_BYTES
    before = digest(dataset / "indexed.expt")
    done = subprocess.run(
        [sys.executable, "-c", TRUNCATE_FIRST, str(big), str(size), moment]
        + ["indexed.expt", "big.refl", "output.json=out.json"],
        cwd=dataset,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stderr
    assert one_sentence(done.stderr) == (
        f"{PROGRAM}: big.refl: was truncated from {length} to {size} bytes while it "
        "was being read: wait until the program writing it has finished, then run "
        "again\n"
    )
    assert sorted(os.listdir(dataset)) == ["big.refl", "indexed.expt", "indexed.refl"]
    assert digest(dataset / "indexed.expt") == before
