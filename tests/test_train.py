"""tinylm.train: a tiny run learns, resume reproduces the losses, failures keep checkpoints."""

import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tinylm.checkpoint import load_checkpoint
from tinylm.training import (BEST_NAME, CHECKPOINT_NAME, PLOT_NAME, TrainConfig, Trainer,
                          evaluate, load_trained, prepare_data, train)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small slice of the default corpus keeps every run here to a few seconds.
SMALL = dict(preset="gpt-tiny", max_chars=20000, log=lambda s: None, plot=False,
             eval_batches=2)


def test_tiny_run_learns_and_writes_files(tmp_path):
    out = str(tmp_path / "run")
    trainer, res = train(out=out, steps=40, eval_interval=20, **dict(SMALL, plot=True))
    h = res.history
    assert res.stopped == "done" and res.step == 40
    assert len(h["train_loss"]) == 40 and h["step"] == list(range(1, 41))
    V = trainer.tokenizer.vocab_size
    assert h["train_loss"][0] > math.log(V) - 0.3          # starts near uniform
    assert np.mean(h["train_loss"][-5:]) < h["train_loss"][0] - 0.8
    assert h["val_step"] == [20, 40] and h["val_loss"][1] < h["val_loss"][0]
    for name in (CHECKPOINT_NAME, BEST_NAME, PLOT_NAME):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, PLOT_NAME), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the checkpoint rebuilds the model: same validation loss
    model, tok, meta, _ = load_trained(os.path.join(out, CHECKPOINT_NAME))
    assert meta["step"] == 40 and tok.to_dict() == trainer.tokenizer.to_dict()
    c = trainer.config
    again = evaluate(model, trainer.val_ids, c.block_size, c.batch_size, c.eval_batches)
    assert again == pytest.approx(h["val_loss"][-1], rel=1e-6)


def test_seeded_runs_are_reproducible(tmp_path):
    _, a = train(out=str(tmp_path / "a"), steps=8, seed=3, **SMALL)
    _, b = train(out=str(tmp_path / "b"), steps=8, seed=3, **SMALL)
    _, c = train(out=str(tmp_path / "c"), steps=8, seed=4, **SMALL)
    assert a.history["train_loss"] == b.history["train_loss"]
    assert a.history["train_loss"] != c.history["train_loss"]


def test_resume_reproduces_the_loss_trajectory(tmp_path):
    """N steps straight == N/2 (+ 2 lost steps), interruption, --resume to N."""
    kw = dict(steps=20, eval_interval=5, model_config=dict(dropout=0.2), **SMALL)
    _, straight = train(out=str(tmp_path / "a"), **kw)
    out = str(tmp_path / "b")
    _, first = train(out=out, until=12, **kw)     # stops at 12; last checkpoint: step 10
    assert first.stopped == "interrupted"
    assert load_checkpoint(os.path.join(out, CHECKPOINT_NAME))[1]["step"] == 10
    _, resumed = train(out=out, resume=True, log=lambda s: None,
                       **{k: v for k, v in kw.items() if k not in ("log",)})
    assert resumed.step == 20
    assert resumed.history["train_loss"] == straight.history["train_loss"]   # exactly
    assert resumed.history["val_loss"] == straight.history["val_loss"]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume"):
        train(out=str(tmp_path / "none"), resume=True, **SMALL)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    tok, tr, va = prepare_data("pydoc", "char", max_chars=20000)
    from tinylm.models import build_model
    model = build_model("gpt", dict(vocab_size=tok.vocab_size, block_size=32, n_layer=1,
                                    n_head=2, d_model=32))
    lines = []
    trainer = Trainer(model, tok, tr, va, TrainConfig(steps=30, batch_size=4,
                                                      eval_interval=5, eval_batches=2),
                      out_dir=out, model_name="gpt", log=lines.append)
    real_loss = model.loss
    calls = {"n": 0}

    def loss(x, y):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 8:
                return float("nan")
        return real_loss(x, y)
    model.loss = loss
    res = trainer.fit()
    assert res.stopped == "non-finite" and res.step == 7
    assert any("nan" in s and "step 5" in s for s in lines), lines
    meta = load_checkpoint(os.path.join(out, CHECKPOINT_NAME))[1]
    assert meta["step"] == 5
    model2, _, _, _ = load_trained(os.path.join(out, CHECKPOINT_NAME))
    assert all(np.all(np.isfinite(p)) for _, p, _ in model2.named_parameters())


def test_early_stopping(tmp_path):
    # lr 0: the validation loss never improves after the first evaluation
    _, res = train(out=str(tmp_path / "run"), steps=100, eval_interval=2, patience=2,
                   lr=0.0, min_lr=0.0, **SMALL)
    assert res.stopped == "early-stop" and res.step == 6


def test_time_budget_stops_and_the_schedule_follows_the_clock(tmp_path):
    trainer, res = train(out=str(tmp_path / "run"), time_budget=2.0, warmup=1, **SMALL)
    assert res.stopped == "time" and res.step >= 2
    assert res.elapsed < 2.0 + 10.0            # generous: the machine is shared
    lr = res.history["lr"]
    peak = trainer.config.lr
    assert max(lr) <= peak and lr[-1] < 0.5 * peak   # decayed by the time the budget ran out


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL a trainer that saves in a loop: the checkpoint always loads."""
    out = str(tmp_path / "run")
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        from tinylm.training import train
        train(preset="gpt-tiny", max_chars=20000, out=%r, steps=10**6, eval_interval=1,
              eval_batches=1, log=lambda s: print(s, flush=True), plot=False)
    """) % (ROOT, out)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(12):                      # wait until a few checkpoints were written
            line = p.stdout.readline()
            if not line:
                break
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    path = os.path.join(out, CHECKPOINT_NAME)
    model, tok, meta, _ = load_trained(path)
    assert meta["step"] >= 1


def test_optimizer_choice_and_weight_decay_defaults():
    from tinylm import optim
    from tinylm.models import build_model
    tok, tr, va = prepare_data("pydoc", "char", max_chars=5000)
    model = build_model("gpt", dict(vocab_size=tok.vocab_size, block_size=8, n_layer=1,
                                    n_head=1, d_model=8))
    t = Trainer(model, tok, tr, va, TrainConfig(optimizer="adam"), log=None)
    assert type(t.optimizer) is optim.Adam and t.optimizer.weight_decay == 0.0
    t = Trainer(model, tok, tr, va, TrainConfig(), log=None)
    assert type(t.optimizer) is optim.AdamW and t.optimizer.weight_decay == 0.01
    t = Trainer(model, tok, tr, va, TrainConfig(optimizer="sgd", lr=0.1), log=None)
    assert type(t.optimizer) is optim.SGD
    with pytest.raises(ValueError, match="unknown optimizer"):
        Trainer(model, tok, tr, va, TrainConfig(optimizer="lbfgs"), log=None)
