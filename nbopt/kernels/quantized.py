r"""8-bit optimizer state: block-wise dynamic quantization and the compiled
steps of ``nbopt.Adam8bit``, ``AdamW8bit``, ``SGD8bit``, ``RMSprop8bit`` and
``Adagrad8bit``.

Quantization (Dettmers et al., "8-bit Optimizers via Block-wise
Quantization", ICLR 2022; bitsandbytes' ``create_dynamic_map`` and
``quantize_blockwise``, re-derived here):

* A state array of ``n`` elements is cut into blocks of :data:`BLOCKSIZE`
  (256, bitsandbytes' block size for its optimizers) consecutive elements;
  the last block may be shorter.  Each block stores its ``absmax`` (float32),
  and each element the uint8 index of the code nearest to
  ``clip(x / absmax, -1, 1)`` in a 256-entry *dynamic map*; ties go to the
  lower code (``torch.bucketize``'s rule).  A block of zeros has absmax 0.
* Decoding is ``map[q] * absmax``.
* The dynamic map (:func:`create_dynamic_map`) has one exponent decade per
  leading-zero count: decade ``k = 0..6`` covers ``[0.1, 1] * 10**(k-6)``
  with ``2**k`` (signed) or ``2**(k+1)`` (unsigned) equal bins whose centres
  are the codes, plus 0 and 1.  First moments (signed: Adam's ``exp_avg``,
  SGD's momentum) use the signed map, non-negative second moments (Adam's
  ``exp_avg_sq``, RMSprop's ``square_avg``, Adagrad's ``sum``) the unsigned one.

Encoding the nearest code fast: a 65,536-entry table indexed by the top 16
bits of the float32 ``x / absmax`` (sign, exponent, 7 mantissa bits) gives
the nearest code's lower bound for the whole bit range; such a range holds at
most one midpoint between codes of either map, so one comparison finishes
the search, without a branch.

One deliberate exception to nearest rounding: in the unsigned map of second
moments a positive value below half the smallest positive code (3.25e-7 *
absmax) is stored as that code, not as 0.  A second moment decoded as 0 turns
Adam's (RMSprop's, Adagrad's) denominator into ``eps`` and the step into
``lr * m / eps``: on a block whose gradients span more than the map's seven
decades (an ill-conditioned problem) that diverges.  bitsandbytes' CPU
quantizer rounds such values up as well.  The result is
exactly ``searchsorted(midpoints, x, side="left")``.

The step kernels decode a block, run the 32-bit algorithm's own element
function on it (the same function ``nbopt.Adam`` etc. run, so the arithmetic
is theirs), keep the new moments in a per-thread block buffer while taking
the block's new absmax, then encode the block: one pass over the parameter,
gradient and quantized state.  The parallel build runs over chunks of blocks;
small parameters run the serial build (``config.PARALLEL_THRESHOLD``).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._common import _jit, bits_float32, cpu_kernels, float32_bits
from .adam import _adam_element
from .adagrad import _adagrad_element
from .rmsprop import _rmsprop_element
from .sgd import _sgd_element

__all__ = ["BLOCKSIZE", "create_dynamic_map", "quantize_blockwise", "dequantize_blockwise",
           "n_blocks", "ADAM", "MOMENTUM", "RMSPROP", "ADAGRAD"]

#: Elements per quantization block (bitsandbytes' optimizers use 256).
BLOCKSIZE = 256
#: Blocks per unit of parallel work.
_BLOCKS_PER_CHUNK = 64

# algorithm ids of the step kernels
ADAM, MOMENTUM, RMSPROP, ADAGRAD = 0, 1, 2, 3

# The row of host scalars is padded to this length; its last entry is 1 in the
# parameter dtype (the kernels' typed constant).
N_SCALARS = 9


def n_blocks(n: int, blocksize: int = BLOCKSIZE) -> int:
    return -(-int(n) // blocksize)


def _linspace_f32(start, end, steps):
    """``torch.linspace(start, end, steps, dtype=float32)`` on CPU: the first
    half counts up from ``start``, the second half down from ``end``, with a
    float32 step, each value rounded once to float32."""
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float32((end32 - start32) / np.float32(steps - 1))
    half = steps // 2
    out = np.empty(steps, np.float32)
    for i in range(steps):
        # each value rounded once from double (torch's kernel fuses the product)
        if i < half:
            out[i] = float(start32) + float(step) * i
        else:
            out[i] = float(end32) - float(step) * (steps - i - 1)
    return out


def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7,
                       total_bits: int = 8) -> np.ndarray:
    """The dynamic quantization map: 256 sorted float32 codes in [-1, 1]
    (signed) or [0, 1] (unsigned), built as bitsandbytes'
    ``functional.create_dynamic_map`` builds it."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = _linspace_f32(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
        scale = np.float32(10 ** (-(max_exponent_bits - 1) + i))
        data += (scale * means).astype(np.float32).tolist()
        if signed:
            data += (-scale * means).astype(np.float32).tolist()
    if additional_items > 0:
        boundaries = _linspace_f32(0.1, 1, additional_items + 1)
        means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
        scale = np.float32(10 ** (-(max_exponent_bits - 1) + i))
        data += (scale * means).astype(np.float32).tolist()
        if signed:
            data += (-scale * means).astype(np.float32).tolist()
    data.append(0.0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data += [0.0] * (256 - len(data))
    data.sort()
    return np.array(data, np.float32)


def _tables(qmap: np.ndarray):
    """``(midpoints, lut)``: the 255 float32 midpoints between consecutive
    codes (padded with +inf to 256), and the uint8 table over the top 16 bits
    of a float32 giving the number of midpoints below the smallest float with
    those bits."""
    mids = ((qmap[:-1] + qmap[1:]) / np.float32(2)).astype(np.float32)
    keys = np.arange(1 << 16, dtype=np.uint32)
    low = keys << np.uint32(16)
    # the smallest value of each key's range: positive keys start at their
    # bits, negative ones at their largest magnitude
    low = np.where(keys >= (1 << 15), low | np.uint32(0xFFFF), low).view(np.float32)
    lut = np.searchsorted(mids, np.nan_to_num(low, nan=-np.inf), side="left")
    # the encoder's one comparison is exact only if no key's range holds two
    # midpoints: check it (the largest value of each range is the next key's
    # smallest for positive keys, and the range's own bits for negative ones)
    high = np.where(keys >= (1 << 15), keys << np.uint32(16),
                    (keys << np.uint32(16)) | np.uint32(0xFFFF)).view(np.float32)
    finite = np.isfinite(low) & np.isfinite(high)
    inside = (np.searchsorted(mids, high[finite], side="right")
              - np.searchsorted(mids, low[finite], side="left"))
    assert inside.max() <= 1, "a 16-bit key range holds two midpoints of the map"
    return np.append(mids, np.float32(np.inf)), np.minimum(lut, 255).astype(np.uint8)


SIGNED_MAP = create_dynamic_map(True)
UNSIGNED_MAP = create_dynamic_map(False)
SIGNED_MAP.flags.writeable = False
UNSIGNED_MAP.flags.writeable = False
_SIGNED_TABLES = _tables(SIGNED_MAP)
_UNSIGNED_TABLES = _tables(UNSIGNED_MAP)


def tables(signed: bool):
    """``(map, midpoints, lut)`` of the signed or unsigned dynamic map."""
    return (SIGNED_MAP,) + _SIGNED_TABLES if signed else (UNSIGNED_MAP,) + _UNSIGNED_TABLES


# --------------------------------------------------------------------------
# Compiled pieces.

def _encode(x, mids, lut):
    """The uint8 code of float32 ``x`` (already scaled into [-1, 1] or NaN):
    the table's lower bound, then one comparison (a 16-bit key's range holds
    at most one midpoint of either map; ``mids[255]`` is +inf)."""
    k = lut[float32_bits(x) >> 16]
    return k + (mids[k] < x)


_encode_jit = _jit(_encode, inline="always")


def _quantize_loop(x, q, absmax, mids, lut, blocksize, positive):
    nb = absmax.shape[0]
    n = x.shape[0]
    for b in prange(nb):
        lo = b * blocksize
        hi = min(n, lo + blocksize)
        _store_block(x[lo:hi], q[lo:hi], absmax, mids, lut, b, np.float32(0), positive)


def _dequantize_loop(q, absmax, qmap, out, blocksize):
    n = q.shape[0]
    for b in prange(absmax.shape[0]):
        lo = b * blocksize
        hi = min(n, lo + blocksize)
        a = absmax[b]
        for i in range(lo, hi):
            out[i] = qmap[q[i]] * a


_quantize_cpu = cpu_kernels(_quantize_loop)
_dequantize_cpu = cpu_kernels(_dequantize_loop)


def _check_blocksize(blocksize):
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) \
            or blocksize < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")


