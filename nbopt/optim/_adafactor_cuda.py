"""Adafactor on a GPU: :class:`DeviceFlat`, the device counterpart of
:class:`nbopt.optim.adafactor._Flat`.

One flat per (param group, device, dtype), as on the CPU: a device buffer
holds every row factor, column factor and variance of the flat's parameters,
``state[p]`` entries are device views of it shaped as torch's (``step``
stays a host float32 0-d array, as torch keeps it on the CPU), and the state
mapping stays the truth: edited or loaded entries (host or device arrays) are
copied into the buffer at the next step.  Everything the CPU flat does on the
host (validation, step counts, the float64 scalar rows of
:func:`nbopt.optim.adafactor.scalar_rows`) is shared; the step is a few CUDA
launches per parameter (:mod:`nbopt.kernels.adafactor`, its CUDA section),
all on the default stream, with no copy back to the host.

Tolerance: the reductions (row and column statistics, ``mean(R)``, the
norms of ``p`` and ``U``) add in the device kernels' order, not torch's CPU
order, so a step is within a few ulps (relative) of the CPU path's, not bit
for bit (torch's own CUDA kernels also differ from its CPU ones there).

Imported when an Adafactor first meets a device parameter, so that ``import
nbopt`` and the CPU path never import ``numba.cuda``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .. import config
from ..engine_cuda import _on, check_device_grad
from ..kernels import _cuda as cu
from ..kernels import adafactor as k
from ..parameter import is_sparse_grad
from .adafactor import _Flat

__all__ = ["DeviceFlat", "check_grad"]

_MAX_REDUCE_BLOCKS = 1024


def check_grad(where: str, p, g):
    """Validate the dense gradient ``g`` of device parameter ``p`` (torch's
    errors, as the element-wise device groups raise them); returns ``g``."""
    if is_sparse_grad(g):
        raise RuntimeError("Adafactor does not support sparse gradients")
    _, c_contiguous, f_contiguous = check_device_grad(where, p, p.device_index, g)
    c_order = p.flags.c_contiguous or p.ndim <= 1 or p.size <= 1
    if not (c_contiguous if c_order else f_contiguous):
        raise ValueError(f"{where}: the gradient of a CUDA parameter must be contiguous in "
                         f"the parameter's memory order ({'C' if c_order else 'F'}); "
                         "pass a contiguous copy")
    if p.size == 0:
        # torch's ||p|| / numel ** 0.5 is 0.0 / 0.0 in Python
        raise ZeroDivisionError("float division by zero")
    return g


def _memory(d):
    """A C- or F-contiguous device array as a 1-D array in memory order."""
    if d.size <= 1 or len(d.shape) <= 1:
        return d.reshape(d.size)
    return d.reshape(d.size, order="C" if d.is_c_contiguous() else "F")


class DeviceFlat(_Flat):
    """The Adafactor state of one (param group, device, dtype) on the
    device (see the module docstring)."""

    on_device = True

    def __init__(self, dtype, params, positions, counts, gi):
        self.device = params[0].device_index
        super().__init__(dtype, params, positions, counts, gi)
        with _on(self.device):
            self.d_bases = cuda.to_device(self.bases if len(self.bases)
                                          else np.zeros(1, np.int64))
        self._scratch = None

    # -- where the memory is ------------------------------------------------------
    @staticmethod
    def _param_address(p) -> int:
        return 0        # the kernels take device arrays, not addresses

    def _zeros(self, n: int):
        with _on(self.device):
            return cu.device_zeros(n, self.dtype)

    def _detach(self, value):
        return value    # loaded values are host copies (_check_state)

    def _write(self, view, value) -> None:
        with _on(self.device):
            cu.store(view.reshape(view.size), value, "C", False)

    def _zero(self, view) -> None:
        with _on(self.device):
            cu.fill(view.reshape(view.size), 0)

    # -- the step -------------------------------------------------------------------
    def _buffers(self):
        """Scratch on the device, sized for the largest parameter (made once)."""
        if self._scratch is None:
            n = len(self.params)
            threads = config.CUDA_THREADS
            numel = int(self.table[:, k.NUMEL].max())
            with _on(self.device):
                self._scratch = {
                    "u": cuda.device_array(max(numel, 1), self.dtype),
                    "sums": cuda.device_array(2, self.dtype),
                    "pnorm": cuda.device_array(n, np.float64),
                    "coef": cuda.device_array(n, np.float64),
                    "a": cuda.device_array(1, self.dtype),
                    "lanes": cuda.device_array((_MAX_REDUCE_BLOCKS, threads), self.dtype),
                    "sqrtn": cuda.to_device(self.sqrt_numel),
                    "slots": cuda.to_device(np.zeros(n, np.int64)),
                    "empty": cuda.device_array(1, self.dtype)[:0],
                    "no_bases": cuda.device_array(1, np.int64)[:0],
                }
        return self._scratch

    def _reduce(self, x, bases, per_batch, s_outer, s_inner, count, out, cnt, w1, eps1,
                mode) -> None:
        s = self._buffers()
        threads = s["lanes"].shape[1]
        blocks = max(1, min(out.shape[0], _MAX_REDUCE_BLOCKS))
        z = self.dtype.type
        k.adafactor_reduce_cuda_kernel(blocks, threads, x, bases, np.int64(per_batch),
                                       np.int64(s_outer), np.int64(s_inner), np.int64(count),
                                       out, z(cnt), z(w1), z(eps1), z(0), np.int64(mode),
                                       s["lanes"])

    def step_device(self, members, grads, scalars, maximize: bool, fused: bool) -> None:
        """One step of the parameters in slots ``members`` with gradients
        ``grads``; ``scalars``: ``(rows, keys)`` of :func:`scalar_rows`."""
        scal, keys = scalars
        members = np.asarray(members, np.int64)
        keys = np.zeros(len(members), np.int64) if keys is None else keys
        with _on(self.device):
            s = self._buffers()
            d_scal = cuda.to_device(np.ascontiguousarray(scal, np.float64))
            # the coefficient kernel reads each slot's key and sqrt(numel) by slot
            slot_keys = np.zeros(len(self.params), np.int64)
            slot_keys[members] = keys
            d_keys = cuda.to_device(slot_keys)
            for r, i in enumerate(members):
                self._step_one(int(i), grads[r], scal[keys[r]], d_scal, d_keys, s, maximize,
                               fused)

    def _step_one(self, i, g, row_scal, d_scal, d_keys, s, maximize, fused) -> None:
        dt = self.dtype.type
        row = self.table[i]
        numel = int(row[k.NUMEL])
        nb, m, n = int(row[k.NB]), int(row[k.M]), int(row[k.N])
        s_m, s_n = int(row[k.S_M]), int(row[k.S_N])
        factored = bool(row[k.FACTORED])
        ob = int(row[k.OFF_BATCH])
        bases = self.d_bases[ob:ob + nb]
        p = _memory(self.params[i].data)
        gm = _memory(cu.as_device_array(g))
        w1 = dt(row_scal[k.S_OMEGA])
        eps1 = dt(row_scal[k.S_EPS1])
        threads = config.CUDA_THREADS
        blocks = max(1, min(-(-numel // threads), 4096))
        sums = s["sums"]
        u = s["u"][:numel]
        empty = s["empty"]
        # ||p||^2, before the weight decay
        self._reduce(p, s["no_bases"], 1, 0, 1, numel, sums[0:1], 1, 0, 0, 0)
        if factored:
            a, b = int(row[k.OFF_A]), int(row[k.OFF_B])
            row_var = self.buf[a:b]
            col_var = self.buf[b:b + nb * n]
            rmv = self.rmv[ob:ob + nb]
            # rows: a sum over n of each (b, i); columns: over m of each (b, j)
            self._reduce(gm, bases, m, s_m, s_n, n, row_var, n, w1, 0, 1)
            self._reduce(gm, bases, n, s_n, s_m, m, col_var, m, w1, 0, 1)
            # max(mean(R, dim=-2), eps1) per batch
            self._reduce(row_var, s["no_bases"], 1, m, 1, m, rmv, m, 0, eps1, 2)
            var = empty
        else:
            a = int(row[k.OFF_A])
            var = self.buf[a:a + numel]
            k.adafactor_variance_cuda_kernel(blocks, threads, gm, var, w1)
            row_var = col_var = rmv = empty
        k.adafactor_u_cuda_kernel(blocks, threads, gm, bases, np.int64(m), np.int64(n),
                                  np.int64(s_m), np.int64(s_n), row_var, col_var, rmv, var,
                                  factored, bool(maximize), dt(row_scal[k.S_EPS1SQ]), dt(1), u)
        self._reduce(u, s["no_bases"], 1, 0, 1, numel, sums[1:2], 1, 0, 0, 0)
        k.adafactor_coef_cuda_kernel(1, 1, np.int64(i), sums, d_scal, d_keys, s["sqrtn"],
                                     s["pnorm"], s["coef"], s["a"])
        k.adafactor_apply_cuda_kernel(blocks, threads, p, u, bases, np.int64(m), np.int64(n),
                                      np.int64(s_m), np.int64(s_n), s["a"],
                                      dt(row_scal[k.S_DECAY]), bool(row_scal[k.S_DECAY_ON]),
                                      bool(fused))
