#!/usr/bin/env bash
# What gptj serve listens on: only its HTTP port, on the host it was told. A process no launcher
# started does not start MPI (whose singleton start-up spawned an orted and listened on every
# interface); under mpirun on one host the ranks use shared memory and open no TCP listener of
# their own (mpirun's own control sockets are OpenMPI's: see README.md, "Network exposure").
source "$(dirname "$0")/common.sh" "$@"
command -v ss >/dev/null || { echo "SKIP: ss (iproute2) not installed"; exit 77; }

descendants() {  # descendants PID: PID and every process below it
  local pid=$1 child
  echo "$pid"
  for child in $(pgrep -P "$pid"); do descendants "$child"; done
}

# listening PIDS...: the TCP and UDP sockets these processes listen on, one "address:port" a line
listening() {
  local pattern
  pattern=$(printf '%s|' "$@")
  ss -ltunpH | grep -E "pid=(${pattern%|})," | awk '{print $5}' | sort -u
}

start_server "$GPTJ" serve --model "$MODEL" --host 127.0.0.1 --port 0
mapfile -t pids < <(descendants "$SERVER_PID")
[ "${#pids[@]}" = 1 ] || fail "a single gptj serve started helper processes: $(ps -o pid=,comm= -p "${pids[*]:1}" | tr '\n' ' ')"
got=$(listening "${pids[@]}")
[ "$got" = "127.0.0.1:$PORT" ] || fail "single gptj serve listens on: $(echo $got) (want only 127.0.0.1:$PORT)"
echo "single process: only 127.0.0.1:$PORT"
kill -TERM "$SERVER_PID"
wait_server_exit 60

command -v mpirun >/dev/null || fail "mpirun not found"
export OMPI_MCA_mpi_yield_when_idle=1
start_server mpirun --allow-run-as-root --oversubscribe -np 2 "$GPTJ" serve --model "$MODEL" --backend cpu \
  --host 127.0.0.1 --port 0
ranks=()
for child in $(pgrep -P "$SERVER_PID"); do
  [ "$(cat "/proc/$child/comm" 2>/dev/null)" = gptj ] && mapfile -t -O "${#ranks[@]}" ranks < <(descendants "$child")
done
[ "${#ranks[@]}" = 2 ] || fail "want 2 gptj ranks under mpirun, found ${#ranks[@]}"
got=$(listening "${ranks[@]}")
[ "$got" = "127.0.0.1:$PORT" ] || fail "the ranks under mpirun -np 2 listen on: $(echo $got) (want only 127.0.0.1:$PORT)"
echo "mpirun -np 2: the ranks listen only on 127.0.0.1:$PORT"
echo PASS
