r"""SGD with momentum, dampening and Nesterov: maths, CPU loop, registry entry.

Per element::

    g = -grad if maximize else grad
    if weight_decay != 0: g = g + wd * p
    if momentum != 0:
        buf = g                                  on the step that creates the buffer
        buf = momentum * buf + (1 - dampening) * g   afterwards
        g = g + momentum * buf if nesterov else buf
    p = p - lr * g
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload, register_jitable
from llvmlite import ir

from ..registry import AlgorithmSpec, StateSpec, SteadyRow, register
from ._common import (_jit, cast_like, chunk_views, cpu_kernels, cuda_kernel, fma, plain_floats,
                      real_flat, steady_t, store_row, to_scalar)
from ._sparse import sgd_sparse

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def sgd_update(p, g, buf, wd, momentum, one_minus_dampening, neg_lr, first,
               maximize, wd_on, use_momentum, nesterov):
    """One element of torch's single-tensor SGD; returns ``(p, buf)``."""
    if maximize:
        g = -g
    if wd_on:
        g = fma(wd, p, g)
    if use_momentum:
        if first:
            buf = g
        else:
            buf = fma(one_minus_dampening, g, buf * momentum)
        if nesterov:
            g = fma(momentum, buf, g)
        else:
            g = buf
    p = fma(neg_lr, g, p)
    return p, buf


_sgd_element = njit(error_model="numpy")(sgd_update)


def sgd_segments(segments, chunks, scalars, momentum_buffer,
                 maximize, wd_on, use_momentum, nesterov):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, momentum_buffer, 3)
        off = segments[s, 2]
        wd, momentum, one_minus_dampening = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        neg_lr, first = scalars[s, 3], scalars[s, 4] != 0
        # One inner loop per optional-state layout (see adam_segments).
        if use_momentum:
            buf = momentum_buffer[off + lo:off + hi]
            for i in range(hi - lo):
                param[i], buf[i] = _sgd_element(
                    param[i], grad[i], buf[i], wd, momentum, one_minus_dampening, neg_lr, first,
                    maximize, wd_on, True, nesterov)
        else:
            for i in range(hi - lo):
                param[i], _ = _sgd_element(
                    param[i], grad[i], param[i], wd, momentum, one_minus_dampening, neg_lr,
                    first, maximize, wd_on, False, nesterov)


sgd_cpu = cpu_kernels(sgd_segments)


def sgd_cuda_segments(segments, chunks, scalars, momentum_buffer,
                      maximize, wd_on, use_momentum, nesterov):
    # the CPU loop's body as a grid-stride kernel (see adam_cuda_segments);
    # momentum_buffer is empty without momentum but has the parameter dtype
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, momentum_buffer)
        wd, momentum, one_minus_dampening = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        neg_lr, first = scalars[s, 3], scalars[s, 4] != 0
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            if use_momentum:
                param[i], momentum_buffer[j] = sgd_update(
                    param[i], grad[i], momentum_buffer[j], wd, momentum, one_minus_dampening,
                    neg_lr, first, maximize, wd_on, True, nesterov)
            else:
                param[i], _ = sgd_update(
                    param[i], grad[i], param[i], wd, momentum, one_minus_dampening, neg_lr,
                    first, maximize, wd_on, False, nesterov)


sgd_cuda = cuda_kernel(sgd_cuda_segments, sgd_update)


def sgd_scalars(group, t, fresh, old, new):
    return sgd_host(to_scalar(group["lr"]), group["momentum"], group["dampening"],
                    to_scalar(group["weight_decay"]), fresh)


def sgd_flags(group):
    return (bool(group["maximize"]), to_scalar(group["weight_decay"]) != 0,
            group["momentum"] != 0, bool(group["nesterov"]))


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

@register_jitable
def sgd_host(lr, momentum, dampening, wd, fresh):
    """The kernel's scalar row (the class path and :func:`sgd_step` share it);
    ``fresh``: the momentum buffer is created at this step (it starts as the
    gradient, as torch's ``clone(grad)``)."""
    return (wd, momentum, 1 - dampening, -lr, 1.0 if fresh else 0.0)


class SGDState(NamedTuple):
    """One parameter's SGD state for :func:`sgd_step`: torch's
    ``momentum_buffer``, shaped like the parameter with momentum, empty
    without.  Until the first step it holds a marker (a signalling NaN in
    every real coordinate): torch's ``None``, the buffer is not created yet,
    and the first step sets it to the gradient."""

    momentum_buffer: np.ndarray


# the not-yet-created marker's bit pattern (a signalling NaN with a payload:
# arithmetic only produces quiet NaNs, so no computed buffer holds it)
_UNSET32, _UNSET64 = 0x7FA55D00, 0x7FF55D0000000000


def _unset_bits(buf):
    """The real coordinates of ``buf`` as unsigned integers, and the marker."""
    flat = real_flat(np.asarray(buf))
    if flat.dtype.kind != "f" or flat.itemsize not in (4, 8):
        return np.zeros(0, np.uint64), np.uint64(_UNSET64)      # never the marker
    if flat.itemsize == 4:
        return flat.view(np.uint32), np.uint32(_UNSET32)
    return flat.view(np.uint64), np.uint64(_UNSET64)


