"""Plotly figure dicts (``{"data", "layout", "help"}``), as DIALS reports and xia2 embed them.

Plain dicts: plotly itself is not needed to make them, only to draw them.
"""

from __future__ import annotations

import html
import math
import os

import numpy as np

from ..algorithms import advice
from ..algorithms.histogram import crowded_share, whole_pixel_counts
from ..algorithms.mask_codes import describe
from ..algorithms.profile_model import BLOCK_DEGREES
from ..algorithms.spot_sizes import SpotSizeResult


def selection_words(result: SpotSizeResult) -> str:
    """The rows counted, for a title: "flags indexed" only where every dataset required
    the same flags (``flags.require=Auto`` chooses per table: indexed rows where a table
    has them, all rows where it has none), else a pointer to the selection table, so
    that a title never claims a filter one table did not use.

    Parameters
    ----------
    result : SpotSizeResult
        The summary, with the flags each dataset required.

    Returns
    -------
    str
        E.g. ``"flags indexed"``, ``"all reflections"``.
    """
    choices = {tuple(sorted(dataset.require)) for dataset in result.datasets}
    if len(choices) > 1:
        return "flags per dataset, see the selection table"
    require = choices.pop() if choices else ()
    return f"flags {'+'.join(require)}" if require else "all reflections"


