#!/usr/bin/python3
"""Trains tests/data/demo-gptj: a tiny GPT-J that writes English-looking fortune-cookie text.

Run once by a developer (not by the README, not by CI); the result is committed. Needs only Debian 12
packages:

    apt-get install -y python3-torch python3-regex fortunes   # Debian's python3, not a pyenv one
    /usr/bin/python3 scripts/train-demo.py [--minutes 12] [--threads 2] [--out tests/data/demo-gptj]

Corpus: the plain-text fortune files of Debian's `fortunes` package (fortune-mod's data, in
/usr/share/games/fortunes; see /usr/share/doc/fortunes/copyright), the files named in CORPUS_FILES
below: one training document per `%`-separated fortune, each followed by <|endoftext|> (50256).
ASCII-art files and the offensive set (a separate package, fortunes-off) are not used.

Tokenizer: GPT-2's byte-level BPE (vocab.json + merges.txt from tests/data/tiny-gptj-a/model), re-implemented
below in pure Python (it gives Hugging Face's GPT-2 ids; the gptj binary's tokenizer is checked
against them in the repository's tests).

Model: GPT-J exactly as Hugging Face's modeling_gptj.py computes it (GPTJModel + GPTJForCausalLM):
each block h = attn(ln_1(x)) + mlp(ln_1(x)) + x; q/k/v/out_proj without bias; rotary embedding on
the first rotary_dim dims of each q/k head with GPT-J's interleaved pairing (rotate_every_two) and
sin/cos from create_sinusoidal_positions; causal softmax attention in fp32 with scores divided by
sqrt(head_dim); MLP fc_in -> gelu_new -> fc_out (with biases); ln_f; lm_head with bias.

Vocabulary: the checkpoint has GPT-J's 50400 rows. To make a few minutes of training on 2 CPU cores
enough, training runs over the tokens that occur in the corpus only (a compact id space); on export,
every other row of wte and lm_head.weight is zero and its lm_head.bias is UNUSED_BIAS, so those
tokens are never predicted (their logits are about UNUSED_BIAS) and embed to zero when they are in a
prompt. The exported model is an ordinary GPT-J checkpoint; nothing in gptj knows about this.
The loss is a sampled softmax (the TOP_K most frequent ids plus the batch's targets, logQ-corrected);
the validation loss printed every 200 steps is the full softmax over the corpus' ids. Training stops
at --minutes (12: 1,373 steps of 16 x 64 tokens on a shared 2-core machine for the committed model).

Writes into --out: model/{config.json, generation_config.json, model.safetensors (fp16), vocab.json,
merges.txt} and expected/reference.json: the logits of the checkpoint as written (read back; fp32
compute by the torch GPT-J below) for a fixed prompt, and its greedy continuation, for
tests/cli/demo_test.sh (--reference-only rewrites just that file from an existing model/).
"""
import argparse
import json
import math
import os
import random
import shutil
import struct
import sys
import time

import regex
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORTUNES = "/usr/share/games/fortunes"
# Plain-text English prose and quotations; not ascii-art/art (pictures), debian/perl/knghtbrd
# (IRC and mailing-list logs), disclaimer, ethnic, paradoxum, pratchett.
CORPUS_FILES = ["computers", "cookie", "definitions", "drugs", "education", "food", "fortunes",
                "goedel", "humorists", "kids", "law", "linuxcookie", "literature", "love", "magic",
                "medicine", "men-women", "miscellaneous", "news", "people", "pets", "platitudes",
                "politics", "riddles", "science", "songs-poems", "sports", "startrek", "tao", "linux",
                "wisdom", "work", "zippy"]
EOT = 50256
VOCAB = 50400
UNUSED_BIAS = -60.0
TOP_K = 1024
CONFIG = dict(n_embd=64, n_layer=4, n_head=4, rotary_dim=16, n_positions=256)
REFERENCE_PROMPT = "A friend in need is a friend indeed, and the early bird gets the worm, but the second mouse"
GREEDY_PROMPT = "A friend in need"
GREEDY_TOKENS = 48


