"""``optimizer.state`` is the truth, bad input changes nothing, memory is safe
(issue 11, items 1-5 and 8).

* Torch's state-reset idioms (``state.clear()``, ``state[p] = {}``,
  ``del state[p]``, ``opt.state = defaultdict(dict)``, rebinding an entry,
  deleting a key) are honoured at the next step, as torch's next step reads
  ``state[p]``: the engine's flat arrays are a cache of the mapping.  Without
  torch the check is torch's semantics itself: after a reset, the rest of the
  run equals a new optimizer's run from the parameters' current values.
* Loaded state and groups are validated before anything changes.
* Read-only parameters and gradients that partly overlap their parameter are
  refused with a clear error.
* A step that fails in any group leaves every parameter, state array and
  step count bit-identical.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import defaultdict

import numpy as np
import pytest

import nbopt
from conftest import requires_torch

# every element-wise algorithm, with options that allocate all its state
ALGOS = [
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.1)),
    ("Adadelta", dict(lr=0.5)),
    ("Adamax", dict(lr=0.05)),
    ("ASGD", dict(lr=0.05, t0=2)),
    ("NAdam", dict(lr=0.05)),
    ("RAdam", dict(lr=0.05)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("Rprop", dict(lr=0.01)),
]
IDS = [a[0] for a in ALGOS]
STEPS, RESET_AT = 7, 3


def _grad(k: int, n: int, dtype) -> np.ndarray:
    return (np.sin(np.arange(n) + 1.7 * k) + 0.1 * k).astype(dtype)


def _params(dtype, sizes=(5, 3, 4), arena=False):
    values = [np.linspace(-1, 1, n) + 0.3 for n in sizes]
    if arena:
        return nbopt.ParameterArena(values, dtype=dtype).params
    return [nbopt.Parameter(v.astype(dtype)) for v in values]


def _feed(params, k, held=None):
    for j, p in enumerate(params):
        g = _grad(k + j, p.size, p.dtype)
        if held is not None:          # the same gradient arrays every step: the steady path
            held[j][...] = g
            if p.grad is not held[j]:
                p.grad = held[j]
        else:
            p.grad = g


RESETS = {
    "clear": lambda opt, ps: opt.state.clear(),
    "empty-dict": lambda opt, ps: [opt.state.__setitem__(p, {}) for p in ps],
    "del": lambda opt, ps: [opt.state.__delitem__(p) for p in ps],
    "new-defaultdict": lambda opt, ps: setattr(opt, "state", defaultdict(dict)),
    "clear-entries": lambda opt, ps: [opt.state[p].clear() for p in ps],
}


@pytest.mark.parametrize("steady", [False, True], ids=["new-grads", "steady"])
@pytest.mark.parametrize("reset", list(RESETS))
@pytest.mark.parametrize("cls,kwargs", ALGOS, ids=IDS)
def test_a_reset_state_starts_afresh_like_a_new_optimizer(cls, kwargs, reset, steady):
    params = _params(np.float64, arena=steady)
    held = [np.zeros(p.shape) for p in params] if steady else None
    opt = getattr(nbopt, cls)(params, **kwargs)
    for k in range(RESET_AT):
        _feed(params, k, held)
        opt.step()
    RESETS[reset](opt, params)
    if cls != "Adagrad":   # Adagrad's state is made in its constructor only
        assert not any(opt.state_dict()["state"].values())
    # torch's semantics: the next steps are a new optimizer's first steps
    ref_params = [nbopt.Parameter(np.array(p)) for p in params]
    ref = getattr(nbopt, cls)(ref_params, **kwargs)
    if cls == "Adagrad":
        ref.state.clear()
    for k in range(RESET_AT, STEPS):
        _feed(params, k, held)
        _feed(ref_params, k)
        opt.step()
        ref.step()
    for p, r in zip(params, ref_params):
        np.testing.assert_array_equal(p, r)
    for p, r in zip(params, ref_params):
        for key, value in ref.state[r].items():
            np.testing.assert_array_equal(opt.state[p][key], value, err_msg=key)


@pytest.mark.parametrize("cls,kwargs", ALGOS, ids=IDS)
def test_resetting_one_parameter_leaves_the_others_running(cls, kwargs):
    params = _params(np.float32, arena=True)
    held = [np.zeros(p.shape, np.float32) for p in params]
    opt = getattr(nbopt, cls)(params, **kwargs)
    # the untouched parameters continue as in an uninterrupted run
    twin_params = _params(np.float32)
    twin = getattr(nbopt, cls)(twin_params, **kwargs)
    for k in range(STEPS):
        if k == RESET_AT:
            del opt.state[params[1]]
            fresh = nbopt.Parameter(np.array(params[1]))
            solo = getattr(nbopt, cls)([fresh], **kwargs)
            if cls == "Adagrad":
                solo.state.clear()
        _feed(params, k, held)
        _feed(twin_params, k)
        opt.step()
        twin.step()
        if k >= RESET_AT:
            fresh.grad = _grad(k + 1, 3, np.float32)
            solo.step()
    np.testing.assert_array_equal(params[0], twin_params[0])
    np.testing.assert_array_equal(params[2], twin_params[2])
    np.testing.assert_array_equal(params[1], fresh)


def test_rebinding_entries_is_honoured_and_then_follows_the_flat_state():
    p = nbopt.Parameter(np.ones(3))
    q = nbopt.Parameter(np.full(3, 2.0))
    opt = nbopt.Adam([p, q], lr=0.1)
    for k in range(3):
        p.grad, q.grad = np.full(3, k + 1.0), np.full(3, -1.0)
        opt.step()
    state = opt.state[p]
    swapped = opt.state[q]["exp_avg"], opt.state[p]["exp_avg"]
    expect_p, expect_q = np.array(swapped[0]), np.array(swapped[1])
    # a swap through views of the flat state itself must read before writing
    opt.state[p]["exp_avg"], opt.state[q]["exp_avg"] = swapped
    mine = np.full(3, 0.25)
    opt.state[p]["exp_avg_sq"] = mine
    assert opt.state[p]["exp_avg_sq"] is mine          # torch: the entry is the new tensor
    p.grad, q.grad = None, None
    ref = nbopt.Adam([nbopt.Parameter(np.array(p)), nbopt.Parameter(np.array(q))], lr=0.1)
    ref.load_state_dict(opt.state_dict())
    p.grad, q.grad = np.ones(3), np.ones(3)
    opt.step()
    rp, rq = ref.param_groups[0]["params"]
    rp.grad, rq.grad = np.ones(3), np.ones(3)
    ref.step()
    np.testing.assert_array_equal(p, rp)
    np.testing.assert_array_equal(q, rq)
    assert opt.state[p] is state                         # same dict object, as in torch
    assert opt.state[p]["exp_avg_sq"] is not mine and np.all(mine == 0.25)
    np.testing.assert_array_equal(ref.state[rp]["exp_avg"], opt.state[p]["exp_avg"])
    assert not np.array_equal(expect_p, expect_q)


def test_step_count_written_in_place_is_honoured_on_the_steady_path():
    params = _params(np.float32, arena=True)
    held = [np.zeros(p.shape, np.float32) for p in params]
    opt = nbopt.Adam(params, lr=0.1)
    twin_params = _params(np.float32)
    twin = nbopt.Adam(twin_params, lr=0.1)
    for k in range(STEPS):
        _feed(params, k, held)
        _feed(twin_params, k)
        if k == RESET_AT:
            assert opt._flat[0].flat[0]._steady is not None
            opt.state[params[1]]["step"][...] = 0      # in place: no dict edit to see
            twin.state[twin_params[1]]["step"] = np.float32(0)
        opt.step()
        twin.step()
    for p, r in zip(params, twin_params):
        np.testing.assert_array_equal(p, r)
    assert float(opt.state[params[1]]["step"]) == STEPS - RESET_AT


@pytest.mark.parametrize("cls,kwargs,key", [
    ("Adam", dict(amsgrad=True), "max_exp_avg_sq"),
    ("Adam", dict(), "step"),
    ("ASGD", dict(), "eta"),
    ("NAdam", dict(), "mu_product"),
    ("RMSprop", dict(centered=True), "grad_avg"),
])
def test_deleting_a_needed_key_raises_torchs_keyerror_and_changes_nothing(cls, kwargs, key):
    p = nbopt.Parameter(np.ones(3))
    opt = getattr(nbopt, cls)([p], **kwargs)
    p.grad = np.ones(3)
    opt.step()
    del opt.state[p][key]
    before = np.array(p)
    with pytest.raises(KeyError, match=key):
        opt.step()
    np.testing.assert_array_equal(p, before)
    assert key not in opt.state[p]


def test_sgd_without_its_momentum_buffer_starts_it_afresh_as_torch():
    p = nbopt.Parameter(np.ones(3))
    opt = nbopt.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(3):
        p.grad = np.ones(3)
        opt.step()
    opt.state[p]["momentum_buffer"] = None      # what torch stores before the first step
    start = np.array(p)
    p.grad = np.ones(3)
    opt.step()
    np.testing.assert_allclose(p, start - 0.1)   # the buffer is the gradient again


@requires_torch
@pytest.mark.parametrize("idiom", ["clear", "empty", "del", "new", "rebind", "step", "amsgrad"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reset_idioms_match_torch(idiom, dtype):
    import torch

    def run(lib):
        t_dtype = getattr(torch, dtype)
        if lib == "torch":
            ps = [torch.nn.Parameter(torch.ones(3, dtype=t_dtype)),
                  torch.nn.Parameter(torch.full((4,), 0.5, dtype=t_dtype))]
            opt = torch.optim.Adam(ps, lr=0.1)
            arr = lambda a: torch.tensor(a, dtype=t_dtype)  # noqa: E731
        else:
            ps = [nbopt.Parameter(np.ones(3, dtype)), nbopt.Parameter(np.full(4, 0.5, dtype))]
            opt = nbopt.Adam(ps, lr=0.1)
            arr = lambda a: np.asarray(a, dtype)  # noqa: E731
        for t in range(6):
            for j, p in enumerate(ps):
                p.grad = arr(_grad(t + j, p.numel() if lib == "torch" else p.size, dtype))
            opt.step()
            if t == 2:
                p = ps[0]
                if idiom == "clear":
                    opt.state.clear()
                elif idiom == "empty":
                    opt.state[p] = {}
                elif idiom == "del":
                    del opt.state[p]
                elif idiom == "new":
                    opt.state = defaultdict(dict)
                elif idiom == "rebind":
                    opt.state[p]["exp_avg"] = arr([0.5, -0.5, 0.25])
                elif idiom == "step":
                    opt.state[p]["step"] = arr(1.0) if lib == "nbopt" else torch.tensor(1.0)
                elif idiom == "amsgrad":     # state made before amsgrad: torch's KeyError
                    opt.param_groups[0]["amsgrad"] = True
                    try:
                        opt.step()
                    except KeyError as e:
                        return repr(e)
        return [p.detach().numpy().copy() if lib == "torch" else np.array(p) for p in ps]

    got, want = run("nbopt"), run("torch")
    if isinstance(want, str):
        assert got == want
        return
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **tol)


# -- loading (items 2 and 3) ----------------------------------------------------------

def _snapshot(opt):
    sd = opt.state_dict()
    return ({k: {n: np.array(v) for n, v in s.items()} for k, s in sd["state"].items()},
            [{k: v for k, v in g.items()} for g in sd["param_groups"]],
            [np.array(p) for g in opt.param_groups for p in g["params"]])


def _assert_unchanged(opt, snap):
    state, groups, params = _snapshot(opt)
    assert groups == snap[1]
    assert state.keys() == snap[0].keys()
    for k in state:
        assert state[k].keys() == snap[0][k].keys()
        for n in state[k]:
            np.testing.assert_array_equal(state[k][n], snap[0][k][n])
    for a, b in zip(params, snap[2]):
        np.testing.assert_array_equal(a, b)


def _trained(cls="Adam", **kw):
    p = nbopt.Parameter(np.ones(3))
    opt = getattr(nbopt, cls)([p], **kw)
    p.grad = np.ones(3)
    opt.step()
    opt.step()
    return p, opt


@pytest.mark.parametrize("cls,kwargs", [a for a in ALGOS if a[0] != "SGD"],
                         ids=[a[0] for a in ALGOS if a[0] != "SGD"])
def test_loading_an_entry_without_step_raises_torchs_keyerror_before_changing(cls, kwargs):
    p, opt = _trained(cls, **kwargs)
    sd = opt.state_dict()
    bad = {"state": {0: {k: np.array(v) for k, v in sd["state"][0].items() if k != "step"}},
           "param_groups": sd["param_groups"]}
    snap = _snapshot(opt)
    with pytest.raises(KeyError, match="step"):
        opt.load_state_dict(bad)
    _assert_unchanged(opt, snap)


@requires_torch
def test_torch_also_refuses_an_entry_without_step():
    import torch

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(3)
    opt.step()
    sd = opt.state_dict()
    del sd["state"][0]["step"]
    with pytest.raises(KeyError, match="step"):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("key,value", [("eps", "1e-8"), ("lr", None), ("betas", (0.9,)),
                                       ("betas", ("0.9", 0.99)), ("weight_decay", [0.1]),
                                       ("amsgrad", "yes")])
def test_loading_a_group_option_of_the_wrong_type_raises_naming_it(key, value):
    p, opt = _trained("Adam")
    sd = opt.state_dict()
    sd["param_groups"][0][key] = value
    snap = _snapshot(opt)
    with pytest.raises(TypeError, match=rf"param_groups\[0\]\['{key}'\]"):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


def test_tensor_and_numpy_options_still_load():
    p, opt = _trained("Adam")
    sd = opt.state_dict()
    sd["param_groups"][0].update(lr=np.array(0.01), eps=np.float32(1e-6), amsgrad=np.bool_(False),
                                 betas=[0.8, np.float64(0.9)], weight_decay=0)
    opt.load_state_dict(sd)
    p.grad = np.ones(3)
    opt.step()
    assert np.isfinite(p).all()


def test_an_sgd_state_dict_does_not_load_into_adam():
    q = nbopt.Parameter(np.ones(3))
    sgd = nbopt.SGD([q], lr=0.1, momentum=0.9)
    q.grad = np.ones(3)
    sgd.step()
    p, opt = _trained("Adam")
    snap = _snapshot(opt)
    with pytest.raises(KeyError, match="step"):     # torch's own load error
        opt.load_state_dict(sgd.state_dict())
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize("entry,error,match", [
    ({"step": np.float32(2), "exp_avg": np.zeros(3)}, KeyError, "exp_avg_sq"),
    ({"step": np.float32(2), "exp_avg": np.zeros(4), "exp_avg_sq": np.zeros(3)}, ValueError,
     "shape"),
    ({"step": "2", "exp_avg": np.zeros(3), "exp_avg_sq": np.zeros(3)}, ValueError, "step"),
    ({"step": np.float32(2), "exp_avg": [0.0, 0.0, 0.0], "exp_avg_sq": np.zeros(3)}, ValueError,
     "exp_avg"),
])
def test_loading_an_incomplete_or_bad_entry_changes_nothing(entry, error, match):
    p, opt = _trained("Adam")
    sd = opt.state_dict()
    snap = _snapshot(opt)
    with pytest.raises(error, match=match):
        opt.load_state_dict({"state": {0: entry}, "param_groups": sd["param_groups"]})
    _assert_unchanged(opt, snap)


# -- memory safety (items 4 and 5) ---------------------------------------------------

def _read_only_param():
    data = np.arange(4, dtype=np.float32).tobytes()
    return data, nbopt.Parameter(np.frombuffer(data, np.float32))


def test_read_only_parameters_are_refused_wherever_they_enter():
    data, p = _read_only_param()
    with pytest.raises(ValueError, match="read-only"):
        nbopt.SGD([p], lr=0.1)
    ok = nbopt.Parameter(np.zeros(4, np.float32))
    opt = nbopt.SGD([ok], lr=0.1)
    with pytest.raises(ValueError, match="read-only"):
        opt.add_param_group({"params": [p]})
    # slipped into a group's list after the constructor: refused at the step
    opt.param_groups[0]["params"].append(p)
    ok.grad = np.ones(4, np.float32)
    p.grad = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\] is read-only"):
        opt.step()
    assert data == np.arange(4, dtype=np.float32).tobytes()
    np.testing.assert_array_equal(ok, 0)
    # made read-only after it was stepped: refused at the step that would write it
    opt.param_groups[0]["params"].pop()
    opt.step()
    ok.flags.writeable = False
    ok.grad = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="read-only"):
        opt.step()
    np.testing.assert_array_equal(ok, np.float32(-0.1))


def test_a_memory_mapped_read_only_parameter_is_refused_not_a_crash(tmp_path):
    # in a subprocess: before the fix this was a segfault
    path = tmp_path / "w.npy"
    np.save(path, np.ones(1000, np.float32))
    code = textwrap.dedent(f"""
        import numpy as np, nbopt
        p = nbopt.Parameter(np.load({str(path)!r}, mmap_mode="r"))
        try:
            opt = nbopt.SGD([p], lr=0.1)
        except ValueError as e:
            print("refused:", e)
        else:
            p.grad = np.ones(1000, np.float32)
            opt.step()
            print("stepped")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "read-only" in out.stdout
    np.testing.assert_array_equal(np.load(path), 1.0)


