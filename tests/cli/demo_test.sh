#!/usr/bin/env bash
# The demo model (tests/data/demo-gptj, trained by scripts/train-demo.py): gptj computes the same
# model as the script's torch GPT-J (Hugging Face modeling_gptj.py's arithmetic). Against
# expected/reference.json: the prompt's tokens, the logits at every position (the saved ids, and each
# row's max and logsumexp over all 50400 ids) within 1e-3, and the greedy continuation token for token,
# at TP 1 and under mpirun at TP 2.
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
m=$DATA/demo-gptj/model
ref=$DATA/demo-gptj/expected/reference.json
field() { python3 -c "import json; v = json.load(open('$ref'))['$1']; print(','.join(map(str, v)) if isinstance(v, list) else v)"; }

want=$(field prompt_tokens)
got=$("$GPTJ" tokenize --model "$m" --text "$(field prompt)" | tr -d '[]')
[ "$got" = "$want" ] || fail "tokenize: $got != $want"

"$GPTJ" logits --model "$m" --tokens "$want" --all-positions --output "$WORK/logits.npy" || fail "gptj logits"
python3 - "$WORK/logits.npy" "$ref" <<'PY' || fail "logits differ from the torch reference"
import ast, json, math, struct, sys
raw = open(sys.argv[1], "rb").read()
assert raw[:6] == b"\x93NUMPY", "not an .npy file"
hlen = struct.unpack("<H", raw[8:10])[0]
header = ast.literal_eval(raw[10:10 + hlen].decode())
assert header["descr"] == "<f4" and not header["fortran_order"], header
rows, vocab = header["shape"]
data = struct.unpack(f"<{rows * vocab}f", raw[10 + hlen:])
ref = json.load(open(sys.argv[2]))
assert rows == len(ref["prompt_tokens"]) and vocab == 50400, (rows, vocab)
worst = 0.0
for p in range(rows):
    row = data[p * vocab:(p + 1) * vocab]
    mx = max(row)
    lse = mx + math.log(sum(math.exp(v - mx) for v in row))
    diffs = [abs(row[i] - want) for i, want in zip(ref["ids"], ref["logits"][p])]
    diffs += [abs(mx - ref["row_max"][p]), abs(lse - ref["row_logsumexp"][p])]
    worst = max(worst, max(diffs))
print(f"logits: {rows} positions x {len(ref['ids'])} ids + max + logsumexp, max |gptj - torch| = {worst:.2e}")
sys.exit(0 if worst <= 1e-3 else 1)
PY

want=$(field greedy_new_tokens)
greedy_n=$(python3 -c "import json; print(len(json.load(open('$ref'))['greedy_new_tokens']))")
# --temperature 0: the model's generation_config.json samples (do_sample, 0.9), and gptj generate
# takes its defaults from there (README: defaults from generation_config.json).
for np in 1 2; do
  if [ "$np" = 1 ]; then
    "$GPTJ" generate --model "$m" --tokens "$(field greedy_prompt_tokens)" --max-new-tokens "$greedy_n" --temperature 0 --json > "$WORK/g$np.json"
  else
    mpi 2 generate --model "$m" --tokens "$(field greedy_prompt_tokens)" --max-new-tokens "$greedy_n" --temperature 0 --json > "$WORK/g$np.json"
  fi || fail "generate at TP $np"
  got=$(python3 -c "import json; print(','.join(map(str, json.load(open('$WORK/g$np.json'))['tokens'])))")
  [ "$got" = "$want" ] || fail "greedy at TP $np: $got != reference $want"
done
echo "ok demo model: logits and greedy tokens ($greedy_n) equal the torch reference, TP 1 and 2"
