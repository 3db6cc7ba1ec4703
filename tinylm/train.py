"""Training language models: the loop the CLI (`tinylm train`) and the lessons use.

One training step, for a batch x, y of token ids (both (B, T), y = x shifted
by one)::

    loss = model.loss(x, y)          # forward + mean cross-entropy (nats/token)
    model.zero_grad(); model.backward()
    clip_grad_norm(params, 1.0)      # rescale if the gradient norm is > 1
    optimizer.lr = schedule(step)    # warm-up, then cosine decay
    optimizer.step()                 # AdamW, in place

Around it: a validation loss (and perplexity = exp(loss)) every
``eval_interval`` steps on fixed windows of held-out text, progress lines, a
loss-curve PNG, early stopping, and atomic checkpoints that hold everything a
resumed run needs to continue with the very same losses: the weights, the
optimizer's moments, the step, the batch sampler's RNG and the dropout RNGs.

Entry points:

* :func:`train` - build corpus, tokenizer, model and trainer from names
  (what ``tinylm train`` calls);
* :class:`Trainer` - for a model and token ids you already have;
* :func:`load_trained` - (model, tokenizer, meta) from a checkpoint;
* :func:`evaluate` - mean loss over fixed validation windows.
"""

import dataclasses
import math
import os
import sys
import time

import numpy as np

from tinylm import checkpoint as ckpt
from tinylm import optim
from tinylm.models import build_model, get_model_classes

__all__ = ["TrainConfig", "Trainer", "TrainResult", "PRESETS", "DEFAULT_PRESET",
           "train", "evaluate", "load_trained", "prepare_data", "CHECKPOINT_NAME",
           "BEST_NAME", "PLOT_NAME", "FORMAT"]

FORMAT = "tinylm-train-1"          # meta["kind"]: what tinylm.train writes
CHECKPOINT_NAME = "checkpoint.npz"   # latest state (what --resume reads)
BEST_NAME = "best.npz"               # the state with the best validation loss
PLOT_NAME = "loss.png"


@dataclasses.dataclass
class TrainConfig:
    """Everything about a run that is not the model.

    steps: the number of optimizer steps (the LR schedule's horizon).
    time_budget: seconds; if set, the run also stops by then, and after the
        warm-up the cosine decay follows whichever budget is closer to being
        used up, max(step / steps, elapsed / time_budget), so the learning
        rate reaches min_lr when the time runs out even if the machine's
        speed changes during the run.  (Time-budgeted runs are therefore not
        bit-reproducible; step-budgeted runs are.)
    patience: stop after this many evaluations without a better validation
        loss (early stopping); None = never.
    """
    steps: int = 1000
    time_budget: float = None
    batch_size: int = 16
    block_size: int = None          # None: the model's config.block_size (or 128)
    optimizer: str = "adamw"        # "adamw" (decoupled decay), "adam" (L2), "sgd"
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = None      # None: 0.01 for adamw (decoupled), 0 for adam/sgd (L2)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 16
    patience: int = None
    val_fraction: float = 0.1
    seed: int = 0
    log_seconds: float = 10.0       # at most one progress line per this many seconds
    plot: bool = True


# A preset: the model and its config plus training settings, by name.
# "gpt-s" is what `tinylm train` runs with no arguments.
PRESETS = {
    "gpt-s": dict(model="gpt",
                  model_config=dict(n_layer=4, n_head=4, d_model=128, block_size=128,
                                    dropout=0.0),
                  train=dict(steps=1500, time_budget=290.0, batch_size=16, lr=2e-3,
                             min_lr=2e-4, warmup=100, eval_interval=150)),
    "gpt-m": dict(model="gpt",
                  model_config=dict(n_layer=6, n_head=6, d_model=192, block_size=256,
                                    dropout=0.1),
                  train=dict(steps=3000, batch_size=8, lr=1e-3, min_lr=1e-4,
                             warmup=200, eval_interval=250)),
    "gpt-tiny": dict(model="gpt",
                     model_config=dict(n_layer=1, n_head=2, d_model=32, block_size=32,
                                       dropout=0.0),
                     train=dict(steps=50, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=5,
                                eval_interval=25, eval_batches=4)),
}
DEFAULT_PRESET = {"gpt": "gpt-s"}


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def _make_tokenizer(kind, text, vocab_size=None):
    from tinylm import tokenizers as tk
    if kind == "char":
        return tk.CharTokenizer.train(text)
    if kind == "word":
        return tk.WordTokenizer.train(text, max_size=vocab_size or 8000)
    if kind == "bpe":
        return tk.BPETokenizer.train(text, vocab_size=vocab_size or 512)
    raise ValueError("unknown tokenizer %r; choose char, word or bpe" % (kind,))


