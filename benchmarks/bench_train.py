"""Training throughput (tokens/s) of tinylm vs the same model in PyTorch eager.

One training step = forward + cross-entropy + backward + grad clipping +
AdamW update, on random token batches (the data pipeline is not timed).
Cases:

* GPT-S: 4 layers, 4 heads, d=128, T=128, batch 16, vocabulary 65
* GPT-M: 6 layers, 6 heads, d=192, T=256, batch 8, vocabulary 65
* LSTM LM: embedding 64 -> LSTM 256 -> vocabulary 65, T=128, batch 32

Runners: tinylm with the C backend, tinylm with the NumPy backend, and
PyTorch eager (if installed; same config and init scale, 2 threads),
interleaved in one process (benchmarks/_harness.py), reported as medians.

    python benchmarks/bench_train.py                # all cases
    python benchmarks/bench_train.py --case gpt-s --profile   # + cProfile of a C step
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, if tinylm is not installed

from _harness import interleaved, print_table  # noqa: E402

from tinylm import kernels, optim  # noqa: E402
from tinylm.models import build_model  # noqa: E402

V = 65
CASES = {
    "gpt-s": dict(kind="gpt", n_layer=4, n_head=4, d_model=128, T=128, B=16),
    "gpt-m": dict(kind="gpt", n_layer=6, n_head=6, d_model=192, T=256, B=8),
    "lstm": dict(kind="lstm", emb=64, hidden=256, T=128, B=32),
}


# --------------------------------------------------------------------------
# tinylm
# --------------------------------------------------------------------------

def tinylm_model(case):
    c = CASES[case]
    if c["kind"] == "gpt":
        return build_model("gpt", dict(vocab_size=V, block_size=c["T"], n_layer=c["n_layer"],
                                       n_head=c["n_head"], d_model=c["d_model"], dropout=0.0))
    return build_model("lstm", dict(vocab_size=V, emb_dim=c["emb"], hidden=c["hidden"],
                                    block_size=c["T"]))


def tinylm_step_fn(case, seed=0):
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


def with_backend(name, fn):
    def run():
        with kernels.backend(name):
            fn()
    return run


# --------------------------------------------------------------------------
# PyTorch (the same models)
# --------------------------------------------------------------------------

def torch_step_fn(case, seed=0):
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
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (c["B"], c["T"]), generator=g)
    y = torch.randint(0, V, (c["B"], c["T"]), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


def have_torch():
    try:
        import torch
        torch.set_num_threads(2)
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------

def profile(case, n=5, top=25):
    import cProfile
    import pstats
    step = tinylm_step_fn(case)
    step()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        step()
    pr.disable()
    print("\ncProfile of %d tinylm training steps (%s, backend %s), by own time:"
          % (n, case, kernels.get_backend()))
    pstats.Stats(pr).sort_stats("tottime").print_stats(top)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="which case(s) (default: all)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy backend")
    ap.add_argument("--profile", action="store_true", help="also cProfile the C backend")
    args = ap.parse_args(argv)
    cases = args.case or list(CASES)
    torch_ok = have_torch()
    kernels.set_num_threads(2)
    print("threads: 2 | C backend available: %s | PyTorch: %s"
          % (kernels.c_available(), "yes" if torch_ok else "not installed"))
    rows = []
    for case in cases:
        c = CASES[case]
        tokens = c["B"] * c["T"]
        try:
            base = tinylm_step_fn(case)
        except Exception as exc:       # e.g. a model not in the registry yet
            print("%s: tinylm model unavailable: %s" % (case, exc))
            continue
        fns = {}
        if kernels.c_available():
            fns["tinylm C"] = with_backend("c", base)
        if not args.no_numpy:
            fns["tinylm NumPy"] = with_backend("numpy", tinylm_step_fn(case))
        if torch_ok:
            fns["PyTorch"] = torch_step_fn(case)
        t = interleaved(fns, repeats=args.repeats, warmup=1, min_time=0.3)
        tps = {k: tokens / v for k, v in t.items()}
        row = [case] + ["%.0f" % tps.get(k, float("nan")) if k in tps else "-"
                        for k in ("tinylm C", "tinylm NumPy", "PyTorch")]
        ratio = lambda a, b: ("%.2fx" % (tps[a] / tps[b])) if a in tps and b in tps else "-"
        row += [ratio("tinylm C", "PyTorch"), ratio("tinylm C", "tinylm NumPy")]
        rows.append(row)
        print("%s: %s" % (case, ", ".join("%s %.1f ms/step" % (k, v * 1e3)
                                          for k, v in t.items())), flush=True)
    print()
    print_table(["case", "C tok/s", "NumPy tok/s", "PyTorch tok/s", "C/PyTorch", "C/NumPy"],
                rows)
    if args.profile:
        with kernels.backend("c"):
            for case in cases:
                profile(case)


if __name__ == "__main__":
    main()
