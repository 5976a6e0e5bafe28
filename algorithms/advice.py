"""Advice on DIALS spot-finding limits and the integration profile model, from the data.

Pure functions on arrays and numbers: no file I/O, no printing, no PHIL. Each check
returns a plain dict (figures, the histogram near the limit, whether the data call for a
change and why) with a ``suggestion`` that is ``None`` wherever the defaults serve.

DIALS facts used here (paths in the dials/dials repository):

- ``spotfinder.filter.min_spot_size = Auto``, ``max_spot_size = 1000`` (pixels),
  ``max_separation = 2`` (pixels; z in images): the spot-finding phil scope in
  ``src/dials/algorithms/spot_finding/factory.py``. ``Auto`` becomes 3 for a
  ``SENSOR_PAD`` detector and 6 otherwise (``reflection_table.from_observations`` in
  ``src/dials/array_family/flex_ext.py``).
- Spots with fewer than ``min_spot_size`` or more than ``max_spot_size`` connected pixels
  (counted over every image the spot touches) are dropped before any other filter
  (``pixel_list_to_shoeboxes`` in ``src/dials/algorithms/spot_finding/finder.py``); a
  spot is kept where ``|peak - centroid| <= max_separation`` (``PeakCentroidDistanceFilter``
  in ``factory.py``).
- ``profile.gaussian_rs.parameters.sigma_b``/``sigma_m`` (degrees, override the
  calculated values; both or neither must be set) and ``n_sigma = 3.0``
  (``src/dials/algorithms/profile_model/gaussian_rs/model.py``);
  ``integration.block.size`` (auto, degrees by default), ``integration.block.max_memory_usage
  = 0.80`` and ``integration.mp.nproc = 1``
  (``src/dials/algorithms/integration/integrator.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, Sequence

import numpy as np

from ..jit import njit
from .profile_model import SIGMA_B_MULTIPLIER
from .statistics import median_of_finite, percentiles_from_counts, value_counts

FIND_SPOTS = "dials.find_spots"
INTEGRATE = "dials.integrate"

MIN_SPOT_SIZE = "spotfinder.filter.min_spot_size"
MAX_SPOT_SIZE = "spotfinder.filter.max_spot_size"
MAX_SEPARATION = "spotfinder.filter.max_separation"
SIGMA_B = "profile.gaussian_rs.parameters.sigma_b"
SIGMA_M = "profile.gaussian_rs.parameters.sigma_m"
N_SIGMA = "profile.gaussian_rs.parameters.n_sigma"
BLOCK_SIZE = "integration.block.size"
NPROC = "integration.mp.nproc"

DEFAULT_MAX_SPOT_SIZE = 1000
DEFAULT_MAX_SEPARATION = 2.0
FILTER_OFF = "None"  # max_separation = None as spot finding used it: no such filter
PIXEL_ARRAY = "SENSOR_PAD"  # dxtbx's panel type of pixel-array detectors
AUTO_MIN_SPOT_SIZE = {PIXEL_ARRAY: 3, "other": 6}
DEFAULT_N_SIGMA = 3.0
DEFAULT_MAX_MEMORY_USAGE = 0.80
PHIL_SOURCE = "DIALS default; src/dials/algorithms/spot_finding/factory.py"

# --- Thresholds for "the data call for a change", and why --------------------------
# Width of the band just inside max_spot_size, as a fraction of the cap: a spot within
# 10% of the cap is one that a slightly lower threshold or a brighter image would push
# over it, so a population there is a population the cap is already cutting.
SIZE_BAND_FRACTION = 0.10
# Width of the band just inside max_separation, in pixels. Not 1 px: a compact 3-D spot's
# peak pixel centre can lie up to half a pixel diagonal (0.87 px) from its centroid, and on
# real rotation data (centroid_test_data) a third of accepted spots lie within 1 px of the
# 2 px limit with a tail that decays smoothly; a quarter pixel isolates the edge.
SEPARATION_BAND_PX = 0.25
# Fewer spots than this in the band is no evidence either way (a Poisson count of 5 is
# uncertain by +-45%).
MIN_BAND_COUNT = 5
# A pile-up: the band holds at least twice the extrapolated tail and more than 3 Poisson
# standard deviations above it.
PILE_UP_FACTOR = 2.0
PILE_UP_SIGMAS = 3.0
# A tail that has not decayed by the limit (band density >= that two bands further in)
# calls for a change only if the band holds at least 1% of all spots.
NO_DECAY_FRACTION = 0.01
# dials.find_spots reporting more than 1% of spots removed as too large (the tutorial
# log shows 34 of 281,683, 0.01%; DIALS issue #937 lost 7,209).
REMOVED_TOO_LARGE_FRACTION = 0.01
# min_spot_size: the density at the lower limit is no evidence (noise spots of 1-2 px
# pile up there by design: the DIALS tutorial removes 123,788 of 405,471 spots as < 3 px);
# the cut lies in the bulk of the real spots when the median spot is within this many
# pixels of it. Never suggest below 2: a 1-pixel "spot" cannot be told from a hot pixel.
MIN_SIZE_MEDIAN_MARGIN = 1
SMALLEST_SUGGESTED_MIN_SPOT_SIZE = 2
# Profile model: sigma_m above 5 degrees is not a crystal (DIALS issues #599: 20.8 deg,
# #421: 21.9 deg; well-ordered crystals give 0.02-0.5 deg).
ABSURD_SIGMA_M_DEG = 5.0
# A model box more than 4 times the 95th percentile of observed spot extents along an
# axis, and at least this big, is many times the spots (xia2 #153, DIALS #1615). Across
# the detector the box's foreground is compared (the box is SIGMA_B_MULTIPLIER times
# as wide, for background, by DIALS's design): the sigmas suggested below then clear
# the flag they answer.
BOX_TO_SPOT_RATIO = 4.0
MIN_FLAGGED_BOX_IMAGES = 10.0
MIN_FLAGGED_BOX_PX = 20.0
# Suggested fixed sigmas give a foreground box twice the 95th-percentile observed extent:
# threshold-found extents miss the weak tails of a profile.
SUGGESTED_BOX_TO_SPOT = 2.0
# An unresolved rocking curve (spots on one image) has an apparent sigma of about the
# image width over sqrt(12) = 0.29 widths; estimates in this range with median spots on
# a single image measure the image width, not the crystal (DIALS #119, #342).
TRACKING_SIGMA_M_IMAGES = (0.2, 0.6)
TRACKING_MAX_MEDIAN_EXTENT_Z = 1.0


def _finite(values) -> np.ndarray:
    """The finite values, flattened (never written to): whole numbers (sizes, extents)
    as they are, without a float copy of a million rows, and real ones that are all
    finite (the checks pass them on to each other) without another."""
    values = np.asarray(values).ravel()
    if np.issubdtype(values.dtype, np.integer):
        return values
    values = values.astype(float, copy=False)
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def _median(values) -> float | None:
    """numpy's median of the finite values (None for none)."""
    return _percentile(values, 50)


