"""Linear, Embedding and Sequential: the two layers every model starts from.

Linear (an affine map), for x of shape (..., in) and weight W of shape (out, in)::

    y = x W^T + b                       y: (..., out)

### BEGIN ANSWER
Its backward, with dy = dL/dy and every leading dimension flattened into N rows
(x2: (N, in), dy2: (N, out))::

    dW += dy2^T x2                      (out, in)
    db += sum over rows of dy2          (out,)
    dx  = dy2 W                         (N, in) -> (..., in)
### END ANSWER

Embedding (a lookup table), for integer ids of any shape and weight E of shape
(num_embeddings, dim)::

    y = E[ids]                          y: ids.shape + (dim,)

which is the same as one_hot(ids) @ E, so its backward is one_hot(ids)^T @ dy:
each row of dy is *added* into the row of dE it came from.  A token id that
appears several times gets the sum of its rows (``np.add.at``; plain fancy
assignment ``dE[ids] += dy`` would keep only one of them).
"""

import math

import numpy as np

from tinylm import kernels
from tinylm.layers.base import Layer
from tinylm.layers.checks import Float, Grad, Ids, check_dtype, checked
from tinylm.rng import default_rng

__all__ = ["Linear", "Embedding", "Sequential"]


class Linear(Layer):
    """Affine layer y = x W^T + b (PyTorch's nn.Linear).

    Parameters: ``weight`` (out_features, in_features), ``bias`` (out_features,)
    Input x: (..., in_features), any number of leading dims.
    Output y: (..., out_features), same dtype as x.
    Init: uniform(-1/sqrt(in), 1/sqrt(in)) for weight and bias, as PyTorch.
    The matrix products run on ``tinylm.kernels.matmul`` (C or NumPy backend),
    which also adds the bias as it stores y; the weight gradient is
    accumulated straight into ``grads["weight"]``.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError("Linear: in_features and out_features must be >= 1, got %d, %d"
                             % (in_features, out_features))
        rng = default_rng(rng)
        dtype = check_dtype(dtype)
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("weight", rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.use_bias = bool(bias)
        if bias:
            self.add_param("bias", rng.uniform(-bound, bound, (out_features,)).astype(dtype))

    @checked(x=Float(1, last="in_features"))
    def forward(self, x):
        """x: (..., in) -> y: (..., out)."""
        W = self.params["weight"]                                  # (out, in)
        lead = x.shape[:-1]
        b = self.params["bias"] if self.use_bias else None          # (out,)
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))  # (N, in)
        y2 = kernels.matmul(x2, W, trans_b=True, bias=b)           # (N, out) = x2 W^T + b
        self._cache = (x2, lead)
        return y2.reshape(lead + (self.out_features,))

    @checked(dy=Grad())
    def backward(self, dy):
        """dy: (..., out) -> dx: (..., in); adds into grads["weight"], grads["bias"]."""
        x2, lead = self._cache
        W = self.params["weight"]
        ### BEGIN SOLUTION
        dy2 = np.ascontiguousarray(dy.reshape(-1, self.out_features))   # (N, out)
        # forward: y2 = x2 W^T      ->  dW += dy2^T x2   (out, in), no temporary
        kernels.matmul(dy2, x2, trans_a=True, out=self.grads["weight"], accumulate=True)
        # forward: y2 += b          ->  db += sum_rows(dy2)   (out,), no temporary
        if self.use_bias:
            kernels.add_column_sums(dy2, self.grads["bias"])        # += dy2.sum(axis=0)
        # forward: y2 = x2 W^T      ->  dx2 = dy2 W   (N, in)
        dx2 = kernels.matmul(dy2, W)
        ### END SOLUTION
        return dx2.reshape(lead + (self.in_features,))


class Embedding(Layer):
    """Lookup table y = weight[ids] (PyTorch's nn.Embedding).

    Parameter: ``weight`` (num_embeddings, embedding_dim), init N(0, init_std^2).
    Input ids: integer array of any shape, values in [0, num_embeddings).
    Output y: ids.shape + (embedding_dim,).
    backward(dy) scatter-adds dy into grads["weight"] and returns None (ids
    are not differentiable).
    """

    def __init__(self, num_embeddings, embedding_dim, rng=None, dtype=np.float32, init_std=1.0):
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError("Embedding: sizes must be >= 1, got %d, %d"
                             % (num_embeddings, embedding_dim))
        rng = default_rng(rng)
        dtype = check_dtype(dtype)
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.add_param("weight", (init_std * rng.standard_normal(
            (num_embeddings, embedding_dim))).astype(dtype))

    @checked(ids=Ids("num_embeddings"))
    def forward(self, ids):
        """ids: integer (...) -> y: (..., dim)."""
        self._cache = ids
        return self.params["weight"][ids]                 # (..., dim), a copy

    @checked(dy=Grad())
    def backward(self, dy):
        """dy: (..., dim) -> None; grads["weight"][ids] += dy, repeated ids summed."""
        ids = self._cache
        # forward: y = W[ids]  ->  dW[ids] += dy, *accumulating* repeated ids
        # (np.add.at in kernels.embedding_backward_reference)
        kernels.embedding_backward(ids, dy, self.grads["weight"])
        return None


class Sequential(Layer):
    """Layers applied one after the other: y = f_n(...f_2(f_1(x))).

    Children are named "0", "1", ... (as PyTorch's nn.Sequential), so
    parameters appear as "0.weight", "1.bias", ...  Each child takes one input
    and returns one output; backward runs the children's backwards in reverse.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_layer(str(i), layer)

    def forward(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(list(self.layers.values())):
            dy = layer.backward(dy)
        return dy

    def __getitem__(self, i):
        return list(self.layers.values())[i]

    def __len__(self):
        return len(self.layers)
