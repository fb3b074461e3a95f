"""What a marker says is what MongoDB and Redis hold; every run ends; every change reaches the API.

Real Luigi runs (local scheduler) of the real model on a four-movie zip, against a real
wire-protocol MongoDB (mongoeco, or MLREC_TEST_MONGODB_URI) and a real redis-server.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import luigi
import pymongo
import pytest
import redis
from bson import ObjectId

from mlrec_luigi import DownloadMovieLens, LoadInteractions, UpdatePopular, cache
from mlrec_luigi.settings import POPULAR_REDIS_KEY
from mlrec_luigi.storage import LocalBucket
from tests.support.env import subprocess_env
from tests.support.runs import build, families, run_luigi, the_cause
from tests.support.zips import small_zip

TODAY = dt.date(2026, 11, 24)
MARKERS = "datasets/ml/markers"
T = 964982703  # the ratings' first timestamp


def ratings_csv(*rows: tuple[int, int, float, int]) -> str:
    return "userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in rows)


V1 = [(1, 1, 4.0, T), (1, 3, 5.0, T + 10), (2, 2, 0.5, T + 20), (2, 1, 3.5, T + 30), (3, 4, 4.5, T + 40)]


class Pipeline:
    """The pipeline's settings for one test, and what it wrote."""

    def __init__(self, configure: Callable[..., dict[str, str]], uri: str, database: str, redis_url: str, tmp: Path):
        self.zip_path = tmp / "ml.zip"
        self.configure, self.uri, self.database, self.redis_url = configure, uri, database, redis_url
        self.env: dict[str, str] = {}

    def set(self, rows: list[tuple[int, int, float, int]] | None = None, **env: str) -> Pipeline:
        if rows is not None:
            small_zip(self.zip_path, ratings_csv=ratings_csv(*rows))
        base = {
            "MOVIELENS_URL": self.zip_path.as_uri(),
            "MONGODB_URI": self.uri,
            "MONGODB_DATABASE": self.database,
            "REDIS_URL": self.redis_url,
            "POPULARITY_RECENT_DAYS": "10000",
        }
        self.env = self.configure(**{**base, **env})
        return self

    @property
    def bucket(self) -> LocalBucket:
        return LocalBucket(Path(self.env["LOCAL_BUCKET_DIR"]))

    @property
    def db(self) -> pymongo.database.Database:
        return pymongo.MongoClient(self.uri, tz_aware=True)[self.database]

    def movielens_ratings(self) -> set[tuple[str, str, float, int]]:
        ids = {str(d["_id"]): d["movieId_ml"] for d in self.db.movies.find({}, {"movieId_ml": 1})}
        return {
            (int(d["userId"]), ids[d["movieId"]], d["value"], int(d["timestamp"].timestamp()))
            for d in self.db.interactions.find({"source": "movielens"})
        }

    def popular(self) -> list[str] | None:
        return cache.read_list(self.redis_url, POPULAR_REDIS_KEY)


@pytest.fixture
def pipeline(pipeline_env, wire_mongo: tuple[str, str], redis_url: str, tmp_path: Path, model) -> Pipeline:
    return Pipeline(pipeline_env, *wire_mongo, redis_url, tmp_path).set(V1)


def new_process() -> None:
    """What a new `luigi` command starts from: no task instance of an earlier run."""
    luigi.task_register.Register.clear_instance_cache()


def ran(summary: dict[str, set]) -> list[str]:
    return families(summary["completed"])


# --- 1. a run always ends: duplicate ratings -----------------------------------------------


