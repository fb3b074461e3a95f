"""The offline quality of the lists the pipeline publishes, on a temporal holdout of the MovieLens ratings.

The holdout, precisely:

- a *like* is a rating of 4.0 or more (the API's definition) of a movie with an embedding;
- the users are every user of the ratings, or a sample of ``sample_users`` of them chosen by a hash of
  the userId (stable from run to run, so two runs measure the same users); of those, an *eligible* user
  has at least ``MIN_LIKES`` distinct liked movies;
- the *held-out like* is the user's newest like (ties: the smallest movieId);
- the user's *history* is every rating of theirs strictly older than the held-out like, except any of
  the held-out movie: nothing at or after that moment, and the hidden movie is neither in the profile
  nor excluded as seen;
- a user whose history holds no like is left out (the personal list needs one); the others get
  their list computed from the history exactly as the user-lists stage does (the mean embedding of
  the 50 newest likes, every unseen movie ranked by cosine; ties by movieId);
- hit rate@10: the share of users whose held-out movie is in their first 10; NDCG@10: 1/log2(1 + rank)
  of the held-out movie when it is in the first 10, else 0 (one relevant movie: the ideal DCG is 1);
  recall@10: the share of the held-out likes found (with one held-out like per user, the hit rate).

Baselines on the same users: the popular list as the API serves it (the popularity rule applied to the
history of everyone: the likes of the window ending at the newest rating), the all-time popularity of
likes (each user's first 10 unseen), and the API's own method on a miss (the best 10 of 500 random
unseen movies, averaged over seeds; on the first 2,000 users). For the similar movies: how often a
user's held-out like is among the 10 most similar movies of their previous like (the first 2,000 users).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlrec_luigi import user_recs
from mlrec_luigi.damage import json_decoder, read_checked
from mlrec_luigi.similar import select_top_k
from mlrec_luigi.storage import Bucket

K = 10
MIN_LIKES = 2
API_CANDIDATES = 500
API_SEEDS = (1, 2, 3)
SIMILAR_USERS = 2_000  # the similar-movies measure scores the previous like against every movie: capped
API_USERS = 2_000  # the API's method draws candidates user by user: a baseline measured on the first users


@dataclass(frozen=True)
class Holdout:
    """The measured users, what is hidden from each, and what the lists are computed from."""

    users: np.ndarray  # uint32 MovieLens userIds, ascending
    held: np.ndarray  # int32 catalogue row of each user's held-out like
    previous: np.ndarray  # int32 row of each user's previous like (-1: none)
    history: np.ndarray  # user_recs.INTERACTION rows ("user": the index into users)
    history_rating: np.ndarray  # float32: the rating of each history row
    newest_s: int  # the newest rating of the history (seconds): where the popular window ends


def sampled(users: np.ndarray, sample_users: int) -> np.ndarray:
    """Whether each userId is in the stable sample of ``sample_users`` (all when there are no more)."""
    if len(users) <= sample_users:
        return np.ones(len(users), bool)
    keys = np.array(
        [int.from_bytes(hashlib.blake2b(str(u).encode(), digest_size=8).digest(), "little") for u in users.tolist()],
        dtype=np.uint64,
    )
    cutoff = np.partition(keys, sample_users - 1)[sample_users - 1]
    return keys <= cutoff


def build_holdout(
    ratings: Sequence[np.ndarray], movie_row: np.ndarray, sample_users: int, min_likes: int = MIN_LIKES
) -> Holdout:
    """The holdout from ratings parts (``RATING_RECORD``); ``movie_row[movieId]`` is its catalogue row or -1.

    The users are sampled first (a stable hash of the userId), so the memory is that of the sample's
    ratings, not of the data set's.
    """
    everyone = np.unique(np.concatenate([np.unique(p["userId"]) for p in ratings])) if ratings else np.zeros(0)
    drawn = everyone[sampled(everyone, sample_users)]
    kept = [p[np.isin(p["userId"], drawn)] for p in ratings]
    table = np.concatenate(kept) if kept else np.empty(0, _RATINGS)
    movie = table["movieId"].astype(np.int64)
    row = np.where(movie < len(movie_row), movie_row[np.minimum(movie, len(movie_row) - 1)], -1).astype(np.int32)
    like = (table["rating"] >= user_recs.LIKED_MIN_VALUE) & (row >= 0)
    # Each user's likes, newest first, ties by movieId (= catalogue row order): the first is held out.
    at = np.flatnonzero(like)
    order = np.lexsort((row[at], -table["timestamp"][at].astype(np.int64), table["userId"][at]))
    at = at[order]
    liked_users = table["userId"][at]
    first = np.r_[True, liked_users[1:] != liked_users[:-1]] if len(at) else np.zeros(0, bool)
    distinct = _distinct_likes(liked_users, row[at])
    candidates = liked_users[first]
    chosen = candidates[distinct >= min_likes]
    held_at = at[first][distinct >= min_likes]
    held_row, held_time = row[held_at], table["timestamp"][held_at].astype(np.int64)
    if not len(chosen):  # no user with enough likes: nothing to measure
        empty = np.zeros(0, np.int32)
        return Holdout(chosen, empty, empty, np.empty(0, user_recs.INTERACTION), np.zeros(0, np.float32), 0)
    # History: older than the held-out like, without its movie.
    index = np.searchsorted(chosen, table["userId"])
    mine = (index < len(chosen)) & (chosen[np.minimum(index, len(chosen) - 1)] == table["userId"])
    user = np.where(mine, index, 0)
    keep = mine & (table["timestamp"].astype(np.int64) < held_time[user]) & (row != held_row[user])
    history = np.empty(int(keep.sum()), user_recs.INTERACTION)
    history["user"] = user[keep]
    history["row"] = row[keep]
    history["rank"] = np.where(row[keep] >= 0, row[keep], np.iinfo(np.int32).max)
    history["liked"] = like[keep]
    history["time_us"] = table["timestamp"][keep].astype(np.int64) * 1_000_000
    history_rating = table["rating"][keep]
    previous = _previous_like(history, len(chosen))
    with_profile = np.zeros(len(chosen), bool)
    with_profile[history["user"][history["liked"]]] = True
    kept_users = np.flatnonzero(with_profile)
    remap = np.full(len(chosen), -1, np.int32)
    remap[kept_users] = np.arange(len(kept_users), dtype=np.int32)
    still = with_profile[history["user"]]
    history, history_rating = history[still], history_rating[still]
    history["user"] = remap[history["user"]]
    newest = int(table["timestamp"][keep].max(initial=0))
    return Holdout(chosen[kept_users], held_row[kept_users], previous[kept_users], history, history_rating, newest)


_RATINGS = np.dtype([("timestamp", "<u4"), ("userId", "<u4"), ("movieId", "<u4"), ("rating", "<f4")])


def _distinct_likes(users: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per user (in the order of ``users``' runs): how many distinct movies they like."""
    if not len(users):
        return np.zeros(0, np.int64)
    pairs = np.unique(np.stack([users.astype(np.int64), rows.astype(np.int64)], axis=1), axis=0)
    _, counts = np.unique(pairs[:, 0], return_counts=True)
    return counts


