"""DIALS shoebox mask codes (``mask_code.h``, reference §2)."""

from __future__ import annotations

from typing import Iterable

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
    """DIALS's spelling of each name, whatever case it was typed in; in code order."""
    chosen = set()
    for name in names:
        try:
            chosen.add(_BY_LOWER_NAME[name.strip().lower()])
        except KeyError:
            raise ValueError(
                f"unknown mask code {name!r}: choose from {', '.join(MASK_CODES)}"
            ) from None
    return [name for name in MASK_CODES if name in chosen]


def mask_code_value(names: Iterable[str]) -> int:
    """The combined code: a pixel counts when it has every one of these bits."""
    value = 0
    for name in canonical_names(names):
        value |= MASK_CODES[name]
    return value


def describe(names: Iterable[str]) -> str:
    """E.g. ``Valid|Foreground (5)``, or ``all pixels (0)`` for no names."""
    names = canonical_names(names)
    return (
        f"{'|'.join(names)} ({mask_code_value(names)})" if names else "all pixels (0)"
    )
