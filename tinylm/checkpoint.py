"""Checkpoints: one ``.npz`` file of named arrays plus a JSON metadata dict.

Format (version 1).  A standard NumPy ``.npz`` (a zip of ``.npy`` files):

* every array under its own name -- by convention model weights as
  ``model.<parameter name>`` and optimizer buffers as ``optim.<key>``;
* ``__meta__``: a uint8 array holding the UTF-8 JSON of the metadata dict
  (config, tokenizer dict, step, RNG states, optimizer scalars, ...), to
  which :func:`save_checkpoint` adds ``"format": "tinylm-checkpoint"`` and
  ``"format_version": 1``.

Nothing is pickled: object arrays are refused when saving, and loading reads
the ``.npy`` members itself with ``allow_pickle=False``, so opening a
checkpoint from someone else cannot run code.  Before anything is allocated
the loader checks the archive against :mod:`tinylm.limits` (member count,
uncompressed size, each array's header: dtype, dimensions, element count,
and that the declared size matches the member's size) and the metadata
against the JSON size and depth limits.  A file that is not a zip archive is
"not a tinylm checkpoint".

Saving is atomic: the file is written to a temporary name in the same folder
(``.<name>.tmp-*``), flushed and fsync'ed, then renamed over the target with
``os.replace``.  A kill at any moment leaves either the old checkpoint or the
new one under the target name, never a half-written file; the stray temporary
file a kill may leave is removed by :func:`clean_stale_temps`.  Files get the
mode ``0o666 & ~umask``, like any file the user creates.  Non-finite numbers
(NaN, inf) in float arrays or in the metadata are refused: a checkpoint is
never a record of a diverged state.

The best model of a run is kept by :func:`save_best`, which replaces the file
only with a strictly lower finite validation loss than the one the file on
disk holds -- so no kill, resume or re-run ordering can replace the best model
by a worse one.

Helpers :func:`split_state` / :func:`join_state` turn a flat state dict that
mixes arrays and scalars (an optimizer's ``state_dict()``) into the
``arrays`` / ``meta`` halves and back.
"""

import json
import math
import os
import tempfile
import zipfile

import numpy as np

from tinylm import limits
from tinylm.limits import FormatError

__all__ = ["save_checkpoint", "load_checkpoint", "load_meta", "save_best", "best_val_loss",
           "clean_stale_temps", "CheckpointError", "NonFiniteError",
           "split_state", "join_state", "FORMAT", "FORMAT_VERSION"]

FORMAT = "tinylm-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"
TMP_MARK = ".tmp-"                # temporary files are named ".<target>.tmp-<random>"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")    # a zip with members / an empty zip
_SLACK = 64 * 2**20               # uncompressed bytes allowed on top of MAX_EXPANSION x size


class CheckpointError(FormatError):
    """A checkpoint file that is not readable as one: truncated, corrupt, foreign, over a limit."""


class NonFiniteError(ValueError):
    """Refused to save: an array or a metadata number is NaN or infinite."""


# Fault injection for the tests: called with a label between every file
# operation of a save ("created", "written", "synced", "replaced", "dir-synced").
# A test sets it to a function that kills the process at the n-th call.
_fault_hook = None


def _fault(label):
    if _fault_hook is not None:
        _fault_hook(label)


