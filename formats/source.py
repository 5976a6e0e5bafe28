"""Getting a file's bytes: memory-mapped where possible, decompressed within bounds.

DIALS opens files through ``libtbx.smart_open`` (cctbx_project), which decompresses
``.gz`` and ``.bz2`` by file-name suffix (and ``.Z`` through an external program). This
program reads ``.gz`` and ``.bz2`` the same way and, as extensions of its own, ``.xz`` and
(when ``zstandard`` is installed) ``.zst``; it does not read ``.Z``. Plain files are
memory-mapped, so column arrays can be views of the page cache instead of a second copy
of a multi-gigabyte file.

Hostile or unlucky input is refused with one sentence, never a hang or an exhausted
machine: only regular files are opened (a FIFO, socket, device or directory is refused
after ``os.stat``, without opening it); decompression stops at a first block that is
not what the caller reads, once the output passes a bound set from the memory available
(:func:`decompression_limit`), or once it has grown far more than any real file does
(``MAX_INFLATION``); and a JSON document
is parsed only when the memory its parse may take fits (:func:`read_json_document`).

A memory-mapped file that another program truncates while it is mapped raises SIGBUS
where a page past its new end is touched, which Python cannot turn into an exception.
Files below ``MAP_FROM_BYTES`` are therefore read into memory, not mapped; each map is
registered with :mod:`.bus_errors`, whose handler (where it can be installed) lets the
reading run on over zeros instead of ending the process; and :func:`check_unchanged`
says whether a mapped file's size, modification time or identity changed since it was
mapped, or whether a page of it could not be read.
"""

from __future__ import annotations

import bz2
import contextlib
import contextvars
import gzip
import lzma
import mmap
import os
import resource
import stat
import weakref
from typing import Callable

import numpy as np

from . import bus_errors
from .errors import FileFormatError

COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


def without_compression_suffix(name: str) -> str:
    """``name`` less a trailing compression suffix (as given, in that case), if it has one.

    Parameters
    ----------
    name : str
        A file name or path.

    Returns
    -------
    str
        ``name`` without ``.gz``, ``.bz2``, ``.xz`` or ``.zst`` at its end.
    """
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
    """A short phrase saying what a file whose first bytes are ``head`` looks like.

    Parameters
    ----------
    head : bytes
        The file's first bytes.

    Returns
    -------
    str
        E.g. ``"an HDF5 file (...)"``, ``"an empty file"``.
    """
    if not head:
        return "an empty file"
    if head[:1] == b"\x80":
        return "a Python pickle"
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


# ------------------------------------------------------------------ memory available

# The share of the available memory that decompressed content may take: the rest is
# left for what is computed from it (per-row arrays, the parsed header) and for other
# processes.
DECOMPRESSED_SHARE = 0.5
# Set (e.g. by tests, or a caller that knows better) to override the bound computed
# from the memory available; None: computed on each call.
MAX_DECOMPRESSED_BYTES: int | None = None
SMALL_PARSE_BYTES = 1 << 24  # a JSON parse that needs no check of the memory left
_BLOCK_BYTES = 1 << 20
# Real DIALS files shrink 1.6 to 11 times compressed: content past BOMB_CHECK_BYTES
# that grew more than MAX_INFLATION times the compressed bytes read is a bomb.
MAX_INFLATION = 200
BOMB_CHECK_BYTES = 1 << 28
# What is wrong with a file whose content starts with these bytes, or None.
HeadCheck = Callable[[bytes], "str | None"]


def _mem_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free pages times the page size."""
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _address_space_headroom() -> int | None:
    """What a RLIMIT_AS soft limit (ulimit -v, batch systems) still allows this
    process to map, or None without such a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmSize:"):
                    used = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - used)


def available_memory() -> int:
    """The bytes this process can still allocate, as far as the system tells.

    The smaller of the machine's available memory (``MemAvailable``, which counts
    reclaimable page cache) and what an address-space limit (``ulimit -v``) leaves;
    ``2**63 - 1`` where neither is known, so that nothing is refused on a guess.
    """
    known = [
        value
        for value in (_mem_available_bytes(), _address_space_headroom())
        if value is not None
    ]
    return min(known) if known else (1 << 63) - 1


def decompression_limit() -> int:
    """The most bytes a compressed input may inflate to before it is refused.

    ``MAX_DECOMPRESSED_BYTES`` when set, else ``DECOMPRESSED_SHARE`` of
    :func:`available_memory`: decompressed content lives in memory (it cannot be
    mapped), so a small file that inflates past this would exhaust the machine.
    """
    if MAX_DECOMPRESSED_BYTES is not None:
        return MAX_DECOMPRESSED_BYTES
    return int(available_memory() * DECOMPRESSED_SHARE)


