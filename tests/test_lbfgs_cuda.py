"""LBFGS's CUDA kernels without a GPU (the CPU suite's share of the CUDA tiers).

Tier 1 (the simulator) is tests/gpu/test_device_lbfgs.py, which
tests/test_cuda_tiers.py runs in a subprocess with every tests/gpu/test_*.py.
Tier 2 (PTX) is in tests/test_cuda_tiers.py.  Here: the CPU path's
independence from numba.cuda, and the element functions both paths share.
"""
from __future__ import annotations

from test_cuda_tiers import assert_never_imports_numba_cuda


def test_cpu_lbfgs_never_imports_numba_cuda():
    assert_never_imports_numba_cuda(
        "w = nbopt.Parameter(np.linspace(-1, 1, 5))\n"
        "def closure():\n"
        "    w.grad = 2 * np.asarray(w)\n"
        "    return float(np.asarray(w) @ np.asarray(w))\n"
        "nbopt.LBFGS([w], line_search_fn='strong_wolfe').step(closure)\n")


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
                              (k.lbfgs_memory, "_recursion_element"),
                              (k.lbfgs_pass, "_recursion_block"),
                              (k.lbfgs_two_loop, "_recursion_block"),
                              (k._recursion_block.py_func, "_recursion_element"),
                              (k.lbfgs_stats, "_running_max")]:
        assert element in cpu_loop.__code__.co_names
