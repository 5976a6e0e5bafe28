"""From PHIL parameters to the plain, checked options of each room: "Auto" is resolved
here, once, and every value PHIL accepts but the analysis cannot use is refused here,
before any work."""

from __future__ import annotations

import math

from ..algorithms import flags as flag_names
from ..algorithms.mask_codes import UnknownMaskCodeError, canonical_names
from ..algorithms.spot_sizes import MeasureOptions, SummaryOptions
from ..parallel.pool import machine_memory_bytes, resolve_nproc
from ..parallel.run import AnalysisOptions, RunOptions
from .parameters import AUTO, ParameterError, parameters_as_dict, plain


def _whole_number(value, name: str, auto: bool = False) -> int | None:
    """A count PHIL accepted: Auto only where it means something, never None."""
    if auto and plain(value) == AUTO:
        return None
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        what = "a whole number" + (" or Auto" if auto else "")
        raise ParameterError(f"{name} must be {what}, not {plain(value)}")
    return value


def _range_limit(value, name: str) -> float | None:
    """A histogram edge: a finite number, or Auto (None here)."""
    if plain(value) == AUTO:
        return None
    if value is None or not math.isfinite(value):
        raise ParameterError(
            f"{name} must be a finite number or Auto, not {plain(value)}"
        )
    return float(value)


def _finite(value, name: str) -> float:
    """A number PHIL accepted within its limits: NaN passes every limit, so refused
    here."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, not {plain(value)}")
    return float(value)


def _memory_limit_bytes(value) -> float | None:
    """``profile.memory_limit``: GB given, this machine's memory for Auto, or None
    (not checked)."""
    if value is None:
        return None
    if plain(value) == AUTO:
        found = machine_memory_bytes()
        if found is None:
            raise ParameterError(
                "profile.memory_limit=Auto: this system does not say how much memory "
                "it has; give the machine's memory in GB, e.g. profile.memory_limit=64"
            )
        return float(found)
    return _finite(value, "profile.memory_limit") * 1e9


def summary_options(params) -> SummaryOptions:
    """The histogram and resolution-shell options, checked (their maxima are in the
    PHIL definitions, which libtbx checks).

    Parameters
    ----------
    params
        A ``phil_scope.extract()`` object (see ``phil.parameters.extract_parameters``).

    Returns
    -------
    SummaryOptions
        The number of bins, the histogram's range (pixels; None for Auto) and the
        number of resolution shells.

    Raises
    ------
    ParameterError
        Where a value cannot be used (not a whole number, not finite, or
        ``data_max`` not above ``data_min``).
    """
    histogram = params.histogram
    bins = _whole_number(histogram.bins, "histogram.bins")
    shells = _whole_number(params.resolution.shells, "resolution.shells")
    data_min = _range_limit(histogram.data_min, "histogram.data_min")
    data_max = _range_limit(histogram.data_max, "histogram.data_max")
    if data_min is not None and data_max is not None and not data_max > data_min:
        raise ParameterError(
            f"histogram.data_max ({data_max:g}) must be greater than histogram.data_min ({data_min:g}): "
            "widen the range, or set either to Auto"
        )
    return SummaryOptions(
        bins=bins, data_min=data_min, data_max=data_max, n_resolution_shells=shells
    )


def measure_options(params) -> MeasureOptions:
    """The selection and mask-code options, flag names checked.

    Parameters
    ----------
    params
        A ``phil_scope.extract()`` object (see ``phil.parameters.extract_parameters``).

    Returns
    -------
    MeasureOptions
        The flags required (``"Auto"`` or names) and excluded, and the mask code
        names in DIALS's spelling.

    Raises
    ------
    ParameterError
        For a flag or mask code name DIALS does not define.
    """
    require = params.flags.require
    require = AUTO if plain(require) in (AUTO, [AUTO]) else (require or [])
    if plain(params.flags.exclude) in (AUTO, [AUTO]):
        raise ParameterError(
            "flags.exclude takes flag names (or None), not Auto: Auto is for "
            "flags.require"
        )
    if plain(params.mask_code) in (AUTO, [AUTO]):
        raise ParameterError(
            "mask_code takes mask code names (e.g. Foreground), not Auto"
        )
    try:
        flag_names.parse_flag_names([] if require == AUTO else require)
        flag_names.parse_flag_names(params.flags.exclude)
        mask_code = canonical_names(params.mask_code or [])
    except (flag_names.UnknownFlagError, UnknownMaskCodeError) as error:
        raise ParameterError(str(error)) from None
    return MeasureOptions(
        require=require,
        exclude=list(params.flags.exclude or []),
        mask_code=tuple(mask_code),
    )


# Parameters whose value is a file name (or None), where PHIL also accepts Auto.
PATH_PARAMETERS = (
    "output.log",
    "output.json",
    "output.html",
    "output.plot",
    "output.suggestions",
    "output.reflections",
    "input.find_spots",
)


def _refuse_auto_paths(params) -> None:
    """A file name parameter given as Auto: one sentence, not a traceback."""
    for name in PATH_PARAMETERS:
        scope, _, leaf = name.partition(".")
        if plain(getattr(getattr(params, scope), leaf)) == AUTO:
            raise ParameterError(f"{name} takes a file name (or None), not Auto")


def analysis_options(params) -> AnalysisOptions:
    """Every option of an analysis from a ``phil_scope.extract()`` object.

    Parameters
    ----------
    params
        A ``phil_scope.extract()`` object (see ``phil.parameters.extract_parameters``).

    Returns
    -------
    AnalysisOptions
        The measure, summary and run options, every parameter as plain data, the
        profile model's n_sigma (None where ``profile.compute=False``) and the
        spot-finding file.

    Raises
    ------
    ParameterError
        Where a value cannot be used, in one sentence naming it.
    """
    _refuse_auto_paths(params)
    return AnalysisOptions(
        measure=measure_options(params),
        summary=summary_options(params),
        run=RunOptions(
            nproc=resolve_nproc(_whole_number(params.mp.nproc, "mp.nproc", auto=True)),
            method=params.mp.method,
            bad_files=params.input.bad_files,
        ),
        parameters=parameters_as_dict(params),
        n_sigma=(
            _finite(params.profile.n_sigma, "profile.n_sigma")
            if params.profile.compute
            else None
        ),
        spot_finding_file=params.input.find_spots,
        all_predictions=params.profile.shoebox_memory == "all_predictions",
        max_reference=params.profile.max_reflections,
        memory_limit_bytes=(
            _memory_limit_bytes(params.profile.memory_limit)
            if params.profile.compute
            else None
        ),
    )