def _previous_like(history: np.ndarray, users: int) -> np.ndarray:
    """Each user's newest like in the history (the like before the held-out one), -1 for none."""
    previous = np.full(users, -1, np.int32)
    liked = history[history["liked"]]
    if len(liked):
        order = np.lexsort((liked["rank"], -liked["time_us"], liked["user"]))
        liked = liked[order]
        first = np.r_[True, liked["user"][1:] != liked["user"][:-1]]
        previous[liked["user"][first]] = liked["row"][first]
    return previous


@dataclass(frozen=True)
class Measures:
    """hit rate@10, NDCG@10 and recall@10 of one method over the measured users."""

    users: int
    hit_rate: float
    ndcg: float
    recall: float

    def as_dict(self) -> dict[str, float | int]:
        return {"users": self.users, "hit_rate": round(self.hit_rate, 6), "ndcg": round(self.ndcg, 6),
                "recall": round(self.recall, 6)}  # fmt: skip


def measures(lists: np.ndarray, held: np.ndarray) -> Measures:
    """The measures of ``lists`` (int rows, (users, >= K), -1 for none) against one held-out row per user."""
    top = lists[:, :K]
    found = top == held[:, None]
    hit = found.any(axis=1)
    rank = np.argmax(found, axis=1) + 1
    gains = np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0)
    users = len(held)
    return Measures(users, float(hit.mean()) if users else 0.0, float(gains.mean()) if users else 0.0,
                    float(hit.mean()) if users else 0.0)  # fmt: skip


def content_lists(holdout: Holdout, vectors: np.ndarray) -> np.ndarray:
    """Every measured user's first K, computed from the history as the user-lists stage computes it."""
    everyone = np.arange(len(holdout.users))
    gathered = user_recs.Gathered(
        users=holdout.users.astype(object),
        interactions=holdout.history,
        fingerprints=np.zeros(len(holdout.users), np.uint64),
        last_time_us=np.zeros(len(holdout.users), np.int64),
    )
    return user_recs.user_lists(gathered, everyone, vectors, K)


def _seen(holdout: Holdout) -> list[np.ndarray]:
    order = np.argsort(holdout.history["user"], kind="stable")
    users, rows = holdout.history["user"][order], holdout.history["row"][order]
    known = rows >= 0
    users, rows = users[known], rows[known]
    bounds = np.searchsorted(users, np.arange(len(holdout.users) + 1))
    return [np.unique(rows[bounds[i] : bounds[i + 1]]) for i in range(len(holdout.users))]


