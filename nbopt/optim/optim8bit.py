r"""8-bit optimizers: ``Adam8bit``, ``AdamW8bit``, ``SGD8bit``, ``RMSprop8bit``
and ``Adagrad8bit``, with bitsandbytes' (0.50.2) public names and arguments.

Each moment of a parameter with at least ``min_8bit_size`` elements (default
4096, as bitsandbytes) is kept block-wise quantized (see
:mod:`nbopt.kernels.quantized`): one byte per element plus a float32 absmax
per block of 256, about 2.03 bytes per parameter element for Adam instead of
8.  Smaller parameters keep float state of the parameter dtype.  The update
is the 32-bit algorithm's (torch's formula and rounding, the same compiled
element function as :class:`nbopt.Adam` etc.), applied to the decoded moments;
the new moments are then re-encoded, block by block, in the same pass.

Kernel calls: one per (param group, device, dtype) and step, whatever the
number of parameters (:class:`_Launch`): the kernel reads a table of the
parameters' addresses (parameter, gradient, codes or float state, absmax;
never a tuple of arrays) and a chunk table cut on block boundaries, so that
each block of 256 is encoded by one thread; the group's element count chooses
the serial or ``parallel=True`` build (``config.runs_parallel``).  The
tables are kept while nothing changes (:class:`_Plan`): a steady step
advances the step counts, computes the scalar rows and calls the kernel.

Devices: :class:`nbopt.DeviceParameter` s are stepped on their GPU by a CUDA
kernel that runs the same element functions and encoder (bit for bit the CPU
result), their state on the device; CPU and device parameters mix in one
optimizer.  See :mod:`nbopt.optim._optim8bit_cuda` (imported only when a
device parameter first steps).

State layout (per parameter; names as bitsandbytes')

``step``
    float32 0-d array, the parameter's step count (torch's convention).
``state1``, ``state2``
    The moments, shaped like the parameter: uint8 codes for quantized
    parameters, float arrays of the parameter dtype otherwise.  Adam:
    ``state1`` = ``exp_avg``, ``state2`` = ``exp_avg_sq``; SGD: ``state1`` =
    ``momentum_buffer``; RMSprop: ``state1`` = ``square_avg``; Adagrad:
    ``state1`` = ``sum``.
``absmax1``, ``absmax2``
    float32, one per block of 256 elements of the flattened state (quantized
    parameters only).
``qmap1``, ``qmap2``
    float32 (256,): the dynamic map the codes index (signed for first
    moments, unsigned for second moments; quantized parameters only).

For a device parameter ``state1``/``state2`` and ``absmax1``/``absmax2`` are
device arrays on its GPU; ``step`` and ``qmap1``/``qmap2`` are host arrays.
``state_dict()`` holds the live arrays (:func:`nbopt.save` writes host copies);
``load_state_dict`` copies what it loads (host or device arrays: a device
parameter's state is uploaded at its next step).

The element value is ``qmap[code] * absmax[i // 256]``.  A state dict holding
torch's 32-bit names (``exp_avg``, ``momentum_buffer``, ...: one saved by
:class:`nbopt.Adam` and friends, or by torch) loads into an 8-bit optimizer,
quantized at load; :func:`dequantize_state_dict` turns an 8-bit state dict
into torch's 32-bit layout, which loads into the 32-bit class.
"""
from __future__ import annotations

import numpy as np

from ..optimizer import Optimizer
from ..parameter import DeviceParameter, SparseGrad, is_device_array
from .. import config
from ._validation import check_beta, check_nonnegative

__all__ = ["Adam8bit", "AdamW8bit", "SGD8bit", "RMSprop8bit", "Adagrad8bit",
           "dequantize_state_dict"]

_QUANT_KEYS = ("absmax1", "absmax2", "qmap1", "qmap2")
_BLOCKSIZE = 256
# algorithm ids of nbopt.kernels.quantized's step kernels
_ADAM, _MOMENTUM, _RMSPROP, _ADAGRAD = 0, 1, 2, 3


class _Lazy:
    """The kernels modules, imported at the first step (``import nbopt``
    compiles and imports no kernels)."""

    def __getattr__(self, name):
        # called once per name: the value is then an attribute of this object
        from ..kernels import _common, adagrad, adam, quantized, rmsprop, sgd

        extra = {"to_scalar": _common.to_scalar, "all_equal": _common.all_equal,
                 "adam_host": adam.adam_host,
                 "adagrad_host": adagrad.adagrad_host, "rmsprop_host": rmsprop.rmsprop_host,
                 "sgd_host": sgd.sgd_host}
        value = extra[name] if name in extra else getattr(quantized, name)
        setattr(self, name, value)
        return value


