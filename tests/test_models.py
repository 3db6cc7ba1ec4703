"""Tests of the MLP, RNN, LSTM, BERT and seq2seq models (tinylm.models).

Every model: a whole-model float64 gradient check (tinylm.gradcheck.check_layer,
random upstream gradient, fixed seeds) of the logits and of the loss path,
a "loss falls" run of a few dozen Adam steps, and the behaviour its
docstring promises (left padding, state carrying, masking, padding
invariance, ...).
"""

import dataclasses

import numpy as np
import pytest

from tinylm.teaching import tasks
from tinylm.gradcheck import check_layer
from tinylm.layers.base import Layer
from tinylm.models import build_model, get_model_classes
from tinylm.models.bert import BERT, BERTConfig, SequenceClassifier
from tinylm.models.mlp import MLPConfig, MLPLM
from tinylm.models.rnn import LSTMLM, LSTMLMConfig, RNNLM, RNNLMConfig, tbptt_batches
from tinylm.models.seq2seq import ATTENTION_KINDS, Seq2Seq, Seq2SeqConfig
from tinylm.optim import Adam

V = 7  # vocabulary of the tiny language models


class LossOf(Layer):
    """A model's loss as a layer: forward(*a) = model.<method>(*a) (0-d), backward(g) = model.backward(g).

    Lets check_layer differentiate the whole path input -> loss, criterion included.
    """

    def __init__(self, model, method="loss"):
        super().__init__()
        self.add_layer("model", model)
        self.method = method

    def forward(self, *args):
        return np.asarray(getattr(self.layers["model"], self.method)(*args))

    def backward(self, g):
        return self.layers["model"].backward(g)


def tiny_lm(name, **kw):
    cfg = {
        "mlp": dict(vocab_size=V, context=3, emb_dim=4, hidden=6),
        "rnn": dict(vocab_size=V, emb_dim=4, hidden=5),
        "lstm": dict(vocab_size=V, emb_dim=4, hidden=5),
        "bert": dict(vocab_size=V, block_size=8, n_layer=2, n_head=2, d_model=8, d_ff=12),
    }[name]
    cfg.update(kw)
    return build_model(name, cfg)


def widen_embeddings(model, rng):
    """Give BERT's embedding tables unit scale (they start at std 0.02).

    The gradient formulas do not depend on the values; but LayerNorm of
    0.02-sized vectors is so curved that finite differences with a step that
    is also needed to beat rounding elsewhere lose accuracy.  Unit-scale
    entries keep the *numerical* side of the check accurate.
    """
    embeddings = model.layers["encoder"].layers["embeddings"]
    for n in ("word_embeddings", "position_embeddings"):
        w = embeddings.layers[n].params["weight"]
        w[...] = rng.standard_normal(w.shape)


SUCCESSOR = np.random.default_rng(99).permutation(V)   # the "grammar" of the toy language


def pattern_batch(rng, B=8, T=12):
    """x, y (B, T): rows that follow token -> SUCCESSOR[token] from a random start; y = x shifted."""
    seq = np.empty((B, T + 1), np.int64)
    seq[:, 0] = rng.integers(0, V, B)
    for t in range(T):
        seq[:, t + 1] = SUCCESSOR[seq[:, t]]
    return seq[:, :-1], seq[:, 1:]


def assert_report(report):
    assert report.ok, "\n" + str(report)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "rnn", "lstm", "bert", "seq2seq"])
def test_registry_builds_and_config_round_trips(name):
    config_cls, model_cls = get_model_classes(name)
    model = build_model(name, {"seed": 3})
    assert isinstance(model, model_cls) and isinstance(model.config, config_cls)
    again = build_model(name, dataclasses.asdict(model.config))
    assert list(again.state_dict()) == list(model.state_dict())
    for (n, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=n)
    other = build_model(name, {"seed": 4})
    assert any(not np.array_equal(a, b) for a, b in
               zip(model.state_dict().values(), other.state_dict().values()))


def test_lstm_default_sizes_used_by_the_benchmark():
    c = LSTMLMConfig()
    assert (c.emb_dim, c.hidden) == (64, 256)
    m = LSTMLM(c)
    assert m.layers["rnn"].layers["cell"].params["weight_hh"].shape == (4 * 256, 256)
    assert m.dtype == np.float32