def _median_or_nan(values) -> float:
    median = _median(values)
    return math.nan if median is None else median


# The tallies made during one advise() call, by array: several checks take the median
# or a percentile of the same sizes, footprints and extents.
_TALLIES: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "tallies", default=None
)


@contextlib.contextmanager
def _tallies_kept() -> Iterator[None]:
    """Keep each array's tally while the block runs, by the memory holding the
    numbers. The arrays are held with their tallies, so that no other array can take
    the memory of one freed meanwhile."""
    token = _TALLIES.set({})
    try:
        yield
    finally:
        _TALLIES.reset(token)


def _finite_and_tally(values) -> tuple[np.ndarray, np.ndarray | None]:
    """The finite values and their ``value_counts``, made once per array inside
    :func:`_tallies_kept` (views of the same numbers share them)."""
    values = np.asarray(values)
    kept = _TALLIES.get()
    memory = (
        values.__array_interface__["data"][0], values.shape, values.strides,
        values.dtype.str,
    )  # fmt: skip
    found = None if kept is None else kept.get(memory)
    if found is None:
        finite = _finite(values)
        found = (values, finite, value_counts(finite) if finite.size else None)
        if kept is not None:
            kept[memory] = found
    return found[1], found[2]


def _percentile(values, q: float) -> float | None:
    """numpy's percentile (linear interpolation) of the finite values (None for none);
    for whole numbers from their tally (the same number, see
    statistics.percentiles_from_counts)."""
    values, counts = _finite_and_tally(values)
    if not values.size:
        return None
    if counts is not None:
        return float(percentiles_from_counts(counts, [q])[0])
    if q == 50:
        return median_of_finite(values.astype(float, copy=False))
    return float(np.percentile(values, q))


def _round_sig(value: float, digits: int = 3) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def upper_tail_bands(values, limit: float, band: float) -> dict:
    """Count values in the three bands of width ``band`` just below an upper ``limit``.

    Parameters
    ----------
    values : array_like
        The per-spot quantity DIALS compares with the limit.
    limit, band : float
        The limit and the band width.

    Returns
    -------
    dict
        ``n_near`` (in [limit - band, limit]), ``n_previous`` and ``n_before_previous``
        (the two bands further in), ``expected_near`` (the tail extrapolated into the
        last band: the decay from the earlier bands continued, or flat where the tail
        does not decay), ``n_beyond_limit``, ``pile_up`` and ``not_decaying`` (bools).
    """
    values = np.asarray(values).ravel()
    edges = limit - band * np.arange(3, -1, -1)
    n, near, previous, before, beyond = _band_counts(values, edges, float(limit))
    decaying = 0 < previous < before
    expected = previous * previous / before if decaying else float(previous)
    excess = near - expected
    pile_up = (
        near >= MIN_BAND_COUNT
        and near >= PILE_UP_FACTOR * expected
        and excess > PILE_UP_SIGMAS * math.sqrt(max(expected, 1.0))
    )
    fraction = near / n if n else 0.0
    not_decaying = (
        near >= MIN_BAND_COUNT and near >= before and fraction >= NO_DECAY_FRACTION
    )
    return {
        "n_near": near,
        "n_previous": previous,
        "n_before_previous": before,
        "expected_near": float(expected),
        "n_beyond_limit": beyond,
        "pile_up": bool(pile_up),
        "not_decaying": bool(not_decaying),
    }


def _upper_tail_reasons(bands: dict, n: int, band: str, undecayed: str) -> list[str]:
    """Why an upper limit cuts into the spots, from :func:`upper_tail_bands`: a
    pile-up in the band below it, or a tail that has not decayed there (``band`` names
    the band, e.g. "5 px below the cap"; ``undecayed`` says what has not decayed)."""
    near = bands["n_near"]
    reasons = []
    if bands["pile_up"]:
        reasons.append(
            f"{near} spots lie within {band} where the tail predicts "
            f"{bands['expected_near']:.1f}: a pile-up at the limit"
        )
    if bands["not_decaying"]:
        reasons.append(
            f"{near} spots ({near / n:.1%}) lie within {band} and {undecayed}"
        )
    return reasons


def _upper_limit_reasons(
    bands: dict, n: int, beyond_words: tuple, tail_words: tuple
) -> tuple[list[str], bool]:
    """Why an upper limit is questioned, and whether the spots contradict it.

    A limit (given, or DIALS's default) with spots beyond it cannot be judged from
    them: spot finding would have removed those spots, so it ran with another value
    (``beyond_words`` say how the spots pass it and name the value and its source).
    Otherwise the reasons are :func:`_upper_tail_reasons` (``tail_words``: its band
    and what has not decayed).
    """
    beyond = bands["n_beyond_limit"]
    if beyond:
        spots, setting = beyond_words
        return [
            f"{beyond} of {n} spots {spots} {setting}: spot finding for this table "
            "used a larger value (or none), so the spots cannot judge this one"
        ], True
    return _upper_tail_reasons(bands, n, *tail_words), False


@njit
def _band_counts(values, edges, limit):
    """Of the finite values: how many there are, how many lie in [edges[2], limit],
    [edges[1], edges[2]) and [edges[0], edges[1]), and how many beyond the limit; one
    pass, comparisons as numpy's (whole numbers compared as float64)."""
    n = near = previous = before = beyond = 0
    for value in values:
        if not np.isfinite(value):
            continue
        n += 1
        near += value >= edges[2] and value <= limit
        previous += value >= edges[1] and value < edges[2]
        before += value >= edges[0] and value < edges[1]
        beyond += value > limit
    return n, near, previous, before, beyond


@njit
def _edge_counts(values, edges, counts):
    """``np.histogram(finite values, bins=edges)``: bin i holds edges[i] <= v <
    edges[i + 1], the last bin also its upper edge. The bin is guessed as for evenly
    spaced edges, then moved until the edges themselves agree."""
    last = edges.size - 1
    span = edges[last] - edges[0]
    scale = last / span if span > 0.0 else 0.0  # equal edges: walked from the first
    for value in values:
        if not (np.isfinite(value) and edges[0] <= value <= edges[last]):
            continue
        guess = min(max(int((value - edges[0]) * scale), 0), last - 1)
        while guess > 0 and value < edges[guess]:
            guess -= 1
        while guess < last - 1 and value >= edges[guess + 1]:
            guess += 1
        counts[guess] += 1


def _histogram(values, edges: np.ndarray, limit: float, band: tuple) -> dict:
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.zeros(edges.size - 1, np.int64)
    _edge_counts(np.asarray(values).ravel(), edges, counts)
    return {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "limit": float(limit),
        "band": [float(band[0]), float(band[1])],
    }


def _suggestion(program, parameter, current, suggested, reason, evidence) -> dict:
    return {
        "program": program,
        "parameter": parameter,
        "current": current,
        "suggested": suggested,
        "reason": reason,
        "evidence": evidence,
    }


