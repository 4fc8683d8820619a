"""``nbopt.swa_utils.SWALR`` against torch 2.13.

Every case of ``make_swalr_reference.CASES`` (cos and linear annealing,
``anneal_epochs`` 0, 1 and more, one swa_lr for all groups or one per group,
float and array learning rates, the SWA recipe with CosineAnnealingLR
handing over to SWALR, resuming with ``last_epoch``, the deprecated
``step(epoch)``, the step-order and ``get_lr`` warnings) is compared step by
step -- every group's lr, ``get_last_lr()``, ``last_epoch`` -- together with
the warnings, the group keys SWALR adds, the groups' ``swa_lr`` and its
``state_dict()``:

* against the committed torch reference data (``tests/data/swalr_reference.npz``,
  made by ``tests/make_swalr_reference.py``), once straight through and once
  with a ``state_dict`` -> ``nbopt.save`` -> ``nbopt.load`` -> fresh optimizer
  and SWALR -> ``load_state_dict`` round trip mid-run;
* against live torch when it is importable.

The learning rates are Python doubles computed with torch's operations in
torch's order, so they are compared for equality (float32 array lrs too).
``ERROR_CASES`` checks torch's exception types, messages and check order, and
that the optimizer's groups are untouched after an error.
"""
from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest

import nbopt
from nbopt import swa_utils
from nbopt.lr_scheduler import CosineAnnealingLR, LRScheduler
from nbopt.swa_utils import SWALR

from conftest import requires_torch
import make_swalr_reference as ref
from scheduler_cases import nbopt_wording

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "swalr_reference.npz")
IDS = [c.id for c in ref.CASES]
ERROR_IDS = [c.id for c in ref.ERROR_CASES]

_reference = None


def reference() -> dict:
    global _reference
    if _reference is None:
        with np.load(DATA, allow_pickle=False) as z:
            _reference = {k: z[k] for k in z.files}
            _reference["index"] = json.loads(_reference["index"].tobytes())
    return _reference


def stored(case) -> dict:
    data = reference()
    if case.id not in data["index"]["cases"]:
        pytest.fail(f"no reference data for {case.id}: run tests/make_swalr_reference.py")
    out = {name: data[f"{case.id}|{name}"] for name in ref.ARRAYS}
    out.update(data["index"]["cases"][case.id])
    return out


