"""The collaborative model (collaborative.py) and the choice of method (methods.py), on small cases computed
independently: the likes read literally from the documents, every score in float64, sorted() for every order."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from bson import ObjectId

from mlrec_luigi import collaborative, methods, partitions, quality, user_recs
from mlrec_luigi.collaborative import Params
from mlrec_luigi.movielens import RATING_RECORD
from tests.test_user_recs import mongo_number_at_least, random_case

SMALL = Params(8, 1.0)  # a tiny case: a model as small as its data


def named(movie_id: object) -> str | None:
    return str(ObjectId(movie_id)) if ObjectId.is_valid(movie_id) else None


def collaborative_brute_force(
    interactions: list[dict], embeddings: dict[str, np.ndarray], k: int, params: Params
) -> dict[str, tuple[list[str], dict[str, float]]]:
    """key → (the k best movies, every movie's score): implicit's factors of the likes read literally."""
    movies = sorted(embeddings)
    row = {movie: i for i, movie in enumerate(movies)}
    users = sorted({str(doc["userId"]) for doc in interactions})
    index = {user: i for i, user in enumerate(users)}
    docs_of: dict[str, list[dict]] = defaultdict(list)
    for doc in interactions:
        docs_of[str(doc["userId"])].append(doc)
    likes = sorted({
        (index[str(d["userId"])], row[named(d["movieId"])]) for d in interactions
        if d["type"] == "rate" and mongo_number_at_least(d["value"], 4.0) and named(d["movieId"]) in row
    })  # fmt: skip
    liked_users = np.array([u for u, _ in likes], dtype=np.int32)
    liked_rows = np.array([r for _, r in likes], dtype=np.int32)
    user_factors, movie_factors = collaborative.fit(liked_users, liked_rows, (len(users), len(movies)), params)
    expected = {}
    for user in sorted(set(liked_users.tolist())):
        name = users[user]
        seen = {named(d["movieId"]) for d in docs_of[name]}
        candidates = [m for m in movies if m not in seen]
        if not candidates:
            continue
        vector = user_factors[user].astype(np.float64)
        score = {m: float(np.dot(vector, movie_factors[row[m]].astype(np.float64))) for m in movies}
        expected[f"rec:user:{name}"] = (sorted(candidates, key=lambda m: (-score[m], m))[:k], score)
    return expected


def module_lists(interactions: list[dict], embeddings: dict[str, np.ndarray], movie_map: dict, k: int, params: Params):
    """collaborative.lists over the table the stage gathers (MovieLens as ratings parts, the API's documents)."""
    by_hex = {hex_id: ml for ml, hex_id in movie_map.items()}
    ml = [d for d in interactions if d.get("source") == "movielens"]
    part = np.array([(int(d["timestamp"].timestamp()), int(d["userId"]), by_hex[d["movieId"]], d["value"])
                     for d in ml], dtype=RATING_RECORD)  # fmt: skip
    ids = np.array(sorted(embeddings))
    api = [d for d in interactions if d.get("source") != "movielens"]
    gathered = user_recs.gather([part], movie_map, ids, partitions.api_records(api))
    rows = collaborative.lists(gathered.interactions, len(gathered.users), len(ids), params, k)
    return {
        f"rec:user:{user}": ids[picked[picked >= 0]].tolist()
        for user, picked in zip(gathered.users.tolist(), rows, strict=True)
        if picked[0] >= 0
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 10, 45])
def test_every_users_list_equals_the_factors_read_literally(seed: int, k: int) -> None:
    docs, embeddings, movie_map = random_case(seed)
    expected = collaborative_brute_force(docs, embeddings, k, SMALL)
    got = module_lists(docs, embeddings, movie_map, k, SMALL)
    assert set(got) == set(expected)
    assert "rec:user:views-only" not in got and "rec:user:unknown-only" not in got  # no like: no factors, no key
    assert "rec:user:saw-everything" not in got  # every movie seen: no candidate
    for key, (best, score) in expected.items():
        assert len(got[key]) == len(best), key
        # The same movies in the same order; where float32 and float64 disagree, only on a near-tie.
        np.testing.assert_allclose([score[m] for m in got[key]], [score[m] for m in best], atol=1e-5, err_msg=key)
    docs_of = defaultdict(set)
    for doc in docs:
        docs_of[f"rec:user:{doc['userId']}"].add(named(doc["movieId"]))
    assert all(not set(movies) & docs_of[key] for key, movies in got.items())  # seen movies never recommended


@pytest.mark.parametrize("params", [Params(8, 1.0), Params(32, 1.0), Params(64, 0.1)])
def test_the_fit_solves_the_implicit_als_equations_for_binary_likes(params: Params) -> None:
    """Each movie's factors are the ridge solution against the users' (Hu, Koren, Volinsky with confidence
    ALPHA on a like, 1 elsewhere): how the likes are given to the library, checked by its own equations."""
    rng = np.random.default_rng(7)
    users, movies = 40, 30
    pairs = sorted({(int(rng.integers(users)), int(rng.integers(movies))) for _ in range(200)})
    liked_users, liked_rows = (np.array(column, dtype=np.int32) for column in zip(*pairs, strict=True))
    x, y = (f.astype(np.float64) for f in collaborative.fit(liked_users, liked_rows, (users, movies), params))
    likes = np.zeros((users, movies))
    likes[liked_users, liked_rows] = 1.0
    for movie in range(movies):
        confidence = 1.0 + (collaborative.ALPHA - 1.0) * likes[:, movie]
        system = x.T @ (confidence[:, None] * x) + params.regularization * np.eye(params.factors)
        exact = np.linalg.solve(system, x.T @ (confidence * likes[:, movie]))
        np.testing.assert_allclose(y[movie], exact, atol=1e-3 * max(1.0, np.abs(exact).max()))
    assert np.abs(y).max() > 1e-3  # a model, not the zero solution


def test_two_groups_with_no_like_in_common_are_recommended_their_own_groups_movies_first() -> None:
    rng = np.random.default_rng(5)
    groups = {user: range(10 * (user % 2), 10 * (user % 2) + 10) for user in range(20)}
    # Each user likes about 60 % of their group's ten movies.
    rows = [(user, movie, movie, True, 0) for user, movies in groups.items() for movie in movies if rng.random() < 0.6]
    table = np.array(rows, dtype=user_recs.INTERACTION)
    # Two factors: room for the two groups, not for each user's own pattern of likes.
    lists = collaborative.lists(table, 21, 20, Params(2, 0.1), 3)  # user 20 has no interaction at all
    for user in range(20):
        group = set(range(10 * (user % 2), 10 * (user % 2) + 10))
        unseen = group - set(table["row"][table["user"] == user].tolist())
        first = lists[user][: min(3, len(unseen))].tolist()
        assert set(first) <= unseen, (user, first, unseen)
    assert (lists[20] == -1).all()  # no like: no list


def test_the_tuning_split_hides_each_users_newest_like_and_what_came_after() -> None:
    rows = [  # (user, row, rank, liked, time)
        (0, 1, 1, True, 10), (0, 2, 2, True, 20), (0, 3, 3, True, 20), (0, 4, 4, False, 30), (0, 5, 5, False, 5),
        (0, 2, 2, False, 1),  # an older view of the tuning movie: left out too
        (1, 7, 7, False, 10),  # no like: nothing hidden
        (2, 8, 8, True, 40),  # one like: hidden, nothing left
    ]  # fmt: skip
    history = np.array(rows, dtype=user_recs.INTERACTION)
    train, target = methods.tuning_split(history, 3)
    # User 0's newest likes are at 20; the tie goes to the smaller row (2).
    assert target.tolist() == [2, -1, 8]
    # Row 3 was liked in the same second as the tuning like: not strictly older, left out as the holdout does.
    assert sorted((int(r["user"]), int(r["row"])) for r in train) == [(0, 1), (0, 5), (1, 7)]


FIGURES = {"content": {"hit_rate": 0.01}, "popular": {"hit_rate": 0.03},
           "collaborative": {"hit_rate": 0.09, "params": {"factors": 32, "regularization": 10.0}}}  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "collaborative_rate", "method"),
    [
        ("best", 0.09, "collaborative"),  # better than both
        ("best", 0.03, "collaborative"),  # as good as the popular list, better than content
        ("best", 0.02, "content"),  # better than content, below popular: not published by best
        ("best", 0.01, "content"),  # no better than content: a tie keeps the API's definition
        ("content", 0.09, "content"),
        ("collaborative", 0.001, "collaborative"),  # said: taken as said
    ],
)
def test_the_method_is_chosen_by_the_recorded_figures(setting: str, collaborative_rate: float, method: str) -> None:
    figures = {**FIGURES, "collaborative": {**FIGURES["collaborative"], "hit_rate": collaborative_rate}}
    chosen = methods.choose(setting, figures)
    assert chosen["method"] == method and chosen["setting"] == setting
    if method == "collaborative":
        assert (chosen["params"]["factors"], chosen["params"]["regularization"]) == (32, 10.0)
    else:
        assert "params" not in chosen


