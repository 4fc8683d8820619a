"""Data parallelism, Horovod's shape: :func:`DistributedOptimizer`,
:func:`broadcast_parameters`, :func:`broadcast_optimizer_state`."""
from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np

from ..optimizer import Optimizer
from ._common import (Average, Sum, agree, flat_spaces, flat_view, get_comm,
                      presence_signature, validate_local_step)

__all__ = ["DistributedOptimizer", "broadcast_parameters", "broadcast_optimizer_state"]

_REDUCTIONS = ("ordered", "allreduce")
_SYNC_WARNING = ("optimizer.step() called without optimizer.skip_synchronize() context after "
                 "optimizer.synchronize(). This can cause training slowdown. You may want to "
                 "consider using optimizer.skip_synchronize() context if you use "
                 "optimizer.synchronize() in your code.")


class _DistState:
    """The wrapper's own settings and per-step bookkeeping."""

    def __init__(self, comm, backward_passes_per_step, op, predivide, reduction):
        self.comm = comm
        self.passes = backward_passes_per_step
        self.op, self.predivide, self.reduction = op, float(predivide), reduction
        self.should_sync = True
        self.synchronized = False
        self.key = None          # the param lists the flat spaces were made for
        self.spaces = []
        self.acc = None          # accumulated gradients, one flat array per space
        self.acc_present = None  # per space, per parameter: accumulated into
        self.accumulated = 0     # backward passes accumulated since the last reduction
        self.times = {}          # seconds of the last reduction: "check", "reduce"


class _DistributedMixin:
    """Methods the wrapped optimizer's class gains (see DistributedOptimizer)."""

    # -- the flat spaces ----------------------------------------------------------
    def _dist_spaces(self):
        d = self._dist
        key = tuple(tuple(map(id, g["params"])) for g in self.param_groups)
        if key != d.key:
            if d.accumulated:
                raise RuntimeError("DistributedOptimizer: the parameter groups changed while "
                                   "gradients were being accumulated")
            d.spaces = flat_spaces(d.comm, self.param_groups)
            d.key = key
            d.acc = d.acc_present = None
        return d.spaces

    def accumulate(self) -> None:
        """Add the current gradients to the local accumulation buffers (no
        communication): one backward pass of ``backward_passes_per_step``.

        Call it after each of the first ``backward_passes_per_step - 1``
        passes; the pass whose gradients are in ``.grad`` when :meth:`step`
        (or :meth:`synchronize`) runs is the last one.  Gradients are summed,
        as torch accumulates ``.grad`` (scale the loss by
        ``1/backward_passes_per_step`` for a mean).  Refused (changing
        nothing) for an invalid gradient, or beyond the expected count.
        """
        d = self._dist
        spaces = self._dist_spaces()
        if d.accumulated + 1 >= d.passes:
            raise RuntimeError(f"DistributedOptimizer: accumulate() called "
                               f"{d.accumulated + 1} times, but backward_passes_per_step="
                               f"{d.passes} expects {d.passes - 1} before step()")
        presence = [s.check_grads("DistributedOptimizer") for s in spaces]
        if d.acc is None:
            d.acc = [np.zeros(s.total, s.dtype) for s in spaces]
            d.acc_present = [[False] * len(s.params) for s in spaces]
        for s, acc, seen, pres in zip(spaces, d.acc, d.acc_present, presence):
            if any(pres):
                flat, _ = s.grad_buffer(pres)
                acc += flat
                for i, p in enumerate(pres):
                    seen[i] = seen[i] or p
        d.accumulated += 1

    # -- the reduction ------------------------------------------------------------
    def _dist_reduce(self, what: str = "DistributedOptimizer.step") -> None:
        d = self._dist
        t0 = time.perf_counter()
        error = None
        signature = 0
        presence = []
        try:
            spaces = self._dist_spaces()
            presence = [s.check_grads("DistributedOptimizer") for s in spaces]
            current = any(any(p) for p in presence)
            passes = d.accumulated + (1 if current else 0)
            if d.passes > 1 and passes and passes != d.passes:
                raise RuntimeError(f"DistributedOptimizer: {passes} backward passes were "
                                   f"accumulated, but backward_passes_per_step={d.passes}")
            for s, pres in zip(spaces, presence):
                for i, p in enumerate(s.params):
                    if pres[i] and not p.grad.flags.writeable:
                        raise ValueError(f"{s.where(i)}: the gradient is read-only; "
                                         "DistributedOptimizer writes the reduced gradient "
                                         "into it in place")
            validate_local_step(self)
            signature = presence_signature(
                [(s.group_index, s.dtype.str, s.total, tuple(pres))
                 for s, pres in zip(spaces, presence)] + [d.accumulated])
        except Exception as error_:   # noqa: BLE001 - every rank must learn of it
            error = error_
        agree(d.comm, error, signature, what=what)
        t1 = time.perf_counter()
        for k, (s, pres) in enumerate(zip(spaces, presence)):
            acc = d.acc[k] if d.acc is not None else None
            seen = d.acc_present[k] if d.acc is not None else [False] * len(pres)
            wanted = [a or b for a, b in zip(pres, seen)]
            if not any(wanted):
                continue
            flat, in_place = s.grad_buffer(pres)
            if acc is not None:
                flat += acc
            if d.reduction == "ordered":
                s.reduce_scatter(flat, flat[s.lo:s.hi], d.op, d.predivide)
                s.allgather(flat)
            else:
                s.allreduce_mpi(flat, d.op, d.predivide)
            if not in_place:
                s.write_back(flat, pres)
            for i, p in enumerate(s.params):
                if wanted[i] and not pres[i]:        # accumulated, then set to None
                    view = flat[s.offsets[i]:s.offsets[i] + s.sizes[i]].copy()
                    if p.dtype.kind == "c":
                        view = view.view(p.dtype)
                    order = "F" if (p.flags.f_contiguous and not p.flags.c_contiguous) else "C"
                    p.grad = view.reshape(p.shape, order=order)
        d.acc = d.acc_present = None
        d.accumulated = 0
        d.times = {"check": t1 - t0, "reduce": time.perf_counter() - t1}

    def synchronize(self) -> None:
        """Reduce the gradients now (all ranks must call it), so that they can
        be read or clipped before :meth:`step`; then step inside
        ``with optimizer.skip_synchronize():``."""
        self._dist_reduce("DistributedOptimizer.synchronize")
        self._dist.synchronized = True

    @contextlib.contextmanager
    def skip_synchronize(self):
        """A context in which :meth:`step` does not reduce the gradients
        (they were reduced by :meth:`synchronize`)."""
        d = self._dist
        d.should_sync = False
        try:
            yield
        finally:
            d.should_sync = True

    def _dist_step(self, closure=None):
        d = self._dist
        base_step = _unhooked_step(self._dist_base)
        if getattr(self._dist_base, "_dist_closure_driven", False) or _is_lbfgs(self):
            if closure is None:
                return base_step(self, closure)     # the optimizer's own error
            if d.passes != 1:
                raise ValueError("DistributedOptimizer: an optimizer that evaluates its closure "
                                 "several times per step needs backward_passes_per_step=1")

            def synced():
                loss = closure()
                self._dist_reduce("DistributedOptimizer.step (closure evaluation)")
                return _mean_loss(d.comm, loss)

            d.synchronized = False
            return base_step(self, synced)
        loss = None
        if closure is not None:
            loss = closure()
        if d.should_sync:
            if d.synchronized:
                warnings.warn(_SYNC_WARNING, stacklevel=3)
            else:
                self._dist_reduce()
        d.synchronized = False
        base_step(self)
        return loss


