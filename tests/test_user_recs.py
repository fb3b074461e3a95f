"""Every user's exact recommendations: the plain functions against a literal reading of the API's
definition, and the stage on the real model, a real wire-protocol MongoDB and a real redis-server."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pymongo
import pytest
import redis
from bson import Decimal128, ObjectId

from mlrec_luigi import UpdateUserRecommendations, cache, collaborative, methods, partitions, user_recs
from mlrec_luigi.movielens import RATING_RECORD
from mlrec_luigi.storage import LocalBucket
from mlrec_luigi.tasks import user_partitions as user_partitions_task
from mlrec_luigi.tasks import user_recs as user_recs_task
from tests.support.proxy import slow_tcp_proxy
from tests.support.runs import USER_RUN, build, build_fails, families
from tests.support.zips import MOVIES, small_zip

TODAY = dt.date(2026, 11, 24)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def api_brute_force(interactions: list[dict], embeddings: dict[str, np.ndarray], k: int) -> dict[str, list[str]]:
    """The API's definition read literally: one user at a time, float64, sorted() for every order."""
    by_user: dict[str, list[dict]] = defaultdict(list)
    for doc in interactions:
        by_user[str(doc["userId"])].append(doc)
    lists = {}
    for user, docs in by_user.items():
        # MongoDB's {type: "rate", value: {$gte: 4.0}}: numbers only (a text or a bool never matches), newest 50.
        rates = [d for d in docs if d["type"] == "rate" and mongo_number_at_least(d["value"], 4.0)]
        rates.sort(key=lambda d: (-d["timestamp"].timestamp(), tie_key(d["movieId"])))
        # Then the API keeps the ids ObjectId.is_valid accepts, as the movie ObjectId names.
        liked = list(dict.fromkeys(str(ObjectId(d["movieId"])) for d in rates[:50] if ObjectId.is_valid(d["movieId"])))
        vectors = [np.asarray(embeddings[m], dtype=np.float64) for m in liked if m in embeddings]
        seen = {str(ObjectId(d["movieId"])) for d in docs if ObjectId.is_valid(d["movieId"])}
        candidates = [m for m in sorted(embeddings) if m not in seen]
        if not vectors or not candidates:
            continue
        profile = np.mean(vectors, axis=0)
        profile /= np.linalg.norm(profile)
        score = {m: float(np.dot(profile, embeddings[m])) for m in candidates}
        lists[f"rec:user:{user}"] = sorted(candidates, key=lambda m: (-score[m], m))[:k]
    return lists


def mongo_number_at_least(value: object, bound: float) -> bool:
    if isinstance(value, Decimal128):
        return float(value.to_decimal()) >= bound
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= bound


def tie_key(movie_id: object) -> str:
    return str(ObjectId(movie_id)) if ObjectId.is_valid(movie_id) else f"~{movie_id!r}"


