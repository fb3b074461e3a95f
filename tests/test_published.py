"""The one publishing mechanism (publish or keep, the record of every key, its full check) and the
never-stale protocol as a plain function, against a real redis-server with the API's writes
interleaved at every step of a publication.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import redis

from mlrec_luigi import cache, published
from mlrec_luigi.storage import LocalBucket

PREFIX = "rec:user:"


def owner(key: str) -> str:
    return key.removeprefix(PREFIX)


class Api:
    """The API as it writes: insert an interaction (visible to the pipeline's query), then DEL the user's key;
    on its next read of a missing key it may write its own list."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.inserted: set[str] = set()

    def insert(self, user: str) -> None:
        self.inserted.add(user)

    def delete(self, user: str) -> None:
        self.client.delete(f"{PREFIX}{user}")

    def own_list(self, user: str) -> None:
        self.client.set(f"{PREFIX}{user}", json.dumps(["api", user]))


def ours(user: str) -> list[str]:
    return [f"m{user}", "m0"]


def run_publication(url: str, users: list[str], schedule: dict[int, list[tuple[str, str]]]) -> published.NeverStale:
    """Publish every user's list in batches of 2; before/after the query of check number i, the API acts."""
    api = Api(url)
    calls = itertools.count()

    def interacted_since() -> set[str]:
        step = next(calls)
        for when, action, user in [(w, a, u) for (w, a, u) in schedule.get(step, [])]:
            if when == "before":
                getattr(api, action)(user)
        seen = set(api.inserted)  # the query's answer
        for when, action, user in [(w, a, u) for (w, a, u) in schedule.get(step, [])]:
            if when == "after":  # lands between this check and the batch's SETs
                getattr(api, action)(user)
        return seen

    guard = published.NeverStale(url, owner, interacted_since)
    keys = [f"{PREFIX}{user}" for user in users]
    old_batch = cache.PUBLISH_BATCH
    cache.PUBLISH_BATCH = 2
    try:
        policy = published.publish(url, keys, [ours(u) for u in users], 90_000, what="user lists", task="test",
                                   leave_out=guard.leave_out)  # fmt: skip
    finally:
        cache.PUBLISH_BATCH = old_batch
    assert policy == published.PUBLISHED
    guard.finish()
    return guard


USERS = ["1", "2", "3", "4", "5", "6"]
CHECKS = 4  # 3 batches of 2 keys, then the final check


def steps() -> list[tuple[int, str, int, str, str]]:
    """(insert's check, its side, DEL's check, its side, user): every placement of the API's insert and DEL."""
    placements = [(i, side) for i in range(CHECKS) for side in ("before", "after")]
    cases = []
    for (i, s1), (j, s2) in itertools.combinations_with_replacement(placements, 2):
        for user in ("1", "4"):  # one in the first batch (written before the API acts), one in a later one
            cases.append((i, s1, j, s2, user))
    return cases


@pytest.mark.parametrize(("insert_at", "insert_side", "delete_at", "delete_side", "user"), steps())
def test_a_user_who_interacts_at_any_step_ends_with_no_key_or_the_apis_list(
    redis_url: str, insert_at: int, insert_side: str, delete_at: int, delete_side: str, user: str
) -> None:
    schedule: dict[int, list[tuple[str, str, str]]] = {}
    schedule.setdefault(insert_at, []).append((insert_side, "insert", user))
    schedule.setdefault(delete_at, []).append((delete_side, "delete", user))
    guard = run_publication(redis_url, USERS, schedule)
    client = redis.Redis.from_url(redis_url)
    value = client.get(f"{PREFIX}{user}")
    assert value is None, (schedule, value)  # the API's DEL came after its insert: no list of ours stays
    seen = not (insert_at == CHECKS - 1 and insert_side == "after")  # an insert after the last check: unseen
    assert (f"{PREFIX}{user}" not in guard.sent and user in guard.interacted) == seen
    for other in USERS:  # every other user holds exactly our list, all of them
        if other != user:
            assert json.loads(client.get(f"{PREFIX}{other}")) == ours(other), other
            assert f"{PREFIX}{other}" in guard.sent


def test_the_apis_own_list_written_after_its_delete_is_never_overwritten(redis_url: str) -> None:
    # The API: insert, DEL, then a read that misses and writes its own list; all while batch 0 is checked.
    schedule = {0: [("after", "insert", "3"), ("after", "delete", "3"), ("after", "own_list", "3")]}
    guard = run_publication(redis_url, USERS, schedule)
    assert json.loads(redis.Redis.from_url(redis_url).get(f"{PREFIX}3")) == ["api", "3"]
    assert guard.deleted == 0 and len(guard.sent) == 5


def test_the_record_checks_every_key_and_forgives_only_owners_who_wrote_since(redis_url: str, tmp_path: Path) -> None:
    bucket = LocalBucket(tmp_path)
    keys = [f"{PREFIX}{u}" for u in USERS]
    published.publish(redis_url, keys, [ours(u) for u in USERS], 90_000, what="user lists", task="test")
    fingerprints = {key: 7 for key in keys}
    import numpy as np

    fields = published.write_record(bucket, "r.npy", keys, [ours(u) for u in USERS],
                                    {published.FINGERPRINT: np.full(len(keys), 7, np.uint64)})  # fmt: skip
    record = published.read_record(bucket, fields["record"], "test")
    assert record is not None and published.unpublished_keys(redis_url, record) == []
    client = redis.Redis.from_url(redis_url)
    client.delete(f"{PREFIX}2")  # evicted: not ours to forgive
    client.set(f"{PREFIX}5", "[]")  # rewritten by the API after user 5 interacted
    fingerprints[f"{PREFIX}5"] = 8
    assert published.unpublished_keys(redis_url, record, lambda ks: {k: fingerprints[k] for k in ks}) == [f"{PREFIX}2"]
    assert sorted(published.unpublished_keys(redis_url, record)) == [f"{PREFIX}2", f"{PREFIX}5"]


@pytest.mark.parametrize("damage", [b"", b"not npy", b"\x93NUMPY\x01\x00"])
def test_a_damaged_record_is_named_removed_and_counts_as_unpublished(tmp_path: Path, damage: bytes, caplog) -> None:
    bucket = LocalBucket(tmp_path)
    bucket.write_bytes("r.npy", damage)
    assert published.read_record(bucket, "r.npy", "test") is None
    assert not bucket.exists("r.npy")
    assert any("r.npy is not a readable .npy file" in r.getMessage() for r in caplog.records)


def test_publish_or_keep_says_why(redis_url: str, caplog) -> None:
    assert published.publish(None, ["k"], [["a"]], 90_000, what="the popular list", task="t") == published.NO_REDIS
    assert published.publish(redis_url, [], [], 90_000, what="x", task="t") == published.KEPT_PREVIOUS
    assert published.publish(redis_url, ["k"], [["a"]], 9, what="x", task="t", live=False) == published.NOT_LIVE
    messages = [r.getMessage() for r in caplog.records]
    assert "REDIS_URL is not set: the popular list computed and kept in the bucket, not published" in messages
    assert redis.Redis.from_url(redis_url).get("k") is None
