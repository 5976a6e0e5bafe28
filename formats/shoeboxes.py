"""The ``Shoebox<>`` column: variable-length records, indexed and counted without a
per-reflection Python loop.

Each record is (reference §1)::

    uint32 panel | int32 x0 x1 y0 y1 z0 z1 | uint8 present |
    if present: float32 data[n] | mask[n] (int32 if present == 1, uint8 if 2) | float32 background[n]

with ``n = (x1-x0)(y1-y0)(z1-z0)``. Where a record starts depends on every record before
it, so finding them is inherently sequential. Two engines do it:

``numba``
    a compiled loop over the records (one pass, no temporary arrays); used when numba is
    installed.
``numpy``
    speculative parsing: record sizes are predicted from the table's ``bbox`` column,
    record starts from their cumulative sum, and the headers found there are checked in one
    vectorised step; the first wrong guess ends a window and parsing resumes after it.
    Exact for every file, fast where the ``bbox`` column matches the shoeboxes (the usual
    case), slower but still correct where it does not.

Both engines apply the same checks, in the same order, so they accept and reject exactly
the same files; every claim (a bbox volume) is checked against the bytes left in the
column before anything is sized from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine import resolve_engine
from . import source
from .errors import FileFormatError

HEADER_BYTES = 29
NO_PIXEL_DATA, INT32_MASK, UINT8_MASK = 0, 1, 2
BYTES_PER_VOXEL = np.array(
    [0, 12, 9], dtype=np.int64
)  # data + mask + background, by `present`
_HEADER_DTYPE = np.dtype([("panel", "<u4"), ("bbox", "<i4", (6,)), ("present", "u1")])
assert _HEADER_DTYPE.itemsize == HEADER_BYTES


PREFETCH_BYTES = 1 << 26  # mapped ahead of the streaming scan in one call

# Problems a scan can find; the kernels return these codes, messages are made here.
OK, TRUNCATED_HEADER, BAD_BBOX, BAD_PRESENT, TOO_LARGE, TRAILING_BYTES = range(6)


def record_sizes(
    bbox: np.ndarray, present: np.ndarray, remaining: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Byte size of each record and a problem code (OK where the record is sound).

    ``remaining`` is the number of column bytes after each record's header: a bbox whose
    pixel arrays would not fit there is TOO_LARGE, checked in floating point first so a
    hostile bbox cannot overflow the integer product.
    """
    bbox = bbox.astype(np.int64)
    extent = bbox[:, 1::2] - bbox[:, 0::2]
    problem = np.zeros(len(bbox), dtype=np.int8)
    problem[(extent < 0).any(axis=1)] = BAD_BBOX
    problem[(present > UINT8_MASK) & (problem == OK)] = BAD_PRESENT
    per_voxel = BYTES_PER_VOXEL[np.minimum(present, UINT8_MASK)]
    volume_estimate = (
        np.prod(np.maximum(extent, 0).astype(np.float64), axis=1) * per_voxel
    )
    problem[(volume_estimate > remaining) & (problem == OK)] = TOO_LARGE
    sound = problem == OK
    voxels = np.where(sound, np.prod(np.maximum(extent, 0), axis=1), 0)
    return HEADER_BYTES + voxels * per_voxel, problem


