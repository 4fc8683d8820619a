"""The steady path's compiled scalar row (``AlgorithmSpec.steady_row``): the
numbers of the Python maths (``AlgorithmSpec.scalars`` and ``advance``) bit
for bit, the Python maths wherever it must decide (Tensor or odd options,
values that are not finite, errors), and a step that uses it."""
from __future__ import annotations

import operator

import numpy as np
import pytest

import nbopt
from nbopt.engine import _Steady, _Stored32, _Stored64, _rounded
from nbopt.registry import get

# (class, how to draw hyper-parameters in torch's ranges)
BETAS = lambda r: (float(r.uniform(0, 0.999)), float(r.uniform(0.5, 0.99999)))  # noqa: E731
CASES = {
    "SGD": lambda r: dict(lr=r.uniform(0, 1), momentum=r.uniform(0, 1),
                          dampening=r.uniform(0, 1), weight_decay=r.uniform(0, 0.1)),
    "Adam": lambda r: dict(lr=r.uniform(0, 1), betas=BETAS(r), eps=r.uniform(0, 1e-3),
                           weight_decay=r.uniform(0, 0.1)),
    "AdamW": lambda r: dict(lr=r.uniform(0, 1), betas=BETAS(r), weight_decay=r.uniform(0, 0.1)),
    "Adagrad": lambda r: dict(lr=r.uniform(0, 1), lr_decay=r.uniform(0, 0.1),
                              eps=r.uniform(0, 1e-3), weight_decay=r.uniform(0, 0.1)),
    "Adadelta": lambda r: dict(lr=r.uniform(0, 2), rho=r.uniform(0, 1), eps=r.uniform(0, 1e-3),
                               weight_decay=r.uniform(0, 0.1)),
    "Adamax": lambda r: dict(lr=r.uniform(0, 1), betas=BETAS(r), eps=r.uniform(0, 1e-3),
                             weight_decay=r.uniform(0, 0.1)),
    "ASGD": lambda r: dict(lr=r.uniform(0, 1), lambd=r.uniform(0, 1e-3), alpha=r.uniform(0, 1),
                           t0=float(r.integers(0, 100)), weight_decay=r.uniform(0, 0.1)),
    "NAdam": lambda r: dict(lr=r.uniform(0, 1), betas=BETAS(r), weight_decay=r.uniform(0, 0.1),
                            momentum_decay=r.uniform(0, 0.01)),
    "RAdam": lambda r: dict(lr=r.uniform(0, 1), betas=BETAS(r), weight_decay=r.uniform(0, 0.1)),
    "RMSprop": lambda r: dict(lr=r.uniform(0, 1), alpha=r.uniform(0, 1), eps=r.uniform(0, 1e-3),
                              weight_decay=r.uniform(0, 0.1), momentum=r.uniform(0, 1)),
    "Rprop": lambda r: dict(lr=r.uniform(0, 1), etas=(r.uniform(0.1, 1), r.uniform(1, 2)),
                            step_sizes=(r.uniform(0, 1e-5), r.uniform(1, 60))),
}
# step counts before the step: small, around float32's exact range, large
STEPS = [0, 1, 4, 999, 2 ** 24 - 2, 2 ** 24 - 1, 2 ** 24, 3e7, 1e9]


def _setup(cls, kwargs):
    opt = getattr(nbopt, cls)([nbopt.Parameter(np.zeros(3, np.float32))], **kwargs)
    spec = get(opt._algorithm)
    return spec, opt.param_groups[0]


def _python_row(spec, group, steps, sarrays, stored):
    """The general path's maths for a steady step (as _Steady.ready)."""
    t = steps.item(0) + 1.0
    if t > 16777216.0:
        t = float(np.float32(t))
    old = tuple(a.item(0) for a in sarrays)
    new = stored(_rounded(spec.advance(group, t, old, stored.dtype), stored.dtype)) \
        if sarrays else ()
    return t, spec.scalars(group, t, False, old, new), new


def _compiled_row(spec, group, steps, sarrays, dtype):
    row = spec.steady_row
    h = row.hyper(operator.itemgetter(*row.keys)(group))
    assert h is not None, "plain float options must take the compiled row"
    out = np.full((2, spec.n_scalars), -7, dtype)     # two rows: every row is written
    new = np.zeros(max(1, len(sarrays)))
    head = (out, steps, *sarrays, new) if sarrays else (out, steps)
    return row.row(*head, False, *h), out, new


@pytest.mark.parametrize("cls", sorted(CASES))
def test_compiled_row_is_the_python_maths_bit_for_bit(cls):
    rng = np.random.default_rng(abs(hash(cls)) % 2 ** 32)
    for trial in range(40):
        spec, group = _setup(cls, CASES[cls](rng))
        assert spec.steady_row is not None
        for dtype in (np.float32, np.float64):
            for stored in (_Stored32, _Stored64):
                steps = np.array([STEPS[trial % len(STEPS)]], np.float32)
                sarrays = [np.array([rng.uniform(0.05, 1.0)], stored.dtype)
                           for _ in spec.scalar_state]
                before = [a.copy() for a in sarrays], steps.copy()
                t, row, new = _python_row(spec, group, steps, sarrays, stored)
                got_t, out, got_new = _compiled_row(spec, group, steps, sarrays, dtype)
                assert got_t == t
                want = np.array([row, row], np.float64).astype(dtype)
                np.testing.assert_array_equal(out, want)
                assert out.tobytes() == want.tobytes()
                assert [float(x) for x in got_new[:len(new)]] == [float(x) for x in new]
                # nothing but the row and the new-state buffer is written
                assert steps == before[1] and all(
                    np.array_equal(a, b) for a, b in zip(sarrays, before[0]))


