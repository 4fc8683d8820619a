"""nbopt.functional (issue 13): every element-wise algorithm's njit-callable
step against the class API, bit for bit, over the rows of the parity table
(tests/cases.py) that use plain float hyper-parameters, with the state
handed between the two APIs mid-run.  The class API is checked against
torch 2.13 by tests/test_parity.py."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from numba import njit

import nbopt
import nbopt.functional as F
from cases import CASES

STEPS = 12
SWITCH = 5            # the state changes API after this many steps
DTYPES = ("float32", "float64", "complex64")
# options only the class API has (torch's implementation switches)
CLASS_ONLY = {"foreach", "fused", "differentiable", "capturable"}


def _functions(cls: str):
    name = cls.lower()
    return getattr(F, f"{name}_init", None), getattr(F, f"{name}_step", None)


def _plain(case) -> bool:
    return not (case.tensor_lr or case.tensor_betas or set(case.options) & CLASS_ONLY)


ROWS = [c for c in CASES if _plain(c) and _functions(c.cls)[1] is not None]


def _kwargs(options: dict, fn) -> dict:
    """The class options as the functional function's arguments (``betas``
    split into ``beta1``/``beta2``, ``etas`` into ``etaminus``/``etaplus``,
    ``step_sizes`` into ``step_size_min``/``step_size_max``)."""
    out = {}
    for key, value in options.items():
        if key == "betas":
            out["beta1"], out["beta2"] = value
        elif key == "etas":
            out["etaminus"], out["etaplus"] = value
        elif key == "step_sizes":
            out["step_size_min"], out["step_size_max"] = value
        else:
            out[key] = value
    accepted = inspect.signature(fn.py_func).parameters
    return {k: v for k, v in out.items() if k in accepted}


def _values(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return np.asarray(x, dtype)


def test_every_element_wise_algorithm_has_a_functional_step():
    for name in ("SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam",
                 "RAdam", "RMSprop", "Rprop"):
        init, step = _functions(name)
        assert init is not None and step is not None, name


def test_every_class_option_is_a_functional_argument():
    for case in ROWS:
        init, step = _functions(case.cls)
        accepted = set(inspect.signature(step.py_func).parameters) | set(
            inspect.signature(init.py_func).parameters)
        wanted = set(_kwargs(case.options, step)) | set(_kwargs(case.options, init))
        names = {"beta1", "beta2", "etaminus", "etaplus", "step_size_min", "step_size_max"}
        for key in case.options:
            if key not in CLASS_ONLY:
                expanded = names if key in ("betas", "etas", "step_sizes") else {key}
                assert expanded & (accepted | wanted), f"{case.cls} lacks {key}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROWS, ids=[c.id for c in ROWS])
def test_functional_step_equals_the_class_bit_for_bit(case, dtype):
    rng = np.random.default_rng(0)
    init, step = _functions(case.cls)
    x = _values(rng, (4, 3), dtype)
    p = nbopt.Parameter(x.copy())
    opt = getattr(nbopt, case.cls)([p], **case.options)
    q = x.copy()
    state = init(q, **_kwargs(case.options, init))
    kwargs = _kwargs(case.options, step)
    for k in range(STEPS):
        g = _values(rng, x.shape, dtype)
        p.grad = g
        opt.step()
        step(q, g, state, **kwargs)
        if k == SWITCH:
            # the state changes hands: class -> functional and back (no entry
            # at all where the class keeps no state: SGD without momentum, as torch)
            entry = opt.state_dict()["state"].get(0, {})
            state = F.from_state_dict(type(state), entry, q)
            sd = opt.state_dict()
            sd["state"][0] = F.to_state_dict(state)
            opt.load_state_dict(sd)
    assert np.array_equal(_bits(p), _bits(q))
    entry = opt.state_dict()["state"].get(0, {})
    mine = F.to_state_dict(state)
    assert mine.keys() == {k for k, v in entry.items() if v is not None}
    for key, value in mine.items():
        theirs = np.asarray(entry[key])
        assert np.array_equal(_bits(theirs), _bits(np.asarray(value, theirs.dtype))), key


def _bits(a):
    """The bytes of ``a``: NaNs and signed zeros compare as stored."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


@njit
def _inside_njit(step_fn, w, state, steps):
    grad = np.empty_like(w)
    for _ in range(steps):
        for i in range(w.size):
            grad[i] = 2 * (w[i] - 3)
        step_fn(w, grad, state, 0.05)


@pytest.mark.parametrize("cls", ["SGD", "Adam", "Adagrad", "RMSprop"])
def test_called_from_the_users_njit_loop(cls):
    init, step = _functions(cls)
    w = np.zeros(3)
    state = init(w)
    before = float(state.step[0]) if "step" in state._fields else None
    _inside_njit(step, w, state, 50)
    p = nbopt.Parameter(np.zeros(3))
    opt = getattr(nbopt, cls)([p], lr=0.05)
    for _ in range(50):
        p.grad = 2 * (np.asarray(p) - 3)
        opt.step()
    assert np.array_equal(w, np.asarray(p))
    if before is not None:
        assert state.step[0] == before + 50


def test_unsupported_arrays_fail_at_compile_time_with_a_reason():
    from numba.core.errors import TypingError

    w = np.zeros((3, 4), order="F")
    with pytest.raises(TypingError, match="C-contiguous"):
        F.adam_step(w, w.copy(order="F"), F.adam_init(np.zeros((3, 4))), 0.1)
    with pytest.raises(TypingError, match="float and complex"):
        F.adam_step(np.zeros(3, np.int64), np.zeros(3, np.int64), F.adam_init(np.zeros(3)), 0.1)


def test_checkpoint_round_trip_through_nbopt_save(tmp_path):
    w = np.linspace(-1, 1, 5)
    state = F.adam_init(w, True)
    for _ in range(3):
        F.adam_step(w, w.copy(), state, 0.1, amsgrad=True)
    path = str(tmp_path / "s.npz")
    nbopt.save({"w": w, "state": F.to_state_dict(state)}, path)
    back = nbopt.load(path)
    again = F.from_state_dict(F.AdamState, back["state"], back["w"])
    for a, b in zip(state, again):
        assert np.array_equal(a, b)


def test_bench_functional_prints_a_row_per_size(tmp_path):
    from nbopt.cli.bench_functional import main

    path = str(tmp_path / "rows.json")
    assert main(["--sizes", "10,1000", "--no-torch", "--json", path]) == 0
    import json

    rows = json.load(open(path))
    assert [r["n"] for r in rows] == [10, 1000]
    for r in rows:
        for key in ("functional", "hand-written", "opt.step()"):
            assert 0 < r[key] < 1.0, (key, r)