def quantize_blockwise(x, signed: bool, blocksize: int = BLOCKSIZE):
    """Quantize ``x`` (any float array, rounded to float32 first): returns
    ``(q, absmax)``, ``q`` uint8
    shaped like ``x``, ``absmax`` float32 of one entry per block of the
    flattened array."""
    from .. import config

    _check_blocksize(blocksize)
    x = np.ascontiguousarray(x, dtype=np.float32)
    flat = x.reshape(-1)
    qmap, mids, lut = tables(signed)
    q = np.empty(flat.shape, np.uint8)
    absmax = np.empty(n_blocks(flat.size, blocksize), np.float32)
    kernel = _quantize_cpu[1 if config.runs_parallel(flat.size) else 0]
    kernel(flat, q, absmax, mids, lut, blocksize, not signed)
    return q.reshape(x.shape), absmax


def dequantize_blockwise(q, absmax, qmap, blocksize: int = BLOCKSIZE, dtype=np.float32):
    """``qmap[q] * absmax`` block by block, shaped like ``q``."""
    from .. import config

    _check_blocksize(blocksize)
    q = np.ascontiguousarray(q)
    if q.dtype != np.uint8:
        raise TypeError(f"dequantize_blockwise: codes must be uint8, got {q.dtype}")
    flat = q.reshape(-1)
    if np.shape(absmax) != (n_blocks(flat.size, blocksize),) or np.shape(qmap) != (256,):
        raise ValueError(f"dequantize_blockwise: {flat.size} codes in blocks of {blocksize} "
                         f"need {n_blocks(flat.size, blocksize)} absmax values and a map of 256 "
                         f"codes, got {np.shape(absmax)} and {np.shape(qmap)}")
    out = np.empty(flat.shape, np.float32)
    kernel = _dequantize_cpu[1 if config.runs_parallel(flat.size) else 0]
    kernel(flat, np.ascontiguousarray(absmax, np.float32), np.ascontiguousarray(qmap, np.float32),
           out, blocksize)
    return out.reshape(q.shape).astype(dtype, copy=False)