Q = _Lazy()


def _device():
    """The device side (imports numba.cuda): called only for device parameters."""
    from . import _optim8bit_cuda

    return _optim8bit_cuda


def _to_host(v):
    from ..kernels._cuda import to_host

    return to_host(v)


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _where(gi, k):
    return f"param_groups[{gi}]['params'][{k}]"


def _next_step(step) -> float:
    """A step count plus one, as torch's float32 ``step += 1`` rounds it."""
    t = float(step) + 1.0
    if t > 16777216.0:
        t = float(np.float32(t))
    return t


class _Launch:
    """One kernel call per step for the parameters of one (param group,
    device, dtype): their step table and chunk table (see
    :mod:`nbopt.kernels.quantized`; device addresses for a GPU, uploaded
    when they change), kept by a :class:`_Plan` while nothing changes."""

    __slots__ = ("group", "device", "dtype", "params", "grads", "steps", "step_addr", "table",
                 "chunks", "chunk_size", "copies", "d_table", "d_chunks", "dirty")

    def __init__(self, opt, group, device, dtype, members, states):
        self.group, self.device, self.dtype = group, device, np.dtype(dtype)
        self.params = [p for p, _ in members]
        self.grads = [g for _, g in members]
        self.steps = [state["step"] for state in states]
        self.step_addr = None
        if all(s.dtype == np.float32 for s in self.steps):
            self.step_addr = np.array([_address(s) for s in self.steps], np.int64)
        two = opt._two
        address = _address if device is None else _device().address
        self.copies = []            # (contiguous copy, gradient): refreshed at each run
        rows = []
        for p, g, state in zip(self.params, self.grads, states):
            if device is None and not g.flags.c_contiguous:
                copy = np.ascontiguousarray(g)
                self.copies.append((copy, g))
                g = copy
            s1 = state["state1"]
            quant = np.dtype(s1.dtype) == np.uint8
            # without a second state its columns repeat the first's (never
            # read: empty views, but real addresses)
            a1 = address(state["absmax1"]) if quant else 0
            s1 = address(s1)
            rows.append((address(p), address(g), s1, a1,
                         address(state["state2"]) if two else s1,
                         address(state["absmax2"]) if quant and two else a1,
                         p.size, 0, int(quant)))
        self.table = np.array(rows, np.int64).reshape(-1, Q.TABLE_COLUMNS)
        self.chunks = self.chunk_size = self.d_table = self.d_chunks = None
        self.dirty = True

    def next_steps(self):
        """Every parameter's next step count (changing nothing)."""
        if self.step_addr is not None:
            ts = np.empty(len(self.steps))
            Q.next_steps(self.step_addr, ts)
            return ts
        return np.array([_next_step(s) for s in self.steps], np.float64)

    def call(self, opt, counts, scalars, index, flags) -> None:
        """Write the new step ``counts``, then one kernel call with the scalar
        table ``scalars`` and each parameter's row of it, ``index``."""
        if self.step_addr is not None:
            Q.write_steps(self.step_addr, np.asarray(counts, np.float64))
        else:
            for step, t in zip(self.steps, counts):
                step[...] = t
        column = self.table[:, Q.COL_ROW]
        if not np.array_equal(column, index):
            column[...] = index
            self.dirty = True
        for copy, g in self.copies:
            np.copyto(copy, g)
        two = opt._two
        signed = opt._signed if two else opt._signed * 2
        if self.device is not None:
            _device().run(self, scalars, opt._algo, two, flags, signed)
            return
        if self.chunks is None:
            self.chunks = Q.group_chunks(self.table, Q.BLOCKS_PER_CHUNK,
                                         Q.BLOCKS_PER_CHUNK * Q.BLOCKSIZE)
        m1, mid1, lut1 = Q.tables(signed[0])
        m2, mid2, lut2 = Q.tables(signed[1])
        total = int(self.table[:, Q.COL_N].sum())
        kernel = Q.step8_group_cpu[1 if config.runs_parallel(total) else 0]
        f0, f1, f2 = flags
        kernel(self.table, self.chunks, scalars, scalars[0], m1, mid1, lut1, m2, mid2, lut2,
               opt._algo, two, f0, f1, f2, not signed[0], two and not signed[1], Q.BLOCKSIZE)

    def accepts(self, p, g) -> bool:
        """Whether a steady step can read the new gradient ``g`` of ``p`` in
        place (else the general path validates it, and raises)."""
        if self.device is not None:
            return _device().grad_ok(p, g)
        return (isinstance(g, np.ndarray) and g.shape == p.shape and g.dtype == p.dtype
                and g.flags.c_contiguous)


