r"""L-BFGS: the flat-vector passes of torch's ``LBFGS.step``, compiled.

LBFGS is not element-wise: every iteration is a chain of whole-vector
operations whose scalars (dot products, maxima) decide what happens next.
It does not fit :class:`nbopt.registry.AlgorithmSpec` (a per-element kernel
over flat per-parameter state) and has no registry entry; its API class
(:class:`nbopt.optim.lbfgs.LBFGS`) calls the kernels below directly.

What is compiled here, with torch's rounding of each element operation:

* ``lbfgs_gather``: copy every gradient into one flat vector through a
  pointer table (a missing gradient is zeros), fused with ``max|g|``,
  ``sum|g|`` and ``g . v``;
* ``lbfgs_add``: ``p = p + t d`` (or ``p = x + t d``, a line-search trial
  point from its start ``x``) into every parameter through the pointer
  table (``fma(t, d, p)``, as torch's ``add_(d, alpha=t)``), fused with
  ``max|d t|``; the same table copies parameters out and back in for the
  line search;
* ``lbfgs_memory``: ``y = g - g_prev``, ``s = d t``, ``g_prev = g`` and the
  dot products ``y . s`` and ``y . y`` in one pass, optionally with the
  two-loop recursion's opening update ``q = -g`` and its ``s . q``;
* ``lbfgs_pass``: one update of the two-loop recursion (``q = -g``,
  ``q = q - a_i y_i``, ``r = q H``, ``r = r + (a_i - b_i) s_i``) fused with
  the dot product the next update needs, so each update streams the vectors
  once (torch: an ``add_``, then a ``dot`` that reads the result again);
* ``lbfgs_two_loop``: the whole recursion in one call, the same updates
  (``_recursion_block``, shared with ``lbfgs_pass``) over the history
  reached through an int64 address table, the scalars between them computed
  in the compiled loop (with the host loop's roundings: the same bits);
* ``lbfgs_stats``: ``max|x|`` and ``sum|x|`` of a flat vector.

Dot products and sums are accumulated per block of ``BLOCK`` elements in
``LANES`` partial sums of the vector dtype (element ``k`` of the block goes to
lane ``k % LANES``); the lanes are added in order in float64, and so are the
blocks.  The blocking is fixed, so results do not depend on the number of
threads, on serial vs parallel dispatch, or on the config knobs: a resumed run
repeats an uninterrupted one bit for bit.  The summation order is not torch's
(BLAS), so float64 results agree to rounding (~1e-16 relative per product),
not bit for bit.  Maxima propagate NaN, as torch's ``max`` does.

The element maths (``running_max``, ``step_element``, ``memory_element``,
``recursion_element``) is written once, as plain Python functions: the CPU
passes call them compiled by ``njit``, and the ``*_cuda`` kernels below
compile them into CUDA (for LBFGS on device parameters,
:mod:`nbopt.optim._lbfgs_cuda`).  The CUDA kernels keep the CPU's blocking:
one thread block per CPU chunk (the same ``table_chunks`` or ``BLOCK``
pieces), whose threads take the ``LANES`` lanes, each lane adding its
elements in the CPU's order in the vector dtype; ``lbfgs_lanes_cuda`` then
adds each chunk's lanes in order in float64, and the host adds the chunks in
order.  Every sum is the CPU's, operation for operation: device results are
the CPU's bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .. import config
from ._common import CudaKernel, addr_to_ptr, cpu_kernels, fma

__all__ = ["BLOCK", "LANES", "lbfgs_gather_cpu", "lbfgs_add_cpu", "lbfgs_copy_cpu",
           "lbfgs_memory_cpu", "lbfgs_pass_cpu", "lbfgs_two_loop_cpu", "lbfgs_stats_cpu",
           "table_chunks", "pick", "MODE_NEG", "MODE_AXPY", "MODE_AXPY_SCALE", "MODE_NEG_SCALE",
           "running_max", "step_element", "memory_element", "recursion_element",
           "lbfgs_gather_cuda", "lbfgs_add_cuda", "lbfgs_copy_cuda", "lbfgs_memory_cuda",
           "lbfgs_pass_cuda", "lbfgs_stats_cuda", "lbfgs_lanes_cuda", "lbfgs_permute_cuda",
           "CUDA_KERNELS"]

# bound when a CUDA kernel compiles (LbfgsCudaKernel.get): importing this
# module never imports numba.cuda
cuda = device_ptr = device_carray = None

# Elements per reduction block (and per unit of parallel work).
BLOCK = 1 << 14

# lbfgs_pass modes
MODE_NEG = 0          # x = -u
MODE_AXPY = 1         # x = x + a u
MODE_AXPY_SCALE = 2   # x = (x + a u) h
MODE_NEG_SCALE = 3    # x = (-u) h


# -- the element maths, written once (CPU passes and CUDA kernels) -------------

def running_max(m, a):
    """``max(m, a)`` as torch's ``max`` reduces: NaN once either is NaN."""
    return a if (a > m or a != a) else m


