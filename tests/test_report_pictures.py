"""The PNG plot and the self-contained HTML report, checked as a person would see them."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib

import numpy as np
import pytest
from conftest import REPOSITORY

from dials_spot_size_analysis.command_line.spot_size_analysis import run
from dials_spot_size_analysis.report.png import BAR_COLOUR, read_png_metadata

EXAMPLE = REPOSITORY / "examples" / "data"
EXAMPLE_ARGS = [str(EXAMPLE / "indexed.expt"), str(EXAMPLE / "indexed.refl")]
SHAPE_FIGURES = (
    "spot_shape_histograms",
    "spot_shape_per_resolution",
    "spot_shape_per_image",
    "spot_shape_radial_tangential",
    "spot_shape_widths_per_resolution",
)


def png_chunks(path) -> dict[bytes, list[bytes]]:
    content = path.read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks: dict[bytes, list[bytes]] = {}
    position = 8
    while position < len(content):
        (length,) = struct.unpack(">I", content[position : position + 4])
        kind = content[position + 4 : position + 8]
        data = content[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(
            ">I", content[position + 8 + length : position + 12 + length]
        )
        assert crc == zlib.crc32(kind + data), f"bad CRC in {kind!r}"
        chunks.setdefault(kind, []).append(data)
        position += 12 + length
    assert b"IEND" in chunks
    return chunks


def png_metadata(path) -> dict:
    png_chunks(path)  # a valid PNG, every CRC right
    return read_png_metadata(path)


@pytest.fixture
def png_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run([*EXAMPLE_ARGS, "output.plot=spots.png", "bins=50", "data_max=300"])
    return tmp_path, result


def test_png_is_a_valid_image_of_the_expected_size(png_run):
    folder, _ = png_run
    width, height, depth, colour = struct.unpack(
        ">IIBB", png_chunks(folder / "spots.png")[b"IHDR"][0][:10]
    )
    assert (width, height) == (800, 500) and depth == 8


def test_png_shows_the_json_histogram(png_run):
    """The numbers in the PNG equal the JSON's, and so do the bars drawn: each bar's top,
    read back from the pixels, sits at its count."""
    matplotlib_image = pytest.importorskip("matplotlib.image")
    folder, _ = png_run
    document = json.loads((folder / "dials.spot_size_analysis.json").read_text())
    metadata = png_metadata(folder / "spots.png")
    assert metadata["counts"] == document["histogram"]["counts"]
    assert metadata["bin_centers"] == document["histogram"]["bin_centers"]
    pixels = (
        (matplotlib_image.imread(folder / "spots.png")[:, :, :3] * 255)
        .round()
        .astype(int)
    )
    bar = np.array([int(BAR_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])
    is_bar = (np.abs(pixels - bar) <= 2).all(axis=2)
    x0, y0, x1, y1 = metadata["axes_pixels"]
    (xmin, xmax), (ymin, ymax) = metadata["x_range"], metadata["y_range"]
    per_pixel = (ymax - ymin) / (y1 - y0)
    for centre, count in zip(metadata["bin_centers"], metadata["counts"]):
        column = int(round(x0 + (centre - xmin) / (xmax - xmin) * (x1 - x0)))
        rows = np.flatnonzero(is_bar[int(y0) : int(y1) + 1, column])
        if count == 0:
            assert rows.size == 0, centre
            continue
        top = int(y0) + rows.min()
        drawn = ymin + (y1 - top) * per_pixel
        assert abs(drawn - count) <= 1.5 * per_pixel, (centre, count, drawn)


def test_png_log_scale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run([*EXAMPLE_ARGS, "output.plot=log.png", "plot_log_scale=True"])
    assert png_metadata(tmp_path / "log.png")["log_scale"] is True


def test_cctbx_import_order_trap_does_not_bite(tmp_path):
    """matplotlib (PNG) loaded before or after compiled cctbx modules: both orders work,
    because this program never loads compiled cctbx itself (doc/dials_facts.md §7)."""
    for first in ("import matplotlib.pyplot", "from scitbx.array_family import flex"):
        script = textwrap.dedent(
            f"""
            {first}
            from dials_spot_size_analysis.command_line.spot_size_analysis import run
            run({EXAMPLE_ARGS!r} + ["output.plot=order.png", "output.html=None"])
            import sys
            print("cctbx compiled modules loaded by us:", "scitbx_array_family_flex_ext" in sys.modules and "{first}".startswith("import"))
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (first, result.returncode, result.stderr[-2000:])
        assert "loaded by us: False" in result.stdout


# ---------------------------------------------------------------------------- HTML


