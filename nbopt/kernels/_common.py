"""Building blocks shared by every kernel module.

* ``fma`` and ``lerp``: element operations rounded the way torch's vectorised
  CPU kernels round them (spec section 7), so float32 results stay within an
  ulp or two of torch's.  Each is a plain Python function (the reference the
  CUDA simulator runs) with a Numba overload that compiles to one LLVM
  instruction sequence.
* ``addr_to_ptr``: turns an integer address from a pointer table into a typed
  pointer, so that one kernel call reaches many separately allocated arrays
  (DESIGN.md section 3) without passing them as a tuple.
* ``chunk_views``: the two arrays a chunk of a segment loop works on, as
  views indexed from 0.
* ``cpu_kernels``: compiles a segment loop twice, serially and with
  ``parallel=True``, with the options every kernel must use.

Numba's on-disk cache keys a kernel on its own source file only: after editing
this module, clear the ``__pycache__`` folders of ``nbopt/kernels`` (or set
``NBOPT_CACHE=0``) so that cached kernels pick the change up.
"""
from __future__ import annotations

import ctypes
import sys
import types as _pytypes
from fractions import Fraction

import llvmlite.binding as _llvm_binding

import numpy as np
from numba import carray, njit, prange, types
from llvmlite import ir
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload, register_jitable

from .. import config

__all__ = ["fma", "lerp", "addr_to_ptr", "chunk_views", "cpu_kernels", "cuda_kernel", "power",
           "real_flat", "cast_like", "next_step"]


def fma(a, b, c):
    """``a * b + c`` with a single rounding.

    The Python reference (what the CUDA simulator runs) computes the exact
    value with fractions and rounds it once to double, then to the operands'
    type: exact for float64, within an ulp for float32 (a double rounding,
    rarely); non-finite operands fall back to two roundings.  Compiled code
    uses the overloads below (one LLVM/CUDA fma instruction).
    """
    kind = type(a)
    try:
        exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    except (OverflowError, ValueError):         # inf or nan
        return a * b + c
    return kind(float(exact))


@intrinsic
def _llvm_fma(typingctx, a, b, c):
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        t = args[0].type
        name = "llvm.fma.f32" if a.bitwidth == 32 else "llvm.fma.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t, t]), name)
        return builder.call(fn, args)

    return sig, codegen


@overload(fma, target="cpu", inline="always")
def _fma_cpu(a, b, c):
    if isinstance(a, types.Float) and a == b == c:
        def impl(a, b, c):
            return _llvm_fma(a, b, c)
        return impl


def lerp(a, b, w):
    """``torch.lerp(a, b, w)`` for a scalar weight, rounded as torch's CPU kernel.

    ``|w| < 0.5``: ``fma(w, b - a, a)``; otherwise ``fma(w - 1, b - a, b)``.
    """
    d = b - a
    if abs(w) < 0.5:
        return fma(w, d, a)
    return fma(w - 1, d, b)


@overload(lerp, target="cpu", inline="always")
def _lerp_cpu(a, b, w):
    if isinstance(w, types.Float):
        # Typed constants: a bare ``0.5`` or ``1`` would promote a float32 loop to float64.
        dtype = np.float32 if w.bitwidth == 32 else np.float64
        half, one = dtype(0.5), dtype(1)

        def impl(a, b, w):
            d = b - a
            if abs(w) < half:
                return _llvm_fma(w, d, a)
            return _llvm_fma(w - one, d, b)
        return impl