# ---------------------------------------------------------------------------
# Whole-model gradient checks (float64, random upstream gradient)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "rnn", "lstm"])
def test_gradcheck_logits(name):
    rng = np.random.default_rng(10)
    model = tiny_lm(name, dropout=0.25)          # dropout on: its masks are replayed
    x = rng.integers(0, V, (2, 5))
    assert_report(check_layer(model, (x,), max_entries=15, seed=1))


@pytest.mark.parametrize("name", ["mlp", "rnn", "lstm"])
def test_gradcheck_loss_path(name):
    rng = np.random.default_rng(11)
    x, y = rng.integers(0, V, (2, 5)), rng.integers(0, V, (2, 5))
    y[0, 1] = -100                                      # an ignored target
    assert_report(check_layer(LossOf(tiny_lm(name)), (x, y), max_entries=10, seed=2))


@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_gradcheck_bert(objective):
    rng = np.random.default_rng(12)
    model = tiny_lm("bert", dropout=0.1, objective=objective,
                    n_layer=2 if objective == "mlm" else 1)
    widen_embeddings(model, rng)
    x = rng.integers(0, V + 1, (2, 5))                  # V = [MASK] is a valid input
    am = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert_report(check_layer(model, (x,), kwargs={"attention_mask": am},
                              max_entries=8, seed=3))


def test_gradcheck_bert_masked_loss_path():
    # loss(x) draws its own masks; check_layer rewinds the model's generators
    # (mask_rng, dropout) before every forward, so each forward masks alike.
    rng = np.random.default_rng(13)
    model = tiny_lm("bert", n_layer=1, dropout=0.1, mask_prob=0.4)
    widen_embeddings(model, rng)
    x = rng.integers(0, V, (2, 6))
    assert_report(check_layer(LossOf(model), (x,), max_entries=10, seed=4))


def test_gradcheck_sequence_classifier():
    rng = np.random.default_rng(14)
    enc = tiny_lm("bert", n_layer=1)
    widen_embeddings(enc, rng)
    clf = SequenceClassifier(enc, num_classes=3)
    x = rng.integers(0, V, (3, 5))
    am = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    assert_report(check_layer(clf, (x,), kwargs={"attention_mask": am}, max_entries=8, seed=5))
    labels = np.array([0, 2, 1])
    wrapped = LossOf(clf)
    assert_report(check_layer(wrapped, (x, labels, am), max_entries=4, seed=6))


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
def test_gradcheck_seq2seq(attention):
    task = tasks.SequenceTask(num_symbols=4, min_len=2, max_len=5, seed=1)
    src, tgt_in, tgt_out, src_len = task.batch(3)
    assert len(set(src_len.tolist())) > 1                # variable lengths, padding present
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=task.vocab_size, tgt_vocab_size=task.vocab_size,
                                  emb_dim=3, hidden=4, attn_size=5, attention=attention))
    assert_report(check_layer(model, (src, tgt_in), max_entries=12, seed=7))
    assert_report(check_layer(LossOf(model), (src, tgt_in, tgt_out), max_entries=8, seed=8))


# ---------------------------------------------------------------------------
# Loss falls on a tiny run (Adam, a few dozen steps)
# ---------------------------------------------------------------------------

def train_steps(model, batch_fn, steps, lr):
    opt = Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.loss(*batch_fn())
        model.zero_grad()
        model.backward()
        opt.step()
        losses.append(loss)
    return losses


@pytest.mark.parametrize("name,kw,lr", [
    ("mlp", dict(emb_dim=8, hidden=32), 1e-2),
    ("rnn", dict(emb_dim=8, hidden=32), 1e-2),
    ("lstm", dict(emb_dim=8, hidden=32), 2e-2),
    ("bert", dict(objective="causal", d_model=16, n_head=2, d_ff=32, dropout=0.0,
                  block_size=12), 1e-2),
])
def test_loss_falls_language_models(name, kw, lr):
    rng = np.random.default_rng(20)
    model = tiny_lm(name, **kw)
    losses = train_steps(model, lambda: pattern_batch(rng), 40, lr)
    assert all(np.isfinite(losses))
    # every next token is determined by the current one: the loss must fall far
    # below its start (about log V = 1.95 nats)
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3]), losses


def test_loss_falls_bert_mlm():
    rng = np.random.default_rng(21)
    model = tiny_lm("bert", d_model=16, n_head=2, d_ff=32, dropout=0.0, block_size=12,
                    mask_prob=0.3)
    losses = train_steps(model, lambda: pattern_batch(rng, B=16)[:1], 40, 1e-2)
    # a masked token is given away by its neighbours
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("attention", ["dot", "none"])
def test_loss_falls_seq2seq(attention):
    task = tasks.SequenceTask(num_symbols=5, min_len=2, max_len=5, transform="reverse", seed=2)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=task.vocab_size, tgt_vocab_size=task.vocab_size,
                                  emb_dim=16, hidden=32, attention=attention))
    losses = train_steps(model, lambda: task.batch(16), 60, 1e-2)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses


