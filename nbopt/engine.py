"""The element-wise engine: flat state per (param group, dtype) and one kernel
call per group step.

A :class:`FlatGroup` owns, for the parameters of one dtype in one param group,
one contiguous array per state name (``exp_avg``, ...), the float32 step
counters, and a cached table of parameter addresses.  ``optimizer.state[p]``
holds views into those arrays, so the torch-shaped ``state_dict()`` costs no
copies and a step costs one kernel call however many parameters there are.

A step is two phases so that bad input changes nothing: :meth:`FlatGroup.prepare`
validates every gradient and builds the work of the step without touching
any parameter or state; :meth:`StepWork.run` then initialises new state,
advances step counters and calls the kernel.

Sparse gradients (:class:`nbopt.parameter.SparseGrad`, or 2-D ``scipy.sparse``
objects) go through the spec's ``sparse`` handler (:mod:`nbopt.registry`):
without one, the step raises torch's ``"<Name> does not support sparse
gradients"``; with one, the handler validates the options while the step is
validated, and its row update runs after the dense kernel (or it asks for the
densified gradient to go through the kernel like a dense one).
"""
from __future__ import annotations

import operator
from collections import defaultdict
from typing import Mapping

import numpy as np

from . import config
from .parameter import Parameter, aligned_zeros, as_sparse_grad, is_sparse_grad
from .registry import DENSIFY, AlgorithmSpec

__all__ = ["FlatGroup", "ParamState", "param_where", "sparse_rejection"]

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


def param_where(group_index: int, position: int) -> str:
    return f"param_groups[{group_index}]['params'][{position}]"


