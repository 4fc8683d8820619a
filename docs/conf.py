"""Sphinx configuration for the nbopt documentation.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Run the examples (``>>>`` blocks in these pages and in the docstrings)::

    python -m sphinx -b doctest docs docs/_build/doctest

nbopt must be importable (``pip install -e .``); ``sys.path`` is not touched.
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
# Built-in extensions only: no theme or extension outside Sphinx itself.
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "scheduler_plots",      # docs/_ext: draws each scheduler's plot at build time
]

exclude_patterns = ["_build"]
nitpicky = False

# -- autodoc -----------------------------------------------------------------
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
html_theme = "alabaster"
html_static_path = []
html_theme_options = {
    "description": "torch.optim for NumPy arrays, compiled by Numba",
}
