"""One identity per stage: for every setting of the settings table, changed alone, exactly which stages
rerun and what Redis then holds.

A declared table (``ROWS``): one row per setting. A setting added to ``Settings`` without a row fails
``test_every_setting_has_a_row``. The rows run in order on one pipeline (the real model, the try-out
store, a real redis-server, the local bucket, then fake-gcs-server), each changing one setting from the
state the previous row left: the tasks that ran are compared with the row, and Redis with its check.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from mlrec_luigi import DailyRun
from mlrec_luigi.settings import Settings
from tests.support.runs import build, families
from tests.support.zips import MOVIES, small_zip

DATE = dt.date(2026, 11, 24)
EXTRA = "".join(f"{100 + i},Film {i} ({1990 + i}),{'Drama' if i % 2 else 'Comedy|Animation'}\n" for i in range(6))
RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{m},{r},{964982703 + 60 * i}\n"
    for i, (u, m, r) in enumerate([(1, 1, 5.0), (1, 100, 4.0), (2, 101, 4.5), (2, 3, 2.0), (3, 102, 5.0), (3, 1, 4.0)])
)

# Groups of task families, as the rows name them.
EMBED = {"EmbeddingChunk", "Embeddings"}
MOVIES_ON = {"LoadMovies"}
RATINGS_ON = {"PrepareRatings", "InteractionsChunk", "LoadInteractions"}
POPULAR = {"UpdatePopular"}
SIMILAR = {"SimilarMoviesBlock", "UpdateSimilarMovies"}
PUBLISH_USERS = {"UpdateUserRecommendations"}  # published again from the day's partitions
USERS = PUBLISH_USERS | {"UserRecsPartition"}  # computed again from the day's read of the API
DAILY = {"DailyRun"}
QUALITY = {"MeasureQuality"}
EVERYTHING = {"DownloadMovieLens"} | EMBED | MOVIES_ON | RATINGS_ON | POPULAR | SIMILAR | USERS | QUALITY | DAILY
EVERYTHING |= {"ReadApiInteractions", "ShuffleRatingsPart", "TrainCollaborative"}  # with the collaborative method
NOTHING: set[str] = set()


@dataclasses.dataclass
class World:
    folder: Path
    env: dict[str, str]
    client: redis.Redis
    model_copy: Path
    gcs: str
    gcs_bucket: str

    def snapshot(self) -> dict[str, str]:
        return {k.decode(): self.client.get(k).decode() for k in self.client.scan_iter("rec:*")}


Check = Callable[[World, dict[str, str], dict[str, str]], None]


def unchanged(world: World, before: dict[str, str], after: dict[str, str]) -> None:
    assert after == before


def ttl_of(prefix: str, seconds: int) -> Check:
    def check(world: World, before: dict[str, str], after: dict[str, str]) -> None:
        keys = [k for k in after if k.startswith(prefix)]
        assert keys and all(seconds - 30 <= world.client.ttl(k) <= seconds for k in keys), prefix
        assert {k: v for k, v in after.items() if k.startswith(prefix)} == {
            k: v for k, v in before.items() if k.startswith(prefix)
        }  # the same lists, republished with the new TTL

    return check


def lengths(prefix: str, n: int) -> Check:
    def check(world: World, before: dict[str, str], after: dict[str, str]) -> None:
        values = [json.loads(v) for k, v in after.items() if k.startswith(prefix)]
        assert values and all(len(v) <= n for v in values) and max(map(len, values)) == n, (prefix, values)
        assert {k: v for k, v in after.items() if not k.startswith(prefix)} == {
            k: v for k, v in before.items() if not k.startswith(prefix)
        }

    return check


def popular_is(*movies: int) -> Check:
    """The popular key holds exactly these MovieLens movies (by their ids in the map), the rest unchanged."""

    def check(world: World, before: dict[str, str], after: dict[str, str]) -> None:
        bucket = Path(world.env["LOCAL_BUCKET_DIR"])
        id_map = json.loads((bucket / "datasets/ml/movie_id_map.json").read_text())
        assert sorted(json.loads(after["rec:fallback:popular"])) == sorted(id_map[str(m)] for m in movies)
        assert {k: v for k, v in after.items() if k != "rec:fallback:popular"} == {
            k: v for k, v in before.items() if k != "rec:fallback:popular"
        }

    return check


def same_lists_other_database(world: World, before: dict[str, str], after: dict[str, str]) -> None:
    assert after == before  # the new Redis database holds every list, as the old one did


# (setting, new value or a function of the world, the task families that run, the Redis check).
# In this order: each row changes one setting from the state the rows above left.
ROWS: list[tuple[str, str | Callable[[World], str], set[str], Check]] = [
    ("LOG_LEVEL", "DEBUG", NOTHING, unchanged),
    ("CACHE_DIR", lambda w: str(w.folder / "cache2"), NOTHING, unchanged),
    ("HF_DEVICE", "cpu:0", NOTHING, unchanged),
    ("HF_HUB_OFFLINE", "0", NOTHING, unchanged),
    ("EMBEDDING_BATCH_SIZE", "2", NOTHING, unchanged),
    # bf16 gives the same vectors to cosine >= 0.999 (BENCHMARKS.md): the model's output, not a new one
    ("EMBEDDING_PRECISION", "bf16", NOTHING, unchanged),
    ("INTERACTIONS_MAX_REJECTED_ROWS", "5", NOTHING, unchanged),
    ("INTERACTIONS_MAX_UNKNOWN_FRACTION", "0.5", NOTHING, unchanged),
    ("RELEASE_MAX_REMOVED_FRACTION", "0.5", NOTHING, unchanged),
    ("MAX_MEMBER_BYTES", "100000000", NOTHING, unchanged),
    ("STORAGE_EMULATOR_HOST", lambda w: w.gcs, NOTHING, unchanged),  # no GCS_BUCKET_NAME: the local bucket still
    (
        "MOVIELENS_URL",
        lambda w: (w.folder / "mirror" / "ml.zip").as_uri(),
        NOTHING,
        unchanged,
    ),  # the zip is in the bucket
    ("MONGODB_URI", lambda w: f"mongomock://localhost/mlrec?store={w.folder / 'store.bson'}", NOTHING, unchanged),
    ("POPULARITY_TTL_SECONDS", "90000", POPULAR | DAILY, ttl_of("rec:fallback:popular", 90_000)),
    # the popular rule shapes the quality stage's popular baseline too
    ("POPULARITY_TOP_N", "2", POPULAR | QUALITY | DAILY, lengths("rec:fallback:popular", 2)),
    ("POPULARITY_MIN_RATING", "5.0", POPULAR | QUALITY | DAILY, popular_is(1, 102)),  # the two rated 5.0
    ("POPULARITY_RECENT_DAYS", "1", POPULAR | QUALITY | DAILY, popular_is(1, 102)),
    ("QUALITY_SAMPLE_USERS", "100", QUALITY | DAILY, unchanged),  # measured again; nothing below it reruns
    (
        "QUALITY_MAX_DROP",
        "0.9",
        NOTHING,
        unchanged,
    ),  # the gate's threshold: applied when a model changes  # the ratings span five minutes
    ("SIMILAR_MOVIES_TTL_SECONDS", "100000", {"UpdateSimilarMovies"} | DAILY, ttl_of("rec:item:", 100_000)),
    ("SIMILAR_MOVIES_TOP_N", "3", SIMILAR | DAILY, lengths("rec:item:", 3)),
    # the unit of work, not of output: the published lists stand (a later rerun computes blocks of 3)
    ("SIMILAR_MOVIES_BLOCK_ROWS", "3", NOTHING, unchanged),
    ("USER_RECS_TTL_SECONDS", "100000", PUBLISH_USERS | DAILY, ttl_of("rec:user:", 100_000)),
    ("USER_RECS_TOP_N", "2", USERS | DAILY, lengths("rec:user:", 2)),
    ("USER_RECS_ACTIVE_DAYS", "36500", PUBLISH_USERS | DAILY, unchanged),  # every user was active in 100 years
    # The cadence of the full read of the API's interactions: applied by the next day's read, reruns nothing
    ("USER_RECS_FULL_READ_DAYS", "1", NOTHING, unchanged),
    # Three partitions: the ratings shuffled again and the day's API read split three ways; the same lists
    ("USER_RECS_PARTITIONS", "3", USERS | {"ReadApiInteractions", "ShuffleRatingsPart"} | DAILY, unchanged),
    # "best" (the default) took content on this world; the collaborative lists are as long, computed anew
    ("USER_RECS_METHOD", "collaborative", USERS | {"TrainCollaborative"} | DAILY, lengths("rec:user:", 2)),
    (
        "REDIS_URL",
        lambda w: w.env["REDIS_URL"].rsplit("/", 1)[0] + "/9",
        POPULAR | SIMILAR | PUBLISH_USERS | DAILY,  # with the blocks of 3 the row above asked for
        same_lists_other_database,
    ),
    # A new store or database: what MongoDB holds is loaded again; the movies keep their ids (the map).
    # Everything below an incomplete stage runs too (it cannot know the rebuilt stage will be the same).
    (
        "MONGODB_DATABASE",
        "other",
        MOVIES_ON
        | RATINGS_ON - {"PrepareRatings"}
        | POPULAR
        | {"UpdateSimilarMovies"}
        | USERS
        | DAILY
        | {"ReadApiInteractions", "TrainCollaborative"},  # the day's read and model are of the database read
        unchanged,
    ),
    ("TRYOUT_STORE", lambda w: str(w.folder / "store2.bson"), NOTHING, unchanged),  # MONGODB_URI is set: unused
    (
        "EMBEDDING_CHUNK_SIZE",
        "4",
        # the same vectors (the same model): the day's partitions stand
        EMBED | QUALITY | MOVIES_ON | {"LoadInteractions"} | POPULAR | {"UpdateSimilarMovies"} | PUBLISH_USERS | DAILY,
        unchanged,
    ),
    # the same ratings in smaller parts: the day's partitions stand
    ("INTERACTIONS_CHUNK_ROWS", "2", RATINGS_ON | QUALITY | POPULAR | PUBLISH_USERS | DAILY, unchanged),
    (
        "HF_MODEL_NAME",
        lambda w: str(w.model_copy),
        # the partitions computed again, from the ratings in the parts of 2 the row above made (shuffled now)
        EMBED | QUALITY | MOVIES_ON | {"LoadInteractions"} | POPULAR | SIMILAR | USERS | {"ShuffleRatingsPart"} | DAILY,
        unchanged,
    ),  # a copy of the same model: the same lists
    # A new dataset folder: everything is derived again there (MongoDB keeps the movies' ids).
    ("MOVIELENS_ZIP_FILENAME", "ml-renamed.zip", EVERYTHING, unchanged),
    ("GCS_DATASET_PATH", "other-prefix/", EVERYTHING, unchanged),
    ("LOCAL_BUCKET_DIR", lambda w: str(w.folder / "bucket2"), EVERYTHING, unchanged),
    ("GCS_BUCKET_NAME", lambda w: w.gcs_bucket, EVERYTHING, unchanged),
]


def test_every_setting_has_a_row() -> None:
    declared = {f.name.upper() for f in dataclasses.fields(Settings) if not f.metadata.get("derived")}
    assert declared == {name for name, *_ in ROWS}, "a setting without a row in ROWS (or a row without a setting)"


@pytest.fixture
def world(pipeline_env, redis_url: str, gcs_emulator: str, gcs_bucket: str, model, tmp_path: Path) -> World:
    zip_path = small_zip(tmp_path / "ml.zip", movies_csv=MOVIES + EXTRA, ratings_csv=RATINGS)
    (tmp_path / "mirror").mkdir()
    shutil.copy(zip_path, tmp_path / "mirror" / "ml.zip")
    model.save(str(tmp_path / "model-copy"))
    env = {
        "MOVIELENS_URL": zip_path.as_uri(),
        "REDIS_URL": redis_url,
        "TRYOUT_STORE": str(tmp_path / "store.bson"),
        "EMBEDDING_CHUNK_SIZE": "3",
        "INTERACTIONS_CHUNK_ROWS": "4",
        "SIMILAR_MOVIES_BLOCK_ROWS": "4",
        "POPULARITY_RECENT_DAYS": "10000",
    }
    return World(tmp_path, env, redis.Redis.from_url(redis_url), tmp_path / "model-copy", gcs_emulator, gcs_bucket)


def test_each_setting_changed_alone_reruns_exactly_the_stages_it_shapes(world: World, pipeline_env) -> None:
    world.env = pipeline_env(**world.env)
    assert "DailyRun" in families(build(DailyRun(date=DATE))["completed"])
    for name, value, expected, check in ROWS:
        before = world.snapshot()
        world.env = pipeline_env(**{**world.env, name: value(world) if callable(value) else value})
        if name == "REDIS_URL":
            world.client = redis.Redis.from_url(world.env["REDIS_URL"])
        ran = set(families(build(DailyRun(date=DATE))["completed"]))
        assert ran == expected, f"{name}: ran {sorted(ran)}, expected {sorted(expected)}"
        check(world, before, world.snapshot())
        # and a rerun with it is the no-op
        assert families(build(DailyRun(date=DATE))["completed"]) == [], name
