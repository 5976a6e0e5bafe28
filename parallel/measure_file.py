"""One reflection table measured: read, rows selected, pixels counted, rows located.

A problem with the table (it cannot be read, or does not fit the experiments given)
becomes the outcome's error, so that one bad file among thousands is reported, not fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from ..algorithms import flags as flag_names
from ..algorithms.consistency import table_mismatch
from ..algorithms.geometry import (
    WAVELENGTH_COLUMNS,
    ExperimentGeometry,
    first_panel_type,
)
from ..algorithms.profile_model import (
    MAX_REFERENCE_MATCHED,
    ProfileModel,
    ProfileModelError,
    profile_model,
)
from ..algorithms.same_spots import ComparedTable, centroid_keys
from ..algorithms.spot_shape import ShapesToMeasure, bbox_disagreements
from ..algorithms.spot_sizes import (
    LOCATION_COLUMNS,
    POLYCHROMATIC_NOTE,
    DatasetSelection,
    ExperimentNumbering,
    MeasureOptions,
    SelectionError,
    SpotSizes,
    measure_rows,
    resolve_required_flags,
    size_source,
    sizes_from_column,
)
from ..formats import FileFormatError, ReflectionTable, read_experiments
from ..formats.experiments import Experiment, ExperimentList
from ..formats.reflections import parse_reflections, read_reflections
from ..formats.source import check_unchanged
from ..formats.source import release_pages as release_pages_of
from ..threads import in_order

ROWS_PER_CHUNK = 1 << 18  # rows located and shaped at a time: bounds temporaries


@dataclass(frozen=True)
class MeasureRequest:
    """What every process measuring files needs.

    Attributes
    ----------
    experiments : list of Experiment
        The experiments of the experiment lists given for every table (their union).
    list_offsets : list of (int, int)
        Where each experiment list starts in ``experiments``, and its length (for old
        tables that number experiments by position).
    have_experiment_lists : bool
        Whether any experiment list was given at all.
    options : MeasureOptions
        Which rows, which pixels.
    paired_experiments : dict of int to str
        Source index -> the ``.expt`` written beside that ``.refl`` (read by whoever
        measures it).
    """

    experiments: list[Experiment]
    list_offsets: list[tuple[int, int]]
    have_experiment_lists: bool
    options: MeasureOptions
    paired_experiments: dict[int, str] = field(default_factory=dict)
    n_sigma: float | None = 3.0  # None: no profile model
    all_predictions: bool = False  # the shoebox memory of every prediction
    # reference reflections measured per experiment at most (None: every one)
    max_reference: int | None = MAX_REFERENCE_MATCHED
    fixed_sigmas: dict | None = None  # as the user's file fixes them for integration
    compare_spots: bool = (
        False  # keep each table's centroid keys (algorithms.same_spots)
    )
    threads: int = 1  # stretches of one table measured at once (one big file, nproc)
    # The profile model left to the caller (FileOutcome.profiles_later), to be run
    # beside the summaries: only for a source measured in the caller's own process.
    profiles_later: bool = False
    geometry: ExperimentGeometry = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "geometry", ExperimentGeometry(self.experiments))


@dataclass
class FileOutcome:
    """What measuring one source gave: its rows and description, or its error."""

    index: int
    name: str
    spot_sizes: SpotSizes | None = None
    selection: DatasetSelection | None = None
    info: dict = field(default_factory=dict)
    labels: list[str] | None = None  # identifiers of local experiment indices
    error: str | None = None
    error_path: str | None = None  # the file a FileFormatError named
    error_is_format: bool = False  # else the data did not fit the request
    n_rows: int = 0  # rows measured, once packed into a Batch
    profiles: list[dict] = field(default_factory=list)  # per experiment (plain data)
    detector_type: str | None = None  # its first experiment's first panel type
    compared: ComparedTable | None = None  # with MeasureRequest.compare_spots
    # With MeasureRequest.profiles_later: computes ``profiles`` (never pickled: made
    # only where the outcome stays in the process that measured it).
    profiles_later: Callable[[], list[dict]] | None = None

    def raise_error(self) -> None:
        """Raise this outcome's problem again, as its own kind of error."""
        if self.error_is_format:
            raise FileFormatError(self.error_path, self._problem())
        raise SelectionError(self.error)

    def _problem(self) -> str:
        prefix = f"{self.error_path}: "
        if self.error_path and self.error.startswith(prefix):
            return self.error[len(prefix) :]
        return self.error


