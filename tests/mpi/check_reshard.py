"""``mpiexec -n P python check_reshard.py save DIR`` trains a ZeRO Adam and
writes a sharded checkpoint (plus, from rank 0, the consolidated state and
the parameters); ``... load DIR`` on another number of ranks loads it,
checks that it consolidates to the saved state, steps on and compares with
one process continuing from the consolidated state.  Rank 0 prints ALL OK."""
from __future__ import annotations

import os
import sys
import zlib

import numpy as np
from mpi4py import MPI

import nbopt
from nbopt.distributed import ZeroRedundancyOptimizer, load_sharded, save_sharded

comm = MPI.COMM_WORLD
P, RANK = comm.Get_size(), comm.Get_rank()
mode, directory = sys.argv[1], sys.argv[2]


def params():
    rng = np.random.default_rng(3)
    arena = nbopt.ParameterArena([rng.standard_normal((31, 3)), rng.standard_normal(10)],
                                 dtype=np.float32)
    return [{"params": list(arena.params)},
            {"params": [nbopt.Parameter(rng.standard_normal(13))], "lr": 0.003}]


def flat(groups):
    return [p for g in groups for p in g["params"]]


def grads(groups, t, rank):
    for k, p in enumerate(flat(groups)):
        rng = np.random.default_rng(zlib.crc32(f"{t}/{rank}/{k}".encode()))
        p.grad = rng.standard_normal(p.shape).astype(p.dtype)


def averaged(groups, t, ranks):
    per = []
    for r in range(ranks):
        grads(groups, t, r)
        per.append([p.grad for p in flat(groups)])
    for k, p in enumerate(flat(groups)):
        g = per[0][k].copy()
        for r in range(1, ranks):
            g += per[r][k]
        g /= g.dtype.type(ranks)
        p.grad = g


def same_state(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert list(a["state"][k]) == list(b["state"][k])
        for n, v in a["state"][k].items():
            assert np.asarray(v).tobytes() == np.asarray(b["state"][k][n]).tobytes(), (k, n)


groups = params()
zero = ZeroRedundancyOptimizer(groups, nbopt.Adam, lr=0.01, amsgrad=True)
if mode == "save":
    for t in range(3):
        grads(groups, t, RANK)
        zero.step()
    save_sharded(zero, os.path.join(directory, "ck"))
    zero.consolidate_state_dict(to=0)
    if RANK == 0:
        nbopt.save(zero.state_dict(), os.path.join(directory, "full.npz"))
        nbopt.save([np.array(p) for p in flat(groups)], os.path.join(directory, "params.npz"))
else:
    for p, v in zip(flat(groups), nbopt.load(os.path.join(directory, "params.npz"))):
        p[...] = v
    load_sharded(zero, os.path.join(directory, "ck"))
    full = nbopt.load(os.path.join(directory, "full.npz"))
    zero.consolidate_state_dict(to=0)
    if RANK == 0:
        same_state(zero.state_dict(), full)
    # one process continues from the consolidated state with the same gradients
    ref = params()
    for p, v in zip(flat(ref), nbopt.load(os.path.join(directory, "params.npz"))):
        p[...] = v
    single = nbopt.Adam(ref, lr=0.01, amsgrad=True)
    single.load_state_dict(full)
    for t in range(3, 5):
        grads(groups, t, RANK)
        zero.step()
        averaged(ref, t, P)
        single.step()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(flat(groups), flat(ref)))
    zero.consolidate_state_dict(to=0)
    if RANK == 0:
        same_state(zero.state_dict(), single.state_dict())
comm.Barrier()
if RANK == 0:
    print(f"ALL OK ({mode} on {P} ranks)", flush=True)
