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


# -- the fused two-loop recursion ------------------------------------------------------

def _per_update_path(monkeypatch):
    """Make LBFGS run its passes as before they were fused: a memory pass that
    leaves q alone, then one ``pass_`` call per update from Python; a line
    search's trial point as a copy of its start, then an add."""
    from nbopt.optim import lbfgs as mod

    memory = mod._FlatParams.memory
    monkeypatch.setattr(mod._FlatParams, "memory",
                        lambda self, g, prev, d, t, y, s, q=None: memory(self, g, prev, d, t, y, s))
    monkeypatch.setattr(mod._FlatParams, "two_loop", mod._two_loop_passes)
    add = mod._FlatParams.add

    def set_then_add(self, t, d, x=None):
        if x is not None:
            self.set(x)
        return add(self, t, d)
    monkeypatch.setattr(mod._FlatParams, "add", set_then_add)


def _stale_quadratic(p, scale, stale_calls):
    """sum(scale x^2 / 2 - x); the calls numbered in ``stale_calls`` hand back
    the previous gradient (y = 0: the pair is not kept, with a history)."""
    calls = [0]
    last = [None]

    def closure():
        calls[0] += 1
        x = np.asarray(p)
        if calls[0] not in stale_calls or last[0] is None:
            last[0] = (scale * x - 1).astype(p.dtype)
        p.grad = last[0].copy()
        return float(np.sum(0.5 * scale * x * x - x))
    return closure


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_recursion_equals_the_per_update_passes_bit_for_bit(monkeypatch, dtype,
                                                                  line_search_fn):
    """One compiled call for the whole two-loop recursion (its opening update
    fused into the memory pass), and line-search trial points written in one
    pass, give the per-update path's bits: parameters, losses and every state
    entry, over several blocks, a history that wraps, and pairs that are not
    kept while there is a history."""
    rng = np.random.default_rng(3)
    init = rng.standard_normal(40_000).astype(dtype)     # 3 blocks of the reductions
    scale = (1 + 9 * rng.random(40_000)).astype(dtype)
    runs = []
    for fused in (True, False):
        if not fused:
            _per_update_path(monkeypatch)
        p = nbopt.Parameter(init.copy())
        opt = LBFGS([p], max_iter=7, history_size=3, line_search_fn=line_search_fn)
        # calls whose stale gradient drops a pair once the history is there
        stale = {5, 6, 12} if line_search_fn is None else {8, 9, 10}
        closure = _stale_quadratic(p, scale, stale_calls=stale)
        losses = [opt.step(closure) for _ in range(3)]
        st = opt.state[p]
        assert len(st["old_dirs"]) == 3
        runs.append((losses, np.array(p), st))
    (l1, p1, s1), (l2, p2, s2) = runs
    assert l1 == l2
    np.testing.assert_array_equal(p1, p2)
    assert list(s1) == list(s2)
    for key in s1:
        a, b = s1[key], s2[key]
        if isinstance(a, list):
            assert len(a) == len(b), key
            for x, y in zip(a, b):
                assert (x is None) == (y is None), key
                if x is not None:
                    assert np.asarray(x).dtype == np.asarray(y).dtype, key
                    np.testing.assert_array_equal(x, y, err_msg=key)
        else:
            assert type(a) is type(b), key
            np.testing.assert_array_equal(a, b, err_msg=key)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m", [0, 1, 4])
