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

import json
import math
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


def _run_ptx(script, *args):
    """``_run`` of a tier 2 (PTX) script, which must succeed; skips where
    NVVM is not installed (the script's exit status 2)."""
    out = _run(script, *args)
    if out.returncode == 2:
        pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]')")
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _assert_clean_float32_ptx(out, names):
    """Every kernel of ``names`` has a float32 row with no float64
    instruction and no fusable mul/add."""
    for name in names:
        assert re.search(rf"^{name} +float32 .*float64 instructions: 0, fusable mul/add: 0,",
                         out.stdout, re.M), out.stdout


def assert_never_imports_numba_cuda(code):
    """``code``, run in a fresh interpreter after ``import sys, numpy as np,
    nbopt``, succeeds without importing numba.cuda."""
    out = subprocess.run([sys.executable, "-c", "import sys, numpy as np, nbopt\n" + code
                          + "print('numba.cuda' in sys.modules)\n"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


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
    out = _run_ptx("ptx_check.py", name)
    assert "float32" in out.stdout and "float64 in a float32 kernel" not in out.stdout
    assert "fusable mul/add: 0" in out.stdout and "ptxas may fuse" not in out.stdout


# NumPy 2.5 as numba-cuda meets it: no ``np.row_stack``, which numba-cuda
# 0.30.4 overloads when its array typing loads (every kernel compile failed)
_WITHOUT_ROW_STACK = """
import runpy, sys
import numpy as np
if hasattr(np, "row_stack"):
    del np.row_stack
    np.__all__ = [n for n in np.__all__ if n != "row_stack"]
sys.argv = [sys.argv[1], "Adam"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    print("numpy has row_stack after:", hasattr(np, "row_stack"))
    raise
"""


@requires_numba_cuda
def test_kernels_compile_where_numpy_has_no_row_stack():
    out = subprocess.run([sys.executable, "-c", _WITHOUT_ROW_STACK,
                          os.path.join(HERE, "gpu", "ptx_check.py")],
                         capture_output=True, text=True, timeout=600)
    if out.returncode == 2:
        pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]')")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^adam +float32 .*float64 instructions: 0,", out.stdout, re.M), out.stdout
    assert "numpy has row_stack after: False" in out.stdout


@requires_numba_cuda
def test_averaging_and_fill_kernels_compile_to_ptx_without_float64_in_float32():
    out = _run_ptx("ptx_check.py", "--helpers")
    _assert_clean_float32_ptx(out, ("swa", "lerp", "fill"))


@requires_numba_cuda
def test_lbfgs_cuda_kernels_compile_to_ptx_without_float64_in_float32_or_contraction():
    out = _run_ptx("ptx_check_lbfgs.py")
    lines = {tuple(line.split()[:2]): line for line in out.stdout.splitlines()
             if line.startswith("lbfgs_")}
    names = ["gather", "add", "copy", "memory", "pass", "stats", "lanes", "permute"]
    assert set(lines) == {(f"lbfgs_{n}", d) for n in names for d in ("float32", "float64")}
    for (name, dtype), line in lines.items():
        assert "fusable mul/add: 0" in line, line
        if dtype == "float32" and name != "lbfgs_lanes":   # lanes sums in float64, as the CPU
            assert "float64 instructions: 0," in line, line
    # p + t d and the two-loop updates are single fused multiply-adds, as on the CPU
    for name in ("lbfgs_add", "lbfgs_pass"):
        assert int(re.search(r"fma: (\d+)", lines[(name, "float32")]).group(1)) > 0
    assert out.stdout.rstrip().endswith("OK")


@requires_numba_cuda
def test_adafactor_and_muon_cuda_kernels_compile_to_ptx_without_float64_in_float32():
    out = _run("ptx_check_adafactor_muon.py")
    if out.returncode == 2:
        pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]')")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {tuple(line.split()[:2]): line for line in out.stdout.splitlines()
             if line.startswith(("adafactor_", "muon_"))}
    expected = {(f"adafactor_{n}", d) for n in ("reduce", "variance", "u", "coef", "apply")
                for d in ("float32", "float64")}
    expected |= {(f"muon_{n}", d) for n in ("momentum", "apply") for d in ("float32", "float64")}
    expected |= {("muon_normalize", "float32"), ("muon_gemm", "float32")}
    assert set(lines) == expected
    for (name, dtype), line in lines.items():
        assert "fusable mul/add: 0" in line, line
        if dtype == "float32" and name != "adafactor_coef":   # torch's Python maths: float64
            assert "float64 instructions: 0," in line, line
    # the GEMM accumulates with fused multiply-adds
    assert int(re.search(r"fma: (\d+)", lines[("muon_gemm", "float32")]).group(1)) > 0
    assert out.stdout.rstrip().endswith("OK")


@requires_numba_cuda
def test_8bit_step_kernel_compiles_to_ptx_without_float64_in_float32_or_contraction():
    out = _run_ptx("ptx_check_optim8bit.py")
    lines = {tuple(line.split()[:2]): line for line in out.stdout.splitlines()
             if line.startswith("quantized_step8")}
    assert set(lines) == {("quantized_step8", "float32"), ("quantized_step8", "float64")}
    _assert_clean_float32_ptx(out, ("quantized_step8",))
    assert "fusable mul/add: 0" in lines[("quantized_step8", "float64")]
    assert out.stdout.rstrip().endswith("OK")