def _removed_fraction(removed: int | None, n_kept: int) -> float | None:
    if removed is None or removed + n_kept == 0:
        return None
    return removed / (removed + n_kept)


def check_max_spot_size(
    size,
    footprint,
    extent_z,
    max_spot_size: int | None = None,
    source: str | None = None,
    removed: int | None = None,
) -> dict:
    """Is ``spotfinder.filter.max_spot_size`` cutting into the spots?

    The cap counts pixels over all images (1000 is 10 x 10 px x 10 images), so it is
    also translated into a footprint on one image for the observed z extents.

    Parameters
    ----------
    size : array_like
        Coded (Foreground) pixels per spot over all images.
    footprint : array_like
        Most coded pixels of each spot on one image.
    extent_z : array_like
        Images each spot spans.
    max_spot_size : int, optional
        The cap used; DIALS's default (1000) when None.
    source : str, optional
        Where the value came from (a log line, a .phil file).
    removed : int, optional
        Spots dials.find_spots removed as too large ("Removed N spots with size > M
        pixels").

    Returns
    -------
    dict
        ``parameter``, ``program``, ``value``, ``source``, ``default``, ``side``
        ("upper"), ``n_spots``, ``margin``, ``margin_reason``, ``n_at_limit``, ``n_near``,
        ``fraction_near``, ``n_previous``, ``n_before_previous``, ``expected_near``,
        ``n_beyond_limit``, ``removed``, ``removed_fraction``, ``over_images`` (dict:
        ``cube_side_px``, ``median_size``, ``max_size``), ``on_one_image`` (dict:
        ``median_extent_z``, ``footprint_at_cap``, ``footprint_side_px``,
        ``max_footprint``, ``median_footprint``), ``histogram`` (``edges``, ``counts``,
        ``limit``, ``band``), ``change_called_for``, ``judged`` (False where spots
        lie beyond the cap: spot finding used another value, which these spots
        cannot judge), ``reasons`` (list of str) and ``suggestion`` (dict or None).
    """
    size = _finite(size)
    limit = DEFAULT_MAX_SPOT_SIZE if max_spot_size is None else max_spot_size
    if max_spot_size is None:
        source = PHIL_SOURCE
    margin = SIZE_BAND_FRACTION * limit
    bands = upper_tail_bands(size, limit, margin)
    n = size.size
    removed_fraction = _removed_fraction(removed, n)
    median_z = _median(extent_z) or 1.0
    footprint_at_cap = limit / median_z
    reasons, contradicted = _upper_limit_reasons(
        bands,
        n,
        ("are larger than", f"max_spot_size={limit:g} ({source or 'given'})"),
        (
            f"{margin:g} px below the cap",
            "the size distribution has not decayed there: the cap cuts into the spots",
        ),
    )
    if removed_fraction is not None and removed_fraction >= REMOVED_TOO_LARGE_FRACTION:
        reasons.append(
            f"dials.find_spots removed {removed} spots ({removed_fraction:.1%}) as "
            f"larger than {limit} px"
        )
    evidence = {
        "n_spots": n,
        "n_near": bands["n_near"],
        "expected_near": round(bands["expected_near"], 2),
        "removed": removed,
        "median_extent_z": median_z,
        "footprint_at_cap": round(footprint_at_cap, 1),
    }
    suggestion = None
    if reasons and not contradicted:
        suggestion = _suggestion(
            FIND_SPOTS,
            MAX_SPOT_SIZE,
            limit,
            int(2 * limit),
            f"keep the large spots the cap of {limit} px removes (it allows "
            f"{footprint_at_cap:.0f} px per image for spots over {median_z:g} image(s))",
            evidence,
        )
    edges = np.linspace(limit - 3 * margin, limit, 16)
    return {
        "parameter": MAX_SPOT_SIZE,
        "program": FIND_SPOTS,
        "value": limit,
        "source": source or "given",
        "default": DEFAULT_MAX_SPOT_SIZE,
        "side": "upper",
        "n_spots": n,
        "margin": margin,
        "margin_reason": (
            "the top 10% of the cap: spots a slightly lower threshold would push over it"
        ),
        "n_at_limit": int(np.count_nonzero(size == limit)),
        "n_near": bands["n_near"],
        "fraction_near": bands["n_near"] / n if n else 0.0,
        "n_previous": bands["n_previous"],
        "n_before_previous": bands["n_before_previous"],
        "expected_near": bands["expected_near"],
        "n_beyond_limit": bands["n_beyond_limit"],
        "removed": removed,
        "removed_fraction": removed_fraction,
        "over_images": {
            "cube_side_px": float(np.cbrt(limit)),
            "median_size": _median(size),
            "max_size": float(size.max()) if n else None,
        },
        "on_one_image": {
            "median_extent_z": median_z,
            "footprint_at_cap": footprint_at_cap,
            "footprint_side_px": math.sqrt(footprint_at_cap),
            "max_footprint": float(_finite(footprint).max()) if n else None,
            "median_footprint": _median(footprint),
        },
        "histogram": _histogram(size, edges, limit, (limit - margin, limit)),
        "change_called_for": suggestion is not None,
        "judged": not contradicted,
        "reasons": reasons,
        "suggestion": suggestion,
    }


def auto_min_spot_size(detector_type: str) -> int:
    """DIALS's ``Auto`` min_spot_size for a detector whose first panel has this type
    (``reflection_table.from_observations``): 3 for pixel-array detectors, else 6.

    Parameters
    ----------
    detector_type : str
        dxtbx's panel type (``SENSOR_PAD``, ``SENSOR_CCD``, ... or "").
    """
    return AUTO_MIN_SPOT_SIZE[PIXEL_ARRAY if detector_type == PIXEL_ARRAY else "other"]


def resolve_min_spot_size(
    min_spot_size: int | None,
    detector_type: str | None,
    smallest_spot: float | None,
    stated: str | None = None,
) -> tuple[int | None, str]:
    """The min_spot_size DIALS used, and where that came from.

    Without a log or .phil, DIALS's ``Auto`` for the detector is assumed, unless the
    table holds spots smaller than that: spot finding then ran with a smaller value,
    at most the smallest spot's size, which is taken instead (and said so).

    Parameters
    ----------
    min_spot_size : int, optional
        The value used, where known (a log or .phil).
    detector_type : str, optional
        The first panel's type (``SENSOR_PAD`` for pixel-array detectors, "" where the
        file has none), which DIALS's ``Auto`` depends on; None where unknown.
    smallest_spot : float, optional
        The smallest spot in the table: the limit cannot exceed it.
    stated : str, optional
        Where ``Auto`` was stated (the user's log or .phil); None: assumed.

    Returns
    -------
    tuple
        (value or None, source).
    """
    if min_spot_size is not None:
        return int(min_spot_size), "given"
    auto = None
    if detector_type is not None:
        auto = auto_min_spot_size(detector_type)
        detector = f"a {detector_type} detector" if detector_type else "a detector"
        if smallest_spot is None or smallest_spot >= auto:
            return auto, (
                f"DIALS Auto for {detector}, "
                + (f"as {stated} says" if stated else "assumed")
                + "; src/dials/array_family/flex_ext.py, from_observations"
            )
    if smallest_spot is None:
        return None, "unknown"
    source = "inferred: the smallest spot found"
    if auto is not None:
        source += (
            f", below the {auto} of DIALS Auto for {detector}: spot finding ran "
            "with a smaller value"
        ) + (f" than the Auto {stated} states" if stated else "")
    return int(smallest_spot), source


