"""nbopt.nn: the reference model-protocol implementation.

* hand-written backward passes against central finite differences (float64);
* forward, loss, gradients and running statistics against torch 2.13's
  modules on the same weights and data (live, when torch is importable);
* the Module machinery (registration order, names, state_dict, train/eval,
  errors) against torch's behaviour.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

import nbopt
from nbopt import nn

from conftest import HAVE_TORCH, requires_torch

if HAVE_TORCH:
    import torch

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


# --------------------------------------------------------------------------
# finite differences

def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar function ``f`` at ``x`` (modified in
    place and restored)."""
    g = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def check_module_grads(module, x, rng, rtol=1e-6, atol=1e-8):
    """Loss ``sum(r * module(x))`` with a fixed random ``r``: analytic input
    and parameter gradients against finite differences."""
    r = rng.standard_normal(module(x).shape)

    def loss():
        return float(np.sum(r * module(x)))

    module.zero_grad()
    module(x)
    dx = module.backward(r)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=rtol, atol=atol)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(loss, p), rtol=rtol, atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4), (4,)])
def test_linear_gradients(shape):
    rng = np.random.default_rng(0)
    lin = nn.Linear(4, 3, dtype=np.float64, rng=rng)
    check_module_grads(lin, rng.standard_normal(shape), rng)


def test_linear_without_bias_gradients():
    rng = np.random.default_rng(1)
    lin = nn.Linear(4, 3, bias=False, dtype=np.float64, rng=rng)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    check_module_grads(lin, rng.standard_normal((5, 4)), rng)


BN_VARIANTS = [dict(), dict(momentum=None), dict(affine=False), dict(bias=False),
               dict(track_running_stats=False)]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(7, 3), (4, 3, 5)])
@pytest.mark.parametrize("options", BN_VARIANTS, ids=lambda o: ",".join(o) or "default")
def test_batchnorm_gradients(options, shape, training):
    rng = np.random.default_rng(2)
    bn = nn.BatchNorm1d(3, dtype=np.float64, **options)
    if bn.weight is not None:
        bn.weight[...] = rng.uniform(0.5, 2.0, 3)
    if bn.bias is not None:
        bn.bias[...] = rng.standard_normal(3)
    if bn.running_mean is not None:
        bn.running_mean[...] = rng.standard_normal(3)
        bn.running_var[...] = rng.uniform(0.5, 2.0, 3)
    bn.train(training)
    check_module_grads(bn, rng.standard_normal(shape) * 2 + 1, rng, rtol=1e-5, atol=1e-7)


def test_relu_gradients():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4))
    x[np.abs(x) < 0.1] = 0.5     # away from the kink
    check_module_grads(nn.ReLU(), x, rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [False, True])
def test_cross_entropy_gradients(reduction, ignore):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5)) * 3
    y = rng.integers(0, 5, 6)
    if ignore:
        y[[1, 4]] = -100
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    w = rng.standard_normal(6) if reduction == "none" else None

    def loss():
        out = loss_fn(x, y)
        return float(np.sum(out * w)) if w is not None else float(out)

    loss()
    dx = loss_fn.backward(w)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    if ignore:
        np.testing.assert_array_equal(dx[[1, 4]], 0.0)


def test_cross_entropy_single_sample():
    x = np.array([0.5, -1.0, 2.0])
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(x, np.array(2))
    np.testing.assert_allclose(loss, -(x[2] - np.log(np.exp(x).sum())), rtol=1e-15)
    np.testing.assert_allclose(loss_fn.backward(), np.exp(x) / np.exp(x).sum() - [0, 0, 1],
                               rtol=1e-14)


def test_cross_entropy_is_stable_for_large_logits():
    x = np.array([[1000.0, 0.0], [0.0, -1000.0]], np.float32)
    loss = nn.cross_entropy(x, np.array([1, 0]))
    assert np.isfinite(loss) and loss.dtype == np.float32
    np.testing.assert_allclose(loss, 500.0, rtol=1e-6)


def test_sequential_model_gradients():
    rng = np.random.default_rng(5)
    model = nn.Sequential(nn.Linear(4, 6, dtype=np.float64, rng=rng),
                          nn.BatchNorm1d(6, dtype=np.float64), nn.ReLU(),
                          nn.Linear(6, 3, dtype=np.float64, rng=rng))
    x = rng.standard_normal((8, 4))
    y = rng.integers(0, 3, 8)
    loss_fn = nn.CrossEntropyLoss()

    def loss():
        return float(loss_fn(model(x), y))

    model.zero_grad()
    loss()
    dx = model.backward(loss_fn.backward())
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-9)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(loss, p), rtol=1e-5, atol=1e-9,
                                   err_msg=name)


