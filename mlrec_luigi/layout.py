"""Where every output lives in the bucket: the one place that names the keys.

``<p>`` is ``GCS_DATASET_PATH``, ``<ds>`` the zip's name without .zip, ``<z>`` the first 12
hex digits of the zip's md5::

    <p>/<zip>                                                  the MovieLens zip (DownloadMovieLens)
    <p>/<ds>/embeddings/<model>/<z>-c<size>/chunk-NNNNN.npy    (EmbeddingChunk)
    <p>/<ds>/embeddings/<model>/manifest.json                  (Embeddings)
    <p>/<ds>/movie_id_map.json                                 (LoadMovies)
    <p>/<ds>/markers/load_movies.json                          (LoadMovies)
    <p>/<ds>/interactions/<z>-r<rows>/part-NNNNN.npy, manifest.json     (PrepareRatings)
    <p>/<ds>/markers/interactions/<z>-r<rows>/part-NNNNN.json          (InteractionsChunk)
    <p>/<ds>/markers/load_interactions.json                    (LoadInteractions)
    <p>/<ds>/markers/popular/<date>.json, popular/live.json    (UpdatePopular)
    <p>/<ds>/popular/published/<date>.npy                      the key published and its value's sha1
    <p>/<ds>/similar/<model>/<z>-<ids>-k<n>-b<rows>/block-NNNNN.npy  (SimilarMoviesBlock; <ids>: the id map's md5)
    <p>/<ds>/similar/published.npy                             the keys published and their values' sha1
    <p>/<ds>/markers/similar_movies.json                       (UpdateSimilarMovies)
    <p>/<ds>/user_recs/shuffle/<z>-r<rows>-P<P>/part-NNNNN/p-NNNNN.npy, done.json   (ShuffleRatingsPart)
    <p>/<ds>/user_recs/api/<date>/<db>/P<P>/p-NNNNN.npy, read.json  the API's documents (ReadApiInteractions)
    <p>/<ds>/user_recs/api/latest-<db>-P<P>.json              the newest read: where the next one starts
    <p>/<ds>/user_recs/collaborative/<date>/<z>-P<P>-<params>/users.npy, movies.npy  (TrainCollaborative)
    <p>/<ds>/user_recs/<model>/<z>-<ids>-k<n>-P<P>/<date>/<method>/partition-NNNNN.npy  (UserRecsPartition)
    <p>/<ds>/user_recs/<model>/<z>-<ids>-k<n>-P<P>/state-NNNNN.npy   a partition's content lists, reused
    <p>/<ds>/user_recs/published/<date>.npy                    the keys published and their values' sha1
    <p>/<ds>/markers/user_recs/<date>.json                     (UpdateUserRecommendations)
    <p>/<ds>/markers/quality.json, quality/live.json           (MeasureQuality: figures; the live ones)
    <p>/<ds>/markers/download.json                             the last release check (DownloadMovieLens)
    <p>/<ds>/runs/<finished>-<date>.json, runs/latest.json     the run manifest (DailyRun)

Beside each embedding chunk and similar block, ``<key>.timing.json`` records how long it took.

Every function takes plain values and returns a key; nothing here reads the bucket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

from mlrec_luigi.settings import Settings


def model_slug(name: str) -> str:
    """A path-safe name for a model, used in the keys of what it made."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip("/")) or "model"


def dataset_uri(settings: Settings) -> str:
    """The address of the dataset's folder: what tells two pipelines apart (in task ids too)."""
    folder = f"{settings.dataset_prefix}{settings.dataset_name}"
    if settings.gcs_bucket_name:
        return f"gs://{settings.gcs_bucket_name}/{folder}"
    return f"{settings.local_bucket_dir.resolve().as_uri()}/{folder}"


def zip_key(settings: Settings) -> str:
    """The MovieLens zip."""
    return f"{settings.dataset_prefix}{settings.movielens_zip_filename}"


def derived_key(settings: Settings, *parts: str) -> str:
    """A key under the folder of everything derived from the zip."""
    return "/".join([f"{settings.dataset_prefix}{settings.dataset_name}", *parts])


def release_tag(source_md5: str) -> str:
    """The short name of one zip's content, in keys and in MongoDB documents."""
    return source_md5[:12]


def timing_key(chunk_key: str) -> str:
    """Beside a chunk (an embedding chunk, a similar block): how long it took, for the run report."""
    return f"{chunk_key}.timing.json"


def map_tag(map_md5: str) -> str:
    """The short name of one movie id map's content, in the keys of what depends on its row order."""
    return map_md5[:8]


def embedding_chunk_key(settings: Settings, model: str, source_md5: str, chunk_size: int, index: int) -> str:
    folder = f"{release_tag(source_md5)}-c{chunk_size}"
    return derived_key(settings, "embeddings", model_slug(model), folder, f"chunk-{index:05d}.npy")


def embeddings_manifest_key(settings: Settings, model: str) -> str:
    return derived_key(settings, "embeddings", model_slug(model), "manifest.json")


def movie_id_map_key(settings: Settings) -> str:
    return derived_key(settings, "movie_id_map.json")


def marker_key(settings: Settings, stage: str) -> str:
    """The marker of a stage that has one per dataset (``load_movies``, ``load_interactions``...)."""
    return derived_key(settings, "markers", f"{stage}.json")


def parts_folder(source_md5: str, chunk_rows: int) -> str:
    """The folder of one zip's ratings parts (and of their chunk markers), for one part size."""
    return f"{release_tag(source_md5)}-r{chunk_rows}"


def ratings_part_key(settings: Settings, source_md5: str, chunk_rows: int, index: int) -> str:
    return derived_key(settings, "interactions", parts_folder(source_md5, chunk_rows), f"part-{index:05d}.npy")


