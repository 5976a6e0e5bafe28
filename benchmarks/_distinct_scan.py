"""A million distinct reflections of one rotation scan, for the benchmarks whose real
1M-row input (a real file's 208 rows repeated) holds a few hundred distinct ones.

The profile model re-predicts and matches each reference reflection and sums its
pixels: on repeated rows it matches a few hundred, on a refined scan of a million
rows up to its cap of 100,000. No real DIALS file of that size is at hand, so one is
assembled from real parts. The models are centroid_test_data's (a real PILATUS 6M,
beam and goniometer; 0.2 degree images), with its scan stretched to a full turn and
its crystal's cell scaled up so that a million reflections are predicted in it (with
the package's own predictor). Each reflection gets the shoebox of a real indexed spot
of that file (drawn at random, its record's bytes as DIALS wrote them), moved by whole
pixels and images to its predicted position, with the other columns of that spot. So
the pixels, masks and box sizes are real, the positions are a model's, and every
reference row (77%: the others carry the flags of spots refinement rejected) is a
distinct (h, k, l, entering) that the re-prediction matches. The sigmas found on
it are not a measurement of anything (a spot sits up to half a pixel and half an image
off its prediction); its purpose is the cost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from _common import DATA, SHARED

from dials_spot_size_analysis.algorithms.prediction import predict_all
from dials_spot_size_analysis.formats import (
    ReflectionTable,
    ShoeboxColumn,
    read_reflections,
    write_reflections,
)
from dials_spot_size_analysis.formats.experiments import parse_experiments

SOURCE = SHARED / "data" / "centroid_test_data"
IMAGES = 1800  # 360 degrees of 0.2
CELL_SCALE = 1.38  # the cell's edges: about a million predictions in the turn
SEED = 20261204
HEADER_BYTES = 29  # a shoebox record's panel, bbox and kind of mask


def _document() -> dict:
    document = json.loads((SOURCE / "indexed.expt").read_text())
    scan = document["scan"][0]
    scan["image_range"] = [1, IMAGES]
    scan["exposure_time"] = [0.2] * IMAGES
    scan["epochs"] = [0.0] * IMAGES
    crystal = document["crystal"][0]
    for axis in ("real_space_a", "real_space_b", "real_space_c"):
        crystal[axis] = [CELL_SCALE * v for v in crystal[axis]]
    crystal.pop("B_covariance", None)
    return document


def distinct_scan() -> tuple[Path, Path]:
    """(experiments, reflections) of the assembled scan, made once, then reused."""
    expt = DATA / f"distinct_scan_{IMAGES}.expt"
    refl = DATA / f"distinct_scan_{IMAGES}.refl"
    if expt.exists() and refl.exists():
        return expt, refl
    DATA.mkdir(parents=True, exist_ok=True)
    document = _document()
    experiment = parse_experiments(document)[0]
    hkl, entering, predicted = predict_all(experiment, padding_deg=0.0)
    source = read_reflections(SOURCE / "indexed.refl")
    boxes = source.shoeboxes
    templates = np.flatnonzero(((source["flags"] & 4) != 0) & (boxes.present != 0))
    rng = np.random.default_rng(SEED)
    template = templates[rng.integers(0, len(templates), len(hkl))]
    shift = np.rint(predicted.xyzcal_px - source["xyzcal.px"][template]).astype(int)
    bbox = boxes.bbox[template].astype(np.int64) + np.repeat(shift, 2, axis=1)
    width, height = experiment.detector.panels[0].image_size
    inside = (
        (bbox[:, 0] >= 0)
        & (bbox[:, 1] <= width)
        & (bbox[:, 2] >= 0)
        & (bbox[:, 3] <= height)
        & (bbox[:, 4] >= 0)
        & (bbox[:, 5] <= IMAGES)
    )
    keep = np.flatnonzero(inside)
    keep = keep[np.lexsort((bbox[keep, 2], bbox[keep, 4]))]  # by image, as found
    template, shift, bbox = template[keep], shift[keep], bbox[keep]
    n = len(keep)
    table = ReflectionTable(nrows=n, identifiers=dict(source.identifiers), version=2)
    for name, column in source.columns.items():
        table.columns[name] = column[template]
    pixel = np.asarray(experiment.detector.panels[0].pixel_size)
    width_rad = np.radians(document["scan"][0]["oscillation"][1])
    in_mm = np.concatenate([pixel, [width_rad]])
    table.columns.update(
        {
            "bbox": bbox.astype(np.int32),
            "miller_index": hkl[keep].astype(np.int32),
            "entering": entering[keep].astype(bool),
            "s1": predicted.s1[keep],
            "xyzcal.px": predicted.xyzcal_px[keep],
            "xyzcal.mm": predicted.xyzcal_mm[keep],
            "xyzobs.px.value": source["xyzobs.px.value"][template] + shift,
            "xyzobs.mm.value": source["xyzobs.mm.value"][template] + shift * in_mm,
        }
    )
    table.shoeboxes = ShoeboxColumn.from_blob(_records(boxes, template, bbox), n)
    table.shoebox_column_name = source.shoebox_column_name
    table.column_order = list(source.column_order)
    partial = refl.with_suffix(".partial")
    write_reflections(table, partial)
    expt.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(partial, refl)  # an interrupted build leaves no file that looks finished
    return expt, refl


def _records(boxes: ShoeboxColumn, template: np.ndarray, bbox: np.ndarray):
    """The shoebox column: each row the bytes of its template's record, its bbox
    replaced."""
    start = boxes.data_offset - HEADER_BYTES
    end = np.append(start[1:], boxes.blob.size)  # records follow one another
    length = (end - start)[template]
    offset = np.concatenate([[0], np.cumsum(length)])
    blob = np.empty(int(offset[-1]), np.uint8)
    for t in np.unique(template):
        rows = np.flatnonzero(template == t)
        record = boxes.blob[start[t] : end[t]]
        tiled = np.tile(record, (len(rows), 1))
        tiled[:, 4:28] = bbox[rows].astype("<i4").view(np.uint8).reshape(-1, 24)
        blob[offset[rows, None] + np.arange(len(record))] = tiled
    return blob


if __name__ == "__main__":
    for path in distinct_scan():
        print(path, f"{path.stat().st_size / 1e6:,.0f} MB")
