"""``nbopt.Adam`` and ``nbopt.AdamW`` (torch.optim.Adam / AdamW)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import (check_beta, check_fused_flags, check_nonnegative, is_float,
                          is_tensor, squeeze_scalar)

__all__ = ["Adam", "AdamW", "adam"]


class Adam(ElementwiseOptimizer):
    r"""Adam, as ``torch.optim.Adam`` (with amsgrad and decoupled weight decay).

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) \;(+\,\lambda\theta_{t-1}
               \text{ unless decoupled}) \\
        \theta_{t-1} &\leftarrow \theta_{t-1}(1 - \gamma\lambda)
               \quad\text{(decoupled weight decay only)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \quad\text{(amsgrad; else } \hat v_t = v_t) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
               \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    ``t`` is each parameter's own step count; the bias corrections are computed
    in float64 on the host and rounded to the parameter dtype, as torch does.

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 1e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates.
    eps : float, default 1e-8
        Added to the bias-corrected denominator.
    weight_decay : float, default 0
        Weight decay :math:`\lambda` (L2 penalty, or decoupled).
    amsgrad : bool, default False
        Use the maximum of past second moments (AMSGrad).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    decoupled_weight_decay : bool, default False
        Apply weight decay to the parameter directly (AdamW).
    foreach, capturable, differentiable, fused : optional
        Stored in the param groups, as torch's.  ``differentiable=True``
        computes the bias corrections as torch's differentiable path does
        (float32 tensors), and ``fused=True`` reads a Tensor lr or Tensor
        betas as doubles, as torch's fused kernel; ``foreach`` and
        ``capturable`` change nothing.  See :ref:`torch-flags`.

    State
    -----
    ``step`` (float32 0-d array), ``exp_avg``, ``exp_avg_sq``, and
    ``max_exp_avg_sq`` when amsgrad was on at the parameter's first step.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0], np.float32))
    >>> opt = nbopt.Adam([w], lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad = 2 * w
    ...     opt.step()
    >>> np.round(w, 4)
    array([ 0.7016, -1.7006], dtype=float32)

    References
    ----------
    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    Reddi et al., "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    _algorithm = "adam"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
        "differentiable": False, "decoupled_weight_decay": False, "fused": None
    }

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        if is_tensor(lr):
            if foreach and not capturable:
                raise ValueError(
                    "lr as a Tensor is not supported for capturable=False and foreach=True")
            if lr.size != 1:
                raise ValueError("Tensor lr must be 1-element")
        check_nonnegative(lr, "learning rate")
        check_nonnegative(eps, "epsilon value")
        check_beta(betas[0], 0)
        check_beta(betas[1], 1)
        check_nonnegative(weight_decay, "weight_decay value")
        if not ((is_float(betas[0]) and is_float(betas[1]))
                or (is_tensor(betas[0]) and is_tensor(betas[1]))):
            raise ValueError("betas must be either both floats or both Tensors")
        for i in (0, 1):
            if is_tensor(betas[i]):
                if not capturable and foreach:
                    raise ValueError(f"betas[{i}] as a Tensor is not supported for "
                                     "capturable=False and foreach=True")
                if betas[i].size != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
        betas = tuple(map(squeeze_scalar, betas))
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
            "capturable": capturable, "differentiable": differentiable, "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)
        if fused:
            self._step_supports_amp_scaling = True
        check_fused_flags(fused, foreach, differentiable)


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    The update is :class:`Adam`'s with ``decoupled_weight_decay=True``: the
    parameter is first scaled by :math:`1 - \gamma\lambda`, then takes the Adam
    step.  The default ``weight_decay`` is ``1e-2`` (Adam's is 0).

    Parameters
    ----------
    params, lr, betas, eps, amsgrad, maximize
        As for :class:`Adam`.
    weight_decay : float, default 1e-2
        Decoupled weight decay :math:`\lambda`.
    foreach, capturable, differentiable, fused : optional
        As for :class:`Adam` (see :ref:`torch-flags`).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.ones(2))
    >>> opt = nbopt.AdamW([w], lr=0.1, weight_decay=0.1)
    >>> w.grad = np.zeros(2)
    >>> opt.step()
    >>> w
    Parameter([0.99, 0.99], dtype=float64)

    References
    ----------
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state):
        for group in state.get("param_groups", []):
            group["decoupled_weight_decay"] = True
        super().__setstate__(state)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, foreach=None,
         capturable=False, differentiable=False, fused=None, grad_scale=None, found_inf=None,
         has_complex=False, decoupled_weight_decay=False, *, amsgrad, beta1, beta2, lr,
         weight_decay, eps, maximize):
    r"""Functional API that performs Adam algorithm computation, as
    ``torch.optim.adam.adam``.

    See :class:`nbopt.Adam` for the update rule.  The lists hold one array per parameter
    (``max_exp_avg_sqs`` only with amsgrad, else it may be empty); ``state_steps`` holds 0-d
    (or 1-element) float32 arrays, torch's singleton step tensors.  Everything is updated in
    place, step counts included; see :ref:`functional-api` for the conventions (what is
    validated before anything changes, and how nbopt differs).

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt.optim.adam import adam
    >>> w = np.array([1.0, -2.0], np.float32)
    >>> m, v, step = np.zeros_like(w), np.zeros_like(w), np.array(0.0, np.float32)
    >>> for _ in range(3):
    ...     adam([w], [2 * w], [m], [v], [], [step], amsgrad=False, beta1=0.9, beta2=0.999,
    ...          lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False)
    >>> np.round(w, 4), step
    (array([ 0.7016, -1.7006], dtype=float32), array(3., dtype=float32))
    """
    functional_step("adam", locals())
