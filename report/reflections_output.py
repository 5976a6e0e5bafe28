"""``output.reflections``: the input table with each spot's size and shape as new columns.

DIALS reads the file as any reflection table, so the numbers can be used where DIALS
tables are used, e.g. to colour or filter spots by size in
``dials.reciprocal_lattice_viewer``. The new columns are all named
``spot_size_analysis.*``: DIALS's nearest names mean something else. ``n_signal`` is
DIALS's count of Valid|Foreground pixels, whatever ``mask_code`` this run counted, and
``dials.augment_spots``'s ``dx`` and ``dy`` are the bbox's width and height (x1 - x0,
y1 - y0), not the span of the coded pixels that ``extent_x`` and ``extent_y`` measure.

The analysis keeps one entry per *counted* row (selected by flags, with pixel data), in
table order, without the row numbers; they are found again here from the table by the
same selection functions the measurement used, and checked against the analysis (the
number of counted rows and, for shoebox tables, every size), so a table that changed
since it was measured is refused rather than given the wrong numbers.
"""

from __future__ import annotations

import os

import numpy as np

from ..algorithms import flags as flag_names
from ..algorithms.mask_codes import mask_code_value
from ..algorithms.result import AnalysisResult
from ..algorithms.spot_sizes import (
    SHAPE_INTEGERS,
    SHAPE_REALS,
    resolve_required_flags,
    size_source,
    sizes_from_column,
)
from ..errors import SpotSizeAnalysisError
from ..formats import ReflectionTable, read_reflections

PREFIX = "spot_size_analysis."
# New column -> (SpotSizes field, DIALS column type); "counted" marks the rows measured.
INTEGER_COLUMNS = {"size": "size", **{name: name for name in SHAPE_INTEGERS}}
REAL_COLUMNS = {name: name for name in SHAPE_REALS}
COUNTED_COLUMN = PREFIX + "counted"


class ReflectionsOutputError(SpotSizeAnalysisError):
    """The per-reflection output cannot be written for this run."""


def refuse_unless_one_table(n_tables: int) -> None:
    """Refuse, before any work, a per-reflection output for a run over several tables:
    it is the one input table with columns added.

    Parameters
    ----------
    n_tables
        How many reflection tables the run reads.
    """
    if n_tables != 1:
        raise ReflectionsOutputError(
            f"output.reflections adds columns to one reflection table, but this run "
            f"reads {n_tables}: run once per table, or set output.reflections=None"
        )


def counted_rows(table: ReflectionTable, analysis: AnalysisResult) -> np.ndarray:
    """The table's row number of each counted row, in the order of the analysis's
    per-row arrays.

    The rows are selected again, by the functions the measurement used, with the flags
    the run resolved for this table (``DatasetSelection.require`` / ``exclude``).

    Parameters
    ----------
    table
        The run's only reflection table, read again.
    analysis
        The run's result (one dataset).

    Returns
    -------
    numpy.ndarray
        int64 row numbers, ascending, one per entry of ``analysis.result.spot_sizes``.

    Raises
    ------
    ReflectionsOutputError
        Where the table no longer gives the rows (or sizes) the analysis counted.
    """
    result = analysis.result
    if len(result.datasets) != 1:
        refuse_unless_one_table(len(result.datasets))
    dataset = result.datasets[0]
    columns = table.columns
    flags = (
        np.asarray(columns["flags"], dtype=np.uint64)
        if "flags" in columns
        else np.zeros(table.nrows, np.uint64)
    )
    required, _ = resolve_required_flags(dataset.require, flags)
    selected = flag_names.select_by_flags(flags, required, dataset.exclude)
    code = mask_code_value(result.mask_code)
    where = table.path or dataset.name
    source, _ = size_source(columns, table.shoebox_column_name is not None, code, where)
    if source == "shoebox":
        has_pixel_data = table.shoeboxes.has_pixel_data
    else:
        sizes, has_pixel_data = sizes_from_column(source, columns[source])
    rows = np.flatnonzero(selected & has_pixel_data).astype(np.int64)
    measured = result.spot_sizes.size
    if source == "shoebox":
        sizes = table.shoeboxes.count_mask_values(code)
    if len(rows) != len(measured) or not np.array_equal(sizes[rows], measured):
        raise ReflectionsOutputError(
            f"{where} no longer holds the reflections this run measured "
            f"({len(rows)} rows selected now, {len(measured)} counted): was it "
            "changed during the run? Run again"
        )
    return rows


def shape_columns(nrows: int, rows: np.ndarray, spot_sizes) -> dict[str, np.ndarray]:
    """The new columns: each counted row's size and shape at its row, 0 (whole numbers)
    or NaN (real numbers) at the rows not counted, and a ``counted`` flag.

    Parameters
    ----------
    nrows
        The table's number of rows.
    rows
        Each counted row's row number (:func:`counted_rows`).
    spot_sizes
        The analysis's per-row arrays (``SpotSizes``), one entry per counted row.

    Returns
    -------
    dict
        Column name -> array of ``nrows`` (int32, float64 or bool: DIALS's ``int``,
        ``double`` and ``bool`` columns).
    """
    new = {COUNTED_COLUMN: np.zeros(nrows, dtype=bool)}
    new[COUNTED_COLUMN][rows] = True
    for name, field in INTEGER_COLUMNS.items():
        column = np.zeros(nrows, dtype=np.int32)
        column[rows] = getattr(spot_sizes, field)
        new[PREFIX + name] = column
    for name, field in REAL_COLUMNS.items():
        column = np.full(nrows, np.nan, dtype=np.float64)
        column[rows] = getattr(spot_sizes, field)
        new[PREFIX + name] = column
    return new


def table_with_shapes(
    analysis: AnalysisResult, table_path: str | os.PathLike | None = None
) -> ReflectionTable:
    """The run's reflection table read again, with the size and shape columns.

    Every column of the table is kept as it was read (byte for byte), in its own
    order, followed by the new ones; where the table already has columns of these names
    (e.g. it is such an output itself) they are replaced in place.

    Parameters
    ----------
    analysis
        The run's result, over the one table at ``table_path``.
    table_path
        The table the run measured; by default the one its ``inputs`` name.
    """
    if table_path is None:
        tables = [
            entry["reflections"] for entry in analysis.inputs if "reflections" in entry
        ]
        refuse_unless_one_table(len(tables))
        table_path = tables[0]
    table = read_reflections(table_path)
    rows = counted_rows(table, analysis)
    for name, column in shape_columns(
        table.nrows, rows, analysis.result.spot_sizes
    ).items():
        if table.column_order and name not in table.column_order:
            table.column_order.append(name)
        table.columns[name] = column
    return table
