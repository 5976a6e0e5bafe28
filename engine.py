"""Which implementation runs the hot loops: compiled kernels (numba) or pure numpy.

Both give identical results (the tests run both). ``auto`` picks numba where it is
importable (numba's runtime and our cached kernels take 0.3 s to load in each process,
0.45 s where numba also probes scipy's BLAS; repaid after a few thousand reflections),
unless the environment variable DIALS_SPOT_SIZE_ANALYSIS_ENGINE names an engine.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys

ENVIRONMENT_VARIABLE = "DIALS_SPOT_SIZE_ANALYSIS_ENGINE"
ENGINES = ("numba", "numpy")


@functools.lru_cache(maxsize=None)
def available_engines() -> tuple[str, ...]:
    try:
        importlib.import_module(
            "numba"
        )  # importable, not merely installed (llvmlite may be broken)
    except ImportError:
        return ("numpy",)
    return ENGINES


def resolve_engine(engine: str = "auto") -> str:
    if engine == "auto":
        engine = os.environ.get(ENVIRONMENT_VARIABLE, "auto").strip().lower() or "auto"
    if engine == "numpy":  # without importing numba (which may be why numpy was chosen)
        return engine
    engines = available_engines()
    if engine == "auto":
        return engines[0]
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose auto, numba or numpy")
    if engine not in engines:
        raise ValueError("the numba engine needs numba: pip install numba")
    return engine


def warm_up(engine: str = "auto", probe_blas: bool = True) -> None:
    """Load the compiled kernels now (from numba's cache, or compiling them once), so that
    processes forked from this one start with them ready instead of each loading them.

    ``probe_blas=False`` (for a process that runs only these kernels, like the command-line
    program) skips numba's start-up check for scipy's BLAS, which imports scipy.linalg
    (0.17 s, a third of numba's start-up) for linear algebra our kernels never do."""
    if resolve_engine(engine) != "numba":
        return
    if probe_blas:
        _load_kernels()
        return
    try:
        with _scipy_linalg_hidden():
            _load_kernels()
    except (
        ImportError
    ):  # a numba that needs scipy for more than the probe: load as usual
        _load_kernels()


@contextlib.contextmanager
def _scipy_linalg_hidden():
    """Imports of scipy.linalg fail in this block (numba then finds no BLAS) unless it is
    already imported or numba has already looked."""
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        yield
        return
    sys.modules["scipy.linalg"] = (
        None  # the import system's "cannot be imported" marker
    )
    try:
        yield
    finally:
        if sys.modules.get("scipy.linalg", False) is None:
            del sys.modules["scipy.linalg"]


def _load_kernels() -> None:
    import numpy as np

    from .algorithms.geometry import ExperimentGeometry
    from .formats.shoeboxes import HEADER_BYTES, count_pixels_streaming

    # Through the real code paths, with read-only arrays like a file's bytes, so that the
    # kernels are loaded for exactly the argument types of real calls.
    count_pixels_streaming(
        np.frombuffer(bytes(2 * HEADER_BYTES), np.uint8), 2, 4, engine="numba"
    )  # two rows: strided header views
    index = np.zeros(1, np.int64)
    for positions in (
        np.frombuffer(bytes(24), np.float64).reshape(1, 3),
        np.zeros((1, 2)),
    ):
        ExperimentGeometry([]).d_spacings(positions, index, index, "numba")
