"""``nbopt.optim.swap_in_optimizer_params_and_state`` against torch 2.13's
``torch.optim.swap_in_optimizer_params_and_state`` (live when torch is
importable) and against its documented semantics without torch."""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

import nbopt
from conftest import HAVE_TORCH, requires_torch
from nbopt.optim import _stateless, swap_in_optimizer_params_and_state

RNG = np.random.default_rng(0)
SHAPES = [[(3, 4), (4,)], [(2, 5)]]
# (class, options): element-wise (flat engine state), Muon (its own arrays)
OPTIMIZERS = [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01, amsgrad=True)),
              ("NAdam", dict(lr=0.01)), ("Muon", dict(lr=0.02))]


def test_exported_where_torch_exports_it():
    assert nbopt.optim.swap_in_optimizer_params_and_state is swap_in_optimizer_params_and_state
    assert _stateless.swap_in_optimizer_params_and_state is swap_in_optimizer_params_and_state
    assert nbopt.swap_in_optimizer_params_and_state is swap_in_optimizer_params_and_state
    assert "swap_in_optimizer_params_and_state" in nbopt.optim.__all__
    if HAVE_TORCH:
        import torch

        assert "swap_in_optimizer_params_and_state" in torch.optim.__all__


def _values(name):
    shapes = [[(3, 4), (5, 4)], [(2, 6)]] if name == "Muon" else SHAPES
    return [[RNG.standard_normal(s) for s in group] for group in shapes]


class Lib:
    """The same calls on nbopt or torch."""

    def __init__(self, torch_side: bool):
        self.torch = __import__("torch") if torch_side else None

    def param(self, v):
        if self.torch:
            return self.torch.nn.Parameter(self.torch.from_numpy(v.copy()))
        return nbopt.Parameter(v.copy())

    def grad(self, p, v):
        p.grad = self.torch.from_numpy(v.copy()) if self.torch else v.copy()

    def array(self, x):
        if self.torch and isinstance(x, self.torch.Tensor):
            return x.detach().numpy()
        return np.asarray(x)

    def optimizer(self, name, groups, options):
        mod = self.torch.optim if self.torch else nbopt
        return getattr(mod, name)(groups, **options)

    def swap(self, *args):
        if self.torch:
            return self.torch.optim.swap_in_optimizer_params_and_state(*args)
        return swap_in_optimizer_params_and_state(*args)

    def tensor_state(self, state):
        """A numpy state_dict 'state' as this library's tensors."""
        if not self.torch:
            return copy.deepcopy(state)
        return {k: {n: (self.torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v)
                    for n, v in s.items()} for k, s in state.items()}


def _step(lib: Lib, opt, params, grads):
    """``opt.step()`` after giving ``params`` the gradients ``grads``."""
    for p, g in zip(params, grads):
        lib.grad(p, g)
    opt.step()


def _live(lib: Lib, name: str, options: dict, values):
    """The live parameters (two groups, the second at half the lr) and their optimizer."""
    live = [[lib.param(v) for v in g] for g in values]
    groups = [{"params": live[0]}, {"params": live[1], "lr": options["lr"] / 2}]
    return live, lib.optimizer(name, groups, options)


def _donor(lib: Lib, name: str, options: dict, swap_values, grads):
    """The swap-in parameters (two groups, the second at twice the lr) and
    their own optimizer, stepped on ``grads[0]`` and ``grads[1]``."""
    other = [[lib.param(v) for v in g] for g in swap_values]
    donor_groups = [{"params": other[0]}, {"params": other[1], "lr": options["lr"] * 2}]
    donor = lib.optimizer(name, donor_groups, options)
    for k in range(2):
        _step(lib, donor, [p for gr in other for p in gr], grads[k])
    return other, donor


def _scenario(lib: Lib, name: str, options: dict, values, swap_values, grads, fail=False):
    """A live optimizer steps once; a swap-in set of parameters and state
    (another optimizer's, one step further) steps twice inside the context;
    then the live optimizer steps again.  Returns everything observable."""
    live, opt = _live(lib, name, options, values)
    # the swap-in side: its own optimizer, stepped twice, gives the state dict
    other, donor = _donor(lib, name, options, swap_values, grads)
    sd = donor.state_dict()
    swap_state = {"state": sd["state"], "param_groups": sd["param_groups"]}
    flat_live = [p for gr in live for p in gr]
    _step(lib, opt, flat_live, grads[2])
    params_list_ids = [id(g["params"]) for g in opt.param_groups]
    names = {f"p{i}": p for i, p in enumerate(p for gr in other for p in gr)}
    seen_inside = {}
    try:
        with lib.swap(opt, names, swap_state):
            for k in (3, 4):
                _step(lib, opt, names.values(), grads[k])
            seen_inside["lr"] = [g["lr"] for g in opt.param_groups]
            seen_inside["params"] = [opt.param_groups[0]["params"][0] is next(iter(names.values()))]
            if fail:
                raise KeyError("boom")
    except KeyError:
        assert fail
    restored = {
        "lr": [g["lr"] for g in opt.param_groups],
        "same_lists": [id(g["params"]) for g in opt.param_groups] == params_list_ids,
        "same_params": all(a is b for a, b in zip(opt.param_groups[0]["params"], live[0])),
    }
    _step(lib, opt, flat_live, grads[5])
    out = {"live": [lib.array(p).copy() for p in flat_live],
           "swapped": [lib.array(p).copy() for p in names.values()],
           "swap_state": {k: {n: lib.array(v).copy() for n, v in s.items()}
                          for k, s in swap_state["state"].items()},
           "live_state": {k: {n: lib.array(v).copy() for n, v in s.items()}
                          for k, s in opt.state_dict()["state"].items()},
           "inside": seen_inside, "restored": restored}
    return out


