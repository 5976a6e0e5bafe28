"""output.reflections: the input table, every column as it was, with each counted spot's
size and shape added as columns DIALS reads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import REPOSITORY

from dials_spot_size_analysis.command_line.spot_size_analysis import run
from dials_spot_size_analysis.formats import read_reflections, write_reflections
from dials_spot_size_analysis.formats.reflections import COLUMN_TYPES
from dials_spot_size_analysis.report.reflections_output import (
    COUNTED_COLUMN,
    INTEGER_COLUMNS,
    PREFIX,
    REAL_COLUMNS,
    ReflectionsOutputError,
    counted_rows,
    table_with_shapes,
)

EXAMPLE = REPOSITORY / "examples" / "data"


def _column_bytes(table, name) -> bytes:
    if name == table.shoebox_column_name:
        return bytes(table._shoebox_blob)
    if name in table.raw_columns:
        return bytes(table.raw_columns[name][2])
    dtype = COLUMN_TYPES[table.column_type(name)][0]
    return np.ascontiguousarray(table.columns[name], dtype=dtype).tobytes()


def _run_with_output(folder, expt, refl, *extra):
    return run(
        [str(expt), str(refl), f"output.reflections={folder / 'shapes.refl'}", *extra]
    )


def _check_output(folder, refl, result):
    """Every original column byte-identical, in its place; the new columns hold the
    result's per-row arrays at the counted rows, 0 / NaN / False elsewhere."""
    original = read_reflections(refl)
    written = read_reflections(folder / "shapes.refl")
    assert written.nrows == original.nrows
    assert written.version == original.version
    assert written.identifiers == original.identifiers
    assert written.column_order[: len(original.column_order)] == original.column_order
    for name in original.column_order:
        assert written.column_type(name) == original.column_type(name), name
        assert _column_bytes(written, name) == _column_bytes(original, name), name
    added = written.column_order[len(original.column_order) :]
    assert added == [COUNTED_COLUMN] + [
        PREFIX + name for name in [*INTEGER_COLUMNS, *REAL_COLUMNS]
    ]
    spots = result.result.spot_sizes
    counted = written.columns[COUNTED_COLUMN]
    assert written.column_type(COUNTED_COLUMN) == "bool"
    assert counted.sum() == len(spots) == result.selection["n_counted"]
    for name, field in INTEGER_COLUMNS.items():
        column = written.columns[PREFIX + name]
        assert written.column_type(PREFIX + name) == "int"
        np.testing.assert_array_equal(column[counted], getattr(spots, field))
        assert (column[~counted] == 0).all()
    for name, field in REAL_COLUMNS.items():
        column = written.columns[PREFIX + name]
        assert written.column_type(PREFIX + name) == "double"
        np.testing.assert_array_equal(
            column[counted], getattr(spots, field).astype(np.float64)
        )
        assert np.isnan(column[~counted]).all()
    return original, written


def test_example_table_gains_the_shape_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refl = EXAMPLE / "indexed.refl"
    result = _run_with_output(tmp_path, EXAMPLE / "indexed.expt", refl)
    original, written = _check_output(tmp_path, refl, result)
    # The counted rows are the indexed ones (flags.require=Auto chose indexed).
    indexed = (original.columns["flags"] & np.uint64(1 << 2)) != 0
    np.testing.assert_array_equal(written.columns[COUNTED_COLUMN], indexed)
    # The size column is the Foreground count of each counted row's shoebox.
    np.testing.assert_array_equal(
        written.columns[PREFIX + "size"][indexed],
        original.shoeboxes.count_mask_values(4)[indexed],
    )
    assert (
        "Writing reflections with sizes and shapes to"
        in (tmp_path / "dials.spot_size_analysis.log").read_text()
    )


def test_selection_by_flags_and_mask_code_is_followed(tmp_path, monkeypatch):
    """An exclusion and another mask code: the rows and sizes follow the run's."""
    monkeypatch.chdir(tmp_path)
    refl = EXAMPLE / "indexed.refl"
    result = _run_with_output(
        tmp_path,
        EXAMPLE / "indexed.expt",
        refl,
        "flags.require=None",
        "mask_code=Valid",
    )
    _, written = _check_output(tmp_path, refl, result)
    assert written.columns[COUNTED_COLUMN].all()  # every row, no flag required


