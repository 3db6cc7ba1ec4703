"""The small pretrained GPT that ships inside the package.

``tinylm/assets/gpt-pydoc-char.npz`` is a character-level GPT (preset gpt-s: 4 layers, 4 heads,
d_model 128, context 128; about 0.84M parameters) trained by tinylm itself on the "pydoc" corpus
(CPython's reference text) for 1500 steps.  ``scripts/train_packaged_model.py`` reproduces it;
the README gives its validation loss.  It lets lessons and commands show real generated text
without training first.  It is a tinylm training checkpoint holding only the weights, the
tokenizer and the metadata (no optimizer state), so everything that reads a checkpoint reads it::

    from tinylm.pretrained.packaged import load_packaged_model
    model, tok, meta = load_packaged_model()
"""

import os

__all__ = ["PACKAGED_MODEL", "packaged_model_path", "load_packaged_model"]

PACKAGED_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                              "gpt-pydoc-char.npz")


def packaged_model_path():
    """The path of the packaged checkpoint (FileNotFoundError, saying how to make it, if absent)."""
    if not os.path.exists(PACKAGED_MODEL):
        raise FileNotFoundError("the packaged model %s is missing; `python "
                                "scripts/train_packaged_model.py` recreates it" % PACKAGED_MODEL)
    return PACKAGED_MODEL


def load_packaged_model():
    """(model in eval mode, tokenizer, meta) of the packaged GPT."""
    from tinylm.train import load_trained
    model, tok, meta, _ = load_trained(packaged_model_path())
    return model, tok, meta
