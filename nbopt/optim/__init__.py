"""API classes of the algorithms: validation, defaults, docstrings.

Each module here is the torch-facing half of one algorithm; its maths lives in
:mod:`nbopt.kernels` under the same name.
"""
from .adam import Adam, AdamW
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW"]
