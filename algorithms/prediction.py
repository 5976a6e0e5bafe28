"""Re-prediction of indexed reflections from the experiment models, and the matching
of each reference reflection to its prediction, as ``dials.integrate`` does before it
builds the profile model.

DIALS predicts every reflection of the scan (``flex.reflection_table
.from_predictions_multi``, ``src/dials/array_family/flex_ext.py``) and then matches the
reference table to those predictions (``match_with_reference``, same file). Only the
predictions of the reference reflections' own Miller indices can ever match, so here
each reference row is predicted directly from its (h, k, l) and entering flag:

- scan-static crystal: ``ScanStaticReflectionPredictor.for_ub``
  (``src/dials/algorithms/spot_prediction/reflection_predictor.h``) with the ray
  predictor of ``ray_predictor.h`` and the XDS rotation-angle solution of
  ``rotation_angles.h``;
- scan-varying crystal (``A_at_scan_points``, one more than the images):
  ``ScanVaryingReflectionPredictor.for_ub``: on each frame the reciprocal lattice
  point moves linearly between the setting matrices at the frame's start and end
  (``scan_varying_ray_predictor.h``).

Both predict over the scan widened by ``padding`` degrees (``prediction.padding``,
default 1.0 in ``reflection_predictor.py``). The detector impact is dxtbx's
``Detector.get_ray_intersection`` (the valid panel with the largest w) and
millimetres become pixels through the panel's pixel-to-millimetre strategy, with the
parallax correction where the panel has one (dxtbx ``model/pixel_to_millimeter.h``).

For the shoebox memory of every prediction (``predict_all``), every index within the
resolution limit is predicted, both rays, at each crossing of the padded scan, as
``from_predictions_multi`` does.

The kernels do their 3 x 3 algebra in plain arithmetic (``mat_vec3``, ``mat_mat3``),
not with ``@`` or ``np.linalg``: those make numba load BLAS and LAPACK through
``scipy.linalg``, an import that costs a short run more than its work. What they do
per reflection they do in scalars (``mat_vec3_of``, ``rotated_of``): a small array made
per reflection costs an allocation and its reference counting, more than the
arithmetic itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ..jit import njit
from ._memo import by_identity

TWO_PI = 2.0 * math.pi
DEFAULT_PADDING_DEG = 1.0  # dials.integrate's prediction.padding
MATCH_DISTANCE_PX = 2.0  # match_with_reference: predicted vs reference xyzcal.px


@dataclass(frozen=True)
class DetectorArrays:
    """A detector's panels as arrays, for the compiled kernels (lab frame, mm)."""

    origin: np.ndarray  # (P, 3)
    fast: np.ndarray  # (P, 3)
    slow: np.ndarray  # (P, 3)
    inverse_d: np.ndarray  # (P, 3, 3): D = inverse of [fast | slow | origin]
    pixel_size: np.ndarray  # (P, 2)
    image_size: np.ndarray  # (P, 2)
    mu: np.ndarray  # (P,): 0 where the panel has no parallax correction
    thickness: np.ndarray  # (P,)

    @classmethod
    def from_detector(cls, detector) -> DetectorArrays:
        """Build from a ``formats.experiments.Detector``.

        Parameters
        ----------
        detector : formats.experiments.Detector
            The detector whose panels are read.

        Returns
        -------
        DetectorArrays
            Its panels' vectors and sizes (mm), pixel counts and parallax constants.
        """
        panels = detector.panels
        origin = np.array([p.origin for p in panels], dtype=np.float64)
        fast = np.array([p.fast_axis for p in panels], dtype=np.float64)
        slow = np.array([p.slow_axis for p in panels], dtype=np.float64)
        frames = np.stack([fast, slow, origin], axis=2)  # columns
        parallax = np.array(
            [
                "Parallax" in p.px_mm_strategy and p.mu > 0 and p.thickness > 0
                for p in panels
            ]
        )
        return cls(
            origin=origin,
            fast=fast,
            slow=slow,
            inverse_d=np.linalg.inv(frames),
            pixel_size=np.array([p.pixel_size for p in panels], dtype=np.float64),
            image_size=np.array([p.image_size for p in panels], dtype=np.float64),
            mu=np.where(parallax, [p.mu for p in panels], 0.0),
            thickness=np.array([p.thickness for p in panels], dtype=np.float64),
        )

    @classmethod
    def of(cls, detector) -> DetectorArrays:
        """:meth:`from_detector`, built once per detector object and shared by every
        caller (see ``algorithms._memo``): never write into its arrays.

        Parameters
        ----------
        detector : formats.experiments.Detector
            The detector whose panels are read.
        """
        return _shared_detector_arrays(detector)

    def as_tuple(self):
        return (
            self.origin,
            self.fast,
            self.slow,
            self.inverse_d,
            self.pixel_size,
            self.image_size,
            self.mu,
            self.thickness,
        )


@by_identity
def _shared_detector_arrays(detector) -> DetectorArrays:
    # Left writable: the compiled kernels take them as they take every other array
    # (read-only arrays would be compiled anew); no caller writes into them.
    return DetectorArrays.from_detector(detector)


