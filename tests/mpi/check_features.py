"""Run under ``mpiexec -n P`` (P >= 2): the features and failure modes of
nbopt.distributed.  Every rank asserts; rank 0 prints ``ok <check>`` lines
and finally ``ALL OK``.  A hang is caught by the pytest launcher's timeout."""
from __future__ import annotations

import os
import tempfile
import warnings
import zlib

import numpy as np
from mpi4py import MPI

import nbopt
from nbopt.distributed import (DistributedOptimizer, DistributedStepError, Sum,
                               ZeroRedundancyOptimizer, broadcast_optimizer_state,
                               broadcast_parameters, load_sharded, save_sharded, state_nbytes)

comm = MPI.COMM_WORLD
P, RANK = comm.Get_size(), comm.Get_rank()
assert P >= 2


def ok(name):
    comm.Barrier()
    if RANK == 0:
        print("ok", name, flush=True)


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def grad(shape, *key, dtype=np.float32):
    return rng_for(*key).standard_normal(shape).astype(dtype)


def ordered_mean(arrays):
    g = arrays[0].copy()
    for a in arrays[1:]:
        g += a
    g /= g.dtype.type(len(arrays))
    return g


def raises_everywhere(fn, own_rank, own_type, match=""):
    """fn() raises own_type on own_rank and DistributedStepError elsewhere."""
    try:
        fn()
    except Exception as e:   # noqa: BLE001
        want = own_type if RANK == own_rank else DistributedStepError
        assert isinstance(e, want), (RANK, repr(e))
        if RANK == own_rank:
            assert match in str(e), str(e)
        elif own_rank == -1:
            assert "disagree" in str(e) or "different" in str(e), str(e)
        else:
            assert f"rank(s) [{own_rank}]" in str(e) and "nothing was changed" in str(e), str(e)
        return
    raise AssertionError(f"rank {RANK}: no error")


def state_copy(sd):
    return {k: {n: (np.array(v) if isinstance(v, np.ndarray) else v) for n, v in e.items()}
            for k, e in sd["state"].items()}


def states_equal(a, b):
    if a.keys() != b.keys():
        return False
    for k in a:
        if list(a[k]) != list(b[k]):
            return False
        for n in a[k]:
            x, y = a[k][n], b[k][n]
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                if np.asarray(x).tobytes() != np.asarray(y).tobytes():
                    return False
            elif x != y:
                return False
    return True


# -- broadcast_parameters / broadcast_optimizer_state -------------------------------
w = nbopt.Parameter(np.full(5, float(RANK), np.float32))
b = nbopt.Parameter(np.full((2, 3), 10.0 + RANK))
broadcast_parameters({"w": w, "b": b}, root_rank=1)
assert (w == 1).all() and (b == 11).all()
broadcast_parameters([w], root_rank=0)
assert (w == 1).all()
bad = [nbopt.Parameter(np.zeros(5 if RANK else 4, np.float32))]
raises_everywhere(lambda: broadcast_parameters(bad), -1, DistributedStepError)
ok("broadcast_parameters (and a shape mismatch raises on every rank)")

opt = nbopt.Adam([w, b], lr=0.01)
if RANK == 0:
    w.grad, b.grad = np.ones(5, np.float32), np.ones((2, 3))
    opt.step()
    opt.param_groups[0]["lr"] = 0.5
broadcast_optimizer_state(opt, root_rank=0)
sd = opt.state_dict()
assert sd["param_groups"][0]["lr"] == 0.5 and float(sd["state"][0]["step"]) == 1.0
gathered = comm.allgather(sd["state"][1]["exp_avg"].tobytes())
assert len(set(gathered)) == 1
ok("broadcast_optimizer_state")


# -- DistributedOptimizer: average, op, predivide, accumulation -----------------------
def fresh(n=7):
    return nbopt.Parameter(np.linspace(-1, 1, n).astype(np.float32))


p = fresh()
opt = DistributedOptimizer(nbopt.SGD([p], lr=1.0))
assert isinstance(opt, nbopt.SGD) and isinstance(opt, nbopt.Optimizer)
p.grad = grad(7, "g", RANK)
opt.step()
assert p.tobytes() == (fresh() - ordered_mean([grad(7, "g", r) for r in range(P)])).tobytes()
ok("DistributedOptimizer averages in rank order")

p = fresh()
opt = DistributedOptimizer(nbopt.SGD([p], lr=1.0), op=Sum)
p.grad = grad(7, "g", RANK)
opt.step()
total = grad(7, "g", 0)
for r in range(1, P):
    total += grad(7, "g", r)
assert p.tobytes() == (fresh() - total).tobytes()
p = fresh()
opt = DistributedOptimizer(nbopt.SGD([p], lr=1.0), gradient_predivide_factor=4.0)
p.grad = grad(7, "g", RANK)
opt.step()
parts = [grad(7, "g", r) * np.float32(1 / 4.0) for r in range(P)]
g = parts[0].copy()
for a in parts[1:]:
    g += a
