"""Lesson 07_1 - from a Python loop to NumPy to tinylm's C kernels.

Accompanies: 000 §7 工具和资源推荐, 002 §7 工具和资源推荐, 003 §7 工具和资源推荐,
004 工具和资源推荐.

The documents point to frameworks (PyTorch, TensorFlow, Hugging Face) and stop there. This lesson
opens the box: you time the same matrix product as a Python triple loop, as NumPy (OpenBLAS) and as
tinylm's C kernel (SIMD + OpenMP), see how the threads share the work, check that the fused C
attention kernel computes exactly what its NumPy specification says, and see which PyTorch piece
each tinylm layer corresponds to (cross-checked numerically when PyTorch is installed).
"""

# %%
import time

import numpy as np

import tinylm
from tinylm import kernels
from tinylm.teaching.lesson import Lesson, matplotlib_agg

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)


def best_time(fn, repeats=5, min_time=0.02):
    """Seconds per call: the best of a few runs (the least disturbed by other programs),
    each run long enough (min_time) for the clock to measure it well."""
    fn()  # warm up: first calls pay for page faults and thread start-up
    t0 = time.perf_counter()
    fn()
    inner = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return min(times)


# %%
L.step("1. A matrix product, three ways")
# C = A @ B costs 2*m*n*k floating-point operations (one multiply and one add per term).
# The Python loop below is the definition; NumPy hands the work to OpenBLAS; tinylm to csrc/matmul.c.


def matmul_python(A, B):
    """A, B: lists of lists (m x k and k x n)."""
    m, k, n = len(A), len(B), len(B[0])
    C = [[0.0] * n for _ in range(m)]
    for i in range(m):
        Ai, Ci = A[i], C[i]
        for p in range(k):
            a = Ai[p]
            Bp = B[p]
            for j in range(n):
                Ci[j] += a * Bp[j]
    return C


print("backend in use:", tinylm.get_backend(), "-", kernels.backend_reason())
info = kernels.info()
if info["c_available"]:
    print("C kernels: SIMD %s, OpenMP %s, %d threads" % (info["simd"], info["openmp"],
                                                         info["num_threads"]))

n_py = L.pick(96, 48)
A = rng.standard_normal((n_py, n_py)).astype(np.float32)
B = rng.standard_normal((n_py, n_py)).astype(np.float32)
A_list, B_list = A.tolist(), B.tolist()
t0 = time.perf_counter()
C_py = np.array(matmul_python(A_list, B_list), dtype=np.float32)
t_py = time.perf_counter() - t0
L.check("the Python loop computes the same product as NumPy",
        np.allclose(C_py, A @ B, rtol=1e-4, atol=1e-4))
gflops_py = 2 * n_py ** 3 / t_py / 1e9
print("Python loop, n=%d: %.4f GFLOP/s" % (n_py, gflops_py))

sizes = L.pick([64, 128, 256, 512, 1024], [64, 128, 256])
rates = {"numpy (OpenBLAS)": [], "tinylm C": []} if kernels.c_available() else {"numpy (OpenBLAS)": []}
for n in sizes:
    A = rng.standard_normal((n, n)).astype(np.float32)
    B = rng.standard_normal((n, n)).astype(np.float32)
    flops = 2.0 * n ** 3
    rates["numpy (OpenBLAS)"].append(flops / best_time(lambda: A @ B) / 1e9)
    if kernels.c_available():
        with kernels.backend("c"):
            rates["tinylm C"].append(flops / best_time(lambda: kernels.matmul(A, B)) / 1e9)
            diff = np.max(np.abs(kernels.matmul(A, B) - A @ B))
        print("n=%4d  numpy %7.1f GFLOP/s   tinylm C %7.1f GFLOP/s   max |diff| %.1e"
              % (n, rates["numpy (OpenBLAS)"][-1], rates["tinylm C"][-1], diff))
    else:
        print("n=%4d  numpy %7.1f GFLOP/s" % (n, rates["numpy (OpenBLAS)"][-1]))

fig, ax = plt.subplots(figsize=(6.5, 4))
for name, r in rates.items():
    ax.plot(sizes, r, "o-", label=name)
ax.axhline(gflops_py, color="gray", ls="--", label="Python loop (n=%d)" % n_py)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("matrix size n (n x n @ n x n, float32)")
ax.set_ylabel("GFLOP/s (higher is faster)")
ax.set_title("One matrix product, three implementations")
ax.legend()
L.savefig(fig, "matmul_gflops.png")
best = max(max(r) for r in rates.values())
L.check("compiled code is over 100x faster than the Python loop",
        best > 100 * gflops_py, "%.1f vs %.4f GFLOP/s" % (best, gflops_py))

