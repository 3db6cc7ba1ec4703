"""Gradient checking: compare a hand-derived backward pass with finite differences.

A backward pass is right when, for a scalar L built from the layer's output,
the gradient it returns equals the slope of L measured numerically.  The
central difference

    dL/dx_i  ~=  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

has error O(eps^2 * f''') from truncation plus about machine_eps * |terms| / eps
from rounding, where |terms| is the size of the numbers the forward pass adds
up.  :func:`numerical_gradient` is exactly this formula.  :func:`check_layer`
calls it twice, with steps eps and 2 eps, and combines them by Richardson
extrapolation, (4 g(eps) - g(2 eps)) / 3, which cancels the eps^2 term; the
truncation error is then O(eps^4), so eps can be 1e-3 and the rounding part
drops to ~1e-13 * |terms|.  (With the plain formula and eps = 1e-6 the
rounding part is ~1e-10 absolute, too close to what we want to detect.)
Checks run in float64: in float32 rounding alone would swamp the comparison.
The loss is summed with math.fsum so unperturbed outputs add no rounding.

Kinks: a finite difference across a point where the function is not smooth
(ReLU at 0) is wrong by design.  A step of 1e-3 crosses a kink when an
argument is within 2e-3 of it; for layers with ReLU inside pass a smaller
eps (1e-5) with a larger floor (1e-2: the rounding noise is then ~1e-10
absolute), and keep inputs of a bare ReLU away from 0.

Which scalar?  :func:`check_layer` draws a *random* upstream gradient g for each
output (fixed seed) and uses L = sum(g * output).  Do not use g = all ones
(L = sum(output)): for softmax every row of the output sums to 1, and for layer
norm without affine every row of xhat sums to 0, so sum(output) is constant,
its true gradient is zero, and a wrong backward that also returns ~0 would pass.

The comparison per entry is the relative error with a floor,

    err = |a - n| / max(floor, |a| + |n|)

(a = analytic, n = numeric): relative where gradients are large, absolute
(scaled by 1/floor) where both are near zero, so exact zeros do not divide by
zero and tiny gradients are not held to an impossible relative standard.
With the defaults (rtol 1e-7, floor 1e-3) an entry passes when it is right to
7 significant digits, or, for gradients below 1e-3, to 1e-10 absolute.  The
finite difference itself is good to ~1e-12 here; a real backward bug produces
errors the size of the gradient itself, far above both.

Public API
----------
numerical_gradient(f, x, eps=1e-6, indices=None)  -> array like x
check_layer(layer, inputs, kwargs=None, ...)       -> GradCheckReport
check_example(name, seed=0, **options)             -> GradCheckReport of a built-in layer
GradCheckReport: .ok, .rows (one TensorCheck per tensor), str(report) a table
"""

import copy
import math

import numpy as np

from tinylm.layers.examples import make_example

__all__ = ["numerical_gradient", "check_layer", "check_example", "GradCheckReport", "TensorCheck",
           "relative_error", "DEFAULT_RTOL", "DEFAULT_FLOOR", "DEFAULT_EPS"]

DEFAULT_EPS = 1e-3      # check_layer's step, with Richardson extrapolation (see _numeric)
DEFAULT_RTOL = 1e-7
DEFAULT_FLOOR = 1e-3


def numerical_gradient(f, x, eps=1e-6, indices=None):
    """Central-difference gradient of a scalar function f at x, in float64.

    f: callable taking an array shaped like x and returning a scalar.
    x: array (any float dtype; it is copied to float64 and never modified).
    indices: optional iterable of flat indices into x to differentiate; the
        other entries of the result are NaN ("not computed").  None = all.
    Returns an array of float64 with x's shape.
    """
    x = np.array(x, dtype=np.float64)              # a copy: the caller's x stays untouched
    if indices is None:
        indices = range(x.size)
        grad = np.zeros(x.shape)
    else:
        grad = np.full(x.shape, np.nan)
    ### BEGIN SOLUTION
    flat = x.reshape(-1)                           # a view of our copy
    for i in indices:
        old = flat[i]
        flat[i] = old + eps
        f_plus = float(f(x))
        flat[i] = old - eps
        f_minus = float(f(x))
        flat[i] = old                              # restore before the next entry
        grad.reshape(-1)[i] = (f_plus - f_minus) / (2 * eps)
    ### END SOLUTION
    return grad


