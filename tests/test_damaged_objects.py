"""Every object the pipeline reads back can be damaged: truncated, not JSON, JSON of the wrong shape, empty.

Through the `luigi` command, on one small dataset (a real wire-protocol MongoDB, a real redis-server):
each case damages one object of a complete pipeline, runs the command a person would run next, and
checks that the damage is named in one line (exit 30) or quietly recomputed, and that the following
run ends complete with every published list as it was and no movie's ``_id`` changed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pymongo
import pytest
import redis

from mlrec_luigi.storage import LocalBucket
from tests.support.env import subprocess_env
from tests.support.runs import run_luigi
from tests.support.zips import MOVIES, small_zip

DS = "datasets/ml"
EXTRA = "".join(f"{100 + i},Film {i} ({1990 + i}),{'Drama' if i % 2 else 'Comedy|Animation'}\n" for i in range(8))
RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{m},{r},{964982703 + 60 * i}\n"
    for i, (u, m, r) in enumerate([(1, 1, 5.0), (1, 100, 4.0), (2, 101, 4.5), (2, 3, 2.0), (3, 102, 5.0), (3, 1, 4.0)])
)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "truncated": truncated,
    "not-json": lambda data: b"\x00\x01 not json {",
    "wrong-shape": lambda data: b'["a", "list", "not", "an", "object"]',
    "empty": lambda data: b"",
}


class Pipeline:
    def __init__(self, folder: Path, env: dict[str, str], db: pymongo.database.Database, client: redis.Redis):
        self.folder, self.env, self.db, self.client = folder, env, db, client
        self.bucket = LocalBucket(folder / "bucket")

    def run(self, task: str = "DailyRun", date: str = "2026-11-24") -> tuple[int, str]:
        result = run_luigi(
            task, "--date", date, "--local-scheduler", "--lock-pid-dir", str(self.folder), env=self.env, timeout_s=300
        )
        return result.returncode, result.stderr

    def lists(self) -> dict[str, str]:
        return {key.decode(): self.client.get(key).decode() for key in self.client.scan_iter("rec:*")}

    def ids(self) -> dict[int, str]:
        return {d["movieId_ml"]: str(d["_id"]) for d in self.db.movies.find({}, {"movieId_ml": 1})}

    def damage(self, key: str, how: str) -> None:
        self.bucket.write_bytes(key, DAMAGES[how](self.bucket.read_bytes(key)))

    def one(self, pattern: str) -> str:
        (key,) = [k for k in self.bucket.list(f"{DS}/") if k.endswith(pattern) or pattern in k][:1]
        return key


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, mongoeco_server, redis_server) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("damaged")
    database = f"damaged_{uuid.uuid4().hex[:8]}"
    redis_url = redis_server.rsplit("/", 1)[0] + "/7"
    env = subprocess_env(
        folder,
        MOVIELENS_URL=small_zip(folder / "ml.zip", movies_csv=MOVIES + EXTRA, ratings_csv=RATINGS).as_uri(),
        MONGODB_URI=mongoeco_server,
        MONGODB_DATABASE=database,
        REDIS_URL=redis_url,
        POPULARITY_RECENT_DAYS="10000",
        SIMILAR_MOVIES_BLOCK_ROWS="4",
        USER_RECS_TOP_N="3",
    )
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    pipeline = Pipeline(folder, env, pymongo.MongoClient(mongoeco_server)[database], client)
    code, log = pipeline.run()
    assert code == 0, log[-3000:]
    pipeline.original = (pipeline.lists(), pipeline.ids())  # type: ignore[attr-defined]
    yield pipeline
    pymongo.MongoClient(mongoeco_server).drop_database(database)


def the_line_naming(log: str, text: str) -> str:
    lines = [json.loads(line)["message"] for line in log.splitlines() if line.startswith("{") and text in line]
    assert lines, log[-3000:]
    return lines[-1]


def recovers(pipeline: Pipeline, date: str) -> None:
    """The next run ends complete: the same lists, the same ids, and a rerun does nothing."""
    code, log = pipeline.run(date=date)
    assert code == 0, log[-3000:]
    lists, ids = pipeline.original  # type: ignore[attr-defined]
    assert pipeline.ids() == ids
    assert {k: v for k, v in pipeline.lists().items() if k in lists} == lists
    code, log = pipeline.run(date=date)
    assert code == 0 and '"task finished"' not in log, log[-3000:]


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_the_zip_in_the_bucket(pipeline: Pipeline, how: str) -> None:
    pipeline.damage(f"{DS}.zip", how)
    code, log = pipeline.run()
    assert code == 30
    line = the_line_naming(log, "is not a readable zip")
    assert f"{DS}.zip is not a readable zip" in line and "the next run downloads it again" in line
    assert "Traceback" not in line
    recovers(pipeline, "2026-11-24")


@pytest.mark.parametrize("how", ["truncated", "not-json", "wrong-shape", "empty"])
def test_the_movie_id_map_is_rebuilt_from_movies_with_the_same_ids(pipeline: Pipeline, how: str) -> None:
    pipeline.damage(f"{DS}/movie_id_map.json", how)
    code, log = pipeline.run()
    assert code == 30
    line = the_line_naming(log, "movie_id_map.json is damaged")
    assert "removed it; the next run rebuilds it from `movies`" in line
    recovers(pipeline, "2026-11-24")
    assert pipeline.bucket.read_json(f"{DS}/movie_id_map.json") == {
        str(m): i
        for m, i in pipeline.original[1].items()  # type: ignore[attr-defined]
    }


def test_a_damaged_map_with_a_movie_gone_refuses_naming_it(pipeline: Pipeline) -> None:
    pipeline.damage(f"{DS}/movie_id_map.json", "not-json")
    gone = pipeline.db.movies.find_one({"movieId_ml": 101})
    pipeline.db.movies.delete_one({"_id": gone["_id"]})
    assert pipeline.run()[0] == 30  # names the map
    code, log = pipeline.run()
    assert code == 30
    line = the_line_naming(log, "their _id cannot be recovered")
    assert "movieId [101]" in line and "restore the map from a backup" in line
    pipeline.db.movies.insert_one(gone)  # the operator restores the movie (or the map)
    recovers(pipeline, "2026-11-24")


LIVE_DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    **DAMAGES,
    "a-date-no-run-could-have": lambda data: b'{"date": "2099-01-01"}',  # later than tomorrow: an older version's
    "not-a-date": lambda data: b'{"date": "yesterday"}',
    "date-not-text": lambda data: b'{"date": 20261124}',
}


@pytest.mark.parametrize("how", [*LIVE_DAMAGES, "missing"])
def test_popular_live_json_is_checked_and_derived_again_from_the_markers(pipeline: Pipeline, how: str) -> None:
    """A stored claim is not believed as it is: the live date is derived from what the markers say was published."""
    live_key = f"{DS}/markers/popular/live.json"
    live = pipeline.bucket.read_json(live_key)["date"]
    if how == "missing":
        pipeline.bucket.delete(live_key)
    else:
        pipeline.bucket.write_bytes(live_key, LIVE_DAMAGES[how](pipeline.bucket.read_bytes(live_key)))
    pipeline.client.delete("rec:fallback:popular")  # the live list lost too: it must be published again
    backfill = f"2026-11-{1 + [*LIVE_DAMAGES, 'missing'].index(how):02d}"  # a new date each: it reads the live date
    code, log = pipeline.run("UpdatePopular", backfill)  # a backfill: never takes the live key
    assert code == 0, log[-3000:]
    assert "derived again from the markers" in the_line_naming(log, "derived again from the markers")
    assert pipeline.bucket.read_json(live_key) == {"date": live}
    assert pipeline.client.get("rec:fallback:popular") is None  # not the backfill's list
    code, log = pipeline.run("UpdatePopular", live)  # the live date's run publishes its list again
    assert code == 0, log[-3000:]
    assert pipeline.lists()["rec:fallback:popular"] == pipeline.original[0]["rec:fallback:popular"]  # type: ignore[attr-defined]
    code, log = pipeline.run("UpdatePopular", live)
    assert code == 0 and '"task finished"' not in log, log[-3000:]


@pytest.mark.parametrize(
    ("marker", "how"),
    [
        ("markers/load_movies.json", "not-json"),
        ("markers/load_movies.json", "wrong-shape"),
        ("markers/load_interactions.json", "truncated"),
        ("markers/similar_movies.json", "empty"),
        ("embeddings/sentence-transformers--all-MiniLM-L6-v2/manifest.json", "wrong-shape"),
        ("markers/daily/2026-11-24.json", "truncated"),
    ],
)
def test_a_damaged_marker_or_manifest_is_recomputed(pipeline: Pipeline, marker: str, how: str) -> None:
    pipeline.damage(f"{DS}/{marker}", how)
    recovers(pipeline, "2026-11-24")


def test_a_marker_with_a_field_of_the_wrong_type_is_recomputed(pipeline: Pipeline) -> None:
    key = f"{DS}/markers/load_movies.json"
    marker = pipeline.bucket.read_json(key)
    pipeline.bucket.write_json(key, {**marker, "movies": "many"})
    recovers(pipeline, "2026-11-24")


@pytest.mark.parametrize("kind", ["embedding chunk", "ratings part", "shuffled piece"])
def test_a_damaged_chunk_or_part_is_named_then_computed_again(pipeline: Pipeline, kind: str) -> None:
    name = {
        "embedding chunk": "chunk-00000.npy",
        "ratings part": "part-00000.npy",
        "shuffled piece": "part-00000/p-00000.npy",
    }
    key = pipeline.one(f"/{name[kind]}")
    day = {"embedding chunk": "2026-11-29", "ratings part": "2026-11-30", "shuffled piece": "2026-12-02"}[kind]
    pipeline.damage(key, "truncated")
    # Who reads it on a new day: the partitions read the vectors; the shuffle reads a ratings part (its record
    # of having split it gone); a partition computed from scratch (its state gone) reads its shuffled pieces.
    if kind == "ratings part":
        pipeline.bucket.delete(pipeline.one("/part-00000/done.json"))
    if kind == "shuffled piece":
        pipeline.bucket.delete(pipeline.one("/state-00000.npy"))
    code, log = pipeline.run("UpdateUserRecommendations", day)
    assert code == 30
    assert "is not a readable .npy file" in the_line_naming(log, key.rsplit("/", 1)[-1])
    recovers(pipeline, day)


def test_a_damaged_similar_block_is_named_then_computed_again(pipeline: Pipeline) -> None:
    key = pipeline.one("block-00001.npy")
    pipeline.damage(key, "truncated")
    pipeline.client.delete(*[k for k in pipeline.client.scan_iter("rec:item:*")][:1])  # an evicted key: republish
    code, log = pipeline.run()
    assert code == 30
    assert "block-00001.npy is not a readable .npy file" in the_line_naming(log, "block-00001.npy")
    recovers(pipeline, "2026-11-24")


@pytest.mark.parametrize("what", ["user-lists state", "similar record", "user-lists record"])
def test_a_damaged_state_or_record_is_named_and_recomputed(pipeline: Pipeline, what: str) -> None:
    pattern = {"user-lists state": "/state-00000.npy", "similar record": "similar/published.npy",
               "user-lists record": "user_recs/published/2026-11-24.npy"}[what]  # fmt: skip
    key = pipeline.one(pattern)
    pipeline.damage(key, "truncated")
    # The state is read only when the user lists run: a new date makes them run (that date is not complete yet).
    date = "2026-11-25" if what == "user-lists state" else "2026-11-24"
    code, log = pipeline.run(date=date)
    assert code == 0, log[-3000:]
    assert key in the_line_naming(log, "is not a readable .npy file")
    if what == "user-lists state":  # nothing reused from a state that cannot be read
        marker = pipeline.bucket.read_json(f"{DS}/markers/user_recs/{date}.json")
        assert marker["reused"] == 0 and marker["recomputed"] == marker["users"] > 0
    recovers(pipeline, date)


def test_a_damaged_run_report_is_named_by_the_probe(pipeline: Pipeline) -> None:
    import subprocess
    import sys

    from tests.support.processes import PROJECT

    pipeline.damage(f"{DS}/runs/latest.json", "truncated")
    probe = subprocess.run(
        [sys.executable, "-m", "mlrec_luigi.report", "--check"], cwd=PROJECT, env=pipeline.env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 1 and probe.stdout.startswith("damaged: ") and "latest.json" in probe.stdout
    assert len(probe.stdout.splitlines()) == 1 and "Traceback" not in probe.stderr
    code, _ = pipeline.run(date="2026-12-01")  # the next daily run writes it again
    assert code == 0
    assert pipeline.bucket.read_json(f"{DS}/runs/latest.json")["date"] == "2026-12-01"


def test_the_report_names_a_damaged_map_in_one_line(pipeline: Pipeline) -> None:
    import subprocess
    import sys

    from tests.support.processes import PROJECT

    pipeline.damage(f"{DS}/movie_id_map.json", "not-json")
    report = subprocess.run(
        [sys.executable, "-m", "mlrec_luigi.report"], cwd=PROJECT, env=pipeline.env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 1 and "Traceback" not in report.stderr, report.stderr[-2000:]
    last = report.stdout.strip().splitlines()[-1]
    assert last.startswith("damaged: ") and "movie_id_map.json is damaged (not JSON)" in last
    recovers(pipeline, "2026-12-01")  # the next daily run rebuilds the map from `movies`, ids unchanged