def check_min_spot_size(
    size,
    footprint,
    extent_z,
    min_spot_size: int | None = None,
    source: str | None = None,
    detector_type: str | None = None,
    removed: int | None = None,
) -> dict:
    """Does ``spotfinder.filter.min_spot_size`` cut into the bulk of the real spots?

    Parameters
    ----------
    size, footprint, extent_z : array_like
        As for :func:`check_max_spot_size`.
    min_spot_size : int or "Auto", optional
        The value used; resolved as DIALS's ``Auto`` from ``detector_type`` when None
        or "Auto" (then stated by ``source``).
    source : str, optional
        Where ``min_spot_size`` came from.
    detector_type : str, optional
        The first panel's type.
    removed : int, optional
        Spots removed as too small ("Removed N spots with size < M pixels").

    Returns
    -------
    dict
        ``parameter``, ``program``, ``value``, ``source``, ``default`` ("Auto"),
        ``side`` ("lower"), ``n_spots``, ``margin``, ``margin_reason``, ``n_at_limit``,
        ``n_near``, ``fraction_near``, ``n_below_limit``, ``median_size``,
        ``median_footprint``, ``median_extent_z``, ``removed``, ``removed_fraction``,
        ``histogram``, ``change_called_for``, ``judged`` (False where spots lie below a
        limit given: spot finding used a smaller value), ``reasons``, ``suggestion``.
    """
    size = _finite(size)
    n = size.size
    stated = None
    if min_spot_size == "Auto":  # stated in the user's file: DIALS's own choice
        min_spot_size, stated = None, source
    limit, resolved_source = resolve_min_spot_size(
        min_spot_size, detector_type, float(size.min()) if n else None, stated
    )
    given = min_spot_size is not None
    source = source if (given and source) else resolved_source
    median = _median(size)
    reasons, suggestion = [], None
    if limit is None or not n:
        near = at = below = 0
    else:
        at = int(np.count_nonzero(size == limit))
        near = int(np.count_nonzero((size >= limit) & (size <= limit + 1)))
        below = int(np.count_nonzero(size < limit))
        if given and below:  # the limit given did not make these spots
            reasons.append(
                f"{below} of {n} spots are smaller than min_spot_size={limit} "
                f"({source}): spot finding for this table used a smaller value, so "
                "the spots cannot judge this one"
            )
        elif median <= limit + MIN_SIZE_MEDIAN_MARGIN:
            reasons.append(
                f"the median spot ({median:g} px) is within "
                f"{MIN_SIZE_MEDIAN_MARGIN} px of min_spot_size={limit}: the cut lies in "
                "the bulk of the spots"
            )
    suggested = (
        None if limit is None else max(SMALLEST_SUGGESTED_MIN_SPOT_SIZE, limit - 1)
    )
    if reasons and given and below:
        pass  # no suggestion from a limit these spots contradict
    elif reasons and suggested == limit:
        reasons.append(
            f"min_spot_size={limit} is already the smallest sensible value: no change"
        )
    elif reasons:
        suggestion = _suggestion(
            FIND_SPOTS,
            MIN_SPOT_SIZE,
            limit,
            suggested,
            f"half the spots are {median:g} px or smaller: keep the small real spots",
            {"n_spots": n, "median_size": median, "n_at_limit": at, "removed": removed},
        )
    start = 0 if limit is None else limit
    edges = np.arange(start - 0.5, start + 11.0, 1.0)
    return {
        "parameter": MIN_SPOT_SIZE,
        "program": FIND_SPOTS,
        "value": limit,
        "source": source,
        "default": "Auto",
        "side": "lower",
        "n_spots": n,
        "margin": 1,
        "margin_reason": (
            "sizes are whole pixels: the limit itself and one pixel more, the spots a "
            "one-pixel change of the limit would decide"
        ),
        "n_at_limit": at,
        "n_near": near,
        "fraction_near": near / n if n else 0.0,
        "n_below_limit": below,
        "median_size": median,
        "median_footprint": _median(footprint),
        "median_extent_z": _median(extent_z),
        "removed": removed,
        "removed_fraction": _removed_fraction(removed, n),
        "histogram": _histogram(size, edges, start, (start, start + 1)),
        "change_called_for": suggestion is not None,
        "judged": not (given and below),
        "reasons": reasons,
        "suggestion": suggestion,
    }


def check_max_separation(
    peak_centroid_distance,
    max_separation: float | None = None,
    source: str | None = None,
    removed: int | None = None,
) -> dict:
    """Is ``spotfinder.filter.max_separation`` rejecting a population of spots?

    Split or streaky spots have their brightest pixel far from the centroid (DIALS issue
    #3173); the filter's removals are not evidence on their own (the tutorial removes
    17% of spots, mostly weak ones), so the check looks at the accepted spots' distances
    just inside the limit.

    Parameters
    ----------
    peak_centroid_distance : array_like
        Distance (pixels, z in images) from the first maximum pixel's centre to the
        centroid, per spot.
    max_separation : float, optional
        The limit used; DIALS's default (2) when None.
    source : str, optional
        Where the value came from.
    removed : int, optional
        Spots the filter removed (from "Filtered K of N spots by peak-centroid
        distance": N - K).

    Returns
    -------
    dict
        ``parameter``, ``program``, ``value``, ``source``, ``default``, ``side``,
        ``n_spots``, ``margin``, ``margin_reason``, ``n_near``, ``fraction_near``,
        ``n_previous``, ``n_before_previous``, ``expected_near``, ``n_beyond_limit``,
        ``median_distance``, ``removed``, ``removed_fraction``, ``histogram``,
        ``change_called_for``, ``judged`` (False where spots lie beyond the limit),
        ``reasons``, ``suggestion``.
    """
    distance = _finite(peak_centroid_distance)
    limit = DEFAULT_MAX_SEPARATION if max_separation is None else float(max_separation)
    if max_separation is None:
        source = PHIL_SOURCE
    margin = SEPARATION_BAND_PX
    bands = upper_tail_bands(distance, limit, margin)
    n = distance.size
    reasons, contradicted = _upper_limit_reasons(
        bands,
        n,
        (
            "have their brightest pixel further from the centroid than",
            f"max_separation={limit:g} px ({source or 'given'})",
        ),
        (f"{margin:g} px of max_separation", "the distances have not decayed there"),
    )
    suggestion = None
    if reasons and not contradicted:
        suggestion = _suggestion(
            FIND_SPOTS,
            MAX_SEPARATION,
            limit,
            limit + 1.0,
            "keep spots whose brightest pixel lies off the centroid (split or streaky "
            "spots)",
            {
                "n_spots": n,
                "n_near": bands["n_near"],
                "expected_near": round(bands["expected_near"], 2),
                "removed": removed,
            },
        )
    edges = np.linspace(limit - 3 * margin, limit, 16)
    return {
        "parameter": MAX_SEPARATION,
        "program": FIND_SPOTS,
        "value": limit,
        "source": source or "given",
        "default": DEFAULT_MAX_SEPARATION,
        "side": "upper",
        "n_spots": n,
        "margin": margin,
        "margin_reason": (
            "a quarter pixel: a compact spot's peak pixel can lie 0.87 px from its "
            "centroid, so a 1 px band would hold ordinary spots"
        ),
        "n_near": bands["n_near"],
        "fraction_near": bands["n_near"] / n if n else 0.0,
        "n_previous": bands["n_previous"],
        "n_before_previous": bands["n_before_previous"],
        "expected_near": bands["expected_near"],
        "n_beyond_limit": bands["n_beyond_limit"],
        "median_distance": _median(distance),
        "removed": removed,
        "removed_fraction": _removed_fraction(removed, n),
        "histogram": _histogram(distance, edges, limit, (limit - margin, limit)),
        "change_called_for": suggestion is not None,
        "judged": not contradicted,
        "reasons": reasons,
        "suggestion": suggestion,
    }


