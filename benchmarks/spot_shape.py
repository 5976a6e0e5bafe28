"""Time and memory to measure the shape of every spot of a 1M-row DIALS reflection file,
as ratios to plainly reading the file's bytes, measured in the same run.

    python benchmarks/spot_shape.py [COPIES [RUNS]]   (default 5000 x 208 rows = 1.04M
                                                      rows, best of 5 runs)

Reported, each in a fresh process with the file in the page cache, best of RUNS (the
machine is shared: the best run is the least disturbed one):

- the plain read of the file's bytes (the unit of time);
- reading the table and counting every row's Foreground pixels (the sizes alone,
  ``ShoeboxColumn.count_mask_values``);
- reading the table and measuring sizes and shapes of every row
  (``measure_spot_shapes``, handing measured pages back to the operating system), then
  the same with the summaries (``summarise_spot_shapes``);
- the same measurement keeping every page of the file resident (no page release);
- reading the table and measuring it as the program does (``measure_table``: the
  indexed rows selected, their sizes and shapes measured straight into their rows
  through ``ShapesToMeasure``, and each located: experiment, panel, image, d-spacing,
  radial and tangential widths about its beam centre), with the summaries neither.

Targets: sizes and shapes together within 1.5 x the plain read; peak memory within
1.2 x the file size. Memory is the process's peak resident set size above what it used
after its imports (and a warm-up on a small file), i.e. what the work added; the total
peak is printed too.
"""

from __future__ import annotations

import sys

from _common import PLAIN_READ, READ_AND_COUNT, SHARED, best, replicated

EXPERIMENTS = str(SHARED / "data" / "I23_P12M_thau" / "indexed.expt")

SHAPES = """
from dials_spot_size_analysis.formats import read_reflections
from dials_spot_size_analysis.algorithms.spot_shape import (
    SpotShapes, measure_spot_shapes, summarise_spot_shapes,
)
path, release, summarise = sys.argv[1], sys.argv[3] == "release", sys.argv[4] == "yes"
small = measure_spot_shapes(read_reflections(sys.argv[2]).shoeboxes, 4)
summarise_spot_shapes(small, panel=small.n_coded)  # load the kernels
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
table = read_reflections(path, index_shoeboxes=False)
if release:  # a stretch at a time, pages handed back, as the program measures
    shapes = SpotShapes.concatenate(
        [measure_spot_shapes(column, 4) for _, _, column in table.shoebox_chunks(1 << 18, True)]
    )
else:
    shapes = measure_spot_shapes(table.shoeboxes, 4)
if summarise:
    summary = summarise_spot_shapes(shapes)
seconds = time.perf_counter() - start
result = {"seconds": seconds, "baseline_rss": baseline, "foreground_pixels": int(shapes.n_coded.sum())}
"""

# The program's own path: what measure_file does to a table once read.
PROGRAM = """
from dials_spot_size_analysis.algorithms.geometry import ExperimentGeometry
from dials_spot_size_analysis.algorithms.spot_sizes import ExperimentNumbering, MeasureOptions
from dials_spot_size_analysis.formats import read_experiments, read_reflections
from dials_spot_size_analysis.parallel.measure_file import measure_table
geometry = ExperimentGeometry(list(read_experiments(sys.argv[3])))
def measured(path):
    table = read_reflections(path, index_shoeboxes=False)
    numbering = ExperimentNumbering(table.identifiers)
    return measure_table(table, geometry, numbering, MeasureOptions(), release_pages=True)[0]
measured(sys.argv[2])  # load the kernels
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
rows = measured(sys.argv[1])
seconds = time.perf_counter() - start
result = {"seconds": seconds, "baseline_rss": baseline, "foreground_pixels": int(rows.size.sum())}
"""


def main() -> None:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    path = replicated(copies)
    small = str(replicated(1))
    size = path.stat().st_size
    print(
        f"input: {path.name}: {size / 1e6:.0f} MB, {copies * 208:,} reflections "
        f"(real DIALS rows x {copies})"
    )
    with open(path, "rb") as handle:  # warm the page cache
        while handle.read(1 << 24):
            pass
    plain = best(repeats, PLAIN_READ, str(path))
    unit = plain["seconds"]
    added = (plain["peak_rss"] - plain["baseline_rss"]) / size
    print(
        f"{'plain read of the bytes':<48} {unit:6.3f} s   1.00 x  memory {added:.2f} x"
    )
    runs = [
        ("read + count sizes (count_mask_values)", READ_AND_COUNT, ()),
        ("read + sizes and shapes", SHAPES, ("release", "no")),
        ("read + sizes and shapes + summaries", SHAPES, ("release", "yes")),
        ("read + sizes and shapes, pages kept", SHAPES, ("keep", "no")),
        ("the program's measuring (indexed rows, located)", PROGRAM, (EXPERIMENTS,)),
    ]
    coded = set()
    for label, code, extra in runs:
        ours = best(repeats, code, str(path), small, *extra)
        if code is not PROGRAM:  # every row; the program's only the indexed ones
            coded.add(ours["foreground_pixels"])
        added = (ours["peak_rss"] - ours["baseline_rss"]) / size
        print(
            f"{label:<48} {ours['seconds']:6.3f} s {ours['seconds'] / unit:6.2f} x  "
            f"memory {added:.2f} x (peak RSS {ours['peak_rss'] / size:.2f} x the file)"
        )
    print(
        "targets: sizes and shapes <= 1.5 x the plain read, memory <= 1.2 x the file; "
        f"Foreground pixels counted: {sorted(coded)}"
    )


if __name__ == "__main__":
    main()