def test_fine_tuning_classifier_learns():
    # label = whether token 0 occurs in the sequence (needs the whole sequence)
    rng = np.random.default_rng(22)
    enc = tiny_lm("bert", d_model=16, n_head=2, d_ff=32, dropout=0.0, block_size=8)
    clf = SequenceClassifier(enc, num_classes=2)

    def batch():
        x = rng.integers(1, V, (16, 6))
        labels = rng.integers(0, 2, 16)
        for b in np.flatnonzero(labels):
            x[b, rng.integers(6)] = 0
        return x, labels
    losses = train_steps(clf, batch, 40, 1e-2)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses


# ---------------------------------------------------------------------------
# MLP LM: the window and its left padding
# ---------------------------------------------------------------------------

def test_mlp_window_and_left_padding():
    model = tiny_lm("mlp")                       # context n = 3
    rng = np.random.default_rng(30)
    x = rng.integers(0, V, (1, 8))
    win = model.windows(x)
    assert win.shape == (1, 8, 3)
    np.testing.assert_array_equal(win[0, 0], [V, V, x[0, 0]])        # pad id = V
    np.testing.assert_array_equal(win[0, 5], x[0, 3:6])
    base = model.forward(x)
    x2 = x.copy()
    x2[0, 2] = (x[0, 2] + 1) % V                 # token 2 is in the windows of t = 2, 3, 4 only
    changed = np.abs(model.forward(x2) - base).max(axis=-1)[0] > 0
    np.testing.assert_array_equal(changed, [t in (2, 3, 4) for t in range(8)])


