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
arrays; the segment table has a fifth column, the segment's row of
``scalars``); block ``b`` takes chunks ``b, b + gridDim, ...`` and its
threads stride over the chunk's elements.

The array helpers at the end (:func:`as_device_array`, :func:`device_zeros`,
:func:`store`, ...) are what the engine's device groups
(:mod:`nbopt.engine_cuda`) need of numba-cuda: zero-copy views of any
``__cuda_array_interface__`` object, allocation, fills and copies.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading

import numpy as np
from numba import config as _numba_config
from numba import cuda

from .. import config
from ._common import cast_like, fma, lerp

__all__ = ["SIMULATED", "compile_kernel", "device_chunk", "device_ptr",
           "device_carray", "launch_shape", "no_contraction", "as_device_array",
           "device_address", "device_of", "device_zeros", "fill", "store", "to_host"]

SIMULATED = bool(_numba_config.ENABLE_CUDASIM)
MAX_BLOCKS = 65535


def _load_array_typing_without_row_stack():
    """Load numba-cuda's array typing now, where NumPy no longer has
    ``np.row_stack`` (removed in NumPy 2.5).

    numba-cuda (0.30.4 and earlier) registers an overload of ``np.row_stack``
    when its array typing first loads, at the first kernel compile, and fails
    there with ``AttributeError`` on NumPy 2.5: no kernel compiles.  Its
    maintainers do not plan to follow newer NumPy (NVIDIA/numba-cuda#907), so
    the module is loaded here with a stand-in alias in place, which is then
    taken away: NumPy is left as it was found.
    """
    if SIMULATED or hasattr(np, "row_stack"):
        return

    def row_stack(tup, *, dtype=None, casting="same_kind"):
        return np.vstack(tup, dtype=dtype, casting=casting)

    np.row_stack = row_stack
    try:
        import numba.cuda.np.arrayobj  # noqa: F401
    finally:
        del np.row_stack


_load_array_typing_without_row_stack()


def device_ptr(addr, like):
    """A pointer of ``like``'s dtype at address ``addr`` (Python: the
    simulator's host memory; compiled: an ``inttoptr``)."""
    return ctypes.cast(ctypes.c_void_p(int(addr)),
                       ctypes.POINTER(np.ctypeslib.as_ctypes_type(like.dtype)))


if SIMULATED:
    from numba.np.numpy_support import carray as device_carray

    def f32_bits(x):
        """The bits of a float32 as a uint32."""
        return np.float32(x).view(np.uint32)

    def bits_f32(u):
        """The float32 of bits ``u``."""
        return np.uint32(u).view(np.float32)
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

    @overload(cast_like, target="cuda", inline="always")
    def _cast_like_cuda(x, a):
        real = np.float32 if a.dtype.bitwidth == 32 else np.float64

        def impl(x, a):
            return real(x)
        return impl

    @intrinsic
    def f32_bits(typingctx, x):
        """The bits of a float32 as a uint32 (a bitcast)."""
        if x != _types.float32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(_types.uint32))

        return _types.uint32(_types.float32), codegen

    @intrinsic
    def bits_f32(typingctx, u):
        """The float32 of bits ``u`` (a uint32; a bitcast)."""
        if u != _types.uint32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(_types.float32))

        return _types.float32(_types.uint32), codegen

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
    """Chunk ``c`` of a CUDA segment loop: ``(row, param, grad, off)``: the
    segment's row of the scalar table, its parameter and gradient (``like``'s
    dtype) and its offset into the flat state arrays; the chunk's elements
    are ``chunks[c, 1]`` to ``chunks[c, 2]`` (the CPU loops' ``chunk_views``).

    The device segment table has a fifth column, the segment's scalar row:
    segments that share a step count share a row, so a steady step uploads
    one row of scalars, not one per parameter."""
    s = chunks[c, 0]
    n = segments[s, 3]
    param = device_carray(device_ptr(segments[s, 0], like), n)
    grad = device_carray(device_ptr(segments[s, 1], like), n)
    return segments[s, 4], param, grad, segments[s, 2]


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
    loop.__globals__.update(cuda=cuda, device_chunk=device_chunk, device_ptr=device_ptr,
                            device_carray=device_carray)
    return _jit_kernel(loop)


