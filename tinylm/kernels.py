"""The only door to tinylm's C kernels.

For every kernel this module holds two things:

* ``*_reference``: the NumPy reference.  It is the *specification* of the
  kernel (short, readable, obviously right) and it is what the NumPy backend
  runs.
* the public function (``matmul``, ``attention``, ``attention_backward``):
  validates its arguments - dtype, shapes, contiguity, sizes - and then calls
  either the C kernel or the reference, depending on the backend.

Nothing else in tinylm calls C directly.  Two helpers of the attention
reference are public because the layers use them too: :func:`causal_mask`
and :func:`masked_softmax` (the one masked softmax in tinylm).

Backend: ``TINYLM_BACKEND=c|numpy`` in the environment, or
:func:`set_backend` / the :func:`backend` context manager.  The default is
``c`` when the extension was built, else ``numpy`` (with one warning saying
why).  Threads for the C kernels: ``TINYLM_NUM_THREADS`` or
:func:`set_num_threads`.

Validation rules (shared by every kernel):

* float32 or float64 only, all operands the same dtype -> else ``TypeError``.
* shapes must agree -> else ``ValueError`` naming the shapes.
* non-contiguous or unaligned inputs are copied (a transposed C-contiguous
  matrix is passed as-is with the transpose flag flipped); outputs must be
  C-contiguous and writable and must not overlap the inputs (an unaligned
  output is computed in an aligned copy and copied back).
* every dimension must fit in a C ``int`` (< 2**31).
* NaN and inf are allowed and propagate (the C code is built without
  ``-ffast-math``); a NaN reaches the same outputs on both backends, and a
  NaN in a key that causal masking hides reaches none.
"""

import contextlib
import math
import os
import warnings

import numpy as np

__all__ = [
    "matmul", "matmul_reference",
    "attention", "attention_reference", "causal_mask", "masked_softmax",
    "attention_backward", "attention_backward_reference",
    "attention_plain", "attention_plain_backward", "attention_decode",
    "attention_decode_reference",
    "layernorm_forward", "layernorm_forward_reference", "layernorm_backward",
    "layernorm_backward_reference", "gelu_forward", "gelu_forward_reference", "gelu_backward",
    "gelu_backward_reference", "erf_reference",
    "softmax_cross_entropy", "softmax_cross_entropy_reference",
    "softmax_cross_entropy_backward", "softmax_cross_entropy_backward_reference",
    "adam_update", "adam_update_reference", "adam_update_multi", "adam_update_multi_reference",
    "sum_of_squares", "sum_of_squares_reference", "scale_arrays", "scale_arrays_reference",
    "embedding_backward", "embedding_backward_reference",
    "add_column_sums", "add_column_sums_reference", "swap_axes12", "swap_axes12_reference",
    "lstm_sequence_forward", "lstm_sequence_forward_reference", "lstm_sequence_backward",
    "lstm_sequence_backward_reference", "gru_sequence_forward", "gru_sequence_forward_reference",
    "gru_sequence_backward", "gru_sequence_backward_reference",
    "prepare_linear", "prepare_layernorm", "prepare_gelu", "prepare_attention_decode",
    "get_backend", "set_backend", "backend", "available_backends", "backend_reason",
    "get_num_threads", "set_num_threads", "c_available", "info",
]

_INT_MAX = 2**31 - 1
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# --------------------------------------------------------------------------
# Loading the extension and choosing the backend
# --------------------------------------------------------------------------

# OpenMP threads spin-wait after each parallel region (libgomp: ~300000
# spins, ~3.5 ms) and so do OpenBLAS's threads after a numpy matmul.  On a
# machine with few cores the two fight: a numpy matmul right after a tinylm
# kernel ran 20-100x slower (benchmarks/bench_matmul.py --spin).  Unless the
# user chose a wait policy, tinylm's OpenMP runtime spins 5000 times (~60 us
# where one PAUSE is ~12 ns; 1.2-2 ms on a 2-core EPYC VM whose spins cost far
# more, likely the hypervisor's pause-loop exiting, where libgomp's default
# burnt 12 ms) and then sleeps: long enough to bridge the Python and NumPy glue
# between two kernels of a training step, whose workers would otherwise sleep
# and be woken each time (on a VM tens of us per wake-up:
# 1000 spins made a GPT-S step 1.1x and a 1x512 @ 512x2048 product 2.2x
# slower), short enough to leave the cores soon after the last kernel.
# libgomp reads its environment once, when the extension loads it, so the
# variable is set just for that moment.  TINYLM_OMP_DEFAULTS=0 leaves the
# environment alone.
_OMP_SPIN_DEFAULT = {"GOMP_SPINCOUNT": "5000"}
_omp_set_here = ({} if os.environ.get("TINYLM_OMP_DEFAULTS", "1") == "0"
                 or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
                 else _OMP_SPIN_DEFAULT)
os.environ.update(_omp_set_here)


def _keep_freed_memory():
    """Tell glibc's malloc to keep freed memory for reuse instead of handing it
    back to the kernel (Linux/glibc only; True if it did).

    A training step allocates and frees tens of MB of activations and
    gradients.  glibc returns the top of its heap to the kernel once more
    than a few MB are free there, and every later allocation of those pages
    takes a page fault and a page of zeroing: ~1400 faults per GPT-S step,
    which made it 1.04x slower (benchmarks/fair.py; 0 faults with these
    settings, and peak memory unchanged, since the step reuses what it freed).  Arrays below 32 MB come
    from the heap, which is trimmed only when 256 MB at its top are free.
    Not done if the user set MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_
    or GLIBC_TUNABLES, or TINYLM_MALLOC_DEFAULTS=0."""
    if (os.environ.get("TINYLM_MALLOC_DEFAULTS", "1") == "0"
            or any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_",
                                             "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"))):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version              # glibc, not musl or macOS
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 256 << 20))


_MALLOC_TUNED = _keep_freed_memory()
_HERE = os.path.dirname(os.path.abspath(__file__))
_PURE_PYTHON = os.path.exists(os.path.join(_HERE, "PURE_PYTHON"))
try:
    import importlib
    from importlib.machinery import PathFinder
    # Only the extension next to this file: an editable install's import hook would
    # otherwise hand another copy of tinylm (a second clone, an assignment kit) its _C.
    if PathFinder.find_spec("tinylm._C", [_HERE]) is None:
        raise ModuleNotFoundError("No module named 'tinylm._C'", name="tinylm._C")
    _C = importlib.import_module("tinylm._C")  # built by csrc/build_ffi.py
    _lib, _ffi = _C.lib, _C.ffi
    _C_ERROR = None
except ImportError as exc:  # no compiler at install time, or a broken build
    _lib = _ffi = None
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if isinstance(exc, ModuleNotFoundError) and exc.name == "tinylm._C" and all(
            os.path.exists(os.path.join(_root, f)) for f in ("setup.py", "csrc")):
        # Imported from a source checkout (a script, REPL or pytest run at its
        # root imports ./tinylm, not the installed copy): say so, and the fix.
        _C_ERROR = ("tinylm was imported from the source checkout %s, where the C "
                    "extension is not built; build it there with: cd %s && python "
                    "setup.py build_ext --inplace" % (_root, _root))
    elif isinstance(exc, ModuleNotFoundError) and exc.name == "tinylm._C":
        _C_ERROR = "tinylm._C was not built when tinylm was installed"
    else:
        _C_ERROR = "tinylm._C failed to load: %s" % exc
finally:
    for _name in _omp_set_here:
        os.environ.pop(_name, None)


def c_available():
    """True if the C extension is built and importable."""
    return _lib is not None


def available_backends():
    return ("c", "numpy") if c_available() else ("numpy",)


def _initial_backend():
    env = os.environ.get("TINYLM_BACKEND", "").strip().lower()
    if env not in ("", "c", "numpy"):
        raise RuntimeError(
            "TINYLM_BACKEND=%r is not a backend; use 'c' or 'numpy'" % env)
    if env == "numpy":
        return "numpy", "TINYLM_BACKEND=numpy"
    if env == "c":
        if not c_available():
            raise RuntimeError(
                "TINYLM_BACKEND=c but tinylm's C extension is not available "
                "(%s). Build it (see above; or reinstall with a working C compiler), "
                "or use TINYLM_BACKEND=numpy." % _C_ERROR)
        return "c", "TINYLM_BACKEND=c"
    if c_available():
        return "c", "default: C extension loaded"
    if _PURE_PYTHON:
        # A pure-Python copy made on purpose (an assignment kit): no C, no warning.
        return "numpy", "pure-Python copy of tinylm (no C extension by design)"
    fix = ("" if "source checkout" in _C_ERROR
           else " Reinstall with a C compiler to get the C kernels.")
    warnings.warn(
        "tinylm: C extension not available (%s); running on the NumPy backend, "
        "which is correct but slower.%s" % (_C_ERROR, fix), RuntimeWarning, stacklevel=3)
    return "numpy", "C extension not built (%s)" % _C_ERROR


_BACKEND, _BACKEND_REASON = _initial_backend()


def get_backend():
    """'c' or 'numpy'."""
    return _BACKEND


def backend_reason():
    """Why the current backend is in use (for `tinylm info`)."""
    return _BACKEND_REASON


def set_backend(name):
    """Select the backend for every kernel call that follows: 'c' or 'numpy'."""
    global _BACKEND, _BACKEND_REASON
    if name not in ("c", "numpy"):
        raise ValueError("backend must be 'c' or 'numpy', not %r" % (name,))
    if name == "c" and not c_available():
        raise RuntimeError("the C backend is not available: %s" % _C_ERROR)
    _BACKEND, _BACKEND_REASON = name, "set_backend(%r)" % name


@contextlib.contextmanager
def backend(name):
    """Context manager: ``with kernels.backend("numpy"): ...``."""
    old, old_reason = _BACKEND, _BACKEND_REASON
    set_backend(name)
    try:
        yield
    finally:
        globals()["_BACKEND"], globals()["_BACKEND_REASON"] = old, old_reason


def _threads_from_env():
    env = os.environ.get("TINYLM_NUM_THREADS", "").strip()
    if not env:
        return 0
    try:
        n = int(env)
    except ValueError:
        raise RuntimeError("TINYLM_NUM_THREADS=%r is not a whole number" % env)
    if n < 1:
        raise RuntimeError("TINYLM_NUM_THREADS must be >= 1, got %d" % n)
    return n


_NUM_THREADS = _threads_from_env()  # 0 = OpenMP's default


def set_num_threads(n):
    """Number of OpenMP threads the C kernels use (>= 1)."""
    global _NUM_THREADS
    n = int(n)
    if n < 1:
        raise ValueError("set_num_threads: n must be >= 1, got %d" % n)
    _NUM_THREADS = n


