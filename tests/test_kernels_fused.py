"""The fused kernels (csrc/fused.inc) against their NumPy specifications.

1. Each backward specification is the gradient of its forward (float64
   central differences, random upstream gradient, relative error with a floor).
2. The C kernels equal the specifications: random odd shapes (hypothesis),
   non-contiguous inputs, float32 and float64.
3. The NumPy backend runs the specification; bad input is refused in one line.
4. The optimizer over a list of buffers (sum of squares, scaling, Adam/AdamW).
5. Transformer glue (a Linear bias gradient, the multi-head split/merge copy).
"""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import GRAD_RTOL, assert_close
from tinylm import kernels as K
from tinylm.gradcheck import numerical_gradient, relative_error

needs_c = pytest.mark.skipif(not K.c_available(),
                             reason="tinylm's C extension is not built; C kernel tests skipped")
DTYPES = st.sampled_from([np.float32, np.float64])


def arr(rng, shape, dtype, scale=1.0, strided=False):
    """Standard normal * scale; with strided, a non-contiguous view of that shape."""
    if strided:
        big = rng.standard_normal(tuple(shape[:-1]) + (2 * shape[-1] + 1,)) * scale
        return big[..., 1::2].astype(dtype, copy=False) if dtype == np.float64 else \
            big.astype(dtype)[..., 1::2]
    return (rng.standard_normal(shape) * scale).astype(dtype)


def grad_ok(analytic, f, x):
    numeric = numerical_gradient(f, x, eps=1e-5)
    err = relative_error(analytic, numeric)
    assert err.max() < GRAD_RTOL, err.max()
    assert np.abs(numeric).max() > 1e-3          # the check is not vacuous


# --------------------------------------------------------------------------
# 1. The specifications are gradients
# --------------------------------------------------------------------------

def test_layernorm_reference_backward_is_the_gradient():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    g = rng.standard_normal((3, 5))
    loss = lambda x_, w_, b_: math.fsum((g * K.layernorm_forward_reference(x_, w_, b_)[0]).ravel())
    _, xhat, rstd = K.layernorm_forward_reference(x, w, b)
    dx, dw, db = K.layernorm_backward_reference(g, xhat, rstd, w)
    grad_ok(dx, lambda t: loss(t, w, b), x)
    grad_ok(dw, lambda t: loss(x, t, b), w)
    grad_ok(db, lambda t: loss(x, w, t), b)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_reference_backward_is_the_gradient(approximate):
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((4, 6)) * 2, rng.standard_normal((4, 6))
    f = lambda t: math.fsum((g * K.gelu_forward_reference(t, approximate)).ravel())
    grad_ok(K.gelu_backward_reference(g, x, approximate), f, x)


def test_softmax_cross_entropy_reference_backward_is_the_gradient():
    rng = np.random.default_rng(2)
    z, t = rng.standard_normal((2, 3, 7)), rng.integers(0, 7, (2, 3))
    t[0, 1] = -100                                           # ignored
    loss, p, count = K.softmax_cross_entropy_reference(z, t)
    assert count == 5
    f = lambda z_: 1.7 * float(K.softmax_cross_entropy_reference(z_, t)[0])
    grad_ok(K.softmax_cross_entropy_backward_reference(p, t, count, 1.7), f, z)


# --------------------------------------------------------------------------
# 2. The C kernels compute the specifications
# --------------------------------------------------------------------------

@needs_c
@given(rows=st.integers(0, 70), D=st.integers(1, 200), dtype=DTYPES, affine=st.booleans(),
       strided=st.booleans(), seed=st.integers(0, 2**31))
def test_layernorm_c_matches_reference(rows, D, dtype, affine, strided, seed):
    rng = np.random.default_rng(seed)
    x = arr(rng, (rows, D), dtype, 3.0, strided) + dtype(1.5)
    w = arr(rng, (D,), dtype) if affine else None
    b = arr(rng, (D,), dtype) if affine else None
    dy = arr(rng, (rows, D), dtype, strided=strided)
    ref = K.layernorm_forward_reference(x, w, b, 1e-5)
    with K.backend("c"):
        got = K.layernorm_forward(x, w, b, 1e-5)
        gb = K.layernorm_backward(dy, ref[1], ref[2], w)
    rb = K.layernorm_backward_reference(dy, ref[1], ref[2], w)
    for a, e in zip(got, ref):
        assert a.dtype == dtype and a.shape == e.shape
        assert_close(a, e, D, "layernorm forward")
    for a, e, k in zip(gb, rb, (D, rows, rows)):
        if e is None:
            assert a is None
        else:
            assert a.dtype == dtype
            assert_close(a, e, max(k, D), "layernorm backward")