def _gigabytes(size: int) -> str:
    """Bytes in GB (10^9), the unit of the program's other memory figures."""
    return f"{size / 1e9:.2f} GB"


# ------------------------------------------------------------------ opening files

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _refuse_unless_regular(path: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((what for test, what in _NOT_REGULAR if test(mode)), "not a file")
    raise FileFormatError(
        path,
        f"is not a regular file ({kind}): give the path of a .refl or .expt file",
    )


def _open_regular(path: str) -> tuple[int, os.stat_result]:
    """``path`` opened for reading (a file descriptor the caller closes), refused
    unless it is a regular file.

    The kind is checked with ``os.stat`` before opening, since opening a FIFO blocks
    until a writer appears and opening a device may have effects; the file is then
    opened without blocking and checked again, in case the path was replaced between
    the two calls.
    """
    _refuse_unless_regular(path, os.stat(path).st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    try:
        info = os.fstat(descriptor)
        _refuse_unless_regular(path, info.st_mode)
        return descriptor, info
    except BaseException:
        os.close(descriptor)
        raise


def _read_to_end(descriptor: int, size: int) -> bytes:
    """The file's bytes from the start, ``size`` expected: one read where the file has
    not grown since it was opened (no buffered file object, which costs more than the
    read for the thousands of small files of a serial run)."""
    content = os.read(descriptor, size + 1)
    if len(content) <= size:  # a short read of a regular file is its end
        return content
    parts = [content]
    while block := os.read(descriptor, _BLOCK_BYTES):
        parts.append(block)
    return b"".join(parts)


# ------------------------------------------------------------------ decompression


def _decompressing_reader(handle, suffix: str, path: str):
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise FileFormatError(
                path,
                "is zstandard-compressed but the zstandard package is not installed: "
                "pip install zstandard, or decompress the file first",
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(
            handle, read_across_frames=True
        )
    opener = {".gz": gzip.GzipFile, ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}[suffix]
    return opener(fileobj=handle) if suffix == ".gz" else opener(handle)


def _decompression_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (
        OSError,
        EOFError,
        lzma.LZMAError,
        ValueError,
    )
    try:
        import zstandard
    except ImportError:
        return errors
    return (*errors, zstandard.ZstdError)


def _inflate(
    handle, path: str, suffix: str, head_problem: HeadCheck | None = None
) -> bytearray:
    """The decompressed content, read in blocks and refused once past the bound, or
    once it inflates far more than any real file; ``head_problem`` (see
    :func:`read_bytes`) judges the first block, before any more is inflated."""
    limit = decompression_limit()
    content = bytearray()
    reader = _decompressing_reader(handle, suffix, path)
    try:
        while block := reader.read(_BLOCK_BYTES):
            if not content and head_problem is not None:
                problem = head_problem(bytes(block[:4096]))
                if problem:
                    raise FileFormatError(path, problem)
            if len(content) > BOMB_CHECK_BYTES and len(content) > MAX_INFLATION * (
                handle.tell() or 1
            ):
                raise FileFormatError(
                    path,
                    f"inflates more than {MAX_INFLATION} times its compressed size "
                    f"({_gigabytes(len(content))} from {_gigabytes(handle.tell())} "
                    "so far), which no DIALS file does: is it a decompression bomb? "
                    "Decompress it yourself to check, and pass the decompressed file",
                )
            if len(content) + len(block) > limit:
                raise FileFormatError(
                    path,
                    f"inflates to more than {_gigabytes(limit)} when decompressed, "
                    "more than this machine's free memory allows: decompress it "
                    "yourself (e.g. with gunzip -k, bunzip2 -k, unxz -k or unzstd) and "
                    "pass the decompressed file, which is then memory-mapped, not held "
                    "in memory",
                )
            content += block
    except FileFormatError:
        raise
    except MemoryError:
        raise FileFormatError(
            path,
            f"ran out of memory after inflating to {_gigabytes(len(content))}: "
            "decompress it yourself and pass the decompressed file, which is then "
            "memory-mapped",
        ) from None
    except _decompression_errors() as error:
        raise FileFormatError(
            path, f"cannot be decompressed as {suffix} data ({error})"
        ) from None
    finally:
        reader.close()
    return content


# ------------------------------------------------------------------ reading


# Each memory map made by read_bytes, with the file's identity, size and modification
# time when it was mapped (for check_unchanged).
_MAPPED_FILES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _guarded(mapped: mmap.mmap) -> int | None:
    """Register ``mapped`` with :mod:`.bus_errors` for as long as it lives: its slot,
    or None where it is not guarded."""
    start = np.frombuffer(mapped, np.uint8, count=1).__array_interface__["data"][0]
    slot = bus_errors.guard(start, len(mapped))
    if slot is not None:
        weakref.finalize(mapped, bus_errors.release, slot)
    return slot


def _stamp(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def read_bytes(
    path: str | os.PathLike, head_problem: HeadCheck | None = None
) -> memoryview:
    """The (decompressed) content of ``path`` as a read-only buffer.

    Plain files of ``MAP_FROM_BYTES`` and more are memory-mapped (the map lives as long
    as any view of it does), except within :func:`read_whole`; smaller ones are read.
    Compressed files (by suffix) are inflated in memory, up to
    :func:`decompression_limit`.

    Parameters
    ----------
    path : str or os.PathLike
        A regular file; anything else (FIFO, socket, device, directory) is refused
        without being opened for reading, so that nothing blocks or reads forever.
    head_problem : callable, optional
        Given the first decompressed bytes of a compressed file, what is wrong with
        them (a sentence without the file's name), or None: a file that is not what
        the caller reads is refused before the rest is inflated.

    Returns
    -------
    memoryview
        Read-only bytes.

    Raises
    ------
    FileFormatError
        One sentence naming the file, the problem and what to do.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    try:
        descriptor, info = _open_regular(path)
        if suffix in COMPRESSED_SUFFIXES:
            with os.fdopen(descriptor, "rb") as handle:
                content = _inflate(handle, path, suffix, head_problem)
            if not content:
                raise FileFormatError(path, "is empty once decompressed")
            return memoryview(content).toreadonly()
        try:
            if info.st_size == 0:
                raise FileFormatError(
                    path, "is empty (0 bytes): was it written completely?"
                )
            if info.st_size < MAP_FROM_BYTES or not _MAPPING.get():
                # one read is cheaper than a mapping (or none is wanted: read_whole)
                return memoryview(_read_to_end(descriptor, info.st_size))
            mapped = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
            _MAPPED_FILES[mapped] = (path, _stamp(info), _guarded(mapped))
        finally:
            os.close(descriptor)
        if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
            mapped.madvise(mmap.MADV_SEQUENTIAL)
        return memoryview(mapped)
    except FileNotFoundError:
        raise FileFormatError(path, "does not exist: check the path") from None
    except PermissionError:
        raise FileFormatError(path, "cannot be read: permission denied") from None
    except OSError as error:
        raise FileFormatError(
            path, f"cannot be read ({error.strerror or error})"
        ) from None


# Whether read_bytes may map files here (see read_whole).
_MAPPING: contextvars.ContextVar[bool] = contextvars.ContextVar("mapping", default=True)


@contextlib.contextmanager
def read_whole():
    """In this block :func:`read_bytes` reads every file whole, mapping none: for a
    process that a truncated mapped file must not kill by SIGBUS without a sentence
    (the parent of worker processes, measuring beside them), whatever size a file
    has grown to since it was looked at."""
    token = _MAPPING.set(False)
    try:
        yield
    finally:
        _MAPPING.reset(token)


def check_unchanged(buffer) -> None:
    """Refuse results from a memory-mapped file that changed while it was mapped.

    A mapped file truncated by another program raises SIGBUS when a page past its
    new end is touched; where :mod:`.bus_errors` guards the map, zeros are read there
    instead. One changed in any other way (rewritten, replaced, grown) yields silently
    mixed content. Calling this after the work on ``buffer`` is done turns both into an
    error. A no-op for buffers that are not a map made by :func:`read_bytes` (small
    and decompressed files are copies in memory, which nothing outside can change).

    Parameters
    ----------
    buffer : memoryview, numpy.ndarray or mmap.mmap
        What :func:`read_bytes` returned, or a view of it.

    Raises
    ------
    FileFormatError
        When the file's size, modification time or identity differs from when it
        was mapped, or a page of it could not be read.
    """
    owner = buffer
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    if not isinstance(owner, mmap.mmap) or owner not in _MAPPED_FILES:
        return
    path, before, slot = _MAPPED_FILES[owner]
    try:
        now = _stamp(os.stat(path))
    except OSError:
        raise FileFormatError(
            path, "was removed while it was being read: run again on a stable copy"
        ) from None
    if now[2] < before[2]:
        raise FileFormatError(
            path,
            f"was truncated from {before[2]} to {now[2]} bytes while it was being "
            "read: wait until the program writing it has finished, then run again",
        )
    if now != before:
        raise FileFormatError(
            path,
            "was changed or replaced while it was being read: wait until the program "
            "writing it has finished, then run again",
        )
    if bus_errors.faulted(slot):
        raise FileFormatError(
            path,
            "was not read in full: a page of it could not be loaded (a read error, or a "
            "truncation undone while it was being read); check the file and the disk, "
            "then run again",
        )


# ------------------------------------------------------------------ JSON documents

# Bytes of Python objects that one occurrence of a JSON character can lead to, at
# most (CPython 3.11, 64-bit, measured): an object ``{`` becomes a dict, an array ``[``
# a list, each ``,`` separates a new value (a float, an int or a list slot), each pair
# of quotes a new str. With twice the text (the bytes and their decoded copy) this
# bounds what ``json.loads`` takes: 4 to 6 times the size for real experiment lists,
# up to 60 times for ``[{},{},...]``.
JSON_OBJECT_BYTES = {b"{": 120, b"[": 72, b",": 48, b'"': 32}


def json_parse_estimate(content) -> int:
    """An upper estimate of the memory ``json.loads`` takes to parse ``content``.

    Parameters
    ----------
    content : bytes-like
        The JSON text.

    Returns
    -------
    int
        Bytes.
    """
    content = bytes(content) if not isinstance(content, bytes) else content
    return 2 * len(content) + sum(
        content.count(character) * cost for character, cost in JSON_OBJECT_BYTES.items()
    )


def read_json_document(
    path: str | os.PathLike, kind: str = "a DIALS experiment list"
) -> dict:
    """The JSON object in ``path`` (optionally compressed), parsed only if it fits.

    Parsing JSON amplifies it: 200 MB of ``[{},{},...]`` become more than 4 GB of
    Python objects. The memory the parse may take is estimated from the text
    (:func:`json_parse_estimate`) and the file refused when that exceeds
    :func:`available_memory`, instead of ending in a MemoryError or an exhausted
    machine.

    Parameters
    ----------
    path : str or os.PathLike
        A JSON file whose top level is an object, such as a DIALS experiment list.
    kind : str
        What the file should be, for the sentence refusing something else.

    Returns
    -------
    dict
        The parsed document.

    Raises
    ------
    FileFormatError
        For anything :func:`read_bytes` refuses, a document that is not a JSON
        object, invalid JSON, or one too large to parse in the memory available.
    """
    path = os.fspath(path)

    def not_an_object(head: bytes) -> str:
        return f"is not {kind}: it looks like {describe_content(head[:64])}"

    def head_problem(head: bytes) -> str | None:  # only white space so far passes
        stripped = head.lstrip()
        return None if stripped[:1] in (b"", b"{") else not_an_object(head)

    content = read_bytes(path, head_problem)
    head = bytes(content[:64])
    if head.lstrip()[:1] != b"{":
        raise FileFormatError(path, not_an_object(head))
    text = content.obj if isinstance(content.obj, bytes) else bytes(content)
    del content
    # No parse of a small text can need more than SMALL_PARSE_BYTES: no need to count.
    small = len(text) * (2 + max(JSON_OBJECT_BYTES.values())) <= SMALL_PARSE_BYTES
    need = 0 if small else json_parse_estimate(text)
    # A parse of a few megabytes fits anywhere this program runs: asking the system
    # for every small file (thousands of stills) would cost more than the parse.
    have = available_memory() if need > SMALL_PARSE_BYTES else need
    if need > have:
        raise FileFormatError(
            path,
            f"is too large to parse here: its {_gigabytes(len(text))} of JSON would "
            f"take up to {_gigabytes(need)} of memory but {_gigabytes(have)} is "
            "available, so run on a machine with more memory or split the experiment "
            "list (dials.split_experiments)",
        )
    import json

    try:
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileFormatError(
            path, f"is not valid JSON ({error}): is it truncated?"
        ) from None
    except RecursionError:
        raise FileFormatError(
            path,
            "is JSON nested too deeply to be read (no DIALS file is): was it "
            "written by DIALS?",
        ) from None
    except MemoryError:
        raise FileFormatError(
            path,
            "is too large to parse in the memory available: run on a machine with "
            "more memory or split the experiment list (dials.split_experiments)",
        ) from None
    if not isinstance(document, dict):
        raise FileFormatError(path, f"is not {kind}: its JSON is not an object")
    return document


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
    of one page fault per page on first touch. A no-op where unsupported.

    Parameters
    ----------
    array : numpy.ndarray
        Any array; only a view of a memory map is acted on.
    """
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
    arrays that do not view a memory map.

    Parameters
    ----------
    array : numpy.ndarray
        Any array; only a view of a memory map is acted on.
    """
    found = _mapped_range(array)
    if found is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    owner, start, end = found
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page
    if last > first:
        owner.madvise(mmap.MADV_DONTNEED, first, last - first)
