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

from numba import njit, prange

from ..registry import AlgorithmSpec, StateSpec, register
from ._common import chunk_views, cpu_kernels, cuda_kernel, fma, to_scalar

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
    return (etaminus, etaplus, step_size_min, step_size_max, 1.0, 0.0)


def rprop_flags(group):
    return (bool(group["maximize"]),)


def _initial_step_size(group, defaults):
    """``torch.full_like(grad, _to_scalar(group["lr"]))`` at the first step (a
    1-element lr array gives its own, e.g. float32, value: torch's ``.item()``).
    The engine fills through the real view, so a complex parameter starts at
    ``lr + lr*1j`` as in torch."""
    return to_scalar(group["lr"])


SPEC = register(AlgorithmSpec(
    name="rprop",
    state=(StateSpec("prev"), StateSpec("step_size", init=_initial_step_size)),
    has_step=True,
    scalars=rprop_scalars,
    flags=rprop_flags,
    cpu=rprop_cpu,
    cuda=rprop_cuda,
    n_scalars=6,
))
