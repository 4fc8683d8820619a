"""Kernel-level cases shared by the CUDA tiers: for an algorithm and options,
the inputs of one launch (segment and chunk tables, host scalars, state,
flags) built through the registry exactly as the engine builds them, and the
CPU serial kernel's result to compare with."""
from __future__ import annotations

import numpy as np

import nbopt
from nbopt.engine import _chunks
from nbopt.registry import get

# every element-wise algorithm with option sets that reach its branches
CASES = [
    ("SGD", dict(lr=0.05)), ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True,
                                         weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.01)), ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, maximize=True)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1)),
    ("Adadelta", dict(lr=0.5, weight_decay=0.1)),
    ("Adamax", dict(lr=0.01, weight_decay=0.1)),
    ("ASGD", dict(lr=0.01, weight_decay=0.1)), ("ASGD", dict(lr=0.01, t0=0)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=0.01)), ("RAdam", dict(lr=0.01, weight_decay=0.1,
                                             decoupled_weight_decay=True)),
    ("RMSprop", dict(lr=0.01)), ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True,
                                                 weight_decay=0.1)),
    ("Rprop", dict(lr=0.01, maximize=True)),
]
IDS = [f"{c}-{i}" for i, (c, _) in enumerate(CASES)]
SIZES = (5, 70, 33)      # three segments; with CHUNK the last two span several chunks
CHUNK = 16


def selected(names):
    """``(class name, options, dtype)`` of the cases of the classes ``names``
    (all when empty), float32 then float64."""
    for cls, options in CASES:
        if not names or cls in names:
            for dtype in (np.float32, np.float64):
                yield cls, options, dtype


def launch_inputs(cls: str, options: dict, dtype, t: float = 3.0, fresh: bool = False,
                  seed: int = 0):
    """``(spec, params, grads, segments, chunks, scalars, state, flags)`` for one
    launch over three separately allocated parameters."""
    rng = np.random.default_rng(seed)
    opt = getattr(nbopt, cls)([nbopt.Parameter(np.ones(2, dtype))], **options)
    group = opt.param_groups[0]
    spec = get(opt._algorithm)
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    grads = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    total = sum(SIZES)
    state = [np.abs(rng.standard_normal(total)).astype(dtype) + dtype(0.1) for _ in spec.state]
    offsets = np.cumsum((0,) + SIZES[:-1])
    # the device table's fifth column: each segment's scalar row (its own
    # here; the CPU kernels read the first four columns and row s)
    segments = np.array([[p.ctypes.data, g.ctypes.data, off, p.size, k]
                         for k, (p, g, off) in enumerate(zip(params, grads, offsets))], np.int64)
    # scalar state as after step t - 1 (ASGD with t0=0 then averages: mu != 1)
    old = tuple(float(np.float32(s.initial_value(group, opt.defaults)))
                for s in spec.scalar_state)
    if old:
        old = tuple(float(np.float32(v)) for v in spec.advance(group, t - 1, old, np.float32))
    new = tuple(spec.advance(group, t, old, np.float32)) if old else ()
    new = tuple(float(np.float32(v)) for v in new)
    row = spec.scalars(group, t, fresh, old, new)
    scalars = np.tile(np.array(row, np.float64), (len(SIZES), 1)).astype(dtype)
    chunks = _chunks(segments[:, 3], CHUNK)
    return spec, params, grads, segments, chunks, scalars, state, spec.flags(group)


def cpu_result(spec, params, grads, segments, chunks, scalars, state, flags):
    """The CPU serial kernel's result on copies: ``(params, state)``."""
    params = [p.copy() for p in params]
    state = [s.copy() for s in state]
    seg = segments.copy()
    seg[:, 0] = [p.ctypes.data for p in params]
    spec.cpu[0](seg, chunks, scalars, *state, *flags)
    return params, state


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance between ``a`` and ``b`` in units in the last
    place (0 where both are NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return 10 ** 9
    a, b = a.reshape(-1), b.reshape(-1)
    both_nan = np.isnan(a) & np.isnan(b)
    ia = a.view(np.int32 if a.dtype == np.float32 else np.int64).astype(np.int64)
    ib = b.view(np.int32 if b.dtype == np.float32 else np.int64).astype(np.int64)
    # map the sign-magnitude bit patterns onto a monotonic integer line
    top = np.int64(1) << (31 if a.dtype == np.float32 else 63)
    ia = np.where(ia < 0, -(ia + top) if a.dtype == np.float32 else -(ia ^ np.int64(-1 << 63)), ia)
    ib = np.where(ib < 0, -(ib + top) if b.dtype == np.float32 else -(ib ^ np.int64(-1 << 63)), ib)
    d = np.abs(ia - ib)
    d[both_nan] = 0
    return int(d.max()) if d.size else 0