def test_read_only_state_assigned_by_the_user_is_copied_never_written():
    p = nbopt.Parameter(np.ones(4, np.float32))
    opt = nbopt.Adam([p], lr=0.1)
    p.grad = np.ones(4, np.float32)
    opt.step()
    data = np.full(4, 0.5, np.float32).tobytes()
    frozen = np.frombuffer(data, np.float32)
    opt.state[p]["exp_avg"] = frozen
    opt.step()
    assert data == np.full(4, 0.5, np.float32).tobytes()
    np.testing.assert_allclose(opt.state[p]["exp_avg"], 0.9 * 0.5 + 0.1)


OVERLAP = ("unsupported operation: some elements of the input tensor and the written-to "
           "tensor refer to a single memory location. Please clone() the tensor before "
           "performing the operation.")


@pytest.mark.parametrize("cls,kwargs", ALGOS, ids=IDS)
def test_a_gradient_overlapping_its_parameter_is_refused(cls, kwargs):
    buf = np.linspace(0, 1, 6)
    p = nbopt.Parameter(buf[1:])
    assert np.shares_memory(p, buf)
    other = nbopt.Parameter(np.ones(3))
    opt = getattr(nbopt, cls)([{"params": [other]}, {"params": [p]}], **kwargs)
    other.grad = np.ones(3)
    p.grad = buf[:-1]
    before = buf.copy()
    with pytest.raises(RuntimeError) as info:
        opt.step()
    assert str(info.value) == OVERLAP
    np.testing.assert_array_equal(buf, before)
    np.testing.assert_array_equal(other, 1.0)