def _inputs(name):
    values, swap_values = _values(name), _values(name)
    flat = [s for g in values for s in g]
    grads = [[RNG.standard_normal(v.shape) for v in flat] for _ in range(6)]
    return values, swap_values, grads


def _reference_without_swap(name, options, values, swap_values, grads):
    """What the context must do, computed without it: the live optimizer
    never swapped, and the swap-in parameters stepped by a fresh optimizer
    with the live one's group layout and the swap-in state."""
    lib = Lib(False)
    live, opt = _live(lib, name, options, values)
    other, donor = _donor(lib, name, options, swap_values, grads)
    flat_live = [p for gr in live for p in gr]
    for k in (2, 5):
        _step(lib, opt, flat_live, grads[k])
    for k in (3, 4):                       # the donor is the swap-in optimizer
        _step(lib, donor, [p for gr in other for p in gr], grads[k])
    return ([np.array(p) for p in flat_live], [np.array(p) for gr in other for p in gr],
            {k: {n: np.array(v) for n, v in s.items()}
             for k, s in donor.state_dict()["state"].items()})


def _assert_close(a, b, exact):
    if exact:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,options", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
@pytest.mark.parametrize("fail", [False, True], ids=["", "body-raises"])
def test_swap_semantics_without_torch(name, options, fail):
    values, swap_values, grads = _inputs(name)
    got = _scenario(Lib(False), name, options, values, swap_values, grads, fail=fail)
    live, swapped, donor_state = _reference_without_swap(name, options, values, swap_values,
                                                         grads)
    for a, b in zip(got["live"], live):             # the live run never noticed
        _assert_close(a, b, exact=True)
    for a, b in zip(got["swapped"], swapped):       # the swap-in params stepped
        _assert_close(a, b, exact=True)
    # the caller's state arrays were updated in place, as torch's tensors are
    for k, entry in donor_state.items():
        for n, v in entry.items():
            _assert_close(got["swap_state"][k][n], v, exact=True)
    # hyper-parameters: the swap-in group's inside, the live group's after
    assert got["inside"]["lr"] == [options["lr"], options["lr"] * 2]
    assert got["inside"]["params"] == [True]
    assert got["restored"] == {"lr": [options["lr"], options["lr"] / 2], "same_lists": True,
                               "same_params": True}


