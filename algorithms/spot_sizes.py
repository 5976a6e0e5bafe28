"""Spot sizes: select reflections, count their mask-coded pixels, summarise.

``measure`` turns one reflection table (and its experiments) into :class:`SpotSizes`, one
row per counted reflection; ``SpotSizes`` from many tables concatenate exactly, and
``summarise`` turns them into a :class:`SpotSizeResult`: histogram, statistics and
breakdowns. Nothing here reads files or prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import SpotSizeAnalysisError
from . import flags as flag_names
from .geometry import ExperimentGeometry, image_numbers, shell_edges, shell_numbers
from .histogram import Histogram, automatic_range, histogram
from .mask_codes import MASK_CODES, canonical_names, mask_code_value
from .spot_shape import (
    STORED_INTEGERS,
    STORED_REALS,
    ShapesToMeasure,
    SpotShapes,
    store_shapes,
    summarise_spot_shapes,
)
from .statistics import group_statistics, summary_statistics, value_counts

# Per-row columns that hold a shoebox count without the shoeboxes, and the code each
# means exactly (doc/dials_facts.md §2). n_signal is Valid|Foreground, which on spot-finding masks
# (every signal pixel is Valid|Foreground) is also the Foreground count.
SIZE_COLUMNS_WITHOUT_SHOEBOXES = (
    (
        "n_signal",
        (4, 5),
        "dials.find_spots counts Valid|Foreground pixels, which on spot-finding masks are exactly the Foreground pixels; "
        "a row where it is 0 had no pixel data and is excluded",
    ),
    ("num_pixels.foreground", (5,), "dials.integrate counts Valid|Foreground pixels"),
    ("num_pixels.valid", (1,), "dials.integrate counts Valid pixels"),
    ("num_pixels.background", (3,), "dials.integrate counts Valid|Background pixels"),
)

NO_SHOEBOX_ADVICE = (
    "shoeboxes are kept by dials.find_spots (output.shoeboxes=True, the default) and passed on "
    "by dials.index and dials.refine; dials.integrate drops them, but with "
    "integration.debug.output=True it writes them to separate shoeboxes_*.refl files, which "
    "this program reads; dials.scale drops them"
)
POLYCHROMATIC_NOTE = (
    "the experiments have a polychromatic (Laue or time-of-flight) beam with no single "
    "wavelength, and the reflection table has no per-reflection wavelength column "
    "(wavelength or wavelength_cal), so the d-spacings are unknown"
)
# Columns whose 0 means "no pixel data", not a spot of no pixels: every spot that
# dials.find_spots found has at least one signal pixel.
ZERO_MEANS_NO_PIXEL_DATA = ("n_signal",)
AUTO = "Auto"
LOCATION_COLUMNS = ("id", "panel", "xyzobs.px.value", "xyzobs.mm.value")


class SelectionError(SpotSizeAnalysisError, ValueError):
    """The request cannot be met by this data (nothing selected, no shoeboxes, ...)."""


@dataclass(frozen=True)
class MeasureOptions:
    """Which rows to measure and which pixels to count.

    ``require`` is ``"Auto"`` or flag names (every one must be set), ``exclude`` flag
    names (none may be set), ``mask_code`` mask code names (every bit counted).
    """

    require: Sequence[str] | str = AUTO
    exclude: Sequence[str] = ()
    mask_code: Sequence[str] = ("Foreground",)

    # Worked out on first use and kept: every table of a run reads them.
    @cached_property
    def code(self) -> int:
        """The mask code's bits (``mask_codes.mask_code_value``)."""
        return mask_code_value(self.mask_code)

    @cached_property
    def excluded_flags(self) -> tuple[str, ...]:
        """The flag names excluded (``flags.parse_flag_names``)."""
        return tuple(flag_names.parse_flag_names(self.exclude))