def combine_experiments(
    experiment_lists: Sequence[ExperimentList],
) -> tuple[list[Experiment], list[tuple[int, int]]]:
    """The union of the experiments (an identifier counts once) and where each list's
    experiments start in it (for old tables that number experiments by position).

    Parameters
    ----------
    experiment_lists : sequence of ExperimentList
        The experiment lists given, in order.

    Returns
    -------
    tuple of (list of Experiment, list of tuple of int)
        The union, and per list its (start in the union, length).
    """
    union: list[Experiment] = []
    offsets: list[tuple[int, int]] = []
    seen: dict[str, int] = {}
    for experiment_list in experiment_lists:
        offsets.append((len(union), len(experiment_list)))
        for experiment in experiment_list:
            if experiment.identifier and experiment.identifier in seen:
                continue
            if experiment.identifier:
                seen[experiment.identifier] = len(union)
            union.append(experiment)
    return union, offsets


def source_name(source: Any, index: int) -> str:
    """A path as given, or a name for a table passed as an object.

    Parameters
    ----------
    source
        A path, msgpack bytes or a table.
    index : int
        The source's number among the inputs.

    Returns
    -------
    str
        The path, or ``"reflections <index>"``.
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"reflections {index}"


def load_table(source: Any) -> ReflectionTable:
    """A table from a path, msgpack bytes, a ReflectionTable or a DIALS table.

    Parameters
    ----------
    source
        A path (str or os.PathLike), msgpack bytes, a ReflectionTable (returned as
        it is) or an object with ``as_msgpack()``.

    Returns
    -------
    ReflectionTable
        The table, its shoeboxes not yet indexed.

    Raises
    ------
    FileFormatError
        Where the data is not a valid reflection table.
    TypeError
        For a source of another kind.
    """
    if isinstance(source, ReflectionTable):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_reflections(source, index_shoeboxes=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return parse_reflections(source, index_shoeboxes=False)
    if hasattr(source, "as_msgpack"):  # a DIALS flex.reflection_table
        return parse_reflections(source.as_msgpack(), index_shoeboxes=False)
    raise TypeError(
        f"cannot read reflections from {type(source).__name__}: give a path, bytes or a reflection table"
    )


def _experiments_for(
    table: ReflectionTable, index: int, request: MeasureRequest, n_sources: int
) -> tuple[ExperimentGeometry, ExperimentNumbering, list[str] | None]:
    """The experiments a table's rows refer to, how its ids number them, and the
    identifiers of local experiment indices (None where they index the request's)."""
    paired = request.paired_experiments.get(index)
    if paired is not None:  # its own list: local indices, merged later by identifier
        experiment_list = read_experiments(paired)
        if not table.identifiers:
            _check_fits(table, list(experiment_list), paired, 0)
        numbering = ExperimentNumbering(
            identifiers=table.identifiers,
            count=None if table.identifiers else len(experiment_list),
        )
        geometry = ExperimentGeometry(list(experiment_list))
        return geometry, numbering, experiment_list.identifiers()
    if not request.have_experiment_lists:  # known by identifier only
        if table.identifiers:
            labels = [table.identifiers[k] for k in sorted(table.identifiers)]
            numbering = ExperimentNumbering(identifiers=table.identifiers)
        else:  # unnamed experiments, merged with every other file's
            labels = [""]
            numbering = ExperimentNumbering(unnamed=True)
        geometry = ExperimentGeometry([Experiment(identifier=x) for x in labels])
        return geometry, numbering, labels
    if table.identifiers:
        return request.geometry, ExperimentNumbering(table.identifiers), None
    offsets = request.list_offsets
    offset, count = offsets[index if len(offsets) == n_sources else 0]
    _check_fits(table, request.experiments, "the experiment list given", offset)
    return request.geometry, ExperimentNumbering(offset=offset, count=count), None


def _check_fits(table: ReflectionTable, experiments, experiments_name: str, offset):
    """A table paired by position (it names no experiment) must fit its experiments:
    panels, positions on them, and frames in the scan (``algorithms.consistency``)."""
    columns = table.columns
    ids = columns.get("id")
    problem = table_mismatch(
        ids if ids is not None else np.zeros(table.nrows, np.int32),
        columns.get("panel"),
        columns.get("xyzobs.px.value"),
        experiments,
        table.path or "the reflection table",
        experiments_name,
        offset=offset,
    )
    if problem is not None:
        raise SelectionError(problem)


def measure_table(
    table: ReflectionTable,
    geometry: ExperimentGeometry,
    numbering: ExperimentNumbering,
    options: MeasureOptions,
    dataset: int = 0,
    name: str | None = None,
    release_pages: bool = False,
    keep_index: bool = False,
    threads: int = 1,
) -> tuple[SpotSizes, DatasetSelection]:
    """Select a table's rows by flags, count each one's pixels with every bit of the
    mask code, and locate them; rows without pixel data are excluded and counted.

    Rows are handled ``ROWS_PER_CHUNK`` at a time, each stretch of the file's pages
    mapped ahead in one call and, with ``release_pages``, handed back to the operating
    system when done, so that resident memory does not grow with the file. With
    ``keep_index`` the shoebox index built on the way is kept for later use (the
    profile model), instead of scanning the column again.

    Parameters
    ----------
    table : ReflectionTable
        The table.
    geometry : ExperimentGeometry
        The experiments its rows refer to.
    numbering : ExperimentNumbering
        How the table's ``id`` column numbers those experiments.
    options : MeasureOptions
        Which rows (flags), which pixels (mask code) and whether to measure shapes.
    dataset : int
        The table's number among the inputs.
    name : str, optional
        The table's name, for the selection and errors; None uses the table's path,
        else ``dataset <dataset>``.
    release_pages : bool
        Hand each finished stretch's pages back to the operating system.
    keep_index : bool
        Keep the shoebox index built on the way.
    threads : int
        Stretches measured at once, on as many threads (each of ``ROWS_PER_CHUNK /
        threads`` rows, so that the pages in use stay about the same); the result is
        the same whatever the number.

    Returns
    -------
    tuple of (SpotSizes, DatasetSelection)
        The counted rows (sizes in pixels, shapes, locations), and what happened to
        the table's rows.

    Raises
    ------
    SelectionError
        Where the table cannot be measured as asked (e.g. no shoeboxes and no column
        standing in for them, or ids naming no experiment given).
    FileFormatError
        Where the shoebox column is corrupt.
    """
    n = table.nrows
    columns = table.columns
    where = name or table.path or "the reflection table"
    flags = (
        np.asarray(columns["flags"], dtype=np.uint64)
        if "flags" in columns
        else np.zeros(n, np.uint64)
    )
    required, automatic = resolve_required_flags(options.require, flags)
    excluded = list(options.excluded_flags)
    code = options.code
    source, note = size_source(
        columns, table.shoebox_column_name is not None, code, where
    )
    threaded = threads > 1
    rows_per_chunk = ROWS_PER_CHUNK // threads if threaded else ROWS_PER_CHUNK
    # On threads the indexer draws the next stretch while others are measured: each
    # stretch then hands its own pages back, once measured.
    stretches = _stretches(
        table, source, code, rows_per_chunk, release_pages and not threaded, keep_index
    )

    selected = flag_names.select_by_flags(flags, required, excluded)
    n_selected = int(np.count_nonzero(selected))
    # Every counted row is written once, into its place among the selected rows: the
    # place of a stretch's rows is known once it is indexed, before it is measured.
    spot_sizes = SpotSizes.empty(n_selected)

    def placed(stretches):
        n_counted = 0
        for start, stop, column, sizes in stretches:
            has_data = sizes[1] if column is None else column.has_pixel_data
            counted = selected[start:stop] & has_data
            n_stretch = int(np.count_nonzero(counted))
            out = spot_sizes.rows(n_counted, n_counted + n_stretch)
            n_counted += n_stretch
            yield start, stop, column, sizes, counted, out

    def measured(stretch) -> tuple[int, int]:
        start, stop, column, sizes, counted, out = stretch
        table.populate_rows(start, stop, LOCATION_COLUMNS)
        located = {k: columns[k][start:stop] for k in LOCATION_COLUMNS if k in columns}
        n_disagreements = 0
        if column is None:
            shapes, sizes = None, sizes[0][counted]
        else:
            # measured once measure_rows knows where each row goes
            shapes, sizes = ShapesToMeasure.of(column, code, counted), None
            if "bbox" in columns:
                n_disagreements = bbox_disagreements(
                    column.bbox, columns["bbox"][start:stop]
                )[0]
        measure_rows(
            located, counted, sizes, geometry, numbering, dataset, where, shapes,
            wavelengths=_wavelengths(columns, start, stop), out=out,
        )  # fmt: skip
        if release_pages:
            table.release_rows(start, stop)
            if threaded and column is not None:
                release_pages_of(column.blob[slice(*column.byte_range())])
        return len(out), n_disagreements

    n_counted, n_disagreements = 0, 0
    for n_part, n_part_disagreements in in_order(measured, placed(stretches), threads):
        n_counted += n_part
        n_disagreements += n_part_disagreements
    if n_counted < n_selected:  # selected rows without pixel data
        spot_sizes = spot_sizes.rows(0, n_counted)
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
        n_bbox_disagreements=n_disagreements,
        resolution_note=resolution_note(spot_sizes, geometry),
        experiment_identifiers=identifiers_seen(spot_sizes, geometry),
    )
    return spot_sizes, selection


