"""The quality measures on cases small enough to count by hand, and a holdout that never leaks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlrec_luigi import quality
from mlrec_luigi.movielens import RATING_RECORD


def part(rows: list[tuple[int, int, int, float]]) -> np.ndarray:
    """(timestamp, userId, movieId, rating) rows as a ratings part."""
    return np.array(rows, dtype=RATING_RECORD)


# Five movies on a circle: 1 and 2 close, 3 and 4 close, 5 alone.
ANGLES = {1: 0.0, 2: 0.1, 3: 2.0, 4: 2.1, 5: 4.0}
MOVIE_IDS = sorted(ANGLES)
VECTORS = np.array([[math.cos(ANGLES[m]), math.sin(ANGLES[m])] for m in MOVIE_IDS], dtype=np.float32)
ROW = np.full(10, -1, np.int32)
ROW[MOVIE_IDS] = np.arange(len(MOVIE_IDS))


def test_the_holdout_hides_the_newest_like_and_everything_from_then_on() -> None:
    ratings = part([
        (100, 7, 1, 5.0),  # liked first
        (200, 7, 3, 2.0),  # seen, not liked
        (300, 7, 2, 4.0),  # the newest like: held out
        (300, 7, 4, 1.0),  # at the held-out moment: not history
        (400, 7, 5, 3.0),  # after it: not history
        (50, 8, 2, 5.0),  # user 8: one like only, not measured
        (10, 9, 1, 4.5), (10, 9, 3, 4.5),  # user 9: two likes at one second: the smaller movieId (1) is held
        (20, 9, 1, 2.0),  # a later rating of the held-out movie: still not history (after, and the movie)
    ])  # fmt: skip
    holdout = quality.build_holdout([ratings], ROW, sample_users=100)
    # user 9's history holds nothing older than its held-out like: no profile, not measured
    assert holdout.users.tolist() == [7]
    assert holdout.held.tolist() == [ROW[2]] and holdout.previous.tolist() == [ROW[1]]
    assert sorted(holdout.history["row"].tolist()) == [ROW[1], ROW[3]]
    assert holdout.history["liked"].tolist() == [True, False]


def test_each_measure_counts_as_by_hand() -> None:
    held = np.array([5, 7, 9, 1], np.int32)
    lists = np.array([
        [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # rank 1: gain 1
        [0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0],  # rank 3: gain 1/log2(4) = 0.5
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # a miss
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],  # the 11th: a miss at 10
    ], np.int32)  # fmt: skip
    result = quality.measures(lists, held)
    assert result.users == 4 and result.hit_rate == 0.5 and result.recall == 0.5
    assert result.ndcg == pytest.approx((1 + 0.5) / 4)


def test_content_list_popular_and_similar_by_hand() -> None:
    ratings = part([
        (100, 1, 1, 5.0), (200, 1, 2, 5.0),  # user 1: likes 1, then 2 (held): 2 is 1's neighbour
        (100, 2, 3, 5.0), (200, 2, 5, 4.0),  # user 2: likes 3, then 5 (held): 5 is far from 3
        (150, 3, 1, 4.0), (160, 3, 4, 4.0), (170, 3, 3, 5.0),  # user 3: 1, 4, then 3 (held)
    ])  # fmt: skip
    holdout = quality.build_holdout([ratings], ROW, sample_users=100)
    assert holdout.users.tolist() == [1, 2, 3]
    content = quality.content_lists(holdout, VECTORS)
    # user 1's profile is movie 1: the nearest unseen is 2 (hit, rank 1); user 2 (profile 3): 4 first, 5 not
    # in reach before 1 and 2? the order is 4, then 5 or 1/2 by cosine; user 3 (profile 1+4): ranks 2, 3, 5.
    assert content[0, 0] == ROW[2]
    assert content[1, 0] == ROW[4]
    result = quality.measures(content, holdout.held)
    assert result.hit_rate == 1.0  # 5 movies, K = 10: every unseen movie is in every list
    order_2 = content[1].tolist()
    assert result.ndcg == pytest.approx((1 + 1 / math.log2(order_2.index(ROW[5]) + 2) + 1 / math.log2(
        content[2].tolist().index(ROW[3]) + 2)) / 3)  # fmt: skip
    # The similar movies of the previous like: 1 → [2, ...] (hit at 1), 3 → [4, ...], 4 → [3, ...]
    similar = quality.similar_hits(holdout, VECTORS)
    assert similar.users == 3 and similar.hit_rate == 1.0  # K covers the whole catalogue
    # The popular fallback, in a window of 1 day ending at the newest history rating (170): every like counts
    popular = quality.popular_fallback(holdout, recent_days=1, min_rating=4.0, top_n=50)
    # likes in the history: movie 1 twice (users 1, 3), 3 and 4 once (ties by movieId), and no more
    assert popular[0, :4].tolist() == [ROW[1], ROW[3], ROW[4], -1] and (popular == popular[0]).all()


def test_the_first_k_of_a_larger_catalogue() -> None:
    # 30 movies on a line of angles: a user who liked movie 1 gets 2..11 as the 10 nearest (K = 10).
    angles = {m: 0.05 * m for m in range(1, 31)}
    vectors = np.array([[math.cos(a), math.sin(a)] for a in angles.values()], dtype=np.float32)
    row = np.full(40, -1, np.int32)
    row[list(angles)] = np.arange(30)
    hit = part([(1, 1, 1, 5.0), (2, 1, 11, 5.0)])  # the held-out 11 is the 10th nearest of 1: a hit at rank 10
    miss = part([(1, 2, 1, 5.0), (2, 2, 12, 5.0)])  # 12 is the 11th: a miss
    holdout = quality.build_holdout([hit, miss], row, sample_users=100)
    result = quality.measures(quality.content_lists(holdout, vectors), holdout.held)
    assert result.hit_rate == 0.5 and result.ndcg == pytest.approx(0.5 / math.log2(11))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_holdout_never_leaks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [(int(rng.integers(0, 50)), int(rng.integers(1, 20)), int(rng.integers(1, 6)),
             float(rng.choice([1.0, 3.0, 4.0, 5.0]))) for _ in range(400)]  # fmt: skip
    ratings = part(rows)
    holdout = quality.build_holdout([ratings], ROW, sample_users=100)
    assert len(holdout.users) > 3
    for index, user in enumerate(holdout.users.tolist()):
        mine = holdout.history[holdout.history["user"] == index]
        likes = [(t, m) for t, u, m, r in rows if u == user and r >= 4.0]
        newest = max(t for t, _ in likes)
        held_movie = min(m for t, m in likes if t == newest)
        assert holdout.held[index] == ROW[held_movie]
        assert ROW[held_movie] not in mine["row"].tolist()  # neither in the profile nor seen
        assert (mine["time_us"] < newest * 1_000_000).all()  # nothing at or after the hidden moment
        lists = quality.content_lists(holdout, VECTORS)[index]
        seen = set(mine["row"].tolist())
        assert not seen & set(lists.tolist())  # the seen movies are excluded; the hidden one can be found


def test_no_user_to_measure_gives_zero_users_and_no_error() -> None:
    ratings = part([(1, 1, 1, 5.0), (2, 2, 2, 2.0), (3, 3, 3, 4.0)])  # nobody likes two movies
    holdout = quality.build_holdout([ratings], ROW, sample_users=100)
    figures = quality.evaluate(holdout, VECTORS, 7, 4.0, 50)
    assert figures["users"] == 0 and figures["content"] == {"users": 0, "hit_rate": 0.0, "ndcg": 0.0, "recall": 0.0}
    assert quality.evaluate(quality.build_holdout([], ROW, 100), VECTORS, 7, 4.0, 50)["users"] == 0


def test_a_stable_sample_of_users() -> None:
    users = np.arange(1, 1001, dtype=np.uint32)
    chosen = quality.sampled(users, 100)
    assert chosen.sum() == 100 and (quality.sampled(users, 100) == chosen).all()
    assert quality.sampled(users[:50], 100).all()


# --- the stage and its gate, through luigi.build on the real model, the try-out store, a real redis-server ---

CLUSTERS = {
    "Sci-Fi": [f"Star Trek {n}" for n in ["The Motion Picture", "II", "III", "IV", "V", "VI", "Generations",
               "First Contact", "Insurrection", "Nemesis"]] + ["Alien", "Aliens", "Interstellar", "Solaris"],
    "Animation|Children": ["Toy Story", "Toy Story 2", "Toy Story 3", "Cars", "Cars 2", "Finding Nemo",
                           "Finding Dory", "Shrek", "Shrek 2", "Up", "Coco", "Frozen", "Moana", "Zootopia"],
    "Horror": [f"Friday the 13th Part {n}" for n in ["II", "III", "IV", "V", "VI", "VII"]]
    + ["Halloween", "Halloween II", "Scream", "Scream 2", "The Exorcist", "The Shining", "It", "Hereditary"],
}  # fmt: skip


def cluster_zip(path):
    from tests.support.zips import write_zip

    movies, links, cluster_of = ["movieId,title,genres"], ["movieId,imdbId,tmdbId"], {}
    for genres, titles in CLUSTERS.items():
        for title in titles:
            movie = len(movies)
            movies.append(f'{movie},"{title} ({1970 + movie})",{genres}')
            links.append(f"{movie},{1000000 + movie},")
            cluster_of[movie] = genres
    rng = np.random.default_rng(7)
    ratings = ["userId,movieId,rating,timestamp"]
    for user in range(1, 91):  # each user likes six movies of one cluster, one after the other
        genres = list(CLUSTERS)[user % 3]
        picks = rng.choice([m for m, g in cluster_of.items() if g == genres], size=6, replace=False)
        ratings += [f"{user},{movie},5.0,{964982703 + 1000 * user + step}" for step, movie in enumerate(picks)]
    members = {"movies.csv": "\n".join(movies) + "\n", "links.csv": "\n".join(links) + "\n",
               "ratings.csv": "\n".join(ratings) + "\n"}  # fmt: skip
    return write_zip(path, members)


def randomised_copy(model, folder):
    """A real model folder whose weights are random: every check passes (finite unit vectors), the lists are noise."""
    import torch

    model.save(str(folder))
    from sentence_transformers import SentenceTransformer

    broken = SentenceTransformer(str(folder), device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    broken.save(str(folder))
    return folder


def test_the_gate_holds_a_randomised_model_and_takes_it_once_confirmed(pipeline_env, redis_url, model, tmp_path):
    import datetime as dt
    import json

    import luigi
    import redis

    from mlrec_luigi import DailyRun
    from tests.support.runs import build, build_fails, families

    date = dt.date(2026, 11, 24)
    base = {"MOVIELENS_URL": cluster_zip(tmp_path / "ml.zip").as_uri(), "REDIS_URL": redis_url,
            "POPULARITY_RECENT_DAYS": "36500"}  # fmt: skip
    pipeline_env(**base)
    build(DailyRun(date=date))
    bucket = tmp_path / "bucket/datasets/ml"
    live = json.loads((bucket / "quality/live.json").read_text())
    figures = json.loads((bucket / "markers/quality.json").read_text())["figures"]
    assert live["hit_rate"] == figures["content"]["hit_rate"] >= 0.9  # the clusters are found
    assert figures["popular"]["hit_rate"] < 0.5  # (500 random candidates cover these 42 movies: the API's is exact)
    client = redis.Redis.from_url(redis_url)
    published = {k: client.get(k) for k in client.scan_iter("rec:*")}

    # A copy of the same model: the same figures, the gate lets it through.
    model.save(str(tmp_path / "same-model"))
    pipeline_env(**base, HF_MODEL_NAME=str(tmp_path / "same-model"))
    assert "MeasureQuality" in families(build(DailyRun(date=date))["completed"])
    assert json.loads((bucket / "quality/live.json").read_text())["model"] == str(tmp_path / "same-model")

    # Randomised weights: held, in one line with both figures and the flag; nothing of it published.
    pipeline_env(**base, HF_MODEL_NAME=str(randomised_copy(model, tmp_path / "random-model")))
    build_fails(DailyRun(date=date), failed="MeasureQuality",
                match=r"^CheckFailed: hit rate@10 fell from 1\.0000 \(live, .*same-model\) to 0\.[0-4]\d* "
                r"\(.*random-model\): more than QUALITY_MAX_DROP=0\.5 of it; nothing of the new model is published "
                r"\(run once with --MeasureQuality-confirm-drop to take it\)$")  # fmt: skip
    assert {k: client.get(k) for k in client.scan_iter("rec:*")} == published
    assert json.loads((bucket / "markers/load_movies.json").read_text())["embedding_model"] == str(
        tmp_path / "same-model"
    )
    # Confirmed once, as the command line would: taken and published.
    with luigi.cmdline_parser.CmdlineParser.global_instance(["DailyRun", "--MeasureQuality-confirm-drop"]):
        build(DailyRun(date=date))
    gate = json.loads((bucket / "markers/quality.json").read_text())["gate"]
    assert gate["confirmed"] and not gate["passed"]
    # Compare a model without publishing: its figures beside the live (now the randomised) ones.
    import contextlib
    import io

    from mlrec_luigi import compare_models

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert compare_models.main(["--model", str(tmp_path / "same-model")]) == 0
    lines = printed.getvalue().splitlines()
    assert lines[0] == f"this model: {tmp_path / 'same-model'}" and lines[1].endswith("random-model"), lines
    (mine,) = [line for line in lines if line.startswith("this model ")]
    (theirs,) = [line for line in lines if line.startswith("the live model ")]
    assert mine.split()[-2] == "1.0000" and float(theirs.split()[-2]) < 0.5, lines
    assert {k: client.get(k) for k in client.scan_iter("rec:item:*")} != {
        k: v for k, v in published.items() if k.startswith(b"rec:item:")
    }