def assert_same_state(got, want, where="state_dict"):
    """Same keys in the same order, same types, same values."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not a dict"
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same_state(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_state(g, w, f"{where}[{i}]")
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def assert_same_run(got: dict, want: dict, *, states: bool = True) -> None:
    for name in ref.ARRAYS:
        assert got[name].shape == want[name].shape, name
        # bit for bit: the same double operations in the same order as torch
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert got["warnings"] == nbopt_wording([list(w) for w in want["warnings"]])
    assert got["added_keys"] == want["added_keys"]
    assert got["swa_lrs"] == want["swa_lrs"]
    if states:
        assert_same_state(got["mid_state"], want["mid_state"], "mid-run state_dict")
    assert_same_state(got["final_state"], want["final_state"], "final state_dict")


def file_roundtrip(tmp_path):
    def roundtrip(opt_state, sched_state):
        path = tmp_path / "ckpt.npz"
        nbopt.save({"opt": opt_state, "sched": sched_state}, path)
        loaded = nbopt.load(path)
        return loaded["opt"], loaded["sched"]
    return roundtrip


# -- parity ------------------------------------------------------------------------------
def test_reference_covers_the_tables():
    index = reference()["index"]
    assert index["torch"].startswith("2.13.")
    assert list(index["cases"]) == IDS
    assert list(index["errors"]) == ERROR_IDS
    assert len(set(IDS)) == len(IDS) and len(set(ERROR_IDS)) == len(ERROR_IDS)


def test_table_covers_the_options():
    cases = ref.CASES
    assert {c.anneal_strategy or "cos" for c in cases} == {"cos", "linear"}
    assert {0, 1} <= {c.anneal_epochs for c in cases}
    assert any(isinstance(c.swa_lr, tuple) for c in cases)
    assert any(c.cosine_until for c in cases) and any(c.resume_at for c in cases)
    assert any(c.tensor_lr for c in cases)


@pytest.mark.parametrize("case", ref.CASES, ids=IDS)
def test_matches_committed_torch_reference(case):
    assert_same_run(ref.run_case(case, "nbopt"), stored(case))


@pytest.mark.parametrize("case", ref.CASES, ids=IDS)
def test_state_dict_roundtrip_through_nbopt_save(case, tmp_path):
    """A fresh optimizer and SWALR loading the saved states mid-run continue
    exactly as the uninterrupted torch run."""
    got = ref.run_case(case, "nbopt", roundtrip=file_roundtrip(tmp_path))
    assert_same_run(got, stored(case))


@requires_torch
@pytest.mark.parametrize("case", ref.CASES, ids=IDS)
def test_matches_live_torch(case):
    assert_same_run(ref.run_case(case, "nbopt"), ref.run_case(case, "torch"))


@requires_torch
def test_public_names_match_torch():
    import torch.optim.swa_utils as torch_swa

    assert swa_utils.__all__ == torch_swa.__all__
    import inspect

    def params(cls):
        return [(p.name, p.default, p.kind) for p in inspect.signature(cls).parameters.values()]

    assert params(SWALR) == params(torch_swa.SWALR)


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ref.ERROR_CASES, ids=ERROR_IDS)
def test_errors_match_torch_and_change_nothing(case):
    got = ref.run_error(case, "nbopt")
    want = reference()["index"]["errors"][case.id]
    assert (got["type"], got["message"]) == (want["type"], want["message"])
    assert got["unchanged"], "the param groups were modified before the error"


@requires_torch
@pytest.mark.parametrize("case", ref.ERROR_CASES, ids=ERROR_IDS)
def test_errors_match_live_torch(case):
    got, want = ref.run_error(case, "nbopt"), ref.run_error(case, "torch")
    assert (got["type"], got["message"]) == (want["type"], want["message"])


def test_failed_resume_leaves_array_lrs_and_keys_alone():
    """The base constructor's KeyError comes after SWALR wrote ``swa_lr``:
    the groups are put back, array lrs in place."""
    lr = np.array(0.1, np.float32)
    opt = nbopt.SGD([{"params": [nbopt.Parameter(np.zeros(2))], "lr": lr}], lr=0.1)
    opt.param_groups[0]["swa_lr"] = 0.5      # left by an earlier scheduler
    with pytest.raises(KeyError):
        SWALR(opt, swa_lr=0.05, last_epoch=2)
    group = opt.param_groups[0]
    assert group["lr"] is lr and float(lr) == np.float32(0.1)
    assert group["swa_lr"] == 0.5 and "initial_lr" not in group


# -- behaviour ----------------------------------------------------------------------------
def _opt(*lrs):
    return nbopt.SGD([{"params": [nbopt.Parameter(np.zeros(1))], "lr": lr} for lr in lrs],
                     lr=lrs[0])


def _lrs(opt, sched, steps):
    out = [[g["lr"] for g in opt.param_groups]]
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append([g["lr"] for g in opt.param_groups])
    return out


def test_is_a_scheduler_with_torch_state_keys():
    opt = _opt(0.1, 0.02)
    sched = SWALR(opt, swa_lr=[0.05, 0.01], anneal_epochs=4, anneal_strategy="linear")
    assert isinstance(sched, LRScheduler)
    state = sched.state_dict()
    assert "optimizer" not in state and "anneal_func" not in state
    assert state["_anneal_strategy"] == "linear" and state["anneal_epochs"] == 4
    assert [g["swa_lr"] for g in opt.param_groups] == [0.05, 0.01]
    assert sched.anneal_func is SWALR._linear_anneal


def test_load_state_dict_restores_the_anneal_function():
    """A cos scheduler that loads a linear one's state continues linearly,
    exactly as the linear one does."""
    opt_a, opt_b = _opt(0.1), _opt(0.1)
    linear = SWALR(opt_a, swa_lr=0.01, anneal_epochs=6, anneal_strategy="linear")
    cos = SWALR(opt_b, swa_lr=0.01, anneal_epochs=6)
    _lrs(opt_a, linear, 2)
    opt_b.load_state_dict(opt_a.state_dict())
    cos.load_state_dict(linear.state_dict())
    assert cos.anneal_func is SWALR._linear_anneal
    assert _lrs(opt_b, cos, 6) == _lrs(opt_a, linear, 6)


def test_reaches_swa_lr_after_anneal_epochs_and_stays():
    for strategy in ("cos", "linear"):
        for epochs in (0, 1, 5):
            opt = _opt(0.1, 0.3)
            sched = SWALR(opt, swa_lr=[0.02, 0.05], anneal_epochs=epochs,
                          anneal_strategy=strategy)
            lrs = _lrs(opt, sched, epochs + 4)
            assert lrs[0] == ([0.02, 0.05] if epochs == 0 else [0.1, 0.3])
            for row in lrs[max(epochs, 1):]:
                assert row == pytest.approx([0.02, 0.05], rel=1e-14)
            # monotone from the start value to swa_lr
            firsts = [row[0] for row in lrs]
            assert all(a >= b - 1e-15 for a, b in zip(firsts, firsts[1:]))


def test_anneal_formula():
    """After k steps: alpha * swa_lr + (1 - alpha) * lr0 with alpha = f(k / A)."""
    anneal = {"cos": lambda t: (1 - math.cos(math.pi * t)) / 2, "linear": lambda t: t}
    for strategy, f in anneal.items():
        opt = _opt(0.1)
        sched = SWALR(opt, swa_lr=0.01, anneal_epochs=7, anneal_strategy=strategy)
        for k, (lr,) in enumerate(_lrs(opt, sched, 10)):
            alpha = f(min(1, k / 7))
            assert lr == pytest.approx(alpha * 0.01 + (1 - alpha) * 0.1, rel=1e-12)


def test_array_lr_is_updated_in_place():
    lr = np.array(0.1, np.float32)
    opt = nbopt.SGD([{"params": [nbopt.Parameter(np.zeros(1))], "lr": lr}], lr=0.1)
    sched = SWALR(opt, swa_lr=0.05, anneal_epochs=2)
    _lrs(opt, sched, 3)
    assert opt.param_groups[0]["lr"] is lr
    assert lr.dtype == np.float32 and float(lr) == pytest.approx(0.05, rel=1e-7)
    assert sched.get_last_lr()[0] is not lr


def test_recipe_hands_over_from_cosine():
    """Both schedulers made up front; SWALR's first step anneals from the lr
    CosineAnnealingLR left behind."""
    opt = _opt(0.1)
    cosine = CosineAnnealingLR(opt, T_max=20)
    swa = SWALR(opt, swa_lr=0.05, anneal_epochs=3)
    for _ in range(5):
        opt.step()
        cosine.step()
    handover = opt.param_groups[0]["lr"]
    assert handover == pytest.approx(0.05 * (1 + math.cos(math.pi * 5 / 20)))
    opt.step()
    swa.step()
    alpha = (1 - math.cos(math.pi / 3)) / 2
    assert opt.param_groups[0]["lr"] == pytest.approx(alpha * 0.05 + (1 - alpha) * handover)


def test_get_lr_outside_step_warns():
    opt = _opt(0.1)
    sched = SWALR(opt, swa_lr=0.05)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
        sched.step()
