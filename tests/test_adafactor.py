"""nbopt.Adafactor: torch 2.13 parity bit for bit (float32 and float64), its
errors, and its state handling (state_dict layout, loading torch's state,
checkpoints, schedulers, edits of ``opt.state``).

The parity table is ``make_adafactor_reference.CASES`` (every option set of
torch's ``optim_inputs_func_adafactor`` and the paths that round otherwise);
its torch trajectories are committed in ``tests/data/adafactor_reference.npz``
and replayed without torch; live torch is compared too when importable.
"""
from __future__ import annotations

import copy
import json
import pickle
import re
import warnings

import numpy as np
import pytest

import nbopt
from conftest import HAVE_TORCH, load_reference, requires_torch
from make_adafactor_reference import (CASES, CHECKPOINT_STEP, DTYPES, OUT, SHAPES, STEPS, Case,
                                      make_inputs, run_nbopt, run_torch,
                                      torch_state_dict_as_numpy)
from nbopt import config
from nbopt.kernels import adafactor as kernels
from reference_io import read_trajectory

CASE_IDS = [c.id for c in CASES]


def reference():
    return load_reference(OUT)


def stored(case, dtype):
    prefix = f"{case.id}|{dtype}|"
    ref = reference()
    if f"{prefix}in|p00" not in ref:
        pytest.fail(f"no reference data for {case.id} {dtype}: "
                    "run tests/make_adafactor_reference.py")
    inputs, expected, reload = read_trajectory(ref, prefix)
    return inputs, expected, {STEPS: reload}


def assert_same(got, expected):
    """Bit for bit: same snapshots, state keys in torch's order, shapes,
    dtypes and values."""
    assert got.keys() == expected.keys()
    for step in expected:
        assert list(got[step]) == list(expected[step]), f"step {step}: state keys differ"
        for name, want in expected[step].items():
            have = got[step][name]
            assert have.shape == want.shape, f"step {step} {name}: shape"
            assert have.dtype == want.dtype, f"step {step} {name}: dtype"
            np.testing.assert_array_equal(have, want, err_msg=f"step {step} {name}")


