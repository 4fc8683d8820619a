"""Sparse gradients of GPU parameters: the uploads and launches around the
``*_cuda`` row kernels.

A step of a :class:`nbopt.parameter.DeviceSparseGrad` is planned on the host,
as on the CPU, from the host copy of its indices (coalescing, when the
algorithm coalesces, runs the host code bit for bit and uploads the summed
rows): the plan's integer tables (row offsets, column offsets, and for SGD's
scatter-add the order of the entries and their runs) go up in one copy, and
one launch of the algorithm's CUDA kernel (next to its CPU loop:
:func:`nbopt.kernels.sparse_adam.sparse_adam_cuda_rows`,
:func:`nbopt.kernels.adagrad.adagrad_cuda_rows`,
:func:`nbopt.kernels._sparse.scatter_add_cuda_runs`) updates the rows in the
parameter's memory and in its state on the device, one thread per element
of a row.

Imported when a device sparse gradient is first stepped: it imports
``numba.cuda``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .. import config
from ..engine_cuda import _on
from . import _cuda as cu

__all__ = ["memory_order", "memory_flat", "upload_rows", "launch", "zeros_like", "state_like",
           "is_state_like"]


def memory_order(a) -> str:
    """``"F"`` for an array (or parameter) that is F- but not C-contiguous."""
    flags = a.flags
    if isinstance(flags, dict):         # numba device arrays
        return "F" if (flags["F_CONTIGUOUS"] and not flags["C_CONTIGUOUS"]) else "C"
    return "F" if (flags.f_contiguous and not flags.c_contiguous) else "C"


def memory_flat(a):
    """The 1-D view, in memory order, of a contiguous device array or
    :class:`nbopt.DeviceParameter` (no copy)."""
    d = cu.as_device_array(a)
    order = "F" if (d.is_f_contiguous() and not d.is_c_contiguous()) else "C"
    return d.reshape(d.size, order=order)


def upload_rows(param, grad, *tables) -> tuple:
    """``(device views of the int64 host tables, the gradient's values as a
    (nnz, row width) device array)``: the tables go to ``param``'s GPU in
    one copy."""
    sizes = [len(t) for t in tables]
    packed = np.concatenate([np.asarray(t, np.int64) for t in tables])
    with _on(param.device_index):
        d = cuda.to_device(packed)
    views, start = [], 0
    for n in sizes:
        views.append(d[start:start + n])
        start += n
    sparse_dim = grad.sparse_dim
    width = int(np.prod(grad.shape[sparse_dim:], dtype=np.int64))
    return tuple(views), grad.values.reshape(grad.nnz, width)


def launch(kernel, param, n: int, *args) -> None:
    """``kernel`` (a :class:`nbopt.kernels._common.CudaKernel` grid-stride
    loop) over ``n`` independent elements, on ``param``'s GPU."""
    if n <= 0:
        return
    threads = config.CUDA_THREADS
    blocks = max(1, min(-(-n // threads), cu.MAX_BLOCKS))
    with _on(param.device_index):
        kernel(blocks, threads, *args)


def zeros_like(p):
    """A zero-filled device array shaped and laid out like parameter ``p``,
    on its GPU."""
    with _on(p.device_index):
        flat = cu.device_zeros(p.size, p.dtype)
    return flat.reshape(p.shape, order=memory_order(p))


def is_state_like(p, value) -> bool:
    """Whether ``value`` is a device array a row kernel can update in place
    as ``p``'s state: on ``p``'s GPU, with its shape, dtype and strides."""
    if not cu.is_device_array(value):
        return False
    if tuple(value.shape) != p.shape or np.dtype(value.dtype) != p.dtype:
        return False
    # the strides of dimensions of size 1 never move an element
    if any(n > 1 and a != b for n, a, b in zip(p.shape, value.strides, p.strides)):
        return False
    return cu.device_of(value) == p.device_index


def state_like(p, value):
    """``value`` (a host or device array shaped like ``p``) copied into a new
    device array laid out like ``p`` and cast to its dtype, on its GPU (torch
    moves loaded state to the parameter's device)."""
    out = zeros_like(p)
    with _on(p.device_index):
        cu.store(memory_flat(out), value, memory_order(p), False)
    return out
