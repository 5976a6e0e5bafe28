"""Where reflections are: d-spacing from observed centroids, image numbers from z.

All per-row work is a gather from small per-experiment / per-panel tables, so thousands
of experiments cost no more than one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..engine import resolve_engine
from ..formats.experiments import Experiment


def _panel_tables(experiments: Sequence[Experiment]):
    """Stacked origin, fast, slow, pixel size of every experiment's panels, and where each
    experiment's panels start in the stack."""
    origins, fasts, slows, pixel_sizes, starts = [], [], [], [], []
    seen: dict[int, int] = {}
    for experiment in experiments:
        detector = experiment.detector
        if detector is None:
            starts.append(-1)
            continue
        if id(detector) not in seen:
            seen[id(detector)] = len(origins)
            for panel in detector.panels:
                origins.append(panel.origin)
                fasts.append(panel.fast_axis)
                slows.append(panel.slow_axis)
                pixel_sizes.append(panel.pixel_size)
        starts.append(seen[id(detector)])
    empty = np.zeros((0, 3))
    return (
        np.array(origins) if origins else empty,
        np.array(fasts) if fasts else empty,
        np.array(slows) if slows else empty,
        np.array(pixel_sizes) if pixel_sizes else np.zeros((0, 2)),
        np.array(starts, dtype=np.int64),
    )


def _panel_rows(experiment_index, panel, experiments):
    """Row index into the stacked panel tables, or -1 where geometry is unknown."""
    origins, fasts, slows, pixel_sizes, starts = _panel_tables(experiments)
    n_panels = np.array([len(e.detector) if e.detector is not None else 0 for e in experiments], dtype=np.int64)
    known = (experiment_index >= 0) & (experiment_index < len(experiments))
    safe_experiment = np.where(known, experiment_index, 0)
    panel = np.asarray(panel, dtype=np.int64)
    if len(experiments):
        known &= (starts[safe_experiment] >= 0) & (panel >= 0) & (panel < n_panels[safe_experiment])
    rows = np.where(known, starts[safe_experiment] + panel if len(experiments) else -1, -1)
    return rows, (origins, fasts, slows, pixel_sizes)


def pixels_to_millimetres(xy_px: np.ndarray, experiment_index: np.ndarray, panel: np.ndarray, experiments: Sequence[Experiment]) -> np.ndarray:
    """Pixel (x, y) to panel millimetres with the plain pixel size (no parallax
    correction: well under a pixel, negligible for a d-spacing). NaN where unknown."""
    rows, (_, _, _, pixel_sizes) = _panel_rows(np.asarray(experiment_index), panel, experiments)
    result = np.full((len(rows), 2), np.nan)
    known = rows >= 0
    result[known] = np.asarray(xy_px, dtype=np.float64)[known, :2] * pixel_sizes[rows[known]]
    return result


def observed_d_spacings(
    xy_mm: np.ndarray, experiment_index: np.ndarray, panel: np.ndarray, experiments: Sequence[Experiment], engine: str = "auto"
) -> np.ndarray:
    """d (Å) of each reflection from its observed position on its panel: the scattered beam
    s1 points from the sample to the spot, |s1| = |s0| = 1/λ, and d = 1/|s1 - s0|.
    NaN where the experiment, panel or beam is unknown."""
    experiment_index = np.asarray(experiment_index, dtype=np.int64)
    rows, (origins, fasts, slows, _) = _panel_rows(experiment_index, panel, experiments)
    s0 = np.array([e.beam.s0 if e.beam is not None else (np.nan,) * 3 for e in experiments]).reshape(-1, 3)
    if resolve_engine(engine) == "numba" and len(rows):
        from ._geometry_numba import d_spacings

        d = np.empty(len(rows))
        d_spacings(np.ascontiguousarray(xy_mm, dtype=np.float64)[:, :2], rows, experiment_index, origins, fasts, slows, s0, d)
        return d
    d = np.full(len(rows), np.nan)
    known = rows >= 0
    if not known.any():
        return d
    xy = np.asarray(xy_mm, dtype=np.float64)[known]
    r = rows[known]
    lab = origins[r] + xy[:, :1] * fasts[r] + xy[:, 1:2] * slows[r]
    beam = s0[experiment_index[known]]
    s1 = lab / np.linalg.norm(lab, axis=1)[:, None] * np.linalg.norm(beam, axis=1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        d[known] = 1.0 / np.linalg.norm(s1 - beam, axis=1)
    return d


def image_numbers(z_px: np.ndarray, experiment_index: np.ndarray, experiments: Sequence[Experiment]) -> np.ndarray:
    """Image number of each reflection's observed centroid: the scan's first image plus
    the whole frames in z (z runs from 0 at the start of the first image). Without a
    scan, images count from 1."""
    first = np.array([e.scan.image_range[0] if e.scan is not None else 1 for e in experiments] or [1], dtype=np.int64)
    experiment_index = np.asarray(experiment_index, dtype=np.int64)
    safe = np.where((experiment_index >= 0) & (experiment_index < len(first)), experiment_index, 0)
    return first[safe] + np.floor(np.asarray(z_px, dtype=np.float64)).astype(np.int64)


def resolution_shells(d: np.ndarray, n_shells: int) -> tuple[np.ndarray, np.ndarray]:
    """Shell index of each d (-1 for NaN) and the shell edges in d, for ``n_shells`` shells
    of equal width in 1/d² (equal width in reciprocal space squared, as DIALS plots)."""
    d = np.asarray(d, dtype=np.float64)
    finite = np.isfinite(d) & (d > 0)
    shell = np.full(d.shape, -1, dtype=np.int64)
    if not finite.any():
        return shell, np.zeros(0)
    d_star_sq = 1.0 / d[finite] ** 2
    low, high = d_star_sq.min(), d_star_sq.max()
    if high == low:
        high = low * (1 + 1e-9) + 1e-12
    edges = np.linspace(low, high, n_shells + 1)
    shell[finite] = np.clip(np.searchsorted(edges, d_star_sq, side="right") - 1, 0, n_shells - 1)
    return shell, 1.0 / np.sqrt(edges)
