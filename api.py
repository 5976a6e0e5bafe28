"""The Python API for pipelines.

>>> from dials_spot_size_analysis.api import analyse, json_document
>>> result = analyse("indexed.refl", "indexed.expt", bins=50)
>>> result.histogram.counts, result.statistics["median"]
>>> document = json_document(result)   # the JSON document dials.spot_size_analysis writes

``analyse`` takes file paths, :class:`ReflectionTable` objects, msgpack bytes or a DIALS
``flex.reflection_table`` (read through its ``as_msgpack()``), and experiment lists as
paths, :class:`ExperimentList` objects or DIALS ``ExperimentList`` objects (through their
``to_dict()``); ``analyse_sizes`` takes per-reflection sizes as numpy arrays. Parameters
are the program's PHIL parameters, given as keyword arguments with any unique suffix of
their name (``bins=50``, ``mask_code="Valid+Foreground"``, ``require="indexed"``) or as a
``params`` object from ``phil_scope``. Every problem a caller can fix raises a
:class:`SpotSizeAnalysisError` (a one-sentence message).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np

from .algorithms import flags as flag_names
from .algorithms.result import AnalysisResult
from .algorithms.spot_sizes import (
    DatasetSelection,
    SelectionError,
    SpotSizes,
    resolve_required_flags,
    summarise,
)
from .errors import SpotSizeAnalysisError
from .formats import ExperimentList, FileFormatError, read_experiments
from .formats.experiments import parse_experiments
from .parallel.run import UnusableFilesError, nothing_selected_message, run_analysis
from .phil.options import analysis_options
from .phil.parameters import ParameterError, extract_parameters
from .report.document import json_document

__all__ = [
    "AnalysisResult",
    "FileFormatError",
    "ParameterError",
    "SelectionError",
    "SpotSizeAnalysisError",
    "UnusableFilesError",
    "analyse",
    "analyse_sizes",
    "extract_parameters",
    "json_document",
]


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


def analyse(reflections, experiments=None, params=None, **overrides) -> AnalysisResult:
    """Measure spot sizes in one or more reflection tables, with their experiments.

    Several tables are analysed together (one histogram of all their rows) and reported
    per dataset; tables are matched to experiments by experiment identifier.

    Parameters
    ----------
    reflections : path, ReflectionTable, bytes, DIALS table, or a list of them
        The reflection tables.
    experiments : path, ExperimentList, dict, DIALS ExperimentList, or a list of them
        The experiment lists (optional: without, no resolutions).
    params : optional
        A ``phil_scope.extract()`` object.
    **overrides
        Parameters by (unique suffix of) name, e.g. ``bins=50``, ``nproc=2``,
        ``bad_files="fail"``.
    """
    params = extract_parameters(params, **overrides)
    options = analysis_options(params)
    experiment_sources = [(e, _as_experiments(e)) for e in _listify(experiments)]
    return run_analysis(_listify(reflections), experiment_sources, options)


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
    """The analysis of per-reflection sizes already counted (e.g. by DIALS).

    Parameters
    ----------
    sizes : array of int
        One size per reflection.
    flags : array of int, optional
        DIALS flags: rows are selected as ``flags.require``/``flags.exclude`` say.
    has_pixel_data : array of bool, optional
        False for rows without pixel data: excluded and reported.
    panel, image, d_spacing : arrays, optional
        Where each reflection is, for the breakdowns.
    params, **overrides
        As for :func:`analyse`.
    """
    params = extract_parameters(params, **overrides)
    options = analysis_options(params)
    sizes = np.asarray(sizes, dtype=np.int64).ravel()
    n = sizes.size

    def column(values, default, dtype):
        if values is None:
            return np.full(n, default, dtype=dtype)
        array = np.asarray(values, dtype=dtype).ravel()
        if array.size != n:
            raise ValueError(f"every array must have one value per reflection ({n})")
        return array

    flags_array = column(flags, 0, np.uint64)
    required, automatic = resolve_required_flags(options.measure.require, flags_array)
    excluded = flag_names.parse_flag_names(options.measure.exclude)
    selected = flag_names.select_by_flags(flags_array, required, excluded)
    counted = selected & column(has_pixel_data, True, bool)
    n_counted = int(counted.sum())
    spot_sizes = SpotSizes.unshaped(
        size=sizes[counted],
        dataset=np.zeros(n_counted, np.int32),
        experiment=np.zeros(n_counted, np.int64),
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
        n_without_pixel_data=int(selected.sum()) - n_counted,
        n_counted=n_counted,
        size_source="arrays",
    )
    if n_counted == 0:
        raise SelectionError(nothing_selected_message([selection]))
    result = summarise(
        spot_sizes, [selection], options.measure.mask_code, options.summary, [""]
    )
    inputs: list[dict[str, Any]] = [{"reflections": "arrays", "n_rows": n}]
    return AnalysisResult(result=result, parameters=options.parameters, inputs=inputs)
