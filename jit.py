"""numba's compiler, set up once for every compiled kernel of the package.

Kernels are compiled on first use and cached on disk so that later runs load them.
numba caches beside the package or in the user's cache folder; where neither can be
written (a read-only install, a service account whose home is not writable) numba
refuses to decorate a cached function at all. Here the cache then moves to a private
temporary folder, and failing that the kernel is compiled without a cache: slower
start-up, same results, never an error.

This module imports nothing of the package: every room may use it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Callable

import numba

FALLBACK_CACHE_DIR = os.path.join(
    tempfile.gettempdir(),
    f"dials_spot_size_analysis-numba-{getattr(os, 'getuid', lambda: 0)()}",
)


def _cached(function: Callable, options: dict) -> Callable:
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        pass
    if numba.config.CACHE_DIR != FALLBACK_CACHE_DIR and _private(FALLBACK_CACHE_DIR):
        try:
            numba.config.CACHE_DIR = FALLBACK_CACHE_DIR
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:
            pass
    return numba.njit(cache=False, **options)(function)


def _private(folder: str) -> bool:
    """The folder exists (made now if need be), is a real folder (not a link) owned by
    this user, and no one else may write or read it: numba's cache holds pickles and
    machine code, which must never come from another user."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        status = os.lstat(folder)
    except OSError:
        return False
    return (
        stat.S_ISDIR(status.st_mode)
        and status.st_uid == getattr(os, "getuid", lambda: status.st_uid)()
        and not status.st_mode & 0o077
    )


def njit(function: Callable | None = None, **options) -> Callable:
    """``numba.njit(cache=True, nogil=True, **options)`` that never fails for want of
    a writable cache.

    Parameters
    ----------
    function : callable, optional
        The kernel; omitted when used as ``@njit(option=value)``.
    **options
        Further ``numba.njit`` options (e.g. ``error_model="numpy"``).
    """
    options = {"nogil": True, **options}
    if function is None:
        return lambda kernel: _cached(kernel, options)
    return _cached(function, options)
