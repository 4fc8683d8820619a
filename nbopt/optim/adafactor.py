"""``nbopt.Adafactor`` (torch.optim.Adafactor): factored second moments.

Adafactor is not an element-wise algorithm: each parameter's step needs its
norm, row and column statistics and the norm of its update, and its state is
not shaped like the parameter (``row_var`` is ``(..., m, 1)``, ``col_var``
``(..., 1, n)``).  So it has its own flat state instead of the element-wise
engine's: per (param group, dtype) one buffer holds every row factor, column
factor and variance, ``state[p]`` entries are views of it, and one compiled
kernel call steps the whole group (:mod:`nbopt.kernels.adafactor`).  The
state mapping stays the truth, as in the engine: entries a user rebinds,
deletes or clears (or a loaded state dict) are read back at the next step.
"""
from __future__ import annotations

import heapq
import operator
import struct
from typing import Callable

import numpy as np

from .. import config
from ..engine import (OptimizerState, ParamState, _entry_point, check_grad_matches,
                      check_state_scalar, param_where, read_only_message)
from ..optimizer import Optimizer, _is_number
from ..parameter import (DeviceParameter, Parameter, aligned_zeros, is_device_array,
                         is_sparse_grad)
from ._validation import check_tensor_lr, is_tensor, squeeze_scalar

__all__ = ["Adafactor"]

_MISSING_FACTORS = "row_var and col_var should be defined when grad is multidimensional"
_MISSING_VARIANCE = "variance should be defined when grad is a vector"
# tests: split every parameter's work across the phases (as for one large one)
_SPLIT = False


_KERNELS = None


def _kernels():
    """nbopt.kernels.adafactor, imported on first use (it imports Numba)."""
    global _KERNELS
    if _KERNELS is None:
        from ..kernels import adafactor

        assert len(adafactor.SCALAR_COLUMNS) == _N_SCALARS
        _KERNELS = adafactor
    return _KERNELS


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _is_f_order(a: np.ndarray) -> bool:
    return a.flags.f_contiguous and not a.flags.c_contiguous


def state_shapes(shape: tuple) -> dict:
    """torch's Adafactor state arrays of a parameter of ``shape``:
    ``{"row_var": (..., m, 1), "col_var": (..., 1, n)}`` for two dims or more,
    ``{"variance": shape}`` otherwise."""
    shape = tuple(shape)
    if len(shape) > 1:
        return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1, shape[-1])}
    return {"variance": shape}


def _check_state(entry, param, where: str, what: str = "state") -> tuple:
    """Validate a non-empty ``state[p]`` entry, changing nothing; returns
    ``(step, {name: array})``.  Missing keys raise torch's errors (``KeyError:
    'step'``, its AssertionError for missing factors)."""
    if "step" not in entry:
        raise KeyError("step")
    check_state_scalar(what, "step", where, entry["step"])
    step = float(np.float32(np.asarray(entry["step"]).reshape(())))
    arrays = {}
    for name, shape in state_shapes(param.shape).items():
        value = entry.get(name)
        if value is None:
            raise AssertionError(_MISSING_FACTORS if name != "variance" else _MISSING_VARIANCE)
        if is_device_array(value):
            from ..kernels._cuda import to_host

            value = to_host(value)
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{what} {name!r} for {where} must be an array, "
                             f"got {type(value).__name__}")
        if tuple(value.shape) != shape:
            raise ValueError(f"{what} {name!r} for {where} has shape {value.shape}, but "
                             f"Adafactor's {name} of a parameter of shape {param.shape} has "
                             f"shape {shape}")
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{what} {name!r} for {where} has dtype {value.dtype}, which "
                             f"cannot hold the state of a {param.dtype} parameter")
        arrays[name] = value
    return step, arrays