def step_element(p, d, t):
    """``p + t d`` with one rounding (torch's ``p.add_(d, alpha=t)``) and ``|d t|``."""
    return fma(t, d, p), abs(d * t)


def memory_element(g, prev, d, t):
    """``(y, s) = (g - prev, d t)``: one element of a curvature pair."""
    return g - prev, d * t


def recursion_element(x, u, a, h, mode):
    """One element of a two-loop update (``mode``: see :func:`lbfgs_pass`)."""
    if mode == MODE_NEG:
        return -u
    if mode == MODE_AXPY:
        return fma(a, u, x)
    if mode == MODE_AXPY_SCALE:
        return fma(a, u, x) * h
    return -u * h


def zero_of(x):
    """A zero of ``x``'s dtype (a bare ``0.0`` would turn float32 sums into float64)."""
    return 0.0


@overload(zero_of, target="cpu", inline="always")
def _zero_of_cpu(x):
    if isinstance(x, types.Array) and isinstance(x.dtype, types.Float):
        zero = as_dtype(x.dtype).type(0)

        def impl(x):
            return zero
        return impl


_JIT = dict(error_model="numpy", nogil=True)

_running_max = njit(**_JIT)(running_max)
_step_element = njit(**_JIT)(step_element)
_memory_element = njit(**_JIT)(memory_element)
_recursion_element = njit(**_JIT)(recursion_element)

# Reductions keep LANES independent partial results (a small array in L1):
# without fastmath, LLVM vectorises an element-wise loop into such an array
# but never a loop-carried scalar sum (measured: 2-3x faster).
LANES = 256


@njit(**_JIT)
def _lane_sum(acc):
    s = 0.0
    for i in range(acc.size):
        s += acc[i]
    return s


@njit(**_JIT)
def _nanmax(values):
    """The maximum, NaN if any value is NaN (torch's ``max``)."""
    mx = values[0]
    for i in range(1, values.size):
        mx = _running_max(mx, values[i])
    return mx


# Every pass below walks its block in pieces of LANES elements; piece element
# i adds into lane i of the block's accumulators.  The update and the
# reductions share one loop so that each vector is streamed once.

