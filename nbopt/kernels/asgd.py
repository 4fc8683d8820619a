r"""ASGD (averaged stochastic gradient descent): maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0: g = g + wd * p
    p = p * (1 - lambd * eta)
    p = p - eta * g
    ax = ax + (p - ax) * mu        if mu != 1
    ax = p                         otherwise

``eta`` and ``mu`` are per-parameter float32 scalar state, as torch keeps
them: this step uses their stored (float32) values, and afterwards they are
advanced on the host, in float64 at the parameter's step count ``t``, and
stored rounded to float32::

    eta = lr / (1 + lambd * lr * t) ** alpha      (the group's current lr)
    mu  = 1 / max(1, t - t0)

With ``foreach=True`` the new ``eta`` is computed as torch's foreach path
does, from the float32 step tensor in float32 arithmetic.  The average ``ax``
is kept in the state only; it is never copied back into the parameter.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ..registry import AlgorithmSpec, ScalarStateSpec, StateSpec, SteadyRow, register
from ._common import (_jit, all_equal, cast_like, chunk_views, cpu_kernels, cuda_kernel, fma,
                      next_step_jit, plain_floats, power, real_flat, steady_t, store_row,
                      tensor_div, tensor_pow, tensor_value, to_scalar)

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def asgd_update(p, g, ax, wd, decay, neg_eta, mu, average, maximize, wd_on):
    """One element of torch's single-tensor ASGD; returns ``(p, ax)``."""
    if maximize:
        g = -g
    if wd_on:
        g = fma(wd, p, g)
    p = p * decay
    p = fma(neg_eta, g, p)
    if average:
        # torch: ax.add_(param.sub(ax).mul_(mu)), three roundings
        ax = ax + (p - ax) * mu
    else:
        ax = p
    return p, ax


_asgd_element = njit(error_model="numpy")(asgd_update)


def asgd_segments(segments, chunks, scalars, ax_state, maximize, wd_on):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, ax_state, 3)
        off = segments[s, 2]
        ax = ax_state[off + lo:off + hi]
        wd, decay, neg_eta, mu = scalars[s, 0], scalars[s, 1], scalars[s, 2], scalars[s, 3]
        # Whether mu != 1 is decided per parameter on the host (torch's
        # ``mu.item() != 1``); one inner loop per branch keeps the body branch-free.
        if scalars[s, 4] != 0:
            for i in range(hi - lo):
                param[i], ax[i] = _asgd_element(
                    param[i], grad[i], ax[i], wd, decay, neg_eta, mu, True, maximize, wd_on)
        else:
            for i in range(hi - lo):
                param[i], ax[i] = _asgd_element(
                    param[i], grad[i], ax[i], wd, decay, neg_eta, mu, False, maximize, wd_on)


asgd_cpu = cpu_kernels(asgd_segments)


def asgd_cuda_segments(segments, chunks, scalars, ax_state, maximize, wd_on):
    # the CPU loop's body as a grid-stride kernel: blocks over chunks,
    # threads over a chunk's elements (see nbopt.kernels._cuda)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, ax_state)
        wd, decay, neg_eta, mu = scalars[s, 0], scalars[s, 1], scalars[s, 2], scalars[s, 3]
        # mu != 1, decided per parameter on the host (as the CPU loop)
        average = scalars[s, 4] != 0
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            if average:
                param[i], ax_state[j] = asgd_update(
                    param[i], grad[i], ax_state[j], wd, decay, neg_eta, mu, True, maximize,
                    wd_on)
            else:
                param[i], ax_state[j] = asgd_update(
                    param[i], grad[i], ax_state[j], wd, decay, neg_eta, mu, False, maximize,
                    wd_on)


asgd_cuda = cuda_kernel(asgd_cuda_segments, asgd_update)


def asgd_scalars(group, t, fresh, old, new):
    eta, mu = old          # the stored float32 values torch reads with .item()
    return asgd_host(group["weight_decay"], group["lambd"], eta, mu)


