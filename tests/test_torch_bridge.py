"""nbopt.torch: nbopt's optimizers on CPU torch tensors (issue 16).

Parity with torch.optim on a real torch model (Conv2d + Linear, two param
groups, several steps, gradients from loss.backward()) for every row of the
parity table (tests/cases.py: every element-wise algorithm and its options),
LBFGS with a closure, SparseAdam / Adagrad / SGD on nn.Embedding(sparse=True),
Adafactor and Muon; zero-copy sharing; torch's replacing of .grad tensors;
zero_grad; state keyed by tensors; torch's and nbopt's schedulers; state_dict
conversion both ways through torch.save / torch.load(weights_only=True).
"""
from __future__ import annotations

import doctest
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="nbopt.torch needs torch (an optional dependency)")

import nbopt  # noqa: E402
import nbopt.torch as nt  # noqa: E402
from cases import CASES, TOLERANCES  # noqa: E402
from conftest import torch_sqrt_is_ieee  # noqa: E402
from test_algorithm_lists import all_optimizers, api_classes  # noqa: E402

STEPS = 6
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_model(dtype=torch.float32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 4 * 4, 5))
    return model.to(dtype)


def batches(dtype, steps=STEPS):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 2, 6, 6, generator=g, dtype=dtype),
             torch.randn(8, 5, generator=g, dtype=dtype)) for _ in range(steps)]


def train(cls, case, dtype, set_to_none=True):
    """``STEPS`` steps of ``cls`` on the model; returns the parameters after
    each step and the final optimizer."""
    model = make_model(dtype)
    groups = [{"params": list(model[0].parameters())},
              {"params": list(model[3].parameters()), **case.group1}]
    options = dict(case.options)
    if case.tensor_lr:
        options["lr"] = torch.tensor(options.get("lr", 1e-3))
    opt = cls(groups, **options)
    trajectory = []
    for x, y in batches(dtype):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=set_to_none)
        trajectory.append([p.detach().clone().numpy() for p in model.parameters()])
    return trajectory, opt


def assert_close(got, want, dtype_name, exact=False):
    for a, b in zip(got, want):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, equal_nan=True, **TOLERANCES[dtype_name])


def assert_same_state(bridge_sd, torch_sd, dtype_name, check_dtype=True):
    assert bridge_sd["param_groups"] == torch_sd["param_groups"] or \
        _groups_equal(bridge_sd["param_groups"], torch_sd["param_groups"])
    assert bridge_sd["state"].keys() == torch_sd["state"].keys()
    for k, entry in torch_sd["state"].items():
        assert list(bridge_sd["state"][k]) == list(entry)
        for name, want in entry.items():
            _same_value(bridge_sd["state"][k][name], want, name, dtype_name, check_dtype)


def _same_value(have, want, name, dtype_name, check_dtype):
    if isinstance(want, (list, tuple)):
        assert type(have) is type(want) and len(have) == len(want), name
        for h, w in zip(have, want):
            _same_value(h, w, name, dtype_name, check_dtype)
    elif isinstance(want, torch.Tensor):
        assert isinstance(have, torch.Tensor), name
        assert have.shape == want.shape, name
        assert have.dtype == want.dtype or not check_dtype, name
        have, want = have.double(), want.double()
        # element-wise rtol, atol scaled to the entry's magnitude: a state
        # entry mixes in gradients, which carry the parameters' ulp
        # differences through the model (a buffer of values ~10 may
        # differ by a few float32 ulps of 10 where it is ~0.1)
        tol = dict(TOLERANCES[dtype_name])
        scale = float(np.nanmax(np.abs(want.numpy()), initial=1.0))
        tol["atol"] *= max(1.0, scale)
        np.testing.assert_allclose(have.numpy(), want.numpy(), equal_nan=True, **tol)
    elif isinstance(want, float):
        assert have == pytest.approx(want, rel=TOLERANCES[dtype_name]["rtol"]), name
    else:
        assert have == want, name


