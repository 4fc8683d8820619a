r"""A small reference implementation of nbopt's model protocol.

torch's SWA utilities work on ``nn.Module`` objects; NumPy code has no
modules, so :mod:`nbopt.swa_utils` works on any object that follows this
**model protocol**:

``parameters()``
    An iterable of the trained arrays (:class:`nbopt.Parameter`), in a fixed
    order.
``buffers()``
    An iterable of the arrays that are not trained but belong to the model's
    state (batch-norm running statistics, counters), in a fixed order.
``modules()``
    An iterable of the model itself and all of its sub-modules.
``training``, ``train(mode=True)``, ``eval()``
    The train/eval flag and the methods that set it on the model and its
    sub-modules.
``model(batch)``
    Calling the model runs its forward pass on a batch.

:class:`~nbopt.swa_utils.AveragedModel` deep-copies such an object and
averages its parameters (and optionally its buffers) in place;
:func:`~nbopt.swa_utils.update_bn` recomputes the running statistics of every
sub-module that is a :class:`BatchNorm1d` (or any module with a ``momentum``
attribute and a ``reset_running_stats()`` method).

This module implements the protocol, deliberately small: :class:`Module`
(parameter, buffer and sub-module registration in attribute order,
``named_parameters``, ``state_dict``, ``train``/``eval``, ...),
:class:`Linear`, :class:`ReLU`, :class:`BatchNorm1d`, :class:`Sequential` and
:class:`CrossEntropyLoss`.  Each layer computes torch's forward in float32 or
float64 and has a hand-written ``backward``.

Backward
--------
There is no autograd.  A forward pass stores what its backward needs;
``module.backward(grad_output)`` then returns the gradient with respect to
the input of the last forward call and **accumulates** the gradients of the
module's parameters into their ``.grad`` (a parameter whose ``.grad`` is None
gets a new array; otherwise the gradient is added in place, so
``ParameterArena`` gradient views stay attached).  This is torch's
``loss.backward()`` semantics: clear gradients between steps with
``optimizer.zero_grad()``.  Parameters with ``requires_grad=False`` get no
gradient.

Examples
--------
>>> import numpy as np, nbopt
>>> from nbopt import nn
>>> rng = np.random.default_rng(0)
>>> model = nn.Sequential(nn.Linear(4, 8, rng=rng), nn.BatchNorm1d(8), nn.ReLU(),
...                       nn.Linear(8, 3, rng=rng))
>>> loss_fn = nn.CrossEntropyLoss()
>>> opt = nbopt.SGD(model.parameters(), lr=0.1)
>>> x = rng.standard_normal((32, 4)).astype(np.float32)
>>> y = rng.integers(0, 3, 32)
>>> first = float(loss_fn(model(x), y))
>>> for _ in range(50):
...     opt.zero_grad()
...     loss = loss_fn(model(x), y)
...     dx = model.backward(loss_fn.backward())
...     opt.step()
>>> float(loss) < first
True
>>> [name for name, _ in model.named_buffers()]
['1.running_mean', '1.running_var', '1.num_batches_tracked']
"""
from __future__ import annotations

import math
from collections import OrderedDict, namedtuple
from typing import Any, Callable, Iterator

import numpy as np

from .parameter import Parameter

__all__ = ["Module", "Linear", "ReLU", "BatchNorm1d", "Sequential", "CrossEntropyLoss",
           "cross_entropy", "accumulate_grad", "is_module"]

_TORCH_NAMES = {
    np.dtype(np.float32): "Float", np.dtype(np.float64): "Double", np.dtype(np.float16): "Half",
    np.dtype(np.int64): "Long", np.dtype(np.int32): "Int", np.dtype(np.int16): "Short",
    np.dtype(np.int8): "Char", np.dtype(np.uint8): "Byte", np.dtype(np.bool_): "Bool",
    np.dtype(np.complex64): "ComplexFloat", np.dtype(np.complex128): "ComplexDouble",
}


def _torch_dtype_name(dtype) -> str:
    dtype = np.dtype(dtype)
    return _TORCH_NAMES.get(dtype, str(dtype))


def _check_device(device) -> None:
    if device is not None and str(device) != "cpu":
        raise ValueError(f"nbopt.nn modules live in host memory: device must be None or 'cpu', "
                         f"got {device!r}")