def step8_loop(param, grad, q1, a1, map1, mids1, lut1, q2, a2, map2, mids2, lut2, sc,
               algo, two, f0, f1, f2, pos1, pos2, blocksize):
    """One step of a parameter whose state is quantized: ``param`` and
    ``grad`` flat, ``q1``/``a1`` (and ``q2``/``a2`` when ``two``) its codes and
    block absmax, ``sc`` the scalar row in the parameter dtype; ``f0..f2`` the
    algorithm's flags (see the API classes' ``_flags``).

    Per block: decode into two block buffers (a gather), run the algorithm's
    element function over parameter, gradient and buffers (indexed from 0,
    one loop per algorithm: LLVM vectorises them), take the new absmax, encode."""
    n = param.shape[0]
    nb = a1.shape[0]
    one = sc[N_SCALARS - 1]
    zero = one - one
    n_chunks = (nb + _BLOCKS_PER_CHUNK - 1) // _BLOCKS_PER_CHUNK
    for c in prange(n_chunks):
        buf1 = np.empty(blocksize, param.dtype)
        buf2 = np.empty(blocksize, param.dtype)
        for b in range(c * _BLOCKS_PER_CHUNK, min(nb, (c + 1) * _BLOCKS_PER_CHUNK)):
            lo = b * blocksize
            hi = min(n, lo + blocksize)
            m = hi - lo
            pv = param[lo:hi]
            gv = grad[lo:hi]
            s1 = buf1[:m]
            s2 = buf2[:m]
            am1 = a1[b] * one
            c1 = q1[lo:hi]
            for i in range(m):
                s1[i] = map1[c1[i]] * am1
            if two:
                am2 = a2[b] * one
                c2 = q2[lo:hi]
                for i in range(m):
                    s2[i] = map2[c2[i]] * am2
            if algo == 0:
                for i in range(m):
                    pv[i], s1[i], s2[i], _ = _adam_element(
                        pv[i], gv[i], s1[i], s2[i], s2[i], sc[0], sc[1], sc[2], sc[3], sc[4],
                        sc[5], sc[6], sc[7], False, f0, f1, f2)
            elif algo == 1:
                first = sc[4] != zero
                for i in range(m):
                    pv[i], s1[i] = _sgd_element(pv[i], gv[i], s1[i], sc[0], sc[1], sc[2], sc[3],
                                                first, f0, f1, True, f2)
            elif algo == 2:
                for i in range(m):
                    pv[i], s1[i], _, _ = _rmsprop_element(
                        pv[i], gv[i], s1[i], s1[i], s1[i], sc[0], sc[1], sc[2], sc[3], sc[4],
                        sc[5], f0, f1, False, False)
            else:
                for i in range(m):
                    pv[i], s1[i] = _adagrad_element(pv[i], gv[i], s1[i], sc[0], sc[1], sc[2],
                                                    f0, f1)
            _store_block(s1, c1, a1, mids1, lut1, b, zero, pos1)
            if two:
                _store_block(s2, q2[lo:hi], a2, mids2, lut2, b, zero, pos2)