def _jit_kernel(loop):
    """``cuda.jit(loop)`` without link-time optimisation.

    numba-cuda links with LTO by default wherever nvJitLink is installed (any
    CUDA 12.3+ setup), and nvJitLink generates the code again from NVVM IR:
    NVVM's ``-fma=0`` (:func:`no_contraction`) does not reach it, so the
    linked PTX holds plain ``mul.f32``/``add.f32`` that ptxas fuses
    (measured on an H200: RAdam 52 ulps, centered RMSprop 56 ulps from the
    CPU path).  The kernels call no external device code, so LTO gains them
    nothing.
    """
    return cuda.jit(loop) if SIMULATED else cuda.jit(loop, lto=False)


def launch_shape(n_chunks: int) -> tuple[int, int]:
    """``(blocks, threads)`` for a chunk table of ``n_chunks`` rows."""
    return max(1, min(n_chunks, MAX_BLOCKS)), config.CUDA_THREADS


# --------------------------------------------------------------------------
# Device arrays for the engine: numba-cuda's DeviceNDArray (the simulator's
# FakeCUDAArray under NUMBA_ENABLE_CUDASIM=1) is the one device array type
# nbopt holds; anything else with __cuda_array_interface__ is viewed as one.

if SIMULATED:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _DeviceArray
else:
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as _DeviceArray


def as_device_array(obj):
    """``obj`` (a numba device array, or any ``__cuda_array_interface__``
    object: CuPy, torch CUDA tensors) as a numba device array over the same
    memory, without a copy; the view keeps ``obj`` alive."""
    if isinstance(obj, _DeviceArray):
        return obj
    own = getattr(obj, "_nbopt_device_array", None)     # a DeviceParameter
    if own is not None:
        return own
    if SIMULATED:
        # simulated "device memory" is host memory: view it with NumPy
        iface = obj.__cuda_array_interface__
        dtype = np.dtype(iface["typestr"])
        shape = tuple(iface["shape"])
        size = int(np.prod(shape)) if shape else 1
        buf = (ctypes.c_char * (size * dtype.itemsize)).from_address(iface["data"][0])
        host = np.frombuffer(buf, dtype, count=size)
        strides = iface.get("strides")
        host = np.lib.stride_tricks.as_strided(host, shape, strides) if strides \
            else host.reshape(shape)
        view = _DeviceArray(host)
        view._nbopt_owner = obj
        return view
    return cuda.as_cuda_array(obj)


def device_address(d) -> int:
    """The device address of a numba device array's first element."""
    if SIMULATED:
        return d._ary.__array_interface__["data"][0]
    return d.__cuda_array_interface__["data"][0]


def describe(obj) -> tuple:
    """``(shape, dtype, address, c_contiguous, f_contiguous)`` of a GPU array,
    read from its ``__cuda_array_interface__`` without building a view (a
    gradient is checked at every step it is a new array)."""
    try:
        iface = obj.__cuda_array_interface__
    except AttributeError:      # the simulator's arrays, a DeviceParameter
        d = as_device_array(obj)
        return (tuple(d.shape), np.dtype(d.dtype), device_address(d), d.is_c_contiguous(),
                d.is_f_contiguous())
    shape = tuple(iface["shape"])
    dtype = np.dtype(iface["typestr"])
    strides = iface.get("strides")
    if strides is None:
        return shape, dtype, iface["data"][0], True, len(shape) <= 1 or max(shape) == np.prod(shape)
    c = f = True
    step = dtype.itemsize
    for n, st in zip(reversed(shape), reversed(strides)):
        if n != 1 and st != step:
            c = False
        step *= n
    step = dtype.itemsize
    for n, st in zip(shape, strides):
        if n != 1 and st != step:
            f = False
        step *= n
    if 0 in shape:
        c = f = True
    return shape, dtype, iface["data"][0], c, f


_GPU_COUNT = None


def device_of_address(addr: int) -> int:
    """The ordinal of the GPU holding device address ``addr`` (0 where there
    is one GPU, without asking the driver)."""
    global _GPU_COUNT
    if SIMULATED:
        return 0
    if _GPU_COUNT is None:
        _GPU_COUNT = len(cuda.gpus)
    if _GPU_COUNT == 1:
        return 0
    return _pointer_device(addr)


