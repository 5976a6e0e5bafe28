"""Compiled kernels for the shoebox column (optional: imported only where numba is).

They mirror ``shoeboxes._scan_numpy`` and ``shoeboxes._count_mask_values_numpy`` check for
check; the tests run both engines on the same files and compare.
"""

import numba
import numpy as np

from .shoeboxes import BAD_BBOX, BAD_PRESENT, HEADER_BYTES, OK, TOO_LARGE, TRUNCATED_HEADER


@numba.njit(cache=True, nogil=True)
def _int32_at(blob, start):
    value = np.int64(blob[start]) | (np.int64(blob[start + 1]) << 8) | (np.int64(blob[start + 2]) << 16) | (np.int64(blob[start + 3]) << 24)
    return value - (np.int64(1) << 32) if value >= (np.int64(1) << 31) else value


@numba.njit(cache=True, nogil=True)
def scan_records(blob, nrows, position, panel, bbox, present, data_offset):
    """Index ``nrows`` records starting at byte ``position``; return (problem code, row,
    position after the last record), with OK for sound records."""
    size = blob.size
    position = np.int64(position)
    for row in range(nrows):
        if position + HEADER_BYTES > size:
            return TRUNCATED_HEADER, row, position
        value = _int32_at(blob, position)
        panel[row] = value + (np.int64(1) << 32) if value < 0 else value
        volume = 1.0
        bad_bbox = False
        for k in range(6):
            bbox[row, k] = _int32_at(blob, position + 4 + 4 * k)
        for axis in range(3):
            extent = np.int64(bbox[row, 2 * axis + 1]) - np.int64(bbox[row, 2 * axis])
            if extent < 0:
                bad_bbox = True
            volume *= max(extent, 0)
        marker = blob[position + HEADER_BYTES - 1]
        present[row] = marker
        if bad_bbox:
            return BAD_BBOX, row, position
        if marker > 2:
            return BAD_PRESENT, row, position
        position += HEADER_BYTES
        data_offset[row] = position
        if marker == 0:
            continue
        per_voxel = 12 if marker == 1 else 9
        if volume * per_voxel > size - position:
            return TOO_LARGE, row, position
        voxels = np.int64(1)
        for axis in range(3):
            voxels *= np.int64(bbox[row, 2 * axis + 1]) - np.int64(bbox[row, 2 * axis])
        position += voxels * per_voxel
    return OK, 0, position


@numba.njit(cache=True, nogil=True)
def count_mask_values(blob, present, data_offset, bbox, code, counts):
    """counts[i] = pixels of row i whose mask has every bit of ``code`` (low byte only)."""
    for row in range(present.size):
        if present[row] == 0:
            continue
        n = (np.int64(bbox[row, 1]) - bbox[row, 0]) * (np.int64(bbox[row, 3]) - bbox[row, 2]) * (np.int64(bbox[row, 5]) - bbox[row, 4])
        if n == 0:
            continue
        if code == 0:
            counts[row] = n
            continue
        start = data_offset[row] + 4 * n
        stride = 4 if present[row] == 1 else 1
        hits = 0
        for k in range(n):
            if blob[start + stride * k] & code == code:
                hits += 1
        counts[row] = hits
