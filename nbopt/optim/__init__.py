"""API classes of the algorithms: validation, defaults, docstrings.

Each module here is the torch-facing half of one algorithm; its maths lives in
:mod:`nbopt.kernels` under the same name.
"""
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .asgd import ASGD
from .lbfgs import LBFGS
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD
from .sparse_adam import SparseAdam

__all__ = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam",
           "RMSprop", "Rprop", "SparseAdam", "LBFGS"]