class _Plan:
    """The launches of the last step, valid while the state mapping has not
    been edited (its version), the param groups hold the same parameters and
    each has the same gradient (or a new dense one the kernel reads in place:
    its address is patched into the table).  Not pickled or copied (the
    optimizer's ``__getstate__`` leaves it out)."""

    __slots__ = ("state", "version", "launches", "groups", "skipped", "epoch")

    @staticmethod
    def make(opt, launches):
        from ..engine import OptimizerState
        from ..parameter import Parameter

        if type(opt.state) is not OptimizerState:
            return None
        plan = _Plan()
        plan.state, plan.version = opt.state, opt.state.version
        plan.launches = launches
        plan.groups = [(group, list(group["params"])) for group in opt.param_groups]
        plan.skipped = [p for _, params in plan.groups for p in params if p.grad is None]
        plan.epoch = Parameter._grad_epoch
        return plan

    def ready(self, opt) -> bool:
        from ..parameter import Parameter

        state = opt.state
        if state is not self.state or state.version != self.version:
            return False
        groups = opt.param_groups
        if len(groups) != len(self.groups):
            return False
        for group, (known, params) in zip(groups, self.groups):
            now = group["params"]
            if group is not known or len(now) != len(params) \
                    or not all(map(_is, now, params)):
                return False
        epoch = Parameter._grad_epoch
        if epoch == self.epoch:
            return True
        # some .grad was assigned since: the same arrays, or new dense ones
        if any(p.grad is not None for p in self.skipped):
            return False
        patches = []
        for launch in self.launches:
            for i, (p, old) in enumerate(zip(launch.params, launch.grads)):
                g = p.grad
                if g is not old:
                    if g is None or any(copy_of is old for _, copy_of in launch.copies) \
                            or not launch.accepts(p, g):
                        return False
                    patches.append((launch, i, g))
        for launch, i, g in patches:
            launch.grads[i] = g
            launch.table[i, Q.COL_GRAD] = (_address(g) if launch.device is None
                                           else _device().address(g))
            launch.dirty = True
        self.epoch = epoch
        return True


_is = __import__("operator").is_


