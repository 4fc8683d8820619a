"""Tier 2 for Adafactor and Muon on device parameters (no GPU needed): every
CUDA kernel of :mod:`nbopt.kernels.adafactor` and :mod:`nbopt.kernels.muon`
compiles to PTX for compute capability 9.0, for float32 and float64
parameters; the float32 kernels hold no float64 arithmetic or conversion
(``adafactor_coef`` excepted: it is torch's Python arithmetic, in float64 by
design), and no kernel leaves a float product or sum unrounded.  Muon's work
matrices are float32 whatever the parameter dtype, so its ``normalize`` and
``gemm`` kernels are float32-only.  Needs NVVM (``pip install
"numba-cuda[cu13]"``):

    python tests/gpu/ptx_check_adafactor_muon.py

Exits 1 on a failure, 2 if NVVM is missing.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from gpu.ptx_check import compile_ptx, nvvm_missing, report  # noqa: E402


def adafactor_args(name: str, dtype):
    s = np.dtype(dtype).type
    vec = np.zeros(8, dtype)
    idx = np.zeros(2, np.int64)
    i = np.int64(1)
    return {
        "reduce": (vec, idx, i, i, i, i, vec, s(1), s(0.5), s(1e-3), s(0), i,
                   np.zeros((2, 4), dtype)),
        "variance": (vec, vec, s(0.5)),
        "u": (vec, idx, i, i, i, i, vec, vec, vec, vec, True, False, s(1e-6), s(1), vec),
        "coef": (i, vec, np.zeros((1, 9)), idx, np.zeros(2), np.zeros(2), np.zeros(2), vec),
        "apply": (vec, vec, idx, i, i, i, i, vec, s(0.9), True, True),
    }[name]


def muon_args(name: str, dtype):
    s = np.dtype(dtype).type
    mat = np.zeros((3, 4), dtype)
    x = np.zeros((3, 4), np.float32)
    f = np.float32
    return {
        "momentum": (mat, mat, x, s(0.05), s(0.95), True, False),
        "normalize": (np.zeros(8, np.float32), np.zeros(1, np.float32), f(1e-7)),
        "gemm": (x, x, x, x, f(1), f(0.5), True, True),
        "apply": (mat, x, s(0.99), s(-0.01), True),
    }[name]


def main() -> int:
    if nvvm_missing():
        return 2
    from nbopt.kernels import adafactor, muon

    bad = 0
    for name, kernel in adafactor.CUDA_KERNELS.items():
        for dtype in (np.float32, np.float64):
            bad += report(f"adafactor_{name}", dtype,
                          compile_ptx(kernel, adafactor_args(name, dtype)),
                          float64_allowed=name == "coef")
    for name, kernel in muon.CUDA_KERNELS.items():
        for dtype in ((np.float32,) if name in ("normalize", "gemm")
                      else (np.float32, np.float64)):
            bad += report(f"muon_{name}", dtype, compile_ptx(kernel, muon_args(name, dtype)))
    print("FAILED" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
