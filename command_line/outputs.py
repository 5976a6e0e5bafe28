"""Writing the outputs: all of a run's files or none, and the log as DIALS programs
keep it (to the terminal and to a file written fresh each run). Where each output
goes, and which are refused before any work, is :mod:`output_paths`'s.

Every output is written to a temporary file beside where it goes; when the run has
succeeded they are renamed into place together, under a lock on each folder, so that
two runs started in one folder leave one run's outputs, not a mix. On any failure (an
error, a full disk, a signal) every temporary file is removed and no output appears. A
character device (such as ``/dev/null``) is written straight into, and a descriptor's
name (``/dev/stdout``) gets its content through the descriptor once the run has
succeeded, just before the renames; a file replaced keeps its permissions. Should a
rename fail at the end, those already done are taken back, each file they replaced
restored from what was kept of it (a hard link, or a copy) before the first rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import secrets
import shutil
import stat
import sys
import tempfile
from typing import Iterable, Sequence

from .. import PROGRAM
from ..report.document import compact_json_pieces, json_text
from .output_paths import (
    HELD_FOR_DESCRIPTOR,
    OUTPUT_OF,
    OutputError,
    cannot_hold,
    cannot_write,
    check_output_path,
    descriptor_of,
    destination,
    folder_of,
    hidden_prefix,
    input_identities,
    is_character_device,
    refuse_twice,
    written_into,
)
from .standard_output import standard_output_discarded

logger = logging.getLogger(PROGRAM)
COMPACT_JSON_INPUTS = 500


def _umask() -> int:
    """The process's umask, read without changing it where the system says it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Why standard output went away, once it has (the terminal log points it at /dev/null:
# an output meant for it must not vanish there).
_STANDARD_OUTPUT_GONE: list[OSError] = []


class OutputSet:
    """The outputs of one run, all or none (see the module's text).

    Parameters
    ----------
    paths : sequence of str or None
        The outputs asked for (None: not wanted).
    inputs : sequence of str
        The run's input files, which no output may be.
    known_identities : dict, optional
        (device, inode) -> path of inputs already looked at (see
        :func:`input_identities`).
    """

    def __init__(
        self,
        paths: Sequence[str | None],
        inputs: Sequence[str] = (),
        known_identities: dict[tuple[int, int], str] | None = None,
    ):
        self.paths = [path for path in paths if path]
        identities = input_identities(inputs, known_identities) if self.paths else {}
        for path in self.paths:
            check_output_path(path, identities)
        refuse_twice(self.paths)
        # Where each file is written, decided once: a link changed during the run
        # does not move an output elsewhere.
        self.destinations = {
            path: destination(path) for path in self.paths if not written_into(path)
        }
        self.temporaries: dict[str, str] = {}
        self.streamed: dict[str, str] = {}  # descriptors' contents, copied at the end
        self.streamed_into: list[tuple[str, bool]] = []  # see stream()

    def temporary(self, path: str) -> str:
        """Where to write ``path``'s content now: a temporary file beside it; for a
        descriptor (/dev/stdout), one in the system's temporary folder, copied into
        it by :meth:`stream`; a character device (/dev/null): itself.

        Parameters
        ----------
        path : str
            One of the outputs given to the set.
        """
        if path in self.destinations:
            target = self.destinations[path]
            directory = os.path.dirname(target)
            prefix = hidden_prefix(os.path.basename(target))
        elif descriptor_of(path) is not None:
            directory, prefix = None, f".{PROGRAM}."  # the system's temporary folder
        else:
            return path
        try:
            handle, temporary = tempfile.mkstemp(
                prefix=prefix, suffix=".tmp", dir=directory
            )
        except OSError as error:
            if directory is None:
                raise cannot_hold(path, tempfile.gettempdir(), error) from None
            raise cannot_write(path, error) from None
        os.close(handle)
        if directory is None:
            HELD_FOR_DESCRIPTOR.add(temporary)
            self.streamed[path] = temporary
        else:
            self.temporaries[path] = temporary
        OUTPUT_OF[temporary] = path
        return temporary

    def commit(self) -> None:
        """Every temporary file renamed onto its path (where a link leads), folder by
        folder under a lock; a file replaced keeps its permissions (and, for the
        superuser, its owner). All or none: where a rename fails, the outputs
        already in place are taken back, a file they replaced restored from the hard
        link (or copy) kept of it until the end. A signal should be held meanwhile
        (``signals.StopSignals.held``): one raised just after a rename, before it is
        noted, would leave that output in place when the others are taken back."""
        mask = _umask()
        by_folder: dict[str, list[str]] = {}
        for path in self.temporaries:
            folder = os.path.dirname(self.destinations[path])
            by_folder.setdefault(folder, []).append(path)
        kept: dict[str, str | None] = {}  # what can restore each file replaced
        placed: list[tuple[str, str | None]] = []
        done = False
        try:
            for path in self.temporaries:  # all kept before the first rename
                kept[path] = _kept_link(self.destinations[path])
                if kept[path] == "":
                    raise OutputError(
                        f"{path}: cannot be replaced safely (it can be neither "
                        "linked nor copied, to be restored should another output "
                        "fail): choose another output path"
                    )
            for folder, paths in sorted(by_folder.items()):
                with _folder_locked(folder):
                    for path in paths:
                        placed.append(self._place(path, mask, kept.pop(path)))
            done = True
        except BaseException:
            _take_back(placed)  # a link left after it is the one copy: not removed
            raise
        finally:
            spare = [*kept.values(), *(link for _, link in placed if done)]
            for link in spare:  # of files not replaced, or all replaced for good
                if link:
                    with contextlib.suppress(OSError):
                        os.remove(link)

    def _place(self, path: str, mask: int, kept: str | None) -> tuple[str, str | None]:
        """Rename ``path``'s temporary file onto it: (the file written, what was kept
        of the file it replaced, by :func:`_kept_link`)."""
        target, temporary = self.destinations[path], self.temporaries[path]
        try:
            _permissions_as(target, temporary, mask)
            os.replace(temporary, target)
        except OSError as error:
            raise cannot_write(path, error) from None
        OUTPUT_OF.pop(self.temporaries.pop(path), None)
        return target, kept

    def stream(self) -> None:
        """Each descriptor's content (/dev/stdout) copied into it, its temporary file
        removed: before :meth:`commit`, with signals acting (the reader of a pipe may
        be slow, or stop); what a descriptor received cannot be taken back, and is
        listed in ``streamed_into`` (its name, and whether all of it went)."""
        for path, temporary in list(self.streamed.items()):
            self.streamed_into.append((path, False))  # before the first byte goes
            with written(path, "wb") as into, open(temporary, "rb") as content:
                shutil.copyfileobj(content, into)
            self.streamed_into[-1] = (path, True)
            self._forget(temporary)
            del self.streamed[path]

    @staticmethod
    def _forget(temporary: str) -> None:
        OUTPUT_OF.pop(temporary, None)
        HELD_FOR_DESCRIPTOR.discard(temporary)
        with contextlib.suppress(OSError):
            os.remove(temporary)

    def discard(self) -> None:
        """Every temporary file removed."""
        for temporary in [*self.temporaries.values(), *self.streamed.values()]:
            self._forget(temporary)
        self.temporaries.clear()
        self.streamed.clear()


