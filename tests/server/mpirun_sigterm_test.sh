#!/usr/bin/env bash
# `kill -TERM <mpirun>` on `mpirun -np 2 gptj serve`, the way users and schedulers stop a job:
# OpenMPI's mpirun passes SIGTERM to the ranks after odls_base_sigkill_timeout (T) seconds and
# SIGKILLs them T seconds later, so with T set as README.md says (--drain-timeout + 5 s) the server
# drains. Three clients send requests one after another until one is refused: every request taken
# finishes (200 with every token; streams end with `data: [DONE]`), some of them still running when
# the server stopped accepting; rank 0 says "stopped"; mpirun exits 0 or 1 (OpenMPI 4.1 exits 1 for
# a job it was asked to end, even when every rank exits 0). With OpenMPI's default T (1 s) the
# requests in flight are cut off: this test fails.
source "$(dirname "$0")/common.sh" "$@"
command -v mpirun >/dev/null || fail "mpirun not found"
export OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_odls_base_sigkill_timeout=25
start_server mpirun --allow-run-as-root --oversubscribe -np 2 "$GPTJ" serve --model "$MODEL" --backend cpu \
  --port 0 --drain-timeout 20
! grep -q "warning: mpirun kills" "$WORK/server.log" || fail "warned about the kill delay although it is long enough"
python3 - "$PORT" "$SERVER_PID" <<'PY'
import http.client, json, os, signal, sys, threading, time
from serverlib import check, metrics
port, mpirun = int(sys.argv[1]), int(sys.argv[2])
MAX_TOKENS = 1000
results, refused = [], []  # results: (kind, status, tokens, done, finished_at)
lock = threading.Lock()

def one(kind):
    started = time.time()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = {"prompt": "hello world", "max_tokens": MAX_TOKENS, "temperature": 0, "stream": kind == "stream"}
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        with lock: refused.append(time.time())  # the listening socket is closed: the drain began
        return
    if resp.status == 503:  # connected just before the socket closed: refused as shutting down
        resp.read()
        with lock:
            if time.time() - started < 5:
                refused.append(time.time())
            else:  # taken, then dropped: fails below
                results.append((kind, 503, 0, False, time.time()))
        return
    tokens, done, status = 0, False, resp.status
    try:
        if kind == "stream":
            for raw in resp:
                line = raw.decode().strip()
                if line == "data: [DONE]":
                    done = True
                    break
                if line.startswith("data: "):
                    tokens += len(json.loads(line[6:])["choices"][0].get("token_ids", []))
        else:
            tokens = len(json.loads(resp.read())["choices"][0]["token_ids"])
    except (OSError, ValueError, KeyError, http.client.HTTPException):  # cut off, or an error event
        status = -1
    with lock: results.append((kind, status, tokens, done, time.time()))

# Three clients, each sending one request after another until the server refuses one: about 25 s
# after SIGTERM to mpirun the ranks get theirs and the drain begins with three requests in flight.
stop_by = time.time() + 90
def client(kinds):
    i = 0
    while not refused and time.time() < stop_by:
        one(kinds[i % len(kinds)])
        i += 1
threads = [threading.Thread(target=client, args=(kinds,)) for kinds in (["stream"], ["plain"], ["stream", "plain"])]
for t in threads: t.start()
deadline = time.time() + 30
while metrics(port)["gptj_running_sequences"] < 3:
    check(time.time() < deadline, "the first three requests never ran together")
    time.sleep(0.01)
os.kill(mpirun, signal.SIGTERM)
killed = time.time()
for t in threads: t.join(90)
check(refused, "the server still took requests 90 s after SIGTERM to mpirun")
print("%d requests taken, the first refused %.1f s after SIGTERM to mpirun" % (len(results), refused[0] - killed))
for kind, status, tokens, done, _ in results:
    check(status == 200 and tokens == MAX_TOKENS and (done or kind == "plain"),
          "a %s request taken before the drain: status %d, %d tokens, [DONE] %s" % (kind, status, tokens, done))
check(len(results) > 2 and max(r[4] for r in results) > refused[0],
      "no request was still running when the server stopped accepting")
print("every request taken finished; streams ended with [DONE]")
PY
wait_server_exit 60
[ "$SERVER_CODE" = 0 ] || [ "$SERVER_CODE" = 1 ] || fail "mpirun exit code $SERVER_CODE after SIGTERM (want 0 or 1)"
grep -q "gptj serve: stopped" "$WORK/server.log" || fail "rank 0 did not finish its drain ('stopped' line missing)"
echo PASS
