"""``torch.optim.lr_scheduler``'s place in ``nbopt.optim``: the schedulers of
:mod:`nbopt.lr_scheduler` (the same objects), so that ``import nbopt.optim as
optim; optim.lr_scheduler.StepLR(...)`` reads as it does with torch.

Examples
--------
>>> import numpy as np
>>> import nbopt.optim as optim
>>> w = optim.optimizer.Parameter(np.zeros(2))
>>> opt = optim.SGD([w], lr=1.0)
>>> sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
>>> opt.step(); sched.step()
>>> opt.param_groups[0]["lr"], optim.lr_scheduler.StepLR is __import__("nbopt").lr_scheduler.StepLR
(0.5, True)
"""
from ..lr_scheduler import *  # noqa: F401,F403
from ..lr_scheduler import __all__  # noqa: F401
