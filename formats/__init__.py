"""The DIALS file formats: ``.refl`` (msgpack) and ``.expt`` (JSON), read without DIALS.

This package knows bytes and nothing of spot sizes: it turns files into numpy arrays and
small model objects, and reports every problem with a file as a :class:`FileFormatError`.
"""

from __future__ import annotations

from .errors import FileFormatError
from .experiments import ExperimentList, read_experiments
from .reflections import ReflectionTable, read_reflections, write_reflections
from .shoeboxes import ShoeboxColumn

__all__ = [
    "ExperimentList",
    "FileFormatError",
    "ReflectionTable",
    "ShoeboxColumn",
    "read_experiments",
    "read_reflections",
    "write_reflections",
]
