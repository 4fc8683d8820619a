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

from gpu.ptx_check import CC, CONTRACTIBLE, FLOAT64  # noqa: E402


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


def compile_ptx(kernel, signature) -> str:
    import types as pytypes

    from numba import cuda
    from numba.cuda import dispatcher

    from nbopt.kernels._cuda import no_contraction

    # device functions compile for the current device's compute capability;
    # without a GPU, say 9.0 (as ptx_check.py does)
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=CC)
    with no_contraction():
        ptx, _ = cuda.compile_ptx(kernel.get().py_func, signature, cc=CC)
    return ptx


def main() -> int:
    try:
        from numba.cuda.cudadrv.nvvm import NVVM
        NVVM()
    except Exception as exc:  # noqa: BLE001
        print(f"NVVM is not available ({exc}): pip install 'numba-cuda[cu13]'")
        return 2
    bad = 0
    for dtype in (np.float32, np.float64):
        for name, kernel, signature in kernels(dtype):
            lines = compile_ptx(kernel, signature).splitlines()
            f64 = [line.strip() for line in lines if FLOAT64.search(line)]
            fusable = [line.strip() for line in lines if CONTRACTIBLE.search(line)]
            wrong = dtype == np.float32 and bool(f64)
            bad += wrong + bool(fusable)
            print(f"{name:12s} {dtype.__name__:7s} {len(lines):5d} PTX lines, "
                  f"float64 instructions: {len(f64)}, fusable mul/add: {len(fusable)}"
                  + ("  <- float64 in a float32 kernel: " + "; ".join(f64[:3]) if wrong else "")
                  + ("  <- ptxas may fuse: " + "; ".join(fusable[:3]) if fusable else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
