"""One ``nbopt.Muon`` step over matrices (its parameters are 2-D).

The workloads follow ``python -m nbopt bench --algorithms Muon``
(``COUNTx(MxN)``: COUNT separate m x n matrices), scaled down so that a
sample takes well under asv's timeout: the step's cost is the bfloat16
Newton-Schulz matrix products, O(m * n * min(m, n)) per matrix.  The options
are ``nbopt/cli/bench.py``'s.
"""
import nbopt

from ._matrix_step import MatrixStep as _MatrixStep

OPTIONS = {"lr": 2e-2}

# workload -> (number of matrices, shape of each)
WORKLOADS = {
    # mid-sized square layers
    "10x(256x256)": (10, (256, 256)),
    # one large square layer (the CLI bench steps 100 of them)
    "1x(1024x1024)": (1, (1024, 1024)),
    # a tall MLP projection: the transposed iteration
    "2x(1536x512)": (2, (1536, 512)),
    # many small matrices: per-parameter overhead and torch's fallback GEMM paths
    "200x(16x32)": (200, (16, 32)),
}


class Step(_MatrixStep):
    """``opt.step()`` of ``nbopt.Muon``, steady state (see bench_step.Step)."""

    algorithm = "Muon"
    options = OPTIONS
    workloads = WORKLOADS
    params = [_MatrixStep.dtypes, list(WORKLOADS)]
    timeout = 300

    def time_step(self, dtype, workload):
        self.opt.step()


class StepBlasProducts(Step):
    """The same step with ``nbopt.config.MUON_PRODUCTS = "blas"`` (NumPy's
    float32 BLAS for the products: faster, bfloat16 noise away from torch)."""

    def setup(self, dtype, workload):
        self._saved = nbopt.config.MUON_PRODUCTS
        nbopt.config.MUON_PRODUCTS = "blas"
        super().setup(dtype, workload)

    def teardown(self, dtype, workload):
        nbopt.config.MUON_PRODUCTS = self._saved
