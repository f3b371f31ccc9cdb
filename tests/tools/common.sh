# Shared by the shell tests: mpirun flags for root and small machines, prompts, a timeout wrapper.
# Usage: source common.sh "$GPTJ" "$DATA"
GPTJ=$1
DATA=$2
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
WORK=$(mktemp -d)
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT

mpi() {  # mpi N args...: gptj under real mpirun with N ranks, killed after 120 s
  local n=$1
  shift
  timeout -k 5 120 mpirun --oversubscribe -np "$n" "$GPTJ" "$@"
}

prompt() {  # prompt MODEL INDEX -> comma-separated ids
  python3 -c "import json,sys; print(','.join(map(str, json.load(open('$DATA/gptj_prompts.json'))['models']['$1']['prompts'][$2])))"
}

allowed_vocab() {  # allowed_vocab MODEL_DIR -> ids a sampler may pick: the tokenizer's 50257, else vocab_size
  if [ -e "$1/vocab.json" ]; then echo 50257; else
    python3 -c "import json, sys; print(json.load(open(sys.argv[1] + '/config.json'))['vocab_size'])" "$1"; fi
}

prompts_jsonl() {  # prompts_jsonl MODEL MAX_NEW [COUNT] > file: the 4 golden prompts as batch input
  # (COUNT lines, ids 0..COUNT-1, going round the golden prompts; default: each once)
  python3 -c "
import json
prompts = json.load(open('$DATA/gptj_prompts.json'))['models']['$1']['prompts']
for i in range(${3:-0} or len(prompts)):
    print(json.dumps({'id': i, 'tokens': prompts[i % len(prompts)], 'max_new_tokens': $2}))"
}

wait_for_lines() {  # wait_for_lines FILE N: until FILE has N lines (at most 30 s)
  for _ in $(seq 600); do
    [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
  return 1
}

check() { python3 "$TOOLS/check.py" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
