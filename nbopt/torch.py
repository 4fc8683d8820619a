r"""nbopt's optimizers for CPU torch tensors: a drop-in for ``torch.optim``.

A torch user keeps autograd and swaps the optimizer::

    import torch, nbopt.torch
    model = torch.nn.Linear(4, 2)
    opt = nbopt.torch.AdamW(model.parameters(), lr=1e-3)     # was torch.optim.AdamW
    for x, y in batches:
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

Every nbopt optimizer (``SGD``, ``Adam``, ``AdamW``, ``Adagrad``, ``Adadelta``,
``Adamax``, ``ASGD``, ``NAdam``, ``RAdam``, ``RMSprop``, ``Rprop``,
``SparseAdam``, ``LBFGS``, ``Adafactor``, ``Muon``, and the 8-bit
``Adam8bit``, ``AdamW8bit``, ``SGD8bit``, ``RMSprop8bit``, ``Adagrad8bit``) is
here under its torch (or bitsandbytes) name, with its nbopt signature, defaults and numbers.  Each class is made by
:func:`bridge` from the nbopt class: it *is* that nbopt optimizer (an
``isinstance`` of it and of :class:`nbopt.Optimizer`), and also a
``torch.optim.Optimizer``, so that torch's learning-rate schedulers (which
check that) drive it as well as nbopt's.

How the tensors are shared
--------------------------
* Each tensor becomes a :class:`TorchParameter`: an :class:`nbopt.Parameter`
  that views the tensor's memory (``tensor.detach().numpy()``), no copy.  A
  step updates the tensors in place and bumps their autograd version
  counters, as torch's in-place updates do (a graph that saved a parameter
  before the step then refuses to backward, as with torch.optim).
* ``p.grad`` is read from the tensor's ``.grad`` at every access, without a
  copy (a NumPy view; the view is cached while torch keeps the same gradient
  tensor), so torch's replacing of ``.grad`` tensors (``zero_grad()`` with
  ``set_to_none=True``, a new tensor at each ``backward``) is followed.  A
  sparse COO gradient (``nn.Embedding(sparse=True)``) is read as an
  :class:`nbopt.SparseGrad` (its indices copied, values viewed).
* ``zero_grad(set_to_none=True)`` is torch's: it sets the tensors' ``.grad``
  to None (``False`` zeroes them in place).
* ``opt.state`` is keyed by :class:`TorchParameter`, and also answers to the
  torch tensors themselves (``opt.state[tensor]``); ``param_groups[i]
  ["params"]`` hold the TorchParameters (``p.tensor`` is the torch tensor).
* ``state_dict()`` returns torch tensors (views of the live state, as torch's
  are), so ``torch.save`` / ``torch.load(..., weights_only=True)`` work, and
  torch.optim loads it; ``load_state_dict`` takes a torch optimizer's
  checkpoint (or an nbopt one).  :func:`to_torch_state_dict` and
  :func:`from_torch_state_dict` convert for plain nbopt optimizers.

Only CPU tensors of float32, float64, complex64 or complex128 are stepped
(float16 / bfloat16 have no nbopt kernels; a GPU tensor belongs in
:class:`nbopt.Parameter`, which makes a :class:`nbopt.DeviceParameter`).
torch is imported by this module only; ``import nbopt`` never imports it.

Examples
--------
>>> import torch, nbopt.torch
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Linear(3, 1)
>>> x, y = torch.randn(64, 3), torch.randn(64, 1)
>>> opt = nbopt.torch.Adam(model.parameters(), lr=0.1)
>>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
>>> first = torch.nn.functional.mse_loss(model(x), y).item()
>>> for _ in range(30):
...     loss = torch.nn.functional.mse_loss(model(x), y)
...     loss.backward()
...     opt.step()
...     opt.zero_grad()
...     sched.step()
>>> loss.item() < first, opt.param_groups[0]["lr"]
(True, 0.0125)
>>> sorted(opt.state[model.weight])              # state answers to the tensor
['exp_avg', 'exp_avg_sq', 'step']
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

import nbopt as _nbopt

from . import optim as _optim
from .engine import OptimizerState
from .optimizer import Optimizer as _Optimizer
from .parameter import Parameter, SparseGrad

__all__ = ["TorchParameter", "bridge", "to_torch_state_dict", "from_torch_state_dict",
           "ALGORITHMS"]


# -- parameters ---------------------------------------------------------------------
def _grad_view(grad: torch.Tensor):
    """A torch gradient as nbopt reads it: a NumPy view of a dense one, a
    :class:`SparseGrad` of a sparse COO one."""
    if grad.layout == torch.sparse_coo:
        return SparseGrad(grad._indices().numpy(), grad._values().detach().numpy(),
                          tuple(grad.shape))
    if grad.layout != torch.strided:
        raise TypeError(f"nbopt.torch reads dense and sparse COO gradients, got one with "
                        f"layout {grad.layout}")
    if grad.device.type != "cpu":
        raise RuntimeError(f"the gradient is on {grad.device} but the parameter is on cpu; "
                           "please ensure that the gradient and the parameter are on the "
                           "same device")
    return grad.detach().numpy()


class TorchParameter(Parameter):
    r"""An :class:`nbopt.Parameter` that views a CPU torch tensor's memory.

    The optimizers of :mod:`nbopt.torch` make one for each tensor they are
    given; there is rarely a reason to make one by hand.

    Parameters
    ----------
    tensor : torch.Tensor
        A strided, C- or F-contiguous CPU tensor.  Its values are shared, not
        copied: a step writes into the tensor.

    Attributes
    ----------
    tensor : torch.Tensor
        The tensor (the object given, ``model.weight`` say).
    grad : ndarray, SparseGrad or None
        The tensor's ``.grad``, read at each access: a NumPy view of it (the
        same view object while torch keeps the same gradient tensor), a
        :class:`nbopt.SparseGrad` of a sparse one, or None.  Assigning sets
        the tensor's ``.grad`` (an ndarray is shared with
        ``torch.from_numpy``; torch checks its shape and dtype).

    Raises
    ------
    TypeError
        For something that is not a torch tensor, or a dtype without a NumPy
        equivalent (bfloat16).
    ValueError
        For a tensor that is not on the CPU, not strided, or not contiguous
        (it could not be updated in place through a view).

    Examples
    --------
    >>> import torch
    >>> from nbopt.torch import TorchParameter
    >>> t = torch.zeros(3, requires_grad=True)
    >>> p = TorchParameter(t)
    >>> p += 1.0                        # the tensor sees it: no copy
    >>> t.detach().tolist()
    [1.0, 1.0, 1.0]
    >>> print(p.grad)
    None
    >>> t.sum().backward()
    >>> p.grad
    array([1., 1., 1.], dtype=float32)
    """

    def __new__(cls, tensor):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"TorchParameter wraps a torch.Tensor, got {type(tensor).__name__}")
        if tensor.device.type != "cpu":
            raise ValueError(
                f"nbopt.torch optimizes CPU tensors, got one on {tensor.device}; a GPU tensor "
                "can be given to nbopt.Parameter (a DeviceParameter) and a plain nbopt optimizer")
        if tensor.layout != torch.strided:
            raise ValueError(f"can't optimize a tensor with layout {tensor.layout}")
        try:
            data = tensor.detach().numpy()
        except (TypeError, RuntimeError) as error:
            raise TypeError(f"can't optimize a {tensor.dtype} tensor through NumPy ({error}); "
                            "nbopt steps float32, float64, complex64 and complex128 "
                            "tensors") from None
        if not (data.flags.c_contiguous or data.flags.f_contiguous):
            raise ValueError(
                "can't optimize a non-contiguous tensor: nbopt updates it in place through a "
                "NumPy view (make it contiguous first, e.g. p.data = p.data.contiguous())")
        obj = super().__new__(cls, data, requires_grad=tensor.requires_grad)
        obj.__dict__["_tensor"] = tensor
        obj.__dict__["_grad_cache"] = (None, 0, None)
        return obj

    def __array_finalize__(self, obj):
        super().__array_finalize__(obj)
        # arrays NumPy derives from one (reshapes, copies) are not the tensor
        self.__dict__["_tensor"] = None

    @property
    def tensor(self) -> torch.Tensor | None:
        """The torch tensor whose memory this parameter views."""
        return self.__dict__.get("_tensor")

    @property
    def grad(self):
        tensor = self.__dict__.get("_tensor")
        if tensor is None:
            return self.__dict__.get("grad")
        g = tensor.grad
        if g is None:
            return None
        cached, ptr, view = self.__dict__["_grad_cache"]
        if cached is g and (g.is_sparse or g.data_ptr() == ptr):
            return view
        view = _grad_view(g)
        self.__dict__["_grad_cache"] = (g, 0 if g.is_sparse else g.data_ptr(), view)
        return view

    @grad.setter
    def grad(self, value):
        tensor = self.__dict__.get("_tensor")
        if tensor is None:
            self.__dict__["grad"] = value
            return
        if value is None or isinstance(value, torch.Tensor):
            tensor.grad = value
        elif isinstance(value, SparseGrad):
            tensor.grad = torch.sparse_coo_tensor(torch.from_numpy(np.array(value.indices)),
                                                  torch.from_numpy(value.values),
                                                  value.shape)
        else:
            tensor.grad = torch.from_numpy(np.asarray(value))

    def __repr__(self):
        return "Torch" + super().__repr__()


# -- state dicts ---------------------------------------------------------------------
def _to_torch(value, copy: bool):
    if isinstance(value, np.ndarray):
        # (torch cannot view a read-only array, e.g. the 8-bit optimizers'
        # shared quantization map)
        if copy or any(s < 0 for s in value.strides) or not value.flags.writeable:
            value = np.array(value)
        return torch.from_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_torch(v, copy) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_torch(v, copy) for v in value)
    return value


def _from_torch(value):
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            raise TypeError(f"can't convert a {value.layout} tensor of a state dict")
        return value.detach().cpu().resolve_conj().resolve_neg().numpy()
    if isinstance(value, dict):
        return {k: _from_torch(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_torch(v) for v in value)
    return value


def to_torch_state_dict(state_dict: dict, copy: bool = True) -> dict:
    """An nbopt ``state_dict()`` as torch.optim's: arrays become tensors.

    The layout is already torch's (same keys, ids, group entries), so only the
    values change: every ndarray becomes a ``torch.Tensor`` (a 0-d ``step``
    stays a 0-d float32 tensor, a 1-element Tensor ``lr`` a tensor) and NumPy
    scalars become Python numbers.  The result goes through ``torch.save`` and
    ``torch.load(..., weights_only=True)``, and into the ``load_state_dict``
    of the same torch.optim class.

    Parameters
    ----------
    state_dict : dict
        What an nbopt optimizer's ``state_dict()`` returned (or
        :func:`nbopt.load` read back).
    copy : bool, default True
        Copy the arrays (the tensors then share nothing with the optimizer's
        live state); ``False`` makes zero-copy views, as torch's own
        ``state_dict()`` returns its live state.

    Examples
    --------
    >>> import numpy as np, torch, nbopt
    >>> from nbopt.torch import to_torch_state_dict
    >>> w = nbopt.Parameter(np.ones(2, np.float32))
    >>> opt = nbopt.Adam([w], lr=0.1)
    >>> w.grad = np.ones(2, np.float32)
    >>> opt.step()
    >>> sd = to_torch_state_dict(opt.state_dict())
    >>> sd["state"][0]["step"]
    tensor(1.)
    >>> t = torch.ones(2, requires_grad=True)
    >>> torch_opt = torch.optim.Adam([t], lr=0.1)
    >>> torch_opt.load_state_dict(sd)
    >>> torch_opt.state[t]["exp_avg"]
    tensor([0.1000, 0.1000])
    """
    return _to_torch(state_dict, copy)


def from_torch_state_dict(state_dict: dict) -> dict:
    """A torch.optim ``state_dict()`` (e.g. from ``torch.load(path,
    weights_only=True)``) as nbopt's: tensors become NumPy arrays.

    The arrays view the tensors (no copy); ``load_state_dict`` copies them
    into the optimizer's own state, with its usual validation (nothing
    changes if anything is wrong).  The result may also be written with
    :func:`nbopt.save`.

    Parameters
    ----------
    state_dict : dict
        A torch optimizer's state dict (CPU or GPU tensors; GPU ones are
        copied to the host).

    Examples
    --------
    >>> import numpy as np, torch, nbopt
    >>> from nbopt.torch import from_torch_state_dict
    >>> t = torch.ones(2, requires_grad=True)
    >>> torch_opt = torch.optim.SGD([t], lr=0.1, momentum=0.9)
    >>> t.grad = torch.ones(2)
    >>> torch_opt.step()
    >>> w = nbopt.Parameter(np.ones(2, np.float32))
    >>> opt = nbopt.SGD([w], lr=0.1, momentum=0.9)
    >>> opt.load_state_dict(from_torch_state_dict(torch_opt.state_dict()))
    >>> opt.state[w]["momentum_buffer"]
    array([1., 1.], dtype=float32)
    """
    return _from_torch(state_dict)


# -- the optimizers --------------------------------------------------------------------
class _TensorKeyedState(OptimizerState):
    """``optimizer.state`` of a bridged optimizer: keyed by TorchParameter,
    and answering to the torch tensors those view."""

    _lookup: dict = {}

    def _key(self, key):
        if isinstance(key, torch.Tensor):
            p = self._lookup.get(id(key))
            if p is not None and p.tensor is key:
                return p
        return key

    def __getitem__(self, key):
        return super().__getitem__(self._key(key))

    def __contains__(self, key):
        return super().__contains__(self._key(key))

    def get(self, key, default=None):
        return super().get(self._key(key), default)

    def __setitem__(self, key, value):
        super().__setitem__(self._key(key), value)

    def __delitem__(self, key):
        super().__delitem__(self._key(key))

    def pop(self, key, *default):
        return super().pop(self._key(key), *default)

    def setdefault(self, key, default=None):
        return super().setdefault(self._key(key), default)


def _from_torch_hyper(value):
    """A hyper-parameter given as a torch tensor (or a tuple of them) as a
    NumPy array (copied); anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value):
        return tuple(_from_torch_hyper(v) for v in value)
    return value


