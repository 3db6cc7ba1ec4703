"""Reading and writing the safetensors file format, from scratch, in NumPy.

A ``.safetensors`` file is three things back to back::

    [ 8 bytes ]  N, the header length, an unsigned 64-bit little-endian integer
    [ N bytes ]  the header: a UTF-8 JSON object (may be padded with spaces)
    [ rest    ]  the data buffer: every tensor's raw little-endian bytes

The header maps each tensor name to ``{"dtype": "F32", "shape": [384, 384],
"data_offsets": [begin, end]}``, offsets in bytes relative to the start of the
data buffer.  An optional ``"__metadata__"`` entry maps strings to strings.
The tensors must tile the data buffer exactly: no gaps, no overlaps, nothing
past its end.

This is the format Hugging Face uses for model weights: unlike pickle it holds
only numbers and JSON, so loading a file can never run code.  Reading is done
through ``np.memmap``: the operating system pages the weights in as they are
used, and an F32 tensor costs no copy at all.  BF16 (bfloat16, the top 16 bits
of a float32) has no NumPy dtype: it is widened to float32 by shifting each
16-bit pattern left by 16 bits.

Public API::

    load(path, names=None)          -> dict name -> ndarray (read-only views)
    read_header(path)               -> (tensors info dict, metadata dict)
    save(path, tensors, metadata=None, bf16=())
    SafetensorsError                (a ValueError) for every malformed file
"""

import json
import math
import os
from collections import OrderedDict

import numpy as np

from tinylm import limits
from tinylm.limits import FormatError

__all__ = ["load", "read_header", "save", "SafetensorsError", "DTYPES"]

# The safetensors dtype names this module understands -> NumPy dtype of the
# stored bytes (little-endian).  BF16 is stored as 16-bit patterns and widened.
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# NumPy dtype -> safetensors name, for the writer.
_NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32",
          np.dtype(np.float16): "F16", np.dtype(np.int64): "I64",
          np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
          np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8",
          np.dtype(np.bool_): "BOOL"}

# The reference implementation refuses headers over 100 MB; so do we (it also
# protects us from allocating gigabytes because of 8 corrupt bytes).
MAX_HEADER_BYTES = 100 * 1000 * 1000


class SafetensorsError(FormatError):
    """A file that is not a valid safetensors file (the message says why)."""


def _fail(path, msg):
    raise SafetensorsError("%s: not a valid safetensors file: %s" % (path, msg))


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def _parse_header(path, raw, data_size):
    """Validate the JSON header; return (OrderedDict name -> info, metadata).

    raw: the header bytes.  data_size: bytes in the data buffer.
    Each info is {"dtype": str, "shape": tuple, "begin": int, "end": int}.
    """
    try:
        header = limits.loads_json(raw, "the header", max_bytes=MAX_HEADER_BYTES)
    except FormatError as exc:       # not UTF-8, not JSON, or nested too deep
        _fail(path, str(exc))
    if not isinstance(header, dict):
        _fail(path, "the header must be a JSON object, got %s" % type(header).__name__)

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        _fail(path, "__metadata__ must be an object mapping strings to strings")

    infos = OrderedDict()
    for name, entry in header.items():
        where = "tensor %r" % name
        if not isinstance(entry, dict):
            _fail(path, "%s: entry must be an object, got %s" % (where, type(entry).__name__))
        missing = {"dtype", "shape", "data_offsets"} - set(entry)
        if missing:
            _fail(path, "%s: missing %s" % (where, ", ".join(sorted(missing))))
        dtype = entry["dtype"]
        if dtype not in DTYPES:
            _fail(path, "%s: unknown or unsupported dtype %r (supported: %s)"
                  % (where, dtype, ", ".join(DTYPES)))
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(
                type(d) is int and d >= 0 for d in shape):
            _fail(path, "%s: shape must be a list of non-negative integers, got %r"
                  % (where, shape))
        if len(shape) > limits.MAX_ARRAY_NDIM:
            _fail(path, "%s: %d dimensions, more than the limit of %d"
                  % (where, len(shape), limits.MAX_ARRAY_NDIM))
        offs = entry["data_offsets"]
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is int for o in offs)):
            _fail(path, "%s: data_offsets must be [begin, end] integers, got %r"
                  % (where, offs))
        begin, end = offs
        if not 0 <= begin <= end:
            _fail(path, "%s: data_offsets %r are not 0 <= begin <= end" % (where, offs))
        if end > data_size:
            _fail(path, "%s: data_offsets %r run past the end of the data buffer "
                  "(%d bytes; the file is truncated or the header is wrong)"
                  % (where, offs, data_size))
        nbytes = math.prod(shape) * DTYPES[dtype].itemsize   # exact (Python ints)
        if end - begin != nbytes:
            _fail(path, "%s: shape %s of %s needs %d bytes but data_offsets %r hold %d"
                  % (where, shape, dtype, nbytes, offs, end - begin))
        infos[name] = {"dtype": dtype, "shape": tuple(shape), "begin": begin, "end": end}

    # The tensors must tile [0, data_size) exactly.
    pos = 0
    for name, info in sorted(infos.items(), key=lambda kv: (kv[1]["begin"], kv[1]["end"])):
        if info["begin"] < pos:
            _fail(path, "tensor %r: data_offsets [%d, %d] overlap the previous tensor "
                  "(which ends at %d)" % (name, info["begin"], info["end"], pos))
        if info["begin"] > pos:
            _fail(path, "tensor %r: gap in the data buffer: bytes [%d, %d) belong to "
                  "no tensor" % (name, pos, info["begin"]))
        pos = info["end"]
    if pos != data_size:
        _fail(path, "the data buffer has %d bytes but the tensors cover only %d "
              "(trailing bytes belong to no tensor)" % (data_size, pos))
    return infos, metadata


