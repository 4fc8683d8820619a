"""Start-up costs, each timed in a fresh interpreter (asv ``timeraw_``
benchmarks): ``import nbopt``, ``import numba`` for comparison, and the first
``Adam.step()`` of a new process with a cold and with a warm on-disk Numba
cache (the measurements of ``python -m nbopt bench``'s last two lines), and
Numba's own start-up, the part of that warm first step that is not nbopt's.  The
first step includes whatever nbopt defers to it (importing Numba, compiling
or loading the kernels).

A ``timeraw_`` benchmark returns code, or ``(code, setup)``; asv runs
``timeit(stmt=code, setup=setup, number=1)`` in a new ``python`` process for
every sample, so ``setup`` runs in that process, untimed, before ``code``.
"""
import os
import shutil
import subprocess
import sys
import tempfile


def timeraw_import_nbopt():
    """Cold ``import nbopt`` in a fresh interpreter (it must compile nothing)."""
    return "import nbopt"


def timeraw_import_numba():
    """``import numba`` alone: the floor under ``import nbopt``."""
    return "import numba"


def timeraw_numba_startup():
    """Numba's own start-up, NumPy already imported: ``import numba`` and the
    initialisation of its CPU target that any first call of a Numba function
    pays (typing and lowering registries; when SciPy is installed,
    ``numba.np.arraymath`` imports ``scipy.linalg`` to look for BLAS).  The
    floor under ``FirstStepWarmCache``."""
    return ("import numba\n"
            "from numba.core.registry import cpu_target\n"
            "cpu_target.target_context.refresh()\n", "import numpy")


# Timed, as in `python -m nbopt bench`: the first step, the optimizer made.
_FIRST_STEP = "opt.step()"


def _first_step_setup(size, cache_dir=None):
    """Untimed code for the fresh process: point Numba at ``cache_dir`` (a new
    empty directory, removed at exit, when None), import nbopt, make the
    parameter and the optimizer.  NUMBA_CACHE_DIR is read when numba is first
    imported, hence before ``import nbopt``."""
    if cache_dir is None:
        cache = ("import atexit, shutil, tempfile\n"
                 "os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp(prefix='nbopt-asv-cold-')\n"
                 "atexit.register(shutil.rmtree, os.environ['NUMBA_CACHE_DIR'], True)\n")
    else:
        cache = f"os.environ['NUMBA_CACHE_DIR'] = {cache_dir!r}\n"
    return ("import os\n" + cache
            + "import numpy as np\n"
              "import nbopt\n"
              "rng = np.random.default_rng(0)\n"
              f"p = nbopt.Parameter(rng.standard_normal({size}, dtype=np.float32))\n"
              f"p.grad = rng.standard_normal({size}, dtype=np.float32)\n"
              "opt = nbopt.Adam([p], lr=1e-3)\n")


# 1k runs the serial kernel, 1M the parallel one (above
# nbopt.config.PARALLEL_THRESHOLD): each is compiled or loaded on its own.
SIZES = [1_000, 1_000_000]


class FirstStepColdCache:
    """The first ``opt.step()`` of ``opt = nbopt.Adam([p])`` (made untimed) in
    a new process whose ``NUMBA_CACHE_DIR`` is a new empty directory: the step
    compiles its kernels and writes them to the cache.  ``p``: float32,
    ``size`` elements."""

    params = [SIZES]
    param_names = ["size"]
    # a sample compiles for seconds
    timeout = 600
    repeat = (1, 5, 60.0)

    def timeraw_first_step(self, size):
        return _FIRST_STEP, _first_step_setup(size)


class FirstStepWarmCache:
    """The first ``opt.step()`` of ``opt = nbopt.Adam([p])`` (made untimed) in
    a new process whose ``NUMBA_CACHE_DIR`` ``setup`` filled by running the
    same code once in another process: the step only loads its kernels from
    disk.  ``p``: float32, ``size`` elements."""

    params = [SIZES]
    param_names = ["size"]
    timeout = 600

    def setup(self, size):
        self.cache_dir = tempfile.mkdtemp(prefix="nbopt-asv-warm-")
        code = _first_step_setup(size, self.cache_dir) + _FIRST_STEP + "\n"
        subprocess.run([sys.executable, "-c", code], check=True)
        if not os.listdir(self.cache_dir):
            raise RuntimeError("the warm-up step wrote nothing to NUMBA_CACHE_DIR "
                               "(is NBOPT_CACHE=0 set?)")

    def teardown(self, size):
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def timeraw_first_step(self, size):
        return _FIRST_STEP, _first_step_setup(size, self.cache_dir)