def test_bad_ids_raise_clear_errors():
    model = tiny_lm("mlp")
    with pytest.raises(ValueError, match=r"id 7 at position \(0, 2\)"):
        model.forward(np.array([[1, 2, V, 3]]))           # the pad id is not a token
    with pytest.raises(TypeError, match="integer"):
        model.forward(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="dimensions"):
        model.forward(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        model.loss(np.zeros((2, 3), np.int64), np.zeros((2, 4), np.int64))
    with pytest.raises(RuntimeError, match="loss"):
        tiny_lm("rnn").backward()


# ---------------------------------------------------------------------------
# RNN / LSTM LMs: cache, stateful truncated BPTT
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_forward_step_in_pieces_equals_whole(name):
    model = tiny_lm(name).eval()
    x = np.random.default_rng(31).integers(0, V, (2, 9))
    whole = model.forward(x)
    cache = model.init_cache(2)
    parts = [model.forward_step(x[:, a:b], cache) for a, b in ((0, 4), (4, 5), (5, 9))]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_stateful_carries_state_across_chunks(name):
    rng = np.random.default_rng(32)
    x = rng.integers(0, V, (2, 10))
    full = tiny_lm(name).eval().forward(x)                       # one pass over 10 tokens
    model = tiny_lm(name, stateful=True)                         # training mode, dropout 0
    first = model.forward(x[:, :6])
    second = model.forward(x[:, 6:])                             # starts from the carried state
    np.testing.assert_allclose(np.concatenate([first, second], 1), full, rtol=1e-5, atol=1e-6)
    y = rng.integers(0, V, (2, 4))
    model.loss(x[:, 6:], y)
    model.zero_grad()
    model.backward()                                             # stops at the cut
    assert all(np.isfinite(g).all() for _, _, g in model.named_parameters())
    # without the carried state, the second chunk's logits differ
    fresh = tiny_lm(name).forward(x[:, 6:])                      # zero initial state
    assert not np.allclose(fresh, second)
    model.reset_state()
    np.testing.assert_allclose(model.forward(x[:, 6:]), fresh, rtol=1e-6)
    # eval mode neither uses nor changes the state; a new batch size starts afresh
    carried = model.state
    model.eval()
    np.testing.assert_allclose(model.forward(x[:, 6:]), tiny_lm(name).eval().forward(x[:, 6:]),
                               rtol=1e-6)
    assert model.state is carried
    model.train()
    one = model.forward(x[:1, :3])
    np.testing.assert_allclose(one, tiny_lm(name).forward(x[:1, :3]), rtol=1e-6)


def test_stateless_default_forgets():
    model = tiny_lm("rnn")
    x = np.random.default_rng(33).integers(0, V, (2, 5))
    np.testing.assert_array_equal(model.forward(x), model.forward(x))
    assert model.state is None


def test_tbptt_batches_are_contiguous():
    ids = np.arange(103)
    batches = list(tbptt_batches(ids, batch_size=3, block_size=5))
    assert len(batches) == 34 // 5
    for k, (x, y) in enumerate(batches):
        assert x.shape == y.shape == (3, 5)
        np.testing.assert_array_equal(y, x + 1)             # y is x shifted by one
        np.testing.assert_array_equal(x[:, 0], np.arange(3) * 34 + 5 * k)
    with pytest.raises(ValueError, match="too few"):
        list(tbptt_batches(np.arange(10), batch_size=3, block_size=5))


# ---------------------------------------------------------------------------
# BERT: masking, attention mask, objective
# ---------------------------------------------------------------------------

def test_mask_tokens_80_10_10():
    model = tiny_lm("bert", vocab_size=50)
    rng = np.random.default_rng(40)
    x = rng.integers(0, 50, (200, 200))
    inputs, targets = model.mask_tokens(x)
    sel = targets != model.ignore_index
    assert abs(sel.mean() - 0.15) < 0.01
    np.testing.assert_array_equal(targets[sel], x[sel])
    np.testing.assert_array_equal(inputs[~sel], x[~sel])           # unselected: untouched
    n = sel.sum()
    masked = (inputs[sel] == model.mask_id).mean()
    kept = (inputs[sel] == x[sel]).mean()                          # 10% kept + random hits
    rand = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(kept - (0.1 + 0.1 / 50)) < 0.015
    assert abs(rand - 0.1 * 49 / 50) < 0.015, (n, masked, kept, rand)
    assert inputs.max() <= model.mask_id
    # seeded: a model with the same seed masks alike; padding is never selected
    again = tiny_lm("bert", vocab_size=50).mask_tokens(x)
    np.testing.assert_array_equal(again[0], inputs)
    am = np.ones_like(x)
    am[:, 150:] = 0
    _, t = model.mask_tokens(x, attention_mask=am)
    assert (t[:, 150:] == model.ignore_index).all() and (t[:, :150] != model.ignore_index).any()


def test_mask_tokens_always_selects_one():
    model = tiny_lm("bert", mask_prob=0.01)
    _, targets = model.mask_tokens(np.array([[1, 2, 3]]))
    assert (targets != model.ignore_index).sum() >= 1


def test_bert_loss_ignores_y_and_masks_itself():
    x = np.random.default_rng(41).integers(0, V, (2, 6))
    a = tiny_lm("bert", dropout=0.0).loss(x, np.zeros_like(x))
    b = tiny_lm("bert", dropout=0.0).loss(x, None)
    assert a == b
    m = tiny_lm("bert", dropout=0.0)
    assert m.loss(x) != m.loss(x)                 # a fresh mask each call


def test_bert_bidirectional_vs_causal():
    x = np.random.default_rng(42).integers(0, V, (1, 6))
    x2 = x.copy()
    x2[0, 4] = (x[0, 4] + 1) % V                  # change a later token
    for objective, sees_future in (("mlm", True), ("causal", False)):
        m = tiny_lm("bert", dropout=0.0, objective=objective)
        diff = np.abs(m.forward(x) - m.forward(x2)).max(axis=-1)[0]
        assert (diff[:4] > 0).all() == sees_future, (objective, diff)
        assert (diff[4:] > 0).all()


def test_bert_attention_mask_hides_padding():
    m = tiny_lm("bert", dropout=0.0)
    rng = np.random.default_rng(43)
    x = rng.integers(0, V, (2, 6))
    am = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    h = m.encode(x, am)
    x2 = x.copy()
    x2[0, 4:] = rng.integers(0, V, 2)
    h2 = m.encode(x2, am)
    np.testing.assert_allclose(h2[0, :4], h[0, :4], rtol=1e-5, atol=1e-6)
    assert h.shape == (2, 6, m.config.d_model)
    with pytest.raises(ValueError, match="block_size"):
        m.forward(rng.integers(0, V, (1, 9)))
    with pytest.raises(ValueError, match="no real token"):
        m.encode(x, np.array([[0] * 6, [1] * 6]))
    with pytest.raises(RuntimeError, match="encode"):
        tiny_lm("bert").encode_backward(h)


# ---------------------------------------------------------------------------
# Seq2seq
# ---------------------------------------------------------------------------

def s2s(attention, task, **kw):
    cfg = dict(src_vocab_size=task.vocab_size, tgt_vocab_size=task.vocab_size, emb_dim=8,
               hidden=12, attention=attention)
    cfg.update(kw)
    return Seq2Seq(Seq2SeqConfig(**cfg))


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
def test_seq2seq_padding_does_not_change_the_result(attention):
    task = tasks.SequenceTask(num_symbols=6, min_len=3, max_len=7, seed=3)
    src, tgt_in, _, src_len = task.batch(4)
    model = s2s(attention, task)
    base = model.forward(src, tgt_in)
    padded = np.concatenate([src, np.full((4, 3), tasks.PAD)], axis=1)   # more trailing PAD
    np.testing.assert_allclose(model.forward(padded, tgt_in), base, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.forward(src, tgt_in, src_len), base, rtol=1e-6)
    if attention != "none":
        w = model.attention_weights                                      # (B, T, S)
        pad = np.arange(src.shape[1])[None, :] >= src_len[:, None]
        assert (w.transpose(1, 0, 2)[:, pad] == 0).all()
        np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-5)


