r"""NAdam (Adam with Nesterov momentum, optionally with decoupled weight decay):
maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0:
        decoupled: p = p * (1 - lr * wd)        else: g = g + wd * p
    m = lerp(m, g, 1 - beta1)
    v = beta2 * v + (1 - beta2) * g * g
    den = sqrt(v / bc2) + eps                   (division inside the root)
    p = p + c_grad * g / den
    p = p + c_avg * m / den                     (two addcdiv_, grad term first)

with, on the host in float64 at the parameter's own step count ``t`` (as
torch's Python code computes them)::

    bc2     = 1 - beta2**t
    mu      = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96**((t + 1) * momentum_decay))
    mu_product = float32(mu_product) * float32(mu)      (float32 scalar state)
    c_grad  = -lr * (1 - mu) / (1 - mu_product)
    c_avg   = (-lr * mu_next) / (1 - mu_product * mu_next)

``mu_product`` is a per-parameter float32 scalar, as torch keeps it (its
in-place ``mu_product *= mu`` multiplies in float32); the coefficients use
its stored float32 value.  ``foreach=True`` takes a Tensor lr's value in
double for ``c_grad`` and ``c_avg``; ``differentiable=True`` computes them
with ``mu_product`` as a tensor (``1 - mu_product`` and the divisions in its
dtype), as torch's paths do.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ..registry import AlgorithmSpec, ScalarStateSpec, StateSpec, SteadyRow, register
from ._common import (_jit, all_equal, bias_correction, cast_like, chunk_views, cpu_kernels,
                      cuda_kernel, fma, lerp, lr_betas_floats, next_step_jit, power, real_flat,
                      steady_t, store_row, tensor_div, tensor_value, to_scalar)

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def nadam_update(p, g, m, v, wd, decay, w1, beta2, omb2, bc2, eps, c_grad, c_avg,
                 maximize, decoupled, wd_on):
    """One element of torch's single-tensor NAdam; returns ``(p, m, v)``."""
    if maximize:
        g = -g
    if wd_on:
        if decoupled:
            p = p * decay
        else:
            g = fma(wd, p, g)
    m = lerp(m, g, w1)
    v = fma(omb2 * g, g, v * beta2)
    den = math.sqrt(v / bc2) + eps
    p = p + (c_grad * g) / den
    p = p + (c_avg * m) / den
    return p, m, v


_nadam_element = njit(error_model="numpy")(nadam_update)


def nadam_segments(segments, chunks, scalars, exp_avg, exp_avg_sq, maximize, decoupled, wd_on):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, exp_avg, 3)
        off = segments[s, 2]
        m = exp_avg[off + lo:off + hi]
        v = exp_avg_sq[off + lo:off + hi]
        wd, decay, w1, beta2 = scalars[s, 0], scalars[s, 1], scalars[s, 2], scalars[s, 3]
        omb2, bc2, eps = scalars[s, 4], scalars[s, 5], scalars[s, 6]
        c_grad, c_avg = scalars[s, 7], scalars[s, 8]
        for i in range(hi - lo):
            param[i], m[i], v[i] = _nadam_element(
                param[i], grad[i], m[i], v[i], wd, decay, w1, beta2, omb2, bc2, eps,
                c_grad, c_avg, maximize, decoupled, wd_on)


nadam_cpu = cpu_kernels(nadam_segments)


def nadam_cuda_segments(segments, chunks, scalars, exp_avg, exp_avg_sq, maximize, decoupled,
                        wd_on):
    # the CPU loop's body as a grid-stride kernel: blocks over chunks,
    # threads over a chunk's elements (see nbopt.kernels._cuda)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, exp_avg)
        wd, decay, w1, beta2 = scalars[s, 0], scalars[s, 1], scalars[s, 2], scalars[s, 3]
        omb2, bc2, eps = scalars[s, 4], scalars[s, 5], scalars[s, 6]
        c_grad, c_avg = scalars[s, 7], scalars[s, 8]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            param[i], exp_avg[j], exp_avg_sq[j] = nadam_update(
                param[i], grad[i], exp_avg[j], exp_avg_sq[j], wd, decay, w1, beta2, omb2, bc2,
                eps, c_grad, c_avg, maximize, decoupled, wd_on)


nadam_cuda = cuda_kernel(nadam_cuda_segments, nadam_update)