def _pointer_device(addr: int) -> int:
    try:
        from cuda.bindings import driver as cu

        err, ordinal = cu.cuPointerGetAttribute(
            cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, addr)
        if int(err) == 0:
            return int(ordinal)
    except Exception:       # older bindings: the current device
        pass
    return cuda.get_current_device().id


def device_of(d) -> int:
    """The ordinal of the GPU holding device array ``d``'s memory."""
    return device_of_address(0 if SIMULATED else device_address(d))


def _fill_loop(a, value):
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[i] = value


_fill_kernel = None


def fill(flat, value, stream=0) -> None:
    """``flat[:] = value`` for a 1-D device array (``value`` cast to its dtype)."""
    global _fill_kernel
    if flat.shape[0] == 0:
        return
    if _fill_kernel is None:
        _fill_kernel = _jit_kernel(_fill_loop)
    threads = min(256, flat.shape[0])
    blocks = min(-(-flat.shape[0] // threads), 4096)
    _fill_kernel[blocks, threads, stream](flat, flat.dtype.type(value))


def device_zeros(n: int, dtype, stream=0):
    """A zero-filled 1-D device array of ``n`` elements."""
    d = cuda.device_array(max(int(n), 1), dtype, stream=stream)[:int(n)]
    fill(d, 0, stream)
    return d


def is_device_array(obj) -> bool:
    return isinstance(obj, _DeviceArray)


def zero(obj) -> None:
    """Zero a contiguous GPU array in place (``zero_grad(set_to_none=False)``)."""
    d = as_device_array(obj)
    if d.size:
        order = "C" if d.is_c_contiguous() else "F"
        flat = d.reshape(d.size, order=order)
        fill(flat.view(np.finfo(flat.dtype).dtype) if flat.dtype.kind == "c" else flat, 0)


def copy_into(dst, src) -> None:
    """``dst.copy_(src)`` for a contiguous GPU array ``dst`` and a host or GPU
    ``src`` of its shape (cast to its dtype)."""
    d = as_device_array(dst)
    order = "C" if d.is_c_contiguous() else "F"
    shape = tuple(np.shape(src)) if isinstance(src, np.ndarray) else describe(src)[0]
    if shape != tuple(d.shape):
        raise RuntimeError(f"copying into a CUDA array of shape {tuple(d.shape)}: the source "
                           f"must have that shape, got {shape}")
    if d.size == 0:
        return
    flat = d.reshape(d.size, order=order)
    cplx = flat.dtype.kind == "c"
    store(flat.view(np.finfo(flat.dtype).dtype) if cplx else flat, src, order, cplx)


def copy_array(d):
    """A new device array holding a copy of contiguous device array ``d``
    (same shape, dtype and memory order)."""
    d = as_device_array(d)
    order = "C" if d.is_c_contiguous() else "F"
    out = cuda.device_array(d.shape, d.dtype, order=order)
    if d.size:
        out.copy_to_device(d)
    return out


def to_host(d) -> np.ndarray:
    """A host copy of device array ``d`` (any ``__cuda_array_interface__`` object)."""
    return as_device_array(d).copy_to_host()


def store(flat, value, order: str, complex_param: bool, stream=0) -> None:
    """Copy ``value`` (host or device array shaped like the parameter, whose
    memory order is ``order``) into the 1-D device slice ``flat`` holding the
    parameter's state, cast as NumPy's ``copyto(..., casting="unsafe")``
    casts: to ``flat``'s dtype, or for a complex parameter to the complex
    dtype whose real view ``flat`` is."""
    target = np.result_type(flat.dtype, np.complex64) if complex_param else flat.dtype
    if not isinstance(value, np.ndarray):
        src = as_device_array(value)
        contiguous = src.is_c_contiguous() if order == "C" else src.is_f_contiguous()
        if src.dtype == target and contiguous:
            flat.copy_to_device(src.reshape(src.size, order=order).view(flat.dtype),
                                stream=stream)
            return
        value = src.copy_to_host()
    host = np.asarray(value).astype(target, copy=False).ravel(order=order)
    flat.copy_to_device(np.ascontiguousarray(host).view(flat.dtype), stream=stream)
