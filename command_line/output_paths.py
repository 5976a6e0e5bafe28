"""Where each output of a run goes, and which are refused before any work.

An output is written where its symbolic links lead (the chain followed with
``readlink``, never simplified as text: ``x/..`` is for the system to resolve), into
its folder as the system resolves it. A character device (``/dev/null``) is written
into and a name of one of this process's open files (``/dev/stdout``,
``/proc/self/fd/3``) gets its content through the descriptor; anything else that is
not a regular file is refused, as are an input of the run (by device and inode), a
read-only file, another user's file in a shared (sticky) folder, a link that leads
round in a circle or that the system cannot follow, standard input or a descriptor
open for reading only, another process's descriptor, a path or name longer than the
system accepts, and one file asked for as two outputs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile
from typing import Sequence

from ..errors import SpotSizeAnalysisError


class OutputError(SpotSizeAnalysisError):
    """An output that cannot be written where it was asked for."""


# The output each temporary file stands for, so that a failure to write one names
# the output the user asked for, not the hidden temporary name.
OUTPUT_OF: dict[str, str] = {}
HELD_FOR_DESCRIPTOR: set[str] = set()  # those in the system's temporary folder


def cannot_hold(path: str, folder: str, error: OSError) -> OutputError:
    """The sentence for output ``path`` whose content could not be held in ``folder``
    (the system's temporary folder, for an output to a descriptor)."""
    return OutputError(
        f"{path}: cannot be written: its content is held in {folder} until the end, "
        f"which failed ({error.strerror}): free some space there, or set TMPDIR"
    )


def cannot_write(path: str, error: OSError) -> OutputError:
    """The sentence for ``path`` that could not be written: named as the output asked
    for where ``path`` is a temporary file standing for one (see ``OUTPUT_OF``)."""
    if path in HELD_FOR_DESCRIPTOR:
        return cannot_hold(OUTPUT_OF[path], os.path.dirname(path), error)
    path = OUTPUT_OF.get(path, path)
    advice = (
        "free some space or choose another output path"
        if error.errno in (errno.ENOSPC, errno.EDQUOT)
        else "choose another output path"
    )
    return OutputError(f"{path}: cannot be written ({error.strerror}): {advice}")


def _identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


MAX_LINKS = 40  # links followed in a row, as Linux follows at most 40
_CIRCLE = (
    "is a symbolic link that leads round in a circle: remove it or choose another "
    "output path"
)


def _link_chain(path: str) -> list[str]:
    """``path``, then each file its symbolic links lead to in turn: a link's target
    joined to the link's own folder and never simplified as text (``x/..`` is for the
    system to resolve, and fails where ``x`` is missing or a file), so that the last
    is what the system reaches through the links."""
    chain = [path]
    for _ in range(MAX_LINKS + 1):  # the last look finds no link after 40 of them
        try:
            target = os.readlink(chain[-1])
        except OSError:  # not a link, or nothing there (yet)
            return chain
        chain.append(os.path.join(os.path.dirname(chain[-1]), target))
    raise OutputError(f"{path}: {_CIRCLE}")


def destination(path: str) -> str:
    """Where an output's file is written: the file its symbolic links lead to (which
    is written, as DIALS's programs write through a link, and the link kept), else
    ``path`` itself; in its folder as the system resolves it (``link/..`` is the
    parent of where the link leads), which must exist.

    Parameters
    ----------
    path : str
        The output asked for.

    Raises
    ------
    OSError
        Where the folder does not exist.
    """
    name = _link_chain(path)[-1]
    folder = os.path.realpath(folder_of(name), strict=True)
    return os.path.join(folder, os.path.basename(name))


def is_character_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def written_into(path: str) -> bool:
    """A character device (/dev/null), or a name of one of this process's open files
    (/dev/stdout, /proc/self/fd/3): written into, never replaced (the file behind a
    descriptor is the shell's, opened perhaps to be appended to)."""
    return is_character_device(path) or descriptor_of(path) is not None


# The names of a process's open files (/dev/stdout leads to /proc/self/fd/1).
_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_PROCESS_DESCRIPTOR = re.compile(r"^/(proc/(self|thread-self|(\d+))/fd|dev/fd)/(\d+)$")


def _descriptors_named(path: str) -> list[tuple[bool, int]]:
    """(whether this process's, its number) of each open file's name among ``path``
    and the files its links lead to, as the system reads them ("/proc/self/fd/./1")."""
    named = []
    for step in map(os.path.normpath, _link_chain(path)):
        if step in _STANDARD:
            named.append((True, _STANDARD[step]))
        elif match := _PROCESS_DESCRIPTOR.match(step):
            own = match.group(3) in (None, str(os.getpid()))
            named.append((own, int(match.group(4))))
    return named


def descriptor_of(path: str) -> int | None:
    """The number of this process's open file that ``path`` names (/dev/stdout: 1,
    /proc/self/fd/3: 3, or a link to one), None for any other path."""
    return next((number for own, number in _descriptors_named(path) if own), None)


def _another_process_descriptor(path: str) -> bool:
    """Whether ``path`` leads to /proc/PID/fd/N of another process (whose file's
    access this process cannot check, nor write through)."""
    return any(not own for own, _ in _descriptors_named(path))


def _refuse_descriptor(path: str, number: int) -> None:
    """A descriptor an output may not be written into: standard input, one closed,
    one open for reading only."""
    if number == 0:
        raise OutputError(
            f"{path}: is the standard input: choose a file, or /dev/stdout"
        )
    try:
        flags = fcntl.fcntl(number, fcntl.F_GETFL)
    except OSError as error:
        raise cannot_write(path, error) from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise OutputError(
            f"{path}: is open for reading only: choose another output path"
        )


def hidden_prefix(name: str) -> str:
    """A hidden name's start for files beside ``name``: at most 100 bytes of it (a
    name of 255 bytes, the most a folder's entry may have, leaves room)."""
    return "." + os.fsdecode(os.fsencode(name)[:100]) + "."


def folder_of(path: str) -> str:
    """The folder a file is written in, as the system resolves it (not simplified as
    text: ``link/..`` is the parent of where the link leads)."""
    return os.path.dirname(path) or os.curdir


def check_output_path(path: str, input_identities: dict[tuple[int, int], str]) -> None:
    """Refuse, before any work, an output that could not be written or would destroy
    something: an input of the run (by device and inode: a link or another spelling
    of the path counts), a folder, a FIFO, a socket, a read-only file, a file another
    user owns in a shared (sticky) folder, a link that leads round in a circle or that
    the system cannot follow.

    Parameters
    ----------
    path : str
        The output asked for.
    input_identities : dict
        (device, inode) of every input, from :func:`input_identities`.
    """
    longest_path = _longest_path()
    if len(os.fsencode(path)) >= longest_path:
        raise OutputError(
            f"{path[:80]}...: cannot be written (the path is longer than the "
            f"{longest_path - 1} bytes the system accepts): choose a shorter path"
        )
    name = _link_chain(path)[-1]  # the last link's target, as written
    if path.endswith(os.sep) or name.endswith(os.sep) or os.path.isdir(path):
        raise OutputError(f"{path}: is a directory: choose a file name for this output")
    status = _replaced(path)
    if status is not None and (status.st_dev, status.st_ino) in input_identities:
        raise OutputError(
            f"{path}: is the input {input_identities[status.st_dev, status.st_ino]}: "
            "writing there would destroy it; choose another output name"
        )
    if _another_process_descriptor(path):
        raise OutputError(
            f"{path}: is another process's open file: choose a file, or /dev/stdout"
        )
    number = descriptor_of(path)
    if number is not None:
        _refuse_descriptor(path, number)
    if number is not None or is_character_device(path):  # written into
        return
    if status is not None:
        _refuse_to_replace(path, status)
    if not os.path.isdir(folder_of(name)):  # as the system sees it: "missing/.." not
        raise OutputError(
            f"{path}: cannot be written (its folder does not exist): create the folder "
            "or choose another output path"
        )
    target = destination(path)
    directory = os.path.dirname(target)
    if status is not None and _owned_by_another_in_shared_folder(status, directory):
        raise OutputError(
            f"{path}: cannot be replaced (another user's file in a shared folder, "
            "which only its owner may replace): choose another output path"
        )
    longest = _longest_name(directory)
    if len(os.fsencode(os.path.basename(target))) > longest:
        raise OutputError(
            f"{path}: cannot be written (its name is longer than the {longest} bytes "
            "a folder's entry may have): choose a shorter name"
        )
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise cannot_write(path, error) from None


def _replaced(path: str) -> os.stat_result | None:
    """The status of the file an output would replace (None: a new file); a path
    the system cannot follow is refused."""
    try:
        return os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OutputError(f"{path}: {_CIRCLE}") from None
        if error.errno not in (errno.ENOENT, errno.ENAMETOOLONG):  # a file taken
            raise cannot_write(path, error) from None  # for a folder: "x.refl/.."
        return None  # a new file (a name too long is said when its folder is known)


def _refuse_to_replace(path: str, status: os.stat_result) -> None:
    """An existing file an output may not replace: not a regular file, read-only."""
    if not stat.S_ISREG(status.st_mode):
        raise OutputError(f"{path}: is not a regular file: choose another output path")
    if _read_only(path, status.st_mode):
        raise OutputError(
            f"{path}: is read-only (or not this user's to write): choose another "
            "output name, or make it writable"
        )


def _read_only(path: str, mode: int) -> bool:
    """Whether a file may not be written by this user, or by anyone (no write bit:
    protected on purpose, even from the superuser, whom permissions do not stop)."""
    return not mode & 0o222 or not os.access(path, os.W_OK)


def _owned_by_another_in_shared_folder(status: os.stat_result, directory: str) -> bool:
    """A sticky folder (/tmp, shared scratch space) lets only a file's owner, the
    folder's owner or the superuser replace it: the rename at the end would fail."""
    user = getattr(os, "geteuid", lambda: 0)()
    try:
        folder = os.stat(directory)
    except OSError:
        return False
    return bool(folder.st_mode & stat.S_ISVTX) and user not in (
        0,
        status.st_uid,
        folder.st_uid,
    )


def _longest_path() -> int:
    """The longest path the system accepts, in bytes with its end (4096 unknown)."""
    try:
        return os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096


def _longest_name(directory: str) -> int:
    """The longest file name ``directory`` may hold, in bytes (255 where unknown)."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def input_identities(
    paths: Sequence[str], known: dict[tuple[int, int], str] | None = None
) -> dict[tuple[int, int], str]:
    """Device and inode of every input file, to recognise an output that is one.

    Parameters
    ----------
    paths : sequence of str
        The run's input files.
    known : dict, optional
        (device, inode) -> path of inputs whose status was already taken: only the
        other paths are looked at.
    """
    identities = dict(known or {})
    looked_at = set(identities.values())
    for path in paths:
        if path in looked_at:
            continue
        identity = _identity(path)
        if identity is not None:
            identities.setdefault(identity, path)
    return identities


def refuse_twice(paths: Sequence[str]) -> None:
    """Two outputs may not be one file (by name, by where a link leads, even to a file
    not yet written, or by device and inode)."""
    seen: dict[object, str] = {}
    for path in paths:
        number = descriptor_of(path)
        if number is None and is_character_device(path):  # /dev/null, twice: fine
            continue
        try:
            where = destination(path)
        except OSError:  # a descriptor of a pipe: its identity tells
            where = None
        descriptor = None if number is None else ("descriptor", number)
        for key in (where, _identity(path), descriptor):
            if key is None:
                continue
            if key in seen:
                raise OutputError(
                    f"{path}: is asked for twice (also as {seen[key]}): give each "
                    "output its own name"
                )
            seen[key] = path