def _unhooked(func):
    """``func`` without the step-hook wrappers Optimizer puts on classes (the
    bridge's own step runs the hooks once)."""
    while getattr(func, "hooked", False):
        func = func.__wrapped__
    return func


class _TorchBridge:
    """The part every bridged optimizer shares (see :func:`bridge`)."""

    def __init__(self, params, *args, **kwargs):
        if isinstance(params, torch.Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got " + torch.typename(params))
        # id(tensor) -> its TorchParameter (which keeps the tensor alive)
        self._by_tensor: dict[int, TorchParameter] = {}
        # torch Tensor hyper-parameters (lr=torch.tensor(0.01), Tensor betas) as
        # nbopt's 1-element arrays (copies)
        args = [_from_torch_hyper(a) for a in args]
        kwargs = {k: _from_torch_hyper(v) for k, v in kwargs.items()}
        super().__init__(params, *args, **kwargs)

    def __setattr__(self, name, value):
        if name == "state":
            if type(value) is OptimizerState:
                # the same mapping (its entries point back at it), made tensor-aware
                value.__class__ = _TensorKeyedState
            elif not isinstance(value, _TensorKeyedState):
                value = _TensorKeyedState(value)
            value._lookup = self.__dict__.get("_by_tensor", {})
        super().__setattr__(name, value)

    def _wrap(self, item, made: dict, differentiable: bool):
        """A torch tensor (or ``(name, tensor)``) as its TorchParameter, with
        torch's checks and messages."""
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            return item[0], self._wrap(item[1], made, differentiable)
        if not isinstance(item, torch.Tensor):
            raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                            + torch.typename(item))
        if not differentiable and not (item.is_leaf or item.retains_grad):
            raise ValueError("can't optimize a non-leaf Tensor")
        p = self._by_tensor.get(id(item))
        if p is None:
            p = made.get(id(item))
        if p is None or p.tensor is not item:
            p = made[id(item)] = TorchParameter(item)
        return p

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group of torch tensors (see ``torch.optim.Optimizer.add_param_group``);
        everything is checked before the optimizer changes."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        made: dict[int, TorchParameter] = {}
        differentiable = param_group.get("differentiable", self.defaults.get("differentiable"))
        wrapped = [self._wrap(item, made, bool(differentiable)) for item in params]
        group = {k: (v if k in ("params", "param_names") else _from_torch_hyper(v))
                 for k, v in param_group.items()}
        group["params"] = wrapped
        super().add_param_group(group)
        self._by_tensor.update(made)

    def parameter(self, tensor: torch.Tensor) -> TorchParameter:
        """The :class:`TorchParameter` this optimizer made for ``tensor``."""
        p = self._by_tensor.get(id(tensor))
        if p is None or p.tensor is not tensor:
            raise KeyError("this tensor is not optimized by this optimizer")
        return p

    def _tensors(self) -> list:
        return [p.tensor for group in self.param_groups for p in group["params"]
                if isinstance(p, TorchParameter)]

    def step(self, closure: Callable | None = None):
        """Perform one optimization step, as the nbopt class's ``step``.

        Each tensor's ``.grad`` is read now; a ``closure`` (required by
        LBFGS) runs with gradients enabled, as in torch, and may return a
        torch tensor.  The tensors are updated in place and their autograd
        version counters bumped.
        """
        # torch may have replaced any .grad since the last step: the engine's
        # cached plans compare gradient objects again
        Parameter._grad_epoch += 1
        if closure is not None:
            closure = torch.enable_grad()(closure)
        base = _unhooked(super().step.__func__)
        try:
            with torch.no_grad():
                return base(self, closure)
        finally:
            torch.autograd.graph.increment_version(
                [t for t in self._tensors() if t.grad is not None])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the tensors' gradients, as ``torch.optim.Optimizer.zero_grad``:
        ``set_to_none=True`` (default) sets ``tensor.grad = None``; ``False``
        detaches and zeroes each gradient in place."""
        for group in self.param_groups:
            for p in group["params"]:
                tensor = p.tensor if isinstance(p, TorchParameter) else None
                if tensor is None:
                    continue
                if tensor.grad is not None:
                    if set_to_none:
                        tensor.grad = None
                    else:
                        if tensor.grad.grad_fn is not None:
                            tensor.grad.detach_()
                        else:
                            tensor.grad.requires_grad_(False)
                        tensor.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """The state in torch's layout with torch tensors (views of the live
        state, as torch's ``state_dict()``): ready for ``torch.save`` and for
        a torch.optim optimizer's ``load_state_dict``."""
        return to_torch_state_dict(super().state_dict(), copy=False)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this optimizer, of the same torch.optim class
        (torch tensors), or of the plain nbopt class (NumPy arrays).  Validated
        before anything changes, as nbopt's ``load_state_dict``."""
        super().load_state_dict(from_torch_state_dict(state_dict))