@requires_torch
def test_torch_raises_the_same_overlap_error():
    import torch

    b = torch.arange(6.0)
    p = torch.nn.Parameter(b[1:])
    p.grad = torch.as_strided(p.detach(), (5,), (1,), p.storage_offset() - 1)
    with pytest.raises(RuntimeError) as info:
        torch.optim.SGD([p], lr=0.1).step()
    assert str(info.value) == OVERLAP


@pytest.mark.parametrize("cls,kwargs", ALGOS, ids=IDS)
def test_a_gradient_that_is_its_parameters_own_memory_steps_like_a_copy(cls, kwargs):
    p = nbopt.Parameter(np.linspace(0.5, 1, 5))
    q = nbopt.Parameter(np.array(p))
    opt = getattr(nbopt, cls)([p], **kwargs)
    ref = getattr(nbopt, cls)([q], **kwargs)
    for _ in range(3):
        p.grad = p.view(np.ndarray)          # the parameter itself, read before it is written
        q.grad = np.array(q)
        opt.step()
        ref.step()
    np.testing.assert_array_equal(p, q)


# -- atomic steps (item 8) -------------------------------------------------------------

def _everything(opt):
    out = [np.array(p) for g in opt.param_groups for p in g["params"]]
    for g in opt.param_groups:
        for p in g["params"]:
            for k, v in sorted(opt.state.get(p, {}).items()):
                out.append((k, np.array(v)))
    return out