class _Optimizer8bit(Optimizer):
    """Shared machinery: state creation, validation, the kernel calls, and
    the state_dict conversions."""

    _algo: int = _ADAM
    #: torch's names of state1 (and state2), and whether each is signed
    _torch_names: tuple = ("exp_avg", "exp_avg_sq")
    _signed: tuple = (True, False)

    # -- hooks for the subclasses ------------------------------------------------
    def _scalars(self, group, t, fresh):
        raise NotImplementedError

    def _flags(self, group):
        raise NotImplementedError

    def _init_value(self, group):
        return 0.0

    @property
    def _two(self):
        return len(self._torch_names) == 2

    # -- state -------------------------------------------------------------------
    def _new_state(self, p, group):
        n = p.size
        state = {"step": np.array(0.0, np.float32)}
        init = self._init_value(group)
        device = _device() if isinstance(p, DeviceParameter) else None
        for j in range(len(self._torch_names)):
            k = str(j + 1)
            if n >= group["min_8bit_size"]:
                # a constant state without a float temporary: every code is
                # 0's (absmax 0) or 1.0's (absmax = the constant)
                qmap = Q.tables(self._signed[j])[0]
                code = 255 if init != 0 else int(np.searchsorted(qmap, 0.0))
                if device is None:
                    state["state" + k] = np.full(p.shape, code, np.uint8)
                    state["absmax" + k] = np.full(Q.n_blocks(n), init, np.float32)
                else:
                    state["state" + k] = device.new_array(p, np.uint8, p.shape, code)
                    state["absmax" + k] = device.new_array(p, np.float32, (Q.n_blocks(n),), init)
                state["qmap" + k] = qmap        # shared, read-only
            elif device is None:
                state["state" + k] = np.full(p.shape, init, p.dtype)
            else:
                state["state" + k] = device.new_array(p, p.dtype, p.shape, init)
        return state

    def _check_state(self, p, state, where):
        """Raise before anything changes when a parameter's state cannot be
        stepped (a user edit, a bad load).  The state of a device parameter
        may hold device arrays on its GPU or host arrays (uploaded at the
        step); a CPU parameter's, host arrays only."""
        for key in ["step"] + ["state" + str(j + 1) for j in range(len(self._torch_names))]:
            if key not in state:
                raise KeyError(f"{type(self).__name__}: state of {where} has no {key!r}")
        name = type(self).__name__
        on_device = isinstance(p, DeviceParameter)
        step = state["step"]
        if not isinstance(step, np.ndarray) or step.size != 1 or step.dtype.kind != "f" \
                or not step.flags.writeable:
            raise ValueError(f"{name}: step of {where} must be a writeable 1-element float "
                             "array (torch's 0-d float32 step)")

        def array(key):
            """``(shape, dtype, usable)`` of state entry ``key``, or None."""
            v = state.get(key)
            if isinstance(v, np.ndarray):
                # a host array of a device parameter is copied at the step
                return v.shape, v.dtype, on_device or (v.flags.c_contiguous
                                                       and v.flags.writeable)
            if on_device and is_device_array(v):
                shape, dtype, c_contiguous, device = _device().describe(v)
                if device != p.device_index:
                    raise ValueError(f"{name}: {key} of {where} is on cuda:{device}, the "
                                     f"parameter on {p.device}")
                return shape, dtype, c_contiguous
            return None

        kinds = set()
        for j in range(len(self._torch_names)):
            got = array("state" + str(j + 1))
            if got is not None:
                kinds.add(got[1] == np.uint8)
        if len(kinds) > 1:
            raise ValueError(f"{name}: the states of {where} must be all quantized (uint8) or "
                             "all float")
        for j in range(len(self._torch_names)):
            k = str(j + 1)
            got = array("state" + k)
            if got is None or tuple(got[0]) != tuple(p.shape):
                raise ValueError(f"{name}: state{k} of {where} must be an array "
                                 f"of the parameter's shape {p.shape}")
            if not got[2]:
                raise ValueError(f"{name}: state{k} of {where} must be C-contiguous and "
                                 "writeable")
            if got[1] == np.uint8:
                a, m = array("absmax" + k), state.get("qmap" + k)
                if a is None or a[1] != np.float32 or tuple(a[0]) != (Q.n_blocks(p.size),) \
                        or not a[2]:
                    raise ValueError(f"{name}: absmax{k} of {where} must be writeable "
                                     f"float32 of shape ({Q.n_blocks(p.size)},) (one per block "
                                     f"of {Q.BLOCKSIZE})")
                shared = Q.tables(self._signed[j])[0]
                if m is shared:
                    continue
                if not isinstance(m, np.ndarray) and is_device_array(m):
                    m = _to_host(m)
                if not isinstance(m, np.ndarray) or m.shape != (256,) \
                        or not np.array_equal(m, shared):
                    raise ValueError(f"{type(self).__name__}: qmap{k} of {where} must be the "
                                     f"{'signed' if self._signed[j] else 'unsigned'} dynamic map")
                state["qmap" + k] = shared     # equal: the shared read-only map
            elif got[1] != p.dtype:
                raise ValueError(f"{type(self).__name__}: state{k} of {where} must be uint8 "
                                 f"(quantized) or {p.dtype}, got {got[1]}")

    # -- step --------------------------------------------------------------------
    def step(self, closure=None):
        """Perform a single optimization step (``closure`` as torch's).

        Each (param group, device, dtype) is one kernel call over all its
        parameters, quantized and float-state ones (:class:`_Launch`).  The
        first step, and any step after a change, validates everything before
        anything changes; a step that finds nothing changed since the last
        (:class:`_Plan`) reuses its tables."""
        loss = None
        if closure is not None:
            loss = closure()
        plan = self.__dict__.get("_plan8")
        if plan is not None and plan.ready(self):
            # everything that can raise first: the scalars of every launch
            work = []
            for launch in plan.launches:
                counts = launch.next_steps()
                work.append((launch, counts,
                             *self._scalar_table(launch.group, launch.dtype, counts, None)))
            for launch, counts, scalars, index, flags in work:
                launch.call(self, counts, scalars, index, flags)
            return loss
        self._plan8 = None
        buckets = []
        name = type(self).__name__
        for gi, group in enumerate(self.param_groups):
            mine = {}
            for k, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                where = _where(gi, k)
                if p.dtype not in (np.float32, np.float64):
                    raise TypeError(f"{where}: {name} can only optimize float32 and float64 "
                                    f"parameters, got dtype {p.dtype}")
                if isinstance(g, SparseGrad):
                    raise RuntimeError(f"{name} does not support sparse gradients")
                if isinstance(p, DeviceParameter):
                    if not p.flags.c_contiguous:
                        raise ValueError(f"{where}: {name} needs a C-contiguous parameter")
                    _device().check_grad(where, p, g)
                    device = p.device_index
                else:
                    if not p.flags.c_contiguous or not p.flags.writeable:
                        raise ValueError(f"{where}: {name} needs a C-contiguous, writeable "
                                         "parameter")
                    if not isinstance(g, np.ndarray) or g.shape != p.shape \
                            or g.dtype != p.dtype:
                        raise ValueError(f"{where}: the gradient must be an array of the "
                                         f"parameter's shape {p.shape} and dtype {p.dtype}")
                    device = None
                state = self.state.get(p)
                if state:
                    self._check_state(p, state, where)
                mine.setdefault((device, p.dtype), []).append((p, g))
            for (device, dtype), members in mine.items():
                # the step counts and scalars too, before anything changes
                fresh = [not self.state.get(p) for p, _ in members]
                counts = [1.0 if f else _next_step(self.state[p]["step"])
                          for (p, _), f in zip(members, fresh)]
                buckets.append((group, device, dtype, members, fresh, counts,
                                *self._scalar_table(group, dtype, counts, fresh)))
        # validated: from here on things change
        launches = []
        for group, device, dtype, members, fresh, counts, scalars, index, flags in buckets:
            states = []
            for (p, _), is_fresh in zip(members, fresh):
                state = self._own_entry(p)
                if is_fresh:
                    state.update(self._new_state(p, group))
                elif device is not None:
                    _device().upload(p, state)
                states.append(state)
            launch = _Launch(self, group, device, dtype, members, states)
            launch.call(self, counts, scalars, index, flags)
            launches.append(launch)
        self._plan8 = _Plan.make(self, launches)
        return loss

    def _scalar_table(self, group, dtype, counts, fresh):
        """``(scalars, index, flags)`` of one launch: one row of scalars per
        distinct ``(step count, fresh)`` (the float64 host maths, rounded to
        ``dtype``), each parameter's row, and the algorithm's flags."""
        if fresh is None:           # a steady step: no state was just made
            if Q.all_equal(counts):
                rows = [self._scalars(group, float(counts[0]), False)]
                index = np.zeros(len(counts), np.int64)
            else:
                uniq, index = np.unique(counts, return_inverse=True)
                rows = [self._scalars(group, float(t), False) for t in uniq]
        else:
            keys = {}
            rows = []
            index = np.empty(len(counts), np.int64)
            for i, (t, is_fresh) in enumerate(zip(counts, fresh)):
                row = keys.get((t, is_fresh))
                if row is None:
                    row = keys[(t, is_fresh)] = len(rows)
                    rows.append(self._scalars(group, t, is_fresh))
                index[i] = row
        scalars = np.zeros((len(rows), Q.N_SCALARS), dtype)
        for i, vals in enumerate(rows):
            scalars[i, :len(vals)] = vals
        scalars[:, -1] = 1
        return scalars, index, self._flags(group)

    def _own_entry(self, p):
        """``state[p]``, as an entry of this optimizer's state that counts its
        edits (a loaded or assigned plain dict is copied into one, as the
        element-wise engine adopts them), so that a cached plan sees them."""
        from ..engine import OptimizerState, ParamState

        home = self.state
        state = home[p]
        if type(home) is OptimizerState and not (type(state) is ParamState
                                                 and state._home is home
                                                 and state._param is p):
            own = ParamState()
            dict.update(own, state)
            own.adopt(home, p)
            state = own
        return state

    # -- checkpoints -------------------------------------------------------------
    @staticmethod
    def _cast(param, value, key=None):
        # quantized codes, absmax and maps keep their dtypes; float state takes
        # the parameter's (torch's policy).  Every array is a copy (the state
        # is stepped in place: it must not alias the loaded dict, say another
        # optimizer's live state).  Device arrays (a device optimizer's live
        # state dict) are loaded as host copies, uploaded to a device
        # parameter's GPU at its next step.
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(v, np.ndarray) and is_device_array(v):
                    v = _to_host(v)
                elif isinstance(v, np.ndarray):
                    v = v.copy()
                if isinstance(v, np.ndarray) and (k in _QUANT_KEYS or v.dtype == np.uint8):
                    out[k] = v
                else:
                    out[k] = Optimizer._cast(param, v, key=k)
            return out
        return Optimizer._cast(param, value, key)

    def _check_loaded_state(self, param, value, where, group):
        self._check_state(param, value, where)

    def load_state_dict(self, state_dict):
        """Load a state dict of this class, or torch's 32-bit layout of the
        same algorithm (``exp_avg``/``exp_avg_sq``, ``momentum_buffer``,
        ``square_avg``, ``sum``), quantized at load for parameters of at least
        ``min_8bit_size`` elements.  Validated before anything changes; every
        array is copied (device arrays to the host; a device parameter's
        state goes to its GPU at its next step)."""
        state_dict = dict(state_dict)
        saved_state = state_dict.get("state")
        groups = state_dict.get("param_groups")
        if isinstance(saved_state, dict) and isinstance(groups, (list, tuple)) \
                and len(groups) == len(self.param_groups):
            converted = dict(saved_state)
            for g, mine in zip(groups, self.param_groups):
                if not isinstance(g, dict) or len(g.get("params", ())) != len(mine["params"]):
                    break       # the base class reports it
                size = g.get("min_8bit_size", self.defaults["min_8bit_size"])
                for pid, p in zip(g["params"], mine["params"]):
                    entry = saved_state.get(pid)
                    if isinstance(entry, dict) and self._torch_names[0] in entry:
                        converted[pid] = self._from_torch(entry, p, size)
            state_dict["state"] = converted
        super().load_state_dict(state_dict)
        self._plan8 = None

    def _from_torch(self, entry, p, min_size):
        out = {"step": np.array(np.asarray(entry.get("step", 0.0), np.float32).reshape(()))}
        for j, tname in enumerate(self._torch_names):
            k = str(j + 1)
            v = entry.get(tname)
            if not isinstance(v, np.ndarray) and is_device_array(v):
                v = _to_host(v)
            if not isinstance(v, np.ndarray) or v.shape != p.shape \
                    or v.dtype.kind != "f":
                raise ValueError(f"{type(self).__name__}: loaded {tname!r} must be a float "
                                 f"array of the parameter's shape {p.shape}")
            if p.size >= min_size:
                q, a = Q.quantize_blockwise(v, self._signed[j])
                out["state" + k], out["absmax" + k] = q, a
                out["qmap" + k] = Q.tables(self._signed[j])[0]
            else:
                out["state" + k] = v.astype(p.dtype)
        return out


