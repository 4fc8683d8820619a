"""The element-wise engine: flat state per (param group, dtype) and one kernel
call per group step.

A :class:`FlatGroup` owns, for the parameters of one dtype in one param group,
one contiguous array per state name (``exp_avg``, ...), the float32 step
counters, and a cached table of parameter addresses.  ``optimizer.state[p]``
holds views into those arrays, so the torch-shaped ``state_dict()`` costs no
copies and a step costs one kernel call however many parameters there are.

The flat arrays are a cache of ``optimizer.state`` (an :class:`OptimizerState`),
never a second truth: the mapping and its :class:`ParamState` entries count
their edits, and a group whose cache may be stale compares it with the mapping
and re-reads what changed before it steps (:meth:`FlatGroup.sync`).

A step is two phases so that bad input changes nothing: :meth:`FlatGroup.prepare`
validates every gradient and state edit and computes everything the step will
write (host scalars, step counts, scalar state, kernel arguments) without
touching any parameter or state; :meth:`StepWork.run` then applies it, and
cannot fail half-way.  The optimizer prepares every group before running any.

Sparse gradients (:class:`nbopt.parameter.SparseGrad`, or 2-D ``scipy.sparse``
objects) go through the spec's ``sparse`` handler (:mod:`nbopt.registry`):
without one, the step raises torch's ``"<Name> does not support sparse
gradients"``; with one, the handler validates the options while the step is
validated, and its row update runs after the dense kernel (or it asks for the
densified gradient to go through the kernel like a dense one).
"""
from __future__ import annotations

import functools
import operator
import struct
import time
from collections import defaultdict
from typing import Mapping, NamedTuple

import numpy as np

from . import config
from .parameter import (Parameter, aligned_zeros, as_sparse_grad, is_device_array,
                        is_sparse_grad, same_device_message)
from .registry import DENSIFY, AlgorithmSpec

__all__ = ["FlatGroup", "OptimizerState", "ParamState", "parse_state", "param_where",
           "sparse_rejection"]

_EMPTY = {}

# torch's class names where they are not the capitalised registry name, and
# the messages that say more than "<Name> does not support sparse gradients"
_TORCH_NAMES = {"asgd": "ASGD", "nadam": "NAdam", "radam": "RAdam", "rmsprop": "RMSprop"}
_SPARSE_MESSAGES = {
    "adam": "Adam does not support sparse gradients, please consider SparseAdam instead",
}


def sparse_rejection(spec: AlgorithmSpec) -> str:
    """torch's message for a sparse gradient given to an algorithm without one
    (AdamW steps through Adam's code in torch, and says "Adam")."""
    if spec.name in _SPARSE_MESSAGES:
        return _SPARSE_MESSAGES[spec.name]
    name = _TORCH_NAMES.get(spec.name, spec.name.capitalize())
    return f"{name} does not support sparse gradients"


# torch's message for an in-place update whose input partly overlaps its output
OVERLAP_MESSAGE = ("unsupported operation: some elements of the input tensor and the written-to "
                   "tensor refer to a single memory location. Please clone() the tensor before "
                   "performing the operation.")


def name_bad_option(group: Mapping, group_index: int, error: TypeError) -> None:
    """Raise a TypeError naming the option (None or a string where a number
    belongs) behind ``error``, raised by the host maths; return if none is."""
    for key, value in group.items():
        if key != "params" and (value is None or isinstance(value, str)) \
                and key not in _NON_NUMERIC_OPTIONS:
            raise TypeError(f"param_groups[{group_index}][{key!r}] must be a number, "
                            f"got {type(value).__name__} {value!r}") from error


def _host(fn, group: Mapping, group_index: int, *args, row: bool = False):
    """``fn(*args)``, host maths that reads the group's options: a TypeError
    names the bad option.

    ``row``: the result is a row of kernel scalars, which must all be numbers:
    NumPy would store None as NaN and parse a string ("1e-8") when the row
    becomes the kernel's scalar array, where torch raises TypeError; ``sum``
    is the cheapest strict check (~0.1 us).
    """
    try:
        result = fn(*args)
        if row:
            sum(result)
        return result
    except TypeError as error:
        name_bad_option(group, group_index, error)
        raise


# options whose value may be None or a string
_NON_NUMERIC_OPTIONS = frozenset({"foreach", "fused", "capturable", "differentiable",
                                  "param_names", "line_search_fn", "initial_lr"})


def check_grad_matches(where: str, param, shape, dtype) -> None:
    """A gradient must have its parameter's shape and dtype (dense or sparse,
    host or device): torch's RuntimeError otherwise."""
    if tuple(shape) != tuple(param.shape):
        raise RuntimeError(f"{where}: grad has shape {tuple(shape)} but the parameter has shape "
                           f"{tuple(param.shape)}")
    if dtype != param.dtype:
        raise RuntimeError(f"{where}: grad has dtype {dtype} but the parameter has dtype "
                           f"{param.dtype}")


def read_only_message(where: str) -> str:
    return (f"{where} is read-only (its memory is not writeable, e.g. np.frombuffer of bytes or "
            "np.load(..., mmap_mode='r')); the optimizer updates parameters in place: pass a "
            "writeable copy (np.array(a))")


def param_where(group_index: int, position: int) -> str:
    return f"param_groups[{group_index}]['params'][{position}]"


class _CountsEdits:
    """Every mutating dict method, followed by :meth:`_edited` (the two
    state dicts below say what an edit means to them)."""

    def _edited(self):
        raise NotImplementedError

    def __setitem__(self, key, value):
        dict.__setitem__(self, key, value)
        self._edited()

    def __delitem__(self, key):
        dict.__delitem__(self, key)
        self._edited()

    def __ior__(self, other):
        dict.update(self, other)
        self._edited()
        return self

    def clear(self):
        dict.clear(self)
        self._edited()

    def pop(self, *args):
        self._edited()
        return dict.pop(self, *args)

    def popitem(self):
        self._edited()
        return dict.popitem(self)

    def setdefault(self, key, default=None):
        self._edited()
        return dict.setdefault(self, key, default)

    def update(self, *args, **kwargs):
        dict.update(self, *args, **kwargs)
        self._edited()


