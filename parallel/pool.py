"""Files measured in this process or over worker processes, batches sent back by pipe.

A plain ``multiprocessing.Pool`` costs the parent several times more CPU in its helper
threads, which on a two-core machine comes out of the workers' share; here each worker
claims the next chunk of files from a shared counter (keeping every core busy whatever
the file sizes) and sends one batch per chunk through its own pipe. The parent claims
chunks from the same counter and measures them itself whenever no batch is waiting
for it, so ``nproc`` processes measure in all. Workers die with their parent: they
hold no read end of any pipe (so a write to a dead parent fails at once) and, on
Linux, the kernel kills them when the parent dies.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable, Sequence

import numpy as np

from ..algorithms.geometry import ExperimentGeometry
from ..errors import SpotSizeAnalysisError
from ..formats.shoeboxes import HEADER_BYTES, count_pixels_streaming
from ..formats.source import MAP_FROM_BYTES, read_whole
from .batches import FILES_PER_BATCH, Batch, BatchCollector, pack, packed_as_measured
from .measure_file import MeasureRequest
from .measure_stills import measure_sources
from .tuning import scipy_linalg_hidden

PR_SET_PDEATHSIG = 1  # linux/prctl.h
OUT_OF_MEMORY = (
    "out of memory: no output was written; free memory, or measure fewer files at "
    "once or with fewer processes (mp.nproc)"
)


class WorkerError(SpotSizeAnalysisError, RuntimeError):
    """A worker process failed in a way no file explains (a bug, or it was killed):
    one sentence; a bug's traceback is kept in ``details``."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


def warm_up_kernels(hide_scipy_linalg: bool = True) -> None:
    """Load the compiled kernels now (from numba's cache, or compiling them once), so
    that processes forked from this one start with them ready.

    Parameters
    ----------
    hide_scipy_linalg : bool
        Skip numba's probe of scipy's BLAS (see ``tuning.scipy_linalg_hidden``), for a
        process that runs only these kernels.
    """
    if not hide_scipy_linalg:
        _call_kernels()
        return
    try:
        with scipy_linalg_hidden():
            _call_kernels()
    except ImportError:  # a numba that needs scipy for more than the probe
        _call_kernels()


def _call_kernels() -> None:
    # Through the real code paths, with read-only arrays like a file's bytes, so that
    # the kernels are loaded for exactly the argument types of real calls.
    two_empty_records = np.frombuffer(bytes(2 * HEADER_BYTES), np.uint8)
    count_pixels_streaming(two_empty_records, 2, 4)
    index = np.zeros(1, np.int64)
    positions = np.frombuffer(bytes(24), np.float64).reshape(1, 3)
    for xy in (positions, np.zeros((1, 2))):
        ExperimentGeometry([]).d_spacings(xy, index, index)


def resolve_nproc(nproc: Any) -> int:
    """``Auto`` (or None) means every core this process may use.

    Parameters
    ----------
    nproc : int, str or None
        ``mp.nproc`` as given: a number, ``"Auto"`` or None.

    Returns
    -------
    int
        The number of processes, at least 1.

    Raises
    ------
    ValueError
        Where ``nproc`` is neither ``Auto`` nor a number.
    """
    if nproc is None or str(nproc) == "Auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    return max(1, int(nproc))


# Where dials.integrate (dials.util.system.memory_limit) looks for a limit below the
# machine's memory, in its order: cgroups v1 hard and soft limits, v2 max, high, low.
CGROUP_MEMORY_LIMITS = (
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    "/sys/fs/cgroup/memory/memory.soft_limit_in_bytes",
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory.high",
    "/sys/fs/cgroup/memory.low",
)


