"""Parameters: ndarrays that carry a gradient, the arena that packs many of
them into one contiguous buffer, and the sparse gradient type."""
from __future__ import annotations

import operator
import sys
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Parameter", "DeviceParameter", "ParameterArena", "SparseGrad", "DeviceSparseGrad",
           "is_sparse_grad", "as_sparse_grad", "is_device_array", "same_device_message"]


# Cache-line alignment of the flat buffers nbopt allocates: a 64-byte vector
# load at NumPy's usual 16-byte offset spans two cache lines (about 0.5% on a
# bandwidth-bound step here, measured with the bench's floor loop).
_ALIGN = 64


def aligned_zeros(n: int, dtype) -> np.ndarray:
    """A zero-filled 1-D array of ``n`` elements whose data starts on a 64-byte
    boundary."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + n * dtype.itemsize].view(dtype)


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
    A GPU array (any object with ``__cuda_array_interface__``: CuPy, torch
    CUDA tensors, numba device arrays) gives a :class:`DeviceParameter`
    instead, updated in place on its device.

    grad : ndarray, SparseGrad or None
        The gradient read by ``Optimizer.step``: ``None`` (the parameter is
        skipped), an array of the parameter's shape and dtype, or a sparse
        gradient (:class:`SparseGrad`, or a 2-D ``scipy.sparse`` array or
        matrix) for the algorithms that take one (SparseAdam, Adagrad, SGD).
        Assign a new array (``w.grad = dw``) or write into the existing one
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
        if is_device_array(data):
            return DeviceParameter(data, requires_grad=requires_grad)
        arr = np.asarray(data)
        if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
            arr = np.ascontiguousarray(arr)
        if requires_grad and arr.dtype.kind not in "fc":
            raise RuntimeError(
                "Only arrays of floating point and complex dtype can require gradients, "
                f"got dtype {arr.dtype}")
        obj = arr.view(cls)
        obj.requires_grad = bool(requires_grad)
        return obj

    # Bumped by every assignment to any Parameter's ``.grad``.  While it is
    # unchanged no gradient has been re-pointed, so the engine's cached step
    # plans stay valid without looking at each parameter (an arena of 1000
    # parameters saves ~45 us per step).
    _grad_epoch = 0

    def __setattr__(self, name, value):
        if name == "grad":
            Parameter._grad_epoch += 1
        super().__setattr__(name, value)

    def __array_finalize__(self, obj):
        # Views and copies made by NumPy itself start without a gradient (a new
        # object is in no cached plan: no epoch bump needed).
        self.__dict__["grad"] = None
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

    def numpy(self) -> np.ndarray:
        """The parameter's values as a plain ndarray view (no copy), as
        ``tensor.detach().numpy()``: writes go to the parameter."""
        return self.view(np.ndarray)

    def detach(self) -> np.ndarray:
        """A plain ndarray view of the parameter (no copy, no gradient), as
        torch's ``detach()`` shares the tensor's storage.

        ``.data`` is NumPy's (a ``memoryview`` of the memory), not torch's:
        where torch code reads ``p.data``, use ``p`` itself (nothing here is
        recorded by autograd) or ``p.detach()``; ``p.data = x`` becomes
        ``p[...] = x`` (the optimizer holds this very array).

        Examples
        --------
        >>> import numpy as np, nbopt
        >>> w = nbopt.Parameter(np.zeros(2))
        >>> v = w.detach()
        >>> v[0] = 5.0
        >>> type(v).__name__, w.tolist(), np.shares_memory(w.numpy(), w)
        ('ndarray', [5.0, 0.0], True)
        """
        return self.view(np.ndarray)

    def __reduce__(self):
        # Pickled (e.g. by multiprocessing) as a plain array plus flags; the
        # gradient is not part of a parameter's value, as in torch.
        return (_rebuild_parameter, (self.view(np.ndarray).copy(), self.requires_grad))

    def __repr__(self):
        body = np.array2string(self.view(np.ndarray), separator=", ", prefix="Parameter(")
        return f"Parameter({body}, dtype={self.dtype})"

    __hash__ = object.__hash__  # identity, like torch tensors: state is keyed by parameter


def is_device_array(obj) -> bool:
    """Whether ``obj`` is a GPU array: it has ``__cuda_array_interface__``
    (CuPy, torch CUDA tensors, numba device arrays), or it is a numba device
    array of the CUDA simulator.  Imports nothing."""
    if isinstance(obj, (np.ndarray, DeviceParameter)):
        return isinstance(obj, DeviceParameter)
    try:
        if hasattr(obj, "__cuda_array_interface__"):
            return True
    except Exception:       # e.g. a CPU tensor's property refusing
        return False
    sim = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return sim is not None and isinstance(obj, sim.FakeCUDAArray)


def _cuda():
    """nbopt's CUDA building blocks, imported on first use with a clear error
    where CUDA support is missing."""
    try:
        from .kernels import _cuda
    except ImportError as error:
        raise RuntimeError(
            "a CUDA array was given, but CUDA support is not installed: "
            "pip install 'nbopt[cuda]' (numba-cuda)") from error
    if not _cuda.SIMULATED:
        from numba import cuda

        if not cuda.is_available():
            raise RuntimeError("a CUDA array was given, but no CUDA GPU is available "
                               "(numba.cuda.is_available() is False)")
    return _cuda


class _DeviceFlags:
    """The ``flags`` a DeviceParameter shares with ndarray's."""

    __slots__ = ("c_contiguous", "f_contiguous", "writeable")

    def __init__(self, c, f):
        self.c_contiguous, self.f_contiguous, self.writeable = c, f, True


