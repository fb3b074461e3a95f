"""Damaged objects, handled in one place: a reader declares how its object is checked; this names it in
one line, removes it (and what vouched for it) and lets its producer recompute it on the next run.

A decoder given to :func:`read_checked` raises a :class:`~mlrec_luigi.errors.Damaged` error for what it
cannot believe. Nothing else is caught: a KeyError or TypeError in our code is a bug, never damage.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mlrec_luigi.errors import Damaged
from mlrec_luigi.storage import Bucket

T = TypeVar("T")


class DamagedObject(Damaged):
    """An object the pipeline wrote cannot be read back; the message names it and what happens next."""


def read_checked(
    bucket: Bucket,
    key: str,
    decode: Callable[[bytes, str], T],
    then: str,
    also_remove: Sequence[str] = (),
) -> T:
    """``decode(data, uri)`` of the object at ``key``: how every derived object is read back.

    Raises:
        FileNotFoundError: nothing is stored at ``key``.
        DamagedObject: ``decode`` found it damaged: named in one line; it and ``also_remove`` (what
            vouched for it: a manifest, a marker) are removed, and ``then`` says what rebuilds it.
    """
    data = bucket.read_bytes(key)
    try:
        return decode(data, bucket.uri(key))
    except Damaged as error:
        for removed in (key, *also_remove):
            bucket.delete(removed)
        named = str(error) if bucket.uri(key) in str(error) else f"{bucket.uri(key)} is damaged ({error})"
        raise DamagedObject(f"{named}: removed it; {then}") from None


def json_decoder(check: Callable[[Any], bool]) -> Callable[[bytes, str], Any]:
    """A decoder of JSON whose shape ``check`` accepts (empty, not JSON or another shape: damaged)."""

    def decode(data: bytes, label: str) -> Any:
        if not data.strip():
            raise DamagedObject("empty")
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise DamagedObject("not JSON") from None
        if not check(value):
            raise DamagedObject(f"JSON of the wrong shape: {type(value).__name__}")
        return value

    return decode


def read_json_checked(bucket: Bucket, key: str, check: Callable[[Any], bool], then: str) -> Any:
    """The JSON value stored at ``key``, when ``check`` accepts its shape: how every derived object is read back.

    Raises:
        FileNotFoundError: nothing is stored at ``key``.
        DamagedObject: truncated, empty, not JSON or of the wrong shape; the object is removed
            (``then`` says what rebuilds it), so the next run derives it again.
    """
    return read_checked(bucket, key, json_decoder(check), then)
