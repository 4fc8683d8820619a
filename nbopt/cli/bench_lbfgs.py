"""LBFGS per-iteration overhead, nbopt next to torch, measured in one run.

**Per-iteration overhead** is the time LBFGS itself spends per iteration: the
wall time of one ``step(closure)`` minus the time spent inside the closure
(timed from within it), divided by the number of iterations the step ran.
It covers the two-loop recursion over the history, gathering the gradients
into the flat vector, the parameter update, the line search's bookkeeping and
Python overhead, and nothing of the loss/gradient computation.

The workload is the quadratic ``f(x) = sum(a * x**2) / 2 - sum(b * x)`` over
one parameter of ``n`` elements (curvatures ``a`` in [1, 1000]); both
closures write the gradient into a preallocated array, and the tolerances are
negative so that every step runs exactly ``max_iter`` iterations.  Before
timing, ``warmup`` steps compile the kernels and fill the history, so the
figures are for a full history of ``history_size`` pairs.  nbopt and torch
steps are interleaved (one of each per round) and the median is reported.

The closures compute the loss without BLAS: after a call, OpenBLAS's worker
threads spin for a while, and on a machine with few cores they take the cores
that nbopt's parallel kernels need next (measured here, 2 cores, float64: the
overhead doubled when the closure called ``np.dot``).  A closure that uses
NumPy's BLAS heavily gets the same effect; ``OPENBLAS_NUM_THREADS=1`` (or
threadpoolctl) avoids it.
"""
from __future__ import annotations

import json
import time

import numpy as np

from ._common import Parser, add_torch_and_json, compile_notice, integer, names, size

__all__ = ["bench_lbfgs", "main"]


def _nbopt_runner(x0, a, b, options):
    import nbopt
    from nbopt.optim.lbfgs import LBFGS

    x = nbopt.Parameter(x0.copy())
    g = np.empty_like(x0)
    tmp = np.empty_like(x0)
    opt = LBFGS([x], **options)
    inside = [0.0]

    def closure():
        t0 = time.perf_counter()
        np.multiply(a, x, out=g)
        np.subtract(g, b, out=g)
        x.grad = g
        # not np.dot: OpenBLAS's threads spin after a call and would steal
        # the cores from the optimizer's threads (see the module docstring)
        np.subtract(g, b, out=tmp)
        np.multiply(tmp, x, out=tmp)
        loss = 0.5 * float(tmp.sum())
        inside[0] += time.perf_counter() - t0
        return loss

    return opt, x, closure, inside


def _torch_runner(x0, a, b, options):
    import torch

    x = torch.nn.Parameter(torch.from_numpy(x0.copy()))
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    g = torch.empty_like(at)
    tmp = torch.empty_like(at)
    opt = torch.optim.LBFGS([x], **options)
    inside = [0.0]

    @torch.no_grad()
    def closure():
        t0 = time.perf_counter()
        torch.mul(at, x, out=g)
        g.sub_(bt)
        x.grad = g
        torch.sub(g, bt, out=tmp)
        tmp.mul_(x)
        loss = 0.5 * float(tmp.sum())
        inside[0] += time.perf_counter() - t0
        return loss

    return opt, x, closure, inside


#: the parameter dtypes nbopt's LBFGS steps (float16 and the others are not floats it takes)
DTYPES = ("float32", "float64")