@dataclass(frozen=True)
class ScanGeometry:
    """What the predictors need of the scan and goniometer (radians)."""

    first_image: int
    num_images: int
    start: float  # oscillation start, rad
    width: float  # per image, rad
    axis_datum: np.ndarray  # unit rotation axis (before the setting rotation)
    fixed: np.ndarray  # F
    setting: np.ndarray  # S

    @classmethod
    def from_experiment(cls, experiment) -> ScanGeometry:
        """Read a rotation experiment's scan and goniometer once, for the prediction
        kernels.

        Parameters
        ----------
        experiment : formats.experiments.Experiment
            An experiment with a scan and a goniometer.

        Returns
        -------
        ScanGeometry
            Angles in radians; identity matrices where the goniometer has no fixed or
            setting rotation.
        """
        scan, goniometer = experiment.scan, experiment.goniometer
        identity = np.eye(3)
        axis = np.asarray(goniometer.rotation_axis, dtype=np.float64)
        return cls(
            first_image=int(scan.image_range[0]),
            num_images=int(scan.num_images),
            start=math.radians(scan.oscillation[0]),
            width=math.radians(scan.oscillation_width),
            axis_datum=axis / np.linalg.norm(axis),
            fixed=identity
            if goniometer.fixed_rotation is None
            else np.asarray(goniometer.fixed_rotation, dtype=np.float64),
            setting=identity
            if goniometer.setting_rotation is None
            else np.asarray(goniometer.setting_rotation, dtype=np.float64),
        )

    def array_index(self, angle_rad):
        """dxtbx ``get_array_index_from_angle``: frame z of a rotation angle.

        Parameters
        ----------
        angle_rad : float or numpy.ndarray
            Rotation angle(s), radians.

        Returns
        -------
        float or numpy.ndarray
            The frame z (images counted from one before the first image).
        """
        return self.first_image - 1 + (angle_rad - self.start) / self.width

    def angle(self, array_index):
        """dxtbx ``get_angle_from_array_index`` (radians).

        Parameters
        ----------
        array_index : float or numpy.ndarray
            Frame z (images counted from one before the first image).

        Returns
        -------
        float or numpy.ndarray
            The rotation angle(s), radians.
        """
        return self.start + (array_index - self.first_image + 1) * self.width

    def padded_frames(self, padding_deg: float) -> tuple[int, int]:
        """The frames ``for_ub`` loops over: the scan widened by ``padding``.

        Parameters
        ----------
        padding_deg : float
            How far to widen the scan at each end, degrees.

        Returns
        -------
        tuple of int
            The first and last frame (z) to predict on.
        """
        a0 = self.start
        a1 = self.start + self.num_images * self.width
        pad = math.radians(padding_deg)
        z0 = math.floor(self.array_index(a0 - pad) + 0.5)
        z1 = math.floor(self.array_index(a1 + pad) + 0.5)
        return int(z0), int(z1)


MAX_PREDICTED_IMAGES = 1_000_000  # a scan with its padding, in images
PARALLEL_SINE = 1e-9  # below this sine, the rotation axis is taken to lie on the beam


def rotation_problem(
    experiment, padding_deg: float = DEFAULT_PADDING_DEG
) -> str | None:
    """Why the reflections of a rotation experiment cannot be predicted, or None: a
    beam without a single wavelength, a rotation axis along the beam (rotating moves
    no reflection through the Ewald sphere; the rotation frame divides by zero), or a
    scan of more images with its padding than any real one (an absurd ``image_range``
    or an oscillation so small that the padding alone would be millions of images).

    Parameters
    ----------
    experiment : formats.experiments.Experiment
        A rotation experiment with a beam, a scan and a goniometer.
    padding_deg : float
        How far predictions reach beyond the scan, degrees.
    """
    if experiment.beam.wavelength is None:
        return (
            "a polychromatic beam has no single wavelength, which the prediction of "
            "a rotation scan (and dials.integrate's Gaussian rotation model) needs"
        )
    scan = experiment.scan
    width = abs(scan.oscillation_width)
    images = scan.num_images + 2.0 * padding_deg / width if width else math.inf
    if not images <= MAX_PREDICTED_IMAGES:
        return (
            f"the scan ({scan.num_images:,} images of {scan.oscillation_width:g} "
            f"degrees) with its {padding_deg:g} degree padding spans more than the "
            f"{MAX_PREDICTED_IMAGES:,} images predicted here: check the scan's "
            "image_range and oscillation"
        )
    geometry = ScanGeometry.from_experiment(experiment)
    s0 = experiment.beam.unit_s0  # defined for a polychromatic beam too
    axis = geometry.axis_datum
    in_frame = np.linalg.solve(geometry.setting, s0)
    for a, b in ((axis, in_frame), (s0, geometry.setting @ axis)):
        sine = np.linalg.norm(np.cross(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b))
        if not sine > PARALLEL_SINE:
            return (
                "the rotation axis lies along the beam: rotating the crystal moves no "
                "reflection through the Ewald sphere (check the goniometer's axis and "
                "the beam's direction)"
            )
    return None


@dataclass
class Predictions:
    """One prediction per input row; ``ok`` False where DIALS predicts nothing (the
    reflection does not reach the Ewald sphere with that entering flag inside the
    padded scan, or its ray misses every panel)."""

    ok: np.ndarray
    panel: np.ndarray
    xyzcal_mm: np.ndarray
    xyzcal_px: np.ndarray
    s1: np.ndarray

    def subset(self, index: np.ndarray) -> Predictions:
        """The predictions of some rows (a bool mask or row numbers)."""
        return Predictions(
            *(getattr(self, field.name)[index] for field in fields(Predictions))
        )

    @staticmethod
    def joined(parts: list[Predictions]) -> Predictions:
        """The rows of several predictions, one after another."""
        return Predictions(
            *(
                np.concatenate([getattr(part, field.name) for part in parts])
                for field in fields(Predictions)
            )
        )


# ------------------------------------------------------------------- compiled geometry


@njit
def _parallax_shift(mu, t0, x_mm, y_mm, fast, slow, origin, sign):
    # Shift along the ray by the attenuation length (sign +1: mm to px, -1: px to mm).
    return parallax_shift_of(
        mu, t0, x_mm, y_mm, fast[0], fast[1], fast[2], slow[0], slow[1], slow[2],
        origin[0], origin[1], origin[2], sign,
    )  # fmt: skip


@njit
def parallax_shift_of(mu, t0, x_mm, y_mm, f0, f1, f2, s0, s1, s2, o0, o1, o2, sign):
    """(x, y) mm shifted along the ray by the mean depth of absorption (dxtbx
    parallax_correction.h ``attenuation_length``; sign +1: mm to px, -1: px to mm) on
    the panel with fast axis f, slow axis s and origin o. Scalars only, so that a
    kernel calling it per pixel makes no array and counts no references."""
    r0 = o0 + x_mm * f0 + y_mm * s0
    r1 = o1 + x_mm * f1 + y_mm * s1
    r2 = o2 + x_mm * f2 + y_mm * s2
    norm = math.sqrt(r0 * r0 + r1 * r1 + r2 * r2)
    r0, r1, r2 = r0 / norm, r1 / norm, r2 / norm
    nx = f1 * s2 - f2 * s1  # the panel's normal, facing away from the sample
    ny = f2 * s0 - f0 * s2
    nz = f0 * s1 - f1 * s0
    if o0 * nx + o1 * ny + o2 * nz < 0:
        nx, ny, nz = -nx, -ny, -nz
    cos_t = r0 * nx + r1 * ny + r2 * nz
    o = 1.0 / mu - (t0 / cos_t + 1.0 / mu) * math.exp(-mu * t0 / cos_t)
    sf = r0 * f0 + r1 * f1 + r2 * f2
    ss = r0 * s0 + r1 * s1 + r2 * s2
    return x_mm + sign * sf * o, y_mm + sign * ss * o


