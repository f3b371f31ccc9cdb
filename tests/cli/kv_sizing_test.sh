#!/usr/bin/env bash
# gptj generate and gptj logits size the KV pool to the run (issue 15): --n sequences of prompt +
# max_new_tokens positions (at most n_positions), in whole blocks, per rank — not 1 GiB's worth —
# unless --kv-blocks or --kv-memory-gb is given. The output is the golden one, the run is never
# preempted for want of blocks, ranks under mpirun agree, and a too-small --kv-blocks still ends in
# its one line. Reads the debug lines "... N KV blocks of B (why)" and "generate: peak P of N KV
# blocks used, K preemptions".
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
a=$DATA/tiny-gptj-a/model
b=$DATA/tiny-gptj-b/model
d=$DATA/demo-gptj/model  # n_positions 256

gen() {  # gen NAME args...: generate at debug level; stdout in $WORK/NAME.out, stderr in $WORK/NAME.err
  local name=$1
  shift
  "$GPTJ" --log-level debug generate "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" ||
    fail "generate $name: $(tail -3 "$WORK/$name.err")"
}
expect_pool() {  # expect_pool NAME "N KV blocks of B (why)"
  grep -qF "$2" "$WORK/$1.err" || fail "$1: wanted '$2', got: $(grep -o '[0-9]* KV blocks of.*' "$WORK/$1.err")"
}
expect_no_preemption() {  # expect_no_preemption NAME: the pool held the whole run
  grep -q "generate: peak [0-9]* of [0-9]* KV blocks used, 0 preemptions" "$WORK/$1.err" ||
    fail "$1: $(grep -o 'generate: peak.*' "$WORK/$1.err" || echo 'no peak line')"
}

# Greedy golden tokens of prompt 2 of tiny-gptj-b (33 tokens): 33 + 12 positions = 3 blocks of 16.
p2=$(prompt tiny-gptj-b 2)
want=$(python3 -c "import json; print(','.join(map(str, json.load(open('$DATA/tiny-gptj-b/expected/greedy.json'))['results'][2]['new_tokens'][:12])))")
gen golden --model "$b" --tokens "$p2" --max-new-tokens 12
[ "$(cat "$WORK/golden.out")" = "$want" ] || fail "sized pool: $(cat "$WORK/golden.out") != golden $want"
expect_pool golden "3 KV blocks of 16 (what the run needs: 1 x 45 positions)"
expect_no_preemption golden
# The budget and an explicit count give the same tokens.
gen budget --model "$b" --tokens "$p2" --max-new-tokens 12 --kv-memory-gb 0.01
[ "$(cat "$WORK/budget.out")" = "$want" ] || fail "--kv-memory-gb: $(cat "$WORK/budget.out") != golden $want"
grep -q "KV blocks of 16 (0.01 GiB)" "$WORK/budget.err" || fail "--kv-memory-gb is not the budget: $(cat "$WORK/budget.err")"
gen explicit --model "$b" --tokens "$p2" --max-new-tokens 12 --kv-blocks 40
[ "$(cat "$WORK/explicit.out")" = "$want" ] || fail "--kv-blocks: $(cat "$WORK/explicit.out") != golden $want"
expect_pool explicit "40 KV blocks of 16 (--kv-blocks)"
echo "ok generate: one sequence"

# --n 3 at block size 4: 3 x ceil((2 + 9) / 4) = 9 blocks; the samples are those of a 1 GiB pool.
gen n3 --model "$a" --prompt "Hello there" --max-new-tokens 9 --temperature 1 --seed 5 --n 3 --block-size 4 --json
expect_pool n3 "9 KV blocks of 4 (what the run needs: 3 x 11 positions)"
expect_no_preemption n3
gen n3big --model "$a" --prompt "Hello there" --max-new-tokens 9 --temperature 1 --seed 5 --n 3 --block-size 4 --json \
  --kv-memory-gb 1
cmp -s "$WORK/n3.out" "$WORK/n3big.out" || fail "--n 3: sized pool $(cat "$WORK/n3.out") != 1 GiB pool $(cat "$WORK/n3big.out")"
# max_new_tokens past n_positions: the pool stops at n_positions (256 / 16 = 16 blocks).
gen long --model "$d" --tokens 1,2,3 --max-new-tokens 100000 --temperature 0
expect_pool long "16 KV blocks of 16 (what the run needs: 1 x 256 positions)"
expect_no_preemption long
echo "ok generate: samples, n_positions"

