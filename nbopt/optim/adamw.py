"""``torch.optim.adamw``: the :class:`AdamW` class (defined with
:class:`nbopt.Adam` in :mod:`nbopt.optim.adam`) and the functional
:func:`adamw`."""
from __future__ import annotations

from ._functional_core import functional_step
from .adam import AdamW

__all__ = ["AdamW", "adamw"]


def adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, foreach=None,
          capturable=False, differentiable=False, fused=None, grad_scale=None, found_inf=None,
          has_complex=False, *, amsgrad, beta1, beta2, lr, weight_decay, eps, maximize):
    r"""Functional API that performs AdamW algorithm computation, as
    ``torch.optim.adamw.adamw``.

    See :class:`nbopt.AdamW` for the update rule.  As :func:`nbopt.optim.adam.adam`, whose step
    it takes with decoupled weight decay.  Everything is updated in place; see
    :ref:`functional-api` for the conventions (what is validated before anything changes, and
    how nbopt differs).

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt.optim.adamw import adamw
    >>> w = np.ones(2)
    >>> m, v, step = np.zeros(2), np.zeros(2), np.array(0.0, np.float32)
    >>> adamw([w], [np.zeros(2)], [m], [v], [], [step], amsgrad=False, beta1=0.9,
    ...       beta2=0.999, lr=0.1, weight_decay=0.1, eps=1e-8, maximize=False)
    >>> w
    array([0.99, 0.99])
    """
    functional_step("adamw", locals())
