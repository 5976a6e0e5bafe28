"""The .refl reader and writer against files written by DIALS itself."""

from __future__ import annotations

import bz2
import gzip
import lzma

import msgpack
import numpy as np
import pytest
from conftest import REFLECTION_FILES, SHOEBOX_CODES

from dials_spot_size_analysis.formats import (
    read_reflections,
    reflections,
    write_reflections,
)
from dials_spot_size_analysis.formats.reflections import parse_reflections
from dials_spot_size_analysis.formats.shoebox_encoding import reencode


@pytest.mark.parametrize("header_reader", ["msgpack", "cursor"])
@pytest.mark.parametrize("name", sorted(REFLECTION_FILES))
def test_columns_and_shoeboxes_equal_dials_ground_truth(
    shared_data, ground_truth, name, header_reader, monkeypatch
):
    """Small files' structure is read by msgpack's C unpacker, big ones' by the cursor:
    both here, on every file."""
    if header_reader == "cursor":
        monkeypatch.setattr(reflections, "SMALL_BUFFER_BYTES", 0)
    truth = ground_truth[name]
    table = read_reflections(shared_data / name)
    assert table.nrows == len(table) == truth["nrows"]
    assert {str(k): v for k, v in table.identifiers.items()} == truth["identifiers"]
    assert sorted([*table.columns, table.shoebox_column_name]) == sorted(
        truth["columns"]
    )
    assert (
        table["flags"].dtype == np.uint64 and table["flags"].tolist() == truth["flags"]
    )
    assert table["id"].dtype == np.int32 and table["id"].tolist() == truth["id"]
    assert table["panel"].tolist() == truth["panel"]
    assert int(((table["flags"] & 4) != 0).sum()) == truth["n_indexed"]
    for column in ("n_signal", "num_pixels.foreground", "num_pixels.valid"):
        if column in truth:
            assert table[column].tolist() == truth[column]
    shoeboxes = table.shoeboxes
    assert shoeboxes.has_pixel_data.tolist() == truth["shoebox_allocated"]
    assert shoeboxes.bbox.tolist() == truth["shoebox_bbox"]
    assert shoeboxes.panel.tolist() == truth["shoebox_panel"]
    for code in SHOEBOX_CODES:
        assert (
            shoeboxes.count_mask_values(int(code)).tolist()
            == truth["count_mask_values"][code]
        ), code


def test_column_types_and_shapes(shared_data):
    table = read_reflections(shared_data / "centroid_test_data/indexed.refl")
    assert table.version == 1
    assert table["bbox"].shape == (654, 6) and table["bbox"].dtype == np.int32
    assert (
        table["miller_index"].shape == (654, 3)
        and table["miller_index"].dtype == np.int32
    )
    assert (
        table["xyzobs.px.value"].shape == (654, 3)
        and table["xyzobs.px.value"].dtype == np.float64
    )
    assert table["entering"].dtype == bool
    assert table.column_type("miller_index") == "cctbx::miller::index<>"
    assert table.column_type("shoebox") == "Shoebox<>"
    # Views of the memory-mapped file, not copies.
    assert (
        not table["xyzobs.px.value"].flags.owndata
        and not table["xyzobs.px.value"].flags.writeable
    )
    assert read_reflections(shared_data / "I23_P12M_thau/indexed.refl").version == 2


def test_integrated_rows_without_pixel_data_are_distinguishable(shared_data):
    shoeboxes = read_reflections(
        shared_data / "centroid_test_data/integrated.refl"
    ).shoeboxes
    assert int(shoeboxes.has_pixel_data.sum()) == 278
    assert (shoeboxes.n_voxels[~shoeboxes.has_pixel_data] == 0).all()
    assert (shoeboxes.count_mask_values(0)[shoeboxes.has_pixel_data] > 0).all()


def test_mask_record_kinds(shared_data):
    assert set(
        read_reflections(
            shared_data / "centroid_test_data/indexed.refl"
        ).shoeboxes.present
    ) == {1}
    assert set(
        read_reflections(shared_data / "I23_P12M_thau/strong.refl").shoeboxes.present
    ) == {2}


def test_pixels_of_one_row(shared_data):
    shoeboxes = read_reflections(shared_data / "I23_P12M_thau/strong.refl").shoeboxes
    data, mask, background = shoeboxes.pixels(0)
    assert data.shape == mask.shape == background.shape == (1, 3, 2)
    assert int(((mask & 4) == 4).sum()) == shoeboxes.count_mask_values(4)[0]
    assert set(np.unique(mask)) <= {0, 5}