def get_num_threads():
    """Threads the C kernels will use (1 in a process forked after they used
    more: OpenMP's thread pool does not survive fork())."""
    if c_available() and _lib.tl_single_threaded_after_fork():
        return 1
    if _NUM_THREADS:
        return _NUM_THREADS
    return int(_lib.tl_omp_max_threads()) if c_available() else 1


def info():
    """A dict describing the build and the current settings."""
    d = {
        "backend": _BACKEND,
        "backend_reason": _BACKEND_REASON,
        "c_available": c_available(),
        "num_threads": get_num_threads(),
        "malloc_keeps_freed_memory": _MALLOC_TUNED,     # see _keep_freed_memory
    }
    if c_available():
        d["simd"] = _ffi.string(_lib.tl_simd_name()).decode()
        d["openmp"] = bool(_lib.tl_has_openmp())
        d["build_flags"] = _ffi.string(_lib.tl_build_flags()).decode()
        # a fork()ed child of a process that used the thread pool runs on one thread
        d["single_threaded_after_fork"] = bool(_lib.tl_single_threaded_after_fork())
    else:
        d["c_error"] = _C_ERROR
    return d


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------

def _check_float(name, kernel, *arrays):
    """All arrays are ndarrays of one float dtype; return that dtype."""
    for label, x in arrays:
        if not isinstance(x, np.ndarray):
            raise TypeError("%s: %s must be a numpy array, got %s"
                            % (kernel, label, type(x).__name__))
        if x.dtype not in _FLOATS:
            raise TypeError("%s: %s has dtype %s; expected float32 or float64"
                            % (kernel, label, x.dtype))
    dtypes = {x.dtype for _, x in arrays}
    if len(dtypes) > 1:
        raise TypeError("%s: operands must share one dtype, got %s" % (
            kernel, ", ".join("%s %s" % (l, x.dtype) for l, x in arrays)))
    return arrays[0][1].dtype


def _check_dims(kernel, **dims):
    for label, v in dims.items():
        if v > _INT_MAX:
            raise ValueError("%s: %s = %d is too large (must be < 2**31)"
                             % (kernel, label, v))


def _check_out(kernel, out, shape, dtype, inputs):
    if not isinstance(out, np.ndarray):
        raise TypeError("%s: out must be a numpy array" % kernel)
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError("%s: out has shape %s dtype %s; expected shape %s dtype %s"
                         % (kernel, out.shape, out.dtype, tuple(shape), dtype))
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("%s: out must be C-contiguous and writable" % kernel)
    for x in inputs:
        if np.may_share_memory(out, x):
            raise ValueError("%s: out overlaps an input; pass a separate array" % kernel)


def _for_c(x):
    """x as a C-contiguous, aligned array: copied if it is not (a view at an odd
    byte offset, e.g. from a memory-mapped file, is undefined behaviour in C)."""
    if x.flags.c_contiguous and x.flags.aligned:
        return x
    return np.array(x, order="C", copy=True)


def _ptr(kind, x):
    """A C pointer to x's data (x C-contiguous, kept alive by the result).
    ffi.from_buffer costs ~0.3 us; ffi.cast(kind, x.ctypes.data) ~1.7 us."""
    return _ffi.from_buffer(kind[:-1].strip() + "[]", x)


def _raise_status(kernel, status):
    if status == 0:
        return
    if status == -1:
        raise MemoryError("%s: the C kernel could not allocate scratch memory" % kernel)
    raise RuntimeError("%s: the C kernel refused its arguments (status %d)" % (kernel, status))


# --------------------------------------------------------------------------
# matmul: C (+)= op(A) @ op(B)
# --------------------------------------------------------------------------

def matmul_reference(a, b, trans_a=False, trans_b=False, out=None, accumulate=False,
                     bias=None):
    """The spec of the matmul kernel.

    a: (m, k), or (k, m) if trans_a      b: (k, n), or (n, k) if trans_b
    returns c: (m, n) = op(a) @ op(b), added to ``out`` if accumulate; then
    ``bias`` (n,), if given, is added to every row (y = x W^T + b in one call).
    """
    A = a.T if trans_a else a            # (m, k)
    B = b.T if trans_b else b            # (k, n)
    c = A @ B                            # (m, n)
    if out is None:
        out = c
    elif accumulate:
        out += c
    else:
        out[...] = c
    if bias is not None:
        out += bias                      # (m, n) + (n,): every row
    return out


def matmul(a, b, trans_a=False, trans_b=False, out=None, accumulate=False, bias=None):
    """op(a) @ op(b) (+ bias) for 2-D float arrays, on the current backend.

    a: (m, k), or (k, m) if trans_a      b: (k, n), or (n, k) if trans_b
    out: optional (m, n) C-contiguous array to write into; with
    ``accumulate=True`` the product is added to it (needed for gradients).
    bias: optional (n,) array of the same dtype, added to every row last, in
    the same pass that stores C.
    Returns the (m, n) result (``out`` itself when given).
    """
    kernel = "matmul"
    dtype = _check_float("a/b", kernel, ("a", a), ("b", b))
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError("matmul: a and b must be 2-D, got shapes %s and %s"
                         % (a.shape, b.shape))
    m, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if ka != kb:
        raise ValueError("matmul: inner dimensions differ: op(a) is %dx%d, op(b) is %dx%d "
                         "(a %s trans_a=%s, b %s trans_b=%s)"
                         % (m, ka, kb, n, a.shape, trans_a, b.shape, trans_b))
    k = ka
    _check_dims(kernel, m=m, n=n, k=k)
    if accumulate and out is None:
        raise ValueError("matmul: accumulate=True needs out")
    if bias is not None:
        _check_float("bias", kernel, ("a", a), ("bias", bias))
        if bias.shape != (n,):
            raise ValueError("matmul: bias must have shape (%d,) (the columns of the "
                             "result), got %s" % (n, bias.shape))
    if out is not None:
        _check_out(kernel, out, (m, n), dtype, (a, b) if bias is None else (a, b, bias))

    if _BACKEND == "numpy" or m == 0 or n == 0 or k == 0:
        # (k == 0 too: A @ B over an empty inner dimension is zeros)
        return matmul_reference(a, b, trans_a, trans_b, out, accumulate, bias)

    # A Fortran-contiguous operand is the transpose of a C-contiguous one:
    # flip the flag instead of copying.
    if not a.flags.c_contiguous and a.flags.f_contiguous:
        a, trans_a = a.T, not trans_a
    if not b.flags.c_contiguous and b.flags.f_contiguous:
        b, trans_b = b.T, not trans_b
    a, b = _for_c(a), _for_c(b)
    if out is None:
        out = np.empty((m, n), dtype)
    target = _for_c(out)                  # an unaligned out: work in an aligned copy
    f = _lib.tl_matmul_f32 if dtype == np.float32 else _lib.tl_matmul_f64
    kind = "float *" if dtype == np.float32 else "double *"
    status = f(int(bool(trans_a)), int(bool(trans_b)), m, n, k,
               _ptr(kind, a), _ptr(kind, b),
               _ffi.NULL if bias is None else _ptr(kind, _for_c(bias)), _ptr(kind, target),
               int(bool(accumulate)), _NUM_THREADS)
    _raise_status(kernel, status)
    if target is not out:
        out[...] = target
    return out


# --------------------------------------------------------------------------
# Scaled-dot-product attention
# --------------------------------------------------------------------------

def causal_mask(tq, tk):
    """(tq, tk) bool, True where query i may see key j: j <= i + (tk - tq).

    With tq == tk this is the lower triangle.  With tq < tk the queries are the
    last tq positions of a sequence whose first tk - tq keys are cached (a KV
    cache), so every query also sees all the cached keys.
    """
    i = np.arange(tq)[:, None]
    j = np.arange(tk)[None, :]
    return j <= i + (tk - tq)


def masked_softmax(s, allowed=None):
    """Softmax over the last axis of scores s, keeping only the ``allowed`` entries.

    s: (..., n) float;  allowed: bool broadcastable to s, or None (all).
    Returns (p, lse): p (..., n), 0 where not allowed, and lse (...), the
    log-sum-exp of the allowed scores.  A row with no allowed entry (or n = 0)
    gets p = 0 and lse = -inf.  NaN in an allowed score propagates to its row.
    """
    if allowed is not None:
        s = np.where(allowed, s, -np.inf)                 # masked scores: exp(-inf) = 0
    m = (np.max(s, axis=-1, keepdims=True) if s.shape[-1]
         else np.full(s.shape[:-1] + (1,), -np.inf, s.dtype))       # (..., 1) row max
    m = np.where(np.isneginf(m), 0, m)                    # rows with nothing allowed
    e = np.exp(s - m)                                     # (..., n), in (0, 1]
    z = np.sum(e, axis=-1, keepdims=True)                 # (..., 1)
    p = e / np.where(z > 0, z, 1)                         # empty rows: 0 / 1
    with np.errstate(divide="ignore"):
        lse = (m + np.log(z))[..., 0]                     # log 0 = -inf for empty rows
    return p, lse


def _visible_matmul(a, b, visible):
    """``a @ b`` where the entries of ``a`` that are not ``visible`` take no part.

    The C kernels skip masked keys; a plain matmul multiplies them by 0, and
    0 * NaN = NaN would let a NaN in a masked (future) key reach the output.
    Only when ``b`` holds NaN/inf is the slower exact form needed.
    a: (..., m, n)   b: (..., n, p)   visible: (m, n) or (..., m, n) bool, or None
    """
    finite = np.isfinite(b)
    if visible is None or finite.all():
        return a @ b
    bad = np.where(finite, 0, b)                                      # (..., n, p)
    with np.errstate(invalid="ignore"):
        term = np.where(visible[..., None], a[..., None] * bad[..., None, :, :], 0)
    return a @ np.where(finite, b, 0) + term.sum(axis=-2)            # (..., m, p)


def attention_reference(q, k, v, causal=False, scale=None):
    """The spec of the fused attention forward kernel.

    q: (..., tq, d)   k, v: (..., tk, d)   (same leading dims, e.g. (B, H))
    Returns o: (..., tq, d) and lse: (..., tq), the log-sum-exp of each score
    row, which the backward uses to recompute the probabilities.
    Causal keeps key j for query i iff j <= i + (tk - tq) (:func:`causal_mask`);
    a row with no visible key gets o = 0 and lse = -inf.
    """
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = scale * (q @ np.swapaxes(k, -1, -2))            # (..., tq, tk)
    allowed = causal_mask(q.shape[-2], k.shape[-2]) if causal else None
    p, lse = masked_softmax(s, allowed)                 # (..., tq, tk), (..., tq)
    o = _visible_matmul(p, v, allowed)                  # (..., tq, d)
    return o.astype(q.dtype, copy=False), lse.astype(q.dtype, copy=False)