@pytest.mark.parametrize(
    "folder, expt, refl",
    [
        (
            "centroid_test_data",
            "indexed.expt",
            "indexed.refl",
        ),  # version 1, int32 masks
        ("I23_P12M_thau", "indexed.expt", "indexed.refl"),  # 24 panels, uint8 masks
        (
            "centroid_test_data",
            "indexed.expt",
            "integrated.refl",
        ),  # rows without pixels
        ("ssx_CuNiR", "indexed.expt", "indexed.refl"),  # 5 stills, images 17000-17004
        ("eiger_therm", "imported.expt", "strong.refl"),  # not indexed: every row
    ],
)
def test_real_tables(tmp_path, monkeypatch, shared_data, folder, expt, refl):
    monkeypatch.chdir(tmp_path)
    path = shared_data / folder / refl
    result = _run_with_output(tmp_path, shared_data / folder / expt, path)
    original, written = _check_output(tmp_path, path, result)
    if original.shoebox_column_name:
        # Rows selected but without pixel data are not counted.
        has_pixels = original.shoeboxes.has_pixel_data
        assert not written.columns[COUNTED_COLUMN][~has_pixels].any()


def test_output_read_again_as_input_gives_the_same_result(tmp_path, monkeypatch):
    """DIALS's reader aside, ours reads the written table as an input, and the analysis
    of it is the same; run on it again, our columns are replaced, not repeated."""
    monkeypatch.chdir(tmp_path)
    first = _run_with_output(
        tmp_path, EXAMPLE / "indexed.expt", EXAMPLE / "indexed.refl"
    )
    shutil.move(tmp_path / "shapes.refl", tmp_path / "again.refl")
    second = _run_with_output(
        tmp_path, EXAMPLE / "indexed.expt", tmp_path / "again.refl"
    )
    np.testing.assert_array_equal(
        first.result.spot_sizes.size, second.result.spot_sizes.size
    )
    written = read_reflections(tmp_path / "shapes.refl")
    assert (
        written.column_order == read_reflections(tmp_path / "again.refl").column_order
    )
    assert (tmp_path / "shapes.refl").read_bytes() == (
        tmp_path / "again.refl"
    ).read_bytes()


def test_refused_for_several_tables_before_any_work(tmp_path, monkeypatch, shared_data):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        run(
            [
                str(EXAMPLE / "indexed.expt"),
                str(EXAMPLE / "indexed.refl"),
                str(shared_data / "I23_P12M_thau" / "indexed.expt"),
                str(shared_data / "I23_P12M_thau" / "indexed.refl"),
                "output.reflections=shapes.refl",
            ]
        )
    assert stopped.value.code == 1
    assert list(tmp_path.iterdir()) == []  # no log, no JSON: nothing was done


def test_refusal_sentence():
    from dials_spot_size_analysis.report.reflections_output import (
        refuse_unless_one_table,
    )

    refuse_unless_one_table(1)
    with pytest.raises(ReflectionsOutputError, match="one reflection table.*reads 3"):
        refuse_unless_one_table(3)


def test_never_written_over_an_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refl = tmp_path / "indexed.refl"
    shutil.copyfile(EXAMPLE / "indexed.refl", refl)
    before = refl.read_bytes()
    with pytest.raises(SystemExit):
        run([str(EXAMPLE / "indexed.expt"), str(refl), f"output.reflections={refl}"])
    assert refl.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["indexed.refl"]


def test_a_changed_table_is_refused(tmp_path, monkeypatch):
    """The rows are found again in the table: one that no longer gives the counted
    sizes is refused, not written with numbers at the wrong rows."""
    monkeypatch.chdir(tmp_path)
    result = run([str(EXAMPLE / "indexed.expt"), str(EXAMPLE / "indexed.refl")])
    table = read_reflections(EXAMPLE / "indexed.refl")
    np.testing.assert_array_equal(
        counted_rows(table, result),
        np.flatnonzero(table.columns["flags"] & np.uint64(1 << 2)),
    )
    flags = table.columns["flags"].copy()
    flags[np.flatnonzero(flags & np.uint64(1 << 2))[0]] = 0  # one row no longer indexed
    table.columns["flags"] = flags
    with pytest.raises(ReflectionsOutputError, match="no longer holds"):
        counted_rows(table, result)
    result.result.spot_sizes.size[0] += 1  # a size that is not the table's
    with pytest.raises(ReflectionsOutputError, match="no longer holds"):
        counted_rows(read_reflections(EXAMPLE / "indexed.refl"), result)


def test_writes_one_table_named_by_the_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run([str(EXAMPLE / "indexed.expt"), str(EXAMPLE / "indexed.refl")])
    write_reflections(table_with_shapes(result), tmp_path / "direct.refl")
    assert (
        read_reflections(tmp_path / "direct.refl").columns[COUNTED_COLUMN].sum()
        == (result.selection["n_counted"])
    )
