#!/usr/bin/env bash
# This project's `luigi` command, as the README types it: set-up, then
#   .venv/bin/luigi --module mlrec_luigi TASK [ARGS]   (--local-scheduler unless a scheduler is named)
#   bash scripts/luigi.sh UpdatePopular --date 2026-11-24
#   bash scripts/luigi.sh DownloadMovieLens --refresh
#   bash scripts/luigi.sh DailyRun --scheduler-host 127.0.0.1 --workers 2
# (.venv/bin/luigi is the plain command once set up; `source .venv/bin/activate` puts it on PATH.)
# Settings (the try-out store without MONGODB_URI included) are read by Python alone, from the environment,
# .env or MLREC_ENV_FILE (mlrec_luigi/settings.py; config/.env.sample). Exit codes: README.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

scheduler=(--local-scheduler)
for arg in "$@"; do
  case "$arg" in --scheduler-host|--scheduler-url|--scheduler-host=*|--scheduler-url=*) scheduler=() ;; esac
done
exec .venv/bin/luigi --module mlrec_luigi "$@" "${scheduler[@]}"
