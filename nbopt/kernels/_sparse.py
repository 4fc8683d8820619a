"""Compiled helpers for sparse (COO) gradients.

* :func:`coalesce`: torch's ``coalesce()`` on CPU, bit for bit.  torch sorts
  the flattened indices with ``Tensor.sort`` and then adds the values of equal
  indices one after the other in sorted order (``cpublas::axpy``), so the
  order in which duplicates are summed -- which changes float results when a
  row appears three times or more -- is the order that sort leaves them in.
  Below ``GRAIN_SIZE`` (32768) entries that sort is ``std::sort`` (libstdc++'s
  introsort, not stable); from there on it is FBGEMM's radix sort (stable).
  :func:`_std_sort` replays libstdc++'s introsort step by step, so duplicates
  end up, and are summed, in exactly torch's order.
* :func:`row_layout`: where each entry of a gradient lives in the memory of a
  C- or F-contiguous parameter (and of state arrays laid out like it).
* :func:`scatter_add`: torch's ``dense.add_(sparse, alpha)``, which does not
  coalesce first and rounds ``alpha * v + p`` once (``cpublas::axpy``) except
  in its scalar loop for one entry without dense dimensions
  (:func:`add_is_fused`).
* :func:`sgd_sparse`: SGD's handler for sparse gradients (registry field
  ``AlgorithmSpec.sparse``).
* GPU parameters (:class:`nbopt.parameter.DeviceSparseGrad` gradients): the
  plans above are made on the host from the host copy of the indices, and
  ``*_cuda`` kernels next to the CPU loops apply them on the device with the
  same per-element functions (:mod:`nbopt.kernels._sparse_cuda` holds the
  uploads and launches).

Numba's on-disk cache keys a kernel on its own source file only; see
:mod:`nbopt.kernels._common`.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from numba import njit

from .. import config
from ..parameter import DeviceParameter
from ..registry import DENSIFY
from ._common import _jit, cpu_kernels, cuda_kernel, fma, to_scalar

__all__ = ["coalesce", "needs_sort", "flatten_indices", "row_layout", "memory_view",
           "add_is_fused", "scatter_add", "scatter_add_cuda", "sgd_sparse", "RADIX_SORT_MIN"]

cuda = device_chunk = None   # bound when a CUDA kernel compiles (cuda_kernel)

# at::internal::GRAIN_SIZE: from here on torch's CPU sort of int64 keys is
# FBGEMM's radix sort (stable) instead of std::sort
RADIX_SORT_MIN = 32768
_S_THRESHOLD = 16        # libstdc++'s _S_threshold


# ---------------------------------------------------------------------------
# libstdc++ std::sort on (key, position) pairs compared by key only, as torch
# sorts through its CompositeRandomAccessor.  Names follow bits/stl_algo.h and
# bits/stl_heap.h; every helper moves keys and positions together.

@_jit
def _swap(keys, perm, a, b):
    k = keys[a]
    keys[a] = keys[b]
    keys[b] = k
    q = perm[a]
    perm[a] = perm[b]
    perm[b] = q


@_jit
def _move_median_to_first(keys, perm, result, a, b, c):
    if keys[a] < keys[b]:
        if keys[b] < keys[c]:
            _swap(keys, perm, result, b)
        elif keys[a] < keys[c]:
            _swap(keys, perm, result, c)
        else:
            _swap(keys, perm, result, a)
    elif keys[a] < keys[c]:
        _swap(keys, perm, result, a)
    elif keys[b] < keys[c]:
        _swap(keys, perm, result, c)
    else:
        _swap(keys, perm, result, b)


@_jit
def _unguarded_partition(keys, perm, first, last, pivot):
    while True:
        while keys[first] < keys[pivot]:
            first += 1
        last -= 1
        while keys[pivot] < keys[last]:
            last -= 1
        if not first < last:
            return first
        _swap(keys, perm, first, last)
        first += 1


@_jit
def _push_heap(keys, perm, first, hole, top, vk, vp):
    parent = (hole - 1) // 2
    while hole > top and keys[first + parent] < vk:
        keys[first + hole] = keys[first + parent]
        perm[first + hole] = perm[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    keys[first + hole] = vk
    perm[first + hole] = vp


@_jit
def _adjust_heap(keys, perm, first, hole, length, vk, vp):
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if keys[first + child] < keys[first + child - 1]:
            child -= 1
        keys[first + hole] = keys[first + child]
        perm[first + hole] = perm[first + child]
        hole = child
    if (length & 1) == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        keys[first + hole] = keys[first + child - 1]
        perm[first + hole] = perm[first + child - 1]
        hole = child - 1
    _push_heap(keys, perm, first, hole, top, vk, vp)


@_jit
def _heap_sort(keys, perm, first, last):
    """std::__partial_sort(first, last, last): make_heap, then sort_heap."""
    length = last - first
    if length >= 2:
        parent = (length - 2) // 2
        while True:
            _adjust_heap(keys, perm, first, parent, length, keys[first + parent],
                         perm[first + parent])
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        vk = keys[last]
        vp = perm[last]
        keys[last] = keys[first]
        perm[last] = perm[first]
        _adjust_heap(keys, perm, first, 0, last - first, vk, vp)


@_jit
def _unguarded_linear_insert(keys, perm, last):
    vk = keys[last]
    vp = perm[last]
    nxt = last - 1
    while vk < keys[nxt]:
        keys[last] = keys[nxt]
        perm[last] = perm[nxt]
        last = nxt
        nxt -= 1
    keys[last] = vk
    perm[last] = vp


@_jit
def _insertion_sort(keys, perm, first, last):
    if first == last:
        return
    for i in range(first + 1, last):
        if keys[i] < keys[first]:
            vk = keys[i]
            vp = perm[i]
            for j in range(i, first, -1):
                keys[j] = keys[j - 1]
                perm[j] = perm[j - 1]
            keys[first] = vk
            perm[first] = vp
        else:
            _unguarded_linear_insert(keys, perm, i)


@_jit
def _std_sort(keys, perm):
    """Sort ``keys`` in place, carrying ``perm`` along, exactly as libstdc++'s
    ``std::sort`` orders (key, position) pairs compared by key."""
    n = keys.shape[0]
    if n < 2:
        return
    lg = 0
    while (n >> (lg + 1)) > 0:
        lg += 1
    depth0 = 2 * lg
    # __introsort_loop recurses into the right part and loops on the left one;
    # the parts are disjoint, so an explicit stack visits the same partitions.
    cap = (depth0 + 1) * (depth0 + 2) // 2 + 1
    s_first = np.empty(cap, np.int64)
    s_last = np.empty(cap, np.int64)
    s_depth = np.empty(cap, np.int64)
    top = 0
    s_first[0] = 0
    s_last[0] = n
    s_depth[0] = depth0
    top = 1
    while top > 0:
        top -= 1
        first = s_first[top]
        last = s_last[top]
        depth = s_depth[top]
        while last - first > _S_THRESHOLD:
            if depth == 0:
                _heap_sort(keys, perm, first, last)
                break
            depth -= 1
            mid = first + (last - first) // 2
            _move_median_to_first(keys, perm, first, first + 1, mid, last - 1)
            cut = _unguarded_partition(keys, perm, first + 1, last, first)
            s_first[top] = cut
            s_last[top] = last
            s_depth[top] = depth
            top += 1
            last = cut
    # __final_insertion_sort
    if n > _S_THRESHOLD:
        _insertion_sort(keys, perm, 0, _S_THRESHOLD)
        for i in range(_S_THRESHOLD, n):
            _unguarded_linear_insert(keys, perm, i)
    else:
        _insertion_sort(keys, perm, 0, n)


def _sum_runs(values, perm, starts, out):
    """``out[r] = values[perm[starts[r]]] + values[perm[starts[r] + 1]] + ...``,
    left to right, as torch's coalesce accumulates duplicates."""
    m = starts.shape[0]
    n = perm.shape[0]
    width = values.shape[1]
    for r in prange(m):
        lo = starts[r]
        hi = starts[r + 1] if r + 1 < m else n
        src = perm[lo]
        for j in range(width):
            out[r, j] = values[src, j]
        for q in range(lo + 1, hi):
            src = perm[q]
            for j in range(width):
                out[r, j] += values[src, j]