def prepare_data(data="pydoc", tokenizer="char", glob=None, val_fraction=0.1,
                 vocab_size=None, max_chars=None):
    """Load a corpus, train a tokenizer on it, split its ids.

    data: "pydoc", "code" or a path (file or folder; see tinylm.data.load_corpus).
    tokenizer: "char" | "word" | "bpe", or an already-trained tokenizer.
    max_chars: cut the corpus to about this many characters (quick runs).
    Returns (tokenizer, train_ids, val_ids) with int64 id arrays.
    """
    from tinylm import data as tdata
    text = tdata.load_corpus(source=data, glob=glob, max_chars=max_chars)
    tok = tokenizer if not isinstance(tokenizer, str) else \
        _make_tokenizer(tokenizer, text, vocab_size)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    train_ids, val_ids = tdata.split_train_val(ids, val_fraction=val_fraction)
    return tok, np.asarray(train_ids), np.asarray(val_ids)


def _val_windows(ids, block_size, max_windows=None):
    """Non-overlapping (x, y) windows from the start of ``ids``: x, y (n, T)."""
    ids = np.asarray(ids)
    n = (len(ids) - 1) // block_size
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError("the validation text has %d tokens, fewer than one window of "
                         "block_size + 1 = %d; use more data or a smaller block_size"
                         % (len(ids), block_size + 1))
    x = ids[:n * block_size].reshape(n, block_size)
    y = ids[1:n * block_size + 1].reshape(n, block_size)
    return x, y


def evaluate(model, ids, block_size, batch_size=16, max_batches=None):
    """Mean cross-entropy (nats/token) of ``model`` on fixed windows of ``ids``.

    The windows are the first non-overlapping block_size chunks of ``ids``
    (the same every call, so numbers are comparable across a run); at most
    ``max_batches`` batches of ``batch_size`` windows.  Runs in eval mode
    (no dropout) and restores the model's mode.  Perplexity = exp(result).
    """
    max_windows = None if max_batches is None else max_batches * batch_size
    x, y = _val_windows(ids, block_size, max_windows)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            total += float(model.loss(xb, yb)) * yb.size
            count += yb.size
    finally:
        model.train(was_training)
    return total / count


# --------------------------------------------------------------------------
# RNG state of every layer (dropout), found by walking the layer tree
# --------------------------------------------------------------------------

def _layer_rngs(model):
    """{"path.attr": Generator} for every np.random.Generator a layer holds."""
    found, seen = {}, set()

    def walk(layer, prefix):
        for attr, val in sorted(vars(layer).items()):
            if isinstance(val, np.random.Generator) and id(val) not in seen:
                seen.add(id(val))
                found[prefix + attr] = val
        for name, child in layer.layers.items():
            walk(child, prefix + name + ".")
    walk(model, "")
    return found


# --------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------

def _check_trainable(model, name):
    """A next-token LM with loss(x, y), backward() and parameters, else a clear error."""
    import inspect
    what = name or type(model).__name__
    loss = getattr(model, "loss", None)
    if loss is None or not hasattr(model, "backward"):
        raise ValueError("model %r has no loss(x, y) / backward(); the trainer trains "
                         "next-token language models" % what)
    sig = inspect.signature(loss)
    try:
        sig.bind(None, None)        # the trainer calls loss(x, y); y may be optional (BERT)
    except TypeError:
        raise ValueError("model %r is not a next-token language model: its loss takes (%s), "
                         "the trainer calls loss(x, y)"
                         % (what, ", ".join(p.name for p in sig.parameters.values()))) from None
    if not model.parameters():
        raise ValueError("model %r has no trainable parameters (a count-based model is fitted "
                         "by counting, not by gradient descent)" % what)


@dataclasses.dataclass
class TrainResult:
    step: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    stopped: str                    # "done", "time", "early-stop", "non-finite", "interrupted"
    elapsed: float
    checkpoint: str
    history: dict