def _groups_equal(a, b):
    def norm(v):
        return v.item() if isinstance(v, torch.Tensor) else v
    return all({k: norm(v) for k, v in x.items()} == {k: norm(v) for k, v in y.items()}
               for x, y in zip(a, b))


# -- parity ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in CASES if not c.tensor_betas], ids=lambda c: c.id)
def test_parity_with_torch_optim_on_a_torch_model(case, dtype):
    want, torch_opt = train(getattr(torch.optim, case.cls), case, DTYPES[dtype])
    got, opt = train(getattr(nt, case.cls), case, DTYPES[dtype])
    for step, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, dtype)
    assert_same_state(opt.state_dict(), torch_opt.state_dict(), dtype)


def test_parity_table_covers_every_elementwise_algorithm():
    assert {c.cls for c in CASES} == set(api_classes())
    assert set(all_optimizers()) <= set(nt.ALGORITHMS)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_parity_when_torch_accumulates_into_the_same_grad_tensors(name):
    """zero_grad(set_to_none=False): torch keeps the .grad tensors and zeroes
    them; the bridge keeps reading the same views."""
    case = next(c for c in CASES if c.cls == name and not c.tensor_lr)
    want, _ = train(getattr(torch.optim, name), case, torch.float32, set_to_none=False)
    got, _ = train(getattr(nt, name), case, torch.float32, set_to_none=False)
    assert_close(got[-1], want[-1], "float32")


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_with_a_closure_matches_torch(line_search_fn):
    results = []
    for cls in (torch.optim.LBFGS, nt.LBFGS):
        model = make_model(torch.float64)
        x, y = batches(torch.float64, 1)[0]
        opt = cls(model.parameters(), lr=0.5, max_iter=5, history_size=4,
                  line_search_fn=line_search_fn)

        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        losses = [opt.step(closure) for _ in range(3)]
        results.append(([p.detach().clone().numpy() for p in model.parameters()], losses,
                        opt.state_dict()))
    (want, want_losses, torch_sd), (got, losses, sd) = results
    assert all(isinstance(loss, torch.Tensor) for loss in losses)     # closure's value
    np.testing.assert_allclose([v.item() for v in losses], [v.item() for v in want_losses],
                               rtol=1e-12)
    assert_close(got, want, "float64")
    assert sorted(sd["state"][0]) == sorted(torch_sd["state"][0])


@pytest.mark.parametrize("name", ["SparseAdam", "Adagrad", "SGD"])
def test_sparse_embedding_gradients_match_torch(name):
    out = []
    for module in (torch.optim, nt):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 4, sparse=True)
        opt = getattr(module, name)(emb.parameters(), lr=0.1)
        for s in range(4):
            idx = torch.tensor([[1, 3, 3, 7], [s, 2, 2, 9]])   # repeated rows: summed
            emb(idx).pow(2).sum().backward()
            assert emb.weight.grad.is_sparse
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # torch's sparse-invariants note
                opt.step()
            opt.zero_grad()
        out.append(emb.weight.detach().clone().numpy())
    if torch_sqrt_is_ieee() or name == "SGD":
        np.testing.assert_array_equal(out[1], out[0])
    else:   # torch's float32 sqrt is an ulp off IEEE on this CPU (see conftest)
        np.testing.assert_allclose(out[1], out[0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name,options", [("Adafactor", dict(lr=0.01)),
                                          ("Muon", dict(lr=0.02))])
