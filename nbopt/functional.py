r"""Optimizers inside Numba code: every element-wise update rule as a function
callable from the user's own ``@njit`` (or ``@njit(parallel=True)``) code and
from Python, with the class API's numbers bit for bit.

Each algorithm has three names here, defined next to its maths in
``nbopt/kernels/<algo>.py``:

``<algo>_init(param, ...)``
    A new state record for one parameter: a ``NamedTuple`` of arrays
    (``<Algo>State``) whose ``step`` is a 1-element float32 array (torch's 0-d
    float32 ``step`` tensor) and whose other fields are torch's state names.
``<algo>_step(param, grad, state, lr, ...)``
    One step, in place on ``param`` and ``state``: the class's
    hyper-parameters (same names and defaults, ``betas`` split into ``beta1``
    and ``beta2``) as scalar arguments.  The per-step scalars are computed in
    float64 by the same host functions the class path uses (C's ``pow``, not
    Numba's ``**``) and rounded to the parameter dtype; the per-element maths
    is the same compiled function.  A serial loop: parallelise over your own
    parameters (particles, agents) with ``prange``.

Arrays must be C-contiguous float32, float64 or complex (stepped through the
real view); anything else fails when Numba compiles the call, with a message
saying why.

:func:`to_state_dict` and :func:`from_state_dict` convert between these
records and ``optimizer.state_dict()["state"][i]`` entries, so a simulation
checkpoints with :func:`nbopt.save` and resumes in either API.

Example
-------
>>> import numpy as np
>>> from numba import njit
>>> from nbopt.functional import adam_init, adam_step
>>> @njit
... def fit(w, state, steps):
...     grad = np.empty_like(w)
...     for _ in range(steps):
...         for i in range(w.size):
...             grad[i] = 2 * (w[i] - 3)       # d/dw (w - 3)^2
...         adam_step(w, grad, state, lr=0.1)
>>> w = np.zeros(2)
>>> state = adam_init(w)
>>> fit(w, state, 500)
>>> np.round(w, 3), state.step
(array([3., 3.]), array([500.], dtype=float32))
"""
from __future__ import annotations

import numpy as np

from .kernels.adadelta import AdadeltaState, adadelta_init, adadelta_step
from .kernels.adagrad import AdagradState, adagrad_init, adagrad_step
from .kernels.adam import AdamState, adam_init, adam_step, adamw_step
from .kernels.adamax import AdamaxState, adamax_init, adamax_step
from .kernels.rprop import RpropState, rprop_init, rprop_step
from .kernels.sgd import SGDState, momentum_buffer_unset, sgd_init, sgd_step
from .kernels.asgd import ASGDState, asgd_init, asgd_step
from .kernels.nadam import NAdamState, nadam_init, nadam_step
from .kernels.radam import RAdamState, radam_init, radam_step
from .kernels.rmsprop import RMSpropState, rmsprop_init, rmsprop_step

adamw_init = adam_init          # AdamW keeps Adam's state

__all__ = ["lr_schedule", "AdamState", "adam_init", "adam_step", "adamw_init", "adamw_step",
           "ASGDState", "asgd_init", "asgd_step", "NAdamState", "nadam_init", "nadam_step",
           "RAdamState", "radam_init", "radam_step",
           "RMSpropState", "rmsprop_init", "rmsprop_step",
           "SGDState", "sgd_init", "sgd_step", "AdagradState", "adagrad_init",
           "adagrad_step", "AdadeltaState", "adadelta_init", "adadelta_step",
           "AdamaxState", "adamax_init", "adamax_step", "RpropState", "rprop_init",
           "rprop_step",
           "to_state_dict", "from_state_dict"]


def lr_schedule(make_scheduler, steps: int, lr: float = 1.0, param_groups: int = 1) -> np.ndarray:
    """The learning rates an ``nbopt.lr_scheduler`` scheduler gives over
    ``steps`` steps, as an array to index inside njit code (``lrs[k]`` at step
    ``k``): the scheduler's own numbers, bit for bit.

    ``make_scheduler(optimizer)`` builds the scheduler on a stand-in optimizer
    whose groups start at ``lr``; the result has shape ``(steps,)`` (or
    ``(steps, param_groups)``).

    >>> import nbopt
    >>> from nbopt.functional import lr_schedule
    >>> lrs = lr_schedule(lambda o: nbopt.lr_scheduler.StepLR(o, step_size=2, gamma=0.5), 5, lr=0.1)
    >>> lrs
    array([0.1  , 0.1  , 0.05 , 0.05 , 0.025])
    """
    from . import SGD, Parameter

    groups = [{"params": [Parameter(np.zeros(1))]} for _ in range(param_groups)]
    optimizer = SGD(groups, lr=lr)
    scheduler = make_scheduler(optimizer)
    out = np.empty((steps, param_groups))
    for k in range(steps):
        out[k] = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    return out[:, 0] if param_groups == 1 else out


def to_state_dict(state) -> dict:
    """A functional state record as an ``optimizer.state_dict()["state"]``
    entry: ``step`` (and any scalar state) as 0-d arrays (float32, as torch
    creates them; see :func:`from_state_dict` for scalar state), the state
    arrays as they are (empty optional ones, e.g. ``max_exp_avg_sq`` without
    amsgrad, are left out, as torch leaves them out)."""
    entry = {}
    for name, value in zip(state._fields, state):
        value = np.asarray(value)
        if value.ndim == 1 and value.shape == (1,) and name in _SCALARS:
            entry[name] = value.reshape(()).copy()
        elif name == "momentum_buffer" and momentum_buffer_unset(value):
            pass        # sgd_init's buffer before the first step: torch has none yet
        elif value.size or name not in _OPTIONAL:
            entry[name] = value.copy()
    return entry


def from_state_dict(kind, entry, param):
    """The functional state record of type ``kind`` (e.g. :class:`AdamState`)
    for ``param`` from an ``optimizer.state_dict()["state"]`` entry (copies,
    cast to the parameter's dtype; a missing optional array is empty)."""
    param = np.asarray(param)
    values = []
    for name in kind._fields:
        if name in _SCALARS:
            if name not in entry:
                raise KeyError(name)
            values.append(_scalar_state(name, np.asarray(entry[name]).reshape(()), param))
        elif name in entry and entry[name] is not None:
            value = np.asarray(entry[name])
            if value.shape != param.shape:
                raise ValueError(f"state {name!r} has shape {value.shape}, but the parameter "
                                 f"has shape {param.shape}")
            values.append(np.ascontiguousarray(value, dtype=param.dtype).copy())
        elif name in _OPTIONAL:
            values.append(np.zeros_like(param[:0]))
        else:
            raise KeyError(name)
    return kind(*values)


def _scalar_state(name, value, param):
    """A state-dict scalar as a 1-element array, in the dtype torch's
    load_state_dict gives it: ``step`` stays float32; other scalar state
    (ASGD's ``eta``, ``mu``, NAdam's ``mu_product``) takes a float
    parameter's dtype (a complex parameter's keeps its own), and the steps
    then advance it in that dtype, as the class does."""
    dtype = np.float32
    if name != "step":
        if param.dtype.kind == "f":
            dtype = param.dtype
        elif value.dtype in (np.float32, np.float64):
            dtype = value.dtype
    return np.array([value], dtype)


# state fields that are scalars (1-element arrays here, float32 unless loaded
# into a float64 parameter; 0-d in a state dict), and arrays that exist only under an option
_SCALARS = frozenset({"step", "eta", "mu", "mu_product"})
_OPTIONAL = frozenset({"max_exp_avg_sq", "momentum_buffer", "grad_avg"})
