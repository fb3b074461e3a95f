"""The user lists' work, shared across machines: the shuffle, the API read, the model, one task per partition.

    luigi --module mlrec_luigi UpdateUserRecommendations --workers 2     (the stage plans these tasks)

- ``ShuffleRatingsPart``: one ratings part of the bucket, split into one piece per user partition
  (memory: one part). One task per part: machines share the shuffle, and a kill redoes one part.
- ``ReadApiInteractions``: the API's own interactions read from MongoDB once per run, split into one
  piece per partition; its record (``read_at``, the documents read near it) is what the never-stale
  check at publishing compares with.
- ``TrainCollaborative``: the collaborative model's factors, trained on every like (the collaborative
  method only: a model is global).
- ``UserRecsPartition``: the lists of one partition's users from its pieces alone (memory: the
  partition's interactions, the catalogue's vectors, one block of scores), checkpointed create-once
  in the bucket; a kill resumes at the partitions not yet written, and machines share them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import luigi
import numpy as np
from bson import ObjectId

from mlrec_luigi import collaborative, layout, mongo, partitions, readers, user_recs
from mlrec_luigi.damage import DamagedObject, json_decoder, read_checked
from mlrec_luigi.logs import log_event
from mlrec_luigi.movielens import pack_part, unpack_part
from mlrec_luigi.npy import to_npy
from mlrec_luigi.readers import read_movie_map, read_ratings_part
from mlrec_luigi.tasks.base import ChunkTask, PipelineTask
from mlrec_luigi.tasks.embeddings import Embeddings
from mlrec_luigi.tasks.movies import LoadMovies
from mlrec_luigi.tasks.parameters import CheckedIntParameter, Md5Parameter, RunDateParameter
from mlrec_luigi.tasks.targets import BucketTarget

logger = logging.getLogger("mlrec_luigi")
# The API's ObjectIds carry the API's clock: interactions stored this long before the read are looked at again.
CLOCK_SKEW = dt.timedelta(minutes=15)


class ShuffleRatingsPart(ChunkTask):
    """Ratings part ``index`` as one piece per user partition (``…/shuffle/…/part-i/p-j.npy``)."""

    source_md5 = Md5Parameter()
    chunk_rows = CheckedIntParameter(minimum=1)
    partitions = CheckedIntParameter(minimum=1)
    index = CheckedIntParameter(minimum=0)

    def output(self) -> BucketTarget:
        """Written after every piece: the pieces' row counts."""
        return BucketTarget(self.bucket, self.piece_key(None))

    def piece_key(self, partition: int | None) -> str:
        return layout.shuffle_piece_key(self.settings, self.source_md5, self.chunk_rows, self.partitions,
                                        self.index, partition)  # fmt: skip

    def run(self) -> None:
        part = read_ratings_part(self.bucket, self.settings, self.source_md5, self.chunk_rows, self.index)
        pieces = partitions.split_ratings(part, self.partitions)
        for partition, piece in enumerate(pieces):
            self.bucket.write_bytes(self.piece_key(partition), pack_part(piece))
            self.progress(partition + 1, self.partitions, f"part {self.index}: {partition + 1} of {self.partitions}")
        rows = [len(piece) for piece in pieces]
        self.bucket.create(self.output().key, json.dumps({"rows": rows}).encode())
        self.counts = {"ratings": len(part), "partitions": self.partitions}

    def piece(self, partition: int) -> np.ndarray:
        """The ratings of ``partition`` in this part (damaged: named, removed with the done record)."""
        return read_checked(self.bucket, self.piece_key(partition), unpack_part,
                            "the next run shuffles this part again", (self.output().key,))  # fmt: skip


