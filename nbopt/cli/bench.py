"""``python -m nbopt bench``: optimizer step time next to torch's and the
memory-bandwidth floor, measured in one run.

An element-wise step reads the parameter, the gradient and every state array
and writes the parameter and every state array back (Adam float32: 4 reads +
3 writes = 28 bytes per element).  The floor is the time a Numba loop with the
same read/write pattern takes over the same number of elements, measured in
the same run; the table reports nbopt / floor and torch / nbopt, each next
to its target ("NO*": out of reach, torch's fastest mode already runs within
the target ratio of the floor).  The start-up lines time ``import nbopt``
against ``import numba`` and an algorithm's first step in new processes, cold
and with Numba's on-disk cache, split into Numba's own start-up and nbopt's.
``--device cuda`` measures device parameters on a GPU the same way, against a
CUDA floor kernel and torch's CUDA optimizers (:mod:`nbopt.cli.bench_cuda`).
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
DEFAULT_SIZES = ["10M", "100x100k", "1000x1k@arena", "1000x1k", "1k", "10M@f64"]
# --device cuda (nbopt/bench_cuda.py), which runs workload by workload: the
# two with targets first, so that a run cut short still reports them
DEFAULT_CUDA_SIZES = ["100M", "1000x100k", "10000x1k", "1000x100k@arena"]
# torch's fused kernels exist for these; nbopt must be >= 1.0x them, and >= 3x
# torch's fastest mode for every other algorithm
FUSED = ("SGD", "Adam", "AdamW", "Adagrad")


# Adafactor's targets (issue 14): >= 2x torch's fastest mode, none against
# the floor (its reductions take passes of their own)
TORCH_TARGETS = {"Adafactor": 2.0}


def target(name: str, count: int, each: int, arena: bool, dtype: str) -> tuple[str, float]:
    """The issue-7 target for a workload: ("floor", max nbopt/floor),
    ("us", max microseconds per step) or ("none", None)."""
    if name in TORCH_TARGETS:
        return "none", None
    if count == 1 and each <= 1000:
        return "us", 10.0
    if count == 1:
        return "floor", 1.15
    if each >= 100_000:
        return "floor", 1.2
    return "floor", 2.0 if arena else 4.0


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


def _interleaved_medians(fns: dict, repeat: int, budget: float = 3.0) -> dict:
    """Median time per call of each callable, measured in interleaved rounds so
    that drifts of the machine hit all of them alike.

    In each round every callable runs one untimed call, then a timed block of
    calls lasting about 2 ms: the untimed call absorbs the switch from the
    previous callable (torch's OpenMP threads keep spinning for a while after
    its steps and would otherwise be charged to the next one).
    """
    blocks = {}
    for name, fn in fns.items():
        fn()  # compile / first-touch outside the measurement
        t = time.perf_counter()
        fn()
        blocks[name] = int(min(200, max(1, 2e-3 // max(time.perf_counter() - t, 1e-7))))
    times = {name: [] for name in fns}
    start = time.perf_counter()
    for _ in range(repeat):
        for name, fn in fns.items():
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
              shape: tuple | None = None) -> dict:
    """``shape``: each parameter's shape (``each`` elements), else 1-D."""
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
    flat = [np.ones(total, dtype) for _ in range(n_state + 2)]
    flat[1] *= 1e-9
    fns["floor_s"] = lambda: _STREAMS[n_state + 1](*flat)
    row["bytes_per_element"] = bytes_per_element(n_state, dtype)

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
# arrays, the floor's up to 6 streams, and torch's copies (parameters and 4
# state arrays in 3 modes).  An estimate that errs high: a workload beyond
# the machine's memory is refused before anything is printed, instead of a
# MemoryError traceback halfway through the table.
ARRAYS_PER_ELEMENT = 30


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
            print("torch is not importable: reporting nbopt and the floor only")

    import numba

    print(f"nbopt bench: {numba.get_num_threads()} threads (set NUMBA_NUM_THREADS or "
          f"nbopt.set_num_threads)")
    rows = []
    unreachable = False
    header = (f"{'algorithm':<10}{'workload':>17}{'dtype':>8}{'nbopt':>12}{'floor':>12}"
              f"{'nbopt/floor':>12}{'target':>10}")
    if torch_modes:
        header += f"{'torch best':>12}{'(mode)':>9}{'torch/nbopt':>12}{'target':>8}"
    if any(n not in MATRIX_ONLY for n in names):
        print(header)
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
                            torch_modes, arena, new_grads, shape[1] if shape else None)
            ratio = row["nbopt_s"] / row["floor_s"]
            kind, limit = target(name, count, each, arena, dtype)
            if new_grads or kind == "none":
                # measured, no target (with new gradient arrays: the targets
                # assume in-place gradients)
                row["target"], row["target_met"] = None, None
                goal, verdict = "-", "   "
            else:
                met = row["nbopt_s"] * 1e6 <= limit if kind == "us" else ratio <= limit
                row["target"] = f"<= {limit:g} us" if kind == "us" else f"<= {limit:g}x floor"
                row["target_met"] = bool(met)
                goal = f"{limit:g}us" if kind == "us" else f"{limit:g}x"
                verdict = " ok" if met else " NO"
            line = (f"{name:<10}{row['workload']:>17}{'f' + dtype[5:]:>8}"
                    f"{_fmt_time(row['nbopt_s']):>12}{_fmt_time(row['floor_s']):>12}"
                    f"{ratio:>11.2f}x{goal:>7}{verdict}")
            if torch_modes:
                best = min((k for k in row if k.startswith("torch_")), key=row.get)
                speedup = row[best] / row["nbopt_s"]
                row["torch_best"] = best[6:-2]
                row["torch_best_over_floor"] = row[best] / row["floor_s"]
                verdict = torch_verdict(name, speedup, row["torch_best_over_floor"])
                row["torch_target_met"] = verdict == "ok"
                unreachable |= verdict == "NO*"
                line += (f"{_fmt_time(row[best]):>12}{best[6:-2]:>9}{speedup:>11.2f}x"
                         f"{torch_target(name):>6g}x {verdict}")
            rows.append(row)
            print(line, flush=True)
    if unreachable:
        print("NO*: torch's fastest mode itself runs within the target ratio of the floor, so "
              "the target would need nbopt below the floor (torch_best_over_floor in --json)")
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
