"""nbopt.set_flush_denormal (issue 13, part 5): torch's switch, on the calling
thread and on Numba's worker threads.  Run in a subprocess: the mode is
per-thread CPU state that must not leak into other tests."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CODE = r"""
import numpy as np, nbopt
from numba import njit, prange

@njit(parallel=True)
def halves(x):
    out = np.empty_like(x)
    for i in prange(x.size):
        out[i] = x[i] * np.float32(0.5)
    return out

tiny = np.full(64, 1e-39, np.float32)            # subnormal
assert halves(tiny)[0] != 0 and (tiny * np.float32(0.5))[0] != 0
print(nbopt.set_flush_denormal(True))
print(int(np.count_nonzero(halves(tiny))), int(np.count_nonzero(tiny * np.float32(0.5))))
# an Adam step whose moments are subnormal flushes them to zero
w = nbopt.Parameter(np.ones(4, np.float32))
opt = nbopt.Adam([w], lr=1e-3)
w.grad = np.full(4, 1e-39, np.float32)
opt.step()
print(int(np.count_nonzero(opt.state[w]["exp_avg"])))
print(nbopt.set_flush_denormal(False))
print(int(np.count_nonzero(halves(tiny))), int(np.count_nonzero(tiny * np.float32(0.5))))
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="MXCSR's FTZ/DAZ bits are x86-64 only")
def test_flush_denormal_on_every_thread_and_back():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         timeout=300, env={"NUMBA_NUM_THREADS": "2",
                                           **__import__("os").environ})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines == ["True", "0", "0", "0", "True", "64", "64"], out.stdout
