"""Data-parallel training on MPI: every rank holds a shard of the data.

    mpiexec -n 2 python examples/data_parallel.py            # DistributedOptimizer
    mpiexec -n 2 python examples/data_parallel.py --zero     # ZeroRedundancyOptimizer
    mpiexec -n 2 python examples/data_parallel.py --quick    # a few epochs (the test)

A softmax regression on a generated 3-class problem.  Rank 0 initialises the
weights and broadcasts them; each rank computes the gradient of its own shard
of every global batch; the optimizer averages the gradients over the ranks
(in rank order: the run is bit-identical to one process averaging the same
shard gradients) and steps.  With ``--zero`` each rank keeps only its 1/P of
Adam's state.  The script ends by checking that every rank holds the same
weights, and writes a sharded checkpoint (``--checkpoint DIR``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import numpy as np
from mpi4py import MPI

import nbopt
from nbopt.distributed import (DistributedOptimizer, ZeroRedundancyOptimizer,
                               broadcast_parameters, load_sharded, save_sharded)


def data(n=6000, d=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)).astype(np.float32) * 0.45
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.standard_normal((n, d)).astype(np.float32)
    return x, y


def loss_and_grads(w, b, x, y):
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    p[np.arange(len(y)), y] -= 1
    p /= len(y)
    return float(loss), (x.T @ p).astype(np.float32), p.sum(axis=0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zero", action="store_true", help="shard Adam's state (ZeRO-1)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 epochs")
    parser.add_argument("--checkpoint", help="directory of the sharded checkpoint (--zero)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    epochs = 3 if args.quick else args.epochs

    x, y = data()
    n_train = 5000
    arena = nbopt.ParameterArena([np.random.default_rng(rank).standard_normal((20, 3)) * 0.01,
                                  np.zeros(3)], dtype=np.float32)
    w, b = arena.params
    broadcast_parameters([w, b], root_rank=0)              # every rank starts from rank 0's
    if args.zero:
        opt = ZeroRedundancyOptimizer(arena.params, nbopt.Adam, lr=0.05)
    else:
        opt = DistributedOptimizer(nbopt.Adam(arena.params, lr=0.05))
    sched = nbopt.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)

    batch = 500                                            # global batch
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(n_train)   # same on every rank
        losses = []
        for start in range(0, n_train, batch):
            idx = order[start:start + batch][rank::size]             # this rank's shard
            loss, gw, gb = loss_and_grads(w, b, x[idx], y[idx])
            w.grad[...] = gw                               # arena views: reduced in place
            b.grad[...] = gb
            opt.step()
            losses.append(loss)
        sched.step()
        mean_loss = comm.allreduce(float(np.mean(losses))) / size
        acc = float((np.argmax(x[n_train:] @ w + b, axis=1) == y[n_train:]).mean())
        if rank == 0:
            print(f"epoch {epoch + 1}: loss {mean_loss:.4f}, test accuracy {acc:.3f}", flush=True)

    same = len(set(comm.allgather(arena.data.tobytes()))) == 1
    if args.zero:
        directory = args.checkpoint or comm.bcast(tempfile.mkdtemp() if rank == 0 else None)
        save_sharded(opt, directory)
        load_sharded(opt, directory)
        comm.Barrier()
        if rank == 0:
            print(f"sharded checkpoint: {sorted(os.listdir(directory))}")
            if not args.checkpoint:
                shutil.rmtree(directory)
    if rank == 0:
        kind = "ZeroRedundancyOptimizer" if args.zero else "DistributedOptimizer"
        print(f"{kind} on {size} ranks: same weights on every rank: {same}")


if __name__ == "__main__":
    main()
