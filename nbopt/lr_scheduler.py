r"""Learning-rate schedulers, as ``torch.optim.lr_scheduler`` 2.13 has them.

Every scheduler of torch 2.13 is here with torch's signature, defaults,
numbers, warnings, errors and ``state_dict()`` layout (spec section 4):
:class:`LambdaLR`, :class:`MultiplicativeLR`, :class:`StepLR`,
:class:`MultiStepLR`, :class:`ConstantLR`, :class:`LinearLR`,
:class:`ExponentialLR`, :class:`PolynomialLR`, :class:`CosineAnnealingLR`,
:class:`CosineAnnealingWarmRestarts`, :class:`CyclicLR`, :class:`OneCycleLR`,
:class:`ReduceLROnPlateau`, :class:`ChainedScheduler`, :class:`SequentialLR`
and their base :class:`LRScheduler`.

A scheduler reads and writes its optimizer's ``param_groups`` and nothing
else: ``group["lr"]`` (a Python float, or a 1-element ndarray updated in place,
as torch updates a Tensor lr with ``fill_``), plus the keys some schedulers add
(``initial_lr``; ``max_lr`` / ``min_lr`` for OneCycleLR; ``max_momentum`` /
``base_momentum`` for the cyclic ones, which also cycle ``momentum`` or
``betas[0]``).  The learning rates are computed in Python double precision
with torch's own formulas and operation order, so float learning rates equal
torch's bit for bit.

The loop is torch's: step the optimizer, then the scheduler.

Examples
--------
>>> import numpy as np, nbopt
>>> from nbopt.lr_scheduler import OneCycleLR
>>> w = nbopt.Parameter(np.zeros(3))
>>> opt = nbopt.SGD([w], lr=0.1, momentum=0.9)
>>> sched = OneCycleLR(opt, max_lr=0.1, total_steps=10)
>>> lrs = []
>>> for step in range(10):
...     lrs.append(sched.get_last_lr()[0])
...     w.grad = 2 * w               # any gradient source
...     opt.step()
...     sched.step()
>>> [round(lr, 5) for lr in lrs]
[0.004, 0.052, 0.1, 0.09505, 0.08117, 0.06113, 0.03887, 0.01883, 0.00495, 0.0]

Scheduler state is plain data and checkpoints with :func:`nbopt.save`:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
>>> nbopt.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, path)
>>> sorted(nbopt.load(path)["sched"])[:4]
['_anneal_func_type', '_get_lr_called_within_step', '_is_initial', '_last_lr']

References
----------
PyTorch 2.13, ``torch/optim/lr_scheduler.py`` (the behaviour matched here).
"""
from __future__ import annotations

import functools
import math
import types
import warnings
import weakref
from bisect import bisect_right
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .optimizer import Optimizer

__all__ = ["LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
           "ExponentialLR", "SequentialLR", "CosineAnnealingLR", "ChainedScheduler",
           "ReduceLROnPlateau", "CyclicLR", "CosineAnnealingWarmRestarts", "OneCycleLR",
           "PolynomialLR", "LRScheduler"]

inf = math.inf

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available."
)

_OVERRIDDEN_STEP_WARNING = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
    "initialization. Please, make sure to call `optimizer.step()` before "
    "`lr_scheduler.step()`."
)

_SCHEDULER_FIRST_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
    "You should call them in the opposite order: "
    "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
    "will result in skipping the first value of the learning rate schedule."
)


# -- helpers (torch's names: swa_utils.SWALR builds on them) ------------------------------
def _is_tensor(x) -> bool:
    """A 1-element ndarray is what torch calls a Tensor hyper-parameter."""
    return isinstance(x, np.ndarray)


def _copy(x):
    return x.copy() if _is_tensor(x) else x


def _to_float(x) -> float:
    # float() of a 1-d size-1 array is deprecated in NumPy; torch's float() of a
    # 1-element tensor of any rank is fine
    if _is_tensor(x) and x.size == 1:
        return float(x.reshape(()))
    return float(x)


