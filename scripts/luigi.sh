#!/usr/bin/env bash
# This project's `luigi` command, as the README types it: set-up, the try-out defaults, then
#   .venv/bin/luigi --module mlrec_luigi TASK [ARGS]   (--local-scheduler unless a scheduler is named)
#   bash scripts/luigi.sh UpdatePopular --date 2026-11-24
#   bash scripts/luigi.sh DownloadMovieLens --refresh
#   bash scripts/luigi.sh DailyRun --scheduler-host 127.0.0.1 --workers 2
# (.venv/bin/luigi is the plain command once set up; `source .venv/bin/activate` puts it on PATH.)
# Settings come from the environment and .env (see config/.env.sample). Exit codes: README.
# Without MONGODB_URI the try-out store is TRYOUT_STORE (default var/mongomock.bson).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ -z "${MONGODB_URI:-}" ] && ! grep -qs '^MONGODB_URI=.' .env; then
  # The try-out MongoDB: an in-process stand-in saved to var/mongomock.bson after each stage (not for production).
  store=${TRYOUT_STORE:-var/mongomock.bson}
  echo "{\"severity\": \"WARNING\", \"message\": \"MONGODB_URI is not set: using the try-out store $store (an in-process MongoDB stand-in kept between runs; not for production). Set MONGODB_URI in .env for a real MongoDB.\"}" >&2
  export MONGODB_URI="mongomock://localhost/mlrec?store=$store"
fi
scheduler=(--local-scheduler)
for arg in "$@"; do
  case "$arg" in --scheduler-host|--scheduler-url|--scheduler-host=*|--scheduler-url=*) scheduler=() ;; esac
done
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec .venv/bin/luigi --module mlrec_luigi "$@" "${scheduler[@]}"