def test_gradients_accumulate_like_autograd():
    rng = np.random.default_rng(6)
    lin = nn.Linear(3, 2, dtype=np.float64, rng=rng)
    x = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 2))
    lin(x)
    lin.backward(g)
    once = lin.weight.grad.copy()
    lin(x)
    lin.backward(g)
    np.testing.assert_allclose(lin.weight.grad, 2 * once, rtol=1e-15)
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None
    lin.weight.requires_grad = False
    lin(x)
    lin.backward(g)
    assert lin.weight.grad is None and lin.bias.grad is not None


def test_gradients_land_in_arena_views():
    rng = np.random.default_rng(7)
    lin = nn.Linear(3, 2, dtype=np.float32, rng=rng)
    arena = nbopt.ParameterArena([lin.weight, lin.bias])
    lin.weight, lin.bias = arena.params
    x = rng.standard_normal((4, 3)).astype(np.float32)
    lin(x)
    lin.backward(np.ones((4, 2), np.float32))
    assert lin.weight.grad is arena.grad_views[0]
    np.testing.assert_allclose(arena.grad[-2:], 4.0)


def test_training_reduces_the_loss():
    rng = np.random.default_rng(8)
    model = nn.Sequential(nn.Linear(2, 16, rng=rng), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Linear(16, 2, rng=rng))
    x = rng.standard_normal((128, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)      # XOR-like: needs the hidden layer
    loss_fn = nn.CrossEntropyLoss()
    opt = nbopt.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        losses.append(float(loss_fn(model(x), y)))
        model.backward(loss_fn.backward())
        opt.step()
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    accuracy = np.mean(model(x).argmax(1) == y)
    assert accuracy > 0.9


# --------------------------------------------------------------------------
# torch parity (live)

def torch_dtype(dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


def to_torch(model, tmodel):
    tmodel.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                            model.state_dict().items()})
    return tmodel


def assert_close(have, want, dtype, what=""):
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    have = np.asarray(have)
    assert have.dtype == want.dtype, what
    scale = max(float(np.max(np.abs(want))), 1.0) if want.size else 1.0
    tol = TOL[dtype]
    np.testing.assert_allclose(have, want, rtol=tol["rtol"], atol=tol["atol"] * scale,
                               err_msg=what)


def make_pair(dtype, seed, bn_options=None):
    rng = np.random.default_rng(seed)
    bn_options = bn_options or {}
    model = nn.Sequential(nn.Linear(5, 8, dtype=dtype, rng=rng),
                          nn.BatchNorm1d(8, dtype=dtype, **bn_options), nn.ReLU(),
                          nn.Linear(8, 4, dtype=dtype, rng=rng))
    if model[1].weight is not None:
        model[1].weight[...] = rng.uniform(0.5, 1.5, 8)
    if model[1].bias is not None:
        model[1].bias[...] = rng.uniform(-1, 1, 8)
    td = torch_dtype(dtype)
    tmodel = torch.nn.Sequential(torch.nn.Linear(5, 8, dtype=td),
                                 torch.nn.BatchNorm1d(8, dtype=td, **bn_options),
                                 torch.nn.ReLU(), torch.nn.Linear(8, 4, dtype=td))
    return model, to_torch(model, tmodel), rng


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bn_options", [{}, {"momentum": None}, {"affine": False},
                                        {"track_running_stats": False}],
                         ids=["default", "cumulative", "no-affine", "no-running-stats"])
