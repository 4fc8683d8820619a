"""``python -m nbopt bench``: optimizer step time next to torch's and the
memory-bandwidth floor, measured in one run.

An element-wise step reads the parameter, the gradient and every state array
and writes the parameter and every state array back (Adam float32: 4 reads +
3 writes = 28 bytes per element).  The floor is the time a Numba loop with the
same read/write pattern takes over the same number of elements, measured in
the same run; the table reports nbopt / floor and torch / nbopt.
"""
from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np
from numba import njit, prange

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
}
DEFAULT_SIZES = ["10M", "100x100k", "1000x1k", "1k"]


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


def parse_size(text: str) -> tuple[int, int]:
    """'10M' -> (1, 10_000_000); '1000x1k' -> (1000, 1000)."""
    def number(s: str) -> int:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", s)
        if not m:
            raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 10M, 100x100k, 1k")
        scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2).lower()]
        return int(float(m.group(1)) * scale)
    count, _, each = text.partition("x")
    return (number(count), number(each)) if each else (1, number(count))


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


def _workload(count: int, each: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(each).astype(dtype) for _ in range(count)]
    grads = [rng.standard_normal(each).astype(dtype) for _ in range(count)]
    return values, grads


def bench_one(name: str, options: dict, count: int, each: int, dtype: str, repeat: int,
              torch_modes: bool) -> dict:
    import nbopt
    from nbopt.registry import get

    values, grads = _workload(count, each, dtype)
    params = [nbopt.Parameter(v.copy()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    opt = getattr(nbopt, name)(params, **options)
    row = {"algorithm": name, "workload": f"{count}x{each}", "dtype": dtype,
           "elements": count * each}
    fns = {"nbopt_s": opt.step}

    spec = get(opt._algorithm)
    n_state = sum(s.wanted(opt.param_groups[0]) for s in spec.state)
    total = count * each
    flat = [np.ones(total, dtype) for _ in range(n_state + 2)]
    flat[1] *= 1e-9
    fns["floor_s"] = lambda: _STREAMS[n_state + 1](*flat)
    row["bytes_per_element"] = (2 * n_state + 3) * np.dtype(dtype).itemsize

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
            fns[f"torch_{mode}_s"] = topt.step
    row.update(_interleaved_medians(fns, repeat))
    return row


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:9.3f} ms" if s >= 1e-3 else f"{s * 1e6:9.1f} us"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbopt bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help="comma-separated class names (default: %(default)s)")
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                        help="comma-separated workloads: N or COUNTxN, with k/M suffixes "
                             "(default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--no-torch", action="store_true", help="skip torch even if importable")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    names = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        parser.error(f"unknown algorithm(s) {unknown}; choose from {sorted(ALGORITHMS)}")
    sizes = [parse_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
    torch_modes = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            torch_modes = True
        except ImportError:
            print("torch is not importable: reporting nbopt and the floor only")

    import numba

    print(f"nbopt bench: {numba.get_num_threads()} threads, {args.dtype}")
    rows = []
    header = f"{'algorithm':<10}{'workload':>14}{'nbopt':>13}{'floor':>13}{'nbopt/floor':>13}"
    if torch_modes:
        header += f"{'torch best':>13}{'(mode)':>10}{'torch/nbopt':>13}"
    print(header)
    for name in names:
        for count, each in sizes:
            row = bench_one(name, ALGORITHMS[name], count, each, args.dtype, args.repeat,
                            torch_modes)
            rows.append(row)
            line = (f"{name:<10}{row['workload']:>14}{_fmt_time(row['nbopt_s']):>13}"
                    f"{_fmt_time(row['floor_s']):>13}{row['nbopt_s'] / row['floor_s']:>12.2f}x")
            if torch_modes:
                best = min((k for k in row if k.startswith("torch_")), key=row.get)
                line += (f"{_fmt_time(row[best]):>13}{best[6:-2]:>10}"
                         f"{row[best] / row['nbopt_s']:>12.2f}x")
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0
