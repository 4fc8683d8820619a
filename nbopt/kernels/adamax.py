r"""Adamax (Adam with the infinity norm): maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0: g = g + wd * p
    m = lerp(m, g, 1 - beta1)
    u = max(beta2 * u, |g| + eps)               (NaN-propagating, as torch.maximum)
    p = p + (-lr / bc1) * m / u                 (torch's addcdiv_)

with ``bc1 = 1 - beta1**t`` computed on the host in float64 at the
parameter's own step count ``t``, as torch does (there is no second bias
correction: the infinity norm is not biased towards zero).  With
``foreach=True`` a Tensor lr enters ``lr / bc1`` as a double, as in torch's
foreach path.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ..registry import AlgorithmSpec, StateSpec, SteadyRow, register
from ._common import (_jit, bias_correction, cast_like, chunk_views, cpu_kernels, cuda_kernel, fma,
                      lerp, lr_betas_floats, next_step_jit, real_flat, steady_t, store_row,
                      to_scalar)

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def adamax_update(p, g, m, u, wd, w1, beta2, eps, neg_clr, maximize, wd_on):
    """One element of torch's single-tensor Adamax; returns ``(p, m, u)``."""
    if maximize:
        g = -g
    if wd_on:
        g = fma(wd, p, g)
    m = lerp(m, g, w1)
    a = u * beta2
    b = abs(g) + eps
    # torch.maximum propagates NaN from either side
    if a > b or a != a:
        u = a
    else:
        u = b
    p = p + (neg_clr * m) / u
    return p, m, u


_adamax_element = njit(error_model="numpy")(adamax_update)


def adamax_segments(segments, chunks, scalars, exp_avg, exp_inf, maximize, wd_on):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, exp_avg, 3)
        off = segments[s, 2]
        m = exp_avg[off + lo:off + hi]
        u = exp_inf[off + lo:off + hi]
        wd, w1, beta2 = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        eps, neg_clr = scalars[s, 3], scalars[s, 4]
        for i in range(hi - lo):
            param[i], m[i], u[i] = _adamax_element(
                param[i], grad[i], m[i], u[i], wd, w1, beta2, eps, neg_clr, maximize, wd_on)


adamax_cpu = cpu_kernels(adamax_segments)


def adamax_cuda_segments(segments, chunks, scalars, exp_avg, exp_inf, maximize, wd_on):
    # the CPU loop's body as a grid-stride kernel: blocks over chunks,
    # threads over a chunk's elements (see nbopt.kernels._cuda)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, exp_avg)
        wd, w1, beta2 = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        eps, neg_clr = scalars[s, 3], scalars[s, 4]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            param[i], exp_avg[j], exp_inf[j] = adamax_update(
                param[i], grad[i], exp_avg[j], exp_inf[j], wd, w1, beta2, eps, neg_clr,
                maximize, wd_on)


adamax_cuda = cuda_kernel(adamax_cuda_segments, adamax_update)


def adamax_scalars(group, t, fresh, old, new):
    lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
    if (type(lr) is float and type(beta1) is float and type(beta2) is float
            and type(wd) is not np.ndarray):
        # float hyper-parameters, the common case (see adam_scalars)
        return adamax_host(lr, beta1, beta2, group["eps"], wd, t)
    lr = to_scalar(lr)
    beta1, beta2 = (to_scalar(b) for b in group["betas"])
    if group.get("foreach") and isinstance(lr, np.ndarray):
        # torch's foreach path: ``_get_value(lr) / bc``, a Tensor lr's value in double
        lr = float(lr)
    return adamax_host(lr, beta1, beta2, group["eps"], to_scalar(group["weight_decay"]), t)


def adamax_flags(group):
    return (bool(group["maximize"]), bool(to_scalar(group["weight_decay"]) != 0))


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

@register_jitable
def adamax_host(lr, beta1, beta2, eps, wd, t):
    """The kernel's scalar row at step ``t``, computed in float64 as torch
    computes it (the class path and :func:`adamax_step` share it)."""
    clr = lr / bias_correction(beta1, t)
    return (wd, 1 - beta1, beta2, eps, -clr)


class AdamaxState(NamedTuple):
    """One parameter's Adamax state for :func:`adamax_step`: ``step`` is a
    1-element float32 array (torch's 0-d float32 tensor), ``exp_avg`` and
    ``exp_inf`` are shaped like the parameter."""

    step: np.ndarray
    exp_avg: np.ndarray
    exp_inf: np.ndarray


def _adamax_init(param):
    return AdamaxState(np.zeros(1, np.float32), np.zeros_like(param), np.zeros_like(param))


def _adamax_step(param, grad, state, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0, maximize=False):
    if grad.shape != param.shape or state.exp_avg.shape != param.shape \
            or state.exp_inf.shape != param.shape:
        raise ValueError("adamax_step: grad and state must have the parameter's shape")
    t = next_step_jit(state.step)
    row = adamax_host(lr, beta1, beta2, eps, weight_decay, t)
    wd, w1, b2 = cast_like(row[0], param), cast_like(row[1], param), cast_like(row[2], param)
    e, neg_clr = cast_like(row[3], param), cast_like(row[4], param)
    wd_on = weight_decay != 0
    p, g = real_flat(param), real_flat(grad)
    m, u = real_flat(state.exp_avg), real_flat(state.exp_inf)
    for i in range(p.shape[0]):
        p[i], m[i], u[i] = _adamax_element(p[i], g[i], m[i], u[i], wd, w1, b2, e, neg_clr,
                                           maximize, wd_on)


adamax_init = _jit(_adamax_init)
adamax_step = _jit(_adamax_step)
adamax_step.__doc__ = r"""Step one parameter in place with Adamax: ``nbopt.Adamax``'s numbers
(bit for bit) from inside ``@njit`` code or Python.

``adamax_step(param, grad, state, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
weight_decay=0.0, maximize=False)``; ``state`` from :func:`adamax_init`
(``state.step`` counts the steps).  The update is the class's (see the
module docstring); C-contiguous float32, float64 or complex arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _adamax_hyper(values):
    lr, betas, eps, wd = values
    return lr_betas_floats(lr, betas, eps, wd)


def _adamax_row(out, steps, commit, lr, beta1, beta2, eps, wd):
    t = steady_t(steps)
    return store_row(out, adamax_host(lr, beta1, beta2, eps, wd, t), t, steps, commit)


ADAMAX_ROW = SteadyRow(("lr", "betas", "eps", "weight_decay"), _adamax_hyper, _jit(_adamax_row))


SPEC = register(AlgorithmSpec(
    name="adamax",
    state=(StateSpec("exp_avg"), StateSpec("exp_inf")),
    has_step=True,
    scalars=adamax_scalars,
    flags=adamax_flags,
    cpu=adamax_cpu,
    cuda=adamax_cuda,
    n_scalars=5,
    steady_row=ADAMAX_ROW,
))
