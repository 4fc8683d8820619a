"""Tier 2 for the 8-bit optimizers on device parameters (no GPU needed): the
step kernel of :mod:`nbopt.kernels.quantized` (``step8_cuda``: decode, the
element function, a shared-memory absmax, encode) compiles to PTX for
compute capability 9.0 for float32 and float64 parameters; the float32 kernel
holds no float64 arithmetic or conversion, and no kernel leaves a float
product or sum unrounded.  Needs NVVM (``pip install "numba-cuda[cu13]"``):

    python tests/gpu/ptx_check_optim8bit.py

Exits 1 on a failure, 2 if NVVM is missing.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from gpu.ptx_check import compile_ptx, nvvm_missing, report  # noqa: E402


def step8_args(dtype):
    """The launch's argument types (see nbopt.optim._optim8bit_cuda.step)."""
    from nbopt.kernels import quantized as Q

    table = np.zeros((1, Q.TABLE_COLUMNS), np.int64)
    chunks = np.zeros((1, 3), np.int64)
    scalars = np.zeros((1, Q.N_SCALARS), dtype)
    qmap, mids, lut = Q.tables(True)
    return (table, chunks, scalars, np.zeros(0, dtype), qmap, mids, lut, qmap, mids, lut,
            np.int64(0), True, False, False, True, False, True, np.int64(Q.BLOCKSIZE))


def main() -> int:
    if nvvm_missing():
        return 2
    from nbopt.kernels import quantized as Q

    bad = 0
    for dtype in (np.float32, np.float64):
        bad += report("quantized_step8", dtype, compile_ptx(Q.step8_cuda, step8_args(dtype)))
    print("FAILED" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