# ---- GPT-2 byte-level BPE (as Hugging Face's GPT2Tokenizer) ----------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Gpt2Bpe:
    PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def __init__(self, vocab_path, merges_path):
        self.encoder = json.load(open(vocab_path, encoding="utf-8"))
        self.decoder = {v: k for k, v in self.encoder.items()}
        lines = open(merges_path, encoding="utf-8").read().split("\n")
        merges = [tuple(l.split()) for l in lines[1:] if l.strip()]
        self.ranks = dict(zip(merges, range(len(merges))))
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token)
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, _ = min(pairs)
            if rank == math.inf:
                break
            first = min(pairs)[1]
            a, b = word[first], word[first + 1]
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = word
        return word

    def encode(self, text):
        ids = []
        for piece in self.PAT.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids

    def decode(self, ids):
        text = "".join(self.decoder.get(i, "") for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")


# ---- GPT-J (Hugging Face modeling_gptj.py, inference without cache) ---------------------------------

def create_sinusoidal_positions(num_pos, dim):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64) / dim))
    sinusoid_inp = torch.einsum("i , j -> i j", torch.arange(num_pos, dtype=torch.int64).float(), inv_freq).float()
    return torch.cat((torch.sin(sinusoid_inp), torch.cos(sinusoid_inp)), dim=1)


def rotate_every_two(x):
    x1 = x[:, :, :, ::2]
    x2 = x[:, :, :, 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary_pos_emb(tensor, sin, cos):
    sin = torch.repeat_interleave(sin[:, :, None, :], 2, 3)
    cos = torch.repeat_interleave(cos[:, :, None, :], 2, 3)
    return (tensor * cos) + (rotate_every_two(tensor) * sin)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["n_embd"]
        self.n_head, self.head_dim, self.rotary_dim = c["n_head"], d // c["n_head"], c["rotary_dim"]
        self.ln_1 = torch.nn.LayerNorm(d, eps=1e-5)
        self.q_proj = torch.nn.Linear(d, d, bias=False)
        self.k_proj = torch.nn.Linear(d, d, bias=False)
        self.v_proj = torch.nn.Linear(d, d, bias=False)
        self.out_proj = torch.nn.Linear(d, d, bias=False)
        self.fc_in = torch.nn.Linear(d, 4 * d)
        self.fc_out = torch.nn.Linear(4 * d, d)

    def attn(self, x, sincos):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_head, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_head, self.head_dim).permute(0, 2, 1, 3)
        sin, cos = torch.split(sincos[None, :T], sincos.shape[-1] // 2, dim=-1)
        r = self.rotary_dim
        q = torch.cat([apply_rotary_pos_emb(q[..., :r], sin, cos), q[..., r:]], dim=-1).permute(0, 2, 1, 3)
        k = torch.cat([apply_rotary_pos_emb(k[..., :r], sin, cos), k[..., r:]], dim=-1).permute(0, 2, 1, 3)
        w = torch.matmul(q.float(), k.float().transpose(-1, -2))
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        w = w / torch.sqrt(torch.tensor(self.head_dim, dtype=torch.float32))
        w = torch.softmax(w, dim=-1).to(v.dtype)
        out = torch.matmul(w, v).permute(0, 2, 1, 3).reshape(B, T, -1)
        return self.out_proj(out)

    def forward(self, x, sincos):
        h = self.ln_1(x)
        return self.attn(h, sincos) + self.fc_out(gelu_new(self.fc_in(h))) + x


class GptJ(torch.nn.Module):
    def __init__(self, c, vocab):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, c["n_embd"])
        self.h = torch.nn.ModuleList(Block(c) for _ in range(c["n_layer"]))
        self.ln_f = torch.nn.LayerNorm(c["n_embd"], eps=1e-5)
        self.lm_head = torch.nn.Linear(c["n_embd"], vocab)
        self.register_buffer("sincos", create_sinusoidal_positions(c["n_positions"], c["rotary_dim"]),
                             persistent=False)
        for m in self.modules():  # GPTJPreTrainedModel._init_weights, initializer_range 0.02
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.data.normal_(0.0, 0.02)
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.data.zero_()

    def hidden(self, ids):
        x = self.wte(ids)
        for block in self.h:
            x = block(x, self.sincos)
        return self.ln_f(x)

    def forward(self, ids):
        return self.lm_head(self.hidden(ids)).float()


