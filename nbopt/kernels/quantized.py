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
gradient and quantized state.

The optimizers call :data:`step8_group_cpu` once per (param group, dtype): it
reads a step table of the parameters' addresses and a chunk table cut on
block boundaries (:func:`group_chunks`), quantized and float-state parameters
in one call, serial below ``config.PARALLEL_THRESHOLD`` elements, parallel
above.  :func:`step8_loop` (one parameter) is the reference it is tested
against.  :data:`step8_cuda` is the same step as a CUDA kernel over a table of
device addresses (see its section below): the same element functions, the
same encoder, and the block absmax as an integer maximum of float32 bits, so
its results are the CPU kernels' bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import carray, prange

from ._common import CudaKernel, _jit, addr_to_ptr, bits_float32, cpu_kernels, float32_bits
from .adam import _adam_element, adam_update
from .adagrad import _adagrad_element, adagrad_update
from .rmsprop import _rmsprop_element, rmsprop_update
from .rmsprop import _sqrt as _rmsprop_sqrt
from .sgd import _sgd_element, sgd_update

__all__ = ["BLOCKSIZE", "create_dynamic_map", "quantize_blockwise", "dequantize_blockwise",
           "n_blocks", "ADAM", "MOMENTUM", "RMSPROP", "ADAGRAD", "group_chunks",
           "step8_group_cpu", "step8_cuda"]

#: Elements per quantization block (bitsandbytes' optimizers use 256).
BLOCKSIZE = 256
#: Blocks per unit of parallel work.
BLOCKS_PER_CHUNK = 64

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


def _step_blocks_py(param, grad, q1, a1, map1, mids1, lut1, q2, a2, map2, mids2, lut2, sc,
                    algo, two, f0, f1, f2, pos1, pos2, blocksize, b_lo, b_hi):
    """Blocks ``b_lo`` to ``b_hi`` of one parameter whose state is quantized:
    ``param`` and ``grad`` flat, ``q1``/``a1`` (and ``q2``/``a2`` when
    ``two``) its codes and block absmax, ``sc`` the scalar row in the
    parameter dtype; ``f0..f2`` the algorithm's flags (see the API classes'
    ``_flags``).  One unit of work of every CPU step kernel.

    Per block: decode into two block buffers (a gather), run the algorithm's
    element function over parameter, gradient and buffers (indexed from 0,
    one loop per algorithm: LLVM vectorises them), take the new absmax, encode."""
    n = param.shape[0]
    one = sc[N_SCALARS - 1]
    zero = one - one
    buf1 = np.empty(blocksize, param.dtype)
    buf2 = np.empty(blocksize, param.dtype)
    for b in range(b_lo, b_hi):
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


def step8_loop(param, grad, q1, a1, map1, mids1, lut1, q2, a2, map2, mids2, lut2, sc,
               algo, two, f0, f1, f2, pos1, pos2, blocksize):
    """One step of one parameter whose state is quantized (arguments as
    :func:`_step_blocks_py`'s), in chunks of ``BLOCKS_PER_CHUNK`` blocks.
    The optimizers step a whole group with :func:`step8_group_loop`; this
    per-parameter form is the reference it is tested against."""
    nb = a1.shape[0]
    n_chunks = (nb + BLOCKS_PER_CHUNK - 1) // BLOCKS_PER_CHUNK
    for c in prange(n_chunks):
        _step_blocks(param, grad, q1, a1, map1, mids1, lut1, q2, a2, map2, mids2, lut2, sc,
                     algo, two, f0, f1, f2, pos1, pos2, blocksize, c * BLOCKS_PER_CHUNK,
                     min(nb, (c + 1) * BLOCKS_PER_CHUNK))


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


_step_blocks = _jit(_step_blocks_py)
step8_cpu = cpu_kernels(step8_loop)
step32_cpu = _jit(step32_loop)


