"""The PNG histogram (matplotlib, Agg: no display needed).

matplotlib is imported only here, lazily, and this program never loads compiled cctbx
modules, so the cctbx-base import-order trap (doc/dials_facts.md §7) cannot bite; a test runs both
import orders in subprocesses.

The PNG carries its numbers in a text chunk (key ``dials_spot_size_analysis``): the bin
centres and counts drawn, and where the axes lie in pixels, so a test can check that the
picture shows the JSON's histogram.
"""

from __future__ import annotations

import json
from typing import BinaryIO

from ..algorithms.mask_codes import describe
from ..algorithms.spot_sizes import SpotSizeResult
from .plots import selection_words

WIDTH_INCHES, HEIGHT_INCHES, DPI = 8.0, 5.0, 100
BAR_COLOUR = "#1f77b4"
METADATA_KEY = "dials_spot_size_analysis"


def histogram_png(
    result: SpotSizeResult, path: str | BinaryIO, log_scale: bool = False
) -> None:
    """Draw the histogram of ``result`` to ``path`` (800 x 500 pixels).

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).
    path : str or binary file
        The PNG file to write (overwritten), or a file open for writing bytes.
    log_scale : bool
        Draw the counts on a log axis (ignored where every count is 0).

    Returns
    -------
    None
        The picture carries its numbers as metadata (see :func:`read_png_metadata`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    histogram = result.histogram
    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    centres, counts = histogram.bin_centers, histogram.counts
    axes.bar(
        centres,
        counts,
        width=histogram.bin_width,
        color=BAR_COLOUR,
        edgecolor="none",
        align="center",
    )
    axes.set_xlim(histogram.data_min, histogram.data_max)
    if log_scale and counts.any():  # a log axis of nothing but zeros has no scale
        axes.set_yscale("log")
        axes.set_ylim(0.8, max(1, counts.max()) * 1.5)
    else:
        axes.set_ylim(0, max(1, counts.max()) * 1.05)
    code = describe(result.mask_code)
    axes.set_xlabel(f"Spot size ({code} pixels)")
    log_scale = log_scale and bool(counts.any())
    axes.set_ylabel("Number of reflections" + (" (log scale)" if log_scale else ""))
    counted = histogram.n_in_range + histogram.n_out_of_range
    axes.set_title(
        f"{counted} spots counted ({selection_words(result)}), mask {code}", fontsize=11
    )
    note = f"{histogram.n_out_of_range} out of range [{histogram.data_min:g}, {histogram.data_max:g}]"
    axes.text(
        0.99,
        0.97,
        note,
        transform=axes.transAxes,
        ha="right",
        va="top",
        fontsize=9,
        color="#555555",
    )
    figure.tight_layout()
    figure.canvas.draw()
    box = axes.get_window_extent()
    height = figure.bbox.height
    metadata = {
        "bin_centers": centres.tolist(),
        "counts": counts.tolist(),
        "n_out_of_range": histogram.n_out_of_range,
        "log_scale": log_scale,
        # Axes in image pixels (origin top left) and the data range they show.
        "axes_pixels": [box.x0, height - box.y1, box.x1, height - box.y0],
        "x_range": list(axes.get_xlim()),
        "y_range": list(axes.get_ylim()),
    }
    figure.savefig(
        path, format="png", dpi=DPI, metadata={METADATA_KEY: json.dumps(metadata)}
    )


def read_png_metadata(path) -> dict:
    """The numbers a PNG written by :func:`histogram_png` carries (its text chunk).

    Parameters
    ----------
    path : str or os.PathLike
        The PNG file.

    Returns
    -------
    dict
        ``bin_centers``, ``counts``, ``n_out_of_range``, ``log_scale``,
        ``axes_pixels``, ``x_range`` and ``y_range``.

    Raises
    ------
    ValueError
        Where the file is not a PNG or carries no such text chunk.
    """
    import struct
    import zlib

    with open(path, "rb") as handle:
        content = handle.read()
    if content[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    position = 8
    while position + 8 <= len(content):
        (length,) = struct.unpack(">I", content[position : position + 4])
        kind, data = (
            content[position + 4 : position + 8],
            content[position + 8 : position + 8 + length],
        )
        position += 12 + length
        if kind not in (b"tEXt", b"iTXt", b"zTXt"):
            continue
        key, _, value = data.partition(b"\x00")
        if key != METADATA_KEY.encode():
            continue
        if kind == b"zTXt":
            value = zlib.decompress(value[1:])
        elif (
            kind == b"iTXt"
        ):  # compression flag, method, language\0, translated keyword\0, text
            flag, value = value[0], value[2:].split(b"\x00", 2)[2]
            value = zlib.decompress(value) if flag else value
        return json.loads(value.decode("utf-8" if kind == b"iTXt" else "latin-1"))
    raise ValueError(f"{path} carries no {METADATA_KEY} metadata")
