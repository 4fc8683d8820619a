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

from numba import njit, prange

from ..registry import AlgorithmSpec, StateSpec, register
from ._common import chunk_views, cpu_kernels, cuda_kernel, fma, to_scalar
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
    return (to_scalar(group["weight_decay"]), group["momentum"], 1 - group["dampening"],
            -to_scalar(group["lr"]), 1.0 if fresh else 0.0)


def sgd_flags(group):
    return (bool(group["maximize"]), to_scalar(group["weight_decay"]) != 0,
            group["momentum"] != 0, bool(group["nesterov"]))


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
))
