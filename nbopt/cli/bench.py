"""``python -m nbopt bench``: optimizer step time next to two floors, torch's
modes and the other CPU optimizers installed, measured in one run.

An element-wise step reads the parameter, the gradient and every state array
and writes the parameter and every state array back (Adam float32: 4 reads +
3 writes = 28 bytes per element).  Every row reports two floors, measured in
the same run over one flat array of the row's total size:

* the **bandwidth floor** ("bw floor"): a Numba loop with the step's
  read/write pattern and next to no arithmetic, what memory allows;
* the **kernel floor** ("kern floor"): the algorithm's own compiled kernels
  (its serial build, and its parallel build over one chunk per thread and
  over ``NBOPT_CHUNK_SIZE`` chunks; the fastest counts) with its default
  options and warmed-up state: what a perfect engine around the same maths
  reaches.  sqrt and division make Adam compute-bound while its data sits in
  cache, so this floor, not the bandwidth one, is the target at small and
  middle sizes.

The table reports nbopt / each floor and checks the workload's target (issue
17): one 1k array at most 3 us per step; 10x1k, 100x1k and 1000x1k (separate
or in an arena) at most 2x, 1.5x and 1.3x the kernel floor; one array of
30k-1M at most 1.3x the kernel floor; 10M elements and more (1x10M,
100x100k, 10M float64) at most 1.1x the bandwidth floor.

Contenders, each with its time and nbopt's speedup over it (target >= 1x):
torch's fastest mode (for-loop, foreach, fused; >= 1x fused, >= 3x the other
modes), and, when importable, DeepSpeed's CPU optimizers
(``DeepSpeedCPUAdam`` for Adam and AdamW, ``DeepSpeedCPUAdagrad``; ``pip
install deepspeed ninja``, run with ``DS_ACCELERATOR=cpu``; the first use
builds its C++ extension, about two minutes) and optax under ``jax.jit``
(``pip install optax``: update and apply over the list of arrays, buffers
donated, float32 unless ``JAX_ENABLE_X64`` is set).  A contender that is not
installed is left out, with one line saying so; none is a dependency of
nbopt.  ``NO*`` marks a torch target out of reach: torch's fastest mode
already runs within the target ratio of the bandwidth floor.

The start-up lines time ``import nbopt`` against ``import numba`` and an
algorithm's first step in new processes, cold and with Numba's on-disk
cache, split into Numba's own start-up and nbopt's.  ``--device cuda``
measures device parameters on a GPU the same way, against a CUDA floor
kernel and torch's CUDA optimizers (:mod:`nbopt.cli.bench_cuda`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time

import numpy as np
from numba import njit, prange

from ._common import (Parser, add_torch_and_json, compile_notice, integer, names,
                      number, size, wait_until_quiet)

# What the bench steps by default: (class name, constructor options).
ALGORITHMS = {
    "SGD": {"lr": 1e-3, "momentum": 0.9},
    "Adam": {"lr": 1e-3},
    "AdamW": {"lr": 1e-3},
    "Adagrad": {"lr": 1e-2},
    "Adadelta": {"lr": 1.0},
    "Adamax": {"lr": 2e-3},
    "ASGD": {"lr": 1e-2},
    "NAdam": {"lr": 2e-3},
    "RAdam": {"lr": 1e-3},
    "RMSprop": {"lr": 1e-2},
    "Rprop": {"lr": 1e-2},
    "Adafactor": {"lr": 1e-2},
    "Muon": {"lr": 2e-2},
}
# Algorithms that step matrices only (2-D parameters): they run on the
# COUNTx(MxN) workloads, by default DEFAULT_MATRIX_SIZES, and only when named
# (a Muon step over 100 1024 x 1024 matrices takes tens of seconds).
MATRIX_ONLY = ("Muon",)
# Algorithms without CUDA kernels: left out of --device cuda's default list
CPU_ONLY = ("Adafactor", "Muon")
DEFAULT_MATRIX_SIZES = ["100x(1024x1024)"]
# The workloads of the performance targets.  COUNTxN: COUNT separate arrays of
# N elements; COUNTx(MxN): COUNT separate M x N matrices (any number of dims,
# for the algorithms that treat matrices as such: Adafactor); "@arena":
# allocated in one ParameterArena; "@f64": float64; "@newgrads": a new
# gradient array is assigned to every parameter before each step (the
# README's loop), instead of gradients written in place.
DEFAULT_SIZES = ["1k", "10x1k", "100x1k", "1000x1k", "1000x1k@arena", "30k", "100k", "300k",
                 "1M", "10M", "100x100k", "10M@f64"]
# --device cuda (nbopt/bench_cuda.py), which runs workload by workload: the
# two with targets first, so that a run cut short still reports them
DEFAULT_CUDA_SIZES = ["100M", "1000x100k", "10000x1k", "1000x100k@arena"]
# torch's fused kernels exist for these; nbopt must be >= 1.0x them, and >= 3x
# torch's fastest mode for every other algorithm
FUSED = ("SGD", "Adam", "AdamW", "Adagrad")


# Adafactor's targets (issue 14): >= 2x torch's fastest mode, none against
# the floor (its reductions take passes of their own)
TORCH_TARGETS = {"Adafactor": 2.0}


# Issue 17's targets.  Fixed cost: one array of at most FIXED_COST_ELEMENTS,
# microseconds per step.  From BANDWIDTH_ELEMENTS elements on, memory sets the
# pace: nbopt / bandwidth floor.  Between: nbopt / kernel floor, by total size
# for separate arrays (10x1k, 100x1k, 1000x1k), SINGLE_TARGET for one array.
FIXED_COST_ELEMENTS = 1000
FIXED_COST_US = 3.0
BANDWIDTH_ELEMENTS = 10_000_000
BANDWIDTH_TARGET = 1.1
SINGLE_TARGET = 1.3
MANY_TARGETS = ((10_000, 2.0), (100_000, 1.5), (None, 1.3))   # (total up to, max ratio)


def target(name: str, count: int, each: int, arena: bool, dtype: str) -> tuple[str, float]:
    """The issue-17 target for a workload: ("us", max microseconds per step),
    ("kernel", max nbopt / kernel floor), ("bandwidth", max nbopt / bandwidth
    floor) or ("none", None).  An arena is held to the targets of the same
    number of separate arrays."""
    if name in TORCH_TARGETS:
        return "none", None
    total = count * each
    if count == 1 and each <= FIXED_COST_ELEMENTS:
        return "us", FIXED_COST_US
    if total >= BANDWIDTH_ELEMENTS:
        return "bandwidth", BANDWIDTH_TARGET
    if count == 1:
        return "kernel", SINGLE_TARGET
    for up_to, limit in MANY_TARGETS:
        if up_to is None or total <= up_to:
            return "kernel", limit


def torch_target(name: str) -> float:
    return TORCH_TARGETS.get(name, 1.0 if name in FUSED else 3.0)


def torch_verdict(name: str, speedup: float, torch_over_floor: float,
                  limit: float | None = None) -> str:
    """"ok", "NO", or "NO*" where the target is out of reach: nbopt cannot be
    k times faster than a torch mode that already runs within k times the
    floor without beating the floor itself.  ``limit``: the target speedup
    (default: the CPU target, :func:`torch_target`)."""
    limit = torch_target(name) if limit is None else limit
    if speedup >= limit:
        return "ok"
    return "NO*" if torch_over_floor < limit else "NO"


@njit(parallel=True, error_model="numpy", cache=True)
def _stream_1(p, g):
    for i in prange(p.size):
        p[i] = p[i] + g[i]


@njit(parallel=True, error_model="numpy", cache=True)
def _stream_2(p, g, a):
    for i in prange(p.size):
        a[i] = a[i] + g[i]
        p[i] = p[i] + a[i]


@njit(parallel=True, error_model="numpy", cache=True)
def _stream_3(p, g, a, b):
    for i in prange(p.size):
        x = g[i]
        a[i] = a[i] + x
        b[i] = b[i] * x
        p[i] = p[i] + a[i] * b[i]


@njit(parallel=True, error_model="numpy", cache=True)
def _stream_4(p, g, a, b, c):
    for i in prange(p.size):
        x = g[i]
        a[i] = a[i] + x
        b[i] = b[i] * x
        c[i] = max(c[i], b[i])
        p[i] = p[i] + a[i] * c[i]


_STREAMS = {1: _stream_1, 2: _stream_2, 3: _stream_3, 4: _stream_4}


def bandwidth_floor_call(n_state: int, total: int, dtype):
    """The bandwidth floor of a step keeping ``n_state`` per-element state
    arrays over ``total`` elements: a callable running the Numba loop that
    reads the parameter, the gradient and each state array and writes the
    parameter and each state array back (:func:`bytes_per_element`), with
    next to no arithmetic, over flat arrays of its own."""
    flat = [np.ones(total, dtype) for _ in range(n_state + 2)]
    flat[1] *= 1e-9
    stream = _STREAMS[n_state + 1]

    def call():
        stream(*flat)
    return call


# -- the kernel floor ----------------------------------------------------------------------
class _Stored(tuple):
    """Scalar state as the engine hands it to ``AlgorithmSpec.scalars``
    (``new``): Python floats, with the dtype of torch's 0-d state tensors."""

    dtype = np.float32