@requires_torch
@pytest.mark.parametrize("name,options", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_swap_semantics_match_torch(name, options):
    values, swap_values, grads = _inputs(name)
    ours = _scenario(Lib(False), name, options, values, swap_values, grads)
    theirs = _scenario(Lib(True), name, options, values, swap_values, grads)
    exact = name == "Muon"          # Muon: bit-identical; element-wise: 1e-12 (float64)
    for key in ("live", "swapped"):
        for a, b in zip(ours[key], theirs[key]):
            _assert_close(a, b, exact)
    for key in ("swap_state", "live_state"):
        assert ours[key].keys() == theirs[key].keys()
        for k in ours[key]:
            assert ours[key][k].keys() == theirs[key][k].keys()
            for n in ours[key][k]:
                _assert_close(ours[key][k][n], theirs[key][k][n], exact)
    assert ours["inside"] == theirs["inside"] and ours["restored"] == theirs["restored"]


def test_new_state_entries_stay_inside_the_context():
    w = nbopt.Parameter(np.ones(3))
    opt = nbopt.SGD([w], lr=0.1, momentum=0.9)
    w.grad = np.ones(3)
    opt.step()
    other = nbopt.Parameter(np.zeros(3))
    other.grad = np.ones(3)
    saved = {"state": {}, "param_groups": [copy.deepcopy(opt.state_dict()["param_groups"][0])]}
    with swap_in_optimizer_params_and_state(opt, {"w": other}, saved):
        opt.step()                         # creates a momentum buffer for `other`
        assert list(opt.state[other]) == ["momentum_buffer"]
    assert saved["state"] == {}
    assert list(opt.state) == [w]
    np.testing.assert_array_equal(other, -0.1 * np.ones(3))


def _valid():
    w = nbopt.Parameter(np.ones(3))
    opt = nbopt.Adam([w], lr=0.1)
    w.grad = np.ones(3)
    opt.step()
    sd = opt.state_dict()
    return opt, {"state": copy.deepcopy(sd["state"]),
                 "param_groups": copy.deepcopy(sd["param_groups"])}


def _spoil(what):
    opt, sd = _valid()
    return (opt,) + _spoiled(what, opt, {"w": nbopt.Parameter(np.zeros(3))}, sd)


def _spoiled(what, opt, params, sd):
    """Spoil ``params``/``sd`` (of nbopt's or torch's ``opt``) the way ``what`` names;
    returns ``(params, sd)``."""
    if what == "uninitialised":
        opt.state.clear()
    elif what == "not a dict":
        sd = [sd]
    elif what == "state not a dict":
        sd["state"] = [1]
    elif what == "state keyed by arrays":
        sd["state"] = {opt.param_groups[0]["params"][0]: {}}
    elif what == "entry not a dict":
        sd["state"][0] = [1]
    elif what == "groups not a list":
        sd["param_groups"] = tuple(sd["param_groups"])
    elif what == "group count":
        sd["param_groups"] = sd["param_groups"] * 2
    elif what == "group not a dict":
        sd["param_groups"] = [1]
    elif what == "ids not ints":
        sd["param_groups"][0]["params"] = ["0"]
    elif what == "id count":
        sd["param_groups"][0]["params"] = [0, 1]
    elif what == "keys":
        sd["param_groups"][0]["extra"] = 1
        del sd["param_groups"][0]["eps"]
    elif what == "too few params":
        params = {}
    elif what == "extra state ids":
        sd["state"][7] = {}
    return params, sd


MESSAGES = {
    "uninitialised": "swap_in_optimizer_params_and_state requires initialized optimizer state.",
    "not a dict": "swap_in_optimizer_params_and_state requires a DCP-style optimizer "
                  "state_dict.",
    "state not a dict": "swap_in_optimizer_params_and_state requires swapin_optim_state['state'] "
                        "to be a dict mapping packed parameter ids to per-param state dicts, "
                        "got list.",
    "state keyed by arrays": "swap_in_optimizer_params_and_state requires "
                             "optimizer.state_dict()-style state keyed by packed parameter ids.",
    "entry not a dict": "swap_in_optimizer_params_and_state requires per-parameter optimizer "
                        "state entries to be dictionaries.",
    "groups not a list": "swap_in_optimizer_params_and_state requires "
                         "swapin_optim_state['param_groups'] to be a list of param-group dicts, "
                         "got tuple.",
    "group count": "swapin_optim_state has a different number of parameter groups than the "
                   "live optimizer.",
    "group not a dict": "swap_in_optimizer_params_and_state requires each optimizer param group "
                        "to be a dictionary.",
    "ids not ints": "swap_in_optimizer_params_and_state requires optimizer.state_dict()-style "
                    "param_groups[*]['params'] entries keyed by packed parameter ids.",
    "id count": "swapin_optim_state param group 0 has a different number of params than the "
                "live optimizer param group.",
    "keys": "swap_in_optimizer_params_and_state requires optimizer.state_dict()-style param "
            "group keys to exactly match the live optimizer group keys for group 0. Keys only "
            "in swap-in: ['extra']. Keys only in live: ['eps'].",
    "too few params": "swap_in_optimizer_params_and_state requires the explicit parameter state "
                      "to match optimizer.param_groups ordering.",
    "extra state ids": "swap_in_optimizer_params_and_state requires swapin_optim_state['state'] "
                       "to be keyed only by packed parameter ids from param_groups[*]['params']; "
                       "got extra keys [7].",
}


@pytest.mark.parametrize("what", list(MESSAGES))
def test_invalid_swap_in_state_is_refused_before_anything_changes(what):
    opt, params, sd = _spoil(what)
    groups_before = [dict(g) for g in opt.param_groups]
    state_before = opt.state
    with pytest.raises(RuntimeError, match="^" + re.escape(MESSAGES[what]) + "$"):
        with swap_in_optimizer_params_and_state(opt, params, sd):
            pytest.fail("the body must not run")
    assert [dict(g) for g in opt.param_groups] == groups_before
    assert opt.state is state_before


@requires_torch
@pytest.mark.parametrize("what", list(MESSAGES))
def test_invalid_swap_in_state_messages_are_torchs(what):
    import torch

    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    sd = opt.state_dict()
    sd = {"state": {k: dict(v) for k, v in sd["state"].items()},
          "param_groups": [dict(g) for g in sd["param_groups"]]}
    params = {"w": torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))}
    # the same spoiling, on torch's objects
    params, sd = _spoiled(what, opt, params, sd)
    with pytest.raises(RuntimeError, match="^" + re.escape(MESSAGES[what]) + "$"):
        with torch.optim.swap_in_optimizer_params_and_state(opt, params, sd):
            pass


def test_state_dict_and_hooks_see_the_swap_in_values():
    opt, sd = _valid()
    other = nbopt.Parameter(np.zeros(3))
    sd["param_groups"][0]["lr"] = 0.5
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
    with swap_in_optimizer_params_and_state(opt, {"w": other}, sd):
        inside = opt.state_dict()
        other.grad = np.ones(3)
        opt.step()
    assert inside["param_groups"][0]["lr"] == 0.5
    assert inside["state"][0]["exp_avg"] is sd["state"][0]["exp_avg"]
    assert seen == [0.5]
    assert opt.state_dict()["param_groups"][0]["lr"] == 0.1
