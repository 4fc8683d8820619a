"""The two floors of ``python -m nbopt bench`` as benchmarks of their own,
over the grid of ``bench_step.Step`` (every element-wise algorithm x every
workload), so that asv's results give the ratios the bench command reports:
``Step.time_step / KernelFloor.time_kernel_floor`` (the target at small and
middle sizes) and ``Step.time_step / BandwidthFloor.time_bandwidth_floor``
(the target from 10M elements on).

Both floors run over ONE flat array of the workload's total size, whatever
its layout (separate arrays, an arena): what a perfect engine would step.
"""
import time

import numpy as np

import nbopt
from nbopt.cli import bench

from .bench_step import _BY_LABEL, WORKLOADS

# The last floor built in this process, reused by the next setup with the
# same parameters (asv re-runs setup before every sample; see bench_step.Step).
_LAST = {}


def _values(workload, seed=0):
    """The parameter values and gradients of ``workload`` (as
    bench_step.make_params draws them)."""
    count, each, dtype, _ = WORKLOADS[workload]
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(each, dtype=dtype) for _ in range(count)]
    grads = [rng.standard_normal(each, dtype=dtype) for _ in range(count)]
    return values, grads, dtype


def _seconds(call, rounds=5):
    """The best of ``rounds`` timings of one call (after one untimed call)."""
    call()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def _cached(key, build):
    if key not in _LAST:
        _LAST.clear()          # one workload alive at a time (10M float64: 0.5 GB)
        _LAST[key] = build()
    return _LAST[key]


class KernelFloor:
    """One step of the algorithm's own compiled kernels (serial, and parallel
    over one chunk per thread and over ``NBOPT_CHUNK_SIZE`` chunks) over one
    flat array of the workload's total size, warmed-up state, the options of
    ``Step``: the variant that is fastest in ``setup`` is the one timed."""

    params = [list(_BY_LABEL), list(WORKLOADS)]
    param_names = ["algorithm", "workload"]
    timeout = 120

    def setup(self, algorithm, workload):
        def build():
            name, options = _BY_LABEL[algorithm]
            values, grads, dtype = _values(workload)
            calls = bench.kernel_floor_calls(name, options, values, grads, dtype)
            return min(calls.values(), key=_seconds)

        self.call = _cached(("kernel", algorithm, workload), build)
        # warm up: the kernels are compiled (or loaded from Numba's cache)
        # in build; this brings the arrays back into the caches
        self.call()
        self.call()

    def time_kernel_floor(self, algorithm, workload):
        self.call()


class BandwidthFloor:
    """The bench's bandwidth floor: a Numba loop with the step's read/write
    pattern (the parameter, the gradient and the algorithm's state arrays)
    and next to no arithmetic, over one flat array of the workload's total
    size."""

    params = [list(_BY_LABEL), list(WORKLOADS)]
    param_names = ["algorithm", "workload"]
    timeout = 120

    def setup(self, algorithm, workload):
        def build():
            name, options = _BY_LABEL[algorithm]
            count, each, dtype, _ = WORKLOADS[workload]
            opt = getattr(nbopt, name)([nbopt.Parameter(np.zeros(1, dtype))], **options)
            return bench.bandwidth_floor_call(bench.state_arrays(opt), count * each, dtype)

        self.call = _cached(("bandwidth", algorithm, workload), build)
        self.call()
        self.call()

    def time_bandwidth_floor(self, algorithm, workload):
        self.call()
