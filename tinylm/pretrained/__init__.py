"""Pretrained models: a BERT sentence encoder (all-MiniLM-L6-v2) and what uses it.

Modules, in dependency order:

* ``safetensors`` - read/write Hugging Face's weight format (no pickle);
* ``wordpiece``   - BERT's WordPiece tokenizer;
* ``encoder``     - the BERT encoder from tinylm's layers, loaded from a
  Hugging Face folder (``load_sentence_encoder``);
* ``search``      - semantic search over a corpus's paragraphs;
* ``finetune``    - a classifier trained on top of the encoder.

The encoder's public names are re-exported here, so
``from tinylm.pretrained import load_sentence_encoder`` works.
"""

from tinylm.pretrained.encoder import (  # noqa: F401
    BERTConfig, BertEncoder, config_from_hf, hf_config, MeanPooling, L2Normalize, SentenceEncoder,
    ModelNotFoundError, default_model_dir, find_model_dir, load_sentence_encoder,
    load_bert_weights, hf_parameter_names, MODEL_PACKAGE, INSTALL_HINT,
)
from tinylm.pretrained.encoder import __all__  # noqa: F401
