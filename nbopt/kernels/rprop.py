r"""Rprop (resilient backpropagation): maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    f = sign(g * prev)                              (product rounded; sign(NaN) = 0)
    f = eta+ where f > 0, eta- where f < 0, 1 where f == 0   (in this order)
    step_size = clamp(step_size * f, step_size_min, step_size_max)
    g = 0 where f == eta-                           (no move where the sign flipped)
    p = p - sign(g) * step_size                     (sign(NaN) = 0: p stays)
    prev = g

The etas are rounded to the parameter dtype and the sign-flip test compares
with the rounded eta- (torch writes them into a tensor of the parameter
dtype).  ``step_size`` starts at the group's lr at the parameter's first step;
later changes of lr have no effect.  The step counter is kept (torch keeps
it) but does not enter the maths.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ..registry import AlgorithmSpec, StateSpec, SteadyRow, register
from ._common import (_jit, cast_like, chunk_views, cpu_kernels, cuda_kernel, fma, next_step_jit,
                      plain_floats, real_flat, steady_t, store_row, to_scalar)

cuda = device_chunk = None   # bound when the CUDA kernel compiles (cuda_kernel)


def rprop_update(p, g, prev, step_size, etaminus, etaplus, step_size_min, step_size_max,
                 one, zero, maximize):
    """One element of torch's single-tensor Rprop; returns ``(p, prev, step_size)``."""
    if maximize:
        g = -g
    # sign = grad.mul(prev).sign(); sign[sign.gt(0)] = etaplus; sign[sign.lt(0)] = etaminus;
    # sign[sign.eq(0)] = 1 -- applied one after the other, so the product will do in place
    # of its sign, except that torch.sign(NaN) is 0
    f = g * prev
    if f != f:
        f = zero
    if f > 0:
        f = etaplus
    if f < 0:
        f = etaminus
    if f == 0:
        f = one
    # step_size.mul_(sign).clamp_(min, max): max with the lower bound first; NaN stays NaN
    step_size = step_size * f
    if step_size < step_size_min:
        step_size = step_size_min
    if step_size > step_size_max:
        step_size = step_size_max
    # grad[sign.eq(etaminus)] = 0
    if f == etaminus:
        g = zero
    # param.addcmul_(grad.sign(), step_size, value=-1)
    sgn = zero                              # torch.sign: 0 for 0, -0 and NaN
    if g > 0:
        sgn = one
    if g < 0:
        sgn = -one
    p = fma(-sgn, step_size, p)
    return p, g, step_size


_rprop_element = njit(error_model="numpy")(rprop_update)


def rprop_segments(segments, chunks, scalars, prev, step_size, maximize):
    for c in prange(chunks.shape[0]):
        s, param, grad, lo, hi = chunk_views(segments, chunks, c, prev, 3)
        off = segments[s, 2]
        pv = prev[off + lo:off + hi]
        ss = step_size[off + lo:off + hi]
        etaminus, etaplus = scalars[s, 0], scalars[s, 1]
        step_size_min, step_size_max = scalars[s, 2], scalars[s, 3]
        one, zero = scalars[s, 4], scalars[s, 5]
        for i in range(hi - lo):
            param[i], pv[i], ss[i] = _rprop_element(
                param[i], grad[i], pv[i], ss[i], etaminus, etaplus, step_size_min,
                step_size_max, one, zero, maximize)


rprop_cpu = cpu_kernels(rprop_segments)


def rprop_cuda_segments(segments, chunks, scalars, prev, step_size, maximize):
    # the CPU loop's body as a grid-stride kernel (see adam_cuda_segments)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        s, param, grad, off = device_chunk(segments, chunks, c, prev)
        etaminus, etaplus = scalars[s, 0], scalars[s, 1]
        step_size_min, step_size_max = scalars[s, 2], scalars[s, 3]
        one, zero = scalars[s, 4], scalars[s, 5]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            j = off + i
            param[i], prev[j], step_size[j] = rprop_update(
                param[i], grad[i], prev[j], step_size[j], etaminus, etaplus, step_size_min,
                step_size_max, one, zero, maximize)


rprop_cuda = cuda_kernel(rprop_cuda_segments, rprop_update)


def rprop_scalars(group, t, fresh, old, new):
    etaminus, etaplus = group["etas"]
    step_size_min, step_size_max = group["step_sizes"]
    return rprop_host(etaminus, etaplus, step_size_min, step_size_max)


def rprop_flags(group):
    return (bool(group["maximize"]),)