def dequantize_state_dict(state_dict, names=("exp_avg", "exp_avg_sq")):
    """An 8-bit optimizer's state dict in torch's 32-bit layout: each
    ``stateN`` becomes ``names[N-1]`` (float32, the parameter's shape; float
    state is kept as is), ``absmaxN`` and ``qmapN`` go.  The result loads into
    the 32-bit class (``nbopt.Adam``: the default names; ``("momentum_buffer",)``
    for SGD, ``("square_avg",)`` for RMSprop, ``("sum",)`` for Adagrad).  The
    state of device parameters is copied to the host."""
    state = {}
    for pid, entry in state_dict["state"].items():
        new = {k: v for k, v in entry.items()
               if k not in _QUANT_KEYS and not k.startswith("state")}
        for j, name in enumerate(names):
            k = str(j + 1)
            s, a = entry["state" + k], entry.get("absmax" + k)
            s, a = (_to_host(x) if not isinstance(x, np.ndarray) and is_device_array(x) else x
                    for x in (s, a))
            if s.dtype == np.uint8:
                s = Q.dequantize_blockwise(s, a, entry["qmap" + k])
            new[name] = np.array(s, copy=True)
        state[pid] = new
    groups = [dict(g) for g in state_dict["param_groups"]]
    return {"state": state, "param_groups": groups}