@register_jitable
def nadam_mu(beta1, momentum_decay, t):
    """torch's momentum cache ``mu_t`` (doubles)."""
    return beta1 * (1.0 - 0.5 * power(0.96, t * momentum_decay))


@register_jitable
def nadam_coefficients(lr, mu, mu_next, mu_product):
    """``(c_grad, c_avg)`` from the stored ``mu_product`` (doubles)."""
    c_grad = -lr * (1.0 - mu) / (1.0 - mu_product)
    c_avg = (-lr * mu_next) / (1.0 - mu_product * mu_next)
    return c_grad, c_avg


@register_jitable
def nadam_host(lr, beta1, beta2, wd, eps, momentum_decay, t, mu_product):
    """The kernel's scalar row for float hyper-parameters at step ``t`` and
    this step's stored ``mu_product``, computed in float64 as torch computes
    it (the class path and :func:`nadam_step` share it)."""
    mu = nadam_mu(beta1, momentum_decay, t)
    mu_next = nadam_mu(beta1, momentum_decay, t + 1)
    c_grad, c_avg = nadam_coefficients(lr, mu, mu_next, mu_product)
    return (wd, 1 - lr * wd, 1 - beta1, beta2, 1 - beta2, bias_correction(beta2, t), eps,
            c_grad, c_avg)


def nadam_scalars(group, t, fresh, old, new):
    lr = group["lr"]
    if type(lr) is float and not group.get("differentiable"):
        # a float lr, the common case (see adam_scalars)
        beta1, beta2 = group["betas"]
        return nadam_host(lr, beta1, beta2, group["weight_decay"], group["eps"],
                          group["momentum_decay"], t, new[0])
    lr = to_scalar(lr)
    beta1, beta2 = group["betas"]
    wd, eps, decay = group["weight_decay"], group["eps"], group["momentum_decay"]
    (mu_product,) = new    # the stored float32 value torch reads with .item()
    differentiable = group.get("differentiable")
    # torch's foreach path reads a Tensor lr with .item(): the two
    # coefficients are then double arithmetic (the decay 1 - lr * wd is not)
    item_lr = group.get("foreach") and isinstance(lr, np.ndarray)
    if not (differentiable or item_lr):
        return nadam_host(lr, beta1, beta2, wd, eps, decay, t, mu_product)
    mu = nadam_mu(beta1, decay, t)
    mu_next = nadam_mu(beta1, decay, t + 1)
    if differentiable:
        c_grad, c_avg = _differentiable_coefficients(lr, mu, mu_next, mu_product,
                                                     getattr(new, "dtype", np.float32))
    else:
        c_grad, c_avg = nadam_coefficients(float(lr), mu, mu_next, mu_product)
    return (wd, 1 - lr * wd, 1 - beta1, beta2, 1 - beta2, bias_correction(beta2, t), eps,
            c_grad, c_avg)


def _differentiable_coefficients(lr, mu, mu_next, mu_product, dtype):
    """torch's ``differentiable=True`` path keeps ``mu_product`` a tensor of
    ``dtype`` (the state's: float32, or float64 once loaded into float64
    params): ``1 - mu_product``, ``mu_product * mu_next`` and the divisions by
    them are tensor arithmetic in it (a Python number divided by a tensor is a
    reciprocal times the number)."""
    mu_product = dtype(mu_product)
    lr = tensor_value(lr)
    c_grad = tensor_div(-lr * (1.0 - mu), 1.0 - mu_product)
    c_avg = tensor_div(-lr * mu_next, 1.0 - mu_product * mu_next)
    return c_grad, c_avg


def nadam_advance(group, t, old, dtype):
    # torch: ``mu_product *= mu`` on a 0-d tensor of ``dtype`` (float32, or
    # float64 once loaded into float64 params): mu is rounded to that dtype
    # and the product is taken in it
    (mu_product,) = old
    beta1 = group["betas"][0]
    if dtype is np.float32 and type(beta1) is float:
        # the common case without NumPy scalars: the product of two float32
        # values is exact in double, and the engine rounds what this returns
        # to the state's float32, so this is float32 multiplication
        return (mu_product * float(np.float32(nadam_mu(beta1, group["momentum_decay"], t))),)
    return (dtype(mu_product) * dtype(nadam_mu(beta1, group["momentum_decay"], t)),)


def nadam_flags(group):
    return (bool(group["maximize"]), bool(group["decoupled_weight_decay"]),
            group["weight_decay"] != 0)


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

