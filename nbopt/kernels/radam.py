r"""RAdam (rectified Adam, optionally with decoupled weight decay): maths, CPU
loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0:
        decoupled: p = p * (1 - lr * wd)        else: g = g + wd * p
    m = lerp(m, g, 1 - beta1)
    v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / bc1
    if rho_t > 5:
        adaptive = (1 / (sqrt(v) + eps)) * sqrt(bc2)     (torch's scalar / tensor)
        p = p - ((m_hat * lr) * adaptive) * rect
    else:
        p = p - m_hat * lr

with, on the host in float64 at the parameter's own step count ``t`` (as
torch's Python code computes them)::

    bc1 = 1 - beta1**t ;  bc2 = 1 - beta2**t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / bc2
    rect = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))

The branch on ``rho_t > 5`` is taken per parameter on the host; the kernel
gets it as a 0/1 column of the scalar row.  With ``foreach=True`` the step
size is torch's foreach one, a single multiplier per parameter (float32 with
a Tensor lr), passed with the other factors set to 1.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ..registry import AlgorithmSpec, StateSpec, SteadyRow, register
from ._common import (_jit, bias_correction, cast_like, chunk_views, cpu_kernels, cuda_kernel, fma,
                      lerp, lr_betas_floats, next_step_jit, power, real_flat, steady_t, store_row,
                      tensor_value, to_scalar)

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def radam_update(p, g, m, v, wd, decay, w1, beta2, omb2, bc1, lr, eps, bc2_sqrt, rect, one,
                 rectified, maximize, decoupled, wd_on):
    """One element of torch's single-tensor RAdam; returns ``(p, m, v)``."""
    if maximize:
        g = -g
    if wd_on:
        if decoupled:
            p = p * decay
        else:
            g = fma(wd, p, g)
    m = lerp(m, g, w1)
    v = fma(omb2 * g, g, v * beta2)
    m_hat = m / bc1
    if rectified:
        # torch: ``bc2**0.5 / (sqrt(v) + eps)`` is ``reciprocal(...) * bc2**0.5``
        adaptive = (one / (math.sqrt(v) + eps)) * bc2_sqrt
        p = p - ((m_hat * lr) * adaptive) * rect
    else:
        p = p - m_hat * lr
    return p, m, v


_radam_element = njit(error_model="numpy")(radam_update)


def radam_segments(segments, chunks, scalars, exp_avg, exp_avg_sq, maximize, decoupled, wd_on):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, exp_avg, 3)
        off = segments[s, 2]
        m = exp_avg[off + lo:off + hi]
        v = exp_avg_sq[off + lo:off + hi]
        wd, decay, w1, beta2 = scalars[s, 0], scalars[s, 1], scalars[s, 2], scalars[s, 3]
        omb2, bc1, lr, eps = scalars[s, 4], scalars[s, 5], scalars[s, 6], scalars[s, 7]
        bc2_sqrt, rect, one = scalars[s, 8], scalars[s, 9], scalars[s, 10]
        # The rectification branch is the same for the whole segment: one
        # inner loop per branch keeps the loop body branch-free.
        if scalars[s, 11] != 0:
            for i in range(hi - lo):
                param[i], m[i], v[i] = _radam_element(
                    param[i], grad[i], m[i], v[i], wd, decay, w1, beta2, omb2, bc1, lr, eps,
                    bc2_sqrt, rect, one, True, maximize, decoupled, wd_on)
        else:
            for i in range(hi - lo):
                param[i], m[i], v[i] = _radam_element(
                    param[i], grad[i], m[i], v[i], wd, decay, w1, beta2, omb2, bc1, lr, eps,
                    bc2_sqrt, rect, one, False, maximize, decoupled, wd_on)


radam_cpu = cpu_kernels(radam_segments)


