"""LBFGS's vector work on a GPU: :class:`DeviceFlatParams`, the device
counterpart of :class:`nbopt.optim.lbfgs._FlatParams`.

:class:`nbopt.LBFGS` runs one algorithm (its ``step`` and the strong-Wolfe
line search, on host scalars) over a backend object of flat-vector
operations; this is the backend when every parameter is a
:class:`nbopt.DeviceParameter` on one GPU.  The flat vectors (the gradient,
the direction, the history ``old_dirs`` / ``old_stps``, ``prev_flat_grad``,
the line search's copy of the parameters) are device arrays, and every pass
is a CUDA kernel of :mod:`nbopt.kernels.lbfgs` around the CPU passes'
element functions.  Only the scalars the algorithm branches on come back to
the host: each reduction leaves per-chunk float64 partial results on the
device (the CPU's chunks, lanes and order: see that module), which are copied
back and added in the CPU's order, so the scalars and vectors are the CPU
path's bit for bit.

Imported when an LBFGS first meets device parameters, so that
``import nbopt`` and the CPU path never import ``numba.cuda``.  Every copy
and launch is on the default stream (as :mod:`nbopt.engine_cuda`).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .. import config
from ..engine import param_where
from ..engine_cuda import _on, check_device_grad
from ..kernels import _cuda as cu
from ..kernels import lbfgs as k
from ..parameter import is_device_array

__all__ = ["DeviceFlatParams"]


def _memory_view(d):
    """A C- or F-contiguous device array as a 1-D array of reals in memory
    order, and whether that order is Fortran's (with more than one axis
    that matters, so that it differs from C's)."""
    fortran = not d.is_c_contiguous()
    flat = d.reshape(d.size, order="F" if fortran else "C")
    if np.dtype(flat.dtype).kind == "c":
        flat = flat.view(np.finfo(flat.dtype).dtype)
    return flat, fortran


def _c_order_positions(shape, complex_: bool) -> np.ndarray:
    """For a Fortran-ordered array of ``shape``: the memory position (in
    reals) of each real of its C-order flat view."""
    pos = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape, order="F").ravel()
    if complex_:
        pos = (2 * pos[:, None] + np.arange(2, dtype=np.int64)).ravel()
    return np.ascontiguousarray(pos)


def _total(column: np.ndarray) -> float:
    """The chunks' partial sums added in order from 0.0, as the CPU kernels
    add them (``cumsum`` is a sequential sum; a partial sum is never -0.0, so
    starting at the first one is starting at 0.0)."""
    return float(np.cumsum(column)[-1]) if column.size else 0.0


def _maximum(column: np.ndarray) -> float:
    return float(column.max()) if column.size else 0.0      # NaN if any is NaN


