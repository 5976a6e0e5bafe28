"""DIALS reflection tables (``.refl``, msgpack, versions 1 and 2): read and write.

Layout (doc/dials_facts.md §1): ``["dials::af::reflection_table", version, {"identifiers": {id:
str}, "nrows": n, "data": {name: [type, [n, bin]]}}]``. Fixed-size columns become numpy
views of the file's bytes (of a copy, for tables small enough that msgpack's C unpacker
reads them faster than the cursor); the ``Shoebox<>`` column becomes a
:class:`ShoeboxColumn`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from .errors import FileFormatError
from .msgpack_cursor import MsgpackCursor
from .shoeboxes import (
    HEADER_BYTES,
    ShoeboxColumn,
    count_pixels_streaming,
    indexed_chunks,
)
from .source import (
    MAP_FROM_BYTES,
    check_unchanged,
    describe_content,
    populate_pages,
    read_bytes,
    release_pages,
)

logger = logging.getLogger(__name__)

TABLE_TAG = "dials::af::reflection_table"
SUPPORTED_VERSIONS = (1, 2)
HEADER_KEYS = ("identifiers", "nrows", "data")
SHOEBOX_TYPE = "Shoebox<>"
NOT_PORTABLE_TYPES = ("std::string",)

# DIALS column type name -> (little-endian element dtype, element shape).
COLUMN_TYPES: dict[str, tuple[str, tuple[int, ...]]] = {
    "bool": ("?", ()),
    "int": ("<i4", ()),
    "std::size_t": ("<u8", ()),
    "double": ("<f8", ()),
    "vec2<double>": ("<f8", (2,)),
    "vec3<double>": ("<f8", (3,)),
    "mat3<double>": ("<f8", (3, 3)),
    "int6": ("<i4", (6,)),
    "cctbx::miller::index<>": ("<i4", (3,)),
}
# Each column type's element: dtype, shape per row and bytes per row.
_LAYOUT = {
    name: (np.dtype(d), shape, np.dtype(d).itemsize * math.prod(shape))
    for name, (d, shape) in COLUMN_TYPES.items()
}
_TYPE_OF_ARRAY = {
    (np.dtype(d).str, shape): name for name, (d, shape) in COLUMN_TYPES.items()
}

PICKLE_ADVICE = (
    "is a Python pickle (DIALS wrote reflection tables this way before 2019), which is "
    "never unpickled because loading a pickle can run arbitrary code; if it is a "
    "reflection table, convert it with a current DIALS: dials.python -c "
    '"from dials.array_family import flex; '
    "flex.reflection_table.from_file('old.refl').as_file('new.refl')\""
)

# Columns DIALS gives one fixed type (doc/dials_facts.md §1): any other type is a
# corrupt or foreign table, which would otherwise fail later, far from the cause.
# Names are fnmatch patterns.
WELL_KNOWN_COLUMN_TYPES: dict[str, str] = {
    "flags": "std::size_t",
    "id": "int",
    "imageset_id": "int",
    "panel": "std::size_t",
    "xyzobs.px.value": "vec3<double>",
    "xyzobs.px.variance": "vec3<double>",
    "xyzobs.mm.value": "vec3<double>",
    "xyzobs.mm.variance": "vec3<double>",
    "xyzcal.px": "vec3<double>",
    "xyzcal.mm": "vec3<double>",
    "s1": "vec3<double>",
    "rlp": "vec3<double>",
    "miller_index": "cctbx::miller::index<>",
    "bbox": "int6",
    "shoebox": SHOEBOX_TYPE,
    "n_signal": "int",
    "num_pixels.*": "int",
    "entering": "bool",
    "intensity.*.value": "double",
    "intensity.*.variance": "double",
    "background.mean": "double",
    "d": "double",
    "partiality": "double",
}
# DIALS keeps experiment identifiers in a map from std::size_t, but rows refer to them
# through the ``id`` column, an int: a key outside 0..2**31-1 names no row.
IDENTIFIER_KEY_RANGE = (0, (1 << 31) - 1)


@functools.lru_cache(maxsize=1024)  # every still of a run has the same few columns
def expected_column_type(name: str) -> str | None:
    """The type DIALS always gives column ``name``, or None for other columns.

    Parameters
    ----------
    name : str
        A column name (patterns such as ``xyzobs.*`` are matched too).

    Returns
    -------
    str or None
        The DIALS type name (e.g. ``"vec3<double>"``).
    """
    if name in WELL_KNOWN_COLUMN_TYPES:
        return WELL_KNOWN_COLUMN_TYPES[name]
    for pattern, type_name in WELL_KNOWN_COLUMN_TYPES.items():
        if "*" in pattern and fnmatch.fnmatchcase(name, pattern):
            return type_name
    return None


@dataclass(eq=False)
class ReflectionTable:
    """The columns of a DIALS reflection table as numpy arrays.

    ``columns`` holds every fixed-size column (views of the file where possible),
    ``shoeboxes`` the ``shoebox`` column if any (indexed on first use when the table was
    read with ``index_shoeboxes=False``), ``identifiers`` the experiment identifier map
    (None where the file has no such map), and ``skipped_columns`` the columns that could
    not be read portably, with the reason.
    """

    nrows: int
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    identifiers: dict[int, str] | None = field(default_factory=dict)
    shoebox_column_name: str | None = None
    version: int = 2
    path: str | None = None
    skipped_columns: dict[str, str] = field(default_factory=dict)
    # What the writer needs to reproduce the file byte for byte.
    header_keys: tuple[str, ...] = HEADER_KEYS
    column_order: list[str] = field(default_factory=list)
    raw_columns: dict[str, tuple[str, int, np.ndarray]] = field(default_factory=dict)
    # The shoebox column: its bytes, and its index once built.
    _shoebox_blob: np.ndarray | None = None
    _shoebox_index: ShoeboxColumn | None = None

    def __len__(self) -> int:
        return self.nrows

    def __contains__(self, name: str) -> bool:
        return name in self.columns or name == self.shoebox_column_name

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def shoeboxes(self) -> ShoeboxColumn | None:
        """Where every shoebox lies (built on first use), or None without a shoebox column."""
        if self._shoebox_index is None and self._shoebox_blob is not None:
            with _subject_when_unnamed():
                self._shoebox_index = ShoeboxColumn.from_blob(
                    self._shoebox_blob, self.nrows, path=self.path
                )
        return self._shoebox_index

    @shoeboxes.setter
    def shoeboxes(self, column: ShoeboxColumn | None) -> None:
        """Set or remove the shoebox column, keeping its raw bytes for writing.

        Parameters
        ----------
        column : ShoeboxColumn or None
            The new column; None removes the shoebox column.
        """
        self._shoebox_index = column
        self._shoebox_blob = None if column is None else column.blob
        if column is None:
            self.shoebox_column_name = None
        elif self.shoebox_column_name is None:
            self.shoebox_column_name = "shoebox"

    def count_shoebox_pixels(
        self, code: int, release_pages: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the pixels with every bit of ``code``, and whether the row has pixel
        data. Without building the shoebox index when it is not built already: one pass
        over the column, optionally handing each finished stretch of the file back to the
        operating system (``release_pages``), so memory stays bounded on huge files.

        Parameters
        ----------
        code : int
            The mask code a pixel must have every bit of (``mask_codes.mask_code_value``).
        release_pages : bool
            Release each finished stretch of the file's pages while counting.

        Returns
        -------
        tuple of numpy.ndarray
            The count per row (pixels), and bool per row: whether it has pixel data.

        Raises
        ------
        ValueError
            Where the table has no shoebox column.
        FileFormatError
            Where the shoebox column is corrupt.
        """
        if self._shoebox_index is not None:
            index = self._shoebox_index
            return index.count_mask_values(code), index.has_pixel_data
        if self._shoebox_blob is None:
            raise ValueError("the table has no shoebox column")
        with _subject_when_unnamed():
            return count_pixels_streaming(
                self._shoebox_blob,
                self.nrows,
                code,
                path=self.path,
                release_pages=release_pages,
            )

    def shoebox_chunks(
        self, rows_per_chunk: int, release_pages: bool = False, keep_index: bool = False
    ) -> Iterator[tuple[int, int, ShoeboxColumn]]:
        """The shoebox column a stretch of rows at a time, as ``(start, stop, column)``
        (see ``shoeboxes.indexed_chunks``); from the index where it is built.

        With ``keep_index`` the stretches are indexed into the table's index, which is
        set at the end, so that a later use of :attr:`shoeboxes` does not scan the
        column again (which would bring every page of a big file back in).

        Parameters
        ----------
        rows_per_chunk : int
            Rows per stretch (the last may be shorter).
        release_pages : bool
            Release each stretch's pages of the file once the next is read.
        keep_index : bool
            Keep the stretches' indexes as the table's shoebox index.

        Returns
        -------
        iterator of tuple of (int, int, ShoeboxColumn)
            Each stretch's first row, one past its last row, and its shoeboxes.

        Raises
        ------
        ValueError
            Where the table has no shoebox column.
        FileFormatError
            Where the shoebox column is corrupt.
        """
        if self._shoebox_index is not None:
            index = self._shoebox_index
            for start in range(0, self.nrows, rows_per_chunk):
                stop = min(self.nrows, start + rows_per_chunk)
                yield start, stop, index.rows(start, stop)
            return
        if self._shoebox_blob is None:
            raise ValueError("the table has no shoebox column")
        # Kept, the stretches are indexed straight into their rows of the whole index.
        index = (
            ShoeboxColumn.empty(self._shoebox_blob, self.nrows) if keep_index else None
        )
        yield from indexed_chunks(
            self._shoebox_blob, self.nrows, rows_per_chunk, self.path, release_pages,
            index,
        )  # fmt: skip
        if keep_index:
            self._shoebox_index = index

    @classmethod
    def joined(cls, tables: Sequence[ReflectionTable]) -> ReflectionTable:
        """The rows of ``tables`` one after another, as one table of copies: each
        column joined, and the shoebox columns joined (``ShoeboxColumn.joined``, each
        indexed first). The result has no identifier map and no path.

        Parameters
        ----------
        tables : sequence of ReflectionTable
            At least one; the same columns in each (names, types and shapes), and a
            shoebox column in all or none.

        Raises
        ------
        ValueError
            Where the tables' columns differ.
        FileFormatError
            Where a shoebox column is corrupt (see :attr:`shoeboxes`).
        """
        first = tables[0]
        signature = first.column_signature()
        if any(table.column_signature() != signature for table in tables[1:]):
            raise ValueError("only tables with the same columns can be joined")
        joined = cls(
            nrows=sum(table.nrows for table in tables),
            columns={
                name: np.concatenate([table.columns[name] for table in tables])
                for name in first.columns
            },
            identifiers=None,
            shoebox_column_name=first.shoebox_column_name,
            version=first.version,
        )
        if first.shoebox_column_name is not None:
            joined.shoeboxes = ShoeboxColumn.joined([t.shoeboxes for t in tables])
        return joined

    def column_signature(self) -> tuple:
        """Each column's name, type and shape per row, and the shoebox column's name:
        what tables to be joined must share."""
        return self.shoebox_column_name, tuple(
            [
                (name, column.dtype, column.shape[1:])
                for name, column in self.columns.items()
            ]
        )

    def populate_rows(self, start: int, stop: int, names) -> None:
        """Map the file pages holding rows [start, stop) of the named columns in one call
        each, ahead of use (cheaper than a page fault per page).

        Parameters
        ----------
        start, stop : int
            The rows.
        names : iterable of str
            Column names; names the table has not (or only as raw columns) are skipped.
        """
        for name in names:
            if name in self.columns:
                populate_pages(self.columns[name][start:stop])

    def release_rows(self, start: int, stop: int) -> None:
        """Hand the pages holding rows [start, stop) of every fixed-size column back to
        the operating system (they are re-read from the page cache if used again).

        Parameters
        ----------
        start, stop : int
            The rows.
        """
        for column in self.columns.values():
            release_pages(column[start:stop])

    def slice_rows(self, start: int, stop: int) -> "ReflectionTable":
        """Rows [start, stop) as a new table (copies), e.g. to split a file in pieces.

        Parameters
        ----------
        start, stop : int
            The rows, clipped to the table.

        Returns
        -------
        ReflectionTable
            The rows' columns and shoeboxes (raw columns are left out).
        """
        start, stop = max(0, int(start)), min(self.nrows, int(stop))
        part = ReflectionTable(
            nrows=stop - start,
            columns={
                name: np.array(column[start:stop])
                for name, column in self.columns.items()
            },
            identifiers=None if self.identifiers is None else dict(self.identifiers),
            shoebox_column_name=self.shoebox_column_name,
            version=self.version,
            header_keys=self.header_keys,
            column_order=list(self.column_order),
        )
        if self.shoebox_column_name is not None:
            index = self.shoeboxes
            record_starts = np.append(index.data_offset - HEADER_BYTES, index.blob.size)
            part._shoebox_blob = (
                np.array(index.blob[record_starts[start] : record_starts[stop]])
                if stop > start
                else np.zeros(0, np.uint8)
            )
        part.column_order = [
            name for name in part.column_order if name not in self.raw_columns
        ]  # skipped columns are not carried over
        return part

    def column_type(self, name: str) -> str:
        """The DIALS type name of column ``name``, as it will be written.

        Parameters
        ----------
        name : str
            A column of the table (the shoebox column, a raw column or a decoded one).

        Returns
        -------
        str
            The DIALS type name (e.g. ``"int"``, ``"vec3<double>"``, ``"Shoebox<>"``).

        Raises
        ------
        KeyError
            Where the table has no such column.
        ValueError
            Where the column's dtype and shape are not those of a DIALS type.
        """
        if name == self.shoebox_column_name:
            return SHOEBOX_TYPE
        if name in self.raw_columns:
            return self.raw_columns[name][0]
        array = self.columns[name]
        try:
            return _TYPE_OF_ARRAY[(array.dtype.newbyteorder("<").str, array.shape[1:])]
        except KeyError:
            raise ValueError(
                f"column {name!r} has dtype {array.dtype} and shape {array.shape}, not a DIALS type"
            ) from None