@pytest.mark.parametrize(
    ("rows", "kept", "chunk_rows"),
    [
        ([*V1, (1, 1, 4.0, T)], (1, 1, 4.0, T), "250000"),  # the same line twice
        ([*V1, (1, 1, 2.0, T + 99)], (1, 1, 2.0, T + 99), "250000"),  # re-rated later: the newest wins
        ([(1, 1, 2.0, T + 99), *V1], (1, 1, 2.0, T + 99), "250000"),  # the newest comes first in the file
        ([*V1, (1, 1, 1.5, T)], (1, 1, 1.5, T), "250000"),  # same time, two values: the later row wins
        ([*V1, (3, 3, 3.0, T + 50), (1, 1, 2.0, T + 99)], (1, 1, 2.0, T + 99), "2"),  # in another chunk
    ],
    ids=["same-line", "re-rated", "newest-first", "same-time", "other-chunk"],
)
def test_duplicate_ratings_keep_the_newest_and_every_count_agrees(pipeline: Pipeline, rows, kept, chunk_rows) -> None:
    pipeline.set(rows, INTERACTIONS_CHUNK_ROWS=chunk_rows)
    build(LoadInteractions())
    stored = pipeline.movielens_ratings()
    assert kept in stored and len([r for r in stored if r[:2] == kept[:2]]) == 1
    marker = pipeline.bucket.read_json(f"{MARKERS}/load_interactions.json")
    assert marker["duplicates"] == 1 and marker["stored"] == len(stored) == len(rows) - 1
    assert "again at row" in marker["duplicate_examples"][0]
    new_process()
    assert ran(build(LoadInteractions())) == []  # complete: nothing is rescheduled


def test_the_luigi_command_ends_on_duplicate_ratings_and_the_rerun_does_nothing(pipeline: Pipeline, tmp_path) -> None:
    rows = [*V1, (1, 1, 4.0, T), (2, 2, 0.5, T + 20), (1, 3, 1.0, T + 5)]
    pipeline.set(rows, INTERACTIONS_CHUNK_ROWS="2")
    env = subprocess_env(tmp_path, **{k: v for k, v in pipeline.env.items() if k != "MLREC_ENV_FILE"})
    for attempt in ("first", "rerun"):
        started = time.monotonic()
        result = run_luigi(
            "UpdatePopular", "--date", "2026-11-24", "--local-scheduler", "--lock-pid-dir", str(tmp_path),
            env=env, timeout_s=180,
        )  # fmt: skip
        assert result.returncode == 0, f"{attempt}: {result.stderr[-3000:]}"
        assert time.monotonic() - started < 120, attempt
    assert '"task finished"' not in result.stderr and "Did not run any tasks" in result.stderr  # the rerun ran none
    assert len(pipeline.movielens_ratings()) == len(V1)


# --- 2. a change upstream reaches everything downstream ------------------------------------


def test_a_model_change_reaches_movies_from_the_daily_command(pipeline: Pipeline, model, tmp_path: Path) -> None:
    build(UpdatePopular(date=TODAY))
    model.save(str(tmp_path / "other-model"))
    pipeline.set(HF_MODEL_NAME=str(tmp_path / "other-model"))
    summary = build(UpdatePopular(date=TODAY + dt.timedelta(days=1)))
    assert {"Embeddings", "LoadMovies", "UpdatePopular"} <= set(ran(summary))
    assert {d["embedding_model"] for d in pipeline.db.movies.find()} == {str(tmp_path / "other-model")}


def test_dropped_interactions_are_reloaded_by_the_same_dates_rerun(pipeline: Pipeline) -> None:
    build(UpdatePopular(date=TODAY))
    pipeline.db.interactions.drop()
    new_process()
    summary = build(UpdatePopular(date=TODAY))
    assert "InteractionsChunk" in ran(summary) and "UpdatePopular" in ran(summary)
    assert pipeline.movielens_ratings() == set(V1)


def test_a_settings_change_reaches_the_popular_list(pipeline: Pipeline) -> None:
    build(UpdatePopular(date=TODAY))
    before = pipeline.popular()
    pipeline.set(POPULARITY_TOP_N="1")
    assert ran(build(UpdatePopular(date=TODAY))) == ["UpdatePopular"]
    assert pipeline.popular() == before[:1]


# --- 3. a new release replaces the old one ---------------------------------------------------


