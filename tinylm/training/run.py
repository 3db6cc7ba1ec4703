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
from tinylm.training.state import CHECKPOINT_NAME, tokenizer_from_meta
from tinylm.training.trainer import Trainer

__all__ = ["train"]


def train(model=None, preset=None, data="pydoc", tokenizer="char", out=None, resume=False,
          glob=None, model_config=None, vocab_size=None, max_chars=None, log=print, until=None,
          comm=None, **settings):
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
    out = out or os.path.join("runs", name)
    if resume:
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
        trainer = _new(name, mcfg, TrainConfig(**tset), data, tokenizer, glob, vocab_size,
                       max_chars, out, log, comm)
    result = trainer.fit(until=until)
    return trainer, result


def _new(name, mcfg, tcfg, data, tokenizer, glob, vocab_size, max_chars, out, log, comm):
    """A Trainer for a fresh run: corpus -> tokenizer -> ids, and the model."""
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
    tcfg = TrainConfig(**meta["train_config"])
    if steps is not None:
        tcfg.steps = int(steps)
    if time_budget is not None:
        tcfg.time_budget = float(time_budget)
    source = (meta.get("data"), meta.get("glob"), meta.get("max_chars"))
    tok, train_ids, val_ids = prepare_data(
        source[0], tokenizer_from_meta(meta), glob=source[1],
        val_fraction=tcfg.val_fraction, max_chars=source[2])
    m = build_model(meta["model"], meta["model_config"])
    trainer = Trainer(m, tok, train_ids, val_ids, tcfg, out_dir=out,
                      model_name=meta["model"], log=log, comm=comm)
    trainer.data_source = source
    trainer.load_state(arrays, meta)
    log("resumed from %s at step %d" % (path, trainer.step))
    return trainer
