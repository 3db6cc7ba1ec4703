"""The exercises: what the grader asks a student's code to compute.

An exercise drives one task's functions on inputs chosen by the caller and
returns plain arrays.  The SAME function runs in two places:

* in the grader's own process, on the grader's tinylm (the reference), and
* in a sandboxed subprocess, on a tree where the task's functions are the
  student's (``tinylm.assignments.sandbox``),

and the grader compares the two sets of arrays (:func:`grade`).  Nothing here
contains a solution: an exercise only builds a layer, sets its parameters to
the given arrays, calls forward and backward and collects what came out.

Each exercise has

* ``make_inputs(rng, large=False) -> {name: array}`` (float64 / int64
  arrays): small for the kit's public checks, large (``large=True``) for
  grading - see "Why the graded inputs are large" below,
* ``run(inputs) -> {name: array}``,
* ``checks``: ``[(check name, weight, [output-key prefixes])]`` - the parts
  of the task that earn points,
* ``public``: whether expected outputs may be shipped in the student kit
  (False for "find the bug": the expected gradients would give away which
  backward is broken; the kit checks those with the student's own
  numerical gradient instead, see :func:`self_check`).

Why the graded inputs are large
-------------------------------
A backward pass can be faked by differentiating the forward pass numerically:
central differences need 2 forward calls per input entry.  The graded inputs
(``large=True``) make that hopeless inside the default 60 s per task, while a
real backward takes milliseconds.  Forward time measured single-threaded (one
BLAS thread, as in the sandbox) on a loaded 2-core machine; n = input and
parameter entries of the largest case::

    task          graded case                    n        1 forward   2n forwards
    linear        x (2,128,256), W (256,256)     131 k    4 ms        ~1000 s
    softmax CE    logits (1024, 512)             524 k    20 ms       ~20000 s
    layer norm    x (4,128,512), D = 512         263 k    2.8 ms      ~1400 s
    activations   x (1024, 1024)                 1.05 M   10 ms       ~21000 s
    LSTM cell     B 64, I = H = 128              157 k    2.5 ms      ~800 s
    BPTT (RNN)    B 16, T 64, I = H = 128        166 k    13 ms       ~4000 s
    attention     (8, 128, 64) causal            197 k    12 ms       ~4600 s

Even on a machine 10x faster every row stays above 60 s.  What this does
NOT stop: a student who exploits the structure (an element-wise layer has a
diagonal Jacobian, so two vectorised forward calls give every derivative;
row-independent layers can be differentiated one row at a time) - but that
student has found the structure of the derivative, which is the lesson.
"""

import sys
import traceback

import numpy as np

RTOL = 1e-7      # relative error allowed between a student's array and the reference
FLOOR = 1e-2     # ... with this floor (see tinylm.gradcheck.relative_error)


class Exercise:
    def __init__(self, name, make_inputs, run, checks, public=True, grade=None):
        self.name, self.make_inputs, self.run = name, make_inputs, run
        self.checks, self.public = checks, public
        self._grade = grade


EXERCISES = {}


def _register(name, checks, public=True, grade=None):
    def deco(fn_pair):
        make_inputs, run = fn_pair()
        EXERCISES[name] = Exercise(name, make_inputs, run, checks, public, grade)
        return fn_pair
    return deco


def run(name, inputs):
    """Run exercise ``name`` on ``inputs`` with whatever tinylm is importable."""
    return EXERCISES[name].run(dict(inputs))


def _guard(out, keys, fn):
    """out.update(fn()); if fn raises, record the error under every key in ``keys``
    (so one function that raises costs only the checks that need it)."""
    try:
        out.update(fn())
    except Exception:
        text = _exc_text()
        for k in keys:
            out[k + ".error"] = np.array(text)