def _fmt_time(s):
    s = int(round(s))
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) if s >= 3600 else \
        "%d:%02d" % (s // 60, s % 60)


class Trainer:
    """Trains ``model`` on ``train_ids``; validation on ``val_ids``.

    model_name and tokenizer are stored in checkpoints so `tinylm generate`
    and `tinylm eval` can rebuild everything from the file alone.
    """

    def __init__(self, model, tokenizer, train_ids, val_ids, config=None, out_dir=None,
                 model_name=None, log=print):
        from tinylm.data import BatchSampler
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or TrainConfig()
        c = self.config
        if c.block_size is None:
            c.block_size = int(getattr(getattr(model, "config", None), "block_size", None)
                               or 128)
        self.train_ids = np.asarray(train_ids)
        self.val_ids = np.asarray(val_ids)
        self.out_dir = out_dir
        self.model_name = model_name
        self.log = log or (lambda *a, **k: None)
        _check_trainable(model, model_name)
        self.params = model.parameters()
        if c.optimizer not in optim.OPTIMIZERS:
            raise ValueError("unknown optimizer %r; choose one of: %s"
                             % (c.optimizer, ", ".join(sorted(optim.OPTIMIZERS))))
        if c.weight_decay is None:
            c.weight_decay = 0.01 if c.optimizer == "adamw" else 0.0
        if c.optimizer == "sgd":
            self.optimizer = optim.SGD(self.params, lr=c.lr, momentum=c.beta1,
                                       weight_decay=c.weight_decay)
        else:
            self.optimizer = optim.OPTIMIZERS[c.optimizer](
                self.params, lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay)
        self.sampler = BatchSampler(self.train_ids, c.batch_size, c.block_size, seed=c.seed)
        self.step = 0
        self.best_val = math.inf
        self.bad_evals = 0
        self.history = {"step": [], "train_loss": [], "lr": [],
                        "val_step": [], "val_loss": []}
        self._elapsed_before = 0.0   # seconds spent in earlier (resumed-from) runs
        self._t_warm = None          # elapsed seconds when the warm-up ended (time budgets)
        self.data_source = (None, None, None)  # (data, glob, max_chars), for --resume

    # -- schedule ----------------------------------------------------------
    def lr_at(self, step):
        """Learning rate for 0-based ``step``: linear warm-up, then cosine to min_lr."""
        c = self.config
        warmup = min(c.warmup, max(c.steps - 1, 0))
        if c.time_budget is None or step < warmup:
            return optim.warmup_cosine(c.lr, warmup, c.steps, c.min_lr)(step)
        # time budget: progress q in [0, 1] after warm-up, by steps or by time
        q_steps = (step - warmup) / max(c.steps - warmup, 1)
        if self._t_warm is None:
            self._t_warm = self._elapsed_total()
        q_time = (self._elapsed_total() - self._t_warm) / max(c.time_budget - self._t_warm, 1e-9)
        q = min(1.0, max(q_steps, q_time))
        big = 10 ** 6      # warmup_cosine's formula, evaluated at fraction q of its decay
        return optim.warmup_cosine(c.lr, warmup, warmup + big, c.min_lr)(warmup + q * big)

    def _elapsed_total(self):
        return self._elapsed_before + self._run_elapsed()

    # -- checkpoints -------------------------------------------------------
    def _path(self, name):
        return os.path.join(self.out_dir, name)

    def state(self):
        """(arrays, meta) for :func:`tinylm.checkpoint.save_checkpoint`."""
        arrays = {"model." + n: p for n, p in self.model.state_dict().items()}
        optim_arrays, scalars = ckpt.split_state(self.optimizer.state_dict(), "optim.")
        arrays.update(optim_arrays)
        meta = {
            "kind": FORMAT,
            "model": self.model_name,
            "data": self.data_source[0],
            "glob": self.data_source[1],
            "max_chars": self.data_source[2],
            "model_config": dataclasses.asdict(self.model.config),
            "tokenizer": self.tokenizer.to_dict(),
            "train_config": dataclasses.asdict(self.config),
            "step": self.step,
            "t_warm": self._t_warm,
            "optimizer": scalars,
            "sampler": self.sampler.state_dict(),
            "rngs": {k: g.bit_generator.state for k, g in _layer_rngs(self.model).items()},
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "elapsed": self._elapsed_before + self._run_elapsed(),
        }
        return arrays, meta

    def save(self, name=CHECKPOINT_NAME):
        if self.out_dir is None:
            return None
        os.makedirs(self.out_dir, exist_ok=True)
        arrays, meta = self.state()
        path = self._path(name)
        ckpt.save_checkpoint(path, arrays, meta)
        return path

    def load_state(self, arrays, meta):
        """Restore a state written by :meth:`state` (the model must match)."""
        if meta.get("kind") != FORMAT:
            raise ValueError("not a training checkpoint (kind %r, expected %r)"
                             % (meta.get("kind"), FORMAT))
        self.model.load_state_dict(ckpt.join_state(arrays, {}, "model."))
        self.optimizer.load_state_dict(ckpt.join_state(arrays, meta["optimizer"], "optim."))
        self.sampler.load_state_dict(meta["sampler"])
        rngs = _layer_rngs(self.model)
        for k, st in meta.get("rngs", {}).items():
            if k in rngs:
                rngs[k].bit_generator.state = st
        self.step = int(meta["step"])
        self._t_warm = meta.get("t_warm")
        b = meta.get("best_val_loss")
        self.best_val = math.inf if b is None else float(b)
        self.bad_evals = int(meta.get("bad_evals", 0))
        self.history = {k: list(v) for k, v in meta["history"].items()}
        self._elapsed_before = float(meta.get("elapsed", 0.0))

    # -- pieces ------------------------------------------------------------
    def _run_elapsed(self):
        return time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0

    def evaluate(self, max_batches=None):
        c = self.config
        return evaluate(self.model, self.val_ids, c.block_size, c.batch_size,
                        max_batches=c.eval_batches if max_batches is None else max_batches)

    def plot(self):
        if self.out_dir is None or not self.config.plot or not self.history["step"]:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        h = self.history
        steps = np.asarray(h["step"])
        loss = np.asarray(h["train_loss"])
        fig, ax = plt.subplots(figsize=(7, 4.2))
        w = max(1, len(loss) // 50)
        ax.plot(steps, loss, color="tab:blue", alpha=0.25 if w > 1 else 1.0, lw=0.8,
                label="train (per step)")
        if len(loss) >= w and w > 1:
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1:], smooth, color="tab:blue", lw=1.6,
                    label="train (mean of %d steps)" % w)
        if h["val_step"]:
            ax.plot(h["val_step"], h["val_loss"], "o-", color="tab:orange", lw=1.6,
                    label="validation")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy loss (nats/token)")
        ax.set_title("%s training loss (best validation %.3f)"
                     % (self.model_name or type(self.model).__name__,
                        self.best_val if math.isfinite(self.best_val) else float("nan")))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = self._path(PLOT_NAME)
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
        return path

    def _line(self, step, train_loss, val_loss, tokens_per_s, elapsed, eta):
        total = self.config.steps
        parts = ["step %d" % step if total >= 10 ** 9 else
                 "step %*d/%d" % (len(str(total)), step, total),
                 "train %.4f" % train_loss]
        if val_loss is not None:
            parts.append("val %.4f (ppl %.2f)" % (val_loss, math.exp(min(val_loss, 50))))
        parts += ["lr %.2e" % self.optimizer.lr, "%.0f tok/s" % tokens_per_s,
                  "%s elapsed" % _fmt_time(elapsed)]
        if eta is not None:
            parts.append("ETA %s" % _fmt_time(eta))
        self.log(" | ".join(parts))

    # -- the loop ----------------------------------------------------------
    def fit(self, until=None):
        """Train until ``steps``, the time budget, early stopping or a bad loss.

        until: stop after this step (as if interrupted; the LR schedule is
        still the full run's), e.g. to test that resuming reproduces a run.
        Returns a :class:`TrainResult`.
        """
        c = self.config
        model = self.model
        model.train()
        tokens_per_step = c.batch_size * c.block_size
        self._t0 = time.perf_counter()
        first_step = self.step
        last_log = self._t0
        log_loss, log_n, log_t, log_step = 0.0, 0, self._t0, self.step
        stopped = "done"
        val = self.history["val_loss"][-1] if self.history["val_loss"] else None
        loss = float("nan")
        saved = None
        try:
            while True:
                total = c.steps
                if self.step >= total:
                    break
                if until is not None and self.step >= until:
                    stopped = "interrupted"
                    break
                elapsed = self._run_elapsed()
                if c.time_budget is not None and \
                        self._elapsed_before + elapsed >= c.time_budget:
                    stopped = "time"
                    break
                step = self.step + 1
                lr = self.lr_at(step - 1)          # the schedule counts from 0
                self.optimizer.lr = lr
                x, y = self.sampler.next_batch()
                loss = float(model.loss(x, y))
                if not math.isfinite(loss):
                    stopped = "non-finite"
                    self.log("step %d: the loss is %s; stopping. The last good checkpoint "
                             "(step %s) is kept. Try a smaller learning rate (now %.2e)."
                             % (step, loss, self._last_saved_step(), lr))
                    break
                model.zero_grad()
                model.backward()
                if c.grad_clip:
                    gnorm = optim.clip_grad_norm(self.params, c.grad_clip)
                    if not math.isfinite(float(gnorm)):
                        stopped = "non-finite"
                        self.log("step %d: the gradient norm is %s; stopping. The last "
                                 "good checkpoint (step %s) is kept."
                                 % (step, gnorm, self._last_saved_step()))
                        break
                self.optimizer.step()
                self.step = step
                self.history["step"].append(step)
                self.history["train_loss"].append(loss)
                self.history["lr"].append(lr)
                log_loss += loss
                log_n += 1

                is_eval = step % c.eval_interval == 0 or step == total
                now = time.perf_counter()
                if is_eval:
                    val = self.evaluate()
                    self.history["val_step"].append(step)
                    self.history["val_loss"].append(val)
                    improved = val < self.best_val
                    if improved:
                        self.best_val, self.bad_evals = val, 0
                    else:
                        self.bad_evals += 1
                    saved = self.save()
                    if improved:
                        self.save(BEST_NAME)
                    self.plot()
                if is_eval or step == 1 or now - last_log >= c.log_seconds:
                    dt = now - log_t
                    tps = (step - log_step) * tokens_per_step / dt if dt > 0 else 0.0
                    elapsed = self._elapsed_before + self._run_elapsed()
                    eta = self._run_elapsed() / max(step - first_step, 1) * (total - step)
                    if c.time_budget is not None:
                        eta = min(eta, max(0.0, c.time_budget - elapsed))
                    self._line(step, log_loss / max(log_n, 1), val if is_eval else None,
                               tps, elapsed, eta)
                    last_log = log_t = time.perf_counter()
                    log_loss, log_n, log_step = 0.0, 0, step
                if is_eval and c.patience is not None and self.bad_evals >= c.patience:
                    stopped = "early-stop"
                    self.log("early stopping: validation loss has not improved for %d "
                             "evaluations (best %.4f)" % (self.bad_evals, self.best_val))
                    break
        except KeyboardInterrupt:
            self.log("interrupted at step %d; the last checkpoint (step %s) is kept; "
                     "continue with --resume" % (self.step, self._last_saved_step()))
            stopped = "interrupted"

        # a run that stopped between evaluations: evaluate and save once more
        if stopped in ("time", "done") and (not self.history["val_step"] or
                                            self.history["val_step"][-1] != self.step):
            val = self.evaluate()
            self.history["val_step"].append(self.step)
            self.history["val_loss"].append(val)
            if val < self.best_val:
                self.best_val = val
                self.save(BEST_NAME)
            saved = self.save()
            self.plot()
            self.log("step %d | val %.4f (ppl %.2f) | %s elapsed"
                     % (self.step, val, math.exp(min(val, 50)),
                        _fmt_time(self._elapsed_before + self._run_elapsed())))
        path = self._path(CHECKPOINT_NAME) if self.out_dir else None
        tl = self.history["train_loss"]
        return TrainResult(step=self.step, train_loss=tl[-1] if tl else float("nan"),
                           val_loss=val if val is not None else float("nan"),
                           best_val_loss=self.best_val, stopped=stopped,
                           elapsed=self._elapsed_before + self._run_elapsed(),
                           checkpoint=path, history=self.history)

    def _last_saved_step(self):
        vs = self.history["val_step"]
        return vs[-1] if (vs and self.out_dir) else "none"


