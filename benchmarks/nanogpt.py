"""tinylm's default `tinylm train` run against karpathy/nanoGPT, each in its own process.

    python benchmarks/nanogpt.py --nanogpt /path/to/nanoGPT                 # 300 steps, 3 pairs
    python benchmarks/nanogpt.py --nanogpt /path/to/nanoGPT --steps 1500 --pairs 1 \
        --eval-interval 150                                                  # the learning curves
    python benchmarks/nanogpt.py --nanogpt DIR --json out.json

nanoGPT is not part of tinylm and is not copied here: give the folder of a
nanoGPT checkout holding its unmodified ``model.py``, ``train.py`` and
``configurator.py`` (https://github.com/karpathy/nanoGPT).  nanoGPT runs as a
student would run it, ``python train.py`` with command-line overrides only:
CPU, float32, ``compile=False``, PyTorch's default threads (the machine's
cores; ``--threads`` sets OMP_NUM_THREADS for both sides).

The same data: tinylm's pydoc corpus, character tokens, tinylm's
train/validation split (``tinylm.training.prepare.prepare_data``), written in
nanoGPT's format (``data/tinylm_pydoc/{train,val}.bin`` as uint16, and the
``meta.pkl`` nanoGPT's train.py reads its vocabulary size from; that pickle is
written here for nanoGPT and never read by tinylm) in a temporary folder.

The same recipe, tinylm's ``gpt-s`` preset: 4 layers, 4 heads, d=128,
context 128, batch 16, biases, no dropout, AdamW lr 2e-3 with 100 warm-up
steps and a cosine decay to 2e-4 over ``--steps``, betas (0.9, 0.99), weight
decay 0.01, gradient clipping at 1.0.  tinylm runs its real Trainer (what
`tinylm train` runs).  The models differ where nanoGPT's code differs: its
weight init (residual projections scaled by 1/sqrt(2 n_layer)), exact-erf
GELU (tinylm's GPT: tanh), an output head tied to the token embedding
(tinylm's: untied, 13k more parameters at this vocabulary), weight decay on
matrices only.

Timing: each side's time per optimizer step is the median of the gaps between
consecutive steps after the first 5 (nanoGPT's own ``time ...ms`` per
iteration; for tinylm the same gap, measured around the Trainer's
``train_step``), so the few evaluation steps do not count.  Runs alternate
(tinylm, nanoGPT, nanoGPT, tinylm, ...) and the ratio is reported per pair and
as the median.  Learning curves: tinylm scores its whole validation split;
nanoGPT's ``estimate_loss`` scores ``--eval-iters`` random validation batches
(an estimate of the same quantity, so expect differences of ~0.01).
"""

import argparse
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATASET = "tinylm_pydoc"
SKIP = 5                       # steps whose gaps are not timed (start-up, first eval)

