"""``torch.optim.swa_utils``'s place in ``nbopt.optim``: the objects of
:mod:`nbopt.swa_utils` (``AveragedModel``, ``SWALR``, ``update_bn`` and the
averaging functions).

Examples
--------
>>> import numpy as np
>>> import nbopt.optim as optim
>>> ema = optim.swa_utils.get_ema_avg_fn(0.5)
>>> float(ema(np.array(0.0), np.array(1.0), 1))
0.5
>>> optim.swa_utils.SWALR is __import__("nbopt").swa_utils.SWALR
True
"""
from ..swa_utils import *  # noqa: F401,F403
from ..swa_utils import __all__  # noqa: F401