@intrinsic
def addr_to_ptr(typingctx, addr, like):
    """A ``CPointer`` of ``like``'s dtype at integer address ``addr``."""
    if not isinstance(addr, types.Integer) or not isinstance(like, types.Array):
        return None
    sig = types.CPointer(like.dtype)(addr, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@njit(inline="always", error_model="numpy")
def chunk_views(segments, chunks, c, like, length_column):
    """Chunk ``c`` of a segment loop: ``(s, first, second, lo, hi)``.

    ``chunks[c]`` is (segment, lo, hi); segment ``s`` of the table holds the
    addresses of its two arrays in columns 0 and 1 (parameter and gradient,
    or average and current value) and its length in ``length_column``.  The
    views cover elements ``lo:hi`` of the segment and are indexed from 0:
    indices that start at 0 let LLVM drop NumPy's negative-index wraparound
    and vectorise the loop (6x, measured).  ``like`` gives the dtype.
    """
    s = chunks[c, 0]
    lo, hi = chunks[c, 1], chunks[c, 2]
    n = segments[s, length_column]
    first = carray(addr_to_ptr(segments[s, 0], like), n)[lo:hi]
    second = carray(addr_to_ptr(segments[s, 1], like), n)[lo:hi]
    return s, first, second, lo, hi


_KERNEL_OPTIONS = dict(error_model="numpy", nogil=True)


def _jit(fn, **options):
    options = {**_KERNEL_OPTIONS, **options}
    if config.CACHE:
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError:
            # No writable cache location (read-only install, no home): compile
            # in memory rather than fail at import.
            pass
    return njit(**options)(fn)


def cpu_kernels(loop):
    """Compile a module-level segment loop as ``(serial, parallel)`` dispatchers.

    The serial one is compiled from a copy of the function with its own
    qualified name, because Numba's cache index does not tell a
    ``parallel=True`` build from a serial build of the same function.
    """
    serial_fn = _pytypes.FunctionType(
        loop.__code__, loop.__globals__, loop.__name__ + "_serial",
        loop.__defaults__, loop.__closure__)
    serial_fn.__qualname__ = loop.__qualname__ + "_serial"
    serial_fn.__module__ = loop.__module__
    serial_fn.__doc__ = loop.__doc__
    return _jit(serial_fn), _jit(loop, parallel=True)


class CudaKernel:
    """A kernels module's CUDA segment loop ``loop``, which calls the
    plain-Python element functions ``elements``, compiled on first use
    (importing numba.cuda only then): ``kernel(blocks, threads, *args)``.
    The names the loop reads (``cuda``, ``device_chunk``) are bound in its
    module by nbopt.kernels._cuda when it is compiled; the module declares
    them as None until then."""

    def __init__(self, loop, *elements):
        self.loop, self.elements = loop, elements
        self._compiled = None

    def get(self):
        if self._compiled is None:
            from ._cuda import compile_kernel

            self._compiled = compile_kernel(self.loop, self.elements)
        return self._compiled

    def __call__(self, blocks, threads, *args):
        from ._cuda import no_contraction

        kernel = self.get()
        with no_contraction():      # a launch compiles each new signature
            kernel[blocks, threads](*args)


cuda_kernel = CudaKernel


# --------------------------------------------------------------------------
# Host-side maths shared by several algorithms (Python doubles, as torch).

def to_scalar(x):
    """torch's ``_to_scalar``: a 1-element array (nbopt's stand-in for a Tensor
    hyper-parameter) becomes a 0-d array that keeps its dtype, so that NumPy's
    promotion of ``array op float`` rounds the host maths as torch's
    ``tensor op float`` does (a float32 Tensor lr gives a float32 step size)."""
    if isinstance(x, np.ndarray):
        return x.reshape(())
    return x


# torch's arithmetic on 0-d tensors (a Tensor hyper-parameter, the float32
# ``step`` tensor, float32 scalar state), reproduced with NumPy scalars of the
# tensor's dtype.  NumPy's promotion (NEP 50: a Python float takes the other
# operand's dtype; two scalars promote) is torch's for 0-d tensors, and +, -, *
# round alike; division of a Python number by a tensor and powers do not, and
# are spelled out below.  Used where torch's code computes its per-step
# scalars with tensors: Tensor betas, ``differentiable=True``, some
# ``foreach=True`` paths.

def tensor_value(x):
    """A 1-element array (a Tensor hyper-parameter) as a NumPy scalar of its
    dtype; anything else unchanged."""
    if isinstance(x, np.ndarray):
        return x.reshape(())[()]
    return x


def _is_tensor(x) -> bool:
    return isinstance(x, (np.generic, np.ndarray))


def tensor_div(x, y):
    """torch's ``x / y``.  For a Python number ``x`` and a tensor ``y`` this is
    ``Tensor.__rtruediv__``, i.e. ``y.reciprocal() * x``: two roundings in
    ``y``'s dtype, not one division."""
    if _is_tensor(y) and not _is_tensor(x):
        return (y.dtype.type(1) / y) * x
    return x / y


def tensor_pow(x, e):
    """torch's ``x ** e`` (CPU kernels).

    * tensor ** Python number (``pow_tensor_scalar``): 0.5, -0.5 and -1 are
      ``sqrt``, ``1 / sqrt`` and ``reciprocal``; 2, 3 and -2 are products;
      any other exponent goes through C's double ``pow`` and the result is
      rounded to the tensor's dtype (NumPy's float32 power rounds otherwise).
    * Python number ** tensor and tensor ** tensor (``pow_tensor_tensor``):
      C's ``pow`` in the promoted dtype, ``powf`` for float32, which NumPy's
      scalar power calls too.
    """
    if _is_tensor(x):
        x = tensor_value(x)
        if _is_tensor(e):
            return x ** tensor_value(e)
        dtype = x.dtype.type
        if e == 0.5:
            return np.sqrt(x)
        if e == -0.5:
            return dtype(1) / np.sqrt(x)
        if e == -1:
            return dtype(1) / x
        if e == 2:
            return x * x
        if e == 3:
            return x * x * x
        if e == -2:
            return dtype(1) / (x * x)
        return dtype(float(x) ** e)
    if _is_tensor(e):
        e = tensor_value(e)
        return e.dtype.type(x) ** e
    return x ** e


@register_jitable
def bias_correction(beta: float, t: float) -> float:
    """``1 - beta ** t``: the Adam-family moment bias correction."""
    return 1 - power(beta, t)


# --------------------------------------------------------------------------
# Host maths that also runs inside njit code (nbopt.functional): the same
# Python function is called by the class path and compiled into the
# functional steps, so both compute every per-step scalar alike.

def power(x, y):
    """CPython's ``x ** y`` for floats (C's ``pow``).  Compiled, it calls the
    same C ``pow``: Numba's own ``**`` lowers to LLVM's ``pow`` intrinsic,
    which becomes ``sqrt`` for an exponent of 0.5 and differs from C's
    ``pow`` in about 0.2 % of Adam's bias corrections (measured)."""
    return x ** y


# -- the steady path's compiled scalar row ------------------------------------
# A steady step of float hyper-parameters (the common case) computes its
# kernel's scalar row in one compiled call (AlgorithmSpec.steady_row): the
# host maths the class path and the functional steps share, ~0.6-1.8 us a
# step less than the same maths in Python.

def plain_floats(values):
    """The sequence ``values`` as a tuple of floats when each is a Python
    ``int`` or ``float`` (not a bool, not an array: a Tensor hyper-parameter
    takes the Python maths), else None; the ``SteadyRow.hyper`` of
    algorithms whose row takes its options as they are."""
    for v in values:
        kind = type(v)
        if kind is not float and kind is not int:
            return None
    try:
        return tuple(map(float, values))
    except OverflowError:        # an int beyond float: the Python maths raises
        return None


def lr_betas_floats(lr, betas, *rest):
    """``(lr, beta1, beta2, *rest)`` as floats (see :func:`plain_floats`)
    when ``betas`` is a tuple of two betas in torch's range ``[0, 1)`` (the
    Adam family's bias corrections are then positive), else None; a list
    could change in place, unseen."""
    if type(betas) is not tuple or len(betas) != 2:
        return None
    h = plain_floats((lr, betas[0], betas[1], *rest))
    return h if h is not None and 0.0 <= h[1] < 1.0 and 0.0 <= h[2] < 1.0 else None


@register_jitable
def steady_t(steps):
    """The step count after this step's increment from a group's float32
    step counts, as the engine counts (exact below 2**24, rounded to float32
    above); 0.0 unless all are equal (one row serves the group only then: a
    user may write a step count in place).  Writes nothing."""
    if not all_equal(steps):
        return 0.0
    t = np.float64(steps[0]) + 1.0
    if t > 16777216.0:
        t = np.float64(np.float32(t))
    return t


@register_jitable
def store_row(out, row, t, steps, commit):
    """Write the float64 scalar ``row`` into every row of the table ``out``,
    rounded to its dtype, and return ``t``; with ``commit`` (the step's only
    plan: nothing can fail after it) also write ``t`` into the step counts.
    Return 0.0 and write nothing if ``t`` is 0.0 (see :func:`steady_t`) or a
    value is not finite: the Python maths then runs, and raises where torch
    raises (a division by zero, an overflowing power)."""
    if t == 0.0:
        return 0.0
    for k in range(len(row)):
        if not np.isfinite(row[k]):
            return 0.0
    for r in range(out.shape[0]):
        for k in range(len(row)):
            out[r, k] = row[k]
    if commit:
        for i in range(steps.shape[0]):
            steps[i] = t
    return t


# the C runtime's pow, under a name LLVM does not know (it would rewrite a
# call to "pow" as it rewrites its intrinsic); registered at import, so that
# kernels loaded from Numba's cache find it too
_CRT = ctypes.cdll.ucrtbase if sys.platform == "win32" else ctypes.CDLL(None)
_llvm_binding.add_symbol("nbopt_crt_pow", ctypes.cast(_CRT.pow, ctypes.c_void_p).value)


@intrinsic
def _crt_pow(typingctx, x, y):
    if x != types.float64 or y != types.float64:
        return None
    sig = types.float64(types.float64, types.float64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.DoubleType(), [ir.DoubleType(), ir.DoubleType()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "nbopt_crt_pow")
        return builder.call(fn, args)

    return sig, codegen


@overload(power, target="cpu", inline="always")
def _power_cpu(x, y):
    if isinstance(x, (types.Float, types.Integer)) and isinstance(y, (types.Float, types.Integer)):
        def impl(x, y):
            return _crt_pow(float(x), float(y))
        return impl


def real_flat(a):
    """A C-contiguous array as a flat view of its real coordinates (a complex
    array through its real view, as the engine steps it)."""
    flat = a.reshape(-1)
    return flat.view(flat.real.dtype) if flat.dtype.kind == "c" else flat


@intrinsic
def _real_data(typingctx, a):
    """Array ``a``'s data pointer, typed as its real element type."""
    real = a.dtype.underlying_float if isinstance(a.dtype, types.Complex) else a.dtype
    sig = types.CPointer(real)(a)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        return builder.bitcast(data, context.get_value_type(signature.return_type))

    return sig, codegen


@overload(real_flat, target="cpu", inline="always")
def _real_flat_cpu(a):
    if not isinstance(a, types.Array):
        raise TypingError(f"nbopt.functional steps NumPy arrays, got {a}")
    if a.layout != "C":
        raise TypingError("nbopt.functional steps C-contiguous arrays (updated in place "
                          f"through a flat view), got a {a.layout!r}-layout array; pass "
                          "np.ascontiguousarray(a), or a.T of an F-contiguous array")
    if not isinstance(a.dtype, (types.Float, types.Complex)):
        raise TypingError(f"nbopt.functional steps float and complex arrays, got {a.dtype}")
    # A view over the data pointer, without a reference to the array: a
    # reshape or view is reference counted, which a step whose loops depend
    # on runtime options cannot elide (~30 ns a step, measured).  The caller
    # holds the array for the whole step.
    width = 2 if isinstance(a.dtype, types.Complex) else 1

    def impl(a):
        return carray(_real_data(a), a.size * width)
    return impl


def cast_like(x, a):
    """Host scalar ``x`` (float64) rounded to the real dtype of array ``a``,
    as the engine rounds a kernel's scalar row."""
    return np.asarray(a).real.dtype.type(x)


@overload(cast_like, target="cpu", inline="always")
def _cast_like_cpu(x, a):
    dtype = a.dtype
    if isinstance(dtype, types.Complex):
        real = np.float32 if dtype.bitwidth == 64 else np.float64
    else:
        real = np.float32 if dtype.bitwidth == 32 else np.float64

    def impl(x, a):
        return real(x)
    return impl


def next_step(step) -> float:
    """Advance a float32 step counter (a 1-element array, torch's 0-d float32
    ``step`` tensor) and return the new count as a double, as the engine
    counts (exact below 2**24, float32 rounding above)."""
    t = float(step[0]) + 1.0
    if t > 16777216.0:
        t = float(np.float32(t))
    step[0] = t
    return t


next_step_jit = njit(inline="always", error_model="numpy")(next_step)


# --------------------------------------------------------------------------
# Subnormals (nbopt.set_flush_denormal): MXCSR's FTZ (bit 15) and DAZ (bit 6)

_X86 = __import__("platform").machine().lower() in ("x86_64", "amd64")
_FTZ_DAZ = 0x8040


@intrinsic
def _mxcsr(typingctx, value, write):
    """Read the calling thread's MXCSR, after writing ``value`` when ``write``."""
    sig = types.uint32(types.uint32, types.boolean)

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p])
        store = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
        load = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
        ptr = builder.bitcast(slot, i8p)
        with builder.if_then(args[1]):
            builder.store(args[0], slot)
            builder.call(load, [ptr])
        builder.call(store, [ptr])
        return builder.load(slot)

    return sig, codegen


