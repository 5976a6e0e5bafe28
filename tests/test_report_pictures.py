"""The PNG plot and the self-contained HTML report, checked as a person would see them."""

from __future__ import annotations

import html
import json
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from conftest import REPOSITORY

from dials_spot_size_analysis.api import analyse
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
PROFILE_FIGURES = ("profile_model_blocks", "profile_model_box")
LIMIT_FIGURES = (
    "advice_min_spot_size",
    "advice_max_spot_size",
    "advice_max_separation",
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
    # histogram, per image, per resolution (one panel: no per-panel plot), the five
    # shape figures, the profile model's two (the example is indexed with its
    # predictions) and the three spot-finding limits
    assert page.count('class="plot"') == (
        3 + len(SHAPE_FIGURES) + len(PROFILE_FIGURES) + len(LIMIT_FIGURES)
    )
    assert "without pixel data" in page and "Parameters" in page


def chromium_driver(profile: str):
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
        f"--user-data-dir={profile}",
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
        expected = 3 + len(SHAPE_FIGURES) + len(PROFILE_FIGURES) + len(LIMIT_FIGURES)
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
        # + the sizes in whole pixels: I23's spots (median 9 px) crowd 0..1000
        expected = 5 + len(SHAPE_FIGURES) + len(PROFILE_FIGURES) + len(LIMIT_FIGURES)
    document = json.loads((tmp_path / "dials.spot_size_analysis.json").read_text())
    driver = chromium_driver(str(tmp_path / "chromium-profile"))
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
              points: d.querySelectorAll('g.trace.scatter path.point').length,
              shapes: d.querySelectorAll('g.shapelayer path').length,
            }));
            """
        )
        # What plotly holds for each new figure is the JSON's (the numbers drawn).
        drawn = driver.execute_script(
            """
            return Object.fromEntries([...document.querySelectorAll('div.plot')]
              .filter(d => /^(profile_model|advice)_/.test(d.id))
              .map(d => [d.id, d.data.map(t => t.y)]));
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
    by_id = {graph["id"]: graph for graph in graphs}
    for name in LIMIT_FIGURES:  # the limit a line, the band a shaded rectangle
        assert by_id[name]["lines"] == 1 and by_id[name]["shapes"] == 1, name
    if dataset == "multi-panel":
        # sigma_b and sigma_m: a point and an overall line each; the box: 4 x 3 bars
        assert by_id["profile_model_blocks"]["points"] == 2
        assert by_id["profile_model_blocks"]["lines"] == 2
        assert by_id["profile_model_box"]["bars"] == 12
    assert set(drawn) == {
        name for name in document["plots"] if name.startswith(("profile_", "advice_"))
    }
    for name, ys in drawn.items():
        assert ys == [trace["y"] for trace in document["plots"][name]["data"]], name
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
    assert summary[0] == str(statistics["n"]) == "357"
    assert summary[1] == f"{statistics['mean']:.1f}" == "25.0"  # 24.9971...
    assert summary[2] == "14.6" and summary[6] == "23.0"
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
    assert footprint[4] == "14.0"


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


# ------------------------------------------------- profile model and advice figures

PROFILE_TABLES = {
    "rotation": ("centroid_test_data/indexed.expt", "centroid_test_data/indexed.refl"),
    "scan-varying": (
        "centroid_test_data_refined/refined.expt",
        "centroid_test_data_refined/refined.refl",
    ),
    "stills": ("ssx_CuNiR/indexed.expt", "ssx_CuNiR/indexed.refl"),
    "pre-indexing": ("eiger_therm/imported.expt", "eiger_therm/strong.refl"),
}


@pytest.fixture(scope="module", params=list(PROFILE_TABLES))
def profiled(request, shared_data):
    """(kind, analysis) of a real table with each kind of profile model."""
    from dials_spot_size_analysis.api import analyse

    expt, refl = PROFILE_TABLES[request.param]
    return request.param, analyse(shared_data / refl, shared_data / expt)


def _blocks_traces(figure: dict) -> dict:
    return {trace["name"]: trace for trace in figure["data"]}