def lbfgs_gather(table, chunks, out, v, stats):
    """Copy the gradients of the pointer table into ``out``.

    ``table`` rows are ``(address, offset, size)``; address 0 is a missing
    gradient (zeros).  With ``stats`` also returns ``max|out|``, ``sum|out|``
    and, when ``v`` is not empty, ``out . v``; otherwise zeros.
    """
    nc = chunks.shape[0]
    part = np.zeros((nc, 3))
    has_v = v.size != 0
    for c in prange(nc):
        r = chunks[c, 0]
        lo, hi = chunks[c, 1], chunks[c, 2]
        addr, off, size = table[r, 0], table[r, 1], table[r, 2]
        acc_max = np.zeros(LANES, out.dtype)
        acc_sum = np.zeros(LANES, out.dtype)
        acc_dot = np.zeros(LANES, out.dtype)
        for c0 in range(lo, hi, LANES):
            c1 = min(c0 + LANES, hi)
            dst = out[off + c0:off + c1]
            if addr == 0:
                dst[:] = zero_of(out)
            else:
                src = carray(addr_to_ptr(addr, out), size)[c0:c1]
                for i in range(c1 - c0):
                    dst[i] = src[i]
            if stats:
                for i in range(c1 - c0):
                    a = abs(dst[i])
                    acc_max[i] = _running_max(acc_max[i], a)
                    acc_sum[i] += a
                if has_v:
                    vs = v[off + c0:off + c1]
                    for i in range(c1 - c0):
                        acc_dot[i] += dst[i] * vs[i]
        if stats:
            part[c, 0] = _nanmax(acc_max)
            part[c, 1] = _lane_sum(acc_sum)
            part[c, 2] = _lane_sum(acc_dot)
    if nc == 0 or not stats:
        return 0.0, 0.0, 0.0
    total_sum = 0.0
    total_dot = 0.0
    for c in range(nc):
        total_sum += part[c, 1]
        total_dot += part[c, 2]
    return _nanmax(part[:, 0]), total_sum, total_dot


lbfgs_gather_cpu = cpu_kernels(lbfgs_gather)


def lbfgs_add(table, chunks, t, d, x):
    """``p = p + t d`` for every parameter of the pointer table (torch's
    ``p.add_(d, alpha=t)``: one fused multiply-add); returns ``max|d t|``.

    With ``x`` not empty (a flat vector): ``p = x + t d``, the bits of
    copying ``x`` into the parameters and then adding (the line search's
    trial points, one pass instead of two).
    """
    nc = chunks.shape[0]
    part = np.zeros(nc)
    from_x = x.size != 0
    for c in prange(nc):
        r = chunks[c, 0]
        lo, hi = chunks[c, 1], chunks[c, 2]
        addr, off, size = table[r, 0], table[r, 1], table[r, 2]
        acc_max = np.zeros(LANES, d.dtype)
        for c0 in range(lo, hi, LANES):
            c1 = min(c0 + LANES, hi)
            p = carray(addr_to_ptr(addr, d), size)[c0:c1]
            ds = d[off + c0:off + c1]
            if from_x:
                xs = x[off + c0:off + c1]
                for i in range(c1 - c0):
                    p[i], a = _step_element(xs[i], ds[i], t)
                    acc_max[i] = _running_max(acc_max[i], a)
            else:
                for i in range(c1 - c0):
                    p[i], a = _step_element(p[i], ds[i], t)
                    acc_max[i] = _running_max(acc_max[i], a)
        part[c] = _nanmax(acc_max)
    if nc == 0:
        return 0.0
    return _nanmax(part)


lbfgs_add_cpu = cpu_kernels(lbfgs_add)


def lbfgs_copy(table, chunks, flat, to_params):
    """Copy the parameters of the pointer table into ``flat`` or, with
    ``to_params``, ``flat`` back into the parameters."""
    for c in prange(chunks.shape[0]):
        r = chunks[c, 0]
        lo, hi = chunks[c, 1], chunks[c, 2]
        addr, off, size = table[r, 0], table[r, 1], table[r, 2]
        p = carray(addr_to_ptr(addr, flat), size)[lo:hi]
        f = flat[off + lo:off + hi]
        if to_params:
            for i in range(hi - lo):
                p[i] = f[i]
        else:
            for i in range(hi - lo):
                f[i] = p[i]


lbfgs_copy_cpu = cpu_kernels(lbfgs_copy)