def _open(path):
    """Read and validate the header; return (infos, metadata, data_start, data_size)."""
    path = os.fspath(path)
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                _fail(path, "the file has %d bytes, fewer than the 8-byte header length"
                      % len(prefix))
            n = int.from_bytes(prefix, "little")
            if n > MAX_HEADER_BYTES:
                _fail(path, "header length %d is over the %d-byte limit (corrupt file?)"
                      % (n, MAX_HEADER_BYTES))
            if 8 + n > file_size:
                _fail(path, "header length %d runs past the end of the file (%d bytes)"
                      % (n, file_size))
            raw = f.read(n)
    except FileNotFoundError:
        raise FileNotFoundError("safetensors file not found: %s" % path) from None
    if len(raw) != n:   # the file shrank while we read it
        _fail(path, "could not read the %d-byte header" % n)
    data_start = 8 + n
    infos, metadata = _parse_header(path, raw, file_size - data_start)
    return infos, metadata, data_start, file_size - data_start


def read_header(path):
    """Validate a file's header; return (infos, metadata) without loading data.

    infos: OrderedDict name -> {"dtype", "shape", "begin", "end"} (file order).
    """
    infos, metadata, _, _ = _open(path)
    return infos, metadata


def bf16_to_float32(bits):
    """uint16 bfloat16 bit patterns (any shape) -> float32, exactly.

    A bfloat16 is the top half of a float32, so shifting the 16 bits into the
    high half of a 32-bit word gives the very same number.
    """
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(x):
    """float32 -> uint16 bfloat16 bit patterns, rounding to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, 0x7FC0, rounded).astype(np.uint16)


def load(path, names=None):
    """Load tensors from a safetensors file.

    path:  the file.   names: optional iterable of tensor names (default all).
    Returns an OrderedDict name -> ndarray in file order.  F64/F32/F16/integer
    tensors are read-only views of a memory map (no copy) unless the file puts
    them at an offset that is not a multiple of their item size (then they are
    copied, so no unaligned array reaches C); BF16 tensors are converted to new
    float32 arrays.  The header is read within tinylm.limits (JSON depth, at
    most MAX_HEADER_BYTES, MAX_ARRAY_NDIM dimensions).  Raises SafetensorsError
    on a malformed file and KeyError for a requested name the file does not hold.
    """
    infos, _, data_start, data_size = _open(path)
    if names is not None:
        names = list(names)
        absent = [n for n in names if n not in infos]
        if absent:
            raise KeyError("%s: no tensor named %s (the file has %d tensors, e.g. %s)"
                           % (path, ", ".join(map(repr, absent)), len(infos),
                              ", ".join(list(infos)[:3])))
    else:
        names = list(infos)

    # One read-only map of the whole data buffer (mmap cannot map 0 bytes).
    if data_size:
        buf = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start,
                        shape=(data_size,))
    else:
        buf = np.zeros(0, np.uint8)
    out = OrderedDict()
    for name in names:
        info = infos[name]
        raw = buf[info["begin"]:info["end"]]                 # (nbytes,) uint8
        arr = raw.view(DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            arr = bf16_to_float32(arr)
        elif not arr.flags.aligned:     # an odd offset in the file: copy to aligned memory
            arr = np.array(arr)
            arr.flags.writeable = False         # like the memory-mapped ones
        out[name] = arr
    return out


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def save(path, tensors, metadata=None, bf16=()):
    """Write a dict name -> ndarray as a safetensors file (atomically).

    Tensors are stored in name order, contiguous, little-endian.  Names in
    ``bf16`` are stored as BF16 (float32 rounded to nearest even).
    metadata: optional dict str -> str, stored under "__metadata__".
    """
    path = os.fspath(path)
    header = OrderedDict()
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("save: metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    bf16 = set(bf16)
    unknown = bf16 - set(tensors)
    if unknown:
        raise KeyError("save: bf16 names %s are not among the tensors" % sorted(unknown))
    blobs, pos = [], 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError("save: invalid tensor name %r" % (name,))
        a = np.asarray(tensors[name])
        if name in bf16:
            dtype, data = "BF16", float32_to_bf16(a)
        else:
            if a.dtype not in _NAMES:
                raise TypeError("save: tensor %r has dtype %s, which safetensors "
                                "cannot store here (use one of %s)"
                                % (name, a.dtype, ", ".join(str(d) for d in _NAMES)))
            dtype = _NAMES[a.dtype]
            data = a.astype(a.dtype.newbyteorder("<"), copy=False)
        b = np.ascontiguousarray(data).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)       # pad so the data starts 8-byte aligned
    tmp = path + ".tmp%d" % os.getpid()
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for b in blobs:
                f.write(b)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