def _box_flags(sigma_m_deg, box_z, box_xy, foreground_xy, p95_z, p95_xy, z_evidence):
    return {
        "sigma_m_absurd": sigma_m_deg > ABSURD_SIGMA_M_DEG,
        "box_z_many_times_spots": bool(
            z_evidence
            and box_z >= BOX_TO_SPOT_RATIO * p95_z
            and box_z >= MIN_FLAGGED_BOX_IMAGES
        ),
        "box_xy_many_times_spots": bool(
            p95_xy is not None
            and foreground_xy >= BOX_TO_SPOT_RATIO * p95_xy
            and box_xy >= MIN_FLAGGED_BOX_PX
        ),
    }


def _memory_suggestion(
    required, allowed, nproc, block_size_deg, oscillation_deg, n_images, evidence
) -> dict:
    """Fewer processes where there are several, else a smaller block, to fit memory;
    no block size where not even one image's share would fit."""
    scale = allowed / required
    if nproc > 1:
        return _suggestion(
            INTEGRATE,
            NPROC,
            nproc,
            max(1, int(math.floor(nproc * scale))),
            "the shoeboxes of all processes do not fit in the memory allowed",
            evidence,
        )
    block = block_size_deg
    if block is None and n_images:
        block = n_images * oscillation_deg
    suggested = None
    reason = "the shoeboxes of one block do not fit in the memory allowed"
    if block is not None:
        # the memory taken as growing with the block: the block that would fit
        fitting = block * scale
        if fitting >= oscillation_deg:
            steps = int(math.floor(fitting / oscillation_deg))
            suggested = _round_sig(steps * oscillation_deg, 4)
            reason = (
                f"the shoeboxes of a block of {block:.4g} deg need {required / 1e9:.3g} "
                f"GB, more than the {allowed / 1e9:.3g} GB allowed; a block of "
                f"{suggested:g} deg ({steps} image{'s' if steps != 1 else ''}, "
                "integration.block.units = degrees) would need about "
                f"{required * suggested / block / 1e9:.3g} GB, the memory taken as "
                "growing with the block"
            )
        else:
            reason = (
                f"even a block of one image would need about "
                f"{required * oscillation_deg / block / 1e9:.3g} GB, more than the "
                f"{allowed / 1e9:.3g} GB allowed: the boxes are too large for this "
                "memory (a smaller n_sigma, fixed sigmas, or a larger machine)"
            )
    current = "Auto" if block_size_deg is None else block_size_deg  # DIALS's auto
    return _suggestion(INTEGRATE, BLOCK_SIZE, current, suggested, reason, evidence)


def _small_n_sigma_suggestion(flags, n_sigma, evidence) -> list:
    """DIALS's default n_sigma where a smaller one makes the box narrower than the
    spots."""
    if not flags["box_smaller_than_spots"]:
        return []
    reason = (
        f"n_sigma = {n_sigma:g} cuts off the spots' signal: DIALS's default "
        f"{DEFAULT_N_SIGMA:g} boxes them whole"
    )
    return [_suggestion(INTEGRATE, N_SIGMA, n_sigma, DEFAULT_N_SIGMA, reason, evidence)]


def _n_sigma_suggestion(flags, boxes, spots, evidence) -> list:
    """DIALS's default n_sigma, where a larger one alone makes the box many times the
    spots (the box scales with n_sigma along every axis): the cause, not the sigmas."""
    n_sigma, box_xy, foreground_xy, box_z = boxes
    sigma_m_deg, sigma_m_images, p95_z, p95_xy, z_evidence = spots
    too_big = flags["box_xy_many_times_spots"] or flags["box_z_many_times_spots"]
    if not too_big or flags["sigma_m_absurd"] or n_sigma <= DEFAULT_N_SIGMA:
        return []
    scale = DEFAULT_N_SIGMA / n_sigma
    # in images, the box may have been cut to the scan: no larger than it was
    box_z = min(box_z, 2 * DEFAULT_N_SIGMA * sigma_m_images)
    at_default = _box_flags(
        sigma_m_deg, box_z, box_xy * scale, foreground_xy * scale,
        p95_z, p95_xy, z_evidence,
    )  # fmt: skip
    if at_default["box_xy_many_times_spots"] or at_default["box_z_many_times_spots"]:
        return []
    reason = (
        f"n_sigma = {n_sigma:g} widens every box {1 / scale:.3g} times over DIALS's "
        f"default {DEFAULT_N_SIGMA:g}: at {DEFAULT_N_SIGMA:g} it is about "
        f"{box_xy * scale:.0f} px x {box_z:.1f} images, within "
        f"{BOX_TO_SPOT_RATIO:g} times the spots"
    )
    return [_suggestion(INTEGRATE, N_SIGMA, n_sigma, DEFAULT_N_SIGMA, reason, evidence)]


