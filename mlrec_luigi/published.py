"""Publishing a list, decided once for the three lists (popular, similar movies, every user's list).

- **publish, or keep in the bucket and say why**: :func:`publish` (no ``REDIS_URL``, nothing to
  publish, or a backfill that is not the live date: the list is computed and recorded, not published);
- **the record of every key published**, with the sha1 of its value (:func:`write_record`), kept in
  the bucket beside the stage's marker;
- **the full check**: :func:`unpublished_keys` compares every recorded key with Redis (one server-side
  digest per 10,000 keys), and a key whose owner wrote through the API since is the API's, not ours;
- **never stale against the API's writes**: :class:`NeverStale`, the user lists' protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

import numpy as np

from mlrec_luigi import cache
from mlrec_luigi.damage import DamagedObject, read_checked
from mlrec_luigi.errors import Damaged
from mlrec_luigi.logs import log_event
from mlrec_luigi.npy import from_npy, to_npy
from mlrec_luigi.storage import Bucket

logger = logging.getLogger("mlrec_luigi")

PUBLISHED = "published"
KEPT_PREVIOUS = "kept_previous"  # an empty list never replaces the published one
NO_REDIS = "no_redis"  # REDIS_URL unset: computed and recorded, not published
NOT_LIVE = "not_live"  # a backfill: the live key belongs to the newest date run
WHY_NOT = {
    KEPT_PREVIOUS: "nothing to publish for {what}: the published list is left in place",
    NO_REDIS: "REDIS_URL is not set: {what} computed and kept in the bucket, not published",
    NOT_LIVE: "an older date than the live list's: {what} computed and recorded, not published",
}
FINGERPRINT = "fingerprint"  # a record's column: the fingerprint of the key owner's API writes at publishing


class RecordDamaged(Damaged):
    """A record of published keys cannot be read; the message names it."""


def publish_policy(redis_url: str | None, values: Sequence[object], live: bool = True) -> str:
    """Whether a list is published (:data:`PUBLISHED`), or why not."""
    if not values:
        return KEPT_PREVIOUS
    if redis_url is None:
        return NO_REDIS
    return PUBLISHED if live else NOT_LIVE


def publish(
    redis_url: str | None,
    keys: Sequence[str],
    lists: Sequence[Sequence[str]],
    ttl_seconds: int,
    *,
    what: str,
    task: str,
    live: bool = True,
    on_progress: Callable[[int], None] | None = None,
    leave_out: Callable[[list[str]], Collection[str]] | None = None,
) -> str:
    """Publish ``keys[i] = lists[i]`` with a TTL (``SET … EX``, batched), or say in one warning why not.

    Returns the policy applied (:data:`PUBLISHED` or the reason it was kept in the bucket).

    Raises:
        RedisUnavailable: Redis cannot be reached or refused the writes.
    """
    policy = publish_policy(redis_url, keys, live)
    if policy != PUBLISHED or redis_url is None:
        log_event(logger, WHY_NOT[policy].format(what=what), logging.WARNING, task=task, reason=policy)
        return policy
    if len(keys) == 1 and leave_out is None:  # one list (the popular one): one SET … EX, its key in any error
        cache.publish_list(redis_url, keys[0], lists[0], ttl_seconds)
        return policy
    for done in cache.publish_lists(redis_url, zip(keys, lists, strict=True), ttl_seconds, leave_out):
        if on_progress is not None:
            on_progress(done)
    return policy


def record_of(
    keys: Sequence[str], lists: Sequence[Sequence[str]], extra: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """What a stage published, for its completeness check: each key, the sha1 of its value, ``extra`` columns."""
    width = max((len(key.encode()) for key in keys), default=1) or 1
    columns = [("key", f"S{width}"), ("sha1", "S40")]
    columns += [(name, values.dtype.str) for name, values in (extra or {}).items()]
    record = np.empty(len(keys), np.dtype(columns))
    record["key"] = [key.encode() for key in keys]
    record["sha1"] = [cache.value_sha1(values).encode() for values in lists]
    for name, values in (extra or {}).items():
        record[name] = values
    return record


def decode_record(data: bytes, label: str) -> np.ndarray:
    """A record written by :func:`write_record`; a damaged one raises :class:`RecordDamaged` naming it."""
    record = from_npy(data, label, RecordDamaged)
    if record.ndim != 1 or (record.dtype.names or ())[:2] != ("key", "sha1"):
        raise RecordDamaged(f"{label} is not a record of published keys: fields {record.dtype.names}")
    return record


def write_record(
    bucket: Bucket,
    key: str,
    keys: Sequence[str],
    lists: Sequence[Sequence[str]],
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, str | None]:
    """Write the record of what was published; returns the marker fields that name it."""
    bucket.write_bytes(key, to_npy(record_of(keys, lists, extra)))
    return {"record": key, "record_md5": bucket.md5_hex(key)}


def read_record(bucket: Bucket, key: str, task: str) -> np.ndarray | None:
    """The record at ``key``; None when it is missing or damaged (named and removed): the stage publishes again."""
    try:
        return read_checked(bucket, key, decode_record, "the next run publishes again and records it anew")
    except FileNotFoundError:
        return None
    except DamagedObject as error:
        log_event(logger, str(error), logging.WARNING, task=task)
        return None


def record_keys(record: np.ndarray) -> list[str]:
    return np.char.decode(record["key"]).tolist()


def unpublished_keys(
    redis_url: str,
    record: np.ndarray,
    owners_now: Callable[[list[str]], dict[str, int]] | None = None,
) -> list[str]:
    """The recorded keys whose value in Redis is not the one published, every key compared.

    A record with a :data:`FINGERPRINT` column names, for each key, the fingerprint of its owner's
    API writes when it was published. A key that differs because its owner wrote through the API
    since (the API deletes or rewrites that key) is the API's: ``owners_now(keys)`` gives the
    fingerprint of each key's owner today, and such keys are not counted.
    """
    differing = cache.differing_keys(redis_url, record_keys(record), np.char.decode(record["sha1"]).tolist())
    if not differing or FINGERPRINT not in (record.dtype.names or ()) or owners_now is None:
        return differing
    recorded = dict(zip(record_keys(record), record[FINGERPRINT].tolist(), strict=True))
    now = owners_now(differing)
    return [key for key in differing if now.get(key, 0) == recorded[key]]


class NeverStale:
    """The user lists' guarantee against the API, which inserts an interaction and then DELetes the user's key.

    Just before each batch of keys is written, and once after the last (:meth:`finish`), the owners who
    wrote through the API since the lists were computed (``interacted_since()``) are looked up: their keys
    are left out of the batch, and deleted where an earlier batch wrote them. So an owner who interacted
    after the read ends with no key (the API computes it) or with the API's own list, whatever the order
    of the API's insert, its DEL and our SETs. One window remains: an insert and its DEL both landing
    between a batch's check and its SETs leave our list until the next check (milliseconds later).
    """

    def __init__(
        self, redis_url: str, owner_of: Callable[[str], str], interacted_since: Callable[[], set[str]]
    ) -> None:
        self.redis_url = redis_url
        self.owner_of = owner_of
        self.interacted_since = interacted_since
        self.sent: dict[str, None] = {}  # the keys written and still ours, in order
        self.interacted: set[str] = set()
        self.deleted = 0

    def leave_out(self, batch: list[str]) -> set[str]:
        """The keys of ``batch`` not to write; deletes the keys written earlier whose owners interacted since."""
        fresh = self.interacted_since() - self.interacted
        self.interacted |= fresh
        written = [key for key in self.sent if self.owner_of(key) in fresh]
        self.deleted += cache.delete_keys(self.redis_url, written)
        for key in written:
            del self.sent[key]
        left = {key for key in batch if self.owner_of(key) in self.interacted}
        self.sent.update(dict.fromkeys(key for key in batch if key not in left))
        return left

    def finish(self) -> None:
        """The check after the last batch: writes that landed during it."""
        self.leave_out([])