# Two ranks size the same pool and give the one-rank tokens.
if command -v mpirun > /dev/null; then
  mpi 2 --log-level debug generate --model "$b" --tokens "$p2" --max-new-tokens 12 > "$WORK/tp2.out" 2> "$WORK/tp2.err" ||
    fail "generate at TP 2: $(tail -3 "$WORK/tp2.err")"
  [ "$(cat "$WORK/tp2.out")" = "$want" ] || fail "TP 2: $(cat "$WORK/tp2.out") != golden $want"
  expect_pool tp2 "3 KV blocks of 16 (what the run needs: 1 x 45 positions)"
  echo "ok generate: TP 2"
fi

# A too-small explicit pool still ends in its one line, with no output: 3 blocks hold the prompt
# (33 + 1) but not the 33 + 20 positions.
"$GPTJ" generate --model "$b" --tokens "$p2" --max-new-tokens 20 --kv-blocks 3 > "$WORK/small.out" 2> "$WORK/small.err" &&
  fail "--kv-blocks 3 accepted: $(cat "$WORK/small.out")"
grep -q "KV cache too small: one sequence of .* tokens needs more than 3 blocks" "$WORK/small.err" ||
  fail "too-small pool message: $(cat "$WORK/small.err")"
[ "$(wc -l < "$WORK/small.err")" = 1 ] || fail "too-small pool: more than one line: $(cat "$WORK/small.err")"
[ ! -s "$WORK/small.out" ] || fail "too-small pool printed output: $(cat "$WORK/small.out")"
echo "ok generate: too-small --kv-blocks"
# With --n the samples need a private last block each: 3 blocks hold the 33-token prompt and its
# next token (34 positions: 3 blocks) but not 4 more samples (7 blocks). Refused at once in one
# line; this once looped forever (nothing running, the request never admitted).
timeout 30 "$GPTJ" generate --model "$b" --tokens "$p2" --n 5 --max-new-tokens 4 --kv-blocks 3 > "$WORK/n5.out" 2> "$WORK/n5.err"
code=$?
[ $code -ne 124 ] || fail "--n 5 with --kv-blocks 3: still running after 30 s"
[ $code -ne 0 ] || fail "--n 5 with --kv-blocks 3 accepted: $(cat "$WORK/n5.out")"
grep -q "the prompt with n = 5 needs 7 KV blocks but the cache has 3" "$WORK/n5.err" ||
  fail "--n 5 too-small pool message: $(cat "$WORK/n5.err")"
[ "$(wc -l < "$WORK/n5.err")" = 1 ] || fail "--n 5 too-small pool: more than one line: $(cat "$WORK/n5.err")"
echo "ok generate: --n 5 with too small a --kv-blocks is refused at once"

# logits: ceil(5 / 4) = 2 blocks of 4; the same logits as from a 1 GiB pool; --kv-blocks 1 is refused.
"$GPTJ" --log-level debug logits --model "$b" --tokens 1,2,3,4,5 --block-size 4 --prefill 2 --all-positions \
  --output "$WORK/l.npy" 2> "$WORK/logits.err" || fail "logits: $(tail -3 "$WORK/logits.err")"
expect_pool logits "2 KV blocks of 4 (what the run needs: 1 x 5 positions)"
"$GPTJ" logits --model "$b" --tokens 1,2,3,4,5 --block-size 4 --prefill 2 --all-positions --kv-memory-gb 1 \
  --output "$WORK/lbig.npy" || fail "logits --kv-memory-gb 1"
cmp -s "$WORK/l.npy" "$WORK/lbig.npy" || fail "logits differ between the sized pool and 1 GiB"
"$GPTJ" logits --model "$b" --tokens 1,2,3,4,5 --block-size 4 --kv-blocks 1 --output "$WORK/l1.npy" 2> "$WORK/l1.err" &&
  fail "logits --kv-blocks 1 accepted"
grep -q -- "--tokens needs 2 KV blocks; raise --kv-blocks" "$WORK/l1.err" || fail "logits message: $(cat "$WORK/l1.err")"
echo "ok logits"
