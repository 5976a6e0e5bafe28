"""Plotly figure dicts (``{"data", "layout", "help"}``), as DIALS reports and xia2 embed them.

Plain dicts: plotly itself is not needed to make them, only to draw them.
"""

from __future__ import annotations

import math

import numpy as np

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
    """Every figure that has data, by name (per panel only for multi-panel detectors;
    the spot-shape figures where shapes were measured)."""
    plots = {"spot_size_histogram": histogram_figure(result)}
    if result.by_image:
        plots["spot_size_per_image"] = per_image_figure(result)
    if result.by_resolution:
        plots["spot_size_per_resolution"] = per_resolution_figure(result)
    if len(result.by_panel) > 1:
        plots["spot_size_per_panel"] = per_panel_figure(result)
    plots.update(shape_figures(result))
    return plots


# ------------------------------------------------------------------ spot shape

SHAPE_HISTOGRAMS = (
    ("extent_z", "Images spanned (extent_z)"),
    ("footprint", "Most pixels on one image (footprint)"),
    ("extent_x", "Pixel columns spanned (extent_x)"),
    ("extent_y", "Pixel rows spanned (extent_y)"),
    ("fill", "Pixels / bounding box (fill)"),
    ("elongation", "Long / short rms width (elongation)"),
    ("peak_centroid_distance", "Peak to centroid (peak_centroid_distance)"),
)
SHAPE_COLUMNS = 3
MAX_SCATTER_POINTS = 5000
DIALS_MAX_SEPARATION = 2.0  # spotfinder.filter.max_separation (doc/dials_facts.md §9)
_SECOND_COLOUR = "#ff7f0e"


def measured_quantities(spot_shape: dict | None) -> dict:
    """A shape summary's quantities, or {} where no spot's shape was measured: no
    counted spot, or sizes read from a column (rows of extent 0, as every measured
    spot spans at least one image)."""
    quantities = (spot_shape or {}).get("quantities")
    if not quantities or not (quantities["extent_z"]["statistics"]["max"] or 0) > 0:
        return {}
    return quantities


def _quantities(result: SpotSizeResult) -> dict:
    return measured_quantities(result.spot_shape)


def _axis_suffix(number: int) -> str:
    return "" if number == 1 else str(number)


def _histogram_trace(entry: dict, number: int, name: str) -> dict:
    histogram = entry["histogram"]
    unit = f" {entry['unit']}" if entry["unit"] else ""
    return {
        "type": "bar",
        "x": histogram["bin_centres"],
        "y": histogram["counts"],
        "width": histogram["bin_width"],
        "name": name,
        "marker": {"color": "#1f77b4"},
        "showlegend": False,
        "xaxis": f"x{_axis_suffix(number)}",
        "yaxis": f"y{_axis_suffix(number)}",
        "hovertemplate": f"{name} %{{x}}{unit}: %{{y}} spots<extra></extra>",
    }


def _populated_range(histogram: dict) -> list[float]:
    """From the first bin's lower edge to two bins past the last filled one."""
    counts = histogram["counts"]
    filled = [i for i, count in enumerate(counts) if count]
    last = (filled[-1] if filled else len(counts) - 1) + 2
    return [
        histogram["data_min"],
        histogram["data_min"] + min(last, len(counts)) * histogram["bin_width"],
    ]


