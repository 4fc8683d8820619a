"""``python -m nbopt bench-8bit``: memory, speed and quality of the 8-bit
optimizers (issue 18) next to nbopt's 32-bit ones.

memory
    State bytes per parameter element, by RSS: a fresh process allocates the
    float32 parameters and gradients, runs one step of a warm-up optimizer
    (kernels compiled, thread pool started), then takes RSS before and after the first
    step of the measured optimizer (steady: the live state) and its peak RSS
    (``ru_maxrss``, which counts any temporary of that step).
speed
    Milliseconds per step (best of ``--repeat``) on one 10M float32
    parameter and on 1000 separate 1k-element parameters (with
    ``min_8bit_size=0``, so that they are quantized), next to 32-bit Adam and
    to the floor of the 8-bit step's own traffic: a compiled loop that reads
    the parameter, gradient and two byte states and writes the parameter and
    both byte states (16 bytes per float32 element; 32-bit Adam moves 28).
quality
    Final losses of a 2,000-step full-batch logistic regression (label
    noise) and of two 2,000-step ill-conditioned quadratics (condition number
    1e6; curvatures sorted or shuffled across the blocks), 8-bit vs 32-bit Adam
    and AdamW; ``--plot PATH`` draws the loss curves (matplotlib).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
from numba import prange

from ._common import Parser, integer, names, output_file, size

__all__ = ["main", "memory", "speed", "quality"]

_MEMORY_CHILD = r"""
import json, resource, sys
import numpy as np
import nbopt

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

name, n = sys.argv[1], int(sys.argv[2])
# the warm-up starts the compiled kernels and Numba's thread pool (a
# parameter above PARALLEL_THRESHOLD): the measured step allocates state only
warm = nbopt.Parameter(np.ones(300_000, np.float32))
warm.grad = np.ones(300_000, np.float32)
getattr(nbopt, name)([warm], lr=1e-3).step()
rng = np.random.default_rng(0)
p = nbopt.Parameter(rng.standard_normal(n, dtype=np.float32))
p.grad = rng.standard_normal(n, dtype=np.float32)
opt = getattr(nbopt, name)([p], lr=1e-3)
before = rss()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
opt.step()
after = rss()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"steady": (after - before) / n,
                  "peak": (max(peak, peak_before) - before) / n}))
"""


def memory(names=("Adam", "Adam8bit", "AdamW8bit"), n=50_000_000):
    """``{name: {"steady": bytes/element, "peak": bytes/element}}``."""
    out = {}
    for name in names:
        res = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, name, str(n)],
                             capture_output=True, text=True, check=True)
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def _floor_loop(p, g, q1, q2):
    for i in prange(p.shape[0]):
        p[i] = p[i] + g[i]
        q1[i] = q1[i] + np.uint8(1)
        q2[i] = q2[i] + np.uint8(1)


_floor = None


def _floor_kernel():
    global _floor
    if _floor is None:
        from numba import njit

        _floor = njit(parallel=True, error_model="numpy")(_floor_loop)
    return _floor


def _best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def speed(repeat=20):
    """Rows ``(workload, name, ms)``, floor included."""
    import nbopt

    rng = np.random.default_rng(0)
    rows = []
    workloads = {"10M": [10_000_000], "1000x1k": [1000] * 1000}
    for label, sizes in workloads.items():
        for name, kw in (("Adam", {}), ("Adam8bit", {"min_8bit_size": 0})):
            ps = [nbopt.Parameter(rng.standard_normal(s, dtype=np.float32)) for s in sizes]
            for p in ps:
                p.grad = rng.standard_normal(p.size, dtype=np.float32) * np.float32(1e-2)
            opt = getattr(nbopt, name)(ps, lr=1e-4, **kw)
            rows.append((label, name, _best(opt.step, repeat)))
        n = sum(sizes)
        p = rng.standard_normal(n, dtype=np.float32)
        g = np.zeros(n, np.float32)
        q1, q2 = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
        floor = _floor_kernel()
        rows.append((label, "floor (16 B/element)", _best(lambda: floor(p, g, q1, q2), repeat)))
    return rows


def _logreg_problem(seed=0, n=8192, d=1024, flip=0.1):
    """Full-batch logistic regression, not separable (10 % of the labels
    flipped), so that the loss converges to a floor that both runs reach."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32) / np.float32(np.sqrt(d))
    w_true = rng.standard_normal(d, dtype=np.float32) * np.float32(3)
    y = (x @ w_true > 0).astype(np.float32)
    flipped = rng.random(n) < flip
    y[flipped] = 1 - y[flipped]

    def loss_grad(w):
        z = x @ w
        loss = float(np.mean(np.logaddexp(0, z) - y * z))
        s = (1 / (1 + np.exp(-z))).astype(np.float32)
        return loss, (x.T @ (s - y) / np.float32(n)).astype(np.float32)

    return loss_grad, np.zeros(d, np.float32)


