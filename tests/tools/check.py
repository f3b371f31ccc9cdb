#!/usr/bin/env python3
"""Checks for the shell tests (stdlib only; no numpy on a fresh machine).

  check.py logits OUT.npy EXPECTED.bin|OTHER.npy ROW_FIRST N_ROWS [TOL]
      OUT.npy ([N_ROWS, V] or [1, V] float32) equals rows ROW_FIRST.. of EXPECTED.bin within TOL.
  check.py greedy OUT.jsonl GREEDY.json [N_TOKENS]
      every line {"id": i, "tokens": [...]} equals results[i].new_tokens[:N_TOKENS].
  check.py ids-once OUT.jsonl N
      ids 0..N-1 each appear exactly once, every line is valid JSON.
  check.py prompt-logprobs OUT.jsonl ID EXPECTED_ALL.bin PROMPT_IDS ALLOWED [TOL]
      line ID's prompt_logprobs are [null, then log-softmax over ids < ALLOWED of EXPECTED_ALL.bin's
      row i - 1 at prompt token i] (the reference holds every position's logits), and its
      prompt_top_logprobs (when present) name the best ids of those rows.
"""
import array
import json
import math
import sys


def read_npy(path):
    with open(path, "rb") as f:
        assert f.read(6) == b"\x93NUMPY", path + ": not .npy"
        f.read(2)
        header_len = int.from_bytes(f.read(2), "little")
        header = f.read(header_len).decode()
        assert "'<f4'" in header, header
        shape = tuple(int(x) for x in header.split("(")[1].split(")")[0].split(",") if x.strip())
        data = array.array("f")
        data.frombytes(f.read())
    return shape, data


def check_logits(out, expected, row_first, n_rows, tol=1e-5):
    shape, got = read_npy(out)
    if expected.endswith(".npy"):  # another run's output
        _, ref = read_npy(expected)
    else:  # raw float32 reference (tests/data/*/expected)
        ref = array.array("f")
        with open(expected, "rb") as f:
            ref.frombytes(f.read())
    vocab = shape[-1]
    assert shape[0] == n_rows and len(got) == n_rows * vocab, f"{out}: shape {shape}, want [{n_rows}, V]"
    worst = 0.0
    for r in range(n_rows):
        base = (row_first + r) * vocab
        for v in range(vocab):
            diff = abs(got[r * vocab + v] - ref[base + v])
            if not diff <= worst:  # NaN propagates (max() would drop it) and fails below
                worst = diff
    if not worst <= tol:
        sys.exit(f"FAIL {out}: max abs logit error {worst:.3g} > {tol}")
    print(f"ok {out}: max abs error {worst:.3g}")


def check_greedy(out, greedy, n_tokens=None):
    results = json.load(open(greedy))["results"]
    seen = 0
    for line in open(out):
        d = json.loads(line)
        want = results[d["id"]]["new_tokens"]
        if n_tokens:
            want = want[: int(n_tokens)]
        if d.get("tokens") != want:
            sys.exit(f"FAIL {out}: id {d['id']}: tokens {d.get('tokens')} != golden {want}")
        seen += 1
    if seen != len(results):
        sys.exit(f"FAIL {out}: {seen} lines, want {len(results)}")
    print(f"ok {out}: {seen} greedy sequences identical to the golden tokens")


def check_ids_once(out, n):
    ids = [json.loads(line)["id"] for line in open(out)]
    missing = set(range(int(n))) - set(ids)
    dupes = {i for i in ids if ids.count(i) > 1}
    if missing or dupes or len(ids) != int(n):
        sys.exit(f"FAIL {out}: {len(ids)} lines, missing {sorted(missing)[:10]}, duplicated {sorted(dupes)[:10]}")
    print(f"ok {out}: each of {n} ids exactly once")


def check_prompt_logprobs(out, line_id, expected, prompt_ids, allowed, tol=1e-4):
    rows = {str(r["id"]): r for r in map(json.loads, open(out))}
    line = rows[line_id]
    prompt = [int(t) for t in prompt_ids.split(",")]
    ref = array.array("f")
    with open(expected, "rb") as f:
        ref.frombytes(f.read())
    vocab, allowed = len(ref) // len(prompt), int(allowed)
    got = line["prompt_logprobs"]
    if len(got) != len(prompt) or got[0] is not None:
        sys.exit(f"FAIL {out}: prompt_logprobs {got} for a {len(prompt)}-token prompt")
    worst = 0.0
    for i in range(1, len(prompt)):
        logits = ref[(i - 1) * vocab: (i - 1) * vocab + allowed]
        m = max(logits)
        norm = m + math.log(sum(math.exp(v - m) for v in logits))
        diff = abs(got[i] - (logits[prompt[i]] - norm))
        if not diff <= worst:
            worst = diff
        tops = line.get("prompt_top_logprobs")
        if tops:
            best = sorted(range(allowed), key=lambda t: (-logits[t], t))[: len(tops[i])]
            if [t for t, _ in tops[i]] != best:
                sys.exit(f"FAIL {out}: prompt token {i}: top ids {tops[i]} != {best}")
    if not worst <= float(tol):
        sys.exit(f"FAIL {out}: prompt logprobs off by {worst:.3g} > {tol}")
    print(f"ok {out}: {len(prompt) - 1} prompt logprobs within {worst:.3g} of log-softmax of the reference")


if __name__ == "__main__":
    what, rest = sys.argv[1], sys.argv[2:]
    if what == "logits":
        check_logits(rest[0], rest[1], int(rest[2]), int(rest[3]), *(float(x) for x in rest[4:]))
    elif what == "greedy":
        check_greedy(*rest)
    elif what == "ids-once":
        check_ids_once(*rest)
    elif what == "prompt-logprobs":
        check_prompt_logprobs(*rest)
    else:
        sys.exit("unknown check " + what)