def _sigma_suggestions(
    flags, sigmas, p95_xy, p95_z, deg_per_px, evidence, fixed_in=None
) -> list:
    """Fixed sigma_b and sigma_m (DIALS needs both or neither) sized from the spots;
    the one not resized keeps its value (``fixed_in``: the file that fixes it)."""
    sigma_b_deg, sigma_m_deg, n_sigma, oscillation_deg = sigmas
    fix_m = flags["sigma_m_absurd"] or flags["box_z_many_times_spots"]
    fix_b = flags["box_xy_many_times_spots"]
    if not (fix_m or fix_b):
        return []
    half_box = SUGGESTED_BOX_TO_SPOT / (2 * n_sigma)
    new_m = _round_sig(p95_z * oscillation_deg * half_box) if fix_m else sigma_m_deg
    new_b = _round_sig(p95_xy * deg_per_px * half_box) if fix_b else sigma_b_deg
    kept = f"the value {fixed_in} fixes" if fixed_in else "the calculated value"
    keep = f"kept at {kept}: DIALS needs sigma_b and sigma_m set together"
    reason_m = (
        f"a box twice the spots: 95% span <= {p95_z:g} images"
        if fix_m
        else "sigma_m " + keep
    )
    reason_b = (
        f"a box twice the spots: 95% are <= {p95_xy:g} px across"
        if fix_b
        else "sigma_b " + keep
    )
    return [
        _suggestion(
            INTEGRATE, SIGMA_B, sigma_b_deg, _round_sig(new_b), reason_b, evidence
        ),
        _suggestion(
            INTEGRATE, SIGMA_M, sigma_m_deg, _round_sig(new_m), reason_m, evidence
        ),
    ]


def _profile_reasons(flags, figures) -> list:
    text = {
        "sigma_m_absurd": (
            "sigma_m = {sigma_m_deg:g} deg is above {absurd:g} deg: no crystal is this "
            "mosaic (DIALS #599, #421)"
        ),
        "box_z_many_times_spots": (
            "the model box spans {box_z_images:.1f} images, {box_to_spot_z:.1f} times "
            "the {p95_extent_z:g} images 95% of spots span"
        ),
        "box_xy_many_times_spots": (
            "the model's foreground is {foreground_xy_px:.1f} px across (its box, "
            "with the background margin, {box_xy_px:.1f} px), {box_to_spot_xy:.1f} "
            "times the {p95_extent_xy:g} px 95% of spots span"
        ),
        "sigma_m_tracks_image_width": (
            "sigma_m is {sigma_m_images:.2f} image widths with spots on one image: it "
            "measures the image width, not the crystal (DIALS #119, #342)"
        ),
        "box_smaller_than_spots": "n_sigma = {n_sigma:g} makes {short}: it cuts off "
        "their signal",
        "sigma_m_from_one_image": (
            "a scan of one image cannot measure sigma_m: each spot lies on its one "
            "frame whatever the mosaicity (DIALS's estimator, "
            "ComputeEsdReflectingRange, is unstable for lone images); take sigma_m "
            "from a sweep of this crystal"
        ),
        "memory_exceeds_limit": (
            "the shoeboxes need {memory_required_gb:.3g} GB, more than the "
            "{memory_allowed_gb:.3g} GB allowed ({max_memory_usage:.0%} of "
            "{memory_limit_gb:.3g} GB: integration.block.max_memory_usage)"
        ),
    }
    short = []  # where the box is narrower than the spots
    p95_xy = figures["p95_extent_xy"]
    if p95_xy is not None and figures["foreground_xy_px"] < p95_xy:
        short.append(
            f"the foreground {figures['foreground_xy_px']:.1f} px across, less than "
            f"the {p95_xy:g} px 95% of spots span"
        )
    if figures["box_z_images"] < figures["p95_extent_z"]:
        short.append(
            f"the box {figures['box_z_images']:.1f} images, less than the "
            f"{figures['p95_extent_z']:g} images 95% of spots span"
        )
    values = dict(figures, absurd=ABSURD_SIGMA_M_DEG, short=" and ".join(short))
    return [text[name].format(**values) for name, flagged in flags.items() if flagged]


