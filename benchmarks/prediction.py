"""Per-reflection cost of predicting reflections as dials.integrate does, with the static
crystal and with the scan-varying one, on real rows.

    python benchmarks/prediction.py [COPIES]   (default 200 x 654 rows = 130,800)

The profile model re-predicts every distinct (h, k, l, entering) of the reference
reflections (algorithms/profile_model.py). The 1M-row benchmarks repeat 208 rows, so
they predict about 200 reflections and hide this cost; a refined dataset of a million
distinct reflections pays it a million times. The kernels do not look for repeats, so
repeating the rows of the real scan-varying table (centroid_test_data_refined, 10 scan
points) measures the cost per reflection. Printed: microseconds per reflection, best of
3 in one process, and how many rows were predicted.
"""

from __future__ import annotations

import sys

import numpy as np
from _common import SHARED, best_here

from dials_spot_size_analysis.algorithms import prediction
from dials_spot_size_analysis.formats import read_experiments, read_reflections


def main() -> None:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    folder = SHARED / "data" / "centroid_test_data_refined"
    columns = read_reflections(folder / "refined.refl").columns
    experiment = list(read_experiments(folder / "refined.expt"))[0]
    hkl = np.tile(columns["miller_index"], (copies, 1))
    entering = np.tile(columns["entering"], copies)
    z = np.tile(columns["xyzcal.px"][:, 2], copies)
    prediction.predict_reflections(hkl[:10], entering[:10], z[:10], experiment)
    print(f"input: {len(hkl):,} rows ({folder.name}/refined.refl x {copies})")
    for label, static in (("static crystal", True), ("scan-varying crystal", False)):
        best, found = best_here(
            lambda static=static: prediction.predict_reflections(
                hkl, entering, z, experiment, force_static=static
            )
        )
        print(
            f"{label:<22} {1e6 * best / len(hkl):6.2f} us per reflection, "
            f"{int(found.ok.sum()):,} predicted"
        )


if __name__ == "__main__":
    main()