@dataclass(frozen=True)
class SummaryOptions:
    """How to summarise: the histogram (None for ``data_min``/``data_max`` means the data's
    own minimum/maximum) and the number of resolution shells."""

    bins: int = 100
    data_min: float | None = 0.0
    data_max: float | None = 1000.0
    n_resolution_shells: int = 10


@dataclass(frozen=True)
class ExperimentNumbering:
    """How a table's experiment ``id`` values map onto the experiments given.

    Through the table's ``identifiers`` map where it has one. A table without one (older
    DIALS) numbers its experiments by ``id`` in the order of its own experiment list,
    which starts at ``offset`` among the experiments given and holds ``count`` of them;
    with ``unnamed``, no experiment list is known and every id is one unnamed experiment.
    """

    identifiers: dict[int, str] | None = None
    offset: int = 0
    count: int | None = None
    unnamed: bool = False


# Per-spot shape quantities kept beside each counted reflection (algorithms/spot_shape
# measures them): whole numbers, and real numbers (float32: what a report shows, in a
# quarter of the memory of the many-files merge).
SHAPE_INTEGERS, SHAPE_REALS = STORED_INTEGERS, STORED_REALS


def _empty(dtype):
    return field(default_factory=lambda: np.zeros(0, dtype))


@dataclass
class SpotSizes:
    """One row per counted reflection: its size, where it is, and its shape (0 and NaN
    where no shoebox was measured). Concatenating these from many tables gives the
    same result as measuring all their rows together."""

    size: np.ndarray = _empty(np.int64)
    dataset: np.ndarray = _empty(np.int32)
    experiment: np.ndarray = _empty(np.int32)  # index into labels
    panel: np.ndarray = _empty(np.int32)
    image: np.ndarray = _empty(np.int32)
    d_spacing: np.ndarray = _empty(np.float64)
    extent_x: np.ndarray = _empty(np.int32)
    extent_y: np.ndarray = _empty(np.int32)
    extent_z: np.ndarray = _empty(np.int32)
    footprint: np.ndarray = _empty(np.int32)
    fill: np.ndarray = _empty(np.float32)
    rms_width_x: np.ndarray = _empty(np.float32)
    rms_width_y: np.ndarray = _empty(np.float32)
    rms_width_z: np.ndarray = _empty(np.float32)
    rms_width_radial: np.ndarray = _empty(np.float32)
    rms_width_tangential: np.ndarray = _empty(np.float32)
    elongation: np.ndarray = _empty(np.float32)
    peak_centroid_distance: np.ndarray = _empty(np.float32)

    def __len__(self) -> int:
        return len(self.size)

    @classmethod
    def unshaped(cls, **columns: np.ndarray) -> SpotSizes:
        """Rows whose shape is unknown (sizes from a column, or given as arrays).

        Parameters
        ----------
        **columns : numpy.ndarray
            The non-shape fields, one value per row; ``size`` is required.

        Returns
        -------
        SpotSizes
            The rows with every shape integer 0 and every shape real NaN.
        """
        n = len(columns["size"])
        shape = {name: np.zeros(n, np.int32) for name in SHAPE_INTEGERS}
        shape.update({name: np.full(n, np.nan, np.float32) for name in SHAPE_REALS})
        return cls(**columns, **shape)

    @classmethod
    def empty(cls, n: int) -> SpotSizes:
        """``n`` rows to be filled (unset values), e.g. a stretch at a time through
        :meth:`rows`, so that a table's rows need not be joined afterwards.

        Parameters
        ----------
        n : int
            The number of rows.
        """
        return cls(**{name: np.empty(n, dtype) for name, dtype in _FIELD_TYPES})

    def rows(self, start: int, stop: int) -> SpotSizes:
        """Rows [start, stop), as views: writing to them writes to these rows.

        Parameters
        ----------
        start, stop : int
            The rows.
        """
        return SpotSizes(
            **{name: getattr(self, name)[start:stop] for name, _ in _FIELD_TYPES}
        )

    @property
    def n_coded(self) -> np.ndarray:
        return self.size

    @property
    def has_pixel_data(self) -> np.ndarray:
        return np.ones(len(self), dtype=bool)

    @staticmethod
    def concatenate(parts: Sequence[SpotSizes]) -> SpotSizes:
        """All rows of ``parts`` in order (a single part is returned as it is).

        Parameters
        ----------
        parts : sequence of SpotSizes
            The parts, in order.

        Returns
        -------
        SpotSizes
            One table of every row; empty for no parts.
        """
        if not parts:
            return SpotSizes()
        if len(parts) == 1:
            return parts[0]
        return SpotSizes(
            **{
                name: np.concatenate([getattr(p, name) for p in parts])
                for name in SpotSizes.__dataclass_fields__
            }
        )