def _initial_step_size(group, defaults):
    """``torch.full_like(grad, _to_scalar(group["lr"]))`` at the first step (a
    1-element lr array gives its own, e.g. float32, value: torch's ``.item()``).
    The engine fills through the real view, so a complex parameter starts at
    ``lr + lr*1j`` as in torch."""
    return to_scalar(group["lr"])


# --------------------------------------------------------------------------
# The functional API (nbopt.functional): callable from njit code and Python.

@register_jitable
def rprop_host(etaminus, etaplus, step_size_min, step_size_max):
    """The kernel's scalar row (the class path and :func:`rprop_step` share
    it): the etas, the step-size bounds, 1 and 0."""
    return (etaminus, etaplus, step_size_min, step_size_max, 1.0, 0.0)


class RpropState(NamedTuple):
    """One parameter's Rprop state for :func:`rprop_step`: ``step`` is a
    1-element float32 array (torch's 0-d float32 tensor; counted, not used by
    the maths), ``prev`` (the last gradient) and ``step_size`` (per element)
    are shaped like the parameter."""

    step: np.ndarray
    prev: np.ndarray
    step_size: np.ndarray


def _rprop_init(param, lr=1e-2):
    step_size = np.empty_like(param)
    # filled through the real view: a complex parameter starts at lr + lr*1j,
    # as the class (torch's full_like of the real view)
    real_flat(step_size)[:] = cast_like(lr, param)
    return RpropState(np.zeros(1, np.float32), np.zeros_like(param), step_size)


def _rprop_step(param, grad, state, lr=1e-2, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
                step_size_max=50.0, maximize=False):
    # lr only sets the initial step size (rprop_init), as in the class
    if grad.shape != param.shape or state.prev.shape != param.shape \
            or state.step_size.shape != param.shape:
        raise ValueError("rprop_step: grad and state must have the parameter's shape")
    next_step_jit(state.step)
    row = rprop_host(etaminus, etaplus, step_size_min, step_size_max)
    em, ep = cast_like(row[0], param), cast_like(row[1], param)
    lo, hi = cast_like(row[2], param), cast_like(row[3], param)
    one, zero = cast_like(row[4], param), cast_like(row[5], param)
    p, g = real_flat(param), real_flat(grad)
    pv, ss = real_flat(state.prev), real_flat(state.step_size)
    for i in range(p.shape[0]):
        p[i], pv[i], ss[i] = _rprop_element(p[i], g[i], pv[i], ss[i], em, ep, lo, hi, one, zero,
                                            maximize)


rprop_init = _jit(_rprop_init)
rprop_init.__doc__ = r"""A new :class:`RpropState` for ``param``: ``rprop_init(param,
lr=1e-2)``, every step size at ``lr`` (rounded to the parameter dtype)."""
rprop_step = _jit(_rprop_step)
rprop_step.__doc__ = r"""Step one parameter in place with Rprop: ``nbopt.Rprop``'s numbers
(bit for bit) from inside ``@njit`` code or Python.

``rprop_step(param, grad, state, lr=1e-2, etaminus=0.5, etaplus=1.2,
step_size_min=1e-6, step_size_max=50.0, maximize=False)``; ``state`` from
:func:`rprop_init` (with the same lr: ``lr`` here has no effect, as the
class's step sizes start at the lr of the parameter's first step).  The
update is the class's (see the module docstring); C-contiguous float32,
float64 or complex arrays."""


# -- the steady path's compiled scalar row (AlgorithmSpec.steady_row) ----------

def _rprop_hyper(values):
    etas, step_sizes = values
    if type(etas) is not tuple or type(step_sizes) is not tuple \
            or len(etas) != 2 or len(step_sizes) != 2:
        return None
    return plain_floats((*etas, *step_sizes))


def _rprop_row(out, steps, commit, etaminus, etaplus, step_size_min, step_size_max):
    return store_row(out, rprop_host(etaminus, etaplus, step_size_min, step_size_max),
                     steady_t(steps), steps, commit)


RPROP_ROW = SteadyRow(("etas", "step_sizes"), _rprop_hyper, _jit(_rprop_row))


SPEC = register(AlgorithmSpec(
    name="rprop",
    state=(StateSpec("prev"), StateSpec("step_size", init=_initial_step_size)),
    has_step=True,
    scalars=rprop_scalars,
    flags=rprop_flags,
    cpu=rprop_cpu,
    cuda=rprop_cuda,
    n_scalars=6,
    steady_row=RPROP_ROW,
))