def test_model_matches_torch(dtype, bn_options):
    model, tmodel, rng = make_pair(dtype, 9, bn_options)
    loss_fn = nn.CrossEntropyLoss()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    assert [n for n, _ in model.named_buffers()] == [n for n, _ in tmodel.named_buffers()]
    assert list(model.state_dict()) == list(tmodel.state_dict())
    for step, training in enumerate([True, True, True, False]):
        model.train(training)
        tmodel.train(training)
        x = (rng.standard_normal((16, 5)) * 2 + 0.3).astype(dtype)
        y = rng.integers(0, 4, 16)
        model.zero_grad()
        tmodel.zero_grad()
        out = model(x)
        loss = loss_fn(out, y)
        dx = model.backward(loss_fn.backward())
        tx = torch.from_numpy(x.copy()).requires_grad_()
        tout = tmodel(tx)
        tloss = torch.nn.functional.cross_entropy(tout, torch.from_numpy(y))
        tloss.backward()
        assert_close(out, tout, dtype, f"step {step} output")
        assert_close(loss, tloss, dtype, f"step {step} loss")
        assert_close(dx, tx.grad, dtype, f"step {step} input grad")
        # gradients are compared on the scale of the largest gradient: the
        # first bias before a batch norm has a mathematically zero gradient
        grads = [p.grad for p in tmodel.parameters()]
        scale = max(float(g.abs().max()) for g in grads)
        for (name, p), tp in zip(model.named_parameters(), tmodel.parameters()):
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=TOL[dtype]["rtol"],
                                       atol=TOL[dtype]["atol"] * max(scale, 1.0),
                                       err_msg=f"step {step} grad {name}")
        for (name, b), tb in zip(model.named_buffers(), tmodel.buffers()):
            assert_close(b, tb, dtype, f"step {step} buffer {name}")


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_3d_input_matches_torch(dtype, training):
    rng = np.random.default_rng(10)
    bn = nn.BatchNorm1d(4, momentum=0.2, dtype=dtype)
    bn.weight[...] = rng.uniform(0.5, 1.5, 4)
    bn.running_var[...] = rng.uniform(0.5, 1.5, 4)
    tbn = to_torch(bn, torch.nn.BatchNorm1d(4, momentum=0.2, dtype=torch_dtype(dtype)))
    bn.train(training)
    tbn.train(training)
    for _ in range(3):
        x = (rng.standard_normal((3, 4, 6)) * 3 - 1).astype(dtype)
        g = rng.standard_normal((3, 4, 6)).astype(dtype)
        bn.zero_grad()
        tbn.zero_grad()
        y = bn(x)
        dx = bn.backward(g)
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = tbn(tx)
        ty.backward(torch.from_numpy(g))
        assert_close(y, ty, dtype, "output")
        assert_close(dx, tx.grad, dtype, "input grad")
        assert_close(bn.weight.grad, tbn.weight.grad, dtype, "weight grad")
        assert_close(bn.bias.grad, tbn.bias.grad, dtype, "bias grad")
        for (name, b), tb in zip(bn.named_buffers(), tbn.buffers()):
            assert_close(b, tb, dtype, name)


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(dtype, reduction):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((9, 6)) * 4).astype(dtype)
    y = rng.integers(0, 6, 9)
    y[3] = -100
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    loss = loss_fn(x, y)
    g = rng.standard_normal(9).astype(dtype) if reduction == "none" else None
    dx = loss_fn.backward(g)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tloss = torch.nn.functional.cross_entropy(tx, torch.from_numpy(y), reduction=reduction)
    tloss.backward(torch.from_numpy(g) if g is not None else None)
    assert_close(loss, tloss, dtype, "loss")
    assert_close(dx, tx.grad, dtype, "grad")


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_training_run_matches_torch(dtype):
    model, tmodel, rng = make_pair(dtype, 12)
    opt = nbopt.SGD(model.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(10):
        x = rng.standard_normal((16, 5)).astype(dtype)
        y = rng.integers(0, 4, 16)
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)),
                                          torch.from_numpy(y)).backward()
        topt.step()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for (name, v), tv in zip(model.state_dict().items(), tmodel.state_dict().values()):
        np.testing.assert_allclose(v, tv.numpy(), err_msg=name, **tol)


@requires_torch
def test_repr_matches_torch():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.BatchNorm1d(2, momentum=None),
                          nn.Sequential(nn.Linear(2, 2, bias=False)))
    tmodel = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(),
                                 torch.nn.BatchNorm1d(2, momentum=None),
                                 torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False)))
    assert repr(model) == repr(tmodel)