def test_profile_figures_draw_the_model(profiled):
    """The block figure's points are the blocks' sigmas across the images they cover,
    its dashed lines the overall sigmas; the box figure's bars are the shoebox
    estimate and the spots' extent statistics. Stills have neither figure; a
    pre-indexing estimate (no blocks, no box) neither."""
    from dials_spot_size_analysis.report.plots import profile_figures

    kind, analysis = profiled
    model = analysis.profile_model
    plots = profile_figures(model, analysis.result.spot_shape)
    if kind in ("stills", "pre-indexing"):
        assert plots == {}
        return
    [entry] = model["experiments"]
    blocks = entry["blocks"]
    traces = _blocks_traces(plots["profile_model_blocks"])
    for name in ("sigma_b", "sigma_m"):
        points, line = traces[f"{name} per block"], traces[f"{name} overall"]
        assert points["y"] == [b[f"{name}_deg"] for b in blocks]
        assert points["x"] == [(b["first_image"] + b["last_image"]) / 2 for b in blocks]
        assert points["error_x"]["array"] == [
            (b["last_image"] - b["first_image"] + 1) / 2 for b in blocks
        ]
        assert line["y"] == [entry[f"{name}_deg"]] * 2
        assert line["x"] == [
            blocks[0]["first_image"] - 0.5,
            blocks[-1]["last_image"] + 0.5,
        ]
        assert points["yaxis"] == line["yaxis"] == ("y" if name == "sigma_b" else "y2")
    # The shaded band: 0.2-0.6 image widths of sigma_m, in degrees.
    [band] = plots["profile_model_blocks"]["layout"]["shapes"]
    width = entry["sigma_m_deg"] / entry["sigma_m_images"]
    assert (band["y0"], band["y1"]) == pytest.approx((0.2 * width, 0.6 * width))
    assert width == pytest.approx(0.2)  # centroid_test_data: 0.2 degree images
    # The box figure: x, y in pixels on the first axes, z in images on the second.
    bars = plots["profile_model_box"]["data"]
    drawn = {}
    for trace in bars:
        drawn.setdefault(trace["name"], []).extend(trace["y"])
        assert (trace.get("xaxis") == "x2") == (trace["x"] == ["z (images)"])
    shoebox = entry["shoebox"]
    extents = analysis.result.spot_shape["quantities"]
    assert drawn["box, median"] == list(shoebox["median_size_px"]) == [19, 20, 6]
    assert drawn["box, largest"] == list(shoebox["max_size_px"])
    for key, name in (("median", "spots, median"), ("p95", "spots, 95th percentile")):
        assert drawn[name] == [extents[f"extent_{a}"]["statistics"][key] for a in "xyz"]
    # ... and those statistics are the per-spot extents' own.
    spots = analysis.result.spot_sizes
    measured = spots.extent_z > 0
    assert drawn["spots, median"] == [
        np.median(getattr(spots, f"extent_{a}")[measured]) for a in "xyz"
    ]


def test_block_figure_follows_drift(shared_data, monkeypatch):
    """Blocks of 0.6 degrees (3 images) on centroid_test_data: three blocks whose
    sigmas differ from the overall ones, each drawn where it is."""
    import functools

    from dials_spot_size_analysis.algorithms import profile_model as algorithm
    from dials_spot_size_analysis.api import analyse
    from dials_spot_size_analysis.parallel import measure_file
    from dials_spot_size_analysis.report.plots import profile_blocks_figure

    monkeypatch.setattr(
        measure_file,
        "profile_model",
        functools.partial(algorithm.profile_model, block_degrees=0.6),
    )
    expt, refl = PROFILE_TABLES["rotation"]
    analysis = analyse(shared_data / refl, shared_data / expt, nproc=1)
    [entry] = analysis.profile_model["experiments"]
    blocks = entry["blocks"]
    assert [(b["first_image"], b["last_image"]) for b in blocks] == [
        (1, 3),
        (4, 6),
        (7, 9),
    ]
    traces = _blocks_traces(profile_blocks_figure(analysis.profile_model))
    for name in ("sigma_b", "sigma_m"):
        values = [b[f"{name}_deg"] for b in blocks]
        assert traces[f"{name} per block"]["y"] == values
        assert traces[f"{name} per block"]["x"] == [2.0, 5.0, 8.0]
        assert all(v != entry[f"{name}_deg"] for v in values)  # drift is visible
        assert traces[f"{name} overall"]["y"] == [entry[f"{name}_deg"]] * 2