def _quadratic_problem(shuffle, seed=0, d=8192):
    """``0.5 * mean(lam * (w - target)**2)``, ``lam`` log-spaced over
    [1e-3, 1e3] (condition number 1e6).  Sorted, each block of 256 sees a
    narrow range of curvatures; shuffled, every block spans all of them (its
    second moments span 12 decades, more than the 8-bit map's 7)."""
    rng = np.random.default_rng(seed)
    lam = np.logspace(-3, 3, d).astype(np.float32)
    if shuffle:
        np.random.default_rng(seed + 1).shuffle(lam)
    target = rng.standard_normal(d, dtype=np.float32)

    def loss_grad(w):
        r = w - target
        return float(0.5 * np.sum(lam * r * r) / d), (lam * r / np.float32(d)).astype(np.float32)

    return loss_grad, np.zeros(d, np.float32)


PROBLEMS = {
    "logistic regression": (_logreg_problem, 1e-2),
    "quadratic, sorted curvatures": (lambda: _quadratic_problem(False), 1e-2),
    "quadratic, shuffled curvatures": (lambda: _quadratic_problem(True), 1e-2),
}


def _run(problem, name, lr, steps):
    import nbopt

    loss_grad, w0 = problem()
    w = nbopt.Parameter(w0.copy())
    # min_8bit_size=0: the logistic regression's 1,024 weights are quantized too
    kw = {"min_8bit_size": 0} if name.endswith("8bit") else {}
    opt = getattr(nbopt, name)([w], lr=lr, **kw)
    losses = []
    for _ in range(steps):
        loss, g = loss_grad(w)
        losses.append(loss)
        w.grad = g
        opt.step()
    losses.append(loss_grad(w)[0])
    return np.array(losses)


def quality(steps=2000):
    """``{problem: {name: loss curve}}`` for 32-bit and 8-bit Adam and AdamW."""
    return {label: {name: _run(problem, name, lr, steps)
                    for name in ("Adam", "Adam8bit", "AdamW", "AdamW8bit")}
            for label, (problem, lr) in PROBLEMS.items()}


def plot(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8))
    for ax, (label, by_name) in zip(np.atleast_1d(axes), curves.items()):
        for name, losses in by_name.items():
            ax.semilogy(losses, label=name, lw=1.2, ls="--" if "8bit" in name else "-")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _parser():
    p = Parser(prog="python -m nbopt bench-8bit", description=__doc__.split("\n\n")[0])
    p.add_argument("--what", type=names(("memory", "speed", "quality"), "part"),
                   default=["memory", "speed", "quality"],
                   help="comma-separated parts: memory, speed, quality (default: all)")
    p.add_argument("--memory-size", type=size, default=50_000_000,
                   help="elements of the memory measurement, e.g. 50M (default: %(default)s)")
    p.add_argument("--repeat", type=integer(1), default=20,
                   help="timed steps (default: %(default)s)")
    p.add_argument("--steps", type=integer(1), default=2000,
                   help="steps of the quality problems (default: %(default)s)")
    p.add_argument("--plot", metavar="PATH", type=output_file,
                   help="write the quality curves as an image")
    p.add_argument("--json", metavar="PATH", type=output_file,
                   help="also write the figures as JSON")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    parts = set(args.what)
    report = {}
    if "memory" in parts:
        mem = memory(n=args.memory_size)
        report["memory"] = mem
        print(f"state bytes per element (RSS, {args.memory_size:,} float32 elements):")
        for name, r in mem.items():
            print(f"  {name:<10} steady {r['steady']:6.3f}   peak {r['peak']:6.3f}")
    if "speed" in parts:
        rows = speed(args.repeat)
        report["speed"] = rows
        print(f"step time (best of {args.repeat}, float32, {os.cpu_count()} CPUs):")
        floors = {w: ms for w, n, ms in rows if n.startswith("floor")}
        for w, n, ms in rows:
            print(f"  {w:<8} {n:<22} {ms:9.2f} ms   {ms / floors[w]:5.2f}x floor")
    if "quality" in parts:
        curves = quality(args.steps)
        report["quality"] = {k: {n: float(c[-1]) for n, c in v.items()}
                             for k, v in curves.items()}
        print(f"final loss after {args.steps} steps:")
        for label, by_name in curves.items():
            for name in ("Adam", "AdamW"):
                a, b = by_name[name][-1], by_name[name + "8bit"][-1]
                print(f"  {label:<31} {name:<6} {a:.6g}   {name}8bit {b:.6g}   "
                      f"({100 * (b - a) / a:+.2f} %)")
        if args.plot:
            plot(curves, args.plot)
            print(f"curves written to {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
