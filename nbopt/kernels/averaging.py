r"""Weight averaging for :mod:`nbopt.swa_utils`: maths, CPU loops, host driver.

Two in-place updates of an averaged array ``avg`` towards a model array ``cur``,
each rounded as torch 2.13 rounds it on the CPU (verified bit for bit on
float32, float64, complex64 and complex128, vectorised bodies and tails):

``swa`` -- the default of ``AveragedModel.update_parameters`` on the CPU,
    which is ``get_swa_avg_fn()`` applied tensor by tensor::

        avg = avg + (cur - avg) / (n + 1)          three roundings, a true division

    For complex arrays torch divides by the complex number ``(n + 1) + 0j``,
    which c10's complex division computes as a multiplication by the real
    reciprocal ``r = 1 / (n + 1)``: ``avg = avg + (cur - avg) * r``.

``lerp`` -- ``torch._foreach_lerp_(avg, cur, w)``, behind
    ``get_swa_multi_avg_fn`` (``w = 1 / (n + 1)``) and ``get_ema_multi_avg_fn``
    (``w = 1 - decay``)::

        |w| < 0.5:  avg = fma(w, cur - avg, avg)
        otherwise:  avg = fma(w - 1, cur - avg, cur)

    Complex arrays: the same two forms with separate roundings (c10's complex
    lerp has no fused multiply-add).

Complex arrays run through their real view (real and imaginary parts are
independent coordinates under both updates).

One kernel call covers every array pair of one dtype: the host builds a table
of data pointers (``avg`` address, ``cur`` address, element count) as the
optimizer engine does (``DESIGN.md`` section 3), merging pairs that are
adjacent in memory on both sides, so an arena-allocated model is one segment.
Below :data:`nbopt.config.PARALLEL_THRESHOLD` elements the serial kernel runs;
above it the ``parallel=True`` one over chunks of
:data:`nbopt.config.CHUNK_SIZE` elements.
"""
from __future__ import annotations

import operator

import numpy as np
from numba import njit, prange

from .. import config
from ..parameter import is_device_array
from ._common import chunk_views, cpu_kernels, cuda_kernel, lerp

__all__ = ["swa_cpu", "lerp_cpu", "average_", "KINDS", "DTYPES"]

KINDS = ("swa", "lerp")
#: the dtypes the kernels handle (complex ones through their real view)
DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))


cuda = device_ptr = device_carray = None   # bound when a CUDA kernel compiles (cuda_kernel)


def swa_update(a, c, np1, recip, cplx):
    """One element of the ``swa`` update; ``recip`` is ``1 / np1`` in the
    dtype (complex arrays multiply by it, as c10's complex division does)."""
    if cplx:
        return a + (c - a) * recip
    return a + (c - a) / np1


def lerp_update(a, c, w, omw, cplx, small):
    """One element of the ``lerp`` update: ``omw`` is ``1 - w`` and ``small``
    ``|w| < 0.5``, both from the host, so that no Python literal enters a
    float32 loop."""
    if cplx:
        if small:
            return a + w * (c - a)
        return c - (c - a) * omw
    return lerp(a, c, w)


_swa_element = njit(error_model="numpy")(swa_update)
_lerp_element = njit(error_model="numpy")(lerp_update)


def swa_segments(segments, chunks, scalars, cplx):
    for c in prange(chunks.shape[0]):
        s, avg, cur, lo, hi = chunk_views(segments, chunks, c, scalars, 2)
        np1, recip = scalars[0], scalars[1]
        # One loop per branch: a branch inside the loop blocks vectorisation.
        if cplx:
            for i in range(hi - lo):
                avg[i] = _swa_element(avg[i], cur[i], np1, recip, True)
        else:
            for i in range(hi - lo):
                avg[i] = _swa_element(avg[i], cur[i], np1, recip, False)


def lerp_segments(segments, chunks, scalars, cplx, small):
    for c in prange(chunks.shape[0]):
        s, avg, cur, lo, hi = chunk_views(segments, chunks, c, scalars, 2)
        w, omw = scalars[0], scalars[1]
        if cplx:
            if small:
                for i in range(hi - lo):
                    avg[i] = _lerp_element(avg[i], cur[i], w, omw, True, True)
            else:
                for i in range(hi - lo):
                    avg[i] = _lerp_element(avg[i], cur[i], w, omw, True, False)
        else:
            for i in range(hi - lo):
                avg[i] = _lerp_element(avg[i], cur[i], w, omw, False, False)