def _column_view(
    blob: np.ndarray, count: int, type_name: str, name: str, path
) -> np.ndarray:
    dtype, shape, element_bytes = _LAYOUT[type_name]
    if blob.size != count * element_bytes:
        raise FileFormatError(
            path,
            f"is corrupt: column {name!r} ({type_name}) claims {count} elements, which need "
            f"{count * element_bytes} bytes, but holds {blob.size}",
        )
    if dtype.kind == "b":
        if blob.size and blob.max() > 1:
            raise FileFormatError(
                path,
                f"is corrupt: bool column {name!r} holds values other than 0 and 1",
            )
        return blob.view(bool)
    return blob.view(dtype).reshape((count,) + shape)


class _Header(NamedTuple):
    """A table's msgpack structure; each column as (name, type, count, its bytes)."""

    version: int
    keys: tuple[str, ...]
    identifiers: dict[int, str] | None
    nrows: int
    columns: list[tuple[str, str, int, np.ndarray]]


UNNAMED_SUBJECT = "the msgpack data"


@contextlib.contextmanager
def _subject_when_unnamed():
    """Give a sentence a subject where there is no file to name: every problem is
    worded to follow ``<path>: ``, so without a path it would start with a bare verb."""
    try:
        yield
    except FileFormatError as error:
        if error.path is not None or error.problem.startswith(UNNAMED_SUBJECT):
            raise
        raise FileFormatError(None, f"{UNNAMED_SUBJECT} {error.problem}") from None