# ---- checkpoint -----------------------------------------------------------------------------------

def hf_state(model):
    """The model's tensors under Hugging Face GPT-J's names."""
    out = {"transformer.wte.weight": model.wte.weight}
    for i, b in enumerate(model.h):
        p = f"transformer.h.{i}."
        out.update({p + "ln_1.weight": b.ln_1.weight, p + "ln_1.bias": b.ln_1.bias,
                    p + "attn.q_proj.weight": b.q_proj.weight, p + "attn.k_proj.weight": b.k_proj.weight,
                    p + "attn.v_proj.weight": b.v_proj.weight, p + "attn.out_proj.weight": b.out_proj.weight,
                    p + "mlp.fc_in.weight": b.fc_in.weight, p + "mlp.fc_in.bias": b.fc_in.bias,
                    p + "mlp.fc_out.weight": b.fc_out.weight, p + "mlp.fc_out.bias": b.fc_out.bias})
    out.update({"transformer.ln_f.weight": model.ln_f.weight, "transformer.ln_f.bias": model.ln_f.bias,
                "lm_head.weight": model.lm_head.weight, "lm_head.bias": model.lm_head.bias})
    return out


def write_safetensors(path, tensors):
    """safetensors: u64 LE header length, JSON header {name: dtype, shape, data_offsets}, then data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float16).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F16", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def hf_config(c):
    return {"activation_function": "gelu_new", "architectures": ["GPTJForCausalLM"], "attn_pdrop": 0.0,
            "bos_token_id": EOT, "embd_pdrop": 0.0, "eos_token_id": EOT, "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-05, "model_type": "gptj", "n_embd": c["n_embd"], "n_head": c["n_head"],
            "n_inner": None, "n_layer": c["n_layer"], "n_positions": c["n_positions"], "resid_pdrop": 0.0,
            "rotary_dim": c["rotary_dim"], "tie_word_embeddings": False, "torch_dtype": "float16",
            "transformers_version": "4.47.0", "use_cache": True, "vocab_size": VOCAB}


# ---- corpus and training --------------------------------------------------------------------------

def load_corpus(tok):
    docs = []
    for name in CORPUS_FILES:
        path = os.path.join(FORTUNES, name)
        if not os.path.exists(path):
            sys.exit(f"train-demo: {path} is missing (apt-get install -y fortunes)")
        text = open(path, encoding="utf-8", errors="replace").read()
        docs += [d.strip("\n") for d in regex.split(r"(?m)^%\n", text) if d.strip()]
    random.Random(0).shuffle(docs)
    ids = []
    for d in docs:
        ids += tok.encode(d + "\n") + [EOT]
    return docs, ids


def sample(model, tok, to_compact, from_compact, prompt, n, temperature=0.9, gen=None):
    ids = [to_compact[i] for i in tok.encode(prompt)]
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[-CONFIG["n_positions"]:]]))[0, -1]
            nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
            if from_compact[nxt] == EOT:
                break
            ids.append(nxt)
    return tok.decode([from_compact[i] for i in ids])


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F16", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.float16).view(info["shape"])
    return out


def write_reference(tok, out_dir, train_info):
    """expected/reference.json from the checkpoint as written (read back from model/): the logits
    at every position of REFERENCE_PROMPT for the top 10 ids of each position and a few fixed ids
    (some never in the corpus), each row's max and logsumexp over all 50400 ids, and the greedy
    continuation of GREEDY_PROMPT up to GREEDY_TOKENS tokens or <|endoftext|> (kept, as gptj does)."""
    mdir, edir = os.path.join(out_dir, "model"), os.path.join(out_dir, "expected")
    os.makedirs(edir, exist_ok=True)
    c = json.load(open(os.path.join(mdir, "config.json")))
    full = GptJ(c, c["vocab_size"])
    targets = hf_state(full)
    with torch.no_grad():
        for name, t in read_safetensors(os.path.join(mdir, "model.safetensors")).items():
            targets[name].copy_(t.float())
    full.eval()
    with torch.no_grad():
        prompt = tok.encode(REFERENCE_PROMPT)
        logits = full(torch.tensor([prompt]))[0]
        picked = sorted(set(torch.topk(logits, 10, dim=-1).indices.flatten().tolist()) |
                        {0, 13, 198, 262, 464, EOT, 50300, VOCAB - 1})
        greedy = tok.encode(GREEDY_PROMPT)
        new = []
        while len(new) < GREEDY_TOKENS and (not new or new[-1] != EOT):
            new.append(int(full(torch.tensor([greedy + new]))[0, -1].argmax()))
    ref = {"note": "written by scripts/train-demo.py: its torch GPT-J on model/ (fp16 weights, fp32 compute)",
           "torch": torch.__version__, "prompt": REFERENCE_PROMPT, "prompt_tokens": prompt, "ids": picked,
           "logits": [[round(float(logits[p, i]), 6) for i in picked] for p in range(len(prompt))],
           "row_max": [round(float(v), 6) for v in logits.max(-1).values],
           "row_logsumexp": [round(float(v), 6) for v in torch.logsumexp(logits, -1)],
           "greedy_prompt": GREEDY_PROMPT, "greedy_prompt_tokens": tok.encode(GREEDY_PROMPT),
           "greedy_new_tokens": new, "greedy_text": tok.decode(new), "training": train_info}
    json.dump(ref, open(os.path.join(edir, "reference.json"), "w"), indent=1)
    size = sum(os.path.getsize(os.path.join(mdir, f)) for f in os.listdir(mdir))
    print(f"{mdir}: {size / 1e6:.1f} MB; wrote {edir}/reference.json")
    print("greedy:", repr(GREEDY_PROMPT + tok.decode(new)))
    ident = list(range(VOCAB))
    for p in ("You will", "The best way to"):
        print("sample:", repr(sample(full, tok, ident, ident, p, 60, gen=torch.Generator().manual_seed(7))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=12.0, help="training time budget (minutes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(REPO, "tests/data/demo-gptj"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reference-only", action="store_true",
                    help="no training: rewrite expected/reference.json from the model/ already in --out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokdir = os.path.join(REPO, "tests/data/tiny-gptj-a/model")
    tok = Gpt2Bpe(os.path.join(tokdir, "vocab.json"), os.path.join(tokdir, "merges.txt"))
    if args.reference_only:
        old = os.path.join(args.out, "expected", "reference.json")
        write_reference(tok, args.out, json.load(open(old)).get("training") if os.path.exists(old) else None)
        return

    t0 = time.time()
    docs, ids = load_corpus(tok)
    used = sorted(set(ids))
    to_compact = {t: i for i, t in enumerate(used)}
    from_compact = used
    data = torch.tensor([to_compact[t] for t in ids])
    n_val = len(data) // 50
    val, train = data[:n_val], data[n_val:]
    print(f"corpus: {len(docs)} fortunes from {len(CORPUS_FILES)} files, {len(ids)} tokens, "
          f"{len(used)} distinct ids ({time.time() - t0:.0f} s)", flush=True)

    c = CONFIG
    model = GptJ(c, len(used))
    # The model's rows are the corpus' ids only (compact ids); export widens them to 50400.
    seq, batch = 64, 16  # small steps: many updates matter more than big batches in a 12-minute run
    counts = torch.bincount(train, minlength=len(used)).double()
    top_ids = torch.argsort(counts, descending=True)[:TOP_K]
    log_q = torch.log1p(-(1 - counts / counts.sum()).pow(batch * seq)).clamp(min=-30).float()
    log_q[top_ids] = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.95), weight_decay=0.01)
    budget = args.minutes * 60
    start, step, gen = time.time(), 0, torch.Generator().manual_seed(args.seed)
    vloss = float("nan")

    def batch_of(src):
        at = torch.randint(0, len(src) - seq - 1, (batch,), generator=gen)
        x = torch.stack([src[i:i + seq + 1] for i in at.tolist()])
        return x[:, :-1], x[:, 1:]

    while True:
        frac = (time.time() - start) / budget
        if frac >= 1:
            break
        lr = 5e-3 * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch_of(train)
        # Sampled softmax: the candidates are the TOP_K most frequent ids plus every target of the
        # batch; each candidate's logit less log(its chance of being a candidate) (1 for the top ids,
        # 1 - (1 - p)^(batch * seq) for the rest), which keeps the estimate of the full softmax's
        # gradient about unbiased (Jean et al. 2015) at about a tenth of the cost of 29k-way logits.
        cand = torch.unique(torch.cat([top_ids, y.reshape(-1)]))
        where = torch.empty(len(used), dtype=torch.long)
        where[cand] = torch.arange(len(cand))
        h = model.hidden(x).view(-1, c["n_embd"])
        logits = h @ model.lm_head.weight[cand].t() + model.lm_head.bias[cand] - log_q[cand]
        loss = F.cross_entropy(logits, where[y.reshape(-1)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            with torch.no_grad():
                model.eval()
                vx, vy = batch_of(val)  # full softmax
                vloss = F.cross_entropy(model(vx).view(-1, len(used)), vy.reshape(-1)).item()
                model.train()
            print(f"step {step} {time.time() - start:.0f} s lr {lr:.2e} train {loss.item():.3f} val {vloss:.3f}",
                  flush=True)
        if step % 600 == 0:
            print("  sample:", repr(sample(model, tok, to_compact, from_compact, "You will", 40, gen=gen)), flush=True)
    train_s = time.time() - start
    print(f"trained {step} steps ({step * batch * seq} tokens) in {train_s:.0f} s", flush=True)

    # Export at GPT-J's 50400 rows; then the reference model is that checkpoint rounded to fp16.
    full = GptJ(c, VOCAB)
    with torch.no_grad():
        sd = {k: v for k, v in model.state_dict().items() if not k.startswith(("wte.", "lm_head."))}
        full.load_state_dict(sd, strict=False)
        idx = torch.tensor(used)
        full.wte.weight.zero_()
        full.wte.weight[idx] = model.wte.weight
        full.lm_head.weight.zero_()
        full.lm_head.weight[idx] = model.lm_head.weight
        full.lm_head.bias.fill_(UNUSED_BIAS)
        full.lm_head.bias[idx] = model.lm_head.bias
        for p in full.parameters():
            p.copy_(p.to(torch.float16).float())
    full.eval()

    mdir, edir = os.path.join(args.out, "model"), os.path.join(args.out, "expected")
    os.makedirs(mdir, exist_ok=True)
    os.makedirs(edir, exist_ok=True)
    write_safetensors(os.path.join(mdir, "model.safetensors"), hf_state(full))
    json.dump(hf_config(c), open(os.path.join(mdir, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": EOT, "eos_token_id": EOT, "do_sample": True, "temperature": 0.9,
               "max_length": 100, "transformers_version": "4.47.0"},
              open(os.path.join(mdir, "generation_config.json"), "w"), indent=2)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tokdir, f), mdir)

    train_info = {"steps": step, "seconds": round(train_s), "threads": args.threads,
                  "batch_tokens": batch * seq, "final_train_loss": round(loss.item(), 3),
                  "final_val_loss_full_softmax": round(vloss, 3), "corpus_tokens": len(ids),
                  "corpus_files": CORPUS_FILES}
    write_reference(tok, args.out, train_info)


if __name__ == "__main__":
    main()