def test_two_loop_backend_equals_the_per_update_passes(dtype, m):
    """``_FlatParams.two_loop`` against ``_two_loop_passes`` on one history:
    with and without the opening update done, with ro as 0-d arrays (the
    compiled loop) and as Python floats (float64: the per-update fallback,
    the same numbers)."""
    from nbopt.optim.lbfgs import _FlatParams, _two_loop_passes

    rng = np.random.default_rng(m)
    n = 20_000
    p = nbopt.Parameter(np.zeros(n, dtype))
    flat = _FlatParams([p])
    g = rng.standard_normal(n).astype(dtype)
    ys = [rng.standard_normal(n).astype(dtype) for _ in range(m)]
    ss = [(0.01 * (y + rng.standard_normal(n))).astype(dtype) for y in ys]
    ro = [np.asarray(np.reciprocal(np.dot(y, s))) for y, s in zip(ys, ss)]
    h = np.asarray(0.7, dtype)[()]
    ro_forms = [ro] + ([[float(r) for r in ro]] if dtype == "float64" and m else [])
    for ro_form in ro_forms:
        for opened in ([False, True] if m else [False]):
            results = []
            for run in (flat.two_loop, lambda *a: _two_loop_passes(flat, *a)):
                q = np.full(n, np.nan, dtype)
                first = None
                if opened:
                    first = flat.pass_(q, g, 0, 1, ss[-1], 0)      # MODE_NEG
                al = [None] * 5
                gtd = run(q, g, ys, ss, ro_form, al, h, first)
                results.append((gtd, q, al))
            (g1, q1, al1), (g2, q2, al2) = results
            assert type(g1) is type(g2) and g1 == g2
            np.testing.assert_array_equal(q1, q2)
            assert [None if a is None else (a.dtype, a.shape, a[()]) for a in al1] == \
                   [None if a is None else (a.dtype, a.shape, a[()]) for a in al2]


@pytest.mark.parametrize("layout", ["direct", "fortran", "twice", "mixed"])
def test_trial_point_in_one_pass_equals_copy_then_add(layout):
    """``add(t, d, x)`` (a line search's trial point ``x + t d``) leaves the
    parameters and returns the ``max|d t|`` of ``set(x)`` then ``add(t, d)``,
    for parameters reached in place, through copies, and listed twice."""
    from nbopt.optim.lbfgs import _FlatParams

    rng = np.random.default_rng(7)

    def make():
        a = rng.standard_normal((30, 40))
        b = rng.standard_normal(25_000)
        if layout == "fortran":
            a = np.asfortranarray(a)
        if layout == "mixed":
            b = b.astype(np.float32)
        pa, pb = nbopt.Parameter(a), nbopt.Parameter(b)
        return [pa, pb, pa] if layout == "twice" else [pa, pb]

    params = make()
    starts = [np.array(p) for p in params]
    flat = _FlatParams(params)
    x = flat.clone()
    d = rng.standard_normal(flat.total).astype(flat.dtype)
    t = flat.scalar(0.37)
    flat.add(t, 2 * d)                     # somewhere else first, as after a trial
    got_max = flat.add(t, d, x)
    got = [np.array(p) for p in params]
    for p, v in zip(params, starts):
        p[...] = v
    flat.add(t, 2 * d)
    flat.set(x)
    want_max = flat.add(t, d)
    assert got_max == want_max
    for g, p in zip(got, params):
        np.testing.assert_array_equal(g, p)


def _wall_closure(p):
    """sum(-x) below x = 1 and a steep wall above it: the line search's
    trial points overshoot, and it may end away from the last one."""
    def closure():
        x = np.asarray(p)
        over = np.maximum(x - 1, 0)
        p.grad = -1 + 2000 * over
        return float(np.sum(-x + 1000 * over**2))
    return closure