class DeviceFlatParams:
    """The parameters of the single group, all on one GPU, as one flat real
    vector: the operations LBFGS's step asks of its backend (the same
    interface as the CPU's ``_FlatParams``), on device arrays.

    Parameters of the vector's real dtype that are C-contiguous are reached
    in place through a device table of addresses; any other (Fortran-ordered,
    or of another dtype when dtypes are mixed) through a C-order flat device
    copy, made and written back by a permuting kernel around the pass (the
    CPU path's temporary copies).
    """

    MAX_SPARE = 6

    def __init__(self, params: list, dtype: np.dtype):
        from .lbfgs import _real_dtype

        self.params = list(params)
        self.device = self.params[0].device_index
        self.dtype = np.dtype(dtype)
        self.scalar = self.dtype.type
        self.zero = self.scalar(0)
        reals = [_real_dtype(p.dtype) for p in self.params]
        self.complex = [p.dtype.kind == "c" for p in self.params]
        self.sizes = np.array([p.size * (2 if c else 1) for p, c in zip(self.params, self.complex)],
                              np.int64)
        self.offsets = np.zeros(len(self.params), np.int64)
        if len(self.params) > 1:
            np.cumsum(self.sizes[:-1], out=self.offsets[1:])
        self.total = int(self.sizes.sum())
        self.direct = [r == self.dtype and p.flags.c_contiguous
                       for p, r in zip(self.params, reals)]
        self.all_direct = all(self.direct)
        self.serial = len({id(p) for p in self.params}) != len(self.params)
        self.chunks = k.table_chunks(self.sizes)
        self.n_chunks = len(self.chunks)
        self.n_blocks = -(-self.total // k.BLOCK)
        # each row's chunks (they are in row order): a parameter listed twice
        # is written by one launch per row, in row order, as the CPU's serial loop
        rows = self.chunks[:, 0]
        self.row_chunks = [(int(np.searchsorted(rows, r)), int(np.searchsorted(rows, r, "right")))
                           for r in range(len(self.params))]
        self.spare: list = []
        self._token = object()      # marks the vectors of new(), which free() takes back
        self._indices = {}
        self._grad_temps = {}
        self._zeros = None
        rows_max = max(self.n_chunks, self.n_blocks, 1)
        with _on(self.device):
            self.empty = cuda.device_array(1, self.dtype)[:0]
            self.no_index = cuda.device_array(1, np.int64)[:0]
            self.lanes = cuda.device_array((rows_max, 3, k.LANES), self.dtype)
            self.part = {n: cuda.device_array((rows_max, n), np.float64) for n in (1, 2, 3)}
            self.d_chunks = cuda.to_device(self.chunks if self.n_chunks
                                           else np.zeros((1, 3), np.int64))
            # parameters: in place, or through a flat copy (self.temps)
            self.temps = {}
            table = np.zeros((len(self.params), 3), np.int64)
            table[:, 1] = self.offsets
            table[:, 2] = self.sizes
            for i, p in enumerate(self.params):
                if self.direct[i]:
                    table[i, 0] = cu.device_address(p.data) if p.size else 0
                else:
                    mem, fortran = _memory_view(p.data)
                    temp = cuda.device_array(max(int(self.sizes[i]), 1), self.dtype)
                    temp = temp[:int(self.sizes[i])]
                    self.temps[i] = (temp, mem, self._index(i) if fortran else self.no_index)
                    table[i, 0] = cu.device_address(temp) if self.sizes[i] else 0
            self.table = table
            self.d_table = cuda.to_device(table)
            self.d_gtable = cuda.to_device(table)
        self._gtable_host = table.copy()
        self._uploaded = table[:, 0].copy()     # the addresses in d_gtable

    # -- device helpers ----------------------------------------------------------
    def _index(self, i: int):
        """Parameter ``i``'s C-order positions in Fortran-ordered memory (cached)."""
        index = self._indices.get(i)
        if index is None:
            with _on(self.device):
                index = cuda.to_device(_c_order_positions(self.params[i].shape,
                                                          self.complex[i]))
            self._indices[i] = index
        return index

    def _launch(self, kernel, n_blocks: int, *args) -> None:
        if n_blocks:
            blocks = min(n_blocks, cu.MAX_BLOCKS)
            with _on(self.device):
                kernel(blocks, config.CUDA_THREADS, *args)

    def _table_launch(self, kernel, table, writes_params: bool, args) -> None:
        """Launch a pointer-table kernel ``kernel(table, chunks, *args, [lanes])``
        over every chunk; one launch per row where a parameter is listed twice
        and the kernel writes parameters (rows in order, as the CPU's serial
        loop).  ``args`` ends with ``True`` where the kernel takes lanes."""
        *args, with_lanes = args
        if self.serial and writes_params:
            for lo, hi in self.row_chunks:
                extra = (self.lanes[lo:hi],) if with_lanes else ()
                self._launch(kernel, hi - lo, table, self.d_chunks[lo:hi], *args, *extra)
        else:
            extra = (self.lanes,) if with_lanes else ()
            self._launch(kernel, self.n_chunks, table, self.d_chunks, *args, *extra)

    def _reduce(self, rows: int, n_red: int, n_max: int) -> np.ndarray:
        """Each chunk's reductions from its lanes (float64, in the CPU's
        order), as a host ``(rows, n_red)`` array; waits for the passes."""
        if rows == 0:
            return np.zeros((0, n_red))
        part = self.part[n_red][:rows]
        items = rows * n_red
        threads = min(config.CUDA_THREADS, items)
        with _on(self.device):
            k.lbfgs_lanes_cuda_kernel(min(-(-items // threads), cu.MAX_BLOCKS), threads,
                                      self.lanes, np.int64(rows), np.int64(n_max), part)
            return part.copy_to_host()

    def _permute(self, flat, mem, index, to_flat: bool) -> None:
        n = flat.shape[0]
        if n:
            threads = min(config.CUDA_THREADS, n)
            with _on(self.device):
                k.lbfgs_permute_cuda_kernel(min(-(-n // threads), 4096), threads, flat, mem,
                                            index, to_flat)

    # -- flat vectors ------------------------------------------------------------
    def new(self):
        if self.spare:
            return self.spare.pop()
        with _on(self.device):
            a = cuda.device_array(max(self.total, 1), self.dtype)[:self.total]
        a._nbopt_lbfgs_pool = self._token
        return a

    def free(self, a) -> None:
        """Give back a vector of :meth:`new` that nothing else references any
        more (the caller's promise) for :meth:`new` to hand out again."""
        if (len(self.spare) < self.MAX_SPARE
                and getattr(a, "_nbopt_lbfgs_pool", None) is self._token
                and not any(a is b for b in self.spare)):
            self.spare.append(a)

    def vector(self, a):
        """A stored flat vector as a device array of this dtype (the same
        object when it already is one): host arrays (a checkpoint, a user's
        edit of the state) go to the device."""
        if a is None:
            return None
        if is_device_array(a):
            d = cu.as_device_array(a)
            if np.dtype(d.dtype) == self.dtype and d.ndim == 1 and d.is_c_contiguous():
                return d
            a = d.copy_to_host()
        host = np.ascontiguousarray(np.asarray(a), dtype=self.dtype).reshape(-1)
        with _on(self.device):
            return cuda.to_device(host)

    def copy(self, x):
        out = self.new()
        with _on(self.device):
            out.copy_to_device(x)
        return out

    def assign(self, dst, src) -> None:
        with _on(self.device):
            dst.copy_to_device(src)

    # -- parameters --------------------------------------------------------------
    def _param_table(self, refresh: bool = True):
        if refresh:
            for temp, mem, index in self.temps.values():
                self._permute(temp, mem, index, True)
        return self.d_table

    def _write_back(self) -> None:
        if self.serial:
            # rows in order: the last listing of a parameter wins, as on the CPU
            for i in range(len(self.params)):
                if i in self.temps:
                    temp, mem, index = self.temps[i]
                    self._permute(temp, mem, index, False)
        else:
            for temp, mem, index in self.temps.values():
                self._permute(temp, mem, index, False)

    def add(self, t, d, x=None):
        """``p += t * d`` for every parameter, after ``set(x)`` with ``x``;
        returns ``max|d * t|``."""
        if x is not None:
            self.set(x)
        table = self._param_table()
        self._table_launch(k.lbfgs_add_cuda_kernel, table, True,
                           (self.scalar(t), d, self.zero, True))
        self._write_back()
        part = self._reduce(self.n_chunks, 1, 1)
        return self.scalar(_maximum(part[:, 0]))

    def clone(self):
        out = self.new()
        table = self._param_table()
        self._table_launch(k.lbfgs_copy_cuda_kernel, table, False, (out, False, False))
        return out

    def set(self, x) -> None:
        table = self._param_table(refresh=False)
        self._table_launch(k.lbfgs_copy_cuda_kernel, table, True, (x, True, False))
        self._write_back()

    # -- gradients ---------------------------------------------------------------
    def _check_grad(self, i: int, g):
        """``(address, view or None)`` of parameter ``i``'s device gradient
        ``g``: its address where the pass can read it in place, else its
        view for a flat copy.  Raises as the CPU path and the element-wise
        device groups do."""
        p = self.params[i]
        where = param_where(0, i)
        addr, c_contiguous, f_contiguous = check_device_grad(where, p, self.device, g)
        if not (c_contiguous or f_contiguous):
            raise ValueError(f"{where}: the gradient of a CUDA parameter must be C- or "
                             "F-contiguous; pass a contiguous copy")
        if self.direct[i] and c_contiguous:
            return addr, None
        return 0, cu.as_device_array(g)

    def _grad_temp(self, i: int):
        temp = self._grad_temps.get(i)
        if temp is None:
            with _on(self.device):
                temp = cuda.device_array(max(int(self.sizes[i]), 1), self.dtype)
            temp = self._grad_temps[i] = temp[:int(self.sizes[i])]
        return temp

    def _zero_grad_address(self) -> int:
        """A zero buffer as long as the longest parameter: a missing gradient
        reads zeros from it (the CPU writes zeros)."""
        if self._zeros is None:
            with _on(self.device):
                self._zeros = cu.device_zeros(max(int(self.sizes.max()), 1), self.dtype)
        return cu.device_address(self._zeros)

    def gather(self, v=None, stats=True):
        """The flat gradient (a new device array) and, with ``stats``, its
        ``max|g|``, ``sum|g|`` and ``g . v``, as scalars of the vector's dtype."""
        table = self._gtable_host
        plan = []
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                plan.append((None, None))
            else:
                plan.append(self._check_grad(i, g))       # everything checked first
        keep = []
        for i, (addr, view) in enumerate(plan):
            if self.sizes[i] == 0:
                addr = 0
            elif addr is None:
                addr = self._zero_grad_address()
            elif view is not None:
                mem, fortran = _memory_view(view)
                temp = self._grad_temp(i)
                self._permute(temp, mem, self._index(i) if fortran else self.no_index, True)
                keep.append(view)
                addr = cu.device_address(temp)
            table[i, 0] = addr
        if not np.array_equal(table[:, 0], self._uploaded):
            with _on(self.device):
                self.d_gtable.copy_to_device(table)
            self._uploaded = table[:, 0].copy()
        out = self.new()
        self._table_launch(k.lbfgs_gather_cuda_kernel, self.d_gtable, False,
                           (out, self.empty if v is None else v, bool(stats), self.zero, True))
        if not stats:
            return out, self.zero, self.zero, self.zero
        part = self._reduce(self.n_chunks, 3, 1)
        del keep        # the views had to live until the passes had run
        s = self.scalar
        return out, s(_maximum(part[:, 0])), s(_total(part[:, 1])), s(_total(part[:, 2]))

    # -- flat-vector passes ------------------------------------------------------
    def memory(self, g, prev, d, t, y, s, q=None):
        """The CPU backend's ``memory`` (``q`` is not touched here: the
        recursion's opening update stays in :meth:`two_loop`, so ``s . q`` is
        None)."""
        self._launch(k.lbfgs_memory_cuda_kernel, self.n_blocks, g, prev, d, self.scalar(t),
                     y, s, self.zero, self.lanes)
        part = self._reduce(self.n_blocks, 2, 0)
        return self.scalar(_total(part[:, 0])), self.scalar(_total(part[:, 1])), None

    def two_loop(self, q, g, old_dirs, old_stps, ro, al, H_diag, first=None):
        """The two-loop recursion into ``q``: one :meth:`pass_` per update (the
        CPU's updates in the CPU's order: the same bits)."""
        from .lbfgs import _two_loop_passes

        return _two_loop_passes(self, q, g, old_dirs, old_stps, ro, al, H_diag, first)

    def pass_(self, x, u, a, h, v, mode):
        s = self.scalar
        self._launch(k.lbfgs_pass_cuda_kernel, self.n_blocks, x, u, s(a), s(h),
                     self.empty if v is None else v, np.int64(mode), self.zero, self.lanes)
        part = self._reduce(self.n_blocks, 1, 0)
        return s(_total(part[:, 0]))

    def max_abs(self, x):
        self._launch(k.lbfgs_stats_cuda_kernel, self.n_blocks, x, self.zero, self.lanes)
        part = self._reduce(self.n_blocks, 2, 1)
        return self.scalar(_maximum(part[:, 0]))
