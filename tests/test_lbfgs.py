"""nbopt.LBFGS against torch.optim.LBFGS 2.13.

Parity (float64, every case of ``make_lbfgs_reference.CASES``, four ``step()``
calls each, with and without strong-Wolfe, several history sizes and
``max_iter`` values, complex and grad-less parameters, mixed dtypes): the
parameters, the returned loss and every state entry after every step, within
``RTOL`` normwise relative (``max|a - b| <= RTOL * max|b|`` per entry), the
integer counters exactly, the state keys in torch's order and the same
Python-number-or-array type for ``t`` and ``H_diag``.  Against the committed
reference always, against live torch when it is importable.

Checkpoints: a run saved with ``nbopt.save`` after two steps, loaded into a
fresh optimizer, continues bit for bit as the uninterrupted run; torch's own
state after two steps (converted to NumPy) continues as torch does.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import nbopt
from conftest import HAVE_TORCH, requires_torch
from make_lbfgs_reference import (CASES, OUT, RESUME_AFTER, STEPS, Case, make_data, run_nbopt,
                                  run_torch, state_from_snapshot)
from nbopt import config
from nbopt.optim.lbfgs import LBFGS

RTOL = 1e-9
IDS = [c.id for c in CASES]

_reference = None


def reference():
    global _reference
    if _reference is None:
        with np.load(OUT, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        _reference = (arrays, json.loads(arrays.pop("index").tobytes()))
    return _reference


def stored(case: Case):
    arrays, index = reference()
    if f"{case.id}|1" not in index["meta"]:
        pytest.fail(f"no reference data for {case.id}: run tests/make_lbfgs_reference.py")
    data, snaps = {}, {}
    for key, value in arrays.items():
        cid, step, name = key.split("|")
        if cid != case.id:
            continue
        if step == "in":
            data[name] = value
        else:
            snaps.setdefault(int(step), ({}, index["meta"][f"{cid}|{step}"]))[0][name] = value
    return data, snaps


def assert_close(got: dict, expected: dict, exact: bool = False) -> None:
    """Compare two ``{step: (arrays, meta)}`` trajectories (see module doc)."""
    assert sorted(got) == sorted(expected)
    for step in expected:
        (have, have_meta), (want, want_meta) = got[step], expected[step]
        # the same state keys in the same order, t / H_diag of the same kind
        assert have_meta == want_meta, f"step {step}"
        assert have.keys() == want.keys(), f"step {step}"
        for name, w in want.items():
            h = have[name]
            where = f"step {step} {name}"
            assert h.shape == w.shape, where
            if exact:
                np.testing.assert_array_equal(h, w, err_msg=where)
            elif name in ("func_evals", "n_iter"):
                assert h == w, where
            else:
                assert h.dtype == w.dtype, where
                np.testing.assert_array_equal(np.isnan(h), np.isnan(w), err_msg=where)
                ok = ~np.isnan(w)
                if not ok.any():
                    continue
                scale = np.max(np.abs(w[ok]))
                err = np.max(np.abs(h[ok] - w[ok])) if h.size else 0.0
                assert err <= RTOL * scale, f"{where}: {err:.3g} > {RTOL} * {scale:.3g}"


def test_reference_covers_the_table():
    _, index = reference()
    assert index["torch"].startswith("2.13.")
    assert index["cases"] == IDS


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_committed_torch_reference(case):
    data, expected = stored(case)
    got, _, _ = run_nbopt(case, data)
    assert_close(got, expected)


@requires_torch
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_live_torch(case):
    data = make_data(case.problem, case.seed)
    got, _, _ = run_nbopt(case, data)
    assert_close(got, run_torch(case, data))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_resume_from_checkpoint_is_bit_for_bit(case, tmp_path):
    data, expected = stored(case)
    uninterrupted, _, _ = run_nbopt(case, data)
    _, opt, params = run_nbopt(case, data, steps=range(RESUME_AFTER))
    path = tmp_path / "lbfgs.ckpt"
    nbopt.save(opt.state_dict(), path)
    values = [np.array(p) for p in params]
    del opt, params

    fresh = [nbopt.Parameter(v) for v in values]
    opt2 = LBFGS(fresh, **case.options)
    opt2.load_state_dict(nbopt.load(path))
    resumed, _, _ = run_nbopt(case, data, steps=range(RESUME_AFTER, STEPS), opt=opt2,
                              params=fresh)
    later = {s: uninterrupted[s] for s in resumed}
    assert_close(resumed, later, exact=True)
    assert_close(resumed, {s: expected[s] for s in resumed})


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_resume_from_torch_state(case):
    """torch's state after two steps, as NumPy, continues as torch continued."""
    data, expected = stored(case)
    arrays, meta = expected[RESUME_AFTER]
    count = sum(1 for name in arrays if name.startswith("param"))
    params = [nbopt.Parameter(arrays[f"param{i}"].copy()) for i in range(count)]
    opt = LBFGS(params, **case.options)
    groups = [{k: v for k, v in opt.param_groups[0].items() if k != "params"}]
    groups[0]["params"] = list(range(len(params)))
    opt.load_state_dict({"state": {0: state_from_snapshot(arrays, meta)}, "param_groups": groups})
    got, _, _ = run_nbopt(case, data, steps=range(RESUME_AFTER, STEPS), opt=opt, params=params)
    assert_close(got, {s: expected[s] for s in got})


