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

The element value is ``qmap[code] * absmax[i // 256]``.  A state dict holding
torch's 32-bit names (``exp_avg``, ``momentum_buffer``, ...: one saved by
:class:`nbopt.Adam` and friends, or by torch) loads into an 8-bit optimizer,
quantized at load; :func:`dequantize_state_dict` turns an 8-bit state dict
into torch's 32-bit layout, which loads into the 32-bit class.
"""
from __future__ import annotations

import numpy as np

from ..optimizer import Optimizer
from ..parameter import DeviceParameter, SparseGrad
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

        extra = {"to_scalar": _common.to_scalar, "adam_host": adam.adam_host,
                 "adagrad_host": adagrad.adagrad_host, "rmsprop_host": rmsprop.rmsprop_host,
                 "sgd_host": sgd.sgd_host}
        value = extra[name] if name in extra else getattr(quantized, name)
        setattr(self, name, value)
        return value


Q = _Lazy()


def _where(gi, k):
    return f"param_groups[{gi}]['params'][{k}]"


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
        for j in range(len(self._torch_names)):
            k = str(j + 1)
            if n >= group["min_8bit_size"]:
                # a constant state without a float temporary: every code is
                # 0's (absmax 0) or 1.0's (absmax = the constant)
                qmap = Q.tables(self._signed[j])[0]
                code = 255 if init != 0 else int(np.searchsorted(qmap, 0.0))
                state["state" + k] = np.full(p.shape, code, np.uint8)
                state["absmax" + k] = np.full(Q.n_blocks(n), init, np.float32)
                state["qmap" + k] = qmap        # shared, read-only
            else:
                state["state" + k] = np.full(p.shape, init, p.dtype)
        return state

    def _check_state(self, p, state, where):
        """Raise before anything changes when a parameter's state cannot be
        stepped (a user edit, a bad load)."""
        for key in ["step"] + ["state" + str(j + 1) for j in range(len(self._torch_names))]:
            if key not in state:
                raise KeyError(f"{type(self).__name__}: state of {where} has no {key!r}")
        name = type(self).__name__
        step = state["step"]
        if not isinstance(step, np.ndarray) or step.size != 1 or step.dtype.kind != "f" \
                or not step.flags.writeable:
            raise ValueError(f"{name}: step of {where} must be a writeable 1-element float "
                             "array (torch's 0-d float32 step)")
        kinds = {state["state" + str(j + 1)].dtype == np.uint8
                 for j in range(len(self._torch_names))
                 if isinstance(state["state" + str(j + 1)], np.ndarray)}
        if len(kinds) > 1:
            raise ValueError(f"{name}: the states of {where} must be all quantized (uint8) or "
                             "all float")
        for j in range(len(self._torch_names)):
            k = str(j + 1)
            s = state["state" + k]
            if not isinstance(s, np.ndarray) or s.shape != p.shape:
                raise ValueError(f"{name}: state{k} of {where} must be an array "
                                 f"of the parameter's shape {p.shape}")
            if not s.flags.c_contiguous or not s.flags.writeable:
                raise ValueError(f"{name}: state{k} of {where} must be C-contiguous and "
                                 "writeable")
            if s.dtype == np.uint8:
                a, m = state.get("absmax" + k), state.get("qmap" + k)
                if not isinstance(a, np.ndarray) or a.dtype != np.float32 \
                        or a.shape != (Q.n_blocks(p.size),) or not a.flags.writeable:
                    raise ValueError(f"{name}: absmax{k} of {where} must be writeable "
                                     f"float32 of shape ({Q.n_blocks(p.size)},) (one per block "
                                     f"of {Q.BLOCKSIZE})")
                shared = Q.tables(self._signed[j])[0]
                if m is shared:
                    continue
                if not isinstance(m, np.ndarray) or m.shape != (256,) \
                        or not np.array_equal(m, shared):
                    raise ValueError(f"{type(self).__name__}: qmap{k} of {where} must be the "
                                     f"{'signed' if self._signed[j] else 'unsigned'} dynamic map")
                state["qmap" + k] = shared     # equal: the shared read-only map
            elif s.dtype != p.dtype:
                raise ValueError(f"{type(self).__name__}: state{k} of {where} must be uint8 "
                                 f"(quantized) or {p.dtype}, got {s.dtype}")

    # -- step --------------------------------------------------------------------
    def step(self, closure=None):
        """Perform a single optimization step (``closure`` as torch's)."""
        loss = None
        if closure is not None:
            loss = closure()
        work = []
        name = type(self).__name__
        for gi, group in enumerate(self.param_groups):
            for k, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                where = _where(gi, k)
                if isinstance(p, DeviceParameter):
                    raise NotImplementedError(
                        f"{name}: {where} is a device (GPU) parameter; the 8-bit optimizers "
                        "have CPU kernels only")
                if p.dtype not in (np.float32, np.float64):
                    raise TypeError(f"{where}: {name} can only optimize float32 and float64 "
                                    f"parameters, got dtype {p.dtype}")
                if not p.flags.c_contiguous or not p.flags.writeable:
                    raise ValueError(f"{where}: {name} needs a C-contiguous, writeable parameter")
                g = p.grad
                if isinstance(g, SparseGrad):
                    raise RuntimeError(f"{name} does not support sparse gradients")
                if not isinstance(g, np.ndarray) or g.shape != p.shape or g.dtype != p.dtype:
                    raise ValueError(f"{where}: the gradient must be an array of the "
                                     f"parameter's shape {p.shape} and dtype {p.dtype}")
                state = self.state.get(p)
                if state:
                    self._check_state(p, state, where)
                work.append((group, p, g))
        for group, p, g in work:
            state = self.state[p]
            fresh = not state
            if fresh:
                state.update(self._new_state(p, group))
            step = state["step"]
            t = float(step) + 1.0
            if t > 16777216.0:
                t = float(np.float32(t))
            step[...] = t
            row = np.empty(Q.N_SCALARS, p.dtype)
            vals = self._scalars(group, t, fresh)
            row[:len(vals)] = vals
            row[len(vals):] = 0
            row[-1] = 1
            f0, f1, f2 = self._flags(group)
            pf = p.reshape(-1)
            gf = np.ascontiguousarray(g).reshape(-1)
            s1 = state["state1"].reshape(-1)
            two = self._two
            if s1.dtype == np.uint8:
                m1, mid1, lut1 = Q.tables(self._signed[0])
                if two:
                    m2, mid2, lut2 = Q.tables(self._signed[1])
                    q2, a2 = state["state2"].reshape(-1), state["absmax2"]
                else:
                    m2, mid2, lut2, q2, a2 = m1, mid1, lut1, s1[:0], state["absmax1"][:0]
                kernel = Q.step8_cpu[1 if config.runs_parallel(pf.size) else 0]
                kernel(pf, gf, s1, state["absmax1"], m1, mid1, lut1, q2, a2, m2, mid2, lut2,
                       row, self._algo, two, f0, f1, f2, not self._signed[0],
                       two and not self._signed[1], Q.BLOCKSIZE)
            else:
                s2 = state["state2"].reshape(-1) if two else s1[:0]
                Q.step32_cpu(pf, gf, s1, s2, row, self._algo, two, f0, f1, f2)
        return loss

    # -- checkpoints -------------------------------------------------------------
    @staticmethod
    def _cast(param, value, key=None):
        # quantized codes, absmax and maps keep their dtypes; float state takes
        # the parameter's (torch's policy)
        if isinstance(value, dict):
            return {k: (v.copy() if isinstance(v, np.ndarray)
                        and (k in _QUANT_KEYS or v.dtype == np.uint8)
                        else Optimizer._cast(param, v, key=k)) for k, v in value.items()}
        return Optimizer._cast(param, value, key)

    def _check_loaded_state(self, param, value, where, group):
        self._check_state(param, value, where)

    def load_state_dict(self, state_dict):
        """Load a state dict of this class, or torch's 32-bit layout of the
        same algorithm (``exp_avg``/``exp_avg_sq``, ``momentum_buffer``,
        ``square_avg``, ``sum``), quantized at load for parameters of at least
        ``min_8bit_size`` elements.  Validated before anything changes."""
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

    def _from_torch(self, entry, p, min_size):
        out = {"step": np.array(np.asarray(entry.get("step", 0.0), np.float32).reshape(()))}
        for j, tname in enumerate(self._torch_names):
            k = str(j + 1)
            v = entry.get(tname)
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
    for SGD, ``("square_avg",)`` for RMSprop, ``("sum",)`` for Adagrad)."""
    state = {}
    for pid, entry in state_dict["state"].items():
        new = {k: v for k, v in entry.items()
               if k not in _QUANT_KEYS and not k.startswith("state")}
        for j, name in enumerate(names):
            k = str(j + 1)
            s = entry["state" + k]
            if s.dtype == np.uint8:
                s = Q.dequantize_blockwise(s, entry["absmax" + k], entry["qmap" + k])
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
