r"""RMSprop (plain, centered, with momentum): maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0: g = g + wd * p
    v = alpha * v + (1 - alpha) * g * g                 (square_avg)
    if centered:
        ga = lerp(ga, g, 1 - alpha)                     (grad_avg)
        avg = sqrt(v - ga * ga) + eps                   (NaN if roundoff makes it < 0)
    else:
        avg = sqrt(v) + eps
    if momentum > 0:
        buf = momentum * buf + g / avg                  (momentum_buffer)
        p = p - lr * buf
    else:
        p = p - lr * g / avg

eps is added after the square root.  Which of ``momentum_buffer`` and
``grad_avg`` exist is decided at a parameter's first step; the step counter is
kept (torch keeps it) but does not enter the maths.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange, types
from numba.extending import overload, register_jitable

from ..registry import AlgorithmSpec, StateSpec, SteadyRow, register
from ._common import (_jit, cast_like, chunk_views, cpu_kernels, cuda_kernel, fma, lerp,
                      next_step_jit, plain_floats, real_flat, steady_t, store_row, to_scalar)

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def _sqrt(x):
    """``math.sqrt(x)``, NaN below 0 (roundoff in the centered ``v - ga * ga``)
    as in compiled code, also when run as Python (the CUDA simulator), where
    ``math.sqrt`` raises.  The CPU loop compiles it to ``math.sqrt`` alone (the
    overload below), the CUDA kernel as written."""
    if x < 0:
        return (x - x) / (x - x)            # NaN of x's type
    return math.sqrt(x)


@overload(_sqrt, target="cpu", inline="always")
def _sqrt_cpu(x):
    if isinstance(x, types.Float):
        def impl(x):
            return math.sqrt(x)
        return impl


def rmsprop_update(p, g, v, ga, buf, wd, alpha, oma, eps, momentum, neg_lr,
                   maximize, wd_on, centered, use_momentum):
    """One element of torch's single-tensor RMSprop; returns ``(p, v, ga, buf)``."""
    if maximize:
        g = -g
    if wd_on:
        g = fma(wd, p, g)                   # grad.add(param, alpha=weight_decay)
    v = fma(oma * g, g, v * alpha)          # square_avg.mul_(alpha).addcmul_(g, g, value=1-alpha)
    if centered:
        ga = lerp(ga, g, oma)               # grad_avg.lerp_(grad, 1 - alpha)
        avg = _sqrt(fma(-ga, ga, v)) + eps  # square_avg.addcmul(ga, ga, value=-1).sqrt_()
    else:
        avg = math.sqrt(v) + eps
    if use_momentum:
        buf = buf * momentum + g / avg      # buf.mul_(momentum).addcdiv_(grad, avg)
        p = fma(neg_lr, buf, p)             # param.add_(buf, alpha=-lr)
    else:
        p = p + (neg_lr * g) / avg          # param.addcdiv_(grad, avg, value=-lr)
    return p, v, ga, buf


_rmsprop_element = njit(error_model="numpy")(rmsprop_update)


def rmsprop_segments(segments, chunks, scalars, square_avg, momentum_buffer, grad_avg,
                     maximize, wd_on, centered, use_momentum):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, square_avg, 3)
        off = segments[s, 2]
        v = square_avg[off + lo:off + hi]
        wd, alpha, oma = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        eps, momentum, neg_lr = scalars[s, 3], scalars[s, 4], scalars[s, 5]
        # One inner loop per optional-state layout (see adam_segments).
        if centered and use_momentum:
            ga = grad_avg[off + lo:off + hi]
            buf = momentum_buffer[off + lo:off + hi]
            for i in range(hi - lo):
                param[i], v[i], ga[i], buf[i] = _rmsprop_element(
                    param[i], grad[i], v[i], ga[i], buf[i], wd, alpha, oma, eps, momentum,
                    neg_lr, maximize, wd_on, True, True)
        elif centered:
            ga = grad_avg[off + lo:off + hi]
            for i in range(hi - lo):
                param[i], v[i], ga[i], _ = _rmsprop_element(
                    param[i], grad[i], v[i], ga[i], v[i], wd, alpha, oma, eps, momentum,
                    neg_lr, maximize, wd_on, True, False)
        elif use_momentum:
            buf = momentum_buffer[off + lo:off + hi]
            for i in range(hi - lo):
                param[i], v[i], _, buf[i] = _rmsprop_element(
                    param[i], grad[i], v[i], v[i], buf[i], wd, alpha, oma, eps, momentum,
                    neg_lr, maximize, wd_on, False, True)
        else:
            for i in range(hi - lo):
                param[i], v[i], _, _ = _rmsprop_element(
                    param[i], grad[i], v[i], v[i], v[i], wd, alpha, oma, eps, momentum,
                    neg_lr, maximize, wd_on, False, False)