g *= np.float32(4.0 / P)
assert p.tobytes() == (fresh() - g).tobytes()
try:
    DistributedOptimizer(nbopt.SGD([p], lr=1.0), op=Sum, gradient_predivide_factor=2.0)
    raise AssertionError("no error")
except ValueError as e:
    assert "gradient_predivide_factor not supported with op != Average" in str(e)
ok("op=Sum, gradient_predivide_factor")

p = fresh()
opt = DistributedOptimizer(nbopt.SGD([p], lr=1.0), backward_passes_per_step=3)
for k in range(2):
    p.grad = grad(7, "acc", RANK, k)
    opt.accumulate()
p.grad = grad(7, "acc", RANK, 2)
opt.step()
local = [grad(7, "acc", r, 2) + grad(7, "acc", r, 0) + grad(7, "acc", r, 1) for r in range(P)]
want = fresh() - ordered_mean(local)
assert np.allclose(p, want, rtol=0, atol=1e-6), np.abs(p - want).max()
p.grad = grad(7, "acc", RANK, 0)
try:
    opt.step()                      # one pass where three are expected: every rank raises
    raise AssertionError("no error")
except RuntimeError as e:
    assert "backward_passes_per_step=3" in str(e), e
ok("backward_passes_per_step with accumulate()")

# -- synchronize / skip_synchronize (gradient clipping between reduction and step) ----
p = fresh()
opt = DistributedOptimizer(nbopt.SGD([p], lr=1.0))
p.grad = grad(7, "clip", RANK) * 10
opt.synchronize()
avg = ordered_mean([grad(7, "clip", r) * 10 for r in range(P)])
assert p.grad.tobytes() == avg.tobytes()
norm = np.linalg.norm(p.grad)
p.grad *= np.float32(1.0 / norm)
with opt.skip_synchronize():
    opt.step()
assert p.tobytes() == (fresh() - avg * np.float32(1.0 / norm)).tobytes()
p.grad = grad(7, "clip", RANK)
opt.synchronize()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    opt.step()
assert any("skip_synchronize" in str(c.message) for c in caught)
ok("synchronize / skip_synchronize")

# -- schedulers, SWA, hooks -----------------------------------------------------------
p = fresh()
opt = DistributedOptimizer(nbopt.SGD([p], lr=1.0, momentum=0.9))
sched = nbopt.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
calls = []
opt.register_step_post_hook(lambda o, a, k: calls.append(1))
for t in range(3):
    p.grad = grad(7, "sched", RANK, t)
    opt.step()
    sched.step()
assert opt.param_groups[0]["lr"] == 0.125 and len(calls) == 3
model = nbopt.nn.Linear(4, 3, rng=0)
swa = nbopt.swa_utils.AveragedModel(model)
opt = DistributedOptimizer(nbopt.SGD(list(model.parameters()), lr=0.1))
swalr = nbopt.swa_utils.SWALR(opt, swa_lr=0.05, anneal_epochs=2)
for t in range(3):
    for k, q in enumerate(model.parameters()):
        q.grad = grad(q.shape, "swa", RANK, t, k, dtype=q.dtype)
    opt.step()
    swalr.step()
    swa.update_parameters(model)
for q in swa.parameters():
    assert len(set(comm.allgather(np.asarray(q).tobytes()))) == 1
ok("schedulers, SWALR, AveragedModel and step hooks on a DistributedOptimizer")

# -- LBFGS: every closure evaluation is reduced -----------------------------------------
A = [grad((6, 4), "A", r, dtype=np.float64) for r in range(P)]
y = [grad(6, "y", r, dtype=np.float64) for r in range(P)]


def lbfgs_run(distributed):
    x = nbopt.Parameter(np.zeros(4))
    opt = nbopt.LBFGS([x], lr=1, max_iter=5, history_size=3)
    if distributed:
        opt = DistributedOptimizer(opt)

    def closure():
        if distributed:
            r = A[RANK] @ x - y[RANK]
            x.grad = A[RANK].T @ r
            return 0.5 * float(r @ r)
        grads, losses = [], []
        for k in range(P):
            r = A[k] @ x - y[k]
            grads.append(A[k].T @ r)
            losses.append(0.5 * float(r @ r))
        x.grad = ordered_mean(grads)
        total = 0.0
        for v in losses:
            total += v
        return total / P

    for _ in range(2):
        opt.step(closure)
    return x


assert lbfgs_run(True).tobytes() == lbfgs_run(False).tobytes()
ok("LBFGS closure: gradients and loss reduced at every evaluation")