class DeviceParameter:
    r"""A parameter on a GPU: the device counterpart of :class:`Parameter`.

    ``nbopt.Parameter(x)`` returns one for any GPU array ``x`` (CuPy, torch
    CUDA tensors, numba device arrays): it views ``x``'s memory, without a
    copy, and optimizers update it in place on its device, so ``x`` (and
    ``cp.asarray(w)``, ``torch.as_tensor(w, device="cuda")``) see every step.

    Attributes
    ----------
    data : numba.cuda DeviceNDArray
        The parameter's memory, as a numba device array.
    grad : GPU array or None
        Any ``__cuda_array_interface__`` array on the same device with the
        parameter's shape and dtype (or None: the parameter is skipped).
    device : str
        ``"cuda:<ordinal>"``, as torch names it.
    shape, dtype, size, ndim, strides, flags
        As for an ndarray.

    Notes
    -----
    Not an ndarray: there is no host memory to view.  ``copy_to_host()``
    returns a NumPy copy; ``__cuda_array_interface__`` hands the memory to
    other GPU libraries.  ``isinstance(w, nbopt.Parameter)`` is False; test
    ``isinstance(w, (nbopt.Parameter, nbopt.DeviceParameter))``.
    """

    def __init__(self, data, requires_grad: bool = True):
        cu = _cuda()
        self.__dict__["grad"] = None
        self.data = cu.as_device_array(data)
        self._source = data
        dtype = np.dtype(self.data.dtype)
        if requires_grad and dtype.kind not in "fc":
            raise RuntimeError(
                "Only arrays of floating point and complex dtype can require gradients, "
                f"got dtype {dtype}")
        c, f = self.data.is_c_contiguous(), self.data.is_f_contiguous()
        if not (c or f):
            raise ValueError("can't optimize a non-contiguous Parameter: a CUDA parameter must be "
                             "C- or F-contiguous (it is updated in place, so it cannot be copied)")
        self.flags = _DeviceFlags(c, f)
        self.requires_grad = bool(requires_grad)
        self.device_index = cu.device_of(self.data)
        self.device = f"cuda:{self.device_index}"

    def __setattr__(self, name, value):
        if name == "grad":
            Parameter._grad_epoch += 1
        object.__setattr__(self, name, value)

    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: np.dtype(self.data.dtype))
    size = property(lambda self: int(self.data.size))
    ndim = property(lambda self: len(self.data.shape))
    strides = property(lambda self: tuple(self.data.strides))
    nbytes = property(lambda self: int(self.data.size) * np.dtype(self.data.dtype).itemsize)

    @property
    def __cuda_array_interface__(self):
        return self.data.__cuda_array_interface__

    @property
    def _nbopt_device_array(self):
        return self.data

    def copy_to_host(self) -> np.ndarray:
        """A NumPy copy of the parameter's values."""
        return self.data.copy_to_host()

    def detach(self):
        """The parameter's device memory as a numba device array (no copy), as
        torch's ``detach()`` shares the tensor's storage."""
        return self.data

    def numpy(self):
        """Refused, as torch refuses ``numpy()`` of a CUDA tensor: there is no
        host memory to view.  Use :meth:`copy_to_host`."""
        raise TypeError(f"can't convert {self.device} device type parameter to numpy: use "
                        "copy_to_host() to copy it to host memory first")

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return (f"DeviceParameter(shape={self.shape}, dtype={self.dtype}, "
                f"device='{self.device}')")

    def __deepcopy__(self, memo):
        # a copy on the same device, as torch's deepcopy of a CUDA parameter
        # (AveragedModel copies its model so)
        copy = DeviceParameter(_cuda().copy_array(self.data), requires_grad=self.requires_grad)
        memo[id(self)] = copy
        return copy

    def __reduce__(self):
        raise TypeError("a DeviceParameter cannot be pickled: save its values with "
                        "nbopt.save({'w': w.copy_to_host()}, path)")


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
    device : str, optional
        ``"cuda"`` (the current GPU) or ``"cuda:<n>"``: the buffers are
        numba device arrays and the parameters :class:`DeviceParameter`
        views of them; a step over the arena is one CUDA launch over one
        segment.  Default: host memory.

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
    and clear them with ``opt.zero_grad()`` or :meth:`zero_grad`: for an
    arena's parameters both zero the arena's gradient buffer in place and
    point each ``.grad`` back at its view, whatever ``set_to_none`` says (a
    ``None`` could not be written into; torch's ``backward`` would make a new
    gradient, here the next ``w.grad[...] = dw`` does).  A parameter whose
    gradient is not written before the next step is therefore stepped with a
    zero gradient rather than skipped.  Assigning a new array (``w.grad =
    dw``) still works; that parameter is then reached through the pointer
    table, which costs a little more per step, until the next ``zero_grad``
    re-attaches its view.

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

    def __init__(self, arrays: Sequence, dtype=None, device=None):
        values = [np.asarray(a) for a in arrays]
        if dtype is None:
            dtype = np.result_type(*values) if values else np.float32
        dtype = np.dtype(dtype)
        if dtype.kind not in "fc":
            raise TypeError(f"ParameterArena needs a floating point or complex dtype, got {dtype}")
        sizes = [v.size for v in values]
        total = int(sum(sizes))
        self.device = None
        if device is not None:
            self._on_device(values, sizes, total, dtype, device)
            return
        self.data = aligned_zeros(total, dtype)
        self.grad = aligned_zeros(total, dtype)
        self.params: list[Parameter] = []
        self.grad_views: list[np.ndarray] = []
        offset = 0
        for value, size in zip(values, sizes):
            view = self.data[offset:offset + size].reshape(value.shape)
            view[...] = value
            p = Parameter(view)
            g = self.grad[offset:offset + size].reshape(value.shape)
            p.grad = g
            p.__dict__["_arena"] = self      # Optimizer.zero_grad re-attaches g
            self.params.append(p)
            self.grad_views.append(g)
            offset += size

    def _on_device(self, values, sizes, total, dtype, device) -> None:
        """The arena in GPU memory: one upload of the initial values."""
        text = str(device)
        if text not in ("cuda", "gpu") and not text.startswith("cuda:"):
            raise ValueError(f"ParameterArena device must be 'cuda' or 'cuda:<n>', got {device!r}")
        cu = _cuda()
        from numba import cuda

        ordinal = int(text.split(":")[1]) if ":" in text else None
        host = np.zeros(total, dtype)
        if total:
            np.concatenate([v.astype(dtype, copy=False).ravel() for v in values], out=host)
        context = cuda.gpus[ordinal] if ordinal is not None and not cu.SIMULATED else None
        if context is not None:
            context.__enter__()
        try:
            self.data = cuda.to_device(host)
            self.grad = cu.device_zeros(total, dtype)
        finally:
            if context is not None:
                context.__exit__(None, None, None)
        self.device = f"cuda:{cu.device_of(self.data)}"
        self.params, self.grad_views = [], []
        offset = 0
        for value, size in zip(values, sizes):
            p = DeviceParameter(self.data[offset:offset + size].reshape(value.shape))
            g = self.grad[offset:offset + size].reshape(value.shape)
            p.grad = g
            p.__dict__["_arena"] = self
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
        if self.device is not None:
            _cuda().zero(self.grad)
        else:
            self.grad.fill(0)
        for p, g in zip(self.params, self.grad_views):
            if p.grad is not g:
                p.grad = g

    def _zero_grads(self, members: list) -> None:
        """``Optimizer.zero_grad`` for the arena's parameters among ``members``:
        each gets its gradient view back, zeroed (the whole buffer in one pass
        when ``members`` are all of the arena's parameters)."""
        ids = {id(p) for p in members}
        if len(ids) == len(self.params):
            self.zero_grad()
            return
        for p, g in zip(self.params, self.grad_views):
            if id(p) in ids:
                if self.device is not None:
                    _cuda().zero(g)
                else:
                    g.fill(0)
                if p.grad is not g:
                    p.grad = g


