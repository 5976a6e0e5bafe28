"""Every measured row in input order, whichever process measured it: exactly what
measuring all rows together gives."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..algorithms.advice import auto_min_spot_size
from ..algorithms.spot_sizes import DatasetSelection, SpotSizes
from ..formats.experiments import Experiment
from .batches import Batch
from .measure_file import FileOutcome
from .tuning import return_freed_memory


@dataclass
class Merged:
    """The merged outcomes of every source.

    Attributes
    ----------
    spot_sizes : SpotSizes
        Every counted row, in input order.
    datasets : list of DatasetSelection
        One per table measured, in input order.
    inputs : list of dict
        A description of each table measured (for the JSON's ``inputs``).
    skipped : list of dict
        ``{"file", "reason"}`` of each source that could not be used.
    labels : list of str
        The experiment identifier of each index in ``spot_sizes.experiment``.
    profiles : list of dict
        Each table's profile model per experiment, in input order.
    detector_type : str or None
        The panel type of the tables' detectors (each table's first experiment's
        first panel: DIALS's Auto min_spot_size depends on it); None without one, or
        where the tables' types call for different Autos (pixel-array detectors and
        others). Of several types with the same Auto, the first in alphabetical order:
        the same whatever the order of the inputs.
    """

    spot_sizes: SpotSizes
    datasets: list[DatasetSelection] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    profiles: list[dict] = field(default_factory=list)
    detector_type: str | None = None


class _Labels:
    """Global experiment numbers by identifier, starting from the experiments given."""

    def __init__(self, experiments: Sequence[Experiment]):
        self.labels = [e.identifier for e in experiments]
        self.position = {label: i for i, label in enumerate(self.labels) if label}

    def index(self, label: str) -> int:
        """The global number of experiment ``label``, given the next number the first
        time it is seen.

        Parameters
        ----------
        label : str
            An experiment identifier.

        Returns
        -------
        int
            Its index in ``self.labels``.
        """
        if label not in self.position:
            self.position[label] = len(self.labels)
            self.labels.append(label)
        return self.position[label]


def _located(batches: Sequence[Batch]) -> list[tuple[FileOutcome, int, int]]:
    """(outcome, batch number, first row in that batch), in input order."""
    located = []
    for number, batch in enumerate(batches):
        start = 0
        for outcome in batch.outcomes:
            located.append((outcome, number, start))
            start += outcome.n_rows
    located.sort(key=lambda entry: entry[0].index)
    return located


def merge(batches: Sequence[Batch], experiments: Sequence[Experiment]) -> Merged:
    """Merge ``batches`` (used up: their arrays are released as they are merged).

    Parameters
    ----------
    batches : sequence of Batch
        Every source's outcome, in any order.
    experiments : sequence of Experiment
        The experiments the outcomes' global experiment indices refer to.
    """
    # Worker pools send contiguous runs of sources, in any order: in order of their
    # first source, their rows are usually in input order already and need no gather.
    batches = sorted(
        batches, key=lambda batch: min((o.index for o in batch.outcomes), default=-1)
    )
    labels = _Labels(experiments)
    merged = Merged(spot_sizes=SpotSizes())
    batch_offsets = [0, *itertools.accumulate(len(b.spot_sizes) for b in batches)]
    row_starts, row_counts = [], []
    label_base: dict[int, int] = {}  # source -> its first entry in flat_labels
    flat_labels: list[int] = []
    detector_types: set[str] = set()
    for outcome, number, start in _located(batches):
        if outcome.error is not None:
            merged.skipped.append({"file": outcome.name, "reason": outcome.error})
            continue
        row_starts.append(batch_offsets[number] + start)
        row_counts.append(outcome.n_rows)
        if outcome.labels is not None:  # local experiment indices, by identifier
            label_base[outcome.index] = len(flat_labels)
            flat_labels.extend(labels.index(label) for label in outcome.labels)
        merged.datasets.append(outcome.selection)
        merged.inputs.append(outcome.info)
        merged.profiles.extend(outcome.profiles)
        if outcome.detector_type is not None:
            detector_types.add(outcome.detector_type)
    if label_base:
        table = np.array(flat_labels, dtype=np.int32)
        for batch in batches:
            _number_experiments_globally(batch, table, label_base)
    merged.spot_sizes = _in_input_order(
        _concatenated_releasing(batches), row_starts, row_counts
    )
    merged.labels = labels.labels
    merged.detector_type = _one_detector_type(detector_types)
    return merged


def _one_detector_type(types: set[str]) -> str | None:
    """The type that stands for every table's, where all call for the same Auto
    min_spot_size (see :class:`Merged`)."""
    if len({auto_min_spot_size(kind) for kind in types}) != 1:
        return None  # none, or a pixel-array detector beside others
    return min(types)


def _in_input_order(ordered: SpotSizes, row_starts, row_counts) -> SpotSizes:
    counts = np.array(row_counts, dtype=np.int64)
    starts = np.array(row_starts, dtype=np.int64)
    wanted_starts = np.cumsum(counts) - counts  # where each outcome's rows go
    if not np.array_equal(starts, wanted_starts):  # else already in input order
        order = np.repeat(starts - wanted_starts, counts) + np.arange(counts.sum())
        for name in SpotSizes.__dataclass_fields__:  # a column at a time
            setattr(ordered, name, getattr(ordered, name)[order])
    return ordered


def _concatenated_releasing(batches: Sequence[Batch]) -> SpotSizes:
    """The batches' rows, one after another, built a column at a time; each batch's
    copy of a column is let go once copied, so that the rows are held about once, not
    twice (with a million files, gigabytes)."""
    if len(batches) == 1:
        return batches[0].spot_sizes
    columns = {}
    for name in SpotSizes.__dataclass_fields__:
        columns[name] = np.concatenate([getattr(b.spot_sizes, name) for b in batches])
        for batch in batches:
            setattr(batch.spot_sizes, name, None)
        return_freed_memory()
    return SpotSizes(**columns)


def _number_experiments_globally(
    batch: Batch, table: np.ndarray, label_base: dict[int, int]
) -> None:
    """A batch's rows from files that number their own experiments get the global
    number (``table[label_base[file] + local]``); a batch at a time, before the batches
    are merged, so that no temporary array as long as every row together is needed."""
    bases = np.array(
        [label_base.get(outcome.index, -1) for outcome in batch.outcomes],
        dtype=np.intp,
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
