"""Every user's exact recommendations, defined as the API defines them.

Plain numpy, no Luigi. For each user:

- *liked*: the user's ``LIKED_LIMIT`` (50) newest ``rate`` interactions with ``value >=
  LIKED_MIN_VALUE`` (4.0), newest first, ties by ``movieId`` ascending; then their distinct movies;
- *profile*: the mean of the liked movies' embeddings (movies without one are left out);
- *candidates*: every movie with an embedding the user has no interaction of any type with;
- the ``k`` candidates of highest cosine(profile, movie), ties by ``_id`` ascending.

A user without a liked movie with an embedding, or without a candidate, gets no list.

Movies are rows of the embedding matrix in ``_id`` order, so "ties by ``_id``" is "ties by
row". Interactions come as :data:`INTERACTION` rows from two places: the MovieLens ratings
(the bucket's ratings parts) and the API's own documents (MongoDB). Scores are computed in
blocks of users: one matrix product, the seen movies masked, ``argpartition`` at ``k``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pymongo.collection import Collection

from mlrec_luigi import mongo, partitions
from mlrec_luigi.errors import Damaged
from mlrec_luigi.npy import from_npy
from mlrec_luigi.settings import USER_REDIS_PREFIX
from mlrec_luigi.similar import select_top_k

LIKED_LIMIT = 50
LIKED_MIN_VALUE = partitions.LIKED_MIN_VALUE
BLOCK_USERS = 512  # users scored per matrix product: 512 x movies x 4 bytes of scores (180 MB at 87,585 movies)

# One interaction: the user's index, the movie's rank among every movie id (known or not: the
# tie order), its row in the embedding matrix (-1: no embedding), whether it is a like, its time.
INTERACTION = np.dtype([("user", "<i4"), ("rank", "<i4"), ("row", "<i4"), ("liked", "?"), ("time_us", "<i8")])


@dataclass(frozen=True)
class Profiles:
    """Who has a profile (a liked movie with an embedding), what they liked, what they have seen."""

    users: np.ndarray  # int32 user indices that have a profile, ascending
    liked_users: np.ndarray  # int32, sorted: (liked_users[i], liked_rows[i]) = a liked movie of the user
    liked_rows: np.ndarray
    seen_users: np.ndarray  # int32, sorted: (seen_users[i], seen_rows[i]) = a movie the user interacted with
    seen_rows: np.ndarray

    def vectors(self, embeddings: np.ndarray, start: int, stop: int) -> np.ndarray:
        """The unit profiles of ``users[start:stop]``: the mean of each one's liked vectors (float64 sums)."""
        users = self.users[start:stop]
        low, high = np.searchsorted(self.liked_users, [users[0], users[-1] + 1]) if len(users) else (0, 0)
        liked_users, liked_rows = self.liked_users[low:high], self.liked_rows[low:high]
        starts = np.searchsorted(liked_users, users)
        sums = np.add.reduceat(embeddings[liked_rows].astype(np.float64), starts, axis=0)
        means = sums / np.diff(np.r_[starts, len(liked_rows)])[:, None]
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        return (means / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def liked_rows(interactions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users, rows): each user's distinct liked movies with an embedding, as the API picks them."""
    at = np.flatnonzero(interactions["liked"]).astype(np.int32 if len(interactions) < 2**31 else np.int64)
    users = interactions["user"][at]
    order = np.lexsort((interactions["rank"][at], -interactions["time_us"][at], users))
    users, at = users[order], at[order]
    del order
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]).astype(at.dtype)
    place = np.arange(len(users), dtype=at.dtype)
    place -= np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    newest = at[place < LIKED_LIMIT]
    del place, starts, at
    rows = interactions["row"][newest]
    known = rows >= 0
    return distinct_pairs(interactions["user"][newest][known], rows[known])