def test_matrix_optimizers_match_torch(name, options):
    out = []
    for module in (torch.optim, nt):
        torch.manual_seed(0)
        lin = torch.nn.Linear(16, 8, bias=False)
        opt = getattr(module, name)(lin.parameters(), **options)
        for s in range(3):
            x = torch.randn(4, 16, generator=torch.Generator().manual_seed(s))
            lin(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        out.append(lin.weight.detach().clone().numpy())
    np.testing.assert_allclose(out[1], out[0], rtol=1e-5, atol=1e-7)


# -- sharing and gradients ---------------------------------------------------------------
def test_parameters_share_memory_with_the_tensors():
    model = make_model()
    ptrs = [p.data_ptr() for p in model.parameters()]
    opt = nt.SGD(model.parameters(), lr=0.1)
    for p, t in zip(opt.param_groups[0]["params"], model.parameters()):
        assert isinstance(p, nt.TorchParameter) and isinstance(p, nbopt.Parameter)
        assert p.tensor is t
        assert np.shares_memory(p, t.detach().numpy())
    x, y = batches(torch.float32, 1)[0]
    before = [p.detach().clone() for p in model.parameters()]
    ((model(x) - y) ** 2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    assert [p.data_ptr() for p in model.parameters()] == ptrs      # updated in place
    for b, g, p in zip(before, grads, model.parameters()):
        torch.testing.assert_close(p.detach(), b - 0.1 * g, rtol=0, atol=1e-7)


def test_grad_is_read_from_the_tensor_without_a_copy_and_follows_replacement():
    t = torch.zeros(4, requires_grad=True)
    opt = nt.SGD([t], lr=1.0)
    p = opt.param_groups[0]["params"][0]
    assert p.grad is None
    t.sum().backward()
    view = p.grad
    assert np.shares_memory(view, t.grad.numpy()) and p.grad is view   # cached view
    opt.step()
    np.testing.assert_array_equal(t.detach().numpy(), -np.ones(4))
    # torch replaces the tensor (set_to_none, then a new backward): followed
    opt.zero_grad()
    assert t.grad is None and p.grad is None
    (3 * t).sum().backward()
    assert p.grad is not view
    opt.step()
    np.testing.assert_array_equal(t.detach().numpy(), -4 * np.ones(4))
    # a gradient tensor assigned by hand, between steps of an already steady loop
    t.grad = torch.full((4,), 0.5)
    opt.step()
    np.testing.assert_array_equal(t.detach().numpy(), -4.5 * np.ones(4))
    # the same tensor object whose storage was swapped (p.grad.data = ...)
    t.grad.data = torch.full((4,), 0.25)
    opt.step()
    np.testing.assert_array_equal(t.detach().numpy(), -4.75 * np.ones(4))


def test_grads_replaced_every_step_keep_the_steady_plan_correct():
    """A loop whose every .grad is a new tensor each step (the torch default):
    no step may read a previous step's gradient memory."""
    ts = [torch.zeros(100, requires_grad=True) for _ in range(3)]
    opt = nt.Adam(ts, lr=0.1)
    ref = [torch.zeros(100, requires_grad=True) for _ in range(3)]
    ropt = torch.optim.Adam(ref, lr=0.1)
    for s in range(5):
        for a, b in zip(ts, ref):
            g = torch.randn(100, generator=torch.Generator().manual_seed(s))
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ropt.step()
    for a, b in zip(ts, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_zero_grad_follows_torch():
    t = torch.ones(3, requires_grad=True)
    opt = nt.Adam([t])
    (t * 2).sum().backward()
    g = t.grad
    opt.zero_grad(set_to_none=False)
    assert t.grad is g and not t.grad.any()
    opt.zero_grad()
    assert t.grad is None


def test_grad_assignment_through_the_parameter_sets_the_tensor_grad():
    t = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = nt.SGD([t], lr=1.0)
    p = opt.parameter(t)
    g = np.array([1.0, 2.0])
    p.grad = g
    assert np.shares_memory(t.grad.numpy(), g)
    opt.step()
    assert t.detach().tolist() == [-1.0, -2.0]
    p.grad = None
    assert t.grad is None
    with pytest.raises(RuntimeError):                  # torch checks at assignment
        p.grad = np.zeros(3)


def test_a_step_bumps_the_autograd_version_as_torch_in_place_updates_do():
    for module in (torch.optim, nt):
        w = torch.ones(3, requires_grad=True)
        opt = module.SGD([w], lr=0.1)
        loss = (w * w).sum()          # saves w for backward
        w.grad = torch.ones(3)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_state_is_keyed_by_parameter_and_answers_to_tensors():
    model = make_model()
    opt = nt.Adam(model.parameters(), lr=0.01)
    x, y = batches(torch.float32, 1)[0]
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    w = model[3].weight
    p = opt.parameter(w)
    assert opt.state[w] is opt.state[p]
    assert w in opt.state and opt.state.get(w) is opt.state[p]
    assert sorted(opt.state[w]) == ["exp_avg", "exp_avg_sq", "step"]
    assert float(opt.state[w]["step"]) == 1.0
    # torch's reset idioms still work and take effect
    del opt.state[w]
    assert p not in opt.state
    assert opt.state[w] == {}        # defaultdict, as torch's
    with pytest.raises(KeyError):
        opt.parameter(torch.zeros(1))


def test_named_parameters_and_group_dicts():
    model = make_model()
    opt = nt.SGD(model.named_parameters(), lr=0.1)
    ref = torch.optim.SGD(model.named_parameters(), lr=0.1)
    assert opt.state_dict()["param_groups"] == ref.state_dict()["param_groups"]
    assert opt.param_groups[0]["param_names"] == [n for n, _ in model.named_parameters()]
    groups = [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[3].weight}]
    opt = nt.Adam(groups, lr=0.01, betas=(torch.tensor(0.8), torch.tensor(0.99)))
    assert [len(g["params"]) for g in opt.param_groups] == [2, 1]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    opt.add_param_group({"params": [model[3].bias], "lr": torch.tensor(0.5)})
    assert float(opt.param_groups[2]["lr"]) == 0.5


def test_bad_input_is_refused_with_torch_messages_before_anything_changes():
    t = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts, but got "
                                        "torch.FloatTensor"):
        nt.SGD(t, lr=0.1)
    with pytest.raises(TypeError, match="optimizer can only optimize Tensors, but one of the "
                                        "params is numpy.ndarray"):
        nt.SGD([t, np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        nt.SGD([t * 2], lr=0.1)
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        nt.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        nt.SGD([t], lr=-1.0)
    with pytest.raises(TypeError, match="bfloat16"):
        nt.SGD([torch.zeros(2, dtype=torch.bfloat16, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="non-contiguous"):
        nt.SGD([torch.zeros(4, 4)[:, ::2].detach().requires_grad_()], lr=0.1)
    with pytest.raises(ValueError, match="CPU tensors"):
        nt.SGD([torch.zeros(2, device="meta", requires_grad=True)], lr=0.1)
    opt = nt.SGD([t], lr=0.1)
    groups = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match="some parameters appear in more than one"):
        opt.add_param_group({"params": [torch.ones(1, requires_grad=True), t]})
    with pytest.raises(TypeError, match="optimizer can only optimize Tensors"):
        opt.add_param_group({"params": [torch.ones(1, requires_grad=True), "w"]})
    assert [dict(g) for g in opt.param_groups] == groups
    with pytest.warns(UserWarning, match="duplicate parameters"):
        nt.SGD([t, t], lr=0.1)


def test_hooks_run_once_per_step():
    w = torch.zeros(2, requires_grad=True)
    nbopt.SGD([nbopt.Parameter(np.zeros(2))], lr=0.1)   # patches nbopt.SGD's own step too
    opt = nt.SGD([w], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    w.grad = torch.ones(2)
    opt.step()
    assert calls == ["pre", "post"]


# -- schedulers ----------------------------------------------------------------------------
def _lrs(opt_cls, sched, steps=12):
    model = make_model()
    opt = opt_cls(model.parameters(), lr=0.1, momentum=0.9)
    s = sched(opt)
    lrs = []
    for x, y in batches(torch.float32, steps):
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        opt.zero_grad()
        s.step() if not isinstance(s, (torch.optim.lr_scheduler.ReduceLROnPlateau,
                                       nbopt.lr_scheduler.ReduceLROnPlateau)) else s.step(1.0)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, [p.detach().clone().numpy() for p in model.parameters()]


@pytest.mark.parametrize("make", [
    lambda lr: lambda o: lr.StepLR(o, step_size=3, gamma=0.5),
    lambda lr: lambda o: lr.OneCycleLR(o, max_lr=0.5, total_steps=12),
    lambda lr: lambda o: lr.CosineAnnealingWarmRestarts(o, T_0=4),
    lambda lr: lambda o: lr.ReduceLROnPlateau(o, patience=1),
], ids=["StepLR", "OneCycleLR", "CosineAnnealingWarmRestarts", "ReduceLROnPlateau"])
def test_torch_and_nbopt_schedulers_drive_a_bridged_optimizer(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # e.g. no "step order" warning
        want = _lrs(torch.optim.SGD, make(torch.optim.lr_scheduler))
        by_torch = _lrs(nt.SGD, make(torch.optim.lr_scheduler))
        by_nbopt = _lrs(nt.SGD, make(nbopt.lr_scheduler))
    for got in (by_torch, by_nbopt):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-15)
        assert_close(got[1], want[1], "float32", exact=True)


def test_torch_swalr_drives_a_bridged_optimizer():
    from torch.optim.swa_utils import SWALR

    w = torch.zeros(2, requires_grad=True)
    opt = nt.SGD([w], lr=0.5)
    sched = SWALR(opt, swa_lr=0.05, anneal_epochs=3)
    lrs = []
    for _ in range(4):
        w.grad = torch.ones(2)
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(0.05)


# -- checkpoints ----------------------------------------------------------------------------
def _run(opt, model, data):
    for x, y in data:
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("name,options", [
    ("Adam", dict(lr=0.01, amsgrad=True)), ("SGD", dict(lr=0.05, momentum=0.9)),
    ("ASGD", dict(lr=0.05, t0=2)), ("NAdam", dict(lr=0.01)), ("Rprop", dict(lr=0.01)),
    ("Adagrad", dict(lr=0.05)), ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("LBFGS", dict(lr=0.5, max_iter=3, history_size=3)),
])
@pytest.mark.parametrize("direction", ["torch_to_nbopt", "nbopt_to_torch"])
def test_checkpoints_round_trip_through_torch_save(name, options, direction, tmp_path):
    """Train 3 steps with one library, torch.save its state_dict (and the
    model's), torch.load both with weights_only=True, load them into the other
    library's optimizer and train 3 more steps: the same as the first library
    resuming from its own checkpoint (a loaded state takes the parameters'
    dtype, torch's policy, which moves float32 scalar state such as NAdam's
    mu_product to float64: an uninterrupted run is not the reference)."""
    data = batches(torch.float64, 6)
    first, second = (torch.optim, nt) if direction == "torch_to_nbopt" else (nt, torch.optim)

    def run(opt, model, part):
        if name == "LBFGS":
            for x, y in part:
                def closure():
                    opt.zero_grad()
                    loss = ((model(x) - y) ** 2).mean()
                    loss.backward()
                    return loss
                opt.step(closure)
        else:
            _run(opt, model, part)

    model = make_model(torch.float64)
    opt = getattr(first, name)(model.parameters(), **options)
    run(opt, model, data[:3])
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.pt")

    def resume(module):
        ck = torch.load(tmp_path / "ck.pt", weights_only=True)
        resumed = make_model(torch.float64)
        resumed.load_state_dict(ck["model"])
        resumed_opt = getattr(module, name)(resumed.parameters(), **options)
        resumed_opt.load_state_dict(ck["opt"])
        run(resumed_opt, resumed, data[3:])
        return [p.detach().numpy() for p in resumed.parameters()], resumed_opt.state_dict()

    got, got_sd = resume(second)
    want, want_sd = resume(first)
    assert_close(got, want, "float64")
    assert_same_state(_as_torch(got_sd), _as_torch(want_sd), "float64")


def _as_torch(sd):
    return nt.to_torch_state_dict(nt.from_torch_state_dict(sd))


def test_plain_nbopt_optimizer_state_dicts_convert_both_ways(tmp_path):
    model = make_model()
    torch_opt = torch.optim.Adam(model.parameters(), lr=0.01)
    _run(torch_opt, model, batches(torch.float32, 2))
    torch.save(torch_opt.state_dict(), tmp_path / "torch.pt")
    loaded = torch.load(tmp_path / "torch.pt", weights_only=True)

    params = [nbopt.Parameter(p.detach().numpy().copy()) for p in model.parameters()]
    opt = nbopt.Adam(params, lr=0.01)
    opt.load_state_dict(nt.from_torch_state_dict(loaded))
    for p, t in zip(params, model.parameters()):
        np.testing.assert_array_equal(opt.state[p]["exp_avg"],
                                      torch_opt.state[t]["exp_avg"].numpy())
    # nbopt.save takes the converted dict (no pickle)
    nbopt.save(nt.from_torch_state_dict(loaded), tmp_path / "nb.npz")
    back = nt.to_torch_state_dict(nbopt.load(tmp_path / "nb.npz"))
    torch.save(back, tmp_path / "back.pt")
    fresh = torch.optim.Adam(make_model().parameters(), lr=0.01)
    fresh.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True))
    assert_same_state(fresh.state_dict(), torch_opt.state_dict(), "float32")
    # copies by default: the torch dict shares nothing with the live state
    sd = nt.to_torch_state_dict(opt.state_dict())
    sd["state"][0]["exp_avg"].zero_()
    assert opt.state[params[0]]["exp_avg"].any()


def test_a_bad_torch_checkpoint_changes_nothing():
    model = make_model()
    opt = nt.Adam(model.parameters(), lr=0.01)
    _run(opt, model, batches(torch.float32, 1))
    before = {k: np.array(v) for k, v in opt.state[model[3].weight].items()}
    sd = torch.optim.Adam(model.parameters(), lr=0.01).state_dict()
    sd["param_groups"][0]["params"] = sd["param_groups"][0]["params"][:-1]
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(sd)
    for k, v in opt.state[model[3].weight].items():
        np.testing.assert_array_equal(v, before[k])


# -- module hygiene ------------------------------------------------------------------------
def test_docstring_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(nt, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_optimizer_is_bridged_generically():
    for name in nt.ALGORITHMS:
        cls = getattr(nt, name)
        assert cls is nt.bridge(getattr(nbopt, name))
        assert issubclass(cls, getattr(nbopt, name)) and issubclass(cls, torch.optim.Optimizer)
        assert cls.__module__ == "nbopt.torch" and "Examples" in cls.__doc__
    with pytest.raises(TypeError, match="nbopt.Optimizer subclass"):
        nt.bridge(torch.optim.Adam)


def test_import_nbopt_does_not_import_torch_and_nbopt_torch_is_reachable():
    code = ("import sys, nbopt; assert 'torch' not in sys.modules; "
            "import nbopt.torch; print(nbopt.torch.AdamW.__mro__[2].__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nbopt.optim.adam"
    code = "import nbopt; print(nbopt.torch.SGD.__name__)"     # lazy attribute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SGD"


def test_coming_from_torch_page_examples_run(tmp_path, monkeypatch):
    """docs/coming_from_torch.rst: its ``>>>`` examples run as written."""
    import os

    monkeypatch.chdir(tmp_path)
    page = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                        "coming_from_torch.rst")
    result = doctest.testfile(page, module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 20 and result.failed == 0
