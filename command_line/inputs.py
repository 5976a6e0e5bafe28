"""What the arguments name: reflection tables, experiment lists, PHIL files and
parameters, found in files, folders, globs and lists of files; which experiment list
belongs to which table; and which tables hold the same spots.

Only regular files are read. A FIFO, socket or device named on the command line or in
a list file is refused with one sentence, from ``os.stat`` alone (opening a FIFO blocks
until a writer appears; reading ``/dev/zero`` never ends). One found in a folder is
skipped and reported in the log: the user did not name it.

Tables holding the same spots
-----------------------------
A DIALS working folder holds the same spots at several stages (``strong.refl`` ->
``indexed.refl`` -> ``refined.refl`` -> ``integrated.refl``); which tables hold the same
spots is decided from their observed centroids alone (``algorithms.same_spots`` says
how). Experiment identifiers are not required to agree: ``dials.index`` gives its
experiments new identifiers, and legacy tables have none. Rows split between tables (by
rows or by experiment) share no centroid, so such splits merge as before.

Where the program found any table itself, every table's header and centroid column are
read before the analysis, to know which to set aside. Where the user named every table,
nothing can be set aside, only refused: the centroids are then compared as the tables
are measured (:func:`refuse_named_tables_with_same_spots`), without a second read of
each table (thousands of stills).

When tables hold the same spots, one is kept: a table the user named (on the command
line or in a list file) over one the program found (in a folder or by a glob); then the
latest DIALS stage by file name (integrated > refined > indexed > strong, as a word of
the name: ``idx-0001_strong.refl`` is a strong table); then, where either name names no
stage, the table with more columns, then more rows. The others are set aside, each with
one line in the log. Two tables that the user named both are refused: only the user
knows which was meant.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Sequence

import libtbx.phil

from ..algorithms.same_spots import ComparedTable, tables_with_same_spots
from ..errors import SpotSizeAnalysisError
from ..formats import FileFormatError, read_experiments, read_reflections
from ..formats.experiments import ExperimentList
from ..formats.source import describe_content, without_compression_suffix
from ..parallel.measure_file import compared_table

REFLECTION_SUFFIXES = (".refl", ".pickle")
DIALS_SUFFIXES = (".refl", ".expt")
EXPERIMENT_SUFFIXES = (".expt", ".json")
MAX_LIST_BYTES = 1 << 26
LIST_SNIFF_LINES = 20
_PARAMETER = re.compile(r"^[A-Za-z_][\w.]*=")

# DIALS's processing stages, earliest first, as words of its file names.
TABLE_STAGES = ("strong", "indexed", "refined", "integrated")
EXPERIMENT_STAGES = ("imported", "indexed", "refined", "integrated")
_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


class InputError(SpotSizeAnalysisError):
    """An argument that names nothing usable: a missing file, an empty folder, ..."""


@dataclass
class Inputs:
    """The files and parameters the arguments name, in order.

    ``notes`` are lines for the log: tables set aside as holding the same spots as
    another, files skipped in folders. ``found`` holds the reflection files the program
    found itself (in a folder or by a glob) rather than the user named.
    """

    reflection_files: list[str] = field(default_factory=list)
    experiment_files: list[str] = field(default_factory=list)
    phil_sources: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    found: set[str] = field(default_factory=set)
    # (device, inode) -> path of the files whose status was taken while finding them:
    # the output check needs no second look at thousands of listed files.
    identities: dict[tuple[int, int], str] = field(default_factory=dict)
    # Every table was named: whether two hold the same spots is checked as they are
    # measured (refuse_named_tables_with_same_spots), not by reading them first.
    compare_while_measuring: bool = False


def shown(path: str) -> str:
    """``path`` for a message: bytes that are not UTF-8 (legal in Linux file names,
    decoded by Python as surrogates) shown as ``\\xe9`` escapes, so that printing or
    logging the message cannot fail."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _inner_name(path: str) -> str:
    """The lower-case name without a compression suffix."""
    return without_compression_suffix(path.lower())


def _is_glob(argument: str) -> bool:
    return "*" in argument or "?" in argument or "[" in argument


def _not_regular(mode: int) -> str | None:
    """What a file of this ``st_mode`` is, where it is not a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _FILE_KINDS if test(mode)), "not a file")


def _status(path: str) -> os.stat_result | None:
    """The file's status, or None where it cannot be had (missing: reported when it
    is read)."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _refuse_unless_regular(path: str, status: os.stat_result | None = None) -> None:
    """Refuse ``path`` if it exists and is not a regular file (a missing file is
    reported when it is read), from ``os.stat`` alone (``status``, where the caller
    has it): opening a FIFO blocks."""
    status = _status(path) if status is None else status
    what = None if status is None else _not_regular(status.st_mode)
    if what is not None:
        raise InputError(
            f"{shown(path)}: is not a regular file ({what}): pass the .refl, .expt, "
            "list or .phil file itself"
        )


