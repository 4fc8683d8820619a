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

from .kernels.adam import AdamState, adam_init, adam_step, adamw_step

adamw_init = adam_init          # AdamW keeps Adam's state

__all__ = ["AdamState", "adam_init", "adam_step", "adamw_init", "adamw_step",
           "to_state_dict", "from_state_dict"]


def to_state_dict(state) -> dict:
    """A functional state record as an ``optimizer.state_dict()["state"]``
    entry: ``step`` (and any scalar state) as 0-d float32 arrays, the state
    arrays as they are (empty optional ones, e.g. ``max_exp_avg_sq`` without
    amsgrad, are left out, as torch leaves them out)."""
    entry = {}
    for name, value in zip(state._fields, state):
        value = np.asarray(value)
        if value.ndim == 1 and value.shape == (1,) and name in _SCALARS:
            entry[name] = value.reshape(()).copy()
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
            values.append(np.array([np.asarray(entry[name]).reshape(())], np.float32))
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


# state fields that are scalars (1-element float32 arrays here, 0-d in a
# state dict), and arrays that exist only under an option
_SCALARS = frozenset({"step", "eta", "mu", "mu_product"})
_OPTIONAL = frozenset({"max_exp_avg_sq", "momentum_buffer", "grad_avg"})
