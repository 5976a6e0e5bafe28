"""Bad input to the readers: one FileFormatError naming the file and the problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import msgpack
import pytest

from dials_spot_size_analysis.formats import (
    FileFormatError,
    read_experiments,
    read_reflections,
)


def unpack(path):
    return msgpack.unpackb(path.read_bytes(), strict_map_key=False, raw=False)


def pack(tag, version, body) -> bytes:
    return msgpack.packb([tag, version, body], use_bin_type=True)


@pytest.fixture
def strong(shared_data):
    return unpack(shared_data / "I23_P12M_thau/strong.refl")


def edited(table, edit) -> bytes:
    """An unpacked table (tag, version, body) packed again after ``edit(body)``."""
    tag, version, body = table
    edit(body)
    return pack(tag, version, body)


def write(tmp_path, content: bytes, name="bad.refl"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def expect_error(path, *fragments):
    with pytest.raises(FileFormatError) as caught:
        read_reflections(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nothing.refl", "does not exist")


def test_empty_file(tmp_path):
    expect_error(write(tmp_path, b""), "is empty")


def test_directory(tmp_path):
    expect_error(tmp_path, "is not a regular file (a directory)")


def test_legacy_pickle_is_recognised_and_never_unpickled(
    shared_data, tmp_path, monkeypatch
):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("the reader must never unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    expect_error(
        shared_data / "centroid_test_data/strong.pickle",
        "is a Python pickle (DIALS wrote reflection tables this way before 2019)",
        "never unpickled",
        "as_file('new.refl')",
    )
    renamed = shutil.copy(
        shared_data / "centroid_test_data/strong.pickle", tmp_path / "strong.refl"
    )
    expect_error(renamed, "is a Python pickle")


def test_a_hostile_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "executed"
    payload = b"\x80\x04cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    expect_error(write(tmp_path, payload), "is a Python pickle")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content,looks_like",
    [
        (b"\x89HDF\r\n\x1a\n" + bytes(100), "HDF5"),
        (b'{"__id__": "ExperimentList", "experiment": []}', "JSON"),
        (b"###CBF: VERSION 1.5\n", "CBF"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "PNG"),
        (b"just some text\n", "text file"),
    ],
)
def test_wrong_kind_of_file_says_what_it_looks_like(tmp_path, content, looks_like):
    expect_error(
        write(tmp_path, content), "is not a DIALS reflection table", looks_like
    )


def test_wrong_tag(tmp_path, strong):
    _, version, body = strong
    expect_error(
        write(tmp_path, pack("dials::af::something_else", version, body)), "its tag is"
    )


def test_unsupported_version(tmp_path, strong):
    tag, _, body = strong
    expect_error(write(tmp_path, pack(tag, 3, body)), "version 3")


def test_unknown_header_key(tmp_path, strong):
    expect_error(
        write(tmp_path, edited(strong, lambda body: body.update(extra=1))),
        "unknown header key 'extra'",
    )


def test_missing_nrows(tmp_path, strong):
    expect_error(
        write(tmp_path, edited(strong, lambda body: body.pop("nrows"))), "no 'nrows'"
    )


def test_identifiers_are_optional(tmp_path, strong):
    table = read_reflections(
        write(tmp_path, edited(strong, lambda body: body.pop("identifiers")))
    )
    assert table.identifiers is None and table.nrows == 208


def test_nrows_disagreeing_with_columns(tmp_path, strong):
    expect_error(
        write(tmp_path, edited(strong, lambda body: body.update(nrows=209))),
        "has 208 elements but the table has 209 rows",
    )


def column_bytes_edited(table, name: str, edit) -> bytes:
    """An unpacked table packed again with column ``name``'s bytes replaced by ``edit(bytes)``."""

    def edit_column(body):
        type_name, (count, blob) = body["data"][name]
        body["data"][name] = [type_name, [count, edit(blob)]]

    return edited(table, edit_column)


def test_element_count_disagreeing_with_bytes(tmp_path, strong):
    content = column_bytes_edited(strong, "xyzobs.px.value", lambda blob: blob[:-24])
    expect_error(
        write(tmp_path, content), "'xyzobs.px.value'", "need 4992 bytes", "holds 4968"
    )


def test_huge_claims_in_a_tiny_file_allocate_nothing(tmp_path):
    """A 100-byte file claiming 10^12 rows must be refused before anything is sized from it."""
    body = {"nrows": 10**12, "data": {"shoebox": ["Shoebox<>", [10**12, b"\x00" * 16]]}}
    path = write(tmp_path, pack("dials::af::reflection_table", 2, body))
    assert path.stat().st_size < 100
    script = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
        from dials_spot_size_analysis.formats import FileFormatError, read_reflections
        try:
            read_reflections({str(path)!r})
        except FileFormatError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "1000000000000 records need at least" in result.stdout


def test_bool_column_with_other_values(tmp_path, shared_data):
    content = column_bytes_edited(
        unpack(shared_data / "I23_P12M_thau/indexed.refl"),
        "entering",
        lambda blob: b"\x07" + blob[1:],
    )
    expect_error(write(tmp_path, content), "bool column 'entering'")


