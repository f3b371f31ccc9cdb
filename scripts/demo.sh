#!/usr/bin/env bash
# The main job on the small model the repository ships: installs what is missing, builds, then runs
# a batch generation over examples/prompts.jsonl under mpirun with 2 tensor-parallel ranks and
# prints the results and the throughput. (tests/data/tiny-gptj-a has random weights: the
# continuations are gibberish by design; the machinery is the point. See README for GPT-J-6B.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
out=${OUT_FILE:-demo-out.jsonl}
mpirun --oversubscribe -np 2 build/bin/gptj batch --model tests/data/tiny-gptj-a/model \
  --input examples/prompts.jsonl --output "$out"
echo "--- results ($out)"
python3 - "$out" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "error" in d:
        print(f"{d['id']!s:>10}: ERROR {d['error']}")
    else:
        print(f"{d['id']!s:>10}: [{d['finish_reason']}, {d['completion_tokens']} tokens] {d['text']!r}")
PY
echo "--- throughput (TP 2, tiny model)"
mpirun --oversubscribe -np 2 build/bin/gptj bench --model tests/data/tiny-gptj-a/model --decode-batches 1,32 --no-bandwidth