def attention_backward_reference(q, k, v, o, lse, dout, causal=False, scale=None):
    """The spec of the fused attention backward kernel: returns (dq, dk, dv).

    It recomputes P from q, k and lse instead of storing it.  (The formulas are
    in the code: in a student kit they are assignment 3's answer, cut out.)
    """
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    ### BEGIN SOLUTION
    # P = exp(scale * q k^T - lse);  dv = P^T dout;  dP = dout v^T
    # dS = P * (dP - rowsum(dout * o));  dq = scale * dS k;  dk = scale * dS^T q
    s = scale * (q @ np.swapaxes(k, -1, -2))            # (..., tq, tk)
    with np.errstate(invalid="ignore", over="ignore"):  # masked scores: dropped below
        p = np.exp(s - lse[..., None])                  # (..., tq, tk)
    visible = causal_mask(q.shape[-2], k.shape[-2]) if causal else None
    if causal:
        p = np.where(visible, p, 0)
    p = np.where(np.isneginf(lse)[..., None], 0, p)     # rows with no key
    dv = _visible_matmul(np.swapaxes(p, -1, -2), dout,  # (..., tk, d)
                         None if visible is None else visible.T)
    dp = dout @ np.swapaxes(v, -1, -2)                  # (..., tq, tk)
    delta = np.sum(dout * o, axis=-1, keepdims=True)    # (..., tq, 1)
    ds = p * (dp - delta)                               # (..., tq, tk)
    if causal:
        ds = np.where(visible, ds, 0)                   # masked keys: no gradient, even NaN
    dq = scale * _visible_matmul(ds, k, visible)        # (..., tq, d)
    dk = scale * _visible_matmul(np.swapaxes(ds, -1, -2), q,   # (..., tk, d)
                                 None if visible is None else visible.T)
    ### END SOLUTION
    cast = lambda x: x.astype(q.dtype, copy=False)
    return cast(dq), cast(dk), cast(dv)


def _check_attention(kernel, q, k, v):
    dtype = _check_float("q/k/v", kernel, ("q", q), ("k", k), ("v", v))
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError("%s: q, k, v must have the same number (>= 2) of dims, got "
                         "%s, %s, %s" % (kernel, q.shape, k.shape, v.shape))
    if k.shape != v.shape:
        raise ValueError("%s: k and v must have the same shape, got %s and %s"
                         % (kernel, k.shape, v.shape))
    if q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError("%s: q %s and k %s must agree in leading dims and head size"
                         % (kernel, q.shape, k.shape))
    lead = q.shape[:-2]
    bh = int(np.prod(lead)) if lead else 1
    tq, d = q.shape[-2:]
    tk = k.shape[-2]
    _check_dims(kernel, batch_heads=bh, tq=tq, tk=tk, head_dim=d)
    return dtype, bh, tq, tk, d


def _scale(scale, d, kernel):
    if scale is None:
        return 1.0 / math.sqrt(d) if d else 1.0
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError("%s: scale must be finite, got %r" % (kernel, scale))
    return scale


# Below this many score entries x head size (bh * tq * tk * d) the attention
# kernels run on 1 thread.  One head-batch of a short sentence, (1, 12, 64, 32),
# took 0.17 ms on 1 thread and 0.41 ms on 2 when the second thread had to be
# woken for each call; with the OpenMP threads spinning ~60 us between kernels
# (see _OMP_SPIN_DEFAULT) it takes 0.104 ms on 1 and 0.070 ms on 2, and
# (1, 12, 40, 32) 0.071 and 0.051 ms (Intel Xeon VM, median of 2000 calls).
_ATTENTION_SERIAL_BELOW = 2**18


def _attention_threads(bh, tq, tk, d):
    return 1 if bh * tq * tk * d < _ATTENTION_SERIAL_BELOW else _NUM_THREADS


def attention(q, k, v, causal=False, scale=None):
    """Scaled-dot-product attention forward: returns (o, lse).

    q: (..., tq, d)   k, v: (..., tk, d)   ->   o: (..., tq, d), lse: (..., tq)
    ``scale`` defaults to 1/sqrt(d).  See :func:`attention_reference`.
    """
    kernel = "attention"
    dtype, bh, tq, tk, d = _check_attention(kernel, q, k, v)
    scale = _scale(scale, d, kernel)
    if _BACKEND == "numpy" or bh * tq * tk * d == 0:
        return attention_reference(q, k, v, causal, scale)
    q, k, v = (_for_c(x) for x in (q, k, v))
    o = np.empty(q.shape, dtype)
    lse = np.empty(q.shape[:-1], dtype)
    f, kind = ((_lib.tl_attn_fwd_f32, "float *") if dtype == np.float32
               else (_lib.tl_attn_fwd_f64, "double *"))
    status = f(bh, tq, tk, d, scale, int(bool(causal)),
               _ptr(kind, q), _ptr(kind, k), _ptr(kind, v),
               _ptr(kind, o), _ptr(kind, lse), _attention_threads(bh, tq, tk, d))
    _raise_status(kernel, status)
    return o, lse


def attention_backward(q, k, v, o, lse, dout, causal=False, scale=None):
    """Backward of :func:`attention`: returns (dq, dk, dv), same shapes as q, k, v.

    o and lse are what the forward returned; dout is dL/do, shaped like o.
    """
    kernel = "attention_backward"
    dtype, bh, tq, tk, d = _check_attention(kernel, q, k, v)
    _check_float("o/lse/dout", kernel, ("q", q), ("o", o), ("lse", lse), ("dout", dout))
    if o.shape != q.shape or dout.shape != q.shape or lse.shape != q.shape[:-1]:
        raise ValueError("%s: o %s and dout %s must match q %s, lse %s must be %s"
                         % (kernel, o.shape, dout.shape, q.shape, lse.shape, q.shape[:-1]))
    scale = _scale(scale, d, kernel)
    if _BACKEND == "numpy" or bh * tq * tk * d == 0:
        return attention_backward_reference(q, k, v, o, lse, dout, causal, scale)
    q, k, v, o, lse, dout = (_for_c(x) for x in (q, k, v, o, lse, dout))
    dq = np.empty(q.shape, dtype)
    dk = np.empty(k.shape, dtype)
    dv = np.empty(v.shape, dtype)
    f, kind = ((_lib.tl_attn_bwd_f32, "float *") if dtype == np.float32
               else (_lib.tl_attn_bwd_f64, "double *"))
    status = f(bh, tq, tk, d, scale, int(bool(causal)),
               _ptr(kind, q), _ptr(kind, k), _ptr(kind, v), _ptr(kind, o),
               _ptr(kind, dout), _ptr(kind, lse),
               _ptr(kind, dq), _ptr(kind, dk), _ptr(kind, dv),
               _attention_threads(bh, tq, tk, d))
    _raise_status(kernel, status)
    return dq, dk, dv


def _attention_plain_c(kernel, q, k, v, causal, scale, backward=None):
    """Run the plain-loop C attention (csrc/attention_plain.inc) forward, or
    backward when backward = (o, lse, dout)."""
    if not c_available():
        raise RuntimeError("%s: needs tinylm's C extension (%s)" % (kernel, _C_ERROR))
    dtype, bh, tq, tk, d = _check_attention(kernel, q, k, v)
    if backward is not None:
        o, lse, dout = backward
        _check_float("o/lse/dout", kernel, ("q", q), ("o", o), ("lse", lse), ("dout", dout))
        if o.shape != q.shape or dout.shape != q.shape or lse.shape != q.shape[:-1]:
            raise ValueError("%s: o %s and dout %s must match q %s, lse %s must be %s"
                             % (kernel, o.shape, dout.shape, q.shape, lse.shape, q.shape[:-1]))
    scale = _scale(scale, d, kernel)
    kind = "float *" if dtype == np.float32 else "double *"
    ins = [_c(x, dtype) for x in (q, k, v) + tuple(backward or ())]
    if backward is None:
        outs = [np.empty(q.shape, dtype), np.empty(q.shape[:-1], dtype)]
        f = _lib.tl_attn_plain_fwd_f32 if dtype == np.float32 else _lib.tl_attn_plain_fwd_f64
    else:
        ins[3:] = ins[3], ins[5], ins[4]        # C order: o, dout, lse
        outs = [np.empty(x.shape, dtype) for x in (q, k, v)]
        f = _lib.tl_attn_plain_bwd_f32 if dtype == np.float32 else _lib.tl_attn_plain_bwd_f64
    _raise_status(kernel, f(bh, tq, tk, d, scale, int(bool(causal)),
                            *[_ptr(kind, x) for x in ins + outs]))
    return tuple(outs)


def attention_plain(q, k, v, causal=False, scale=None):
    """:func:`attention` computed by plain C loops, one per formula line: the
    readable version of the fast kernel, which the tests compare it with.
    C backend only; slow (stores the scores whole)."""
    return _attention_plain_c("attention_plain", q, k, v, causal, scale)


def attention_plain_backward(q, k, v, o, lse, dout, causal=False, scale=None):
    """:func:`attention_backward` computed by plain C loops (see attention_plain)."""
    return _attention_plain_c("attention_plain_backward", q, k, v, causal, scale,
                              backward=(o, lse, dout))


# --------------------------------------------------------------------------
# Fused kernels (csrc/fused.inc).  Each has its NumPy reference, the spec,
# which is also what the NumPy backend runs.  Inputs of any strides are
# accepted (copied to C order when needed); outputs are new arrays unless
# said otherwise.
# --------------------------------------------------------------------------

def _fused_fn(name, dtype):
    return getattr(_lib, "tl_%s_%s" % (name, "f32" if dtype == np.float32 else "f64"))


def _kind(dtype):
    return "float *" if dtype == np.float32 else "double *"


def _c(x, dtype=None):
    """x as a C-contiguous, aligned array of dtype (copied only if it is not one)."""
    return _for_c(np.ascontiguousarray(x, dtype))


def _check_vector(kernel, label, x, D, dtype):
    if x.shape != (D,) or x.dtype != dtype:
        raise ValueError("%s: %s must have shape (%d,) and dtype %s, got %s %s"
                         % (kernel, label, D, dtype, x.shape, x.dtype))


# LayerNorm over the last axis --------------------------------------------

