"""Stage 7: every user's exact recommendations, published where the API's personalised endpoint looks first.

    luigi --module mlrec_luigi UpdateUserRecommendations --local-scheduler
    luigi --module mlrec_luigi UpdateUserRecommendations --date 2026-11-24

For every ``userId`` in ``interactions`` (MovieLens users and the API's own), with the method
``USER_RECS_METHOD`` names, resolved by this run's quality figures (``methods.choose``): the API's own
content definition (``user_recs.py``), computed over every movie instead of the API's random 500, or
the collaborative model (``collaborative.py``: ALS trained in the run on every like); published as
``rec:user:<userId>`` = JSON array of ``_id`` strings with ``USER_RECS_TTL_SECONDS``.
The MovieLens ratings are read from the bucket's ratings parts (never back from MongoDB);
only the API's own interactions are read from MongoDB.

The users are split into ``USER_RECS_PARTITIONS`` partitions by a stable hash of their ``userId``
(0: one per 5,000,000 MovieLens ratings); each partition's lists are one ``UserRecsPartition`` task
(``user_partitions.py``: the ratings shuffled once per release, the API's interactions read once per
run), checkpointed in the bucket, shared by every worker on every machine; this stage publishes them.

Content lists: each user's list is kept in a state file beside the fingerprint of their API interactions:
a daily run recomputes only the users whose interactions changed (or all of them when the
release, the model or ``USER_RECS_TOP_N`` changed) and publishes every list again.

Never stale against the API, which inserts an interaction and then DELetes the user's key:
just before each batch of keys is written, and once after the last, the API interactions
stored since the stage read them are looked up; their users' keys are left out of the batch,
and deleted where an earlier batch wrote them. So a user who interacted after the read ends
with no key (the API computes it) or with the API's own list, whatever the order of the
API's insert, its DEL and our SETs. Complete only while every published key holds what was
published, or was deleted or rewritten by the API because that user interacted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, ClassVar

import luigi
import numpy as np
from bson import ObjectId

from mlrec_luigi import layout, methods, mongo, published, readers, user_recs
from mlrec_luigi.damage import read_checked
from mlrec_luigi.movielens import DatasetError
from mlrec_luigi.settings import USER_REDIS_PREFIX
from mlrec_luigi.tasks.base import ChunkedStage, MongoStage, Shape, Stage
from mlrec_luigi.tasks.embeddings import Embeddings
from mlrec_luigi.tasks.interactions import LoadInteractions
from mlrec_luigi.tasks.movies import LoadMovies
from mlrec_luigi.tasks.parameters import RunDateParameter, model_parameter
from mlrec_luigi.tasks.quality import MeasureQuality
from mlrec_luigi.tasks.ratings import PrepareRatings
from mlrec_luigi.tasks.user_partitions import ReadApiInteractions, UserRecsPartition

logger = logging.getLogger("mlrec_luigi")
RATINGS_PER_PARTITION = 5_000_000  # USER_RECS_PARTITIONS=0: the partitions a release's ratings make


def partition_count(setting: int, ratings: int) -> int:
    """``USER_RECS_PARTITIONS``, or (0) one partition per ``RATINGS_PER_PARTITION`` MovieLens ratings."""
    return setting or max(1, -(-ratings // RATINGS_PER_PARTITION))


class UpdateUserRecommendations(ChunkedStage, MongoStage):
    """Every user's recommendations → Redis ``rec:user:<userId>``, from the partitions' lists."""

    REPORT_NAME = "user_recs"
    BRIEF_OMITS = ("partitions_written",)

    date = RunDateParameter(description="the run's date (UTC; USER_RECS_ACTIVE_DAYS ends with it)")
    model = model_parameter()

    STAMPED = ("read_at", "redis", "published")
    SHAPE: ClassVar[Shape] = {"record": str, "published": int}

    def requires(self) -> dict[str, Any]:
        return {"movies": LoadMovies(), "embeddings": Embeddings(), "interactions": LoadInteractions(),
                "ratings": PrepareRatings(), "quality": MeasureQuality(),
                "partitions": self.planned_chunks}  # fmt: skip

    def method(self) -> dict[str, Any]:
        """``USER_RECS_METHOD`` resolved by this run's quality figures: the method, its parameters and why."""
        quality = MeasureQuality().output().read() or {}
        return methods.choose(self.settings.user_recs_method, quality.get("figures"))

    def upstream(self) -> list[Stage]:
        return [LoadMovies(), LoadInteractions()]

    def marker_key(self) -> str:
        return layout.user_recs_marker_key(self.settings, self.date)

    def expect(self) -> dict[str, Any]:
        settings = self.settings
        ratings = PrepareRatings().output().read() or {}
        return {
            "source_md5": self.current_source_md5(),
            "embedding_model": settings.hf_model_name,
            "top_n": settings.user_recs_top_n,
            "ttl_seconds": settings.user_recs_ttl_seconds,
            "active_days": settings.user_recs_active_days,
            # What computed the lists, not the setting: content chosen by "best" is content.
            "method": {name: value for name, value in self.method().items() if name in ("method", "params")},
            "partitions": partition_count(settings.user_recs_partitions, int(ratings.get("records") or 0)),
            "redis_configured": settings.redis_url is not None,
        }

    def holds(self, marker: dict[str, Any]) -> bool:
        """Every published key holds its list, unless the API deleted or rewrote it after that user interacted."""
        if marker.get("redis") != published.PUBLISHED:
            return True
        record = published.read_record(self.bucket, marker["record"], self.task_family)
        if record is None:
            return False  # the next run publishes again and records it anew
        return not published.unpublished_keys(str(self.settings.redis_url), record, self._owners_now)

    def _owners_now(self, keys: list[str]) -> dict[str, int]:
        return user_recs.api_fingerprints_of_keys(self.db["interactions"], keys)

    def chunks(self) -> list[UserRecsPartition]:
        """One task per partition of users (none until the movies, the ratings and the quality figures exist)."""
        movies, ratings, quality = (stage.output().valid() for stage in (LoadMovies(), PrepareRatings(),
                                                                         MeasureQuality()))  # fmt: skip
        if movies is None or ratings is None or quality is None:
            return []
        settings = self.settings
        method = self.method()
        count = partition_count(settings.user_recs_partitions, int(ratings.get("records") or 0))
        common = {
            "date": self.date, "source_md5": ratings["source_md5"], "chunk_rows": ratings["chunk_rows"],
            "ratings_parts": len(ratings["parts"]), "partitions": count,
            "movie_ids": layout.map_tag(str(movies["map_md5"])), "model_name": settings.hf_model_name,
            "top_n": settings.user_recs_top_n,
            "method": "content" if method["method"] == "content" else json.dumps(method["params"], sort_keys=True),
        }  # fmt: skip
        return [UserRecsPartition(**common, index=i) for i in range(count)]

    def finish(self, chunks: list[luigi.Task]) -> None:
        settings = self.settings
        k = settings.user_recs_top_n
        movies = self.input()["movies"].read() or {}
        manifest = self.input()["embeddings"]
        ids, _ = readers.movie_vectors(self.bucket, settings, movies["map_md5"], manifest.key,
                                       tuple((manifest.read() or {}).get("chunks", [])))  # fmt: skip
        if not chunks:
            raise DatasetError("no partition of users was planned: the ratings or the quality figures are missing")
        reader: ReadApiInteractions = chunks[0].requires()["api"]
        read = reader.record()
        near_since, read_near = dt.datetime.fromisoformat(read["near_since"]), set(read["read_near"])
        self.progress(0, 3, f"reading the lists of {len(chunks)} partition(s)")
        users, keys, lists, fingerprints = 0, list[str](), list[list[str]](), list[np.ndarray]()
        counts = {"with_list": 0, "recomputed": 0, "reused": 0, "inactive": 0}
        recommended: set[int] = set()
        for chunk in chunks:
            records = read_checked(self.bucket, chunk.output().key, user_recs.partition_decoder(k),
                                   "the next run computes this partition again")  # fmt: skip
            users += len(records)
            rows = records["rows"]
            with_list = rows[:, 0] >= 0
            chosen = np.flatnonzero(with_list & self._active(records["last_time_us"]))
            counts["with_list"] += int(with_list.sum())
            counts["inactive"] += int(with_list.sum()) - len(chosen)
            counts["reused"] += int(records["reused"].sum())
            counts["recomputed"] += int((~records["reused"]).sum())
            recommended.update(np.unique(rows[chosen][rows[chosen] >= 0]).tolist())
            keys.extend(f"{USER_REDIS_PREFIX}{user}" for user in np.char.decode(records["user"][chosen]).tolist())
            lists.extend(ids[picked[picked >= 0]].tolist() for picked in rows[chosen])
            fingerprints.append(records["fingerprint"][chosen])
        collection = self.db["interactions"]
        guard = published.NeverStale(
            str(settings.redis_url),
            lambda key: key.removeprefix(USER_REDIS_PREFIX),
            lambda: {
                str(doc.get("userId"))
                for doc in mongo.api_interactions(collection, ObjectId.from_datetime(near_since))
                if str(doc["_id"]) not in read_near
            },
        )
        policy = published.publish(
            settings.redis_url,
            keys,
            lists,
            settings.user_recs_ttl_seconds,
            what="user lists",
            task=self.task_family,
            on_progress=lambda done: self.progress(1, 3, f"published {done:,} of {len(keys):,} user lists"),
            leave_out=guard.leave_out,
        )
        if policy == published.PUBLISHED:
            guard.finish()  # writes that landed during the last batch
        position = {key: i for i, key in enumerate(keys)}
        kept = np.array([position[key] for key in guard.sent], dtype=np.int64)
        every_fingerprint = np.concatenate(fingerprints) if fingerprints else np.zeros(0, np.uint64)
        record = published.write_record(
            self.bucket,
            layout.user_recs_published_key(settings, self.date),
            list(guard.sent),
            [lists[i] for i in kept],
            {published.FINGERPRINT: every_fingerprint[kept]},
        )
        self.counts = {
            "users": users,
            **counts,
            "published": len(guard.sent),
            "left_out_interacted": len(guard.interacted),
            "deleted_after_interaction": guard.deleted,
            "movies_recommended": len(recommended),
            "api_interactions": int(read.get("documents", 0)),
            "partitions": len(chunks),
            "redis": policy,
        }
        written = [chunk.output().key for chunk in chunks]
        self.write_marker({**self.counts, **record, "date": self.date.isoformat(), "read_at": read["read_at"],
                           "method": self.method(), "partitions_written": written})  # fmt: skip

    def _active(self, last_time_us: np.ndarray) -> np.ndarray:
        days = self.settings.user_recs_active_days
        if days == 0:
            return np.ones(len(last_time_us), bool)
        end = dt.datetime.combine(self.date + dt.timedelta(days=1), dt.time(), dt.UTC)
        return last_time_us >= int((end - dt.timedelta(days=days)).timestamp() * 1_000_000)
