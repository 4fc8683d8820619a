r"""Stochastic Weight Averaging and exponential moving averages of a model,
as ``torch.optim.swa_utils`` 2.13.

The utilities work on any model that follows nbopt's **model protocol**
(:mod:`nbopt.nn` has a reference implementation):

* ``parameters()`` -- the trained arrays (:class:`nbopt.Parameter`), in a
  fixed order;
* ``buffers()`` -- the non-trained arrays of its state (running statistics,
  counters), in a fixed order;
* ``modules()`` -- the model itself and all of its sub-modules;
* ``training``, ``train(mode=True)``, ``eval()`` -- the train/eval flag;
* ``model(batch)`` -- the forward pass.

:func:`update_bn` recomputes the statistics of every sub-module that is an
:class:`nbopt.nn.BatchNorm1d`, or that has a ``momentum`` attribute and a
``reset_running_stats()`` method (so that user-written normalisation layers
take part).

Contents: :class:`AveragedModel`, :func:`update_bn`,
:func:`get_ema_multi_avg_fn`, :func:`get_swa_multi_avg_fn`,
:func:`get_ema_avg_fn`, :func:`get_swa_avg_fn`, and :class:`SWALR`, the
learning-rate schedule that anneals to a constant SWA learning rate.

The default SWA average and the two ``*_multi_avg_fn`` functions update all
arrays of one dtype with one compiled kernel call
(:mod:`nbopt.kernels.averaging`), rounded as torch rounds them on the CPU.

References
----------
P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov and A. G. Wilson,
"Averaging Weights Leads to Wider Optima and Better Generalization", UAI 2018,
https://arxiv.org/abs/1803.05407.

Examples
--------
>>> import numpy as np, nbopt
>>> from nbopt import nn
>>> from nbopt.swa_utils import AveragedModel
>>> model = nn.Linear(2, 1, rng=0)
>>> swa = AveragedModel(model)
>>> for value in (1.0, 2.0, 6.0):
...     model.weight[...] = value
...     swa.update_parameters(model)
>>> swa.module.weight, int(swa.n_averaged)
(Parameter([[3., 3.]], dtype=float32), 3)
"""
from __future__ import annotations

import itertools
import math
from copy import deepcopy
from typing import Any, Callable, Iterable

import numpy as np

from .lr_scheduler import LRScheduler, _format_param, _warn_get_lr_called_within_step
from .nn import Module, _BatchNorm, _check_device, _torch_dtype_name
from .parameter import is_device_array

# The dtypes nbopt.kernels.averaging compiles for (a test checks they agree).
# That module imports Numba, so it is loaded at the first average: `import
# nbopt` stays light.
_KERNEL_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64,
                                                  np.complex128))


def average_(kind: str, avg_list, cur_list, value: float, cache: dict | None = None) -> None:
    from .kernels.averaging import average_ as kernel_average

    kernel_average(kind, avg_list, cur_list, value, cache)

__all__ = [
    "AveragedModel",
    "update_bn",
    "SWALR",
    "get_ema_multi_avg_fn",
    "get_swa_multi_avg_fn",
    "get_ema_avg_fn",
    "get_swa_avg_fn",
]

_ZIP_MESSAGE = "zip() argument 2 is {} than argument 1"


# --------------------------------------------------------------------------
# torch's promotion and broadcasting rules where NumPy's differ

def _n_plus_one(num_averaged):
    """``num_averaged + 1`` as torch sees it: a Python int for an int or an
    integer 0-d array (torch's long tensor), a float otherwise."""
    n = np.asarray(num_averaged)
    if n.size != 1:
        raise RuntimeError("num_averaged must be a number or a one-element array, got shape "
                           f"{n.shape}")
    value = n.reshape(()).item()
    return value + 1


def _is_float(a: np.ndarray) -> bool:
    return a.dtype.kind in "fc"


