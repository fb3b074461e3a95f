"""Stage 4: ratings.csv → MongoDB ``interactions``, in chunks that load in parallel.

    luigi --module mlrec_luigi LoadInteractions --local-scheduler --workers 2

``PrepareRatings`` reads ratings.csv once, validates every row and writes the ratings of
known movies as ``.npy`` parts of ``INTERACTIONS_CHUNK_ROWS`` ratings. A user rates a movie
once: when ratings.csv holds several ratings of one movie by one user, the newest is kept
(the later row on a tie) and the others are counted as ``duplicates`` and named by row. Bad
rows and ratings of unknown movies are counted, and past their limits
(``INTERACTIONS_MAX_REJECTED_ROWS``, ``INTERACTIONS_MAX_UNKNOWN_FRACTION``) the task fails
before anything is published. Each ``InteractionsChunk`` then loads one part: a crash
resumes at the chunks without a marker, and ``--workers N`` (or several machines sharing
one ``luigid``) load N chunks at once.

Every MovieLens rating gets a deterministic ``_id`` (see ``documents.py``) and records the
part it came from (``movielens_part``): a rerun inserts only what is missing, a chunk's
marker counts only while its part's documents are all stored, and a new release replaces
the old one's ratings exactly (corrected values updated, withdrawn ratings removed). The
API's own interactions are never read, changed or deleted.
"""

from __future__ import annotations

from typing import Any, ClassVar

import luigi

from mlrec_luigi import layout, mongo
from mlrec_luigi.documents import part_tag
from mlrec_luigi.errors import CheckFailed, Expected
from mlrec_luigi.movielens import DatasetError
from mlrec_luigi.readers import movie_ids_of, read_ratings_part
from mlrec_luigi.tasks.base import ChunkedStage, MongoStage, Shape, SourceChanged, Stage
from mlrec_luigi.tasks.movies import LoadMovies
from mlrec_luigi.tasks.parameters import CheckedIntParameter, Md5Parameter
from mlrec_luigi.tasks.ratings import COUNTED, PrepareRatings

INSERT_BATCH = 50_000  # documents encoded and sent at a time: bounds the memory of a chunk


class InteractionsLost(Expected, RuntimeError):
    """The collection holds fewer MovieLens interactions than the chunks loaded."""


class InteractionsChunk(MongoStage):
    """Load part ``index`` of the prepared ratings into ``interactions``, skipping what is stored."""

    source_md5 = Md5Parameter()
    chunk_rows = CheckedIntParameter(minimum=1)
    index = CheckedIntParameter(minimum=0)

    SHAPE: ClassVar[Shape] = {"stored": int}

    def requires(self) -> LoadMovies:
        # Not PrepareRatings: a chunk is planned only once its manifest lists the part, and a
        # damaged part removes that manifest, which must not fail the sibling chunks running.
        return LoadMovies()

    def marker_key(self) -> str:
        return layout.interactions_chunk_marker_key(self.settings, self.source_md5, self.chunk_rows, self.index)

    @property
    def part(self) -> str:
        return part_tag(self.source_md5, self.chunk_rows, self.index)

    def holds(self, marker: dict[str, Any]) -> bool:
        return mongo.count_parts(self.db["interactions"], [self.part]) >= int(marker.get("stored", 0))

    def run(self) -> None:
        if self.current_source_md5() != self.source_md5:
            raise SourceChanged(f"{self.bucket.uri(self.zip_key)} changed since chunk {self.index} was scheduled")
        key = layout.ratings_part_key(self.settings, self.source_md5, self.chunk_rows, self.index)
        records = read_ratings_part(self.bucket, self.settings, self.source_md5, self.chunk_rows, self.index)
        map_key = layout.movie_id_map_key(self.settings)
        movie_ids = movie_ids_of(self.bucket, self.settings, self.bucket.md5_hex(map_key))
        collection = self.db["interactions"]
        mongo.ensure_indexes(collection, mongo.INTERACTION_INDEXES)  # a no-op round trip once they exist
        self.progress(0, len(records), f"part {self.index}: loading {len(records):,} ratings")
        loaded = mongo.insert_interactions(
            collection,
            records,
            movie_ids,
            self.part,
            INSERT_BATCH,
            lambda done: self.progress(done, len(records), f"part {self.index}: {done:,} of {len(records):,} stored"),
        )
        if loaded.unknown_movie:
            raise DatasetError(
                f"{self.bucket.uri(map_key)} lacks {loaded.unknown_movie} movie(s) rated in {self.bucket.uri(key)}: "
                "rerun LoadMovies"
            )
        self.counts = {
            "records": len(records),
            "inserted": loaded.inserted,
            "updated": loaded.updated,
            "retagged": loaded.retagged,
            "already_present": loaded.already_present,
            "stored": len(records),
        }
        self.write_marker(self.counts)