def radam_cuda_segments(segments, chunks, scalars, exp_avg, exp_avg_sq, maximize, decoupled,
                        wd_on):
    # the CPU loop's body as a grid-stride kernel: blocks over chunks,
    # threads over a chunk's elements (see nbopt.kernels._cuda)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, exp_avg)
        wd, decay, w1, beta2 = scalars[s, 0], scalars[s, 1], scalars[s, 2], scalars[s, 3]
        omb2, bc1, lr, eps = scalars[s, 4], scalars[s, 5], scalars[s, 6], scalars[s, 7]
        bc2_sqrt, rect, one = scalars[s, 8], scalars[s, 9], scalars[s, 10]
        rectified = scalars[s, 11] != 0
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            if rectified:
                param[i], exp_avg[j], exp_avg_sq[j] = radam_update(
                    param[i], grad[i], exp_avg[j], exp_avg_sq[j], wd, decay, w1, beta2, omb2,
                    bc1, lr, eps, bc2_sqrt, rect, one, True, maximize, decoupled, wd_on)
            else:
                param[i], exp_avg[j], exp_avg_sq[j] = radam_update(
                    param[i], grad[i], exp_avg[j], exp_avg_sq[j], wd, decay, w1, beta2, omb2,
                    bc1, lr, eps, bc2_sqrt, rect, one, False, maximize, decoupled, wd_on)


radam_cuda = cuda_kernel(radam_cuda_segments, radam_update)


def radam_scalars(group, t, fresh, old, new):
    lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
    if (type(lr) is float and type(beta1) is float and type(beta2) is float
            and type(wd) is not np.ndarray and not group.get("foreach")):
        # float hyper-parameters, the common case (see adam_scalars)
        return radam_host(lr, beta1, beta2, wd, group["eps"], t)
    lr = to_scalar(lr)
    beta1, beta2 = (to_scalar(b) for b in group["betas"])
    wd = to_scalar(group["weight_decay"])
    if group.get("foreach"):
        bias_correction2 = bias_correction(beta2, t)
        rect, rectified = radam_rectification(beta2, t, bias_correction2)
        return _foreach_scalars(lr, wd, beta1, beta2, bias_correction(beta1, t),
                                bias_correction2, rect, rectified, group["eps"])
    return radam_host(lr, beta1, beta2, wd, group["eps"], t)