def _float_like(a: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``a`` cast as torch's type promotion casts it next to ``other``: an
    integer or bool array meets a float array in that array's dtype (NumPy
    would widen both to float64)."""
    if not _is_float(a) and _is_float(other):
        return a.astype(other.dtype)
    return a


def _t_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _float_like(a, b) + _float_like(b, a)


def _t_sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _float_like(a, b) - _float_like(b, a)


def _t_scale(scale: float, a: np.ndarray) -> np.ndarray:
    """``python_float * tensor``: integer tensors become the default dtype
    (float32); float tensors keep theirs, with the scalar rounded to it."""
    a = np.asarray(a)
    if not _is_float(a):
        a = a.astype(np.float32)
    return a.dtype.type(scale) * a


def _t_div_count(d: np.ndarray, np1) -> np.ndarray:
    """``d / (n + 1)`` with ``n`` torch's long 0-d tensor (or an int)."""
    if d.dtype.kind == "c":
        # c10's complex division by (n + 1) + 0j multiplies by the real reciprocal
        real = d.real.dtype.type
        return d * (real(1) / real(np1))
    if d.dtype.kind == "f":
        return d / d.dtype.type(np1)
    # integer true division happens in the default dtype, float32
    return d.astype(np.float32) / np.float32(np1)


def _broadcast_message(a_shape, b_shape):
    """torch's ``infer_size`` message for shapes that do not broadcast, or None."""
    ndim = max(len(a_shape), len(b_shape))
    for i in range(ndim - 1, -1, -1):
        offset = ndim - 1 - i
        da = len(a_shape) - 1 - offset
        db = len(b_shape) - 1 - offset
        sa = a_shape[da] if da >= 0 else 1
        sb = b_shape[db] if db >= 0 else 1
        if sa != sb and sa != 1 and sb != 1:
            return (f"The size of tensor a ({sa}) must match the size of tensor b ({sb}) at "
                    f"non-singleton dimension {i}")
    return None


def _check_into(out_shape, a_shape, b_shape) -> None:
    """Raise torch's RuntimeError unless ``a op b`` broadcasts to ``out_shape``
    (an in-place op or ``copy_`` into an array of that shape)."""
    message = _broadcast_message(a_shape, b_shape)
    if message is not None:
        raise RuntimeError(message)
    shape = np.broadcast_shapes(tuple(a_shape), tuple(b_shape))
    if shape != tuple(out_shape):
        raise RuntimeError(f"output with shape {list(out_shape)} doesn't match the broadcast "
                           f"shape {list(shape)}")


def _copy_into(dst: np.ndarray, src) -> None:
    """``dst.copy_(src)``: broadcast, cast (truncating floats to integers);
    across devices for GPU arrays."""
    if is_device_array(dst) or is_device_array(src):
        from .kernels import _cuda

        if is_device_array(dst):
            _cuda.copy_into(dst, src)
            return
        src = _cuda.to_host(src)
    src = np.asarray(src)
    if src.shape != dst.shape:
        _check_into(dst.shape, dst.shape, src.shape)
    np.copyto(dst, src, casting="unsafe")


def _check_lists(avg_list, cur_list) -> None:
    """What ``torch._foreach_lerp_`` checks before it writes."""
    if len(avg_list) != len(cur_list):
        raise RuntimeError(f"Tensor lists must have the same number of tensors, got "
                           f"{len(avg_list)} and {len(cur_list)}")
    for avg, cur in zip(avg_list, cur_list):
        if not _is_float(avg):
            raise RuntimeError(f'"lerp_kernel_scalar" not implemented for '
                               f"'{_torch_dtype_name(avg.dtype)}'")
        if cur.dtype != avg.dtype:
            raise RuntimeError(f"expected dtype {_torch_dtype_name(avg.dtype).lower()} for "
                               f"`end` but got dtype {_torch_dtype_name(cur.dtype).lower()}")
        if cur.shape != avg.shape:
            _check_into(avg.shape, avg.shape, cur.shape)


def _lerp_lists(avg_list, cur_list, weight: float, cache: dict) -> None:
    """``torch._foreach_lerp_(avg_list, cur_list, weight)``, one kernel call
    per dtype (the caller has run :func:`_check_lists`)."""
    for dtype_avg, dtype_cur in _by_dtype(avg_list, cur_list):
        if dtype_avg[0].dtype in _KERNEL_DTYPES:
            average_("lerp", dtype_avg, dtype_cur, weight, cache)
            continue
        # float16 and other float types the kernels do not take: torch's
        # lerp runs in float32 (its opmath type for half) and rounds once
        wide = np.float32 if dtype_avg[0].dtype.itemsize < 4 else np.float64
        wide_avg = [a.astype(wide) for a in dtype_avg]
        average_("lerp", wide_avg, [c.astype(wide) for c in dtype_cur], weight)
        for avg, result in zip(dtype_avg, wide_avg):
            _copy_into(avg, result)