def _permissions_as(target: str, temporary: str, mask: int) -> None:
    """Give ``temporary`` the permissions of the file ``target`` it is to replace
    (and its owner, where this is the superuser), or for a new file what the umask
    leaves of read and write for all."""
    try:
        old = os.stat(target)
    except OSError:
        os.chmod(temporary, 0o666 & ~mask)
        return
    os.chmod(temporary, stat.S_IMODE(old.st_mode) & 0o777)
    if getattr(os, "geteuid", lambda: -1)() == 0:
        os.chown(temporary, old.st_uid, old.st_gid)


def _kept_link(target: str) -> str | None:
    """A hard link to the file ``target`` names, beside it, to restore it from should
    the outputs be taken back (a copy where the folder allows no hard link); None
    where there is no such file, "" where neither can be made."""
    if not os.path.isfile(target):
        return None
    folder = folder_of(target)
    prefix = hidden_prefix(os.path.basename(target))
    for _ in range(100):
        kept = os.path.join(folder, prefix + secrets.token_hex(6) + ".kept")
        try:
            os.link(target, kept)
            return kept
        except FileExistsError:
            continue
        except OSError:  # no hard links here (vfat, protected_hardlinks): a copy
            break
    try:
        copy = open(kept, "xb")  # noqa: SIM115 (closed below, removed on failure)
    except OSError:
        return ""
    try:
        with open(target, "rb") as source, copy:
            shutil.copyfileobj(source, copy)
        shutil.copymode(target, kept)
        return kept
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(kept)
        return ""


def _take_back(placed: Sequence[tuple[str, str | None]]) -> None:
    """Undo the renames of a commit that failed: each file replaced put back from its
    hard link, each new file removed; as far as the system lets."""
    for target, kept in reversed(placed):
        with contextlib.suppress(OSError):
            if kept:
                os.replace(kept, target)
            elif kept is None:
                os.remove(target)


