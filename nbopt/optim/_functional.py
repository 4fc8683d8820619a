r"""Functional interface (``torch.optim._functional``): every algorithm's
functional form, re-exported from its module as torch's does, and
:func:`sparse_adam`, which (as in torch) lives only here."""
from __future__ import annotations

import numpy as np

# private names: the module's public functions are the optimizers, as torch's
from ..parameter import as_sparse_grad as _as_sparse_grad
from ..parameter import is_sparse_grad as _is_sparse_grad
from ._functional_core import _check_array, _check_writeable, _working, _where
from .adadelta import adadelta  # noqa: F401
from .adagrad import adagrad  # noqa: F401
from .adam import adam  # noqa: F401
from .adamax import adamax  # noqa: F401
from .adamw import adamw  # noqa: F401
from .asgd import asgd  # noqa: F401
from .nadam import nadam  # noqa: F401
from .radam import radam  # noqa: F401
from .rmsprop import rmsprop  # noqa: F401
from .rprop import rprop  # noqa: F401
from .sgd import sgd  # noqa: F401

_COALESCE_DENSE = "coalesce expected sparse coordinate tensor layout but got Strided"


def sparse_adam(params, grads, exp_avgs, exp_avg_sqs, state_steps, *, eps, beta1, beta2, lr,
                maximize):
    r"""Functional API that performs Sparse Adam algorithm computation, as
    ``torch.optim._functional.sparse_adam``.

    See :class:`nbopt.SparseAdam` for the update rule.  ``grads`` are sparse
    (:class:`nbopt.parameter.SparseGrad` or 2-D ``scipy.sparse``);
    ``state_steps`` are the step counts *after* this step's increment, as
    Python numbers (torch's class increments ``state["step"]`` itself and
    this function does not change them).  Parameters and moments are
    updated in place, on the rows present in each gradient; a gradient with
    no entries changes nothing.  Everything is validated (and every step size
    computed) before anything changes; see :ref:`functional-api`.

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt.parameter import SparseGrad
    >>> from nbopt.optim._functional import sparse_adam
    >>> emb = np.ones((3, 2), np.float32)
    >>> m, v = np.zeros_like(emb), np.zeros_like(emb)
    >>> g = SparseGrad([[1]], np.ones((1, 2), np.float32), emb.shape)
    >>> sparse_adam([emb], [g], [m], [v], [1], eps=1e-8, beta1=0.9, beta2=0.999, lr=0.1,
    ...             maximize=False)
    >>> np.round(emb[:, 0], 4)          # row 1 moved
    array([1. , 0.9, 1. ], dtype=float32)
    """
    from ..kernels.sparse_adam import sparse_adam_scalars, sparse_adam_step

    group = {"lr": lr, "betas": (beta1, beta2), "eps": eps, "maximize": maximize}
    work = []
    for i, param in enumerate(params):
        grad, exp_avg, exp_avg_sq, step = grads[i], exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        where = _where("params", i)
        if not isinstance(param, np.ndarray):
            raise TypeError(f"{where} must be a numpy array, got {type(param).__name__}")
        if param.dtype not in (np.float32, np.float64):
            raise TypeError(f"{where}: sparse_adam can only optimize float32 and float64 "
                            f"parameters, got dtype {param.dtype}")
        _check_writeable(param, where)
        if not _is_sparse_grad(grad):
            if isinstance(grad, np.ndarray):
                raise RuntimeError(_COALESCE_DENSE)
            raise TypeError(f"grads[{i}] must be a sparse gradient (nbopt.SparseGrad or "
                            f"scipy.sparse), got {type(grad).__name__}")
        grad = _as_sparse_grad(grad)
        if grad.shape != param.shape:
            raise RuntimeError(f"grads[{i}] has shape {grad.shape} but the parameter has "
                               f"shape {param.shape}")
        if grad.dtype != param.dtype:
            raise RuntimeError(f"grads[{i}] has dtype {grad.dtype} but the parameter has "
                               f"dtype {param.dtype}")
        for name, value in (("exp_avgs", exp_avg), ("exp_avg_sqs", exp_avg_sq)):
            _check_array(value, name, i, param)
            _check_writeable(value, _where(name, i))
        grad = grad.coalesce()
        if grad.nnz == 0:
            continue            # torch skips the parameter before reading its step
        # the step size (torch computes it after updating the moments; here it
        # is computed first, so that e.g. a step of 0 changes nothing)
        sparse_adam_scalars(group, step)
        work.append((param, grad, exp_avg, exp_avg_sq, step))
    for param, grad, exp_avg, exp_avg_sq, step in work:
        contiguous = param.flags.c_contiguous or param.flags.f_contiguous
        wp = param if contiguous else np.ascontiguousarray(param)
        m, m_copied = _working(wp, exp_avg)
        v, v_copied = _working(wp, exp_avg_sq)
        sparse_adam_step(wp, m, v, grad, group, step)
        if wp is not param:
            param[...] = wp
        if m_copied:
            exp_avg[...] = m
        if v_copied:
            exp_avg_sq[...] = v
