"""Spot sizes: select reflections, count their mask-coded pixels, summarise.

``measure`` turns one reflection table (and its experiments) into :class:`SpotSizes`, one
row per counted reflection; ``SpotSizes`` from many tables concatenate exactly, and
``summarise`` turns them into a :class:`SpotSizeResult`: histogram, statistics and
breakdowns. Nothing here reads files or prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..formats.experiments import Experiment
from ..formats.reflections import ReflectionTable
from . import flags as flag_names
from .geometry import ExperimentGeometry, shell_edges, shell_numbers
from .histogram import Histogram, automatic_range, histogram
from .mask_codes import MASK_CODES, canonical_names, mask_code_value
from .statistics import group_statistics, summary_statistics, value_counts

# Per-row columns that hold a shoebox count without the shoeboxes, and the code each
# means exactly (reference §2). n_signal is Valid|Foreground, which on spot-finding masks
# (every signal pixel is Valid|Foreground) is also the Foreground count.
SIZE_COLUMNS_WITHOUT_SHOEBOXES = (
    (
        "n_signal",
        (4, 5),
        "dials.find_spots counts Valid|Foreground pixels, which on spot-finding masks are exactly the Foreground pixels",
    ),
    ("num_pixels.foreground", (5,), "dials.integrate counts Valid|Foreground pixels"),
    ("num_pixels.valid", (1,), "dials.integrate counts Valid pixels"),
    ("num_pixels.background", (3,), "dials.integrate counts Valid|Background pixels"),
)

NO_SHOEBOX_ADVICE = (
    "shoeboxes are kept by dials.find_spots (output.shoeboxes=True, the default) and passed on "
    "by dials.index and dials.refine; dials.integrate keeps them only with "
    "integration.debug.output=True, and dials.scale drops them"
)
AUTO = "Auto"
LOCATION_COLUMNS = ("id", "panel", "xyzobs.px.value", "xyzobs.mm.value")


class SelectionError(ValueError):
    """The request cannot be met by this data (nothing selected, no shoeboxes, ...)."""


@dataclass
class SpotSizes:
    """One row per counted reflection. Concatenating these from many tables gives the
    same result as measuring all their rows together."""

    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dataset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    experiment: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.int32)
    )  # index into labels
    panel: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    d_spacing: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    def __len__(self) -> int:
        return len(self.size)

    @staticmethod
    def concatenate(parts: Sequence["SpotSizes"]) -> "SpotSizes":
        """All rows of ``parts`` in order (a single part is returned as it is, not copied)."""
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


def resolve_required_flags(
    require: Sequence[str] | None | str, flags: np.ndarray
) -> tuple[list[str], bool]:
    """``Auto`` means ``indexed`` where any row is indexed (the tutorial's choice), else no
    requirement (e.g. strong spots before indexing)."""
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


def _size_source(table: ReflectionTable, code: int) -> tuple[str, str]:
    if table.shoebox_column_name is not None:
        return "shoebox", ""
    for column, codes, why in SIZE_COLUMNS_WITHOUT_SHOEBOXES:
        if column in table.columns and code in codes:
            return column, f"no shoebox column: sizes are the {column!r} column ({why})"
    usable = [
        f"{column} (mask_code={'+'.join(n for n in MASK_CODES if codes[-1] & MASK_CODES[n])})"
        for column, codes, _ in SIZE_COLUMNS_WITHOUT_SHOEBOXES
        if column in table.columns
    ]
    also = f" (its column {', '.join(usable)} could be used instead)" if usable else ""
    raise SelectionError(
        f"{table.path or 'the reflection table'} has no shoebox column, so its spots cannot be measured for "
        f"mask code {code}{also}: {NO_SHOEBOX_ADVICE}"
    )


def experiment_indices(
    ids: np.ndarray,
    table: ReflectionTable,
    geometry: ExperimentGeometry,
    legacy_offset: int = 0,
    legacy_count: int | None = None,
) -> np.ndarray:
    """Index into ``experiment_identifiers`` of every row with experiment ``id`` (-1 for
    unassigned rows, id -1).

    Rows are matched through the table's identifier map. A table without one (older
    DIALS) numbers its experiments by ``id`` in the order of its own experiment list,
    which starts at ``legacy_offset`` and has ``legacy_count`` experiments."""
    ids = np.asarray(ids, dtype=np.int64)
    where = table.path or "the reflection table"
    if table.identifiers:
        position = geometry.index
        missing = sorted(
            {
                identifier
                for identifier in table.identifiers.values()
                if identifier not in position
            }
        )
        if missing:
            raise SelectionError(
                f"{where} belongs to experiment(s) {', '.join(missing)}, which are not in the experiment "
                "list(s) given: pass the .expt file written together with this .refl"
            )
        lookup_keys = np.array(sorted(table.identifiers), dtype=np.int64)
        lookup_values = np.array(
            [position[table.identifiers[k]] for k in lookup_keys], dtype=np.int64
        )
        slot = np.clip(np.searchsorted(lookup_keys, ids), 0, len(lookup_keys) - 1)
        found = lookup_keys[slot] == ids
        if not found[ids >= 0].all():
            unknown_ids = np.unique(ids[~found & (ids >= 0)])
            raise SelectionError(
                f"{where} has rows with id {unknown_ids[:5].tolist()} that its identifier map does not name: the file is inconsistent"
            )
        return np.where(found, lookup_values[slot], -1)
    count = len(geometry) - legacy_offset if legacy_count is None else legacy_count
    if ids.size and ids.max() >= count:
        raise SelectionError(
            f"{where} refers to experiment id {int(ids.max())} but its experiment list has {count} "
            "experiment(s): pass the .expt file that belongs to it"
        )
    return np.where(ids >= 0, ids + legacy_offset, -1)


def measure(
    table: ReflectionTable,
    experiments: Sequence[Experiment] | ExperimentGeometry = (),
    require: Sequence[str] | str | None = AUTO,
    exclude: Sequence[str] | None = None,
    mask_code: Sequence[str] = ("Foreground",),
    dataset: int = 0,
    name: str | None = None,
    engine: str = "auto",
    legacy_offset: int = 0,
    legacy_count: int | None = None,
    rows_per_chunk: int = 1 << 20,
    release_pages: bool = False,
) -> tuple[SpotSizes, DatasetSelection]:
    """Select rows by flags, count each one's pixels with every bit of ``mask_code``, and
    locate them (experiment, panel, image, d-spacing). Rows without pixel data are
    excluded and counted, not measured as 0.

    Rows are handled ``rows_per_chunk`` at a time, so temporary memory is bounded by the
    chunk; with ``release_pages`` the table hands the file pages of finished rows back to
    the operating system, so resident memory does not grow with the file either."""
    n = table.nrows
    columns = table.columns
    flags = (
        np.asarray(columns["flags"], dtype=np.uint64)
        if "flags" in columns
        else np.zeros(n, np.uint64)
    )
    required, automatic = resolve_required_flags(require, flags)
    excluded = flag_names.parse_flag_names(exclude)
    code = mask_code_value(mask_code)
    source, note = _size_source(table, code)
    if source == "shoebox":
        sizes, has_data = table.count_shoebox_pixels(
            code, engine=engine, release_pages=release_pages
        )
    else:
        sizes, has_data = (
            np.asarray(columns[source], dtype=np.int64),
            np.ones(n, dtype=bool),
        )
    geometry = (
        experiments
        if isinstance(experiments, ExperimentGeometry)
        else ExperimentGeometry(experiments)
    )
    identifiers = geometry.identifiers
    ids = columns.get("id")
    parts, n_selected, seen_experiments = [], 0, set()
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        table.populate_rows(start, stop, LOCATION_COLUMNS)
        selected = flag_names.select_by_flags(flags[start:stop], required, excluded)
        n_selected += int(selected.sum())
        rows = np.flatnonzero(selected & has_data[start:stop])
        chunk_ids = (
            ids[start:stop][rows] if ids is not None else np.zeros(rows.size, np.int64)
        )
        experiment = experiment_indices(
            chunk_ids, table, geometry, legacy_offset, legacy_count
        )
        if experiment.size:
            seen_experiments.update(np.flatnonzero(np.bincount(experiment + 1)) - 1)
        panel = (
            columns["panel"][start:stop][rows].astype(np.int64)
            if "panel" in columns
            else np.zeros(rows.size, np.int64)
        )
        # Only what is used is gathered: z (image numbers) and x, y (d-spacings); the
        # d-spacing kernel reads the millimetre positions of the selected rows in place.
        xyz_px, xyz_mm = columns.get("xyzobs.px.value"), columns.get("xyzobs.mm.value")
        image = (
            geometry.image_numbers(xyz_px[start:stop, 2][rows], experiment)
            if xyz_px is not None
            else np.full(rows.size, -1, np.int64)
        )
        if xyz_mm is not None:
            d_spacing = geometry.d_spacings(
                xyz_mm[start:stop], experiment, panel, engine, take=rows
            )
        elif xyz_px is not None:
            d_spacing = geometry.d_spacings(
                geometry.pixels_to_millimetres(
                    xyz_px[start:stop][rows], experiment, panel
                ),
                experiment,
                panel,
                engine,
            )
        else:
            d_spacing = np.full(rows.size, np.nan)
        parts.append(
            SpotSizes(
                size=sizes[start:stop][rows],
                dataset=np.full(rows.size, dataset, np.int32),
                experiment=experiment.astype(np.int32),
                panel=panel.astype(np.int32),
                image=image.astype(np.int32),
                d_spacing=d_spacing,
            )
        )
        if release_pages:
            table.release_rows(start, stop)
    spot_sizes = SpotSizes.concatenate(parts)
    selection = DatasetSelection(
        name=name or table.path or f"dataset {dataset}",
        n_rows=n,
        require=required,
        exclude=excluded,
        require_was_automatic=automatic,
        n_selected=n_selected,
        n_without_pixel_data=n_selected - len(spot_sizes),
        n_counted=len(spot_sizes),
        size_source=source,
        size_source_note=note,
        experiment_identifiers=sorted(
            {identifiers[i] for i in seen_experiments if i >= 0}
        ),
    )
    return spot_sizes, selection


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

    @property
    def mask_code_value(self) -> int:
        return mask_code_value(self.mask_code)


def summarise(
    spot_sizes: SpotSizes,
    datasets: Sequence[DatasetSelection],
    mask_code: Sequence[str] = ("Foreground",),
    bins: int = 100,
    data_min: float | None = 0.0,
    data_max: float | None = 1000.0,
    n_resolution_shells: int = 10,
    experiment_labels: Sequence[str] | None = None,
) -> SpotSizeResult:
    """Histogram (``flex.histogram``-exact; None for ``data_min``/``data_max`` means the
    data's own min/max), statistics and breakdowns of measured spot sizes."""
    sizes = spot_sizes.size
    automatic_min, automatic_max = automatic_range(sizes)
    low = automatic_min if data_min is None else data_min
    high = automatic_max if data_max is None else data_max
    if data_min is None and data_max is not None and low >= high:
        low = high - 1.0
    if data_max is None and data_min is not None and high <= low:
        high = low + 1.0
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
    by_panel = group_statistics(spot_sizes.panel, sizes).entries("panel")
    by_image = group_statistics(
        spot_sizes.image, sizes, skip_negative_keys=True
    ).entries("image")
    edges = shell_edges(spot_sizes.d_spacing, n_resolution_shells)
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
            *group_statistics(
                shell_numbers(spot_sizes.d_spacing, edges),
                sizes,
                skip_negative_keys=True,
            )
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
    )