def test_html_is_self_contained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(EXAMPLE_ARGS)
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    from html.parser import HTMLParser

    class ExternalReferences(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found, self.scripts = [], 0

        def handle_starttag(self, tag, attrs):
            self.scripts += tag == "script"
            self.found += [
                f"{tag} {name}={value}"
                for name, value in attrs
                if name in ("src", "href")
            ]

    parser = ExternalReferences()
    parser.feed(page)
    assert (
        parser.found == [] and parser.scripts == 2
    )  # plotly.js inline, then the figures
    assert "plotly.js v" in page
    # histogram, per image, per resolution (one panel: no per-panel plot), and the five
    # shape figures
    assert page.count('class="plot"') == 3 + len(SHAPE_FIGURES)
    assert "without pixel data" in page and "Parameters" in page


def chromium_driver():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed"
    )
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip(
            "headless Chromium not found (Debian packages chromium and chromium-driver; .ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={tempfile.mkdtemp()}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(
        service=Service(executable_path=chromedriver), options=options
    )


@pytest.mark.parametrize("dataset", ["example", "multi-panel"])
def test_html_draws_every_graph_offline_in_chromium(
    tmp_path, monkeypatch, request, dataset
):
    monkeypatch.chdir(tmp_path)
    if dataset == "example":
        run(EXAMPLE_ARGS)
        expected = 3 + len(SHAPE_FIGURES)
    else:
        shared_data = request.getfixturevalue(
            "shared_data"
        )  # skips, saying why, without ../shared/data
        run(
            [
                str(shared_data / "I23_P12M_thau/indexed.expt"),
                str(shared_data / "I23_P12M_thau/indexed.refl"),
            ]
        )
        expected = 4 + len(SHAPE_FIGURES)
    driver = chromium_driver()
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {
                "offline": True,
                "latency": 0,
                "downloadThroughput": 0,
                "uploadThroughput": 0,
            },
        )
        driver.get((tmp_path / "dials.spot_size_analysis.html").as_uri())
        graphs = driver.execute_script(
            """
            return [...document.querySelectorAll('div.plot')].map(d => ({
              id: d.id,
              svg: d.querySelectorAll('svg.main-svg').length,
              bars: d.querySelectorAll('g.trace.bars path').length,
              lines: d.querySelectorAll('g.trace.scatter path.js-line').length,
            }));
            """
        )
        events = [
            json.loads(entry["message"])["message"]
            for entry in driver.get_log("performance")
        ]
        requests = [
            (event["params"].get("documentURL", ""), event["params"]["request"]["url"])
            for event in events
            if event["method"] == "Network.requestWillBeSent"
        ]
    finally:
        driver.quit()
    assert len(graphs) == expected
    for graph in graphs:
        assert graph["svg"] > 0, graph
        assert graph["bars"] > 0 or graph["lines"] > 0, graph
    histogram = next(g for g in graphs if g["id"] == "spot_size_histogram")
    assert histogram["bars"] > 5
    page_requests = [url for document, url in requests if document.startswith("file:")]
    assert page_requests and all(
        url.startswith(("file:", "data:")) for url in page_requests
    ), page_requests
    assert not [
        url for _, url in requests if url.startswith(("http:", "https:", "ws:", "wss:"))
    ], requests


# ---------------------------------------------------------------------- what is drawn

REAL_TABLES = {
    "centroid": ("centroid_test_data/indexed.expt", "centroid_test_data/indexed.refl"),
    "multi-panel": ("I23_P12M_thau/indexed.expt", "I23_P12M_thau/indexed.refl"),
    "stills": ("ssx_CuNiR/indexed.expt", "ssx_CuNiR/indexed.refl"),
}


@pytest.fixture(params=["example", *REAL_TABLES])
def analysed(request, tmp_path, monkeypatch):
    """A run on the example or on real DIALS files (no outputs written)."""
    from dials_spot_size_analysis.api import analyse

    if request.param == "example":
        return analyse(EXAMPLE / "indexed.refl", EXAMPLE / "indexed.expt")
    shared_data = request.getfixturevalue("shared_data")
    expt, refl = REAL_TABLES[request.param]
    return analyse(shared_data / refl, shared_data / expt)


def _by_name(figure: dict) -> dict:
    return {trace["name"]: trace for trace in figure["data"]}


