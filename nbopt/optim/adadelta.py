"""``nbopt.Adadelta`` (torch.optim.Adadelta)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_nonnegative, check_tensor_lr

__all__ = ["Adadelta", "adadelta"]


class Adadelta(ElementwiseOptimizer):
    r"""Adadelta, as ``torch.optim.Adadelta``.

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        v_t &= \rho\, v_{t-1} + (1-\rho)\, g_t^2 \\
        \Delta x_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        u_t &= \rho\, u_{t-1} + (1-\rho)\, \Delta x_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma\, \Delta x_t

    (the sign is ``-`` when ``maximize``), with :math:`v_0 = u_0 = 0`.

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 1.0
        Coefficient :math:`\gamma` that scales the delta before it is applied.
    rho : float, default 0.9
        Decay rate :math:`\rho` of the running averages, in ``[0, 1]``.
    eps : float, default 1e-6
        Added inside both square roots.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    foreach : bool, optional
        Stored in the param groups (positional, as in torch); it changes
        nothing, in torch either (see :ref:`torch-flags`).
    capturable : bool, default False
        Stored in the param groups; it changes nothing here.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable : bool, default False
        Stored in the param groups; it changes nothing, in torch either.

    State
    -----
    ``step`` (float32 0-d array, a counter the update does not use),
    ``square_avg`` (:math:`v`) and ``acc_delta`` (:math:`u`), shaped like the
    parameter, created at the parameter's first step.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0]))
    >>> opt = nbopt.Adadelta([w], lr=1.0)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> np.round(w, 6)
    array([ 0.990309, -1.990301])
    >>> sorted(opt.state[w])
    ['acc_delta', 'square_avg', 'step']

    References
    ----------
    Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701 (2012).
    """

    _algorithm = "adadelta"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "foreach": None, "maximize": False, "differentiable": False, "capturable": False
    }

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        check_tensor_lr(lr)
        check_nonnegative(lr, "learning rate")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_nonnegative(eps, "epsilon value")
        check_nonnegative(weight_decay, "weight_decay value")
        defaults = {
            "lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay,
            "maximize": maximize, "capturable": capturable, "foreach": foreach,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)


def adadelta(params, grads, square_avgs, acc_deltas, state_steps, capturable=False, foreach=None,
             differentiable=False, has_complex=False, *, lr, rho, eps, weight_decay, maximize):
    r"""Functional API that performs Adadelta algorithm computation, as
    ``torch.optim.adadelta.adadelta``.

    See :class:`nbopt.Adadelta` for the update rule.  ``square_avgs`` and ``acc_deltas`` hold
    each parameter's state, ``state_steps`` its step array (only incremented).  Everything is
    updated in place; see :ref:`functional-api` for the conventions (what is validated before
    anything changes, and how nbopt differs).
    """
    functional_step("adadelta", locals())
