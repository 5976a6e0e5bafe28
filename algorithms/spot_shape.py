"""The shape of every spot, measured from its shoebox pixels, and summaries of it.

A spot's size is the count of its shoebox pixels whose mask has every bit of a mask code
(``(mask & code) == code``, DIALS's ``Shoebox::count_mask_values``); here these are the
*coded pixels*, and everything below is measured on them, in one compiled pass over each
record's pixels (``_spot_shape_kernels``):

- ``n_coded``: the size; ``extent_x``, ``extent_y`` (pixels), ``extent_z`` (images): how
  many columns, rows and images the coded pixels span (max - min + 1); ``footprint``:
  the most coded pixels on any one image; ``fill``: coded pixels / (extent_x * extent_y *
  extent_z).
- ``centroid`` (x, y, z), ``rms_width_x``, ``rms_width_y`` (px), ``rms_width_z``
  (images) and ``covariance_xy`` (px^2): the weighted mean and population standard
  deviations (and x-y covariance) of the coded pixels' centres. Pixel (i, j, k) of a box
  whose bbox starts at (x0, y0, z0) has its centre at (x0 + i + 0.5, y0 + j + 0.5,
  z0 + k + 0.5), as in DIALS (its ``xyzobs.px.value``); the weight of a pixel is
  ``data - background``, values below zero counted as zero.
- ``elongation``: see :func:`elongation`; ``peak_centroid_distance``: see
  :class:`SpotShapes`; ``rms_width_radial`` / ``rms_width_tangential``: see
  :func:`radial_tangential_widths`.
- ``has_pixel_data`` (the record carries pixel arrays) and ``total_weight`` (the sum of
  the coded pixels' weights).

The weighted sums are taken relative to the row's first coded pixel (in the box's own
pixel indices), so they stay small whatever the position on the detector, and a spot
one pixel (or one image) thick has a width of exactly 0 along that axis.

Rule for rows whose coded pixels have no positive weight (``total_weight == 0``): the
weighted quantities (centroid, rms widths, covariance, elongation, peak distance, radial
and tangential widths) are NaN, the unweighted ones (counts, extents, footprint, fill)
are measured as usual, and :func:`summarise_spot_shapes` counts those rows
(``rows_with_zero_weight``) and leaves them out of the weighted quantities' statistics.
Rows without pixel data, or without a coded pixel, have zero counts and extents and NaN
for everything else.
"""

from __future__ import annotations

import math
import queue
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np

from ..formats.shoeboxes import ShoeboxColumn
from ..jit import njit
from ..threads import in_order
from ._spot_shape_kernels import (
    PIXEL_VARIANCE,
    measure_and_store_rows,
    measure_rows,
    radial_tangential_row,
)
from .histogram import histogram
from .statistics import (
    KeyGroups,
    QuantitySummary,
    grouped_summary,
    key_groups,
    work_array,
)

ROWS_PER_CHUNK = 1 << 16  # rows measured per kernel call by measure_spot_shapes
MAX_INTEGER_BINS = 1000  # width-1 histogram bins of an integer quantity, at most

_INTEGER_FIELDS = ("n_coded", "extent_x", "extent_y", "extent_z", "footprint")
_REAL_FIELDS = (
    "total_weight",
    "rms_width_x",
    "rms_width_y",
    "rms_width_z",
    "covariance_xy",
    "elongation",
    "peak_centroid_distance",
    "fill",
)