@overload(_unset_bits, target="cpu", inline="always")
def _unset_bits_cpu(buf):
    # anything but a float or complex array: real_flat raises the TypingError
    dtype = getattr(buf, "dtype", None)
    bits = getattr(dtype, "bitwidth", 64)
    if isinstance(dtype, types.Complex):
        bits //= 2
    utype, mark = (np.uint32, np.uint32(_UNSET32)) if bits == 32 else \
        (np.uint64, np.uint64(_UNSET64))

    def impl(buf):
        return real_flat(buf).view(utype), mark
    return impl


def _is_marker(x) -> bool:
    """Whether float ``x`` holds the marker's bits."""
    x = np.asarray(x)
    if x.dtype == np.float32:
        return bool(x.view(np.uint32) == _UNSET32)
    if x.dtype == np.float64:
        return bool(x.view(np.uint64) == _UNSET64)
    return False


@intrinsic
def _float_bits(typingctx, x):
    """The bits of float ``x`` as an unsigned integer of its width."""
    if not isinstance(x, types.Float):
        return None
    sig = (types.uint32 if x.bitwidth == 32 else types.uint64)(x)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(x.bitwidth))

    return sig, codegen


@overload(_is_marker, target="cpu", inline="always")
def _is_marker_cpu(x):
    if isinstance(x, types.Float):
        mark = np.uint32(_UNSET32) if x.bitwidth == 32 else np.uint64(_UNSET64)

        def impl(x):
            return _float_bits(x) == mark
        return impl


@register_jitable
def momentum_buffer_unset(buf) -> bool:
    """Whether ``buf`` is :func:`sgd_init`'s buffer before the first step."""
    flat = real_flat(buf)
    return flat.shape[0] > 0 and _is_marker(flat[0])


def _sgd_init(param, momentum=0.0):
    if momentum != 0:
        buf = np.empty_like(param)
        bits, mark = _unset_bits(buf)
        bits[:] = mark
    else:
        buf = np.zeros_like(param[:0])
    return SGDState(buf)


def _sgd_step(param, grad, state, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
              nesterov=False, maximize=False):
    if grad.shape != param.shape:
        raise ValueError("sgd_step: grad must have the parameter's shape")
    use_momentum = momentum != 0
    if use_momentum and state.momentum_buffer.shape != param.shape:
        raise ValueError("sgd_step: momentum needs momentum_buffer (sgd_init(param, momentum))")
    p, g, buf = real_flat(param), real_flat(grad), real_flat(state.momentum_buffer)
    # the engine's fresh flag: the buffer is created at this step (read from
    # the flat view: another view of the buffer costs ~60 ns of reference
    # counting a step, measured)
    fresh = use_momentum and buf.shape[0] > 0 and _is_marker(buf[0])
    row = sgd_host(lr, momentum, dampening, weight_decay, fresh)
    wd, mom, omd, neg_lr = (cast_like(row[0], param), cast_like(row[1], param),
                            cast_like(row[2], param), cast_like(row[3], param))
    first = row[4] != 0
    wd_on = weight_decay != 0
    # one loop per optional-state layout, as in sgd_segments
    if use_momentum:
        for i in range(p.shape[0]):
            p[i], buf[i] = _sgd_element(p[i], g[i], buf[i], wd, mom, omd, neg_lr, first,
                                        maximize, wd_on, True, nesterov)
    else:
        for i in range(p.shape[0]):
            p[i], _ = _sgd_element(p[i], g[i], p[i], wd, mom, omd, neg_lr, first, maximize,
                                   wd_on, False, nesterov)


sgd_init = _jit(_sgd_init)
sgd_init.__doc__ = r"""A new :class:`SGDState` for ``param``: ``sgd_init(param,
momentum=0.0)``; with momentum the buffer is created (marked as not yet
set: the first :func:`sgd_step` sets it to the gradient, as torch), without
it the buffer is empty."""
sgd_step = _jit(_sgd_step)
sgd_step.__doc__ = r"""Step one parameter in place with SGD: ``nbopt.SGD``'s numbers
(bit for bit) from inside ``@njit`` code or Python.

``sgd_step(param, grad, state, lr=1e-3, momentum=0.0, dampening=0.0,
weight_decay=0.0, nesterov=False, maximize=False)``; ``state`` from
:func:`sgd_init` (with the same momentum).  The update is the class's (see
the module docstring); C-contiguous float32, float64 or complex arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _sgd_row(out, steps, commit, lr, momentum, dampening, wd):
    return store_row(out, sgd_host(lr, momentum, dampening, wd, False), steady_t(steps),
                     steps, commit)


SGD_ROW = SteadyRow(("lr", "momentum", "dampening", "weight_decay"), plain_floats, _jit(_sgd_row))


SPEC = register(AlgorithmSpec(
    name="sgd",
    state=(StateSpec("momentum_buffer", when=lambda group: group["momentum"] != 0),),
    has_step=False,
    scalars=sgd_scalars,
    flags=sgd_flags,
    cpu=sgd_cpu,
    cuda=sgd_cuda,
    n_scalars=5,
    sparse=sgd_sparse,
    steady_row=SGD_ROW,
))
