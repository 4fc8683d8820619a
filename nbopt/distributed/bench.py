"""``mpiexec -n P python -m nbopt bench-distributed``: per-step communication
and compute time and optimizer-state bytes per rank of data-parallel
(:func:`DistributedOptimizer`) and ZeRO (:class:`ZeroRedundancyOptimizer`)
steps over one large float32 parameter, next to a single-process step, and
the ring reduce-scatter/allgather model of the same step up to 64 ranks
(``docs/distributed.rst`` explains it)."""
from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

import nbopt

from ..cli._common import Parser, integer, number, one_of, size
from ._common import state_nbytes
from .data_parallel import DistributedOptimizer
from .zero import ZeroRedundancyOptimizer

__all__ = ["main", "ring_time", "model_rows"]


def ring_time(nbytes: float, ranks: int, latency_s: float, bandwidth_Bps: float) -> float:
    """Seconds of one bandwidth-optimal ring reduce-scatter (or allgather)
    of an ``nbytes`` buffer over ``ranks`` ranks: ``P - 1`` rounds, each
    sending ``nbytes / P`` to the next rank: ``(P-1)*alpha + (P-1)/P * n/beta``."""
    if ranks <= 1:
        return 0.0
    return (ranks - 1) * latency_s + (ranks - 1) / ranks * nbytes / bandwidth_Bps


def model_rows(n: int, itemsize: int, state_per_elem: int, step_s: float, latency_s: float,
               bandwidth_Bps: float, ranks=(1, 2, 4, 8, 16, 32, 64)) -> list:
    """Per-step time and per-rank optimizer state of plain data parallelism
    (reduce-scatter + allgather of the gradients, a full step on every rank)
    and ZeRO-1 (reduce-scatter of the gradients, a 1/P step, allgather of
    the parameters): ``(P, comm_s, plain_s, zero_s, plain_state_B, zero_state_B)``."""
    rows = []
    nbytes = n * itemsize
    for p in ranks:
        comm_s = 2 * ring_time(nbytes, p, latency_s, bandwidth_Bps)
        rows.append((p, comm_s, comm_s + step_s, comm_s + step_s / p,
                     n * state_per_elem, -(-n // p) * state_per_elem))
    return rows


def _grad(n: int, rank: int, step: int) -> np.ndarray:
    return np.random.default_rng(1000 * rank + step).standard_normal(n).astype(np.float32) * 1e-3


def _median(values):
    return float(np.median(values)) if values else float("nan")


def main(argv=None) -> int:
    from nbopt.optimizer import ElementwiseOptimizer

    algorithms = [name for name in nbopt.__all__ if isinstance(getattr(nbopt, name), type)
                  and issubclass(getattr(nbopt, name), ElementwiseOptimizer)]
    parser = Parser(prog="mpiexec -n P python -m nbopt bench-distributed", description=__doc__)
    parser.add_argument("--size", type=size, default=10_000_000,
                        help="float32 elements in the parameter (10M, 1k, ...)")
    parser.add_argument("--steps", type=integer(1), default=10,
                        help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--algorithm", type=one_of(algorithms, "algorithm"), default="Adam",
                        help="an element-wise nbopt optimizer")
    parser.add_argument("--latency-us", type=number(0), default=5.0,
                        help="per-message latency alpha of the model, microseconds")
    parser.add_argument("--bandwidth-gbs", type=number(positive=True), default=12.5,
                        help="link bandwidth beta of the model, GB/s (12.5 = 100 Gb/s)")
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    P, rank = comm.Get_size(), comm.Get_rank()
    cls = getattr(nbopt, args.algorithm)
    n, warm = args.size, 2
    grads = [_grad(n, rank, s) for s in range(2)]
    rows = []

    # single process: rank 0 alone, the others wait
    single_step = float("nan")
    if rank == 0:
        w = nbopt.Parameter(np.zeros(n, np.float32))
        opt = cls([w], lr=1e-3)
        times = []
        for s in range(warm + args.steps):
            w.grad = grads[s % 2]
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        single_step = _median(times[warm:])
        rows.append(("single process", 1, 0.0, single_step, state_nbytes(opt)))
        del w, opt
    comm.Barrier()

    # data parallel: synchronize() is the communication, the step the compute
    w = nbopt.Parameter(np.zeros(n, np.float32))
    opt = DistributedOptimizer(cls([w], lr=1e-3))
    comm_t, comp_t = [], []
    for s in range(warm + args.steps):
        w.grad = grads[s % 2].copy()
        comm.Barrier()
        t0 = time.perf_counter()
        opt.synchronize()
        t1 = time.perf_counter()
        with opt.skip_synchronize():
            opt.step()
        t2 = time.perf_counter()
        comm_t.append(t1 - t0)
        comp_t.append(t2 - t1)
    plain = (_median(comm_t[warm:]), _median(comp_t[warm:]), state_nbytes(opt))
    del w, opt
    comm.Barrier()

    # ZeRO: check + reduce-scatter + allgather are the communication
    w = nbopt.Parameter(np.zeros(n, np.float32))
    opt = ZeroRedundancyOptimizer([w], cls, lr=1e-3)
    comm_t, comp_t = [], []
    for s in range(warm + args.steps):
        w.grad = grads[s % 2]
        comm.Barrier()
        opt.step()
        st = opt.step_times
        comm_t.append(st["check"] + st["reduce_scatter"] + st["allgather"])
        comp_t.append(st["step"])
    zero = (_median(comm_t[warm:]), _median(comp_t[warm:]), state_nbytes(opt))
    del w, opt

    # the slowest rank's times and the largest per-rank state, gathered on rank 0
    plain_all = comm.gather(plain, root=0)
    zero_all = comm.gather(zero, root=0)
    if rank == 0:
        for label, data in (("DistributedOptimizer", plain_all), ("ZeroRedundancyOptimizer",
                                                                  zero_all)):
            rows.append((label, P, max(d[0] for d in data), max(d[1] for d in data),
                         max(d[2] for d in data)))
        print(f"{args.algorithm}, one float32 parameter of {n:,} elements, median of "
              f"{args.steps} steps, {P} rank(s) (slowest rank; state: largest rank)")
        print(f"{'mode':<26}{'ranks':>6}{'comm ms':>10}{'compute ms':>12}{'total ms':>10}"
              f"{'state MB/rank':>15}")
        for label, ranks, c, k, b in rows:
            print(f"{label:<26}{ranks:>6}{c * 1e3:>10.2f}{k * 1e3:>12.2f}{(c + k) * 1e3:>10.2f}"
                  f"{b / 1e6:>15.1f}")
        per_elem = rows[0][4] // n if n else 0
        print(f"\nmodel (docs/distributed.rst): ring reduce-scatter + allgather, alpha = "
              f"{args.latency_us:g} us, beta = {args.bandwidth_gbs:g} GB/s, step = "
              f"{single_step * 1e3:.2f} ms (measured above), {per_elem} state bytes/element")
        print(f"{'ranks':>6}{'comm ms':>10}{'plain ms':>10}{'ZeRO ms':>10}"
              f"{'plain state MB':>16}{'ZeRO state MB':>15}")
        for p, c, t_plain, t_zero, s_plain, s_zero in model_rows(
                n, 4, per_elem, single_step, args.latency_us * 1e-6, args.bandwidth_gbs * 1e9):
            print(f"{p:>6}{c * 1e3:>10.2f}{t_plain * 1e3:>10.2f}{t_zero * 1e3:>10.2f}"
                  f"{s_plain / 1e6:>16.1f}{s_zero / 1e6:>15.1f}")
    return 0
