"""Fuzz cases for every file format tinylm reads (used by tests/test_format_fuzz.py).

``python tests/format_fuzz.py FORMAT N SEED FOLDER`` writes N malformed files
of that format (random bytes, truncations, flipped bytes, crafted headers),
reads each with tinylm under a 1 GiB address-space limit, and prints one JSON
line of counts.  Every file must either load or raise a tinylm
``FormatError`` (a ``ValueError``); anything else -- MemoryError,
RecursionError, a traceback of another kind -- is printed and exits 1.
"""

import io
import json
import os
import random
import resource
import sys
import traceback
import zipfile

import numpy as np

try:                                     # the tinylm on PYTHONPATH, else this checkout's
    import tinylm  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinylm.checkpoint import save_checkpoint, load_checkpoint   # noqa: E402
from tinylm.limits import FormatError                            # noqa: E402
from tinylm.tokenizers import BPETokenizer, load_tokenizer, tokenizer_from_dict  # noqa: E402

MEMORY_LIMIT = 2**30


def npy_bytes(header, data=b""):
    """A .npy member with a hand-written header dict (version 1.0)."""
    h = repr(header).encode("latin1")
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def zip_bytes(members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def meta_member(text):
    data = text.encode() if isinstance(text, str) else text
    return ("__meta__.npy", npy_bytes({"descr": "|u1", "fortran_order": False,
                                       "shape": (len(data),)}, data))


GOOD_META = '{"format": "tinylm-checkpoint", "format_version": 1}'


def crafted_checkpoints():
    """(label, bytes) pairs: the attacks the issue lists, and their relatives."""
    yield "text renamed .npz", b"hello, this is a text file\n" * 20
    yield "2**40 floats", zip_bytes([meta_member(GOOD_META), ("w.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (2**40,)}, b"\0" * 64))])
    yield "shape overflow", zip_bytes([meta_member(GOOD_META), ("w.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (2**62, 2**62)}))])
    yield "object dtype", zip_bytes([meta_member(GOOD_META), ("w.npy", npy_bytes(
        {"descr": "|O", "fortran_order": False, "shape": (1,)}, b"\x80\x04N."))])
    yield "structured dtype", zip_bytes([meta_member(GOOD_META), ("w.npy", npy_bytes(
        {"descr": [("a", "<f8")], "fortran_order": False, "shape": (1,)}, b"\0" * 8))])
    yield "not npy member", zip_bytes([meta_member(GOOD_META), ("evil.pkl", b"\x80\x04N.")])
    yield "many members", zip_bytes([meta_member(GOOD_META)] + [
        ("a%d.npy" % i, npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (0,)}))
        for i in range(10_001)])
    yield "deep meta", zip_bytes([meta_member("[" * 200_000 + "]" * 200_000)])
    yield "meta not dict", zip_bytes([meta_member("[1, 2]")])
    yield "meta float array", zip_bytes([("__meta__.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (1,)}, b"\0" * 8))])
    yield "absurd meta tokenizer", zip_bytes([meta_member(
        '{"format": "tinylm-checkpoint", "format_version": 1, "tokenizer": '
        '{"type": "bpe", "merges": %s}}' % json.dumps([[256 + i - 1 if i else 97] * 2
                                                         for i in range(41)]))])
    # A zip bomb: 600 MB of zeros deflated into well under 1 MB.
    zeros = npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (75_000_000,)},
                      bytes(600_000_000))
    yield "zip bomb", zip_bytes([meta_member(GOOD_META), ("w.npy", zeros)],
                                zipfile.ZIP_DEFLATED)
    # A central directory that lies about a member's size.
    good = zip_bytes([meta_member(GOOD_META), ("w.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (4,)}, b"\0" * 32))])
    yield "lying size", good.replace((32 + 128).to_bytes(4, "little"),
                                     (2**32 - 1).to_bytes(4, "little"))


def crafted_tokenizers():
    yield "deep", "[" * 200_000 + "]" * 200_000
    yield "doubling merges", json.dumps({"type": "bpe", "merges": [[97, 97]] + [
        [256 + i, 256 + i] for i in range(40)]})
    yield "float id", json.dumps({"type": "bpe", "merges": [[97, 1.7]]})
    yield "bool id", json.dumps({"type": "bpe", "merges": [[True, 97]]})
    yield "huge id", json.dumps({"type": "bpe", "merges": [[10**30, 97]]})
    yield "merges not list", json.dumps({"type": "bpe", "merges": {"a": 1}})
    yield "too many merges", '{"type": "bpe", "merges": [' + ",".join(["[97,98]"] * 1_000_001) + "]}"
    yield "type list", json.dumps({"type": ["bpe"]})
    yield "chars list", json.dumps({"type": "char", "chars": [["a"]]})
    yield "words nested", json.dumps({"type": "word", "words": ["<unk>", ["x"]]})
    yield "no type", json.dumps({"merges": []})
    yield "not utf8", b"\xff\xfe{}"
    yield "huge", b" " * (64 * 2**20 + 10)


def crafted_safetensors():
    def header(obj, data=b""):
        raw = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
        return len(raw).to_bytes(8, "little") + raw + data
    yield "deep", header(b"[" * 200_000 + b"]" * 200_000)
    yield "huge header length", (2**63).to_bytes(8, "little") + b"{}"
    yield "many dims", header({"w": {"dtype": "F32", "shape": [1] * 100,
                                     "data_offsets": [0, 4]}}, b"\0" * 4)
    yield "2**40 floats", header({"w": {"dtype": "F32", "shape": [2**40],
                                        "data_offsets": [0, 2**42]}}, b"\0" * 64)
    yield "unknown dtype", header({"w": {"dtype": "O", "shape": [1],
                                         "data_offsets": [0, 8]}}, b"\0" * 8)
    yield "bool shape", header({"w": {"dtype": "F32", "shape": [True],
                                      "data_offsets": [0, 4]}}, b"\0" * 4)
    yield "not a dict", header([1, 2, 3])
    # an F32 tensor at an odd offset: must load, as an aligned copy
    yield "odd offset", header({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                                "w": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]}},
                               b"\0" * 9)


def crafted_model_folders():
    """(file name in the folder, bytes) pairs."""
    cfg = dict(TINY_CONFIG)
    yield "config.json", "deep", b"[" * 200_000 + b"]" * 200_000
    yield "config.json", "hidden_size 10**9", json.dumps(dict(cfg, hidden_size=10**9,
                                                              num_attention_heads=1))
    yield "config.json", "10**6 layers", json.dumps(dict(cfg, num_hidden_layers=10**6))
    yield "config.json", "a list", json.dumps([cfg])
    yield "config.json", "vocab 10**12", json.dumps(dict(cfg, vocab_size=10**12))
    yield "modules.json", "deep", b"[" * 200_000 + b"]" * 200_000
    yield "modules.json", "a dict", json.dumps({"type": "Normalize"})
    yield "tokenizer_config.json", "deep", b"{\"a\":" * 100_000 + b"1" + b"}" * 100_000
    yield "vocab.txt", "binary", bytes(range(256)) * 4
    yield "vocab.txt", "huge", b"a\n" * (33 * 2**20)
    yield "1_Pooling/config.json", "deep", b"[" * 200_000 + b"]" * 200_000


TINY_CONFIG = dict(vocab_size=12, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=16, max_position_embeddings=10, type_vocab_size=2,
                   model_type="bert", hidden_act="gelu")
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on",
              "mat", "##s", "."]


def write_model_folder(folder):
    from tinylm.pretrained import BertEncoder, config_from_hf, hf_parameter_names
    from tinylm.pretrained import safetensors as sft
    os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
    model = BertEncoder(config_from_hf(dict(TINY_CONFIG)), rng=0)
    state = model.state_dict()
    sft.save(os.path.join(folder, "model.safetensors"),
             {hf: np.asarray(state[ours], np.float32)
              for hf, ours in hf_parameter_names(model.config).items()})
    files = {"config.json": json.dumps(TINY_CONFIG).encode(),
             "vocab.txt": ("\n".join(TINY_VOCAB) + "\n").encode(),
             "modules.json": json.dumps([{"idx": 0, "type": "sentence_transformers.models."
                                         "Transformer"}, {"idx": 2, "type": "sentence_"
                                         "transformers.models.Normalize"}]).encode(),
             "tokenizer_config.json": b'{"do_lower_case": true, "model_max_length": 10}',
             "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'}
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return files


def mutations(base, rng, n):
    """Random bytes, truncations and byte flips of a valid file."""
    for i in range(n):
        kind = i % 3
        if kind == 0:
            yield "random", bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 2000)))
        elif kind == 1:
            yield "truncated", base[:rng.randrange(0, len(base))]
        else:
            data = bytearray(base)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            yield "flipped", bytes(data)


def read_checkpoint(path):
    """What tinylm does with a checkpoint before building a model from it."""
    arrays, meta = load_checkpoint(path)
    if "tokenizer" in meta:
        try:
            tokenizer_from_dict(meta["tokenizer"])
        except FormatError as e:
            raise FormatError("checkpoint %s: %s" % (path, e)) from None
    return arrays, meta


def read_safetensors(path):
    from tinylm.pretrained import safetensors as sft
    arrays = sft.load(path)
    for name, a in arrays.items():
        assert a.flags.aligned, name                 # no unaligned array leaves the reader
        float(np.asarray(a, np.float64).sum())       # touch every byte
    return arrays


def fuzz_model_folder(n, rng, folder):
    """Mutate one file of a tiny Hugging Face BERT folder per case, then load it."""
    from tinylm.pretrained import load_sentence_encoder
    root = os.path.join(folder, "model")
    files = write_model_folder(root)
    cases = [(name, label, data) for name, label, data in crafted_model_folders()]
    names = sorted(files)
    for i in range(n):
        name = names[i % len(names)]
        for label, data in mutations(files[name], rng, 1 + i % 3):
            pass                                     # the last of 1..3 kinds: varied
        cases.append((name, label, data))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    counts = {"cases": 0, "refused": 0, "loaded": 0}
    messages = {}
    for name, label, data in cases:
        write_model_folder_files(root, files)
        with open(os.path.join(root, name), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        counts["cases"] += 1
        try:
            enc = load_sentence_encoder(root)
            enc.encode(["the cat sat"])
            counts["loaded"] += 1
            result = "loaded"
        except (FormatError, ValueError, FileNotFoundError) as e:
            counts["refused"] += 1
            result = str(e)
            if "\n" in result or root not in result:
                print("unclear message for %s %s: %r" % (name, label, result))
                return 1
        except Exception:
            print("case %s %s (%d bytes):" % (name, label, len(data)))
            traceback.print_exc(file=sys.stdout)
            return 1
        if label not in ("random", "truncated", "flipped"):
            messages["%s %s" % (name, label)] = result
    counts["messages"] = messages
    print(json.dumps(counts))
    return 0


def write_model_folder_files(root, files):
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)


def main():
    fmt, n, seed, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)
    path = os.path.join(folder, "case")
    if fmt == "checkpoint":
        tok = BPETokenizer.train("hello hello world world " * 20, vocab_size=270)
        save_checkpoint(path, {"model.w": np.arange(50.0).reshape(5, 10),
                               "model.b": np.ones(3, np.float32)},
                        {"tokenizer": tok.to_dict(), "step": 3})
        base = open(path, "rb").read()
        cases, read = list(crafted_checkpoints()), read_checkpoint
    elif fmt == "tokenizer":
        tok = BPETokenizer.train("hello hello world world " * 20, vocab_size=270)
        base = json.dumps(tok.to_dict()).encode()
        cases, read = list(crafted_tokenizers()), load_tokenizer
    elif fmt == "safetensors":
        from tinylm.pretrained import safetensors as sft
        sft.save(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                        "b": np.arange(5, dtype=np.int64), "c": np.ones(3, np.float16)})
        base = open(path, "rb").read()
        cases, read = list(crafted_safetensors()), read_safetensors
    elif fmt == "model-folder":
        return fuzz_model_folder(n, rng, folder)
    else:
        raise SystemExit("unknown format %r" % fmt)
    cases += list(mutations(base, rng, n))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    counts = {"cases": 0, "refused": 0, "loaded": 0}
    crafted = {}
    for label, data in cases:
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        counts["cases"] += 1
        try:
            read(path)
            counts["loaded"] += 1
            crafted[label] = "loaded"
        except FormatError as e:
            counts["refused"] += 1
            msg = str(e)
            if "\n" in msg or path not in msg:
                print("unclear message for %s: %r" % (label, msg))
                return 1
            crafted[label] = msg
        except Exception:
            print("case %s (%d bytes):" % (label, len(data)))
            traceback.print_exc(file=sys.stdout)
            return 1
    counts["messages"] = {k: v for k, v in crafted.items()
                          if k not in ("random", "truncated", "flipped")}
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
