"""The human-readable report: tables and a text bar chart, as lines for the log."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..algorithms.histogram import CROWDED_BINS, crowded_share, whole_pixel_counts
from ..algorithms.mask_codes import describe
from ..algorithms.profile_model import ALL_PREDICTIONS, off_detector_words
from ..algorithms.spot_sizes import SpotSizeResult

BAR_WIDTH = 50
MOST_DATASETS_LISTED = 20
MOST_GROUP_ROWS = 200
MOST_CHARACTERS = 1000  # of a message quoting a file
MOST_CELL_CHARACTERS = 200  # of a table cell (a file name, an identifier)


def printable(text: str, limit: int = MOST_CHARACTERS) -> str:
    """``text`` (a file name, an identifier, a message quoting them) safe to print on a
    terminal: control characters (escape sequences, newlines) and characters that are
    not valid Unicode (a non-UTF-8 file name's bytes) written as escapes, and at most
    ``limit`` characters, so that a hostile file can neither forge lines nor flood the
    screen.

    Parameters
    ----------
    text : str
        Anything; it is converted with ``str``.
    limit : int
        The most characters returned (the last one ``…`` where cut).

    Returns
    -------
    str
        The escaped text.
    """
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    escaped = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )
    if len(escaped) > limit:
        escaped = escaped[: limit - 1] + "…"
    return escaped


def format_table(
    header: Sequence[str], rows: Sequence[Sequence], title: str | None = None
) -> str:
    """A plain-text table; numbers right-aligned, text left-aligned.

    Parameters
    ----------
    header : sequence of str
        The column names.
    rows : sequence of sequence
        One value per column; None is an empty cell, floats get one decimal.
    title : str, optional
        A line above the table.

    Returns
    -------
    str
        The table's lines joined by newlines, cells made printable (see
        :func:`printable`).
    """
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(row[i]) for row in cells)) if cells else len(str(h))
        for i, h in enumerate(header)
    ]
    numeric = [
        any(_is_number(row[i]) for row in rows)
        and all(_is_number(row[i]) or row[i] is None for row in rows)
        for i in range(len(header))
    ]

    def line(values):
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [title] if title else []
    out.append(line([str(h) for h in header]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) < 1e6 else f"{value:.4g}"
    return printable(value, MOST_CELL_CHARACTERS)


def selection_lines(
    result: SpotSizeResult, most: int = MOST_DATASETS_LISTED
) -> list[str]:
    """Why each table's rows were selected, and how many were selected and counted, so a
    reader can see what the statistics cover.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).
    most : int
        The most datasets listed in the table (the rest are in the JSON).

    Returns
    -------
    list of str
        Lines without newlines (the table is one item of several lines).
    """
    datasets = result.datasets
    lines = []
    automatic = [d for d in datasets if d.require_was_automatic]
    for choice in sorted({tuple(d.require) for d in automatic}):
        chosen = "+".join(choice) or "no flag requirement"
        why = (
            "the table has indexed reflections, as in the DIALS tutorial"
            if choice
            else "no reflection is indexed, so every reflection is used"
        )
        which = [d.name for d in automatic if tuple(d.require) == choice]
        where = printable(which[0]) if len(which) == 1 else f"{len(which)} datasets"
        lines.append(f"{where}: flags.require=Auto chose {chosen} ({why})")
    for note in sorted({d.size_source_note for d in datasets if d.size_source_note}):
        which = [d.name for d in datasets if d.size_source_note == note]
        lines.append(
            f"{printable(which[0]) if len(which) == 1 else f'{len(which)} datasets'}: {note}"
        )
    rows = [
        [d.name, d.n_rows, d.n_selected, d.n_without_pixel_data, d.n_counted]
        for d in datasets[:most]
    ]
    if len(datasets) > most:
        rows.append(
            [
                f"... {len(datasets) - most} more (all in the JSON)",
                None,
                None,
                None,
                None,
            ]
        )
    totals = result.selection
    if len(datasets) > 1:
        rows.append(
            [
                "all",
                totals["n_rows"],
                totals["n_selected"],
                totals["n_without_pixel_data"],
                totals["n_counted"],
            ]
        )
    lines.append("")
    lines.append(
        format_table(
            [
                "dataset",
                "reflections",
                "selected by flags",
                "without pixel data",
                "counted",
            ],
            rows,
            title="Selection:",
        )
    )
    if totals["n_without_pixel_data"]:
        lines.append(
            f"{totals['n_without_pixel_data']} selected reflections have a shoebox without pixel data: "
            "they are excluded, not counted as size 0 (DIALS's count_mask_values would give 0)."
        )
    return lines


def statistics_lines(result: SpotSizeResult) -> list[str]:
    """The spot-size statistics as a one-row table.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    list of str
        Lines without newlines (a table may hold several).
    """
    s = result.statistics
    names = ["n", "mean", "std", "min", "p5", "p25", "median", "p75", "p95", "max"]
    return [
        format_table(
            names,
            [[s[name] for name in names]],
            title=f"Spot size statistics ({describe(result.mask_code)} pixels per reflection):",
        )
    ]


def histogram_lines(result: SpotSizeResult) -> list[str]:
    """The histogram as a text bar chart, up to the last filled bin.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    list of str
        Lines without newlines (a table may hold several).
    """
    histogram = result.histogram
    counts = histogram.counts.tolist()
    centres = histogram.bin_centers.tolist()
    last = max((i for i, c in enumerate(counts) if c), default=-1)
    peak = max(counts) or 1
    lines = [
        f"Histogram: {histogram.n_bins} bins of width {histogram.bin_width:g} from {histogram.data_min:g} to "
        f"{histogram.data_max:g} (scitbx flex.histogram binning); {histogram.n_in_range} in range, "
        f"{histogram.n_out_of_range} out of range",
        f"{'centre':>10} {'count':>8}",
    ]
    for centre, count in zip(centres[: last + 1], counts[: last + 1]):
        bar = "#" * int(round(BAR_WIDTH * count / peak))
        if count and not bar:
            bar = "."
        lines.append(f"{centre:>10g} {count:>8d} {bar}")
    if last + 1 < histogram.n_bins:
        lines.append(
            f"(bins {last + 2}-{histogram.n_bins}, centres {centres[last + 1]:g}-{centres[-1]:g}, are empty)"
        )
    return lines


def _capped(entries: list[dict], row, most: int, what: str) -> list[list]:
    """Rows of at most ``most`` entries, the rest summed up in one line (the JSON has them
    all); rows are made only for the entries shown (there may be thousands)."""
    rows = [row(entry) for entry in entries[:most]]
    if len(entries) > most:
        rows.append(
            [f"... {len(entries) - most} more {what} (all in the JSON and the HTML)"]
            + [None] * (len(rows[0]) - 1)
        )
    return rows


def breakdown_lines(result: SpotSizeResult) -> list[str]:
    """The spot-size statistics per experiment, panel, image and resolution shell, or
    why there is no resolution breakdown.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    list of str
        Lines without newlines (a table may hold several).
    """
    lines = []
    columns = ["n", "median", "mean", "min", "max"]
    if len(result.by_experiment) > 1 or any(
        e["identifier"] for e in result.by_experiment
    ):

        def label(entry):
            return (
                "(none: unindexed)"
                if entry["experiment"] < 0
                else entry["identifier"] or "-"
            )

        rows = _capped(
            result.by_experiment,
            lambda e: [e["experiment"], label(e), *(e[c] for c in columns)],
            MOST_DATASETS_LISTED,
            "experiments",
        )
        lines += [
            "",
            format_table(
                ["experiment", "identifier", *columns], rows, title="By experiment:"
            ),
        ]
    for key, what, title in (
        ("panel", "panels", "By panel:"),
        ("image", "images", "By image (of the observed centroid):"),
    ):
        entries = getattr(result, f"by_{key}")
        if not entries:
            continue
        split = "dataset" in entries[0]  # unrelated datasets: never pooled
        header = ["dataset", key, *columns] if split else [key, *columns]
        rows = _capped(
            entries,
            lambda e, key=key, split=split: [
                *([e["dataset"]] if split else []),
                e[key],
                *(e[c] for c in columns),
            ],
            MOST_GROUP_ROWS,
            what,
        )
        lines += ["", format_table(header, rows, title=title)]
    if result.by_resolution:
        rows = [
            [f"{e['d_max']:.2f} - {e['d_min']:.2f}", *(e[c] for c in columns)]
            for e in result.by_resolution
        ]
        lines += [
            "",
            format_table(
                ["d (Å)", *columns], rows, title="By resolution (observed d-spacing):"
            ),
        ]
    else:
        notes = sorted(
            {d.resolution_note for d in result.datasets if d.resolution_note}
        )
        why = (
            notes[0]
            if notes
            else ("it needs the experiment list (.expt) with the reflections")
        )
        lines += ["", f"No resolution breakdown: {why}."]
    return lines


def report_lines(result: SpotSizeResult) -> list[str]:
    """Every section of the report after the inputs, in the order a reader wants them.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    list of str
        Lines without newlines (a table may hold several).
    """
    return [
        *selection_lines(result),
        "",
        *statistics_lines(result),
        "",
        *histogram_lines(result),
        *crowded_histogram_lines(result),
        *shape_lines(result),
        *breakdown_lines(result),
    ]


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):  # scan-varying: its range
        return f"{min(value):.{digits}g}-{max(value):.{digits}g}" if value else "-"
    return f"{value:.{digits}g}"


def _box(shoebox: dict | None) -> str:
    size = (shoebox or {}).get("median_size_px")
    if not size:
        return "-"
    return f"{size[0]:.0f} x {size[1]:.0f} px x {size[2]:.1f} images"


def as_sentence(words: str) -> str:
    """``words`` as a sentence of its own: the first letter a capital, a full stop
    at the end (a phrase that is also used within another sentence).

    Parameters
    ----------
    words : str
        A phrase, not empty.
    """
    return words[0].upper() + words[1:] + "."


def gigabytes(n_bytes: int | None) -> str:
    """Memory in GB (10^9 bytes), the unit DIALS reports shoebox memory in and
    ``profile.memory_limit`` takes, so every figure of the report compares directly.

    Parameters
    ----------
    n_bytes : int or None
        A number of bytes; None gives "-".
    """
    return "-" if n_bytes is None else f"{n_bytes / 1e9:.3g} GB"


def _memory(shoebox: dict | None) -> str:
    """The peak memory, with the boxes counted where they are every prediction (the
    reflections column counts the reference reflections)."""
    shoebox = shoebox or {}
    peak = shoebox.get("peak_bytes")
    if peak is None:
        return "-"
    if shoebox.get("counted") == ALL_PREDICTIONS:
        return f"{gigabytes(peak)} ({shoebox.get('n_boxes', 0):,} boxes)"
    return gigabytes(peak)


XDS_KEYWORDS = (
    "BEAM_DIVERGENCE",
    "BEAM_DIVERGENCE_E.S.D.",
    "REFLECTING_RANGE",
    "REFLECTING_RANGE_E.S.D.",
)
XDS_TITLE = (
    "As XDS.INP keywords (the E.S.D.s are sigma_b and sigma_m; BEAM_DIVERGENCE= and "
    "REFLECTING_RANGE= are the full widths of the spots measured, as XDS defines "
    "them: doc/profile_model.md):"
)


def xds_keywords(xds: dict | None, identifier: str = "") -> str:
    """A model's XDS equivalents as one line of XDS.INP keywords, to paste: those the
    data give (a full width needs measured spots), the experiment after XDS's comment
    mark ``!``.

    Parameters
    ----------
    xds : dict or None
        The profile-model entry's ``xds`` (``algorithms.profile_model``).
    identifier : str
        The experiment's identifier, written as a comment; none where empty.

    Returns
    -------
    str
        The keywords, or "" where there are none.
    """
    xds = xds or {}
    words = [
        f"{name}= {xds[name]:.3g}" for name in XDS_KEYWORDS if xds.get(name) is not None
    ]
    if not words:
        return ""
    comment = f" ! {printable(identifier, MOST_CELL_CHARACTERS)}" if identifier else ""
    return " ".join(words) + comment


REFERENCE_ONLY = (
    "The boxes and their memory are those of the matched reference reflections: "
    "dials.integrate boxes every predicted reflection, often several times as many, "
    "so its shoebox memory is larger in proportion."
)


def _memory_basis(entries: list[dict]) -> str:
    """Which reflections the memory column counts: all predictions where every
    model with boxes counted them, else the reference reflections; where no model
    has boxes (estimates, stills), that there are none to count."""
    counted = {(e.get("shoebox") or {}).get("counted") for e in entries} - {None}
    if not counted:
        return "none: estimates only"
    return ALL_PREDICTIONS if counted == {ALL_PREDICTIONS} else "reference only"


def _numbers(values) -> str:
    return ", ".join(_number(value) for value in values)


def stored_has_sigmas(stored: dict | None) -> bool:
    """Whether a model stored in the .expt has sigma_b or sigma_m (gaussian_rs) to
    set beside ours; another kind is said in words.

    Parameters
    ----------
    stored : dict or None
        An entry's ``stored_profile`` (``algorithms.profile_model``).
    """
    return bool(stored) and any(
        stored.get(key) is not None for key in ("sigma_b_deg", "sigma_m_deg")
    )


def stored_model_words(stored: dict) -> str:
    """What a profile model stored in the .expt is, in a few words: a gaussian_rs
    model's sigmas; another kind's mosaicity parameterisation as stored, under
    DIALS's names (their units are the model's own, not converted here).

    Parameters
    ----------
    stored : dict
        An entry's ``stored_profile`` (``algorithms.profile_model``).

    Returns
    -------
    str
        One phrase, the kind first.
    """
    kind = printable(stored.get("kind") or "unknown kind", 100)
    if stored_has_sigmas(stored):
        words = (
            f"{kind}: sigma_b {_number(stored.get('sigma_b_deg'))} deg, "
            f"sigma_m {_number(stored.get('sigma_m_deg'))} deg"
        )
        if stored.get("n_sigma") is not None:
            words += f", n_sigma {_number(stored['n_sigma'])}"
        return words
    parts = []
    if stored.get("parameterisation"):
        parts.append(f"parameterisation {printable(stored['parameterisation'], 100)}")
    if stored.get("parameters"):
        parts.append(f"parameters {_numbers(stored['parameters'])}")
    if stored.get("sigma_sqrt_diagonal"):
        spreads = _numbers(stored["sigma_sqrt_diagonal"])
        parts.append(f"square roots of the diagonal of its sigma {spreads}")
    if not parts:
        return f"{kind} (no parameters read from it)"
    return f"{kind}, mosaicity " + "; ".join(parts)


STORED_TITLE = (
    "Profile models the .expt holds already (not used here; under DIALS's names, in "
    "the model's own units: doc/profile_model.md):"
)


def stored_lines(entries: list[dict]) -> list[str]:
    """The models the .expt stores for the experiments shown: one line where every
    experiment has the same, else a table with an experiment per row.

    Parameters
    ----------
    entries : list of dict
        The profile-model entries shown (at most MOST_DATASETS_LISTED).

    Returns
    -------
    list of str
        Lines without newlines; none where no experiment has a stored model.
    """
    stored = [
        (entry.get("identifier") or "-", stored_model_words(entry["stored_profile"]))
        for entry in entries
        if entry.get("stored_profile")
    ]
    if not stored:
        return []
    words = {description for _, description in stored}
    if len(words) == 1 and len(stored) == len(entries):
        where = "each experiment above" if len(entries) > 1 else "this experiment"
        return [f"The .expt holds a profile model already for {where}: {stored[0][1]}"]
    rows = [[printable(name, 40), description] for name, description in stored]
    return ["", format_table(["experiment", "stored model"], rows, title=STORED_TITLE)]


def block_cells(block: dict, number: Callable[[object], str]) -> list:
    """A block's cells: its images, reflections, sigma_b and sigma_m in degrees and
    data units (each written by ``number``) and its peak shoebox memory.

    Parameters
    ----------
    block : dict
        A profile-model entry's block (``algorithms.profile_model.BlockValues``).
    number : callable
        How a figure is written (the log's and the HTML's differ).
    """
    return [
        f"{block['first_image']}-{block['last_image']}",
        block["n_reflections"],
        *(
            number(block.get(key))
            for key in ("sigma_b_deg", "sigma_b_px", "sigma_m_deg", "sigma_m_images")
        ),
        gigabytes(block.get("shoebox_peak_bytes")),
    ]


BLOCKS_TITLE = (
    "Per block of images (sigma_b and sigma_m recomputed on the reflections the whole "
    "scan's values use, predicted in each block, '-' where fewer than 20; the peak "
    "shoebox memory of the boxes in it; doc/profile_model.md):"
)


def block_lines(entries: list[dict]) -> list[str]:
    """The blocks of every scan of several blocks, one table: the drift of the
    sigmas through the scan, in degrees and data units, and each block's memory.

    Parameters
    ----------
    entries : list of dict
        The profile-model entries shown (``combine_profiles``'s experiments).

    Returns
    -------
    list of str
        A blank line and the table (at most MOST_GROUP_ROWS blocks); none where no
        scan has more than one block.
    """
    several = [entry for entry in entries if len(entry.get("blocks") or []) > 1]
    if not several:
        return []
    named = len(several) > 1  # which experiment, where there are several

    def row(pair):
        entry, block = pair
        return [
            *([printable(entry.get("identifier") or "-", 40)] if named else []),
            *block_cells(block, _number),
        ]

    pairs = [(entry, block) for entry in several for block in entry["blocks"]]
    header = [
        *(["experiment"] if named else []),
        "images",
        "reflections",
        "sigma_b (deg)",
        "(px)",
        "sigma_m (deg)",
        "(images)",
        f"shoebox memory ({_memory_basis(several)})",
    ]
    rows = _capped(pairs, row, MOST_GROUP_ROWS, "blocks")
    return ["", format_table(header, rows, title=BLOCKS_TITLE)]


def profile_model_lines(profile_model: dict) -> list[str]:
    """sigma_b and sigma_m as dials.integrate would compute them, in degrees and in
    data units, the shoebox they imply, and the model stored in the .expt.

    Parameters
    ----------
    profile_model : dict
        ``AnalysisResult.profile_model`` (``algorithms.profile_model.combine_profiles``);
        None or empty gives no lines.

    Returns
    -------
    list of str
        Lines without newlines.
    """
    if not profile_model:
        return []
    lines = []
    shown = profile_model.get("experiments", [])[:MOST_DATASETS_LISTED]
    rows = [
        [
            printable(entry.get("identifier") or entry.get("dataset") or "-", 40),
            _number(entry.get("sigma_b_deg")),
            _number(entry.get("sigma_b_px")),
            _number(entry.get("sigma_m_deg")),
            _number(entry.get("sigma_m_images")),
            entry.get("n_selected") or entry.get("n_reference"),
            _box(entry.get("shoebox")),
            _memory(entry.get("shoebox")),
        ]
        for entry in shown
    ]
    if rows:
        lines += [
            "",
            format_table(
                [
                    "experiment",
                    "sigma_b (deg)",
                    "(px)",
                    "sigma_m (deg)",
                    "(images)",
                    "reflections",
                    "integration box (median)",
                    f"shoebox memory ({_memory_basis(shown)})",
                ],
                rows,
                title="Profile model, as dials.integrate would compute it "
                "(doc/profile_model.md):",
            ),
        ]
        if any(
            (entry.get("shoebox") or {}).get("peak_bytes")
            and entry["shoebox"].get("counted") != ALL_PREDICTIONS
            for entry in shown
        ):
            lines.append(REFERENCE_ONLY)
        hidden = len(profile_model.get("experiments", [])) - len(shown)
        if hidden > 0:
            lines.append(
                f"And {hidden} more experiment{'s' if hidden != 1 else ''}: every one "
                "is in the JSON's profile_model."
            )
        lines += fixed_sigma_lines(shown)
    keywords = [
        xds_keywords(entry.get("xds"), entry.get("identifier") or "") for entry in shown
    ]
    if any(keywords):
        lines += [XDS_TITLE, *(f"  {line}" for line in keywords if line)]
    lines += block_lines(shown)
    labels = {entry.get("label", "") for entry in shown}
    shared = len(shown) > 1 and len(labels) == 1  # said once, not per experiment
    if shared and not next(iter(labels)).startswith("dials.integrate"):
        lines.append(f"Each experiment above: {next(iter(labels))}")
    for entry in shown:
        name = printable(entry.get("identifier") or "-", 40)
        label = entry.get("label", "")
        if not shared and not label.startswith("dials.integrate"):
            lines.append(f"{name}: {label}")
        subset = reference_subset_words(entry)
        if subset:
            lines.append(f"{name}: {subset}")
        shoebox = entry.get("shoebox") or {}
        if shoebox.get("n_off_detector"):
            words = off_detector_words(shoebox["n_off_detector"], shoebox["n_boxes"])
            lines.append(f"{name}: {words}")
    lines += stored_lines(shown)
    for reason in profile_model.get("not_applicable", []):
        n = reason["n_experiments"]
        lines.append(
            f"No profile model for {n} experiment{'s' if n != 1 else ''}: {reason['reason']}"
        )
    return lines


def reference_subset_words(entry: dict) -> str | None:
    """Where an experiment's sigmas come from an even subset of its reference
    reflections (profile.max_reflections), that they do; None where from all."""
    taken, every = entry.get("n_repredicted", 0), entry.get("n_reference", 0)
    if not 0 < taken < every:
        return None
    return (
        f"sigma_b and sigma_m from an even subset of {taken:,} of its {every:,} "
        "reference reflections (every n-th row: profile.max_reflections; None takes "
        "them all, as dials.integrate does)"
    )


def fixed_sigma_lines(entries: list[dict]) -> list[str]:
    """Where the user's file fixes sigma_b and sigma_m for dials.integrate: that the
    boxes and memory are theirs, once where every experiment shares them.

    Parameters
    ----------
    entries : list of dict
        Profile model entries (``profile_model["experiments"]``).
    """
    said = []
    for entry in entries:
        fixed = entry.get("fixed_sigmas")
        if not fixed:
            continue
        said.append(
            (
                printable(entry.get("identifier") or "-", 40),
                f"the boxes and their memory are those of sigma_b = "
                f"{fixed['sigma_b_deg']:.4g} deg ({fixed['sigma_b_px']:.3g} px) and "
                f"sigma_m = {fixed['sigma_m_deg']:.4g} deg "
                f"({fixed['sigma_m_images']:.3g} images) as {printable(fixed['source'])} "
                "fixes them: dials.integrate given it boxes with them, not with the "
                "sigmas computed here",
            )
        )
    if said and len(said) == len(entries) and len({words for _, words in said}) == 1:
        return [as_sentence(said[0][1])]
    return [f"{identifier}: {words}" for identifier, words in said]


MOST_BAR_LINES = 30


def bar_lines(values: Sequence[int], counts: Sequence[int], label: str) -> list[str]:
    """A text bar chart of whole-number values, in at most MOST_BAR_LINES lines: the
    occupied range, values merged in groups of equal width where there are more.

    Parameters
    ----------
    values : sequence of int
        The values (e.g. pixels), one per count, ascending.
    counts : sequence of int
        How many spots have each value.
    label : str
        The heading of the values' column.

    Returns
    -------
    list of str
        The heading and one line per group; empty where every count is 0.
    """
    counts = np.asarray(counts, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    occupied = np.flatnonzero(counts)
    if not occupied.size:
        return []
    first, last = occupied[0], occupied[-1]
    width = max(1, -(-(last - first + 1) // MOST_BAR_LINES))
    lines = [f"{label:>10} {'count':>8}"]
    groups = [
        (
            values[start],
            values[min(start + width, last + 1) - 1],
            counts[start : start + width].sum(),
        )
        for start in range(first, last + 1, width)
    ]
    peak = max(total for _, _, total in groups) or 1
    for low, high, total in groups:
        bar = "#" * int(round(BAR_WIDTH * total / peak)) or ("." if total else "")
        name = f"{low}" if low == high else f"{low}-{high}"
        lines.append(f"{name:>10} {int(total):>8d} {bar}")
    return lines


def crowded_histogram_lines(result: SpotSizeResult) -> list[str]:
    """Where the tutorial's range crowds the spots into its first bins, the sizes in
    whole pixels over the range they occupy.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    list of str
        Lines without newlines; empty where the spots are not crowded.
    """
    share = crowded_share(result.histogram)
    if share is None:
        return []
    tally = whole_pixel_counts(result.spot_sizes.size)
    share *= 100
    return [
        "",
        f"Most spots ({share:.0f}%) fall into the first {CROWDED_BINS} bins of this "
        "range; the sizes in whole pixels (up to the 99th percentile; "
        "data_max=Auto ends the histogram above at the largest spot):",
        *bar_lines(np.arange(tally.size), tally, "pixels"),
    ]


SHAPE_ROWS = (
    ("extent_x", "pixel columns spanned"),
    ("extent_y", "pixel rows spanned"),
    ("extent_z", "images spanned"),
    ("footprint", "most pixels on one image"),
    ("fill", "pixels / bounding box"),
    ("rms_width_x", "rms width along x"),
    ("rms_width_y", "rms width along y"),
    ("rms_width_z", "rms width in images"),
    ("rms_width_radial", "rms width radial"),
    ("rms_width_tangential", "rms width tangential"),
    ("elongation", "long / short rms width"),
    ("peak_centroid_distance", "peak to centroid"),
)


def shape_lines(result: SpotSizeResult) -> list[str]:
    """The compact shape table and the images-spanned and footprint bar charts.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    list of str
        Lines without newlines; empty where no shape was measured.
    """
    summary = result.spot_shape.get("quantities") if result.spot_shape else None
    if not summary or not summary["extent_z"]["statistics"]["n"]:
        return []
    rows = []
    for name, meaning in SHAPE_ROWS:
        entry = summary[name]
        stats = entry["statistics"]
        if not stats["n"]:
            continue
        rows.append(
            [
                name,
                meaning,
                entry["unit"],
                stats["n"],
                stats["median"],
                stats["p5"],
                stats["p95"],
            ]
        )
    lines = [
        "",
        format_table(
            ["quantity", "meaning", "unit", "n", "median", "p5", "p95"],
            rows,
            title=f"Spot shape ({describe(result.mask_code)} pixels; doc/spot_shapes.md explains each):",
        ),
    ]
    for name, title in (
        ("extent_z", "Images spanned by each spot (extent_z):"),
        ("footprint", "Most pixels of a spot on one image (footprint):"),
    ):
        histogram = summary[name]["histogram"]
        lines += ["", title]
        lines += bar_lines(
            histogram["bin_centres"], histogram["counts"], summary[name]["unit"]
        )
    return lines
