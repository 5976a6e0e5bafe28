"""Getting a file's bytes: memory-mapped where possible, decompressed like DIALS.

DIALS opens files through ``libtbx.smart_open``, which decompresses by file-name suffix;
we do the same for ``.gz``, ``.bz2``, ``.xz`` and (when ``zstandard`` is installed)
``.zst``. Plain files are memory-mapped, so column arrays can be views of the page cache
instead of a second copy of a multi-gigabyte file.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import mmap
import os

import numpy as np

from .errors import FileFormatError

COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


def without_compression_suffix(name: str) -> str:
    """``name`` less a trailing compression suffix (as given, in that case), if it has one."""
    return name[: name.rindex(".")] if name.endswith(COMPRESSED_SUFFIXES) else name


# Leading bytes of formats a user might pass by mistake, to say what a file looks like.
_SIGNATURES = (
    (
        b"\x89HDF\r\n\x1a\n",
        "an HDF5 file (a NeXus image file or an HDF5 reflection table)",
    ),
    (b"\x1f\x8b", "gzip-compressed data (rename it to end in .gz)"),
    (b"BZh", "bzip2-compressed data (rename it to end in .bz2)"),
    (b"\xfd7zXZ\x00", "xz-compressed data (rename it to end in .xz)"),
    (b"\x28\xb5\x2f\xfd", "zstandard-compressed data (rename it to end in .zst)"),
    (b"###CBF", "a CBF diffraction image"),
    (b"\x89PNG", "a PNG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
)


def describe_content(head: bytes) -> str:
    """A short phrase saying what a file whose first bytes are ``head`` looks like."""
    if not head:
        return "an empty file"
    if head[:1] == b"\x80":
        return "a Python pickle (a legacy DIALS reflection table)"
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return what
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        if b"HEADER_BYTES" in head[:64]:
            return "an SMV diffraction image"
        return "a JSON file (perhaps an experiment list, .expt)"
    if head[:1] in (b"\x93", b"\xdc", b"\xdd"):
        return "a msgpack array"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head[:256])
    if printable == len(head[:256]):
        return "a text file"
    return "binary data of an unknown kind"


def _decompress(path: str, suffix: str) -> bytes:
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise FileFormatError(
                path,
                "is zstandard-compressed but the zstandard package is not installed: "
                "pip install zstandard, or decompress the file first",
            ) from None
        with open(path, "rb") as handle:
            reader = zstandard.ZstdDecompressor().stream_reader(handle)
            return reader.read()
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
    with opener(path, "rb") as handle:
        return handle.read()


def read_bytes(path: str | os.PathLike) -> memoryview:
    """The (decompressed) content of ``path`` as a read-only buffer.

    Plain files of 4 MiB and more are memory-mapped (the map lives as long as any view of
    it does); smaller ones are read.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix in COMPRESSED_SUFFIXES:
            try:
                content = _decompress(path, suffix)
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                raise
            except (OSError, EOFError, lzma.LZMAError, ValueError) as error:
                raise FileFormatError(
                    path, f"cannot be decompressed as {suffix} data ({error})"
                ) from None
            if not content:
                raise FileFormatError(path, "is empty once decompressed")
            return memoryview(content)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise FileFormatError(
                    path, "is empty (0 bytes): was it written completely?"
                )
            if size < MAP_FROM_BYTES:  # small files: one read is cheaper than a mapping
                return memoryview(handle.read())
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
            mapped.madvise(mmap.MADV_SEQUENTIAL)
        return memoryview(mapped)
    except FileNotFoundError:
        raise FileFormatError(path, "does not exist: check the path") from None
    except PermissionError:
        raise FileFormatError(path, "cannot be read: permission denied") from None
    except IsADirectoryError:
        raise FileFormatError(path, "is a directory, not a file") from None
    except OSError as error:
        raise FileFormatError(
            path, f"cannot be read ({error.strerror or error})"
        ) from None


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14
MAP_FROM_BYTES = 1 << 22  # files from this size are memory-mapped, smaller ones read
PAGE_WORK_FROM_BYTES = (
    1 << 20
)  # page populate/release only for arrays at least this big


def _mapped_range(array):
    """(mmap, first page offset, length) of the whole pages under ``array``, or None
    (also for arrays too small for page management to pay)."""
    if array.nbytes < PAGE_WORK_FROM_BYTES:
        return None
    owner = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    if not isinstance(owner, mmap.mmap):
        return None
    start = (
        array.__array_interface__["data"][0]
        - np.frombuffer(owner, np.uint8, count=1).__array_interface__["data"][0]
    )
    return owner, start, start + array.nbytes


def populate_pages(array) -> None:
    """Map the pages under ``array`` (a view of a memory-mapped file) in one call, instead
    of one page fault per page on first touch. A no-op where unsupported."""
    found = _mapped_range(array)
    if found is None:
        return
    owner, start, end = found
    first = start // mmap.PAGESIZE * mmap.PAGESIZE
    try:
        owner.madvise(MADV_POPULATE_READ, first, min(end, len(owner)) - first)
    except (
        OSError,
        ValueError,
    ):  # older kernels: ordinary page faults do the same work
        pass


def release_pages(array) -> None:
    """Tell the operating system that the pages under ``array`` (a view of a
    memory-mapped file) are not needed for now. They stay in the page cache and come back
    on the next access; only whole pages inside the array are released. A no-op for
    arrays that do not view a memory map."""
    found = _mapped_range(array)
    if found is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    owner, start, end = found
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page
    if last > first:
        owner.madvise(mmap.MADV_DONTNEED, first, last - first)
