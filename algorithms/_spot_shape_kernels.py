"""Compiled kernels of :mod:`.spot_shape`: one pass over each shoebox's pixels.

Pixel arrays sit in the ``Shoebox<>`` column at arbitrary byte offsets; each float32 is
read by one unaligned load (``formats.shoeboxes.float32_at``). The helpers that read a
record are inlined and take the column as a byte pointer (``bytes_pointer``), not as an
array: an array argument is reference-counted on every call, even inlined, and those
atomic counts, with the divisions that turned a pixel index into its place in the box,
took about a third of a shape pass.
"""

from __future__ import annotations

import math

import numpy as np

from ..formats.shoeboxes import bytes_pointer
from ..formats.shoeboxes import float32_at as _float32_at
from ..jit import njit

# The variance of a uniform square pixel about its centre, per axis (px^2): added to the
# diagonal of the x-y covariance for the elongation only.
PIXEL_VARIANCE = 1.0 / 12.0


@njit(inline="always")
def _first_coded(blob, mask_start, stride, shape, code):
    """Place (i, j, k) in the box of a record's first coded pixel in C order, or
    (-1, -1, -1): counted while walking, not divided out of the pixel's index."""
    nx, ny, nz = shape
    pixel = 0
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                if blob[mask_start + stride * pixel] & code == code:
                    return i, j, k
                pixel += 1
    return -1, -1, -1


@njit(inline="always")
def _row_sums(blob, data_start, mask_start, stride, shape, code):
    """Everything one record's coded pixels contribute, in one pass in C order.

    Coordinates are pixel indices in the box, shifted by those of the first coded pixel
    (so that a spot one pixel wide along an axis has sums of exactly zero along it).
    The loop has no data-dependent branch but the rare new peak: a pixel that is not
    coded contributes zeros. The bounds along y and z are updated once per row of
    pixels and per image, from how many of its pixels are coded. Returns (count,
    footprint, lowest and highest i, j, k, first coded i, j, k, total weight, weighted
    sums of dx, dy, dz, dx^2, dy^2, dz^2, dx*dy, peak i, j, k); count 0 where no pixel
    is coded.
    """
    nx, ny, nz = shape
    n = nx * ny * nz
    background_start = mask_start + stride * n
    first_i, first_j, first_k = _first_coded(blob, mask_start, stride, shape, code)
    if first_i < 0:
        return 0, 0, (0, 0, 0, 0, 0, 0), (0, 0, 0), (0.0,) * 8, (0, 0, 0)
    first = first_i + nx * (first_j + ny * first_k)
    count = footprint = 0
    low_i, low_j = nx, ny
    high_i = high_j = high_k = -1
    peak_i, peak_j, peak_k = first_i, first_j, first_k
    peak_value = np.float64(_float32_at(blob, data_start + 4 * first))
    weight = sx = sy = sz = sxx = syy = szz = sxy = 0.0
    pixel = 0
    for k in range(nz):
        on_image = 0
        dz = k - first_k
        for j in range(ny):
            dy = j - first_j
            on_row = 0
            for i in range(nx):
                coded = blob[mask_start + stride * pixel] & code == code
                on_row += coded
                low_i = i if coded and i < low_i else low_i
                high_i = i if coded and i > high_i else high_i
                data = np.float64(_float32_at(blob, data_start + 4 * pixel))
                if coded and data > peak_value:
                    peak_i, peak_j, peak_k, peak_value = i, j, k, data
                w = data - np.float64(_float32_at(blob, background_start + 4 * pixel))
                w = w if coded and w > 0.0 else 0.0
                dx = i - first_i
                weight += w
                sx += w * dx
                sy += w * dy
                sz += w * dz
                sxx += w * dx * dx
                syy += w * dy * dy
                szz += w * dz * dz
                sxy += w * dx * dy
                pixel += 1
            on_image += on_row
            low_j = j if on_row and j < low_j else low_j
            high_j = j if on_row and j > high_j else high_j
        count += on_image
        high_k = k if on_image else high_k
        footprint = max(footprint, on_image)
    low_k = first_k  # in C order no coded pixel lies on an earlier image
    return (
        count,
        footprint,
        (low_i, low_j, low_k, high_i, high_j, high_k),
        (first_i, first_j, first_k),
        (weight, sx, sy, sz, sxx, syy, szz, sxy),
        (peak_i, peak_j, peak_k),
    )


