"""Independent pieces of work on a few threads, results in order: the compiled kernels
and numpy's sorts release the GIL, so ``nproc`` cores help within one process too (the
stretches of one big table, the summaries of its quantities).

This module imports nothing of the package: every room may use it."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def in_order(
    function: Callable[[Item], Result], items: Iterable[Item], threads: int = 1
) -> Iterator[Result]:
    """``function`` of each item, in the items' order, on up to ``threads`` threads.

    At most ``threads`` items are in flight (the next item is drawn while they run),
    so memory stays bounded by the threads, not by the number of items. With one
    thread this is a plain loop in the calling thread. An exception, from an item or
    from drawing the next one, is raised here once the items in flight are done.

    Parameters
    ----------
    function : callable
        Called once per item.
    items : iterable
        Drawn in the calling thread.
    threads : int
        Items processed at once.
    """
    if threads <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="spot_size_analysis") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
