"""Tier 2 for the sparse-gradient row kernels of GPU parameters (SparseAdam's
and Adagrad's rows, SGD's scatter-add): each compiles to PTX for compute
capability 9.0 as it is launched (argument types of
nbopt.kernels._sparse_cuda's launches), its float32 PTX holds no float64
instruction, and no float product or sum is left unrounded (see
ptx_check.py).  Needs NVVM, not a GPU and not the simulator:

    python tests/gpu/ptx_sparse_check.py

Exits 1 on a finding, 2 if NVVM is missing.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from gpu.ptx_check import compile_ptx, nvvm_missing, report  # noqa: E402


def kernels(dtype):
    """``(name, CudaKernel, argument types)`` of each row kernel for ``dtype``."""
    from numba.cuda import types

    from nbopt.kernels._sparse import scatter_add_cuda_kernel
    from nbopt.kernels.adagrad import adagrad_rows_cuda
    from nbopt.kernels.sparse_adam import sparse_adam_cuda

    f = types.float32 if dtype == np.float32 else types.float64
    vec, ints, rows = f[::1], types.int64[::1], f[:, ::1]
    b = types.boolean
    return [
        ("sparse_adam", sparse_adam_cuda, (vec, vec, vec, ints, ints, rows, f, f, f, f, b, b)),
        ("adagrad_rows", adagrad_rows_cuda, (vec, vec, ints, ints, rows, f, f, b, b, b)),
        ("scatter_add", scatter_add_cuda_kernel,
         (vec, ints, ints, rows, ints, ints, f, b, b, b)),
    ]


def main() -> int:
    if nvvm_missing():
        return 2
    bad = 0
    for dtype in (np.float32, np.float64):
        for name, kernel, signature in kernels(dtype):
            bad += report(name, dtype, compile_ptx(kernel, signature))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
