"""nbopt: torch.optim for NumPy arrays, with every update rule compiled by Numba.

The public names mirror ``torch.optim``: ``nbopt.Optimizer`` and the
algorithms (``nbopt.SGD``, ``nbopt.Adam``, ``nbopt.AdamW``, ``nbopt.Adagrad``,
``nbopt.Adadelta``, ``nbopt.Adamax``, ``nbopt.ASGD``, ``nbopt.NAdam``,
``nbopt.RAdam``, ``nbopt.RMSprop``, ``nbopt.Rprop``, ``nbopt.SparseAdam``,
``nbopt.LBFGS``, ``nbopt.Adafactor``, ``nbopt.Muon``; the 8-bit-state ``nbopt.Adam8bit``,
``nbopt.AdamW8bit``, ``nbopt.SGD8bit``, ``nbopt.RMSprop8bit``, ``nbopt.Adagrad8bit``),
``nbopt.lr_scheduler``, ``nbopt.swa_utils``,
plus ``nbopt.Parameter`` (``nn.Parameter``),
``nbopt.ParameterArena`` and ``nbopt.save`` / ``nbopt.load``.  Importing the
package compiles nothing: kernels are compiled (or loaded from Numba's disk
cache) the first time an algorithm steps.  ``nbopt.torch`` (loaded on first
access; it is the only module that imports torch) has the same optimizers for
CPU torch tensors, and ``nbopt.optim`` is laid out as ``torch.optim``.
"""
from .checkpoint import load, save
from .config import get_num_threads, set_flush_denormal, set_num_threads
from .optim import (ASGD, LBFGS, SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW, Muon,
                    NAdam, RAdam, RMSprop, Rprop, SparseAdam, swap_in_optimizer_params_and_state)
from .optimizer import Optimizer
from .optim.optim8bit import Adagrad8bit, Adam8bit, AdamW8bit, RMSprop8bit, SGD8bit
from . import lr_scheduler  # noqa: E402  (needs Optimizer; as torch.optim.lr_scheduler)
from . import nn, swa_utils  # noqa: E402
from .parameter import DeviceParameter, Parameter, ParameterArena, SparseGrad
from ._warmup import warmup  # noqa: E402  (compiles nothing until called)

__version__ = "0.1.0"

__all__ = ["Parameter", "DeviceParameter", "ParameterArena", "SparseGrad", "Optimizer", "SGD",
           "Adam", "AdamW",
           "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam", "RMSprop", "Rprop",
           "SparseAdam", "LBFGS", "Adafactor", "Muon", "Adam8bit", "AdamW8bit", "SGD8bit",
           "RMSprop8bit", "Adagrad8bit", "lr_scheduler", "nn", "swa_utils", "save",
           "load",
           "set_num_threads", "get_num_threads", "set_flush_denormal",
           "swap_in_optimizer_params_and_state", "warmup"]


def __getattr__(name):
    # ``nbopt.torch`` (the torch bridge) imports torch: loaded on first use only,
    # so that ``import nbopt`` never imports torch
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
