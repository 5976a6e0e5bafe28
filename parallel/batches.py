"""Outcomes packed a few dozen files at a time: one set of arrays crosses between
processes instead of one per file, and each file's arrays are let go once packed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..algorithms.spot_sizes import SpotSizes
from .measure_file import FileOutcome

FILES_PER_BATCH = 64


@dataclass
class Batch:
    """Outcomes of several sources, their measured rows packed into one SpotSizes (in
    outcome order, ``outcome.n_rows`` each)."""

    spot_sizes: SpotSizes
    outcomes: list[FileOutcome]


def pack(outcomes: list[FileOutcome]) -> Batch:
    """One batch of ``outcomes``, whose own arrays are released.

    Parameters
    ----------
    outcomes : list of FileOutcome
        The outcomes, in order; each gets its ``n_rows`` and loses its
        ``spot_sizes``.

    Returns
    -------
    Batch
        Their rows as one SpotSizes, and the outcomes.
    """
    for outcome in outcomes:
        outcome.n_rows = 0 if outcome.spot_sizes is None else len(outcome.spot_sizes)
    packed = SpotSizes.concatenate(
        [o.spot_sizes for o in outcomes if o.spot_sizes is not None]
    )
    for outcome in outcomes:
        outcome.spot_sizes = None
    return Batch(packed, outcomes)


def packed_as_measured(outcomes: Iterable[FileOutcome]) -> list[Batch]:
    """Outcomes packed FILES_PER_BATCH at a time as they come, so that each file's
    arrays are let go once packed rather than held, beside the packed copy, to the end.

    Parameters
    ----------
    outcomes : iterable of FileOutcome
        The outcomes as they are measured.

    Returns
    -------
    list of Batch
        At least one batch (an empty one for no outcomes).
    """
    batches, pending = [], []
    for outcome in outcomes:
        pending.append(outcome)
        if len(pending) == FILES_PER_BATCH:
            batches.append(pack(pending))
            pending = []
    return [*batches, pack(pending)] if pending or not batches else batches


class BatchCollector:
    """Batches as they arrive from worker processes, gathered into one: each batch's
    rows are copied at once into columns that grow, so that the copying overlaps the
    workers' measuring instead of following it, and merging finds every row in one
    piece. Batches are appended in input order where they are contiguous runs of
    sources (a pool's chunks): one arriving early waits for those before it, so that
    merging needs no reordering of the rows.

    Parameters
    ----------
    n_sources : int
        How many sources the batches will hold in all (to size the columns).
    """

    GROWTH = 1.25  # the columns' room beyond the rows expected (pages never touched
    # are never resident: the room costs address space, not memory)

    def __init__(self, n_sources: int):
        self._n_sources = n_sources
        self._waiting: dict[int, Batch] = {}  # first source -> a batch arrived early
        self._next = 0  # the first source of the batch that comes next in input order
        self._first: Batch | None = None  # a lone batch is kept as it is
        self._columns: dict[str, np.ndarray] = {}
        self._n_rows = 0
        self._n_appended = 0  # sources whose rows are in the columns
        self.outcomes: list[FileOutcome] = []

    def add(self, batch: Batch) -> None:
        """Take ``batch`` (its arrays are let go once copied).

        Parameters
        ----------
        batch : Batch
            Outcomes of any sources, packed by :func:`pack`.
        """
        if not batch.outcomes:
            return
        first = min(outcome.index for outcome in batch.outcomes)
        if first < self._next or first in self._waiting:  # not a run: merge reorders
            self._append(batch)
            return
        self._waiting[first] = batch
        while self._next in self._waiting:
            ready = self._waiting.pop(self._next)
            self._next += len(ready.outcomes)
            self._append(ready)

    def batch(self) -> Batch:
        """Every batch taken, as one (once, when all have arrived)."""
        for first in sorted(self._waiting):  # not contiguous runs: merge reorders
            self._append(self._waiting.pop(first))
        if not self._columns:
            return self._first if self._first is not None else pack([])
        for column in self._columns.values():
            column.resize(self._n_rows, refcheck=False)  # give back the room
        rows = SpotSizes(**self._columns)
        self._columns = {}
        return Batch(rows, self.outcomes)

    def _append(self, batch: Batch) -> None:
        self.outcomes.extend(batch.outcomes)
        if self._first is None and not self._columns:
            self._first = batch
            return
        if self._first is not None:
            earlier, self._first = self._first, None
            self._copy(earlier)
        self._copy(batch)

    def _copy(self, batch: Batch) -> None:
        rows = batch.spot_sizes
        self._n_appended += len(batch.outcomes)
        end = self._n_rows + len(rows)
        capacity = len(self._columns["size"]) if self._columns else 0
        if end > capacity or not self._columns:
            needed = max(end, 2 * capacity)
            per_source = end / max(1, self._n_appended)
            expected = per_source * max(self._n_sources, self._n_appended)
            self._grow(needed, max(needed, int(expected * self.GROWTH)))
        for name, column in self._columns.items():
            column[self._n_rows : end] = getattr(rows, name)
            setattr(rows, name, None)
        self._n_rows = end

    def _grow(self, needed: int, wanted: int) -> None:
        """Room for ``wanted`` rows, or for ``needed`` where the system refuses that
        much address space (a limit on it, strict overcommit): a heavy file among the
        first can make ``wanted`` many times the rows to come."""
        try:
            grown = SpotSizes.empty(wanted)
        except MemoryError:
            grown = SpotSizes.empty(needed)
        for name in SpotSizes.__dataclass_fields__:
            column, old = getattr(grown, name), self._columns.get(name)
            if old is not None:
                column[: self._n_rows] = old[: self._n_rows]
            self._columns[name] = column