class OptimizerState(_CountsEdits, defaultdict):
    """``optimizer.state``: torch's ``defaultdict(dict)`` keyed by parameter,
    which counts its edits.

    The engine's flat arrays are a cache of this mapping, never a second
    truth.  Every edit of it (``clear()``, ``del state[p]``, ``state[p] = d``,
    ...) or of a :class:`ParamState` in it bumps its ``version``.  A flat
    group that has compared its cache with the mapping at the current version
    knows that nothing changed (one integer comparison per step); otherwise
    it compares them parameter by parameter and re-reads what changed before
    its next step (:meth:`FlatGroup.sync`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(dict, *args, **kwargs)
        self.version = 0

    def _edited(self):
        self.version += 1

    def __missing__(self, key):
        # ``state[p]`` of a parameter without state: an empty entry means the
        # same as no entry, so nothing is counted; a ParamState, so that the
        # user's edits of it are
        value = ParamState()
        value._home, value._param = self, key
        dict.__setitem__(self, key, value)
        return value

    def __reduce__(self):
        return (OptimizerState, (), None, None, iter(self.items()))

    def __copy__(self):
        return OptimizerState(self)

    copy = __copy__


class ParamState(_CountsEdits, dict):
    """``optimizer.state[p]``: a plain dict to the user, whose flat entries are
    views of the group's flat state.

    An edit (rebinding an entry, deleting one, ``clear()``) marks it edited
    and bumps its mapping's ``version``; the next step re-reads it, as
    torch's next step reads ``state[p]``: a rebound array's values are copied
    into the flat state and the entry is a view again, a cleared entry
    starts the parameter afresh.  Writing into an entry's array in place
    needs nothing: the views are the flat state.
    """

    _changed = False  # edited since the engine last read it
    _home = None      # the OptimizerState and parameter it was filled for
    _param = None

    def __reduce_ex__(self, protocol):
        # Copies and pickles are plain dicts: the views and the owning flat
        # group belong to this optimizer, and a copy is adopted by its own.
        return (dict, (dict(self),))

    def _edited(self):
        self._changed = True
        if self._home is not None:
            self._home.version += 1

    def adopt(self, home, param) -> None:
        """Mark the entry as read by the engine, filled for ``home[param]``,
        and make it that entry (without counting an edit)."""
        self._changed = False
        self._home, self._param = home, param
        if home.get(param) is not self:
            dict.__setitem__(home, param, self)


def _rounded(values, dtype) -> tuple:
    """``values`` as Python floats, rounded to ``dtype`` as storing them in a
    0-d array of it would round them: for float32 one C-level round trip
    through struct's ``f`` (C's double-to-float cast, NumPy's rounding; out
    of its range, where NumPy gives inf, the NumPy way)."""
    if dtype is np.float32:
        try:
            packer = _F32_TUPLES.get(len(values))
            if packer is None:
                packer = _F32_TUPLES[len(values)] = struct.Struct("=" + "f" * len(values))
            return packer.unpack(packer.pack(*values))
        except (OverflowError, struct.error):
            pass
    return tuple([float(v) if type(v) is dtype else float(dtype(v)) for v in values])


_F32_TUPLES: dict = {}


class _Stored32(tuple):
    """Scalar state as stored (Python floats), with the dtype of the 0-d
    arrays holding it: float32, as torch creates it.  What
    ``AlgorithmSpec.scalars`` receives as ``new`` (a class per dtype: a tuple
    built in C, no Python ``__new__``)."""

    dtype = np.float32


class _Stored64(tuple):
    """As :class:`_Stored32`, for scalar state loaded into float64 parameters
    (torch's load_state_dict casts it to the parameter dtype)."""

    dtype = np.float64


class ParsedState(NamedTuple):
    """A validated, non-empty ``state[p]`` entry (see :func:`parse_state`)."""

    step: float
    scalars: tuple            # scalar state in spec order, as stored (float)
    wide: bool                # scalar state held in float64 (see FlatGroup)
    arrays: dict              # state name -> array to copy into the flat state
    initialized: bool         # False: the slot starts afresh at its next step


def check_state_scalar(what: str, name: str, where: str, value) -> None:
    """A state scalar (``step``, ``eta``, ...) must be a real number: a
    numeric dtype, not np.isreal, which accepts None (it would load as NaN)."""
    if np.ndim(value) != 0 or np.asarray(value).dtype.kind not in "biuf":
        raise ValueError(f"{what} {name!r} for {where} must be a real scalar, got {value!r}")


def check_state_array(what: str, name: str, where: str, value, param) -> None:
    """A state array must be an ndarray shaped like its parameter, of a dtype
    that can hold the parameter's state (complex only for complex ones)."""
    if is_device_array(value):
        # a GPU array (a device optimizer's state dict): checked as its
        # numba view; the engine copies it to the parameter's device
        from .kernels._cuda import as_device_array

        value = as_device_array(value)
    elif not isinstance(value, np.ndarray):
        raise ValueError(f"{what} {name!r} for {where} must be an array, "
                         f"got {type(value).__name__}")
    if tuple(value.shape) != tuple(param.shape):
        raise ValueError(f"{what} {name!r} for {where} has shape {value.shape}, "
                         f"but the parameter has shape {param.shape}")
    if np.dtype(value.dtype).kind not in ("biufc" if param.dtype.kind == "c" else "biuf"):
        raise ValueError(f"{what} {name!r} for {where} has dtype {value.dtype}, "
                         f"which cannot hold the state of a {param.dtype} parameter")


def parse_state(spec: AlgorithmSpec, group: Mapping, param, entry: Mapping, where: str,
                what: str = "state") -> ParsedState:
    """Validate a non-empty ``state[p]`` entry (loaded, or edited by the user)
    against the algorithm, changing nothing.

    Missing keys raise torch's ``KeyError`` (``'step'`` and the scalar state
    always; a state array the group needs, e.g. ``max_exp_avg_sq`` under
    amsgrad); a present value of the wrong kind or shape raises ``ValueError``
    naming it.  SGD keeps no step: without its ``momentum_buffer`` (or with
    None, as torch stores it) the parameter starts its buffer afresh.
    """
    if spec.has_step and "step" not in entry:
        raise KeyError("step")
    for s in spec.scalar_state:
        if s.name not in entry:
            raise KeyError(s.name)
    for name in (["step"] if spec.has_step else []) + [s.name for s in spec.scalar_state]:
        check_state_scalar(what, name, where, entry[name])
    arrays = {}
    for s in spec.state:
        value = entry.get(s.name)
        if value is None and not spec.has_step:
            continue
        if s.name not in entry:
            if s.wanted(group):
                raise KeyError(s.name)
            continue
        check_state_array(what, s.name, where, value, param)
        arrays[s.name] = value
    scalars = tuple(entry[s.name] for s in spec.scalar_state)
    # loaded scalar state that is not float32 (cast to a float64 parameter's
    # dtype, as torch casts it) stays wide from now on
    wide = any(np.asarray(v).dtype != np.float32 for v in scalars)
    step = float(np.float32(np.asarray(entry["step"]).reshape(()))) if spec.has_step else 0.0
    scalars = tuple(float(np.asarray(v).reshape(())) if wide
                    else float(np.float32(np.asarray(v).reshape(()))) for v in scalars)
    initialized = spec.has_step or bool(spec.scalar_state) or len(arrays) == len(spec.state)
    return ParsedState(step, scalars, wide, arrays, initialized)


_GRAD = operator.attrgetter("grad")


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _same_layout(p: np.ndarray, g: np.ndarray) -> bool:
    """Whether element k of ``g``'s memory is element k of ``p``'s memory."""
    if p.ndim <= 1 or p.size <= 1:
        return g.flags.c_contiguous or g.flags.f_contiguous
    if p.flags.c_contiguous:
        return g.flags.c_contiguous
    return g.flags.f_contiguous


def _layout_copy(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.asfortranarray(g) if (p.flags.f_contiguous and not p.flags.c_contiguous) \
        else np.ascontiguousarray(g)


class FlatGroup:
    """Flat state and kernel dispatch for the ``dtype`` parameters of one group."""

    def __init__(self, spec: AlgorithmSpec, dtype: np.dtype, params: list, positions: list,
                 counts: list, state: defaultdict, group_index: int, group: Mapping):
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.params = params                      # unique parameters, first-occurrence order
        self.positions = positions                # position of each in the group's list
        self.counts = np.asarray(counts, np.int64)  # occurrences (duplicates step twice)
        self.max_count = int(self.counts.max()) if len(counts) else 0
        self.group_index = group_index
        n = len(params)
        # Complex parameters are stepped through their real view (torch's
        # view_as_real): real and imaginary parts are independent coordinates.
        self.sizes = np.array([p.size * (2 if p.dtype.kind == "c" else 1) for p in params],
                              np.int64)
        self.offsets = np.zeros(n, np.int64)
        if n > 1:
            np.cumsum(self.sizes[:-1], out=self.offsets[1:])
        self.total = int(self.sizes.sum())
        self.nbytes = self.sizes * self.dtype.itemsize
        self.param_addr = np.array([self._address(p) for p in params], np.int64)
        # the same as Python ints, for the per-gradient overlap check
        self._extent = list(zip(self.param_addr.tolist(), self.nbytes.tolist()))
        self.steps = np.zeros(n, np.float32)
        # per-parameter scalar state (ASGD eta/mu, NAdam mu_product): float32,
        # as torch creates it whatever the parameter dtype; torch's
        # load_state_dict casts it to a float64 parameter's dtype, and from
        # then on that parameter's scalar state is float64 ("wide" slots)
        self.sstate = {s.name: np.zeros(n, np.float32) for s in spec.scalar_state}
        self.sstate64: dict[str, np.ndarray] | None = None
        self.wide = np.zeros(n, bool)
        self.initialized = np.zeros(n, bool)
        self.arrays: dict[str, np.ndarray | None] = {s.name: None for s in spec.state}
        self.present = {s.name: np.zeros(n, bool) for s in spec.state}
        self._empty = self._zeros(0)
        self._no_fresh = np.zeros(n, bool)
        self._grads: list = [None] * n            # gradients the address table was made for
        self._grad_addr = np.zeros(n, np.int64)
        self._copied = np.zeros(n, bool)          # gradients that needed a layout copy
        # The state entry each slot's cache was read from (None: no state), and
        # the (state mapping, its version) at which the cache was last found
        # equal to the mapping.
        self.owned: list = [None] * n
        self._seen: tuple = (None, -1)
        # The steady state of a training loop: every parameter has the same
        # gradient arrays as last step and the same step count.  Its kernel
        # arguments are cached in a _Steady and only the scalars are redone.
        self._steady: _Steady | None = None
        changes = self.sync(state, group)
        if changes:
            self.apply_sync(changes, state)

    # -- where the memory is (engine_cuda.DeviceFlatGroup keeps it on a GPU) ------
    device = None               # the GPU ordinal of a device group
    _address = staticmethod(_address)

    def _zeros(self, n: int):
        return aligned_zeros(n, self.dtype)

    def _flat(self, name: str, i: int):
        """Slot ``i``'s slice of the flat state array ``name`` (real view)."""
        return self._array(name)[self.offsets[i]:self.offsets[i] + self.sizes[i]]

    def _fill(self, name: str, i: int, value) -> None:
        self._flat(name, i).fill(value)

    def _store(self, name: str, i: int, value) -> None:
        """Copy a state value (validated, shaped like the parameter; a GPU
        array is copied to the host, as torch moves loaded state to the
        parameter's device) into slot ``i``'s view of ``name``."""
        if is_device_array(value):
            from .kernels._cuda import to_host

            value = to_host(value)
        np.copyto(self._view(name, i), value, casting="unsafe")

    @staticmethod
    def _steady_grad(g) -> bool:
        """Whether a new gradient may keep the steady plan (a dense array)."""
        return isinstance(g, np.ndarray)

    @staticmethod
    def _unaliased(value, flats):
        """``value``, or a copy of it where it shares memory with one of the
        flat arrays (it is read before any slot is written)."""
        if is_device_array(value):
            return value
        if any(np.may_share_memory(value, a) for a in flats):
            return value.copy()
        return value

    def _launch(self, segments: np.ndarray, rows: list):
        """``(kernel, segments, chunks, scalars)`` of one kernel call over
        ``segments`` (see :func:`_segments`) whose scalar keys have the
        kernel rows ``rows``; the call is ``kernel(segments, chunks, scalars,
        *state arrays, *flags)``."""
        scalars = np.array(rows, dtype=np.float64)[segments[:, 4]].astype(self.dtype)
        seg = np.ascontiguousarray(segments[:, :4])
        kernel, chunks = _launch_shape(self.spec, seg, self.dtype)
        return kernel, seg, chunks, scalars

    # -- state -----------------------------------------------------------------
    def _array(self, name: str) -> np.ndarray:
        arr = self.arrays[name]
        if arr is None:
            arr = self.arrays[name] = self._zeros(self.total)
        return arr

    def _view(self, name: str, i: int) -> np.ndarray:
        p = self.params[i]
        flat = self._flat(name, i)
        if p.dtype.kind == "c":
            flat = flat.view(p.dtype)
        order = "F" if (p.flags.f_contiguous and not p.flags.c_contiguous) else "C"
        return flat.reshape(p.shape, order=order)

    def _scalar_view(self, name: str, i: int) -> np.ndarray:
        if name == "step":
            arr = self.steps
        else:
            arr = self.scalar_arrays(bool(self.wide[i]))[name]
        return arr[i:i + 1].reshape(())

    def scalar_arrays(self, wide: bool) -> dict:
        """The scalar-state arrays of float32 (torch's own) or wide slots."""
        if not wide:
            return self.sstate
        if self.sstate64 is None:
            self.sstate64 = {name: np.zeros(len(self.params)) for name in self.sstate}
        return self.sstate64

    def _scalar_table(self) -> dict:
        """Every slot's scalar state as stored, in float64 (exact for float32)."""
        if self.sstate64 is None:
            return {name: arr.astype(np.float64) for name, arr in self.sstate.items()}
        return {name: np.where(self.wide, self.sstate64[name], arr)
                for name, arr in self.sstate.items()}

    def advance_values(self, group: Mapping, t: float, old: tuple, wide: bool) -> tuple:
        """This step's new scalar state, rounded as it will be stored: in the
        dtype of torch's 0-d state tensors, float32, or float64 for wide slots."""
        if not old:
            return ()
        stored = _Stored64 if wide else _Stored32
        return stored(_rounded(self.spec.advance(group, t, old, stored.dtype), stored.dtype))

    def _owns(self, entry, state, i: int) -> bool:
        """Whether ``entry`` was made for slot ``i`` in this state mapping (then
        it is refilled in place; any other dict is copied, never shared)."""
        return (type(entry) is ParamState and entry._home is state
                and entry._param is self.params[i])

    def sync(self, state, group: Mapping) -> list | None:
        """Compare the cache with ``state``, changing nothing.

        Returns None when they agree, else ``[(slot, parsed, entry)]`` for
        :meth:`apply_sync`: ``parsed`` is the validated entry
        (:class:`ParsedState`), or None when the entry is missing or empty (the
        parameter starts afresh at its next step, as in torch).  O(1) while no
        state mapping has been edited since the last check.
        """
        seen, version = self._seen
        if seen is state and version == state.version:
            return None
        changes = []
        # plain dicts (a user's ``state[p] = {...}``) do not count their edits:
        # the mapping is compared again at every step until they are adopted
        settled = type(state) is OptimizerState
        get = state.get
        owned = self.owned
        for i, p in enumerate(self.params):
            entry = get(p)
            own = owned[i]
            if entry is own and (own is None or not own._changed):
                continue
            if entry is not None and type(entry) is not ParamState:
                settled = False
                if not isinstance(entry, dict):
                    raise TypeError(f"state of {param_where(self.group_index, self.positions[i])}"
                                    f" must be a dict, got {type(entry).__name__}")
            if not entry:
                changes.append((i, None, entry))
            else:
                where = param_where(self.group_index, self.positions[i])
                changes.append((i, parse_state(self.spec, group, p, entry, where), entry))
        if not changes and settled:
            self._seen = (state, state.version)
        return changes or None

    def apply_sync(self, changes: list, state) -> None:
        """Make the cache follow the state entries :meth:`sync` found changed:
        copy their values into the flat state and make the entries views of it."""
        self._steady = None
        # values that are views of this group's flat state (a user's
        # ``state[a]["exp_avg"] = state[b]["exp_avg"]``) are read before any
        # slot is written
        flats = [a for a in self.arrays.values() if a is not None]
        copies = {}
        for i, parsed, _ in changes:
            if parsed is not None:
                copies[i] = {name: self._unaliased(value, flats)
                             for name, value in parsed.arrays.items()}
        for i, parsed, entry in changes:
            p = self.params[i]
            for present in self.present.values():
                present[i] = False
            reuse = self._owns(entry, state, i) or (type(entry) is ParamState
                                                    and entry._home is None and not entry)
            if parsed is None:
                self.initialized[i] = False
                self.wide[i] = False
                if reuse:
                    entry._changed = False
                    entry._home, entry._param = state, p
                self.owned[i] = entry if reuse else None
                continue
            target = entry if reuse else ParamState()
            items = list(entry.items())
            if self.spec.has_step:
                self.steps[i] = parsed.step
            self.wide[i] = parsed.wide
            for arr, value in zip(self.scalar_arrays(parsed.wide).values(), parsed.scalars):
                arr[i] = value
            views = {}
            for name, value in copies[i].items():
                self._store(name, i, value)
                views[name] = self._view(name, i)
                self.present[name][i] = True
            if target is entry:
                dict.clear(target)
            for key, value in items:
                if key in views:
                    value = views[key]
                elif key in self.sstate or (key == "step" and self.spec.has_step):
                    value = self._scalar_view(key, i)
                dict.__setitem__(target, key, value)
            target.adopt(state, p)
            self.initialized[i] = parsed.initialized
            self.owned[i] = target

    def _init_param(self, i: int, group: Mapping, state, init: "_InitValues") -> None:
        p = self.params[i]
        # an empty (or, for SGD, buffer-less) entry is filled in place, as
        # torch fills ``state[p]``
        new = self.owned[i] if self.owned[i] is not None else ParamState()
        if self.spec.has_step:
            self.steps[i] = 0
            dict.__setitem__(new, "step", self._scalar_view("step", i))
        self.wide[i] = False
        for s, value in zip(self.spec.scalar_state, init.scalars):
            self.sstate[s.name][i] = value
            dict.__setitem__(new, s.name, self._scalar_view(s.name, i))
        for s in self.spec.state:
            self.present[s.name][i] = False
        for name, value in init.arrays.items():
            # filled through the real view: a complex parameter's state
            # starts at v + v*1j, as torch's full_like(p, v) of its real view
            self._fill(name, i, value)
            self.present[name][i] = True
            dict.__setitem__(new, name, self._view(name, i))
        if new:
            new.adopt(state, p)
            self.initialized[i] = True
            self.owned[i] = new

    def init_all(self, group: Mapping, defaults: Mapping, state: defaultdict) -> None:
        """Create the state of every parameter now (torch's Adagrad does it in
        its constructor)."""
        init = _InitValues.of(self.spec, group, defaults)
        for i in np.flatnonzero(~self.initialized):
            self._init_param(int(i), group, state, init)
        self._steady = None

    # -- step --------------------------------------------------------------------
    def prepare(self, group: Mapping, defaults: Mapping, state: defaultdict):
        """Validate this step and compute everything it writes (host scalars,
        scalar state, step counts, kernel arguments), changing nothing; the
        returned work's ``run`` then cannot fail half-way."""
        seen = self._seen       # sync's O(1) check, inlined: this runs every step
        changes = None if seen[0] is state and seen[1] == state.version \
            else self.sync(state, group)
        steady = self._steady
        if changes is None and steady is not None and steady.ready(group):
            return steady
        grads = list(map(_GRAD, self.params))
        mask = np.fromiter((g is not None for g in grads), bool, len(grads))
        if not mask.any():
            return StepWork(self, group, state, changes) if changes else None
        hold = []
        sparse = []
        cached = self._grads
        for i, g in enumerate(grads):
            if g is None or (g is cached[i] and not self._copied[i]):
                continue
            if not isinstance(g, np.ndarray) and is_sparse_grad(g):
                update, work = self._check_sparse(i, g, group)
                if update is DENSIFY:
                    hold.append((i, work, grads[i], self._address(work)))
                else:
                    sparse.append((i, update, work))
                continue
            g, addr = self._check_grad(i, g)
            hold.append((i, g, grads[i], addr))
        active = np.flatnonzero(mask)
        spec = self.spec

        # the slots as they will be once the state edits are applied
        steps = self.steps.copy()
        # without scalar state every slot stays narrow: nothing to simulate
        scalar_state = bool(self.sstate)
        wide = self.wide.copy() if scalar_state or changes else self.wide
        sval = self._scalar_table() if scalar_state else _EMPTY
        initialized, present = self.initialized, self.present
        if changes:
            initialized = initialized.copy()
            present = {name: arr.copy() for name, arr in present.items()}
            for i, parsed, _ in changes:
                for arr in present.values():
                    arr[i] = False
                if parsed is None:
                    initialized[i] = wide[i] = False
                    continue
                initialized[i] = parsed.initialized
                steps[i] = parsed.step
                wide[i] = parsed.wide
                for arr, value in zip(sval.values(), parsed.scalars):
                    arr[i] = value
                for name in parsed.arrays:
                    present[name][i] = True
        wanted = [s for s in spec.state if s.wanted(group)]
        needs_init = spec.has_step or bool(spec.scalar_state) or bool(wanted)
        fresh_slots = active[~initialized[active]] if needs_init else active[:0]
        if len(fresh_slots) != len(active):
            old = active[initialized[active]]
            for s in wanted:
                if not present[s.name][old].all():
                    raise KeyError(s.name)
        init = None
        if len(fresh_slots):
            init = _host(_InitValues.of, group, self.group_index, spec, group, defaults)
            steps[fresh_slots] = 0
            if scalar_state:
                wide[fresh_slots] = False
            for arr, value in zip(sval.values(), init.scalars):
                arr[fresh_slots] = float(np.float32(value))
        if len(fresh_slots):
            fresh = np.zeros(len(self.params), bool)
            fresh[fresh_slots] = True
        else:
            fresh = self._no_fresh
        grad_addr = self._grad_addr
        if hold:
            grad_addr = grad_addr.copy()
            for i, _, _, addr in hold:
                grad_addr[i] = addr

        if sparse:
            is_sparse = np.zeros(len(self.params), bool)
            for i, _, _ in sparse:
                is_sparse[i] = True
        rounds = []
        n_keys = 0
        for r in range(self.max_count):
            slots = active if r == 0 else active[self.counts[active] > r]
            if len(slots) == 0:
                break
            steps[slots] += np.float32(1)
            dense = slots[~is_sparse[slots]] if sparse else slots
            launch = None
            if len(dense):
                segments, keys, slot_key = _segments(self, dense, fresh, steps, grad_addr,
                                                     sval, wide)
                rows = []
                for k, (t, f, w, *old) in enumerate(keys):
                    new = _host(self.advance_values, group, self.group_index, group, t,
                                tuple(old), w)
                    if new:
                        members = dense[slot_key == k]
                        for arr, value in zip(sval.values(), new):
                            arr[members] = value
                    rows.append(_host(spec.scalars, group, self.group_index,
                                      group, t, f, tuple(old), new, row=True))
                launch = self._launch(segments, rows)
                n_keys = len(keys)
            row_updates = [(int(i), float(steps[i])) for i in slots[is_sparse[slots]]] \
                if sparse else []
            rounds.append((launch, row_updates))
        return StepWork(self, group, state, changes, active, fresh_slots, init, hold, sparse,
                        rounds, steps, sval, wide, n_keys)

    def _check_grad(self, i: int, g) -> tuple:
        """Validate dense gradient ``g`` of slot ``i``, changing nothing;
        returns ``(gradient as the kernel reads it, its address)``: a layout
        copy where ``g``'s memory order is not the parameter's."""
        p = self.params[i]
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{self._where(i)}: grad must be a numpy array or None, got "
                            f"{type(g).__name__} (sparse gradients are nbopt.SparseGrad objects)")
        check_grad_matches(self._where(i), p, g.shape, g.dtype)
        if not p.flags.writeable:
            raise ValueError(read_only_message(self._where(i)))
        # The kernel reads and writes element by element: a gradient that is
        # the parameter's own memory is fine, one shifted against it would
        # read elements already written (torch's "unsupported operation").
        if _same_layout(p, g):
            addr = _address(g)
            start, nbytes = self._extent[i]
            if addr < start + nbytes and start < addr + g.nbytes \
                    and not (addr == start and g.strides == p.strides):
                raise RuntimeError(OVERLAP_MESSAGE)
            return g, addr
        if np.may_share_memory(p, g):
            raise RuntimeError(OVERLAP_MESSAGE)
        g = _layout_copy(p, g)
        return g, _address(g)

    def _where(self, i: int) -> str:
        return param_where(self.group_index, self.positions[i])

    def _check_sparse(self, i: int, g, group: Mapping):
        """Validate sparse gradient ``g`` of slot ``i``; returns ``(DENSIFY,
        dense gradient)`` or ``(row update, gradient as a SparseGrad)``."""
        p = self.params[i]
        where = param_where(self.group_index, self.positions[i])
        g = as_sparse_grad(g)
        if g.device != "cpu":       # a DeviceSparseGrad: torch wants the param's device
            raise RuntimeError(same_device_message(where, g.device, "cpu"))
        check_grad_matches(where, p, g.shape, g.dtype)
        if self.spec.sparse is None:
            raise RuntimeError(sparse_rejection(self.spec))
        update = self.spec.sparse(group, p)
        if update is DENSIFY:
            return DENSIFY, _layout_copy(p, g.to_dense())
        return update, g

    def state_views(self, i: int) -> dict:
        """The allocated state of slot ``i``, as views shaped and laid out like
        its parameter."""
        return {s.name: self._view(s.name, i) for s in self.spec.state
                if self.present[s.name][i]}


class _InitValues(NamedTuple):
    """A fresh slot's first scalar state and state-array values, computed
    while the step is validated (they may read a bad hyper-parameter)."""

    scalars: tuple
    arrays: dict

    @staticmethod
    def of(spec: AlgorithmSpec, group: Mapping, defaults: Mapping) -> "_InitValues":
        return _InitValues(tuple(s.initial_value(group, defaults) for s in spec.scalar_state),
                           {s.name: s.initial_value(group, defaults)
                            for s in spec.state if s.wanted(group)})


class StepWork:
    """One group's validated step, everything it writes computed, ready to run."""

    __slots__ = ("fg", "group", "state", "changes", "active", "fresh_slots", "init", "hold",
                 "sparse", "rounds", "steps", "sval", "wide", "n_keys")

    def __init__(self, fg, group, state, changes, active=None, fresh_slots=(), init=None,
                 hold=(), sparse=(), rounds=None, steps=None, sval=None, wide=None, n_keys=0):
        self.fg, self.group, self.state, self.changes = fg, group, state, changes
        self.active, self.fresh_slots, self.init = active, fresh_slots, init
        self.hold = hold        # (slot, gradient to read, gradient as assigned, its address)
        self.sparse = sparse    # (slot, row update, SparseGrad)
        self.rounds = rounds    # per occurrence round: (kernel launch or None, row updates)
        self.steps, self.sval, self.wide, self.n_keys = steps, sval, wide, n_keys

    def run(self) -> None:
        fg, group = self.fg, self.group
        fg._steady = None
        if self.changes:
            fg.apply_sync(self.changes, self.state)
        if self.rounds is None:
            return
        for i, g, original, addr in self.hold:
            fg._grads[i] = original
            fg._copied[i] = g is not original
            fg._grad_addr[i] = addr
        # keep layout copies alive until the kernel has read them
        keep = [g for _, g, original, _ in self.hold if g is not original]  # noqa: F841
        for i in self.fresh_slots:
            fg._init_param(int(i), group, self.state, self.init)
        fg.steps[:] = self.steps
        fg.wide[:] = self.wide
        if fg.sstate:
            if not self.wide.any():       # the usual case: all float32, as torch
                for name, values in self.sval.items():
                    fg.sstate[name][:] = values
            else:
                narrow = ~self.wide
                wide_arrays = fg.scalar_arrays(True)
                for name, values in self.sval.items():
                    fg.sstate[name][narrow] = values[narrow]
                    wide_arrays[name][self.wide] = values[self.wide]
        spec = fg.spec
        flags = spec.flags(group)
        arrays = [fg.arrays[s.name] if fg.arrays[s.name] is not None else fg._empty
                  for s in spec.state]
        updates = {i: (update, grad) for i, update, grad in self.sparse}
        launch = None
        for launch, row_updates in self.rounds:
            if launch is not None:
                kernel, seg, chunks, scalars = launch
                kernel(seg, chunks, scalars, *arrays, *flags)
            for i, t in row_updates:
                update, grad = updates[i]
                update(fg.params[i], fg.state_views(i), grad, group, t)
        if (not updates and fg.max_count == 1 and self.n_keys == 1 and launch is not None
                and len(self.active) == len(fg.params) and not fg._copied.any()
                and not len(self.fresh_slots)):
            fg._steady = _Steady(fg, group, launch, arrays)


def _launch_shape(spec: AlgorithmSpec, seg: np.ndarray, dtype=np.float32):
    """The kernel, serial or parallel (see :func:`_runs_parallel`), and its
    chunk table."""
    if not _runs_parallel(spec, seg, dtype):
        return spec.cpu[0], _serial_chunks(seg)
    return spec.cpu[1], _chunks(seg[:, 3], _parallel_chunk(int(seg[:, 3].sum())))


# -- the serial/parallel choice ---------------------------------------------------
# With config.PARALLEL_THRESHOLD None (the default) a step over MEASURE_MIN to
# MEASURE_MAX elements runs whichever build of its kernel is faster, measured
# in this process: every steady plan in that range times both builds,
# alternating (they compute the same values element for element), at its
# first steps, REMEASURE_FIRST steps later and then every REMEASURE_EVERY
# steps, and runs the faster; the
# general path takes the last choice measured for its class (algorithm,
# dtype, the powers of two of its element and segment counts).  Where the
# break-even lies depends on the algorithm (sqrt and division make Adam
# compute-bound), the cores, their threading layer and their load: measured
# here, Adam float32 over 30k elements ran 2.1x faster in parallel on 2 quiet
# cores, while on 2 loaded cores the parallel build was 2-10x slower from 10k
# to 1M elements.
MEASURE_MIN = 4096          # below: serial (a parallel launch costs more than the loop)
MEASURE_MAX = 1 << 22       # from here on: parallel (memory-bound at any load)
MEASURE_ROUNDS = 4          # timed steps of each build
# Each build runs in blocks of MEASURE_BLOCK consecutive steps, blocks
# alternating, and the first step of a block is not timed: it pays for the
# switch (after a parallel step the other core's cache holds half of the
# data, after a serial one this core's holds all of it).  Timed alternately,
# step by step, SGD over 10 x 1k ran 2x slower serially than it runs.
MEASURE_BLOCK = 3
MEASURE_STEPS = 2 * MEASURE_ROUNDS * MEASURE_BLOCK // (MEASURE_BLOCK - 1)
# steps to a new plan's second measurement: the first may have run beside
# another thread pool's spinning threads (torch's OpenMP keeps spinning).
# The same wait follows a measurement that changed the choice: the change
# holds for REMEASURE_EVERY steps only once a measurement confirms it (a
# moment of interference makes the serial build look faster: measured
# beside torch's ASGD steps, ASGD's parallel build over 1000 x 1k swung
# 225-840 us, the serial one ran 570 us, and the serial choice held for
# 4096 steps at 2.2x the time of a quiet parallel step)
REMEASURE_FIRST = 48
REMEASURE_EVERY = 4096      # steps between later measurements
_PATHS: dict = {}           # path class -> True (parallel) / False (serial)


def _path_class(spec: AlgorithmSpec, seg: np.ndarray, dtype) -> tuple:
    total = int(seg[:, 3].sum())
    return (spec.name, np.dtype(dtype).char, total.bit_length(), len(seg).bit_length())


def _runs_parallel(spec: AlgorithmSpec, seg: np.ndarray, dtype) -> bool:
    """Whether a step over the segments ``seg`` runs the parallel build:
    ``config.runs_parallel`` with a fixed ``config.PARALLEL_THRESHOLD``;
    otherwise the measured choice of its class where there is one, else
    the default threshold."""
    total = int(seg[:, 3].sum())
    if not _measured(total):
        return config.runs_parallel(total) if config.PARALLEL_THRESHOLD is not None \
            else total >= MEASURE_MAX and config.parallel_allowed()
    choice = _PATHS.get(_path_class(spec, seg, dtype))
    return total >= config.DEFAULT_PARALLEL_THRESHOLD if choice is None else choice


def _measured(total: int) -> bool:
    """Whether a step over ``total`` elements takes the measured choice."""
    return (config.PARALLEL_THRESHOLD is None and MEASURE_MIN <= total < MEASURE_MAX
            and config.parallel_allowed())


class _Measure:
    """A steady plan's serial/parallel choice by measurement (see _PATHS):
    it times both builds of its kernel over ``MEASURE_ROUNDS`` steps each,
    in alternating blocks (see MEASURE_BLOCK), runs the faster one, and
    measures again after ``REMEASURE_FIRST`` steps, then every
    ``REMEASURE_EVERY`` steps (the machine's load changes) while the
    measurements agree, after ``REMEASURE_FIRST`` steps again when one
    changes the choice."""

    __slots__ = ("key", "paths", "times", "left", "until", "won", "compiled", "resolve",
                 "chosen")

    def __init__(self, key, spec: AlgorithmSpec, seg: np.ndarray):
        self.key = key
        self.paths = ((spec.cpu[0], _serial_chunks(seg)),
                      (spec.cpu[1], _chunks(seg[:, 3], _parallel_chunk(int(seg[:, 3].sum())))))
        # each build's entry point once it has run through its dispatcher
        # (see _entry_point: ~0.7 us a step less at 10k elements); resolve:
        # the chosen build is still called through its dispatcher
        self.compiled = [None, None]
        self.resolve = False
        self.chosen = None          # the last measured choice (True: parallel)
        known = _PATHS.get(key)
        if known is None:
            self._restart()
        else:
            self.left, self.until, self.won = 0, REMEASURE_EVERY, self.paths[known]
            self.resolve, self.chosen = True, known

    def _restart(self) -> None:
        self.times = ([], [])
        self.left = MEASURE_STEPS

    @staticmethod
    def of(spec: AlgorithmSpec, seg: np.ndarray, dtype) -> "_Measure | None":
        """The measuring a steady plan over ``seg`` does, or None: its size is
        outside the measured range, or the threshold is fixed."""
        if not _measured(int(seg[:, 3].sum())):
            return None
        return _Measure(_path_class(spec, seg, dtype), spec, seg)

    def run(self, seg: np.ndarray, rest: tuple) -> None:
        """One step, ``kernel(seg, chunks, *rest)``, by the chosen build or
        timed."""
        if not self.left:
            self.until -= 1
            if self.until:
                call, chunks = self.won
                call(seg, chunks, *rest)
                if self.resolve:
                    self.won = (_entry_point(call, (seg, chunks, *rest)), chunks)
                    self.resolve = False
                return
            self._restart()
        self.left -= 1
        i = MEASURE_STEPS - 1 - self.left
        parallel = (i // MEASURE_BLOCK) % 2
        kernel, chunks = self.paths[parallel]
        call = self.compiled[parallel] or kernel
        if i % MEASURE_BLOCK:
            start = time.perf_counter()
            call(seg, chunks, *rest)
            self.times[parallel].append(time.perf_counter() - start)
        else:
            call(seg, chunks, *rest)        # the block's first step
        if call is kernel:
            self.compiled[parallel] = _entry_point(kernel, (seg, chunks, *rest))
        if not self.left:
            parallel = min(self.times[1]) < min(self.times[0])
            confirmed = parallel == self.chosen
            _PATHS[self.key] = self.chosen = parallel
            self.won = (self.compiled[parallel], self.paths[parallel][1])
            self.resolve = False
            self.until = REMEASURE_EVERY if confirmed else REMEASURE_FIRST


def _serial_chunks(seg: np.ndarray) -> np.ndarray:
    chunks = np.zeros((len(seg), 3), np.int64)
    chunks[:, 0] = np.arange(len(seg))
    chunks[:, 2] = seg[:, 3]
    return chunks


def _parallel_chunk(total: int) -> int:
    """Chunk length of a parallel step over ``total`` elements: at most
    ``config.CHUNK_SIZE``, and an equal share per thread (Numba splits a
    prange evenly between its threads: 100k elements in chunks of 32768 on
    2 threads would give one thread twice the other's work), rounded up to
    16 elements (a 64-byte line of float32)."""
    import numba

    threads = max(1, numba.get_num_threads())
    pieces = threads * max(1, -(-total // (threads * config.CHUNK_SIZE)))
    return max(16, -(-(-(-total // pieces)) // 16) * 16)


class _Steady:
    """Cached kernel arguments of a steady-state step (see FlatGroup._steady).

    Valid while the gradients are the same objects, every step count (and
    scalar state) is equal (all parameters step together), the optional state
    the group wants is allocated for every parameter, the config knobs are
    unchanged, and the state mapping has not been edited (checked by
    :meth:`FlatGroup.sync` before this).  Every microsecond here is paid by a
    1k-element step: work that can be done once is done in ``__init__``.
    """

    __slots__ = ("fg", "group", "seg", "chunks", "kernel", "arrays", "scalars", "absent",
                 "knobs", "grad_ids", "epoch", "uniform", "t", "new", "wide", "sarrays",
                 "stored", "rows", "per_slot", "regrads", "call", "pack", "measure",
                 "spec", "steps", "head", "flags", "fast",
                 "fast_get", "fast_raw", "fast_h", "fast_head", "fast_call", "snew",
                 "committed", "watch", "watched", "args")

    def __init__(self, fg, group, launch, arrays):
        kernel, seg, chunks, scalars = launch
        self.fg, self.group, self.seg, self.chunks = fg, group, seg, chunks
        self.spec, self.steps = fg.spec, fg.steps
        # ids of the gradients this plan was made for; fg._grads holds the
        # arrays themselves, so an id cannot be reused while it is cached
        self.grad_ids = list(map(id, fg._grads))
        self.epoch = Parameter._grad_epoch
        self.kernel, self.arrays = kernel, arrays
        # the launch's scalar table: a row per segment on the CPU, one row on a GPU
        self.scalars = np.empty_like(scalars)
        self.rows = 0 if len(scalars) == 1 else slice(None)
        # the optional state some slot lacks: the plan holds while the group
        # wants none of it
        self.absent = [s for s in fg.spec.state if not fg.present[s.name].all()]
        self.knobs = config.generation
        # every slot has one width (one key): its scalar-state arrays, and how
        # a new value is rounded when stored
        self.wide = bool(fg.wide[0])
        self.sarrays = list(fg.scalar_arrays(self.wide).values())
        self.stored = _Stored64 if self.wide else _Stored32
        # a user may write a step count or scalar state in place (the entries
        # are views): the values must still agree for one row to serve all
        shared = [fg.steps, *self.sarrays]
        self.uniform = [(_all_equal(), a) for a in shared] if len(fg.params) > 1 else []
        self.t, self.new = 0.0, ()
        # one segment per parameter, in slot order: a new gradient array only
        # changes its row's gradient address
        self.per_slot = len(seg) == len(fg.params)
        self.regrads = None
        # one segment on the CPU (the usual case): the row is packed straight
        # into the table's memory (C's double-to-float cast rounds as NumPy's
        # assignment does), 0.2 us less than NumPy's sequence assignment
        self.pack = None
        code = _STRUCT_CODES.get(self.scalars.dtype.type)
        if (fg.device is None and code and self.scalars.shape[0] == 1
                and self.scalars.flags.c_contiguous):
            self.pack = struct.Struct("=" + code * self.scalars.shape[1]).pack_into
        self.call = kernel if fg.device is not None else \
            _entry_point(kernel, (seg, chunks, self.scalars, *arrays, *fg.spec.flags(group)))
        self.measure = None if fg.device is not None else _Measure.of(fg.spec, seg, fg.dtype)
        self.head = (seg, chunks, self.scalars, *arrays)
        self.args = None            # (*head, *flags) while both hold
        # the compiled scalar row (AlgorithmSpec.steady_row): its float
        # arguments are converted again only when an option's value changes
        self.fast = fg.spec.steady_row if fg.device is None else None
        self.committed = False      # this step's counts and scalar state are written
        self.fast_h = None
        if self.fast is not None:
            self.fast_get = operator.itemgetter(*self.fast.keys)
            self.fast_raw = _NOT_READ
            self.snew = np.zeros(max(1, len(self.sarrays)))
            self.fast_head = ((self.scalars, self.steps, *self.sarrays, self.snew) if self.sarrays
                              else (self.scalars, self.steps))
            self.fast_call = self.fast.row
        # Every option the kernel flags, the absent state's wants and the
        # compiled row read, watched as one tuple: while it equals the last
        # one seen (one C-level read and comparison a step) the flags and
        # the row's arguments are reused (see _reread)
        self.flags = None
        read = _ReadKeys(group)
        fg.spec.flags(read)
        for s in self.absent:
            s.wanted(read)
        watched = sorted(read.keys_read | set(self.fast.keys if self.fast is not None else ()))
        self.watch = operator.itemgetter(*watched) if watched else _NO_OPTIONS
        self.watched = _NOT_READ

    def ready(self, group, solo: bool = False) -> bool:
        """Whether the plan holds for this step of ``group`` (see the class
        docstring); if so, this step's scalars are computed (which may
        raise), changing nothing but the plan, unless ``solo`` (the step's
        only plan: nothing can fail after this) lets the compiled row write
        the step counts and scalar state too.  One method: a 1k-element
        step costs ~2 us, a call ~0.1 us."""
        fg = self.fg
        epoch = Parameter._grad_epoch
        self.regrads = None
        if epoch != self.epoch:
            # some .grad was assigned: compare ids in one C-level comparison
            grads = list(map(_GRAD, fg.params))
            ids = list(map(id, grads))
            if ids != self.grad_ids:
                if not self.per_slot or not self._new_grads(fg, grads, ids, epoch):
                    return False
            else:
                self.epoch = epoch
        if self.group is not group or self.knobs != config.generation:
            return False
        try:
            same = self.watch(group) == self.watched
        except Exception:       # a key deleted, or an option that is an array
            same = False
        if not same and not self._reread(group):
            return False
        h = self.fast_h
        if h is not None:
            # the compiled row (it checks that the step counts and scalar state agree)
            call = self.fast_call
            t = call(*self.fast_head, solo, *h)
            if call is self.fast.row:
                self.fast_call = _entry_point(call, (*self.fast_head, solo, *h))
            if t:
                self.t, self.new, self.committed = t, self.snew, solo
                return True
        self.committed = False
        for check, values in self.uniform:
            if not check(values):
                return False
        # every step count is equal here; stored in float32, which rounds
        # ``step += 1`` as torch's float32 step does (exact below 2**24)
        t = self.steps.item(0) + 1.0
        if t > 16777216.0:
            t = float(np.float32(t))
        try:
            if self.sarrays:
                old = tuple([arr.item(0) for arr in self.sarrays])
                stored = self.stored
                new = stored(_rounded(self.spec.advance(group, t, old, stored.dtype),
                                      stored.dtype))
            else:
                old = new = ()
            row = self.spec.scalars(group, t, False, old, new)
            pack = self.pack
            if pack is None:
                sum(row)        # see _host
                self.scalars[self.rows] = row
            else:
                pack(self.scalars, 0, *row)
        except (TypeError, struct.error) as error:
            # struct rejects what is not a number, as sum() does; the
            # error that names the option comes from the general path's maths
            if not isinstance(error, TypeError):
                error = TypeError(str(error))
            name_bad_option(group, fg.group_index, error)
            raise error
        self.t, self.new = t, new
        return True

    def _reread(self, group) -> bool:
        """The watched options differ from the last ones seen (or cannot be
        compared): the absent state's wants checked, the compiled row's
        arguments converted again (``fast_h`` None where the Python maths must
        run: an option that is not a plain float, a missing key), the flags
        read again (and kept while no option can change in place: an array
        is read at every step).  False: the plan no longer holds."""
        for s in self.absent:
            if s.wanted(group):
                return False   # the slow path allocates, or raises torch's KeyError
        if self.fast is not None:
            try:
                raw = self.fast_get(group)
                if raw != self.fast_raw:
                    self.fast_raw = raw
                    self.fast_h = self.fast.hyper(raw)
            except Exception:   # KeyError, a comparison of arrays: the Python maths decides
                self.fast_raw, self.fast_h = _NOT_READ, None
        # read here, before anything changes (a deleted option raises torch's KeyError)
        self.flags, self.args = self.spec.flags(group), None
        self.watched = _NOT_READ
        try:
            values = self.watch(group)
        except KeyError:
            return True
        if _immutable(values):
            self.watched = values
        return True

    def _new_grads(self, fg, grads, ids, epoch) -> bool:
        """New gradient arrays (a loop that computes them every step): the
        plan holds if each is a dense gradient the kernel reads in place.
        Validates them (raising as the general path does) and keeps their
        addresses for :meth:`run`; False sends the step to the general path."""
        regrads = []
        for i, (g, old) in enumerate(zip(grads, self.grad_ids)):
            if id(g) != old:
                if not fg._steady_grad(g):
                    return False            # None or sparse: the general path
                checked, addr = fg._check_grad(i, g)
                if checked is not g:
                    return False            # needs a layout copy
                regrads.append((i, g, addr))
        self.regrads = (regrads, ids, epoch)
        return True

    def run(self) -> None:
        if self.regrads is not None:
            regrads, self.grad_ids, self.epoch = self.regrads
            fg = self.fg
            for i, g, addr in regrads:
                fg._grads[i] = g            # keeps it alive while its address is cached
                fg._grad_addr[i] = addr
                self.seg[i, 1] = addr
            self.regrads = None
            if fg.device is not None:
                self.kernel.segments_changed()
        if not self.committed:
            self.steps.fill(self.t)
            for arr, value in zip(self.sarrays, self.new):
                arr.fill(value)
        measure = self.measure
        if measure is not None:
            if measure.left or measure.until <= 1 or measure.resolve:
                # a measuring step (or the first of a known choice)
                measure.run(self.seg, (self.scalars, *self.arrays, *self.flags))
                if not measure.left and not measure.resolve:
                    # chosen: call that build directly until it measures again
                    self.call, chunks = measure.won
                    self.head = (self.seg, chunks, self.scalars, *self.arrays)
                    self.args = None
                return
            measure.until -= 1
        args = self.args
        if args is None:
            args = self.args = (*self.head, *self.flags)
        self.call(*args)


_STRUCT_CODES = {np.float32: "f", np.float64: "d"}
_NOT_READ = object()        # no option values read yet (never equal to a tuple)


def _NO_OPTIONS(group) -> tuple:
    """The watched options of a plan that reads none."""
    return ()


class _ReadKeys(dict):
    """A param group's copy that records the keys read from it."""

    def __init__(self, group):
        super().__init__(group)
        self.keys_read = set()

    def __getitem__(self, key):
        self.keys_read.add(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self.keys_read.add(key)
        return dict.get(self, key, default)


def _immutable(value) -> bool:
    """Whether a group option cannot change without being replaced (a
    1-element array, nbopt's Tensor option, can be written in place)."""
    if type(value) is tuple:
        return all(map(_immutable, value))
    return value is None or isinstance(value, (float, int, str, np.generic))


def _entry_point(kernel, args: tuple):
    """The compiled function behind the dispatcher ``kernel`` for the types
    of ``args`` (a steady plan's arrays and flags: their types cannot change
    while the plan holds), called without the dispatcher's type resolution,
    which costs ~0.3 us of a 1k-element step; the dispatcher itself if that
    build is not found."""
    from numba import typeof

    try:
        return kernel.overloads[tuple(map(typeof, args))].entry_point
    except (KeyError, AttributeError, ValueError):
        return kernel


@functools.lru_cache(maxsize=None)
def _all_equal():
    # compiled, so imported on first use: the engine imports without Numba
    from .kernels._common import all_equal

    return all_equal


def _segments(fg: FlatGroup, slots: np.ndarray, fresh: np.ndarray, steps: np.ndarray,
              grad_addr: np.ndarray, sval: dict, wide: np.ndarray):
    """Merge runs of slots that are contiguous in parameter, gradient and state
    memory and share their scalar key (step count, fresh flag, scalar state).

    ``steps``, ``grad_addr``, ``sval`` (scalar state as stored, float64) and
    ``wide`` are the slots' values for this step.  Returns int64 ``(n_seg, 5)``
    (param addr, grad addr, state offset, length, key index), the list of keys
    ``(t, fresh, wide, *scalar_state)`` and the key index of each slot.
    """
    pa = fg.param_addr[slots]
    ga = grad_addr[slots]
    off = fg.offsets[slots]
    ln = fg.sizes[slots]
    nb = fg.nbytes[slots]
    columns = [steps[slots].astype(np.float64), fresh[slots].astype(np.float64),
               wide[slots].astype(np.float64)]
    columns += [arr[slots] for arr in sval.values()]
    keys = np.stack(columns, axis=1)
    if (keys == keys[0]).all():
        slot_key = np.zeros(len(slots), np.int64)
        uniq = keys[:1]
    else:
        uniq, slot_key = np.unique(keys, axis=0, return_inverse=True)
        slot_key = slot_key.reshape(-1)
    if len(slots) == 1:
        starts = np.zeros(1, np.int64)
    else:
        brk = ((pa[1:] != pa[:-1] + nb[:-1]) | (ga[1:] != ga[:-1] + nb[:-1])
               | (off[1:] != off[:-1] + ln[:-1]) | (slot_key[1:] != slot_key[:-1]))
        starts = np.flatnonzero(np.concatenate(([True], brk)))
    seg = np.empty((len(starts), 5), np.int64)
    seg[:, 0] = pa[starts]
    seg[:, 1] = ga[starts]
    seg[:, 2] = off[starts]
    seg[:, 3] = np.add.reduceat(ln, starts)
    seg[:, 4] = slot_key[starts]
    key_list = [(float(u[0]), bool(u[1]), bool(u[2]), *(float(x) for x in u[3:])) for u in uniq]
    return seg, key_list, slot_key


def _chunks(lengths: np.ndarray, chunk: int) -> np.ndarray:
    """Split each segment into pieces of at most ``chunk`` elements."""
    per_seg = np.maximum(1, -(-lengths // chunk))
    seg_index = np.repeat(np.arange(len(lengths)), per_seg)
    first = np.cumsum(per_seg) - per_seg
    k = np.arange(len(seg_index)) - np.repeat(first, per_seg)
    out = np.empty((len(seg_index), 3), np.int64)
    out[:, 0] = seg_index
    out[:, 1] = k * chunk
    out[:, 2] = np.minimum((k + 1) * chunk, lengths[seg_index])
    return out