def test_limit_figures_draw_the_checks(profiled):
    """One figure per spot-finding limit: the bars are the check's histogram, the red
    line its limit, the shaded band the bins the check counts as near (their bars sum
    to its n_near), the title its verdict."""
    from dials_spot_size_analysis.report.plots import advice_figures

    _, analysis = profiled
    checks = [c for c in analysis.advice["checks"] if "histogram" in c]
    plots = advice_figures(analysis.advice)
    assert (
        list(plots)
        == ["advice_" + c["parameter"].rsplit(".", 1)[-1] for c in checks]
        == list(LIMIT_FIGURES)
    )
    for check, figure in zip(checks, plots.values()):
        histogram = check["histogram"]
        bars, line = figure["data"]
        edges = histogram["edges"]
        assert bars["y"] == histogram["counts"]
        np.testing.assert_allclose(bars["x"], (np.array(edges[:-1]) + edges[1:]) / 2)
        np.testing.assert_allclose(bars["width"], np.diff(edges))
        assert line["x"] == [check["value"], check["value"]] == [histogram["limit"]] * 2
        [band] = figure["layout"]["shapes"]
        shaded = [
            n for x, n in zip(bars["x"], bars["y"]) if band["x0"] < x < band["x1"]
        ]
        assert sum(shaded) == check["n_near"], check["parameter"]
        assert band["x0"] <= histogram["band"][0] and histogram["band"][1] <= band["x1"]
        title = figure["layout"]["title"]["text"]
        assert "no change needed" in title and f"{check['n_near']} of" in title
        assert check["source"] in figure["layout"]["annotations"][0]["text"]
    assert plots["advice_min_spot_size"]["data"][1]["x"][0] == checks[0]["value"]


def test_limit_figure_of_a_pile_up():
    """A pile-up under max_spot_size: the title says a change is called for and the
    check's reason is written on the graph."""
    from dials_spot_size_analysis.algorithms import advice
    from dials_spot_size_analysis.report.plots import limit_figure

    rng = np.random.default_rng(1)
    size = np.concatenate([rng.integers(5, 200, 2000), np.full(60, 990)])
    check = advice.check_max_spot_size(size, size, np.ones_like(size))
    assert check["change_called_for"]
    figure = limit_figure(check)
    assert "a change is called for" in figure["layout"]["title"]["text"]
    assert check["reasons"][0] in figure["layout"]["annotations"][0]["text"]
    assert figure["data"][0]["y"][-1] == 60 == check["histogram"]["counts"][-1]


def test_limit_help_texts_say_what_a_problem_looks_like(profiled):
    from dials_spot_size_analysis.report.plots import advice_figures, profile_figures

    _, analysis = profiled
    plots = advice_figures(analysis.advice)
    assert "pile-up" in plots["advice_max_spot_size"]["help"]
    assert "Split spots" in plots["advice_max_separation"]["help"]
    assert "weak" in plots["advice_min_spot_size"]["help"]
    for figure in profile_figures(
        analysis.profile_model, analysis.result.spot_shape
    ).values():
        assert "many" in figure["help"]


def _section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}")
    return page[start : page.index("<h2>", start + 4)]


def test_html_profile_and_advice_sections(profiled):
    """The tables say what the result says; the figures are in the page and in the
    JSON's plots; stills and a pre-indexing estimate say so."""
    from dials_spot_size_analysis.algorithms.profile_model import STILLS_LABEL
    from dials_spot_size_analysis.api import json_document
    from dials_spot_size_analysis.report.html import html_report

    kind, analysis = profiled
    page = html_report(analysis)
    document = json_document(analysis)
    profile = _section(page, "Profile model")
    model = analysis.profile_model
    if kind == "stills":  # sigma_b only, estimated, each still in its table
        assert "No profile model" not in profile
        assert profile.count("<h3>Experiment ") == 5
        assert profile.count("<b>An estimate</b>") == 5
        assert html.escape(STILLS_LABEL) in profile
        assert "estimate for a still" in profile
        assert "estimate before indexing" not in profile
    elif kind == "pre-indexing":
        [entry] = model["experiments"]
        assert "<b>An estimate</b>" in profile and "estimate before indexing" in profile
        rows = {row[0]: row[1:] for row in _table_cells(profile, "profile model")}
        assert rows["sigma_b (deg)"] == [f"{entry['sigma_b_deg']:.4g}"]
        assert rows["sigma_m (deg)"] == ["-"] and rows["spots used"] == ["112"]
    else:
        [entry] = model["experiments"]
        rows = {row[0]: row[1:] for row in _table_cells(profile, "profile model")}
        for key, name in (
            ("sigma_b_deg", "sigma_b (deg)"),
            ("sigma_b_px", "sigma_b (px on the detector)"),
            ("sigma_m_deg", "sigma_m (deg)"),
            ("sigma_m_images", "sigma_m (images)"),
        ):
            assert rows[name][0] == f"{entry[key]:.4g}", name
        assert rows["sigma_b (deg)"][1] == (
            f"BEAM_DIVERGENCE_E.S.D.= {entry['sigma_b_deg']:.4g}"
        )
        assert rows["integration box, median"][0] == "19 x 20 px x 6 images"
        assert rows["reference reflections (indexed / matched / used)"][0] == (
            f"{entry['n_reference']} / {entry['n_matched']} / {entry['n_selected']}"
        )
        for name in PROFILE_FIGURES:
            assert f'id="{name}"' in profile and name in document["plots"]
    advice = _section(page, "Spot finding and integration advice")
    summary = analysis.advice["summary"]
    assert html.escape(summary[0].upper() + summary[1:]) in advice
    assert (
        "No parameter change suggested: the values in use serve these spots." in advice
    )
    for name in LIMIT_FIGURES:
        assert f'id="{name}"' in advice and name in document["plots"]
        assert html.escape(document["plots"][name]["help"]) in advice