def _error(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.type, str(info.value)


@requires_torch
@pytest.mark.parametrize("make_input", [
    lambda m: m(np.zeros((4, 5), np.float32)),
    lambda m: m(np.zeros(5, np.float32)),
    lambda m: m(np.zeros((2, 4, 5), np.float32)),
    lambda m: m(np.zeros((4, 3), np.float64)),
], ids=["2d", "1d", "3d", "dtype"])
def test_linear_errors_match_torch(make_input):
    lin = nn.Linear(3, 2)
    tlin = torch.nn.Linear(3, 2)

    assert _error(lambda: make_input(lin)) == _error(
        lambda: make_input(lambda x: tlin(torch.from_numpy(x))))


@requires_torch
@pytest.mark.parametrize("x,t,kwargs", [
    (np.zeros((4, 3)), np.array([0, 1, 2, 3]), {}),
    (np.zeros((4, 3)), np.array([0, 1, 2]), {}),
    (np.zeros((4, 3)), np.array([0.0, 1, 2, 2]), {}),
    (np.zeros((4, 3)), np.array([-1, 1, 2, 2]), {}),
    (np.zeros((4, 3)), np.array([0, 1, 2, 2]), {"reduction": "foo"}),
], ids=["out-of-bounds", "batch", "float-target", "negative", "reduction"])
def test_cross_entropy_errors_match_torch(x, t, kwargs):
    ours = _error(lambda: nn.CrossEntropyLoss(**kwargs)(x, t))
    theirs = _error(lambda: torch.nn.CrossEntropyLoss(**kwargs)(torch.from_numpy(x),
                                                                torch.from_numpy(t)))
    assert ours == theirs


@requires_torch
@pytest.mark.parametrize("x", [np.zeros(4, np.float32), np.zeros((4, 5), np.float32),
                               np.zeros((2, 3, 4, 5), np.float32),
                               np.zeros((4, 3), np.float64)],
                         ids=["1d", "channels", "4d", "dtype"])
def test_batchnorm_errors_match_torch(x):
    ours = _error(lambda: nn.BatchNorm1d(3)(x))
    theirs = _error(lambda: torch.nn.BatchNorm1d(3)(torch.from_numpy(x)))
    assert ours == theirs


def test_batchnorm_needs_more_than_one_value_per_channel_when_training():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"^Expected more than 1 value per channel when "
                                         r"training, got input size \(1, 3\)$"):
        bn(np.zeros((1, 3), np.float32))
    assert int(bn.num_batches_tracked) == 0       # nothing changed
    bn.eval()
    assert bn(np.ones((1, 3), np.float32)).shape == (1, 3)


# --------------------------------------------------------------------------
# Module machinery

def test_registration_order_and_names():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nbopt.Parameter(np.zeros(2))
            self.register_buffer("stat", np.zeros(2))
            self.register_buffer("scratch", np.zeros(1), persistent=False)
            self.inner = nn.Linear(2, 2, rng=0)
            self.a = nbopt.Parameter(np.ones(1))
            self.shared = self.inner            # the same module twice

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["b", "a", "inner.weight", "inner.bias"]
    assert [n for n, _ in net.named_buffers()] == ["stat", "scratch"]
    assert list(net.state_dict()) == ["b", "a", "stat", "inner.weight", "inner.bias",
                                      "shared.weight", "shared.bias"]
    assert [n for n, _ in net.named_modules()] == ["", "inner"]
    assert [type(m).__name__ for m in net.modules()] == ["Net", "Linear"]
    assert len(list(net.parameters())) == 4
    del net.a
    assert [n for n, _ in net.named_parameters()] == ["b", "inner.weight", "inner.bias"]
    with pytest.raises(AttributeError, match="^'Net' object has no attribute 'a'$"):
        net.a


@requires_torch
def test_state_dict_order_matches_torch_for_shared_modules():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.zeros(2))
            self.register_buffer("stat", torch.zeros(2))
            self.register_buffer("scratch", torch.zeros(1), persistent=False)
            self.inner = torch.nn.Linear(2, 2)
            self.a = torch.nn.Parameter(torch.ones(1))
            self.shared = self.inner

    net = Net()
    assert list(net.state_dict()) == ["b", "a", "stat", "inner.weight", "inner.bias",
                                      "shared.weight", "shared.bias"]
    assert [n for n, _ in net.named_parameters()] == ["b", "a", "inner.weight", "inner.bias"]


def test_assignment_rules():
    m = nn.Linear(2, 2, rng=0)
    with pytest.raises(TypeError, match="cannot assign 'ndarray' as parameter 'weight'"):
        m.weight = np.zeros((2, 2))
    m.bias = None
    assert m.bias is None and [n for n, _ in m.named_parameters()] == ["weight"]
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("weight", np.zeros(1))
    with pytest.raises(TypeError, match="numpy.ndarray or None required"):
        m.register_buffer("x", [1, 2])
    bn = nn.BatchNorm1d(2)
    with pytest.raises(TypeError, match="cannot assign 'list' as buffer 'running_mean'"):
        bn.running_mean = [0, 0]
    with pytest.raises(AttributeError, match="before Module.__init__"):
        class Bad(nn.Module):
            def __init__(self):
                self.w = nbopt.Parameter(np.zeros(1))
        Bad()


