"""Stage 4: stream ratings.csv into MongoDB ``interactions``, chunk by chunk.

    luigi --module mlrec_luigi LoadInteractions --local-scheduler

Every MovieLens rating gets a deterministic ``_id`` (see ``documents.py``), so a rerun or a
resumed crash inserts only what is missing and never duplicates; the API's own
interactions are never read, changed or deleted. Bad rows and ratings of unknown movies
are counted; past their limits (``INTERACTIONS_MAX_REJECTED_ROWS``,
``INTERACTIONS_MAX_UNKNOWN_FRACTION``) the task fails before the marker is written.
"""

from __future__ import annotations

from mlrec_luigi import mongo, movielens
from mlrec_luigi.documents import interaction_documents
from mlrec_luigi.movielens import DatasetError
from mlrec_luigi.storage import MarkerTarget
from mlrec_luigi.tasks.base import MongoStage
from mlrec_luigi.tasks.movies import LoadMovies

ESTIMATED_BYTES_PER_RATING = 25  # "123,4567,4.5,1234567890\n": for the progress bar only


class LoadInteractions(MongoStage):
    """ratings.csv → MongoDB ``interactions`` (type ``rate``), idempotently."""

    def requires(self) -> LoadMovies:
        return LoadMovies()

    def output(self) -> MarkerTarget:
        return MarkerTarget(
            self.bucket,
            self.derived_key("markers", "load_interactions.json"),
            expect={"source_md5": self.current_source_md5()},
            still_valid=self.collection_holds("interactions", "stored"),
        )

    def run(self) -> None:
        settings = self.settings
        id_map = {int(k): v for k, v in self.bucket.read_json(LoadMovies().map_key()).items()}
        collection = self.db["interactions"]
        mongo.ensure_indexes(collection, mongo.INTERACTION_INDEXES)
        counts = {"rows": 0, "inserted": 0, "already_present": 0, "skipped_unknown_movie": 0, "rejected": 0}
        examples: list[str] = []
        ratings_bytes = movielens.member_size(self.local_zip(), "ratings.csv")
        for chunk in movielens.iter_ratings(
            self.local_zip(), settings.interactions_chunk_rows, settings.max_member_bytes
        ):
            counts["rejected"] += chunk.rejected
            examples.extend(chunk.rejected_examples)
            if counts["rejected"] > settings.interactions_max_rejected_rows:
                raise DatasetError(
                    f"{counts['rejected']} bad row(s) in ratings.csv, more than INTERACTIONS_MAX_REJECTED_ROWS="
                    f"{settings.interactions_max_rejected_rows}: " + "; ".join(examples[: movielens.MAX_REPORTED_ROWS])
                )
            documents, unknown = interaction_documents(chunk.frame, id_map)
            inserted, present = mongo.insert_new(collection, documents)
            counts["rows"] += len(chunk.frame) + chunk.rejected
            counts["inserted"] += inserted
            counts["already_present"] += present
            counts["skipped_unknown_movie"] += unknown
            self.progress(
                min(counts["rows"] * ESTIMATED_BYTES_PER_RATING, ratings_bytes),
                ratings_bytes,
                f"{counts['rows']:,} ratings read, {counts['inserted']:,} inserted",
            )
        unknown_fraction = counts["skipped_unknown_movie"] / max(counts["rows"], 1)
        if unknown_fraction > settings.interactions_max_unknown_fraction:
            raise DatasetError(
                f"{counts['skipped_unknown_movie']} of {counts['rows']} ratings in ratings.csv name a movieId missing "
                f"from movies.csv ({unknown_fraction:.2%}), more than INTERACTIONS_MAX_UNKNOWN_FRACTION="
                f"{settings.interactions_max_unknown_fraction}"
            )
        counts["stored"] = counts["inserted"] + counts["already_present"]
        self.counts = counts
        self.output().write({**counts, "rejected_examples": examples})
