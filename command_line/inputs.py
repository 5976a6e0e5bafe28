"""What the arguments name: reflection tables, experiment lists, PHIL files and
parameters, found in files, folders, globs and lists of files; and which experiment
list belongs to which table."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import libtbx.phil

from ..errors import SpotSizeAnalysisError
from ..formats import FileFormatError, read_experiments
from ..formats.experiments import ExperimentList
from ..formats.source import describe_content, without_compression_suffix
from ..phil.parameters import normalise_choice_argument

REFLECTION_SUFFIXES = (".refl", ".pickle")
DIALS_SUFFIXES = (".refl", ".expt")
EXPERIMENT_SUFFIXES = (".expt", ".json")
MAX_LIST_BYTES = 1 << 26
LIST_SNIFF_LINES = 20
_PARAMETER = re.compile(r"^[A-Za-z_][\w.]*=")


class InputError(SpotSizeAnalysisError):
    """An argument that names nothing usable: a missing file, an empty folder, ..."""


@dataclass
class Inputs:
    """The files and parameters the arguments name, in order."""

    reflection_files: list[str] = field(default_factory=list)
    experiment_files: list[str] = field(default_factory=list)
    phil_sources: list = field(default_factory=list)


def _inner_name(path: str) -> str:
    """The lower-case name without a compression suffix."""
    return without_compression_suffix(path.lower())


def _is_glob(argument: str) -> bool:
    return "*" in argument or "?" in argument or "[" in argument


def phil_message(error: Exception, where: str) -> str:
    """libtbx.phil's complaint as one sentence about ``where``."""
    text = " ".join(str(error).split())
    text = text.replace(" (command line argument, line 1)", "")
    if (
        "Unknown command line parameter definition" in text
        or "Unknown parameter" in text
    ):
        return f"{where}: unknown parameter: see dials.spot_size_analysis -c for the parameters and their names"
    return f"{where}: {text}"


