r"""SparseAdam: the row update, compiled.

torch's ``F.sparse_adam`` per parameter, on the rows present in the coalesced
gradient (values ``g``, negated when maximizing), per element::

    dm = (g - m) * (1 - beta1)          exp_avg_update_values
    dv = (g * g - v) * (1 - beta2)      exp_avg_sq_update_values
    m = m + dm                          exp_avg.add_(sparse(dm))
    v = v + dv
    p = p + (-step_size) * (m / (sqrt(v) + eps))

with ``step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)`` computed on the
host in float64 (the bias correction is folded into the step size, so eps is
not rescaled, unlike dense Adam); ``1 - beta1``, ``1 - beta2``, ``eps`` and
``-step_size`` are rounded to the parameter dtype, as torch's scalar
arguments are.  Rows absent from the gradient keep their parameters and
moments.

SparseAdam is not an element-wise algorithm (it has no registry entry): its
API class, :class:`nbopt.optim.sparse_adam.SparseAdam`, calls
:func:`sparse_adam_step` for each parameter, or :func:`sparse_adam_step_cuda`
for a GPU parameter: the same coalesced rows (coalesced on the host) and the
same per-element function, compiled into :func:`sparse_adam_cuda_rows`.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import config
from ._common import cpu_kernels, cuda_kernel, to_scalar
from ._sparse import memory_view, row_layout

__all__ = ["sparse_adam_update", "sparse_adam_step", "sparse_adam_step_cuda",
           "sparse_adam_scalars"]

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def sparse_adam_update(p, g, m, v, one_minus_beta1, one_minus_beta2, eps, neg_step_size,
                       maximize):
    """One element of torch's SparseAdam; returns ``(p, m, v)``."""
    if maximize:
        g = -g
    m = m + (g - m) * one_minus_beta1
    v = v + (g * g - v) * one_minus_beta2
    p = p + neg_step_size * (m / (math.sqrt(v) + eps))
    return p, m, v


_sparse_adam_element = njit(error_model="numpy")(sparse_adam_update)


def sparse_adam_rows(param, exp_avg, exp_avg_sq, row_off, col_off, values, scalars,
                     contiguous, maximize):
    omb1, omb2, eps, neg_step_size = scalars[0], scalars[1], scalars[2], scalars[3]
    width = values.shape[1]
    # coalesced rows are unique: rows are independent
    for k in prange(values.shape[0]):
        base = row_off[k]
        if contiguous:
            for j in range(width):
                a = base + j
                param[a], exp_avg[a], exp_avg_sq[a] = _sparse_adam_element(
                    param[a], values[k, j], exp_avg[a], exp_avg_sq[a], omb1, omb2, eps,
                    neg_step_size, maximize)
        else:
            for j in range(width):
                a = base + col_off[j]
                param[a], exp_avg[a], exp_avg_sq[a] = _sparse_adam_element(
                    param[a], values[k, j], exp_avg[a], exp_avg_sq[a], omb1, omb2, eps,
                    neg_step_size, maximize)


sparse_adam_cpu = cpu_kernels(sparse_adam_rows)


def sparse_adam_cuda_rows(param, exp_avg, exp_avg_sq, row_off, col_off, values, omb1, omb2,
                          eps, neg_step_size, contiguous, maximize):
    # the CPU loop as a grid-stride kernel, one thread per element of a
    # coalesced row (rows are unique: every element is independent)
    width = values.shape[1]
    for e in range(cuda.grid(1), values.shape[0] * width, cuda.gridsize(1)):
        k = e // width
        j = e - k * width
        a = row_off[k] + j if contiguous else row_off[k] + col_off[j]
        param[a], exp_avg[a], exp_avg_sq[a] = sparse_adam_update(
            param[a], values[k, j], exp_avg[a], exp_avg_sq[a], omb1, omb2, eps, neg_step_size,
            maximize)


sparse_adam_cuda = cuda_kernel(sparse_adam_cuda_rows, sparse_adam_update)


def sparse_adam_scalars(group, step: int) -> tuple:
    """``(1 - beta1, 1 - beta2, eps, -step_size)`` as torch computes them."""
    beta1, beta2 = group["betas"]
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = to_scalar(group["lr"]) * math.sqrt(bias_correction2) / bias_correction1
    return (1 - beta1, 1 - beta2, group["eps"], -step_size)


def _scalar_row(group, step: int, dtype) -> np.ndarray:
    return np.array([np.asarray(x, np.float64) for x in sparse_adam_scalars(group, step)],
                    np.float64).astype(dtype)


def sparse_adam_step(param, exp_avg, exp_avg_sq, grad, group, step: int) -> None:
    """Apply one SparseAdam step of sparse gradient ``grad`` (a SparseGrad)
    to ``param`` and its moments (arrays laid out like ``param``); ``step``
    is the parameter's step count after this step's increment."""
    grad = grad.coalesce()
    if grad.nnz == 0:
        return      # torch skips the update (the step count still advanced)
    row_off, col_off, contiguous = row_layout(param, grad.indices)
    values = np.ascontiguousarray(grad.values).reshape(grad.nnz, -1)
    scalars = _scalar_row(group, step, param.dtype)
    kernel = sparse_adam_cpu[1] if config.runs_parallel(values.size) else sparse_adam_cpu[0]
    kernel(memory_view(param), memory_view(exp_avg), memory_view(exp_avg_sq), row_off,
           col_off, values, scalars, contiguous, bool(group.get("maximize", False)))


def sparse_adam_step_cuda(param, exp_avg, exp_avg_sq, grad, group, step: int) -> None:
    """:func:`sparse_adam_step` on a GPU: ``param`` a
    :class:`nbopt.DeviceParameter`, its moments device arrays laid out like
    it, ``grad`` a :class:`nbopt.parameter.DeviceSparseGrad` on its device.
    Coalesced on the host (torch's CPU order), then one launch of
    :func:`sparse_adam_cuda_rows`."""
    from . import _sparse_cuda as sc

    grad = grad._coalesce(copy=False)
    if grad.nnz == 0:
        return
    row_off, col_off, contiguous = row_layout(param, grad._indices)
    omb1, omb2, eps, neg_step_size = _scalar_row(group, step, param.dtype)
    (d_row_off, d_col_off), values = sc.upload_rows(param, grad, row_off, col_off)
    sc.launch(sparse_adam_cuda, param, values.size, sc.memory_flat(param),
              sc.memory_flat(exp_avg), sc.memory_flat(exp_avg_sq), d_row_off, d_col_off, values,
              omb1, omb2, eps, neg_step_size, contiguous, bool(group.get("maximize", False)))
