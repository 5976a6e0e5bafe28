"""
How big are my spots? Counts, for every selected reflection, the shoebox pixels carrying a
mask code (by default Foreground: the signal pixels found by spot finding, summed over all
images a spot touches) and histograms those sizes exactly as the DIALS "Python scripting"
tutorial does with scitbx flex.histogram, with statistics and breakdowns per experiment,
panel, image and resolution shell.

Reflection files need shoeboxes: dials.find_spots writes them (strong.refl) and dials.index
and dials.refine pass them on; dials.integrate keeps them only with
integration.debug.output=True.

Examples::

  dials.spot_size_analysis indexed.expt indexed.refl

  dials.spot_size_analysis indexed.expt indexed.refl bins=100 data_max=Auto

  dials.spot_size_analysis imported.expt strong.refl mask_code=Valid+Foreground

  dials.spot_size_analysis refined.expt refined.refl flags.require=used_in_refinement

  dials.spot_size_analysis indexed.expt indexed.refl flags.require=None flags.exclude=overloaded

  dials.spot_size_analysis indexed.expt indexed.refl output.plot=spot_sizes.png

Many files (a folder, a quoted glob, or a text file listing them; a .refl and the .expt of
the same name beside it are a pair), over every core or MPI ranks::

  dials.spot_size_analysis stills/ nproc=Auto

  mpirun -n 16 dials.spot_size_analysis files.txt mp.method=mpi
"""

from __future__ import annotations

import contextlib
import gc
import glob
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterable

import libtbx.phil

from .. import __version__
from ..algorithms.flags import UnknownFlagError
from ..algorithms.spot_sizes import SelectionError
from ..api import (
    PROGRAM,
    AnalysisResult,
    ParameterError,
    UnusableFilesError,
    analyse_sources,
    changed_parameters,
    normalise_choice_argument,
    resolved_parameters,
)
from ..engine import warm_up
from ..formats import FileFormatError, read_experiments
from ..formats.source import describe_content, without_compression_suffix
from ..phil import phil_scope
from ..processing import collection_paused, pair_by_name
from ..report.document import compact_json_pieces
from ..report.text import report_lines

logger = logging.getLogger(PROGRAM)
help_message = __doc__
usage = f"{PROGRAM} [options] [experiments.expt] reflections.refl [parameter=value ...] [file.phil]"


_STATE = {"quiet": False}
_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """A problem the user can fix: printed as one sentence, exit status 1."""


@dataclass
class CommandLine:
    reflection_files: list[str] = field(default_factory=list)
    experiment_files: list[str] = field(default_factory=list)
    phil_sources: list = field(default_factory=list)
    show_help: int = 0
    show_config: bool = False
    attributes_level: int = 0
    expert_level: int = 0
    verbose: int = 0


REFLECTION_SUFFIXES = (".refl", ".pickle")
DIALS_SUFFIXES = (".refl", ".expt")
MAX_LIST_BYTES = 1 << 26
LIST_SNIFF_LINES = 20
EXPERIMENT_SUFFIXES = (".expt", ".json")


def _inner_name(path: str) -> str:
    """The lower-case name without a compression suffix."""
    return without_compression_suffix(path.lower())


def _file_kind(path: str) -> str:
    """'reflections', 'experiments', 'phil' or 'list' (a text file naming other files).
    DIALS's own suffixes decide at once (thousands of files need no sniffing); any other
    file is recognised by its content."""
    name = _inner_name(path)
    if name.endswith(REFLECTION_SUFFIXES) or name != path.lower():
        return "experiments" if name.endswith(EXPERIMENT_SUFFIXES) else "reflections"
    if name.endswith(EXPERIMENT_SUFFIXES):
        return "experiments"
    if name.endswith(".phil"):
        return "phil"
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    if not head:
        raise UserError(f"{path}: is empty (0 bytes): was it written completely?")
    if head[:1] in (b"\x80", b"\x93", b"\xdc", b"\xdd") or head.startswith(b"\x89HDF"):
        return (
            "reflections"  # msgpack, or a legacy pickle / HDF5 that the reader explains
        )
    if head.lstrip()[:1] == b"{":
        return "experiments"
    if _listed_paths(path, sniff=True):
        return "list"
    try:
        libtbx.phil.parse(head.decode("utf-8"), process_includes=False)
        return "phil"
    except Exception:  # not PHIL either: say what it looks like
        pass
    raise UserError(
        f"{path}: is not a DIALS experiment list, reflection table, list of files or PHIL file: it looks like {describe_content(head)}"
    )


