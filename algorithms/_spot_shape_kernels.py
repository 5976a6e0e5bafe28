"""Compiled kernels of :mod:`.spot_shape`: one pass over each shoebox's pixels.

Pixel arrays sit in the ``Shoebox<>`` column at arbitrary byte offsets (records are
packed back to back), so float32 values are assembled from their four little-endian
bytes and reinterpreted through a one-word buffer, never read through a view of the blob
(a view at an unaligned offset is not safe in compiled code). The blob may be a
read-only memory map: nothing here writes to it.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

# The variance of a uniform square pixel about its centre, per axis (px^2): added to the
# diagonal of the x-y covariance for the elongation only.
PIXEL_VARIANCE = 1.0 / 12.0


@intrinsic
def _as_float32(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the low 32 bits of the integer
    ``bits`` (numba widens uint32 arithmetic to 64 bits)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth < 32:
        return None

    def codegen(context, builder, signature, args):
        word = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(word, ir.FloatType())

    return types.float32(bits), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _float32_at(blob, position, word, real):
    """The little-endian float32 at byte ``position``, at any alignment."""
    return np.float64(
        _as_float32(
            np.uint32(blob[position])
            | (np.uint32(blob[position + 1]) << np.uint32(8))
            | (np.uint32(blob[position + 2]) << np.uint32(16))
            | (np.uint32(blob[position + 3]) << np.uint32(24))
        )
    )


@numba.njit(cache=True, nogil=True)
def _row_sums(blob, data_start, mask_start, stride, shape, code, word, real):
    """Everything one record's coded pixels contribute, in one pass in C order.

    Coordinates are pixel indices in the box, shifted by those of the first coded pixel
    (so that a spot one pixel wide along an axis has sums of exactly zero along it).
    Returns (count, footprint, lowest and highest i, j, k, first coded i, j, k, total
    weight, weighted sums of dx, dy, dz, dx^2, dy^2, dz^2, dx*dy, peak i, j, k).
    """
    nx, ny, nz = shape
    background_start = mask_start + stride * nx * ny * nz
    count = footprint = 0
    low_i, low_j, low_k = nx, ny, nz
    high_i = high_j = high_k = -1
    first_i = first_j = first_k = 0
    peak_i = peak_j = peak_k = -1
    peak_value = 0.0
    weight = sx = sy = sz = sxx = syy = szz = sxy = 0.0
    pixel = 0
    for k in range(nz):
        on_image = 0
        for j in range(ny):
            for i in range(nx):
                if blob[mask_start + stride * pixel] & code == code:
                    if count == 0:
                        first_i, first_j, first_k = i, j, k
                    count += 1
                    on_image += 1
                    low_i, high_i = min(low_i, i), max(high_i, i)
                    low_j, high_j = min(low_j, j), max(high_j, j)
                    low_k, high_k = min(low_k, k), max(high_k, k)
                    data = _float32_at(blob, data_start + 4 * pixel, word, real)
                    if peak_i < 0 or data > peak_value:
                        peak_i, peak_j, peak_k, peak_value = i, j, k, data
                    w = data - _float32_at(
                        blob, background_start + 4 * pixel, word, real
                    )
                    if w > 0.0:
                        dx, dy, dz = i - first_i, j - first_j, k - first_k
                        weight += w
                        sx += w * dx
                        sy += w * dy
                        sz += w * dz
                        sxx += w * dx * dx
                        syy += w * dy * dy
                        szz += w * dz * dz
                        sxy += w * dx * dy
                pixel += 1
        footprint = max(footprint, on_image)
    return (
        count,
        footprint,
        (low_i, low_j, low_k, high_i, high_j, high_k),
        (first_i, first_j, first_k),
        (weight, sx, sy, sz, sxx, syy, szz, sxy),
        (peak_i, peak_j, peak_k),
    )


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
def measure_rows(blob, present, data_offset, bbox, code, counts, centroid, reals):
    """Measure every record given by (present, data_offset, bbox) into the outputs.

    ``counts`` is a tuple of int64 arrays (n_coded, extent_x, extent_y, extent_z,
    footprint), ``centroid`` (n, 3) float64 gets the weighted mean pixel centre in
    absolute pixel / image coordinates, and ``reals`` is a tuple of float64 arrays
    (total_weight, rms_width_x, rms_width_y, rms_width_z, covariance_xy, elongation,
    peak_centroid_distance, fill). Rows without pixel data or coded pixels get zero
    counts and NaN elsewhere (total weight 0); rows whose coded pixels have no positive
    weight get NaN for the weighted quantities only.
    """
    word = np.zeros(1, np.uint32)
    real = word.view(np.float32)
    for row in range(present.size):
        for array in counts:
            array[row] = 0
        for array in reals:
            array[row] = np.nan
        reals[0][row] = 0.0
        centroid[row, :] = np.nan
        nx = np.int64(bbox[row, 1]) - bbox[row, 0]
        ny = np.int64(bbox[row, 3]) - bbox[row, 2]
        nz = np.int64(bbox[row, 5]) - bbox[row, 4]
        if present[row] == 0 or nx <= 0 or ny <= 0 or nz <= 0:
            continue
        start = np.int64(data_offset[row])
        count, most, bounds, first, sums, peak = _row_sums(
            blob,
            start,
            start + 4 * nx * ny * nz,
            4 if present[row] == 1 else 1,
            (nx, ny, nz),
            code,
            word,
            real,
        )
        if count == 0:
            continue
        spans = (
            bounds[3] - bounds[0] + 1,
            bounds[4] - bounds[1] + 1,
            bounds[5] - bounds[2] + 1,
        )
        counts[0][row], counts[4][row] = count, most
        counts[1][row], counts[2][row], counts[3][row] = spans
        reals[7][row] = count / (spans[0] * spans[1] * spans[2])
        reals[0][row] = sums[0]
        _store_weighted(row, bbox, sums, first, peak, centroid, reals)


@numba.njit(cache=True, nogil=True)
def _store_weighted(row, bbox, sums, first, peak, centroid, reals):
    """Centroid, rms widths, covariance, elongation and peak distance of one row from
    its weighted sums (left NaN where the total weight is zero)."""
    weight, sx, sy, sz, sxx, syy, szz, sxy = sums
    if not weight > 0.0:
        return
    mean_x, mean_y, mean_z = sx / weight, sy / weight, sz / weight
    variance_x = max(sxx / weight - mean_x * mean_x, 0.0)
    variance_y = max(syy / weight - mean_y * mean_y, 0.0)
    variance_z = max(szz / weight - mean_z * mean_z, 0.0)
    covariance_xy = sxy / weight - mean_x * mean_y
    # Pixel (i, j, k) of the box has its centre at (x0 + i + 0.5, y0 + j + 0.5, ...).
    centroid[row, 0] = bbox[row, 0] + first[0] + 0.5 + mean_x
    centroid[row, 1] = bbox[row, 2] + first[1] + 0.5 + mean_y
    centroid[row, 2] = bbox[row, 4] + first[2] + 0.5 + mean_z
    reals[1][row] = np.sqrt(variance_x)
    reals[2][row] = np.sqrt(variance_y)
    reals[3][row] = np.sqrt(variance_z)
    reals[4][row] = covariance_xy
    reals[5][row] = _elongation(variance_x, variance_y, covariance_xy)
    dx = peak[0] - first[0] - mean_x
    dy = peak[1] - first[1] - mean_y
    dz = peak[2] - first[2] - mean_z
    reals[6][row] = np.sqrt(dx * dx + dy * dy + dz * dz)
