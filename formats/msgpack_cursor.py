"""A read-only msgpack cursor that returns binary fields as offsets, not copies.

``msgpack.unpackb`` copies every ``bin`` field into a new ``bytes`` object, which for a
reflection table means a second copy of the whole file. A reflection table's msgpack
structure is tiny (a few dozen maps, strings and integers) around a few huge ``bin``
fields, so this cursor walks the structure and reports where each ``bin`` lies; numpy then
views those bytes in place. Only the types a reflection table uses are accepted, and every
problem is named precisely (small tables are unpacked by msgpack itself, which is faster
there; the cursor reads them again only to explain a problem).
"""

from __future__ import annotations

from .errors import FileFormatError


def _kind_of(first: int) -> str:
    if first <= 0x7F or first >= 0xE0 or 0xCC <= first <= 0xD3:
        return "integer"
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        return "map"
    if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
        return "array"
    if 0xA0 <= first <= 0xBF or first in (0xD9, 0xDA, 0xDB):
        return "string"
    if first in (0xC4, 0xC5, 0xC6):
        return "binary"
    if first == 0xC0:
        return "nil"
    if first in (0xC2, 0xC3):
        return "boolean"
    if first in (0xCA, 0xCB):
        return "float"
    return "extension"


class MsgpackCursor:
    """Sequential reader over ``buffer`` (bytes, mmap or memoryview)."""

    def __init__(self, buffer, path: str | None = None):
        self.buffer = (
            memoryview(buffer).cast("B")
            if not isinstance(buffer, memoryview)
            else buffer
        )
        self.size = len(self.buffer)
        self.position = 0
        self.path = path

    def _fail(self, problem: str) -> FileFormatError:
        return FileFormatError(self.path, problem)

    def _take(self, count: int) -> int:
        start = self.position
        if start + count > self.size:
            raise self._fail(
                f"is truncated: it ends at byte {self.size}, inside a field that needs "
                f"{start + count - self.size} more bytes (was it copied or written completely?)"
            )
        self.position = start + count
        return start

    def _unsigned(self, count: int) -> int:
        start = self._take(count)
        return int.from_bytes(self.buffer[start : start + count], "big")

    def _first_byte(self, expected: str) -> int:
        if self.position >= self.size:
            raise self._fail(
                f"is truncated: it ends at byte {self.size}, where {expected} was expected (was it copied or written completely?)"
            )
        first = self.buffer[self.position]
        self.position += 1
        return first

    def _unexpected(self, first: int, expected: str) -> FileFormatError:
        return self._fail(
            f"is not a valid DIALS reflection table: expected {expected} at byte "
            f"{self.position - 1}, found {_kind_of(first)}"
        )

    def array_length(self) -> int:
        first = self._first_byte("an array")
        if 0x90 <= first <= 0x9F:
            return first & 0x0F
        if first == 0xDC:
            return self._unsigned(2)
        if first == 0xDD:
            return self._unsigned(4)
        raise self._unexpected(first, "an array")

    def map_length(self) -> int:
        first = self._first_byte("a map")
        if 0x80 <= first <= 0x8F:
            return first & 0x0F
        if first == 0xDE:
            return self._unsigned(2)
        if first == 0xDF:
            return self._unsigned(4)
        raise self._unexpected(first, "a map")

    def string(self) -> str:
        first = self._first_byte("a string")
        if 0xA0 <= first <= 0xBF:
            length = first & 0x1F
        elif first == 0xD9:
            length = self._unsigned(1)
        elif first == 0xDA:
            length = self._unsigned(2)
        elif first == 0xDB:
            length = self._unsigned(4)
        else:
            raise self._unexpected(first, "a string")
        start = self._take(length)
        try:
            return str(self.buffer[start : start + length], "utf-8")
        except UnicodeDecodeError:
            raise self._fail(
                f"is not a valid DIALS reflection table: the string at byte {start} is not UTF-8"
            ) from None

    def integer(self) -> int:
        first = self._first_byte("an integer")
        if first <= 0x7F:
            return first
        if first >= 0xE0:
            return first - 0x100
        if 0xCC <= first <= 0xCF:
            return self._unsigned(1 << (first - 0xCC))
        if 0xD0 <= first <= 0xD3:
            count = 1 << (first - 0xD0)
            value = self._unsigned(count)
            return value - (1 << (8 * count)) if value >> (8 * count - 1) else value
        raise self._unexpected(first, "an integer")

    def binary(self) -> tuple[int, int]:
        """Skip a ``bin`` field and return ``(offset, length)`` of its payload."""
        first = self._first_byte("binary data")
        if first == 0xC4:
            length = self._unsigned(1)
        elif first == 0xC5:
            length = self._unsigned(2)
        elif first == 0xC6:
            length = self._unsigned(4)
        else:
            raise self._unexpected(first, "binary data")
        return self._take(length), length