def _listed_paths(path: str, sniff: bool = False) -> list[str]:
    """The files a list file names (one per line, '#' comments; relative paths are
    relative to the list's folder), or [] if ``path`` is not such a list. A list is
    recognised by its first lines naming existing files (``sniff`` resolves only those);
    a later missing file is reported when it is read."""
    try:
        if os.path.getsize(path) > MAX_LIST_BYTES:
            return []
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    folder = os.path.dirname(path)
    lines = [
        line
        for line in map(str.strip, text.splitlines())
        if line and not line.startswith("#")
    ]
    if sniff:
        lines = lines[:LIST_SNIFF_LINES]
    resolved = [
        os.path.join(folder, line) for line in lines
    ]  # an absolute line stays as it is
    if not resolved or not all(
        os.path.exists(p) or _is_glob(p) for p in resolved[:LIST_SNIFF_LINES]
    ):
        return []
    return resolved


def _is_glob(argument: str) -> bool:
    return "*" in argument or "?" in argument or "[" in argument


class _SeenFiles:
    """Files already added, by absolute path (the working folder is looked up once, not
    once per file: lists name thousands)."""

    def __init__(self) -> None:
        self.folder = os.getcwd()
        self.paths: set[str] = set()

    def first_time(self, path: str) -> bool:
        key = os.path.normpath(os.path.join(self.folder, path))  # os.path.abspath
        if key in self.paths:
            return False
        self.paths.add(key)
        return True


def _expand(argument: str, command_line: "CommandLine", seen: _SeenFiles) -> None:
    """Add the files ``argument`` names: a file, a directory (searched recursively for
    DIALS files), a glob pattern, or a list file."""
    if _inner_name(argument).endswith(DIALS_SUFFIXES) and not _is_glob(
        argument
    ):  # read (and checked) later
        _add_file(argument, command_line, seen)
        return
    if os.path.isdir(argument):
        found = []
        for folder, _, names in os.walk(argument):
            for name in names:
                inner = _inner_name(name)
                if inner.endswith(DIALS_SUFFIXES):
                    found.append(os.path.join(folder, name))
        if not found:
            raise UserError(f"{argument}: is a directory without .refl or .expt files")
        for path in sorted(found):
            _add_file(path, command_line, seen)
        return
    if not os.path.exists(argument) and _is_glob(argument):
        matches = sorted(glob.glob(argument, recursive=True))
        if not matches:
            raise UserError(f"{argument}: no file matches this pattern")
        for match in matches:
            _expand(match, command_line, seen)
        return
    _add_file(argument, command_line, seen)


def _add_file(path: str, command_line: "CommandLine", seen: _SeenFiles) -> None:
    if not seen.first_time(path):
        return
    kind = _file_kind(path)
    if kind == "phil":
        command_line.phil_sources.append(_phil_file(path))
    elif kind == "experiments":
        command_line.experiment_files.append(path)
    elif kind == "reflections":
        command_line.reflection_files.append(path)
    else:
        for listed in _listed_paths(path):
            _expand(listed, command_line, seen)


def parse_command_line(args: list[str], phil=phil_scope) -> CommandLine:
    command_line = CommandLine()
    interpreter = phil.command_line_argument_interpreter(home_scope="")
    seen = _SeenFiles()
    arguments = iter(args)
    for argument in arguments:
        if argument in ("-h", "--help") or (
            argument.startswith("-h") and set(argument[1:]) == {"h"}
        ):
            command_line.show_help = (
                max(1, argument.count("h")) if argument != "--help" else 1
            )
        elif argument == "-c":
            command_line.show_config = True
        elif argument.startswith("-a") and set(argument[1:]) == {"a"}:
            command_line.attributes_level += len(argument) - 1
        elif argument.startswith("-e") and set(argument[1:]) == {"e"}:
            command_line.expert_level += len(argument) - 1
        elif argument.startswith("-v") and set(argument[1:]) == {"v"}:
            command_line.verbose += len(argument) - 1
        elif argument == "--phil" or argument.startswith("--phil="):
            path = argument.partition("=")[2] or next(arguments, None)
            if not path:
                raise UserError("--phil needs a file name")
            command_line.phil_sources.append(_phil_file(path))
        elif argument.startswith("-") and not os.path.exists(argument):
            raise UserError(f"unknown option {argument}: see {PROGRAM} -h")
        elif (
            "=" in argument and not os.path.exists(argument) and not _is_glob(argument)
        ):
            try:
                command_line.phil_sources.append(
                    interpreter.process(arg=normalise_choice_argument(argument))
                )
            except Exception as error:  # libtbx raises Sorry or RuntimeError
                raise UserError(_phil_message(error, argument)) from None
        elif not os.path.exists(argument) and not _is_glob(argument):
            raise UserError(
                f"{argument}: no such file or directory (parameters are given as name=value)"
            )
        else:
            _expand(argument, command_line, seen)
    return command_line


