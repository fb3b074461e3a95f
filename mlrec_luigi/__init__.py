"""mlrec-luigi: the offline data pipeline of the MovieLens recommender.

    luigi --module mlrec_luigi UpdatePopular --local-scheduler

runs the whole chain: DownloadMovieLens → Embeddings (EmbeddingChunk x N) → LoadMovies →
LoadInteractions (PrepareRatings, then InteractionsChunk x N) → UpdatePopular.

    luigi --module mlrec_luigi DailyRun --local-scheduler

is the daily run: UpdatePopular and UpdateSimilarMovies (SimilarMoviesBlock x N), then the
run manifest.
Settings come from the environment and ``.env``.
"""

import atexit
import sys
from pathlib import Path

from mlrec_luigi import causes, tasks
from mlrec_luigi.logs import configure_logging
from mlrec_luigi.settings import SettingsError, get_settings
from mlrec_luigi.tasks import *  # noqa: F403 - the tasks are the package's interface, listed once in tasks/
from mlrec_luigi.tasks.events import say_the_cause_last
from mlrec_luigi.tasks.exit_codes import exit_zero_when_the_dag_is_done

try:
    configure_logging(get_settings().log_level)
except SettingsError:
    # A malformed setting fails the run at scheduling, in one line naming it (exit code 35),
    # not at import with a traceback.
    configure_logging()

if Path(sys.argv[0]).name == "luigi":  # the command a person reads: its last line is the cause of a failure
    causes.share_with_workers()  # forked workers (--workers N) record theirs where this process reads them
    exit_zero_when_the_dag_is_done()  # a machine whose share another machine ran exits 0 once the DAG is done
    atexit.register(say_the_cause_last)

__all__ = tasks.__all__
