#!/usr/bin/env bash
# The main job on the small model the repository ships: installs what is missing, builds, then runs
# a batch generation over examples/demo-prompts.jsonl under mpirun with 2 tensor-parallel ranks on
# tests/data/demo-gptj (a 4-layer GPT-J trained for a few minutes on fortune-cookie text by
# scripts/train-demo.py: it writes readable, fortune-like English, not good English), prints the
# results, one `gptj generate`, and the throughput. Sampling as Hugging Face's GPT-J example
# (do_sample, temperature 0.9), with fixed seeds: the same text on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-build  # packages only; the demo needs just the gptj binary
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target gptj
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
model=tests/data/demo-gptj/model
out=${OUT_FILE:-demo-out.jsonl}
mpirun --oversubscribe -np 2 build/bin/gptj batch --model "$model" \
  --input examples/demo-prompts.jsonl --output "$out"
echo "--- results ($out; prompt + continuation)"
python3 - "$out" examples/demo-prompts.jsonl <<'PY'
import json, sys
prompts = {}
for line in open(sys.argv[2]):
    d = json.loads(line)
    prompts[d["id"]] = d.get("prompt", "")
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "error" in d:
        print(f"[{d['id']}] ERROR {d['error']}")
        continue
    texts = [s["text"] for s in d["samples"]] if "samples" in d else [d["text"]]
    for i, text in enumerate(texts):
        tag = f"{d['id']}" + (f" sample {i}" if len(texts) > 1 else "")
        print(f"[{tag}] {d['finish_reason']}, {d['completion_tokens']} tokens:")
        body = (prompts[d["id"]] + text).replace("<|endoftext|>", "").rstrip("\n").expandtabs(4)
        print("    " + body.replace("\n", "\n    "))
PY
echo "--- gptj generate (temperature 0.9, seed 5)"
prompt="The secret of life is"
printf '%s' "$prompt"
build/bin/gptj generate --model "$model" --prompt "$prompt" --max-new-tokens 48 --temperature 0.9 --seed 5
echo
echo "--- throughput (TP 2, demo model)"
mpirun --oversubscribe -np 2 build/bin/gptj bench --model "$model" --decode-batches 1,32 --no-bandwidth
