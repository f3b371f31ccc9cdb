#!/usr/bin/env bash
# gptj serve over 2 data-parallel replicas (mpirun -np 2, --tp 1): 50 concurrent greedy completions
# (plain and streamed) all return Hugging Face's tokens; /metrics shows both replicas did work (the
# replica-labelled counters) and /health was 200 with both ready; a seeded sampled completion gives
# the same tokens as a single-process server would (the seed, not the replica, decides; its n = 3
# samples share one prefill and equal n = 1 requests with seed + k); SIGTERM to
# rank 0 drains both replicas and mpirun exits 0.
source "$(dirname "$0")/common.sh" "$@"
command -v mpirun >/dev/null || fail "mpirun not found"
export OMPI_MCA_mpi_yield_when_idle=1
# The single-process reference for the seeded completion.
start_server "$GPTJ" serve --model "$MODEL" --port 0
GPTJ_TEST_DATA="$DATA" python3 - "$PORT" "$WORK/seeded.json" <<'PY'
import json, sys
from serverlib import *
status, r = complete(int(sys.argv[1]), {"prompt": "Once upon", "max_tokens": 12, "temperature": 0.9, "top_p": 0.9,
                                        "seed": 11, "n": 3})
check(status == 200, "reference seeded completion: %d" % status)
# The n samples share one prefill (the prompt's 2 tokens counted once) and sample k is seed + k:
# the same tokens as n = 1 requests with seeds 11, 12, 13.
check(metrics(int(sys.argv[1]))["gptj_prompt_tokens_total"] == 2, "n = 3 did not share its prompt")
for k in range(3):
    status, one = complete(int(sys.argv[1]), {"prompt": "Once upon", "max_tokens": 12, "temperature": 0.9,
                                              "top_p": 0.9, "seed": 11 + k})
    check(one["choices"][0]["token_ids"] == r["choices"][k]["token_ids"], "sample %d is not seed + %d's" % (k, k))
json.dump([c["token_ids"] for c in r["choices"]], open(sys.argv[2], "w"))
PY
kill -TERM "$SERVER_PID"
wait_server_exit 30

start_server mpirun --allow-run-as-root --oversubscribe -np 2 "$GPTJ" serve --tp 1 --model "$MODEL" --backend cpu --port 0
GPTJ_TEST_DATA="$DATA" python3 - "$PORT" "$WORK/seeded.json" <<'PY'
import json, sys, threading
from serverlib import *
port = int(sys.argv[1])
m = metrics(port)
check(m['gptj_replica_ready{replica="0"}'] == 1 and m['gptj_replica_ready{replica="1"}'] == 1, "both replicas ready")
concurrent_golden(port, 50)
m = metrics(port)
done = [m['gptj_replica_sequences_finished_total{replica="%d"}' % r] for r in (0, 1)]
check(all(d >= 5 for d in done) and sum(done) >= 50, "replica shares of 50 requests: %r" % done)
status, r = complete(port, {"prompt": "Once upon", "max_tokens": 12, "temperature": 0.9, "top_p": 0.9, "seed": 11, "n": 3})
check(status == 200, "seeded completion at DP 2: %d" % status)
want = json.load(open(sys.argv[2]))
check([c["token_ids"] for c in r["choices"]] == want, "seeded completion differs from the single process: %r vs %r"
      % ([c["token_ids"] for c in r["choices"]], want))
check(m["gptj_kv_blocks_used"] == 0 and m["gptj_running_sequences"] == 0, "idle gauges")
print("50 concurrent requests correct over 2 replicas; finished per replica: %r" % done)
PY
rank0=$(rank0_pid)
[ -n "$rank0" ] || fail "no rank 0 to signal"
kill -TERM "$rank0"
wait_server_exit 60
[ "$SERVER_CODE" = 0 ] || fail "mpirun exit code $SERVER_CODE after SIGTERM (want 0)"
grep -q "gptj serve: stopped" "$WORK/server.log" || fail "no 'stopped' line"
echo PASS
