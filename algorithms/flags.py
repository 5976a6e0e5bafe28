"""DIALS reflection flags (``flags`` column, uint64) and selection by name.

Values from DIALS ``reflection_table.h`` (doc/dials_facts.md §3).
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from ..errors import SpotSizeAnalysisError

REFLECTION_FLAGS: dict[str, int] = {
    "predicted": 1 << 0,
    "observed": 1 << 1,
    "indexed": 1 << 2,
    "used_in_refinement": 1 << 3,
    "strong": 1 << 5,
    "reference_spot": 1 << 6,
    "dont_integrate": 1 << 7,
    "integrated_sum": 1 << 8,
    "integrated_prf": 1 << 9,
    "integrated": (1 << 8) | (1 << 9),
    "overloaded": 1 << 10,
    "overlapped_bg": 1 << 11,
    "overlapped_fg": 1 << 12,
    "in_powder_ring": 1 << 13,
    "foreground_includes_bad_pixels": 1 << 14,
    "background_includes_bad_pixels": 1 << 15,
    "includes_bad_pixels": (1 << 14) | (1 << 15),
    "bad_shoebox": 64512,
    "bad_spot": 64512,
    "used_in_modelling": 1 << 16,
    "centroid_outlier": 1 << 17,
    "failed_during_background_modelling": 1 << 18,
    "failed_during_summation": 1 << 19,
    "failed_during_profile_fitting": 1 << 20,
    "bad_reference": 1 << 21,
    "user_excluded_in_scaling": 1 << 22,
    "outlier_in_scaling": 1 << 23,
    "excluded_for_scaling": 1 << 24,
    "bad_for_scaling": (1 << 22) | (1 << 23) | (1 << 24),
    "excluded_for_refinement": 1 << 25,
    "scaled": 1 << 26,
    "not_suitable_for_refinement": 1 << 27,
    "bad_for_refinement": (1 << 17) | (1 << 25) | (1 << 27),
}


class UnknownFlagError(SpotSizeAnalysisError, ValueError):
    """A flag name DIALS does not define."""


def parse_flag_names(values: Iterable[str] | None) -> list[str]:
    """Flag names from PHIL strings: each may hold several, split on spaces, commas or '+'.

    Parameters
    ----------
    values : iterable of str, optional
        The PHIL strings (e.g. ``["indexed", "used_in_refinement+strong"]``); None
        means none.

    Returns
    -------
    list of str
        The flag names, lower case, in the order given.

    Raises
    ------
    UnknownFlagError
        For a name DIALS does not define.
    """
    names: list[str] = []
    for value in values or []:
        names.extend(
            name for name in re.split(r"[\s,+]+", value.strip().lower()) if name
        )
    unknown = [name for name in names if name not in REFLECTION_FLAGS]
    if unknown:
        raise UnknownFlagError(
            f"unrecognised flag name{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"choose from {', '.join(REFLECTION_FLAGS)}"
        )
    return names


def combined_value(names: Iterable[str]) -> int:
    """The bitwise OR of the flags named, to test all of them at once.

    Parameters
    ----------
    names : iterable of str
        Flag names, as :func:`parse_flag_names` gives them.

    Returns
    -------
    int
        The combined bits; 0 for no names.

    Raises
    ------
    KeyError
        For a name not in REFLECTION_FLAGS.
    """
    value = 0
    for name in names:
        value |= REFLECTION_FLAGS[name]
    return value


def select_by_flags(
    flags: np.ndarray, require: Iterable[str] = (), exclude: Iterable[str] = ()
) -> np.ndarray:
    """Rows with every bit of every ``require`` flag set (DIALS ``get_flags(all=True)``)
    and no bit of any ``exclude`` flag set (``get_flags(all=False)``).

    Parameters
    ----------
    flags : numpy.ndarray
        The table's ``flags`` column (one integer per row).
    require, exclude : iterable of str
        Flag names (as :func:`parse_flag_names` gives them); empty means no condition.

    Returns
    -------
    numpy.ndarray
        bool, one per row: True where the row is kept.
    """
    flags = np.asarray(flags, dtype=np.uint64)
    required, excluded = (
        np.uint64(combined_value(require)),
        np.uint64(combined_value(exclude)),
    )
    keep = (flags & required) == required
    if excluded:
        keep &= (flags & excluded) == 0
    return keep
