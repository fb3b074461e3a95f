"""mlrec-luigi: the offline data pipeline of the MovieLens recommender.

    luigi --module mlrec_luigi UpdatePopular --local-scheduler

runs the whole chain: DownloadMovieLens → Embeddings (EmbeddingChunk x N) → LoadMovies →
LoadInteractions (PrepareRatings, then InteractionsChunk x N) → UpdatePopular.

    luigi --module mlrec_luigi DailyRun --local-scheduler

is the daily run: UpdatePopular and UpdateSimilarMovies (SimilarMoviesBlock x N), then the
run manifest.
Settings come from the environment and ``.env``.
"""

from mlrec_luigi import tasks
from mlrec_luigi.logs import configure_logging
from mlrec_luigi.settings import SettingsError, get_settings
from mlrec_luigi.tasks import *  # noqa: F403 - the tasks are the package's interface, listed once in tasks/

try:
    configure_logging(get_settings().log_level)
except SettingsError:
    # A malformed setting fails the run at scheduling, in one line naming it (exit code 35),
    # not at import with a traceback.
    configure_logging()

__all__ = tasks.__all__
