"""Shared by tests/test_functional_torch.py and tests/make_functional_signatures.py:
how torch's classes call their functional forms (so that a parity case of
tests/cases.py can drive ``torch.optim.adam.adam`` and ``nbopt.optim.adam.adam``
alike), and the table of bad inputs whose errors must be torch's.

Everything here runs against either library through a small adapter
(:class:`Lib`): ``Lib("numpy")`` (nbopt) or ``Lib("torch")``.
"""
from __future__ import annotations

import importlib

import numpy as np

from cases import SHAPES, Case, grad_is_none

# the functional forms: qualified name in torch (the nbopt name replaces
# "torch" with "nbopt")
FUNCTIONS = ["sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam", "radam",
             "rmsprop", "rprop"]
QUALNAMES = [f"torch.optim.{name}.{name}" for name in FUNCTIONS] + \
    ["torch.optim._functional.sparse_adam"]

FUNCTION_OF = {"SGD": "sgd", "Adam": "adam", "AdamW": "adamw", "Adagrad": "adagrad",
               "Adadelta": "adadelta", "Adamax": "adamax", "ASGD": "asgd", "NAdam": "nadam",
               "RAdam": "radam", "RMSprop": "rmsprop", "Rprop": "rprop"}

# the list arguments after (params, grads), in order, with the state key each holds
LISTS = {
    "sgd": [("momentum_buffer_list", "momentum_buffer")],
    "adam": [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq"),
             ("max_exp_avg_sqs", "max_exp_avg_sq"), ("state_steps", "step")],
    "adagrad": [("state_sums", "sum"), ("state_steps", "step")],
    "adadelta": [("square_avgs", "square_avg"), ("acc_deltas", "acc_delta"),
                 ("state_steps", "step")],
    "adamax": [("exp_avgs", "exp_avg"), ("exp_infs", "exp_inf"), ("state_steps", "step")],
    "asgd": [("axs", "ax"), ("mus", "mu"), ("etas", "eta"), ("state_steps", "step")],
    "nadam": [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq"),
              ("mu_products", "mu_product"), ("state_steps", "step")],
    "radam": [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq"), ("state_steps", "step")],
    "rmsprop": [("square_avgs", "square_avg"), ("grad_avgs", "grad_avg"),
                ("momentum_buffer_list", "momentum_buffer"), ("state_steps", "step")],
    "rprop": [("prevs", "prev"), ("step_sizes", "step_size"), ("state_steps", "step")],
}
LISTS["adamw"] = LISTS["adam"]
# functions that take has_complex (torch's classes pass it)
HAS_COMPLEX = set(FUNCTIONS) - {"sgd"}


class Lib:
    """The few array operations the drivers need, in NumPy or torch."""

    def __init__(self, name: str):
        self.name = name
        if name == "torch":
            import torch

            self.torch = torch

    def function(self, fname: str):
        root = "torch" if self.name == "torch" else "nbopt"
        module = "_functional" if fname == "sparse_adam" else fname
        return getattr(importlib.import_module(f"{root}.optim.{module}"), fname)

    def array(self, a):
        a = np.array(a)
        return self.torch.from_numpy(a.copy()) if self.name == "torch" else a.copy()

    def numpy(self, x):
        if self.name == "torch" and isinstance(x, self.torch.Tensor):
            return x.detach().numpy().copy()
        return np.array(x, copy=True)

    def scalar(self, value):
        """A 0-d float32 tensor (torch.tensor(lr)), or its NumPy stand-in."""
        return self.torch.tensor(value) if self.name == "torch" else np.array(value, np.float32)

    def sparse(self, indices, values, shape):
        if self.name == "torch":
            return self.torch.sparse_coo_tensor(np.asarray(indices), self.array(values),
                                                shape, check_invariants=True)
        from nbopt.parameter import SparseGrad

        return SparseGrad(indices, np.asarray(values), shape)


# -- how torch's classes call the functional forms -----------------------------------------

def functional_kwargs(fname: str, g: dict) -> dict:
    """The functional keyword arguments torch's class ``step`` passes for
    param group ``g`` (has_complex excepted)."""
    flags = {k: g[k] for k in ("foreach", "maximize", "differentiable", "capturable")
             if k in g}
    if fname == "sgd":
        return dict(weight_decay=g["weight_decay"], momentum=g["momentum"], lr=g["lr"],
                    dampening=g["dampening"], nesterov=g["nesterov"], maximize=g["maximize"],
                    foreach=g["foreach"], fused=g["fused"])
    if fname in ("adam", "adamw"):
        kw = dict(amsgrad=g["amsgrad"], beta1=g["betas"][0], beta2=g["betas"][1], lr=g["lr"],
                  weight_decay=g["weight_decay"], eps=g["eps"], fused=g["fused"], **flags)
        if fname == "adam":
            kw["decoupled_weight_decay"] = g["decoupled_weight_decay"]
        return kw
    if fname == "adagrad":
        flags.pop("capturable", None)
        return dict(lr=g["lr"], weight_decay=g["weight_decay"], lr_decay=g["lr_decay"],
                    eps=g["eps"], fused=g["fused"], **flags)
    if fname == "adadelta":
        return dict(lr=g["lr"], rho=g["rho"], eps=g["eps"], weight_decay=g["weight_decay"],
                    **flags)
    if fname == "adamax":
        return dict(eps=g["eps"], beta1=g["betas"][0], beta2=g["betas"][1], lr=g["lr"],
                    weight_decay=g["weight_decay"], **flags)
    if fname == "asgd":
        return dict(lambd=g["lambd"], lr=g["lr"], t0=g["t0"], alpha=g["alpha"],
                    weight_decay=g["weight_decay"], **flags)
    if fname == "nadam":
        return dict(beta1=g["betas"][0], beta2=g["betas"][1], lr=g["lr"],
                    weight_decay=g["weight_decay"], momentum_decay=g["momentum_decay"],
                    eps=g["eps"], decoupled_weight_decay=g["decoupled_weight_decay"], **flags)
    if fname == "radam":
        return dict(beta1=g["betas"][0], beta2=g["betas"][1], lr=g["lr"],
                    weight_decay=g["weight_decay"], eps=g["eps"],
                    decoupled_weight_decay=g["decoupled_weight_decay"], **flags)
    if fname == "rmsprop":
        return dict(lr=g["lr"], alpha=g["alpha"], eps=g["eps"], weight_decay=g["weight_decay"],
                    momentum=g["momentum"], centered=g["centered"], **flags)
    if fname == "rprop":
        return dict(step_size_min=g["step_sizes"][0], step_size_max=g["step_sizes"][1],
                    etaminus=g["etas"][0], etaplus=g["etas"][1], **flags)
    raise KeyError(fname)


def wanted(fname: str, key: str, g: dict) -> bool:
    """Whether torch's class keeps (and passes) state ``key`` for group ``g``."""
    if key == "max_exp_avg_sq":
        return bool(g["amsgrad"])
    if key == "momentum_buffer" and fname == "rmsprop":
        return g["momentum"] > 0
    if key == "grad_avg":
        return bool(g["centered"])
    return True


def _value(x) -> float:
    return float(np.asarray(x.detach() if hasattr(x, "detach") else x).reshape(-1)[0])


def _filled(p: np.ndarray, value) -> np.ndarray:
    """``p``-shaped state filled with ``value`` through the real view (a
    complex parameter's state starts at ``value + value*1j``, as nbopt's and
    torch's classes start it)."""
    out = np.zeros_like(p)
    real = out.view(out.real.dtype) if out.dtype.kind == "c" else out
    real[...] = value
    return out


def init_state(fname: str, p: np.ndarray, g: dict, defaults: dict) -> dict:
    """A parameter's state at its first step, as the classes create it
    (NumPy arrays; ``momentum_buffer`` None for SGD)."""
    zeros = np.zeros_like(p)
    step = np.array(0.0, np.float32)
    one = np.array(1.0, np.float32)
    if fname == "sgd":
        return {"momentum_buffer": None}
    out = {}
    for _, key in LISTS[fname]:
        if not wanted(fname, key, g):
            continue
        if key == "step":
            out[key] = step.copy()
        elif key in ("mu", "mu_product"):
            out[key] = one.copy()
        elif key == "eta":
            out[key] = np.array(_value(g["lr"]), np.float32)
        elif key == "sum":
            out[key] = _filled(p, defaults["initial_accumulator_value"])
        elif key == "step_size":
            lr = g["lr"]
            out[key] = _filled(p, np.asarray(lr).reshape(()) if hasattr(lr, "shape")
                               else lr)
        else:
            out[key] = zeros.copy()
    return out


def class_groups(lib: Lib, case: Case, params, wrap_betas: bool):
    """The param groups of ``case``'s class in ``lib`` (torch's or nbopt's),
    built over ``params``: where the functional call's options come from."""
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = lib.scalar(opts["lr"])
    if case.tensor_betas:
        opts["betas"] = tuple(lib.scalar(b) for b in opts.get("betas", (0.9, 0.999)))
    groups = [{"params": params[0]}, {"params": params[1], **case.group1}]
    if lib.name == "torch":
        opt = getattr(lib.torch.optim, case.cls)(groups, **opts)
    else:
        import nbopt

        opt = getattr(nbopt, case.cls)(groups, **opts)
    return opt.param_groups, opt.defaults


def run_functional(lib: Lib, case: Case, inputs: dict, steps: int) -> dict:
    """Step ``case`` through ``lib``'s functional form for ``steps`` steps, as
    torch's class would call it (two param groups, gradients None on some
    steps, state created at each parameter's first step).  Returns
    ``{"param{gi}{pi}": array, "state{gi}{pi}.{key}": array}``."""
    fname = FUNCTION_OF[case.cls]
    fn = lib.function(fname)
    params = [[lib.array(inputs[f"p{gi}{pi}"]) for pi in range(len(shapes))]
              for gi, shapes in enumerate(SHAPES)]
    if lib.name == "torch":
        holders = [[lib.torch.nn.Parameter(lib.torch.zeros(1), requires_grad=False)
                    for _ in shapes] for shapes in SHAPES]
    else:
        import nbopt

        holders = [[nbopt.Parameter(np.zeros(1)) for _ in shapes] for shapes in SHAPES]
    groups, defaults = class_groups(lib, case, holders, case.tensor_betas)
    state: dict = {}
    for step in range(steps):
        for gi, g in enumerate(groups):
            idx = [pi for pi in range(len(SHAPES[gi])) if not grad_is_none(gi, pi, step)]
            if not idx:
                continue
            for pi in idx:
                if (gi, pi) not in state:
                    init = init_state(fname, inputs[f"p{gi}{pi}"], g, defaults)
                    state[(gi, pi)] = {k: None if v is None else lib.array(v)
                                       for k, v in init.items()}
            ps = [params[gi][pi] for pi in idx]
            grads = [lib.array(inputs[f"g{gi}{pi}"][step]) for pi in idx]
            lists = [[state[(gi, pi)][key] for pi in idx] if wanted(fname, key, g) else []
                     for _, key in LISTS[fname]]
            kwargs = functional_kwargs(fname, g)
            if fname in HAS_COMPLEX:
                kwargs["has_complex"] = np.dtype(inputs["p00"].dtype).kind == "c"
            fn(ps, grads, *lists, **kwargs)
            if fname == "sgd":
                for pi, buf in zip(idx, lists[0]):
                    state[(gi, pi)]["momentum_buffer"] = buf
    out = {}
    for gi, shapes in enumerate(SHAPES):
        for pi in range(len(shapes)):
            out[f"param{gi}{pi}"] = lib.numpy(params[gi][pi])
            for key, value in state.get((gi, pi), {}).items():
                if value is not None:
                    out[f"state{gi}{pi}.{key}"] = lib.numpy(value)
    return out


# -- bad inputs ------------------------------------------------------------------------------

# valid hyper-parameters of each function
KWARGS = {
    "sgd": dict(weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.0, nesterov=False,
                maximize=False),
    "adam": dict(amsgrad=False, beta1=0.9, beta2=0.999, lr=0.01, weight_decay=0.0, eps=1e-8,
                 maximize=False),
    "adamw": dict(amsgrad=False, beta1=0.9, beta2=0.999, lr=0.01, weight_decay=0.01, eps=1e-8,
                  maximize=False),
    "adagrad": dict(lr=0.01, weight_decay=0.0, lr_decay=0.0, eps=1e-10, maximize=False),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    "adamax": dict(eps=1e-8, beta1=0.9, beta2=0.999, lr=0.002, weight_decay=0.0),
    "asgd": dict(lambd=1e-4, lr=0.01, t0=1e6, alpha=0.75, weight_decay=0.0),
    "nadam": dict(beta1=0.9, beta2=0.999, lr=0.002, weight_decay=0.0, momentum_decay=4e-3,
                  eps=1e-8),
    "radam": dict(beta1=0.9, beta2=0.999, lr=0.001, weight_decay=0.0, eps=1e-8),
    "rmsprop": dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                    centered=False),
    "rprop": dict(step_size_min=1e-6, step_size_max=50, etaminus=0.5, etaplus=1.2),
}
TAKES_DIFFERENTIABLE = set(FUNCTIONS) - {"sgd"}
FUSED = {"sgd", "adam", "adamw", "adagrad"}
STEP_VALUE = {"adam", "adamw", "adagrad", "adamax", "asgd", "nadam", "radam"}


