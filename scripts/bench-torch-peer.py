#!/usr/bin/python3
"""A peer for `gptj bench` (issue 15's comparison; not a test): GPT-J in PyTorch eager mode, computed the
way Hugging Face's modeling_gptj.py computes it (separate q/k/v/out projections without bias, GPT-J's
interleaved rotary on the first rotary_dim dims, float32 softmax attention over a concatenated KV cache,
fc_in -> gelu_new -> fc_out, ln_f, lm_head), float32 compute, weights read from the same checkpoint
(`model.safetensors`, float16 or float32; widened to float32 once at load).

Transformers itself is not installable on the project's machine (no registry for pip); Debian 12's
python3-torch (1.13) is. This is the same arithmetic as transformers' GPT-J forward, without its
generate() machinery, so it is if anything a little faster than transformers at the same settings.

Prints JSON lines like `gptj bench`: decode ms/step at each batch (context tokens, then median of
STEPS greedy steps: argmax of the last row, as gptj's timed steps also draw greedily), and prefill of
PREFILL tokens with lm_head on the last row only ("equal work" to gptj) and on every row (what
transformers' forward does).

Usage: /usr/bin/python3 scripts/bench-torch-peer.py MODEL_DIR [--threads 2] [--batches 1,8,32]
       [--context 32] [--steps 8] [--prefill 128]
"""
import argparse
import json
import math
import struct
import time

import torch


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    kinds = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=kinds[info["dtype"]])
        out[name] = t.view(info["shape"]).float()
    return out


def sinusoidal_positions(num_pos, dim):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64) / dim))
    angles = torch.einsum("i , j -> i j", torch.arange(num_pos, dtype=torch.int64).float(), inv_freq).float()
    return torch.sin(angles), torch.cos(angles)


def rotate_every_two(x):
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


def rotary(x, sin, cos):  # x [B, T, H, r]; sin/cos [T, r/2]
    sin = torch.repeat_interleave(sin[None, :, None, :], 2, 3)
    cos = torch.repeat_interleave(cos[None, :, None, :], 2, 3)
    return x * cos + rotate_every_two(x) * sin


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GptJ:
    def __init__(self, model_dir):
        self.c = json.load(open(f"{model_dir}/config.json"))
        self.w = read_safetensors(f"{model_dir}/model.safetensors")
        c = self.c
        self.n_head, self.head_dim = c["n_head"], c["n_embd"] // c["n_head"]
        self.sin, self.cos = sinusoidal_positions(c["n_positions"], c["rotary_dim"])
        self.eps = c.get("layer_norm_epsilon", 1e-5)

    def layer(self, i, x, past, start):
        w, p = self.w, f"transformer.h.{i}."
        B, T, E = x.shape
        h = torch.nn.functional.layer_norm(x, (E,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], self.eps)
        q = torch.nn.functional.linear(h, w[p + "attn.q_proj.weight"]).view(B, T, self.n_head, self.head_dim)
        k = torch.nn.functional.linear(h, w[p + "attn.k_proj.weight"]).view(B, T, self.n_head, self.head_dim)
        v = torch.nn.functional.linear(h, w[p + "attn.v_proj.weight"]).view(B, T, self.n_head, self.head_dim)
        r = self.c["rotary_dim"]
        sin, cos = self.sin[start:start + T], self.cos[start:start + T]
        q = torch.cat([rotary(q[..., :r], sin, cos), q[..., r:]], dim=-1).permute(0, 2, 1, 3)
        k = torch.cat([rotary(k[..., :r], sin, cos), k[..., r:]], dim=-1).permute(0, 2, 1, 3)
        v = v.permute(0, 2, 1, 3)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if T > 1:
            S = k.shape[-2]
            causal = torch.ones(T, S, dtype=torch.bool).tril(S - T)
            scores = torch.where(causal, scores, torch.tensor(torch.finfo(scores.dtype).min))
        attn = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(B, T, E)
        attn = torch.nn.functional.linear(attn, w[p + "attn.out_proj.weight"])
        mlp = torch.nn.functional.linear(h, w[p + "mlp.fc_in.weight"], w[p + "mlp.fc_in.bias"])
        mlp = torch.nn.functional.linear(gelu_new(mlp), w[p + "mlp.fc_out.weight"], w[p + "mlp.fc_out.bias"])
        return attn + mlp + x, (k, v)

    def forward(self, ids, past, start, last_row_only):
        w = self.w
        x = torch.nn.functional.embedding(ids, w["transformer.wte.weight"])
        new_past = []
        for i in range(self.c["n_layer"]):
            x, kv = self.layer(i, x, past[i] if past else None, start)
            new_past.append(kv)
        if last_row_only:
            x = x[:, -1:]
        x = torch.nn.functional.layer_norm(x, (x.shape[-1],), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"],
                                           self.eps)
        return torch.nn.functional.linear(x, w["lm_head.weight"], w["lm_head.bias"]), new_past


def median(xs):
    return sorted(xs)[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prefill", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = GptJ(a.model)
    common = {"peer": "torch-eager (transformers' GPT-J arithmetic)", "torch": torch.__version__,
              "threads": a.threads, "n_layer": model.c["n_layer"], "n_embd": model.c["n_embd"]}
    vocab = min(model.c["vocab_size"], 50000)
    with torch.inference_mode():
        for last_row_only in (True, False):
            times = []
            for rep in range(3):
                ids = torch.tensor([[(i * 7919 + rep * 104729) % vocab for i in range(a.prefill)]])
                start = time.perf_counter()
                logits, _ = model.forward(ids, None, 0, last_row_only)
                logits[:, -1].argmax(-1)
                times.append(time.perf_counter() - start)
            t = median(times)
            print(json.dumps({**common, "what": "prefill", "tokens": a.prefill, "ms": t * 1e3,
                              "tokens_per_s": a.prefill / t,
                              "lm_head_rows": "last" if last_row_only else "all"}), flush=True)
        for batch in map(int, a.batches.split(",")):
            ids = torch.tensor([[(i * 7919 + s * 104729) % vocab for i in range(a.context)] for s in range(batch)])
            logits, past = model.forward(ids, None, 0, True)
            token = logits[:, -1].argmax(-1, keepdim=True)
            times = []
            for step in range(a.steps):
                start = time.perf_counter()
                logits, past = model.forward(token, past, a.context + step, True)
                token = logits[:, -1].argmax(-1, keepdim=True)
                times.append(time.perf_counter() - start)
            ms = median(times) * 1e3
            print(json.dumps({**common, "what": "decode", "batch": batch, "context": a.context, "ms_per_step": ms,
                              "tokens_per_s": batch * 1e3 / ms}), flush=True)


if __name__ == "__main__":
    main()