@njit
def pixel_lab_coord(p, x_px, y_px, origin, fast, slow, pixel_size, mu, thickness, out):
    """dxtbx ``Panel.get_pixel_lab_coord`` of panel ``p`` into ``out`` (mm).

    Parameters
    ----------
    p : int
        The panel number.
    x_px, y_px : float
        The position on the panel, pixels.
    origin, fast, slow : numpy.ndarray
        (P, 3): each panel's origin (mm) and unit axes (``DetectorArrays``).
    pixel_size : numpy.ndarray
        (P, 2): each panel's pixel size, mm.
    mu, thickness : numpy.ndarray
        (P,): each panel's attenuation coefficient (0: no parallax correction) and
        sensor thickness (mm).
    out : numpy.ndarray
        (3,): receives the lab coordinate, mm.

    Returns
    -------
    None
    """
    x_mm = x_px * pixel_size[p, 0]
    y_mm = y_px * pixel_size[p, 1]
    if mu[p] > 0:
        x_mm, y_mm = _parallax_shift(
            mu[p], thickness[p], x_mm, y_mm, fast[p], slow[p], origin[p], -1.0
        )
    for k in range(3):
        out[k] = origin[p, k] + x_mm * fast[p, k] + y_mm * slow[p, k]


@njit
def _ray_intersection(s1, inverse_d, pixel_size, image_size):
    """dxtbx ``Detector.get_ray_intersection``: (panel, x mm, y mm); panel -1 where
    the ray misses every panel."""
    best, w_max, bx, by = -1, 0.0, 0.0, 0.0
    for p in range(inverse_d.shape[0]):
        v0 = inverse_d[p, 0, 0] * s1[0] + inverse_d[p, 0, 1] * s1[1]
        v0 += inverse_d[p, 0, 2] * s1[2]
        v1 = inverse_d[p, 1, 0] * s1[0] + inverse_d[p, 1, 1] * s1[1]
        v1 += inverse_d[p, 1, 2] * s1[2]
        w = inverse_d[p, 2, 0] * s1[0] + inverse_d[p, 2, 1] * s1[1]
        w += inverse_d[p, 2, 2] * s1[2]
        if w > w_max:
            x, y = v0 / w, v1 / w
            if (
                0 <= x < image_size[p, 0] * pixel_size[p, 0]
                and 0 <= y < image_size[p, 1] * pixel_size[p, 1]
            ):
                best, w_max, bx, by = p, w, x, y
    return best, bx, by


@njit
def _mm_to_px(p, x_mm, y_mm, origin, fast, slow, pixel_size, mu, thickness):
    if mu[p] > 0:
        x_mm, y_mm = _parallax_shift(
            mu[p], thickness[p], x_mm, y_mm, fast[p], slow[p], origin[p], 1.0
        )
    return x_mm / pixel_size[p, 0], y_mm / pixel_size[p, 1]


@njit
def mat_vec3(m, v):
    """m @ v for a 3 x 3 matrix and a 3-vector (a new vector): :func:`mat_vec3_of`."""
    return np.array(mat_vec3_of(m, v[0], v[1], v[2]))


@njit
def mat_mat3(a, b):
    """a @ b for 3 x 3 matrices (a new matrix)."""
    out = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            out[i, j] = a[i, 0] * b[0, j] + a[i, 1] * b[1, j] + a[i, 2] * b[2, j]
    return out


@njit
def _rotate(v, axis, angle, out):
    # Right-handed rotation of v about the unit axis (Rodrigues).
    out[0], out[1], out[2] = rotated_of(v[0], v[1], v[2], axis, angle)


@njit(inline="always")  # inlined where called: no call, no reference counting
def rotated_of(v0, v1, v2, axis, angle):
    """The vector (v0, v1, v2) rotated right-handedly by ``angle`` (rad) about the
    unit ``axis`` (Rodrigues), as three scalars: for kernels that keep their vectors
    in scalars."""
    return rotated_by(v0, v1, v2, axis, math.cos(angle), math.sin(angle))


@njit(inline="always")
def rotated_by(v0, v1, v2, axis, c, s):
    """:func:`rotated_of` with the angle's cosine ``c`` and sine ``s`` given: for a
    kernel that rotates many vectors by the same angle (the same numbers)."""
    d = axis[0] * v0 + axis[1] * v1 + axis[2] * v2
    cx = axis[1] * v2 - axis[2] * v1
    cy = axis[2] * v0 - axis[0] * v2
    cz = axis[0] * v1 - axis[1] * v0
    return (
        v0 * c + cx * s + axis[0] * d * (1 - c),
        v1 * c + cy * s + axis[1] * d * (1 - c),
        v2 * c + cz * s + axis[2] * d * (1 - c),
    )


@njit
def _unit_cross(a, b):
    """The unit vector along a x b (a new vector): :func:`unit_cross_of`."""
    return np.array(unit_cross_of(a[0], a[1], a[2], b[0], b[1], b[2]))


@njit(inline="always")  # inlined where called: no call, no reference counting
def unit_cross_of(a0, a1, a2, b0, b1, b2):
    """The unit vector along a x b, as three scalars: for kernels that keep their
    vectors in scalars."""
    x = a1 * b2 - a2 * b1
    y = a2 * b0 - a0 * b2
    z = a0 * b1 - a1 * b0
    n = math.sqrt(x * x + y * y + z * z)
    return x / n, y / n, z / n