def relative_error(a, n, floor=DEFAULT_FLOOR):
    """|a - n| / max(floor, |a| + |n|), element-wise."""
    a = np.asarray(a, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    return np.abs(a - n) / np.maximum(floor, np.abs(a) + np.abs(n))


class TensorCheck:
    """The result for one tensor (an input or a parameter).

    name, shape, checked (number of entries compared), max_error, index (of
    the worst entry, a tuple), analytic and numeric (values there), ok.
    """

    def __init__(self, name, shape, checked, max_error, index, analytic, numeric, ok):
        self.name, self.shape, self.checked = name, tuple(shape), checked
        self.max_error, self.index = max_error, index
        self.analytic, self.numeric, self.ok = analytic, numeric, ok

    def __repr__(self):
        return "TensorCheck(%s, max_error=%.3g, ok=%s)" % (self.name, self.max_error, self.ok)


class GradCheckReport:
    """All tensor checks of one :func:`check_layer` call; ``ok`` iff all pass."""

    def __init__(self, title, rows, rtol, floor, eps):
        self.title, self.rows = title, rows
        self.rtol, self.floor, self.eps = rtol, floor, eps

    @property
    def ok(self):
        return all(r.ok for r in self.rows)

    @property
    def max_error(self):
        return max((r.max_error for r in self.rows), default=0.0)

    def __getitem__(self, name):
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def __bool__(self):
        return self.ok

    def __str__(self):
        head = ("tensor", "shape", "checked", "max rel err", "worst index",
                "analytic", "numeric", "")
        body = [(r.name, "x".join(map(str, r.shape)) or "()", str(r.checked),
                 "%.2e" % r.max_error, str(r.index), "% .6e" % r.analytic,
                 "% .6e" % r.numeric, "ok" if r.ok else "FAIL") for r in self.rows]
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        fmt = "  ".join("%%-%ds" % w for w in widths)
        lines = ["%s: %s  (float64, eps=%g, pass if rel err <= %g, floor %g)"
                 % (self.title, "PASS" if self.ok else "FAIL", self.eps, self.rtol, self.floor),
                 fmt % head, fmt % tuple("-" * w for w in widths)]
        lines += [fmt % row for row in body]
        return "\n".join(line.rstrip() for line in lines)

    __repr__ = __str__


# -- nested tuples of arrays (RNN states etc.) --------------------------------

def _flatten(obj):
    """Leaves of nested tuples/lists, and a description to rebuild them."""
    if isinstance(obj, (tuple, list)):
        leaves, defs = [], []
        for o in obj:
            l, d = _flatten(o)
            leaves += l
            defs.append(d)
        return leaves, (type(obj), defs)
    return [obj], None


def _unflatten(leaves, treedef):
    it = iter(leaves)

    def build(d):
        if d is None:
            return next(it)
        typ, defs = d
        return typ(build(x) for x in defs)
    return build(treedef)


def _is_float(x):
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def _generators(layer):
    """Every np.random.Generator attribute in the layer tree (dropout's rng...)."""
    found, stack, seen = [], [layer], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for v in vars(obj).values():
            if isinstance(v, np.random.Generator):
                found.append(v)
        stack.extend(obj.layers.values())
    return found


def _pick(size, max_entries, rng):
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, max_entries, replace=False))


def _numeric(f, x, eps, idx, richardson):
    """numerical_gradient, optionally refined by Richardson extrapolation.

    Central differences with steps eps and 2 eps have errors c eps^2 and
    4 c eps^2 (plus O(eps^4)); (4 g(eps) - g(2 eps)) / 3 cancels the eps^2
    term.  With the truncation error now O(eps^4), eps can be 1e-3, which
    shrinks the rounding error (~ machine_eps / eps) a hundredfold.
    """
    g1 = numerical_gradient(f, x, eps, idx)
    if not richardson:
        return g1
    g2 = numerical_gradient(f, x, 2 * eps, idx)
    return (4 * g1 - g2) / 3


