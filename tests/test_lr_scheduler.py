"""``nbopt.lr_scheduler`` against torch 2.13.

Every case of ``scheduler_cases.CASES`` (each scheduler and option family,
200 steps, two param groups) is compared step by step -- every group's lr,
momentum / beta1, ``get_last_lr()``, ``last_epoch`` -- together with the
warnings, the group keys the scheduler adds and its ``state_dict()``:

* against the committed torch reference data (always runs), once straight
  through and once with a ``state_dict`` -> ``nbopt.save`` -> ``nbopt.load`` ->
  fresh optimizer and scheduler -> ``load_state_dict`` round trip mid-run;
* against live torch (when torch is importable).

``ERROR_CASES`` checks torch's exception types and messages, and that nothing
was modified before the error.
"""
from __future__ import annotations

import doctest
import gc
import json
import math
import os
import warnings

import numpy as np
import pytest

import nbopt
import nbopt.lr_scheduler as lr_scheduler
from conftest import requires_torch
from scheduler_cases import (CASES, ERROR_CASES, RTOL, Lib, build, nbopt_wording, normalize,
                             run_case, run_error)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                    "scheduler_reference.npz")
ARRAYS = ("lr", "momentum", "last_lr", "last_epoch")

_reference = None


def reference():
    global _reference
    if _reference is None:
        with np.load(DATA, allow_pickle=False) as z:
            _reference = {k: z[k] for k in z.files}
            _reference["index"] = json.loads(_reference["index"].tobytes())
    return _reference


def stored(case) -> dict:
    ref = reference()
    if case.id not in ref["index"]["cases"]:
        pytest.fail(f"no reference data for {case.id}: run tests/make_scheduler_reference.py")
    out = {name: ref[f"{case.id}|{name}"] for name in ARRAYS}
    out.update(ref["index"]["cases"][case.id])
    return out


