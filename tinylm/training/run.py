"""``train()``: a run from names (model, preset, corpus, tokenizer), or resumed from its folder.

What ``tinylm train`` calls: resolve the preset, prepare the data, build the
model and a Trainer (or restore both from ``out/checkpoint.npz``), then fit.
"""

import dataclasses
import os

from tinylm import checkpoint as ckpt
from tinylm.models import build_model, get_model_classes
from tinylm.training.config import TrainConfig, resolve
from tinylm.training.prepare import prepare_data
from tinylm.training.state import BEST_NAME, CHECKPOINT_NAME, PLOT_NAME, tokenizer_from_meta
from tinylm.training.trainer import Trainer

__all__ = ["train", "RunFolderError", "check_run_folder"]


class RunFolderError(ValueError):
    """The --out folder cannot be used as asked (it holds a run, or it is a file)."""


def check_run_folder(out, resume=False, overwrite=False):
    """Refuse to silently overwrite a run: the folder's state must match the request.

    A new run (neither flag) needs ``out`` to hold no run yet; ``resume`` needs
    ``out/checkpoint.npz``; ``overwrite`` allows replacing the old run (see
    :func:`remove_run`, called once the new run is built).
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: continue the "
                             "run in %s, or replace it" % out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunFolderError("--out %s is a file, not a folder; choose a folder for "
                             "checkpoint.npz, best.npz and loss.png" % out)
    existing = [n for n in (CHECKPOINT_NAME, BEST_NAME) if os.path.exists(os.path.join(out, n))]
    if resume:
        if CHECKPOINT_NAME not in existing:
            raise FileNotFoundError("--resume: no checkpoint at %s (train without --resume "
                                    "first, or pass the right --out)"
                                    % os.path.join(out, CHECKPOINT_NAME))
        return
    if existing and not overwrite:
        try:
            what = " (step %s)" % ckpt.load_meta(os.path.join(out, existing[0])).get("step")
        except (OSError, ValueError):
            what = ""
        raise RunFolderError("%s already holds a run%s; continue it with --resume, replace it "
                             "with --overwrite, or choose another --out" % (out, what))


def remove_run(out):
    """Delete a run's checkpoint, best model and plot (for --overwrite)."""
    for name in (CHECKPOINT_NAME, BEST_NAME, PLOT_NAME):
        path = os.path.join(out, name)
        if os.path.isfile(path):
            os.unlink(path)


def train(model=None, preset=None, data="pydoc", tokenizer="char", out=None, resume=False,
          glob=None, model_config=None, vocab_size=None, max_chars=None, log=print, until=None,
          comm=None, overwrite=False, **settings):
    """Train a model by name; returns (trainer, TrainResult).

    model: a registered model name (default "gpt"); preset: a key of PRESETS
    (default: the model's default preset).  model_config and ``settings``
    (any TrainConfig field: steps=, lr=, seed=, ...) override the preset.  An
    explicit ``steps`` replaces a preset's time cap; an explicit
    ``time_budget`` alone lets the time decide.  out: folder for
    checkpoint.npz, best.npz, loss.png (default runs/<model>).  resume:
    continue from out/checkpoint.npz with the same data, tokenizer, optimizer
    state and RNGs (the losses are the ones the uninterrupted run would have
    had); only steps and time_budget may change then.  comm: a
    :class:`tinylm.training.distributed.Comm` to train data-parallel on every
    rank of an MPI job (each rank calls train() with the same arguments);
    rank 0 alone logs and writes files.
    An ``out`` that already holds a run is refused unless ``resume`` or
    ``overwrite`` (which deletes the old run once the new one is built) is given.
    """
    if comm is not None and not comm.is_root:
        log = lambda *a, **k: None    # noqa: E731  (rank 0 alone prints)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError("unknown training setting(s) %s; known: %s"
                         % (", ".join(unknown), ", ".join(sorted(known))))
    steps, time_budget = settings.pop("steps", None), settings.pop("time_budget", None)
    name, mcfg, tset = resolve(model, preset)
    out = os.fspath(out or os.path.join("runs", name))
    if resume:
        if comm is None or comm.is_root:
            check_run_folder(out, resume=True)
        trainer = _resumed(out, steps, time_budget, log, comm)
    else:
        mcfg.update(model_config or {})
        tset.update(settings)
        if steps is not None:
            tset["steps"] = int(steps)
            if time_budget is None:
                tset["time_budget"] = None   # an explicit --steps replaces a preset's time cap
        if time_budget is not None:
            tset["time_budget"] = float(time_budget)
            if steps is None:
                tset["steps"] = 10 ** 9       # the time decides
        tcfg = TrainConfig(**tset)      # bad settings fail before an old run is touched
        if comm is None or comm.is_root:
            check_run_folder(out, overwrite=overwrite)
        trainer = _new(name, mcfg, tcfg, data, tokenizer, glob, vocab_size, max_chars, out, log,
                       comm)
        if overwrite and (comm is None or comm.is_root):   # only now the new run can start
            remove_run(out)
    result = trainer.fit(until=until)
    return trainer, result


