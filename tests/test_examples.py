"""The scripts under examples/ run, in their short modes."""
from __future__ import annotations

import os
import re
import subprocess
import sys

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
