"""Outcomes packed a few dozen files at a time: one set of arrays crosses between
processes instead of one per file, and each file's arrays are let go once packed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

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
