"""One optimizer step of every element-wise algorithm, over the workloads of
``python -m nbopt bench`` (``nbopt/cli/bench.py``).

``ALGORITHMS`` is the list of benchmarked ``(class name, options)`` pairs,
with the options ``nbopt/cli/bench.py`` uses; adding an algorithm to nbopt adds
one entry here.  ``WORKLOADS`` names the parameter layouts.
"""
import numpy as np

import nbopt

# (nbopt class name, constructor options), as in nbopt/cli/bench.py
ALGORITHMS = [
    ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    ("Adam", {"lr": 1e-3}),
    ("AdamW", {"lr": 1e-3}),
    ("Adagrad", {"lr": 1e-2}),
    ("Adadelta", {"lr": 1.0}),
    ("Adamax", {"lr": 2e-3}),
    ("ASGD", {"lr": 1e-2}),
    ("NAdam", {"lr": 2e-3}),
    ("RAdam", {"lr": 1e-3}),
    ("RMSprop", {"lr": 1e-2}),
    ("Rprop", {"lr": 1e-2}),
]

# workload -> (number of arrays, elements per array, dtype, in an arena?); the
# labels are those of `python -m nbopt bench --sizes` (COUNTxN: COUNT separate
# arrays of N elements, @arena: in one ParameterArena, @f64: float64)
WORKLOADS = {
    # one big array: the memory-bandwidth-bound case, parallel kernel
    "10M": (1, 10_000_000, "float32", False),
    # a mid-sized model: 100 separate arrays, parallel kernel over a pointer table
    "100x100k": (100, 100_000, "float32", False),
    # many small arrays packed in one buffer: one kernel call over the buffer
    "1000x1k@arena": (1000, 1_000, "float32", True),
    # the same as separate Parameters: pointer table, per-parameter overhead
    "1000x1k": (1000, 1_000, "float32", False),
    # one tiny array: the fixed per-step (Python + dispatch) overhead
    "1k": (1, 1_000, "float32", False),
    # the float64 kernels on the bandwidth-bound case
    "10M@f64": (1, 10_000_000, "float64", False),
    # issue 17's small and middle sizes, whose targets are ratios to the
    # kernel floor (bench_floors.KernelFloor): few and many small arrays ...
    "10x1k": (10, 1_000, "float32", False),
    "100x1k": (100, 1_000, "float32", False),
    # ... and one array that fits in the caches, serial and parallel kernels
    "30k": (1, 30_000, "float32", False),
    "100k": (1, 100_000, "float32", False),
    "300k": (1, 300_000, "float32", False),
    "1M": (1, 1_000_000, "float32", False),
}


def _label(name, options):
    """``"SGD(lr=0.001, momentum=0.9)"``: a unique, readable asv parameter value."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(options.items()))})"


_BY_LABEL = {_label(name, options): (name, options) for name, options in ALGORITHMS}
if len(_BY_LABEL) != len(ALGORITHMS):
    raise ValueError("ALGORITHMS has duplicate (name, options) entries")


def make_params(workload, seed=0):
    """The parameters of ``workload``, each with a gradient, and the arena
    holding them (``None`` for separate Parameters)."""
    count, each, dtype, in_arena = WORKLOADS[workload]
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(each, dtype=dtype) for _ in range(count)]
    grads = [rng.standard_normal(each, dtype=dtype) for _ in range(count)]
    if in_arena:
        arena = nbopt.ParameterArena(values, dtype=dtype)
        # in place, as a training loop fills them: the arena's fast path needs
        # every .grad to stay its view of the arena's gradient buffer
        for view, g in zip(arena.grad_views, grads):
            view[...] = g
        return arena.params, arena
    params = [nbopt.Parameter(v) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    return params, None


# The last workload built in this process, reused by the next setup with the
# same parameters (see Step.setup).
_LAST = {}


class Step:
    """``opt.step()`` of one element-wise algorithm on one workload.

    Every sample is one step, right after ``setup``: asv re-runs ``setup``
    before each sample when a benchmark has one.  ``setup`` therefore builds
    the workload and its optimizer once per process and only steps it twice on
    the later calls, so that every timed step is a steady-state step (warm
    caches, warm state) rather than the third step of a freshly built
    optimizer over freshly written arrays (1.7x slower at 1000x1k when
    measured).
    """

    params = [list(_BY_LABEL), list(WORKLOADS)]
    param_names = ["algorithm", "workload"]
    timeout = 120

    def setup(self, algorithm, workload):
        key = (algorithm, workload)
        if key not in _LAST:
            # one workload alive at a time (10M float64 Adam: 0.4 GB)
            _LAST.clear()
            self.parameters = self.arena = self.opt = None
            name, options = _BY_LABEL[algorithm]
            parameters, arena = make_params(workload)
            _LAST[key] = parameters, arena, getattr(nbopt, name)(parameters, **options)
        self.parameters, self.arena, self.opt = _LAST[key]
        # Warm up: the first step ever compiles (or loads from Numba's cache)
        # the kernels and creates the state; then the steady-state path runs
        # and brings the arrays back into the caches.
        self.opt.step()
        self.opt.step()

    def time_step(self, algorithm, workload):
        self.opt.step()