@register_jitable
def asgd_host(weight_decay, lambd, eta, mu):
    """The kernel's scalar row from the stored ``eta`` and ``mu`` (before this
    step's advance), in float64 (the class path and :func:`asgd_step` share
    it)."""
    return (weight_decay, 1 - lambd * eta, -eta, mu, 1.0 if mu != 1 else 0.0)


@register_jitable
def asgd_eta_mu(lr, lambd, alpha, t0, t):
    """This step's new ``(eta, mu)`` for a float lr, in doubles as torch
    computes them."""
    return lr / power(1 + lambd * lr * t, alpha), 1 / max(1, t - t0)


@register_jitable
def asgd_advance_host(lr, lambd, alpha, t0, t):
    """This step's new ``(eta, mu)`` for a float lr, as torch computes them
    (doubles) and ``torch.as_tensor`` rounds them (float32); storing them
    in the state's own dtype rounds nothing more."""
    eta, mu = asgd_eta_mu(lr, lambd, alpha, t0, t)
    return np.float32(eta), np.float32(mu)


def _as_tensor(x):
    """torch.as_tensor: a Python float becomes a float32 0-d tensor (torch's
    default dtype); an array (a Tensor lr's result) keeps its dtype."""
    return x if isinstance(x, (np.ndarray, np.generic)) else np.float32(x)


def asgd_advance(group, t, old, dtype):
    # torch: eta.copy_(torch.as_tensor(...)), mu.copy_(torch.as_tensor(...)):
    # rounded by as_tensor first, then by the state's own dtype on storing
    lr = group["lr"]
    if type(lr) is float and not group.get("foreach"):
        # the common case, as below without the tensor helpers (~0.5 us a step)
        if dtype is np.float32:
            # as_tensor's float32 rounding is the engine's rounding of what
            # this returns to the float32 state
            return asgd_eta_mu(lr, group["lambd"], group["alpha"], group["t0"], t)
        return asgd_advance_host(lr, group["lambd"], group["alpha"], group["t0"], t)
    lr = tensor_value(to_scalar(lr))
    lambd, alpha, t0 = group["lambd"], group["alpha"], group["t0"]
    if group.get("foreach"):
        # torch's foreach path takes the float32 ``step`` tensor itself (not
        # its .item()): every operation is float32 tensor arithmetic, and the
        # final lr / (...) with a Python lr is a reciprocal times lr
        base = 1 + lambd * lr * np.float32(t)
        new_eta = tensor_div(lr, tensor_pow(base, alpha))
    else:
        # with a Tensor lr the power is torch's 0-d tensor ** float (tensor_pow)
        new_eta = _as_tensor(lr / tensor_pow(1 + lambd * lr * t, alpha))
    new_mu = _as_tensor(1 / max(1, t - t0))
    return (new_eta, new_mu)


def asgd_flags(group):
    return (bool(group["maximize"]), group["weight_decay"] != 0)


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

class ASGDState(NamedTuple):
    """One parameter's ASGD state for :func:`asgd_step`: ``step``, ``eta`` and
    ``mu`` are 1-element arrays (torch's 0-d tensors: float32, as torch
    creates them; ``eta`` and ``mu`` float64 once loaded into a float64
    parameter, as torch's load_state_dict casts them), ``ax`` is shaped like
    the parameter."""

    step: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    ax: np.ndarray


def _asgd_init(param, lr=1e-2):
    eta = np.empty(1, np.float32)
    eta[0] = lr                 # eta starts at lr (as stored: float32)
    return ASGDState(np.zeros(1, np.float32), eta, np.ones(1, np.float32), np.zeros_like(param))