# --------------------------------------------------------------------------
# From names to a run, and back from a checkpoint
# --------------------------------------------------------------------------

def _resolve(model, preset):
    """(model name, model config dict, train settings dict) for a model/preset choice."""
    if preset is None and model is None:
        preset = DEFAULT_PRESET["gpt"]
    if preset is None:
        preset = DEFAULT_PRESET.get(model)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError("unknown preset %r; choose one of: %s"
                             % (preset, ", ".join(sorted(PRESETS))))
        p = PRESETS[preset]
        if model is not None and model != p["model"]:
            raise ValueError("preset %r is for model %r, not %r"
                             % (preset, p["model"], model))
        return p["model"], dict(p["model_config"]), dict(p["train"])
    get_model_classes(model)            # clear error for an unknown name
    return model, {}, {}


def load_trained(path):
    """(model, tokenizer, meta, arrays) from a checkpoint written by a Trainer."""
    from tinylm.tokenizers import tokenizer_from_dict
    arrays, meta = ckpt.load_checkpoint(path)
    if meta.get("kind") != FORMAT:
        raise ValueError("%s: a tinylm checkpoint, but not one written by tinylm.train "
                         "(kind %r, expected %r)" % (path, meta.get("kind"), FORMAT))
    model = build_model(meta["model"], meta["model_config"])
    model.load_state_dict(ckpt.join_state(arrays, {}, "model."))
    model.eval()
    tok = tokenizer_from_dict(meta["tokenizer"])
    return model, tok, meta, arrays


