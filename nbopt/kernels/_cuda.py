"""CUDA building blocks: each algorithm's per-element function, compiled a
second time into a grid-stride ``@cuda.jit`` kernel.

Importing this module imports ``numba.cuda`` (the ``cuda`` extra); the
kernels modules never import it themselves, so ``import nbopt`` and the CPU
path do not pay for it.

* ``device_ptr(addr, like)``: a typed pointer at an integer device address,
  so that one launch reaches many separately allocated arrays through a
  segment table (as the CPU loops do with ``addr_to_ptr``).  numba-cuda has a
  type system of its own, so the CPU intrinsics and overloads of
  :mod:`nbopt.kernels._common` are registered again here for the CUDA target.
* ``fma`` and ``lerp``: CUDA overloads with the CPU path's rounding (one
  fused rounding, torch's lerp branches).
* :func:`compile_kernel` compiles a kernels module's CUDA segment loop; the
  module holds it as :func:`nbopt.kernels._common.cuda_kernel`, which imports
  this module on first use.
* Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) a kernel is Python:
  ``device_ptr`` is a ctypes pointer over host memory, and the element
  functions run as written (their ``fma`` rounds twice), so the simulator
  proves results to a few ulps, not bit-identity or compilation; the PTX
  tier (``cuda.compile_ptx``) proves compilation.

Kernel contract: ``kernel[blocks, threads](segments, chunks, scalars, <state
arrays>, <flags>)`` with the CPU loops' segment and chunk tables (device
arrays); block ``b`` takes chunks ``b, b + gridDim, ...`` and its threads
stride over the chunk's elements.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading

import numpy as np
from numba import config as _numba_config
from numba import cuda

from ._common import fma, lerp

__all__ = ["SIMULATED", "THREADS", "compile_kernel", "device_chunk", "device_ptr",
           "device_carray", "launch_shape", "no_contraction"]

SIMULATED = bool(_numba_config.ENABLE_CUDASIM)
THREADS = 256           # threads per block: one chunk's elements are strided over them
MAX_BLOCKS = 65535


def device_ptr(addr, like):
    """A pointer of ``like``'s dtype at address ``addr`` (Python: the
    simulator's host memory; compiled: an ``inttoptr``)."""
    return ctypes.cast(ctypes.c_void_p(int(addr)),
                       ctypes.POINTER(np.ctypeslib.as_ctypes_type(like.dtype)))


if SIMULATED:
    from numba.np.numpy_support import carray as device_carray
else:
    from numba.cuda import types as _types
    from numba.cuda.extending import intrinsic, overload, register_jitable
    from numba.cuda.np.numpy_support import carray as device_carray

    @intrinsic
    def _inttoptr(typingctx, addr, like):
        if not isinstance(addr, _types.Integer) or not isinstance(like, _types.Array):
            return None
        sig = _types.CPointer(like.dtype)(addr, like)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    @overload(device_ptr, target="cuda", inline="always")
    def _device_ptr_cuda(addr, like):
        def impl(addr, like):
            return _inttoptr(addr, like)
        return impl

    @overload(fma, target="cuda", inline="always")
    def _fma_cuda(a, b, c):
        if isinstance(a, _types.Float) and a == b == c:
            def impl(a, b, c):
                return cuda.fma(a, b, c)
            return impl

    @overload(lerp, target="cuda", inline="always")
    def _lerp_cuda(a, b, w):
        if isinstance(w, _types.Float):
            # typed constants: a bare 0.5 or 1 would make a float32 kernel float64
            dtype = np.float32 if w.bitwidth == 32 else np.float64
            half, one = dtype(0.5), dtype(1)

            def impl(a, b, w):
                d = b - a
                if abs(w) < half:
                    return cuda.fma(w, d, a)
                return cuda.fma(w - one, d, b)
            return impl


def device_chunk(segments, chunks, c, like):
    """Chunk ``c`` of a CUDA segment loop: ``(s, param, grad, off)``, the
    segment, its parameter and gradient (``like``'s dtype) and its offset into
    the flat state arrays; the chunk's elements are ``chunks[c, 1]`` to
    ``chunks[c, 2]`` (the CPU loops' ``chunk_views``)."""
    s = chunks[c, 0]
    n = segments[s, 3]
    param = device_carray(device_ptr(segments[s, 0], like), n)
    grad = device_carray(device_ptr(segments[s, 1], like), n)
    return s, param, grad, segments[s, 2]


if not SIMULATED:
    register_jitable(device_chunk)


_contraction = threading.local()


@contextlib.contextmanager
def no_contraction():
    """Compile with NVVM's ``-fma=0`` inside this block.

    NVVM contracts ``a * b + c`` into one fused multiply-add by default, and
    ptxas contracts the plain ``mul.f32``/``add.f32`` it leaves; the CPU path
    rounds twice there (only the explicit ``fma``/``lerp`` calls are fused on
    both), so the kernels would drift from it (measured: ASGD and RMSprop gain
    fused operations).  With ``-fma=0`` NVVM keeps the products and sums apart
    and writes them ``mul.rn``/``add.rn``, which ptxas never fuses.  Scoped to
    nbopt's own launches: other CUDA code in the process is unaffected.
    """
    _install_fma_option()
    previous = getattr(_contraction, "off", False)
    _contraction.off = True
    try:
        yield
    finally:
        _contraction.off = previous


def _install_fma_option() -> None:
    if SIMULATED:
        return
    from numba.cuda.cudadrv import nvvm

    if getattr(nvvm.compile_ir, "_nbopt_fma_option", False):
        return
    original = nvvm.compile_ir

    def compile_ir(llvmir, **options):
        if getattr(_contraction, "off", False) and not options.get("fastmath"):
            options.setdefault("fma", False)
        return original(llvmir, **options)

    compile_ir._nbopt_fma_option = True
    nvvm.compile_ir = compile_ir


def compile_kernel(loop, elements):
    """``cuda.jit`` of a module-level segment loop that calls the plain-Python
    element functions ``elements`` (compiled into it: the maths is written
    once, for the CPU loop and this kernel)."""
    if not SIMULATED:
        for fn in elements:
            if not getattr(fn, "_nbopt_cuda_jitable", False):
                register_jitable(fn)
                fn._nbopt_cuda_jitable = True
    # the names the loop reads, bound in its module only now, so that
    # importing a kernels module does not import numba.cuda
    loop.__globals__.update(cuda=cuda, device_chunk=device_chunk)
    return cuda.jit(loop)


def launch_shape(n_chunks: int) -> tuple[int, int]:
    """``(blocks, threads)`` for a chunk table of ``n_chunks`` rows."""
    return max(1, min(n_chunks, MAX_BLOCKS)), THREADS
