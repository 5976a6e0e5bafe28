"""Printing what was asked for to standard output (help, version, parameters), where
it may be closed, go away or be full. Standard library only, so that ``--version`` is
answered before the program's imports."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

from .output_paths import OutputError


def standard_output_discarded() -> None:
    """Standard output pointed at /dev/null: what is left in its buffer, flushed by
    Python at exit, cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def printed(show: Callable[[], None]) -> None:
    """Run ``show``, which prints to standard output (help, version, parameters):
    nothing where standard output is closed; stopped quietly where it goes away
    (``| head -1``); one sentence where it cannot be written (a full disk).

    Parameters
    ----------
    show : callable
        Prints what is asked for.

    Raises
    ------
    OutputError
        Where standard output cannot be written.
    """
    if sys.stdout is None:  # closed (>&-)
        return
    try:
        show()
        sys.stdout.flush()
    except BrokenPipeError:
        standard_output_discarded()
    except OSError as error:
        standard_output_discarded()
        raise OutputError(
            f"standard output cannot be written ({error.strerror}): free some space, "
            "or send it elsewhere"
        ) from None
