"""Which implementation runs the hot loops: compiled kernels (numba) or pure numpy.

Both give identical results (the tests run both). ``auto`` picks numba where it is
importable (loading its cached kernels costs about half a second per process, repaid
after a few thousand reflections), unless the environment variable
DIALS_SPOT_SIZE_ANALYSIS_ENGINE names an engine.
"""

from __future__ import annotations

import functools
import os

ENVIRONMENT_VARIABLE = "DIALS_SPOT_SIZE_ANALYSIS_ENGINE"
ENGINES = ("numba", "numpy")


@functools.lru_cache(maxsize=None)
def available_engines() -> tuple[str, ...]:
    try:
        import numba  # noqa: F401
    except ImportError:
        return ("numpy",)
    return ENGINES


def resolve_engine(engine: str = "auto") -> str:
    if engine == "auto":
        engine = os.environ.get(ENVIRONMENT_VARIABLE, "auto").strip().lower() or "auto"
    engines = available_engines()
    if engine == "auto":
        return engines[0]
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose auto, numba or numpy")
    if engine not in engines:
        raise ValueError("the numba engine needs numba: pip install numba")
    return engine


def warm_up(engine: str = "auto") -> None:
    """Load the compiled kernels now (from numba's cache, or compiling them once), so that
    processes forked from this one start with them ready instead of each loading them."""
    if resolve_engine(engine) != "numba":
        return
    import numpy as np

    from .algorithms._geometry_numba import d_spacings
    from .formats._shoebox_numba import count_mask_values, scan_records

    blob = np.zeros(29, np.uint8)
    panel, bbox = np.zeros(1, np.uint32), np.zeros((1, 6), np.int32)
    present, offset, counts = np.zeros(1, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64)
    scan_records(blob, 1, 0, panel, bbox, present, offset)
    count_mask_values(blob, present, offset, bbox, 4, counts)
    xy, rows = np.zeros((1, 2)), np.zeros(1, np.int64)
    origin, fast, slow, s0 = np.array([[0.0, 0.0, -100.0]]), np.array([[1.0, 0, 0]]), np.array([[0, -1.0, 0]]), np.array([[0, 0, -1.0]])
    d_spacings(xy[:, :2], rows, rows, origin, fast, slow, s0, np.zeros(1))
