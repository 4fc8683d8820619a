"""``nbopt.RMSprop`` (torch.optim.RMSprop)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_nonnegative, check_tensor_lr

__all__ = ["RMSprop", "rmsprop"]


class RMSprop(ElementwiseOptimizer):
    r"""RMSprop, optionally centered and with momentum, as ``torch.optim.RMSprop``.

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        v_t &= \alpha\, v_{t-1} + (1-\alpha)\, g_t^2 \\
        \bar g_t &= \alpha\, \bar g_{t-1} + (1-\alpha)\, g_t
               \quad\text{(centered only)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \;\text{ (centered)}, \qquad
               d_t = \sqrt{v_t} + \epsilon \;\text{ (otherwise)} \\
        b_t &= \mu\, b_{t-1} + g_t / d_t, \qquad
               \theta_t = \theta_{t-1} - \gamma\, b_t \quad (\mu > 0) \\
        \theta_t &= \theta_{t-1} - \gamma\, g_t / d_t \quad (\mu = 0)

    (the sign is ``-`` when ``maximize``).  :math:`\epsilon` is added after the
    square root (TensorFlow adds it inside).  In the centered variant roundoff
    can make :math:`v_t - \bar g_t^2` negative, and the update NaN, as in
    torch.

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 1e-2
        Learning rate :math:`\gamma`.
    alpha : float, default 0.99
        Smoothing constant :math:`\alpha` of the averages.
    eps : float, default 1e-8
        Added to the denominator :math:`\epsilon`.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    momentum : float, default 0
        Momentum factor :math:`\mu`.
    centered : bool, default False
        Normalise the gradient by an estimate of its variance
        (:math:`v_t - \bar g_t^2`) instead of its second moment.
    capturable : bool, default False
        Stored in the param groups; it changes nothing here.
    foreach : bool, optional
        Stored in the param groups; it changes nothing, in torch either (see
        :ref:`torch-flags`).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable : bool, default False
        Stored in the param groups; it changes nothing, in torch either.

    State
    -----
    ``step`` (float32 0-d array), ``square_avg``, ``momentum_buffer`` when
    ``momentum > 0`` and ``grad_avg`` when ``centered`` (each shaped like the
    parameter).  Which of the last two exist is decided at the parameter's
    first step: turning momentum or centered on later raises ``KeyError``, as
    in torch.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0], np.float32))
    >>> opt = nbopt.RMSprop([w], lr=0.01, momentum=0.9, centered=True)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> np.round(w, 4)
    array([ 0.5497, -1.5407], dtype=float32)
    >>> list(opt.state[w])
    ['step', 'square_avg', 'momentum_buffer', 'grad_avg']

    References
    ----------
    Hinton, Srivastava & Swersky, "Neural Networks for Machine Learning",
    lecture 6e (2012).
    Graves, "Generating Sequences With Recurrent Neural Networks",
    arXiv:1308.0850 (2013) (centered variant).
    """

    _algorithm = "rmsprop"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "momentum": 0, "centered": False, "foreach": None, "maximize": False,
        "differentiable": False, "capturable": False
    }

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        check_tensor_lr(lr)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(eps, "epsilon value")
        check_nonnegative(momentum, "momentum value")
        check_nonnegative(weight_decay, "weight_decay value")
        check_nonnegative(alpha, "alpha value")
        defaults = {
            "lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
            "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
            "maximize": maximize, "differentiable": differentiable,
        }
        super().__init__(params, defaults)


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffer_list, state_steps, foreach=None,
            maximize=False, differentiable=False, capturable=False, has_complex=False, *, lr,
            alpha, eps, weight_decay, momentum, centered):
    r"""Functional API that performs RMSprop algorithm computation, as
    ``torch.optim.rmsprop.rmsprop``.

    See :class:`nbopt.RMSprop` for the update rule.  ``square_avgs`` holds each parameter's
    state, ``grad_avgs`` too when centered and ``momentum_buffer_list`` when momentum > 0 (else
    they may be empty); ``state_steps`` its step array (only incremented).  Everything is
    updated in place; see :ref:`functional-api` for the conventions (what is validated before
    anything changes, and how nbopt differs).
    """
    functional_step("rmsprop", locals())
