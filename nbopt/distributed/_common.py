"""What both distributed optimizers share: the communicator, the flat
parameter space of one (param group, dtype), the fixed-order reduction, and
the agreement on success that keeps one bad rank from hanging the others.

Reduction order (the exactness contract)
----------------------------------------
MPI's ``Allreduce`` may add the ranks' contributions in any order (ring,
tree, recursive halving...), and float addition is not associative, so with
three or more ranks its sum can differ in the last bit from any fixed
single-process sum.  nbopt's default reduction is therefore a *rank-ordered
reduce-scatter*: the flat gradient of a (group, dtype) is cut into P equal
contiguous ranges; one ``Alltoallv`` sends range ``r`` of every rank to rank
``r``, which adds the P pieces in rank order, ``((g_0 + g_1) + g_2) + ...``,
in the gradient's dtype, and divides by P (``op=Average``).  This is exactly
what one process computes from the same per-rank gradients with
``g = g_0.copy(); g += g_1; ...; g /= P``, whatever P is.  The data-parallel
optimizer then ``Allgatherv``-s the reduced ranges back (reduce-scatter +
allgather: the same bytes on the wire as a bandwidth-optimal ring
allreduce); ZeRO steps its range and allgathers parameters instead.
"""
from __future__ import annotations

import zlib

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from ..engine import check_grad_matches, param_where
from ..parameter import is_device_array, is_sparse_grad

__all__ = ["Average", "Sum", "get_comm", "FlatSpace", "agree", "DistributedStepError",
           "flat_view", "layout_order", "state_nbytes", "validate_local_step"]

#: Reduction ops, as Horovod names them: ``Average`` divides the rank-ordered
#: sum by the number of ranks, ``Sum`` does not.
Average = "average"
Sum = "sum"


class DistributedStepError(RuntimeError):
    """Raised on every rank that did not fail itself when another rank's
    check failed before a collective: nothing was changed on any rank."""


def get_comm(comm):
    """``comm`` or ``MPI.COMM_WORLD``; anything else that is not an mpi4py
    intracommunicator is refused."""
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError("process_group must be an mpi4py intracommunicator (e.g. "
                        f"MPI.COMM_WORLD or a comm.Split() of it), got {type(comm).__name__}")
    return comm


def layout_order(a) -> str:
    """The order in which ``a``'s elements lie in memory ('C' or 'F')."""
    return "F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C"


def real_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return np.finfo(dtype).dtype if dtype.kind == "c" else dtype


def flat_view(a) -> np.ndarray:
    """A 1-D real view of contiguous array ``a`` in memory order (complex
    arrays as their interleaved real and imaginary parts, as torch's
    view_as_real); never a copy."""
    flat = a.view(np.ndarray).ravel(order="K")
    if flat.dtype.kind == "c":
        flat = flat.view(real_dtype(flat.dtype))
    if not np.shares_memory(flat, a) and a.size:
        raise AssertionError("flat_view copied")        # contiguity is checked by the caller
    return flat


def grad_flat(p, g) -> np.ndarray:
    """Gradient ``g`` as a 1-D real array whose element k belongs to
    parameter element k in memory order (a view when the layouts agree)."""
    flat = np.ravel(np.asarray(g), order=layout_order(p))
    return flat.view(real_dtype(flat.dtype)) if flat.dtype.kind == "c" else flat