def bench_lbfgs(n: int = 1_000_000, dtypes=("float32", "float64"),
                line_search_fns=(None, "strong_wolfe"), history_size: int = 10,
                max_iter: int = 10, warmup: int = 3, repeat: int = 7, torch: bool | None = None,
                verbose: bool = True) -> list[dict]:
    """Measure LBFGS's per-iteration overhead for nbopt and torch (see the
    module docstring for the definition) and print a table.

    Parameters
    ----------
    n : int, default 1_000_000
        Elements of the single parameter.
    dtypes : sequence of str, default ("float32", "float64")
        Parameter dtypes to measure.
    line_search_fns : sequence, default (None, "strong_wolfe")
        ``line_search_fn`` values to measure.
    history_size : int, default 10
        LBFGS memory (the history is full during timing).  The cost of an
        iteration grows linearly with it: each pair is read twice.
    max_iter : int, default 10
        Iterations per ``step``.
    warmup : int, default 3
        Untimed steps first (JIT compilation, filling the history).
    repeat : int, default 7
        Timed steps per optimizer; the median is reported.
    torch : bool or None, default None
        Whether to measure torch too; None: when it is importable.
    verbose : bool, default True
        Print the table.

    Returns
    -------
    list of dict
        One row per (dtype, line search): ``nbopt_s`` and ``torch_s`` (seconds
        of overhead per iteration; ``torch_s`` absent without torch),
        ``nbopt_iters`` / ``torch_iters`` (iterations per step) and the
        workload.

    Examples
    --------
    >>> from nbopt.cli.bench_lbfgs import bench_lbfgs
    >>> rows = bench_lbfgs(n=1000, dtypes=("float64",), line_search_fns=(None,),
    ...                    warmup=1, repeat=1, torch=False, verbose=False)
    >>> rows[0]["nbopt_iters"], rows[0]["nbopt_s"] > 0
    (10, True)
    """
    if torch is None:
        try:
            import torch as _torch  # noqa: F401
            torch = True
        except ImportError:
            torch = False
    rows = []
    if verbose:
        import numba

        print(f"LBFGS per-iteration overhead (step time minus closure time, per iteration): "
              f"n={n:,}, history_size={history_size}, max_iter={max_iter}, "
              f"{numba.get_num_threads()} threads")
        header = f"{'dtype':<9}{'line search':<14}{'nbopt':>12}"
        if torch:
            header += f"{'torch':>12}{'torch/nbopt':>13}"
        print(header)
    for dtype in dtypes:
        rng = np.random.default_rng(0)
        a = (1 + 999 * rng.random(n)).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        x0 = rng.standard_normal(n).astype(dtype)
        for ls in line_search_fns:
            options = dict(history_size=history_size, max_iter=max_iter, line_search_fn=ls,
                           tolerance_grad=-1.0, tolerance_change=-1.0)
            runners = {"nbopt": _nbopt_runner(x0, a, b, options)}
            if torch:
                runners["torch"] = _torch_runner(x0, a, b, options)
            for opt, _, closure, _ in runners.values():
                for _ in range(warmup):
                    opt.step(closure)
            per_iter = {name: [] for name in runners}
            iters = {}
            for _ in range(repeat):
                for name, (opt, x, closure, inside) in runners.items():
                    state = opt.state[x]
                    before = state["n_iter"]
                    inside[0] = 0.0
                    t0 = time.perf_counter()
                    opt.step(closure)
                    wall = time.perf_counter() - t0
                    k = state["n_iter"] - before
                    iters[name] = k
                    per_iter[name].append((wall - inside[0]) / max(k, 1))
            row = {"n": n, "dtype": dtype, "line_search_fn": ls, "history_size": history_size,
                   "max_iter": max_iter}
            for name in runners:
                row[f"{name}_s"] = float(np.median(per_iter[name]))
                row[f"{name}_iters"] = iters[name]
            rows.append(row)
            if verbose:
                line = f"{dtype:<9}{str(ls):<14}{_fmt(row['nbopt_s']):>12}"
                if torch:
                    line += f"{_fmt(row['torch_s']):>12}{row['torch_s'] / row['nbopt_s']:>12.2f}x"
                print(line, flush=True)
            del runners
    return rows


def _fmt(s: float) -> str:
    return f"{s * 1e3:8.3f} ms" if s >= 1e-3 else f"{s * 1e6:8.1f} us"


def _parser() -> Parser:
    parser = Parser(prog="python -m nbopt bench-lbfgs", description=__doc__)
    parser.add_argument("--n", type=size, default=1_000_000,
                        help="elements of the parameter, e.g. 1000, 100k, 1M (default 1,000,000)")
    parser.add_argument("--dtypes", type=names(DTYPES, "dtype"), default=list(DTYPES),
                        help="comma-separated parameter dtypes (default: float32,float64)")
    parser.add_argument("--history-size", type=integer(1), default=10,
                        help="LBFGS's history_size: correction pairs kept")
    parser.add_argument("--max-iter", type=integer(1), default=10,
                        help="LBFGS's max_iter: iterations per step")
    parser.add_argument("--repeat", type=integer(1), default=7,
                        help="timed steps per optimizer (the median is reported)")
    add_torch_and_json(parser)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    with compile_notice():  # one line on stderr when the first kernel compiles
        rows = bench_lbfgs(n=args.n, dtypes=args.dtypes,
                           history_size=args.history_size, max_iter=args.max_iter,
                           repeat=args.repeat, torch=False if args.no_torch else None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