@dataclass(eq=False)
class SpotShapes:
    """Per-row shape measurements (numpy arrays of one length; see the module's text).

    ``peak_centroid_distance`` (px, with z in images, as DIALS's
    ``spotfinder.filter.max_separation`` measures it) is the distance from the centre
    of the brightest coded pixel (largest ``data``; the first in C order, z then y then
    x, on ties) to the centroid. DIALS's own peak (``shoebox.peak_coordinates()``,
    ``array_family/boost_python/flex_shoebox.cc``) is the first maximum of the data over
    every pixel of the box; in spot-finding shoeboxes the pixels outside the spot have
    data 0, so the two are the same pixel there.

    ``rms_width_radial`` and ``rms_width_tangential`` are NaN until beam centres are
    given (:meth:`with_beam_centres`).
    """

    has_pixel_data: np.ndarray
    n_coded: np.ndarray
    extent_x: np.ndarray
    extent_y: np.ndarray
    extent_z: np.ndarray
    footprint: np.ndarray
    total_weight: np.ndarray
    centroid: np.ndarray
    rms_width_x: np.ndarray
    rms_width_y: np.ndarray
    rms_width_z: np.ndarray
    covariance_xy: np.ndarray
    elongation: np.ndarray
    peak_centroid_distance: np.ndarray
    fill: np.ndarray
    rms_width_radial: np.ndarray
    rms_width_tangential: np.ndarray

    def __len__(self) -> int:
        return len(self.n_coded)

    @classmethod
    def empty(cls, n: int) -> "SpotShapes":
        """Room for ``n`` rows (contents undefined until measured).

        Parameters
        ----------
        n : int
            The number of rows.
        """
        arrays = {name: np.empty(n, np.int64) for name in _INTEGER_FIELDS}
        arrays.update({name: np.empty(n, np.float64) for name in _REAL_FIELDS})
        return cls(
            has_pixel_data=np.zeros(n, bool),
            centroid=np.empty((n, 3), np.float64),
            rms_width_radial=np.full(n, np.nan),
            rms_width_tangential=np.full(n, np.nan),
            **arrays,
        )

    def rows(self, start: int, stop: int) -> "SpotShapes":
        """Rows [start, stop) as views (writing to them writes to these arrays).

        Parameters
        ----------
        start, stop : int
            The rows, half-open.
        """
        return SpotShapes(
            **{name: getattr(self, name)[start:stop] for name in _FIELD_NAMES}
        )

    @classmethod
    def concatenate(cls, parts: Sequence["SpotShapes"]) -> "SpotShapes":
        """The rows of every part, in order: the same as measuring them all together.

        Parameters
        ----------
        parts : sequence of SpotShapes
            Measured stretches, in order.
        """
        if not parts:
            return cls.empty(0)
        return cls(
            **{
                name: np.concatenate([getattr(part, name) for part in parts])
                for name in _FIELD_NAMES
            }
        )

    @property
    def variance_x(self) -> np.ndarray:
        return self.rms_width_x**2

    @property
    def variance_y(self) -> np.ndarray:
        return self.rms_width_y**2

    def with_beam_centres(self, beam_centre: np.ndarray) -> "SpotShapes":
        """A copy with the radial and tangential widths about ``beam_centre`` ((n, 2) px,
        each row's beam centre on its own panel, e.g. ``beam_centres_px(...)[panel]``).

        Parameters
        ----------
        beam_centre : numpy.ndarray
            (n, 2) pixels, one row per measured spot.
        """
        radial, tangential = radial_tangential_widths(
            self.centroid,
            self.variance_x,
            self.variance_y,
            self.covariance_xy,
            beam_centre,
        )
        return replace(self, rms_width_radial=radial, rms_width_tangential=tangential)


_FIELD_NAMES = tuple(f.name for f in fields(SpotShapes))  # made once: small tables


def _checked_code(code: int) -> int:
    code = int(code)
    if not 0 <= code <= 255:
        raise ValueError(f"mask code {code} is outside 0..255")
    return code


_BAD_RECORD = (
    "record {} has an unknown pixel-data marker, an inverted bbox or pixel arrays "
    "outside the column's bytes"
)


