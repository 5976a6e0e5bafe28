"""Shared by the benchmark scripts: building large real inputs, timing in fresh processes."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED = Path(
    os.environ.get("DIALS_SPOT_SIZE_ANALYSIS_SHARED", REPOSITORY.parent / "shared")
)
DATA = Path(
    os.environ.get(
        "DIALS_SPOT_SIZE_ANALYSIS_BENCHMARK_DATA", REPOSITORY / "benchmarks" / "data"
    )
)
SOURCE = "I23_P12M_thau/indexed.refl"  # 208 rows, uint8 masks, 24 panels (DIALS 3.30)


def replicated(copies: int, source: str = SOURCE) -> Path:
    """A DIALS-identical file of ``copies`` x the source's rows (made once, then reused)."""
    target = DATA / f"{Path(source).stem}_x{copies}.refl"
    if not target.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        tool = SHARED / "tools" / "replicate_refl.py"
        if not tool.exists():
            sys.exit(
                f"{tool} not found: the benchmarks build their inputs from ../shared (set DIALS_SPOT_SIZE_ANALYSIS_SHARED)"
            )
        partial = target.with_suffix(".partial")
        subprocess.run(
            [
                sys.executable,
                str(tool),
                str(SHARED / "data" / source),
                str(copies),
                str(partial),
            ],
            check=True,
        )
        os.replace(
            partial, target
        )  # an interrupted build leaves no file that looks finished
    return target


def measure(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; it must print a JSON dict. Adds peak RSS (bytes)."""
    wrapper = (
        "import json, resource, sys, time\n"
        + code
        + "\nresult['peak_rss'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\nprint(json.dumps(result))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", wrapper, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def best(runs: int, code: str, *args: str) -> dict:
    """The fastest of ``runs`` fresh-process runs (the least disturbed by the machine)."""
    return min((measure(code, *args) for _ in range(runs)), key=lambda r: r["seconds"])


def best_here(function, runs: int = 3) -> tuple[float, object]:
    """The fastest of ``runs`` calls of ``function`` in this process (its kernels
    loaded already), in seconds, and what the last call returned."""
    fastest, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest, result


def paired_ratios(pairs: int, unit: tuple, timed: tuple) -> list[float]:
    """``timed``'s seconds over ``unit``'s (each ``(code, *args)`` for ``measure``), the
    two run one right after the other, ``pairs`` times: a drift of a shared machine's
    speed between measurements taken minutes apart cancels within each pair."""
    ratios = []
    for _ in range(pairs):
        yardstick = measure(*unit)["seconds"]
        ratios.append(measure(*timed)["seconds"] / yardstick)
    return ratios


def ratio_summary(ratios: list[float]) -> str:
    """The median and the range of paired ratios, as printed by the scripts."""
    return (
        f"median {statistics.median(ratios):.2f} x ({min(ratios):.2f}-{max(ratios):.2f}"
        f" over {len(ratios)} pairs)"
    )


# Snippets for measure(): the plain read of a file's bytes (the yardstick), and reading
# a table and counting its Foreground pixels (argv: the table, a small table whose
# counting loads the kernels first).
PLAIN_READ = """
import numpy
path = sys.argv[1]
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
with open(path, "rb") as handle:
    content = handle.read()
seconds = time.perf_counter() - start
result = {"seconds": seconds, "baseline_rss": baseline, "bytes": len(content)}
"""

READ_AND_COUNT = """
from dials_spot_size_analysis.formats import read_reflections
path = sys.argv[1]
read_reflections(sys.argv[2]).shoeboxes.count_mask_values(4)  # load the kernels
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
table = read_reflections(path)
counts = table.shoeboxes.count_mask_values(4)
seconds = time.perf_counter() - start
result = {"seconds": seconds, "baseline_rss": baseline, "rows": table.nrows, "foreground_pixels": int(counts.sum())}
"""
