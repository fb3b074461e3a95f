"""The kinds of failure, decided once: an error a user causes, a damaged object, or a bug.

Every error the pipeline raises on purpose subclasses :class:`Expected`: bad input, a
setting, a service down. Its message says it all, so it is shown as one line, without a
traceback. :class:`Damaged` is the expected error of an object read back that cannot be
believed (truncated, not JSON, of the wrong shape): its reader names it, removes it and
lets its producer recompute it. Anything else (KeyError, TypeError, AttributeError...)
is a bug in our code and keeps its traceback: it is never taken for damage.

This module imports nothing of the package, so every module can declare its errors here.
"""

from __future__ import annotations


class Expected(Exception):
    """A failure whose message names the problem and the place: one line, no traceback."""


class Damaged(Expected, ValueError):
    """An object read back is damaged; the message names it and what rebuilds it."""


class CheckFailed(Expected, RuntimeError):
    """A blocking check before data is replaced or published failed; the message gives the numbers."""


def _subclasses(kind: type) -> set[type]:
    found: set[type] = set()
    pending: list[type] = [kind]
    while pending:
        sub: type
        for sub in pending.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def expected_names() -> frozenset[str]:
    """The names of every expected error class defined so far (for messages that carry only a name)."""
    return frozenset(kind.__name__ for kind in _subclasses(Expected))


def is_expected(error: BaseException) -> bool:
    """Whether ``error`` is one the pipeline raises on purpose (else: a bug, shown with its traceback)."""
    return isinstance(error, Expected)


def one_line(error: BaseException) -> str:
    """``Kind: message`` of an error, on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
