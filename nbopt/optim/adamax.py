"""``nbopt.Adamax``: Adam with the infinity norm (torch.optim.Adamax)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_beta, check_nonnegative, check_tensor_lr

__all__ = ["Adamax", "adamax"]


class Adamax(ElementwiseOptimizer):
    r"""Adamax, the infinity-norm variant of Adam, as ``torch.optim.Adamax``.

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1},\ |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,\frac{m_t}{u_t}

    (the sign of the gradient is ``-`` when ``maximize``; the maximum is
    element-wise and propagates NaN).  ``t`` is each parameter's own step
    count; the bias correction is computed in float64 on the host and rounded
    to the parameter dtype, as torch does.  Complex parameters are stepped
    as their real view (real and imaginary parts independently).

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 2e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates :math:`\beta_1` of the first moment and :math:`\beta_2`
        of the infinity norm.
    eps : float, default 1e-8
        :math:`\epsilon`, added to :math:`|g_t|` inside the maximum.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    foreach : bool or None, default None
        Stored in the param groups (positional, as in torch).  With a Tensor
        lr, ``foreach=True`` reads it as a double for the step size, as
        torch's foreach path; otherwise it changes nothing (see :ref:`torch-flags`).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable, capturable : bool, default False
        Stored in the param groups; they change nothing here.

    State
    -----
    ``step`` (float32 0-d array), ``exp_avg`` (:math:`m`) and ``exp_inf``
    (:math:`u`), shaped like the parameter.

    Examples
    --------
    >>> import numpy as np
    >>> import nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0], np.float32))
    >>> opt = nbopt.Adamax([w], lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> np.round(w, 4)
    array([ 0.7155, -1.7076], dtype=float32)
    >>> sorted(opt.state[w])
    ['exp_avg', 'exp_inf', 'step']

    References
    ----------
    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015
    (section 7.1, AdaMax).
    """

    _algorithm = "adamax"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "foreach": None, "maximize": False, "differentiable": False, "capturable": False
    }

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        check_tensor_lr(lr)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(eps, "epsilon value")
        check_beta(betas[0], 0)
        check_beta(betas[1], 1)
        check_nonnegative(weight_decay, "weight_decay value")
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)


def adamax(params, grads, exp_avgs, exp_infs, state_steps, foreach=None, maximize=False,
           differentiable=False, capturable=False, has_complex=False, *, eps, beta1, beta2, lr,
           weight_decay):
    r"""Functional API that performs Adamax algorithm computation, as
    ``torch.optim.adamax.adamax``.

    See :class:`nbopt.Adamax` for the update rule.  ``exp_avgs`` and ``exp_infs`` hold each
    parameter's state, ``state_steps`` its 0-d float32 step array.  Everything is updated in
    place; see :ref:`functional-api` for the conventions (what is validated before anything
    changes, and how nbopt differs).
    """
    functional_step("adamax", locals())
