"""Service faults and changed inputs: the pipeline fails clearly or redoes exactly what changed."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlrec_luigi import DownloadMovieLens, LoadMovies, UpdatePopular, cache, mongo
from mlrec_luigi.settings import POPULAR_REDIS_KEY, get_settings
from mlrec_luigi.storage import GCSBucket, LocalBucket
from tests.support.processes import MOVIELENS_MD5, MOVIELENS_ZIP, free_port
from tests.support.proxy import ForwardingHandler, proxy
from tests.support.runs import build, build_fails
from tests.support.zips import MOVIES, small_zip

RUN_DATE = dt.date(2026, 11, 24)


@pytest.fixture
def small_env(pipeline_env: Callable[..., dict[str, str]], wire_mongo: tuple[str, str], redis_url: str, tmp_path: Path):
    uri, database = wire_mongo
    zip_path = small_zip(tmp_path / "ml.zip")

    def configure(**env: str) -> LocalBucket:
        base = {
            "MOVIELENS_URL": zip_path.as_uri(),
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": database,
            "REDIS_URL": redis_url,
            "POPULARITY_RECENT_DAYS": "10000",  # the small data spans 15 years
        }
        values = pipeline_env(**{**base, **env})
        return LocalBucket(Path(values["LOCAL_BUCKET_DIR"]))

    return configure


def test_redis_down_fails_the_task_and_leaves_the_previous_list(small_env, redis_url: str) -> None:
    cache.publish_list(redis_url, POPULAR_REDIS_KEY, ["previous"], 86_400)
    bucket = small_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    build_fails(
        UpdatePopular(date=RUN_DATE),
        failed="UpdatePopular",
        match=r"RedisUnavailable: REDIS_URL redis://127\.0\.0\.1:\d+/0: cannot publish rec:fallback:popular",
    )
    assert not bucket.exists("datasets/ml/markers/popular/2026-11-24.json")
    assert cache.read_list(redis_url, POPULAR_REDIS_KEY) == ["previous"]
    small_env()  # Redis is back: the rerun publishes.
    build(UpdatePopular(date=RUN_DATE))
    assert len(cache.read_list(redis_url, POPULAR_REDIS_KEY)[0]) == 24


def test_an_empty_window_keeps_the_published_list_and_says_so(small_env, redis_url: str) -> None:
    cache.publish_list(redis_url, POPULAR_REDIS_KEY, ["previous"], 86_400)
    bucket = small_env(POPULARITY_MIN_RATING="5.0", POPULARITY_RECENT_DAYS="1")
    build(UpdatePopular(date=dt.date(1990, 1, 1)))
    marker = bucket.read_json("datasets/ml/markers/popular/1990-01-01.json")
    assert (marker["movies"], marker["redis"]) == (0, "kept_previous")
    assert cache.read_list(redis_url, POPULAR_REDIS_KEY) == ["previous"]


def test_without_redis_the_list_is_computed_and_recorded(small_env) -> None:
    bucket = small_env(REDIS_URL="")
    build(UpdatePopular(date=RUN_DATE))
    marker = bucket.read_json("datasets/ml/markers/popular/2026-11-24.json")
    assert marker["redis"] == "no_redis" and len(marker["movie_ids"]) == marker["movies"] > 0


def test_a_new_source_zip_and_a_new_model_produce_new_outputs(small_env, model, tmp_path: Path) -> None:
    bucket = small_env()
    build(LoadMovies())
    settings = get_settings()
    movies = mongo.open_mongo(settings).movies
    ids = {d["movieId_ml"]: d["_id"] for d in movies.find()}
    first_chunks = {p.parent.name for p in Path(settings.local_bucket_dir).rglob("chunk-*.npy")}

    # Another zip lands in the bucket (one title changed): new chunks, movies updated in place.
    changed = small_zip(
        tmp_path / "new.zip", movies_csv=MOVIES.replace("Toy Story (1995)", "Toy Story (1995) [remastered]")
    )
    bucket.upload_file(changed, "datasets/ml.zip")
    build(LoadMovies())
    assert movies.find_one({"movieId_ml": 1})["title"] == "Toy Story (1995) [remastered]"
    assert {d["movieId_ml"]: d["_id"] for d in movies.find()} == ids
    second_chunks = {p.parent.name for p in Path(settings.local_bucket_dir).rglob("chunk-*.npy")}
    assert len(second_chunks - first_chunks) == 1
    assert bucket.read_json("datasets/ml/markers/load_movies.json")["updated"] == 1

    # Another model (a local copy under another name): new chunks under the model's name, every movie re-embedded.
    model.save(str(tmp_path / "other-model"))
    small_env(HF_MODEL_NAME=str(tmp_path / "other-model"))
    build(LoadMovies())
    assert {d["embedding_model"] for d in movies.find()} == {str(tmp_path / "other-model")}
    assert bucket.read_json("datasets/ml/markers/load_movies.json")["updated"] == 4
    assert any("other-model" in str(p) for p in Path(settings.local_bucket_dir).rglob("chunk-*.npy"))


class _Flaky(ForwardingHandler):
    """Answers every third request with 503."""

    counter = 0
    failures = 0
    lock = threading.Lock()

    def intercept(self) -> int | None:
        with _Flaky.lock:
            _Flaky.counter += 1
            if _Flaky.counter % 3:
                return None
            _Flaky.failures += 1
            return 503


@pytest.fixture
def flaky_gcs(gcs_emulator: str) -> Iterator[type[_Flaky]]:
    _Flaky.counter = _Flaky.failures = 0
    with proxy(_Flaky, gcs_emulator) as url:
        _Flaky.url = url  # type: ignore[attr-defined]
        yield _Flaky


def test_transient_gcs_errors_are_retried_by_the_library(
    pipeline_env, flaky_gcs, gcs_bucket: str, gcs_emulator
) -> None:
    pipeline_env(MOVIELENS_URL=MOVIELENS_ZIP.as_uri(), GCS_BUCKET_NAME=gcs_bucket, STORAGE_EMULATOR_HOST=flaky_gcs.url)
    build(DownloadMovieLens())
    assert flaky_gcs.failures >= 1  # 503s were injected and survived
    assert GCSBucket(gcs_bucket, gcs_emulator).md5_hex("datasets/ml-latest-small.zip") == MOVIELENS_MD5