def parse_reflections(
    buffer, path: str | None = None, index_shoeboxes: bool = True
) -> ReflectionTable:
    """Parse the msgpack bytes of a reflection table (a file's, or ``as_msgpack()``'s).

    With ``index_shoeboxes`` (the default) the shoebox column is checked and indexed now, so
    a corrupt column raises here; without, that happens on first use. Problems raise
    :class:`FileFormatError` naming ``path``, or "the msgpack data" without one.

    Parameters
    ----------
    buffer : bytes-like
        The msgpack bytes (bytes, memoryview or a memory map).
    path : str, optional
        The file's name, for errors.
    index_shoeboxes : bool
        Check and index the shoebox column now.

    Returns
    -------
    ReflectionTable
        The table, its columns views of ``buffer``.

    Raises
    ------
    FileFormatError
        Where the bytes are not a valid DIALS reflection table.
    """
    with _subject_when_unnamed():
        return _parsed(buffer, path, index_shoeboxes)


def _parsed(buffer, path: str | None, index_shoeboxes: bool) -> ReflectionTable:
    header = _unpacked_header(buffer) if len(buffer) < SMALL_BUFFER_BYTES else None
    if header is None:
        header = _walked_header(MsgpackCursor(buffer, path))
    _check_identifiers(header.identifiers, path)
    table = ReflectionTable(
        nrows=header.nrows,
        identifiers=header.identifiers,
        version=header.version,
        path=path,
        header_keys=header.keys,
    )
    for name, type_name, count, blob in header.columns:
        table.column_order.append(name)
        if count != header.nrows:
            raise FileFormatError(
                path,
                f"is corrupt: column {name!r} has {count} elements but the table has {header.nrows} rows",
            )
        expected = expected_column_type(name)
        if expected is not None and type_name != expected:
            raise FileFormatError(
                path,
                f"is corrupt: column {name!r} has type {type_name!r}, but DIALS "
                f"always writes it as {expected!r}",
            )
        if type_name in COLUMN_TYPES:
            table.columns[name] = _column_view(blob, count, type_name, name, path)
            continue
        if type_name == SHOEBOX_TYPE and table.shoebox_column_name is None:
            table.shoebox_column_name, table._shoebox_blob = name, blob
            continue
        reason = (
            "std::string columns hold raw in-memory objects and are not portable"
            if type_name in NOT_PORTABLE_TYPES
            else f"its type {type_name!r} is not one this program reads"
        )
        table.skipped_columns[name] = reason
        table.raw_columns[name] = (type_name, count, blob)
        logger.warning(
            "%s: column %r skipped: %s", path or "reflection table", name, reason
        )
    if index_shoeboxes:
        table.shoeboxes  # noqa: B018 (index now: a corrupt column raises here)
    if header.nrows > len(buffer):
        # Every column holds at least a byte per row; without columns nothing backs
        # the claim, and arrays sized from it (8 bytes a row and more) would take
        # memory out of all proportion to the file.
        raise FileFormatError(
            path,
            f"is corrupt: it claims {header.nrows} rows but is {len(buffer)} bytes "
            "long, and no column holds data for so many rows",
        )
    return table