# --------------------------------------------------------------------------
# One call per (param group, dtype): a step table.
#
# Row r of an int64 table describes one parameter: the addresses of its
# parameter, gradient and state arrays (0 where it has none), its size, the
# row of the scalar table its step count selects, and whether its state is
# quantized.  A chunk table ``(row, lo, hi)`` cuts the work: blocks ``lo`` to
# ``hi`` of a quantized parameter (so that one thread encodes each block of
# 256), elements ``lo`` to ``hi`` of a float-state one.

COL_PARAM, COL_GRAD, COL_S1, COL_A1, COL_S2, COL_A2, COL_N, COL_ROW, COL_QUANT = range(9)
TABLE_COLUMNS = 9


def group_chunks(table: np.ndarray, blocks_per_chunk: int, elements_per_chunk: int):
    """The chunk table of step table ``table``: quantized rows cut into
    chunks of ``blocks_per_chunk`` blocks, float rows into chunks of
    ``elements_per_chunk`` elements (an empty parameter has none)."""
    n = table[:, COL_N]
    quant = table[:, COL_QUANT] != 0
    units = np.where(quant, (n + BLOCKSIZE - 1) // BLOCKSIZE, n)
    per = np.where(quant, int(blocks_per_chunk), int(elements_per_chunk))
    counts = -(-units // per)
    rows = np.repeat(np.arange(len(table), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    k = np.arange(len(rows), dtype=np.int64) - np.repeat(first, counts)
    chunks = np.empty((len(rows), 3), np.int64)
    chunks[:, 0] = rows
    chunks[:, 1] = k * per[rows]
    chunks[:, 2] = np.minimum(chunks[:, 1] + per[rows], units[rows])
    return chunks


def step8_group_loop(table, chunks, scalars, like, map1, mids1, lut1, map2, mids2, lut2,
                     algo, two, f0, f1, f2, pos1, pos2, blocksize):
    """One step of the parameters of step table ``table`` (one param group,
    one dtype: ``like``'s), quantized and float-state ones alike, over the
    chunks of ``chunks``; ``scalars`` holds one scalar row per step count.
    Each chunk runs exactly what :func:`step8_loop` (the per-parameter
    kernel) and :func:`step32_loop` run on it: bit for bit their result."""
    for c in prange(chunks.shape[0]):
        r = chunks[c, 0]
        lo = chunks[c, 1]
        hi = chunks[c, 2]
        n = table[r, COL_N]
        n2 = n if two else 0
        param = carray(addr_to_ptr(table[r, COL_PARAM], like), n)
        grad = carray(addr_to_ptr(table[r, COL_GRAD], like), n)
        sc = scalars[table[r, COL_ROW]]
        if table[r, COL_QUANT] != 0:
            nb = (n + blocksize - 1) // blocksize
            q1 = carray(addr_to_ptr(table[r, COL_S1], lut1), n)
            a1 = carray(addr_to_ptr(table[r, COL_A1], map1), nb)
            q2 = carray(addr_to_ptr(table[r, COL_S2], lut1), n2)
            a2 = carray(addr_to_ptr(table[r, COL_A2], map1), nb if two else 0)
            _step_blocks(param, grad, q1, a1, map1, mids1, lut1, q2, a2, map2, mids2, lut2, sc,
                         algo, two, f0, f1, f2, pos1, pos2, blocksize, lo, hi)
        else:
            s1 = carray(addr_to_ptr(table[r, COL_S1], like), n)
            s2 = carray(addr_to_ptr(table[r, COL_S2], like), n2)
            step32_cpu(param[lo:hi], grad[lo:hi], s1[lo:hi], s2[min(lo, n2):min(hi, n2)], sc,
                       algo, two, f0, f1, f2)


step8_group_cpu = cpu_kernels(step8_group_loop)


def _next_steps(addresses, out):
    """The next count of each float32 step count at ``addresses``, as
    doubles, into ``out`` (torch's float32 ``step += 1``: exact below 2**24,
    rounded to float32 above), changing nothing: the host loop of a steady
    step, which writes them with :func:`_write_steps` once nothing can fail."""
    like = np.empty(0, np.float32)
    for i in range(addresses.shape[0]):
        step = carray(addr_to_ptr(addresses[i], like), 1)
        t = np.float64(step[0]) + 1.0
        if t > 16777216.0:
            t = np.float64(np.float32(t))
        out[i] = t


def _write_steps(addresses, counts):
    like = np.empty(0, np.float32)
    for i in range(addresses.shape[0]):
        carray(addr_to_ptr(addresses[i], like), 1)[0] = np.float32(counts[i])


next_steps = _jit(_next_steps)
write_steps = _jit(_write_steps)


# --------------------------------------------------------------------------
# CUDA: the same step on device parameters (nbopt.optim._optim8bit_cuda), one
# launch per (param group, device, dtype) over a step table of device
# addresses.  A CUDA block takes a chunk of quantization blocks and works on
# one block of 256 at a time, its threads striding over the block's elements:
# each decodes its elements, runs the same element function as the CPU
# kernel, writes the parameter and keeps the new moments, rounded to float32
# (all that the encoder reads, on the CPU too), in shared memory; a
# shared-memory maximum over the threads' float32 bit patterns gives the
# block's absmax (an integer maximum: exact, whatever the order, so the
# absmax is the CPU kernel's bit for bit); then each thread encodes its
# elements with the CPU's nearest-code rule and tables.

cuda = device_ptr = device_carray = f32_bits = bits_f32 = None   # bound at CUDA compile

#: Most threads a CUDA block of the step kernel may have.
MAX_CUDA_THREADS = BLOCKSIZE


def _cuda_update(p, g, m, v, scalars, k, algo, f0, f1, f2, zero):
    """One element of the algorithm ``algo`` (the element functions of the
    CPU kernels), scalars from row ``k``: returns ``(p, m, v)``."""
    if algo == 0:
        p, m, v, _ = adam_update(p, g, m, v, v, scalars[k, 0], scalars[k, 1], scalars[k, 2],
                                 scalars[k, 3], scalars[k, 4], scalars[k, 5], scalars[k, 6],
                                 scalars[k, 7], False, f0, f1, f2)
    elif algo == 1:
        p, m = sgd_update(p, g, m, scalars[k, 0], scalars[k, 1], scalars[k, 2], scalars[k, 3],
                          scalars[k, 4] != zero, f0, f1, True, f2)
    elif algo == 2:
        p, m, _, _ = rmsprop_update(p, g, m, m, m, scalars[k, 0], scalars[k, 1], scalars[k, 2],
                                    scalars[k, 3], scalars[k, 4], scalars[k, 5], f0, f1, False,
                                    False)
    else:
        p, m = adagrad_update(p, g, m, scalars[k, 0], scalars[k, 1], scalars[k, 2], f0, f1)
    return p, m, v


def _cuda_absmax(top):
    """``(absmax, 1 / absmax)`` of a block whose largest ``|x|`` has the
    float32 bits ``top`` (:func:`_store_block_py`'s rule: NaN for a NaN or
    infinite moment, inverse 0 for a block of zeros)."""
    if top >= np.uint32(0x7F800000):
        top = np.uint32(0x7FC00000)
    amax = bits_f32(top)
    inv = np.float32(1) / amax if amax > np.float32(0) else np.float32(0)
    if amax != amax:
        inv = amax
    return amax, inv


def _cuda_encode(x, mids, lut, positive):
    """The code of float32 ``x`` (scaled by the block's inverse absmax):
    :func:`_store_block_py`'s table lookup and comparison."""
    k = lut[f32_bits(x) >> np.uint32(16)]
    k = k + (mids[k] < x)
    if positive and k == 0 and x > np.float32(0):
        k = 1
    return k


def step8_cuda_loop(table, chunks, scalars, like, map1, mids1, lut1, map2, mids2, lut2,
                    algo, two, f0, f1, f2, pos1, pos2, blocksize):
    """:func:`step8_group_loop` as a CUDA kernel (see above); blocks stride
    over the chunks, ``blocksize`` at most :data:`BLOCKSIZE`, at most
    :data:`MAX_CUDA_THREADS` threads per block."""
    sh1 = cuda.shared.array(BLOCKSIZE, np.float32)
    sh2 = cuda.shared.array(BLOCKSIZE, np.float32)
    red1 = cuda.shared.array(MAX_CUDA_THREADS, np.uint32)
    red2 = cuda.shared.array(MAX_CUDA_THREADS, np.uint32)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        r = chunks[c, 0]
        lo = chunks[c, 1]
        hi = chunks[c, 2]
        n = table[r, COL_N]
        k = table[r, COL_ROW]
        n2 = n if two else 0
        param = device_carray(device_ptr(table[r, COL_PARAM], like), n)
        grad = device_carray(device_ptr(table[r, COL_GRAD], like), n)
        one = scalars[k, N_SCALARS - 1]
        zero = one - one
        if table[r, COL_QUANT] != 0:
            nb = (n + blocksize - 1) // blocksize
            q1 = device_carray(device_ptr(table[r, COL_S1], lut1), n)
            a1 = device_carray(device_ptr(table[r, COL_A1], map1), nb)
            q2 = device_carray(device_ptr(table[r, COL_S2], lut1), n2)
            a2 = device_carray(device_ptr(table[r, COL_A2], map1), nb if two else 0)
            for b in range(lo, hi):
                start = b * blocksize
                m = min(n, start + blocksize) - start
                am1 = a1[b] * one
                am2 = a2[b] * one if two else zero
                top1 = np.uint32(0)
                top2 = np.uint32(0)
                for i in range(t, m, nt):
                    j = start + i
                    v2 = map2[q2[j]] * am2 if two else zero
                    p, v1, v2 = _cuda_update(param[j], grad[j], map1[q1[j]] * am1, v2, scalars,
                                             k, algo, f0, f1, f2, zero)
                    param[j] = p
                    x1 = np.float32(v1)
                    sh1[i] = x1
                    bits = f32_bits(x1) & np.uint32(0x7FFFFFFF)
                    top1 = bits if bits > top1 else top1
                    if two:
                        x2 = np.float32(v2)
                        sh2[i] = x2
                        bits = f32_bits(x2) & np.uint32(0x7FFFFFFF)
                        top2 = bits if bits > top2 else top2
                # the block's absmax: a maximum over the threads (any count)
                red1[t] = top1
                red2[t] = top2
                cuda.syncthreads()
                s = 1
                while s < nt:
                    if t % (2 * s) == 0 and t + s < nt:
                        if red1[t + s] > red1[t]:
                            red1[t] = red1[t + s]
                        if red2[t + s] > red2[t]:
                            red2[t] = red2[t + s]
                    cuda.syncthreads()
                    s *= 2
                amax1, inv1 = _cuda_absmax(red1[0])
                amax2, inv2 = _cuda_absmax(red2[0])
                for i in range(t, m, nt):
                    j = start + i
                    q1[j] = _cuda_encode(sh1[i] * inv1, mids1, lut1, pos1)
                    if two:
                        q2[j] = _cuda_encode(sh2[i] * inv2, mids2, lut2, pos2)
                if t == 0:
                    a1[b] = amax1
                    if two:
                        a2[b] = amax2
                cuda.syncthreads()      # the next block rewrites the shared arrays
        else:
            s1 = device_carray(device_ptr(table[r, COL_S1], like), n)
            s2 = device_carray(device_ptr(table[r, COL_S2], like), n2)
            for i in range(lo + t, hi, nt):
                v = s2[i] if two else zero
                param[i], s1[i], v = _cuda_update(param[i], grad[i], s1[i], v, scalars, k, algo,
                                                  f0, f1, f2, zero)
                if two:
                    s2[i] = v


class _QuantizedCudaKernel(CudaKernel):
    """The step kernel (see :class:`nbopt.kernels._common.CudaKernel`), which
    also binds the device bitcasts of the encoder."""

    def get(self):
        if self._compiled is None:
            from . import _cuda

            globals().update(f32_bits=_cuda.f32_bits, bits_f32=_cuda.bits_f32)
        return super().get()


step8_cuda = _QuantizedCudaKernel(step8_cuda_loop, adam_update, sgd_update, rmsprop_update,
                                  _rmsprop_sqrt, adagrad_update, _cuda_update, _cuda_absmax,
                                  _cuda_encode)
