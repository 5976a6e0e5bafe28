"""Which implementation runs the hot loops: compiled kernels (numba) or pure numpy.

Both give identical results (the tests run both). ``auto`` picks numba where it is
importable, unless the environment variable DIALS_SPOT_SIZE_ANALYSIS_ENGINE names one.
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
