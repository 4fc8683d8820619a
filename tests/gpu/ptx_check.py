"""Tier 2 (no GPU needed): every algorithm's CUDA kernel compiles to PTX for
compute capability 9.0, its float32 PTX holds no float64 arithmetic or
conversion, and no float product or sum is left unrounded (``mul.f32``
rather than ``mul.rn.f32``), which ptxas could fuse where the CPU path
rounds twice.  Needs NVVM (``pip install "numba-cuda[cu13]"``):

    python tests/gpu/ptx_check.py [ClassName ...]
    python tests/gpu/ptx_check.py --helpers     (SWA averaging and fill kernels)

Exits 1 on either, 2 if NVVM is missing.
"""
from __future__ import annotations

import os
import re
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from gpu.kernel_cases import launch_inputs, selected  # noqa: E402

CC = (9, 0)
FLOAT64 = re.compile(r"\.f64\b")
# a float product or sum without explicit rounding, which ptxas may fuse
CONTRACTIBLE = re.compile(r"^\s*(mul|add|sub)\.f(32|64)\b")
FMA = re.compile(r"^\s*fma\.rn\.f(32|64)\b")


def compile_ptx(kernel, args):
    """PTX of ``kernel`` (a CudaKernel or a plain loop) for compute capability
    9.0, for the types of ``args`` (values, or numba types)."""
    from numba import cuda
    from numba.core.types import Type
    from numba.cuda import dispatcher
    from numba.cuda.typing.typeof import typeof

    # Device functions (our element functions and overloads) are compiled for
    # the current device's compute capability; without a GPU, say 9.0.
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)
    from nbopt.kernels._cuda import no_contraction

    if hasattr(kernel, "get"):      # a CudaKernel (compiled lazily)
        kernel = kernel.get()
    signature = tuple(a if isinstance(a, Type) else typeof(a) for a in args)
    with no_contraction():
        if isinstance(kernel, dispatcher.CUDADispatcher):
            return launch_ptx(kernel, signature)
        ptx, _ = cuda.compile_ptx(kernel, signature, cc=CC)
    return ptx


def launch_ptx(kernel, signature):
    """The PTX a launch of the dispatcher ``kernel`` hands to ptxas: compiled
    with the dispatcher's own options and, where those link with LTO, the
    PTX nvJitLink generates at link time (which NVVM's options do not reach)."""
    from numba.cuda import codegen, dispatcher

    arch = (*CC, "a")       # what a launch reads from an sm_90 device
    ensure_cc = codegen.CUDACodeLibrary._ensure_cc
    codegen.CUDACodeLibrary._ensure_cc = lambda self, cc: cc or arch    # no GPU here
    try:
        compiled = dispatcher._Kernel(kernel.py_func, signature, **kernel.targetoptions)
        library = compiled._codelibrary
        if kernel.targetoptions.get("lto"):
            return library.get_lto_ptx(cc=arch)
        return library.get_asm_str(cc=arch)
    finally:
        codegen.CUDACodeLibrary._ensure_cc = ensure_cc


def nvvm_missing() -> bool:
    """Print why and return True when NVVM is not installed."""
    try:
        from numba.cuda.cudadrv.nvvm import NVVM
        NVVM()
    except Exception as exc:  # noqa: BLE001
        print(f"NVVM is not available ({exc}): pip install 'numba-cuda[cu13]'")
        return True
    return False


def main(names) -> int:
    if nvvm_missing():
        return 2
    if names == ["--helpers"]:
        return helpers()
    bad = 0
    seen = set()
    for cls, options, dtype in selected(names):
        spec, params, grads, seg, chunks, scalars, state, flags = launch_inputs(
            cls, options, dtype)
        if (spec.name, dtype) in seen:
            continue            # the kernel takes the options at run time
        seen.add((spec.name, dtype))
        ptx = compile_ptx(spec.cuda, (seg, chunks, scalars, *state, *flags))
        bad += report(spec.name, dtype, ptx)
    return 1 if bad else 0


def report(name, dtype, ptx, float64_allowed: bool = False) -> int:
    """Print one kernel's PTX verdict; 1 if it fails (float64 in a float32
    kernel, unless ``float64_allowed``; a product or sum ptxas may fuse)."""
    lines = ptx.splitlines()
    f64 = [line.strip() for line in lines if FLOAT64.search(line)]
    fusable = [line.strip() for line in lines if CONTRACTIBLE.search(line)]
    fmas = sum(1 for line in lines if FMA.search(line))
    wrong = dtype == np.float32 and bool(f64) and not float64_allowed
    print(f"{name:8s} {dtype.__name__:7s} {len(lines):5d} PTX lines, "
          f"float64 instructions: {len(f64)}, fusable mul/add: {len(fusable)}, fma: {fmas}"
          + ("  <- float64 in a float32 kernel: " + "; ".join(f64[:3]) if wrong else "")
          + ("  <- ptxas may fuse: " + "; ".join(fusable[:3]) if fusable else ""))
    return int(wrong or bool(fusable))


def helpers() -> int:
    """The SWA averaging kernels (both kinds, real and complex layouts) and
    the state fill kernel."""
    from nbopt.kernels import _cuda, averaging

    bad = 0
    table = np.zeros((1, 3), np.int64)
    for dtype in (np.float32, np.float64):
        scalars = np.zeros(2, dtype)
        bad += report("swa", dtype, compile_ptx(averaging.swa_cuda,
                                                (table, table, scalars, True)))
        bad += report("lerp", dtype, compile_ptx(averaging.lerp_cuda,
                                                 (table, table, scalars, True, True)))
        bad += report("fill", dtype, compile_ptx(_cuda._fill_loop,
                                                 (np.zeros(1, dtype), dtype(0))))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
