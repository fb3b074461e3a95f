"""Stage 7: every user's exact recommendations, published where the API's personalised endpoint looks first.

    luigi --module mlrec_luigi UpdateUserRecommendations --local-scheduler
    luigi --module mlrec_luigi UpdateUserRecommendations --date 2026-11-24

For every ``userId`` in ``interactions`` (MovieLens users and the API's own): the API's own
definition (``user_recs.py``), computed over every movie instead of the API's random 500, and
published as ``rec:user:<userId>`` = JSON array of ``_id`` strings with ``USER_RECS_TTL_SECONDS``.
The MovieLens ratings are read from the bucket's ratings parts (never back from MongoDB);
only the API's own interactions are read from MongoDB.

Each user's list is kept in a state file beside the fingerprint of their API interactions:
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

from mlrec_luigi import cache, layout, mongo, user_recs
from mlrec_luigi.errors import Damaged
from mlrec_luigi.logs import log_event
from mlrec_luigi.npy import from_npy, to_npy
from mlrec_luigi.readers import read_movie_map, read_ratings_part
from mlrec_luigi.settings import USER_REDIS_PREFIX
from mlrec_luigi.tasks.base import MongoStage, Shape, Stage, model_parameter
from mlrec_luigi.tasks.interactions import LoadInteractions, PrepareRatings
from mlrec_luigi.tasks.movies import LoadMovies
from mlrec_luigi.tasks.parameters import RunDateParameter
from mlrec_luigi.tasks.similar import SimilarInputs

logger = logging.getLogger("mlrec_luigi")
# The API's ObjectIds carry the API's clock: interactions stored this long before the read are looked at again.
CLOCK_SKEW = dt.timedelta(minutes=15)


class StateDamaged(Damaged):
    """A stored state or published record cannot be read; the message names it."""


class UpdateUserRecommendations(MongoStage, SimilarInputs):
    """Every user's exact recommendations → Redis ``rec:user:<userId>``."""

    date = RunDateParameter(default=None, description="the run's date (UTC; USER_RECS_ACTIVE_DAYS ends with it)")
    model = model_parameter()

    STAMPED = ("read_at", "redis", "published")
    SHAPE: ClassVar[Shape] = {"record": str, "published": int}

    def requires(self) -> dict[str, Any]:
        return {**SimilarInputs.requires(self), "interactions": LoadInteractions(), "ratings": PrepareRatings()}

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
            "redis_configured": settings.redis_url is not None,
        }

    def holds(self, marker: dict[str, Any]) -> bool:
        """Every published key holds its list, unless the API deleted or rewrote it after that user interacted."""
        if marker.get("redis") != cache.PUBLISHED:
            return True
        try:
            label = self.bucket.uri(marker["record"])
            record = cache.read_record(self.bucket.read_bytes(marker["record"]), label, ("fingerprint",))
        except (FileNotFoundError, cache.RecordDamaged):
            return False  # the next run publishes again and records it anew
        differing = cache.record_differs(self.settings.redis_url, record)
        if not differing:
            return True
        keys = np.char.decode(record["key"]).tolist()
        recorded = dict(zip(keys, record["fingerprint"].tolist(), strict=True))
        users = [key.removeprefix(USER_REDIS_PREFIX) for key in differing]
        now = user_recs.fingerprints_by_user(mongo.api_interactions_of(self.db["interactions"], users))
        return all(now.get(user, 0) != recorded[f"{USER_REDIS_PREFIX}{user}"] for user in users)

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

        state_key = layout.user_recs_state_key(
            settings, settings.hf_model_name, str(movies["source_md5"]), str(movies["map_md5"])[:8], k
        )
        rows, reused = self._reuse(state_key, gathered, k)
        changed = np.flatnonzero(~reused)
        self.progress(1, 4, f"scoring {len(changed):,} of {len(gathered.users):,} users against {len(ids):,} movies")
        rows[changed] = user_recs.user_lists(gathered, changed, vectors, k)
        self.bucket.write_bytes(state_key, to_npy(state_records(gathered, rows)))

        chosen = np.flatnonzero((rows[:, 0] >= 0) & self._active(gathered))
        keys = [f"{USER_REDIS_PREFIX}{user}" for user in gathered.users[chosen].tolist()]
        lists = [ids[picked[picked >= 0]].tolist() for picked in rows[chosen]]
        published = cache.publish_policy(settings.redis_url, keys)
        sent: dict[str, None] = {}  # the keys written and still ours, in order
        changed_users: set[str] = set()
        deleted = 0
        if published == cache.PUBLISHED:

            def leave_out(batch: list[str]) -> set[str]:
                """Keys of users who interacted since the read: not written, and deleted where written."""
                nonlocal deleted
                since = ObjectId.from_datetime(read_at - CLOCK_SKEW)
                fresh = {
                    str(d.get("userId")) for d in mongo.api_interactions(collection, since) if d["_id"] not in read_ids
                }
                fresh -= changed_users
                changed_users.update(fresh)
                written = [key for key in sent if key.removeprefix(USER_REDIS_PREFIX) in fresh]
                deleted += cache.delete_keys(settings.redis_url, written)
                for key in written:
                    del sent[key]
                left = {key for key in batch if key.removeprefix(USER_REDIS_PREFIX) in changed_users}
                sent.update(dict.fromkeys(key for key in batch if key not in left))
                return left

            for done in cache.publish_lists(
                settings.redis_url, zip(keys, lists, strict=True), settings.user_recs_ttl_seconds, leave_out
            ):
                self.progress(2, 4, f"published {done:,} of {len(keys):,} user lists")
            leave_out([])  # writes that landed during the last batch
        else:
            log_event(logger, "user lists computed and kept in the bucket, not published", logging.WARNING,
                      task=self.task_family, reason=published)  # fmt: skip
        position = {key: i for i, key in enumerate(keys)}
        record_key = layout.user_recs_published_key(settings, self.date)
        kept = np.array([position[key] for key in sent], dtype=np.int64)
        record = cache.published_record(
            list(sent), [lists[i] for i in kept], {"fingerprint": gathered.fingerprints[chosen[kept]]}
        )
        self.bucket.write_bytes(record_key, to_npy(record))
        self.counts = {
            "users": len(gathered.users),
            "with_list": int((rows[:, 0] >= 0).sum()),
            "recomputed": len(changed),
            "reused": int(reused.sum()),
            "published": len(sent),
            "left_out_interacted": len(changed_users),
            "deleted_after_interaction": deleted,
            "inactive": int((rows[:, 0] >= 0).sum()) - len(chosen),
            "api_interactions": len(api_docs),
            "redis": published,
        }
        self.write_marker({**self.counts, "date": self.date.isoformat(), "read_at": read_at.isoformat(),
                           "record": record_key, "state": state_key})  # fmt: skip

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
            state = read_state(self.bucket.read_bytes(state_key), self.bucket.uri(state_key), k)
        except FileNotFoundError:
            return rows, reused
        except StateDamaged as error:
            log_event(logger, f"{error}: every user is computed again", logging.WARNING, task=self.task_family)
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


def _width(values: list[str]) -> int:
    return max((len(v.encode()) for v in values), default=1) or 1


def state_records(gathered: user_recs.Gathered, rows: np.ndarray) -> np.ndarray:
    users = gathered.users.tolist()
    dtype = np.dtype([("user", f"S{_width(users)}"), ("fingerprint", "<u8"), ("rows", "<i4", (rows.shape[1],))])
    records = np.empty(len(users), dtype)
    records["user"] = [u.encode() for u in users]
    records["fingerprint"] = gathered.fingerprints
    records["rows"] = rows
    return records


def read_state(data: bytes, label: str, k: int) -> np.ndarray:
    records = from_npy(data, label, StateDamaged)
    if records.dtype.names != ("user", "fingerprint", "rows") or records["rows"].shape[1:] != (k,):
        raise StateDamaged(f"{label} is not a user-lists state for {k} movies per user")
    return records
