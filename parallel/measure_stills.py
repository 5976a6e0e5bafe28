"""Many small tables measured as one: the stills of a serial run.

Measuring one small table costs about a hundred small steps whatever its size. Tables
that can be measured together (small, with shoeboxes, ``id`` columns that name their
experiments, the same columns, and the same rows required) are joined a group at a
time, measured once, and the results split back per table: the same numbers, each
table's experiment numbers its own again, as :func:`measure_file.measure_file` gives
for each alone. Whatever cannot be joined, and any group whose joined measuring meets a
problem, is measured table by table, so that every problem is reported as it would be.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..algorithms import flags as flag_names
from ..algorithms.geometry import ExperimentGeometry
from ..algorithms.profile_model import (
    ProfileModelError,
    needs_prediction,
    profile_model,
)
from ..algorithms.spot_shape import bbox_disagreements
from ..algorithms.spot_sizes import (
    DatasetSelection,
    ExperimentNumbering,
    SelectionError,
    experiment_indices,
    resolve_required_flags,
)
from ..formats import FileFormatError, ReflectionTable
from .measure_file import (
    FileOutcome,
    MeasureRequest,
    ReadSource,
    check_table_unchanged,
    error_outcome,
    explained,
    identifiers_seen,
    measure_read,
    measure_table,
    measured_outcome,
    profile_entries,
    profile_experiments,
    profiles_checked,
    read_source,
    resolution_note,
)

MAX_ROWS_TO_JOIN = 4096  # larger tables are measured alone: joining gains them nothing


def measure_sources(
    items: Sequence[tuple[int, Any]], request: MeasureRequest, n_sources: int
) -> list[FileOutcome]:
    """Each source read and measured, as :func:`measure_file.measure_file` would,
    small tables that can be measured together joined.

    Parameters
    ----------
    items : sequence of (int, source)
        Each source with its number among the inputs.
    request : MeasureRequest
        What every process needs.
    n_sources : int
        The number of inputs.

    Returns
    -------
    list of FileOutcome
        One per source, in the order of ``items``.
    """
    outcomes: list[FileOutcome] = []
    group: list[tuple[ReadSource, np.ndarray]] = []
    key = None
    for index, source in items:
        read = read_source(index, source, request, n_sources)
        if isinstance(read, FileOutcome):
            outcomes.append(read)
            continue
        joinable = _joinable(read, request)
        if joinable is None:
            outcomes.append(measure_read(read, request))
            continue
        if joinable[0] != key:
            outcomes += _measured_together(group, request)
            group, key = [], joinable[0]
        group.append((read, joinable[1]))
    outcomes += _measured_together(group, request)
    order = {index: position for position, (index, _) in enumerate(items)}
    return sorted(outcomes, key=lambda outcome: order[outcome.index])


def _joinable(read: ReadSource, request: MeasureRequest):
    """(what a table must share with those it is joined with, its rows' experiment
    numbers in its own list), or None where it is measured alone."""
    table = read.table
    if (
        request.profiles_later
        or request.threads > 1
        or table.nrows > MAX_ROWS_TO_JOIN
        or table.shoebox_column_name is None
        or "id" not in table.columns
        or "flags" not in table.columns
    ):
        return None
    try:
        table.shoeboxes  # indexed now: a corrupt column is found alone, and said so
        local = experiment_indices(
            np.asarray(table.columns["id"]), read.numbering, read.geometry, read.name
        )
        required, automatic = resolve_required_flags(
            request.options.require, table.columns["flags"]
        )
    except (FileFormatError, SelectionError):
        return None
    return (table.column_signature(), tuple(required), automatic), local


def _measured_together(
    group: list[tuple[ReadSource, np.ndarray]], request: MeasureRequest
) -> list[FileOutcome]:
    """The outcomes of a group of joinable tables (each with its rows' experiment
    numbers in its own list): joined, measured once, split back."""
    if len(group) < 2:
        return [measure_read(read, request) for read, _ in group]
    reads = [read for read, _ in group]
    first = np.cumsum([0] + [len(read.geometry) for read in reads])
    table = ReflectionTable.joined([read.table for read in reads])
    table.columns["id"] = np.concatenate(
        [np.where(local >= 0, local + f, -1) for (_, local), f in zip(group, first)]
    ).astype(np.int64)
    geometry = ExperimentGeometry(
        [e for read in reads for e in read.geometry.experiments]
    )
    try:
        spot_sizes, joined = measure_table(
            table,
            geometry,
            ExperimentNumbering(offset=0, count=len(geometry)),
            request.options,
            name=reads[0].name,
        )
    except (FileFormatError, SelectionError):  # each alone says which and why
        return [measure_read(read, request) for read in reads]
    return _split(reads, first, table, spot_sizes, joined, request)


def _split(reads, first, table, spot_sizes, joined, request) -> list[FileOutcome]:
    """The joined table's measured rows and counts, per table."""
    row_starts = np.cumsum([0] + [read.table.nrows for read in reads])
    selected = flag_names.select_by_flags(
        table.columns["flags"], joined.require, joined.exclude
    )
    counted = selected & table.shoeboxes.has_pixel_data
    n_selected = np.diff(np.concatenate([[0], np.cumsum(selected)])[row_starts])
    n_counted = np.diff(np.concatenate([[0], np.cumsum(counted)])[row_starts])
    disagreeing = np.zeros(len(reads), np.int64)
    if "bbox" in table.columns:
        rows = bbox_disagreements(table.shoeboxes.bbox, table.columns["bbox"])[1]
        owner = np.searchsorted(row_starts, rows, side="right") - 1
        disagreeing = np.bincount(owner, minlength=len(reads))
    together = _profiles_together(reads, table, request)
    outcomes, start = [], 0
    for number, read in enumerate(reads):
        part = spot_sizes.rows(start, start + int(n_counted[number]))
        start += len(part)
        part.dataset[:] = read.index
        known = part.experiment >= 0  # numbered in the table's own list again
        part.experiment[known] -= first[number]
        selection = DatasetSelection(
            name=read.name,
            n_rows=read.table.nrows,
            require=list(joined.require),
            exclude=list(joined.exclude),
            require_was_automatic=joined.require_was_automatic,
            n_selected=int(n_selected[number]),
            n_without_pixel_data=int(n_selected[number] - n_counted[number]),
            n_counted=len(part),
            size_source=joined.size_source,
            size_source_note=joined.size_source_note,
            n_bbox_disagreements=int(disagreeing[number]),
            resolution_note=resolution_note(part, read.geometry),
            experiment_identifiers=identifiers_seen(part, read.geometry),
        )
        try:
            if together is None:
                profiles = profiles_checked(read, request)
            else:
                profiles = together[number]
                check_table_unchanged(read.table)
        except (FileFormatError, SelectionError) as error:
            error = explained(read.table, error)
            outcomes.append(error_outcome(read.index, read.name, error, read.compared))
            continue
        outcomes.append(measured_outcome(read, request, part, selection, profiles))
    return outcomes


