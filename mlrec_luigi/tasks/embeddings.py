"""Stage 2: embed every movie's title + genres, one checkpointed ``.npy`` chunk per task.

    luigi --module mlrec_luigi Embeddings --local-scheduler

A killed run resumes at the first missing chunk: each chunk is written atomically and
its key names the source zip's md5, the model and the chunk size, so another zip or
another model means new chunks, never stale ones. ``--workers N`` embeds N chunks at once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import luigi

from mlrec_luigi import embedding, layout
from mlrec_luigi.tasks.base import ChunkedStage, ChunkTask, Shape, SourceChanged
from mlrec_luigi.tasks.download import DownloadMovieLens
from mlrec_luigi.tasks.parameters import CheckedIntParameter, Md5Parameter, model_parameter
from mlrec_luigi.tasks.targets import BucketTarget


class EmbeddingChunk(ChunkTask):
    """Embed movies ``[index * chunk_size, (index + 1) * chunk_size)`` of movies.csv, ordered by text length."""

    source_md5 = Md5Parameter()
    model_name = luigi.Parameter()
    chunk_size = CheckedIntParameter(minimum=1)
    index = CheckedIntParameter(minimum=0)

    def requires(self) -> DownloadMovieLens:
        return DownloadMovieLens()

    def output(self) -> BucketTarget:
        key = layout.embedding_chunk_key(self.settings, self.model_name, self.source_md5, self.chunk_size, self.index)
        return BucketTarget(self.bucket, key)

    def run(self) -> None:
        if self.current_source_md5() != self.source_md5:
            raise SourceChanged(f"{self.bucket.uri(self.zip_key)} changed since chunk {self.index} was scheduled")
        movies = self.read_movies()
        start, stop = self.index * self.chunk_size, min((self.index + 1) * self.chunk_size, len(movies))
        rows = movies.iloc[embedding.length_order(movies["text"].tolist())[start:stop]]
        self.set_status_message(f"loading model {self.model_name}")
        settings = self.settings
        model = embedding.load_model(
            self.model_name, settings.hf_device, settings.embedding_precision, settings.hf_hub_offline
        )
        texts = rows["text"].tolist()
        first, last = rows["title"].iloc[0], rows["title"].iloc[-1]
        vectors = embedding.encode(
            model,
            texts,
            self.settings.embedding_batch_size,
            lambda done: self.progress(
                done, len(texts), f"embedded {done:,} of {len(texts):,} movies ({first} .. {last})"
            ),
        )
        bad = embedding.not_unit(vectors)
        if bad.any():  # never published: a model that yields NaN or zero vectors is refused
            named = [f"{m} {t!r}" for m, t in zip(rows["movieId"][bad][:5], rows["title"][bad][:5], strict=True)]
            raise embedding.ModelError(
                f"{self.model_name} yields {int(bad.sum())} embedding(s) that are not finite unit-length vectors "
                f"(NaN, infinite or zero), e.g. movieId {', '.join(named)}: refused, nothing written"
            )
        self.bucket.create(self.output().key, embedding.pack_chunk(rows["movieId"].tolist(), vectors))
        self.counts = {"movies": len(rows), "first_row": start, "dimension": int(vectors.shape[1])}


class Embeddings(ChunkedStage):
    """All chunks of the current zip and model, recorded in a manifest written last."""

    REPORT_NAME = "embeddings"
    BRIEF_OMITS = ("chunks",)

    SHAPE: ClassVar[Shape] = {"chunks": list}

    model = model_parameter()

    def requires(self) -> list[luigi.Task]:
        return [DownloadMovieLens(), *self.planned_chunks]

    def marker_key(self) -> str:
        return layout.embeddings_manifest_key(self.settings, self.settings.hf_model_name)

    def expect(self) -> dict[str, Any]:
        return {
            "source_md5": self.current_source_md5(),
            "embedding_model": self.settings.hf_model_name,
            "chunk_size": self.settings.embedding_chunk_size,
        }

    def chunks(self) -> list[EmbeddingChunk]:
        """One task per chunk of the zip in the bucket (none while it is missing)."""
        md5 = self.current_source_md5()
        if md5 is None:
            return []
        chunk_size = self.settings.embedding_chunk_size
        count = len(embedding.chunk_bounds(len(self.read_movies()), chunk_size))
        model = self.settings.hf_model_name
        return [EmbeddingChunk(source_md5=md5, model_name=model, chunk_size=chunk_size, index=i) for i in range(count)]

    def finish(self, chunks: list[luigi.Task]) -> None:
        movie_count = len(self.read_movies())
        self.counts = {"movies": movie_count, "chunks": len(chunks)}
        self.write_marker({"movies": movie_count, "chunks": [chunk.output().key for chunk in chunks]})