def base_call(lib: Lib, fname: str, n: int = 2, dtype=np.float32):
    """Valid ``(args, kwargs)`` for one step of ``fname`` over ``n``
    parameters of shape (3,) (the optional lists empty, as the classes pass
    them)."""
    rng = np.random.default_rng(7)
    complex_ = np.dtype(dtype).kind == "c"

    def draw():
        x = rng.standard_normal(3)
        if complex_:
            x = x + 1j * rng.standard_normal(3)
        return x.astype(dtype)

    params = [lib.array(draw()) for _ in range(n)]
    grads = [lib.array(draw()) for _ in range(n)]
    g = {"amsgrad": False, "momentum": KWARGS[fname].get("momentum", 0.0), "centered": False,
         "lr": KWARGS[fname].get("lr", 0.01), "initial_accumulator_value": 0.0}
    lists = []
    for _, key in LISTS[fname]:
        if not wanted(fname, key, g):
            lists.append([])
            continue
        entries = []
        for p in params:
            init = init_state(fname, np.zeros(3, dtype), g, g)
            v = init[key]
            if key == "step_size":
                v = v + 0.5
            entries.append(None if v is None else lib.array(v))
        lists.append(entries)
    return [params, grads, *lists], dict(KWARGS[fname])


def _list_index(fname: str, name: str) -> int:
    return 2 + [arg for arg, _ in LISTS[fname]].index(name)


def _mutations(fname: str):
    """``(case id, mutate(lib, args, kwargs) -> (args, kwargs) or None, type_only)``
    for ``fname``; None skips the case (the function has no such input)."""
    steps = _list_index(fname, "state_steps") if fname != "sgd" else None
    first_state = 2

    def m(f, type_only=False):
        return f, type_only

    out = {}
    if steps is not None:
        def steps_numbers(lib, args, kw):
            args[steps] = [0.0 for _ in args[steps]]
        out["steps_not_arrays"] = m(steps_numbers)

        def steps_short(lib, args, kw):
            args[steps] = args[steps][:1]
        out["steps_short"] = m(steps_short)

        def steps_two(lib, args, kw):
            args[steps] = [lib.array(np.zeros(2, np.float32)) for _ in args[steps]]
        out["steps_two_elements"] = m(steps_two)

    def grads_short(lib, args, kw):
        args[1] = args[1][:1]
    out["grads_short"] = m(grads_short)

    def state_short(lib, args, kw):
        args[first_state] = args[first_state][:1]
    out["state_short"] = m(state_short)

    def grads_long(lib, args, kw):
        args[1] = args[1] + args[1][:1]
    out["grads_long"] = m(grads_long)

    def foreach_grads_short(lib, args, kw):
        args[1] = args[1][:1]
        kw["foreach"] = True
    out["foreach_grads_short"] = m(foreach_grads_short)

    def foreach_state_long(lib, args, kw):
        args[first_state] = args[first_state] + args[first_state][:1]
        kw["foreach"] = True
    out["foreach_state_long"] = m(foreach_state_long)

    def shape_mismatch(lib, args, kw):
        args[1] = [lib.array(np.ones(4, np.float32)) for _ in args[1]]
    out["grad_shape_mismatch"] = m(shape_mismatch, type_only=True)

    def state_shape_mismatch(lib, args, kw):
        if args[first_state][0] is None:
            return False
        args[first_state] = [lib.array(np.ones(4, np.float32)) for _ in args[first_state]]
    out["state_shape_mismatch"] = m(state_shape_mismatch, type_only=True)

    if fname in TAKES_DIFFERENTIABLE:
        def foreach_differentiable(lib, args, kw):
            kw.update(foreach=True, differentiable=True)
        out["foreach_differentiable"] = m(foreach_differentiable)

        def empty_foreach_differentiable(lib, args, kw):
            for i in range(len(args)):
                args[i] = []
            kw.update(foreach=True, differentiable=True)
        out["empty_foreach_differentiable"] = m(empty_foreach_differentiable)

    if fname in ("sgd", "adam", "adamw", "adagrad"):
        def grad_scale(lib, args, kw):
            kw["grad_scale"] = lib.scalar(1.0)
        out["grad_scale"] = m(grad_scale)

        def foreach_grad_scale(lib, args, kw):
            kw.update(foreach=True, grad_scale=lib.scalar(1.0))
        out["foreach_grad_scale"] = m(foreach_grad_scale)

    if fname in FUSED:
        def foreach_fused(lib, args, kw):
            kw.update(foreach=True, fused=True)
        out["foreach_and_fused"] = m(foreach_fused)

        def fused_complex(lib, args, kw):
            new, _ = base_call(lib, fname, dtype=np.complex64)
            args[:] = new
            kw["fused"] = True
        out["fused_complex"] = m(fused_complex)

        def fused_grads_short(lib, args, kw):
            args[1] = args[1][:1]
            kw["fused"] = True
        out["fused_grads_short"] = m(fused_grads_short)

    if fname in ("adam", "adamw", "adagrad"):
        def fused_differentiable(lib, args, kw):
            kw.update(fused=True, differentiable=True)
        out["fused_differentiable"] = m(fused_differentiable)

    if fname == "adagrad":
        def fused_has_complex(lib, args, kw):
            kw.update(fused=True, has_complex=True)
        out["fused_has_complex"] = m(fused_has_complex)

        def sparse_weight_decay(lib, args, kw):
            args[1] = [lib.sparse([[0]], np.ones(1, np.float32), (3,)) for _ in args[1]]
            kw["weight_decay"] = 0.1
        out["sparse_with_weight_decay"] = m(sparse_weight_decay)

    if fname == "sgd":
        def fused_has_sparse(lib, args, kw):
            kw.update(fused=True, has_sparse_grad=True)
        out["fused_has_sparse_grad"] = m(fused_has_sparse)

    if fname in ("adam", "adamw"):
        def foreach_tensor_lr(lib, args, kw):
            kw.update(foreach=True, lr=lib.scalar(0.01))
        out["foreach_tensor_lr"] = m(foreach_tensor_lr)

        def foreach_tensor_beta1(lib, args, kw):
            kw.update(foreach=True, beta1=lib.scalar(0.9))
        out["foreach_tensor_beta1"] = m(foreach_tensor_beta1)

        def fused_max_list(lib, args, kw):
            args[4] = [lib.array(np.zeros(3, np.float32)) for _ in args[0]]
            kw["fused"] = True
        out["fused_unused_max_exp_avg_sqs"] = m(fused_max_list)

    if fname == "nadam":
        def mu_numbers(lib, args, kw):
            args[4] = [1.0 for _ in args[4]]
        out["mu_products_not_arrays"] = m(mu_numbers)

    if fname in ("sgd", "adam", "adamw", "rmsprop"):
        def sparse_grads(lib, args, kw):
            args[1] = [lib.sparse([[0]], np.ones(1, np.float32), (3,)) for _ in args[1]]
        if fname == "sgd":
            def sparse_grads_wd(lib, args, kw):
                sparse_grads(lib, args, kw)
                kw["weight_decay"] = 0.1
            out["sparse_with_weight_decay"] = m(sparse_grads_wd)
        else:
            out["sparse_grads"] = m(sparse_grads, type_only=True)
    return out


