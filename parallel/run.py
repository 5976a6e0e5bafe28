"""The analysis of many sources: measured (serially, over processes or MPI ranks),
merged in input order, summarised into one :class:`AnalysisResult`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..algorithms.advice import advise
from ..algorithms.profile_model import (
    MAX_REFERENCE_MATCHED,
    combine_profiles,
    with_xds_ranges,
)
from ..algorithms.result import AnalysisResult
from ..algorithms.same_spots import ComparedTable
from ..algorithms.spot_sizes import (
    DatasetSelection,
    MeasureOptions,
    SelectionError,
    SummaryOptions,
    summarise,
)
from ..errors import SpotSizeAnalysisError
from ..formats.dials_logs import fixed_sigmas, read_spot_finding_parameters
from ..formats.experiments import ExperimentList
from ..threads import in_order
from .measure_file import MeasureRequest, combine_experiments
from .merge import merge
from .mpi import run_mpi
from .pool import run_serial_or_pool
from .tuning import collection_paused


class UnusableFilesError(SpotSizeAnalysisError, ValueError):
    """Reflection files that could not be used, where that ends the run."""


@dataclass(frozen=True)
class RunOptions:
    """How to spread the work: ``nproc`` processes, or MPI ranks (``method="mpi"``),
    and what a file that cannot be used does (``bad_files``: "skip" or "fail")."""

    nproc: int = 1
    method: str = "multiprocessing"
    bad_files: str = "skip"


@dataclass(frozen=True)
class AnalysisOptions:
    """Every option of an analysis, resolved and checked (``phil.options`` makes them
    from the PHIL parameters); ``parameters`` is their plain description for reports."""

    measure: MeasureOptions = MeasureOptions()
    summary: SummaryOptions = SummaryOptions()
    run: RunOptions = RunOptions()
    parameters: dict = field(default_factory=dict)
    n_sigma: float | None = 3.0  # the profile model's box (None: no profile model)
    all_predictions: bool = False  # box every prediction for the shoebox memory
    # reference reflections measured per experiment at most (None: every one)
    max_reference: int | None = MAX_REFERENCE_MATCHED
    spot_finding_file: str | None = None  # a dials.find_spots.log or .phil
    # the memory of the machine that will integrate (None: the memory is not checked)
    memory_limit_bytes: float | None = None


def _experiments_input(number: int, source: Any, experiment_list) -> dict:
    named = isinstance(source, (str, os.PathLike))
    return {
        "experiments": str(source) if named else f"experiments {number}",
        "n_experiments": len(experiment_list),
        "experiment_identifiers": experiment_list.identifiers(),
    }


@collection_paused()  # while per-file results are made by the thousand
def run_analysis(
    sources: Sequence,
    experiment_sources: Sequence[tuple[Any, ExperimentList]],
    options: AnalysisOptions,
    comm=None,
    progress: bool | None = None,
    skipped_files: Sequence[dict] = (),
    paired_experiments: dict[int, str] | None = None,
    check_measured: Callable[[list[ComparedTable]], None] | None = None,
    stop_requested: Callable[[], None] | None = None,
) -> AnalysisResult | None:
    """Measure and summarise reflection tables.

    Parameters
    ----------
    sources : sequence
        Reflection files (or tables), measured in this order.
    experiment_sources : sequence of (source, ExperimentList)
        Experiment lists that describe every table, and where each came from.
    options : AnalysisOptions
        What to measure, how to summarise, how to spread the work.
    comm : optional
        The MPI communicator, for ``options.run.method == "mpi"``.
    progress : bool, optional
        Show a progress bar (None: on an interactive terminal).
    skipped_files : sequence of dict
        Files already skipped (e.g. experiment lists), reported with the rest.
    paired_experiments : dict of int to str, optional
        A source's index -> the experiment file that is its own (read by the process
        that measures it).
    check_measured : callable, optional
        Given what the search for tables holding the same spots needs of every table
        (``algorithms.same_spots``), collected as they are measured; raises to end
        the run (two tables the user named hold the same spots).
    stop_requested : callable, optional
        Called between chunks of files; raises to end the run (a signal that arrived
        where it could only be remembered, such as in numba's loading of a kernel).

    Returns
    -------
    AnalysisResult or None
        None on MPI ranks other than 0.
    """
    if not sources:
        raise SelectionError("no reflection table given: pass one or more .refl files")
    spot_finding = (
        read_spot_finding_parameters(options.spot_finding_file)
        if options.spot_finding_file
        else None
    )
    union, offsets = combine_experiments([e for _, e in experiment_sources])
    # One table measured here gets nproc threads: for its stretches, and for its
    # summaries, profile model and advice side by side. Many tables get nproc
    # processes, and the parent summarises their rows on one thread: side by side,
    # the summaries' and the advice's temporaries would add to the memory each file
    # costs the parent (17% more at 10,000 stills) for 2% of the time.
    threads = (
        options.run.nproc if options.run.method != "mpi" and len(sources) == 1 else 1
    )
    request = MeasureRequest(
        experiments=union,
        list_offsets=offsets,
        have_experiment_lists=bool(experiment_sources) or bool(paired_experiments),
        options=options.measure,
        paired_experiments=dict(paired_experiments or {}),
        n_sigma=options.n_sigma,
        all_predictions=options.all_predictions,
        max_reference=options.max_reference,
        fixed_sigmas=fixed_sigmas(spot_finding),
        compare_spots=check_measured is not None,
        threads=threads,
        profiles_later=threads > 1,  # run beside the summaries
    )
    if options.run.method == "mpi":
        batches = run_mpi(sources, request, comm)
        if batches is None:
            return None
    else:
        batches = run_serial_or_pool(
            sources, request, options.run.nproc, progress, stop_requested
        )
    if check_measured is not None:
        check_measured(_compared_tables(batches))
    _check_failures(batches, options.run.bad_files)
    merged = merge(batches, union)
    for number, (source, experiment_list) in enumerate(experiment_sources):
        merged.inputs.append(_experiments_input(number, source, experiment_list))
    if len(merged.spot_sizes) == 0:
        raise SelectionError(nothing_selected_message(merged.datasets))
    later = [o.profiles_later for b in batches for o in b.outcomes if o.profiles_later]

    def profiles_and_advice():
        for profiles_of_table in later:  # one table only: the order is kept
            merged.profiles.extend(profiles_of_table())
        return advise(
            merged.spot_sizes,
            merged.labels,
            merged.profiles,
            spot_finding,
            detector_type=merged.detector_type,
            memory_limit_bytes=options.memory_limit_bytes,
        )

    # The summaries, and the profile model and advice, read the merged rows and
    # nothing of each other: on threads they run side by side, the summaries
    # themselves on threads.
    result, advice = in_order(
        lambda work: work(),
        [
            lambda: summarise(
                merged.spot_sizes,
                merged.datasets,
                mask_code=options.measure.mask_code,
                options=options.summary,
                experiment_labels=merged.labels,
                threads=threads,
            ),
            profiles_and_advice,
        ],
        threads,
    )
    return AnalysisResult(
        result=result,
        parameters=options.parameters,
        inputs=merged.inputs,
        experiments=union,
        skipped_files=[*skipped_files, *merged.skipped],
        profile_model=combine_profiles(
            with_xds_ranges(merged.profiles, merged.spot_sizes, merged.labels)
        ),
        advice=advice,
    )


def _compared_tables(batches) -> list[ComparedTable]:
    """Every measured table's centroid keys (let go from its outcome)."""
    tables = []
    for batch in batches:
        for outcome in batch.outcomes:
            if outcome.compared is not None:
                tables.append(outcome.compared)
                outcome.compared = None
    return sorted(tables, key=lambda table: table.position)


def _check_failures(batches, bad_files: str) -> None:
    """Raise where failed files end the run: with ``bad_files="fail"``, or when every
    file failed (a single file's own error, as it was)."""
    outcomes = [outcome for batch in batches for outcome in batch.outcomes]
    failed = sorted((o for o in outcomes if o.error is not None), key=lambda o: o.index)
    if not failed or (bad_files != "fail" and len(failed) < len(outcomes)):
        return
    if len(outcomes) == 1:
        failed[0].raise_error()
    if len(failed) == len(outcomes):
        what = "every reflection file was unusable"
    else:
        what = f"{len(failed)} of {len(outcomes)} reflection files could not be used (input.bad_files=fail)"
    raise UnusableFilesError(f"{what}; the first: {failed[0].error}")


def nothing_selected_message(datasets: Sequence[DatasetSelection]) -> str:
    """Why no reflection was counted, and what to do.

    Parameters
    ----------
    datasets : sequence of DatasetSelection
        What happened to each table's rows.
    """
    n_rows = sum(d.n_rows for d in datasets)
    n_selected = sum(d.n_selected for d in datasets)
    if n_rows == 0:
        return "the reflection table(s) have no rows: nothing to measure"
    if n_selected == 0:
        require = sorted({f for d in datasets for f in d.require})
        exclude = sorted({f for d in datasets for f in d.exclude})
        chosen = []
        if require:
            chosen.append(f"flags.require={'+'.join(require)}")
        if exclude:
            chosen.append(f"flags.exclude={'+'.join(exclude)}")
        return (
            f"no reflection of {n_rows} passes {' and '.join(chosen) or 'the flag filter'}: loosen the filter "
            "(e.g. flags.require=None), or check the flags with dials.show"
        )
    return (
        f"none of the {n_selected} selected reflections has shoebox pixel data: {n_selected} rows carry a "
        "shoebox column without pixels (for integrated data, use the shoeboxes_*.refl written with "
        "integration.debug.output=True)"
    )