def _scan_numpy(
    blob: np.ndarray,
    nrows: int,
    bbox_hint: np.ndarray | None,
    start_row: int = 0,
    stop_row: int | None = None,
    position: int = 0,
):
    """Speculative, windowed scan of rows [start_row, stop_row), the first starting at byte
    ``position``: returns their headers and data offsets, (problem, row) and the position
    after the last record read."""
    stop_row = nrows if stop_row is None else stop_row
    size = blob.size
    headers = np.zeros(stop_row - start_row, dtype=_HEADER_DTYPE)
    data_offset = np.zeros(stop_row - start_row, dtype=np.int64)
    if stop_row == start_row:
        return headers, data_offset, (OK, 0), position
    if bbox_hint is None or bbox_hint.shape != (nrows, 6):
        bbox_hint = np.zeros((nrows, 6), dtype=np.int32)
    guess_present = np.uint8(blob[HEADER_BYTES - 1])
    byte_steps = np.arange(HEADER_BYTES, dtype=np.int64)
    row, window = start_row, 1024
    while row < stop_row:
        stop = min(stop_row, row + window)
        hint = bbox_hint[row:stop]
        hint_extent = np.maximum(hint[:, 1::2].astype(np.int64) - hint[:, 0::2], 0)
        hint_sizes = (
            HEADER_BYTES
            + np.prod(hint_extent, axis=1) * BYTES_PER_VOXEL[min(guess_present, 2)]
        )
        starts = np.empty(stop - row, dtype=np.int64)
        starts[0] = position
        np.cumsum(hint_sizes[:-1], out=starts[1:])
        starts[1:] += position
        inside = starts + HEADER_BYTES <= size
        gathered = blob[np.minimum(starts[:, None] + byte_steps, size - 1)]
        window_headers = np.ascontiguousarray(gathered).view(_HEADER_DTYPE)[:, 0]
        sizes, problem = record_sizes(
            window_headers["bbox"],
            window_headers["present"],
            size - starts - HEADER_BYTES,
        )
        problem[~inside] = TRUNCATED_HEADER
        # A guess is confirmed while each record's true size equals the predicted one:
        # the first disagreement (or problem) is the last record read at a known start.
        wrong = (sizes != hint_sizes) | (problem != OK)
        last = int(np.argmax(wrong)) if wrong.any() else len(starts) - 1
        verified = slice(row - start_row, row - start_row + last + 1)
        headers[verified] = window_headers[: last + 1]
        data_offset[verified] = starts[: last + 1] + HEADER_BYTES
        if problem[last] != OK:
            return headers, data_offset, (int(problem[last]), row + last), position
        position = int(starts[last] + sizes[last])
        row += last + 1
        window = (
            min(window * 2, 1 << 20) if not wrong.any() else max(64, 2 * (last + 1))
        )
    return headers, data_offset, (OK, 0), position


def _scan_numba(
    blob: np.ndarray,
    nrows: int,
    bbox_hint=None,
    start_row: int = 0,
    stop_row: int | None = None,
    position: int = 0,
):
    from ._shoebox_numba import scan_records

    stop_row = nrows if stop_row is None else stop_row
    n = stop_row - start_row
    headers = np.zeros(n, dtype=_HEADER_DTYPE)
    panel, bbox = np.zeros(n, dtype=np.uint32), np.zeros((n, 6), dtype=np.int32)
    present, data_offset = np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.int64)
    problem, row, position = scan_records(
        blob, n, position, panel, bbox, present, data_offset
    )
    headers["panel"], headers["bbox"], headers["present"] = panel, bbox, present
    return headers, data_offset, (int(problem), start_row + int(row)), int(position)


def _scan(engine: str, blob, nrows, bbox_hint, start_row=0, stop_row=None, position=0):
    scan = _scan_numba if resolve_engine(engine) == "numba" else _scan_numpy
    return scan(blob, nrows, bbox_hint, start_row, stop_row, position)


def _checked_code(code) -> int:
    code = int(code)
    if not 0 <= code <= 255:
        raise ValueError(f"mask code {code} is outside 0..255")
    return code


def _check_row_count(blob: np.ndarray, nrows: int, path: str | None) -> None:
    if nrows * HEADER_BYTES > blob.size:
        raise FileFormatError(
            path,
            f"has a truncated or corrupt shoebox column: {nrows} records need at least "
            f"{nrows * HEADER_BYTES} bytes but the column has {blob.size}",
        )


