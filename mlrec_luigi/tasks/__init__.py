"""The Luigi tasks, one module per stage, in pipeline order; ``daily.py`` is the root."""

from mlrec_luigi.tasks import events  # noqa: F401 - registers what every task does on start, success, failure
from mlrec_luigi.tasks.daily import DailyRun
from mlrec_luigi.tasks.download import DownloadMovieLens
from mlrec_luigi.tasks.embeddings import EmbeddingChunk, Embeddings
from mlrec_luigi.tasks.interactions import InteractionsChunk, LoadInteractions
from mlrec_luigi.tasks.movies import LoadMovies
from mlrec_luigi.tasks.popular import UpdatePopular
from mlrec_luigi.tasks.quality import MeasureQuality
from mlrec_luigi.tasks.ratings import PrepareRatings
from mlrec_luigi.tasks.similar import SimilarMoviesBlock, UpdateSimilarMovies
from mlrec_luigi.tasks.user_partitions import (
    ReadApiInteractions,
    ShuffleRatingsPart,
    TrainCollaborative,
    UserRecsPartition,
)
from mlrec_luigi.tasks.user_recs import UpdateUserRecommendations

__all__ = [
    "DailyRun",
    "DownloadMovieLens",
    "EmbeddingChunk",
    "Embeddings",
    "InteractionsChunk",
    "LoadInteractions",
    "LoadMovies",
    "MeasureQuality",
    "PrepareRatings",
    "ReadApiInteractions",
    "ShuffleRatingsPart",
    "SimilarMoviesBlock",
    "TrainCollaborative",
    "UpdatePopular",
    "UpdateSimilarMovies",
    "UpdateUserRecommendations",
    "UserRecsPartition",
]
# Run only with the collaborative method (USER_RECS_METHOD): not in every run.
OCCASIONAL = ["TrainCollaborative"]
