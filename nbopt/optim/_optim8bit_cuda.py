"""8-bit optimizers on a GPU: the device side of :mod:`nbopt.optim.optim8bit`.

A :class:`nbopt.DeviceParameter` keeps its quantized state on its device:
``state1``/``state2`` (uint8 codes, or float state of the parameter dtype
under ``min_8bit_size``) and ``absmax1``/``absmax2`` are device arrays shaped
as on the CPU; ``step`` is a host float32 0-d array (torch keeps a
non-capturable step on the CPU) and ``qmap1``/``qmap2`` the shared host map
(the kernel reads device copies of the map and of the encoder's tables, made
once per device).  Everything the CPU path does on the host (validation, step
counts, the float64 scalar rows rounded to the parameter dtype) is shared; the
step is one launch of :data:`nbopt.kernels.quantized.step8_cuda` per (param
group, device, dtype), over a step table of device addresses (uploaded when
it changes: a steady step uploads only its scalar rows), on the default
stream, with no copy back to the host.

Checkpoints follow the element-wise device path: ``state_dict()`` holds the
live device arrays, :func:`nbopt.save` writes their host copies, and
``load_state_dict`` takes host or device arrays (copied to the host at load,
then to the device at the next step); a host array put into ``state[p]`` by
hand is uploaded at the next step too.

Imported when an 8-bit optimizer first meets a device parameter, so that
``import nbopt`` and the CPU path never import ``numba.cuda``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .. import config
from ..engine_cuda import _on, check_device_grad
from ..kernels import _cuda as cu
from ..kernels import quantized as Q
from ..parameter import is_device_array

__all__ = ["check_grad", "describe", "new_array", "upload", "address", "grad_ok", "run"]

_DEVICE_KEYS = ("state1", "state2", "absmax1", "absmax2")
_tables: dict = {}          # (device, signed) -> device (map, midpoints, lut)
_likes: dict = {}           # (device, dtype) -> an empty device array of the dtype


def check_grad(where: str, p, g) -> None:
    """Validate the dense gradient ``g`` of device parameter ``p`` (torch's
    errors, as the element-wise device groups raise them)."""
    _, c_contiguous, _ = check_device_grad(where, p, p.device_index, g)
    if not c_contiguous:
        raise ValueError(f"{where}: the gradient of a CUDA parameter of an 8-bit optimizer "
                         "must be C-contiguous; pass a contiguous copy")


def describe(v) -> tuple:
    """``(shape, dtype, c_contiguous, device ordinal)`` of a device array."""
    shape, dtype, addr, c_contiguous, _ = cu.describe(v)
    return shape, dtype, c_contiguous, cu.device_of_address(addr)


def new_array(p, dtype, shape, value):
    """A device array on ``p``'s device filled with ``value``."""
    n = int(np.prod(shape)) if shape else 1
    with _on(p.device_index):
        flat = cu.device_zeros(n, dtype) if value == 0 else _filled(n, dtype, value)
        return flat.reshape(shape) if len(shape) != 1 else flat


def _filled(n, dtype, value):
    d = cuda.device_array(max(n, 1), dtype)[:n]
    cu.fill(d, value)
    return d


def upload(p, state) -> None:
    """Copy the host arrays among ``state``'s device keys (a loaded or
    edited entry, already validated) to ``p``'s device, in place of them."""
    for key in _DEVICE_KEYS:
        v = state.get(key)
        if isinstance(v, np.ndarray):
            with _on(p.device_index):
                state[key] = cuda.to_device(np.ascontiguousarray(v))


def _device_tables(device: int, signed: bool):
    key = (device, bool(signed))
    tabs = _tables.get(key)
    if tabs is None:
        with _on(device):
            tabs = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in Q.tables(signed))
        _tables[key] = tabs
    return tabs


def _like(device: int, dtype):
    key = (device, np.dtype(dtype))
    like = _likes.get(key)
    if like is None:
        with _on(device):
            like = cuda.device_array(1, dtype)[:0]
        _likes[key] = like
    return like


def address(v) -> int:
    """The device address of a device array or parameter."""
    return cu.device_address(cu.as_device_array(v))


def grad_ok(p, g) -> bool:
    """Whether a steady step can read the new gradient ``g`` of device
    parameter ``p`` in place (else the general path validates it)."""
    if not is_device_array(g):
        return False
    shape, dtype, addr, c_contiguous, _ = cu.describe(g)
    return (tuple(shape) == tuple(p.shape) and dtype == p.dtype and c_contiguous
            and cu.device_of_address(addr) == p.device_index)


def run(launch, scalars, algo: int, two: bool, flags, signed) -> None:
    """One launch for ``launch`` (a :class:`nbopt.optim.optim8bit._Launch`
    on a GPU): its step table, uploaded when it changed, and the chunk table
    for ``config.CUDA_CHUNK_SIZE``; ``scalars`` (host, the parameter dtype)
    are uploaded at every step."""
    device = launch.device
    chunk = config.CUDA_CHUNK_SIZE
    with _on(device):
        if launch.chunks is None or launch.chunk_size != chunk:
            launch.chunks = Q.group_chunks(launch.table, max(1, chunk // Q.BLOCKSIZE), chunk)
            launch.chunk_size = chunk
            launch.d_chunks = cuda.to_device(launch.chunks) if len(launch.chunks) else None
        if launch.d_chunks is None:
            return                      # empty parameters only
        if launch.dirty:
            launch.d_table = cuda.to_device(launch.table)
            launch.dirty = False
        m1, mid1, lut1 = _device_tables(device, signed[0])
        m2, mid2, lut2 = _device_tables(device, signed[1]) if two else (m1, mid1, lut1)
        blocks = max(1, min(len(launch.chunks), cu.MAX_BLOCKS))
        threads = max(1, min(config.CUDA_THREADS, Q.MAX_CUDA_THREADS))
        f0, f1, f2 = flags
        Q.step8_cuda(blocks, threads, launch.d_table, launch.d_chunks, cuda.to_device(scalars),
                     _like(device, launch.dtype), m1, mid1, lut1, m2, mid2, lut2,
                     np.int64(algo), bool(two), bool(f0), bool(f1), bool(f2), not signed[0],
                     bool(two and not signed[1]), np.int64(Q.BLOCKSIZE))
