r"""Adagrad: maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0: g = g + wd * p
    s = s + g * g
    p = p + (-clr) * g / (sqrt(s) + eps)

with ``clr = lr / (1 + (t - 1) * lr_decay)`` computed on the host in float64
at the parameter's own step count ``t``, as torch does (with ``fused=True``
a Tensor lr as a double, as torch's fused kernel).  The ``sum`` state
starts at ``initial_accumulator_value`` taken from the optimizer's defaults
(torch ignores a per-group value), and torch creates it in the constructor.

Sparse gradients (torch's ``_single_tensor_adagrad`` sparse branch), on the
rows present in the coalesced gradient only, per element::

    g = -grad if maximize else grad
    s = s + g * g                       state_sum.add_(sparse(g.pow(2)))
    q = g / (sqrt(s) + eps)             grad_values / std_values
    p = p + (-clr) * q                  param.add_(sparse(q), alpha=-clr)

where the last line is one fused multiply-add (torch's ``cpublas::axpy``),
except for a single entry without dense dimensions, which torch's scalar
scatter loop rounds twice (:func:`nbopt.kernels._sparse.add_is_fused`).
``step`` advances for every parameter with a gradient, even an empty one.
GPU parameters (real dtypes) take the same rows, coalesced on the host, and
the same per-element function, compiled into :func:`adagrad_cuda_rows`.
"""
from __future__ import annotations

import cmath
import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from .. import config
from ..registry import AlgorithmSpec, StateSpec, SteadyRow, register
from ._common import (_jit, cast_like, chunk_views, cpu_kernels, cuda_kernel, fma, next_step_jit,
                      plain_floats, real_flat, steady_t, store_row, to_scalar)
from ..parameter import DeviceParameter, SparseGrad
from ._sparse import add_is_fused, memory_view, row_layout

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def adagrad_update(p, g, s, wd, neg_clr, eps, maximize, wd_on):
    """One element of torch's single-tensor (dense) Adagrad; returns ``(p, s)``."""
    if maximize:
        g = -g
    if wd_on:
        g = fma(wd, p, g)
    s = fma(g, g, s)                        # addcmul_(g, g, value=1)
    std = math.sqrt(s) + eps
    p = p + (neg_clr * g) / std             # addcdiv_(g, std, value=-clr)
    return p, s


_adagrad_element = njit(error_model="numpy")(adagrad_update)


def adagrad_segments(segments, chunks, scalars, state_sum, maximize, wd_on):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, state_sum, 3)
        off = segments[s, 2]
        acc = state_sum[off + lo:off + hi]
        wd, neg_clr, eps = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        for i in range(hi - lo):
            param[i], acc[i] = _adagrad_element(
                param[i], grad[i], acc[i], wd, neg_clr, eps, maximize, wd_on)


adagrad_cpu = cpu_kernels(adagrad_segments)


def adagrad_cuda_segments(segments, chunks, scalars, state_sum, maximize, wd_on):
    # the CPU loop's body as a grid-stride kernel (see adam_cuda_segments)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, state_sum)
        wd, neg_clr, eps = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            param[i], state_sum[j] = adagrad_update(
                param[i], grad[i], state_sum[j], wd, neg_clr, eps, maximize, wd_on)


adagrad_cuda = cuda_kernel(adagrad_cuda_segments, adagrad_update)


def adagrad_scalars(group, t, fresh, old, new):
    lr = to_scalar(group["lr"])
    if group.get("fused"):
        # torch's fused kernel takes lr as a C double (a Tensor's .item())
        lr = float(lr)
    return adagrad_host(lr, group["lr_decay"], group["eps"], group["weight_decay"], t)


def adagrad_flags(group):
    return (bool(group["maximize"]), group["weight_decay"] != 0)


def _initial_sum(group, defaults):
    # torch reads the constructor's value (self.defaults), never the group's
    return defaults["initial_accumulator_value"]


# -- sparse gradients -----------------------------------------------------------

def adagrad_sparse_update(p, g, s, neg_clr, eps, maximize, fused):
    """One element of torch's sparse-gradient Adagrad; returns ``(p, s)``."""
    if maximize:
        g = -g
    s = s + g * g
    q = g / (math.sqrt(s) + eps)
    if fused:
        p = fma(neg_clr, q, p)
    else:
        p = p + neg_clr * q
    return p, s


_adagrad_sparse_element = njit(error_model="numpy")(adagrad_sparse_update)


