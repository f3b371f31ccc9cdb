#!/usr/bin/env python3
"""Bounded load test for `gptj serve` on loopback (a benchmark, not a test; stdlib only).

  serve_load.py PORT [--concurrency 1,8,32] [--requests 64] [--max-tokens 32]

For each concurrency level, that many client threads send streaming completions until --requests
have finished; prints one JSON line per level: requests/s, generated tokens/s, p50/p99 latency and
time to first token (first streamed text chunk)."""
import argparse
import http.client
import json
import statistics
import threading
import time


def one_request(port, max_tokens, prompt):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    first, tokens = None, 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if first is None and chunk.get("choices") and chunk["choices"][0].get("text"):
            first = time.perf_counter() - start
    conn.close()
    return time.perf_counter() - start, first or 0.0, tokens


def level(port, concurrency, total, max_tokens):
    latencies, ttfts, tokens = [], [], [0]
    lock = threading.Lock()
    counter = iter(range(total))

    def worker(k):
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            lat, ttft, n = one_request(port, max_tokens, f"Request {i} from client {k}: the weather today is")
            with lock:
                latencies.append(lat)
                ttfts.append(ttft)
                tokens[0] += n

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else xs[0]
    return {"concurrency": concurrency, "requests": total, "requests_per_s": total / wall,
            "generated_tokens_per_s": tokens[0] / wall, "latency_p50_ms": 1e3 * q(latencies, 50),
            "latency_p99_ms": 1e3 * q(latencies, 99), "ttft_p50_ms": 1e3 * q(ttfts, 50),
            "ttft_p99_ms": 1e3 * q(ttfts, 99)}


def wait_until_ready(port, seconds=300):
    # The server listens before the model is loaded; /health turns 200 when every rank is ready.
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready after {seconds} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    wait_until_ready(args.port)
    for c in map(int, args.concurrency.split(",")):
        print(json.dumps(level(args.port, c, max(args.requests, c), args.max_tokens)), flush=True)
