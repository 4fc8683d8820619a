"""``nbopt.warmup``: compile the kernels of some algorithms now, not at their
first step.

Kernels are compiled lazily, when an algorithm first steps parameters of a
dtype (Numba's on-disk cache then makes later processes load them in
milliseconds).  A cold compile takes from a fraction of a second (an
element-wise kernel) to several seconds (Adafactor, Muon), which lands on
the first ``opt.step()`` of a training loop: the first batch looks like a hang
and a progress bar's ETA is off by orders of magnitude.  :func:`warmup` pays
it up front by stepping throwaway optimizers over tiny parameters, which
reaches exactly the kernels (and Numba signatures) real steps use -- the
serial kernels and, where the threading layer allows them, the
``parallel=True`` ones that steps over ``NBOPT_PARALLEL_THRESHOLD`` elements
run.  Nothing of the caller's is touched.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["warmup", "ALGORITHMS"]


# Steps per recipe: the first step creates the state, the second makes the
# steady-state plan and the third runs it (a plan over several parameters
# checks their step counts with a compiled helper).
_STEPS = 3


def _stepped(shapes, variants):
    """Parameters of ``shapes`` in one group, :data:`_STEPS` steps, for each
    dict of options in ``variants``."""
    def run(cls, dtype):
        from .parameter import Parameter

        for options in variants:
            params = [Parameter(np.ones(s, dtype)) for s in shapes]
            opt = cls(params, **options)
            for _ in range(_STEPS):
                for p in params:
                    p.grad = np.full(p.shape, 0.5, dtype)
                opt.step()
    return run


def _elementwise(variants):
    """Two 1-D parameters, for each dict of options in ``variants`` (the
    options that allocate optional state: amsgrad's max_exp_avg_sq, SGD's
    momentum buffer)."""
    return _stepped([8, 5], variants)


def _shapes(*shapes, **options):
    """Parameters of ``shapes`` (matrices and vectors take different paths in
    Adafactor; Muon transposes wide matrices)."""
    return _stepped(shapes, [options])


def _sparse(cls, dtype):
    """Sparse gradients with a repeated row (the coalescing kernels run too);
    Adagrad takes dense ones as well."""
    from .parameter import Parameter, SparseGrad

    p = Parameter(np.ones((6, 3), dtype))
    opt = cls([p])
    for _ in range(_STEPS):
        p.grad = SparseGrad(np.array([[0, 2, 0]]), np.full((3, 3), 0.5, dtype), p.shape)
        opt.step()


def _lbfgs(cls, dtype):
    """A quadratic, with and without the strong-Wolfe line search."""
    from .parameter import Parameter

    for line_search_fn in (None, "strong_wolfe"):
        x = Parameter(np.ones(8, dtype))
        opt = cls([x], max_iter=3, line_search_fn=line_search_fn)

        def closure():
            x.grad = np.array(x, copy=True)
            return float(0.5 * np.dot(x, x))
        for _ in range(_STEPS):
            opt.step(closure)


def _both(*runs):
    def run(cls, dtype):
        for r in runs:
            r(cls, dtype)
    return run


#: How :func:`warmup` steps each algorithm (class name -> recipe).  A test
#: checks that every optimizer class of nbopt has an entry.
ALGORITHMS = {
    "SGD": _elementwise([{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9}]),
    "Adam": _elementwise([{}, {"amsgrad": True}]),
    "AdamW": _elementwise([{}, {"amsgrad": True}]),
    "Adagrad": _both(_elementwise([{}]), _sparse),
    "Adadelta": _elementwise([{}]),
    "Adamax": _elementwise([{}]),
    "ASGD": _elementwise([{}]),
    "NAdam": _elementwise([{}, {"decoupled_weight_decay": True}]),
    "RAdam": _elementwise([{}, {"decoupled_weight_decay": True}]),
    "RMSprop": _elementwise([{}, {"momentum": 0.9, "centered": True}]),
    "Rprop": _elementwise([{}]),
    "SparseAdam": _sparse,
    "LBFGS": _lbfgs,
    "Adafactor": _shapes((4, 3), (3, 4, 2), (5,)),
    "Muon": _shapes((4, 3), (3, 4)),
    # 8-bit state: a quantized parameter and a small one with float state
    # (one compiled step kernel per dtype serves all five classes)
    "Adam8bit": _shapes((300,), (5,), min_8bit_size=64),
    "AdamW8bit": _shapes((300,), (5,), min_8bit_size=64),
    "SGD8bit": _shapes((300,), (5,), lr=0.1, momentum=0.9, min_8bit_size=64),
    "RMSprop8bit": _shapes((300,), (5,), min_8bit_size=64),
    "Adagrad8bit": _shapes((300,), (5,), min_8bit_size=64),
}


def warmup(algorithms=None, dtypes=("float32", "float64")) -> dict:
    """Compile the CPU kernels of ``algorithms`` for ``dtypes`` now.

    The first step of an algorithm compiles its kernels (or loads them from
    Numba's disk cache); call this at start-up to pay that before a training
    loop, a progress bar or a latency measurement starts.  After it, a step of
    a warmed algorithm compiles nothing for parameters of a warmed dtype, dense
    gradients (and sparse ones for SparseAdam and Adagrad), small or large.

    Parameters
    ----------
    algorithms : iterable of str or optimizer classes, optional
        Class names (``"Adam"``, case-insensitive) or classes
        (``nbopt.Adam``).  Default: every algorithm (a cold compile of all of
        them takes a minute or more; with Numba's disk cache filled, well
        under a second).
    dtypes : iterable of str or numpy dtypes, default ("float32", "float64")
        Parameter dtypes.

    Returns
    -------
    dict
        Seconds spent per ``(class name, dtype name)``: near zero for kernels
        already compiled in this process or loaded from the disk cache.

    Raises
    ------
    ValueError
        For an unknown algorithm or a dtype other than float32 / float64.

    Notes
    -----
    CPU kernels only: CUDA kernels compile at their first launch on a
    device.  The ``parallel=True`` kernels are compiled too (unless Numba's
    threading layer is ``workqueue``, with which nbopt runs serial kernels
    only); while they are, :data:`nbopt.config.PARALLEL_THRESHOLD` is set to
    1, so call this before other threads step optimizers.

    Examples
    --------
    >>> import nbopt
    >>> seconds = nbopt.warmup(["Adam"], dtypes=["float32"])
    >>> sorted(seconds)
    [('Adam', 'float32')]
    """
    import nbopt

    from . import config

    by_name = {name.lower(): name for name in ALGORITHMS}
    names = []
    for algo in (ALGORITHMS if algorithms is None else algorithms):
        key = algo.__name__ if isinstance(algo, type) else str(algo)
        if key.lower() not in by_name:
            raise ValueError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGORITHMS)}")
        names.append(by_name[key.lower()])
    kinds = []
    for dtype in (dtypes,) if isinstance(dtypes, (str, np.dtype, type)) else dtypes:
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"nbopt steps float32 and float64 parameters, got dtype {dtype!r}")
        kinds.append(dt.type)
    seconds = {}
    for name in dict.fromkeys(names):
        for dtype in dict.fromkeys(kinds):
            start = time.perf_counter()
            run = ALGORITHMS[name]
            run(getattr(nbopt, name), dtype)
            if config.parallel_allowed():
                # the same steps through the parallel=True kernels, which real
                # steps take from PARALLEL_THRESHOLD elements on
                saved = config.PARALLEL_THRESHOLD
                config.PARALLEL_THRESHOLD = 1
                try:
                    run(getattr(nbopt, name), dtype)
                finally:
                    config.PARALLEL_THRESHOLD = saved
            seconds[(name, np.dtype(dtype).name)] = time.perf_counter() - start
    return seconds
