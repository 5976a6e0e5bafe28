"""DIALS experiment lists (``.expt``, JSON), read into small immutable models.

An experiment list stores each model once, in a list per kind (``beam``, ``detector``,
``scan``, ``goniometer``, ``crystal``, ``imageset``), and every experiment refers to them
by index; models shared between experiments stay shared here (the same Python object).

Detector panels are stored by dxtbx in the frame of their parent group in the
``hierarchy`` (dxtbx ``Panel.to_dict`` writes the *local* axes and origin), so panel
frames are composed down the hierarchy into the laboratory frame.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import marshal
import math
import os
import stat
from dataclasses import dataclass, field

import numpy as np

from ..recently_used import RecentlyUsed
from .errors import FileFormatError
from .source import read_json_document

MODEL_KINDS = ("beam", "detector", "goniometer", "scan", "crystal", "imageset")


# Plausible bounds of the numbers this program uses. Anything outside is a corrupt or
# hand-edited file: refusing it here keeps overflow, NaN and division by zero out of
# every computation downstream (and numpy's warnings out of the log).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
LENGTH_LIMIT_MM = 1e6  # detector origins: a kilometre
CELL_LIMIT_A = 1e6  # real-space cell vectors (Å)
ANGLE_LIMIT_DEG = 1e6  # goniometer angles and scan starts
WAVELENGTH_RANGE_A = (1e-4, 1e3)  # hard gamma rays to very cold neutrons
SMALLEST_AXIS = 1e-6  # length below which a direction is taken as zero
PARALLEL_SINE = (
    1e-6  # |sin| of the angle between two axes below which they are parallel
)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _real(value, what: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float within [low, high], or ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} is {_shown(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{what} is {_shown(value)}, too large for a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number}, not a finite number")
    if not low <= number <= high:
        raise ValueError(f"{what} is {number:g}, outside the range {low:g} to {high:g}")
    return number


def _integer(value, what: str, low: int = INT32_MIN, high: int = INT32_MAX) -> int:
    """``value`` as an int within [low, high] (DIALS stores these as 32-bit ints)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is {_shown(value)}, not a whole number")
    if not low <= value <= high:
        raise ValueError(
            f"{what} is {_shown(value)}, outside the range {low} to {high}"
        )
    return value


def _list(value, what: str, length: int | None = None) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{what} is {_shown(value)}, not a list")
    if length is not None and len(value) != length:
        raise ValueError(f"{what} has {len(value)} values, not {length}")
    return value


def _vector(
    values,
    what: str = "a vector",
    length: int = 3,
    limit: float = LENGTH_LIMIT_MM,
    nonzero: bool = False,
) -> np.ndarray:
    """``length`` finite numbers of magnitude at most ``limit``, read-only; with
    ``nonzero`` the vector must have a direction."""
    values = _list(values, what, length)
    numbers = None
    if all(type(v) is float or type(v) is int for v in values):  # the usual case
        try:
            numbers = [float(v) for v in values]
        except OverflowError:  # an integer beyond any float
            numbers = [math.inf]
        if not all(-limit <= v <= limit for v in numbers):  # NaN fails too
            numbers = None
    if numbers is None:  # check each, to name the one that is wrong
        numbers = [
            _real(v, f"{what} component {i}", -limit, limit)
            for i, v in enumerate(values)
        ]
    array = np.array(numbers)
    if nonzero and math.sqrt(sum(v * v for v in numbers)) < SMALLEST_AXIS:
        raise ValueError(f"{what} is {numbers}, which has no direction")
    array.setflags(write=False)
    return array


def _axis(values, what: str) -> np.ndarray:
    return _vector(values, what, limit=LENGTH_LIMIT_MM, nonzero=True)