class LoadInteractions(ChunkedStage, MongoStage):
    """ratings.csv → MongoDB ``interactions`` (type ``rate``): every chunk loaded, then one marker."""

    REPORT_NAME = "load_interactions"
    BRIEF_OMITS = ("parts", "chunks", "rejected_examples", "duplicate_examples")

    confirm_removal = luigi.BoolParameter(
        default=False,
        significant=False,
        description="this run may delete more than RELEASE_MAX_REMOVED_FRACTION of the stored MovieLens ratings",
    )

    STAMPED = ("parts", "stored")
    SHAPE: ClassVar[Shape] = {"parts": list, "stored": int}

    def requires(self) -> list[luigi.Task]:
        return [*super().requires(), *self.planned_chunks]

    def upstream(self) -> list[Stage]:
        return [LoadMovies(), PrepareRatings()]

    def marker_key(self) -> str:
        return layout.marker_key(self.settings, "load_interactions")

    def expect(self) -> dict[str, Any]:
        return {"source_md5": self.current_source_md5(), "chunk_rows": self.settings.interactions_chunk_rows}

    def holds(self, marker: dict[str, Any]) -> bool:
        parts = marker.get("parts") or []
        return not parts or mongo.count_parts(self.db["interactions"], parts) >= int(marker.get("stored", 0))

    def _removal_check(self, collection: Any, parts: list[str]) -> dict[str, Any]:
        """Blocks a release that would delete more than RELEASE_MAX_REMOVED_FRACTION of the stored ratings.

        Raises:
            CheckFailed: nothing deleted; the line gives the counts and how to confirm it for one run.
        """
        removed, stored = mongo.count_other_parts(collection, parts)
        limit = self.settings.release_max_removed_fraction
        fraction = removed / stored if stored else 0.0
        check = {
            "name": "a release removes at most RELEASE_MAX_REMOVED_FRACTION of the stored MovieLens ratings",
            "removed": removed,
            "stored": stored,
            "fraction": round(fraction, 4),
            "limit": limit,
            "confirmed": bool(self.confirm_removal),
            "passed": fraction <= limit or bool(self.confirm_removal),
        }
        if not check["passed"]:
            raise CheckFailed(
                f"this release would delete {removed:,} of the {stored:,} stored MovieLens ratings ({fraction:.1%}), "
                f"more than RELEASE_MAX_REMOVED_FRACTION={limit:g}: nothing was deleted. Is MOVIELENS_URL the "
                "dataset you mean? To take it anyway, run once with --LoadInteractions-confirm-removal"
            )
        return check

    def chunks(self) -> list[InteractionsChunk]:
        """One task per part of the prepared ratings (none until PrepareRatings has run)."""
        manifest = PrepareRatings().output().valid()
        if manifest is None:
            return []
        md5, chunk_rows = manifest["source_md5"], manifest["chunk_rows"]
        return [
            InteractionsChunk(source_md5=md5, chunk_rows=chunk_rows, index=i) for i in range(len(manifest["parts"]))
        ]

    def finish(self, chunks: list[luigi.Task]) -> None:
        manifest = PrepareRatings().output().read() or {}
        markers: list[dict[str, Any]] = [chunk.output().read() or {} for chunk in chunks]
        counts = {name: int(manifest.get(name, 0)) for name in COUNTED}
        for name in ("inserted", "updated", "retagged", "already_present", "stored"):
            counts[name] = sum(int(marker.get(name, 0)) for marker in markers)
        parts = [chunk.part for chunk in chunks if isinstance(chunk, InteractionsChunk)]
        collection = self.db["interactions"]
        check = self._removal_check(collection, parts)
        counts["removed_other_releases"] = mongo.remove_other_parts(collection, parts) if check["removed"] else 0
        held = mongo.count_parts(collection, parts) if parts else 0
        if held < counts["stored"]:
            raise InteractionsLost(
                f"interactions holds {held} MovieLens ratings of this release but its {len(chunks)} chunk(s) stored "
                f"{counts['stored']}: documents were deleted while it loaded; the next run loads them again"
            )
        self.counts = {**counts, "chunks": len(chunks)}
        self.write_marker(
            {
                **self.counts,
                "checks": [check],
                "parts": parts,
                "rejected_examples": manifest.get("rejected_examples", []),
                "duplicate_examples": manifest.get("duplicate_examples", []),
            }
        )
