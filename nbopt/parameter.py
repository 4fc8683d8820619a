"""Parameters: ndarrays that carry a gradient, and the arena that packs many of
them into one contiguous buffer."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

__all__ = ["Parameter", "ParameterArena"]


class Parameter(np.ndarray):
    r"""An ndarray that an optimizer updates, like ``torch.nn.Parameter``.

    ``Parameter(data)`` views ``data`` when it is a contiguous array (so the
    caller's array and the parameter share memory, as ``nn.Parameter`` shares
    the tensor's storage) and copies it otherwise; optimizers update it in
    place and never re-point it.

    Arithmetic on a Parameter returns plain ndarrays, and so do indexing and
    slicing, so that intermediate results never masquerade as parameters.

    Attributes
    ----------
    grad : ndarray or None
        The gradient read by ``Optimizer.step``: ``None`` (the parameter is
        skipped) or an array of the parameter's shape and dtype.  Assign a new
        array (``w.grad = dw``) or write into the existing one
        (``w.grad[...] = dw``); the optimizer validates it at ``step`` time.
    requires_grad : bool
        Kept for torch compatibility; only float and complex parameters may
        require a gradient.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.zeros(3, np.float32))
    >>> w.grad = np.ones(3, np.float32)
    >>> type(w * 2).__name__
    'ndarray'
    """

    def __new__(cls, data=None, requires_grad: bool = True):
        if data is None:
            data = np.empty(0, np.float32)
        arr = np.asarray(data)
        if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
            arr = np.ascontiguousarray(arr)
        if requires_grad and arr.dtype.kind not in "fc":
            raise RuntimeError(
                "Only arrays of floating point and complex dtype can require gradients, "
                f"got dtype {arr.dtype}")
        obj = arr.view(cls)
        obj.grad = None
        obj.requires_grad = bool(requires_grad)
        return obj

    def __array_finalize__(self, obj):
        # Views and copies made by NumPy itself start without a gradient.
        self.grad = None
        self.requires_grad = getattr(obj, "requires_grad", True)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        inputs = tuple(x.view(np.ndarray) if isinstance(x, Parameter) else x for x in inputs)
        if out is not None:
            kwargs["out"] = tuple(
                x.view(np.ndarray) if isinstance(x, Parameter) else x for x in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        if out is not None:
            # In-place ufuncs (``w += 1``, ``np.add(a, b, out=w)``) keep the
            # caller's object, as torch's in-place ops do.
            if len(out) == 1:
                return out[0]
            return out
        return result

    def __getitem__(self, key):
        return self.view(np.ndarray)[key]

    def __reduce__(self):
        # Pickled (e.g. by multiprocessing) as a plain array plus flags; the
        # gradient is not part of a parameter's value, as in torch.
        return (_rebuild_parameter, (self.view(np.ndarray).copy(), self.requires_grad))

    def __repr__(self):
        body = np.array2string(self.view(np.ndarray), separator=", ", prefix="Parameter(")
        return f"Parameter({body}, dtype={self.dtype})"

    __hash__ = object.__hash__  # identity, like torch tensors: state is keyed by parameter


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad=requires_grad)


class ParameterArena:
    """Many parameters, and their gradients, as views of one buffer per dtype.

    An optimizer step over parameters that are contiguous in memory (with
    gradients that are contiguous too) is one kernel call over the whole
    buffer, however many parameters there are.  Parameters made separately
    work as well; they are updated through a table of data pointers instead.

    Parameters
    ----------
    arrays : sequence of array_like
        Initial values; each is copied into the arena.
    dtype : dtype, optional
        The arena's dtype (default: the result type of the arrays).

    Attributes
    ----------
    params : list of Parameter
        One parameter per input array, in order; each ``.grad`` starts as a
        zero-filled view of :attr:`grad`.
    data : ndarray
        The flat buffer the parameters view.
    grad : ndarray
        The flat buffer the parameters' gradients view.
    grad_views : list of ndarray
        Each parameter's slice of :attr:`grad`, shaped like the parameter.

    Notes
    -----
    The fast path needs each parameter's ``.grad`` to be its arena view.  Write
    gradients in place (``w.grad[...] = dw``, ``np.matmul(a, b, out=w.grad)``)
    and clear them with :meth:`zero_grad` or ``opt.zero_grad(set_to_none=False)``.
    Assigning a new array (``w.grad = dw``) still works; that parameter is then
    reached through the pointer table, which costs a little more per step.
    ``opt.zero_grad()`` (``set_to_none=True``) sets grads to None, as torch
    does; :meth:`zero_grad` re-attaches the arena views.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> arena = nbopt.ParameterArena([np.ones((2, 3)), np.zeros(3)], dtype=np.float32)
    >>> w, b = arena.params
    >>> w.grad[...] = 1.0
    >>> opt = nbopt.SGD(arena.params, lr=0.5)
    >>> opt.step()
    >>> float(w[0, 0])
    0.5
    """

    def __init__(self, arrays: Sequence, dtype=None):
        values = [np.asarray(a) for a in arrays]
        if dtype is None:
            dtype = np.result_type(*values) if values else np.float32
        dtype = np.dtype(dtype)
        if dtype.kind not in "fc":
            raise TypeError(f"ParameterArena needs a floating point or complex dtype, got {dtype}")
        sizes = [v.size for v in values]
        total = int(sum(sizes))
        self.data = np.zeros(total, dtype)
        self.grad = np.zeros(total, dtype)
        self.params: list[Parameter] = []
        self.grad_views: list[np.ndarray] = []
        offset = 0
        for value, size in zip(values, sizes):
            view = self.data[offset:offset + size].reshape(value.shape)
            view[...] = value
            p = Parameter(view)
            g = self.grad[offset:offset + size].reshape(value.shape)
            p.grad = g
            self.params.append(p)
            self.grad_views.append(g)
            offset += size

    def __iter__(self) -> Iterable[Parameter]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, i) -> Parameter:
        return self.params[i]

    def zero_grad(self) -> None:
        """Zero the gradient buffer in one pass and point every ``.grad`` back at it."""
        self.grad.fill(0)
        for p, g in zip(self.params, self.grad_views):
            p.grad = g
