"""One ``nbopt.Adafactor`` step over matrices, the parameters it factors, and
over vectors (its unfactored path).

The workloads are those of ``python -m nbopt bench --algorithms Adafactor``
(``COUNTx(MxN)``: COUNT separate m x n matrices); the options are
``nbopt/bench.py``'s.
"""
import numpy as np

import nbopt

OPTIONS = {"lr": 1e-2}

# workload -> (number of parameters, shape of each)
WORKLOADS = {
    # 10M elements as many mid-sized matrices: one parameter per thread
    "1000x(100x100)": (1000, (100, 100)),
    # a few large matrices
    "10x(1024x1024)": (10, (1024, 1024)),
    # one large matrix: its reductions split across threads
    "1x(2000x5000)": (1, (2000, 5000)),
    # vectors: the unfactored path
    "100x100k": (100, (100_000,)),
}

_LAST = {}


class Step:
    """``opt.step()`` of ``nbopt.Adafactor``, steady state (see bench_step.Step)."""

    params = [["float32", "float64"], list(WORKLOADS)]
    param_names = ["dtype", "workload"]
    timeout = 120

    def setup(self, dtype, workload):
        key = (dtype, workload)
        if key not in _LAST:
            _LAST.clear()
            count, shape = WORKLOADS[workload]
            rng = np.random.default_rng(0)
            params = [nbopt.Parameter(rng.standard_normal(shape).astype(dtype))
                      for _ in range(count)]
            for p in params:
                p.grad = rng.standard_normal(shape).astype(dtype)
            _LAST[key] = nbopt.Adafactor(params, **OPTIONS)
        self.opt = _LAST[key]
        # the first step compiles (or loads from Numba's cache) the kernel
        self.opt.step()
        self.opt.step()

    def time_step(self, dtype, workload):
        self.opt.step()
