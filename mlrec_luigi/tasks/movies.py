"""Stage 3: upsert the movies with their embeddings into MongoDB, write movie_id_map.json.

    luigi --module mlrec_luigi LoadMovies --local-scheduler

Movies are upserted by ``movieId_ml``: a movie's ``_id`` is made once and kept forever,
even across a deletion (a movie loaded again gets back the ``_id`` the map recorded).
The map and then the marker are written last, so a crash leaves the stage incomplete.
"""

from __future__ import annotations

from typing import Any

from mlrec_luigi import layout, mongo
from mlrec_luigi.documents import movie_document
from mlrec_luigi.movielens import DatasetError
from mlrec_luigi.tasks.base import MongoStage, Stage, model_parameter
from mlrec_luigi.tasks.embeddings import Embeddings, read_vectors


class LoadMovies(MongoStage):
    """Movies + embeddings → MongoDB ``movies``; ``movie_id_map.json`` → the bucket."""

    model = model_parameter()

    STAMPED = ("map_md5",)

    def requires(self) -> Embeddings:
        return Embeddings()

    def upstream(self) -> list[Stage]:
        return [Embeddings()]

    def marker_key(self) -> str:
        return layout.marker_key(self.settings, "load_movies")

    def expect(self) -> dict[str, Any]:
        return {"source_md5": self.current_source_md5(), "embedding_model": self.settings.hf_model_name}

    def holds(self, marker: dict[str, Any]) -> bool:
        return mongo.count_movies(self.db["movies"]) >= int(marker.get("movies", 0))

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
        map_key = layout.movie_id_map_key(self.settings)
        recorded = {int(k): v for k, v in self.bucket.read_json(map_key).items()} if self.bucket.exists(map_key) else {}
        self.progress(0, 2, f"upserting {len(movies):,} movies")
        upserted = mongo.upsert_movies(collection, documents, recorded)
        self.progress(1, 2, "writing the movie id map")
        stored = mongo.movie_id_map(collection)
        id_map = {str(m): stored[m] for m in movies["movieId"].tolist()}
        self.bucket.write_json(map_key, id_map)
        self.counts = {
            "movies": len(movies),
            "inserted": upserted.inserted,
            "updated": upserted.updated,
            "unchanged": upserted.unchanged,
            "with_year": int(movies["year"].notna().sum()),
            "with_imdbId": int(movies["imdbId"].notna().sum()),
        }
        marker = {**self.counts, "map": self.bucket.uri(map_key), "map_key": map_key}
        self.write_marker({**marker, "map_md5": self.bucket.md5_hex(map_key)})

    def _vectors(self, manifest: dict[str, Any]) -> dict[int, Any]:
        return read_vectors(self.bucket, self.input().key, manifest.get("chunks", []))
