"""``SparseAdam`` (torch.optim.SparseAdam): Adam masked to the rows present in
sparse gradients."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..engine import check_grad_matches, check_state_array, check_state_scalar, param_where
from ..optimizer import Optimizer
from ..parameter import (DeviceParameter, as_sparse_grad, is_device_array, is_sparse_grad,
                         param_device, same_device_message)
from ._validation import check_beta, check_tensor_lr

__all__ = ["SparseAdam"]

_MOMENTS = ("exp_avg", "exp_avg_sq")


def _sparse_positions(params: list) -> list:
    """``[[group, position], ...]`` of the sparse objects given as parameters."""
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    found = []
    for gi, group in enumerate(groups):
        members = group.get("params", ()) if isinstance(group, dict) else ()
        if isinstance(members, (list, tuple)):
            for pi, p in enumerate(members):
                if isinstance(p, tuple) and len(p) == 2:     # (name, param)
                    p = p[1]
                if is_sparse_grad(p):
                    found.append([gi, pi])
    return found


class SparseAdam(Optimizer):
    r"""SparseAdam, as ``torch.optim.SparseAdam``: Adam for sparse gradients.

    Only the entries present in the gradient are updated: for the set
    :math:`I` of indices of the coalesced gradient (duplicates summed) with
    values :math:`g` (negated when ``maximize``),

    .. math::

        m_I &\leftarrow m_I + (1-\beta_1)(g - m_I) \\
        v_I &\leftarrow v_I + (1-\beta_2)(g^2 - v_I) \\
        \theta_I &\leftarrow \theta_I - \gamma\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
                   \frac{m_I}{\sqrt{v_I} + \epsilon}

    Parameters, moments and step counts of rows absent from the gradient do
    not change (their moments do not decay).  ``t`` is the parameter's step
    count, which advances at every step in which the parameter has a
    gradient, even one with no entries.  The bias correction is folded into
    the step size, so :math:`\epsilon` is not rescaled as in dense Adam.

    Gradients must be sparse: :class:`nbopt.parameter.SparseGrad` objects
    (torch's ``sparse_coo_tensor``, e.g. the gradient of
    ``nn.Embedding(sparse=True)``: indices over rows, dense row values), or
    2-D ``scipy.sparse`` arrays and matrices.

    GPU parameters (:class:`nbopt.DeviceParameter`) take a
    :class:`nbopt.parameter.DeviceSparseGrad` on their device
    (``SparseGrad(indices, values, shape)`` of GPU arrays); their moments
    are device arrays, updated by a CUDA kernel with the CPU path's maths
    (bit for bit: the gradient is coalesced on the host, in torch's CPU
    order).  A gradient on another device raises ``RuntimeError``.

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`, real floating point) or dicts
        defining parameter groups.
    lr : float or 1-element ndarray, default 1e-3
        Learning rate :math:`\gamma` (strictly positive).
    betas : (float, float), default (0.9, 0.999)
        Decay rates :math:`\beta_1, \beta_2` of the moment estimates.
    eps : float, default 1e-8
        Added to the denominator (strictly positive).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Raises
    ------
    ValueError
        For invalid hyper-parameters, sparse objects given as parameters
        (``"Sparse params at indices [[0, 1]]: SparseAdam requires dense
        parameter tensors"``) and complex parameters (``"Complex params at
        indices [[0, 1]]: SparseAdam does not support complex parameters"``),
        with torch's messages.
    RuntimeError
        At ``step``, for a dense gradient: ``"SparseAdam does not support
        dense gradients, please consider Adam instead"``.

    State
    -----
    ``step`` (a Python ``int``, as torch keeps it), ``exp_avg`` and
    ``exp_avg_sq`` (dense, shaped like the parameter), created at the
    parameter's first step with a gradient.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.parameter import SparseGrad
    >>> from nbopt.optim.sparse_adam import SparseAdam
    >>> emb = nbopt.Parameter(np.ones((5, 2), np.float32))   # an embedding table
    >>> opt = SparseAdam([emb], lr=0.1)
    >>> emb.grad = SparseGrad([[3, 1, 3]], np.ones((3, 2), np.float32), emb.shape)
    >>> opt.step()                 # rows 1 and 3 move; row 3's gradient is 2
    >>> np.round(emb[:, 0], 4)
    array([1. , 0.9, 1. , 0.9, 1. ], dtype=float32)
    >>> opt.state[emb]["step"]
    1

    References
    ----------
    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        check_tensor_lr(lr)
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_beta(betas[0], 0)
        check_beta(betas[1], 1)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "maximize": maximize}
        if not isinstance(params, np.ndarray):
            params = list(params)
            sparse_params = _sparse_positions(params)
            if sparse_params:
                # torch lets sparse tensors through add_param_group and refuses
                # them here; the base class would call them non-Parameters
                raise ValueError(f"Sparse params at indices {sparse_params}: "
                                 "SparseAdam requires dense parameter tensors")
        super().__init__(params, defaults)
        complex_params = [[gi, pi] for gi, group in enumerate(self.param_groups)
                          for pi, p in enumerate(group["params"]) if p.dtype.kind == "c"]
        if complex_params:
            raise ValueError(f"Complex params at indices {complex_params}: "
                             "SparseAdam does not support complex parameters")

    def _check_loaded_state(self, param, value, where: str, group: dict) -> None:
        for name in _MOMENTS:
            if name in value:
                check_state_array("loaded state", name, where, value[name], param)
        if "step" in value:
            check_state_scalar("loaded state", "step", where, value["step"])

    def _check_grad(self, gi: int, pos: int, p, g):
        """Validate one gradient (nothing changes); returns it as a SparseGrad."""
        where = param_where(gi, pos)
        if not is_sparse_grad(g):
            raise RuntimeError(
                "SparseAdam does not support dense gradients, please consider Adam instead")
        g = as_sparse_grad(g)
        if g.device != param_device(p):
            raise RuntimeError(same_device_message(where, g.device, param_device(p)))
        if p.dtype.kind == "c":
            # torch checks at construction only; a group added later is caught here
            raise ValueError(f"Complex params at indices {[[gi, pos]]}: "
                             "SparseAdam does not support complex parameters")
        if p.dtype.kind != "f":
            raise TypeError(f"{where}: SparseAdam can only optimize floating point parameters, "
                            f"got dtype {p.dtype}")
        check_grad_matches(where, p, g.shape, g.dtype)
        state = self.state.get(p)
        if state:
            for name in ("step",) + _MOMENTS:
                if name not in state:
                    raise KeyError(name)
            for name in _MOMENTS:
                if np.shape(state[name]) != p.shape:
                    raise RuntimeError(f"{where}: state {name!r} has shape "
                                       f"{np.shape(state[name])} but the parameter has shape "
                                       f"{p.shape}")
        return g

    @staticmethod
    def _moment(p, state, name) -> np.ndarray:
        """``state[name]`` as an array the kernel can update in place: the
        parameter's dtype and memory layout, on its device (a loaded or
        assigned value that is not is replaced by a converted copy)."""
        arr = state[name]
        if isinstance(p, DeviceParameter):
            from ..kernels import _sparse_cuda as sc

            if not sc.is_state_like(p, arr):
                arr = state[name] = sc.state_like(p, arr)
            return arr
        if is_device_array(arr):
            from ..kernels._cuda import to_host

            arr = state[name] = to_host(arr)
        if not (type(arr) is np.ndarray and arr.dtype == p.dtype and arr.strides == p.strides
                and arr.flags.writeable and (arr.flags.c_contiguous or arr.flags.f_contiguous)):
            order = "F" if (p.flags.f_contiguous and not p.flags.c_contiguous) else "C"
            arr = np.array(arr, dtype=p.dtype, order=order)
            state[name] = arr
        return arr

    def step(self, closure: Callable[[], float] | None = None):
        """Perform a single optimization step.

        Every gradient is validated before anything changes.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; called once before the
            update, and its value is returned.
        """
        from ..kernels.sparse_adam import sparse_adam_step

        loss = None
        if closure is not None:
            loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            for pos, p in enumerate(group["params"]):
                if p.grad is not None:
                    work.append((p, self._check_grad(gi, pos, p, p.grad), group))
        for p, g, group in work:
            state = self.state[p]
            device = isinstance(p, DeviceParameter)
            if len(state) == 0:
                state["step"] = 0
                if device:
                    from ..kernels._sparse_cuda import zeros_like

                    state["exp_avg"] = zeros_like(p)
                    state["exp_avg_sq"] = zeros_like(p)
                else:
                    order = "F" if (p.flags.f_contiguous and not p.flags.c_contiguous) else "C"
                    state["exp_avg"] = np.zeros(p.shape, p.dtype, order=order)
                    state["exp_avg_sq"] = np.zeros(p.shape, p.dtype, order=order)
            state["step"] += 1
            if device:
                from ..kernels.sparse_adam import sparse_adam_step_cuda as step_fn
            else:
                step_fn = sparse_adam_step
            step_fn(p, self._moment(p, state, "exp_avg"), self._moment(p, state, "exp_avg_sq"),
                    g, group, state["step"])
        return loss

    def load_state_dict(self, state_dict) -> None:
        """As :meth:`Optimizer.load_state_dict`; the loaded moments are then
        placed on their parameter's device, as torch casts loaded state to
        the parameter's device (host arrays of a GPU parameter uploaded,
        device arrays of a CPU parameter copied to the host)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                for name in _MOMENTS:
                    if name in state and is_device_array(state[name]) != isinstance(
                            p, DeviceParameter):
                        self._moment(p, state, name)
