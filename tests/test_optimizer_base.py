"""The ``Optimizer`` base class against torch 2.13 (spec section 1).

Every test asserts torch's behaviour as written in the spec (exact exception
types and messages, key orders, state_dict layout, hook order), so it means
something without torch; where torch is importable the same scenario is also
run through ``torch.optim`` and compared live.  Tests that only make sense
against a live torch are marked ``requires_torch``.

Known, documented differences that are asserted as such (not "fixed"): loaded
state arrays are copied (torch aliases them), ``state[p]`` is a ``ParamState``
whose flat entries are views, ``step`` is a 0-d float32 ndarray, the
non-Parameter message names ``Parameters (nbopt.Parameter)``, and
``load_state_dict`` validates everything before changing anything.
"""
from __future__ import annotations

import collections
import copy
import pickle
import re
import warnings

import numpy as np
import pytest

import nbopt
import nbopt.optimizer as nbo
from conftest import HAVE_TORCH, requires_torch
from nbopt import Parameter, ParameterArena

if HAVE_TORCH:
    import torch
    import torch.optim.optimizer as tro

P = Parameter

SGD_KEYS = ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach",
            "differentiable", "fused"]
ADAM_KEYS = ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach",
             "capturable", "differentiable", "fused", "decoupled_weight_decay"]
KEYS = {"SGD": SGD_KEYS, "Adam": ADAM_KEYS, "AdamW": ADAM_KEYS}

MSG_SET = ("optimizer parameters need to be organized in ordered collections, but the ordering "
           "of tensors in sets will change between runs. Please use a list instead.")
MSG_NAMES_MIXED = "all optimizer params should be with/without names. Some param names are missing"
MSG_NON_PARAM = ("optimizer can only optimize Parameters (nbopt.Parameter), "
                 "but one of the params is ")
MSG_NON_TENSOR = "optimizer can only optimize Tensors, but one of the params is "
# torch's warning less its pointer to PyTorch's issue tracker (issue 16)
MSG_DUP = ("optimizer contains a parameter group with duplicate parameters; in future, this "
           "will cause an error")
MSG_GROUP_NAMES = ("all optimizer param groups should be with/without names. "
                   "cannot add param group {} to the optimizer")
MSG_OVERLAP = "some parameters appear in more than one parameter group"
MSG_EMPTY = "optimizer got an empty parameter list"
MSG_NOT_ITERABLE = ("params argument given to the optimizer should be an iterable of Tensors "
                    "or dicts, but got ")
MSG_NGROUPS = "loaded state dict has a different number of parameter groups"
MSG_GROUP_SIZE = ("loaded state dict contains a parameter group that doesn't match the size "
                  "of optimizer's group")
MSG_HOOK_RET = r"^<function [\w.]+ at 0x[0-9a-fA-F]+> must return None or a tuple of " \
               r"\(new_args, new_kwargs\), but got {}\.$"


# ------------------------------------------------------------------ helpers


