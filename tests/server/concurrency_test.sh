#!/usr/bin/env bash
# 50 concurrent greedy completions (plain and streamed) all return Hugging Face's tokens, and the
# metrics show that they ran batched together (more than one sequence in a model step).
source "$(dirname "$0")/common.sh" "$@"
# A step budget of 64 tokens: the longer prompts (up to 130 tokens) are prefilled in chunks.
start_server "$GPTJ" serve --model "$MODEL" --port 0 --http-threads 3 --max-step-tokens 64
GPTJ_TEST_DATA="$DATA" python3 - "$PORT" <<'PY'
import sys, threading
from serverlib import *
port = int(sys.argv[1])
concurrent_golden(port, 50)
m = metrics(port)
check(m["gptj_running_sequences_max"] > 1, "requests never shared a batch: %r" % m["gptj_running_sequences_max"])
check(m['gptj_step_batch_size_bucket{le="1"}'] < m["gptj_step_batch_size_count"], "no step with batch > 1")
check(m['gptj_requests_total{status="200"}'] >= 50, "requests_total 200 = %r" % m.get('gptj_requests_total{status="200"}'))
check(m["gptj_kv_blocks_used"] == 0 and m["gptj_running_sequences"] == 0 and m["gptj_queue_depth"] == 0, "idle gauges")
print("50 concurrent requests correct; largest batch %d" % m["gptj_running_sequences_max"])
PY
echo PASS
