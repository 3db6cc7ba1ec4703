"""Lesson 08_2 - training on several processes: data parallelism, all-reduce, what limits it.

Accompanies: 000 §1 背景介绍 (the challenges of deploying at production scale),
000 §8 总结：未来发展趋势与挑战, 002 §8 总结：未来发展趋势与挑战, 003 §8.总结：未来发展趋势与挑战.

Big models are trained on many machines at once. The simplest and most common way is data
parallelism: every process ("rank") holds the whole model, computes the gradient on its own slice
of the batch, and the ranks average their gradients with one collective operation, the all-reduce,
before each takes the same optimizer step. You check that the averaged gradient IS the full-batch
gradient, count the bytes a ring all-reduce moves, measure compute vs all-reduce time of a GPT
training step on 1 and 2 processes (MPI), and predict how many processes are worth it on a 1, 10
or 100 Gb/s network.
"""

# %%
import json
import os
import shutil
import subprocess
import sys

import numpy as np

from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import build_model
from tinylm.training import distributed

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)


def gradients(model, x, y):
    """{name: copy of dloss/dparam} for the mean loss over the batch (x, y)."""
    model.loss(x, y)
    model.zero_grad()
    model.backward()
    return {n: g.copy() for n, _, g in model.named_parameters()}


# %%
L.step("1. The average of the shards' gradients is the full-batch gradient")
# The loss of a batch is the mean over its B*T tokens. Cut the batch into N equal shards: the
# batch mean is the mean of the N shard means, and a gradient is linear, so
#     grad(mean over B) = (1/N) * sum_r grad(mean over shard r).
# Each rank computes one term; the all-reduce computes the sum. (Unequal shards would need
# weights - tinylm refuses a batch that does not divide.) In float64, to see it to ~1e-15:
V, B, T = 50, 8, 16
model = build_model("gpt", vocab_size=V, n_layer=2, n_head=2, d_model=32, block_size=T,
                    dropout=0.0, seed=0).astype(np.float64)
