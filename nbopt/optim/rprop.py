"""``nbopt.Rprop`` (torch.optim.Rprop)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_nonnegative, check_tensor_lr

__all__ = ["Rprop", "rprop"]


class Rprop(ElementwiseOptimizer):
    r"""Resilient backpropagation, as ``torch.optim.Rprop``.

    Every coordinate :math:`i` keeps its own step size :math:`\eta^i`, grown or
    shrunk by the sign agreement of successive gradients; only the sign of the
    gradient moves the parameter:

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) \\
        \eta^i_t &= \begin{cases}
            \min(\eta^i_{t-1}\,\eta_+,\ \Gamma_{max}) & g^i_{t-1} g^i_t > 0 \\
            \max(\eta^i_{t-1}\,\eta_-,\ \Gamma_{min}) & g^i_{t-1} g^i_t < 0
                \quad\text{(and } g^i_t \leftarrow 0\text{)} \\
            \eta^i_{t-1} & \text{otherwise} \end{cases} \\
        \theta_t &= \theta_{t-1} - \eta_t \odot \operatorname{sign}(g_t)

    (the sign is ``-`` when ``maximize``), with :math:`g_0 = 0` and
    :math:`\eta_0 = \gamma`.  The remembered gradient :math:`g_{t-1}` is the
    one after zeroing.  As in torch, :math:`\eta_\pm` are rounded to the
    parameter dtype and the sign-flip test compares with the rounded
    :math:`\eta_-`.

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 1e-2
        Initial step size :math:`\gamma`, read at each parameter's first step;
        later changes of ``lr`` (by a scheduler, say) have no effect, as in
        torch.
    etas : (float, float), default (0.5, 1.2)
        The multiplicative decrease and increase factors
        :math:`(\eta_-, \eta_+)`, with :math:`0 < \eta_- < 1 < \eta_+`.
    step_sizes : (float, float), default (1e-6, 50)
        The minimal and maximal step sizes :math:`(\Gamma_{min}, \Gamma_{max})`.
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
    ``step`` (float32 0-d array), ``prev`` (the last gradient, zeroed where its
    sign flipped) and ``step_size`` (started at ``lr``; :math:`\gamma + \gamma i`
    for complex parameters), each shaped like the parameter.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0]))
    >>> opt = nbopt.Rprop([w], lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> w
    Parameter([ 0.636, -1.636], dtype=float64)
    >>> opt.state[w]["step_size"]
    array([0.144, 0.144])

    References
    ----------
    Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation
    Learning: The RPROP Algorithm", IEEE ICNN 1993.
    """

    _algorithm = "rprop"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "foreach": None, "maximize": False, "differentiable": False, "capturable": False
    }

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        check_tensor_lr(lr)
        check_nonnegative(lr, "learning rate")
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = {
            "lr": lr, "etas": etas, "step_sizes": step_sizes, "foreach": foreach,
            "maximize": maximize, "differentiable": differentiable, "capturable": capturable,
        }
        super().__init__(params, defaults)


def rprop(params, grads, prevs, step_sizes, state_steps, foreach=None, capturable=False,
          maximize=False, differentiable=False, has_complex=False, *, step_size_min,
          step_size_max, etaminus, etaplus):
    r"""Functional API that performs rprop algorithm computation, as
    ``torch.optim.rprop.rprop``.

    See :class:`nbopt.Rprop` for the update rule.  ``prevs`` and ``step_sizes`` hold each
    parameter's state (its previous gradient and per-element step sizes), ``state_steps`` its
    step array (only incremented).  Everything is updated in place; see :ref:`functional-api`
    for the conventions (what is validated before anything changes, and how nbopt differs).
    """
    functional_step("rprop", locals())
