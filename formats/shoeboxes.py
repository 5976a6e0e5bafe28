"""The ``Shoebox<>`` column: variable-length records, indexed and counted by compiled
kernels, without a per-reflection Python loop.

Each record is (doc/dials_facts.md §1)::

    uint32 panel | int32 x0 x1 y0 y1 z0 z1 | uint8 present |
    if present: float32 data[n] | mask[n] (int32 if present == 1, uint8 if 2) | float32 background[n]

with ``n = (x1-x0)(y1-y0)(z1-z0)``. Where a record starts depends on every record before
it, so finding them is one sequential pass; every claim (a bbox volume) is checked
against the bytes left in the column before anything is sized from it, so a hostile
file gives a :class:`FileFormatError`, never an overflow or a huge allocation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ..jit import njit
from . import source
from .errors import FileFormatError

HEADER_BYTES = 29
NO_PIXEL_DATA, INT32_MASK, UINT8_MASK = 0, 1, 2
_HEADER_DTYPE = np.dtype([("panel", "<u4"), ("bbox", "<i4", (6,)), ("present", "u1")])
assert _HEADER_DTYPE.itemsize == HEADER_BYTES


PREFETCH_BYTES = 1 << 26  # mapped ahead of the streaming scan in one call

# Problems a scan can find; the kernels return these codes, messages are made here.
OK, TRUNCATED_HEADER, BAD_BBOX, BAD_PRESENT, TOO_LARGE, TRAILING_BYTES = range(6)


# Loads at any byte offset. Records are packed back to back, so a number in them
# cannot be read through a view of the column (a float32 view at an unaligned offset
# lets the compiler assume an alignment that is not there). Each is one load that the
# compiler is told may be unaligned; assembling the bytes with shifts gave the same
# numbers and took half as long again over a shape pass. The file's numbers are
# little-endian, like every host numba supports here (checked on import). Nothing
# writes through them, and the kernels check that every record lies inside the column.
if sys.byteorder != "little":
    raise ImportError("the shoebox kernels need a little-endian host")


BYTES_POINTER = types.CPointer(types.uint8)


def _is_bytes(blob) -> bool:
    """Whether a numba type is a byte pointer or a contiguous 1-D uint8 array."""
    if blob == BYTES_POINTER:
        return True
    return (
        isinstance(blob, types.Array)
        and blob.dtype == types.uint8
        and blob.ndim == 1
        and blob.layout == "C"
    )


def _bytes_address(context, builder, blob_type, blob):
    """The address of the first byte of a blob of a type that :func:`_is_bytes`."""
    if blob_type == BYTES_POINTER:
        return blob
    return context.make_array(blob_type)(context, builder, blob).data


def _load(blob, position, llvm_type, numba_type):
    """The typing and code of one unaligned load of ``numba_type`` from a contiguous
    uint8 array or a byte pointer (None: not for these argument types)."""
    if not _is_bytes(blob) or not isinstance(position, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        start = _bytes_address(context, builder, signature.args[0], args[0])
        offset = context.cast(builder, args[1], signature.args[1], types.intp)
        address = builder.gep(start, [offset])
        pointer = builder.bitcast(address, llvm_type.as_pointer())
        return builder.load(pointer, align=1)

    return numba_type(blob, position), codegen


@intrinsic
def bytes_pointer(typingctx, blob):
    """The address of the first byte of the contiguous uint8 array ``blob``, for
    compiled helpers called once per record: an array passed to them is reference
    counted on every call (an atomic increment and decrement), a pointer is not. The
    pointer is valid while the array lives; index it (``pointer[i]``) or read from it
    with :func:`float32_at` and :func:`int32_at` only at positions the array holds."""
    if not _is_bytes(blob) or blob == BYTES_POINTER:
        return None

    def codegen(context, builder, signature, args):
        return _bytes_address(context, builder, signature.args[0], args[0])

    return BYTES_POINTER(blob), codegen


@intrinsic
def float32_at(typingctx, blob, position):
    """The float32 at byte ``position`` of the contiguous uint8 array (or byte pointer)
    ``blob``, at any alignment."""
    return _load(blob, position, ir.FloatType(), types.float32)


@intrinsic
def int32_at(typingctx, blob, position):
    """The int32 at byte ``position`` of the contiguous uint8 array (or byte pointer)
    ``blob``, at any alignment."""
    return _load(blob, position, ir.IntType(32), types.int32)


@intrinsic
def prefetch_at(typingctx, blob, position):
    """Ask for the cache line at byte ``position`` of the contiguous uint8 array (or
    byte pointer) ``blob`` ahead of its use: a hint that reads nothing and never
    faults, so the position may lie past the end. Where a scan's next record lies
    depends on the one before, so each header waits for memory; a hint some records
    ahead overlaps those waits (the scan of a 1M-row column took a third less time)."""
    if not _is_bytes(blob) or not isinstance(position, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        start = _bytes_address(context, builder, signature.args[0], args[0])
        offset = context.cast(builder, args[1], signature.args[1], types.intp)
        address = builder.gep(start, [offset])  # not "inbounds": may pass the end
        pointer_type = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function = builder.module.declare_intrinsic(
            "llvm.prefetch",
            [pointer_type],
            ir.FunctionType(ir.VoidType(), [pointer_type, int32, int32, int32]),
        )
        # a read (0), kept in every cache level (3), of data (1)
        read, locality, data = (
            ir.Constant(int32, 0),
            ir.Constant(int32, 3),
            ir.Constant(int32, 1),
        )
        builder.call(
            function, [builder.bitcast(address, pointer_type), read, locality, data]
        )
        return context.get_dummy_value()

    return types.none(blob, position), codegen


SCAN_AHEAD_BYTES = 1024  # how far ahead of the header being read a scan asks for


@njit(inline="always")
def _read_header(blob, size, position):
    """The record header at ``position`` of a column of ``size`` bytes (``blob``, a byte
    pointer: no reference counting per record): returns (problem code, panel,
    pixel-data marker, voxels, bytes of pixel data, bbox as 6 values)."""
    if position + HEADER_BYTES > size:
        return TRUNCATED_HEADER, 0, 0, 0, 0, (0, 0, 0, 0, 0, 0)
    value = np.int64(int32_at(blob, position))
    panel = value + (np.int64(1) << 32) if value < 0 else value
    bbox = (
        int32_at(blob, position + 4), int32_at(blob, position + 8),
        int32_at(blob, position + 12), int32_at(blob, position + 16),
        int32_at(blob, position + 20), int32_at(blob, position + 24),
    )  # fmt: skip
    extents = (
        np.int64(bbox[1]) - np.int64(bbox[0]),
        np.int64(bbox[3]) - np.int64(bbox[2]),
        np.int64(bbox[5]) - np.int64(bbox[4]),
    )
    marker = blob[position + HEADER_BYTES - 1]
    if extents[0] < 0 or extents[1] < 0 or extents[2] < 0:
        return BAD_BBOX, panel, marker, 0, 0, bbox
    if marker > 2:
        return BAD_PRESENT, panel, marker, 0, 0, bbox
    if marker == 0:
        return OK, panel, marker, 0, 0, bbox
    per_voxel = 12 if marker == 1 else 9
    volume = np.float64(extents[0]) * np.float64(extents[1]) * np.float64(extents[2])
    if volume * per_voxel > size - position - HEADER_BYTES:
        return TOO_LARGE, panel, marker, 0, 0, bbox
    voxels = extents[0] * extents[1] * extents[2]
    return OK, panel, marker, voxels, voxels * per_voxel, bbox


@njit
def scan_records(blob, nrows, position, panel, bbox, present, data_offset):
    """Index ``nrows`` records starting at byte ``position``; return (problem code, row,
    position after the last record), with OK for sound records.

    Parameters
    ----------
    blob : numpy.ndarray
        uint8, the column's bytes.
    nrows : int
        The number of records to index.
    position : int
        The byte offset of the first record.
    panel, bbox, present, data_offset : numpy.ndarray
        Filled per record: its panel, its bbox (x0, x1, y0, y1, z0, z1; pixels and
        frames), its present byte and the byte offset of its pixel data.

    Returns
    -------
    tuple of int
        (problem code, the row of the problem, the byte position after the last
        record read).
    """
    position = np.int64(position)
    pointer, size = bytes_pointer(blob), blob.size
    for row in range(nrows):
        prefetch_at(pointer, position + SCAN_AHEAD_BYTES)
        problem, panel[row], present[row], _, pixel_bytes, box = _read_header(
            pointer, size, position
        )
        for k in range(6):
            bbox[row, k] = box[k]
        if problem != OK:
            return problem, row, position
        position += HEADER_BYTES
        data_offset[row] = position
        position += pixel_bytes
    return OK, 0, position


@njit(inline="always")
def _count_code(blob, start, n, stride, code):
    hits = 0
    for k in range(n):
        if blob[start + stride * k] & code == code:
            hits += 1
    return hits


@njit
def scan_and_count(blob, nrows, position, code, counts, has_data):
    """scan_records and count_mask_values in one pass over the records, for callers that
    need only the counts: returns (problem code, row, position after the last record).

    Parameters
    ----------
    blob : numpy.ndarray
        uint8, the column's bytes.
    nrows : int
        The number of records to read.
    position : int
        The byte offset of the first record.
    code : int
        The mask code a pixel must have every bit of (0 counts every pixel).
    counts : numpy.ndarray
        int64, zeros, per record: receives its count of pixels.
    has_data : numpy.ndarray
        bool, per record: receives whether it has pixel data.

    Returns
    -------
    tuple of int
        (problem code, the row of the problem, the byte position after the last
        record read).
    """
    position = np.int64(position)
    pointer, size = bytes_pointer(blob), blob.size
    for row in range(nrows):
        prefetch_at(pointer, position + SCAN_AHEAD_BYTES)
        problem, _, marker, n, pixel_bytes, _ = _read_header(pointer, size, position)
        if problem != OK:
            return problem, row, position
        position += HEADER_BYTES
        has_data[row] = marker != 0
        if n > 0:
            counts[row] = (
                n
                if code == 0
                else _count_code(
                    pointer, position + 4 * n, n, 4 if marker == 1 else 1, code
                )
            )
        position += pixel_bytes
    return OK, 0, position


@njit
def count_mask_values(blob, present, data_offset, bbox, code, counts):
    """counts[i] = pixels of row i whose mask has every bit of ``code`` (low byte only).

    Parameters
    ----------
    blob : numpy.ndarray
        uint8, the column's bytes.
    present : numpy.ndarray
        Each row's present byte (0: no pixel data; 1: int32 masks; 2: uint8 masks).
    data_offset : numpy.ndarray
        The byte offset of each row's pixel data in ``blob``.
    bbox : numpy.ndarray
        (n, 6): each row's x0, x1, y0, y1, z0, z1.
    code : int
        The mask code, 0 to 255.
    counts : numpy.ndarray
        int64, zeros, per row: receives the counts (rows without pixel data are left).

    Returns
    -------
    None
    """
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


def _map_ahead(blob: np.ndarray, position: int, mapped: int) -> int:
    """Map the column's pages from ``position`` to PREFETCH_BYTES past it in one call,
    leaving out those up to ``mapped`` that an earlier call mapped already (walking
    mapped pages again costs about as much as mapping them); returns how far the
    column is now mapped."""
    end = min(blob.size, position + PREFETCH_BYTES)
    if end > mapped:
        source.populate_pages(blob[max(position, mapped) : end])
    return max(end, mapped)


def count_pixels_streaming(
    blob: np.ndarray,
    nrows: int,
    code: int,
    path: str | None = None,
    release_pages: bool = False,
    rows_per_chunk: int = 1 << 18,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row counts of ``code`` and pixel-data presence, in one pass that indexes and
    counts together and keeps no index: memory is the two result arrays.

    Parameters
    ----------
    blob : numpy.ndarray
        The column's bytes (uint8), possibly a read-only memory map.
    nrows : int
        The number of records the table claims.
    code : int
        Count pixels whose mask has every bit of ``code`` (0: every pixel).
    path : str, optional
        The file, named in errors.
    release_pages : bool
        Hand each finished stretch of a memory-mapped file back to the operating
        system, so that resident memory does not grow with the file.
    rows_per_chunk : int
        Records scanned between two such hand-backs.

    Returns
    -------
    counts, has_data : numpy.ndarray
        int64 counts (0 where a row has no pixel data) and bool presence, per row.
    """
    _check_row_count(blob, nrows, path)
    code = _checked_code(code)
    counts = np.zeros(nrows, dtype=np.int64)
    has_data = np.zeros(nrows, dtype=bool)
    position = mapped = 0
    for start in range(0, nrows, rows_per_chunk):
        stop = min(nrows, start + rows_per_chunk)
        mapped = _map_ahead(blob, position, mapped)
        problem, _, end = scan_and_count(
            blob, stop - start, position, code, counts[start:stop], has_data[start:stop]
        )
        if problem != OK:
            ShoeboxColumn.from_blob(blob, nrows, path=path)  # raises, with details
        if release_pages:
            source.release_pages(blob[position:end])
        position = end
    if position != blob.size:
        raise FileFormatError(
            path, _problem_message(TRAILING_BYTES, nrows, None, blob.size)
        )
    return counts, has_data