class SparseGrad:
    r"""A sparse gradient in COO form, like ``torch.sparse_coo_tensor``.

    Entry ``k`` holds ``values[k]`` at position ``indices[:, k]`` of the first
    ``sparse_dim`` dimensions; ``values[k]`` spans the remaining (dense)
    dimensions.  The typical case is an embedding table of shape
    ``(rows, dim)`` with ``indices`` of shape ``(1, nnz)`` naming rows and
    ``values`` of shape ``(nnz, dim)`` (torch's ``nn.Embedding(sparse=True)``
    gradient).  Indices may repeat: the gradient is the sum of the entries,
    and :meth:`coalesce` sums them exactly as torch's ``coalesce()`` does
    (same order of summation, so float results are bit for bit torch's).

    Parameters
    ----------
    indices : array_like of int, shape (sparse_dim, nnz)
        The positions of the entries.  Copied (as int64, read-only).
    values : array_like of float or complex, shape (nnz, \*shape[sparse_dim:])
        The entries; used as given (not copied) when already a C-contiguous
        array.
    shape : tuple of int, optional
        The dense shape.  By default the smallest that holds every index
        (``indices.max(axis=1) + 1``) followed by ``values.shape[1:]``, as
        torch infers it.

    Raises
    ------
    TypeError
        For non-integer indices or non-floating values.
    RuntimeError
        For inconsistent shapes or out-of-range indices, with torch's
        messages (``"indices must be sparse_dim x nnz, but got: ..."``,
        ``"found negative index -1 for dim 0"``, ...).

    Attributes
    ----------
    indices : ndarray
        int64 ``(sparse_dim, nnz)``, read-only.
    values : ndarray
        ``(nnz, *shape[sparse_dim:])``.
    shape : tuple of int
        The dense shape (``shape``, ``dtype`` and ``ndim`` are those of the
        dense array the gradient stands for).
    nnz : int
        Number of stored entries, duplicates counted.
    sparse_dim, dense_dim : int
        Numbers of sparse and dense dimensions (``ndim = sparse_dim +
        dense_dim``).

    Notes
    -----
    A 2-D ``scipy.sparse`` array or matrix is accepted wherever a
    ``SparseGrad`` is (``w.grad = csr``); it is converted with
    :meth:`from_scipy` at step time.  scipy is optional and only imported
    when such an object is met.

    ``opt.zero_grad(set_to_none=False)`` empties a sparse gradient (``nnz``
    becomes 0), as torch's ``zero_()`` does.

    GPU arrays (``__cuda_array_interface__`` objects: CuPy, torch CUDA
    tensors, numba device arrays) for ``indices`` and ``values`` give a
    :class:`DeviceSparseGrad`, the gradient of a :class:`DeviceParameter`.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.parameter import SparseGrad
    >>> g = SparseGrad([[2, 0, 2]], np.array([[1., 1.], [2., 2.], [3., 3.]]), (4, 2))
    >>> g.nnz, g.sparse_dim, g.dense_dim
    (3, 1, 1)
    >>> c = g.coalesce()
    >>> c.indices
    array([[0, 2]])
    >>> c.values
    array([[2., 2.],
           [4., 4.]])
    >>> g.to_dense()
    array([[2., 2.],
           [0., 0.],
           [4., 4.],
           [0., 0.]])
    """

    __slots__ = ("_indices", "_values", "_shape", "_coalesced")

    #: like ``torch.Tensor.is_sparse``
    is_sparse = True
    #: where the entries live, as torch's ``Tensor.device`` (``"cuda:<n>"``
    #: for a :class:`DeviceSparseGrad`)
    device = "cpu"

    def __new__(cls, indices=None, values=None, shape=None):
        # GPU arrays give the device variant (as Parameter gives DeviceParameter)
        if cls is SparseGrad and (is_device_array(indices) or is_device_array(values)):
            cls = DeviceSparseGrad
        return object.__new__(cls)

    def __init__(self, indices, values, shape=None):
        idx = np.asarray(indices)
        vals = np.asarray(values)
        self._indices, self._shape = _checked_coo(idx, vals.dtype, vals.shape, shape)
        self._values = np.ascontiguousarray(vals)
        self._coalesced = False

    @classmethod
    def _trusted(cls, indices, values, shape, coalesced):
        """A SparseGrad from arrays that are already valid (no checks)."""
        self = object.__new__(cls)
        indices.flags.writeable = False
        self._indices = indices
        self._values = values
        self._shape = shape
        self._coalesced = coalesced
        return self

    @classmethod
    def from_scipy(cls, matrix) -> "SparseGrad":
        """The gradient held by a 2-D ``scipy.sparse`` array or matrix (any
        format; duplicates are kept, and summed by :meth:`coalesce`)."""
        sp = _scipy_sparse()
        if not sp.issparse(matrix):
            raise TypeError(f"expected a scipy.sparse array or matrix, got {type(matrix).__name__}")
        if len(matrix.shape) != 2:
            raise ValueError("only 2-D scipy.sparse arrays and matrices can be sparse "
                             f"gradients, got shape {matrix.shape}")
        coo = matrix.tocoo()
        indices = np.stack([np.asarray(coo.row), np.asarray(coo.col)]).astype(np.int64)
        return cls(indices.reshape(2, -1), np.asarray(coo.data), tuple(coo.shape))

    # -- attributes ---------------------------------------------------------------
    @property
    def indices(self) -> np.ndarray:
        """int64 ``(sparse_dim, nnz)``, read-only."""
        return self._indices

    @property
    def values(self) -> np.ndarray:
        """``(nnz, *shape[sparse_dim:])``."""
        return self._values

    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._values.dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def nnz(self) -> int:
        """Number of stored entries (duplicates counted)."""
        return self._indices.shape[1]

    @property
    def sparse_dim(self) -> int:
        return self._indices.shape[0]

    @property
    def dense_dim(self) -> int:
        return self._values.ndim - 1

    def is_coalesced(self) -> bool:
        """Whether this gradient came from :meth:`coalesce` (torch's flag)."""
        return self._coalesced

    # -- operations ---------------------------------------------------------------
    def coalesce(self) -> "SparseGrad":
        """Sorted unique indices with the values of duplicates summed.

        The result is torch's ``coalesce()`` bit for bit: entries are
        ordered by their row-major position, and duplicates are added left to
        right in the order torch's CPU sort leaves them.  Returns ``self``
        when it is already coalesced.
        """
        if self._coalesced:
            return self
        from .kernels._sparse import coalesce

        indices, values = coalesce(self._indices, self._values, self._shape)
        return SparseGrad._trusted(indices, values, self._shape, True)

    def to_dense(self) -> np.ndarray:
        """The dense array (C order) this gradient stands for."""
        out = np.zeros(self._shape, self.dtype)
        c = self.coalesce()
        if c.nnz:
            from .kernels._sparse import flatten_indices

            rows = int(np.prod(self._shape[:self.sparse_dim], dtype=np.int64))
            # 0 + v, as torch's zeros().add_(sparse): -0.0 entries become +0.0
            out.reshape(rows, -1)[flatten_indices(c.indices, self._shape)] = \
                c.values.reshape(c.nnz, -1) + 0
        return out

    def __neg__(self) -> "SparseGrad":
        return SparseGrad._trusted(self._indices, -self._values, self._shape, self._coalesced)

    def fill(self, value) -> None:
        """``fill(0)`` empties the gradient (``nnz = 0``), as torch's ``zero_()``
        on a sparse tensor; other values are refused."""
        if value != 0:
            raise ValueError("a sparse gradient can only be filled with zeros")
        self.zero_()

    def zero_(self) -> "SparseGrad":
        """Remove every entry (torch's ``zero_()``)."""
        indices = np.zeros((self.sparse_dim, 0), np.int64)
        indices.flags.writeable = False
        self._indices = indices
        self._values = np.zeros((0,) + self._values.shape[1:], self.dtype)
        self._coalesced = True
        return self

    def __repr__(self) -> str:
        return (f"SparseGrad(indices={np.array2string(self._indices, separator=', ')}, "
                f"values={np.array2string(self._values, separator=', ')}, "
                f"shape={self._shape}, nnz={self.nnz}, dtype={self.dtype})")