@pytest.mark.parametrize("name", sorted(REFLECTION_FILES))
def test_round_trip_is_byte_identical(shared_data, tmp_path, name):
    original = (shared_data / name).read_bytes()
    write_reflections(read_reflections(shared_data / name), tmp_path / "copy.refl")
    assert (tmp_path / "copy.refl").read_bytes() == original


def test_version_1_int32_masks_read_like_version_2_uint8_masks(shared_data, tmp_path):
    version_1 = read_reflections(shared_data / "centroid_test_data/indexed.refl")
    version_1.shoeboxes = reencode(version_1.shoeboxes, mask_kind=2)
    write_reflections(version_1, tmp_path / "v2.refl", version=2)
    version_2 = read_reflections(tmp_path / "v2.refl")
    original = read_reflections(shared_data / "centroid_test_data/indexed.refl")
    assert version_2.version == 2 and set(version_2.shoeboxes.present) == {2}
    for code in SHOEBOX_CODES:
        assert np.array_equal(
            version_2.shoeboxes.count_mask_values(int(code)),
            original.shoeboxes.count_mask_values(int(code)),
        )
    assert np.array_equal(version_2.shoeboxes.bbox, original.shoeboxes.bbox)


def test_writing_version_1_converts_uint8_masks_to_int32(shared_data, tmp_path):
    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    write_reflections(table, tmp_path / "v1.refl", version=1)
    again = read_reflections(tmp_path / "v1.refl")
    assert again.version == 1 and set(again.shoeboxes.present) == {1}
    assert np.array_equal(
        again.shoeboxes.count_mask_values(5), table.shoeboxes.count_mask_values(5)
    )
    assert np.array_equal(again["xyzobs.px.value"], table["xyzobs.px.value"])


def test_new_table_written_as_version_2_reads_back(tmp_path):
    from dials_spot_size_analysis.formats import ReflectionTable

    table = ReflectionTable(nrows=3, identifiers={0: "abc"})
    table.columns["flags"] = np.array([4, 32, 36], dtype=np.uint64)
    table.columns["miller_index"] = np.array(
        [[1, 2, 3], [0, 0, 1], [-1, 0, 0]], dtype=np.int32
    )
    table.columns["entering"] = np.array([True, False, True])
    write_reflections(table, tmp_path / "new.refl")
    tag, version, body = msgpack.unpackb(
        (tmp_path / "new.refl").read_bytes(), strict_map_key=False
    )
    assert (tag, version, body["nrows"], body["identifiers"]) == (
        "dials::af::reflection_table",
        2,
        3,
        {0: "abc"},
    )
    again = read_reflections(tmp_path / "new.refl")
    assert again["miller_index"].tolist() == [[1, 2, 3], [0, 0, 1], [-1, 0, 0]]
    assert again["entering"].tolist() == [True, False, True]


@pytest.mark.parametrize(
    "suffix,compress",
    [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)],
)
def test_compressed_files_read_like_the_original(
    shared_data, tmp_path, suffix, compress
):
    source = shared_data / "I23_P12M_thau/strong.refl"
    target = tmp_path / f"strong.refl{suffix}"
    target.write_bytes(compress(source.read_bytes()))
    assert np.array_equal(
        read_reflections(target).shoeboxes.count_mask_values(4),
        read_reflections(source).shoeboxes.count_mask_values(4),
    )


def test_zstandard_compressed_file(shared_data, tmp_path):
    zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed")
    source = shared_data / "eiger_therm/strong.refl"
    target = tmp_path / "strong.refl.zst"
    target.write_bytes(zstandard.ZstdCompressor().compress(source.read_bytes()))
    assert (
        read_reflections(target)["flags"].tolist()
        == read_reflections(source)["flags"].tolist()
    )


def test_parse_from_bytes_as_dials_as_msgpack_gives(shared_data):
    table = parse_reflections((shared_data / "eiger_therm/strong.refl").read_bytes())
    assert table.nrows == 112 and table.path is None