# -- behaviour -----------------------------------------------------------------------

def _quadratic(params):
    """Closure of sum(s * |x|**2) / 2 - sum(Re x) with per-element curvatures s
    in 1..5 (over each parameter's elements, real and imaginary parts alike)."""
    def closure():
        loss = 0.0
        for p in params:
            x = np.asarray(p)
            s = 1.0 + np.arange(x.size).reshape(x.shape) % 5
            p.grad = (s * x - 1).astype(p.dtype)
            loss += float(np.sum(0.5 * s * np.abs(x) ** 2 - x.real))
        return loss
    return closure


def test_defaults_are_torchs():
    p = nbopt.Parameter(np.zeros(3))
    opt = LBFGS([p])
    assert opt.defaults == {"lr": 1, "max_iter": 20, "max_eval": 25, "tolerance_grad": 1e-7,
                            "tolerance_change": 1e-9, "history_size": 100,
                            "line_search_fn": None}
    assert type(opt.defaults["lr"]) is int
    assert LBFGS([p], max_iter=10).defaults["max_eval"] == 12
    assert LBFGS([p], max_iter=10, max_eval=3).defaults["max_eval"] == 3
    if HAVE_TORCH:
        import torch

        t = torch.optim.LBFGS([torch.nn.Parameter(torch.zeros(3))], max_iter=7)
        assert LBFGS([p], max_iter=7).defaults == t.defaults


def test_step_requires_a_closure():
    opt = LBFGS([nbopt.Parameter(np.zeros(2))])
    with pytest.raises(TypeError, match=r"^LBFGS\.step\(\) missing 1 required positional "
                                        r"argument: 'closure'$"):
        opt.step()


def test_one_param_group_only():
    a, b = nbopt.Parameter(np.zeros(2)), nbopt.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match=r"^LBFGS doesn't support per-parameter options "
                                         r"\(parameter groups\)$"):
        LBFGS([{"params": [a]}, {"params": [b]}])
    opt = LBFGS([a])
    opt.add_param_group({"params": [b]})
    a.grad = np.ones(2)
    with pytest.raises(AssertionError, match=r"^Expected exactly one param_group, but got 2$"):
        opt.step(lambda: 1.0)
    assert opt.state == {} and np.all(a == 0)


def test_invalid_learning_rate():
    p = nbopt.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1$"):
        LBFGS([p], lr=-1)
    with pytest.raises(ValueError, match=r"^Tensor lr must be 1-element$"):
        LBFGS([p], lr=np.array([0.1, 0.2]))