def identifiers_seen(spot_sizes: SpotSizes, geometry: ExperimentGeometry) -> list[str]:
    """The identifiers of the experiments with a counted row, sorted."""
    # -1 (no experiment known) counted apart, in one pass, no sort
    seen = np.flatnonzero(np.bincount(spot_sizes.experiment + 1, minlength=1)[1:])
    return sorted({geometry.identifiers[i] for i in seen.tolist()})


def _wavelengths(columns: dict, start: int, stop: int) -> np.ndarray | None:
    """The stretch's per-reflection wavelengths (Å) where the table has them (DIALS's
    Laue and time-of-flight tables), for d-spacings under a polychromatic beam."""
    for name in WAVELENGTH_COLUMNS:
        column = columns.get(name)
        if column is not None and column.ndim == 1:
            return column[start:stop]
    return None


def resolution_note(spot_sizes: SpotSizes, geometry: ExperimentGeometry) -> str:
    """Why no counted row has a d-spacing, where the experiments say: a polychromatic
    beam and no per-reflection wavelength."""
    if not len(spot_sizes) or np.isfinite(spot_sizes.d_spacing).any():
        return ""  # the usual case, found without the experiments
    experiment = spot_sizes.experiment
    known = (experiment >= 0) & (experiment < len(geometry))
    if not known.any():
        return ""
    if geometry.polychromatic[experiment[known]].any():
        return POLYCHROMATIC_NOTE
    return ""


