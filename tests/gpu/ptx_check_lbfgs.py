"""Tier 2 for LBFGS (no GPU needed): every CUDA kernel of
:mod:`nbopt.kernels.lbfgs` compiles to PTX for compute capability 9.0, for
float32 and float64 vectors; the float32 kernels hold no float64 arithmetic
or conversion, and no kernel leaves a float product or sum unrounded
(``mul.f32`` rather than ``mul.rn.f32``: ptxas could fuse it where the CPU
rounds twice).  ``lanes`` adds each chunk's lanes in float64 for every
dtype, as the CPU does, so float64 instructions are expected there and
nowhere else.  Needs NVVM (``pip install "numba-cuda[cu13]"``):

    python tests/gpu/ptx_check_lbfgs.py

Exits 1 on a failure, 2 if NVVM is missing.
"""
from __future__ import annotations

import os
import re
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

CC = (9, 0)
FLOAT64 = re.compile(r"\.f64\b")
CONTRACTIBLE = re.compile(r"^\s*(mul|add|sub)\.f(32|64)\b")
FMA = re.compile(r"^\s*fma\.rn\.f(32|64)\b")


def launch_args(name: str, dtype):
    """Arguments of one launch of kernel ``name`` over ``dtype`` vectors (host
    arrays: only their types matter here)."""
    dtype = np.dtype(dtype)
    s = dtype.type
    vec = np.zeros(40, dtype)
    table = np.zeros((2, 3), np.int64)
    chunks = np.zeros((2, 3), np.int64)
    lanes = np.zeros((2, 3, 256), dtype)
    zero = s(0)
    return {
        "gather": (table, chunks, vec, vec, True, zero, lanes),
        "add": (table, chunks, s(0.5), vec, zero, lanes),
        "copy": (table, chunks, vec, True),
        "memory": (vec, vec, vec, s(0.5), vec, vec, zero, lanes),
        "pass": (vec, vec, s(0.5), s(2), vec, np.int64(1), zero, lanes),
        "stats": (vec, zero, lanes),
        "lanes": (lanes, np.int64(2), np.int64(1), np.zeros((2, 3))),
        "permute": (vec, vec, np.zeros(40, np.int64), True),
    }[name]


def compile_ptx(kernel, args):
    from numba import cuda
    from numba.cuda import dispatcher
    from numba.cuda.typing.typeof import typeof

    # device functions are compiled for the current device's compute
    # capability; without a GPU, say 9.0 (as tests/gpu/ptx_check.py)
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)
    from nbopt.kernels._cuda import no_contraction

    compiled = kernel.get()
    signature = tuple(typeof(a) for a in args)
    with no_contraction():
        ptx, _ = cuda.compile_ptx(compiled.py_func, signature, cc=CC)
    return ptx


def main() -> int:
    try:
        from numba.cuda.cudadrv.nvvm import NVVM
        NVVM()
    except Exception as exc:  # noqa: BLE001
        print(f"NVVM is not available ({exc}): pip install 'numba-cuda[cu13]'")
        return 2
    from nbopt.kernels.lbfgs import CUDA_KERNELS

    bad = 0
    for name, kernel in CUDA_KERNELS.items():
        for dtype in (np.float32, np.float64):
            ptx = compile_ptx(kernel, launch_args(name, dtype))
            lines = ptx.splitlines()
            f64 = [line.strip() for line in lines if FLOAT64.search(line)]
            fusable = [line.strip() for line in lines if CONTRACTIBLE.search(line)]
            fmas = sum(1 for line in lines if FMA.search(line))
            wrong = dtype == np.float32 and name != "lanes" and bool(f64)
            bad += wrong + bool(fusable)
            print(f"lbfgs_{name:8s} {dtype.__name__:7s} {len(lines):5d} PTX lines, "
                  f"float64 instructions: {len(f64)}, fusable mul/add: {len(fusable)}, "
                  f"fma: {fmas}"
                  + ("  <- float64 in a float32 kernel: " + "; ".join(f64[:3]) if wrong else "")
                  + ("  <- ptxas may fuse: " + "; ".join(fusable[:3]) if fusable else ""))
    print("FAILED" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