def measure_records(
    blob: np.ndarray,
    present: np.ndarray,
    data_offset: np.ndarray,
    bbox: np.ndarray,
    code: int,
    out: SpotShapes | None = None,
) -> SpotShapes:
    """Shapes of the shoebox records described by per-record arrays, straight from the
    column's bytes: the entry point for a caller that indexes a huge column chunk by
    chunk (measure each chunk, then :meth:`SpotShapes.concatenate`, or pass ``out``).

    Parameters
    ----------
    blob
        The ``Shoebox<>`` column's bytes (uint8; may be a read-only memory map).
    present, data_offset, bbox
        Per record: the pixel-data marker (0, 1 or 2), the byte offset of its float32
        data in ``blob`` and its (x0, x1, y0, y1, z0, z1) box, as in ShoeboxColumn.
    code
        Mask code (0..255); a pixel is coded when its mask has every bit of it.
    out
        Optional SpotShapes of the same length to fill (e.g. ``shapes.rows(a, b)``).

    Returns
    -------
    SpotShapes
        ``out`` (or a new one), with NaN radial and tangential widths.
    """
    code = _checked_code(code)
    present = np.ascontiguousarray(present, dtype=np.uint8)
    data_offset = np.ascontiguousarray(data_offset, dtype=np.int64)
    bbox = np.ascontiguousarray(bbox, dtype=np.int32).reshape(-1, 6)
    if not len(present) == len(data_offset) == len(bbox):
        raise ValueError("present, data_offset and bbox must have one entry per record")
    shapes = SpotShapes.empty(len(present)) if out is None else out
    if len(shapes) != len(present):
        raise ValueError(f"out has {len(shapes)} rows, not {len(present)}")
    blob = np.ascontiguousarray(blob, dtype=np.uint8).reshape(-1)
    shapes.has_pixel_data[:] = present != 0
    bad = measure_rows(
        blob,
        present,
        data_offset,
        bbox,
        np.uint8(code),
        tuple(getattr(shapes, name) for name in _INTEGER_FIELDS),
        shapes.centroid,
        tuple(getattr(shapes, name) for name in _REAL_FIELDS),
    )
    if bad >= 0:
        raise ValueError(_BAD_RECORD.format(bad))
    shapes.rms_width_radial[:] = np.nan
    shapes.rms_width_tangential[:] = np.nan
    return shapes


def _rows_taken(column: ShoeboxColumn, rows) -> np.ndarray | None:
    """Row numbers (int64, negative ones counted from the end) from row numbers or a
    boolean mask; None for every row."""
    if rows is None:
        return None
    n_rows = len(column)
    taken = np.asarray(rows)
    if taken.dtype == bool and taken.ndim == 1 and len(taken) <= n_rows:
        return np.flatnonzero(taken)  # in range by construction: nothing to check
    if taken.dtype == bool:
        taken = np.flatnonzero(taken)
    taken = taken.astype(np.int64, copy=False)
    if taken.size and (taken.min() < -n_rows or taken.max() >= n_rows):
        raise IndexError(f"rows must be in 0..{n_rows - 1}")
    return np.where(taken < 0, taken + n_rows, taken)


def measure_spot_shapes(
    column: ShoeboxColumn,
    code: int,
    rows: np.ndarray | None = None,
    beam_centre: np.ndarray | None = None,
) -> SpotShapes:
    """Shapes of the coded pixels of each row of an indexed shoebox column.

    Parameters
    ----------
    column
        The indexed ``Shoebox<>`` column (``read_reflections(path).shoeboxes``).
    code
        Mask code (0..255), e.g. 4 (Foreground); 0 makes every pixel coded.
    rows
        Row numbers (or a boolean mask) of the rows to measure, e.g. the selected ones;
        all rows by default. The result has one entry per measured row, in this order.
    beam_centre
        Optional (n, 2) beam centre in pixels on each measured row's panel; with it the
        radial and tangential widths are filled in.

    The file's pages are the reader's business: a big table is measured a stretch at a
    time through ``ReflectionTable.shoebox_chunks``, which hands each finished stretch
    back to the operating system.

    Returns
    -------
    SpotShapes
    """
    rows_taken = _rows_taken(column, rows)
    count = len(column) if rows_taken is None else len(rows_taken)
    shapes = SpotShapes.empty(count)
    for start in range(0, count, ROWS_PER_CHUNK):
        stop = min(count, start + ROWS_PER_CHUNK)
        chunk = slice(start, stop) if rows_taken is None else rows_taken[start:stop]
        present, data_offset = column.present[chunk], column.data_offset[chunk]
        bbox = column.bbox[chunk]
        measure_records(
            column.blob, present, data_offset, bbox, code,
            shapes if stop - start == count else shapes.rows(start, stop),
        )  # fmt: skip
    if beam_centre is not None:
        shapes = shapes.with_beam_centres(beam_centre)
    return shapes