def test_size_figures_draw_the_median(analysed):
    """The per-image, per-resolution and per-panel traces called median are the median
    of the counted sizes in each group, computed here from the per-row sizes."""
    from dials_spot_size_analysis.report.plots import (
        per_image_figure,
        per_panel_figure,
        per_resolution_figure,
    )

    result = analysed.result
    spots = result.spot_sizes
    by_image = _by_name(per_image_figure(result))
    for image, median, mean in zip(
        by_image["median"]["x"], by_image["median"]["y"], by_image["mean"]["y"]
    ):
        sizes = spots.size[spots.image == image]
        assert median == np.median(sizes) and mean == pytest.approx(sizes.mean())
    panel = per_panel_figure(result)["data"][0]
    for number, median in zip(panel["x"], panel["y"]):
        assert median == np.median(spots.size[spots.panel == number])
    assert _by_name(per_resolution_figure(result))["median"]["y"] == [
        e["median"] for e in result.by_resolution
    ]


def test_median_differs_from_mean_where_checked(shared_data):
    """The data above tell a median from a mean (else a figure drawing the mean would
    pass): on the multi-panel table, per panel and per image."""
    from dials_spot_size_analysis.api import analyse

    expt, refl = REAL_TABLES["multi-panel"]
    result = analyse(shared_data / refl, shared_data / expt).result
    assert any(e["median"] != e["mean"] for e in result.by_panel)
    assert any(e["median"] != e["mean"] for e in result.by_image)


def test_shape_histograms_show_the_summary(analysed):
    from dials_spot_size_analysis.report.plots import (
        SHAPE_HISTOGRAMS,
        shape_histograms_figure,
    )

    summary = analysed.result.spot_shape["quantities"]
    figure = shape_histograms_figure(analysed.result)
    traces = _by_name(figure)
    assert list(traces) == [name for name, _ in SHAPE_HISTOGRAMS]
    for number, (name, trace) in enumerate(traces.items(), start=1):
        histogram = summary[name]["histogram"]
        assert trace["y"] == histogram["counts"] and sum(trace["y"]) > 0, name
        assert trace["x"] == histogram["bin_centres"], name
        assert trace["width"] == histogram["bin_width"]
        axis = "xaxis" if number == 1 else f"xaxis{number}"
        assert trace["xaxis"] == axis.replace("axis", "")
        low, high = figure["layout"][axis]["range"]
        filled = [c for c, n in zip(histogram["bin_centres"], histogram["counts"]) if n]
        assert low <= min(filled) and max(filled) <= high, name  # every spot shown
    # The per-row arrays agree with the histogram drawn (images spanned, whole images).
    extent_z = analysed.result.spot_sizes.extent_z
    counts = dict(zip(traces["extent_z"]["x"], traces["extent_z"]["y"]))
    for images, n in zip(*np.unique(extent_z[extent_z > 0], return_counts=True)):
        assert counts[int(images)] == n
    line = figure["layout"]["shapes"][0]
    assert line["x0"] == line["x1"] == 2.0  # DIALS's max_separation
    assert line["xref"] == traces["peak_centroid_distance"]["xaxis"]


def test_shape_medians_by_image_and_resolution(analysed):
    from dials_spot_size_analysis.report.plots import (
        shape_per_image_figure,
        shape_per_resolution_figure,
        widths_per_resolution_figure,
    )

    result = analysed.result
    summary = result.spot_shape["quantities"]
    per_image = _by_name(shape_per_image_figure(result))
    for trace, name in ((per_image["footprint"], "footprint"),):
        entries = summary[name]["median_by_image"]
        assert trace["x"] == [e["image"] for e in entries]
        assert trace["y"] == [e["median"] for e in entries]
    spanned = per_image["images spanned"]
    assert spanned["y"] == [e["median"] for e in summary["extent_z"]["median_by_image"]]
    assert spanned["yaxis"] == "y2"
    # Medians computed here from the per-row arrays.
    spots = result.spot_sizes
    for image, median in zip(per_image["footprint"]["x"], per_image["footprint"]["y"]):
        assert median == np.median(spots.footprint[spots.image == image])
    labels = {
        e["shell"]: f"{e['d_max']:.2f} - {e['d_min']:.2f}" for e in result.by_resolution
    }
    per_shell = _by_name(shape_per_resolution_figure(result))
    entries = summary["footprint"]["median_by_shell"]
    assert per_shell["footprint"]["x"] == [labels[e["shell"]] for e in entries]
    assert per_shell["footprint"]["y"] == [e["median"] for e in entries]
    assert per_shell["images spanned"]["y"] == [
        e["median"] for e in summary["extent_z"]["median_by_shell"]
    ]
    widths = _by_name(widths_per_resolution_figure(result))
    for name in ("radial", "tangential"):
        entries = summary[f"rms_width_{name}"]["median_by_shell"]
        assert widths[name]["y"] == [e["median"] for e in entries]


