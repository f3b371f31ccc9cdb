#!/usr/bin/env bash
# HTTP details over raw sockets: a half-closed client still gets its answer (plain, streamed,
# pipelined); a client that pipelines a request and closes cancels the one running; HTTP/1.0 gets a
# close-delimited stream, not chunked coding; Host is required in HTTP/1.1 only; the Bearer scheme
# is case-insensitive. The checks are in http_edge.py.
source "$(dirname "$0")/common.sh" "$@"
echo "edge-key" >"$WORK/key"
start_server "$GPTJ" serve --model "$MODEL" --port 0 --api-key-file "$WORK/key"
GPTJ_TEST_DATA="$DATA" python3 "$HERE/http_edge.py" "$PORT" edge-key || fail "HTTP edge checks"
echo PASS