@dataclass(frozen=True, eq=False)
class ShapesToMeasure:
    """Rows of an indexed shoebox column to be measured straight into the caller's
    arrays (:meth:`store`): the full measurements (16 numbers a row) are never written
    to memory and read back, only the quantities kept.

    Make one with :meth:`of`.
    """

    column: ShoeboxColumn
    code: int
    rows: np.ndarray  # int64 row numbers, in the order measured

    @classmethod
    def of(cls, column: ShoeboxColumn, code: int, rows=None) -> "ShapesToMeasure":
        """The rows of ``column`` to measure for mask code ``code``.

        Parameters
        ----------
        column : ShoeboxColumn
            The indexed column.
        code : int
            Mask code (0..255).
        rows : numpy.ndarray, optional
            Row numbers or a boolean mask, as for :func:`measure_spot_shapes`; all
            rows by default.
        """
        taken = _rows_taken(column, rows)
        if taken is None:
            taken = np.arange(len(column), dtype=np.int64)
        return cls(column, _checked_code(code), taken)

    def __len__(self) -> int:
        return len(self.rows)

    def store(
        self,
        beam_centres: np.ndarray,
        beam_rows: np.ndarray,
        sizes: np.ndarray,
        integers: Sequence[np.ndarray],
        reals: Sequence[np.ndarray],
    ) -> None:
        """Measure the rows and write each one's size and kept quantities: the same as
        :func:`measure_spot_shapes` followed by :func:`store_shapes`.

        Parameters
        ----------
        beam_centres, beam_rows, integers, reals
            As for :func:`store_shapes`, one row per row measured.
        sizes : numpy.ndarray
            Receives each row's count of coded pixels.
        """
        if len(integers) != len(STORED_INTEGERS) or len(reals) != len(STORED_REALS):
            raise ValueError("give one destination per stored quantity")
        destinations = (sizes, beam_rows, *integers, *reals)
        if any(np.shape(values) != (len(self),) for values in destinations):
            raise ValueError(f"give one entry per row measured ({len(self)})")
        column = self.column
        bad = measure_and_store_rows(
            np.ascontiguousarray(column.blob, dtype=np.uint8).reshape(-1),
            np.ascontiguousarray(column.present, dtype=np.uint8),
            np.ascontiguousarray(column.data_offset, dtype=np.int64),
            np.ascontiguousarray(column.bbox, dtype=np.int32).reshape(-1, 6),
            self.rows,
            np.uint8(self.code),
            np.ascontiguousarray(beam_centres, dtype=np.float64).reshape(-1, 2),
            np.asarray(beam_rows, dtype=np.int64),
            sizes,
            tuple(integers),
            tuple(reals),
        )
        if bad >= 0:
            raise ValueError(_BAD_RECORD.format(int(self.rows[bad])))


# ------------------------------------------------------------------ geometry


def elongation(
    variance_x: np.ndarray, variance_y: np.ndarray, covariance_xy: np.ndarray
) -> np.ndarray:
    """Ratio of the larger to the smaller principal rms width on the detector.

    The principal widths are the square roots of the eigenvalues of the 2x2 covariance
    ``[[variance_x, covariance_xy], [covariance_xy, variance_y]]`` with each pixel's own
    variance, 1/12 px^2 (a uniform unit square), added to the diagonal. Without it a spot
    one pixel wide would have a zero width and an infinite ratio; with it a single pixel
    is round (1) and a uniform streak of L pixels in a line has elongation exactly L,
    its length over its width, as the pixels' outlines would say. The rms widths
    themselves are reported without that addition.

    Parameters
    ----------
    variance_x, variance_y, covariance_xy
        Weighted (co)variances of the pixel centres, px^2.

    Returns
    -------
    numpy.ndarray
        Elongations (>= 1; NaN where an input is NaN).
    """
    a = np.asarray(variance_x, dtype=np.float64) + PIXEL_VARIANCE
    b = np.asarray(variance_y, dtype=np.float64) + PIXEL_VARIANCE
    c = np.asarray(covariance_xy, dtype=np.float64)
    half_trace = 0.5 * (a + b)
    spread = np.sqrt(0.25 * (a - b) ** 2 + c * c)
    return np.sqrt((half_trace + spread) / (half_trace - spread))


