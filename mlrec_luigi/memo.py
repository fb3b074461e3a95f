"""Reads made once per completeness check: the memo every stage's ``complete()`` shares."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_READS: contextvars.ContextVar[dict[tuple[str, ...], Any] | None] = contextvars.ContextVar("reads", default=None)


@contextlib.contextmanager
def reads_cached() -> Iterator[None]:
    """Within the block, each bucket read (and completeness check) through :func:`cached` happens once.

    One ``complete()`` of the daily root checks every stage below it, and each reads the zip's
    md5 and its upstream markers: on ``gs://`` every read is a request. Nested blocks share
    the outer cache; the cache ends with the outermost block (one completeness check).
    """
    if _READS.get() is not None:
        yield
        return
    token = _READS.set({})
    try:
        yield
    finally:
        _READS.reset(token)


def cached(key: tuple[str, ...], compute: Callable[[], T]) -> T:
    """``compute()``, once per ``key`` inside :func:`reads_cached`; always outside it."""
    cache = _READS.get()
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]
