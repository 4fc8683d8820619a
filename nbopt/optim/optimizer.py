"""``torch.optim.optimizer``'s place in ``nbopt.optim``: the :class:`Optimizer`
base class and the global step-hook registrars of :mod:`nbopt.optimizer` (the
same objects).

``register_optimizer_step_pre_hook(hook)`` / ``register_optimizer_step_post_hook(hook)``
register ``hook(optimizer, args, kwargs)`` for the steps of every optimizer and
return a removable handle.

Examples
--------
>>> import numpy as np
>>> import nbopt.optim as optim
>>> calls = []
>>> handle = optim.optimizer.register_optimizer_step_post_hook(
...     lambda opt, args, kwargs: calls.append(type(opt).__name__))
>>> w = optim.optimizer.Parameter(np.zeros(2))
>>> w.grad = np.ones(2)
>>> optim.SGD([w], lr=0.1).step()
>>> handle.remove()
>>> calls
['SGD']
"""
from ..optimizer import (Optimizer, register_optimizer_step_post_hook,  # noqa: F401
                         register_optimizer_step_pre_hook, required)
from ..parameter import Parameter  # noqa: F401  (torch's module has torch's Tensor types)

__all__ = ["Optimizer", "register_optimizer_step_pre_hook", "register_optimizer_step_post_hook"]