@needs_c
@given(n=st.integers(0, 300), dtype=DTYPES, approximate=st.sampled_from(["tanh", "none"]),
       scale=st.sampled_from([0.5, 3.0, 12.0]), strided=st.booleans(), seed=st.integers(0, 2**31))
def test_gelu_c_matches_reference(n, dtype, approximate, scale, strided, seed):
    rng = np.random.default_rng(seed)
    x = arr(rng, (3, n), dtype, scale, strided)
    dy = arr(rng, (3, n), dtype, strided=strided)
    with K.backend("c"):
        y = K.gelu_forward(x, approximate)
        y2, aux = K.gelu_forward(x, approximate, return_aux=True)
        dx = K.gelu_backward(dy, x, approximate)
    assert y.dtype == dx.dtype == aux.dtype == dtype
    np.testing.assert_array_equal(y, y2)
    ref_y, ref_aux = K.gelu_forward_reference(x, approximate, return_aux=True)
    assert_close(y, ref_y, 4, "gelu forward")
    assert_close(aux, ref_aux, 4, "gelu aux (tanh(u) or Phi(x))")
    assert_close(dx, K.gelu_backward_reference(dy, x, approximate), 16, "gelu backward")


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_erf_c_is_accurate(dtype):
    """The float32 kernel's vectorised erf is accurate to float precision:
    Phi(x) = y / x within a few ulp of 1 of math.erf's (|x| > 0.1)."""
    x = np.linspace(-9, 9, 200001).astype(dtype)
    with K.backend("c"):
        y = K.gelu_forward(x, "none")
    exact = 0.5 * x.astype(np.float64) * (1 + np.array([math.erf(t / math.sqrt(2)) for t in
                                                         x.astype(np.float64)]))
    big = np.abs(x) > 0.1
    err = np.abs(y[big] - exact[big]) / np.abs(x[big])      # absolute error of Phi
    assert err.max() < 4 * np.finfo(dtype).eps, err.max()


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_c_special_values(dtype):
    """NaN, infinities, signed zeros and huge values: as the specification
    (which gives NaN for -inf: -inf * 0), with no overflow in between."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 40, -40, 1e-30], dtype)
    for approximate in ("tanh", "none"):
        with K.backend("c"), np.errstate(all="ignore"):
            y = K.gelu_forward(x, approximate)
            dx = K.gelu_backward(np.ones_like(x), x, approximate)
            ref_y = K.gelu_forward_reference(x, approximate)
            ref_dx = K.gelu_backward_reference(np.ones_like(x), x, approximate)
        np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=0)
        np.testing.assert_allclose(dx[3:], ref_dx[3:], rtol=1e-6, atol=1e-30)
        assert y[1] == np.inf and y[6] == 0 and y[7] == 40 and y[8] == 0


@needs_c
@given(rows=st.integers(0, 40), V=st.integers(1, 300), dtype=DTYPES, strided=st.booleans(),
       dout=st.floats(-3, 3), seed=st.integers(0, 2**31))
def test_softmax_cross_entropy_c_matches_reference(rows, V, dtype, strided, dout, seed):
    rng = np.random.default_rng(seed)
    z = arr(rng, (rows, V), dtype, 4.0, strided)
    t = rng.integers(0, V, rows)
    t[rng.random(rows) < 0.2] = -100
    ref = K.softmax_cross_entropy_reference(z, t)
    with K.backend("c"):
        loss, p, count = K.softmax_cross_entropy(z, t)
        dz = K.softmax_cross_entropy_backward(p, t, count, dout)
    assert count == ref[2] and loss.dtype == p.dtype == dz.dtype == dtype and loss.shape == ()
    assert_close(loss, ref[0], V, "loss")
    assert_close(p, ref[1], V, "p")
    assert_close(dz, K.softmax_cross_entropy_backward_reference(ref[1], t, ref[2], dout), V, "dz")


@needs_c
@given(n=st.integers(0, 5000), dtype=DTYPES, decoupled=st.booleans(),
       wd=st.sampled_from([0.0, 0.1]), grad_scale=st.sampled_from([1.0, 0.3]),
       step=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_adam_update_c_matches_reference(n, dtype, decoupled, wd, grad_scale, step, seed):
    rng = np.random.default_rng(seed)
    p, g = arr(rng, (n,), dtype), arr(rng, (n,), dtype)
    m, v = arr(rng, (n,), dtype, 0.1), np.abs(arr(rng, (n,), dtype, 0.1))
    ref = [x.copy() for x in (p, m, v)]
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd, decoupled=decoupled,
              grad_scale=grad_scale)
    K.adam_update_reference(*ref[:1], g, *ref[1:], step, **kw)
    g0 = g.copy()
    with K.backend("c"):
        K.adam_update(p, g, m, v, step, **kw)
    np.testing.assert_array_equal(g, g0)                     # the gradient is left alone
    for a, e, what in zip((p, m, v), ref, "pmv"):
        assert_close(a, e, 4, what)


@needs_c
@given(shape=st.sampled_from([(0,), (5,), (3, 7), (2, 3, 4)]), V=st.integers(1, 20),
       D=st.integers(1, 150), dtype=DTYPES, seed=st.integers(0, 2**31))
def test_embedding_backward_c_matches_reference_exactly(shape, V, D, dtype, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, shape)
    dy = arr(rng, shape + (D,), dtype)
    dw = arr(rng, (V, D), dtype)
    ref = dw.copy()
    K.embedding_backward_reference(ids, dy, ref)
    with K.backend("c"):
        K.embedding_backward(ids, dy, dw)
    np.testing.assert_array_equal(dw, ref)                   # same additions, same order


@needs_c
def test_fused_results_do_not_depend_on_threads():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((600, 192)).astype(np.float32)
    w, b = np.ones(192, np.float32), np.zeros(192, np.float32)
    out = []
    old = K.get_num_threads()
    try:
        for n in (1, 2):
            K.set_num_threads(n)
            with K.backend("c"):
                y, xhat, rstd = K.layernorm_forward(x, w, b)
                out.append((y, *K.layernorm_backward(x, xhat, rstd, w), K.gelu_forward(x, "none")))
    finally:
        K.set_num_threads(old)
    for a, b_ in zip(*out):
        np.testing.assert_array_equal(a, b_)


# --------------------------------------------------------------------------
# 3. NumPy backend and bad input
# --------------------------------------------------------------------------

def test_numpy_backend_runs_the_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 9))
    with K.backend("numpy"):
        np.testing.assert_array_equal(K.gelu_forward(x, "tanh"), K.gelu_forward_reference(x))
        y = K.layernorm_forward(x)[0]
    np.testing.assert_array_equal(y, K.layernorm_forward_reference(x)[0])


@pytest.mark.parametrize("call, error, match", [
    (lambda: K.layernorm_forward(np.zeros((2, 3), np.float32), np.ones(4, np.float32),
                                 np.ones(4, np.float32)), ValueError, "weight must have shape"),
    (lambda: K.layernorm_forward(np.zeros((2, 0))), ValueError, "non-empty last axis"),
    (lambda: K.gelu_forward(np.zeros(3), "exact"), ValueError, "approximate"),
    (lambda: K.gelu_forward(np.zeros(3, np.int32)), TypeError, "float32 or float64"),
    (lambda: K.softmax_cross_entropy(np.zeros((2, 5)), np.array([1, 5])), IndexError,
     "out of range"),
    (lambda: K.softmax_cross_entropy(np.zeros((2, 5)), np.array([1.0, 2.0])), TypeError,
     "integers"),
    (lambda: K.adam_update(*(np.zeros(3),) * 4, step=0), ValueError, "step must be >= 1"),
    (lambda: K.embedding_backward(np.array([0, 9]), np.zeros((2, 3)), np.zeros((4, 3))),
     IndexError, r"in \[0, 4\)"),
])
def test_bad_input_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------
# 4. The optimizer over a list of buffers (sum of squares, scaling, Adam/AdamW)
# --------------------------------------------------------------------------

def _buffers(rng, sizes, dtype, strided=False):
    out = []
    for n in sizes:
        if strided:
            out.append(rng.standard_normal(2 * n).astype(dtype)[::2])
        else:
            out.append(rng.standard_normal(n).astype(dtype).reshape(-1, 1) if n % 2 else
                       rng.standard_normal(n).astype(dtype))
    return out


@needs_c
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6), dtype=DTYPES,
       strided=st.booleans(), seed=st.integers(0, 2**31))
def test_sum_of_squares_and_scale_match_reference(sizes, dtype, strided, seed):
    rng = np.random.default_rng(seed)
    xs = _buffers(rng, sizes, dtype, strided)
    want = K.sum_of_squares_reference(xs)
    with K.backend("c"):
        got = K.sum_of_squares(xs)
    assert isinstance(got, float)
    assert abs(got - want) <= 1e-13 * max(want, 1.0)                 # both in float64
    ys, ref = [x.copy() for x in xs], [x.copy() for x in xs]
    with K.backend("c"):
        K.scale_arrays(ys, 0.37)
    K.scale_arrays_reference(ref, 0.37)
    for a, b in zip(ys, ref):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)                           # one rounding each


@needs_c
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=5), dtype=DTYPES,
       decoupled=st.booleans(), wd=st.sampled_from([0.0, 0.1]), scale=st.sampled_from([1.0, 0.3]),
       strided=st.booleans(), seed=st.integers(0, 2**31))
def test_adam_update_multi_matches_reference(sizes, dtype, decoupled, wd, scale, strided, seed):
    rng = np.random.default_rng(seed)
    ps = _buffers(rng, sizes, dtype, strided)
    gs = [rng.standard_normal(p.shape).astype(dtype) for p in ps]
    ms = [np.zeros_like(p) for p in ps]
    vs = [np.zeros_like(p) for p in ps]
    ref = [[x.copy() for x in xs] for xs in (ps, ms, vs)]
    for step in (1, 2, 3):
        with K.backend("c"):
            K.adam_update_multi(ps, gs, ms, vs, step, lr=1e-2, weight_decay=wd,
                                decoupled=decoupled, grad_scale=scale)
        K.adam_update_multi_reference(*ref[:1], gs, *ref[1:], step, lr=1e-2, weight_decay=wd,
                                      decoupled=decoupled, grad_scale=scale)
    for got, want in zip((ps, ms, vs), ref):
        for a, b in zip(got, want):
            assert a.dtype == dtype
            assert_close(a, b, 8, "adam multi")


def test_optimizer_kernels_refuse_bad_input_and_fall_back():
    with pytest.raises(ValueError, match="expected as many of each"):
        K.adam_update_multi([np.zeros(3)], [], [np.zeros(3)], [np.zeros(3)], 1)
    with pytest.raises(ValueError, match="step must be >= 1"):
        K.adam_update_multi([np.zeros(3)], [np.zeros(3)], [np.zeros(3)], [np.zeros(3)], 0)
    with pytest.raises(ValueError, match="g has shape"):
        K.adam_update_multi([np.zeros(3)], [np.zeros(4)], [np.zeros(3)], [np.zeros(3)], 1)
    # mixed dtypes: one call per buffer, the same numbers
    xs = [np.ones(3, np.float32), np.ones(2)]
    assert K.sum_of_squares(xs) == 5.0
    K.scale_arrays(xs, 2.0)
    assert [x.tolist() for x in xs] == [[2.0] * 3, [2.0] * 2]


# --------------------------------------------------------------------------
# 5. Transformer glue: a Linear bias gradient, the multi-head split/merge copy
# --------------------------------------------------------------------------

@needs_c
@given(rows=st.integers(0, 300), m=st.integers(1, 600), lead=st.integers(1, 3), dtype=DTYPES,
       strided=st.booleans(), seed=st.integers(0, 2**31))
def test_add_column_sums_matches_reference(rows, m, lead, dtype, strided, seed):
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((lead, rows, 2 * m)).astype(dtype)
    x = big[..., ::2] if strided else np.ascontiguousarray(big[..., :m])
    out0 = rng.standard_normal(m).astype(dtype)
    want = out0.copy()
    K.add_column_sums_reference(x, want)
    got = out0.copy()
    with K.backend("c"):
        assert K.add_column_sums(x, got) is got               # in place
    assert got.dtype == dtype
    assert_close(got, want, max(rows * lead, 1), "column sums")


@needs_c
def test_add_column_sums_same_bits_with_one_and_two_threads():
    x = np.random.default_rng(1).standard_normal((1000, 333)).astype(np.float32)
    outs = []
    for n in (1, 2):
        old = K.get_num_threads()
        K.set_num_threads(n)
        try:
            with K.backend("c"):
                outs.append(K.add_column_sums(x, np.zeros(333, np.float32)))
        finally:
            K.set_num_threads(old)
    np.testing.assert_array_equal(outs[0], outs[1])


@needs_c
@given(shape=st.tuples(st.integers(0, 4), st.integers(0, 9), st.integers(0, 7),
                       st.integers(1, 40)),
       view=st.sampled_from(["contiguous", "swapped", "sliced", "last-strided", "reshaped"]),
       dtype=DTYPES, seed=st.integers(0, 2**31))
def test_swap_axes12_matches_reference(shape, view, dtype, seed):
    rng = np.random.default_rng(seed)
    A, B, C, D = shape
    if view == "contiguous":
        x = rng.standard_normal(shape).astype(dtype)
    elif view == "swapped":                                     # a (A, C, B, D) array's view
        x = np.swapaxes(rng.standard_normal((A, C, B, D)).astype(dtype), 1, 2)
    elif view == "sliced":                                      # every other row of a bigger one
        x = rng.standard_normal((A, 2 * B, C, D + 3)).astype(dtype)[:, ::2, :, 1:D + 1]
    elif view == "last-strided":                                # the last axis not contiguous
        x = rng.standard_normal((A, B, C, 2 * D)).astype(dtype)[..., ::2]
    else:                                                       # (A, B, C*D) seen as 4-D
        x = rng.standard_normal((A, B, C * D)).astype(dtype).reshape(A, B, C, D)
    with K.backend("c"):
        got = K.swap_axes12(x)
        # into a strided out: every third (A, C, B, D) block of an (A, C, 3, B, D) array
        big = np.full((A, C, 3, B, D), 7.0, dtype)
        assert K.swap_axes12(x, out=big[:, :, 1].transpose(0, 1, 2, 3)) is not None
    want = K.swap_axes12_reference(x)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)                    # a copy: exact
    np.testing.assert_array_equal(big[:, :, 1], want)
    assert (big[:, :, [0, 2]] == 7).all()                        # nothing else written


def test_glue_kernels_refuse_bad_input():
    with pytest.raises(ValueError, match="4-D"):
        K.swap_axes12(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="dtype"):
        K.swap_axes12(np.zeros((1, 2, 3, 4), np.int32))
    with pytest.raises(ValueError, match=r"x \(\.\.\., m\) and out \(m,\)"):
        K.add_column_sums(np.zeros((3, 4)), np.zeros(5))
    with pytest.raises(ValueError, match="out must be a float64 array of shape"):
        K.swap_axes12(np.zeros((1, 2, 3, 4)), out=np.zeros((1, 2, 3, 4)))
    x = np.zeros((1, 2, 2, 4))
    with pytest.raises(ValueError, match="must not overlap"):
        K.swap_axes12(x, out=x)
    with pytest.raises(TypeError, match="share one dtype"):
        K.add_column_sums(np.zeros((3, 4), np.float32), np.zeros(4))


def test_add_column_sums_takes_a_strided_out():
    x = np.arange(12.0).reshape(3, 4)
    out = np.zeros(8)[::2]
    K.add_column_sums(x, out)
    np.testing.assert_array_equal(out, x.sum(axis=0))