class ReadApiInteractions(PipelineTask):
    """The API's own interactions for the run's date, as one piece per partition; read incrementally.

    The API only inserts. A date's read takes the previous read's pieces and reads from MongoDB only the
    documents stored since that read (by ``_id``, ``CLOCK_SKEW`` earlier: the API's clock), one row per
    document. Everything is read again when there is no previous read (or it cannot be read), for a
    new release or model, for a date before the newest read (a backfill), and every
    ``USER_RECS_FULL_READ_DAYS`` days (a document written by hand, not by the API, is caught then).
    """

    date = RunDateParameter(description="the run's date")
    partitions = CheckedIntParameter(minimum=1)

    def output(self) -> BucketTarget:
        return BucketTarget(self.bucket, layout.api_read_key(self.settings, self.date, self.partitions, None))

    def run(self) -> None:
        settings = self.settings
        collection = self.db["interactions"]
        previous, why = self._previous()
        read_at = dt.datetime.now(dt.UTC)
        since = None if previous is None else ObjectId.from_datetime(
            dt.datetime.fromisoformat(previous["read_at"]) - CLOCK_SKEW
        )  # fmt: skip
        self.progress(0, self.partitions + 1, "reading the API's interactions" + ("" if since else " (all)"))
        docs = mongo.api_interactions(collection, since)
        pieces = partitions.split_api(partitions.api_records(docs), self.partitions)
        total = 0
        for partition, piece in enumerate(pieces):
            if previous is not None:
                kept = self._piece_of(dt.date.fromisoformat(previous["date"]), partition)
                piece = partitions.merged(kept, piece)
            total += len(piece)
            self.bucket.write_bytes(layout.api_read_key(settings, self.date, self.partitions, partition), to_npy(piece))
            self.progress(partition + 1, self.partitions + 1, f"partition {partition} written")
        # The documents the publishing's never-stale check will find again (stored since near_since) and must
        # know were read: it takes both from this record, so the margin is decided here alone.
        near_since = read_at - CLOCK_SKEW
        near = ObjectId.from_datetime(near_since)
        full_date = self.date.isoformat() if previous is None else previous["full_date"]
        record = {"read_at": read_at.isoformat(), "near_since": near_since.isoformat(),
                  "documents_read": len(docs), "documents": total,
                  "full": previous is None, "why": why, "full_date": full_date,
                  "read_near": sorted(str(doc["_id"]) for doc in docs if doc["_id"] >= near)}  # fmt: skip
        self.bucket.write_bytes(self.output().key, json.dumps(record).encode())
        latest = self._latest()
        if latest is None or latest.get("date", "") <= self.date.isoformat():  # a backfill leaves the newest
            self.bucket.write_json(layout.api_latest_key(settings, self.partitions), {
                "date": self.date.isoformat(), "read_at": record["read_at"], "full_date": full_date,
                "source_md5": self.current_source_md5(), "model": settings.hf_model_name,
            })  # fmt: skip
        self.counts = {"documents_read": len(docs), "documents": total, "full": int(previous is None)}

    def _latest(self) -> dict[str, Any] | None:
        try:
            return read_checked(self.bucket, layout.api_latest_key(self.settings, self.partitions),
                                json_decoder(_is_latest), "the next read reads everything")  # fmt: skip
        except FileNotFoundError:
            return None
        except DamagedObject as error:
            log_event(logger, str(error), logging.WARNING, task=self.task_family)
            return None

    def _previous(self) -> tuple[dict[str, Any] | None, str]:
        """The read this one continues from, or None and why everything is read."""
        latest = self._latest()
        if latest is None:
            return None, "no earlier read"
        if latest["date"] >= self.date.isoformat():
            return None, "a date before the newest read (a backfill)"
        if latest.get("source_md5") != self.current_source_md5() or latest.get("model") != self.settings.hf_model_name:
            return None, "a new release or model"
        age = (self.date - dt.date.fromisoformat(latest["full_date"])).days
        if age >= self.settings.user_recs_full_read_days:
            return None, f"the last full read is {age} days old (USER_RECS_FULL_READ_DAYS)"
        try:
            for partition in range(self.partitions):  # every piece read back before it is trusted
                self._piece_of(dt.date.fromisoformat(latest["date"]), partition)
        except (FileNotFoundError, DamagedObject) as error:
            log_event(logger, f"{error}: everything is read again", logging.WARNING, task=self.task_family)
            return None, "the earlier read is missing or damaged"
        return latest, f"documents since the read of {latest['date']}"

    def _piece_of(self, date: dt.date, partition: int) -> np.ndarray:
        key = layout.api_read_key(self.settings, date, self.partitions, partition)
        return read_checked(self.bucket, key, partitions.read_api_piece, "the next read reads everything")

    def record(self) -> dict[str, Any]:
        return read_checked(self.bucket, self.output().key, json_decoder(_is_read_record),
                            "the next run reads the API's interactions again")  # fmt: skip

    def piece(self, partition: int) -> np.ndarray:
        key = layout.api_read_key(self.settings, self.date, self.partitions, partition)
        return read_checked(self.bucket, key, partitions.read_api_piece,
                            "the next run reads the API's interactions again", (self.output().key,))  # fmt: skip


