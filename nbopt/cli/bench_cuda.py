"""``python -m nbopt bench --device cuda``: optimizer steps on device
parameters next to the GPU's memory-bandwidth floor and torch's CUDA
optimizers, measured in one run.

A step is bandwidth-bound on a GPU as on a CPU: it reads the parameter, the
gradient and every state array and writes the parameter and every state array
back (Adam float32: 28 bytes per element, :func:`nbopt.cli.bench.bytes_per_element`).
The floor is a grid-stride ``@cuda.jit`` kernel with that read/write pattern
and nothing else, over one flat array of the workload's elements, launched
with nbopt's threads per block: its GB/s is what the device sustains for the
pattern, and nbopt / floor is how much of it a step leaves unused.  Targets:
nbopt / floor <= 1/0.85 (85% of the floor's bandwidth) on separate arrays of
100k elements or more (the ``100M`` and ``1000x100k`` workloads), and
torch / nbopt >= 1.0 against torch's ``fused=True`` optimizers (SGD, Adam,
AdamW, Adagrad), >= 2 against ``foreach=True`` for the others ("NO*": out of
reach, that torch mode already runs within the target ratio of the floor).
Smaller arrays and arenas are reported without a floor target.

Times are wall-clock over blocks of steps between two ``cuda.synchronize()``
calls, the median over interleaved rounds (as the CPU bench): launches are
asynchronous, so a block measures what a training loop pays, the host's work
for one step overlapping the device's for the step before, and the closing
synchronization charges the block with all of its device work.  nbopt's
separate parameters view torch CUDA tensors when torch has CUDA (memory from
the allocator torch's own parameters come from), numba device arrays
otherwise; an arena is one numba device buffer.

Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels are Python
threads on the CPU: every code path runs (tiny sizes: this is how the command
is tested without a GPU), the timings mean nothing, and torch is skipped.
"""
from __future__ import annotations

import gc
import inspect
import time

import numba_cuda
import numpy as np
from numba import cuda

import nbopt

from .. import config
from .bench import (ALGORITHMS, FUSED, _fmt_time, _with_new_grads, bytes_per_element,
                    state_arrays, torch_verdict)
from ..kernels._cuda import MAX_BLOCKS, SIMULATED, fill

# nbopt / floor at most this (85% of the floor's bandwidth) on separate arrays
# of at least FLOOR_TARGET_ELEMENTS elements
FLOOR_TARGET = 1 / 0.85
FLOOR_TARGET_ELEMENTS = 100_000


def target(each: int, arena: bool, new_grads: bool) -> float | None:
    """The largest nbopt / floor the issue accepts for a workload, or None
    where it sets none (small arrays, arenas, new gradient arrays every step)."""
    if arena or new_grads or each < FLOOR_TARGET_ELEMENTS:
        return None
    return FLOOR_TARGET


def torch_target(name: str) -> tuple[str, float]:
    """The torch mode an algorithm is compared with and the torch / nbopt it
    must reach."""
    return ("fused", 1.0) if name in FUSED else ("foreach", 2.0)


def summarize(row: dict, each: int, arena: bool, new_grads: bool) -> dict:
    """Add bandwidths, ratios, targets and verdicts to ``row``, a row of
    median times (``floor_s``, ``nbopt_s``, ``torch_<mode>_s``)."""
    name = row["algorithm"]
    moved = row["bytes_per_element"] * row["elements"]
    row["floor_GBps"] = moved / row["floor_s"] / 1e9
    row["nbopt_GBps"] = moved / row["nbopt_s"] / 1e9
    row["nbopt_over_floor"] = row["nbopt_s"] / row["floor_s"]
    limit = target(each, arena, new_grads)
    row["target"] = None if limit is None else f"<= {limit:.3g}x floor"
    row["target_met"] = None if limit is None else bool(row["nbopt_over_floor"] <= limit)
    mode, limit = torch_target(name)
    if f"torch_{mode}_s" not in row:
        mode = "foreach"        # this torch has no such fused kernel: its next best
    if f"torch_{mode}_s" in row:
        row["torch_reference"] = mode
        row["torch_over_nbopt"] = row[f"torch_{mode}_s"] / row["nbopt_s"]
        row["torch_over_floor"] = row[f"torch_{mode}_s"] / row["floor_s"]
        row["torch_target"] = f">= {limit:g}x torch {mode}"
        row["torch_verdict"] = torch_verdict(name, row["torch_over_nbopt"],
                                             row["torch_over_floor"], limit)
        row["torch_target_met"] = row["torch_verdict"] == "ok"
    return row


