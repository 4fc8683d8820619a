"""``nbopt.ASGD``: averaged stochastic gradient descent (torch.optim.ASGD)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_nonnegative, check_tensor_lr

__all__ = ["ASGD", "asgd"]


class ASGD(ElementwiseOptimizer):
    r"""Averaged stochastic gradient descent, as ``torch.optim.ASGD``.

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        \theta_t &= \theta_{t-1}\,(1 - \lambda_d\,\eta_{t-1}) - \eta_{t-1}\, g_t \\
        \bar\theta_t &= \begin{cases}
            \bar\theta_{t-1} + \mu_{t-1}\,(\theta_t - \bar\theta_{t-1}) & \mu_{t-1} \ne 1 \\
            \theta_t & \text{otherwise}\end{cases} \\
        \eta_t &= \frac{\gamma}{(1 + \lambda_d\,\gamma\, t)^{\alpha}}, \qquad
        \mu_t = \frac{1}{\max(1,\, t - t_0)}

    with :math:`\eta_0 = \gamma` and :math:`\mu_0 = 1` (the sign of the
    gradient is ``-`` when ``maximize``).  ``t`` is each parameter's own step
    count; :math:`\eta` and :math:`\mu` are rounded to float32, as torch
    computes them, whatever the parameter dtype, and :math:`\eta_t` uses the group's
    learning rate at step ``t``.  The average :math:`\bar\theta` is kept in
    the state (``ax``); it is never written back into the parameter.  Complex
    parameters are stepped as their real view (real and imaginary parts
    independently).

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 1e-2
        Learning rate :math:`\gamma`.
    lambd : float, default 1e-4
        Decay term :math:`\lambda_d`.
    alpha : float, default 0.75
        Power :math:`\alpha` of the :math:`\eta` schedule.
    t0 : float, default 1e6
        Step :math:`t_0` after which averaging starts.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    foreach : bool or None, default None
        Stored in the param groups.  ``foreach=True`` computes the next
        ``eta`` in float32 from the float32 step count, as torch's foreach
        path (see :ref:`torch-flags`).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable, capturable : bool, default False
        Stored in the param groups; they change nothing here.

    State
    -----
    ``step`` (float32 0-d array), ``eta`` and ``mu`` (float32 0-d arrays: the
    step size and averaging weight of the next step; float64 once loaded into
    float64 parameters, as torch's ``load_state_dict`` casts them) and ``ax``
    (the running average :math:`\bar\theta`, shaped like the parameter).

    Examples
    --------
    >>> import numpy as np
    >>> import nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0]))
    >>> opt = nbopt.ASGD([w], lr=0.1, t0=2)
    >>> for _ in range(5):           # ax copies w up to step t0 + 2, then averages
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> np.round(w, 4)
    array([ 0.3277, -0.6553])
    >>> np.round(opt.state[w]["ax"], 4)
    array([ 0.3686, -0.7372])
    >>> list(opt.state[w])
    ['step', 'eta', 'mu', 'ax']

    References
    ----------
    Polyak & Juditsky, "Acceleration of stochastic approximation by
    averaging", SIAM Journal on Control and Optimization 30(4), 1992.
    """

    _algorithm = "asgd"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "foreach": None, "maximize": False, "differentiable": False, "capturable": False
    }

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
                 foreach=None, maximize=False, differentiable=False, capturable=False):
        check_tensor_lr(lr)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(weight_decay, "weight_decay value")
        defaults = {
            "lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0,
            "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize,
            "differentiable": differentiable, "capturable": capturable,
        }
        super().__init__(params, defaults)


def asgd(params, grads, axs, mus, etas, state_steps, foreach=None, maximize=False,
         differentiable=False, capturable=False, has_complex=False, *, lambd, lr, t0, alpha,
         weight_decay):
    r"""Functional API that performs ASGD algorithm computation, as
    ``torch.optim.asgd.asgd``.

    See :class:`nbopt.ASGD` for the update rule.  ``axs`` holds each parameter's average;
    ``mus``, ``etas`` and ``state_steps`` its 0-d float32 scalar state (torch's for-loop also
    takes Python numbers as steps, and leaves them unchanged).  Everything is updated in place;
    see :ref:`functional-api` for the conventions (what is validated before anything changes,
    and how nbopt differs).
    """
    functional_step("asgd", locals())