def _profiles_together(reads, table, request) -> list[list[dict]] | None:
    """Each table's profile model from one computation on the joined table, as
    :func:`measure_file.profiles_checked` gives it alone (before checking the file);
    None where each must be computed alone: a table's experiments re-predict their
    reflections (a pass over every row for each), or the computation met a problem
    (each then reports its own)."""
    covered, ids, combined = [], [], []
    for read in reads:
        experiments = profile_experiments(
            read.table, read.geometry, read.numbering, request
        )
        own = np.asarray(read.table.columns["id"]).reshape(-1).astype(np.int64)
        if experiments is None:
            covered.append(None)
            ids.append(np.full(own.size, -1, dtype=np.int64))
            continue
        if any(needs_prediction(e, read.table.columns) for e in experiments):
            return None
        # Rows whose id names none of the table's experiments stay out, as alone.
        known = (own >= 0) & (own < len(experiments))
        ids.append(np.where(known, own + len(combined), -1))
        covered.append((len(combined), experiments))
        combined += experiments
    if not combined:
        return [[] for _ in reads]
    columns = {**table.columns, "id": np.concatenate(ids)}
    try:
        model = profile_model(
            columns,
            table.shoeboxes,
            combined,
            n_sigma=request.n_sigma,
            all_predictions=request.all_predictions,
            fixed_sigmas=request.fixed_sigmas,
            max_reference=request.max_reference,
        )
    except (ProfileModelError, ValueError, np.linalg.LinAlgError):
        return None
    profiles_of_reads = []
    for read, part in zip(reads, covered):
        if part is None:
            profiles_of_reads.append([])
            continue
        first, experiments = part
        profiles = model.experiments[first : first + len(experiments)]
        for profile in profiles:
            profile.experiment -= first  # numbered in the table's own list again
        profiles_of_reads.append(profile_entries(profiles, experiments, read.name))
    return profiles_of_reads