def machine_memory_bytes(
    limit_files: Sequence[str] = CGROUP_MEMORY_LIMITS,
) -> int | None:
    """This machine's memory in bytes as dials.integrate reads it: the physical
    memory (the total, not what is free), lowered to a cgroup's limit or the RSS
    resource limit where one is set and smaller.

    Parameters
    ----------
    limit_files : sequence of str
        Files holding a limit in bytes; one absent, unreadable or not a number (a
        cgroup's "max") sets none.

    Returns
    -------
    int or None
        Bytes, or None where the system does not say its physical memory.
    """
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf, or not this name
        return None
    if pages <= 0 or page_size <= 0:
        return None
    limit = int(pages) * int(page_size)
    for path in limit_files:
        try:
            with open(path) as handle:
                value = int(handle.read())
        except (OSError, ValueError):
            continue
        if value > 0:
            limit = min(limit, value)
    try:
        import resource  # not on Windows
    except ImportError:
        return limit
    hard = resource.getrlimit(resource.RLIMIT_RSS)[1]
    return hard if 0 < hard < limit else limit


def _progress(total: int, show: bool | None):
    """A tqdm bar on an interactive terminal; nothing in a pipeline or without tqdm."""
    if show is None:
        show = sys.stderr.isatty()
    if not show or total < 2:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total, unit="file", desc="Measuring", file=sys.stderr, leave=False
    )


