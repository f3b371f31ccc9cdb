#!/usr/bin/env bash
# A batch job killed with SIGKILL mid-run, then resumed with --resume, at np 1 and np 2: every id
# appears exactly once, greedy results equal the golden tokens, bad lines get error lines.
# Also: SIGTERM stops the job cleanly (exit 143) and --resume completes it.
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
model=$DATA/tiny-gptj-a/model
N=160

python3 - "$DATA" $N > "$WORK/in.jsonl" <<'PY'
import json, sys
prompts = json.load(open(sys.argv[1] + "/gptj_prompts.json"))["models"]["tiny-gptj-a"]["prompts"]
for i in range(int(sys.argv[2])):
    if i % 40 == 13:
        print('{"id": %d, "tokens": "not a list"}' % i)   # a bad line: error line, job goes on
    elif i % 40 == 27:
        print(json.dumps({"id": i, "tokens": [5] * 2100}))  # longer than n_positions: error line
    else:
        print(json.dumps({"id": i, "tokens": prompts[i % 4], "max_new_tokens": 32}))
print("not json: an id-less line gets one error line, never repeated by --resume")
PY

verify() {  # verify OUT: ids 0..N-1 once each; good lines golden, bad lines errors
  python3 - "$1" "$DATA/tiny-gptj-a/expected/greedy.json" $N <<'PY' || exit 1
import json, sys
out, greedy, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
golden = [r["new_tokens"] for r in json.load(open(greedy))["results"]]
lines = [json.loads(l) for l in open(out)]
idless = [d for d in lines if d["id"] is None]
assert len(idless) == 1 and idless[0]["line"] == n + 1 and "not valid JSON" in idless[0]["error"], idless
lines = [d for d in lines if d["id"] is not None]
ids = [d["id"] for d in lines]
assert sorted(ids) == list(range(n)), f"ids not each exactly once: {len(ids)} lines, {len(set(ids))} distinct"
for d in lines:
    if d["id"] % 40 == 13:
        assert "field 'tokens'" in d["error"], d
    elif d["id"] % 40 == 27:
        assert "the prompt has 2100 tokens" in d["error"], d
    else:
        assert d["tokens"] == golden[d["id"] % 4], f"id {d['id']} differs from golden"
print(f"ok {out}: {n} ids exactly once, all golden")
PY
}

for np in 1 2; do
  out=$WORK/out$np.jsonl
  # Start in its own process group so SIGKILL takes mpirun and every rank at once.
  setsid bash -c "exec mpirun --oversubscribe -np $np '$GPTJ' batch --model '$model' --input '$WORK/in.jsonl' \
      --output '$out' --max-batch 2" 2> "$WORK/run$np.err" &
  pid=$!
  for _ in $(seq 600); do
    [ -f "$out" ] && [ "$(wc -l < "$out")" -ge 20 ] && break
    sleep 0.05
  done
  kill -9 -- -$pid 2>/dev/null
  wait $pid 2>/dev/null
  before=$(wc -l < "$out")
  [ "$before" -lt $N ] || fail "np $np: the job finished before it could be killed"
  echo "killed np $np job with $before lines written"
  mpi $np batch --model "$model" --input "$WORK/in.jsonl" --output "$out" --resume 2> "$WORK/resume$np.err" \
    || { cat "$WORK/resume$np.err"; fail "np $np: resume failed"; }
  grep -q "skipped as already done" "$WORK/resume$np.err" || fail "np $np: no summary line"
  verify "$out"
done

# SIGTERM: the job stops after the current step with exit 143, then --resume completes it.
out=$WORK/term.jsonl
"$GPTJ" batch --model "$model" --input "$WORK/in.jsonl" --output "$out" --max-batch 2 2> "$WORK/term.err" &
pid=$!
for _ in $(seq 600); do
  [ -f "$out" ] && [ "$(wc -l < "$out")" -ge 10 ] && break
  sleep 0.05
done
kill -TERM $pid
wait $pid
code=$?
[ $code -eq 143 ] || { cat "$WORK/term.err"; fail "SIGTERM: exit $code, want 143"; }
grep -q "rerun with --resume" "$WORK/term.err" || fail "SIGTERM: no resume hint"
"$GPTJ" batch --model "$model" --input "$WORK/in.jsonl" --output "$out" --resume 2>/dev/null || fail "resume after SIGTERM"
verify "$out"
echo PASS