def _asgd_step(param, grad, state, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0,
               maximize=False):
    if grad.shape != param.shape or state.ax.shape != param.shape:
        raise ValueError("asgd_step: grad and state must have the parameter's shape")
    if state.eta.shape != (1,) or state.mu.shape != (1,):
        raise ValueError("asgd_step: eta and mu must be 1-element arrays")
    t = next_step_jit(state.step)
    # this step uses the stored eta and mu; then they advance (asgd_advance)
    row = asgd_host(weight_decay, lambd, float(state.eta[0]), float(state.mu[0]))
    new_eta, new_mu = asgd_advance_host(lr, lambd, alpha, t0, t)
    state.eta[0] = new_eta
    state.mu[0] = new_mu
    wd, decay = cast_like(row[0], param), cast_like(row[1], param)
    neg_eta, mu = cast_like(row[2], param), cast_like(row[3], param)
    wd_on = weight_decay != 0
    p, g, ax = real_flat(param), real_flat(grad), real_flat(state.ax)
    # mu != 1 decided once, as in asgd_segments (the rounded column)
    if cast_like(row[4], param) != 0:
        for i in range(p.shape[0]):
            p[i], ax[i] = _asgd_element(p[i], g[i], ax[i], wd, decay, neg_eta, mu, True,
                                        maximize, wd_on)
    else:
        for i in range(p.shape[0]):
            p[i], ax[i] = _asgd_element(p[i], g[i], ax[i], wd, decay, neg_eta, mu, False,
                                        maximize, wd_on)


asgd_init = _jit(_asgd_init)
asgd_step = _jit(_asgd_step)
asgd_step.__doc__ = r"""Step one parameter in place with ASGD: ``nbopt.ASGD``'s numbers
(bit for bit) from inside ``@njit`` code or Python.

``asgd_step(param, grad, state, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6,
weight_decay=0.0, maximize=False)``; ``state`` from :func:`asgd_init`
``(param, lr=1e-2)`` (``eta`` starts at lr).  This step uses the stored
``eta`` and ``mu``, which then advance to ``lr / (1 + lambd * lr * t) **
alpha`` and ``1 / max(1, t - t0)`` (rounded to float32, as torch rounds
them) at the new step count ``t``.  The average ``ax`` stays in the state.
C-contiguous float32, float64 or complex arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _asgd_hyper(values):
    lr, lambd, alpha, t0, wd, foreach = values
    if foreach:
        return None
    h = plain_floats((lr, lambd, alpha, t0, wd))
    # 1 + lambd * lr * t >= 1: its power is positive
    return h if h is not None and h[0] >= 0.0 and h[1] >= 0.0 and h[2] >= 0.0 else None


def _asgd_row(out, steps, eta, mu, new, commit, lr, lambd, alpha, t0, wd):
    t = steady_t(steps)
    if not all_equal(eta) or not all_equal(mu):
        return 0.0          # one row needs one value of the scalar state
    new_eta, new_mu = asgd_eta_mu(lr, lambd, alpha, t0, t)
    if new_eta == 0.0 and lr != 0.0:
        return 0.0          # the power overflowed: CPython's ** raises
    # torch.as_tensor rounds them to float32; the state's dtype keeps that
    new[0] = np.float32(new_eta)
    new[1] = np.float32(new_mu)
    t = store_row(out, asgd_host(wd, lambd, np.float64(eta[0]), np.float64(mu[0])), t, steps,
                  commit)
    if t and commit:
        eta[:] = new[0]
        mu[:] = new[1]
    return t


ASGD_ROW = SteadyRow(("lr", "lambd", "alpha", "t0", "weight_decay", "foreach"), _asgd_hyper,
                     _jit(_asgd_row))


SPEC = register(AlgorithmSpec(
    name="asgd",
    state=(StateSpec("ax"),),
    has_step=True,
    scalars=asgd_scalars,
    flags=asgd_flags,
    cpu=asgd_cpu,
    cuda=asgd_cuda,
    scalar_state=(ScalarStateSpec("eta", init=lambda group, defaults: to_scalar(group["lr"])),
                  ScalarStateSpec("mu", init=1.0)),
    advance=asgd_advance,
    n_scalars=5,
    steady_row=ASGD_ROW,
))
