"""One ``nbopt.Adafactor`` step over matrices, the parameters it factors, and
over vectors (its unfactored path).

The workloads are those of ``python -m nbopt bench --algorithms Adafactor``
(``COUNTx(MxN)``: COUNT separate m x n matrices); the options are
``nbopt/cli/bench.py``'s.
"""
from ._matrix_step import MatrixStep as _MatrixStep

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
    # one vector stepped whole by one thread: variance, U and both norms in
    # one pass (its lane sums: the vector chains of kernels/adafactor.py)
    "1x100k": (1, (100_000,)),
}


class Step(_MatrixStep):
    """``opt.step()`` of ``nbopt.Adafactor``, steady state (see bench_step.Step)."""

    algorithm = "Adafactor"
    options = OPTIONS
    workloads = WORKLOADS
    warmup_steps = 2
    params = [_MatrixStep.dtypes, list(WORKLOADS)]
    timeout = 120

    def time_step(self, dtype, workload):
        self.opt.step()
