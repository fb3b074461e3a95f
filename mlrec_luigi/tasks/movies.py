"""Stage 3: upsert the movies with their embeddings into MongoDB, write movie_id_map.json.

    luigi --module mlrec_luigi LoadMovies --local-scheduler

Movies are upserted by ``movieId_ml``: a movie's ``_id`` is made once and kept forever,
even across a deletion (a movie loaded again gets back the ``_id`` the map recorded).
The map and then the marker are written last, so a crash leaves the stage incomplete.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlrec_luigi import layout, mongo
from mlrec_luigi.documents import movie_document
from mlrec_luigi.movielens import DatasetError
from mlrec_luigi.readers import damaged_map_key, read_movie_map, read_vectors
from mlrec_luigi.tasks.base import MongoStage, Shape, Stage
from mlrec_luigi.tasks.embeddings import Embeddings
from mlrec_luigi.tasks.parameters import model_parameter
from mlrec_luigi.tasks.quality import MeasureQuality


class LoadMovies(MongoStage):
    """Movies + embeddings → MongoDB ``movies``; ``movie_id_map.json`` → the bucket."""

    REPORT_NAME = "load_movies"

    model = model_parameter()

    STAMPED = ("map_md5",)
    SHAPE: ClassVar[Shape] = {"map_key": str, "map_md5": str, "movies": int, "source_md5": str}

    def upstream(self) -> list[Stage]:
        return [Embeddings()]

    def requires(self) -> list[Stage]:
        # The quality gate: new embeddings are measured (and a worse model held) before they reach MongoDB.
        # Required, not upstream: measuring again (a quality setting) reruns no stage below it.
        return [*self.upstream(), MeasureQuality()]

    def marker_key(self) -> str:
        return layout.marker_key(self.settings, "load_movies")

    def expect(self) -> dict[str, Any]:
        return {"source_md5": self.current_source_md5(), "embedding_model": self.settings.hf_model_name}

    def holds(self, marker: dict[str, Any]) -> bool:
        # The map is part of what the stage publishes: damaged or replaced, the stage runs again.
        if self.bucket.md5_hex(marker["map_key"]) != marker["map_md5"]:
            return False
        return mongo.count_movies(self.db["movies"]) >= int(marker.get("movies", 0))

    def run(self) -> None:
        movies = self.read_movies()
        vectors = self._vectors(self.input()[0].read() or {})
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
        recorded = self._recorded_ids(map_key, collection, movies["movieId"].tolist())
        self.progress(0, len(movies) + 1, f"upserting {len(movies):,} movies")
        upserted = mongo.upsert_movies(
            collection,
            documents,
            recorded,
            lambda done, total: self.progress(done, total + 1, f"upserted {done:,} of {total:,} new or changed movies"),
        )
        self.progress(len(movies), len(movies) + 1, "writing the movie id map")
        stored = mongo.movie_id_map(collection)
        id_map = {str(m): stored[m] for m in movies["movieId"].tolist()}
        self.bucket.write_json(map_key, id_map)
        self.bucket.delete(damaged_map_key(map_key))
        self.counts = {
            "movies": len(movies),
            "inserted": upserted.inserted,
            "updated": upserted.updated,
            "unchanged": upserted.unchanged,
            "with_year": int(movies["year"].notna().sum()),
            "with_imdbId": int(movies["imdbId"].notna().sum()),
        }
        norms = np.linalg.norm(np.stack([vectors[m] for m in movies["movieId"].tolist()]), axis=1)
        check = {
            "name": "embeddings finite and unit length",
            "movies": len(norms),
            "max_norm_error": round(float(np.abs(norms - 1).max(initial=0.0)), 6),
            "passed": True,  # read_vectors refused any other, naming the movies, before anything was written
        }
        marker = {**self.counts, "map": self.bucket.uri(map_key), "map_key": map_key, "checks": [check]}
        self.write_marker({**marker, "map_md5": self.bucket.md5_hex(map_key)})

    def _recorded_ids(self, map_key: str, collection: Any, movie_ids: list[int]) -> dict[int, str]:
        """The ``_id`` each movie was given: from the map, or rebuilt from ``movies`` after it was damaged.

        Raises:
            DatasetError: the map was damaged and ``movies`` lacks some movies: their ``_id`` is lost,
                and a movie's ``_id`` never changes, so they are named instead of given new ones.
        """
        if self.bucket.exists(map_key):
            return read_movie_map(self.bucket, self.settings)
        if not self.bucket.exists(damaged_map_key(map_key)):
            return {}  # the first load (or one killed before the map was written): ids come from movies
        stored = mongo.movie_id_map(collection)
        lost = [movie for movie in movie_ids if movie not in stored]
        if stored and lost:
            raise DatasetError(
                f"{self.bucket.uri(map_key)} was damaged and `movies` lacks {len(lost)} movie(s) of movies.csv, "
                f"e.g. movieId {lost[:5]}: their _id cannot be recovered; restore the map from a backup, or "
                f"delete {self.bucket.uri(damaged_map_key(map_key))} to give them new ones"
            )
        return stored

    def _vectors(self, manifest: dict[str, Any]) -> dict[int, Any]:
        return read_vectors(self.bucket, self.input()[0].key, manifest.get("chunks", []))