def phil_file(path: str):
    """A parsed PHIL file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return libtbx.phil.parse(
                handle.read(), source_info=path, process_includes=False
            )
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    except Exception as error:  # libtbx raises Sorry, RuntimeError, ...
        raise InputError(phil_message(error, path)) from None


def _listed_paths(path: str, sniff: bool = False) -> list[str]:
    """The files a list file names (one per line, '#' comments; relative paths are
    relative to the list's folder), or [] if ``path`` is not such a list. A list is
    recognised by its first lines naming existing files (``sniff`` resolves only
    those); a later missing file is reported when it is read."""
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
    resolved = [os.path.join(folder, line) for line in lines]  # absolute lines stay
    head = resolved[:LIST_SNIFF_LINES]
    if not resolved or not all(os.path.exists(p) or _is_glob(p) for p in head):
        return []
    return resolved


def _file_kind(path: str) -> str:
    """'reflections', 'experiments', 'phil' or 'list' (a text file naming other files).
    DIALS's own suffixes decide at once (thousands of files need no sniffing); any
    other file is recognised by its content."""
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
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    if not head:
        raise InputError(f"{path}: is empty (0 bytes): was it written completely?")
    if head[:1] in (b"\x80", b"\x93", b"\xdc", b"\xdd") or head.startswith(b"\x89HDF"):
        return "reflections"  # msgpack, or a pickle / HDF5 that the reader explains
    if head.lstrip()[:1] == b"{":
        return "experiments"
    if _listed_paths(path, sniff=True):
        return "list"
    try:
        libtbx.phil.parse(head.decode("utf-8"), process_includes=False)
        return "phil"
    except Exception:  # noqa: BLE001 (not PHIL either: say what it looks like)
        pass
    raise InputError(
        f"{path}: is not a DIALS experiment list, reflection table, list of files or PHIL file: it looks like {describe_content(head)}"
    )


class _Finder:
    """Files found so far, each once (by absolute path; the working folder is looked
    up once, not once per file: lists name thousands)."""

    def __init__(self) -> None:
        self.folder = os.getcwd()
        self.seen: set[str] = set()
        self.inputs = Inputs()

    def add_file(self, path: str) -> None:
        key = os.path.normpath(os.path.join(self.folder, path))
        if key in self.seen:
            return
        self.seen.add(key)
        kind = _file_kind(path)
        if kind == "phil":
            self.inputs.phil_sources.append(phil_file(path))
        elif kind == "experiments":
            self.inputs.experiment_files.append(path)
        elif kind == "reflections":
            self.inputs.reflection_files.append(path)
        else:
            for listed in _listed_paths(path):
                self.expand(listed)

    def expand(self, argument: str) -> None:
        """Add the files ``argument`` names: a file, a folder (searched recursively
        for DIALS files), a glob pattern, or a list file."""
        if _inner_name(argument).endswith(DIALS_SUFFIXES) and not _is_glob(argument):
            self.add_file(argument)  # read (and checked) later
        elif os.path.isdir(argument):
            self._add_folder(argument)
        elif not os.path.exists(argument) and _is_glob(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                raise InputError(f"{argument}: no file matches this pattern")
            for match in matches:
                self.expand(match)
        else:
            self.add_file(argument)

    def _add_folder(self, folder: str) -> None:
        found = [
            os.path.join(parent, name)
            for parent, _, names in os.walk(folder)
            for name in names
            if _inner_name(name).endswith(DIALS_SUFFIXES)
        ]
        if not found:
            raise InputError(f"{folder}: is a directory without .refl or .expt files")
        for path in sorted(found):
            self.add_file(path)


def find_inputs(arguments: Sequence[str], phil) -> Inputs:
    """The files and parameters ``arguments`` name.

    Parameters
    ----------
    arguments : sequence of str
        Files, folders, globs, lists of files, ``.phil`` files and ``name=value``.
    phil : libtbx.phil scope
        The scope ``name=value`` arguments are interpreted against.

    Raises
    ------
    InputError
        Naming the argument and the problem.
    """
    interpreter = phil.command_line_argument_interpreter(home_scope="")
    finder = _Finder()
    for argument in arguments:
        if _PARAMETER.match(argument) and not os.path.exists(argument):
            try:
                source = interpreter.process(arg=normalise_choice_argument(argument))
            except Exception as error:  # noqa: BLE001 (libtbx raises Sorry or RuntimeError)
                raise InputError(phil_message(error, argument)) from None
            finder.inputs.phil_sources.append(source)
        elif not os.path.exists(argument) and not _is_glob(argument):
            raise InputError(
                f"{argument}: no such file or directory (parameters are given as name=value)"
            )
        else:
            finder.expand(argument)
    return finder.inputs


def pair_by_name(
    reflection_files: Sequence[str], experiment_files: Sequence[str]
) -> tuple[dict[int, str], list[str]]:
    """Pair each ``x.refl`` with an ``x.expt`` in the same folder (as
    dials.stills_process and dials.index write them).

    Returns
    -------
    pairs : dict of int to str
        Reflection file index -> its experiment file.
    shared : list of str
        The experiment files left unpaired, which describe every table.
    """
    folder = os.getcwd()

    def stem(path: str, suffix: str) -> str | None:
        name = without_compression_suffix(os.path.normpath(os.path.join(folder, path)))
        return name[: -len(suffix)] if name.endswith(suffix) else None

    by_stem: dict[str, str] = {}
    for path in experiment_files:
        key = stem(path, ".expt")
        if key is not None:
            by_stem.setdefault(key, path)
    pairs = {}
    for index, path in enumerate(reflection_files):
        key = stem(path, ".refl")
        if key in by_stem:
            pairs[index] = by_stem[key]
    if len(pairs) < 2 or len(set(pairs.values())) != len(pairs):
        return {}, list(experiment_files)  # one shared list, or not one-to-one
    paired = set(pairs.values())
    return pairs, [path for path in experiment_files if path not in paired]


def read_experiment_lists(
    paths: Sequence[str], bad_files: str
) -> tuple[list[tuple[str, ExperimentList]], list[dict]]:
    """Experiment lists in order, and those skipped (``bad_files="skip"``) with the
    reason."""
    lists, skipped = [], []
    for path in paths:
        try:
            lists.append((path, read_experiments(path)))
        except FileFormatError as error:
            if bad_files == "fail":
                raise
            skipped.append({"file": path, "reason": str(error)})
    return lists, skipped