@njit
def _rotation_angles(s0, m1, m2, m3, p0, p1, p2):
    """The two rotation angles putting the reciprocal vector (p0, p1, p2) on the Ewald
    sphere (XDS method, DIALS ``rotation_angles.h``; ``m1``, ``m3`` from
    :func:`_rotation_frame`); ok False where there is no solution."""
    s0_m2 = s0[0] * m2[0] + s0[1] * m2[1] + s0[2] * m2[2]
    s0_m3 = s0[0] * m3[0] + s0[1] * m3[1] + s0[2] * m3[2]
    p_sq = p0**2 + p1**2 + p2**2
    if p_sq > 4 * (s0[0] ** 2 + s0[1] ** 2 + s0[2] ** 2):
        return False, 0.0, 0.0
    p_m1 = p0 * m1[0] + p1 * m1[1] + p2 * m1[2]
    p_m2 = p0 * m2[0] + p1 * m2[1] + p2 * m2[2]
    p_m3 = p0 * m3[0] + p1 * m3[1] + p2 * m3[2]
    rotated_m3 = (-0.5 * p_sq - p_m2 * s0_m2) / s0_m3
    rho_sq = p_sq - p_m2 * p_m2
    if rho_sq < rotated_m3 * rotated_m3:
        return False, 0.0, 0.0
    rotated_m1 = math.sqrt(rho_sq - rotated_m3 * rotated_m3)
    cos1 = rotated_m1 * p_m1 + rotated_m3 * p_m3
    cos2 = -rotated_m1 * p_m1 + rotated_m3 * p_m3
    sin1 = rotated_m1 * p_m3 - rotated_m3 * p_m1
    sin2 = -rotated_m1 * p_m3 - rotated_m3 * p_m1
    return True, math.atan2(sin1, cos1), math.atan2(sin2, cos2)


@njit(inline="always")  # inlined where called: no call, no reference counting
def mat_vec3_of(m, v0, v1, v2):
    """m @ (v0, v1, v2) for a 3 x 3 matrix, as three scalars: the steps of
    :func:`mat_vec3`, for kernels that keep their vectors in scalars."""
    return (
        m[0, 0] * v0 + m[0, 1] * v1 + m[0, 2] * v2,
        m[1, 0] * v0 + m[1, 1] * v1 + m[1, 2] * v2,
        m[2, 0] * v0 + m[2, 1] * v1 + m[2, 2] * v2,
    )


@njit
def _rotation_frame(s0, m2):
    """The axes m1 = m2 x s0 and m3 = m1 x m2 (unit) of ``rotation_angles.h``."""
    m1 = _unit_cross(m2, s0)
    return m1, _unit_cross(m1, m2)


@njit
def _static_ray(r0, r1, r2, entering, fixed, setting, m2, s0, frame, out_s1):
    """The ray of the reflection whose reciprocal vector is (r0, r1, r2) (UB h) with
    the requested entering flag (``ScanStaticRayPredictor``): returns (found, angle mod
    2 pi). ``frame`` holds what does not depend on the reflection: S^-1 s0, the axes
    m1 and m3, and the unit normal of the plane of s0 and S m2. In scalars: no vector
    is made per reflection."""
    s0_in_frame, m1, m3, plane = frame
    p0, p1, p2 = mat_vec3_of(fixed, r0, r1, r2)
    ok, phi1, phi2 = _rotation_angles(s0_in_frame, m1, m2, m3, p0, p1, p2)
    if not ok:
        return False, 0.0
    for phi in (phi1, phi2):
        v0, v1, v2 = rotated_of(p0, p1, p2, m2, phi)
        t0, t1, t2 = mat_vec3_of(setting, v0, v1, v2)
        x0, x1, x2 = s0[0] + t0, s0[1] + t1, s0[2] + t2
        is_entering = x0 * plane[0] + x1 * plane[1] + x2 * plane[2] < 0.0
        if is_entering == entering:
            out_s1[0], out_s1[1], out_s1[2] = x0, x1, x2
            return True, phi - TWO_PI * math.floor(phi / TWO_PI)
    return False, 0.0


@njit
def _store(i, p, x_mm, y_mm, angle, z, s1, detector, ok, panel, xyz_mm, xyz_px, s1_out):
    """Reflection i is predicted on panel p at (x_mm, y_mm), rotation angle ``angle``
    (rad) and frame z: both predictors' outputs, pixels with the parallax correction."""
    origin, fast, slow, inverse_d, pixel_size, image_size, mu, thickness = detector
    x_px, y_px = _mm_to_px(p, x_mm, y_mm, origin, fast, slow, pixel_size, mu, thickness)
    ok[i] = True
    panel[i] = p
    xyz_mm[i, 0], xyz_mm[i, 1], xyz_mm[i, 2] = x_mm, y_mm, angle
    xyz_px[i, 0], xyz_px[i, 1], xyz_px[i, 2] = x_px, y_px, z
    s1_out[i] = s1


@njit
def _static_kernel(
    hkl,
    entering,
    reference_z,
    dstar_max_sq,
    ub,
    setting_inv,
    fixed,
    setting,
    m2,
    s0,
    scan,
    detector,
    ok,
    panel,
    xyz_mm,
    xyz_px,
    s1_out,
):
    first_image, start, width, z_lo, z_hi, a_lo, a_hi = scan
    inverse_d, pixel_size, image_size = detector[3], detector[4], detector[5]
    s1 = np.empty(3)
    # What every reflection shares, made once.
    s0_in_frame = mat_vec3(setting_inv, s0)
    m1, m3 = _rotation_frame(s0_in_frame, m2)
    frame = (s0_in_frame, m1, m3, _unit_cross(s0, mat_vec3(setting, m2)))
    for i in range(hkl.shape[0]):
        ok[i] = False
        r0, r1, r2 = mat_vec3_of(
            ub, float(hkl[i, 0]), float(hkl[i, 1]), float(hkl[i, 2])
        )
        if r0 * r0 + r1 * r1 + r2 * r2 > dstar_max_sq:
            continue  # beyond the predictor's resolution limit
        found, phi = _static_ray(
            r0, r1, r2, entering[i], fixed, setting, m2, s0, frame, s1
        )
        if not found:
            continue
        # get_array_indices_with_angle: every angle = phi (mod 2 pi) in the padded
        # scan; of several (a scan over 360 degrees) the nearest to the reference.
        # Checked before the panels: most reflections of a short scan fail it.
        angle = a_lo + (phi - a_lo) - TWO_PI * math.floor((phi - a_lo) / TWO_PI)
        best_angle, best_z, best_distance = 0.0, 0.0, -1.0
        while angle <= a_hi:
            z = first_image - 1 + (angle - start) / width
            if z_lo < z < z_hi:
                distance = abs(z - reference_z[i])
                if best_distance < 0 or distance < best_distance:
                    best_angle, best_z, best_distance = angle, z, distance
            angle += TWO_PI
        if best_distance < 0:
            continue
        p, x_mm, y_mm = _ray_intersection(s1, inverse_d, pixel_size, image_size)
        if p < 0:
            continue
        _store(i, p, x_mm, y_mm, best_angle, best_z, s1, detector, ok, panel, xyz_mm,
               xyz_px, s1_out)  # fmt: skip