def _root(a: np.ndarray):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def contiguous_run(arrays: list, dtype) -> np.ndarray | None:
    """A 1-D view covering ``arrays`` when they lie back to back, in order, in
    one buffer in their own memory order (a :class:`nbopt.ParameterArena`),
    else None."""
    if not arrays or any(a is None or not isinstance(a, np.ndarray) for a in arrays):
        return None
    first = arrays[0]
    start = _address(first)
    end = start
    for a in arrays:
        if a.dtype != first.dtype or not (a.flags.c_contiguous or a.flags.f_contiguous):
            return None
        if _address(a) != end:
            return None
        end += a.nbytes
    root = _root(first)
    if root.ndim != 1 or not root.flags.c_contiguous or root.dtype != first.dtype:
        return None
    base = _address(root)
    if start < base or end > base + root.nbytes:
        return None
    view = root[(start - base) // root.itemsize:(end - base) // root.itemsize]
    return view.view(real_dtype(view.dtype)) if view.dtype.kind == "c" else view


def state_nbytes(optimizer) -> int:
    """Bytes of optimizer state held by this process: the element-wise
    engine's flat state arrays (and per-parameter step counters) for
    nbopt's element-wise optimizers, the arrays in ``optimizer.state``
    otherwise.  For a :class:`ZeroRedundancyOptimizer`, its local shard's."""
    inner = getattr(optimizer, "optim", None)
    if inner is not None and inner is not optimizer:
        return state_nbytes(inner)
    plans = getattr(optimizer, "_flat", None)
    if isinstance(plans, dict):
        total = 0
        for plan in plans.values():
            for fg in plan.flat:
                total += sum(a.nbytes for a in fg.arrays.values() if a is not None)
                total += fg.steps.nbytes + sum(a.nbytes for a in fg.sstate.values())
        return total
    total = 0
    for entry in optimizer.state.values():
        for v in entry.values() if isinstance(entry, dict) else ():
            if isinstance(v, np.ndarray):
                total += v.nbytes
    return total


def validate_local_step(optimizer) -> None:
    """Run everything an element-wise optimizer's ``step`` checks (gradients,
    options, state edits) and change nothing: the step's validation phase
    without its run phase.  Other optimizers validate at their step."""
    from ..optimizer import ElementwiseOptimizer

    if not isinstance(optimizer, ElementwiseOptimizer):
        return
    for gi, group in enumerate(optimizer.param_groups):
        flat = optimizer._flat_groups(gi, group)
        optimizer._check_param_dtypes(gi)
        for fg in flat:
            fg.prepare(group, optimizer.defaults, optimizer.state)


_MISMATCH = ("the ranks disagree on which parameters have gradients (or on their shapes and "
             "dtypes); every rank must step the same parameters")


def agree(comm, error: BaseException | None, signature: int = 0, what: str = "step",
          mismatch: str = _MISMATCH) -> None:
    """Every rank learns whether every rank's checks passed: one ``Allreduce``
    (MAX) of a vector of P + 2 int64 (a failure flag per rank, and a
    signature and its negation, so that ranks that would pair different
    collectives are caught).  A rank whose check failed re-raises its own
    error; the others raise :class:`DistributedStepError` naming the failed
    ranks.  Called before any collective that moves data, so a failure
    changes nothing anywhere and no rank is left waiting in a collective."""
    size, rank = comm.Get_size(), comm.Get_rank()
    flags = np.zeros(size + 2, np.int64)
    flags[rank] = error is not None
    signature = int(signature) & 0x3FFFFFFFFFFFFFFF
    flags[size], flags[size + 1] = signature, -signature
    if size > 1:
        comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
    if error is not None:
        raise error
    failed = np.flatnonzero(flags[:size]).tolist()
    if failed:
        raise DistributedStepError(
            f"{what} failed on rank(s) {failed} of {size} (see the error raised there); "
            "it was detected before any data was exchanged: nothing was changed on any rank")
    if flags[size] != -flags[size + 1]:
        raise DistributedStepError(f"{what}: {mismatch}: nothing was changed on any rank")


def presence_signature(items) -> int:
    """A small hash of ``items`` (tuples of ints/strings) for :func:`agree`."""
    return zlib.crc32(repr(tuple(items)).encode()) | (len(items) << 32)


class FlatSpace:
    """The flat parameter space of the ``dtype`` parameters of one param
    group, and its split into P equal contiguous ranges.

    Parameters are laid out back to back in group order, each in its memory
    order (complex ones as their real view), ``total`` elements in all.
    Rank ``r`` owns ``[r*S, min((r+1)*S, total))`` with ``S = ceil(total/P)``:
    every range has S elements except the last one or ones (equal shards,
    parameters split where a boundary falls inside them).
    """

    def __init__(self, comm, group_index: int, params: list, positions: list, dtype):
        self.comm = comm
        self.size, self.rank = comm.Get_size(), comm.Get_rank()
        self.group_index = group_index
        self.params, self.positions = params, positions
        self.dtype = real_dtype(dtype)
        # the predefined MPI_FLOAT / MPI_DOUBLE: MPI_SUM is defined on them
        # (not on the derived datatypes from_numpy_dtype makes for other dtypes)
        self.mpi_type = MPI._typedict.get(self.dtype.char) or from_numpy_dtype(self.dtype)
        self.sizes = np.array([p.size * (2 if p.dtype.kind == "c" else 1) for p in params],
                              np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(self.sizes)))[:-1].astype(np.int64)
        self.total = int(self.sizes.sum())
        P = self.size
        self.chunk = -(-self.total // P) if self.total else 0
        starts = np.minimum(np.arange(P, dtype=np.int64) * self.chunk, self.total)
        self.counts = np.minimum(starts + self.chunk, self.total) - starts
        self.starts = starts
        self.lo = int(starts[self.rank])
        self.hi = self.lo + int(self.counts[self.rank])
        self._recv = None          # (P, own count) buffer of the reduce-scatter
        self._pack = None          # packed gradients when they are not one run
        self._mirror = None        # packed parameters when they are not one run

    # -- where things are -------------------------------------------------------
    def where(self, i: int) -> str:
        return param_where(self.group_index, self.positions[i])

    def pieces(self):
        """``(i, a, b)``: parameter ``i``'s elements ``[a, b)`` (real view,
        memory order) that lie in this rank's range."""
        out = []
        for i, (off, n) in enumerate(zip(self.offsets.tolist(), self.sizes.tolist())):
            a, b = max(self.lo, off), min(self.hi, off + n)
            if a < b:
                out.append((i, a - off, b - off))
        return out

    def ranges_of(self, rank: int) -> list:
        """``(i, a, b)`` of every parameter piece owned by ``rank``."""
        lo, hi = int(self.starts[rank]), int(self.starts[rank] + self.counts[rank])
        out = []
        for i, (off, n) in enumerate(zip(self.offsets.tolist(), self.sizes.tolist())):
            a, b = max(lo, off), min(hi, off + n)
            if a < b:
                out.append((i, a - off, b - off))
        return out

    # -- gradients --------------------------------------------------------------
    def check_grads(self, owner: str) -> list:
        """Validate every gradient (dense, the parameter's shape and dtype);
        returns the presence mask.  Changes nothing."""
        present = []
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                present.append(False)
                continue
            if is_sparse_grad(g) and not isinstance(g, np.ndarray):
                raise RuntimeError(f"{self.where(i)}: {owner} reduces dense gradients only; "
                                   "this one is sparse (densify it with g.to_dense(), or use "
                                   "an optimizer without the distributed wrapper)")
            if is_device_array(g) or not isinstance(g, np.ndarray):
                raise TypeError(f"{self.where(i)}: grad must be a numpy array or None, got "
                                f"{type(g).__name__}")
            check_grad_matches(self.where(i), p, g.shape, g.dtype)
            present.append(True)
        return present

    def grad_buffer(self, present: list) -> tuple[np.ndarray, bool]:
        """The flat gradient: a view of the gradients' own buffer when they
        are one run (an arena), else a packed copy (zeros where a gradient is
        None).  Returns ``(flat, in_place)``."""
        grads = [p.grad for p in self.params]
        if all(present):
            run = contiguous_run(grads, self.dtype)
            if run is not None and all(layout_order(g) == layout_order(p) or g.ndim <= 1
                                       for p, g in zip(self.params, grads)):
                return run, True
        if self._pack is None:
            self._pack = np.empty(self.total, self.dtype)
        flat = self._pack
        for i, (p, off, n) in enumerate(zip(self.params, self.offsets, self.sizes)):
            if present[i]:
                flat[off:off + n] = grad_flat(p, p.grad)
            else:
                flat[off:off + n] = 0
        return flat, False

    def write_back(self, flat: np.ndarray, present: list) -> None:
        """Copy the reduced flat gradient into each gradient array, in place."""
        for i, (p, off, n) in enumerate(zip(self.params, self.offsets, self.sizes)):
            if present[i]:
                g = p.grad
                view = flat[off:off + n]
                if g.dtype.kind == "c":
                    view = view.view(g.dtype)
                np.copyto(g, view.reshape(g.shape, order=layout_order(p)))

    def reduce_scatter(self, flat: np.ndarray, out: np.ndarray, op: str,
                       predivide: float = 1.0) -> None:
        """Rank-ordered reduce-scatter: ``out`` (this rank's range) becomes
        ``((flat_0 + flat_1) + ... + flat_{P-1})[lo:hi]`` in the dtype, then
        ``/ P`` for ``Average``.  With ``predivide = f != 1`` each rank's part
        is multiplied by ``1/f`` before the sum and the sum by ``f/P`` after
        (Horovod's prescale and postscale)."""
        P = self.size
        own = self.hi - self.lo
        if P == 1:
            np.copyto(out, flat[self.lo:self.hi])
            recv = out.reshape(1, own)
        else:
            if self._recv is None:
                self._recv = np.empty((P, own), self.dtype)
            recv = self._recv
            send_counts = self.counts
            send_displs = self.starts
            recv_counts = np.full(P, own, np.int64)
            recv_displs = np.arange(P, dtype=np.int64) * own
            self.comm.Alltoallv([flat, (send_counts, send_displs), self.mpi_type],
                                [recv, (recv_counts, recv_displs), self.mpi_type])
        dt = self.dtype.type
        if op == Average and predivide != 1.0:
            recv *= dt(1.0 / predivide)
        if P > 1:
            np.copyto(out, recv[0])
            for k in range(1, P):
                out += recv[k]
        elif op == Average and predivide != 1.0:
            np.copyto(out, recv[0])
        if op == Average:
            if predivide != 1.0:
                out *= dt(predivide / P)
            elif P > 1:
                out /= dt(P)

    def allgather(self, flat: np.ndarray) -> None:
        """Every rank's range of ``flat`` to every rank, in place."""
        if self.size > 1:
            self.comm.Allgatherv(MPI.IN_PLACE, [flat, (self.counts, self.starts),
                                                self.mpi_type])

    def allreduce_mpi(self, flat: np.ndarray, op: str, predivide: float = 1.0) -> None:
        """MPI's own ``Allreduce`` (SUM), in place: one collective, MPI's
        summation order (bit-identical to the rank-ordered sum for P <= 2)."""
        dt = self.dtype.type
        if op == Average and predivide != 1.0:
            flat *= dt(1.0 / predivide)
        if self.size > 1:
            self.comm.Allreduce(MPI.IN_PLACE, [flat, self.mpi_type], op=MPI.SUM)
        if op == Average:
            if predivide != 1.0:
                flat *= dt(predivide / self.size)
            elif self.size > 1:
                flat /= dt(self.size)

    # -- parameters -------------------------------------------------------------
    def param_buffer(self) -> tuple[np.ndarray, bool]:
        """The flat parameters: a view of their own buffer when they are one
        run (an arena), else a mirror filled from them."""
        run = contiguous_run(self.params, self.dtype)
        if run is not None:
            return run, True
        if self._mirror is None:
            self._mirror = np.empty(self.total, self.dtype)
        return self._mirror, False

    def fill_own(self, flat: np.ndarray) -> None:
        """Copy this rank's range of the parameters into ``flat``."""
        for i, a, b in self.pieces():
            off = int(self.offsets[i])
            flat[off + a:off + b] = flat_view(self.params[i])[a:b]

    def scatter_params(self, flat: np.ndarray) -> None:
        """Copy the other ranks' ranges of ``flat`` into the parameters."""
        for i, (p, off, n) in enumerate(zip(self.params, self.offsets.tolist(),
                                            self.sizes.tolist())):
            dst = flat_view(p)
            for a, b in ((0, max(0, min(n, self.lo - off))), (max(0, self.hi - off), n)):
                if a < b:
                    dst[a:b] = flat[off + a:off + b]


def flat_spaces(comm, param_groups: list) -> list:
    """A :class:`FlatSpace` per (param group, dtype), dtypes in order of first
    appearance in the group (duplicate parameters once)."""
    spaces = []
    for gi, group in enumerate(param_groups):
        by_dtype: dict = {}
        for pos, p in enumerate(group["params"]):
            entry = by_dtype.setdefault(real_dtype(p.dtype), {})
            entry.setdefault(id(p), (p, pos))
        for dtype, entries in by_dtype.items():
            rows = list(entries.values())
            spaces.append(FlatSpace(comm, gi, [r[0] for r in rows], [r[1] for r in rows], dtype))
    return spaces
