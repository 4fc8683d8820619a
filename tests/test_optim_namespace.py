"""``import nbopt.optim as optim`` works wherever ``import torch.optim as optim``
did (issue 16): every public name of torch.optim's public module tree
resolves in nbopt.optim."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import nbopt
import nbopt.optim as optim

# Names of torch.optim's public modules that make no sense for NumPy: none.
EXCLUDED: dict[str, str] = {}


def public_torch_modules():
    torch_optim = pytest.importorskip("torch.optim", reason="the walk needs torch installed")
    walk = pkgutil.walk_packages(torch_optim.__path__, "torch.optim.")
    names = ["torch.optim"] + [m.name for m in walk]
    # torch's private modules (_functional, _multi_tensor, _adafactor, ...) are
    # not its public API: a leading underscore in any part of the path
    return [n for n in names if not any(part.startswith("_") for part in n.split("."))]


def public_names(module: types.ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n in dir(module) if not n.startswith("_")
            and not isinstance(getattr(module, n), types.ModuleType)]


def test_every_public_name_of_torch_optim_resolves_in_nbopt_optim():
    modules = public_torch_modules()
    assert {"torch.optim.lr_scheduler", "torch.optim.swa_utils", "torch.optim.optimizer",
            "torch.optim.adam", "torch.optim.sgd"} <= set(modules)
    missing = []
    checked = 0
    for name in modules:
        rel = name[len("torch.optim"):]
        ours = importlib.import_module("nbopt.optim" + rel)
        theirs = importlib.import_module(name)
        for attr in public_names(theirs):
            if f"{name}.{attr}" in EXCLUDED:
                continue
            checked += 1
            if not hasattr(ours, attr):
                missing.append(f"{name}.{attr}")
                continue
            # a torch module is a module here too, a class a class, a function callable
            mine, torch_obj = getattr(ours, attr), getattr(theirs, attr)
            if isinstance(torch_obj, types.ModuleType):
                assert isinstance(mine, types.ModuleType), f"{name}.{attr}"
            elif inspect.isclass(torch_obj):
                assert inspect.isclass(mine), f"{name}.{attr}"
            elif callable(torch_obj):
                assert callable(mine), f"{name}.{attr}"
    assert not missing, missing
    assert checked > 60


def test_the_torch_optim_modules_are_nbopts_objects():
    """Works without torch: the modules exist and hold nbopt's own objects."""
    assert optim.Optimizer is nbopt.Optimizer
    assert optim.lr_scheduler.OneCycleLR is nbopt.lr_scheduler.OneCycleLR
    assert set(optim.lr_scheduler.__all__) == set(nbopt.lr_scheduler.__all__)
    assert optim.swa_utils.AveragedModel is nbopt.swa_utils.AveragedModel
    assert optim.optimizer.Optimizer is nbopt.Optimizer
    from nbopt.optim.optimizer import (register_optimizer_step_post_hook,
                                       register_optimizer_step_pre_hook)
    from nbopt.optimizer import register_optimizer_step_pre_hook as pre
    assert register_optimizer_step_pre_hook is pre and callable(register_optimizer_step_post_hook)
    from nbopt.optim.adam import Adam, adam
    assert Adam is nbopt.Adam and callable(adam)
    for name in ("SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam",
                 "RAdam", "RMSprop", "Rprop", "SparseAdam", "LBFGS", "Adafactor", "Muon"):
        assert getattr(optim, name) is getattr(nbopt, name)


def test_the_global_hooks_of_nbopt_optim_optimizer_fire():
    import numpy as np

    calls = []
    pre = optim.optimizer.register_optimizer_step_pre_hook(lambda o, a, k: calls.append("pre"))
    post = optim.optimizer.register_optimizer_step_post_hook(lambda o, a, k: calls.append("post"))
    try:
        w = nbopt.Parameter(np.zeros(2))
        w.grad = np.ones(2)
        optim.SGD([w], lr=0.1).step()
    finally:
        pre.remove()
        post.remove()
    assert calls == ["pre", "post"]
