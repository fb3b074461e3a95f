"""Bad input ends in a clear error naming the file, row or setting, and nothing half-published.

Each case runs real Luigi tasks (local scheduler) and checks what the failed task left
behind: no zip object in the bucket, no marker, no Redis key.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import luigi
import numpy as np
import pymongo
import pytest
import redis

from mlrec_luigi import DownloadMovieLens, Embeddings, LoadInteractions, LoadMovies, PrepareRatings, UpdatePopular
from mlrec_luigi.settings import POPULAR_REDIS_KEY
from mlrec_luigi.storage import LocalBucket
from tests.support.env import subprocess_env
from tests.support.processes import MOVIELENS_MD5, MOVIELENS_ZIP, free_port
from tests.support.runs import build, families, run_luigi, the_cause
from tests.support.zips import MOVIES, RATINGS, patch_member, small_zip


def run_failing(task: luigi.Task) -> str:
    """Run ``task``; it must fail. Returns the failure explanations Luigi recorded."""
    errors: list[str] = []

    def record(failed: luigi.Task, exception: BaseException) -> None:
        errors.append(f"{failed.task_family}: {exception}")

    events = (luigi.Event.FAILURE, luigi.Event.BROKEN_TASK)  # BROKEN_TASK: complete() raised
    for event in events:
        luigi.Task.event_handler(event)(record)
    try:
        result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    finally:
        for event in events:
            luigi.Task._event_callbacks[luigi.Task][event].discard(record)
    assert not result.scheduling_succeeded or result.status.name.startswith("FAILED"), result.summary_text
    assert errors, result.summary_text
    return "\n".join(errors)


@pytest.fixture
def local_env(pipeline_env: Callable[..., dict[str, str]], http_folder: tuple[Path, str], tmp_path: Path):
    folder, base = http_folder

    def configure(zip_bytes: bytes, md5: str | None = None, **env: str) -> LocalBucket:
        (folder / "ml.zip").write_bytes(zip_bytes)
        if md5:
            (folder / "ml.zip.md5").write_text(f"MD5 (ml.zip) = {md5}\n")
        values = pipeline_env(MOVIELENS_URL=f"{base}/ml.zip", **env)
        return LocalBucket(Path(values["LOCAL_BUCKET_DIR"]))

    return configure


def test_a_file_that_is_not_a_zip(local_env) -> None:
    bucket = local_env(b"<html>503 Service Unavailable</html>")
    errors = run_failing(DownloadMovieLens())
    assert "ml.zip is not a zip file" in errors
    assert not bucket.exists("datasets/ml.zip")


def test_a_truncated_download(local_env) -> None:
    bucket = local_env(MOVIELENS_ZIP.read_bytes()[:400_000])
    errors = run_failing(DownloadMovieLens())
    assert "ml.zip is not a" in errors
    assert not bucket.exists("datasets/ml.zip")


def test_an_md5_mismatch(local_env) -> None:
    bucket = local_env(MOVIELENS_ZIP.read_bytes(), md5="f" * 32)
    errors = run_failing(DownloadMovieLens())
    assert "md5 mismatch for MOVIELENS_URL http://127.0.0.1:" in errors
    assert f"published {'f' * 32}, downloaded {MOVIELENS_MD5}" in errors
    assert not bucket.exists("datasets/ml.zip")


def test_a_zip_without_movies(local_env, tmp_path: Path) -> None:
    bucket = local_env(small_zip(tmp_path / "x.zip", movies_csv=None).read_bytes())
    assert "ml.zip holds no movies.csv" in run_failing(DownloadMovieLens())
    assert not bucket.exists("datasets/ml.zip")


def test_an_oversized_member(local_env) -> None:
    bucket = local_env(MOVIELENS_ZIP.read_bytes(), MAX_MEMBER_BYTES="1000000")
    errors = run_failing(DownloadMovieLens())
    assert "ratings.csv inflates to 2483723 bytes, over the limit of 1000000 (MAX_MEMBER_BYTES)" in errors
    assert not bucket.exists("datasets/ml.zip")


def test_an_unsupported_url_scheme(pipeline_env) -> None:
    from mlrec_luigi.settings import SettingsError

    with pytest.raises(SettingsError, match="MOVIELENS_URL must start with https:// or http:// or file:// or gs://"):
        pipeline_env(MOVIELENS_URL="ftp://example.org/ml.zip")
        from mlrec_luigi.settings import get_settings

        get_settings()


@pytest.fixture
def wire_env(local_env, wire_mongo: tuple[str, str], redis_url: str):
    uri, database = wire_mongo

    def configure(zip_path: Path, **env: str) -> LocalBucket:
        return local_env(zip_path.read_bytes(), MONGODB_URI=uri, MONGODB_DATABASE=database, REDIS_URL=redis_url, **env)

    return configure


BAD_RATINGS = RATINGS + "3,1,7.0,964982703\nx,2,4.0,964982703\n3,2,-1,964982703\n"


def test_bad_ratings_rows_fail_the_load_naming_rows_and_publish_nothing(wire_env, tmp_path: Path, redis_url) -> None:
    bucket = wire_env(small_zip(tmp_path / "x.zip", ratings_csv=BAD_RATINGS))
    errors = run_failing(UpdatePopular(date=dt.date(2026, 11, 24)))
    assert "3 bad row(s) in ratings.csv, more than INTERACTIONS_MAX_REJECTED_ROWS=0" in errors
    assert "ratings.csv row 5: rating is not 0.5..5.0 in steps of 0.5" in errors
    assert "ratings.csv row 6: userId is not a positive 32-bit integer" in errors
    assert not bucket.exists("datasets/ml/markers/load_interactions.json")
    assert redis.Redis.from_url(redis_url).get(POPULAR_REDIS_KEY) is None


def test_tolerated_bad_rows_are_counted(wire_env, tmp_path: Path) -> None:
    bucket = wire_env(small_zip(tmp_path / "x.zip", ratings_csv=BAD_RATINGS), INTERACTIONS_MAX_REJECTED_ROWS="3")
    build(LoadInteractions())
    marker = bucket.read_json("datasets/ml/markers/load_interactions.json")
    assert (marker["rows"], marker["inserted"], marker["rejected"]) == (7, 4, 3)
    assert len(marker["rejected_examples"]) == 3


def test_ratings_of_unknown_movies_are_skipped_then_fatal_over_the_limit(
    wire_env, wire_mongo: tuple[str, str], tmp_path: Path
) -> None:
    ratings = RATINGS + "3,999,4.0,964982703\n"
    zip_path = small_zip(tmp_path / "x.zip", ratings_csv=ratings)
    wire_env(zip_path)
    errors = run_failing(LoadInteractions())
    assert "1 of 5 ratings in ratings.csv name a movieId missing from movies.csv (20.00%)" in errors
    assert "INTERACTIONS_MAX_UNKNOWN_FRACTION=0.01" in errors
    uri, database = wire_mongo
    with pymongo.MongoClient(uri) as client:  # PrepareRatings failed before any chunk could load
        assert client[database].interactions.count_documents({}) == 0
    bucket = wire_env(zip_path, INTERACTIONS_MAX_UNKNOWN_FRACTION="0.5")
    build(LoadInteractions())
    marker = bucket.read_json("datasets/ml/markers/load_interactions.json")
    assert (marker["stored"], marker["inserted"], marker["skipped_unknown_movie"]) == (4, 4, 1)


def test_missing_ratings_column(wire_env, tmp_path: Path) -> None:
    wire_env(small_zip(tmp_path / "x.zip", ratings_csv="userId,movieId,rating\n1,1,4.0\n"))
    assert "ratings.csv: missing column(s) timestamp" in run_failing(LoadInteractions())


def test_duplicate_movie_ids(wire_env, tmp_path: Path) -> None:
    movies = "movieId,title,genres\n1,A (1990),Drama\n1,B (1991),Drama\n"
    bucket = wire_env(small_zip(tmp_path / "x.zip", movies_csv=movies))
    assert "movies.csv: duplicate movieId(s) [1] at row(s) 1, 2" in run_failing(LoadInteractions())
    assert not bucket.exists("datasets/ml/movie_id_map.json")


def test_mongodb_unreachable_fails_fast_with_a_non_zero_exit(local_env) -> None:
    uri = f"mongodb://app:hunter2@127.0.0.1:{free_port()}/db?serverSelectionTimeoutMS=500"
    bucket = local_env(MOVIELENS_ZIP.read_bytes(), MONGODB_URI=uri)
    started = time.monotonic()
    result = run_luigi("UpdatePopular", "--local-scheduler", timeout_s=60)
    assert result.returncode == 35  # [retcode] scheduling_error in luigi.cfg
    assert time.monotonic() - started < 30
    assert "MONGODB_URI mongodb://app:***@127.0.0.1" in result.stderr and "is unusable" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert not bucket.exists("datasets/ml.zip")  # failed at start: nothing ran


@pytest.mark.parametrize("root", ["DailyRun", "UpdatePopular", "UpdateUserRecommendations"])
def test_an_unreachable_mongodb_is_the_last_line_alone_within_seconds(tmp_path: Path, root: str) -> None:
    env = subprocess_env(
        tmp_path,
        MOVIELENS_URL=small_zip(tmp_path / "ml.zip").as_uri(),
        MONGODB_URI=f"mongodb://app:hunter2@127.0.0.1:{free_port()}/db",  # nobody listens; the default timeout
    )
    started = time.monotonic()
    result = run_luigi(root, "--local-scheduler", "--lock-pid-dir", str(tmp_path), env=env, timeout_s=120)
    assert result.returncode == 35, result.stderr[-2000:]
    assert time.monotonic() - started < 15  # one 5 s server selection, not one per stage
    last = result.stderr.strip().splitlines()[-1]
    message = json.loads(last)["message"]
    assert re.match(
        r"\w+: MongoUnavailable: MONGODB_URI mongodb://app:\*\*\*@127\.0\.0\.1:\d+/db is unusable", message
    ), last
    assert "Connection refused" in message and "Topology" not in result.stderr and len(message) < 300
    assert "hunter2" not in result.stderr


# --- zips whose layout or members cannot be read safely ---------------------------------


def _zip_with_members(path: Path, members: dict[str, str]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we mean to write
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in members.items():
                archive.writestr(name.split("#")[0], text)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: patch_member(small_zip(p), "ml-test/ratings.csv", flag_bits=1),
            "member ml-test/ratings.csv is encrypted",
        ),
        (
            lambda p: patch_member(small_zip(p), "ml-test/movies.csv", method=99),
            "member ml-test/movies.csv uses compression method 99, which Python's zipfile cannot read",
        ),
        (
            lambda p: _zip_with_members(
                p, {"ml/movies.csv": MOVIES, "ml/old/movies.csv": MOVIES, "ml/ratings.csv": RATINGS}
            ),
            r"holds movies.csv twice \(ml/movies.csv and ml/old/movies.csv\)",
        ),
        (
            lambda p: _zip_with_members(
                p, {"ml/ratings.csv": RATINGS, "ml/movies.csv": MOVIES, "ml/ratings.csv#2": RATINGS}
            ),
            r"holds ratings.csv twice \(ml/ratings.csv and ml/ratings.csv\)",
        ),
    ],
    ids=["encrypted", "unknown-compression", "two-depths", "same-name-twice"],
)
def test_zips_with_unreadable_or_ambiguous_members_are_refused_by_name(local_env, tmp_path: Path, make, message):
    bucket = local_env(make(tmp_path / "bad.zip").read_bytes())
    errors = run_failing(DownloadMovieLens())
    assert re.search(message, errors), errors
    assert not bucket.exists("datasets/ml.zip")


def test_a_rating_from_the_future_is_a_bad_row_named_by_row(wire_env, tmp_path: Path) -> None:
    future = int(time.time()) + 30 * 86_400
    wire_env(small_zip(tmp_path / "x.zip", ratings_csv=RATINGS + f"3,1,4.0,{future}\n"))
    assert "ratings.csv row 5: timestamp is in the future" in run_failing(LoadInteractions())


def _truncate(bucket: LocalBucket, pattern: str) -> str:
    (path,) = sorted(bucket.root.rglob(pattern))[:1]
    path.write_bytes(path.read_bytes()[:150])
    return path.name


def test_a_truncated_embedding_chunk_is_named_then_recomputed(wire_env, tmp_path: Path, model) -> None:
    bucket = wire_env(small_zip(tmp_path / "x.zip"), EMBEDDING_CHUNK_SIZE="2")
    build(Embeddings())
    name = _truncate(bucket, "chunk-*.npy")
    errors = run_failing(LoadMovies())
    # the first reader of the chunks names it (the quality gate, before LoadMovies)
    assert re.search(rf"\w+: file://\S+/{name} is not a readable \.npy file .*: removed it", errors), errors
    summary = build(LoadMovies())  # the next run embeds that chunk again, and loads
    assert [t.index for t in summary["completed"] if t.task_family == "EmbeddingChunk"] == [int(name[6:11])]


def test_a_truncated_ratings_part_is_named_then_prepared_again(wire_env, tmp_path: Path, model) -> None:
    bucket = wire_env(small_zip(tmp_path / "x.zip"), INTERACTIONS_CHUNK_ROWS="2")
    build(LoadMovies(), PrepareRatings())
    name = _truncate(bucket, "part-*.npy")
    errors = run_failing(LoadInteractions())
    assert re.search(rf"InteractionsChunk: \S+/{name} is not a readable \.npy file .*removed it", errors), errors
    luigi.task_register.Register.clear_instance_cache()  # the next run is a new process
    summary = build(LoadInteractions())
    assert "PrepareRatings" in families(summary["completed"])
    assert bucket.read_json("datasets/ml/markers/load_interactions.json")["stored"] == 4


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MONGODB_DATABASE": "my.db"}, "MONGODB_DATABASE 'my.db' is not a name MongoDB accepts: it holds '.'"),
        ({"MONGODB_DATABASE": "a/b"}, "MONGODB_DATABASE 'a/b' is not a name MongoDB accepts: it holds '/'"),
        ({"MONGODB_DATABASE": "$x"}, "MONGODB_DATABASE '$x' is not a name MongoDB accepts: it holds '$'"),
        ({"MONGODB_URI": "mongodb://h/a b"}, "the database of MONGODB_URI 'a b' is not a name MongoDB accepts"),
        ({"POPULARITY_TOP_N": "0"}, "POPULARITY_TOP_N must be between 1 and 100,000, got 0"),
        ({"POPULARITY_RECENT_DAYS": "99999999999"}, "POPULARITY_RECENT_DAYS must be between 1 and 36,500"),
        ({"SIMILAR_MOVIES_TTL_SECONDS": "3600"}, "SIMILAR_MOVIES_TTL_SECONDS must be between 86,400 and"),
        ({"CACHE_DIR": "{file}"}, "CACHE_DIR={file} is a file: it must be a folder"),
        ({"LOCAL_BUCKET_DIR": "{file}/bucket"}, "LOCAL_BUCKET_DIR={file}/bucket lies under {file}, which is a file"),
    ],
    ids=["dot", "slash", "dollar", "uri-db", "top-n", "days", "similar-ttl", "cache-file", "bucket-under-file"],
)
def test_a_bad_setting_ends_the_command_in_one_line_with_exit_35_before_any_work(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    values = {name: value.replace("{file}", str(a_file)) for name, value in env.items()}
    settings_env = subprocess_env(tmp_path, **{"MONGODB_URI": "mongomock://localhost/mlrec", **values})
    result = run_luigi(
        "DailyRun", "--local-scheduler", "--lock-pid-dir", str(tmp_path), env=settings_env, timeout_s=120
    )
    assert result.returncode == 35, result.stderr[-2000:]
    the_cause(result.stderr, message.replace("{file}", str(a_file)))
    assert not (tmp_path / "bucket").exists()  # nothing ran


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["DailyRun", "--date", "2999-01-01"], "--date of DailyRun is later than tomorrow (UTC"),
        (["UpdatePopular", "--date", "{tomorrow+1}"], "--date of UpdatePopular is later than tomorrow (UTC"),
        (["UpdateUserRecommendations", "--date", "24/11/2026"], "--date of UpdateUserRecommendations must be a date"),
        (["DailyRun", "--date", "tomorrow"], "--date of DailyRun must be a date YYYY-MM-DD, got 'tomorrow'"),
        (["EmbeddingChunk", "--source-md5", "0" * 32, "--model-name", "m", "--chunk-size", "0", "--index", "0"],
         "--chunk-size of EmbeddingChunk must be between 1 and"),
        (["InteractionsChunk", "--source-md5", "0" * 32, "--chunk-rows", "10", "--index", "-1"],
         "--index of InteractionsChunk must be between 0 and"),
        (["SimilarMoviesBlock", "--source-md5", "xyz", "--movie-ids", "a", "--model-name", "m", "--top-n", "3",
          "--block-rows", "5", "--index", "0"], "--source-md5 of SimilarMoviesBlock must be the 32 hex digits"),
        (["SimilarMoviesBlock", "--source-md5", "0" * 32, "--movie-ids", "a", "--model-name", "m", "--top-n", "ten",
          "--block-rows", "5", "--index", "0"], "--top-n of SimilarMoviesBlock must be an integer, got 'ten'"),
    ],
    ids=["far-future", "day-after-tomorrow", "bad-format", "a-word", "chunk-size", "index", "md5", "top-n"],
)  # fmt: skip
def test_a_bad_parameter_ends_the_command_in_one_line_with_exit_35_before_any_work(
    args: list[str], message: str, tmp_path: Path
) -> None:
    after_tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)).isoformat()
    args = [a.replace("{tomorrow+1}", after_tomorrow) for a in args]
    env = subprocess_env(tmp_path, MONGODB_URI="mongomock://localhost/mlrec")
    result = run_luigi(*args, "--local-scheduler", "--lock-pid-dir", str(tmp_path), env=env, timeout_s=120)
    assert result.returncode == 35, result.stderr[-2000:]
    the_cause(result.stderr, message)
    assert not (tmp_path / "bucket").exists()  # nothing ran


def test_tomorrow_is_a_date_a_run_may_have(tmp_path: Path) -> None:
    from mlrec_luigi.tasks.parameters import RunDateParameter

    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert RunDateParameter().problem(tomorrow) is None
    assert "later than tomorrow" in RunDateParameter().problem(tomorrow + dt.timedelta(days=1))


@pytest.mark.parametrize("bad", ["nan", "zero", "unnormalized"])
def test_a_model_yielding_degenerate_vectors_is_refused_naming_the_movies(
    wire_env, tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    # A model (or a precision setting) that yields NaN, zero or unnormalized vectors must publish nothing.
    from mlrec_luigi import embedding

    real_encode = embedding.encode

    def degenerate(*args, **kwargs):
        vectors = real_encode(*args, **kwargs).copy()
        vectors[1] = {"nan": np.nan, "zero": 0.0, "unnormalized": 3.0}[bad]
        return vectors

    monkeypatch.setattr(embedding, "encode", degenerate)
    bucket = wire_env(small_zip(tmp_path / "x.zip"))
    errors = run_failing(Embeddings())
    assert re.search(r"yields 1 embedding\(s\) that are not finite unit-length vectors .*movieId \d+ '", errors), errors
    assert "refused, nothing written" in errors
    assert not [key for key in bucket.list("datasets/ml/embeddings/") if key.endswith(".npy")]
