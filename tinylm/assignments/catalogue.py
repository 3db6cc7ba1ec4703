"""The catalogue: assignments -> tasks -> marked regions, points, exercises.

A task names the functions a student writes (``(file, "Class.method")``);
the solution is whatever sits between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` inside those functions in tinylm's own source - there is
no other copy.  ``exercise`` names the driver in
:mod:`tinylm.assignments.exercises` that the grader runs (its ``checks`` are
the graded parts).  ``needs`` lists tasks whose reference code the grading
sandbox may contain because this task's code calls it (empty for all tasks
today: every exercise calls only the functions under test).
"""

import os


class Task:
    def __init__(self, id, title, points, regions, exercise, summary, needs=()):
        self.id, self.title, self.points = id, title, points
        self.regions = [tuple(r) for r in regions]   # [(relative file path, qualname)]
        self.exercise, self.summary, self.needs = exercise, summary, tuple(needs)
        self.number = None                           # set by Assignment
        self.assignment = None

    @property
    def files(self):
        return sorted({f for f, _ in self.regions})

    def stub_message(self, qualname):
        return "%s: assignment %d task %d (%s)" % (qualname, self.assignment.number,
                                                   self.number, self.id)


class Assignment:
    def __init__(self, name, number, title, tasks):
        self.name, self.number, self.title, self.tasks = name, number, title, tasks
        for k, t in enumerate(tasks, 1):
            t.number, t.assignment = k, self

    @property
    def points(self):
        return sum(t.points for t in self.tasks)

    @property
    def files(self):
        return sorted({f for t in self.tasks for f in t.files})

    def task(self, key):
        """A task by id, or by number (1-based, as an int or a digit string)."""
        for t in self.tasks:
            if key in (t.id, t.number, str(t.number)):
                return t
        raise KeyError("assignment %r has no task %r; its tasks are: %s"
                       % (self.name, key, ", ".join(t.id for t in self.tasks)))


ASSIGNMENTS = [
    Assignment("backprop", 1, "Backpropagation by hand", [
        Task("linear_backward", "Linear backward", 10,
             [("tinylm/layers/core.py", "Linear.backward")], "linear_backward",
             "y = x W^T + b.  Return dx and ADD dW, db into self.grads (the layer contract: "
             "backward accumulates).  Leading dims of x are flattened to rows."),
        Task("softmax_ce_backward", "Softmax-cross-entropy backward", 10,
             [("tinylm/layers/losses.py", "SoftmaxCrossEntropy.backward")],
             "softmax_ce_backward",
             "loss = mean over counted targets of -log softmax(z)[t]; a target equal to "
             "ignore_index is not counted.  Return dL/dz times the upstream dout."),
        Task("layernorm_backward", "Layer norm backward", 10,
             [("tinylm/layers/norm.py", "LayerNorm.backward")], "layernorm_backward",
             "xhat = (x - mean) / sqrt(var + eps); y = xhat * weight + bias.  The mean and "
             "the variance depend on every entry of the row: differentiate through them."),
        Task("activations_backward", "Activations backward (tanh, sigmoid, GELU)", 8,
             [("tinylm/layers/activations.py", "Tanh.backward"),
              ("tinylm/layers/activations.py", "Sigmoid.backward"),
              ("tinylm/layers/activations.py", "GELU.backward")], "activations_backward",
             "Element-wise derivatives, written with the forward's cached values."),
    ]),
    Assignment("recurrent", 2, "Recurrent networks: LSTM and BPTT", [
        Task("lstm_cell_backward", "LSTM cell backward", 10,
             [("tinylm/layers/rnn.py", "LSTMCell.step_backward")], "lstm_cell_backward",
             "One LSTM step, gates i, f, g, o stacked along 4H: h' = o tanh(c'), c' = f c + "
             "i g.  Return dx and (dh, dc) and add the weight/bias gradients (self._accumulate "
             "does the bookkeeping)."),
        Task("bptt", "Backprop through time over the sequence", 10,
             [("tinylm/layers/rnn.py", "_Recurrent.backward")], "bptt",
             "Walk the sequence backwards: the gradient reaching h_t is dout_t plus what step "
             "t+1 sent back; call cell.step_backward for each step.  Graded with the RNN and "
             "GRU cells (whose step_backward you are given) and a final-state gradient."),
    ]),
    Assignment("attention", 3, "Attention backward", [
        Task("attention_backward", "Scaled dot-product attention backward", 10,
             [("tinylm/layers/attention.py", "ScaledDotProductAttention.backward"),
              ("tinylm/kernels.py", "attention_backward_reference")],
             "attention_backward",
             "O = softmax(scale q k^T, masked) v.  From dO compute dv, dP, then dS through "
             "the softmax, then dq and dk: in the layer's NumPy path (graded with a mask, "
             "and causal with return_weights=True), and in the fused kernel's NumPy spec "
             "kernels.attention_backward_reference, which gets o and lse = log of the "
             "softmax's row sums instead of P (graded causal, through the layer)."),
    ]),
    Assignment("gradcheck", 4, "Gradient checking", [
        Task("numerical_gradient", "Numerical gradient", 10,
             [("tinylm/gradcheck.py", "numerical_gradient")], "numerical_gradient",
             "Central differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for each "
             "requested entry; leave the caller's x unchanged.  tinylm.gradcheck.check_layer "
             "uses your function: once it works, check_layer(Linear(3, 2), x) checks a layer."),
        Task("find_the_bug", "Find the bug in these backward passes", 10,
             [("tinylm/assignments/bughunt.py", q) for q in
              ["broken_candidates"] + ["fixed_backward_" + c for c in "ABCDEF"]],
             "find_the_bug",
             "Six small layers in tinylm/assignments/bughunt.py; some backward passes are "
             "wrong.  Gradient-check each with YOUR numerical_gradient and a random upstream "
             "gradient, name the broken ones, and write a correct fixed_backward_X for all."),
    ]),
]


def get(name):
    """An assignment by name or number."""
    for a in ASSIGNMENTS:
        if name in (a.name, a.number, str(a.number)):
            return a
    raise KeyError("no assignment %r; known: %s"
                   % (name, ", ".join(a.name for a in ASSIGNMENTS)))


def source_root():
    """The directory holding the tinylm package this process imports."""
    import tinylm
    return os.path.dirname(os.path.dirname(os.path.abspath(tinylm.__file__)))


def status(assignment, root=None):
    """{task id: None if every region is in the source, else a problem text}."""
    from tinylm.assignments.regions import RegionError, find_regions
    root = root or source_root()
    out = {}
    for t in assignment.tasks:
        problem = None
        for f, q in t.regions:
            path = os.path.join(root, f)
            if not os.path.exists(path):
                problem = "%s does not exist yet" % f
                break
            try:
                with open(path, encoding="utf-8") as fh:
                    regions = find_regions(fh.read(), f)
            except RegionError as exc:
                problem = str(exc)
                break
            if not any(r.qualname == q for r in regions):
                problem = "%s: %s has no ### BEGIN SOLUTION region" % (f, q)
                break
        out[t.id] = problem
    return out


def ready(name, root=None):
    """The assignment ``name``; ValueError unless every one of its regions is in the
    source at ``root`` (default: the tinylm this process imports)."""
    a = get(name)
    problems = {k: v for k, v in status(a, root).items() if v}
    if problems:
        raise ValueError("assignment %r is not ready: %s" % (a.name, "; ".join(
            "%s: %s" % kv for kv in problems.items())))
    return a