def _is_latest(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(k), str) for k in ("date", "read_at", "full_date"))


def _is_read_record(value: Any) -> bool:
    return (
        isinstance(value, dict) and isinstance(value.get("read_at"), str) and isinstance(value.get("read_near"), list)
    )


class PartitionInputs(PipelineTask):
    """What the model and the partitions read: the catalogue, the shuffled ratings, the API's documents."""

    date = RunDateParameter(description="the run's date")
    source_md5 = Md5Parameter()
    chunk_rows = CheckedIntParameter(minimum=1)
    ratings_parts = CheckedIntParameter(minimum=0)
    partitions = CheckedIntParameter(minimum=1)

    def requires(self) -> dict[str, Any]:
        common = {"source_md5": self.source_md5, "chunk_rows": self.chunk_rows, "partitions": self.partitions}
        shuffle = [ShuffleRatingsPart(**common, index=i) for i in range(self.ratings_parts)]
        return {"movies": LoadMovies(), "embeddings": Embeddings(), "shuffle": shuffle,
                "api": ReadApiInteractions(date=self.date, partitions=self.partitions)}  # fmt: skip

    def movie_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        movies = self.input()["movies"].read() or {}
        manifest = self.input()["embeddings"]
        chunks = tuple((manifest.read() or {}).get("chunks", []))
        return readers.movie_vectors(self.bucket, self.settings, movies["map_md5"], manifest.key, chunks)

    def gathered(self, partition: int, ids: np.ndarray) -> user_recs.Gathered:
        """Every interaction of the users of ``partition``, MovieLens and API, from its pieces alone."""
        shuffle: list[ShuffleRatingsPart] = self.requires()["shuffle"]
        movielens = [part.piece(partition) for part in shuffle]
        api: ReadApiInteractions = self.requires()["api"]
        return user_recs.gather(movielens, read_movie_map(self.bucket, self.settings), ids, api.piece(partition))


class TrainCollaborative(PartitionInputs, ChunkTask):
    """The collaborative model's factors, trained on every like of every partition."""

    params = luigi.Parameter(description="the hyper-parameters, as JSON (methods.choose)")

    def output(self) -> BucketTarget:
        return BucketTarget(self.bucket, self.factors_key("movies"))

    def factors_key(self, which: str) -> str:
        return layout.collaborative_key(self.settings, self.date, self.source_md5, self.partitions, self.params, which)

    def run(self) -> None:
        ids, _ = self.movie_vectors()
        user_names, like_users, like_rows, at = [], [], [], 0
        for partition in range(self.partitions):
            self.progress(partition, self.partitions + 1, f"reading the likes of partition {partition}")
            gathered = self.gathered(partition, ids)
            users, rows = collaborative.like_pairs(gathered.interactions)
            user_names.extend(gathered.users.tolist())
            like_users.append(users + at)
            like_rows.append(rows)
            at += len(gathered.users)
            del gathered
        users_all = np.concatenate(like_users) if like_users else np.zeros(0, np.int32)
        rows_all = np.concatenate(like_rows) if like_rows else np.zeros(0, np.int32)
        self.progress(self.partitions, self.partitions + 1, f"training on {len(users_all):,} likes")
        params = collaborative.Params.from_dict(json.loads(str(self.params)))
        user_factors, movie_factors = collaborative.fit(users_all, rows_all, (at, len(ids)), params)
        named = collaborative.named_user_factors(user_names, user_factors)
        self.bucket.write_bytes(self.factors_key("users"), to_npy(named))
        self.bucket.create(self.output().key, to_npy(movie_factors))
        self.counts = {"users": at, "likes": len(users_all), "movies": len(ids)}