class ParamState(dict):
    """``optimizer.state[p]``: a dict whose flat entries are views of the group's
    flat state.  Assigning to such an entry copies the value into the view, so
    the kernel keeps seeing it (torch would rebind the key to the new tensor;
    the values that the next step uses are the same)."""

    def __reduce_ex__(self, protocol):
        # Copies and pickles are plain dicts: the views and the owning flat
        # group belong to this optimizer, and a copy is adopted by its own.
        return (dict, (dict(self),))

    def __setitem__(self, key, value):
        current = self.get(key)
        if isinstance(current, np.ndarray) and getattr(self, "_flat", None) and key in self._flat:
            value = np.asarray(value)
            if value.shape != current.shape and value.size != current.size:
                raise ValueError(
                    f"state entry {key!r} has shape {current.shape}; cannot assign an array "
                    f"of shape {value.shape}")
            np.copyto(current, value.reshape(current.shape), casting="unsafe")
            owner = getattr(self, "_owner", None)
            if owner is not None:
                owner._steady = None  # step counts may no longer be equal
            return
        dict.__setitem__(self, key, value)


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
                 counts: list, state: defaultdict, group_index: int):
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
        self.param_addr = np.array([_address(p) for p in params], np.int64)
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
        self._empty = np.empty(0, self.dtype)
        self._grads: list = [None] * n            # gradients the address table was made for
        self._grad_addr = np.zeros(n, np.int64)
        self._copied = np.zeros(n, bool)          # gradients that needed a layout copy
        # The steady state of a training loop: every parameter has the same
        # gradient arrays as last step and the same step count.  Its kernel
        # arguments are cached in a _Steady and only the scalars are redone.
        self._steady: _Steady | None = None
        self._adopt(state)

    # -- state -----------------------------------------------------------------
    def _array(self, name: str) -> np.ndarray:
        arr = self.arrays[name]
        if arr is None:
            arr = self.arrays[name] = aligned_zeros(self.total, self.dtype)
        return arr

    def _view(self, name: str, i: int) -> np.ndarray:
        p = self.params[i]
        flat = self._array(name)[self.offsets[i]:self.offsets[i] + self.sizes[i]]
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

    def scalar_values(self, i: int) -> tuple:
        """Slot ``i``'s scalar state as Python floats."""
        return tuple([arr.item(i) for arr in self.scalar_arrays(bool(self.wide[i])).values()])

    def _flat_keys(self) -> set:
        return set(self.arrays) | set(self.sstate) | {"step"}

    def _adopt(self, state: defaultdict) -> None:
        """Move existing per-parameter state (loaded, or from a previous plan)
        into the flat arrays and replace it with views."""
        names = set(self.arrays)
        for i, p in enumerate(self.params):
            old = state.get(p, _EMPTY)
            if not old:
                continue
            new = ParamState()
            # loaded scalar state that is not float32 (cast to a float64
            # parameter's dtype, as torch casts it) stays wide from now on
            self.wide[i] = any(np.asarray(value).dtype != np.float32
                               for key, value in old.items() if key in self.sstate)
            for key, value in old.items():
                if key in self.sstate:
                    view = self._scalar_view(key, i)
                    view[...] = np.asarray(value).reshape(())
                    dict.__setitem__(new, key, view)
                elif key == "step" and self.spec.has_step:
                    view = self._scalar_view(key, i)
                    view[...] = np.float32(np.asarray(value).reshape(()))
                    dict.__setitem__(new, key, view)
                elif key in names and isinstance(value, np.ndarray):
                    view = self._view(key, i)
                    np.copyto(view, value.reshape(view.shape), casting="unsafe")
                    self.present[key][i] = True
                    dict.__setitem__(new, key, view)
                else:
                    dict.__setitem__(new, key, value)
            new._flat = self._flat_keys()
            new._owner = self
            self.initialized[i] = True
            state[p] = new

    def _init_param(self, i: int, group: Mapping, defaults: Mapping, state: defaultdict) -> None:
        new = ParamState()
        if self.spec.has_step:
            self.steps[i] = 0
            dict.__setitem__(new, "step", self._scalar_view("step", i))
        self.wide[i] = False
        for s in self.spec.scalar_state:
            self.sstate[s.name][i] = s.initial_value(group, defaults)
            dict.__setitem__(new, s.name, self._scalar_view(s.name, i))
        for s in self.spec.state:
            if s.wanted(group):
                # filled through the real view: a complex parameter's state
                # starts at v + v*1j, as torch's full_like(p, v) of its real view
                self._array(s.name)[self.offsets[i]:self.offsets[i] + self.sizes[i]].fill(
                    s.initial_value(group, defaults))
                view = self._view(s.name, i)
                self.present[s.name][i] = True
                dict.__setitem__(new, s.name, view)
        new._flat = self._flat_keys()
        new._owner = self
        if new:
            self.initialized[i] = True
            state[self.params[i]] = new

    def init_all(self, group: Mapping, defaults: Mapping, state: defaultdict) -> None:
        """Create the state of every parameter now (torch's Adagrad does it in
        its constructor)."""
        for i in np.flatnonzero(~self.initialized):
            self._init_param(int(i), group, defaults, state)
        self._steady = None

    # -- step --------------------------------------------------------------------
    def prepare(self, group: Mapping, defaults: Mapping, state: defaultdict) -> "StepWork | None":
        """Validate this step's gradients and return its work, changing nothing."""
        steady = self._steady
        if steady is not None and steady.matches(self, group):
            return steady
        grads = list(map(_GRAD, self.params))
        mask = np.fromiter((g is not None for g in grads), bool, len(grads))
        if not mask.any():
            return None
        hold = []
        sparse = []
        cached = self._grads
        for i, g in enumerate(grads):
            if g is None or (g is cached[i] and not self._copied[i]):
                continue
            if not isinstance(g, np.ndarray) and is_sparse_grad(g):
                update, work = self._check_sparse(i, g, group)
                if update is DENSIFY:
                    hold.append((i, work, grads[i]))
                else:
                    sparse.append((i, update, work))
                continue
            g = self._check_grad(i, g)
            hold.append((i, g, grads[i]))
        active = np.flatnonzero(mask)
        wanted = [s for s in self.spec.state if s.wanted(group)]
        needs_init = self.spec.has_step or bool(self.spec.scalar_state) or bool(wanted)
        fresh_slots = active[~self.initialized[active]] if needs_init else active[:0]
        if len(fresh_slots) != len(active):
            old = active[self.initialized[active]]
            for s in wanted:
                if not self.present[s.name][old].all():
                    raise KeyError(s.name)
        return StepWork(self, group, defaults, state, active, fresh_slots, hold, sparse)

    def _check_grad(self, i: int, g) -> np.ndarray:
        p = self.params[i]
        where = param_where(self.group_index, self.positions[i])
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{where}: grad must be a numpy array or None, got {type(g).__name__} "
                            "(sparse gradients are nbopt.SparseGrad objects)")
        if g.shape != p.shape:
            raise RuntimeError(
                f"{where}: grad has shape {g.shape} but the parameter has shape {p.shape}")
        if g.dtype != p.dtype:
            raise RuntimeError(
                f"{where}: grad has dtype {g.dtype} but the parameter has dtype {p.dtype}")
        if not _same_layout(p, g):
            g = _layout_copy(p, g)
        return g

    def _check_sparse(self, i: int, g, group: Mapping):
        """Validate sparse gradient ``g`` of slot ``i``; returns ``(DENSIFY,
        dense gradient)`` or ``(row update, gradient as a SparseGrad)``."""
        p = self.params[i]
        where = param_where(self.group_index, self.positions[i])
        g = as_sparse_grad(g)
        if g.shape != p.shape:
            raise RuntimeError(
                f"{where}: grad has shape {g.shape} but the parameter has shape {p.shape}")
        if g.dtype != p.dtype:
            raise RuntimeError(
                f"{where}: grad has dtype {g.dtype} but the parameter has dtype {p.dtype}")
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


