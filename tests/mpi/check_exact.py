"""Run under ``mpiexec -n P``: for every element-wise algorithm, a P-rank
DistributedOptimizer and a P-rank ZeroRedundancyOptimizer give parameters
and state bit-identical to one process stepping the rank-order average of
the same per-rank gradients.  Rank 0 prints one JSON line of results."""
from __future__ import annotations

import json
import sys
import zlib

import numpy as np
from mpi4py import MPI

import nbopt
from nbopt.distributed import DistributedOptimizer, ZeroRedundancyOptimizer
from nbopt.optimizer import ElementwiseOptimizer

comm = MPI.COMM_WORLD
P, RANK = comm.Get_size(), comm.Get_rank()

# options that exercise more of each algorithm than its defaults
OPTIONS = {
    "SGD": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adam": dict(lr=0.01, amsgrad=True, weight_decay=0.01),
    "AdamW": dict(lr=0.01),
    "Adagrad": dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "Adadelta": dict(lr=1.0, weight_decay=0.01),
    "Adamax": dict(lr=0.01),
    "ASGD": dict(lr=0.01, t0=1.0),
    "NAdam": dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.01),
    "RAdam": dict(lr=0.01),
    "RMSprop": dict(lr=0.01, momentum=0.9, centered=True),
    "Rprop": dict(lr=0.01),
}
STEPS = 4


def elementwise_algorithms() -> list[str]:
    return sorted(name for name in nbopt.__all__
                  if isinstance(getattr(nbopt, name), type)
                  and issubclass(getattr(nbopt, name), ElementwiseOptimizer))


def make_params(seed: int):
    """Group 0: float32 arena (in-place path); group 1: float64 F-ordered
    matrix, vector and a complex128 parameter (packed path)."""
    rng = np.random.default_rng(seed)
    arena = nbopt.ParameterArena([rng.standard_normal((6, 5)), rng.standard_normal(5),
                                  rng.standard_normal(3)], dtype=np.float32)
    m = nbopt.Parameter(np.asfortranarray(rng.standard_normal((4, 3))))
    v = nbopt.Parameter(rng.standard_normal(9))
    c = nbopt.Parameter(rng.standard_normal(3) + 1j * rng.standard_normal(3))
    return arena, [{"params": list(arena.params)}, {"params": [m, v, c], "lr": 0.02}]


def grads_of(name: str, step: int, rank: int, params: list) -> list:
    rng = np.random.default_rng(zlib.crc32(f"{name}/{step}/{rank}".encode()))
    out = []
    for p in params:
        g = rng.standard_normal(p.shape)
        if p.dtype.kind == "c":
            g = g + 1j * rng.standard_normal(p.shape)
        out.append(np.asarray(g, p.dtype))
    return out


def skip(step: int, k: int) -> bool:
    return step == 2 and k == 4          # the vector v has no gradient at step 2


def set_grads(arena, params, grads, step):
    for k, (p, g) in enumerate(zip(params, grads)):
        if skip(step, k):
            p.grad = None
        elif k < 3:
            arena.grad_views[k][...] = g     # arena: written in place
            p.grad = arena.grad_views[k]
        else:
            p.grad = g


def all_params(groups):
    return [p for g in groups for p in g["params"]]


def reference(name: str):
    arena, groups = make_params(1)
    params = all_params(groups)
    opt = getattr(nbopt, name)(groups, **OPTIONS[name])
    for step in range(STEPS):
        per_rank = [grads_of(name, step, r, params) for r in range(P)]
        avg = []
        for k in range(len(params)):
            g = per_rank[0][k].copy()
            real = g.view(np.float64) if g.dtype.kind == "c" else g
            for r in range(1, P):
                other = per_rank[r][k]
                real += other.view(np.float64) if other.dtype.kind == "c" else other
            real /= real.dtype.type(P)
            avg.append(g)
        set_grads(arena, params, avg, step)
        opt.step()
    return params, opt.state_dict()


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_state(sd, ref) -> bool:
    if sd["param_groups"] != ref["param_groups"] or sd["state"].keys() != ref["state"].keys():
        return False
    for k, entry in ref["state"].items():
        mine = sd["state"][k]
        if list(mine) != list(entry):
            return False
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                if not same(mine[key], value):
                    return False
            elif mine[key] != value:
                return False
    return True


def run(name: str, kind: str, **kw):
    arena, groups = make_params(1)
    params = all_params(groups)
    if kind == "zero":
        opt = ZeroRedundancyOptimizer(groups, getattr(nbopt, name), **OPTIONS[name])
    else:
        opt = DistributedOptimizer(getattr(nbopt, name)(groups, **OPTIONS[name]), **kw)
    for step in range(STEPS):
        set_grads(arena, params, grads_of(name, step, RANK, params), step)
        opt.step()
    if kind == "zero":
        opt.consolidate_state_dict(to=0)
        sd = opt.state_dict() if RANK == 0 else None
    else:
        sd = opt.state_dict()
    return params, sd


def main():
    results = {}
    for name in elementwise_algorithms():
        ref_params, ref_sd = reference(name)
        row = {}
        kinds = [("dist", "dist", {}), ("zero", "zero", {})]
        if P <= 2:
            kinds.append(("dist_allreduce", "dist", {"reduction": "allreduce"}))
        for label, kind, kw in kinds:
            params, sd = run(name, kind, **kw)
            ok = all(same(p, q) for p, q in zip(params, ref_params))
            if sd is not None:
                ok = ok and same_state(sd, ref_sd)
            row[label] = bool(comm.allreduce(int(ok), op=MPI.MIN))
        results[name] = row
    if RANK == 0:
        print(json.dumps({"ranks": P, "algorithms": elementwise_algorithms(),
                          "results": results}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