def radial_tangential_widths(
    centroid: np.ndarray,
    variance_x: np.ndarray,
    variance_y: np.ndarray,
    covariance_xy: np.ndarray,
    beam_centre: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The rms widths along the direction from the beam centre to each spot (radial)
    and across it (tangential), in pixels.

    With ``u`` the unit vector from the beam centre to the centroid on the panel and
    ``C`` the x-y covariance, the radial variance is ``u.C.u`` and the tangential one
    ``v.C.v`` with ``v`` perpendicular to ``u`` (their sum is ``variance_x +
    variance_y``). Radial broadening comes from e.g. wavelength spread, tangential from
    mosaicity and beam divergence.

    Parameters
    ----------
    centroid
        (n, 2) or (n, 3) centroids; x and y are used (px).
    variance_x, variance_y, covariance_xy
        (n,) weighted (co)variances, px^2.
    beam_centre
        (n, 2) each row's beam centre on its panel's plane, px (see beam_centres_px).

    Returns
    -------
    tuple of numpy.ndarray
        (radial, tangential); NaN where an input is NaN or the spot sits exactly at the
        beam centre (no direction).
    """
    centroid = np.ascontiguousarray(centroid, dtype=np.float64)
    beam_centre = np.ascontiguousarray(beam_centre, dtype=np.float64).reshape(-1, 2)
    radial, tangential = np.empty(len(centroid)), np.empty(len(centroid))
    _radial_tangential(
        centroid,
        beam_centre,
        np.ascontiguousarray(variance_x, dtype=np.float64),
        np.ascontiguousarray(variance_y, dtype=np.float64),
        np.ascontiguousarray(covariance_xy, dtype=np.float64),
        radial,
        tangential,
    )
    return radial, tangential


@njit
def _radial_tangential(centroid, beam_centre, vx, vy, cxy, radial, tangential):
    """:func:`radial_tangential_widths` a row at a time, without a temporary per term."""
    for i in range(radial.size):
        radial[i], tangential[i] = radial_tangential_row(
            centroid[i, 0], centroid[i, 1], beam_centre[i, 0], beam_centre[i, 1],
            vx[i], vy[i], cxy[i],
        )  # fmt: skip


# The per-spot quantities a caller keeps (``store_shapes``), in the order it gives them.
STORED_INTEGERS = ("extent_x", "extent_y", "extent_z", "footprint")
STORED_REALS = (
    "fill",
    "rms_width_x",
    "rms_width_y",
    "rms_width_z",
    "rms_width_radial",
    "rms_width_tangential",
    "elongation",
    "peak_centroid_distance",
)


def store_shapes(
    shapes: SpotShapes,
    beam_centres: np.ndarray,
    beam_rows: np.ndarray,
    integers: Sequence[np.ndarray],
    reals: Sequence[np.ndarray],
) -> None:
    """Write the measured rows' kept quantities into arrays of the caller's types (e.g.
    a stretch of ``SpotSizes``), with the radial and tangential widths about each row's
    beam centre, in one pass: the same numbers as :meth:`SpotShapes.with_beam_centres`
    followed by a copy of each array, without a temporary per step.

    Parameters
    ----------
    shapes : SpotShapes
        The measured rows.
    beam_centres : numpy.ndarray
        (m, 2) float64, beam centres (px) of every panel the rows may be on.
    beam_rows : numpy.ndarray
        int64, per row: its beam centre's row in ``beam_centres``; -1 where unknown
        (radial and tangential widths NaN).
    integers, reals : sequence of numpy.ndarray
        The destinations of ``STORED_INTEGERS`` and ``STORED_REALS``, in that order, one
        entry per row; integer and real types of any width.
    """
    if len(integers) != len(STORED_INTEGERS) or len(reals) != len(STORED_REALS):
        raise ValueError("give one destination per stored quantity")
    _store_rows(
        tuple(getattr(shapes, name) for name in STORED_INTEGERS),
        tuple(integers),
        (
            shapes.fill, shapes.rms_width_x, shapes.rms_width_y, shapes.rms_width_z,
            shapes.elongation, shapes.peak_centroid_distance,
        ),
        tuple(reals),
        shapes.centroid,
        shapes.covariance_xy,
        np.ascontiguousarray(beam_centres, dtype=np.float64).reshape(-1, 2),
        np.asarray(beam_rows, dtype=np.int64),
    )  # fmt: skip


@njit
def _store_rows(integers, integers_out, reals, reals_out, centroid, cxy, centres, rows):
    """:func:`store_shapes` a row at a time: the copies, cast to the destinations'
    types, and the radial and tangential widths."""
    fill, rms_x, rms_y, rms_z, elongation_of, distance = reals
    for i in range(rows.size):
        integers_out[0][i], integers_out[1][i] = integers[0][i], integers[1][i]
        integers_out[2][i], integers_out[3][i] = integers[2][i], integers[3][i]
        row = rows[i]
        known = 0 <= row < centres.shape[0]
        bx = centres[row, 0] if known else np.nan
        by = centres[row, 1] if known else np.nan
        # The variances as numpy's ``rms ** 2`` gives them (a product, the same bits).
        radial, tangential = radial_tangential_row(
            centroid[i, 0], centroid[i, 1], bx, by,
            rms_x[i] * rms_x[i], rms_y[i] * rms_y[i], cxy[i],
        )  # fmt: skip
        reals_out[0][i], reals_out[1][i] = fill[i], rms_x[i]
        reals_out[2][i], reals_out[3][i] = rms_y[i], rms_z[i]
        reals_out[4][i], reals_out[5][i] = radial, tangential
        reals_out[6][i], reals_out[7][i] = elongation_of[i], distance[i]


def beam_centres_px(beam, panels) -> np.ndarray:
    """Where the line of the incident beam meets each panel's plane, in pixels of that
    panel (fast, slow), as dxtbx's ``Panel.get_beam_centre_px(s0)``
    (``src/dxtbx/model/panel.h``), without its parallax correction: a ray at the beam
    centre hits the panel almost square on, where the correction vanishes.

    Solves ``origin + u * fast_axis + v * slow_axis = t * s0`` (mm, laboratory frame);
    ``t`` may be negative (a panel behind the sample or facing away): the point still
    fixes the radial direction on that plane.

    Parameters
    ----------
    beam
        A ``formats.experiments.Beam`` (its ``s0``), or s0 itself (3 numbers).
    panels
        A ``formats.experiments.Detector`` or a sequence of its ``Panel``.

    Returns
    -------
    numpy.ndarray
        (n_panels, 2) float64: x (fast), y (slow) in pixels; NaN where the beam is
        parallel to the panel.
    """
    s0 = np.asarray(getattr(beam, "s0", beam), dtype=np.float64)
    panels = list(getattr(panels, "panels", panels))
    centres = np.full((len(panels), 2), np.nan)
    for index, panel in enumerate(panels):  # one 3x3 solve per panel, not per row
        frame = np.column_stack([panel.fast_axis, panel.slow_axis, panel.origin])
        try:
            # frame @ (u, v, 1) / t = s0 direction: solve frame @ w = s0, then scale.
            w = np.linalg.solve(frame, s0)
        except np.linalg.LinAlgError:
            continue  # the panel's plane contains the sample position
        normal = panel.normal
        if abs(float(normal @ s0)) <= 1e-12 * float(np.linalg.norm(s0)) or w[2] == 0:
            continue
        centres[index] = (
            w[0] / w[2] / panel.pixel_size[0],
            w[1] / w[2] / panel.pixel_size[1],
        )
    return centres


@njit
def _rows_differ(ours, theirs, differs):
    """differs[row]: any of the row's six values differs (one pass, no temporaries)."""
    for row in range(differs.size):
        same = True
        for k in range(6):
            same &= ours[row, k] == theirs[row, k]
        differs[row] = not same


def bbox_disagreements(
    shoebox_bbox: np.ndarray | None, table_bbox: np.ndarray | None
) -> tuple[int, np.ndarray]:
    """Rows whose shoebox bbox differs from the table's ``bbox`` column.

    They usually agree, but not always (DIALS issue #3194); the shoebox's own bbox is
    the one that frames its pixels, and the one measured here.

    Parameters
    ----------
    shoebox_bbox
        (n, 6) the shoeboxes' own boxes (``ShoeboxColumn.bbox``).
    table_bbox
        (n, 6) the table's ``bbox`` column, or None where the table has none.

    Returns
    -------
    tuple
        (count, row numbers). Never raises: without a table bbox (or shoeboxes) nothing
        disagrees; rows present in only one of the arrays, or arrays that are not
        (n, 6), count as disagreeing rows.
    """
    if shoebox_bbox is None or table_bbox is None:
        return 0, np.zeros(0, np.int64)
    try:
        ours = np.asarray(shoebox_bbox).reshape(-1, 6)
        theirs = np.asarray(table_bbox).reshape(-1, 6)
    except (ValueError, TypeError):
        n = max(np.size(shoebox_bbox), np.size(table_bbox)) // 6
        return n, np.arange(n, dtype=np.int64)
    common = min(len(ours), len(theirs))
    differs = np.ones(max(len(ours), len(theirs)), dtype=bool)
    if ours.dtype.kind in "iuf" and theirs.dtype.kind in "iuf":
        _rows_differ(ours[:common], theirs[:common], differs[:common])
    else:  # not numbers: compared as numpy compares anything
        differs[:common] = (ours[:common] != theirs[:common]).any(axis=1)
    rows = np.flatnonzero(differs).astype(np.int64)
    return len(rows), rows


# ------------------------------------------------------------------ summaries

# name: (unit, histogram bins (data_min, data_max, width) or None for width-1 integer
# bins, first integer value binned)
QUANTITIES = {
    "extent_x": ("px", None, 1),
    "extent_y": ("px", None, 1),
    "extent_z": ("images", None, 1),
    "footprint": ("px/image", None, 1),
    "fill": ("", (0.0, 1.0, 0.05), None),
    "rms_width_x": ("px", (0.0, 5.0, 0.1), None),
    "rms_width_y": ("px", (0.0, 5.0, 0.1), None),
    "rms_width_z": ("images", (0.0, 5.0, 0.1), None),
    "rms_width_radial": ("px", (0.0, 5.0, 0.1), None),
    "rms_width_tangential": ("px", (0.0, 5.0, 0.1), None),
    "elongation": ("", (1.0, 6.0, 0.1), None),
    "peak_centroid_distance": ("px", (0.0, 5.0, 0.1), None),
}


def _rows_of(shapes: SpotShapes, name: str) -> np.ndarray:
    """Which rows a quantity's summary covers: rows with coded pixels for the counts
    and the fill, finite values for the rest."""
    if QUANTITIES[name][1] is None or name == "fill":
        return shapes.extent_z > 0  # measured (sizes from a column have none)
    return np.isfinite(getattr(shapes, name))


def _histogram(
    values: np.ndarray, name: str, summary: QuantitySummary | None = None
) -> dict:
    """The quantity's histogram; with the values' summary, integer values are binned
    as their counts per value (the same slots, by ``histogram``'s weights) and real
    values sorted already by bisection."""
    _, bins, first = QUANTITIES[name]
    if bins is None:  # width-1 bins centred on the integers first, first + 1, ...
        top = first + MAX_INTEGER_BINS - 1
        if values.size:
            top = min(top, max(int(values.max()), first))
        low, high, width = first - 0.5, top + 0.5, 1.0
    else:
        low, high, width = bins
    n_bins = int(round((high - low) / width))
    if summary is not None and summary.counts is not None:
        present = np.flatnonzero(summary.counts)
        weights = summary.counts[present]
        binned = histogram(present, low, high, n_bins, weights=weights)
    elif summary is not None and summary.ordered is not None:
        binned = histogram(summary.ordered, low, high, n_bins, is_sorted=True)
    else:
        binned = histogram(values, low, high, n_bins)
    centres = binned.bin_centers
    if bins is None:
        centres = np.round(centres).astype(np.int64)
    return {
        "data_min": low,
        "data_max": high,
        "bin_width": width,
        "bin_centres": centres.tolist(),
        "counts": binned.counts.tolist(),
        "n_out_of_range": binned.n_out_of_range,
    }


def _medians_by(found: tuple, key_name: str) -> list:
    """JSON-ready entries of one key's medians (keys, counts and medians), as
    ``_json_safe`` would make them, without visiting thousands of entries one by one
    (a run of thousands of images has that many per quantity)."""
    keys, counts, medians = (np.asarray(part) for part in found)
    keys = keys.tolist() if keys.dtype.kind in "iu" else [int(key) for key in keys]
    return [
        {key_name: key, "n": n, "median": median if math.isfinite(median) else None}
        for key, n, median in zip(
            keys, counts.astype(np.int64).tolist(), medians.astype(np.float64).tolist()
        )
    ]


def _json_safe(value):
    """Plain Python numbers, lists and dicts, with None for NaN and infinities."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.integer, bool, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def summarise_spot_shapes(
    shapes: SpotShapes,
    image: np.ndarray | None = None,
    shell: np.ndarray | None = None,
    panel: np.ndarray | None = None,
    threads: int = 1,
) -> dict:
    """Statistics, a histogram and per-group medians of every shape quantity.

    Each quantity covers the rows where it is defined: ``n_coded`` every row with pixel
    data (as the size statistics do), the other counts and ``fill`` the rows with coded
    pixels, the weighted quantities the rows with a positive total weight (radial and
    tangential widths only where beam centres were given). Integer quantities have
    width-1 bins centred on whole pixels / images (at most MAX_INTEGER_BINS, larger
    values counted out of range); real ones have the fixed bins of QUANTITIES (rms
    widths and peak distance 0-5 px in 0.1 steps, elongation 1-6 in 0.1, fill 0-1 in
    0.05, covariance -2..2 px^2 in 0.1), binned as scitbx's ``flex.histogram``.

    Parameters
    ----------
    shapes
        The measured rows.
    image, shell, panel
        Optional per-row integer keys (image number, resolution shell, panel) for
        per-group medians; negative keys mean unknown and are left out.
    threads
        Quantities summarised at once, on as many threads (each with its own work
        array); the result is the same whatever the number.

    Returns
    -------
    dict
        JSON-able: ``rows``, ``rows_with_pixel_data``, ``rows_with_coded_pixels``,
        ``rows_with_zero_weight`` and ``quantities``: per name, ``unit``,
        ``statistics`` (n, mean, std, min, p5, p25, median, p75, p95, max, as
        ``summary_statistics``), ``histogram`` and ``median_by_image`` /
        ``median_by_shell`` / ``median_by_panel`` (lists of {key, n, median}). NaN never
        appears: missing numbers are None.
    """
    n = len(shapes)
    given = (("image", image), ("shell", shell), ("panel", panel))
    labels = [label for label, keys in given if keys is not None]
    groups: KeyGroups = key_groups([keys for _, keys in given if keys is not None], n)
    scratches: queue.SimpleQueue = queue.SimpleQueue()  # one per thread at work
    for _ in range(max(1, min(threads, len(QUANTITIES)))):
        scratches.put(work_array(n))

    def summarised(name: str) -> dict:
        scratch = scratches.get()
        try:
            summary = grouped_summary(
                getattr(shapes, name), _rows_of(shapes, name), groups, scratch
            )
            # the histogram reads the sorted values, which may lie in the scratch
            histogram_of = _histogram(summary.values, name, summary)
        finally:
            scratches.put(scratch)
        medians = dict(zip(labels, summary.medians))
        return {
            **_json_safe(
                {
                    "unit": QUANTITIES[name][0],
                    "statistics": summary.statistics,
                    "histogram": histogram_of,
                }
            ),
            **{
                f"median_by_{label}": _medians_by(medians[label], label)
                if label in medians
                else []
                for label, _ in given
            },
        }

    quantities = dict(zip(QUANTITIES, in_order(summarised, QUANTITIES, threads)))
    coded = shapes.extent_z > 0
    counted = {
        "rows": n,
        "rows_with_pixel_data": int(shapes.has_pixel_data.sum()),
        "rows_with_coded_pixels": int(coded.sum()),
        "rows_with_zero_weight": int((coded & np.isnan(shapes.rms_width_x)).sum()),
    }
    return {**counted, "quantities": quantities}