def _case(inputs, prefix):
    """The inputs of one case: keys 'prefix.k' -> 'k'."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in inputs.items() if k.startswith(p)}


def _r(rng, *shape):
    return rng.standard_normal(shape)


# --------------------------------------------------------------------------
# Assignment 1: backprop by hand
# --------------------------------------------------------------------------

@_register("linear_backward", [("dx", 4, ["dx"]), ("dweight and dbias", 6, ["dweight", "dbias"])])
def _linear():
    def make_inputs(rng, large=False):
        d = {}
        shapes = ((("c0", (2, 128), (256, 256)), ("c1", (64,), (96, 128))) if large else
                  (("c0", (2, 3), (4, 5)), ("c1", (6,), (3, 3))))
        for c, lead, (i, o) in shapes:
            d.update({c + ".x": _r(rng, *lead, i), c + ".weight": _r(rng, o, i),
                      c + ".bias": _r(rng, o), c + ".dy": _r(rng, *lead, o),
                      # gradients already in the layer: backward must ADD to them
                      c + ".weight_grad0": _r(rng, o, i), c + ".bias_grad0": _r(rng, o)})
        return d

    def run(inputs):
        from tinylm.layers import Linear
        out = {}
        for c in ("c0", "c1"):
            a = _case(inputs, c)

            def case(a=a, c=c):
                o, i = a["weight"].shape
                layer = Linear(i, o, dtype=np.float64)
                layer.params["weight"][...] = a["weight"]
                layer.params["bias"][...] = a["bias"]
                layer.grads["weight"][...] = a["weight_grad0"]
                layer.grads["bias"][...] = a["bias_grad0"]
                layer.forward(a["x"])
                return {"dx." + c: layer.backward(a["dy"]),
                        "dweight." + c: layer.grads["weight"], "dbias." + c: layer.grads["bias"]}
            _guard(out, ["dx." + c, "dweight." + c, "dbias." + c], case)
        return out
    return make_inputs, run


@_register("softmax_ce_backward", [("dlogits", 1, ["dlogits"])])
def _softmax_ce():
    def make_inputs(rng, large=False):
        d = {}
        shapes = ((("c0", (16, 64), 512), ("c1", (256,), 300)) if large else
                  (("c0", (3, 4), 6), ("c1", (5,), 3)))
        for c, lead, V in shapes:
            t = rng.integers(0, V, lead)
            t.reshape(-1)[0] = -100                      # one ignored target
            d.update({c + ".logits": 3 * _r(rng, *lead, V), c + ".targets": t,
                      c + ".dout": np.array(rng.uniform(0.5, 2.0))})
        return d

    def run(inputs):
        from tinylm.layers import SoftmaxCrossEntropy
        out = {}
        for c in ("c0", "c1"):
            a = _case(inputs, c)

            def case(a=a, c=c):
                loss = SoftmaxCrossEntropy(ignore_index=-100)
                loss.forward(a["logits"], a["targets"])
                return {"dlogits." + c: loss.backward(float(a["dout"]))}
            _guard(out, ["dlogits." + c], case)
        return out
    return make_inputs, run


@_register("layernorm_backward", [("dx", 5, ["dx"]), ("dweight and dbias", 5, ["dweight", "dbias"])])
def _layernorm():
    def make_inputs(rng, large=False):
        D, lead, rows = (512, (4, 128), 256) if large else (5, (2, 3), 4)
        return {"x": 2 * _r(rng, *lead, D) + 1, "weight": _r(rng, D), "bias": _r(rng, D),
                "dy": _r(rng, *lead, D), "weight_grad0": _r(rng, D), "bias_grad0": _r(rng, D),
                "x_plain": _r(rng, rows, D), "dy_plain": _r(rng, rows, D)}

    def run(a):
        from tinylm.layers import LayerNorm
        D = a["weight"].shape[0]
        out = {}

        def affine():
            ln = LayerNorm(D, dtype=np.float64)
            ln.params["weight"][...] = a["weight"]
            ln.params["bias"][...] = a["bias"]
            ln.grads["weight"][...] = a["weight_grad0"]
            ln.grads["bias"][...] = a["bias_grad0"]
            ln.forward(a["x"])
            return {"dx.affine": ln.backward(a["dy"]),
                    "dweight": ln.grads["weight"], "dbias": ln.grads["bias"]}

        def plain():
            ln = LayerNorm(D, elementwise_affine=False, dtype=np.float64)
            ln.forward(a["x_plain"])
            return {"dx.plain": ln.backward(a["dy_plain"])}
        _guard(out, ["dx.affine", "dweight", "dbias"], affine)
        _guard(out, ["dx.plain"], plain)
        return out
    return make_inputs, run


@_register("activations_backward", [("Tanh", 1, ["tanh"]), ("Sigmoid", 1, ["sigmoid"]),
                                    ("GELU (erf)", 1, ["gelu_none"]),
                                    ("GELU (tanh)", 1, ["gelu_tanh"])])
def _activations():
    def make_inputs(rng, large=False):
        shape = (1024, 1024) if large else (3, 4)
        return {"x": 2 * _r(rng, *shape), "dy": _r(rng, *shape)}

    def run(a):
        from tinylm.layers import GELU, Sigmoid, Tanh
        out = {}
        for key, layer in (("tanh", Tanh()), ("sigmoid", Sigmoid()),
                           ("gelu_none", GELU("none")), ("gelu_tanh", GELU("tanh"))):
            def case(key=key, layer=layer):        # each function on its own
                layer.forward(a["x"])
                return {key + ".dx": layer.backward(a["dy"])}
            _guard(out, [key + ".dx"], case)
        return out
    return make_inputs, run


# --------------------------------------------------------------------------
# Assignment 2: recurrent networks
# --------------------------------------------------------------------------

def _set_params(layer, inputs, grads0=True):
    """Copy inputs['p.<name>'] into the layer's parameters and inputs['g.<name>'] into grads."""
    for name, p, g in layer.named_parameters():
        p[...] = inputs["p." + name]
        if grads0:
            g[...] = inputs["g." + name]


