"""What the profile model costs per reference reflection on real, distinct reflections:
the part of a real million-row run that the 1M-row benchmarks hide.

    python benchmarks/profile_model.py [COPIES]   (default 160 x 408 = 65,280 reflections)

The 1M-row benchmarks repeat 208 rows: their reference reflections share a few hundred
(h, k, l, entering) keys, so almost none of them is matched to a prediction, and sigma_b
and sigma_m are computed from a handful. A refined dataset of a million rows has up to
MAX_REFERENCE_MATCHED (100,000) distinct reference reflections, each re-predicted,
matched and summed over its pixels, and sigma_m's likelihood is evaluated over all of
them some 20 times (dials.integrate's simplex takes 60 to 100). Here the matched reference
reflections of the real refined table (centroid_test_data_refined, 408 of its 654 rows)
are repeated COPIES times, each copy reading its own copy of the shoeboxes (the table
repeated by the shared replicate_refl.py), and each step is timed in this process, best
of 3. Printed: microseconds per reflection (compute_sigmas also with its likelihood on
two threads, as with nproc=2), and the cost at 100,000 reflections on one thread.
A scan longer than one block (5 degrees) computes sigma_b and sigma_m again per block
from the sums already taken: about one more `compute_sigmas` with its sums given,
spread over the blocks (printed too).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
from _common import SHARED, best_here, replicated

from dials_spot_size_analysis.algorithms import prediction, profile_model
from dials_spot_size_analysis.formats import read_experiments, read_reflections

SOURCE = "centroid_test_data_refined/refined.refl"


def main() -> None:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 160
    folder = SHARED / "data" / "centroid_test_data_refined"
    table = read_reflections(folder / "refined.refl")
    repeated = read_reflections(replicated(copies, SOURCE))
    experiment = list(read_experiments(folder / "refined.expt"))[0]
    columns = table.columns
    reference = profile_model.reference_selection(
        columns["flags"], columns["miller_index"], columns["id"]
    )
    chosen, frames = profile_model._matched_columns(
        columns, np.flatnonzero(reference), experiment, 1.0
    )
    # Each copy of the matched rows reads its own copy of the shoeboxes.
    tiled = profile_model._Columns(
        **{
            field.name: np.concatenate([getattr(chosen, field.name)] * copies)
            for field in dataclasses.fields(chosen)
        }
    )
    tiled.rows = np.concatenate([chosen.rows + c * table.nrows for c in range(copies)])
    frames = np.tile(frames, copies)
    n = len(tiled.rows)
    shoeboxes = repeated.shoeboxes
    print(
        f"input: {n:,} matched reference reflections "
        f"({SOURCE}: {len(chosen.rows)} of {table.nrows} rows, x {copies})"
    )
    profile_model.compute_sigmas(chosen, table.shoeboxes, experiment)  # load kernels
    sigma_b, sigma_m, _ = profile_model.compute_sigmas(tiled, shoeboxes, experiment)
    sums = profile_model._pixel_sums(tiled, shoeboxes, experiment, True)
    steps = {
        "re-prediction (static crystal)": lambda: prediction.predict_reflections(
            tiled.miller_index,
            np.ones(n, bool),
            frames,
            experiment,
            force_static=True,
        ),
        "pixel sums (sigma_b, per-frame counts)": lambda: profile_model._pixel_sums(
            tiled, shoeboxes, experiment, True
        ),
        "pixel sums on two threads": lambda: profile_model._pixel_sums(
            tiled, shoeboxes, experiment, True, 2
        ),
        "compute_sigmas (the sums and sigma_m's search)": lambda: (
            profile_model.compute_sigmas(tiled, shoeboxes, experiment)
        ),
        "the same on two threads": lambda: profile_model.compute_sigmas(
            tiled, shoeboxes, experiment, threads=2
        ),
        "the same with its sums given (the blocks)": lambda: (
            profile_model.compute_sigmas(
                tiled, shoeboxes, experiment, sums=sums, sigma_m_start=1.1 * sigma_m
            )
        ),
        "model bboxes": lambda: profile_model.integration_bboxes(
            tiled.s1, frames, tiled.panel, experiment, sigma_b, sigma_m
        ),
    }
    at_cap, blocks = 0.0, 0.0
    for label, step in steps.items():
        seconds, _ = best_here(step)
        if not label.startswith(("pixel sums", "the same")):  # counted once
            at_cap += seconds / n * profile_model.MAX_REFERENCE_MATCHED
        if label.startswith("the same with its sums"):
            blocks = seconds / n * profile_model.MAX_REFERENCE_MATCHED
        print(f"{label:48s} {seconds / n * 1e6:6.2f} us per reflection")
    print(
        f"at {profile_model.MAX_REFERENCE_MATCHED:,} reference reflections (the cap): "
        f"{at_cap:.2f} s for one block, {at_cap + blocks:.2f} s for a scan of many "
        "blocks"
    )


if __name__ == "__main__":
    main()
