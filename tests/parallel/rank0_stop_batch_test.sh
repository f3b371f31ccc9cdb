#!/usr/bin/env bash
# No hang when rank 0 stops between steps: `gptj batch` at np 2 reads streamed input from a FIFO; once
# the first lines are done rank 0 waits for more input (no step in flight) and is SIGSTOPped there.
# With default flags the worker, which hears from rank 0 at least every 4 s (keepalives), ends the
# job within 30 s naming rank 0; the finished lines are kept and --resume completes the output.
# Then: --resume reads the output before the model loads (its scan is no silence of rank 0).
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
model=$DATA/tiny-gptj-a/model
prompts_jsonl tiny-gptj-a 8 40 > "$WORK/all.jsonl"
head -12 "$WORK/all.jsonl" > "$WORK/first.jsonl"
mkfifo "$WORK/in.fifo"
exec 3<>"$WORK/in.fifo"  # held open: gptj sees a writer that has more to say, not the end
timeout -k 5 120 mpirun --oversubscribe -np 2 "$GPTJ" batch --model "$model" --input "$WORK/in.fifo" \
  --output "$WORK/out.jsonl" --max-batch 4 2> "$WORK/run.err" &
job=$!
cat "$WORK/first.jsonl" >&3
for _ in $(seq 600); do
  [ -f "$WORK/out.jsonl" ] && [ "$(wc -l < "$WORK/out.jsonl")" -ge 12 ] && break
  sleep 0.1
done
[ "$(wc -l < "$WORK/out.jsonl" 2>/dev/null || echo 0)" -ge 12 ] || { cat "$WORK/run.err"; fail "the first 12 lines did not finish"; }
rank0=$(for p in $(pgrep -f "$WORK/out.jsonl"); do
  tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=0 && echo $p; done | head -1)
[ -n "$rank0" ] || fail "could not find rank 0"
sleep 1  # rank 0 is now in its idle wait for input
kill -STOP "$rank0"
stopped=$SECONDS
wait $job
code=$? took=$((SECONDS - stopped))
exec 3>&-
kill -CONT "$rank0" 2>/dev/null  # in case it outlived the job
[ $code -ne 0 ] && [ $code -ne 124 ] && [ $code -ne 137 ] || { cat "$WORK/run.err"; fail "exit $code (124/137: hung until the timeout)"; }
pattern="rank 1 on .*: no word from rank 0 for [0-9]+ s \(stopped, hung or unreachable\); ending the job"
grep -Eq "$pattern" "$WORK/run.err" || { cat "$WORK/run.err"; fail "no message naming rank 0's silence"; }
[ $took -le 30 ] || fail "took ${took}s from SIGSTOP to exit (limit 30 s)"
kept=$(wc -l < "$WORK/out.jsonl")
[ "$kept" -ge 12 ] || fail "only $kept lines kept"
echo "ok: exit $code ${took}s after SIGSTOP, $kept lines kept: $(grep -Em1 "$pattern" "$WORK/run.err")"
mpi 2 batch --model "$model" --input "$WORK/all.jsonl" --output "$WORK/out.jsonl" --resume 2>/dev/null || fail "resume"
check ids-once "$WORK/out.jsonl" 40

# --resume reads (and repairs) the output before the model loads, so the scan of a long output is not
# taken for rank 0's silence by workers that have loaded; seen here as a locked output failing before
# any model is looked at (the model path is bad too).
exec 4>>"$WORK/out.jsonl"
flock -n 4 || fail "could not lock the output"
mpi 2 batch --model "$WORK/nomodel" --input "$WORK/all.jsonl" --output "$WORK/out.jsonl" --resume 2> "$WORK/locked.err"
code=$?
exec 4>&-
[ $code -ne 0 ] && [ $code -ne 124 ] && [ $code -ne 137 ] || { cat "$WORK/locked.err"; fail "locked output: exit $code"; }
grep -q "is locked by another running gptj batch" "$WORK/locked.err" || { cat "$WORK/locked.err"; fail "--resume did not check the output before the model"; }
echo "ok: --resume checks the output before the model loads"
echo PASS
