#!/usr/bin/env bash
# The threshold search (runtime/generate/draw_search.h) under real mpirun at np 1, 2 and 4: seeded
# samples with top-p 0.5/0.9/0.99, top-k 1/50/100/1000/50400, mixes and penalties give exactly the
# tokens, and the logprobs (1e-5), of the full-row reference path (GPTJ_SAMPLING_FULL_ROWS=1, which
# gathers and sorts each row on rank 0), on a flat model (tiny-gptj-a: nuclei of thousands of ids)
# and a peaked one (tiny-gptj-b-peaked); and the search path fetches no row (its debug count).
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"

for model in tiny-gptj-a tiny-gptj-b-peaked; do
  dir=$DATA/$model/model
  python3 - "$model" > "$WORK/in.jsonl" <<'PY'
import json, sys
prompts = {"tiny-gptj-a": [464, 3139, 286, 4881, 318], "tiny-gptj-b-peaked": [932, 17, 5, 400, 932, 17]}[sys.argv[1]]
settings = [{"top_p": 0.5}, {"top_p": 0.9}, {"top_p": 0.99}, {"top_k": 1}, {"top_k": 50}, {"top_k": 100},
            {"top_k": 1000}, {"top_k": 50400},
            {"top_k": 1000, "top_p": 0.9, "repetition_penalty": 1.2, "no_repeat_ngram_size": 2},
            {"top_p": 0.99, "temperature": 0.7, "presence_penalty": 0.5, "frequency_penalty": 0.3}]
for i, s in enumerate(settings):
    line = {"id": i, "tokens": prompts, "max_new_tokens": 8, "temperature": 1.0, "seed": 40 + i, "logprobs": 1, "n": 2}
    line.update(s)
    print(json.dumps(line))
PY
  for np in 1 2 4; do
    echo "== $model at TP $np"
    mpi $np --log-level debug batch --model "$dir" --input "$WORK/in.jsonl" --output "$WORK/search.jsonl" 2> "$WORK/search.log"
    grep -q "full logit rows fetched" "$WORK/search.log" || fail "no sampling counts in the log"
    grep "threshold-search rounds" "$WORK/search.log"
    grep -q " 0 full logit rows fetched" "$WORK/search.log" || fail "the search path fetched rows"
    grep -q "sampling: 0 draws searched" "$WORK/search.log" && fail "no draw used the threshold search"
    GPTJ_SAMPLING_FULL_ROWS=1 mpi $np batch --model "$dir" --input "$WORK/in.jsonl" --output "$WORK/rows.jsonl" 2>/dev/null
    python3 - "$WORK/search.jsonl" "$WORK/rows.jsonl" <<'PY'
import json, sys
def load(path):
    out = {}
    for r in map(json.loads, open(path)):
        assert "error" not in r, r
        out[r["id"]] = [(s["tokens"], s["token_logprobs"]) for s in r["samples"]]
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert len(a) == 10 and a.keys() == b.keys()
for i in a:
    for (ta, la), (tb, lb) in zip(a[i], b[i]):
        assert ta == tb, "line %s: search %s vs full row %s" % (i, ta, tb)
        assert all(abs(x - y) <= 1e-5 for x, y in zip(la, lb)), "line %s: logprobs %s vs %s" % (i, la, lb)
PY
  done
done
echo PASS