def _param_inputs(rng, shapes):
    d = {}
    for name, shape in shapes.items():
        d["p." + name] = 0.5 * _r(rng, *shape)
        d["g." + name] = _r(rng, *shape)          # backward must ADD to these
    return d


def _grads_out(layer, prefix="d"):
    return {prefix + name: g for name, _, g in layer.named_parameters()}


@_register("lstm_cell_backward", [("dx, dh, dc", 5, ["dx", "dh", "dc"]),
                                  ("parameter gradients", 5, ["dweight_ih", "dweight_hh",
                                                              "dbias_ih", "dbias_hh"])])
def _lstm_cell():
    def make_inputs(rng, large=False):
        B, I, H = (64, 128, 128) if large else (3, 4, 5)
        d = {"x": _r(rng, B, I), "h": _r(rng, B, H), "c": _r(rng, B, H),
             "dh_new": _r(rng, B, H), "dc_new": _r(rng, B, H)}
        d.update(_param_inputs(rng, {"weight_ih": (4 * H, I), "weight_hh": (4 * H, H),
                                     "bias_ih": (4 * H,), "bias_hh": (4 * H,)}))
        return d

    def run(a):
        from tinylm.layers.rnn import LSTMCell
        B, I = a["x"].shape
        cell = LSTMCell(I, a["h"].shape[1], dtype=np.float64)
        _set_params(cell, a)
        cell.forward(a["x"], (a["h"], a["c"]))
        dx, (dh, dc) = cell.backward((a["dh_new"], a["dc_new"]))
        out = {"dx": dx, "dh": dh, "dc": dc}
        out.update(_grads_out(cell))
        return out
    return make_inputs, run


@_register("bptt", [("RNN sequence", 5, ["rnn"]), ("GRU sequence", 5, ["gru"])])
def _bptt():
    def make_inputs(rng, large=False):
        B, T, I, H = (16, 64, 128, 128) if large else (2, 5, 3, 4)
        d = {}
        for kind, G in (("rnn", 1), ("gru", 3)):
            d.update({kind + ".x": _r(rng, B, T, I), kind + ".h0": _r(rng, B, H),
                      kind + ".dout": _r(rng, B, T, H), kind + ".dhT": _r(rng, B, H)})
            d.update({kind + "." + k: v for k, v in _param_inputs(rng, {
                "cell.weight_ih": (G * H, I), "cell.weight_hh": (G * H, H),
                "cell.bias_ih": (G * H,), "cell.bias_hh": (G * H,)}).items()})
        return d

    def run(inputs):
        from tinylm.layers.rnn import GRU, RNN
        out = {}
        for kind, cls in (("rnn", RNN), ("gru", GRU)):
            a = _case(inputs, kind)

            def case(a=a, kind=kind, cls=cls):
                B, T, I = a["x"].shape
                layer = cls(I, a["h0"].shape[1], dtype=np.float64)
                _set_params(layer, a)
                layer.forward(a["x"], a["h0"])
                dx, dh0 = layer.backward((a["dout"], a["dhT"]))   # output AND final state
                res = {kind + ".dx": dx, kind + ".dh0": dh0}
                res.update({kind + "." + k: v for k, v in _grads_out(layer).items()})
                return res
            _guard(out, [kind], case)
        return out
    return make_inputs, run


