"""Publishing to a real redis-server."""

from __future__ import annotations

import pytest
import redis

from mlrec_luigi import cache
from tests.conftest import free_port


def test_publish_sets_json_list_with_ttl(redis_url: str) -> None:
    cache.publish_list(redis_url, "rec:fallback:popular", ["a" * 24, "b" * 24], 86_400)
    client = redis.Redis.from_url(redis_url)
    assert client.get("rec:fallback:popular") == b'["aaaaaaaaaaaaaaaaaaaaaaaa","bbbbbbbbbbbbbbbbbbbbbbbb"]'
    assert 86_390 < client.ttl("rec:fallback:popular") <= 86_400
    cache.publish_list(redis_url, "rec:fallback:popular", ["c" * 24], 100)
    assert cache.read_list(redis_url, "rec:fallback:popular") == ["c" * 24]
    assert client.ttl("rec:fallback:popular") <= 100


def test_unreachable_redis_fails_clearly_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(cache.RedisUnavailable, match=r"REDIS_URL redis://:\*\*\*@127\.0\.0\.1") as raised:
        cache.publish_list(url, "k", ["x"], 10)
    assert "hunter2" not in str(raised.value)