def histogram_figure(result: SpotSizeResult) -> dict:
    """The spot-size histogram as bars, opened on the populated bins so that a long
    empty tail does not squash them.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
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


def _per_dataset(entries: list[dict]) -> list[tuple[str, list[dict]]]:
    """Entries broken down by dataset (unrelated datasets), each named by its file."""
    parts: dict[str, list[dict]] = {}
    for entry in entries:
        parts.setdefault(entry["dataset"], []).append(entry)
    return [(os.path.basename(name) or name, part) for name, part in parts.items()]


def _panel_label(entry: dict):
    if "dataset" not in entry:
        return entry["panel"]
    return f"{os.path.basename(entry['dataset'])} panel {entry['panel']}"


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
    """Median and mean spot size per image, to show spots growing or shrinking through
    the scan.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
    images = [e["image"] for e in result.by_image]
    data = [
        _median_trace(images, result.by_image, "median"),
        {
            **_median_trace(images, result.by_image, "mean"),
            "y": [e["mean"] for e in result.by_image],
        },
    ]
    if result.by_image and "dataset" in result.by_image[0]:  # unrelated scans
        data = [
            _median_trace([e["image"] for e in part], part, f"median, {name}")
            for name, part in _per_dataset(result.by_image)
        ]
    return {
        "data": data,
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
    """Median and mean spot size per resolution shell, against 1/d² with d labels in Å.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
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
    """Median spot size per detector panel, to show a panel that stands out.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
    panels = result.by_panel
    return {
        "data": [
            {
                "type": "bar",
                "x": [_panel_label(e) for e in panels],
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


def whole_pixel_figure(result: SpotSizeResult) -> dict:
    """The sizes in whole pixels over the range they occupy, shown where the histogram's
    range crowds them into its first bins.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
    counts = whole_pixel_counts(result.spot_sizes.size)
    share = crowded_share(result.histogram)
    return {
        "data": [
            {
                "type": "bar",
                "x": list(range(len(counts))),
                "y": counts.tolist(),
                "name": "spots",
            }
        ],
        "layout": {
            "title": {"text": "Spot sizes in whole pixels"},
            "xaxis": {
                "title": {"text": f"Spot size ({describe(result.mask_code)} pixels)"}
            },
            "yaxis": {"title": {"text": "Number of reflections"}},
        },
        "help": (
            f"{100 * share:.0f}% of the spots fall into the first bins of the histogram "
            "above (its range is the DIALS tutorial's, made for bigger spots), so this "
            "shows their sizes one whole pixel at a time, up to the 99th percentile. "
            "data_max=Auto ends the histogram above at the largest spot."
        ),
    }


def figures(result: SpotSizeResult) -> dict[str, dict]:
    """Every figure that has data, by name (per panel only for multi-panel detectors;
    the spot-shape figures where shapes were measured).

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict of str to dict
        Plotly figure dicts, each with ``help``.
    """
    plots = {"spot_size_histogram": histogram_figure(result)}
    if crowded_share(result.histogram) is not None:
        plots["spot_size_whole_pixels"] = whole_pixel_figure(result)
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
    spot spans at least one image).

    Parameters
    ----------
    spot_shape : dict or None
        ``SpotSizeResult.spot_shape``; None or empty where no shape was summarised.

    Returns
    -------
    dict
        Per quantity name, its statistics, histogram and medians by shell and image.
    """
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
    subplot each in a grid.

    Parameters
    ----------
    result : SpotSizeResult
        The summary, with measured shapes (see :func:`measured_quantities`).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
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
    """Median footprint and images spanned per resolution shell.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
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
    """Median footprint and images spanned per image.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
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
    """Per-spot radial against tangential rms width, with the line y = x.

    Parameters
    ----------
    result : SpotSizeResult
        The summary, with per-spot widths in ``spot_sizes`` (pixels); at most
        MAX_SCATTER_POINTS spots are drawn.

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
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
    """Median radial and tangential rms widths per resolution shell.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        A plotly figure dict (``data``, ``layout``) with ``help``.
    """
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
    measured, e.g. sizes read from a column).

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict of str to dict
        Plotly figure dicts, each with ``help``; empty where no shape was measured.
    """
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


# -------------------------------------------------------------- profile model

PROFILE_PREFIX = "profile_model_"
ADVICE_PREFIX = "advice_"
MOST_PROFILE_EXPERIMENTS = 10  # drawn in a profile figure; the JSON holds them all
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
# sigma_m of an unresolved rocking curve, in image widths (algorithms/advice.py).
TRACKING_BAND = advice.TRACKING_SIGMA_M_IMAGES


def _experiment_names(entries: list[dict]) -> list[str]:
    """A short name per experiment for legends where there are several: the start of
    its identifier (as the tables above name it), else its place in the list."""
    if len(entries) == 1:
        return [""]
    return [
        f" ({str(entry.get('identifier') or '')[:8] or f'experiment {number}'})"
        for number, entry in enumerate(entries)
    ]


def _drawn_experiments(profile_model: dict) -> list[dict]:
    return (profile_model or {}).get("experiments", [])[:MOST_PROFILE_EXPERIMENTS]


def _block_trace(entry: dict, key: str, name: str, colour: str, axis: str) -> dict:
    blocks = entry["blocks"]
    return {
        "type": "scatter",
        "mode": "markers",
        "x": [(b["first_image"] + b["last_image"]) / 2 for b in blocks],
        "y": [b[key] for b in blocks],
        "error_x": {
            "type": "data",
            "array": [(b["last_image"] - b["first_image"] + 1) / 2 for b in blocks],
            "thickness": 1,
            "width": 0,
        },
        "text": [
            f"images {b['first_image']}-{b['last_image']}: "
            f"{b['n_reflections']} reflections"
            for b in blocks
        ],
        "hovertemplate": "%{text}<br>%{y:.4g} deg<extra></extra>",
        "name": name,
        "marker": {"color": colour, "size": 8},
        "yaxis": axis,
    }


def _overall_trace(entry: dict, key: str, name: str, colour: str, axis: str) -> dict:
    blocks = entry["blocks"]
    ends = [blocks[0]["first_image"] - 0.5, blocks[-1]["last_image"] + 0.5]
    return {
        "type": "scatter",
        "mode": "lines",
        "x": ends,
        "y": [entry[key], entry[key]],
        "name": name,
        "line": {"color": colour, "dash": "dash", "width": 1.5},
        "hovertemplate": f"{name}: %{{y:.4g}} deg<extra></extra>",
        "yaxis": axis,
    }


def _tracking_band(entries: list[dict]) -> tuple[list[dict], list[dict]]:
    """The sigma_m an unresolved rocking curve gives (0.2-0.6 image widths), shaded on
    the sigma_m axis and labelled, where every experiment drawn has the same image
    width; else nothing (shapes, annotations)."""
    widths = {
        round(e["sigma_m_deg"] / e["sigma_m_images"], 9)
        for e in entries
        if e.get("sigma_m_images")
    }
    if len(widths) != 1:
        return [], []
    width = widths.pop()
    low, high = TRACKING_BAND
    shape = {
        "type": "rect",
        "xref": "paper",
        "yref": "y2",
        "x0": 0,
        "x1": 1,
        "y0": low * width,
        "y1": high * width,
        "fillcolor": "#d62728",
        "opacity": 0.08,
        "line": {"width": 0},
        "layer": "below",
    }
    note = {
        "text": f"{low:g}-{high:g} image widths: the image width, if spots span one",
        "xref": "paper",
        "yref": "y2",
        "x": 0.01,
        "y": high * width,
        "xanchor": "left",
        "yanchor": "top",
        "showarrow": False,
        "font": {"size": 10, "color": "#a02020"},
    }
    return [shape], [note]


def profile_blocks_figure(profile_model: dict) -> dict:
    """sigma_b (top) and sigma_m (bottom) per block of images, each experiment's
    overall value a dashed line across its scan.

    Parameters
    ----------
    profile_model : dict
        ``AnalysisResult.profile_model`` (``algorithms.profile_model.combine_profiles``).

    Returns
    -------
    dict
        A plotly figure dict with ``help``; drift shows as points leaving the line.
    """
    entries = [e for e in _drawn_experiments(profile_model) if e.get("blocks")]
    band, note = _tracking_band(entries)
    data = []
    for entry, suffix, colour in zip(
        entries, _experiment_names(entries), _COLOURS * MOST_PROFILE_EXPERIMENTS
    ):
        for key, axis in (("sigma_b_deg", "y"), ("sigma_m_deg", "y2")):
            name = key.removesuffix("_deg")
            data.append(
                _block_trace(entry, key, f"{name} per block{suffix}", colour, axis)
            )
            data.append(
                _overall_trace(entry, key, f"{name} overall{suffix}", colour, axis)
            )
    return {
        "data": data,
        "layout": {
            "title": {"text": "sigma_b and sigma_m per block of images"},
            "xaxis": {"title": {"text": "Image number"}, "anchor": "y2"},
            "yaxis": {
                "title": {"text": "sigma_b (deg)"},
                "domain": [0.55, 1],
                "rangemode": "tozero",
            },
            "yaxis2": {
                "title": {"text": "sigma_m (deg)"},
                "domain": [0, 0.45],
                "rangemode": "tozero",
            },
            "shapes": band,
            "annotations": note,
            "legend": {"orientation": "h", "y": -0.2},
            "height": 560,
        },
        "help": (
            "The profile model's sigma_b (spread across the Ewald sphere: beam "
            "divergence) and sigma_m (spread along the rotation: mosaicity) computed "
            "as dials.integrate does, on the reference reflections of each block of "
            f"images ({BLOCK_DEGREES:g} degrees; a block with fewer "
            "than 20 reflections has none), drawn across the images the block covers; "
            "the dashed lines are the values for the whole scan, which dials.integrate "
            "uses. XDS reports the same two numbers per batch of images in "
            "INTEGRATE.LP. Points scattered about the lines are what a stable crystal "
            "gives; points that climb through the scan are a crystal that decays or "
            "moves. A sigma_m of many degrees (above 5) is no crystal: a wrong "
            "rotation axis or image width, or a poor indexing solution. A sigma_m "
            "inside the shaded band (0.2 to 0.6 image widths) with spots on one image "
            "measures the width of the image, not the crystal: the rocking curve is "
            "not resolved."
        ),
    }


_BOX_AXES = (("x (px)", "y (px)"), ("z (images)",))


def _box_traces(name: str, values, colour: str, pattern: str) -> list:
    """One bar series split over the pixel subplot (x, y) and the images one (z)."""
    xy, z = _BOX_AXES
    style = {"color": colour, "pattern": {"shape": pattern}}
    return [
        {
            "type": "bar",
            "x": list(xy),
            "y": [values[0], values[1]],
            "name": name,
            "legendgroup": name,
            "marker": style,
            "hovertemplate": f"{name}, %{{x}}: %{{y}}<extra></extra>",
        },
        {
            "type": "bar",
            "x": list(z),
            "y": [values[2]],
            "name": name,
            "legendgroup": name,
            "showlegend": False,
            "marker": style,
            "xaxis": "x2",
            "yaxis": "y2",
            "hovertemplate": f"{name}, %{{x}}: %{{y}}<extra></extra>",
        },
    ]


def _has_boxes(entry: dict) -> bool:
    """Whether a model sized any box (not where every box is off the detector)."""
    return bool((entry.get("shoebox") or {}).get("median_size_px"))


def profile_box_figure(profile_model: dict, spot_shape: dict | None) -> dict:
    """The model's integration box (median and largest, x and y in pixels, z in
    images) beside the extents of the spots found (median and 95th percentile).

    Parameters
    ----------
    profile_model : dict
        ``AnalysisResult.profile_model``.
    spot_shape : dict or None
        The shape summary (``SpotSizeResult.spot_shape``): the spots' extents.

    Returns
    -------
    dict
        A plotly figure dict with ``help``.
    """
    entries = [e for e in _drawn_experiments(profile_model) if _has_boxes(e)]
    data = []
    for entry, suffix, colour in zip(
        entries, _experiment_names(entries), _COLOURS * MOST_PROFILE_EXPERIMENTS
    ):
        shoebox = entry["shoebox"]
        data += _box_traces(
            f"box, median{suffix}", shoebox["median_size_px"], colour, ""
        )
        data += _box_traces(
            f"box, largest{suffix}", shoebox["max_size_px"], colour, "/"
        )
    quantities = measured_quantities(spot_shape)
    if quantities:
        extents = [quantities[f"extent_{axis}"]["statistics"] for axis in "xyz"]
        for key, name, colour in (
            ("median", "spots, median", "#7f7f7f"),
            ("p95", "spots, 95th percentile", "#bcbd22"),
        ):
            data += _box_traces(name, [s[key] for s in extents], colour, "")
    return {
        "data": data,
        "layout": {
            "title": {"text": "Integration box against the spots found"},
            "barmode": "group",
            "xaxis": {"domain": [0, 0.62], "title": {"text": "across the detector"}},
            "yaxis": {"title": {"text": "pixels"}, "rangemode": "tozero"},
            "xaxis2": {
                "domain": [0.74, 1],
                "anchor": "y2",
                "title": {"text": "along the rotation"},
            },
            "yaxis2": {
                "title": {"text": "images"},
                "anchor": "x2",
                "rangemode": "tozero",
            },
            "legend": {"orientation": "h", "y": -0.2},
        },
        "help": (
            "The shoebox dials.integrate would give each reference reflection "
            "(n_sigma sigma_b across the detector, doubled, and n_sigma sigma_m "
            "along the rotation: gaussian_rs compute_bbox), median and largest, "
            "beside the extents of the spots found by the threshold, median and "
            "95th percentile (the spot-shape table's extent_x, extent_y, extent_z, "
            "over the spots of every table). "
            "The box should be a few times the spots: threshold-found extents miss "
            "a profile's weak tails, and the background is measured around the "
            "peak. A box many times the spots (more than 4 times the 95th "
            "percentile) takes memory in proportion and swallows neighbouring "
            "spots; it usually comes from an inflated sigma_m, a box of many images "
            "round spots that span one or two."
        ),
    }


def profile_figures(profile_model: dict, spot_shape: dict | None) -> dict[str, dict]:
    """The profile-model figures that have data, by name: the blocks (rotation models)
    and the box (where a box was computed; not for a pre-indexing estimate).

    Parameters
    ----------
    profile_model : dict
        ``AnalysisResult.profile_model`` (``algorithms.profile_model.combine_profiles``);
        None or empty gives no figures.
    spot_shape : dict or None
        ``SpotSizeResult.spot_shape``, for the spots' own extents beside the box.

    Returns
    -------
    dict of str to dict
        Plotly figure dicts, each with ``help``.
    """
    entries = _drawn_experiments(profile_model)
    plots = {}
    if any(e.get("blocks") for e in entries):
        plots[f"{PROFILE_PREFIX}blocks"] = profile_blocks_figure(profile_model)
    if any(_has_boxes(e) for e in entries):
        plots[f"{PROFILE_PREFIX}box"] = profile_box_figure(profile_model, spot_shape)
    return plots


# --------------------------------------------------------------------- advice

LIMIT_HELP = {
    advice.MAX_SPOT_SIZE: (
        "How many spots have each size (coded pixels over every image the spot "
        "touches) in the top 30% below spotfinder.filter.max_spot_size, the red line; "
        "dials.find_spots drops every spot above it before anything else. The shaded "
        "band is the top 10% of the cap. A tail that thins out before the band is "
        "what the default serves. A pile-up in the band (bars that rise towards the "
        "line) or a tail still high there means the cap is cutting off real spots: "
        "large spots from a big, mosaic or low-resolution crystal, or spots spread "
        "over many images by a fine rotation step; raise the cap. An empty graph "
        "means no spot comes near the cap."
    ),
    advice.MAX_SEPARATION: (
        "How many spots have each distance from their brightest pixel to their "
        "centroid (pixels, z in images) in the last pixel below "
        "spotfinder.filter.max_separation, the red line; dials.find_spots drops every "
        "spot beyond it. The shaded band is the last quarter pixel. A compact spot's "
        "peak lies within about 0.9 px of its centroid, so the bars should fall "
        "towards the line. Split spots (a cracked or twinned crystal, satellites) "
        "and streaks have their brightest pixel far from the centroid: they pile up "
        "in the band, and beyond it they are lost from indexing; allow a larger "
        "separation."
    ),
    advice.MIN_SPOT_SIZE: (
        "How many spots have each size (coded pixels over all images) from "
        "spotfinder.filter.min_spot_size, the red line, up; dials.find_spots drops "
        "every smaller spot as noise (3 px for pixel-array detectors, 6 px for "
        "others, by default). The shaded band is the limit and one pixel more. A "
        "pile-up of 1-2 px noise spots at the limit is normal. With weak data, where "
        "the median spot is within a pixel of the limit, the cut lies in the bulk of "
        "the real spots and throws weak high-resolution reflections away with the "
        "noise: a limit one pixel lower keeps them."
    ),
}


def _bins_in_band(histogram: dict) -> tuple[int, int]:
    """First and last bin whose centre lies in the check's band (the spots it
    counts as near the limit)."""
    edges, (low, high) = histogram["edges"], histogram["band"]
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    inside = [i for i, c in enumerate(centres) if low <= c <= high]
    return (inside[0], inside[-1]) if inside else (0, -1)


def _limit_title(check: dict) -> str:
    short = check["parameter"].rsplit(".", 1)[-1]
    value = "unknown" if check["value"] is None else f"{check['value']:g}"
    if check["change_called_for"]:
        verdict = "a change is called for"
    elif not check.get("judged", True):
        verdict = "these spots cannot judge it (see the reasons)"
    elif check["reasons"]:
        verdict = "no change (see the reasons)"
    else:
        verdict = "no change needed"
    return (
        f"{short} = {value}: {verdict} ({check['n_near']} of {check['n_spots']} spots "
        f"in the band)"
    )


def _limit_notes(check: dict) -> list[dict]:
    """Where the limit's value came from, the check's reasons, and what an empty
    graph means, written in the top left corner."""
    lines = [f"value: {check['source']}"]
    lines += check["reasons"]
    if not sum(check["histogram"]["counts"]):
        largest = (check.get("over_images") or {}).get("max_size")
        lines.append(
            "no spot in this range"
            + ("" if largest is None else f": the largest is {largest:g} px")
        )
    return [
        {
            "text": "<br>".join(html.escape(line) for line in lines),
            "xref": "paper",
            "yref": "paper",
            "x": 0.01,
            "y": 0.99,
            "xanchor": "left",
            "yanchor": "top",
            "align": "left",
            "showarrow": False,
            "bgcolor": "rgba(255, 255, 255, 0.8)",
            "font": {"size": 11},
        }
    ]


def limit_figure(check: dict) -> dict:
    """The spots near one spot-finding limit: the check's histogram as bars, the limit
    a vertical line, the band the check counts shaded, titled with the verdict.

    Parameters
    ----------
    check : dict
        A result of ``advice.check_min_spot_size``, ``check_max_spot_size`` or
        ``check_max_separation``.

    Returns
    -------
    dict
        A plotly figure dict with ``help``.
    """
    histogram = check["histogram"]
    edges, counts = histogram["edges"], histogram["counts"]
    first, last = _bins_in_band(histogram)
    top = max(max(counts, default=0), 1) * 1.1
    quantity = (
        "Peak to centroid distance (px; z in images)"
        if check["parameter"] == advice.MAX_SEPARATION
        else "Spot size (pixels over all images)"
    )
    data = [
        {
            "type": "bar",
            "x": [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])],
            "y": counts,
            "width": [b - a for a, b in zip(edges[:-1], edges[1:])],
            "name": "spots",
            "marker": {"color": "#1f77b4"},
            "hovertemplate": "%{x}: %{y} spots<extra></extra>",
        }
    ]
    if check["value"] is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": [histogram["limit"], histogram["limit"]],
                "y": [0, top],
                "name": f"limit {histogram['limit']:g}",
                "line": {"color": "#d62728", "width": 2},
                "hoverinfo": "skip",
            }
        )
    shapes = []
    if last >= first:
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": edges[first],
                "x1": edges[last + 1],
                "y0": 0,
                "y1": 1,
                "fillcolor": "#d62728",
                "opacity": 0.12,
                "line": {"width": 0},
                "layer": "below",
            }
        )
    return {
        "data": data,
        "layout": {
            "title": {"text": _limit_title(check)},
            "annotations": _limit_notes(check),
            "xaxis": {
                "title": {"text": quantity},
                "range": [edges[0], edges[-1] + (edges[-1] - edges[0]) * 0.03],
            },
            "yaxis": {"title": {"text": "Number of spots"}, "range": [0, top]},
            "bargap": 0.05,
            "shapes": shapes,
            "legend": {"orientation": "h", "y": -0.2},
        },
        "help": LIMIT_HELP.get(check["parameter"], ""),
    }


def advice_figures(found: dict) -> dict[str, dict]:
    """One figure per spot-finding limit checked, by name (``advice_`` and the
    parameter's last word), from ``AnalysisResult.advice``.

    Parameters
    ----------
    found : dict
        ``AnalysisResult.advice`` (``algorithms.advice.advise``); None gives no figures.

    Returns
    -------
    dict of str to dict
        Plotly figure dicts (see :func:`limit_figure`).
    """
    plots = {}
    for check in (found or {}).get("checks", []):
        if "histogram" in check and "parameter" in check:
            name = check["parameter"].rsplit(".", 1)[-1]
            plots[f"{ADVICE_PREFIX}{name}"] = limit_figure(check)
    return plots


def report_figures(analysis) -> dict[str, dict]:
    """Every figure of a run, by name, in the order of the report: sizes and shapes
    (:func:`figures`), the profile model, the spot-finding limits.

    Parameters
    ----------
    analysis : AnalysisResult
        The whole run (``algorithms.result.AnalysisResult``).
    """
    return {
        **figures(analysis.result),
        **profile_figures(analysis.profile_model, analysis.result.spot_shape),
        **advice_figures(analysis.advice),
    }