def _unit_normal(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    """fast x slow, normalised (plain arithmetic: np.cross is slow on one 3-vector)."""
    normal = _cross(fast, slow)
    return normal / math.sqrt(normal @ normal)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array(
        [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ]
    )


def _not_parallel(u: np.ndarray, v: np.ndarray, what: str) -> None:
    """Refuse two axes that span no plane (their normal would be 0/0)."""
    cross = _cross(u, v)
    if math.sqrt(cross @ cross) <= PARALLEL_SINE * math.sqrt((u @ u) * (v @ v)):
        raise ValueError(f"{what} are parallel, so they span no plane")


@dataclass(frozen=True, eq=False)
class Beam:
    """The incident beam; ``direction`` points from the sample towards the source.

    A polychromatic beam (Laue, or neutron time-of-flight: dxtbx's
    ``PolychromaticBeam``) has a direction but no single wavelength: ``wavelength`` is
    None, and each reflection's wavelength comes from its table, where DIALS wrote one.
    """

    wavelength: float | None
    direction: np.ndarray
    polychromatic: bool = False
    # (shortest, longest) Å where a polychromatic beam's file gives them.
    wavelength_range: tuple[float, float] | None = None
    probe: str = "x-ray"

    @property
    def unit_s0(self) -> np.ndarray:
        """The unit vector along the incident beam (opposite ``direction``)."""
        return -self.direction / np.linalg.norm(self.direction)

    @property
    def s0(self) -> np.ndarray:
        """The incident beam vector, length 1/wavelength (Å⁻¹), as dxtbx defines it;
        NaN for a polychromatic beam, whose length differs from spot to spot."""
        if self.wavelength is None:
            return np.full(3, np.nan)
        return self.unit_s0 / self.wavelength


@dataclass(frozen=True, eq=False)
class Panel:
    """One detector panel in the laboratory frame (mm)."""

    name: str
    origin: np.ndarray
    fast_axis: np.ndarray
    slow_axis: np.ndarray
    pixel_size: tuple[float, float]
    image_size: tuple[int, int]
    thickness: float = 0.0
    mu: float = 0.0
    px_mm_strategy: str = "SimplePxMmStrategy"
    # dxtbx's panel type: "SENSOR_PAD" (pixel-array detectors), "SENSOR_CCD", ... or
    # "" where the file has none; DIALS's Auto min_spot_size depends on it.
    sensor_type: str = ""

    @property
    def normal(self) -> np.ndarray:
        return _unit_normal(self.fast_axis, self.slow_axis)


@dataclass(frozen=True, eq=False)
class Detector:
    panels: tuple[Panel, ...]

    def __len__(self) -> int:
        return len(self.panels)


@dataclass(frozen=True, eq=False)
class Scan:
    """Image range (first, last; 1-based, inclusive) and oscillation (start, width) in
    degrees, from either the old ``oscillation`` pair or per-image ``properties``."""

    image_range: tuple[int, int]
    oscillation: tuple[float, float]
    batch_offset: int = 0
    # Per image (start, width) in degrees where the file lists them (``properties``);
    # dxtbx derives the width from consecutive starts where no width is stored.
    oscillation_per_image: tuple[tuple[float, float], ...] = ()

    @property
    def num_images(self) -> int:
        return self.image_range[1] - self.image_range[0] + 1

    @property
    def oscillation_width(self) -> float:
        """Degrees per image: the first image's width where the file lists per-image
        values (``oscillation`` keeps the first stored width, 0 where none is stored)."""
        if self.oscillation_per_image:
            return self.oscillation_per_image[0][1]
        return self.oscillation[1]


@dataclass(frozen=True, eq=False)
class Goniometer:
    """Rotation axis (lab frame) of a single- or multi-axis goniometer."""

    rotation_axis: np.ndarray
    axis_names: tuple[str, ...] = ()
    # dxtbx's F (applied before the scan rotation) and S (after it); identity where
    # absent. A multi-axis goniometer composes them from the axes below and above the
    # scan axis (dxtbx model/multi_axis_goniometer.h), ``rotation_axis`` being the datum.
    fixed_rotation: np.ndarray | None = None
    setting_rotation: np.ndarray | None = None

    @property
    def rotation_axis_lab(self) -> np.ndarray:
        """The scan axis in the laboratory frame, S x datum (dxtbx get_rotation_axis)."""
        if self.setting_rotation is None:
            return self.rotation_axis
        return self.setting_rotation @ self.rotation_axis


@dataclass(frozen=True, eq=False)
class Crystal:
    """Real-space unit-cell vectors (rows a, b, c; Å) and the space group's Hall symbol."""

    real_space: np.ndarray
    space_group_hall_symbol: str
    # Scan-varying A = UB (Å⁻¹) at each scan point (n, 3, 3), as dials.refine writes it.
    A_at_scan_points: np.ndarray | None = None

    @property
    def A(self) -> np.ndarray:
        """The static setting matrix UB: columns a*, b*, c* (dxtbx get_A)."""
        return np.linalg.inv(self.real_space)

    @property
    def unit_cell(self) -> tuple[float, float, float, float, float, float]:
        a, b, c = self.real_space
        lengths = [float(np.linalg.norm(v)) for v in (a, b, c)]

        def angle(u, v):
            return float(
                np.degrees(
                    np.arccos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v))
                )
            )

        return (*lengths, angle(b, c), angle(a, c), angle(a, b))

    def d_spacings(self, miller_indices: np.ndarray) -> np.ndarray:
        """d (Å) of each (h, k, l); infinite for (0, 0, 0).

        Parameters
        ----------
        miller_indices : numpy.ndarray
            (n, 3) h, k, l.
        """
        reciprocal = np.linalg.inv(self.real_space)  # columns are a*, b*, c*
        q = np.asarray(miller_indices, dtype=np.float64) @ reciprocal.T
        with np.errstate(divide="ignore"):
            return 1.0 / np.linalg.norm(q, axis=1)