def phil_message(error: Exception, where: str) -> str:
    """libtbx.phil's complaint as one sentence about ``where``.

    Parameters
    ----------
    error : Exception
        What libtbx.phil raised.
    where : str
        The file or argument it came from.
    """
    text = " ".join(str(error).split())
    text = text.replace(" (command line argument, line 1)", "")
    if (
        "Unknown command line parameter definition" in text
        or "Unknown parameter" in text
    ):
        return f"{where}: unknown parameter: see dials.spot_size_analysis -c for the parameters and their names"
    return f"{where}: {text}"


def phil_file(path: str):
    """A parsed PHIL file.

    Parameters
    ----------
    path : str
        The .phil file.

    Raises
    ------
    InputError
        Where it cannot be read or parsed.
    """
    _refuse_unless_regular(path)
    try:
        with open(path, encoding="utf-8") as handle:
            parsed = libtbx.phil.parse(
                handle.read(), source_info=path, process_includes=False
            )
    except OSError as error:
        raise InputError(f"{shown(path)}: cannot be read ({error.strerror})") from None
    except Exception as error:  # libtbx raises Sorry, RuntimeError, ...
        raise InputError(phil_message(error, shown(path))) from None
    if _includes(parsed):
        raise InputError(
            f"{shown(path)}: includes another file or scope, which this program does "
            "not follow (its parameters would be ignored): put them in the file itself"
        )
    return parsed


def _includes(scope) -> bool:
    """Whether a parsed PHIL text has an ``include`` line (unprocessed, libtbx keeps
    it as a definition named include, which the parameters' fetch passes over)."""
    pending = list(scope.objects)
    while pending:
        item = pending.pop()
        if item.is_definition and item.name == "include":
            return True
        pending.extend(getattr(item, "objects", None) or [])
    return False


