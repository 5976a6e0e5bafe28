"""A memory of recent results, bounded in entries and safe to share between threads.

The experiment-list reader remembers the models it parsed (thousands of stills share
one detector) and the algorithms remember what they derive from those models; both
keep the most recently used entries and forget the oldest first.

This module imports nothing of the package: every room may use it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable


class RecentlyUsed:
    """Values by key, the least recently used forgotten first beyond a bound given on
    each :meth:`put` (so that a module's bound, read when it is needed, rules). A lock
    keeps it whole when threads share it. None is not a value: :meth:`get` gives None
    for a key it does not hold."""

    def __init__(self):
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any:
        """The value remembered for ``key``, now the most recently used; or None.

        Parameters
        ----------
        key : hashable
            What the value was remembered under.
        """
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any, most: int) -> None:
        """Remember ``value`` for ``key`` as the most recently used, and forget the
        oldest entries beyond ``most``.

        Parameters
        ----------
        key : hashable
            What to remember it under.
        value
            Not None.
        most : int
            The entries kept at most.
        """
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > most:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