def _compat(name, optim_bits, allowed, args, is_paged=False):
    if optim_bits not in allowed:
        raise ValueError(f"{name} only supports optim_bits={allowed[0]} (default value for "
                         "compatibility)")
    if args is not None:
        raise ValueError(f"{name}: 'args' (bitsandbytes' GlobalOptimManager overrides) is not "
                         "supported")
    if is_paged:
        raise ValueError(f"{name}: paged optimizers (is_paged=True) are not supported")


def _check_min_size(min_8bit_size):
    if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, (int, np.integer)) \
            or min_8bit_size < 0:
        raise ValueError(f"Invalid min_8bit_size: {min_8bit_size!r} (a non-negative integer)")
    return int(min_8bit_size)


class Adam8bit(_Optimizer8bit):
    r"""Adam with 8-bit block-wise quantized moments (bitsandbytes' ``Adam8bit``).

    The update is :class:`nbopt.Adam`'s (torch's formula), on ``exp_avg``
    decoded from the signed dynamic map and ``exp_avg_sq`` from the unsigned
    one, 256 elements per block (see :mod:`nbopt.optim.optim8bit` for the
    state layout).

    Parameters
    ----------
    params : iterable
        Parameters or dicts defining parameter groups.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
        L2 penalty, as torch's Adam (bitsandbytes' Adam8bit decays the
        weights directly: pass ``decoupled_weight_decay=True`` for that).
    amsgrad : bool, default False
        Must be False (as bitsandbytes).
    optim_bits : int, default 32
        Accepted for bitsandbytes compatibility (32 or 8); the state is 8-bit.
    args : None
        bitsandbytes' per-parameter overrides: not supported, must be None.
    min_8bit_size : int, default 4096
        Parameters with fewer elements keep float state.
    is_paged : bool, default False
        Must be False.
    maximize : bool, default False
    decoupled_weight_decay : bool, default False
        AdamW's decay (``p *= 1 - lr * weight_decay``).

    State
    -----
    ``step``, ``state1``/``absmax1``/``qmap1`` (exp_avg), ``state2``/
    ``absmax2``/``qmap2`` (exp_avg_sq); ``state1``/``state2`` float for small
    parameters.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.linspace(-1, 1, 8192, dtype=np.float32))
    >>> opt = nbopt.Adam8bit([w], lr=0.1)
    >>> w.grad = 2 * w
    >>> opt.step()
    >>> opt.state[w]["state1"].dtype, opt.state[w]["absmax1"].shape
    (dtype('uint8'), (32,))

    References
    ----------
    Dettmers et al., "8-bit Optimizers via Block-wise Quantization", ICLR 2022.
    """

    _algo = _ADAM
    _torch_names = ("exp_avg", "exp_avg_sq")
    _signed = (True, False)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, optim_bits=32, args=None, min_8bit_size=4096, is_paged=False,
                 *, maximize=False, decoupled_weight_decay=False):
        name = type(self).__name__
        if amsgrad:
            raise ValueError(f"{name} does not support amsgrad=True")
        _compat(name, optim_bits, (32, 8), args, is_paged)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(eps, "epsilon value")
        check_beta(betas[0], 0)
        check_beta(betas[1], 1)
        check_nonnegative(weight_decay, "weight_decay value")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": False, "maximize": maximize,
                    "decoupled_weight_decay": decoupled_weight_decay,
                    "min_8bit_size": _check_min_size(min_8bit_size)}
        super().__init__(params, defaults)

    def _scalars(self, group, t, fresh):
        b1, b2 = group["betas"]
        lr = float(Q.to_scalar(group["lr"]))
        return Q.adam_host(lr, float(b1), float(b2), float(group["weight_decay"]),
                           float(group["eps"]), t)

    def _flags(self, group):
        return (bool(group["maximize"]), bool(group["decoupled_weight_decay"]),
                group["weight_decay"] != 0)