def test_seq2seq_translate_and_accuracy_after_training():
    task = tasks.SequenceTask(num_symbols=4, min_len=2, max_len=4, transform="reverse", seed=4)
    model = s2s("dot", task, hidden=32)
    train_steps(model, lambda: task.batch(32), 150, 1e-2)
    src, _, tgt_out, src_len = task.batch(64, rng=np.random.default_rng(5))
    ids, w = model.translate(src, src_len=src_len)
    assert ids.dtype == np.int64 and ids.shape[1] <= 2 * src.shape[1] + 2
    assert w.shape == ids.shape + (src.shape[1],)
    for row in ids:                                  # EOS then only PAD
        if (row == tasks.EOS).any():
            assert (row[np.argmax(row == tasks.EOS) + 1:] == tasks.PAD).all()
    assert model.training                           # translate restores the mode
    assert tasks.sequence_accuracy(ids, tgt_out) > 0.5
    by_len = tasks.accuracy_by_length(model, task, [2, 4], num_examples=20)
    assert set(by_len) == {2, 4}
    assert all(0.0 <= a <= 1.0 and 0.0 <= t <= 1.0 for a, t in by_len.values())
    assert by_len[2][0] > 0.5


def test_seq2seq_bad_input():
    task = tasks.SequenceTask(num_symbols=4, seed=5)
    model = s2s("dot", task)
    with pytest.raises(ValueError, match="PAD"):
        model.forward(np.array([[3, 0, 4]]), np.array([[1, 3]]))
    with pytest.raises(ValueError, match="src_len"):
        model.forward(np.array([[3, 4, 5]]), np.array([[1, 3]]), src_len=np.array([4]))
    with pytest.raises(ValueError, match="batch size"):
        model.forward(np.array([[3, 4]]), np.array([[1, 3], [1, 4]]))
    with pytest.raises(ValueError, match="attention"):
        s2s("bahdanau", task)


def test_task_generator():
    task = tasks.SequenceTask(num_symbols=6, min_len=2, max_len=6, transform="translate", seed=6)
    src, tgt_in, tgt_out, src_len = task.batch(20)
    for b in range(20):
        n = src_len[b]
        s = src[b, :n]
        assert (src[b, n:] == tasks.PAD).all() and (s >= 3).all()
        expected = task.mapping[(s - 3)[::-1]] + 3                   # reversed, then mapped
        np.testing.assert_array_equal(tgt_out[b, :n], expected)
        assert tgt_out[b, n] == tasks.EOS and tgt_in[b, 0] == tasks.BOS
        np.testing.assert_array_equal(tgt_in[b, 1:n + 1], expected)
    assert sorted(task.mapping) == list(range(6)) and (task.mapping != np.arange(6)).any()
    assert tasks.sequence_accuracy(tgt_out, tgt_out) == 1.0
    wrong = tgt_out.copy()
    wrong[0, 0] = 3 + (wrong[0, 0] - 2) % 6
    assert tasks.sequence_accuracy(wrong, tgt_out) == 19 / 20
    _, _, _, lens = task.batch(5, length=4)
    assert (lens == 4).all()
    with pytest.raises(ValueError, match="transform"):
        tasks.SequenceTask(transform="sort")
