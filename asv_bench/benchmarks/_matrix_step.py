"""The steady-state step of an optimizer over ``COUNTx(MxN)`` matrix
workloads, shared by ``bench_adafactor.Step`` and ``bench_muon.Step``.

``MatrixStep`` has no ``time_*`` method, so asv collects nothing from this
module: each subclass names its optimizer, options, workloads, ``params`` and
``timeout``, and defines its own ``time_step``.
"""
import numpy as np

import nbopt

# The last workload built in this process, reused by the next setup with the
# same parameters (see bench_step.Step for why).
_LAST = {}


class MatrixStep:
    """``opt.step()`` of ``nbopt.<algorithm>`` over ``workloads[workload]``
    (``(number of parameters, shape of each)``), steady state (see
    bench_step.Step)."""

    algorithm = None   # the nbopt class name
    options = {}       # its constructor options
    workloads = {}     # workload -> (number of parameters, shape of each)
    warmup_steps = 1   # steps of every setup, the first compiling the kernels
    dtypes = ["float32", "float64"]
    param_names = ["dtype", "workload"]

    def setup(self, dtype, workload):
        key = (self.algorithm, dtype, workload)
        if key not in _LAST:
            _LAST.clear()
            count, shape = self.workloads[workload]
            rng = np.random.default_rng(0)
            params = [nbopt.Parameter(rng.standard_normal(shape).astype(dtype))
                      for _ in range(count)]
            for p in params:
                p.grad = rng.standard_normal(shape).astype(dtype)
            _LAST[key] = getattr(nbopt, self.algorithm)(params, **self.options)
        self.opt = _LAST[key]
        # the first step compiles (or loads from Numba's cache) the kernels
        for _ in range(self.warmup_steps):
            self.opt.step()