def layernorm_forward_reference(x, weight=None, bias=None, eps=1e-5):
    """x: (..., D) -> (y, xhat, rstd): y, xhat (..., D), rstd (..., 1).

        mu = mean(x); var = mean((x - mu)^2); rstd = 1/sqrt(var + eps)
        xhat = (x - mu) * rstd;  y = xhat * weight + bias  (y = xhat without weight)
    """
    mu = x.mean(axis=-1, keepdims=True)                      # (..., 1)
    xc = x - mu                                              # (..., D)
    var = (xc * xc).mean(axis=-1, keepdims=True)             # (..., 1)
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))              # (..., 1)
    xhat = xc * rstd                                         # (..., D)
    y = xhat if weight is None else xhat * weight + bias     # (..., D)
    return y, xhat, rstd


def layernorm_backward_reference(dy, xhat, rstd, weight=None):
    """-> (dx, dweight, dbias) (the last two None without weight).

        g = dy * weight;  dweight = sum_rows dy * xhat;  dbias = sum_rows dy
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    """
    D = xhat.shape[-1]
    dweight = dbias = None
    g = dy
    if weight is not None:
        dweight = (dy * xhat).reshape(-1, D).sum(axis=0)
        dbias = dy.reshape(-1, D).sum(axis=0)
        g = dy * weight                                      # (..., D)
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dweight, dbias


def _check_layernorm(kernel, x, weight, bias):
    dtype = _check_float("x", kernel, ("x", x))
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError("%s: x must have a non-empty last axis, got shape %s" % (kernel, x.shape))
    D = x.shape[-1]
    if (weight is None) != (bias is None):
        raise ValueError("%s: pass both weight and bias, or neither" % kernel)
    if weight is not None:
        _check_vector(kernel, "weight", weight, D, dtype)
        _check_vector(kernel, "bias", bias, D, dtype)
    _check_dims(kernel, rows=x.size // D, D=D)
    return dtype, D


def layernorm_forward(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last axis: see :func:`layernorm_forward_reference`."""
    kernel = "layernorm_forward"
    dtype, D = _check_layernorm(kernel, x, weight, bias)
    if not eps > 0:
        raise ValueError("%s: eps must be > 0, got %r" % (kernel, eps))
    if _BACKEND == "numpy" or x.size == 0:
        return layernorm_forward_reference(x, weight, bias, eps)
    x = _c(x)
    y, xhat = np.empty_like(x), np.empty_like(x)
    rstd = np.empty(x.shape[:-1] + (1,), dtype)
    k = _kind(dtype)
    w = _ptr(k, _c(weight)) if weight is not None else _ffi.NULL
    b = _ptr(k, _c(bias)) if bias is not None else _ffi.NULL
    _raise_status(kernel, _fused_fn("layernorm_fwd", dtype)(
        x.size // D, D, eps, _ptr(k, x), w, b, _ptr(k, y), _ptr(k, xhat), _ptr(k, rstd),
        _NUM_THREADS))
    return y, xhat, rstd


def layernorm_backward(dy, xhat, rstd, weight=None):
    """Backward of :func:`layernorm_forward` -> (dx, dweight, dbias)."""
    kernel = "layernorm_backward"
    dtype, D = _check_layernorm(kernel, xhat, weight, weight)
    _check_float("dy/xhat/rstd", kernel, ("dy", dy), ("xhat", xhat), ("rstd", rstd))
    if dy.shape != xhat.shape or rstd.shape != xhat.shape[:-1] + (1,):
        raise ValueError("%s: dy %s must match xhat %s, rstd %s must be %s"
                         % (kernel, dy.shape, xhat.shape, rstd.shape, xhat.shape[:-1] + (1,)))
    if _BACKEND == "numpy" or xhat.size == 0:
        return layernorm_backward_reference(dy, xhat, rstd, weight)
    dy, xhat, rstd = _c(dy), _c(xhat), _c(rstd)
    dx = np.empty_like(dy)
    k = _kind(dtype)
    if weight is None:
        w = dw = db = _ffi.NULL
        dweight = dbias = None
    else:
        dweight, dbias = np.zeros(D, dtype), np.zeros(D, dtype)
        w, dw, db = _ptr(k, _c(weight)), _ptr(k, dweight), _ptr(k, dbias)
    _raise_status(kernel, _fused_fn("layernorm_bwd", dtype)(
        xhat.size // D, D, _ptr(k, dy), _ptr(k, xhat), _ptr(k, rstd), w, _ptr(k, dx), dw, db,
        _NUM_THREADS))
    return dx, dweight, dbias


# GELU ----------------------------------------------------------------------

_GELU_C = math.sqrt(2 / math.pi)
_GELU_K = 0.044715
_SERIES_TERMS = 60      # enough for |x| < 2.5 in float64 (terms fall below 1e-17)
_CF_DEPTH = 60          # continued-fraction depth for |x| >= 2.5


def erf_reference(x):
    """The error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, element-wise.

    x: float array (float32 or float64) -> same shape and dtype.

    |x| < 2.5: the series with only positive terms (no cancellation)
        erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n  2^n x^(2n+1) / (1*3*5*...*(2n+1))
    |x| >= 2.5: erf = 1 - erfc, with erfc from its continued fraction
        erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
    evaluated bottom-up from a fixed depth.  erf is odd, so both use |x|.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    dtype = x.dtype
    a = np.abs(x)
    out = np.empty_like(a)
    small = a < 2.5
    # -- series on the small arguments ----------------------------------
    s = a[small]
    s2 = s * s
    term = s.copy()                    # n = 0 term: x
    total = s.copy()
    tiny = np.finfo(dtype).eps / 4
    for n in range(1, _SERIES_TERMS):
        term *= (2 * s2) * dtype.type(1.0 / (2 * n + 1))
        total += term
        # terms only shrink once n > x^2: stop when none can change the sum
        if n % 4 == 0 and n > 6 and not np.any(term > tiny * total):
            break
    out[small] = dtype.type(2 / math.sqrt(math.pi)) * np.exp(-s2) * total
    # -- continued fraction on the large ones ---------------------------
    b = a[~small]
    t = b.copy()
    for n in range(_CF_DEPTH, 0, -1):
        t = b + dtype.type(n / 2) / t
    with np.errstate(under="ignore"):
        erfc = np.exp(-b * b) / (dtype.type(math.sqrt(math.pi)) * t)
    out[~small] = 1 - erfc
    return np.copysign(out, x).astype(dtype, copy=False)


def gelu_forward_reference(x, approximate="tanh", return_aux=False):
    """y = x/2 (1 + th),  th = tanh(sqrt(2/pi) (x + 0.044715 x^3))   (approximate="tanh")
    y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2                 (approximate="none")
    With return_aux: (y, th) or (y, Phi(x)), what GELU's backward reuses."""
    t = x.dtype.type
    if approximate == "tanh":
        # (in place: two arrays instead of seven; the NumPy backend runs this)
        u = x * x                                          # x^2 (np.power is ~10x slower)
        u *= x
        u *= t(_GELU_K)
        u += x
        u *= t(_GELU_C)                                    # u = sqrt(2/pi)(x + k x^3)
        aux = np.tanh(u, out=u)                            # th = tanh(u)
        y = aux + t(1)
        y *= x
        y *= t(0.5)                                        # y = x/2 (1 + th)
    else:
        aux = t(0.5) * (1 + erf_reference(x * t(1 / math.sqrt(2))))
        y = x * aux
    return (y, aux) if return_aux else y


def gelu_backward_reference(dy, x, approximate="tanh"):
    """dx = dy * (1/2 (1 + th) + x/2 (1 - th^2) du/dx),  th = tanh(u)   ("tanh")
    dx = dy * (Phi(x) + x phi(x))                                       ("none")"""
    t = x.dtype.type
    if approximate == "tanh":
        u = t(_GELU_C) * (x + t(_GELU_K) * x * x * x)
        th = np.tanh(u)
        du = t(_GELU_C) * (1 + t(3 * _GELU_K) * x * x)
        return dy * (t(0.5) * (1 + th) + t(0.5) * x * (1 - th * th) * du)
    cdf = t(0.5) * (1 + erf_reference(x * t(1 / math.sqrt(2))))
    pdf = t(1 / math.sqrt(2 * math.pi)) * np.exp(t(-0.5) * x * x)
    return dy * (cdf + x * pdf)


def _gelu_form(kernel, approximate):
    if approximate not in ("tanh", "none"):
        raise ValueError("%s: approximate must be 'tanh' or 'none', got %r" % (kernel, approximate))
    return int(approximate == "tanh")


def gelu_forward(x, approximate="tanh", return_aux=False):
    """GELU in one pass: see :func:`gelu_forward_reference` (y, or (y, aux))."""
    kernel = "gelu_forward"
    tanh_form = _gelu_form(kernel, approximate)
    dtype = _check_float("x", kernel, ("x", x))
    if _BACKEND == "numpy" or x.size == 0:
        return gelu_forward_reference(x, approximate, return_aux)
    x = _c(x)
    y = np.empty_like(x)
    aux = np.empty_like(x) if return_aux else None
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("gelu_fwd", dtype)(
        x.size, tanh_form, _ptr(k, x), _ptr(k, y), _ptr(k, aux) if return_aux else _ffi.NULL,
        _NUM_THREADS))
    return (y, aux) if return_aux else y


def gelu_backward(dy, x, approximate="tanh"):
    """dx for :func:`gelu_forward` (recomputed from x, nothing cached)."""
    kernel = "gelu_backward"
    tanh_form = _gelu_form(kernel, approximate)
    dtype = _check_float("dy/x", kernel, ("dy", dy), ("x", x))
    if dy.shape != x.shape:
        raise ValueError("%s: dy %s must match x %s" % (kernel, dy.shape, x.shape))
    if _BACKEND == "numpy" or x.size == 0:
        return gelu_backward_reference(dy, x, approximate)
    dy, x = _c(dy), _c(x)
    dx = np.empty_like(x)
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("gelu_bwd", dtype)(x.size, tanh_form, _ptr(k, x), _ptr(k, dy),
                                                        _ptr(k, dx), _NUM_THREADS))
    return dx


# softmax + cross-entropy over the last axis ----------------------------------

def softmax_cross_entropy_reference(logits, targets, ignore_index=-100):
    """logits (..., V), targets (...) ints in [0, V) or ignore_index
    -> (loss, p, count): loss = sum of -log p[target] over counted rows / max(count, 1)
    (0-d, logits' dtype), p = softmax(logits) (..., V), count = rows not ignored."""
    keep = targets != ignore_index
    safe_t = np.where(keep, targets, 0)
    m = np.max(logits, axis=-1, keepdims=True)                  # (..., 1)
    e = np.exp(logits - m)                                      # (..., V)
    s = np.sum(e, axis=-1, keepdims=True)                       # (..., 1)
    lse = (m + np.log(s))[..., 0]                               # (...)
    z_t = np.take_along_axis(logits, safe_t[..., None], axis=-1)[..., 0]
    nll = np.where(keep, lse - z_t, 0)                          # (...)
    count = int(keep.sum())
    return np.asarray(nll.sum() / max(count, 1), logits.dtype), e / s, count