def assert_same_state(got, want, where="state_dict"):
    """Same keys in the same order, same types, floats within RTOL."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not a dict"
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same_state(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_state(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert type(got) is float, f"{where}: {got!r} is not a float like {want!r}"
        assert got == want or math.isclose(got, want, rel_tol=RTOL, abs_tol=0.0), \
            f"{where}: {got!r} != {want!r}"
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def assert_same_run(got: dict, want: dict, *, states: bool = True) -> None:
    for name in ("lr", "momentum", "last_lr"):
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=0.0, equal_nan=True,
                                   err_msg=name)
    np.testing.assert_array_equal(got["last_epoch"], want["last_epoch"])
    assert got["warnings"] == nbopt_wording([list(w) for w in want["warnings"]])
    assert got["added_keys"] == want["added_keys"]
    if states:
        assert_same_state(got["mid_state"], want["mid_state"], "mid-run state_dict")
    assert_same_state(got["final_state"], want["final_state"], "final state_dict")


def file_roundtrip(tmp_path):
    """Scheduler and optimizer state through nbopt.save / nbopt.load."""
    def roundtrip(opt_state, sched_state):
        path = tmp_path / "ckpt.npz"
        nbopt.save({"opt": opt_state, "sched": sched_state}, path)
        loaded = nbopt.load(path)
        return loaded["opt"], loaded["sched"]
    return roundtrip


IDS = [c.id for c in CASES]


def test_reference_covers_the_tables():
    index = reference()["index"]
    assert index["torch"].startswith("2.13.")
    assert list(index["cases"]) == IDS
    assert list(index["errors"]) == [c.id for c in ERROR_CASES]
    assert len(set(IDS)) == len(IDS)


def test_table_covers_every_scheduler():
    tested = {c.name for c in CASES} | {n for c in CASES for n, _ in c.children}
    assert tested == set(lr_scheduler.__all__) - {"LRScheduler"}
    assert all(c.steps >= 200 for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_committed_torch_reference(case, tmp_path):
    want = stored(case)
    assert_same_run(run_case(case, "nbopt"), want)
    # state_dict -> nbopt.save -> nbopt.load -> fresh optimizer and scheduler mid-run:
    # the run continues exactly as torch's uninterrupted one
    assert_same_run(run_case(case, "nbopt", roundtrip=file_roundtrip(tmp_path)), want)


@requires_torch
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_live_torch(case):
    assert_same_run(run_case(case, "nbopt"), run_case(case, "torch"))


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.id for c in ERROR_CASES])
def test_bad_input_matches_committed_torch_reference(case):
    got = run_error(case, "nbopt")
    want = reference()["index"]["errors"][case.id]
    assert (got["type"], got["message"]) == (want["type"], want["message"])
    # raised before the optimizer's groups were touched (torch writes some
    # group keys before a few of these checks; nbopt checks first)
    assert got["unchanged"]


@requires_torch
@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.id for c in ERROR_CASES])
def test_bad_input_matches_live_torch(case):
    got, want = run_error(case, "nbopt"), run_error(case, "torch")
    assert (got["type"], got["message"]) == (want["type"], want["message"])


# -- the optimizer.step wrapper -----------------------------------------------------------
def _sgd(lr=0.1, **kw):
    return nbopt.SGD([nbopt.Parameter(np.zeros(3))], lr=lr, **kw)


def test_step_wrapper_keeps_the_hooks_and_marks_the_optimizer():
    opt = _sgd()
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o, args)))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", o, args)))
    from nbopt.optimizer import register_optimizer_step_pre_hook
    handle = register_optimizer_step_pre_hook(lambda o, a, k: calls.append(("global", o, a)))
    try:
        sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        assert opt.step._wrapped_by_lr_sched
        assert not getattr(opt, "_opt_called", False)
        loss = opt.step(lambda: 3.0)
        assert loss == 3.0
        assert opt._opt_called
        assert [c[0] for c in calls] == ["global", "pre", "post"]
        assert all(c[1] is opt and c[2][0] is opt for c in calls)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sched.step()
        # a second scheduler does not wrap again: hooks still fire once per step
        wrapped = opt.step
        lr_scheduler.ExponentialLR(opt, gamma=0.9)
        assert opt.step is wrapped
        calls.clear()
        opt.step()
        assert [c[0] for c in calls] == ["global", "pre", "post"]
    finally:
        handle.remove()


def test_step_wrapper_does_not_keep_the_optimizer_alive():
    opt = _sgd()
    sched = lr_scheduler.StepLR(opt, step_size=2)
    step = opt.step
    del opt, sched
    gc.collect()
    # the wrapper refers to its optimizer weakly (torch's weakref), so no cycle
    # through the instance attribute keeps it
    assert step.__closure__ is not None
    refs = [c.cell_contents for c in step.__closure__
            if type(c.cell_contents).__name__ == "ReferenceType"]
    assert refs and refs[0]() is None


def test_scheduler_before_optimizer_warns_once():
    opt = _sgd()
    sched = lr_scheduler.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match=r"Detected call of `lr_scheduler.step\(\)` before"):
        sched.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()


# -- tensor lr ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(), (1,)])
def test_tensor_lr_is_updated_in_place(shape):
    lr = np.full(shape, 0.1, np.float32)
    opt = nbopt.SGD([nbopt.Parameter(np.zeros(2))], lr=lr, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=20)
    for _ in range(10):
        opt.step()
        sched.step()
    group = opt.param_groups[0]
    assert group["lr"] is lr and lr.dtype == np.float32 and lr.shape == shape
    last = sched.get_last_lr()[0]
    assert last is not lr and last.shape == shape and last.item() == lr.item()
    plateau = lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    before = lr.item()
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # no NumPy deprecation on size-1 arrays
        plateau.step(np.array([1.0]))
        plateau.step(np.array([2.0]))
    assert group["lr"] is lr and lr.item() == np.float32(before * 0.5)


# -- state_dict contents -----------------------------------------------------------------------
def test_lambda_state_is_plain_data():
    class Scaled:
        def __init__(self):
            self.k = 3

        def __call__(self, epoch):
            return 1 / (epoch + self.k)

    opt = nbopt.SGD([{"params": [nbopt.Parameter(np.zeros(1))]},
                     {"params": [nbopt.Parameter(np.zeros(1))]}], lr=0.1)
    obj = Scaled()
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 0.9 ** e, obj])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None, {"k": 3}]
    obj.k = 99
    sched.load_state_dict(state)
    assert obj.k == 3 and sched.lr_lambdas[1] is obj
    assert "lr_lambdas" in state          # load puts it back, as torch


def test_state_dict_round_trips_through_nbopt_save_for_every_case(tmp_path):
    lib = Lib("nbopt")
    for i, case in enumerate(CASES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, sched = build(case, lib)
        path = tmp_path / f"s{i}.npz"
        nbopt.save(sched.state_dict(), path)      # refuses anything but plain data
        assert_same_state(normalize(nbopt.load(path)), normalize(sched.state_dict()), case.id)


def test_multistep_milestones_become_a_counter_again(tmp_path):
    opt = _sgd()
    sched = lr_scheduler.MultiStepLR(opt, milestones=[2, 2, 5], gamma=0.5)
    nbopt.save(sched.state_dict(), tmp_path / "s.npz")
    fresh = lr_scheduler.MultiStepLR(_sgd(), milestones=[1])
    fresh.load_state_dict(nbopt.load(tmp_path / "s.npz"))
    assert fresh.milestones == sched.milestones
    assert sorted(fresh.milestones.elements()) == [2, 2, 5]


def test_resume_needs_initial_lr():
    opt = _sgd()
    with pytest.raises(KeyError, match=r"param 'initial_lr' is not specified in param_groups\[0\]"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=10, last_epoch=4)
    assert "initial_lr" not in opt.param_groups[0]


def test_existing_initial_lr_is_kept():
    opt = _sgd(lr=0.1)
    opt.param_groups[0]["initial_lr"] = 0.5
    sched = lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    assert sched.base_lrs == [0.5] and opt.param_groups[0]["lr"] == 0.5


# -- the schedulers drive a real optimization as in torch --------------------------------------
@requires_torch
@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_cycled_momentum_reaches_the_update(kind):
    import torch

    rng = np.random.default_rng(5)
    w0 = rng.standard_normal(7)
    grads = rng.standard_normal((40, 7))
    w = nbopt.Parameter(w0.copy())
    tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opts = dict(lr=0.1, momentum=0.9) if kind == "SGD" else dict(lr=0.01)
    opt = getattr(nbopt, kind)([w], **opts)
    topt = getattr(torch.optim, kind)([tw], **opts)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=40)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.3, total_steps=40)
    for g in grads[:-1]:
        w.grad = g.copy()
        tw.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_docstring_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(lr_scheduler, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 15 and result.failed == 0