@njit
def _elongation(variance_x, variance_y, covariance_xy):
    """Ratio of the principal rms widths of the 2x2 covariance, each pixel's own
    uniform-square variance added to the diagonal (see spot_shape.elongation)."""
    a, b = variance_x + PIXEL_VARIANCE, variance_y + PIXEL_VARIANCE
    half_trace = 0.5 * (a + b)
    spread = np.sqrt(0.25 * (a - b) * (a - b) + covariance_xy * covariance_xy)
    smallest = max(half_trace - spread, 0.0)
    if smallest <= 0.0:
        return np.inf
    return np.sqrt((half_trace + spread) / smallest)


@njit(inline="always")
def _record_fits(size, start, marker, nx, ny, nz):
    """Whether a record's marker and bbox are sound and its pixel arrays lie inside a
    blob of ``size`` bytes (the volume checked in floating point first, so that a
    hostile bbox cannot overflow the integer product)."""
    if marker > 2 or nx < 0 or ny < 0 or nz < 0:
        return False
    if marker == 0:
        return True
    per_pixel = 12 if marker == 1 else 9
    if np.float64(nx) * ny * nz * per_pixel > size:
        return False
    return start >= 0 and start + nx * ny * nz * per_pixel <= size


@njit(inline="always")
def _measured(blob, size, marker, start, box, code):
    """One record of the column ``blob`` (a byte pointer) of ``size`` bytes: (fits,
    counts, reals, centroid) with counts (n_coded, extent_x, extent_y, extent_z,
    footprint), reals (total_weight, rms_width_x, rms_width_y, rms_width_z,
    covariance_xy, elongation, peak_centroid_distance, fill) and the weighted mean
    pixel centre in absolute pixel / image coordinates. A record without pixel data or
    coded pixels has zero counts and NaN elsewhere (total weight 0); one whose coded
    pixels have no positive weight NaN for the weighted quantities only. ``fits`` is
    False (and the rest as for no pixel data) where the record does not fit in the
    column. A pointer and scalars only: arrays passed on every row would cost
    reference counting."""
    x0, x1, y0, y1, z0, z1 = box
    nan = np.nan
    nothing = (
        (0, 0, 0, 0, 0),
        (0.0, nan, nan, nan, nan, nan, nan, nan),
        (nan, nan, nan),
    )
    nx, ny, nz = np.int64(x1) - x0, np.int64(y1) - y0, np.int64(z1) - z0
    if not _record_fits(size, start, marker, nx, ny, nz):
        return False, nothing[0], nothing[1], nothing[2]
    if marker == 0 or nx == 0 or ny == 0 or nz == 0:
        return True, nothing[0], nothing[1], nothing[2]
    count, most, bounds, first, sums, peak = _row_sums(
        blob,
        start,
        start + 4 * nx * ny * nz,
        4 if marker == 1 else 1,
        (nx, ny, nz),
        code,
    )
    if count == 0:
        return True, nothing[0], nothing[1], nothing[2]
    spans = (
        bounds[3] - bounds[0] + 1,
        bounds[4] - bounds[1] + 1,
        bounds[5] - bounds[2] + 1,
    )
    counts = (count, spans[0], spans[1], spans[2], most)
    fill = count / (spans[0] * spans[1] * spans[2])
    if not sums[0] > 0.0:  # the weighted quantities stay NaN
        reals = (sums[0], nan, nan, nan, nan, nan, nan, fill)
        return True, counts, reals, nothing[2]
    mean, widths, covariance_xy, elongation, distance = _weighted(sums, first, peak)
    # Pixel (i, j, k) of the box has its centre at (x0 + i + 0.5, y0 + j + 0.5, ...).
    centroid = (
        x0 + first[0] + 0.5 + mean[0],
        y0 + first[1] + 0.5 + mean[1],
        z0 + first[2] + 0.5 + mean[2],
    )
    reals = (
        sums[0], widths[0], widths[1], widths[2],
        covariance_xy, elongation, distance, fill,
    )  # fmt: skip
    return True, counts, reals, centroid


@njit
def _box(bbox, row):
    return (
        bbox[row, 0], bbox[row, 1], bbox[row, 2],
        bbox[row, 3], bbox[row, 4], bbox[row, 5],
    )  # fmt: skip


@njit
def measure_rows(blob, present, data_offset, bbox, code, counts, centroid, reals):
    """Measure every record given by (present, data_offset, bbox) into the outputs.

    ``counts`` is a tuple of int64 arrays (n_coded, extent_x, extent_y, extent_z,
    footprint), ``centroid`` (n, 3) float64 gets the weighted mean pixel centre in
    absolute pixel / image coordinates, and ``reals`` is a tuple of float64 arrays
    (total_weight, rms_width_x, rms_width_y, rms_width_z, covariance_xy, elongation,
    peak_centroid_distance, fill), as :func:`_measured` gives them.

    Returns -1, or the first record that does not fit in ``blob`` (an unknown marker,
    an inverted bbox or pixel arrays past the end), where measuring stopped.
    """
    pointer = bytes_pointer(blob)
    for row in range(present.size):
        fits, number, real, centre = _measured(
            pointer,
            blob.size,
            present[row],
            np.int64(data_offset[row]),
            _box(bbox, row),
            code,
        )
        if not fits:
            return row
        for k in range(5):
            counts[k][row] = number[k]
        for k in range(8):
            reals[k][row] = real[k]
        for k in range(3):
            centroid[row, k] = centre[k]
    return -1