def popular_fallback(holdout: Holdout, recent_days: int, min_rating: float, top_n: int) -> np.ndarray:
    """The popular list as the API serves it to everyone: the likes of the window ending at the newest rating."""
    history = holdout.history
    start_us = (holdout.newest_s - recent_days * 86_400) * 1_000_000
    counted = (history["time_us"] > start_us) & (history["row"] >= 0) & (holdout.history_rating >= min_rating)
    ranked = _ranked(history["row"][counted])[: min(top_n, K)]
    first = np.full(K, -1, np.int32)
    first[: len(ranked)] = ranked
    return np.tile(first, (len(holdout.users), 1))


def _ranked(rows: np.ndarray) -> np.ndarray:
    """Rows by count, most first, ties by row."""
    if not len(rows):
        return np.zeros(0, np.int32)
    values, counts = np.unique(rows, return_counts=True)
    return values[np.lexsort((values, -counts))].astype(np.int32)


def popular_all_time(holdout: Holdout) -> np.ndarray:
    """Each user's first K unseen movies by the all-time count of likes in the history."""
    history = holdout.history
    order = _ranked(history["row"][history["liked"] & (history["row"] >= 0)])
    lists = np.full((len(holdout.users), K), -1, np.int32)
    for user, seen in enumerate(_seen(holdout)):
        head = order[: K + len(seen)]
        unseen = head[~np.isin(head, seen)][:K]
        lists[user, : len(unseen)] = unseen
    return lists


def api_method(holdout: Holdout, vectors: np.ndarray, seed: int, users: int = API_USERS) -> np.ndarray:
    """The API's own list on a miss: the best K of ``API_CANDIDATES`` random unseen movies (one seed), for the
    first ``users`` users (their rows; the others' stay -1 and are not counted)."""
    rng = np.random.default_rng(seed)
    first = holdout.history[holdout.history["user"] < users]
    profiles = user_recs.build_profiles(first)
    lists = np.full((min(users, len(holdout.users)), K), -1, np.int32)
    movies = len(vectors)
    seen = _seen(holdout)
    for start in range(0, len(profiles.users), user_recs.BLOCK_USERS):
        block = profiles.users[start : start + user_recs.BLOCK_USERS]
        unit = profiles.vectors(vectors, start, start + len(block))
        for user, profile in zip(block.tolist(), unit, strict=True):
            drawn = np.unique(rng.integers(0, movies, API_CANDIDATES + len(seen[user]) + 32))
            drawn = drawn[~np.isin(drawn, seen[user])]
            candidates = rng.permutation(drawn)[:API_CANDIDATES]
            scores = vectors[candidates] @ profile
            best = candidates[np.lexsort((candidates, -scores))][:K]
            lists[user, : len(best)] = best
    return lists


def similar_hits(holdout: Holdout, vectors: np.ndarray) -> Measures:
    """How often the held-out like is among the K most similar movies of the previous like (first users)."""
    users = np.flatnonzero(holdout.previous >= 0)[:SIMILAR_USERS]
    if not len(users):
        return Measures(0, 0.0, 0.0, 0.0)
    previous = holdout.previous[users]
    scores = vectors[previous] @ vectors.T
    scores[np.arange(len(users)), previous] = -np.inf  # a movie is not its own similar movie
    picked, _ = select_top_k(scores, min(K, len(vectors) - 1))
    return measures(picked, holdout.held[users])


def coverage(lists: np.ndarray, movies: int) -> float:
    """The share of the catalogue the lists recommend at least once."""
    return round(user_recs.distinct_movies(lists) / movies, 6) if movies else 0.0


def evaluate(holdout: Holdout, vectors: np.ndarray, recent_days: int, min_rating: float, top_n: int) -> dict[str, Any]:
    """Every figure of the quality stage, as plain values."""
    content = content_lists(holdout, vectors)
    api_held = holdout.held[:API_USERS]
    api = [measures(api_method(holdout, vectors, seed), api_held) for seed in API_SEEDS]
    return {
        "k": K,
        "users": len(holdout.users),
        "content": measures(content, holdout.held).as_dict(),
        "popular": measures(popular_fallback(holdout, recent_days, min_rating, top_n), holdout.held).as_dict(),
        "popular_all_time": measures(popular_all_time(holdout), holdout.held).as_dict(),
        "api_method": Measures(
            len(api_held),
            float(np.mean([m.hit_rate for m in api])),
            float(np.mean([m.ndcg for m in api])),
            float(np.mean([m.recall for m in api])),
        ).as_dict(),
        "similar": similar_hits(holdout, vectors).as_dict(),
        "coverage": coverage(content, len(vectors)),
        "error_95": round(1.96 * math.sqrt(0.25 / max(len(holdout.users), 1)), 6),
    }


def read_live_figures(bucket: Bucket, key: str) -> dict[str, Any] | None:
    """The figures the gate last let through (``quality/live.json``), checked; None when none were recorded.

    Raises:
        DamagedObject: not JSON, or no numeric ``hit_rate``: named and removed (the next passing measure rewrites it).
    """
    try:
        return read_checked(bucket, key, json_decoder(_is_live_figures), "the next measure that passes writes it again")
    except FileNotFoundError:
        return None


def _is_live_figures(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("hit_rate"), int | float)
