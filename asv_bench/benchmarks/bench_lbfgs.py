"""One ``LBFGS.step`` (5 iterations, full history of 10 pairs) on a
1M-element quadratic, with and without the strong-Wolfe line search.

The closure writes the gradient into a preallocated array, so the time is
LBFGS's own plus 5-6 cheap element-wise closure calls; the tolerances are
negative so that every step runs all its iterations.
"""
import numpy as np

import nbopt
from nbopt.optim.lbfgs import LBFGS

SIZE = 1_000_000


class Step:
    """``opt.step(closure)`` of ``nbopt.LBFGS``."""

    params = [["float32", "float64"], ["none", "strong_wolfe"]]
    param_names = ["dtype", "line_search_fn"]

    def setup(self, dtype, line_search_fn):
        rng = np.random.default_rng(0)
        a = (1 + 999 * rng.random(SIZE)).astype(dtype)
        b = rng.standard_normal(SIZE).astype(dtype)
        x = nbopt.Parameter(rng.standard_normal(SIZE).astype(dtype))
        g = np.empty_like(b)
        tmp = np.empty_like(b)

        def closure():
            np.multiply(a, x, out=g)
            np.subtract(g, b, out=g)
            x.grad = g
            # no BLAS (np.dot): its spinning threads would compete with the
            # optimizer's (nbopt/cli/bench_lbfgs.py)
            np.subtract(g, b, out=tmp)
            np.multiply(tmp, x, out=tmp)
            return 0.5 * float(tmp.sum())

        self.closure = closure
        self.opt = LBFGS([x], max_iter=5, history_size=10, tolerance_grad=-1.0,
                         tolerance_change=-1.0,
                         line_search_fn=None if line_search_fn == "none" else line_search_fn)
        # Warm up: the first step compiles (or loads from Numba's cache) the
        # kernels; the next ones fill the history to its steady size.
        for _ in range(3):
            self.opt.step(closure)

    def time_step(self, dtype, line_search_fn):
        self.opt.step(self.closure)
