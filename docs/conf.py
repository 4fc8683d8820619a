"""Sphinx configuration for the nbopt documentation.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Run the examples (``>>>`` blocks in these pages and in the docstrings)::

    python -m sphinx -b doctest docs docs/_build/doctest

nbopt must be importable (``pip install -e .``); ``sys.path`` is not touched.
The theme and the offline MathJax come with the docs extra:
``pip install -e ".[docs]"``.
"""
import nbopt

# docs/_ext holds this project's own Sphinx extensions (scheduler plots)
import os, sys  # noqa: E401,E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

# -- project -----------------------------------------------------------------
project = "nbopt"
author = "the nbopt developers"
copyright = "the nbopt developers"
release = nbopt.__version__
version = ".".join(release.split(".")[:2])

# -- general -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax shipped with the built docs (copied into _static/mathjax and
    # loaded from there), so the formulas render offline, not from a CDN
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "scheduler_plots",      # docs/_ext: draws each scheduler's plot at build time
]

exclude_patterns = ["_build"]
nitpicky = False

# -- autodoc -----------------------------------------------------------------
try:  # nbopt.distributed imports mpi4py (the mpi extra); document it without one too
    import mpi4py  # noqa: F401
except ImportError:
    autodoc_mock_imports = ["mpi4py"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"

# -- napoleon: numpy-style docstrings ---------------------------------------
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# The algorithm docstrings have a "State" section listing the keys of
# ``optimizer.state[p]``.  It is not one of numpydoc's sections: without this,
# napoleon silently folds it into the preceding Parameters section as a bogus
# parameter named "State".  Declared here, it renders as its own rubric, like
# "Notes".
napoleon_custom_sections = ["State"]

# -- doctest -----------------------------------------------------------------
# Docstring examples of nbopt.save / nbopt.load call ``save`` and ``load``
# unqualified (they are written for their own module's namespace).
doctest_global_setup = """
import numpy as np
import nbopt
from nbopt import save, load
"""

# -- HTML --------------------------------------------------------------------
# The theme of NumPy, SciPy and pandas: a wide content column, so the long
# code blocks and tables are not cut off as they were with alabaster's
html_theme = "pydata_sphinx_theme"
html_static_path = []
html_title = "nbopt: torch.optim for NumPy arrays, compiled by Numba"
html_theme_options = {
    # no links to online services: the docs work offline
    "navigation_with_keys": False,
}
