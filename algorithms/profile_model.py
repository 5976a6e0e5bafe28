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
from dataclasses import asdict, dataclass, field

import numba
import numpy as np

from . import prediction
from .prediction import DetectorArrays, ScanGeometry, pixel_lab_coord

INDEXED = 4
USED_IN_REFINEMENT = 8
BAD_FOR_REFINEMENT = 167903232
MIN_ZETA = 0.05
MIN_SPOTS_OVERALL = 50
MIN_SPOTS_PER_DEGREE = 20
MAX_REFLECTIONS_FOR_SIGMA = 10000
VALID_FOREGROUND = 5
VALID_BACKGROUND = 3
BLOCK_DEGREES = 5.0
MIN_BLOCK_REFLECTIONS = 20
STILLS_REASON = (
    "stills have no rotation: DIALS's stills integration models mosaicity "
    "differently (no sigma_m from rotation angles), so no Gaussian rotation model"
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
    flags = np.asarray(flags).astype(np.uint64)
    keep = (flags & np.uint64(INDEXED)) != 0
    keep &= (flags & np.uint64(BAD_FOR_REFINEMENT)) == 0
    keep &= np.any(np.asarray(miller_index) != 0, axis=1)
    if np.any(np.asarray(experiment_id)[keep] < 0):
        raise ProfileModelError(
            "reference spots have an invalid experiment id (process_reference)"
        )
    return keep


def select_for_sigma(
    flags: np.ndarray, limit: int = MAX_REFLECTIONS_FOR_SIGMA
) -> np.ndarray:
    """``_select_reflections_for_sigma_calc``: indices of the rows used, in order.

    With ``limit`` or more rows, DIALS keeps the used_in_refinement rows if there
    are enough, else those followed by every n-th other row.
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
    """m2 . (s1 x s0)/|s1 x s0| (gaussian_rs ``zeta_factor``)."""
    e1 = np.cross(s1, s0)
    return e1 @ rotation_axis / np.linalg.norm(e1, axis=1)


# ------------------------------------------------------------------ compiled per pixel


@numba.njit(cache=True, nogil=True)
def _float32_at(blob, start, count):
    return blob[start : start + 4 * count].copy().view(np.float32)


@numba.njit(cache=True, nogil=True)
def _mask_at(blob, start, count, int32_mask):
    if int32_mask:
        return blob[start : start + 4 * count].copy().view(np.int32).astype(np.int64)
    return blob[start : start + count].astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _rounded_hkl_differs(lab, s0, angle, hkl, m2, a_f_inv, s_inv):
    # PixelToMillerIndex.h: h = A^-1 F^-1 R(angle)^T S^-1 (s1 - s0), rounded.
    length = math.sqrt(lab[0] ** 2 + lab[1] ** 2 + lab[2] ** 2)
    s0_len = math.sqrt(s0[0] ** 2 + s0[1] ** 2 + s0[2] ** 2)
    r = lab / length * s0_len - s0
    r = s_inv @ r
    rotated = np.empty(3)
    prediction._rotate(r, m2, -angle, rotated)
    h = a_f_inv @ rotated
    for k in range(3):
        if int(math.floor(h[k] + 0.5)) != hkl[k]:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _pixel_kernel(
    rows,
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
):
    """Per row: sums for ComputeEsdBeamDivergence (data and data x angle^2 over mask
    != 0) and, per frame of the bbox, the data over mask == Valid|Foreground after
    mask_neighbouring (ExtendedEstimator)."""
    origin, fast, slow, inverse_d, pixel_size, image_size, mu, thickness = detector
    apply, s0, m2, a_f_inv, s_inv, first_image, start, width = neighbours
    lab = np.empty(3)
    for out in range(rows.shape[0]):
        i = rows[out]
        sum_w[out], sum_w_angle2[out] = 0.0, 0.0
        if present[i] == 0:
            continue
        x0, x1, y0, y1, z0, z1 = bbox[i]
        nx, ny, nz = x1 - x0, y1 - y0, z1 - z0
        count = nx * ny * nz
        data = _float32_at(blob, data_offset[i], count)
        mask = _mask_at(blob, data_offset[i] + 4 * count, count, present[i] == 1)
        p = panel[i]
        ref = s1[i]
        ref_len = math.sqrt(ref[0] ** 2 + ref[1] ** 2 + ref[2] ** 2)
        for j in range(ny):
            for k in range(nx):
                pixel_lab_coord(
                    p, x0 + k + 0.5, y0 + j + 0.5, origin, fast, slow,
                    pixel_size, mu, thickness, lab,
                )  # fmt: skip
                lab_len = math.sqrt(lab[0] ** 2 + lab[1] ** 2 + lab[2] ** 2)
                cosine = (lab[0] * ref[0] + lab[1] * ref[1] + lab[2] * ref[2]) / (
                    lab_len * ref_len
                )
                angle = math.acos(min(1.0, max(-1.0, cosine)))
                for z in range(nz):
                    index = (z * ny + j) * nx + k
                    code = mask[index]
                    if apply:
                        frame = z0 + z
                        a0 = start + (frame - first_image + 1) * width
                        if _rounded_hkl_differs(
                            lab, s0, a0, hkl[i], m2, a_f_inv, s_inv
                        ) or _rounded_hkl_differs(
                            lab, s0, a0 + width, hkl[i], m2, a_f_inv, s_inv
                        ):
                            code = VALID_BACKGROUND
                    value = np.float64(data[index])
                    if code != 0:
                        sum_w[out] += value
                        sum_w_angle2[out] += value * angle * angle
                    if code == VALID_FOREGROUND:
                        frame_sum[frame_start[out] + z] += value


@numba.njit(cache=True, nogil=True)
def _negative_log_likelihood(sigma, e1, e2, counts, starts):
    """-L of the extended estimator: per reflection sum(n log z) - K log Z + log Z,
    z = (erf(e1/sigma) - erf(e2/sigma))/2 clamped to 1e-10 (calculator.py)."""
    total = 0.0
    for r in range(starts.shape[0] - 1):
        sum_z, sum_nlogz, k = 0.0, 0.0, 0.0
        for i in range(starts[r], starts[r + 1]):
            z = 0.5 * (math.erf(e1[i] / sigma) - math.erf(e2[i] / sigma))
            if z < 1e-10:
                z = 1e-10
            sum_z += z
            sum_nlogz += counts[i] * math.log(z)
            k += counts[i]
        log_z = math.log(sum_z)
        total += sum_nlogz - k * log_z + log_z
    return -total


def _nelder_mead_1d(function, start: float, stop: float, tolerance: float) -> float:
    """One-dimensional Nelder-Mead with the coefficients and the stopping rule of
    ``scitbx.simplex.simplex_opt`` (reflection 1, contraction 0.5, expansion 2,
    shrink 0.5; every 20 steps stop when the best value changed by less than
    ``tolerance`` relative to itself)."""
    points = [start, stop]
    values = [function(start), function(stop)]
    monitor, count = 0.0, 0
    while True:
        worst = 0 if values[0] > values[1] else 1
        best = 1 - worst
        centroid = points[best]
        reflected = 2.0 * centroid - points[worst]
        reflected_value = function(reflected)
        if values[best] > reflected_value:
            expanded = -centroid + 2.0 * reflected
            expanded_value = function(expanded)
            if reflected_value > expanded_value:
                points[worst], values[worst] = expanded, expanded_value
            else:
                points[worst], values[worst] = reflected, reflected_value
        else:
            # In one dimension the second-highest vertex is the best one.
            if values[worst] <= reflected_value:
                contracted = 0.5 * centroid + 0.5 * points[worst]
                keep_limit, strict = values[worst], False
            else:
                contracted = 0.5 * centroid + 0.5 * reflected
                keep_limit, strict = reflected_value, True
            contracted_value = function(contracted)
            shrink = (
                contracted_value > keep_limit
                if strict
                else contracted_value >= keep_limit
            )
            if shrink:
                points[worst] = points[best] + 0.5 * (points[worst] - points[best])
                values[worst] = function(points[worst])
            else:
                points[worst], values[worst] = contracted, contracted_value
        count += 1
        best_value = min(values)
        if count % 20 == 0:
            change = abs(monitor - best_value) / (abs(best_value) + tolerance**2)
            if change < tolerance:
                break
            monitor = best_value
    return points[0] if values[0] < values[1] else points[1]


# --------------------------------------------------------------------------- results


@dataclass
class BlockValues:
    """sigma_b and sigma_m of the reflections predicted in one block of images."""

    first_image: int
    last_image: int
    n_reflections: int
    sigma_b_deg: float | None
    sigma_m_deg: float | None


@dataclass
class ShoeboxEstimate:
    """The integration shoebox the model implies (gaussian_rs ``compute_bbox``)."""

    n_sigma: float
    sigma_b_multiplier: float
    median_size_px: tuple[float, float, float] | None  # x, y, images
    max_size_px: tuple[int, int, int] | None
    bytes_per_voxel: int
    median_bytes_per_reflection: float | None
    note: str = ""


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
    n_matched: int = 0
    n_selected: int = 0
    n_sigma: float = 3.0
    sigma_b_px: float | None = None
    sigma_m_images: float | None = None
    xds: dict = field(default_factory=dict)
    blocks: list[BlockValues] = field(default_factory=list)
    shoebox: ShoeboxEstimate | None = None
    stored_profile: dict | None = None


@dataclass
class ProfileModel:
    """Per experiment results; plain data (``as_dict`` is JSON-able)."""

    experiments: list[ExperimentProfile]

    def as_dict(self) -> dict:
        return {"experiments": [asdict(e) for e in self.experiments]}


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
    scan = ScanGeometry.from_experiment(experiment)
    a_f_inv = np.linalg.inv(experiment.crystal.A) @ np.linalg.inv(scan.fixed)
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


def _pixel_sums(columns: _Columns, shoeboxes, experiment, mask_neighbours: bool):
    bbox = np.ascontiguousarray(shoeboxes.bbox, dtype=np.int64)
    rows = np.ascontiguousarray(columns.rows, dtype=np.int64)
    frames = np.where(
        shoeboxes.present[rows] != 0, bbox[rows, 5] - bbox[rows, 4], 0
    ).astype(np.int64)
    frame_start = np.concatenate([[0], np.cumsum(frames)]).astype(np.int64)
    n = len(rows)
    sum_w, sum_w_angle2 = np.zeros(n), np.zeros(n)
    frame_sum = np.zeros(int(frame_start[-1]))
    hkl = np.zeros((len(shoeboxes), 3), dtype=np.int64)
    hkl[rows] = columns.miller_index
    s1 = np.zeros((len(shoeboxes), 3))
    s1[rows] = columns.s1
    _pixel_kernel(
        rows,
        shoeboxes.blob,
        np.ascontiguousarray(shoeboxes.present),
        np.ascontiguousarray(shoeboxes.data_offset, dtype=np.int64),
        bbox,
        np.ascontiguousarray(shoeboxes.panel, dtype=np.int64),
        s1,
        hkl,
        DetectorArrays.from_detector(experiment.detector).as_tuple(),
        _neighbour_parameters(experiment, mask_neighbours),
        frame_start,
        sum_w,
        sum_w_angle2,
        frame_sum,
    )
    return sum_w, sum_w_angle2, frame_sum, frame_start, frames


def _sigma_b(sum_w: np.ndarray, sum_w_angle2: np.ndarray) -> float | None:
    """ComputeEsdBeamDivergence: sqrt of the mean per-reflection variance
    sum(w angle^2)/(sum(w) - 1), over reflections with sum(w) > 1."""
    use = sum_w > 1
    if not np.any(use):
        return None
    return math.sqrt(float(np.mean(sum_w_angle2[use] / (sum_w[use] - 1))))


def _sigma_m(columns, frame_sum, frame_start, frames, bbox_z0, zeta, scan) -> float:
    """ExtendedEstimator: maximum likelihood over log(sigma_m) of the per-frame
    counts given the Gaussian rocking curve, by 1-D Nelder-Mead from 0.1 and 1 deg."""
    n_rows = len(frames)
    row_of_frame = np.repeat(np.arange(n_rows), frames)
    offset_in_row = np.arange(len(frame_sum)) - frame_start[row_of_frame]
    frame = bbox_z0[row_of_frame] + offset_in_row
    positive = frame_sum > 0
    row_of_frame, frame = row_of_frame[positive], frame[positive]
    counts = frame_sum[positive]
    if counts.size == 0:
        raise ProfileModelError(
            "zero pixels selected for estimation of profile parameters"
        )
    middle = scan.angle(frame + 0.5)
    tau = middle - columns.phi[row_of_frame]
    z = np.abs(zeta[row_of_frame])
    half_width = scan.width / 2.0
    e1 = (tau + half_width) * z / math.sqrt(2.0)
    e2 = (tau - half_width) * z / math.sqrt(2.0)
    starts = np.concatenate(
        [[0], np.cumsum(np.bincount(row_of_frame, minlength=n_rows))]
    )
    starts = np.unique(starts).astype(np.int64)

    def target(log_sigma: float) -> float:
        return _negative_log_likelihood(math.exp(log_sigma), e1, e2, counts, starts)

    solution = _nelder_mead_1d(
        target, math.log(math.radians(0.1)), math.log(math.radians(1.0)), 1e-3
    )
    return math.exp(solution)


def compute_sigmas(
    columns: _Columns,
    shoeboxes,
    experiment,
    min_zeta: float = MIN_ZETA,
    mask_neighbours: bool = True,
) -> tuple[float | None, float, int]:
    """``ProfileModelCalculator`` on prepared columns: (sigma_b rad, sigma_m rad,
    reflections used after the zeta filter)."""
    chosen = select_for_sigma(columns.flags)
    columns = _subset(columns, chosen)
    scan = ScanGeometry.from_experiment(experiment)
    zeta = zeta_factor(
        experiment.goniometer.rotation_axis_lab,
        np.asarray(experiment.beam.s0),
        columns.s1,
    )
    keep = np.abs(zeta) >= min_zeta
    columns, zeta = _subset(columns, np.flatnonzero(keep)), zeta[keep]
    sums = _pixel_sums(columns, shoeboxes, experiment, mask_neighbours)
    sum_w, sum_w_angle2, frame_sum, frame_start, frames = sums
    sigma_b = _sigma_b(sum_w, sum_w_angle2)
    bbox_z0 = np.asarray(shoeboxes.bbox)[columns.rows, 4].astype(np.int64)
    sigma_m = _sigma_m(columns, frame_sum, frame_start, frames, bbox_z0, zeta, scan)
    return sigma_b, sigma_m, len(columns.rows)


def _subset(columns: _Columns, index: np.ndarray) -> _Columns:
    return _Columns(
        miller_index=columns.miller_index[index],
        panel=columns.panel[index],
        s1=columns.s1[index],
        phi=columns.phi[index],
        flags=columns.flags[index],
        rows=columns.rows[index],
    )
