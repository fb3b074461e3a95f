"""Stage 3: upsert the movies with their embeddings into MongoDB, write movie_id_map.json.

    luigi --module mlrec_luigi LoadMovies --local-scheduler

Movies are upserted by ``movieId_ml``: a movie's ``_id`` is made once and kept forever.
The map and then the marker are written last, so a crash leaves the stage incomplete.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlrec_luigi import embedding, layout, mongo
from mlrec_luigi.documents import movie_document
from mlrec_luigi.movielens import DatasetError
from mlrec_luigi.storage import MarkerTarget
from mlrec_luigi.tasks.base import MongoStage
from mlrec_luigi.tasks.embeddings import Embeddings

UNIT_NORM_TOLERANCE = 1e-3


class LoadMovies(MongoStage):
    """Movies + embeddings → MongoDB ``movies``; ``movie_id_map.json`` → the bucket."""

    def requires(self) -> Embeddings:
        return Embeddings()

    def output(self) -> MarkerTarget:
        return MarkerTarget(
            self.bucket,
            self.derived_key("markers", "load_movies.json"),
            expect={"source_md5": self.current_source_md5(), "embedding_model": self.settings.hf_model_name},
            still_valid=self.collection_holds("movies", "movies"),
        )

    def map_key(self) -> str:
        return layout.movie_id_map_key(self.settings)

    def run(self) -> None:
        movies = self.read_movies()
        vectors = self._vectors(self.input().read() or {})
        missing = [m for m in movies["movieId"].tolist() if m not in vectors]
        if missing:
            raise DatasetError(
                f"embedding chunks lack {len(missing)} movie(s) of movies.csv, e.g. movieId {missing[:5]}"
            )
        documents = (
            movie_document(row, vectors[row["movieId"]], self.settings.hf_model_name)
            for row in movies.to_dict("records")
        )
        collection = self.db["movies"]
        mongo.ensure_indexes(collection, mongo.MOVIE_INDEXES)
        upserted = mongo.upsert_movies(collection, documents)
        stored = mongo.movie_id_map(collection)
        id_map = {str(m): stored[m] for m in movies["movieId"].tolist()}
        self.bucket.write_json(self.map_key(), id_map)
        self.counts = {
            "movies": len(movies),
            "inserted": upserted.inserted,
            "updated": upserted.updated,
            "unchanged": upserted.unchanged,
            "with_year": int(movies["year"].notna().sum()),
            "with_imdbId": int(movies["imdbId"].notna().sum()),
        }
        self.output().write({**self.counts, "map": self.bucket.uri(self.map_key())})

    def _vectors(self, manifest: dict[str, Any]) -> dict[int, np.ndarray]:
        vectors: dict[int, np.ndarray] = {}
        for key in manifest.get("chunks", []):
            movie_ids, rows = embedding.unpack_chunk(self.bucket.read_bytes(key))
            norms = np.linalg.norm(rows, axis=1)
            if rows.size and np.abs(norms - 1).max() > UNIT_NORM_TOLERANCE:
                raise DatasetError(f"{self.bucket.uri(key)} holds embeddings that are not unit length")
            vectors.update(zip(movie_ids.tolist(), rows, strict=True))
        return vectors
