"""Redis: the lists the API reads, written atomically and read back (the rules of publishing: ``published.py``).

The only module that talks to Redis. One ``SET key value EX ttl`` replaces a value and
its TTL in a single atomic command, so a reader sees the old list or the new one and a
key is never missing or half-written during an update. Many keys go out in batches: each
batch is one server-side script that runs ``SET key value EX ttl`` for each of its keys
(one round trip and one command to pack per batch, not per key), falling back to a
pipeline of ``SET`` commands where the server refuses scripts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from itertools import islice

import redis

from mlrec_luigi.errors import Expected
from mlrec_luigi.settings import redact

CONNECT_TIMEOUT_S = 10
PUBLISH_BATCH = 1_000
_PLAIN = re.compile(r"[0-9A-Za-z_.:-]*")  # strings JSON writes as they are (ids), without escapes
# ARGV[1] is the TTL; KEYS[i] gets ARGV[i + 1].
SET_EACH = "local ttl = ARGV[1] for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'EX', ttl) end"


class RedisUnavailable(Expected, RuntimeError):
    """Redis cannot be reached or refused the write; the message names the (redacted) URL."""


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)


# Why a server refuses writes, in words an operator acts on (by a text its error holds).
REFUSALS = {
    "used memory > 'maxmemory'": "Redis is out of memory (maxmemory reached)",
    "read only replica": "Redis is a read-only replica (a failover?)",
    "NOPERM": "the Redis user lacks a permission (ACL)",
    "MISCONF": "Redis cannot persist to disk and refuses writes",
}


def _refusal(error: Exception) -> str | None:
    if isinstance(error, redis.exceptions.NoPermissionError):  # redis-py drops the NOPERM code from its text
        return REFUSALS["NOPERM"]
    text = str(error)
    return next((words for sign, words in REFUSALS.items() if sign in text), None)


def _scripts_refused(error: redis.ResponseError) -> bool:
    """Whether the server refuses scripts themselves (not a write inside one)."""
    text = str(error)
    if "script" not in text.lower() and "eval" not in text.lower():
        return False
    return _refusal(error) in (None, REFUSALS["NOPERM"])


def _failed(url: str, action: str, error: Exception) -> RedisUnavailable:
    cause = _refusal(error)
    if cause == REFUSALS["used memory > 'maxmemory'"]:
        cause += _memory(url)
    prefix = f"{cause}: " if cause else ""
    return RedisUnavailable(f"REDIS_URL {redact(url)}: cannot {action}: {prefix}{redact(str(error))}")


def _memory(url: str) -> str:
    """`` (used X of maxmemory Y)``, from ``INFO memory`` when the server answers it."""
    try:
        with _client(url) as client:
            info = client.info("memory")
        return f" (used {info.get('used_memory_human')} of maxmemory {info.get('maxmemory_human')})"
    except (redis.RedisError, ValueError):
        return ""


def encode_list(values: Sequence[str]) -> str:
    """``values`` as a compact JSON array (ids, the common case, joined without the encoder)."""
    if _PLAIN.fullmatch("".join(values)):
        return '["' + '","'.join(values) + '"]' if values else "[]"
    return json.dumps(list(values), separators=(",", ":"))


def publish_list(url: str, key: str, values: Sequence[str], ttl_seconds: int) -> None:
    """Store ``values`` as a JSON array under ``key`` with a TTL, atomically.

    Raises:
        RedisUnavailable: the server cannot be reached or refused the write.
    """
    try:
        with _client(url) as client:
            client.set(key, encode_list(values), ex=ttl_seconds)
    except (redis.RedisError, ValueError) as error:
        raise _failed(url, f"publish {key}", error) from None


def publish_lists(
    url: str,
    lists: Iterable[tuple[str, Sequence[str]]],
    ttl_seconds: int,
    leave_out: Callable[[list[str]], Collection[str]] | None = None,
) -> Iterator[int]:
    """Store many ``(key, values)`` lists, each with one ``SET … EX``, pipelined in batches.

    ``leave_out(keys)``, called just before each batch is sent, names keys of the batch not
    to write. Yields the number of keys handled after each batch.
    """
    done = 0
    lists = iter(lists)
    try:
        with _client(url) as client:
            set_each = client.register_script(SET_EACH)
            scripts = True
            while batch := list(islice(lists, PUBLISH_BATCH)):
                handled = len(batch)
                if leave_out is not None:
                    left_out = set(leave_out([key for key, _ in batch]))
                    batch = [(key, values) for key, values in batch if key not in left_out]
                keys, values = [key for key, _ in batch], [encode_list(v) for _, v in batch]
                if scripts and keys:
                    try:
                        set_each(keys=keys, args=[ttl_seconds, *values])
                    except redis.ResponseError as error:
                        if not _scripts_refused(error):
                            raise
                        scripts = False  # scripting disabled on this server: plain pipelined SETs
                if not scripts and keys:
                    pipe = client.pipeline(transaction=False)
                    for key, value in zip(keys, values, strict=True):
                        pipe.set(key, value, ex=ttl_seconds)
                    pipe.execute()
                done += handled
                yield done
    except (redis.RedisError, ValueError) as error:
        raise _failed(url, "publish lists", error) from None


def read_list(url: str, key: str) -> list[str] | None:
    """The JSON list stored under ``key``, or None when it is missing."""
    return read_lists(url, [key])[0]


def read_lists(url: str, keys: Sequence[str]) -> list[list[str] | None]:
    """The JSON lists stored under ``keys`` (None where missing), in one round trip."""
    try:
        with _client(url) as client:
            raw = client.mget(list(keys)) if keys else []
    except (redis.RedisError, ValueError) as error:
        raise _failed(url, f"read {len(keys)} key(s)", error) from None
    return [None if value is None else json.loads(value) for value in raw]


def ttls(url: str, keys: Sequence[str]) -> list[int]:
    """The remaining TTL of each key in seconds (-1: none, -2: missing)."""
    try:
        with _client(url) as client:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.ttl(key)
            return [int(t) for t in pipe.execute()]
    except (redis.RedisError, ValueError) as error:
        raise _failed(url, "read TTLs", error) from None


def delete_keys(url: str, keys: Sequence[str]) -> int:
    """Delete ``keys``; how many existed."""
    if not keys:
        return 0
    try:
        with _client(url) as client:
            return int(client.delete(*keys))
    except (redis.RedisError, ValueError) as error:
        raise _failed(url, f"delete {len(keys)} key(s)", error) from None


# Per batch of keys: the sha1 of the concatenated sha1s of their values ("-" for a missing key).
DIGEST_EACH = (
    "local parts = {} for i, key in ipairs(KEYS) do local v = redis.call('GET', key) "
    "parts[i] = v and redis.sha1hex(v) or '-' end return redis.sha1hex(table.concat(parts))"
)
VERIFY_BATCH = 10_000


def value_sha1(values: Sequence[str]) -> str:
    """The sha1 (hex) of a list as :func:`publish_lists` stores it."""
    return hashlib.sha1(encode_list(values).encode(), usedforsecurity=False).hexdigest()


def differing_keys(url: str, keys: Sequence[str], sha1s: Sequence[str]) -> list[str]:
    """Those of ``keys`` whose value is not the one of sha1 ``sha1s[i]`` (missing ones included).

    Every key is compared, not a sample: one server-side digest per ``VERIFY_BATCH`` keys,
    all batches in one pipelined round trip; only a batch whose digest differs is read
    back key by key. Where the server refuses scripts, every value is read back (MGET).
    """
    batches = [(start, start + VERIFY_BATCH) for start in range(0, len(keys), VERIFY_BATCH)]
    try:
        with _client(url) as client:
            try:
                pipe = client.pipeline(transaction=False)
                for start, stop in batches:
                    pipe.eval(DIGEST_EACH, stop - start, *keys[start:stop])
                digests = [d.decode() if isinstance(d, bytes) else d for d in pipe.execute()]
            except redis.ResponseError as error:
                if not _scripts_refused(error):
                    raise
                digests = [None] * len(batches)  # scripting refused: compare every value
            differing: list[str] = []
            for (start, stop), digest in zip(batches, digests, strict=True):
                expected = hashlib.sha1("".join(sha1s[start:stop]).encode(), usedforsecurity=False).hexdigest()
                if digest == expected:
                    continue
                values = client.mget(list(keys[start:stop]))
                differing.extend(
                    key
                    for key, value, sha1 in zip(keys[start:stop], values, sha1s[start:stop], strict=True)
                    if value is None or hashlib.sha1(value, usedforsecurity=False).hexdigest() != sha1
                )
            return differing
    except (redis.RedisError, ValueError) as error:
        raise _failed(url, f"read back {len(keys)} key(s)", error) from None