def _bit_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, tuple):
            assert x[0] == y[0]
            x, y = x[1], y[1]
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


# Rprop has no weight_decay, and reads lr only when a parameter's state is
# created (torch too): a bad lr afterwards is never read
BAD_VALUES = [(cls, kwargs, key, value) for cls, kwargs in ALGOS
              for key, value in [("lr", None), ("lr", "0.1"), ("weight_decay", None)]
              if cls != "Rprop"] + [("Rprop", dict(lr=0.01), "etas", (0.5, None))]


@pytest.mark.parametrize("when", ["first-step", "steady"])
@pytest.mark.parametrize("cls,kwargs,key,value", BAD_VALUES,
                         ids=[f"{c}-{k}={v!r}" for c, _, k, v in BAD_VALUES])
def test_a_bad_value_in_the_last_group_changes_nothing(cls, kwargs, key, value, when):
    groups = [_params(np.float32, sizes=(4, 3), arena=True), _params(np.float64, sizes=(5,))]
    held = [[np.zeros(p.shape, p.dtype) for p in g] for g in groups]
    opt = getattr(nbopt, cls)([{"params": groups[0]}, {"params": groups[1], "lr": 0.02}],
                              **kwargs)
    rounds = 4 if when == "steady" else 0
    for k in range(rounds + 1):
        for g, h in zip(groups, held):
            _feed(g, k, h)
        if k < rounds:
            opt.step()
    if when == "steady":
        assert opt._flat[0].flat[0]._steady is not None
    before = _everything(opt)
    opt.param_groups[1][key] = value
    with pytest.raises(TypeError) as info:
        opt.step()
    if not isinstance(value, tuple):
        assert str(info.value).startswith(f"param_groups[1][{key!r}] must be a number")
    _bit_identical(_everything(opt), before)
    # and the optimizer goes on as if the failed step had not been tried
    opt.param_groups[1][key] = 0.02 if key == "lr" else opt.defaults[key]
    opt.step()
    twin_groups = [_params(np.float32, sizes=(4, 3), arena=True), _params(np.float64, sizes=(5,))]
    twin = getattr(nbopt, cls)([{"params": twin_groups[0]},
                                {"params": twin_groups[1], "lr": 0.02}], **kwargs)
    for k in range(rounds + 1):
        for g in twin_groups:
            _feed(g, k)
        twin.step()
    for a, b in zip(_everything(opt), _everything(twin)):
        a, b = (a[1], b[1]) if isinstance(a, tuple) else (a, b)
        np.testing.assert_array_equal(a, b)


def test_a_bad_gradient_in_the_last_group_changes_nothing_either():
    a, b = nbopt.Parameter(np.ones(3)), nbopt.Parameter(np.ones(2))
    opt = nbopt.Adam([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = np.ones(3), np.ones(3)       # b's has the wrong shape
    with pytest.raises(RuntimeError, match="shape"):
        opt.step()
    np.testing.assert_array_equal(a, 1.0)
    assert opt.state_dict()["state"] == {}
