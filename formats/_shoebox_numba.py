"""Compiled kernels for the shoebox column (optional: imported only where numba is).

They mirror ``shoeboxes._scan_numpy`` and ``shoeboxes._count_mask_values_numpy`` check for
check; the tests run both engines on the same files and compare.
"""

from __future__ import annotations

import numba
import numpy as np

from .shoeboxes import (
    BAD_BBOX,
    BAD_PRESENT,
    HEADER_BYTES,
    OK,
    TOO_LARGE,
    TRUNCATED_HEADER,
)


@numba.njit(cache=True, nogil=True)
def _int32_at(blob, start):
    value = (
        np.int64(blob[start])
        | (np.int64(blob[start + 1]) << 8)
        | (np.int64(blob[start + 2]) << 16)
        | (np.int64(blob[start + 3]) << 24)
    )
    return value - (np.int64(1) << 32) if value >= (np.int64(1) << 31) else value


@numba.njit(cache=True, nogil=True)
def _read_header(blob, position, bbox):
    """The record header at ``position`` (its bbox into ``bbox``, 6 values): returns
    (problem code, panel, pixel-data marker, voxels, bytes of pixel data)."""
    size = blob.size
    if position + HEADER_BYTES > size:
        return TRUNCATED_HEADER, 0, 0, 0, 0
    value = _int32_at(blob, position)
    panel = value + (np.int64(1) << 32) if value < 0 else value
    volume = 1.0
    bad_bbox = False
    for k in range(6):
        bbox[k] = _int32_at(blob, position + 4 + 4 * k)
    for axis in range(3):
        extent = np.int64(bbox[2 * axis + 1]) - np.int64(bbox[2 * axis])
        if extent < 0:
            bad_bbox = True
        volume *= max(extent, 0)
    marker = blob[position + HEADER_BYTES - 1]
    if bad_bbox:
        return BAD_BBOX, panel, marker, 0, 0
    if marker > 2:
        return BAD_PRESENT, panel, marker, 0, 0
    if marker == 0:
        return OK, panel, marker, 0, 0
    per_voxel = 12 if marker == 1 else 9
    if volume * per_voxel > size - position - HEADER_BYTES:
        return TOO_LARGE, panel, marker, 0, 0
    voxels = np.int64(1)
    for axis in range(3):
        voxels *= np.int64(bbox[2 * axis + 1]) - np.int64(bbox[2 * axis])
    return OK, panel, marker, voxels, voxels * per_voxel


@numba.njit(cache=True, nogil=True)
def scan_records(blob, nrows, position, panel, bbox, present, data_offset):
    """Index ``nrows`` records starting at byte ``position``; return (problem code, row,
    position after the last record), with OK for sound records."""
    position = np.int64(position)
    for row in range(nrows):
        problem, panel[row], present[row], _, pixel_bytes = _read_header(
            blob, position, bbox[row]
        )
        if problem != OK:
            return problem, row, position
        position += HEADER_BYTES
        data_offset[row] = position
        position += pixel_bytes
    return OK, 0, position


@numba.njit(cache=True, nogil=True)
def _count_code(blob, start, n, stride, code):
    hits = 0
    for k in range(n):
        if blob[start + stride * k] & code == code:
            hits += 1
    return hits


@numba.njit(cache=True, nogil=True)
def scan_and_count(blob, nrows, position, code, counts, has_data):
    """scan_records and count_mask_values in one pass over the records, for callers that
    need only the counts: returns (problem code, row, position after the last record)."""
    position = np.int64(position)
    bbox = np.zeros(6, np.int32)
    for row in range(nrows):
        problem, _, marker, n, pixel_bytes = _read_header(blob, position, bbox)
        if problem != OK:
            return problem, row, position
        position += HEADER_BYTES
        has_data[row] = marker != 0
        if n > 0:
            counts[row] = (
                n
                if code == 0
                else _count_code(
                    blob, position + 4 * n, n, 4 if marker == 1 else 1, code
                )
            )
        position += pixel_bytes
    return OK, 0, position


@numba.njit(cache=True, nogil=True)
def count_mask_values(blob, present, data_offset, bbox, code, counts):
    """counts[i] = pixels of row i whose mask has every bit of ``code`` (low byte only)."""
    for row in range(present.size):
        if present[row] == 0:
            continue
        n = (
            (np.int64(bbox[row, 1]) - bbox[row, 0])
            * (np.int64(bbox[row, 3]) - bbox[row, 2])
            * (np.int64(bbox[row, 5]) - bbox[row, 4])
        )
        if n == 0:
            continue
        if code == 0:
            counts[row] = n
            continue
        counts[row] = _count_code(
            blob, data_offset[row] + 4 * n, n, 4 if present[row] == 1 else 1, code
        )