class NAdamState(NamedTuple):
    """One parameter's NAdam state for :func:`nadam_step`: ``step`` and
    ``mu_product`` are 1-element arrays (torch's 0-d tensors: float32, as
    torch creates them; ``mu_product`` float64 once loaded into a float64
    parameter, as torch's load_state_dict casts it), the moments are shaped
    like the parameter."""

    step: np.ndarray
    mu_product: np.ndarray
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray


def _nadam_init(param):
    return NAdamState(np.zeros(1, np.float32), np.ones(1, np.float32), np.zeros_like(param),
                      np.zeros_like(param))


def _nadam_step(param, grad, state, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
                maximize=False):
    if grad.shape != param.shape or state.exp_avg.shape != param.shape \
            or state.exp_avg_sq.shape != param.shape:
        raise ValueError("nadam_step: grad and state must have the parameter's shape")
    if state.mu_product.shape != (1,):
        raise ValueError("nadam_step: mu_product must be a 1-element array")
    t = next_step_jit(state.step)
    # nadam_advance: ``mu_product *= mu`` in the stored dtype
    mp = state.mu_product
    mp[0] = mp[0] * cast_like(nadam_mu(beta1, momentum_decay, t), mp)
    row = nadam_host(lr, beta1, beta2, weight_decay, eps, momentum_decay, t, float(mp[0]))
    wd, decay, w1, b2 = (cast_like(row[0], param), cast_like(row[1], param),
                         cast_like(row[2], param), cast_like(row[3], param))
    omb2, bc2, e = cast_like(row[4], param), cast_like(row[5], param), cast_like(row[6], param)
    c_grad, c_avg = cast_like(row[7], param), cast_like(row[8], param)
    wd_on = weight_decay != 0
    p, g = real_flat(param), real_flat(grad)
    m, v = real_flat(state.exp_avg), real_flat(state.exp_avg_sq)
    for i in range(p.shape[0]):
        p[i], m[i], v[i] = _nadam_element(
            p[i], g[i], m[i], v[i], wd, decay, w1, b2, omb2, bc2, e, c_grad, c_avg, maximize,
            decoupled_weight_decay, wd_on)


nadam_init = _jit(_nadam_init)
nadam_step = _jit(_nadam_step)
nadam_step.__doc__ = r"""Step one parameter in place with NAdam: ``nbopt.NAdam``'s numbers
(bit for bit) from inside ``@njit`` code or Python.

``nadam_step(param, grad, state, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
maximize=False)``; ``state`` from :func:`nadam_init` (``state.step`` counts
the steps; ``state.mu_product`` is advanced in its own dtype, as the class
advances it).  The update is the class's (see the module docstring);
C-contiguous float32, float64 or complex arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _nadam_hyper(values):
    lr, betas, wd, eps, momentum_decay, differentiable = values
    h = None if differentiable else lr_betas_floats(lr, betas, wd, eps, momentum_decay)
    return h if h is not None and h[5] >= 0.0 else None


def _nadam_row(out, steps, mu_product, new, commit, lr, beta1, beta2, wd, eps, momentum_decay):
    t = steady_t(steps)
    if not all_equal(mu_product):
        return 0.0          # one row needs one value of the scalar state
    # nadam_advance: ``mu_product *= mu`` in the stored dtype
    mp = mu_product[0] * cast_like(nadam_mu(beta1, momentum_decay, t), mu_product)
    new[0] = mp
    t = store_row(out, nadam_host(lr, beta1, beta2, wd, eps, momentum_decay, t,
                                  np.float64(mp)), t, steps, commit)
    if t and commit:
        mu_product[:] = mp
    return t


NADAM_ROW = SteadyRow(("lr", "betas", "weight_decay", "eps", "momentum_decay", "differentiable"),
                      _nadam_hyper, _jit(_nadam_row))


SPEC = register(AlgorithmSpec(
    name="nadam",
    state=(StateSpec("exp_avg"), StateSpec("exp_avg_sq")),
    has_step=True,
    scalars=nadam_scalars,
    flags=nadam_flags,
    cpu=nadam_cpu,
    cuda=nadam_cuda,
    scalar_state=(ScalarStateSpec("mu_product", init=1.0),),
    advance=nadam_advance,
    n_scalars=9,
    steady_row=NADAM_ROW,
))
