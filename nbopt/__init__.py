"""nbopt: torch.optim for NumPy arrays, with every update rule compiled by Numba.

The public names mirror ``torch.optim``: ``nbopt.Optimizer``, ``nbopt.SGD``,
``nbopt.Adam``, ``nbopt.AdamW``, plus ``nbopt.Parameter`` (``nn.Parameter``),
``nbopt.ParameterArena`` and ``nbopt.save`` / ``nbopt.load``.  Importing the
package compiles nothing: kernels are compiled (or loaded from Numba's disk
cache) the first time an algorithm steps.
"""
from .checkpoint import load, save
from .optim import SGD, Adam, AdamW
from .optimizer import Optimizer
from .parameter import Parameter, ParameterArena

__version__ = "0.1.0"

__all__ = ["Parameter", "ParameterArena", "Optimizer", "SGD", "Adam", "AdamW",
           "save", "load"]
