#!/usr/bin/env bash
# Start Luigi's central scheduler on loopback, with a state file, task history in SQLite and
# Prometheus metrics at /metrics.
#   bash scripts/luigid.sh                 foreground (Ctrl-C stops it)
#   bash scripts/luigid.sh --background    in the background: waits until it answers, prints its URL and pid
#                                          (or the reason it could not start, exit 1)
#   bash scripts/luigid.sh --stop          stops the one started with --background
# LUIGID_PORT (default 8082) and LUIGID_DIR (default var/luigid) choose where.
# Dashboard: http://127.0.0.1:$LUIGID_PORT/static/visualiser/index.html  history: /history  metrics: /metrics
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath -m "${LUIGID_DIR:-var/luigid}")
port=${LUIGID_PORT:-8082}
pidfile="$dir/luigid.pid"
url="http://127.0.0.1:$port"

if [ "${1:-}" = "--stop" ]; then
  if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
    rm -f "$pidfile"; echo "luigid stopped"; exit 0
  fi
  rm -f "$pidfile"; echo "luigid is not running (no live pid in $pidfile)" >&2; exit 1
fi

bash scripts/setup.sh
mkdir -p "$dir"
cat > "$dir/luigid.cfg" <<CFG
[scheduler]
state_path = $dir/state.pickle
record_task_history = true
# A finished task leaves the dashboard 30 minutes after its run stopped asking for it, so the
# dashboard shows the current run, not yesterday's beside it (/history keeps every run).
remove_delay = 1800
# A machine that dies mid-task: luigid drops it after 60 s without a ping (worker_disconnect_delay), its
# task turns FAILED, and 60 s later (retry_delay; Luigi's default is 900 s) any worker kept alive with
# --worker-keep-alive takes it again: a dead machine costs about two minutes, not the night. The dead
# are looked for whenever a worker asks for work (prune_on_get_work), not only once a minute.
# LUIGID_WORKER_DISCONNECT_DELAY and LUIGID_RETRY_DELAY change the two (the tests shorten them to seconds).
worker_disconnect_delay = ${LUIGID_WORKER_DISCONNECT_DELAY:-60}
retry_delay = ${LUIGID_RETRY_DELAY:-60}
prune_on_get_work = true
# /metrics: luigi_task_failed_total, luigi_task_done_total, luigi_task_started_total... per family and dataset
metrics_collector = prometheus

[prometheus]
task_parameters_to_use_in_labels = ["dataset"]

[task_history]
db_connection = sqlite:///$dir/task-history.sqlite
CFG
export LUIGI_CONFIG_PATH="$dir/luigid.cfg"
command=(.venv/bin/luigid --address 127.0.0.1 --port "$port" --state-path "$dir/state.pickle" --logdir "$dir")

if [ "${1:-}" != "--background" ]; then
  exec "${command[@]}" "$@"
fi
shift
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "luigid already runs (pid $(cat "$pidfile")) at $url" >&2; exit 1
fi
answers() { .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url/api/task_list" 2>/dev/null; }
if answers || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "luigid could not start on $url: port $port is already taken (set LUIGID_PORT)" >&2; exit 1
fi
nohup "${command[@]}" "$@" >"$dir/luigid.out" 2>"$dir/luigid.err" </dev/null &
pid=$!
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "luigid could not start on $url: $(grep -v '^\s*$' "$dir/luigid.err" | tail -n 1)" >&2
    exit 1
  fi
  if answers; then
    echo "$pid" > "$pidfile"
    echo "luigid runs at $url (pid $pid; dashboard $url/static/visualiser/index.html, metrics $url/metrics); stop it: bash scripts/luigid.sh --stop"
    exit 0
  fi
  sleep 0.2
done
kill "$pid" 2>/dev/null || true
echo "luigid did not answer on $url within 20 s (see $dir/luigid.err)" >&2
exit 1