def lbfgs_memory(g, prev, d, t, y, s, q):
    """``y = g - prev``, ``s = d t``, then ``prev = g``; returns ``(y . s, y . y,
    s . q)``.

    With ``q`` not empty it also does the two-loop recursion's opening update
    for the new pair, ``q = -g``, and ``s . q`` is its dot product (the bits
    of ``lbfgs_pass(q, g, 0, 1, s, MODE_NEG)``, one pass fewer); otherwise
    ``s . q`` is 0.
    """
    n = g.size
    nb = (n + BLOCK - 1) // BLOCK
    part = np.zeros((nb, 3))
    has_q = q.size != 0
    for b in prange(nb):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n)
        acc_ys = np.zeros(LANES, g.dtype)
        acc_yy = np.zeros(LANES, g.dtype)
        acc_sq = np.zeros(LANES, g.dtype)
        for c0 in range(lo, hi, LANES):
            c1 = min(c0 + LANES, hi)
            gs, ps, dsb = g[c0:c1], prev[c0:c1], d[c0:c1]
            ys, ss = y[c0:c1], s[c0:c1]
            if has_q:
                qs = q[c0:c1]
                for i in range(c1 - c0):
                    yi, si = _memory_element(gs[i], ps[i], dsb[i], t)
                    ys[i] = yi
                    ss[i] = si
                    r = _recursion_element(qs[i], gs[i], t, t, MODE_NEG)
                    qs[i] = r
                    ps[i] = gs[i]
                    acc_ys[i] += yi * si
                    acc_yy[i] += yi * yi
                    acc_sq[i] += si * r
            else:
                for i in range(c1 - c0):
                    yi, si = _memory_element(gs[i], ps[i], dsb[i], t)
                    ys[i] = yi
                    ss[i] = si
                    ps[i] = gs[i]
                    acc_ys[i] += yi * si
                    acc_yy[i] += yi * yi
        part[b, 0] = _lane_sum(acc_ys)
        part[b, 1] = _lane_sum(acc_yy)
        part[b, 2] = _lane_sum(acc_sq)
    ys_total = 0.0
    yy_total = 0.0
    sq_total = 0.0
    for b in range(nb):
        ys_total += part[b, 0]
        yy_total += part[b, 1]
        sq_total += part[b, 2]
    return ys_total, yy_total, sq_total


lbfgs_memory_cpu = cpu_kernels(lbfgs_memory)


@njit(**_JIT)
def _recursion_block(x, u, a, h, v, mode, has_v, lo, hi):
    """Elements ``lo:hi`` (one block) of a two-loop update (see :func:`lbfgs_pass`)
    and, with ``has_v``, their lane sum of ``v . x`` after it (else 0).

    The one loop of every update, :func:`lbfgs_pass`'s and
    :func:`lbfgs_two_loop`'s, so that both give the same bits.
    """
    acc = np.zeros(LANES, x.dtype)
    for c0 in range(lo, hi, LANES):
        c1 = min(c0 + LANES, hi)
        xs, us = x[c0:c1], u[c0:c1]
        # one loop per (mode, dot): a branch inside the loop would stop
        # LLVM from vectorising it
        if has_v:
            vs = v[c0:c1]
            if mode == 0:
                for i in range(c1 - c0):
                    r = _recursion_element(xs[i], us[i], a, h, 0)
                    xs[i] = r
                    acc[i] += vs[i] * r
            elif mode == 1:
                for i in range(c1 - c0):
                    r = _recursion_element(xs[i], us[i], a, h, 1)
                    xs[i] = r
                    acc[i] += vs[i] * r
            elif mode == 2:
                for i in range(c1 - c0):
                    r = _recursion_element(xs[i], us[i], a, h, 2)
                    xs[i] = r
                    acc[i] += vs[i] * r
            else:
                for i in range(c1 - c0):
                    r = _recursion_element(xs[i], us[i], a, h, 3)
                    xs[i] = r
                    acc[i] += vs[i] * r
        else:
            if mode == 0:
                for i in range(c1 - c0):
                    xs[i] = _recursion_element(xs[i], us[i], a, h, 0)
            elif mode == 1:
                for i in range(c1 - c0):
                    xs[i] = _recursion_element(xs[i], us[i], a, h, 1)
            elif mode == 2:
                for i in range(c1 - c0):
                    xs[i] = _recursion_element(xs[i], us[i], a, h, 2)
            else:
                for i in range(c1 - c0):
                    xs[i] = _recursion_element(xs[i], us[i], a, h, 3)
    if has_v:
        return _lane_sum(acc)
    return 0.0


