r"""Adagrad: maths, CPU loop, registry entry.

Per element, with host scalars already rounded to the parameter dtype::

    g = -grad if maximize else grad
    if weight_decay != 0: g = g + wd * p
    s = s + g * g
    p = p + (-clr) * g / (sqrt(s) + eps)

with ``clr = lr / (1 + (t - 1) * lr_decay)`` computed on the host in float64
at the parameter's own step count ``t``, as torch does.  The ``sum`` state
starts at ``initial_accumulator_value`` taken from the optimizer's defaults
(torch ignores a per-group value), and torch creates it in the constructor.
"""
from __future__ import annotations

import math

from numba import carray, njit, prange

from ..registry import AlgorithmSpec, StateSpec, register
from ._common import addr_to_ptr, cpu_kernels, fma, to_scalar


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
        s = chunks[c, 0]
        lo, hi = chunks[c, 1], chunks[c, 2]
        # Views of this chunk only (see adam_segments).
        n = segments[s, 3]
        param = carray(addr_to_ptr(segments[s, 0], state_sum), n)[lo:hi]
        grad = carray(addr_to_ptr(segments[s, 1], state_sum), n)[lo:hi]
        off = segments[s, 2]
        acc = state_sum[off + lo:off + hi]
        wd, neg_clr, eps = scalars[s, 0], scalars[s, 1], scalars[s, 2]
        for i in range(hi - lo):
            param[i], acc[i] = _adagrad_element(
                param[i], grad[i], acc[i], wd, neg_clr, eps, maximize, wd_on)


adagrad_cpu = cpu_kernels(adagrad_segments)


def adagrad_scalars(group, t, fresh, old, new):
    lr = to_scalar(group["lr"])
    clr = lr / (1 + (t - 1) * group["lr_decay"])
    return (group["weight_decay"], -clr, group["eps"])


def adagrad_flags(group):
    return (bool(group["maximize"]), group["weight_decay"] != 0)


def _initial_sum(group, defaults):
    # torch reads the constructor's value (self.defaults), never the group's
    return defaults["initial_accumulator_value"]


SPEC = register(AlgorithmSpec(
    name="adagrad",
    state=(StateSpec("sum", init=_initial_sum),),
    has_step=True,
    scalars=adagrad_scalars,
    flags=adagrad_flags,
    cpu=adagrad_cpu,
    n_scalars=3,
))