class DeviceSparseGrad(SparseGrad):
    r"""A sparse gradient on a GPU: the :class:`SparseGrad` of a
    :class:`DeviceParameter` (SparseAdam, Adagrad and SGD step it on the
    device).

    ``SparseGrad(indices, values, shape)`` returns one when ``indices`` and
    ``values`` are GPU arrays (any ``__cuda_array_interface__`` object: CuPy,
    torch CUDA tensors, numba device arrays), as ``Parameter`` returns a
    :class:`DeviceParameter`.  Both must be on one GPU (torch's rule), and a
    parameter's gradient on the parameter's GPU: a host ``SparseGrad`` (or a
    ``scipy.sparse`` object) given to a device parameter, or a device one to a
    host parameter, raises ``RuntimeError`` at ``step``, before anything
    changes, as torch requires a gradient on its parameter's device.

    Construction copies the indices to the host once (``sparse_dim x nnz``
    integers), validates them there with :class:`SparseGrad`'s checks and
    messages, and keeps that copy: coalescing and the row offsets of a step
    are host work over it.  The values stay on the device (viewed without a
    copy when C-contiguous).

    :meth:`coalesce` runs :class:`SparseGrad`'s host code (torch's CPU
    ``coalesce()``, bit for bit): when the entries are unsorted or repeat,
    it downloads the values, sorts and sums them on the host and uploads the
    summed rows; sorted unique entries never leave the device.  The step
    itself (SparseAdam's and Adagrad's row updates, SGD's scatter-add) is a
    CUDA kernel over the parameter and its device state, with the same
    per-element functions as the CPU loops: the results are the CPU path's
    bit for bit.

    Attributes
    ----------
    indices : numba.cuda DeviceNDArray
        int64 ``(sparse_dim, nnz)``: a device copy of the validated indices
        (uploaded on first access).
    values : numba.cuda DeviceNDArray
        ``(nnz, *shape[sparse_dim:])``, C-contiguous.
    device : str
        ``"cuda:<ordinal>"``.
    shape, dtype, ndim, nnz, sparse_dim, dense_dim
        As for :class:`SparseGrad`.

    Examples
    --------
    >>> from numba import cuda                                  # doctest: +SKIP
    >>> emb = nbopt.Parameter(cuda.to_device(np.ones((5, 2), np.float32)))  # doctest: +SKIP
    >>> emb.grad = nbopt.SparseGrad(cuda.to_device(np.array([[3, 1, 3]])),  # doctest: +SKIP
    ...                             cuda.to_device(np.ones((3, 2), np.float32)), emb.shape)
    >>> nbopt.SparseAdam([emb], lr=0.1).step()                  # doctest: +SKIP
    """

    __slots__ = ("_device_index", "_d_indices")

    def __init__(self, indices, values, shape=None):
        cu = _cuda()
        on_i, on_v = is_device_array(indices), is_device_array(values)
        d_idx = cu.as_device_array(indices) if on_i else None
        d_vals = cu.as_device_array(values) if on_v else None
        i_dev = f"cuda:{cu.device_of(d_idx)}" if on_i else "cpu"
        v_dev = f"cuda:{cu.device_of(d_vals)}" if on_v else "cpu"
        if i_dev != v_dev:
            raise RuntimeError(f"device of indices ({i_dev}) must match device of values "
                               f"({v_dev})")
        self._indices, self._shape = _checked_coo(d_idx.copy_to_host(), d_vals.dtype,
                                                  d_vals.shape, shape)
        self._device_index = cu.device_of(d_vals)
        if not d_vals.is_c_contiguous():
            d_vals = _device_upload(np.ascontiguousarray(d_vals.copy_to_host()),
                                    self._device_index)
        self._values = d_vals
        self._coalesced = False
        self._d_indices = None

    @classmethod
    def _trusted(cls, indices, values, shape, coalesced, device_index=None):
        """A DeviceSparseGrad from valid host indices and device values."""
        self = object.__new__(cls)
        indices.flags.writeable = False
        self._indices = indices
        self._values = values
        self._shape = shape
        self._coalesced = coalesced
        self._device_index = _cuda().device_of(values) if device_index is None \
            else device_index
        self._d_indices = None
        return self

    @property
    def indices(self):
        """int64 ``(sparse_dim, nnz)`` on the device (a copy of the validated
        indices)."""
        if self._d_indices is None:
            self._d_indices = _device_upload(self._indices, self._device_index)
        return self._d_indices

    @property
    def device(self) -> str:
        return f"cuda:{self._device_index}"

    @property
    def device_index(self) -> int:
        return self._device_index

    def copy_to_host(self) -> SparseGrad:
        """The same gradient as a host :class:`SparseGrad` (values copied)."""
        return SparseGrad._trusted(self._indices, self._values.copy_to_host(), self._shape,
                                   self._coalesced)

    def coalesce(self) -> "DeviceSparseGrad":
        """Sorted unique indices with the values of duplicates summed, on the
        device: torch's CPU ``coalesce()`` bit for bit (see the class
        docstring).  Returns ``self`` when it is already coalesced."""
        return self._coalesce(copy=True)

    def _coalesce(self, copy: bool) -> "DeviceSparseGrad":
        """:meth:`coalesce`; ``copy=False`` lets the result share the values
        when nothing needs summing (a step reads them and drops the result)."""
        if self._coalesced:
            return self
        from .kernels._sparse import coalesce, needs_sort

        if not needs_sort(self._indices, self._shape):
            values = self._values
            if copy:
                values = _device_upload(None, self._device_index, like=values)
            indices = self._indices.copy()
        else:
            indices, host = coalesce(self._indices, self._values.copy_to_host(), self._shape)
            values = _device_upload(host, self._device_index)
        return DeviceSparseGrad._trusted(indices, values, self._shape, True, self._device_index)

    def to_dense(self):
        """The dense array (C order) this gradient stands for, on the device."""
        return _device_upload(self.copy_to_host().to_dense(), self._device_index)

    def __neg__(self) -> "DeviceSparseGrad":
        values = _device_upload(-self._values.copy_to_host(), self._device_index)
        return DeviceSparseGrad._trusted(self._indices, values, self._shape, self._coalesced,
                                         self._device_index)

    def zero_(self) -> "DeviceSparseGrad":
        """Remove every entry (torch's ``zero_()``)."""
        super().zero_()
        self._values = _device_upload(self._values, self._device_index)
        self._d_indices = None
        return self

    def __repr__(self) -> str:
        return (f"DeviceSparseGrad(indices={np.array2string(self._indices, separator=', ')}, "
                f"shape={self._shape}, nnz={self.nnz}, dtype={self.dtype}, "
                f"device='{self.device}')")

    def __reduce__(self):
        raise TypeError("a DeviceSparseGrad cannot be pickled: copy it to the host with "
                        "copy_to_host()")