rmsprop_cpu = cpu_kernels(rmsprop_segments)


def rmsprop_cuda_segments(segments, chunks, scalars, square_avg, momentum_buffer, grad_avg,
                          maximize, wd_on, centered, use_momentum):
    # the CPU loop's body as a grid-stride kernel (see adam_cuda_segments);
    # momentum_buffer and grad_avg are indexed only in the branches that have them
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, square_avg)
        wd, alpha, oma = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        eps, momentum, neg_lr = scalars[s, 3], scalars[s, 4], scalars[s, 5]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            if centered and use_momentum:
                param[i], square_avg[j], grad_avg[j], momentum_buffer[j] = rmsprop_update(
                    param[i], grad[i], square_avg[j], grad_avg[j], momentum_buffer[j], wd,
                    alpha, oma, eps, momentum, neg_lr, maximize, wd_on, True, True)
            elif centered:
                param[i], square_avg[j], grad_avg[j], _ = rmsprop_update(
                    param[i], grad[i], square_avg[j], grad_avg[j], square_avg[j], wd, alpha,
                    oma, eps, momentum, neg_lr, maximize, wd_on, True, False)
            elif use_momentum:
                param[i], square_avg[j], _, momentum_buffer[j] = rmsprop_update(
                    param[i], grad[i], square_avg[j], square_avg[j], momentum_buffer[j], wd,
                    alpha, oma, eps, momentum, neg_lr, maximize, wd_on, False, True)
            else:
                param[i], square_avg[j], _, _ = rmsprop_update(
                    param[i], grad[i], square_avg[j], square_avg[j], square_avg[j], wd, alpha,
                    oma, eps, momentum, neg_lr, maximize, wd_on, False, False)


rmsprop_cuda = cuda_kernel(rmsprop_cuda_segments, rmsprop_update, _sqrt)


def rmsprop_scalars(group, t, fresh, old, new):
    return rmsprop_host(to_scalar(group["lr"]), group["alpha"], group["eps"],
                        group["weight_decay"], group["momentum"])


@register_jitable
def rmsprop_host(lr, alpha, eps, weight_decay, momentum):
    """The kernel's scalar row (the class path and :func:`rmsprop_step`
    share it)."""
    return (weight_decay, alpha, 1 - alpha, eps, momentum, -lr)


def rmsprop_flags(group):
    return (bool(group["maximize"]), bool(group["weight_decay"] != 0),
            bool(group["centered"]), bool(group["momentum"] > 0))


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

class RMSpropState(NamedTuple):
    """One parameter's RMSprop state for :func:`rmsprop_step`: ``step`` is a
    1-element float32 array (torch's 0-d float32 tensor), the others are
    shaped like the parameter; ``momentum_buffer`` is empty unless momentum
    > 0, ``grad_avg`` unless centered."""

    step: np.ndarray
    square_avg: np.ndarray
    momentum_buffer: np.ndarray
    grad_avg: np.ndarray


def _rmsprop_init(param, momentum=0.0, centered=False):
    buf = np.zeros_like(param) if momentum > 0 else np.zeros_like(param[:0])
    ga = np.zeros_like(param) if centered else np.zeros_like(param[:0])
    return RMSpropState(np.zeros(1, np.float32), np.zeros_like(param), buf, ga)


