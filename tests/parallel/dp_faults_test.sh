#!/usr/bin/env bash
# No hang with data-parallel replicas, default timeouts: in a `gptj batch` job, kill -9 and SIGSTOP of
# a non-leader rank of replica 1 and of replica 1's leader (np 4, --tp 2), and SIGSTOP of a TP-1
# replica's only rank (np 2, --tp 1; only rank 0's replica link can notice) each end the whole job
# within 30 s, non-zero, with a message naming the rank; the lines finished before stay, and
# --resume completes the output with every id exactly once.
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
model=$DATA/tiny-gptj-a/model
prompts_jsonl tiny-gptj-a 32 160 > "$WORK/in.jsonl"

fault() {  # fault NAME NP TP RANK SIGNAL PATTERN
  local name=$1 np=$2 tp=$3 rank=$4 signal=$5 pattern=$6
  local out=$WORK/$name.jsonl err=$WORK/$name.err
  # --max-batch 2 keeps the job running long enough; --max-step-tokens 128 bounds the step
  # allowance the replicas announce to each other (replicas.h: 4 x measured cost per token x
  # --max-step-tokens; the tiny model's cost per token is mostly fixed per-step cost, so at the
  # default 4096 the announced allowance alone would pass 30 s).
  # Each stderr line is kept with the time it came (bash's $EPOCHREALTIME), so that a job that takes
  # too long says where the time went.
  rm -f "$WORK/stderr.fifo" && mkfifo "$WORK/stderr.fifo"
  while IFS= read -r line; do echo "$EPOCHREALTIME $line"; done < "$WORK/stderr.fifo" > "$err.timed" &
  local stamper=$!
  timeout -k 5 120 mpirun --oversubscribe -np $np "$GPTJ" batch --tp $tp --model "$model" --input "$WORK/in.jsonl" \
    --output "$out" --max-batch 2 --max-step-tokens 128 2> "$WORK/stderr.fifo" &
  local job=$!
  for _ in $(seq 600); do
    [ -f "$out" ] && [ "$(wc -l < "$out")" -ge 10 ] && break
    sleep 0.05
  done
  local pid
  pid=$(for p in $(pgrep -f "$out"); do
    tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=$rank && echo $p; done | head -1)
  [ -n "$pid" ] || { kill $job; fail "$name: could not find rank $rank"; }
  local start=$SECONDS stopped_at=$EPOCHREALTIME
  kill -$signal "$pid"
  wait $job
  local code=$? took=$((SECONDS - start))
  kill -CONT "$pid" 2>/dev/null
  wait $stamper
  cut -d' ' -f2- "$err.timed" > "$err"
  # (mpirun exits 137 itself when a rank was killed by SIGKILL; the timeout's 137 comes after 120 s.)
  [ $code -ne 0 ] && [ $code -ne 124 ] && [ $took -lt 100 ] || { tail -5 "$err"; fail "$name: exit $code after ${took}s"; }
  grep -Eq -- "$pattern" "$err" || { tail -20 "$err"; fail "$name: stderr lacks /$pattern/"; }
  [ $took -le 30 ] || {
    awk -v t0="$stopped_at" '$1 >= t0 { printf "  +%6.2f s  %s\n", $1 - t0, substr($0, length($1) + 2) }' "$err.timed" |
      grep -v "^ *+.*lines, .* tok/s, ETA" | cut -c1-200 | tail -25
    fail "$name: took ${took}s (limit 30 s; stderr after the SIG$signal above): $(grep -Em1 -- "$pattern" "$err")"
  }
  local kept
  kept=$(wc -l < "$out")
  echo "ok $name: exit $code ${took}s after SIG$signal of rank $rank, $kept lines kept: $(grep -Em1 -- "$pattern" "$err" | cut -c1-220)"
  mpi $np batch --tp $tp --model "$model" --input "$WORK/in.jsonl" --output "$out" --resume 2>/dev/null ||
    fail "$name: --resume"
  check ids-once "$out" 160
}

fault kill_worker 4 2 3 KILL "rank 3"
fault stop_worker 4 2 3 STOP "rank 2 \(replica 1\) on .*did not complete within|rank 3"
fault stop_leader 4 2 2 STOP "rank 2"
fault kill_leader 4 2 2 KILL "rank 2"
fault stop_tp1_replica 2 1 1 STOP "replica 1 \(leader rank 1 on .*\) sent nothing for [0-9]+ s"
echo PASS
