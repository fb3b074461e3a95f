"""mlrec-luigi: the offline data pipeline of the MovieLens recommender.

    luigi --module mlrec_luigi UpdatePopular --local-scheduler

runs the whole chain: DownloadMovieLens → Embeddings (EmbeddingChunk x N) → LoadMovies →
LoadInteractions (PrepareRatings, then InteractionsChunk x N) → UpdatePopular.
Settings come from the environment and ``.env``.
"""

from mlrec_luigi import tasks
from mlrec_luigi.logs import configure_logging
from mlrec_luigi.settings import get_settings
from mlrec_luigi.tasks import *  # noqa: F403 - the tasks are the package's interface, listed once in tasks/

configure_logging(get_settings().log_level)

__all__ = tasks.__all__
