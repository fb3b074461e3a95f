"""Publishing to a real redis-server."""

from __future__ import annotations

import pytest
import redis

from mlrec_luigi import cache
from tests.support.processes import free_port


def test_publish_sets_json_list_with_ttl(redis_url: str) -> None:
    cache.publish_list(redis_url, "rec:fallback:popular", ["a" * 24, "b" * 24], 86_400)
    client = redis.Redis.from_url(redis_url)
    assert client.get("rec:fallback:popular") == b'["aaaaaaaaaaaaaaaaaaaaaaaa","bbbbbbbbbbbbbbbbbbbbbbbb"]'
    assert 86_390 < client.ttl("rec:fallback:popular") <= 86_400
    cache.publish_list(redis_url, "rec:fallback:popular", ["c" * 24], 100)
    assert cache.read_list(redis_url, "rec:fallback:popular") == ["c" * 24]
    assert 90 < client.ttl("rec:fallback:popular") <= 100  # a lost TTL reads -1


def test_many_lists_are_published_pipelined_with_their_ttl(redis_url: str) -> None:
    lists = [(f"rec:item:{i:024x}", [f"{j:024x}" for j in range(i % 3)]) for i in range(2_500)]
    progress = list(cache.publish_lists(redis_url, lists, 90_000))
    assert progress == [1_000, 2_000, 2_500]
    keys = [key for key, _ in lists]
    assert cache.read_lists(redis_url, keys) == [values for _, values in lists]
    assert all(89_990 < ttl <= 90_000 for ttl in cache.ttls(redis_url, keys))


def test_publish_policy() -> None:
    assert cache.publish_policy("redis://h", ["a"]) == cache.PUBLISHED
    assert cache.publish_policy("redis://h", []) == cache.KEPT_PREVIOUS
    assert cache.publish_policy(None, ["a"]) == cache.NO_REDIS
    assert cache.publish_policy("redis://h", ["a"], live=False) == cache.NOT_LIVE


def test_unreachable_redis_fails_clearly_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(cache.RedisUnavailable, match=r"REDIS_URL redis://:\*\*\*@127\.0\.0\.1") as raised:
        cache.publish_list(url, "k", ["x"], 10)
    assert "hunter2" not in str(raised.value)
