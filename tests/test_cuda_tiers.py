"""The CUDA kernels, verified without a GPU (issue 12, tiers 1 and 2).

Every element-wise algorithm's CUDA kernel is its CPU loop's body compiled by
numba-cuda around the same per-element function.  Tier 1 runs each kernel
under the CUDA simulator and compares it with the CPU kernel on the same
launch (tests/gpu/sim_check.py: bit-identical, with the Python ``fma``
reference rounding once); tier 2 compiles each kernel to PTX for compute
capability 9.0 and fails on float64 instructions in a float32 kernel
(tests/gpu/ptx_check.py).  Both run in subprocesses: the simulator must be
switched on before numba is imported.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import nbopt
from nbopt.registry import get

HERE = os.path.dirname(os.path.abspath(__file__))
ALGORITHMS = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam",
              "RAdam", "RMSprop", "Rprop"]

try:
    import numba_cuda  # noqa: F401
    HAVE_NUMBA_CUDA = True
except ImportError:
    HAVE_NUMBA_CUDA = False

requires_numba_cuda = pytest.mark.skipif(
    not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (the 'cuda' extra)")


def _run(script, *args, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, os.path.join(HERE, "gpu", script), *args],
                          capture_output=True, text=True, timeout=600, env=full)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_elementwise_algorithm_has_a_cuda_kernel(name):
    opt = getattr(nbopt, name)([nbopt.Parameter([1.0, 2.0])])
    spec = get(opt._algorithm)
    assert spec.cuda is not None, f"{name} has no CUDA kernel"
    # the CUDA loop takes the CPU loop's arguments
    cpu_args = spec.cpu[0].py_func.__code__.co_varnames[:spec.cpu[0].py_func.__code__.co_argcount]
    loop = spec.cuda.loop.__code__
    assert loop.co_varnames[:loop.co_argcount] == cpu_args


@requires_numba_cuda
@pytest.mark.parametrize("name", ALGORITHMS)
def test_simulated_cuda_kernel_equals_the_cpu_kernel(name):
    out = _run("sim_check.py", name, NUMBA_ENABLE_CUDASIM="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "max ulps 0" in out.stdout, out.stdout
    assert "DID NOT RUN" not in out.stdout


@requires_numba_cuda
@pytest.mark.parametrize("name", ALGORITHMS)
def test_cuda_kernel_compiles_to_ptx_without_float64_in_float32_or_contraction(name):
    out = _run("ptx_check.py", name)
    if out.returncode == 2:
        pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]')")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "float32" in out.stdout and "float64 in a float32 kernel" not in out.stdout
    assert "fusable mul/add: 0" in out.stdout and "ptxas may fuse" not in out.stdout


@requires_numba_cuda
def test_averaging_and_fill_kernels_compile_to_ptx_without_float64_in_float32():
    out = _run("ptx_check.py", "--helpers")
    if out.returncode == 2:
        pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]')")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("swa", "lerp", "fill"):
        assert re.search(rf"^{name} +float32 .*float64 instructions: 0, fusable mul/add: 0$",
                         out.stdout, re.M), out.stdout


_FOREIGN = ("import numpy as np, nbopt\n"
            "class Foreign:\n"
            "    __cuda_array_interface__ = dict(shape=(3,), typestr='<f4', strides=None,\n"
            "                                    data=(1 << 20, False), version=3)\n"
            "try:\n"
            "    nbopt.Parameter(Foreign())\n"
            "except RuntimeError as e:\n"
            "    print(e)\n")


@requires_numba_cuda
def test_a_device_array_without_a_gpu_is_a_clear_error():
    code = ("from numba import cuda\n"
            "if cuda.is_available():\n"
            "    raise SystemExit('has a GPU')\n" + _FOREIGN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, NUMBA_ENABLE_CUDASIM="0"))
    if "has a GPU" in out.stderr:
        pytest.skip("this machine has a GPU")
    assert "no CUDA GPU is available" in out.stdout, out.stdout + out.stderr


def test_a_device_array_without_numba_cuda_is_a_clear_error():
    code = "import sys\nsys.modules['numba.cuda'] = None\n" + _FOREIGN
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert "CUDA support is not installed: pip install 'nbopt[cuda]'" in out.stdout, \
        out.stdout + out.stderr


def test_cpu_use_never_imports_numba_cuda():
    code = ("import sys, numpy as np, nbopt\n"
            "w = nbopt.Parameter(np.ones(3, np.float32)); w.grad = np.ones(3, np.float32)\n"
            "nbopt.Adam([w]).step()\n"
            "print('numba.cuda' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@requires_numba_cuda
def test_the_gpu_script_runs_under_the_simulator():
    """tests/gpu/device_check.py is what tests/gpu/run.sh runs on a lent GPU;
    under the simulator (tiny sizes) its code paths run here."""
    out = _run("device_check.py", "--elements", "512", "SGD", "Adam", "RMSprop",
               NUMBA_ENABLE_CUDASIM="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "max ulps 0" in out.stdout and "copy kernel" in out.stdout
    assert out.stdout.count("of floor") == 1 and "RMSprop" in out.stdout.split("copy kernel")[1]


@requires_numba_cuda
@pytest.mark.parametrize("module", sorted(f for f in os.listdir(os.path.join(HERE, "gpu"))
                                          if f.startswith("test_") and f.endswith(".py")))
def test_device_parameters_through_the_api_under_the_simulator(module):
    """Each tests/gpu/test_*.py in its own process with the simulator on
    (test_device.py: every row of the parity table on device parameters equals
    the CPU path bit for bit; checkpoints, mixed devices, state edits,
    schedulers and errors)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NBOPT_CUDA_THREADS="8",
               NBOPT_CUDA_CHUNK_SIZE="16", PYTHONPATH=os.path.dirname(HERE))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:xdist", os.path.join(HERE, "gpu", module)],
                         capture_output=True, text=True, timeout=900, env=env,
                         cwd=os.path.dirname(HERE))
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout
