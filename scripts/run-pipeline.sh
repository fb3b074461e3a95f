#!/usr/bin/env bash
# Set up, then run the daily DAG: luigi --module mlrec_luigi DailyRun (UpdatePopular, UpdateSimilarMovies,
# UpdateUserRecommendations, then the run manifest).
#   bash scripts/run-pipeline.sh                      local scheduler, today's date
#   bash scripts/run-pipeline.sh --scheduler-host 127.0.0.1 --workers 2   against a running luigid
#   bash scripts/run-pipeline.sh --date 2026-11-24
# Settings come from the environment and .env (see config/.env.sample); without MONGODB_URI the
# try-out store var/mongomock.bson is used (scripts/luigi.sh). Exit code non-zero on failure.
set -euo pipefail
exec bash "$(dirname "$0")/luigi.sh" DailyRun "$@"