def _json_default(obj):
    """Let NumPy scalars and small arrays appear in meta (as plain numbers/lists)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError("meta value of type %s is not JSON-serialisable" % type(obj).__name__)


def _non_finite_in(value, where):
    """The path of the first NaN/inf float inside a JSON-like value, else None."""
    if isinstance(value, (float, np.floating)):
        return None if math.isfinite(value) else "%s = %r" % (where, float(value))
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite_in(v, "%s[%r]" % (where, k))
        if found:
            return found
    return None


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` (dict str -> ndarray) and ``meta`` (JSON-able dict) to ``path`` atomically.

    The file is written exactly at ``path`` (no ``.npz`` is appended).
    Raises ``TypeError`` / ``ValueError`` before touching the disk if an
    array is an object array, a name is reserved or meta is not JSON-able,
    and :class:`NonFiniteError` if a float array or a meta number is NaN/inf.
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
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise NonFiniteError("not saving %s: array %r holds NaN or inf" % (path, name))
        checked[name] = a
    if not isinstance(meta, dict):
        raise TypeError("meta must be a dict, got %s" % type(meta).__name__)
    bad = _non_finite_in(meta, "meta")
    if bad:
        raise NonFiniteError("not saving %s: %s is not finite" % (path, bad))
    meta = dict(meta)
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    meta_bytes = json.dumps(meta, default=_json_default, sort_keys=True,
                            allow_nan=False).encode("utf-8")
    checked[META_KEY] = np.frombuffer(meta_bytes, dtype=np.uint8)

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError("cannot save checkpoint %s: folder %s does not exist"
                                % (path, folder))
    if os.path.isdir(path):
        raise IsADirectoryError("cannot save checkpoint %s: it is a folder" % path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + TMP_MARK, dir=folder)
    try:
        _fault("created")
        os.fchmod(fd, 0o666 & ~_umask())       # mkstemp makes 0600; follow the umask
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **checked)
            f.flush()
            _fault("written")
            os.fsync(f.fileno())
        _fault("synced")
        os.replace(tmp, path)
        _fault("replaced")
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
    _fault("dir-synced")


def clean_stale_temps(folder):
    """Remove the temporary files killed saves left in ``folder``; returns their names.

    Call it when a run starts or resumes (one writer per run folder).
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in sorted(names):
        if name.startswith(".") and TMP_MARK in name:
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def best_val_loss(path):
    """The ``val_loss`` a best-model file holds; inf if it is missing or unreadable."""
    try:
        v = load_meta(path).get("val_loss")
    except (OSError, ValueError):
        return math.inf
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return math.inf


def save_best(path, arrays, meta, val_loss):
    """Save to ``path`` only if ``val_loss`` beats the one stored there; returns True if saved.

    The comparison is with the file on disk (its meta ``val_loss``), not with
    a number in memory, so a kill between this save and the run's
    ``checkpoint.npz``, a resume or a re-run can never replace the best model
    by a worse one.  A non-finite ``val_loss`` is never saved.
    """
    val_loss = float(val_loss)
    if not math.isfinite(val_loss):
        return False
    if not val_loss < best_val_loss(path):
        return False
    save_checkpoint(path, arrays, dict(meta, val_loss=val_loss))
    return True