def test_radial_tangential_scatter_draws_the_spots(analysed):
    from dials_spot_size_analysis.report.plots import radial_tangential_figure

    spots = analysed.result.spot_sizes
    figure = radial_tangential_figure(analysed.result)
    points, line = figure["data"]
    radial = spots.rms_width_radial.astype(float)
    tangential = spots.rms_width_tangential.astype(float)
    finite = np.isfinite(radial) & np.isfinite(tangential)
    assert len(points["x"]) == min(int(finite.sum()), 5000)
    np.testing.assert_allclose(
        points["x"], tangential[finite][: len(points["x"])], atol=1e-4
    )
    np.testing.assert_allclose(
        points["y"], radial[finite][: len(points["y"])], atol=1e-4
    )
    assert line["x"] == line["y"]  # the line y = x, over the whole range drawn
    top = figure["layout"]["xaxis"]["range"][1]
    assert line["x"] == [0, top] and figure["layout"]["yaxis"]["range"] == [0, top]
    assert max(points["x"] + points["y"]) <= top


def test_radial_tangential_scatter_is_subsampled_evenly_and_repeatably():
    """Over 5000 spots: 5000, spread over the table from its first to its last spot,
    the same ones each time."""
    from dials_spot_size_analysis.report.plots import _scatter_sample

    radial = np.arange(12_345, dtype=float)
    tangential = radial.copy()
    tangential[::7] = np.nan  # rows without a width are never drawn
    rows = _scatter_sample(radial, tangential)
    assert len(rows) == 5000 and np.isfinite(tangential[rows]).all()
    assert rows[0] == 1 and rows[-1] == 12_344 and (np.diff(rows) > 0).all()
    assert np.diff(rows).max() <= 4  # about 2.9 rows apart, around the NaN rows
    np.testing.assert_array_equal(rows, _scatter_sample(radial, tangential))


def test_no_shape_figures_without_measured_shapes():
    """Sizes given as numbers (or read from a column) have no shape: no shape figure,
    no Spot shape section, rather than histograms of zeros."""
    from dials_spot_size_analysis.api import analyse_sizes
    from dials_spot_size_analysis.report.html import html_report
    from dials_spot_size_analysis.report.plots import figures

    result = analyse_sizes([4, 9, 9, 30, 250])
    assert list(figures(result.result)) == ["spot_size_histogram"]
    assert "Spot shape" not in html_report(result)


def _table_cells(page: str, first_header: str) -> list[list[str]]:
    """The body cells of the page's table whose first header is ``first_header``."""
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.tables[-1][-1].append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Tables()
    parser.feed(page)
    table = next(t for t in parser.tables if t[0][0] == first_header)
    return table[1:]


def test_html_tables_number_format(tmp_path, monkeypatch):
    """Real numbers with one decimal, whole numbers as they are, missing ones as '-':
    in the summary and the spot-shape tables, cell by cell against the JSON."""
    monkeypatch.chdir(tmp_path)
    run(EXAMPLE_ARGS)
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    statistics = document["statistics"]
    (summary,) = _table_cells(page, "n")
    assert summary[0] == str(statistics["n"]) == "354"
    assert summary[1] == f"{statistics['mean']:.1f}" == "31.5"  # 31.4717...
    assert summary[2] == "34.3" and summary[6] == "24.0"
    shape = _table_cells(page, "quantity")
    names = [row[0] for row in shape]
    assert names[:5] == ["extent_x", "extent_y", "extent_z", "footprint", "fill"]
    for row in shape:
        entry = document["spot_shape"][row[0]]
        assert row[2] == (entry["unit"] or "-")
        statistics = entry["statistics"]
        assert row[3] == str(statistics["n"])
        for cell, key in zip(row[4:], ["median", "p5", "p25", "p75", "p95", "max"]):
            assert cell == f"{statistics[key]:.1f}", (row[0], key)
    footprint = shape[names.index("footprint")]
    assert footprint[4] == "16.0"


def test_number_format_of_one_value():
    from dials_spot_size_analysis.report.html import _number

    assert _number(31.471751412429377) == "31.5"
    assert _number(0.04) == "0.0" and _number(2.25) == "2.2"
    assert _number(354) == "354" and _number(None) == "-" and _number("a") == "a"


def test_html_spot_shape_section(tmp_path, monkeypatch):
    """The section, its table and every shape figure with its help text, and the same
    figures in the JSON's plots."""
    monkeypatch.chdir(tmp_path)
    run(EXAMPLE_ARGS)
    page = (tmp_path / "dials.spot_size_analysis.html").read_text()
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    section = page[page.index("<h2>Spot shape</h2>") : page.index("<h2>Parameters")]
    for name in SHAPE_FIGURES:
        figure = document["plots"][name]
        assert f'id="{name}"' in section
        assert figure["help"] and figure["help"].replace("'", "&#x27;") in section
    assert 'style="height: 900px"' in section  # the grid of histograms, 3 rows