# tinylm's gpt-s preset in nanoGPT's names (checked against the preset in tinylm_worker)
RECIPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=16, dropout=0.0,
              bias=True, learning_rate=2e-3, min_lr=2e-4, warmup_iters=100, beta1=0.9,
              beta2=0.99, weight_decay=0.01, grad_clip=1.0)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %s" % text)
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(prog="nanogpt.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--nanogpt", help="folder of a nanoGPT checkout (model.py, train.py, "
                                     "configurator.py)")
    p.add_argument("--steps", type=positive, default=300)
    p.add_argument("--pairs", type=positive, default=3)
    p.add_argument("--eval-interval", type=positive, default=None,
                   help="steps between validation scores (default: only at the end)")
    p.add_argument("--eval-iters", type=positive, default=50,
                   help="nanoGPT's validation batches per estimate")
    p.add_argument("--threads", type=positive, default=None,
                   help="OMP_NUM_THREADS for both sides (default: the machine's cores)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", choices=["tinylm"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None:
        if not args.nanogpt:
            p.error("--nanogpt DIR is required (a nanoGPT checkout; it is not bundled)")
        missing = [f for f in ("model.py", "train.py", "configurator.py")
                   if not os.path.isfile(os.path.join(args.nanogpt, f))]
        if missing:
            p.error("--nanogpt %s: missing %s (expected a nanoGPT checkout)"
                    % (args.nanogpt, ", ".join(missing)))
    return args


# --------------------------------------------------------------------------
# The tinylm side: its Trainer, timed around each train_step
# --------------------------------------------------------------------------

def tinylm_worker(args):
    sys.path.insert(0, ROOT)
    from tinylm.training import config as tconfig
    from tinylm.training import run as trun
    from tinylm.training import trainer as ttrainer

    preset = tconfig.PRESETS["gpt-s"]
    mc, tc = preset["model_config"], preset["train"]
    assert (mc["n_layer"], mc["n_head"], mc["d_model"], mc["block_size"], tc["batch_size"],
            tc["lr"], tc["min_lr"], tc["warmup"]) == \
        (RECIPE["n_layer"], RECIPE["n_head"], RECIPE["n_embd"], RECIPE["block_size"],
         RECIPE["batch_size"], RECIPE["learning_rate"], RECIPE["min_lr"],
         RECIPE["warmup_iters"]), "the gpt-s preset changed: update RECIPE"
    starts = []
    real_step = ttrainer.train_step

    def timed_step(*a, **k):
        starts.append(time.perf_counter())
        return real_step(*a, **k)

    ttrainer.train_step = timed_step
    trainer, _ = trun.train(preset="gpt-s", steps=args.steps,
                            eval_interval=args.eval_interval or args.steps, out=args.out,
                            plot=False, log=lambda *a, **k: None)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    h = trainer.history
    print(json.dumps({"step_s": statistics.median(gaps[SKIP:]), "steps": len(starts),
                      "val": [[s, v] for s, v in zip(h["val_step"], h["val_loss"])]}))


# --------------------------------------------------------------------------
# The nanoGPT side: its own train.py on the same data
# --------------------------------------------------------------------------

def write_nanogpt_data(work):
    """tinylm's split in nanoGPT's format under work/data/tinylm_pydoc."""
    sys.path.insert(0, ROOT)
    import numpy as np

    from tinylm.training.prepare import prepare_data
    tok, train_ids, val_ids = prepare_data("pydoc", "char")
    folder = os.path.join(work, "data", DATASET)
    os.makedirs(folder)
    np.asarray(train_ids, np.uint16).tofile(os.path.join(folder, "train.bin"))
    np.asarray(val_ids, np.uint16).tofile(os.path.join(folder, "val.bin"))
    with open(os.path.join(folder, "meta.pkl"), "wb") as f:   # read by nanoGPT only
        pickle.dump({"vocab_size": tok.vocab_size}, f)
    return tok.vocab_size, len(train_ids), len(val_ids)


ITER = re.compile(r"^iter (\d+): loss [-\d.naninf]+, time ([\d.]+)ms", re.M)
EVAL = re.compile(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)", re.M)


def run_nanogpt(args, work, env):
    every = args.eval_interval or args.steps
    overrides = dict(RECIPE, dataset=DATASET, device="cpu", dtype="float32", compile=False,
                     gradient_accumulation_steps=1, max_iters=args.steps,
                     lr_decay_iters=args.steps, eval_interval=every,
                     eval_iters=args.eval_iters, log_interval=1,
                     always_save_checkpoint=False, out_dir=os.path.join(work, "out"))
    cmd = [sys.executable, os.path.join(os.path.abspath(args.nanogpt), "train.py")]
    cmd += ["--%s=%s" % (k, v) for k, v in overrides.items()]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("nanogpt.py: nanoGPT's train.py failed (status %d): %s"
                 % (proc.returncode, (proc.stderr.strip().splitlines() or ["?"])[-1]))
    iters = [(int(i), float(ms) / 1000) for i, ms in ITER.findall(proc.stdout)]
    if len(iters) <= SKIP + 1:
        sys.exit("nanogpt.py: could not read nanoGPT's iteration times from its output")
    val = [[int(s), float(v)] for s, v in EVAL.findall(proc.stdout)]
    return {"step_s": statistics.median(dt for _, dt in iters[SKIP + 1:]),
            "steps": len(iters), "val": [sv for sv in val if sv[0] > 0]}


def run_tinylm(args, work, env, k):
    out = os.path.join(work, "tinylm-run-%d" % k)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "tinylm",
           "--steps", str(args.steps), "--out", out]
    if args.eval_interval:
        cmd += ["--eval-interval", str(args.eval_interval)]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("nanogpt.py: the tinylm worker failed (status %d): %s"
                 % (proc.returncode, (proc.stderr.strip().splitlines() or ["?"])[-1]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return tinylm_worker(args)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["TINYLM_NUM_THREADS"] = str(args.threads)
    print("load average %.1f %.1f %.1f on %d CPUs" % (os.getloadavg() + (os.cpu_count(),)))
    work = tempfile.mkdtemp(prefix="tinylm-nanogpt-")
    try:
        vocab, n_train, n_val = write_nanogpt_data(work)
        shutil.copy(os.path.join(args.nanogpt, "configurator.py"), work)  # train.py execs it from cwd
        print("data: pydoc, char tokens (vocabulary %d), %d train / %d validation tokens; "
              "%d steps, %d alternated pairs" % (vocab, n_train, n_val, args.steps, args.pairs))
        runs = {"tinylm": [], "nanogpt": []}
        for pair in range(args.pairs):
            order = ["tinylm", "nanogpt"] if pair % 2 == 0 else ["nanogpt", "tinylm"]
            for side in order:
                t = time.perf_counter()
                r = (run_tinylm(args, work, env, pair) if side == "tinylm"
                     else run_nanogpt(args, work, env))
                r["wall_s"] = time.perf_counter() - t
                runs[side].append(r)
                print("  pair %d %-8s %.1f ms/step  (%.0f s for the run)"
                      % (pair + 1, side, 1000 * r["step_s"], r["wall_s"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = [n["step_s"] / t["step_s"] for t, n in zip(runs["tinylm"], runs["nanogpt"])]
    med = {s: statistics.median(r["step_s"] for r in runs[s]) for s in runs}
    tokens = RECIPE["batch_size"] * RECIPE["block_size"]
    print("\nside      ms/step  tokens/s  %d steps at this pace" % args.steps)
    for s in ("tinylm", "nanogpt"):
        print("%-8s %8.1f %9.0f %12.0f s" % (s, 1000 * med[s], tokens / med[s], args.steps * med[s]))
    print("tinylm / nanoGPT tokens/s: %.2fx (per pair: %s)"
          % (statistics.median(ratios), " ".join("%.2f" % r for r in ratios)))
    if any(r["val"] for r in runs["tinylm"]):
        print("\nvalidation loss (nats/char), first pair: step  tinylm  nanoGPT")
        nano = dict(map(tuple, runs["nanogpt"][0]["val"]))
        for step, v in runs["tinylm"][0]["val"]:
            print("  %5d  %.4f  %s" % (step, v, "%.4f" % nano[step] if step in nano else "-"))
    print("\nload average after: %.1f %.1f %.1f" % os.getloadavg())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "pairs": args.pairs, "runs": runs,
                       "ratios": ratios, "ratio": statistics.median(ratios),
                       "load_after": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    main()
