#!/usr/bin/env bash
# gptj serve under real mpirun at TP 2: greedy completions (plain and streamed) equal Hugging Face's,
# then SIGTERM to rank 0 shuts every rank down (rank 0 drains; the workers leave on its shutdown plan)
# and mpirun exits 0. (SIGTERM to mpirun itself: tests/server/mpirun_sigterm_test.sh.)
source "$(dirname "$0")/common.sh" "$@"
command -v mpirun >/dev/null || fail "mpirun not found"
export OMPI_MCA_mpi_yield_when_idle=1  # idle workers still poll in MPI_Bcast, but yield the core between polls
start_server mpirun --allow-run-as-root --oversubscribe -np 2 "$GPTJ" serve --model "$MODEL" --backend cpu --port 0
GPTJ_TEST_DATA="$DATA" python3 - "$PORT" <<'PY'
import sys
from serverlib import *
port = int(sys.argv[1])
for prompt, expected in golden(DATA)[:2]:
    status, r = complete(port, {"prompt": prompt, "max_tokens": 16, "temperature": 0})
    check(status == 200 and r["choices"][0]["token_ids"] == expected, "TP 2 greedy: %d %r" % (status, str(r)[:300]))
    chunks, done = stream(port, {"prompt": prompt, "max_tokens": 16, "temperature": 0})
    check(done and [t for c in chunks for t in c["choices"][0]["token_ids"]] == expected, "TP 2 streamed greedy")
status, r = complete(port, {"prompt": "Hello", "max_tokens": 4})
check(status == 200 and len(r["choices"][0]["token_ids"]) == 4, "TP 2 text completion")
print("TP 2 completions correct")
PY
# OpenMPI's default kill delay (1 s) is shorter than the default --drain-timeout: rank 0 says so.
grep -q "warning: mpirun kills the ranks 1 s after passing on a SIGTERM" "$WORK/server.log" ||
  fail "no warning about mpirun's default odls_base_sigkill_timeout"
rank0=$(rank0_pid)
[ -n "$rank0" ] || fail "no rank 0 to signal"
kill -TERM "$rank0"
wait_server_exit 60
[ "$SERVER_CODE" = 0 ] || fail "mpirun exit code $SERVER_CODE after SIGTERM (want 0)"
echo PASS
