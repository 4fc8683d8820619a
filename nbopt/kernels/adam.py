r"""Adam and AdamW (``decoupled_weight_decay``): maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0:
        decoupled: p = p * (1 - lr * wd)        else: g = g + wd * p
    m = lerp(m, g, 1 - beta1)
    v = beta2 * v + (1 - beta2) * g * g
    vmax = max(vmax, v)                         (amsgrad only)
    p = p + (-lr / bc1) * m / (sqrt(v or vmax) / sqrt(bc2) + eps)

with ``bc1 = 1 - beta1**t`` and ``bc2 = 1 - beta2**t`` computed on the host in
float64 at the parameter's own step count ``t``, as torch does.  torch's other
paths round these scalars otherwise, and so does adam_scalars: Tensor betas
and ``differentiable=True`` make them float32 tensor arithmetic (the latter
also moves the step size into the denominator: the same formula with a step
size of 1), ``fused=True`` reads every hyper-parameter as a double.
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
                      tensor_div, tensor_pow, tensor_value, to_scalar)

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def adam_update(p, g, m, v, vmax, wd, decay, w1, beta2, omb2, neg_step_size, bc2_sqrt, eps,
                amsgrad, maximize, decoupled, wd_on):
    """One element of torch's single-tensor Adam; returns ``(p, m, v, vmax)``."""
    if maximize:
        g = -g
    if wd_on:
        if decoupled:
            p = p * decay
        else:
            g = fma(wd, p, g)
    m = lerp(m, g, w1)
    v = fma(omb2 * g, g, v * beta2)
    if amsgrad:
        # torch.maximum propagates NaN from either side
        if not (vmax > v or vmax != vmax):
            vmax = v
        den = math.sqrt(vmax) / bc2_sqrt + eps
    else:
        den = math.sqrt(v) / bc2_sqrt + eps
    p = p + (neg_step_size * m) / den
    return p, m, v, vmax


_adam_element = njit(error_model="numpy")(adam_update)


def adam_segments(segments, chunks, scalars, exp_avg, exp_avg_sq, max_exp_avg_sq,
                  amsgrad, maximize, decoupled, wd_on):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, exp_avg, 3)
        off = segments[s, 2]
        m = exp_avg[off + lo:off + hi]
        v = exp_avg_sq[off + lo:off + hi]
        wd, decay, w1, beta2 = scalars[s, 0], scalars[s, 1], scalars[s, 2], scalars[s, 3]
        omb2, neg_step_size, bc2_sqrt, eps = scalars[s, 4], scalars[s, 5], scalars[s, 6], \
            scalars[s, 7]
        # One inner loop per optional-state layout: a conditional load/store
        # inside the loop stops LLVM from vectorising it (6x slower, measured).
        if amsgrad:
            vmax = max_exp_avg_sq[off + lo:off + hi]
            for i in range(hi - lo):
                param[i], m[i], v[i], vmax[i] = _adam_element(
                    param[i], grad[i], m[i], v[i], vmax[i], wd, decay, w1, beta2, omb2,
                    neg_step_size, bc2_sqrt, eps, True, maximize, decoupled, wd_on)
        else:
            for i in range(hi - lo):
                param[i], m[i], v[i], _ = _adam_element(
                    param[i], grad[i], m[i], v[i], v[i], wd, decay, w1, beta2, omb2,
                    neg_step_size, bc2_sqrt, eps, False, maximize, decoupled, wd_on)


adam_cpu = cpu_kernels(adam_segments)


def adam_cuda_segments(segments, chunks, scalars, exp_avg, exp_avg_sq, max_exp_avg_sq,
                       amsgrad, maximize, decoupled, wd_on):
    # the CPU loop's body as a grid-stride kernel: blocks over chunks,
    # threads over a chunk's elements (see nbopt.kernels._cuda)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, exp_avg)
        wd, decay, w1, beta2 = scalars[s, 0], scalars[s, 1], scalars[s, 2], scalars[s, 3]
        omb2, neg_step_size, bc2_sqrt, eps = scalars[s, 4], scalars[s, 5], scalars[s, 6], \
            scalars[s, 7]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            if amsgrad:
                param[i], exp_avg[j], exp_avg_sq[j], max_exp_avg_sq[j] = adam_update(
                    param[i], grad[i], exp_avg[j], exp_avg_sq[j], max_exp_avg_sq[j], wd, decay,
                    w1, beta2, omb2, neg_step_size, bc2_sqrt, eps, True, maximize, decoupled,
                    wd_on)
            else:
                param[i], exp_avg[j], exp_avg_sq[j], _ = adam_update(
                    param[i], grad[i], exp_avg[j], exp_avg_sq[j], exp_avg_sq[j], wd, decay, w1,
                    beta2, omb2, neg_step_size, bc2_sqrt, eps, False, maximize, decoupled, wd_on)