def test_unknown_line_search_fails_at_first_use_as_torch():
    p = nbopt.Parameter(np.array([1.0, 2.0]))
    opt = LBFGS([p], line_search_fn="armijo")     # accepted by the constructor
    with pytest.raises(RuntimeError, match=r"^only 'strong_wolfe' is supported$"):
        opt.step(_quadratic([p]))
    # torch has evaluated the closure and counted the iteration, not moved
    assert opt.state[p]["func_evals"] == 1 and opt.state[p]["n_iter"] == 1
    np.testing.assert_array_equal(p, [1.0, 2.0])
    if HAVE_TORCH:
        import torch

        tp = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        topt = torch.optim.LBFGS([tp], line_search_fn="armijo")

        def closure():
            tp.grad = tp.detach() - 1
            return 0.0
        with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
            topt.step(closure)
        assert dict(topt.state[tp]) == dict(opt.state[p])


def test_returns_first_loss_and_stops_at_an_optimum():
    p = nbopt.Parameter(np.ones(4))
    opt = LBFGS([p])
    calls = []

    def closure():
        calls.append(1)
        p.grad = np.zeros(4)
        return 3.5
    assert opt.step(closure) == 3.5
    assert len(calls) == 1
    assert opt.state[p] == {"func_evals": 1, "n_iter": 0}
    np.testing.assert_array_equal(p, np.ones(4))


def test_bad_gradient_raises_before_anything_moves():
    p = nbopt.Parameter(np.ones(3))
    opt = LBFGS([p])

    def closure():
        p.grad = np.ones(4)
        return 1.0
    with pytest.raises(RuntimeError, match=r"grad has shape \(4,\) but the parameter has "
                                           r"shape \(3,\)"):
        opt.step(closure)
    np.testing.assert_array_equal(p, np.ones(3))
    assert opt.state[p] == {"func_evals": 0, "n_iter": 0}

    def closure32():
        p.grad = np.ones(3, np.float32)
        return 1.0
    with pytest.raises(RuntimeError, match="grad has dtype float32 but the parameter has "
                                           "dtype float64"):
        opt.step(closure32)


def test_integer_parameters_are_rejected():
    p = nbopt.Parameter(np.arange(3), requires_grad=False)
    opt = LBFGS([p])
    with pytest.raises(TypeError, match="can only optimize floating point and complex"):
        opt.step(lambda: 0.0)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_fortran_ordered_parameter_matches_c_ordered(line_search_fn):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((5, 7))
    runs = []
    for order in "CF":
        w = nbopt.Parameter(np.array(base, order=order))
        b = nbopt.Parameter(np.zeros(3))
        opt = LBFGS([w, b], max_iter=5, history_size=3, line_search_fn=line_search_fn)
        closure = _quadratic([w, b])
        for _ in range(3):
            opt.step(closure)
        assert w.flags.f_contiguous == (order == "F")
        runs.append((np.array(w), np.array(b), opt.state[w]["d"].copy()))
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)


def test_serial_and_parallel_kernels_agree_bit_for_bit(monkeypatch):
    """The reduction blocking is fixed, so the thread count and dispatch do
    not change any bit (several blocks: 40,000 elements).  float64 only: the
    parallel kernels take seconds to compile on a cold cache."""
    dtype = "float64"
    rng = np.random.default_rng(1)
    init = rng.standard_normal(40_000).astype(dtype)
    scale = (1 + rng.random(40_000)).astype(dtype)
    results = []
    for threshold in (1 << 40, 0):
        monkeypatch.setattr(config, "PARALLEL_THRESHOLD", threshold)
        p = nbopt.Parameter(init.copy())
        opt = LBFGS([p], max_iter=6, history_size=3, line_search_fn="strong_wolfe")

        def closure():
            p.grad = scale * p - 1
            return float(np.sum(0.5 * scale * p * p - p))
        for _ in range(2):
            opt.step(closure)
        results.append((np.array(p), opt.state[p]["d"].copy(), opt.state[p]["n_iter"]))
    for x, y in zip(*results):
        np.testing.assert_array_equal(x, y)


