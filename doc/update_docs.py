"""Regenerate the generated parts of README.md (and any page with the same markers).

    python doc/update_docs.py          rewrite the files in place
    python doc/update_docs.py --check  exit 1 if any file is out of date (used by the tests)

A generated section sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; its
content is made by the function of that name below, by running the real program on the
example data shipped in ``examples/data``, so what the pages show is what the program does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
PAGES = [
    REPOSITORY / "README.md",
    REPOSITORY / "doc" / "tutorial.md",
    REPOSITORY / "doc" / "spot_shapes.md",
    REPOSITORY / "doc" / "parameters.md",
]
PICTURE = REPOSITORY / "doc" / "images" / "spot_size_histogram.png"
PICTURE_ARGS = ["bins=40", "data_max=200", "output.plot=spot_size_histogram.png"]
EXAMPLE_ARGS = ["examples/data/indexed.expt", "examples/data/indexed.refl"]
_VARIABLE_LINES = re.compile(r"^(Total time: .*)$", re.MULTILINE)


def _run_example(
    extra_args=(), keep: dict[str, Path] | None = None
) -> tuple[str, dict]:
    """Run the program on the example in a fresh folder; copy the files named in ``keep``
    (name in that folder -> destination) out of it."""
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    with tempfile.TemporaryDirectory() as folder:
        # Run as a user would, in a fresh folder holding a copy of the example data.
        shutil.copytree(
            REPOSITORY / "examples" / "data", Path(folder) / "examples" / "data"
        )
        out = io.StringIO()
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            with contextlib.redirect_stdout(out):
                run([*EXAMPLE_ARGS, *extra_args])
            document = json.loads(
                Path(folder, "dials.spot_size_analysis.json").read_text()
            )
            for name, destination in (keep or {}).items():
                shutil.copyfile(Path(folder, name), destination)
        finally:
            os.chdir(cwd)
    return _VARIABLE_LINES.sub(
        "Total time: (varies)", out.getvalue()
    ).rstrip() + "\n", document


def _command_and_log(extra_args=(), keep=None) -> str:
    log, _ = _run_example(extra_args, keep)
    return (
        "```\n$ dials.spot_size_analysis "
        + " ".join([*EXAMPLE_ARGS, *extra_args])
        + "\n"
        + log
        + "```\n"
    )


def example_log() -> str:
    return _command_and_log()


def example_log_head() -> str:
    """The example's log up to the end of its histogram (the README's first look); the
    tutorial shows it whole."""
    log = _command_and_log()
    lines = log.splitlines()
    end = next(
        (i for i, line in enumerate(lines) if line.startswith("(bins ")), len(lines)
    )
    kept = lines[: end + 1]
    kept += [
        "...",
        "(the log goes on: the spots in whole pixels, their shape, the breakdowns per",
        "experiment, panel, image and resolution, the profile model and the advice;",
        "doc/tutorial.md shows it whole)",
        "```",
    ]
    return "\n".join(kept) + "\n"


def picture_log() -> str:
    """The run that draws the tutorial's picture; the PNG goes to doc/images."""
    return _command_and_log(
        PICTURE_ARGS, keep={"spot_size_histogram.png": PICTURE_TARGET["path"]}
    )


PICTURE_TARGET = {"path": PICTURE}


def python_api() -> str:
    """The tutorial's Python, run for real: the code, then what it printed."""
    code = (REPOSITORY / "doc" / "tutorial_api_example.py").read_text()
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPOSITORY)
    try:
        with contextlib.redirect_stdout(out):
            exec(
                compile(code, "tutorial_api_example.py", "exec"),
                {"__name__": "__tutorial__"},
            )
    finally:
        os.chdir(cwd)
    return (
        "```python\n"
        + code.rstrip()
        + "\n```\n\nprints\n\n```\n"
        + out.getvalue().rstrip()
        + "\n```\n"
    )


def parameters() -> str:
    from dials_spot_size_analysis.phil import phil_scope

    out = io.StringIO()
    phil_scope.show(out=out, attributes_level=1)
    return "```\n" + out.getvalue().rstrip() + "\n```\n"