@njit
def _quadratic_roots(a, b, c):
    # Both real roots of a x^2 + b x + c (a linear equation where a is 0).
    if a == 0.0:
        if b == 0.0:
            return -1.0, -1.0
        return -c / b, -c / b
    disc = b * b - 4 * a * c
    if disc < 0:
        return -1.0, -1.0
    q = -0.5 * (b + math.copysign(math.sqrt(disc), b))
    r1 = q / a
    r2 = c / q if q != 0.0 else r1
    return min(r1, r2), max(r1, r2)


@njit
def _varying_ray(h0, h1, h2, a1, a2, s0, out_s1):
    """``ScanVaryingRayPredictor``: (found, entering, alpha) for one frame whose
    setting matrices at its start and end are ``a1``, ``a2`` (h0, h1, h2: the Miller
    index as floats). In scalars, by the steps of ``mat_vec3``: no vector
    is made for the frames a reflection does not cross."""
    r1x, r1y, r1z = mat_vec3_of(a1, h0, h1, h2)
    r2x, r2y, r2z = mat_vec3_of(a2, h0, h1, h2)
    dx, dy, dz = r2x - r1x, r2y - r1y, r2z - r1z
    s0_len = math.sqrt(s0[0] ** 2 + s0[1] ** 2 + s0[2] ** 2)
    q1x, q1y, q1z = s0[0] + r1x, s0[1] + r1y, s0[2] + r1z
    q2x, q2y, q2z = s0[0] + r2x, s0[1] + r2y, s0[2] + r2z
    starts_outside = math.sqrt(q1x * q1x + q1y * q1y + q1z * q1z) - s0_len >= 0.0
    ends_outside = math.sqrt(q2x * q2x + q2y * q2y + q2z * q2z) - s0_len >= 0.0
    if starts_outside == ends_outside:
        return False, False, 0.0
    lo, hi = _quadratic_roots(
        dx * dx + dy * dy + dz * dz,
        2.0 * (q1x * dx + q1y * dy + q1z * dz),
        r1x * r1x + r1y * r1y + r1z * r1z
        + 2.0 * (s0[0] * r1x + s0[1] * r1y + s0[2] * r1z),
    )  # fmt: skip
    if 0.0 <= lo <= 1.0:
        alpha = lo
    elif 0.0 <= hi <= 1.0:
        alpha = hi
    else:
        return False, False, 0.0
    out_s1[0] = r1x + alpha * dx + s0[0]
    out_s1[1] = r1y + alpha * dy + s0[1]
    out_s1[2] = r1z + alpha * dz + s0[2]
    return True, starts_outside, alpha


@njit
def _frame_setting(a, frame, fixed, setting, m2, first_image, start, width):
    """S R(angle at the frame's start) F A, as ``compute_setting_matrices``."""
    angle = start + (frame - first_image + 1) * width
    rotation = np.empty((3, 3))
    column = np.empty(3)
    for k in range(3):
        unit = np.zeros(3)
        unit[k] = 1.0
        _rotate(unit, m2, angle, column)
        rotation[:, k] = column
    return mat_mat3(setting, mat_mat3(rotation, mat_mat3(fixed, a)))


@njit
def _varying_kernel(
    hkl,
    entering,
    guess_z,
    dstar_max_sq,
    a_points,
    fixed,
    setting,
    m2,
    s0,
    scan,
    detector,
    ok,
    panel,
    xyz_mm,
    xyz_px,
    s1_out,
):
    first_image, start, width, z_lo, z_hi, a_lo, a_hi = scan
    inverse_d, pixel_size, image_size = detector[3], detector[4], detector[5]
    offset = int(first_image) - 1
    n_points = a_points.shape[0]
    s1 = np.empty(3)
    # Each frame's setting matrices at its start and end, made on first use and kept:
    # they depend on the frame alone, not on the reflection.
    first_frame = int(z_lo)
    n_frames = max(int(z_hi) - first_frame, 0)
    at_start = np.empty((n_frames, 3, 3))
    at_end = np.empty((n_frames, 3, 3))
    made = np.zeros(n_frames, np.bool_)
    for i in range(hkl.shape[0]):
        ok[i] = False
        h0, h1, h2 = float(hkl[i, 0]), float(hkl[i, 1]), float(hkl[i, 2])
        # Search the frames around the static guess first, then the whole range.
        centre = int(math.floor(guess_z[i]))
        for attempt in range(2):
            lo = max(int(z_lo), centre - 3) if attempt == 0 else int(z_lo)
            hi = min(int(z_hi), centre + 4) if attempt == 0 else int(z_hi)
            for frame in range(lo, hi):
                f = frame - first_frame
                if not made[f]:
                    index = min(max(frame - offset, 0), n_points - 2)
                    at_start[f] = _frame_setting(
                        a_points[index], frame, fixed, setting, m2, first_image,
                        start, width,
                    )  # fmt: skip
                    at_end[f] = _frame_setting(
                        a_points[index + 1], frame + 1, fixed, setting, m2,
                        first_image, start, width,
                    )  # fmt: skip
                    made[f] = True
                a1, a2 = at_start[f], at_end[f]
                found, is_entering, alpha = _varying_ray(h0, h1, h2, a1, a2, s0, s1)
                if found:
                    r0, r1, r2 = mat_vec3_of(a1, h0, h1, h2)
                    # is_outside_res_limit
                    found = not r0 * r0 + r1 * r1 + r2 * r2 > dstar_max_sq
                if not found or is_entering != entering[i]:
                    continue
                p, x_mm, y_mm = _ray_intersection(s1, inverse_d, pixel_size, image_size)
                if p < 0:
                    continue
                angle = start + (frame - offset + alpha) * width
                z = first_image - 1 + (angle - start) / width
                _store(i, p, x_mm, y_mm, angle, z, s1, detector, ok, panel, xyz_mm,
                       xyz_px, s1_out)  # fmt: skip
                break
            if ok[i]:
                break