def test_without_figures_best_keeps_content_and_collaborative_runs_untuned() -> None:
    assert methods.choose("best", None)["method"] == "content"
    assert methods.choose("collaborative", {})["params"] == collaborative.DEFAULT.as_dict()


def test_tuning_never_sees_the_held_out_likes() -> None:
    """The held-out likes are not in the history the tuning splits again: hiding them changes nothing there."""
    docs, _, movie_map = random_case(4, movies=60)
    ratings = [(int(d["timestamp"].timestamp()) + i, int(d["userId"]), ml, float(d["value"]))
               for i, d in enumerate(docs) if d.get("source") == "movielens"
               for ml, hex_id in movie_map.items() if hex_id == d["movieId"]]  # fmt: skip
    part = np.array(ratings, dtype=RATING_RECORD)
    movie_row = np.arange(len(movie_map) + 1, dtype=np.int32) - 1
    holdout = quality.build_holdout([part], movie_row, 1_000)
    train, target = methods.tuning_split(holdout.history, len(holdout.users))
    held = set(zip(range(len(holdout.users)), holdout.held.tolist(), strict=True))
    assert not {(int(r["user"]), int(r["row"])) for r in train} & held
    assert not {(u, int(t)) for u, t in enumerate(target.tolist()) if t >= 0} & held
