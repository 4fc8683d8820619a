"""Parity of every (algorithm, options) case with torch 2.13.

Three comparisons per case and dtype, over 50 steps with two param groups,
gradients that are None on some steps, parameters and every state entry
compared mid-run and at the end:

* against the committed reference data (always runs);
* against live torch (when torch is importable);
* continued after a new optimizer loads the state_dict mid-run (torch's
  load_state_dict casts state to the parameters' dtype), against the
  committed reference and live torch;
* ParameterArena vs separately allocated parameters (bit-identical).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cases import CASES, DTYPES, STEPS, TOLERANCES
from conftest import load_reference, requires_torch
from reference_io import read_trajectory
from trajectory import make_inputs, run_nbopt, run_torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch_reference.npz")


def reference():
    return load_reference(DATA)


def stored(case, dtype):
    ref = reference()
    prefix = f"{case.id}|{dtype}|"
    if f"{prefix}in|p00" not in ref:
        pytest.fail(f"no reference data for {case.id} {dtype}: run tests/make_reference.py")
    inputs, expected, _ = read_trajectory(ref, prefix)
    return inputs, expected


def stored_reload(case, dtype):
    """The final snapshot of the run whose optimizer was replaced by one that
    loaded its state_dict at CHECKPOINT_STEP."""
    prefix = f"{case.id}|{dtype}|reload|"
    snap = {k[len(prefix):]: v for k, v in reference().items() if k.startswith(prefix)}
    if not snap:
        pytest.fail(f"no reload reference data for {case.id} {dtype}: "
                    "run tests/make_reference.py")
    return {STEPS: snap}


def assert_same_trajectory(got, expected, dtype, exact=False, tolerances=None):
    assert got.keys() == expected.keys()
    for step in expected:
        # same state entries in the same order: the state_dict layout is torch's
        assert list(got[step]) == list(expected[step]), (
            f"step {step}: state keys differ: {list(got[step])} vs {list(expected[step])}")
        for name, want in expected[step].items():
            have = got[step][name]
            assert have.shape == want.shape, f"step {step} {name}: shape"
            if exact:
                np.testing.assert_array_equal(have, want, err_msg=f"step {step} {name}")
            else:
                wide = np.complex128 if np.iscomplexobj(want) else np.float64
                assert have.dtype == want.dtype, f"step {step} {name}: dtype"
                np.testing.assert_allclose(have.astype(wide), want.astype(wide),
                                           err_msg=f"step {step} {name}",
                                           **(tolerances or TOLERANCES[dtype]))


def test_reference_covers_the_table():
    with np.load(DATA, allow_pickle=False) as z:
        index = json.loads(z["index"].tobytes())
    assert index["torch"].startswith("2.13.")
    assert index["cases"] == [c.id for c in CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_committed_torch_reference(case, dtype):
    inputs, expected = stored(case, dtype)
    assert_same_trajectory(run_nbopt(case, inputs), expected, dtype)


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_live_torch(case, dtype):
    inputs = make_inputs(CASES.index(case), dtype)
    assert_same_trajectory(run_nbopt(case, inputs), run_torch(case, inputs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_arena_matches_separate_arrays(case, dtype):
    inputs = make_inputs(CASES.index(case), dtype)
    assert_same_trajectory(run_nbopt(case, inputs, arena=True), run_nbopt(case, inputs),
                           dtype, exact=True)


def _final(trajectory):
    return {STEPS: trajectory[STEPS]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reloaded_run_matches_committed_torch_reference(case, dtype):
    inputs, _ = stored(case, dtype)
    assert_same_trajectory(_final(run_nbopt(case, inputs, reload=True)),
                           stored_reload(case, dtype), dtype)


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reloaded_run_matches_live_torch(case, dtype):
    inputs = make_inputs(CASES.index(case), dtype)
    assert_same_trajectory(_final(run_nbopt(case, inputs, reload=True)),
                           _final(run_torch(case, inputs, reload=True)), dtype)
