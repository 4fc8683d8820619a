"""``nbopt.Adagrad`` (torch.optim.Adagrad)."""
from __future__ import annotations

from ..optimizer import ElementwiseOptimizer
from ._functional_core import functional_step
from ._validation import check_fused_flags, check_nonnegative, check_tensor_lr

__all__ = ["Adagrad", "adagrad"]


class Adagrad(ElementwiseOptimizer):
    r"""Adagrad, as ``torch.optim.Adagrad``.

    .. math::

        g_t &= \pm\nabla_\theta f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        \tilde\gamma_t &= \frac{\gamma}{1 + (t-1)\,\eta} \\
        s_t &= s_{t-1} + g_t^2, \qquad s_0 = \tau \\
        \theta_t &= \theta_{t-1} - \tilde\gamma_t\,\frac{g_t}{\sqrt{s_t} + \epsilon}

    (the sign is ``-`` when ``maximize``).  ``t`` is each parameter's own step
    count; :math:`\tilde\gamma_t` is computed in float64 on the host and
    rounded to the parameter dtype, as torch does.

    As in torch, the state of every parameter is created in the constructor
    (``state_dict()`` is populated before the first step), with ``sum`` filled
    with ``initial_accumulator_value`` (:math:`\tau + \tau i` for complex
    parameters).  Parameters added later with ``add_param_group`` get their
    state at their first step, from ``defaults["initial_accumulator_value"]``:
    a per-group ``initial_accumulator_value`` is never used (torch's behaviour).

    Sparse gradients (:class:`nbopt.parameter.SparseGrad`, or 2-D
    ``scipy.sparse`` objects) are taken as torch takes them: the gradient is
    coalesced (repeated indices summed in torch's order) and only the entries
    :math:`I` present are updated,

    .. math::

        s_I \leftarrow s_I + g_I^2, \qquad
        \theta_I \leftarrow \theta_I - \tilde\gamma_t\,\frac{g_I}{\sqrt{s_I} + \epsilon},

    while ``step`` advances for every parameter with a gradient, even an empty
    one.  A sparse gradient with ``weight_decay != 0`` or ``fused=True`` raises
    torch's ``RuntimeError`` before anything changes.  Complex parameters are
    stepped in complex arithmetic there, as torch does.

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`) or dicts defining parameter groups.
    lr : float or 1-element ndarray, default 1e-2
        Learning rate :math:`\gamma`.
    lr_decay : float, default 0
        Learning rate decay :math:`\eta`.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    initial_accumulator_value : float, default 0
        Initial value :math:`\tau` of the sum of squared gradients.
    eps : float, default 1e-10
        Added to the denominator :math:`\sqrt{s_t}`.
    foreach : bool, optional
        Stored in the param groups, as torch's; it changes nothing here.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable, fused : optional
        Stored in the param groups, as torch's.  ``fused=True`` reads a
        Tensor lr as a double, as torch's fused kernel (and rejects
        ``differentiable`` and ``foreach=True`` with torch's errors);
        ``differentiable`` changes nothing.  See :ref:`torch-flags`.

    State
    -----
    ``step`` (float32 0-d array) and ``sum`` (shaped like the parameter), for
    every parameter from construction on.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.array([1.0, -2.0], np.float32))
    >>> opt = nbopt.Adagrad([w], lr=0.1)
    >>> sorted(opt.state[w])
    ['step', 'sum']
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.grad = 2 * w          # gradient of sum(w**2)
    ...     opt.step()
    >>> np.round(w, 4)
    array([ 0.7805, -1.7758], dtype=float32)

    A sparse gradient updates only the rows it names:

    >>> from nbopt.parameter import SparseGrad
    >>> emb = nbopt.Parameter(np.zeros((4, 2)))
    >>> opt = nbopt.Adagrad([emb], lr=0.1)
    >>> emb.grad = SparseGrad([[2, 0, 2]], np.ones((3, 2)), emb.shape)
    >>> opt.step()
    >>> emb
    Parameter([[-0.1, -0.1],
               [ 0. ,  0. ],
               [-0.1, -0.1],
               [ 0. ,  0. ]], dtype=float64)

    References
    ----------
    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning
    and Stochastic Optimization", JMLR 12 (2011).
    """

    _algorithm = "adagrad"
    # keys torch's __setstate__ fills into older param groups, in its order
    _group_setdefaults = {
        "foreach": None, "maximize": False, "differentiable": False, "fused": None
    }

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        check_tensor_lr(lr)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(lr_decay, "lr_decay value")
        check_nonnegative(weight_decay, "weight_decay value")
        check_nonnegative(initial_accumulator_value, "initial_accumulator_value value")
        check_nonnegative(eps, "epsilon value")
        defaults = {
            "lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
            "maximize": maximize, "differentiable": differentiable, "fused": fused,
        }
        super().__init__(params, defaults)
        check_fused_flags(fused, foreach, differentiable)
        if fused:
            self._step_supports_amp_scaling = True
        # torch creates Adagrad's state eagerly, for every parameter
        self._init_state_now()

    def share_memory(self) -> None:
        """Does nothing: torch moves the ``sum`` tensors to shared memory for
        multiprocessing; NumPy state arrays have no such mode."""


def adagrad(params, grads, state_sums, state_steps, fused=None, grad_scale=None, found_inf=None,
            has_sparse_grad=False, foreach=None, differentiable=False, has_complex=False, *, lr,
            weight_decay, lr_decay, eps, maximize):
    r"""Functional API that performs Adagrad algorithm computation, as
    ``torch.optim.adagrad.adagrad``.

    See :class:`nbopt.Adagrad` for the update rule.  ``state_sums`` holds each parameter's
    ``sum``, ``state_steps`` its 0-d float32 step array; gradients may be sparse
    (:class:`nbopt.parameter.SparseGrad`).  Everything is updated in place; see
    :ref:`functional-api` for the conventions (what is validated before anything changes, and
    how nbopt differs).
    """
    functional_step("adagrad", locals())
