#!/usr/bin/env bash
# An MLflow tracking server for a cluster run: jobs on many nodes log to it over HTTP, instead of
# all writing one SQLite file on a shared filesystem (where file locks are unreliable).
#
#   scripts/mlflow-server.sh start    start `mlflow server` in the background, wait until it
#                                     answers /health, print the line that points jobs at it
#   scripts/mlflow-server.sh stop     stop it (the whole process group: uvicorn's workers too)
#   scripts/mlflow-server.sh status   whether it runs and answers
#
# Settings (environment; mlflow server reads the MLFLOW_* ones itself):
#   MLFLOW_BACKEND_STORE_URI      the database, e.g. postgresql+psycopg://mlflow:PASS@dbhost:5432/mlflow
#                                 (default sqlite:///mlflow.db: one machine only)
#   MLFLOW_ARTIFACTS_DESTINATION  where the server stores artifacts (default ./mlartifacts; on a
#                                 cluster a shared path or an object store URI)
#   MLFLOW_HOST, MLFLOW_PORT      where it listens (default 0.0.0.0 and 5000)
#   MLFLOW_SERVER_ALLOWED_HOSTS   Host headers it accepts (MLflow's guard against DNS rebinding;
#                                 its default, localhost and private IPs, refuses a node's name):
#                                 default this host's short and full names, localhost, private IPs
#   MLFLOW_SERVER_WORKERS         uvicorn workers (default 4)
#   MLFLOW_SERVER_DIR             its pid file and log (default logs/mlflow-server)
#   MLFLOW_SERVER_TIMEOUT         seconds to wait for /health (default 120)
# Then, before `snakemake --profile slurm all`:  export MLFLOW_TRACKING_URI=http://<this host>:<port>
# (sbatch exports the submitting environment to every job). Exit status: 0 done, 1 failed, 2 usage.
set -euo pipefail

DIR=${MLFLOW_SERVER_DIR:-logs/mlflow-server}
PORT=${MLFLOW_PORT:-5000}
HOST=${MLFLOW_HOST:-0.0.0.0}
TIMEOUT=${MLFLOW_SERVER_TIMEOUT:-120}
PID_FILE=$DIR/server.pid
LOG=$DIR/server.log
export MLFLOW_BACKEND_STORE_URI=${MLFLOW_BACKEND_STORE_URI:-sqlite:///mlflow.db}
export MLFLOW_ARTIFACTS_DESTINATION=${MLFLOW_ARTIFACTS_DESTINATION:-$PWD/mlartifacts}
hosts=""
for h in localhost 127.0.0.1 "$(hostname -s)" "$(hostname -f)"; do hosts+="$h,$h:*,"; done
ALLOWED=${MLFLOW_SERVER_ALLOWED_HOSTS:-${hosts}10.*,192.168.*,172.*}

url() { echo "http://$([[ $HOST == 0.0.0.0 ]] && hostname -f || echo "$HOST"):$PORT"; }
running() { [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }
healthy() {
    python - "http://$([[ $HOST == 0.0.0.0 ]] && echo 127.0.0.1 || echo "$HOST"):$PORT/health" <<'EOF' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).read().strip() == b"OK" else 1)
EOF
}

start() {
    if running && healthy; then echo "already running: export MLFLOW_TRACKING_URI=$(url)"; return 0; fi
    if running; then echo "pid $(cat "$PID_FILE") runs but does not answer /health: stop it first" >&2; return 1; fi
    mkdir -p "$DIR"
    # its own session, so that stop reaches the uvicorn workers it forks
    setsid mlflow server --host "$HOST" --port "$PORT" --workers "${MLFLOW_SERVER_WORKERS:-4}" \
        --allowed-hosts "$ALLOWED" >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    local t0=$SECONDS
    until healthy; do
        if ! running; then echo "mlflow server exited; its log, $LOG:" >&2; tail -n 30 "$LOG" >&2; return 1; fi
        if ((SECONDS - t0 > TIMEOUT)); then echo "mlflow server not healthy after ${TIMEOUT}s; see $LOG" >&2; stop; return 1; fi
        sleep 0.5
    done
    echo "mlflow server up in $((SECONDS - t0)) s (store ${MLFLOW_BACKEND_STORE_URI%%://*}://..., log $LOG)"
    echo "export MLFLOW_TRACKING_URI=$(url)"
}

stop() {
    if ! running; then rm -f "$PID_FILE"; echo "not running"; return 0; fi
    local pid
    pid=$(cat "$PID_FILE")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    echo "stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) if running && healthy; then echo "running: $(url)"; else echo "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
