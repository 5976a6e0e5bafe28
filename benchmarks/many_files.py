"""Throughput on many small files (serial crystallography: one file per still), with
nproc=2 against nproc=1, and the exactness of the merge.

    python benchmarks/many_files.py [N_FILES] [eiger|i23]     (default 10000 eiger)

Each file is a real DIALS file given its own experiment identifier, with its own .expt,
as dials.stills_process writes them: ``eiger`` a strong.refl (EIGER 16M, 112 spots),
``i23`` an indexed.refl (PILATUS 12M, 24 panels, 208 spots). Target (issue #5): nproc=2
at least 1.8 x the throughput of nproc=1 on this 2-core machine; the merged histogram
must equal the histogram of all rows together.

Two throughputs are printed: the whole command on N files (start-up, numba's runtime,
reading and reporting included), and the sustained rate: the slope of a straight line
fitted (least squares) to the fastest of three runs on each of N/4, N/2, 3N/4 and N
files. Costs paid once per run are the line's intercept; every per-file cost, in the
workers and in the parent (merging, reporting), is in the slope. Four sizes rather than
a difference of two timings: the slope of a difference moved by 1.3-1.9 x between runs.

The peak memory of each run is printed too, and what each further file adds to it (from
the runs on N/2 and N files): the parent holds every file's results until it has
summarised them.

Then where the time goes, timed inside further runs of the program: the part that nproc
spreads (measuring the files) with nproc=1 and 2, against what two processes of a plain
CPU-bound loop give on this machine (the most its two cores give); and the rest, which
runs once in one process (start-up, numba's load, reading the list, merging,
summarising, writing). With that rest, even a perfect split of the measuring bounds the
whole command's ratio (Amdahl's law).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import DATA, SHARED, measure

SOURCES = {
    "eiger": (
        SHARED / "data" / "eiger_therm" / "strong.refl",
        SHARED / "data" / "eiger_therm" / "imported.expt",
    ),
    "i23": (
        SHARED / "data" / "I23_P12M_thau" / "indexed.refl",
        SHARED / "data" / "I23_P12M_thau" / "indexed.expt",
    ),
}
SOURCE_REFL, SOURCE_EXPT = SOURCES["eiger"]


def make_stills(count: int, kind: str = "eiger") -> Path:
    from dials_spot_size_analysis.formats import read_reflections, write_reflections

    folder = DATA / (f"stills_{count}" if kind == "eiger" else f"stills_{kind}_{count}")
    listing = folder / "files.txt"
    if listing.exists():
        return listing
    folder.mkdir(parents=True, exist_ok=True)
    table = read_reflections(SOURCE_REFL)
    experiments = json.loads(SOURCE_EXPT.read_text())
    names = []
    for number in range(count):
        identifier = f"still-{number:06d}"
        table.identifiers = {0: identifier}
        experiments["experiment"][0]["identifier"] = identifier
        write_reflections(table, folder / f"{identifier}.refl")
        (folder / f"{identifier}.expt").write_text(json.dumps(experiments))
        names += [f"{identifier}.expt", f"{identifier}.refl"]
    listing.write_text("\n".join(names) + "\n")
    return listing


CONSOLE_SCRIPT = (
    os.path.join(os.path.dirname(sys.executable), "dials.spot_size_analysis"),
)


LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)  # the program's resource use, its workers' included
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as handle:
    handle.write(f"{seconds} {usage.ru_maxrss * (1 if sys.platform == 'darwin' else 1024)}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_program(
    listing: Path, nproc: int, folder: str, program: tuple[str, ...] = CONSOLE_SCRIPT
) -> tuple[float, str, str, int]:
    """``program`` (the console script, or a wrapper around the program) on the files in
    ``listing``: its wall time, the JSON it wrote, what it printed on stderr, and its peak
    memory in bytes (of its largest process: the parent, holding every file's results).
    A small launcher starts it and times it: a process started by this one would count
    this one's memory in its peak, as Linux counts a process's memory before its exec."""
    output = os.path.join(folder, f"nproc{nproc}.json")
    measured = os.path.join(folder, "measured.txt")
    command = [
        *program,
        str(listing),
        f"nproc={nproc}",
        f"output.json={output}",
        "output.html=None",
        "output.log=None",
    ]
    finished = subprocess.run(
        [sys.executable, "-c", LAUNCHER, measured, *command],
        capture_output=True,
        text=True,
    )
    if finished.returncode:
        sys.exit(
            f"{' '.join(command)} failed (exit {finished.returncode}):\n{finished.stderr}"
        )
    with open(measured) as handle:
        seconds, peak = handle.read().split()
    return float(seconds), output, finished.stderr, int(peak)


def run(listing: Path, nproc: int, folder: str) -> tuple[float, dict, int]:
    seconds, output, _, peak = run_program(listing, nproc, folder)
    with open(output) as handle:
        return seconds, json.load(handle), peak


PHASES = """
import sys, time
from dials_spot_size_analysis.command_line.spot_size_analysis import run
from dials_spot_size_analysis.parallel import run as analysis

measured = analysis.run_serial_or_pool  # the part that nproc spreads, timed inside the real program


def timed(*args, **kwargs):
    start = time.perf_counter()
    try:
        return measured(*args, **kwargs)
    finally:
        print(time.perf_counter() - start, file=sys.stderr)


analysis.run_serial_or_pool = timed
sys.exit(run())  # as the console script does (reading sys.argv)
"""


def run_in_phases(listing: Path, nproc: int, folder: str) -> tuple[float, float]:
    """The whole program (through a wrapper): its wall time, and the time spent measuring
    the files (reading, counting: what nproc spreads)."""
    seconds, _, stderr, _ = run_program(
        listing, nproc, folder, (sys.executable, "-c", PHASES)
    )
    return seconds, float(stderr.split()[-1])


CPU_LOOP = """
import multiprocessing
def spin(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
start = time.perf_counter()
with multiprocessing.get_context("fork").Pool(int(sys.argv[1])) as pool:  # the same two tasks either way
    pool.map(spin, [10_000_000] * 2, chunksize=1)
result = {"seconds": time.perf_counter() - start}
"""


SUSTAINED_FRACTIONS = (4, 2, 4 / 3)  # N/4, N/2, 3N/4 (and N itself)


def part_listing(listing: Path, folder: str, divisor: float) -> tuple[Path, int]:
    """The first N / divisor files (each .refl with its .expt) listed in ``listing``,
    and how many they are."""
    names = listing.read_text().split()
    pairs = int(len(names) // 2 / divisor)
    part = Path(folder) / f"part_{pairs}.txt"
    part.write_text(
        "".join(f"{listing.parent / name}\n" for name in names[: 2 * pairs])
    )
    return part, pairs


def fitted_line(counts: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares slope (seconds per file) and intercept (seconds) of the points."""
    slope, intercept = np.polyfit(np.array(counts, float), np.array(seconds), 1)
    return float(slope), float(intercept)


def main() -> None:
    global SOURCE_REFL, SOURCE_EXPT
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    kind = sys.argv[2] if len(sys.argv) > 2 else "eiger"
    SOURCE_REFL, SOURCE_EXPT = SOURCES[kind]
    listing = make_stills(count, kind)
    from dials_spot_size_analysis.formats import read_reflections

    rows = read_reflections(SOURCE_REFL).nrows
    print(
        f"input: {count:,} reflection files ({SOURCE_REFL.parent.name}/{SOURCE_REFL.name}, {rows} rows each) + {count:,} experiment lists, listed in {listing.name}"
    )
    with tempfile.TemporaryDirectory() as folder:
        parts = [part_listing(listing, folder, d) for d in SUSTAINED_FRACTIONS]
        run(listing, 2, folder)  # warm the page cache and numba's cache
        timings, part_times, part_peaks = {}, {}, {}
        for _ in range(3):  # interleaved, so that a slow spell of the machine hits both
            for nproc in (1, 2):
                timings.setdefault(nproc, []).append(run(listing, nproc, folder))
                for part, pairs in parts:
                    seconds, _, part_peak = run(part, nproc, folder)
                    key = (nproc, pairs)
                    part_times[key] = min(part_times.get(key, np.inf), seconds)
                    part_peaks[key] = max(part_peaks.get(key, 0), part_peak)
    (serial, one, _), (parallel, two, _) = (
        min(timings[n], key=lambda r: r[0]) for n in (1, 2)
    )
    print(f"whole command, {count:,} files:")
    print(f"  nproc=1: {serial:.2f} s ({count / serial:,.0f} files/s)")
    print(
        f"  nproc=2: {parallel:.2f} s ({count / parallel:,.0f} files/s): {serial / parallel:.2f} x the throughput of nproc=1 (no target: start-up and the parent's work bound it)"
    )
    peak = {n: max(p for _, _, p in timings[n]) for n in (1, 2)}
    half = parts[1][1]
    per_file = {
        n: (peak[n] - part_peaks[(n, half)]) / (count - half) for n in (1, 2)
    }  # what each further file adds
    print(
        f"  peak memory (the parent, holding every file's results): nproc=1 {peak[1] / 1e6:,.0f} MB, nproc=2 {peak[2] / 1e6:,.0f} MB;"
    )
    print(
        f"    each file adds {per_file[1] / 1e3:.1f} KB (nproc=1), {per_file[2] / 1e3:.1f} KB (nproc=2), from the runs on {half:,} and {count:,} files"
    )
    counts = [pairs for _, pairs in parts] + [count]
    lines = {
        n: fitted_line(
            counts,
            [part_times[(n, pairs)] for _, pairs in parts]
            + [min(t for t, _, _ in timings[n])],
        )
        for n in (1, 2)
    }
    sustained = {n: 1.0 / lines[n][0] for n in (1, 2)}
    sizes = ", ".join(f"{c:,}" for c in counts)
    print(
        f"sustained, the slope of the fastest of 3 runs on {sizes} files (once-per-run costs are the intercept):"
    )
    print(
        f"  nproc=1: {sustained[1]:,.0f} files/s; nproc=2: {sustained[2]:,.0f} files/s: {sustained[2] / sustained[1]:.2f} x (target >= 1.6)"
    )
    for n in (1, 2):
        points = [part_times[(n, pairs)] for _, pairs in parts]
        points.append(min(t for t, _, _ in timings[n]))
        shown = ", ".join(f"{t:.2f}" for t in points)
        print(f"  nproc={n}: {shown} s")
    print(
        f"  per file: {lines[1][0] * 1e3:.3f} ms with nproc=1, {lines[2][0] * 1e3:.3f} ms with nproc=2; "
        f"once-per-run cost: {lines[1][1]:.2f} s and {lines[2][1]:.2f} s (start-up, numba's runtime, ...)"
    )
    phases, loop = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(3):  # interleaved, as above
            for nproc in (1, 2):
                phases[nproc] = min(
                    phases.get(nproc, (np.inf, 0.0)),
                    run_in_phases(listing, nproc, folder),
                )
                loop[nproc] = min(
                    loop.get(nproc, np.inf), measure(CPU_LOOP, str(nproc))["seconds"]
                )
    (whole_1, measuring_1), (whole_2, measuring_2) = phases[1], phases[2]
    rest_1, rest_2 = whole_1 - measuring_1, whole_2 - measuring_2
    print(
        "where the time goes, within the fastest of 3 more runs each (nproc spreads only the measuring of the files):"
    )
    print(
        f"  whole: nproc=1 {whole_1:.2f} s, nproc=2 {whole_2:.2f} s: {whole_1 / whole_2:.2f} x"
    )
    print(
        f"  measuring the files (reading, selecting, counting; results sent back): nproc=1 {measuring_1:.2f} s, nproc=2 {measuring_2:.2f} s: {measuring_1 / measuring_2:.2f} x"
    )
    print(
        f"    (two processes of a plain CPU-bound loop on this machine: {loop[1] / loop[2]:.2f} x one)"
    )
    print(
        f"  the rest, once, in one process (start-up, numba's load, reading the list; merging, summarising, writing): nproc=1 {rest_1:.2f} s, nproc=2 {rest_2:.2f} s"
    )
    best_case = rest_2 + measuring_1 / 2
    print(
        f"  were the measuring split perfectly in two, nproc=2 would take {rest_2:.2f} + {measuring_1:.2f} / 2 = {best_case:.2f} s: {whole_1 / best_case:.2f} x at most"
    )
    from dials_spot_size_analysis.algorithms.histogram import histogram

    table = read_reflections(SOURCE_REFL)
    indexed = (table["flags"] & 4) != 0
    selected = (
        indexed if indexed.any() else np.ones(table.nrows, bool)
    )  # flags.require=Auto
    sizes = np.tile(table.shoeboxes.count_mask_values(4)[selected], count)
    whole = histogram(sizes, 0, 1000, 100)
    exact = (
        one["histogram"]["counts"]
        == two["histogram"]["counts"]
        == whole.counts.tolist()
    )
    print(
        f"merge exact: {exact} (nproc=1, nproc=2 and the histogram of all {sizes.size:,} rows together agree bin for bin)"
    )
    print(
        f"experiments: {len(two['by_experiment']):,}; skipped files: {len(two['skipped_files'])}"
    )


if __name__ == "__main__":
    main()
