"""Limits on every file format tinylm reads, checked before anything big is allocated.

A file from someone else (a checkpoint, a tokenizer, a downloaded model folder)
must never make tinylm allocate unbounded memory, recurse without end or
crash with a traceback.  Each reader checks the sizes, counts and depths below
*before* it allocates, and raises :class:`FormatError` (a ``ValueError``)
naming the file and the limit.  The numbers are generous for anything tinylm
writes or the pretrained models it supports; raise them here if you must.

=====================================  ==========================================
what                                   limit
=====================================  ==========================================
JSON nesting depth (any file)          ``MAX_JSON_DEPTH`` = 64
JSON text size (tokenizer, metadata,   ``MAX_JSON_BYTES`` = 64 MiB
modules.json, safetensors header)
checkpoint archive members             ``MAX_CHECKPOINT_MEMBERS`` = 10,000
checkpoint uncompressed size           ``MAX_CHECKPOINT_BYTES`` = 4 GiB, and at most
                                       ``MAX_EXPANSION`` x the file size + 64 MiB
one array's elements                   ``MAX_ARRAY_ELEMENTS`` = 2**31
one array's dimensions                 ``MAX_ARRAY_NDIM`` = 8
BPE merges                             ``MAX_BPE_MERGES`` = 1,000,000
bytes of one BPE token                 ``MAX_BPE_TOKEN_BYTES`` = 1,024
safetensors header                     100 MB (as the reference implementation),
                                       ``MAX_ARRAY_NDIM`` dimensions per tensor
a model folder's vocab.txt             ``MAX_VOCAB_BYTES`` = 64 MiB
a model folder's config.json sizes     at most the largest dimension of the weights
                                       in model.safetensors (read from its header)
=====================================  ==========================================
"""

import json
import os
import re

import numpy as np

__all__ = ["FormatError", "loads_json", "check_json_depth", "MAX_JSON_DEPTH",
           "MAX_JSON_BYTES", "MAX_CHECKPOINT_MEMBERS", "MAX_CHECKPOINT_BYTES",
           "MAX_EXPANSION", "MAX_ARRAY_ELEMENTS", "MAX_ARRAY_NDIM", "MAX_BPE_MERGES",
           "MAX_BPE_TOKEN_BYTES", "MAX_VOCAB_BYTES", "read_json", "read_text"]

MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 64 * 2**20
MAX_CHECKPOINT_MEMBERS = 10_000
MAX_CHECKPOINT_BYTES = 4 * 2**30
MAX_EXPANSION = 20
MAX_ARRAY_ELEMENTS = 2**31
MAX_ARRAY_NDIM = 8
MAX_BPE_MERGES = 1_000_000
MAX_BPE_TOKEN_BYTES = 1024
MAX_VOCAB_BYTES = 64 * 2**20


class FormatError(ValueError):
    """A file tinylm reads is malformed, of the wrong kind, or over a documented limit."""


# A JSON string literal (escapes included).  Removing them leaves only the
# structural characters, so brackets inside strings do not count as nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def check_json_depth(data, what, max_depth=MAX_JSON_DEPTH):
    """Raise FormatError if the JSON text ``data`` (bytes or str) nests deeper than max_depth.

    A linear scan with no recursion: strings are removed, then the running
    count of ``[``/``{`` minus ``]``/``}`` is the depth.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    bare = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    step = (np.isin(bare, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(bare, (ord("]"), ord("}"))))
    depth = int(np.cumsum(step).max()) if step.size else 0
    if depth > max_depth:
        raise FormatError("%s: JSON nested %d deep, more than the limit of %d "
                          "(tinylm.limits.MAX_JSON_DEPTH)" % (what, depth, max_depth))


def loads_json(data, what, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH):
    """Parse JSON ``data`` (bytes or str) within the size and depth limits.

    ``what`` names the source in every error ("tokenizer tok.json", ...).
    Any problem -> :class:`FormatError`, never a RecursionError or MemoryError.
    """
    if len(data) > max_bytes:
        raise FormatError("%s: %d bytes of JSON, more than the limit of %d "
                          "(tinylm.limits.MAX_JSON_BYTES)" % (what, len(data), max_bytes))
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError("%s is not UTF-8 text (byte offset %d)" % (what, e.start)) from None
    check_json_depth(data, what, max_depth)
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise FormatError("%s is not JSON (%s)" % (what, e)) from None
    except RecursionError:            # not reachable after the depth check; belt and braces
        raise FormatError("%s: JSON nested too deeply" % what) from None


def read_text(path, what, max_bytes):
    """The UTF-8 text of a file of at most max_bytes bytes (checked before reading)."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise FormatError("%s %s: %d bytes, more than the limit of %d"
                              % (what, path, size, max_bytes))
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except IsADirectoryError:
        raise FormatError("%s %s is a folder, not a file" % (what, path)) from None
    if len(data) > max_bytes:
        raise FormatError("%s %s: more than the limit of %d bytes" % (what, path, max_bytes))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError("%s %s is not UTF-8 text (byte offset %d)"
                          % (what, path, e.start)) from None


def read_json(path, what, kind=None):
    """Parse the JSON file ``path`` within the limits; ``kind`` (dict/list) if it must be one."""
    obj = loads_json(read_text(path, what, MAX_JSON_BYTES), "%s %s" % (what, path))
    if kind is not None and not isinstance(obj, kind):
        raise FormatError("%s %s must hold a JSON %s, not %s"
                          % (what, path, "object" if kind is dict else "array",
                             type(obj).__name__))
    return obj
