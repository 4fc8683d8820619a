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

import numpy as np
from numba import njit, prange

from ..registry import AlgorithmSpec, StateSpec, register
from ._common import (bias_correction, chunk_views, cpu_kernels, cuda_kernel, fma, lerp,
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
    lr = to_scalar(group["lr"])
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
    step_size = lr / bias_correction(beta1, t)
    bc2_sqrt = bias_correction(beta2, t) ** 0.5
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
))