def _is_lbfgs(opt) -> bool:
    from ..optim import LBFGS

    return isinstance(opt, LBFGS)


def _mean_loss(comm, loss):
    """The loss averaged over the ranks, summed in rank order (every rank
    then takes the same line-search decisions)."""
    if comm.Get_size() == 1:
        return loss
    values = comm.allgather(float(loss))
    total = 0.0
    for v in values:
        total += v
    return total / len(values)


def _unhooked_step(cls):
    step = cls.step
    return getattr(step, "__wrapped__", step) if getattr(step, "hooked", False) else step


_CLASSES: dict = {}


def _distributed_class(base: type) -> type:
    cls = _CLASSES.get(base)
    if cls is None:
        cls = type(base.__name__, (_DistributedMixin, base),
                   {"__module__": base.__module__, "_dist_base": base,
                    "__doc__": base.__doc__})
        step = Optimizer.profile_hook_step(_DistributedMixin._dist_step)
        step.hooked = True
        step.__doc__ = DistributedOptimizer.__doc__
        cls.step = step
        _CLASSES[base] = cls
    return cls


def DistributedOptimizer(optimizer, comm=None, backward_passes_per_step: int = 1, op=Average,
                         gradient_predivide_factor: float = 1.0, reduction: str = "ordered"):
    """Wrap an nbopt optimizer so that ``step()`` averages the gradients over
    the ranks of ``comm`` and then steps (Horovod's ``DistributedOptimizer``).

    **Communication pattern.**  Per step, for each (param group, dtype): one
    small ``Allreduce`` (MAX, P + 2 int64) on which every rank agrees that
    every rank's gradients and step are valid, then the flat gradient of
    the group's parameters (the gradients' own buffer when they are views of one
    :class:`nbopt.ParameterArena`: no copy; else a packed copy, written back
    into each ``p.grad`` in place) is reduced:

    * ``reduction="ordered"`` (default): a rank-ordered reduce-scatter
      (one ``Alltoallv``, then ``((g_0 + g_1) + ... + g_{P-1}) / P`` in the
      gradient dtype on each rank's 1/P range) and an ``Allgatherv``: the
      same bytes as a ring allreduce, and bit-identical to one process that
      averages the P gradients in rank order, for any P.
    * ``reduction="allreduce"``: one in-place ``MPI_Allreduce`` (SUM) per
      (group, dtype), then ``/ P``: MPI's summation order, bit-identical to
      the above for P <= 2 only.

    Then the wrapped optimizer's own step runs on every rank with the same
    averaged gradients, so parameters and state stay identical everywhere.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Any nbopt optimizer (element-wise ones, LBFGS, SparseAdam, Muon,
        Adafactor).  The returned object *is* that optimizer (same
        ``param_groups``, ``state``, ``state_dict``; an instance of its
        class, so schedulers and SWA work on it); use it instead.
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    backward_passes_per_step : int
        Local accumulation: call ``optimizer.accumulate()`` after each of the
        first ``k - 1`` backward passes; the gradients are summed locally and
        communicated once, at ``step()``.
    op : ``nbopt.distributed.Average`` or ``nbopt.distributed.Sum``
        Average (default) divides the sum by the number of ranks.
    gradient_predivide_factor : float
        With ``op=Average``: each rank's gradient is multiplied by ``1/f``
        before the sum and the sum by ``f/P`` after (Horovod's split of the
        averaging, against overflow in low precision).
    reduction : ``"ordered"`` or ``"allreduce"``
        See above.

    Notes
    -----
    ``synchronize()`` reduces now (e.g. to clip gradients), then
    ``with optimizer.skip_synchronize(): optimizer.step()``.  With a
    closure, element-wise optimizers call it once, then reduce and step.
    LBFGS evaluates its closure many times per step: each evaluation
    reduces the gradients and averages the loss (summed in rank order), so
    every rank runs the same line search; its own state (directions,
    history) is then identical on every rank.  Sparse gradients are refused
    with a clear error (densify them with ``g.to_dense()``).  A failure on
    one rank (a bad gradient, a bad option) raises on every rank before
    any data moves, and nothing changes anywhere.

    Examples
    --------
    In one process (a communicator of size 1) the average is the gradient:

    >>> import numpy as np, nbopt
    >>> from nbopt.distributed import DistributedOptimizer
    >>> w = nbopt.Parameter(np.zeros(3, np.float32))
    >>> opt = DistributedOptimizer(nbopt.SGD([w], lr=0.5))
    >>> isinstance(opt, nbopt.SGD)
    True
    >>> w.grad = np.ones(3, np.float32)     # this rank's gradient
    >>> opt.step()                           # averaged over the ranks, then SGD
    >>> w.tolist()
    [-0.5, -0.5, -0.5]

    A training script, run with ``mpiexec -n 2 python script.py``::

        import numpy as np, nbopt
        from nbopt.distributed import DistributedOptimizer, broadcast_parameters
        w = nbopt.Parameter(np.zeros(10, np.float32))
        opt = DistributedOptimizer(nbopt.Adam([w], lr=1e-2))
        broadcast_parameters([w], root_rank=0)
        for x, y in my_shard_of_the_data():
            opt.zero_grad()
            w.grad = local_gradient(w, x, y)
            opt.step()            # averaged over the ranks, then Adam
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"DistributedOptimizer wraps an nbopt.Optimizer, got "
                        f"{type(optimizer).__name__}")
    if isinstance(optimizer, _DistributedMixin):
        raise TypeError("this optimizer is already a DistributedOptimizer")
    from .zero import ZeroRedundancyOptimizer

    if isinstance(optimizer, ZeroRedundancyOptimizer):
        raise TypeError("ZeroRedundancyOptimizer reduces its gradients itself; do not wrap it "
                        "in DistributedOptimizer")
    if op not in (Average, Sum):
        raise ValueError(f"op must be nbopt.distributed.Average or Sum, got {op!r}")
    if gradient_predivide_factor != 1.0 and op != Average:
        raise ValueError("gradient_predivide_factor not supported with op != Average")
    if not (isinstance(gradient_predivide_factor, (int, float)) and gradient_predivide_factor > 0):
        raise ValueError(f"gradient_predivide_factor must be a positive number, got "
                         f"{gradient_predivide_factor!r}")
    passes = backward_passes_per_step
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"backward_passes_per_step must be a positive integer, got "
                         f"{backward_passes_per_step!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not isinstance(p, np.ndarray):
                raise TypeError("DistributedOptimizer reduces host (NumPy) parameters; "
                                f"got a {type(p).__name__}")
    comm = get_comm(comm)
    cls = _distributed_class(type(optimizer))
    wrapped = object.__new__(cls)
    object.__setattr__(wrapped, "__dict__", optimizer.__dict__)   # one optimizer, two names
    object.__setattr__(wrapped, "_dist", _DistState(comm, backward_passes_per_step, op,
                                                    gradient_predivide_factor, reduction))
    return wrapped


def _named_arrays(params):
    if isinstance(params, dict):
        return list(params.items())
    out = []
    for k, item in enumerate(params):
        if isinstance(item, tuple) and len(item) == 2:
            out.append(item)
        else:
            out.append((k, item))
    return out


def broadcast_parameters(params, root_rank: int = 0, comm=None) -> None:
    """Copy ``root_rank``'s arrays into every rank's, in place (one
    ``Bcast`` per array, after one small agreement ``Allreduce``).

    ``params``: a dict ``{name: array}``, or a list of arrays or of
    ``(name, array)`` pairs; every rank passes the same structure.  Shapes
    and dtypes must agree on every rank, and the arrays must be writeable
    and contiguous: checked on every rank before anything is sent.

    Call it right after creating the model, so that every rank starts from
    rank 0's values:

    >>> import numpy as np, nbopt
    >>> from nbopt.distributed import broadcast_parameters
    >>> w = nbopt.Parameter(np.arange(3, dtype=np.float32))
    >>> broadcast_parameters({"w": w}, root_rank=0)
    >>> w.tolist()
    [0.0, 1.0, 2.0]
    """
    comm = get_comm(comm)
    error, signature = None, 0
    items = []
    try:
        if not 0 <= int(root_rank) < comm.Get_size():
            raise ValueError(f"root_rank {root_rank} is not a rank of a communicator of "
                             f"size {comm.Get_size()}")
        items = _named_arrays(params)
        for name, a in items:
            if not isinstance(a, np.ndarray):
                raise TypeError(f"broadcast_parameters: {name!r} is a {type(a).__name__}, "
                                "not a numpy array")
            if not (a.flags.c_contiguous or a.flags.f_contiguous) or not a.flags.writeable:
                raise ValueError(f"broadcast_parameters: {name!r} must be contiguous and "
                                 "writeable (it is overwritten in place)")
        signature = presence_signature([(str(n), a.shape, a.dtype.str) for n, a in items])
    except Exception as error_:   # noqa: BLE001
        error = error_
    agree(comm, error, signature, what="broadcast_parameters",
          mismatch="the ranks passed arrays of different names, shapes or dtypes")
    for _, a in items:
        if a.size:
            comm.Bcast(flat_view(a), root=int(root_rank))


def _plain(obj):
    """A state dict as plain dicts, lists and array copies (what ``bcast``
    sends)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return np.array(obj.view(np.ndarray))
    return obj


