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
# torch.optim's other public names: the base class and its module, the
# schedulers and SWA (the objects of nbopt.optimizer, nbopt.lr_scheduler and
# nbopt.swa_utils), so that ``import nbopt.optim as optim`` works wherever
# ``import torch.optim as optim`` did
from ..optimizer import Optimizer
from . import lr_scheduler, optimizer, swa_utils  # noqa: E402,F401

__all__ = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam",
           "RMSprop", "Rprop", "SparseAdam", "LBFGS", "Adafactor",
           "Muon", "swap_in_optimizer_params_and_state", "Optimizer", "lr_scheduler",
           "swa_utils"]
