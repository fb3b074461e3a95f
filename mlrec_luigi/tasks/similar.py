"""Stage 6: every movie's exact nearest neighbours, published where the API looks first.

    luigi --module mlrec_luigi UpdateSimilarMovies --local-scheduler

For each movie of ``movies``: the ``SIMILAR_MOVIES_TOP_N`` other movies whose embeddings
have the highest cosine similarity, over all movies, ties broken by ``_id`` ascending.
Computed in blocks of ``SIMILAR_MOVIES_BLOCK_ROWS`` movies, one ``SimilarMoviesBlock`` task
each, checkpointed in the bucket under a key naming the zip, the movie ids, the model and
N (a kill resumes at the missing blocks; workers and machines share them), then published
as ``rec:item:<_id>`` = JSON array of ``_id`` strings, with ``SIMILAR_MOVIES_TTL_SECONDS``.
Complete only while every published key holds what was published (one server-side digest per
10,000 keys, compared with the record of what was published, ``…/similar/published.npy``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import luigi
import numpy as np

from mlrec_luigi import layout, published, readers, similar
from mlrec_luigi.damage import read_checked
from mlrec_luigi.movielens import DatasetError
from mlrec_luigi.settings import SIMILAR_REDIS_PREFIX
from mlrec_luigi.tasks.base import ChunkedStage, ChunkTask, PipelineTask, Shape, SourceChanged, Stage
from mlrec_luigi.tasks.embeddings import Embeddings
from mlrec_luigi.tasks.movies import LoadMovies
from mlrec_luigi.tasks.parameters import CheckedIntParameter, Md5Parameter, model_parameter
from mlrec_luigi.tasks.targets import BucketTarget

logger = logging.getLogger("mlrec_luigi")


def neighbours_per_movie(movies: int, top_n: int) -> int:
    """N, or fewer when the dataset has fewer other movies."""
    return max(0, min(top_n, movies - 1))


class SimilarInputs(PipelineTask):
    """What the block tasks share: the movies' ids and vectors, from the upstream outputs."""

    def requires(self) -> dict[str, luigi.Task]:
        return {"movies": LoadMovies(), "embeddings": Embeddings()}

    def movie_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        movies = self.input()["movies"].read() or {}
        manifest = self.input()["embeddings"]
        chunks = tuple((manifest.read() or {}).get("chunks", []))
        return readers.movie_vectors(self.bucket, self.settings, movies["map_md5"], manifest.key, chunks)


class SimilarMoviesBlock(SimilarInputs, ChunkTask):
    """The neighbours of movies ``[index * block_rows, (index + 1) * block_rows)`` in ``_id`` order."""

    source_md5 = Md5Parameter()
    movie_ids = luigi.Parameter(description="a hash of the movie id map: the rows' order")
    model_name = luigi.Parameter()
    top_n = CheckedIntParameter(minimum=0, maximum=1_000)
    block_rows = CheckedIntParameter(minimum=1)
    index = CheckedIntParameter(minimum=0)

    def output(self) -> BucketTarget:
        key = layout.similar_block_key(
            self.settings,
            self.model_name,
            self.source_md5,
            self.movie_ids,
            self.top_n,
            self.block_rows,
            self.index,
        )
        return BucketTarget(self.bucket, key)

    def run(self) -> None:
        if self.current_source_md5() != self.source_md5:
            raise SourceChanged(f"{self.bucket.uri(self.zip_key)} changed since block {self.index} was scheduled")
        ids, vectors = self.movie_vectors()
        start, stop = self.index * self.block_rows, min((self.index + 1) * self.block_rows, len(ids))
        k = neighbours_per_movie(len(ids), self.top_n)
        self.progress(0, stop - start, f"movies {start:,}..{stop - 1:,} of {len(ids):,}")
        rows = similar.compute_block(
            vectors,
            start,
            stop,
            k,
            lambda done: self.progress(done, stop - start, f"{done:,} of {stop - start:,} movies scored"),
        )
        self.bucket.create(self.output().key, similar.pack_block(rows))
        self.counts = {"movies": stop - start, "neighbours": k}


class UpdateSimilarMovies(ChunkedStage, SimilarInputs):
    """Every movie's exact nearest neighbours → Redis ``rec:item:<_id>``."""

    REPORT_NAME = "similar_movies"
    BRIEF_OMITS = ("blocks", "sample")

    model = model_parameter()

    STAMPED = ("movies", "record_md5", "redis")
    SHAPE: ClassVar[Shape] = {"movies": int, "record": str}

    def requires(self) -> dict[str, Any]:
        return {**SimilarInputs.requires(self), "blocks": self.planned_chunks}

    def upstream(self) -> list[Stage]:
        return [LoadMovies()]

    def marker_key(self) -> str:
        return layout.marker_key(self.settings, "similar_movies")

    def expect(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "source_md5": self.current_source_md5(),
            "embedding_model": settings.hf_model_name,
            "top_n": settings.similar_movies_top_n,
            "ttl_seconds": settings.similar_movies_ttl_seconds,
            "redis_configured": settings.redis_url is not None,
        }

    def holds(self, marker: dict[str, Any]) -> bool:
        if marker.get("redis") != published.PUBLISHED:
            return True
        record = published.read_record(self.bucket, marker["record"], self.task_family)
        if record is None or len(record) != marker.get("movies"):
            return False  # the next run publishes again and records it anew
        return not published.unpublished_keys(str(self.settings.redis_url), record)

    def chunks(self) -> list[SimilarMoviesBlock]:
        """One task per block of movies (none until the movies are loaded)."""
        movies = LoadMovies().output().valid()
        if movies is None:
            return []
        settings = self.settings
        rows = settings.similar_movies_block_rows
        common = {
            "source_md5": movies["source_md5"],
            "movie_ids": layout.map_tag(str(movies["map_md5"])),
            "model_name": settings.hf_model_name,
            "top_n": settings.similar_movies_top_n,
            "block_rows": rows,
        }
        return [SimilarMoviesBlock(**common, index=i) for i in range(-(-int(movies["movies"]) // rows))]

    def finish(self, chunks: list[luigi.Task]) -> None:
        settings = self.settings
        ids, _ = self.movie_vectors()
        lists: list[list[str]] = []
        for block in chunks:
            key = block.output().key
            rows = read_checked(self.bucket, key, similar.unpack_block, "the next run computes it again")
            lists.extend(similar.neighbour_lists(rows, ids))
        if len(lists) != len(ids):
            raise DatasetError(f"the blocks hold {len(lists)} movies, the movie id map {len(ids)}")
        keys = [f"{SIMILAR_REDIS_PREFIX}{movie}" for movie in ids.tolist()]
        policy = published.publish(
            settings.redis_url,
            keys,
            lists,
            settings.similar_movies_ttl_seconds,
            what="similar movies",
            task=self.task_family,
            on_progress=lambda done: self.progress(done, len(keys), f"published {done:,} of {len(keys):,} lists"),
        )
        record = published.write_record(self.bucket, layout.similar_record_key(settings), keys, lists)
        self.counts = {
            "movies": len(keys),
            "neighbours": len(lists[0]) if lists else 0,
            "movies_recommended": len({movie for neighbours in lists for movie in neighbours}),
            "redis": policy,
        }
        blocks = [block.output().key for block in chunks]
        self.write_marker({**self.counts, **record, "blocks": blocks})