class AdamW8bit(Adam8bit):
    r"""AdamW with 8-bit block-wise quantized moments (bitsandbytes'
    ``AdamW8bit``): :class:`Adam8bit` with decoupled weight decay, default
    ``weight_decay=1e-2``.

    Parameters
    ----------
    params, lr, betas, eps, amsgrad, optim_bits, args, min_8bit_size, is_paged, maximize
        As for :class:`Adam8bit`.
    weight_decay : float, default 1e-2
        Decoupled weight decay.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.ones(8192, np.float32))
    >>> opt = nbopt.AdamW8bit([w], lr=0.1, weight_decay=0.1)
    >>> w.grad = np.zeros_like(w)
    >>> opt.step()
    >>> round(float(w[0]), 4)
    0.99
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, optim_bits=32, args=None, min_8bit_size=4096, is_paged=False,
                 *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, optim_bits, args,
                         min_8bit_size, is_paged, maximize=maximize,
                         decoupled_weight_decay=True)


class SGD8bit(_Optimizer8bit):
    r"""SGD with an 8-bit block-wise quantized momentum buffer (bitsandbytes'
    ``SGD8bit``; signed dynamic map).  The update is :class:`nbopt.SGD`'s
    (dampening and Nesterov included); momentum must be non-zero.

    Parameters
    ----------
    params : iterable
    lr : float
        Required, as bitsandbytes.
    momentum : float, default 0
        Must be > 0 (bitsandbytes: "SGD without momentum is not supported!").
    dampening, weight_decay, nesterov, maximize
        As for :class:`nbopt.SGD`.
    args : None
    min_8bit_size : int, default 4096

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.ones(8192, np.float32))
    >>> opt = nbopt.SGD8bit([w], lr=0.1, momentum=0.9)
    >>> w.grad = np.ones_like(w)
    >>> opt.step()
    >>> round(float(w[0]), 4)
    0.9
    """

    _algo = _MOMENTUM
    _torch_names = ("momentum_buffer",)
    _signed = (True,)

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 args=None, min_8bit_size=4096, *, maximize=False):
        if momentum == 0:
            raise NotImplementedError("SGD without momentum is not supported!")
        _compat("SGD8bit", 8, (8,), args)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(momentum, "momentum value")
        check_nonnegative(weight_decay, "weight_decay value")
        if nesterov and dampening != 0:
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "min_8bit_size": _check_min_size(min_8bit_size)}
        super().__init__(params, defaults)

    def _scalars(self, group, t, fresh):
        lr = float(Q.to_scalar(group["lr"]))
        return Q.sgd_host(lr, float(group["momentum"]), float(group["dampening"]),
                          float(group["weight_decay"]), fresh)

    def _flags(self, group):
        return (bool(group["maximize"]), group["weight_decay"] != 0, bool(group["nesterov"]))


class RMSprop8bit(_Optimizer8bit):
    r"""RMSprop with an 8-bit block-wise quantized ``square_avg`` (bitsandbytes'
    ``RMSprop8bit``; unsigned dynamic map).  The update is
    :class:`nbopt.RMSprop`'s without momentum and centering, which
    bitsandbytes refuses too.

    Parameters
    ----------
    params : iterable
    lr : float, default 1e-2
    alpha : float, default 0.99
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
        Must be 0.
    centered : bool, default False
        Must be False.
    args : None
    min_8bit_size : int, default 4096
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.ones(8192, np.float32))
    >>> opt = nbopt.RMSprop8bit([w], lr=0.01)
    >>> w.grad = np.ones_like(w)
    >>> opt.step()
    >>> round(float(w[0]), 4)
    0.9
    """

    _algo = _RMSPROP
    _torch_names = ("square_avg",)
    _signed = (False,)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, args=None, min_8bit_size=4096, *, maximize=False):
        if alpha == 0:
            raise NotImplementedError("RMSprop with alpha==0.0 is not supported!")
        if centered:
            raise NotImplementedError("Centered RMSprop is not supported!")
        if momentum != 0:
            raise NotImplementedError("RMSprop8bit with momentum is not supported")
        _compat("RMSprop8bit", 8, (8,), args)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(eps, "epsilon value")
        check_nonnegative(weight_decay, "weight_decay value")
        check_nonnegative(alpha, "alpha value")
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                    "momentum": 0, "centered": False, "maximize": maximize,
                    "min_8bit_size": _check_min_size(min_8bit_size)}
        super().__init__(params, defaults)

    def _scalars(self, group, t, fresh):
        lr = float(Q.to_scalar(group["lr"]))
        return Q.rmsprop_host(lr, float(group["alpha"]), float(group["eps"]),
                              float(group["weight_decay"]), 0.0)

    def _flags(self, group):
        return (bool(group["maximize"]), group["weight_decay"] != 0, False)


class Adagrad8bit(_Optimizer8bit):
    r"""Adagrad with an 8-bit block-wise quantized ``sum`` (bitsandbytes'
    ``Adagrad8bit``; unsigned dynamic map).  The update is
    :class:`nbopt.Adagrad`'s, ``lr_decay`` and ``initial_accumulator_value``
    included (bitsandbytes refuses non-zero values).

    Parameters
    ----------
    params : iterable
    lr : float, default 1e-2
    lr_decay, weight_decay, initial_accumulator_value : float, default 0
    eps : float, default 1e-10
    optim_bits : int, default 8
        Must be 8.
    args : None
    min_8bit_size : int, default 4096
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.ones(8192, np.float32))
    >>> opt = nbopt.Adagrad8bit([w], lr=0.1)
    >>> w.grad = np.ones_like(w)
    >>> opt.step()
    >>> round(float(w[0]), 4)
    0.9
    """

    _algo = _ADAGRAD
    _torch_names = ("sum",)
    _signed = (False,)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, optim_bits=8, args=None, min_8bit_size=4096, *, maximize=False):
        _compat("Adagrad8bit", optim_bits, (8,), args)
        check_nonnegative(lr, "learning rate")
        check_nonnegative(lr_decay, "lr_decay value")
        check_nonnegative(weight_decay, "weight_decay value")
        check_nonnegative(initial_accumulator_value, "initial_accumulator_value value")
        check_nonnegative(eps, "epsilon value")
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value,
                    "maximize": maximize, "min_8bit_size": _check_min_size(min_8bit_size)}
        super().__init__(params, defaults)

    def _init_value(self, group):
        return float(group["initial_accumulator_value"])

    def _scalars(self, group, t, fresh):
        lr = float(Q.to_scalar(group["lr"]))
        return Q.adagrad_host(lr, float(group["lr_decay"]), float(group["eps"]),
                              float(group["weight_decay"]), t)

    def _flags(self, group):
        return (bool(group["maximize"]), group["weight_decay"] != 0, False)
