"""Signals a run must answer in one sentence, leaving nothing behind.

SIGTERM (what ``timeout`` and batch schedulers send) is turned into an exception, as
Python does with SIGINT, so that every temporary file is removed on the way out. A
signal is also remembered: code that swallows exceptions (a library callback) cannot
hide it, since the run checks before it writes its outputs.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, like KeyboardInterrupt: not an error to handle
    but a request to stop)."""


NOTHING_WRITTEN = {
    signal.SIGINT: (130, "interrupted: no output was written"),
    signal.SIGTERM: (143, "terminated (SIGTERM): no output was written"),
}  # the exit status and sentence of a stop before any output was put in place


def _stopped_by(number: int) -> str:
    if number == signal.SIGTERM:
        return "terminated (SIGTERM)"
    return "interrupted (SIGINT)"


class StoppedAfterOutputs(BaseException):
    """SIGINT or SIGTERM arrived while the outputs were being put in place, which was
    finished first, or after: every output is written."""

    def __init__(self, number: int, while_placing: bool = True):
        when = (
            "while the outputs were being"
            if while_placing
            else "after the outputs were"
        )
        super().__init__(
            f"{_stopped_by(number)} {when} put in place: every output was written"
        )
        self.exit_status = 128 + number


class StoppedWhileStreaming(BaseException):
    """SIGINT or SIGTERM arrived once outputs had begun to go through descriptors
    (such as standard output, a pipe whose reader may be slow), before the files were
    put in place: what a descriptor received cannot be taken back, and no file output
    was written.

    Parameters
    ----------
    number : int
        The signal.
    streamed : list of (str, bool)
        Each descriptor's name (``/dev/stdout``) that output began to go through, and
        whether all of it did.
    """

    def __init__(self, number: int, streamed: list[tuple[str, bool]]):
        partly = [name for name, whole in streamed if not whole]
        wholly = [name for name, whole in streamed if whole]
        if partly:
            before = "".join(f"; {name} received all of its output" for name in wholly)
            what = f"while {partly[0]} received its output: it may hold part of it{before};"
        else:
            whose = "its output" if len(wholly) == 1 else "their outputs"
            what = f"after {' and '.join(wholly)} received all of {whose}:"
        super().__init__(f"{_stopped_by(number)} {what} no other output was written")
        self.exit_status = 128 + number


def signal_of(stop: BaseException) -> int:
    """The signal a stop came from: SIGTERM for :class:`Terminated`, else SIGINT.

    Parameters
    ----------
    stop : BaseException
        ``KeyboardInterrupt`` or :class:`Terminated`.
    """
    return signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT


def stop_for(number: int) -> BaseException:
    """The exception a stop signal raises (the converse of :func:`signal_of`):
    :class:`Terminated` for SIGTERM, else ``KeyboardInterrupt``.

    Parameters
    ----------
    number : int
        SIGINT or SIGTERM.
    """
    return Terminated() if number == signal.SIGTERM else KeyboardInterrupt()


STOPS = (KeyboardInterrupt, Terminated, StoppedAfterOutputs, StoppedWhileStreaming)


def stop_behind(error: BaseException) -> BaseException | None:
    """The stop (one of :data:`STOPS`) that *error* is, or was raised while handling.

    A signal's exception can break library code it passes through: in Python 3.11,
    argparse's intermixed parsing, stopped in its ``try``, fails in its ``finally``
    with an ``AttributeError`` that hides the stop. The run was still asked to stop,
    and says so.

    Parameters
    ----------
    error : BaseException
        What ended the run; its causes and contexts are followed.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, STOPS):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


COMPILER_PACKAGES = ("llvmlite", "numba")


def in_compiler(frame) -> bool:
    """Whether the signal arrived while numba or LLVM (often inside a callback from C)
    was running: an exception raised there can leave the compiler's state broken and
    crash the interpreter at exit, so the signal is only remembered."""
    while frame is not None:
        name = frame.f_code.co_filename
        if any(f"{package}/" in name for package in COMPILER_PACKAGES):
            return True
        frame = frame.f_back
    return False


class StopSignals:
    """In this block, SIGTERM raises :class:`Terminated` and SIGINT
    ``KeyboardInterrupt`` (:class:`StoppedAfterOutputs` once the outputs are in place,
    see :meth:`held`); :meth:`check` raises again if either arrived at all. The
    handlers found on entry are given back at the end."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._unraisable = None
        self._holding = False
        self.outputs_in_place = False

    def _handle(self, number: int, frame) -> None:
        self.received = number
        if self._holding:
            return  # see held()
        if in_compiler(frame):
            return  # raised there, it could leave LLVM broken: check() raises it
        raise self._stop(number)

    def _stop(self, number: int) -> BaseException:
        if self.outputs_in_place:  # "no output was written" would be false
            return StoppedAfterOutputs(number, while_placing=False)
        return stop_for(number)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
            self._unraisable = sys.unraisablehook
            sys.unraisablehook = self._quiet_about_stops
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
        if self._unraisable is not None:
            sys.unraisablehook, self._unraisable = self._unraisable, None

    def _quiet_about_stops(self, unraisable) -> None:
        """A signal's exception raised where Python cannot raise it (a callback from C,
        such as numba's cache) is printed as "Exception ignored"; it is remembered and
        raised again by :meth:`check`, so say nothing of it here."""
        if issubclass(unraisable.exc_type, STOPS):
            return
        self._unraisable(unraisable)

    @contextlib.contextmanager
    def held(self):
        """In this block a signal is only remembered, not raised: what the block does
        (put every output in place, or take all back) is not left half done. One that
        arrived in it is raised after it as :class:`StoppedAfterOutputs`, and so is
        one that arrives later in the run, the outputs being in place."""
        self.check()
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        self.outputs_in_place = True
        if self.received is not None:
            raise StoppedAfterOutputs(self.received)

    def check(self) -> None:
        """Raise if a signal arrived, even if something swallowed its exception."""
        if self.received is not None:
            raise self._stop(self.received)
