"""The cost of each further still, this version against another: by default the
sizes-only program that issue #14 compares with ("many files as fast as today within
20%").

    python benchmarks/against_version.py [REVISION] [N_FILES]   (default 06ed077 10000)

Both versions run alternately on the EIGER stills of ``many_files.py``, with nproc=1 and
nproc=2: three rounds on N/4, N/2, 3N/4 and N files, the fastest run of each kept, and a
straight line fitted (least squares) to each version's times. Its slope is what each
further file costs, in the workers and in the parent; start-up drops out into the
intercept. Printed: both lines, the ratio of their slopes and of the whole command on N
files. REVISION is checked out in a temporary git worktree, removed at the end; each
version runs once first, unmeasured, so that numba's cache of each is filled.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPOSITORY
from many_files import (
    SUSTAINED_FRACTIONS,
    fitted_line,
    make_stills,
    part_listing,
    run_program,
)

RUNNER = (
    "import sys; "
    "from dials_spot_size_analysis.command_line.spot_size_analysis import run; "
    "sys.exit(run())"
)
PROGRAM = (sys.executable, "-c", RUNNER)


def checked_out(revision: str, folder: str) -> str:
    """A worktree of ``revision`` as ``folder/dials_spot_size_analysis`` (the repository
    is the package), compiled; returns ``folder`` (for PYTHONPATH)."""
    target = os.path.join(folder, "dials_spot_size_analysis")
    subprocess.run(
        ["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", target, revision],
        check=True,
        capture_output=True,
    )
    compileall.compile_dir(target, quiet=1)
    return folder


def timed(listing: Path, nproc: int, folder: str, path: str | None) -> float:
    """The program of ``path`` (None: this version) on ``listing``: its wall time."""
    saved = os.environ.pop("PYTHONPATH", None)
    if path:
        os.environ["PYTHONPATH"] = path
    try:
        return run_program(listing, nproc, folder, PROGRAM)[0]
    finally:
        os.environ.pop("PYTHONPATH", None)
        if saved is not None:
            os.environ["PYTHONPATH"] = saved


def main() -> None:
    revision = sys.argv[1] if len(sys.argv) > 1 else "06ed077"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    listing = make_stills(count)
    compileall.compile_dir(str(REPOSITORY), quiet=1)
    with tempfile.TemporaryDirectory() as folder:
        other = checked_out(revision, folder)
        try:
            versions = {"this version": None, revision: other}
            parts = [part_listing(listing, folder, d) for d in SUSTAINED_FRACTIONS]
            parts.append((listing, count))
            for nproc in (1, 2):
                for path in versions.values():
                    timed(parts[0][0], nproc, folder, path)  # numba's cache filled
                best = {(v, n): float("inf") for v in versions for _, n in parts}
                for _ in range(3):
                    for part, n in parts:
                        for version, path in versions.items():
                            seconds = timed(part, nproc, folder, path)
                            best[version, n] = min(best[version, n], seconds)
                counts = [n for _, n in parts]
                slopes = {}
                for version in versions:
                    times = [best[version, n] for n in counts]
                    slopes[version], intercept = fitted_line(counts, times)
                    print(
                        f"nproc={nproc} {version}: "
                        + ", ".join(f"{t:.2f}" for t in times)
                        + f" s on {', '.join(f'{n:,}' for n in counts)} files; "
                        f"{slopes[version] * 1e3:.3f} ms a further file, "
                        f"{intercept:.2f} s once"
                    )
                ratio = slopes["this version"] / slopes[revision]
                whole = best["this version", count] / best[revision, count]
                print(
                    f"nproc={nproc}: each further file {ratio:.2f} x the time of "
                    f"{revision}; the whole command on {count:,} files {whole:.2f} x"
                )
        finally:
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPOSITORY),
                    "worktree",
                    "remove",
                    "--force",
                    os.path.join(folder, "dials_spot_size_analysis"),
                ],
                check=False,
                capture_output=True,
            )


if __name__ == "__main__":
    main()
