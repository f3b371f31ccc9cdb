# Shared by the tests/server/*_test.sh scripts (sourced; not a test itself).
# Usage in a test: source "$(dirname "$0")/common.sh" "$@"; start_server "$GPTJ" serve --model "$MODEL" ...
set -euo pipefail
GPTJ=${1:?usage: $0 GPTJ_BINARY TESTS_DATA_DIR}
DATA=${2:?usage: $0 GPTJ_BINARY TESTS_DATA_DIR}
MODEL=$DATA/tiny-gptj-a/model
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
WORK=$(mktemp -d)
SERVER_PID=
PORT=

# Ends the server (TERM, then KILL after 10 s) and removes the scratch dir, whatever happened.
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  if [ -f "$WORK/server.log" ]; then echo "--- server log (tail) ---" >&2; tail -20 "$WORK/server.log" >&2; fi
  exit 1
}

# start_server CMD...: runs CMD in the background (it must include --port 0), waits (bounded) for the
# listening line and then for /health to answer 200. Sets SERVER_PID and PORT.
start_server() {
  launch_server "$@"
  wait_ready
}

# launch_server CMD...: start_server's first half: returns once the server listens (the model may
# still be loading). Sets SERVER_PID and PORT.
launch_server() {
  # Emptied here, not only by the background job's redirection, which may come after the first
  # read below: the read would fail (no file) or find an earlier server's listening line.
  : >"$WORK/server.log"
  "$@" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  PORT=
  for _ in $(seq 1 600); do
    PORT=$(sed -n 's|^gptj serve: listening on http://.*:\([0-9][0-9]*\)$|\1|p' "$WORK/server.log")
    PORT=${PORT%%$'\n'*}  # the first match (no `| head`: under pipefail its SIGPIPE would end the test)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited before listening"
    sleep 0.1
  done
  [ -n "$PORT" ] || fail "no 'gptj serve: listening on' line within 60 s"
}

# wait_ready: start_server's second half: waits (bounded) for /health to answer 200.
wait_ready() {
  for _ in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/health" || true)
    [ "$code" = 200 ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited while loading"
    sleep 0.1
  done
  fail "/health did not answer 200 within 60 s"
}

# wait_server_exit SECONDS: waits for the server to exit; sets SERVER_CODE (fails on timeout).
wait_server_exit() {
  for _ in $(seq 1 $(($1 * 10))); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      SERVER_CODE=0
      wait "$SERVER_PID" || SERVER_CODE=$?
      SERVER_PID=
      return 0
    fi
    sleep 0.1
  done
  fail "server still running $1 s after the signal"
}

# rank0_pid: the pid of rank 0 among the children of the mpirun started by start_server (fails if none).
rank0_pid() {
  local pid
  for pid in $(pgrep -P "$SERVER_PID"); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=0'; then echo "$pid"; return 0; fi
  done
  fail "cannot find rank 0 among mpirun's children"
}