_sum_runs_cpu = cpu_kernels(_sum_runs)


def flatten_indices(indices: np.ndarray, sizes) -> np.ndarray:
    """torch's ``flatten_indices``: the row-major linear index of each entry
    over the sparse dimensions."""
    sparse_dim, nnz = indices.shape
    if sparse_dim == 1:
        return indices[0]
    lin = np.zeros(nnz, np.int64)
    for d in range(sparse_dim):
        lin *= int(sizes[d])
        lin += indices[d]
    return lin


def needs_sort(indices: np.ndarray, shape: tuple) -> bool:
    """Whether :func:`coalesce` sorts and sums: False when the entries are
    already sorted and unique (every sort leaves them as they are, and
    coalesce returns copies of them)."""
    sparse_dim, nnz = indices.shape
    if nnz < 2:
        return False
    lin = flatten_indices(indices, shape[:sparse_dim])
    return not bool(np.all(lin[1:] > lin[:-1]))


def coalesce(indices: np.ndarray, values: np.ndarray, shape: tuple):
    """Unique sorted indices and summed values, as torch's CPU ``coalesce``.

    ``indices`` is int64 ``(sparse_dim, nnz)``, ``values`` ``(nnz, *dense)``.
    Returns new ``(indices, values)`` arrays.
    """
    sparse_dim, nnz = indices.shape
    if not needs_sort(indices, shape):
        return indices.copy(), np.array(values, order="C")
    lin = flatten_indices(indices, shape[:sparse_dim])
    if nnz >= RADIX_SORT_MIN:
        perm = np.argsort(lin, kind="stable")
        keys = lin[perm]
    else:
        keys = np.array(lin, np.int64)
        perm = np.arange(nnz, dtype=np.int64)
        _std_sort(keys, perm)
    new_run = np.empty(nnz, bool)
    new_run[0] = True
    np.not_equal(keys[1:], keys[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    flat = np.ascontiguousarray(values).reshape(nnz, -1)
    out = np.empty((len(starts), flat.shape[1]), values.dtype)
    kernel = _sum_runs_cpu[1] if config.runs_parallel(nnz * flat.shape[1]) else _sum_runs_cpu[0]
    kernel(flat, perm, starts.astype(np.int64), out)
    return (np.ascontiguousarray(indices[:, perm[starts]]),
            out.reshape((len(starts),) + values.shape[1:]))


def row_layout(param: np.ndarray, indices: np.ndarray):
    """Where a gradient's entries live in ``param``'s memory.

    Returns ``(row_off, col_off, contiguous)``: entry ``k``'s element ``j``
    (``j`` running over the dense dimensions in C order, as in ``values[k]``)
    is element ``row_off[k] + col_off[j]`` of ``param`` read in memory order
    (``param.ravel(order="K")``); ``contiguous`` says ``col_off == arange``.
    ``param`` may be a :class:`nbopt.DeviceParameter` (only its shape,
    strides and dtype are read).
    """
    sparse_dim = indices.shape[0]
    steps = np.array(param.strides, np.int64) // np.dtype(param.dtype).itemsize
    row_off = np.zeros(indices.shape[1], np.int64)
    for d in range(sparse_dim):
        row_off += indices[d] * steps[d]
    dense_shape = param.shape[sparse_dim:]
    if dense_shape:
        grids = np.indices(dense_shape, dtype=np.int64).reshape(len(dense_shape), -1)
        col_off = np.ascontiguousarray(steps[sparse_dim:] @ grids)
    else:
        col_off = np.zeros(1, np.int64)
    contiguous = bool(np.array_equal(col_off, np.arange(col_off.size)))
    return row_off, col_off, contiguous


def memory_view(a: np.ndarray) -> np.ndarray:
    """The 1-D view of a C- or F-contiguous array in memory order."""
    return a.reshape(-1, order="F" if (a.flags.f_contiguous and not a.flags.c_contiguous)
                     else "C")


# ---------------------------------------------------------------------------
# dense.add_(sparse, alpha): torch's add_out_dense_sparse_cpu

def add_is_fused(param, grad) -> bool:
    """Whether torch's ``param.add_(grad, alpha)`` rounds ``alpha * v + p``
    once (``cpublas::axpy``, or its dense ``add_`` kernel) or twice.

    A gradient that counts as coalesced (flagged, or one entry) and has no
    dense dimensions goes through torch's scalar loop ``r += alpha * v``
    (compiled for baseline x86-64: a product, then a sum); every other case
    through ``axpy`` or the vectorised dense ``add_``: one fused multiply-add.
    """
    coalesced = grad.is_coalesced() or grad.nnz == 1
    return not (coalesced and grad.sparse_dim == param.ndim)


def scatter_add_update(p, v, alpha, fused, negate):
    """One element of torch's ``dense.add_(sparse, alpha)``: ``p + alpha * v``
    (``v`` negated first when ``negate``), rounded once where torch's axpy is
    (``fused``) and twice where its scalar loop is (see :func:`add_is_fused`)."""
    if negate:
        v = -v
    if fused:
        return fma(alpha, v, p)
    return p + alpha * v


_scatter_add_element = njit(error_model="numpy")(scatter_add_update)


def _scatter_add(param, row_off, col_off, values, perm, starts, alpha, contiguous, fused,
                 negate):
    # entries perm[starts[r]:starts[r + 1]] hit the same elements: added in
    # that order; different runs are independent
    m = starts.shape[0]
    n = perm.shape[0]
    width = values.shape[1]
    for r in prange(m):
        lo = starts[r]
        hi = starts[r + 1] if r + 1 < m else n
        for q in range(lo, hi):
            k = perm[q]
            base = row_off[k]
            for j in range(width):
                a = base + j if contiguous else base + col_off[j]
                param[a] = _scatter_add_element(param[a], values[k, j], alpha, fused, negate)


_scatter_add_cpu = cpu_kernels(_scatter_add)


def scatter_add_cuda_runs(param, row_off, col_off, values, perm, starts, alpha, contiguous,
                          fused, negate):
    # the CPU loop with one thread per (run, element of the row): the entries
    # of a run are added in order by one thread; runs and elements are
    # independent (grid-stride over runs x width)
    m = starts.shape[0]
    n = perm.shape[0]
    width = values.shape[1]
    for e in range(cuda.grid(1), m * width, cuda.gridsize(1)):
        r = e // width
        j = e - r * width
        lo = starts[r]
        hi = starts[r + 1] if r + 1 < m else n
        for q in range(lo, hi):
            k = perm[q]
            a = row_off[k] + j if contiguous else row_off[k] + col_off[j]
            param[a] = scatter_add_update(param[a], values[k, j], alpha, fused, negate)


scatter_add_cuda_kernel = cuda_kernel(scatter_add_cuda_runs, scatter_add_update)


def _scatter_plan(param, grad):
    """What :func:`scatter_add` (and :func:`scatter_add_cuda`) hand their
    kernel for ``param.add_(grad)``: ``None`` when there is nothing to add,
    else ``(grad, perm, starts, row_off, col_off, contiguous, fused)`` over
    the real view of a complex parameter.  Reads the host indices only."""
    if grad.sparse_dim == 0:
        grad = grad.coalesce()
    if grad.nnz == 0:
        return None
    fused = add_is_fused(param, grad)
    nnz = grad.nnz
    indices = grad._indices             # host int64, also of a DeviceSparseGrad
    if grad.is_coalesced() or nnz == 1:
        perm = starts = np.arange(nnz, dtype=np.int64)
    else:
        lin = flatten_indices(indices, grad.shape)
        perm = np.argsort(lin, kind="stable").astype(np.int64)
        keys = lin[perm]
        new_run = np.empty(nnz, bool)
        new_run[0] = True
        np.not_equal(keys[1:], keys[:-1], out=new_run[1:])
        starts = np.flatnonzero(new_run).astype(np.int64)
    row_off, col_off, contiguous = row_layout(param, indices)
    if param.dtype.kind == "c":
        row_off = row_off * 2
        col_off = np.stack([2 * col_off, 2 * col_off + 1], axis=1).reshape(-1)
        fused = False   # torch's complex a * b + c: a product, then a sum
    return grad, perm, starts, row_off, col_off, contiguous, fused


def scatter_add(param, grad, alpha: float, negate: bool = False) -> None:
    """``param.add_(grad, alpha=alpha)`` (``grad`` negated first when
    ``negate``) for a sparse ``grad`` and a real ``alpha``, as torch does it.

    torch does not coalesce first: entries are added one by one, in their
    order, into the rows they name (so duplicates round as separate
    additions), with the rounding :func:`add_is_fused` tells.  Without sparse
    dimensions the gradient is coalesced, then added.  A complex parameter
    is updated through its real view (a real ``alpha`` scales both parts).
    """
    plan = _scatter_plan(param, grad)
    if plan is None:
        return
    grad, perm, starts, row_off, col_off, contiguous, fused = plan
    values = np.ascontiguousarray(grad.values).reshape(grad.nnz, -1)
    flat = memory_view(param)
    if param.dtype.kind == "c":
        flat = flat.view(flat.real.dtype)
        values = values.view(flat.dtype)
    kernel = _scatter_add_cpu[1] if config.runs_parallel(values.size) else _scatter_add_cpu[0]
    kernel(flat, row_off, col_off, values, perm, starts, flat.dtype.type(alpha), contiguous,
           fused, negate)


def scatter_add_cuda(param, grad, alpha: float, negate: bool = False) -> None:
    """:func:`scatter_add` of a :class:`nbopt.parameter.DeviceSparseGrad` into a
    :class:`nbopt.DeviceParameter`: the same plan, made on the host from the
    host copy of the indices, and :func:`scatter_add_cuda_runs` on the device
    (bit for bit the CPU path: same order of additions, same roundings)."""
    from . import _sparse_cuda as sc

    plan = _scatter_plan(param, grad)
    if plan is None:
        return
    grad, perm, starts, row_off, col_off, contiguous, fused = plan
    real = np.finfo(param.dtype).dtype       # a complex parameter's real view
    tables, values = sc.upload_rows(param, grad, perm, starts, row_off, col_off)
    d_perm, d_starts, d_row_off, d_col_off = tables
    flat = sc.memory_flat(param)
    if param.dtype.kind == "c":
        flat = flat.view(real)
        values = values.view(real)
    sc.launch(scatter_add_cuda_kernel, param, len(starts) * values.shape[1],
              flat, d_row_off, d_col_off, values, d_perm, d_starts, real.type(alpha),
              contiguous, fused, negate)


# ---------------------------------------------------------------------------
# SGD

def sgd_sparse(group, param):
    """``AlgorithmSpec.sparse`` for SGD: torch's behaviour with a sparse grad.

    * ``fused``: ``RuntimeError("`_fused_sgd` does not support sparse gradients")``.
    * ``weight_decay != 0``: torch's ``grad.add(param)`` fails with
      ``RuntimeError("add(sparse, dense) is not supported. ...")``.
    * momentum 0: ``param.add_(grad, alpha=-lr)`` on the rows present.
    * momentum != 0: the buffer is ``momentum * buf + (1 - dampening) * grad``
      over every row it ever had, which is the dense update with the gradient
      densified (:data:`nbopt.registry.DENSIFY`); nbopt keeps the buffer dense
      where torch keeps a sparse tensor.
    """
    if group.get("fused"):
        raise RuntimeError("`_fused_sgd` does not support sparse gradients")
    if to_scalar(group["weight_decay"]) != 0:
        raise RuntimeError("add(sparse, dense) is not supported. "
                           "Use add(dense, sparse) instead.")
    if group["momentum"] != 0:
        return DENSIFY
    if isinstance(param, DeviceParameter):
        return _sgd_sparse_update_cuda
    return _sgd_sparse_update


def _sgd_sparse_update(param, state, grad, group, t):
    neg_lr = -to_scalar(group["lr"])
    scatter_add(param, grad, float(np.asarray(neg_lr, np.float64)), negate=bool(group["maximize"]))


def _sgd_sparse_update_cuda(param, state, grad, group, t):
    neg_lr = -to_scalar(group["lr"])
    scatter_add_cuda(param, grad, float(np.asarray(neg_lr, np.float64)),
                     negate=bool(group["maximize"]))


_sgd_sparse_update_cuda.on_device = True