def error_cases():
    """``[(case id, fname, mutate, type_only)]``: every bad-input case."""
    out = []
    for fname in FUNCTIONS:
        for name, (mutate, type_only) in _mutations(fname).items():
            out.append((f"{fname}:{name}", fname, mutate, type_only))
    for name, (mutate, type_only) in _sparse_adam_mutations().items():
        out.append((f"sparse_adam:{name}", "sparse_adam", mutate, type_only))
    return out


def sparse_adam_call(lib: Lib, n: int = 2):
    params = [lib.array(np.ones((4, 2), np.float32)) for _ in range(n)]
    grads = [lib.sparse([[1, 3]], np.ones((2, 2), np.float32), (4, 2)) for _ in range(n)]
    exp_avgs = [lib.array(np.zeros((4, 2), np.float32)) for _ in range(n)]
    exp_avg_sqs = [lib.array(np.zeros((4, 2), np.float32)) for _ in range(n)]
    return [params, grads, exp_avgs, exp_avg_sqs, [1] * n], dict(eps=1e-8, beta1=0.9,
                                                                 beta2=0.999, lr=0.1,
                                                                 maximize=False)


def _sparse_adam_mutations():
    def dense_grad(lib, args, kw):
        args[1] = [lib.array(np.ones((4, 2), np.float32)) for _ in args[1]]

    def grads_short(lib, args, kw):
        args[1] = args[1][:1]

    def state_short(lib, args, kw):
        args[3] = args[3][:1]

    def step_zero(lib, args, kw):
        args[4] = [0] * len(args[4])

    def empty_grad_step_zero(lib, args, kw):
        args[1] = [lib.sparse(np.zeros((1, 0), np.int64), np.zeros((0, 2), np.float32), (4, 2))
                   for _ in args[1]]
        args[4] = [0] * len(args[4])

    return {"dense_grad": (dense_grad, False), "grads_short": (grads_short, False),
            "state_short": (state_short, False), "step_zero": (step_zero, False),
            "empty_grad_step_zero": (empty_grad_step_zero, False)}


def case_call(lib: Lib, fname: str, mutate):
    """The case's inputs in ``lib``: ``(args, kwargs, applies)``, the base
    call of ``fname`` changed by ``mutate``; ``applies`` is False when the
    case does not apply to ``fname``."""
    if fname == "sparse_adam":
        args, kwargs = sparse_adam_call(lib)
    else:
        args, kwargs = base_call(lib, fname)
    return args, kwargs, mutate(lib, args, kwargs) is not False


def call_case(lib: Lib, fname: str, mutate):
    """Build the case's inputs in ``lib`` and call the function: ``(args,
    kwargs, outcome)`` with outcome None (no error) or ``[type name,
    message]``; ``"skip"`` when the case does not apply."""
    args, kwargs, applies = case_call(lib, fname, mutate)
    if not applies:
        return args, kwargs, "skip"
    return args, kwargs, _outcome(lib.function(fname), args, kwargs)


def _outcome(fn, args, kwargs):
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*args, **kwargs)
    except Exception as error:   # noqa: BLE001 - the error is the result
        return [type(error).__name__, str(error)]
    return None