@njit
def measure_and_store_rows(
    blob, present, data_offset, bbox, rows, code, centres, beam_rows, sizes,
    integers, reals,
):  # fmt: skip
    """Measure the records ``rows`` of a column and write, per row measured, its count
    of coded pixels into ``sizes``, its (extent_x, extent_y, extent_z, footprint) into
    ``integers`` and its (fill, rms_width_x, rms_width_y, rms_width_z, radial,
    tangential, elongation, peak_centroid_distance) into ``reals``, in the
    destinations' types: :func:`measure_rows` and the copy of the kept quantities in
    one pass, without a row of measurements written to memory and read back. The
    radial and tangential widths are taken about ``centres[beam_rows[i]]`` (NaN where
    that row is -1 or past the end).

    Returns -1, or the position in ``rows`` of the first record that does not fit in
    ``blob``, where measuring stopped.
    """
    pointer = bytes_pointer(blob)
    for i in range(rows.size):
        row = rows[i]
        fits, number, real, centre = _measured(
            pointer,
            blob.size,
            present[row],
            np.int64(data_offset[row]),
            _box(bbox, row),
            code,
        )
        if not fits:
            return i
        sizes[i] = number[0]
        for k in range(4):
            integers[k][i] = number[k + 1]
        known = 0 <= beam_rows[i] < centres.shape[0]
        bx = centres[beam_rows[i], 0] if known else np.nan
        by = centres[beam_rows[i], 1] if known else np.nan
        # The variances as numpy's ``rms ** 2`` gives them (a product, the same bits).
        radial, tangential = radial_tangential_row(
            centre[0], centre[1], bx, by, real[1] * real[1], real[2] * real[2], real[4]
        )
        reals[0][i], reals[1][i], reals[2][i] = real[7], real[1], real[2]
        reals[3][i], reals[4][i], reals[5][i] = real[3], radial, tangential
        reals[6][i], reals[7][i] = real[5], real[6]
    return -1


@njit(error_model="numpy")  # x/0 gives inf or NaN, as numpy would
def radial_tangential_row(cx, cy, bx, by, vx, vy, cxy):
    """One row's radial and tangential widths, in numpy's order of operations (the
    same numbers as the vectorised formula of spot_shape.radial_tangential_widths).
    The unit vector d/|d| from the beam centre enters only squared, so the quadratic
    forms are taken in d and divided once by |d|^2: no ``hypot`` (a library call
    that took a sixth of the shape kernel), no square root of it. Scalars only, as
    :func:`_measured`."""
    dx, dy = cx - bx, cy - by
    squared = dx * dx + dy * dy  # 0 at the beam centre itself: NaN widths
    r = (dx * dx * vx + 2 * dx * dy * cxy + dy * dy * vy) / squared
    t = (dy * dy * vx - 2 * dx * dy * cxy + dx * dx * vy) / squared
    return math.sqrt(0.0 if r < 0.0 else r), math.sqrt(0.0 if t < 0.0 else t)


@njit
def _weighted(sums, first, peak):
    """From one row's weighted sums (total weight above zero): the mean offset from
    the first coded pixel, the rms widths, the x-y covariance, the elongation and the
    peak's distance from the centroid. Scalars only: arrays passed to a helper on
    every row would cost reference counting."""
    weight, sx, sy, sz, sxx, syy, szz, sxy = sums
    mean_x, mean_y, mean_z = sx / weight, sy / weight, sz / weight
    variance_x = max(sxx / weight - mean_x * mean_x, 0.0)
    variance_y = max(syy / weight - mean_y * mean_y, 0.0)
    variance_z = max(szz / weight - mean_z * mean_z, 0.0)
    covariance_xy = sxy / weight - mean_x * mean_y
    dx = peak[0] - first[0] - mean_x
    dy = peak[1] - first[1] - mean_y
    dz = peak[2] - first[2] - mean_z
    return (
        (mean_x, mean_y, mean_z),
        (np.sqrt(variance_x), np.sqrt(variance_y), np.sqrt(variance_z)),
        covariance_xy,
        _elongation(variance_x, variance_y, covariance_xy),
        np.sqrt(dx * dx + dy * dy + dz * dz),
    )