def test_trailing_bytes_after_the_table(tmp_path, shared_data):
    content = (shared_data / "eiger_therm/strong.refl").read_bytes() + b"\x00\x01"
    expect_error(write(tmp_path, content), "2 unexpected bytes follow the table")


def test_truncated_file(tmp_path, shared_data):
    content = (shared_data / "eiger_therm/strong.refl").read_bytes()
    expect_error(write(tmp_path, content[: len(content) // 2]), "is truncated")


def shoebox_variant(strong, edit):
    return column_bytes_edited(strong, "shoebox", lambda blob: edit(bytearray(blob)))


class TestCorruptShoeboxColumn:
    def test_record_running_past_the_end(self, tmp_path, strong):
        content = shoebox_variant(strong, lambda blob: bytes(blob[:-10]))
        expect_error(write(tmp_path, content), "shoebox column", "record 207")

    def test_present_byte_other_than_0_1_2(self, tmp_path, strong):
        def flip(blob):
            blob[28] = 7
            return bytes(blob)

        expect_error(
            write(tmp_path, shoebox_variant(strong, flip)),
            "record 0 has pixel-data marker 7",
        )

    def test_impossible_bbox(self, tmp_path, strong):
        def swap(blob):
            blob[4:8], blob[8:12] = blob[8:12], blob[4:8]  # x0 > x1
            return bytes(blob)

        expect_error(
            write(tmp_path, shoebox_variant(strong, swap)),
            "record 0 has an impossible bbox [1585, 1583",
        )

    def test_bbox_volume_larger_than_the_file(self, tmp_path, strong):
        def grow(blob):
            blob[24:28] = (2**31 - 1).to_bytes(4, "little")  # z1
            blob[16:20] = (2**31 - 1).to_bytes(4, "little")  # y1
            return bytes(blob)

        expect_error(
            write(tmp_path, shoebox_variant(strong, grow)),
            "record 0 has bbox",
            "run past the end",
        )

    def test_extra_bytes_after_the_last_record(self, tmp_path, strong):
        content = shoebox_variant(strong, lambda blob: bytes(blob) + bytes(29))
        expect_error(write(tmp_path, content), "more than its records")


def test_string_columns_are_skipped_with_a_warning(tmp_path, strong, caplog):
    content = edited(
        strong,
        lambda body: body["data"].update(label=["std::string", [208, bytes(208 * 32)]]),
    )
    with caplog.at_level("WARNING"):
        table = read_reflections(write(tmp_path, content))
    assert (
        "label" not in table.columns
        and "not portable" in table.skipped_columns["label"]
    )
    assert "column 'label' skipped" in caplog.text
    assert table.nrows == 208 and table.shoeboxes is not None


# ------------------------------------------------------------------------- experiments


def test_experiments_missing(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        read_experiments(tmp_path / "none.expt")


def test_reflection_file_given_as_experiments(shared_data):
    with pytest.raises(
        FileFormatError,
        match="is not a DIALS experiment list: it looks like a msgpack array",
    ):
        read_experiments(shared_data / "eiger_therm/strong.refl")


def test_truncated_experiments(tmp_path, shared_data):
    text = (shared_data / "eiger_therm/imported.expt").read_text()
    path = tmp_path / "cut.expt"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(FileFormatError, match="is not valid JSON .*is it truncated"):
        read_experiments(path)


def test_json_that_is_not_an_experiment_list(tmp_path):
    path = tmp_path / "other.expt"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(FileFormatError, match="not a DIALS experiment list"):
        read_experiments(path)


def test_experiment_referring_to_a_missing_model(tmp_path, shared_data):
    document = json.loads((shared_data / "eiger_therm/imported.expt").read_text())
    document["experiment"][0]["beam"] = 5
    path = tmp_path / "broken.expt"
    path.write_text(json.dumps(document))
    with pytest.raises(
        FileFormatError, match="experiment 0 refers to beam 5, which does not exist"
    ):
        read_experiments(path)


def test_invalid_model(tmp_path, shared_data):
    document = json.loads((shared_data / "eiger_therm/imported.expt").read_text())
    del document["beam"][0]["wavelength"]
    path = tmp_path / "broken.expt"
    path.write_text(json.dumps(document))
    with pytest.raises(
        FileFormatError, match="invalid beam model .number 0.: missing 'wavelength'"
    ):
        read_experiments(path)


@pytest.mark.parametrize("where", ["header", "data", "identifiers", "column"])
def test_arrays_of_pairs_are_not_maps(strong, tmp_path, where):
    """Lookalikes that msgpack's C unpacker would turn into the same Python pairs as a map
    are refused, as the cursor refuses them."""
    header = strong[2]
    if where == "header":
        body = [[key, value] for key, value in header.items()]
    else:
        body = dict(header)
        if where == "data":
            body["data"] = [[name, column] for name, column in header["data"].items()]
        elif where == "identifiers":
            body["identifiers"] = [
                [key, value] for key, value in header["identifiers"].items()
            ]
        else:  # a column's [type, [count, bytes]] given as a map
            name, (type_name, data) = next(iter(header["data"].items()))
            body["data"] = {**header["data"], name: {type_name: data}}
    expect_error(
        write(tmp_path, pack("dials::af::reflection_table", 2, body)),
        "is not a valid DIALS reflection table: expected",
    )