def check_profile_model(
    sigma_b_deg: float,
    sigma_m_deg: float,
    sigma_b_px: float,
    sigma_m_images: float,
    oscillation_deg: float,
    extent_xy,
    extent_z,
    n_sigma: float = DEFAULT_N_SIGMA,
    n_images: int | None = None,
    box_xy_px: float | None = None,
    box_z_images: float | None = None,
    shoebox_memory_bytes: float | None = None,
    memory_limit_bytes: float | None = None,
    max_memory_usage: float = DEFAULT_MAX_MEMORY_USAGE,
    nproc: int = 1,
    block_size_deg: float | None = None,
    fixed_in: str | None = None,
) -> dict:
    """Does the gaussian_rs profile model fit the spots that were found?

    The model sets every integration shoebox: an absurd sigma_m or a box many times the
    observed spots costs memory (xia2 #153: "Required shoebox memory: 255 GB") and
    swallows neighbours; fixed sigmas are suggested only then, sized from the spots.

    Parameters
    ----------
    sigma_b_deg, sigma_m_deg : float
        The model's sigmas in degrees.
    sigma_b_px, sigma_m_images : float
        The same in data units: pixels on the detector, images.
    oscillation_deg : float
        Image width.
    extent_xy, extent_z : array_like
        Per spot, the larger of the x and y extents (pixels) and the images spanned.
    n_sigma : float
        Box half-width in sigmas (DIALS default 3).
    n_images : int, optional
        Images in the scan: z extents are evidence only where the scan is longer than
        BOX_TO_SPOT_RATIO times them (spots cannot span more images than exist).
    box_xy_px, box_z_images : float, optional
        The model box, where known; else 2 * n_sigma * sigma (times DIALS's
        sigma_b_multiplier across the detector).
    shoebox_memory_bytes, memory_limit_bytes : float, optional
        Memory the shoeboxes need and the machine's memory.
    max_memory_usage : float
        ``integration.block.max_memory_usage``.
    nproc : int
        ``integration.mp.nproc``.
    block_size_deg : float, optional
        ``integration.block.size`` in degrees (None: auto).
    fixed_in : str, optional
        The file that fixes the sigmas given (None: they are the computed ones).

    Returns
    -------
    dict
        ``sigma_b_deg``, ``sigma_m_deg``, ``sigma_b_px``, ``sigma_m_images``,
        ``n_sigma``, ``oscillation_deg``, ``box_xy_px``, ``box_z_images``,
        ``foreground_xy_px`` (the box across over DIALS's sigma_b_multiplier),
        ``p95_extent_xy``, ``p95_extent_z``, ``median_extent_z``, ``box_to_spot_xy``
        (the foreground's),
        ``box_to_spot_z``, ``z_evidence``, ``memory_required_gb``,
        ``memory_allowed_gb``, ``memory_limit_gb`` and ``max_memory_usage`` (None
        where the memory is not checked), ``flags`` (dict of bools: ``sigma_m_absurd``,
        ``box_z_many_times_spots``, ``box_xy_many_times_spots``,
        ``sigma_m_tracks_image_width``, ``sigma_m_from_one_image``,
        ``box_smaller_than_spots``,
        ``memory_exceeds_limit``), ``reasons``,
        ``change_called_for``, ``suggestions`` (list of dicts) and ``fixed_in``.
    """
    box_z = 2 * n_sigma * sigma_m_images if box_z_images is None else box_z_images
    box_xy = (
        2 * n_sigma * sigma_b_px * SIGMA_B_MULTIPLIER
        if box_xy_px is None
        else box_xy_px
    )
    foreground_xy = box_xy / SIGMA_B_MULTIPLIER
    p95_z = _percentile(extent_z, 95) or 1.0
    p95_xy = _percentile(extent_xy, 95)
    median_z = _median(extent_z) or 1.0
    z_evidence = n_images is None or n_images > BOX_TO_SPOT_RATIO * p95_z
    flags = _box_flags(
        sigma_m_deg, box_z, box_xy, foreground_xy, p95_z, p95_xy, z_evidence
    )
    low, high = TRACKING_SIGMA_M_IMAGES
    flags["sigma_m_tracks_image_width"] = bool(
        (n_images is None or n_images > 1)
        and low <= sigma_m_images <= high
        and median_z <= TRACKING_MAX_MEDIAN_EXTENT_Z
    )
    flags["sigma_m_from_one_image"] = n_images == 1
    # A box narrower than the spots cuts their signal off: only said where n_sigma
    # is below DIALS's 3 (at 3, the foreground is about as wide as the spots found)
    flags["box_smaller_than_spots"] = bool(
        n_sigma < DEFAULT_N_SIGMA
        and ((p95_xy is not None and foreground_xy < p95_xy) or box_z < p95_z)
    )
    allowed = None
    if shoebox_memory_bytes is not None and memory_limit_bytes is not None:
        allowed = memory_limit_bytes * max_memory_usage
    flags["memory_exceeds_limit"] = bool(
        allowed is not None and shoebox_memory_bytes > allowed
    )
    figures = {
        "sigma_b_deg": sigma_b_deg,
        "sigma_m_deg": sigma_m_deg,
        "sigma_b_px": sigma_b_px,
        "sigma_m_images": sigma_m_images,
        "n_sigma": n_sigma,
        "oscillation_deg": oscillation_deg,
        "box_xy_px": box_xy,
        "box_z_images": box_z,
        "p95_extent_xy": p95_xy,
        "p95_extent_z": p95_z,
        "median_extent_z": median_z,
        "foreground_xy_px": foreground_xy,
        "box_to_spot_xy": foreground_xy / p95_xy if p95_xy else None,
        "box_to_spot_z": box_z / p95_z,
        "z_evidence": bool(z_evidence),
        "memory_required_gb": (
            None if shoebox_memory_bytes is None else shoebox_memory_bytes / 1e9
        ),
        "memory_allowed_gb": None if allowed is None else allowed / 1e9,
        "memory_limit_gb": None if allowed is None else memory_limit_bytes / 1e9,
        "max_memory_usage": None if allowed is None else max_memory_usage,
    }
    evidence = {
        key: (_round_sig(value) if isinstance(value, float) else value)
        for key, value in figures.items()
        if value is not None
    }
    deg_per_px = sigma_b_deg / sigma_b_px if sigma_b_px else 0.0
    suggestions = (
        _small_n_sigma_suggestion(flags, n_sigma, evidence)
        or _n_sigma_suggestion(
            flags,
            (n_sigma, box_xy, foreground_xy, box_z),
            (sigma_m_deg, sigma_m_images, p95_z, p95_xy, z_evidence),
            evidence,
        )
        or _sigma_suggestions(
            flags,
            (sigma_b_deg, sigma_m_deg, n_sigma, oscillation_deg),
            p95_xy,
            p95_z,
            deg_per_px,
            evidence,
            fixed_in,
        )
    )
    if flags["memory_exceeds_limit"] and not suggestions:
        suggestions.append(
            _memory_suggestion(
                shoebox_memory_bytes,
                allowed,
                nproc,
                block_size_deg,
                oscillation_deg,
                n_images,
                evidence,
            )
        )
    return dict(
        figures,
        flags=flags,
        reasons=_profile_reasons(flags, figures),
        change_called_for=bool(suggestions),
        suggestions=suggestions,
        fixed_in=fixed_in,
    )


def collect_suggestions(*checks: dict) -> list:
    """The suggestions of several checks, in order, leaving out the checks without one.

    Parameters
    ----------
    *checks : dict
        Results of the ``check_*`` functions.

    Returns
    -------
    list of dict
        Each with ``program``, ``parameter``, ``current``, ``suggested``, ``reason``
        and ``evidence``.
    """
    found = []
    for check in checks:
        if check.get("suggestion") is not None:
            found.append(check["suggestion"])
        found.extend(check.get("suggestions", []))
    return found


def summary_sentence(
    median_footprint: float,
    median_extent_z: float,
    min_spot_size: int | None = None,
    max_spot_size: int = DEFAULT_MAX_SPOT_SIZE,
    max_separation: float | None = DEFAULT_MAX_SEPARATION,
    median_across: float | None = None,
    limits_given: bool = False,
) -> str:
    """One plain sentence comparing the typical spot with what the limits assume.

    Parameters
    ----------
    median_footprint : float
        Median of the most coded pixels a spot has on one image.
    median_extent_z : float
        Median number of images a spot spans.
    min_spot_size, max_spot_size, max_separation : optional
        The limits in force (``min_spot_size`` None: DIALS's Auto, 3 or 6 px;
        ``max_separation`` None: the filter off).
    median_across : float, optional
        Median of each spot's larger extent on the detector (pixels), as the shape
        table shows it; without it, the side of a square of the footprint's area.
    limits_given : bool
        Some limit came from the user's log or .phil: "the limits used assume", not
        "the defaults assume".

    Returns
    -------
    str
        "your spots are about N px across and span M images; the defaults assume ...".
    """
    across = (
        math.sqrt(max(median_footprint, 0.0))
        if median_across is None
        else median_across
    )
    images = "image" if median_extent_z == 1 else "images"
    side = "" if median_across is None else " along their longer side"
    smallest = (
        "3 px (pixel-array detectors) or 6 px (others)"
        if min_spot_size is None
        else f"{min_spot_size} px"
    )
    cube = np.cbrt(max_spot_size)
    peak = (
        "with no limit on how far the brightest pixel lies from the centroid "
        "(max_separation = None)"
        if max_separation is None
        else f"with the brightest pixel within {max_separation:g} px of the centroid"
    )
    return (
        f"your spots are about {across:.0f} px across{side} (covering "
        f"{median_footprint:g} pixels on one image) and span {median_extent_z:g} "
        f"{images}; the {'limits used' if limits_given else 'defaults'} assume spots "
        f"of at least {smallest} in all and at most {max_spot_size} px over all images (about "
        f"{cube:.0f} x {cube:.0f} px x {cube:.0f} images, or "
        f"{max_spot_size / max(median_extent_z, 1.0):.0f} px per image over "
        f"{median_extent_z:g} {images}), {peak}"
    )


def _separation_in_force(separation) -> float | None:
    """max_separation as spot finding applied it: DIALS's default where none was
    given, None where the filter was off."""
    if separation == FILTER_OFF:
        return None
    return DEFAULT_MAX_SEPARATION if separation is None else separation