def _check_identifiers(identifiers: dict[int, str] | None, path) -> None:
    low, high = IDENTIFIER_KEY_RANGE
    for key in identifiers or ():
        if not low <= key <= high:
            raise FileFormatError(
                path,
                f"is corrupt: its experiment identifiers map has the key {key}, "
                f"outside {low} to {high}, the range of DIALS's 'id' column (int)",
            )


# Buffers below this size (the files that are read rather than mapped) are unpacked by
# msgpack's C extension, which copies the column bytes (cheap at this size) but reads the
# structure far faster than the cursor; above it the cursor leaves every column in place
# (no second copy of a big file).
SMALL_BUFFER_BYTES = MAP_FROM_BYTES


class _MapItems(list):
    """A msgpack map's (key, value) pairs in file order, duplicates kept (told apart from
    an array of pairs, which is not a map)."""


def _unpacked_header(buffer) -> _Header | None:
    """The header read by msgpack's C unpacker, or None wherever the bytes are not exactly
    a DIALS table's layout: the cursor then reads them, and says what is wrong."""
    import msgpack

    try:
        tag, version, pairs = msgpack.unpackb(
            buffer, raw=False, strict_map_key=False, object_pairs_hook=_MapItems
        )
    except Exception:  # noqa: BLE001 (anything msgpack refuses, the cursor explains)
        return None
    if (
        type(tag) is not str
        or tag != TABLE_TAG
        or type(version) is not int
        or version not in SUPPORTED_VERSIONS
        or type(pairs) is not _MapItems
    ):
        return None
    keys = tuple(key for key, _ in pairs)
    if (
        not all(type(key) is str for key in keys)
        or len(set(keys)) != len(keys)
        or not set(keys) <= set(HEADER_KEYS)
        or not {"nrows", "data"} <= set(keys)
    ):
        return None
    values = dict(pairs)
    identifiers = values.get("identifiers")
    if "identifiers" in values and type(identifiers) is not _MapItems:
        return (
            None  # DIALS refuses anything but a map (nil included); so does the cursor
        )
    nrows, data = values["nrows"], values["data"]
    if type(nrows) is not int or nrows < 0 or type(data) is not _MapItems:
        return None
    if identifiers is not None:
        if not all(type(k) is int and type(v) is str for k, v in identifiers):
            return None
        identifiers = dict(identifiers)
    columns = []
    for name, column in data:
        if (
            type(name) is not str
            or type(column) is not list
            or len(column) != 2
            or type(column[1]) is not list
            or len(column[1]) != 2
        ):
            return None
        type_name, (count, blob) = column
        if (
            type(type_name) is not str
            or type(count) is not int
            or count < 0
            or type(blob) is not bytes
        ):
            return None
        columns.append((name, type_name, count, np.frombuffer(blob, dtype=np.uint8)))
    return _Header(version, keys, identifiers, nrows, columns)