def run_serial_or_pool(
    sources: Sequence,
    request: MeasureRequest,
    nproc: int = 1,
    progress: bool | None = None,
    stop_requested: Callable[[], None] | None = None,
) -> list[Batch]:
    """Every source measured, in this process or over ``nproc`` worker processes, as
    batches in whatever order they finish (``merge`` restores the input order).

    Parameters
    ----------
    sources : sequence
        Paths, msgpack bytes or tables (see ``measure_file.load_table``).
    request : MeasureRequest
        What every process needs (experiments, options).
    nproc : int
        The number of worker processes; 1 (or a single source) measures here.
    progress : bool, optional
        Show a progress bar; None shows one on an interactive terminal.
    stop_requested : callable, optional
        Called after each chunk measured or received, and where a worker ended
        abnormally; raises to end the run.

    Returns
    -------
    list of Batch
        The outcomes packed into batches (a problem with a file is its outcome's
        error, not an exception).
    """
    items = list(enumerate(sources))
    stop_requested = stop_requested or _go_on
    bar = _progress(len(items), progress)
    try:
        if nproc <= 1 or len(items) <= 1:

            def measured():
                for start in range(0, len(items), FILES_PER_BATCH):
                    chunk = items[start : start + FILES_PER_BATCH]
                    yield from measure_sources(chunk, request, len(items))
                    stop_requested()
                    if bar is not None:
                        bar.update(len(chunk))

            return packed_as_measured(measured())
        size = max(1, min(FILES_PER_BATCH, len(items) // (nproc * 8)))
        chunks = [items[start : start + size] for start in range(0, len(items), size)]
        return _run_in_processes(
            chunks, request, len(items), nproc, bar, stop_requested
        )
    finally:
        if bar is not None:
            bar.close()


def _go_on() -> None:
    """No stop requested."""


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (elsewhere: nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _quiet_about_interrupts(unraisable) -> None:
    """Ctrl-C reaches the workers too, sometimes inside a callback from C (numba's
    cache) where it cannot be raised: the parent says it was interrupted, once."""
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _worker(chunks, claimed, lock, sender, inherited, parent, request, n_sources):
    """A worker: claim the next unclaimed chunk, measure it, send its batch; until none
    is left. Garbage collection runs here as usual (a fork inherits the parent's pause),
    so that a long run's reference cycles, such as those of failed files, are freed."""
    _die_with_parent(parent)
    # The parent's handlers are not the worker's: it ends quietly when terminated.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.unraisablehook = _quiet_about_interrupts
    for receiver in inherited:  # read ends of the pipes: the parent's alone
        receiver.close()
    gc.enable()
    stopped_by = None
    try:
        while True:
            with lock:
                number = claimed.value
                claimed.value = number + 1
            if number >= len(chunks):
                return
            sender.send(pack(measure_sources(chunks[number], request, n_sources)))
    except KeyboardInterrupt:  # the parent is interrupted too, and says so
        stopped_by = signal.SIGINT
    except MemoryError:
        _send_quietly(sender, WorkerError(OUT_OF_MEMORY))
    except Exception as error:  # noqa: BLE001 (reported by the parent, which stops)
        _send_quietly(
            sender,
            WorkerError(
                f"a worker process failed ({error!r}): please report this "
                "as a bug, with the command and the files",
                traceback.format_exc(),
            ),
        )
    finally:
        sender.close()
    if stopped_by is not None:  # interrupted mid-chunk: status 0 would pass for done
        sys.exit(128 + stopped_by)


def _send_quietly(sender, message) -> None:
    """Send ``message`` to the parent, unless it has gone."""
    try:
        sender.send(message)
    except OSError:
        pass


PIPE_BYTES = 1 << 20  # a batch of 64 stills' results is about 0.6 MB


def _widen(connection) -> None:
    """Let the pipe hold a whole batch (Linux: 64 KB by default), so that it crosses
    in a few reads instead of one per 64 KB, each waking the other process. Where
    the system refuses, the pipe stays as it is."""
    try:
        import fcntl  # POSIX only

        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


class _Workers:
    """The worker processes of one run, each with the read end of its own pipe."""

    def __init__(
        self, context, chunks, request, n_sources, claimed, lock, stop_requested
    ):
        self._context = context
        self.chunks, self.claimed, self.lock = chunks, claimed, lock
        self.request, self.n_sources = request, n_sources
        self.stop_requested = stop_requested  # see run_serial_or_pool
        self.processes: list = []
        self.receivers: list = []
        self.running: dict = {}  # sentinel -> a process not yet seen to end

    def start(self, count: int) -> None:
        """Start ``count`` more workers."""
        forking = self._context.get_start_method() == "fork"
        # Objects that exist now are left out of the forked workers' garbage
        # collections, which would otherwise touch (and so copy) every page of this
        # process's heap.
        frozen_already = gc.get_freeze_count() > 0
        gc.freeze()
        try:
            for _ in range(count):
                receiver, sender = self._context.Pipe(duplex=False)
                _widen(receiver)
                self.receivers.append(receiver)
                worker = self._context.Process(
                    target=_worker,
                    args=(
                        self.chunks,
                        self.claimed,
                        self.lock,
                        sender,
                        list(self.receivers) if forking else [],  # a fork inherits
                        os.getpid(),
                        self.request,
                        self.n_sources,
                    ),
                    daemon=True,
                )
                worker.start()
                sender.close()  # else this process (and later workers) would hold it
                self.processes.append(worker)
                self.running[worker.sentinel] = worker
        finally:
            if not frozen_already:  # else whoever froze the heap unfreezes it
                gc.unfreeze()

    def ended(self, sentinel) -> None:
        """Note that a worker ended; raise unless it succeeded (its pipe drains)."""
        worker = self.running.pop(sentinel)
        worker.join()
        if worker.exitcode != 0:  # killed, perhaps holding the claim lock
            self.stop_requested()  # this process was signalled too
            raise WorkerError(_death_message(worker.exitcode))

    def check_alive(self) -> None:
        """Raise where a worker ended abnormally."""
        for sentinel, worker in list(self.running.items()):
            if worker.exitcode is not None:
                self.ended(sentinel)


LOCK_WAIT_SECONDS = 0.1  # between looks at whether a worker died holding the lock


def _read_not_mapped(source) -> bool:
    """Whether measuring ``source`` maps no file: a file that another program truncates
    while it is mapped kills the process touching it by SIGBUS, which a worker's
    parent reports but which would end the parent without a sentence. Bytes are in
    memory; files below MAP_FROM_BYTES are read whole (a missing or unreadable one is
    reported when it is read); a table object's arrays may be views of a mapped
    file."""
    if isinstance(source, (bytes, bytearray)):
        return True
    if not isinstance(source, (str, os.PathLike)):
        return False
    try:
        return os.stat(source).st_size < MAP_FROM_BYTES
    except (OSError, ValueError):
        return True


class _ParentShare:
    """The chunks this process measures itself, whenever no batch is waiting for it:
    with ``nproc`` processes in all rather than ``nproc`` workers beside it, no batch
    of this share is pickled, and two cores are not shared by three processes. It
    takes only chunks of files read whole (see :func:`_read_not_mapped`), and reads
    them within ``read_whole`` (a file grown since it was looked at is read, not
    mapped); at the first other chunk it stops, and a worker is started in its
    place."""

    def __init__(self, workers: _Workers):
        self._workers = workers  # whose chunks, counter and lock it shares
        self.left_to_workers = False  # stopped at a chunk of a mapped file

    def next_batch(self) -> Batch | None:
        """The next unclaimed chunk measured here, or None where there is none this
        process may take."""
        number = self._claim()
        if number is None:
            return None
        workers = self._workers
        with read_whole():  # a file grown past MAP_FROM_BYTES since it was looked at
            outcomes = measure_sources(
                workers.chunks[number], workers.request, workers.n_sources
            )
        return pack(outcomes)

    def _claim(self) -> int | None:
        workers = self._workers
        # A worker killed while holding the lock would hold it for ever.
        while not workers.lock.acquire(timeout=LOCK_WAIT_SECONDS):
            workers.check_alive()
        try:
            number = workers.claimed.value
            if number >= len(workers.chunks):
                return None
            if not all(
                _read_not_mapped(source) for _, source in workers.chunks[number]
            ):
                self.left_to_workers = True
                return None
            workers.claimed.value = number + 1
            return number
        finally:
            workers.lock.release()


def _receive(workers: _Workers, bar, share: _ParentShare | None) -> list[Batch]:
    collected = BatchCollector(workers.n_sources)

    def take(batch: Batch) -> None:
        collected.add(batch)
        if bar is not None:
            bar.update(len(batch.outcomes))
        workers.stop_requested()  # between chunks, a signal only remembered

    while workers.receivers or share is not None:
        waited_for = workers.receivers + list(workers.running)
        ready_ones = wait(waited_for, timeout=None if share is None else 0)
        if not ready_ones:  # nothing to receive: measure a chunk here
            batch = share.next_batch()
            if batch is None:
                if share.left_to_workers:
                    workers.start(1)
                share = None
                continue
            take(batch)
            continue
        for ready in ready_ones:
            if ready in workers.running:  # fine if it succeeded (its pipe drains)
                workers.ended(ready)
                continue
            try:
                message = ready.recv()
            except EOFError:  # that worker has sent everything
                workers.receivers.remove(ready)
                continue
            if isinstance(message, WorkerError):
                raise message
            take(message)
    return [collected.batch()]


def _death_message(exitcode: int) -> str:
    for number in (signal.SIGINT, signal.SIGTERM):
        if exitcode in (-number, 128 + number):
            return (
                f"a worker process was stopped by {signal.Signals(number).name}: no "
                "output was written; run again"
            )
    if exitcode == -signal.SIGBUS:
        return (
            "a worker process was killed by SIGBUS: a reflection file was truncated "
            "or replaced while it was being read; run again once the files are complete"
        )
    return (
        f"a worker process ended abnormally (exit code {exitcode}; was it killed, "
        "e.g. for lack of memory?)"
    )


def _run_in_processes(
    chunks: list,
    request: MeasureRequest,
    n_sources: int,
    nproc: int,
    bar,
    stop_requested: Callable[[], None],
) -> list[Batch]:
    """Every chunk measured by ``nproc`` processes: ``nproc - 1`` workers and this one
    (see :class:`_ParentShare`), or ``nproc`` workers where the first chunk holds a
    file that would be mapped."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "fork":
        warm_up_kernels(hide_scipy_linalg=False)  # forked workers inherit them
    # The shared counter and its lock live until the workers are done: a spawned
    # worker may unpickle them well after it was started.
    claimed, lock = context.RawValue("q", 0), context.Lock()
    workers = _Workers(
        context, chunks, request, n_sources, claimed, lock, stop_requested
    )
    workers.stop_requested()  # a signal remembered while numba loaded the kernels
    share = None
    if all(_read_not_mapped(source) for _, source in chunks[0]):
        share = _ParentShare(workers)
    try:
        workers.start(min(nproc, len(chunks)) - (share is not None))
        batches = _receive(workers, bar, share)
        for worker in workers.processes:
            worker.join()
        workers.check_alive()  # one whose pipe closed before its end was seen
        if sum(len(batch.outcomes) for batch in batches) != n_sources:
            raise WorkerError("a worker process ended before measuring all its files")
        return batches
    finally:
        for worker in workers.processes:
            if worker.is_alive():
                worker.terminate()