def count_pixels_streaming(
    blob: np.ndarray,
    nrows: int,
    code: int,
    engine: str = "auto",
    bbox_hint: np.ndarray | None = None,
    path: str | None = None,
    release_pages: bool = False,
    rows_per_chunk: int = 1 << 18,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row counts of ``code`` and pixel-data presence, in one pass over the column that
    keeps only the current chunk's index: memory is the two result arrays plus a chunk.
    With ``release_pages``, each finished stretch of a memory-mapped file is handed back to
    the operating system, so resident memory does not grow with the file."""
    _check_row_count(blob, nrows, path)
    code = _checked_code(code)
    compiled = resolve_engine(engine) == "numba"
    if compiled:
        from ._shoebox_numba import scan_and_count
    counts = np.zeros(nrows, dtype=np.int64)
    has_data = np.zeros(nrows, dtype=bool)
    position = 0
    for start in range(0, nrows, rows_per_chunk):
        stop = min(nrows, start + rows_per_chunk)
        source.populate_pages(blob[position : position + PREFETCH_BYTES])
        if compiled:  # indexing and counting in one pass
            problem, _, end = scan_and_count(
                blob,
                stop - start,
                position,
                code,
                counts[start:stop],
                has_data[start:stop],
            )
        else:
            headers, data_offset, (problem, _), end = _scan_numpy(
                blob, nrows, bbox_hint, start, stop, position
            )
        if problem != OK:
            ShoeboxColumn.from_blob(
                blob, nrows, bbox_hint=bbox_hint, engine=engine, path=path
            )  # raises, with details
            raise FileFormatError(path, "has a corrupt shoebox column")  # not reached
        if not compiled:
            chunk = ShoeboxColumn(
                blob, headers["panel"], headers["bbox"], headers["present"], data_offset
            )
            counts[start:stop] = _count_mask_values_numpy(chunk, code)
            has_data[start:stop] = chunk.has_pixel_data
        if release_pages:
            source.release_pages(blob[position:end])
        position = end
    if position != blob.size:
        raise FileFormatError(
            path, _problem_message(TRAILING_BYTES, nrows, None, blob.size)
        )
    return counts, has_data


def _problem_message(problem: int, row: int, headers: np.ndarray, size: int) -> str:
    if problem == TRAILING_BYTES:
        return f"has a corrupt shoebox column: {size} bytes hold more than its records (extra bytes after record {row - 1})"
    if problem == TRUNCATED_HEADER:
        return f"has a truncated shoebox column: record {row} runs past the end of the column"
    header = headers[row]
    if problem == BAD_BBOX:
        return f"has a corrupt shoebox column: record {row} has an impossible bbox {header['bbox'].tolist()}"
    if problem == BAD_PRESENT:
        return (
            f"has a corrupt shoebox column: record {row} has pixel-data marker {int(header['present'])} "
            "(only 0, 1 and 2 exist)"
        )
    return (
        f"has a corrupt or truncated shoebox column: record {row} has bbox {header['bbox'].tolist()}, "
        "whose pixel arrays would run past the end of the column"
    )


@dataclass(eq=False)
class ShoeboxColumn:
    """Where every shoebox lies in a ``Shoebox<>`` blob; the pixels stay in the blob.

    Attributes are per-row arrays: ``panel`` (uint32), ``bbox`` (n, 6 int32: x0 x1 y0 y1 z0
    z1), ``present`` (0 none, 1 int32 mask, 2 uint8 mask) and ``data_offset`` (int64, where
    the float32 data array starts in ``blob``).
    """

    blob: np.ndarray
    panel: np.ndarray
    bbox: np.ndarray
    present: np.ndarray
    data_offset: np.ndarray

    @classmethod
    def from_blob(
        cls,
        blob: np.ndarray,
        nrows: int,
        bbox_hint: np.ndarray | None = None,
        engine: str = "auto",
        path: str | None = None,
    ) -> "ShoeboxColumn":
        """Index ``nrows`` records in ``blob`` (uint8); raise FileFormatError if corrupt."""
        _check_row_count(blob, nrows, path)
        headers, data_offset, (problem, row), end = _scan(
            engine, blob, nrows, bbox_hint
        )
        if problem == OK and end != blob.size:
            problem, row = TRAILING_BYTES, nrows
        if problem != OK:
            raise FileFormatError(
                path, _problem_message(problem, row, headers, blob.size)
            )
        return cls(
            blob,
            headers["panel"].copy(),
            headers["bbox"].copy(),
            headers["present"].copy(),
            data_offset,
        )

    def __len__(self) -> int:
        return len(self.present)

    @property
    def has_pixel_data(self) -> np.ndarray:
        """True where the record carries pixel arrays (present byte 1 or 2)."""
        return self.present != NO_PIXEL_DATA

    @property
    def n_voxels(self) -> np.ndarray:
        """Pixels in each shoebox's bbox (0 where there is no pixel data)."""
        extent = self.bbox[:, 1::2].astype(np.int64) - self.bbox[:, 0::2]
        return np.where(self.has_pixel_data, np.prod(extent, axis=1), 0)

    def count_mask_values(self, code: int, engine: str = "auto") -> np.ndarray:
        """Per row, the pixels whose mask has every bit of ``code`` set (DIALS's
        ``Shoebox.count_mask_values``); 0 where the row has no pixel data, as in DIALS, so
        use :attr:`has_pixel_data` to tell those rows apart."""
        code = _checked_code(code)
        if resolve_engine(engine) == "numba":
            from ._shoebox_numba import count_mask_values

            counts = np.zeros(len(self), dtype=np.int64)
            count_mask_values(
                self.blob, self.present, self.data_offset, self.bbox, code, counts
            )
            return counts
        return _count_mask_values_numpy(self, code)

    def pixels(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(data, mask, background)`` of one row as (nz, ny, nx) arrays, or None."""
        if not self.has_pixel_data[row]:
            return None
        x0, x1, y0, y1, z0, z1 = (int(v) for v in self.bbox[row])
        shape = (z1 - z0, y1 - y0, x1 - x0)
        n = int(np.prod(shape))
        start = int(self.data_offset[row])
        mask_type = "<i4" if self.present[row] == INT32_MASK else "u1"
        data = np.frombuffer(self.blob, "<f4", n, start)
        mask = np.frombuffer(self.blob, mask_type, n, start + 4 * n)
        background = np.frombuffer(self.blob, "<f4", n, start + 4 * n + mask.nbytes)
        return data.reshape(shape), mask.reshape(shape), background.reshape(shape)


def _segment_indices(
    starts: np.ndarray, lengths: np.ndarray, stride: np.ndarray | int = 1
) -> np.ndarray:
    """Concatenated ``start + stride * arange(length)`` for every segment, vectorised."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    steps = np.arange(total, dtype=np.int64) - offsets
    if not np.isscalar(stride):
        stride = np.repeat(stride, lengths)
    return np.repeat(starts, lengths) + steps * stride


def _count_mask_values_numpy(
    column: ShoeboxColumn, code: int, voxels_per_chunk: int = 1 << 22
) -> np.ndarray:
    """Chunked gather of mask bytes; memory is bounded by ``voxels_per_chunk``, not the file."""
    n_voxels = column.n_voxels
    counts = np.zeros(len(column), dtype=np.int64)
    if code == 0:
        return n_voxels
    rows = np.flatnonzero(n_voxels)
    # Only the low byte of an int32 mask can hold bits of a code below 256 (little-endian).
    stride = np.where(column.present[rows] == INT32_MASK, 4, 1).astype(np.int64)
    mask_start = column.data_offset[rows] + 4 * n_voxels[rows]
    cumulative = np.cumsum(n_voxels[rows])
    begin = 0
    while begin < len(rows):
        limit = (cumulative[begin - 1] if begin else 0) + voxels_per_chunk
        end = max(begin + 1, int(np.searchsorted(cumulative, limit, side="right")))
        lengths = n_voxels[rows[begin:end]]
        mask_bytes = column.blob[
            _segment_indices(mask_start[begin:end], lengths, stride[begin:end])
        ]
        hits = np.concatenate(([0], np.cumsum((mask_bytes & code) == code)))
        bounds = np.cumsum(lengths)
        counts[rows[begin:end]] = hits[bounds] - hits[bounds - lengths]
        begin = end
    return counts