@register_jitable
def radam_rectification(beta2, t, bias_correction2):
    """``(rect, rectified)`` at step ``t``: torch's rectification term and
    whether ``rho_t > 5`` (1.0 or 0.0), in float64."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * power(beta2, t) / bias_correction2
    if rho_t > 5.0:
        rect = power((rho_t - 4) * (rho_t - 2) * rho_inf
                     / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5)
        rectified = 1.0
    else:
        # never used by the kernel; torch does not compute it (it may be complex)
        rect = 0.0
        rectified = 0.0
    return rect, rectified


@register_jitable
def radam_host(lr, beta1, beta2, wd, eps, t):
    """The kernel's scalar row for float hyper-parameters at step ``t``,
    computed in float64 as torch computes it (the class path and
    :func:`radam_step` share it)."""
    bias_correction1 = bias_correction(beta1, t)
    bias_correction2 = bias_correction(beta2, t)
    rect, rectified = radam_rectification(beta2, t, bias_correction2)
    return (wd, 1 - lr * wd, 1 - beta1, beta2, 1 - beta2, bias_correction1, lr, eps,
            power(bias_correction2, 0.5), rect, 1.0, rectified)


def _foreach_scalars(lr, wd, beta1, beta2, bias_correction1, bias_correction2, rect,
                     rectified, eps):
    """torch's foreach path folds the step size into one multiplier per
    parameter, computed in the Tensor lr's dtype (float32) when lr is a Tensor::

        rectified:    bc2**0.5 * (lr * rect / bc1) * -1   (divides sqrt(v) + eps)
        unrectified:  (lr * 1.0 / bc1) * -1                (multiplies m)

    The kernel gets it with bc1, lr or bc2_sqrt, and rect set to 1 (the
    element-wise grouping stays the single-tensor one: within an ulp or two
    per step)."""
    lr_ = tensor_value(lr)
    if rectified:
        step = (bias_correction2 ** 0.5) * (lr_ * rect / bias_correction1) * -1
        lr_col, bc2_col = 1.0, -step
    else:
        step = (lr_ * 1.0 / bias_correction1) * -1
        lr_col, bc2_col = -step, 1.0
    return (wd, 1 - lr * wd, 1 - beta1, beta2, 1 - beta2, 1.0, lr_col, eps, bc2_col, 1.0,
            1.0, rectified)


def radam_flags(group):
    return (bool(group["maximize"]), bool(group["decoupled_weight_decay"]),
            bool(to_scalar(group["weight_decay"]) != 0))


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

class RAdamState(NamedTuple):
    """One parameter's RAdam state for :func:`radam_step`: ``step`` is a
    1-element float32 array (torch's 0-d float32 tensor), the moments are
    shaped like the parameter."""

    step: np.ndarray
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray


def _radam_init(param):
    return RAdamState(np.zeros(1, np.float32), np.zeros_like(param), np.zeros_like(param))


def _radam_step(param, grad, state, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, decoupled_weight_decay=False, maximize=False):
    if grad.shape != param.shape or state.exp_avg.shape != param.shape \
            or state.exp_avg_sq.shape != param.shape:
        raise ValueError("radam_step: grad and state must have the parameter's shape")
    t = next_step_jit(state.step)
    row = radam_host(lr, beta1, beta2, weight_decay, eps, t)
    wd, decay, w1, b2 = (cast_like(row[0], param), cast_like(row[1], param),
                         cast_like(row[2], param), cast_like(row[3], param))
    omb2, bc1, lr_, e = (cast_like(row[4], param), cast_like(row[5], param),
                         cast_like(row[6], param), cast_like(row[7], param))
    bc2_sqrt, rect, one = (cast_like(row[8], param), cast_like(row[9], param),
                           cast_like(row[10], param))
    wd_on = weight_decay != 0
    p, g = real_flat(param), real_flat(grad)
    m, v = real_flat(state.exp_avg), real_flat(state.exp_avg_sq)
    # one loop per branch, as in radam_segments
    if row[11] != 0:
        for i in range(p.shape[0]):
            p[i], m[i], v[i] = _radam_element(
                p[i], g[i], m[i], v[i], wd, decay, w1, b2, omb2, bc1, lr_, e, bc2_sqrt, rect,
                one, True, maximize, decoupled_weight_decay, wd_on)
    else:
        for i in range(p.shape[0]):
            p[i], m[i], v[i] = _radam_element(
                p[i], g[i], m[i], v[i], wd, decay, w1, b2, omb2, bc1, lr_, e, bc2_sqrt, rect,
                one, False, maximize, decoupled_weight_decay, wd_on)


radam_init = _jit(_radam_init)
radam_step = _jit(_radam_step)
radam_step.__doc__ = r"""Step one parameter in place with RAdam: ``nbopt.RAdam``'s numbers
(bit for bit) from inside ``@njit`` code or Python.

``radam_step(param, grad, state, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
weight_decay=0.0, decoupled_weight_decay=False, maximize=False)``; ``state``
from :func:`radam_init` (``state.step`` counts the steps).  The update is the
class's (see the module docstring); C-contiguous float32, float64 or complex
arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _radam_hyper(values):
    lr, betas, wd, eps, foreach = values
    # betas in torch's range: no division by zero in the rectification
    return None if foreach else lr_betas_floats(lr, betas, wd, eps)


def _radam_row(out, steps, commit, lr, beta1, beta2, wd, eps):
    t = steady_t(steps)
    return store_row(out, radam_host(lr, beta1, beta2, wd, eps, t), t, steps, commit)


RADAM_ROW = SteadyRow(("lr", "betas", "weight_decay", "eps", "foreach"), _radam_hyper,
                      _jit(_radam_row))


SPEC = register(AlgorithmSpec(
    name="radam",
    state=(StateSpec("exp_avg"), StateSpec("exp_avg_sq")),
    has_step=True,
    scalars=radam_scalars,
    flags=radam_flags,
    cpu=radam_cpu,
    cuda=radam_cuda,
    n_scalars=12,
    steady_row=RADAM_ROW,
))
