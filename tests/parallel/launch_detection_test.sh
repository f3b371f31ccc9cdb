#!/usr/bin/env bash
# Which processes start MPI (parallel/world.cc): only those a launcher started. Checked with the
# launchers' environment variables, no launcher needed:
#  - srun's variables for several tasks but no PMI's (srun --mpi=none): refused with the fix named,
#    instead of N unrelated single-rank copies of the job;
#  - one Slurm task without a PMI: a plain single process (TP 1), as without Slurm;
#  - the --log-level info layout line names the launcher ("single" without mpirun/srun).
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
model=$DATA/tiny-gptj-a/model
tokenize=(tokenize --model "$model" --text "Hello world")

env -u PMIX_RANK -u PMI_RANK -u OMPI_COMM_WORLD_SIZE SLURM_STEP_ID=0 SLURM_STEP_NUM_TASKS=2 SLURM_PROCID=1 \
  "$GPTJ" "${tokenize[@]}" > "$WORK/out" 2> "$WORK/err"
code=$?
[ $code -ne 0 ] || fail "2 Slurm tasks without a PMI: exit 0, want a refusal"
grep -q "srun started 2 tasks without a PMI.*srun --mpi=pmix" "$WORK/err" || fail "no clear refusal: $(cat "$WORK/err")"

env SLURM_STEP_ID=0 SLURM_STEP_NUM_TASKS=1 SLURM_PROCID=0 "$GPTJ" "${tokenize[@]}" > "$WORK/out" 2> "$WORK/err" ||
  fail "one Slurm task without a PMI: $(cat "$WORK/err")"
[ "$(cat "$WORK/out")" = "[15496,995]" ] || fail "one Slurm task: tokenize printed $(cat "$WORK/out")"

"$GPTJ" --log-level info generate --model "$model" --prompt "Hello" --max-new-tokens 1 > /dev/null 2> "$WORK/err" ||
  fail "generate: $(cat "$WORK/err")"
grep -q "launcher single, 1 rank(s)" "$WORK/err" || fail "layout line: $(grep launcher "$WORK/err")"
echo PASS