class StepWork:
    """One group's validated step, ready to run."""

    __slots__ = ("fg", "group", "defaults", "state", "active", "fresh_slots", "hold", "sparse")

    def __init__(self, fg, group, defaults, state, active, fresh_slots, hold, sparse=()):
        self.fg, self.group, self.defaults, self.state = fg, group, defaults, state
        self.active, self.fresh_slots, self.hold = active, fresh_slots, hold
        self.sparse = sparse    # (slot, row update, SparseGrad)

    def run(self) -> None:
        fg, group = self.fg, self.group
        for i, g, original in self.hold:
            fg._grads[i] = original
            fg._copied[i] = g is not original
            fg._grad_addr[i] = _address(g)
        # keep layout copies alive until the kernel has read them
        keep = [g for _, g, original in self.hold if g is not original]  # noqa: F841
        for i in self.fresh_slots:
            fg._init_param(int(i), group, self.defaults, self.state)
        fresh = np.zeros(len(fg.params), bool)
        fresh[self.fresh_slots] = True
        spec = fg.spec
        flags = spec.flags(group)
        arrays = [fg.arrays[s.name] if fg.arrays[s.name] is not None else fg._empty
                  for s in spec.state]
        fg._steady = None
        is_sparse = np.zeros(len(fg.params), bool)
        updates = {}
        for i, update, grad in self.sparse:
            is_sparse[i] = True
            updates[i] = (update, grad)
        for r in range(fg.max_count):
            slots = self.active if r == 0 else self.active[fg.counts[self.active] > r]
            if len(slots) == 0:
                break
            fg.steps[slots] += np.float32(1)
            dense = slots[~is_sparse[slots]] if updates else slots
            if len(dense):
                segments, keys, slot_key = _segments(fg, dense, fresh)
                rows = []
                for k, (t, f, wide, *old) in enumerate(keys):
                    new = _advance(fg, group, t, old, dense[slot_key == k], wide)
                    rows.append(spec.scalars(group, t, f, tuple(old), new))
                scalars = np.array(rows, dtype=np.float64)[segments[:, 4]].astype(fg.dtype)
                seg = np.ascontiguousarray(segments[:, :4])
                kernel, chunks = _launch_shape(spec, seg)
                kernel(seg, chunks, scalars, *arrays, *flags)
                if kernel is spec.cpu[1]:
                    config.note_threading_layer()
            for i in slots[is_sparse[slots]] if updates else ():
                update, grad = updates[int(i)]
                update(fg.params[i], fg.state_views(int(i)), grad, group, float(fg.steps[i]))
        if (not updates and fg.max_count == 1 and len(keys) == 1
                and len(self.active) == len(fg.params) and not fg._copied.any()
                and not len(self.fresh_slots)):
            fg._steady = _Steady(fg, group, seg, chunks, kernel, arrays)


def _advance(fg: FlatGroup, group, t: float, old, slots, wide: bool) -> tuple:
    """Update the scalar state of ``slots`` (which share the values ``old`` and
    their width); stored in the dtype of torch's 0-d state tensors, which
    rounds them: float32, or float64 for wide slots."""
    if not fg.sstate:
        return ()
    arrays = fg.scalar_arrays(wide)
    new = fg.spec.advance(group, t, tuple(old), np.float64 if wide else np.float32)
    every = isinstance(slots, slice)       # the steady path: all slots
    first = 0 if every else slots[0]
    stored = []
    for arr, value in zip(arrays.values(), new):
        if every:
            arr.fill(value)
        else:
            arr[slots] = value
        stored.append(arr.item(first))     # as rounded by the state's dtype
    return tuple(stored)


