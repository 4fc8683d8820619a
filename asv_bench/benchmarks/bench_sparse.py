"""One optimizer step with a sparse gradient: an embedding table of
100,000 x 64 whose gradient names 1,000 rows (with repeats, as a batch of
token ids has them), for SparseAdam and sparse-gradient Adagrad.

``ALGORITHMS`` lists the benchmarked ``(name, options)`` pairs.
"""
import numpy as np

import nbopt
from nbopt.optim.sparse_adam import SparseAdam
from nbopt.parameter import SparseGrad

ALGORITHMS = [
    ("SparseAdam", {"lr": 1e-3}),
    ("Adagrad", {"lr": 1e-2}),
]
DTYPES = ["float32", "float64"]
ROWS, DIM, NNZ = 100_000, 64, 1_000


def _make(name):
    return SparseAdam if name == "SparseAdam" else getattr(nbopt, name)


class SparseStep:
    """``opt.step()`` on a 100k x 64 table with a 1k-row COO gradient (the
    step coalesces it, as torch's does)."""

    params = [[name for name, _ in ALGORITHMS], DTYPES]
    param_names = ["algorithm", "dtype"]

    def setup(self, algorithm, dtype):
        options = dict(ALGORITHMS)[algorithm]
        rng = np.random.default_rng(0)
        self.param = nbopt.Parameter(rng.standard_normal((ROWS, DIM)).astype(dtype))
        # Zipf-like row ids: a few rows repeat many times, most appear once
        rows = np.minimum(rng.zipf(1.3, NNZ) - 1, ROWS - 1)
        self.param.grad = SparseGrad(rows[None], rng.standard_normal((NNZ, DIM)).astype(dtype),
                                     (ROWS, DIM))
        self.opt = _make(algorithm)([self.param], **options)
        # Warm up: the first step compiles (or loads from Numba's cache) the
        # kernels and creates the state.
        self.opt.step()
        self.opt.step()

    def time_step(self, algorithm, dtype):
        self.opt.step()


class Coalesce:
    """``SparseGrad.coalesce()`` of the 1k-row gradient (torch's order of
    summation for repeated rows)."""

    params = [DTYPES]
    param_names = ["dtype"]

    def setup(self, dtype):
        rng = np.random.default_rng(0)
        rows = np.minimum(rng.zipf(1.3, NNZ) - 1, ROWS - 1)
        self.grad = SparseGrad(rows[None], rng.standard_normal((NNZ, DIM)).astype(dtype),
                               (ROWS, DIM))
        self.grad.coalesce()

    def time_coalesce(self, dtype):
        self.grad.coalesce()
