r"""Adafactor: maths, reductions in torch's summation order, CPU kernel.

torch 2.13's single-tensor Adafactor, per parameter (``t`` its step count after
the increment, host scalars in float64 as torch computes them in Python)::

    g     = -grad if maximize else grad
    omega = t ** beta2_decay                  rho = min(lr, 1 / t ** 0.5)
    alpha = max(eps2, ||p||_2 / numel ** 0.5) * rho      (p before weight decay)
    p     = p * (1 - lr * weight_decay)                   (weight_decay != 0)
    ndim >= 2 (factored over the last two dims, leading dims are batches):
        R = lerp(R, norm(g, dim=-1) ** 2 / n, omega)      row_var  (..., m, 1)
        C = lerp(C, norm(g, dim=-2) ** 2 / m, omega)      col_var  (..., 1, n)
        V = (R * C) / max(mean(R, dim=-2), eps1)
    ndim <= 1:
        v = lerp(v, g * g, omega);  V = v                 variance (like p)
    U     = g * (1 / sqrt(max(V, eps1 * eps1)))
    denom = max(1, ||U||_2 / (numel ** 0.5 * d))
    p     = p + (-alpha / denom) * U          (one fma; foreach=True: p + round(U * a))

The element-wise operations round as torch's CPU kernels do (``lerp`` and the
final ``add_(U, alpha=a)`` are fused multiply-adds, ``rsqrt`` is ``1 / sqrt``).
The reductions follow torch's CPU reduction kernels element for element, which
is what makes the result bit-identical to torch's (a plain NumPy transcription
is tens of ulps off after a few steps).  torch dispatches these kernels at
256-bit vector width on x86 (AVX2 code, also on AVX512 machines), so:

* a 2-norm along a dimension of stride 1 (``p.norm()`` over the parameter's
  memory, ``U.norm()`` over U in C order, the row norms of a C-ordered
  gradient): 8 lanes (float32; 4 for float64) of ``acc += x * x``, the lanes
  summed in order, then the remaining ``numel % 8`` elements: float32 adds
  the squares of the next 4 (when there are 4) and fuses the last ones
  (``fma(x, x, s)``), float64 fuses all of them (:func:`sumsq_lanes`);
* a 2-norm along a strided dimension (the column norms of a C-ordered
  gradient): a sequential ``acc + x * x`` per output, no fma;
* ``mean(R, dim=-2)``: torch's cascade sum (``SumKernel.cpp``: four
  interleaved vector accumulators of 8 lanes over four levels), divided by
  ``m``; a single mean over at least 32768 rows is split across torch's
  threads as its ``two_pass_reduction`` splits it (``config.TORCH_THREADS``).

The kernel steps all the parameters of one (group, dtype) in one call.  The
steps of different parameters are independent, so a parameter is best
stepped whole by one thread (a "fused" task: its statistics, then the mean of
``R``, ``||U||`` and the coefficient ``-alpha / denom`` (float64, as torch's
Python computes it), then the update, its data still in the caches; U is
kept in a per-thread buffer up to ``config.ADAFACTOR_STORE_LIMIT`` elements,
recomputed beyond).  When one parameter outweighs a thread's share of the
group, its work is split instead, in phases with a barrier between them:
(1) its statistics (rows, columns or vector chunks in parallel), (2) the
mean of R per batch, (3) U in parallel pieces, kept in a scratch array the
size of the parameter (torch too makes U whole), (4) ``||U||`` and ``||p||``
(lane-ordered reductions cannot be split: one thread for each, side by
side), then the coefficient, (5) the update in parallel pieces.  The host
balances each phase's work items into one bin per thread.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import carray, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable

from ._common import CudaKernel, addr_to_ptr, cast_like, cpu_kernels, fma, lerp

__all__ = ["sumsq_lanes", "cascade_sum", "mean_rows", "adafactor_cpu",
           "DESC_COLUMNS", "SCALAR_COLUMNS", "TASK_KINDS", "CUDA_KERNELS"]

cuda = None     # bound when a CUDA kernel compiles (CudaKernel)


_GRAIN = 32768                      # at::internal::GRAIN_SIZE
_JIT = {"error_model": "numpy"}     # options of every compiled helper

# The parameter table (int64, one row per parameter)
# (the gradient has the parameter's memory layout: strides in elements of the
# last two dims, and bases[off_batch + b] the offset of batch b)
DESC_COLUMNS = ("p_addr", "g_addr", "numel", "batches", "m", "n", "s_m", "s_n",
                "off_a", "off_b", "factored", "off_batch")
(P_ADDR, G_ADDR, NUMEL, NB, M, N, S_M, S_N, OFF_A, OFF_B, FACTORED,
 OFF_BATCH) = range(len(DESC_COLUMNS))
# The scalar table (float64, one row per distinct step count: the row of
# parameter i is keys[i]), computed on the host
SCALAR_COLUMNS = ("omega", "rho", "eps2", "decay", "eps1", "eps1_sq", "d", "rho_f32",
                  "decay_on")
(S_OMEGA, S_RHO, S_EPS2, S_DECAY, S_EPS1, S_EPS1SQ, S_D, S_RHO32,
 S_DECAY_ON) = range(len(SCALAR_COLUMNS))
# Phase-1 work items: (kind, parameter, a, b, c)
# (the fused kinds do a whole parameter in one pass over p and g: the norm of
# p, and the row and column statistics of a C-ordered one or the variance of
# a vector; the others split a large parameter's work across threads)
TASK_KINDS = ("rows_lane", "rows_seq", "cols_lane", "cols_seq", "vector", "fused_matrix",
              "fused_vector")
(T_ROWS_LANE, T_ROWS_SEQ, T_COLS_LANE, T_COLS_SEQ, T_VECTOR, T_FUSED_MATRIX,
 T_FUSED_VECTOR) = range(len(TASK_KINDS))


# --------------------------------------------------------------------------
# Element functions: the single source of the per-element maths.

@register_jitable(**_JIT)
def factored_u(g, r, c, rm, eps1_sq, one):
    """U of a factored parameter: ``g / sqrt(max(r * c / rm, eps1**2))`` as
    torch rounds it (``rm`` already clamped at eps1)."""
    v = (r * c) / rm
    if eps1_sq > v:              # clamp_min: NaN passes through
        v = eps1_sq
    return (one / math.sqrt(v)) * g


@register_jitable(**_JIT)
def vector_u(g, v, eps1_sq, one):
    """U of a 0-d/1-D parameter from its variance ``v``."""
    if eps1_sq > v:
        v = eps1_sq
    return (one / math.sqrt(v)) * g


@register_jitable(**_JIT)
def apply_update(p, u, a, decay, decay_on, fused):
    """The parameter after weight decay and ``add_(U, alpha=a)`` (one fma);
    ``foreach=True`` rounds ``U * a`` first (``_foreach_mul_`` then ``_foreach_add_``)."""
    if decay_on:
        p = p * decay
    if fused:
        return fma(u, a, p)
    return p + u * a


@register_jitable(**_JIT)
def row_mean(s, count):
    """``norm ** 2 / count`` from a sum of squares ``s``: torch's
    ``torch.norm(g, dim).square_().div_(count)``."""
    r = math.sqrt(s)
    return (r * r) / count


# --------------------------------------------------------------------------
# Reductions in torch's order.

@register_jitable(**_JIT)
def _lanes(x):
    """8 lanes for float32, 4 for float64: torch's 256-bit vectors."""
    return 8 if x.itemsize == 4 else 4


@register_jitable(**_JIT)
def _finish_lanes(lanes, tail, ntail, w):
    """torch's end of a lastdim norm: the lanes summed in order, then the
    tail (float32: squares of the next 4 added, the rest fused; float64: all
    fused).  ``tail`` holds the values (not squared)."""
    s = lanes[0]
    for j in range(1, w):
        s = s + lanes[j]
    k = 0
    if w == 8 and ntail >= 4:
        for q in range(4):
            v = tail[q]
            s = s + v * v
        k = 4
    for q in range(k, ntail):
        v = tail[q]
        s = fma(v, v, s)
    return s


def _lanes8(y, nblk, a0, a1, a2, a3, a4, a5, a6, a7):
    """``a_l += y[8 q + l] ** 2`` for the first ``nblk`` blocks of 8: torch's
    8 float32 lanes, one vector register (:func:`_lane_chain`)."""
    return _lane_chain(y, nblk, (a0, a1, a2, a3, a4, a5, a6, a7))


def _lanes4(y, nblk, a0, a1, a2, a3):
    """The same with torch's 4 float64 lanes."""
    return _lane_chain(y, nblk, (a0, a1, a2, a3))


def _sumsq_lanes8(x, lo, n):
    """sumsq_lanes for float32: 8 lanes, then 4 squares added, the rest fused."""
    # a view indexed from 0: LLVM then drops NumPy's negative-index
    # wraparound checks, which block vectorisation
    y = x[lo:lo + n]
    z = cast_like(0.0, x)
    main = n - n % 8
    a0, a1, a2, a3, a4, a5, a6, a7 = _lanes8(y, main // 8, z, z, z, z, z, z, z, z)
    s = a0 + a1
    s = s + a2
    s = s + a3
    s = s + a4
    s = s + a5
    s = s + a6
    s = s + a7
    rest = y[main:]
    k = 0
    if n - main >= 4:
        for q in range(4):
            v = rest[q]
            s = s + v * v
        k = 4
    for q in range(rest.shape[0] - k):
        v = rest[k + q]
        s = fma(v, v, s)
    return s


def _sumsq_lanes4(x, lo, n):
    """sumsq_lanes for float64: 4 lanes, the rest fused."""
    y = x[lo:lo + n]
    z = cast_like(0.0, x)
    main = n - n % 4
    a0, a1, a2, a3 = _lanes4(y, main // 4, z, z, z, z)
    s = a0 + a1
    s = s + a2
    s = s + a3
    rest = y[main:]
    for q in range(rest.shape[0]):
        v = rest[q]
        s = fma(v, v, s)
    return s


def sumsq_lanes(x, lo, n):
    """Sum of squares of ``x[lo:lo + n]`` (contiguous), rounded as torch's
    vectorised lastdim 2-norm (before its sqrt)."""
    return _sumsq_lanes8(x, lo, n) if x.itemsize == 4 else _sumsq_lanes4(x, lo, n)


@overload(sumsq_lanes, jit_options=_JIT)
def _sumsq_lanes_jit(x, lo, n):
    # one compiled body per dtype
    return _sumsq_lanes8 if x.dtype.bitwidth == 32 else _sumsq_lanes4


@register_jitable(**_JIT)
def sumsq_seq(x, lo, n, stride):
    """Sum of squares of ``n`` elements of ``x`` from ``lo`` at ``stride``:
    torch's sequential reduction along a strided dimension (no fma)."""
    s = cast_like(0.0, x)
    for k in range(n):
        v = x[lo + k * stride]
        s = s + v * v
    return s


@register_jitable(**_JIT)
def _ceil_log2(x):
    if x <= 1:
        return 0
    r = 0
    v = x - 1
    while v > 0:
        v >>= 1
        r += 1
    return r


@register_jitable(**_JIT)
def _multi_row_sum(x, base, w, size, acc):
    """torch's ``multi_row_sum`` over ``size`` rows of 4 vectors of ``w``
    lanes (``acc``: 4 levels x 4 x w, zeroed here); the result is in
    ``acc[0]``."""
    acc[:, :, :] = 0
    level_power = max(4, _ceil_log2(size) // 4)
    level_step = 1 << level_power
    level_mask = level_step - 1
    row = 4 * w
    i = 0
    while i + level_step <= size:
        for _ in range(level_step):
            b = base + i * row
            for k in range(4):
                for q in range(w):
                    acc[0, k, q] = acc[0, k, q] + x[b + k * w + q]
            i += 1
        for j in range(1, 4):
            for k in range(4):
                for q in range(w):
                    acc[j, k, q] = acc[j, k, q] + acc[j - 1, k, q]
                    acc[j - 1, k, q] = 0
            if (i & (level_mask << (j * level_power))) != 0:
                break
    while i < size:
        b = base + i * row
        for k in range(4):
            for q in range(w):
                acc[0, k, q] = acc[0, k, q] + x[b + k * w + q]
        i += 1
    for j in range(1, 4):
        for k in range(4):
            for q in range(w):
                acc[0, k, q] = acc[0, k, q] + acc[j, k, q]


@register_jitable(**_JIT)
def _row_sum(x, base, w, size, acc):
    """torch's ``row_sum`` over ``size`` vectors of ``w`` lanes from ``base``
    (4-way interleaved cascade); the lanes are left in ``acc[0, 0]``."""
    size_ilp = size // 4
    _multi_row_sum(x, base, w, size_ilp, acc)
    for i in range(size_ilp * 4, size):
        for q in range(w):
            acc[0, 0, q] = acc[0, 0, q] + x[base + i * w + q]
    for k in range(1, 4):
        for q in range(w):
            acc[0, 0, q] = acc[0, 0, q] + acc[0, k, q]


@register_jitable(**_JIT)
def cascade_sum(x, lo, n, acc):
    """``x[lo:lo + n].sum()`` (contiguous) as torch's CPU cascade sum
    (``acc``: a 4 x 4 x 8 scratch array of x's dtype)."""
    w = _lanes(x)
    if n >= w:
        vec = n // w
        _row_sum(x, lo, w, vec, acc)
        final = cast_like(0.0, x)
        for k in range(lo + vec * w, lo + n):
            final = final + x[k]
        for q in range(w):
            final = final + acc[0, 0, q]
        return final
    _row_sum(x, lo, 1, n, acc)
    return acc[0, 0, 0]


@register_jitable(**_JIT)
def mean_rows(x, lo, m, threads, acc, part):
    """``x[lo:lo + m].mean()`` as torch's ``mean(dim=-2)`` of a single
    ``(m, 1)`` row factor: a cascade sum, split as ``two_pass_reduction``
    splits it over ``threads`` when ``m`` reaches the grain size (``part``:
    scratch of at least ``threads`` elements)."""
    if m < _GRAIN or threads <= 1:
        # cascade_sum stores by adding to the zero-filled output
        s = cast_like(0.0, x) + cascade_sum(x, lo, m, acc)
    else:
        nt = min(threads, (m + _GRAIN - 1) // _GRAIN)
        chunk = (m + nt - 1) // nt
        for t in range(threads):
            part[t] = 0
        for t in range(nt):
            b = t * chunk
            if b < m:
                part[t] = part[t] + cascade_sum(x, lo + b, min(m, b + chunk) - b, acc)
        s = cast_like(0.0, x) + cascade_sum(part, 0, threads, acc)
    return s / cast_like(float(m), x)


# --------------------------------------------------------------------------
# Streaming lane accumulation of ||U||_2 over U in C order (one row at a time)

def _feed_head(lanes, vals, lim, d0, w):
    """_feed's first elements, up to the next lane-0 index, one by one;
    returns how many."""
    mask = w - 1                    # w is 8 or 4: d % w is d & mask
    head = min(lim, (w - (d0 & mask)) & mask)
    for k in range(head):
        v = vals[k]
        q = (d0 + k) & mask
        lanes[q] = lanes[q] + v * v
    return head


def _feed_rest(lanes, tail, vals, body, nblk, w, lim, count, d0, main):
    """_feed's last elements: the lane part's remainder (from lane 0), then
    the tail values, in order; returns how many were stored in ``tail``."""
    rest = body[nblk * w:]
    for k in range(rest.shape[0]):
        v = rest[k]
        lanes[k] = lanes[k] + v * v
    stored = 0
    for k in range(lim, count):
        tail[d0 + k - main] = vals[k]
        stored += 1
    return stored


def _feed8(lanes, tail, vals, count, d0, main):
    lim = max(0, min(count, main - d0))
    head = _feed_head(lanes, vals, lim, d0, 8)
    body = vals[head:lim]
    nblk = body.shape[0] // 8
    a0, a1, a2, a3, a4, a5, a6, a7 = _lanes8(body, nblk, lanes[0], lanes[1], lanes[2],
                                             lanes[3], lanes[4], lanes[5], lanes[6], lanes[7])
    lanes[0], lanes[1], lanes[2], lanes[3] = a0, a1, a2, a3
    lanes[4], lanes[5], lanes[6], lanes[7] = a4, a5, a6, a7
    return _feed_rest(lanes, tail, vals, body, nblk, 8, lim, count, d0, main)


def _feed4(lanes, tail, vals, count, d0, main):
    lim = max(0, min(count, main - d0))
    head = _feed_head(lanes, vals, lim, d0, 4)
    body = vals[head:lim]
    nblk = body.shape[0] // 4
    a0, a1, a2, a3 = _lanes4(body, nblk, lanes[0], lanes[1], lanes[2], lanes[3])
    lanes[0], lanes[1], lanes[2], lanes[3] = a0, a1, a2, a3
    return _feed_rest(lanes, tail, vals, body, nblk, 4, lim, count, d0, main)


def _feed(lanes, tail, vals, count, d0, main, w):
    """Add ``vals[0:count]`` (flat indices ``d0...``) to the lane sums:
    element ``d < main`` to lane ``d % w``, later ones kept in ``tail``
    (``vals``, ``lanes`` and ``tail`` are best raw views: see adafactor_group).
    Returns the number of tail values stored."""
    if w == 8:
        return _feed8(lanes, tail, vals, count, d0, main)
    return _feed4(lanes, tail, vals, count, d0, main)


@overload(_feed, jit_options=_JIT)
def _feed_jit(lanes, tail, vals, count, d0, main, w):
    # one compiled body per dtype (w is 8 for float32, 4 for float64)
    if vals.dtype.bitwidth == 32:
        return lambda lanes, tail, vals, count, d0, main, w: _feed8(lanes, tail, vals, count,
                                                                    d0, main)
    return lambda lanes, tail, vals, count, d0, main, w: _feed4(lanes, tail, vals, count, d0,
                                                                main)


def _vector_lanes(x):
    """torch's lane count for the Numba array type ``x``'s dtype (8 float32
    lanes, 4 float64 ones: 256 bits), or None for another dtype."""
    if x.dtype == types.float32:
        return 8
    if x.dtype == types.float64:
        return 4
    return None


def _chain(builder, arrays, accs, w, blocks, align):
    """The IR loop of the lane sums: for each whole block ``q < blocks`` and
    each (array, vector accumulator slot) pair, ``acc = acc + x * x`` over
    ``x[w q:w q + w]`` (a multiply and an add, as torch's vectorised norm:
    LLVM contracts nothing without fast-math flags)."""
    vty = accs[0].type.pointee
    with cgutils.for_range(builder, blocks) as loop:
        at = builder.mul(loop.index, blocks.type(w))
        for arr, slot in zip(arrays, accs):
            v = builder.load(builder.bitcast(builder.gep(arr.data, [at]), vty.as_pointer()),
                             align=align)
            builder.store(builder.fadd(builder.load(slot), builder.fmul(v, v)), slot)


@intrinsic
def _lane_chain(typingctx, x, blocks, acc):
    """``acc[l] + x[w q + l] ** 2`` for every whole block ``q < blocks`` of
    C-contiguous ``x``, added in ``q`` order: torch's lane sums (``w`` = 8
    float32 lanes or 4 float64 ones, the tuple ``acc``), as one 256-bit
    vector.  Numba runs LLVM without its SLP vectoriser, so scalar lanes
    written out (as :func:`_lanes8` once was) stay ``w`` scalar chains: 2.5x
    slower here than the vector's chain of 2-cycle adds."""
    w = _vector_lanes(x)
    if (w is None or not isinstance(x, types.Array) or x.ndim != 1 or x.layout != "C"
            or not isinstance(blocks, types.Integer)
            or acc != types.UniTuple(x.dtype, w)):
        return None

    def codegen(context, builder, signature, args):
        xa = context.make_array(x)(context, builder, args[0])
        fty = context.get_value_type(x.dtype)
        vty = ir.VectorType(fty, w)
        vec = ir.Constant(vty, ir.Undefined)
        for k in range(w):
            vec = builder.insert_element(vec, builder.extract_value(args[2], k),
                                         ir.IntType(32)(k))
        slot = cgutils.alloca_once(builder, vty)
        builder.store(vec, slot)
        count = context.cast(builder, args[1], blocks, types.intp)
        _chain(builder, [xa], [slot], w, count, x.dtype.bitwidth // 8)
        vec = builder.load(slot)
        out = ir.Constant(context.get_value_type(acc), ir.Undefined)
        for k in range(w):
            out = builder.insert_value(out, builder.extract_element(vec, ir.IntType(32)(k)), k)
        return out

    return acc(x, blocks, acc), codegen


@intrinsic
def _pair_lanes(typingctx, x, y, lx, ly):
    """``lx[l] += x[w q + l] ** 2`` and ``ly[l] += y[w q + l] ** 2`` over the
    whole blocks of ``w`` of ``x`` and ``y`` (C-contiguous, ``y`` at least
    as long as ``x``): two of torch's lane sums (:func:`_lane_chain`) side
    by side, whose add chains overlap."""
    w = _vector_lanes(x)
    ok = all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
             and a.dtype == x.dtype for a in (x, y, lx, ly))
    if w is None or not ok:
        return None

    def codegen(context, builder, signature, args):
        vty = ir.VectorType(context.get_value_type(x.dtype), w)
        align = x.dtype.bitwidth // 8
        xa, ya, la, lb = (context.make_array(t)(context, builder, a)
                          for t, a in zip(signature.args, args))
        accs = []
        for arr in (la, lb):
            slot = cgutils.alloca_once(builder, vty)
            builder.store(builder.load(builder.bitcast(arr.data, vty.as_pointer()),
                                       align=align), slot)
            accs.append(slot)
        n = builder.extract_value(xa.shape, 0)
        _chain(builder, [xa, ya], accs, w, builder.udiv(n, n.type(w)), align)
        for arr, slot in zip((la, lb), accs):
            builder.store(builder.load(slot),
                          builder.bitcast(arr.data, vty.as_pointer()), align=align)
        return context.get_dummy_value()

    return types.void(x, y, lx, ly), codegen


for _fn in (_lanes8, _lanes4, _sumsq_lanes8, _sumsq_lanes4, _feed_head, _feed_rest, _feed8,
            _feed4):
    register_jitable(**_JIT)(_fn)


# --------------------------------------------------------------------------
# The group kernel

@register_jitable(**_JIT)
def _phase1_task(task, desc, scal, keys, bases, state, pnorm, blk):
    kind, i = task[0], task[1]
    key = keys[i]
    n_el = desc[i, NUMEL]
    m, n = desc[i, M], desc[i, N]
    sm, sn, ob = desc[i, S_M], desc[i, S_N], desc[i, OFF_BATCH]
    g = carray(addr_to_ptr(desc[i, G_ADDR], state), n_el)
    w1 = cast_like(scal[key, S_OMEGA], state)
    if kind == T_FUSED_MATRIX:
        # a C-ordered parameter: the norm of p over its memory, then row by
        # row each row's norm and running column sums
        p = carray(addr_to_ptr(desc[i, P_ADDR], state), n_el)
        pnorm[i] = math.sqrt(sumsq_lanes(p, 0, n_el))
        acc = blk[16:16 + n]
        cnt_n = cast_like(float(n), state)
        cnt_m = cast_like(float(m), state)
        offr, offc = desc[i, OFF_A], desc[i, OFF_B]
        for b in range(desc[i, NB]):
            acc[:] = 0
            for ii in range(m):
                base = bases[ob + b] + ii * sm
                row = g[base:base + n]
                s = sumsq_lanes(row, 0, n)
                r = offr + b * m + ii
                state[r] = lerp(state[r], row_mean(s, cnt_n), w1)
                for j in range(n):
                    v = row[j]
                    acc[j] = acc[j] + v * v
            cb = state[offc + b * n:offc + (b + 1) * n]
            for j in range(n):
                cb[j] = lerp(cb[j], row_mean(acc[j], cnt_m), w1)
    elif kind == T_FUSED_VECTOR:
        p = carray(addr_to_ptr(desc[i, P_ADDR], state), n_el)
        pnorm[i] = math.sqrt(sumsq_lanes(p, 0, n_el))
        off = desc[i, OFF_A]
        v = state[off:off + n_el]
        for k in range(n_el):
            x = g[k]
            v[k] = lerp(v[k], x * x, w1)
    elif kind == T_ROWS_LANE or kind == T_COLS_LANE:
        # reductions task[2]:task[3] of the flattened (batches * m) rows, or
        # (batches * n) columns of an F-ordered gradient, each contiguous in
        # g: one lastdim norm per reduction
        rows = kind == T_ROWS_LANE
        length = n if rows else m
        per_batch = m if rows else n
        stride = sm if rows else sn
        off = desc[i, OFF_A] if rows else desc[i, OFF_B]
        cnt = cast_like(float(length), state)
        for r in range(task[2], task[3]):
            b, ii = r // per_batch, r % per_batch
            s = sumsq_lanes(g, bases[ob + b] + ii * stride, length)
            state[off + r] = lerp(state[off + r], row_mean(s, cnt), w1)
    elif kind == T_COLS_SEQ:
        # batch task[2], columns task[3]:task[4]: the rows in order, a running
        # sum per column (vectorises over the columns of a C-ordered gradient)
        b, j0, j1 = task[2], task[3], task[4]
        acc = blk[:j1 - j0]
        acc[:] = 0
        for ii in range(m):
            base = bases[ob + b] + ii * sm
            if sn == 1:
                row = g[base + j0:base + j1]
                for j in range(j1 - j0):
                    v = row[j]
                    acc[j] = acc[j] + v * v
            else:
                for j in range(j1 - j0):
                    v = g[base + (j0 + j) * sn]
                    acc[j] = acc[j] + v * v
        cnt = cast_like(float(m), state)
        off = desc[i, OFF_B] + b * n
        for j in range(j1 - j0):
            state[off + j0 + j] = lerp(state[off + j0 + j], row_mean(acc[j], cnt), w1)
    elif kind == T_ROWS_SEQ:
        # batch task[2], rows task[3]:task[4], each strided in g (an
        # F-ordered gradient): the columns in order, a running sum per row
        b, i0, i1 = task[2], task[3], task[4]
        acc = blk[:i1 - i0]
        acc[:] = 0
        for j in range(n):
            base = bases[ob + b] + j * sn
            for r in range(i1 - i0):
                v = g[base + (i0 + r) * sm]
                acc[r] = acc[r] + v * v
        cnt = cast_like(float(n), state)
        off = desc[i, OFF_A] + b * m
        for r in range(i1 - i0):
            state[off + i0 + r] = lerp(state[off + i0 + r], row_mean(acc[r], cnt), w1)
    else:       # T_VECTOR: elements task[2]:task[3] of a 0-d/1-D parameter
        off = desc[i, OFF_A]
        v = state[off + task[2]:off + task[3]]
        gg = g[task[2]:task[3]]
        for k in range(task[3] - task[2]):
            x = gg[k]
            v[k] = lerp(v[k], x * x, w1)


@register_jitable(**_JIT)
def _u_range(i, r0, r1, j0, j1, desc, scal, keys, bases, state, rmv, maximize, u, origin):
    """U of rows ``r0:r1`` (of the flattened batches * m), columns ``j0:j1``
    of parameter ``i`` (a 0-d/1-D one: elements ``j0:j1``, rows 0:1) into
    ``u``, element ``(r, j)`` at ``r * n + j - origin`` (U's C order)."""
    key = keys[i]
    n_el = desc[i, NUMEL]
    g = carray(addr_to_ptr(desc[i, G_ADDR], state), n_el)
    one = cast_like(1.0, state)
    eps1_sq = cast_like(scal[key, S_EPS1SQ], state)
    if desc[i, FACTORED] == 1:
        m, n = desc[i, M], desc[i, N]
        offr, offc, ob = desc[i, OFF_A], desc[i, OFF_B], desc[i, OFF_BATCH]
        sm, sn = desc[i, S_M], desc[i, S_N]
        for rr in range(r0, r1):
            b, ii = rr // m, rr % m
            rm = rmv[ob + b]
            r = state[offr + rr]
            # views indexed from 0 (see sumsq_lanes)
            cc = state[offc + b * n + j0:offc + b * n + j1]
            ub = u[rr * n + j0 - origin:rr * n + j1 - origin]
            base = bases[ob + b] + ii * sm
            if sn == 1:
                row = g[base + j0:base + j1]
                if maximize:
                    for j in range(j1 - j0):
                        ub[j] = factored_u(-row[j], r, cc[j], rm, eps1_sq, one)
                else:
                    for j in range(j1 - j0):
                        ub[j] = factored_u(row[j], r, cc[j], rm, eps1_sq, one)
            else:
                for j in range(j1 - j0):
                    gv = g[base + (j0 + j) * sn]
                    if maximize:
                        gv = -gv
                    ub[j] = factored_u(gv, r, cc[j], rm, eps1_sq, one)
    else:
        off = desc[i, OFF_A]
        v = state[off + j0:off + j1]
        gg = g[j0:j1]
        ub = u[j0 - origin:j1 - origin]
        if maximize:
            for k in range(j1 - j0):
                ub[k] = vector_u(-gg[k], v[k], eps1_sq, one)
        else:
            for k in range(j1 - j0):
                ub[k] = vector_u(gg[k], v[k], eps1_sq, one)


@register_jitable(**_JIT)
def _apply_range(i, r0, r1, j0, j1, desc, scal, keys, bases, coef, fused, u, origin, x_like):
    """The update of rows ``r0:r1``, columns ``j0:j1`` of parameter ``i``
    (as :func:`_u_range`) from its U in ``u``."""
    key = keys[i]
    n_el = desc[i, NUMEL]
    p = carray(addr_to_ptr(desc[i, P_ADDR], x_like), n_el)
    a = cast_like(coef[i], x_like)
    decay = cast_like(scal[key, S_DECAY], x_like)
    decay_on = scal[key, S_DECAY_ON] != 0.0
    if desc[i, FACTORED] == 1:
        m, n = desc[i, M], desc[i, N]
        ob, sm, sn = desc[i, OFF_BATCH], desc[i, S_M], desc[i, S_N]
        for rr in range(r0, r1):
            b, ii = rr // m, rr % m
            base = bases[ob + b] + ii * sm
            ub = u[rr * n + j0 - origin:rr * n + j1 - origin]
            if sn == 1:
                prow = p[base + j0:base + j1]
                for j in range(j1 - j0):
                    prow[j] = apply_update(prow[j], ub[j], a, decay, decay_on, fused)
            else:
                for j in range(j1 - j0):
                    k = base + (j0 + j) * sn
                    p[k] = apply_update(p[k], ub[j], a, decay, decay_on, fused)
    else:
        pp = p[j0:j1]
        ub = u[j0 - origin:j1 - origin]
        for k in range(j1 - j0):
            pp[k] = apply_update(pp[k], ub[k], a, decay, decay_on, fused)


@register_jitable(**_JIT)
def _shape_rows(i, desc):
    """Parameter ``i`` as rows x columns of U: (batches * m, n), or (1, numel)."""
    if desc[i, FACTORED] == 1:
        return desc[i, NB] * desc[i, M], desc[i, N]
    return 1, desc[i, NUMEL]


@register_jitable(**_JIT)
def _mean_r(i, desc, scal, keys, state, rmv, threads, acc, part):
    """``max(mean(R, dim=-2), eps1)`` of every batch of parameter ``i`` (a
    factored one), into ``rmv``."""
    if desc[i, FACTORED] != 1:
        return
    eps1 = cast_like(scal[keys[i], S_EPS1], state)
    nb, m = desc[i, NB], desc[i, M]
    offr, ob = desc[i, OFF_A], desc[i, OFF_BATCH]
    for b in range(nb):
        rm = mean_rows(state, offr + b * m, m, threads if nb == 1 else 1, acc, part)
        if eps1 > rm:           # clamp_(min=eps1)
            rm = eps1
        rmv[ob + b] = rm


@register_jitable(**_JIT)
def _coefficient(i, unorm, scal, keys, sqrtn, pnorm, coef):
    """The step's ``-alpha / denom`` of parameter ``i`` from ``||U||``:
    torch's host arithmetic, in float64 as its Python computes it (float64
    names of their own: a name that also held a float32 element would be
    typed float64 throughout and widen the element arithmetic)."""
    key = keys[i]
    rms = pnorm[i] / sqrtn[i]
    eps2 = scal[key, S_EPS2]
    if not rms > eps2:          # max(eps2, rms)
        rms = eps2
    ratio = unorm / (sqrtn[i] * scal[key, S_D])
    denom = ratio if ratio > 1.0 else 1.0
    rho = scal[key, S_RHO]
    if scal[key, S_RHO32] != 0.0:
        # rho is a float32 Tensor lr: alpha and -alpha / denom are float32
        # tensor arithmetic (the Python floats cast to float32)
        alpha = np.float32(np.float32(rms) * np.float32(rho))
        coef[i] = float(np.float32(-alpha / np.float32(denom)))
    else:
        coef[i] = -(rms * rho) / denom


@register_jitable(**_JIT)
def _u_pieces(i, rows, n, desc, scal, keys, bases, state, coef, rmv, maximize, fused, ubuf,
              lanes, tail, main, w, feed):
    """U of parameter ``i`` made a row piece of at most ``len(ubuf)`` at a
    time, each piece then fed to the lane sums (``feed``; returns the tail
    count) or applied."""
    chunk = ubuf.shape[0]
    ntail = 0
    for rr in range(rows):
        for j0 in range(0, n, chunk):
            j1 = min(n, j0 + chunk)
            d0 = rr * n + j0
            _u_range(i, rr, rr + 1, j0, j1, desc, scal, keys, bases, state, rmv, maximize,
                     ubuf, d0)
            if feed:
                ntail += _feed(lanes, tail, ubuf, j1 - j0, d0, main, w)
            else:
                _apply_range(i, rr, rr + 1, j0, j1, desc, scal, keys, bases, coef, fused,
                             ubuf, d0, state)
    return ntail


@register_jitable(**_JIT)
def _fused_param(i, desc, scal, keys, sqrtn, bases, state, pnorm, coef, rmv, maximize, fused,
                 threads, acc, part, ubuf, lanes, tail, store):
    """Phases 2 and 3 of parameter ``i`` by one thread.  ``store``: U is kept
    whole in ``ubuf`` between its norm and the update; otherwise it is made
    twice, a row piece of at most ``len(ubuf)`` at a time."""
    n_el = desc[i, NUMEL]
    w = _lanes(state)
    main = n_el - n_el % w
    _mean_r(i, desc, scal, keys, state, rmv, threads, acc, part)
    rows, n = _shape_rows(i, desc)
    lanes[:] = 0
    if store:
        _u_range(i, 0, rows, 0, n, desc, scal, keys, bases, state, rmv, maximize, ubuf, 0)
        ntail = _feed(lanes, tail, ubuf, n_el, 0, main, w)
    else:
        ntail = _u_pieces(i, rows, n, desc, scal, keys, bases, state, coef, rmv, maximize,
                          fused, ubuf, lanes, tail, main, w, True)
    _coefficient(i, math.sqrt(_finish_lanes(lanes, tail, ntail, w)), scal, keys, sqrtn,
                 pnorm, coef)
    if store:
        _apply_range(i, 0, rows, 0, n, desc, scal, keys, bases, coef, fused, ubuf, 0, state)
    else:
        _u_pieces(i, rows, n, desc, scal, keys, bases, state, coef, rmv, maximize, fused, ubuf,
                  lanes, tail, main, w, False)


# Elements per block of a whole vector's single pass (_fused_vector): its
# variance and U, then both lane sums over the block, still in L1
VECTOR_BLOCK = 2048


@register_jitable(**_JIT)
def _fused_vector(i, desc, scal, keys, sqrtn, bases, state, pnorm, coef, maximize, fused,
                  ubuf, lanes, tail, spare):
    """All phases of a 0-d/1-D parameter ``i`` stepped whole by one thread,
    U kept in ``ubuf``: block by block its variance and U (one vectorised
    loop), then the lane sums of ``p`` and of ``U`` side by side (two
    independent chains: each alone waits on its adds), then the update.
    The bits of phase 1's and :func:`_fused_param`'s separate passes: each
    lane adds the same squares in the same order.  ``lanes``/``tail``:
    ``p``'s lane sums and tail values, ``spare`` (16 long) U's."""
    key = keys[i]
    n_el = desc[i, NUMEL]
    p = carray(addr_to_ptr(desc[i, P_ADDR], state), n_el)
    g = carray(addr_to_ptr(desc[i, G_ADDR], state), n_el)
    off = desc[i, OFF_A]
    v = state[off:off + n_el]
    u = ubuf[:n_el]
    w1 = cast_like(scal[key, S_OMEGA], state)
    one = cast_like(1.0, state)
    eps1_sq = cast_like(scal[key, S_EPS1SQ], state)
    w = _lanes(state)
    main = n_el - n_el % w
    lanes_u, tail_u = spare[:8], spare[8:16]
    lanes[:] = 0
    lanes_u[:] = 0
    for lo in range(0, n_el, VECTOR_BLOCK):
        hi = min(n_el, lo + VECTOR_BLOCK)
        vs, gs, us = v[lo:hi], g[lo:hi], u[lo:hi]
        # one loop per sign: a branch inside would stop LLVM from vectorising it
        if maximize:
            for k in range(hi - lo):
                x = gs[k]
                vk = lerp(vs[k], x * x, w1)
                vs[k] = vk
                us[k] = vector_u(-x, vk, eps1_sq, one)
        else:
            for k in range(hi - lo):
                x = gs[k]
                vk = lerp(vs[k], x * x, w1)
                vs[k] = vk
                us[k] = vector_u(x, vk, eps1_sq, one)
        top = min(hi, main)
        if top > lo:
            _pair_lanes(p[lo:top], u[lo:top], lanes, lanes_u)
    ntail = n_el - main
    for q in range(ntail):
        tail[q] = p[main + q]
        tail_u[q] = u[main + q]
    pnorm[i] = math.sqrt(_finish_lanes(lanes, tail, ntail, w))
    _coefficient(i, math.sqrt(_finish_lanes(lanes_u, tail_u, ntail, w)), scal, keys, sqrtn,
                 pnorm, coef)
    _apply_range(i, 0, 1, 0, n_el, desc, scal, keys, bases, coef, fused, ubuf, 0, state)


@register_jitable(**_JIT)
def _raw_at(address, n, x_like):
    """``n`` elements of ``x_like``'s dtype at ``address``."""
    return carray(addr_to_ptr(address, x_like), n)


@register_jitable(**_JIT)
def _raw(a, offset, n):
    """Elements ``offset:offset + n`` of C-contiguous ``a`` as a view without a
    reference to ``a`` (a slice of a reference-counted array costs two
    atomic operations; the caller keeps ``a`` alive)."""
    return carray(addr_to_ptr(a.ctypes.data + offset * a.itemsize, a), n)


def adafactor_group(desc, scal, keys, sqrtn, bases, tasks1, bins1, params2, bins2, tasks3, bins3,
                    state, pnorm, coef, rmv, work, layout, ustore, uoff, maximize, fused,
                    threads):
    """One step of every parameter of a (group, dtype): see the module
    docstring.

    ``desc``: the parameter table (DESC_COLUMNS); ``scal``: the scalar
    rows (SCALAR_COLUMNS), ``keys``: each parameter's row; ``sqrtn``: each
    parameter's ``numel ** 0.5``; ``bases``: the memory offset of every batch;
    ``tasks1``/``params2``/``tasks3``: the work items of the phases
    (``params2``: ``(0, i)`` mean(R) and ||U||, ``(1, i)`` ||p||), each
    grouped in bins (``bins*``: start offsets, one bin per thread);
    ``state``: the flat state (row and column factors, variances); ``pnorm``
    and ``coef`` (float64, per parameter), ``rmv`` (per batch): scratch;
    ``work``: per-bin scratch rows (:func:`work_width`), ``layout``: the
    lengths of their U buffer and phase-1 block; ``ustore``: U of the split
    parameters, parameter ``i``'s from ``uoff[i]``; ``threads``: torch's
    thread count (``config.TORCH_THREADS``).

    A fused phase-1 task ``(kind, i, store, rows, columns)`` steps parameter
    ``i`` whole (:func:`_fused_param`).  A split parameter's U is made in
    parallel pieces (``tasks3``: ``(i, r0, r1, j0, j1)``) into ``ustore``;
    only its 8-lane norm, one thread per parameter, is serial.
    """
    sv = _raw(state, 0, state.size)
    width = work.shape[1]
    u_n, blk_n = layout[0], layout[1]
    tn = max(threads, 1)
    # phase 1: norms of p, row/column statistics, variances; a fused task
    # also does its parameter's other phases right after (its data still
    # in the caches)
    for bi in prange(bins1.shape[0] - 1):
        row = bi * width
        ubuf = _raw(work, row, u_n)
        lanes = _raw(work, row + u_n, 8)
        tail = _raw(work, row + u_n + 8, 8)
        acc = carray(addr_to_ptr(work.ctypes.data + (row + u_n + 16) * work.itemsize, work),
                     (4, 4, 8))
        part = _raw(work, row + u_n + 144, tn)
        blk = _raw(work, row + u_n + 144 + tn, blk_n)
        for t in range(bins1[bi], bins1[bi + 1]):
            task = tasks1[t]
            if task[0] == T_FUSED_VECTOR and task[2] != 0:
                _fused_vector(task[1], desc, scal, keys, sqrtn, bases, sv, pnorm, coef,
                              maximize, fused, ubuf, lanes, tail, acc.reshape(128))
                continue
            _phase1_task(task, desc, scal, keys, bases, sv, pnorm, blk)
            if task[0] >= T_FUSED_MATRIX:
                _fused_param(task[1], desc, scal, keys, sqrtn, bases, sv, pnorm, coef, rmv,
                             maximize, fused, threads, acc, part, ubuf, lanes, tail,
                             task[2] != 0)
    # the split parameters: mean(R) per batch
    for bi in prange(bins2.shape[0] - 1):
        row = bi * width
        acc = carray(addr_to_ptr(work.ctypes.data + (row + u_n + 16) * work.itemsize, work),
                     (4, 4, 8))
        part = _raw(work, row + u_n + 144, tn)
        for t in range(bins2[bi], bins2[bi + 1]):
            if params2[t, 0] == 0:
                _mean_r(params2[t, 1], desc, scal, keys, sv, rmv, threads, acc, part)
    # U, in pieces
    for bi in prange(bins3.shape[0] - 1):
        for t in range(bins3[bi], bins3[bi + 1]):
            i = tasks3[t, 0]
            _u_range(i, tasks3[t, 1], tasks3[t, 2], tasks3[t, 3], tasks3[t, 4], desc, scal,
                     keys, bases, sv, rmv, maximize, _raw(ustore, uoff[i], desc[i, NUMEL]), 0)
    # ||U|| (into coef until the coefficient replaces it) and ||p||: torch's
    # lane order, so one thread per norm
    for bi in prange(bins2.shape[0] - 1):
        row = bi * width
        lanes = _raw(work, row + u_n, 8)
        tail = _raw(work, row + u_n + 8, 8)
        for t in range(bins2[bi], bins2[bi + 1]):
            i = params2[t, 1]
            n_el = desc[i, NUMEL]
            if params2[t, 0] == 1:
                pnorm[i] = math.sqrt(sumsq_lanes(_raw_at(desc[i, P_ADDR], n_el, sv), 0, n_el))
                continue
            w = _lanes(sv)
            lanes[:] = 0
            ntail = _feed(lanes, tail, _raw(ustore, uoff[i], n_el), n_el, 0, n_el - n_el % w,
                          w)
            coef[i] = math.sqrt(_finish_lanes(lanes, tail, ntail, w))
    for t in range(params2.shape[0]):
        if params2[t, 0] == 0:
            i = params2[t, 1]
            _coefficient(i, coef[i], scal, keys, sqrtn, pnorm, coef)
    # the update, in pieces
    for bi in prange(bins3.shape[0] - 1):
        for t in range(bins3[bi], bins3[bi + 1]):
            i = tasks3[t, 0]
            _apply_range(i, tasks3[t, 1], tasks3[t, 2], tasks3[t, 3], tasks3[t, 4], desc, scal,
                         keys, bases, coef, fused, _raw(ustore, uoff[i], desc[i, NUMEL]), 0, sv)


def work_width(ubuf: int, block: int, threads: int) -> int:
    """Length of a per-bin scratch row (see adafactor_group): the U buffer
    (``ubuf``), 8 lanes, 8 tail values, the 4 x 4 x 8 cascade accumulators,
    ``threads`` partial sums and the phase-1 block (``block``)."""
    return ubuf + 144 + max(threads, 1) + block


adafactor_cpu = cpu_kernels(adafactor_group)


# --------------------------------------------------------------------------
# CUDA: Adafactor on device parameters (nbopt.optim._adafactor_cuda), one
# parameter at a time, a few launches per parameter:
#
#   reduce (mode 0)  ||p||^2 -> sums[0]            (before the weight decay)
#   reduce (mode 1)  row / column statistics        R, C = lerp(., row_mean(s, n|m), omega)
#   variance         v = lerp(v, g * g, omega)      (0-d / 1-D parameters)
#   reduce (mode 2)  max(mean(R, dim=-2), eps1) per batch
#   u                U from the element functions factored_u / vector_u
#   reduce (mode 0)  ||U||^2 -> sums[1]
#   coef             -alpha / denom: _coefficient, in float64 as torch's Python
#   apply            apply_update (weight decay, then the fused add)
#
# The element maths is the CPU kernel's (the same Python functions, compiled
# for the device).  The reductions are not torch's CPU order: thread t of a
# block adds the elements t, t + blockDim, ... of one output in sequence, and
# thread 0 adds the threads' sums in order: deterministic for a given
# NBOPT_CUDA_THREADS, within a few ulps of the CPU path (torch's CUDA kernels
# reduce in yet another order).  Every kernel but ``coef`` holds only the
# parameter dtype's arithmetic (host scalars arrive cast to it).


def adafactor_reduce_cuda(x, bases, per_batch, s_outer, s_inner, count, out, cnt, w1, eps1,
                          zero, mode, lanes):
    """One block per output ``o < out.shape[0]`` (grid-stride): the sum over
    ``k < count`` of ``x[base + k * s_inner] ** 2`` (mode 2: of the values),
    ``base = bases[o // per_batch] + (o % per_batch) * s_outer`` (``bases``
    empty: ``o * s_outer``).  Mode 0 stores the sum in ``out[o]``; mode 1
    ``out[o] = lerp(out[o], row_mean(sum, cnt), w1)`` (row and column
    statistics); mode 2 ``out[o] = max(sum / cnt, eps1)`` (the clamped mean
    of R).  ``lanes``: scratch of (gridDim, blockDim)."""
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    bid = cuda.blockIdx.x
    for o in range(bid, out.shape[0], cuda.gridDim.x):
        if bases.shape[0] != 0:
            b = o // per_batch
            base = bases[b] + (o - b * per_batch) * s_outer
        else:
            base = o * s_outer
        acc = zero
        for q in range(t, count, nt):
            v = x[base + q * s_inner]
            if mode == 2:
                acc = acc + v
            else:
                acc = acc + v * v
        lanes[bid, t] = acc
        cuda.syncthreads()
        if t == 0:
            s = lanes[bid, 0]
            for q in range(1, nt):
                s = s + lanes[bid, q]
            if mode == 0:
                out[o] = s
            elif mode == 1:
                out[o] = lerp(out[o], row_mean(s, cnt), w1)
            else:
                rm = s / cnt
                if eps1 > rm:           # clamp_(min=eps1): NaN passes
                    rm = eps1
                out[o] = rm
        cuda.syncthreads()


def adafactor_variance_cuda(g, v, w1):
    """``v = lerp(v, g * g, w1)``: the variance of a 0-d/1-D parameter."""
    for i in range(cuda.grid(1), v.shape[0], cuda.gridsize(1)):
        x = g[i]
        v[i] = lerp(v[i], x * x, w1)


def adafactor_u_cuda(g, bases, m, n, s_m, s_n, row, col, rmv, var, factored, maximize,
                     eps1_sq, one, u):
    """U in C order: ``u[q]`` for element ``(b, i, j)`` of the (batches, m, n)
    parameter (a 0-d/1-D one: m = 1, its variance ``var``), read from the
    gradient's memory at ``bases[b] + i * s_m + j * s_n``."""
    mn = m * n
    for q in range(cuda.grid(1), u.shape[0], cuda.gridsize(1)):
        b = q // mn
        rem = q - b * mn
        i = rem // n
        j = rem - i * n
        gv = g[bases[b] + i * s_m + j * s_n]
        if maximize:
            gv = -gv
        if factored:
            u[q] = factored_u(gv, row[b * m + i], col[b * n + j], rmv[b], eps1_sq, one)
        else:
            u[q] = vector_u(gv, var[q], eps1_sq, one)


def adafactor_coef_cuda(i, sums, scal, keys, sqrtn, pnorm, coef, out):
    """Parameter ``i``'s ``-alpha / denom`` from ``sums`` (``||p||^2``,
    ``||U||^2``): :func:`_coefficient`, torch's Python arithmetic in float64
    (the one kernel with float64 instructions by design); ``out[0]`` gets it
    in the parameter dtype."""
    if cuda.grid(1) == 0:
        pnorm[i] = math.sqrt(sums[0])
        _coefficient(i, math.sqrt(sums[1]), scal, keys, sqrtn, pnorm, coef)
        out[0] = coef[i]


def adafactor_apply_cuda(p, u, bases, m, n, s_m, s_n, a, decay, decay_on, fused):
    """The update of every element from U (``a[0]``: the coefficient)."""
    mn = m * n
    alpha = a[0]
    for q in range(cuda.grid(1), u.shape[0], cuda.gridsize(1)):
        b = q // mn
        rem = q - b * mn
        i = rem // n
        j = rem - i * n
        k = bases[b] + i * s_m + j * s_n
        p[k] = apply_update(p[k], u[q], alpha, decay, decay_on, fused)


_CUDA_ELEMENTS = (factored_u, vector_u, apply_update, row_mean, _coefficient)

adafactor_reduce_cuda_kernel = CudaKernel(adafactor_reduce_cuda, *_CUDA_ELEMENTS)
adafactor_variance_cuda_kernel = CudaKernel(adafactor_variance_cuda, *_CUDA_ELEMENTS)
adafactor_u_cuda_kernel = CudaKernel(adafactor_u_cuda, *_CUDA_ELEMENTS)
adafactor_coef_cuda_kernel = CudaKernel(adafactor_coef_cuda, *_CUDA_ELEMENTS)
adafactor_apply_cuda_kernel = CudaKernel(adafactor_apply_cuda, *_CUDA_ELEMENTS)

# name -> kernel, for the PTX tier (tests/gpu/ptx_check_adafactor_muon.py)
CUDA_KERNELS = {
    "reduce": adafactor_reduce_cuda_kernel, "variance": adafactor_variance_cuda_kernel,
    "u": adafactor_u_cuda_kernel, "coef": adafactor_coef_cuda_kernel,
    "apply": adafactor_apply_cuda_kernel,
}