def _launch_shape(spec: AlgorithmSpec, seg: np.ndarray):
    """The kernel (serial below the threshold, or under Numba's workqueue
    threading layer) and its chunk table."""
    if int(seg[:, 3].sum()) < config.PARALLEL_THRESHOLD or not config.parallel_allowed():
        chunks = np.zeros((len(seg), 3), np.int64)
        chunks[:, 0] = np.arange(len(seg))
        chunks[:, 2] = seg[:, 3]
        return spec.cpu[0], chunks
    return spec.cpu[1], _chunks(seg[:, 3], config.CHUNK_SIZE)


class _Steady:
    """Cached kernel arguments of a steady-state step (see FlatGroup._steady).

    Valid while the gradients are the same objects, every step count is equal
    (all parameters step together), the optional state the group wants is
    allocated for every parameter, and the config knobs are unchanged.
    """

    __slots__ = ("fg", "group", "seg", "chunks", "kernel", "arrays", "scalars", "present",
                 "knobs", "grad_ids", "epoch")

    def __init__(self, fg, group, seg, chunks, kernel, arrays):
        self.fg, self.group, self.seg, self.chunks = fg, group, seg, chunks
        # ids of the gradients this plan was made for; fg._grads holds the
        # arrays themselves, so an id cannot be reused while it is cached
        self.grad_ids = list(map(id, fg._grads))
        self.epoch = Parameter._grad_epoch
        self.kernel, self.arrays = kernel, arrays
        self.scalars = np.empty((len(seg), fg.spec.n_scalars), fg.dtype)
        self.present = {s.name: bool(fg.present[s.name].all()) for s in fg.spec.state}
        self.knobs = (config.PARALLEL_THRESHOLD, config.CHUNK_SIZE)

    def matches(self, fg, group) -> bool:
        epoch = Parameter._grad_epoch
        if epoch != self.epoch:
            # some .grad was assigned: compare ids in one C-level comparison
            if list(map(id, map(_GRAD, fg.params))) != self.grad_ids:
                return False
            self.epoch = epoch
        if self.group is not group or self.knobs != (config.PARALLEL_THRESHOLD,
                                                     config.CHUNK_SIZE):
            return False
        for s in fg.spec.state:
            if s.wanted(group) and not self.present[s.name]:
                return False   # the slow path allocates, or raises torch's KeyError
        return True

    def run(self) -> None:
        fg, group = self.fg, self.group
        # every step count is equal here: fill the incremented one (stored in
        # float32, which rounds it as torch's float32 ``step += 1`` does) instead
        # of a ufunc call (1 us)
        steps = fg.steps
        steps.fill(steps.item(0) + 1.0)
        t = steps.item(0)
        old = fg.scalar_values(0)
        new = _advance(fg, group, t, old, slice(None), bool(fg.wide[0])) if old else ()
        self.scalars[:] = fg.spec.scalars(group, t, False, old, new)
        self.kernel(self.seg, self.chunks, self.scalars, *self.arrays, *fg.spec.flags(group))


def _segments(fg: FlatGroup, slots: np.ndarray, fresh: np.ndarray):
    """Merge runs of slots that are contiguous in parameter, gradient and state
    memory and share their scalar key (step count, fresh flag, scalar state).

    Returns int64 ``(n_seg, 5)`` (param addr, grad addr, state offset, length,
    key index), the list of keys ``(t, fresh, wide, *scalar_state)`` and the key
    index of each slot.
    """
    pa = fg.param_addr[slots]
    ga = fg._grad_addr[slots]
    off = fg.offsets[slots]
    ln = fg.sizes[slots]
    nb = fg.nbytes[slots]
    wide = fg.wide[slots]
    columns = [fg.steps[slots].astype(np.float64), fresh[slots].astype(np.float64),
               wide.astype(np.float64)]
    if fg.sstate64 is None:
        columns += [arr[slots].astype(np.float64) for arr in fg.sstate.values()]
    else:
        columns += [np.where(wide, arr64[slots], arr[slots])
                    for arr, arr64 in zip(fg.sstate.values(), fg.sstate64.values())]
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