# -- faults: one rank's bad gradient raises everywhere, changes nothing, no hang --------
p, q = fresh(), nbopt.Parameter(np.ones(3))
opt = DistributedOptimizer(nbopt.Adam([p, q], lr=0.1))
p.grad, q.grad = grad(7, "f", RANK), np.ones(3)
opt.step()
before = (p.tobytes(), q.tobytes(), state_copy(opt.state_dict()))
p.grad = grad(8 if RANK == 1 else 7, "f", RANK)
raises_everywhere(opt.step, 1, RuntimeError, "grad has shape (8,)")
assert (p.tobytes(), q.tobytes()) == before[:2] and states_equal(state_copy(opt.state_dict()),
                                                                 before[2])
p.grad = nbopt.SparseGrad(np.array([[0]]), np.ones(1, np.float32), (7,)) if RANK == 0 \
    else grad(7, "f", RANK)
raises_everywhere(opt.step, 0, RuntimeError, "sparse")
p.grad = grad(7, "f", RANK)
q.grad = None if RANK == 0 else np.ones(3)
raises_everywhere(opt.step, -1, DistributedStepError)          # ranks disagree
opt.param_groups[0]["lr"] = None if RANK == 1 else 0.1
q.grad = np.ones(3)
raises_everywhere(opt.step, 1, TypeError, "['lr']")             # a bad option, found early
assert (p.tobytes(), q.tobytes()) == before[:2]
opt.param_groups[0]["lr"] = 0.1
opt.step()                                                      # and the job goes on
assert len(set(comm.allgather(p.tobytes()))) == 1
ok("faults in DistributedOptimizer.step: all ranks raise, nothing changed, no hang")


# -- ZeroRedundancyOptimizer --------------------------------------------------------------
def zero_params():
    rng = np.random.default_rng(5)
    arena = nbopt.ParameterArena([rng.standard_normal((50, 4)), rng.standard_normal(33)],
                                 dtype=np.float32)
    extra = nbopt.Parameter(rng.standard_normal(17))
    return arena, [{"params": list(arena.params)}, {"params": [extra], "lr": 0.01}]


def zero_grads(params, t, rank):
    for k, p in enumerate(params):
        p.grad = grad(p.shape, "z", t, rank, k, dtype=p.dtype)


def flat(groups):
    return [p for g in groups for p in g["params"]]


try:
    ZeroRedundancyOptimizer([fresh()], nbopt.LBFGS)
    raise AssertionError("no error")
except TypeError as e:
    assert "element-wise" in str(e)
try:
    ZeroRedundancyOptimizer([fresh()], nbopt.Adam, overlap_with_ddp=True, lr=0.1)
    raise AssertionError("no error")
except ValueError as e:
    assert "overlap_with_ddp" in str(e)
try:
    ZeroRedundancyOptimizer([], nbopt.Adam)
    raise AssertionError("no error")
except ValueError as e:
    assert str(e) == "ZeroRedundancyOptimizer got an empty parameter list"

arena, groups = zero_params()
zero = ZeroRedundancyOptimizer(groups, nbopt.Adam, lr=0.05)
ref_arena, ref_groups = zero_params()
single = nbopt.Adam(ref_groups, lr=0.05)
sched = nbopt.lr_scheduler.StepLR(zero, step_size=2, gamma=0.5)
ref_sched = nbopt.lr_scheduler.StepLR(single, step_size=2, gamma=0.5)
for t in range(3):
    zero_grads(flat(groups), t, RANK)
    zero.step()
    sched.step()
    per = []
    for r in range(P):
        zero_grads(flat(ref_groups), t, r)
        per.append([p.grad for p in flat(ref_groups)])
    for k, p in enumerate(flat(ref_groups)):
        p.grad = ordered_mean([g[k] for g in per])
    single.step()
    ref_sched.step()
assert all(a.tobytes() == c.tobytes() for a, c in zip(flat(groups), flat(ref_groups)))
assert zero.optim.param_groups[0]["lr"] == zero.param_groups[0]["lr"] == 0.025
try:
    zero.state_dict()
    raise AssertionError("no error")
except RuntimeError as e:
    assert "has not been consolidated on this rank" in str(e)
zero.consolidate_state_dict(to=P - 1)
if RANK == P - 1:
    sd, ref = zero.state_dict(), single.state_dict()
    assert sd["param_groups"] == ref["param_groups"]
    assert states_equal(state_copy(sd), state_copy(ref))
ok("ZeRO: parameters, scheduler, consolidated state_dict == single-process")

mine, whole = state_nbytes(zero), state_nbytes(single)
shares = comm.allgather(mine)
assert sum(shares) <= whole + 64 * P and max(shares) <= whole / P + 64, (shares, whole)
if RANK == 0:
    print(f"state bytes per rank {shares} vs single process {whole}", flush=True)
