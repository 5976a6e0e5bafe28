"""DIALS experiment lists (``.expt``, JSON), read into small immutable models.

An experiment list stores each model once, in a list per kind (``beam``, ``detector``,
``scan``, ``goniometer``, ``crystal``, ``imageset``), and every experiment refers to them
by index; models shared between experiments stay shared here (the same Python object).

Detector panels are stored by dxtbx in the frame of their parent group in the
``hierarchy`` (dxtbx ``Panel.to_dict`` writes the *local* axes and origin), so panel
frames are composed down the hierarchy into the laboratory frame.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import FileFormatError
from .source import describe_content, read_bytes

MODEL_KINDS = ("beam", "detector", "goniometer", "scan", "crystal", "imageset")


def _vector(values, length: int = 3) -> np.ndarray:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(
            f"expected {length} finite numbers, found {values!r}"
        ) from None
    if len(numbers) != length or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"expected {length} finite numbers, found {values!r}")
    array = np.array(numbers)
    array.setflags(write=False)
    return array


def _unit_normal(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    """fast x slow, normalised (plain arithmetic: np.cross is slow on one 3-vector)."""
    normal = np.array(
        [
            fast[1] * slow[2] - fast[2] * slow[1],
            fast[2] * slow[0] - fast[0] * slow[2],
            fast[0] * slow[1] - fast[1] * slow[0],
        ]
    )
    return normal / math.sqrt(normal @ normal)


@dataclass(frozen=True, eq=False)
class Beam:
    """A monochromatic beam; ``direction`` points from the sample towards the source."""

    wavelength: float
    direction: np.ndarray

    @property
    def s0(self) -> np.ndarray:
        """The incident beam vector, length 1/wavelength (Å⁻¹), as dxtbx defines it."""
        return -self.direction / np.linalg.norm(self.direction) / self.wavelength


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
        """d (Å) of each (h, k, l); infinite for (0, 0, 0)."""
        reciprocal = np.linalg.inv(self.real_space)  # columns are a*, b*, c*
        q = np.asarray(miller_indices, dtype=np.float64) @ reciprocal.T
        with np.errstate(divide="ignore"):
            return 1.0 / np.linalg.norm(q, axis=1)


@dataclass(frozen=True, eq=False)
class StoredProfile:
    """A profile model the ``.expt`` already holds (dials.integrate writes one).

    ``kind`` is its ``__id__`` (``gaussian_rs``, ``ellipsoid``…); for ``gaussian_rs``
    sigma_b and sigma_m are in degrees (a tuple per scan point for a scan-varying model).
    """

    kind: str
    n_sigma: float | None = None
    sigma_b_deg: float | tuple[float, ...] | None = None
    sigma_m_deg: float | tuple[float, ...] | None = None
    raw: dict = field(default_factory=dict)


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


def _beam(d: dict) -> Beam:
    if "s0" in d and "direction" not in d:
        s0 = _vector(d["s0"])
        return Beam(
            wavelength=float(1.0 / np.linalg.norm(s0)),
            direction=_vector(-s0 / np.linalg.norm(s0)),
        )
    wavelength = float(d["wavelength"])
    if not wavelength > 0:
        raise ValueError(f"wavelength {wavelength} is not positive")
    return Beam(wavelength=wavelength, direction=_vector(d["direction"]))


def _frame(d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _vector(d["fast_axis"]), _vector(d["slow_axis"]), _vector(d["origin"])


def _detector(d: dict) -> Detector:
    panels = d["panels"]
    local_frames = [_frame(p) for p in panels]
    global_frames = list(local_frames)

    def descend(group: dict, parent: np.ndarray, parent_origin: np.ndarray) -> None:
        # parent: 3x3 with columns fast, slow, normal of the parent frame (lab frame).
        for child in group.get("children", []):
            fast, slow, origin = (
                _frame(child) if "fast_axis" in child else (None, None, None)
            )
            if "panel" in child:
                index = int(child["panel"])
                fast, slow, origin = local_frames[index]
                global_frames[index] = (
                    parent @ fast,
                    parent @ slow,
                    parent_origin + parent @ origin,
                )
                continue
            fast_g, slow_g = parent @ fast, parent @ slow
            descend(
                child,
                np.column_stack([fast_g, slow_g, _unit_normal(fast_g, slow_g)]),
                parent_origin + parent @ origin,
            )

    hierarchy = d.get("hierarchy")
    if hierarchy:
        fast, slow, origin = _frame(hierarchy)
        descend(
            hierarchy, np.column_stack([fast, slow, _unit_normal(fast, slow)]), origin
        )
    result = []
    for p, (fast, slow, origin) in zip(panels, global_frames):
        pixel_size = tuple(float(v) for v in p["pixel_size"])
        image_size = tuple(int(v) for v in p["image_size"])
        if len(pixel_size) != 2 or len(image_size) != 2 or min(pixel_size) <= 0:
            raise ValueError(
                f"panel {p.get('name')!r} has an invalid pixel or image size"
            )
        result.append(
            Panel(
                name=str(p.get("name", "")),
                origin=origin,
                fast_axis=fast,
                slow_axis=slow,
                pixel_size=pixel_size,
                image_size=image_size,
                thickness=float(p.get("thickness", 0.0)),
                mu=float(p.get("mu", 0.0)),
                px_mm_strategy=str(
                    (p.get("px_mm_strategy") or {}).get("type", "SimplePxMmStrategy")
                ),
            )
        )
    return Detector(panels=tuple(result))


def _scan(d: dict) -> Scan:
    first, last = (int(v) for v in d["image_range"])
    if "oscillation" in d:
        start, width = (float(v) for v in d["oscillation"])
    else:
        properties = d.get("properties", {})
        starts, widths = (
            properties.get("oscillation") or [0.0],
            properties.get("oscillation_width") or [0.0],
        )
        start, width = float(starts[0]), float(widths[0])
    return Scan(
        image_range=(first, last),
        oscillation=(start, width),
        batch_offset=int(d.get("batch_offset", 0)),
        oscillation_per_image=_oscillation_per_image(d),
    )


def _oscillation_per_image(d: dict) -> tuple[tuple[float, float], ...]:
    """(start, width) per image from ``properties``; a missing width list is derived
    from consecutive starts (the last image repeats the previous width), as dxtbx
    does for the scans dials.refine writes."""
    properties = d.get("properties") or {}
    starts = [float(v) for v in properties.get("oscillation") or []]
    widths = [float(v) for v in properties.get("oscillation_width") or []]
    if not starts:
        return ()
    if len(widths) != len(starts):
        if len(starts) < 2:
            return ()
        steps = [b - a for a, b in zip(starts, starts[1:])]
        widths = steps + steps[-1:]
    return tuple(zip(starts, widths))


def _matrix(values) -> np.ndarray:
    matrix = _vector(values, 9).reshape(3, 3).copy()
    matrix.setflags(write=False)
    return matrix


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
        rotation = _axis_angle_matrix(_vector(axis), float(angle))
        if i < scan_axis:
            fixed = rotation @ fixed
        elif i > scan_axis:
            setting = rotation @ setting
    fixed.setflags(write=False)
    setting.setflags(write=False)
    return fixed, setting


def _goniometer(d: dict) -> Goniometer:
    if "rotation_axis" in d:
        return Goniometer(
            rotation_axis=_vector(d["rotation_axis"]),
            fixed_rotation=_matrix(d["fixed_rotation"])
            if "fixed_rotation" in d
            else None,
            setting_rotation=_matrix(d["setting_rotation"])
            if "setting_rotation" in d
            else None,
        )
    axes, names = d["axes"], tuple(str(n) for n in d.get("names", ()))
    scan_axis = int(d.get("scan_axis", 0))
    fixed = setting = None
    if "angles" in d:
        fixed, setting = _multi_axis_rotations(axes, d["angles"], scan_axis)
    return Goniometer(
        rotation_axis=_vector(axes[scan_axis]),
        axis_names=names,
        fixed_rotation=fixed,
        setting_rotation=setting,
    )


def _crystal(d: dict) -> Crystal:
    real_space = np.array(
        [_vector(d[key]) for key in ("real_space_a", "real_space_b", "real_space_c")]
    )
    if abs(np.linalg.det(real_space)) < 1e-9:
        raise ValueError("the real-space vectors are degenerate")
    real_space.setflags(write=False)
    return Crystal(
        real_space=real_space,
        space_group_hall_symbol=str(d.get("space_group_hall_symbol", "")).strip(),
        A_at_scan_points=_scan_points(d.get("A_at_scan_points")),
    )


def _scan_points(values) -> np.ndarray | None:
    if not values:
        return None
    matrices = np.array([_matrix(v) for v in values])
    matrices.setflags(write=False)
    return matrices


def _profile(d) -> StoredProfile:
    """A stored profile model, for display only: an entry that is not a readable
    ``gaussian_rs`` model keeps its kind and raw content, never failing the read."""
    d = d if isinstance(d, dict) else {}
    kind = str(d.get("__id__", ""))

    def number(value):
        if isinstance(value, list):
            return tuple(float(v) for v in value)
        return float(value)

    try:
        values = [number(d[key]) for key in ("n_sigma", "sigma_b", "sigma_m")]
    except (KeyError, TypeError, ValueError):
        return StoredProfile(kind=kind, raw=dict(d))
    if kind != "gaussian_rs":
        return StoredProfile(kind=kind, raw=dict(d))
    n_sigma, sigma_b, sigma_m = values
    return StoredProfile(
        kind=kind,
        n_sigma=n_sigma if isinstance(n_sigma, float) else None,
        sigma_b_deg=sigma_b,
        sigma_m_deg=sigma_m,
        raw=dict(d),
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
    """Build an ExperimentList from the decoded JSON of an ``.expt`` file."""
    if (
        not isinstance(document, dict)
        or document.get("__id__") != "ExperimentList"
        or not isinstance(document.get("experiment"), list)
    ):
        raise FileFormatError(
            path,
            "is JSON but not a DIALS experiment list (no ExperimentList with experiments)",
        )
    models: dict[str, list] = {}
    for kind, parse in _PARSERS.items():
        entries = document.get(kind) or []
        parsed = []
        for index, entry in enumerate(entries):
            try:
                parsed.append(parse(entry))
            except (
                KeyError,
                TypeError,
                ValueError,
                IndexError,
                np.linalg.LinAlgError,
            ) as error:
                detail = (
                    f"missing {error}" if isinstance(error, KeyError) else str(error)
                )
                raise FileFormatError(
                    path, f"has an invalid {kind} model (number {index}): {detail}"
                ) from None
        models[kind] = parsed
    templates = [
        entry.get("template") if isinstance(entry, dict) else None
        for entry in document.get("imageset") or []
    ]
    experiments = []
    for number, entry in enumerate(document["experiment"]):
        references = {}
        for kind in MODEL_KINDS:
            index = entry.get(kind) if isinstance(entry, dict) else None
            if index is None:
                continue
            pool = templates if kind == "imageset" else models[kind]
            if not isinstance(index, int) or not 0 <= index < len(pool):
                raise FileFormatError(
                    path,
                    f"is corrupt: experiment {number} refers to {kind} {index!r}, which does not exist",
                )
            references[kind] = pool[index]
        experiments.append(
            Experiment(
                identifier=str(entry.get("identifier", "")),
                imageset_template=references.pop("imageset", None),
                profile=_profile_reference(entry, models["profile"]),
                **references,
            )
        )
    return ExperimentList(experiments=experiments, path=path)


def _profile_reference(entry, profiles: list) -> StoredProfile | None:
    """The experiment's stored profile model; None where it has none (or an index
    that does not exist: the profile is for display only)."""
    index = entry.get("profile") if isinstance(entry, dict) else None
    if isinstance(index, int) and 0 <= index < len(profiles):
        return profiles[index]
    return None


def read_experiments(path: str | os.PathLike) -> ExperimentList:
    """Read a DIALS ``.expt`` file (optionally compressed)."""
    path = os.fspath(path)
    content = read_bytes(path)
    head = bytes(content[:64])
    if head.lstrip()[:1] != b"{":
        raise FileFormatError(
            path,
            f"is not a DIALS experiment list: it looks like {describe_content(head)}",
        )
    try:
        document = json.loads(bytes(content))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise FileFormatError(
            path, f"is not valid JSON ({error}): is it truncated?"
        ) from None
    return parse_experiments(document, path=path)