def indexed_chunks(
    blob: np.ndarray,
    nrows: int,
    rows_per_chunk: int,
    path: str | None = None,
    release_pages: bool = False,
    index: ShoeboxColumn | None = None,
) -> Iterator[tuple[int, int, ShoeboxColumn]]:
    """The column indexed a stretch of rows at a time: yields ``(start, stop, column)``
    with ``column`` indexing rows [start, stop) (its offsets point into ``blob``).

    Only the current stretch's index is held (unless ``index`` is given); with
    ``release_pages`` the stretch's bytes are handed back to the operating system once
    the caller has used them, so resident memory does not grow with the file.

    Parameters
    ----------
    blob : numpy.ndarray
        uint8, the shoebox column's bytes.
    nrows : int
        The number of records.
    rows_per_chunk : int
        Rows per stretch (the last may be shorter).
    path : str, optional
        The file's name, for errors.
    release_pages : bool
        Release each stretch's bytes after the caller has used them.
    index : ShoeboxColumn, optional
        Room for the whole column's index (:meth:`ShoeboxColumn.empty`): each stretch
        is indexed into its rows of it, and the stretches yielded are views of it, so
        the whole index is there at the end without joining the stretches.

    Returns
    -------
    iterator of tuple of (int, int, ShoeboxColumn)
        Each stretch's first row, one past its last row, and its index.

    Raises
    ------
    FileFormatError
        Where the column is truncated or corrupt, naming the record.
    """
    _check_row_count(blob, nrows, path)
    position = mapped = 0
    for start in range(0, nrows, rows_per_chunk):
        stop = min(nrows, start + rows_per_chunk)
        n = stop - start
        mapped = _map_ahead(blob, position, mapped)
        stretch = (
            ShoeboxColumn.empty(blob, n) if index is None else index.rows(start, stop)
        )
        problem, _, end = scan_records(
            blob, n, position, stretch.panel, stretch.bbox, stretch.present,
            stretch.data_offset,
        )  # fmt: skip
        if problem != OK:
            ShoeboxColumn.from_blob(blob, nrows, path=path)  # raises, with details
        yield start, stop, stretch
        if release_pages:
            source.release_pages(blob[position:end])
        position = end
    if position != blob.size:
        raise FileFormatError(
            path, _problem_message(TRAILING_BYTES, nrows, None, blob.size)
        )


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
        cls, blob: np.ndarray, nrows: int, path: str | None = None
    ) -> ShoeboxColumn:
        """Index ``nrows`` records in ``blob`` (uint8).

        Parameters
        ----------
        blob : numpy.ndarray
            uint8, the shoebox column's bytes.
        nrows : int
            The number of records.
        path : str, optional
            The file's name, for errors.

        Returns
        -------
        ShoeboxColumn
            The index of every record.

        Raises
        ------
        FileFormatError
            Where the column is truncated or corrupt, naming the record.
        """
        _check_row_count(blob, nrows, path)
        panel, bbox = np.zeros(nrows, np.uint32), np.zeros((nrows, 6), np.int32)
        present, data_offset = np.zeros(nrows, np.uint8), np.zeros(nrows, np.int64)
        problem, row, end = scan_records(
            blob, nrows, 0, panel, bbox, present, data_offset
        )
        if problem == OK and end != blob.size:
            problem, row = TRAILING_BYTES, nrows
        if problem != OK:  # the headers as read, for the message
            headers = np.zeros(nrows, dtype=_HEADER_DTYPE)
            headers["panel"], headers["bbox"], headers["present"] = panel, bbox, present
            raise FileFormatError(
                path, _problem_message(problem, row, headers, blob.size)
            )
        return cls(blob, panel, bbox, present, data_offset)

    @classmethod
    def empty(cls, blob: np.ndarray, nrows: int) -> ShoeboxColumn:
        """Room for the index of ``nrows`` records of ``blob`` (contents undefined until
        a scan fills them, e.g. :func:`indexed_chunks` a stretch at a time).

        Parameters
        ----------
        blob, nrows
            The column's bytes (uint8) and its number of records, as for
            :meth:`from_blob`.
        """
        return cls(
            blob,
            np.empty(nrows, np.uint32),
            np.empty((nrows, 6), np.int32),
            np.empty(nrows, np.uint8),
            np.empty(nrows, np.int64),
        )

    @classmethod
    def joined(cls, columns: Sequence[ShoeboxColumn]) -> ShoeboxColumn:
        """The records of ``columns`` one after another: their bytes joined (a copy),
        and their indexes joined with each record's place moved by the bytes before
        it. Records follow one another in a column, so the joined bytes are a column.

        Parameters
        ----------
        columns : sequence of ShoeboxColumn
            Indexed columns, at least one.
        """
        starts = np.cumsum([0] + [c.blob.size for c in columns[:-1]])
        return cls(
            np.concatenate([c.blob.reshape(-1) for c in columns]),
            np.concatenate([c.panel for c in columns]),
            np.concatenate([c.bbox for c in columns]),
            np.concatenate([c.present for c in columns]),
            np.concatenate([c.data_offset + s for c, s in zip(columns, starts)]),
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

    def byte_range(self) -> tuple[int, int]:
        """The bytes of ``blob`` its records occupy, from the first record's header to
        the end of the last one's pixel arrays ((0, 0) for no record): records are
        stored one after another, so this is a stretch's share of the file.

        Returns
        -------
        tuple of int
            (first byte, one past the last byte).
        """
        if not len(self.present):
            return 0, 0
        marker = int(self.present[-1])
        per_voxel = 12 if marker == 1 else 9 if marker == 2 else 0
        extent = self.bbox[-1, 1::2].astype(np.int64) - self.bbox[-1, 0::2]
        last_voxels = int(np.prod(extent))
        first = int(self.data_offset[0]) - HEADER_BYTES
        return first, int(self.data_offset[-1]) + last_voxels * per_voxel

    def rows(self, start: int, stop: int) -> ShoeboxColumn:
        """Rows [start, stop) of the index (views; the pixels stay in the blob).

        Parameters
        ----------
        start, stop : int
            The rows.

        Returns
        -------
        ShoeboxColumn
            The rows' index.
        """
        return ShoeboxColumn(
            self.blob,
            self.panel[start:stop],
            self.bbox[start:stop],
            self.present[start:stop],
            self.data_offset[start:stop],
        )

    def count_mask_values(self, code: int) -> np.ndarray:
        """Per row, the pixels whose mask has every bit of ``code`` set (DIALS's
        ``Shoebox.count_mask_values``); 0 where the row has no pixel data, as in DIALS,
        so use :attr:`has_pixel_data` to tell those rows apart.

        Parameters
        ----------
        code : int
            The mask code, 0 to 255 (0 counts every pixel of the bbox).

        Returns
        -------
        numpy.ndarray
            int64, pixels per row.

        Raises
        ------
        ValueError
            Where ``code`` is outside 0..255.
        """
        counts = np.zeros(len(self), dtype=np.int64)
        count_mask_values(
            self.blob,
            self.present,
            self.data_offset,
            self.bbox,
            _checked_code(code),
            counts,
        )
        return counts

    def pixels(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(data, mask, background)`` of one row as (nz, ny, nx) arrays, or None.

        Parameters
        ----------
        row : int
            The row.

        Returns
        -------
        tuple of numpy.ndarray or None
            float32 data, the mask (int32 or uint8, as stored) and float32 background,
            views of the blob; None where the row has no pixel data.
        """
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