# ------------------------------------------------------------------------- public API


@by_identity
def _max_resolution(detector, beam) -> float:
    """:func:`detector_max_resolution` for the beam's s0, once per detector and beam
    (every rotation dataset of a run with the same models asks for it)."""
    return detector_max_resolution(detector, np.asarray(beam.s0, dtype=np.float64))


def detector_max_resolution(detector, s0: np.ndarray) -> float:
    """dxtbx ``Detector.get_max_resolution``: the smallest d at any panel corner
    (pixel coordinates (0, 0), (0, n_slow), (n_fast, 0), (n_fast, n_slow)).

    Parameters
    ----------
    detector : formats.experiments.Detector
        The detector.
    s0 : numpy.ndarray
        The incident beam vector (length 1/λ, Å⁻¹).

    Returns
    -------
    float
        The smallest d at any panel corner, Å.
    """
    arrays = DetectorArrays.of(detector)
    s0 = np.asarray(s0, dtype=np.float64)
    s0_len = float(np.linalg.norm(s0))
    lab = np.empty(3)
    d_min = math.inf
    for p, (n_fast, n_slow) in enumerate(arrays.image_size):
        for x, y in ((0.0, 0.0), (0.0, n_slow), (n_fast, 0.0), (n_fast, n_slow)):
            pixel_lab_coord(
                p,
                x,
                y,
                arrays.origin,
                arrays.fast,
                arrays.slow,
                arrays.pixel_size,
                arrays.mu,
                arrays.thickness,
                lab,
            )
            cosine = lab @ s0 / (np.linalg.norm(lab) * s0_len)
            two_theta = math.acos(min(1.0, max(-1.0, cosine)))
            sine = max(1e-9, math.sin(0.5 * two_theta))
            d_min = min(d_min, 1.0 / (2.0 * s0_len * sine))
    return d_min


def predict_reflections(
    miller_index: np.ndarray,
    entering: np.ndarray,
    reference_z: np.ndarray,
    experiment,
    padding_deg: float = DEFAULT_PADDING_DEG,
    force_static: bool = False,
    d_min: float | None = None,
) -> Predictions:
    """Predict each row's reflection as ``dials.integrate`` does.

    Parameters
    ----------
    miller_index, entering
        The rows' (h, k, l) and entering flags: the ray with that flag is predicted.
    reference_z
        The rows' ``xyzcal.px`` z: chooses among several predictions of one ray, as
        ``match_with_reference`` keeps the nearest (only for scans over 360 degrees).
    experiment
        A rotation experiment (beam, detector, goniometer, scan, crystal).
    padding_deg
        Degrees predicted beyond each end of the scan (dials.integrate default 1.0).
    force_static
        Predict with the static crystal even where it is scan-varying.
    d_min
        Resolution limit (Å); None, as in dials.integrate, uses the detector's
        highest corner resolution (``spot_prediction/__init__.py``), so reflections
        observed beyond the corners (tilted panels) are not predicted.

    Returns
    -------
    Predictions
        Panel, ``xyzcal.mm`` (x, y, phi rad), ``xyzcal.px`` and ``s1`` per row.
    """
    hkl = np.ascontiguousarray(miller_index, dtype=np.int64).reshape(-1, 3)
    enter = np.ascontiguousarray(entering, dtype=np.bool_)
    ref_z = np.ascontiguousarray(reference_z, dtype=np.float64)
    n = len(hkl)
    scan = ScanGeometry.from_experiment(experiment)
    z0, z1 = scan.padded_frames(padding_deg)
    pad = math.radians(padding_deg)
    scan_tuple = (
        float(scan.first_image),
        scan.start,
        scan.width,
        float(z0),
        float(z1),
        scan.start - pad,
        scan.start + scan.num_images * scan.width + pad,
    )
    detector = DetectorArrays.of(experiment.detector).as_tuple()
    s0 = np.asarray(experiment.beam.s0, dtype=np.float64)
    crystal = experiment.crystal
    result = Predictions(
        ok=np.zeros(n, np.bool_),
        panel=np.zeros(n, np.int64),
        xyzcal_mm=np.zeros((n, 3)),
        xyzcal_px=np.zeros((n, 3)),
        s1=np.zeros((n, 3)),
    )
    outputs = (result.ok, result.panel, result.xyzcal_mm, result.xyzcal_px, result.s1)
    static_args = (scan.fixed, scan.setting, scan.axis_datum, s0, scan_tuple, detector)
    if d_min is None:
        d_min = _max_resolution(experiment.detector, experiment.beam)
    dstar_max_sq = 1.0 / d_min**2
    setting_inv = np.linalg.inv(scan.setting)  # numpy's, outside the kernels
    _static_kernel(
        hkl, enter, ref_z, dstar_max_sq, crystal.A, setting_inv, *static_args,
        *outputs,
    )  # fmt: skip
    points = crystal.A_at_scan_points
    if not force_static and points is not None and len(points) == scan.num_images + 1:
        guess = np.where(result.ok, result.xyzcal_px[:, 2], ref_z)
        _varying_kernel(
            hkl,
            enter,
            guess,
            dstar_max_sq,
            np.ascontiguousarray(points, dtype=np.float64),
            *static_args,
            *outputs,
        )
    return result


LATTICE_SYMBOLS = "PABCIRF"
VARYING_MARGIN_DEG = 5.0  # how far a scan-varying crystal's crossings are looked for
PREDICTED_CHUNK = 1 << 20  # indices predicted at once (their outputs, ~80 MB)
MAX_INDICES = 50_000_000  # beyond, a full prediction is refused (see indices_expected)


class TooManyIndices(ValueError):
    """More Miller indices lie within the resolution limit than a full prediction
    takes on (MAX_INDICES)."""


def indices_expected(experiment, d_min: float | None = None) -> float:
    """About how many (h, k, l) lie within the resolution limit: the sphere's volume
    in reciprocal space over the reciprocal cell's (before centring absences).

    Parameters
    ----------
    experiment
        An experiment with a crystal, a beam and a detector.
    d_min
        Resolution limit (Å); None: the detector's highest corner resolution.
    """
    if d_min is None:
        d_min = _max_resolution(experiment.detector, experiment.beam)
    volume = abs(float(np.linalg.det(experiment.crystal.real_space)))
    return 4.0 / 3.0 * math.pi * volume / d_min**3


