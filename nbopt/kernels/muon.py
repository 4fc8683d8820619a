r"""Muon: momentum, the bfloat16 Newton–Schulz orthogonalisation, the update.

torch 2.13's ``_single_tensor_muon`` for one 2-D parameter ``p`` (``m x n``)
with gradient ``g`` and momentum buffer ``B``::

    B = lerp(B, g, 1 - mu)                    (param dtype, torch's lerp rounding)
    U = lerp(g, B, mu) if nesterov else B
    X = bfloat16(U), transposed when m > n    (s x l, s = min(m, n))
    X = bf16(X / max(bf16(||X||_F), bf16(eps)))
    repeat ns_steps:
        A = bf16(X X^T)                                   (s x s, symmetric)
        Bm = bf16(b A + c A A)                            (torch.addmm(A, A, A, beta=b, alpha=c))
        X = bf16(a X + Bm X)                              (torch.addmm(X, Bm, X, beta=a))
    p = p * (1 - lr * wd)
    p = p - lr_adj * X^T-or-X                 (X converted exactly to the param dtype)

NumPy has no bfloat16: a bfloat16 value is held in a float32 whose low 16
bits are zero, and :func:`round_bf16` rounds a float32 to the nearest one
(ties to even, on the bit pattern, as ``c10::BFloat16``).  A float64 value
is rounded to float32 first, then to bfloat16, as torch converts it.

**The matrix products reproduce torch's CPU bfloat16 GEMMs, rounding for
rounding.**  torch multiplies the bfloat16 matrices with float32
accumulation and rounds each result once to bfloat16; the order of the
float32 additions decides the last bit, and in a 5-step Newton–Schulz
iteration in bfloat16 one different bit in one product spreads through the
whole matrix (measured: ``round_bf16`` of a float32 BLAS product of the same
bfloat16 inputs differs from torch in 0.02 % of a 1024 x 1024 gram
matrix's entries, and after 5 iterations in 68 % of the update's entries, up
to 1.4 % of its largest entry: as far from torch as torch is from the exact
float64 iteration).  So the products are compiled here with torch's
accumulation order (measured bit for bit against torch 2.13 on x86-64):

* ``M * N * K > 4096`` and M >= 8: oneDNN's AMX kernel (``TDPBF16PS``):
  for each tile along K (32 deep, or ``K / ceil(K / 32)`` when that is even,
  for small M or K: :func:`amx_k_block`), the even and the odd products are
  summed in two float32 accumulators starting at 0, and
  ``acc += even + odd``; the result is ``alpha * acc``, or
  ``fma(beta, C, alpha * acc)`` with a C term.
* ``M * N * K > 4096`` and M < 8: oneDNN's AVX512-BF16 kernel
  (``VDPBF16PS``): one float32 sum over K, each pair adding its odd product
  first.
* ``M * N * K <= 4096`` (or ``alpha == 0``): torch's fallback ``cpublas``
  loops, chosen by the operands' memory layout: both row-major: four
  interleaved partial sums (``sum`` with ILP 4); row-major times
  column-major: the AVX2 8-lane dot product of
  ``ReducedPrecisionFloatGemvFastPathKernel`` (8 vector accumulators of 8
  lanes, halving-tree reductions, 16-wide vector tail, scalar tail);
  column-major times row-major: one sequential sum; epilogue
  ``fma(beta, C, alpha * dot)``.

The layouts follow torch's tensors: ``X`` is the transposed view of ``U`` in
the first iteration when ``m > n`` (column-major), a new row-major tensor
afterwards.  The products of bfloat16 values are exact in float32, so an FMA
and a multiply-then-add give the same sums.  The norm is torch's float32
reduction: 8 interleaved partial sums in memory order, a float32 sqrt.

Not reproduced: oneDNN's cache blocking of long sums (K above about 1000:
chunks of K summed apart, sized by shape, layout and cache), its tile choice
for sides that are not multiples of 32 in matrices of 96 rows or more
beyond the measured cases, AMX's treatment of subnormal bfloat16 inputs as
zero (only entries 1e-38 times smaller than the matrix's norm), and CPUs on
which torch takes another bfloat16 path (no AMX-BF16).  There some products
differ in their last bit and the update differs by bfloat16 noise (0.1 to
0.6 % of its largest entry in the random shapes up to 1100 x 1100 that
differed here).

**The faster path** (``nbopt.config.MUON_PRODUCTS = "blas"``, or
``NBOPT_MUON_PRODUCTS=blas``): each product is NumPy's float32 BLAS on the
same bfloat16 values, followed by torch's epilogue and bfloat16 rounding in
one compiled pass (:func:`muon_round_product`; symmetric results mirrored, as
torch's are symmetric bit for bit).  Every rounding point is torch's; only
the order of the float32 additions is BLAS's.  Measured on this CPU against
torch 2.13: the Newton–Schulz result is 1.1-2.1 % of its largest entry away
from torch's (torch is 1.2-2.9 % away from the exact float64 iteration), a
Muon step over 10 x (1024 x 1024) float32 takes 1.3 s instead of 5.0 s
(torch: 0.36 s, its products on AMX tiles, which NumPy and Numba cannot
reach), 98 % of it in the products.  The element-wise passes then run
serially: OpenMP threads that spin after a parallel pass slow the BLAS
threads that follow by 1.7x.

The element-wise parts (momentum and the bfloat16 conversion, the
normalisation, the update) are compiled loops with torch's element formulas;
host scalars are computed in float64 as torch computes them and rounded to
the parameter dtype (float32 arithmetic with a Tensor lr, as torch's 0-d
tensor maths).  Muon is not an element-wise engine algorithm (it has no
registry entry): :class:`nbopt.optim.muon.Muon` calls :func:`muon_step` for
each parameter.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from .. import config
from ._common import (CudaKernel, _jit, bits_float32, cast_like, cpu_kernels, float32_bits, fma,
                      lerp)

# bound when a CUDA kernel compiles (MuonCudaKernel): numba.cuda and the
# device bitcasts of nbopt.kernels._cuda
cuda = f32_bits = bits_f32 = None

__all__ = ["round_bf16", "to_bfloat16", "newton_schulz", "muon_step", "adjust_lr",
           "products_mode", "FALLBACK_LIMIT", "matmul_seconds"]

#: torch hands a bfloat16 GEMM with ``M * N * K`` at most this to its
#: ``cpublas`` fallback loops instead of oneDNN.
FALLBACK_LIMIT = 16 * 16 * 16

# accumulation orders of the GEMM kernel
AMX, ILP4, DOT8, SEQUENTIAL, PAIRS = 0, 1, 2, 3, 4


# --------------------------------------------------------------------------
# bfloat16 rounding

@register_jitable(error_model="numpy")
def bf16_bits(u):
    """The bits (a uint64 holding a float32's bits) rounded to the nearest
    bfloat16, ties to even: the rounding of :func:`round_bf16`, shared by the
    CPU and the CUDA kernels."""
    return (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) \
        & np.uint64(0xFFFF0000)


@njit(inline="always", error_model="numpy")
def _round_bf16(x):
    """float32 ``x`` rounded to the nearest bfloat16 (ties to even), as a
    float32; NaN stays NaN, overflow gives an infinity, as torch's
    ``c10::BFloat16(float)``."""
    if x != x:
        return x
    # (Numba adds uint32s in uint64)
    return bits_float32(np.uint32(bf16_bits(np.uint64(float32_bits(x)))))


def round_bf16_device(x):
    """:func:`_round_bf16` in a CUDA kernel (its bitcasts are numba-cuda's)."""
    if x != x:
        return x
    return bits_f32(np.uint32(bf16_bits(np.uint64(f32_bits(x)))))


def round_bf16(x):
    """float32 (or float64, rounded to float32 first, as torch converts it)
    values rounded to the nearest bfloat16, returned as float32 (a NumPy
    scalar for a scalar, else a new array)."""
    a = np.asarray(x, dtype=np.float32)
    out = np.empty(a.shape, np.float32)
    _round_array(a.reshape(-1), out.reshape(-1))
    return out[()] if out.ndim == 0 else out


def _round_array_loop(a, out):
    for i in range(a.shape[0]):
        out[i] = _round_bf16(a[i])


_round_array = _jit(_round_array_loop)
to_bfloat16 = round_bf16


# --------------------------------------------------------------------------
# element-wise passes (param dtype in, bfloat16-valued float32 work matrix out)

@register_jitable(error_model="numpy")
def momentum_element(g, b, w_buf, w_nest, nesterov):
    """One element's momentum: ``(lerp(b, g, w_buf), the update before its
    bfloat16 rounding)`` (CPU and CUDA kernels)."""
    b = lerp(b, g, w_buf)
    u = lerp(g, b, w_nest) if nesterov else b
    return b, u


@register_jitable(error_model="numpy")
def apply_element(p, v, decay, neg_lr):
    """``fma(neg_lr, v, p * decay)``: torch's ``p.mul_(1 - lr * wd)`` then
    ``p.add_(X, alpha=-lr_adj)`` (``v``: X's entry in the parameter dtype)."""
    return fma(neg_lr, v, p * decay)


@register_jitable(error_model="numpy")
def epilogue_element(acc, cij, alpha, beta, use_c):
    """torch's bfloat16 GEMM epilogue before the rounding: ``alpha * acc``,
    or ``fma(beta, c, alpha * acc)``."""
    v = alpha * acc
    if use_c:
        v = fma(beta, cij, v)
    return v


def muon_momentum(grad, buf, x, w_buf, w_nest, nesterov, transpose):
    """``buf = lerp(buf, grad, w_buf)``; ``x = bf16(lerp(grad, buf, w_nest)``
    or ``bf16(buf))``, stored at ``x[i, j]`` or, with ``transpose``, ``x[j, i]``."""
    m, n = grad.shape
    for i in prange(m):
        for j in range(n):
            b, u = momentum_element(grad[i, j], buf[i, j], w_buf, w_nest, nesterov)
            buf[i, j] = b
            v = _round_bf16(np.float32(u))
            if transpose:
                x[j, i] = v
            else:
                x[i, j] = v


muon_momentum_cpu = cpu_kernels(muon_momentum)


def muon_sumsq(x, transposed):
    """torch's float32 sum of squares of a bfloat16 tensor (its ``norm()``),
    in the tensor's memory order: ``x``'s rows, or with ``transposed`` its
    columns; element k goes to partial sum ``k % 8``, the eight are added in
    order, then the leftover ``n % 8`` elements one by one (measured bit for
    bit against torch 2.13; squares of bfloat16 values are exact in
    float32).  Serial: the same bits whatever the thread count."""
    rows, cols = x.shape
    n = rows * cols
    main = n - n % 8
    acc = np.zeros(8, np.float32)
    total = np.float32(0)
    k = 0
    outer, inner = (cols, rows) if transposed else (rows, cols)
    for a in range(outer):
        for b in range(inner):
            v = x[b, a] if transposed else x[a, b]
            if k < main:
                acc[k % 8] = fma(v, v, acc[k % 8])
                if k == main - 1:
                    total = acc[0]
                    for q in range(1, 8):
                        total = total + acc[q]
            else:
                total = fma(v, v, total)
            k += 1
    return total


muon_sumsq_jit = _jit(muon_sumsq)


def muon_normalize(x, denom):
    """``x = bf16(x / denom)`` (float32 division, as torch's bfloat16 div)."""
    m, n = x.shape
    for i in prange(m):
        for j in range(n):
            x[i, j] = _round_bf16(x[i, j] / denom)


muon_normalize_cpu = cpu_kernels(muon_normalize)


def muon_apply(param, x, decay, neg_lr, transpose):
    """``p = fma(neg_lr, X, p * decay)``: torch's ``p.mul_(1 - lr * wd)`` then
    ``p.add_(X, alpha=-lr_adj)``, with ``X`` (bfloat16) converted to the
    parameter dtype."""
    m, n = param.shape
    for i in prange(m):
        for j in range(n):
            v = cast_like(x[j, i] if transpose else x[i, j], param)
            param[i, j] = apply_element(param[i, j], v, decay, neg_lr)


muon_apply_cpu = cpu_kernels(muon_apply)


_MIRROR_TILE = 32


def muon_round_product(out, c, alpha, beta, use_c, symmetric):
    """``out = bf16(fma(beta, c, alpha * out))`` (or ``bf16(alpha * out)``):
    the epilogue torch's bfloat16 ``addmm``/``mm`` applies to its float32
    sums, here on a float32 BLAS product.  ``symmetric``: the upper triangle
    is rounded and mirrored, so the result is symmetric bit for bit as
    torch's is (BLAS may add ``(i, j)`` and ``(j, i)`` in other orders); by
    32 x 32 tiles, because writing whole columns misses the cache (17x
    slower on 1024 x 1024, measured)."""
    m, n = out.shape
    if not symmetric:
        for i in prange(m):
            for j in range(n):
                out[i, j] = _round_bf16(epilogue_element(out[i, j], c[i, j], alpha, beta,
                                                         use_c))
        return
    tiles = (m + _MIRROR_TILE - 1) // _MIRROR_TILE
    for ti in prange(tiles):
        i0 = ti * _MIRROR_TILE
        i1 = min(i0 + _MIRROR_TILE, m)
        for j0 in range(i0, n, _MIRROR_TILE):
            j1 = min(j0 + _MIRROR_TILE, n)
            for i in range(i0, i1):
                for j in range(max(i, j0), j1):
                    out[i, j] = _round_bf16(epilogue_element(out[i, j], c[i, j], alpha, beta,
                                                             use_c))
            for j in range(j0, j1):
                for i in range(i0, min(i1, j)):
                    out[j, i] = out[i, j]


muon_round_product_cpu = cpu_kernels(muon_round_product)


# --------------------------------------------------------------------------
# the GEMM: out = bf16(alpha * left @ right [+ beta * c]) in torch's order

_R, _JC = 8, 256       # rows x columns of output per tile of the AMX-order kernel


@njit(inline="always", error_model="numpy")
def amx_k_block(k_total, m):
    """The K extent of oneDNN's AMX tiles (at most 32) for an ``m``-row
    product, as measured with torch 2.13 here: K split evenly into
    ``ceil(K / 32)`` tiles when that gives an even size (K = 48 runs as
    24 + 24, K = 196 as 7 x 28), else tiles of 32 and a shorter last one
    (K = 50: 32 + 18); from ``m = 96`` rows on, the even split only for
    ``K <= 128`` (oneDNN then cuts K into blocks first).  The two agree
    whenever K is a multiple of 32."""
    tiles = (k_total + 31) // 32
    if (m < 96 or k_total <= 128) and k_total % tiles == 0 and (k_total // tiles) % 2 == 0:
        return k_total // tiles
    return 32


@njit(inline="always", error_model="numpy")
def _pair(even, odd, x, y, ae, ao, w):
    for j in range(w):
        even[j] = fma(ae, x[j], even[j])
        odd[j] = fma(ao, y[j], odd[j])


@njit(inline="always", error_model="numpy")
def _single(even, x, ae, w):
    for j in range(w):
        even[j] = fma(ae, x[j], even[j])


@njit(inline="always", error_model="numpy")
def _epilogue(acc, c, i, j, alpha, beta, use_c):
    return _round_bf16(epilogue_element(acc, c[i, j], alpha, beta, use_c))


@njit(inline="always", error_model="numpy")
def _tree8(v):
    """Lane 0 of AVX2's ``vec_reduce_all`` (+): pairs at distance 4, 2, 1."""
    a0 = v[0] + v[4]
    a1 = v[1] + v[5]
    a2 = v[2] + v[6]
    a3 = v[3] + v[7]
    b0 = a0 + a2
    b1 = a1 + a3
    return b0 + b1


@njit(inline="always", error_model="numpy")
def _dot8(left, right, i, j, regs, tail):
    """torch's x86 ``bf16_dot_with_fp32_arith`` (AVX2: 8-lane float vectors)
    of row ``i`` of ``left`` and column ``j`` of ``right``."""
    k_total = left.shape[1]
    zero = np.float32(0)
    regs[:, :] = zero
    main = (k_total // 64) * 64
    for k0 in range(0, main, 64):
        for r in range(8):
            for lane in range(8):
                k = k0 + 8 * r + lane
                regs[r, lane] = fma(left[i, k], right[k, j], regs[r, lane])
    for off in (4, 2, 1):
        for r in range(off):
            for lane in range(8):
                regs[r, lane] = regs[r, lane] + regs[r + off, lane]
    total = _tree8(regs[0])
    tail[:] = zero
    vec = (k_total // 16) * 16
    for k0 in range(main, vec, 16):
        for lane in range(8):
            tail[lane] = fma(left[i, k0 + lane], right[k0 + lane, j], tail[lane])
        for lane in range(8):
            tail[lane] = fma(left[i, k0 + 8 + lane], right[k0 + 8 + lane, j], tail[lane])
    total = total + _tree8(tail)
    for k in range(vec, k_total):
        total = fma(left[i, k], right[k, j], total)
    return total


@njit(inline="always", error_model="numpy")
def _ilp4(left, right, i, j):
    """torch's ``cpublas::sum`` (4 interleaved partial sums) of row ``i``
    times column ``j``."""
    k_total = left.shape[1]
    p0 = p1 = p2 = p3 = np.float32(0)
    k = 0
    while k + 4 <= k_total:
        p0 = fma(left[i, k], right[k, j], p0)
        p1 = fma(left[i, k + 1], right[k + 1, j], p1)
        p2 = fma(left[i, k + 2], right[k + 2, j], p2)
        p3 = fma(left[i, k + 3], right[k + 3, j], p3)
        k += 4
    while k < k_total:
        p0 = fma(left[i, k], right[k, j], p0)
        k += 1
    return ((p0 + p1) + p2) + p3


@njit(inline="always", error_model="numpy")
def _pairs(left, right, i, j):
    """oneDNN's AVX512-BF16 kernel (``VDPBF16PS``): one float32 accumulator,
    each pair of K adding its odd product first."""
    k_total = left.shape[1]
    total = np.float32(0)
    for k in range(0, k_total - 1, 2):
        total = fma(left[i, k + 1], right[k + 1, j], total)
        total = fma(left[i, k], right[k, j], total)
    if k_total % 2 == 1:
        total = fma(left[i, k_total - 1], right[k_total - 1, j], total)
    return total


@njit(inline="always", error_model="numpy")
def _sequential(left, right, i, j):
    total = np.float32(0)
    for k in range(left.shape[1]):
        total = fma(left[i, k], right[k, j], total)
    return total


def _fallback_row(left, right, c, out, alpha, beta, use_c, order, i):
    """Row ``i`` of a product in one of torch's fallback / AVX512-BF16 orders."""
    regs = np.empty((8, 8), np.float32)
    tail = np.empty(8, np.float32)
    for j in range(right.shape[1]):
        if order == ILP4:
            acc = _ilp4(left, right, i, j)
        elif order == DOT8:
            acc = _dot8(left, right, i, j, regs, tail)
        elif order == PAIRS:
            acc = _pairs(left, right, i, j)
        else:
            acc = _sequential(left, right, i, j)
        out[i, j] = _epilogue(acc, c, i, j, alpha, beta, use_c)


def _amx_tile(left, right, c, out, alpha, beta, use_c, kb, i0, j0, acc, even, odd):
    """Output rows ``i0 : i0 + _R``, columns ``j0 : j0 + _JC`` in oneDNN's
    AMX order (``acc``, ``even``, ``odd``: scratch of ``(_R, _JC)``)."""
    m, k_total = left.shape
    n = right.shape[1]
    zero = np.float32(0)
    rows = min(i0 + _R, m) - i0
    w = min(j0 + _JC, n) - j0
    j1 = j0 + w
    for r in range(rows):
        for j in range(w):
            acc[r, j] = zero
    for k0 in range(0, k_total, kb):
        k1 = min(k0 + kb, k_total)
        for r in range(rows):
            for j in range(w):
                even[r, j] = zero
                odd[r, j] = zero
        for k in range(k0, k1 - 1, 2):
            x = right[k][j0:j1]
            y = right[k + 1][j0:j1]
            for r in range(rows):
                _pair(even[r], odd[r], x, y, left[i0 + r, k], left[i0 + r, k + 1], w)
        if (k1 - k0) % 2 == 1:
            x = right[k1 - 1][j0:j1]
            for r in range(rows):
                _single(even[r], x, left[i0 + r, k1 - 1], w)
        for r in range(rows):
            a_r = acc[r]
            e_r = even[r]
            o_r = odd[r]
            for j in range(w):
                a_r[j] = a_r[j] + (e_r[j] + o_r[j])
    for r in range(rows):
        a_r = acc[r]
        for j in range(w):
            out[i0 + r, j0 + j] = _epilogue(a_r[j], c, i0 + r, j0 + j, alpha, beta, use_c)


_fallback_row_jit = _jit(_fallback_row)
_amx_tile_jit = _jit(_amx_tile)


def muon_gemm(left, right, c, out, alpha, beta, use_c, order, symmetric):
    """``out = bf16(alpha * (left @ right) [+ beta * c])`` with torch's
    float32 accumulation ``order`` (AMX, PAIRS, ILP4, DOT8 or SEQUENTIAL).

    ``left`` (M x K), ``right`` (K x N), ``c`` and ``out`` (M x N): float32
    C-contiguous arrays of bfloat16 values; ``out`` is another array.
    ``symmetric``: the result is known to be symmetric bit for bit (the
    products then pair up term for term), and only tiles on or above the
    diagonal are computed (AMX order).  The work of each row or tile is a
    separate compiled function: inlined into a ``parallel=True`` loop, its
    inner loops would be turned into nested parfors (15x slower, measured)."""
    m = left.shape[0]
    n = right.shape[1]
    if order != AMX:
        for i in prange(m):
            _fallback_row_jit(left, right, c, out, alpha, beta, use_c, order, i)
        return
    kb = amx_k_block(left.shape[1], m)
    tiles_j = (n + _JC - 1) // _JC
    tiles_i = (m + _R - 1) // _R
    # the tiles to compute (with ``symmetric``, those reaching the diagonal
    # or above it), listed first so that prange splits the real work evenly
    todo = np.empty((tiles_i * tiles_j, 2), np.int64)
    count = 0
    for ti in range(tiles_i):
        for tj in range(tiles_j):
            if symmetric and min((tj + 1) * _JC, n) <= ti * _R:
                continue
            todo[count, 0] = ti * _R
            todo[count, 1] = tj * _JC
            count += 1
    for t in prange(count):
        acc = np.empty((_R, _JC), np.float32)
        even = np.empty((_R, _JC), np.float32)
        odd = np.empty((_R, _JC), np.float32)
        _amx_tile_jit(left, right, c, out, alpha, beta, use_c, kb, todo[t, 0], todo[t, 1],
                      acc, even, odd)
    if symmetric:
        for i in prange(m):
            for j in range(i):
                out[i, j] = out[j, i]


muon_gemm_cpu = cpu_kernels(muon_gemm)


# --------------------------------------------------------------------------
# host side

matmul_seconds = [0.0]   # time spent in the GEMMs while _PROFILE[0] is set (nbopt.cli.bench)
_PROFILE = [False]


PRODUCTS = ("torch", "blas")


def products_mode() -> str:
    """``config.MUON_PRODUCTS``, checked (a step reads it once, before it
    changes anything)."""
    products = config.MUON_PRODUCTS
    if products not in PRODUCTS:
        raise ValueError("nbopt.config.MUON_PRODUCTS must be 'torch' or 'blas', "
                         f"got {products!r}")
    return products


def _parallel(work: int, products: str) -> bool:
    # With BLAS products the element-wise passes run serially: OpenMP's
    # threads spin for a while after a parallel region and take the cores
    # from OpenBLAS's threads (a 1024 x 1024 product after a parallel pass:
    # 12.3 ms instead of 7.3 ms, measured); the passes are O(size), the
    # products O(size * short side).
    return products != "blas" and config.runs_parallel(work)


def _gemm(left, right, c, out, alpha, beta, use_c, left_f, right_f, symmetric, products):
    """One of torch's bfloat16 products, ``out = bf16(alpha * left @ right
    [+ beta * c])``, by ``products`` (``"torch"`` or ``"blas"``); ``left_f``/``right_f`` tell
    whether torch's operand is column-major (a transposed view) there, which
    picks torch's fallback order."""
    if _PROFILE[0]:
        import time

        start = time.perf_counter()
        _product(left, right, c, out, alpha, beta, use_c, left_f, right_f, symmetric,
                 products)
        matmul_seconds[0] += time.perf_counter() - start
    else:
        _product(left, right, c, out, alpha, beta, use_c, left_f, right_f, symmetric,
                 products)


def _product(left, right, c, out, alpha, beta, use_c, left_f, right_f, symmetric, products):
    m, k_total = left.shape
    n = right.shape[1]
    work = m * n * k_total
    if products == "blas":
        # float32 BLAS on bfloat16 values: each product is exact in float32,
        # only the order of the float32 additions differs from torch's
        np.matmul(left, right, out=out)
        kernel = muon_round_product_cpu[1] if _parallel(out.size, products) else \
            muon_round_product_cpu[0]
        kernel(out, c, np.float32(alpha), np.float32(beta), use_c, symmetric)
        return
    if work > FALLBACK_LIMIT and alpha != 0:
        order = AMX if m >= 8 else PAIRS
    elif left_f == right_f:
        order = ILP4
    elif not left_f:
        order = DOT8
    else:
        order = SEQUENTIAL
    kernel = muon_gemm_cpu[1] if _parallel(work // 8, products) else muon_gemm_cpu[0]
    kernel(left, right, c, out, np.float32(alpha), np.float32(beta), use_c, order, symmetric)


class Workspace:
    """The float32 work matrices of one parameter shape (reused across steps:
    freshly allocated multi-megabyte arrays cost page faults at every step)."""

    def __init__(self, short: int, long: int):
        self.x = np.empty((short, long), np.float32)
        self.x2 = np.empty((short, long), np.float32)
        self.xt = np.empty((long, short), np.float32)
        self.a = np.empty((short, short), np.float32)
        self.b = np.empty((short, short), np.float32)


def newton_schulz(ws: Workspace, coefficients, steps: int, eps: float,
                  first_f: bool, products: str | None = None) -> np.ndarray:
    """torch's ``_zeropower_via_newtonschulz`` on ``ws.x`` (the bfloat16
    update, already transposed to s x l); returns the array holding the
    result.  ``first_f``: torch's input is a column-major view (the
    transposed update of a tall parameter).  ``products``: ``"torch"`` or
    ``"blas"`` (default: ``config.MUON_PRODUCTS``)."""
    if products is None:
        products = products_mode()
    a, b, c = (np.float32(v) for v in coefficients)
    x, x2 = ws.x, ws.x2
    work = x.size
    # ortho_grad.norm(): float32 sum, float32 sqrt, rounded to bfloat16
    norm = _round_scalar(np.sqrt(muon_sumsq_jit(x, first_f)))
    floor = _round_scalar(np.float32(eps))
    denom = norm if (norm != norm or norm > floor) else floor   # clamp(min=eps) keeps NaN
    normalize = muon_normalize_cpu[1] if _parallel(work, products) else muon_normalize_cpu[0]
    normalize(x, denom)
    x_f = first_f
    blas = products == "blas"
    for _ in range(steps):
        if blas:
            xt = x.T          # BLAS reads the transposed view as it is
        else:
            np.copyto(ws.xt, x.T)
            xt = ws.xt
        # gram = X @ X.T: X.T is column-major where X is row-major
        _gram = ws.a
        _gemm(x, xt, x, _gram, 1.0, 0.0, False, x_f, not x_f, True, products)
        # addmm(gram, gram, gram, beta=b, alpha=c): all row-major
        _gemm(_gram, _gram, _gram, ws.b, c, b, b != 0, False, False, True, products)
        # addmm(X, B, X, beta=a)
        _gemm(ws.b, x, x, x2, 1.0, a, a != 0, False, x_f, False, products)
        x, x2 = x2, x
        x_f = False
    return x


def _round_scalar(v) -> np.float32:
    return round_bf16(np.float32(v))


def adjust_lr(lr, adjust_lr_fn, shape):
    """torch's ``_adjust_lr``: the learning rate scaled for the matrix shape
    (a Tensor lr stays a float32 0-d array, as torch's tensor maths)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


def muon_step(param, grad, buf, ws: Workspace, group, lr, products: str) -> None:
    """One parameter's Muon step, in place on ``param`` and ``buf``.

    ``param`` and ``grad`` are 2-D float32/float64 arrays of the same shape
    (any memory layout), ``buf`` the momentum buffer, ``ws`` the work
    matrices for ``min(shape) x max(shape)``, ``lr`` the group's lr as
    torch's ``_to_scalar`` leaves it (a float, or a 0-d float32 array),
    ``products`` the product path (:func:`products_mode`)."""
    m, n = param.shape
    dtype = param.dtype.type
    momentum = group["momentum"]
    nesterov = bool(group["nesterov"])
    tall = m > n
    size = param.size
    momentum_kernel = muon_momentum_cpu[1] if _parallel(size, products) else \
        muon_momentum_cpu[0]
    momentum_kernel(grad, buf, ws.x, dtype(1 - momentum), dtype(momentum), nesterov, tall)
    # torch's update is a fresh tensor laid out like the gradient; its
    # transposed view is column-major exactly when it is row-major
    grad_f = grad.flags.f_contiguous and not grad.flags.c_contiguous if nesterov else \
        buf.flags.f_contiguous and not buf.flags.c_contiguous
    if size:
        x = newton_schulz(ws, group["ns_coefficients"], group["ns_steps"], group["eps"],
                          tall != grad_f, products)
    else:
        x = ws.x
    adjusted = adjust_lr(lr, group["adjust_lr_fn"], param.shape)
    decay = 1 - lr * group["weight_decay"]
    apply = muon_apply_cpu[1] if _parallel(size, products) else muon_apply_cpu[0]
    apply(param, x, dtype(decay), dtype(-float(adjusted)), tall)


# --------------------------------------------------------------------------
# CUDA: Muon on device parameters (nbopt.optim._muon_cuda).  The element
# functions above, compiled for the device; the norm is
# nbopt.kernels.adafactor's block reduction (mode 0).  The products are a
# tiled shared-memory float32 GEMM: each output adds its K products in order
# (one fused multiply-add each: products of bfloat16 values are exact in
# float32), then torch's epilogue and bfloat16 rounding.  The symmetric
# products (X X^T, A A + A) come out symmetric bit for bit without mirroring:
# entries (i, j) and (j, i) add the same products in the same order.  Only
# the order of the float32 additions differs from torch's (as with
# MUON_PRODUCTS="blas"): bfloat16 noise, a few % of the update's largest entry.

#: side of the GEMM's square output tile (threads per block: TILE * TILE)
TILE = 16


def muon_momentum_cuda(grad, buf, x, w_buf, w_nest, nesterov, transpose):
    """:func:`muon_momentum`, one thread per element (grid-stride)."""
    m, n = grad.shape
    for q in range(cuda.grid(1), m * n, cuda.gridsize(1)):
        i = q // n
        j = q - i * n
        b, u = momentum_element(grad[i, j], buf[i, j], w_buf, w_nest, nesterov)
        buf[i, j] = b
        v = round_bf16_device(np.float32(u))
        if transpose:
            x[j, i] = v
        else:
            x[i, j] = v


def muon_normalize_cuda(x, sums, floor):
    """``x = bf16(x / max(bf16(sqrt(sums[0])), floor))`` over the flat work
    matrix (``floor``: bf16(eps); the clamp keeps NaN)."""
    norm = round_bf16_device(math.sqrt(sums[0]))
    denom = norm if (norm != norm or norm > floor) else floor
    for q in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        x[q] = round_bf16_device(x[q] / denom)


def muon_gemm_cuda(left, right, c, out, alpha, beta, use_c, trans_right):
    """``out = bf16(epilogue(left @ right))`` (``right`` read transposed with
    ``trans_right``): blocks of TILE x TILE threads over output tiles
    (grid-stride in both dimensions), K in TILE-deep slices through shared
    memory, one float32 sum per output in K order."""
    sl = cuda.shared.array((TILE, TILE), np.float32)
    sr = cuda.shared.array((TILE, TILE), np.float32)
    ty = cuda.threadIdx.y
    tx = cuda.threadIdx.x
    m, k_total = left.shape
    n = out.shape[1]
    zero = np.float32(0)
    for bi in range(cuda.blockIdx.y, (m + TILE - 1) // TILE, cuda.gridDim.y):
        for bj in range(cuda.blockIdx.x, (n + TILE - 1) // TILE, cuda.gridDim.x):
            i = bi * TILE + ty
            j = bj * TILE + tx
            acc = zero
            for k0 in range(0, k_total, TILE):
                kl = k0 + tx
                sl[ty, tx] = left[i, kl] if i < m and kl < k_total else zero
                kr = k0 + ty
                if j < n and kr < k_total:
                    sr[ty, tx] = right[j, kr] if trans_right else right[kr, j]
                else:
                    sr[ty, tx] = zero
                cuda.syncthreads()
                for kk in range(min(TILE, k_total - k0)):
                    acc = fma(sl[ty, kk], sr[kk, tx], acc)
                cuda.syncthreads()
            if i < m and j < n:
                cij = c[i, j] if use_c else zero
                out[i, j] = round_bf16_device(epilogue_element(acc, cij, alpha, beta, use_c))


def muon_apply_cuda(param, x, decay, neg_lr, transpose):
    """:func:`muon_apply`, one thread per element (grid-stride)."""
    m, n = param.shape
    for q in range(cuda.grid(1), m * n, cuda.gridsize(1)):
        i = q // n
        j = q - i * n
        v = cast_like(x[j, i] if transpose else x[i, j], param)
        param[i, j] = apply_element(param[i, j], v, decay, neg_lr)


class MuonCudaKernel(CudaKernel):
    """A CUDA kernel of this module (see :class:`nbopt.kernels._common.CudaKernel`),
    which also binds the device bitcasts of :func:`round_bf16_device`."""

    def get(self):
        if self._compiled is None:
            from . import _cuda

            globals().update(f32_bits=_cuda.f32_bits, bits_f32=_cuda.bits_f32)
        return super().get()


_CUDA_ELEMENTS = (bf16_bits, round_bf16_device, momentum_element, apply_element,
                  epilogue_element)

muon_momentum_cuda_kernel = MuonCudaKernel(muon_momentum_cuda, *_CUDA_ELEMENTS)
muon_normalize_cuda_kernel = MuonCudaKernel(muon_normalize_cuda, *_CUDA_ELEMENTS)
muon_gemm_cuda_kernel = MuonCudaKernel(muon_gemm_cuda, *_CUDA_ELEMENTS)
muon_apply_cuda_kernel = MuonCudaKernel(muon_apply_cuda, *_CUDA_ELEMENTS)

# name -> kernel, for the PTX tier (tests/gpu/ptx_check_adafactor_muon.py)
CUDA_KERNELS = {
    "momentum": muon_momentum_cuda_kernel, "normalize": muon_normalize_cuda_kernel,
    "gemm": muon_gemm_cuda_kernel, "apply": muon_apply_cuda_kernel,
}
