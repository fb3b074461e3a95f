"""Luigi targets over the bucket: one object, and a marker that only counts while it tells the truth."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import luigi

from mlrec_luigi.memo import cached
from mlrec_luigi.storage import Bucket


class BucketTarget(luigi.Target):
    """A Luigi target for one object in the bucket."""

    def __init__(self, bucket: Bucket, key: str) -> None:
        self.bucket = bucket
        self.key = key

    @property
    def uri(self) -> str:
        return self.bucket.uri(self.key)

    def exists(self) -> bool:
        return self.bucket.exists(self.key)


class MarkerTarget(BucketTarget):
    """A JSON marker that only counts while it still tells the truth.

    ``exists()`` is true when the marker is stored, each ``expect`` field equals the
    marker's (the source checksum, the model...), and ``still_valid(marker)`` agrees
    (for example: the MongoDB collection still holds the documents the marker counts).
    """

    def __init__(
        self,
        bucket: Bucket,
        key: str,
        expect: dict[str, Any] | None = None,
        still_valid: Callable[[dict[str, Any]], bool] | None = None,
        shape: dict[str, type | tuple[type, ...]] | None = None,
    ) -> None:
        super().__init__(bucket, key)
        self.expect = expect or {}
        self.still_valid = still_valid
        self.shape = shape or {}

    def read(self) -> dict[str, Any] | None:
        """The stored marker, or None when it is missing or unreadable."""
        return cached(("marker", self.uri), self._read)

    def _read(self) -> dict[str, Any] | None:
        try:
            marker = self.bucket.read_json(self.key)
        except (FileNotFoundError, ValueError):
            return None
        return marker if isinstance(marker, dict) else None

    def valid(self) -> dict[str, Any] | None:
        """The marker, when it is stored and still tells the truth; else None."""
        marker = self.read()
        if marker is None:
            return None
        if any(marker.get(name) != value for name, value in self.expect.items()):
            return None
        wrong = [name for name, kind in self.shape.items() if not isinstance(marker.get(name), kind)]
        if wrong:
            # A damaged marker (hand-edited, half-restored): the stage is not done, and its rerun rewrites it.
            # Only the declared shape decides this: an error raised by ``still_valid`` is a bug (or a damaged
            # object, named by its own reader) and propagates, never taken for a damaged marker.
            logging.getLogger("mlrec_luigi").warning(
                "%s is damaged (field(s) %s missing or of the wrong type): the stage runs again",
                self.uri,
                ", ".join(wrong),
                extra={"marker": self.uri},
            )
            return None
        if self.still_valid is not None and not self.still_valid(marker):
            return None
        return marker

    def exists(self) -> bool:
        return self.valid() is not None

    def write(self, marker: dict[str, Any]) -> None:
        self.bucket.write_json(self.key, {**marker, **self.expect})