# --------------------------------------------------------------------------
# Assignment 3: attention
# --------------------------------------------------------------------------

@_register("attention_backward", [("dq", 3, ["dq"]), ("dk and dv", 4, ["dk", "dv"]),
                                  ("fused kernel spec (kernels.attention_backward_reference)",
                                   3, ["fused"])])
def _attention():
    def make_inputs(rng, large=False):
        B, Hh, Tq, Tk, D = (2, 4, 128, 128, 64) if large else (2, 2, 4, 5, 3)
        N, T = (8, 128) if large else (3, 4)
        mask = rng.random((B, 1, Tq, Tk)) < 0.7
        mask[..., 0] = True                         # every query sees at least one key
        d = {"masked.q": _r(rng, B, Hh, Tq, D), "masked.k": _r(rng, B, Hh, Tk, D),
             "masked.v": _r(rng, B, Hh, Tk, D), "masked.do": _r(rng, B, Hh, Tq, D),
             "masked.mask": mask.astype(np.uint8),
             "scale": np.array(rng.uniform(0.3, 1.0))}
        for c in ("causal", "fused"):
            d.update({c + "." + k: _r(rng, N, T, D) for k in ("q", "k", "v", "do")})
        return d

    def run(inputs):
        from tinylm.layers.attention import ScaledDotProductAttention
        out = {}
        m = _case(inputs, "masked")

        def masked():
            att = ScaledDotProductAttention(scale=float(inputs["scale"]))
            att.forward(m["q"], m["k"], m["v"], mask=m["mask"].astype(bool))   # NumPy path
            dq, dk, dv = att.backward(m["do"])
            return {"dq.masked": dq, "dk.masked": dk, "dv.masked": dv}
        c = _case(inputs, "causal")

        def causal():
            att = ScaledDotProductAttention(causal=True)
            att.forward(c["q"], c["k"], c["v"], return_weights=True)           # NumPy path
            dq, dk, dv = att.backward(c["do"])
            return {"dq.causal": dq, "dk.causal": dk, "dv.causal": dv}
        f = _case(inputs, "fused")

        def fused():
            # no mask, no weights: the fused kernel, whose NumPy backend is
            # kernels.attention_backward_reference (the sandbox runs the NumPy backend)
            att = ScaledDotProductAttention(causal=True)
            att.forward(f["q"], f["k"], f["v"])
            dq, dk, dv = att.backward(f["do"])
            return {"fused.dq": dq, "fused.dk": dk, "fused.dv": dv}
        _guard(out, ["dq.masked", "dk.masked", "dv.masked"], masked)
        _guard(out, ["dq.causal", "dk.causal", "dv.causal"], causal)
        _guard(out, ["fused"], fused)
        return out
    return make_inputs, run


# --------------------------------------------------------------------------
# Assignment 4: gradient checking
# --------------------------------------------------------------------------

def _test_function(a, b, c):
    """f(x) = sum(a sin x) + sum(b x^3) + c (sum x)^2: entries are coupled."""
    def f(x):
        return float(np.sum(a * np.sin(x)) + np.sum(b * x ** 3) + c * np.sum(x) ** 2)
    return f


@_register("numerical_gradient", [("all entries", 6, ["grad", "x_after"]),
                                  ("selected indices", 4, ["grad_idx"])])
def _numgrad():
    def make_inputs(rng, large=False):
        return {"x": _r(rng, 2, 3, 2), "a": _r(rng, 2, 3, 2), "b": _r(rng, 2, 3, 2),
                "c": np.array(rng.uniform(0.1, 1.0)),
                "idx": rng.choice(12, 4, replace=False)}

    def run(a):
        from tinylm.gradcheck import numerical_gradient
        f = _test_function(a["a"], a["b"], float(a["c"]))
        x = a["x"].copy()
        grad = numerical_gradient(f, x)
        return {"grad": np.asarray(grad), "x_after": x,
                "grad_idx": np.asarray(numerical_gradient(f, a["x"].copy(),
                                                          indices=[int(i) for i in a["idx"]]))}
    return make_inputs, run


