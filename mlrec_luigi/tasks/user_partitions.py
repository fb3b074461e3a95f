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
    """The API's own interactions, read once for the run's date, as one piece per partition."""

    date = RunDateParameter(description="the run's date")
    partitions = CheckedIntParameter(minimum=1)

    def output(self) -> BucketTarget:
        return BucketTarget(self.bucket, layout.api_read_key(self.settings, self.date, self.partitions, None))

    def run(self) -> None:
        collection = self.db["interactions"]
        read_at = dt.datetime.now(dt.UTC)
        docs = mongo.api_interactions(collection)
        near = ObjectId.from_datetime(read_at - CLOCK_SKEW)
        records = partitions.api_records(docs)
        for partition, piece in enumerate(partitions.split_api(records, self.partitions)):
            key = layout.api_read_key(self.settings, self.date, self.partitions, partition)
            self.bucket.write_bytes(key, to_npy(piece))
        record = {"read_at": read_at.isoformat(), "documents": len(docs),
                  "read_near": sorted(str(doc["_id"]) for doc in docs if doc["_id"] >= near)}  # fmt: skip
        self.bucket.write_bytes(self.output().key, json.dumps(record).encode())
        self.counts = {"api_interactions": len(docs)}

    def record(self) -> dict[str, Any]:
        return read_checked(self.bucket, self.output().key, json_decoder(_is_read_record),
                            "the next run reads the API's interactions again")  # fmt: skip

    def piece(self, partition: int) -> np.ndarray:
        key = layout.api_read_key(self.settings, self.date, self.partitions, partition)
        return read_checked(self.bucket, key, partitions.read_api_piece,
                            "the next run reads the API's interactions again", (self.output().key,))  # fmt: skip


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
        gathered = self.gathered(self.index, ids)
        k = self.top_n
        if self.method == "content":
            rows, reused = self._reuse(gathered, k)
            changed = np.flatnonzero(~reused)
            self.progress(0, 1, f"scoring {len(changed):,} of {len(gathered.users):,} users, {len(ids):,} movies")
            rows[changed] = user_recs.user_lists(gathered, changed, vectors, k)
            self.bucket.write_bytes(self._state_key(), to_npy(user_recs.state_records(gathered, rows)))
        else:
            model: TrainCollaborative = self.requires()["model"]
            users = read_checked(self.bucket, model.factors_key("users"), collaborative.read_user_factors,
                                 "the next run trains the model again", (model.output().key,))  # fmt: skip
            movie_factors = read_checked(self.bucket, model.output().key, collaborative.read_movie_factors,
                                         "the next run trains the model again")  # fmt: skip
            self.progress(0, 1, f"scoring {len(gathered.users):,} users, {len(ids):,} movies")
            rows = collaborative.score(gathered, users, movie_factors, k)
            reused = np.zeros(len(gathered.users), bool)
        self.bucket.create(self.output().key, to_npy(user_recs.partition_records(gathered, rows, reused)))
        self.counts = {"users": len(gathered.users), "recomputed": int((~reused).sum()), "reused": int(reused.sum())}

    def _state_key(self) -> str:
        return layout.user_recs_state_key(self.settings, self.model_name, self.source_md5, str(self.movie_ids),
                                          self.top_n, self.partitions, self.index)  # fmt: skip

    def _reuse(self, gathered: user_recs.Gathered, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows for every user, whether each was reused): the stored list of each user whose API interactions
        are unchanged; the release, the model, the movies, k and the partition are in the state's key."""
        rows = np.full((len(gathered.users), k), -1, np.int32)
        reused = np.zeros(len(gathered.users), bool)
        try:
            state = read_checked(self.bucket, self._state_key(), user_recs.state_decoder(k),
                                 "every user of the partition is computed again")  # fmt: skip
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
