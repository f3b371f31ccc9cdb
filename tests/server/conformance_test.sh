#!/usr/bin/env bash
# Answers in the shapes openai/openai-openapi's spec requires (ids, refusal, logprobs, usage on
# every stream chunk, Model.created, system_fingerprint, error.code, Retry-After), and chat fields
# the server cannot honour (tools, response_format, ...) refused with a 400 naming them.
# The checks are in conformance.py.
source "$(dirname "$0")/common.sh" "$@"
start_server "$GPTJ" serve --model "$MODEL" --port 0 --max-body-bytes 65536 --max-queued 2
GPTJ_TEST_DATA="$DATA" python3 "$HERE/conformance.py" "$PORT" || fail "conformance checks"
echo PASS
