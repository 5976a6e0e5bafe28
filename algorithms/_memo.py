"""Results derived from immutable experiment models, remembered by the models' identity.

The experiment-list reader shares one model object between every file of a run whose
model is the same (thousands of stills, one detector), so what is derived from a
model (its arrays, beam centres) need be computed once, not once per file.
"""

from __future__ import annotations

from typing import Any, Callable

from ..recently_used import RecentlyUsed

MOST_REMEMBERED = 64  # results kept (the least recently used are forgotten first)


class by_identity:  # noqa: N801 (used as a decorator)
    """Remember ``function(*models)`` per identity of its arguments.

    The arguments must be immutable (the formats' frozen models) and so must the
    result, which every caller shares. The arguments are kept with the result, so
    that their identities cannot be reused by other objects while it is remembered.
    The threads measuring one table's stretches share the memory (a result computed
    on two threads at once is the same either way).

    Parameters
    ----------
    function : callable
        A pure function of immutable models.
    """

    def __init__(self, function: Callable[..., Any]):
        self._function = function
        self._results = RecentlyUsed()
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__

    def __call__(self, *models):
        key = tuple(id(model) for model in models)
        remembered = self._results.get(key)
        if remembered is not None:
            return remembered[1]
        result = self._function(*models)
        self._results.put(key, (models, result), MOST_REMEMBERED)
        return result