def vals(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


def nb_params(values):
    return [P(v.copy()) for v in values]


def th_params(values):
    return [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]


def pair(*shapes, seed=0):
    """The same float64 values as nbopt and (when importable) torch parameters."""
    v = vals(*shapes, seed=seed)
    return nb_params(v), (th_params(v) if HAVE_TORCH else None)


def opt_cls(lib, name):
    return getattr(nbopt if lib == "nb" else torch.optim, name)


def grad_for(step, i, shape, skip=True):
    """Deterministic gradient of parameter ``i`` at ``step``; None on some steps."""
    if skip and (step + i) % 3 == 2:
        return None
    rng = np.random.default_rng(1000 * step + i)
    return rng.standard_normal(shape)


def set_grads(params, step, lib="nb", skip=True):
    for i, p in enumerate(params):
        g = grad_for(step, i, tuple(p.shape), skip)
        if lib == "nb":
            p.grad = g
        else:
            p.grad = None if g is None else torch.from_numpy(g)


def to_np(x):
    return x.detach().numpy() if HAVE_TORCH and isinstance(x, torch.Tensor) else np.asarray(x)


def torch_sd_to_numpy(obj):
    """A torch state_dict as NumPy: tensors -> arrays (``step`` -> 0-d float32)."""
    if HAVE_TORCH and isinstance(obj, torch.Tensor):
        return obj.detach().numpy().copy()
    if isinstance(obj, dict):
        return {k: torch_sd_to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [torch_sd_to_numpy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(torch_sd_to_numpy(v) for v in obj)
    return obj


def copy_sd(sd):
    """A deep copy of an nbopt state dict made of plain dicts and arrays."""
    if isinstance(sd, np.ndarray):
        return np.array(sd, copy=True)
    if isinstance(sd, dict):
        return {k: copy_sd(v) for k, v in sd.items()}
    if isinstance(sd, list):
        return [copy_sd(v) for v in sd]
    if isinstance(sd, tuple):
        return tuple(copy_sd(v) for v in sd)
    return sd


def assert_same(a, b, where="obj"):
    """Type-exact structural equality; arrays bit for bit (dtype and shape too)."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
        return
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where


def param_values(opt):
    return [np.array(p, copy=True) for g in opt.param_groups for p in g["params"]]


def state_values(opt):
    """``{position: {key: value copy}}`` over all params, in group order."""
    out = {}
    k = 0
    for g in opt.param_groups:
        for p in g["params"]:
            if p in opt.state:
                out[k] = {key: copy_sd(v) for key, v in opt.state[p].items()}
            k += 1
    return out


def compare_with_torch(nb_opt, th_opt, rtol=0.0, atol=1e-12):
    """Parameters and every state entry of both optimizers, position by position."""
    nbp = [p for g in nb_opt.param_groups for p in g["params"]]
    thp = [p for g in th_opt.param_groups for p in g["params"]]
    assert len(nbp) == len(thp)
    for i, (a, b) in enumerate(zip(nbp, thp)):
        np.testing.assert_allclose(np.asarray(a), to_np(b), rtol=rtol, atol=atol,
                                   err_msg=f"param {i}")
        assert (a in nb_opt.state) == (b in th_opt.state and len(th_opt.state[b]) > 0)
        if a in nb_opt.state:
            sa, sb = nb_opt.state[a], th_opt.state[b]
            assert list(sa.keys()) == list(sb.keys()), i
            for key in sa:
                np.testing.assert_allclose(np.asarray(sa[key]), to_np(sb[key]), rtol=rtol,
                                           atol=atol, err_msg=f"state {i} {key}")


class Recorder:
    def __init__(self):
        self.calls = []

    def hook(self, name, ret=None):
        def f(*args):
            self.calls.append((name, args))
            return ret
        return f

    @property
    def names(self):
        return [c[0] for c in self.calls]


@pytest.fixture
def global_hooks():
    """Handles of global step hooks registered by a test, removed afterwards."""
    handles = []
    yield handles
    for h in handles:
        h.remove()


# ------------------------------------------------------------------ 1.1 constructor


@pytest.mark.parametrize("lib", ["nb", "torch"])
def test_constructor_list_of_params(lib):
    if lib == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    a, b = (nb_params if lib == "nb" else th_params)(vals(2, 3))
    opt = opt_cls(lib, "SGD")([a, b], lr=0.1)
    assert len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert g["params"][0] is a and g["params"][1] is b and len(g["params"]) == 2
    assert list(g.keys()) == ["params"] + SGD_KEYS
    assert "param_names" not in g
    assert g["lr"] == 0.1
    assert len(opt.state) == 0 and isinstance(opt.state, collections.defaultdict)


def test_constructor_group_dicts_are_the_callers_objects():
    a, b = nb_params(vals(2, 3))
    g0, g1 = {"params": [a]}, {"params": (b,), "lr": 0.5}
    opt = nbopt.SGD([g0, g1], lr=0.1)
    assert opt.param_groups[0] is g0 and opt.param_groups[1] is g1
    assert g1["params"] == [b] and type(g1["params"]) is list   # tuple -> list
    assert g0["lr"] == 0.1 and g1["lr"] == 0.5


def test_constructor_named_params():
    (a, b), th = pair(2, 3)
    opt = nbopt.Adam([("w", a), ("b", b)], lr=0.1)
    g = opt.param_groups[0]
    assert g["params"][0] is a and g["params"][1] is b
    assert g["param_names"] == ["w", "b"]
    assert list(g.keys()) == ["params", "param_names"] + ADAM_KEYS
    if HAVE_TORCH:
        t = torch.optim.Adam([("w", th[0]), ("b", th[1])], lr=0.1)
        assert list(t.param_groups[0].keys()) == list(g.keys())
        assert t.param_groups[0]["param_names"] == ["w", "b"]


def test_constructor_generator_and_top_level_set():
    a, b = nb_params(vals(2, 3))
    opt = nbopt.SGD((p for p in [a, b]), lr=0.1)
    assert opt.param_groups[0]["params"] == [a, b]
    # a set at the top level is accepted silently (only a group's "params" set is refused)
    opt = nbopt.SGD({a, b}, lr=0.1)
    ps = opt.param_groups[0]["params"]
    assert len(ps) == 2 and {id(p) for p in ps} == {id(a), id(b)}
    if HAVE_TORCH:
        ta, tb = th_params(vals(2, 3))
        t = torch.optim.SGD({ta, tb}, lr=0.1)
        assert len(t.param_groups[0]["params"]) == 2


def test_constructor_single_parameter_is_type_error():
    a = P(np.zeros(3))
    with pytest.raises(TypeError) as e:
        nbopt.SGD(a, lr=0.1)
    assert str(e.value) == MSG_NOT_ITERABLE + "nbopt.parameter.Parameter"
    # a plain ndarray is refused the same way (it is nbopt's Tensor)
    with pytest.raises(TypeError) as e:
        nbopt.Adam(np.zeros(3))
    assert str(e.value) == MSG_NOT_ITERABLE + "numpy.ndarray"
    if HAVE_TORCH:
        with pytest.raises(TypeError) as e:
            torch.optim.SGD(torch.nn.Parameter(torch.zeros(3)), lr=0.1)
        assert str(e.value) == MSG_NOT_ITERABLE + "torch.FloatTensor"


@pytest.mark.parametrize("params", [[], (), iter([])], ids=["list", "tuple", "iter"])
def test_constructor_empty_is_value_error(params):
    with pytest.raises(ValueError, match=f"^{MSG_EMPTY}$"):
        nbopt.SGD(params, lr=0.1)
    if HAVE_TORCH:
        with pytest.raises(ValueError, match=f"^{MSG_EMPTY}$"):
            torch.optim.SGD(list(params), lr=0.1)


def test_constructor_single_group_dict_is_iterated_as_keys():
    # list(dict) gives its keys: the strings are then refused as parameters
    (a,), th = pair(2)
    _both(lambda: nbopt.SGD({"params": [a]}), lambda: torch.optim.SGD({"params": th}),
          TypeError, MSG_NON_PARAM + "str", MSG_NON_TENSOR + "str")


def test_constructor_explicit_empty_group_accepted():
    opt = nbopt.SGD([{"params": []}], lr=0.1)
    assert opt.param_groups[0]["params"] == []
    opt.step()      # nothing to do
    assert opt.state_dict() == {"state": {}, "param_groups": [
        {**dict(zip(SGD_KEYS, [0.1, 0, 0, 0, False, False, None, False, None])), "params": []}]}
    if HAVE_TORCH:
        t = torch.optim.SGD([{"params": []}], lr=0.1)
        assert t.state_dict() == opt.state_dict()


def test_constructor_hook_registries_and_step_patch():
    (a,), _ = pair(2)
    opt = nbopt.SGD([a])
    for name in nbo._HOOK_DICTS:
        d = getattr(opt, name)
        assert type(d) is collections.OrderedDict and len(d) == 0
    assert getattr(type(opt).step, "hooked", False)
    assert opt.defaults is not opt.param_groups[0]


# ------------------------------------------------------------------ defaults and key order


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_defaults_keys_and_values(name):
    (a,), th = pair(2)
    opt = getattr(nbopt, name)([a])
    assert list(opt.defaults.keys()) == KEYS[name]
    expected = {
        "SGD": [1e-3, 0, 0, 0, False, False, None, False, None],
        "Adam": [1e-3, (0.9, 0.999), 1e-8, 0, False, False, None, False, False, None, False],
        "AdamW": [1e-3, (0.9, 0.999), 1e-8, 1e-2, False, False, None, False, False, None, True],
    }[name]
    assert_same(dict(zip(KEYS[name], expected)), opt.defaults)
    if HAVE_TORCH:
        t = getattr(torch.optim, name)(th)
        assert list(t.defaults.keys()) == list(opt.defaults.keys())
        assert_same(t.defaults, opt.defaults)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_group_key_order_auto_and_explicit(name):
    nbp, thp = pair(2, 3, 4, 5)
    override = {"SGD": {"momentum": 0.5}, "Adam": {"betas": (0.5, 0.6)},
                "AdamW": {"eps": 1e-3}}[name]

    def build(lib, ps):
        cls = opt_cls(lib, name)
        auto = cls([ps[0], ps[1]], lr=0.1)
        explicit = cls([{"weight_decay": 0.25, "params": [ps[0]], **override},
                        {"params": [ps[1]], "lr": 0.5},
                        {"params": [ps[2]]}], lr=0.1)
        named = cls([{"params": [("a", ps[0])], "lr": 0.2}, {"params": [("c", ps[3])]}])
        return auto, explicit, named

    got = [[list(g.keys()) for g in o.param_groups] for o in build("nb", nbp)]
    rest = lambda given: [k for k in KEYS[name] if k not in given]  # noqa: E731
    first = ["weight_decay", "params", *override]
    assert got == [
        [["params"] + KEYS[name]],
        [first + rest(first), ["params", "lr"] + rest(["lr"]), ["params"] + KEYS[name]],
        [["params", "lr", "param_names"] + rest(["lr"]), ["params", "param_names"] + KEYS[name]],
    ]
    explicit = build("nb", nb_params(vals(2, 3, 4, 5)))[1]
    assert explicit.param_groups[0]["weight_decay"] == 0.25
    for k, v in override.items():
        assert explicit.param_groups[0][k] == v
    assert explicit.param_groups[1]["lr"] == 0.5 and explicit.param_groups[2]["lr"] == 0.1
    if HAVE_TORCH:
        assert got == [[list(g.keys()) for g in o.param_groups] for o in build("torch", thp)]


# ------------------------------------------------------------------ 1.3 add_param_group


def _both(fn_nb, fn_th, exc, nb_msg, th_msg=None, warn=None):
    """Run the same scenario through nbopt and torch; both raise ``exc``."""
    with pytest.raises(exc) as e:
        fn_nb()
    if nb_msg is not None:
        assert str(e.value) == nb_msg
    if HAVE_TORCH:
        with pytest.raises(exc) as e:
            fn_th()
        if nb_msg is not None:
            assert str(e.value) == (nb_msg if th_msg is None else th_msg)


def test_add_param_group_1_not_a_dict():
    (a, b), th = pair(2, 3)
    opt = nbopt.SGD([a])
    topt = torch.optim.SGD([th[0]]) if HAVE_TORCH else None
    for bad, tbad in [([b], [th[1]] if th else None), (b, th[1] if th else None), ("x", "x")]:
        _both(lambda: opt.add_param_group(bad), lambda: topt.add_param_group(tbad), TypeError,
              f"param_group must be a dict, but got {type(bad)}",
              f"param_group must be a dict, but got {type(tbad)}")
    assert len(opt.param_groups) == 1


def test_add_param_group_2_params_key_and_forms():
    (a, b, c), th = pair(2, 3, 4)
    opt = nbopt.SGD([a])
    topt = torch.optim.SGD([th[0]]) if HAVE_TORCH else None
    # missing key -> bare KeyError('params')
    with pytest.raises(KeyError) as e:
        opt.add_param_group({"lr": 0.1})
    assert e.value.args == ("params",)
    if HAVE_TORCH:
        with pytest.raises(KeyError) as e:
            topt.add_param_group({"lr": 0.1})
        assert e.value.args == ("params",)
    # a set -> TypeError
    _both(lambda: opt.add_param_group({"params": {b}}),
          lambda: topt.add_param_group({"params": {th[1]}}), TypeError, MSG_SET)
    # the set check comes before the names check (2 before 3)
    _both(lambda: opt.add_param_group({"params": {("b", b), c}}),
          lambda: topt.add_param_group({"params": {("b", th[1]), th[2]}}), TypeError, MSG_SET)
    # a single Parameter is wrapped in a list; a tuple / generator becomes a list
    g = {"params": b}
    opt.add_param_group(g)
    assert g["params"] == [b] and g["params"][0] is b and opt.param_groups[1] is g
    g2 = {"params": (x for x in [c])}
    opt.add_param_group(g2)
    assert type(g2["params"]) is list and g2["params"][0] is c
    assert len(opt.param_groups) == 3


def test_add_param_group_3_names_mixed():
    (a, b, c), th = pair(2, 3, 4)
    opt = nbopt.SGD([a])
    topt = torch.optim.SGD([th[0]]) if HAVE_TORCH else None
    _both(lambda: opt.add_param_group({"params": [("b", b), c]}),
          lambda: topt.add_param_group({"params": [("b", th[1]), th[2]]}),
          ValueError, MSG_NAMES_MIXED)
    # checked before the Parameter type check (3 before 4)
    _both(lambda: opt.add_param_group({"params": [("b", b), 1.5]}),
          lambda: topt.add_param_group({"params": [("b", th[1]), 1.5]}),
          ValueError, MSG_NAMES_MIXED)
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("bad, tname", [(np.zeros(2), "numpy.ndarray"), (1.5, "float"),
                                        (None, "NoneType"), ([1.0], "list"), ("w", "str")])
def test_add_param_group_4_non_parameter(bad, tname):
    (a,), th = pair(2)
    with pytest.raises(TypeError) as e:
        nbopt.SGD([a, bad])
    assert str(e.value) == MSG_NON_PARAM + tname
    opt = nbopt.SGD([a])
    with pytest.raises(TypeError) as e:
        opt.add_param_group({"params": [bad]})
    assert str(e.value) == MSG_NON_PARAM + tname
    assert len(opt.param_groups) == 1
    if HAVE_TORCH and not isinstance(bad, np.ndarray):
        with pytest.raises(TypeError) as e:
            torch.optim.SGD([th[0], bad])
        assert str(e.value) == MSG_NON_TENSOR + tname


def test_add_param_group_4_non_contiguous_parameter():
    # nbopt-specific: the analog of torch's "can't optimize a non-leaf Tensor"
    base = P(np.zeros(8))
    strided = np.lib.stride_tricks.as_strided(base, shape=(4,), strides=(16,), subok=True)
    assert isinstance(strided, Parameter) and not strided.flags.c_contiguous
    with pytest.raises(ValueError, match="^can't optimize a non-contiguous Parameter$"):
        nbopt.SGD([strided])
    # integer parameters are accepted (as in torch), if they do not require grad
    opt = nbopt.SGD([P(np.arange(3), requires_grad=False)])
    assert opt.param_groups[0]["params"][0].dtype.kind == "i"


class Toy(nbopt.Optimizer):
    def __init__(self, params, lr=nbo.required, momentum=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum})


if HAVE_TORCH:
    class TToy(torch.optim.Optimizer):
        def __init__(self, params, lr=tro.required, momentum=0.0):
            super().__init__(params, {"lr": lr, "momentum": momentum})


def test_add_param_group_5_required_and_setdefault():
    (a, b, c), th = pair(2, 3, 4)
    assert repr(nbo.required) == "<required parameter>"
    if HAVE_TORCH:
        assert repr(tro.required) == repr(nbo.required)
    msg = "parameter group didn't specify a value of required optimization parameter lr"
    _both(lambda: Toy([a]), lambda: TToy([th[0]]), ValueError, msg)
    opt = Toy([{"params": [a], "lr": 0.1}])
    assert list(opt.param_groups[0].keys()) == ["params", "lr", "momentum"]
    _both(lambda: opt.add_param_group({"params": [b]}),
          lambda: TToy([{"params": [th[0]], "lr": 0.1}]).add_param_group({"params": [th[1]]}),
          ValueError, msg)
    # checked after the type check (4 before 5)
    with pytest.raises(TypeError):
        opt.add_param_group({"params": [1.0]})
    # group values win over defaults
    g = {"params": [c], "lr": 0.3, "momentum": 0.7}
    opt.add_param_group(g)
    assert g["momentum"] == 0.7 and g["lr"] == 0.3
    # the base class step is abstract
    with pytest.raises(NotImplementedError):
        opt.step()


def test_add_param_group_6_duplicate_warning_only():
    (a, b), th = pair(2, 3)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        opt = nbopt.SGD([a, b, a], lr=0.1)
    msgs = [str(x.message) for x in w if issubclass(x.category, UserWarning)]
    assert msgs == [MSG_DUP]
    assert opt.param_groups[0]["params"] == [a, b, a]    # the duplicate stays
    if HAVE_TORCH:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch.optim.SGD([th[0], th[1], th[0]], lr=0.1)
        # torch's, less its "; see github.com/pytorch/pytorch/issues/40967 ..." pointer
        assert [str(x.message).split("; see github.com")[0] for x in w
                if issubclass(x.category, UserWarning)] == msgs
    # no warning without duplicates
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nbopt.SGD([a, b])


def test_add_param_group_5_before_6_required_before_duplicate_warning():
    (a,), _ = pair(2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="required optimization parameter lr"):
            Toy([a, a])
    assert not [x for x in w if MSG_DUP in str(x.message)]


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_duplicate_parameter_updated_twice(name):
    (a, b), th = pair(3, 2, seed=3)
    opts = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = getattr(nbopt, name)([a, a, b], **opts)
        topt = getattr(torch.optim, name)([th[0], th[0], th[1]], **opts) if HAVE_TORCH else None
    for step in range(3):
        set_grads([a, b], step, skip=False)
        opt.step()
        if HAVE_TORCH:
            set_grads(th, step, "torch", skip=False)
            topt.step()
            np.testing.assert_allclose(a, to_np(th[0]), rtol=0, atol=1e-12)
            np.testing.assert_allclose(b, to_np(th[1]), rtol=0, atol=1e-12)
        if step == 0:
            sd = opt.state_dict()
            assert sd["param_groups"][0]["params"] == [1, 1, 2]
            assert list(sd["state"].keys()) == [1, 2]
            if name == "Adam":
                assert sd["state"][1]["step"] == 2.0 and sd["state"][2]["step"] == 1.0
            if HAVE_TORCH:
                tsd = topt.state_dict()
                assert tsd["param_groups"][0]["params"] == [1, 1, 2]
                assert list(tsd["state"].keys()) == [1, 2]
                for k in tsd["state"]:
                    for key, v in tsd["state"][k].items():
                        np.testing.assert_allclose(sd["state"][k][key], to_np(v), rtol=0,
                                                   atol=1e-12)
    if name == "Adam":
        assert opt.state[a]["step"] == 6.0 and opt.state[b]["step"] == 3.0


def test_duplicate_adam_first_step_value():
    # one step() over [a, a]: two Adam updates with the same gradient
    a = P(np.array([1.0, 2.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = nbopt.Adam([a, a], lr=0.1)
    a.grad = np.array([0.5, -1.0])
    opt.step()
    ref = P(np.array([1.0, 2.0]))
    r = nbopt.Adam([ref], lr=0.1)
    for _ in range(2):
        ref.grad = np.array([0.5, -1.0])
        r.step()
    np.testing.assert_array_equal(a, ref)
    assert opt.state[a]["step"] == 2.0


def test_add_param_group_7_names_consistency():
    (a, b, c), th = pair(2, 3, 4)
    opt = nbopt.SGD([a])
    topt = torch.optim.SGD([th[0]]) if HAVE_TORCH else None
    _both(lambda: opt.add_param_group({"params": [("b", b)]}),
          lambda: topt.add_param_group({"params": [("b", th[1])]}),
          ValueError, MSG_GROUP_NAMES.format("with names"))
    opt = nbopt.SGD([("a", a)])
    topt = torch.optim.SGD([("a", th[0])]) if HAVE_TORCH else None
    _both(lambda: opt.add_param_group({"params": [b]}),
          lambda: topt.add_param_group({"params": [th[1]]}),
          ValueError, MSG_GROUP_NAMES.format("without names"))
    # in the constructor too
    _both(lambda: nbopt.SGD([{"params": [a]}, {"params": [("b", b)]}]),
          lambda: torch.optim.SGD([{"params": [th[0]]}, {"params": [("b", th[1])]}]),
          ValueError, MSG_GROUP_NAMES.format("with names"))
    # names checked before overlap (7 before 8), after the duplicate warning (6 before 7)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="without names"):
            opt.add_param_group({"params": [a, a]})
    assert [str(x.message) for x in w] == [MSG_DUP]
    opt.add_param_group({"params": [("c", c)]})
    assert opt.param_groups[1]["param_names"] == ["c"]


def test_add_param_group_8_overlap():
    (a, b), th = pair(2, 3)
    opt = nbopt.SGD([a, b], lr=0.1)
    topt = torch.optim.SGD([th[0], th[1]], lr=0.1) if HAVE_TORCH else None
    g = {"params": [b], "lr": 0.5}
    tg = {"params": [th[1]], "lr": 0.5} if HAVE_TORCH else None
    _both(lambda: opt.add_param_group(g), lambda: topt.add_param_group(tg), ValueError,
          MSG_OVERLAP)
    _both(lambda: nbopt.SGD([{"params": [a]}, {"params": [b, a]}]),
          lambda: torch.optim.SGD([{"params": [th[0]]}, {"params": [th[1], th[0]]}]),
          ValueError, MSG_OVERLAP)
    assert len(opt.param_groups) == 1
    # the rejected dict was still filled in (torch mutates it before the check)
    assert list(g.keys()) == ["params", "lr"] + [k for k in SGD_KEYS if k != "lr"]
    if HAVE_TORCH:
        assert list(tg.keys()) == list(g.keys())


# ------------------------------------------------------------------ 1.4 zero_grad


def test_zero_grad_set_to_none_skips_param():
    (a, b), th = pair(2, 3)
    opt = nbopt.Adam([a, b], lr=0.1)
    topt = torch.optim.Adam(th, lr=0.1) if HAVE_TORCH else None
    set_grads([a, b], 0, skip=False)
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    b.grad = np.ones(3)
    before = a.copy()
    opt.step()
    np.testing.assert_array_equal(a, before)           # skipped entirely
    assert a not in opt.state and b in opt.state
    assert list(opt.state_dict()["state"].keys()) == [1]
    if HAVE_TORCH:
        set_grads(th, 0, "torch", skip=False)
        topt.zero_grad()
        assert th[0].grad is None
        th[1].grad = torch.ones(3, dtype=torch.float64)
        topt.step()
        assert list(topt.state_dict()["state"].keys()) == [1]
        compare_with_torch(opt, topt)


def test_zero_grad_false_keeps_array_and_steps():
    (a, b), th = pair(2, 3)
    opt = nbopt.AdamW([a, b], lr=0.1, weight_decay=0.5)
    set_grads([a, b], 0, skip=False)
    ga = a.grad
    opt.zero_grad(set_to_none=False)
    assert a.grad is ga and np.all(ga == 0) and np.all(b.grad == 0)
    before = a.copy()
    opt.step()                                          # a zero grad is a real step
    assert opt.state[a]["step"] == 1.0
    np.testing.assert_allclose(a, before * (1 - 0.1 * 0.5), rtol=0, atol=1e-15)
    if HAVE_TORCH:
        topt = torch.optim.AdamW(th, lr=0.1, weight_decay=0.5)
        set_grads(th, 0, "torch", skip=False)
        tga = th[0].grad
        topt.zero_grad(set_to_none=False)
        assert th[0].grad is tga and bool((tga == 0).all())
        topt.step()
        compare_with_torch(opt, topt)
    # params without a grad are left alone
    a.grad = None
    opt.zero_grad(set_to_none=False)
    assert a.grad is None


# ------------------------------------------------------------------ 1.5 step(closure)


@pytest.mark.parametrize("lib", ["nb", "torch"])
def test_step_closure_called_once_before_update(lib):
    if lib == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    (a,) = (nb_params if lib == "nb" else th_params)(vals(3))
    opt = opt_cls(lib, "SGD")([a], lr=0.5)
    seen = []
    start = np.array(to_np(a), copy=True)

    def closure():
        seen.append(np.array(to_np(a), copy=True))
        # the closure computes the gradient that this step then uses
        a.grad = (np.full(3, 2.0) if lib == "nb" else torch.full((3,), 2.0, dtype=torch.float64))
        return 42.0

    assert opt.step(closure) == 42.0
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], start)
    np.testing.assert_allclose(to_np(a), start - 1.0, rtol=0, atol=1e-15)
    assert opt.step(closure=closure) == 42.0 and len(seen) == 2
    assert opt.step() is None


# ------------------------------------------------------------------ 1.6 step hooks


@pytest.mark.parametrize("lib", ["nb", "torch"])
def test_step_hooks_args_and_order(lib, global_hooks):
    if lib == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    (a,) = (nb_params if lib == "nb" else th_params)(vals(2))
    opt = opt_cls(lib, "SGD")([a], lr=0.1)
    mod = nbo if lib == "nb" else tro
    rec = Recorder()
    global_hooks.append(mod.register_optimizer_step_pre_hook(rec.hook("global_pre")))
    global_hooks.append(mod.register_optimizer_step_post_hook(rec.hook("global_post")))
    h1 = opt.register_step_pre_hook(rec.hook("pre1"))
    h2 = opt.register_step_pre_hook(rec.hook("pre2"))
    opt.register_step_post_hook(rec.hook("post1"))
    opt.register_step_post_hook(rec.hook("post2"))

    def closure():
        rec.calls.append(("step", ()))
        return 1.0

    assert opt.step(closure) == 1.0
    assert rec.names == ["global_pre", "pre1", "pre2", "step", "post1", "post2", "global_post"]
    for name, args in rec.calls:
        if name != "step":
            assert args[0] is opt
            assert args[1] == (opt, closure) and args[1][0] is opt
            assert args[2] == {}
    rec.calls.clear()
    opt.step(closure=closure)
    assert rec.calls[0][1][1] == (opt,) and rec.calls[0][1][2] == {"closure": closure}
    rec.calls.clear()
    opt.step()
    assert rec.calls[0][1][1:] == ((opt,), {})
    # remove: idempotent, and only that hook goes
    h1.remove()
    h1.remove()
    rec.calls.clear()
    opt.step()
    assert rec.names == ["global_pre", "pre2", "post1", "post2", "global_post"]
    with h2:
        pass
    for h in global_hooks:
        h.remove()
    rec.calls.clear()
    opt.step()
    assert rec.names == ["post1", "post2"]
    # global hooks apply to every optimizer instance, including new ones
    h = mod.register_optimizer_step_pre_hook(rec.hook("g"))
    global_hooks.append(h)
    other = opt_cls(lib, "Adam")([a])
    rec.calls.clear()
    other.step()
    assert rec.names == ["g"] and rec.calls[0][1][0] is other


@pytest.mark.parametrize("lib", ["nb", "torch"])
def test_step_pre_hook_replaces_args(lib, global_hooks):
    if lib == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    (a,) = (nb_params if lib == "nb" else th_params)(vals(2))
    opt = opt_cls(lib, "SGD")([a], lr=0.1)
    seen = []

    def c1():
        seen.append("c1")
        return 1

    def c2():
        seen.append("c2")
        return 2

    opt.register_step_pre_hook(lambda o, args, kwargs: ((o,), {"closure": c2}))
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre2", args, kwargs)))
    post = []
    opt.register_step_post_hook(lambda o, args, kwargs: post.append((args, kwargs)))
    assert opt.step(c1) == 2
    assert seen == [("pre2", (opt,), {"closure": c2}), "c2"]
    assert post == [((opt,), {"closure": c2})]


@pytest.mark.parametrize("bad", [5, (1, 2, 3), [(), {}], "ab"])
@pytest.mark.parametrize("lib", ["nb", "torch"])
def test_step_pre_hook_bad_return(lib, bad, global_hooks):
    if lib == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    (a,) = (nb_params if lib == "nb" else th_params)(vals(2))
    a.grad = np.ones(2) if lib == "nb" else torch.ones(2, dtype=torch.float64)
    opt = opt_cls(lib, "SGD")([a], lr=0.1)
    before = np.array(to_np(a), copy=True)
    opt.register_step_pre_hook(lambda *args: bad)
    with pytest.raises(RuntimeError) as e:
        opt.step()
    assert re.match(MSG_HOOK_RET.format(re.escape(str(bad))), str(e.value)), str(e.value)
    assert ".step at 0x" in str(e.value)
    np.testing.assert_array_equal(to_np(a), before)       # the step did not run


def test_global_pre_hook_bad_return(global_hooks):
    (a,), _ = pair(2)
    opt = nbopt.SGD([a])
    global_hooks.append(nbo.register_optimizer_step_pre_hook(lambda *args: 7))
    with pytest.raises(RuntimeError, match=MSG_HOOK_RET.format("7")):
        opt.step()


def test_global_hooks_not_reexported_at_top_level():
    # torch keeps them in torch.optim.optimizer only; nbopt in nbopt.optimizer
    assert not hasattr(nbopt, "register_optimizer_step_pre_hook")
    assert callable(nbo.register_optimizer_step_post_hook)
    if HAVE_TORCH:
        assert not hasattr(torch.optim, "register_optimizer_step_pre_hook")


def test_removable_handle():
    from nbopt.hooks import RemovableHandle

    (a,), _ = pair(2)
    opt = nbopt.SGD([a])
    h = opt.register_step_post_hook(lambda *x: None)
    assert isinstance(h, RemovableHandle)
    assert list(opt._optimizer_step_post_hooks.keys()) == [h.id]
    h2 = opt.register_state_dict_pre_hook(lambda o: None)
    assert h2.id != h.id
    with h:
        assert h.id in opt._optimizer_step_post_hooks
    assert h.id not in opt._optimizer_step_post_hooks
    h.remove()
    # the handle does not keep the registry alive
    d = collections.OrderedDict()
    h3 = RemovableHandle(d)
    d[h3.id] = 1
    del d
    h3.remove()


# ------------------------------------------------------------------ 1.7 state_dict


def _adam_three_groups(lib, ps, names=False):
    cls = opt_cls(lib, "Adam")
    if names:
        return cls([{"params": [("a", ps[0]), ("b", ps[1])]},
                    {"params": [("c", ps[2])], "lr": 0.1}], lr=0.01)
    return cls([{"params": [ps[0], ps[1]]}, {"params": [ps[2]], "lr": 0.1}], lr=0.01)


@pytest.mark.parametrize("names", [False, True])
def test_state_dict_format(names):
    nbp, thp = pair(2, 3, 4)
    opt = _adam_three_groups("nb", nbp, names)
    nbp[0].grad, nbp[2].grad = np.ones(2), np.ones(4)     # b has no grad
    opt.step()
    sd = opt.state_dict()
    assert list(sd.keys()) == ["state", "param_groups"]
    assert list(sd["state"].keys()) == [0, 2]
    assert sd["state"][0] is opt.state[nbp[0]] and sd["state"][2] is opt.state[nbp[2]]
    assert list(sd["state"][0].keys()) == ["step", "exp_avg", "exp_avg_sq"]
    assert sd["state"][0]["exp_avg"] is opt.state[nbp[0]]["exp_avg"]
    step = sd["state"][0]["step"]
    assert type(step) is np.ndarray and step.shape == () and step.dtype == np.float32
    extra = ["param_names"] if names else []
    g0, g1 = sd["param_groups"]
    assert list(g0.keys()) == extra + ADAM_KEYS + ["params"]
    assert g0["params"] == [0, 1] and g1["params"] == [2]
    assert g0["lr"] == 0.01 and g1["lr"] == 0.1
    assert g0 is not opt.param_groups[0]
    if names:
        assert g0["param_names"] == ["a", "b"] and g1["param_names"] == ["c"]
    g0["lr"] = 99.0                                # a new dict: the group is unchanged
    assert opt.param_groups[0]["lr"] == 0.01
    if HAVE_TORCH:
        topt = _adam_three_groups("torch", thp, names)
        thp[0].grad = torch.ones(2, dtype=torch.float64)
        thp[2].grad = torch.ones(4, dtype=torch.float64)
        topt.step()
        tsd = topt.state_dict()
        assert tsd["state"][0] is topt.state[thp[0]]
        assert list(tsd["state"].keys()) == list(sd["state"].keys())
        for k in tsd["state"]:
            assert list(tsd["state"][k].keys()) == list(sd["state"][k].keys())
        sd = opt.state_dict()
        assert tsd["param_groups"] == sd["param_groups"]
        assert [list(g.keys()) for g in tsd["param_groups"]] == \
            [list(g.keys()) for g in sd["param_groups"]]
        assert tsd["state"][0]["step"].dtype == torch.float32 and tsd["state"][0]["step"].ndim == 0
        compare_with_torch(opt, topt)


def test_state_dict_live_values_and_tensor_lr():
    (a, b), _ = pair(2, 3)
    lr = np.array([0.1])
    opt = nbopt.SGD([a, b], lr=lr, momentum=0.9)
    a.grad = np.ones(2)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["lr"] is lr               # values are not copied
    buf = sd["state"][0]["momentum_buffer"]
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_allclose(buf, 0.9 + 1.0)             # live: the view sees the update
    assert list(sd["state"].keys()) == [0]
    # loading deep-copies the saved groups: the loaded lr is an equal copy
    opt.load_state_dict(sd)
    new_lr = opt.param_groups[0]["lr"]
    assert new_lr is not lr and type(new_lr) is np.ndarray and new_lr.tolist() == [0.1]
    if HAVE_TORCH:
        tlr = torch.tensor([0.1])
        t = torch.optim.SGD(th_params(vals(2)), lr=tlr, momentum=0.9)
        assert t.state_dict()["param_groups"][0]["lr"] is tlr
        t.load_state_dict(t.state_dict())
        assert t.param_groups[0]["lr"] is not tlr


@pytest.mark.parametrize("momentum", [0, 0.0])
def test_state_dict_sgd_without_momentum_has_empty_state(momentum):
    (a, b), th = pair(2, 3)
    opt = nbopt.SGD([a, b], lr=0.1, momentum=momentum)
    set_grads([a, b], 0, skip=False)
    opt.step()
    assert opt.state_dict()["state"] == {}
    assert len(opt.state) == 0
    if HAVE_TORCH:
        topt = torch.optim.SGD(th, lr=0.1, momentum=momentum)
        set_grads(th, 0, "torch", skip=False)
        topt.step()
        assert topt.state_dict()["state"] == {}
        assert len(topt.state) == 0


def test_state_dict_keeps_empty_and_foreign_state_entries():
    (a, b), th = pair(2, 3)
    opt = nbopt.Adam([a, b])
    opt.state[b]        # touching a param's state creates an empty entry (defaultdict)
    opt.state["legacy"] = {"x": 1}
    sd = opt.state_dict()
    assert sd["state"] == {1: {}, "legacy": {"x": 1}}
    if HAVE_TORCH:
        topt = torch.optim.Adam(th)
        topt.state[th[1]]
        topt.state["legacy"] = {"x": 1}
        assert topt.state_dict()["state"] == sd["state"]
    # an empty entry is initialised at the next step like a missing one
    set_grads([a, b], 0, skip=False)
    opt.step()
    assert opt.state[b]["step"] == 1.0


@pytest.mark.parametrize("lib", ["nb", "torch"])
def test_state_dict_hooks(lib):
    if lib == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    (a,) = (nb_params if lib == "nb" else th_params)(vals(2))
    opt = opt_cls(lib, "SGD")([a], lr=0.1)
    rec = Recorder()
    opt.register_state_dict_pre_hook(rec.hook("pre1"))
    opt.register_state_dict_pre_hook(rec.hook("pre0"), prepend=True)
    opt.register_state_dict_post_hook(rec.hook("post1"))
    opt.register_state_dict_post_hook(rec.hook("post0"), prepend=True)
    sd = opt.state_dict()
    assert rec.names == ["pre0", "pre1", "post0", "post1"]
    assert rec.calls[0][1] == (opt,)
    assert rec.calls[2][1][0] is opt and rec.calls[2][1][1] is rec.calls[3][1][1]
    assert rec.calls[3][1][1] == sd
    # a post hook's non-None return replaces the result, seen by the next hook
    new = {"replaced": True}
    h = opt.register_state_dict_post_hook(lambda o, s: new, prepend=True)
    rec.calls.clear()
    assert opt.state_dict() is new
    assert rec.calls[-1][1][1] is new
    h.remove()
    assert "state" in opt.state_dict()
    # a pre hook's return value is ignored
    opt.register_state_dict_pre_hook(lambda o: {"ignored": 1})
    assert "state" in opt.state_dict()


# ------------------------------------------------------------------ 1.8 load_state_dict


def _trained(name, lib, ps, steps=3, **opts):
    opt = opt_cls(lib, name)([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05}], **opts)
    for s in range(steps):
        set_grads(ps, s, lib)
        opt.step()
    return opt


def test_load_state_dict_group_count_and_size_errors():
    nbp, thp = pair(2, 3, 4)
    opt = _trained("Adam", "nb", nbp, lr=0.01)
    sd = copy_sd(opt.state_dict())
    bad_count = {"state": sd["state"], "param_groups": sd["param_groups"][:1]}
    bad_size = copy_sd(sd)
    bad_size["param_groups"][0]["params"] = [0]
    bad_size2 = copy_sd(sd)
    bad_size2["param_groups"][1]["params"] = [2, 3]
    for bad, msg in [(bad_count, MSG_NGROUPS), (bad_size, MSG_GROUP_SIZE),
                     (bad_size2, MSG_GROUP_SIZE)]:
        with pytest.raises(ValueError) as e:
            opt.load_state_dict(bad)
        assert str(e.value) == msg
    if HAVE_TORCH:
        topt = _trained("Adam", "torch", thp, lr=0.01)
        tsd = topt.state_dict()
        for bad, msg in [({"state": tsd["state"], "param_groups": tsd["param_groups"][:1]},
                          MSG_NGROUPS),
                         ({"state": tsd["state"], "param_groups": [
                             {**tsd["param_groups"][0], "params": [0]}, tsd["param_groups"][1]]},
                          MSG_GROUP_SIZE)]:
            with pytest.raises(ValueError) as e:
                topt.load_state_dict(bad)
            assert str(e.value) == msg


def test_load_state_dict_missing_keys():
    nbp, thp = pair(2, 3, 4)
    opt = _trained("SGD", "nb", nbp, lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    cases = [({"state": sd["state"]}, "param_groups"),
             ({"param_groups": sd["param_groups"]}, "state"),
             ({}, "param_groups")]
    for bad, key in cases:
        with pytest.raises(KeyError) as e:
            opt.load_state_dict(bad)
        assert e.value.args == (key,)
    # the group checks come before the 'state' lookup, as in torch
    with pytest.raises(ValueError, match=MSG_NGROUPS):
        opt.load_state_dict({"param_groups": sd["param_groups"][:1]})
    if HAVE_TORCH:
        topt = _trained("SGD", "torch", thp, lr=0.1, momentum=0.9)
        tsd = topt.state_dict()
        for bad, key in [({"state": tsd["state"]}, "param_groups"),
                         ({"param_groups": tsd["param_groups"]}, "state"), ({}, "param_groups")]:
            with pytest.raises(KeyError) as e:
                topt.load_state_dict(bad)
            assert e.value.args == (key,)
        with pytest.raises(ValueError, match=MSG_NGROUPS):
            topt.load_state_dict({"param_groups": tsd["param_groups"][:1]})


def test_load_state_dict_positional_id_mapping():
    nbp, thp = pair(2, 3, 4, seed=5)
    src = _trained("Adam", "nb", nb_params(vals(2, 3, 4, seed=9)), lr=0.01)
    sd = copy_sd(src.state_dict())
    # renumber the ids arbitrarily: matching is by position only
    remap = {0: 70, 1: 30, 2: 5}
    sd["state"] = {remap[k]: v for k, v in sd["state"].items()}
    for g in sd["param_groups"]:
        g["params"] = [remap[i] for i in g["params"]]
    opt = nbopt.Adam([{"params": nbp[:2]}, {"params": nbp[2:]}])
    opt.load_state_dict(sd)
    for i, p in enumerate(nbp):
        for key, v in src.state[[q for g in src.param_groups for q in g["params"]][i]].items():
            assert_same(np.asarray(v), np.asarray(opt.state[p][key]))
    assert [g["params"] for g in opt.param_groups] == [nbp[:2], nbp[2:]]
    # ids that are not in the groups are kept as they are, under their key
    sd["state"]["extra"] = {"x": np.ones(1)}
    opt.load_state_dict(sd)
    assert "extra" in opt.state and opt.state_dict()["state"]["extra"]["x"] is \
        sd["state"]["extra"]["x"]
    if HAVE_TORCH:
        tsrc = _trained("Adam", "torch", th_params(vals(2, 3, 4, seed=9)), lr=0.01)
        tsd = tsrc.state_dict()
        tsd = {"state": {remap[k]: v for k, v in tsd["state"].items()},
               "param_groups": [{**g, "params": [remap[i] for i in g["params"]]}
                                for g in tsd["param_groups"]]}
        topt = torch.optim.Adam([{"params": thp[:2]}, {"params": thp[2:]}])
        topt.load_state_dict(tsd)
        compare_with_torch(opt, topt)


def test_load_state_dict_saved_hyperparameters_win_and_missing_keys():
    nbp, thp = pair(2, 3, 4)

    def saved(lib, ps):
        src = opt_cls(lib, "SGD")([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05}],
                                  lr=0.5, momentum=0.9)
        sd = src.state_dict()
        sd["param_groups"][0]["initial_lr"] = 0.5     # a scheduler key survives
        for k in ("dampening", "nesterov", "fused"):  # absent keys
            del sd["param_groups"][1][k]
        return sd

    opt = nbopt.SGD([{"params": nbp[:2]}, {"params": nbp[2:]}], lr=0.01, momentum=0.1)
    opt.load_state_dict(saved("nb", nb_params(vals(2, 3, 4))))
    g0, g1 = opt.param_groups
    assert g0["lr"] == 0.5 and g0["momentum"] == 0.9 and g0["initial_lr"] == 0.5
    assert g1["lr"] == 0.05
    assert list(g0.keys()) == SGD_KEYS + ["params", "initial_lr"]
    # dampening is gone; SGD.__setstate__ re-adds nesterov and fused (fused=False) at the end
    assert list(g1.keys()) == ["lr", "momentum", "weight_decay", "maximize", "foreach",
                               "differentiable", "params", "nesterov", "fused"]
    assert g1["nesterov"] is False and g1["fused"] is False
    assert g0["params"] == nbp[:2] and g1["params"] == nbp[2:]
    if HAVE_TORCH:
        topt = torch.optim.SGD([{"params": thp[:2]}, {"params": thp[2:]}], lr=0.01,
                               momentum=0.1)
        topt.load_state_dict(saved("torch", th_params(vals(2, 3, 4))))
        assert [list(g.keys()) for g in topt.param_groups] == \
            [list(g.keys()) for g in opt.param_groups]
        assert [{k: v for k, v in g.items() if k != "params"} for g in topt.param_groups] == \
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


def test_load_state_dict_adam_setstate_defaults():
    nbp, thp = pair(2, 3)

    def saved(lib, ps):
        sd = opt_cls(lib, "Adam")(ps, lr=0.02).state_dict()
        for k in ("amsgrad", "maximize", "foreach", "capturable", "differentiable",
                  "decoupled_weight_decay", "fused", "eps"):
            del sd["param_groups"][0][k]
        return sd

    opt = nbopt.Adam(nbp, amsgrad=True, eps=0.5)
    opt.load_state_dict(saved("nb", nb_params(vals(2, 3))))
    g = opt.param_groups[0]
    assert list(g.keys()) == ["lr", "betas", "weight_decay", "params", "amsgrad", "maximize",
                              "foreach", "capturable", "differentiable",
                              "decoupled_weight_decay", "fused"]
    assert [g[k] for k in list(g)[4:]] == [False, False, None, False, False, False, None]
    assert "eps" not in g and g["lr"] == 0.02
    if HAVE_TORCH:
        topt = torch.optim.Adam(thp, amsgrad=True, eps=0.5)
        topt.load_state_dict(saved("torch", th_params(vals(2, 3))))
        tg = topt.param_groups[0]
        assert list(tg.keys()) == list(g.keys())
        assert {k: v for k, v in tg.items() if k != "params"} == \
            {k: v for k, v in g.items() if k != "params"}


def test_load_state_dict_adamw_forces_decoupled():
    nbp, thp = pair(2, 3)
    for lib, ps in [("nb", nbp)] + ([("torch", thp)] if HAVE_TORCH else []):
        sd = opt_cls(lib, "Adam")(ps, lr=0.02, weight_decay=0.1).state_dict()
        assert sd["param_groups"][0]["decoupled_weight_decay"] is False
        w = opt_cls(lib, "AdamW")(ps)
        w.load_state_dict(sd)
        assert w.param_groups[0]["decoupled_weight_decay"] is True
        assert w.param_groups[0]["weight_decay"] == 0.1
        del sd["param_groups"][0]["decoupled_weight_decay"]
        w.load_state_dict(sd)
        assert w.param_groups[0]["decoupled_weight_decay"] is True
        # and an Adam loading an AdamW state dict takes the saved True
        a = opt_cls(lib, "Adam")(ps)
        a.load_state_dict(opt_cls(lib, "AdamW")(ps).state_dict())
        assert a.param_groups[0]["decoupled_weight_decay"] is True


def test_load_state_dict_param_names_rule():
    nbp, thp = pair(2, 3)

    def run(lib, ps):
        cls = opt_cls(lib, "SGD")
        out = []
        # current has names, saved has none -> current names kept
        o = cls([("x", ps[0]), ("y", ps[1])])
        o.load_state_dict(cls(ps, lr=0.3).state_dict())
        out.append((o.param_groups[0]["param_names"], list(o.param_groups[0].keys())))
        # saved names win over the current ones
        o.load_state_dict(cls([("u", ps[0]), ("v", ps[1])]).state_dict())
        out.append((o.param_groups[0]["param_names"], list(o.param_groups[0].keys())))
        # current without names, saved with names -> the group gets the saved names
        o = cls(ps)
        o.load_state_dict(cls([("u", ps[0]), ("v", ps[1])]).state_dict())
        out.append((o.param_groups[0]["param_names"], list(o.param_groups[0].keys())))
        return out

    got = run("nb", nbp)
    assert [g[0] for g in got] == [["x", "y"], ["u", "v"], ["u", "v"]]
    assert got[0][1] == SGD_KEYS + ["params", "param_names"]
    assert got[1][1] == ["param_names"] + SGD_KEYS + ["params"]
    if HAVE_TORCH:
        assert run("torch", thp) == got


def test_load_state_dict_hooks():
    (a,), _ = pair(2)
    opt = nbopt.SGD([a], lr=0.1, momentum=0.9)
    a.grad = np.ones(2)
    opt.step()
    sd = opt.state_dict()
    original = dict(sd)
    rec = Recorder()
    seen = {}

    def pre(o, s):
        rec.calls.append(("pre", (o,)))
        seen["copy"] = s
        s["param_groups"] = copy.deepcopy(s["param_groups"])
        s["param_groups"][0]["lr"] = 0.7       # edits the shallow copy only
        return None

    def post(o):
        rec.calls.append(("post", (o,)))
        seen["lr_at_post"] = o.param_groups[0]["lr"]

    opt.register_load_state_dict_pre_hook(pre)
    opt.register_load_state_dict_pre_hook(rec.hook("pre0"), prepend=True)
    opt.register_load_state_dict_post_hook(post)
    opt.register_load_state_dict_post_hook(rec.hook("post0"), prepend=True)
    opt.load_state_dict(sd)
    assert rec.names == ["pre0", "pre", "post0", "post"]
    assert rec.calls[0][1][0] is opt and rec.calls[0][1][1] is not sd
    assert seen["copy"] is not sd and seen["copy"]["state"] is sd["state"]   # shallow
    assert sd == original and sd["param_groups"] is original["param_groups"]
    assert sd["param_groups"][0]["lr"] == 0.1                                # caller unchanged
    assert opt.param_groups[0]["lr"] == 0.7 and seen["lr_at_post"] == 0.7

    # a non-None return replaces the dict that is loaded
    replacement = copy_sd(sd)
    replacement["param_groups"][0]["lr"] = 0.25
    opt2 = nbopt.SGD([a], lr=0.1, momentum=0.9)
    opt2.register_load_state_dict_pre_hook(lambda o, s: replacement)
    opt2.load_state_dict({"bogus": True})
    assert opt2.param_groups[0]["lr"] == 0.25
    assert list(opt2.param_groups[0].keys()) == SGD_KEYS + ["params"]


@requires_torch
def test_load_state_dict_hooks_match_torch():
    def run(lib, ps):
        opt = opt_cls(lib, "SGD")(ps, lr=0.1)
        order = []
        opt.register_load_state_dict_pre_hook(lambda o, s: order.append("a"))
        opt.register_load_state_dict_pre_hook(lambda o, s: order.append("b"), prepend=True)
        opt.register_load_state_dict_pre_hook(
            lambda o, s: (order.append("c"), {**s, "param_groups": [
                {**s["param_groups"][0], "lr": 0.3}]})[1])
        h = opt.register_load_state_dict_post_hook(lambda o: order.append("x"))
        opt.register_load_state_dict_post_hook(lambda o: order.append("y"), prepend=True)
        sd = opt.state_dict()
        opt.load_state_dict(sd)
        h.remove()
        opt.load_state_dict(sd)
        return order, opt.param_groups[0]["lr"], sd["param_groups"][0]["lr"]

    assert run("nb", nb_params(vals(2))) == run("torch", th_params(vals(2)))
    assert run("nb", nb_params(vals(2)))[0] == ["b", "a", "c", "y", "x", "b", "a", "c", "y"]


def test_load_state_dict_copies_arrays_and_casts_dtype():
    # documented difference: nbopt copies loaded arrays into its flat state
    (a,), _ = pair(3)
    src = nbopt.Adam([P(np.ones(3))], lr=0.1)
    src.param_groups[0]["params"][0].grad = np.ones(3)
    src.step()
    sd = src.state_dict()
    opt = nbopt.Adam([a])
    opt.load_state_dict(sd)
    assert opt.state[a]["exp_avg"] is not sd["state"][0]["exp_avg"]
    assert not np.shares_memory(opt.state[a]["exp_avg"], sd["state"][0]["exp_avg"])
    np.testing.assert_array_equal(opt.state[a]["exp_avg"], sd["state"][0]["exp_avg"])
    step = opt.state[a]["step"]
    assert type(step) is np.ndarray and step.dtype == np.float32 and step.shape == ()
    # state arrays take the parameter's floating dtype; a python float step is accepted
    sd32 = {"state": {0: {"step": 4.0,
                          "exp_avg": np.ones(3, np.float32),
                          "exp_avg_sq": np.full(3, 2, np.int64)}},
            "param_groups": sd["param_groups"]}
    opt.load_state_dict(sd32)
    st = opt.state[a]
    assert st["exp_avg"].dtype == np.float64 and st["exp_avg_sq"].dtype == np.float64
    np.testing.assert_array_equal(st["exp_avg_sq"], 2.0)
    assert st["step"].dtype == np.float32 and float(st["step"]) == 4.0
    # rebinding an entry is honoured as torch honours it: the entry is the
    # new array until the next step reads it into the flat state
    new = np.zeros(3)
    st["exp_avg"] = new
    assert st["exp_avg"] is new
    a.grad = np.ones(3)
    opt.step()
    assert st["exp_avg"] is not new and np.all(new == 0)
    np.testing.assert_allclose(st["exp_avg"], 0.1)     # (1 - beta1) * grad from zero


@requires_torch
@pytest.mark.parametrize("name, opts", [
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.02, weight_decay=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
])
def test_load_torch_state_dict_continues_like_torch(name, opts):
    shapes = (4, (2, 3), 5)
    thp = th_params(vals(*shapes, seed=11))
    topt = _trained(name, "torch", thp, steps=4, **opts)
    tsd = topt.state_dict()
    sd = torch_sd_to_numpy(tsd)
    if name != "SGD":
        step = sd["state"][0]["step"]
        assert type(step) is np.ndarray and step.shape == () and step.dtype == np.float32
    nbp = nb_params([to_np(p) for p in thp])
    # a fresh optimizer with other hyper-parameters: the loaded ones win
    opt = getattr(nbopt, name)([{"params": nbp[:2]}, {"params": nbp[2:]}], lr=0.9)
    opt.load_state_dict(sd)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in topt.param_groups]
    compare_with_torch(opt, topt, atol=0)
    for s in range(4, 10):
        set_grads(nbp, s)
        set_grads(thp, s, "torch")
        opt.step()
        topt.step()
        compare_with_torch(opt, topt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, opts", [
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.02, weight_decay=0.3)),
])
def test_save_load_round_trip_continues_bit_for_bit(name, opts, tmp_path):
    shapes = ((3, 4), 5, (2, 3))
    ps = nb_params(vals(*shapes, seed=21))
    opt = _trained(name, "nb", ps, steps=5, **opts)
    path = tmp_path / "opt.npz"
    nbopt.save(opt.state_dict(), path)
    fresh = nb_params([np.array(p) for p in ps])
    opt2 = getattr(nbopt, name)([{"params": fresh[:2]}, {"params": fresh[2:]}], lr=0.123)
    opt2.load_state_dict(nbopt.load(path))
    assert_same(state_values(opt), state_values(opt2))
    for s in range(5, 12):
        set_grads(ps, s)
        set_grads(fresh, s)
        opt.step()
        opt2.step()
        for x, y in zip(ps, fresh):
            np.testing.assert_array_equal(x, y)
        assert_same(state_values(opt), state_values(opt2))
    assert opt2.param_groups[1]["lr"] == 0.05


@pytest.mark.parametrize("name, opts", [("Adam", dict(lr=0.01, amsgrad=True)),
                                         ("SGD", dict(lr=0.1, momentum=0.9))])
def test_load_state_dict_replaces_all_state(name, opts):
    # params without saved state lose theirs and start afresh at their next step
    nbp, thp = pair(4, 5, 6, seed=1)

    def run(lib, ps):
        opt = _trained(name, lib, ps, steps=4, **opts)
        src_ps = (nb_params if lib == "nb" else th_params)(vals(4, 5, 6, seed=2))
        src = opt_cls(lib, name)([{"params": src_ps[:2]}, {"params": src_ps[2:]}], **opts)
        src_ps[1].grad = np.ones(5) if lib == "nb" else torch.ones(5, dtype=torch.float64)
        src.step()
        opt.load_state_dict(src.state_dict())
        return opt

    opt = run("nb", nbp)
    assert nbp[0] not in opt.state and nbp[2] not in opt.state
    assert list(opt.state_dict()["state"].keys()) == [1]
    topt = run("torch", thp) if HAVE_TORCH else None
    for s in range(4, 9):
        set_grads(nbp, s, skip=False)
        opt.step()
        if HAVE_TORCH:
            set_grads(thp, s, "torch", skip=False)
            topt.step()
            compare_with_torch(opt, topt, rtol=1e-12)
    if name == "Adam":
        assert [float(opt.state[p]["step"]) for p in nbp] == [5.0, 6.0, 5.0]


def test_load_own_state_dict_keeps_trajectory():
    ps = nb_params(vals(4, 5, 6, seed=1))
    ref_ps = nb_params(vals(4, 5, 6, seed=1))
    opt = _trained("Adam", "nb", ps, steps=4, lr=0.01, amsgrad=True)
    ref = _trained("Adam", "nb", ref_ps, steps=4, lr=0.01, amsgrad=True)
    opt.load_state_dict(opt.state_dict())       # its own live views
    for s in range(4, 9):
        set_grads(ps, s)
        set_grads(ref_ps, s)
        opt.step()
        ref.step()
    for x, y in zip(ps, ref_ps):
        np.testing.assert_array_equal(x, y)
    assert_same(state_values(ref), state_values(opt))


@pytest.mark.parametrize("name, opts", [("Adam", dict(lr=0.01)), ("AdamW", dict(lr=0.01)),
                                         ("SGD", dict(lr=0.1, momentum=0.9))])
def test_add_param_group_after_steps(name, opts):
    nbp, thp = pair(4, 5, 6, seed=1)

    def run(lib, ps):
        opt = opt_cls(lib, name)(ps[:2], **opts)
        for s in range(3):
            set_grads(ps, s, lib)
            opt.step()
        opt.add_param_group({"params": [ps[2]], "lr": 0.05})
        return opt

    opt = run("nb", nbp)
    topt = run("torch", thp) if HAVE_TORCH else None
    assert list(opt.param_groups[1].keys()) == ["params", "lr"] + \
        [k for k in KEYS[name] if k != "lr"]
    for s in range(3, 8):
        set_grads(nbp, s)
        opt.step()
        if HAVE_TORCH:
            set_grads(thp, s, "torch")
            topt.step()
            compare_with_torch(opt, topt, rtol=1e-12)
    assert list(opt.state_dict()["state"].keys()) == [0, 1, 2]


# ------------------------------------------------------------------ load_state_dict atomicity


def snapshot(opt):
    """Everything observable about an optimizer, deep-copied (identities as ids)."""
    groups = []
    for g in opt.param_groups:
        groups.append((id(g), [(k, [id(p) for p in v] if k == "params" else copy_sd(v))
                               for k, v in g.items()]))
    state = []
    for p, st in opt.state.items():
        state.append((id(p), id(st), type(st).__name__,
                      [(k, id(v), copy_sd(v)) for k, v in st.items()]))
    return {"groups": groups, "state": state, "params": param_values(opt),
            "defaults": copy_sd(opt.defaults)}


def _bad_inputs(sd):
    def edit(fn):
        bad = copy_sd(sd)
        fn(bad)
        return bad

    return {
        "group_count": edit(lambda s: s["param_groups"].pop()),
        "group_size": edit(lambda s: s["param_groups"][1]["params"].append(9)),
        # the first entries are fine: nothing may be applied before the bad one is found
        "state_shape": edit(lambda s: s["state"].__setitem__(
            2, {**s["state"][2], "exp_avg": np.zeros((2, 4))})),
        "state_not_dict": edit(lambda s: s["state"].__setitem__(2, [1.0, 2.0])),
        "step_not_scalar": edit(lambda s: s["state"][2].__setitem__("step", np.ones(2))),
        "step_none": edit(lambda s: s["state"][2].__setitem__("step", None)),
        "state_not_array": edit(lambda s: s["state"][2].__setitem__("exp_avg_sq", [0.0] * 6)),
        "missing_state": {"param_groups": sd["param_groups"]},
        "missing_groups": {"state": sd["state"]},
    }


EXPECTED_ERRORS = {"group_count": (ValueError, MSG_NGROUPS),
                   "group_size": (ValueError, MSG_GROUP_SIZE),
                   "state_shape": (ValueError, "has shape"),
                   "state_not_dict": (ValueError, "must be a dict"),
                   "step_not_scalar": (ValueError, "must be a real scalar"),
                   "step_none": (ValueError, "must be a real scalar"),
                   "state_not_array": (ValueError, "must be an array"),
                   "missing_state": (KeyError, "state"),
                   "missing_groups": (KeyError, "param_groups")}


@pytest.mark.parametrize("case", list(EXPECTED_ERRORS))
def test_load_state_dict_is_atomic(case):
    shapes = (4, 5, (2, 3))

    def make():
        ps = nb_params(vals(*shapes, seed=31))
        return ps, _trained("Adam", "nb", ps, steps=3, lr=0.01, amsgrad=True)

    ps, opt = make()
    ref_ps, ref = make()
    # a valid state dict from another run, with other values and hyper-parameters
    other = _trained("Adam", "nb", nb_params(vals(*shapes, seed=32)), steps=5, lr=0.3,
                     amsgrad=True)
    good = copy_sd(other.state_dict())
    bad = _bad_inputs(good)[case]
    before = snapshot(opt)
    exc, text = EXPECTED_ERRORS[case]
    with pytest.raises(exc) as e:
        opt.load_state_dict(bad)
    if exc is KeyError:
        assert e.value.args == (text,)
    else:
        assert text in str(e.value)
    assert_same(before, snapshot(opt))
    # and the optimizer goes on exactly as an untouched one
    for s in range(3, 7):
        set_grads(ps, s)
        set_grads(ref_ps, s)
        opt.step()
        ref.step()
    for x, y in zip(ps, ref_ps):
        np.testing.assert_array_equal(x, y)
    assert_same(state_values(ref), state_values(opt))
    # a valid load still works afterwards
    opt.load_state_dict(good)
    assert_same(state_values(other), state_values(opt))


@requires_torch
def test_torch_rejects_the_same_group_errors():
    # the two validations that torch itself does (the rest are nbopt's own)
    thp = th_params(vals(4, 5, (2, 3), seed=31))
    topt = _trained("Adam", "torch", thp, steps=3, lr=0.01)
    sd = topt.state_dict()
    with pytest.raises(ValueError, match=MSG_NGROUPS):
        topt.load_state_dict({"state": sd["state"], "param_groups": sd["param_groups"][:1]})
    with pytest.raises(ValueError, match=re.escape(MSG_GROUP_SIZE)):
        topt.load_state_dict({"state": sd["state"], "param_groups": [
            sd["param_groups"][0], {**sd["param_groups"][1], "params": [2, 9]}]})


# ------------------------------------------------------------------ __repr__


def _repr_groups(lib, ps):
    return [
        opt_cls(lib, "SGD")([ps[0]], lr=0.1, momentum=0.9),
        opt_cls(lib, "Adam")([{"params": [ps[0], ps[1]]},
                              {"params": [ps[2]], "lr": 0.5, "betas": (0.5, 0.75),
                               "initial_lr": 0.5}], lr=0.01, amsgrad=True),
        opt_cls(lib, "AdamW")([("w", ps[0]), ("b", ps[1])], eps=1e-6, weight_decay=0.0),
    ]


def test_repr():
    nbp, thp = pair(2, 3, 4)
    got = [repr(o) for o in _repr_groups("nb", nbp)]
    assert got[0] == ("SGD (\nParameter Group 0\n    dampening: 0\n    differentiable: False\n"
                      "    foreach: None\n    fused: None\n    lr: 0.1\n    maximize: False\n"
                      "    momentum: 0.9\n    nesterov: False\n    weight_decay: 0\n)")
    assert got[1].startswith("Adam (\nParameter Group 0\n    amsgrad: True\n"
                             "    betas: (0.9, 0.999)\n")
    assert "Parameter Group 1\n    amsgrad: True\n    betas: (0.5, 0.75)\n" in got[1]
    assert "    initial_lr: 0.5\n    lr: 0.5\n" in got[1]
    assert "params" not in got[1]
    assert "    param_names: ['w', 'b']\n" in got[2] and got[2].endswith("weight_decay: 0.0\n)")
    assert str(_repr_groups("nb", nbp)[0]) == got[0]
    if HAVE_TORCH:
        assert got == [repr(o) for o in _repr_groups("torch", thp)]


# ------------------------------------------------------------------ pickling / deepcopy


def test_getstate_and_setstate():
    (a, b), _ = pair(2, 3)
    opt = nbopt.Adam([a, b], lr=0.1)
    opt.register_step_pre_hook(lambda *x: None)
    st = opt.__getstate__()
    assert set(st) == {"defaults", "state", "param_groups"}
    assert st["param_groups"] is opt.param_groups and st["state"] is opt.state
    # __setstate__ re-creates missing hook dicts and sets defaults["differentiable"]
    new = nbopt.Adam.__new__(nbopt.Adam)
    defaults = {k: v for k, v in opt.defaults.items() if k != "differentiable"}
    new.__setstate__({"defaults": defaults, "state": opt.state,
                      "param_groups": [dict(g) for g in opt.param_groups]})
    for name in nbo._HOOK_DICTS:
        assert len(getattr(new, name)) == 0
    assert new.defaults["differentiable"] is False
    set_grads([a, b], 0, skip=False)
    new.step()
    assert new.state[a]["step"] == 1.0


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_deepcopy_and_pickle(how):
    ps = nb_params(vals(4, (2, 3), 5, seed=41))
    opt = _trained("Adam", "nb", ps, steps=3, lr=0.01, amsgrad=True)
    calls = []
    opt.register_step_post_hook(lambda *x: calls.append(1))
    ref = _trained("Adam", "nb", nb_params(vals(4, (2, 3), 5, seed=41)), steps=3, lr=0.01,
                   amsgrad=True)
    ref_ps = [p for g in ref.param_groups for p in g["params"]]
    clone = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    cps = [p for g in clone.param_groups for p in g["params"]]
    assert all(isinstance(p, Parameter) for p in cps)
    assert all(c is not p and not np.shares_memory(c, p) for c, p in zip(cps, ps))
    assert all(p in clone.state for p in cps[:1])
    assert len(clone._optimizer_step_post_hooks) == 0        # hooks are not copied
    assert_same(state_values(opt), state_values(clone))
    assert [{k: v for k, v in g.items() if k != "params"} for g in clone.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    # the copy steps independently: the original does not move
    before = snapshot(opt)
    for s in range(3, 6):
        set_grads(cps, s)
        clone.step()
    assert_same(before, snapshot(opt))
    assert calls == []
    # ... and exactly as the original would have
    for s in range(3, 6):
        set_grads(ref_ps, s)
        ref.step()
    for x, y in zip(cps, ref_ps):
        np.testing.assert_array_equal(x, y)
    assert_same(state_values(ref), state_values(clone))
    # the original still steps on its own
    step_before = float(opt.state[ps[0]]["step"])
    set_grads(ps, 3)
    opt.step()
    assert calls == [1]
    assert float(opt.state[ps[0]]["step"]) == step_before + 1


@requires_torch
def test_deepcopy_matches_torch_hooks_dropped():
    (ta,) = th_params(vals(2))
    t = torch.optim.SGD([ta], lr=0.1)
    t.register_step_pre_hook(lambda *x: None)
    tc = copy.deepcopy(t)
    (a,) = nb_params(vals(2))
    o = nbopt.SGD([a], lr=0.1)
    o.register_step_pre_hook(lambda *x: None)
    oc = copy.deepcopy(o)
    assert len(tc._optimizer_step_pre_hooks) == len(oc._optimizer_step_pre_hooks) == 0
    assert repr(tc) == repr(oc)


# ------------------------------------------------------------------ Parameter / arena


def test_parameter_basics():
    data = np.arange(6, dtype=np.float64).reshape(2, 3)
    w = P(data)
    assert isinstance(w, np.ndarray) and isinstance(w, Parameter)
    assert w.grad is None and w.requires_grad is True
    assert np.shares_memory(w, data)                        # views contiguous input
    assert type(w * 2) is np.ndarray and type(w + w) is np.ndarray
    assert type(np.exp(w)) is np.ndarray and type(-w) is np.ndarray
    assert type(w[0]) is np.ndarray and type(w[:, 1:]) is np.ndarray
    assert type(w[0, 0]) is np.float64
    ident = id(w)
    w += 1
    assert id(w) == ident and type(w) is Parameter
    np.multiply(w, 2, out=w)
    assert type(w) is Parameter and w[0, 0] == 2.0
    assert np.add(w, 1, out=w) is w
    w[...] = 0
    assert type(w) is Parameter and np.all(data == 0)
    # hashed by identity, as torch tensors are: equal values, different keys
    v = P(np.zeros((2, 3)))
    assert hash(w) == object.__hash__(w) and hash(w) != hash(v)
    assert len({w: 1, v: 2}) == 2 and {w: 1}.get(v) is None
    # copies start without a gradient
    w.grad = np.ones((2, 3))
    assert w.copy().grad is None
    # pickling drops the gradient and keeps requires_grad
    u = pickle.loads(pickle.dumps(P(np.ones(2), requires_grad=False)))
    assert type(u) is Parameter and u.grad is None and u.requires_grad is False
    # a non-contiguous input is copied
    nc = np.arange(10.0)[::2]
    q = P(nc)
    assert q.flags.c_contiguous and not np.shares_memory(q, nc)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.uint8])
def test_parameter_int_requires_grad(dtype):
    with pytest.raises(RuntimeError, match="^Only arrays of floating point and complex dtype "
                                           "can require gradients"):
        P(np.zeros(3, dtype))
    p = P(np.zeros(3, dtype), requires_grad=False)
    assert p.dtype == dtype and p.requires_grad is False
    if HAVE_TORCH:
        with pytest.raises(RuntimeError, match="^Only Tensors of floating point and complex "
                                               "dtype can require gradients"):
            torch.nn.Parameter(torch.zeros(3, dtype=torch.int64))


def test_parameter_complex_and_float32_allowed():
    assert P(np.zeros(2, np.complex64)).requires_grad
    assert P(np.zeros(2, np.float32)).dtype == np.float32


def test_parameter_arena():
    arrays = [np.ones((2, 3)), np.arange(4.0), np.full((1, 2), 5.0)]
    arena = ParameterArena(arrays, dtype=np.float32)
    assert len(arena) == 3 and list(arena) == arena.params and arena[1] is arena.params[1]
    assert arena.data.dtype == np.float32 and arena.data.shape == (12,)
    for p, src, g in zip(arena.params, arrays, arena.grad_views):
        assert type(p) is Parameter and p.shape == src.shape
        assert np.shares_memory(p, arena.data)
        np.testing.assert_array_equal(p, src.astype(np.float32))
        assert p.grad is g and np.shares_memory(g, arena.grad) and np.all(g == 0)
    np.testing.assert_array_equal(arena.data, np.concatenate([a.ravel() for a in arrays]))
    arena.data[:] = 7
    assert np.all(arena.params[2] == 7)
    # the optimizer updates the arena in place
    opt = nbopt.SGD(arena.params, lr=0.5)
    arena.grad[:] = 2
    opt.step()
    assert np.all(arena.data == 6)
    # opt.zero_grad() (set_to_none=True) re-attaches the zeroed views of an
    # arena's parameters rather than setting None (issue 16), so that the
    # gradients can be written in place again; so does arena.zero_grad()
    arena.params[1].grad = np.ones(4, np.float32)        # a replaced gradient
    arena.grad[:] = 3
    opt.zero_grad()
    assert all(p.grad is g for p, g in zip(arena.params, arena.grad_views))
    assert np.all(arena.grad == 0)
    arena.grad[:] = 3
    arena.zero_grad()
    assert all(p.grad is g for p, g in zip(arena.params, arena.grad_views))
    assert np.all(arena.grad == 0)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is g for p, g in zip(arena.params, arena.grad_views))
    # dtype inferred from the inputs; integer arenas are refused
    assert ParameterArena([np.zeros(2, np.float32), np.zeros(1, np.float32)]).data.dtype == \
        np.float32
    with pytest.raises(TypeError, match="floating point or complex dtype"):
        ParameterArena([np.arange(3)])