def _check_float_dtype(dtype) -> np.dtype:
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"nbopt.nn layers need a floating point dtype, got {dtype}")
    return dtype


def is_module(obj) -> bool:
    """Whether ``obj`` follows the model protocol (see the module docstring).

    True for every :class:`Module`, and for any other object (not a class)
    with callable ``parameters``, ``buffers``, ``modules`` and ``train``.
    """
    if isinstance(obj, Module):
        return True
    if isinstance(obj, type):
        return False
    return all(callable(getattr(obj, name, None))
               for name in ("parameters", "buffers", "modules", "train"))


def _addindent(s: str, num_spaces: int) -> str:
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    first = lines.pop(0)
    return first + "\n" + "\n".join(" " * num_spaces + line for line in lines)


def _join(prefix: str, name: str) -> str:
    return prefix + ("." if prefix else "") + name


def _foreign_named(obj, kind: str):
    """``(name, array)`` pairs of a protocol object that is not a Module:
    its ``named_parameters()``/``named_buffers()`` if it has them, else
    ``parameters.<i>``/``buffers.<i>``."""
    named = getattr(obj, f"named_{kind}", None)
    if callable(named):
        return list(named())
    return [(f"{kind}.{i}", a) for i, a in enumerate(getattr(obj, kind)())]


def accumulate_grad(param, grad) -> None:
    """Add ``grad`` into ``param.grad``, as torch's autograd accumulates.

    ``param.grad`` None: it becomes a new array holding ``grad`` (cast to the
    parameter's dtype and shape); otherwise ``grad`` is added in place, so a
    gradient that is a view (a :class:`~nbopt.ParameterArena` slot) stays
    attached.  Does nothing for None or for ``requires_grad=False``.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.nn import accumulate_grad
    >>> w = nbopt.Parameter(np.zeros(2))
    >>> accumulate_grad(w, np.ones(2)); accumulate_grad(w, np.ones(2)); w.grad
    array([2., 2.])
    """
    if param is None or not getattr(param, "requires_grad", True):
        return
    grad = np.asarray(grad, dtype=param.dtype).reshape(param.shape)
    if param.grad is None:
        param.grad = np.array(grad, copy=True, order="K")
    else:
        param.grad += grad


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    __slots__ = ()

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