def broadcast_optimizer_state(optimizer, root_rank: int = 0, comm=None) -> None:
    """Load ``root_rank``'s optimizer state (``state_dict()``: per-parameter
    state and param-group options, e.g. a learning rate restored from a
    checkpoint on rank 0) into every rank's optimizer.

    One ``bcast`` of the state dict (mpi4py's pickle, between the ranks of
    one job), then ``load_state_dict`` on the other ranks, which validates
    before it changes anything; one agreement ``Allreduce`` then makes every
    rank raise if one failed (that rank is unchanged; the others hold the
    root's state, which is what they were asked to hold).

    >>> import numpy as np, nbopt
    >>> from nbopt.distributed import broadcast_optimizer_state
    >>> opt = nbopt.Adam([nbopt.Parameter(np.zeros(2))], lr=0.1)
    >>> broadcast_optimizer_state(opt, root_rank=0)
    >>> opt.param_groups[0]["lr"]
    0.1
    """
    comm = get_comm(comm)
    from .zero import ZeroRedundancyOptimizer

    if isinstance(optimizer, ZeroRedundancyOptimizer):
        raise TypeError("a ZeroRedundancyOptimizer's state is sharded: use "
                        "consolidate_state_dict/load_state_dict or the sharded checkpoints")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"broadcast_optimizer_state needs an nbopt.Optimizer, got "
                        f"{type(optimizer).__name__}")
    root = int(root_rank)
    payload = _plain(optimizer.state_dict()) if comm.Get_rank() == root else None
    payload = comm.bcast(payload, root=root)
    error = None
    if comm.Get_rank() != root:
        try:
            optimizer.load_state_dict(payload)
        except Exception as error_:   # noqa: BLE001
            error = error_
    agree(comm, error, what="broadcast_optimizer_state")
