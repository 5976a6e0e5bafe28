"""Plotly figure dicts (``{"data", "layout", "help"}``), as DIALS reports and xia2 embed them.

Plain dicts: plotly itself is not needed to make them, only to draw them.
"""

from __future__ import annotations

import math

from ..algorithms.mask_codes import describe
from ..algorithms.spot_sizes import SpotSizeResult


def selection_words(result: SpotSizeResult) -> str:
    require = sorted({flag for dataset in result.datasets for flag in dataset.require})
    return f"flags {'+'.join(require)}" if require else "all reflections"


def histogram_figure(result: SpotSizeResult) -> dict:
    histogram = result.histogram
    code = describe(result.mask_code)
    xaxis = {"title": {"text": f"Spot size ({code} pixels)"}}
    filled = histogram.counts.nonzero()[0]
    if filled.size and filled[-1] + 1 < 0.6 * histogram.n_bins:
        # Open on the populated bins (a double-click on the graph shows the whole range).
        xaxis["range"] = [
            histogram.data_min,
            histogram.data_min + float(filled[-1] + 3) * histogram.bin_width,
        ]
    return {
        "data": [
            {
                "type": "bar",
                "x": histogram.bin_centers.tolist(),
                "y": histogram.counts.tolist(),
                "width": [histogram.bin_width] * histogram.n_bins,
                "name": "reflections",
                "marker": {"color": "#1f77b4"},
                "hovertemplate": "size %{x}: %{y} reflections<extra></extra>",
            }
        ],
        "layout": {
            "title": {
                "text": f"Spot sizes: {histogram.n_in_range + histogram.n_out_of_range} reflections ({selection_words(result)}), mask {code}"
            },
            "xaxis": xaxis,
            "yaxis": {"title": {"text": "Number of reflections"}},
            "bargap": 0,
            "annotations": [
                {
                    "text": f"{histogram.n_out_of_range} out of range",
                    "xref": "paper",
                    "yref": "paper",
                    "x": 1,
                    "y": 1,
                    "showarrow": False,
                }
            ]
            if histogram.n_out_of_range
            else [],
        },
        "help": (
            "How many reflections have each size, the size being the number of shoebox pixels "
            f"whose mask has every bit of {code}, summed over all images the spot touches. Bins "
            "follow scitbx flex.histogram; reflections beyond the range are counted as out of range. "
            "The graph opens on the populated bins: double-click it to see the whole range."
        ),
    }


def _median_trace(x, entries, name):
    return {
        "type": "scatter",
        "mode": "lines+markers",
        "x": x,
        "y": [e["median"] for e in entries],
        "name": name,
        "text": [f"n = {e['n']}" for e in entries],
    }


def per_image_figure(result: SpotSizeResult) -> dict:
    images = [e["image"] for e in result.by_image]
    return {
        "data": [
            _median_trace(images, result.by_image, "median"),
            {
                **_median_trace(images, result.by_image, "mean"),
                "y": [e["mean"] for e in result.by_image],
            },
        ],
        "layout": {
            "title": {"text": "Spot size per image"},
            "xaxis": {"title": {"text": "Image number"}},
            "yaxis": {"title": {"text": "Spot size (pixels)"}, "rangemode": "tozero"},
        },
        "help": (
            "Median and mean spot size of the reflections whose observed centroid lies on each "
            "image. Spots that grow or shrink through a scan can point to changes in the beam, "
            "the crystal or the detector distance."
        ),
    }


def per_resolution_figure(result: SpotSizeResult) -> dict:
    shells = result.by_resolution
    centres = [((1 / e["d_max"] ** 2) + (1 / e["d_min"] ** 2)) / 2 for e in shells]
    return {
        "data": [
            _median_trace(centres, shells, "median"),
            {
                **_median_trace(centres, shells, "mean"),
                "y": [e["mean"] for e in shells],
            },
        ],
        "layout": {
            "title": {"text": "Spot size against resolution"},
            "xaxis": {
                "title": {"text": "Resolution (Å)"},
                "tickvals": centres,
                "ticktext": [f"{1 / math.sqrt(c):.2f}" for c in centres],
            },
            "yaxis": {"title": {"text": "Spot size (pixels)"}, "rangemode": "tozero"},
        },
        "help": (
            "Median and mean spot size in shells of equal width in 1/d², d from each spot's "
            "observed position and the experiment geometry."
        ),
    }


def per_panel_figure(result: SpotSizeResult) -> dict:
    panels = result.by_panel
    return {
        "data": [
            {
                "type": "bar",
                "x": [e["panel"] for e in panels],
                "y": [e["median"] for e in panels],
                "text": [f"n = {e['n']}" for e in panels],
                "name": "median",
            }
        ],
        "layout": {
            "title": {"text": "Median spot size per detector panel"},
            "xaxis": {"title": {"text": "Panel"}},
            "yaxis": {"title": {"text": "Spot size (pixels)"}},
        },
        "help": "Median spot size on each detector panel; a panel that stands out may be mis-positioned or mis-masked.",
    }


def figures(result: SpotSizeResult) -> dict[str, dict]:
    """Every figure that has data, by name (per panel only for multi-panel detectors)."""
    plots = {"spot_size_histogram": histogram_figure(result)}
    if result.by_image:
        plots["spot_size_per_image"] = per_image_figure(result)
    if result.by_resolution:
        plots["spot_size_per_resolution"] = per_resolution_figure(result)
    if len(result.by_panel) > 1:
        plots["spot_size_per_panel"] = per_panel_figure(result)
    return plots