def distinct_pairs(users: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (user, row) pairs, sorted by user then row (one int64 sort in place, not a sort of rows)."""
    width = int(rows.max(initial=0)) + 1
    keys = users.astype(np.int64)
    keys *= width
    keys += rows
    keys.sort()
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    return (keys // width).astype(np.int32), (keys % width).astype(np.int32)


def build_profiles(interactions: np.ndarray) -> Profiles:
    """Who has a profile, their liked movies, and every user's seen movies."""
    liked_users, liked = liked_rows(interactions)
    known = interactions["row"] >= 0
    seen_users, seen_rows = distinct_pairs(interactions["user"][known], interactions["row"][known])
    del known
    return Profiles(np.unique(liked_users), liked_users, liked, seen_users, seen_rows)


def mask_seen(scores: np.ndarray, users: np.ndarray, seen: tuple[np.ndarray, np.ndarray]) -> None:
    """Set the score of every movie ``users`` (the rows of ``scores``, ascending) have ``seen`` to -inf."""
    seen_users, seen_rows = seen
    low, high = np.searchsorted(seen_users, [users[0], users[-1] + 1])
    seen_users, seen_rows = seen_users[low:high], seen_rows[low:high]
    at = np.searchsorted(users, seen_users)
    mine = users[np.minimum(at, len(users) - 1)] == seen_users  # users without a vector are not scored
    scores[at[mine], seen_rows[mine]] = -np.inf


def top_k_blocks(
    users: np.ndarray,
    queries: Callable[[int, int], np.ndarray],
    items: np.ndarray,
    seen: tuple[np.ndarray, np.ndarray],
    k: int,
    block_users: int = BLOCK_USERS,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each block of ``users`` (ascending): (the block, int32 rows (block, k), -1 where fewer candidates).

    ``queries(start, stop)`` gives the vectors of ``users[start:stop]``; a movie's score is the product of
    the user's vector with ``items[row]``; the ``seen`` pairs (users, rows; sorted by user) are masked. Shared
    by the content lists (unit profiles x embeddings) and the collaborative ones (user x movie factors).
    """
    buffer = np.empty((min(block_users, len(users)), items.shape[0]), np.float32)
    for start in range(0, len(users), block_users):
        block = users[start : start + block_users]
        # One buffer for every block: no fresh 180 MB of scores to fault in per block.
        scores = np.matmul(queries(start, start + len(block)), items.T, out=buffer[: len(block)])
        mask_seen(scores, block, seen)
        picked, picked_scores = select_top_k(scores, min(k, items.shape[0]))
        picked[picked_scores == -np.inf] = -1  # fewer candidates than k
        if on_progress:
            on_progress(start + len(block))
        yield block, picked


def recommend(
    profiles: Profiles,
    vectors: np.ndarray,
    k: int,
    block_users: int = BLOCK_USERS,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each block of profile users: (user indices, rows int32 (users, k), -1 where fewer candidates)."""
    return top_k_blocks(
        profiles.users,
        lambda start, stop: profiles.vectors(vectors, start, stop),
        vectors,
        (profiles.seen_users, profiles.seen_rows),
        k,
        block_users,
        on_progress,
    )


def fingerprints_of(users: np.ndarray, hashes: np.ndarray, count: int) -> np.ndarray:
    """Per user: an order-independent fingerprint of their API interactions (0: none).

    ``hashes[i]`` identifies interaction i (``partitions.payload_hash``: its ``_id`` and fields); ``users[i]``
    its user.
    """
    fingerprints = np.zeros(count, dtype=np.uint64)
    np.add.at(fingerprints, users, hashes.astype(np.uint64))  # wraps modulo 2**64: the order does not matter
    return fingerprints


@dataclass(frozen=True)
class Gathered:
    """Every user's interactions, MovieLens and the API's, in one table."""

    users: np.ndarray  # user id strings (object array), sorted; a user's index is its position
    interactions: np.ndarray  # INTERACTION rows
    fingerprints: np.ndarray  # uint64 per user: their API interactions (0: none)
    last_time_us: np.ndarray  # int64 per user: their newest interaction


def gather(
    movielens: Sequence[np.ndarray], movie_map: dict[int, str], ids: np.ndarray, api_rows: np.ndarray
) -> Gathered:
    """One table of the MovieLens ratings (``RATING_RECORD`` parts) and the API's documents
    (``partitions.api_records``).

    ``movie_map``: MovieLens movieId → ``movies._id``; ``ids``: the embedding rows' ``_id``s, sorted.
    """
    api_movies = np.char.decode(api_rows["movie"]).tolist() if len(api_rows) else []
    ranked = np.unique(np.concatenate([ids, np.array(api_movies, dtype=ids.dtype if len(ids) else str)]))
    ml_ids = np.fromiter(movie_map, dtype=np.int64, count=len(movie_map))
    ml_hex = np.array([movie_map[m] for m in ml_ids.tolist()], dtype=ranked.dtype)
    ml_row = np.full(int(ml_ids.max(initial=0)) + 1, -1, np.int32)
    positions = np.searchsorted(ids, ml_hex)
    found = (positions < len(ids)) & (ids[np.minimum(positions, max(len(ids) - 1, 0))] == ml_hex)
    ml_row[ml_ids[found]] = positions[found]
    ml_rank = np.full(len(ml_row), -1, np.int32)
    ml_rank[ml_ids] = np.searchsorted(ranked, ml_hex)

    present = np.zeros(1, bool)
    for part in movielens:
        top = int(part["userId"].max(initial=0)) + 1
        if top > len(present):
            present = np.pad(present, (0, top - len(present)))
        present[part["userId"]] = True
    ml_users = np.flatnonzero(present)
    api_users = np.char.decode(api_rows["user"]).tolist() if len(api_rows) else []
    users = np.array(sorted({*map(str, ml_users.tolist()), *api_users}), dtype=object)
    index = {user: i for i, user in enumerate(users.tolist())}
    ml_user_index = np.full(len(present), -1, np.int32)
    ml_user_index[ml_users] = [index[str(u)] for u in ml_users.tolist()]

    total = sum(len(part) for part in movielens) + len(api_rows)
    table = np.empty(total, INTERACTION)
    at = 0
    for part in movielens:
        rows = table[at : at + len(part)]
        movie = part["movieId"].astype(np.int64)
        rows["user"] = ml_user_index[part["userId"]]
        rows["row"] = ml_row[movie]
        rows["rank"] = ml_rank[movie]
        rows["liked"] = part["rating"] >= LIKED_MIN_VALUE
        rows["time_us"] = part["timestamp"].astype(np.int64) * 1_000_000
        at += len(part)
    api = table[at:]
    api_user = np.array([index[u] for u in api_users], dtype=np.int32)
    api["user"] = api_user
    api_hex = np.array(api_movies, dtype=ranked.dtype if len(ranked) else str)
    api["rank"] = np.searchsorted(ranked, api_hex) if len(api_rows) else 0
    positions = np.searchsorted(ids, api_hex) if len(api_rows) else np.empty(0, np.int64)
    known = (
        (positions < len(ids)) & (ids[np.minimum(positions, max(len(ids) - 1, 0))] == api_hex) if len(ids) else False
    )
    api["row"] = np.where(known, positions, -1)
    api["liked"] = api_rows["liked"]
    api["time_us"] = api_rows["time_us"]

    last = np.full(len(users), np.iinfo(np.int64).min, np.int64)
    np.maximum.at(last, table["user"], table["time_us"])
    return Gathered(users, table, fingerprints_of(api_user, api_rows["hash"], len(users)), last)


def fingerprints_by_user(api_docs: Sequence[dict]) -> dict[str, int]:
    """userId → the fingerprint of their API interactions, as :func:`gather` computes it."""
    return api_fingerprints(partitions.api_records(api_docs))


def user_lists(gathered: Gathered, users: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """int32 (len(users), k) embedding rows of each of ``users`` (indices), -1 where none."""
    rows = np.full((len(users), k), -1, np.int32)
    if not len(users) or k == 0:
        return rows
    if len(users) == len(gathered.users):  # everyone: no copy of the table
        profiles = build_profiles(gathered.interactions)
    else:
        wanted = np.zeros(len(gathered.users), bool)
        wanted[users] = True
        profiles = build_profiles(gathered.interactions[wanted[gathered.interactions["user"]]])
    for block_users, picked in recommend(profiles, vectors, k, BLOCK_USERS):
        rows[np.searchsorted(users, block_users), : picked.shape[1]] = picked
    return rows


class StateDamaged(Damaged):
    """A stored user-lists state cannot be read; the message names it."""


def partition_records(gathered: Gathered, rows: np.ndarray, reused: np.ndarray) -> np.ndarray:
    """A partition's result: each user's list (catalogue rows, -1 for none), API fingerprint, newest time,
    and whether the list was reused from the state."""
    users = gathered.users.tolist()
    records = np.empty(len(users), partition_dtype(partitions.text_width(users), rows.shape[1]))
    records["user"] = [u.encode() for u in users]
    records["fingerprint"] = gathered.fingerprints
    records["last_time_us"] = gathered.last_time_us
    records["reused"] = reused
    records["rows"] = rows
    return records


def partition_dtype(user_width: int, k: int) -> np.dtype:
    return np.dtype([("user", f"S{user_width}"), ("fingerprint", "<u8"), ("last_time_us", "<i8"), ("reused", "?"),
                     ("rows", "<i4", (k,))])  # fmt: skip


def partition_decoder(k: int) -> Callable[[bytes, str], np.ndarray]:
    """A decoder of one partition's lists of ``k`` movies per user, dated or its state (damaged:
    :class:`StateDamaged`)."""
    return functools.partial(read_partition, k=k)


def read_partition(data: bytes, label: str, k: int) -> np.ndarray:
    records = from_npy(data, label, StateDamaged)
    if records.dtype.names != ("user", "fingerprint", "last_time_us", "reused", "rows") or records["rows"].shape[
        1:
    ] != (k,):
        raise StateDamaged(f"{label} is not a partition of user lists for {k} movies per user")
    return records


def api_fingerprints(piece: np.ndarray) -> dict[str, int]:
    """userId → the fingerprint of their API interactions in a piece of API records, as :func:`gather` makes it."""
    if not len(piece):
        return {}
    users, owners = np.unique(piece["user"], return_inverse=True)
    fingerprints = fingerprints_of(owners, piece["hash"], len(users))
    return dict(zip(np.char.decode(users).tolist(), fingerprints.tolist(), strict=True))


def changed_users(state: np.ndarray, api_now: dict[str, int]) -> set[str]:
    """The users whose API interactions differ from what their stored list was computed from (new ones too)."""
    stored = dict(zip(np.char.decode(state["user"]).tolist(), state["fingerprint"].tolist(), strict=True))
    changed = {user for user, fingerprint in api_now.items() if stored.get(user) != fingerprint}
    return changed | {user for user, fingerprint in stored.items() if fingerprint and user not in api_now}


def with_changes(state: np.ndarray, changed: set[str], computed: np.ndarray) -> np.ndarray:
    """The state with the ``changed`` users' records replaced by ``computed`` ones (a changed user absent from
    ``computed`` has no interaction left: dropped); the others marked reused. Ordered by user."""
    keep = state[~np.isin(np.char.decode(state["user"]), list(changed))] if changed else state
    width = max(keep.dtype["user"].itemsize, computed.dtype["user"].itemsize)
    dtype = partition_dtype(width, state["rows"].shape[1])
    merged = np.concatenate([keep.astype(dtype), computed.astype(dtype)])
    merged["reused"][: len(keep)] = True
    return merged[np.argsort(merged["user"], kind="stable")]


def distinct_movies(rows: np.ndarray) -> int:
    """How many distinct movies the lists ``rows`` (movie rows, -1 for none) recommend: the catalogue they cover."""
    return int(np.unique(rows[rows >= 0]).size)


def api_fingerprints_of_keys(collection: Collection, keys: Sequence[str]) -> dict[str, int]:
    """Each ``rec:user:<userId>`` key's owner's API fingerprint today (0: no API interaction)."""
    users = [key.removeprefix(USER_REDIS_PREFIX) for key in keys]
    now = fingerprints_by_user(mongo.api_interactions_of(collection, users))
    return {f"{USER_REDIS_PREFIX}{user}": now.get(user, 0) for user in users}
