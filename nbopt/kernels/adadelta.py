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

from numba import njit, prange

from ..registry import AlgorithmSpec, StateSpec, register
from ._common import chunk_views, cpu_kernels, cuda_kernel, fma, to_scalar

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
    rho = group["rho"]
    return (group["weight_decay"], rho, 1 - rho, group["eps"], -to_scalar(group["lr"]))


def adadelta_flags(group):
    return (bool(group["maximize"]), group["weight_decay"] != 0)


SPEC = register(AlgorithmSpec(
    name="adadelta",
    state=(StateSpec("square_avg"), StateSpec("acc_delta")),
    has_step=True,
    scalars=adadelta_scalars,
    flags=adadelta_flags,
    cpu=adadelta_cpu,
    cuda=adadelta_cuda,
    n_scalars=5,
))
