"""One step of the 8-bit optimizers (``Adam8bit``, ``AdamW8bit``, ``SGD8bit``,
``RMSprop8bit``, ``Adagrad8bit``) on the workloads of
``python -m nbopt bench-8bit``: one 10M float32 parameter, and 1000 separate
1k-element parameters quantized with ``min_8bit_size=0``."""
import numpy as np

import nbopt

ALGORITHMS = {
    "Adam8bit": {"lr": 1e-4},
    "AdamW8bit": {"lr": 1e-4},
    "SGD8bit": {"lr": 1e-4, "momentum": 0.9},
    "RMSprop8bit": {"lr": 1e-4},
    "Adagrad8bit": {"lr": 1e-4},
}
WORKLOADS = {"10M": [10_000_000], "1000x1k": [1000] * 1000}


class Step:
    """``opt.step()``, steady state (kernels compiled, state created)."""

    params = [list(ALGORITHMS), list(WORKLOADS)]
    param_names = ["algorithm", "workload"]
    timeout = 120

    def setup(self, algorithm, workload):
        rng = np.random.default_rng(0)
        self.params_ = [nbopt.Parameter(rng.standard_normal(n, dtype=np.float32))
                        for n in WORKLOADS[workload]]
        for p in self.params_:
            p.grad = rng.standard_normal(p.size, dtype=np.float32) * np.float32(1e-2)
        self.opt = getattr(nbopt, algorithm)(self.params_, min_8bit_size=0,
                                             **ALGORITHMS[algorithm])
        for _ in range(2):
            self.opt.step()

    def time_step(self, algorithm, workload):
        self.opt.step()
