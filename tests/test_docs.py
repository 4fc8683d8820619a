"""The docs build without warnings, and the docstring examples run."""
from __future__ import annotations

import doctest
import importlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# every API module carries a runnable example in its docstrings
DOCSTRING_MODULES = ["nbopt.parameter", "nbopt.checkpoint", "nbopt.lr_scheduler", "nbopt.nn",
                     "nbopt.swa_utils", "nbopt.demo", "nbopt.functional"] + sorted(
    f"nbopt.optim.{f[:-3]}" for f in os.listdir(os.path.join(ROOT, "nbopt", "optim"))
    if f.endswith(".py") and not f.startswith("_"))


@pytest.mark.parametrize("name", DOCSTRING_MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # examples may write checkpoint files
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0


def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="Sphinx is the docs extra: pip install -e '.[docs]'")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                           "html", os.path.join(ROOT, "docs"), str(tmp_path / "html")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "html" / "index.html").exists()
