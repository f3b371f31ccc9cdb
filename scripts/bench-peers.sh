#!/usr/bin/env bash
# gptj against a peer on the same weights, same machine, same run (issue 15's comparison; not a test):
# ROUNDS interleaved rounds of `gptj bench` and scripts/bench-torch-peer.py (PyTorch eager computing
# transformers' GPT-J arithmetic in float32; Debian's python3-torch), THREADS threads each, then a
# table of medians: decode ms/step and tok/s at each batch, prefill tok/s (gptj computes lm_head on
# the last row; the peer both ways: "last" is equal work) and prefill GFLOP/s at equal work.
# Quote ratios from one run of this script, with the machine and `cpu_isa`.
# Usage: scripts/bench-peers.sh MODEL_DIR [ROUNDS]  (env: THREADS=2 BATCHES=1,8,32 STEPS=8
#        GPTJ_FLAGS="" (e.g. "--dtype bfloat16"), GPTJ=build/bin/gptj, PYTHON=/usr/bin/python3)
set -euo pipefail
MODEL=${1:?usage: $0 MODEL_DIR [ROUNDS]}
ROUNDS=${2:-3}
HERE=$(dirname "$0")
GPTJ=${GPTJ:-$HERE/../build/bin/gptj}
PYTHON=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-2} BATCHES=${BATCHES:-1,8,32} STEPS=${STEPS:-8}
"$PYTHON" -c "import torch" 2>/dev/null || { echo "bench-peers: $PYTHON has no torch (apt-get install python3-torch)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for round in $(seq "$ROUNDS"); do
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=$THREADS "$GPTJ" bench --model "$MODEL" --decode-batches "$BATCHES" --steps "$STEPS" ${GPTJ_FLAGS:-} \
    2> "$WORK/err" | sed "s/^{/{\"who\":\"gptj\",\"round\":$round,/" | tee -a "$WORK/all.jsonl" || { cat "$WORK/err"; exit 1; }
  "$PYTHON" "$HERE/bench-torch-peer.py" "$MODEL" --threads "$THREADS" --batches "$BATCHES" --steps "$STEPS" \
    2> "$WORK/err" | sed "s/^{/{\"who\":\"torch\",\"round\":$round,/" | tee -a "$WORK/all.jsonl" || { cat "$WORK/err"; exit 1; }
done
"$PYTHON" - "$WORK/all.jsonl" "$MODEL/config.json" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
c = json.load(open(sys.argv[2]))
med = lambda xs: statistics.median(xs) if xs else float("nan")
def pick(who, what, **kw):
    return [r for r in rows if r["who"] == who and r["what"] == what and all(r.get(k) == v for k, v in kw.items())]
isa = next((r["cpu_isa"] for r in rows if "cpu_isa" in r), "?")
weights = next((r["weights"] for r in rows if "weights" in r), "?")
print(f"\ngptj: weights {weights}, cpu_isa {isa}; peer: torch {next(r['torch'] for r in rows if 'torch' in r)} float32")
print("| figure | gptj | peer | gptj / peer speed |")
print("|---|---|---|---|")
for b in sorted({r["batch"] for r in rows if r["what"] == "decode"}):
    g = med([r["ms_per_step"] for r in pick("gptj", "decode", batch=b)])
    t = med([r["ms_per_step"] for r in pick("torch", "decode", batch=b)])
    extra = ""
    if b == 1:
        ratio = med([r["ratio_to_floor"] for r in pick("gptj", "decode", batch=1) if "ratio_to_floor" in r])
        extra = f" ({ratio:.2f}x the read bound)"
    print(f"| decode b{b} ms/step (tok/s) | {g:.2f} ({b * 1e3 / g:.0f}){extra} | {t:.2f} ({b * 1e3 / t:.0f}) | {t / g:.2f}x |")
g = med([r["tokens_per_s"] for r in pick("gptj", "prefill")])
t_last = med([r["tokens_per_s"] for r in pick("torch", "prefill", lm_head_rows="last")])
t_all = med([r["tokens_per_s"] for r in pick("torch", "prefill", lm_head_rows="all")])
# FLOPs per prefill token at equal work: every layer's matrices (q, k, v, out, fc_in, fc_out), 2 per
# weight; lm_head once per prompt (the last row) is left out; attention is left out.
e, inner = c["n_embd"], c.get("n_inner") or 4 * c["n_embd"]
flop_per_token = 2 * c["n_layer"] * (4 * e * e + 2 * e * inner)
print(f"| prefill 128 tok/s, lm_head last row (equal work) | {g:.0f} ({g * flop_per_token / 1e9:.0f} GFLOP/s) | "
      f"{t_last:.0f} ({t_last * flop_per_token / 1e9:.0f} GFLOP/s) | {g / t_last:.2f}x |")
print(f"| prefill 128 tok/s, peer's lm_head on every row | | {t_all:.0f} | |")
PY