def computed_lists(
    interactions: list[dict], embeddings: dict[str, np.ndarray], movie_map: dict[int, str], k: int
) -> dict[str, list[str]]:
    """The module's answer for the same data, MovieLens ratings given as ratings parts (as the stage reads them)."""
    by_hex = {hex_id: ml for ml, hex_id in movie_map.items()}
    ml = [d for d in interactions if d.get("source") == "movielens"]
    part = np.array(
        [(int(d["timestamp"].timestamp()), int(d["userId"]), by_hex[d["movieId"]], d["value"]) for d in ml],
        dtype=RATING_RECORD,
    )
    ids = np.array(sorted(embeddings))
    vectors = np.array([embeddings[i] for i in ids], dtype=np.float32)
    api = [d for d in interactions if d.get("source") != "movielens"]
    gathered = user_recs.gather(
        [part[: len(part) // 2], part[len(part) // 2 :]], movie_map, ids, partitions.api_records(api)
    )
    everyone = np.arange(len(gathered.users))
    rows = user_recs.user_lists(gathered, everyone, vectors, k)
    return {
        f"rec:user:{user}": ids[picked[picked >= 0]].tolist()
        for user, picked in zip(gathered.users.tolist(), rows, strict=True)
        if picked[0] >= 0
    }


def at(seconds: float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


def random_case(seed: int, movies: int = 40, dimension: int = 8) -> tuple[list[dict], dict[str, np.ndarray], dict]:
    rng = np.random.default_rng(seed)
    hexes = sorted(str(ObjectId()) for _ in range(movies))
    raw = rng.normal(size=(movies, dimension))
    raw[5] = raw[6]  # two movies with one vector: ties by _id
    embeddings = {h: (v / np.linalg.norm(v)).astype(np.float32) for h, v in zip(hexes, raw, strict=True)}
    movie_map = {i + 1: h for i, h in enumerate(hexes)}
    docs: list[dict] = []
    for user in range(1, 9):  # MovieLens users: ratings, some at the same second
        for movie in rng.choice(movies, size=int(rng.integers(1, 12)), replace=False):
            stamp = float(1_000_000 + int(rng.integers(0, 5)))
            docs.append({"userId": str(user), "movieId": hexes[movie], "type": "rate",
                         "value": float(rng.choice([2.0, 4.0, 4.5, 5.0])), "timestamp": at(stamp),
                         "source": "movielens"})  # fmt: skip
    unknown = str(ObjectId())  # a movie without an embedding
    api_users = {
        "0b7c1d5e-aaaa-4bbb-8ccc-1234567890ab": [("rate", 5.0, 3), ("rate", 4.0, 9), ("rate", 5.0, unknown)],
        "views-only": [("view", 1.0, 2), ("like", 1.0, 4), ("bookmark", 1.0, 7)],
        "1": [("skip", 1.0, 11), ("rate", 5.0, 12), ("view", None, 13)],  # a MovieLens user on the API too
        "many-likes": [("rate", 4.5, m // 2) for m in range(70)],  # more than 50: only the newest 50 count
        "unknown-only": [("rate", 5.0, unknown)],
        "saw-everything": [("view", 1.0, m) for m in range(movies)] + [("rate", 5.0, 0)],
    }
    for user, actions in api_users.items():
        for step, (kind, value, movie) in enumerate(actions):
            movie_id = movie if isinstance(movie, str) else hexes[movie]
            docs.append({"_id": ObjectId(), "userId": user, "movieId": movie_id, "type": kind, "value": value,
                         "timestamp": at(2_000_000 + step)})  # fmt: skip
    return docs, embeddings, movie_map


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 10, 45])
def test_every_users_list_equals_the_apis_definition_read_literally(seed: int, k: int) -> None:
    docs, embeddings, movie_map = random_case(seed)
    expected = api_brute_force(docs, embeddings, k)
    assert computed_lists(docs, embeddings, movie_map, k) == expected
    assert "rec:user:views-only" not in expected and "rec:user:unknown-only" not in expected
    assert "rec:user:saw-everything" not in expected and "rec:user:many-likes" in expected


def test_only_the_50_newest_likes_shape_the_profile_and_ties_go_by_movie_id() -> None:
    docs, embeddings, movie_map = random_case(4)
    hexes = sorted(embeddings)
    # 50 likes of movie 0 at the same newest second, then one older like of movie 1: movie 1 is not liked.
    extra = [{"_id": ObjectId(), "userId": "tied", "movieId": hexes[0], "type": "rate", "value": 5.0,
              "timestamp": at(3_000_000)} for _ in range(50)]  # fmt: skip
    extra.append({"_id": ObjectId(), "userId": "tied", "movieId": hexes[1], "type": "rate", "value": 5.0,
                  "timestamp": at(2_999_999)})  # fmt: skip
    lists = computed_lists(docs + extra, embeddings, movie_map, 5)
    profile_of_movie_0 = api_brute_force(
        [{**extra[0]}, {**extra[-1], "type": "view"}], embeddings, 5
    )  # movie 1 seen, not liked
    assert lists["rec:user:tied"] == profile_of_movie_0["rec:user:tied"]


def test_a_block_of_users_masks_only_its_own_seen_movies() -> None:
    docs, embeddings, movie_map = random_case(5)
    original = user_recs.BLOCK_USERS
    try:
        user_recs.BLOCK_USERS = 2
        small_blocks = computed_lists(docs, embeddings, movie_map, 7)
    finally:
        user_recs.BLOCK_USERS = original
    assert small_blocks == api_brute_force(docs, embeddings, 7)


VALUES = {"int 5": 5, "float 4.5": 4.5, "text '5'": "5", "text '4.5'": "4.5", "bool True": True, "null": None,
          "Decimal128 4.5": Decimal128("4.5"), "NaN": float("nan"), "float 3.5": 3.5}  # fmt: skip


@pytest.mark.parametrize("value", list(VALUES))
def test_a_value_is_a_like_only_as_mongodb_compares_it(value: str) -> None:
    docs, embeddings, movie_map = random_case(6)
    hexes = sorted(embeddings)
    user = [{"_id": ObjectId(), "userId": "v", "movieId": hexes[3], "type": "rate", "value": VALUES[value],
             "timestamp": at(4_000_000)},
            {"_id": ObjectId(), "userId": "v", "movieId": hexes[8], "type": "rate", "value": 5.0,
             "timestamp": at(3_999_000)}]  # fmt: skip
    lists = computed_lists(docs + user, embeddings, movie_map, 5)
    assert lists == api_brute_force(docs + user, embeddings, 5)
    liked_3 = value in ("int 5", "float 4.5", "Decimal128 4.5")
    only_8 = api_brute_force([{**user[1]}, {**user[0], "type": "view"}], embeddings, 5)["rec:user:v"]
    assert (lists["rec:user:v"] != only_8) == liked_3  # movie 3 shapes the profile only as a number >= 4


def variant_ids(hex_id: str) -> dict[str, object]:
    return {
        "lowercase": hex_id, "uppercase": hex_id.upper(), "stored as an ObjectId": ObjectId(hex_id),
        "too short": hex_id[:23], "too long": hex_id + "0", "padded": f" {hex_id} ", "not hex": "z" * 24,
        "an int": 12345, "null": None,
    }  # fmt: skip


@pytest.mark.parametrize("variant", list(variant_ids("0" * 24)))
def test_a_movie_id_names_a_movie_only_as_objectid_is_valid_reads_it(variant: str) -> None:
    docs, embeddings, movie_map = random_case(7)
    hexes = sorted(embeddings)
    liked_id = variant_ids(hexes[3])[variant]
    seen_id = variant_ids(hexes[12])[variant]
    user = [{"_id": ObjectId(), "userId": "ids", "movieId": liked_id, "type": "rate", "value": 5.0,
             "timestamp": at(4_000_000)},
            {"_id": ObjectId(), "userId": "ids", "movieId": hexes[8], "type": "rate", "value": 5.0,
             "timestamp": at(3_999_000)},
            {"_id": ObjectId(), "userId": "ids", "movieId": seen_id, "type": "view", "value": None,
             "timestamp": at(3_998_000)}]  # fmt: skip
    lists = computed_lists(docs + user, embeddings, movie_map, 45)
    assert lists == api_brute_force(docs + user, embeddings, 45)
    names_the_movie = variant in ("lowercase", "uppercase", "stored as an ObjectId")
    assert (hexes[12] not in lists["rec:user:ids"]) == names_the_movie  # seen: never recommended
    assert (hexes[3] not in lists["rec:user:ids"]) == names_the_movie  # liked, hence seen


# --- the stage ---------------------------------------------------------------------------------

EXTRA = "".join(f"{100 + i},{title} ({1990 + i}),{genres}\n" for i, (title, genres) in enumerate(
    [("Toy Story 2", "Animation|Children|Comedy"), ("The Exorcist", "Horror|Thriller"), ("Heat", "Action|Crime"),
     ("Finding Nemo", "Animation|Children"), ("Alien", "Horror|Sci-Fi"), ("Casino", "Crime|Drama"),
     ("Shrek", "Animation|Comedy"), ("Scream", "Horror"), ("Ronin", "Action|Thriller"), ("Up", "Animation")]
))  # fmt: skip
RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{m},{r},{964982703 + 10 * i}\n"
    for i, (u, m, r) in enumerate(
        [(1, 1, 5.0), (1, 100, 4.5), (1, 2, 2.0), (2, 101, 5.0), (2, 104, 4.0), (2, 3, 4.0), (3, 102, 3.0),
         (4, 105, 5.0), (4, 107, 4.5), (4, 1, 1.0), (5, 103, 4.0)]
    )
)  # fmt: skip


class Stage:
    def __init__(self, configure: Callable[..., dict[str, str]], uri: str, database: str, redis_url: str, zip_path):
        self.configure, self.database, self.redis_url, self.zip_path = configure, database, redis_url, zip_path
        self.db = pymongo.MongoClient(uri, tz_aware=True)[database]
        self.base = {"MOVIELENS_URL": zip_path.as_uri(), "MONGODB_URI": uri, "MONGODB_DATABASE": database,
                     "REDIS_URL": redis_url, "USER_RECS_TOP_N": "4", "POPULARITY_RECENT_DAYS": "10000",
                     "USER_RECS_METHOD": "content"}  # the API's definition; the other methods: own tests  # fmt: skip
        self.env: dict[str, str] = {}

    def set(self, **env: str) -> Stage:
        self.env = self.configure(**{**self.base, **env})
        return self

    @property
    def bucket(self) -> LocalBucket:
        return LocalBucket(Path(self.env["LOCAL_BUCKET_DIR"]))

    @property
    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def published(self) -> dict[str, list[str]]:
        return {k.decode(): json.loads(self.client.get(k)) for k in self.client.scan_iter("rec:user:*")}

    def movie(self, title: str) -> str:
        return str(self.db.movies.find_one({"title": {"$regex": f"^{title}"}})["_id"])

    def api_write(self, user: str, movie: str, kind: str = "rate", value: float | None = 5.0) -> None:
        """What the API does on POST /api/interactions: insert, then DEL the user's key."""
        self.db.interactions.insert_one({"userId": user, "movieId": movie, "type": kind, "value": value,
                                         "timestamp": dt.datetime.now(dt.UTC)})  # fmt: skip
        self.client.delete(f"rec:user:{user}")

    def embeddings(self) -> dict[str, np.ndarray]:
        return {str(d["_id"]): np.array(d["embedding"]) for d in self.db.movies.find({}, {"embedding": 1})}

    def expected(self, k: int = 4) -> dict[str, list[str]]:
        return api_brute_force(list(self.db.interactions.find()), self.embeddings(), k)

    def quality_figures(self) -> dict:
        return self.bucket.read_json("datasets/ml/markers/quality.json")["figures"]

    def marker(self, date: dt.date = TODAY) -> dict:
        return self.bucket.read_json(f"datasets/ml/markers/user_recs/{date.isoformat()}.json")


@pytest.fixture
def stage(pipeline_env, wire_mongo, redis_url: str, tmp_path: Path, model) -> Stage:
    zip_path = small_zip(tmp_path / "ml.zip", movies_csv=MOVIES + EXTRA, ratings_csv=RATINGS)
    return Stage(pipeline_env, *wire_mongo, redis_url, zip_path).set()


def seed_api_users(stage: Stage) -> None:
    """API users of every kind, written before the run."""
    stage.set()
    build(UpdateUserRecommendations(date=TODAY))  # loads everything; the API users come after
    stage.api_write("0b7c1d5e-aaaa-4bbb-8ccc-1234567890ab", stage.movie("Alien"))
    stage.api_write("views-only", stage.movie("Heat"), "view", None)
    stage.api_write("1", stage.movie("Shrek"), "skip", None)  # a MovieLens user skips a movie
    for step in range(55):
        stage.api_write("many", stage.movie(["Scream", "Casino", "Up"][step % 3]), "rate", 4.5)


def test_every_user_gets_the_exact_list_with_the_ttl_and_a_rerun_does_nothing(stage: Stage) -> None:
    seed_api_users(stage)
    stage.set()
    summary = build(UpdateUserRecommendations(date=TODAY + dt.timedelta(days=1)))
    assert families(summary["completed"]) == USER_RUN
    expected = stage.expected()
    assert stage.published() == expected
    assert {"rec:user:1", "rec:user:0b7c1d5e-aaaa-4bbb-8ccc-1234567890ab", "rec:user:many"} <= set(expected)
    assert "rec:user:views-only" not in expected and "rec:user:3" not in expected  # no liked movie
    assert stage.movie("Shrek") not in expected["rec:user:1"]
    assert all(89_990 < stage.client.ttl(key) <= 90_000 for key in expected)
    marker = stage.marker(TODAY + dt.timedelta(days=1))
    assert (marker["published"], marker["redis"], marker["reused"]) == (len(expected), "published", 4)
    stage.set()
    assert build(UpdateUserRecommendations(date=TODAY + dt.timedelta(days=1)))["completed"] == set()


def test_a_flush_republishes_and_a_key_the_api_deleted_is_the_apis(stage: Stage) -> None:
    seed_api_users(stage)  # TODAY read and published before the API users wrote
    stage.set()
    assert build(UpdateUserRecommendations(date=TODAY))["completed"] == set()  # their DELs are the API's
    before = stage.published()
    user = "0b7c1d5e-aaaa-4bbb-8ccc-1234567890ab"
    stage.api_write(user, stage.movie("Toy Story 2"), "view", None)  # the API owns that key now
    stage.set()
    assert build(UpdateUserRecommendations(date=TODAY))["completed"] == set()
    assert f"rec:user:{user}" not in stage.published()
    stage.client.set("rec:user:2", json.dumps(before["rec:user:2"][::-1]))  # changed, the user did not interact
    stage.set()
    # Published again from the day's partitions, without computing; who wrote since the day's read is left out.
    assert families(build(UpdateUserRecommendations(date=TODAY))["completed"]) == ["UpdateUserRecommendations"]
    assert stage.published() == before
    stage.client.flushall()
    stage.set()
    assert families(build(UpdateUserRecommendations(date=TODAY))["completed"]) == ["UpdateUserRecommendations"]
    assert stage.published() == before
    assert stage.marker()["left_out_interacted"] == 4  # the four users who wrote after the read
    # The next day reads again: every list is the exact one, and only the users who wrote are computed.
    stage.set()
    assert families(build(UpdateUserRecommendations(date=TODAY + dt.timedelta(days=1)))["completed"]) == USER_RUN
    assert stage.published() == stage.expected()


def test_top_n_a_new_model_and_active_days_republish(stage: Stage, model, tmp_path: Path) -> None:
    seed_api_users(stage)
    stage.set(USER_RECS_TOP_N="2", USER_RECS_TTL_SECONDS="100000")
    tomorrow = TODAY + dt.timedelta(days=1)  # a new day: the API users' writes are read
    assert families(build(UpdateUserRecommendations(date=tomorrow))["completed"]) == USER_RUN
    assert stage.published() == stage.expected(2)
    assert all(99_990 < stage.client.ttl(key) <= 100_000 for key in stage.published())
    model.save(str(tmp_path / "other-model"))
    stage.set(HF_MODEL_NAME=str(tmp_path / "other-model"))
    assert {"LoadMovies", "UpdateUserRecommendations", "UserRecsPartition"} <= set(
        families(build(UpdateUserRecommendations(date=tomorrow))["completed"])
    )
    assert stage.published() == stage.expected()
    stage.client.flushall()
    stage.set(HF_MODEL_NAME=str(tmp_path / "other-model"), USER_RECS_ACTIVE_DAYS="3")
    build(UpdateUserRecommendations(date=dt.datetime.now(dt.UTC).date()))
    api_users = {"rec:user:0b7c1d5e-aaaa-4bbb-8ccc-1234567890ab", "rec:user:1", "rec:user:many"}
    assert set(stage.published()) == api_users  # the MovieLens users interacted in 2000 only
    assert stage.marker(dt.datetime.now(dt.UTC).date())["inactive"] == len(stage.expected()) - 3


def test_a_redis_out_of_memory_fails_in_one_line_and_marks_nothing(stage: Stage) -> None:
    seed_api_users(stage)
    stage.client.set("rec:user:2", '["kept"]')
    stage.client.config_set("maxmemory", "1")
    try:
        stage.set()
        build_fails(
            UpdateUserRecommendations(date=TODAY + dt.timedelta(days=1)),
            failed="UpdateUserRecommendations",
            match=r"RedisUnavailable: REDIS_URL redis://127\.0\.0\.1:\d+/0: cannot publish lists: "
            r"Redis is out of memory \(maxmemory reached\) \(used .* of maxmemory 1B\)",
        )
    finally:
        stage.client.config_set("maxmemory", "0")
    assert stage.client.get("rec:user:2") == b'["kept"]'
    assert not stage.bucket.exists("datasets/ml/markers/user_recs/2026-11-25.json")


@pytest.mark.parametrize("delay_s", [0.0, 0.02])
def test_api_writes_racing_the_stage_never_leave_a_stale_list(stage: Stage, delay_s: float, monkeypatch) -> None:
    seed_api_users(stage)
    racers = [f"racer-{i}" for i in range(6)]
    for user in racers:  # each has a list to lose
        stage.api_write(user, stage.movie("Alien"))
    titles = ["Heat", "Casino", "Ronin", "Scream", "Up", "Shrek", "Finding Nemo", "Toy Story 2"]
    writes: list[str] = []

    def api_write(step: int) -> None:
        user = racers[step % len(racers)]
        stage.api_write(user, stage.movie(titles[step % len(titles)]), ["rate", "view", "skip"][step % 3])
        writes.append(user)

    # Deterministic landings: while the stage computes, and between a batch's check and its SETs.
    compute, read = user_recs_task.user_recs.user_lists, user_recs_task.mongo.api_interactions

    def computing(*args, **kwargs):
        api_write(0)
        return compute(*args, **kwargs)

    def checked(collection, since=None):
        found = read(collection, since)
        if since is not None:
            api_write(len(writes))  # lands after the check, before the batch is written
        return found

    monkeypatch.setattr(user_recs_task.user_recs, "user_lists", computing)
    monkeypatch.setattr(user_recs_task.mongo, "api_interactions", checked)
    monkeypatch.setattr(cache, "PUBLISH_BATCH", 2)  # many batches
    stop = threading.Event()

    def background_api() -> None:  # and at any moment, against a Redis that answers slowly
        while not stop.is_set():
            api_write(len(writes) + 1)
            time.sleep(0.003)

    with slow_tcp_proxy(stage.redis_url, delay_s) as slow_url:
        stage.set(REDIS_URL=slow_url)
        writer = threading.Thread(target=background_api)
        writer.start()
        try:
            build(UpdateUserRecommendations(date=TODAY + dt.timedelta(days=1)))
        finally:
            stop.set()
            writer.join()
    assert len(set(writes)) == len(racers)
    expected = stage.expected()
    published = stage.published()
    for user in racers:
        key = f"rec:user:{user}"
        assert key not in published or published[key] == expected[key], user  # no key, or one that counts it all
    # Every other user holds exactly their list: none dropped, none stale (a dropped key used to pass here).
    quiet = {key: value for key, value in published.items() if key.removeprefix("rec:user:") not in racers}
    assert quiet == {key: value for key, value in expected.items() if key.removeprefix("rec:user:") not in racers}
    assert len(quiet) >= 5
    marker = stage.marker(TODAY + dt.timedelta(days=1))
    assert marker["left_out_interacted"] >= 1 and marker["published"] == len(quiet) + len(
        [u for u in racers if f"rec:user:{u}" in published]
    )


def assert_collaborative(stage: Stage, params: dict, k: int = 4) -> None:
    """Every published list is the collaborative model's, read literally from MongoDB (scores within float error)."""
    from tests.test_collaborative import collaborative_brute_force

    expected = collaborative_brute_force(
        list(stage.db.interactions.find()), stage.embeddings(), k, collaborative.Params.from_dict(params)
    )
    published = stage.published()
    assert set(published) == set(expected)
    for key, (best, score) in expected.items():
        np.testing.assert_allclose([score[m] for m in published[key]], [score[m] for m in best], atol=1e-5)


def test_the_collaborative_lists_are_published_never_stale_and_a_method_switch_republishes(
    stage: Stage, monkeypatch
) -> None:
    seed_api_users(stage)
    day, next_day = TODAY + dt.timedelta(days=1), TODAY + dt.timedelta(days=2)
    stage.set(USER_RECS_METHOD="collaborative")
    fit = user_partitions_task.collaborative.fit

    def training(*args, **kwargs):  # the API writes while the model trains: that user is left out
        stage.api_write("many", stage.movie("Heat"))
        return fit(*args, **kwargs)

    monkeypatch.setattr(user_partitions_task.collaborative, "fit", training)
    assert families(build(UpdateUserRecommendations(date=day))["completed"]) == sorted(
        [*USER_RUN, "TrainCollaborative"]
    )
    monkeypatch.undo()
    marker = stage.marker(day)
    tuned = methods.choose("collaborative", stage.quality_figures())["params"]
    assert marker["method"]["method"] == "collaborative" and marker["method"]["params"] == tuned
    assert "rec:user:many" not in stage.published() and marker["left_out_interacted"] == 1
    assert all(89_990 < stage.client.ttl(key) <= 90_000 for key in stage.published())
    before = stage.published()
    stage.client.flushall()  # the same day publishes the day's lists again; "many" wrote after the read
    stage.set(USER_RECS_METHOD="collaborative")
    assert families(build(UpdateUserRecommendations(date=day))["completed"]) == ["UpdateUserRecommendations"]
    assert stage.published() == before
    stage.set(USER_RECS_METHOD="collaborative")  # the next day reads "many"'s write and trains on it
    assert families(build(UpdateUserRecommendations(date=next_day))["completed"]) == sorted(
        [*USER_RUN, "TrainCollaborative"]
    )
    assert_collaborative(stage, tuned)
    assert "rec:user:many" in stage.published() and "rec:user:views-only" not in stage.published()  # no like
    stage.set(USER_RECS_METHOD="collaborative")
    assert build(UpdateUserRecommendations(date=next_day))["completed"] == set()
    stage.set(USER_RECS_METHOD="content")  # the switch republishes
    assert families(build(UpdateUserRecommendations(date=next_day))["completed"]) == [
        "UpdateUserRecommendations", "UserRecsPartition"
    ]  # fmt: skip
    assert stage.published() == stage.expected()
    stage.set(USER_RECS_METHOD="best")
    chosen = methods.choose("best", stage.quality_figures())
    completed = families(build(UpdateUserRecommendations(date=next_day))["completed"])
    assert completed == ([] if chosen["method"] == "content" else ["UpdateUserRecommendations"])
    assert stage.marker(next_day)["method"]["method"] == chosen["method"]
    if chosen["method"] == "content":
        assert stage.published() == stage.expected()
    else:
        assert_collaborative(stage, chosen["params"])


def test_the_api_interactions_are_read_incrementally_and_in_full_on_a_cadence(stage: Stage, monkeypatch) -> None:
    monkeypatch.setattr(user_partitions_task, "CLOCK_SKEW", dt.timedelta(0))  # the test's writes are seconds apart
    seed_api_users(stage)  # TODAY: read in full (no earlier read), before the API users wrote

    def read(day: dt.date) -> dict:
        stage.set(**({"USER_RECS_FULL_READ_DAYS": "4"} if day >= TODAY + dt.timedelta(days=4) else {}))
        assert families(build(UpdateUserRecommendations(date=day))["completed"]) == USER_RUN
        return stage.bucket.read_json(f"datasets/ml/user_recs/api/{day.isoformat()}/{stage.database}/P1/read.json")

    time.sleep(1.1)
    first = read(TODAY + dt.timedelta(days=1))  # the 58 documents the API wrote since TODAY's read
    assert (first["full"], first["documents_read"], first["documents"]) == (False, 58, 58)
    assert stage.published() == stage.expected()
    time.sleep(1.1)
    stage.api_write("late", stage.movie("Alien"))
    second = read(TODAY + dt.timedelta(days=2))  # one new document read; the others from the earlier pieces
    assert (second["full"], second["documents_read"], second["documents"]) == (False, 1, 59)
    assert stage.published() == stage.expected() and "rec:user:late" in stage.published()
    assert stage.marker(TODAY + dt.timedelta(days=2))["recomputed"] == 1  # only "late" computed
    # A document written by hand with an old _id (the API never does that) is missed by the daily read...
    old_id = ObjectId.from_datetime(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    hand = {"_id": old_id, "userId": "2", "movieId": stage.movie("Shrek"), "type": "rate", "value": 5.0,
            "timestamp": dt.datetime.now(dt.UTC)}  # fmt: skip
    stage.db.interactions.insert_one(hand)
    time.sleep(1.1)
    third = read(TODAY + dt.timedelta(days=3))
    assert (third["full"], third["documents"]) == (False, 59)
    # ...and caught by the full read USER_RECS_FULL_READ_DAYS after the last one.
    fourth = read(TODAY + dt.timedelta(days=4))
    assert (fourth["full"], fourth["documents_read"], fourth["documents"]) == (True, 60, 60)
    assert "USER_RECS_FULL_READ_DAYS" in fourth["why"]
    assert stage.published() == stage.expected()
    # A damaged piece of the newest read: everything is read again, the damage named.
    key = f"datasets/ml/user_recs/api/{(TODAY + dt.timedelta(days=4)).isoformat()}/{stage.database}/P1/p-00000.npy"
    stage.bucket.write_bytes(key, b"not a piece")
    time.sleep(1.1)
    fifth = read(TODAY + dt.timedelta(days=5))
    assert (fifth["full"], fifth["documents_read"]) == (True, 60) and "damaged" in fifth["why"]
