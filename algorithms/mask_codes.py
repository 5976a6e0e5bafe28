"""DIALS shoebox mask codes (``mask_code.h``, doc/dials_facts.md §2)."""

from __future__ import annotations

import re
from typing import Iterable

from ..errors import SpotSizeAnalysisError


class UnknownMaskCodeError(SpotSizeAnalysisError, ValueError):
    """A mask code name DIALS does not define."""


MASK_CODES: dict[str, int] = {
    "Valid": 1,
    "Background": 2,
    "Foreground": 4,
    "Strong": 8,
    "BackgroundUsed": 16,
    "Overlapped": 32,
}
_BY_LOWER_NAME = {name.lower(): name for name in MASK_CODES}


def canonical_names(names: Iterable[str]) -> list[str]:
    """DIALS's spelling of each name, in code order.

    Each entry may hold several names separated by spaces, commas or ``+`` (as a user
    types ``Valid+Foreground`` or ``"Valid Foreground"``), in any case, and libtbx's
    ``*`` marks of a chosen option are ignored (``"*Valid *Foreground"``).

    Parameters
    ----------
    names : iterable of str
        Mask code names, as typed by the user or given by PHIL.

    Returns
    -------
    list of str
        Each code named, once, in code order (e.g. ``["Valid", "Foreground"]``).

    Raises
    ------
    UnknownMaskCodeError
        For a name DIALS does not define.
    """
    chosen = set()
    for entry in names:
        for name in re.split(r"[\s,+]+", str(entry).replace("*", " ").strip()):
            if not name:
                continue
            try:
                chosen.add(_BY_LOWER_NAME[name.lower()])
            except KeyError:
                raise UnknownMaskCodeError(
                    f"unknown mask code {name!r}: choose from {', '.join(MASK_CODES)}"
                ) from None
    return [name for name in MASK_CODES if name in chosen]


def mask_code_value(names: Iterable[str]) -> int:
    """The combined code: a pixel counts when it has every one of these bits.

    Parameters
    ----------
    names : iterable of str
        Mask code names (see :func:`canonical_names`).

    Returns
    -------
    int
        The codes' bits ORed together; 0 for no names.

    Raises
    ------
    UnknownMaskCodeError
        For a name DIALS does not define.
    """
    value = 0
    for name in canonical_names(names):
        value |= MASK_CODES[name]
    return value


def describe(names: Iterable[str]) -> str:
    """E.g. ``Valid|Foreground (5)``, or ``all pixels (0)`` for no names.

    Parameters
    ----------
    names : iterable of str
        Mask code names (see :func:`canonical_names`).

    Returns
    -------
    str
        The names joined by ``|`` with the combined code, for reports.

    Raises
    ------
    UnknownMaskCodeError
        For a name DIALS does not define.
    """
    names = canonical_names(names)
    return (
        f"{'|'.join(names)} ({mask_code_value(names)})" if names else "all pixels (0)"
    )
