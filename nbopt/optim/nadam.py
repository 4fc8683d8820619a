"""``nbopt.NAdam``: Adam with Nesterov momentum (torch.optim.NAdam)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_beta, check_nonnegative, check_tensor_lr

__all__ = ["NAdam", "nadam"]


class NAdam(ElementwiseOptimizer):
    r"""NAdam, Adam with Nesterov momentum, as ``torch.optim.NAdam``.

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) \;(+\,\lambda\theta_{t-1}
               \text{ unless decoupled}) \\
        \theta_{t-1} &\leftarrow \theta_{t-1}(1 - \gamma\lambda)
               \quad\text{(decoupled weight decay only)} \\
        \mu_t &= \beta_1\big(1 - \tfrac12\, 0.96^{t\psi}\big), \qquad
        \mu_{t+1} = \beta_1\big(1 - \tfrac12\, 0.96^{(t+1)\psi}\big), \qquad
        \Pi_t = \prod_{i=1}^{t}\mu_i \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        d_t &= \sqrt{v_t / (1-\beta_2^t)} + \epsilon \\
        \theta_t &= \theta_{t-1} - \gamma\,\frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{d_t}
                    - \gamma\,\frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,\frac{m_t}{d_t}

    (the sign of the gradient is ``-`` when ``maximize``).  ``t`` is each
    parameter's own step count; the product :math:`\Pi_t` is a float32 scalar,
    as torch keeps it, whatever the parameter dtype (float64 once loaded into
    float64 parameters: torch's ``load_state_dict`` casts it), and the other
    coefficients are computed in float64 on the host and rounded to the
    parameter dtype, as torch does.  Complex parameters are stepped as their
    real view (real and imaginary parts independently).

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 2e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates.
    eps : float, default 1e-8
        Added to the bias-corrected root of the second moment.
    weight_decay : float, default 0
        Weight decay :math:`\lambda` (L2 penalty, or decoupled).
    momentum_decay : float, default 4e-3
        Momentum decay :math:`\psi` of the :math:`\mu_t` schedule.
    decoupled_weight_decay : bool, default False
        Apply weight decay to the parameter directly, as AdamW (NAdamW).
    foreach : bool or None, default None
        Stored in the param groups.  With a Tensor lr, ``foreach=True`` reads
        it as a double for the step coefficients, as torch's foreach path;
        otherwise it changes nothing (see :ref:`torch-flags`).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    capturable, differentiable : bool, default False
        Stored in the param groups.  ``differentiable=True`` computes the
        step coefficients in the dtype of the ``mu_product`` tensor, as
        torch's differentiable path; ``capturable`` changes nothing.

    State
    -----
    ``step`` (float32 0-d array), ``mu_product`` (float32 0-d array,
    :math:`\Pi_t`; float64 once loaded into float64 parameters), ``exp_avg``
    (:math:`m`) and ``exp_avg_sq`` (:math:`v`), shaped like the parameter.

    Examples
    --------
    >>> import numpy as np
    >>> import nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0]))
    >>> opt = nbopt.NAdam([w], lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> np.round(w, 4)
    array([ 0.7527, -1.7475])
    >>> list(opt.state[w])
    ['step', 'mu_product', 'exp_avg', 'exp_avg_sq']

    References
    ----------
    Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    _algorithm = "nadam"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
        "decoupled_weight_decay": False
    }

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        check_tensor_lr(lr)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(eps, "epsilon value")
        check_beta(betas[0], 0)
        check_beta(betas[1], 1)
        check_nonnegative(weight_decay, "weight_decay value")
        check_nonnegative(momentum_decay, "momentum_decay value")
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize,
            "foreach": foreach, "capturable": capturable, "differentiable": differentiable,
        }
        super().__init__(params, defaults)


def nadam(params, grads, exp_avgs, exp_avg_sqs, mu_products, state_steps,
          decoupled_weight_decay=False, foreach=None, capturable=False, differentiable=False,
          has_complex=False, maximize=False, *, beta1, beta2, lr, weight_decay, momentum_decay,
          eps):
    r"""Functional API that performs NAdam algorithm computation, as
    ``torch.optim.nadam.nadam``.

    See :class:`nbopt.NAdam` for the update rule.  ``exp_avgs`` and ``exp_avg_sqs`` hold each
    parameter's state; ``mu_products`` and ``state_steps`` its 0-d float32 scalar state.
    Everything is updated in place; see :ref:`functional-api` for the conventions (what is
    validated before anything changes, and how nbopt differs).
    """
    functional_step("nadam", locals())