def check_layer(layer, inputs, kwargs=None, *, seed=0, eps=DEFAULT_EPS, rtol=DEFAULT_RTOL,
                floor=DEFAULT_FLOOR, max_entries=50, check_params=True, richardson=True,
                input_names=None, title=None):
    """Gradient-check a layer (or a whole model) in float64.

    layer: any tinylm Layer.  It is deep-copied and converted to float64 first,
        so the caller's layer and its gradients are left untouched.
    inputs: the positional inputs of ``layer.forward`` - one array or a tuple,
        possibly nested (``(x, (h0, c0))`` for an LSTM).  Float arrays are
        converted to float64 and checked; integer arrays (token ids, targets)
        and None are passed as they are and not differentiated.
    kwargs: keyword arguments for forward (masks, flags), never differentiated.
    seed: seeds the upstream gradient and the choice of sampled entries.
    max_entries: per tensor, check every entry if it has at most this many,
        else a random sample of this many (None = all).
    check_params: also check every parameter gradient.
    eps, richardson: the finite-difference step, and whether to refine it by
        Richardson extrapolation (see the module docstring).
    rtol, floor: an entry passes when |a - n| / max(floor, |a| + |n|) <= rtol.
    input_names: names of the float inputs for the report (default input0, ...).

    How it works: a forward pass gives the output(s) - an array, a nested
    tuple of arrays (e.g. ``(out, h_final)``) or a scalar loss; a random
    upstream gradient g (standard normal, never all ones) is drawn for each
    float output and L = sum(g * output).  ``backward(g)`` gives the analytic
    gradients: its return value (one array, or a tuple in the order of the
    float inputs; extra trailing entries, e.g. the gradient of an initial state
    that was not passed, are ignored) and ``layer.grads``.  Each is compared with
    :func:`numerical_gradient` of L.  Random generators found in the layer
    (dropout) are rewound before every forward, so each forward uses the same
    mask.

    Returns a :class:`GradCheckReport`.
    """
    kwargs = dict(kwargs or {})
    rng = np.random.default_rng(seed)
    model = copy.deepcopy(layer).astype(np.float64)
    if not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    in_leaves, in_def = _flatten(tuple(inputs))
    in_leaves = [np.array(x, dtype=np.float64) if _is_float(x) else x for x in in_leaves]
    float_pos = [i for i, x in enumerate(in_leaves) if _is_float(x)]
    gens = _generators(model)
    states = [g.bit_generator.state for g in gens]

    def run(leaves):
        for g, s in zip(gens, states):
            g.bit_generator.state = s
        return model.forward(*_unflatten(leaves, in_def), **kwargs)

    out = run(in_leaves)
    out_leaves, out_def = _flatten(out)
    ups = []
    for o in out_leaves:
        if o is None or (isinstance(o, np.ndarray) and o.dtype.kind != "f"):
            ups.append(None)
        else:
            ups.append(rng.standard_normal(np.shape(o)))

    def loss(o_struct):
        o_leaves, _ = _flatten(o_struct)
        # math.fsum: an exactly rounded sum, so summation rounding of the many
        # unperturbed terms does not pollute the finite difference.
        return math.fsum(math.fsum((g * np.asarray(o, dtype=np.float64)).ravel())
                         for g, o in zip(ups, o_leaves) if g is not None)

    # -- analytic -------------------------------------------------------
    model.zero_grad()
    dout = _unflatten(ups, out_def)
    back = model.backward(dout)
    back_leaves = [b for b in _flatten(back)[0]]
    if len(float_pos) == 1 and not isinstance(back, (tuple, list)):
        back_leaves = [back]
    if len(back_leaves) < len(float_pos):
        raise ValueError("check_layer: %s.backward returned %d gradient(s) but the forward "
                         "took %d float input(s)"
                         % (type(layer).__name__, len(back_leaves), len(float_pos)))
    if input_names is None:
        input_names = (["input%d" % k for k in range(len(float_pos))]
                       if len(float_pos) > 1 else ["input"][:len(float_pos)])
    if len(input_names) != len(float_pos):
        raise ValueError("check_layer: %d input_names for %d float inputs"
                         % (len(input_names), len(float_pos)))
    analytic = [(input_names[k], back_leaves[k], pos) for k, pos in enumerate(float_pos)]
    param_grads = [(name, g.copy()) for name, _, g in model.named_parameters()]

    rows = []

    def compare(name, a, n, idx):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != n.shape:
            raise ValueError("check_layer: gradient for %s has shape %s, expected %s"
                             % (name, a.shape, n.shape))
        if idx.size == 0:
            rows.append(TensorCheck(name, n.shape, 0, 0.0, (), 0.0, 0.0, True))
            return
        af, nf = a.reshape(-1)[idx], n.reshape(-1)[idx]
        err = relative_error(af, nf, floor)
        if np.isnan(err).any():
            k = int(np.argmax(np.isnan(err)))
            worst = float("nan")
        else:
            k = int(np.argmax(err))
            worst = float(err[k])
        ok = bool(np.all(np.isfinite(err)) and worst <= rtol)
        rows.append(TensorCheck(name, n.shape, int(idx.size), worst,
                                tuple(int(i) for i in np.unravel_index(idx[k], n.shape)),
                                float(af[k]), float(nf[k]), ok))

    # -- numeric: inputs ---------------------------------------------------
    for name, a, pos in analytic:
        x0 = in_leaves[pos]
        idx = _pick(x0.size, max_entries, rng)

        def f(x, pos=pos):
            leaves = list(in_leaves)
            leaves[pos] = x
            return loss(run(leaves))
        if a is None:
            raise ValueError("check_layer: backward returned None for float %s" % name)
        compare(name, a, _numeric(f, x0, eps, idx, richardson), idx)

    # -- numeric: parameters -----------------------------------------------
    if check_params:
        params = dict((n, p) for n, p, _ in model.named_parameters())
        for name, a in param_grads:
            p = params[name]
            saved = p.copy()
            idx = _pick(p.size, max_entries, rng)

            def f(x, p=p):
                p[...] = x
                return loss(run(in_leaves))
            try:
                n = _numeric(f, saved, eps, idx, richardson)
            finally:
                p[...] = saved
            compare(name, a, n, idx)

    return GradCheckReport(title or type(layer).__name__, rows, rtol, floor, eps)


def check_example(name, seed=0, **options):
    """Gradient-check the built-in example ``name`` of :mod:`tinylm.layers.examples`.

    options override the example's own check options (eps, floor, ...).
    Returns a :class:`GradCheckReport`.
    """
    ex = make_example(name, seed)
    opts = dict(ex.options)
    opts.update(options)
    return check_layer(ex.layer, ex.inputs, ex.kwargs, seed=seed, input_names=ex.input_names,
                       title="%s: %s" % (name, ex.description), **opts)