def lattice_symbol(hall_symbol: str) -> str:
    """The lattice of a Hall symbol (its first letter, after an optional ``-``): P,
    A, B, C, I, R or F; P where there is none (no space group given).

    Parameters
    ----------
    hall_symbol : str
        The crystal's ``space_group_hall_symbol``, e.g. ``" P 4 2"`` or ``"-C 2y"``.
    """
    letters = hall_symbol.strip().lstrip("-").strip()
    first = letters[:1].upper()
    return first if first and first in LATTICE_SYMBOLS else "P"


@njit
def _centring_absent(h, k, l, lattice):  # noqa: E741 (l is the Miller index)
    """Whether (h, k, l) is absent for the lattice's centring (the only absences of
    the derived Patterson group DIALS predicts with); ``lattice`` indexes
    LATTICE_SYMBOLS. R is the hexagonal setting, obverse (-h + k + l = 3n)."""
    if lattice == 1:
        return (k + l) % 2 != 0
    if lattice == 2:
        return (h + l) % 2 != 0
    if lattice == 3:
        return (h + k) % 2 != 0
    if lattice == 4:
        return (h + k + l) % 2 != 0
    if lattice == 5:
        return (-h + k + l) % 3 != 0
    if lattice == 6:
        return (h + k) % 2 != 0 or (k + l) % 2 != 0
    return False


@njit
def _l_range(ub, h, k, dstar_max_sq):
    """The l whose (h, k, l) may lie within 1/d_min, widened by one either way (the
    predictor checks each exactly): the roots of |v + l c*|^2 = d*max^2."""
    v0 = ub[0, 0] * h + ub[0, 1] * k
    v1 = ub[1, 0] * h + ub[1, 1] * k
    v2 = ub[2, 0] * h + ub[2, 1] * k
    c0, c1, c2 = ub[0, 2], ub[1, 2], ub[2, 2]
    a = c0 * c0 + c1 * c1 + c2 * c2
    b = v0 * c0 + v1 * c1 + v2 * c2
    c = v0 * v0 + v1 * v1 + v2 * v2 - dstar_max_sq
    disc = b * b - a * c
    if disc < 0:
        return 1, 0
    root = math.sqrt(disc)
    return int(math.floor((-b - root) / a)) - 1, int(math.ceil((-b + root) / a)) + 1


@njit
def _indices_in_sphere(ub, dstar_max_sq, h_max, k_max, lattice, out):
    """Every (h, k, l) but (0, 0, 0) within 1/d_min (widened, see _l_range) and
    present for the lattice, into ``out``; returns how many (``out`` None: only
    counts)."""
    n = 0
    for h in range(-h_max, h_max + 1):
        for k in range(-k_max, k_max + 1):
            lo, hi = _l_range(ub, h, k, dstar_max_sq)
            for l in range(lo, hi + 1):  # noqa: E741 (l is the Miller index)
                if (h == 0 and k == 0 and l == 0) or _centring_absent(h, k, l, lattice):
                    continue
                if out is not None:
                    out[n, 0], out[n, 1], out[n, 2] = h, k, l
                n += 1
    return n


def indices_in_sphere(ub: np.ndarray, d_min: float, lattice: str = "P") -> np.ndarray:
    """The Miller indices a rotation predictor tries: every (h, k, l) whose
    reciprocal vector UB h may be shorter than 1/d_min (with a margin: the predictor
    checks each exactly), without (0, 0, 0) and the lattice's centring absences.

    Parameters
    ----------
    ub : numpy.ndarray
        The crystal's A = UB (3 x 3, Å⁻¹).
    d_min : float
        The resolution limit, Å.
    lattice : str
        The lattice symbol (:func:`lattice_symbol`).

    Returns
    -------
    numpy.ndarray
        (n, 3) int64.
    """
    ub = np.ascontiguousarray(ub, dtype=np.float64)
    dstar_max_sq = 1.0 / d_min**2
    # h = (A^-1 r)_0 <= |row 0 of A^-1| |r|, and likewise k.
    rows = np.linalg.norm(np.linalg.inv(ub), axis=1) / d_min
    h_max, k_max = (int(math.floor(v)) + 1 for v in rows[:2])
    code = LATTICE_SYMBOLS.index(lattice)
    n = _indices_in_sphere(ub, dstar_max_sq, h_max, k_max, code, None)
    out = np.empty((n, 3), np.int64)
    _indices_in_sphere(ub, dstar_max_sq, h_max, k_max, code, out)
    return out