def test_a_new_release_replaces_the_movielens_ratings_and_never_the_apis(pipeline: Pipeline) -> None:
    build(UpdatePopular(date=TODAY))
    api_rating = {"_id": ObjectId(), "userId": "2", "movieId": str(ObjectId()), "type": "like", "value": 1.0}
    pipeline.db.interactions.insert_one({**api_rating, "timestamp": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)})
    v2 = [
        (1, 1, 4.0, T),  # unchanged
        (1, 3, 4.5, T + 10),  # a corrected value
        # (2, 2, 0.5, T + 20) withdrawn
        (2, 1, 5.0, T + 35),  # re-rated: only the newest rating stays
        (3, 4, 4.5, T + 40),
        (4, 2, 3.0, T + 60),  # new
    ]
    pipeline.set(v2, RELEASE_MAX_REMOVED_FRACTION="0.5")  # 2 of 7 stored ratings go
    new_process()
    download = build(DownloadMovieLens(refresh=True))
    assert ran(download) == ["DownloadMovieLens"]
    new_process()
    summary = build(UpdatePopular(date=TODAY))
    assert {"PrepareRatings", "LoadInteractions", "UpdatePopular"} <= set(ran(summary))
    assert pipeline.movielens_ratings() == set(v2)
    assert pipeline.db.interactions.find_one({"_id": api_rating["_id"]})["type"] == "like"
    marker = pipeline.bucket.read_json(f"{MARKERS}/load_interactions.json")
    # One corrected value is one update; the two unchanged ratings are only re-tagged with the new release.
    assert (marker["removed_other_releases"], marker["updated"], marker["retagged"], marker["inserted"]) == (2, 1, 2, 2)


def test_refresh_with_an_unchanged_release_changes_nothing(pipeline: Pipeline) -> None:
    build(UpdatePopular(date=TODAY))
    new_process()
    build(DownloadMovieLens(refresh=True))
    new_process()
    assert ran(build(UpdatePopular(date=TODAY))) == []


@pytest.mark.parametrize("root", ["UpdatePopular", "DailyRun"])
def test_the_refresh_flag_on_the_daily_command_takes_a_new_release(pipeline: Pipeline, tmp_path: Path, root) -> None:
    # Luigi never looks below a complete task: the flag must still reach DownloadMovieLens.
    env = subprocess_env(tmp_path, **{k: v for k, v in pipeline.env.items() if k != "MLREC_ENV_FILE"})
    command = (root, "--date", "2026-11-24", "--local-scheduler", "--lock-pid-dir", str(tmp_path))
    assert run_luigi(*command, env=env, timeout_s=300).returncode == 0
    v2 = [*V1[:2], (4, 2, 3.0, T + 60)]
    pipeline.set(v2)
    env["RELEASE_MAX_REMOVED_FRACTION"] = "0.6"  # 3 of the 6 stored ratings go
    refreshed = run_luigi(*command, "--DownloadMovieLens-refresh", env=env, timeout_s=300)
    assert refreshed.returncode == 0, refreshed.stderr[-3000:]
    assert pipeline.movielens_ratings() == set(v2), refreshed.stderr[-6000:]
    assert '"task": "DownloadMovieLens"' in refreshed.stderr and '"replaced": "' in refreshed.stderr
    unchanged = run_luigi(*command, "--DownloadMovieLens-refresh", env=env, timeout_s=300)
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    finished = [line for line in unchanged.stderr.splitlines() if '"task finished"' in line]
    assert any('"DownloadMovieLens"' in line and '"unchanged": true' in line for line in finished)
    # Every other stage found the release unchanged and did nothing.
    assert all('"unchanged_by_refresh": true' in line for line in finished if '"DownloadMovieLens"' not in line)
    assert pipeline.movielens_ratings() == set(v2)
    plain = run_luigi(*command, env=env, timeout_s=300)
    assert plain.returncode == 0 and "task finished" not in plain.stderr  # without the flag: the no-op