class _Flat:
    """The state of one (param group, dtype): a flat buffer of every row
    factor, column factor and variance, the float32 step counts, and the
    parameter table of the kernel."""

    def __init__(self, dtype, params: list, positions: list, counts: list, gi: int):
        self.dtype = np.dtype(dtype)
        self.params, self.positions, self.gi = params, positions, gi
        self.counts = np.asarray(counts, np.int64)
        self.max_count = int(self.counts.max())
        k = _kernels()
        n = len(params)
        self.table = np.zeros((n, len(k.DESC_COLUMNS)), np.int64)
        self.sqrt_numel = np.empty(n)
        bases = []
        cursor = nbatch = 0
        item = self.dtype.itemsize
        for i, p in enumerate(params):
            row = self.table[i]
            numel = p.size
            row[k.P_ADDR], row[k.NUMEL] = self._param_address(p), numel
            self.sqrt_numel[i] = numel ** 0.5          # torch's Python pow
            if p.ndim > 1:
                m, nn = p.shape[-2], p.shape[-1]
                batch = p.shape[:-2]
                nb = int(np.prod(batch, dtype=np.int64))
                row[k.NB], row[k.M], row[k.N] = nb, m, nn
                row[k.S_M], row[k.S_N] = p.strides[-2] // item, p.strides[-1] // item
                row[k.FACTORED] = 1
                row[k.OFF_A], row[k.OFF_B] = cursor, cursor + nb * m
                cursor += nb * (m + nn)
                # memory offset of each batch, batches in C order (U's order)
                if batch:
                    idx = np.indices(batch).reshape(len(batch), -1).T
                    bases.append(idx @ (np.asarray(p.strides[:-2], np.int64) // item))
                else:
                    bases.append(np.zeros(1, np.int64))
            else:
                nb = 1
                row[k.NB], row[k.M], row[k.N], row[k.S_N] = 1, 1, numel, 1
                row[k.OFF_A] = cursor
                cursor += numel
                bases.append(np.zeros(1, np.int64))
            row[k.OFF_BATCH] = nbatch
            nbatch += nb
        self.bases = np.concatenate(bases).astype(np.int64) if bases else np.zeros(0, np.int64)
        self.buf = self._zeros(cursor)
        self.rmv = self._zeros(max(nbatch, 1))
        self.c_order = np.array([p.flags.c_contiguous for p in params], bool)
        self.steps = np.zeros(n, np.float32)
        self.owned: list = [None] * n          # the ParamState each slot's views went to
        self.initialized = np.zeros(n, bool)
        self.seen = (None, -1)                 # (state mapping, version) found in sync
        self._plan = None

    on_device = False

    # -- where the memory is (the device flat, nbopt.optim._adafactor_cuda,
    # overrides these) ----------------------------------------------------------
    @staticmethod
    def _param_address(p) -> int:
        return _address(p)

    def _zeros(self, n: int):
        return aligned_zeros(n, self.dtype)

    def _detach(self, value):
        """A loaded value that is not a view of the flat buffer."""
        return value.copy() if np.may_share_memory(value, self.buf) else value

    def _write(self, view, value) -> None:
        np.copyto(view, value, casting="unsafe")

    @staticmethod
    def _zero(view) -> None:
        view.fill(0)

    # -- views -------------------------------------------------------------------
    def views(self, i: int) -> dict:
        """Slot ``i``'s state arrays, views of the flat buffer shaped as torch's."""
        k = _kernels()
        row = self.table[i]
        shapes = state_shapes(self.params[i].shape)
        if row[k.FACTORED]:
            a, b = row[k.OFF_A], row[k.OFF_B]
            size_b = row[k.NB] * row[k.N]
            return {"row_var": self.buf[a:b].reshape(shapes["row_var"]),
                    "col_var": self.buf[b:b + size_b].reshape(shapes["col_var"])}
        a = row[k.OFF_A]
        return {"variance": self.buf[a:a + row[k.NUMEL]].reshape(shapes["variance"])}

    def _step_view(self, i: int) -> np.ndarray:
        return self.steps[i:i + 1].reshape(())

    # -- the state mapping --------------------------------------------------------
    def sync(self, state, slots) -> list:
        """Compare the slots' state entries with the cache, changing nothing:
        ``[(slot, parsed or None, entry)]`` for those that changed (None: no
        or an empty entry, the parameter starts afresh)."""
        seen, version = self.seen
        if seen is state and version == state.version:
            return []
        changes = []
        get = state.get
        for i in slots:
            p = self.params[i]
            entry = get(p)
            own = self.owned[i]
            if entry is own and (own is None or not own._changed):
                continue
            where = param_where(self.gi, self.positions[i])
            if entry is not None and not isinstance(entry, dict):
                raise TypeError(f"state of {where} must be a dict, got {type(entry).__name__}")
            changes.append((i, _check_state(entry, p, where) if entry else None, entry))
        return changes

    def settle(self, state) -> None:
        """Record that every slot's entry is the cache's own (or absent)."""
        get = state.get
        for i, p in enumerate(self.params):
            entry = get(p)
            own = self.owned[i]
            if not (entry is own and (own is None or not own._changed)):
                return
        if type(state) is OptimizerState:
            self.seen = (state, state.version)

    def apply_sync(self, changes: list, state) -> None:
        # values that are views of this buffer are read before any is written
        copies = {i: {name: self._detach(v) for name, v in parsed[1].items()}
                  for i, parsed, _ in changes if parsed is not None}
        for i, parsed, entry in changes:
            p = self.params[i]
            reuse = (type(entry) is ParamState and (entry._home is None and not entry
                                                    or entry._home is state
                                                    and entry._param is p))
            if parsed is None:
                self.initialized[i] = False
                if reuse:
                    entry._changed = False
                    entry._home, entry._param = state, p
                self.owned[i] = entry if reuse else None
                continue
            target = entry if reuse else ParamState()
            items = list(entry.items())
            self.steps[i] = parsed[0]
            views = self.views(i)
            for name, value in copies[i].items():
                self._write(views[name], value)
            if target is entry:
                dict.clear(target)
            for key, value in items:
                if key in views:
                    value = views[key]
                elif key == "step":
                    value = self._step_view(i)
                dict.__setitem__(target, key, value)
            target.adopt(state, p)
            self.initialized[i] = True
            self.owned[i] = target
        self.seen = (None, -1)

    def init_slot(self, i: int, state) -> None:
        """torch's state initialisation: step 0 and zeroed factors."""
        p = self.params[i]
        new = self.owned[i] if self.owned[i] is not None else ParamState()
        self.steps[i] = 0
        dict.__setitem__(new, "step", self._step_view(i))
        for name, view in self.views(i).items():
            self._zero(view)
            dict.__setitem__(new, name, view)
        new.adopt(state, p)
        self.initialized[i] = True
        self.owned[i] = new


def _bins(costs: np.ndarray, nbins: int):
    """Order work items into ``nbins`` bins of similar total cost (largest
    first, each to the lightest bin): ``(order, starts)``."""
    n = len(costs)
    if nbins <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64), np.array([0, n], np.int64)
    order = np.argsort(-costs, kind="stable")
    heap = [(0, b) for b in range(nbins)]
    member = np.empty(n, np.int64)
    for t in order:
        load, b = heapq.heappop(heap)
        member[t] = b
        heapq.heappush(heap, (load + int(costs[t]), b))
    by_bin = np.argsort(member, kind="stable")
    starts = np.searchsorted(member[by_bin], np.arange(nbins + 1))
    return by_bin.astype(np.int64), starts.astype(np.int64)


def _add_tasks(tasks: list, costs: list, kind: int, r: int, batch, count: int, length: int,
               step: int) -> None:
    """Work items ``(kind, r, lo, hi, 0)`` (``batch`` None) or ``(kind, r,
    batch, lo, hi)`` covering ``0:count`` in pieces of ``step``, each costing
    ``length`` per element."""
    for lo in range(0, count, step):
        hi = min(count, lo + step)
        tasks.append((kind, r, lo, hi, 0) if batch is None else (kind, r, batch, lo, hi))
        costs.append((hi - lo) * length)


class _Plan:
    """The kernel's work tables for one set of stepping slots (rebuilt when
    the slots, their gradients' addresses or the thread knobs change)."""

    def __init__(self, flat: _Flat, slots: np.ndarray, grad_addr: np.ndarray):
        k = _kernels()
        self.slots = slots
        self.key = _knobs()
        self.grads = None
        desc = flat.table[slots].copy()
        desc[:, k.G_ADDR] = grad_addr
        self.desc = desc
        chunk = max(1, config.CHUNK_SIZE)
        total = int(desc[:, k.NUMEL].sum())
        parallel = config.runs_parallel(total)
        if parallel:
            import numba

            nbins = numba.get_num_threads()
        else:
            nbins = 1
        self.kernel = k.adafactor_cpu[1 if parallel else 0]
        t1, c1, t3, c3, split = [], [], [], [], []
        block = 1
        widest = 1
        stored = 0
        # one pass per parameter (fused: its three phases by one thread)
        # unless one parameter outweighs a thread's share: then the work of
        # each phase is split across threads
        fuse = int(desc[:, k.NUMEL].max(initial=0)) * nbins <= total and not _SPLIT
        for r, row in enumerate(desc):
            numel, nb, m, n = (int(row[k.NUMEL]), int(row[k.NB]), int(row[k.M]),
                               int(row[k.N]))
            # (a fused matrix is C-ordered with n > 1: its columns are
            # strided and reduced in sequence, as torch reduces them)
            if fuse and (not row[k.FACTORED] or flat.c_order[slots[r]] and n > 1):
                store = numel <= config.ADAFACTOR_STORE_LIMIT
                if store:
                    stored = max(stored, numel)
                if row[k.FACTORED]:
                    t1.append((k.T_FUSED_MATRIX, r, int(store), nb * m, n))
                    block = max(block, 16 + n)
                    widest = max(widest, n)
                else:
                    t1.append((k.T_FUSED_VECTOR, r, int(store), 1, numel))
                    widest = max(widest, numel)
                c1.append(4 * numel)
                continue
            split.append(r)
            if row[k.FACTORED]:
                # row statistics (each a reduction over n), then column ones
                # (over m): contiguous ones by lanes, strided ones in sequence
                # (columns in blocks of at least 512: a row's piece of a
                # narrower block misses the TLB at every row; 1x(1000x10000)
                # float32 14.6 ms instead of 15.3 ms, measured)
                for lane_kind, seq_kind, count, length, contiguous, least in (
                        (k.T_ROWS_LANE, k.T_ROWS_SEQ, m, n, row[k.S_N] == 1 or n == 1, 16),
                        (k.T_COLS_LANE, k.T_COLS_SEQ, n, m, row[k.S_M] == 1 or m == 1, 512)):
                    if contiguous:
                        _add_tasks(t1, c1, lane_kind, r, None, nb * count, length,
                                   max(1, chunk // length))
                    else:
                        width = min(count, max(least, chunk // length))
                        block = max(block, width)
                        for b in range(nb):
                            _add_tasks(t1, c1, seq_kind, r, b, count, length, width)
                rows = max(1, chunk // n)
                for lo in range(0, nb * m, rows):
                    hi = min(nb * m, lo + rows)
                    for j0 in range(0, n, chunk):
                        j1 = min(n, j0 + chunk)
                        t3.append((r, lo, hi, j0, j1))
                        c3.append((hi - lo) * (j1 - j0))
            else:
                for lo in range(0, numel, chunk):
                    hi = min(numel, lo + chunk)
                    t1.append((k.T_VECTOR, r, lo, hi, 0))
                    c1.append(hi - lo)
                    t3.append((r, 0, 1, lo, hi))
                    c3.append(hi - lo)
        tasks1 = np.array(t1, np.int64).reshape(-1, 5)
        order, self.bins1 = _bins(np.array(c1, np.int64), nbins)
        self.tasks1 = np.ascontiguousarray(tasks1[order])
        split = np.array(split, np.int64)
        # phase 2 of a split parameter: two serial norms, ||U|| (kind 0, with
        # mean(R) before U) and ||p|| (kind 1), side by side on two threads
        t2 = np.stack([np.repeat([0, 1], len(split)), np.tile(split, 2)], axis=1)
        c2 = np.tile(desc[split, k.NUMEL], 2)
        order, self.bins2 = _bins(c2, nbins)
        self.params2 = np.ascontiguousarray(t2[order].reshape(-1, 2).astype(np.int64))
        # U of the split parameters, made in parallel pieces before its norm
        self.uoff = np.zeros(len(desc), np.int64)
        sizes = desc[split, k.NUMEL]
        self.uoff[split] = np.cumsum(sizes) - sizes
        self.ustore_size = max(1, int(sizes.sum()))
        self.ustore = None
        tasks3 = np.array(t3, np.int64).reshape(-1, 5)
        order, self.bins3 = _bins(np.array(c3, np.int64), nbins)
        self.tasks3 = np.ascontiguousarray(tasks3[order])
        self.layout = np.array([max(stored, min(widest, 8192)), block], np.int64)
        self.nbins = max(len(self.bins1), len(self.bins2), len(self.bins3)) - 1
        self.work = None
        self.work_threads = None    # the thread count ``work`` was sized for
        self.entry = None           # the kernel's compiled entry point, after its first call
        self.pnorm = np.zeros(len(desc))
        self.coef = np.zeros(len(desc))
        self.sqrtn = flat.sqrt_numel[slots]
        self.uniform = np.zeros(len(desc), np.int64)     # every parameter on row 0

    def valid(self, slots: np.ndarray, grad_addr: np.ndarray) -> bool:
        return (self.key == _knobs() and np.array_equal(self.slots, slots)
                and np.array_equal(self.desc[:, 1], grad_addr))

    def run(self, flat: _Flat, scalars, maximize: bool, fused: bool, threads: int) -> None:
        """One kernel call; ``scalars``: ``(rows, keys)`` from :func:`scalar_rows`
        (``keys`` None: every parameter on the one row)."""
        scal, keys = scalars
        threads = int(threads)
        if self.work_threads != threads:
            width = _kernels().work_width(int(self.layout[0]), int(self.layout[1]), threads)
            if self.work is None or self.work.shape[1] != width:
                self.work = np.zeros((max(self.nbins, 1), width), flat.dtype)
            if self.ustore is None:
                self.ustore = np.empty(self.ustore_size, flat.dtype)
            self.work_threads = threads
        args = (self.desc, scal, self.uniform if keys is None else keys, self.sqrtn, flat.bases,
                self.tasks1, self.bins1, self.params2, self.bins2, self.tasks3, self.bins3,
                flat.buf, self.pnorm, self.coef, flat.rmv, self.work, self.layout, self.ustore,
                self.uoff, bool(maximize), bool(fused), threads)
        entry = self.entry
        if entry is None:
            self.kernel(*args)
            # the argument types are the plan's for good: later calls skip
            # the dispatcher's type resolution of 22 arguments (~1.5 us)
            self.entry = _entry_point(self.kernel, args)
        else:
            entry(*args)


class Adafactor(Optimizer):
    r"""Adafactor, as ``torch.optim.Adafactor``: second moments factored into
    row and column statistics, relative step sizes and update clipping.

    For each parameter :math:`\theta` (factored over its last two dimensions
    :math:`m \times n` when it has two or more, the leading ones being
    batches), at its step :math:`t`:

    .. math::

        G_t &= \pm\nabla_\theta f_t(\theta_{t-1}), \qquad
            \hat\beta_{2t} = 1 - t^{\tau}, \qquad \rho_t = \min(\gamma, 1/\sqrt t) \\
        \alpha_t &= \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t, \qquad
            \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda) \\
        R_t &= \hat\beta_{2t} R_{t-1} + (1 - \hat\beta_{2t})\,
            \mathrm{mean}_{\text{cols}}(G_t \odot G_t), \quad
        C_t = \hat\beta_{2t} C_{t-1} + (1 - \hat\beta_{2t})\,
            \mathrm{mean}_{\text{rows}}(G_t \odot G_t) \\
        \hat V_t &= \frac{R_t C_t}{\max(\mathrm{mean}(R_t), \epsilon_1)}
            \quad\text{(0-d and 1-D: } \hat V_t = \hat\beta_{2t}\hat V_{t-1}
            + (1-\hat\beta_{2t})\,G_t\odot G_t) \\
        U_t &= \frac{G_t}{\sqrt{\max(\hat V_t, \epsilon_1^2)}}, \qquad
        \theta_t = \theta_{t-1} - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U_t)/d)}\,U_t

    with :math:`\mathrm{RMS}(x) = \lVert x\rVert_2/\sqrt{\mathrm{numel}(x)}`.  nbopt
    computes every norm and mean in the summation order of torch's CPU
    kernels, and the per-step scalars in float64 as torch's Python does, so
    float32 and float64 trajectories are torch's bit for bit.

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`, real floating point) or dicts
        defining parameter groups.
    lr : float or 1-element ndarray, default 1e-2
        :math:`\gamma`: the upper bound of the relative step size
        :math:`\rho_t`, and the weight-decay scale.
    beta2_decay : float, default -0.8
        :math:`\tau` (``<= 0``): the second-moment decay :math:`1 - t^\tau`.
    eps : (float or None, float), default (None, 1e-3)
        :math:`\epsilon_1` (None: the machine epsilon of the dtype of the
        group's first parameter that has a gradient), added where the
        estimate is small; :math:`\epsilon_2`, the smallest RMS a parameter
        scales its step by.
    d : float, default 1.0
        Clipping threshold (``>= 1``) of the update's RMS.
    weight_decay : float, default 0.0
        Decoupled weight decay :math:`\lambda` (scaled by lr).
    foreach : bool, optional
        ``True`` rounds the final update as torch's foreach path does (the
        update scaled, then added); None and False are torch's default
        single-tensor path (one fused multiply-add).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Raises
    ------
    ValueError
        For invalid hyper-parameters, with torch's messages.
    RuntimeError
        At ``step``, for a complex parameter with a gradient (``"Adafactor
        does not support complex parameters"``) or a sparse gradient.

    State
    -----
    ``step`` (float32 0-d array); ``row_var`` (shape ``(..., m, 1)``) and
    ``col_var`` (``(..., 1, n)``) for parameters with two or more dimensions,
    ``variance`` (the parameter's shape) for 0-d and 1-D ones.

    Notes
    -----
    GPU parameters (:class:`nbopt.DeviceParameter`) are stepped on their
    device, the state flat there (``nbopt.optim._adafactor_cuda``): the same
    element functions, reductions in the device's order, within a few ulps of
    the CPU path (not bit for bit).

    torch's summation order is that of its x86 CPU kernels (256-bit vector
    lanes), whatever the CPU nbopt runs on.  A single ``mean(R)`` over at
    least 32768 rows is split as torch splits it over its threads:
    ``NBOPT_TORCH_THREADS`` (default: the CPUs of this process) says how many
    torch uses.  Reductions follow the parameter's memory layout (C or
    Fortran order); a gradient of another layout is read as a copy in the
    parameter's.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.array([[1.0, -2.0], [0.5, 3.0]], np.float32))
    >>> b = nbopt.Parameter(np.array([0.1, -0.1], np.float32))
    >>> opt = nbopt.Adafactor([w, b], lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad, b.grad = 2 * w, 2 * b
    ...     opt.step()
    >>> np.round(w, 4)                     # torch's numbers, bit for bit
    array([[ 0.336 , -1.5355],
           [ 0.2402,  2.4902]], dtype=float32)
    >>> opt.state[w]["row_var"].shape, opt.state[w]["col_var"].shape
    ((2, 1), (1, 2))

    References
    ----------
    Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018.
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False):
        check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 >= beta2_decay:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = {"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d,
                    "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize}
        self._flats: dict = {}
        self._steady: dict = {}
        super().__init__(params, defaults)

    def __setstate__(self, state):
        for group in state.get("param_groups", []):
            group.setdefault("foreach", None)
        super().__setstate__(state)
        self._flats = {}
        self._steady = {}

    # -- checkpoints ----------------------------------------------------------------
    def _check_loaded_group(self, group: dict, index: int) -> None:
        eps = group.get("eps")
        if eps is not None:
            if not (isinstance(eps, (tuple, list)) and len(eps) == 2
                    and (eps[0] is None or _is_number(eps[0])) and _is_number(eps[1])):
                raise TypeError(f"loaded state dict's param_groups[{index}]['eps'] must be a "
                                f"pair (number or None, number), got {type(eps).__name__} "
                                f"{eps!r}")
            group = {k: v for k, v in group.items() if k != "eps"}
        super()._check_loaded_group(group, index)

    def _check_loaded_state(self, param, value, where: str, group: dict) -> None:
        _check_state(value, param, where, what="loaded state")

    # -- step -------------------------------------------------------------------------
    def _flat_groups(self, gi: int, group: dict) -> list:
        params = group["params"]
        cached = self._flats.get(gi)
        if cached is not None and cached[0] is group and len(cached[1]) == len(params) \
                and all(map(lambda a, b: a is b, cached[1], params)):
            return cached[2]
        by_dtype: dict = {}
        for pos, p in enumerate(params):
            # one flat per (device, dtype): None is the CPU
            entry = by_dtype.setdefault((getattr(p, "device_index", None), p.dtype), {})
            if id(p) in entry:
                entry[id(p)][2] += 1
            else:
                entry[id(p)] = [p, pos, 1]
        flats = []
        for (device, dtype), entries in by_dtype.items():
            if dtype.kind != "f":
                continue        # refused at step time, once such a parameter has a gradient
            rows = list(entries.values())
            if device is None:
                kind = _Flat
            else:
                from ._adafactor_cuda import DeviceFlat as kind
            flats.append(kind(dtype, [r[0] for r in rows], [r[1] for r in rows],
                              [r[2] for r in rows], gi))
        self._flats[gi] = (group, list(params), flats)
        return flats

    def _check_grads(self, gi: int, group: dict) -> dict:
        """Validate every gradient of the group in torch's order; returns
        ``{id(param): gradient as the kernel reads it}``."""
        grads = {}
        for pos, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            where = param_where(gi, pos)
            if p.dtype.kind == "c":
                raise RuntimeError("Adafactor does not support complex parameters")
            if not isinstance(g, np.ndarray) and is_sparse_grad(g):
                raise RuntimeError("Adafactor does not support sparse gradients")
            if p.dtype.kind != "f":
                raise TypeError(f"{where}: Adafactor can only optimize floating point "
                                f"parameters, got dtype {p.dtype}")
            if isinstance(p, DeviceParameter):
                from ._adafactor_cuda import check_grad

                grads[id(p)] = check_grad(where, p, g)
                continue
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{where}: grad must be a numpy array or None, got "
                                f"{type(g).__name__} (sparse gradients are nbopt.SparseGrad "
                                "objects)")
            check_grad_matches(where, p, g.shape, g.dtype)
            if not p.flags.writeable:
                raise ValueError(read_only_message(where))
            if p.size == 0:
                # torch's ||p|| / numel ** 0.5 is 0.0 / 0.0 in Python
                raise ZeroDivisionError("float division by zero")
            f_order = _is_f_order(p)
            same = (g.flags.f_contiguous if f_order else g.flags.c_contiguous) \
                or p.ndim <= 1 and (g.flags.c_contiguous or g.flags.f_contiguous)
            if not same or np.may_share_memory(p, g):
                # the kernel reads the gradient in the parameter's layout, and
                # reads it after writing the parameter
                g = np.asfortranarray(g) if f_order else np.array(g, order="C", copy=True)
            grads[id(p)] = g
        return grads

    def _host_scalars(self, group: dict, gi: int, eps1_dtype):
        lr = group["lr"]
        beta2_decay = group["beta2_decay"]
        eps1, eps2 = group["eps"]
        d = group["d"]
        wd = group["weight_decay"]
        if eps1 is None:
            eps1 = _EPS[np.dtype(eps1_dtype)]
        for name, value in (("lr", lr), ("beta2_decay", beta2_decay), ("eps", eps2),
                            ("eps", eps1), ("d", d), ("weight_decay", wd)):
            if type(value) is not float and not _is_number(value):
                raise TypeError(f"param_groups[{gi}][{name!r}] must be a number, got "
                                f"{type(value).__name__} {value!r}")
        if is_tensor(lr):
            # torch's 0-d float32 Tensor lr: its products are float32 tensors
            lr = squeeze_scalar(lr).reshape(())
            decay = float(1 - lr * wd)
        else:
            decay = 1 - lr * wd
        return lr, float(beta2_decay), float(eps1), float(eps2), float(d), decay, wd != 0

    def step(self, closure: Callable[[], float] | None = None):
        """Perform a single optimization step.

        Every gradient, state entry and option is validated before anything
        changes.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; called once before the
            update, and its value is returned.
        """
        loss = None
        if closure is not None:
            loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            steady = self._steady.get(gi)
            w = steady.prepare(self, gi, group) if steady is not None else None
            if w is None:
                w = self._prepare(gi, group)
            if w is not None:
                work.append(w)
        for run in work:
            run()
        return loss

    def _prepare(self, gi: int, group: dict):
        """The general step of a group: validates the gradients and the state
        entries, plans the state changes and the kernel calls; returns the
        function that applies them (None: nothing to do)."""
        self._steady.pop(gi, None)
        flats = self._flat_groups(gi, group)
        grads = self._check_grads(gi, group)
        if not grads:
            return None
        first = next(p for p in group["params"] if id(p) in grads)
        hyper = self._host_scalars(group, gi, first.dtype)
        maximize = bool(group["maximize"])
        fused = not group.get("foreach")
        state = self.state
        parts = []
        for flat in flats:
            slots = np.array([i for i, p in enumerate(flat.params) if id(p) in grads],
                             np.int64)
            if not len(slots):
                continue
            changes = flat.sync(state, slots)
            changed = {i: parsed for i, parsed, _ in changes}
            steps = flat.steps.copy()
            fresh = [i for i in slots
                     if (changed[i] is None if i in changed else not flat.initialized[i])]
            for i, parsed in changed.items():
                if parsed is not None:
                    steps[i] = parsed[0]
            steps[fresh] = 0
            grad_list = [grads[id(flat.params[i])] for i in slots]
            addr = np.array([0 if flat.on_device else _address(g) for g in grad_list], np.int64)
            rounds = []
            for r in range(flat.max_count):
                take = flat.counts[slots] > r
                members = slots[take]
                if not len(members):
                    break
                steps[members] += np.float32(1)
                rounds.append((members, addr[take], scalar_rows(steps[members], *hyper)))
            parts.append((flat, changes, fresh, steps, rounds, grad_list))
        steady = all(len(rounds) == 1 and not flat.on_device
                     for flat, _, _, _, rounds, _ in parts)

        def run():
            for flat, changes, fresh, steps, rounds, grad_list in parts:
                if changes:
                    flat.apply_sync(changes, state)
                for i in fresh:
                    flat.init_slot(int(i), state)
                flat.steps[:] = steps
                for members, addr, scal in rounds:
                    if flat.on_device:
                        flat.step_device(members, [grads[id(flat.params[i])] for i in members],
                                         scal, maximize, fused)
                        continue
                    plan = flat._plan
                    if plan is None or not plan.valid(members, addr):
                        plan = flat._plan = _Plan(flat, members, addr)
                    plan.run(flat, scal, maximize, fused, config.TORCH_THREADS)
                    plan.grads = grad_list   # keeps layout copies alive while cached
                flat.settle(state)
            if steady:
                self._steady[gi] = _Steady(self, gi, group, first.dtype, grads,
                                           [(flat, rounds[0][0]) for flat, *_, rounds, _ in parts])
        return run


def scalar_rows(t, lr, beta2_decay, eps1, eps2, d, decay, decay_on):
    """The kernel's scalar rows for step counts ``t`` (float32, after the
    increment, one per stepping parameter): torch's Python arithmetic on
    ``step.item()`` and the group's options, in float64.  Returns ``(rows,
    keys)``: one row per distinct count and each parameter's row (None when
    all counts are equal, the usual case)."""
    first = t[0]
    if t.shape[0] == 1 or (t == first).all():
        counts, keys = (first,), None
    else:
        counts, keys = np.unique(t, return_inverse=True)
        keys = keys.reshape(-1).astype(np.int64)
    scal = np.empty((len(counts), _N_SCALARS))
    lr_f32 = is_tensor(lr)
    for r, tr in enumerate(counts):
        tr = float(tr)
        omega = tr ** beta2_decay
        inv = 1 / (tr ** 0.5)
        if lr_f32:
            # min(lr, inv) with a float32 Tensor lr: a float32 comparison
            rho, rho32 = (inv, 0.0) if np.float32(inv) < lr else (float(lr), 1.0)
        else:
            rho, rho32 = min(lr, inv), 0.0
        # packed into the row's memory: NumPy's sequence assignment costs
        # ~0.6 us of a 1k-element step
        _PACK_ROW(scal, r * _N_SCALARS * 8, omega, rho, eps2, decay, eps1, eps1 * eps1, d, rho32,
                  1.0 if decay_on else 0.0)
    return scal, keys


_N_SCALARS = 9      # len(SCALAR_COLUMNS) of nbopt.kernels.adafactor (checked in _kernels)
_PACK_ROW = struct.Struct("=9d").pack_into


_EPS = {np.dtype(np.float16): float(np.finfo(np.float16).eps),
        np.dtype(np.float32): float(np.finfo(np.float32).eps),
        np.dtype(np.float64): float(np.finfo(np.float64).eps)}
_GRAD = operator.attrgetter("grad")


class _Steady:
    """A group's step while nothing changed but gradient values (or arrays of
    the same layout), options and step counts: the general step's validated
    plan, re-run with new scalars.

    Valid while the group and its params list are the same, no ``.grad`` was
    assigned that is not a checked array of the parameter's layout, and the
    state mapping was not edited (its version; a step count written in place
    is read from the flat state, where it lives)."""

    def __init__(self, opt, gi, group, first_dtype, grads, entries):
        self.group, self.snapshot = group, list(group["params"])
        self.state, self.version = opt.state, opt.state.version
        self.epoch = Parameter._grad_epoch
        self.grads = [grads.get(id(p)) for p in self.snapshot]   # None: no gradient
        self.grad_ids = list(map(id, self.grads))
        self.first_dtype = first_dtype
        self.entries = entries
        where = {}
        for fi, (flat, members) in enumerate(entries):
            for row, i in enumerate(members):
                where[id(flat.params[i])] = (fi, row)
        # position in the group -> (entry, row of its plan) of the first occurrence
        self.rows = [where.get(id(p)) for p in self.snapshot]

    def prepare(self, opt, gi, group):
        """This step's run function, or None when the general step must plan it."""
        state = opt.state
        if (group is not self.group or state is not self.state
                or state.version != self.version or len(group["params"]) != len(self.snapshot)
                or not all(map(operator.is_, group["params"], self.snapshot))):
            return None
        if Parameter._grad_epoch != self.epoch and not self._new_grads(gi):
            return None
        for flat, _ in self.entries:
            if flat._plan is None or flat._plan.key != _knobs():
                return None
        hyper = opt._host_scalars(group, gi, self.first_dtype)
        maximize = bool(group["maximize"])
        fused = not group.get("foreach")
        todo = []
        for flat, members in self.entries:
            t = flat.steps[members] + np.float32(1)
            todo.append((flat, members, t, scalar_rows(t, *hyper)))

        def run():
            threads = config.TORCH_THREADS
            for flat, members, t, scal in todo:
                flat.steps[members] = t
                flat._plan.run(flat, scal, maximize, fused, threads)
        return run

    def _new_grads(self, gi) -> bool:
        """Gradients assigned since the last step: the plan holds if each new
        one is a checked array the kernel reads in place (same layout, not
        the parameter's memory).  Validates them (raising as the general step
        does); their addresses go into the plans."""
        grads = list(map(_GRAD, self.snapshot))
        ids = list(map(id, grads))
        if ids == self.grad_ids:
            self.epoch = Parameter._grad_epoch
            return True
        updates = []
        for pos, (g, old, p) in enumerate(zip(grads, self.grads, self.snapshot)):
            if g is old:
                continue
            if g is None or old is None or not isinstance(g, np.ndarray):
                return False
            where = param_where(gi, pos)
            check_grad_matches(where, p, g.shape, g.dtype)
            f_order = _is_f_order(p)
            if not ((g.flags.f_contiguous if f_order else g.flags.c_contiguous)
                    or p.ndim <= 1 and (g.flags.c_contiguous or g.flags.f_contiguous)) \
                    or np.may_share_memory(p, g):
                return False
            updates.append((pos, g))
        for pos, g in updates:
            fi, row = self.rows[pos]
            plan = self.entries[fi][0]._plan
            plan.desc[row, _kernels().G_ADDR] = _address(g)
            self.grads[pos] = g
        # duplicates: every occurrence is the same parameter, hence the same gradient
        self.grad_ids = list(map(id, self.grads))
        self.epoch = Parameter._grad_epoch
        return ids == self.grad_ids


def _knobs():
    # every change of a config knob bumps its generation (PARALLEL_THRESHOLD,
    # CHUNK_SIZE, ADAFACTOR_STORE_LIMIT and the serial-only decision shape a plan)
    return config.generation