def _device_upload(host, device_index: int, like=None):
    """``host`` copied to GPU ``device_index``; with ``like`` (a device array)
    a device copy of ``like`` instead."""
    from numba import cuda

    from .engine_cuda import _on

    with _on(device_index):
        if like is not None:
            out = cuda.device_array(like.shape, like.dtype)
            if like.size:
                out.copy_to_device(like)
            return out
        return cuda.to_device(np.ascontiguousarray(host))


def _checked_coo(idx: np.ndarray, vals_dtype, vals_shape: tuple, shape) -> tuple:
    """Validate COO ``indices`` (a host array) against the dtype and shape of
    the values, with torch's messages; returns ``(indices as read-only
    int64, dense shape)``."""
    vals_dtype = np.dtype(vals_dtype)
    vals_shape = tuple(vals_shape)
    if idx.dtype.kind not in "iu" and not (idx.size == 0 and idx.dtype.kind in "fiu"):
        raise TypeError(f"indices must be an integer array, got dtype {idx.dtype}")
    if idx.ndim != 2:
        raise RuntimeError(f"indices must be sparse_dim x nnz, but got: {list(idx.shape)}")
    if vals_dtype.kind not in "fc":
        raise TypeError(
            f"values must be a floating point or complex array, got dtype {vals_dtype}")
    sparse_dim, nnz = idx.shape
    if len(vals_shape) == 0:
        raise RuntimeError(f"values has incorrect size, expected [{nnz}, ...], got []")
    if vals_shape[0] != nnz:
        raise RuntimeError("indices and values must have same nnz, but got nnz from "
                           f"indices: {nnz}, nnz from values: {vals_shape[0]}")
    if shape is None:
        sizes = idx.max(axis=1) + 1 if nnz else np.zeros(sparse_dim, np.int64)
        shape = tuple(int(s) for s in sizes) + vals_shape[1:]
    else:
        try:
            shape = tuple(operator.index(s) for s in shape)
        except TypeError:
            raise TypeError(f"shape must be a sequence of integers, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not contain negative sizes, got {shape}")
    dense_dim = len(vals_shape) - 1
    if len(shape) != sparse_dim + dense_dim:
        raise RuntimeError(
            "'len(size) == sparse_dim + dense_dim' is not satisfied: "
            f"len(size) = {len(shape)}, sparse_dim = {sparse_dim}, dense_dim = {dense_dim}")
    if vals_shape[1:] != shape[sparse_dim:]:
        raise RuntimeError(f"values has incorrect size, expected "
                           f"{[nnz, *shape[sparse_dim:]]}, got {list(vals_shape)}")
    if nnz:
        low, high = idx.min(axis=1), idx.max(axis=1)
        for d in range(sparse_dim):
            if low[d] < 0:
                raise RuntimeError(f"found negative index {low[d]} for dim {d}")
            if high[d] >= shape[d]:
                raise RuntimeError(f"size is inconsistent with indices: for dim {d}, "
                                   f"size is {shape[d]} but found index {high[d]}")
    idx = np.array(idx, dtype=np.int64, order="C")
    idx.flags.writeable = False     # validated once: keep it valid
    return idx, shape


def _scipy_sparse():
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is installed wherever one is met
        raise ImportError("converting a scipy.sparse gradient needs scipy: pip install scipy") \
            from None
    return sp


def _is_scipy_sparse(g) -> bool:
    # scipy is optional: an object can only be a scipy.sparse one if scipy is loaded
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(g)


def same_device_message(where: str, g_device: str, p_device: str) -> str:
    """The error for a gradient on another device than its parameter."""
    return (f"{where}: the gradient is on {g_device} but the parameter is on {p_device}; "
            "please ensure that the gradient and the parameter are on the same device")


def param_device(p) -> str:
    """``"cpu"`` or a DeviceParameter's ``"cuda:<n>"``."""
    return p.device if isinstance(p, DeviceParameter) else "cpu"


def is_sparse_grad(g) -> bool:
    """Whether ``g`` is a sparse gradient (a SparseGrad or a scipy.sparse object)."""
    return isinstance(g, SparseGrad) or _is_scipy_sparse(g)


def as_sparse_grad(g) -> SparseGrad:
    """``g`` as a SparseGrad (scipy.sparse objects are converted)."""
    if isinstance(g, SparseGrad):
        return g
    return SparseGrad.from_scipy(g)