@dataclass(frozen=True, eq=False)
class StoredProfile:
    """A profile model the ``.expt`` already holds (dials.integrate writes one).

    ``kind`` is its ``__id__`` (``gaussian_rs``, ``ellipsoid``…); for ``gaussian_rs``
    sigma_b and sigma_m are in degrees (a tuple per scan point for a scan-varying model).
    A model of another kind that stores them (``ellipsoid``) keeps, under DIALS's
    names, its ``parameterisation`` of the mosaicity, that parameterisation's
    ``parameters`` and the 3 x 3 matrix ``sigma``, as stored.
    """

    kind: str
    n_sigma: float | None = None
    sigma_b_deg: float | tuple[float, ...] | None = None
    sigma_m_deg: float | tuple[float, ...] | None = None
    raw: dict = field(default_factory=dict)
    parameterisation: str | None = None
    parameters: tuple[float, ...] | None = None
    sigma: tuple[tuple[float, float, float], ...] | None = None


@dataclass(frozen=True, eq=False)
class Experiment:
    identifier: str
    beam: Beam | None = None
    detector: Detector | None = None
    goniometer: Goniometer | None = None
    scan: Scan | None = None
    crystal: Crystal | None = None
    imageset_template: str | None = None
    profile: StoredProfile | None = None


@dataclass(eq=False)
class ExperimentList:
    experiments: list[Experiment] = field(default_factory=list)
    path: str | None = None

    def __len__(self) -> int:
        return len(self.experiments)

    def __iter__(self):
        return iter(self.experiments)

    def __getitem__(self, index: int) -> Experiment:
        return self.experiments[index]

    def identifiers(self) -> list[str]:
        return [experiment.identifier for experiment in self.experiments]


# --------------------------------------------------------------------------- parsing


# dxtbx's names (``__id__``) for beams without a single wavelength: the current
# PolychromaticBeam ("polychromatic"), and the class names some versions wrote.
POLYCHROMATIC_BEAMS = ("polychromatic", "PolychromaticBeam", "TOFBeam")


def _beam(d: dict) -> Beam:
    if "s0" in d and "direction" not in d:
        s0 = _axis(d["s0"], "s0")
        length = float(np.linalg.norm(s0))
        wavelength = _real(1.0 / length, "the wavelength (1/|s0|)", *WAVELENGTH_RANGE_A)
        direction = -s0 / length
        direction.setflags(write=False)
        return Beam(wavelength=wavelength, direction=direction)
    direction = _axis(d["direction"], "direction")
    probe = d.get("probe", "x-ray")
    probe = probe if isinstance(probe, str) else "x-ray"
    if d.get("__id__") in POLYCHROMATIC_BEAMS:
        return Beam(
            wavelength=None,
            direction=direction,
            polychromatic=True,
            wavelength_range=_wavelength_range(d.get("wavelength_range")),
            probe=probe,
        )
    wavelength = _real(d["wavelength"], "wavelength", *WAVELENGTH_RANGE_A)
    return Beam(wavelength=wavelength, direction=direction, probe=probe)


