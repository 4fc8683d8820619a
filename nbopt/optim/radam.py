"""``nbopt.RAdam``: rectified Adam (torch.optim.RAdam)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_beta, check_nonnegative, check_tensor_lr

__all__ = ["RAdam", "radam"]


class RAdam(ElementwiseOptimizer):
    r"""RAdam, Adam with a rectified adaptive learning rate, as ``torch.optim.RAdam``.

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) \;(+\,\lambda\theta_{t-1}
               \text{ unless decoupled}) \\
        \theta_{t-1} &\leftarrow \theta_{t-1}(1 - \gamma\lambda)
               \quad\text{(decoupled weight decay only)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat m_t &= m_t / (1-\beta_1^t) \\
        \rho_\infty &= 2/(1-\beta_2) - 1, \qquad
        \rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t) \\
        \theta_t &= \begin{cases}
            \theta_{t-1} - \gamma\,\hat m_t\, \dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t}+\epsilon}\, r_t
                & \rho_t > 5 \\
            \theta_{t-1} - \gamma\,\hat m_t & \text{otherwise}\end{cases} \\
        r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
                          {(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    (the sign of the gradient is ``-`` when ``maximize``).  ``t`` is each
    parameter's own step count; :math:`\rho_t`, :math:`r_t` and the bias
    corrections are computed in float64 on the host and rounded to the
    parameter dtype, as torch does.  With the default :math:`\beta_2` the
    rectified branch starts at ``t = 6``.  Complex parameters are stepped as
    their real view (real and imaginary parts independently).

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 1e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates.
    eps : float, default 1e-8
        Added to :math:`\sqrt{v_t}` in the adaptive term.
    weight_decay : float, default 0
        Weight decay :math:`\lambda` (L2 penalty, or decoupled).
    decoupled_weight_decay : bool, default False
        Apply weight decay to the parameter directly, as AdamW (RAdamW).
    foreach : bool or None, default None
        Stored in the param groups.  ``foreach=True`` folds the step size
        into one multiplier per parameter, in float32 with a Tensor lr, as
        torch's foreach path (see :ref:`torch-flags`).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    capturable, differentiable : bool, default False
        Stored in the param groups; they change nothing here.

    State
    -----
    ``step`` (float32 0-d array), ``exp_avg`` (:math:`m`) and ``exp_avg_sq``
    (:math:`v`), shaped like the parameter.

    Examples
    --------
    >>> import numpy as np
    >>> import nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0]))
    >>> opt = nbopt.RAdam([w], lr=0.1)
    >>> for _ in range(8):           # steps 6 to 8 take the rectified branch
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> np.round(w, 4)
    array([ 0.1941, -0.3957])
    >>> sorted(opt.state[w])
    ['exp_avg', 'exp_avg_sq', 'step']

    References
    ----------
    Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR 2020.
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    _algorithm = "radam"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "foreach": None, "maximize": False, "differentiable": False,
        "decoupled_weight_decay": False, "capturable": False
    }

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        check_tensor_lr(lr)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(eps, "epsilon value")
        check_beta(betas[0], 0)
        check_beta(betas[1], 1)
        check_nonnegative(weight_decay, "weight_decay value")
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "maximize": maximize, "foreach": foreach, "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)


def radam(params, grads, exp_avgs, exp_avg_sqs, state_steps, decoupled_weight_decay=False,
          foreach=None, differentiable=False, capturable=False, has_complex=False, maximize=False,
          *, beta1, beta2, lr, weight_decay, eps):
    r"""Functional API that performs RAdam algorithm computation, as
    ``torch.optim.radam.radam``.

    See :class:`nbopt.RAdam` for the update rule.  ``exp_avgs`` and ``exp_avg_sqs`` hold each
    parameter's state, ``state_steps`` its 0-d float32 step array.  Everything is updated in
    place; see :ref:`functional-api` for the conventions (what is validated before anything
    changes, and how nbopt differs).
    """
    functional_step("radam", locals())
