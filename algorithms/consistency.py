"""Does a reflection table fit the experiments it is paired with?

A table without experiment identifiers (written before DIALS 2.0, or by hand) can only
be paired with an experiment list by position, so nothing says that the list is the
right one: measured against another dataset's detector, its resolutions are simply
wrong. What can be checked without the images is checked here: every row's panel
exists in its experiment's detector, its observed centroid (``xyzobs.px.value``) lies
inside that panel's ``image_size``, and its z (the frame index, counted from
``image_range[0] - 1``: doc/dials_facts.md §9) inside the scan's range. Rows without
an experiment (id < 0), and unobserved rows (centroid (0, 0, 0) or not finite), are
not checked; z is not checked for experiments without a scan (stills). A few spots
off their panel or scan are allowed (up to ``MAX_FRACTION_OUTSIDE`` of the observed
ones): ``dials.integrate`` keeps partial reflections at the edges, and the ssx_CuNiR
``integrated.refl`` has 33 of 5203 centroids up to 15.5 px off its own panels; another
detector's or scan's table lies outside by the majority (2022 of 2188 spots of the
centroid_test_data ``integrated.refl`` against the I23 detector).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..formats.experiments import Experiment

MAX_FRACTION_OUTSIDE = 0.1
_ADVICE = "pass the .expt file written together with this table"


def _experiment_arrays(experiments: Sequence[Experiment]):
    """Per experiment: its panels' first index into the flat panel arrays, its panel
    count, and its scan's z range (NaN without a scan); per panel: its size. Shared
    detectors are described once."""
    first, count, z_low, z_high = [], [], [], []
    sizes: list[tuple[int, int]] = []
    seen: dict[int, int] = {}
    for experiment in experiments:
        detector = experiment.detector
        panels = detector.panels if detector is not None else ()
        if id(detector) not in seen:
            seen[id(detector)] = len(sizes)
            sizes.extend(panel.image_size for panel in panels)
        first.append(seen[id(detector)])
        count.append(len(panels))
        scan = experiment.scan
        z_low.append(np.nan if scan is None else scan.image_range[0] - 1)
        z_high.append(np.nan if scan is None else scan.image_range[1])
    size = np.array(sizes, dtype=np.float64).reshape(-1, 2)
    return (
        np.array(first, np.int64),
        np.array(count, np.int64),
        np.array(z_low, np.float64),
        np.array(z_high, np.float64),
        size,
    )


def table_mismatch(
    ids: np.ndarray,
    panel: np.ndarray | None,
    xyz_px: np.ndarray | None,
    experiments: Sequence[Experiment],
    table_name: str,
    experiments_name: str,
    offset: int = 0,
) -> str | None:
    """Why a table cannot belong to ``experiments``, in one sentence, or None.

    Parameters
    ----------
    ids : numpy.ndarray
        The table's ``id`` column: row id k refers to ``experiments[offset + k]``.
    panel : numpy.ndarray or None
        The ``panel`` column (None: every row on panel 0).
    xyz_px : numpy.ndarray or None
        The ``xyzobs.px.value`` column, shape (n, 3) (None: positions not checked).
    experiments : sequence of Experiment
        The experiments the rows are paired with.
    table_name, experiments_name : str
        The files, for the sentence.
    offset : int
        Where the table's experiments start in ``experiments`` (positional pairing
        with several lists).

    Returns
    -------
    str or None
        The first problem found (experiment count, panel, position, image), or None.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    rows = ids >= 0
    where = f"{table_name} does not fit {experiments_name}"
    n_experiments = len(experiments) - offset
    if rows.any() and ids[rows].max() >= n_experiments:
        return (
            f"{where}: it refers to experiment id {int(ids[rows].max())} but the list "
            f"has {max(n_experiments, 0)} experiment(s): {_ADVICE}"
        )
    first, count, z_low, z_high, size = _experiment_arrays(experiments)
    experiment = ids[rows] + offset
    panels = (
        np.zeros(len(experiment), np.int64)
        if panel is None
        else np.asarray(panel, dtype=np.int64).ravel()[rows]
    )
    bad_panel = (panels < 0) | (panels >= count[experiment])
    if bad_panel.any():
        k = int(np.argmax(bad_panel))
        return (
            f"{where}: it has spots on panel {int(panels[k])} but that detector has "
            f"{int(count[experiment[k]])} panel(s): {_ADVICE}"
        )
    if xyz_px is None:
        return None
    xyz = np.asarray(xyz_px, dtype=np.float64).reshape(-1, 3)[rows]
    observed = np.isfinite(xyz).all(axis=1) & (xyz != 0).any(axis=1)
    extent = size[first[experiment] + panels] if len(size) else np.zeros((0, 2))
    outside = observed & (
        (xyz[:, 0] < 0)
        | (xyz[:, 1] < 0)
        | (xyz[:, 0] > extent[:, 0])
        | (xyz[:, 1] > extent[:, 1])
    )
    if outside.sum() > MAX_FRACTION_OUTSIDE * observed.sum():
        k = int(np.argmax(outside))
        return (
            f"{where}: {int(outside.sum())} of {int(observed.sum())} spots lie outside "
            f"their panels (e.g. x, y = {xyz[k, 0]:.1f}, {xyz[k, 1]:.1f} px on panel "
            f"{int(panels[k])} of {int(extent[k, 0])} x {int(extent[k, 1])} pixels): "
            f"{_ADVICE}"
        )
    low, high = z_low[experiment], z_high[experiment]
    off_scan = observed & ~np.isnan(low) & ((xyz[:, 2] < low) | (xyz[:, 2] > high))
    if off_scan.sum() > MAX_FRACTION_OUTSIDE * observed.sum():
        k = int(np.argmax(off_scan))
        return (
            f"{where}: {int(off_scan.sum())} of {int(observed.sum())} spots lie outside "
            f"the scan (e.g. z = {xyz[k, 2]:.1f}, on image "
            f"{int(np.floor(xyz[k, 2])) + 1}, but the scan holds "
            f"images {int(low[k]) + 1} to {int(high[k])}): {_ADVICE}"
        )
    return None
