"""Many reflection files: measured one by one, in parallel, merged exactly.

Each reflection table is measured on its own (:func:`measure_one`), in this process, in a
pool of ``nproc`` processes, or spread over MPI ranks; every outcome carries its input
position, and the outcomes are merged in input order, so the result is identical however
the work was spread. A table that cannot be read, or does not belong to the experiments
given, becomes a skipped file with its reason (or, on request, the end of the run).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .algorithms.geometry import ExperimentGeometry
from .algorithms.spot_sizes import DatasetSelection, SelectionError, SpotSizes, measure
from .engine import warm_up
from .formats import (
    FileFormatError,
    ReflectionTable,
    read_experiments,
    read_reflections,
)
from .formats.experiments import Experiment, ExperimentList
from .formats.reflections import parse_reflections
from .formats.source import without_compression_suffix


@dataclass
class Settings:
    """What every worker needs: the experiments and the selection parameters."""

    experiments: list[Experiment]
    list_offsets: list[tuple[int, int]]
    have_experiment_lists: bool
    require: Any
    exclude: Any
    mask_code: list[str]
    engine: str = "auto"
    geometry: ExperimentGeometry | None = None
    # Source index -> the .expt written beside that .refl (read by whoever measures it).
    paired_experiments: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.geometry is None:
            self.geometry = ExperimentGeometry(self.experiments)


@dataclass
class FileOutcome:
    index: int
    name: str
    spot_sizes: SpotSizes | None = None
    selection: DatasetSelection | None = None
    info: dict = field(default_factory=dict)
    labels: list[str] | None = (
        None  # experiment identifiers of local indices (no .expt given)
    )
    error: str | None = None
    error_is_format: bool = (
        False  # a FileFormatError (else the data did not fit the request)
    )
    n_rows: int = 0  # rows measured, once packed into a Batch

    def raise_error(self) -> None:
        """Raise this outcome's problem again, as its own kind of error."""
        if self.error_is_format:
            raise FileFormatError(None, self.error)
        raise SelectionError(self.error)


def combine_experiments(
    experiment_lists: Sequence[ExperimentList],
) -> tuple[list[Experiment], list[tuple[int, int]]]:
    """The union of the experiments (an identifier counts once) and where each list's
    experiments start in it (for old tables that number experiments by position)."""
    union: list[Experiment] = []
    offsets: list[tuple[int, int]] = []
    seen: dict[str, int] = {}
    for experiment_list in experiment_lists:
        offsets.append((len(union), len(experiment_list)))
        for experiment in experiment_list:
            if experiment.identifier and experiment.identifier in seen:
                continue
            if experiment.identifier:
                seen[experiment.identifier] = len(union)
            union.append(experiment)
    return union, offsets


def _source_name(source, index: int) -> str:
    return (
        os.fspath(source)
        if isinstance(source, (str, os.PathLike))
        else f"reflections {index}"
    )