def _bughunt_grade(got, expected):
    """Two checks: the exact set of broken letters; the broken ones fixed."""
    from tinylm.assignments import bughunt
    results = []
    truth = expected["broken"]
    if "broken" not in got:
        results.append(("which are broken", 0.0, "broken_candidates() failed: %s"
                        % _error_text(got, "broken")))
    elif got["broken"].shape == truth.shape and np.array_equal(got["broken"], truth):
        results.append(("which are broken", 1.0, "the set of broken candidates is right"))
    else:
        results.append(("which are broken", 0.0, "the set of broken candidates is not right"))
    broken = [c for c, b in zip(bughunt.CANDIDATES, truth) if b]
    fixed, lines = 0, []
    for c in bughunt.CANDIDATES:
        keys = sorted(k for k in expected if k.startswith(c + "."))
        oks = [compare(k, got.get(k), expected[k], got) for k in keys]
        bad = [m for ok, m in oks if not ok]
        if not bad:
            fixed += c in broken
            lines.append("fixed_backward_%s: right" % c)
        else:
            lines.append("fixed_backward_%s: %s" % (c, bad[0]))
    msg = "%d of %d broken backward passes fixed\n%s" % (fixed, len(broken), "\n".join(lines))
    results.append(("the fixes", fixed / max(1, len(broken)), msg))
    return results


@_register("find_the_bug", [("which are broken", 4, None), ("the fixes", 6, None)],
           public=False, grade=_bughunt_grade)
def _bughunt():
    def make_inputs(rng, large=False):
        from tinylm.assignments import bughunt
        d = {}
        for c in bughunt.CANDIDATES:
            ins = bughunt.make_inputs(c, rng, n=int(rng.integers(2, 5)))
            d.update({"%s.in.%s" % (c, k): v for k, v in ins.items()})
            out, _ = bughunt.FORWARD[c](**ins)
            d["%s.dout" % c] = _r(rng, *out.shape)
        return d

    def run(inputs):
        from tinylm.assignments import bughunt
        out = {}
        try:
            broken = bughunt.broken_candidates()
            out["broken"] = np.array([c in broken for c in bughunt.CANDIDATES], np.uint8)
        except Exception:
            out["broken.error"] = np.array(_exc_text())
        for c in bughunt.CANDIDATES:
            ins = _case(inputs, c + ".in")
            _, cache = bughunt.FORWARD[c](**ins)
            try:
                grads = bughunt.FIXED[c](inputs[c + ".dout"], cache)
                for k, v in dict(grads).items():
                    out["%s.%s" % (c, k)] = np.asarray(v)
            except Exception:
                out[c + ".error"] = np.array(_exc_text())
        return out
    return make_inputs, run


# --------------------------------------------------------------------------
# Comparing and grading
# --------------------------------------------------------------------------

def _exc_text():
    """'File ..., line N, in f: SomeError: message' for the exception being handled."""
    etype, exc, tb = sys.exc_info()
    frames = traceback.extract_tb(tb)
    where = ("%s line %d, in %s: " % (frames[-1].filename.replace("\\", "/").split("/")[-1],
                                      frames[-1].lineno, frames[-1].name)) if frames else ""
    return "%s%s: %s" % (where, etype.__name__, exc)


def _error_text(got, key):
    for k in (key + ".error", key.split(".")[0] + ".error"):
        if k in got:
            return str(got[k])
    return "no value returned"