def softmax_cross_entropy_backward_reference(p, targets, count, dout=1.0, ignore_index=-100):
    """dlogits = dout / max(count, 1) * (p - onehot(targets)), 0 on ignored rows."""
    keep = targets != ignore_index
    safe_t = np.where(keep, targets, 0)
    dz = p.copy()
    np.put_along_axis(dz, safe_t[..., None],
                      np.take_along_axis(dz, safe_t[..., None], axis=-1) - 1, axis=-1)
    dz *= (keep[..., None] * (dout / max(count, 1))).astype(p.dtype)
    return dz


def _check_xent(kernel, z, targets, ignore_index):
    dtype = _check_float("logits", kernel, ("logits", z))
    t = np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError("%s: targets must be integers, got dtype %s" % (kernel, t.dtype))
    if z.ndim < 1 or z.shape[-1] == 0 or t.shape != z.shape[:-1]:
        raise ValueError("%s: logits (..., V) with V > 0 and targets (...) expected, got %s and %s"
                         % (kernel, z.shape, t.shape))
    bad = (t != ignore_index) & ((t < 0) | (t >= z.shape[-1]))
    if bad.any():
        raise IndexError("%s: target %d is out of range [0, %d) (and is not ignore_index=%d)"
                         % (kernel, t[bad].ravel()[0], z.shape[-1], ignore_index))
    _check_dims(kernel, rows=t.size, V=z.shape[-1])
    return dtype, t


def softmax_cross_entropy(logits, targets, ignore_index=-100):
    """Mean cross-entropy and softmax in one pass: see
    :func:`softmax_cross_entropy_reference` -> (loss, p, count)."""
    kernel = "softmax_cross_entropy"
    dtype, t = _check_xent(kernel, logits, targets, ignore_index)
    if _BACKEND == "numpy" or t.size == 0:
        return softmax_cross_entropy_reference(logits, t, ignore_index)
    z, t64 = _c(logits), _c(t, np.int64)
    p = np.empty_like(z)
    nll = np.empty(t.shape, dtype)
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("softmax_xent_fwd", dtype)(
        t.size, z.shape[-1], _ptr(k, z), _ptr("int64_t *", t64), ignore_index, _ptr(k, p),
        _ptr(k, nll), _NUM_THREADS))
    count = int(np.count_nonzero(t != ignore_index))
    return np.asarray(nll.sum() / max(count, 1), dtype), p, count


def softmax_cross_entropy_backward(p, targets, count, dout=1.0, ignore_index=-100):
    """dlogits of :func:`softmax_cross_entropy` from its p and count."""
    kernel = "softmax_cross_entropy_backward"
    dtype, t = _check_xent(kernel, p, targets, ignore_index)
    if _BACKEND == "numpy" or t.size == 0:
        return softmax_cross_entropy_backward_reference(p, t, count, dout, ignore_index)
    p, t64 = _c(p), _c(t, np.int64)
    dz = np.empty_like(p)
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("softmax_xent_bwd", dtype)(
        t.size, p.shape[-1], _ptr(k, p), _ptr("int64_t *", t64), ignore_index,
        float(dout) / max(count, 1), _ptr(k, dz), _NUM_THREADS))
    return dz


# Adam / AdamW update of one parameter buffer, in place ------------------------