def load_table(source, engine: str = "auto") -> ReflectionTable:
    if isinstance(source, ReflectionTable):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_reflections(source, engine=engine, index_shoeboxes=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return parse_reflections(source, engine=engine, index_shoeboxes=False)
    if hasattr(source, "as_msgpack"):  # a DIALS flex.reflection_table
        return parse_reflections(
            source.as_msgpack(), engine=engine, index_shoeboxes=False
        )
    raise TypeError(
        f"cannot read reflections from {type(source).__name__}: give a path, bytes or a reflection table"
    )


def measure_one(index: int, source, settings: Settings, n_sources: int) -> FileOutcome:
    """Read and measure one table; a problem with it becomes the outcome's ``error``."""
    name = _source_name(source, index)
    paired = settings.paired_experiments.get(index)
    try:
        table = load_table(source, settings.engine)
        experiments, labels = settings.geometry, None
        legacy_offset, legacy_count = 0, None
        if paired is not None:
            # Its own experiment list: indices local to it, merged later by identifier.
            experiment_list = read_experiments(paired)
            experiments, labels = (
                ExperimentGeometry(list(experiment_list)),
                experiment_list.identifiers(),
            )
            if not table.identifiers:
                legacy_count = len(experiment_list)
        elif not settings.have_experiment_lists:
            # Experiments known by identifier only; merged across files by identifier.
            if table.identifiers:
                labels = [table.identifiers[k] for k in sorted(table.identifiers)]
            else:
                ids = table.columns.get("id")
                legacy_count = (
                    int(ids.max()) + 1
                    if ids is not None and len(ids) and ids.max() >= 0
                    else 1
                )
                labels = [""] * legacy_count
            experiments = [Experiment(identifier=label) for label in labels]
        elif not table.identifiers:
            offsets = settings.list_offsets
            legacy_offset, legacy_count = offsets[
                index if len(offsets) == n_sources else 0
            ]
        spot_sizes, selection = measure(
            table,
            experiments,
            require=settings.require,
            exclude=settings.exclude,
            mask_code=settings.mask_code,
            dataset=index,
            name=name,
            engine=settings.engine,
            legacy_offset=legacy_offset,
            legacy_count=legacy_count,
            release_pages=True,
        )
    except (FileFormatError, SelectionError) as error:
        return FileOutcome(
            index=index,
            name=name,
            error=str(error),
            error_is_format=isinstance(error, FileFormatError),
        )
    info = {
        "reflections": name,
        **({"experiments": paired} if paired is not None else {}),
        "n_rows": table.nrows,
        "table_version": table.version,
        "has_shoeboxes": table.shoebox_column_name is not None,
        "experiment_identifiers": selection.experiment_identifiers,
        "skipped_columns": sorted(table.skipped_columns),
    }
    return FileOutcome(
        index=index,
        name=name,
        spot_sizes=spot_sizes,
        selection=selection,
        info=info,
        labels=labels,
    )


# ------------------------------------------------------------------ running the work


@dataclass
class Batch:
    """Outcomes of several sources, their measured rows packed into one SpotSizes (in
    outcome order, ``outcome.n_rows`` each): one set of arrays crosses between processes
    instead of one per file."""

    spot_sizes: SpotSizes
    outcomes: list[FileOutcome]


def pack(outcomes: list[FileOutcome]) -> Batch:
    for outcome in outcomes:
        outcome.n_rows = (
            len(outcome.spot_sizes) if outcome.spot_sizes is not None else 0
        )
    packed = SpotSizes.concatenate(
        [o.spot_sizes for o in outcomes if o.spot_sizes is not None]
    )
    for outcome in outcomes:
        outcome.spot_sizes = None
    return Batch(packed, outcomes)


class WorkerError(RuntimeError):
    """A worker process failed in a way no file explains (a bug, or the process was killed)."""


def _measure_claimed_chunks(
    chunks, claimed, lock, sender, settings: Settings, n_sources: int
) -> None:
    """A worker: claim the next unclaimed chunk, measure it, send its batch; until none is
    left. Claiming from a shared counter keeps both cores busy whatever the file sizes.
    Garbage collection runs here as usual (a fork inherits the parent's pause), so that a
    long run's reference cycles, such as those of files that failed, are freed."""
    gc.enable()
    try:
        while True:
            with lock:
                number = claimed.value
                claimed.value = number + 1
            if number >= len(chunks):
                return
            sender.send(
                pack(
                    [
                        measure_one(index, source, settings, n_sources)
                        for index, source in chunks[number]
                    ]
                )
            )
    except KeyboardInterrupt:  # the parent is interrupted too, and says so
        return
    except Exception as error:  # noqa: BLE001 (reported by the parent, which stops the run)
        import traceback

        try:
            sender.send(
                WorkerError(
                    f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
                )
            )
        except OSError:
            pass  # the parent has gone
    finally:
        sender.close()


def _run_in_processes(
    chunks: list, settings: Settings, n_sources: int, nproc: int, bar
) -> list[Batch]:
    """Every chunk measured by ``nproc`` worker processes, each sending back one batch per
    chunk through its own pipe. (A plain multiprocessing.Pool costs the parent several
    times more CPU in its helper threads, which on a two-core machine comes out of the
    workers' share.)"""
    import multiprocessing
    from multiprocessing.connection import wait

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "fork":
        warm_up(settings.engine)  # forked workers inherit the loaded kernels
    claimed, lock = context.RawValue("q", 0), context.Lock()
    workers, receivers, batches = [], [], []
    try:
        # Objects that exist now are left out of the forked workers' garbage collections,
        # which would otherwise touch (and so copy) every page of this process's heap.
        frozen_already = gc.get_freeze_count() > 0
        gc.freeze()
        try:
            for _ in range(min(nproc, len(chunks))):
                receiver, sender = context.Pipe(duplex=False)
                worker = context.Process(
                    target=_measure_claimed_chunks,
                    args=(chunks, claimed, lock, sender, settings, n_sources),
                    daemon=True,
                )
                worker.start()
                sender.close()  # else the parent (and later workers) would keep the pipe open
                workers.append(worker)
                receivers.append(receiver)
        finally:
            if (
                not frozen_already
            ):  # else whoever froze the heap unfreezes it (collection_paused)
                gc.unfreeze()
        running = {worker.sentinel: worker for worker in workers}
        while receivers:
            for ready in wait(receivers + list(running)):
                if (
                    ready in running
                ):  # a worker has ended: fine if it succeeded (its pipe drains)
                    worker = running.pop(ready)
                    worker.join()
                    if (
                        worker.exitcode != 0
                    ):  # killed (perhaps holding the claim lock): stop all
                        raise WorkerError(
                            f"a worker process ended abnormally (exit code {worker.exitcode}; was it killed, e.g. for lack of memory?)"
                        )
                    continue
                try:
                    message = ready.recv()
                except EOFError:  # that worker has sent everything
                    receivers.remove(ready)
                    continue
                if isinstance(message, WorkerError):
                    raise message
                batches.append(message)
                if bar is not None:
                    bar.update(len(message.outcomes))
        for worker in workers:
            worker.join()
        if sum(len(batch.outcomes) for batch in batches) != n_sources:
            raise WorkerError("a worker process ended before measuring all its files")
        return batches
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()


@contextlib.contextmanager
def collection_paused():
    """No automatic garbage collection in this block, and objects that exist on entry left
    out of any collection until exit. Per-file results are made by the thousand (100,000
    files: millions of objects, received, merged, none of them in reference cycles), and
    the collector would walk them, with numba's and cctbx's hundreds of thousands, again
    and again: receiving and merging 100,000 files' results took twice as long. Cycles
    made in the block are left to later collections. Where objects are frozen already (by
    the caller, or an enclosing block), they stay frozen; collection is left as found."""
    was_enabled = gc.isenabled()
    freeze = not gc.get_freeze_count()
    gc.disable()
    if freeze:
        gc.freeze()
    try:
        yield
    finally:
        if (
            freeze
        ):  # everything, including what the block made, back to the oldest generation
            gc.freeze()  # (two splices of lists, no walk; left in the youngest, the block's
            gc.unfreeze()  # millions would be walked by the first collections after it)
        if was_enabled:
            gc.enable()


def resolve_nproc(nproc) -> int:
    """``Auto`` (or None) means every core this process may use."""
    if nproc is None or str(nproc) == "Auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    return max(1, int(nproc))


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


def pair_by_name(
    reflection_files: Sequence[str], experiment_files: Sequence[str]
) -> tuple[dict[int, str], list[str]]:
    """Pair each ``x.refl`` with an ``x.expt`` in the same folder (as dials.stills_process
    and dials.index write them): returns {reflection index: experiment file} and the
    experiment files left unpaired, which describe every table."""
    folder = os.getcwd()

    def stem(path: str, suffix: str) -> str | None:
        name = without_compression_suffix(
            os.path.normpath(os.path.join(folder, path))
        )  # os.path.abspath, one getcwd for all
        return name[: -len(suffix)] if name.endswith(suffix) else None

    by_stem = {}
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
        return {}, list(
            experiment_files
        )  # one shared list, or pairs that are not one-to-one
    paired = set(pairs.values())
    return pairs, [path for path in experiment_files if path not in paired]


FILES_PER_BATCH = 64


def packed_as_measured(outcomes: Iterable[FileOutcome]) -> list[Batch]:
    """Outcomes packed FILES_PER_BATCH at a time as they come, so that each file's arrays
    are let go once packed rather than held, beside the packed copy, to the end."""
    batches, pending = [], []
    for outcome in outcomes:
        pending.append(outcome)
        if len(pending) == FILES_PER_BATCH:
            batches.append(pack(pending))
            pending = []
    return [*batches, pack(pending)] if pending or not batches else batches


def run_serial_or_pool(
    sources: Sequence, settings: Settings, nproc: int = 1, progress: bool | None = None
) -> list[Batch]:
    """Every source measured, in this process or over ``nproc`` worker processes, as
    batches in whatever order they finish (``merge`` restores the input order)."""
    items = list(enumerate(sources))
    bar = _progress(len(items), progress)
    try:
        if nproc <= 1 or len(items) <= 1:

            def measured():
                for index, source in items:
                    yield measure_one(index, source, settings, len(items))
                    if bar is not None:
                        bar.update()

            return packed_as_measured(measured())
        size = max(1, min(FILES_PER_BATCH, len(items) // (nproc * 8)))
        return _run_in_processes(
            [items[start : start + size] for start in range(0, len(items), size)],
            settings,
            len(items),
            nproc,
            bar,
        )
    finally:
        if bar is not None:
            bar.close()


def run_mpi(sources: Sequence, settings: Settings, comm=None) -> list[Batch] | None:
    """Rank r measures sources r, r+size, ...; rank 0 gathers every rank's batch (the
    merge puts them in input order); the other ranks return None."""
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    def measured():
        for index in range(rank, len(sources), size):
            try:
                yield measure_one(index, sources[index], settings, len(sources))
            except Exception as error:  # a rank that stopped here would leave the others waiting forever
                yield FileOutcome(
                    index=index,
                    name=_source_name(sources[index], index),
                    error=f"unexpected error: {type(error).__name__}: {error}",
                )

    gathered = comm.gather(packed_as_measured(measured()), root=0)
    return [batch for batches in gathered for batch in batches] if rank == 0 else None


def _load_malloc_trim():
    try:
        trim = ctypes.CDLL(
            "libc.so.6"
        ).malloc_trim  # glibc (Linux); elsewhere there is none
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def return_freed_memory() -> None:
    """Give the memory that has just been freed back to the operating system. glibc keeps
    freed blocks of a few dozen kilobytes (each batch's arrays) for reuse, so without this
    the merged rows would come on top of the batches' rows, not in their place."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _concatenated_releasing(batches: Sequence[Batch]) -> SpotSizes:
    """The batches' rows, one after another, built a column at a time; each batch's copy
    of a column is let go once it has been copied, so that the rows are held about once,
    not twice (with a million files, gigabytes)."""
    if len(batches) == 1:
        return batches[0].spot_sizes
    columns = {}
    for name in SpotSizes.__dataclass_fields__:
        columns[name] = np.concatenate(
            [getattr(batch.spot_sizes, name) for batch in batches]
        )
        for batch in batches:
            setattr(batch.spot_sizes, name, None)
        return_freed_memory()
    return SpotSizes(**columns)


def merge(
    batches: Sequence[Batch], settings: Settings
) -> tuple[SpotSizes, list[DatasetSelection], list[dict], list[dict], list[str]]:
    """Every measured row in input order (whichever process measured it): exactly what
    measuring all rows together gives. Returns the sizes, per-dataset selections, input
    descriptions, skipped files (file and reason) and the experiment labels that the
    sizes' experiment indices refer to. The batches' rows are used up: their arrays are
    released as they are merged."""
    # Worker pools send contiguous runs of sources, in any order: in order of their first
    # source, their rows are usually already in input order and need no gather below.
    batches = sorted(
        batches, key=lambda batch: min((o.index for o in batch.outcomes), default=-1)
    )
    located = []  # (outcome, batch number, first row in that batch)
    for number, batch in enumerate(batches):
        start = 0
        for outcome in batch.outcomes:
            located.append((outcome, number, start))
            start += outcome.n_rows
    located.sort(key=lambda entry: entry[0].index)
    labels = [e.identifier for e in settings.experiments]
    position = {label: i for i, label in enumerate(labels) if label}

    def global_index(label: str) -> int:
        if label not in position:
            position[label] = len(labels)
            labels.append(label)
        return position[label]

    batch_offsets = [
        0,
        *itertools.accumulate(len(batch.spot_sizes) for batch in batches),
    ]
    row_starts, row_counts = [], []
    label_base: dict[
        int, int
    ] = {}  # source index -> its first label in flat_labels (local experiment indices)
    flat_labels: list[int] = []
    selections, inputs, skipped = [], [], []
    for outcome, number, start in located:
        if outcome.error is not None:
            skipped.append({"file": outcome.name, "reason": outcome.error})
            continue
        row_starts.append(batch_offsets[number] + start)
        row_counts.append(outcome.n_rows)
        if outcome.labels is not None:  # local experiment indices: mapped by identifier
            label_base[outcome.index] = len(flat_labels)
            flat_labels.extend(global_index(label) for label in outcome.labels)
        selections.append(outcome.selection)
        inputs.append(outcome.info)
    if label_base:
        table = np.array(flat_labels, dtype=np.int32)
        for batch in batches:
            _number_experiments_globally(batch, table, label_base)
    ordered = _concatenated_releasing(batches)
    counts = np.array(row_counts, dtype=np.int64)
    starts = np.array(row_starts, dtype=np.int64)
    ordered_starts = np.cumsum(counts) - counts  # where each outcome's rows go
    if not np.array_equal(starts, ordered_starts):  # else already in input order
        order = np.repeat(starts - ordered_starts, counts) + np.arange(counts.sum())
        for name in SpotSizes.__dataclass_fields__:  # a column at a time, as above
            setattr(ordered, name, getattr(ordered, name)[order])
    return ordered, selections, inputs, skipped, labels


def _number_experiments_globally(
    batch: Batch, table: np.ndarray, label_base: dict[int, int]
) -> None:
    """A batch's rows from files that number their own experiments get the global number
    (``table[label_base[file] + local]``); done a batch at a time, before the batches are
    merged, so that no temporary array as long as every row together is needed."""
    bases = np.array(
        [label_base.get(outcome.index, -1) for outcome in batch.outcomes], dtype=np.intp
    )
    row_bases = np.repeat(bases, [outcome.n_rows for outcome in batch.outcomes])
    experiment = batch.spot_sizes.experiment
    remap = (row_bases >= 0) & (experiment >= 0)
    if remap.all():
        batch.spot_sizes.experiment = table[row_bases + experiment]
    elif remap.any():
        batch.spot_sizes.experiment = np.where(
            remap, table[np.where(remap, row_bases + experiment, 0)], experiment
        ).astype(np.int32)