def _new(name, mcfg, tcfg, data, tokenizer, glob, vocab_size, max_chars, out, log, comm):
    """A Trainer for a fresh run: corpus -> tokenizer -> ids, and the model."""
    tok, train_ids, val_ids = prepare_data(data, tokenizer, glob=glob,
                                           val_fraction=tcfg.val_fraction,
                                           vocab_size=vocab_size, max_chars=max_chars,
                                           split=tcfg.val_split)
    config_cls, _ = get_model_classes(name)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    if "vocab_size" in fields:
        mcfg["vocab_size"] = tok.vocab_size
    if "seed" in fields:
        mcfg.setdefault("seed", tcfg.seed)
    m = build_model(name, mcfg)
    trainer = Trainer(m, tok, train_ids, val_ids, tcfg, out_dir=out, model_name=name, log=log,
                      comm=comm)
    trainer.data_source = (data, glob, max_chars)
    log("model %s: %s parameters | data %s: %d train / %d validation tokens | "
        "vocabulary %d (%s)" % (name, "{:,}".format(m.num_parameters()),
                                data, len(train_ids), len(val_ids), tok.vocab_size,
                                tokenizer if isinstance(tokenizer, str)
                                else type(tokenizer).__name__))
    return trainer


def _resumed(out, steps, time_budget, log, comm):
    """The Trainer saved in out/checkpoint.npz, with the same data, tokenizer and state."""
    path = os.path.join(out, CHECKPOINT_NAME)
    if comm is None or comm.is_root:
        if not os.path.exists(path):
            raise FileNotFoundError("--resume: no checkpoint at %s (train without "
                                    "--resume first, or pass the right --out)" % path)
        arrays, meta = ckpt.load_checkpoint(path)
    if comm is not None:          # rank 0 reads it (other hosts may not see the file)
        arrays, meta = comm.bcast((arrays, meta) if comm.is_root else None)
    tc = dict(meta["train_config"])
    tc.setdefault("val_split", "tail")       # checkpoints from before the blocks split
    tcfg = TrainConfig(**tc)
    if steps is not None:
        tcfg.steps = int(steps)
    if time_budget is not None:
        tcfg.time_budget = float(time_budget)
    source = (meta.get("data"), meta.get("glob"), meta.get("max_chars"))
    tok, train_ids, val_ids = prepare_data(
        source[0], tokenizer_from_meta(meta), glob=source[1],
        val_fraction=tcfg.val_fraction, max_chars=source[2], split=tcfg.val_split)
    m = build_model(meta["model"], meta["model_config"])
    trainer = Trainer(m, tok, train_ids, val_ids, tcfg, out_dir=out,
                      model_name=meta["model"], log=log, comm=comm)
    trainer.data_source = source
    trainer.load_state(arrays, meta)
    log("resumed from %s at step %d" % (path, trainer.step))
    return trainer