@register_jitable
def _set_mxcsr_bits(on):
    old = _mxcsr(np.uint32(0), False)
    new = (old | np.uint32(_FTZ_DAZ)) if on else (old & ~np.uint32(_FTZ_DAZ))
    return _mxcsr(np.uint32(new), True)


def _set_on_pool(on, marks):
    # every thread of the pool that runs an iteration sets its own bits;
    # the caller repeats until each thread id has been marked
    for i in prange(marks.shape[0] * 16):
        _set_mxcsr_bits(on)
        marks[_thread_id()] = 1


def set_flush_denormal(on: bool) -> bool:
    """See :func:`nbopt.set_flush_denormal`."""
    global _set_mxcsr_jit, _set_on_pool_jit
    if not _X86:
        return False
    import numba

    if _set_on_pool_jit is None:
        _set_mxcsr_jit = njit(_set_mxcsr_bits)
        _set_on_pool_jit = njit(parallel=True)(_set_on_pool)
    _set_mxcsr_jit(on)
    if config.parallel_allowed():
        marks = np.zeros(numba.config.NUMBA_NUM_THREADS, np.uint8)
        for _ in range(100):
            _set_on_pool_jit(on, marks)
            if marks[:numba.get_num_threads()].all():
                break
    return True


_set_mxcsr_jit = _set_on_pool_jit = None
_thread_id = __import__("numba").get_thread_id


def _all_equal(a):
    """Whether every element of 1-D ``a`` equals the first: the engine's check
    that a group's per-parameter step counts (and scalar state) still agree
    before it takes the steady path, which uses one value for all (a user may
    edit ``state[p]["step"]`` in place).  A compiled loop: ~0.2 us against
    ~1.5 us for ``a.min() == a.max()``."""
    first = a[0]
    for i in range(1, a.shape[0]):
        if a[i] != first:
            return False
    return True


all_equal = _jit(_all_equal)


@intrinsic
def float32_bits(typingctx, x):
    """The bits of float32 ``x`` as a uint32 (a bitcast, CPU)."""
    if not (isinstance(x, types.Float) and x.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def bits_float32(typingctx, b):
    """The float32 whose bits are the low 32 bits of integer ``b`` (CPU)."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if b.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif b.bitwidth < 32:
            v = builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(b), codegen
