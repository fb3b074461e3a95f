"""Publishing to a real redis-server."""

from __future__ import annotations

import pytest
import redis

from mlrec_luigi import cache, published
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
    assert published.publish_policy("redis://h", ["a"]) == published.PUBLISHED
    assert published.publish_policy("redis://h", []) == published.KEPT_PREVIOUS
    assert published.publish_policy(None, ["a"]) == published.NO_REDIS
    assert published.publish_policy("redis://h", ["a"], live=False) == published.NOT_LIVE


def test_unreachable_redis_fails_clearly_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(cache.RedisUnavailable, match=r"REDIS_URL redis://:\*\*\*@127\.0\.0\.1") as raised:
        cache.publish_list(url, "k", ["x"], 10)
    assert "hunter2" not in str(raised.value)


def test_publishing_falls_back_to_pipelined_sets_where_scripts_are_refused(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).execute_command(
        "ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "&*", "+@all", "-@scripting"
    )
    url = redis_url.replace("redis://", "redis://noscripts:pw@")
    lists = [(f"rec:item:{i:024x}", [f"{i + 1:024x}", 'a "quoted" id']) for i in range(1_500)]
    assert list(cache.publish_lists(url, lists, 500)) == [1_000, 1_500]
    assert cache.read_lists(redis_url, [key for key, _ in lists]) == [values for _, values in lists]
    assert all(490 < ttl <= 500 for ttl in cache.ttls(redis_url, [key for key, _ in lists]))


@pytest.fixture
def replica_url(redis_url: str, tmp_path) -> object:
    """A read-only replica of the test redis-server (what a failover can leave a URL pointing at)."""
    from tests.support.env import redis_command
    from tests.support.processes import background, wait_until

    primary = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    port = free_port()
    with background(redis_command(port, tmp_path, "--replicaof", "127.0.0.1", str(primary)), tmp_path / "r.log"):
        wait_until(lambda: redis.Redis(port=port).info("replication")["master_link_status"] == "up", "replica")
        yield f"redis://127.0.0.1:{port}/0"


@pytest.mark.parametrize("refusal", ["out-of-memory", "read-only-replica", "no-permission"])
@pytest.mark.parametrize("writer", ["one list", "many lists"])
def test_redis_refusing_writes_is_named_and_the_keys_stay(
    redis_url: str, request: pytest.FixtureRequest, refusal: str, writer: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("rec:item:kept", '["old"]')
    url, cause = redis_url, ""
    if refusal == "out-of-memory":
        client.config_set("maxmemory", "1")
        cause = r"Redis is out of memory \(maxmemory reached\) \(used \S+ of maxmemory 1B\)"
    elif refusal == "read-only-replica":
        url = request.getfixturevalue("replica_url")
        cause = r"Redis is a read-only replica \(a failover\?\)"
    else:
        client.execute_command("ACL", "SETUSER", "reader", "on", "nopass", "~*", "+@read", "+@connection")
        url = redis_url.replace("redis://", "redis://reader@")
        cause = r"the Redis user lacks a permission \(ACL\)"
    try:
        with pytest.raises(
            cache.RedisUnavailable, match=rf"^REDIS_URL redis://\S+: cannot publish \S+( lists)?: {cause}"
        ):
            if writer == "one list":
                cache.publish_list(url, "rec:item:kept", ["new"], 100)
            else:
                list(cache.publish_lists(url, [("rec:item:kept", ["new"]), ("rec:item:other", ["x"])], 100))
    finally:
        client.config_set("maxmemory", "0")
        client.execute_command("ACL", "DELUSER", "reader")
    assert client.get("rec:item:kept") == b'["old"]'
