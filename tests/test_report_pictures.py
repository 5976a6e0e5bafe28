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
    assert (
        page.count('class="plot"') == 3
    )  # histogram, per image, per resolution (one panel: no per-panel plot)
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
        expected = 3
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
        expected = 4
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
