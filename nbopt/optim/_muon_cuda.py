"""Muon on a GPU: one parameter's step (:func:`muon_step_device`) as CUDA
kernels of :mod:`nbopt.kernels.muon` (its CUDA section): the momentum and
the bfloat16 conversion, the norm (:mod:`nbopt.kernels.adafactor`'s block
reduction), the normalisation, ``ns_steps`` x 3 tiled float32 GEMMs with
torch's epilogue and bfloat16 rounding, and the update, all on the
parameter's device (default stream), with no copy back to the host.

The device products add in their own order (one float32 sum per output,
K in order), like ``config.MUON_PRODUCTS = "blas"`` on the CPU: every
rounding point is torch's, the update is within bfloat16 noise of the CPU
path's (a few % of its largest entry); the momentum buffer is bit for bit
the CPU path's (its maths is element-wise).

Imported when a Muon first steps a device parameter.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .. import config
from ..engine_cuda import _on
from ..kernels import _cuda as cu
from ..kernels import adafactor as ka
from ..kernels import muon as km

__all__ = ["DeviceWorkspace", "device_buffer", "muon_step_device"]


class DeviceWorkspace:
    """The float32 work matrices of one parameter shape on one GPU."""

    def __init__(self, short: int, long: int, device: int):
        with _on(device):
            self.x = cuda.device_array((short, long), np.float32)
            self.x2 = cuda.device_array((short, long), np.float32)
            self.a = cuda.device_array((short, short), np.float32)
            self.b = cuda.device_array((short, short), np.float32)
            self.sums = cuda.device_array(1, np.float32)
            self.lanes = cuda.device_array((1, config.CUDA_THREADS), np.float32)
            self.no_bases = cuda.device_array(1, np.int64)[:0]


def device_buffer(p, g, state):
    """``state["momentum_buffer"]`` as a device array of ``p``'s dtype on its
    GPU: created (zeros laid out like the gradient, torch's
    ``zeros_like(grad)``) or replaced by a device copy when it is a host array
    (a loaded checkpoint, an edit) or of another dtype."""
    buf = state.get("momentum_buffer")
    gd = cu.as_device_array(g)
    order = "C" if gd.is_c_contiguous() else "F"
    if buf is not None and cu.is_device_array(buf) and np.dtype(buf.dtype) == p.dtype \
            and tuple(buf.shape) == p.shape:
        return buf
    with _on(p.device_index):
        if buf is None:
            d = cuda.device_array(p.shape, p.dtype, order=order)
            cu.zero(d)
        else:
            host = buf.copy_to_host() if cu.is_device_array(buf) else np.asarray(buf)
            d = cuda.to_device(np.array(host, dtype=p.dtype, order=order))
    state["momentum_buffer"] = d
    return d


def _blocks(n: int, threads: int) -> int:
    return max(1, min(-(-n // threads), 4096))


def muon_step_device(p, g, buf, ws: DeviceWorkspace, group, lr) -> None:
    """One device parameter's Muon step, in place on ``p`` and ``buf`` (see
    :func:`nbopt.kernels.muon.muon_step`, the CPU path it mirrors)."""
    m, n = p.shape
    dtype = p.dtype.type
    tall = m > n
    threads = config.CUDA_THREADS
    momentum = group["momentum"]
    pd = p.data
    gd = cu.as_device_array(g)
    with _on(p.device_index):
        km.muon_momentum_cuda_kernel(_blocks(p.size, threads), threads, gd, buf, ws.x,
                                     dtype(1 - momentum), dtype(momentum),
                                     bool(group["nesterov"]), tall)
        if p.size:
            _newton_schulz(ws, group["ns_coefficients"], group["ns_steps"], group["eps"])
        adjusted = km.adjust_lr(lr, group["adjust_lr_fn"], p.shape)
        decay = 1 - lr * group["weight_decay"]
        km.muon_apply_cuda_kernel(_blocks(p.size, threads), threads, pd, ws.x, dtype(decay),
                                  dtype(-float(adjusted)), tall)


def _newton_schulz(ws: DeviceWorkspace, coefficients, steps: int, eps: float) -> None:
    """torch's ``_zeropower_via_newtonschulz`` on ``ws.x``; the result is
    left in ``ws.x``."""
    a, b, c = (np.float32(v) for v in coefficients)
    threads = config.CUDA_THREADS
    s, l_ = ws.x.shape
    flat = ws.x.reshape(ws.x.size)
    ka.adafactor_reduce_cuda_kernel(1, threads, flat, ws.no_bases, np.int64(1), np.int64(0),
                                    np.int64(1), np.int64(flat.shape[0]), ws.sums,
                                    np.float32(1), np.float32(0), np.float32(0),
                                    np.float32(0), np.int64(0), ws.lanes)
    floor = km.round_bf16(np.float32(eps))
    km.muon_normalize_cuda_kernel(_blocks(flat.shape[0], threads), threads, flat, ws.sums,
                                  np.float32(floor))
    tile = km.TILE
    t_s = -(-s // tile)
    t_l = -(-l_ // tile)
    one = np.float32(1)
    gemm = km.muon_gemm_cuda_kernel
    x, x2 = ws.x, ws.x2
    for _ in range(steps):
        # A = X X^T; B = b A + c A A; X = a X + B X
        gemm((min(t_s, 1024), min(t_s, 1024)), (tile, tile), x, x, x, ws.a, one,
             np.float32(0), False, True)
        gemm((min(t_s, 1024), min(t_s, 1024)), (tile, tile), ws.a, ws.a, ws.a, ws.b, c, b,
             bool(b != 0), False)
        gemm((min(t_l, 1024), min(t_s, 1024)), (tile, tile), ws.b, x, x, x2, one, a,
             bool(a != 0), False)
        x, x2 = x2, x
    if x is not ws.x:
        ws.x, ws.x2 = x, x2
