"""The element-wise engine on a GPU: a :class:`DeviceFlatGroup` is a
:class:`nbopt.engine.FlatGroup` whose flat state lives on the device of its
parameters (:class:`nbopt.DeviceParameter`), stepped by the algorithm's CUDA
kernel, one launch per (group, device, dtype).

Everything the CPU group does on the host stays on the host and is shared:
validation, state edits, step counts, scalar state and the per-step scalars
(float64 maths as torch's, rounded to the parameter dtype).  What differs is
where the memory is (allocation, fills, copies of edited or loaded state into
the flat arrays) and the launch: the segment and chunk tables are uploaded
once per plan, and a steady step uploads one row of scalars and launches.

Imported when an optimizer first meets a device parameter, so that
``import nbopt`` and the CPU path never import ``numba.cuda``.

Sparse gradients (:class:`nbopt.parameter.DeviceSparseGrad`, on the
parameter's GPU) go through the spec's ``sparse`` handler as on the CPU: given
the device parameter, the handler returns the device row update (marked
``on_device``: Adagrad's rows, SGD's scatter-add), which runs after the dense
launch, or :data:`nbopt.registry.DENSIFY` (SGD with momentum: the gradient is
densified on the host, uploaded in the parameter's layout and stepped by the
launch like a dense one).

Streams: every copy and launch is on the default stream (numba-cuda's, the
legacy default stream unless ``NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM=1``), so a
step is ordered after earlier work on that stream and on every blocking
stream (CuPy's default and ``cupy.cuda.Stream()``), and before later work on
them.  Work on a non-blocking stream (torch's ``torch.cuda.Stream()``) must be
synchronized by the user before ``step`` (``stream.synchronize()``).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from . import config
from .engine import (OVERLAP_MESSAGE, FlatGroup, _chunks, check_grad_matches, read_only_message,
                     sparse_rejection)
from .kernels import _cuda as cu
from .parameter import DeviceParameter, as_sparse_grad, is_device_array, same_device_message
from .registry import DENSIFY

__all__ = ["DeviceFlatGroup", "DeviceLaunch"]


def check_device_grad(where: str, p, device: int, g) -> tuple:
    """Validate dense gradient ``g`` of device parameter ``p`` on GPU
    ``device``: a GPU array there, of ``p``'s shape and dtype, contiguous.
    Returns ``(address, c_contiguous, f_contiguous)``; raises torch's errors
    (a host array is "on cpu")."""
    if not is_device_array(g):
        if isinstance(g, np.ndarray):
            raise RuntimeError(same_device_message(where, "cpu", p.device))
        raise TypeError(f"{where}: grad must be a CUDA array or None, got "
                        f"{type(g).__name__}")
    shape, dtype, addr, c_contiguous, f_contiguous = cu.describe(g)
    check_grad_matches(where, p, shape, dtype)
    g_device = cu.device_of_address(addr)
    if g_device != device:
        raise RuntimeError(same_device_message(where, f"cuda:{g_device}", p.device))
    return addr, c_contiguous, f_contiguous


class DeviceLaunch:
    """One kernel launch's tables on the device: the segment and chunk tables,
    uploaded once, and a scalar table refreshed at every call (one row per
    scalar key: a steady step uploads ``n_scalars`` numbers).

    The first call copies the scalars synchronously.  A plan that is called
    again (the steady path) stages them in a ring of pinned host buffers and
    copies asynchronously on the default stream, before its launch: ``step``
    then returns without waiting for the GPU, and a staging buffer is reused
    only once the copy that read it has run (its event)."""

    __slots__ = ("kernel", "seg", "d_seg", "d_chunks", "d_scalars", "blocks", "threads",
                 "device", "staging", "events", "slot", "stream")
    RING = 4

    def __init__(self, spec, seg: np.ndarray, chunks: np.ndarray, n_rows: int, dtype,
                 device: int):
        self.kernel, self.seg, self.device = spec.cuda, seg, device
        with _on(device):
            self.d_seg = cuda.to_device(seg)
            self.d_chunks = cuda.to_device(chunks)
            self.d_scalars = cuda.device_array((n_rows, spec.n_scalars), dtype)
        self.blocks, self.threads = cu.launch_shape(len(chunks))
        self.staging = self.events = self.stream = None
        self.slot = 0

    def segments_changed(self) -> None:
        """Re-upload the segment table after gradient addresses changed in it."""
        with _on(self.device):
            self.d_seg.copy_to_device(self.seg, stream=self.stream or 0)

    def __call__(self, seg, chunks, scalars, *args):
        with _on(self.device):
            if self.staging is None:
                # pinned buffers cost a host allocation: only for a plan that is
                # reused (slot 0 counts its first call)
                if self.slot:
                    self._ring()
                self.slot = 1
                self.d_scalars.copy_to_device(scalars)
            else:
                k = self.slot
                self.slot = (k + 1) % self.RING
                event = self.events[k]
                event.synchronize()         # long done, unless the GPU is RING steps behind
                self.staging[k][...] = scalars
                self.d_scalars.copy_to_device(self.staging[k], stream=self.stream)
                event.record(self.stream)
            self.kernel(self.blocks, self.threads, self.d_seg, self.d_chunks, self.d_scalars,
                        *args)

    def _ring(self) -> None:
        shape, dtype = self.d_scalars.shape, self.d_scalars.dtype
        self.stream = cuda.default_stream()
        self.staging = [cuda.pinned_array(shape, dtype) for _ in range(self.RING)]
        self.events = [cuda.event() for _ in range(self.RING)]
        for event in self.events:
            event.record(self.stream)
        self.slot = 0


class _NoContext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NO_CONTEXT = _NoContext()
_several_gpus = None


def _on(device: int):
    """A context that makes ``device`` current where there is more than one GPU."""
    global _several_gpus
    if _several_gpus is None:
        _several_gpus = not cu.SIMULATED and len(cuda.gpus) > 1
    return cuda.gpus[device] if _several_gpus else _NO_CONTEXT


class DeviceFlatGroup(FlatGroup):
    """Flat state on a GPU and one CUDA launch per step for the ``dtype``
    parameters of one group on one device (see the module docstring)."""

    def __init__(self, spec, dtype, params, positions, counts, state, group_index, group):
        self.device = params[0].device_index
        if spec.cuda is None:
            raise NotImplementedError(
                f"{spec.name} has no CUDA kernel: its parameters must be CPU arrays")
        super().__init__(spec, dtype, params, positions, counts, state, group_index, group)

    # -- where the memory is ------------------------------------------------------
    @staticmethod
    def _address(p) -> int:
        """The device address of a DeviceParameter or a device array."""
        return cu.device_address(cu.as_device_array(p))

    def _zeros(self, n: int):
        with _on(self.device):
            return cu.device_zeros(n, self.dtype)

    def _fill(self, name: str, i: int, value) -> None:
        with _on(self.device):
            cu.fill(self._flat(name, i), value)

    def _store(self, name: str, i: int, value) -> None:
        p = self.params[i]
        order = "F" if (p.flags.f_contiguous and not p.flags.c_contiguous) else "C"
        with _on(self.device):
            cu.store(self._flat(name, i), value, order, p.dtype.kind == "c")

    @staticmethod
    def _unaliased(value, flats):
        if not is_device_array(value):
            return value            # host memory cannot be the device state
        d = cu.as_device_array(value)
        lo = cu.device_address(d)
        hi = lo + d.size * d.dtype.itemsize
        for a in flats:
            start = cu.device_address(a)
            if lo < start + a.size * a.dtype.itemsize and start < hi:
                return d.copy_to_host()
        return value

    def _launch(self, segments: np.ndarray, rows: list):
        scalars = np.array(rows, dtype=np.float64).astype(self.dtype)
        seg = np.ascontiguousarray(segments)
        chunks = _chunks(seg[:, 3], config.CUDA_CHUNK_SIZE)
        kernel = DeviceLaunch(self.spec, seg, chunks, len(rows), self.dtype, self.device)
        return kernel, seg, chunks, scalars

    # -- gradients ------------------------------------------------------------------
    def _check_grad(self, i: int, g) -> tuple:
        """Validate dense gradient ``g`` of slot ``i``: a GPU array on the
        parameter's device, of its shape and dtype, laid out as it is.
        Returns ``(g, its device address)``."""
        p = self.params[i]
        where = self._where(i)
        addr, c_contiguous, f_contiguous = check_device_grad(where, p, self.device, g)
        if not p.flags.writeable:
            raise ValueError(read_only_message(where))
        # element k of the gradient's memory must be element k of the parameter's
        c_order = p.flags.c_contiguous or p.ndim <= 1 or p.size <= 1
        if not (c_contiguous if c_order else f_contiguous):
            raise ValueError(f"{where}: the gradient of a CUDA parameter must be contiguous in "
                             f"the parameter's memory order ({'C' if c_order else 'F'}); "
                             "pass a contiguous copy")
        start, nbytes = self._extent[i]
        if addr < start + nbytes and start < addr + nbytes and addr != start:
            raise RuntimeError(OVERLAP_MESSAGE)
        return g, addr

    def _steady_grad(self, g) -> bool:
        return is_device_array(g)

    def _check_sparse(self, i: int, g, group):
        """Validate sparse gradient ``g`` of slot ``i``: a DeviceSparseGrad on
        the parameter's GPU, of its shape and dtype.  Returns ``(DENSIFY,
        dense device gradient laid out like the parameter)`` or ``(device row
        update, g)``."""
        p = self.params[i]
        where = self._where(i)
        g = as_sparse_grad(g)
        if g.device != p.device:
            raise RuntimeError(same_device_message(where, g.device, p.device))
        check_grad_matches(where, p, g.shape, g.dtype)
        if self.spec.sparse is None:
            raise RuntimeError(sparse_rejection(self.spec))
        update = self.spec.sparse(group, p)
        if update is DENSIFY:
            from .kernels._sparse_cuda import memory_order

            host = g.copy_to_host().to_dense()
            host = np.asfortranarray(host) if memory_order(p) == "F" else host
            with _on(self.device):
                return DENSIFY, cuda.to_device(host)
        if not getattr(update, "on_device", False):
            raise NotImplementedError(f"{where}: {self.spec.name} steps sparse gradients of "
                                      "CPU parameters only")
        return update, g


def is_device_param(p) -> bool:
    return isinstance(p, DeviceParameter)
