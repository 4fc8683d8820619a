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
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from gpu.ptx_check import compile_ptx, nvvm_missing, report  # noqa: E402


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


def main() -> int:
    if nvvm_missing():
        return 2
    from nbopt.kernels.lbfgs import CUDA_KERNELS

    bad = 0
    for name, kernel in CUDA_KERNELS.items():
        for dtype in (np.float32, np.float64):
            # lanes adds each chunk's lanes in float64, as the CPU does
            bad += report(f"lbfgs_{name}", dtype, compile_ptx(kernel, launch_args(name, dtype)),
                          float64_allowed=name == "lanes")
    print("FAILED" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