def test_float32_state_keeps_the_dtype():
    p = nbopt.Parameter(np.linspace(-1, 1, 10, dtype=np.float32))
    opt = LBFGS([p], max_iter=4)
    opt.step(_quadratic([p]))
    st = opt.state[p]
    assert p.dtype == np.float32
    assert st["d"].dtype == st["prev_flat_grad"].dtype == np.float32
    assert all(v.dtype == np.float32 for v in st["old_dirs"] + st["old_stps"] + st["ro"])
    assert st["H_diag"].dtype == np.float32 and st["H_diag"].shape == ()


@requires_torch
@pytest.mark.parametrize("case", [c for c in CASES if c.problem in ("quad", "logreg")][:6],
                         ids=lambda c: c.id)
def test_float32_first_step_is_close_to_torch(case):
    """float32 follows torch to rounding (dot-product order differs, so no
    bit parity): the first step's parameters within 1e-4, same state layout."""
    data = make_data(case.problem, case.seed)
    for k in list(data):
        if k.startswith("p"):
            data[k] = data[k].astype(np.float32)
    got, _, _ = run_nbopt(case, data, steps=range(1))
    want = run_torch(case, data, steps=range(1))
    assert got[1][1] == want[1][1]
    for name, w in want[1][0].items():
        if name.startswith("param"):
            assert got[1][0][name].dtype == np.float32
            np.testing.assert_allclose(got[1][0][name], w, rtol=1e-4,
                                       atol=1e-4 * np.abs(w).max())


def test_popped_history_vectors_that_are_still_referenced_are_not_reused():
    p = nbopt.Parameter(np.linspace(-2, 2, 12))
    opt = LBFGS([p], max_iter=3, history_size=1)
    closure = _quadratic([p])
    opt.step(closure)
    kept = opt.state[p]["old_dirs"][0]
    copy = kept.copy()
    sd = opt.state_dict()
    for _ in range(3):
        opt.step(closure)
    assert opt.state[p]["old_dirs"][0] is not kept
    np.testing.assert_array_equal(kept, copy)
    # state_dict() holds the live lists, as torch's does
    assert sd["state"][0]["old_dirs"] is opt.state[p]["old_dirs"]


def test_closure_error_in_line_search_restores_the_parameters():
    p = nbopt.Parameter(np.array([1.0, -1.0, 3.0]))
    opt = LBFGS([p], line_search_fn="strong_wolfe")
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise KeyError("boom")
        p.grad = 2 * p
        return float(p @ p)
    with pytest.raises(KeyError):
        opt.step(closure)
    np.testing.assert_array_equal(p, [1.0, -1.0, 3.0])


def test_load_state_dict_validates_before_changing_anything():
    p = nbopt.Parameter(np.linspace(0, 1, 5))
    opt = LBFGS([p], max_iter=3)
    opt.step(_quadratic([p]))
    before = opt.state_dict()
    good = {k: (list(v) if isinstance(v, list) else v) for k, v in before["state"][0].items()}
    bad_states = [
        {**good, "d": np.zeros(4)},
        {**good, "old_dirs": [np.zeros(5)] * (len(good["old_dirs"]) + 1)},
        {**good, "old_stps": (np.zeros(5),) * len(good["old_stps"])},
        {**good, "n_iter": 2.0},
        {**good, "ro": ["x"] * len(good["ro"])},
        {**good, "t": "1"},
    ]
    for bad in bad_states:
        snapshot = {k: v for k, v in opt.state[p].items()}
        with pytest.raises(ValueError, match="loaded state"):
            opt.load_state_dict({"state": {0: bad}, "param_groups": before["param_groups"]})
        assert opt.state[p].keys() == snapshot.keys()
        assert all(opt.state[p][k] is snapshot[k] for k in snapshot)