def json_excerpt() -> str:
    _, document = _run_example()
    excerpt = {
        key: document[key]
        for key in (
            "program",
            "version",
            "schema_version",
            "mask_code",
            "selection",
            "statistics",
        )
    }
    excerpt["selection"] = {
        k: v for k, v in excerpt["selection"].items() if k != "datasets"
    }
    histogram = dict(document["histogram"])
    histogram["bin_centers"] = histogram["bin_centers"][:3] + ["..."]
    histogram["counts"] = histogram["counts"][:3] + ["..."]
    excerpt["histogram"] = histogram
    excerpt["by_image"] = document["by_image"][:1] + ["..."]
    extent_z = document["spot_shape"]["extent_z"]
    statistics = {k: extent_z["statistics"][k] for k in ("n", "median", "p95")}
    excerpt["spot_shape"] = {
        "extent_z": {"unit": extent_z["unit"], "statistics": statistics}
    }
    excerpt["advice"] = {"summary": document["advice"]["summary"]}
    lines = [
        f"  {json.dumps(key)}: {json.dumps(value, separators=(', ', ': '))}"
        for key, value in excerpt.items()
    ]
    text = "{\n" + ",\n".join(lines) + "\n}"
    return "```json\n" + text.replace('"..."', "...") + "\n```\n"


def shape_log() -> str:
    """The spot-shape part of the example's log (from its table to the bar charts)."""
    log, _ = _run_example()
    start = log.index("Spot shape (")
    end = log.index("\nBy experiment")
    return "```\n" + log[start:end].rstrip() + "\n```\n"


def reflections_log() -> str:
    """The run that writes the per-reflection output, and the columns it added."""
    folder = _scratch()
    arguments = ["output.reflections=shapes.refl"]
    log, _ = _run_example(arguments, keep={"shapes.refl": folder / "shapes.refl"})
    writing = [line for line in log.splitlines() if line.startswith("Writing")]
    text = (
        "```\n$ dials.spot_size_analysis "
        + " ".join([*EXAMPLE_ARGS, *arguments])
        + "\n...\n"
        + "\n".join(writing)
        + "\n```\n"
    )
    from dials_spot_size_analysis.formats import read_reflections

    table = read_reflections(folder / "shapes.refl")
    shutil.rmtree(folder)
    added = [name for name in table.column_order if name.startswith("spot_size_")]
    counted = table.columns["spot_size_analysis.counted"]
    return (
        text
        + "\nadds the columns\n\n```\n"
        + "\n".join(f"{name:40s} {table.column_type(name)}" for name in added)
        + f"\n```\n\nto the table's {len(table.column_order) - len(added)}; "
        + f"{int(counted.sum())} of its {table.nrows} rows were counted.\n"
    )


# The spot-shape pictures of doc/spot_shapes.md: name -> what they show.
SHAPE_PICTURES = {
    "spot_shape_histograms.png": (
        "extent_z",
        "footprint",
        "fill",
        "peak_centroid_distance",
    ),
    "spot_shape_radial_tangential.png": (),
}
SHAPE_PICTURE_FOLDER = {"path": REPOSITORY / "doc" / "images"}


def _shape_picture(name: str, result, quantities) -> None:
    """Draw one spot-shape picture of the example with matplotlib (as report/png.py
    draws the histogram), carrying the numbers it shows in its metadata."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dials_spot_size_analysis.report.png import BAR_COLOUR, METADATA_KEY

    summary = result.spot_shape["quantities"]
    shown: dict = {}
    if quantities:
        figure = Figure(figsize=(8.0, 5.0), dpi=80)
        FigureCanvasAgg(figure)
        for number, quantity in enumerate(quantities, start=1):
            axes = figure.add_subplot(2, 2, number)
            histogram = summary[quantity]["histogram"]
            counts = histogram["counts"]
            last = max([i for i, c in enumerate(counts) if c] or [0]) + 1
            axes.bar(
                histogram["bin_centres"][:last],
                counts[:last],
                width=histogram["bin_width"],
                color=BAR_COLOUR,
                edgecolor="none",
            )
            unit = summary[quantity]["unit"]
            axes.set_xlabel(quantity + (f" ({unit})" if unit else ""), fontsize=9)
            axes.set_ylabel("spots", fontsize=9)
            axes.tick_params(labelsize=8)
            if quantity == "peak_centroid_distance":  # DIALS's max_separation
                axes.axvline(2.0, color="#d62728", linestyle="--", lw=1)
            shown[quantity] = counts
    else:
        import numpy as np

        spots = result.spot_sizes
        radial = np.asarray(spots.rms_width_radial, dtype=float)
        tangential = np.asarray(spots.rms_width_tangential, dtype=float)
        figure = Figure(figsize=(5.0, 5.0), dpi=80)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        axes.scatter(tangential, radial, s=6, alpha=0.4, color=BAR_COLOUR, lw=0)
        top = float(np.nanmax([radial.max(), tangential.max()])) * 1.05
        axes.plot([0, top], [0, top], "--", color="#555555", lw=1)
        axes.set_xlim(0, top)
        axes.set_ylim(0, top)
        axes.set_xlabel("tangential rms width (px)")
        axes.set_ylabel("radial rms width (px)")
        shown = {"n": int(np.isfinite(radial).sum()), "top": round(top, 3)}
    figure.tight_layout()
    figure.savefig(
        SHAPE_PICTURE_FOLDER["path"] / name,
        format="png",
        dpi=80,
        metadata={METADATA_KEY: json.dumps(shown)},
    )


def shape_pictures() -> None:
    """Draw doc/spot_shapes.md's pictures from an analysis of the example."""
    from dials_spot_size_analysis.api import analyse

    result = analyse(
        REPOSITORY / "examples/data/indexed.refl",
        REPOSITORY / "examples/data/indexed.expt",
    ).result
    for name, quantities in SHAPE_PICTURES.items():
        _shape_picture(name, result, quantities)