def test_train_eval_propagate():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.Sequential(nn.BatchNorm1d(2)))
    assert model.eval() is model
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="^training mode is expected to be boolean$"):
        model.train("yes")


def test_state_dict_shares_memory_and_load_copies():
    model = nn.Sequential(nn.Linear(2, 3, rng=0), nn.BatchNorm1d(3))
    sd = model.state_dict()
    assert type(sd["0.weight"]) is np.ndarray
    assert np.shares_memory(sd["0.weight"], model[0].weight)
    assert isinstance(model.state_dict(keep_vars=True)["0.weight"], nbopt.Parameter)
    other = nn.Sequential(nn.Linear(2, 3, rng=1), nn.BatchNorm1d(3))
    result = other.load_state_dict({k: v.copy() for k, v in sd.items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    np.testing.assert_array_equal(other[0].weight, model[0].weight)
    assert not np.shares_memory(other[0].weight, model[0].weight)


def test_load_state_dict_errors_change_nothing():
    model = nn.Linear(3, 2, rng=0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = {"weight": np.zeros((2, 3), np.float32), "extra": np.zeros(1)}
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(bad)
    assert str(info.value) == ('Error(s) in loading state_dict for Linear:\n\tMissing key(s) in '
                               'state_dict: "bias". \n\tUnexpected key(s) in state_dict: '
                               '"extra". ')
    bad = {"weight": np.zeros((3, 3), np.float32), "bias": np.zeros(2, np.float32)}
    with pytest.raises(RuntimeError, match="size mismatch for weight: copying a param with "
                                           r"shape \(3, 3\) from checkpoint, the shape in "
                                           r"current model is \(2, 3\)."):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    result = model.load_state_dict({"weight": np.ones((2, 3))}, strict=False)
    assert result.missing_keys == ["bias"]
    np.testing.assert_array_equal(model.weight, np.ones((2, 3), np.float32))
    assert model.weight.dtype == np.float32


@requires_torch
def test_load_state_dict_key_errors_match_torch():
    lin, tlin = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    sd = {"weight": np.zeros((2, 3), np.float32), "extra": np.zeros(1, np.float32)}
    ours = _error(lambda: lin.load_state_dict(sd))
    theirs = _error(lambda: tlin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}))
    assert ours == theirs


def test_deepcopy_is_independent():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.BatchNorm1d(2))
    clone = copy.deepcopy(model)
    for (n, a), (_, b) in zip(model.state_dict(keep_vars=True).items(),
                              clone.state_dict(keep_vars=True).items()):
        assert type(a) is type(b) and not np.shares_memory(a, b), n
        np.testing.assert_array_equal(a, b)


def test_linear_initialisation():
    np.random.seed(0)
    a = nn.Linear(16, 4)
    np.random.seed(0)
    b = nn.Linear(16, 4)
    np.testing.assert_array_equal(a.weight, b.weight)
    c = nn.Linear(16, 4, rng=3)
    d = nn.Linear(16, 4, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(c.weight, d.weight)
    assert c.weight.dtype == np.float32 and c.bias.dtype == np.float32
    big = nn.Linear(400, 300, dtype=np.float64, rng=1)
    bound = 1 / np.sqrt(400)
    assert np.abs(big.weight).max() <= bound and np.abs(big.bias).max() <= bound
    # uniform: the variance of U(-b, b) is b^2 / 3
    np.testing.assert_allclose(big.weight.var(), bound ** 2 / 3, rtol=0.02)


def test_foreign_protocol_submodule():
    class Bias:
        def __init__(self):
            self.b = nbopt.Parameter(np.zeros(2))
            self.training = True

        def parameters(self):
            return [self.b]

        def buffers(self):
            return []

        def modules(self):
            return [self]

        def train(self, mode=True):
            self.training = mode

        def __call__(self, x):
            return x + self.b

        def backward(self, g):
            nn.accumulate_grad(self.b, g.sum(0))
            return g

    model = nn.Sequential(nn.Linear(2, 2, rng=0), Bias())
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias",
                                                        "1.parameters.0"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.parameters.0"]
    model.eval()
    assert model[1].training is False
    model(np.ones((3, 2), np.float32))
    model.backward(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(model[1].b.grad, [3.0, 3.0])


def test_copies_leave_the_forward_cache_behind():
    lin = nn.Linear(3, 2, rng=0)
    lin(np.ones((1000, 3), np.float32))
    clone = copy.deepcopy(lin)
    assert clone._input is None and lin._input is not None
    with pytest.raises(RuntimeError, match="before forward"):
        clone.backward(np.ones((1000, 2), np.float32))