def test_state_dict_layout_is_torchs():
    p = nbopt.Parameter(np.linspace(0, 1, 5))
    q = nbopt.Parameter(np.ones((2, 2), np.complex128))
    opt = LBFGS([p, q], max_iter=3, history_size=4)
    opt.step(_quadratic([p, q]))
    sd = opt.state_dict()
    assert list(sd["state"]) == [0]
    st = sd["state"][0]
    assert list(st) == ["func_evals", "n_iter", "al", "d", "t", "old_dirs", "old_stps", "ro",
                        "H_diag", "prev_flat_grad", "prev_loss"]
    assert type(st["func_evals"]) is int and type(st["n_iter"]) is int
    assert type(st["prev_loss"]) is float
    assert st["d"].shape == (13,)               # 5 reals + 4 complex as 8 reals
    assert len(st["al"]) == 4 and st["al"][-1] is None
    assert sd["param_groups"] == [{"lr": 1, "max_iter": 3, "max_eval": 3,
                                   "tolerance_grad": 1e-7, "tolerance_change": 1e-9,
                                   "history_size": 4, "line_search_fn": None,
                                   "params": [0, 1]}]


def test_tensor_lr():
    """A 1-element array lr acts as torch's Tensor lr (its dtype enters t)."""
    p = nbopt.Parameter(np.linspace(-1, 1, 6))
    opt = LBFGS([p], lr=np.array([0.5], np.float32), max_iter=4)
    opt.step(_quadratic([p]))
    t = opt.state[p]["t"]
    assert isinstance(t, np.ndarray) and t.shape == () and t.dtype == np.float32
    if HAVE_TORCH:
        import torch

        tp = torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))
        topt = torch.optim.LBFGS([tp], lr=torch.tensor([0.5]), max_iter=4)

        s = torch.from_numpy(1.0 + np.arange(6) % 5)

        def closure():
            x = tp.detach()
            tp.grad = s * x - 1
            return float(torch.sum(0.5 * s * x ** 2 - x))
        topt.step(closure)
        np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=1e-12)
        assert topt.state[tp]["t"].dtype == torch.float32


class _DuckSparse:
    """The sparse-gradient protocol LBFGS densifies (``is_sparse`` and
    ``to_dense()``, as torch's sparse tensors and nbopt's SparseGrad)."""

    is_sparse = True

    def __init__(self, dense):
        self._dense = dense

    def to_dense(self):
        return self._dense.copy()


def test_sparse_gradients_are_densified():
    rng = np.random.default_rng(3)
    init = rng.standard_normal((6, 4))
    s = 1.0 + np.arange(24).reshape(6, 4) % 5
    runs = []
    for wrap in (lambda g: g, _DuckSparse):
        w = nbopt.Parameter(init.copy())
        opt = LBFGS([w], max_iter=4, history_size=2)

        def closure():
            w.grad = wrap(s * np.asarray(w) - 1)
            return float(np.sum(0.5 * s * np.asarray(w) ** 2 - np.asarray(w)))
        for _ in range(2):
            opt.step(closure)
        runs.append((np.array(w), opt.state[w]["d"].copy()))
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)


def test_checkpoint_after_the_first_iteration_keeps_python_numbers(tmp_path):
    """After one iteration H_diag is torch's int 1, t a Python float and there
    is no 'al' yet: they survive nbopt.save / nbopt.load as they are."""
    def make():
        # close to the minimum (x = 1/s): sum|g| < 1, so t = min(1, 1/sum|g|) * lr
        # is the Python float 1.0
        s = 1.0 + np.arange(7) % 5
        p = nbopt.Parameter(1 / s + 0.01 * np.linspace(-1, 2, 7))
        return p, LBFGS([p], max_iter=1, history_size=3)
    p, opt = make()
    closure = _quadratic([p])
    opt.step(closure)
    st = opt.state[p]
    assert type(st["H_diag"]) is int and type(st["t"]) is float and "al" not in st
    nbopt.save(opt.state_dict(), tmp_path / "c.ckpt")
    loaded = nbopt.load(tmp_path / "c.ckpt")
    q, opt2 = make()
    q[...] = p
    opt2.load_state_dict(loaded)
    st2 = opt2.state[q]
    assert list(st2) == list(st)
    assert type(st2["H_diag"]) is int and type(st2["t"]) is float
    closure2 = _quadratic([q])
    for _ in range(3):
        assert opt.step(closure) == opt2.step(closure2)
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(st["d"], st2["d"])
