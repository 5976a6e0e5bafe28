"""Make the shipped example: a small simulated rotation dataset in DIALS format.

    python examples/generate_example.py [OUTPUT_FOLDER]     (default: examples/data)

writes ``indexed.expt`` and ``indexed.refl`` (version 2, uint8 shoebox masks, as
dials.index writes them): 400 spot-finding shoeboxes on a PILATUS 6M-like detector over
10 images of 0.5°, from a tetragonal crystal (thaumatin-like cell). Spots are larger at low
resolution and span 1 to 3 images; 90% are indexed. Every pixel of a spot is
Valid|Foreground (5) and the rest of its bbox 0, exactly as dials.find_spots masks them.
The output is the same, byte for byte, on every run (fixed seed): a test checks that.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import numpy as np

from dials_spot_size_analysis.formats import (
    ReflectionTable,
    ShoeboxColumn,
    write_reflections,
)
from dials_spot_size_analysis.formats.shoebox_encoding import encode_shoeboxes

SEED = 20261123
N_SPOTS = 400
N_IMAGES = 10
WAVELENGTH = 0.9795
DISTANCE = 200.0  # mm
PIXEL = 0.172  # mm
IMAGE_SIZE = (2463, 2527)
BEAM_CENTRE_PX = (1231.5, 1263.5)
CELL = (57.8, 57.8, 150.2)
IDENTIFIER = str(uuid.UUID(int=SEED))
VALID_FOREGROUND = 5
INDEXED, STRONG, PREDICTED_OBSERVED = 4, 32, 1 | 2


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
                "rotation_axis": [1.0, 0.0, 0.0],
                "fixed_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                "setting_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
            }
        ],
        "scan": [
            {
                "image_range": [1, N_IMAGES],
                "batch_offset": 0,
                "oscillation": [0.0, 0.5],
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


def spot_mask(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A compact blob: an ellipsoid filling most of the bbox, at least one pixel."""
    nz, ny, nx = shape
    # Pixel centres in -1..1 across the bbox.
    z, y, x = np.meshgrid(
        *((np.arange(n) + 0.5) / n * 2 - 1 for n in shape), indexing="ij"
    )
    radius = rng.uniform(0.8, 1.1)
    inside = (x**2 + y**2 + 0.5 * z**2) <= radius**2
    inside[nz // 2, ny // 2, nx // 2] = True
    return np.where(inside, VALID_FOREGROUND, 0).astype(np.uint8)


def simulate(rng: np.random.Generator):
    orientation = rotation(rng.normal(size=3), rng.uniform(0, np.pi))
    real_space = (orientation @ np.diag(CELL)).T  # rows a, b, c
    reciprocal = np.linalg.inv(real_space)
    # Spots in the resolution range 30-1.6 Å, uniform on the detector's circle of radius r.
    miller = rng.integers(-30, 31, size=(N_SPOTS * 4, 3))
    q = miller @ reciprocal.T
    d = 1 / np.linalg.norm(q, axis=1)
    keep = np.flatnonzero((d > 1.6) & (d < 30))[:N_SPOTS]
    miller, d = miller[keep], d[keep]
    two_theta = 2 * np.arcsin(WAVELENGTH / (2 * d))
    radius_px = DISTANCE * np.tan(two_theta) / PIXEL
    azimuth = rng.uniform(0, 2 * np.pi, N_SPOTS)
    x = BEAM_CENTRE_PX[0] + radius_px * np.cos(azimuth)
    y = BEAM_CENTRE_PX[1] + radius_px * np.sin(azimuth)
    inside = (x > 10) & (x < IMAGE_SIZE[0] - 10) & (y > 10) & (y < IMAGE_SIZE[1] - 10)
    x, y = (
        np.where(inside, x, BEAM_CENTRE_PX[0] + radius_px * 0.3),
        np.where(inside, y, BEAM_CENTRE_PX[1]),
    )
    # numpy's sin, cos, tan and arcsin differ in the last bit from one CPU to another
    # (SIMD code chosen at run time): positions rounded to 1e-6 px make the same file
    # on every machine.
    x, y = np.round(x, 6), np.round(y, 6)
    z = rng.uniform(0.05, N_IMAGES - 0.05, N_SPOTS)
    # Strong low-resolution spots have more pixels above threshold than weak high-resolution
    # ones; a few are big (ice, satellites, split spots).
    extent = 3 + np.minimum(np.round(rng.gamma(2.0, 0.6 + d / 6.0)), 10).astype(int)
    extent[rng.random(N_SPOTS) < 0.02] += 8
    depth = rng.choice([1, 2, 3], size=N_SPOTS, p=[0.55, 0.35, 0.10])
    x0 = np.floor(x - extent / 2).astype(np.int32)
    y0 = np.floor(y - extent / 2).astype(np.int32)
    z0 = np.clip(np.floor(z - (depth - 1) / 2), 0, N_IMAGES - depth).astype(np.int32)
    bbox = np.stack([x0, x0 + extent, y0, y0 + extent, z0, z0 + depth], axis=1).astype(
        np.int32
    )
    pixels = []
    for row in range(N_SPOTS):
        shape = (int(depth[row]), int(extent[row]), int(extent[row]))
        mask = spot_mask(rng, shape)
        data = np.where(
            mask > 0, rng.poisson(200, shape), rng.poisson(2, shape)
        ).astype(np.float32)
        pixels.append((data, mask, np.zeros(shape, np.float32)))
    return real_space, miller, x, y, z, bbox, pixels


def main(output: Path) -> None:
    rng = np.random.default_rng(SEED)
    real_space, miller, x, y, z, bbox, pixels = simulate(rng)
    indexed = rng.random(N_SPOTS) < 0.9
    signal = np.array(
        [int((mask == VALID_FOREGROUND).sum()) for _, mask, _ in pixels], dtype=np.int32
    )
    table = ReflectionTable(nrows=N_SPOTS, identifiers={0: IDENTIFIER}, version=2)
    table.columns["bbox"] = bbox
    table.columns["flags"] = np.where(indexed, STRONG | INDEXED, STRONG).astype(
        np.uint64
    )
    table.columns["id"] = np.zeros(N_SPOTS, np.int32)
    table.columns["intensity.sum.value"] = np.array(
        [float(data[mask > 0].sum()) for data, mask, _ in pixels]
    )
    table.columns["miller_index"] = np.where(indexed[:, None], miller, 0).astype(
        np.int32
    )
    table.columns["n_signal"] = signal
    table.columns["panel"] = np.zeros(N_SPOTS, np.uint64)
    table.columns["xyzobs.px.value"] = np.stack([x, y, z], axis=1)
    table.columns["xyzobs.px.variance"] = np.full((N_SPOTS, 3), 0.25)
    blob = encode_shoeboxes(np.zeros(N_SPOTS), bbox, pixels, mask_kind=2)
    table.shoeboxes = ShoeboxColumn.from_blob(blob, N_SPOTS)
    table.shoebox_column_name = "shoebox"
    table.column_order = sorted([*table.columns, "shoebox"])
    output.mkdir(parents=True, exist_ok=True)
    write_reflections(table, output / "indexed.refl")
    (output / "indexed.expt").write_text(
        json.dumps(experiment_list(real_space), indent=2) + "\n"
    )
    print(
        f"wrote {output / 'indexed.expt'} and {output / 'indexed.refl'} ({N_SPOTS} spots, {int(indexed.sum())} indexed)"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("data"))