def adam_update_reference(p, g, m, v, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                          weight_decay=0.0, decoupled=True, grad_scale=1.0):
    """One Adam step t = ``step`` >= 1 on p, m, v in place (g is not changed):

        d = grad_scale * g
        decoupled (AdamW): p = p (1 - lr wd)    else (Adam): d = d + wd p
        m = b1 m + (1 - b1) d;   v = b2 v + (1 - b2) d^2
        p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    b1, b2 = betas
    d = g * grad_scale if grad_scale != 1 else g
    if decoupled and weight_decay:
        p *= 1 - lr * weight_decay
    elif weight_decay:
        d = d + weight_decay * p
    m *= b1
    m += (1 - b1) * d
    v *= b2
    v += (1 - b2) * (d * d)
    denom = np.sqrt(v) / math.sqrt(1 - b2 ** step) + eps
    p -= (lr / (1 - b1 ** step)) * (m / denom)


def adam_update(p, g, m, v, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                weight_decay=0.0, decoupled=True, grad_scale=1.0):
    """Fused :func:`adam_update_reference`: p, m, v (one dtype, same shape as
    g) are updated in place."""
    kernel = "adam_update"
    dtype = _check_float("p/g/m/v", kernel, ("p", p), ("g", g), ("m", m), ("v", v))
    for label, x in (("g", g), ("m", m), ("v", v)):
        if x.shape != p.shape:
            raise ValueError("%s: %s has shape %s, p has %s" % (kernel, label, x.shape, p.shape))
    for label, x in (("p", p), ("m", m), ("v", v)):
        if not x.flags.writeable:
            raise ValueError("%s: %s must be writable" % (kernel, label))
    if int(step) < 1:
        raise ValueError("%s: step must be >= 1, got %r" % (kernel, step))
    strided = not all(x.flags.c_contiguous for x in (p, m, v))
    if _BACKEND == "numpy" or p.size == 0 or strided:        # (the spec works on any strides)
        adam_update_reference(p, g, m, v, step, lr, betas, eps, weight_decay, decoupled,
                              grad_scale)
        return
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("adam", dtype)(
        p.size, _ptr(k, p), _ptr(k, _c(g)), _ptr(k, m), _ptr(k, v), float(lr),
        float(betas[0]), float(betas[1]), float(eps), float(weight_decay), int(bool(decoupled)),
        float(grad_scale), int(step), _NUM_THREADS))


# Embedding backward: scatter-add ----------------------------------------------

def embedding_backward_reference(ids, dy, dweight):
    """dweight[ids[i]] += dy[i] for every position (repeated ids add up), in place.
    ids (...) ints, dy (..., D), dweight (V, D)."""
    np.add.at(dweight, ids.ravel(), dy.reshape(-1, dweight.shape[1]))


def embedding_backward(ids, dy, dweight):
    """Fused :func:`embedding_backward_reference` (same order of additions)."""
    kernel = "embedding_backward"
    dtype = _check_float("dy/dweight", kernel, ("dy", dy), ("dweight", dweight))
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError("%s: ids must be integers, got dtype %s" % (kernel, ids.dtype))
    if dweight.ndim != 2 or dy.shape != ids.shape + (dweight.shape[1],):
        raise ValueError("%s: ids %s, dy %s and dweight %s do not fit (dy must be ids.shape + (D,))"
                         % (kernel, ids.shape, dy.shape, dweight.shape))
    if not dweight.flags.c_contiguous or not dweight.flags.writeable:
        raise ValueError("%s: dweight must be C-contiguous and writable" % kernel)
    V = dweight.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise IndexError("%s: ids must be in [0, %d), got one = %d"
                         % (kernel, V, ids.min() if ids.min() < 0 else ids.max()))
    if _BACKEND == "numpy" or ids.size == 0:
        embedding_backward_reference(ids, dy, dweight)
        return
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("embedding_bwd", dtype)(
        ids.size, dweight.shape[1], V, _ptr("int64_t *", _c(ids, np.int64)), _ptr(k, _c(dy)),
        _ptr(k, dweight), _NUM_THREADS))


# --------------------------------------------------------------------------
# Recurrent: an LSTM or GRU layer's whole time loop (csrc/recurrent.inc).
# The references below are the spec; they are the per-step cells of
# tinylm/layers/rnn.py (LSTMCell.step / step_backward, GRUCell ...) written
# over the sequence, with the input projection x W_ih^T of all the steps
# done beforehand by the caller (one matmul), and the weight gradients done
# afterwards from the returned pre-activation gradients (one matmul each; the
# bias gradients come back summed):
#
#   LSTM  dW_ih = dz^T x,  dW_hh = dz^T h_prev,  db_ih = db_hh = db,  dx = dz W_ih
#   GRU   dW_ih = dgi^T x, dW_hh = dgh^T h_prev, db_ih = dbi, db_hh = dbh,  dx = dgi W_ih
# where h_prev[:, t] = h_{t-1} (h0 at t = 0).  Shapes: batch B, steps T, hidden H.
# --------------------------------------------------------------------------

def _sigmoid(x):
    """The stable logistic function of tinylm.layers.activations.sigmoid."""
    e = np.exp(-np.abs(x))                 # in (0, 1]: never overflows
    r = 1 / (1 + e)
    return np.where(x >= 0, r, e * r)


def lstm_sequence_forward_reference(gx, w_hh, h0, c0, bias=None):
    """LSTM over T steps, gates i, f, g, o.

    gx (B, T, 4H) = x W_ih^T,  w_hh (4H, H),  h0, c0 (B, H),  bias (4H,) = b_ih + b_hh or None.
    Returns out (B, T, H) (h_t), gates (B, T, 4H) (i, f, g, o after their
    nonlinearities) and cs (B, T, H) (c_t); the final state is (out[:, -1], cs[:, -1]).
    """
    B, T, G = gx.shape
    H = G // 4
    out, cs = np.empty((B, T, H), gx.dtype), np.empty((B, T, H), gx.dtype)
    gates = np.empty((B, T, 4 * H), gx.dtype)
    h, c = h0, c0
    for t in range(T):
        gi = gx[:, t] if bias is None else gx[:, t] + bias
        z = gi + h @ w_hh.T                                            # (B, 4H)
        i, f = _sigmoid(z[:, 0:H]), _sigmoid(z[:, H:2 * H])
        g, o = np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:4 * H])
        c = f * c + i * g                                              # c_t
        h = o * np.tanh(c)                                             # h_t
        gates[:, t] = np.concatenate([i, f, g, o], axis=1)
        out[:, t], cs[:, t] = h, c
    return out, gates, cs


def lstm_sequence_backward_reference(w_hh, gates, cs, c0, dout, dhT, dcT):
    """BPTT of :func:`lstm_sequence_forward_reference`.

    dout (B, T, H) or None (zeros), dhT, dcT (B, H): gradients of the outputs
    and of the final state.  Returns dz (B, T, 4H), the gradient of the gates'
    pre-activations z_t, dh0, dc0 (B, H), and db (4H,) = sum of dz over batch and time.
    """
    B, T, G = gates.shape
    H = G // 4
    dz = np.empty_like(gates)
    dh, dc = dhT, dcT
    for t in reversed(range(T)):
        if dout is not None:
            dh = dh + dout[:, t]                       # h_t feeds out_t and step t+1
        i, f, g, o = (gates[:, t, k * H:(k + 1) * H] for k in range(4))
        c_prev = cs[:, t - 1] if t > 0 else c0
        tc = np.tanh(cs[:, t])
        # h_t = o tanh(c_t);  c_t = f c_{t-1} + i g
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        df, di, dg = dc * c_prev, dc * g, dc * i
        dc = dc * f                                    # dL/dc_{t-1}
        dz[:, t] = np.concatenate([di * i * (1 - i), df * f * (1 - f),
                                   dg * (1 - g * g), do * o * (1 - o)], axis=1)
        dh = dz[:, t] @ w_hh                           # dL/dh_{t-1}
    return dz, dh, dc, dz.sum(axis=(0, 1))


def gru_sequence_forward_reference(gx, w_hh, b_hn, h0, b_i=None):
    """GRU over T steps, gates r, z, n.

    gx (B, T, 3H) = x W_ih^T,  w_hh (3H, H),  b_hn (H,) or None,  h0 (B, H),
    b_i (3H,) = b_ih + [b_hr, b_hz, 0] or None.
    Returns out (B, T, H) (h_t) and gates (B, T, 4H): r, z, n and gh_n = h_{t-1} W_hn^T + b_hn.
    """
    B, T, G = gx.shape
    H = G // 3
    out, gates = np.empty((B, T, H), gx.dtype), np.empty((B, T, 4 * H), gx.dtype)
    h = h0
    for t in range(T):
        gi = gx[:, t] if b_i is None else gx[:, t] + b_i               # (B, 3H)
        gh = h @ w_hh.T                                                # (B, 3H)
        r = _sigmoid(gi[:, 0:H] + gh[:, 0:H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        ghn = gh[:, 2 * H:] if b_hn is None else gh[:, 2 * H:] + b_hn
        n = np.tanh(gi[:, 2 * H:] + r * ghn)
        h = (1 - z) * n + z * h                                        # h_t
        gates[:, t] = np.concatenate([r, z, n, ghn], axis=1)
        out[:, t] = h
    return out, gates


def gru_sequence_backward_reference(w_hh, gates, hprev, dout, dhT):
    """BPTT of :func:`gru_sequence_forward_reference`.

    hprev (B, T, H): h_{t-1} of each step (h0 first); dout (B, T, H) or None; dhT (B, H).
    Returns dgi, dgh (B, T, 3H), the gradients of x W_ih^T + b_ih and of
    h W_hh^T + b_hh at each step, dh0 (B, H), and dbi, dbh (3H,), the sums of
    dgi and dgh over batch and time.
    """
    B, T, G = gates.shape
    H = G // 4
    dgi = np.empty((B, T, 3 * H), gates.dtype)
    dgh = np.empty((B, T, 3 * H), gates.dtype)
    dh = dhT
    for t in reversed(range(T)):
        if dout is not None:
            dh = dh + dout[:, t]
        r, z, n, ghn = (gates[:, t, k * H:(k + 1) * H] for k in range(4))
        h = hprev[:, t]
        # h_t = (1 - z) n + z h_{t-1};  n = tanh(gi_n + r gh_n);  r, z = sigmoid(.)
        dn, dzg, dh_direct = dh * (1 - z), dh * (h - n), dh * z
        dan = dn * (1 - n * n)
        dar = dan * ghn * r * (1 - r)
        daz = dzg * z * (1 - z)
        dgi[:, t] = np.concatenate([dar, daz, dan], axis=1)
        dgh[:, t] = np.concatenate([dar, daz, dan * r], axis=1)
        dh = dgh[:, t] @ w_hh + dh_direct                # dL/dh_{t-1}
    return dgi, dgh, dh, dgi.sum(axis=(0, 1)), dgh.sum(axis=(0, 1))


def _check_recurrent(kernel, G, w_hh, named, dtype=None):
    """Checks shared by the sequence kernels: one float dtype, w_hh (G*H, H), and
    each named array of the given shape (None allowed where the shape is None-able).
    named: (label, array or None, shape, may_be_none).  Returns (dtype, H)."""
    present = [("w_hh", w_hh)] + [(l, a) for l, a, _, _ in named if a is not None]
    dtype = _check_float("arrays", kernel, *present)
    if w_hh.ndim != 2 or w_hh.shape[0] != G * w_hh.shape[1] or w_hh.shape[1] == 0:
        raise ValueError("%s: w_hh must have shape (%d*H, H) with H >= 1, got %s"
                         % (kernel, G, w_hh.shape))
    for label, a, shape, may_be_none in named:
        if a is None:
            if not may_be_none:
                raise TypeError("%s: %s must be an array, not None" % (kernel, label))
            continue
        if a.shape != tuple(shape):
            raise ValueError("%s: %s has shape %s, expected %s"
                             % (kernel, label, a.shape, tuple(shape)))
    return dtype, w_hh.shape[1]


def _seq_dims(kernel, x, G, what):
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] % G:
        raise ValueError("%s: %s must be a 3-D array (B, T, %d*H), got %s"
                         % (kernel, what, G, getattr(x, "shape", type(x).__name__)))
    B, T, _ = x.shape
    _check_dims(kernel, B=B, T=T, size=x.size)
    return B, T


def _opt_ptr(k, x):
    return _ffi.NULL if x is None else _ptr(k, _c(x))


def lstm_sequence_forward(gx, w_hh, h0, c0, bias=None):
    """C kernel of :func:`lstm_sequence_forward_reference` -> (out, gates, cs)."""
    kernel = "lstm_sequence_forward"
    B, T = _seq_dims(kernel, gx, 4, "gx")
    H = gx.shape[2] // 4
    dtype, _ = _check_recurrent(kernel, 4, w_hh, [("gx", gx, (B, T, 4 * H), False),
                                                  ("h0", h0, (B, H), False),
                                                  ("c0", c0, (B, H), False),
                                                  ("bias", bias, (4 * H,), True)])
    if _BACKEND == "numpy" or B == 0 or T == 0:
        return lstm_sequence_forward_reference(gx, w_hh, h0, c0, bias)
    out, cs = np.empty((B, T, H), dtype), np.empty((B, T, H), dtype)
    gates = np.empty((B, T, 4 * H), dtype)
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("lstm_seq_fwd", dtype)(
        B, T, H, _ptr(k, _c(gx)), _opt_ptr(k, bias), _ptr(k, _c(w_hh)), _ptr(k, _c(h0)),
        _ptr(k, _c(c0)),
        _ptr(k, out), _ptr(k, gates), _ptr(k, cs), _NUM_THREADS))
    return out, gates, cs


def lstm_sequence_backward(w_hh, gates, cs, c0, dout, dhT, dcT):
    """C kernel of :func:`lstm_sequence_backward_reference` -> (dz, dh0, dc0, db)."""
    kernel = "lstm_sequence_backward"
    B, T = _seq_dims(kernel, gates, 4, "gates")
    H = gates.shape[2] // 4
    dtype, _ = _check_recurrent(kernel, 4, w_hh, [
        ("gates", gates, (B, T, 4 * H), False), ("cs", cs, (B, T, H), False),
        ("c0", c0, (B, H), False), ("dout", dout, (B, T, H), True),
        ("dhT", dhT, (B, H), False), ("dcT", dcT, (B, H), False)])
    if _BACKEND == "numpy" or B == 0 or T == 0:
        return lstm_sequence_backward_reference(w_hh, gates, cs, c0, dout, dhT, dcT)
    dz = np.empty((B, T, 4 * H), dtype)
    dh0, dc0 = np.empty((B, H), dtype), np.empty((B, H), dtype)
    db = np.empty(4 * H, dtype)
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("lstm_seq_bwd", dtype)(
        B, T, H, _ptr(k, _c(w_hh)), _ptr(k, _c(gates)), _ptr(k, _c(cs)), _ptr(k, _c(c0)),
        _opt_ptr(k, dout), _ptr(k, _c(dhT)), _ptr(k, _c(dcT)), _ptr(k, dz), _ptr(k, dh0),
        _ptr(k, dc0), _ptr(k, db), _NUM_THREADS))
    return dz, dh0, dc0, db


def gru_sequence_forward(gx, w_hh, b_hn, h0, b_i=None):
    """C kernel of :func:`gru_sequence_forward_reference` -> (out, gates)."""
    kernel = "gru_sequence_forward"
    B, T = _seq_dims(kernel, gx, 3, "gx")
    H = gx.shape[2] // 3
    dtype, _ = _check_recurrent(kernel, 3, w_hh, [("gx", gx, (B, T, 3 * H), False),
                                                  ("b_hn", b_hn, (H,), True),
                                                  ("h0", h0, (B, H), False),
                                                  ("b_i", b_i, (3 * H,), True)])
    if _BACKEND == "numpy" or B == 0 or T == 0:
        return gru_sequence_forward_reference(gx, w_hh, b_hn, h0, b_i)
    out, gates = np.empty((B, T, H), dtype), np.empty((B, T, 4 * H), dtype)
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("gru_seq_fwd", dtype)(
        B, T, H, _ptr(k, _c(gx)), _opt_ptr(k, b_i), _ptr(k, _c(w_hh)), _opt_ptr(k, b_hn),
        _ptr(k, _c(h0)),
        _ptr(k, out), _ptr(k, gates), _NUM_THREADS))
    return out, gates


def gru_sequence_backward(w_hh, gates, hprev, dout, dhT):
    """C kernel of :func:`gru_sequence_backward_reference` -> (dgi, dgh, dh0, dbi, dbh)."""
    kernel = "gru_sequence_backward"
    B, T = _seq_dims(kernel, gates, 4, "gates")
    H = gates.shape[2] // 4
    dtype, _ = _check_recurrent(kernel, 3, w_hh, [
        ("gates", gates, (B, T, 4 * H), False), ("hprev", hprev, (B, T, H), False),
        ("dout", dout, (B, T, H), True), ("dhT", dhT, (B, H), False)])
    if _BACKEND == "numpy" or B == 0 or T == 0:
        return gru_sequence_backward_reference(w_hh, gates, hprev, dout, dhT)
    dgi, dgh = np.empty((B, T, 3 * H), dtype), np.empty((B, T, 3 * H), dtype)
    dh0, dbi, dbh = np.empty((B, H), dtype), np.empty(3 * H, dtype), np.empty(3 * H, dtype)
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("gru_seq_bwd", dtype)(
        B, T, H, _ptr(k, _c(w_hh)), _ptr(k, _c(gates)), _ptr(k, _c(hprev)), _opt_ptr(k, dout),
        _ptr(k, _c(dhT)), _ptr(k, dgi), _ptr(k, dgh), _ptr(k, dh0), _ptr(k, dbi), _ptr(k, dbh),
        _NUM_THREADS))
    return dgi, dgh, dh0, dbi, dbh


# --------------------------------------------------------------------------
# Transformer glue (csrc/fused.inc): a Linear layer's bias gradient and the
# multi-head split/merge copy.  NumPy references first, they are the spec.
# --------------------------------------------------------------------------

def add_column_sums_reference(x, out):
    """out += the sum over rows of x, in place: x (..., m), out (m,)
    (a Linear bias gradient, db += sum_rows dy)."""
    out += x.reshape(-1, out.shape[0]).sum(axis=0)


def add_column_sums(x, out):
    """C kernel of :func:`add_column_sums_reference` (each column summed in row order)."""
    kernel = "add_column_sums"
    dtype = _check_float("x/out", kernel, ("x", x), ("out", out))
    if out.ndim != 1 or x.ndim < 1 or x.shape[-1] != out.shape[0]:
        raise ValueError("%s: x (..., m) and out (m,) expected, got %s and %s"
                         % (kernel, x.shape, out.shape))
    if not out.flags.writeable:
        raise ValueError("%s: out must be writable" % kernel)
    m = out.shape[0]
    _check_dims(kernel, rows=x.size // max(m, 1), m=m)
    strided = not (out.flags.c_contiguous and out.flags.aligned)
    if _BACKEND == "numpy" or x.size == 0 or strided:       # (the spec works on any strides)
        add_column_sums_reference(x, out)
        return out
    x = _c(x)
    k = _kind(dtype)
    _raise_status(kernel, _fused_fn("add_column_sums", dtype)(
        x.size // m, m, _ptr(k, x), _ptr(k, out), _NUM_THREADS))
    return out


def swap_axes12_reference(x, out=None):
    """x (A, B, C, D) -> a C-contiguous copy of shape (A, C, B, D): axes 1 and 2 swapped
    ((B, T, H, dh) <-> (B, H, T, dh), the multi-head split and merge); with ``out``
    (A, C, B, D), written there instead and returned."""
    if out is None:
        return np.ascontiguousarray(np.swapaxes(x, 1, 2))
    out[...] = np.swapaxes(x, 1, 2)
    return out


def _rows_view_ok(x):
    """x's last axis contiguous, its other strides whole non-negative elements, aligned."""
    item = x.itemsize
    return (x.flags.aligned and (x.shape[-1] <= 1 or x.strides[-1] == item)
            and all(s >= 0 and s % item == 0 for s in x.strides[:-1]))


