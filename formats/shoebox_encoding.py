"""Building ``Shoebox<>`` column blobs: for simulated data, tests and version conversion.

Not on any analysis path: writing happens once per example file or test, so a loop over
rows is fine here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .shoeboxes import INT32_MASK, NO_PIXEL_DATA, UINT8_MASK, ShoeboxColumn

_MASK_DTYPES = {INT32_MASK: np.dtype("<i4"), UINT8_MASK: np.dtype("u1")}


def encode_shoeboxes(
    panel: np.ndarray,
    bbox: np.ndarray,
    pixels: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray] | None],
    mask_kind: int = UINT8_MASK,
) -> np.ndarray:
    """The column blob for rows with ``panel``, ``bbox`` (n, 6) and, per row, either
    ``(data, mask, background)`` arrays of the bbox's (nz, ny, nx) shape or None (no pixel
    data). ``mask_kind`` 2 writes uint8 masks (DIALS >= 3.29), 1 int32 masks.

    Parameters
    ----------
    panel : numpy.ndarray
        (n,): each row's panel number.
    bbox : numpy.ndarray
        (n, 6): each row's x0, x1, y0, y1 (pixels) and z0, z1 (frames).
    pixels : sequence of tuple of numpy.ndarray or None
        Per row, ``(data, mask, background)`` of shape (nz, ny, nx), or None.
    mask_kind : int
        1 (int32 masks) or 2 (uint8 masks).

    Returns
    -------
    numpy.ndarray
        uint8, the column's bytes as DIALS writes them.

    Raises
    ------
    ValueError
        For another ``mask_kind``, arguments of different lengths, pixel arrays not of
        the bbox's shape, or masks that uint8 cannot hold.
    """
    if mask_kind not in _MASK_DTYPES:
        raise ValueError("mask_kind must be 1 (int32 masks) or 2 (uint8 masks)")
    mask_dtype = _MASK_DTYPES[mask_kind]
    bbox = np.asarray(bbox, dtype="<i4").reshape(-1, 6)
    panel = np.asarray(panel, dtype="<u4")
    if not len(panel) == len(bbox) == len(pixels):
        raise ValueError("panel, bbox and pixels must have one entry per row")
    pieces: list[bytes] = []
    for row, arrays in enumerate(pixels):
        pieces.append(panel[row : row + 1].tobytes() + bbox[row].tobytes())
        if arrays is None:
            pieces.append(bytes([NO_PIXEL_DATA]))
            continue
        x0, x1, y0, y1, z0, z1 = (int(v) for v in bbox[row])
        shape = (z1 - z0, y1 - y0, x1 - x0)
        data, mask, background = (np.asarray(a) for a in arrays)
        if data.shape != shape or mask.shape != shape or background.shape != shape:
            raise ValueError(
                f"row {row}: pixel arrays must have the bbox's shape {shape}"
            )
        if (
            mask_kind == UINT8_MASK
            and mask.size
            and (mask.min() < 0 or mask.max() > 255)
        ):
            raise ValueError(
                f"row {row}: mask values outside 0..255 cannot be stored as uint8"
            )
        pieces.append(bytes([mask_kind]))
        pieces.append(np.ascontiguousarray(data, dtype="<f4").tobytes())
        pieces.append(np.ascontiguousarray(mask, dtype=mask_dtype).tobytes())
        pieces.append(np.ascontiguousarray(background, dtype="<f4").tobytes())
    return np.frombuffer(b"".join(pieces), dtype=np.uint8)


def reencode(column: ShoeboxColumn, mask_kind: int) -> ShoeboxColumn:
    """The same shoeboxes with every mask stored as ``mask_kind`` (1 int32, 2 uint8).

    Parameters
    ----------
    column : ShoeboxColumn
        The shoeboxes.
    mask_kind : int
        1 (int32 masks) or 2 (uint8 masks).

    Returns
    -------
    ShoeboxColumn
        A new column indexing a new blob.

    Raises
    ------
    ValueError
        For another ``mask_kind``, or masks outside 0..255 written as uint8.
    """
    pixels = [column.pixels(row) for row in range(len(column))]
    blob = encode_shoeboxes(column.panel, column.bbox, pixels, mask_kind=mask_kind)
    return ShoeboxColumn.from_blob(blob, len(column))
