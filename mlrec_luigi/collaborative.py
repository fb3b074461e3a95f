"""The collaborative model of the user lists: implicit's ALS on the likes, scored over the catalogue.

Plain numpy and implicit, no Luigi. What counts as feedback: a *like* exactly as the API defines
it for its content lists (a ``rate`` of 4.0 or more of a movie with an embedding): one positive of
confidence ``ALPHA`` in the user x movie matrix. Every other interaction (a view, a skip, a rating
below 4.0, a ``like`` or ``bookmark`` event) is no positive, but it is *seen*: never recommended,
as in the content lists. So the two methods learn from the same signal and recommend from the same
candidates (every movie with an embedding the user has no interaction of any type with); only the
scoring differs: a user's factors against every movie's factors, instead of their mean liked
embedding against every embedding. Ties by catalogue row (= by ``_id``), exactly, as everywhere.

Why ALS and not EASE (both measured in BENCHMARKS.md): EASE is exact and as good on
ml-latest-small, but it inverts a movies x movies matrix: 9,742 movies take 30 s and 760 MB;
ml-32m's 87,585 take 61 GB. ALS grows with the likes (one 64 x 64 solve per user and per movie).

A user without a like has no factors: no collaborative list (and no content list either: that
needs a like too), so no key, and the API computes its own on a miss. The model is trained in the
run from every interaction the run read, so no user with a like is unknown to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from mlrec_luigi.errors import Damaged
from mlrec_luigi.npy import from_npy
from mlrec_luigi.partitions import text_width
from mlrec_luigi.user_recs import Gathered, distinct_pairs, top_k_blocks

# Measured on ml-latest-small (BENCHMARKS.md): a confidence of 10 or 40 finds fewer held-out likes than 1.
ALPHA = 1.0
ITERATIONS = 15
SEED = 24  # the factors' random start: the same interactions give the same lists


@dataclass(frozen=True, order=True)
class Params:
    """The hyper-parameters the tuning split chooses among (``ALPHA`` and ``ITERATIONS`` are fixed)."""

    factors: int
    regularization: float

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "alpha": ALPHA, "iterations": ITERATIONS}

    @classmethod
    def from_dict(cls, values: dict) -> Params:
        return cls(int(values["factors"]), float(values["regularization"]))


# The tuning grid, in order of preference: a tie keeps the earlier (the smaller model).
GRID = (Params(32, 1.0), Params(32, 10.0), Params(64, 1.0), Params(64, 10.0))
DEFAULT = Params(64, 10.0)  # what runs before anything was tuned (no measured user)


def like_pairs(interactions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users, rows): every distinct like of a movie with an embedding (``user_recs.INTERACTION`` rows)."""
    liked = interactions["liked"] & (interactions["row"] >= 0)
    return distinct_pairs(interactions["user"][liked], interactions["row"][liked])


def seen_pairs(interactions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users, rows): every distinct movie with an embedding each user interacted with, in any way."""
    known = interactions["row"] >= 0
    return distinct_pairs(interactions["user"][known], interactions["row"][known])


def fit(users: np.ndarray, rows: np.ndarray, shape: tuple[int, int], params: Params) -> tuple[np.ndarray, np.ndarray]:
    """(user factors, movie factors) of implicit's ALS on the likes ``(users[i], rows[i])``, float32."""
    from implicit.cpu.als import AlternatingLeastSquares  # its import costs a second: only where a model is fit

    matrix = sp.csr_matrix((np.full(len(users), ALPHA, np.float32), (users, rows)), shape=shape)
    # implicit parallelises over users itself; a multi-threaded BLAS under it only contends (it checks, and warns).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors, regularization=params.regularization, alpha=1.0, iterations=ITERATIONS,
            random_state=SEED, calculate_training_loss=False,
        )  # fmt: skip
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def lists(interactions: np.ndarray, users: int, movies: int, params: Params, k: int) -> np.ndarray:
    """int32 (users, k): each user's collaborative list (catalogue rows, best first; -1 where none).

    ``interactions``: ``user_recs.INTERACTION`` rows of users ``0 .. users - 1`` over ``movies`` rows.
    """
    rows = np.full((users, k), -1, np.int32)
    like_users, like_rows = like_pairs(interactions)
    if not len(like_users) or k == 0:
        return rows
    user_factors, movie_factors = fit(like_users, like_rows, (users, movies), params)
    scored = np.unique(like_users)
    for block, picked in top_k_blocks(
        scored, lambda start, stop: user_factors[scored[start:stop]], movie_factors, seen_pairs(interactions), k
    ):
        rows[block, : picked.shape[1]] = picked
    return rows


class FactorsDamaged(Damaged):
    """A stored model cannot be read; the message names it."""


def read_user_factors(data: bytes, label: str) -> np.ndarray:
    """Users' factors: records of ``user`` (bytes, ascending) and ``factors`` (float32)."""
    records = from_npy(data, label, FactorsDamaged)
    if records.dtype.names != ("user", "factors") or records["factors"].ndim != 2:
        raise FactorsDamaged(f"{label} is not the users' factors of a collaborative model")
    return records


def read_movie_factors(data: bytes, label: str) -> np.ndarray:
    """Movies' factors: float32 (movies, factors), rows in catalogue order."""
    factors = from_npy(data, label, FactorsDamaged)
    if factors.dtype != np.float32 or factors.ndim != 2:
        raise FactorsDamaged(f"{label} is not the movies' factors of a collaborative model")
    return factors


def named_user_factors(users: list[str], factors: np.ndarray) -> np.ndarray:
    """``factors`` (one row per user) as records sorted by user: what a partition looks its users up in."""
    named = np.empty(len(users), [("user", f"S{text_width(users)}"), ("factors", "<f4", (factors.shape[1],))])
    named["user"] = [u.encode() for u in users]
    named["factors"] = factors
    return named[np.argsort(named["user"], kind="stable")]


def score(gathered: Gathered, users: np.ndarray, movie_factors: np.ndarray, k: int) -> np.ndarray:
    """int32 (users of ``gathered``, k): each one's list from the trained factors (``users``: named records).

    Only users with a like are scored (as in training); one the model does not know gets no list.
    """
    rows = np.full((len(gathered.users), k), -1, np.int32)
    like_users, _ = like_pairs(gathered.interactions)
    scored = np.unique(like_users)
    names = np.array([u.encode() for u in gathered.users[scored].tolist()], dtype=users["user"].dtype)
    at = np.searchsorted(users["user"], names)
    known = (
        (at < len(users)) & (users["user"][np.minimum(at, max(len(users) - 1, 0))] == names)
        if len(users)
        else (np.zeros(len(scored), bool))
    )
    scored, at = scored[known], at[known]
    if not len(scored) or k == 0:
        return rows
    factors = users["factors"][at]
    seen = seen_pairs(gathered.interactions)
    for block, picked in top_k_blocks(scored, lambda start, stop: factors[start:stop], movie_factors, seen, k):
        rows[block, : picked.shape[1]] = picked
    return rows