def _format_param(name: str, optimizer: Optimizer, param) -> list:
    """Return one value per param group: ``param`` repeated, or the list checked."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(f"{name} must have the same length as optimizer.param_groups. "
                             f"{name} has {len(param)} values, param_groups has "
                             f"{len(optimizer.param_groups)}.")
    else:
        param = [param] * len(optimizer.param_groups)
    return list(map(_copy, param))


def _param_groups_val_list(optimizer: Optimizer, key: str) -> list:
    """``group[key]`` of every group (arrays copied, as torch clones tensors)."""
    return [_copy(group[key]) for group in optimizer.param_groups]


def _update_param_group_val(param_group: dict, key: str, val) -> None:
    """Set ``param_group[key]``; an array value is written in place (torch's
    ``fill_``), so the optimizer keeps the same array object."""
    current = param_group[key]
    if _is_tensor(current):
        # torch squeezes a 1-element value (_to_scalar) before fill_
        current[...] = val.reshape(current.shape) if _is_tensor(val) and val.size == 1 else val
    else:
        param_group[key] = val


def _set_momentum(group: dict, use_beta1: bool, momentum) -> None:
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


class _enable_get_lr_call:
    def __init__(self, o: "LRScheduler") -> None:
        self.o = o

    def __enter__(self):
        self.o._get_lr_called_within_step = True
        return self

    def __exit__(self, type, value, traceback) -> None:
        self.o._get_lr_called_within_step = False


class _initial_mode:
    def __init__(self, o: "LRScheduler") -> None:
        self.o = o

    def __enter__(self):
        self.o._is_initial = True

    def __exit__(self, type, value, traceback) -> None:
        self.o._is_initial = False


def _warn_get_lr_called_within_step(lr_scheduler: "LRScheduler") -> None:
    if not lr_scheduler._get_lr_called_within_step:
        warnings.warn("To get the last learning rate computed by the scheduler, "
                      "please use `get_last_lr()`.", UserWarning, stacklevel=2)


def _lambdas_state(lr_lambdas: list) -> list:
    # torch keeps plain functions out of the state (None) and saves the
    # attributes of callable objects, so the state is data, not code
    return [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
            for fn in lr_lambdas]


def _check_optimizer(optimizer) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


# -- base ------------------------------------------------------------------------------
class LRScheduler:
    r"""Base class of the learning-rate schedulers, as ``torch.optim.lr_scheduler.LRScheduler``.

    Subclasses implement :meth:`get_lr` (the learning rate of every group at
    epoch ``last_epoch``) and, optionally, ``_get_closed_form_lr`` (used by the
    deprecated ``step(epoch)``).

    Construction does what torch does:

    1. with ``last_epoch == -1`` every group gets ``initial_lr`` (its current
       ``lr``, unless the key exists already: a second scheduler, or one made
       after loading an optimizer state, keeps it); otherwise every group must
       have ``initial_lr`` (``KeyError`` with torch's text);
    2. ``base_lrs`` = the groups' ``initial_lr``; ``last_epoch`` stored;
    3. the optimizer *instance*'s ``step`` is wrapped once, to record that the
       optimizer has stepped (the class's step hooks still run);
    4. an initial ``step()`` moves ``last_epoch`` to ``last_epoch + 1`` and
       writes the groups' ``lr``.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        The optimizer whose learning rates are scheduled.
    last_epoch : int, default -1
        Index of the last epoch seen; ``-1`` starts a fresh schedule.  Use
        another value only when resuming, after loading the optimizer's state.

    Warns
    -----
    UserWarning
        On the first :meth:`step` if the optimizer has not stepped yet, or if
        ``optimizer.step`` was replaced after the scheduler was made; when
        ``step(epoch)`` is given an epoch (deprecated); when :meth:`get_lr` is
        called outside ``step``.  The texts are torch's.

    Notes
    -----
    Constructing a scheduler overwrites the groups' ``lr``: when restoring a
    checkpoint, make the scheduler first, then load the optimizer's state, then
    the scheduler's.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import LRScheduler
    >>> class Halving(LRScheduler):
    ...     def get_lr(self):
    ...         return [base * 0.5 ** self.last_epoch for base in self.base_lrs]
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=1.0)
    >>> sched = Halving(opt)
    >>> for _ in range(3):
    ...     opt.step()
    ...     sched.step()
    >>> sched.last_epoch, sched.get_last_lr(), opt.param_groups[0]["initial_lr"]
    (3, [0.125], 1.0)
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer

        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", _copy(group["lr"]))
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        "resuming scheduler with last_epoch >= 0.\n"
                        "This typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't "
                        "properly loaded the optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run "
                        "(not recommended)")
        self.base_lrs: list = _param_groups_val_list(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        self._patch_track_step_called(self.optimizer)
        self._initial_step()

    def _patch_track_step_called(self, opt: Optimizer) -> None:
        # Wrap the instance's bound step (whose function is the class's
        # hook-running wrapper, so hooks still fire) to note that it ran; a
        # weak reference, so the optimizer does not keep itself alive.
        if hasattr(opt.step, "_wrapped_by_lr_sched"):
            return
        opt_ref = weakref.ref(opt)
        func = opt.step.__func__

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            o = opt_ref()
            o._opt_called = True
            return func.__get__(o, o.__class__)(*args, **kwargs)

        wrapper._wrapped_by_lr_sched = True
        opt.step = wrapper

    def _initial_step(self) -> None:
        """Initialize step counts and perform the first step."""
        self._step_count = 0
        with _initial_mode(self):
            self.step()

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute but ``optimizer`` (plain data,
        storable with :func:`nbopt.save`)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`.  The optimizer's learning rates are
        not touched: load the optimizer's own state as well."""
        self.__dict__.update(state_dict)

    def get_last_lr(self) -> list:
        """The learning rates last written by the scheduler, one per group."""
        return self._last_lr

    def get_lr(self) -> list:
        """The learning rates at ``last_epoch`` (implemented by subclasses)."""
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule by one epoch and write the new learning rates.

        Parameters
        ----------
        epoch : int, optional
            Deprecated (warns, as torch): jump to this epoch, using the closed
            form where the scheduler has one.
        """
        if self._step_count == 1:
            if not hasattr(self.optimizer.step, "_wrapped_by_lr_sched"):
                warnings.warn(_OVERRIDDEN_STEP_WARNING, UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, "_opt_called", False):
                warnings.warn(_SCHEDULER_FIRST_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1

        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        with _enable_get_lr_call(self):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                if hasattr(self, "_get_closed_form_lr"):
                    values = self._get_closed_form_lr()
                else:
                    values = self.get_lr()
        for param_group, lr in zip(self.optimizer.param_groups, values, strict=True):
            _update_param_group_val(param_group, "lr", lr)
        self._last_lr: list = _param_groups_val_list(self.optimizer, "lr")


class _LRScheduler(LRScheduler):
    """Deprecated alias of :class:`LRScheduler` (torch keeps it)."""


# -- multiplicative families ---------------------------------------------------------------
class LambdaLR(LRScheduler):
    r"""Learning rate = initial lr times a function of the epoch.

    .. math:: \eta_t = \eta_0 \cdot \lambda(t)

    with :math:`\eta_0` the group's ``initial_lr``.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    lr_lambda : callable or list of callables
        :math:`\lambda(t)`, or one function per param group.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Notes
    -----
    ``state_dict()`` stores ``None`` for plain functions and lambdas, and a copy
    of ``__dict__`` for callable objects (restored into the live objects by
    ``load_state_dict``), as torch does.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import LambdaLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = LambdaLR(opt, lr_lambda=lambda epoch: 1 / (epoch + 1))
    >>> lrs = []
    >>> for _ in range(4):
    ...     lrs.append(round(sched.get_last_lr()[0], 4))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.1, 0.05, 0.0333, 0.025]
    """

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable | list[Callable],
                 last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        if not isinstance(lr_lambda, list) and not isinstance(lr_lambda, tuple):
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        else:
            if len(lr_lambda) != len(optimizer.param_groups):
                raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, "
                                 f"but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The state, with ``lr_lambdas`` as ``None`` (functions) or ``__dict__``
        copies (callable objects)."""
        state_dict = {key: value for key, value in self.__dict__.items()
                      if key not in ("optimizer", "lr_lambdas")}
        state_dict["lr_lambdas"] = _lambdas_state(self.lr_lambdas)
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state; saved callable-object attributes update the live objects."""
        lr_lambdas = state_dict.pop("lr_lambdas")
        self.__dict__.update(state_dict)
        state_dict["lr_lambdas"] = lr_lambdas
        for idx, fn in enumerate(lr_lambdas):
            if fn is not None:
                self.lr_lambdas[idx].__dict__.update(fn)

    def get_lr(self) -> list:
        """:math:`\\eta_0\\,\\lambda(t)` for every group."""
        _warn_get_lr_called_within_step(self)
        return [base_lr * lmbda(self.last_epoch)
                for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(LRScheduler):
    r"""Multiply the learning rate by a function of the epoch at every step.

    .. math:: \eta_t = \eta_{t-1} \cdot \lambda(t) \quad (t \ge 1)

    The initial step keeps the current learning rate.  Chainable: it multiplies
    whatever ``lr`` the group holds.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    lr_lambda : callable or list of callables
        :math:`\lambda(t)`, or one function per param group.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import MultiplicativeLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=1.0)
    >>> sched = MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.5)
    >>> for _ in range(3):
    ...     opt.step()
    ...     sched.step()
    >>> sched.get_last_lr()
    [0.125]
    """

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable | list[Callable],
                 last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        if not isinstance(lr_lambda, list) and not isinstance(lr_lambda, tuple):
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        else:
            if len(lr_lambda) != len(optimizer.param_groups):
                raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, "
                                 f"but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    state_dict = LambdaLR.state_dict
    load_state_dict = LambdaLR.load_state_dict

    def get_lr(self) -> list:
        """:math:`\\eta_{t-1}\\,\\lambda(t)` for every group (the current lr initially)."""
        _warn_get_lr_called_within_step(self)
        if not self._is_initial:
            return [group["lr"] * lmbda(self.last_epoch)
                    for lmbda, group in zip(self.lr_lambdas, self.optimizer.param_groups,
                                            strict=True)]
        return _param_groups_val_list(self.optimizer, "lr")


class StepLR(LRScheduler):
    r"""Decay the learning rate by ``gamma`` every ``step_size`` epochs.

    .. math:: \eta_t = \eta_0 \cdot \gamma^{\lfloor t / s \rfloor}

    (closed form; ``step()`` applies it recursively: multiply the current lr by
    :math:`\gamma` when :math:`t > 0` and :math:`s \mid t`, so it chains).

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    step_size : int
        Period :math:`s` of the decay.
    gamma : float, default 0.1
        Multiplicative factor :math:`\gamma`.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import StepLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = StepLR(opt, step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for _ in range(6):
    ...     lrs.append(sched.get_last_lr()[0])
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        """The current lr, times ``gamma`` at every multiple of ``step_size``."""
        _warn_get_lr_called_within_step(self)
        if (self.last_epoch == 0) or (self.last_epoch % self.step_size != 0):
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size)
                for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Decay the learning rate by ``gamma`` at each milestone.

    .. math:: \eta_t = \eta_0 \cdot \gamma^{\#\{m \in M : m \le t\}}

    Milestones are counted with multiplicity (a repeated milestone decays
    twice); ``step()`` multiplies the current lr, so it chains.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    milestones : iterable of int
        Epochs :math:`M` at which to decay (stored as a ``collections.Counter``).
    gamma : float, default 0.1
        Multiplicative factor :math:`\gamma`.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import MultiStepLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=1.0)
    >>> sched = MultiStepLR(opt, milestones=[2, 4, 4], gamma=0.5)
    >>> lrs = []
    >>> for _ in range(6):
    ...     lrs.append(sched.get_last_lr()[0])
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [1.0, 1.0, 0.5, 0.5, 0.125, 0.125]
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict` (``milestones`` becomes a Counter again
        after a round trip through :func:`nbopt.save`, which stores plain dicts)."""
        super().load_state_dict(state_dict)
        if not isinstance(self.milestones, Counter):
            self.milestones = Counter(self.milestones)

    def get_lr(self) -> list:
        """The current lr, times ``gamma ** count`` at a milestone."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch not in self.milestones:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch)
                for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    r"""Multiply the learning rate by a constant factor until ``total_iters``.

    .. math:: \eta_t = \eta_0 \cdot \begin{cases} f & t < T \\ 1 & t \ge T \end{cases}

    (recursively: times :math:`f` at epoch 0, divided by :math:`f` at
    :math:`T`, so it chains).

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    factor : float, default 1/3
        The factor :math:`f`, in :math:`[0, 1]`.
    total_iters : int, default 5
        Number of epochs :math:`T` with the reduced rate.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Raises
    ------
    ValueError
        If ``factor`` is outside ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import ConstantLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = ConstantLR(opt, factor=0.5, total_iters=2)
    >>> lrs = []
    >>> for _ in range(4):
    ...     lrs.append(sched.get_last_lr()[0])
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.05, 0.05, 0.1, 0.1]
    """

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = -1) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        """Times ``factor`` at epoch 0, divided by it at ``total_iters``."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    r"""Change the learning rate linearly from ``start_factor`` to ``end_factor``.

    .. math:: \eta_t = \eta_0 \left(s + (f - s)\,\frac{\min(t, T)}{T}\right)

    (closed form; ``step()`` applies the ratio of consecutive values, so it
    chains).

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    start_factor : float, default 1/3
        Factor :math:`s` at epoch 0, in :math:`(0, 1]`.
    end_factor : float, default 1.0
        Factor :math:`f` from epoch :math:`T` on, in :math:`[0, 1]`.
    total_iters : int, default 5
        Number of epochs :math:`T` of the ramp.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Raises
    ------
    ValueError
        If a factor is out of range (torch's messages).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import LinearLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = LinearLR(opt, start_factor=0.25, total_iters=4)
    >>> lrs = []
    >>> for _ in range(6):
    ...     lrs.append(round(sched.get_last_lr()[0], 6))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.025, 0.04375, 0.0625, 0.08125, 0.1, 0.1]
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and "
                             "less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        """The current lr times the ratio of consecutive ramp values."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * (1.0 + (self.end_factor - self.start_factor)
                               / (self.total_iters * self.start_factor
                                  + (self.last_epoch - 1) * (self.end_factor - self.start_factor)))
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    r"""Decay the learning rate by ``gamma`` every epoch.

    .. math:: \eta_t = \eta_0\,\gamma^t

    (recursively: the current lr times :math:`\gamma`, so it chains).

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    gamma : float
        Multiplicative factor :math:`\gamma`.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import ExponentialLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=1.0)
    >>> sched = ExponentialLR(opt, gamma=0.5)
    >>> for _ in range(3):
    ...     opt.step()
    ...     sched.step()
    >>> sched.get_last_lr()
    [0.125]
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        """The current lr times ``gamma`` (unchanged by the initial step)."""
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    r"""Decay the learning rate polynomially to zero over ``total_iters`` epochs.

    .. math:: \eta_t = \eta_0 \left(1 - \frac{\min(t, T)}{T}\right)^p

    (recursively: the ratio of consecutive values, so it chains).

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    total_iters : int, default 5
        Number of epochs :math:`T` of the decay.
    power : float, default 1.0
        Power :math:`p` of the polynomial.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import PolynomialLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = PolynomialLR(opt, total_iters=4, power=2.0)
    >>> lrs = []
    >>> for _ in range(6):
    ...     lrs.append(round(sched.get_last_lr()[0], 6))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.1, 0.05625, 0.025, 0.00625, 0.0, 0.0]
    """

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0,
                 last_epoch: int = -1) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        """The current lr times the ratio of consecutive polynomial values."""
        _warn_get_lr_called_within_step(self)
        if self._is_initial or self.last_epoch > self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        decay_factor = ((1.0 - self.last_epoch / self.total_iters)
                        / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [group["lr"] * decay_factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters)
                ** self.power for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the initial lr to ``eta_min`` over ``T_max`` epochs.

    Closed form (SGDR without restarts):

    .. math::

        \eta_t = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})
                 \left(1 + \cos\frac{t\pi}{T_{\max}}\right)

    ``step()`` applies it recursively,

    .. math::

        \eta_{t} = \eta_{\min} + (\eta_{t-1} - \eta_{\min})
                   \frac{1 + \cos(t\pi/T_{\max})}{1 + \cos((t-1)\pi/T_{\max})},

    except when :math:`(t - 1 - T_{\max}) \bmod 2T_{\max} = 0`, where it adds
    :math:`(\eta_0 - \eta_{\min})(1 - \cos(\pi/T_{\max}))/2`.  The schedule is
    periodic with period :math:`2T_{\max}`: after reaching :math:`\eta_{\min}`
    it rises again (torch's behaviour).

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    T_max : int
        Half period :math:`T_{\max}` in epochs.
    eta_min : float, default 0.0
        Minimum learning rate :math:`\eta_{\min}`.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import CosineAnnealingLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    >>> lrs = []
    >>> for _ in range(6):
    ...     lrs.append(round(sched.get_last_lr()[0], 5))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.1, 0.08682, 0.055, 0.02318, 0.01, 0.02318]

    References
    ----------
    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    ICLR 2017, https://arxiv.org/abs/1608.03983.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        """The recursive cosine step (the current lr initially)."""
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _param_groups_val_list(self.optimizer, "lr")
        elif self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base_lr - self.eta_min)
                    * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                    for base_lr in self.base_lrs]
        elif (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"]
                    + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups,
                                              strict=True)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (group["lr"] - self.eta_min) + self.eta_min
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts (SGDR).

    .. math::

        \eta_t = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})
                 \left(1 + \cos\frac{T_{cur}\,\pi}{T_i}\right)

    :math:`T_{cur}` counts the epochs since the last restart; a restart happens
    when it reaches :math:`T_i`, and then :math:`T_{i+1} = T_i \cdot T_{mult}`
    (:math:`T_0` first).  ``step(epoch)`` accepts fractional epochs (e.g.
    ``epoch + batch / n_batches``) and, unlike the other schedulers, neither
    warns nor advances ``_step_count`` (as torch).

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    T_0 : int
        Number of epochs until the first restart (positive integer).
    T_mult : int, default 1
        Growth factor of the period after each restart (integer >= 1).
    eta_min : float, default 0.0
        Minimum learning rate :math:`\eta_{\min}`.
    last_epoch : int, default -1
        Index of the last epoch (``-1``: a fresh schedule).

    Raises
    ------
    ValueError
        For a non-positive or non-integer ``T_0``, ``T_mult < 1`` or not an
        integer, a non-numeric ``eta_min``, or a negative ``epoch``.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import CosineAnnealingWarmRestarts
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2)
    >>> lrs = []
    >>> for _ in range(7):
    ...     lrs.append(round(sched.get_last_lr()[0], 5))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.1, 0.05, 0.1, 0.08536, 0.05, 0.01464, 0.1]

    References
    ----------
    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    ICLR 2017, https://arxiv.org/abs/1608.03983.
    """

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type "
                             f"{type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        """The cosine value at :math:`T_{cur} / T_i` for every group."""
        _warn_get_lr_called_within_step(self)
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base_lr in self.base_lrs]

    def step(self, epoch=None) -> None:
        """Advance one epoch, or go to ``epoch`` (may be fractional).

        Parameters
        ----------
        epoch : float, optional
            The (possibly fractional) epoch to go to; ``None`` advances by one.
        """
        if epoch is None and self.last_epoch < 0:
            epoch = 0

        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)

        with _enable_get_lr_call(self):
            values = self.get_lr()
        for param_group, lr in zip(self.optimizer.param_groups, values, strict=True):
            _update_param_group_val(param_group, "lr", lr)
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")


# -- cyclic policies ---------------------------------------------------------------------------
class CyclicLR(LRScheduler):
    r"""Cyclical learning rate (CLR), with momentum cycled inversely.

    With :math:`L` = ``total_size`` = ``step_size_up + step_size_down`` and
    :math:`r` = ``step_size_up / L``, at epoch (batch) :math:`t`:

    .. math::

        c &= \lfloor 1 + t/L \rfloor, \qquad x = 1 + t/L - c \\
        s &= \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases} \\
        \eta_t &= \eta_{base} + (\eta_{max} - \eta_{base})\, s\, f(\cdot) \\
        m_t &= m_{max} - (m_{max} - m_{base})\, s\, f(\cdot)

    where :math:`f` is the scale function of ``mode`` evaluated at the cycle
    :math:`c` (``scale_mode='cycle'``) or at :math:`t` (``'iterations'``):
    ``triangular`` :math:`f = 1`, ``triangular2`` :math:`f(c) = 2^{1-c}`,
    ``exp_range`` :math:`f(t) = \gamma^t`, or the given ``scale_fn``.  The
    built-in modes force their ``scale_mode`` (``'cycle'``, ``'cycle'``,
    ``'iterations'``), ignoring the argument, as torch does.

    Construction (with ``last_epoch == -1``) overwrites every group's ``lr``
    with ``base_lr``; with ``cycle_momentum`` it sets ``momentum`` (SGD) or
    ``betas[0]`` (Adam-like optimizers) to ``max_momentum`` and adds the group
    keys ``max_momentum`` and ``base_momentum``.  Not chainable.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    base_lr : float or list
        Lower learning-rate bound, per group or for all.
    max_lr : float or list
        Upper learning-rate bound, per group or for all.
    step_size_up : int, default 2000
        Iterations in the increasing half of a cycle.
    step_size_down : int, optional
        Iterations in the decreasing half (default: ``step_size_up``).
    mode : {'triangular', 'triangular2', 'exp_range'}, default 'triangular'
        Built-in policy (ignored when ``scale_fn`` is given).
    gamma : float, default 1.0
        Base of ``exp_range``'s scale function.
    scale_fn : callable, optional
        Custom scale function :math:`f` with :math:`0 \le f(x) \le 1`.
    scale_mode : {'cycle', 'iterations'}, default 'cycle'
        What a custom ``scale_fn`` is evaluated at.
    cycle_momentum : bool, default True
        Cycle the momentum (or beta1) inversely to the learning rate; needs an
        optimizer with ``momentum`` or ``betas`` in its defaults.
    base_momentum : float or list, default 0.8
        Lower momentum bound.
    max_momentum : float or list, default 0.9
        Upper momentum bound.
    last_epoch : int, default -1
        Index of the last batch (``-1``: a fresh schedule).

    Raises
    ------
    ValueError
        For a list of the wrong length, an unknown ``mode`` without
        ``scale_fn``, or ``cycle_momentum`` with an optimizer that has neither
        momentum nor betas.  Raised before the optimizer is modified.

    Notes
    -----
    ``state_dict()`` stores a custom ``scale_fn`` as ``None`` (function or
    lambda) or as a copy of its ``__dict__`` (callable object), as torch does.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import CyclicLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1, momentum=0.9)
    >>> sched = CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=3)
    >>> lrs, moms = [], []
    >>> for _ in range(7):
    ...     lrs.append(round(sched.get_last_lr()[0], 6))
    ...     moms.append(round(opt.param_groups[0]["momentum"], 6))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.01, 0.04, 0.07, 0.1, 0.07, 0.04, 0.01]
    >>> moms
    [0.9, 0.866667, 0.833333, 0.8, 0.833333, 0.866667, 0.9]

    References
    ----------
    Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
    https://arxiv.org/abs/1506.01186.
    """

    def __init__(self, optimizer: Optimizer, base_lr: float | list[float],
                 max_lr: float | list[float], step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular",
                 gamma: float = 1.0, scale_fn: Callable[[float], float] | None = None,
                 scale_mode: str = "cycle", cycle_momentum: bool = True,
                 base_momentum: float = 0.8, max_momentum: float = 0.9,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        # Every check torch makes runs before anything is written (torch sets
        # the groups' lr before formatting max_lr and checking momentum support).
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        max_lrs = _format_param("max_lr", optimizer, max_lr)
        step_size_up = float(step_size_up)
        step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
        total_size = step_size_up + step_size_down
        step_ratio = step_size_up / total_size
        if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError("optimizer must support momentum or beta1 with "
                                 "`cycle_momentum` option enabled")
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)

        self.optimizer = optimizer
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                _update_param_group_val(group, "lr", lr)
        self.max_lrs = max_lrs
        self.total_size = total_size
        self.step_ratio = step_ratio
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_ref: Callable[[float], float]
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()

        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = "betas" in self.optimizer.defaults
            self.base_momentums = base_momentums
            self.max_momentums = max_momentums
            if last_epoch == -1:
                for m_momentum, b_momentum, group in zip(max_momentums, base_momentums,
                                                         optimizer.param_groups, strict=True):
                    _set_momentum(group, self.use_beta1, m_momentum)
                    group["max_momentum"] = m_momentum
                    group["base_momentum"] = b_momentum

        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = self._triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = self._triangular2_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = functools.partial(self._exp_range_scale_fn, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x) -> float:
        """The scale function :math:`f(x)` in use (custom or the mode's)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    @staticmethod
    def _triangular_scale_fn(x: float) -> float:
        return 1.0

    @staticmethod
    def _triangular2_scale_fn(x: float) -> float:
        return 1 / (2.0 ** (x - 1))

    @staticmethod
    def _exp_range_scale_fn(gamma: float, x: float) -> float:
        return gamma ** x

    def get_lr(self) -> list:
        """The cyclic learning rates (and, as a side effect, the cycled momentum)."""
        _warn_get_lr_called_within_step(self)
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)

        lrs = []
        for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True):
            base_height = (max_lr - base_lr) * scale_factor
            if self.scale_mode == "cycle":
                lr = base_lr + base_height * self.scale_fn(cycle)
            else:
                lr = base_lr + base_height * self.scale_fn(self.last_epoch)
            lrs.append(lr)

        if self.cycle_momentum:
            momentums = []
            for base_momentum, max_momentum in zip(self.base_momentums, self.max_momentums,
                                                   strict=True):
                base_height = (max_momentum - base_momentum) * scale_factor
                if self.scale_mode == "cycle":
                    momentum = max_momentum - base_height * self.scale_fn(cycle)
                else:
                    momentum = max_momentum - base_height * self.scale_fn(self.last_epoch)
                momentums.append(momentum)
            for param_group, momentum in zip(self.optimizer.param_groups, momentums, strict=True):
                _set_momentum(param_group, self.use_beta1, momentum)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """The state without the bound scale function; a custom ``scale_fn`` is
        stored as ``None`` or as its ``__dict__``."""
        state = super().state_dict()
        state.pop("_scale_fn_ref", None)
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None
        if fn is not None and not isinstance(fn, types.FunctionType):
            state["_scale_fn_custom"] = fn.__dict__.copy()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state and rebuild the scale function."""
        fn = state_dict.pop("_scale_fn_custom")
        super().load_state_dict(state_dict)
        if fn is not None:
            self._scale_fn_custom.__dict__.update(fn)
        self._init_scale_fn()


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy: warm up to ``max_lr``, then anneal far below the start.

    With :math:`N` = ``total_steps`` and :math:`p` = ``pct_start``, the phases
    end at steps :math:`pN - 1` and :math:`N - 1` (three-phase: :math:`pN - 1`,
    :math:`2pN - 2`, :math:`N - 1`).  Inside a phase from step :math:`a` to
    :math:`b` the learning rate goes from its start to its end value with

    .. math::

        \text{cos:}\quad v = v_{end} + \tfrac12 (v_{start} - v_{end})
                           (1 + \cos \pi\tau), \qquad
        \text{linear:}\quad v = (v_{end} - v_{start})\,\tau + v_{start},
        \qquad \tau = \frac{t - a}{b - a}

    going ``initial_lr`` :math:`= \eta_{max}/d` → ``max_lr`` → ``min_lr``
    :math:`= \eta_{max} / (d \cdot d_f)` (three-phase: ``initial_lr`` →
    ``max_lr`` → ``initial_lr`` → ``min_lr``), while the momentum (or beta1)
    goes the opposite way between ``max_momentum`` and ``base_momentum``.
    These values are stored as group keys (``initial_lr``, ``max_lr``,
    ``min_lr``, ``max_momentum``, ``base_momentum``).  Stepping past
    ``total_steps`` raises ``ValueError``.  Not chainable.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    max_lr : float or list
        Peak learning rate :math:`\eta_{max}`, per group or for all.
    total_steps : int, optional
        Length :math:`N` of the cycle; otherwise ``epochs * steps_per_epoch``.
    epochs : int, optional
        Number of epochs (with ``steps_per_epoch``).
    steps_per_epoch : int, optional
        Steps per epoch (with ``epochs``).
    pct_start : float, default 0.3
        Fraction :math:`p` of the cycle spent increasing the learning rate.
    anneal_strategy : {'cos', 'linear'}, default 'cos'
        Annealing curve inside each phase.
    cycle_momentum : bool, default True
        Cycle the momentum (or beta1) inversely to the learning rate.
    base_momentum : float or list, default 0.85
        Momentum at the peak learning rate.
    max_momentum : float or list, default 0.95
        Momentum at the start and the end.
    div_factor : float, default 25.0
        :math:`d`: ``initial_lr = max_lr / div_factor``.
    final_div_factor : float, default 1e4
        :math:`d_f`: ``min_lr = initial_lr / final_div_factor``.
    three_phase : bool, default False
        Use the original paper's three phases instead of fastai's two.
    last_epoch : int, default -1
        Index of the last batch (``-1``: a fresh schedule).

    Raises
    ------
    ValueError
        For invalid step counts, ``pct_start`` (must be a float in [0, 1]),
        ``anneal_strategy``, list lengths, or ``cycle_momentum`` with an
        optimizer without momentum/betas (torch's messages; raised before the
        optimizer is modified).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import OneCycleLR
    >>> opt = nbopt.Adam([nbopt.Parameter(np.zeros(1))])
    >>> sched = OneCycleLR(opt, max_lr=0.01, total_steps=4, anneal_strategy="linear")
    >>> lrs, beta1 = [], []
    >>> for _ in range(4):
    ...     lrs.append(round(sched.get_last_lr()[0], 6))
    ...     beta1.append(round(opt.param_groups[0]["betas"][0], 6))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.0004, 0.007143, 0.003571, 0.0]
    >>> beta1
    [0.95, 0.878571, 0.914286, 0.95]

    References
    ----------
    Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates", 2017, https://arxiv.org/abs/1708.07120.
    """

    def __init__(self, optimizer: Optimizer, max_lr: float | list[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | list[float] = 0.85,
                 max_momentum: float | list[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer

        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError("Expected positive integer steps_per_epoch, but got "
                                 f"{steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")

        if three_phase:
            self._schedule_phases = [
                {"end_step": float(pct_start * self.total_steps) - 1,
                 "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": float(2 * pct_start * self.total_steps) - 2,
                 "start_lr": "max_lr", "end_lr": "initial_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
                {"end_step": self.total_steps - 1,
                 "start_lr": "initial_lr", "end_lr": "min_lr",
                 "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
            ]
        else:
            self._schedule_phases = [
                {"end_step": float(pct_start * self.total_steps) - 1,
                 "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": self.total_steps - 1,
                 "start_lr": "max_lr", "end_lr": "min_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            ]

        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', instead got "
                             f"{anneal_strategy}")
        self._anneal_func_type = anneal_strategy

        max_lrs = _format_param("max_lr", self.optimizer, max_lr)
        # checked before the groups are written (torch writes initial_lr first)
        if cycle_momentum:
            if "momentum" not in self.optimizer.defaults and "betas" not in self.optimizer.defaults:
                raise ValueError("optimizer must support momentum or beta1 with "
                                 "`cycle_momentum` option enabled")
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)

        if last_epoch == -1:
            for idx, group in enumerate(self.optimizer.param_groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = cycle_momentum
        if self.cycle_momentum:
            self.use_beta1 = "betas" in self.optimizer.defaults
            if last_epoch == -1:
                for m_momentum, b_momentum, group in zip(max_momentums, base_momentums,
                                                         optimizer.param_groups, strict=True):
                    _set_momentum(group, self.use_beta1, m_momentum)
                    group["max_momentum"] = m_momentum
                    group["base_momentum"] = b_momentum

        super().__init__(optimizer, last_epoch)

    def _anneal_func(self, *args, **kwargs):
        if hasattr(self, "_anneal_func_type"):
            if self._anneal_func_type == "cos":
                return self._annealing_cos(*args, **kwargs)
            elif self._anneal_func_type == "linear":
                return self._annealing_linear(*args, **kwargs)
            raise ValueError(f"Unknown _anneal_func_type: {self._anneal_func_type}")
        # states saved by old torch versions hold the function itself
        return self.anneal_func(*args, **kwargs)

    @staticmethod
    def _annealing_cos(start, end, pct):
        """Cosine anneal from ``start`` to ``end`` as ``pct`` goes from 0 to 1."""
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    @staticmethod
    def _annealing_linear(start, end, pct):
        """Linear anneal from ``start`` to ``end`` as ``pct`` goes from 0 to 1."""
        return (end - start) * pct + start

    def get_lr(self) -> list:
        """The 1cycle learning rates (and, as a side effect, the cycled momentum)."""
        _warn_get_lr_called_within_step(self)
        lrs = []
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"Tried to step {step_num} times. The specified number of total "
                             f"steps is {self.total_steps}")

        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step_num - start_step) / (end_step - start_step)
                    computed_lr = self._anneal_func(group[phase["start_lr"]],
                                                    group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        computed_momentum = self._anneal_func(group[phase["start_momentum"]],
                                                              group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(computed_lr)
            if self.cycle_momentum:
                _set_momentum(group, self.use_beta1, computed_momentum)
        return lrs


# -- metric driven -----------------------------------------------------------------------------
class ReduceLROnPlateau(LRScheduler):
    r"""Reduce the learning rate when a metric has stopped improving.

    After each ``step(metric)``: the metric improves on the best seen so far if

    .. math::

        \text{min, rel: } a < b(1 - \theta) \quad
        \text{min, abs: } a < b - \theta \quad
        \text{max, rel: } a > b(1 + \theta) \quad
        \text{max, abs: } a > b + \theta

    otherwise it is a bad epoch.  After more than ``patience`` bad epochs
    (outside a cooldown) every group's lr becomes
    :math:`\max(\eta \cdot \text{factor}, \eta_{\min,i})`, applied only when
    it changes by more than ``eps``; then ``cooldown`` epochs pass in which
    bad epochs are not counted.  Chainable (it multiplies the current lr).
    Unlike the other schedulers, construction changes nothing and ``step``
    warns only for the deprecated ``epoch`` argument.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer.
    mode : {'min', 'max'}, default 'min'
        Whether the metric should decrease or increase.
    factor : float, default 0.1
        Multiplicative reduction (< 1).
    patience : int, default 10
        Bad epochs tolerated before reducing.
    threshold : float, default 1e-4
        :math:`\theta`, the significance threshold.
    threshold_mode : {'rel', 'abs'}, default 'rel'
        Relative or absolute threshold.
    cooldown : int, default 0
        Epochs to wait after a reduction before counting bad epochs again.
    min_lr : float or list, default 0
        Lower bound on the learning rate, for all groups or per group.
    eps : float, default 1e-8
        Minimal change of lr that is applied.

    Raises
    ------
    ValueError
        ``factor >= 1``, a ``min_lr`` list of the wrong length, an unknown
        mode or threshold mode (torch's messages).
    RuntimeError
        When a reduction meets a changed number of param groups and ``min_lr``
        was a list.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import ReduceLROnPlateau
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=1.0)
    >>> sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, min_lr=0.2)
    >>> lrs = []
    >>> for val_loss in [1, 1, 1, 1, 1, .5, .6, .7, .8, .9, 1, 1, 1]:
    ...     opt.step()
    ...     sched.step(val_loss)
    ...     lrs.append(sched.get_last_lr()[0])
    >>> lrs
    [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2]
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: list[float] | float = 0, eps: float = 1e-8) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor

        _check_optimizer(optimizer)
        self.optimizer = optimizer

        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, "
                                 f"got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)

        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        """Reset the best value, the bad-epoch count and the cooldown."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics, epoch=None) -> None:
        """Record one epoch's metric and reduce the learning rates if it has stalled.

        Parameters
        ----------
        metrics : float or 1-element ndarray
            The monitored quantity.
        epoch : int, optional
            Deprecated (warns, as torch): the epoch number to record.
        """
        current = _to_float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch

        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1

        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0

        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

        self._last_lr = _param_groups_val_list(self.optimizer, "lr")

    def _reduce_lr(self, epoch) -> None:
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the `optimizer` "
                    f"({len(self.optimizer.param_groups)}) differs from when "
                    f"`ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually due to "
                    "a new param group being added to the optimizer. Please modify the "
                    "`min_lrs` field to match the length of the `optimizer` param groups.")
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)

        for i, param_group in enumerate(self.optimizer.param_groups):
            old_lr = _to_float(param_group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                _update_param_group_val(param_group, "lr", new_lr)

    @property
    def in_cooldown(self) -> bool:
        """Whether a cooldown is running."""
        return self.cooldown_counter > 0

    def _is_better(self, a, best) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            rel_epsilon = 1.0 - self.threshold
            return a < best * rel_epsilon
        elif self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        elif self.mode == "max" and self.threshold_mode == "rel":
            rel_epsilon = self.threshold + 1.0
            return a > best * rel_epsilon
        return a > best + self.threshold

    def _init_is_better(self, mode, threshold, threshold_mode) -> None:
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        self.mode_worse = inf if mode == "min" else -inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`."""
        self.__dict__.update(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold,
                             threshold_mode=self.threshold_mode)


# -- combinators -------------------------------------------------------------------------------
def _check_children(owner: str, optimizer, schedulers) -> None:
    for scheduler_idx, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{owner} at index {scheduler_idx} should have `optimizer` as its "
                            "attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(f"{owner} does not support `ReduceLROnPlateau` scheduler as it "
                             "requires additional kwargs to be specified when calling `step`, "
                             f"but got one at index {scheduler_idx} in the given schedulers "
                             "sequence.")
        if optimizer != scheduler.optimizer:
            raise ValueError(f"{owner} expects all schedulers to belong to the same optimizer, "
                             f"but got scheduler {scheduler.__class__.__name__} at index "
                             f"{scheduler_idx} has {scheduler.optimizer}, which is different "
                             f"from {optimizer.__class__.__name__}.")


def _children_state(owner: LRScheduler) -> dict[str, Any]:
    state_dict = {key: value for key, value in owner.__dict__.items()
                  if key not in ("optimizer", "_schedulers")}
    state_dict["_schedulers"] = [s.state_dict() for s in owner._schedulers]
    return state_dict


def _load_children_state(owner: LRScheduler, state_dict: dict[str, Any]) -> None:
    _schedulers = state_dict.pop("_schedulers")
    owner.__dict__.update(state_dict)
    state_dict["_schedulers"] = _schedulers
    for idx, s in enumerate(_schedulers):
        owner._schedulers[idx].load_state_dict(s)


class SequentialLR(LRScheduler):
    r"""Run schedulers one after the other, switching at the milestones.

    Scheduler :math:`k` drives epochs :math:`[m_{k-1}, m_k)`; at a milestone
    the next scheduler restarts at its epoch 0 (through its closed form where
    it has one).  Construction resets every group's ``lr`` to ``initial_lr``,
    rewinds every child (nested ones too) and redoes the initial step of the
    scheduler active at epoch 0.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        Wrapped optimizer (every child must wrap it).
    schedulers : list of LRScheduler
        The schedulers, in order (not ReduceLROnPlateau).
    milestones : list of int
        The epochs at which the next scheduler takes over
        (``len(schedulers) - 1`` of them).
    last_epoch : int, default -1
        Index of the last epoch.

    Raises
    ------
    ValueError, TypeError
        For an empty list, an item without ``optimizer``, a
        ReduceLROnPlateau, a different optimizer, or the wrong number of
        milestones (torch's messages).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import ConstantLR, ExponentialLR, SequentialLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=1.0)
    >>> warmup = ConstantLR(opt, factor=0.1, total_iters=2)
    >>> decay = ExponentialLR(opt, gamma=0.5)
    >>> sched = SequentialLR(opt, schedulers=[warmup, decay], milestones=[2])
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(sched.get_last_lr()[0])
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.1, 0.1, 1.0, 0.5, 0.25]
    """

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler],
                 milestones: list[int], last_epoch: int = -1) -> None:
        if len(schedulers) < 1:
            raise ValueError(f"{self.__class__.__name__} expects at least one scheduler, "
                             "but got no scheduler.")
        _check_children(self.__class__.__name__, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more "
                f"than the number of milestone points, but got number of schedulers "
                f"{len(schedulers)} and the number of milestones to be equal to "
                f"{len(milestones)}")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer

        for group in self.optimizer.param_groups:
            _update_param_group_val(group, "lr", group["initial_lr"])

        self.recursive_undo()

        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def recursive_undo(self, sched=None) -> None:
        """Rewind the initial step of every child scheduler (nested ones too)."""
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for s in scheds._schedulers:
                self.recursive_undo(s)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    def step(self) -> None:
        """Advance the active scheduler (restart the next one at a milestone)."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """The state, with ``_schedulers`` the list of the children's states."""
        return _children_state(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state, the children's included."""
        _load_children_state(self, state_dict)


class ChainedScheduler(LRScheduler):
    r"""Step several schedulers together, so their effects compose.

    Each ``step()`` steps every child in order; chainable schedulers multiply
    the current lr, so e.g. a ConstantLR warm-up and an ExponentialLR decay
    apply at once.  No initial step of its own.

    Parameters
    ----------
    schedulers : sequence of LRScheduler
        The schedulers to chain (not ReduceLROnPlateau).
    optimizer : nbopt.Optimizer, optional
        Wrapped optimizer (default: the first scheduler's).

    Raises
    ------
    ValueError, TypeError
        For an empty sequence, an item without ``optimizer``, a
        ReduceLROnPlateau, or a different optimizer (torch's messages).

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.lr_scheduler import ChainedScheduler, ConstantLR, ExponentialLR
    >>> opt = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=1.0)
    >>> sched = ChainedScheduler([ConstantLR(opt, factor=0.1, total_iters=2),
    ...                           ExponentialLR(opt, gamma=0.5)])
    >>> lrs = []
    >>> for _ in range(4):
    ...     lrs.append(round(sched.get_last_lr()[0], 6))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.1, 0.05, 0.25, 0.125]
    """

    def __init__(self, schedulers: Sequence[LRScheduler],
                 optimizer: Optimizer | None = None) -> None:
        if len(schedulers) < 1:
            raise ValueError(f"{self.__class__.__name__} expects at least one scheduler to be "
                             "chained, but got no scheduler.")
        optimizer = optimizer or schedulers[0].optimizer
        _check_children(self.__class__.__name__, optimizer, schedulers)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _param_groups_val_list(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:
        """Step every chained scheduler, in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _param_groups_val_list(self._schedulers[-1].optimizer, "lr")

    def state_dict(self) -> dict[str, Any]:
        """The state, with ``_schedulers`` the list of the children's states."""
        return _children_state(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state, the children's included."""
        _load_children_state(self, state_dict)
