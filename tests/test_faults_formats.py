"""Hostile or unlucky files given to the readers: one FileFormatError sentence each,
never a hang, a MemoryError, a crash or a traceback. Each case is a real DIALS file
changed as a fault campaign found harmful, written into tmp_path."""

from __future__ import annotations

import ast
import bz2
import gzip
import lzma
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import numpy as np
import pytest

from dials_spot_size_analysis.formats import (
    FileFormatError,
    bus_errors,
    read_experiments,
    read_reflections,
    reflections,
    source,
)
from dials_spot_size_analysis.formats.reflections import parse_reflections
from dials_spot_size_analysis.formats.source import (
    check_unchanged,
    read_bytes,
    read_json_document,
)

INDEXED = "I23_P12M_thau/indexed.refl"
FORMATS = Path(__file__).resolve().parents[1] / "formats"
# Address space for the bounded runs: the interpreter with numpy and numba takes a few
# hundred MB of it, so 1.5 GB leaves about 1 GB for the reader.
ADDRESS_SPACE = 3 << 29


def unpack(path):
    return msgpack.unpackb(Path(path).read_bytes(), strict_map_key=False, raw=False)


def pack(table) -> bytes:
    return msgpack.packb(table, use_bin_type=True)


def run_bounded(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``code`` run in a fresh interpreter limited to ADDRESS_SPACE bytes; it prints
    the FileFormatError it expects, anything else ends it with a traceback."""
    script = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))\n"
        "from dials_spot_size_analysis.formats import FileFormatError\n"
        "try:\n" + textwrap.indent(textwrap.dedent(code), "    ") + "\n"
        "except FileFormatError as error:\n"
        "    print(error)\n"
        "else:\n"
        "    raise SystemExit('no FileFormatError')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


def both_header_readers(monkeypatch, reader: str) -> None:
    """Small buffers go to msgpack's unpacker, big ones to the cursor: force either."""
    if reader == "cursor":
        monkeypatch.setattr(reflections, "SMALL_BUFFER_BYTES", 0)


# ------------------------------------------------------- 1. only regular files


@pytest.mark.parametrize("name", ["in.refl", "in.expt", "in.refl.gz", "in"])
def test_a_fifo_is_refused_without_blocking(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    reader = "read_experiments" if name.endswith(".expt") else "read_reflections"
    result = run_bounded(
        f"from dials_spot_size_analysis.formats import {reader}\n"
        f"{reader}({str(fifo)!r})",
        timeout=60,  # the defect was a hang: open() waits for a writer forever
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{fifo}: is not a regular file (a FIFO): give the path of a .refl or .expt file"
    )


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_an_endless_device_is_refused_before_reading(device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    result = run_bounded(
        "from dials_spot_size_analysis.formats import read_reflections\n"
        f"read_reflections({device!r})",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "is not a regular file (a character device)" in result.stdout


def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.refl"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        with pytest.raises(
            FileFormatError, match=r"is not a regular file \(a socket\)"
        ):
            read_bytes(path)


def test_a_fifo_is_never_opened(tmp_path, monkeypatch):
    """The kind is known from os.stat: nothing opens the FIFO, which would block."""
    fifo = tmp_path / "in.refl"
    os.mkfifo(fifo)
    opened = []
    real_open = os.open
    monkeypatch.setattr(
        os, "open", lambda *args, **kwargs: opened.append(args) or real_open(*args)
    )

    def interrupt(*_):
        raise TimeoutError("read_bytes blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(10)  # a blocked open() is interrupted: the test fails, never hangs
    try:
        with pytest.raises(FileFormatError, match=r"\(a FIFO\)"):
            read_bytes(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert opened == []


def test_a_small_file_that_grew_since_its_size_was_taken_is_read_whole(
    tmp_path, monkeypatch
):
    """Small files are read with one read of the size os.fstat gave; where the file is
    longer by then (still being written), the rest is read too, and every descriptor
    is closed."""
    from dials_spot_size_analysis.formats import source

    path = tmp_path / "growing.expt"
    content = bytes(range(256)) * 300  # 76,800 bytes: read, not mapped
    path.write_bytes(content)
    real_fstat, closed, real_close = os.fstat, [], os.close

    def smaller(descriptor):  # the size as it was before the last 70,000 bytes
        info = list(real_fstat(descriptor))
        info[6] = 6_800  # st_size
        return os.stat_result(info)

    monkeypatch.setattr(source.os, "fstat", smaller)
    monkeypatch.setattr(source.os, "close", lambda d: closed.append(d) or real_close(d))
    assert bytes(read_bytes(path)) == content
    assert len(closed) == 1
    monkeypatch.undo()
    assert bytes(read_bytes(path)) == content  # and as it is, in one read


# ------------------------------------------------------- 2. compression bombs

ZEROS = bytes(64 << 20)  # 64 MiB, a few hundred kB once compressed
# A reflection table's first byte (a msgpack array of 3), then zeros: a bomb that
# passes the look at the first bytes and must be stopped by a bound.
TABLE_BOMB = b"\x93" + ZEROS


def zstd_compress(data: bytes) -> bytes:
    zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed")
    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": zstd_compress,
}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_compression_bomb_stops_at_the_bound(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"bomb.refl{suffix}"
    path.write_bytes(COMPRESSORS[suffix](TABLE_BOMB))
    assert path.stat().st_size < 1 << 20
    monkeypatch.setattr(source, "MAX_DECOMPRESSED_BYTES", 16 << 20)
    with pytest.raises(
        FileFormatError,
        match=r"bomb.refl\S*: inflates to more than 0.02 GB when decompressed, more "
        r"than this machine's free memory allows: decompress it yourself .*which is "
        r"then memory-mapped, not held in memory",
    ):
        read_reflections(path)


def test_a_compressed_experiment_list_bomb(tmp_path, monkeypatch):
    path = tmp_path / "bomb.expt.bz2"
    path.write_bytes(bz2.compress(b'{"history": [' + b" " * (64 << 20) + b"]}"))
    monkeypatch.setattr(source, "MAX_DECOMPRESSED_BYTES", 16 << 20)
    with pytest.raises(FileFormatError, match="bomb.expt.bz2: inflates to more than"):
        read_experiments(path)


def test_the_bound_follows_the_memory_available(monkeypatch):
    monkeypatch.setattr(source, "available_memory", lambda: 10 << 30)
    assert source.decompression_limit() == 5 << 30
    monkeypatch.setattr(source, "MAX_DECOMPRESSED_BYTES", 123)
    assert source.decompression_limit() == 123


def test_a_compressed_file_below_the_bound_reads(shared_data, tmp_path, monkeypatch):
    original = (shared_data / INDEXED).read_bytes()
    path = tmp_path / "indexed.refl.xz"
    path.write_bytes(lzma.compress(original))
    monkeypatch.setattr(source, "MAX_DECOMPRESSED_BYTES", len(original))
    assert read_reflections(path).nrows == 208
    monkeypatch.setattr(source, "MAX_DECOMPRESSED_BYTES", len(original) - 1)
    with pytest.raises(FileFormatError, match="inflates to more than"):
        read_reflections(path)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_a_two_gib_bomb_in_limited_memory_ends_in_a_sentence(tmp_path, suffix):
    """32 concatenated members of 64 MiB of zeros (readers decompress every member):
    2 GiB once inflated, past a 1.5 GB address space, with the bound left as computed
    from the memory available."""
    path = tmp_path / f"bomb.refl{suffix}"
    path.write_bytes(COMPRESSORS[suffix](TABLE_BOMB) + COMPRESSORS[suffix](ZEROS) * 31)
    result = run_bounded(
        "from dials_spot_size_analysis.formats import read_reflections\n"
        f"read_reflections({str(path)!r})"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "inflates more than 200 times its compressed size" in result.stdout, (
        result.stdout
    )
    assert "MemoryError" not in result.stderr


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_bomb_inflating_far_more_than_any_real_file_stops_early(
    tmp_path, monkeypatch, suffix
):
    """Real DIALS files shrink 1.6 to 11 times; past the check's start, content grown
    more than MAX_INFLATION times the compressed bytes read is refused, whatever the
    memory would allow (a 20 GiB bomb took minutes to reach the bound)."""
    path = tmp_path / f"bomb.refl{suffix}"
    path.write_bytes(COMPRESSORS[suffix](TABLE_BOMB))
    monkeypatch.setattr(source, "MAX_DECOMPRESSED_BYTES", 1 << 40)
    monkeypatch.setattr(source, "BOMB_CHECK_BYTES", 8 << 20)
    with pytest.raises(
        FileFormatError,
        match=r"bomb.refl\S*: inflates more than 200 times its compressed size \(0.01 "
        r"GB from 0.00 GB so far\), which no DIALS file does: is it a decompression "
        r"bomb\?",
    ):
        read_reflections(path)


@pytest.mark.parametrize("kind", ["refl", "expt"])
def test_a_compressed_file_of_another_kind_is_refused_at_its_first_bytes(
    tmp_path, kind
):
    """2 GiB of zeros, compressed: not a table nor a JSON object from the first
    block, refused before the rest is inflated (no bound reached)."""
    path = tmp_path / f"zeros.{kind}.gz"
    path.write_bytes(gzip.compress(ZEROS) * 32)
    reader = read_reflections if kind == "refl" else read_experiments
    what = "a DIALS reflection table" if kind == "refl" else "a DIALS experiment list"
    with pytest.raises(FileFormatError, match=f"zeros.{kind}.gz: is not {what}"):
        reader(path)


# ------------------------------------------------------- 3. row counts nothing backs


@pytest.mark.parametrize("nrows", [10**9, 2**62])
@pytest.mark.parametrize("columns", ["none", "only skipped"])
@pytest.mark.parametrize("reader", ["msgpack", "cursor"])
def test_rows_no_column_backs_are_refused(
    shared_data, tmp_path, monkeypatch, nrows, columns, reader
):
    both_header_readers(monkeypatch, reader)
    tag, version, body = unpack(shared_data / INDEXED)
    body["nrows"] = nrows
    body["data"] = (
        {}
        if columns == "none"
        else {"label": ["std::string", [nrows, b"x" * 64]], "x": ["quux", [nrows, b""]]}
    )
    path = tmp_path / "claims.refl"
    path.write_bytes(pack([tag, version, body]))
    with pytest.raises(
        FileFormatError,
        match=rf"claims.refl: is corrupt: it claims {nrows} rows but is "
        rf"{path.stat().st_size} bytes long, and no column holds data for so many rows",
    ):
        read_reflections(path, index_shoeboxes=False)


def test_a_table_without_columns_but_a_plausible_row_count_reads(tmp_path):
    """DIALS writes flex.reflection_table(5) with no columns like this."""
    path = tmp_path / "empty.refl"
    path.write_bytes(
        pack(
            [
                "dials::af::reflection_table",
                2,
                {"identifiers": {}, "nrows": 5, "data": {}},
            ]
        )
    )
    assert read_reflections(path).nrows == 5


def test_a_billion_row_claim_does_not_reach_the_program(shared_data, tmp_path):
    """End to end: the program's per-row arrays (flags default to zeros of nrows) are
    never sized from a claim no column backs."""
    tag, version, body = unpack(shared_data / INDEXED)
    body["nrows"], body["data"] = 10**9, {}
    path = tmp_path / "claims.refl"
    path.write_bytes(pack([tag, version, body]))
    result = run_bounded(
        "from dials_spot_size_analysis.formats import read_reflections\n"
        "import numpy as np\n"
        f"table = read_reflections({str(path)!r}, index_shoeboxes=False)\n"
        "np.zeros(table.nrows, np.uint64)  # what a default flags column would take"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no column holds data for so many rows" in result.stdout


# ------------------------------------------------------- 4. well-known column types

ELEMENT_BYTES = {
    name: np.dtype(dtype).itemsize * int(np.prod(shape, dtype=int))
    for name, (dtype, shape) in reflections.COLUMN_TYPES.items()
}


@pytest.mark.parametrize(
    "column,wrong_type,expected",
    [
        ("flags", "vec3<double>", "std::size_t"),
        ("flags", "int6", "std::size_t"),
        ("id", "vec3<double>", "int"),
        ("id", "std::size_t", "int"),
        ("panel", "int6", "std::size_t"),
        ("panel", "int", "std::size_t"),
        ("xyzobs.px.value", "double", "vec3<double>"),
        ("xyzobs.px.value", "vec2<double>", "vec3<double>"),
        ("xyzobs.mm.value", "double", "vec3<double>"),
        ("xyzcal.px", "mat3<double>", "vec3<double>"),
        ("s1", "vec2<double>", "vec3<double>"),
        ("miller_index", "int6", "cctbx::miller::index<>"),
        ("bbox", "vec3<double>", "int6"),
        ("n_signal", "vec3<double>", "int"),
        ("entering", "int", "bool"),
        ("intensity.sum.value", "int", "double"),
        ("intensity.sum.variance", "vec2<double>", "double"),
        ("shoebox", "int", "Shoebox<>"),
    ],
)
@pytest.mark.parametrize("reader", ["msgpack", "cursor"])
def test_a_well_known_column_of_another_type_is_refused(
    shared_data, tmp_path, monkeypatch, column, wrong_type, expected, reader
):
    """The bytes are resized to fit the new type, so only the type is wrong."""
    both_header_readers(monkeypatch, reader)
    tag, version, body = unpack(shared_data / INDEXED)
    _, (count, blob) = body["data"][column]
    size = count * ELEMENT_BYTES[wrong_type]
    body["data"][column] = [
        wrong_type,
        [count, (blob * (size // len(blob) + 1))[:size]],
    ]
    path = tmp_path / "typed.refl"
    path.write_bytes(pack([tag, version, body]))
    with pytest.raises(
        FileFormatError,
        match=rf"typed.refl: is corrupt: column '{column}' has type '{wrong_type}', "
        rf"but DIALS always writes it as '{expected}'",
    ):
        read_reflections(path)


def test_num_pixels_columns_are_int(shared_data, tmp_path):
    tag, version, body = unpack(shared_data / "centroid_test_data/integrated.refl")
    _, (count, blob) = body["data"]["num_pixels.valid"]
    body["data"]["num_pixels.valid"] = ["double", [count, blob * 2]]
    path = tmp_path / "typed.refl"
    path.write_bytes(pack([tag, version, body]))
    with pytest.raises(FileFormatError, match="'num_pixels.valid' has type 'double'"):
        read_reflections(path)


def test_every_column_of_every_real_file_has_its_dials_type(shared_data):
    for path in sorted(shared_data.glob("*/*.refl")):
        for name, (type_name, _) in unpack(path)[2]["data"].items():
            expected = reflections.expected_column_type(name)
            assert expected in (None, type_name), (path, name)
        read_reflections(path)


@pytest.mark.parametrize("key", [2**64 - 1, 2**31, -1])
@pytest.mark.parametrize("reader", ["msgpack", "cursor"])
def test_identifier_keys_must_fit_the_id_column(
    shared_data, tmp_path, monkeypatch, key, reader
):
    both_header_readers(monkeypatch, reader)
    tag, version, body = unpack(shared_data / INDEXED)
    body["identifiers"] = {key: "f2631175-384a-00b1-a281-8ca7ffd90066"}
    path = tmp_path / "keys.refl"
    path.write_bytes(pack([tag, version, body]))
    with pytest.raises(
        FileFormatError,
        match=rf"keys.refl: is corrupt: its experiment identifiers map has the key "
        rf"{key}, outside 0 to 2147483647, the range of DIALS's 'id' column \(int\)",
    ):
        read_reflections(path)


def test_the_largest_identifier_key_reads(shared_data, tmp_path):
    tag, version, body = unpack(shared_data / INDEXED)
    body["identifiers"] = {2**31 - 1: "x"}
    path = tmp_path / "keys.refl"
    path.write_bytes(pack([tag, version, body]))
    assert read_reflections(path).identifiers == {2**31 - 1: "x"}


# ------------------------------------------------------- 5. both header readers agree


@pytest.mark.parametrize("reader", ["msgpack", "cursor"])
def test_nil_identifiers_are_refused_by_both_readers(
    shared_data, tmp_path, monkeypatch, reader
):
    """DIALS's msgpack adapter accepts an identifiers map or no identifiers key, and
    refuses anything else, nil included ("identifier data not found")."""
    both_header_readers(monkeypatch, reader)
    tag, version, body = unpack(shared_data / INDEXED)
    body["identifiers"] = None
    path = tmp_path / "nil.refl"
    path.write_bytes(pack([tag, version, body]))
    with pytest.raises(
        FileFormatError,
        match=r"nil.refl: is not a valid DIALS reflection table: expected a map at "
        r"byte \d+, found nil",
    ):
        read_reflections(path)


# ------------------------------------------------------- 6. files changed while mapped


def test_a_mapped_file_truncated_meanwhile_is_reported(tmp_path):
    path = tmp_path / "big.refl"
    path.write_bytes(bytes(source.MAP_FROM_BYTES + 4096))
    content = read_bytes(path)
    column = np.frombuffer(content, np.uint8, count=16)  # views are traced to the map
    check_unchanged(column)
    os.truncate(path, 4096)  # nothing past byte 4096 is touched: no SIGBUS
    with pytest.raises(
        FileFormatError,
        match=rf"big.refl: was truncated from {source.MAP_FROM_BYTES + 4096} to 4096 "
        r"bytes while it was being read: wait until the program writing it has "
        r"finished, then run again",
    ):
        check_unchanged(column)


def test_a_mapped_file_rewritten_meanwhile_is_reported(tmp_path):
    path = tmp_path / "big.refl"
    path.write_bytes(bytes(source.MAP_FROM_BYTES))
    content = read_bytes(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(FileFormatError, match="was changed or replaced while"):
        check_unchanged(content)


def test_small_files_are_copies_nothing_outside_changes(tmp_path):
    path = tmp_path / "small.refl"
    path.write_bytes(b"\x93" * 100)
    content = read_bytes(path)
    path.write_bytes(b"")
    assert bytes(content) == b"\x93" * 100
    check_unchanged(content)  # nothing to check: a copy


def test_within_read_whole_a_big_file_is_read_not_mapped(tmp_path):
    """The parent of worker processes, measuring beside them, must not be killed by
    SIGBUS: within read_whole a file of any size is a copy in memory, which nothing
    outside can truncate under it; outside, big files are mapped as before."""
    import mmap

    path = tmp_path / "big.refl"
    path.write_bytes(b"\x93" * source.MAP_FROM_BYTES)
    with source.read_whole():
        whole = read_bytes(path)
    mapped = read_bytes(path)
    assert isinstance(mapped.obj, mmap.mmap)
    assert isinstance(whole.obj, bytes) and bytes(whole) == bytes(mapped)
    os.truncate(path, 4096)
    assert len(whole) == source.MAP_FROM_BYTES  # unchanged


@pytest.mark.skipif(not bus_errors.SUPPORTED, reason="the SIGBUS guard is for Linux")
def test_a_mapped_file_truncated_under_a_load_reads_zeros_and_is_reported(tmp_path):
    """Every page past the new end is touched: the process runs on over zeros (no
    SIGBUS, in a fresh interpreter) and the truncation is reported in its sentence."""
    path = tmp_path / "big.refl"
    length = source.MAP_FROM_BYTES + 4096
    path.write_bytes(b"\x01" * length)
    done = run_bounded(
        f"""
        import os
        import numpy as np
        from dials_spot_size_analysis.formats import source
        content = source.read_bytes({str(path)!r})
        os.truncate({str(path)!r}, 10_000)
        values = np.frombuffer(content, np.uint8)
        print(int(values[:10_000].sum()), int(values[10_000:].sum()), len(values))
        source.check_unchanged(values)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"10000 0 {length}",
        f"{path}: was truncated from {length} to 10000 bytes while it was being read: "
        "wait until the program writing it has finished, then run again",
    ]


@pytest.mark.skipif(not bus_errors.SUPPORTED, reason="the SIGBUS guard is for Linux")
def test_a_fault_in_a_map_that_looks_unchanged_is_still_reported(tmp_path):
    """A page that could not be read, though the file's size and time look as before
    (here a truncation undone, its time put back): the results are refused."""
    path = tmp_path / "big.refl"
    length = source.MAP_FROM_BYTES
    path.write_bytes(b"\x01" * length)
    done = run_bounded(
        f"""
        import os
        import numpy as np
        from dials_spot_size_analysis.formats import source
        path = {str(path)!r}
        before = os.stat(path)
        content = source.read_bytes(path)
        os.truncate(path, 0)
        values = np.frombuffer(content, np.uint8)
        print(int(values.sum()))
        with open(path, "r+b") as handle:
            handle.write(b"\\x01" * len(values))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        source.check_unchanged(values)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "0",
        f"{path}: was not read in full: a page of it could not be loaded (a read error, "
        "or a truncation undone while it was being read); check the file and the disk, "
        "then run again",
    ]


@pytest.mark.skipif(not bus_errors.SUPPORTED, reason="the SIGBUS guard is for Linux")
@pytest.mark.parametrize("faulthandler", [False, True])
def test_a_fault_outside_the_guarded_maps_goes_where_it_would_have(
    tmp_path, faulthandler
):
    """The handler answers only for maps made by read_bytes: any other truncated map
    ends the process by SIGBUS, as it would without the handler, through the handler
    that stood before the guard's where there was one (Python's faulthandler, as
    pytest enables it, which names the fault)."""
    path = tmp_path / "big.refl"
    path.write_bytes(b"\x01" * source.MAP_FROM_BYTES)
    (tmp_path / "guarded.refl").write_bytes(b"\x01" * source.MAP_FROM_BYTES)
    done = run_bounded(
        f"""
        import faulthandler, mmap, os
        from dials_spot_size_analysis.formats import source
        if {faulthandler}:
            faulthandler.enable()
        guarded = source.read_bytes({str(tmp_path / "guarded.refl")!r})  # installed
        with open({str(path)!r}, "rb") as handle:
            other = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        os.truncate({str(path)!r}, 0)
        print(other[4096 * 10])
        """
    )
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stderr)
    assert ("Fatal Python error: Bus error" in done.stderr) == faulthandler


@pytest.mark.skipif(not bus_errors.SUPPORTED, reason="the SIGBUS guard is for Linux")
def test_guard_slots_are_given_back_and_run_out_safely():
    """A map is registered as long as it lives; with every slot taken a further map
    goes unguarded (None), and a freed slot is taken again."""
    taken = [
        bus_errors.guard(4096 * (2 * n + 1), 4096) for n in range(bus_errors.SLOTS)
    ]
    try:
        assert None not in taken and len(set(taken)) == bus_errors.SLOTS
        assert bus_errors.guard(1 << 40, 4096) is None
        bus_errors._GUARD.slots[taken[7] + 2] = 1  # as the handler marks a fault
        assert bus_errors.faulted(taken[7])
        bus_errors.release(taken[7])
        assert bus_errors.guard(1 << 40, 4096) == taken[7]
        assert not bus_errors.faulted(taken[7])  # a new map, not yet faulted
    finally:
        for slot in taken:
            bus_errors.release(slot)


@pytest.mark.skipif(not bus_errors.SUPPORTED, reason="the SIGBUS guard is for Linux")
def test_threads_mapping_their_first_files_at_once_build_one_handler():
    """Eight threads asking for the guard at the same moment in a fresh process get
    the same one, built once: a second, freed, could have been the one installed."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import threading
                from dials_spot_size_analysis.formats import bus_errors
                built, Guard = [], bus_errors._Guard
                def counted():
                    built.append(1)
                    return Guard()
                bus_errors._Guard = counted
                start = threading.Barrier(8)
                found = []
                def ask():
                    start.wait()
                    found.append(bus_errors._installed())
                threads = [threading.Thread(target=ask) for _ in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                print(len(built), len({id(guard) for guard in found}), found[0] is None)
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["1", "1", "False"], done.stderr


# ------------------------------------------------------- 7. messages


def test_any_pickle_is_called_a_python_pickle(tmp_path):
    """A detector mask pickle is no reflection table: the sentence says what is known."""
    import pickle

    path = tmp_path / "mask.pickle"
    path.write_bytes(pickle.dumps((np.zeros((4, 4), bool).tolist(),), protocol=2))
    with pytest.raises(FileFormatError) as caught:
        read_reflections(path)
    message = str(caught.value)
    assert message.startswith(
        f"{path}: is a Python pickle (DIALS wrote reflection tables this way before "
        "2019), which is never unpickled"
    ), message
    assert "legacy Python-pickle reflection table" not in message
    assert "if it is a reflection table, convert it with a current DIALS" in message
    assert reflections.PICKLE_ADVICE.startswith("is a Python pickle ")


def test_without_a_path_the_sentence_has_a_subject(shared_data):
    content = bytearray((shared_data / INDEXED).read_bytes())
    with pytest.raises(FileFormatError) as caught:
        parse_reflections(bytes(content[:-10]))
    assert str(caught.value).startswith("the msgpack data is truncated: "), caught.value
    with pytest.raises(FileFormatError) as caught:
        parse_reflections(b"\x80\x04K\x01.")
    assert str(caught.value).startswith("the msgpack data is a Python pickle")


def _problems(path: Path):
    """The problem text (first argument after the path) of every FileFormatError and
    cursor ``_fail`` in a source file, as literal text (f-string fields as {})."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        arguments = node.args[1:] if name == "FileFormatError" else node.args
        if name not in ("FileFormatError", "_fail") or not arguments:
            continue
        text = arguments[0]
        if isinstance(text, ast.Constant) and isinstance(text.value, str):
            yield node.lineno, text.value
        elif isinstance(text, ast.JoinedStr):
            yield (
                node.lineno,
                "".join(
                    part.value if isinstance(part, ast.Constant) else "{}"
                    for part in text.values
                ),
            )


SENTENCE_VERBS = (
    "is ",
    "does ",
    "cannot ",
    "has ",
    "was ",
    "inflates ",
    "ran ",
    "holds ",
    "claims ",
)


@pytest.mark.parametrize("name", ["source.py", "reflections.py", "msgpack_cursor.py"])
def test_every_problem_reads_as_a_sentence_after_the_path(name):
    """Messages are "<path>: <problem>": each problem starts with a verb whose subject
    is the file (never with a subject of its own, nor with a doubled "is")."""
    found = list(_problems(FORMATS / name))
    assert found
    for line, problem in found:
        if problem == "{} {}":  # the subject given to a problem without a path
            continue
        assert problem.startswith(SENTENCE_VERBS), (name, line, problem)
        assert not problem.startswith("is is"), (name, line, problem)


# ------------------------------------------------------- 8. bounded JSON


def test_json_amplification_is_refused_before_parsing(tmp_path, monkeypatch):
    path = tmp_path / "history.expt"
    path.write_bytes(b'{"history": [' + b",".join([b"{}"] * 100_000) + b"]}")
    monkeypatch.setattr(source, "available_memory", lambda: 10 << 20)
    with pytest.raises(
        FileFormatError,
        match=r"history.expt: is too large to parse here: its 0.00 GB of JSON would "
        r"take up to 0.02 GB of memory but 0.01 GB is available, so run on a machine "
        r"with more memory or split the experiment list \(dials.split_experiments\)",
    ):
        read_json_document(path)


def test_json_amplification_in_limited_memory_ends_in_a_sentence(tmp_path):
    """60 MB of ``[{},{},...]`` take about 1.5 GB as Python objects: more than the
    address space left."""
    path = tmp_path / "history.expt"
    with path.open("wb") as out:
        out.write(b'{"__id__": "ExperimentList", "history": [{}')
        out.write(b",{}" * 20_000_000)
        out.write(b"]}")
    result = run_bounded(
        "from dials_spot_size_analysis.formats.source import read_json_document\n"
        f"read_json_document({str(path)!r})"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "is too large to parse here" in result.stdout
    assert "MemoryError" not in result.stderr


def test_real_experiment_lists_read_as_json_documents(shared_data):
    for path in sorted(shared_data.glob("*/*.expt")):
        document = read_json_document(path)
        assert document["__id__"] == "ExperimentList", path
        assert source.json_parse_estimate(path.read_bytes()) < 10 * path.stat().st_size


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"[1, 2]", "is not a DIALS experiment list: it looks like a JSON file"),
        (b'{"a": ', r"is not valid JSON \(.*\): is it truncated\?"),
        (b"\x93\xa1x", "is not a DIALS experiment list: it looks like a msgpack array"),
    ],
)
def test_json_documents_that_are_not_objects(tmp_path, content, fragment):
    path = tmp_path / "bad.expt"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=f"bad.expt: {fragment}"):
        read_json_document(path)
