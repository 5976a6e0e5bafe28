"""Compiled d-spacing kernel (optional: imported only where numba is); mirrors
``ExperimentGeometry.d_spacings``'s numpy path, which the tests compare it with."""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(
    cache=True, nogil=True, error_model="numpy"
)  # x/0 gives inf or NaN, as in numpy
def d_spacings(
    xy, take, experiment, panel, starts, n_panels, origins, fasts, slows, s0, out
):
    for i in range(out.size):
        e, p = experiment[i], panel[i]
        # The panel's row in the stacked tables, as ExperimentGeometry.panel_rows finds it.
        if e < 0 or e >= starts.size or starts[e] < 0 or p < 0 or p >= n_panels[e]:
            out[i] = np.nan
            continue
        r = starts[e] + p
        x, y = xy[take[i], 0], xy[take[i], 1]
        lx = origins[r, 0] + x * fasts[r, 0] + y * slows[r, 0]
        ly = origins[r, 1] + x * fasts[r, 1] + y * slows[r, 1]
        lz = origins[r, 2] + x * fasts[r, 2] + y * slows[r, 2]
        # The numpy path's operations in its order, so both give the same bits.
        length = math.sqrt(lx * lx + ly * ly + lz * lz)
        k = math.sqrt(s0[e, 0] * s0[e, 0] + s0[e, 1] * s0[e, 1] + s0[e, 2] * s0[e, 2])
        dx, dy, dz = (
            lx / length * k - s0[e, 0],
            ly / length * k - s0[e, 1],
            lz / length * k - s0[e, 2],
        )
        q = math.sqrt(dx * dx + dy * dy + dz * dz)
        out[i] = 1.0 / q if q != 0 else np.inf  # NaN positions stay NaN, as in numpy