def swap_axes12(x, out=None):
    """C kernel of :func:`swap_axes12_reference`.  x and out may be any 4-D views whose
    last axis is contiguous (e.g. a reshape of a contiguous (B, T, H*dh) array, or
    every third (B, T, H, dh) block of a (B, T, 3, H, dh) one): nothing is copied first."""
    kernel = "swap_axes12"
    dtype = _check_float("x", kernel, ("x", x))
    if x.ndim != 4:
        raise ValueError("%s: x must be 4-D (A, B, C, D), got shape %s" % (kernel, x.shape))
    A, B, C, D = x.shape
    _check_dims(kernel, A=A, B=B, C=C, D=D)
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != (A, C, B, D) or out.dtype != dtype:
            raise ValueError("%s: out must be a %s array of shape %s, got %s"
                             % (kernel, dtype, (A, C, B, D),
                                getattr(out, "shape", type(out).__name__)))
        if not out.flags.writeable or np.may_share_memory(out, x):
            raise ValueError("%s: out must be writable and must not overlap x" % kernel)
    if (_BACKEND == "numpy" or x.size == 0
            or (out is not None and not _rows_view_ok(out))):
        return swap_axes12_reference(x, out)
    if not _rows_view_ok(x):
        x = _c(x)                                  # the kernel reads rows of D elements
    if out is None:
        out = np.empty((A, C, B, D), dtype)
    k, item = _kind(dtype), x.itemsize
    sa, sb, sc = (s // item for s in x.strides[:3])
    da, dc, db = (s // item for s in out.strides[:3])
    # strided views: ffi.from_buffer wants a contiguous buffer, so pass the addresses
    _raise_status(kernel, _fused_fn("swap_axes12", dtype)(
        A, B, C, D, sa, sb, sc, _ffi.cast(k, x.ctypes.data), da, dc, db,
        _ffi.cast(k, out.ctypes.data), _NUM_THREADS))
    return out


# --------------------------------------------------------------------------
# The optimizer over all the parameters in one call per step (csrc/fused.inc):
# the gradient norm, its clipping and the Adam/AdamW update, each over a list
# of buffers (PyTorch's "foreach" optimizers).  One C call instead of one
# NumPy call (or several) per parameter array.
# --------------------------------------------------------------------------

def sum_of_squares_reference(arrays):
    """sum over the arrays of sum(x^2), accumulated in float64 -> a Python float."""
    return sum(float(np.sum(np.square(x, dtype=np.float64))) for x in arrays)


def scale_arrays_reference(arrays, scale):
    """x *= scale for every array, in place."""
    for x in arrays:
        x *= scale


def adam_update_multi_reference(params, grads, ms, vs, step, lr=1e-3, betas=(0.9, 0.999),
                                eps=1e-8, weight_decay=0.0, decoupled=True, grad_scale=1.0):
    """:func:`adam_update_reference` on each (p, g, m, v), same hyper-parameters."""
    for p, g, m, v in zip(params, grads, ms, vs):
        adam_update_reference(p, g, m, v, step, lr, betas, eps, weight_decay, decoupled,
                              grad_scale)


def _buffers(arrays, writable):
    """(dtype, sizes, pointers) for a list of buffers the C kernels can take as they are
    (one float dtype, C-contiguous, aligned, writable if asked), else None."""
    if not arrays:
        return None
    dtype = arrays[0].dtype if isinstance(arrays[0], np.ndarray) else None
    if dtype not in _FLOATS:
        return None
    for x in arrays:
        if (not isinstance(x, np.ndarray) or x.dtype != dtype or not x.flags.c_contiguous
                or not x.flags.aligned or (writable and not x.flags.writeable)):
            return None
    k = _kind(dtype)
    return dtype, [x.size for x in arrays], _ffi.new(k.replace("*", "*[]"),
                                                     [_ptr(k, x) for x in arrays])


def sum_of_squares(arrays):
    """C kernel of :func:`sum_of_squares_reference` (arrays of one float dtype)."""
    arrays = list(arrays)
    if _BACKEND == "numpy":
        return sum_of_squares_reference(arrays)
    bufs = _buffers(arrays, writable=False)
    if bufs is None:                              # mixed dtypes, strided views, ...
        return sum_of_squares_reference(arrays)
    dtype, sizes, ptrs = bufs
    out = _ffi.new("double *")
    _raise_status("sum_of_squares", _fused_fn("sum_squares_multi", dtype)(
        len(arrays), _ffi.new("int64_t[]", sizes), ptrs, out))
    return float(out[0])


def scale_arrays(arrays, scale):
    """C kernel of :func:`scale_arrays_reference`."""
    arrays = list(arrays)
    bufs = None if _BACKEND == "numpy" else _buffers(arrays, writable=True)
    if bufs is None:
        scale_arrays_reference(arrays, scale)
        return
    dtype, sizes, ptrs = bufs
    _raise_status("scale_arrays", _fused_fn("scale_multi", dtype)(
        len(arrays), _ffi.new("int64_t[]", sizes), ptrs, float(scale)))


def adam_update_multi(params, grads, ms, vs, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                      weight_decay=0.0, decoupled=True, grad_scale=1.0):
    """:func:`adam_update` on each (p, g, m, v) (same hyper-parameters), in one C call
    when every buffer is a C-contiguous array of one dtype (else one call each)."""
    kernel = "adam_update_multi"
    params, grads, ms, vs = list(params), list(grads), list(ms), list(vs)
    if not len(params) == len(grads) == len(ms) == len(vs):
        raise ValueError("%s: %d params, %d grads, %d m and %d v buffers; expected as many of "
                         "each" % (kernel, len(params), len(grads), len(ms), len(vs)))
    if int(step) < 1:
        raise ValueError("%s: step must be >= 1, got %r" % (kernel, step))
    bufs = None
    if _BACKEND == "c" and all(p.shape == g.shape == m.shape == v.shape
                               for p, g, m, v in zip(params, grads, ms, vs)):
        bufs = [_buffers(params, True), _buffers(grads, False), _buffers(ms, True),
                _buffers(vs, True)]
    if bufs is None or any(b is None for b in bufs) or len({b[0] for b in bufs}) > 1:
        for p, g, m, v in zip(params, grads, ms, vs):        # checks each, any layout
            adam_update(p, g, m, v, step, lr, betas, eps, weight_decay, decoupled, grad_scale)
        return
    dtype, sizes = bufs[0][0], bufs[0][1]
    _raise_status(kernel, _fused_fn("adam_multi", dtype)(
        len(params), _ffi.new("int64_t[]", sizes), bufs[0][2], bufs[1][2], bufs[2][2],
        bufs[3][2], float(lr), float(betas[0]), float(betas[1]), float(eps),
        float(weight_decay), int(bool(decoupled)), float(grad_scale), int(step), _NUM_THREADS))


# --------------------------------------------------------------------------
# Generation with a KV cache: one query row against the cache, and prepared
# calls.  While generating, each step is a few dozen kernel calls on (1, D)
# rows: microseconds of arithmetic each, so the step's time goes into Python,
# validation and cffi pointers, not into C.  A *prepared* call checks its
# arrays once, keeps the C pointers and the output buffers, and is then
# called with no arguments (or just the cache length) at each step.
# --------------------------------------------------------------------------

import functools  # noqa: E402  (this section's one import, kept with it)

# Below this many multiply-adds a product runs on 1 thread: the fork/join of an
# OpenMP region (a few microseconds) costs more than the second core saves.
_SMALL_WORK = 2**18


def attention_decode_reference(q, k, v, scale=None):
    """The spec of the attention_decode kernel: one new query per problem.

    q: (..., d)   k, v: (..., t, d)   ->   o: (..., d)
    The query is the newest position, so it sees all t keys (its own is the
    last): this is :func:`attention_reference` with tq = 1 and causal masking.
    t = 0 gives o = 0.
    """
    o, _ = attention_reference(q[..., None, :], k, v, causal=True, scale=scale)
    return o[..., 0, :]                                  # (..., d)


def _check_decode(kernel, q, k, v):
    dtype = _check_float("q/k/v", kernel, ("q", q), ("k", k), ("v", v))
    if q.ndim < 1 or k.ndim != q.ndim + 1 or k.shape != v.shape:
        raise ValueError("%s: q must be (..., d) and k, v (..., t, d) of one shape, got "
                         "%s, %s, %s" % (kernel, q.shape, k.shape, v.shape))
    if k.shape[:-2] != q.shape[:-1] or k.shape[-1] != q.shape[-1]:
        raise ValueError("%s: q %s and k %s must agree in leading dims and head size"
                         % (kernel, q.shape, k.shape))
    bh = int(np.prod(q.shape[:-1], dtype=np.int64))
    t, d = k.shape[-2:]
    _check_dims(kernel, batch_heads=bh, t=t, head_dim=d)
    return dtype, bh, t, d


def _rows_of_cache(x, bh, t, d):
    """x (..., t, d) as (bh, t, d) plus its row stride ld >= t, without a copy when x is
    the first t rows of a C-contiguous (..., ld, d) cache; else a C-contiguous copy."""
    x3 = x.reshape(bh, t, d)                  # a view whenever the leading dims allow one
    item = x.itemsize
    if (x3.flags.aligned and x3.strides[2] == item and x3.strides[1] == d * item
            and x3.strides[0] % (d * item) == 0 and x3.strides[0] >= t * d * item):
        return x3, (x3.strides[0] // (d * item) if bh > 1 else t)
    return _c(x3), t


def attention_decode(q, k, v, scale=None):
    """One new query row per problem against its keys/values: o (..., d).

    q: (..., d)   k, v: (..., t, d), e.g. ``cache[:, :, :t]`` of a preallocated
    (B, H, capacity, dh) cache (read in place, not copied).  ``scale`` defaults
    to 1/sqrt(d).  See :func:`attention_decode_reference`.
    """
    kernel = "attention_decode"
    dtype, bh, t, d = _check_decode(kernel, q, k, v)
    scale = _scale(scale, d, kernel)
    if _BACKEND == "numpy" or bh * t * d == 0:
        return attention_decode_reference(q, k, v, scale)
    q2 = _c(q.reshape(bh, d))
    k3, ldk = _rows_of_cache(k, bh, t, d)
    v3, ldv = _rows_of_cache(v, bh, t, d)
    if ldk != ldv:
        v3, ldv = _c(v3), t
        k3, ldk = _c(k3), t
    o = np.empty((bh, d), dtype)
    kind = _kind(dtype)
    # a strided view of a cache is not C-contiguous, so from_buffer refuses it: cast its
    # address (k3, v3 stay alive until the call returns)
    kp, vp = (_ptr(kind, x) if x.flags.c_contiguous else _ffi.cast(kind, x.ctypes.data)
              for x in (k3, v3))
    _raise_status(kernel, _fused_fn("attn_decode", dtype)(
        bh, t, ldk, d, scale, _ptr(kind, q2), kp, vp, _ptr(kind, o), _NUM_THREADS))
    return o.reshape(q.shape)


def _check_prepared(kernel, dtype, outs, **arrays):
    """Arrays a prepared call keeps pointers to: one float dtype, C-contiguous, aligned
    (they cannot be copied at each call); outputs writable and apart from the inputs."""
    for label, x in arrays.items():
        if not isinstance(x, np.ndarray) or x.dtype != dtype:
            raise TypeError("%s: %s must be a %s numpy array, got %s"
                            % (kernel, label, dtype, getattr(x, "dtype", type(x).__name__)))
        if not (x.flags.c_contiguous and x.flags.aligned):
            raise ValueError("%s: %s must be C-contiguous and aligned (a prepared call keeps "
                             "a pointer to it)" % (kernel, label))
    for label in outs:
        out = arrays[label]
        if not out.flags.writeable:
            raise ValueError("%s: %s must be writable" % (kernel, label))
        for other, x in arrays.items():
            if other != label and np.may_share_memory(out, x):
                raise ValueError("%s: %s overlaps %s; pass separate arrays"
                                 % (kernel, label, other))


def _checked_call(kernel, fn):
    """fn() -> C status, as a function that raises on a nonzero status."""
    def call():
        status = fn()
        if status:
            _raise_status(kernel, status)
    return call


def prepare_linear(x, weight_t, bias, out, accumulate=False):
    """A prepared  out = x @ weight_t + bias  (``accumulate``: out += ...).

    x: (n, k)   weight_t: (k, m), the layer's weight TRANSPOSED and contiguous
    (row p holds input p's weights for every output: the one-row product then
    streams it)   bias: (m,) or None   out: (n, m).
    Returns a function of no arguments that computes into ``out`` from the
    current contents of x (and of weight_t and bias).
    """
    kernel = "prepare_linear"
    dtype = _check_float("x", kernel, ("x", x))
    named = dict(x=x, weight_t=weight_t, out=out)
    if bias is not None:
        named["bias"] = bias
    _check_prepared(kernel, dtype, ("out",), **named)
    if x.ndim != 2 or weight_t.ndim != 2 or x.shape[1] != weight_t.shape[0]:
        raise ValueError("%s: x %s and weight_t %s must be (n, k) and (k, m)"
                         % (kernel, x.shape, weight_t.shape))
    (n, k), m = x.shape, weight_t.shape[1]
    if out.shape != (n, m) or (bias is not None and bias.shape != (m,)):
        raise ValueError("%s: out %s must be %s and bias %s must be (%d,)"
                         % (kernel, out.shape, (n, m), getattr(bias, "shape", None), m))
    _check_dims(kernel, n=n, m=m, k=k)
    if _BACKEND == "numpy" or n * m * k == 0:
        def call():
            matmul_reference(x, weight_t, out=out, accumulate=accumulate, bias=bias)
        return call
    kind = _kind(dtype)
    threads = 1 if n * m * k < _SMALL_WORK else _NUM_THREADS
    return _checked_call(kernel, functools.partial(
        _fused_fn("matmul", dtype), 0, 0, n, m, k, _ptr(kind, x), _ptr(kind, weight_t),
        _ffi.NULL if bias is None else _ptr(kind, bias), _ptr(kind, out),
        int(bool(accumulate)), threads))


def prepare_layernorm(x, weight, bias, out, eps=1e-5):
    """A prepared LayerNorm over the last axis: out = layernorm(x) * weight + bias.

    x, out: (n, D)   weight, bias: (D,).  Returns a function of no arguments.
    """
    kernel = "prepare_layernorm"
    dtype = _check_float("x", kernel, ("x", x))
    _check_prepared(kernel, dtype, ("out",), x=x, weight=weight, bias=bias, out=out)
    if x.ndim != 2 or out.shape != x.shape or weight.shape != x.shape[1:] \
            or bias.shape != x.shape[1:]:
        raise ValueError("%s: x %s, out %s must be (n, D) and weight %s, bias %s (D,)"
                         % (kernel, x.shape, out.shape, weight.shape, bias.shape))
    if not eps > 0:
        raise ValueError("%s: eps must be > 0, got %r" % (kernel, eps))
    n, D = x.shape
    _check_dims(kernel, rows=n, D=D)
    if _BACKEND == "numpy" or x.size == 0:
        def call():
            out[...] = layernorm_forward_reference(x, weight, bias, eps)[0]
        return call
    kind = _kind(dtype)
    xhat, rstd = np.empty_like(x), np.empty((n, 1), dtype)   # scratch, not read
    return _checked_call(kernel, functools.partial(
        _fused_fn("layernorm_fwd", dtype), n, D, eps, _ptr(kind, x), _ptr(kind, weight),
        _ptr(kind, bias), _ptr(kind, out), _ptr(kind, xhat), _ptr(kind, rstd), 1))


def prepare_gelu(x, out, approximate="tanh"):
    """A prepared out = gelu(x) (see :func:`gelu_forward_reference`); x, out: same shape."""
    kernel = "prepare_gelu"
    tanh_form = _gelu_form(kernel, approximate)
    dtype = _check_float("x", kernel, ("x", x))
    _check_prepared(kernel, dtype, ("out",), x=x, out=out)
    if out.shape != x.shape:
        raise ValueError("%s: out %s must match x %s" % (kernel, out.shape, x.shape))
    if _BACKEND == "numpy" or x.size == 0:
        def call():
            out[...] = gelu_forward_reference(x, approximate)
        return call
    kind = _kind(dtype)
    return _checked_call(kernel, functools.partial(
        _fused_fn("gelu_fwd", dtype), x.size, tanh_form, _ptr(kind, x), _ptr(kind, out),
        _ffi.NULL, 1))


def prepare_attention_decode(q, k_cache, v_cache, out, scale=None):
    """A prepared :func:`attention_decode` against a preallocated KV cache.

    q, out: (bh, d)   k_cache, v_cache: (bh, capacity, d).
    Returns call(t): out = attention of q over the first t cached rows
    (0 <= t <= capacity), as attention_decode(q, k_cache[:, :t], v_cache[:, :t]).
    """
    kernel = "prepare_attention_decode"
    dtype = _check_float("q", kernel, ("q", q))
    _check_prepared(kernel, dtype, ("out",), q=q, k_cache=k_cache, v_cache=v_cache, out=out)
    if (q.ndim != 2 or out.shape != q.shape or k_cache.ndim != 3
            or k_cache.shape != v_cache.shape or k_cache.shape[::2] != q.shape):
        raise ValueError("%s: q, out must be (bh, d) and k_cache, v_cache (bh, capacity, d), "
                         "got %s, %s, %s, %s" % (kernel, q.shape, out.shape, k_cache.shape,
                                                 v_cache.shape))
    bh, cap, d = k_cache.shape
    _check_dims(kernel, batch_heads=bh, capacity=cap, head_dim=d)
    scale = _scale(scale, d, kernel)

    def check(t):
        if not 0 <= t <= cap:
            raise ValueError("%s: t = %r cached positions; the cache holds 0 .. %d"
                             % (kernel, t, cap))

    if _BACKEND == "numpy" or bh * d == 0:
        def call(t):
            check(t)
            out[...] = attention_decode_reference(q, k_cache[:, :t], v_cache[:, :t], scale)
        return call
    kind = _kind(dtype)
    fn = functools.partial(_fused_fn("attn_decode", dtype), bh)
    args = (cap, d, scale, _ptr(kind, q), _ptr(kind, k_cache), _ptr(kind, v_cache),
            _ptr(kind, out), _NUM_THREADS)

    def call(t):
        check(t)
        status = fn(t, *args)
        if status:
            _raise_status(kernel, status)
    return call