def _used(spot_finding: dict | None, name: str) -> tuple[object, str | None]:
    """The value of a spot-finding parameter read from the user's log or .phil, and
    where it came from; (None, None) where it was not given."""
    entry = ((spot_finding or {}).get("parameters") or {}).get(name)
    if not entry:
        return None, None
    return entry.get("value"), entry.get("source")


def _profile_check(
    profile: dict,
    extent_xy: np.ndarray,
    extent_z: np.ndarray,
    memory_limit_bytes: float | None = None,
):
    shoebox = profile.get("shoebox") or {}
    median_box = shoebox.get("median_size_px")
    oscillation = profile["sigma_m_deg"] / profile["sigma_m_images"]
    model = profile.get("fixed_sigmas") or profile  # what dials.integrate boxes with
    check = check_profile_model(
        model["sigma_b_deg"],
        model["sigma_m_deg"],
        model["sigma_b_px"],
        model["sigma_m_images"],
        oscillation,
        extent_xy,
        extent_z,
        n_sigma=profile.get("n_sigma", DEFAULT_N_SIGMA),
        box_xy_px=max(median_box[0], median_box[1]) if median_box else None,
        box_z_images=median_box[2] if median_box else None,
        n_images=profile.get("n_images") or None,
        shoebox_memory_bytes=shoebox.get("peak_bytes"),
        memory_limit_bytes=memory_limit_bytes,
        fixed_in=(profile.get("fixed_sigmas") or {}).get("source"),
    )
    check["memory_counted"] = shoebox.get("counted")
    check["computed_sigmas_deg"] = [profile["sigma_b_deg"], profile["sigma_m_deg"]]
    check["experiment"] = profile.get("identifier")
    check["dataset"] = profile.get("dataset")
    return check


@_tallies_kept()  # the checks share the tallies of the same arrays
def advise(
    spot_sizes,
    labels: Sequence[str],
    profiles: Sequence[dict],
    spot_finding: dict | None = None,
    detector_type: str | None = None,
    memory_limit_bytes: float | None = None,
) -> dict:
    """Every check of the spot-finding limits and the profile model against the spots,
    the suggestions they make, and the one-sentence summary.

    Parameters
    ----------
    spot_sizes
        The counted spots (``algorithms.spot_sizes.SpotSizes``: ``size``,
        ``footprint``, ``extent_x/y/z``, ``peak_centroid_distance``, ``experiment``).
    labels : sequence of str
        The experiment identifier of each index in ``spot_sizes.experiment``.
    profiles : sequence of dict
        The profile model per experiment (``ExperimentProfile`` as plain data, with
        its experiment's ``identifier``).
    spot_finding : dict, optional
        What ``formats.dials_logs.read_spot_finding_parameters`` read from the user's
        dials.find_spots.log or .phil (the limits used, the spots removed).
    detector_type : str, optional
        The first experiment's first panel type, which DIALS's ``Auto``
        min_spot_size depends on (see :func:`resolve_min_spot_size`).
    memory_limit_bytes : float, optional
        The memory of the machine that will integrate: each model's shoebox memory
        is checked against ``DEFAULT_MAX_MEMORY_USAGE`` of it (None: not checked).

    Returns
    -------
    dict
        ``checks`` (list of the ``check_*`` results), ``suggestions``, ``summary``,
        ``unused`` (definitions of the user's .phil this program does not use, each
        with why: a shortened name, a profile parameter) and ``notes`` (what was asked
        but could not be checked: a memory limit with no boxes to weigh).
    """
    shaped = np.asarray(spot_sizes.footprint) > 0  # spots measured from shoeboxes
    size = np.asarray(spot_sizes.size)[shaped]
    footprint = np.asarray(spot_sizes.footprint)[shaped]
    extent_z = np.asarray(spot_sizes.extent_z)[shaped]
    if not shaped.any():
        return {
            "checks": [], "suggestions": [], "summary": None, "unused": [], "notes": []
        }  # fmt: skip
    found = spot_finding or {}
    minimum, minimum_from = _used(spot_finding, MIN_SPOT_SIZE)
    maximum, maximum_from = _used(spot_finding, MAX_SPOT_SIZE)
    separation, separation_from = _used(spot_finding, MAX_SEPARATION)
    distance = np.asarray(spot_sizes.peak_centroid_distance, dtype=np.float64)[shaped]
    checks = [
        check_min_spot_size(
            size, footprint, extent_z, minimum, minimum_from, detector_type,
            removed=found.get("removed_too_small"),
        ),
        check_max_spot_size(
            size, footprint, extent_z, maximum, maximum_from,
            removed=found.get("removed_too_large"),
        ),
    ]  # fmt: skip
    if separation != FILTER_OFF:  # None: DIALS's spot finding skips the filter
        checks.append(
            check_max_separation(
                distance[np.isfinite(distance)], separation, separation_from,
                removed=found.get("removed_by_peak_centroid"),
            )
        )  # fmt: skip
    experiment_of = {label: i for i, label in enumerate(labels) if label}
    extent_xy = np.maximum(spot_sizes.extent_x, spot_sizes.extent_y)
    for profile in profiles:
        if not profile.get("applicable") or profile.get("sigma_m_deg") is None:
            continue
        if not str(profile.get("label", "")).startswith(INTEGRATE):
            continue  # an estimate before indexing: no box of dials.integrate's
        rows = shaped & (
            spot_sizes.experiment == experiment_of.get(profile.get("identifier"), -2)
        )
        checks.append(
            _profile_check(
                profile,
                extent_xy[rows],
                spot_sizes.extent_z[rows],
                memory_limit_bytes,
            )
        )
    given = any(value not in (None, "Auto") for value in (minimum, maximum, separation))
    if minimum == "Auto":
        minimum = None
    if minimum is None and detector_type is not None:  # DIALS's Auto for it
        minimum = auto_min_spot_size(detector_type)
    summary = summary_sentence(
        _median_or_nan(footprint),
        _median_or_nan(extent_z),
        minimum,
        maximum if maximum is not None else DEFAULT_MAX_SPOT_SIZE,
        _separation_in_force(separation),
        median_across=_median_or_nan(extent_xy[shaped]),
        limits_given=given,
    )
    return {
        "checks": checks,
        "suggestions": collect_suggestions(*checks),
        "summary": summary,
        "unused": list(found.get("unused", [])),
        "notes": _unchecked_memory_notes(checks, memory_limit_bytes),
    }


def _unchecked_memory_notes(checks: list, memory_limit_bytes: float | None) -> list:
    """That a memory limit given had nothing to be checked against: no experiment has
    integration boxes (stills, data before indexing, no model)."""
    if memory_limit_bytes is None or any(
        check.get("memory_required_gb") is not None for check in checks
    ):
        return []
    return [
        f"profile.memory_limit = {memory_limit_bytes / 1e9:.3g} GB: nothing is checked "
        "against it, as no experiment here has integration boxes (they need a rotation "
        "scan with a crystal and indexed reflections; stills and spots before indexing "
        "have none)"
    ]
