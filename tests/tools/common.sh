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

prompts_jsonl() {  # prompts_jsonl MODEL MAX_NEW [COUNT] > file: the 4 golden prompts as batch input
  # (COUNT lines, ids 0..COUNT-1, cycling through the prompts; default: each prompt once)
  python3 -c "
import json
prompts = json.load(open('$DATA/gptj_prompts.json'))['models']['$1']['prompts']
for i in range(${3:-len(prompts)}):
    print(json.dumps({'id': i, 'tokens': prompts[i % len(prompts)], 'max_new_tokens': $2}))"
}

check() { python3 "$TOOLS/check.py" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
