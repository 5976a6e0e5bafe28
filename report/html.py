"""The HTML report: one self-contained file that opens offline.

Beamline computers often have no internet, so plotly.js is embedded from the ``plotly``
Python package (not fetched from a CDN). The graphs are drawn from the same plotly figure
dicts as the JSON's ``plots``; the tables come from the same JSON document.
"""

from __future__ import annotations

import html
import importlib.resources
import json

from .. import __version__
from ..algorithms.profile_model import REFERENCE_REFLECTIONS, STILLS_LABEL
from .document import json_document
from .plots import ADVICE_PREFIX, PROFILE_PREFIX, measured_quantities
from .suggestions import memory_lines, no_change_sentence
from .text import (
    MOST_DATASETS_LISTED,
    SHAPE_ROWS,
    XDS_TITLE,
    as_sentence,
    block_cells,
    fixed_sigma_lines,
    gigabytes,
    reference_subset_words,
    stored_has_sigmas,
    stored_model_words,
    xds_keywords,
)


def plotly_js() -> str:
    """The minified plotly.js that the installed ``plotly`` package ships."""
    try:
        return (
            importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
        ).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        raise RuntimeError(
            "the HTML report needs the plotly package: pip install plotly, or set output.html=None"
        ) from None


def _script_json(value) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value).replace("</", "<\\/")


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_number(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


SHAPE_PREFIX = "spot_shape_"
SHAPE_STATISTICS = ["n", "median", "p5", "p25", "p75", "p95", "max"]


def _figure_section(name: str, figure: dict, heading: str) -> str:
    """A figure's title, help text and the element plotly draws it into (as tall as
    the figure asks for)."""
    height = figure["layout"].get("height")
    style = f' style="height: {int(height)}px"' if height else ""
    return (
        f"<{heading}>{html.escape(figure['layout']['title']['text'])}</{heading}>\n"
        f'<p class="help">{html.escape(figure["help"])}</p>\n'
        f'<div class="plot" id="{html.escape(name)}"{style}></div>'
    )


def shape_section(document: dict) -> str:
    """The "Spot shape" section: the statistics of each shape quantity (as the log's
    table) and the shape figures; empty where no spot's shape was measured.

    Parameters
    ----------
    document : dict
        The run's JSON document (``report.document.json_document``).

    Returns
    -------
    str
        HTML; empty where there is nothing to show.
    """
    summary = document.get("spot_shape") or {}
    if not measured_quantities({"quantities": summary}):
        return ""
    quantities = {name: entry for name, entry in summary.items() if name != "counts"}
    rows = [
        [name, meaning, quantities[name]["unit"] or "-"]
        + [quantities[name]["statistics"][key] for key in SHAPE_STATISTICS]
        for name, meaning in SHAPE_ROWS
        if name in quantities and quantities[name]["statistics"]["n"]
    ]
    if not rows:
        return ""
    figures = [
        _figure_section(name, figure, "h3")
        for name, figure in document["plots"].items()
        if name.startswith(SHAPE_PREFIX)
    ]
    return "\n".join(
        [
            "<h2>Spot shape</h2>",
            _table(["quantity", "meaning", "unit", *SHAPE_STATISTICS], rows),
            '<p class="help">Each quantity is measured on the coded pixels of every '
            "counted shoebox, weighted by data minus background where it is a width or "
            "a position; doc/spot_shapes.md in the program's source explains each "
            "and what a problem looks like.</p>",
            *figures,
        ]
    )


def _significant(value, digits: int = 4) -> str:
    """A real number to ``digits`` significant figures (sigmas span 0.01 to 20
    degrees: one decimal would hide them); '-' where missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _size(size, unit_z: str = "images") -> str:
    if not size:
        return "-"
    return f"{size[0]:g} x {size[1]:g} px x {size[2]:g} {unit_z}"


def _figures_named(document: dict, prefix: str) -> list[str]:
    return [
        _figure_section(name, figure, "h3")
        for name, figure in document["plots"].items()
        if name.startswith(prefix)
    ]


def _is_estimate(entry: dict) -> bool:
    """An estimate (before indexing, or of a still), not the model dials.integrate
    would use."""
    return not entry.get("label", "").startswith("dials.integrate")


def _reflections_row(entry: dict) -> list:
    if _is_estimate(entry):
        return ["spots used", entry.get("n_selected", 0), None, None]
    return [
        "reference reflections (indexed / matched / used)",
        f"{entry.get('n_reference', 0)} / {entry.get('n_matched', 0)} / "
        f"{entry.get('n_selected', 0)}",
        None,
        None,
    ]


def _model_rows(entry: dict, stored: dict | None) -> list[list]:
    """The rows of one experiment's profile-model table: the quantity, our value,
    the .expt's (where it holds a model) and XDS's keyword."""
    shoebox = entry.get("shoebox") or {}
    xds = entry.get("xds") or {}
    peak = shoebox.get("peak_bytes")
    rows = [
        ["sigma_b (deg)", entry.get("sigma_b_deg"), "sigma_b_deg", "BEAM_DIVERGENCE_E.S.D."],
        ["sigma_b (px on the detector)", entry.get("sigma_b_px"), None, None],
        ["sigma_m (deg)", entry.get("sigma_m_deg"), "sigma_m_deg", "REFLECTING_RANGE_E.S.D."],
        ["sigma_m (images)", entry.get("sigma_m_images"), None, None],
        ["n_sigma (box half-width in sigmas)", entry.get("n_sigma"), "n_sigma", None],
        _reflections_row(entry),
        ["integration box, median", _size(shoebox.get("median_size_px")), None, None],
        ["integration box, largest", _size(shoebox.get("max_size_px")), None, None],
        [
            "shoebox memory at the peak "
            f"({shoebox.get('counted') or REFERENCE_REFLECTIONS})",
            gigabytes(peak),
            None,
            None,
        ],
    ]  # fmt: skip
    if xds:  # XDS's full widths, from the spots measured (XDS_NOTE)
        rows[4:4] = [
            [
                "spot diameter as an angle: arctan(median spot extent / distance) "
                "(deg)",
                xds.get("BEAM_DIVERGENCE"),
                None,
                "BEAM_DIVERGENCE",
            ],
            [
                "rotation a spot spans: median images x oscillation (deg)",
                xds.get("REFLECTING_RANGE"),
                None,
                "REFLECTING_RANGE",
            ],
        ]
    if shoebox.get("n_off_detector"):  # dials.integrate would stop on them
        rows.append(
            [
                "integration boxes with a corner off the detector (dials.integrate "
                "stops on them)",
                shoebox["n_off_detector"],
                None,
                None,
            ]
        )
    if not shoebox and (stored or {}).get("n_sigma") is None:
        rows = [row for row in rows if row[2] != "n_sigma"]  # no box: no half-width
    table = []
    for name, value, stored_key, xds_key in rows:
        row = [name, _significant(value)]
        if stored is not None:
            row.append(_significant(stored.get(stored_key)) if stored_key else "")
        if xds:
            row.append(
                f"{xds_key}= {_significant(xds.get(xds_key))}" if xds_key else ""
            )
        table.append(row)
    return table


def _blocks_table(entry: dict) -> str:
    """The blocks of a scan of several: the sigmas the blocks figure draws, in data
    units too, and each block's peak shoebox memory; empty for one block."""
    blocks = entry.get("blocks") or []
    if len(blocks) < 2:
        return ""
    counted = (entry.get("shoebox") or {}).get("counted") or REFERENCE_REFLECTIONS
    header = [
        "images",
        "reflections",
        "sigma_b (deg)",
        "sigma_b (px)",
        "sigma_m (deg)",
        "sigma_m (images)",
        f"shoebox memory at the peak ({counted})",
    ]
    rows = [block_cells(block, _significant) for block in blocks]
    return (
        '<p class="help">Per block of images: sigma_b and sigma_m recomputed on the '
        "reflections the whole scan's values use, predicted in each block ('-' where "
        "fewer than 20), "
        "and the peak shoebox memory of the boxes in it.</p>" + _table(header, rows)
    )


def _experiment_table(entry: dict) -> str:
    stored = entry.get("stored_profile")
    other = stored if stored and not stored_has_sigmas(stored) else None
    stored = stored if stored_has_sigmas(stored) else None
    estimate = _is_estimate(entry)
    kind = "estimate before indexing"
    if entry.get("label") == STILLS_LABEL:
        kind = "estimate for a still"
    header = ["profile model", kind if estimate else "as dials.integrate computes it"]
    if stored is not None:
        header.append(f"stored in the .expt ({stored.get('kind') or 'unknown kind'})")
    if entry.get("xds"):
        header.append("XDS keyword")
    name = entry.get("identifier") or entry.get("dataset") or "-"
    parts = [
        f"<h3>Experiment {html.escape(str(name))}</h3>",
        f'<p class="help">{html.escape(str(entry.get("dataset") or ""))}</p>',
    ]
    if estimate:
        parts.append(
            f'<p class="help"><b>An estimate</b>: {html.escape(entry.get("label", ""))}; '
            f"{html.escape(entry.get('reason', ''))}.</p>"
        )
    parts.append(_table(header, _model_rows(entry, stored)))
    subset = reference_subset_words(entry)
    if subset:
        parts.append(f'<p class="help">{html.escape(as_sentence(subset))}</p>')
    if other:
        parts.append(
            '<p class="help">The .expt holds a profile model already (not used here; '
            "under DIALS's names, in the model's own units): "
            f"{html.escape(stored_model_words(other))}.</p>"
        )
    keywords = xds_keywords(entry.get("xds"), entry.get("identifier") or "")
    if keywords:
        parts.append(
            f'<p class="help">{html.escape(XDS_TITLE)}</p>'
            f"<pre>{html.escape(keywords)}</pre>"
        )
    blocks = _blocks_table(entry)
    if blocks:
        parts.append(blocks)
    return "\n".join(parts)


def profile_section(document: dict) -> str:
    """The "Profile model" section: one table per experiment (ours, the .expt's,
    XDS's names), why no model applies elsewhere, and the profile figures; empty
    where nothing was computed (sizes given as numbers).

    Parameters
    ----------
    document : dict
        The run's JSON document (``report.document.json_document``).

    Returns
    -------
    str
        HTML; empty where there is nothing to show.
    """
    model = document.get("profile_model") or {}
    entries = model.get("experiments", [])
    reasons = model.get("not_applicable", [])
    if not entries and not reasons:
        return ""
    parts = [
        "<h2>Profile model</h2>",
        '<p class="help">The Gaussian profile model (sigma_b, sigma_m) that '
        "dials.integrate computes from the indexed reflections before it reads an "
        "image, rebuilt here step by step (doc/profile_model.md), with the "
        "integration box and shoebox memory it implies. XDS calls the same two "
        "numbers BEAM_DIVERGENCE_E.S.D. and REFLECTING_RANGE_E.S.D.; its full "
        "widths BEAM_DIVERGENCE and REFLECTING_RANGE are measured from the spots "
        "found; the box sizes are the reference reflections', and so is the memory "
        "unless profile.shoebox_memory=all_predictions.</p>",
    ]
    parts += [_experiment_table(entry) for entry in entries[:MOST_DATASETS_LISTED]]
    parts += [
        f"<p>{html.escape(line)}</p>"
        for line in fixed_sigma_lines(entries[:MOST_DATASETS_LISTED])
    ]
    if len(entries) > MOST_DATASETS_LISTED:
        parts.append(
            f'<p class="help">And {len(entries) - MOST_DATASETS_LISTED} more '
            "experiments: every one is in the JSON's profile_model.</p>"
        )
    for reason in reasons:
        n = reason["n_experiments"]
        datasets = ", ".join(str(d) for d in reason.get("datasets", []) if d)
        parts.append(
            f"<p>No profile model for {n} experiment{'s' if n != 1 else ''}: "
            f"{html.escape(reason['reason'])}"
            + (f" ({html.escape(datasets)})" if datasets else "")
            + ".</p>"
        )
    parts += _figures_named(document, PROFILE_PREFIX)
    return "\n".join(parts)


def _value(value) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _profile_check_rows(checks: list) -> list[list]:
    rows = []
    for check in checks:
        if "sigma_m_deg" not in check:
            continue
        fixed = check.get("fixed_in")
        rows.append(
            [
                (check.get("experiment") or "-")
                + (f" (sigmas as {fixed} fixes them)" if fixed else ""),
                f"{_significant(check['box_xy_px'], 3)} px x "
                f"{_significant(check['box_z_images'], 3)} images",
                f"{_significant(check['p95_extent_xy'], 3)} px x "
                f"{_significant(check['p95_extent_z'], 3)} images",
                "; ".join(
                    (check["reasons"] or ["the model fits the spots found"])
                    + memory_lines(check)
                ),
            ]
        )
    return rows


def advice_section(document: dict) -> str:
    """The "Spot finding and integration advice" section: the summary, the
    suggestions (or that the defaults serve), the profile model against the spots,
    and one figure per spot-finding limit with its evidence.

    Parameters
    ----------
    document : dict
        The run's JSON document (``report.document.json_document``).

    Returns
    -------
    str
        HTML; empty where there is nothing to show.
    """
    found = document.get("advice") or {}
    checks = found.get("checks") or []
    if not checks:
        return ""
    summary = found.get("summary") or ""
    parts = ["<h2>Spot finding and integration advice</h2>"]
    parts += [
        f"<p>Not used: {html.escape(item)}</p>" for item in found.get("unused", [])
    ]
    parts += [
        f"<p>Not checked: {html.escape(item)}</p>" for item in found.get("notes", [])
    ]
    if summary:
        parts.append(f"<p>{html.escape(as_sentence(summary))}</p>")
    suggestions = found.get("suggestions") or []
    if suggestions:
        rows = [
            [
                s["program"],
                s["parameter"],
                _value(s["current"]),
                "(no value from the data)" if s["suggested"] is None else _value(s["suggested"]),
                s["reason"],
            ]
            for s in suggestions
        ]  # fmt: skip
        parts.append(
            _table(["program", "parameter", "now", "suggested", "reason"], rows)
        )
        parts.append(
            '<p class="help">output.suggestions writes these as a .phil file per '
            "program.</p>"
        )
    else:
        parts.append(f"<p>{html.escape(no_change_sentence(checks))}</p>")
    profile_rows = _profile_check_rows(checks)
    if profile_rows:
        parts.append(
            _table(
                [
                    "model of experiment",
                    "box (median)",
                    "95% of spots within",
                    "verdict",
                ],
                profile_rows,
            )
        )
    parts += _figures_named(document, ADVICE_PREFIX)
    return "\n".join(parts)


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
.subtitle { color: #666; margin-top: 0; } .help { color: #555; font-size: 0.92em; max-width: 60em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; } th { background: #f3f5f8; }
td:first-child, th:first-child { text-align: left; }
.plot { width: 100%; height: 460px; } pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def html_report(analysis, changed_parameters: str = "") -> str:
    """The whole page for an ``api.AnalysisResult``.

    Parameters
    ----------
    analysis : AnalysisResult
        The whole run (``algorithms.result.AnalysisResult``).
    changed_parameters : str
        The PHIL of the parameters that differ from their defaults; empty says all
        have their defaults.

    Returns
    -------
    str
        A self-contained HTML page (plotly.js embedded: no internet needed).
    """
    document = json_document(analysis)
    selection = document["selection"]
    statistics = document["statistics"]
    mask = document["mask_code"]
    histogram = document["histogram"]
    names = ["n", "mean", "std", "min", "p5", "p25", "median", "p75", "p95", "max"]
    dataset_rows = [
        [
            d["name"],
            d["n_rows"],
            "+".join(d["require"]) or "-",
            "+".join(d["exclude"]) or "-",
            d["n_selected"],
            d["n_without_pixel_data"],
            d["n_counted"],
        ]
        for d in selection["datasets"]
    ]
    if len(dataset_rows) > 1:
        dataset_rows.append(
            [
                "all",
                selection["n_rows"],
                "",
                "",
                selection["n_selected"],
                selection["n_without_pixel_data"],
                selection["n_counted"],
            ]
        )
    sections = [
        _figure_section(name, figure, "h2")
        for name, figure in document["plots"].items()
        if not name.startswith((SHAPE_PREFIX, PROFILE_PREFIX, ADVICE_PREFIX))
    ]
    sections.append(shape_section(document))
    sections.append(profile_section(document))
    sections.append(advice_section(document))
    parameters = changed_parameters or "All parameters have their default values."
    code = f"{'|'.join(mask['names']) or 'all pixels'} ({mask['value']})"
    body = f"""
<h1>dials.spot_size_analysis</h1>
<p class="subtitle">How big are the spots? Version {html.escape(__version__)}; sizes are the shoebox pixels with mask {html.escape(code)}.</p>
<h2>Summary</h2>
{_table(names, [[statistics[n] for n in names]])}
<p class="help">Histogram: {histogram["n_bins"]} bins of width {histogram["bin_width"]:g} from {histogram["data_min"]:g} to {histogram["data_max"]:g};
{selection["n_in_histogram"]} spots in range, {selection["n_out_of_range"]} out of range.</p>
<h2>Selection</h2>
{_table(["dataset", "reflections", "required flags", "excluded flags", "selected", "without pixel data", "counted"], dataset_rows)}
<p class="help">Rows whose shoebox carries no pixel data are excluded, not counted as size 0.</p>
{chr(10).join(sections)}
<h2>Parameters</h2>
<pre>{html.escape(parameters)}</pre>
<h2>Inputs</h2>
<pre>{html.escape(json.dumps(document["inputs"], indent=2))}</pre>
"""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>dials.spot_size_analysis report</title>
<style>{STYLE}</style>
<script>{plotly_js()}</script>
</head>
<body>
{body}
<script>
const figures = {_script_json(document["plots"])};
for (const [name, figure] of Object.entries(figures)) {{
  Plotly.newPlot(name, figure.data, figure.layout, {{responsive: true, displaylogo: false}});
}}
</script>
</body>
</html>
"""