ok("ZeRO: per-rank state is 1/P of the single-process state (+ O(1))")

# load_state_dict (re-shards a single-process state dict)
arena2, groups2 = zero_params()
zero2 = ZeroRedundancyOptimizer(groups2, nbopt.Adam, lr=0.05)
zero2.load_state_dict(single.state_dict())
for a, c in zip(flat(groups2), flat(ref_groups)):
    a[...] = c
zero_grads(flat(groups2), 7, RANK)
zero2.step()
per = []
for r in range(P):
    zero_grads(flat(ref_groups), 7, r)
    per.append([p.grad for p in flat(ref_groups)])
for k, p in enumerate(flat(ref_groups)):
    p.grad = ordered_mean([g[k] for g in per])
single.step()
assert all(a.tobytes() == c.tobytes() for a, c in zip(flat(groups2), flat(ref_groups)))
zero2.consolidate_state_dict(to=0)
if RANK == 0:
    assert states_equal(state_copy(zero2.state_dict()), state_copy(single.state_dict()))
bad_sd = single.state_dict()
bad_sd = {"state": dict(bad_sd["state"]), "param_groups": bad_sd["param_groups"]}
if RANK == 1:
    bad_sd["state"][0] = {k: v for k, v in bad_sd["state"][0].items() if k != "exp_avg_sq"}
zero2.consolidate_state_dict(to=0)
before = state_copy(zero2.state_dict()) if RANK == 0 else None
raises_everywhere(lambda: zero2.load_state_dict(bad_sd), 1, KeyError)
zero2.consolidate_state_dict(to=0)
if RANK == 0:
    assert states_equal(state_copy(zero2.state_dict()), before)
ok("ZeRO: load_state_dict re-shards; a bad dict on one rank raises everywhere, loads nothing")

# fault in ZeRO step
zero_grads(flat(groups2), 8, RANK)
if RANK == 1:
    flat(groups2)[2].grad = np.ones(17, np.float32)          # float32 for a float64 param
snapshot = [p.tobytes() for p in flat(groups2)]
raises_everywhere(zero2.step, 1, RuntimeError, "dtype")
assert [p.tobytes() for p in flat(groups2)] == snapshot
zero_grads(flat(groups2), 8, RANK)
zero2.step()
ok("ZeRO: a bad gradient on one rank raises everywhere, nothing changed, no hang")

# sharded checkpoints (same rank count), missing and corrupt shards
tmp = comm.bcast(tempfile.mkdtemp() if RANK == 0 else None, root=0)
ck = os.path.join(tmp, "ck")
save_sharded(zero2, ck)
zero2.consolidate_state_dict(to=0)
saved = state_copy(zero2.state_dict()) if RANK == 0 else None
arena3, groups3 = zero_params()
zero3 = ZeroRedundancyOptimizer(groups3, nbopt.Adam, lr=0.05)
load_sharded(zero3, ck)
zero3.consolidate_state_dict(to=0)
if RANK == 0:
    assert states_equal(state_copy(zero3.state_dict()), saved)
    assert zero3.state_dict()["param_groups"] == zero2.state_dict()["param_groups"]
save_sharded(zero2, ck)                                    # a second save replaces the first
files = sorted(f for f in os.listdir(ck) if f.startswith("shard-"))
assert len(files) == P, files
comm.Barrier()
arena4, groups4 = zero_params()
zero4 = ZeroRedundancyOptimizer(groups4, nbopt.Adam, lr=0.05)
victim = os.path.join(ck, files[-1])
if RANK == 0:
    os.rename(victim, victim + ".away")
comm.Barrier()
try:
    load_sharded(zero4, ck)
    raise AssertionError("no error")
except FileNotFoundError as e:
    assert "is missing" in str(e), e
assert not zero4.optim.state
if RANK == 0:
    os.rename(victim + ".away", victim)
    with open(victim, "r+b") as fh:
        fh.seek(os.path.getsize(victim) // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
comm.Barrier()
try:
    load_sharded(zero4, ck)
    raise AssertionError("no error")
except (ValueError, DistributedStepError) as e:
    assert "corrupt" in str(e) or "nothing was changed" in str(e), e
assert not zero4.optim.state
ok("sharded checkpoints: round trip; a missing or corrupt shard raises on every rank, "
   "nothing loaded")

# add_param_group after construction
extra = nbopt.Parameter(np.ones(10))
zero4.add_param_group({"params": [extra], "lr": 0.2})
for g in zero4.param_groups[:2]:
    for p_ in g["params"]:
        p_.grad = None
extra.grad = np.full(10, 0.5)
zero4.step()
assert np.allclose(extra, 1 - 0.2) and len(set(comm.allgather(extra.tobytes()))) == 1
ok("ZeRO add_param_group")

if RANK == 0:
    print("ALL OK", flush=True)