_FIELD_TYPES = tuple((f.name, f.default_factory().dtype) for f in fields(SpotSizes))


@dataclass
class DatasetSelection:
    """What happened to one input table's rows at each stage."""

    name: str
    n_rows: int
    require: list[str]
    exclude: list[str]
    require_was_automatic: bool
    n_selected: int
    n_without_pixel_data: int
    n_counted: int
    size_source: str
    size_source_note: str = ""
    experiment_identifiers: list[str] = field(default_factory=list)
    n_bbox_disagreements: int = 0  # shoeboxes whose bbox is not the table's (#3194)
    resolution_note: str = ""  # why its rows have no d-spacing, where that is known


def resolve_required_flags(
    require: Sequence[str] | None | str, flags: np.ndarray
) -> tuple[list[str], bool]:
    """``Auto`` means ``indexed`` where any row is indexed (the tutorial's choice), else no
    requirement (e.g. strong spots before indexing).

    Parameters
    ----------
    require : sequence of str, str or None
        ``flags.require`` as given: ``Auto`` (alone or as a one-item list), or flag
        names (see ``flags.parse_flag_names``); None means no requirement.
    flags : numpy.ndarray
        The table's ``flags`` column.

    Returns
    -------
    tuple of (list of str, bool)
        The flag names required, and whether ``Auto`` chose them.

    Raises
    ------
    UnknownFlagError
        For a flag name DIALS does not define.
    """
    if (
        require is not None
        and not isinstance(require, str)
        and len(require) == 1
        and str(require[0]) == AUTO
    ):
        require = AUTO
    if isinstance(require, str) and require == AUTO:
        indexed = np.uint64(flag_names.REFLECTION_FLAGS["indexed"])
        return (
            ["indexed"] if (np.asarray(flags, dtype=np.uint64) & indexed).any() else []
        ), True
    return flag_names.parse_flag_names(require), False


def size_source(
    column_names: Iterable[str], has_shoebox_column: bool, code: int, where: str
) -> tuple[str, str]:
    """Where the sizes come from: ``"shoebox"``, or a per-row column meaning exactly
    ``code`` (with a note saying why), for a table without shoeboxes.

    Parameters
    ----------
    column_names : iterable of str
        The table's column names.
    has_shoebox_column : bool
        Whether the table has a ``shoebox`` column.
    code : int
        The mask code counted (see ``mask_codes.mask_code_value``).
    where : str
        The table's name, for errors.

    Returns
    -------
    tuple of (str, str)
        The source (``"shoebox"`` or a column name) and a note (empty for shoeboxes).

    Raises
    ------
    SelectionError
        Where there are no shoeboxes and no column means ``code``.
    """
    if has_shoebox_column:
        return "shoebox", ""
    names = set(column_names)
    for column, codes, why in SIZE_COLUMNS_WITHOUT_SHOEBOXES:
        if column in names and code in codes:
            return column, f"no shoebox column: sizes are the {column!r} column ({why})"
    usable = [
        f"{column} (mask_code={'+'.join(n for n in MASK_CODES if codes[-1] & MASK_CODES[n])})"
        for column, codes, _ in SIZE_COLUMNS_WITHOUT_SHOEBOXES
        if column in names
    ]
    also = f" (its column {', '.join(usable)} could be used instead)" if usable else ""
    raise SelectionError(
        f"{where} has no shoebox column, so its spots cannot be measured for "
        f"mask code {code}{also}: {NO_SHOEBOX_ADVICE}"
    )


