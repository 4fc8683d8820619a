"""The docs build without warnings, and the docstring examples run."""
from __future__ import annotations

import doctest
import importlib
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# every API module carries a runnable example in its docstrings
DOCSTRING_MODULES = ["nbopt.parameter", "nbopt.checkpoint", "nbopt.lr_scheduler", "nbopt.nn",
                     "nbopt.swa_utils", "nbopt.cli.demo", "nbopt.functional",
                     "nbopt._warmup"] + sorted(
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
    html = tmp_path / "html"
    assert (html / "index.html").exists()
    # the formulas render offline: MathJax is shipped with the pages and every
    # script is loaded from them, none from a CDN
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    pages = {p: p.read_text() for p in html.rglob("*.html")}
    algorithms = pages[html / "api" / "algorithms.html"]
    assert 'src="../_static/mathjax/tex-chtml.js"' in algorithms and r"\(" in algorithms
    for path, text in pages.items():
        assert not re.search(r'<script[^>]*src="(https?:)?//', text), path
    # the scientific Python theme (wide content: code blocks are not cut off)
    assert "pydata-sphinx-theme.css" in pages[html / "index.html"]


def _words(path) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return " ".join(f.read().split())


def test_readme_says_what_the_tests_print_and_how_to_build_the_docs():
    from conftest import requires_torch

    readme = _words("README.md")
    # the skip reason a run without torch shows, word for word
    assert requires_torch.kwargs["reason"] in readme
    assert "N passed, M skipped in" in readme
    build = "python -m sphinx -W --keep-going -b html docs docs/_build/html"
    assert build in readme
    assert "python -m sphinx -W --keep-going -q -b html docs docs/_build/html" in _words(".ci/run")


def test_license_and_one_version_source():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11's tomllib reads pyproject.toml")
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert text.startswith("BSD 3-Clause License") and "Copyright (c) nbopt developers" in text
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    project = meta["project"]
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    # the version is written once, in nbopt/__init__.py
    assert "version" not in project and project["dynamic"] == ["version"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nbopt.__version__"}
    import nbopt

    assert nbopt.__version__.count(".") == 2