def _listed_paths(path: str, sniff: bool = False) -> list[str]:
    """The files a list file names (one per line, '#' comments; relative paths are
    relative to the list's folder), or [] if ``path`` is not such a list. A list is
    recognised by its first lines naming files (existing ones, or DIALS files:
    ``sniff`` resolves only those), at least one of which exists; a missing file is
    reported by name when it is read. Only a regular file is read: a device reports
    size 0 and never ends."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_LIST_BYTES:
            return []
        with open(path, "rb") as handle:
            text = os.fsdecode(handle.read(MAX_LIST_BYTES + 1))
    except (UnicodeDecodeError, OSError):
        return []
    if "\x00" in text:
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
    if (
        not resolved
        or not all(_listed(p) for p in head)
        or not any(map(os.path.exists, head))
    ):
        return []
    return resolved


def _listed(path: str) -> bool:
    """A list file's line: an existing file, a glob, or the name of a DIALS file (a
    missing one is then reported by name when it is read, not taken for a sign that
    the list is no list)."""
    return (
        os.path.exists(path)
        or _is_glob(path)
        or _inner_name(path).endswith((*DIALS_SUFFIXES, ".phil"))
    )


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
        raise InputError(f"{shown(path)}: cannot be read ({error.strerror})") from None
    if not head:
        raise InputError(
            f"{shown(path)}: is empty (0 bytes): was it written completely?"
        )
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
        f"{shown(path)}: is not a DIALS experiment list, reflection table, list of files or PHIL file: it looks like {describe_content(head)}"
    )


class _Finder:
    """Files found so far, each once (by absolute path; the working folder is looked
    up once, not once per file: lists name thousands)."""

    def __init__(self) -> None:
        self.folder = os.getcwd()
        self.seen: set[str] = set()
        self.inputs = Inputs()

    def add_file(
        self, path: str, found: bool = False, status: os.stat_result | None = None
    ) -> None:
        """Add one file; ``found`` when the program found it (folder, glob); ``status``
        its ``os.stat`` where already known."""
        key = os.path.normpath(os.path.join(self.folder, path))
        if key in self.seen:
            return
        status = _status(path) if status is None else status
        _refuse_unless_regular(path, status)  # before anything opens it
        self.seen.add(key)
        if status is not None:  # no output may be this file (a list file included)
            self.inputs.identities.setdefault((status.st_dev, status.st_ino), path)
        kind = _file_kind(path)
        if kind == "phil":
            self.inputs.phil_sources.append(phil_file(path))
        elif kind == "experiments":
            self.inputs.experiment_files.append(path)
        elif kind == "reflections":
            self.inputs.reflection_files.append(path)
            if found:
                self.inputs.found.add(path)
        else:
            for listed in _listed_paths(path):
                self.expand(listed)

    def expand(self, argument: str, found: bool = False) -> None:
        """Add the files ``argument`` names: a file, a folder (searched recursively
        for DIALS files), a glob pattern, or a list file."""
        if _inner_name(argument).endswith(DIALS_SUFFIXES) and not _is_glob(argument):
            status = _status(argument)  # one system call for thousands of listed files
            if status is not None and stat.S_ISDIR(status.st_mode):
                self._add_folder(argument)
            else:
                self.add_file(argument, found, status)  # read (and checked) later
        elif os.path.isdir(argument):
            self._add_folder(argument)
        elif not os.path.exists(argument) and _is_glob(argument):
            matches = sorted(glob_without_links(argument))
            if not matches:
                raise InputError(f"{shown(argument)}: no file matches this pattern")
            for match in matches:
                self.expand(match, found=True)
        else:
            self.add_file(argument, found)

    def _add_folder(self, folder: str) -> None:
        found, skipped = _dials_files_in(folder)
        for path, what in skipped:
            self.inputs.notes.append(
                f"{shown(path)} skipped: it is not a regular file ({what})"
            )
        if not found:
            raise InputError(
                f"{shown(folder)}: is a directory without .refl or .expt files"
            )
        for path in sorted(found):
            self.add_file(path, found=True)


def glob_without_links(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, except that ``**`` does not descend into
    symbolic links to folders, as the search of a folder does not: two links back up
    the tree made glob's paths double with every level, a run that never ended.

    Parameters
    ----------
    pattern : str
        A glob pattern; ``**`` as a whole path component matches any depth of
        folders (names starting with a dot left out, as glob does).

    Returns
    -------
    list of str
        The matching paths, unsorted.
    """
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return glob.glob(pattern)
    at = parts.index("**")
    base, rest = os.sep.join(parts[:at]), os.sep.join(parts[at + 1 :])
    if not base and pattern.startswith(os.sep):
        base = os.sep
    roots = glob.glob(base) if glob.has_magic(base) else [base]
    found = []
    for root in roots:
        if not rest and root:  # "folder/**" gives the folder itself first
            found.append(os.path.join(root, ""))
        for folder, subfolders, files in os.walk(root or os.curdir):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            shown = folder if root else os.path.relpath(folder).removeprefix(".")
            if rest:
                found += glob_without_links(os.path.join(shown, rest))
            elif at + 1 < len(parts):  # "folder/**/": the folders beneath
                found += [os.path.join(shown, name, "") for name in subfolders]
            else:  # then every path beneath, as glob gives them
                names = [n for n in subfolders + files if not n.startswith(".")]
                found += [os.path.join(shown, name) for name in names]
    return found