def shape_histograms_figure(result: SpotSizeResult) -> dict:
    """Histograms of the shape quantities (from the summary's own histograms), one
    subplot each in a grid."""
    quantities = _quantities(result)
    rows = -(-len(SHAPE_HISTOGRAMS) // SHAPE_COLUMNS)
    data, layout = [], {}
    for number, (name, title) in enumerate(SHAPE_HISTOGRAMS, start=1):
        entry = quantities[name]
        data.append(_histogram_trace(entry, number, name))
        suffix = _axis_suffix(number)
        unit = f" ({entry['unit']})" if entry["unit"] else ""
        layout[f"xaxis{suffix}"] = {
            "title": {"text": f"{title}{unit}", "font": {"size": 11}},
            "range": _populated_range(entry["histogram"]),
        }
        layout[f"yaxis{suffix}"] = {"title": {"text": "spots", "font": {"size": 11}}}
    names = [name for name, _ in SHAPE_HISTOGRAMS]
    suffix = _axis_suffix(names.index("peak_centroid_distance") + 1)
    layout.update(
        {
            "title": {"text": "Spot shape distributions"},
            "grid": {"rows": rows, "columns": SHAPE_COLUMNS, "pattern": "independent"},
            "height": 300 * rows,
            "bargap": 0,
            "shapes": [
                {
                    "type": "line",
                    "xref": f"x{suffix}",
                    "yref": f"y{suffix} domain",
                    "x0": DIALS_MAX_SEPARATION,
                    "x1": DIALS_MAX_SEPARATION,
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": "#d62728", "dash": "dash", "width": 1},
                }
            ],
        }
    )
    return {
        "data": data,
        "layout": layout,
        "help": (
            "How many counted spots have each value of a shape quantity, measured on the "
            "coded pixels of each shoebox (doc/spot_shapes.md). Compact spots span one to "
            "three images, fill most of their bounding box (fill near 1) and are round "
            "(elongation near 1). A tail of spots spanning many images points to a large "
            "mosaicity or a fine rotation step; a low fill to split or ring-shaped spots; "
            "a large elongation to streaks; a peak-to-centroid distance beyond the dashed "
            "line at 2 px (DIALS's spotfinder.filter.max_separation) to split spots or "
            "satellites. Integer quantities have one bin per whole pixel or image."
        ),
    }


def _shell_labels(result: SpotSizeResult, entries: list[dict]) -> list[str]:
    """Each shell's d range, as the log's resolution table writes it."""
    ranges = {
        e["shell"]: f"{e['d_max']:.2f} - {e['d_min']:.2f}" for e in result.by_resolution
    }
    return [ranges.get(e["shell"], f"shell {e['shell']}") for e in entries]


def _two_medians(x, first: list[dict], second: list[dict], names) -> list[dict]:
    """Median traces of two quantities, the second on the right-hand axis."""
    return [
        _median_trace(x, first, names[0]),
        {
            **_median_trace(x, second, names[1]),
            "yaxis": "y2",
            "line": {"color": _SECOND_COLOUR, "dash": "dot"},
            "marker": {"color": _SECOND_COLOUR},
        },
    ]


def _footprint_and_images_layout(title: str, xaxis: dict) -> dict:
    return {
        "title": {"text": title},
        "xaxis": xaxis,
        "yaxis": {
            "title": {"text": "Median footprint (px on one image)"},
            "rangemode": "tozero",
        },
        "yaxis2": {
            "title": {"text": "Median images spanned"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "tickmode": "auto",
            "showgrid": False,
        },
        "legend": {"orientation": "h", "y": -0.2},
    }


def shape_per_resolution_figure(result: SpotSizeResult) -> dict:
    """Median footprint and images spanned per resolution shell."""
    quantities = _quantities(result)
    footprint = quantities["footprint"]["median_by_shell"]
    spanned = quantities["extent_z"]["median_by_shell"]
    return {
        "data": _two_medians(
            _shell_labels(result, footprint),
            footprint,
            spanned,
            ("footprint", "images spanned"),
        ),
        "layout": _footprint_and_images_layout(
            "Spot footprint and images spanned against resolution",
            {"title": {"text": "Resolution shell, d (Å)"}, "type": "category"},
        ),
        "help": (
            "Median footprint (the most coded pixels of a spot on any one image) and "
            "median number of images a spot spans, in the resolution shells of the size "
            "plot. Spots usually grow a little at low resolution, and at high resolution "
            "in the rotation direction (the Lorentz effect). A footprint that rises "
            "steeply with resolution points to a spread of wavelengths or a detector "
            "distance or beam centre that is off; images spanned that rise steeply, to "
            "a large mosaicity."
        ),
    }


def shape_per_image_figure(result: SpotSizeResult) -> dict:
    """Median footprint and images spanned per image."""
    quantities = _quantities(result)
    footprint = quantities["footprint"]["median_by_image"]
    spanned = quantities["extent_z"]["median_by_image"]
    return {
        "data": _two_medians(
            [e["image"] for e in footprint],
            footprint,
            spanned,
            ("footprint", "images spanned"),
        ),
        "layout": _footprint_and_images_layout(
            "Spot footprint and images spanned against image",
            {"title": {"text": "Image number"}},
        ),
        "help": (
            "Median footprint and median number of images spanned of the spots whose "
            "observed centroid lies on each image. Flat lines are what a stable "
            "experiment gives. A footprint that grows through the scan can mean "
            "radiation damage or a crystal moving out of the beam; images spanned that "
            "change with the rotation angle, an anisotropic mosaic spread; a jump, a "
            "change of beam or detector."
        ),
    }


def _scatter_sample(radial: np.ndarray, tangential: np.ndarray) -> np.ndarray:
    """Row numbers of at most MAX_SCATTER_POINTS spots with both widths, evenly spread
    over the table order (the same rows every run)."""
    rows = np.flatnonzero(np.isfinite(radial) & np.isfinite(tangential))
    if rows.size > MAX_SCATTER_POINTS:
        rows = rows[np.linspace(0, rows.size - 1, MAX_SCATTER_POINTS).astype(np.int64)]
    return rows


def radial_tangential_figure(result: SpotSizeResult) -> dict:
    """Per-spot radial against tangential rms width, with the line y = x."""
    spots = result.spot_sizes
    radial = np.asarray(spots.rms_width_radial, dtype=np.float64)
    tangential = np.asarray(spots.rms_width_tangential, dtype=np.float64)
    rows = _scatter_sample(radial, tangential)
    top = float(max(radial[rows].max(), tangential[rows].max())) if rows.size else 1.0
    top = math.ceil(top * 1.05 * 10) / 10
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": [round(v, 4) for v in tangential[rows].tolist()],
                "y": [round(v, 4) for v in radial[rows].tolist()],
                "name": "spots",
                "marker": {"size": 4, "opacity": 0.4, "color": "#1f77b4"},
                "hovertemplate": "tangential %{x} px, radial %{y} px<extra></extra>",
            },
            {
                "type": "scatter",
                "mode": "lines",
                "x": [0, top],
                "y": [0, top],
                "name": "radial = tangential",
                "line": {"color": "#555555", "dash": "dash", "width": 1},
                "hoverinfo": "skip",
            },
        ],
        "layout": {
            "title": {
                "text": f"Radial against tangential rms width ({rows.size} of "
                f"{len(spots)} spots)"
            },
            "xaxis": {
                "title": {"text": "Tangential rms width (px)"},
                "range": [0, top],
            },
            "yaxis": {
                "title": {"text": "Radial rms width (px)"},
                "range": [0, top],
            },
            "legend": {"orientation": "h", "y": -0.2},
        },
        "help": (
            "Each spot's rms width along the line from the beam centre (radial) against "
            "its width across it (tangential), in pixels, from the data-weighted coded "
            "pixels; at most 5000 spots, spread evenly through the table. Round spots "
            "lie along the dashed line. Spots well above it are drawn out radially: a "
            "spread of wavelengths (pink beam, a wide bandwidth monochromator) makes "
            "radial streaks that lengthen with resolution, and a detector tilted from "
            "what the geometry says stretches spots radially on one side. Spots below "
            "it are drawn out across the radius, as rotation and mosaic spread do."
        ),
    }


