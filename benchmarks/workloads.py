"""The training workloads the benchmarks compare: the same model and step in
tinylm and in PyTorch eager.  Importing this module imports neither library;
each step builder imports only its own side (the fair runner's workers must
not load the other library's thread pool): benchmarks/fair.py runs each side in its
own process.

One training step = forward + cross-entropy + backward + grad clipping (1.0) +
AdamW update, on a fixed random token batch (the data pipeline is not timed).
"""

import math

import numpy as np

V = 65
CASES = {
    "gpt-s": dict(kind="gpt", n_layer=4, n_head=4, d_model=128, T=128, B=16),
    "gpt-m": dict(kind="gpt", n_layer=6, n_head=6, d_model=192, T=256, B=8),
    "lstm": dict(kind="lstm", emb=64, hidden=256, T=128, B=32),
}



def tokens_per_step(case):
    return CASES[case]["B"] * CASES[case]["T"]


def tinylm_model(case):
    from tinylm.models import build_model
    c = CASES[case]
    if c["kind"] == "gpt":
        return build_model("gpt", dict(vocab_size=V, block_size=c["T"], n_layer=c["n_layer"],
                                       n_head=c["n_head"], d_model=c["d_model"], dropout=0.0))
    return build_model("lstm", dict(vocab_size=V, emb_dim=c["emb"], hidden=c["hidden"],
                                    block_size=c["T"]))


def tinylm_step_fn(case, seed=0):
    """A zero-argument callable doing one tinylm training step."""
    from tinylm import optim
    c = CASES[case]
    model = tinylm_model(case)
    params = model.parameters()
    opt = optim.AdamW(params, lr=1e-3)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (c["B"], c["T"]))
    y = rng.integers(0, V, (c["B"], c["T"]))

    def step():
        model.loss(x, y)
        model.zero_grad()
        model.backward()
        optim.clip_grad_norm(params, 1.0)
        opt.step()
    return step


def torch_step_fn(case, seed=0):
    """A zero-argument callable doing one PyTorch eager training step on the
    same model (fastest ordinary settings: F.scaled_dot_product_attention,
    AdamW(foreach=True), clip_grad_norm_(foreach=True); the caller sets the
    thread count)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.manual_seed(seed)
    c = CASES[case]

    class Block(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.h = h
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(C, 2)
            q, k, v = [t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v)]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self, L, H, d, T):
            super().__init__()
            self.tok, self.pos = nn.Embedding(V, d), nn.Embedding(T, d)
            self.blocks = nn.ModuleList([Block(d, H) for _ in range(L)])
            self.lnf = nn.LayerNorm(d)
            self.head = nn.Linear(d, V, bias=False)
            for name, p in self.named_parameters():      # the same init as tinylm's GPT
                if name.endswith("bias"):
                    nn.init.zeros_(p)
                elif p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * L) if name.endswith(("proj.weight",
                                                                    "fc2.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx):
            T = idx.shape[1]
            x = self.tok(idx) + self.pos(torch.arange(T))
            for b in self.blocks:
                x = b(x)
            return self.head(self.lnf(x))

    class LSTMLM(nn.Module):
        def __init__(self, e, h):
            super().__init__()
            self.emb = nn.Embedding(V, e)
            self.lstm = nn.LSTM(e, h, batch_first=True)
            self.out = nn.Linear(h, V)

        def forward(self, idx):
            return self.out(self.lstm(self.emb(idx))[0])

    model = GPT(c["n_layer"], c["n_head"], c["d_model"], c["T"]) if c["kind"] == "gpt" \
        else LSTMLM(c["emb"], c["hidden"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (c["B"], c["T"]), generator=g)
    y = torch.randint(0, V, (c["B"], c["T"]), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
    return step