adam_cuda = cuda_kernel(adam_cuda_segments, adam_update)


def adam_scalars(group, t, fresh, old, new):
    lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
    if (type(lr) is float and type(beta1) is float and type(beta2) is float
            and type(wd) is not np.ndarray and not group.get("fused")
            and not group.get("differentiable")):
        # float hyper-parameters, the common case, without the general
        # path's conversions (a 1k-element step costs ~3 us in all)
        return adam_host(lr, beta1, beta2, wd, group["eps"], t)
    lr = to_scalar(lr)
    beta1, beta2 = (to_scalar(b) for b in group["betas"])
    wd = to_scalar(group["weight_decay"])
    eps = group["eps"]
    if group.get("fused"):
        # torch's fused kernel takes every hyper-parameter as a C double (a
        # Tensor's .item()) and computes its step size in double
        lr, beta1, beta2, wd = float(lr), float(beta1), float(beta2), float(wd)
    if group.get("differentiable"):
        return _differentiable_scalars(lr, beta1, beta2, wd, eps, t)
    if isinstance(beta1, np.ndarray):
        # Tensor betas (both or neither, as torch checks): the bias corrections
        # and the step size are float32 tensor arithmetic
        b1, b2 = tensor_value(beta1), tensor_value(beta2)
        step_size = tensor_div(tensor_value(lr), 1 - tensor_pow(b1, t))
        bc2_sqrt = tensor_pow(1 - tensor_pow(b2, t), 0.5)
        # lerp_'s weight is 1 - beta1 cast to the parameter dtype: exact in double
        return (wd, 1 - lr * wd, 1 - float(b1), b2, 1 - b2, -step_size, bc2_sqrt, eps)
    return adam_host(lr, beta1, beta2, wd, eps, t)


@register_jitable
def adam_host(lr, beta1, beta2, wd, eps, t):
    """The kernel's scalar row for float hyper-parameters at step ``t``,
    computed in float64 as torch computes it (the class path and
    :func:`adam_step` share it)."""
    step_size = lr / bias_correction(beta1, t)
    bc2_sqrt = power(bias_correction(beta2, t), 0.5)
    return (wd, 1 - lr * wd, 1 - beta1, beta2, 1 - beta2, -step_size, bc2_sqrt, eps)


def _differentiable_scalars(lr, beta1, beta2, wd, eps, t):
    """torch's ``differentiable=True`` path: the bias corrections are tensors
    computed from the float32 ``step`` tensor (float32 ``powf``, the step size
    ``lr / bc1`` as a reciprocal times lr), and the update is
    ``p.addcdiv_(m, sqrt(v) / (bc2_sqrt * -step_size) + eps / -step_size)``:
    the kernel's formula with a step size of 1 and those two products in the
    ``bc2_sqrt`` and ``eps`` columns."""
    step = np.float32(t)
    b1, b2 = tensor_value(beta1), tensor_value(beta2)
    step_size_neg = -tensor_div(tensor_value(lr), 1 - tensor_pow(b1, step))
    bc2_sqrt = np.sqrt(1 - tensor_pow(b2, step))
    w1 = 1 - float(b1) if isinstance(b1, np.generic) else 1 - b1
    return (wd, 1 - lr * wd, w1, b2, 1 - b2, 1.0, bc2_sqrt * step_size_neg,
            tensor_div(eps, step_size_neg))


def adam_flags(group):
    return (bool(group["amsgrad"]), bool(group["maximize"]),
            bool(group["decoupled_weight_decay"]), to_scalar(group["weight_decay"]) != 0)


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

