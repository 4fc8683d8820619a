"""``nbopt.SGD``: stochastic gradient descent with momentum (torch.optim.SGD)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_fused_flags, check_tensor_lr

__all__ = ["SGD", "sgd"]


class SGD(ElementwiseOptimizer):
    r"""Stochastic gradient descent, optionally with momentum, as ``torch.optim.SGD``.

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        b_t &= \begin{cases} g_t & \text{first step} \\
                             \mu\, b_{t-1} + (1-\tau)\, g_t & \text{afterwards}\end{cases} \\
        g_t &\leftarrow \begin{cases} g_t + \mu\, b_t & \text{nesterov} \\
                                     b_t & \text{otherwise}\end{cases} \quad (\mu \ne 0) \\
        \theta_t &= \theta_{t-1} - \gamma\, g_t

    (the sign is ``-`` when ``maximize``).

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 1e-3
        Learning rate :math:`\gamma`.
    momentum : float, default 0
        Momentum factor :math:`\mu`.
    dampening : float, default 0
        Dampening :math:`\tau` of the momentum.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    foreach, differentiable, fused : optional
        Stored in the param groups, as torch's; they change nothing here
        (torch's fused kernel groups the element-wise operations a little
        differently, an ulp or two per step: see :ref:`torch-flags`).

    State
    -----
    ``momentum_buffer`` (shaped like the parameter), only when ``momentum != 0``.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0]))
    >>> opt = nbopt.SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> np.round(w, 4)
    array([ 0.062, -0.124])

    References
    ----------
    Sutskever et al., "On the importance of initialization and momentum in deep
    learning", ICML 2013.
    """

    _algorithm = "sgd"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
        "fused": False
    }

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        check_tensor_lr(lr)
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr, "momentum": momentum, "dampening": dampening,
            "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
            "foreach": foreach, "differentiable": differentiable, "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)
        if fused:
            self._step_supports_amp_scaling = True
        check_fused_flags(fused, foreach, differentiable)


def sgd(params, d_p_list, momentum_buffer_list, has_sparse_grad=False, foreach=None,
        fused=None, grad_scale=None, found_inf=None, *, weight_decay, momentum, lr, dampening,
        nesterov, maximize):
    r"""Functional API that performs SGD algorithm computation, as
    ``torch.optim.sgd.sgd``.

    See :class:`nbopt.SGD` for the update rule.  ``params`` and ``d_p_list`` (the gradients)
    are lists of arrays; ``momentum_buffer_list`` holds each parameter's ``momentum_buffer`` or
    None.  Everything is updated in place, and a None buffer is replaced in the list by a new
    array, as torch does; see :ref:`functional-api` for the conventions (what is validated
    before anything changes, and how nbopt differs).

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt.optim.sgd import sgd
    >>> w = np.array([1.0, -2.0])
    >>> bufs = [None]
    >>> for _ in range(2):
    ...     sgd([w], [2 * w], bufs, weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.0,
    ...         nesterov=False, maximize=False)
    >>> w, bufs[0]
    (array([ 0.46, -0.92]), array([ 3.4, -6.8]))
    """
    functional_step("sgd", locals())