def _store_block_py(buf, q, a, mids, lut, b, zero, positive):
    """Encode the block ``buf`` into codes ``q`` and ``a[b]``: absmax (NaN if
    any element is NaN or infinite), then each element's nearest code;
    with ``positive`` (the unsigned map of second moments) a positive value
    gets at least the smallest positive code, never 0."""
    # The absmax as an integer maximum of the float32 bits of |x| (the order
    # of non-negative floats; NaN and inf above every finite value): an
    # integer reduction vectorises, a float max or sum chain does not
    # (no fastmath), and those ran at one element per 4 cycles.
    top = np.uint32(0)
    for i in range(buf.shape[0]):
        bits = float32_bits(np.float32(buf[i])) & np.uint32(0x7FFFFFFF)
        top = bits if bits > top else top
    if top >= np.uint32(0x7F800000):
        top = np.uint32(0x7FC00000)     # a NaN or infinite moment: the block is NaN
    amax32 = bits_float32(top)
    a[b] = amax32
    inv = np.float32(1) / amax32 if amax32 > 0 else np.float32(0)
    if amax32 != amax32:
        inv = amax32
    # no clamp needed: the table maps keys above 1 to code 255 (1.0) and
    # below -1 to code 0, and mids[255] is +inf
    for i in range(buf.shape[0]):
        x = np.float32(buf[i]) * inv
        k = lut[float32_bits(x) >> 16]
        k = k + (mids[k] < x)
        if positive and k == 0 and x > 0:
            k = 1
        q[i] = k


_store_block = _jit(_store_block_py, inline="always")


def step32_loop(param, grad, s1, s2, sc, algo, two, f0, f1, f2):
    """The same step with float state (parameters under ``min_8bit_size``)."""
    one = sc[N_SCALARS - 1]
    zero = one - one
    for i in range(param.shape[0]):
        p = param[i]
        g = grad[i]
        m = s1[i]
        v = s2[i] if two else zero
        if algo == 0:
            p, m, v, _ = _adam_element(p, g, m, v, v, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5],
                                       sc[6], sc[7], False, f0, f1, f2)
        elif algo == 1:
            p, m = _sgd_element(p, g, m, sc[0], sc[1], sc[2], sc[3], sc[4] != zero, f0, f1, True,
                                f2)
        elif algo == 2:
            p, m, _, _ = _rmsprop_element(p, g, m, m, m, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5],
                                          f0, f1, False, False)
        else:
            p, m = _adagrad_element(p, g, m, sc[0], sc[1], sc[2], f0, f1)
        param[i] = p
        s1[i] = m
        if two:
            s2[i] = v


step8_cpu = cpu_kernels(step8_loop)
step32_cpu = _jit(step32_loop)