swa_cpu = cpu_kernels(swa_segments)
lerp_cpu = cpu_kernels(lerp_segments)


def _cuda_pairs(segments, chunks, c, scalars):
    """Chunk ``c``'s averaged and current arrays (device segment table:
    ``avg`` address, ``cur`` address, element count)."""
    s = chunks[c, 0]
    n = segments[s, 2]
    avg = device_carray(device_ptr(segments[s, 0], scalars), n)
    cur = device_carray(device_ptr(segments[s, 1], scalars), n)
    return avg, cur


def swa_cuda_segments(segments, chunks, scalars, cplx):
    # the CPU loop's body as a grid-stride kernel (see nbopt.kernels._cuda)
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        avg, cur = _cuda_pairs(segments, chunks, c, scalars)
        np1, recip = scalars[0], scalars[1]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            avg[i] = swa_update(avg[i], cur[i], np1, recip, cplx)


def lerp_cuda_segments(segments, chunks, scalars, cplx, small):
    for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        avg, cur = _cuda_pairs(segments, chunks, c, scalars)
        w, omw = scalars[0], scalars[1]
        for i in range(chunks[c, 1] + cuda.threadIdx.x, chunks[c, 2], cuda.blockDim.x):
            avg[i] = lerp_update(avg[i], cur[i], w, omw, cplx, small)


swa_cuda = cuda_kernel(swa_cuda_segments, swa_update, _cuda_pairs)
lerp_cuda = cuda_kernel(lerp_cuda_segments, lerp_update, _cuda_pairs)

_KERNELS = {"swa": swa_cpu, "lerp": lerp_cpu}


# --------------------------------------------------------------------------
# Host side

def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _fortran_only(a: np.ndarray) -> bool:
    return a.flags.f_contiguous and not a.flags.c_contiguous


def _kernel_ready(avg: np.ndarray) -> bool:
    """Whether the kernel can write ``avg`` through its data pointer."""
    return (avg.flags.c_contiguous or avg.flags.f_contiguous) and avg.flags.writeable


