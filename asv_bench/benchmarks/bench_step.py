"""One optimizer step, per algorithm, dtype and parameter size.

``ALGORITHMS`` is the list of benchmarked ``(class name, options)`` pairs;
adding an algorithm to nbopt adds one entry here.
"""
import numpy as np

import nbopt

# (nbopt class name, constructor options besides lr)
ALGORITHMS = [
    ("SGD", {"momentum": 0.9}),
    ("Adam", {}),
    ("AdamW", {}),
    ("Adagrad", {}),
    ("Adadelta", {}),
    ("Adamax", {}),
    ("ASGD", {}),
    ("NAdam", {}),
    ("RAdam", {}),
    ("RMSprop", {}),
    ("Rprop", {}),
]

DTYPES = ["float32", "float64"]
SIZES = [1_000, 1_000_000]
LR = 1e-3


def _label(name, options):
    """``"SGD(momentum=0.9)"``: a unique, readable asv parameter value."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(options.items()))})"


_BY_LABEL = {_label(name, options): (name, options) for name, options in ALGORITHMS}
if len(_BY_LABEL) != len(ALGORITHMS):
    raise ValueError("ALGORITHMS has duplicate (name, options) entries")


class Step:
    """``opt.step()`` on one parameter of ``size`` elements with a gradient."""

    params = [list(_BY_LABEL), DTYPES, SIZES]
    param_names = ["algorithm", "dtype", "size"]

    def setup(self, algorithm, dtype, size):
        name, options = _BY_LABEL[algorithm]
        rng = np.random.default_rng(0)
        self.param = nbopt.Parameter(rng.standard_normal(size).astype(dtype))
        self.param.grad = rng.standard_normal(size).astype(dtype)
        self.opt = getattr(nbopt, name)([self.param], lr=LR, **options)
        # Warm up: the first step compiles (or loads from Numba's cache) the
        # kernels and creates the state, the second runs the steady-state path.
        self.opt.step()
        self.opt.step()

    def time_step(self, algorithm, dtype, size):
        self.opt.step()


def timeraw_import_nbopt():
    """Cold ``import nbopt`` in a fresh interpreter (it must compile nothing)."""
    return "import nbopt"