def _phil_file(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return libtbx.phil.parse(
                handle.read(), source_info=path, process_includes=False
            )
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    except Exception as error:
        raise UserError(_phil_message(error, path)) from None


def _phil_message(error: Exception, where: str) -> str:
    text = " ".join(str(error).split())
    text = text.replace(" (command line argument, line 1)", "")
    if (
        "Unknown command line parameter definition" in text
        or "Unknown parameter" in text
    ):
        return f"{where}: unknown parameter: see {PROGRAM} -c for the parameters and their names"
    return f"{where}: {text}"


def _extract(command_line: CommandLine, phil):
    try:
        working = (
            phil.fetch(sources=command_line.phil_sources)
            if command_line.phil_sources
            else phil
        )
        params = working.extract()
    except Exception as error:
        raise UserError(_phil_message(error, "parameters")) from None
    return params


@contextlib.contextmanager
def atomic_output(path: str):
    """A temporary file beside ``path``, renamed onto it only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
        )
    except OSError as error:
        raise UserError(
            f"{path}: cannot be written ({error.strerror}): choose another output path"
        ) from None
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _check_writable(path: str | None) -> None:
    if not path:
        return
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory: choose a file name for this output")
    try:
        with tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(path))):
            pass
    except OSError as error:
        raise UserError(
            f"{path}: cannot be written ({error.strerror}): choose another output path"
        ) from None


@contextlib.contextmanager
def logging_to(log_path: str | None, verbose: int, quiet: bool = False):
    """Informative lines to the terminal (stdout) and the log file, as DIALS programs do;
    the log file appears only when the run succeeds. ``quiet``: nothing at all (MPI ranks
    other than 0)."""
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [] if quiet else [console]
    with contextlib.ExitStack() as stack:
        if log_path:
            temporary = stack.enter_context(atomic_output(log_path))
            file_handler = logging.FileHandler(temporary, mode="w", encoding="utf-8")
            file_handler.setFormatter(logging.Formatter("%(message)s"))
            handlers.append(file_handler)
        for handler in handlers:
            logger.addHandler(handler)
            logging.getLogger("dials_spot_size_analysis").addHandler(handler)
        try:
            yield
        finally:
            for handler in handlers:
                logger.removeHandler(handler)
                logging.getLogger("dials_spot_size_analysis").removeHandler(handler)
                handler.close()


def _show_help(command_line: CommandLine, phil) -> None:
    print(f"Usage: {usage}\n")
    print(help_message.strip())
    print(
        "\nParameters (name=value; any unique suffix of a name works, e.g. bins=100):\n"
    )
    phil.show(
        attributes_level=max(command_line.attributes_level, command_line.show_help),
        expert_level=command_line.expert_level,
    )


def _read_experiment_lists(paths: list[str], params):
    """Experiment lists in order, and those skipped (with ``input.bad_files=skip``)."""
    lists, skipped = [], []
    for path in paths:
        try:
            lists.append((path, read_experiments(path)))
        except FileFormatError as error:
            if params.input.bad_files == "fail":
                raise
            skipped.append({"file": path, "reason": str(error)})
    return lists, skipped


MAX_FILES_LISTED = 20


def _log_inputs(analysis: AnalysisResult) -> None:
    tables = [entry for entry in analysis.inputs if "reflections" in entry]
    lists = [entry for entry in analysis.inputs if "n_experiments" in entry]
    for entry in lists[:MAX_FILES_LISTED]:
        n = entry["n_experiments"]
        logger.info(
            "Read %d experiment%s from %s",
            n,
            "" if n == 1 else "s",
            entry["experiments"],
        )
    for entry in tables[:MAX_FILES_LISTED]:
        logger.info(
            "Read %d reflections from %s (table version %d, %s)",
            entry["n_rows"],
            entry["reflections"],
            entry["table_version"],
            "with shoeboxes" if entry["has_shoeboxes"] else "no shoebox column",
        )
        for name in entry["skipped_columns"]:
            logger.info("  column %s skipped: it cannot be read portably", name)
    if len(tables) > MAX_FILES_LISTED or len(lists) > MAX_FILES_LISTED:
        logger.info(
            "... %d reflection files (%d reflections) and %d experiment lists in all; every file is listed in the JSON",
            len(tables),
            sum(entry["n_rows"] for entry in tables),
            len(lists),
        )
    if analysis.skipped_files:
        logger.info(
            "\nSkipped %d file(s) that could not be used (input.bad_files=skip):",
            len(analysis.skipped_files),
        )
        for entry in analysis.skipped_files[:MAX_FILES_LISTED]:
            logger.info("  %s", entry["reason"])
        if len(analysis.skipped_files) > MAX_FILES_LISTED:
            logger.info(
                "  ... and %d more, all listed in the JSON",
                len(analysis.skipped_files) - MAX_FILES_LISTED,
            )


def _mpi_communicator(params):
    """MPI.COMM_WORLD for mp.method=mpi (None otherwise)."""
    if params.mp.method != "mpi":
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError(
            "mp.method=mpi needs mpi4py (pip install mpi4py) and a start by mpirun"
        ) from None
    return MPI.COMM_WORLD


def write_text(text: str | Iterable[str], path: str) -> None:
    """``text``, or its pieces one after another, into ``path``: whole, or not at all."""
    with atomic_output(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines([text] if isinstance(text, str) else text)


def write_json(document: dict, path: str) -> None:
    """Indented for people; compact (and several times faster to write) for documents
    describing thousands of files, written a piece at a time."""
    if len(document["inputs"]) <= COMPACT_JSON_INPUTS:
        write_text(json.dumps(document, indent=2) + "\n", path)
    else:
        write_text(itertools.chain(compact_json_pieces(document), ["\n"]), path)


COMPACT_JSON_INPUTS = 500


def run(args: list[str] | None = None, phil=phil_scope) -> AnalysisResult | None:
    """The program. ``run([...])`` returns the result (None after -h or -c); ``run()``, as
    the console script calls it, reads ``sys.argv`` and returns None, so that the script's
    ``sys.exit(run())`` exits 0. Any problem the user can fix ends in one sentence on
    stderr and ``SystemExit(1)``."""
    from_console = args is None
    args = sys.argv[1:] if from_console else list(args)
    _STATE["quiet"] = False
    try:
        with (
            collection_paused()
        ):  # the results of thousands of files, then their reports
            result = _run(args, phil)
        return None if from_console else result
    except (
        UserError,
        FileFormatError,
        SelectionError,
        ParameterError,
        UnknownFlagError,
        UnusableFilesError,
    ) as error:
        if not _STATE["quiet"]:  # under MPI, rank 0 speaks for all
            print(f"{PROGRAM}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if (
            from_console
        ):  # the interpreter exits next: spare it a last walk over every object
            gc.freeze()  # (numba's alone: 0.1 s)


def _run(args: list[str], phil) -> AnalysisResult | None:
    if not args:
        _show_help(CommandLine(show_help=1), phil)
        return None
    command_line = parse_command_line(args, phil)
    if command_line.show_help:
        _show_help(command_line, phil)
        return None
    params = _extract(command_line, phil)
    if command_line.show_config:
        phil.format(python_object=params).show(
            attributes_level=command_line.attributes_level,
            expert_level=command_line.expert_level,
        )
        return None
    if not command_line.reflection_files:
        raise UserError(
            "no reflection file given: pass a .refl file (with its .expt), e.g. indexed.expt indexed.refl"
        )
    resolved_parameters(params)  # parameter errors before any work
    comm = _mpi_communicator(params)
    is_root = comm is None or comm.Get_rank() == 0
    _STATE["quiet"] = not is_root
    outputs = params.output
    if is_root:
        for output in (outputs.log, outputs.json, outputs.html, outputs.plot):
            _check_writable(output)
    started = time.perf_counter()
    with logging_to(
        outputs.log if is_root else None, command_line.verbose, quiet=not is_root
    ):
        logger.info("%s v%s", PROGRAM, __version__)
        changed = changed_parameters(params)
        logger.info(
            f"The following parameters have been modified:\n{changed}\n"
            if changed
            else "All parameters have their default values.\n"
        )
        pairs, shared_experiment_files = pair_by_name(
            command_line.reflection_files, command_line.experiment_files
        )
        experiment_lists, skipped = _read_experiment_lists(
            shared_experiment_files, params
        )
        warm_up(probe_blas=False)  # this process runs only our kernels
        analysis = analyse_sources(
            command_line.reflection_files,
            experiment_lists,
            params,
            comm=comm,
            skipped_files=skipped,
            paired_experiments=pairs,
        )
        if analysis is None:  # an MPI rank other than 0: rank 0 reports
            return None
        _log_inputs(analysis)
        logger.info("")
        for line in report_lines(analysis.result):
            logger.info(line)
        logger.info("")
        if outputs.json:
            logger.info("Writing JSON to %s", outputs.json)
            write_json(analysis.as_dict(), outputs.json)
        if outputs.html:
            from ..report.html import html_report

            logger.info("Writing HTML report to %s", outputs.html)
            write_text(html_report(analysis, changed), outputs.html)
        if outputs.plot:
            from ..report.png import histogram_png

            logger.info("Writing histogram plot to %s", outputs.plot)
            with atomic_output(outputs.plot) as temporary:
                histogram_png(
                    analysis.result, temporary, log_scale=outputs.plot_log_scale
                )
        logger.info("Total time: %.2f s", time.perf_counter() - started)
    return analysis


if __name__ == "__main__":
    run()