def head_problem(head: bytes) -> str | None:
    """What is wrong with a file whose first bytes are ``head`` for a reflection table
    (a pickle, or not the msgpack array DIALS writes), or None.

    Parameters
    ----------
    head : bytes
        The file's first bytes (16 are enough).
    """
    if head[:1] == b"\x80":
        return PICKLE_ADVICE
    if head[:1] not in (b"\x93", b"\xdc", b"\xdd"):
        return f"is not a DIALS reflection table: it looks like {describe_content(head[:16])}"
    return None


def _walked_header(cursor: MsgpackCursor) -> _Header:
    """The header read by the cursor, checking every step; columns stay views of the buffer."""
    path = cursor.path
    problem = head_problem(bytes(cursor.buffer[:16]))
    if problem:
        raise FileFormatError(path, problem)
    if cursor.array_length() != 3:
        raise FileFormatError(
            path,
            "is not a DIALS reflection table: its top-level msgpack array does not have 3 items",
        )
    tag = cursor.string()
    if tag != TABLE_TAG:
        raise FileFormatError(
            path,
            f"is not a DIALS reflection table: its tag is {tag!r}, not {TABLE_TAG!r}",
        )
    version = cursor.integer()
    if version not in SUPPORTED_VERSIONS:
        raise FileFormatError(
            path,
            f"is a reflection table of version {version}, which this program does not know "
            f"(it reads versions {SUPPORTED_VERSIONS[0]} and {SUPPORTED_VERSIONS[-1]}); "
            "upgrade dials.spot_size_analysis",
        )
    header_keys, identifiers, nrows, columns = _walked_header_map(cursor)
    if nrows is None or columns is None:
        missing = "nrows" if nrows is None else "data"
        raise FileFormatError(
            path,
            f"is not a valid DIALS reflection table: the header has no {missing!r}",
        )
    if cursor.position != cursor.size:
        raise FileFormatError(
            path,
            f"is corrupt: {cursor.size - cursor.position} unexpected bytes follow the table",
        )
    return _Header(version, tuple(header_keys), identifiers, nrows, columns)


