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
float64 at the parameter's own step count ``t``, as torch does.
"""
from __future__ import annotations

import math

from numba import njit, prange

from ..registry import AlgorithmSpec, StateSpec, register
from ._common import bias_correction, chunk_views, cpu_kernels, fma, lerp, to_scalar


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


def adam_scalars(group, t, fresh, old, new):
    lr = to_scalar(group["lr"])
    beta1, beta2 = (to_scalar(b) for b in group["betas"])
    wd = to_scalar(group["weight_decay"])
    step_size = lr / bias_correction(beta1, t)
    bc2_sqrt = bias_correction(beta2, t) ** 0.5
    return (wd, 1 - lr * wd, 1 - beta1, beta2, 1 - beta2, -step_size, bc2_sqrt, group["eps"])


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
    n_scalars=8,
))
