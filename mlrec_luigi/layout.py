"""Where every output lives in the bucket: the one place that names the keys.

``<p>`` is ``GCS_DATASET_PATH``, ``<ds>`` the zip's name without .zip::

    <p>/<zip>                                           the MovieLens zip (DownloadMovieLens)
    <p>/<ds>/embeddings/<model>/<md5>-c<size>/chunk-NNNNN.npy   (EmbeddingChunk)
    <p>/<ds>/embeddings/<model>/manifest.json           (Embeddings)
    <p>/<ds>/movie_id_map.json                          (LoadMovies)
    <p>/<ds>/markers/load_movies.json                   (LoadMovies)
    <p>/<ds>/interactions/<md5>-r<rows>/part-NNNNN.npy, manifest.json   (PrepareRatings)
    <p>/<ds>/markers/interactions/<md5>-r<rows>/part-NNNNN.json        (InteractionsChunk)
    <p>/<ds>/markers/load_interactions.json             (LoadInteractions)
    <p>/<ds>/markers/popular/<date>.json                (UpdatePopular)
    <p>/<ds>/runs/<finished>-<date>.json, runs/latest.json   the run manifest (UpdatePopular)
"""

from __future__ import annotations

from mlrec_luigi.settings import Settings


def zip_key(settings: Settings) -> str:
    """The MovieLens zip."""
    return f"{settings.dataset_prefix}{settings.movielens_zip_filename}"


def derived_key(settings: Settings, *parts: str) -> str:
    """A key under the folder of everything derived from the zip."""
    return "/".join([f"{settings.dataset_prefix}{settings.dataset_name}", *parts])


def movie_id_map_key(settings: Settings) -> str:
    return derived_key(settings, "movie_id_map.json")


def run_key(settings: Settings, name: str = "latest.json") -> str:
    """A run manifest (``latest.json``: the newest)."""
    return derived_key(settings, "runs", name)