def _walked_header_map(cursor: MsgpackCursor):
    """The header map's keys in file order, identifiers, nrows and columns (None for
    those absent), each key checked."""
    path = cursor.path
    header_keys: list[str] = []
    identifiers: dict[int, str] | None = None
    nrows: int | None = None
    columns: list | None = None
    for _ in range(cursor.map_length()):
        key = cursor.string()
        if key not in HEADER_KEYS:
            raise FileFormatError(
                path,
                f"is not a valid DIALS reflection table: unknown header key {key!r}",
            )
        if key in header_keys:
            raise FileFormatError(
                path,
                f"is not a valid DIALS reflection table: header key {key!r} appears twice",
            )
        header_keys.append(key)
        if key == "identifiers":
            identifiers = {}
            for _ in range(cursor.map_length()):
                experiment_id = cursor.integer()
                identifiers[experiment_id] = cursor.string()
        elif key == "nrows":
            nrows = cursor.integer()
            if nrows < 0:
                raise FileFormatError(path, f"is corrupt: it claims {nrows} rows")
        else:
            columns = [_column_header(cursor) for _ in range(cursor.map_length())]
    return header_keys, identifiers, nrows, columns


def _column_header(cursor: MsgpackCursor) -> tuple[str, str, int, np.ndarray]:
    name = cursor.string()
    if cursor.array_length() != 2:
        raise FileFormatError(
            cursor.path, f"is corrupt: column {name!r} is not a [type, data] pair"
        )
    type_name = cursor.string()
    if cursor.array_length() != 2:
        raise FileFormatError(
            cursor.path,
            f"is corrupt: column {name!r} data is not a [count, bytes] pair",
        )
    count = cursor.integer()
    if count < 0:
        raise FileFormatError(
            cursor.path, f"is corrupt: column {name!r} claims {count} elements"
        )
    offset, length = cursor.binary()
    return (
        name,
        type_name,
        count,
        np.frombuffer(cursor.buffer, dtype=np.uint8, count=length, offset=offset),
    )


