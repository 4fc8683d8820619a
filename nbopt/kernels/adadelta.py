r"""Adadelta: maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0: g = g + wd * p
    v = rho * v + (1 - rho) * g * g                   (square_avg)
    delta = sqrt(u + eps) / sqrt(v + eps) * g         (u: acc_delta before this step)
    u = rho * u + (1 - rho) * delta * delta
    p = p - lr * delta

eps sits inside both square roots.  The step counter is kept (torch keeps it)
but does not enter the maths.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ..registry import AlgorithmSpec, StateSpec, SteadyRow, register
from ._common import (_jit, cast_like, chunk_views, cpu_kernels, cuda_kernel, fma, next_step_jit,
                      plain_floats, real_flat, steady_t, store_row, to_scalar)

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def adadelta_update(p, g, v, u, wd, rho, omr, eps, neg_lr, maximize, wd_on):
    """One element of torch's single-tensor Adadelta; returns ``(p, v, u)``."""
    if maximize:
        g = -g
    if wd_on:
        g = fma(wd, p, g)
    v = fma(omr * g, g, v * rho)            # square_avg.mul_(rho).addcmul_(g, g, value=1-rho)
    # real(...) is a no-op compiled; run as Python (the CUDA simulator) it rounds
    # math.sqrt's double to the parameter dtype, as the compiled sqrt does, so
    # that the division below is not a double one
    real = type(v)
    std = real(math.sqrt(v + eps))
    delta = real(math.sqrt(u + eps)) / std * g  # acc_delta.add(eps).sqrt_().div_(std).mul_(g)
    u = fma(omr * delta, delta, u * rho)    # acc_delta.mul_(rho).addcmul_(delta, delta, ...)
    p = fma(neg_lr, delta, p)               # param.add_(delta, alpha=-lr)
    return p, v, u


_adadelta_element = njit(error_model="numpy")(adadelta_update)


def adadelta_segments(segments, chunks, scalars, square_avg, acc_delta, maximize, wd_on):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, square_avg, 3)
        off = segments[s, 2]
        v = square_avg[off + lo:off + hi]
        u = acc_delta[off + lo:off + hi]
        wd, rho, omr = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        eps, neg_lr = scalars[s, 3], scalars[s, 4]
        for i in range(hi - lo):
            param[i], v[i], u[i] = _adadelta_element(
                param[i], grad[i], v[i], u[i], wd, rho, omr, eps, neg_lr, maximize, wd_on)


adadelta_cpu = cpu_kernels(adadelta_segments)


def adadelta_cuda_segments(segments, chunks, scalars, square_avg, acc_delta, maximize, wd_on):
    # the CPU loop's body as a grid-stride kernel (see adam_cuda_segments)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, square_avg)
        wd, rho, omr = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        eps, neg_lr = scalars[s, 3], scalars[s, 4]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            param[i], square_avg[j], acc_delta[j] = adadelta_update(
                param[i], grad[i], square_avg[j], acc_delta[j], wd, rho, omr, eps, neg_lr,
                maximize, wd_on)


adadelta_cuda = cuda_kernel(adadelta_cuda_segments, adadelta_update)


def adadelta_scalars(group, t, fresh, old, new):
    return adadelta_host(to_scalar(group["lr"]), group["rho"], group["eps"],
                         group["weight_decay"])


def adadelta_flags(group):
    return (bool(group["maximize"]), group["weight_decay"] != 0)


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

@register_jitable
def adadelta_host(lr, rho, eps, wd):
    """The kernel's scalar row (the class path and :func:`adadelta_step`
    share it)."""
    return (wd, rho, 1 - rho, eps, -lr)


class AdadeltaState(NamedTuple):
    """One parameter's Adadelta state for :func:`adadelta_step`: ``step`` is
    a 1-element float32 array (torch's 0-d float32 tensor; counted, not used
    by the maths), ``square_avg`` and ``acc_delta`` are shaped like the
    parameter."""

    step: np.ndarray
    square_avg: np.ndarray
    acc_delta: np.ndarray


def _adadelta_init(param):
    return AdadeltaState(np.zeros(1, np.float32), np.zeros_like(param), np.zeros_like(param))


def _adadelta_step(param, grad, state, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,
                   maximize=False):
    if grad.shape != param.shape or state.square_avg.shape != param.shape \
            or state.acc_delta.shape != param.shape:
        raise ValueError("adadelta_step: grad and state must have the parameter's shape")
    next_step_jit(state.step)
    row = adadelta_host(lr, rho, eps, weight_decay)
    wd, r, omr = cast_like(row[0], param), cast_like(row[1], param), cast_like(row[2], param)
    e, neg_lr = cast_like(row[3], param), cast_like(row[4], param)
    wd_on = weight_decay != 0
    p, g = real_flat(param), real_flat(grad)
    v, u = real_flat(state.square_avg), real_flat(state.acc_delta)
    for i in range(p.shape[0]):
        p[i], v[i], u[i] = _adadelta_element(p[i], g[i], v[i], u[i], wd, r, omr, e, neg_lr,
                                             maximize, wd_on)


adadelta_init = _jit(_adadelta_init)
adadelta_step = _jit(_adadelta_step)
adadelta_step.__doc__ = r"""Step one parameter in place with Adadelta: ``nbopt.Adadelta``'s
numbers (bit for bit) from inside ``@njit`` code or Python.

``adadelta_step(param, grad, state, lr=1.0, rho=0.9, eps=1e-6,
weight_decay=0.0, maximize=False)``; ``state`` from :func:`adadelta_init`.
The update is the class's (see the module docstring); C-contiguous float32,
float64 or complex arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _adadelta_row(out, steps, commit, lr, rho, eps, wd):
    return store_row(out, adadelta_host(lr, rho, eps, wd), steady_t(steps), steps, commit)


ADADELTA_ROW = SteadyRow(("lr", "rho", "eps", "weight_decay"), plain_floats,
                         _jit(_adadelta_row))


SPEC = register(AlgorithmSpec(
    name="adadelta",
    state=(StateSpec("square_avg"), StateSpec("acc_delta")),
    has_step=True,
    scalars=adadelta_scalars,
    flags=adadelta_flags,
    cpu=adadelta_cpu,
    cuda=adadelta_cuda,
    n_scalars=5,
    steady_row=ADADELTA_ROW,
))
