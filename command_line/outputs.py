"""Writing the outputs: each file whole or not at all, and the log as DIALS programs
keep it (to the terminal and to a file written fresh each run)."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sys
import tempfile
from typing import Iterable

from .. import PROGRAM
from ..errors import SpotSizeAnalysisError
from ..report.document import compact_json_pieces

logger = logging.getLogger(PROGRAM)
COMPACT_JSON_INPUTS = 500


class OutputError(SpotSizeAnalysisError):
    """An output that cannot be written where it was asked for."""


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


@contextlib.contextmanager
def atomic_output(path: str):
    """A temporary file beside ``path``, renamed onto it only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
        )
    except OSError as error:
        raise OutputError(
            f"{path}: cannot be written ({error.strerror}): choose another output path"
        ) from None
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def check_writable(path: str | None) -> None:
    """Refuse, before any work, an output that could not be written."""
    if not path:
        return
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory: choose a file name for this output")
    try:
        with tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(path))):
            pass
    except OSError as error:
        raise OutputError(
            f"{path}: cannot be written ({error.strerror}): choose another output path"
        ) from None


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


class TerminalHandler(logging.StreamHandler):
    """Log lines to standard output until it goes away (``| head``, ``> /dev/full``):
    then terminal output stops quietly and the run goes on (the log file and the other
    outputs are still written), as a good Unix tool does."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # EPIPE, ENOSPC, EIO, ...
            self._stop()
            return
        super().handleError(record)

    def _stop(self) -> None:
        """No more output to this stream, nor at exit, when Python flushes it."""
        self.stream = open(os.devnull, "w", encoding="utf-8")
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


@contextlib.contextmanager
def logging_to(log_path: str | None, verbose: int, quiet: bool = False):
    """Informative lines to the terminal (stdout) and the log file, as DIALS programs
    do; the log file appears only when the run succeeds. ``quiet``: nothing at all
    (MPI ranks other than 0)."""
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    console = TerminalHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [] if quiet else [console]
    package_logger = logging.getLogger("dials_spot_size_analysis")
    with contextlib.ExitStack() as stack:
        if log_path:
            temporary = stack.enter_context(atomic_output(log_path))
            file_handler = logging.FileHandler(temporary, mode="w", encoding="utf-8")
            file_handler.setFormatter(logging.Formatter("%(message)s"))
            handlers.append(file_handler)
        for handler in handlers:
            logger.addHandler(handler)
            package_logger.addHandler(handler)
        try:
            yield
        finally:
            for handler in handlers:
                logger.removeHandler(handler)
                package_logger.removeHandler(handler)
                handler.close()