def test_html_stored_model_and_suggestions(shared_data):
    """Where the .expt holds a model it stands beside ours; suggestions are a table
    (program, parameter, now, suggested, reason)."""
    import copy

    from dials_spot_size_analysis.api import analyse
    from dials_spot_size_analysis.report.html import html_report

    expt, refl = PROFILE_TABLES["rotation"]
    analysis = copy.deepcopy(analyse(shared_data / refl, shared_data / expt))
    entry = analysis.profile_model["experiments"][0]
    entry["stored_profile"] = {
        "kind": "gaussian_rs",
        "n_sigma": 3.0,
        "sigma_b_deg": 0.0612,
        "sigma_m_deg": 0.2345,
    }
    suggestion = {
        "program": "dials.find_spots",
        "parameter": "spotfinder.filter.max_spot_size",
        "current": 1000,
        "suggested": 2000,
        "reason": "keep the large spots",
        "evidence": {},
    }
    analysis.advice["suggestions"] = [suggestion]
    page = html_report(analysis)
    rows = {
        row[0]: row[1:]
        for row in _table_cells(_section(page, "Profile model"), "profile model")
    }
    assert rows["sigma_b (deg)"][:2] == [f"{entry['sigma_b_deg']:.4g}", "0.0612"]
    assert rows["sigma_m (deg)"][:2] == [f"{entry['sigma_m_deg']:.4g}", "0.2345"]
    assert "stored in the .expt (gaussian_rs)" in page
    advice = _section(page, "Spot finding and integration advice")
    assert _table_cells(advice, "program") == [
        [
            "dials.find_spots",
            "spotfinder.filter.max_spot_size",
            "1000",
            "2000",
            "keep the large spots",
        ]
    ]
    assert "No parameter change suggested" not in advice


def test_selection_words_with_different_flag_choices(shared_data):
    """flags.require=Auto chooses indexed rows in a table that has them and all rows in
    one that has none: the title then points to the selection table."""
    from dials_spot_size_analysis.api import analyse
    from dials_spot_size_analysis.report.plots import histogram_figure, selection_words

    indexed = ("I23_P12M_thau/indexed.expt", "I23_P12M_thau/indexed.refl")
    strong = ("eiger_therm/imported.expt", "eiger_therm/strong.refl")
    both = analyse(
        [shared_data / indexed[1], shared_data / strong[1]],
        [shared_data / indexed[0], shared_data / strong[0]],
    ).result
    assert [d.require for d in both.datasets] == [["indexed"], []]
    words = "flags per dataset, see the selection table"
    assert selection_words(both) == words
    assert words in histogram_figure(both)["layout"]["title"]["text"]
    alone = analyse(shared_data / indexed[1], shared_data / indexed[0]).result
    assert selection_words(alone) == "flags indexed"
    unindexed = analyse(shared_data / strong[1], shared_data / strong[0]).result
    assert selection_words(unindexed) == "all reflections"
    twice = analyse([shared_data / indexed[1]] * 2, shared_data / indexed[0]).result
    assert selection_words(twice) == "flags indexed"


def test_crowded_spots_are_shown_in_whole_pixels_too(shared_data):
    """I23's spots (3 to 30 px) fill the first 3 bins of the tutorial's 0..1000: the
    log and the HTML also show their sizes one whole pixel at a time; the example's
    (5 to 274 px, 65% in the first 3 bins) do not need it."""
    from dials_spot_size_analysis.report.plots import figures
    from dials_spot_size_analysis.report.text import report_lines

    result = analyse(shared_data / "I23_P12M_thau/indexed.refl")
    figure = figures(result.result)["spot_size_whole_pixels"]
    sizes = result.sizes
    assert (
        figure["data"][0]["y"]
        == np.bincount(sizes).tolist()[: len(figure["data"][0]["y"])]
    )
    shown = sum(figure["data"][0]["y"])  # up to the 99th percentile
    assert figure["data"][0]["x"][0] == 0 and shown == (sizes <= 26).sum() == 202
    assert "Most spots (100%) fall into the first 3 bins" in "\n".join(
        report_lines(result.result)
    )
    example = analyse(EXAMPLE / "indexed.refl", EXAMPLE / "indexed.expt")
    assert "spot_size_whole_pixels" not in figures(example.result)