x = rng.integers(0, V, size=(B, T))
y = rng.integers(0, V, size=(B, T))
full = gradients(model, x, y)
for N in (2, 4, 8):
    shards = [gradients(model, x[s], y[s])
              for s in (distributed.shard_rows(B, N, r) for r in range(N))]
    worst = max(np.abs(sum(g[n] for g in shards) / N - full[n]).max() /
                max(np.abs(full[n]).max(), 1e-6) for n in full)   # relative, floor 1e-6
    print("N = %d shards of %d sequences: largest relative difference to the full batch %.1e"
          % (N, B // N, worst))
    L.check("N=%d: averaged shard gradients = full-batch gradient (float64, rel < 1e-12)" % N,
            worst < 1e-12, "%.1e" % worst)
# On ONE process the same sum is gradient accumulation (tinylm train --grad-accum K): K smaller
# forward/backward passes add into .grads (the layer contract adds), then one optimizer step.

# %%
L.step("2. A ring all-reduce, simulated: how many bytes each rank sends")
# N ranks in a ring, each with a vector of S bytes cut into N chunks. Reduce-scatter: in N-1
# rounds every rank passes one chunk to its right neighbour, which adds it to its own; after that
# rank r holds the complete sum of chunk r+1. All-gather: N-1 more rounds pass the finished chunks
# around. Every rank sends 2(N-1) chunks of S/N bytes = 2(N-1)/N * S, whatever N is.


def ring_allreduce(vectors):
    """Sum of the ranks' vectors, by the ring algorithm; returns (results, bytes sent per rank)."""
    N = len(vectors)
    chunks = [np.array_split(v.copy(), N) for v in vectors]      # chunks[rank][c]
    sent = [0] * N
    for step in range(N - 1):                                     # reduce-scatter
        msgs = [(r, (r - step) % N, chunks[r][(r - step) % N].copy()) for r in range(N)]
        for r, c, data in msgs:                                   # rank r -> rank r+1
            chunks[(r + 1) % N][c] += data
            sent[r] += data.nbytes
    for step in range(N - 1):                                     # all-gather
        msgs = [(r, (r + 1 - step) % N, chunks[r][(r + 1 - step) % N].copy()) for r in range(N)]
        for r, c, data in msgs:
            chunks[(r + 1) % N][c] = data
            sent[r] += data.nbytes
    return [np.concatenate(c) for c in chunks], sent


S_floats = 1200
for N in (2, 3, 4, 8):
    vecs = [rng.standard_normal(S_floats) for _ in range(N)]
    out, sent = ring_allreduce(vecs)
    exact = np.sum(vecs, axis=0)
    S = vecs[0].nbytes
    print("N = %d: each rank sent %s bytes; 2(N-1)/N x S = %.0f bytes (S = %d)"
          % (N, sorted(set(sent)), 2 * (N - 1) / N * S, S))
    L.check("N=%d: every rank ends with the sum" % N,
            all(np.allclose(o, exact, rtol=1e-12, atol=1e-12) for o in out))
    L.check("N=%d: every rank sends 2(N-1)/N x S bytes" % N,
            all(s == 2 * (N - 1) * S // N for s in sent), str(sent))
# So the traffic per rank hardly grows with N (it tends to 2S): the all-reduce time is about
# 2(N-1)/N * S / bandwidth + 2(N-1) * latency, while each rank's compute shrinks as 1/N.

# %%
L.step("3. Measured: compute vs all-reduce in one training step, N = 1 and 2 processes")
# python -m tinylm.training.dp_timing runs a few training steps of a preset on random tokens and
# prints the median seconds per part; under `mpiexec -n 2` each rank does half of the batch and
# the ranks average their gradients (tinylm's bucketed MPI_Allreduce). The machine this runs on
# decides the numbers: on a 2-core machine 2 ranks x 1 thread compete with 1 process x 2 threads.
# "waiting" is the time the faster rank waits for the slower one before the all-reduce: a
# synchronous step goes at the pace of its slowest rank.
presets = L.pick(["gpt-s", "gpt-m"], ["gpt-tiny", "gpt-s"])
steps = L.pick(5, 1)
mpiexec = shutil.which("mpiexec")
have_mpi = distributed.mpi_available() and mpiexec is not None


def measure(preset, n):
    cmd = [sys.executable, "-m", "tinylm.training.dp_timing", "--preset", preset,
           "--steps", str(steps), "--warmup", "1"]
    env = dict(os.environ)
    if n > 1:
        cmd = [mpiexec, "-n", str(n)] + cmd
    else:
        env.setdefault("TINYLM_NUM_THREADS", str(len(os.sched_getaffinity(0))
                                                 if hasattr(os, "sched_getaffinity")
                                                 else os.cpu_count() or 1))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (" ".join(cmd), r.stderr[-2000:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


measured = {}
for preset in presets:
    for n in ((1, 2) if have_mpi else (1,)):
        m = measure(preset, n)
        measured[preset, n] = m
        print("%-8s N=%d x %d thread(s): step %6.1f ms = compute %6.1f + waiting %5.1f + "
              "all-reduce %5.1f ms (%4.1f%%) + update; %7.0f tokens/s; %.2f MB of gradients"
              % (preset, n, m["threads"], 1e3 * m["step_s"], 1e3 * m["compute_s"],
                 1e3 * m["wait_s"], 1e3 * m["allreduce_s"], 100 * m["allreduce_s"] / m["step_s"],
                 m["tokens_per_s"], m["grad_bytes"] / 1e6))
    L.check("%s: the gradient all-reduced is 4 bytes per parameter (float32)" % preset,
            measured[preset, 1]["grad_bytes"] == 4 * measured[preset, 1]["parameters"])
if not have_mpi:
    print("mpi4py/mpiexec not found: only N = 1 measured (pip install \"tinylm[mpi]\").")
else:
    for preset in presets:
        m = measured[preset, 2]
        bus = 2 * (2 - 1) / 2 * m["grad_bytes"] / max(m["allreduce_s"], 1e-9)
        print("%s, N=2: all-reduce of %.2f MB took %.1f ms = %.1f GB/s through shared memory"
              % (preset, m["grad_bytes"] / 1e6, 1e3 * m["allreduce_s"], bus / 1e9))
        L.check("%s, N=2: the gradients went through %d bucket(s), not one call per tensor"
                % (preset, m["buckets"]), 1 <= m["buckets"] <= 8)

# %%
L.step("4. Predicted tokens/s vs the number of machines, for 1, 10 and 100 Gb/s networks")
# Strong scaling: the global batch stays the same, each of N machines computes 1/N of it, then
# the ring all-reduce moves 2(N-1)/N x S bytes over the network:
#     t(N) = t_compute(1) / N + t_update + 2(N-1)/N x S / bandwidth + 2(N-1) x latency
# with t_compute(1) and t_update measured above on one process, latency 20 us per message.
# N cannot exceed the batch size (each rank needs at least one sequence).
latency = 20e-6
fig, axes = plt.subplots(1, len(presets), figsize=(5.8 * len(presets), 4.2), squeeze=False)
predicted = {}
for ax, preset in zip(axes[0], presets):
    m = measured[preset, 1]
    tokens = m["batch_size"] * m["block_size"]
    Ns = 2 ** np.arange(0, int(np.log2(m["batch_size"])) + 1)
    update = m["step_s"] - m["compute_s"]
    ax.plot(Ns, tokens / (m["compute_s"] / Ns + update), "k:", label="no communication")
    for gbps in (1, 10, 100):
        bw = gbps * 1e9 / 8                                  # bytes per second
        t = m["compute_s"] / Ns + update + np.where(
            Ns > 1, 2 * (Ns - 1) / Ns * m["grad_bytes"] / bw + 2 * (Ns - 1) * latency, 0.0)
        predicted[preset, gbps] = tokens / t
        ax.plot(Ns, tokens / t, "o-", ms=3, label="%d Gb/s" % gbps)
        print("%-8s %3d Gb/s: tokens/s at N = %s: %s" % (
            preset, gbps, [int(n) for n in Ns], " ".join("%.0f" % v for v in tokens / t)))
    if (preset, 2) in measured:
        ax.plot([2], [measured[preset, 2]["tokens_per_s"]], "r*", ms=10,
                label="measured, 2 ranks, this machine")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("machines N (global batch %d fixed)" % m["batch_size"])
    ax.set_ylabel("tokens / second")
    ax.set_title("%s: %.1f MB of gradients per step" % (preset, m["grad_bytes"] / 1e6))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
fig.tight_layout()
L.savefig(fig, "data_parallel_scaling.png")
for preset in presets:
    m = measured[preset, 1]
    slow, fast = predicted[preset, 1], predicted[preset, 100]
    n_max = len(slow) - 1
    eff = {g: predicted[preset, g][-1] / (2 ** n_max * predicted[preset, g][0])
           for g in (1, 10, 100)}
    # communication time = compute time when t_compute(1)/N = 2(N-1)/N S/bw: N = 1 + t bw / 2S
    even = 1 + m["compute_s"] * (1e9 / 8) / (2 * m["grad_bytes"])
    print("%s at N = %d: efficiency (speed-up / N) %s; at 1 Gb/s the all-reduce takes as long "
          "as the compute from N ~ %.0f on" % (preset, 2 ** n_max, ", ".join(
              "%d%% at %d Gb/s" % (100 * e, g) for g, e in eff.items()), even))
    L.check("%s: a faster network never predicts fewer tokens/s" % preset,
            bool(np.all(fast >= slow)))
    L.check("%s: at N = %d the 1 Gb/s network loses efficiency the 100 Gb/s one keeps"
            % (preset, 2 ** n_max), eff[1] < eff[100], "%.2f < %.2f" % (eff[1], eff[100]))
print("""The all-reduce costs the same bytes whatever the batch, so data parallelism pays when the
compute per step is large compared with 2 x (gradient bytes) / bandwidth: big batches, fast links
(the GPU clusters of 000 §8 use 100-400 Gb/s per GPU). Tricks beyond this lesson: overlap the
all-reduce with the backward pass, send gradients in 16 bits, or shard the optimizer state.""")

# %%
L.finish()