# --------------------------------------------------------------------------
# Loading, within the limits of tinylm.limits
# --------------------------------------------------------------------------
def _check_file(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("checkpoint not found: %s" % path)
    if os.path.isdir(path):
        raise CheckpointError("checkpoint %s is a folder, not a file" % path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError("cannot read checkpoint %s: %s" % (path, e.strerror or e)) from None
    if head == b"\x93NUM":
        raise CheckpointError("%s holds a single array (.npy), not a tinylm checkpoint "
                              "(.npz archive)" % path)
    if head not in _ZIP_MAGIC:
        raise CheckpointError("%s is not a tinylm checkpoint (not a .npz archive; it starts "
                              "with %r)" % (path, head))
    return path


def _members(path, zf):
    """The archive's members, checked against the limits -> list of (name, ZipInfo)."""
    infos = zf.infolist()
    if len(infos) > limits.MAX_CHECKPOINT_MEMBERS:
        raise CheckpointError("checkpoint %s has %d members, more than the limit of %d"
                              % (path, len(infos), limits.MAX_CHECKPOINT_MEMBERS))
    total = sum(i.file_size for i in infos)
    allowed = min(limits.MAX_CHECKPOINT_BYTES,
                  limits.MAX_EXPANSION * os.path.getsize(path) + _SLACK)
    if total > allowed:
        raise CheckpointError("checkpoint %s would expand to %d bytes, more than the limit "
                              "of %d (tinylm.limits)" % (path, total, allowed))
    out, seen = [], set()
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise CheckpointError("%s is not a tinylm checkpoint: member %r is not a .npy "
                                  "array" % (path, info.filename))
        name = info.filename[:-4]
        if name in seen:
            raise CheckpointError("checkpoint %s has two members named %r"
                                  % (path, info.filename))
        seen.add(name)
        out.append((name, info))
    return out


def _read_header(path, name, fp, size):
    """Check one member's .npy header; -> (shape, fortran, dtype)."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise CheckpointError("checkpoint %s: array %r has .npy version %s, not 1.0 or 2.0"
                              % (path, name, version))
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in "biufc":
        raise CheckpointError("checkpoint %s: array %r has dtype %s; checkpoints hold only "
                              "plain numbers (no pickle)" % (path, name, dtype))
    if len(shape) > limits.MAX_ARRAY_NDIM:
        raise CheckpointError("checkpoint %s: array %r has %d dimensions, more than the "
                              "limit of %d" % (path, name, len(shape), limits.MAX_ARRAY_NDIM))
    count = 1
    for n in shape:
        count *= n
    if count > limits.MAX_ARRAY_ELEMENTS:
        raise CheckpointError("checkpoint %s: array %r declares %d elements, more than the "
                              "limit of %d" % (path, name, count, limits.MAX_ARRAY_ELEMENTS))
    if fp.tell() + count * dtype.itemsize != size:
        raise CheckpointError("checkpoint %s is truncated or corrupt: array %r declares "
                              "shape %s of %s (%d bytes) in a member of %d bytes"
                              % (path, name, shape, dtype, count * dtype.itemsize, size))
    return shape, fortran, dtype


def _read_arrays(path, only=None):
    """name -> ndarray for every member (or only the names in ``only``)."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name, info in _members(path, zf):
                if only is not None and name not in only:
                    continue
                with zf.open(info) as fp:
                    _read_header(path, name, fp, info.file_size)
                with zf.open(info) as fp:          # sizes checked: now read for real
                    arrays[name] = np.lib.format.read_array(fp, allow_pickle=False)
    except CheckpointError:
        raise
    except (ValueError, zipfile.BadZipFile, EOFError, OSError, KeyError, RuntimeError,
            NotImplementedError, SyntaxError, TypeError, OverflowError) as e:
        # np.lib.format raises ValueError for a malformed header; zipfile raises
        # BadZipFile (CRC mismatch, bad directory), EOFError, NotImplementedError
        # (unknown compression), RuntimeError (encrypted member).
        raise CheckpointError("checkpoint %s is truncated or corrupt (%s: %s)"
                              % (path, type(e).__name__, e)) from None
    return arrays


def _parse_meta(path, raw):
    if raw is None:
        raise CheckpointError("%s has no %r entry: not a tinylm checkpoint" % (path, META_KEY))
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError("checkpoint %s: %r is not a byte string" % (path, META_KEY))
    try:
        meta = limits.loads_json(raw.tobytes(), "checkpoint %s metadata" % path)
    except FormatError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError("%s is not a tinylm checkpoint (format %r)"
                              % (path, meta.get("format") if isinstance(meta, dict) else None))
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError("%s has checkpoint format version %r; this tinylm reads "
                              "versions up to %d" % (path, version, FORMAT_VERSION))
    return meta


def load_checkpoint(path):
    """Read a checkpoint -> ``(arrays, meta)``; arrays is a dict name -> ndarray.

    Raises ``FileNotFoundError`` if ``path`` does not exist and
    :class:`CheckpointError` (a ``ValueError``) naming the file and the
    problem if it is truncated, corrupt, over a limit, or not a tinylm checkpoint.
    """
    path = _check_file(path)
    arrays = _read_arrays(path)
    meta = _parse_meta(path, arrays.pop(META_KEY, None))
    return arrays, meta


def load_meta(path):
    """Only the metadata of a checkpoint (the arrays are not read)."""
    path = _check_file(path)
    return _parse_meta(path, _read_arrays(path, only={META_KEY}).get(META_KEY))


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