def _matching(avg: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """``cur`` with ``avg``'s shape and memory order (a copy only when needed):
    element k of the result's memory is element k of ``avg``'s memory."""
    if cur.shape != avg.shape:
        cur = np.broadcast_to(cur, avg.shape)
    if avg.ndim <= 1 or avg.size <= 1:
        ok = cur.flags.c_contiguous or cur.flags.f_contiguous
    elif _fortran_only(avg):
        ok = cur.flags.f_contiguous
    else:
        ok = cur.flags.c_contiguous
    if ok:
        return cur
    return np.asfortranarray(cur) if _fortran_only(avg) else np.ascontiguousarray(cur)


def _scalars(kind: str, value: float, dtype: np.dtype) -> np.ndarray:
    """The kernel's scalar row, in the (real) kernel dtype.

    ``swa``: ``value`` is ``n + 1``; row ``(n + 1, 1 / (n + 1))``, the
    reciprocal computed in the dtype as c10's complex division does.
    ``lerp``: ``value`` is the weight (already the double torch passes);
    row ``(w, 1 - w)``.
    """
    t = dtype.type
    if kind == "swa":
        np1 = t(value)
        return np.array([np1, t(1) / np1], dtype)
    w = t(value)
    return np.array([w, t(1) - w], dtype)


def _chunks(lengths: np.ndarray, chunk: int) -> np.ndarray:
    per_seg = np.maximum(1, -(-lengths // chunk))
    seg_index = np.repeat(np.arange(len(lengths)), per_seg)
    first = np.cumsum(per_seg) - per_seg
    k = np.arange(len(seg_index)) - np.repeat(first, per_seg)
    out = np.empty((len(seg_index), 3), np.int64)
    out[:, 0] = seg_index
    out[:, 1] = k * chunk
    out[:, 2] = np.minimum((k + 1) * chunk, lengths[seg_index])
    return out


class _Table:
    """The kernel arguments for one list of array pairs of one dtype: the
    segment table (``avg`` address, ``cur`` address, element count) and the
    chunk tables.  Reusable while the caller passes the same array objects
    and no stand-in copy was needed: a training loop pays for the addresses
    once (0.8 us per array) and then only for an identity check."""

    __slots__ = ("avg_list", "cur_list", "seg", "total", "cplx", "real", "reusable", "keep",
                 "write_back", "_chunks", "_knobs")

    def __init__(self, avg_list, cur_list):
        self.avg_list = list(avg_list)
        self.cur_list = list(cur_list)
        dtype = np.dtype(self.avg_list[0].dtype)
        self.cplx = dtype.kind == "c"
        self.real = np.empty(0, dtype).real.dtype
        self.keep = []          # copies that must outlive the kernel call
        self.write_back = []    # (user array, contiguous stand-in) for non-contiguous avg
        pairs = []
        for avg, cur in zip(self.avg_list, self.cur_list):
            if avg.size == 0:
                continue
            if not _kernel_ready(avg):
                stand_in = np.ascontiguousarray(avg)
                self.write_back.append((avg, stand_in))
                avg = stand_in
            matched = _matching(avg, cur)
            if matched is not avg and np.may_share_memory(matched, avg) and \
                    _address(matched) != _address(avg):
                # partial overlap would feed updated values back in
                matched = matched.copy(order="K")
            if matched is not cur:
                self.keep.append(matched)
            pairs.append((avg, matched))
        self.reusable = not self.keep and not self.write_back
        n = len(pairs)
        width = 2 if self.cplx else 1
        avg_addr = np.fromiter((_address(a) for a, _ in pairs), np.int64, n)
        cur_addr = np.fromiter((_address(c) for _, c in pairs), np.int64, n)
        sizes = np.fromiter((a.size for a, _ in pairs), np.int64, n) * width
        nbytes = sizes * self.real.itemsize
        if n <= 1:
            starts = np.zeros(n, np.int64)
        else:
            brk = ((avg_addr[1:] != avg_addr[:-1] + nbytes[:-1])
                   | (cur_addr[1:] != cur_addr[:-1] + nbytes[:-1]))
            starts = np.flatnonzero(np.concatenate(([True], brk)))
        self.seg = np.empty((len(starts), 3), np.int64)
        if n:
            self.seg[:, 0] = avg_addr[starts]
            self.seg[:, 1] = cur_addr[starts]
            self.seg[:, 2] = np.add.reduceat(sizes, starts)
        self.total = int(self.seg[:, 2].sum())
        self._chunks = None
        self._knobs = None

    def matches(self, avg_list, cur_list) -> bool:
        return (self.reusable and len(avg_list) == len(self.avg_list)
                and len(cur_list) == len(self.cur_list)
                and all(map(operator.is_, avg_list, self.avg_list))
                and all(map(operator.is_, cur_list, self.cur_list)))

    def run(self, kind: str, value: float) -> None:
        if len(self.seg):
            scalars = _scalars(kind, value, self.real)
            flags = (self.cplx,) if kind == "swa" else (self.cplx, bool(abs(scalars[0]) < 0.5))
            serial, parallel = _KERNELS[kind]
            parallel_run = config.runs_parallel(self.total)
            knobs = (parallel_run, config.CHUNK_SIZE)
            if self._knobs != knobs:
                if parallel_run:
                    self._chunks = _chunks(self.seg[:, 2], knobs[1])
                else:
                    self._chunks = np.zeros((len(self.seg), 3), np.int64)
                    self._chunks[:, 0] = np.arange(len(self.seg))
                    self._chunks[:, 2] = self.seg[:, 2]
                self._knobs = knobs
            kernel = parallel if parallel_run else serial
            kernel(self.seg, self._chunks, scalars, *flags)
        for avg, stand_in in self.write_back:
            avg[...] = stand_in


class _DeviceTable:
    """:class:`_Table` for GPU arrays (:class:`nbopt.DeviceParameter` and any
    ``__cuda_array_interface__`` array on one device): the segment and chunk
    tables uploaded once, one CUDA launch per call.  Every ``cur`` must have
    its ``avg``'s shape, dtype and memory order (no stand-in copies on the
    device)."""

    __slots__ = ("avg_list", "cur_list", "cplx", "real", "d_seg", "d_chunks", "d_scalars",
                 "shape", "n_seg")
    reusable = True

    def __init__(self, avg_list, cur_list):
        from . import _cuda as cu
        from numba import cuda as numba_cuda

        self.avg_list, self.cur_list = list(avg_list), list(cur_list)
        dtype = np.dtype(self.avg_list[0].dtype)
        self.cplx = dtype.kind == "c"
        self.real = np.empty(0, dtype).real.dtype
        width = 2 if self.cplx else 1
        rows = []
        for k, (avg, cur) in enumerate(zip(self.avg_list, self.cur_list)):
            a_shape, a_dtype, a_addr, a_c, a_f = cu.describe(avg)
            c_shape, c_dtype, c_addr, c_c, c_f = cu.describe(cur)
            size = int(np.prod(a_shape)) if a_shape else 1
            order_ok = (c_c if a_c else c_f) or size <= 1
            if (not (a_c or a_f) or c_shape != a_shape or c_dtype != a_dtype or not order_ok
                    or cu.device_of_address(a_addr) != cu.device_of_address(c_addr)):
                raise RuntimeError(
                    f"averaging CUDA arrays: pair {k} must be two contiguous arrays on one "
                    f"device with the same shape, dtype and memory order, got {a_shape} "
                    f"{a_dtype} and {c_shape} {c_dtype}")
            if size:
                rows.append((a_addr, c_addr, size * width))
        seg = np.array(rows, np.int64).reshape(-1, 3)
        self.n_seg = len(seg)
        if self.n_seg:
            chunks = _chunks(seg[:, 2], config.CUDA_CHUNK_SIZE)
            self.d_seg, self.d_chunks = numba_cuda.to_device(seg), numba_cuda.to_device(chunks)
            self.d_scalars = numba_cuda.device_array(2, self.real)
            self.shape = cu.launch_shape(len(chunks))

    def matches(self, avg_list, cur_list) -> bool:
        return (len(avg_list) == len(self.avg_list) and len(cur_list) == len(self.cur_list)
                and all(map(operator.is_, avg_list, self.avg_list))
                and all(map(operator.is_, cur_list, self.cur_list)))

    def run(self, kind: str, value: float) -> None:
        if not self.n_seg:
            return
        scalars = _scalars(kind, value, self.real)
        self.d_scalars.copy_to_device(scalars)
        blocks, threads = self.shape
        if kind == "swa":
            swa_cuda(blocks, threads, self.d_seg, self.d_chunks, self.d_scalars, self.cplx)
        else:
            lerp_cuda(blocks, threads, self.d_seg, self.d_chunks, self.d_scalars, self.cplx,
                      bool(abs(scalars[0]) < 0.5))


def average_(kind: str, avg_list, cur_list, value: float, cache: dict | None = None) -> None:
    """Update every ``avg_list[k]`` in place towards ``cur_list[k]``.

    Parameters
    ----------
    kind : {"swa", "lerp"}
        The update (see the module docstring).
    avg_list, cur_list : sequence of ndarray
        Pairs of arrays; all ``avg`` arrays share one float or complex dtype,
        each ``cur`` has its ``avg``'s dtype and a shape that broadcasts to
        its ``avg``'s shape (the caller validates both).
    value : float
        ``n + 1`` for ``swa``, the weight for ``lerp`` (a Python double: it is
        rounded to the dtype here, as torch rounds a scalar argument).
    cache : dict, optional
        Keeps the pointer table of each dtype between calls (keyed by dtype);
        it is reused when the same array objects come back.  The caller must
        not share it between copies of its arrays (a deep copy of the owner
        starts with an empty cache).

    Notes
    -----
    GPU arrays (``avg_list`` of :class:`nbopt.DeviceParameter` or any
    ``__cuda_array_interface__`` arrays) are averaged on their device by the
    same element functions compiled as CUDA kernels, one launch per call.
    Arrays that the kernel cannot reach through a plain data pointer (a
    non-contiguous ``avg``, a ``cur`` in another memory order or broadcast)
    go through contiguous copies; the common case copies nothing.
    """
    if kind not in _KERNELS:
        raise ValueError(f"unknown averaging kind {kind!r}; expected one of {KINDS}")
    if not len(avg_list):
        return
    key = np.dtype(avg_list[0].dtype)
    if key not in DTYPES:
        raise TypeError(f"the averaging kernels take {sorted(str(d) for d in DTYPES)} arrays, "
                        f"got {key}")
    kind_of_table = _Table
    if is_device_array(avg_list[0]):
        kind_of_table = _DeviceTable
        key = (key, "cuda")
    table = cache.get(key) if cache is not None else None
    if table is None or not table.matches(avg_list, cur_list):
        table = kind_of_table(avg_list, cur_list)
        if cache is not None:
            if table.reusable:
                cache[key] = table
            else:
                cache.pop(key, None)
    table.run(kind, value)
