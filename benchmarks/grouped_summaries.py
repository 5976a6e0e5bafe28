"""The summaries of a million spots as their groups lie in the replicated file, and as
they would lie in a real dataset of that size.

    python benchmarks/grouped_summaries.py [COPIES]     (default 5000: 1.04M rows)

The replicated file (``one_big_file.py``) repeats 208 real rows: its spots fall into
one image, ten resolution shells and 24 panels, 53 combinations of them. A real
million-spot dataset of the same detector spreads its spots over thousands of images as
well: hundreds of thousands of combinations. The per-image, per-shell and per-panel
medians of every quantity (``summarise``) are timed here on the measured rows of the
replicated file twice, in this process: with their own images and panels, and with each
row given an image of a 3,600-image scan and a panel at random (the resolution shells
are left as the d-spacings make them). The second is the cost a real file would pay.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from _common import SHARED, best_here, replicated

from dials_spot_size_analysis.algorithms.spot_sizes import summarise
from dials_spot_size_analysis.api import analyse

IMAGES, PANELS = 3600, 24


def main() -> None:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    path = replicated(copies)
    expt = SHARED / "data" / "I23_P12M_thau" / "indexed.expt"
    result = analyse(str(path), str(expt), nproc=1).result
    rows = result.spot_sizes
    rng = np.random.default_rng(1)
    spread = replace(
        rows,
        image=rng.integers(0, IMAGES, len(rows)).astype(rows.image.dtype),
        panel=rng.integers(0, PANELS, len(rows)).astype(rows.panel.dtype),
    )
    print(f"{len(rows):,} measured spots of {path.name}")
    timings = {}
    for label, spots in (("as replicated", rows), ("spread as a real dataset", spread)):
        seconds, _ = best_here(lambda spots=spots: summarise(spots, result.datasets))
        panels = int(spots.panel.max()) + 1
        pairs = np.unique(spots.image.astype(np.int64) * panels + spots.panel).size
        timings[label] = seconds
        print(f"  {label}: {seconds:.3f} s ({pairs:,} image-panel pairs)")
    ratio = timings["spread as a real dataset"] / timings["as replicated"]
    print(f"spread / replicated: {ratio:.2f} x")


if __name__ == "__main__":
    main()
