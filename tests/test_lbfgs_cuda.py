"""LBFGS's CUDA kernels without a GPU (the CPU suite's share of the CUDA tiers).

Tier 1 (the simulator) is tests/gpu/test_device_lbfgs.py, which
tests/test_cuda_tiers.py runs in a subprocess with every tests/gpu/test_*.py.
Here: tier 2, every kernel of nbopt/kernels/lbfgs.py compiled to PTX for
compute capability 9.0 (tests/gpu/ptx_check_lbfgs.py, in a subprocess: it
patches numba-cuda's device lookup), and the CPU path's independence from
numba.cuda.
"""
from __future__ import annotations

import os
import re
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
def test_lbfgs_cuda_kernels_compile_to_ptx_without_float64_in_float32_or_contraction():
    out = subprocess.run([sys.executable, os.path.join(HERE, "gpu", "ptx_check_lbfgs.py")],
                         capture_output=True, text=True, timeout=600)
    if out.returncode == 2:
        pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]')")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {tuple(line.split()[:2]): line for line in out.stdout.splitlines()
             if line.startswith("lbfgs_")}
    names = ["gather", "add", "copy", "memory", "pass", "stats", "lanes", "permute"]
    assert set(lines) == {(f"lbfgs_{n}", d) for n in names for d in ("float32", "float64")}
    for (name, dtype), line in lines.items():
        assert "fusable mul/add: 0" in line, line
        if dtype == "float32" and name != "lbfgs_lanes":
            assert "float64 instructions: 0," in line, line
    # p + t d and the two-loop updates are single fused multiply-adds, as on the CPU
    for name in ("lbfgs_add", "lbfgs_pass"):
        assert int(re.search(r"fma: (\d+)", lines[(name, "float32")]).group(1)) > 0
    assert out.stdout.rstrip().endswith("OK")


def test_cpu_lbfgs_never_imports_numba_cuda():
    code = ("import sys, numpy as np, nbopt\n"
            "w = nbopt.Parameter(np.linspace(-1, 1, 5))\n"
            "def closure():\n"
            "    w.grad = 2 * np.asarray(w)\n"
            "    return float(np.asarray(w) @ np.asarray(w))\n"
            "nbopt.LBFGS([w], line_search_fn='strong_wolfe').step(closure)\n"
            "print('numba.cuda' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cuda_kernels_reuse_the_cpu_passes_element_functions():
    """The maths of each pass is written once: the CUDA kernels and the CPU
    passes call the same element functions."""
    from nbopt.kernels import lbfgs as k

    for cuda_loop, element in [(k.lbfgs_add_cuda, "step_element"),
                               (k.lbfgs_memory_cuda, "memory_element"),
                               (k.lbfgs_pass_cuda, "recursion_element"),
                               (k.lbfgs_stats_cuda, "running_max")]:
        assert element in cuda_loop.__code__.co_names
    for cpu_loop, element in [(k.lbfgs_add, "_step_element"),
                              (k.lbfgs_memory, "_memory_element"),
                              (k.lbfgs_pass, "_recursion_element"),
                              (k.lbfgs_stats, "_running_max")]:
        assert element in cpu_loop.__code__.co_names
