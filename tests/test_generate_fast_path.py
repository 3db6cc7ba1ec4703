"""Generation's fast path: the attention_decode kernel, the prepared calls and GPTDecoder.

1. attention_decode (csrc/attention_decode.inc) equals its specification,
   attention_decode_reference, on random shapes (hypothesis), both dtypes,
   reading the first t rows of a larger cache in place; edge cases, NaN,
   threads, bad input.
2. The prepared calls (prepare_linear / layernorm / gelu / attention_decode)
   equal the kernels' references, and refuse arrays they cannot keep.
3. GPTDecoder equals the readable path (GPT.forward_step): logits to 1e-12 in
   float64, close in float32; generate gives the same tokens with and without
   it (greedy, sampling, beam search), on both backends.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import assert_close
from tinylm import kernels as K
from tinylm.generate import generate_ids
from tinylm.layers.checks import TokenIdError
from tinylm.models.gpt import GPT, GPTConfig

BACKENDS = K.available_backends()
needs_c = pytest.mark.skipif(not K.c_available(),
                             reason="tinylm's C extension is not built; C kernel tests skipped")


@pytest.fixture(params=BACKENDS)
def backend(request):
    with K.backend(request.param):
        yield request.param


def cache_inputs(rng, lead, t, cap, d, dtype):
    """q (lead, d) and caches (lead, cap, d) whose rows from t on are garbage."""
    q = rng.standard_normal(lead + (d,)).astype(dtype)
    k = rng.standard_normal(lead + (cap, d)).astype(dtype)
    v = rng.standard_normal(lead + (cap, d)).astype(dtype)
    k[..., t:, :] = 1e30                      # never read: would overflow the softmax
    v[..., t:, :] = np.nan
    return q, k, v


# -- 1. attention_decode against its specification -------------------------------

@needs_c
@given(lead=st.sampled_from([(1,), (3,), (2, 3), (1, 1, 5)]), t=st.integers(0, 70),
       spare=st.integers(0, 5), d=st.integers(1, 40), scale=st.sampled_from([None, 0.3]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_attention_decode_matches_reference(lead, t, spare, d, scale, dtype, seed):
    q, k, v = cache_inputs(np.random.default_rng(seed), lead, t, t + spare, d, dtype)
    ref = K.attention_decode_reference(q, k[..., :t, :], v[..., :t, :], scale)
    with K.backend("c"):
        got = K.attention_decode(q, k[..., :t, :], v[..., :t, :], scale)   # views, read in place
    assert got.shape == q.shape and got.dtype == q.dtype
    assert_close(got, ref, max(t, d), "o")


def test_attention_decode_reference_is_the_last_row_of_causal_attention():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 7, 5)) for _ in range(3))        # 7 positions
    o_all, _ = K.attention_reference(q, k, v, causal=True)
    np.testing.assert_allclose(K.attention_decode_reference(q[:, -1], k, v), o_all[:, -1],
                               rtol=1e-14, atol=1e-15)


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_decode_no_keys_gives_zero_and_nan_reaches_its_row(dtype):
    rng = np.random.default_rng(1)
    q, k, v = cache_inputs(rng, (3,), 4, 6, 8, dtype)
    with K.backend("c"):
        assert not K.attention_decode(q, k[:, :0], v[:, :0]).any()
        v[1, 2, 0] = np.nan                                  # a NaN value in row 1's keys
        got = K.attention_decode(q, k[:, :4], v[:, :4])
    ref = K.attention_decode_reference(q, k[:, :4], v[:, :4])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got[1, 0]) and not np.isnan(got[[0, 2]]).any()


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_decode_same_bits_with_one_and_two_threads(dtype):
    # bh * t * d = 64 * 300 * 32 is above the kernel's threshold for threads
    q, k, v = cache_inputs(np.random.default_rng(2), (64,), 300, 320, 32, dtype)
    old = K.get_num_threads()
    try:
        with K.backend("c"):
            K.set_num_threads(1)
            one = K.attention_decode(q, k[:, :300], v[:, :300])
            K.set_num_threads(2)
            two = K.attention_decode(q, k[:, :300], v[:, :300])
    finally:
        K.set_num_threads(old)
    np.testing.assert_array_equal(one, two)


def test_attention_decode_bad_input(backend):
    q = np.zeros((2, 4))
    k = np.zeros((2, 3, 4))
    with pytest.raises(TypeError, match="float32 or float64"):
        K.attention_decode(q.astype(np.int64), k, k)
    with pytest.raises(TypeError, match="one dtype"):
        K.attention_decode(q.astype(np.float32), k, k)
    with pytest.raises(ValueError, match="head size"):
        K.attention_decode(np.zeros((2, 5)), k, k)
    with pytest.raises(ValueError, match="one shape"):
        K.attention_decode(q, k, np.zeros((2, 2, 4)))


# -- 2. prepared calls ---------------------------------------------------------------

@given(n=st.integers(1, 4), k=st.integers(1, 40), m=st.integers(1, 70),
       bias=st.booleans(), accumulate=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_prepare_linear_matches_reference(n, k, m, bias, accumulate, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, k)).astype(dtype)
    w_t = rng.standard_normal((k, m)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype) if bias else None
    start = rng.standard_normal((n, m)).astype(dtype)
    expected = (start if accumulate else 0) + K.matmul_reference(x, w_t) + (0 if b is None else b)
    for name in BACKENDS:
        with K.backend(name):
            out = start.copy()
            call = K.prepare_linear(x, w_t, b, out, accumulate=accumulate)
        call()
        assert_close(out, expected, k, "prepared linear, %s backend" % name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prepared_layernorm_gelu_attention_match_references(backend, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 13)).astype(dtype)
    w, b = rng.standard_normal(13).astype(dtype), rng.standard_normal(13).astype(dtype)
    out = np.zeros_like(x)
    layernorm = K.prepare_layernorm(x, w, b, out, eps=1e-5)
    for _ in range(2):                     # the same call on new contents of x
        x[...] = rng.standard_normal(x.shape)
        layernorm()
        assert_close(out, K.layernorm_forward_reference(x, w, b, 1e-5)[0], 13, "layernorm")
    for approximate in ("tanh", "none"):
        gelu = K.prepare_gelu(x, out, approximate)
        gelu()
        assert_close(out, K.gelu_forward_reference(x, approximate), 1, "gelu " + approximate)
    q, k, v = cache_inputs(rng, (6,), 9, 11, 5, dtype)
    o = np.zeros_like(q)
    attend = K.prepare_attention_decode(q, k, v, o)
    for t in (1, 9):
        attend(t)
        assert_close(o, K.attention_decode_reference(q, k[:, :t], v[:, :t]), 9, "attention t=%d" % t)


def test_prepared_calls_refuse_what_they_cannot_keep(backend):
    x, w_t, out = np.zeros((2, 4)), np.zeros((4, 3)), np.zeros((2, 3))
    with pytest.raises(ValueError, match="C-contiguous"):
        K.prepare_linear(x, np.zeros((3, 4)).T, None, out)
    with pytest.raises(TypeError, match="float64"):
        K.prepare_linear(x, w_t.astype(np.float32), None, out)
    with pytest.raises(ValueError, match="overlaps"):
        K.prepare_gelu(x, x)
    with pytest.raises(ValueError, match=r"must be \(n, k\) and \(k, m\)"):
        K.prepare_linear(x, np.zeros((5, 3)), None, out)
    q, cache = np.zeros((2, 4)), np.zeros((2, 6, 4))
    attend = K.prepare_attention_decode(q, cache, cache.copy(), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="the cache holds 0 .. 6"):
        attend(7)


# -- 3. GPTDecoder == GPT.forward_step -----------------------------------------------

def small_gpt(dtype, activation="gelu_tanh", block_size=24, tie=False):
    m = GPT(GPTConfig(vocab_size=13, block_size=block_size, n_layer=2, n_head=3, d_model=12,
                      d_ff=20, activation=activation, tie_weights=tie, dtype=dtype, seed=4))
    return m.eval()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch, activation, tie", [(1, "gelu_tanh", False), (3, "gelu", True),
                                                   (2, "relu", False)])
def test_decoder_logits_equal_forward_step(backend, dtype, batch, activation, tie):
    model = small_gpt(dtype, activation, tie=tie)
    ids = np.random.default_rng(5).integers(0, 13, (batch, 24))
    cache = model.init_cache(batch)
    decoder = model.decoder(batch)
    expected = [model.forward_step(ids[:, :4], cache)[:, -1]]
    got = [decoder.prefill(ids[:, :4])]
    for t in range(4, 24):
        expected.append(model.forward_step(ids[:, t:t + 1], cache)[:, -1])
        got.append(decoder.step(ids[:, t]))
    tol = 1e-12 if dtype == "float64" else 2e-5
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.shape == (batch, 13)
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


def test_decoder_reorder_equals_reordering_the_cache(backend):
    model = small_gpt("float64")
    ids = np.random.default_rng(6).integers(0, 13, (3, 8))
    cache = model.init_cache(3)
    decoder = model.decoder(3)
    model.forward_step(ids[:, :7], cache)
    decoder.prefill(ids[:, :7])
    rows = np.array([2, 2, 0])
    for layer in cache["layers"]:
        layer["k"], layer["v"] = layer["k"][rows], layer["v"][rows]
    decoder.reorder(rows)
    np.testing.assert_allclose(decoder.step(ids[:, 7]),
                               model.forward_step(ids[:, 7:8], cache)[:, -1],
                               rtol=1e-12, atol=1e-12)


def test_decoder_errors_are_one_line(backend):
    model = small_gpt("float64", block_size=6)
    decoder = model.decoder(1)
    decoder.prefill(np.array([[1, 2, 3, 4, 5]]))
    with pytest.raises(TokenIdError, match=r"id 13 .* \[0, 13\)"):
        decoder.step(np.array([13]))
    with pytest.raises(ValueError, match="one per row"):
        decoder.step(np.array([1, 2]))
    decoder.step(np.array([6]))                                     # position 5: the last
    with pytest.raises(ValueError, match="block_size is 6") as err:
        decoder.step(np.array([7]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [
    dict(),                                                         # greedy
    dict(do_sample=True, num_return_sequences=3, top_k=5, top_p=0.9, seed=7),
    dict(num_beams=3, num_return_sequences=2),
    dict(no_repeat_ngram_size=2, eos_token_id=3),
])
def test_generate_gives_the_same_tokens_with_and_without_the_decoder(backend, kwargs,
                                                                     monkeypatch):
    model = small_gpt("float64", block_size=16)
    prompt = [1, 5, 2]
    fast = generate_ids(model, prompt, max_length=20, **kwargs)   # past block_size: crops
    monkeypatch.delattr(GPT, "decoder")                             # the readable path
    assert not hasattr(model, "decoder")
    slow = generate_ids(model, prompt, max_length=20, **kwargs)
    np.testing.assert_array_equal(fast, slow)


def test_generate_float32_greedy_tokens_match(backend, monkeypatch):
    model = small_gpt("float32", block_size=40)
    fast = generate_ids(model, [3, 1], max_length=40)
    monkeypatch.delattr(GPT, "decoder")
    np.testing.assert_array_equal(fast, generate_ids(model, [3, 1], max_length=40))


def test_a_subclass_that_changes_forward_step_is_stepped_by_it(monkeypatch):
    calls = []

    class Traced(GPT):
        def forward_step(self, idx, cache):
            calls.append(idx.shape[1])
            return super().forward_step(idx, cache)

    model = Traced(small_gpt("float64").config).eval()
    assert model.decoder(1) is None
    generate_ids(model, [1, 2], max_length=6)
    assert calls == [2, 1, 1, 1]                    # the prompt, then one token per step