# %%
L.step("2. Threads: OpenMP splits the work")
# tinylm.set_num_threads(n) (or TINYLM_NUM_THREADS) sets how many OpenMP threads the C kernels
# use. More threads cannot change the answer beyond rounding - they only share the blocks of C.
if kernels.c_available():
    n = L.pick(1024, 384)
    A = rng.standard_normal((n, n)).astype(np.float32)
    B = rng.standard_normal((n, n)).astype(np.float32)
    import os
    max_threads = max(1, os.cpu_count() or 1)
    counts = list(range(1, min(max_threads, 8) + 1))
    results, speeds = [], []
    old = kernels.get_num_threads()
    try:
        with kernels.backend("c"):
            for t in counts:
                tinylm.set_num_threads(t)
                speeds.append(2.0 * n ** 3 / best_time(lambda: kernels.matmul(A, B)) / 1e9)
                results.append(kernels.matmul(A, B))
                print("%d thread(s): %.1f GFLOP/s" % (t, speeds[-1]))
    finally:
        tinylm.set_num_threads(old)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(counts, speeds, "o-", label="tinylm C matmul, n=%d" % n)
    ax.plot(counts, [speeds[0] * c for c in counts], "k:", label="perfect scaling")
    ax.set_xlabel("OpenMP threads")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("Thread scaling of the C matmul (%d cores here)" % max_threads)
    ax.legend()
    L.savefig(fig, "thread_scaling.png")
    spread = max(np.max(np.abs(r - results[0])) for r in results)
    L.check("the thread count changes the result only by rounding", spread < 1e-3 * n ** 0.5,
            "max difference %.1e" % spread)
else:
    print("(the C extension is not built here: skipping the thread experiment)")

# %%
L.step("3. The fused attention kernel against its specification")
# kernels.attention_reference is the NumPy spec: S = q k^T / sqrt(d), P = softmax(S), o = P v.
# The C kernel never stores the T x T matrix P: it walks over key tiles keeping a running max and
# sum (an "online softmax"), and its backward recomputes P from the saved log-sum-exp.
B_, H, T, D = L.pick((4, 4, 256, 32), (2, 2, 64, 16))
q, k, v = (rng.standard_normal((B_, H, T, D)).astype(np.float32) for _ in range(3))
dout = rng.standard_normal((B_, H, T, D)).astype(np.float32)
o_ref, lse_ref = kernels.attention_reference(q, k, v, causal=True)
grads_ref = kernels.attention_backward_reference(q, k, v, o_ref, lse_ref, dout, causal=True)
if kernels.c_available():
    with kernels.backend("c"):
        o_c, lse_c = kernels.attention(q, k, v, causal=True)
        grads_c = kernels.attention_backward(q, k, v, o_c, lse_c, dout, causal=True)
        t_c = best_time(lambda: kernels.attention_backward(
            q, k, v, *kernels.attention(q, k, v, causal=True), dout, causal=True))
    t_ref = best_time(lambda: kernels.attention_backward_reference(
        q, k, v, *kernels.attention_reference(q, k, v, causal=True), dout, causal=True))
    err = max(np.max(np.abs(a - b)) for a, b in zip((o_c,) + tuple(grads_c),
                                                      (o_ref,) + tuple(grads_ref)))
    print("B=%d H=%d T=%d D=%d causal: forward+backward C %.1f ms, NumPy %.1f ms (%.1fx)"
          % (B_, H, T, D, 1e3 * t_c, 1e3 * t_ref, t_ref / t_c))
    L.check("C attention (output and all three gradients) matches the NumPy spec",
            err < 1e-4, "max |diff| %.1e" % err)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar(["NumPy reference", "tinylm C (fused)"], [1e3 * t_ref, 1e3 * t_c],
           color=["tab:gray", "tab:blue"])
    ax.set_ylabel("forward + backward time (ms, lower is faster)")
    ax.set_title("Causal attention, B=%d H=%d T=%d D=%d" % (B_, H, T, D))
    L.savefig(fig, "attention_time.png")
else:
    print("(the C extension is not built here: only the NumPy spec runs)")
    L.check("the NumPy spec's probabilities sum to one",
            np.allclose(np.exp(lse_ref - lse_ref), 1.0))

# %%
L.step("4. tinylm and PyTorch, side by side")
pairs = [
    ("tinylm.kernels.matmul", "torch.matmul / torch.mm"),
    ("tinylm.kernels.attention", "torch.nn.functional.scaled_dot_product_attention"),
    ("tinylm.layers.Linear", "torch.nn.Linear"),
    ("tinylm.layers.Embedding", "torch.nn.Embedding"),
    ("tinylm.layers.LayerNorm", "torch.nn.LayerNorm"),
    ("tinylm.layers.LSTM", "torch.nn.LSTM"),
    ("tinylm.layers.MultiHeadAttention", "torch.nn.MultiheadAttention"),
    ("tinylm.layers.TransformerBlock", "torch.nn.TransformerEncoderLayer"),
    ("tinylm.layers.SoftmaxCrossEntropy", "torch.nn.functional.cross_entropy"),
    ("Layer.backward (written by hand)", "loss.backward() (autograd)"),
]
for ours, theirs in pairs:
    print("  %-36s  <->  %s" % (ours, theirs))
try:
    import torch
except ImportError:
    torch = None
    print("PyTorch is not installed: the numerical cross-check is skipped "
          "(pip install torch==2.13.0 to run it).")
if torch is not None:
    torch.set_num_threads(2)
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    ours, _ = kernels.attention(q64, k64, v64, causal=True)
    theirs = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q64), torch.from_numpy(k64), torch.from_numpy(v64), is_causal=True)
    err = float(np.max(np.abs(ours - theirs.numpy())))
    print("tinylm attention vs torch scaled_dot_product_attention (float64): max |diff| %.1e" % err)
    L.check("tinylm's attention equals PyTorch's in float64", err < 1e-12, "%.1e" % err)

# %%
L.finish()
