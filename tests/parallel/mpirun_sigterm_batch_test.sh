#!/usr/bin/env bash
# `kill -TERM <mpirun>` on `mpirun -np 2 gptj batch`: OpenMPI's mpirun passes SIGTERM to the ranks
# after odls_base_sigkill_timeout seconds (2 here) and SIGKILLs them as long after that. Rank 0 stops
# after the current step ("stopped by signal 15"), every line written is whole, mpirun exits 1
# (OpenMPI 4.1 for a job it was asked to end; 0 accepted too), and --resume writes each id once.
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
model=$DATA/tiny-gptj-a/model
N=600  # at --max-batch 1, ~15 s of work here: far more than the 2 s before the ranks get SIGTERM
prompts_jsonl tiny-gptj-a 64 $N > "$WORK/in.jsonl"
out=$WORK/out.jsonl
OMPI_MCA_odls_base_sigkill_timeout=2 mpirun --oversubscribe -np 2 "$GPTJ" batch --model "$model" \
  --input "$WORK/in.jsonl" --output "$out" --max-batch 1 2> "$WORK/run.err" &
pid=$!
wait_for_lines "$out" 5 || fail "no 5 lines written within 30 s"
kill -TERM $pid
for _ in $(seq 600); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done  # 2 x 2 s expected
kill -0 $pid 2>/dev/null && { kill -9 $pid; fail "mpirun still running 60 s after SIGTERM"; }
wait $pid
code=$?
cat "$WORK/run.err"
[ $code -eq 0 ] || [ $code -eq 1 ] || fail "mpirun exit $code after SIGTERM (want 1, or 0)"
grep -q "stopped by signal 15" "$WORK/run.err" || fail "rank 0 did not stop after its step (no 'stopped by signal 15')"
lines=$(wc -l < "$out")
[ "$lines" -lt $N ] || fail "the job finished before the signal reached the ranks"
python3 -c "import json, sys; [json.loads(l) for l in open(sys.argv[1])]" "$out" || fail "a torn or invalid line in the output"
echo "stopped with $lines whole lines"
mpi 2 batch --model "$model" --input "$WORK/in.jsonl" --output "$out" --resume 2> "$WORK/resume.err" ||
  { cat "$WORK/resume.err"; fail "--resume after SIGTERM to mpirun"; }
check ids-once "$out" $N || fail "ids after --resume"
echo PASS