class UserRecsPartition(PartitionInputs, ChunkTask):
    """The lists of the users of partition ``index``: users, their API fingerprint, last time, rows."""

    index = CheckedIntParameter(minimum=0)
    movie_ids = luigi.Parameter(description="a hash of the movie id map: the rows' order")
    model_name = luigi.Parameter()
    top_n = CheckedIntParameter(minimum=0, maximum=1_000)
    method = luigi.Parameter(description="content, or the collaborative model's hyper-parameters as JSON")

    def requires(self) -> dict[str, Any]:
        needs = super().requires()
        if self.method != "content":
            needs["model"] = TrainCollaborative(
                date=self.date, source_md5=self.source_md5, chunk_rows=self.chunk_rows,
                ratings_parts=self.ratings_parts, partitions=self.partitions, params=self.method,
            )  # fmt: skip
        return needs

    def output(self) -> BucketTarget:
        return BucketTarget(self.bucket, layout.user_partition_key(
            self.settings, self.date, self.model_name, self.source_md5, self.movie_ids, self.top_n,
            self.method, self.partitions, self.index))  # fmt: skip

    def run(self) -> None:
        ids, vectors = self.movie_vectors()
        k = self.top_n
        if self.method == "content":
            records = self._content_lists(ids, vectors, k)
            self.bucket.write_bytes(self._state_key(), to_npy(records))
        else:
            gathered = self.gathered(self.index, ids)
            model: TrainCollaborative = self.requires()["model"]
            users = read_checked(self.bucket, model.factors_key("users"), collaborative.read_user_factors,
                                 "the next run trains the model again", (model.output().key,))  # fmt: skip
            movie_factors = read_checked(self.bucket, model.output().key, collaborative.read_movie_factors,
                                         "the next run trains the model again")  # fmt: skip
            self.progress(0, 1, f"scoring {len(gathered.users):,} users, {len(ids):,} movies")
            rows = collaborative.score(gathered, users, movie_factors, k)
            records = user_recs.partition_records(gathered, rows, np.zeros(len(gathered.users), bool))
        self.bucket.create(self.output().key, to_npy(records))
        reused = int(records["reused"].sum())
        self.counts = {"users": len(records), "recomputed": len(records) - reused, "reused": reused}

    def _content_lists(self, ids: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
        """Every user's content list: from the partition's state, only the users whose API interactions
        changed computed again (from their own interactions alone), or everyone when there is no state."""
        state = self._state(k)
        if state is None:
            gathered = self.gathered(self.index, ids)
            self.progress(0, 1, f"scoring {len(gathered.users):,} users, {len(ids):,} movies")
            everyone = np.arange(len(gathered.users))
            rows = user_recs.user_lists(gathered, everyone, vectors, k)
            return user_recs.partition_records(gathered, rows, np.zeros(len(gathered.users), bool))
        api: ReadApiInteractions = self.requires()["api"]
        piece = api.piece(self.index)
        changed = user_recs.changed_users(state, user_recs.api_fingerprints(piece))
        if not changed:
            return user_recs.with_changes(state, changed, state[:0])
        self.progress(0, 1, f"scoring the {len(changed):,} users whose interactions changed, {len(ids):,} movies")
        names = np.array(sorted(changed))
        # A MovieLens user's id is a uint32 written plainly ("7", never "007"): only those have ratings.
        numeric = np.array([int(u) for u in names.tolist() if u.isdigit() and str(int(u)) == u and int(u) < 2**32],
                           dtype=np.int64)  # fmt: skip
        shuffle: list[ShuffleRatingsPart] = self.requires()["shuffle"]
        movielens = [(rows := part.piece(self.index))[np.isin(rows["userId"], numeric)] for part in shuffle]
        mine = piece[np.isin(np.char.decode(piece["user"]), names)]
        gathered = user_recs.gather(movielens, read_movie_map(self.bucket, self.settings), ids, mine)
        rows = user_recs.user_lists(gathered, np.arange(len(gathered.users)), vectors, k)
        computed = user_recs.partition_records(gathered, rows, np.zeros(len(gathered.users), bool))
        return user_recs.with_changes(state, changed, computed)

    def _state_key(self) -> str:
        return layout.user_recs_state_key(self.settings, self.model_name, self.source_md5, str(self.movie_ids),
                                          self.top_n, self.partitions, self.index)  # fmt: skip

    def _state(self, k: int) -> np.ndarray | None:
        """The partition's lists as last computed (the release, the model, the movies, k and the partitions
        are in its key), or None: every user of the partition is computed."""
        try:
            return read_checked(self.bucket, self._state_key(), user_recs.partition_decoder(k),
                                "every user of the partition is computed again")  # fmt: skip
        except FileNotFoundError:
            return None
        except DamagedObject as error:
            log_event(logger, str(error), logging.WARNING, task=self.task_family)
            return None
