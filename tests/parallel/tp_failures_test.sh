#!/usr/bin/env bash
# No hangs: a TP size that does not divide n_head, a rank that throws mid-run, and ranks started
# with different arguments each end the whole job fast, non-zero, with a message naming the cause.
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
model=$DATA/tiny-gptj-a/model
p7=$(prompt tiny-gptj-a 1)

expect_failure() {  # expect_failure NAME PATTERN MAX_SECONDS command...
  local name=$1 pattern=$2 limit=$3
  shift 3
  local start=$SECONDS
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
  local code=$? took=$((SECONDS - start))
  [ $code -ne 0 ] || fail "$name: exit code 0"
  [ $code -ne 124 ] && [ $code -ne 137 ] || fail "$name: hung (killed by timeout)"
  grep -q -- "$pattern" "$WORK/$name.err" || { cat "$WORK/$name.err"; fail "$name: stderr lacks '$pattern'"; }
  [ $took -le $limit ] || fail "$name: took ${took}s (limit ${limit}s)"
  echo "ok $name: exit $code in ${took}s: $(grep -m1 -- "$pattern" "$WORK/$name.err")"
}

# np 3 on a 4-head model: every rank says why, before reading weights.
expect_failure np3 "3 ranks cannot split the model's 4 attention heads" 30 \
  mpi 3 logits --model "$model" --tokens "$p7" --output "$WORK/x.npy"

# A worker rank throws at its 5th step in the middle of a batch job.
prompts_jsonl tiny-gptj-a 32 > "$WORK/in.jsonl"
expect_failure fault "rank 1 on .*fault injected" 30 \
  env GPTJ_FAULT_INJECT=rank=1,step=5 timeout -k 5 120 mpirun --oversubscribe -np 2 -x GPTJ_FAULT_INJECT \
  "$GPTJ" batch --model "$model" --input "$WORK/in.jsonl" --output "$WORK/fault.jsonl"

# Rank 0 throws: same.
expect_failure fault0 "rank 0 on .*fault injected" 30 \
  env GPTJ_FAULT_INJECT=rank=0,step=3 timeout -k 5 120 mpirun --oversubscribe -np 2 -x GPTJ_FAULT_INJECT \
  "$GPTJ" batch --model "$model" --input "$WORK/in.jsonl" --output "$WORK/fault0.jsonl"

# Ranks given different models (MPMD launch).
expect_failure mismatch "ranks were started with different arguments" 30 \
  timeout -k 5 120 mpirun --oversubscribe -np 1 "$GPTJ" logits --model "$model" --tokens 1,2 --output "$WORK/a.npy" : \
  -np 1 "$GPTJ" logits --model "$DATA/tiny-gptj-b/model" --tokens 1,2 --output "$WORK/a.npy"

# Bad input on a single rank: one clear line, non-zero exit.
expect_failure badtoken "token id 99999 outside the vocabulary" 30 \
  "$GPTJ" logits --model "$model" --tokens 1,99999 --output "$WORK/b.npy"
expect_failure nomodel "no config.json there" 30 \
  "$GPTJ" logits --model "$WORK" --tokens 1 --output "$WORK/b.npy"
mkdir -p "$WORK/noweights" && cp "$model/config.json" "$WORK/noweights/"
expect_failure noweights "no model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json" 30 \
  "$GPTJ" logits --model "$WORK/noweights" --tokens 1 --output "$WORK/b.npy"

# A rank stopped with SIGSTOP mid-job: with default flags the step watchdog ends the job within 30 s;
# finished lines are kept and --resume completes the output.
python3 - "$DATA" > "$WORK/long.jsonl" <<'PY'
import json, sys
prompts = json.load(open(sys.argv[1] + "/gptj_prompts.json"))["models"]["tiny-gptj-a"]["prompts"]
for i in range(120):
    print(json.dumps({"id": i, "tokens": prompts[i % 4], "max_new_tokens": 32}))
PY
start=$SECONDS
timeout -k 5 120 mpirun --oversubscribe -np 2 "$GPTJ" batch --model "$model" --input "$WORK/long.jsonl" \
  --output "$WORK/stopped.jsonl" --max-batch 2 2> "$WORK/stopped.err" &
job=$!
for _ in $(seq 600); do
  [ -f "$WORK/stopped.jsonl" ] && [ "$(wc -l < "$WORK/stopped.jsonl")" -ge 10 ] && break
  sleep 0.05
done
rank1=$(for p in $(pgrep -f "$WORK/stopped.jsonl"); do
  tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && echo $p; done | head -1)
[ -n "$rank1" ] || fail "sigstop: could not find rank 1"
kill -STOP "$rank1"
wait $job
code=$? took=$((SECONDS - start))
[ $code -ne 0 ] && [ $code -ne 124 ] && [ $code -ne 137 ] || { cat "$WORK/stopped.err"; fail "sigstop: exit $code"; }
grep -Eq "did not complete within [0-9]+ s" "$WORK/stopped.err" || { cat "$WORK/stopped.err"; fail "sigstop: no watchdog message"; }
# Rank 0's watchdog names the stopped rank: at np 2 the step's only other rank.
grep -Eq "rank 0 on .*the other rank of this step \(rank 1 on [^)]*\) is stopped" "$WORK/stopped.err" ||
  { cat "$WORK/stopped.err"; fail "sigstop: rank 0's message does not name rank 1"; }
[ $took -le 30 ] || fail "sigstop: took ${took}s"
kept=$(wc -l < "$WORK/stopped.jsonl")
echo "ok sigstop: exit $code in ${took}s with $kept lines kept: $(grep -m1 "did not complete" "$WORK/stopped.err")"
mpi 2 batch --model "$model" --input "$WORK/long.jsonl" --output "$WORK/stopped.jsonl" --resume 2>/dev/null || fail "sigstop: resume"
check ids-once "$WORK/stopped.jsonl" 120
echo PASS
