"""Process-level tricks, each kept because a benchmark shows it pays for itself
(figures in benchmarks/README.md, "Tricks that pay").

- ``collection_paused``: no automatic garbage collection while the results of thousands
  of files are received and merged (the collector walked them again and again: merging
  100,000 files took twice as long).
- ``return_freed_memory``: glibc's ``malloc_trim`` after each merged column, so that the
  merged rows take the place of the batches' copies (100,000 files: 0.3 GB less peak).
- ``scipy_linalg_hidden``: numba's first kernel load without its probe of scipy's BLAS,
  which imports scipy.linalg for linear algebra that no kernel of the package does (the
  profile model's kernels do their 3 x 3 algebra in plain arithmetic, see
  ``algorithms.prediction``), so that a run never imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys


@contextlib.contextmanager
def collection_paused():
    """No automatic garbage collection in this block, and objects that exist on entry
    left out of any collection until exit. Cycles made in the block are left to later
    collections; a heap frozen already (by the caller) stays frozen; collection is left
    as found."""
    was_enabled = gc.isenabled()
    freeze = not gc.get_freeze_count()
    gc.disable()
    if freeze:
        gc.freeze()
    try:
        yield
    finally:
        if freeze:  # all, the block's objects too, back to the oldest generation
            gc.freeze()  # (two splices of lists, no walk)
            gc.unfreeze()
        if was_enabled:
            gc.enable()


def _load_malloc_trim():
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def return_freed_memory() -> None:
    """Give memory just freed back to the operating system (glibc keeps freed blocks of
    a few dozen kilobytes, each batch's arrays, for reuse)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextlib.contextmanager
def scipy_linalg_hidden():
    """Imports of scipy.linalg fail in this block (numba then finds no BLAS) unless it is
    already imported or numba has already looked."""
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        yield
        return
    sys.modules["scipy.linalg"] = None  # the import system's "cannot be imported"
    try:
        yield
    finally:
        if sys.modules.get("scipy.linalg", False) is None:
            del sys.modules["scipy.linalg"]
