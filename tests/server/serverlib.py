"""Client helpers for the tests/server/*_test.sh scripts (Python standard library only)."""
import http.client
import json
import os
import re
import sys
import threading
import time

DATA = os.environ.get("GPTJ_TEST_DATA", "")


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def request(port, method, path, body=None, headers=None, timeout=60):
    """Returns (status, headers dict with lowercase names, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post_json(port, path, payload, headers=None, timeout=120):
    """POST JSON to `path`; returns (status, parsed JSON)."""
    status, _, body = request(port, "POST", path, payload, headers, timeout)
    try:
        return status, json.loads(body)
    except ValueError:
        fail("answer is not JSON (status %d): %r" % (status, body[:200]))


def complete(port, payload, headers=None, timeout=120):
    """POST /v1/completions; returns (status, parsed JSON)."""
    return post_json(port, "/v1/completions", payload, headers, timeout)


def stream(port, payload, timeout=120):
    """POST a stream: true completion; returns (list of chunk objects, saw [DONE])."""
    return stream_path(port, "/v1/completions", payload, timeout)


def stream_path(port, path, payload, timeout=120):
    """POST a stream: true request to `path`; returns (list of chunk objects, saw [DONE])."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=json.dumps(dict(payload, stream=True)),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        fail("stream answered %d: %r" % (resp.status, resp.read()[:300]))
    check(resp.getheader("Content-Type", "").startswith("text/event-stream"), "stream content type")
    chunks, done = [], False
    while True:
        raw = resp.readline()
        if not raw:
            break
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            continue
        check(line.startswith("data: "), "bad SSE line %r" % line)
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            break
        chunks.append(json.loads(data))
    conn.close()
    return chunks, done


def metrics(port):
    """GET /metrics as {'name{labels}': value}."""
    status, _, body = request(port, "GET", "/metrics")
    check(status == 200, "/metrics answered %d" % status)
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_for_metrics(port, predicate, what, seconds=20):
    """Polls /metrics until predicate(metrics) holds (bounded); returns those metrics."""
    import time
    deadline = time.time() + seconds
    while time.time() < deadline:
        m = metrics(port)
        if predicate(m):
            return m
        time.sleep(0.02)
    fail("timed out waiting for %s: %r" % (what, {k: v for k, v in metrics(port).items() if "kv" in k or "running" in k}))


def start_plain_and_stream(port, max_tokens, within=30):
    """Starts a plain and a streamed greedy completion of `max_tokens` tokens each and returns once
    both run (the stop tests signal the server then). Returns finish(what): it waits for both and
    checks that each ended whole (200 with every token; the stream with data: [DONE])."""
    out = {}
    payload = {"max_tokens": max_tokens, "temperature": 0}
    threads = [threading.Thread(target=lambda: out.update(plain=complete(port, dict(payload, prompt="hello")))),
               threading.Thread(target=lambda: out.update(stream=stream(port, dict(payload, prompt="world"))))]
    for t in threads:
        t.start()
    deadline = time.time() + within
    while metrics(port)["gptj_running_sequences"] < 2:
        check(time.time() < deadline, "the two requests never ran together")
        time.sleep(0.01)

    def finish(what, join_s=120):
        for t in threads:
            t.join(join_s)
        status, r = out.get("plain", (0, {}))
        check(status == 200 and len(r["choices"][0]["token_ids"]) == max_tokens,
              "plain request %s: %d %r" % (what, status, str(r)[:200]))
        chunks, done = out.get("stream", ([], False))
        check(done and sum(len(c["choices"][0]["token_ids"]) for c in chunks) == max_tokens,
              "stream %s: %d chunks, [DONE] %s" % (what, len(chunks), done))
    return finish


def golden(data_dir, count=16):
    """The fixture's token prompts and their first `count` greedy tokens (Hugging Face)."""
    prompts = json.load(open(os.path.join(data_dir, "gptj_prompts.json")))["models"]["tiny-gptj-a"]["prompts"]
    greedy = json.load(open(os.path.join(data_dir, "tiny-gptj-a", "expected", "greedy.json")))["results"]
    check(len(prompts) == len(greedy), "fixture prompts and greedy results differ in number")
    for prompt, result in zip(prompts, greedy):
        check(result["prompt_ids"] == prompt, "fixture prompt mismatch")
    return [(prompts[i], r["new_tokens"][:count]) for i, r in enumerate(greedy)]