def test_prefetch_hints_read_nothing_and_never_fault():
    from dials_spot_size_analysis.formats.shoeboxes import prefetch_at
    from dials_spot_size_analysis.jit import njit

    @njit
    def hinted_sum(blob, offsets):
        total = 0
        for offset in offsets:
            prefetch_at(blob, offset)  # past either end too: only a hint
        for value in blob:
            total += value
        return total

    blob = np.arange(10, dtype=np.uint8)
    offsets = np.array([0, 9, 10, 1 << 20, 1 << 40, -4096], dtype=np.int64)
    assert hinted_sum(blob, offsets) == 45
    assert blob.tolist() == list(range(10))


def test_loads_through_a_byte_pointer_equal_those_through_the_array():
    from numba.core.errors import TypingError

    from dials_spot_size_analysis.formats.shoeboxes import (
        bytes_pointer,
        float32_at,
        int32_at,
    )
    from dials_spot_size_analysis.jit import njit

    @njit
    def read_both(blob, position):
        pointer = bytes_pointer(blob)
        return (
            float32_at(blob, position),
            float32_at(pointer, position),
            int32_at(blob, position),
            int32_at(pointer, position),
            pointer[position],
        )

    values = np.array([1.5, -2.25, 3e38], "<f4").tobytes()
    blob = np.frombuffer(b"\x07" + values, np.uint8).copy()  # unaligned floats
    for k, expected in enumerate([1.5, -2.25, np.float32(3e38)]):
        on_array, on_pointer, bits, pointer_bits, first_byte = read_both(
            blob, 1 + 4 * k
        )
        assert on_array == on_pointer == expected
        assert bits == pointer_bits == np.float32(expected).view(np.int32)
        assert first_byte == blob[1 + 4 * k]
    with pytest.raises(TypingError):
        read_both(np.zeros(4, np.int32), 0)  # bytes only


@pytest.mark.parametrize("rows_per_chunk", [1, 50, 1 << 20])
def test_stretches_indexed_into_the_kept_index_equal_one_scan(
    shared_data, rows_per_chunk
):
    path = shared_data / "centroid_test_data/integrated.refl"
    whole = read_reflections(path).shoeboxes
    table = read_reflections(path, index_shoeboxes=False)
    seen = []
    for start, stop, column in table.shoebox_chunks(rows_per_chunk, keep_index=True):
        assert table._shoebox_index is None  # set once every stretch is indexed
        seen.append((start, stop, column.data_offset.tolist()))
    assert [s[:2] for s in seen][-1][1] == len(whole)
    kept = table.shoeboxes
    for name in ("panel", "bbox", "present", "data_offset"):
        assert np.array_equal(getattr(kept, name), getattr(whole, name)), name
    for start, stop, offsets in seen:  # the stretches were views of the same rows
        assert offsets == whole.data_offset[start:stop].tolist()
    # A consumer that stops early leaves no half-filled index behind.
    unfinished = read_reflections(path, index_shoeboxes=False)
    next(iter(unfinished.shoebox_chunks(10, keep_index=True)))
    assert unfinished._shoebox_index is None


@pytest.mark.parametrize("rows_per_chunk", [7, 30, 1 << 20])
def test_each_byte_of_the_column_is_mapped_ahead_once(
    shared_data, rows_per_chunk, monkeypatch
):
    """Stretches shorter than the read-ahead ask only for the bytes not mapped yet (a
    walk over mapped pages costs about as much as mapping them), and every byte is
    asked for; a stretch longer than the read-ahead has its first bytes mapped, the
    rest as it is read."""
    from dials_spot_size_analysis.formats import shoeboxes

    table = read_reflections(shared_data / "centroid_test_data/integrated.refl")
    blob, nrows = np.asarray(table.shoeboxes.blob), table.nrows
    base = blob.__array_interface__["data"][0]
    asked = []

    def populate_pages(part):
        asked.append((part.__array_interface__["data"][0] - base, part.size))

    monkeypatch.setattr(shoeboxes, "PREFETCH_BYTES", blob.size // 5 + 3)
    monkeypatch.setattr(shoeboxes.source, "populate_pages", populate_pages)
    for scan in (
        lambda: list(shoeboxes.indexed_chunks(blob, nrows, rows_per_chunk)),
        lambda: shoeboxes.count_pixels_streaming(
            blob, nrows, 4, rows_per_chunk=rows_per_chunk
        ),
    ):
        asked.clear()
        scan()
        covered = np.zeros(blob.size, np.int64)
        for offset, size in asked:
            covered[offset : offset + size] += 1
        if rows_per_chunk < nrows:
            assert covered.min() == covered.max() == 1
        else:
            assert asked == [(0, shoeboxes.PREFETCH_BYTES)]