def _wavelength_range(values) -> tuple[float, float] | None:
    """A polychromatic beam's (shortest, longest) wavelength; dxtbx writes (0, 0)
    where it is unknown, kept as None."""
    if values is None:
        return None
    low, high = (
        _real(v, "wavelength_range", 0.0, WAVELENGTH_RANGE_A[1])
        for v in _list(values, "wavelength_range", 2)
    )
    return (low, high) if 0 < low <= high else None


def _frame(d, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(d, dict):
        raise ValueError(f"{what} is {_shown(d)}, not an object")
    fast = _axis(d["fast_axis"], f"{what} fast_axis")
    slow = _axis(d["slow_axis"], f"{what} slow_axis")
    _not_parallel(fast, slow, f"{what} fast_axis and slow_axis")
    return fast, slow, _vector(d["origin"], f"{what} origin")


def _panel_name(p: dict, index: int) -> str:
    name = p.get("name") if isinstance(p, dict) else None
    return (
        f"panel {index} ({name!r})"
        if isinstance(name, str) and name
        else (f"panel {index}")
    )


def _detector(d: dict) -> Detector:
    panels = _list(d["panels"], "panels")
    if not panels:
        raise ValueError("it has no panels")
    names = [_panel_name(p, i) for i, p in enumerate(panels)]
    local_frames = [_frame(p, names[i]) for i, p in enumerate(panels)]
    global_frames = list(local_frames)

    def descend(group: dict, parent: np.ndarray, parent_origin: np.ndarray) -> None:
        # parent: 3x3 with columns fast, slow, normal of the parent frame (lab frame).
        for child in _list(group.get("children", []), "a hierarchy group's children"):
            if isinstance(child, dict) and "panel" in child:
                index = _integer(
                    child["panel"], "a hierarchy panel", 0, len(panels) - 1
                )
                fast, slow, origin = local_frames[index]
                global_frames[index] = (
                    parent @ fast,
                    parent @ slow,
                    parent_origin + parent @ origin,
                )
                continue
            fast, slow, origin = _frame(child, "a hierarchy group")
            fast_g, slow_g = parent @ fast, parent @ slow
            _not_parallel(fast_g, slow_g, "a hierarchy group's axes in the lab frame")
            descend(
                child,
                np.column_stack([fast_g, slow_g, _unit_normal(fast_g, slow_g)]),
                parent_origin + parent @ origin,
            )

    hierarchy = d.get("hierarchy")
    if hierarchy:
        fast, slow, origin = _frame(hierarchy, "the hierarchy root")
        descend(
            hierarchy, np.column_stack([fast, slow, _unit_normal(fast, slow)]), origin
        )
    result = []
    for p, name, frame in zip(panels, names, global_frames):
        result.append(_panel(p, name, frame))
    return Detector(panels=tuple(result))


def _panel(p: dict, name: str, frame) -> Panel:
    fast, slow, origin = frame
    _not_parallel(fast, slow, f"{name} fast_axis and slow_axis in the lab frame")
    if not np.isfinite(origin).all() or np.abs(origin).max() > LENGTH_LIMIT_MM:
        raise ValueError(f"{name} lies beyond {LENGTH_LIMIT_MM:g} mm in the lab frame")
    pixel_size = tuple(
        _real(v, f"{name} pixel_size", 1e-6, 1e3)
        for v in _list(p["pixel_size"], f"{name} pixel_size", 2)
    )
    image_size = tuple(
        _integer(v, f"{name} image_size", 1, INT32_MAX)
        for v in _list(p["image_size"], f"{name} image_size", 2)
    )
    strategy = p.get("px_mm_strategy") or {}
    if not isinstance(strategy, dict):
        raise ValueError(f"{name} px_mm_strategy is {_shown(strategy)}, not an object")
    sensor_type = p.get("type", "")
    if not isinstance(sensor_type, str):
        raise ValueError(f"{name} type is {_shown(sensor_type)}, not a string")
    for vector in frame:  # shared by every file with the same detector: immutable
        vector.setflags(write=False)
    return Panel(
        name=str(p.get("name", "")),
        origin=origin,
        fast_axis=fast,
        slow_axis=slow,
        pixel_size=pixel_size,
        image_size=image_size,
        thickness=_real(p.get("thickness", 0.0), f"{name} thickness", 0.0, 1e6),
        mu=_real(p.get("mu", 0.0), f"{name} mu", 0.0, 1e9),
        px_mm_strategy=str(strategy.get("type", "SimplePxMmStrategy")),
        sensor_type=sensor_type,
    )


def _scan(d: dict) -> Scan:
    first, last = (
        _integer(v, "image_range", 0, INT32_MAX - 1)
        for v in _list(d["image_range"], "image_range", 2)
    )
    if first > last:
        raise ValueError(f"image_range [{first}, {last}] ends before it starts")
    batch_offset = _integer(d.get("batch_offset", 0), "batch_offset", 0, INT32_MAX)
    if last + batch_offset > INT32_MAX:
        raise ValueError("batch_offset takes the batch numbers beyond 32-bit integers")
    if "oscillation" in d:
        start, width = _start_and_width(_list(d["oscillation"], "oscillation", 2))
    else:
        start, width = _first_per_image_values(d)
    return Scan(
        image_range=(first, last),
        oscillation=(start, width),
        batch_offset=batch_offset,
        oscillation_per_image=_oscillation_per_image(d),
    )


def _start_and_width(pair) -> tuple[float, float]:
    return (
        _real(pair[0], "oscillation start", -ANGLE_LIMIT_DEG, ANGLE_LIMIT_DEG),
        _real(pair[1], "oscillation width", -360.0, 360.0),
    )


def _properties(d: dict) -> dict:
    properties = d.get("properties")
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise ValueError(f"properties is {_shown(properties)}, not an object")
    return properties


def _angles(properties: dict, key: str, limit: float) -> list[float]:
    values = properties.get(key)
    if values is None:
        return []
    return [
        _real(v, f"properties {key}", -limit, limit)
        for v in _list(values, f"properties {key}")
    ]


def _first_per_image_values(d: dict) -> tuple[float, float]:
    """The first stored start and width (0 where none is stored)."""
    properties = _properties(d)
    starts = _angles(properties, "oscillation", ANGLE_LIMIT_DEG)
    widths = _angles(properties, "oscillation_width", 360.0)
    return (starts[0] if starts else 0.0), (widths[0] if widths else 0.0)


def _oscillation_per_image(d: dict) -> tuple[tuple[float, float], ...]:
    """(start, width) per image from ``properties``; a missing width list is derived
    from consecutive starts (the last image repeats the previous width), as dxtbx
    does for the scans dials.refine writes."""
    properties = _properties(d)
    starts = _angles(properties, "oscillation", ANGLE_LIMIT_DEG)
    widths = _angles(properties, "oscillation_width", 360.0)
    if not starts:
        return ()
    if len(widths) != len(starts):
        if len(starts) < 2:
            return ()
        steps = [b - a for a, b in zip(starts, starts[1:])]
        widths = steps + steps[-1:]
    return tuple(zip(starts, widths))


def _matrix(values, what: str, limit: float = 1e3) -> np.ndarray:
    matrix = _vector(values, what, 9, limit).reshape(3, 3).copy()
    matrix.setflags(write=False)
    return matrix


def _invertible(matrix: np.ndarray, what: str) -> None:
    """Refuse a matrix whose rows (or columns) are nearly dependent, relative to
    their lengths, so that inverting it cannot overflow."""
    scale = float(np.prod(np.linalg.norm(matrix, axis=1)))
    if scale == 0 or abs(float(np.linalg.det(matrix))) <= 1e-9 * scale:
        raise ValueError(f"{what} is degenerate (its vectors lie in a plane)")


def _axis_angle_matrix(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Right-handed rotation by ``degrees`` about ``axis`` (Rodrigues)."""
    u = axis / np.linalg.norm(axis)
    angle = math.radians(degrees)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return (
        math.cos(angle) * np.eye(3)
        + math.sin(angle) * cross
        + (1 - math.cos(angle)) * np.outer(u, u)
    )


def _multi_axis_rotations(axes, angles, scan_axis: int):
    """F from the axes below the scan axis, S from those above it, each composed as
    R_i x (previous) in axis order (dxtbx multi_axis_goniometer.h)."""
    fixed, setting = np.eye(3), np.eye(3)
    for i, (axis, angle) in enumerate(zip(axes, angles)):
        rotation = _axis_angle_matrix(axis, angle)
        if i < scan_axis:
            fixed = rotation @ fixed
        elif i > scan_axis:
            setting = rotation @ setting
    fixed.setflags(write=False)
    setting.setflags(write=False)
    return fixed, setting


def _optional_matrix(d: dict, key: str) -> np.ndarray | None:
    if d.get(key) is None:
        return None
    matrix = _matrix(d[key], key)
    _invertible(matrix, key)
    return matrix


def _goniometer(d: dict) -> Goniometer:
    if "rotation_axis" in d:
        return Goniometer(
            rotation_axis=_axis(d["rotation_axis"], "rotation_axis"),
            fixed_rotation=_optional_matrix(d, "fixed_rotation"),
            setting_rotation=_optional_matrix(d, "setting_rotation"),
        )
    axes = [_axis(axis, f"axis {i}") for i, axis in enumerate(_list(d["axes"], "axes"))]
    if not axes:
        raise ValueError("it has no axes")
    names = tuple(str(n) for n in _list(d.get("names", []), "names"))
    scan_axis = _integer(d.get("scan_axis", 0), "scan_axis", 0, len(axes) - 1)
    fixed = setting = None
    if d.get("angles") is not None:
        angles = [
            _real(a, "angles", -ANGLE_LIMIT_DEG, ANGLE_LIMIT_DEG)
            for a in _list(d["angles"], "angles", len(axes))
        ]
        fixed, setting = _multi_axis_rotations(axes, angles, scan_axis)
    return Goniometer(
        rotation_axis=axes[scan_axis],
        axis_names=names,
        fixed_rotation=fixed,
        setting_rotation=setting,
    )


def _crystal(d: dict) -> Crystal:
    real_space = np.array(
        [
            _vector(d[key], key, limit=CELL_LIMIT_A, nonzero=True)
            for key in ("real_space_a", "real_space_b", "real_space_c")
        ]
    )
    _invertible(real_space, "the real-space cell")
    real_space.setflags(write=False)
    symbol = d.get("space_group_hall_symbol", "")
    return Crystal(
        real_space=real_space,
        space_group_hall_symbol=(symbol if isinstance(symbol, str) else "").strip(),
        A_at_scan_points=_scan_points(d.get("A_at_scan_points")),
    )


def _scan_points(values) -> np.ndarray | None:
    if not values:
        return None
    matrices = []
    for i, value in enumerate(_list(values, "A_at_scan_points")):
        matrix = _matrix(value, f"A_at_scan_points {i}")
        _invertible(matrix, f"A_at_scan_points {i}")
        matrices.append(matrix)
    matrices = np.array(matrices)
    matrices.setflags(write=False)
    return matrices


def _profile(d) -> StoredProfile:
    """A stored profile model, for display only: an entry that is not a readable
    ``gaussian_rs`` model keeps its kind and raw content, never failing the read."""
    d = d if isinstance(d, dict) else {}
    kind = str(d.get("__id__", ""))

    def number(value, key):
        if isinstance(value, list):
            return tuple(_real(v, key, 0.0, 1e3) for v in value)
        return _real(value, key, 0.0, 1e3)

    try:
        values = [number(d[key], key) for key in ("n_sigma", "sigma_b", "sigma_m")]
    except (KeyError, TypeError, ValueError):
        return _other_profile(kind, d)
    if kind != "gaussian_rs":
        return _other_profile(kind, d)
    n_sigma, sigma_b, sigma_m = values
    return StoredProfile(
        kind=kind,
        n_sigma=n_sigma if isinstance(n_sigma, float) else None,
        sigma_b_deg=sigma_b,
        sigma_m_deg=sigma_m,
        raw=dict(d),
    )


MOST_PROFILE_PARAMETERS = 100  # shown: DIALS's ellipsoid parameterisations have <= 6


def _other_profile(kind: str, d: dict) -> StoredProfile:
    """A stored model that is not a readable ``gaussian_rs`` one: its mosaicity
    parameterisation, parameters and 3 x 3 ``sigma`` where it stores them readably
    (each left None otherwise: the model is for display only)."""
    name = d.get("parameterisation")
    parameters = sigma = None
    with contextlib.suppress(TypeError, ValueError):
        listed = d.get("parameters")
        if isinstance(listed, list) and 0 < len(listed) <= MOST_PROFILE_PARAMETERS:
            parameters = tuple(_real(v, "parameters") for v in listed)
    with contextlib.suppress(TypeError, ValueError):
        rows = d.get("sigma")
        if (
            isinstance(rows, list)
            and len(rows) == 3
            and all(isinstance(row, list) and len(row) == 3 for row in rows)
        ):
            sigma = tuple(tuple(_real(v, "sigma") for v in row) for row in rows)
    return StoredProfile(
        kind=kind,
        raw=dict(d),
        parameterisation=name[:100] if isinstance(name, str) else None,
        parameters=parameters,
        sigma=sigma,
    )


_PARSERS = {
    "beam": _beam,
    "detector": _detector,
    "goniometer": _goniometer,
    "scan": _scan,
    "crystal": _crystal,
    "profile": _profile,
}


def parse_experiments(document, path: str | None = None) -> ExperimentList:
    """Build an ExperimentList from the decoded JSON of an ``.expt`` file.

    Every number the program uses is checked here (finite, within a plausible range,
    directions non-zero, panel axes not parallel), so that a corrupt or hand-edited
    file is refused in one sentence instead of failing, or warning, later.

    Parameters
    ----------
    document
        What ``json.loads`` gave for the file.
    path : str, optional
        The file, for the messages.

    Returns
    -------
    ExperimentList

    Raises
    ------
    FileFormatError
        One sentence naming the model (kind and number) and what is wrong with it.
    """
    if (
        not isinstance(document, dict)
        or document.get("__id__") != "ExperimentList"
        or not isinstance(document.get("experiment"), list)
    ):
        raise FileFormatError(
            path,
            "is JSON but not a DIALS experiment list (no ExperimentList with experiments)",
        )
    models = {kind: _parse_models(document, kind, path) for kind in _PARSERS}
    templates = [
        entry.get("template") if isinstance(entry, dict) else None
        for entry in _model_list(document, "imageset", path)
    ]
    templates = [t if isinstance(t, str) else None for t in templates]
    experiments = []
    for number, entry in enumerate(document["experiment"]):
        if not isinstance(entry, dict):
            raise FileFormatError(
                path,
                f"is corrupt: experiment {number} is {_shown(entry)}, not an object",
            )
        references = {}
        for kind in MODEL_KINDS:
            pool = templates if kind == "imageset" else models[kind]
            references[kind] = _reference(entry, kind, number, pool, path)
        identifier = entry.get("identifier", "")
        if not isinstance(identifier, str):
            raise FileFormatError(
                path,
                f"is corrupt: experiment {number} has the identifier "
                f"{_shown(identifier)}, not a string",
            )
        experiments.append(
            Experiment(
                identifier=identifier,
                imageset_template=references.pop("imageset"),
                profile=_profile_reference(entry, models["profile"]),
                **references,
            )
        )
    return ExperimentList(experiments=experiments, path=path)


def _model_list(document: dict, kind: str, path: str | None) -> list:
    entries = document.get(kind)
    if entries is None:
        return []
    if not isinstance(entries, list):
        if kind == "profile":  # for display only: never fails the read
            return []
        raise FileFormatError(
            path, f"is corrupt: its {kind} models are {_shown(entries)}, not a list"
        )
    return entries


_MODEL_ERRORS = (
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    OverflowError,
    np.linalg.LinAlgError,
)


# Kinds whose models are usually the same in every file of a run (one beamline's
# beam, detector, goniometer, scan): parsed once and shared, as within one file. A
# crystal differs from still to still, so it is not remembered.
REMEMBERED_KINDS = ("beam", "detector", "goniometer", "scan")
MOST_REMEMBERED = 64  # models remembered per kind (the least recently used go first)
LONGEST_REMEMBERED = 1 << 20  # bytes of an entry's key: longer ones are not kept
_remembered = {kind: RecentlyUsed() for kind in REMEMBERED_KINDS}


def _parsed_model(kind: str, entry: dict):
    """The model of one entry, from memory where an identical entry (the same JSON
    values in the same order) was parsed before: models are immutable, so sharing one
    is safe, and thousands of files of one run then share one detector (whose arrays
    the algorithms derive once). The key is the entry marshalled in format 2, which
    has no back-references: equal entries give equal bytes, and any difference (a
    value, its type, a float's sign of zero) gives other bytes, at a quarter of the
    cost of ``repr``, which spells out every float."""
    memory = _remembered.get(kind)
    if memory is None:
        with np.errstate(all="raise"):
            return _PARSERS[kind](entry)
    key = marshal.dumps(entry, 2)
    if len(key) > LONGEST_REMEMBERED:  # e.g. a long scan's per-image lists: bounded
        with np.errstate(all="raise"):
            return _PARSERS[kind](entry)
    model = memory.get(key)
    if model is None:
        with np.errstate(all="raise"):  # an invalid entry raises: never remembered
            model = _PARSERS[kind](entry)
        memory.put(key, model, MOST_REMEMBERED)
    return model


def _parse_models(document: dict, kind: str, path: str | None) -> list:
    parsed = []
    for index, entry in enumerate(_model_list(document, kind, path)):
        try:
            if not isinstance(entry, dict) and kind != "profile":
                raise ValueError(f"it is {_shown(entry)}, not an object")
            parsed.append(_parsed_model(kind, entry))
        except (*_MODEL_ERRORS, FloatingPointError) as error:
            detail = f"missing {error}" if isinstance(error, KeyError) else str(error)
            raise FileFormatError(
                path, f"has an invalid {kind} model (number {index}): {detail}"
            ) from None
    return parsed


def _reference(entry: dict, kind: str, number: int, pool: list, path: str | None):
    """The model an experiment refers to by index, None where it names none."""
    index = entry.get(kind)
    if index is None:
        return None
    if isinstance(index, bool) or not isinstance(index, int):
        raise FileFormatError(
            path,
            f"is corrupt: experiment {number} refers to {kind} {_shown(index)}, "
            "not an index",
        )
    if not 0 <= index < len(pool):
        raise FileFormatError(
            path,
            f"is corrupt: experiment {number} refers to {kind} {index!r}, which does not exist",
        )
    return pool[index]


def _profile_reference(entry, profiles: list) -> StoredProfile | None:
    """The experiment's stored profile model; None where it has none (or an index
    that does not exist: the profile is for display only)."""
    index = entry.get("profile") if isinstance(entry, dict) else None
    if isinstance(index, int) and 0 <= index < len(profiles):
        return profiles[index]
    return None


def read_experiments(path: str | os.PathLike) -> ExperimentList:
    """Read a DIALS ``.expt`` file (optionally compressed).

    The JSON is parsed only if the memory its parse may take is available
    (:func:`~.source.read_json_document`), so a file of a few hundred megabytes that
    would amplify into gigabytes of Python objects is refused instead of exhausting
    the machine.

    Parameters
    ----------
    path : str or os.PathLike
        The experiment list.

    Returns
    -------
    ExperimentList

    Raises
    ------
    FileFormatError
        One sentence naming the file and the problem: not JSON, not an experiment list
        (an old DataBlock list gets the way to convert it), too large, or a model with
        an invalid value.
    """
    path = os.fspath(path)
    try:
        document = read_json_document(path)
    except FileFormatError:
        _refuse_json_list(path)
        raise
    except ValueError as error:  # e.g. an integer of more digits than Python reads
        raise FileFormatError(path, f"is not valid JSON ({error})") from None
    return parse_experiments(document, path=path)


_HEAD_BYTES = 1 << 16
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _head(path: str) -> bytes:
    """The first bytes of a regular file (decompressed where the suffix says so),
    or nothing where they cannot be read: only to explain a refusal."""
    suffix = os.path.splitext(path)[1].lower()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return b""
        opener = _OPENERS.get(suffix, open)
        with opener(path, "rb") as handle:
            return handle.read(_HEAD_BYTES)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return b""


def _refuse_json_list(path: str) -> None:
    """A JSON file whose top level is a list is not an experiment list: say what it
    is instead, above all an old DataBlock list (``datablock.json``)."""
    head = _head(path).lstrip()
    if head[:1] != b"[":
        return
    if b'"__id__"' in head and b'"DataBlock"' in head:
        raise FileFormatError(
            path,
            "is a DataBlock list (datablock.json), which DIALS before 2.0 wrote "
            "instead of an experiment list and current DIALS no longer reads: run "
            "dials.import on the original images again (DIALS 2.0 and later write "
            "imported.expt, an experiment list) and repeat the processing from there",
        )
    raise FileFormatError(
        path,
        "is a JSON list, not a DIALS experiment list (a JSON object whose __id__ "
        "is ExperimentList, as dials.import, dials.index and dials.refine write)",
    )
