"""tinylm.kernels.matmul: the C kernel against its NumPy reference, and the
argument checks every backend shares.

The C kernel (csrc/matmul.c) cuts the problem into blocks - MR x NR register
tiles, MC x KC blocks of A, KC x NC blocks of B - so the shapes tested sit on
each side of every block edge.  Tests that need the C extension are skipped
(with the reason) when it is not built; the validation tests run on every
available backend.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import assert_close
from tinylm import kernels

requires_c = pytest.mark.skipif(not kernels.c_available(),
                                reason="tinylm's C extension is not built")

DTYPES = (np.float32, np.float64)
TRANSPOSES = ((False, False), (False, True), (True, False), (True, True))

# --------------------------------------------------------------------------
# The block sizes of csrc/matmul.c, for this build's vector width.
# --------------------------------------------------------------------------
_VBYTES = {"avx512f": 64, "avx2+fma": 32, "avx": 32}
MR, KC = 6, 256
MC = {np.float32: 144, np.float64: 72}
THIN_M, THIN_NN_M = 16, 16         # thin paths: m <= these (B transposed / not)
SMALL = 16**3                      # m*n*k up to this: plain loops


def _nr(dtype):
    simd = kernels.info().get("simd", "generic")
    return 2 * _VBYTES.get(simd, 16) // np.dtype(dtype).itemsize


def edge_sizes(dtype):
    """Sizes on both sides of every block edge, per dimension."""
    nr, mc, nc = _nr(dtype), MC[dtype], 256 * _nr(dtype)
    return {
        "m": [1, 2, MR - 1, MR, MR + 1, 2 * MR + 1, mc - 1, mc, mc + 1, 2 * mc + 1],
        "n": [1, 3, nr - 1, nr, nr + 1, 2 * nr + 3, nc - 1, nc, nc + 1],
        "k": [1, 2, 7, KC - 1, KC, KC + 1, 2 * KC + 1],
    }


def operands(rng, m, n, k, ta, tb, dtype):
    """a stored (m, k) or (k, m); b stored (k, n) or (n, k)."""
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


@pytest.fixture
def threads():
    """Set the kernel thread count inside a test; restored afterwards."""
    old = kernels._NUM_THREADS
    yield kernels.set_num_threads
    kernels._NUM_THREADS = old


def check_against_reference(rng, m, n, k, ta, tb, dtype, accumulate):
    a, b = operands(rng, m, n, k, ta, tb, dtype)
    out0 = rng.standard_normal((m, n)).astype(dtype)
    expected = kernels.matmul_reference(a, b, ta, tb, out0.copy(), accumulate)
    with kernels.backend("c"):
        if accumulate:
            got = out0.copy()
            ret = kernels.matmul(a, b, ta, tb, out=got, accumulate=True)
            assert ret is got
        else:
            got = kernels.matmul(a, b, ta, tb)
    assert got.dtype == np.dtype(dtype) and got.shape == (m, n)
    assert_close(got, expected, k, "m=%d n=%d k=%d trans=%s,%s acc=%s %s"
                 % (m, n, k, ta, tb, accumulate, np.dtype(dtype).name))


# --------------------------------------------------------------------------
# C kernel == reference
# --------------------------------------------------------------------------

@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("dim", ["m", "n", "k"])
def test_block_edges(dim, dtype):
    """Each dimension across every block edge, the other two moderate and
    ragged; all 4 transposes, overwrite and accumulate."""
    rng = np.random.default_rng(7)
    for size in edge_sizes(dtype)[dim]:
        shape = {"m": THIN_M + 7, "n": _nr(dtype) + 3, "k": 37}
        shape[dim] = size
        for ta, tb in TRANSPOSES:
            for acc in (False, True):
                check_against_reference(rng, shape["m"], shape["n"], shape["k"],
                                        ta, tb, dtype, acc)


@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_larger_than_one_block_everywhere(dtype, nthreads, threads):
    """Several row blocks, two k slices and ragged edges in one product, so the
    threads share packed B blocks and accumulate across k slices."""
    threads(nthreads)
    rng = np.random.default_rng(3)
    m, n, k = 2 * MC[dtype] + 5, 3 * _nr(dtype) + 1, KC + 9
    for ta, tb in TRANSPOSES:
        check_against_reference(rng, m, n, k, ta, tb, dtype, accumulate=True)


@requires_c
@given(m=st.one_of(st.integers(1, 70), st.sampled_from([143, 145, 150])),
       n=st.one_of(st.integers(1, 70), st.sampled_from([127, 129])),
       k=st.one_of(st.integers(1, 70), st.sampled_from([255, 257, 300])),
       ta=st.booleans(), tb=st.booleans(), accumulate=st.booleans(),
       dtype=st.sampled_from(DTYPES), nthreads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_random_shapes(m, n, k, ta, tb, accumulate, dtype, nthreads, seed):
    old = kernels._NUM_THREADS
    kernels.set_num_threads(nthreads)
    try:
        check_against_reference(np.random.default_rng(seed), m, n, k, ta, tb, dtype,
                                accumulate)
    finally:
        kernels._NUM_THREADS = old


@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_tiny_shapes(dtype):
    """The unpacked path for small products, and just above it."""
    rng = np.random.default_rng(8)
    for m, n, k in [(1, 1, 1), (2, 3, 4), (1, 17, 9), (16, 16, 16), (16, 16, 17), (5, 31, 30)]:
        for ta, tb in TRANSPOSES:
            for acc in (False, True):
                check_against_reference(rng, m, n, k, ta, tb, dtype, acc)


@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_thin_products(dtype, nthreads, threads):
    """Few rows (a decoding step): unpacked dot products (B transposed, m < 4),
    the transposed register tile (B transposed, m >= 4: 12, 6, 4 or 3 rows of
    B per tile as m needs 1..4 vectors) and B read in place in blocks (not
    transposed), on both sides of their row limits, with ragged n and k
    (vector tails, n not a multiple of any tile, several column chunks and a
    ragged last one)."""
    threads(nthreads)
    rng = np.random.default_rng(13)
    nr = _nr(dtype)
    for m in sorted({1, 2, 3, 4, 5, 7, 8, 9, THIN_NN_M, THIN_NN_M + 1, THIN_M - 1, THIN_M,
                     THIN_M + 1}):
        for n, k in ((4 * nr + 3, 301), (9, 2 * KC + 5), (700, 64), (1100, 300)):
            assert m * n * k > SMALL
            for ta, tb in TRANSPOSES:
                check_against_reference(rng, m, n, k, ta, tb, dtype, accumulate=(m % 2 == 0))


@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_one_row_times_transposed_b(dtype, nthreads, threads):
    """x W^T for one row (a decoding step) has its own path: rows of B in
    groups of one vector width whose sums are formed together, A copied to an
    aligned buffer.  n in whole groups, with a ragged last one and below one
    vector; k with vector tails; A and B at misaligned addresses, and a NaN in one row of B
    reaching only its own column."""
    threads(nthreads)
    rng = np.random.default_rng(23)
    # m*n*k above SMALL (smaller products take the plain loops); the last one
    # also above the kernel's parallel threshold, so 2 threads really split it
    for n, k in ((1, 4100), (5, 1001), (8, 700), (16, 257), (17, 301), (33, 130), (200, 64),
                 (200, 301), (1000, 1000)):
        assert n * k > SMALL
        buf_a = rng.standard_normal(k + 1).astype(dtype)
        buf_b = rng.standard_normal(n * k + 3).astype(dtype)
        a = buf_a[1:].reshape(1, k)                       # one element off alignment
        b = buf_b[3:].reshape(n, k)
        for acc in (False, True):
            out = rng.standard_normal((1, n)).astype(dtype)
            expected = out + a @ b.T if acc else a @ b.T
            with kernels.backend("c"):
                got = kernels.matmul(a, b, trans_b=True, out=out, accumulate=acc)
            assert_close(got, expected, k, "n=%d k=%d accumulate=%s" % (n, k, acc))
        b = b.copy()
        b[n // 2, k // 2] = np.nan
        with kernels.backend("c"):
            c = kernels.matmul(a, b, trans_b=True)
        assert np.isnan(c[0, n // 2]) and np.isfinite(np.delete(c[0], n // 2)).all()


@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_thin_products_overwrite_never_reads_out(dtype):
    """accumulate=False stores the product without reading C: NaN already in
    `out` does not leak into the result on the thin paths."""
    rng = np.random.default_rng(17)
    for m in (1, 3, 4, 6, 16):
        for tb in (False, True):
            a, b = operands(rng, m, 300, 290, False, tb, dtype)
            out = np.full((m, 300), np.nan, dtype)
            with kernels.backend("c"):
                kernels.matmul(a, b, trans_b=tb, out=out)
            assert_close(out, kernels.matmul_reference(a, b, False, tb), 290,
                         "m=%d trans_b=%s" % (m, tb))


@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("m", [1, 3, 4, 9, 16])
def test_thin_transposed_b_propagates_nan_and_inf(dtype, m):
    """x @ W^T on the thin paths: a NaN in a row of A makes that row of C NaN,
    0 * NaN in a row of B (a column of C) stays NaN, inf reaches its column."""
    rng = np.random.default_rng(19)
    n, k = 29, 70
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype)
    a[m // 2, 5] = np.nan
    a[:, k - 2] = 0
    b[n // 2, k - 2] = np.nan
    b[n - 1, k - 1] = np.inf
    with kernels.backend("c"):
        c = kernels.matmul(a, b, trans_b=True)
    expected = kernels.matmul_reference(a, b, False, True)
    assert np.array_equal(np.isnan(c), np.isnan(expected))
    assert np.isnan(c[m // 2]).all() and np.isnan(c[:, n // 2]).all()
    assert np.array_equal(np.isinf(c), np.isinf(expected))
    finite = np.isfinite(expected)
    assert_close(np.where(finite, c, 0), np.where(finite, expected, 0), k, "m=%d" % m)


@requires_c
def test_small_m_splits_columns_between_threads(threads):
    """Few rows, many columns: with 2 threads the thin paths share out the
    columns, and so does the blocked path when m fits in one row block
    (m <= MC, a weight gradient's shape), each thread packing and multiplying
    its own B panels over several k slices.  Equal to the reference, and to
    one thread bit for bit."""
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        nr = _nr(dtype)
        for m, n, k in [(1, 700, 150), (3, 700, 150), (7, 700, 150),
                        (THIN_M + 1, 4 * nr + 5, 2 * KC + 3),
                        (MC[dtype] // 2 + 1, 2 * nr, KC + 1),
                        (MC[dtype], 5 * nr + 1, 3 * KC)]:
            for ta, tb in TRANSPOSES:
                threads(2)
                check_against_reference(rng, m, n, k, ta, tb, dtype, True)
                a, b = operands(rng, m, n, k, ta, tb, dtype)
                with kernels.backend("c"):
                    two = kernels.matmul(a, b, ta, tb)
                    threads(1)
                    one = kernels.matmul(a, b, ta, tb)
                assert np.array_equal(one, two), (m, n, k, ta, tb, dtype)


@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_vs_two_threads_agree(dtype, threads):
    rng = np.random.default_rng(5)
    a, b = operands(rng, 301, 203, 517, True, False, dtype)
    with kernels.backend("c"):
        threads(1)
        one = kernels.matmul(a, b, trans_a=True)
        threads(2)
        two = kernels.matmul(a, b, trans_a=True)
    assert_close(two, one, 517, "1 vs 2 threads")


@requires_c
def test_deterministic_run_to_run(threads):
    threads(2)
    rng = np.random.default_rng(9)
    a, b = operands(rng, 290, 333, 600, False, True, np.float32)
    with kernels.backend("c"):
        first = kernels.matmul(a, b, trans_b=True)
        for _ in range(3):
            again = kernels.matmul(a, b, trans_b=True)
            assert np.array_equal(first.view(np.uint32), again.view(np.uint32))


@requires_c
def test_concurrent_calls_from_python_threads(threads):
    """cffi releases the GIL: several calls run at once and must not share
    scratch memory."""
    import threading
    threads(2)
    rng = np.random.default_rng(12)
    jobs = [operands(rng, 150 + 7 * i, 90 + 5 * i, 260, i % 2 == 0, i % 3 == 0, DTYPES[i % 2])
            for i in range(6)]
    expected = [kernels.matmul_reference(a, b, i % 2 == 0, i % 3 == 0)
                for i, (a, b) in enumerate(jobs)]
    got = [None] * len(jobs)

    def work(i):
        a, b = jobs[i]
        for _ in range(5):
            got[i] = kernels.matmul(a, b, i % 2 == 0, i % 3 == 0)

    with kernels.backend("c"):
        ts = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    for i, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, e, 260, "thread %d" % i)


# --------------------------------------------------------------------------
# Layouts: views are copied or passed with the transpose flag flipped
# --------------------------------------------------------------------------

def _both_backends():
    return kernels.available_backends()


@pytest.mark.parametrize("name", _both_backends())
def test_non_contiguous_views_give_the_right_result(name):
    rng = np.random.default_rng(2)
    big = rng.standard_normal((40, 50))
    views = {
        "transposed": (big[:30, :20].T.copy().T, big[:20, :35]),   # F-contiguous a
        "strided rows": (big[::2, :20], big[:20, ::2]),
        "strided cols": (big[:7, ::3], big[1:18:1, 5:40:3]),
        "reversed": (big[::-1, :20], big[:20, ::-1][:, :9]),
    }
    with kernels.backend(name):
        for label, (a, b) in views.items():
            assert_close(kernels.matmul(a, b), a @ b, a.shape[1], label)
            assert_close(kernels.matmul(b, a, trans_a=True, trans_b=True),
                         b.T @ a.T, a.shape[1], label + " (trans)")


@pytest.mark.parametrize("name", _both_backends())
@pytest.mark.parametrize("shape", [(0, 5, 4), (4, 0, 5), (4, 5, 0), (0, 0, 0)])
def test_zero_size_dimensions(name, shape):
    m, n, k = shape
    a, b = np.ones((m, k)), np.ones((k, n))
    with kernels.backend(name):
        c = kernels.matmul(a, b)
        assert c.shape == (m, n) and c.dtype == np.float64
        assert np.all(c == 0)
        out = np.full((m, n), 3.0)
        kernels.matmul(a, b, out=out, accumulate=True)      # adds an empty sum
        assert np.all(out == 3.0)
        kernels.matmul(a, b, out=out)                       # overwrites with zeros
        assert np.all(out == 0)


# --------------------------------------------------------------------------
# NaN and inf propagate; "overwrite" never reads the old output
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", _both_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(5, 4, 6), (20, 37, 300)], ids=["small", "blocked"])
def test_nan_and_inf_propagate(name, dtype, shape):
    m, n, k = shape
    rng = np.random.default_rng(4)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    r, c_nan, c_inf = m // 2, n // 2, n - 1
    a[r, k // 3] = np.nan               # row r of C is all NaN
    a[:, k - 2] = 0
    b[k - 2, c_nan] = np.nan            # 0 * NaN = NaN: column c_nan all NaN
    b[k - 1, c_inf] = np.inf            # inf in column c_inf (A's last column != 0)
    with kernels.backend(name):
        c = kernels.matmul(a, b)
    expected = kernels.matmul_reference(a, b)
    assert np.array_equal(np.isnan(c), np.isnan(expected))
    assert np.isnan(c[r]).all() and np.isnan(c[:, c_nan]).all()
    assert np.array_equal(np.isposinf(c), np.isposinf(expected))
    assert np.array_equal(np.isneginf(c), np.isneginf(expected))
    assert np.isinf(c[np.arange(m) != r, c_inf]).all()
    finite = np.isfinite(expected)
    assert_close(c[finite], expected[finite], k)


@pytest.mark.parametrize("name", _both_backends())
def test_overwrite_ignores_nan_already_in_out(name):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((50, 70)), rng.standard_normal((70, 33))
    out = np.full((50, 33), np.nan)
    with kernels.backend(name):
        kernels.matmul(a, b, out=out)
    assert np.isfinite(out).all()
    assert_close(out, a @ b, 70)


# --------------------------------------------------------------------------
# bias: C (+)= op(A) op(B) + bias, the bias added last, on every path
# --------------------------------------------------------------------------

# (m, n, k) on each path: tiny (plain loops), thin with B not transposed, thin
# with B transposed (dot products, then the transposed tile), blocked with a
# ragged last panel and several k slices, blocked with m <= MC (columns split)
_BIAS_SHAPES = [(3, 5, 4), (7, 300, 64), (2, 300, 64), (9, 300, 64),
                (2 * MR + 1, 3 * 32 + 5, 2 * KC + 7), (MC[np.float32] // 2, 200, KC + 3)]


@requires_c
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_bias_is_added_last_on_every_path(dtype, nthreads, threads):
    """matmul(..., bias=b) equals, bit for bit, the product without the bias
    plus b added afterwards (the spec's order: product, then out, then bias),
    for all four transposes, overwrite and accumulate."""
    threads(nthreads)
    rng = np.random.default_rng(21)
    for m, n, k in _BIAS_SHAPES:
        for ta, tb in TRANSPOSES:
            a, b = operands(rng, m, n, k, ta, tb, dtype)
            bias = rng.standard_normal(n).astype(dtype)
            out0 = rng.standard_normal((m, n)).astype(dtype)
            with kernels.backend("c"):
                for acc in (False, True):
                    plain = kernels.matmul(a, b, ta, tb, out=out0.copy(), accumulate=acc)
                    got = kernels.matmul(a, b, ta, tb, out=out0.copy(), accumulate=acc,
                                         bias=bias)
                    assert np.array_equal(got, plain + bias), (m, n, k, ta, tb, acc)
            expected = kernels.matmul_reference(a, b, ta, tb, out0.copy(), True, bias)
            assert_close(got, expected, k, "bias m=%d n=%d k=%d" % (m, n, k))


@pytest.mark.parametrize("name", _both_backends())
def test_bias_nan_propagates_and_empty_k_gives_the_bias(name):
    rng = np.random.default_rng(22)
    a, b = rng.standard_normal((40, 30)), rng.standard_normal((30, 70))
    bias = rng.standard_normal(70)
    bias[5] = np.nan
    with kernels.backend(name):
        c = kernels.matmul(a, b, bias=bias)
        empty = kernels.matmul(np.ones((4, 0)), np.ones((0, 70)), bias=bias)
    assert np.isnan(c[:, 5]).all() and np.isfinite(np.delete(c, 5, axis=1)).all()
    assert_close(np.delete(c, 5, axis=1), np.delete(a @ b + bias, 5, axis=1), 30)
    assert np.array_equal(empty, np.broadcast_to(bias, (4, 70)), equal_nan=True)


@pytest.mark.parametrize("name", _both_backends())
def test_bad_bias_is_a_clear_error(name):
    a, b = np.ones((3, 4)), np.ones((4, 2))
    out = np.zeros((3, 2))
    with kernels.backend(name):
        with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
            kernels.matmul(a, b, bias=np.ones(3))
        with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
            kernels.matmul(a, b, bias=np.ones((1, 2)))
        with pytest.raises(TypeError, match="share one dtype"):
            kernels.matmul(a, b, bias=np.ones(2, np.float32))
        with pytest.raises(TypeError, match="numpy array"):
            kernels.matmul(a, b, bias=[1.0, 2.0])
        with pytest.raises(ValueError, match="overlaps an input"):
            kernels.matmul(a, b, out=out, bias=out[0])


# --------------------------------------------------------------------------
# Bad input: a clear exception, whatever the backend
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", _both_backends())
def test_bad_input_is_a_clear_error(name):
    f32 = np.ones((3, 4), np.float32)
    f64 = np.ones((4, 2))
    with kernels.backend(name):
        with pytest.raises(TypeError, match="dtype int64"):
            kernels.matmul(np.ones((3, 4), np.int64), np.ones((4, 2), np.int64))
        with pytest.raises(TypeError, match="float16"):
            kernels.matmul(np.ones((3, 4), np.float16), np.ones((4, 2), np.float16))
        with pytest.raises(TypeError, match="share one dtype"):
            kernels.matmul(f32, f64)
        with pytest.raises(TypeError, match="numpy array"):
            kernels.matmul([[1.0, 2.0]], f64)
        with pytest.raises(ValueError, match="inner dimensions differ"):
            kernels.matmul(np.ones((3, 5)), f64)
        with pytest.raises(ValueError, match="inner dimensions differ"):
            kernels.matmul(np.ones((3, 4)), f64, trans_b=True)
        with pytest.raises(ValueError, match="2-D"):
            kernels.matmul(np.ones(4), f64)
        with pytest.raises(ValueError, match="2-D"):
            kernels.matmul(np.ones((2, 3, 4)), f64)
        with pytest.raises(ValueError, match="accumulate=True needs out"):
            kernels.matmul(np.ones((3, 4)), f64, accumulate=True)


@pytest.mark.parametrize("name", _both_backends())
def test_bad_out_is_a_clear_error(name):
    a, b = np.ones((3, 4)), np.ones((4, 2))
    with kernels.backend(name):
        with pytest.raises(ValueError, match="out has shape"):
            kernels.matmul(a, b, out=np.zeros((2, 3)))
        with pytest.raises(ValueError, match="out has shape"):
            kernels.matmul(a, b, out=np.zeros((3, 2), np.float32))
        with pytest.raises(ValueError, match="C-contiguous"):
            kernels.matmul(a, b, out=np.zeros((2, 3)).T)
        ro = np.zeros((3, 2))
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="writable"):
            kernels.matmul(a, b, out=ro)
        # out aliasing an input, also through a view of the same buffer
        sq = np.ones((3, 3))
        with pytest.raises(ValueError, match="overlaps an input"):
            kernels.matmul(sq, np.ones((3, 3)), out=sq)
        buf = np.ones((3, 6))
        out = buf.reshape(-1)[:9].reshape(3, 3)     # C-contiguous, inside buf
        with pytest.raises(ValueError, match="overlaps an input"):
            kernels.matmul(np.ones((3, 3)), buf[:, :3], out=out)
        assert np.all(ro == 0)


def test_dimension_too_large_for_c_int():
    """2**31 rows, without allocating them: a zero-stride view."""
    a = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(2**31, 1), strides=(0, 0))
    with pytest.raises(ValueError, match="too large"):
        kernels.matmul(a, np.ones((1, 1)))


# --------------------------------------------------------------------------
# Spin-waiting: tinylm's OpenMP threads go to sleep soon after a kernel
# --------------------------------------------------------------------------

_IDLE_SPIN = r"""
import os, sys, time
import numpy as np
from tinylm import kernels
assert os.environ.get("GOMP_SPINCOUNT", "") == sys.argv[1], "tinylm leaked GOMP_SPINCOUNT"
assert kernels.get_backend() == "c", kernels.info()["backend_reason"]
a = np.ones((300, 300), np.float32)
kernels.set_num_threads(2)
burnt = []
for _ in range(5):
    kernels.matmul(a, a)
    c0 = time.process_time()
    time.sleep(0.05)                 # the caller sleeps: who still uses the CPU?
    burnt.append(time.process_time() - c0)
print(sorted(burnt)[2] * 1e3)
"""


@requires_c
@pytest.mark.skipif(not kernels.info().get("openmp", False), reason="serial build")
def test_openmp_threads_do_not_keep_spinning_after_a_kernel():
    """libgomp's default spins 300000 times after each parallel region (~3.5 ms
    of CPU on one machine, 12 ms on a VM where a spin costs more), which starves
    numpy's BLAS threads on a small machine.  tinylm lowers it when it loads
    the extension (see tinylm/kernels.py) and leaves no trace in os.environ.
    Measured: CPU time the process burns while its only Python thread sleeps,
    with tinylm's setting and with libgomp's default (set by hand, as a user
    may: tinylm then leaves it alone).  What one spin costs differs between
    machines, so the bound is relative: at most a quarter of the default's."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "GOMP_", "TINYLM_"))}
    env["OPENBLAS_NUM_THREADS"] = "1"    # numpy's own threads stay out of it
    # the folder holding the tinylm this test imported (a checkout, or site-packages)
    root = os.path.dirname(os.path.dirname(os.path.abspath(kernels.__file__)))

    def idle_ms(spincount):
        run_env = dict(env, GOMP_SPINCOUNT=spincount) if spincount else env
        r = subprocess.run([sys.executable, "-c", _IDLE_SPIN, spincount], env=run_env,
                           cwd=root, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return float(r.stdout.strip().splitlines()[-1])

    ours, libgomp_default = idle_ms(""), idle_ms("300000")
    assert ours < 0.25 * libgomp_default and ours < 5.0, (
        "OpenMP threads burnt %.2f ms of CPU while idle (libgomp's default: %.2f ms)"
        % (ours, libgomp_default))