class Module:
    r"""Base class of the reference layers; follows the model protocol.

    As ``torch.nn.Module``: assigning a :class:`nbopt.Parameter` to an
    attribute registers a parameter, assigning a module (or any object that
    follows the model protocol) registers a sub-module, and
    :meth:`register_buffer` registers a buffer (an ndarray, or None).  They
    are listed in the order they were assigned, depth first.

    Subclasses implement :meth:`forward` and, to take part in training,
    :meth:`backward` (see the module docstring for its contract).

    Attributes
    ----------
    training : bool
        True in training mode (the default), False after :meth:`eval`.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt import nn
    >>> from nbopt.nn import accumulate_grad
    >>> class Scale(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.s = nbopt.Parameter(np.ones(1))
    ...     def forward(self, x):
    ...         self.x = x
    ...         return self.s * x
    ...     def backward(self, g):
    ...         accumulate_grad(self.s, np.atleast_1d((g * self.x).sum()))
    ...         return g * self.s
    >>> m = Scale()
    >>> m(np.array([2.0, 3.0]))
    array([2., 3.])
    >>> m.backward(np.ones(2)); m.s.grad
    array([1., 1.])
    array([5.])
    >>> list(m.state_dict())
    ['s']
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", {})

    # -- forward / backward --------------------------------------------------
    def forward(self, *args, **kwargs):
        """The forward pass; subclasses implement it."""
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function')

    def backward(self, grad_output):
        """Gradient with respect to the input of the last forward call;
        accumulates parameter gradients into ``.grad``.  Subclasses implement it."""
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "backward" function')

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration ----------------------------------------------------------
    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Add a buffer (an ndarray, or None) under ``name``.

        Non-persistent buffers are left out of :meth:`state_dict`.
        """
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"buffer name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError('buffer name can\'t contain "."')
        if name == "":
            raise KeyError('buffer name can\'t be empty string ""')
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, np.ndarray):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            "(numpy.ndarray or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name: str, param) -> None:
        """Add a parameter (a :class:`nbopt.Parameter`, or None) under ``name``."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"parameter name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError('parameter name can\'t contain "."')
        if name == "":
            raise KeyError('parameter name can\'t be empty string ""')
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (nbopt.Parameter or None required)")
        self._parameters[name] = param

    def add_module(self, name: str, module) -> None:
        """Add a sub-module (a :class:`Module`, any protocol object, or None)."""
        if module is not None and not is_module(module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if not isinstance(name, str):
            raise TypeError(f"module name should be a string. Got {type(name).__name__}")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        if "." in name:
            raise KeyError(f'module name can\'t contain ".", got: {name}')
        if name == "":
            raise KeyError('module name can\'t be empty string ""')
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._forget(name)
            self.register_parameter(name, value)
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(nbopt.Parameter or None expected)")
            params[name] = None
            return
        modules = d.get("_modules")
        if not isinstance(value, np.ndarray) and is_module(value):
            if modules is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._forget(name)
            modules[name] = value
            return
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (nbopt.nn.Module or None expected)")
            modules[name] = None
            return
        buffers = d.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(numpy.ndarray or None expected)")
            buffers[name] = value
            return
        object.__setattr__(self, name, value)

    def _forget(self, name: str) -> None:
        d = self.__dict__
        d.pop(name, None)
        for store in ("_parameters", "_buffers", "_modules"):
            d[store].pop(name, None)
        d["_non_persistent_buffers_set"].discard(name)

    def __getattr__(self, name: str):
        d = object.__getattribute__(self, "__dict__")
        for store in ("_parameters", "_buffers", "_modules"):
            members = d.get(store)
            if members is not None and name in members:
                return members[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if name in d.get(store, ()):
                del d[store][name]
                d["_non_persistent_buffers_set"].discard(name)
                return
        object.__delattr__(self, name)

    # -- traversal ---------------------------------------------------------------
    def _walk(self, prefix: str = "", memo: set | None = None) -> Iterator[tuple[str, Any]]:
        """Pre-order ``(prefix, module)`` over nbopt Modules; a protocol object
        that is not a Module is yielded but not descended into (its members
        are read through its own methods).  ``memo`` removes shared modules."""
        if memo is not None:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            if isinstance(child, Module):
                yield from child._walk(_join(prefix, name), memo)
            elif memo is None or id(child) not in memo:
                if memo is not None:
                    memo.add(id(child))
                yield _join(prefix, name), child

    def _named_members(self, kind: str, prefix: str, recurse: bool,
                       remove_duplicate: bool) -> Iterator[tuple[str, Any]]:
        seen = set()
        walk = self._walk(prefix, set() if remove_duplicate else None) if recurse \
            else [(prefix, self)]
        for module_prefix, module in walk:
            if isinstance(module, Module):
                members = getattr(module, "_" + kind).items()
            else:
                members = _foreign_named(module, kind)
            for name, value in members:
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield _join(module_prefix, name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs, depth first in registration order."""
        return self._named_members("parameters", prefix, recurse, remove_duplicate)

    def _members(self, kind: str, recurse: bool) -> list:
        # named_parameters without the names: AveragedModel walks the
        # parameters at every update
        seen = set()
        out = []
        walk = self._walk("", set()) if recurse else [("", self)]
        for _, module in walk:
            if isinstance(module, Module):
                values = getattr(module, "_" + kind).values()
            else:
                values = [v for _, v in _foreign_named(module, kind)]
            for value in values:
                if value is not None and id(value) not in seen:
                    seen.add(id(value))
                    out.append(value)
        return out

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The parameters, depth first in registration order (each once)."""
        return iter(self._members("parameters", recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, buffer)`` pairs, depth first in registration order."""
        return self._named_members("buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        """The buffers (None entries skipped), depth first in registration order."""
        return iter(self._members("buffers", recurse))

    def named_children(self) -> Iterator[tuple[str, Any]]:
        """``(name, module)`` for the direct sub-modules (each once)."""
        memo = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in memo:
                memo.add(id(module))
                yield name, module

    def children(self) -> Iterator[Any]:
        """The direct sub-modules."""
        for _, module in self.named_children():
            yield module

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Any]]:
        """``(name, module)`` for this module and all sub-modules, pre-order.

        Sub-modules of a protocol object that is not a :class:`Module` come
        from its own ``named_modules()`` (or ``modules()``).
        """
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            sub = _join(prefix, name)
            if isinstance(child, Module):
                yield from child.named_modules(memo, sub, remove_duplicate)
                continue
            named = getattr(child, "named_modules", None)
            pairs = ((_join(sub, n), m) for n, m in named()) if callable(named) else \
                ((sub if i == 0 else f"{sub}.{i}", m) for i, m in enumerate(child.modules()))
            for n, m in pairs:
                if remove_duplicate:
                    if id(m) in memo:
                        continue
                    memo.add(id(m))
                yield n, m

    def modules(self) -> Iterator[Any]:
        """This module and all sub-modules, pre-order (each once)."""
        for _, module in self.named_modules():
            yield module

    def apply(self, fn: Callable) -> "Module":
        """Call ``fn`` on every sub-module (children first) and on self."""
        for module in self.children():
            if isinstance(module, Module):
                module.apply(fn)
            else:
                fn(module)
        fn(self)
        return self

    # -- modes and gradients --------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set training mode on this module and every sub-module; returns self."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> "Module":
        """``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's ``.grad`` (to None, or to zeros in place)."""
        for p in self.parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad[...] = 0

    # -- state dict -----------------------------------------------------------------
    def _state_items(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        """``(key, live array)`` of every persistent entry, torch's order: each
        module's parameters, then its buffers, then its children (shared
        modules under every name, as torch's state_dict)."""
        items = []
        for module_prefix, module in self._walk(prefix, None):
            if isinstance(module, Module):
                for name, p in module._parameters.items():
                    if p is not None:
                        items.append((_join(module_prefix, name), p))
                for name, b in module._buffers.items():
                    if b is not None and name not in module._non_persistent_buffers_set:
                        items.append((_join(module_prefix, name), b))
            else:
                for kind in ("parameters", "buffers"):
                    for name, a in _foreign_named(module, kind):
                        if a is not None:
                            items.append((_join(module_prefix, name), a))
        return items

    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """An ``OrderedDict`` of every parameter and persistent buffer.

        The values share memory with the module, as torch's (detached)
        state_dict tensors do: copy them for a snapshot.  Parameters appear
        as plain ndarrays unless ``keep_vars=True``.  :func:`nbopt.save` can
        store the result.
        """
        if destination is None:
            destination = OrderedDict()
        for key, value in self._state_items(prefix):
            if not keep_vars and isinstance(value, Parameter):
                value = value.view(np.ndarray)
            destination[key] = value
        return destination

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy ``state_dict``'s arrays into the module's parameters and buffers.

        Everything is checked before anything is copied.  Missing or
        unexpected keys (with ``strict``) and shape mismatches raise torch's
        ``RuntimeError``.  Returns ``(missing_keys, unexpected_keys)``.
        """
        live = OrderedDict(self._state_items())
        missing = [k for k in live if k not in state_dict]
        unexpected = [k for k in state_dict if k not in live]
        errors = []
        values = {}
        for key, target in live.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if not isinstance(value, (np.ndarray, np.generic, int, float, complex, bool)):
                errors.append(f'While copying the parameter named "{key}", expected ndarray or '
                              f'array-like object from checkpoint but received {type(value)}')
                continue
            value = np.asarray(value)
            if value.shape != target.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape "
                              f"{value.shape} from checkpoint, the shape in current model is "
                              f"{target.shape}.")
                continue
            values[key] = value
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected)))
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in missing)))
        if errors:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(errors)))
        for key, value in values.items():
            np.copyto(live[key], value, casting="unsafe")
        return _IncompatibleKeys(missing, unexpected)

    # -- copies ---------------------------------------------------------------------
    # What a forward pass keeps for its backward (the last input, ...): not
    # part of the model, so copies (AveragedModel's deepcopy, pickle) leave
    # it behind instead of duplicating the last batch.
    _transient = ("_input", "_output", "_cache")

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._transient:
            if name in state:
                state[name] = None
        return state

    # -- repr -----------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside this module's ``repr`` parentheses."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({key}): " + _addindent(repr(module), 2)
                       for key, module in self._modules.items()]
        lines = extra_lines + child_lines
        main = type(self).__name__ + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                main += extra_lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))


def _uniform(rng, low: float, high: float, shape, dtype) -> np.ndarray:
    source = np.random if rng is None else rng    # None: NumPy's global state
    return np.asarray(source.uniform(low, high, shape), dtype=dtype)


class Linear(Module):
    r"""``y = x W^T + b``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the last input and output dimension.
    bias : bool, default True
        Whether to learn an additive bias.
    device : None or "cpu"
        Accepted for torch compatibility; arrays live in host memory.
    dtype : dtype, default float32
        The parameters' dtype (torch's default dtype is float32).
    rng : numpy.random.Generator, int or None
        Source of the initial values; None draws from NumPy's global state
        (so ``np.random.seed`` makes a model reproducible, as
        ``torch.manual_seed`` does).

    Notes
    -----
    Initialised as torch does: weight and bias uniform in
    :math:`[-1/\sqrt{\text{in\_features}}, 1/\sqrt{\text{in\_features}}]`
    (torch's ``kaiming_uniform_(a=sqrt(5))``).  The input may have any
    number of leading dimensions.  Backward, with ``g`` the output gradient
    and ``x`` the input flattened to 2-D:
    :math:`\nabla W \mathrel{+}= g^T x`, :math:`\nabla b \mathrel{+}= \sum_n g_n`,
    returns :math:`g W`.

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
    bias : Parameter, shape (out_features,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt import nn
    >>> lin = nn.Linear(3, 2, rng=0)
    >>> lin
    Linear(in_features=3, out_features=2, bias=True)
    >>> lin(np.ones((4, 3), np.float32)).shape
    (4, 2)
    >>> lin.backward(np.ones((4, 2), np.float32)).shape, lin.bias.grad
    ((4, 3), array([4., 4.], dtype=float32))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, *, rng=None) -> None:
        super().__init__()
        _check_device(device)
        dtype = _check_float_dtype(dtype)
        self.in_features = in_features
        self.out_features = out_features
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
        if isinstance(rng, (int, np.integer)):
            rng = np.random.default_rng(rng)
        self.weight = Parameter(_uniform(rng, -bound, bound, (out_features, in_features), dtype))
        if bias:
            self.bias = Parameter(_uniform(rng, -bound, bound, (out_features,), dtype))
        else:
            self.register_parameter("bias", None)
        self._input = None

    def forward(self, input):
        x = np.asarray(input)
        w = self.weight
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            rows = int(np.prod(x.shape[:-1])) if x.ndim > 1 else 1
            cols = x.shape[-1] if x.ndim else 1
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{cols} and "
                               f"{self.in_features}x{self.out_features})")
        if x.dtype != w.dtype:
            raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got "
                               f"{_torch_dtype_name(x.dtype)} and {_torch_dtype_name(w.dtype)}")
        self._input = x
        y = x @ w.view(np.ndarray).T
        if self.bias is not None:
            y += self.bias.view(np.ndarray)
        return y

    def backward(self, grad_output):
        if self._input is None:
            raise RuntimeError("Linear.backward called before forward")
        x = self._input
        g = np.asarray(grad_output, dtype=self.weight.dtype)
        g2 = g.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        accumulate_grad(self.weight, g2.T @ x2)
        if self.bias is not None:
            accumulate_grad(self.bias, g2.sum(axis=0))
        return (g2 @ self.weight.view(np.ndarray)).reshape(x.shape)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class ReLU(Module):
    r"""``max(x, 0)``, as ``torch.nn.ReLU`` (NaN propagates).

    Parameters
    ----------
    inplace : bool, default False
        Overwrite the input array with the result.

    Notes
    -----
    Backward passes the gradient where the output is positive or NaN and
    zeroes it where the output is :math:`\le 0` (torch's
    ``threshold_backward``).

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt import nn
    >>> relu = nn.ReLU()
    >>> relu(np.array([-1.0, 2.0]))
    array([0., 2.])
    >>> relu.backward(np.array([5.0, 5.0]))
    array([0., 5.])
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self._output = None

    def forward(self, input):
        x = np.asarray(input)
        y = np.maximum(x, 0, out=x if self.inplace else None)
        self._output = y
        return y

    def backward(self, grad_output):
        if self._output is None:
            raise RuntimeError("ReLU.backward called before forward")
        g = np.asarray(grad_output)
        return np.where(self._output <= 0, np.zeros((), g.dtype), g)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class _BatchNorm(Module):
    """Shared code of the batch-norm layers (torch's ``_BatchNorm``)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None,
                 dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        _check_device(device)
        dtype = _check_float_dtype(dtype)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            if bias:
                self.bias = Parameter(np.zeros(num_features, dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._cache = None

    def reset_running_stats(self) -> None:
        """running_mean to 0, running_var to 1, num_batches_tracked to 0 (in place)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        """:meth:`reset_running_stats`, then weight to 1 and bias to 0."""
        self.reset_running_stats()
        if self.affine:
            self.weight[...] = 1
            if self.bias is not None:
                self.bias[...] = 0

    def _check_input_dim(self, input) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _channels(self, x: np.ndarray):
        """Shape that broadcasts a per-channel vector against ``x``, and the
        axes that the statistics reduce over."""
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        axes = (0,) + tuple(range(2, x.ndim))
        return shape, axes

    def forward(self, input):
        x = np.asarray(input)
        self._check_input_dim(x)
        dtype = self.running_mean.dtype if self.running_mean is not None else (
            self.weight.dtype if self.weight is not None else x.dtype)
        batch_stats = self.training or self.running_mean is None
        count = x.size // x.shape[1] if x.shape[1] else 0
        if self.training and x.shape[0] * int(np.prod(x.shape[2:])) == 1:
            raise ValueError("Expected more than 1 value per channel when training, got input "
                             f"size {x.shape}")
        for name in ("running_mean", "running_var", "weight", "bias"):
            value = getattr(self, name)
            if value is not None and value.size != x.shape[1]:
                raise RuntimeError(f"{name} should contain {x.shape[1]} elements not {value.size}")
        if x.dtype != dtype or x.dtype.kind != "f":
            raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")
        shape, axes = self._channels(x)
        if x.size == 0:
            # torch counts the batch but leaves the statistics alone
            if self.training and self.track_running_stats:
                self.num_batches_tracked += 1
            self._cache = None
            return x.copy()
        # Statistics and per-channel coefficients in float64 (torch's CPU
        # accumulation type for float32), applied to x in its own dtype.
        if batch_stats:
            xw = x.astype(np.float64)
            mean = xw.mean(axis=axes)
            centred = xw - mean.reshape(shape)
            var_sum = (centred * centred).sum(axis=axes)
            var = var_sum / count
            invstd = 1.0 / np.sqrt(var + self.eps)
            if self.training and self.track_running_stats:
                self.num_batches_tracked += 1
                if self.momentum is None:   # cumulative moving average
                    factor = 1.0 / float(self.num_batches_tracked)
                else:
                    factor = self.momentum
                unbiased = var_sum / (count - 1) if count > 1 else np.full_like(var_sum, np.nan)
                rm, rv = self.running_mean, self.running_var
                rm[...] = factor * mean + (1 - factor) * rm.astype(np.float64)
                rv[...] = factor * unbiased + (1 - factor) * rv.astype(np.float64)
        else:
            mean = self.running_mean.astype(np.float64)
            invstd = 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
        w = self.weight.astype(np.float64) if self.weight is not None else 1.0
        b = self.bias.astype(np.float64) if self.bias is not None else 0.0
        alpha = (invstd * w).astype(x.dtype)
        beta = (b - mean * invstd * w).astype(x.dtype)
        y = x * alpha.reshape(shape) + beta.reshape(shape)
        self._cache = (x, mean, invstd, batch_stats)
        return y

    def backward(self, grad_output):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        x, mean, invstd, batch_stats = self._cache
        shape, axes = self._channels(x)
        g = np.asarray(grad_output).astype(np.float64)
        xhat = (x.astype(np.float64) - mean.reshape(shape)) * invstd.reshape(shape)
        sum_g = g.sum(axis=axes)
        sum_gx = (g * xhat).sum(axis=axes)
        if self.weight is not None:
            accumulate_grad(self.weight, sum_gx)
        if self.bias is not None:
            accumulate_grad(self.bias, sum_g)
        w = self.weight.astype(np.float64) if self.weight is not None else np.ones_like(invstd)
        scale = (invstd * w).reshape(shape)
        if batch_stats:
            count = x.size // x.shape[1]
            mean_g = (sum_g / count).reshape(shape)
            mean_gx = (sum_gx / count).reshape(shape)
            dx = scale * (g - mean_g - xhat * mean_gx)
        else:
            dx = scale * g
        return dx.astype(x.dtype)


class BatchNorm1d(_BatchNorm):
    r"""Batch normalisation over a 2-D ``(N, C)`` or 3-D ``(N, C, L)`` input,
    as ``torch.nn.BatchNorm1d``.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    In training mode the mean and the **biased** variance are those of the
    batch (over every axis but the channel axis); the running statistics are
    updated with the **unbiased** variance:

    .. math::
        \hat{x}_{\text{running}} \leftarrow (1 - m)\, \hat{x}_{\text{running}} + m\, x_t

    with :math:`m` = ``momentum``, or :math:`m = 1/\text{num\_batches\_tracked}`
    when ``momentum`` is None (a cumulative average: after N batches the
    running statistics are the plain mean of the N batch statistics).  In
    eval mode the running statistics normalise.

    Parameters
    ----------
    num_features : int
        Number of channels ``C``.
    eps : float, default 1e-5
        Added to the variance for stability.
    momentum : float or None, default 0.1
        Running-statistics update factor; None for a cumulative average.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (1) and shift ``bias`` (0).
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked``
        buffers; without them batch statistics are used in eval mode too.
    device : None or "cpu"
        Accepted for torch compatibility.
    dtype : dtype, default float32
    bias : bool, default True (keyword only)
        With ``affine``, whether to learn the shift.

    Notes
    -----
    Statistics are accumulated in float64 (torch's CPU accumulation type),
    so float32 results agree with torch's within an ulp or two.  Backward in
    training mode, with :math:`\hat{x}` the normalised input, :math:`g` the
    output gradient and means over the batch:

    .. math::
        \nabla x = \frac{\gamma}{\sqrt{\mathrm{Var}[x] + \epsilon}}
        \left(g - \bar{g} - \hat{x}\,\overline{g \hat{x}}\right), \quad
        \nabla\gamma \mathrel{+}= \textstyle\sum g\hat{x}, \quad
        \nabla\beta \mathrel{+}= \textstyle\sum g

    References
    ----------
    S. Ioffe and C. Szegedy, "Batch Normalization: Accelerating Deep Network
    Training by Reducing Internal Covariate Shift", ICML 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt import nn
    >>> bn = nn.BatchNorm1d(2, momentum=None)
    >>> for batch in (np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 5.0], [6.0, 7.0]])):
    ...     _ = bn(batch.astype(np.float32))
    >>> bn.running_mean, bn.running_var, int(bn.num_batches_tracked)
    (array([3., 4.], dtype=float32), array([2., 2.], dtype=float32), 2)
    """

    def _check_input_dim(self, input) -> None:
        if input.ndim not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.ndim}D input)")


class Sequential(Module):
    r"""Modules applied in order, as ``torch.nn.Sequential``; backward runs
    them in reverse.

    Parameters
    ----------
    *args : Module, or one OrderedDict of name -> Module
        The layers; named ``"0"``, ``"1"``, ... unless given as a dict.

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt import nn
    >>> net = nn.Sequential(nn.Linear(2, 3, rng=0), nn.ReLU())
    >>> len(net), type(net[0]).__name__, [n for n, _ in net.named_parameters()]
    (2, 'Linear', ['0.weight', '0.bias'])
    """

    def __init__(self, *args) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range")
        return list(self._modules.values())[idx % n]

    def append(self, module) -> "Sequential":
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def forward(self, input):
        for module in self:
            input = module(input)
        return input

    def backward(self, grad_output):
        for module in reversed(list(self)):
            grad_output = module.backward(grad_output)
        return grad_output


_REDUCTIONS = ("mean", "sum", "none")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    # torch's stable form: (x - max) - log(sum(exp(x - max)))
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _check_ce(x: np.ndarray, target: np.ndarray, ignore_index: int, reduction: str):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if x.dtype.kind != "f":
        raise RuntimeError(f'"log_softmax" not implemented for \'{_torch_dtype_name(x.dtype)}\'')
    if x.ndim not in (1, 2):
        raise ValueError(f"nbopt.nn.CrossEntropyLoss takes (N, C) or (C,) logits, got {x.ndim}-D")
    if target.dtype.kind not in "iu":
        raise RuntimeError("expected target dtype to be Long or Byte, but got "
                           f"{_torch_dtype_name(target.dtype)}")
    if x.ndim == 2:
        if target.ndim != 1 or target.shape[0] != x.shape[0]:
            raise ValueError(f"Expected input batch_size ({x.shape[0]}) to match target "
                             f"batch_size ({target.shape[0] if target.ndim else 1}).")
    elif target.ndim != 0:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    flat = target.reshape(-1)
    bad = (flat != ignore_index) & ((flat < 0) | (flat >= x.shape[-1]))
    if bad.any():
        raise IndexError(f"Target {int(flat[np.argmax(bad)])} is out of bounds.")


def _ce_forward(input, target, ignore_index: int, reduction: str):
    x = np.asarray(input)
    t = np.asarray(target)
    _check_ce(x, t, ignore_index, reduction)
    x2 = x.reshape(-1, x.shape[-1])
    t1 = t.reshape(-1)
    logp = _log_softmax(x2)
    keep = t1 != ignore_index
    rows = np.flatnonzero(keep)
    losses = np.zeros(len(t1), x.dtype)
    losses[rows] = -logp[rows, t1[rows]]
    if reduction == "none":
        loss = losses if x.ndim == 2 else losses.reshape(())
    elif reduction == "sum":
        loss = losses.sum(dtype=x.dtype)
    else:
        loss = losses.sum(dtype=x.dtype) / x.dtype.type(len(rows))
    return loss, (x, t1, logp, rows)


def cross_entropy(input, target, *, ignore_index: int = -100, reduction: str = "mean"):
    r"""Softmax cross-entropy of logits and class indices, as
    ``torch.nn.functional.cross_entropy``.

    .. math::
        \ell_n = -\log \frac{\exp(x_{n, y_n})}{\sum_c \exp(x_{n, c})}

    computed through a stable log-softmax; ``reduction="mean"`` divides the
    sum by the number of targets that are not ``ignore_index``.

    Parameters
    ----------
    input : ndarray, shape (N, C) or (C,)
        Logits, float32 or float64.
    target : ndarray of int, shape (N,) or ()
        Class indices in ``[0, C)``, or ``ignore_index``.
    ignore_index : int, default -100
        Targets with this value contribute nothing (nor to the mean's count).
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : scalar of the input dtype, or an array with ``reduction="none"``

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt import nn
    >>> float(nn.cross_entropy(np.zeros((2, 4)), np.array([0, 3])))  # log(4)
    1.3862943611198906
    """
    return _ce_forward(input, target, ignore_index, reduction)[0]


class CrossEntropyLoss(Module):
    r"""Softmax cross-entropy loss with a hand-written backward.

    ``loss = loss_fn(logits, target)`` is :func:`cross_entropy`;
    ``loss_fn.backward(grad_output=1)`` then returns the gradient with
    respect to the logits of the last call (torch's ``nll_loss`` and
    ``log_softmax`` backward):

    .. math::
        \nabla x_{n} = s_n\,(\mathrm{softmax}(x_n) - e_{y_n})

    with :math:`s_n` = ``grad_output`` / (number of counted targets) for
    ``"mean"``, ``grad_output`` for ``"sum"``, ``grad_output[n]`` for
    ``"none"``, and 0 for ignored targets.

    Parameters
    ----------
    ignore_index : int, default -100 (keyword only)
    reduction : {"mean", "sum", "none"}, default "mean" (keyword only)

    Examples
    --------
    >>> import numpy as np
    >>> from nbopt import nn
    >>> loss_fn = nn.CrossEntropyLoss()
    >>> loss = loss_fn(np.zeros((2, 2)), np.array([0, 1]))
    >>> float(loss), loss_fn.backward()
    (0.6931471805599453, array([[-0.25,  0.25],
           [ 0.25, -0.25]]))
    """

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.reduction = reduction
        self._cache = None

    def forward(self, input, target):
        loss, self._cache = _ce_forward(input, target, self.ignore_index, self.reduction)
        return loss

    def backward(self, grad_output=None):
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before forward")
        x, t1, logp, rows = self._cache
        dtype = x.dtype
        n = len(t1)
        if self.reduction == "none":
            scale = np.ones(n, dtype) if grad_output is None else \
                np.broadcast_to(np.asarray(grad_output, dtype).reshape(-1), (n,))
            scale = scale[rows]
        else:
            g = dtype.type(1) if grad_output is None else dtype.type(np.asarray(grad_output))
            if self.reduction == "mean":
                g = g / dtype.type(len(rows))
            scale = g
        grad_logp = np.zeros_like(logp)
        grad_logp[rows, t1[rows]] = -scale
        dx = grad_logp - np.exp(logp) * grad_logp.sum(axis=-1, keepdims=True)
        return dx.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction}" if self.reduction != "mean" else ""
