"""The scripts under examples/ run, in their short modes."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_particle_relaxation_inside_njit_matches_the_class_api():
    text = _run("examples/particles_relax.py", "--quick")
    assert "same positions bit for bit: True" in text
    first, last = map(float, re.search(r"energy ([\d.]+) -> ([\d.]+)", text).groups())
    assert last < first                       # it relaxed
    assert re.search(r"inside njit .*: +[\d.]+ us/step", text)


def test_quickstart_runs():
    assert _run("examples/quickstart.py").strip()


# Gradients from other libraries (issue 16): each example runs when its
# library is installed, and is skipped, with the reason, when it is not.
def test_autograd_example_trains():
    pytest.importorskip("autograd", reason="HIPS autograd is not installed: pip install autograd")
    text = _run("examples/autograd_logistic.py")
    first, last, accuracy = map(float, re.search(
        r"loss ([\d.]+) -> ([\d.]+), accuracy ([\d.]+)", text).groups())
    assert last < 0.5 * first and accuracy > 0.95


def test_jax_example_trains():
    pytest.importorskip("jax", reason="JAX is not installed: pip install jax")
    text = _run("examples/jax_regression.py")
    first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", text).groups())
    assert last < 0.05 * first


def test_torch_bridge_example_matches_torch_optim():
    pytest.importorskip("torch", reason="torch is not installed: pip install torch")
    text = _run("examples/torch_bridge.py")
    ours = re.search(r"nbopt.torch.AdamW: loss ([\d.]+) -> ([\d.]+)", text).groups()
    theirs = re.search(r"torch.optim.AdamW: loss ([\d.]+) -> ([\d.]+)", text).groups()
    assert ours == theirs and float(ours[1]) < 0.1 * float(ours[0])
    assert float(re.search(r"relative difference of the losses: ([\d.e+-]+)", text)
                 .group(1)) < 1e-4
