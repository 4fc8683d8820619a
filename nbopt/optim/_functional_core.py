"""The machinery behind torch's functional optimizer API.

``nbopt.optim.adam.adam``, ``nbopt.optim.sgd.sgd``, ... are torch 2.13's
functional forms (``torch.optim.adam.adam``, ...): lists of arrays in, updated
in place.  Each is a thin function with torch's signature that hands its
arguments to :func:`functional_step` with the name of a :class:`Functional`
below, which says how torch's function reads them.  No update rule is written
here: a step is the algorithm's registry entry (:mod:`nbopt.registry`), its
host scalars (``spec.scalars``, ``spec.advance``) and its compiled CPU kernel,
exactly as the class API runs them, so the functional form and the class are
bit for bit the same.

How a call runs:

1. torch's checks, in torch's order: the ``state_steps`` type check of its
   public function; the choice of implementation (``fused`` before
   ``foreach``, as torch: SGD the other way round); that implementation's
   prologue checks (``differentiable`` with foreach or fused, ``grad_scale``
   outside fused, Tensor lr with foreach Adam, ...); the list lengths as that
   implementation reads them (the for-loop indexes the lists, or zips them
   strictly; foreach/fused need equal lengths).
2. Everything else is validated and every per-step scalar computed, in
   parameter order, simulating the in-place increments (a step array shared by
   two parameters is incremented twice, as in torch).  Nothing has changed
   yet: an error leaves every array as it was.
3. Each parameter's kernel is launched, in order, over a one-row segment
   table: parameter and gradient by address, the parameter's own state
   arrays with offset 0.  (The kernels index every state array at one offset
   per segment, ``segments[s, 2]``; the state arrays here are allocated
   separately per parameter, so one launch per parameter is the simplest
   correct form.  The launches' tables and scalar rows are built once per
   call, the scalars once per distinct step count: 10-15 us per parameter
   for 1,000 Adam parameters of 100 floats, two to three times faster than
   torch's for-loop, measured.)  Arrays whose
   memory order is not the parameter's, or a parameter that is not
   contiguous, go through contiguous working copies, written back after the
   kernel.  Complex parameters go through their real view.

Where nbopt differs from torch's functional forms (documented in
docs/api/algorithms.rst, "Functional API"): ``capturable=True`` computes the default path (torch
refuses CPU tensors), as the class API; AMP's ``grad_scale``/``found_inf`` are
not supported with ``fused=True`` (``NotImplementedError``); ``has_complex``
is not needed (complex parameters always go through their real view); errors
are raised before anything changes where torch's for-loop may have updated
the first parameters already.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ..engine import (OVERLAP_MESSAGE, _launch_shape, _layout_copy, _same_layout, _Stored32,
                      _Stored64, read_only_message, sparse_rejection)
from .. import config
from ..parameter import aligned_zeros, as_sparse_grad, is_sparse_grad
from ..registry import DENSIFY

__all__ = ["Functional", "functional_step", "FUNCTIONALS", "API_CHANGED"]

API_CHANGED = "API has changed, `{}` argument must contain a list of singleton tensors"
GRAD_SCALE_MESSAGE = "Expected grad_scale and found_inf to be None"
AUTOGRAD_MESSAGE = "_foreach ops don't support autograd"
# torch's check that the lists of a foreach/fused call have one entry per parameter
# (torch's messages end with "(Could this error message be improved?  If so,
# please report an enhancement request to PyTorch.)": left out, it is not
# PyTorch's code that raised)
TENSORLISTS_MESSAGE = (
    "Expected std::all_of( nested_tensorlist.cbegin(), nested_tensorlist.cend(), "
    "[&](const auto& tensorlist) -> bool { return tensorlist.size() == num_tensors || "
    "tensorlist.size() == 0; }) to be true, but got false.")
MAX_EXP_AVG_SQS_MESSAGE = "Expected max_exp_avg_sqs.empty() to be true, but got false."
TORCH_REPORT_SUFFIX = ("  (Could this error message be improved?  If so, please report an "
                       "enhancement request to PyTorch.)")

_DTYPES = frozenset(map(np.dtype, (np.float32, np.float64, np.complex64, np.complex128)))
_TORCH_DTYPE = {"float32": "Float", "float64": "Double", "complex64": "ComplexFloat",
                "complex128": "ComplexDouble"}


@dataclass(frozen=True)
class Functional:
    """How torch's functional form of one algorithm reads its arguments.

    Attributes
    ----------
    name : str
        The function's name (``"adamw"``).
    algorithm : str
        The registry entry that steps it (``"adam"``).
    grads : str
        The name of its gradient list (SGD's is ``d_p_list``).
    lists : tuple of (str, str, str)
        The list arguments after the gradients, in order: ``(argument, kind,
        key)`` with kind ``"state"`` (a per-element state array, ``key`` its
        registry name), ``"scalar"`` (per-parameter scalar state) or
        ``"step"``.
    group : callable
        ``group(kwargs, foreach, fused) -> dict``: the param group the
        registry's host maths reads, from the call's arguments.
    checks_steps : tuple of str
        The lists whose entries torch's public function requires to be
        tensors ("API has changed, ..."), in order.
    zip_strict : bool
        torch's for-loop zips the lists strictly (Adagrad, Adadelta) rather
        than indexing them.
    step_value : bool
        torch reads the step's value (``.item()``): a step array must have
        one element.  RMSprop, Rprop and Adadelta only increment it.
    paths : tuple of str
        The implementations besides the for-loop: ``"foreach"``, ``"fused"``.
    prologue : mapping
        Path -> the checks its implementation makes before reading the lists,
        in torch's order (see :func:`_prologue`).
    foreach_first : bool
        ``foreach=True`` wins over ``fused=True`` (SGD); elsewhere fused does.
    """

    name: str
    algorithm: str
    grads: str
    lists: tuple
    group: Callable[[Mapping, bool, bool], dict]
    checks_steps: tuple = ("state_steps",)
    zip_strict: bool = False
    step_value: bool = True
    paths: tuple = ("foreach",)
    prologue: Mapping[str, tuple] = field(default_factory=dict)
    foreach_first: bool = False

    @functools.cached_property
    def spec(self):
        from ..registry import get

        return get(self.algorithm)


# -- the param groups the registry's host maths reads --------------------------------------

def _flags(kw, foreach, fused, *names):
    out = {"foreach": foreach, "fused": fused}
    for name in names:
        out[name] = kw.get(name, False)
    return out


def _sgd_group(kw, foreach, fused):
    return {"lr": kw["lr"], "momentum": kw["momentum"], "dampening": kw["dampening"],
            "weight_decay": kw["weight_decay"], "nesterov": kw["nesterov"],
            "maximize": kw["maximize"], "differentiable": False,
            **_flags(kw, foreach, fused)}


def _adam_group(kw, foreach, fused):
    return {"lr": kw["lr"], "betas": (kw["beta1"], kw["beta2"]), "eps": kw["eps"],
            "weight_decay": kw["weight_decay"], "amsgrad": kw["amsgrad"],
            "maximize": kw["maximize"],
            "decoupled_weight_decay": kw.get("decoupled_weight_decay", True),
            **_flags(kw, foreach, fused, "capturable", "differentiable")}


def _adagrad_group(kw, foreach, fused):
    return {"lr": kw["lr"], "lr_decay": kw["lr_decay"], "weight_decay": kw["weight_decay"],
            "eps": kw["eps"], "maximize": kw["maximize"],
            **_flags(kw, foreach, fused, "differentiable")}


def _adadelta_group(kw, foreach, fused):
    return {"lr": kw["lr"], "rho": kw["rho"], "eps": kw["eps"],
            "weight_decay": kw["weight_decay"], "maximize": kw["maximize"],
            **_flags(kw, foreach, fused, "capturable", "differentiable")}


def _adamax_group(kw, foreach, fused):
    return {"lr": kw["lr"], "betas": (kw["beta1"], kw["beta2"]), "eps": kw["eps"],
            "weight_decay": kw["weight_decay"], "maximize": kw["maximize"],
            **_flags(kw, foreach, fused, "capturable", "differentiable")}


def _asgd_group(kw, foreach, fused):
    return {"lr": kw["lr"], "lambd": kw["lambd"], "alpha": kw["alpha"], "t0": kw["t0"],
            "weight_decay": kw["weight_decay"], "maximize": kw["maximize"],
            **_flags(kw, foreach, fused, "capturable", "differentiable")}


def _nadam_group(kw, foreach, fused):
    return {"lr": kw["lr"], "betas": (kw["beta1"], kw["beta2"]), "eps": kw["eps"],
            "weight_decay": kw["weight_decay"], "momentum_decay": kw["momentum_decay"],
            "decoupled_weight_decay": kw["decoupled_weight_decay"], "maximize": kw["maximize"],
            **_flags(kw, foreach, fused, "capturable", "differentiable")}


def _radam_group(kw, foreach, fused):
    return {"lr": kw["lr"], "betas": (kw["beta1"], kw["beta2"]), "eps": kw["eps"],
            "weight_decay": kw["weight_decay"],
            "decoupled_weight_decay": kw["decoupled_weight_decay"], "maximize": kw["maximize"],
            **_flags(kw, foreach, fused, "capturable", "differentiable")}


def _rmsprop_group(kw, foreach, fused):
    return {"lr": kw["lr"], "alpha": kw["alpha"], "eps": kw["eps"],
            "weight_decay": kw["weight_decay"], "momentum": kw["momentum"],
            "centered": kw["centered"], "maximize": kw["maximize"],
            **_flags(kw, foreach, fused, "capturable", "differentiable")}


def _rprop_group(kw, foreach, fused):
    return {"etas": (kw["etaminus"], kw["etaplus"]),
            "step_sizes": (kw["step_size_min"], kw["step_size_max"]),
            "maximize": kw["maximize"],
            **_flags(kw, foreach, fused, "capturable", "differentiable")}


_STEPS = ("state_steps", "step", "step")
_ADAM_LISTS = (("exp_avgs", "state", "exp_avg"), ("exp_avg_sqs", "state", "exp_avg_sq"),
               ("max_exp_avg_sqs", "state", "max_exp_avg_sq"), _STEPS)
# the prologue checks of each implementation, in torch's order
_ADAM_PROLOGUE = {
    "single": ("grad_scale",),
    "foreach": ("empty", "tensor_hyperparameters", "grad_scale", "autograd"),
    "fused": ("empty", "fused_differentiable", "fused_complex", "amp"),
}
_FOREACH_EMPTY_FIRST = {"foreach": ("empty", "autograd")}

FUNCTIONALS: dict[str, Functional] = {f.name: f for f in (
    Functional("sgd", "sgd", "d_p_list",
               (("momentum_buffer_list", "state", "momentum_buffer"),), _sgd_group,
               checks_steps=(), step_value=False, paths=("foreach", "fused"),
               foreach_first=True,
               prologue={"single": ("grad_scale",), "foreach": ("grad_scale", "empty"),
                         "fused": ("empty", "fused_sparse", "fused_complex", "amp")}),
    Functional("adam", "adam", "grads", _ADAM_LISTS, _adam_group,
               paths=("foreach", "fused"), prologue=_ADAM_PROLOGUE),
    Functional("adamw", "adam", "grads", _ADAM_LISTS, _adam_group,
               paths=("foreach", "fused"), prologue=_ADAM_PROLOGUE),
    Functional("adagrad", "adagrad", "grads", (("state_sums", "state", "sum"), _STEPS),
               _adagrad_group, zip_strict=True, paths=("foreach", "fused"),
               prologue={"single": ("grad_scale",),
                         "foreach": ("autograd", "grad_scale", "empty"),
                         "fused": ("empty", "fused_sparse", "fused_differentiable",
                                   "fused_complex", "amp")}),
    Functional("adadelta", "adadelta", "grads",
               (("square_avgs", "state", "square_avg"), ("acc_deltas", "state", "acc_delta"),
                _STEPS), _adadelta_group, zip_strict=True, step_value=False,
               prologue={"foreach": ("autograd", "empty")}),
    Functional("adamax", "adamax", "grads",
               (("exp_avgs", "state", "exp_avg"), ("exp_infs", "state", "exp_inf"), _STEPS),
               _adamax_group, prologue={"foreach": ("autograd", "empty")}),
    Functional("asgd", "asgd", "grads",
               (("axs", "state", "ax"), ("mus", "scalar", "mu"), ("etas", "scalar", "eta"),
                _STEPS), _asgd_group, checks_steps=(), prologue=_FOREACH_EMPTY_FIRST),
    Functional("nadam", "nadam", "grads",
               (("exp_avgs", "state", "exp_avg"), ("exp_avg_sqs", "state", "exp_avg_sq"),
                ("mu_products", "scalar", "mu_product"), _STEPS), _nadam_group,
               checks_steps=("state_steps", "mu_products"), prologue=_FOREACH_EMPTY_FIRST),
    Functional("radam", "radam", "grads",
               (("exp_avgs", "state", "exp_avg"), ("exp_avg_sqs", "state", "exp_avg_sq"),
                _STEPS), _radam_group, prologue=_FOREACH_EMPTY_FIRST),
    Functional("rmsprop", "rmsprop", "grads",
               (("square_avgs", "state", "square_avg"), ("grad_avgs", "state", "grad_avg"),
                ("momentum_buffer_list", "state", "momentum_buffer"), _STEPS),
               _rmsprop_group, step_value=False, prologue=_FOREACH_EMPTY_FIRST),
    Functional("rprop", "rprop", "grads",
               (("prevs", "state", "prev"), ("step_sizes", "state", "step_size"), _STEPS),
               _rprop_group, step_value=False, prologue=_FOREACH_EMPTY_FIRST),
)}


# -- validation ------------------------------------------------------------------------------

def _path(fn: Functional, foreach, fused) -> str:
    """The implementation torch's function runs.  On CPU its default
    (``foreach=None, fused=None``) is the for-loop."""
    if fn.foreach_first:
        order = (("foreach", foreach), ("fused", fused))
    else:
        order = (("fused", fused), ("foreach", foreach))
    for path, flag in order:
        if flag and path in fn.paths:
            return path
    return "single"


def _prologue(fn: Functional, path: str, args: Mapping, params: list) -> bool:
    """torch's checks at the top of the implementation; False: torch returns
    at once (no parameters)."""
    for check in fn.prologue.get(path, ()):
        if check == "empty":
            if len(params) == 0:
                return False
        elif check == "grad_scale":
            if args.get("grad_scale") is not None or args.get("found_inf") is not None:
                raise AssertionError(GRAD_SCALE_MESSAGE)
        elif check == "autograd":
            if args.get("differentiable"):
                raise AssertionError(AUTOGRAD_MESSAGE)
        elif check == "tensor_hyperparameters":
            if not args.get("capturable"):
                if isinstance(args["lr"], np.ndarray):
                    raise RuntimeError("lr as a Tensor is not supported for capturable=False "
                                       "and foreach=True")
                for name in ("beta1", "beta2"):
                    if isinstance(args[name], np.ndarray):
                        raise ValueError(f"{name} as a Tensor is not supported for "
                                         "capturable=False and foreach=True")
            for name in ("lr", "beta1", "beta2"):
                value = args[name]
                if isinstance(value, np.ndarray) and value.size != 1:
                    raise ValueError(f"Tensor {name} must be 1-element")
        elif check == "fused_differentiable":
            if args.get("differentiable"):
                what = "Adam" if fn.algorithm == "adam" else "adagrad"
                raise RuntimeError(f"{what} with fused=True does not support differentiable=True")
        elif check == "fused_sparse":
            if fn.name == "sgd":
                if args.get("has_sparse_grad"):
                    raise RuntimeError("`_fused_sgd` does not support sparse gradients")
            elif args.get("has_sparse_grad") or args.get("has_complex"):
                raise RuntimeError("`fused` does not support sparse grad or complex param")
        elif check == "fused_complex":
            for p in params:
                if isinstance(p, np.ndarray) and p.dtype.kind == "c":
                    kernel = "adam" if fn.algorithm == "adam" else fn.name
                    raise NotImplementedError(f'"fused_{kernel}_kernel" not implemented for '
                                              f"'{_TORCH_DTYPE.get(p.dtype.name, p.dtype)}'")
        elif check == "amp":
            if args.get("grad_scale") is not None or args.get("found_inf") is not None:
                raise NotImplementedError(
                    "nbopt does not support AMP gradient scaling (grad_scale, found_inf) in "
                    "its functional optimizers")
    return True


def _check_lengths(fn: Functional, path: str, params, grads, lists, wanted) -> None:
    """The list lengths, as torch's implementation reads them."""
    n = len(params)
    if path != "single":
        # foreach and fused group every list by device and dtype: each needs
        # one entry per parameter, or none at all
        for values in (grads, *lists.values()):
            if len(values) not in (n, 0):
                raise RuntimeError(TENSORLISTS_MESSAGE)
        for name, kind, key in ((fn.grads, "grads", None), *fn.lists):
            needed = kind != "state" or wanted[key]
            if needed and len(grads if kind == "grads" else lists[name]) != n:
                raise RuntimeError(f"Tensor lists must have the same number of tensors, "
                                   f"got {n} and 0")
        if fn.algorithm == "adam" and path == "fused" and not wanted["max_exp_avg_sq"] \
                and len(lists["max_exp_avg_sqs"]):
            raise RuntimeError(MAX_EXP_AVG_SQS_MESSAGE)
        return
    if fn.zip_strict:
        # the for-loop zips every list strictly: Python's own message
        for _ in zip(params, grads, *(lists[name] for name, _, _ in fn.lists), strict=True):
            pass
        return
    for name, kind, key in ((fn.grads, "grads", None), *fn.lists):
        needed = kind != "state" or wanted[key]
        if needed and len(grads if kind == "grads" else lists[name]) < n:
            raise IndexError("list index out of range")


def _where(name: str, i: int) -> str:
    return f"{name}[{i}]"


def _check_array(value, name: str, i: int, param) -> np.ndarray:
    """A state array or gradient: an ndarray shaped like the parameter, of
    its dtype, writeable (gradients need not be)."""
    where = _where(name, i)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{where} must be a numpy array, got {type(value).__name__}")
    if value.shape != param.shape:
        raise RuntimeError(f"{where} has shape {value.shape} but the parameter has shape "
                           f"{param.shape}")
    if value.dtype != param.dtype:
        raise RuntimeError(f"{where} has dtype {value.dtype} but the parameter has dtype "
                           f"{param.dtype}")
    return value


def _check_writeable(value: np.ndarray, where: str) -> None:
    if not value.flags.writeable:
        raise ValueError(read_only_message(where))


def _address_py(a):
    return a.ctypes.data


@functools.lru_cache(maxsize=None)
def _compiled_address():
    """``a.ctypes.data``, compiled: 0.4 us where ``__array_interface__``
    takes 2.5 us (two per parameter and step).  Numba is imported on first
    use only."""
    from numba import njit

    from .. import config

    if config.CACHE:
        try:
            return njit(cache=True, nogil=True)(_address_py)
        except RuntimeError:        # no writable cache location
            pass
    return njit(nogil=True)(_address_py)


def _address(a: np.ndarray) -> int:
    return _compiled_address()(a)


def _singleton(value: np.ndarray, where: str, need_one: bool) -> None:
    if value.dtype.kind not in "iuf":
        raise TypeError(f"{where} must hold a real number, got dtype {value.dtype}")
    if need_one and value.size != 1:
        raise RuntimeError(f"a Tensor with {value.size} elements cannot be converted to Scalar")


def _incremented(old, dtype: np.dtype):
    """``old + 1`` as torch's ``step_t += 1`` computes it in the step's dtype."""
    if dtype == np.float32:
        return np.float32(old + 1.0)
    if dtype == np.float64:
        return np.float64(old + 1.0)
    return dtype.type(old) + dtype.type(1)


@functools.lru_cache(maxsize=None)
def _empty(dtype: np.dtype) -> np.ndarray:
    """The empty state array the kernels take for an optional state that is
    off (the engine's ``FlatGroup._empty``)."""
    return aligned_zeros(0, dtype)


def _real(dtype: np.dtype) -> np.dtype:
    return np.finfo(dtype).dtype if dtype.kind == "c" else dtype


def _flat(a: np.ndarray) -> np.ndarray:
    """A contiguous array's memory as a 1-D view of real elements."""
    if a.ndim == 1 and a.dtype.kind != "c":
        return a                                # contiguous already (the usual case)
    flat = a.reshape(-1, order="C" if a.flags.c_contiguous else "F")
    return flat.view(_real(flat.dtype)) if flat.dtype.kind == "c" else flat


def _contiguous(a: np.ndarray) -> bool:
    flags = a.flags
    return flags.c_contiguous or flags.f_contiguous


def _in_order(a: np.ndarray, order: str) -> bool:
    """Whether ``a`` is contiguous in memory order ``order`` ("C" or "F"):
    then element k of its memory is element k of a parameter of that order
    and shape (the engine's ``_same_layout``; 1-D arrays are both)."""
    flags = a.flags
    return flags.c_contiguous if order == "C" else flags.f_contiguous


class _Job:
    """One parameter's validated step: what the run phase writes.

    ``launch`` is the kernel call's arguments when the arrays are used as
    they are (the usual case: contiguous, laid out like the parameter); the
    general case (working copies, a new SGD buffer, a sparse row update) is
    done by :func:`_run_general` at run time."""

    __slots__ = ("param", "grad", "states", "row", "sparse", "writes", "new_buffer",
                 "group", "t", "launch", "row_index", "parallel")

    def __init__(self, param, grad, states, row, sparse, writes, new_buffer, group, t):
        self.param, self.grad, self.states, self.row = param, grad, states, row
        self.sparse = sparse                    # a spec.sparse row update, or None
        self.writes = writes                    # (step or scalar-state array, new value)
        self.new_buffer = new_buffer            # SGD: (list, index) to store a new buffer in
        self.group, self.t = group, t           # what a sparse row update reads
        self.launch = None                      # (state arrays,) of a direct launch
        self.row_index = -1                     # its row in the segment table
        self.parallel = False                   # whether it runs the parallel kernel


def _scalar_state_value(value, name: str, i: int):
    where = _where(name, i)
    if not isinstance(value, np.ndarray):
        # torch reads it with .item() (or copy_ into it)
        raise AttributeError(f"'{type(value).__name__}' object has no attribute 'item'")
    if value.dtype.kind != "f":
        raise TypeError(f"{where} must be a float32 or float64 array, got dtype {value.dtype}")
    if value.size != 1:
        raise RuntimeError(f"a Tensor with {value.size} elements cannot be converted to Scalar")
    _check_writeable(value, where)
    return value


def functional_step(name: str, args: Mapping) -> None:
    """Run torch's functional optimizer ``name`` on ``args`` (its arguments
    by name), in place.  See the module docstring."""
    fn = FUNCTIONALS[name]
    params, grads = args["params"], args[fn.grads]
    lists = {list_name: args[list_name] for list_name, _, _ in fn.lists}
    # torch's public function: the state_steps (and NAdam's mu_products) type check
    for list_name in fn.checks_steps:
        if not all(isinstance(t, np.ndarray) for t in lists[list_name]):
            raise RuntimeError(API_CHANGED.format(list_name))
    foreach, fused = args.get("foreach"), args.get("fused")
    path = _path(fn, foreach, fused)
    if not _prologue(fn, path, args, params):
        return
    group = fn.group(args, path == "foreach", path == "fused")
    spec = fn.spec
    wanted = {s.name: s.wanted(group) for s in spec.state}
    _check_lengths(fn, path, params, grads, lists, wanted)
    if fn.name == "asgd" and path != "single":
        for i, t in enumerate(lists["state_steps"][:len(params)]):
            if not isinstance(t, np.ndarray):
                raise TypeError(f"state_steps[{i}] must be a numpy array on the foreach path, "
                                f"got {type(t).__name__}")
    jobs, table = _prepare(fn, spec, group, params, grads, lists, wanted)
    _run(spec, jobs, table, spec.flags(group))


def _prepare(fn: Functional, spec, group, params, grads, lists, wanted):
    """Validate every parameter and compute its scalars, changing nothing.

    Returns the jobs and the table of the direct launches: ``(segments,
    chunks, scalars)``, one row per launch (sliced per parameter at run
    time)."""
    scalar_lists = [(list_name, key) for list_name, kind, key in fn.lists if kind == "scalar"]
    state_lists = [(lists[list_name], list_name, key) for list_name, kind, key in fn.lists
                   if kind == "state" and wanted[key]]
    steps = lists.get("state_steps")
    scalar_order = [s.name for s in spec.scalar_state]
    sgd = fn.name == "sgd"
    pending: dict = {}      # address -> a step's or scalar state's value after the writes so far
    rows: dict = {}         # (t, fresh, old, new) -> the kernel's scalar row
    table = []              # [param address, grad address, 0, length, row key] of direct launches
    jobs = []
    for i, p in enumerate(params):
        if not isinstance(p, np.ndarray):
            raise TypeError(f"params[{i}] must be a numpy array, got {type(p).__name__}")
        if p.dtype not in _DTYPES:
            raise TypeError(f"params[{i}]: {fn.name} can only optimize float32, float64, "
                            f"complex64 and complex128 parameters, got dtype {p.dtype}")
        if not p.flags.writeable:
            raise ValueError(read_only_message(_where("params", i)))
        # the gradient: dense, or sparse where the algorithm takes it
        g = grads[i]
        sparse = None
        if isinstance(g, np.ndarray):
            if g.shape != p.shape or g.dtype != p.dtype:
                _check_array(g, fn.grads, i, p)
            if np.may_share_memory(p, g) and not (
                    g.strides == p.strides and _address(g) == _address(p)):
                raise RuntimeError(OVERLAP_MESSAGE)
        elif is_sparse_grad(g):
            g, sparse = _sparse_grad(fn, spec, group, p, g, i)
        else:
            _check_array(g, fn.grads, i, p)
        # per-element state
        states = {}
        new_buffer = None
        for values, list_name, key in state_lists:
            value = values[i]
            if value is None and sgd:
                new_buffer = (values, i)        # torch: buf = grad.clone(), stored in the list
                continue
            if not isinstance(value, np.ndarray) or value.shape != p.shape \
                    or value.dtype != p.dtype:
                _check_array(value, list_name, i, p)
            if not value.flags.writeable:
                raise ValueError(read_only_message(_where(list_name, i)))
            states[key] = value
        # the step count after this step's increment
        t = 0.0
        writes = []
        if steps is not None:
            step = steps[i]
            if isinstance(step, np.ndarray):
                _singleton(step, _where("state_steps", i), fn.step_value)
                if not step.flags.writeable:
                    raise ValueError(read_only_message(_where("state_steps", i)))
                if step.size == 1:
                    addr = _address(step)
                    old = pending.get(addr)
                    new = _incremented(step.item() if old is None else old, step.dtype)
                    pending[addr] = new
                    t = float(new)
                    writes.append((step, new))
                else:
                    writes.append((step, None))     # only incremented (RMSprop, ...)
            else:
                # ASGD's for-loop takes a Python number (rebinding, not storing, its +1)
                t = float(step + 1)
        # per-parameter scalar state (ASGD's eta and mu, NAdam's mu_product)
        old_s = new_s = ()
        if scalar_lists:
            arrays = {key: _scalar_state_value(lists[list_name][i], list_name, i)
                      for list_name, key in scalar_lists}
            ordered = [arrays[key] for key in scalar_order]
            addrs = [_address(a) for a in ordered]
            old_s = tuple(float(pending[ad]) if ad in pending else float(a.item())
                          for a, ad in zip(ordered, addrs))
            dtype = ordered[0].dtype.type
            stored = _Stored64 if dtype is np.float64 else _Stored32
            values = spec.advance(group, t, old_s, dtype)
            new_s = stored(float(a.dtype.type(v)) for a, v in zip(ordered, values))
            for a, ad, v in zip(ordered, addrs, new_s):
                pending[ad] = v
                writes.append((a, v))
        key = (t, new_buffer is not None, old_s, type(new_s), new_s)
        row = rows.get(key)
        if row is None:
            row = rows[key] = spec.scalars(group, t, new_buffer is not None, old_s, new_s)
            sum(row)        # every column a number (NumPy would turn None into NaN)
        job = _Job(p, g, states, row, sparse, writes, new_buffer, group, t)
        jobs.append(job)
        # a direct launch: the arrays as they are, when all are laid out
        # alike (element k of each one's memory is element k of the others')
        if sparse is None and new_buffer is None and p.size:
            flags = p.flags
            order = "C" if flags.c_contiguous else ("F" if flags.f_contiguous else None)
            if order is not None and _in_order(g, order) \
                    and all(_in_order(v, order) for v in states.values()):
                real = _real(p.dtype)
                job.launch = tuple(_flat(states[s.name]) if s.name in states else _empty(real)
                                   for s in spec.state)
                job.row_index = len(table)
                n = p.size * (2 if p.dtype.kind == "c" else 1)
                job.parallel = config.runs_parallel(n)
                table.append((_address(p), _address(g), 0, n, key, real))
    return jobs, _launch_table(spec, table, rows)


def _launch_table(spec, table, rows):
    """The direct launches' segment, chunk and scalar tables (one row each)."""
    if not table:
        return None
    seg = np.array([row[:4] for row in table], np.int64)
    chunks = np.zeros((len(table), 3), np.int64)
    chunks[:, 2] = seg[:, 3]
    converted = {}
    scalars = []
    for *_, key, real in table:
        arr = converted.get((key, real))
        if arr is None:
            arr = converted[(key, real)] = np.array([rows[key]], np.float64).astype(real)
        scalars.append(arr)
    return seg, chunks, scalars


def _sparse_grad(fn, spec, group, p, g, i):
    """A sparse gradient: ``(gradient, row update)``, or the densified
    gradient and None."""
    sg = as_sparse_grad(g)
    if sg.shape != p.shape:
        raise RuntimeError(f"{_where(fn.grads, i)} has shape {sg.shape} but the parameter has "
                           f"shape {p.shape}")
    if sg.dtype != p.dtype:
        raise RuntimeError(f"{_where(fn.grads, i)} has dtype {sg.dtype} but the parameter has "
                           f"dtype {p.dtype}")
    if spec.sparse is None:
        # torch's functional form reaches an operator without a sparse kernel
        # ("Could not run 'aten::lerp_.Scalar' with arguments from the
        # 'SparseCPU' backend"); the class's message says more
        raise NotImplementedError(sparse_rejection(spec))
    update = spec.sparse(group, p)
    if update is DENSIFY:
        return _layout_copy(p, sg.to_dense()), None
    return sg, update


def _run(spec, jobs, table, flags) -> None:
    """Apply the validated steps, parameter by parameter, in order (cannot fail)."""
    serial = spec.cpu[0]
    if table is not None:
        seg, chunks, scalars = table
    for job in jobs:
        for arr, value in job.writes:
            if value is None:
                np.add(arr, 1, out=arr, casting="unsafe")
            else:
                arr[...] = value
        j = job.row_index
        if j < 0:
            _run_general(spec, job, flags)
            continue
        if job.parallel:
            s = seg[j:j + 1]
            kernel, c = _launch_shape(spec, s, scalars[j].dtype)
            kernel(s, c, scalars[j], *job.launch, *flags)
        else:
            serial(seg[j:j + 1], chunks[j:j + 1], scalars[j], *job.launch, *flags)


def _working(p: np.ndarray, a: np.ndarray):
    """``a`` laid out as the kernel reads it next to (working) parameter
    ``p``: itself, or a copy to write back."""
    if _same_layout(p, a) and _contiguous(a):
        return a, False
    return _layout_copy(p, a), True


def _run_general(spec, job: _Job, flags) -> None:
    """One parameter's step through working copies where its arrays are not
    laid out for the kernel, a new SGD buffer, or a sparse row update."""
    p = job.param
    wp = p if _contiguous(p) else np.ascontiguousarray(p)
    g = job.grad
    work = {}
    back = []
    for key, value in job.states.items():
        arr, copied = _working(wp, value)
        work[key] = arr
        if copied:
            back.append((value, arr))
    if job.new_buffer is not None:
        work["momentum_buffer"] = buf = np.zeros_like(wp)
    if job.sparse is not None:
        job.sparse(wp, work, g, job.group, job.t)
    elif p.size:
        if g.strides == p.strides and _address(g) == _address(p):
            wg = wp                             # the gradient is the parameter itself
        else:
            wg, _ = _working(wp, g)
        n = wp.size * (2 if wp.dtype.kind == "c" else 1)
        seg = np.array([[_address(wp), _address(wg), 0, n]], np.int64)
        real = _real(wp.dtype)
        kernel, chunks = _launch_shape(spec, seg, real)
        scalars = np.array([job.row], np.float64).astype(real)
        arrays = [_flat(work[s.name]) if s.name in work else _empty(real) for s in spec.state]
        kernel(seg, chunks, scalars, *arrays, *flags)
    if wp is not p:
        p[...] = wp
    for value, arr in back:
        value[...] = arr
    if job.new_buffer is not None:
        buffers, i = job.new_buffer
        buffers[i] = buf
