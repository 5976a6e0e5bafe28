"""The Gaussian profile model (sigma_b, sigma_m) that ``dials.integrate`` computes from
the indexed reflections before it reads any image, rebuilt from the reflection table and
the experiment list (doc/profile_model.md gives every step with the DIALS source).

The path, as in ``src/dials/command_line/integrate.py`` ``run_integration``:

1. ``process_reference``: keep rows that are indexed, not ``bad_for_refinement`` and
   not (0, 0, 0).
2. ``filter_reference_pixels`` (``Shoebox.mask_neighbouring``,
   ``src/dials/array_family/boost_python/flex_shoebox.cc``): a pixel whose centre maps
   to another Miller index at the start or the end of its frame becomes
   Valid|Background (3).
3. Re-prediction and ``match_with_reference`` (:mod:`.prediction`): the predicted
   ``xyzcal.*``, ``s1``, ``panel`` replace the table's.
4. ``ProfileModelFactory.create`` -> ``gaussian_rs`` ``Model.create_from_reflections``
   (minimum counts) -> ``ProfileModelCalculator``
   (``src/dials/algorithms/profile_model/gaussian_rs/calculator.py``): at most 10,000
   reflections (``_select_reflections_for_sigma_calc``), |zeta| >= 0.05, sigma_b by
   ``ComputeEsdBeamDivergence``, sigma_m by the "extended" ``ComputeEsdReflectingRange``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..formats.shoeboxes import bytes_pointer, float32_at, int32_at
from ..jit import njit
from ..threads import in_order
from . import prediction
from ._memo import by_identity
from .geometry import stacked_panels
from .prediction import (
    DetectorArrays,
    ScanGeometry,
    parallax_shift_of,
)
from .statistics import median

INDEXED = 4
USED_IN_REFINEMENT = 8
BAD_FOR_REFINEMENT = 167903232
MIN_ZETA = 0.05
MIN_SPOTS_OVERALL = 50
MIN_SPOTS_PER_DEGREE = 20
MAX_REFLECTIONS_FOR_SIGMA = 10000
# Beyond this many reference reflections, an even subset of them (every n-th row) is
# re-predicted and matched. DIALS takes them all where MAX_REFLECTIONS_FOR_SIGMA or
# more were used in refinement (those rows), but the sigmas of an even sample this
# large differ from theirs by a sampling error far below the 2% they are held to
# (doc/profile_model.md), where a million rows would cost seconds. The three reference
# files have a few hundred: there, every row, exactly as DIALS.
MAX_REFERENCE_MATCHED = 100_000
# From this many frames (of all reflections), sigma_m's likelihood is split over the
# threads given: below, a thread's start costs more than its share of the work.
THREADED_FROM_FRAMES = 20_000
VALID_FOREGROUND = 5
VALID_BACKGROUND = 3
BLOCK_DEGREES = 5.0
MIN_BLOCK_REFLECTIONS = 20
# What the re-prediction of indexed reflections reads (dials.integrate's reference).
INDEXED_COLUMNS = (
    "miller_index",
    "flags",
    "id",
    "panel",
    "entering",
    "xyzcal.px",
    "xyzobs.px.value",
)
STILLS_REASON = (
    "stills have no rotation: DIALS's stills integration models mosaicity "
    "differently (its gaussian_rs model sets sigma_m to 0; dials.ssx_integrate's "
    "default ellipsoid model has no sigma_m), so sigma_b only"
)
STILLS_LABEL = (
    "stills: sigma_b about each spot's own centroid, an estimate that runs low "
    "(dials.integrate's stills model measures it about predicted positions)"
)
ESTIMATE_LABEL = (
    "estimate before indexing: sigma_b about each spot's own centroid, which runs "
    "low (dials.integrate measures it about predicted positions)"
)
ESTIMATE_REASON = "no crystal model: sigma_m needs predicted rotation angles"
SIGMA_M_ESTIMATE_LABEL = (
    "estimate before indexing: sigma_b and sigma_m about each spot's own centroid, "
    "which run low (dials.integrate measures them about predicted positions; sigma_m "
    "ran 10-12% low on the real scans tried)"
)
NO_CENTROIDS_REASON = (
    "the table lacks the column xyzobs.px.value (the spots' centroids)"
)
NOT_FINITE_PIXELS = (
    "pixel values that are not finite (inf or NaN) in the reference reflections' "
    "shoeboxes: dials.integrate's estimators cannot use them"
)
MAX_SEARCH_STEPS = 10_000  # of the bracket and of Brent's search (real ones take ~20)
# sigma_m's maximum is found by Newton's steps on the likelihood's slope and curvature
# (three or four passes over the reflections instead of Brent's 17 or so) from
# NEWTON_FROM_REFLECTIONS reflections where a start is given (a block's, from its
# whole scan's value), and from twice NEWTON_START_REFLECTIONS without one, started
# from Brent's search over an even subset of NEWTON_START_REFLECTIONS to twice as many
# (fewer, and that search would cost as much as one over all). Otherwise Brent's
# search alone, as always: every real reference file has fewer than 1,000.
NEWTON_FROM_REFLECTIONS = 1_000
NEWTON_START_REFLECTIONS = 2_000
MAX_NEWTON_STEPS = 50
MAX_NEWTON_HALVINGS = 30
MAX_NEWTON_STEP = 1.0  # in ln(sigma_m): at most a factor e per step
# A Newton step this small is taken without another pass: the error after it is
# about the square of the step (times the likelihood's third derivative over twice
# its second, of order 1), far inside SIGMA_M_TOLERANCE.
NEWTON_LAST_STEP = 1e-5
# Brent's search for ln(sigma_m) stops within about this of the maximum where the
# likelihood's rounding allows (3e-8 to 5e-7 measured on real rows; DIALS's own
# sigma_m lies 4e-6 and 6e-6 from it on the static-crystal files)
SIGMA_M_TOLERANCE = 1e-8
NO_MODELS_REASON = (
    "the experiment has no {} model: sigma_b and sigma_m are angles measured from "
    "the beam and the detector"
)


class ProfileModelError(ValueError):
    """The profile model cannot be computed (DIALS raises the same conditions)."""


# ------------------------------------------------------------------ selection helpers


def reference_selection(
    flags: np.ndarray, miller_index: np.ndarray, experiment_id: np.ndarray
) -> np.ndarray:
    """``process_reference``: indexed, not bad_for_refinement, hkl != (0, 0, 0).

    Parameters
    ----------
    flags, miller_index, experiment_id
        The table's ``flags``, ``miller_index`` and ``id`` columns.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the reference rows.

    Raises
    ------
    ProfileModelError
        Where a kept row has a negative experiment id, as DIALS does.
    """
    flags = np.asarray(flags).astype(np.uint64, copy=False).reshape(-1)
    keep = np.empty(flags.size, dtype=bool)
    invalid_id = _reference_rows(
        flags,
        np.asarray(miller_index).reshape(flags.size, 3),
        np.asarray(experiment_id).reshape(-1),
        np.uint64(INDEXED),
        np.uint64(BAD_FOR_REFINEMENT),
        keep,
    )
    if invalid_id:
        raise ProfileModelError(
            "reference spots have an invalid experiment id (process_reference)"
        )
    return keep


@njit
def _reference_rows(flags, miller_index, experiment_id, indexed, bad, keep):
    """:func:`reference_selection` in one pass; whether a kept row has a negative id."""
    invalid_id = False
    for row in range(keep.size):
        h, k, l = miller_index[row, 0], miller_index[row, 1], miller_index[row, 2]
        kept = (flags[row] & indexed) != 0 and (flags[row] & bad) == 0
        kept = kept and (h != 0 or k != 0 or l != 0)
        keep[row] = kept
        invalid_id |= kept and experiment_id[row] < 0
    return invalid_id


def select_for_sigma(
    flags: np.ndarray, limit: int = MAX_REFLECTIONS_FOR_SIGMA
) -> np.ndarray:
    """``_select_reflections_for_sigma_calc``: indices of the rows used, in order.

    With ``limit`` or more rows, DIALS keeps the used_in_refinement rows if there
    are enough, else those followed by every n-th other row.

    Parameters
    ----------
    flags : numpy.ndarray
        The reference rows' ``flags`` column.
    limit : int
        DIALS's ``MAX_REFLECTIONS_FOR_SIGMA``: below this many rows, all are used.

    Returns
    -------
    numpy.ndarray
        The row indices chosen (used_in_refinement rows first, then the others taken).
    """
    n = len(flags)
    if n < limit:
        return np.arange(n)
    used = (np.asarray(flags).astype(np.uint64) & np.uint64(USED_IN_REFINEMENT)) != 0
    n_used = int(used.sum())
    if n_used >= limit:
        return np.flatnonzero(used)
    others = np.flatnonzero(~used)
    step = int(math.floor(len(others) / (limit - n_used)))
    return np.concatenate([np.flatnonzero(used), others[::step]])


def zeta_factor(rotation_axis: np.ndarray, s0: np.ndarray, s1: np.ndarray):
    """m2 . (s1 x s0)/|s1 x s0| (gaussian_rs ``zeta_factor``).

    Parameters
    ----------
    rotation_axis : numpy.ndarray
        (3,): the unit rotation axis in the lab frame (m2).
    s0 : numpy.ndarray
        (3,): the incident beam vector.
    s1 : numpy.ndarray
        (n, 3): each reflection's diffracted beam vector.

    Returns
    -------
    numpy.ndarray
        float64, zeta per reflection (-1 to 1); near 0 for reflections close to the
        rotation axis; NaN, without a warning, where s1 is zero or along s0 (no
        direction to measure from), which every |zeta| >= min_zeta test leaves out.
    """
    e1 = np.cross(s1, s0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return e1 @ rotation_axis / np.linalg.norm(e1, axis=1)


# ------------------------------------------------------------------ compiled per pixel


@njit(inline="always")  # inlined where called: no call, no reference counting
def _rounded_hkl_differs(r, turn, hkl, axis, to_hkl):
    """PixelToMillerIndex.h: whether h = A^-1 F^-1 R(angle)^T r rounds to another
    Miller index than ``hkl``, for a pixel's r = S^-1 (s1 - s0) (the same at every
    frame of its column: made once per column, see :func:`_pixel_kernel`); ``turn``
    is the cosine and sine of -angle, ``to_hkl`` A^-1 F^-1 row by row. Scalars and
    tuples only: called per pixel, an array argument would be reference counted."""
    q0, q1, q2 = prediction.rotated_by(r[0], r[1], r[2], axis, turn[0], turn[1])
    for k in range(3):
        h = to_hkl[3 * k] * q0 + to_hkl[3 * k + 1] * q1 + to_hkl[3 * k + 2] * q2
        if int(math.floor(h + 0.5)) != hkl[k]:
            return True
    return False


@njit(inline="always")
def _pixel_reciprocal(lab, s0, s0_len, s_inv):
    """r = S^-1 (s1 - s0) of the pixel centre ``lab``, s1 along it with the length of
    s0 (PixelToMillerIndex.h): what maps the pixel to a Miller index at any angle."""
    length = math.sqrt(lab[0] ** 2 + lab[1] ** 2 + lab[2] ** 2)
    v0 = lab[0] / length * s0_len - s0[0]
    v1 = lab[1] / length * s0_len - s0[1]
    v2 = lab[2] / length * s0_len - s0[2]
    return (
        s_inv[0, 0] * v0 + s_inv[0, 1] * v1 + s_inv[0, 2] * v2,
        s_inv[1, 0] * v0 + s_inv[1, 1] * v1 + s_inv[1, 2] * v2,
        s_inv[2, 0] * v0 + s_inv[2, 1] * v1 + s_inv[2, 2] * v2,
    )


@njit(inline="always")
def _edge_turns(z0, nz, neighbours, turns):
    """The cosine and sine of minus the rotation angle at each image edge z0 + e
    (e <= nz) of a box, into ``turns[e]``: frame z starts at edge z and ends at edge
    z + 1, as DIALS takes the angles of array indices z and z + 1. The same for every
    pixel of the box, so made once per box, not per pixel."""
    _, _, _, _, _, first_image, start, width = neighbours
    for e in range(nz + 1):
        angle = start + (z0 + e - first_image + 1) * width
        turns[e, 0], turns[e, 1] = math.cos(-angle), math.sin(-angle)


@njit(inline="always")
def _code_after_neighbours(code, r, z, turns, known, hkl, axis, to_hkl):
    """mask_neighbouring of a pixel on frame z with mask ``code``: Valid|Background
    if it maps to another Miller index than ``hkl`` at the frame's start edge or its
    end edge (``turns``: the two edges' cosine and sine). Tried only where the code
    is 0 (it would then count for sigma_b) or Valid|Foreground (it would then leave
    sigma_m's counts): for any other code the sums are the same either way. An edge
    is tried once per column of pixels: ``known`` is (edge, answer) of the last edge
    tried, kept for the next frame's start. Returns (code, known)."""
    if code != 0 and code != VALID_FOREGROUND:
        return code, known
    if known[0] == z:
        differs = known[1]
    else:
        differs = _rounded_hkl_differs(r, turns[0], hkl, axis, to_hkl)
    if not differs:
        differs = _rounded_hkl_differs(r, turns[1], hkl, axis, to_hkl)
        known = (z + 1, differs)
    return (VALID_BACKGROUND if differs else code), known


@njit(inline="always")  # inlined where called: no call, no reference counting
def _mask_code_at(blob, int32_mask, mask_start, voxel):
    """The mask code of pixel ``voxel`` of a record whose codes start at byte
    ``mask_start`` of ``blob``: int32 codes (present 1) or uint8 codes."""
    if int32_mask:
        return np.int64(int32_at(blob, mask_start + 4 * voxel))
    return np.int64(blob[mask_start + voxel])


@njit
def _angle_to(x, y, z, rx, ry, rz, ref_len):
    """The angle (rad) between the lab vectors (x, y, z) and (rx, ry, rz), the second
    of length ``ref_len``: what ComputeEsdBeamDivergence weighs, a pixel's angle from
    its spot. Scalars only, so that calling it per pixel costs nothing."""
    cosine = (x * rx + y * ry + z * rz) / (math.sqrt(x**2 + y**2 + z**2) * ref_len)
    return math.acos(min(1.0, max(-1.0, cosine)))


@njit
def _pixel_kernel(
    blob,
    present,
    data_offset,
    bbox,
    panel,
    s1,
    hkl,
    detector,
    neighbours,
    frame_start,
    sum_w,
    sum_w_angle2,
    frame_sum,
    turns,
):
    """Per record (the chosen rows' present, data_offset, bbox, panel, s1, hkl): sums
    for ComputeEsdBeamDivergence (data and data x angle^2 over mask != 0) and, per
    frame of the bbox, the data over mask == Valid|Foreground after mask_neighbouring
    (ExtendedEstimator). ``turns`` has a row for each image edge of the deepest box
    (its frames + 1)."""
    origin, fast, slow, inverse_d, pixel_size, image_size, mu, thickness = detector
    apply, s0, m2, a_f_inv, s_inv, _, _, _ = neighbours
    axis = (m2[0], m2[1], m2[2])
    to_hkl = (
        a_f_inv[0, 0], a_f_inv[0, 1], a_f_inv[0, 2],
        a_f_inv[1, 0], a_f_inv[1, 1], a_f_inv[1, 2],
        a_f_inv[2, 0], a_f_inv[2, 1], a_f_inv[2, 2],
    )  # fmt: skip
    pointer = bytes_pointer(blob)
    s0_len = math.sqrt(s0[0] ** 2 + s0[1] ** 2 + s0[2] ** 2)
    lab = np.empty(3)
    r = (0.0, 0.0, 0.0)
    for i in range(present.shape[0]):
        sum_w[i], sum_w_angle2[i] = 0.0, 0.0
        if present[i] == 0:
            continue
        x0, x1, y0, y1, z0, z1 = bbox[i]
        nx, ny, nz = x1 - x0, y1 - y0, z1 - z0
        data_start = data_offset[i]
        mask_start = data_start + 4 * nx * ny * nz  # int32 (present 1) or uint8 codes
        int32_mask = present[i] == 1
        p = panel[i]
        ref = s1[i]
        ref_len = math.sqrt(ref[0] ** 2 + ref[1] ** 2 + ref[2] ** 2)
        parallax = mu[p] > 0
        row_hkl = (hkl[i, 0], hkl[i, 1], hkl[i, 2])
        _edge_turns(z0, nz, neighbours, turns)  # a few numbers; read where applied
        for j in range(ny):
            for k in range(nx):
                # pixel_lab_coord written out on scalars: no call with arrays
                x_mm = (x0 + k + 0.5) * pixel_size[p, 0]
                y_mm = (y0 + j + 0.5) * pixel_size[p, 1]
                if parallax:
                    x_mm, y_mm = parallax_shift_of(
                        mu[p], thickness[p], x_mm, y_mm,
                        fast[p, 0], fast[p, 1], fast[p, 2],
                        slow[p, 0], slow[p, 1], slow[p, 2],
                        origin[p, 0], origin[p, 1], origin[p, 2], -1.0,
                    )  # fmt: skip
                for c in range(3):
                    lab[c] = origin[p, c] + x_mm * fast[p, c] + y_mm * slow[p, c]
                angle = _angle_to(
                    lab[0], lab[1], lab[2], ref[0], ref[1], ref[2], ref_len
                )
                if apply:  # the same at every frame of the column: made once
                    r = _pixel_reciprocal(lab, s0, s0_len, s_inv)
                known = (-1, False)  # the column's last edge tried, and its answer
                for z in range(nz):
                    index = (z * ny + j) * nx + k
                    code = _mask_code_at(pointer, int32_mask, mask_start, index)
                    if apply:
                        edges = (
                            (turns[z, 0], turns[z, 1]),
                            (turns[z + 1, 0], turns[z + 1, 1]),
                        )
                        code, known = _code_after_neighbours(
                            code, r, z, edges, known, row_hkl, axis, to_hkl
                        )
                    if code == 0:
                        continue
                    value = np.float64(float32_at(pointer, data_start + 4 * index))
                    sum_w[i] += value
                    sum_w_angle2[i] += value * angle * angle
                    if code == VALID_FOREGROUND:
                        frame_sum[frame_start[i] + z] += value


@njit
def _centroid_spreads(
    blob, present, data_offset, bbox, shoebox_panel, ids, first_panel, panel_count,
    panel, xyz, origin, fast, slow, pixel_size, n_rows, used, variance,
):  # fmt: skip
    """Before indexing, in one pass over the table: for each row of an experiment e
    with ``first_panel[e] >= 0`` (its detector's first row in the stacked panel
    arrays, ``panel_count[e]`` rows long), the beam vector to its centroid
    (``panel``, ``xyz``) and the sums of ComputeEsdBeamDivergence over its pixels
    with mask != 0, as :func:`_pixel_kernel` makes them without parallax correction.
    Counts each such experiment's rows in ``n_rows``; a row with sum(w) > 1 is
    ``used``, with the variance sum(w angle^2)/(sum(w) - 1) in ``variance``; a row
    on a panel its detector lacks (in the table or its shoebox) is not."""
    pointer = bytes_pointer(blob)  # per pixel: an array would be reference counted
    for i in range(ids.shape[0]):
        e = ids[i]
        used[i] = False
        if e < 0 or e >= first_panel.shape[0] or first_panel[e] < 0:
            continue
        n_rows[e] += 1
        if present[i] == 0:
            continue
        if not (0 <= panel[i] < panel_count[e] and shoebox_panel[i] < panel_count[e]):
            continue  # a panel its detector lacks: no pixel position to stand on
        c = first_panel[e] + panel[i]
        x_mm, y_mm = xyz[i, 0] * pixel_size[c, 0], xyz[i, 1] * pixel_size[c, 1]
        r0 = origin[c, 0] + x_mm * fast[c, 0] + y_mm * slow[c, 0]
        r1 = origin[c, 1] + x_mm * fast[c, 1] + y_mm * slow[c, 1]
        r2 = origin[c, 2] + x_mm * fast[c, 2] + y_mm * slow[c, 2]
        ref_len = math.sqrt(r0**2 + r1**2 + r2**2)
        x0, y0 = np.int64(bbox[i, 0]), np.int64(bbox[i, 2])
        nx, ny = np.int64(bbox[i, 1]) - x0, np.int64(bbox[i, 3]) - y0
        nz = np.int64(bbox[i, 5]) - np.int64(bbox[i, 4])
        data_start = data_offset[i]
        mask_start = data_start + 4 * nx * ny * nz  # int32 (present 1) or uint8 codes
        int32_mask = present[i] == 1
        p = first_panel[e] + shoebox_panel[i]
        sum_w, sum_w_angle2 = 0.0, 0.0
        for j in range(ny):
            for k in range(nx):
                angle = -1.0  # made at the column's first pixel with mask != 0, if any
                for z in range(nz):
                    voxel = (z * ny + j) * nx + k
                    code = _mask_code_at(pointer, int32_mask, mask_start, voxel)
                    if code == 0:
                        continue
                    if angle < 0.0:
                        x_mm = (x0 + k + 0.5) * pixel_size[p, 0]
                        y_mm = (y0 + j + 0.5) * pixel_size[p, 1]
                        angle = _angle_to(
                            origin[p, 0] + x_mm * fast[p, 0] + y_mm * slow[p, 0],
                            origin[p, 1] + x_mm * fast[p, 1] + y_mm * slow[p, 1],
                            origin[p, 2] + x_mm * fast[p, 2] + y_mm * slow[p, 2],
                            r0, r1, r2, ref_len,
                        )  # fmt: skip
                    value = np.float64(float32_at(pointer, data_start + 4 * voxel))
                    sum_w += value
                    sum_w_angle2 += value * angle * angle
        if sum_w > 1:
            used[i] = True
            variance[i] = sum_w_angle2 / (sum_w - 1)


@njit
def _likelihood_terms(
    inverse_sigma, edges, lower_edge, counts, row_counts, starts, first, last, terms
):
    """Reflections first..last-1's terms of the extended estimator's log-likelihood,
    into ``terms``: sum(n log z) - K log Z + log Z, z = (erf(e+/sigma) -
    erf(e-/sigma))/2 clamped to 1e-10 (calculator.py). A frame's e- is the frame
    before's e+ (both are the angle of the image edge between them), so an edge
    shared by two kept frames is evaluated once. Each reflection's term is its own:
    parts of the reflections can be done on threads at once."""
    for r in range(first, last):
        sum_z, sum_nlogz = 0.0, 0.0
        known_edge, known_erf = -1, 0.0
        for i in range(starts[r], starts[r + 1]):
            edge = lower_edge[i]
            if edge == known_edge:
                below = known_erf
            else:
                below = math.erf(edges[edge] * inverse_sigma)
            above = math.erf(edges[edge + 1] * inverse_sigma)
            known_edge, known_erf = edge + 1, above
            z = 0.5 * (above - below)
            if z < 1e-10:
                z = 1e-10
            sum_z += z
            sum_nlogz += counts[i] * math.log(z)
        log_z = math.log(sum_z)
        terms[r] = sum_nlogz - row_counts[r] * log_z + log_z


@njit
def _likelihood_inputs(
    frame_sum, frame_start, frames, bbox_z0, phi, zeta, start, width, first_image
):
    """What the likelihood reads, in one pass over the reflections' frames: each
    row's image edges z0 .. z0 + frames as (angle - phi) |zeta| / sqrt(2) (a frame's
    e- and e+ are its lower and upper edge's: tau -/+ half the width), and of the
    frames with counts (> 0) their lower edge and counts; rows with none have no
    term (DIALS's per-reflection lists skip them). Returns (edges, lower_edge,
    counts, row_counts, starts): ``starts`` bounds each kept row's frames, and
    ``row_counts`` is the sum of its counts, added in frame order."""
    n_rows = frames.size
    n_kept, n_used = 0, 0
    for r in range(n_rows):
        kept = 0
        for i in range(frame_start[r], frame_start[r] + frames[r]):
            if frame_sum[i] > 0:
                kept += 1
        n_kept += kept
        n_used += kept > 0
    edges = np.empty(frame_start[n_rows] + n_rows)
    lower_edge = np.empty(n_kept, np.int64)
    counts = np.empty(n_kept)
    row_counts = np.empty(n_used)
    starts = np.zeros(n_used + 1, np.int64)
    root_two = math.sqrt(2.0)
    j, used = 0, 0
    for r in range(n_rows):
        first_edge = frame_start[r] + r
        spread = abs(zeta[r])
        for k in range(frames[r] + 1):
            angle = start + (bbox_z0[r] + k - first_image + 1) * width
            edges[first_edge + k] = (angle - phi[r]) * spread / root_two
        total = 0.0
        for k in range(frames[r]):
            value = frame_sum[frame_start[r] + k]
            if value > 0:
                lower_edge[j], counts[j] = first_edge + k, value
                total += value
                j += 1
        if j > starts[used]:
            row_counts[used] = total
            used += 1
            starts[used] = j
    return edges, lower_edge, counts, row_counts, starts


TWO_OVER_ROOT_PI = 2.0 / math.sqrt(math.pi)


@njit
def _erf_and_slopes(t):
    """erf(t) for t = e / sigma, and its first and second derivatives with respect
    to ln(sigma): -g and g (1 - 2 t^2), g = 2/sqrt(pi) t exp(-t^2)."""
    g = TWO_OVER_ROOT_PI * t * math.exp(-t * t)
    return math.erf(t), -g, g * (1.0 - 2.0 * t * t)


@njit
def _likelihood_slopes(
    inverse_sigma,
    edges,
    lower_edge,
    counts,
    row_counts,
    starts,
    first,
    last,
    terms,
    slopes,
    curvatures,
):
    """:func:`_likelihood_terms`, with each term's first and second derivative with
    respect to ln(sigma) (a clamped z is a constant: no slope). The same edges are
    shared between frames as there."""
    for r in range(first, last):
        sum_z, sum_nlogz = 0.0, 0.0
        sum_dz, sum_d2z, sum_n_dlogz, sum_n_d2logz = 0.0, 0.0, 0.0, 0.0
        known_edge = -1
        known = (0.0, 0.0, 0.0)
        for i in range(starts[r], starts[r + 1]):
            edge = lower_edge[i]
            if edge == known_edge:
                below = known
            else:
                below = _erf_and_slopes(edges[edge] * inverse_sigma)
            above = _erf_and_slopes(edges[edge + 1] * inverse_sigma)
            known_edge, known = edge + 1, above
            z = 0.5 * (above[0] - below[0])
            dz, d2z = 0.5 * (above[1] - below[1]), 0.5 * (above[2] - below[2])
            if z < 1e-10:
                z, dz, d2z = 1e-10, 0.0, 0.0
            sum_z += z
            sum_dz += dz
            sum_d2z += d2z
            sum_nlogz += counts[i] * math.log(z)
            slope_of_log = dz / z
            sum_n_dlogz += counts[i] * slope_of_log
            sum_n_d2logz += counts[i] * (d2z / z - slope_of_log * slope_of_log)
        log_z = math.log(sum_z)
        terms[r] = sum_nlogz - row_counts[r] * log_z + log_z
        slope_of_log = sum_dz / sum_z
        weight = row_counts[r] - 1.0
        slopes[r] = sum_n_dlogz - weight * slope_of_log
        curvatures[r] = sum_n_d2logz - weight * (
            sum_d2z / sum_z - slope_of_log * slope_of_log
        )


@njit
def _negative_sum(terms):
    """-L: minus the sum of the terms, added in the reflections' order (the same
    number however the terms were made)."""
    total = 0.0
    for r in range(terms.size):
        total += terms[r]
    return -total


def _parts(starts: np.ndarray, threads: int) -> list[tuple[int, int]]:
    """The reflections in up to ``threads`` runs of about equal numbers of frames."""
    n_reflections = len(starts) - 1
    if threads <= 1 or starts[-1] < THREADED_FROM_FRAMES:
        return [(0, n_reflections)]
    targets = np.linspace(0, starts[-1], threads + 1)[1:-1]
    cuts = [0, *np.searchsorted(starts, targets).tolist(), n_reflections]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


GOLDEN_SECTION = (3.0 - math.sqrt(5.0)) / 2.0  # the smaller part of a golden cut
GOLDEN_GROWTH = (1.0 + math.sqrt(5.0)) / 2.0


def _settled_value(function, x: float) -> float:
    """``function(x)``, refused when it is not a number the search can compare (or
    overflows: a bracket walked far out, which a likelihood that levels off stops)."""
    try:
        value = function(x)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ProfileModelError(
            "the search for sigma_m did not settle: its likelihood is not a finite "
            f"number at ln(sigma_m) = {x:.6g}"
        )
    return value


def _downhill_bracket(
    function, start: float, stop: float
) -> tuple[float, float, float, float]:
    """Three points a, b, c with b between the others and function(b) no higher
    than theirs, found by walking downhill from ``start`` and ``stop`` in steps
    growing by the golden ratio: (a, b, c, function(b))."""
    a, b = start, stop
    value_a, value_b = _settled_value(function, a), _settled_value(function, b)
    if value_b > value_a:
        a, b, value_a, value_b = b, a, value_b, value_a
    c = b + GOLDEN_GROWTH * (b - a)
    value_c = _settled_value(function, c)
    for _ in range(MAX_SEARCH_STEPS):
        if value_c >= value_b:
            return a, b, c, value_b
        a, b, value_b = b, c, value_c
        c = b + GOLDEN_GROWTH * (b - a)
        value_c = _settled_value(function, c)
    raise ProfileModelError(
        f"the search for sigma_m did not settle in {MAX_SEARCH_STEPS:,} steps: the "
        "likelihood keeps falling"
    )


def _parabola_step(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(p, q), q >= 0: p / q is the step from the best of three (x, value) points to
    the vertex of the parabola through them."""
    (x, value), (w, value_w), (v, value_v) = points
    r = (x - w) * (value - value_v)
    q = (x - v) * (value - value_w)
    p = (x - v) * q - (x - w) * r
    q = 2.0 * (q - r)
    return (-p, q) if q > 0.0 else (p, -q)


def _next_step(
    points: list[tuple[float, float]],
    low: float,
    high: float,
    step: float,
    step_before: float,
    tolerance: float,
) -> tuple[float, float]:
    """Brent's choice of the next step from the best point: to the parabola's vertex
    when it lies inside the bracket, away from its ends, and the step is under half
    the step before last (so steps keep shrinking); else a golden section of the
    larger side. Returns (step, the step before it, as Brent keeps them)."""
    best = points[0][0]
    middle = 0.5 * (low + high)
    if abs(step_before) > tolerance:
        p, q = _parabola_step(points)
        older, step_before = step_before, step
        if abs(p) < abs(0.5 * q * older) and q * (low - best) < p < q * (high - best):
            step = p / q
            vertex = best + step
            if vertex - low < 2.0 * tolerance or high - vertex < 2.0 * tolerance:
                step = tolerance if best < middle else -tolerance
            return step, step_before
    step_before = (high - best) if best < middle else (low - best)
    return GOLDEN_SECTION * step_before, step_before


def _kept_points(
    points: list[tuple[float, float]], trial: float, trial_value: float
) -> list[tuple[float, float]]:
    """The best point and the two before it, after a trial (Brent's x, w, v)."""
    best, second, third = points
    tried = (trial, trial_value)
    if trial_value <= best[1]:
        return [tried, best, second]
    if trial_value <= second[1] or second[0] == best[0]:
        return [best, tried, second]
    if trial_value <= third[1] or third[0] in (best[0], second[0]):
        return [best, second, tried]
    return points


def _minimise_1d(function, start: float, stop: float, tolerance: float) -> float:
    """The minimum of a function of one variable, to within ``tolerance``, by Brent's
    method (parabolas through the three best points, golden sections where a parabola
    would not shrink the bracket fast enough) in a bracket walked downhill from
    ``start`` and ``stop``.

    Parameters
    ----------
    function : callable
        float -> float; a value that is not finite ends the search with an error.
    start, stop : float
        Two first points, as the two vertices of DIALS's simplex.
    tolerance : float
        The search ends when the minimum is known to within about this (absolute).

    Returns
    -------
    float
        The argument of the minimum.
    """
    a, best, c, best_value = _downhill_bracket(function, start, stop)
    low, high = min(a, c), max(a, c)
    points = [(best, best_value)] * 3  # the best so far, then the two before it
    step, step_before = 0.0, 0.0
    for _ in range(MAX_SEARCH_STEPS):
        best, best_value = points[0]
        if abs(best - 0.5 * (low + high)) <= 2.0 * tolerance - 0.5 * (high - low):
            return best
        step, step_before = _next_step(points, low, high, step, step_before, tolerance)
        if abs(step) < tolerance:
            step = math.copysign(tolerance, step)
        trial = best + step
        trial_value = _settled_value(function, trial)
        if trial_value <= best_value:  # the bracket closes on the trial
            low, high = (low, best) if trial < best else (best, high)
        else:  # the bracket closes on the best point
            low, high = (trial, high) if trial < best else (low, trial)
        points = _kept_points(points, trial, trial_value)
    raise ProfileModelError(
        f"the search for sigma_m did not settle in {MAX_SEARCH_STEPS:,} steps"
    )


def _newton_maximum(function, start: float) -> float | None:
    """The maximum of a smooth function of one variable by Newton's steps from
    ``start``, each step halved until the value does not fall; None where the steps
    cannot be trusted (a curvature that is not negative, a value that is not finite,
    no rise after halving, too many steps), for the caller to search without
    derivatives.

    Parameters
    ----------
    function : callable
        float -> (value, slope, curvature).
    start : float
        Where the steps begin: near the maximum, they settle in three or four.

    Returns
    -------
    float or None
        The argument of the maximum, to within about NEWTON_LAST_STEP squared.
    """
    try:
        x = start
        value, slope, curvature = function(x)
        for _ in range(MAX_NEWTON_STEPS):
            if not (math.isfinite(value) and math.isfinite(slope) and curvature < 0.0):
                return None
            step = max(-MAX_NEWTON_STEP, min(MAX_NEWTON_STEP, -slope / curvature))
            if abs(step) <= NEWTON_LAST_STEP:
                return x + step
            for _ in range(MAX_NEWTON_HALVINGS):
                trial = function(x + step)
                if trial[0] >= value:
                    break
                step *= 0.5
            else:
                return None
            x += step
            value, slope, curvature = trial
    except OverflowError:
        pass
    return None


# --------------------------------------------------------------------------- results


@dataclass
class BlockValues:
    """sigma_b and sigma_m of the reflections predicted in one block of images, in
    degrees and in data units (converted as the experiment's own values are)."""

    first_image: int
    last_image: int
    n_reflections: int
    sigma_b_deg: float | None
    sigma_m_deg: float | None
    shoebox_peak_bytes: int | None = None
    sigma_b_px: float | None = None
    sigma_m_images: float | None = None


REFERENCE_REFLECTIONS = "reference reflections"  # what a shoebox estimate counts
ALL_PREDICTIONS = "all predictions"


@dataclass
class ShoeboxEstimate:
    """The integration shoebox the model implies (gaussian_rs ``compute_bbox``)."""

    n_sigma: float
    sigma_b_multiplier: float
    median_size_px: tuple[float, float, float] | None  # x, y, images
    max_size_px: tuple[int, int, int] | None
    bytes_per_voxel: int
    median_bytes_per_reflection: float | None
    peak_bytes: int | None = None
    n_off_detector: int = 0  # boxes DIALS has none for: see off_detector_words
    note: str = ""
    counted: str = REFERENCE_REFLECTIONS  # or ALL_PREDICTIONS
    n_boxes: int = 0  # the boxes counted, those off the detector included


@dataclass
class ExperimentProfile:
    """The profile model of one experiment, or why there is none."""

    experiment: int
    applicable: bool
    reason: str = ""
    label: str = "dials.integrate gaussian_rs"
    sigma_b_deg: float | None = None
    sigma_m_deg: float | None = None
    n_reference: int = 0
    # the reference reflections re-predicted: all of them, or an even subset of
    # ``max_reference`` where there are more
    n_repredicted: int = 0
    n_matched: int = 0
    n_selected: int = 0
    n_sigma: float = 3.0
    sigma_b_px: float | None = None
    sigma_m_images: float | None = None
    xds: dict = field(default_factory=dict)
    blocks: list[BlockValues] = field(default_factory=list)
    shoebox: ShoeboxEstimate | None = None
    stored_profile: dict | None = None
    n_images: int = 0  # the scan's images (0: no scan)
    # sigma_b and sigma_m as the user's file fixes them for dials.integrate, in
    # degrees and data units, with where they were read; the boxes and memory are
    # theirs (None: the computed sigmas' boxes)
    fixed_sigmas: dict | None = None


@dataclass
class ProfileModel:
    """Per experiment results; plain data (``as_dict`` is JSON-able)."""

    experiments: list[ExperimentProfile]

    def as_dict(self) -> dict:
        return {"experiments": [_plain(e) for e in self.experiments]}


_IMMUTABLE = frozenset({int, float, str, bool, type(None)})


def _plain(value):
    """``dataclasses.asdict`` without its deep copy of every number and string (they
    are immutable): dataclasses become dicts, lists, tuples and dicts are copied."""
    if type(value) in _IMMUTABLE:  # most fields: nothing to look into
        return value
    if hasattr(value, "__dataclass_fields__"):  # its fields, in order (no slots)
        return {name: _plain(item) for name, item in vars(value).items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


# ----------------------------------------------------------------------- the estimator


@dataclass
class _Columns:
    """The columns the calculator reads, restricted to some rows."""

    miller_index: np.ndarray
    panel: np.ndarray
    s1: np.ndarray
    phi: np.ndarray  # xyzcal.mm z, rad
    flags: np.ndarray
    rows: np.ndarray  # row numbers in the full table (for the shoeboxes)


def _neighbour_parameters(experiment, apply: bool):
    if not apply:  # the kernel reads none of the rest
        return (False, np.zeros(3), np.zeros(3), np.eye(3), np.eye(3), 0.0, 0.0, 0.0)
    scan = ScanGeometry.from_experiment(experiment)
    crystal_a = np.eye(3) if experiment.crystal is None else experiment.crystal.A
    a_f_inv = np.linalg.inv(crystal_a) @ np.linalg.inv(scan.fixed)
    return (
        apply,
        np.asarray(experiment.beam.s0, dtype=np.float64),
        scan.axis_datum,
        np.ascontiguousarray(a_f_inv),
        np.ascontiguousarray(np.linalg.inv(scan.setting)),
        float(scan.first_image),
        scan.start,
        scan.width,
    )


class _PixelSums(NamedTuple):
    """What :func:`_pixel_kernel` sums over each reflection's pixels: each
    reflection's on its own, so those of a subset are taken, not summed again."""

    sum_w: np.ndarray
    sum_w_angle2: np.ndarray
    frame_sum: np.ndarray  # per frame of each box, one reflection after another
    frame_start: np.ndarray  # (n + 1,): where each reflection's frames start
    frames: np.ndarray  # each reflection's frames (0 without pixels)

    def subset(self, index: np.ndarray) -> _PixelSums:
        """The sums of the reflections ``index`` (positions), in that order."""
        if _every_row(index, len(self.frames)):
            return self
        frames = self.frames[index]
        start = np.concatenate([[0], np.cumsum(frames)]).astype(np.int64)
        taken = (
            np.arange(start[-1])
            - np.repeat(start[:-1], frames)
            + np.repeat(self.frame_start[index], frames)
        )
        return _PixelSums(
            self.sum_w[index],
            self.sum_w_angle2[index],
            self.frame_sum[taken],
            start,
            frames,
        )


def _pixel_sums(
    columns: _Columns, shoeboxes, experiment, mask_neighbours: bool, threads: int = 1
) -> _PixelSums:
    # Only the chosen rows' records, gathered (a tenth of a big table's, at most
    # MAX_REFERENCE_MATCHED): no conversion or scatter of whole columns.
    rows = np.asarray(columns.rows, dtype=np.int64)
    n = len(rows)
    panel = np.ascontiguousarray(shoeboxes.panel[rows], dtype=np.int64)
    # A record on a panel the detector lacks has no pixel positions: left out, as one
    # without pixels.
    on_detector = panel < len(experiment.detector.panels)
    present = np.where(on_detector, shoeboxes.present[rows], 0).astype(np.uint8)
    bbox = np.ascontiguousarray(shoeboxes.bbox[rows], dtype=np.int64)
    frames = np.where(present != 0, bbox[:, 5] - bbox[:, 4], 0).astype(np.int64)
    frame_start = np.concatenate([[0], np.cumsum(frames)]).astype(np.int64)
    sum_w, sum_w_angle2 = np.zeros(n), np.zeros(n)
    frame_sum = np.zeros(int(frame_start[-1]))
    data_offset = np.ascontiguousarray(shoeboxes.data_offset[rows], dtype=np.int64)
    s1 = np.ascontiguousarray(columns.s1, dtype=np.float64)
    hkl = np.ascontiguousarray(columns.miller_index, dtype=np.int64)
    detector = DetectorArrays.of(experiment.detector).as_tuple()
    neighbours = _neighbour_parameters(experiment, mask_neighbours)
    deepest = int(frames.max(initial=0)) + 1

    def sum_part(part: tuple[int, int]) -> None:
        """Rows first..last-1: each writes only its own sums and frames."""
        first, last = part
        _pixel_kernel(
            shoeboxes.blob,
            present[first:last],
            data_offset[first:last],
            bbox[first:last],
            panel[first:last],
            s1[first:last],
            hkl[first:last],
            detector,
            neighbours,
            frame_start[first : last + 1],
            sum_w[first:last],
            sum_w_angle2[first:last],
            frame_sum,
            np.empty((deepest, 2)),  # _edge_turns of one box, one per part
        )

    parts = _parts(frame_start, threads)
    for _ in in_order(sum_part, parts, len(parts)):
        pass
    return _PixelSums(sum_w, sum_w_angle2, frame_sum, frame_start, frames)


def _sigma_b(sum_w: np.ndarray, sum_w_angle2: np.ndarray) -> float | None:
    """ComputeEsdBeamDivergence: sqrt of the mean per-reflection variance
    sum(w angle^2)/(sum(w) - 1), over reflections with sum(w) > 1."""
    use = sum_w > 1
    variances = sum_w_angle2[use] / (sum_w[use] - 1)
    if not variances.size:
        return None
    # np.mean's own steps (the sum, then the division by the count), without its
    # overhead on the small arrays of a still
    return math.sqrt(float(variances.sum() / variances.size))


def _sigma_m(
    columns,
    frame_sum,
    frame_start,
    frames,
    bbox_z0,
    zeta,
    scan,
    threads: int = 1,
    start: float | None = None,
) -> float:
    """ExtendedEstimator: maximum likelihood over log(sigma_m) of the per-frame
    counts given the Gaussian rocking curve, searched from 0.1 and 1 deg as DIALS's
    simplex starts, or by Newton's steps from ``start`` (radians) where given (the
    same maximum; Brent's search where the steps cannot be trusted); the likelihood
    of many frames split over ``threads`` (the same numbers)."""
    edges, lower_edge, counts, row_counts, starts = _likelihood_inputs(
        frame_sum,
        frame_start,
        frames,
        bbox_z0,
        np.ascontiguousarray(columns.phi, dtype=np.float64),
        np.ascontiguousarray(zeta, dtype=np.float64),
        scan.start,
        scan.width,
        scan.first_image,
    )
    if counts.size == 0:
        raise ProfileModelError(
            "zero pixels selected for estimation of profile parameters"
        )
    terms, slopes, curvatures = (np.empty(len(starts) - 1) for _ in range(3))
    parts = _parts(starts, threads)
    likelihood = (edges, lower_edge, counts, row_counts, starts)

    def each_part(kernel, log_sigma: float, outputs: tuple) -> None:
        inverse_sigma = math.exp(-log_sigma)
        for _ in in_order(
            lambda part: kernel(inverse_sigma, *likelihood, *part, *outputs),
            parts,
            len(parts),
        ):
            pass

    def target(log_sigma: float) -> float:
        each_part(_likelihood_terms, log_sigma, (terms,))
        return _negative_sum(terms)

    def with_slopes(log_sigma: float) -> tuple[float, float, float]:
        each_part(_likelihood_slopes, log_sigma, (terms, slopes, curvatures))
        return tuple(-_negative_sum(values) for values in (terms, slopes, curvatures))

    solution = None if start is None else _newton_maximum(with_slopes, math.log(start))
    if solution is None:
        solution = _minimise_1d(
            target,
            math.log(math.radians(0.1)),
            math.log(math.radians(1.0)),
            SIGMA_M_TOLERANCE,
        )
    return math.exp(solution)


def compute_sigmas(
    columns: _Columns,
    shoeboxes,
    experiment,
    min_zeta: float = MIN_ZETA,
    mask_neighbours: bool = True,
    sums: _PixelSums | None = None,
    threads: int = 1,
    sigma_m_start: float | None = None,
) -> tuple[float | None, float, int]:
    """``ProfileModelCalculator`` on prepared columns: (sigma_b rad, sigma_m rad,
    reflections used after the zeta filter).

    Parameters
    ----------
    columns : _Columns
        The reference reflections' Miller index, panel, s1, phi (rad), flags and row
        numbers in the full table.
    shoeboxes : formats.shoeboxes.ShoeboxColumn
        The table's shoeboxes, read at ``columns.rows``.
    experiment : formats.experiments.Experiment
        The rotation experiment (beam, detector, goniometer, scan, crystal).
    min_zeta : float
        Reflections with ``|zeta|`` below this are left out (DIALS's ``min_zeta``).
    mask_neighbours : bool
        Leave out foreground pixels whose rounded Miller index is not the reflection's.
    sums : _PixelSums, optional
        :func:`_pixel_sums` of every row of ``columns`` (with the same
        ``mask_neighbours``), taken for the rows used instead of summing their pixels
        again (the blocks of a scan share those of all its reflections).
    threads : int
        sigma_m's likelihood over many frames is split over this many threads; the
        result is the same whatever the number.
    sigma_m_start : float, optional
        Where many reflections' sigma_m is sought from (radians), e.g. the whole
        scan's for a block; without it, from Brent's search over an even subset.
        Fewer than NEWTON_FROM_REFLECTIONS reflections (with a start) or twice
        NEWTON_START_REFLECTIONS (without) are searched as DIALS starts.

    Returns
    -------
    tuple of (float or None, float, int)
        sigma_b (radians; None where no reflection has more than one count of weight),
        sigma_m (radians), and the number of reflections used.
    """
    chosen = select_for_sigma(columns.flags)
    columns = _subset(columns, chosen)
    scan = ScanGeometry.from_experiment(experiment)
    zeta = zeta_factor(
        experiment.goniometer.rotation_axis_lab,
        np.asarray(experiment.beam.s0),
        columns.s1,
    )
    keep = np.flatnonzero(np.abs(zeta) >= min_zeta)
    columns, zeta = _subset(columns, keep), zeta[keep]
    if sums is None:
        sums = _pixel_sums(columns, shoeboxes, experiment, mask_neighbours, threads)
    else:
        sums = sums.subset(chosen[keep])
    sum_w, sum_w_angle2, frame_sum, frame_start, frames = sums
    if not (np.isfinite(sum_w_angle2).all() and np.isfinite(frame_sum).all()):
        raise ProfileModelError(NOT_FINITE_PIXELS)
    sigma_b = _sigma_b(sum_w, sum_w_angle2)
    bbox_z0 = np.asarray(shoeboxes.bbox)[columns.rows, 4].astype(np.int64)
    n = len(columns.rows)
    start = None
    every = n // NEWTON_START_REFLECTIONS  # the subset's step, if one is needed
    if n >= NEWTON_FROM_REFLECTIONS:
        start = sigma_m_start
        if start is None and every >= 2:
            sample = np.arange(0, n, every)
            try:
                start = _sigma_m(
                    _subset(columns, sample),
                    *sums.subset(sample)[2:],
                    bbox_z0[sample],
                    zeta[sample],
                    scan,
                    threads,
                )
            except ProfileModelError:  # the search over all says why, if it fails
                start = None
    sigma_m = _sigma_m(
        columns,
        frame_sum,
        frame_start,
        frames,
        bbox_z0,
        zeta,
        scan,
        threads,
        start,
    )
    return sigma_b, sigma_m, n


def _even_subset(rows: np.ndarray, most: int | None) -> np.ndarray:
    """``rows``, or beyond ``most`` of them (None: no bound) every n-th, in order:
    at most ``most``, spread evenly over the table."""
    if most is None or len(rows) <= most:
        return rows
    return rows[:: -(-len(rows) // most)]


def _every_row(index: np.ndarray, n: int) -> bool:
    """Whether ``index`` is 0, 1, ..., n - 1: every row, in order, so a subset of
    them is the whole (DIALS's choice and the zeta filter mostly keep all)."""
    index = np.asarray(index)
    return (
        index.dtype.kind in "iu"
        and len(index) == n
        and np.array_equal(index, np.arange(n))
    )


def _subset(columns: _Columns, index: np.ndarray) -> _Columns:
    if _every_row(index, len(columns.rows)):
        return columns
    return _Columns(
        miller_index=columns.miller_index[index],
        panel=columns.panel[index],
        s1=columns.s1[index],
        phi=columns.phi[index],
        flags=columns.flags[index],
        rows=columns.rows[index],
    )


# ------------------------------------------------------------------ shoebox and memory

BYTES_PER_VOXEL = 12  # float data + float background + int mask (integrator_ext)
SIGMA_B_MULTIPLIER = 2.0  # gaussian_rs Model.compute_bbox widens the box for background
OFF_DETECTOR = -(2**63)  # the x and y edges of a box with a corner off the panel


@njit
def _panel_ray_px(p, b0, b1, b2, detector):
    """dxtbx ``Panel.get_ray_intersection_px`` of the ray (b0, b1, b2) on a given
    panel; NaN if behind it."""
    origin, fast, slow, inverse_d, pixel_size, image_size, mu, thickness = detector
    v0, v1, v2 = prediction.mat_vec3_of(inverse_d[p], b0, b1, b2)
    if v2 <= 0:
        return np.nan, np.nan
    return prediction._mm_to_px(
        p, v0 / v2, v1 / v2, origin, fast, slow, pixel_size, mu, thickness
    )


@njit
def _bbox_kernel(s1, z, panel, s0, m2, delta_b, delta_m, scan, detector, out):
    """BBoxCalculator3D (gaussian_rs ``bbox_calculator.h``): the four beam vectors at
    (+-delta_b, +-delta_b) in the reflection's e1/e2 frame mapped to the panel, and the
    rotation angles at e3 = +-delta_m mapped to frames; mins floored, maxes ceiled, z
    clipped to the scan. In scalars: no vector is made per reflection.

    Where DIALS has no box: a corner whose ray misses the panel's plane, or that is
    off the Ewald sphere (a NaN ray: dxtbx's ``get_ray_intersection`` asserts, and
    dials.integrate stops) gets the x and y edges :data:`OFF_DETECTOR`; zeta 0
    (delta_m / |zeta| infinite) spans the scan."""
    first_image, start, width, array_lo, array_hi = scan
    for i in range(s1.shape[0]):
        v0, v1, v2 = s1[i, 0], s1[i, 1], s1[i, 2]
        radius = math.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
        u0, u1, u2 = v0 / radius, v1 / radius, v2 / radius
        e10, e11, e12 = prediction.unit_cross_of(v0, v1, v2, s0[0], s0[1], s0[2])
        e20, e21, e22 = prediction.unit_cross_of(v0, v1, v2, e10, e11, e12)
        zeta = m2[0] * e10 + m2[1] * e11 + m2[2] * e12
        phi = start + (z[i] - first_image + 1) * width
        x_lo, x_hi, y_lo, y_hi = np.inf, -np.inf, np.inf, -np.inf
        off_plane = False
        for c1 in (-delta_b, delta_b):
            for c2 in (-delta_b, delta_b):
                p0 = (c1 * e10 + c2 * e20) * radius
                p1 = (c1 * e11 + c2 * e21) * radius
                p2 = (c1 * e12 + c2 * e22) * radius
                length = math.sqrt(radius * radius - (p0 * p0 + p1 * p1 + p2 * p2))
                x, y = _panel_ray_px(
                    panel[i], p0 + length * u0, p1 + length * u1, p2 + length * u2,
                    detector,
                )  # fmt: skip
                off_plane = off_plane or math.isnan(x) or math.isnan(y)
                x_lo, x_hi = min(x_lo, x), max(x_hi, x)
                y_lo, y_hi = min(y_lo, y), max(y_hi, y)
        if off_plane:
            out[i, 0] = out[i, 1] = out[i, 2] = out[i, 3] = OFF_DETECTOR
        else:
            out[i, 0], out[i, 1] = math.floor(x_lo), math.ceil(x_hi)
            out[i, 2], out[i, 3] = math.floor(y_lo), math.ceil(y_hi)
        if zeta == 0.0:
            lo, hi = array_lo, array_hi
        else:
            z1 = first_image - 1 + (phi - delta_m / abs(zeta) - start) / width
            z2 = first_image - 1 + (phi + delta_m / abs(zeta) - start) / width
            lo, hi = math.floor(min(z1, z2)), math.ceil(max(z1, z2))
        out[i, 4] = min(max(lo, array_lo), array_hi - 1)
        out[i, 5] = max(min(hi, array_hi), array_lo + 1)


def integration_bboxes(
    s1: np.ndarray,
    frame: np.ndarray,
    panel: np.ndarray,
    experiment,
    sigma_b_rad: float,
    sigma_m_rad: float,
    n_sigma: float = 3.0,
) -> np.ndarray:
    """The bounding boxes ``dials.integrate`` would give these predictions.

    Parameters
    ----------
    s1, frame, panel
        Predicted beam vectors, ``xyzcal.px`` z and panels.
    experiment
        The rotation experiment.
    sigma_b_rad, sigma_m_rad, n_sigma
        The profile model (radians); the box spans n_sigma x 2 x sigma_b on the
        detector and n_sigma x sigma_m in rotation (``Model.compute_bbox``).

    Returns
    -------
    numpy.ndarray
        (n, 6) int: x0, x1, y0, y1, z0, z1 as DIALS's ``bbox`` column; x0 to y1 are
        :data:`OFF_DETECTOR` where a corner's ray misses the panel's plane (a sigma_b
        too large for it: dials.integrate stops there).
    """
    scan = ScanGeometry.from_experiment(experiment)
    first = scan.first_image
    out = np.zeros((len(s1), 6), dtype=np.int64)
    _bbox_kernel(
        np.ascontiguousarray(s1, dtype=np.float64),
        np.ascontiguousarray(frame, dtype=np.float64),
        np.ascontiguousarray(panel, dtype=np.int64),
        np.asarray(experiment.beam.s0, dtype=np.float64),
        np.asarray(experiment.goniometer.rotation_axis_lab, dtype=np.float64),
        n_sigma * sigma_b_rad * SIGMA_B_MULTIPLIER,
        n_sigma * sigma_m_rad,
        (float(first), scan.start, scan.width, first - 1, first - 1 + scan.num_images),
        DetectorArrays.of(experiment.detector).as_tuple(),
        out,
    )
    return out


def peak_shoebox_memory(bbox: np.ndarray, frames: tuple[int, int]) -> int:
    """Bytes of shoeboxes alive at once over a block of frames, as DIALS's
    ``JobList.shoebox_memory`` (``algorithms/integration/boost_python/integrator_ext.cc``)
    counts them: 12 bytes per voxel, allocated on a box's first frame and freed after
    its last; the maximum over the block's frames.

    Parameters
    ----------
    bbox : numpy.ndarray
        (n, 6) integer: each shoebox's x0, x1, y0, y1 (pixels) and z0, z1 (frames).
    frames : tuple of int
        The block's first frame and one past its last.

    Returns
    -------
    int
        The peak bytes; 0 for an empty block.
    """
    frame0, frame1 = frames
    z0 = np.clip(bbox[:, 4], frame0, frame1 - 1) - frame0
    z1 = np.clip(bbox[:, 5], frame0 + 1, frame1) - frame0
    inside = (bbox[:, 5] > frame0) & (bbox[:, 4] < frame1)
    volume = (
        (bbox[:, 1] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 2]) * (z1 - z0)
    ) * BYTES_PER_VOXEL
    n = frame1 - frame0
    if n <= 0:
        return 0
    volume = volume[inside].astype(np.float64)  # whole numbers, added exactly
    alive = np.bincount(z0[inside], volume, n + 1) - np.bincount(
        z1[inside], volume, n + 1
    )
    return int(np.max(np.cumsum(alive)[:n]))


def block_peaks(bbox: np.ndarray, spans: list[tuple[int, int]]) -> list[int]:
    """:func:`peak_shoebox_memory` of each block of frames, each from only the boxes
    that can reach it (sorted by first frame once): a scan of many blocks does not
    walk every box for each.

    Parameters
    ----------
    bbox : numpy.ndarray
        (n, 6) integer: the boxes, as for :func:`peak_shoebox_memory`.
    spans : list of tuple of int
        Each block's first frame and one past its last.

    Returns
    -------
    list of int
        The peak bytes of each block.
    """
    bbox = bbox[np.argsort(bbox[:, 4], kind="stable")]
    deepest = int(np.max(bbox[:, 5] - bbox[:, 4], initial=0))
    peaks = []
    for z0, z1 in spans:  # a box reaching z0 starts after z0 - deepest
        near = slice(*np.searchsorted(bbox[:, 4], (z0 - deepest, z1)))
        peaks.append(peak_shoebox_memory(bbox[near], (z0, z1)))
    return peaks


# ------------------------------------------------------------------------ public entry

FIXED_KEYS = ("sigma_b_deg", "sigma_m_deg")

XDS_NOTE = (
    "XDS (https://xds.mr.mpg.de/html_doc/xds_parameters.html, Peak profiles): "
    "BEAM_DIVERGENCE_E.S.D.= and REFLECTING_RANGE_E.S.D.= are the standard deviations "
    "(degrees) of the Gaussian spot profile across the Ewald sphere and along the "
    "rotation, the quantities DIALS calls sigma_b and sigma_m (Kabsch 2010). "
    "BEAM_DIVERGENCE= is, as XDS's template defines it, arctan(spot diameter / "
    "DETECTOR_DISTANCE), and REFLECTING_RANGE= the rotation a typical reflection takes to "
    "cross the Ewald sphere: both from the spots measured here (the median of each "
    "spot's larger extent on the detector, and of the images it spans times the "
    "oscillation width), not a multiple of the sigmas."
)
SHOEBOX_NOTE = (
    "boxes and memory for the matched reference reflections only; dials.integrate "
    "integrates every predicted reflection, so its shoeboxes take more"
)
ALL_PREDICTIONS_NOTE = (
    "box sizes for the matched reference reflections, memory for every reflection "
    "dials.integrate predicts (each (h, k, l) within the detector's resolution, both "
    "rays, 1 degree of padding), as its whole-scan memory check counts them before "
    "it integrates"
)


def _beam_distance_and_pixel(experiment) -> tuple[float, float]:
    """Sample-to-panel distance along the beam (mm) and the mean pixel size (mm) of
    the panel the direct beam hits (else the panel most facing the beam)."""
    return _distance_and_pixel(experiment.beam, experiment.detector)


@by_identity
def _distance_and_pixel(beam, detector) -> tuple[float, float]:
    arrays = DetectorArrays.of(detector)
    unit = np.asarray(beam.s0) / np.linalg.norm(beam.s0)
    p, _, _ = prediction._ray_intersection(
        unit, arrays.inverse_d, arrays.pixel_size, arrays.image_size
    )
    normals = np.cross(arrays.fast, arrays.slow)
    if p < 0:
        p = int(np.argmax(np.abs(normals @ unit)))
    along = float(normals[p] @ unit)  # 0 (or NaN, no s0) where no panel faces the beam
    distance = (normals[p] @ arrays.origin[p]) / along if along else math.inf
    return abs(float(distance)), float(np.mean(arrays.pixel_size[p]))


def _in_pixels(sigma_b: float, distance: float, pixel: float) -> float | None:
    """sigma_b (radians) as pixels at the detector distance; None where the beam has
    no distance to a panel (parallel to the detector, or no single wavelength)."""
    value = sigma_b * distance / pixel
    return value if math.isfinite(value) else None


def _in_images(sigma_m_deg: float, scan) -> float:
    """sigma_m (degrees) as images of the scan's oscillation width."""
    return sigma_m_deg / abs(scan.oscillation_width)


def _is_rotation(experiment) -> bool:
    scan = experiment.scan
    return (
        experiment.goniometer is not None
        and scan is not None
        and scan.oscillation_width != 0
    )


def _stored(experiment) -> dict | None:
    """The .expt's own profile model, as stored: a gaussian_rs model's sigmas, or
    another kind's mosaicity parameterisation (DIALS's names), with the square roots
    of its ``sigma``'s diagonal, the spreads along the matrix's three axes."""
    stored = experiment.profile
    if stored is None:
        return None
    spreads = None
    if stored.sigma is not None:
        spreads = [
            math.sqrt(row[i]) if row[i] >= 0 else None
            for i, row in enumerate(stored.sigma)
        ]
    return {
        "kind": stored.kind,
        "n_sigma": stored.n_sigma,
        "sigma_b_deg": stored.sigma_b_deg,
        "sigma_m_deg": stored.sigma_m_deg,
        "parameterisation": stored.parameterisation,
        "parameters": None if stored.parameters is None else list(stored.parameters),
        "sigma": None if stored.sigma is None else [list(row) for row in stored.sigma],
        "sigma_sqrt_diagonal": spreads,
    }


def _min_spots_problem(n: int, scan, n_reference: int | None = None) -> str:
    """Model.create_from_reflections: at least 50 reflections, or 20 per degree; the
    words say which step lost them where the reference reflections were more."""
    if n >= MIN_SPOTS_OVERALL:
        return ""
    degrees = scan.num_images * scan.oscillation_width
    if degrees and n / degrees >= MIN_SPOTS_PER_DEGREE:
        return ""
    needs = (
        f"dials.integrate needs {MIN_SPOTS_OVERALL} in total or "
        f"{MIN_SPOTS_PER_DEGREE} per degree"
    )
    if n_reference is None or n_reference <= n:
        return f"too few reflections for profile modelling: {n} ({needs})"
    lost = (
        f"too few reflections for profile modelling: {n} of the {n_reference} "
        "reference reflections (indexed, not bad_for_refinement) are re-predicted "
        f"from these experiments within {prediction.MATCH_DISTANCE_PX:g} px of the "
        f"table's own predictions ({needs})"
    )
    if n == 0:
        lost += "; were the table's predictions made with other models (another .expt)?"
    return lost


def _matched_columns(columns, rows, experiment, padding_deg):
    # A reflection's prediction depends only on (h, k, l, entering): predict each
    # distinct one once (a table repeating rows costs no more than its distinct ones;
    # for scans over 360 degrees the first row's z picks among the crossings).
    # Each column is gathered once: the rows are spread over the whole table.
    miller_index = np.asarray(columns["miller_index"])[rows].astype(np.int64)
    entering = np.asarray(columns["entering"])[rows].astype(np.int64)
    packed = prediction.reflection_keys(miller_index, entering)
    if packed is None:  # indices too large to pack: the reflections compared whole
        whole = np.column_stack([miller_index, entering])
        _, first, inverse = np.unique(
            whole, return_index=True, return_inverse=True, axis=0
        )
    else:
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
    unique = rows[first]
    once = prediction.predict_reflections(
        columns["miller_index"][unique],
        columns["entering"][unique],
        columns["xyzcal.px"][unique, 2],
        experiment,
        padding_deg=padding_deg,
    )
    predicted = once.subset(inverse.reshape(-1))
    # A panel the detector lacks (however large: the column is unsigned) becomes the
    # first number past its panels, which no prediction has.
    n_panels = len(experiment.detector.panels)
    panel = np.asarray(columns["panel"])[rows]
    panel = np.where(panel < n_panels, panel, n_panels).astype(np.int64)
    keys = np.column_stack([miller_index, entering, columns["id"][rows], panel])
    matched = prediction.match_with_reference(
        keys, columns["xyzcal.px"][rows], predicted
    )
    chosen = _Columns(
        miller_index=miller_index[matched],
        panel=predicted.panel[matched],
        s1=predicted.s1[matched],
        phi=predicted.xyzcal_mm[matched, 2],
        flags=np.asarray(columns["flags"])[rows[matched]],
        rows=rows[matched],
    )
    return chosen, predicted.xyzcal_px[matched, 2]


def _images_per_block(scan, block_degrees: float) -> int:
    return max(1, math.ceil(block_degrees / abs(scan.oscillation_width)))


def _blocks(
    chosen,
    frames,
    shoeboxes,
    experiment,
    bbox,
    block_degrees,
    overall,
    sums=None,
    threads=1,
):
    """sigma_b and sigma_m per block of images; a scan of one block has the
    ``overall`` values (degrees, then px and images), exactly, without computing them
    again. ``sums``: :func:`_pixel_sums` of every row of ``chosen``, or None to sum
    per block."""
    scan = experiment.scan
    distance_and_pixel = _beam_distance_and_pixel(experiment)
    first, n_images = scan.image_range[0], scan.num_images
    per_block = _images_per_block(scan, block_degrees)
    whole_scan = n_images <= per_block
    # Predictions in the padding count in the first or last block.
    frames = np.clip(frames, first - 1, first - 1 + n_images - 1e-9)
    spans = [
        (first - 1 + start, first - 1 + min(start + per_block, n_images))
        for start in range(0, n_images, per_block)
    ]
    peaks = None if bbox is None else block_peaks(bbox, spans)
    result = []
    for z0, z1 in spans:
        inside = np.flatnonzero((frames >= z0) & (frames < z1))
        sigma_b = sigma_m = sigma_b_px = sigma_m_images = None
        if whole_scan:
            sigma_b, sigma_m, sigma_b_px, sigma_m_images = overall
        elif len(inside) >= MIN_BLOCK_REFLECTIONS:
            try:
                b, m, _ = compute_sigmas(
                    _subset(chosen, inside),
                    shoeboxes,
                    experiment,
                    sums=None if sums is None else sums.subset(inside),
                    threads=threads,
                    sigma_m_start=math.radians(overall[1]),
                )
                if b is not None:
                    sigma_b = math.degrees(b)
                    sigma_b_px = _in_pixels(b, *distance_and_pixel)
                sigma_m = math.degrees(m)
                sigma_m_images = _in_images(sigma_m, scan)
            except ProfileModelError:
                pass
        peak = None if peaks is None else peaks[len(result)]
        result.append(
            BlockValues(
                z0 + 1,
                z1,
                int(len(inside)),
                sigma_b,
                sigma_m,
                peak,
                sigma_b_px=sigma_b_px,
                sigma_m_images=sigma_m_images,
            )
        )
    return result


def _shoebox(
    sized: np.ndarray,
    counted_boxes: np.ndarray,
    n_sigma: float,
    counted: str = REFERENCE_REFLECTIONS,
) -> ShoeboxEstimate:
    """The sizes of the boxes ``sized`` (the reference reflections') on the detector,
    and how many of ``counted_boxes`` (those the memory covers) there are and have a
    corner off it, said in the note; the memory is the caller's to add."""
    n_off = int(np.count_nonzero(counted_boxes[:, 0] == OFF_DETECTOR))
    estimate = ShoeboxEstimate(
        n_sigma=n_sigma,
        sigma_b_multiplier=SIGMA_B_MULTIPLIER,
        median_size_px=None,
        max_size_px=None,
        bytes_per_voxel=BYTES_PER_VOXEL,
        median_bytes_per_reflection=None,
        n_off_detector=n_off,
        note=ALL_PREDICTIONS_NOTE if counted == ALL_PREDICTIONS else SHOEBOX_NOTE,
        counted=counted,
        n_boxes=len(counted_boxes),
    )
    if n_off:
        estimate.note += "; " + off_detector_words(n_off, len(counted_boxes))
    bbox = sized[sized[:, 0] != OFF_DETECTOR]
    if len(bbox):
        size = np.column_stack(
            [bbox[:, 1] - bbox[:, 0], bbox[:, 3] - bbox[:, 2], bbox[:, 5] - bbox[:, 4]]
        )
        volume = np.prod(size, axis=1) * BYTES_PER_VOXEL
        estimate.median_size_px = tuple(float(v) for v in np.median(size, axis=0))
        estimate.max_size_px = tuple(int(v) for v in size.max(axis=0))
        estimate.median_bytes_per_reflection = float(np.median(volume))
    return estimate


def off_detector_words(n_off: int, n_boxes: int) -> str:
    """What boxes with a corner off the detector's plane mean, in words.

    Parameters
    ----------
    n_off, n_boxes : int
        Boxes with a corner whose ray misses the panel's plane, of all the boxes.
    """
    others = (
        "no box is left to size"
        if n_off >= n_boxes
        else "sizes and memory are of the others"
    )
    return (
        f"{n_off:,} of the {n_boxes:,} integration boxes have a corner whose ray never "
        "meets the detector's plane (sigma_b is too large for it): dials.integrate "
        f"would stop on them (dxtbx's ray intersection asserts); {others}"
    )


def _prediction_boxes(experiment, sigma_b, sigma_m, n_sigma, padding_deg):
    """The boxes of every reflection dials.integrate predicts: all of them count in
    its whole-scan memory check (``max_memory_needed``), those it flags not to
    integrate (|zeta| < 0.05) too."""
    _, _, predicted = prediction.predict_all(experiment, padding_deg)
    return integration_bboxes(
        predicted.s1, predicted.xyzcal_px[:, 2], predicted.panel, experiment,
        sigma_b, sigma_m, n_sigma,
    )  # fmt: skip


def _rotation_profile(index, experiment, columns, shoeboxes, options):
    n_sigma, block_degrees, padding_deg, threads, all_predictions, fixed, most = options
    result = ExperimentProfile(experiment=index, applicable=True, n_sigma=n_sigma)
    result.stored_profile = _stored(experiment)
    result.n_images = experiment.scan.num_images
    in_experiment = np.asarray(columns["id"]) == index
    reference = reference_selection(
        columns["flags"], columns["miller_index"], columns["id"]
    )
    rows = np.flatnonzero(reference & in_experiment)
    result.n_reference = int(len(rows))
    rows = _even_subset(rows, most)
    result.n_repredicted = int(len(rows))
    chosen, frames = _matched_columns(columns, rows, experiment, padding_deg)
    result.n_matched = int(len(chosen.rows))
    problem = _min_spots_problem(result.n_matched, experiment.scan, result.n_reference)
    if problem:
        result.applicable, result.reason = False, problem
        return result
    # The reflections DIALS's calculator takes (from 10,000, the used_in_refinement
    # ones first; taken again, the same) are the whole scan's and, past the zeta
    # filter and split by image, its blocks': a block of all its rows would take the
    # outliers refinement left out, which the scan does not, and the blocks'
    # reflections add up to the scan's. A scan of several blocks sums their pixels
    # once (each reflection's sums are its own).
    selected = select_for_sigma(chosen.flags)
    taken = _subset(chosen, selected)
    sums = None
    if experiment.scan.num_images > _images_per_block(experiment.scan, block_degrees):
        sums = _pixel_sums(taken, shoeboxes, experiment, True, threads)
    sigma_b, sigma_m, n_used = compute_sigmas(
        taken, shoeboxes, experiment, MIN_ZETA, sums=sums, threads=threads
    )
    zeta = zeta_factor(
        experiment.goniometer.rotation_axis_lab,
        np.asarray(experiment.beam.s0),
        taken.s1,
    )
    passing = np.flatnonzero(np.abs(zeta) >= MIN_ZETA)
    used, used_frames = _subset(taken, passing), frames[selected[passing]]
    if sums is not None:
        sums = sums.subset(passing)
    result.n_selected = n_used
    if sigma_b is None:
        result.applicable = False
        result.reason = "no reference reflection has more than 1 count in its shoebox"
        return result
    result.sigma_b_deg, result.sigma_m_deg = (
        math.degrees(sigma_b),
        math.degrees(sigma_m),
    )
    result.sigma_b_px = _in_pixels(sigma_b, *_beam_distance_and_pixel(experiment))
    result.sigma_m_images = _in_images(result.sigma_m_deg, experiment.scan)
    result.xds = {
        "BEAM_DIVERGENCE_E.S.D.": result.sigma_b_deg,
        "REFLECTING_RANGE_E.S.D.": result.sigma_m_deg,
        "BEAM_DIVERGENCE": None,
        "REFLECTING_RANGE": None,
        "note": XDS_NOTE,
    }
    box_b, box_m = sigma_b, sigma_m  # what dials.integrate will box with
    if fixed:
        box_b, box_m = (math.radians(fixed[key]) for key in FIXED_KEYS)
        result.fixed_sigmas = {
            **fixed,
            "sigma_b_px": _in_pixels(box_b, *_beam_distance_and_pixel(experiment)),
            "sigma_m_images": _in_images(fixed["sigma_m_deg"], experiment.scan),
        }
    bbox = integration_bboxes(
        chosen.s1, frames, chosen.panel, experiment, box_b, box_m, n_sigma
    )
    counted_boxes, counted, refused = bbox, REFERENCE_REFLECTIONS, ""
    if all_predictions:
        try:
            counted_boxes = _prediction_boxes(
                experiment, box_b, box_m, n_sigma, padding_deg
            )
            counted = ALL_PREDICTIONS
        except prediction.TooManyIndices as error:
            refused = (
                f"; not every prediction was boxed ({error}): the memory is the "
                "reference reflections'"
            )
    result.shoebox = _shoebox(bbox, counted_boxes, n_sigma, counted)
    result.shoebox.note += refused
    if fixed:
        result.shoebox.note += (
            f"; boxed with sigma_b and sigma_m as {fixed['source']} fixes them "
            "(dials.integrate given it uses them), not the computed ones"
        )
    memory_boxes = counted_boxes[counted_boxes[:, 0] != OFF_DETECTOR]
    if len(memory_boxes) == 0:  # every box off the detector: no memory to speak of
        memory_boxes = None
    else:
        first = experiment.scan.image_range[0] - 1
        result.shoebox.peak_bytes = peak_shoebox_memory(
            memory_boxes, (first, first + experiment.scan.num_images)
        )
    overall = (
        result.sigma_b_deg,
        result.sigma_m_deg,
        result.sigma_b_px,
        result.sigma_m_images,
    )
    result.blocks = _blocks(
        used,
        used_frames,
        shoeboxes,
        experiment,
        memory_boxes,
        block_degrees,
        overall,
        sums,
        threads,
    )
    return result


def _pre_indexing_estimates(
    indices: list[int],
    experiments,
    columns,
    shoeboxes,
    most: int | None = MAX_REFERENCE_MATCHED,
) -> list[ExperimentProfile]:
    """Before indexing, and for stills, for each experiment of ``indices``: the spread
    of each spot's pixels about its own centroid (DIALS's ``centroid_definition=com``),
    all spots, no zeta filter; and for a scan of several images sigma_m, from ``most``
    of its spots at most. One pass over the table for all of them (the stills of a
    serial run, measured together, have thousands)."""
    # Without the parallax correction: it moves a spot's pixels and its centroid alike,
    # so the angles between them hardly change (5e-4 relative on eiger_therm), and it
    # is a third of the work of an estimate made for every still of a serial run.
    (origin, fast, slow, pixel_size), starts, counts = stacked_panels(
        *[experiments[index].detector for index in indices]
    )
    first_panel = np.full(len(experiments), -1, dtype=np.int64)  # others: not used
    panel_count = np.zeros(len(experiments), dtype=np.int64)
    first_panel[indices], panel_count[indices] = starts, counts
    # Without an id or panel column, every row is experiment 0's, on panel 0 (as
    # the sizes take them).
    n_table = len(columns["xyzobs.px.value"])
    ids = np.asarray(columns.get("id", np.zeros(n_table, np.int32))).reshape(-1)
    panels = np.asarray(columns.get("panel", np.zeros(n_table, np.uint64)))
    n_rows = np.zeros(len(experiments), dtype=np.int64)
    used = np.empty(ids.size, dtype=np.bool_)
    variance = np.empty(ids.size)
    _centroid_spreads(
        shoeboxes.blob, shoeboxes.present, shoeboxes.data_offset, shoeboxes.bbox,
        shoeboxes.panel, ids, first_panel, panel_count, panels.reshape(-1),
        np.asarray(columns["xyzobs.px.value"]), origin, fast, slow, pixel_size,
        n_rows, used, variance,
    )  # fmt: skip
    # Each experiment's variances in row order, one after another (a stable sort).
    rows = np.flatnonzero(used)
    order = rows[np.argsort(ids[rows], kind="stable")]
    ordered = variance[order]
    ends = np.cumsum(np.bincount(ids[rows], minlength=len(experiments)))
    results, distances = [], {}  # (distance, pixel) per beam and detector met
    for index in indices:
        experiment = experiments[index]
        still = not _is_rotation(experiment)
        result = ExperimentProfile(
            experiment=index,
            applicable=True,
            label=STILLS_LABEL if still else ESTIMATE_LABEL,
            reason=STILLS_REASON if still else ESTIMATE_REASON,
        )
        result.stored_profile = _stored(experiment)
        result.n_images = experiment.scan.num_images if experiment.scan else 0
        result.n_reference = result.n_selected = int(n_rows[index])
        start = ends[index - 1] if index else 0
        n_used = int(ends[index] - start)
        variance_sum = ordered[start : ends[index]].sum()
        if not n_used:
            result.applicable = False
            result.reason = "no spot has more than 1 count in its shoebox"
        elif not np.isfinite(variance_sum):
            result.applicable = False
            result.reason = NOT_FINITE_PIXELS
        else:
            mean_variance = variance_sum / n_used  # as _sigma_b
            sigma_b = math.sqrt(float(mean_variance))
            result.sigma_b_deg = math.degrees(sigma_b)
            models = (id(experiment.beam), id(experiment.detector))
            if models not in distances:
                distances[models] = _beam_distance_and_pixel(experiment)
            result.sigma_b_px = _in_pixels(sigma_b, *distances[models])
            if not still and experiment.scan.num_images > 1:
                spots = _observed_columns(
                    ids == index, panels, columns, experiment, shoeboxes, most
                )
                _sigma_m_before_indexing(result, spots, experiment, shoeboxes)
        results.append(result)
    return results


def _observed_columns(
    in_experiment: np.ndarray,
    panels: np.ndarray,
    columns,
    experiment,
    shoeboxes,
    most: int | None = MAX_REFERENCE_MATCHED,
) -> _Columns:
    """The spots of one experiment (the rows ``in_experiment``, on ``panels``) as the
    sigma calculator reads reference reflections, but about their own centroids: the
    diffracted beam through the observed centroid (without the parallax correction,
    as the sigma_b estimate) and its rotation angle; no Miller index (at most
    ``most`` spots, an even subset in table order; None: all)."""
    xyz = np.asarray(columns["xyzobs.px.value"], dtype=np.float64)
    panel = panels.reshape(-1).astype(np.int64)
    detector = DetectorArrays.of(experiment.detector)
    rows = np.flatnonzero(
        in_experiment
        & (np.asarray(shoeboxes.present) != 0)
        & (panel < len(detector.origin))
        & np.isfinite(xyz).all(axis=1)
    )
    rows = _even_subset(rows, most)
    p, (x, y, z) = panel[rows], xyz[rows].T
    lab = (
        detector.origin[p]
        + detector.fast[p] * (x * detector.pixel_size[p, 0])[:, None]
        + detector.slow[p] * (y * detector.pixel_size[p, 1])[:, None]
    )
    s0 = np.asarray(experiment.beam.s0, dtype=np.float64)
    s1 = lab / np.linalg.norm(lab, axis=1)[:, None] * np.linalg.norm(s0)
    scan = ScanGeometry.from_experiment(experiment)
    return _Columns(
        miller_index=np.zeros((len(rows), 3), dtype=np.int64),
        panel=p,
        s1=s1,
        phi=scan.angle(z),
        flags=np.zeros(len(rows), dtype=np.uint64),
        rows=rows,
    )


def _sigma_m_before_indexing(
    result: ExperimentProfile, spots: _Columns, experiment, shoeboxes
) -> None:
    """Add to ``result`` (an estimate before indexing of a rotation scan of several
    images) sigma_m as DIALS's estimator gives it about each spot's own centroid and
    rotation angle (``spots``: :func:`_observed_columns`), with no neighbour masking
    (no Miller indices): an estimate, labelled so; left out where it cannot be had."""
    if len(spots.rows) < MIN_BLOCK_REFLECTIONS:
        return
    try:
        _, sigma_m, _ = compute_sigmas(
            spots, shoeboxes, experiment, mask_neighbours=False
        )
    except ProfileModelError:
        return
    result.sigma_m_deg = math.degrees(sigma_m)
    result.sigma_m_images = _in_images(result.sigma_m_deg, experiment.scan)
    result.label = SIGMA_M_ESTIMATE_LABEL
    result.reason = ""


def profile_model(
    columns,
    shoeboxes,
    experiments,
    n_sigma: float = 3.0,
    block_degrees: float = BLOCK_DEGREES,
    padding_deg: float = prediction.DEFAULT_PADDING_DEG,
    threads: int = 1,
    all_predictions: bool = False,
    fixed_sigmas: dict | None = None,
    max_reference: int | None = MAX_REFERENCE_MATCHED,
) -> ProfileModel:
    """sigma_b and sigma_m as ``dials.integrate`` computes them, per experiment.

    Parameters
    ----------
    columns
        Mapping of column name to array: ``miller_index``, ``flags``, ``id``,
        ``panel``, ``entering``, ``xyzcal.px``, ``xyzobs.px.value`` (a table's
        ``columns``); a spot-finding table needs only ``id``, ``panel`` and
        ``xyzobs.px.value``.
    shoeboxes
        The table's ``ShoeboxColumn`` (the spot pixels).
    experiments
        The ``ExperimentList`` the table refers to.
    n_sigma
        Box half-width in sigmas (dials.integrate default 3).
    block_degrees
        Width of the blocks of images for the drift values.
    padding_deg
        Prediction padding beyond the scan (dials.integrate default 1 degree).
    threads
        sigma_m's likelihood over many frames is split over this many threads; the
        result is the same whatever the number.
    all_predictions
        Count the shoebox memory of every reflection dials.integrate would predict
        (DIALS's own count; a full prediction), not only of the matched reference
        reflections; the box sizes are the reference reflections' either way.
    fixed_sigmas
        ``sigma_b_deg``, ``sigma_m_deg`` and ``source``: the sigmas a user's file
        fixes for dials.integrate, which boxes with them instead of the computed
        ones (``formats.dials_logs.fixed_sigmas``); the boxes and memory of a
        rotation scan are then theirs, and the sigmas are still computed.
    max_reference
        Beyond this many reference reflections in an experiment, an even subset of
        this many is re-predicted and measured (None: every one, as dials.integrate);
        before indexing, the spots sigma_m is estimated from.

    Returns
    -------
    ProfileModel
        One :class:`ExperimentProfile` per experiment: the model, or
        ``applicable=False`` with the reason (stills, too few reflections).
    """
    results: list[ExperimentProfile | None] = []
    options = (
        n_sigma,
        block_degrees,
        padding_deg,
        threads,
        all_predictions,
        fixed_sigmas,
        max_reference,
    )
    missing = [name for name in INDEXED_COLUMNS if name not in columns]
    before_indexing = []
    for index, experiment in enumerate(experiments):
        lacking = [
            name
            for name, model in (
                ("beam", experiment.beam),
                ("detector", experiment.detector),
            )
            if model is None
        ]
        if lacking:
            reason = NO_MODELS_REASON.format(" or ".join(lacking))
            results.append(
                ExperimentProfile(experiment=index, applicable=False, reason=reason)
            )
        elif "miller_index" in columns and missing and _is_rotation(experiment):
            reason = f"the table lacks the column(s) {', '.join(missing)} that dials.integrate re-predicts from"
            results.append(
                ExperimentProfile(experiment=index, applicable=False, reason=reason)
            )
        elif not needs_prediction(experiment, columns):  # stills, or not indexed
            results.append(None)  # estimated below, with the others
            before_indexing.append(index)
        else:
            problem = prediction.rotation_problem(experiment, padding_deg)
            results.append(
                ExperimentProfile(experiment=index, applicable=False, reason=problem)
                if problem
                else _rotation_profile(index, experiment, columns, shoeboxes, options)
            )
    if before_indexing and "xyzobs.px.value" not in columns:
        for index in before_indexing:
            results[index] = ExperimentProfile(
                experiment=index, applicable=False, reason=NO_CENTROIDS_REASON
            )
    elif before_indexing:
        estimates = _pre_indexing_estimates(
            before_indexing, experiments, columns, shoeboxes, max_reference
        )
        for index, estimate in zip(before_indexing, estimates):
            results[index] = estimate
    return ProfileModel(experiments=results)


def needs_prediction(experiment, columns) -> bool:
    """Whether the profile model of ``experiment`` re-predicts its reflections (a
    rotation with a crystal, and indexed rows), the costly case; otherwise it is an
    estimate before indexing or a reason why none applies.

    Parameters
    ----------
    experiment
        A ``formats.experiments.Experiment``.
    columns
        The table's columns, by name.
    """
    return (
        _is_rotation(experiment)
        and experiment.crystal is not None
        and "miller_index" in columns
        and all(name in columns for name in INDEXED_COLUMNS)
    )


MOST_EXAMPLES = 5  # datasets named per reason a profile model does not apply


def combine_profiles(entries: list[dict]) -> dict:
    """The profile models of every table's experiments, for the JSON and the log:
    those that apply, each in full, and those that do not, counted by reason (thousands
    of stills need one line, not thousands).

    Parameters
    ----------
    entries : list of dict
        ``ExperimentProfile`` as plain data, each with its ``dataset`` and
        ``identifier``, in input order.
    """
    applicable = [entry for entry in entries if entry.get("applicable")]
    reasons: dict[str, dict] = {}
    for entry in entries:
        if entry.get("applicable"):
            continue
        reason = reasons.setdefault(
            entry.get("reason", ""), {"n_experiments": 0, "datasets": []}
        )
        reason["n_experiments"] += 1
        dataset = entry.get("dataset")
        if (
            len(reason["datasets"]) < MOST_EXAMPLES
            and dataset not in reason["datasets"]
        ):
            reason["datasets"].append(dataset)
    return {
        "experiments": applicable,
        "not_applicable": [{"reason": r, **v} for r, v in reasons.items()],
    }


def with_xds_ranges(profiles: list[dict], spot_sizes, labels) -> list[dict]:
    """XDS's BEAM_DIVERGENCE= and REFLECTING_RANGE= of each rotation model, from its
    experiment's measured spots (see XDS_NOTE).

    Parameters
    ----------
    profiles : list of dict
        ``ExperimentProfile`` as plain data, with its experiment's ``identifier``.
    spot_sizes
        The counted spots (``extent_x``, ``extent_y``, ``extent_z``, ``experiment``).
    labels : sequence of str
        The identifier of each index in ``spot_sizes.experiment``.

    Returns
    -------
    list of dict
        The same entries, their ``xds`` filled in where the spots allow.
    """
    index = {label: i for i, label in enumerate(labels) if label}
    extent_xy = np.maximum(spot_sizes.extent_x, spot_sizes.extent_y)
    for entry in profiles:
        xds = entry.get("xds")
        if not xds or not entry.get("sigma_b_px") or not entry.get("sigma_m_images"):
            continue
        rows = (spot_sizes.experiment == index.get(entry.get("identifier"), -2)) & (
            extent_xy > 0
        )
        if not rows.any():
            continue
        pixels_per_radian = entry["sigma_b_px"] / math.radians(entry["sigma_b_deg"])
        diameter = median(extent_xy[rows])
        xds["BEAM_DIVERGENCE"] = math.degrees(math.atan(diameter / pixels_per_radian))
        width = entry["sigma_m_deg"] / entry["sigma_m_images"]
        xds["REFLECTING_RANGE"] = median(spot_sizes.extent_z[rows]) * width
    return profiles