def _rmsprop_step(param, grad, state, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                  momentum=0.0, centered=False, maximize=False):
    if grad.shape != param.shape or state.square_avg.shape != param.shape:
        raise ValueError("rmsprop_step: grad and state must have the parameter's shape")
    use_momentum = momentum > 0
    if use_momentum and state.momentum_buffer.shape != param.shape:
        raise ValueError("rmsprop_step: momentum > 0 needs momentum_buffer "
                         "(rmsprop_init(param, momentum))")
    if centered and state.grad_avg.shape != param.shape:
        raise ValueError("rmsprop_step: centered needs grad_avg "
                         "(rmsprop_init(param, momentum, True))")
    next_step_jit(state.step)       # counted, as torch counts it; not in the maths
    row = rmsprop_host(lr, alpha, eps, weight_decay, momentum)
    wd, a, oma = cast_like(row[0], param), cast_like(row[1], param), cast_like(row[2], param)
    e, mom, neg_lr = cast_like(row[3], param), cast_like(row[4], param), \
        cast_like(row[5], param)
    wd_on = weight_decay != 0
    p, g, v = real_flat(param), real_flat(grad), real_flat(state.square_avg)
    # one loop per optional-state layout, as in rmsprop_segments
    if centered and use_momentum:
        ga, buf = real_flat(state.grad_avg), real_flat(state.momentum_buffer)
        for i in range(p.shape[0]):
            p[i], v[i], ga[i], buf[i] = _rmsprop_element(
                p[i], g[i], v[i], ga[i], buf[i], wd, a, oma, e, mom, neg_lr, maximize, wd_on,
                True, True)
    elif centered:
        ga = real_flat(state.grad_avg)
        for i in range(p.shape[0]):
            p[i], v[i], ga[i], _ = _rmsprop_element(
                p[i], g[i], v[i], ga[i], v[i], wd, a, oma, e, mom, neg_lr, maximize, wd_on,
                True, False)
    elif use_momentum:
        buf = real_flat(state.momentum_buffer)
        for i in range(p.shape[0]):
            p[i], v[i], _, buf[i] = _rmsprop_element(
                p[i], g[i], v[i], v[i], buf[i], wd, a, oma, e, mom, neg_lr, maximize, wd_on,
                False, True)
    else:
        for i in range(p.shape[0]):
            p[i], v[i], _, _ = _rmsprop_element(
                p[i], g[i], v[i], v[i], v[i], wd, a, oma, e, mom, neg_lr, maximize, wd_on,
                False, False)


rmsprop_init = _jit(_rmsprop_init)
rmsprop_step = _jit(_rmsprop_step)
rmsprop_step.__doc__ = r"""Step one parameter in place with RMSprop: ``nbopt.RMSprop``'s
numbers (bit for bit) from inside ``@njit`` code or Python.

``rmsprop_step(param, grad, state, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
momentum=0.0, centered=False, maximize=False)``; ``state`` from
:func:`rmsprop_init` ``(param, momentum=0.0, centered=False)``, made with the
same ``momentum > 0`` and ``centered``.  The update is the class's (see the
module docstring); C-contiguous float32, float64 or complex arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _rmsprop_row(out, steps, commit, lr, alpha, eps, wd, momentum):
    return store_row(out, rmsprop_host(lr, alpha, eps, wd, momentum), steady_t(steps),
                     steps, commit)


RMSPROP_ROW = SteadyRow(("lr", "alpha", "eps", "weight_decay", "momentum"), plain_floats,
                        _jit(_rmsprop_row))


SPEC = register(AlgorithmSpec(
    name="rmsprop",
    state=(StateSpec("square_avg"),
           StateSpec("momentum_buffer", when=lambda group: group["momentum"] > 0),
           StateSpec("grad_avg", when=lambda group: bool(group["centered"]))),
    has_step=True,
    scalars=rmsprop_scalars,
    flags=rmsprop_flags,
    cpu=rmsprop_cpu,
    cuda=rmsprop_cuda,
    n_scalars=6,
    steady_row=RMSPROP_ROW,
))