def _fmt_index(index):
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def compare(name, got, expected, all_got=None):
    """(ok, message) for one array; the message says what to fix."""
    if got is None:
        return False, "%s: %s" % (name, _error_text(all_got or {}, name))
    got = np.asarray(got)
    if got.shape != expected.shape:
        return False, "%s has shape %s, expected %s" % (name, got.shape, expected.shape)
    if got.dtype != expected.dtype:
        return False, "%s has dtype %s, expected %s" % (name, got.dtype, expected.dtype)
    if expected.dtype.kind not in "fc":
        bad = np.argwhere(got != expected)
        if bad.size:
            i = tuple(bad[0])
            return False, "%s%s is %s, expected %s" % (name, _fmt_index(i), got[i], expected[i])
        return True, "%s: right" % name
    from tinylm.gradcheck import relative_error
    gn, en = np.isnan(got), np.isnan(expected)
    wrong_nan = gn != en
    if wrong_nan.any():
        i = tuple(np.argwhere(wrong_nan)[0])
        return False, ("%s%s is %s, expected %s (%d entries are NaN where they should not "
                       "be, or the other way round)" % (name, _fmt_index(i), got[i],
                                                        expected[i], int(wrong_nan.sum())))
    if np.isinf(got).any() and not np.isinf(expected).any():
        i = tuple(np.argwhere(np.isinf(got))[0])
        return False, "%s%s is %s, expected %s" % (name, _fmt_index(i), got[i], expected[i])
    with np.errstate(invalid="ignore"):
        err = np.where(en, 0.0, relative_error(got, expected, FLOOR))
    err = np.nan_to_num(err, nan=np.inf)
    if expected.size == 0 or err.max() <= RTOL:
        return True, "%s: right" % name
    i = tuple(int(v) for v in np.unravel_index(int(np.argmax(err)), err.shape))
    return False, ("%s%s: yours %.8g, expected %.8g (relative error %.2e; %d of %d entries "
                   "are off by more than %g)" % (name, _fmt_index(i), got[i], expected[i],
                                                 err[i], int((err > RTOL).sum()), err.size, RTOL))


def grade(name, got, expected):
    """[(check name, fraction in [0, 1], message)] for exercise ``name``.

    got: the student's outputs (a dict of arrays), expected: the reference's.
    """
    ex = EXERCISES[name]
    if ex._grade is not None:
        return ex._grade(got, expected)
    results = []
    for check, _, prefixes in ex.checks:
        keys = sorted(k for k in expected
                      if any(k == p or k.startswith(p + ".") for p in prefixes))
        msgs = [compare(k, got.get(k), expected[k], got) for k in keys]
        bad = [m for ok, m in msgs if not ok]
        results.append((check, 0.0 if bad else 1.0, bad[0] if bad else "right"))
    return results


def self_check(name, inputs, outputs):
    """The kit's check for a non-public exercise (find the bug): the FORM only.

    Whether a backward is right is exactly what the student must find out with
    their own gradient check, so this check does not say: it checks that
    ``broken_candidates()`` returns letters from A..F and that every
    ``fixed_backward_X`` returns one finite float64 gradient per input, of the
    input's shape.  Returns [(check, ok, message)].
    """
    if name != "find_the_bug":
        raise ValueError("no self check for %r" % name)
    from tinylm.assignments import bughunt
    res = []
    if "broken" in outputs:
        res.append(("broken_candidates", True, "returned {%s}: the grader checks whether that "
                    "set is right; your gradient checks tell you" % ", ".join(
                        c for c, b in zip(bughunt.CANDIDATES, outputs["broken"]) if b)))
    else:
        res.append(("broken_candidates", False, _error_text(outputs, "broken")))
    for c in bughunt.CANDIDATES:
        if c + ".error" in outputs:
            res.append(("fixed_backward_" + c, False, str(outputs[c + ".error"])))
            continue
        ins = _case(inputs, c + ".in")
        problems = []
        for k, x0 in ins.items():
            mine = outputs.get("%s.%s" % (c, k))
            if mine is None:
                problems.append("no gradient for %r" % k)
            elif mine.shape != x0.shape or mine.dtype != x0.dtype:
                problems.append("%s: shape %s dtype %s, expected shape %s dtype %s"
                                % (k, mine.shape, mine.dtype, x0.shape, x0.dtype))
            elif not np.all(np.isfinite(mine)):
                problems.append("%s has NaN or inf entries" % k)
        extra = sorted(k[len(c) + 1:] for k in outputs
                       if k.startswith(c + ".") and k[len(c) + 1:] not in ins)
        if extra:
            problems.append("gradients for inputs that do not exist: %s" % ", ".join(extra))
        res.append(("fixed_backward_" + c, not problems, "; ".join(problems) if problems else
                    "the form is right (one gradient per input); whether the values are "
                    "right is for your gradient check to tell"))
    return res