def ratings_manifest_key(settings: Settings, source_md5: str, chunk_rows: int) -> str:
    return derived_key(settings, "interactions", parts_folder(source_md5, chunk_rows), "manifest.json")


def interactions_chunk_marker_key(settings: Settings, source_md5: str, chunk_rows: int, index: int) -> str:
    folder = parts_folder(source_md5, chunk_rows)
    return derived_key(settings, "markers", "interactions", folder, f"part-{index:05d}.json")


def popular_marker_key(settings: Settings, date: dt.date) -> str:
    return derived_key(settings, "markers", "popular", f"{date.isoformat()}.json")


def popular_record_key(settings: Settings, date: dt.date) -> str:
    """The key a date's popular list was published under, with its value's sha1 (published dates only)."""
    return derived_key(settings, "popular", "published", f"{date.isoformat()}.npy")


def popular_live_key(settings: Settings) -> str:
    """Which date's list is live in Redis: the newest date run, never a backfill."""
    return derived_key(settings, "markers", "popular", "live.json")


def similar_block_key(
    settings: Settings, model: str, source_md5: str, movie_ids: str, top_n: int, block_rows: int, index: int
) -> str:
    """A block of neighbours: its rows name movies by their place in the id map, so the key names the map."""
    folder = f"{release_tag(source_md5)}-{movie_ids}-k{top_n}-b{block_rows}"
    return derived_key(settings, "similar", model_slug(model), folder, f"block-{index:05d}.npy")


def similar_record_key(settings: Settings) -> str:
    """The keys the similar movies were published under, with the sha1 of each value."""
    return derived_key(settings, "similar", "published.npy")


def quality_live_key(settings: Settings) -> str:
    """The figures of the model the quality gate last let through: what a new model is compared with."""
    return derived_key(settings, "quality", "live.json")


def run_key(settings: Settings, name: str = "latest.json") -> str:
    """A run manifest (``latest.json``: the newest)."""
    return derived_key(settings, "runs", name)


def user_recs_folder(source_md5: str, movie_ids: str, top_n: int, partitions: int) -> str:
    """What a user list's rows mean (the release, the movies' order, k) and how the users are partitioned."""
    return f"{release_tag(source_md5)}-{movie_ids}-k{top_n}-P{partitions}"


def user_recs_state_key(
    settings: Settings, model: str, source_md5: str, movie_ids: str, top_n: int, partitions: int, partition: int
) -> str:
    """A partition's content lists and what they were computed from: reused for the users whose interactions
    did not change."""
    folder = user_recs_folder(source_md5, movie_ids, top_n, partitions)
    return derived_key(settings, "user_recs", model_slug(model), folder, f"state-{partition:05d}.npy")


def user_partition_key(
    settings: Settings,
    date: dt.date,
    model: str,
    source_md5: str,
    movie_ids: str,
    top_n: int,
    method: str,
    partitions: int,
    partition: int,
) -> str:
    """One partition's lists for a date, computed with ``method`` ("content", or the model's parameters)."""
    folder = user_recs_folder(source_md5, movie_ids, top_n, partitions)
    tag = "content" if method == "content" else f"als-{hashlib.md5(method.encode()).hexdigest()[:8]}"
    return derived_key(settings, "user_recs", model_slug(model), folder, date.isoformat(), database_tag(settings),
                       tag, f"partition-{partition:05d}.npy")  # fmt: skip


def shuffle_piece_key(
    settings: Settings, source_md5: str, chunk_rows: int, partitions: int, index: int, partition: int | None
) -> str:
    """A ratings part's piece for one partition; ``partition`` None: the record that every piece is written."""
    name = "done.json" if partition is None else f"p-{partition:05d}.npy"
    folder = f"{parts_folder(source_md5, chunk_rows)}-P{partitions}"
    return derived_key(settings, "user_recs", "shuffle", folder, f"part-{index:05d}", name)


def api_read_key(settings: Settings, date: dt.date, partitions: int, partition: int | None) -> str:
    """A date's read of the API's interactions in one MongoDB database: one piece per partition; ``partition``
    None: its record."""
    name = "read.json" if partition is None else f"p-{partition:05d}.npy"
    return derived_key(settings, "user_recs", "api", date.isoformat(), database_tag(settings), f"P{partitions}", name)


def api_latest_key(settings: Settings, partitions: int) -> str:
    """The newest date's read of the API's interactions (what the next read starts from)."""
    return derived_key(settings, "user_recs", "api", f"latest-{database_tag(settings)}-P{partitions}.json")


def database_tag(settings: Settings) -> str:
    """The MongoDB database the API's documents are read from, path-safe (never the URI: it holds secrets)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", settings.mongodb_database)


def collaborative_key(
    settings: Settings, date: dt.date, source_md5: str, partitions: int, params: str, which: str
) -> str:
    """A date's collaborative model: the ``users``' or the ``movies``' factors."""
    tag = hashlib.md5(params.encode()).hexdigest()[:8]
    folder = f"{release_tag(source_md5)}-P{partitions}-{tag}"
    return derived_key(settings, "user_recs", "collaborative", date.isoformat(), database_tag(settings), folder,
                       f"{which}.npy")  # fmt: skip


def user_recs_published_key(settings: Settings, date: dt.date) -> str:
    """The keys a date's run published, with the sha1 of each value (the completeness check reads it)."""
    return derived_key(settings, "user_recs", "published", f"{date.isoformat()}.npy")


def user_recs_marker_key(settings: Settings, date: dt.date) -> str:
    return derived_key(settings, "markers", "user_recs", f"{date.isoformat()}.json")