def _chunk_table(n: int, piece: int) -> np.ndarray:
    """A kernel's chunk table over one segment of ``n`` elements, in pieces
    of at most ``piece``."""
    piece = max(1, int(piece))
    starts = np.arange(0, max(n, 1), piece, dtype=np.int64)
    out = np.zeros((len(starts), 3), np.int64)
    out[:, 1] = starts
    out[:, 2] = np.minimum(starts + piece, n)
    return out


def _bound(kernel, args: tuple, keep):
    """``kernel(*args)`` as a callable that keeps ``keep`` (the arrays whose
    addresses the segment table holds) alive."""
    def call():
        kernel(*args)
    call.keep = keep
    return call


def kernel_floor_calls(name: str, options: dict, values: list, grads: list, dtype: str,
                       warmup: int = 10) -> dict:
    """The kernel floor of algorithm ``name`` (an nbopt class name) over the
    elements of ``values``/``grads`` laid end to end in ONE flat array:
    ``{variant: callable}``, each callable one step of the algorithm's own
    compiled kernels (``AlgorithmSpec.cpu``) over one segment, the way the
    engine calls them: ``kernel(segments, chunks, scalars, *state, *flags)``.

    Variants: ``"serial"``; with parallel kernels allowed (see
    :func:`nbopt.config.parallel_allowed`), ``"parallel_threads"`` (one chunk
    per Numba thread) and ``"parallel_chunks"`` (chunks of
    ``config.CHUNK_SIZE``, when that is another table).  The state starts as
    the optimizer starts it (``options`` as the optimizer takes them, its
    defaults for the rest) and has taken ``warmup`` steps, so that it holds
    ordinary values and takes the branches of a training run's steps (no
    zeros or denormals on special paths; RAdam rectifies from step 6 with its
    default betas, and its rectified step is the dearer one); the scalars are
    those of the next step.  ``{}`` for an algorithm without element-wise
    kernels (Adafactor, Muon).  Each variant steps arrays of its own (copies
    of one warmed-up state).
    """
    import numba

    import nbopt
    from nbopt import config
    from nbopt.parameter import aligned_zeros
    from nbopt.registry import get

    opt = getattr(nbopt, name)([nbopt.Parameter(np.zeros(1, dtype))], **options)
    algorithm = getattr(opt, "_algorithm", "")
    try:
        spec = get(algorithm) if algorithm else None
    except KeyError:
        spec = None
    if spec is None or not spec.cpu or spec.cpu[0] is None:
        return {}
    group, defaults = opt.param_groups[0], opt.defaults
    total = int(sum(np.size(v) for v in values))
    p, g = aligned_zeros(total, dtype), aligned_zeros(total, dtype)
    np.concatenate([np.ravel(v) for v in values], out=p)
    np.concatenate([np.ravel(x) for x in grads], out=g)
    state = []
    for s in spec.state:
        arr = aligned_zeros(total if s.wanted(group) else 0, dtype)
        arr.fill(s.initial_value(group, defaults))
        state.append(arr)
    stored = _Stored(float(np.float32(s.initial_value(group, defaults)))
                     for s in spec.scalar_state)
    flags = tuple(spec.flags(group))
    seg = np.array([[p.ctypes.data, g.ctypes.data, 0, total]], np.int64)

    def scalar_row(t: float, old: tuple):
        new = old
        if spec.advance is not None:
            new = _Stored(float(np.float32(x)) for x in spec.advance(group, t, old, np.float32))
        row = spec.scalars(group, t, t == 1.0, old, new)
        return np.array([row], np.float64).astype(dtype), new

    serial = _chunk_table(total, total)
    for t in range(1, warmup + 1):
        table, stored = scalar_row(float(t), stored)
        spec.cpu[0](seg, serial, table, *state, *flags)
    table, _ = scalar_row(float(warmup + 1), stored)
    builds = {"serial": (spec.cpu[0], serial)}
    if config.parallel_allowed():
        builds["parallel_threads"] = (spec.cpu[1], _chunk_table(
            total, -(-total // numba.get_num_threads())))
        by_size = _chunk_table(total, config.CHUNK_SIZE)
        if not np.array_equal(by_size, builds["parallel_threads"][1]):
            builds["parallel_chunks"] = (spec.cpu[1], by_size)
    calls = {}
    for variant, (kernel, chunks) in builds.items():
        # each variant steps arrays of its own, as every other implementation
        # of the row does: variants sharing theirs would find them in the
        # cache the previous variant left (measured, ASGD over 10M float32
        # elements: 3.3 ms with shared arrays, 5.3 ms with its own; nbopt 5.5)
        own_p, own_g = aligned_zeros(total, dtype), aligned_zeros(total, dtype)
        own_p[:], own_g[:] = p, g
        own_state = [aligned_zeros(a.size, dtype) for a in state]
        for a, b in zip(own_state, state):
            a[:] = b
        own_seg = np.array([[own_p.ctypes.data, own_g.ctypes.data, 0, total]], np.int64)
        calls[variant] = _bound(kernel, (own_seg, chunks, table, *own_state, *flags),
                                (own_p, own_g, own_state))
    return calls


# -- optional contenders (never dependencies of nbopt: imported here only) --------------
# DeepSpeed's CPU optimizers: class name -> (module, class, extra options).
# torch's defaults where DeepSpeed's differ (AdamW's weight decay, Adagrad's eps).
DEEPSPEED = {
    "Adam": ("deepspeed.ops.adam", "DeepSpeedCPUAdam", {"adamw_mode": False,
                                                        "weight_decay": 0.0}),
    "AdamW": ("deepspeed.ops.adam", "DeepSpeedCPUAdam", {"adamw_mode": True,
                                                         "weight_decay": 1e-2}),
    "Adagrad": ("deepspeed.ops.adagrad", "DeepSpeedCPUAdagrad", {"eps": 1e-10,
                                                                 "weight_decay": 0.0}),
}


# optax's transformations: class name -> (optax function, options), torch's
# defaults where optax's differ (AdamW's weight decay, Adagrad's accumulator
# and eps, RMSprop's decay); SGD takes the bench's momentum.
OPTAX = {
    "SGD": ("sgd", {}),
    "Adam": ("adam", {"b1": 0.9, "b2": 0.999, "eps": 1e-8}),
    "AdamW": ("adamw", {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}),
    "Adagrad": ("adagrad", {"initial_accumulator_value": 0.0, "eps": 1e-10}),
    "Adadelta": ("adadelta", {"rho": 0.9, "eps": 1e-6}),
    "Adamax": ("adamax", {"b1": 0.9, "b2": 0.999, "eps": 1e-8}),
    "NAdam": ("nadam", {"b1": 0.9, "b2": 0.999, "eps": 1e-8}),
    "RAdam": ("radam", {"b1": 0.9, "b2": 0.999, "eps": 1e-8}),
    "RMSprop": ("rmsprop", {"decay": 0.99, "eps": 1e-8}),
    "Rprop": ("rprop", {}),
}


def _optax_transform(name: str, options: dict):
    """The optax transformation for nbopt class ``name`` with the bench's
    ``options``; None where this optax has no such algorithm."""
    import optax

    function, extra = OPTAX.get(name, (None, {}))
    if function is None or not hasattr(optax, function):
        return None
    if name == "SGD":
        extra = {"momentum": options.get("momentum") or None}
    return getattr(optax, function)(options["lr"], **extra)


# What `bench --help` and the "not importable" line name for each contender
CONTENDER_INSTALL = {"deepspeed": "DS_ACCELERATOR=cpu pip install deepspeed ninja",
                     "optax": "pip install optax"}
CONTENDER_NAMES = {"deepspeed": "DeepSpeed CPU " + "/".join(DEEPSPEED),
                   "optax": "optax (jax.jit)"}


def find_contenders(use_torch: bool = True, wanted=None) -> tuple[list, dict]:
    """The optional contenders importable here, and why each other one is
    not: ``(["deepspeed", "optax"], {})`` with both installed.  ``wanted``:
    the contenders to look for (default: all).  DeepSpeed needs torch
    (``use_torch=False`` leaves it out); it is imported with
    ``DS_ACCELERATOR=cpu`` unless the environment sets another."""
    import importlib

    found, missing = [], {}
    for name in CONTENDER_INSTALL if wanted is None else wanted:
        if name == "deepspeed" and not use_torch:
            missing[name] = "--no-torch"
            continue
        if name == "deepspeed":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        try:
            importlib.import_module("deepspeed.ops.adam" if name == "deepspeed" else name)
        except Exception as error:          # not installed, or broken: never an error here
            missing[name] = f"{type(error).__name__}: {error}".splitlines()[0][:100]
        else:
            found.append(name)
    return found, missing


def deepspeed_step(name: str, options: dict, values: list, grad_sets: list, new_grads: bool):
    """One step of DeepSpeed's CPU optimizer for ``name`` over torch copies
    of ``values`` (None where DeepSpeed has no such optimizer, or for
    float64, which its CPU kernels refuse).  Raises what DeepSpeed raises
    (its extension does not build, ...)."""
    if name not in DEEPSPEED or np.dtype(values[0].dtype) == np.float64:
        return None                         # its CPU kernels take float32 and half types
    import importlib

    import torch

    module, cls, extra = DEEPSPEED[name]
    tparams = [torch.nn.Parameter(torch.from_numpy(np.array(v))) for v in values]
    tgrads = [[torch.from_numpy(g) for g in gs] for gs in grad_sets]
    for t, g in zip(tparams, tgrads[0]):
        t.grad = g
    opt = getattr(importlib.import_module(module), cls)(
        tparams, lr=options["lr"], **extra)
    opt.step()                              # builds or loads the extension; checks the dtype
    return _with_new_grads(opt.step, tparams, tgrads) if new_grads else opt.step


def optax_step(name: str, options: dict, values: list, grad_sets: list, new_grads: bool):
    """One jitted optax step (update, then apply) for ``name`` over jax
    copies of ``values``, parameters and state donated so that XLA updates
    them in place, waited for with ``block_until_ready`` (None where optax
    has no such algorithm, or the dtype is float64 without
    ``JAX_ENABLE_X64``: jax would compute in float32)."""
    import jax
    import jax.numpy as jnp
    import optax

    transform = _optax_transform(name, options)
    if transform is None:
        return None
    if np.dtype(values[0].dtype) == np.float64 and not jax.config.jax_enable_x64:
        return None
    params = [jnp.asarray(v) for v in values]
    jgrads = [[jnp.asarray(g) for g in gs] for gs in grad_sets]

    def update(params, state, grads):
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(update, donate_argnums=(0, 1))
    box = [params, transform.init(params), 0]

    def step():
        if new_grads:
            box[2] ^= 1
        box[0], box[1] = jitted(box[0], box[1], jgrads[box[2]])
        jax.block_until_ready(box[:2])
    step()                                  # compiles
    return step


def state_arrays(opt) -> int:
    """How many per-element state arrays ``opt``'s first group keeps."""
    from nbopt.registry import get

    group = opt.param_groups[0]
    return sum(s.wanted(group) for s in get(opt._algorithm).state)


def bytes_per_element(n_state: int, dtype) -> int:
    """Bytes a step moves per element: it reads the parameter, the gradient
    and each state array and writes the parameter and each state array."""
    return (2 * n_state + 3) * np.dtype(dtype).itemsize


def parse_workload(text: str) -> tuple[int, int, bool, str | None, bool]:
    """'1000x1k@arena' -> (1000, 1000, True, None, False); '10M@f64' -> (1, 10**7, False,
    'float64', False); '1k@newgrads' -> (1, 1000, False, None, True); '100x(1024x1024)'
    -> (100, 1048576, False, None, False) (its shape: :func:`workload_shape`)."""
    base, *tags = text.split("@")
    shape = workload_shape(text)
    count, each = (shape[0], int(np.prod(shape[1]))) if shape else parse_size(base)
    arena = "arena" in tags
    new_grads = "newgrads" in tags
    dtype = "float64" if "f64" in tags else "float32" if "f32" in tags else None
    unknown = set(tags) - {"arena", "f64", "f32", "newgrads"}
    if unknown:
        raise argparse.ArgumentTypeError(f"bad workload tag(s) {sorted(unknown)} in {text!r}: "
                                         "use @arena, @f64, @f32 or @newgrads")
    if arena and new_grads:
        raise argparse.ArgumentTypeError(f"{text!r}: an arena's gradients are written in "
                                         "place; @newgrads is for separate arrays")
    return count, each, arena, dtype, new_grads


_MATRIX = re.compile(r"(\d+(?:\.\d+)?[kKmMgG]?)x\((.+)\)")


def workload_shape(text: str) -> tuple[int, tuple[int, ...]] | None:
    """'100x(1024x1024)@f64' -> (100, (1024, 1024)); None for a workload of
    1-D arrays ('1000x1k')."""
    m = _MATRIX.fullmatch(text.split("@")[0])
    if not m:
        return None
    count = parse_size(m.group(1))[1]
    dims = tuple(parse_size(d)[1] for d in m.group(2).split("x"))
    return count, dims


def parse_size(text: str) -> tuple[int, int]:
    """'10M' -> (1, 10_000_000); '1000x1k' -> (1000, 1000)."""
    def number(s: str) -> int:
        try:
            return size(s)           # the counts every command reads (>= 1)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"bad size {text!r}: use e.g. 10M, 100x100k, 1k (counts >= 1)") from None
    count, _, each = text.partition("x")
    return (number(count), number(each)) if each else (1, number(count))


def workload_list(text: str) -> list[str]:
    """The argparse type of ``--sizes``: comma-separated workloads, each
    checked by :func:`parse_workload` (commas inside ``(MxN)`` do not split)."""
    items = [s.strip() for s in re.split(r",(?![^(]*\))", text) if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated workloads, got {text!r}")
    for item in items:
        parse_workload(item)
    return items


workload_list.__name__ = "workload list"


# Warm-up of every callable before timing: this many calls (nbopt's second
# serial/parallel measurement ends at a plan's 72nd step), or fewer (at
# least 3) once this many seconds have passed
WARMUP_CALLS = 80
WARMUP_S = 0.15


def _interleaved_medians(fns: dict, repeat: int, budget: float = 3.0) -> dict:
    """Median time per call of each callable, measured in interleaved rounds so
    that drifts of the machine hit all of them alike, the order rotating
    from round to round.

    In each round every callable runs one untimed call, then a timed block of
    calls lasting about 2 ms: the untimed call absorbs the switch from the
    previous callable (torch's OpenMP threads keep spinning for a while after
    its steps and would otherwise be charged to the next one).
    """
    blocks = {}
    for name, fn in fns.items():
        # compile / first-touch outside the measurement: an optimizer's
        # first steps create its state, then its steady plan (which loads
        # compiled helpers), each slower than the steps that follow; a
        # training loop's steady state comes later still: nbopt measures
        # its serial and parallel builds over a plan's first steps and
        # again 48 steps later (see nbopt.engine.REMEASURE_FIRST), so
        # every callable warms up over WARMUP_CALLS calls or WARMUP_S
        warm = time.perf_counter() + WARMUP_S
        for k in range(WARMUP_CALLS):
            fn()
            if k >= 2 and time.perf_counter() > warm:
                break
        one = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn()
            one = min(one, time.perf_counter() - t)
        blocks[name] = int(min(200, max(1, 2e-3 // max(one, 1e-7))))
    times = {name: [] for name in fns}
    start = time.perf_counter()
    names = list(fns)
    for r in range(repeat):
        # each round starts one later in the order: every callable follows
        # each other one in some rounds (a pool's spinning threads, a
        # contender's freed temporaries weigh on whatever runs next)
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[name]
            fn()
            k = blocks[name]
            t = time.perf_counter()
            for _ in range(k):
                fn()
            times[name].append((time.perf_counter() - t) / k)
        if time.perf_counter() - start > budget and len(times[name]) >= 5:
            break
    return {name: float(np.median(ts)) for name, ts in times.items()}


def _workload(count: int, each, dtype, seed: int = 0):
    """``count`` parameters and gradients of ``each`` elements (or shape)."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(each).astype(dtype) for _ in range(count)]
    grads = [rng.standard_normal(each).astype(dtype) for _ in range(count)]
    return values, grads


def _with_new_grads(step, params, grad_sets):
    """``step`` preceded by assigning the other of two gradient sets (new
    array objects every step, as a training loop that computes its gradients
    does)."""
    turn = [0]

    def run():
        turn[0] ^= 1
        for p, g in zip(params, grad_sets[turn[0]]):
            p.grad = g
        return step()
    return run


def adafactor_bytes(matrices: bool) -> int:
    """Accesses per element Adafactor cannot avoid: it reads the parameter and
    the gradient and writes the parameter (its row and column factors are
    negligible); a vector (0-d/1-D) also reads and writes its variance."""
    return 3 if matrices else 5


def bench_one(name: str, options: dict, count: int, each: int, dtype: str, repeat: int,
              torch_modes: bool, arena: bool = False, new_grads: bool = False,
              shape: tuple | None = None, contenders: tuple = (),
              kernel_floor: bool = True) -> dict:
    """One row: nbopt's step, the bandwidth floor (``floor_s``), the kernel
    floor (``kernel_floor_s``, the fastest of the variants of
    :func:`kernel_floor_calls`, named by ``kernel_floor_mode``; absent for
    algorithms without element-wise kernels), torch's modes and the
    importable ``contenders`` (``"deepspeed"``, ``"optax"``: ``<name>_s``
    where they have the algorithm; ``contender_errors`` says why one that
    has it could not run).  ``shape``: each parameter's shape (``each``
    elements), else 1-D."""
    import nbopt

    values, grads = _workload(count, shape or each, dtype)
    if arena:
        store = nbopt.ParameterArena(values, dtype=dtype)
        params = store.params
        for p, g in zip(params, grads):
            p.grad[...] = g          # in place: the arena's fast path
    else:
        params = [nbopt.Parameter(v.copy()) for v in values]
        for p, g in zip(params, grads):
            p.grad = g
    opt = getattr(nbopt, name)(params, **options)
    label = (f"{count}x({'x'.join(map(str, shape))})" if shape else f"{count}x{each}") \
        + ("@arena" if arena else "") + ("@newgrads" if new_grads else "")
    row = {"algorithm": name, "workload": label, "dtype": dtype, "elements": count * each}
    grad_sets = [grads, [g.copy() for g in grads]]
    fns = {"nbopt_s": _with_new_grads(opt.step, params, grad_sets) if new_grads else opt.step}

    total = count * each
    if name == "Adafactor":
        # the same streams with Adafactor's accesses: p, g -> p (matrices),
        # p, g, variance -> p, variance (vectors)
        n_state = 0 if shape is not None and len(shape) > 1 else 1
        assert bytes_per_element(n_state, dtype) == adafactor_bytes(n_state == 0) * \
            np.dtype(dtype).itemsize
    else:
        n_state = state_arrays(opt)
    fns["floor_s"] = bandwidth_floor_call(n_state, total, dtype)
    row["bytes_per_element"] = bytes_per_element(n_state, dtype)
    if kernel_floor:
        for variant, call in kernel_floor_calls(name, options, values, grads, dtype).items():
            fns[f"kernel_floor_{variant}_s"] = call
    errors = {}
    for contender in contenders:
        make = {"deepspeed": deepspeed_step, "optax": optax_step}[contender]
        try:
            step = make(name, options, values, grad_sets, new_grads)
        except Exception as error:          # a contender's failure is reported, never raised
            errors[contender] = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            continue
        if step is not None:
            fns[f"{contender}_s"] = step
    if errors:
        row["contender_errors"] = errors

    if torch_modes:
        import torch

        modes = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}}
        if name in ("SGD", "Adam", "AdamW", "Adagrad"):
            modes["fused"] = {"fused": True}
        for mode, extra in modes.items():
            tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
            for t, g in zip(tparams, grads):
                t.grad = torch.from_numpy(g)
            topt = getattr(torch.optim, name)(tparams, **options, **extra)
            fns[f"torch_{mode}_s"] = topt.step if not new_grads else _with_new_grads(
                topt.step, tparams, [[torch.from_numpy(g) for g in gs] for gs in grad_sets])
    row.update(_interleaved_medians(fns, repeat))
    variants = {k: v for k, v in row.items() if k.startswith("kernel_floor_")}
    if variants:
        best = min(variants, key=variants.get)
        row["kernel_floor_s"] = variants[best]
        row["kernel_floor_mode"] = best[len("kernel_floor_"):-2]
    return row


def bench_muon(options: dict, count: int, shape: tuple, dtype: str, repeat: int,
               torch_modes: bool) -> dict:
    """``nbopt.Muon`` over ``count`` matrices of ``shape``, next to
    ``torch.optim.Muon`` (its only mode: no foreach or fused), with the share
    of each step spent in the matrix products: nbopt's GEMM kernels (timed
    around each call), and torch's Newton-Schulz function (its matrix
    products plus one norm).  nbopt is timed with both product paths
    (``config.MUON_PRODUCTS``: ``"torch"``, the default, and ``"blas"``).
    A step takes seconds, so each side runs one
    untimed step (compilation, state) and then ``min(repeat, 3)`` timed
    rounds, alternating; the medians are reported."""
    import nbopt
    from nbopt.kernels import muon as kernels

    values, grads = _workload(count, shape, dtype)
    params = [nbopt.Parameter(v.copy()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    opt = nbopt.Muon(params, **options)
    label = f"{count}x({'x'.join(map(str, shape))})"
    row = {"algorithm": "Muon", "workload": label, "dtype": dtype,
           "elements": count * int(np.prod(shape))}
    torch_step = None
    ns_seconds = [0.0]
    if torch_modes:
        import torch
        import torch.optim._muon as torch_muon

        tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
        for t, g in zip(tparams, grads):
            t.grad = torch.from_numpy(g)
        topt = torch.optim.Muon(tparams, **options)
        original = torch_muon._zeropower_via_newtonschulz

        def timed_ns(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                ns_seconds[0] += time.perf_counter() - start

        def step_with_timed_ns():
            torch_muon._zeropower_via_newtonschulz = timed_ns
            try:
                topt.step()
            finally:
                torch_muon._zeropower_via_newtonschulz = original
        torch_step = step_with_timed_ns

    from nbopt import config

    def timed_step(products: str) -> tuple:
        """Seconds of one step with ``config.MUON_PRODUCTS = products``, and
        the share spent in the matrix products."""
        saved = config.MUON_PRODUCTS
        config.MUON_PRODUCTS = products
        kernels.matmul_seconds[0] = 0.0
        kernels._PROFILE[0] = True
        try:
            start = time.perf_counter()
            opt.step()
            seconds = time.perf_counter() - start
        finally:
            kernels._PROFILE[0] = False
            config.MUON_PRODUCTS = saved
        return seconds, kernels.matmul_seconds[0] / seconds

    timed_step("torch")
    timed_step("blas")
    if torch_step:
        torch_step()
    ours, ours_mm, blas, blas_mm, theirs, theirs_ns = [], [], [], [], [], []
    for _ in range(max(1, min(repeat, 3))):
        for times, fractions, products in ((ours, ours_mm, "torch"), (blas, blas_mm, "blas")):
            seconds, fraction = timed_step(products)
            times.append(seconds)
            fractions.append(fraction)
        if torch_step:
            ns_seconds[0] = 0.0
            start = time.perf_counter()
            torch_step()
            theirs.append(time.perf_counter() - start)
            theirs_ns.append(ns_seconds[0] / theirs[-1])
    row["nbopt_s"] = float(np.median(ours))
    row["matmul_fraction"] = float(np.median(ours_mm))
    row["nbopt_blas_s"] = float(np.median(blas))
    row["blas_matmul_fraction"] = float(np.median(blas_mm))
    if theirs:
        row["torch_s"] = float(np.median(theirs))
        row["torch_newton_schulz_fraction"] = float(np.median(theirs_ns))
        row["torch_over_nbopt"] = row["torch_s"] / row["nbopt_s"]
        row["torch_over_nbopt_blas"] = row["torch_s"] / row["nbopt_blas_s"]
    return row


def _muon_line(row: dict) -> str:
    def fmt(s: float) -> str:
        return f"{s:.3f} s" if s >= 1 else _fmt_time(s).strip()

    line = (f"{row['algorithm']:<10}{row['workload']:>17}{'f' + row['dtype'][5:]:>8}"
            f"{fmt(row['nbopt_s']):>13}  {row['matmul_fraction']:.0%} in matrix products"
            f"; MUON_PRODUCTS=blas {fmt(row['nbopt_blas_s'])} "
            f"({row['blas_matmul_fraction']:.0%})")
    if "torch_s" in row:
        line += (f"; torch {fmt(row['torch_s'])} "
                 f"({row['torch_newton_schulz_fraction']:.0%} in Newton-Schulz), "
                 f"torch/nbopt {row['torch_over_nbopt']:.2f}x, "
                 f"blas {row['torch_over_nbopt_blas']:.2f}x")
    return line


_FIRST_STEP = """
import time, numpy as np
t0 = time.perf_counter()
import nbopt
w = nbopt.Parameter(np.zeros(1000, np.float32)); w.grad = np.ones(1000, np.float32)
opt = nbopt.{name}([w], lr=1e-3)
t1 = time.perf_counter()
opt.step()
print(time.perf_counter() - t1)
"""


# The same first step, split: Numba's own start-up (importing numba and
# initialising its CPU target: typing and lowering registries, and
# numba.np.arraymath imports scipy.linalg, when installed, to look for BLAS),
# which any first Numba call in a process pays, then the rest of the step.
_FIRST_STEP_SPLIT = _FIRST_STEP.replace("opt.step()", """import numba
from numba.core.registry import cpu_target
cpu_target.target_context.refresh()
t2 = time.perf_counter()
opt.step()""").replace("print(time.perf_counter() - t1)",
                       "print(time.perf_counter() - t1, t2 - t1)")


def _matrix_if_needed(name: str, code: str) -> str:
    """The first-step script with a 25 x 40 parameter (1000 elements) for the
    algorithms that step matrices only."""
    if name not in MATRIX_ONLY:
        return code
    return code.replace("(1000, np.float32)", "((25, 40), np.float32)")


def _run_python(code: str, env: dict | None = None) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    return out.stdout.strip()


def _import_time(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; " \
           "print(time.perf_counter() - t)"
    return min(float(_run_python(code)) for _ in range(3))


def measure_startup(name: str = "Adam") -> dict:
    """Import time of nbopt next to numba's, and the first step of ``name`` in a
    new process with an empty and with a filled Numba cache (fresh processes)."""
    import os
    import tempfile

    row = {"algorithm": name, "import_nbopt_s": _import_time("nbopt"),
           "import_numba_s": _import_time("numba")}
    row["import_extra_s"] = row["import_nbopt_s"] - row["import_numba_s"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        code = _matrix_if_needed(name, _FIRST_STEP.format(name=name))
        row["first_step_cold_s"] = float(_run_python(code, env))
        split = _matrix_if_needed(name, _FIRST_STEP_SPLIT.format(name=name))
        runs = [tuple(map(float, _run_python(split, env).split())) for _ in range(3)]
    total, numba_part = min(runs)
    row["first_step_cached_s"] = total
    row["numba_startup_s"] = numba_part
    row["first_step_cached_nbopt_s"] = total - numba_part
    return row


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:9.3f} ms" if s >= 1e-3 else f"{s * 1e6:9.1f} us"


def _parser() -> Parser:
    parser = Parser(prog="python -m nbopt bench", description=__doc__)
    parser.add_argument("--algorithms", type=names(ALGORITHMS, "algorithm"),
                        help="comma-separated class names (default: "
                             + ",".join(n for n in ALGORITHMS if n not in MATRIX_ONLY)
                             + f", without {' and '.join(CPU_ONLY)} with --device cuda; also "
                             f"{', '.join(MATRIX_ONLY)}, on {','.join(DEFAULT_MATRIX_SIZES)} "
                             "unless --sizes has COUNTx(MxN) workloads)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: device parameters on the current GPU against a CUDA "
                             "floor kernel and torch's CUDA optimizers (needs numba-cuda; "
                             "runs under NUMBA_ENABLE_CUDASIM=1 too, with meaningless "
                             "timings) (default: %(default)s)")
    parser.add_argument("--sizes", type=workload_list,
                        help="comma-separated workloads: N or COUNTxN with k/M suffixes, "
                             "COUNTx(MxN) for COUNT m x n matrices (any number of dims), "
                             "optionally @arena (one ParameterArena), @f64, and "
                             "@newgrads (new gradient arrays assigned before every step, "
                             f"reported without a target) (default: {','.join(DEFAULT_SIZES)}; "
                             f"with --device cuda: {','.join(DEFAULT_CUDA_SIZES)})")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="dtype of the workloads without @f64 / @f32")
    parser.add_argument("--repeat", type=integer(1),
                        help="timed rounds per measurement (default: 30, with --device cuda 20)")
    add_torch_and_json(parser)
    parser.add_argument("--quiet-check", nargs="?", type=number(0), const=0.5, metavar="LOAD",
                        help="before timing, wait (up to --quiet-wait seconds) until the "
                             "1-minute load average is at most LOAD (default 0.5) and say "
                             "whether it got there")
    parser.add_argument("--quiet-wait", type=number(0), default=300.0, metavar="SECONDS",
                        help="longest wait of --quiet-check (default: %(default)s)")
    parser.add_argument("--no-contenders", action="store_true",
                        help="skip the optional contenders even if importable: DeepSpeed's "
                             "CPU Adam/AdamW/Adagrad (DS_ACCELERATOR=cpu pip install "
                             "deepspeed ninja; needs torch) and optax under jax.jit (pip "
                             "install optax); torch's modes stay (--no-torch)")
    parser.add_argument("--skip-startup", action="store_true",
                        help="skip the import-time and first-step compile measurements "
                             "(CPU only: --device cuda never runs them)")
    return parser


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


# Arrays a workload allocates per element, counted in parameter-sized arrays:
# values, gradients and their second set, the parameters, up to 4 state
# arrays, the bandwidth floor's up to 6 streams, the kernel floor's up to 6,
# torch's copies (parameters and 4 state arrays in 3 modes), DeepSpeed's
# (parameters, 2 gradient sets, 2 state arrays) and optax's (parameters, 2
# gradient sets, up to 3 state arrays, the jitted step's temporaries).  An
# estimate that errs high: a workload beyond the machine's memory is refused
# before anything is printed, instead of a MemoryError traceback halfway
# through the table.
ARRAYS_PER_ELEMENT = 48


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    on_gpu = args.device == "cuda"
    names = args.algorithms or [n for n in ALGORITHMS
                                if n not in (CPU_ONLY if on_gpu else MATRIX_ONLY)]
    sizes = list(args.sizes or (DEFAULT_CUDA_SIZES if on_gpu else DEFAULT_SIZES))
    if any(n in MATRIX_ONLY for n in names) and not any(workload_shape(s) for s in sizes):
        sizes += DEFAULT_MATRIX_SIZES
    workloads = [parse_workload(s) for s in sizes]
    shapes = [workload_shape(s) for s in sizes]
    if args.repeat is None:
        args.repeat = 20 if on_gpu else 30
    if on_gpu and (set(CPU_ONLY) & set(names) or any(shapes)):
        parser.error("--device cuda: the CUDA bench has the element-wise algorithms only "
                     "(Adafactor, Muon and COUNTx(MxN) workloads: CPU bench)")
    for (count, each, arena, dtype, new_grads), shape, text in zip(workloads, shapes, sizes):
        if shape and (arena or new_grads):
            parser.error(f"argument --sizes: {text!r}: COUNTx(MxN) workloads are separate "
                         "matrices with gradients written in place (no @arena, @newgrads)")
        if shape and "Muon" in names and len(shape[1]) != 2:
            parser.error(f"argument --sizes: {text!r}: Muon steps 2-D matrices only")
        need = count * each * np.dtype(dtype or args.dtype).itemsize * ARRAYS_PER_ELEMENT
        have = _memory_bytes()
        if have is not None and need > have and not on_gpu:
            parser.error(f"argument --sizes: {text!r} needs about {need / 2**30:.0f} GiB, "
                         f"more than this machine's {have / 2**30:.0f} GiB")
    for name in names:
        if not any(_runs(name, shape) for shape in shapes):
            parser.error(f"nothing to measure for {name}: "
                         + ("it steps COUNTx(MxN) workloads only" if name in MATRIX_ONLY else
                            "COUNTx(MxN) workloads are for Adafactor and Muon; add a workload "
                            "of 1-D arrays (e.g. 1M)"))
    if args.quiet_check is not None:
        wait_until_quiet(args.quiet_check, args.quiet_wait)
    with compile_notice():  # one line on stderr when the first kernel compiles
        return _measure(parser, args, names, workloads, shapes, on_gpu)


def _measure(parser, args, names, workloads, shapes, on_gpu) -> int:
    if on_gpu:
        try:
            from nbopt.cli.bench_cuda import run, unavailable
        except ImportError as error:
            parser.error(f"--device cuda needs numba-cuda (pip install 'nbopt[cuda]'): {error}")
        why = unavailable()
        if why:
            parser.error(f"--device cuda: {why}")
        rows = run(names, workloads, args.dtype, args.repeat, not args.no_torch)
        _write_json(args.json, rows)
        return 0
    torch_modes = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            torch_modes = True
        except ImportError:
            print("torch is not importable: reporting nbopt and the floors only")

    contenders, missing = [], {}
    if not args.no_contenders:
        # the contenders that have one of the algorithms measured
        tables = {"deepspeed": DEEPSPEED, "optax": OPTAX}
        wanted = [c for c in CONTENDER_INSTALL if any(n in tables[c] for n in names)]
        if wanted:
            contenders, missing = find_contenders(torch_modes, wanted)
    active = list(contenders)

    import numba

    print(f"nbopt bench: {numba.get_num_threads()} threads (set NUMBA_NUM_THREADS or "
          f"nbopt.set_num_threads)")
    shown = (["torch (for-loop, foreach, fused)"] if torch_modes else []) + \
        [CONTENDER_NAMES[c] for c in contenders]
    print("contenders: " + (", ".join(shown) if shown else "none"))
    if missing:
        print("left out: " + "; ".join(
            f"{c} ({'--no-torch' if why == '--no-torch' else 'not importable: ' + why}; "
            f"{CONTENDER_INSTALL[c]})" for c, why in missing.items()))
    rows = []
    unreachable = False
    if any(n not in MATRIX_ONLY for n in names):
        print("bw floor: the step's reads and writes in a Numba loop; kern floor: the "
              "algorithm's own kernels over one flat array\n(fastest of serial and parallel); "
              "target: us per step or nbopt / that floor; contenders: time and nbopt's "
              "speedup\n(target >= 1x, >= 3x torch's non-fused modes)")
        print(_header(torch_modes, contenders))
    for name in names:
        for (count, each, arena, dtype, new_grads), shape in zip(workloads, shapes):
            dtype = dtype or args.dtype
            if not _runs(name, shape):
                continue
            if name in MATRIX_ONLY:
                row = bench_muon(ALGORITHMS[name], shape[0], shape[1], dtype, args.repeat,
                                 torch_modes)
                rows.append(row)
                print(_muon_line(row), flush=True)
                continue
            row = bench_one(name, ALGORITHMS[name], count, each, dtype, args.repeat,
                            torch_modes, arena, new_grads, shape[1] if shape else None,
                            tuple(active))
            judge(row, name, count, each, arena, dtype, new_grads, torch_modes, contenders)
            unreachable |= row.get("torch_verdict") == "NO*"
            rows.append(row)
            print(_line(row, torch_modes, contenders), flush=True)
            # a contender that failed is not tried again (its column stays, with "-")
            for contender, error in row.get("contender_errors", {}).items():
                print(f"{contender} failed, left out from here on: {error}", flush=True)
                active.remove(contender)
    if unreachable:
        print("NO*: torch's fastest mode itself runs within the target ratio of the bandwidth "
              "floor, so the target would need nbopt below that floor (torch_best_over_floor "
              "in --json)")
    if not args.skip_startup:
        startup = measure_startup(names[0] if names else "Adam")
        rows.append(startup)
        print(f"\nimport nbopt {startup['import_nbopt_s']:.3f} s, import numba "
              f"{startup['import_numba_s']:.3f} s: +{startup['import_extra_s']:.3f} s "
              f"(target <= +0.1 s) {'ok' if startup['import_extra_s'] <= 0.1 else 'NO'}")
        print(f"first {startup['algorithm']} step in a new process: cold compile "
              f"{startup['first_step_cold_s']:.2f} s (target <= 3 s) "
              f"{'ok' if startup['first_step_cold_s'] <= 3 else 'NO'}; with the on-disk cache "
              f"{startup['first_step_cached_s']:.3f} s (target <= 0.2 s) "
              f"{'ok' if startup['first_step_cached_s'] <= 0.2 else 'NO'}: of which Numba's "
              f"own start-up (import + CPU target init) {startup['numba_startup_s']:.3f} s, "
              f"nbopt's share {startup['first_step_cached_nbopt_s']:.3f} s")
    _write_json(args.json, rows)
    return 0


_TARGET_TEXT = {"us": "<= {:g} us", "kernel": "<= {:g}x kernel floor",
                "bandwidth": "<= {:g}x bandwidth floor"}
_TARGET_SHORT = {"us": "{:g} us", "kernel": "{:g}x kern", "bandwidth": "{:g}x bw"}


def judge(row: dict, name: str, count: int, each: int, arena: bool, dtype: str,
          new_grads: bool, torch_modes: bool = False, contenders=()) -> dict:
    """Add to a :func:`bench_one` row its ratios and verdicts: nbopt / each
    floor (``nbopt_over_floor``, ``nbopt_over_kernel_floor``: None without a
    kernel floor), the workload's target (``target``, ``target_kind``,
    ``target_met``: None where there is none, as with new gradient arrays
    every step, which the targets do not assume), torch's best mode and
    nbopt's speedup over it, and each contender's speedup (``<name>_speedup``,
    ``<name>_target_met``: >= 1x)."""
    row["nbopt_over_floor"] = row["nbopt_s"] / row["floor_s"]
    kernel_floor = row.get("kernel_floor_s")
    row["nbopt_over_kernel_floor"] = row["nbopt_s"] / kernel_floor if kernel_floor else None
    kind, limit = target(name, count, each, arena, dtype)
    value = {"us": row["nbopt_s"] * 1e6, "kernel": row["nbopt_over_kernel_floor"],
             "bandwidth": row["nbopt_over_floor"]}.get(kind)
    if new_grads or value is None:
        row["target"] = row["target_kind"] = row["target_met"] = None
    else:
        row["target"] = _TARGET_TEXT[kind].format(limit)
        row["target_kind"] = kind
        row["target_met"] = bool(value <= limit)
        row["target_short"] = _TARGET_SHORT[kind].format(limit)
    if torch_modes:
        best = min((k for k in row if k.startswith("torch_") and k.endswith("_s")
                    and k != "torch_best_s"),
                   key=row.get)
        row["torch_best"] = best[6:-2]
        row["torch_best_s"] = row[best]
        row["torch_speedup"] = row[best] / row["nbopt_s"]
        row["torch_best_over_floor"] = row[best] / row["floor_s"]
        row["torch_verdict"] = torch_verdict(name, row["torch_speedup"],
                                             row["torch_best_over_floor"])
        row["torch_target_met"] = row["torch_verdict"] == "ok"
    for contender in contenders:
        if f"{contender}_s" in row:
            row[f"{contender}_speedup"] = row[f"{contender}_s"] / row["nbopt_s"]
            row[f"{contender}_target_met"] = row[f"{contender}_speedup"] >= 1.0
    return row


def _header(torch_modes: bool, contenders) -> str:
    line = (f"{'algorithm':<10}{'workload':>16}{'dtype':>6}{'nbopt':>12}{'bw floor':>12}"
            f"{'kern floor':>12}{'/bw':>8}{'/kern':>8}{'target':>12}   ")
    if torch_modes:
        line += f"{'torch best':>12}{'(mode)':>9}{'speedup':>9}{'target':>7}    "
    for contender in contenders:
        line += f"{contender:>12}{'speedup':>9}    "
    return line.rstrip()


def _line(row: dict, torch_modes: bool, contenders) -> str:
    """One table row of a judged :func:`bench_one` row (see :func:`_header`)."""
    def time(key):
        return _fmt_time(row[key]).strip() if row.get(key) else "-"

    def ratio(value):
        return f"{value:.2f}x" if value is not None else "-"

    met = row.get("target_met")
    line = (f"{row['algorithm']:<10}{row['workload']:>16}{'f' + row['dtype'][5:]:>6}"
            f"{time('nbopt_s'):>12}{time('floor_s'):>12}{time('kernel_floor_s'):>12}"
            f"{ratio(row['nbopt_over_floor']):>8}{ratio(row['nbopt_over_kernel_floor']):>8}"
            f"{row.get('target_short', '-') if met is not None else '-':>12}"
            f" {'' if met is None else 'ok' if met else 'NO':<2}")
    if torch_modes:
        line += (f"{time('torch_best_s'):>12}{row['torch_best']:>9}"
                 f"{ratio(row['torch_speedup']):>9}{torch_target(row['algorithm']):>6g}x"
                 f" {row['torch_verdict']:<3}")
    for contender in contenders:
        speedup = row.get(f"{contender}_speedup")
        verdict = "" if speedup is None else "ok" if speedup >= 1.0 else "NO"
        line += f"{time(contender + '_s'):>12}{ratio(speedup):>9} {verdict:<3}"
    return line.rstrip()


def _runs(name: str, shape) -> bool:
    """Whether algorithm ``name`` is measured on a workload of ``shape``
    (None: 1-D arrays): matrices are Adafactor's and Muon's, elements the others'."""
    if name in MATRIX_ONLY:
        return bool(shape) and len(shape[1]) == 2
    return not shape or name == "Adafactor"


def _write_json(path: str | None, rows: list) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=2)