def concurrent_golden(port, count, max_tokens=16):
    """`count` greedy completions of the fixture's prompts at once (odd ones streamed), all started
    together; fails unless each returns Hugging Face's tokens."""
    cases = golden(DATA)
    results, errors = [None] * count, []
    start = threading.Barrier(count, timeout=60)

    def worker(i):
        prompt, expected = cases[i % len(cases)]
        try:
            start.wait()
            if i % 2:
                chunks, done = stream(port, {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
                got = [t for c in chunks for t in c["choices"][0]["token_ids"]] if done else None
            else:
                status, r = complete(port, {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
                got = r["choices"][0]["token_ids"] if status == 200 else None
            results[i] = (got, expected)
        except Exception as e:  # reported below
            errors.append("request %d: %r" % (i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    check(not any(t.is_alive() for t in threads), "requests still running after 180 s")
    check(not errors, "; ".join(errors[:5]))
    for i, (got, expected) in enumerate(results):
        check(got == expected, "request %d: tokens %r != expected %r" % (i, got, expected))


# --- raw HTTP over a socket, for checks where the bytes on the wire matter ---

def raw_connect(port, timeout=60):
    import socket
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def raw_request_bytes(method, path, body=b"", headers=None, version="HTTP/1.1", host=True):
    """One request's bytes; `headers` is a list of (name, value); a Host line unless host=False."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    lines = ["%s %s %s" % (method, path, version)]
    if host:
        lines.append("Host: 127.0.0.1")
    for name, value in headers or []:
        lines.append("%s: %s" % (name, value))
    if body:
        lines += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawResponse:
    def __init__(self, version, status, headers, body, interim):
        self.version, self.status, self.headers, self.body = version, status, headers, body
        self.interim = interim  # statuses of the 1xx answers before this one

    def header(self, name):
        """The values of header `name` (any case), in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            fail("answer is not JSON (status %d): %r" % (self.status, self.body[:200]))


def read_response(reader, method="POST"):
    """Reads one response from `reader` (sock.makefile("rb")), skipping 1xx answers: by
    Content-Length, chunked coding, or up to the close. None if the connection ends first."""
    interim = []
    while True:
        line = reader.readline()
        if not line:
            return None
        version, status = line.split(b" ", 2)[:2]
        status = int(status)
        headers = []
        while True:
            h = reader.readline()
            check(h, "connection ended inside the headers")
            if h in (b"\r\n", b"\n"):
                break
            name, value = h.decode("latin-1").split(":", 1)
            headers.append((name.strip(), value.strip()))
        if 100 <= status < 200:
            interim.append(status)
            continue
        break
    r = RawResponse(version.decode(), status, headers, b"", interim)
    te = [v.lower() for v in r.header("Transfer-Encoding")]
    if method == "HEAD" or status in (204, 304):
        return r
    if te and te[-1] == "chunked":
        body = b""
        while True:
            size = int(reader.readline().split(b";")[0], 16)
            if size == 0:
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += reader.read(size)
            reader.readline()
        r.body = body
    elif r.header("Content-Length"):
        r.body = reader.read(int(r.header("Content-Length")[0]))
    else:
        r.body = reader.read()  # close-delimited
    return r


def raw_exchange(port, data, shut_wr=False, count=1, timeout=120):
    """Sends `data` on a new connection (then half-closes it if shut_wr), reads `count` responses
    and returns them (fewer if the connection ends early)."""
    import socket
    s = raw_connect(port, timeout)
    try:
        s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        reader = s.makefile("rb")
        out = []
        for _ in range(count):
            r = read_response(reader)
            if r is None:
                break
            out.append(r)
        return out
    finally:
        s.close()


def sse_events(body):
    """The data: payloads of a server-sent event stream, in order (the last is usually '[DONE]')."""
    out = []
    for line in body.decode("utf-8").split("\n"):
        line = line.rstrip("\r")
        if line:
            check(line.startswith("data: "), "bad SSE line %r" % line)
            out.append(line[len("data: "):])
    return out
