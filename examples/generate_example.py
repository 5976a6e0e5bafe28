"""Make the shipped example: a small simulated rotation dataset in DIALS format.

    python examples/generate_example.py [OUTPUT_FOLDER]     (default: examples/data)

writes ``indexed.expt`` and ``indexed.refl`` (version 2, uint8 shoebox masks, as
dials.index writes them) for a tetragonal crystal (thaumatin-like cell) rotated through
10 images of 0.5° in front of a PILATUS 6M-like detector.

The spots are where the models put them: every reflection of the scan between 30 and
1.6 Å is predicted with the package's own predictor (``algorithms.prediction``), and
candidates, taken in a random order, are drawn as a 3-D Gaussian about their predicted
position. Across the detector it is a 2-D Gaussian in the two angles about the
diffracted beam whose r.m.s. angle from the beam is SIGMA_B (SIGMA_B / sqrt(2) in each
angle): that r.m.s. angle is what dials.integrate's sigma_b estimates. Along the
rotation its standard deviation is SIGMA_M / |zeta| (mosaicity over the Lorentz
factor), integrated over each image's 0.5°. Intensities fall off as Wilson's (B = 15
Å²), exponentially distributed, with Poisson counts on a background of 1 count per
pixel. As dials.find_spots does, a spot is the connected set of pixels above
background + 3 sigma, marked Valid|Foreground (5), the rest of its bbox 0 with data 0;
it is kept if it has at least 3 pixels, its brightest pixel lies within 2 px of its
centroid and the region it is drawn in overlaps no spot kept before, until 400 are
found. ``xyzobs.px.value`` and its variance are those of the foreground pixels, as
spot finding computes them; 90% of the spots are indexed, with the predicted
``xyzcal.*``, ``s1`` and ``entering`` that dials.index writes, so that the profile
model can be computed from them. It recovers SIGMA_M within 5% and SIGMA_B some 8%
low, as the threshold cuts the profile's tails (a test checks both within 10%).

The output is the same, byte for byte, on every run (fixed seed): a test checks that.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from pathlib import Path

import numpy as np

from dials_spot_size_analysis.algorithms.prediction import predict_all
from dials_spot_size_analysis.algorithms.profile_model import zeta_factor
from dials_spot_size_analysis.formats import (
    ReflectionTable,
    ShoeboxColumn,
    write_reflections,
)
from dials_spot_size_analysis.formats.experiments import parse_experiments
from dials_spot_size_analysis.formats.shoebox_encoding import encode_shoeboxes

SEED = 20261123
N_SPOTS = 400
N_IMAGES = 10
OSCILLATION_DEG = 0.5
WAVELENGTH = 0.9795
DISTANCE = 200.0  # mm
PIXEL = 0.172  # mm
IMAGE_SIZE = (2463, 2527)
BEAM_CENTRE_PX = (1231.5, 1263.5)
CELL = (57.8, 57.8, 150.2)
ROTATION_AXIS = np.array([1.0, 0.0, 0.0])
IDENTIFIER = str(uuid.UUID(int=SEED))
# The profile simulated (degrees): what dials.integrate's profile model should find.
SIGMA_B_DEG = 0.055
SIGMA_M_DEG = 0.15
D_MIN, D_MAX = 1.6, 30.0  # Å
B_FACTOR = 15.0  # Å², Wilson fall-off of the mean intensity
MEAN_COUNTS = 2500.0  # mean photons of a spot at infinite resolution
BACKGROUND = 1.0  # counts per pixel per image
THRESHOLD = BACKGROUND + 3.0 * math.sqrt(BACKGROUND)  # a pixel is strong above this
MIN_SPOT_SIZE = 3  # dials.find_spots' Auto for a pixel-array detector
MAX_SEPARATION = 2.0  # px (z in images): dials.find_spots' peak-centroid filter
EDGE_PX = 10  # spots closer to the detector's edge are not drawn
SUBPIXELS = 4  # per pixel and axis, where the profile is sampled
N_SIGMA_DRAWN = 5.0  # how far the profile is drawn, in its standard deviations
VALID_FOREGROUND = 5
INDEXED, USED_IN_REFINEMENT, STRONG = 4, 8, 32


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]
    )
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def experiment_list(real_space: np.ndarray) -> dict:
    origin = [-BEAM_CENTRE_PX[0] * PIXEL, BEAM_CENTRE_PX[1] * PIXEL, -DISTANCE]
    return {
        "__id__": "ExperimentList",
        "experiment": [
            {
                "__id__": "Experiment",
                "identifier": IDENTIFIER,
                "beam": 0,
                "detector": 0,
                "goniometer": 0,
                "scan": 0,
                "crystal": 0,
                "imageset": 0,
            }
        ],
        "imageset": [{"__id__": "ImageSequence", "template": "simulated_#####.cbf"}],
        "beam": [
            {
                "__id__": "monochromatic",
                "direction": [0.0, 0.0, 1.0],
                "wavelength": WAVELENGTH,
                "probe": "x-ray",
            }
        ],
        "detector": [
            {
                "panels": [
                    {
                        "name": "Panel",
                        "type": "SENSOR_PAD",
                        "fast_axis": [1.0, 0.0, 0.0],
                        "slow_axis": [0.0, -1.0, 0.0],
                        "origin": origin,
                        "raw_image_offset": [0, 0],
                        "image_size": list(IMAGE_SIZE),
                        "pixel_size": [PIXEL, PIXEL],
                        "trusted_range": [0.0, 1000000.0],
                        "thickness": 0.32,
                        "material": "Si",
                        "mu": 3.96,
                        "px_mm_strategy": {"type": "SimplePxMmStrategy"},
                    }
                ],
                "hierarchy": {
                    "name": "",
                    "type": "",
                    "fast_axis": [1.0, 0.0, 0.0],
                    "slow_axis": [0.0, 1.0, 0.0],
                    "origin": [0.0, 0.0, 0.0],
                    "children": [{"panel": 0}],
                },
            }
        ],
        "goniometer": [
            {
                "rotation_axis": ROTATION_AXIS.tolist(),
                "fixed_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                "setting_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
            }
        ],
        "scan": [
            {
                "image_range": [1, N_IMAGES],
                "batch_offset": 0,
                "oscillation": [0.0, OSCILLATION_DEG],
                "exposure_time": [0.1] * N_IMAGES,
                "epochs": [0.0] * N_IMAGES,
            }
        ],
        "crystal": [
            {
                "__id__": "crystal",
                "real_space_a": real_space[0].tolist(),
                "real_space_b": real_space[1].tolist(),
                "real_space_c": real_space[2].tolist(),
                "space_group_hall_symbol": " P 4nw 2abw",
            }
        ],
    }


def candidates(experiment) -> tuple[np.ndarray, np.ndarray, object]:
    """Every reflection between D_MAX and D_MIN whose predicted centre lies in the
    scan and at least EDGE_PX from the detector's edges, in (h, k, l, entering)
    order, so that the random draw does not depend on the predictor's order."""
    hkl, entering, found = predict_all(experiment, padding_deg=0.0, d_min=D_MIN)
    d = experiment.crystal.d_spacings(hkl)
    x, y, z = found.xyzcal_px.T
    keep = (
        (d <= D_MAX)
        & (z >= 0)
        & (z < N_IMAGES)
        & (x >= EDGE_PX)
        & (x < IMAGE_SIZE[0] - EDGE_PX)
        & (y >= EDGE_PX)
        & (y < IMAGE_SIZE[1] - EDGE_PX)
    )
    order = np.lexsort((entering, hkl[:, 2], hkl[:, 1], hkl[:, 0]))
    order = order[keep[order]]
    return hkl[order], entering[order], found.subset(order)


