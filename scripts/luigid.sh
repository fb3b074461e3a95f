#!/usr/bin/env bash
# Start Luigi's central scheduler on loopback, with a state file and task history in SQLite.
#   bash scripts/luigid.sh                 foreground
#   bash scripts/luigid.sh --background    daemonized (luigid's own flag; pid file in LUIGID_DIR)
# LUIGID_PORT (default 8082) and LUIGID_DIR (default var/luigid) choose where.
# Dashboard: http://127.0.0.1:$LUIGID_PORT/static/visualiser/index.html  history: /history
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir=$(realpath -m "${LUIGID_DIR:-var/luigid}")
port=${LUIGID_PORT:-8082}
mkdir -p "$dir"
cat > "$dir/luigid.cfg" <<CFG
[scheduler]
state_path = $dir/state.pickle
record_task_history = true
# keep finished tasks visible on the dashboard for a day
remove_delay = 86400

[task_history]
db_connection = sqlite:///$dir/task-history.sqlite
CFG
export LUIGI_CONFIG_PATH="$dir/luigid.cfg"
extra=()
[ "${1:-}" = "--background" ] && extra=(--pidfile "$dir/luigid.pid")
exec .venv/bin/luigid --address 127.0.0.1 --port "$port" --state-path "$dir/state.pickle" --logdir "$dir" "${extra[@]}" "$@"
