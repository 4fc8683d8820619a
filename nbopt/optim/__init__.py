"""API classes of the algorithms: validation, defaults, docstrings.

Each module here is the torch-facing half of one algorithm; its maths lives in
:mod:`nbopt.kernels` under the same name.
"""
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .asgd import ASGD
from .lbfgs import LBFGS
from .muon import Muon
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD
from .sparse_adam import SparseAdam
from ._stateless import swap_in_optimizer_params_and_state

__all__ = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam",
           "RMSprop", "Rprop", "SparseAdam", "LBFGS", "Adafactor",
           "Muon", "swap_in_optimizer_params_and_state"]