def read_reflections(
    path: str | os.PathLike, index_shoeboxes: bool = True
) -> ReflectionTable:
    """Read a DIALS ``.refl`` file (optionally ``.gz``/``.bz2``/``.xz``/``.zst``).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    index_shoeboxes : bool
        Check and index the shoebox column now (see :func:`parse_reflections`).

    Returns
    -------
    ReflectionTable
        The table.

    Raises
    ------
    FileFormatError
        Where the file is not a valid DIALS reflection table.
    OSError
        Where the file cannot be read.
    """
    path = os.fspath(path)
    content = read_bytes(path, head_problem)
    try:
        return parse_reflections(content, path=path, index_shoeboxes=index_shoeboxes)
    except FileFormatError:
        check_unchanged(content)  # a truncation meanwhile (read as zeros) explains it
        raise


# --------------------------------------------------------------------------- writing


def _bin_header(length: int) -> bytes:
    if length < 1 << 8:
        return b"\xc4" + length.to_bytes(1, "big")
    if length < 1 << 16:
        return b"\xc5" + length.to_bytes(2, "big")
    if length < 1 << 32:
        return b"\xc6" + length.to_bytes(4, "big")
    raise ValueError(
        "a msgpack bin field holds at most 4 GiB; DIALS cannot write a larger column either"
    )


def write_reflections(
    table: ReflectionTable, path: str | os.PathLike, version: int | None = None
) -> None:
    """Write ``table`` as DIALS does: msgpack, in the table's own version (2 for a new
    table) unless ``version`` says otherwise. A table read and written back is
    byte-identical. Writing version 1 rewrites uint8-mask shoebox records with int32 masks,
    since DIALS before 3.29 reads only those; version 2 keeps each record as it is (DIALS
    reads both kinds).

    Parameters
    ----------
    table : ReflectionTable
        The table to write.
    path : str, os.PathLike or binary file
        The file to write (overwritten), or a file open for writing bytes (written
        from where it stands, and left open).
    version : int, optional
        1 or 2; None keeps the table's own version.

    Raises
    ------
    ValueError
        For another version, a column not of a DIALS type or a column over 4 GiB.
    """
    import msgpack

    version = table.version if version is None else version
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"cannot write version {version}; choose 1 or 2")
    shoebox_blob = None
    if table.shoebox_column_name is not None:
        shoebox_blob = table._shoebox_blob
        if version == 1 and (table.shoeboxes.present == 2).any():
            from .shoebox_encoding import reencode

            shoebox_blob = reencode(table.shoeboxes, mask_kind=1).blob
    packer = msgpack.Packer(use_bin_type=True)
    names = table.column_order or sorted(
        list(table.columns)
        + list(table.raw_columns)
        + ([table.shoebox_column_name] if table.shoebox_column_name else [])
    )
    opened = (
        contextlib.nullcontext(path) if hasattr(path, "write") else open(path, "wb")
    )
    with opened as out:
        out.write(packer.pack_array_header(3))
        out.write(packer.pack(TABLE_TAG))
        out.write(packer.pack(version))
        out.write(packer.pack_map_header(len(table.header_keys)))
        for key in table.header_keys:
            out.write(packer.pack(key))
            if key == "identifiers":
                out.write(packer.pack(dict(table.identifiers or {})))
            elif key == "nrows":
                out.write(packer.pack(table.nrows))
            else:
                out.write(packer.pack_map_header(len(names)))
                for name in names:
                    if name == table.shoebox_column_name:
                        type_name, count, blob = SHOEBOX_TYPE, table.nrows, shoebox_blob
                    elif name in table.raw_columns:
                        type_name, count, blob = table.raw_columns[name]
                    else:
                        type_name = table.column_type(name)
                        array = np.ascontiguousarray(
                            table.columns[name], dtype=COLUMN_TYPES[type_name][0]
                        )
                        count = len(array)
                        blob = (
                            array.view(np.uint8).reshape(-1)
                            if array.size
                            else np.zeros(0, np.uint8)
                        )
                    out.write(packer.pack(name))
                    out.write(packer.pack_array_header(2))
                    out.write(packer.pack(type_name))
                    out.write(packer.pack_array_header(2))
                    out.write(packer.pack(count))
                    out.write(_bin_header(len(blob)))
                    out.write(memoryview(blob))
