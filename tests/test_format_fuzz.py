"""Every file format tinylm reads: fuzzed (random bytes, truncations, flipped bytes,
crafted headers) under a 1 GiB memory limit; each file loads or gets one clear
FormatError line naming it (see tests/format_fuzz.py and tinylm/limits.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tinylm

REPO = Path(__file__).resolve().parents[1]
N_RANDOM = {"checkpoint": 300, "tokenizer": 300, "safetensors": 300, "model-folder": 120}

EXPECTED = {   # crafted case -> a phrase its message must contain
    "checkpoint": {
        "text renamed .npz": "not a tinylm checkpoint",
        "2**40 floats": "elements, more than the limit",
        "shape overflow": "elements, more than the limit",
        "object dtype": "no pickle",
        "structured dtype": "no pickle",
        "not npy member": "not a tinylm checkpoint",
        "many members": "members, more than the limit",
        "deep meta": "JSON nested 200000 deep",
        "meta not dict": "not a tinylm checkpoint",
        "meta float array": "not a byte string",
        "absurd meta tokenizer": "MAX_BPE_TOKEN_BYTES",
        "zip bomb": "would expand to",
        "lying size": "would expand to",
    },
    "tokenizer": {
        "deep": "JSON nested 200000 deep",
        "doubling merges": "MAX_BPE_TOKEN_BYTES",
        "float id": "not a pair of integer ids",
        "bool id": "not a pair of integer ids",
        "too many merges": "MAX_BPE_MERGES",
        "huge": "MAX_JSON_BYTES",
        "not utf8": "not UTF-8",
    },
    "safetensors": {
        "deep": "JSON nested 200000 deep",
        "huge header length": "over the 100000000-byte limit",
        "many dims": "more than the limit of 8",
        "2**40 floats": "run past the end",
        "unknown dtype": "unsupported dtype",
        "bool shape": "non-negative integers",
        "not a dict": "must be a JSON object",
        "odd offset": "loaded",                 # as an aligned copy (checked in the reader)
    },
    "model-folder": {
        "config.json deep": "JSON nested 200000 deep",
        "config.json hidden_size 10**9": "does config.json match the weights",
        "config.json 10**6 layers": "BERT weight(s) missing",
        "config.json vocab 10**12": "does config.json match the weights",
        "config.json a list": "must hold a JSON object",
        "modules.json deep": "JSON nested 200000 deep",
        "modules.json a dict": "must hold a JSON array",
        "tokenizer_config.json deep": "JSON nested 100000 deep",
        "vocab.txt binary": "not UTF-8",
        "vocab.txt huge": "more than the limit",
        "1_Pooling/config.json deep": "JSON nested 200000 deep",
    },
}


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_format_fuzz(fmt, tmp_path):
    src = str(Path(tinylm.__file__).resolve().parents[1])    # the tinylm these tests import
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(REPO / "tests" / "format_fuzz.py"), fmt,
                        str(N_RANDOM[fmt]), "0", str(tmp_path)], env=env, cwd=str(REPO),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert counts["cases"] == N_RANDOM[fmt] + len(counts["messages"])
    for label, phrase in EXPECTED[fmt].items():
        assert phrase in counts["messages"][label], (label, counts["messages"][label])
    print("%s fuzz: %d cases (%d crafted), %d refused with one clear line, %d loaded"
          % (fmt, counts["cases"], len(counts["messages"]), counts["refused"],
             counts["loaded"]))
