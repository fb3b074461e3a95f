"""Stage 4: ratings.csv → MongoDB ``interactions``, in chunks that load in parallel.

    luigi --module mlrec_luigi LoadInteractions --local-scheduler --workers 2

``PrepareRatings`` reads ratings.csv once, validates every row and writes the ratings of
known movies as ``.npy`` parts of ``INTERACTIONS_CHUNK_ROWS`` ratings; bad rows and
ratings of unknown movies are counted, and past their limits
(``INTERACTIONS_MAX_REJECTED_ROWS``, ``INTERACTIONS_MAX_UNKNOWN_FRACTION``) the task fails
before anything is published. Each ``InteractionsChunk`` then loads one part: a crash
resumes at the chunks without a marker, and ``--workers N`` (or several machines sharing
one ``luigid``) load N chunks at once.

Every MovieLens rating gets a deterministic ``_id`` (see ``documents.py``), so a rerun or a
resumed crash inserts only what is missing and never duplicates; the API's own
interactions are never read, changed or deleted.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import luigi
import numpy as np

from mlrec_luigi import mongo, movielens
from mlrec_luigi.documents import MovieIds
from mlrec_luigi.movielens import RATING_RECORD, DatasetError
from mlrec_luigi.storage import Bucket, MarkerTarget
from mlrec_luigi.tasks.base import ChunkedStage, MongoStage, PipelineTask, SourceChanged
from mlrec_luigi.tasks.download import DownloadMovieLens
from mlrec_luigi.tasks.movies import LoadMovies

INSERT_BATCH = 50_000  # documents encoded and sent at a time: bounds the memory of a chunk
ESTIMATED_BYTES_PER_RATING = 25  # "123,4567,4.5,1234567890\n": for the progress bar only
COUNTED = ("rows", "rejected", "skipped_unknown_movie", "records")


class InteractionsLost(RuntimeError):
    """The collection holds fewer MovieLens interactions than the chunks loaded."""


def parts_folder(source_md5: str, chunk_rows: int) -> str:
    """The folder of one zip's parts (and of their chunk markers), for one part size."""
    return f"{source_md5[:12]}-r{chunk_rows}"


def part_name(index: int, suffix: str) -> str:
    """``part-NNNNN.npy`` (the ratings) or ``part-NNNNN.json`` (its chunk marker)."""
    return f"part-{index:05d}.{suffix}"


def pack_part(records: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, records.astype(RATING_RECORD, copy=False), allow_pickle=False)
    return buffer.getvalue()


def unpack_part(data: bytes, label: str) -> np.ndarray:
    records = np.load(io.BytesIO(data), allow_pickle=False)
    if records.dtype != RATING_RECORD or records.ndim != 1:
        raise DatasetError(f"{label} is not a ratings part ({records.dtype}, shape {records.shape})")
    return records


@functools.lru_cache(maxsize=2)
def _movie_ids(bucket: Bucket, key: str, md5: str | None) -> MovieIds:
    # Keyed by content: LoadMovies rewrites the map under the same key.
    return MovieIds({int(m): hex_id for m, hex_id in bucket.read_json(key).items()})


class PrepareRatings(PipelineTask):
    """ratings.csv → validated ``.npy`` parts of the ratings of known movies, plus a manifest."""

    def requires(self) -> DownloadMovieLens:
        return DownloadMovieLens()

    def parts_key(self, name: str, source_md5: str | None = None, chunk_rows: int | None = None) -> str:
        """A key in the parts folder: of the current zip and part size unless both are given."""
        md5 = source_md5 or self.current_source_md5() or "missing"
        rows = chunk_rows or self.settings.interactions_chunk_rows
        return self.derived_key("interactions", parts_folder(md5, rows), name)

    def output(self) -> MarkerTarget:
        return MarkerTarget(
            self.bucket,
            self.parts_key("manifest.json"),
            expect={"source_md5": self.current_source_md5(), "chunk_rows": self.settings.interactions_chunk_rows},
        )

    def run(self) -> None:
        settings = self.settings
        counts = movielens.RatingsCounts()
        parts: list[dict[str, Any]] = []
        ratings_bytes = movielens.member_size(self.local_zip(), "ratings.csv")
        for records in movielens.ratings_parts(
            self.local_zip(),
            self.read_movies()["movieId"].to_numpy(),
            settings.interactions_chunk_rows,
            settings.max_member_bytes,
            settings.interactions_max_rejected_rows,
            counts,
        ):
            key = self.parts_key(part_name(len(parts), "npy"))
            self.bucket.write_bytes(key, pack_part(records))
            parts.append({"key": key, "records": len(records)})
            self.progress(
                min(counts.rows * ESTIMATED_BYTES_PER_RATING, ratings_bytes),
                ratings_bytes,
                f"{counts.rows:,} ratings read, {len(parts)} part(s) written",
            )
        movielens.check_unknown_movies(counts, settings.interactions_max_unknown_fraction)
        self.counts = {name: getattr(counts, name) for name in COUNTED} | {"parts": len(parts)}
        self.output().write({**self.counts, "rejected_examples": counts.rejected_examples, "parts": parts})