def _stretches(
    table, source: str, code: int, rows: int, release_pages: bool, keep_index: bool
):
    """(start, stop, shoebox column or None, (sizes, has pixel data) or None) a
    stretch of ``rows`` rows at a time: the shoeboxes indexed as they come, or the
    column that stands in for them."""
    if source == "shoebox":
        chunks = table.shoebox_chunks(rows, release_pages, keep_index)
        for start, stop, column in chunks:
            yield start, stop, column, None
        return
    sizes, has_data = sizes_from_column(source, table.columns[source])
    for start in range(0, table.nrows, rows):
        stop = min(table.nrows, start + rows)
        yield start, stop, None, (sizes[start:stop], has_data[start:stop])


MOST_ID_GAP = 1000  # an identifier map whose ids leave more gaps is not numbered


def _experiments_by_id(table: ReflectionTable, geometry, numbering) -> list | None:
    """The experiments in the order of the table's ``id`` values (what the profile
    model indexes by), or None where they are not known."""
    experiments = geometry.experiments
    if numbering.unnamed:
        return None
    if numbering.identifiers:
        keys = numbering.identifiers
        if max(keys) >= len(keys) + MOST_ID_GAP or min(keys) < 0:
            return None
        by_key = {k: experiments[geometry.index[keys[k]]] for k in keys}
        return [by_key.get(k, Experiment(identifier="")) for k in range(max(keys) + 1)]
    count = (
        len(experiments) - numbering.offset
        if numbering.count is None
        else numbering.count
    )
    return list(experiments[numbering.offset : numbering.offset + count])


