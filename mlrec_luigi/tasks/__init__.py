"""The Luigi tasks, one module per stage, in pipeline order."""

from mlrec_luigi.tasks.download import DownloadMovieLens
from mlrec_luigi.tasks.embeddings import EmbeddingChunk, Embeddings
from mlrec_luigi.tasks.interactions import InteractionsChunk, LoadInteractions, PrepareRatings
from mlrec_luigi.tasks.movies import LoadMovies
from mlrec_luigi.tasks.popular import UpdatePopular

__all__ = [
    "DownloadMovieLens",
    "EmbeddingChunk",
    "Embeddings",
    "InteractionsChunk",
    "LoadInteractions",
    "LoadMovies",
    "PrepareRatings",
    "UpdatePopular",
]