def adagrad_sparse_update_complex(p, g, s, neg_clr, eps, maximize):
    """The same in complex arithmetic (torch does not take the real view on
    its sparse path): ``s += g * g``, ``p += -clr * g / (sqrt(s) + eps)``."""
    if maximize:
        g = -g
    s = s + g * g
    q = g / (cmath.sqrt(s) + eps)
    p = p + neg_clr * q
    return p, s


_adagrad_sparse_element_complex = njit(error_model="numpy")(adagrad_sparse_update_complex)


def adagrad_rows_complex(param, state_sum, row_off, col_off, values, neg_clr, eps,
                         contiguous, maximize):
    width = values.shape[1]
    for k in prange(values.shape[0]):
        base = row_off[k]
        for j in range(width):
            a = base + j if contiguous else base + col_off[j]
            param[a], state_sum[a] = _adagrad_sparse_element_complex(
                param[a], values[k, j], state_sum[a], neg_clr, eps, maximize)


adagrad_rows_complex_cpu = cpu_kernels(adagrad_rows_complex)


def adagrad_rows(param, state_sum, row_off, col_off, values, neg_clr, eps, contiguous,
                 maximize, fused):
    width = values.shape[1]
    for k in prange(values.shape[0]):
        base = row_off[k]
        if contiguous:
            for j in range(width):
                a = base + j
                param[a], state_sum[a] = _adagrad_sparse_element(
                    param[a], values[k, j], state_sum[a], neg_clr, eps, maximize, fused)
        else:
            for j in range(width):
                a = base + col_off[j]
                param[a], state_sum[a] = _adagrad_sparse_element(
                    param[a], values[k, j], state_sum[a], neg_clr, eps, maximize, fused)


adagrad_rows_cpu = cpu_kernels(adagrad_rows)


def adagrad_cuda_rows(param, state_sum, row_off, col_off, values, neg_clr, eps, contiguous,
                      maximize, fused):
    # the CPU loop as a grid-stride kernel, one thread per element of a
    # coalesced row (rows are unique: every element is independent)
    width = values.shape[1]
    for e in range(cuda.grid(1), values.shape[0] * width, cuda.gridsize(1)):
        k = e // width
        j = e - k * width
        a = row_off[k] + j if contiguous else row_off[k] + col_off[j]
        param[a], state_sum[a] = adagrad_sparse_update(
            param[a], values[k, j], state_sum[a], neg_clr, eps, maximize, fused)


adagrad_rows_cuda = cuda_kernel(adagrad_cuda_rows, adagrad_sparse_update)


def adagrad_sparse(group, param):
    """``AlgorithmSpec.sparse``: torch's checks, then the row update."""
    if group.get("fused"):
        raise RuntimeError("`fused` does not support sparse grad or complex param")
    if group["weight_decay"] != 0:
        raise RuntimeError("weight_decay option is not compatible with sparse gradients")
    if isinstance(param, DeviceParameter):
        if param.dtype.kind == "c":
            raise NotImplementedError(
                "Adagrad steps sparse gradients of complex parameters on the CPU only "
                f"(this parameter is on {param.device})")
        return _adagrad_sparse_step_cuda
    return _adagrad_sparse_step


def _row_plan(param, grad, group, t):
    """``(neg_clr, eps, fused, row_off, col_off, contiguous)`` of the row
    update by coalesced ``grad`` (host or device) at step ``t``."""
    _, neg_clr, eps = adagrad_scalars(group, t, False, (), ())
    # torch rebuilds the update as a new (unflagged) sparse tensor before the add
    fused = add_is_fused(param, SparseGrad._trusted(grad._indices, grad.values, grad.shape,
                                                    False))
    row_off, col_off, contiguous = row_layout(param, grad._indices)
    return neg_clr, eps, fused, row_off, col_off, contiguous


def _adagrad_sparse_step(param, state, grad, group, t):
    grad = grad.coalesce()
    if grad.nnz == 0:
        return
    neg_clr, eps, fused, row_off, col_off, contiguous = _row_plan(param, grad, group, t)
    values = np.ascontiguousarray(grad.values).reshape(grad.nnz, -1)
    serial = not config.runs_parallel(values.size)
    if param.dtype.kind == "c":
        real = param.real.dtype.type
        kernel = adagrad_rows_complex_cpu[0] if serial else adagrad_rows_complex_cpu[1]
        kernel(memory_view(param), memory_view(state["sum"]), row_off, col_off, values,
               real(neg_clr), real(eps), contiguous, bool(group["maximize"]))
        return
    kernel = adagrad_rows_cpu[0] if serial else adagrad_rows_cpu[1]
    dtype = param.dtype.type
    kernel(memory_view(param), memory_view(state["sum"]), row_off, col_off, values,
           dtype(neg_clr), dtype(eps), contiguous, bool(group["maximize"]), fused)