@contextlib.contextmanager
def _folder_locked(folder: str):
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def written(path: str, mode: str = "w"):
    """A file opened for writing, any OSError (a full disk) said as one sentence.

    Parameters
    ----------
    path : str
        The file to write (a temporary file of an :class:`OutputSet`).
    mode : str
        ``open``'s mode: text (UTF-8, undecodable characters escaped) or binary.
    """
    try:
        with _opened(path, mode) as handle:
            yield handle
    except OSError as error:
        raise cannot_write(path, error) from None


def _opened(path: str, mode: str):
    """``path`` opened for writing: a descriptor of this process through a copy of
    itself (sharing its position with the terminal log written there: opened again
    by name, the two would overwrite each other), after what was printed is flushed;
    a character device appended to; a file as asked."""
    options = {} if "b" in mode else _TEXT
    number = descriptor_of(path)
    if number == 1 and _STANDARD_OUTPUT_GONE:  # now /dev/null (TerminalHandler)
        raise _STANDARD_OUTPUT_GONE[0]
    if number is not None:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.flush()
        return os.fdopen(os.dup(number), mode, **options)
    if is_character_device(path):
        mode = mode.replace("w", "a")
    return open(path, mode, **options)


_TEXT = {"encoding": "utf-8", "errors": "backslashreplace"}


def write_text(text: str | Iterable[str], path: str) -> None:
    """``text``, or its pieces one after another, into ``path`` (a temporary file of
    an :class:`OutputSet`).

    Parameters
    ----------
    text : str or iterable of str
        The text, or its pieces.
    path : str
        Where to write it.
    """
    with written(path) as handle:
        handle.writelines([text] if isinstance(text, str) else text)


def write_json(document: dict, path: str) -> None:
    """Indented for people; compact (and several times faster to write) for documents
    describing thousands of files, written a piece at a time; NaN and infinity as null.

    Parameters
    ----------
    document : dict
        The JSON document (``report.document.json_document``, which may leave NaN and
        infinity in it).
    path : str
        Where to write it.
    """
    if len(document["inputs"]) <= COMPACT_JSON_INPUTS:
        write_text(json_text(document, indent=2) + "\n", path)
    else:
        write_text(itertools.chain(compact_json_pieces(document), ["\n"]), path)


class LogBuffer(logging.Handler):
    """The log file's lines, kept in memory until the run has succeeded and then
    written in one go (:meth:`write`): a run killed or crashed on its way (by the
    out-of-memory killer, or a file truncated under its memory map) leaves no
    temporary file of the log behind."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 (logging's own convention)
            self.handleError(record)

    def write(self, path: str) -> None:
        """Every line so far into ``path`` (the log's temporary file, or a device); a
        failure (a full disk) is one sentence naming the log.

        Parameters
        ----------
        path : str
            Where to write.
        """
        with written(path) as handle:
            handle.writelines(self.lines)


class TerminalHandler(logging.StreamHandler):
    """Log lines to standard output until it goes away (``| head``, ``> /dev/full``):
    then terminal output stops quietly and the run goes on (the log file and the other
    outputs are still written), as a good Unix tool does."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # EPIPE, ENOSPC, EIO, ...
            _STANDARD_OUTPUT_GONE[:] = [OSError(error.errno, error.strerror)]
            self._stop()
            return
        super().handleError(record)

    def _stop(self) -> None:
        """No more output to this stream, nor at exit, when Python flushes it."""
        self.stream = open(os.devnull, "w", encoding="utf-8")
        standard_output_discarded()


@contextlib.contextmanager
def logging_to(keep_log: bool, verbose: int, quiet: bool = False):
    """Informative lines to the terminal (stdout) and, where ``keep_log``, to a
    :class:`LogBuffer` for the log file, as DIALS programs do. ``quiet``: nothing at
    all (MPI ranks other than 0). Yields the buffer (None without one).

    Parameters
    ----------
    keep_log : bool
        Keep the lines for a log file.
    verbose : int
        ``-v`` count: debug lines where positive.
    quiet : bool
        Nothing at all (MPI ranks other than 0).
    """
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    console = TerminalHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    # Standard output closed (>&-): no terminal log (not standard error instead).
    handlers: list[logging.Handler] = [] if quiet or sys.stdout is None else [console]
    file_handler = None
    if keep_log:
        file_handler = LogBuffer()
        file_handler.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(file_handler)
    package_logger = logging.getLogger("dials_spot_size_analysis")
    for handler in handlers:
        logger.addHandler(handler)
        package_logger.addHandler(handler)
    try:
        yield file_handler
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            package_logger.removeHandler(handler)
            handler.close()