def test_reference_covers_the_table():
    with np.load(OUT, allow_pickle=False) as z:
        index = json.loads(z["index"].tobytes())
    assert index["torch"].startswith("2.13.")
    assert index["cases"] == CASE_IDS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_committed_torch_reference_bit_for_bit(case, dtype):
    inputs, expected, _ = stored(case, dtype)
    assert_same(run_nbopt(case, inputs), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_split_work_matches_committed_torch_reference(case, dtype, monkeypatch):
    """Every parameter's work split across the phases and threads (the path
    of a parameter that outweighs a thread's share), chunks of 7 elements."""
    from nbopt.optim import adafactor as adafactor_module

    monkeypatch.setattr(adafactor_module, "_SPLIT", True)
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(config, "CHUNK_SIZE", 7)
    inputs, expected, _ = stored(case, dtype)
    assert_same(run_nbopt(case, inputs), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_reloaded_run_matches_committed_torch_reference(case, dtype):
    inputs, _, reload = stored(case, dtype)
    assert_same({STEPS: run_nbopt(case, inputs, reload=True)[STEPS]}, reload)


def torch_layout_state_dict(case: Case, snapshot: dict, dtype: str) -> dict:
    """torch's state_dict at the checkpoint, rebuilt from the committed
    snapshot (arrays as a user converts torch's tensors)."""
    state = {}
    for key, value in snapshot.items():
        if key.startswith("state"):
            pid, name = key[len("state"):].split(".")
            state.setdefault(int(pid), {})[name] = value.copy()
    defaults = dict(lr=0.01, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                    foreach=None, maximize=False)
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = np.array([opts["lr"]], np.float32)
    groups, start = [], 0
    for gi, shapes in enumerate(SHAPES):
        group = {**defaults, **opts, **(case.group1 if gi else {})}
        group["params"] = list(range(start, start + len(shapes)))
        start += len(shapes)
        groups.append(group)
    return {"state": state, "param_groups": groups}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_continues_from_torchs_state_dict(case, dtype):
    inputs, expected, _ = stored(case, dtype)
    snap = expected[CHECKPOINT_STEP]
    values = [snap[f"param{i}"] for i in range(sum(map(len, SHAPES)))]
    start = (values, torch_layout_state_dict(case, snap, dtype))
    got = run_nbopt(case, inputs, start=start)
    assert_same(got, {STEPS: expected[STEPS]})


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_live_torch(case, dtype):
    inputs = make_inputs(CASES.index(case), dtype)
    assert_same(run_nbopt(case, inputs), run_torch(case, inputs))
    assert_same({STEPS: run_nbopt(case, inputs, reload=True)[STEPS]},
                {STEPS: run_torch(case, inputs, reload=True)[STEPS]})


@requires_torch
@pytest.mark.parametrize("case", CASES[:3] + CASES[-3:], ids=CASE_IDS[:3] + CASE_IDS[-3:])
def test_loads_a_live_torch_state_dict(case):
    inputs = make_inputs(CASES.index(case), "float32")
    _, tparams, topt = run_torch(case, inputs, stop=CHECKPOINT_STEP)
    values = [p.detach().numpy().copy() for group in tparams for p in group]
    start = (values, torch_state_dict_as_numpy(topt.state_dict()))
    assert_same(run_nbopt(case, inputs, start=start), {STEPS: run_torch(case, inputs)[STEPS]})


# -- options, shapes and layouts beyond the table (live torch) ------------------------------

def _step_pair(values, opts, steps, grad):
    """nbopt's and torch's Adafactor over copies of ``values``, stepped
    ``steps`` times on the same gradients: ``grad(k, step, p)`` is parameter
    ``k``'s (nbopt's ``p``) at ``step``, None for none.  Returns both
    (params, opt)."""
    import torch

    ps = [nbopt.Parameter(v.copy(order="K")) for v in values]
    ts = [torch.nn.Parameter(torch.from_numpy(v.copy(order="K"))) for v in values]
    o1, o2 = nbopt.Adafactor(ps, **opts), torch.optim.Adafactor(ts, **opts)
    for step in range(steps):
        for k, (p, t) in enumerate(zip(ps, ts)):
            g = grad(k, step, p)
            if g is None:
                p.grad = t.grad = None
            else:
                p.grad, t.grad = g.copy(order="K"), torch.from_numpy(g.copy(order="K"))
        o1.step()
        o2.step()
    return (ps, o1), (ts, o2)


def _pair(shapes, dtype, opts, order="C", seed=0, steps=4, skip=None):
    """nbopt and torch stepped on the same random data; returns both (params, opt)."""
    rng = np.random.default_rng(seed)
    lay = np.asfortranarray if order == "F" else np.ascontiguousarray
    values = [lay(rng.standard_normal(s).astype(dtype)) for s in shapes]

    def grad(k, step, p):
        if skip is not None and skip(k, step):
            return None
        return lay(rng.standard_normal(p.shape).astype(dtype))

    return _step_pair(values, opts, steps, grad)


def _assert_pair_equal(pair):
    (ps, o1), (ts, o2) = pair
    for p, t in zip(ps, ts):
        np.testing.assert_array_equal(np.asarray(p), t.detach().numpy())
        assert list(o1.state[p]) == list(o2.state[t])
        for key, value in o2.state[t].items():
            have = np.asarray(o1.state[p][key])
            assert have.shape == tuple(value.shape) and have.dtype == value.numpy().dtype
            np.testing.assert_array_equal(have, value.numpy(), err_msg=key)


SHAPE_SETS = [
    [(40, 33), (1, 300), (300, 1), (7,), ()],
    [(2, 3, 5, 7), (4, 9, 1), (3, 1, 8), (17, 16)],
    [(130, 257), (257,), (64, 64)],
]


@requires_torch
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", SHAPE_SETS, ids=["mixed", "batched", "wide"])
def test_shapes_and_layouts_match_live_torch(shapes, dtype, order):
    _assert_pair_equal(_pair(shapes, dtype, {"weight_decay": 0.1}, order=order, steps=6))


@requires_torch
@pytest.mark.parametrize("parallel", [False, True])
def test_large_parameters_match_live_torch(parallel, monkeypatch):
    """The parallel kernel (work split within a parameter, or one parameter
    per thread) and torch's split of a mean over >= 32768 rows."""
    import torch

    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 1 if parallel else 1 << 62)
    monkeypatch.setattr(config, "TORCH_THREADS", torch.get_num_threads())
    _assert_pair_equal(_pair([(40000, 3), (300, 700), (3, 50, 300), (70001,)], np.float32,
                             {"weight_decay": 0.1, "maximize": True}, steps=3))
    _assert_pair_equal(_pair([(1, 200001)], np.float64, {}, steps=2))


@requires_torch
def test_random_shapes_match_live_torch():
    rng = np.random.default_rng(7)
    for trial in range(12):
        nd = int(rng.integers(0, 5))
        shape = tuple(int(x) for x in rng.integers(1, 24, nd))
        if trial % 3 == 0 and nd >= 2:
            shape = shape[:-1] + (1,)
        _assert_pair_equal(_pair([shape, (int(rng.integers(1, 40)),)], DTYPES[trial % 2],
                                 [{}, {"foreach": True, "weight_decay": 0.1}][trial % 2],
                                 order="CF"[trial // 2 % 2], seed=trial, steps=5))


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_infinite_and_nan_gradients_match_live_torch(dtype):
    """0/0, 1/0 and NaN go through the same operations as in torch (no
    exception, the same NaN and infinity positions)."""
    rng = np.random.default_rng(12)
    shapes = [(3, 4), (5,), (2, 3, 2)]
    values = [rng.standard_normal(s).astype(dtype) for s in shapes]
    for eps, fill in (((0.0, 1e-3), 0.0), ((None, 1e-3), np.inf), ((1e-30, 0.0), np.nan),
                      ((0.0, 0.0), -np.inf)):
        def grad(k, step, p, fill=fill):
            g = rng.standard_normal(p.shape).astype(dtype)
            g.reshape(-1)[::2 + k] = fill if step != 1 else 0.0
            return g

        _assert_pair_equal(_step_pair(values, {"eps": eps, "weight_decay": 0.1}, 3, grad))


@requires_torch
def test_duplicate_parameter_steps_twice_like_torch():
    import torch

    rng = np.random.default_rng(1)
    a0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(5)
    a, b = nbopt.Parameter(a0.copy()), nbopt.Parameter(b0.copy())
    ta, tb = (torch.nn.Parameter(torch.from_numpy(x.copy())) for x in (a0, b0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o1 = nbopt.Adafactor([a, b, a], weight_decay=0.1)
        o2 = torch.optim.Adafactor([ta, tb, ta], weight_decay=0.1)
    for _ in range(3):
        ga, gb = rng.standard_normal((3, 4)), rng.standard_normal(5)
        a.grad, b.grad = ga.copy(), gb.copy()
        ta.grad, tb.grad = torch.from_numpy(ga.copy()), torch.from_numpy(gb.copy())
        o1.step()
        o2.step()
    np.testing.assert_array_equal(a, ta.detach().numpy())
    np.testing.assert_array_equal(b, tb.detach().numpy())
    assert float(o1.state[a]["step"]) == 6.0 == float(o2.state[ta]["step"])


@requires_torch
def test_eps1_comes_from_the_groups_first_parameter_with_a_gradient():
    """torch sets eps1 once per group step, from the dtype of the first
    parameter that has a gradient: a float32 parameter after a float64 one
    uses float64's epsilon."""
    rng = np.random.default_rng(2)
    x64, x32, y32 = (rng.standard_normal((4, 5)), rng.standard_normal((3, 3)).astype(np.float32),
                     rng.standard_normal(6).astype(np.float32))

    def grad(k, step, p):
        g = np.zeros_like(np.asarray(p)) if k else rng.standard_normal(p.shape)
        if step % 2 and k == 0:       # then eps1 comes from the float32 one
            return None
        return (g + 1e-20).astype(p.dtype)

    _assert_pair_equal(_step_pair((x64, x32, y32), {}, 4, grad))


@requires_torch
def test_lr_scheduler_drives_the_same_trajectory():
    import torch

    rng = np.random.default_rng(3)
    v = rng.standard_normal((6, 7)).astype(np.float32)
    p, t = nbopt.Parameter(v.copy()), torch.nn.Parameter(torch.from_numpy(v.copy()))
    o1, o2 = nbopt.Adafactor([p], lr=0.5), torch.optim.Adafactor([t], lr=0.5)
    s1 = nbopt.lr_scheduler.StepLR(o1, step_size=2, gamma=0.1)
    s2 = torch.optim.lr_scheduler.StepLR(o2, step_size=2, gamma=0.1)
    for _ in range(8):
        g = rng.standard_normal((6, 7)).astype(np.float32)
        p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        o1.step()
        o2.step()
        s1.step()
        s2.step()
        assert o1.param_groups[0]["lr"] == o2.param_groups[0]["lr"]
    np.testing.assert_array_equal(p, t.detach().numpy())


# -- state: layout, checkpoints, edits -----------------------------------------------------

def _small(dtype=np.float32, **opts):
    rng = np.random.default_rng(0)
    w = nbopt.Parameter(rng.standard_normal((3, 4)).astype(dtype))
    v = nbopt.Parameter(rng.standard_normal(5).astype(dtype))
    s = nbopt.Parameter(np.array(0.5, dtype))
    opt = nbopt.Adafactor([{"params": [w, v]}, {"params": [s], "lr": 0.1}], **opts)
    return opt, (w, v, s), rng


def _grads(params, rng):
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(p.dtype)


def test_state_layout_is_torchs():
    opt, (w, v, s), rng = _small()
    _grads((w, v, s), rng)
    opt.step()
    sd = opt.state_dict()
    assert list(sd["state"][0]) == ["step", "row_var", "col_var"]
    assert list(sd["state"][1]) == ["step", "variance"]
    assert list(sd["state"][2]) == ["step", "variance"]
    assert sd["state"][0]["step"].shape == () and sd["state"][0]["step"].dtype == np.float32
    assert sd["state"][0]["row_var"].shape == (3, 1)
    assert sd["state"][0]["col_var"].shape == (1, 4)
    assert sd["state"][1]["variance"].shape == (5,)
    assert sd["state"][2]["variance"].shape == ()
    assert sd["param_groups"][0]["eps"] == (None, 1e-3)
    assert list(sd["param_groups"][0]) == ["lr", "beta2_decay", "eps", "d", "weight_decay",
                                           "foreach", "maximize", "params"]
    # the live state (views of the flat state), no copies
    assert sd["state"][0]["row_var"] is opt.state[w]["row_var"]
    assert opt.state[w]["row_var"].base is not None


def _trajectory(opt, params, rng, steps):
    for _ in range(steps):
        _grads(params, rng)
        opt.step()
    return [np.array(p) for p in params]


def test_save_load_resumes_bit_for_bit(tmp_path):
    opt, params, rng = _small()
    _trajectory(opt, params, rng, 3)
    nbopt.save({"opt": opt.state_dict()}, tmp_path / "ckpt.npz")
    values = [np.array(p) for p in params]
    state = np.random.default_rng(99)
    want = _trajectory(opt, params, copy.deepcopy(state), 4)

    opt2, params2, _ = _small()
    for p, v in zip(params2, values):
        p[...] = v
    opt2.load_state_dict(nbopt.load(tmp_path / "ckpt.npz")["opt"])
    got = _trajectory(opt2, params2, copy.deepcopy(state), 4)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_deepcopy_and_pickle_keep_trajectories_apart():
    opt, params, rng = _small()
    _trajectory(opt, params, rng, 2)
    twin = copy.deepcopy(opt)
    thawed = pickle.loads(pickle.dumps(opt))
    assert twin.state_dict()["state"][0]["row_var"] is not opt.state_dict()["state"][0]["row_var"]
    before = {k: v.copy() for k, v in opt.state_dict()["state"][0].items()}
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    _trajectory(twin, twin_params, np.random.default_rng(5), 2)
    thawed_params = [p for g in thawed.param_groups for p in g["params"]]
    _trajectory(thawed, thawed_params, np.random.default_rng(5), 2)
    for k, v in opt.state_dict()["state"][0].items():
        np.testing.assert_array_equal(v, before[k])
    for a, b in zip(twin_params, thawed_params):
        np.testing.assert_array_equal(a, b)


def _edit_both(edit, steps_before=2, steps_after=2):
    """Step nbopt and torch, apply ``edit(state, param_list)`` to both, step on."""
    import torch

    rng = np.random.default_rng(11)
    values = [rng.standard_normal(s) for s in ((3, 4), (5,))]
    ps = [nbopt.Parameter(v.copy()) for v in values]
    ts = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    o1, o2 = nbopt.Adafactor(ps, weight_decay=0.1), torch.optim.Adafactor(ts, weight_decay=0.1)

    def step():
        for p, t in zip(ps, ts):
            g = rng.standard_normal(p.shape)
            p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        o1.step()
        o2.step()

    for _ in range(steps_before):
        step()
    edit(o1.state, ps, np.asarray)
    edit(o2.state, ts, torch.from_numpy)
    for _ in range(steps_after):
        step()
    _assert_pair_equal(((ps, o1), (ts, o2)))


EDITS = {
    "rebind row_var": lambda st, ps, wrap: st[ps[0]].__setitem__(
        "row_var", wrap(np.full((3, 1), 0.5))),
    "rebind variance": lambda st, ps, wrap: st[ps[1]].__setitem__(
        "variance", wrap(np.linspace(0, 1, 5))),
    "in place col_var": lambda st, ps, wrap: st[ps[0]]["col_var"].__setitem__(
        (Ellipsis,), 2.0),
    "rebind step": lambda st, ps, wrap: st[ps[0]].__setitem__(
        "step", wrap(np.array(10.0, np.float32))),
    "in place step": lambda st, ps, wrap: st[ps[1]]["step"].__setitem__((), 7.0),
    "clear one": lambda st, ps, wrap: st[ps[0]].clear(),
    "empty dict": lambda st, ps, wrap: st.__setitem__(ps[1], {}),
    "delete": lambda st, ps, wrap: st.__delitem__(ps[0]),
    "clear all": lambda st, ps, wrap: st.clear(),
}


@requires_torch
@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_state_edits_are_followed_as_torch_follows_them(edit):
    _edit_both(EDITS[edit])


def test_state_edits_without_torch():
    opt, (w, v, s), rng = _small()
    _grads((w, v, s), rng)
    opt.step()
    mine = np.full((3, 1), 0.25, np.float32)
    opt.state[w]["row_var"] = mine
    _grads((w, v, s), rng)
    opt.step()
    # the rebound array was copied in; the entry is the optimizer's view again
    assert opt.state[w]["row_var"] is not mine
    np.testing.assert_array_equal(mine, 0.25)
    opt.state[w].clear()
    _grads((w, v, s), rng)
    opt.step()
    assert float(opt.state[w]["step"]) == 1.0 and float(opt.state[v]["step"]) == 3.0


@requires_torch
@pytest.mark.parametrize("drop,exc,message", [
    ("step", KeyError, "'step'"),
    ("row_var", AssertionError,
     "row_var and col_var should be defined when grad is multidimensional"),
    ("variance", AssertionError, "variance should be defined when grad is a vector"),
])
def test_missing_state_raises_torchs_error_and_changes_nothing(drop, exc, message):
    import torch

    opt, (w, v, s), rng = _small()
    _grads((w, v, s), rng)
    opt.step()
    target = v if drop == "variance" else w
    del opt.state[target][drop]
    before = [np.array(p) for p in (w, v, s)]
    _grads((w, v, s), rng)
    with pytest.raises(exc, match=re.escape(message)):
        opt.step()
    for a, b in zip(before, (w, v, s)):
        np.testing.assert_array_equal(a, b)
    t = torch.nn.Parameter(torch.ones(3, 4) if drop != "variance" else torch.ones(5))
    o = torch.optim.Adafactor([t])
    t.grad = torch.ones_like(t)
    o.step()
    del o.state[t][drop]
    with pytest.raises(exc, match=re.escape(message)):
        o.step()


def test_loaded_state_of_the_wrong_shape_is_refused_before_anything_changes():
    opt, params, rng = _small()
    _trajectory(opt, params, rng, 1)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["row_var"] = np.zeros((4, 1), np.float32)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"'row_var'.*has shape \(4, 1\).*\(3, 1\)"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    for i in before["state"]:
        for k in before["state"][i]:
            np.testing.assert_array_equal(before["state"][i][k], after["state"][i][k])


# -- errors -------------------------------------------------------------------------------

INVALID = [
    (dict(lr=-0.1), "Learning rate should be >= 0 but is: -0.1"),
    (dict(beta2_decay=0.8), "beta2_decay should be <= 0 but is: 0.8"),
    (dict(eps=(-1e-30, 1e-3)), "epsilon1 should be >= 0 but is: -1e-30"),
    (dict(eps=(None, -1.0)), "epsilon2 should be >= 0 but is: -1.0"),
    (dict(d=0.0), "Clipping threshold d should be >= 1 but is: 0.0"),
    (dict(weight_decay=-0.1), "weight_decay should be >= 0 but is: -0.1"),
    (dict(lr="tensor:[0.001,0.001]"), "Tensor lr must be 1-element"),
]


@pytest.mark.parametrize("kwargs,message", INVALID, ids=[m.split(" ")[0] for _, m in INVALID])
def test_invalid_hyperparameters_raise_torchs_errors(kwargs, message):
    def materialise(wrap):
        return {k: wrap(eval(v[len("tensor:"):])) if isinstance(v, str) else v
                for k, v in kwargs.items()}

    w = nbopt.Parameter(np.zeros((1, 1)))
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        nbopt.Adafactor([w], **materialise(np.array))
    if HAVE_TORCH:
        import torch

        t = torch.nn.Parameter(torch.zeros(1, 1))
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            torch.optim.Adafactor([t], **materialise(torch.tensor))


def test_error_inputs_common_to_every_optimizer():
    """torch's get_error_inputs_for_all_optims, as optim_error_inputs_func_adafactor
    runs them."""
    a, b = nbopt.Parameter(np.ones((1, 1))), nbopt.Parameter(np.ones((1, 1)))
    with pytest.raises(TypeError, match="params argument given to the optimizer should be "
                                        "an iterable of Tensors or dicts"):
        nbopt.Adafactor(a)
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        nbopt.Adafactor([a, a])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter "
                                         "group"):
        nbopt.Adafactor([{"params": a}, {"params": a}])
    with pytest.raises(ValueError, match="all optimizer params should be with/without names. "
                                         "Some param names are missing"):
        nbopt.Adafactor([("weight", a), b])
    with pytest.raises(ValueError, match="all optimizer param groups should be with/without "
                                         "names. cannot add param group with names"):
        nbopt.Adafactor([{"params": [a], "lr": 1e-2}, {"params": [("weight", b)]}])


def test_complex_parameter_raises_at_step_and_changes_nothing():
    w = nbopt.Parameter(np.ones((2, 3)))
    c = nbopt.Parameter(np.ones((2, 3), np.complex64))
    opt = nbopt.Adafactor([w, c])
    opt.step()                           # no gradients: nothing to refuse
    w.grad = np.ones((2, 3))
    c.grad = np.ones((2, 3), np.complex64)
    with pytest.raises(RuntimeError, match="^Adafactor does not support complex parameters$"):
        opt.step()
    np.testing.assert_array_equal(w, 1.0)
    assert not opt.state


def test_sparse_gradient_raises():
    w = nbopt.Parameter(np.ones((4, 2), np.float32))
    opt = nbopt.Adafactor([w])
    w.grad = nbopt.SparseGrad([[1]], np.ones((1, 2), np.float32), w.shape)
    with pytest.raises(RuntimeError, match="^Adafactor does not support sparse gradients$"):
        opt.step()


@pytest.mark.parametrize("bad,exc,pattern", [
    (lambda p: np.ones(p.size + 1), RuntimeError, r"grad has shape \(4,\) but the parameter "
                                                  r"has shape \(3,\)"),
    (lambda p: np.ones(p.shape, np.float32), RuntimeError, "grad has dtype float32"),
    (lambda p: [1.0, 2.0, 3.0], TypeError, "grad must be a numpy array or None, got list"),
])
def test_bad_gradient_raises_before_any_parameter_moves(bad, exc, pattern):
    rng = np.random.default_rng(0)
    a, b = nbopt.Parameter(rng.standard_normal((2, 3))), nbopt.Parameter(rng.standard_normal(3))
    opt = nbopt.Adafactor([{"params": [a]}, {"params": [b]}])
    a.grad, b.grad = np.ones((2, 3)), np.ones(3)
    opt.step()
    before = [np.array(a), np.array(b)] + [np.array(x) for x in opt.state[a].values()]
    a.grad, b.grad = np.ones((2, 3)), bad(b)
    with pytest.raises(exc, match=r"param_groups\[1\]\['params'\]\[0\]: " + pattern):
        opt.step()
    after = [np.array(a), np.array(b)] + [np.array(x) for x in opt.state[a].values()]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    b.grad = np.ones(3)
    opt.step()
    assert float(opt.state[a]["step"]) == 2.0


def test_integer_parameter_with_a_gradient_is_named():
    k = nbopt.Parameter(np.arange(3), requires_grad=False)
    opt = nbopt.Adafactor([k])
    k.grad = np.ones(3, np.int64)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\]: Adafactor can only "
                                        "optimize floating point parameters"):
        opt.step()


def test_empty_parameter_raises_as_torch():
    w = nbopt.Parameter(np.zeros((0, 3)))
    w.grad = np.zeros((0, 3))
    with pytest.raises(ZeroDivisionError):
        nbopt.Adafactor([w]).step()
    if HAVE_TORCH:
        import torch

        t = torch.nn.Parameter(torch.zeros(0, 3))
        t.grad = torch.zeros(0, 3)
        with pytest.raises(ZeroDivisionError):
            torch.optim.Adafactor([t]).step()


# GPU parameters (nbopt.DeviceParameter) are stepped on their device: see
# tests/gpu/test_device_adafactor_muon.py (run under the CUDA simulator by
# tests/test_cuda_tiers.py, and on a GPU by tests/gpu/run.sh).


def test_gradients_in_place_new_or_relaid_out_give_the_same_steps():
    """The cached plan of a steady loop (gradients written in place, or new
    arrays every step, or one in another layout) steps as a fresh one."""
    rng = np.random.default_rng(13)
    shapes = [(6, 5), (4,), (2, 3, 3)]
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(5)]

    def run(mode):
        ps = [nbopt.Parameter(v.copy()) for v in values]
        opt = nbopt.Adafactor(ps, weight_decay=0.1)
        held = [g.copy() for g in grads[0]]
        for step, gs in enumerate(grads):
            for k, (p, g) in enumerate(zip(ps, gs)):
                if mode == "in place":
                    held[k][...] = g
                    p.grad = held[k]
                elif mode == "fortran" and step == 3 and k == 0:
                    p.grad = np.asfortranarray(g)
                else:
                    p.grad = g.copy()
            opt.step()
        return [np.array(p) for p in ps]

    base = run("new")
    for mode in ("in place", "fortran"):
        for x, y in zip(base, run(mode)):
            np.testing.assert_array_equal(x, y)


def test_gradient_aliasing_its_parameter_is_read_before_the_step():
    v = np.random.default_rng(4).standard_normal((3, 5))
    a, b = nbopt.Parameter(v.copy()), nbopt.Parameter(v.copy())
    a.grad = a                           # the parameter's own memory
    b.grad = v.copy()
    nbopt.Adafactor([a]).step()
    nbopt.Adafactor([b]).step()
    np.testing.assert_array_equal(a, b)


def test_gradient_of_another_layout_is_accepted():
    v = np.random.default_rng(5).standard_normal((4, 6))
    a, b = nbopt.Parameter(v.copy()), nbopt.Parameter(v.copy())
    g = np.random.default_rng(6).standard_normal((4, 6))
    a.grad, b.grad = np.asfortranarray(g), g.copy()
    nbopt.Adafactor([a]).step()
    nbopt.Adafactor([b]).step()
    np.testing.assert_array_equal(a, b)


# -- kernels ------------------------------------------------------------------------------

def test_serial_and_parallel_kernels_agree_bit_for_bit(monkeypatch):
    from nbopt.optim import adafactor as adafactor_module

    shapes = [(50, 70), (3, 20, 30), (2000,), (64, 1), (), (40, 3, 1), (1, 9)]

    def run(threshold, chunk, store=1 << 20, split=False):
        monkeypatch.setattr(adafactor_module, "_SPLIT", split)
        monkeypatch.setattr(config, "PARALLEL_THRESHOLD", threshold)
        monkeypatch.setattr(config, "CHUNK_SIZE", chunk)
        monkeypatch.setattr(config, "ADAFACTOR_STORE_LIMIT", store)
        rng = np.random.default_rng(8)
        ps = [nbopt.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]
        opt = nbopt.Adafactor(ps, weight_decay=0.1)
        for _ in range(3):
            _grads(ps, rng)
            opt.step()
        return [np.array(p) for p in ps] + [np.array(x) for p in ps for x in opt.state[p].values()]

    # serial or parallel, every parameter whole on one thread (U kept or
    # recomputed) or split across threads (a large chunk count)
    base = run(1 << 62, 32768)
    for args in ((1, 32768), (1, 100), (1 << 62, 7), (1, 32768, 0), (1 << 62, 32768, 0),
                 (1, 32768, 0, True), (1, 64, 0, True), (1 << 62, 100, 0, True)):
        for x, y in zip(base, run(*args)):
            np.testing.assert_array_equal(x, y)


def test_a_knob_changed_mid_run_rebuilds_the_plan(monkeypatch):
    # the steady step reuses its plan while no config knob changed: U kept
    # or recomputed is a choice the plan makes (same bits either way)
    rng = np.random.default_rng(4)
    p = nbopt.Parameter(rng.standard_normal(3000).astype(np.float32))
    ref = nbopt.Parameter(np.array(p))
    opt, ref_opt = nbopt.Adafactor([p]), nbopt.Adafactor([ref])
    for k in range(6):
        g = rng.standard_normal(3000).astype(np.float32)
        p.grad, ref.grad = g, g.copy()
        if k == 3:
            plan = next(iter(opt._steady.values())).entries[0][0]._plan
            monkeypatch.setattr(config, "ADAFACTOR_STORE_LIMIT", 0)
        opt.step()
        ref_opt.step()
        if k == 3:
            now = next(iter(opt._steady.values())).entries[0][0]._plan
            assert now is not plan and now.tasks1[0, 2] == 0   # U recomputed now
    np.testing.assert_array_equal(p, ref)


@requires_torch
def test_reductions_follow_torchs_summation_order():
    import torch
    from numba import njit

    lanes = njit(lambda x: kernels.sumsq_lanes(x, 0, x.shape[0]))
    acc = np.zeros((4, 4, 8))
    rng = np.random.default_rng(9)
    threads = torch.get_num_threads()
    for dtype in DTYPES:
        cascade = njit(lambda x, a: kernels.cascade_sum(x, 0, x.shape[0], a))
        mean = njit(lambda x, a, part: kernels.mean_rows(x, 0, x.shape[0], threads, a, part))
        part = np.zeros(threads, dtype)
        for n in list(range(1, 70)) + [255, 1000, 4097, 32767, 32768, 100003]:
            x = (rng.standard_normal(n) * 3).astype(dtype)
            t = torch.from_numpy(x)
            real = np.dtype(dtype).type      # (a compiled call returns a Python float)
            assert np.sqrt(real(lanes(x))) == t.norm(2).numpy(), (dtype, n)
            if n < 32768:                    # beyond, torch splits a sum over its threads
                assert real(cascade(x, acc.astype(dtype))) == t.sum().numpy(), (dtype, n)
            want = t.reshape(-1, 1).mean(dim=-2).numpy()[0]
            assert real(mean(x, acc.astype(dtype), part)) == want, (dtype, n)


# -- bench --------------------------------------------------------------------------------

def test_bench_takes_matrix_workloads(tmp_path):
    from nbopt.cli import bench

    assert bench.workload_shape("100x(1024x1024)") == (100, (1024, 1024))
    assert bench.workload_shape("1000x1k") is None
    assert bench.parse_workload("10x(3x4x5)@f64") == (10, 60, False, "float64", False)
    out = tmp_path / "rows.json"
    assert bench.main(["--algorithms", "Adafactor", "--sizes", "3x(20x30),2x1k", "--repeat",
                       "2", "--no-torch", "--skip-startup", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["workload"], r["bytes_per_element"]) for r in rows] == [
        ("3x(20x30)", 12), ("2x1000", 20)]
    assert all(r["nbopt_s"] > 0 and r["floor_s"] > 0 for r in rows)
