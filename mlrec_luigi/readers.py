"""The checked readers of what the stages wrote to the bucket: one per kind of object, each the only
way that object is read back (stages, the report and benchmarks alike).

Each declares how its object is checked (a decoder raising a ``Damaged`` error); ``damage.read_checked``
names a damaged object in one line, removes it with what vouched for it, and the producer recomputes it.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlrec_luigi import embedding, layout, movielens
from mlrec_luigi.damage import DamagedObject, read_checked, read_json_checked
from mlrec_luigi.documents import MovieIds
from mlrec_luigi.movielens import DatasetError, unpack_part
from mlrec_luigi.settings import Settings
from mlrec_luigi.storage import Bucket


@functools.lru_cache(maxsize=4)
def _zip_problem(path: Path, md5: str | None) -> str | None:
    """Why the zip at ``path`` cannot be read (its central directory), or None; once per content."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return str(error) or type(error).__name__
    return None


def local_zip(bucket: Bucket, zip_key: str, cache_dir: Path, md5: str | None) -> Path:
    """A local copy of the zip in the bucket, checked.

    Raises:
        DamagedObject: not a readable zip: removed from the bucket (and the cache), so the next run downloads it.
    """
    path = bucket.local_copy(zip_key, cache_dir)
    problem = _zip_problem(path, md5)
    if problem:
        bucket.delete(zip_key)
        if path.exists() and bucket.uri(zip_key) != path.as_uri():
            path.unlink()
        raise DamagedObject(
            f"{bucket.uri(zip_key)} is not a readable zip ({problem}): removed it; the next run downloads it again"
        )
    return path


@functools.lru_cache(maxsize=2)
def movies_in(zip_path: Path, md5: str | None, max_member_bytes: int) -> pd.DataFrame:
    """The movies of the zip, read once per content (a local bucket replaces a zip in place, under one path)."""
    return movielens.read_movies(zip_path, max_member_bytes)


def damaged_map_key(map_key: str) -> str:
    """Left where a damaged map was removed: the next LoadMovies rebuilds the map from ``movies`` only."""
    return f"{map_key}.damaged"


def _is_movie_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and k.isdigit() and isinstance(v, str) and len(v) == 24 for k, v in value.items()
    )


def read_movie_map(bucket: Bucket, settings: Settings) -> dict[int, str]:
    """movieId → ``movies._id`` from ``movie_id_map.json``, checked.

    Raises:
        DamagedObject: the map is truncated, not JSON or of the wrong shape: it is removed, with the
            marker of ``LoadMovies``, so the next run rebuilds it from ``movies`` (ids unchanged).
    """
    map_key = layout.movie_id_map_key(settings)
    try:
        value = read_json_checked(bucket, map_key, _is_movie_map, "the next run rebuilds it from `movies`")
    except DamagedObject:
        bucket.write_bytes(damaged_map_key(map_key), b"")
        bucket.delete(layout.marker_key(settings, "load_movies"))
        raise
    return {int(movie): hex_id for movie, hex_id in value.items()}


@functools.lru_cache(maxsize=2)
def movie_ids_of(bucket: Bucket, settings: Settings, map_md5: str | None) -> MovieIds:
    """The map as the interaction documents use it; keyed by content (LoadMovies rewrites it in place)."""
    return MovieIds(read_movie_map(bucket, settings))


def read_ratings_part(bucket: Bucket, settings: Settings, source_md5: str, chunk_rows: int, index: int) -> np.ndarray:
    """The ratings of one part.

    Raises:
        DatasetError: the part is missing: its manifest is removed, so the next run prepares the ratings again.
        DamagedObject: the part is damaged: named, removed with its manifest (the same next step).
    """
    key = layout.ratings_part_key(settings, source_md5, chunk_rows, index)
    manifest = layout.ratings_manifest_key(settings, source_md5, chunk_rows)
    try:
        return read_checked(bucket, key, unpack_part, "the next run prepares the ratings again", (manifest,))
    except FileNotFoundError:
        bucket.delete(manifest)
        raise DatasetError(
            f"{bucket.uri(key)} is missing: removed its manifest; the next run prepares the ratings again"
        ) from None


def read_vectors(bucket: Bucket, manifest_key: str, chunk_keys: Sequence[str]) -> dict[int, np.ndarray]:
    """movieId → embedding from the chunks that ``manifest_key`` lists.

    Raises:
        DatasetError: a chunk is missing: the manifest that vouched for it is removed.
        DamagedObject: a chunk is damaged (truncated, not a chunk, vectors not finite unit length):
            named in one line; it and the manifest are removed, so the next run embeds it again and
            everything built from it follows.
    """
    vectors: dict[int, np.ndarray] = {}
    for key in chunk_keys:
        try:
            vectors.update(
                read_checked(bucket, key, embedding.checked_chunk, "the next run computes it again", (manifest_key,))
            )
        except FileNotFoundError:
            bucket.delete(manifest_key)
            raise DatasetError(
                f"an embedding chunk is missing ({bucket.uri(key)}): removed its manifest; the next run embeds it again"
            ) from None
    return vectors


@functools.lru_cache(maxsize=2)
def movie_vectors(
    bucket: Bucket, settings: Settings, map_md5: str, manifest_key: str, chunk_keys: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(``movies._id`` strings sorted, their unit vectors as one float32 matrix in that order): the catalogue the
    similar movies and the user lists rank, read once per map and manifest."""
    map_key = layout.movie_id_map_key(settings)
    id_map = {str(movie): hex_id for movie, hex_id in read_movie_map(bucket, settings).items()}
    vectors = read_vectors(bucket, manifest_key, chunk_keys)
    ids = np.array(sorted(id_map.values()))
    by_id = {hex_id: int(movie) for movie, hex_id in id_map.items()}
    missing = [by_id[i] for i in ids if by_id[i] not in vectors]
    if missing:
        raise DatasetError(f"the embedding chunks lack {len(missing)} movie(s) of {bucket.uri(map_key)}: {missing[:5]}")
    matrix = np.stack([vectors[by_id[i]] for i in ids]).astype(np.float32, copy=False)
    return ids, np.ascontiguousarray(matrix)
