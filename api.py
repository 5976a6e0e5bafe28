"""The Python API for pipelines.

>>> from dials_spot_size_analysis.api import analyse
>>> result = analyse("indexed.refl", "indexed.expt", bins=50)
>>> result.histogram.counts, result.statistics["median"]
>>> document = result.as_dict()          # the JSON document dials.spot_size_analysis writes

``analyse`` takes file paths, :class:`ReflectionTable` objects, msgpack bytes or a DIALS
``flex.reflection_table`` (read through its ``as_msgpack()``), and experiment lists as
paths, :class:`ExperimentList` objects or DIALS ``ExperimentList`` objects (through their
``to_dict()``); ``analyse_sizes`` takes per-reflection sizes as numpy arrays. Parameters
are the program's PHIL parameters, given as keyword arguments with any unique suffix of
their name (``bins=50``, ``mask_code="Valid+Foreground"``, ``require="indexed"``) or as a
``params`` object from ``phil_scope``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .algorithms import flags as flag_names
from .algorithms.spot_sizes import (
    AUTO,
    DatasetSelection,
    SelectionError,
    SpotSizeResult,
    SpotSizes,
    resolve_required_flags,
    summarise,
)
from .formats import ExperimentList, FileFormatError, read_experiments
from .formats.experiments import Experiment, parse_experiments
from .phil import phil_scope
from .processing import (
    Settings,
    collection_paused,
    combine_experiments,
    merge,
    resolve_nproc,
    run_mpi,
    run_serial_or_pool,
)

__all__ = [
    "AnalysisResult",
    "FileFormatError",
    "SelectionError",
    "UnusableFilesError",
    "analyse",
    "analyse_sizes",
    "extract_parameters",
]

PROGRAM = "dials.spot_size_analysis"


class ParameterError(ValueError):
    """A parameter value that PHIL accepted but the analysis cannot use."""


def _plain(value: Any) -> Any:
    """libtbx.Auto and friends as JSON-able Python values ("Auto" stays a string)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__name__ == "AutoType":
        return AUTO
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _phil_arguments(overrides: dict[str, Any]) -> list[str]:
    arguments = []
    for key, value in overrides.items():
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value) if value else "None"
        arguments.append(f"{key}={value}")
    return arguments


def normalise_choice_argument(argument: str) -> str:
    """Work around libtbx.phil's ``a+b`` quirk (reference §8): it matches ``+``-joined
    choice words only in lower case, so ``mask_code=Valid+Foreground`` would be refused.
    Choice and flag names are case-insensitive here, so lower-case such words."""
    key, sep, value = argument.partition("=")
    if (
        sep
        and "+" in value
        and all(word.isidentifier() for word in value.strip().split("+"))
    ):
        return f"{key}={value.strip().lower()}"
    return argument


def extract_parameters(params=None, arguments: Sequence[str] = (), **overrides):
    """A ``phil_scope.extract()`` object with ``arguments`` (``key=value`` strings) and
    keyword ``overrides`` applied; unique suffixes of parameter names are accepted."""
    sources = []
    interpreter = phil_scope.command_line_argument_interpreter(home_scope="")
    for argument in list(arguments) + _phil_arguments(overrides):
        sources.append(interpreter.process(arg=normalise_choice_argument(argument)))
    base = phil_scope if params is None else phil_scope.format(python_object=params)
    return base.fetch(sources=sources).extract() if sources else base.extract()


def parameters_as_dict(params) -> dict:
    """Nested dict of every parameter value, for the JSON document."""
    result: dict = {}
    for locator in phil_scope.format(python_object=params).all_definitions():
        node = result
        *scopes, name = locator.path.split(".")
        for scope in scopes:
            node = node.setdefault(scope, {})
        node[name] = _plain(locator.object.extract())
    return result


def changed_parameters(params) -> str:
    """The PHIL text of parameters that differ from the defaults (empty if none)."""
    return (
        phil_scope.fetch_diff(source=phil_scope.format(python_object=params))
        .as_str()
        .strip()
    )


def _as_experiments(experiments) -> ExperimentList:
    if isinstance(experiments, ExperimentList):
        return experiments
    if isinstance(experiments, (str, os.PathLike)):
        return read_experiments(experiments)
    if isinstance(experiments, dict):
        return parse_experiments(experiments)
    if hasattr(experiments, "to_dict"):  # a DIALS/dxtbx ExperimentList
        return parse_experiments(experiments.to_dict())
    raise TypeError(
        f"cannot read experiments from {type(experiments).__name__}: give a path or an experiment list"
    )