@requires_numba_cuda
def test_sparse_row_kernels_compile_to_ptx_without_float64_in_float32_or_contraction():
    out = _run_ptx("ptx_sparse_check.py")
    _assert_clean_float32_ptx(out, ("sparse_adam", "adagrad_rows", "scatter_add"))
    assert "ptxas may fuse" not in out.stdout


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
    assert_never_imports_numba_cuda(
        "w = nbopt.Parameter(np.ones(3, np.float32)); w.grad = np.ones(3, np.float32)\n"
        "nbopt.Adam([w]).step()\n")


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


@requires_numba_cuda
def test_cuda_bench_runs_under_the_simulator(tmp_path):
    """``python -m nbopt bench --device cuda`` (what tests/gpu/run.sh runs on a
    lent GPU) with tiny sizes under the simulator: one table row per
    (algorithm, workload) with finite positive numbers, and its --json."""
    root = os.path.dirname(HERE)
    path = tmp_path / "rows.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NBOPT_CUDA_THREADS="8",
               NBOPT_CUDA_CHUNK_SIZE="16", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-m", "nbopt", "bench", "--device", "cuda", "--sizes",
                          "64,3x16,3x16@arena,3x16@newgrads", "--repeat", "2",
                          "--algorithms", "Adam,SGD", "--no-torch", "--json", str(path)],
                         capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "timings mean nothing" in out.stdout and "torch skipped (--no-torch)" in out.stdout
    workloads = ["1x64", "3x16", "3x16@arena", "3x16@newgrads"]
    cells = {}
    for line in out.stdout.splitlines():
        words = line.split()
        if words and words[0] in ("Adam", "SGD"):
            cells[words[0], words[1]] = words
    assert sorted(cells) == sorted((a, w) for a in ("Adam", "SGD") for w in workloads)
    for words in cells.values():
        # algorithm workload dtype floor-GB/s time unit nbopt/floor [target]
        numbers = [float(words[3]), float(words[4]), float(words[6].rstrip("x"))]
        assert all(math.isfinite(x) and x > 0 for x in numbers), words
        assert words[2] == "f32" and words[5] in ("us", "ms")
    rows = json.loads(path.read_text())
    assert [(r["algorithm"], r["workload"]) for r in rows] == [
        (a, w) for w in workloads for a in ("Adam", "SGD")]
    for r in rows:
        assert r["bytes_per_element"] == {"Adam": 28, "SGD": 20}[r["algorithm"]]
        for key in ("floor_s", "nbopt_s", "floor_GBps", "nbopt_GBps", "nbopt_over_floor"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["target_met"] is None and "torch_reference" not in r


@requires_numba_cuda
def test_cuda_bench_targets_and_verdicts():
    from nbopt.cli import bench_cuda

    assert bench_cuda.target(100_000_000, False, False) == pytest.approx(1 / 0.85)
    assert bench_cuda.target(100_000, False, False) == pytest.approx(1 / 0.85)
    assert bench_cuda.target(1000, False, False) is None
    assert bench_cuda.target(100_000, True, False) is None          # arenas: reported only
    assert bench_cuda.target(100_000, False, True) is None
    assert bench_cuda.torch_target("Adagrad") == ("fused", 1.0)
    assert bench_cuda.torch_target("NAdam") == ("foreach", 2.0)

    def row(name, nbopt_s, **torch_s):
        return {"algorithm": name, "elements": 10**8, "bytes_per_element": 28,
                "floor_s": 1e-3, "nbopt_s": nbopt_s, **torch_s}

    r = bench_cuda.summarize(row("Adam", 1.1e-3, torch_fused_s=1.2e-3, torch_foreach_s=2e-3),
                             10**8, False, False)
    assert r["floor_GBps"] == pytest.approx(2800) and r["nbopt_over_floor"] == pytest.approx(1.1)
    assert r["target_met"] is True and r["torch_reference"] == "fused"
    assert r["torch_over_nbopt"] == pytest.approx(1.2 / 1.1) and r["torch_verdict"] == "ok"
    r = bench_cuda.summarize(row("Adam", 1.2e-3, torch_fused_s=1.1e-3), 10**8, False, False)
    assert r["target_met"] is False and r["torch_verdict"] == "NO"
    r = bench_cuda.summarize(row("Adam", 1.2e-3, torch_fused_s=0.9e-3), 10**8, False, False)
    assert r["torch_verdict"] == "NO*"          # torch fused beats the floor itself
    # no fused kernel in this torch: compared with foreach, at the fused target
    r = bench_cuda.summarize(row("SGD", 1e-3, torch_foreach_s=1.5e-3), 10**8, False, False)
    assert r["torch_reference"] == "foreach" and r["torch_target"] == ">= 1x torch foreach"
    r = bench_cuda.summarize(row("NAdam", 1.5e-3, torch_foreach_s=2.5e-3), 1000, False, False)
    assert r["target_met"] is None and r["torch_verdict"] == "NO"   # 1.7x < 2x, reachable
    r = bench_cuda.summarize(row("NAdam", 1e-3, torch_foreach_s=1.9e-3), 1000, False, False)
    assert r["torch_verdict"] == "NO*"          # foreach within 2x the floor
    assert "torch_reference" not in bench_cuda.summarize(row("NAdam", 1e-3), 1000, False, False)