def lbfgs_pass(x, u, a, h, v, mode):
    """One update of the two-loop recursion, then ``v . x`` (0 when ``v`` is empty).

    ``mode``: ``MODE_NEG`` ``x = -u``; ``MODE_AXPY`` ``x = x + a u``;
    ``MODE_AXPY_SCALE`` ``x = (x + a u) h``; ``MODE_NEG_SCALE`` ``x = (-u) h``.
    ``x + a u`` is one fused multiply-add, as torch's ``add_(u, alpha=a)``.
    """
    n = x.size
    nb = (n + BLOCK - 1) // BLOCK
    part = np.zeros(nb)
    has_v = v.size != 0
    for b in prange(nb):
        lo = b * BLOCK
        part[b] = _recursion_block(x, u, a, h, v, mode, has_v, lo, min(lo + BLOCK, n))
    total = 0.0
    for b in range(nb):
        total += part[b]
    return total


lbfgs_pass_cpu = cpu_kernels(lbfgs_pass)


def lbfgs_two_loop(q, g, hist, ro, al, h, first, has_first):
    """The whole two-loop recursion in one call: ``q`` becomes the direction
    ``d``; returns ``g . d``.

    ``hist`` is the int64 ``(m, 2)`` address table of the history, oldest
    pair first: row ``i`` holds the addresses of ``y_i`` (``old_dirs[i]``)
    and ``s_i`` (``old_stps[i]``), C-contiguous vectors of ``q``'s size and
    dtype.  ``ro`` holds the ``m`` values ``1 / (y_i . s_i)`` and ``al``
    receives the ``m`` values ``alpha_i``, both in ``q``'s dtype; ``h`` is
    ``H_diag`` in that dtype.  With ``has_first`` the opening update
    (``q = -g`` and ``s_{m-1} . q``, whose float64 total is ``first``) is
    already done (:func:`lbfgs_memory` fuses it into the memory update).

    The updates are :func:`lbfgs_pass`'s, in the order and with the scalars
    of the per-update loop of :class:`nbopt.optim.lbfgs.LBFGS` (each dot
    product's float64 total rounded to the dtype, then multiplied by ``ro_i``
    in the dtype), so the bits are that loop's; only the Python between the
    updates is gone.  ``m = 0``: ``q = (-g) h`` and ``g . q``.
    """
    n = q.size
    m = hist.shape[0]
    nb = (n + BLOCK - 1) // BLOCK
    part = np.zeros(nb)
    zero = zero_of(q)
    scalar = np.empty(1, q.dtype)   # a float64 total rounded to the dtype
    total = first
    for step in range(2 * m + 1):
        # which update: the opening one (q = -g, or q = (-g) h without
        # history), the first loop (i = m-1 .. 0: q = q - alpha_i y_i, the
        # last one times h) or the second (i = 0 .. m-1: q = q + (alpha_i -
        # beta_i) s_i), and the vector v whose dot product with q comes next
        if step == 0:
            if has_first:
                continue
            a = zero
            u = g
            if m == 0:
                v = g
                mode = MODE_NEG_SCALE
            else:
                v = carray(addr_to_ptr(hist[m - 1, 1], q), n)
                mode = MODE_NEG
        elif step <= m:
            i = m - step
            al[i] = total
            al[i] = al[i] * ro[i]
            a = -al[i]
            u = carray(addr_to_ptr(hist[i, 0], q), n)
            if i > 0:
                v = carray(addr_to_ptr(hist[i - 1, 1], q), n)
                mode = MODE_AXPY
            else:
                v = u
                mode = MODE_AXPY_SCALE
        else:
            i = step - m - 1
            scalar[0] = total
            a = al[i] - scalar[0] * ro[i]
            u = carray(addr_to_ptr(hist[i, 1], q), n)
            if i + 1 < m:
                v = carray(addr_to_ptr(hist[i + 1, 0], q), n)
            else:
                v = g
            mode = MODE_AXPY
        for b in prange(nb):
            lo = b * BLOCK
            part[b] = _recursion_block(q, u, a, h, v, mode, True, lo, min(lo + BLOCK, n))
        total = 0.0
        for b in range(nb):
            total += part[b]
    return total