def _by_dtype(avg_list, cur_list):
    if not avg_list:
        return []
    first = avg_list[0].dtype
    if all(a.dtype == first for a in avg_list):
        return [(avg_list, cur_list)]
    groups: dict = {}
    for avg, cur in zip(avg_list, cur_list):
        groups.setdefault(avg.dtype, ([], []))
        groups[avg.dtype][0].append(avg)
        groups[avg.dtype][1].append(cur)
    return list(groups.values())


def _as_array(a):
    """An ndarray as it is (Parameters included: the kernel's pointer table is
    cached on the identity of the arrays); a GPU array as a numba device array
    (a DeviceParameter's own ``data``, so the identity holds there too)."""
    if isinstance(a, np.ndarray):
        return a
    if is_device_array(a):
        from .kernels._cuda import as_device_array

        return as_device_array(a)
    return np.asarray(a)


def _as_arrays(arrays) -> list:
    return [_as_array(a) for a in arrays]


# --------------------------------------------------------------------------
# averaging functions

def get_ema_multi_avg_fn(decay: float = 0.999) -> Callable:
    r"""The function applying an exponential moving average (EMA) across
    lists of arrays, for ``AveragedModel(multi_avg_fn=...)``.

    .. math::
        W_0^{\text{EMA}} = W_0^{\text{model}}, \qquad
        W_{t+1}^{\text{EMA}} = \text{decay}\, W_t^{\text{EMA}}
        + (1 - \text{decay})\, W_{t+1}^{\text{model}}

    (the first step is :class:`AveragedModel`'s copy).

    Parameters
    ----------
    decay : float, default 0.999
        Must lie in ``[0, 1]``.

    Returns
    -------
    callable
        ``ema_update(ema_param_list, current_param_list, num_averaged)``:
        updates ``ema_param_list`` in place.  Float and complex arrays go
        through one compiled kernel call per dtype, as torch's
        ``torch._foreach_lerp_(ema, current, 1 - decay)`` (the weight rounded
        to the dtype); other dtypes compute ``ema * decay + current * (1 -
        decay)`` in float32 and truncate on the copy back, as torch does.

    Raises
    ------
    ValueError
        ``decay`` outside ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt.swa_utils import get_ema_multi_avg_fn
    >>> ema = [np.zeros(3)]
    >>> get_ema_multi_avg_fn(0.75)(ema, [np.ones(3)], None)
    >>> ema[0]
    array([0.25, 0.25, 0.25])
    """
    if decay < 0.0 or decay > 1.0:
        raise ValueError(
            f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")

    def check(ema_param_list, current_param_list, num_averaged) -> None:
        if _is_float(ema_param_list[0]):
            _check_lists(ema_param_list, current_param_list)
        else:
            _check_pairs_copy(ema_param_list, current_param_list)

    tables: dict = {}

    def ema_update(ema_param_list, current_param_list, num_averaged) -> None:
        ema_param_list = _as_arrays(ema_param_list)
        current_param_list = _as_arrays(current_param_list)
        # as torch: the first array decides the path (an empty list raises IndexError)
        if _is_float(ema_param_list[0]):
            _check_lists(ema_param_list, current_param_list)
            _lerp_lists(ema_param_list, current_param_list, 1 - decay, tables)
        else:
            _check_pairs_copy(ema_param_list, current_param_list)
            for p_ema, p_model in zip(ema_param_list, current_param_list, strict=True):
                _copy_into(p_ema, _t_add(_t_scale(decay, p_ema), _t_scale(1 - decay, p_model)))

    ema_update._nbopt_check = check  # lets AveragedModel validate before any write
    return ema_update


def _check_pairs_copy(avg_list, cur_list) -> None:
    if len(avg_list) != len(cur_list):
        raise ValueError(_ZIP_MESSAGE.format(
            "shorter" if len(cur_list) < len(avg_list) else "longer"))
    for avg, cur in zip(avg_list, cur_list):
        if cur.shape != avg.shape:
            _check_into(avg.shape, avg.shape, cur.shape)


def get_swa_multi_avg_fn() -> Callable:
    r"""The function applying stochastic weight averaging (SWA) across lists
    of arrays, for ``AveragedModel(multi_avg_fn=...)``.

    .. math::
        W^{\text{SWA}} \leftarrow W^{\text{SWA}}
        + \frac{W^{\text{model}} - W^{\text{SWA}}}{n + 1}

    with ``n`` the number of models averaged so far.

    Returns
    -------
    callable
        ``swa_update(averaged_param_list, current_param_list, num_averaged)``:
        updates ``averaged_param_list`` in place.  Float and complex arrays go
        through one compiled kernel call per dtype, as torch's
        ``torch._foreach_lerp_(avg, current, 1 / (num_averaged + 1))``.  When
        ``num_averaged`` is an integer array (``AveragedModel.n_averaged``,
        torch's long tensor), the weight ``1 / (n + 1)`` is computed in
        float32 (torch's default dtype) even for float64 arrays, as torch
        does; a Python int gives a double weight.  Integer arrays raise
        torch's ``RuntimeError`` (integer ``addcdiv`` / a float ``alpha``).

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt.swa_utils import get_swa_multi_avg_fn
    >>> avg = [np.full(2, 1.0)]
    >>> get_swa_multi_avg_fn()(avg, [np.full(2, 4.0)], 2)   # mean of 1, 1, 4
    >>> avg[0]
    array([2., 2.])
    """

    def weight(num_averaged) -> float:
        if isinstance(num_averaged, np.ndarray) or isinstance(num_averaged, np.generic):
            n = np.asarray(num_averaged)
            if n.dtype.kind in "iub":
                # 1 / (long tensor) is a true division in the default dtype
                return float(np.float32(1) / (n + 1).astype(np.float32))
            return float(1 / (n + 1))
        return 1 / (num_averaged + 1)

    def check(averaged_param_list, current_param_list, num_averaged) -> None:
        if _is_float(averaged_param_list[0]):
            _check_lists(averaged_param_list, current_param_list)
        elif isinstance(num_averaged, (np.ndarray, np.generic)):
            raise RuntimeError(_ADDCDIV_MESSAGE)
        else:
            raise RuntimeError("For integral input tensors, argument alpha must not be a "
                               "floating point number.")

    tables: dict = {}

    def swa_update(averaged_param_list, current_param_list, num_averaged) -> None:
        averaged_param_list = _as_arrays(averaged_param_list)
        current_param_list = _as_arrays(current_param_list)
        check(averaged_param_list, current_param_list, num_averaged)
        _lerp_lists(averaged_param_list, current_param_list, weight(num_averaged), tables)

    swa_update._nbopt_check = check  # lets AveragedModel validate before any write
    return swa_update


_ADDCDIV_MESSAGE = (
    "Integer division with addcdiv is no longer supported, and in a future  release addcdiv "
    "will perform a true division of tensor1 and tensor2. The historic addcdiv behavior can "
    "be implemented as (input + value * torch.trunc(tensor1 / tensor2)).to(input.dtype) for "
    "integer inputs and as (input + value * tensor1 / tensor2) for float inputs. The future "
    "addcdiv behavior is just the latter implementation: (input + value * tensor1 / tensor2), "
    "for all dtypes.")


def get_ema_avg_fn(decay: float = 0.999) -> Callable:
    r"""The function applying an exponential moving average (EMA) to one
    array, for ``AveragedModel(avg_fn=...)``.

    .. math::
        W_{t+1}^{\text{EMA}} = \text{decay}\, W_t^{\text{EMA}}
        + (1 - \text{decay})\, W_{t+1}^{\text{model}}

    Parameters
    ----------
    decay : float, default 0.999
        Must lie in ``[0, 1]``.

    Returns
    -------
    callable
        ``ema_update(ema_param, current_param, num_averaged)`` returning the
        new value (a new array, computed with torch's promotion: float arrays
        keep their dtype, integer arrays give float32).

    Raises
    ------
    ValueError
        ``decay`` outside ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt.swa_utils import get_ema_avg_fn
    >>> get_ema_avg_fn(0.5)(np.zeros(2), np.ones(2), 1)
    array([0.5, 0.5])
    """
    if decay < 0.0 or decay > 1.0:
        raise ValueError(
            f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")

    def ema_update(ema_param, current_param, num_averaged):
        return _t_add(_t_scale(decay, ema_param), _t_scale(1 - decay, current_param))

    return ema_update


def get_swa_avg_fn() -> Callable:
    r"""The function applying stochastic weight averaging (SWA) to one array,
    for ``AveragedModel(avg_fn=...)``.

    .. math::
        W^{\text{SWA}} + \frac{W^{\text{model}} - W^{\text{SWA}}}{n + 1}

    Returns
    -------
    callable
        ``swa_update(averaged_param, current_param, num_averaged)`` returning
        the new value (a new array, computed with torch's promotion and
        rounding: a true division by ``n + 1`` for float arrays, a
        multiplication by ``1 / (n + 1)`` for complex ones, float32 for
        integer ones).

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt.swa_utils import get_swa_avg_fn
    >>> get_swa_avg_fn()(np.array([1.0]), np.array([4.0]), np.array(2))
    array([2.])
    """

    def swa_update(averaged_param, current_param, num_averaged):
        averaged_param = np.asarray(averaged_param)
        current_param = np.asarray(current_param)
        diff = _t_sub(current_param, averaged_param)
        return _t_add(averaged_param, _t_div_count(diff, _n_plus_one(num_averaged)))

    return swa_update


# --------------------------------------------------------------------------

class AveragedModel(Module):
    r"""A copy of a model whose parameters are a running average of the
    model's: Stochastic Weight Averaging (SWA) and exponential moving
    averages (EMA), as ``torch.optim.swa_utils.AveragedModel``.

    ``AveragedModel(model)`` deep-copies ``model`` (any object following the
    model protocol, see :mod:`nbopt.swa_utils`) into :attr:`module`; each
    :meth:`update_parameters` call folds the model's current values into the
    copy.  Calling the averaged model runs the copy's forward pass.

    Parameters
    ----------
    model : model
        The model to average (a :class:`nbopt.nn.Module` or any protocol
        object); it is copied, never modified.
    device : None or "cpu"
        Accepted for torch compatibility; arrays live in host memory.
    avg_fn : callable, optional
        ``avg_fn(averaged, current, num_averaged) -> new averaged``, applied
        array by array (e.g. :func:`get_ema_avg_fn`).
    multi_avg_fn : callable, optional
        ``multi_avg_fn(averaged_list, current_list, num_averaged)``, updating
        the lists in place, called once per dtype (e.g.
        :func:`get_ema_multi_avg_fn`).  At most one of ``avg_fn`` and
        ``multi_avg_fn``; with neither, an equally weighted average (SWA).
    use_buffers : bool, default False
        Average the buffers too (parameters then buffers, paired in order).
        Otherwise the buffers are copied from ``model`` at every update.

    Attributes
    ----------
    module : model
        The averaged copy.
    n_averaged : ndarray
        0-d int64 buffer: the number of models averaged so far (torch keeps
        a long tensor).  It comes first in :meth:`state_dict`, followed by
        ``module.<name>`` entries; ``avg_fn`` and ``multi_avg_fn`` are not
        saved.

    Notes
    -----
    The first :meth:`update_parameters` call (``n_averaged == 0``) copies
    the model's values.  After it, with ``n = n_averaged``:

    * neither function (SWA, torch's CPU path):
      :math:`W \leftarrow W + (W^{\text{model}} - W) / (n + 1)`, so after
      ``k`` calls the copy holds the arithmetic mean of the ``k`` snapshots;
    * ``multi_avg_fn``: called with the lists of each dtype and ``n_averaged``;
    * ``avg_fn``: ``W <- avg_fn(W, W_model, n_averaged)`` for each array.

    The averaged arrays are paired with the model's by a non-strict zip, as
    torch's (extra arrays on either side are ignored); the buffers copied
    when ``use_buffers=False`` are paired strictly.  The default average and
    the ``multi_avg_fn`` functions of this module run as one compiled kernel
    call per dtype, and every check (shapes, dtypes, buffer counts) is made
    before any array is written.

    References
    ----------
    P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov and A. G. Wilson,
    "Averaging Weights Leads to Wider Optima and Better Generalization",
    UAI 2018.  B. T. Polyak and A. B. Juditsky, "Acceleration of Stochastic
    Approximation by Averaging", SIAM J. Control Optim. 30(4), 1992.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt import nn
    >>> from nbopt.swa_utils import AveragedModel, get_ema_multi_avg_fn
    >>> model = nn.Linear(1, 1, bias=False, rng=0)
    >>> ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5))
    >>> for value in (4.0, 8.0):
    ...     model.weight[...] = value
    ...     ema.update_parameters(model)
    >>> ema.module.weight          # 4 copied, then 0.5 * 4 + 0.5 * 8
    Parameter([[6.]], dtype=float32)
    >>> list(ema.state_dict())
    ['n_averaged', 'module.weight']
    """

    n_averaged: np.ndarray

    def __init__(self, model, device=None, avg_fn: Callable | None = None,
                 multi_avg_fn: Callable | None = None, use_buffers: bool = False) -> None:
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        _check_device(device)
        self.module = deepcopy(model)
        self.register_buffer("n_averaged", np.zeros((), np.int64))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers
        self._tables: dict = {}       # kernel pointer tables, per dtype

    def __getstate__(self):
        # copies (deepcopy, pickle) start without pointer tables: the
        # addresses belong to this object's arrays
        state = self.__dict__.copy()
        state["_tables"] = {}
        return state

    def forward(self, *args, **kwargs):
        """The averaged copy's forward pass."""
        return self.module(*args, **kwargs)

    def backward(self, *args, **kwargs):
        """The averaged copy's backward pass (if it has one)."""
        return self.module.backward(*args, **kwargs)

    def _pairs(self, model):
        if self.use_buffers:
            mine = itertools.chain(self.module.parameters(), self.module.buffers())
            theirs = itertools.chain(model.parameters(), model.buffers())
        else:
            mine = self.parameters()
            theirs = model.parameters()
        # non-strict, as torch's zip: extra arrays on either side are ignored
        return [(_as_array(a), _as_array(c)) for a, c in zip(mine, theirs)]

    def update_parameters(self, model) -> None:
        """Fold ``model``'s current values into the average (see Notes)."""
        pairs = self._pairs(model)
        buffer_pairs = []
        if not self.use_buffers:
            mine = list(self.module.buffers())
            theirs = list(model.buffers())
            if len(mine) != len(theirs):
                raise ValueError(_ZIP_MESSAGE.format(
                    "shorter" if len(theirs) < len(mine) else "longer"))
            buffer_pairs = [(_as_array(a), _as_array(c)) for a, c in zip(mine, theirs)]
        n = int(self.n_averaged)
        # Every check before any write: torch would stop half way through.
        if n == 0:
            for avg, cur in pairs:
                if avg.shape != cur.shape:
                    _check_into(avg.shape, avg.shape, cur.shape)
        elif self.multi_avg_fn is None and self.avg_fn is None:
            for avg, cur in pairs:
                if avg.shape != cur.shape:
                    _check_into(avg.shape, cur.shape, avg.shape)
        groups = _by_dtype([a for a, _ in pairs], [c for _, c in pairs])
        if n > 0 and self.multi_avg_fn is not None:
            check = getattr(self.multi_avg_fn, "_nbopt_check", None)
            if check is not None:
                for avg_list, cur_list in groups:
                    check(avg_list, cur_list, self.n_averaged)
        for avg, cur in buffer_pairs:
            if avg.shape != cur.shape:
                _check_into(avg.shape, avg.shape, cur.shape)

        if n == 0:
            for avg, cur in pairs:
                _copy_into(avg, cur)
        elif self.multi_avg_fn is not None:
            for avg_list, cur_list in groups:
                self.multi_avg_fn(avg_list, cur_list, self.n_averaged)
        elif self.avg_fn is None:
            for avg_list, cur_list in groups:
                _swa_default(avg_list, cur_list, n + 1, self._tables)
        else:
            for avg, cur in pairs:
                _copy_into(avg, self.avg_fn(avg, cur, self.n_averaged))
        for avg, cur in buffer_pairs:
            _copy_into(avg, cur)
        self.n_averaged += 1


def _swa_default(avg_list, cur_list, np1: int, cache: dict) -> None:
    """torch's CPU default, ``avg.copy_(avg + (cur - avg) / (n + 1))`` per
    array: one kernel call for the float and complex pairs of matching dtype;
    mixed-dtype and integer pairs (rare: integer buffers with
    ``use_buffers=True``) follow torch's promotion in NumPy."""
    dtype = avg_list[0].dtype
    if dtype in _KERNEL_DTYPES and all(c.dtype == dtype for c in cur_list):
        average_("swa", avg_list, cur_list, np1, cache)
        return
    fast_avg, fast_cur = [], []
    for avg, cur in zip(avg_list, cur_list):
        if avg.dtype in _KERNEL_DTYPES and cur.dtype == avg.dtype:
            fast_avg.append(avg)
            fast_cur.append(cur)
        else:
            _copy_into(avg, _t_add(avg, _t_div_count(_t_sub(cur, avg), np1)))
    average_("swa", fast_avg, fast_cur, np1, cache)


def update_bn(loader: Iterable[Any], model, device=None) -> None:
    r"""Recompute the batch-norm running statistics of ``model`` with one
    pass over ``loader``, as ``torch.optim.swa_utils.update_bn``.

    Every batch-norm sub-module (an :class:`nbopt.nn.BatchNorm1d`, or any
    sub-module with a ``momentum`` attribute and ``reset_running_stats()``)
    has its statistics reset and its ``momentum`` set to None, which makes
    the running statistics the cumulative average over the batches: after
    the pass, ``running_mean`` is the mean of the batch means and
    ``running_var`` the mean of the (unbiased) batch variances.  The model
    runs in training mode; its momenta and train/eval mode are restored
    afterwards.  A model without batch-norm layers is left untouched.

    Parameters
    ----------
    loader : iterable
        Batches: arrays, or lists/tuples whose first element is the input
        (as ``(input, target)`` pairs from a data loader).
    model : model
        A model following the protocol (see :mod:`nbopt.swa_utils`),
        typically an :class:`AveragedModel`.
    device : None or "cpu"
        Accepted for torch compatibility.

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt import nn
    >>> from nbopt.swa_utils import update_bn
    >>> model = nn.Sequential(nn.BatchNorm1d(1)).eval()
    >>> loader = [(np.array([[0.0], [2.0]], np.float32), None),
    ...           (np.array([[4.0], [6.0]], np.float32), None)]
    >>> update_bn(loader, model)
    >>> model[0].running_mean, model[0].running_var, model.training
    (array([3.], dtype=float32), array([2.], dtype=float32), False)
    """
    _check_device(device)
    # keyed by identity: protocol modules need not be hashable
    momenta = {}
    for module in model.modules():
        if _is_batchnorm(module):
            module.reset_running_stats()
            momenta[id(module)] = (module, module.momentum)

    if not momenta:
        return

    was_training = model.training
    model.train()
    for module, _ in momenta.values():
        module.momentum = None

    for input in loader:
        if isinstance(input, (list, tuple)):
            input = input[0]
        model(input)

    for module, momentum in momenta.values():
        module.momentum = momentum
    model.train(was_training)


def _is_batchnorm(module) -> bool:
    if isinstance(module, _BatchNorm):
        return True
    return callable(getattr(module, "reset_running_stats", None)) and hasattr(module, "momentum")


# ----------------------------------------------------------------------------
# SWALR: the SWA learning-rate schedule, on the scheduler base of
# nbopt.lr_scheduler.

def _snapshot_groups(optimizer) -> list:
    """The groups' entries (arrays copied), to undo a failed construction."""
    return [{k: (v.copy() if isinstance(v, np.ndarray) else v)
             for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def _restore_groups(optimizer, saved: list) -> None:
    for group, before in zip(optimizer.param_groups, saved):
        for key in [k for k in group if k != "params" and k not in before]:
            del group[key]
        for key, value in before.items():
            current = group.get(key)
            if isinstance(current, np.ndarray) and isinstance(value, np.ndarray) \
                    and current.shape == value.shape:
                current[...] = value     # the optimizer keeps its own array object
            else:
                group[key] = value


class SWALR(LRScheduler):
    r"""Anneal the learning rate of every param group to a fixed value,
    ``swa_lr``, and keep it there: the schedule of Stochastic Weight Averaging,
    as ``torch.optim.swa_utils.SWALR``.

    With :math:`A` = ``anneal_epochs``, :math:`\eta_0` the group's lr when the
    scheduler is created and :math:`f` the annealing function, the lr after
    :math:`k` calls of :meth:`step` is

    .. math::
        \eta_k = \alpha_k\,\eta_{\text{swa}} + (1 - \alpha_k)\,\eta_0,
        \qquad \alpha_k = f\!\left(\min(1, k / \max(1, A))\right),

    with :math:`f(t) = (1 - \cos \pi t) / 2` (``"cos"``) or :math:`f(t) = t`
    (``"linear"``): :math:`\eta_0` at creation, :math:`\eta_{\text{swa}}` from
    step :math:`A` on.  With :math:`A = 0` the lr is :math:`\eta_{\text{swa}}`
    already after construction.

    Like torch, each step works from the *current* lr: it reconstructs
    :math:`\eta_0 = (\eta - \alpha_{k-1}\eta_{\text{swa}}) / (1 - \alpha_{k-1})`
    (or :math:`\eta_{\text{swa}}` once :math:`\alpha_{k-1} = 1`), then applies
    :math:`\alpha_k`.  A lr changed by another scheduler before SWALR's first
    step is therefore where the annealing starts: create SWALR at the start of
    training, let the main scheduler run, then step SWALR instead.  The
    counter is the number of steps this scheduler object has taken
    (``_step_count``), not ``last_epoch``, so a scheduler made with
    ``last_epoch >= 0`` anneals again from the current lr, and
    ``step(epoch)`` does not jump (both as torch).

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    swa_lr : float or list of float
        The final learning rate, for all groups or one per group; stored in
        each group as ``group["swa_lr"]``.
    anneal_epochs : int, default 10
        Number of steps of the annealing phase (0: jump to ``swa_lr``).
    anneal_strategy : {"cos", "linear"}, default "cos"
        The annealing function :math:`f`.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule; otherwise every
        group needs ``initial_lr``).

    Raises
    ------
    ValueError
        ``swa_lr`` a list whose length is not the number of groups,
        ``anneal_strategy`` not ``"cos"`` or ``"linear"``, ``anneal_epochs``
        not an int >= 0 (torch's messages, in torch's order).
    KeyError
        ``last_epoch >= 0`` and a group without ``initial_lr``.

    Notes
    -----
    Every check comes before the groups are written (torch writes
    ``swa_lr`` first and may then fail).  ``state_dict()`` holds every
    attribute except the optimizer and ``anneal_func``;
    ``load_state_dict`` restores ``anneal_func`` from the saved strategy.
    A 1-element array lr is updated in place, as torch fills a Tensor lr.

    References
    ----------
    P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov and A. G. Wilson,
    "Averaging Weights Leads to Wider Optima and Better Generalization",
    UAI 2018, https://arxiv.org/abs/1803.05407.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.swa_utils import SWALR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = SWALR(opt, swa_lr=0.05, anneal_epochs=3)
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(round(sched.get_last_lr()[0], 5))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.1, 0.0875, 0.0625, 0.05, 0.05]
    >>> opt.param_groups[0]["swa_lr"]
    0.05
    >>> SWALR(opt, swa_lr=0.01, anneal_epochs=0).get_last_lr()   # no annealing
    [0.01]
    """

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy: str = "cos",
                 last_epoch=-1) -> None:
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', "
                             f"instead got {anneal_strategy}")
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        saved = _snapshot_groups(optimizer)
        for value, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = value
        # attribute order as torch's, so state_dict() lists the same keys in order
        self._set_anneal_func(anneal_strategy)
        self.anneal_epochs = anneal_epochs
        try:
            super().__init__(optimizer, last_epoch)
        except BaseException:
            _restore_groups(optimizer, saved)
            raise

    @staticmethod
    def _linear_anneal(t):
        return t

    @staticmethod
    def _cosine_anneal(t):
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self) -> list:
        """The next learning rates: one annealing step from the current ones."""
        _warn_get_lr_called_within_step(self)
        # 0 during the initial step, then 1, 2, ...: the object's own step count
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        prev_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha)
                    for group in self.optimizer.param_groups]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [group["swa_lr"] * alpha + lr * (1 - alpha)
                for group, lr in zip(self.optimizer.param_groups, prev_lrs, strict=True)]

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        if anneal_strategy == "cos":
            self.anneal_func = self._cosine_anneal
        else:
            self.anneal_func = self._linear_anneal

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute but ``optimizer`` and
        ``anneal_func`` (plain data, storable with :func:`nbopt.save`)."""
        return {key: value for key, value in self.__dict__.items()
                if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`; ``anneal_func`` follows the
        loaded strategy."""
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)
