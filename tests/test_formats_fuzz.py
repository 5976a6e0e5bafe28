"""Property-based: truncated, bit-flipped and resized real files either read as a valid
table or raise FileFormatError; never another exception, a crash or a hang."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dials_spot_size_analysis.formats import FileFormatError, ReflectionTable
from dials_spot_size_analysis.formats.msgpack_cursor import MsgpackCursor
from dials_spot_size_analysis.formats.reflections import (
    _unpacked_header,
    _walked_header,
    parse_reflections,
)

SOURCES = ["eiger_therm/strong.refl", "centroid_test_data/integrated.refl"]
pytestmark = pytest.mark.skipif(
    not (SHARED_DATA / SOURCES[0]).is_file(),
    reason=f"real DIALS test files not found at {SHARED_DATA}",
)
FUZZ = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def originals() -> list[bytes]:
    return [(SHARED_DATA / name).read_bytes() for name in SOURCES]


def same_header(content: bytes) -> None:
    """msgpack's C unpacker (small buffers) reads exactly what the checking cursor reads,
    or leaves the buffer to the cursor."""
    unpacked = _unpacked_header(content)
    if unpacked is None:
        return
    walked = _walked_header(
        MsgpackCursor(content)
    )  # must not raise where the C path accepted
    assert unpacked[:4] == walked[:4]
    assert [(n, t, c, b.tobytes()) for n, t, c, b in unpacked.columns] == [
        (n, t, c, b.tobytes()) for n, t, c, b in walked.columns
    ]


def check(content: bytes) -> None:
    same_header(content)
    try:
        table = parse_reflections(content, index_shoeboxes=False)
    except FileFormatError as error:
        assert str(error)
        return
    assert isinstance(table, ReflectionTable)
    for name, column in table.columns.items():
        assert len(column) == table.nrows, name
    if table.shoebox_column_name is None:
        return
    # The one-pass count the program uses finds what indexing then counting finds.
    try:  # the index is not built yet: this streams
        streamed = table.count_shoebox_pixels(5)
    except FileFormatError as error:
        streamed = error
    try:
        shoeboxes = table.shoeboxes
    except FileFormatError as error:
        assert isinstance(streamed, FileFormatError) and str(streamed) == str(error)
        return
    if shoeboxes is not None:
        assert len(shoeboxes) == table.nrows
        counts = shoeboxes.count_mask_values(5)
        assert not isinstance(streamed, FileFormatError), streamed
        assert (
            streamed[0].tolist() == counts.tolist()
            and streamed[1].tolist() == shoeboxes.has_pixel_data.tolist()
        )
        assert (counts >= 0).all() and (counts <= shoeboxes.n_voxels).all()
        ends = (
            shoeboxes.data_offset
            + shoeboxes.n_voxels * np.array([0, 12, 9])[shoeboxes.present]
        )
        assert (ends <= shoeboxes.blob.size).all()


source = st.sampled_from(range(len(SOURCES)))


@FUZZ
@given(which=source, data=st.data())
def test_truncated(which, data):
    content = originals()[which]
    check(content[: data.draw(st.integers(0, len(content) - 1))])


@FUZZ
@given(which=source, data=st.data())
def test_bit_flips(which, data):
    content = bytearray(originals()[which])
    for position in data.draw(
        st.lists(st.integers(0, len(content) * 8 - 1), min_size=1, max_size=8)
    ):
        content[position // 8] ^= 1 << (position % 8)
    check(bytes(content))


@FUZZ
@given(which=source, data=st.data())
def test_resized(which, data):
    content = originals()[which]
    position = data.draw(st.integers(0, len(content)))
    if data.draw(st.booleans()):
        inserted = data.draw(st.binary(min_size=1, max_size=64))
        content = content[:position] + inserted + content[position:]
    else:
        content = (
            content[:position] + content[position + data.draw(st.integers(1, 64)) :]
        )
    check(content)


@FUZZ
@given(which=source, data=st.data())
def test_shoebox_bytes_overwritten(which, data):
    """Aim at the shoebox column, where the variable-length records live."""
    content = bytearray(originals()[which])
    start = content.find(b"Shoebox<>") + 20
    position = data.draw(st.integers(start, len(content) - 4))
    content[position : position + 4] = data.draw(st.binary(min_size=4, max_size=4))
    check(bytes(content))
