#!/usr/bin/env bash
# `mpirun -np 2 gptj serve` with default flags: idle for 40 s (longer than the 23 s a worker waits
# for word from rank 0) it stays up, because rank 0 sends keepalives, and then answers a request;
# then rank 0 is SIGSTOPped while idle and the worker ends the job within 30 s naming rank 0.
source "$(dirname "$0")/../server/common.sh" "$@"
command -v mpirun >/dev/null || fail "mpirun not found"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
start_server timeout -k 5 200 mpirun --oversubscribe -np 2 "$GPTJ" serve --model "$MODEL" --backend cpu --port 0
sleep 40
kill -0 "$SERVER_PID" 2>/dev/null || fail "the idle server died within 40 s"
GPTJ_TEST_DATA="$DATA" python3 - "$PORT" <<'PY'
import sys
from serverlib import *
port = int(sys.argv[1])
prompt, expected = golden(DATA)[0]
status, r = complete(port, {"prompt": prompt, "max_tokens": 8, "temperature": 0}, timeout=60)
check(status == 200 and r["choices"][0]["token_ids"] == expected[:8], "after 40 s idle: %d %r" % (status, str(r)[:300]))
print("ok: answered after 40 s idle")
PY
rank0=
for pid in $(pgrep -P "$(pgrep -P "$SERVER_PID" -x mpirun || echo "$SERVER_PID")"); do
  if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=0'; then rank0=$pid; fi
done
[ -n "$rank0" ] || fail "cannot find rank 0 among mpirun's children"
kill -STOP "$rank0"
stopped=$SECONDS
for _ in $(seq 1 450); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
took=$((SECONDS - stopped))
kill -CONT "$rank0" 2>/dev/null || true
kill -0 "$SERVER_PID" 2>/dev/null && fail "the job still runs 45 s after rank 0 stopped"
code=0
wait "$SERVER_PID" || code=$?
SERVER_PID=
[ $code -ne 0 ] && [ $code -ne 124 ] && [ $code -ne 137 ] || fail "exit $code (124/137: hung until the timeout)"
pattern="rank 1 on .*: no word from rank 0 for [0-9]+ s \(stopped, hung or unreachable\); ending the job"
grep -Eq "$pattern" "$WORK/server.log" || fail "no message naming rank 0's silence"
[ $took -le 30 ] || fail "took ${took}s from SIGSTOP to exit (limit 30 s)"
echo "ok: exit $code ${took}s after SIGSTOP: $(grep -Em1 "$pattern" "$WORK/server.log")"
echo PASS