def _dials_files_in(folder: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The regular ``.refl``/``.expt`` files under ``folder`` (symbolic links to
    folders not followed, as os.walk does), and the other files of those names with
    what they are: skipped, never opened. The kind comes from the directory entry,
    without a further system call on Linux."""
    found, skipped, pending = [], [], [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif _inner_name(entry.name).endswith(DIALS_SUFFIXES):
                try:
                    what = (
                        None if entry.is_file() else _not_regular(entry.stat().st_mode)
                    )
                except OSError:  # a dangling link, a link to itself: reported when read
                    found.append(entry.path)
                    continue
                if what is None:
                    found.append(entry.path)
                    continue
                    found.append(entry.path)
                    continue
                if what == "a directory":  # a link to a folder named x.refl
                    continue
                skipped.append((entry.path, what))
    return found, skipped


def find_inputs(arguments: Sequence[str], phil, set_aside: bool = True) -> Inputs:
    """The files and parameters ``arguments`` name.

    Parameters
    ----------
    arguments : sequence of str
        Files, folders, globs, lists of files, ``.phil`` files and ``name=value``.
    phil : libtbx.phil scope
        The scope ``name=value`` arguments are interpreted against.
    set_aside : bool
        Set aside the tables holding the same spots as another (see the module's
        description), so that no spot is counted twice. Where the user named every
        table, there is nothing to set aside: ``compare_while_measuring`` is set
        instead.

    Raises
    ------
    InputError
        Naming the argument and the problem; also when two tables the user named both
        hold the same spots, and the program found other tables.
    """
    interpreter = phil.command_line_argument_interpreter(home_scope="")
    finder = _Finder()
    for argument in arguments:
        if _PARAMETER.match(argument) and not os.path.exists(argument):
            try:
                source = interpreter.process(arg=argument)
            except Exception as error:  # noqa: BLE001 (libtbx raises Sorry or RuntimeError)
                raise InputError(phil_message(error, shown(argument))) from None
            finder.inputs.phil_sources.append(source)
        elif not os.path.exists(argument) and not _is_glob(argument):
            raise InputError(
                f"{shown(argument)}: no such file or directory (parameters are given as name=value)"
            )
        else:
            finder.expand(argument)
    inputs = finder.inputs
    if set_aside and len(inputs.reflection_files) > 1 and not inputs.found:
        inputs.compare_while_measuring = True  # nothing to set aside, only to refuse
    elif set_aside and len(inputs.reflection_files) > 1:
        kept, notes = set_aside_same_spots(inputs.reflection_files, inputs.found)
        inputs.reflection_files = kept
        inputs.found &= set(kept)
        inputs.notes.extend(notes)
    return inputs


def _stage(path: str, stages: Sequence[str]) -> int | None:
    """The latest of ``stages`` that is a word of the file's name, or None."""
    words = re.split(r"[^a-z]+", os.path.basename(_inner_name(path)))
    ranks = [stages.index(word) for word in words if word in stages]
    return max(ranks) if ranks else None


def _read_for_comparison(position: int, path: str, named: bool) -> ComparedTable | None:
    """The table's centroid keys and size, or None where it cannot be read (the
    analysis reports it) or has no observed centroids."""
    try:
        table = read_reflections(path, index_shoeboxes=False)
        return compared_table(table, position, path, named)
    except Exception:  # noqa: BLE001 (the analysis reads it again and says why)
        return None


def _preference(a: ComparedTable, b: ComparedTable) -> tuple[int, str]:
    """Negative if ``a`` is kept rather than ``b`` (positive if ``b``), and why."""
    if a.named != b.named:
        return (-1 if a.named else 1), "named by you (not found in a folder)"
    stage_a, stage_b = _stage(a.path, TABLE_STAGES), _stage(b.path, TABLE_STAGES)
    if stage_a is not None and stage_b is not None and stage_a != stage_b:
        return (1 if stage_a < stage_b else -1), "the later DIALS stage"
    for mine, theirs, why in (
        (a.n_columns, b.n_columns, "the table with more columns"),
        (a.n_rows, b.n_rows, "the table with more rows"),
    ):
        if mine != theirs:
            return (1 if mine < theirs else -1), why
    return (-1 if a.position < b.position else 1), "given first"


def set_aside_same_spots(
    paths: Sequence[str], found: set[str] | frozenset = frozenset()
) -> tuple[list[str], list[str]]:
    """The tables to measure, less those holding the same spots as another, and one
    log line per table set aside (the rule is in the module's description).

    Parameters
    ----------
    paths : sequence of str
        Reflection files, in input order.
    found : set of str
        Those the program found itself (in a folder or by a glob); the others the user
        named.

    Returns
    -------
    kept : list of str
        ``paths`` in order, less those set aside.
    notes : list of str
        Why each was set aside.

    Raises
    ------
    InputError
        When two tables the user named both hold the same spots.
    """
    tables = [
        table
        for position, path in enumerate(paths)
        if (table := _read_for_comparison(position, path, path not in found))
        is not None
    ]
    aside, notes = _choose(tables)
    return [path for path in paths if path not in aside], notes


def refuse_named_tables_with_same_spots(tables: Sequence[ComparedTable]) -> None:
    """Refuse the run where two of the tables, all named by the user, hold the same
    spots: the check :func:`find_inputs` leaves to the measuring when every table was
    named.

    Parameters
    ----------
    tables : sequence of ComparedTable
        What the measuring kept of each table it read (``named`` True).

    Raises
    ------
    InputError
        Naming two tables that hold the same spots.
    """
    _choose(list(tables))


def _choose(tables: list[ComparedTable]) -> tuple[set[str], list[str]]:
    """The paths of the tables set aside, and why; InputError where two named tables
    hold the same spots."""
    tables = [table for table in tables if len(table.keys)]
    partners: dict[int, dict[int, str]] = {}
    for i, j, n, m in tables_with_same_spots([table.keys for table in tables]):
        evidence = f"{n} of {m} observed centroids in common"
        common = sorted(tables[i].identifiers & tables[j].identifiers)
        if common:
            evidence += f", experiment {common[0]}"
        partners.setdefault(i, {})[j] = partners.setdefault(j, {})[i] = evidence
    ranked = sorted(
        partners,
        key=functools.cmp_to_key(lambda i, j: _preference(tables[i], tables[j])[0]),
    )
    kept: set[int] = set()
    notes, aside = [], set()
    for i in ranked:
        rivals = [j for j in partners[i] if j in kept]
        if not rivals:
            kept.add(i)
            continue
        j = rivals[0]
        table, rival = tables[i], tables[j]
        if table.named and rival.named:
            raise InputError(
                f"{shown(rival.path)} and {shown(table.path)} hold the same spots "
                f"({partners[i][j]}): pass only one of them, e.g. "
                f"{shown(os.path.basename(rival.path))}"
            )
        aside.add(table.path)
        notes.append(
            f"{shown(table.path)} set aside: it holds the same spots as "
            f"{shown(rival.path)} ({partners[i][j]}), kept as "
            f"{_preference(rival, table)[1]}"
        )
    return aside, notes


def _has_identifiers(path: str) -> bool | None:
    """Whether the table maps its experiment ids to identifiers (None: unreadable)."""
    try:
        return bool(read_reflections(path, index_shoeboxes=False).identifiers)
    except Exception:  # noqa: BLE001 (the analysis reads it again and says why)
        return None


def pair_by_name(
    reflection_files: Sequence[str], experiment_files: Sequence[str]
) -> tuple[dict[int, str], list[str]]:
    """Pair each ``x.refl`` with an ``x.expt`` in the same folder (as
    dials.stills_process and dials.index write them), even where there is one such
    pair; then each table without experiment identifiers (which cannot be matched to
    experiments by identifier) with the experiment list in its own folder, the latest
    DIALS stage by name where there are several (integrated > refined > indexed >
    imported): ``integrated.refl`` beside ``indexed.expt`` belongs to it, not to a list
    from another folder.

    Returns
    -------
    pairs : dict of int to str
        Reflection file index -> its experiment file.
    shared : list of str
        The experiment files left unpaired, which describe every other table (or the
        one list given, where it is paired with one table but there are others).

    Parameters
    ----------
    reflection_files, experiment_files : sequence of str
        The files found, in order.
    """
    folder = os.getcwd()

    def absolute(path: str) -> str:
        return without_compression_suffix(os.path.normpath(os.path.join(folder, path)))

    by_stem: dict[str, str] = {}
    by_folder: dict[str, list[str]] = {}
    for path in experiment_files:
        name = absolute(path)
        if name.endswith(".expt"):
            by_stem.setdefault(name[: -len(".expt")], path)
        by_folder.setdefault(os.path.dirname(name), []).append(path)
    pairs = {}
    for index, path in enumerate(reflection_files):
        name = absolute(path)
        if name.endswith(".refl") and name[: -len(".refl")] in by_stem:
            pairs[index] = by_stem[name[: -len(".refl")]]
        elif os.path.dirname(name) in by_folder and _has_identifiers(path) is False:
            beside = by_folder[os.path.dirname(name)]
            pairs[index] = max(
                beside,
                key=lambda p: (_stage(p, EXPERIMENT_STAGES) or -1, -beside.index(p)),
            )
    paired = set(pairs.values())
    shared = [path for path in experiment_files if path not in paired]
    if not shared and len(paired) == 1 and len(pairs) < len(reflection_files):
        shared = list(experiment_files)  # one list given: it describes every table
    return pairs, shared


def read_experiment_lists(
    paths: Sequence[str], bad_files: str
) -> tuple[list[tuple[str, ExperimentList]], list[dict]]:
    """Experiment lists in order, and those skipped (``bad_files="skip"``) with the
    reason. Where every list given is unusable, the first one's error ends the run:
    measuring on without any experiment would silently lose the resolutions and the
    profile model the user asked for by naming them.

    Parameters
    ----------
    paths : sequence of str
        The experiment lists that describe every table.
    bad_files : str
        ``input.bad_files``: "skip" or "fail".
    """
    lists, skipped, first_error = [], [], None
    for path in paths:
        try:
            lists.append((path, read_experiments(path)))
        except FileFormatError as error:
            if bad_files == "fail":
                raise
            first_error = first_error or error
            skipped.append({"file": path, "reason": str(error)})
    if first_error is not None and not lists:  # no geometry left at all: say so
        raise first_error
    return lists, skipped