@pytest.mark.parametrize("max_eval", [2, 4])
def test_line_search_ending_away_from_its_last_trial_point(monkeypatch, max_eval):
    """The parameters stay at the line search's last trial point; when it
    chooses another step (here when it runs out of evaluations) they are put
    at ``x + t d`` from its start: torch's numbers (it restores, then adds)."""
    from nbopt.optim import lbfgs as mod

    x0 = np.linspace(0, 0.2, 1000)
    options = dict(lr=0.5, max_iter=4, max_eval=max_eval, history_size=3,
                   line_search_fn="strong_wolfe")
    calls = {"evaluations": 0, "from_x": 0}
    evaluate, add = mod.LBFGS._directional_evaluate, mod._FlatParams.add

    def counting_evaluate(*args):
        calls["evaluations"] += 1
        return evaluate(*args)

    def counting_add(self, t, d, x=None):
        calls["from_x"] += x is not None
        return add(self, t, d, x)

    runs = []
    for fused in (True, False):
        with monkeypatch.context() as m:
            if fused:
                m.setattr(mod.LBFGS, "_directional_evaluate", staticmethod(counting_evaluate))
                m.setattr(mod._FlatParams, "add", counting_add)
            else:
                _per_update_path(m)
            p = nbopt.Parameter(x0.copy())
            opt = LBFGS([p], **options)
            closure = _wall_closure(p)
            losses = [opt.step(closure) for _ in range(3)]
            runs.append((losses, np.array(p), opt.state[p]["t"]))
    assert calls["from_x"] > calls["evaluations"]     # the parameters were moved back
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    if HAVE_TORCH:
        import torch

        tp = torch.nn.Parameter(torch.from_numpy(x0.copy()))
        topt = torch.optim.LBFGS([tp], **options)

        def tclosure():
            x = tp.detach().numpy()
            over = np.maximum(x - 1, 0)
            tp.grad = torch.from_numpy(-1 + 2000 * over)
            return float(np.sum(-x + 1000 * over**2))
        tlosses = [topt.step(tclosure) for _ in range(3)]
        np.testing.assert_allclose(runs[0][0], tlosses, rtol=RTOL)
        want = tp.detach().numpy()
        assert np.max(np.abs(runs[0][1] - want)) <= RTOL * np.max(np.abs(want))


def test_a_kept_direction_is_not_reused():
    """The replaced ``d`` goes back to the pool of flat vectors only when
    nothing else holds it."""
    p = nbopt.Parameter(np.linspace(-2, 2, 12))
    opt = LBFGS([p], max_iter=3, history_size=2)
    closure = _quadratic([p])
    opt.step(closure)
    kept = opt.state[p]["d"]
    copy = kept.copy()
    for _ in range(3):
        opt.step(closure)
    assert opt.state[p]["d"] is not kept
    np.testing.assert_array_equal(kept, copy)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_steady_steps_allocate_no_flat_vectors(monkeypatch, line_search_fn):
    """Once the history is full, every flat vector a step needs comes back
    from the pool (a fresh 8 MB array costs page faults: ~20x a reused one)."""
    from nbopt.optim import lbfgs as mod

    misses = []
    new = mod._FlatParams.new

    def counting_new(self):
        misses.append(not self.spare)
        return new(self)
    monkeypatch.setattr(mod._FlatParams, "new", counting_new)
    p = nbopt.Parameter(np.linspace(-2, 2, 1000))
    opt = LBFGS([p], max_iter=5, history_size=3, tolerance_grad=-1, tolerance_change=-1,
                line_search_fn=line_search_fn)
    closure = _quadratic([p])
    for _ in range(3):
        opt.step(closure)
    misses.clear()
    for _ in range(3):
        opt.step(closure)
    assert misses and not any(misses)


def test_lbfgs_passes_go_parallel_from_their_own_threshold(monkeypatch):
    """With the measured default (PARALLEL_THRESHOLD None) LBFGS's passes
    take their own, lower threshold; a fixed PARALLEL_THRESHOLD wins."""
    from nbopt.kernels import lbfgs as K

    kernels = ("serial", "parallel")
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", None)
    parallel = "parallel" if config.parallel_allowed() else "serial"
    assert config.LBFGS_PARALLEL_THRESHOLD < config.DEFAULT_PARALLEL_THRESHOLD
    assert K.pick(kernels, config.LBFGS_PARALLEL_THRESHOLD) == parallel
    assert K.pick(kernels, config.LBFGS_PARALLEL_THRESHOLD - 1) == "serial"
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 1 << 40)
    assert K.pick(kernels, 1 << 20) == "serial"