@pytest.mark.parametrize(("kept", "confirmed"), [(4, False), (2, False), (2, True)])
def test_a_release_removing_too_many_ratings_stops_before_deleting_anything(
    pipeline: Pipeline, tmp_path: Path, kept: int, confirmed: bool
) -> None:
    # A MOVIELENS_URL pointed at the wrong (smaller) dataset must not delete the stored ratings unnoticed.
    env = subprocess_env(tmp_path, **{k: v for k, v in pipeline.env.items() if k != "MLREC_ENV_FILE"})
    command = ("UpdatePopular", "--date", "2026-11-24", "--local-scheduler", "--lock-pid-dir", str(tmp_path))
    assert run_luigi(*command, env=env, timeout_s=300).returncode == 0
    pipeline.set(V1[:kept])  # 5 stored; this release keeps `kept` of them
    extra = ["--LoadInteractions-confirm-removal"] if confirmed else []
    result = run_luigi(*command, "--DownloadMovieLens-refresh", *extra, env=env, timeout_s=300)
    removed = len(V1) - kept  # 1 of 5 (20 %) is over the 10 % too
    if confirmed:
        assert result.returncode == 0, result.stderr[-3000:]
        assert pipeline.movielens_ratings() == set(V1[:kept])
        check = pipeline.bucket.read_json(f"{MARKERS}/load_interactions.json")["checks"][0]
        assert (check["removed"], check["stored"], check["confirmed"], check["passed"]) == (removed, 5, True, True)
        return
    assert result.returncode == 30, result.stderr[-3000:]
    cause = the_cause(result.stderr, "more than RELEASE_MAX_REMOVED_FRACTION=0.1: nothing was deleted")
    assert f"would delete {removed:,} of the 5 stored MovieLens ratings ({removed / 5:.1%})" in cause
    assert "--LoadInteractions-confirm-removal" in cause
    assert pipeline.movielens_ratings() >= set(V1)  # nothing deleted


# --- 4. markers check what the API reads -----------------------------------------------------


def test_a_flushed_redis_makes_the_same_date_publish_again(pipeline: Pipeline) -> None:
    build(UpdatePopular(date=TODAY))
    published = pipeline.popular()
    redis.Redis.from_url(pipeline.redis_url).flushall()
    new_process()
    assert ran(build(UpdatePopular(date=TODAY))) == ["UpdatePopular"]
    assert pipeline.popular() == published


def test_api_writes_do_not_hide_deleted_movielens_ratings(pipeline: Pipeline) -> None:
    build(UpdatePopular(date=TODAY))
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    api = [{"userId": "9", "movieId": str(ObjectId()), "type": "view", "value": 1.0, "timestamp": when}] * 2
    pipeline.db.interactions.insert_many([dict(d) for d in api])
    pipeline.db.interactions.delete_many({"source": "movielens", "userId": "1"})  # 2 MovieLens ratings
    new_process()
    assert "InteractionsChunk" in ran(build(UpdatePopular(date=TODAY)))
    assert pipeline.movielens_ratings() == set(V1)


def test_a_deleted_movie_comes_back_with_its_id(pipeline: Pipeline) -> None:
    build(UpdatePopular(date=TODAY))
    gone = pipeline.popular()[0]
    pipeline.db.movies.delete_one({"_id": ObjectId(gone)})
    new_process()
    assert "LoadMovies" in ran(build(UpdatePopular(date=TODAY + dt.timedelta(days=1))))
    assert pipeline.db.movies.find_one({"_id": ObjectId(gone)}) is not None
    assert gone in pipeline.popular()


def test_a_backfill_computes_without_replacing_the_live_list(pipeline: Pipeline) -> None:
    a_year_later = T + 365 * 86_400
    pipeline.set([*V1, (5, 2, 5.0, a_year_later), (6, 2, 5.0, a_year_later)])  # movie 2 tops today's list only
    build(UpdatePopular(date=TODAY))
    live = pipeline.popular()
    backfill = dt.date(2000, 8, 5)
    build(UpdatePopular(date=backfill))
    marker = pipeline.bucket.read_json(f"{MARKERS}/popular/2000-08-05.json")
    assert marker["redis"] == "not_live" and marker["movie_ids"] and marker["movie_ids"] != live
    assert pipeline.popular() == live
    new_process()
    assert ran(build(UpdatePopular(date=TODAY))) == []  # today's list is still the live one
    redis.Redis.from_url(pipeline.redis_url).flushall()
    new_process()
    assert ran(build(UpdatePopular(date=backfill), UpdatePopular(date=TODAY))) == ["UpdatePopular"]
    assert pipeline.popular() == live