def kabsch_axes(s1: np.ndarray, s0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """e1 (along s1 x s0) and e2 (s1 x e1), the two directions across the diffracted
    beam in which the beam divergence is measured."""
    e1 = np.cross(s1, s0)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(s1, e1)
    return e1, e2 / np.linalg.norm(e2)


def zeta_of(s1: np.ndarray, s0: np.ndarray) -> float:
    """The Lorentz factor zeta of a diffracted beam, as the profile model takes it:
    a spot crosses the Ewald sphere in 1/|zeta| times the angle of one on the
    equator."""
    return float(zeta_factor(ROTATION_AXIS, s0, s1[None, :])[0])


def region(xyz: np.ndarray, s1: np.ndarray, zeta: float) -> np.ndarray:
    """The box (x0, x1, y0, y1, z0, z1) the profile is drawn in: N_SIGMA_DRAWN standard
    deviations either way, in pixels (the spot's distance and obliquity taken into
    account) and images, clipped to the scan."""
    sigma_b, sigma_m = math.radians(SIGMA_B_DEG), math.radians(SIGMA_M_DEG)
    cos_two_theta = abs(s1[2]) / float(np.linalg.norm(s1))
    reach_mm = DISTANCE / cos_two_theta / cos_two_theta * sigma_b
    half_xy = math.ceil(N_SIGMA_DRAWN * reach_mm / PIXEL) + 1
    half_z = (
        N_SIGMA_DRAWN * sigma_m / max(abs(zeta), 1e-3) / math.radians(OSCILLATION_DEG)
    )
    x, y, z = (float(v) for v in xyz)
    z0 = max(0, math.floor(z - half_z))
    z1 = min(N_IMAGES, math.ceil(z + half_z))
    x0, y0 = math.floor(x) - half_xy, math.floor(y) - half_xy
    return np.array([x0, x0 + 2 * half_xy + 1, y0, y0 + 2 * half_xy + 1, z0, z1])


def expected_counts(
    box: np.ndarray, xyz: np.ndarray, s1: np.ndarray, s0: np.ndarray, total: float
) -> np.ndarray:
    """Mean counts per pixel and image of a spot of ``total`` photons at ``xyz`` with
    diffracted beam ``s1``, on the background: (nz, ny, nx)."""
    x0, x1, y0, y1, z0, z1 = (int(v) for v in box)
    e1, e2 = kabsch_axes(s1, s0)
    # Across the detector: the Gaussian in the two angles about s1, sampled at
    # SUBPIXELS x SUBPIXELS points of each pixel, weighted by the solid angle.
    offsets = (np.arange(SUBPIXELS) + 0.5) / SUBPIXELS
    xs = (np.arange(x0, x1)[:, None] + offsets).ravel()
    ys = (np.arange(y0, y1)[:, None] + offsets).ravel()
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    lab = np.stack(
        [
            -BEAM_CENTRE_PX[0] * PIXEL + xx * PIXEL,
            BEAM_CENTRE_PX[1] * PIXEL - yy * PIXEL,
            np.full(xx.shape, -DISTANCE),
        ],
        axis=-1,
    )
    length = np.linalg.norm(lab, axis=-1)
    unit = lab / length[..., None]
    # Each of the two angles has SIGMA_B / sqrt(2), so that the angle from s1 has an
    # r.m.s. of SIGMA_B, the quantity dials.integrate's sigma_b estimates.
    per_angle = math.radians(SIGMA_B_DEG) / math.sqrt(2)
    angle2 = (unit @ e1) ** 2 + (unit @ e2) ** 2
    weight = np.exp(-angle2 / (2 * per_angle**2)) * DISTANCE / length**3
    ny, nx = y1 - y0, x1 - x0
    across = weight.reshape(ny, SUBPIXELS, nx, SUBPIXELS).sum(axis=(1, 3))
    across /= across.sum()
    # Along the rotation: the Gaussian of sigma_m / |zeta| integrated over each image.
    zeta = abs(zeta_of(s1, s0))
    scale = (
        math.radians(OSCILLATION_DEG)
        * zeta
        / (math.sqrt(2) * math.radians(SIGMA_M_DEG))
    )
    z = float(xyz[2])
    along = np.array(
        [
            0.5 * (math.erf((f + 1 - z) * scale) - math.erf((f - z) * scale))
            for f in range(z0, z1)
        ]
    )
    # numpy's exp differs in the last bit from one CPU to another (SIMD code chosen
    # at run time): the means rounded to 1e-6 counts draw the same counts everywhere.
    return np.round(BACKGROUND + total * along[:, None, None] * across, 6)


def largest_component(strong: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The connected set of strong pixels (sharing a face, across images too) with the
    most counts: the spot dials.find_spots would label here."""
    labels = np.zeros(strong.shape, dtype=np.int32)
    best, best_sum, n = 0, -1.0, 0
    for start in zip(*np.nonzero(strong)):
        if labels[start]:
            continue
        n += 1
        labels[start] = n
        stack, total = [start], 0.0
        while stack:
            voxel = stack.pop()
            total += float(counts[voxel])
            for axis in range(3):
                for step in (-1, 1):
                    near = list(voxel)
                    near[axis] += step
                    near = tuple(near)
                    if 0 <= near[axis] < strong.shape[axis] and strong[near]:
                        if not labels[near]:
                            labels[near] = n
                            stack.append(near)
        if total > best_sum:
            best, best_sum = n, total
    return labels == best if n else strong


def found_spot(counts: np.ndarray, box: np.ndarray):
    """The spot spot finding would find in this drawn region, or None: (bbox,
    (data, mask, background) in it, centroid, centroid variance)."""
    spot = largest_component(counts > THRESHOLD, counts)
    if int(spot.sum()) < MIN_SPOT_SIZE:
        return None
    z, y, x = np.nonzero(spot)
    lo = np.array([z.min(), y.min(), x.min()])
    hi = np.array([z.max(), y.max(), x.max()]) + 1
    inside = tuple(slice(a, b) for a, b in zip(lo, hi))
    mask = np.where(spot[inside], VALID_FOREGROUND, 0).astype(np.uint8)
    data = np.where(spot[inside], counts[inside], 0).astype(np.float32)
    origin = np.array([box[4], box[2], box[0]]) + lo  # z, y, x of the bbox's corner
    centres = [np.arange(n) + 0.5 + o for n, o in zip(data.shape, origin)]
    grid = np.meshgrid(*centres, indexing="ij")
    w = data.astype(np.float64)
    s, s2 = w.sum(), (w * w).sum()
    centroid = np.array([(w * g).sum() / s for g in grid])
    # The centroid's variance as dials.find_spots writes it: the unbiased weighted
    # variance over the summed weight, plus 1/12 for the pixel's own width.
    variance = np.array(
        [
            (w * (g - c) ** 2).sum() / (s * s - s2) + 1 / 12
            for g, c in zip(grid, centroid)
        ]
    )
    peak = np.array(np.unravel_index(int(np.argmax(data)), data.shape)) + origin + 0.5
    if np.linalg.norm(peak - centroid) > MAX_SEPARATION:
        return None
    bbox = np.array(
        [origin[2], origin[2] + data.shape[2], origin[1], origin[1] + data.shape[1],
         origin[0], origin[0] + data.shape[0]]
    )  # fmt: skip
    pixels = (data, mask, np.zeros(data.shape, np.float32))
    return bbox, pixels, centroid[::-1], variance[::-1]


def overlaps(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    return any(
        all(
            box[2 * a] < other[2 * a + 1] and other[2 * a] < box[2 * a + 1]
            for a in range(3)
        )
        for other in boxes
    )


def simulate(rng: np.random.Generator):
    orientation = rotation(rng.normal(size=3), rng.uniform(0, np.pi))
    real_space = (orientation @ np.diag(CELL)).T  # rows a, b, c
    # The models as the file holds them, so that the spots are predicted from its numbers.
    document = json.loads(json.dumps(experiment_list(real_space)))
    experiment = parse_experiments(document)[0]
    hkl, entering, predicted = candidates(experiment)
    s0 = np.asarray(experiment.beam.s0)
    d = experiment.crystal.d_spacings(hkl)
    spots, drawn = [], []
    for row in rng.permutation(len(hkl)):
        if len(spots) == N_SPOTS:
            break
        s1, xyz = predicted.s1[row], predicted.xyzcal_px[row]
        zeta = zeta_of(s1, s0)
        box = region(xyz, s1, zeta)
        if overlaps(box, drawn):
            continue
        total = MEAN_COUNTS * math.exp(-B_FACTOR / (2 * d[row] ** 2))
        total *= rng.exponential()
        mean = expected_counts(box, xyz, s1, s0, total)
        found = found_spot(rng.poisson(mean).astype(np.float64), box)
        if found is None:
            continue
        drawn.append(box)
        spots.append((row, *found))
    return document, hkl, entering, predicted, spots


def table_of(hkl, entering, predicted, spots, indexed) -> ReflectionTable:
    """The spots as dials.index writes them; unindexed rows have (0, 0, 0) and no
    prediction, their s1 pointing at the observed centroid."""
    rows = np.array([spot[0] for spot in spots])
    n = len(spots)
    bbox = np.array([spot[1] for spot in spots], dtype=np.int32)
    pixels = [spot[2] for spot in spots]
    # Positions rounded (1e-9 px, 1e-12 of the rest) make the same file on every
    # machine, whatever the last bit of the CPU's arithmetic.
    xyzobs = np.round([spot[3] for spot in spots], 9)
    variance = np.round([spot[4] for spot in spots], 12)
    xyzcal_px = np.round(predicted.xyzcal_px[rows], 9)
    xyzcal_mm = np.round(predicted.xyzcal_mm[rows], 12)
    s1 = np.round(predicted.s1[rows], 12)
    lab = np.stack(
        [
            -BEAM_CENTRE_PX[0] * PIXEL + xyzobs[:, 0] * PIXEL,
            BEAM_CENTRE_PX[1] * PIXEL - xyzobs[:, 1] * PIXEL,
            np.full(n, -DISTANCE),
        ],
        axis=1,
    )
    observed_s1 = np.round(lab / np.linalg.norm(lab, axis=1)[:, None] / WAVELENGTH, 12)
    width = math.radians(OSCILLATION_DEG)
    summed = np.array([float(data.sum()) for data, _, _ in pixels])
    table = ReflectionTable(nrows=n, identifiers={0: IDENTIFIER}, version=2)
    yes = indexed[:, None]
    table.columns.update(
        {
            "bbox": bbox,
            "entering": entering[rows].astype(bool),
            "flags": np.where(
                indexed, STRONG | INDEXED | USED_IN_REFINEMENT, STRONG
            ).astype(np.uint64),
            "id": np.zeros(n, np.int32),
            "imageset_id": np.zeros(n, np.int32),
            "intensity.sum.value": summed,
            "intensity.sum.variance": summed.copy(),
            "miller_index": np.where(yes, hkl[rows], 0).astype(np.int32),
            "n_signal": np.array([int((m > 0).sum()) for _, m, _ in pixels], np.int32),
            "panel": np.zeros(n, np.uint64),
            "s1": np.where(yes, s1, observed_s1),
            "xyzcal.mm": np.where(yes, xyzcal_mm, 0.0),
            "xyzcal.px": np.where(yes, xyzcal_px, 0.0),
            "xyzobs.mm.value": np.round(xyzobs * [PIXEL, PIXEL, width], 12),
            "xyzobs.mm.variance": np.round(
                variance * [PIXEL**2, PIXEL**2, width**2], 15
            ),
            "xyzobs.px.value": xyzobs,
            "xyzobs.px.variance": variance,
        }
    )
    blob = encode_shoeboxes(np.zeros(n), bbox, pixels, mask_kind=2)
    table.shoeboxes = ShoeboxColumn.from_blob(blob, n)
    table.shoebox_column_name = "shoebox"
    table.column_order = sorted([*table.columns, "shoebox"])
    return table


def main(output: Path) -> None:
    rng = np.random.default_rng(SEED)
    document, hkl, entering, predicted, spots = simulate(rng)
    indexed = rng.random(len(spots)) < 0.9
    table = table_of(hkl, entering, predicted, spots, indexed)
    output.mkdir(parents=True, exist_ok=True)
    write_reflections(table, output / "indexed.refl")
    (output / "indexed.expt").write_text(json.dumps(document, indent=2) + "\n")
    print(
        f"wrote {output / 'indexed.expt'} and {output / 'indexed.refl'} "
        f"({len(spots)} spots, {int(indexed.sum())} indexed)"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("data"))
