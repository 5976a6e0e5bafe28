"""From PHIL parameters to the plain, checked options of each room: "Auto" is resolved
here, once, and every value PHIL accepts but the analysis cannot use is refused here,
before any work."""

from __future__ import annotations

from ..algorithms import flags as flag_names
from ..algorithms.spot_sizes import MeasureOptions, SummaryOptions
from ..parallel.pool import resolve_nproc
from ..parallel.run import AnalysisOptions, RunOptions
from .parameters import AUTO, ParameterError, parameters_as_dict, plain


def _range_limit(value) -> float | None:
    return None if value is None or plain(value) == AUTO else float(value)


def summary_options(params) -> SummaryOptions:
    """The histogram and resolution-shell options, checked."""
    histogram = params.histogram
    data_min = _range_limit(histogram.data_min)
    data_max = _range_limit(histogram.data_max)
    if data_min is not None and data_max is not None and not data_max > data_min:
        raise ParameterError(
            f"histogram.data_max ({data_max:g}) must be greater than histogram.data_min ({data_min:g}): "
            "widen the range, or set either to Auto"
        )
    return SummaryOptions(
        bins=histogram.bins,
        data_min=data_min,
        data_max=data_max,
        n_resolution_shells=params.resolution.shells,
    )


def measure_options(params) -> MeasureOptions:
    """The selection and mask-code options, flag names checked."""
    require = params.flags.require
    require = AUTO if plain(require) in (AUTO, [AUTO]) else (require or [])
    try:
        flag_names.parse_flag_names([] if require == AUTO else require)
        flag_names.parse_flag_names(params.flags.exclude)
    except flag_names.UnknownFlagError as error:
        raise ParameterError(str(error)) from None
    return MeasureOptions(
        require=require,
        exclude=list(params.flags.exclude or []),
        mask_code=tuple(params.mask_code),
    )


def analysis_options(params) -> AnalysisOptions:
    """Every option of an analysis from a ``phil_scope.extract()`` object.

    Raises
    ------
    ParameterError
        Where a value cannot be used, in one sentence naming it.
    """
    return AnalysisOptions(
        measure=measure_options(params),
        summary=summary_options(params),
        run=RunOptions(
            nproc=resolve_nproc(params.mp.nproc),
            method=params.mp.method,
            bad_files=params.input.bad_files,
        ),
        parameters=parameters_as_dict(params),
    )
