"""Stage 4a: ratings.csv → validated ``.npy`` parts in the bucket (what every reader of the ratings reads).

    luigi --module mlrec_luigi PrepareRatings --local-scheduler

ratings.csv is read once and every row validated; the ratings of known movies are written as parts of
``INTERACTIONS_CHUNK_ROWS`` ratings. A user rates a movie once: where ratings.csv holds several ratings
of one movie by one user, the newest is kept (the later row on a tie) and the others are counted as
``duplicates`` and named by row. Bad rows and ratings of unknown movies are counted, and past their
limits (``INTERACTIONS_MAX_REJECTED_ROWS``, ``INTERACTIONS_MAX_UNKNOWN_FRACTION``) the task fails before
anything is published. ``LoadInteractions`` loads the parts into MongoDB; the user lists and the
quality stage read them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlrec_luigi import layout, movielens
from mlrec_luigi.movielens import pack_part
from mlrec_luigi.tasks.base import Shape, Stage
from mlrec_luigi.tasks.download import DownloadMovieLens

ESTIMATED_BYTES_PER_RATING = 25  # "123,4567,4.5,1234567890\n": for the progress bar only
COUNTED = ("rows", "rejected", "duplicates", "skipped_unknown_movie", "records")


class PrepareRatings(Stage):
    """ratings.csv → validated ``.npy`` parts of the ratings of known movies, plus a manifest."""

    REPORT_NAME = "prepare_ratings"
    BRIEF_OMITS = ("parts", "rejected_examples", "duplicate_examples")

    SHAPE: ClassVar[Shape] = {"parts": list, "source_md5": str, "chunk_rows": int}

    def requires(self) -> DownloadMovieLens:
        return DownloadMovieLens()

    def marker_key(self) -> str:
        md5 = self.current_source_md5() or "missing"
        return layout.ratings_manifest_key(self.settings, md5, self.settings.interactions_chunk_rows)

    def expect(self) -> dict[str, Any]:
        return {"source_md5": self.current_source_md5(), "chunk_rows": self.settings.interactions_chunk_rows}

    def run(self) -> None:
        settings = self.settings
        md5 = self.current_source_md5() or "missing"
        ratings_bytes = movielens.member_size(self.local_zip(), "ratings.csv")
        written: list[dict[str, Any]] = []

        def write_part(index: int, records: np.ndarray) -> None:
            key = layout.ratings_part_key(settings, md5, settings.interactions_chunk_rows, index)
            self.bucket.write_bytes(key, pack_part(records))
            del written[index:]
            written.append({"key": key, "records": len(records)})

        def on_read(rows: int) -> None:
            done = min(rows * ESTIMATED_BYTES_PER_RATING, ratings_bytes)
            self.progress(done, ratings_bytes, f"{rows:,} ratings read, {len(written)} part(s) written")

        counts = movielens.prepare_ratings(
            self.local_zip(),
            self.read_movies()["movieId"].to_numpy(),
            movielens.RatingsLimits(
                part_rows=settings.interactions_chunk_rows,
                max_member_bytes=settings.max_member_bytes,
                max_rejected_rows=settings.interactions_max_rejected_rows,
                max_unknown_fraction=settings.interactions_max_unknown_fraction,
            ),
            write_part,
            on_read,
        )
        self.counts = {name: getattr(counts, name) for name in COUNTED} | {"parts": len(written)}
        self.write_marker(
            {
                **self.counts,
                "rejected_examples": counts.rejected_examples,
                "duplicate_examples": counts.duplicate_examples,
                "parts": written,
            }
        )
