"""Where reflections are: d-spacing from observed centroids, image numbers from z.

All per-row work is a gather from small per-experiment / per-panel tables, so thousands
of experiments cost no more than one.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..formats.experiments import Experiment
from ..jit import njit
from ._memo import by_identity
from .spot_shape import beam_centres_px


@njit
def _panel_rows(experiment, panel, starts, n_panels, table_starts, out):
    """Row ``table_starts[e] + p`` of a per-panel table for the reflection of
    experiment e, panel p; -1 where the experiment, its detector or the panel is
    unknown (the one statement of that rule: every per-reflection lookup takes its
    rows from here). The rule is written out in the loop: a helper taking the arrays
    would cost reference counting on every row."""
    for i in range(out.size):
        e, p = experiment[i], panel[i]
        known = 0 <= e < starts.size and starts[e] >= 0 and 0 <= p < n_panels[e]
        out[i] = table_starts[e] + p if known else -1


@njit(error_model="numpy")  # x/0 gives inf or NaN, as numpy would
def _d_spacing_kernel(
    xy,
    take,
    experiment,
    rows,
    origins,
    fasts,
    slows,
    unit_s0,
    wavenumber,
    wavelengths,
    out,
):
    for i in range(out.size):
        e, r = experiment[i], rows[i]
        if r < 0:
            out[i] = np.nan
            continue
        # |s0| = 1/λ: the beam's, or (a polychromatic beam) the reflection's own.
        k = wavenumber[e]
        if k != k and wavelengths.size:
            wavelength = wavelengths[take[i]]
            k = 1.0 / wavelength if wavelength > 0 else np.nan
        x, y = xy[take[i], 0], xy[take[i], 1]
        lx = origins[r, 0] + x * fasts[r, 0] + y * slows[r, 0]
        ly = origins[r, 1] + x * fasts[r, 1] + y * slows[r, 1]
        lz = origins[r, 2] + x * fasts[r, 2] + y * slows[r, 2]
        length = math.sqrt(lx * lx + ly * ly + lz * lz)
        dx, dy, dz = (
            (lx / length - unit_s0[e, 0]) * k,
            (ly / length - unit_s0[e, 1]) * k,
            (lz / length - unit_s0[e, 2]) * k,
        )
        q = math.sqrt(dx * dx + dy * dy + dz * dz)
        out[i] = 1.0 / q if q != 0 else np.inf  # NaN positions stay NaN, as in numpy


@njit
def _gather_rows(rows, table, out):
    """Row ``rows[i]`` of ``table`` for each reflection; NaN where it is -1."""
    for i in range(out.shape[0]):
        row = rows[i]
        for c in range(out.shape[1]):
            out[i, c] = table[row, c] if 0 <= row < table.shape[0] else np.nan


# Per-reflection wavelength columns of DIALS's Laue and time-of-flight tables, in order
# of preference: the observed wavelength, then the predicted one (``wavelength_cal``).
WAVELENGTH_COLUMNS = ("wavelength", "wavelength_cal")


_NO_PANELS = (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 2)))


@by_identity
def _panel_table(detector) -> tuple[np.ndarray, ...]:
    """A detector's panel origins, fast and slow axes and pixel sizes, one row per
    panel (shared by every file with this detector object: never written)."""
    panels = detector.panels
    return (
        np.array([p.origin for p in panels], dtype=np.float64).reshape(-1, 3),
        np.array([p.fast_axis for p in panels], dtype=np.float64).reshape(-1, 3),
        np.array([p.slow_axis for p in panels], dtype=np.float64).reshape(-1, 3),
        np.array([p.pixel_size for p in panels], dtype=np.float64).reshape(-1, 2),
    )


def _beam_row(beam) -> tuple:
    """s0, its unit vector, 1/λ and whether polychromatic; NaN for no beam."""
    if beam is None:
        return (np.nan,) * 3, (np.nan,) * 3, np.nan, False
    return _known_beam_row(beam)


@by_identity
def _known_beam_row(beam) -> tuple:
    wavenumber = 1.0 / beam.wavelength if beam.wavelength is not None else np.nan
    return beam.s0, beam.unit_s0, wavenumber, beam.polychromatic


# Files of one run share their beam and detector objects (formats.experiments): their
# beam centres are solved once for all of them.
_shared_beam_centres = by_identity(beam_centres_px)


MAX_IMAGE_NUMBER = 2**31 - 2  # beyond, not an image of any real scan (int32)


@by_identity
def stacked_panels(*detectors) -> tuple:
    """The panels of ``detectors`` in one set of tables, for the compiled kernels: each
    distinct detector (object) stacked once. The same for every list of the same
    detector objects (the stills of a run), so made once and shared: never written
    (left writable all the same, as the kernels reading them are compiled for).

    Parameters
    ----------
    *detectors : formats.experiments.Detector or None
        One per experiment.

    Returns
    -------
    tuple
        ``(origin, fast, slow, pixel_size)`` (one row per stacked panel: mm, mm/px),
        each detector's first row in them (-1 for None) and its number of panels (0
        for None), as int64 arrays.
    """
    panel_tables, starts, n_panels = [], [], []
    position, seen = 0, {}
    for detector in detectors:
        n_panels.append(len(detector) if detector is not None else 0)
        if detector is None:
            starts.append(-1)
            continue
        if id(detector) not in seen:  # shared detectors are stacked once
            seen[id(detector)] = position
            panel_tables.append(_panel_table(detector))
            position += len(detector)
        starts.append(seen[id(detector)])
    panels = tuple(np.concatenate(parts) for parts in zip(_NO_PANELS, *panel_tables))
    return panels, np.array(starts, dtype=np.int64), np.array(n_panels, dtype=np.int64)


@by_identity
def _model_tables(*detectors_and_beams) -> tuple:
    """The per-panel and per-experiment tables of experiments given by their detectors
    and beams, alternately (the panels as :func:`stacked_panels`). The beam's direction
    and 1/λ are apart: a polychromatic beam (Laue, neutron time-of-flight) has a
    direction but 1/λ NaN, each reflection having its own.
    """
    detectors, beams = detectors_and_beams[0::2], detectors_and_beams[1::2]
    panels, starts, n_panels = stacked_panels(*detectors)
    rows = [_beam_row(beam) for beam in beams]
    beam_tables = (
        np.array([b[0] for b in rows]).reshape(-1, 3),
        np.array([b[1] for b in rows]).reshape(-1, 3),
        np.array([b[2] for b in rows], dtype=np.float64),
        np.array([b[3] for b in rows], dtype=bool),
    )
    return panels, starts, n_panels, beam_tables


def first_panel_type(experiments: Sequence[Experiment]) -> str | None:
    """The type of the first experiment's first panel, where DIALS's Auto
    min_spot_size reads it (``SENSOR_PAD`` for pixel-array detectors); None without a
    detector.

    Parameters
    ----------
    experiments : sequence of Experiment
        The experiments of a table, in order.
    """
    for experiment in experiments[:1]:
        detector = experiment.detector
        if detector is not None and detector.panels:
            return detector.panels[0].sensor_type
    return None


class ExperimentGeometry:
    """Per-experiment and per-panel tables for a list of experiments, built once (not per
    reflection file: a serial-crystallography run has thousands of experiments)."""

    def __init__(self, experiments: Sequence[Experiment]):
        self.experiments = list(experiments)
        self.identifiers = [e.identifier for e in self.experiments]
        self.index: dict[str, int] = {}
        for number, identifier in enumerate(self.identifiers):
            if identifier:
                self.index.setdefault(identifier, number)
        (
            (self.origins, self.fasts, self.slows, self.pixel_sizes),
            self.starts,
            self.n_panels,
            (self.s0, self.unit_s0, self.wavenumber, self.polychromatic),
        ) = _model_tables(*[m for e in self.experiments for m in (e.detector, e.beam)])
        self._beam_centres: np.ndarray | None = None
        self._beam_centre_starts = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.experiments)

    def panel_rows(self, experiment_index: np.ndarray, panel: np.ndarray) -> np.ndarray:
        """Row of each reflection's panel in the stacked tables, or -1 where unknown.

        Parameters
        ----------
        experiment_index : numpy.ndarray
            Each reflection's experiment (an index into the experiment list).
        panel : numpy.ndarray
            Each reflection's panel number within its experiment's detector.

        Returns
        -------
        numpy.ndarray
            int64, one row per reflection; -1 where the experiment, its detector or the
            panel is unknown.
        """
        return self._rows_in(self.starts, experiment_index, panel)

    def _rows_in(
        self, table_starts: np.ndarray, experiment_index: np.ndarray, panel: np.ndarray
    ) -> np.ndarray:
        """Each reflection's row in a per-panel table whose block for experiment e
        starts at ``table_starts[e]``; -1 where unknown."""
        experiment_index = np.asarray(experiment_index, dtype=np.int64)
        panel = np.asarray(panel, dtype=np.int64)
        rows = np.empty(experiment_index.shape, dtype=np.int64)
        _panel_rows(
            np.ascontiguousarray(experiment_index).reshape(-1),
            np.ascontiguousarray(panel).reshape(-1),
            self.starts,
            self.n_panels,
            table_starts,
            rows.reshape(-1),
        )
        return rows

    def beam_centres_px(
        self, experiment_index: np.ndarray, panel: np.ndarray
    ) -> np.ndarray:
        """Each reflection's beam centre on its own panel, (n, 2) pixels: where the
        incident beam's line meets the panel's plane. NaN where unknown.

        Parameters
        ----------
        experiment_index : numpy.ndarray
            Each reflection's experiment (an index into the experiment list).
        panel : numpy.ndarray
            Each reflection's panel number.

        Returns
        -------
        numpy.ndarray
            float64, shape (n, 2): (x, y) in pixels on the reflection's panel.
        """
        centres, rows = self.beam_centre_rows(experiment_index, panel)
        result = np.empty((len(rows), 2))
        _gather_rows(rows, centres, result)
        return result

    def beam_centre_rows(
        self, experiment_index: np.ndarray, panel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The beam centre of every panel of every experiment, and each reflection's
        row among them: for a kernel that reads the centres in place instead of a
        gathered copy (see :meth:`beam_centres_px`).

        Parameters
        ----------
        experiment_index, panel : numpy.ndarray
            As for :meth:`beam_centres_px`.

        Returns
        -------
        tuple of numpy.ndarray
            (m, 2) float64 centres in pixels (NaN without a beam), and int64 per
            reflection its row in them, -1 where unknown.
        """
        if self._beam_centres is None:
            self._beam_centres, self._beam_centre_starts = self._beam_centre_table()
        rows = self._rows_in(self._beam_centre_starts, experiment_index, panel)
        return self._beam_centres, rows

    def _beam_centre_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Beam centres of every experiment's panels, one block per experiment with a
        detector (NaN without a beam); the same detector and beam direction are
        solved once (thousands of stills)."""
        blocks, starts, solved, by_models = [], [], {}, {}
        position = 0
        for experiment in self.experiments:
            starts.append(position)
            if experiment.detector is None:
                continue
            if experiment.beam is None:
                blocks.append(np.full((len(experiment.detector), 2), np.nan))
                position += len(experiment.detector)
                continue
            models = (id(experiment.detector), id(experiment.beam))
            if models not in by_models:  # a beam object met before: its direction too
                direction = experiment.beam.direction
                key = (id(experiment.detector), tuple(np.round(direction, 12)))
                if key not in solved:
                    solved[key] = _shared_beam_centres(
                        experiment.beam, experiment.detector
                    )
                by_models[models] = solved[key]
            blocks.append(by_models[models])
            position += len(by_models[models])
        table = np.concatenate(blocks) if blocks else np.zeros((0, 2))
        return table, np.array(starts, dtype=np.int64)

    def pixels_to_millimetres(
        self, xy_px: np.ndarray, experiment_index: np.ndarray, panel: np.ndarray
    ) -> np.ndarray:
        """Pixel (x, y) to panel millimetres with the plain pixel size (no parallax
        correction: well under a pixel, negligible for a d-spacing). NaN where unknown.

        Parameters
        ----------
        xy_px : numpy.ndarray
            Shape (n, 2) or more columns: each reflection's (x, y[, z]) in pixels; only x
            and y are read.
        experiment_index : numpy.ndarray
            Each reflection's experiment (an index into the experiment list).
        panel : numpy.ndarray
            Each reflection's panel number.

        Returns
        -------
        numpy.ndarray
            float64, shape (n, 2): (x, y) in millimetres on the panel.
        """
        rows = self.panel_rows(experiment_index, panel)
        pixel_sizes = np.empty((len(rows), 2))
        _gather_rows(rows, self.pixel_sizes, pixel_sizes)  # NaN where unknown
        return np.asarray(xy_px, dtype=np.float64)[:, :2] * pixel_sizes

    def d_spacings(
        self,
        xy_mm: np.ndarray,
        experiment_index: np.ndarray,
        panel: np.ndarray,
        take: np.ndarray | None = None,
        wavelengths: np.ndarray | None = None,
    ) -> np.ndarray:
        """d (Å) of each reflection from its observed position on its panel: the scattered
        beam s1 points from the sample to the spot, |s1| = |s0| = 1/λ, and
        d = 1/|s1 - s0|. NaN where the experiment, panel or beam is unknown.

        ``xy_mm`` holds each reflection's (x, y[, z]) in millimetres or, with ``take``,
        reflection i is row ``take[i]`` of it (no gathered copy of a big column).
        A polychromatic beam has no single λ: reflection i then uses
        ``wavelengths[take[i]]`` (Å), and d is NaN without one.

        Parameters
        ----------
        xy_mm : numpy.ndarray
            Shape (m, 2) or (m, 3): observed positions in millimetres on each panel.
        experiment_index : numpy.ndarray
            Each reflection's experiment (an index into the experiment list).
        panel : numpy.ndarray
            Each reflection's panel number.
        take : numpy.ndarray, optional
            The row of ``xy_mm`` (and of the wavelengths) for each reflection; None means
            row i for reflection i.
        wavelengths : numpy.ndarray, optional
            Wavelength per row of ``xy_mm`` (Å), used for polychromatic beams only.

        Returns
        -------
        numpy.ndarray
            float64, d in Å per reflection.

        Raises
        ------
        ValueError
            Where ``wavelengths`` is given but shorter than ``xy_mm``.
        """
        wavelengths = (
            np.zeros(0)
            if wavelengths is None
            else np.ascontiguousarray(wavelengths, dtype=np.float64)
        )
        experiment_index = np.asarray(experiment_index, dtype=np.int64)
        panel = np.asarray(panel, dtype=np.int64)
        xy_mm = np.asarray(xy_mm, dtype=np.float64)
        if wavelengths.size and wavelengths.size < len(xy_mm):
            raise ValueError("a wavelength is needed for every row of xy_mm")
        take = (
            np.arange(len(experiment_index))
            if take is None
            else np.asarray(take, dtype=np.int64)
        )
        d = np.empty(len(take))
        if len(take):
            _d_spacing_kernel(
                np.ascontiguousarray(xy_mm),
                take,
                experiment_index,
                self._rows_in(self.starts, experiment_index, panel),
                self.origins,
                self.fasts,
                self.slows,
                self.unit_s0,
                self.wavenumber,
                wavelengths,
                d,
            )
        return d


def image_numbers(z_px: np.ndarray) -> np.ndarray:
    """Image number of each observed centroid.

    ``z`` counts frames from the start of the scan's array range, which begins one
    before the scan's first image (doc/dials_facts.md §9): the image number is
    ``floor(z) + 1`` whatever the first image (a still of image 17000 has z = 16999.5).

    Parameters
    ----------
    z_px : numpy.ndarray
        The z of ``xyzobs.px.value``.

    Returns
    -------
    numpy.ndarray
        int64 image numbers; -1 where z is not a finite frame number.
    """
    z = np.asarray(z_px, dtype=np.float64)
    image = np.empty(z.shape, dtype=np.int64)
    _image_numbers(np.ascontiguousarray(z).reshape(-1), image.reshape(-1))
    return image


@njit
def _image_numbers(z, out):
    """:func:`image_numbers` in one pass, without a temporary per step."""
    for i in range(out.size):
        usable = abs(z[i]) < MAX_IMAGE_NUMBER  # False for NaN and infinities
        out[i] = np.int64(math.floor(z[i])) + 1 if usable else -1


def shell_edges(d: np.ndarray, n_shells: int) -> np.ndarray:
    """The ``n_shells + 1`` edges, in 1/d², of shells of equal width from the smallest to
    the largest finite 1/d² (none where no d is finite).

    Parameters
    ----------
    d : numpy.ndarray
        d-spacings in Å; values that are not finite and positive are ignored.
    n_shells : int
        The number of resolution shells.

    Returns
    -------
    numpy.ndarray
        float64, ascending edges in 1/d² (Å⁻²); empty where no d is usable.
    """
    d = np.ascontiguousarray(d, dtype=np.float64).reshape(-1)
    low, high = _d_star_sq_range(d)
    if low > high:
        return np.zeros(0)
    if high == low:
        high = low * (1 + 1e-9) + 1e-12
    return np.linspace(low, high, n_shells + 1)


@njit(error_model="numpy")  # 1/0 gives inf, as numpy would
def _usable_d_star_sq(d):
    """1/d² as numpy's ``1.0 / d**2`` gives it (inf where d² underflows), or NaN where
    d is not finite and positive."""
    return 1.0 / (d * d) if d > 0.0 and d < np.inf else np.nan


@njit
def _d_star_sq_range(d):
    """The smallest and largest usable 1/d² (inf and -inf where there is none)."""
    low, high = np.inf, -np.inf
    for i in range(d.size):
        value = _usable_d_star_sq(d[i])
        if value == value:
            low, high = min(low, value), max(high, value)
    return low, high


def shell_numbers(d: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The shell (see shell_edges) of each d; -1 where d is not finite and positive. As
    small an integer type as the number of shells allows: one of these per row.

    Parameters
    ----------
    d : numpy.ndarray
        d-spacings in Å.
    edges : numpy.ndarray
        The shell edges in 1/d² (Å⁻²) from :func:`shell_edges`; empty gives -1
        everywhere.

    Returns
    -------
    numpy.ndarray
        int16 (int64 for very many shells), the shell number per d, 0 being the
        lowest resolution; values beyond the edges go to the first or last shell.
    """
    d = np.ascontiguousarray(d, dtype=np.float64)
    dtype = np.int16 if len(edges) <= np.iinfo(np.int16).max else np.int64
    shell = np.full(d.shape, -1, dtype=dtype)
    if len(edges):
        edges = np.ascontiguousarray(edges, dtype=np.float64)
        _shell_numbers(d.reshape(-1), edges, shell.reshape(-1))
    return shell


@njit
def _shell_numbers(d, edges, out):
    """Per usable d, the number of edges at or below its 1/d², less one
    (``np.searchsorted(edges, value, side="right") - 1``, by bisection), clipped to
    the shells."""
    last = edges.size - 2
    for i in range(out.size):
        value = _usable_d_star_sq(d[i])
        if value != value:
            continue  # stays -1
        low, high = 0, edges.size
        while low < high:
            middle = (low + high) // 2
            if edges[middle] <= value:
                low = middle + 1
            else:
                high = middle
        out[i] = min(max(low - 1, 0), last)