def _listify(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


@dataclass
class AnalysisResult:
    """The outcome of one run: numbers (``result``) plus what produced them."""

    result: SpotSizeResult
    params: Any
    inputs: list[dict]
    experiments: list[Experiment] = field(default_factory=list)
    skipped_files: list[dict] = field(default_factory=list)  # {"file", "reason"}

    @property
    def histogram(self):
        return self.result.histogram

    @property
    def statistics(self) -> dict:
        return self.result.statistics

    @property
    def selection(self) -> dict:
        return self.result.selection

    @property
    def sizes(self) -> np.ndarray:
        """The measured size of every counted reflection."""
        return self.result.spot_sizes.size

    def as_dict(self) -> dict:
        """The JSON document (schema: report/schema.json)."""
        from .report.document import json_document

        return json_document(self)


def resolved_parameters(params) -> tuple[Any, float | None, float | None]:
    """Check what PHIL cannot (the range, flag names) and resolve Auto: returns the flags
    to require ("Auto" or names) and the histogram range (None where automatic)."""
    histogram = params.histogram
    data_min = (
        None
        if histogram.data_min is None or _plain(histogram.data_min) == AUTO
        else float(histogram.data_min)
    )
    data_max = (
        None
        if histogram.data_max is None or _plain(histogram.data_max) == AUTO
        else float(histogram.data_max)
    )
    if data_min is not None and data_max is not None and not data_max > data_min:
        raise ParameterError(
            f"histogram.data_max ({data_max:g}) must be greater than histogram.data_min ({data_min:g}): "
            "widen the range, or set either to Auto"
        )
    require = params.flags.require
    require = AUTO if _plain(require) in (AUTO, [AUTO]) else (require or [])
    try:
        flag_names.parse_flag_names([] if require == AUTO else require)
        flag_names.parse_flag_names(params.flags.exclude)
    except flag_names.UnknownFlagError as error:
        raise ParameterError(str(error)) from None
    return require, data_min, data_max


def analyse(
    reflections,
    experiments=None,
    params=None,
    engine: str = "auto",
    **overrides,
) -> AnalysisResult:
    """Measure spot sizes in one or more reflection tables (with their experiment lists).

    Several tables are analysed together (one histogram of all their rows) and reported
    per dataset; tables are matched to experiments by experiment identifier. Parameters
    include ``nproc`` (processes; ``Auto`` for every core) and ``bad_files`` (``skip`` a
    table that cannot be used, reporting it, or ``fail``)."""
    params = extract_parameters(params, **overrides)
    experiment_sources = [(e, _as_experiments(e)) for e in _listify(experiments)]
    return analyse_sources(
        _listify(reflections), experiment_sources, params, engine=engine
    )


class UnusableFilesError(ValueError):
    """Reflection files that could not be used, where that ends the run."""


@collection_paused()  # while per-file results are made by the thousand
def analyse_sources(
    sources: Sequence,
    experiment_sources: Sequence[tuple[Any, ExperimentList]],
    params,
    engine: str = "auto",
    progress: bool | None = None,
    comm=None,
    skipped_files: Sequence[dict] = (),
    paired_experiments: dict[int, str] | None = None,
) -> AnalysisResult | None:
    """``analyse`` once the experiment lists are read: ``sources`` are reflection files
    (or tables), measured serially, over ``params.mp.nproc`` processes or, with
    ``params.mp.method=mpi``, over MPI ranks (``comm``; rank 0 returns the result, the
    others None). ``skipped_files`` lists files already skipped (e.g. experiment lists);
    ``paired_experiments`` maps a source's index to the experiment file that is its own
    (read by the process that measures it)."""
    require, data_min, data_max = resolved_parameters(params)
    if not sources:
        raise SelectionError("no reflection table given: pass one or more .refl files")
    union, offsets = combine_experiments(
        [experiment_list for _, experiment_list in experiment_sources]
    )
    settings = Settings(
        union,
        offsets,
        bool(experiment_sources) or bool(paired_experiments),
        require,
        params.flags.exclude,
        list(params.mask_code),
        engine,
        paired_experiments=dict(paired_experiments or {}),
    )
    if params.mp.method == "mpi":
        batches = run_mpi(sources, settings, comm)
        if batches is None:
            return None
    else:
        batches = run_serial_or_pool(
            sources, settings, resolve_nproc(params.mp.nproc), progress
        )
    n_files = sum(len(batch.outcomes) for batch in batches)
    failed = sorted(
        (
            outcome
            for batch in batches
            for outcome in batch.outcomes
            if outcome.error is not None
        ),
        key=lambda outcome: outcome.index,
    )
    if failed and (params.input.bad_files == "fail" or len(failed) == n_files):
        if n_files == 1:
            failed[0].raise_error()
        what = (
            "every reflection file was unusable"
            if len(failed) == n_files
            else f"{len(failed)} of {n_files} reflection files could not be used (input.bad_files=fail)"
        )
        raise UnusableFilesError(f"{what}; the first: {failed[0].error}")
    spot_sizes, datasets, inputs, skipped, labels = merge(batches, settings)
    for number, (source, experiment_list) in enumerate(experiment_sources):
        inputs.append(
            {
                "experiments": str(source)
                if isinstance(source, (str, os.PathLike))
                else f"experiments {number}",
                "n_experiments": len(experiment_list),
                "experiment_identifiers": experiment_list.identifiers(),
            }
        )
    if len(spot_sizes) == 0:
        raise SelectionError(_nothing_selected_message(datasets))
    result = summarise(
        spot_sizes,
        datasets,
        mask_code=params.mask_code,
        bins=params.histogram.bins,
        data_min=data_min,
        data_max=data_max,
        n_resolution_shells=params.resolution.shells,
        experiment_labels=labels,
    )
    return AnalysisResult(
        result=result,
        params=params,
        inputs=inputs,
        experiments=union,
        skipped_files=[*skipped_files, *skipped],
    )


def _nothing_selected_message(datasets: Sequence[DatasetSelection]) -> str:
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


def analyse_sizes(
    sizes: Iterable[int],
    flags: Iterable[int] | None = None,
    has_pixel_data: Iterable[bool] | None = None,
    panel: Iterable[int] | None = None,
    image: Iterable[int] | None = None,
    d_spacing: Iterable[float] | None = None,
    params=None,
    **overrides,
) -> AnalysisResult:
    """The analysis of per-reflection sizes already counted (e.g. by DIALS): ``flags``
    selects rows as ``flags.require``/``flags.exclude`` say; rows where
    ``has_pixel_data`` is False are excluded and reported."""
    params = extract_parameters(params, **overrides)
    require, data_min, data_max = resolved_parameters(params)
    sizes = np.asarray(sizes, dtype=np.int64).ravel()
    n = sizes.size

    def column(values, default, dtype):
        array = (
            np.full(n, default, dtype=dtype)
            if values is None
            else np.asarray(values, dtype=dtype).ravel()
        )
        if array.size != n:
            raise ValueError(f"every array must have one value per reflection ({n})")
        return array

    flags_array = column(flags, 0, np.uint64)
    required, automatic = resolve_required_flags(require, flags_array)
    excluded = flag_names.parse_flag_names(params.flags.exclude)
    selected = flag_names.select_by_flags(flags_array, required, excluded)
    counted = selected & column(has_pixel_data, True, bool)
    spot_sizes = SpotSizes(
        size=sizes[counted],
        dataset=np.zeros(int(counted.sum()), np.int32),
        experiment=np.zeros(int(counted.sum()), np.int64),
        panel=column(panel, 0, np.int64)[counted],
        image=column(image, -1, np.int64)[counted],
        d_spacing=column(d_spacing, np.nan, np.float64)[counted],
    )
    selection = DatasetSelection(
        name="arrays",
        n_rows=n,
        require=required,
        exclude=excluded,
        require_was_automatic=automatic,
        n_selected=int(selected.sum()),
        n_without_pixel_data=int(selected.sum() - counted.sum()),
        n_counted=int(counted.sum()),
        size_source="arrays",
    )
    if len(spot_sizes) == 0:
        raise SelectionError(_nothing_selected_message([selection]))
    result = summarise(
        spot_sizes,
        [selection],
        params.mask_code,
        params.histogram.bins,
        data_min,
        data_max,
        params.resolution.shells,
        [""],
    )
    return AnalysisResult(
        result=result, params=params, inputs=[{"reflections": "arrays", "n_rows": n}]
    )