def widths_per_resolution_figure(result: SpotSizeResult) -> dict:
    """Median radial and tangential rms widths per resolution shell."""
    quantities = _quantities(result)
    radial = quantities["rms_width_radial"]["median_by_shell"]
    tangential = quantities["rms_width_tangential"]["median_by_shell"]
    return {
        "data": [
            _median_trace(_shell_labels(result, radial), radial, "radial"),
            {
                **_median_trace(
                    _shell_labels(result, tangential), tangential, "tangential"
                ),
                "line": {"color": _SECOND_COLOUR, "dash": "dot"},
                "marker": {"color": _SECOND_COLOUR},
            },
        ],
        "layout": {
            "title": {"text": "Radial and tangential rms widths against resolution"},
            "xaxis": {"title": {"text": "Resolution shell, d (Å)"}, "type": "category"},
            "yaxis": {
                "title": {"text": "Median rms width (px)"},
                "rangemode": "tozero",
            },
            "legend": {"orientation": "h", "y": -0.2},
        },
        "help": (
            "Median radial and tangential rms widths in each resolution shell. The two "
            "lines lie together for round spots. A radial width that pulls away from "
            "the tangential one towards high resolution is the mark of a spread of "
            "wavelengths; a gap that is there at every resolution, of a detector "
            "geometry that is off or of a beam that is not round."
        ),
    }


def shape_figures(result: SpotSizeResult) -> dict[str, dict]:
    """The spot-shape figures that have data, by name (none where no spot's shape was
    measured, e.g. sizes read from a column)."""
    quantities = _quantities(result)
    if not quantities:
        return {}
    plots = {"spot_shape_histograms": shape_histograms_figure(result)}
    if quantities["footprint"]["median_by_shell"] and result.by_resolution:
        plots["spot_shape_per_resolution"] = shape_per_resolution_figure(result)
    if quantities["footprint"]["median_by_image"]:
        plots["spot_shape_per_image"] = shape_per_image_figure(result)
    if quantities["rms_width_radial"]["statistics"]["n"]:
        plots["spot_shape_radial_tangential"] = radial_tangential_figure(result)
        if quantities["rms_width_radial"]["median_by_shell"]:
            plots["spot_shape_widths_per_resolution"] = widths_per_resolution_figure(
                result
            )
    return plots