def _profiles(table, geometry, numbering, request: MeasureRequest, name: str) -> list:
    """The profile model of a table's experiments as dials.integrate would compute it
    (``algorithms.profile_model``), or why there is none, as plain data."""
    experiments = profile_experiments(table, geometry, numbering, request)
    if experiments is None:
        return []
    try:
        model = profile_model(
            table.columns,
            table.shoeboxes,
            experiments,
            n_sigma=request.n_sigma,
            threads=request.threads,
            all_predictions=request.all_predictions,
            fixed_sigmas=request.fixed_sigmas,
            max_reference=request.max_reference,
        )
    except (ProfileModelError, ValueError, np.linalg.LinAlgError) as error:
        reason = f"the profile model could not be computed: {error}"
        return [{"dataset": name, "applicable": False, "reason": reason}]
    return profile_entries(model.experiments, experiments, name)


def profile_experiments(
    table: ReflectionTable, geometry, numbering, request: MeasureRequest
) -> list | None:
    """The experiments a table's profile model covers, in the order of its ``id``
    values; None where it has none (none asked for, no shoeboxes, no models)."""
    if request.n_sigma is None or table.shoebox_column_name is None:
        return None
    experiments = _experiments_by_id(table, geometry, numbering)
    if not experiments or all(
        e.detector is None or e.beam is None for e in experiments
    ):
        return None
    return experiments


def profile_entries(profiles: list, experiments: list, name: str) -> list[dict]:
    """The profile model of a table's ``experiments`` (each profile numbered by its
    place among them) as plain data, naming the table and each experiment."""
    entries = ProfileModel(experiments=profiles).as_dict()["experiments"]
    for entry in entries:
        entry["dataset"] = name
        entry["identifier"] = experiments[entry["experiment"]].identifier
    return entries


def measure_file(
    index: int, source: Any, request: MeasureRequest, n_sources: int
) -> FileOutcome:
    """Read and measure one source; a problem with it becomes the outcome's error.

    Parameters
    ----------
    index : int
        The source's number among the inputs.
    source
        A path, msgpack bytes or a table (see :func:`load_table`).
    request : MeasureRequest
        What every process needs (experiments, options).
    n_sources : int
        The number of inputs.

    Returns
    -------
    FileOutcome
        The measured rows, selection, input description and profile model, or the
        error (a FileFormatError or SelectionError met on the way).
    """
    read = read_source(index, source, request, n_sources)
    return read if isinstance(read, FileOutcome) else measure_read(read, request)


@dataclass
class ReadSource:
    """A source read and matched with its experiments, not yet measured."""

    index: int
    name: str
    table: ReflectionTable
    geometry: ExperimentGeometry
    numbering: ExperimentNumbering
    labels: list[str] | None
    compared: ComparedTable | None


def read_source(
    index: int, source: Any, request: MeasureRequest, n_sources: int
) -> ReadSource | FileOutcome:
    """The first half of :func:`measure_file`: the table read, compared and matched
    with its experiments; or the outcome of its problem.

    Parameters
    ----------
    index, source, request, n_sources
        As for :func:`measure_file`.
    """
    name = source_name(source, index)
    compared = None
    try:
        table = load_table(source)
        if request.compare_spots:  # even where the table cannot be measured
            compared = compared_table(table, index, name)
        geometry, numbering, labels = _experiments_for(table, index, request, n_sources)
    except (FileFormatError, SelectionError) as error:
        return error_outcome(index, name, error, compared)
    return ReadSource(index, name, table, geometry, numbering, labels, compared)


