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
from .document import json_document
from .plots import measured_quantities
from .text import SHAPE_ROWS


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
    table) and the shape figures; empty where no spot's shape was measured."""
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
    """The whole page for an ``api.AnalysisResult``."""
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
        if not name.startswith(SHAPE_PREFIX)
    ]
    sections.append(shape_section(document))
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
