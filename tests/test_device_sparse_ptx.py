"""Tier 2 for sparse gradients of GPU parameters (no GPU needed): the row
kernels (SparseAdam, Adagrad's sparse rule, SGD's scatter-add) compile to
PTX for compute capability 9.0 without float64 arithmetic in float32 and
without products or sums ptxas could fuse (tests/gpu/ptx_sparse_check.py,
in a subprocess: the simulator must be off there).  Their results against
the CPU path are tests/gpu/test_device_sparse.py's (tier 1, the simulator)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

try:
    import numba_cuda  # noqa: F401
    HAVE_NUMBA_CUDA = True
except ImportError:
    HAVE_NUMBA_CUDA = False


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (the 'cuda' extra)")
def test_sparse_row_kernels_compile_to_ptx_without_float64_in_float32_or_contraction():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, os.path.join(HERE, "gpu", "ptx_sparse_check.py")],
                         capture_output=True, text=True, timeout=600, env=env)
    if out.returncode == 2:
        pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]')")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("sparse_adam", "adagrad_rows", "scatter_add"):
        assert f"{name:12s} float32" in out.stdout, out.stdout
    assert "float64 in a float32 kernel" not in out.stdout
    assert out.stdout.count("fusable mul/add: 0") == 6 and "ptxas may fuse" not in out.stdout