def error_outcome(index, name, error, compared) -> FileOutcome:
    """The outcome of a source whose problem is ``error``."""
    return FileOutcome(
        index=index,
        name=name,
        error=str(error),
        error_path=getattr(error, "path", None),
        error_is_format=isinstance(error, FileFormatError),
        compared=compared,
    )


def measure_read(read: ReadSource, request: MeasureRequest) -> FileOutcome:
    """The second half of :func:`measure_file`: the read table measured, and its
    profile model; a problem with it becomes the outcome's error.

    Parameters
    ----------
    read : ReadSource
        From :func:`read_source`.
    request : MeasureRequest
        What every process needs.
    """
    table = read.table
    try:
        spot_sizes, selection = measure_table(
            table,
            read.geometry,
            read.numbering,
            request.options,
            dataset=read.index,
            name=read.name,
            release_pages=True,
            keep_index=request.n_sigma is not None,
            threads=request.threads,
        )
        profiles, profiles_later = [], None
        if request.profiles_later:
            check_table_unchanged(table)  # for the rows; the profile model checks again
            profiles_later = partial(profiles_checked, read, request)
        else:
            profiles = profiles_checked(read, request)
    except (FileFormatError, SelectionError) as error:
        error = explained(table, error)
        return error_outcome(read.index, read.name, error, read.compared)
    return measured_outcome(
        read, request, spot_sizes, selection, profiles, profiles_later
    )


def measured_outcome(
    read: ReadSource,
    request: MeasureRequest,
    spot_sizes: SpotSizes,
    selection: DatasetSelection,
    profiles: list[dict],
    profiles_later: Callable[[], list[dict]] | None = None,
) -> FileOutcome:
    """The outcome of a measured source, with the description of its input."""
    table = read.table
    paired = request.paired_experiments.get(read.index)
    info = {
        "reflections": read.name,
        **({"experiments": paired} if paired is not None else {}),
        "n_rows": table.nrows,
        "table_version": table.version,
        "has_shoeboxes": table.shoebox_column_name is not None,
        "experiment_identifiers": selection.experiment_identifiers,
        "skipped_columns": sorted(table.skipped_columns),
    }
    return FileOutcome(
        index=read.index,
        name=read.name,
        spot_sizes=spot_sizes,
        selection=selection,
        info=info,
        labels=read.labels,
        profiles=profiles,
        detector_type=first_panel_type(
            _experiments_by_id(table, read.geometry, read.numbering) or []
        ),
        compared=read.compared,
        profiles_later=profiles_later,
    )


def check_table_unchanged(table: ReflectionTable) -> None:
    """Refuse a table whose file was rewritten or replaced while it was read."""
    for column in list(table.columns.values())[:1]:  # a view of the file's map
        check_unchanged(column)  # rewritten or replaced while it was read


def explained(table: ReflectionTable, error: Exception) -> Exception:
    """``error``, found in ``table``; or, where the table's file changed while it was
    read (a truncation reads as zeros), that change, which explains the error."""
    try:
        check_table_unchanged(table)
    except FileFormatError as changed:
        return changed
    return error


def profiles_checked(read: ReadSource, request: MeasureRequest) -> list:
    """The profile model (see :func:`_profiles`), refused where the file changed while
    its shoeboxes were read."""
    profiles = _profiles(read.table, read.geometry, read.numbering, request, read.name)
    check_table_unchanged(read.table)
    return profiles


def compared_table(
    table: ReflectionTable, position: int, path: str, named: bool = True
) -> ComparedTable | None:
    """What the search for tables holding the same spots needs of a table
    (``algorithms.same_spots``); None where it has no observed centroids.

    Parameters
    ----------
    table : ReflectionTable
        The table, as read.
    position : int
        Its place among the inputs.
    path : str
        Its name.
    named : bool
        Whether the user named it (else the program found it).
    """
    xyz = table.columns.get("xyzobs.px.value")
    if xyz is None or xyz.ndim != 2 or xyz.shape[1] != 3:
        return None
    return ComparedTable(
        position=position,
        path=path,
        named=named,
        keys=centroid_keys(xyz),
        n_columns=len(table.columns) + (table.shoebox_column_name is not None),
        n_rows=table.nrows,
        identifiers=frozenset((table.identifiers or {}).values()),
    )
