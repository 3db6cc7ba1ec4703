"""tinylm: language models from scratch, in NumPy with C kernels.

Every layer has a hand-derived backward pass (``tinylm.layers``), checked by
``tinylm.gradcheck``; the matmul and attention inner loops run in C
(``tinylm.kernels``, the only door to the extension) with a NumPy fallback
that is also their specification.
"""

__version__ = "0.1.0"

from tinylm.kernels import (  # noqa: E402
    get_backend, set_backend, backend, get_num_threads, set_num_threads,
)

__all__ = ["__version__", "get_backend", "set_backend", "backend",
           "get_num_threads", "set_num_threads"]