GENERATORS = {
    "shape-log": shape_log,
    "reflections-log": reflections_log,
    "example-log": example_log,
    "example-log-head": example_log_head,
    "picture-log": picture_log,
    "python-api": python_api,
    "parameters": parameters,
    "json-excerpt": json_excerpt,
}


def _picture_numbers(path: Path) -> dict:
    """What the picture shows (the numbers the PNG carries), to compare regenerated
    pictures by content: PNG bytes vary with matplotlib's version and fonts."""
    from dials_spot_size_analysis.report.png import read_png_metadata

    numbers = read_png_metadata(path)
    return {
        key: numbers[key]
        for key in ("bin_centers", "counts", "n_out_of_range", "log_scale")
    }


def _shape_pictures_stale(check: bool) -> list[Path]:
    """Draw the spot-shape pictures (elsewhere with ``check``, then compare the numbers
    they carry with the committed ones')."""
    from dials_spot_size_analysis.report.png import read_png_metadata

    committed = REPOSITORY / "doc" / "images"
    if check:
        SHAPE_PICTURE_FOLDER["path"] = _scratch()
    shape_pictures()
    if not check:
        return []
    return [
        committed / name
        for name in SHAPE_PICTURES
        if not (committed / name).exists()
        or read_png_metadata(committed / name)
        != read_png_metadata(SHAPE_PICTURE_FOLDER["path"] / name)
    ]


SCRATCH: dict[str, Path | None] = {"path": None}


def _scratch() -> Path:
    """A fresh folder inside this run's scratch folder (removed when main ends)."""
    return Path(tempfile.mkdtemp(dir=SCRATCH["path"]))


_SECTION = re.compile(
    r"(<!-- BEGIN (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END (?P=name) -->)",
    re.DOTALL,
)


def regenerate(text: str) -> str:
    cache: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in cache:
            cache[name] = GENERATORS[name]()
        return match.group(1) + cache[name] + match.group(4)

    return _SECTION.sub(replace, text)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        SCRATCH["path"] = Path(scratch)
        try:
            return _main(argv)
        finally:
            SCRATCH["path"] = None


def _main(argv: list[str]) -> int:
    stale = []
    check = "--check" in argv
    if check:
        # Draw the picture elsewhere and compare what it shows with the committed one.
        committed = PICTURE
        PICTURE_TARGET["path"] = _scratch() / PICTURE.name
    for page in PAGES:
        text = page.read_text()
        updated = regenerate(text)
        if updated != text:
            stale.append(page)
            if "--check" not in argv:
                page.write_text(updated)
    if check and (
        not committed.exists()
        or _picture_numbers(committed) != _picture_numbers(PICTURE_TARGET["path"])
    ):
        stale.append(committed)
    stale += _shape_pictures_stale(check)
    if stale and check:
        print(
            "out of date: "
            + ", ".join(str(p.relative_to(REPOSITORY)) for p in stale)
            + " (run python doc/update_docs.py)"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