def _predicted_turns(hkl, experiment, padding_deg, d_min) -> list[tuple]:
    """Both rays of these indices, at every crossing of the padded scan: (indices,
    entering flags, predictions) per turn."""
    hkl = np.concatenate([hkl, hkl])
    entering = np.repeat([False, True], len(hkl) // 2)
    scan = ScanGeometry.from_experiment(experiment)
    points = experiment.crystal.A_at_scan_points
    if points is not None and len(points) == scan.num_images + 1:
        # The scan-varying predictor searches every frame for a reflection it does
        # not find near its guess: only those the static crystal puts within
        # VARYING_MARGIN_DEG of the padded scan are tried.
        near = predict_reflections(
            hkl,
            entering,
            np.zeros(len(hkl)),
            experiment,
            padding_deg + VARYING_MARGIN_DEG,
            force_static=True,
            d_min=d_min,
        ).ok
        hkl, entering = hkl[near], entering[near]
    z_lo, z_hi = scan.padded_frames(padding_deg)
    per_turn = TWO_PI / abs(scan.width)  # frames in one turn
    parts = []
    # Of several crossings, the predictor keeps the one nearest the reference z: the
    # middle of each turn of the padded scan picks that turn's crossing.
    for turn in range(max(1, math.ceil((z_hi - z_lo) / per_turn))):
        start = z_lo + turn * per_turn
        middle = np.full(len(hkl), start + per_turn / 2)
        found = predict_reflections(
            hkl, entering, middle, experiment, padding_deg, d_min=d_min
        )
        z = found.xyzcal_px[:, 2]
        keep = found.ok & (z >= start) & (z < start + per_turn)
        parts.append((hkl[keep], entering[keep], found.subset(keep)))
    return parts


def predict_all(
    experiment, padding_deg: float = DEFAULT_PADDING_DEG, d_min: float | None = None
) -> tuple[np.ndarray, np.ndarray, Predictions]:
    """Every reflection ``dials.integrate`` predicts for a rotation experiment
    (``from_predictions_multi``): each (h, k, l) within the resolution limit, both
    of its rays, at every angle where it crosses the Ewald sphere in the padded scan,
    on a panel.

    Parameters
    ----------
    experiment
        A rotation experiment with a crystal.
    padding_deg
        Degrees predicted beyond each end of the scan (dials.integrate default 1.0).
    d_min
        Resolution limit (Å); None: the detector's highest corner resolution, as
        dials.integrate.

    Returns
    -------
    tuple
        Miller indices (n, 3), entering flags (n,) and their :class:`Predictions`
        (every one ok), in chunks of the indices, each by turn of the scan.

    Raises
    ------
    TooManyIndices
        Where more than MAX_INDICES indices lie within the limit
        (:func:`indices_expected`): a cell or a limit no real dataset has.
    """
    if d_min is None:
        d_min = _max_resolution(experiment.detector, experiment.beam)
    expected = indices_expected(experiment, d_min)
    if expected > MAX_INDICES:
        raise TooManyIndices(
            f"about {expected:.3g} Miller indices lie within {d_min:.3g} A, more than "
            f"{MAX_INDICES:,}"
        )
    hkl = indices_in_sphere(
        experiment.crystal.A,
        d_min,
        lattice_symbol(experiment.crystal.space_group_hall_symbol),
    )
    parts = []
    for first in range(0, len(hkl), PREDICTED_CHUNK):
        chunk = hkl[first : first + PREDICTED_CHUNK]
        parts += _predicted_turns(chunk, experiment, padding_deg, d_min)
    return (
        np.concatenate([part[0] for part in parts]),
        np.concatenate([part[1] for part in parts]),
        Predictions.joined([part[2] for part in parts]),
    )


HKL_BITS = 21  # h, k and l from -2**20 to 2**20 - 1 pack into one 64-bit key


def reflection_keys(
    miller_index: np.ndarray, entering: np.ndarray
) -> np.ndarray | None:
    """One unsigned 64-bit number per reflection that sorts as (h, k, l, entering) do:
    equal numbers for the same reflection, on the same side of the Ewald sphere.

    Parameters
    ----------
    miller_index : numpy.ndarray
        (n, 3) integers.
    entering : numpy.ndarray
        n values, 0 or 1 (or bool).

    Returns
    -------
    numpy.ndarray or None
        uint64 per reflection; None where an index lies outside -2**20 to 2**20 - 1
        or an entering flag is not 0 or 1 (the numbers could then collide).
    """
    half = 1 << (HKL_BITS - 1)
    hkl = np.asarray(miller_index).astype(np.int64, copy=False).reshape(-1, 3)
    entering = np.asarray(entering).astype(np.int64, copy=False).reshape(-1)
    if hkl.size and not (
        hkl.min() >= -half
        and hkl.max() < half
        and entering.min() >= 0
        and entering.max() <= 1
    ):
        return None
    shifted = (hkl + half).astype(np.uint64)
    return (
        (shifted[:, 0] << np.uint64(2 * HKL_BITS + 1))
        | (shifted[:, 1] << np.uint64(HKL_BITS + 1))
        | (shifted[:, 2] << np.uint64(1))
        | entering.astype(np.uint64)
    )


def _packed_keys(keys: np.ndarray) -> list[np.ndarray]:
    """The (n, 6) keys h, k, l, entering, experiment id, panel as fewer columns that
    sort in the same order: (h, k, l, entering) as :func:`reflection_keys` and (id,
    panel) packed into one number, where the values fit (real tables: always);
    otherwise the six columns themselves."""
    reflection = reflection_keys(keys[:, :3], keys[:, 3]) if keys.size else None
    place = keys[:, 4:]
    if reflection is None or place.min() < 0 or place.max() >= 1 << 31:
        return [keys[:, k] for k in range(6)]
    return [reflection, (place[:, 0] << 31) | place[:, 1]]


def match_with_reference(
    reference_keys: np.ndarray,
    reference_xyzcal_px: np.ndarray,
    predictions: Predictions,
    max_distance_px: float = MATCH_DISTANCE_PX,
) -> np.ndarray:
    """Which rows DIALS's ``match_with_reference`` keeps, and in which order.

    DIALS groups predictions and references by (h, k, l, entering, experiment,
    panel); each prediction takes its nearest reference (the first on ties), each
    reference its nearest prediction, and a pair is accepted where the predicted and
    the reference ``xyzcal.px`` are closer than 2 (pixels, z in frames). Here every
    row carries its own prediction, so within a group the nearest row to the
    prediction wins; rows repeating a reflection (a replicated table) therefore
    match once, as in DIALS.

    Parameters
    ----------
    reference_keys
        (n, 6) integers: h, k, l, entering, experiment id, panel of each row.
    reference_xyzcal_px
        (n, 3) the table's own ``xyzcal.px``.
    predictions
        :func:`predict_reflections` for the same rows.
    max_distance_px
        The acceptance distance (DIALS: 2).

    Returns
    -------
    numpy.ndarray
        Row indices of the matched reference rows, in DIALS's output order (the
        order of the predictions: by frame).
    """
    keys = np.asarray(reference_keys, dtype=np.int64)
    distance = np.sqrt(
        np.sum((predictions.xyzcal_px - np.asarray(reference_xyzcal_px)) ** 2, axis=1)
    )
    candidate = predictions.ok & (predictions.panel == keys[:, 5])
    rows = np.flatnonzero(candidate)
    if rows.size == 0:
        return rows
    # Sort by key, then distance, then row number (lexsort is stable and the rows
    # ascend): the first of each key group wins.
    groups = _packed_keys(keys[rows])
    order = np.lexsort((distance[rows], *groups[::-1]))
    sorted_rows = rows[order]
    first = np.zeros(len(sorted_rows), dtype=bool)
    first[0] = True
    for group in groups:
        ordered = group[order]
        first[1:] |= ordered[1:] != ordered[:-1]
    winners = sorted_rows[first]
    winners = winners[distance[winners] < max_distance_px]
    # DIALS returns the matches in prediction order: frame by frame.
    return winners[np.argsort(predictions.xyzcal_px[winners, 2], kind="stable")]
