"""torch's ``foreach``/``differentiable``/``fused`` flags and Tensor betas.

On CPU torch's default (``foreach=None``) runs its for-loop path, which
``tests/test_parity.py`` checks.  Some flags run other code whose per-step
scalars round differently (float32 tensor arithmetic, a Tensor lr read as a
double): ``cases.VARIANT_CASES`` lists them, and nbopt with the same flag must
match torch with that flag at the parity tolerance, against committed
reference data (``tests/data/torch_variants_reference.npz``, written by
``tests/make_reference.py``) and against live torch.  The flags not listed
change nothing in torch 2.13 on CPU; a live test keeps that claim honest.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from cases import (CHECKPOINT_STEP, SHAPES, STEPS, VARIANT_CASES, Case, grad_is_none,
                   variant_dtypes)
from conftest import live_tolerances, load_reference, requires_torch
from test_parity import assert_same_trajectory
from reference_io import read_trajectory, run_trajectory, torch_to_numpy
from trajectory import make_inputs

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                    "torch_variants_reference.npz")
SEED = 1000        # make_inputs(SEED + row): inputs of their own, apart from CASES'
DEFAULT_BETAS = (0.9, 0.999)

PARAMS = [(case, dtype) for case in VARIANT_CASES for dtype in variant_dtypes(case)]
IDS = [f"{case.id}-{dtype}" for case, dtype in PARAMS]


def inputs_for(case: Case, dtype: str):
    return make_inputs(SEED + VARIANT_CASES.index(case), dtype)


def _options(case: Case, wrap):
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = wrap(opts["lr"])
    if case.tensor_betas:
        opts["betas"] = tuple(wrap(b) for b in opts.get("betas", DEFAULT_BETAS))
    return opts


def run(lib: str, case: Case, inputs, reload: bool = False):
    """Run ``case`` through ``lib`` ("torch" or "nbopt"): ``{step: snapshot}``
    at CHECKPOINT_STEP and STEPS, as ``trajectory.run_nbopt``/``run_torch``.
    torch's parameters do not require grad, so that ``differentiable=True``
    (which keeps autograd on during the step) may update them in place."""
    if lib == "torch":
        import torch

        def to_param(a):
            return torch.nn.Parameter(torch.from_numpy(a.copy()), requires_grad=False)

        def to_grad(a):
            return torch.from_numpy(a.copy())

        to_numpy = torch_to_numpy
        wrap, module = torch.tensor, torch.optim
    else:
        import nbopt

        def to_param(a):
            return nbopt.Parameter(a.copy())

        to_grad, to_numpy = np.copy, (lambda x: x)
        wrap, module = (lambda x: np.array(x, np.float32)), nbopt
    params = [[to_param(inputs[f"p{gi}{pi}"]) for pi in range(len(shapes))]
              for gi, shapes in enumerate(SHAPES)]

    def make():
        groups = [{"params": params[0]}, {"params": params[1], **case.group1}]
        return getattr(module, case.cls)(groups, **_options(case, wrap))

    def set_grad(p, g):
        p.grad = None if g is None else to_grad(g)

    return run_trajectory(make(), make, params, inputs, grad_is_none, set_grad, to_numpy,
                          steps=STEPS, checkpoint=CHECKPOINT_STEP, reload=reload)[0]


# -- committed reference data ---------------------------------------------------

def reference():
    return load_reference(DATA)


def stored(case: Case, dtype: str):
    """(inputs, trajectory, reloaded final snapshot) recorded from torch."""
    prefix = f"{case.id}|{dtype}|"
    inputs, expected, reload = read_trajectory(reference(), prefix)
    if not inputs:
        pytest.fail(f"no reference data for {case.id} {dtype}: run tests/make_reference.py")
    return inputs, expected, {STEPS: reload}


def test_reference_covers_the_table():
    with np.load(DATA, allow_pickle=False) as z:
        index = json.loads(z["index"].tobytes())
    assert index["torch"].startswith("2.13.")
    assert index["cases"] == [c.id for c in VARIANT_CASES]


@pytest.mark.parametrize("case,dtype", PARAMS, ids=IDS)
def test_matches_committed_torch_reference(case, dtype):
    inputs, expected, _ = stored(case, dtype)
    assert_same_trajectory(run("nbopt", case, inputs), expected, dtype)


@pytest.mark.parametrize("case,dtype", PARAMS, ids=IDS)
def test_reloaded_run_matches_committed_torch_reference(case, dtype):
    inputs, _, final = stored(case, dtype)
    assert_same_trajectory({STEPS: run("nbopt", case, inputs, reload=True)[STEPS]}, final,
                           dtype)


# -- live torch -----------------------------------------------------------------

@requires_torch
@pytest.mark.parametrize("case,dtype", PARAMS, ids=IDS)
def test_matches_live_torch(case, dtype):
    inputs = inputs_for(case, dtype)
    assert_same_trajectory(run("nbopt", case, inputs), run("torch", case, inputs), dtype,
                           tolerances=live_tolerances(dtype))


@requires_torch
@pytest.mark.parametrize("case,dtype", PARAMS, ids=IDS)
def test_reloaded_run_matches_live_torch(case, dtype):
    inputs = inputs_for(case, dtype)
    assert_same_trajectory({STEPS: run("nbopt", case, inputs, reload=True)[STEPS]},
                           {STEPS: run("torch", case, inputs, reload=True)[STEPS]}, dtype,
                           tolerances=live_tolerances(dtype))


def _default_path(case: Case) -> Case:
    """The same row on torch's default path: the flag dropped, float betas."""
    options = {k: v for k, v in case.options.items()
               if k not in ("foreach", "differentiable", "fused")}
    return dataclasses.replace(case, options=options, tensor_betas=False)