# The floor kernels, by number of state arrays: the parameter and each state
# array read and written, the gradient read, one dependent add per element so
# that nothing is optimised away (no constants: float32 stays float32).
@cuda.jit
def _floor_0(p, g):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[i] = p[i] + g[i]


@cuda.jit
def _floor_1(p, g, a):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        x = a[i] + g[i]
        a[i] = x
        p[i] = p[i] + x


@cuda.jit
def _floor_2(p, g, a, b):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        x = g[i]
        y = a[i] + x
        z = b[i] + x
        a[i] = y
        b[i] = z
        p[i] = p[i] + y + z


@cuda.jit
def _floor_3(p, g, a, b, c):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        x = g[i]
        y = a[i] + x
        z = b[i] + x
        w = c[i] + x
        a[i] = y
        b[i] = z
        c[i] = w
        p[i] = p[i] + y + z + w


_FLOORS = {0: _floor_0, 1: _floor_1, 2: _floor_2, 3: _floor_3}


def floor_step(n_state: int, total: int, dtype):
    """One call of the floor kernel over ``total`` elements (a closure over
    its arrays)."""
    arrays = [cuda.device_array(total, dtype) for _ in range(n_state + 2)]
    for a in arrays:
        fill(a, 0)
    fill(arrays[1], 1e-3)      # the gradient: small, so that sums stay finite
    threads = config.CUDA_THREADS
    blocks = max(1, min(-(-total // threads), MAX_BLOCKS))
    kernel = _FLOORS[n_state][blocks, threads]
    return lambda: kernel(*arrays)


def _medians(fns: dict, repeat: int, budget: float = 2.0, block: float = 5e-3) -> dict:
    """Median seconds per call of each callable over up to ``repeat``
    interleaved rounds (fewer past ``budget`` seconds, at least 5), after
    three untimed calls.  A round times a block of calls lasting about
    ``block`` seconds between two ``cuda.synchronize()`` calls (see the
    module docstring).

    ``cuda.synchronize()`` waits for the whole context: torch uses the same
    primary context as numba, so it waits for torch's launches too.
    """
    sizes = {}
    for name, fn in fns.items():
        # untimed: compilation, first touch, and nbopt's steady-step plan
        # (made at the second step, its checks compiled at the third)
        for _ in range(3):
            fn()
        cuda.synchronize()
        t = time.perf_counter()
        fn()
        cuda.synchronize()
        sizes[name] = int(min(100, max(1, block // max(time.perf_counter() - t, 1e-7))))
    times = {name: [] for name in fns}
    start = time.perf_counter()
    for _ in range(repeat):
        for name, fn in fns.items():
            k = sizes[name]
            t = time.perf_counter()
            for _ in range(k):
                fn()
            cuda.synchronize()
            times[name].append((time.perf_counter() - t) / k)
        if time.perf_counter() - start > budget and len(times[name]) >= 5:
            break
    return {name: float(np.median(ts)) for name, ts in times.items()}


def _host_data(total: int, dtype, seed: int = 0):
    """A workload's initial values and gradients, on the host: generated once
    per workload and uploaded for each contender, so all start alike."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(total, dtype=np.dtype(dtype)),
            rng.standard_normal(total, dtype=np.dtype(dtype)))


def _nbopt_step(name, values, grads, count, arena, new_grads, upload):
    """nbopt's optimizer over the workload's parameters on the device, and
    the callable that steps it."""
    if arena:
        store = nbopt.ParameterArena(np.split(values, count), dtype=values.dtype,
                                     device="cuda")
        store.grad.copy_to_device(grads)        # in place: the arena's fast path
        params = store.params
    else:
        params = [nbopt.Parameter(upload(v)) for v in np.split(values, count)]
        grad_sets = [[upload(g) for g in np.split(grads, count)] for _ in range(1 + new_grads)]
        for p, g in zip(params, grad_sets[0]):
            p.grad = g
    opt = getattr(nbopt, name)(params, **ALGORITHMS[name])
    return opt, _with_new_grads(opt.step, params, grad_sets) if new_grads else opt.step


def _torch_steps(torch, name, values, grads, count, new_grads) -> tuple[dict, dict]:
    """torch's CUDA optimizers over copies of the workload: ``fused=True``
    where torch has it and ``foreach=True``, as ``{"torch_<mode>_s": step}``,
    and ``{mode: error}`` for a mode this torch refuses."""
    modes = {"fused": {"fused": True}} if name in FUSED else {}
    modes["foreach"] = {"foreach": True}
    steps, errors = {}, {}
    for mode, extra in modes.items():
        tparams = [torch.nn.Parameter(torch.from_numpy(v).to("cuda"))
                   for v in np.split(values, count)]
        grad_sets = [[torch.from_numpy(g).to("cuda") for g in np.split(grads, count)]
                     for _ in range(1 + new_grads)]
        for t, g in zip(tparams, grad_sets[0]):
            t.grad = g
        try:
            topt = getattr(torch.optim, name)(tparams, **ALGORITHMS[name], **extra)
            topt.step()
        except (RuntimeError, TypeError, ValueError) as error:   # e.g. an older torch
            errors[mode] = f"{type(error).__name__}: {error}"
            continue
        steps[f"torch_{mode}_s"] = (_with_new_grads(topt.step, tparams, grad_sets)
                                    if new_grads else topt.step)
    return steps, errors


def bench_one(name: str, count: int, each: int, arena: bool, new_grads: bool, data,
              repeat: int, torch=None) -> dict:
    """One row: the floor, nbopt's step and torch's (``torch``: the module,
    or None) on ``data``, the workload's host values and gradients."""
    values, grads = data
    if torch is None:
        upload = cuda.to_device
    else:
        def upload(host):
            return torch.from_numpy(host).to("cuda")
    opt, step = _nbopt_step(name, values, grads, count, arena, new_grads, upload)
    n_state = state_arrays(opt)
    fns = {"floor_s": floor_step(n_state, count * each, values.dtype), "nbopt_s": step}
    errors = {}
    if torch is not None:
        steps, errors = _torch_steps(torch, name, values, grads, count, new_grads)
        fns.update(steps)
    label = f"{count}x{each}" + ("@arena" if arena else "") + ("@newgrads" if new_grads else "")
    row = {"algorithm": name, "workload": label, "dtype": values.dtype.name,
           "elements": count * each, "bytes_per_element": bytes_per_element(n_state, values.dtype)}
    row.update(_medians(fns, repeat))
    for mode, error in errors.items():
        row[f"torch_{mode}_error"] = error
    return summarize(row, each, arena, new_grads)


def _release(torch) -> None:
    """Give a measurement's device memory back before the next: numba's
    memory manager queues frees (flushed past 20% of the device's memory)
    and torch's allocator keeps freed blocks, so the arrays of 100M-element
    workloads would pile up."""
    gc.collect()            # optimizers and parameters may sit in reference cycles
    if not SIMULATED:
        # an external memory manager (an EMM plugin) frees at once: no queue
        pending = getattr(cuda.current_context().memory_manager, "deallocations", None)
        if pending is not None:
            pending.clear()
    if torch is not None:
        torch.cuda.empty_cache()


def unavailable() -> str | None:
    """Why the CUDA bench cannot run here, or None."""
    if SIMULATED or cuda.is_available():
        return None
    return ("no CUDA GPU is available (numba.cuda.is_available() is False); "
            "NUMBA_ENABLE_CUDASIM=1 runs it under the CUDA simulator")


def _torch(wanted: bool):
    """``(torch, None)``, or ``(None, why torch is skipped)``."""
    if not wanted:
        return None, "--no-torch"
    if SIMULATED:
        return None, "the CUDA simulator cannot step torch's CUDA tensors"
    try:
        import torch
    except ImportError:
        return None, "torch is not importable"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} has no CUDA"
    return torch, None


def _device_name() -> str:
    if SIMULATED:
        return "the CUDA simulator"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else name


def _line(row: dict, limit: float | None, with_torch: bool) -> str:
    goal = "-" if limit is None else f"{limit:.2f}x"
    verdict = "   " if limit is None else " ok" if row["target_met"] else " NO"
    line = (f"{row['algorithm']:<10}{row['workload']:>17}{'f' + row['dtype'][5:]:>6}"
            f"{row['floor_GBps']:>11.4g}{_fmt_time(row['nbopt_s']):>12}"
            f"{row['nbopt_over_floor']:>11.2f}x{goal:>7}{verdict}")
    if with_torch:
        times = [_fmt_time(row[k]) if k in row else "-"
                 for k in ("torch_fused_s", "torch_foreach_s")]
        line += f"{times[0]:>12}{times[1]:>12}"
        if "torch_reference" in row:
            mode, limit = torch_target(row["algorithm"])
            line += (f"{row['torch_over_nbopt']:>11.2f}x{limit:>4g}x "
                     f"{row['torch_reference']:<8}{row['torch_verdict']}")
    return line


def run(names: list, workloads: list, dtype: str, repeat: int, with_torch: bool = True) -> list:
    """Measure and print every (workload, algorithm); returns the rows."""
    start = time.perf_counter()
    torch, why = _torch(with_torch)
    print(f"nbopt bench --device cuda: {_device_name()}, numba-cuda {numba_cuda.__version__}, "
          f"{config.CUDA_THREADS} threads per block, chunks of {config.CUDA_CHUNK_SIZE} "
          "elements (NBOPT_CUDA_THREADS, NBOPT_CUDA_CHUNK_SIZE)")
    if SIMULATED:
        print("CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run as Python threads on the "
              "CPU; these timings mean nothing")
    if torch is None:
        print(f"torch skipped ({why}): reporting nbopt and the floor only")
    if any(arena for _, _, arena, _, _ in workloads) and \
            "device" not in inspect.signature(nbopt.ParameterArena).parameters:
        print("@arena workloads skipped: this nbopt's ParameterArena has no device='cuda'")
        workloads = [w for w in workloads if not w[2]]
    header = (f"{'algorithm':<10}{'workload':>17}{'dtype':>6}{'floor GB/s':>11}{'nbopt':>12}"
              f"{'nbopt/floor':>12}{'target':>10}")
    if torch is not None:
        header += f"{'fused':>12}{'foreach':>12}{'torch/nbopt':>12}{'target':>14}"
    print(header)
    rows, unreachable = [], False
    made = data = None
    for count, each, arena, wdtype, new_grads in workloads:
        if made != (count * each, wdtype or dtype):   # 100M normals take seconds: reuse them
            made = (count * each, wdtype or dtype)
            data = _host_data(*made)
        for name in names:
            row = bench_one(name, count, each, arena, new_grads, data, repeat, torch)
            _release(torch)
            print(_line(row, target(each, arena, new_grads), torch is not None), flush=True)
            for mode in ("fused", "foreach"):
                if f"torch_{mode}_error" in row:
                    print(f"  torch {mode} failed: {row[f'torch_{mode}_error']}")
            unreachable |= row.get("torch_verdict") == "NO*"
            rows.append(row)
    if unreachable:
        print("NO*: that torch mode itself runs within the target ratio of the floor, so the "
              "target would need nbopt below the floor (torch_over_floor in --json)")
    for kind in ("target_met", "torch_target_met"):
        judged = [r[kind] for r in rows if r.get(kind) is not None]
        if judged:
            print(f"{'floor' if kind == 'target_met' else 'torch'} targets met: "
                  f"{sum(judged)}/{len(judged)}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return rows