lbfgs_two_loop_cpu = cpu_kernels(lbfgs_two_loop)


def lbfgs_stats(x):
    """``(max|x|, sum|x|)`` of a flat vector."""
    n = x.size
    nb = (n + BLOCK - 1) // BLOCK
    part = np.zeros((nb, 2))
    for b in prange(nb):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n)
        acc_max = np.zeros(LANES, x.dtype)
        acc_sum = np.zeros(LANES, x.dtype)
        for c0 in range(lo, hi, LANES):
            xs = x[c0:min(c0 + LANES, hi)]
            for i in range(xs.size):
                a = abs(xs[i])
                acc_max[i] = _running_max(acc_max[i], a)
                acc_sum[i] += a
        part[b, 0] = _nanmax(acc_max)
        part[b, 1] = _lane_sum(acc_sum)
    if nb == 0:
        return 0.0, 0.0
    total = 0.0
    for b in range(nb):
        total += part[b, 1]
    return _nanmax(part[:, 0]), total


lbfgs_stats_cpu = cpu_kernels(lbfgs_stats)


def table_chunks(sizes: np.ndarray) -> np.ndarray:
    """Split each pointer-table row into pieces of at most ``BLOCK`` elements:
    int64 ``(n_chunk, 3)`` rows ``(row, first, last)``; empty rows get none."""
    sizes = np.asarray(sizes, np.int64)
    per_row = -(-sizes // BLOCK)
    row = np.repeat(np.arange(len(sizes), dtype=np.int64), per_row)
    first = np.cumsum(per_row) - per_row
    k = np.arange(len(row), dtype=np.int64) - np.repeat(first, per_row)
    out = np.empty((len(row), 3), np.int64)
    out[:, 0] = row
    out[:, 1] = k * BLOCK
    out[:, 2] = np.minimum((k + 1) * BLOCK, sizes[row])
    return out


def pick(kernels, n: int):
    """The serial kernel below ``config.PARALLEL_THRESHOLD`` elements
    (``config.LBFGS_PARALLEL_THRESHOLD`` when that is None), else the
    parallel one (both give the same bits: the blocking is the same)."""
    return kernels[1] if config.runs_parallel(n, config.LBFGS_PARALLEL_THRESHOLD) else kernels[0]


# -- CUDA ----------------------------------------------------------------------
#
# The passes above as CUDA kernels, for LBFGS on device parameters.  Block b
# takes chunk (or BLOCK piece) b, b + gridDim, ...; its threads take the
# lanes, and lane l of a chunk adds the chunk's elements l, l + LANES, ... in
# order, in the vector dtype, as the CPU loops do.  Each reduction writes its
# LANES partial results to ``lanes[chunk, k, :]``; lbfgs_lanes_cuda reduces
# them per chunk in float64, in lane order (the CPU's _lane_sum / _nanmax),
# and the host combines the chunks in order (LbfgsCudaKernel's caller,
# nbopt.optim._lbfgs_cuda).  ``zero`` is a zero of the vector dtype (a bare
# 0.0 would make a float32 kernel float64).

def lbfgs_gather_cuda(table, chunks, out, v, stats, zero, lanes):
    """lbfgs_gather: the gradients of the pointer table into ``out``; lanes
    0, 1, 2: ``max|g|``, ``sum|g|``, ``g . v`` (with ``stats``; ``v`` may be
    empty).  A missing gradient's row points at a zero buffer."""
    has_v = v.shape[0] != 0
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        r = chunks[c, 0]
        lo, hi = chunks[c, 1], chunks[c, 2]
        off, size = table[r, 1], table[r, 2]
        src = device_carray(device_ptr(table[r, 0], out), size)
        for lane in range(cuda.threadIdx.x, LANES, cuda.blockDim.x):
            m = zero
            sm = zero
            dot = zero
            for i in range(lo + lane, hi, LANES):
                x = src[i]
                out[off + i] = x
                if stats:
                    a = abs(x)
                    m = running_max(m, a)
                    sm += a
                    if has_v:
                        dot += x * v[off + i]
            if stats:
                lanes[c, 0, lane] = m
                lanes[c, 1, lane] = sm
                lanes[c, 2, lane] = dot


def lbfgs_add_cuda(table, chunks, t, d, zero, lanes):
    """lbfgs_add: ``p = p + t d`` through the pointer table; lanes 0: ``max|d t|``."""
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        r = chunks[c, 0]
        lo, hi = chunks[c, 1], chunks[c, 2]
        off, size = table[r, 1], table[r, 2]
        p = device_carray(device_ptr(table[r, 0], d), size)
        for lane in range(cuda.threadIdx.x, LANES, cuda.blockDim.x):
            m = zero
            for i in range(lo + lane, hi, LANES):
                p[i], a = step_element(p[i], d[off + i], t)
                m = running_max(m, a)
            lanes[c, 0, lane] = m


def lbfgs_copy_cuda(table, chunks, flat, to_params):
    """lbfgs_copy: parameters into ``flat`` or, with ``to_params``, back."""
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        r = chunks[c, 0]
        lo, hi = chunks[c, 1], chunks[c, 2]
        off, size = table[r, 1], table[r, 2]
        p = device_carray(device_ptr(table[r, 0], flat), size)
        for i in range(lo + cuda.threadIdx.x, hi, cuda.blockDim.x):
            if to_params:
                p[i] = flat[off + i]
            else:
                flat[off + i] = p[i]


def lbfgs_memory_cuda(g, prev, d, t, y, s, zero, lanes):
    """lbfgs_memory; lanes 0, 1: ``y . s``, ``y . y``."""
    n = g.shape[0]
    for b in range(cuda.blockIdx.x, (n + BLOCK - 1) // BLOCK, cuda.gridDim.x):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n)
        for lane in range(cuda.threadIdx.x, LANES, cuda.blockDim.x):
            ys = zero
            yy = zero
            for i in range(lo + lane, hi, LANES):
                yi, si = memory_element(g[i], prev[i], d[i], t)
                y[i] = yi
                s[i] = si
                prev[i] = g[i]
                ys += yi * si
                yy += yi * yi
            lanes[b, 0, lane] = ys
            lanes[b, 1, lane] = yy


def lbfgs_pass_cuda(x, u, a, h, v, mode, zero, lanes):
    """lbfgs_pass; lanes 0: ``v . x`` after the update (``v`` may be empty)."""
    n = x.shape[0]
    has_v = v.shape[0] != 0
    for b in range(cuda.blockIdx.x, (n + BLOCK - 1) // BLOCK, cuda.gridDim.x):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n)
        for lane in range(cuda.threadIdx.x, LANES, cuda.blockDim.x):
            acc = zero
            for i in range(lo + lane, hi, LANES):
                r = recursion_element(x[i], u[i], a, h, mode)
                x[i] = r
                if has_v:
                    acc += v[i] * r
            lanes[b, 0, lane] = acc


def lbfgs_stats_cuda(x, zero, lanes):
    """lbfgs_stats; lanes 0, 1: ``max|x|``, ``sum|x|``."""
    n = x.shape[0]
    for b in range(cuda.blockIdx.x, (n + BLOCK - 1) // BLOCK, cuda.gridDim.x):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n)
        for lane in range(cuda.threadIdx.x, LANES, cuda.blockDim.x):
            m = zero
            sm = zero
            for i in range(lo + lane, hi, LANES):
                a = abs(x[i])
                m = running_max(m, a)
                sm += a
            lanes[b, 0, lane] = m
            lanes[b, 1, lane] = sm


def lbfgs_lanes_cuda(lanes, n_chunks, n_max, part):
    """``part[c, k]``: chunk ``c``'s reduction ``k`` from its lanes, in lane
    order in float64 (the CPU's ``_nanmax`` for ``k < n_max``, else its
    ``_lane_sum``).  The one kernel with float64 arithmetic by design: the
    CPU adds the lanes (and the chunks) in float64 for every dtype."""
    n_red = part.shape[1]
    for item in range(cuda.grid(1), n_chunks * n_red, cuda.gridsize(1)):
        c = item // n_red
        k = item - c * n_red
        if k < n_max:
            m = lanes[c, k, 0]
            for i in range(1, LANES):
                m = running_max(m, lanes[c, k, i])
            part[c, k] = m
        else:
            s = 0.0
            for i in range(LANES):
                s += float(lanes[c, k, i])     # float(): float64 in the simulator too
            part[c, k] = s


def lbfgs_permute_cuda(flat, mem, index, to_flat):
    """``flat[i] = mem[index[i]]`` or, without ``to_flat``, ``mem[index[i]] =
    flat[i]`` (``index`` empty: ``i``), cast to the destination's dtype: the
    C-order flat copy of a parameter or gradient that is Fortran-ordered or
    of another dtype than the vector (the CPU's temporary copies)."""
    permuted = index.shape[0] != 0
    for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
        j = index[i] if permuted else i
        if to_flat:
            flat[i] = mem[j]
        else:
            mem[j] = flat[i]


class LbfgsCudaKernel(CudaKernel):
    """A CUDA kernel of this module (see :class:`nbopt.kernels._common.CudaKernel`),
    which also binds the pointer helpers the table kernels read."""

    def get(self):
        if self._compiled is None:
            from . import _cuda

            globals().update(device_ptr=_cuda.device_ptr, device_carray=_cuda.device_carray)
        return super().get()


_ELEMENTS = (running_max, step_element, memory_element, recursion_element)

lbfgs_gather_cuda_kernel = LbfgsCudaKernel(lbfgs_gather_cuda, *_ELEMENTS)
lbfgs_add_cuda_kernel = LbfgsCudaKernel(lbfgs_add_cuda, *_ELEMENTS)
lbfgs_copy_cuda_kernel = LbfgsCudaKernel(lbfgs_copy_cuda, *_ELEMENTS)
lbfgs_memory_cuda_kernel = LbfgsCudaKernel(lbfgs_memory_cuda, *_ELEMENTS)
lbfgs_pass_cuda_kernel = LbfgsCudaKernel(lbfgs_pass_cuda, *_ELEMENTS)
lbfgs_stats_cuda_kernel = LbfgsCudaKernel(lbfgs_stats_cuda, *_ELEMENTS)
lbfgs_lanes_cuda_kernel = LbfgsCudaKernel(lbfgs_lanes_cuda, *_ELEMENTS)
lbfgs_permute_cuda_kernel = LbfgsCudaKernel(lbfgs_permute_cuda, *_ELEMENTS)

# name -> kernel, for the PTX tier (tests/gpu/ptx_check_lbfgs.py)
CUDA_KERNELS = {
    "gather": lbfgs_gather_cuda_kernel, "add": lbfgs_add_cuda_kernel,
    "copy": lbfgs_copy_cuda_kernel, "memory": lbfgs_memory_cuda_kernel,
    "pass": lbfgs_pass_cuda_kernel, "stats": lbfgs_stats_cuda_kernel,
    "lanes": lbfgs_lanes_cuda_kernel, "permute": lbfgs_permute_cuda_kernel,
}
