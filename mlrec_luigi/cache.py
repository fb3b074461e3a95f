"""Redis: publishing the popular list as the API's fallback.

The only module that talks to Redis. One ``SET key value EX ttl`` replaces the value and
its TTL in a single atomic command, so a reader sees the old list or the new one and the
key is never missing or half-written during an update.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis

from mlrec_luigi.settings import redact

CONNECT_TIMEOUT_S = 10


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached or refused the write; the message names the (redacted) URL."""


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)


def publish_list(url: str, key: str, values: Sequence[str], ttl_seconds: int) -> None:
    """Store ``values`` as a JSON array under ``key`` with a TTL, atomically.

    Raises:
        RedisUnavailable: the server cannot be reached or refused the write.
    """
    payload = json.dumps(list(values), separators=(",", ":"))
    try:
        with _client(url) as client:
            client.set(key, payload, ex=ttl_seconds)
    except (redis.RedisError, ValueError) as error:
        raise RedisUnavailable(f"REDIS_URL {redact(url)}: cannot publish {key}: {redact(str(error))}") from None


def read_list(url: str, key: str) -> list[str] | None:
    """The JSON list stored under ``key``, or None when it is missing."""
    try:
        with _client(url) as client:
            raw = client.get(key)
    except (redis.RedisError, ValueError) as error:
        raise RedisUnavailable(f"REDIS_URL {redact(url)}: cannot read {key}: {redact(str(error))}") from None
    return None if raw is None else json.loads(raw)
