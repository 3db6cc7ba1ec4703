"""Checkpoints: one ``.npz`` file of named arrays plus a JSON metadata dict.

Format (version 1).  A standard NumPy ``.npz`` (a zip of ``.npy`` files):

* every array under its own name -- by convention model weights as
  ``model.<parameter name>`` and optimizer buffers as ``optim.<key>``;
* ``__meta__``: a uint8 array holding the UTF-8 JSON of the metadata dict
  (config, tokenizer dict, step, RNG states, optimizer scalars, ...), to
  which :func:`save_checkpoint` adds ``"format": "tinylm-checkpoint"`` and
  ``"format_version": 1``.

Nothing is pickled: object arrays are refused when saving, and loading uses
``np.load(..., allow_pickle=False)``, so opening a checkpoint from someone
else cannot run code.

Saving is atomic: the file is written to a temporary name in the same folder,
flushed and fsync'ed, then renamed over the target with ``os.replace`` (an
atomic operation on POSIX and Windows).  A crash or kill at any moment leaves
either the old checkpoint or the new one, never a half-written file under the
target name (at worst a stray ``.<name>.tmp-*`` file next to it).

Helpers :func:`split_state` / :func:`join_state` turn a flat state dict that
mixes arrays and scalars (an optimizer's ``state_dict()``) into the
``arrays`` / ``meta`` halves and back.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError",
           "split_state", "join_state", "FORMAT", "FORMAT_VERSION"]

FORMAT = "tinylm-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint file that is not readable as one: truncated, corrupt, foreign."""


def _json_default(obj):
    """Let NumPy scalars and small arrays appear in meta (as plain numbers/lists)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError("meta value of type %s is not JSON-serialisable" % type(obj).__name__)


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` (dict str -> ndarray) and ``meta`` (JSON-able dict) to ``path`` atomically.

    The file is written exactly at ``path`` (no ``.npz`` is appended).
    Raises ``TypeError`` / ``ValueError`` before touching the disk if an
    array is an object array, a name is reserved or meta is not JSON-able.
    """
    path = os.fspath(path)
    checked = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError("array names must be non-empty strings, got %r" % (name,))
        if name == META_KEY:
            raise ValueError("%r is reserved for the metadata" % META_KEY)
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise TypeError("array %r has dtype object; checkpoints hold only numeric "
                            "arrays (no pickle)" % name)
        checked[name] = a
    if not isinstance(meta, dict):
        raise TypeError("meta must be a dict, got %s" % type(meta).__name__)
    meta = dict(meta)
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    meta_bytes = json.dumps(meta, default=_json_default, sort_keys=True).encode("utf-8")
    checked[META_KEY] = np.frombuffer(meta_bytes, dtype=np.uint8)

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError("cannot save checkpoint %s: folder %s does not exist"
                                % (path, folder))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **checked)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # Make the rename itself durable (POSIX; not possible/needed on Windows).
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def load_checkpoint(path):
    """Read a checkpoint -> ``(arrays, meta)``; arrays is a dict name -> ndarray.

    Raises ``FileNotFoundError`` if ``path`` does not exist and
    :class:`CheckpointError` (a ``ValueError``) naming the file and the
    problem if it is truncated, corrupt, pickled, or not a tinylm checkpoint.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("checkpoint not found: %s" % path)
    if os.path.isdir(path):
        raise CheckpointError("checkpoint %s is a folder, not a file" % path)
    arrays = {}
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CheckpointError("%s holds a single array, not a tinylm checkpoint "
                                  "(.npz archive)" % path)
        with npz:
            for name in npz.files:
                arrays[name] = npz[name]
    except CheckpointError:
        raise
    except ValueError as e:
        # np.load raises ValueError for pickled data / object arrays and for
        # files that are not .npy/.npz at all.
        raise CheckpointError("cannot read checkpoint %s: %s" % (path, e)) from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, RuntimeError) as e:
        raise CheckpointError("checkpoint %s is truncated or corrupt (%s: %s)"
                              % (path, type(e).__name__, e)) from None
    raw = arrays.pop(META_KEY, None)
    if raw is None:
        raise CheckpointError("%s has no %r entry: not a tinylm checkpoint" % (path, META_KEY))
    try:
        meta = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError("checkpoint %s has corrupt metadata: %s" % (path, e)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError("%s is not a tinylm checkpoint (format %r)"
                              % (path, meta.get("format") if isinstance(meta, dict) else None))
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError("%s has checkpoint format version %r; this tinylm reads "
                              "versions up to %d" % (path, version, FORMAT_VERSION))
    return arrays, meta


def split_state(state, prefix):
    """Flat state dict -> (arrays with ``prefix`` + key, scalars dict).

    ``split_state(opt.state_dict(), "optim.")`` gives the arrays to store and
    the numbers/strings to put into meta.
    """
    arrays, scalars = {}, {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            arrays[prefix + key] = value
        else:
            scalars[key] = value
    return arrays, scalars


def join_state(arrays, scalars, prefix):
    """Inverse of :func:`split_state`: pick the ``prefix`` arrays, strip it, add scalars."""
    state = dict(scalars)
    for name, value in arrays.items():
        if name.startswith(prefix):
            state[name[len(prefix):]] = value
    return state
