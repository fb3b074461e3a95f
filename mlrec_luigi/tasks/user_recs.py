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
import logging
from typing import Any, ClassVar

import numpy as np
from bson import ObjectId

from mlrec_luigi import collaborative, layout, methods, mongo, published, readers, user_recs
from mlrec_luigi.damage import DamagedObject, read_checked
from mlrec_luigi.logs import log_event
from mlrec_luigi.npy import to_npy
from mlrec_luigi.readers import read_movie_map, read_ratings_part
from mlrec_luigi.settings import USER_REDIS_PREFIX
from mlrec_luigi.tasks.base import MongoStage, Shape, Stage
from mlrec_luigi.tasks.embeddings import Embeddings
from mlrec_luigi.tasks.interactions import LoadInteractions
from mlrec_luigi.tasks.movies import LoadMovies
from mlrec_luigi.tasks.parameters import RunDateParameter, model_parameter
from mlrec_luigi.tasks.quality import MeasureQuality
from mlrec_luigi.tasks.ratings import PrepareRatings

logger = logging.getLogger("mlrec_luigi")
# The API's ObjectIds carry the API's clock: interactions stored this long before the read are looked at again.
CLOCK_SKEW = dt.timedelta(minutes=15)


class UpdateUserRecommendations(MongoStage):
    """Every user's exact recommendations → Redis ``rec:user:<userId>``."""

    REPORT_NAME = "user_recs"
    BRIEF_OMITS = ("state",)

    date = RunDateParameter(description="the run's date (UTC; USER_RECS_ACTIVE_DAYS ends with it)")
    model = model_parameter()

    STAMPED = ("read_at", "redis", "published")
    SHAPE: ClassVar[Shape] = {"record": str, "published": int}

    def requires(self) -> dict[str, Any]:
        return {"movies": LoadMovies(), "embeddings": Embeddings(), "interactions": LoadInteractions(),
                "ratings": PrepareRatings(), "quality": MeasureQuality()}  # fmt: skip

    def method(self) -> dict[str, Any]:
        """``USER_RECS_METHOD`` resolved by this run's quality figures: the method, its parameters and why."""
        quality = MeasureQuality().output().read() or {}
        return methods.choose(self.settings.user_recs_method, quality.get("figures"))

    def movie_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The catalogue's ids and vectors, as the similar movies read them (readers.movie_vectors)."""
        movies = self.input()["movies"].read() or {}
        manifest = self.input()["embeddings"]
        chunks = tuple((manifest.read() or {}).get("chunks", []))
        return readers.movie_vectors(self.bucket, self.settings, movies["map_md5"], manifest.key, chunks)

    def upstream(self) -> list[Stage]:
        return [LoadMovies(), LoadInteractions()]

    def marker_key(self) -> str:
        return layout.user_recs_marker_key(self.settings, self.date)

    def expect(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "source_md5": self.current_source_md5(),
            "embedding_model": settings.hf_model_name,
            "top_n": settings.user_recs_top_n,
            "ttl_seconds": settings.user_recs_ttl_seconds,
            "active_days": settings.user_recs_active_days,
            # What computed the lists, not the setting: content chosen by "best" is content.
            "method": {name: value for name, value in self.method().items() if name in ("method", "params")},
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

    def run(self) -> None:
        settings = self.settings
        k = settings.user_recs_top_n
        ids, vectors = self.movie_vectors()
        collection = self.db["interactions"]
        self.progress(0, 4, "reading the API's interactions and the MovieLens ratings")
        read_at = dt.datetime.now(dt.UTC)
        api_docs = mongo.api_interactions(collection)
        read_ids = {doc["_id"] for doc in api_docs}
        movies = self.input()["movies"].read() or {}
        movie_map = read_movie_map(self.bucket, settings)
        gathered = user_recs.gather(self._movielens_parts(), movie_map, ids, api_docs)

        method = self.method()
        if method["method"] == "collaborative":
            # A model trained tonight scores everyone anew: nothing of yesterday's lists is reused.
            self.progress(1, 4, f"training and scoring {len(gathered.users):,} users against {len(ids):,} movies")
            rows = collaborative.lists(gathered.interactions, len(gathered.users), len(ids),
                                       collaborative.Params.from_dict(method["params"]), k)  # fmt: skip
            reused, state_key = np.zeros(len(gathered.users), bool), None
        else:
            state_key = layout.user_recs_state_key(
                settings, settings.hf_model_name, str(movies["source_md5"]), layout.map_tag(str(movies["map_md5"])), k
            )
            rows, reused = self._reuse(state_key, gathered, k)
            changed = np.flatnonzero(~reused)
            self.progress(1, 4, f"scoring {len(changed):,} of {len(gathered.users):,} users, {len(ids):,} movies")
            rows[changed] = user_recs.user_lists(gathered, changed, vectors, k)
            self.bucket.write_bytes(state_key, to_npy(user_recs.state_records(gathered, rows)))

        chosen = np.flatnonzero((rows[:, 0] >= 0) & self._active(gathered))
        keys = [f"{USER_REDIS_PREFIX}{user}" for user in gathered.users[chosen].tolist()]
        lists = [ids[picked[picked >= 0]].tolist() for picked in rows[chosen]]
        guard = published.NeverStale(
            str(settings.redis_url),
            lambda key: key.removeprefix(USER_REDIS_PREFIX),
            lambda: {
                str(doc.get("userId"))
                for doc in mongo.api_interactions(collection, ObjectId.from_datetime(read_at - CLOCK_SKEW))
                if doc["_id"] not in read_ids
            },
        )
        policy = published.publish(
            settings.redis_url,
            keys,
            lists,
            settings.user_recs_ttl_seconds,
            what="user lists",
            task=self.task_family,
            on_progress=lambda done: self.progress(2, 4, f"published {done:,} of {len(keys):,} user lists"),
            leave_out=guard.leave_out,
        )
        if policy == published.PUBLISHED:
            guard.finish()  # writes that landed during the last batch
        position = {key: i for i, key in enumerate(keys)}
        kept = np.array([position[key] for key in guard.sent], dtype=np.int64)
        record = published.write_record(
            self.bucket,
            layout.user_recs_published_key(settings, self.date),
            list(guard.sent),
            [lists[i] for i in kept],
            {published.FINGERPRINT: gathered.fingerprints[chosen[kept]]},
        )
        self.counts = {
            "users": len(gathered.users),
            "with_list": int((rows[:, 0] >= 0).sum()),
            "recomputed": int((~reused).sum()),
            "reused": int(reused.sum()),
            "published": len(guard.sent),
            "left_out_interacted": len(guard.interacted),
            "deleted_after_interaction": guard.deleted,
            "inactive": int((rows[:, 0] >= 0).sum()) - len(chosen),
            "movies_recommended": user_recs.distinct_movies(rows[chosen]),
            "api_interactions": len(api_docs),
            "redis": policy,
        }
        self.write_marker({**self.counts, **record, "date": self.date.isoformat(), "read_at": read_at.isoformat(),
                           "state": state_key, "method": method})  # fmt: skip

    def _movielens_parts(self) -> list[np.ndarray]:
        manifest = self.input()["ratings"].read() or {}
        md5, rows = manifest["source_md5"], manifest["chunk_rows"]
        return [read_ratings_part(self.bucket, self.settings, md5, rows, i) for i in range(len(manifest["parts"]))]

    def _reuse(self, state_key: str, gathered: user_recs.Gathered, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows for every user, whether each was reused): the stored list of each user whose API interactions
        are unchanged; the release, the model, the movies and k are in the state's key."""
        rows = np.full((len(gathered.users), k), -1, np.int32)
        reused = np.zeros(len(gathered.users), bool)
        try:
            state = read_checked(self.bucket, state_key, user_recs.state_decoder(k), "every user is computed again")
        except FileNotFoundError:
            return rows, reused
        except DamagedObject as error:
            log_event(logger, str(error), logging.WARNING, task=self.task_family)
            return rows, reused
        stored = {user: i for i, user in enumerate(np.char.decode(state["user"]).tolist())}
        for index, user in enumerate(gathered.users.tolist()):
            at = stored.get(user)
            if at is not None and state["fingerprint"][at] == gathered.fingerprints[index]:
                rows[index] = state["rows"][at]
                reused[index] = True
        return rows, reused

    def _active(self, gathered: user_recs.Gathered) -> np.ndarray:
        days = self.settings.user_recs_active_days
        if days == 0:
            return np.ones(len(gathered.users), bool)
        end = dt.datetime.combine(self.date + dt.timedelta(days=1), dt.time(), dt.UTC)
        return gathered.last_time_us >= int((end - dt.timedelta(days=days)).timestamp() * 1_000_000)