class InteractionsChunk(MongoStage):
    """Load part ``index`` of the prepared ratings into ``interactions``, skipping what is stored."""

    source_md5 = luigi.Parameter()
    chunk_rows = luigi.IntParameter()
    index = luigi.IntParameter()

    def requires(self) -> list[luigi.Task]:
        return [PrepareRatings(), LoadMovies()]

    def output(self) -> MarkerTarget:
        folder = parts_folder(self.source_md5, self.chunk_rows)
        return MarkerTarget(
            self.bucket,
            self.derived_key("markers", "interactions", folder, part_name(self.index, "json")),
            still_valid=self.collection_holds("interactions", "stored"),
        )

    def run(self) -> None:
        if self.current_source_md5() != self.source_md5:
            raise SourceChanged(f"{self.bucket.uri(self.zip_key)} changed since chunk {self.index} was scheduled")
        key = PrepareRatings().parts_key(part_name(self.index, "npy"), self.source_md5, self.chunk_rows)
        records = unpack_part(self.bucket.read_bytes(key), self.bucket.uri(key))
        map_key = LoadMovies().map_key()
        movie_ids = _movie_ids(self.bucket, map_key, self.bucket.md5_hex(map_key))
        collection = self.db["interactions"]
        mongo.ensure_indexes(collection, mongo.INTERACTION_INDEXES)
        self.progress(0, len(records), f"chunk {self.index}: loading {len(records):,} ratings")
        loaded = mongo.insert_interactions(
            collection,
            records,
            movie_ids,
            INSERT_BATCH,
            lambda done: self.progress(done, len(records), f"chunk {self.index}: {done:,} of {len(records):,} stored"),
        )
        if loaded.unknown_movie:
            raise DatasetError(
                f"{self.bucket.uri(map_key)} lacks {loaded.unknown_movie} movie(s) rated in {self.bucket.uri(key)}: "
                "rerun LoadMovies"
            )
        counts = {"records": len(records), "inserted": loaded.inserted, "already_present": loaded.already_present}
        self.counts = {**counts, "stored": counts["inserted"] + counts["already_present"]}
        self.output().write(self.counts)


class LoadInteractions(ChunkedStage, MongoStage):
    """ratings.csv → MongoDB ``interactions`` (type ``rate``): every chunk loaded, then one marker."""

    def requires(self) -> list[luigi.Task]:
        return [LoadMovies(), PrepareRatings(), *self.planned_chunks]

    def output(self) -> MarkerTarget:
        return MarkerTarget(
            self.bucket,
            self.derived_key("markers", "load_interactions.json"),
            expect={"source_md5": self.current_source_md5()},
            still_valid=self.collection_holds("interactions", "stored"),
        )

    def chunks(self) -> list[InteractionsChunk]:
        """One task per part of the prepared ratings (none until PrepareRatings has run)."""
        manifest = PrepareRatings().output().read()
        md5 = self.current_source_md5()
        chunk_rows = self.settings.interactions_chunk_rows
        if not manifest or md5 is None or manifest.get("source_md5") != md5 or manifest.get("chunk_rows") != chunk_rows:
            return []
        return [
            InteractionsChunk(source_md5=md5, chunk_rows=chunk_rows, index=i) for i in range(len(manifest["parts"]))
        ]

    def finish(self, chunks: list[luigi.Task]) -> None:
        manifest = PrepareRatings().output().read() or {}
        markers = [chunk.output().read() or {} for chunk in chunks]
        counts = {name: int(manifest.get(name, 0)) for name in COUNTED}
        for name in ("inserted", "already_present", "stored"):
            counts[name] = sum(int(marker.get(name, 0)) for marker in markers)
        held = mongo.estimated_count(self.db["interactions"])
        if held < counts["stored"]:
            for chunk in chunks:
                self.bucket.delete(chunk.output().key)
            raise InteractionsLost(
                f"interactions holds {held} documents but its {len(chunks)} chunk(s) stored {counts['stored']}: "
                "documents were deleted since; their chunk markers are removed, so a rerun loads them again"
            )
        self.counts = {**counts, "chunks": len(chunks)}
        self.output().write({**self.counts, "rejected_examples": manifest.get("rejected_examples", [])})