def _adagrad_sparse_step_cuda(param, state, grad, group, t):
    """:func:`_adagrad_sparse_step` of a DeviceSparseGrad into a real
    DeviceParameter and its device ``sum``: coalesced on the host, one launch
    of :func:`adagrad_cuda_rows`."""
    from . import _sparse_cuda as sc

    grad = grad._coalesce(copy=False)
    if grad.nnz == 0:
        return
    neg_clr, eps, fused, row_off, col_off, contiguous = _row_plan(param, grad, group, t)
    (d_row_off, d_col_off), values = sc.upload_rows(param, grad, row_off, col_off)
    dtype = param.dtype.type
    sc.launch(adagrad_rows_cuda, param, values.size, sc.memory_flat(param),
              sc.memory_flat(state["sum"]), d_row_off, d_col_off, values, dtype(neg_clr),
              dtype(eps), contiguous, bool(group["maximize"]), fused)


_adagrad_sparse_step_cuda.on_device = True


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python
# (dense gradients).

@register_jitable
def adagrad_host(lr, lr_decay, eps, wd, t):
    """The kernel's scalar row at step ``t``, computed in float64 as torch
    computes it (the class path and :func:`adagrad_step` share it)."""
    clr = lr / (1 + (t - 1) * lr_decay)
    return (wd, -clr, eps)


class AdagradState(NamedTuple):
    """One parameter's Adagrad state for :func:`adagrad_step`: ``step`` is a
    1-element float32 array (torch's 0-d float32 tensor), ``sum`` is shaped
    like the parameter."""

    step: np.ndarray
    sum: np.ndarray


def _adagrad_init(param, initial_accumulator_value=0.0):
    acc = np.empty_like(param)
    # filled through the real view: a complex parameter's sum starts at
    # v + v*1j, as the class (and torch) start it
    real_flat(acc)[:] = cast_like(initial_accumulator_value, param)
    return AdagradState(np.zeros(1, np.float32), acc)


def _adagrad_step(param, grad, state, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
                  maximize=False):
    if grad.shape != param.shape or state.sum.shape != param.shape:
        raise ValueError("adagrad_step: grad and state must have the parameter's shape")
    t = next_step_jit(state.step)
    row = adagrad_host(lr, lr_decay, eps, weight_decay, t)
    wd, neg_clr, e = cast_like(row[0], param), cast_like(row[1], param), cast_like(row[2], param)
    wd_on = weight_decay != 0
    p, g, acc = real_flat(param), real_flat(grad), real_flat(state.sum)
    for i in range(p.shape[0]):
        p[i], acc[i] = _adagrad_element(p[i], g[i], acc[i], wd, neg_clr, e, maximize, wd_on)


adagrad_init = _jit(_adagrad_init)
adagrad_init.__doc__ = r"""A new :class:`AdagradState` for ``param``: ``adagrad_init(param,
initial_accumulator_value=0.0)``, ``sum`` filled with that value (rounded to
the parameter dtype; ``v + v*1j`` for a complex parameter, as the class)."""
adagrad_step = _jit(_adagrad_step)
adagrad_step.__doc__ = r"""Step one parameter in place with Adagrad (dense gradients):
``nbopt.Adagrad``'s numbers (bit for bit) from inside ``@njit`` code or Python.

``adagrad_step(param, grad, state, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
eps=1e-10, maximize=False)``; ``state`` from :func:`adagrad_init`
(``state.step`` counts the steps).  The update is the class's (see the
module docstring); C-contiguous float32, float64 or complex arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _adagrad_hyper(values):
    h = plain_floats(values)
    # lr_decay >= 0 (torch's range): the decayed rate's divisor is >= 1
    return h if h is not None and h[1] >= 0.0 else None


def _adagrad_row(out, steps, commit, lr, lr_decay, eps, wd):
    t = steady_t(steps)
    return store_row(out, adagrad_host(lr, lr_decay, eps, wd, t), t, steps, commit)


ADAGRAD_ROW = SteadyRow(("lr", "lr_decay", "eps", "weight_decay"), _adagrad_hyper,
                        _jit(_adagrad_row))


SPEC = register(AlgorithmSpec(
    name="adagrad",
    state=(StateSpec("sum", init=_initial_sum),),
    has_step=True,
    scalars=adagrad_scalars,
    flags=adagrad_flags,
    cpu=adagrad_cpu,
    cuda=adagrad_cuda,
    n_scalars=3,
    sparse=adagrad_sparse,
    steady_row=ADAGRAD_ROW,
))