def train(model=None, preset=None, data="pydoc", tokenizer="char", out=None,
          resume=False, seed=None, steps=None, time_budget=None, glob=None,
          model_config=None, vocab_size=None, max_chars=None, log=print, until=None,
          **train_settings):
    """Train a model by name; returns (trainer, TrainResult).

    model: a registered model name (default "gpt"); preset: a key of PRESETS
    (default: the model's default preset).  model_config / train_settings
    override the preset.  out: folder for checkpoint.npz, best.npz, loss.png
    (default runs/<model>).  resume: continue from out/checkpoint.npz with
    the same data, tokenizer, optimizer state and RNGs (the losses are the
    ones the uninterrupted run would have had).
    """
    name, mcfg, tset = _resolve(model, preset)
    mcfg.update(model_config or {})
    tset.update(train_settings)
    if steps is not None:
        tset["steps"] = int(steps)
        if time_budget is None:
            tset["time_budget"] = None   # an explicit --steps replaces a preset's time cap
    if time_budget is not None:
        tset["time_budget"] = float(time_budget)
        if steps is None:
            tset["steps"] = 10 ** 9       # the time decides
    if seed is not None:
        tset["seed"] = int(seed)
    out = out or os.path.join("runs", name)

    if resume:
        path = os.path.join(out, CHECKPOINT_NAME)
        if not os.path.exists(path):
            raise FileNotFoundError("--resume: no checkpoint at %s (train without "
                                    "--resume first, or pass the right --out)" % path)
        arrays, meta = ckpt.load_checkpoint(path)
        tcfg = TrainConfig(**meta["train_config"])
        if steps is not None:
            tcfg.steps = int(steps)
        if time_budget is not None:
            tcfg.time_budget = float(time_budget)
        source = (meta.get("data"), meta.get("glob"), meta.get("max_chars"))
        tok, train_ids, val_ids = prepare_data(
            source[0], _tokenizer_from_meta(meta), glob=source[1],
            val_fraction=tcfg.val_fraction, max_chars=source[2])
        m = build_model(meta["model"], meta["model_config"])
        trainer = Trainer(m, tok, train_ids, val_ids, tcfg, out_dir=out,
                          model_name=meta["model"], log=log)
        trainer.data_source = source
        trainer.load_state(arrays, meta)
        log("resumed from %s at step %d" % (path, trainer.step))
    else:
        tcfg = TrainConfig(**tset)
        tok, train_ids, val_ids = prepare_data(data, tokenizer, glob=glob,
                                               val_fraction=tcfg.val_fraction,
                                               vocab_size=vocab_size, max_chars=max_chars)
        config_cls, _ = get_model_classes(name)
        fields = {f.name for f in dataclasses.fields(config_cls)}
        if "vocab_size" in fields:
            mcfg["vocab_size"] = tok.vocab_size
        if "seed" in fields:
            mcfg.setdefault("seed", tcfg.seed)
        m = build_model(name, mcfg)
        trainer = Trainer(m, tok, train_ids, val_ids, tcfg, out_dir=out, model_name=name,
                          log=log)
        trainer.data_source = (data, glob, max_chars)
        log("model %s: %s parameters | data %s: %d train / %d validation tokens | "
            "vocabulary %d (%s)" % (name, "{:,}".format(m.num_parameters()),
                                    data, len(train_ids), len(val_ids), tok.vocab_size,
                                    tokenizer if isinstance(tokenizer, str)
                                    else type(tokenizer).__name__))
    result = trainer.fit(until=until)
    return trainer, result


def _tokenizer_from_meta(meta):
    from tinylm.tokenizers import tokenizer_from_dict
    return tokenizer_from_dict(meta["tokenizer"])
