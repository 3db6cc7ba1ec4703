"""The Trainer: runs train_step in a loop with a schedule, evaluation, logging and checkpoints.

Around :func:`tinylm.training.step.train_step`: the learning rate of each step
(warm-up, then cosine decay, fitted to a time budget if there is one), a
validation loss every ``eval_interval`` steps, progress lines, a loss-curve
PNG, early stopping, and atomic checkpoints from which a resumed run continues
with the same losses.
"""

import dataclasses
import inspect
import math
import os
import time

import numpy as np

from tinylm import checkpoint as ckpt
from tinylm import optim
from tinylm.data import BatchSampler
from tinylm.training import distributed
from tinylm.training.config import TrainConfig
from tinylm.training.evaluation import describe_windows, evaluate, perplexity
from tinylm.training.state import BEST_NAME, CHECKPOINT_NAME, FORMAT, PLOT_NAME, layer_rngs
from tinylm.training.step import train_step

__all__ = ["Trainer", "TrainResult"]


def _check_trainable(model, name):
    """A next-token LM with loss(x, y), backward() and parameters, else a clear error."""
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

    comm: a :class:`tinylm.training.distributed.Comm` for synchronous
    data-parallel training under mpiexec (None: one process).  Every rank
    builds the same Trainer; each step each rank computes on its own
    batch_size / N rows of the global batch and the gradients are averaged
    (see docs/distributed.md).  Rank 0's parameters are broadcast first; rank
    0 alone evaluates, logs, writes checkpoints and the plot.  Unless
    TINYLM_NUM_THREADS is set, each rank's C kernels get the cores of its
    machine divided by the ranks on it.
    """

    def __init__(self, model, tokenizer, train_ids, val_ids, config=None, out_dir=None,
                 model_name=None, log=print, comm=None):
        self.comm = comm
        self.is_root = comm is None or comm.is_root
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
        self.log = (log if self.is_root else None) or (lambda *a, **k: None)
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
        # the global batch is cut into N ranks x K micro-batches (refused if it does not divide)
        n_ranks = comm.size if comm is not None else 1
        if not isinstance(c.grad_accum, int) or c.grad_accum < 1:
            raise ValueError("grad_accum must be a whole number >= 1, got %r" % (c.grad_accum,))
        distributed.shard_rows(c.batch_size, n_ranks * c.grad_accum, 0)
        self.rows = distributed.shard_rows(c.batch_size, n_ranks, comm.rank) \
            if comm is not None else None
        if comm is not None:
            self._setup_ranks()
        self.step = 0
        self.best_val = math.inf
        self.bad_evals = 0
        self.history = {"step": [], "train_loss": [], "lr": [],
                        "val_step": [], "val_loss": []}
        self._elapsed_before = 0.0   # seconds spent in earlier (resumed-from) runs
        self._t_warm = None          # elapsed seconds when the warm-up ended (time budgets)
        self.data_source = (None, None, None)  # (data, glob, max_chars), for --resume

    def _setup_ranks(self):
        """Data parallel: threads per rank, rank 0's parameters everywhere, own dropout RNGs."""
        from tinylm import kernels
        comm = self.comm
        kernels.set_num_threads(distributed.default_threads(comm))
        comm.broadcast_([p for p, _ in self.params])
        if comm.rank > 0:
            # each rank its own dropout masks (rank 0 keeps the one-process stream)
            for i, (name, g) in enumerate(sorted(layer_rngs(self.model).items())):
                seq = np.random.SeedSequence([self.config.seed, comm.rank, i])
                g.bit_generator.state = type(g.bit_generator)(seq).state
        self.log("data parallel: %d ranks x %d thread(s), %d sequences per rank per step, "
                 "%.2f MB of gradients all-reduced in %d bucket(s)"
                 % (comm.size, kernels.get_num_threads(), self.config.batch_size // comm.size,
                    sum(g.nbytes for _, g in self.params) / 1e6,
                    comm.num_buckets([g for _, g in self.params])))

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
            "rngs": {k: g.bit_generator.state for k, g in layer_rngs(self.model).items()},
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "elapsed": self._elapsed_before + self._run_elapsed(),
        }
        return arrays, meta

    def _collect(self):
        """(arrays, meta) to save, on rank 0 (None elsewhere); with comm every rank calls it."""
        rank_rngs = None
        if self.comm is not None:     # every rank's dropout RNGs, for --resume
            rank_rngs = self.comm.gather({k: g.bit_generator.state
                                          for k, g in layer_rngs(self.model).items()})
        if not self.is_root:
            return None
        os.makedirs(self.out_dir, exist_ok=True)
        arrays, meta = self.state()
        if rank_rngs is not None:
            meta["rank_rngs"] = rank_rngs
        return arrays, meta

    def save(self, name=CHECKPOINT_NAME):
        """Write a checkpoint (rank 0; with comm, every rank must call it)."""
        if self.out_dir is None:
            return None
        state = self._collect()
        if state is None:
            return None
        path = self._path(name)
        ckpt.save_checkpoint(path, *state)
        return path

    def load_state(self, arrays, meta):
        """Restore a state written by :meth:`state` (the model must match)."""
        if meta.get("kind") != FORMAT:
            raise ValueError("not a training checkpoint (kind %r, expected %r)"
                             % (meta.get("kind"), FORMAT))
        self.model.load_state_dict(ckpt.join_state(arrays, {}, "model."))
        self.optimizer.load_state_dict(ckpt.join_state(arrays, meta["optimizer"], "optim."))
        self.sampler.load_state_dict(meta["sampler"])
        rngs = layer_rngs(self.model)
        saved = meta.get("rngs", {})
        if self.comm is not None and len(meta.get("rank_rngs") or []) == self.comm.size:
            saved = meta["rank_rngs"][self.comm.rank]
        for k, st in saved.items():
            if k in rngs:
                rngs[k].bit_generator.state = st
        self.step = int(meta["step"])
        self._t_warm = meta.get("t_warm")
        b = meta.get("best_val_loss")
        self.best_val = math.inf if b is None else float(b)
        if self.out_dir is not None and self.is_root:   # a kill may have come after best.npz
            self.best_val = min(self.best_val, ckpt.best_val_loss(self._path(BEST_NAME)))
        if self.comm is not None:      # every rank decides early stopping the same way
            self.best_val = self.comm.bcast(self.best_val if self.is_root else None)
        self.bad_evals = int(meta.get("bad_evals", 0))
        self.history = {k: list(v) for k, v in meta["history"].items()}
        self._elapsed_before = float(meta.get("elapsed", 0.0))

    # -- pieces ------------------------------------------------------------
    def _run_elapsed(self):
        return time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0

    def evaluate(self, max_batches=None):
        """Validation loss (with comm: computed on rank 0, sent to all)."""
        c = self.config
        val = None
        if self.is_root:
            val = evaluate(self.model, self.val_ids, c.block_size, c.batch_size,
                           max_batches=c.eval_batches if max_batches is None else max_batches)
        if self.comm is not None:
            self.comm.check_identical([p for p, _ in self.params])
            val = self.comm.bcast(val)
        return val

    def plot(self):
        if self.out_dir is None or not self.config.plot or not self.history["step"] \
                or not self.is_root:
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
        tmp = os.path.join(self.out_dir, "." + PLOT_NAME + ckpt.TMP_MARK + "png")
        fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        os.replace(tmp, path)
        return path

    def _line(self, step, train_loss, val_loss, tokens_per_s, elapsed, eta):
        total = self.config.steps
        parts = ["step %d" % step if total >= 10 ** 9 else
                 "step %*d/%d" % (len(str(total)), step, total),
                 "train %.4f" % train_loss]
        if val_loss is not None:
            parts.append("val %.4f (ppl %.2f)" % (val_loss, perplexity(val_loss)))
        parts += ["lr %.2e" % self.optimizer.lr, "%.0f tok/s" % tokens_per_s,
                  "%s elapsed" % _fmt_time(elapsed)]
        if eta is not None:
            parts.append("ETA %s" % _fmt_time(eta))
        if self.comm is not None and self._run_elapsed() > 0:
            parts.append("all-reduce %.1f%%" % (100 * self.comm.seconds / self._run_elapsed()))
        self.log(" | ".join(parts))

    # -- the loop ----------------------------------------------------------
    def fit(self, until=None):
        """Train until ``steps``, the time budget, early stopping or a bad loss.

        until: stop after this step (as if interrupted; the LR schedule is
        still the full run's), e.g. to test that resuming reproduces a run.
        Returns a :class:`TrainResult`.  With comm, an exception on any rank
        prints that rank's traceback and aborts the whole MPI job (the other
        ranks would otherwise wait for it in the next all-reduce forever).
        """
        if self.comm is None or self.comm.size == 1:
            return self._fit(until)
        try:
            return self._fit(until)
        except Exception:
            distributed.abort_with_traceback(self.comm)

    def _fit(self, until):
        c = self.config
        self.model.train()
        self._t0 = time.perf_counter()
        progress = _Progress(self, self._t0)
        val = self.history["val_loss"][-1] if self.history["val_loss"] else None
        if self.out_dir is not None and self.is_root:
            stale = ckpt.clean_stale_temps(self.out_dir)
            if stale:
                self.log("removed %d temporary file(s) a killed run left in %s"
                         % (len(stale), self.out_dir))
        self.log("validation: %s" % describe_windows(self.val_ids, c.block_size,
                                                      c.batch_size, c.eval_batches))
        try:
            while True:
                stopped = self._stop_reason(until)
                step = self.step + 1
                lr = None if stopped else self.lr_at(step - 1)    # the schedule counts from 0
                if self.comm is not None and c.time_budget is not None:
                    stopped, lr = self.comm.bcast((stopped, lr))  # rank 0's clock decides
                if stopped:
                    break
                self.optimizer.lr = lr
                x, y = self.sampler.next_batch(rows=self.rows)    # this rank's shard
                loss, grad_norm = train_step(self.model, self.optimizer, x, y, c.grad_clip,
                                             grad_accum=c.grad_accum, comm=self.comm)
                if not self._finite(step, loss, grad_norm, lr):
                    stopped = "non-finite"
                    break
                self.step = step
                self._record(step, loss, lr)
                is_eval = step % c.eval_interval == 0 or step == c.steps
                now = time.perf_counter()
                if is_eval:
                    val = self._evaluate_and_checkpoint()
                    if val is None:
                        stopped = "non-finite"
                        break
                progress.add(step, loss, val if is_eval else None, now, is_eval or step == 1)
                if is_eval and self._patience_ran_out():
                    stopped = "early-stop"
                    break
        except KeyboardInterrupt:
            self.log("interrupted at step %d; the last checkpoint (step %s) is kept; "
                     "continue with --resume" % (self.step, self._last_saved_step()))
            stopped = "interrupted"
        return self._finish(stopped, val)

    # -- the loop's pieces ---------------------------------------------------
    def _stop_reason(self, until):
        """Why to stop before the next step ("done", "interrupted", "time"), or None."""
        c = self.config
        if self.step >= c.steps:
            return "done"
        if until is not None and self.step >= until:
            return "interrupted"
        if c.time_budget is not None and self._elapsed_total() >= c.time_budget:
            return "time"
        return None

    def _finite(self, step, loss, grad_norm, lr):
        """False (and a message) if train_step saw a non-finite loss or gradient norm."""
        if not math.isfinite(loss):
            self.log("step %d: the loss is %s; stopping. The last good checkpoint "
                     "(step %s) is kept. Try a smaller learning rate (now %.2e)."
                     % (step, loss, self._last_saved_step(), lr))
            return False
        if grad_norm is not None and not math.isfinite(grad_norm):
            self.log("step %d: the gradient norm is %s; stopping. The last "
                     "good checkpoint (step %s) is kept."
                     % (step, grad_norm, self._last_saved_step()))
            return False
        return True

    def _record(self, step, loss, lr):
        self.history["step"].append(step)
        self.history["train_loss"].append(loss)
        self.history["lr"].append(lr)

    def _evaluate_and_checkpoint(self):
        """Validation loss now; save best.npz (if better than the file holds), checkpoint.npz, plot.

        best.npz is written first, and only with a lower finite loss than the
        one stored in it, so a kill between the two writes, a resume or a
        re-run never loses the best model or replaces it by a worse one.  A
        non-finite validation loss saves nothing and returns None.
        """
        val = self.evaluate()
        if not math.isfinite(val):
            self.log("step %d: the validation loss is %s; stopping. The last good "
                     "checkpoint (step %s) is kept." % (self.step, val, self._last_saved_step()))
            return None
        self.history["val_step"].append(self.step)
        self.history["val_loss"].append(val)
        if val < self.best_val:
            self.best_val, self.bad_evals = val, 0
        else:
            self.bad_evals += 1
        state = self._collect() if self.out_dir is not None else None
        if state is not None:                            # rank 0 writes
            ckpt.save_best(self._path(BEST_NAME), *state, val)
            ckpt.save_checkpoint(self._path(CHECKPOINT_NAME), *state)
        self.plot()
        return val

    def _patience_ran_out(self):
        c = self.config
        if c.patience is None or self.bad_evals < c.patience:
            return False
        self.log("early stopping: validation loss has not improved for %d "
                 "evaluations (best %.4f)" % (self.bad_evals, self.best_val))
        return True

    def _finish(self, stopped, val):
        """A run that stopped between evaluations is evaluated and saved once more."""
        if stopped in ("time", "done") and (not self.history["val_step"] or
                                            self.history["val_step"][-1] != self.step):
            val = self._evaluate_and_checkpoint()
            if val is None:
                stopped = "non-finite"
            else:
                self.log("step %d | val %.4f (ppl %.2f) | %s elapsed"
                         % (self.step, val, perplexity(val), _fmt_time(self._elapsed_total())))
        tl = self.history["train_loss"]
        return TrainResult(step=self.step, train_loss=tl[-1] if tl else float("nan"),
                           val_loss=val if val is not None else float("nan"),
                           best_val_loss=self.best_val, stopped=stopped,
                           elapsed=self._elapsed_total(),
                           checkpoint=self._path(CHECKPOINT_NAME) if self.out_dir else None,
                           history=self.history)

    def _last_saved_step(self):
        vs = self.history["val_step"]
        return vs[-1] if (vs and self.out_dir) else "none"


class _Progress:
    """Progress lines: mean train loss, tokens/s, elapsed and ETA since the last line."""

    def __init__(self, trainer, t0):
        self.trainer = trainer
        self.first_step = self.step_mark = trainer.step
        self.last_log = self.t_mark = t0
        self.loss_sum, self.n = 0.0, 0

    def add(self, step, loss, val, now, force):
        """Count this step's loss; print a line if forced or log_seconds have passed."""
        t, c = self.trainer, self.trainer.config
        self.loss_sum += loss
        self.n += 1
        if not (force or now - self.last_log >= c.log_seconds):
            return
        dt = now - self.t_mark
        tps = (step - self.step_mark) * c.batch_size * c.block_size / dt if dt > 0 else 0.0
        elapsed = t._elapsed_total()
        eta = t._run_elapsed() / max(step - self.first_step, 1) * (c.steps - step)
        if c.time_budget is not None:
            eta = min(eta, max(0.0, c.time_budget - elapsed))
        t._line(step, self.loss_sum / max(self.n, 1), val, tps, elapsed, eta)
        self.last_log = self.t_mark = time.perf_counter()
        self.loss_sum, self.n, self.step_mark = 0.0, 0, step