def _same(a, b) -> bool:
    return all(np.array_equal(a[s][k], b[s][k]) for s in b for k in b[s])


@requires_torch
@pytest.mark.parametrize("case", VARIANT_CASES, ids=[c.id for c in VARIANT_CASES])
def test_torch_variant_differs_from_its_default_path(case):
    """Each row earns its place: torch's variant does not reproduce its
    default path bit for bit (in at least one dtype)."""
    for dtype in variant_dtypes(case):
        inputs = inputs_for(case, dtype)
        if not _same(run("torch", case, inputs), run("torch", _default_path(case), inputs)):
            return
    pytest.fail(f"torch's {case.id} is its default path: the row tests nothing")


# The flags that change nothing in torch 2.13 on CPU (README): one rich row
# per algorithm, with a float and a Tensor lr (``foreach=True`` refuses a
# Tensor lr for Adam/AdamW, as nbopt does, and changes Adamax's: a row of
# VARIANT_CASES).
UNCHANGED = {
    "foreach": [
        ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
        ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True)),
        ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
        ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.1, maximize=True)),
        ("Adadelta", dict(lr=0.5, weight_decay=0.1, maximize=True)),
        ("Adamax", dict(lr=0.01, weight_decay=0.1, maximize=True)),
        ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.9, weight_decay=0.01)),
        ("Rprop", dict(lr=0.01, etas=(0.3, 1.5), maximize=True)),
    ],
    "differentiable": [
        ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
        ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.1, maximize=True)),
        ("Adadelta", dict(lr=0.5, weight_decay=0.1, maximize=True)),
        ("Adamax", dict(lr=0.01, weight_decay=0.1, maximize=True)),
        ("ASGD", dict(lr=0.05, lambd=0.02, alpha=1.5, t0=5, weight_decay=0.1)),
        ("RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
        ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.9, weight_decay=0.01)),
        ("Rprop", dict(lr=0.01, etas=(0.3, 1.5), maximize=True)),
    ],
}
UNCHANGED_ROWS = [(flag, cls, opts, tensor_lr) for flag, rows in UNCHANGED.items()
                  for cls, opts in rows for tensor_lr in (False, True)
                  if not (flag == "foreach" and tensor_lr and cls in ("Adam", "AdamW", "Adamax"))]


@requires_torch
@pytest.mark.parametrize("flag,cls,options,tensor_lr", UNCHANGED_ROWS,
                         ids=[f"{f}-{c}{'-tensor_lr' if t else ''}"
                              for f, c, _, t in UNCHANGED_ROWS])
def test_flags_that_change_nothing_in_torch(flag, cls, options, tensor_lr):
    """torch's variant is its default path bit for bit, and so is nbopt's."""
    case = Case(cls, {**options, flag: True}, dict(lr=options["lr"] / 2), tensor_lr=tensor_lr)
    for dtype in ("float32", "float64"):
        inputs = make_inputs(SEED + 500, dtype)
        torch_run = run("torch", case, inputs)
        assert _same(torch_run, run("torch", _default_path(case), inputs)), (
            f"torch's {flag}=True changed {cls} ({dtype}): list it in cases.VARIANT_CASES")
        assert _same(run("nbopt", case, inputs), run("nbopt", _default_path(case), inputs))