class AdamState(NamedTuple):
    """One parameter's Adam state for :func:`adam_step`: ``step`` is a
    1-element float32 array (torch's 0-d float32 tensor), the moments are
    shaped like the parameter; ``max_exp_avg_sq`` is empty unless amsgrad."""

    step: np.ndarray
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray
    max_exp_avg_sq: np.ndarray


def _adam_init(param, amsgrad=False):
    vmax = np.zeros_like(param) if amsgrad else np.zeros_like(param[:0])
    return AdamState(np.zeros(1, np.float32), np.zeros_like(param), np.zeros_like(param), vmax)


def _adam_step(param, grad, state, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
               amsgrad=False, maximize=False, decoupled_weight_decay=False):
    if grad.shape != param.shape or state.exp_avg.shape != param.shape \
            or state.exp_avg_sq.shape != param.shape:
        raise ValueError("adam_step: grad and state must have the parameter's shape")
    if amsgrad and state.max_exp_avg_sq.shape != param.shape:
        raise ValueError("adam_step: amsgrad needs max_exp_avg_sq (adam_init(param, True))")
    t = next_step_jit(state.step)
    row = adam_host(lr, beta1, beta2, weight_decay, eps, t)
    wd, decay, w1, b2 = (cast_like(row[0], param), cast_like(row[1], param),
                         cast_like(row[2], param), cast_like(row[3], param))
    omb2, neg_step_size, bc2_sqrt, e = (cast_like(row[4], param), cast_like(row[5], param),
                                        cast_like(row[6], param), cast_like(row[7], param))
    wd_on = weight_decay != 0
    p, g = real_flat(param), real_flat(grad)
    m, v = real_flat(state.exp_avg), real_flat(state.exp_avg_sq)
    # one loop per optional-state layout, as in adam_segments
    if amsgrad:
        vmax = real_flat(state.max_exp_avg_sq)
        for i in range(p.shape[0]):
            p[i], m[i], v[i], vmax[i] = _adam_element(
                p[i], g[i], m[i], v[i], vmax[i], wd, decay, w1, b2, omb2, neg_step_size,
                bc2_sqrt, e, True, maximize, decoupled_weight_decay, wd_on)
    else:
        for i in range(p.shape[0]):
            p[i], m[i], v[i], _ = _adam_element(
                p[i], g[i], m[i], v[i], v[i], wd, decay, w1, b2, omb2, neg_step_size,
                bc2_sqrt, e, False, maximize, decoupled_weight_decay, wd_on)


def _adamw_step(param, grad, state, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=1e-2, amsgrad=False, maximize=False):
    _adam_step_jit(param, grad, state, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
                   True)


adam_init = _jit(_adam_init)
_adam_step_jit = adam_step = _jit(_adam_step)
adam_step.__doc__ = r"""Step one parameter in place with Adam: ``nbopt.Adam``'s numbers
(bit for bit) from inside ``@njit`` code or Python.

``adam_step(param, grad, state, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
weight_decay=0.0, amsgrad=False, maximize=False, decoupled_weight_decay=False)``;
``state`` from :func:`adam_init` (``state.step`` counts the steps).  The
update is the class's (see the module docstring); C-contiguous float32,
float64 or complex arrays."""
adamw_step = _jit(_adamw_step)


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _adam_hyper(values):
    lr, betas, wd, eps, fused, differentiable = values
    return None if fused or differentiable else lr_betas_floats(lr, betas, wd, eps)


def _adam_row(out, steps, commit, lr, beta1, beta2, wd, eps):
    t = steady_t(steps)
    return store_row(out, adam_host(lr, beta1, beta2, wd, eps, t), t, steps, commit)


ADAM_ROW = SteadyRow(("lr", "betas", "weight_decay", "eps", "fused", "differentiable"),
                     _adam_hyper, _jit(_adam_row))


SPEC = register(AlgorithmSpec(
    name="adam",
    state=(StateSpec("exp_avg"), StateSpec("exp_avg_sq"),
           StateSpec("max_exp_avg_sq", when=lambda group: group["amsgrad"])),
    has_step=True,
    scalars=adam_scalars,
    flags=adam_flags,
    cpu=adam_cpu,
    cuda=adam_cuda,
    n_scalars=8,
    steady_row=ADAM_ROW,
))