def sizes_from_column(name: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sizes from a per-row column standing in for the shoeboxes, and which rows have
    pixel data (all, except where the column's 0 means there was none).

    Parameters
    ----------
    name : str
        The column's name (one of SIZE_COLUMNS_WITHOUT_SHOEBOXES).
    values : numpy.ndarray
        Its values.
    """
    sizes = np.asarray(values, dtype=np.int64)
    if name in ZERO_MEANS_NO_PIXEL_DATA:
        return sizes, sizes > 0
    return sizes, np.ones(sizes.shape, dtype=bool)


def experiment_indices(
    ids: np.ndarray,
    numbering: ExperimentNumbering,
    geometry: ExperimentGeometry,
    where: str,
) -> np.ndarray:
    """Index into ``geometry``'s experiments of every row with experiment ``id`` (-1 for
    unassigned rows, id -1).

    Parameters
    ----------
    ids : numpy.ndarray
        The rows' ``id`` column.
    numbering : ExperimentNumbering
        How the table numbers its experiments.
    geometry : ExperimentGeometry
        The experiments the indices refer to.
    where : str
        The table's name, for errors.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if numbering.identifiers:
        return _indices_by_identifier(ids, numbering.identifiers, geometry, where)
    if numbering.unnamed:
        return np.where(ids >= 0, 0, -1)
    count = (
        len(geometry) - numbering.offset if numbering.count is None else numbering.count
    )
    if ids.size and ids.max() >= count:
        raise SelectionError(
            f"{where} refers to experiment id {int(ids.max())} but its experiment list has {count} "
            "experiment(s): pass the .expt file that belongs to it"
        )
    return np.where(ids >= 0, ids + numbering.offset, -1)


def _indices_by_identifier(
    ids: np.ndarray, identifiers: dict[int, str], geometry: ExperimentGeometry, where
) -> np.ndarray:
    position = geometry.index
    missing = sorted({name for name in identifiers.values() if name not in position})
    if missing:
        raise SelectionError(
            f"{where} belongs to experiment(s) {', '.join(missing)}, which are not in the experiment "
            "list(s) given: pass the .expt file written together with this .refl"
        )
    if len(identifiers) == 1:  # a still's table: one experiment, no lookup
        ((key, name),) = identifiers.items()
        found = ids == key
        indices = np.where(found, position[name], -1)
    else:
        lookup_keys = np.array(sorted(identifiers), dtype=np.int64)
        lookup_values = np.array(
            [position[identifiers[k]] for k in lookup_keys], dtype=np.int64
        )
        slot = np.clip(np.searchsorted(lookup_keys, ids), 0, len(lookup_keys) - 1)
        found = lookup_keys[slot] == ids
        indices = np.where(found, lookup_values[slot], -1)
    unknown = ~found & (ids >= 0)
    if unknown.any():
        raise SelectionError(
            f"{where} has rows with id {np.unique(ids[unknown])[:5].tolist()} that its identifier map does not name: the file is inconsistent"
        )
    return indices


def measure_rows(
    columns: Mapping[str, np.ndarray],
    counted: np.ndarray,
    sizes: np.ndarray | None,
    geometry: ExperimentGeometry,
    numbering: ExperimentNumbering,
    dataset: int,
    where: str,
    shapes: SpotShapes | ShapesToMeasure | None = None,
    wavelengths: np.ndarray | None = None,
    out: SpotSizes | None = None,
) -> SpotSizes:
    """Locate the counted rows of a stretch of a table (experiment, panel, image,
    d-spacing) beside their sizes and shapes.

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        The stretch's columns (any of ``id``, ``panel``, ``xyzobs.px.value``,
        ``xyzobs.mm.value``; views are fine: only the counted rows are read).
    counted : numpy.ndarray
        bool, per row of the stretch: selected and with pixel data.
    sizes : numpy.ndarray or None
        The size of each counted row; None where ``shapes`` are still to be measured
        (their counts of coded pixels are the sizes).
    geometry, numbering : ExperimentGeometry, ExperimentNumbering
        The experiments, and how the table's ids refer to them.
    dataset : int
        The table's number among the inputs.
    where : str
        The table's name, for errors.
    shapes : SpotShapes or ShapesToMeasure, optional
        The shape of each counted row, or the rows to measure it from (measured here,
        straight into ``out``); their radial and tangential widths are taken about the
        beam centre on each row's panel here.
    wavelengths : numpy.ndarray, optional
        The stretch's per-row wavelengths (Å; DIALS's Laue and time-of-flight tables),
        for the d-spacings of rows under a polychromatic beam.
    out : SpotSizes, optional
        Rows to fill, one per counted row (e.g. a stretch of ``SpotSizes.empty``);
        None makes new ones.

    Returns
    -------
    SpotSizes
        ``out``, or the new rows.
    """
    rows = np.flatnonzero(counted)
    ids = columns.get("id")
    ids = ids[rows] if ids is not None else np.zeros(rows.size, np.int64)
    experiment = experiment_indices(ids, numbering, geometry, where)
    panel = (
        columns["panel"][rows].astype(np.int64)
        if "panel" in columns
        else np.zeros(rows.size, np.int64)
    )
    # Only what is used is gathered: z (image numbers) and x, y (d-spacings); the
    # d-spacing kernel reads the millimetre positions of the counted rows in place.
    xyz_px, xyz_mm = columns.get("xyzobs.px.value"), columns.get("xyzobs.mm.value")
    if xyz_px is not None:
        image = image_numbers(xyz_px[:, 2][rows])
    else:
        image = np.full(rows.size, -1, np.int64)
    if xyz_mm is not None:
        d_spacing = geometry.d_spacings(
            xyz_mm, experiment, panel, take=rows, wavelengths=wavelengths
        )
    elif xyz_px is not None:
        millimetres = geometry.pixels_to_millimetres(xyz_px[rows], experiment, panel)
        d_spacing = geometry.d_spacings(
            millimetres,
            experiment,
            panel,
            wavelengths=None if wavelengths is None else wavelengths[rows],
        )
    else:
        d_spacing = np.full(rows.size, np.nan)
    if out is None:
        out = SpotSizes.empty(rows.size)
    elif len(out) != rows.size:
        raise ValueError(f"out has {len(out)} rows, not {rows.size}")
    # Each value is written once, in the rows' own type (no copy made to be joined).
    if not isinstance(shapes, ShapesToMeasure):
        out.size[:] = sizes
    out.dataset[:] = dataset
    out.experiment[:] = experiment
    out.panel[:] = panel
    out.image[:] = image
    out.d_spacing[:] = d_spacing
    if shapes is None:
        for name in SHAPE_INTEGERS:
            getattr(out, name)[:] = 0
        for name in SHAPE_REALS:
            getattr(out, name)[:] = np.nan
        return out
    centres = geometry.beam_centre_rows(experiment, panel)
    integers = [getattr(out, name) for name in SHAPE_INTEGERS]
    reals = [getattr(out, name) for name in SHAPE_REALS]
    if isinstance(shapes, ShapesToMeasure):
        shapes.store(*centres, out.size, integers, reals)
    else:
        store_shapes(shapes, *centres, integers, reals)
    return out


@dataclass
class SpotSizeResult:
    """Everything the reports show, as plain numbers."""

    mask_code: list[str]
    histogram: Histogram
    statistics: dict
    selection: dict
    datasets: list[DatasetSelection]
    by_experiment: list[dict]
    by_panel: list[dict]
    by_image: list[dict]
    by_resolution: list[dict]
    spot_sizes: SpotSizes
    spot_shape: dict = field(default_factory=dict)

    @property
    def mask_code_value(self) -> int:
        return mask_code_value(self.mask_code)


def whole_pixel_range(
    sizes: np.ndarray, data_min: float | None, data_max: float | None, bins: int
) -> tuple[float, float]:
    """The histogram's range, where either end is automatic (None): sizes are whole
    pixels, so an automatic range puts bin edges half-way between whole pixels and
    makes each bin a whole number of pixels wide (0.3-pixel bins would leave most of
    them empty: a comb). A range given in full is kept exactly (flex.histogram's).

    Parameters
    ----------
    sizes : numpy.ndarray
        The counted sizes (pixels).
    data_min, data_max : float or None
        The range's ends as given (pixels); None means automatic.
    bins : int
        The number of bins.

    Returns
    -------
    tuple of float
        ``(data_min, data_max)`` in pixels.
    """
    if data_min is not None and data_max is not None:
        return data_min, data_max
    smallest, largest = automatic_range(sizes)
    if data_min is not None:  # the top is automatic
        width = max(1, math.ceil((largest + 0.5 - data_min) / bins))
        return data_min, data_min + width * bins
    if data_max is not None:  # the bottom is automatic
        width = max(1, math.ceil((data_max - (smallest - 0.5)) / bins))
        return data_max - width * bins, data_max
    low = smallest - 0.5
    width = max(1, math.ceil((largest + 0.5 - low) / bins))
    return low, low + width * bins


MOST_SEPARATE_DATASETS = 20  # beyond, per-dataset tables would drown the reader


def unrelated_datasets(datasets: Sequence[DatasetSelection]) -> bool:
    """Whether several datasets share no experiment: different crystals, detectors or
    scans, whose panel 0 or image 1 are not the same thing, so that pooling them per
    panel or image would mislead. Tables split from one dataset share experiments.

    Parameters
    ----------
    datasets : sequence of DatasetSelection
        The tables measured.
    """
    if not 1 < len(datasets) <= MOST_SEPARATE_DATASETS:
        return False
    seen: set[str] = set()
    for dataset in datasets:
        named = set(dataset.experiment_identifiers)
        if not named or "" in named or named & seen:
            return False
        seen |= named
    return True


def grouped_by(
    keys: np.ndarray,
    spot_sizes: SpotSizes,
    datasets: Sequence[DatasetSelection],
    name: str,
    per_dataset: bool,
) -> list[dict]:
    """Size statistics per key (panel or image; negative keys unknown), pooled over
    the datasets or, with ``per_dataset``, per dataset and key (each entry then names
    its ``dataset``).

    Parameters
    ----------
    keys : numpy.ndarray
        One integer key per counted reflection.
    spot_sizes : SpotSizes
        The counted reflections (their ``size`` and ``dataset``).
    datasets : sequence of DatasetSelection
        The tables, in input order (as ``spot_sizes.dataset`` numbers them).
    name : str
        The key's name in the entries ("panel", "image").
    per_dataset : bool
        Break the groups down by dataset.
    """
    sizes = spot_sizes.size
    skip = name != "panel"
    if not per_dataset:
        return group_statistics(keys, sizes, skip_negative_keys=skip).entries(name)
    numbers, rank = np.unique(spot_sizes.dataset, return_inverse=True)
    known = keys >= 0
    span = int(keys[known].max()) + 1 if known.any() else 1
    composite = np.where(known, rank.astype(np.int64) * span + keys, -1)
    entries = group_statistics(composite, sizes, skip_negative_keys=True).entries(name)
    names = [d.name for d in datasets]
    for entry in entries:
        dataset, entry[name] = divmod(entry[name], span)
        entry["dataset"] = (
            names[dataset] if dataset < len(names) else str(numbers[dataset])
        )
    return entries


def summarise(
    spot_sizes: SpotSizes,
    datasets: Sequence[DatasetSelection],
    mask_code: Sequence[str] = ("Foreground",),
    options: SummaryOptions = SummaryOptions(),
    experiment_labels: Sequence[str] | None = None,
    threads: int = 1,
) -> SpotSizeResult:
    """Histogram (``flex.histogram``-exact), statistics and breakdowns of measured spot
    sizes.

    Parameters
    ----------
    spot_sizes : SpotSizes
        Every counted reflection.
    datasets : sequence of DatasetSelection
        What happened to each input table's rows.
    mask_code : sequence of str
        The mask code names counted (for the result's description).
    options : SummaryOptions
        The histogram's bins and range, and the resolution shells.
    experiment_labels : sequence of str, optional
        The identifier of each experiment index in ``spot_sizes.experiment``.
    threads : int
        Shape quantities summarised at once (see ``summarise_spot_shapes``).
    """
    data_min, data_max = options.data_min, options.data_max
    bins, n_resolution_shells = options.bins, options.n_resolution_shells
    sizes = spot_sizes.size
    low, high = whole_pixel_range(sizes, data_min, data_max, bins)
    counts = value_counts(
        sizes
    )  # sizes are counts of pixels: bin each distinct size once
    if counts is None:
        result_histogram = histogram(sizes, low, high, bins)
    else:
        present = np.flatnonzero(counts)
        result_histogram = histogram(present, low, high, bins, weights=counts[present])
    selection = {
        "n_datasets": len(datasets),
        "n_rows": sum(d.n_rows for d in datasets),
        "n_selected": sum(d.n_selected for d in datasets),
        "n_without_pixel_data": sum(d.n_without_pixel_data for d in datasets),
        "n_counted": sum(d.n_counted for d in datasets),
        "n_in_histogram": result_histogram.n_in_range,
        "n_out_of_range": result_histogram.n_out_of_range,
    }
    labels = list(experiment_labels or [])
    by_experiment = [
        {
            "n": n,
            "mean": mean,
            "median": median,
            "min": low,
            "max": high,
            "experiment": key,
            "identifier": labels[key] if 0 <= key < len(labels) else None,
        }
        for key, n, mean, median, low, high in zip(
            *group_statistics(spot_sizes.experiment, sizes)
        )
    ]
    separate = unrelated_datasets(datasets)
    by_panel = grouped_by(spot_sizes.panel, spot_sizes, datasets, "panel", separate)
    by_image = grouped_by(spot_sizes.image, spot_sizes, datasets, "image", separate)
    edges = shell_edges(spot_sizes.d_spacing, n_resolution_shells)
    shells = shell_numbers(spot_sizes.d_spacing, edges)
    d_edges = 1.0 / np.sqrt(edges)
    by_resolution = [
        {
            "shell": key,
            "d_max": float(d_edges[key]),
            "d_min": float(d_edges[key + 1]),
            "n": n,
            "mean": mean,
            "median": median,
            "min": low,
            "max": high,
        }
        for key, n, mean, median, low, high in zip(
            *group_statistics(shells, sizes, skip_negative_keys=True)
        )
    ]
    return SpotSizeResult(
        mask_code=canonical_names(mask_code),
        histogram=result_histogram,
        statistics=summary_statistics(sizes, counts),
        selection=selection,
        datasets=list(datasets),
        by_experiment=by_experiment,
        by_panel=by_panel,
        by_image=by_image,
        by_resolution=by_resolution,
        spot_sizes=spot_sizes,
        spot_shape=summarise_spot_shapes(
            spot_sizes,
            image=spot_sizes.image,
            shell=shells,
            panel=spot_sizes.panel,
            threads=threads,
        ),
    )