_BRIDGED: dict[type, type] = {}


def bridge(cls: type) -> type:
    """The :mod:`nbopt.torch` version of an nbopt optimizer class.

    The result subclasses ``cls`` (so everything of the nbopt class is kept:
    signature, validation, kernels, state) and ``torch.optim.Optimizer``, and
    takes CPU torch tensors.  ``nbopt.torch.Adam`` is ``bridge(nbopt.Adam)``;
    use it for your own :class:`nbopt.Optimizer` subclasses.

    Parameters
    ----------
    cls : type
        A subclass of :class:`nbopt.Optimizer`.

    Examples
    --------
    >>> import torch, nbopt
    >>> from nbopt.torch import bridge
    >>> Adam = bridge(nbopt.Adam)
    >>> Adam is bridge(nbopt.Adam) is nbopt.torch.Adam
    True
    >>> opt = Adam(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    >>> isinstance(opt, nbopt.Adam), isinstance(opt, torch.optim.Optimizer)
    (True, True)
    """
    if not (isinstance(cls, type) and issubclass(cls, _Optimizer)):
        raise TypeError(f"bridge() takes an nbopt.Optimizer subclass, got {cls!r}")
    if issubclass(cls, _TorchBridge):
        return cls
    made = _BRIDGED.get(cls)
    if made is None:
        doc = (f"``nbopt.{cls.__name__}`` for CPU torch tensors (see :mod:`nbopt.torch`).\n\n"
               f"Takes ``model.parameters()``, ``named_parameters()`` or param-group dicts of "
               f"torch tensors; every other argument, default and error is\n"
               f":class:`nbopt.{cls.__name__}`'s.\n\n"
               f"Examples\n--------\n"
               f">>> import torch, nbopt.torch\n"
               f">>> model = torch.nn.Linear(2, 2, bias=False)\n"
               f">>> opt = nbopt.torch.{cls.__name__}(model.parameters(), "
               f"{_EXAMPLE_OPTIONS.get(cls.__name__, 'lr=0.01')})\n"
               f">>> isinstance(opt, (nbopt.{cls.__name__}, torch.optim.Optimizer))\n"
               f"True\n")
        made = type(cls.__name__, (_TorchBridge, cls, torch.optim.Optimizer),
                    {"__module__": __name__, "__qualname__": cls.__name__, "__doc__": doc})
        _BRIDGED[cls] = made
    return made


# the generated docstrings' example options (bitsandbytes' SGD8bit needs momentum)
_EXAMPLE_OPTIONS = {"SGD8bit": "lr=0.01, momentum=0.9"}


def _optimizer_classes(module) -> dict:
    return {name: getattr(module, name) for name in module.__all__
            if isinstance(getattr(module, name), type)
            and issubclass(getattr(module, name), _Optimizer)
            and getattr(module, name) is not _Optimizer}


# torch.optim's names first (nbopt.optim), then nbopt's own (the 8-bit ones)
_CLASSES = {**_optimizer_classes(_optim), **_optimizer_classes(_nbopt)}

#: every nbopt optimizer, bridged (each also a name of this module)
ALGORITHMS: tuple = tuple(_CLASSES)

for _name in ALGORITHMS:
    globals()[_name] = bridge(_CLASSES[_name])
__all__ += list(ALGORITHMS)
del _name