@pytest.mark.parametrize("cls,key,value", [
    ("Adam", "lr", np.array([0.01], np.float32)),      # a Tensor lr: float32 maths
    ("Adam", "betas", [0.9, 0.999]),                    # a list can change in place
    ("Adam", "betas", (np.array([0.9]), np.array([0.999]))),
    ("Adam", "fused", True),
    ("Adam", "differentiable", True),
    ("Adam", "betas", (1.0, 0.999)),                    # outside torch's range
    ("Adam", "weight_decay", True),                     # a bool is not a float
    ("NAdam", "differentiable", True),
    ("RAdam", "foreach", True),
    ("ASGD", "foreach", True),
    ("ASGD", "alpha", -0.5),
    ("Adagrad", "lr_decay", -1.0),
    ("Rprop", "etas", [0.5, 1.2]),
    ("SGD", "lr", 10 ** 400),                           # an int beyond float
])
def test_python_maths_runs_for_options_it_must_decide(cls, key, value):
    spec, group = _setup(cls, {})
    group[key] = value
    row = spec.steady_row
    assert row.hyper(operator.itemgetter(*row.keys)(group)) is None


def test_a_value_that_is_not_finite_leaves_the_row_to_python():
    spec, group = _setup("Adam", dict(lr=float("inf")))
    row = spec.steady_row
    h = row.hyper(operator.itemgetter(*row.keys)(group))
    out = np.zeros((1, spec.n_scalars), np.float32)
    steps = np.zeros(1, np.float32)
    assert row.row(out, steps, True, *h) == 0.0
    assert not out.any() and not steps.any(), "nothing written"


@pytest.mark.parametrize("cls", ["Adam", "NAdam", "ASGD"])
def test_commit_writes_the_step_counts_and_scalar_state_of_the_python_path(cls):
    spec, group = _setup(cls, CASES[cls](np.random.default_rng(5)))
    row = spec.steady_row
    h = row.hyper(operator.itemgetter(*row.keys)(group))
    steps = np.full(3, 41, np.float32)
    sarrays = [np.full(3, 0.3 + k, np.float32) for k in range(len(spec.scalar_state))]
    t, want, new = _python_row(spec, group, steps, sarrays, _Stored32)
    out = np.zeros((1, spec.n_scalars), np.float32)
    head = (out, steps, *sarrays, np.zeros(len(sarrays))) if sarrays else (out, steps)
    assert row.row(*head, True, *h) == t
    assert (steps == np.float32(t)).all()
    for arr, value in zip(sarrays, new):
        assert (arr == np.float32(value)).all()
    # step counts that disagree: the Python maths decides, nothing is written
    steps[1] = 7
    before = steps.copy(), [a.copy() for a in sarrays]
    assert row.row(*head, True, *h) == 0.0
    assert np.array_equal(steps, before[0])
    assert all(np.array_equal(a, b) for a, b in zip(sarrays, before[1]))


def _steady_run(cls, kwargs, steps, edits=lambda k, group: None, dtype=np.float32):
    rng = np.random.default_rng(3)
    params = [nbopt.Parameter(rng.standard_normal(n).astype(dtype)) for n in (50, 7)]
    opt = getattr(nbopt, cls)(params, **kwargs)
    for k in range(steps):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(dtype)
        edits(k, opt.param_groups[0])
        opt.step()
    return opt, [np.array(p) for p in params]


def _schedule(k, group):
    group["lr"] = 0.01 * 0.9 ** k         # a scheduler: a new float every step
    if k == 6:
        group["weight_decay"] = 0.05
    if k == 9 and "betas" in group:
        group["betas"] = (0.8, 0.99)


_reread = _Steady._reread


def _without_compiled_row(self, group):
    """_Steady._reread, then no compiled row: every step takes the Python maths."""
    held = _reread(self, group)
    self.fast_h = None
    self.watched = object()     # never equal: read again (and dropped) every step
    return held


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", sorted(CASES))
def test_steps_with_the_compiled_row_equal_the_python_maths(cls, dtype, monkeypatch):
    kwargs = {"lr": 0.01}
    opt, fast = _steady_run(cls, kwargs, 14, _schedule, dtype)
    plan = opt._flat[0].flat[0]._steady
    assert plan is not None and plan.fast_call is not get(opt._algorithm).steady_row.row, \
        "the steady path ran the compiled row through its entry point"
    monkeypatch.setattr(_Steady, "_reread", _without_compiled_row)
    ref_opt, ref = _steady_run(cls, kwargs, 14, _schedule, dtype)
    for a, b in zip(fast, ref):
        assert a.tobytes() == b.tobytes()
    for p, q in zip(opt.param_groups[0]["params"], ref_opt.param_groups[0]["params"]):
        for key, value in ref_opt.state[q].items():
            assert np.asarray(opt.state[p][key]).tobytes() == np.asarray(value).tobytes(), key


def test_an_error_in_the_host_maths_still_raises_before_anything_changes():
    # ASGD's eta: CPython's ``**`` overflows (torch raises the same error);
    # the compiled row must not hide it behind a finite eta of 0
    opt, _ = _steady_run("ASGD", dict(lr=0.01), 4)
    params = opt.param_groups[0]["params"]
    state = opt.state[params[0]]
    before = [np.array(p) for p in params], {k: np.array(v) for k, v in state.items()}
    opt.param_groups[0].update(lambd=1e300, alpha=4.0)
    with pytest.raises(OverflowError):
        opt.step()
    assert all(np.array_equal(p, b) for p, b in zip(params, before[0]))
    assert all(np.array_equal(opt.state[params[0]][k], v) for k, v in before[1].items())
