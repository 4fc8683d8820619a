"""Bad input gets a clear error, raised before anything is modified.

Hyper-parameter errors carry torch's exception type and text (checked against
live torch when it is importable); gradient and parameter errors name the
parameter by group and position and leave every parameter and every state
entry of the optimizer untouched.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

import nbopt
from conftest import HAVE_TORCH

# (class, kwargs, exception type, message) — messages are torch 2.13's.
INVALID = [
    ("SGD", dict(lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    ("SGD", dict(momentum=-0.5), ValueError, "Invalid momentum value: -0.5"),
    ("SGD", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    ("SGD", dict(nesterov=True), ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", dict(lr="tensor:[0.1,0.2]"), ValueError, "Tensor lr must be 1-element"),
    ("SGD", dict(fused=True, differentiable=True), RuntimeError,
     "`fused` does not support `differentiable`"),
    ("SGD", dict(fused=True, foreach=True), RuntimeError,
     "`fused` and `foreach` cannot be `True` together."),
    ("Adam", dict(lr=-1e-3), ValueError, "Invalid learning rate: -0.001"),
    ("Adam", dict(lr=float("nan")), ValueError, "Invalid learning rate: nan"),
    ("Adam", dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    ("Adam", dict(betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("Adam", dict(betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    ("Adam", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
    ("Adam", dict(betas=(0, 0.99)), ValueError, "betas must be either both floats or both Tensors"),
    ("Adam", dict(lr="tensor:[0.1,0.2]"), ValueError, "Tensor lr must be 1-element"),
    ("Adam", dict(lr="tensor:[0.1]", foreach=True), ValueError,
     "lr as a Tensor is not supported for capturable=False and foreach=True"),
    ("Adam", dict(betas=("tensor:[0.9]", 0.99)), ValueError,
     "betas must be either both floats or both Tensors"),
    ("Adam", dict(betas=("tensor:[0.9]", "tensor:[0.99]"), foreach=True), ValueError,
     "betas[0] as a Tensor is not supported for capturable=False and foreach=True"),
    ("Adam", dict(fused=True, differentiable=True), RuntimeError,
     "`fused` does not support `differentiable`"),
    ("AdamW", dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    ("AdamW", dict(weight_decay=-1e-2), ValueError, "Invalid weight_decay value: -0.01"),
    ("AdamW", dict(betas=(0.9, 1.5)), ValueError, "Invalid beta parameter at index 1: 1.5"),
    ("AdamW", dict(fused=True, foreach=True), RuntimeError,
     "`fused` and `foreach` cannot be `True` together."),
    ("Adagrad", dict(lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    ("Adagrad", dict(lr_decay=-1.0), ValueError, "Invalid lr_decay value: -1.0"),
    ("Adagrad", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), ValueError,
     "Invalid initial_accumulator_value value: -1.0"),
    ("Adagrad", dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    ("Adagrad", dict(lr="tensor:[0.1,0.2]"), ValueError, "Tensor lr must be 1-element"),
    ("Adagrad", dict(fused=True, foreach=True), RuntimeError,
     "`fused` and `foreach` cannot be `True` together."),
    ("Adadelta", dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    ("Adadelta", dict(rho=1.5), ValueError, "Invalid rho value: 1.5"),
    ("Adadelta", dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    ("Adadelta", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    ("Adamax", dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    ("Adamax", dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    ("Adamax", dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("Adamax", dict(betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1: 1.0"),
    ("Adamax", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    ("ASGD", dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    ("ASGD", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    ("ASGD", dict(lr="tensor:[0.1,0.2]"), ValueError, "Tensor lr must be 1-element"),
    ("NAdam", dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    ("NAdam", dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    ("NAdam", dict(betas=(-0.1, 0.9)), ValueError, "Invalid beta parameter at index 0: -0.1"),
    ("NAdam", dict(betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1: 1.0"),
    ("NAdam", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    ("NAdam", dict(momentum_decay=-1.0), ValueError, "Invalid momentum_decay value: -1.0"),
    ("RAdam", dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    ("RAdam", dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    ("RAdam", dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("RAdam", dict(betas=(0.9, -1.0)), ValueError, "Invalid beta parameter at index 1: -1.0"),
    ("RAdam", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    ("RMSprop", dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    ("RMSprop", dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    ("RMSprop", dict(momentum=-1.0), ValueError, "Invalid momentum value: -1.0"),
    ("RMSprop", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    ("RMSprop", dict(alpha=-1.0), ValueError, "Invalid alpha value: -1.0"),
    ("Rprop", dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    ("Rprop", dict(etas=(1.5, 1.2)), ValueError, "Invalid eta values: 1.5, 1.2"),
    ("Rprop", dict(etas=(0.5, 0.9)), ValueError, "Invalid eta values: 0.5, 0.9"),
    ("Rprop", dict(lr="tensor:[0.1,0.2]"), ValueError, "Tensor lr must be 1-element"),
]


def _materialise(value, tensor):
    """'tensor:[...]' marks a hyper-parameter given as an array / a torch tensor."""
    if isinstance(value, str) and value.startswith("tensor:"):
        return tensor(eval(value[len("tensor:"):]))  # literal lists only
    if isinstance(value, tuple):
        return tuple(_materialise(v, tensor) for v in value)
    return value


@pytest.mark.parametrize("cls,kwargs,exc,message", INVALID,
                         ids=[f"{c}-{i}" for i, (c, *_) in enumerate(INVALID)])
def test_invalid_hyperparameters_raise_torch_errors(cls, kwargs, exc, message):
    w = nbopt.Parameter(np.zeros(3))
    args = {k: _materialise(v, lambda x: np.array(x, np.float32)) for k, v in kwargs.items()}
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        getattr(nbopt, cls)([w], **args)
    if HAVE_TORCH:
        import torch

        t = torch.nn.Parameter(torch.zeros(3))
        targs = {k: _materialise(v, torch.tensor) for k, v in kwargs.items()}
        with pytest.raises(exc, match="^" + re.escape(message) + "$"):
            getattr(torch.optim, cls)([t], **targs)


def _setup(cls="Adam", **kwargs):
    rng = np.random.default_rng(0)
    a = nbopt.Parameter(rng.standard_normal((2, 3)))
    b = nbopt.Parameter(rng.standard_normal(4))
    c = nbopt.Parameter(rng.standard_normal((3,)))
    opt = getattr(nbopt, cls)([{"params": [a, b]}, {"params": [c], "lr": 0.1}], **kwargs)
    for p in (a, b, c):
        p.grad = np.ones_like(p)
    opt.step()                              # some state to protect
    return opt, (a, b, c)


def _snapshot(opt, params):
    return ([np.array(p) for p in params],
            {i: {k: np.array(v) for k, v in s.items()} for i, s in
             opt.state_dict()["state"].items()})


def _assert_unchanged(before, after):
    for x, y in zip(before[0], after[0]):
        np.testing.assert_array_equal(x, y)
    assert before[1].keys() == after[1].keys()
    for i in before[1]:
        assert before[1][i].keys() == after[1][i].keys()
        for k in before[1][i]:
            np.testing.assert_array_equal(before[1][i][k], after[1][i][k])


BAD_GRADS = [
    ("shape", lambda p: np.ones(p.size + 1), RuntimeError,
     r"param_groups\[1\]\['params'\]\[0\]: grad has shape \(4,\) but the parameter has shape \(3,\)"),
    ("dtype", lambda p: np.ones(p.shape, np.float32), RuntimeError,
     r"param_groups\[1\]\['params'\]\[0\]: grad has dtype float32 but the parameter has "
     r"dtype float64"),
    ("not an array", lambda p: [1.0, 2.0, 3.0], TypeError,
     r"param_groups\[1\]\['params'\]\[0\]: grad must be a numpy array or None, got list"),
]


ALL = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam",
       "RMSprop", "Rprop"]


def test_every_algorithm_is_exercised_here():
    assert set(ALL) == {c for c, *_ in INVALID} == {
        n for n in nbopt.__all__ if isinstance(getattr(nbopt, n), type)
        and issubclass(getattr(nbopt, n), nbopt.optimizer.ElementwiseOptimizer)}


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("what,make,exc,pattern", BAD_GRADS, ids=[b[0] for b in BAD_GRADS])
def test_bad_grad_raises_before_any_parameter_moves(cls, what, make, exc, pattern):
    kwargs = {"momentum": 0.9} if cls == "SGD" else {}
    opt, (a, b, c) = _setup(cls, **kwargs)
    a.grad, b.grad = np.full_like(a, 0.5), np.full_like(b, 0.5)   # group 0 is fine
    c.grad = make(c)                                              # group 1 is not
    before = _snapshot(opt, (a, b, c))
    with pytest.raises(exc, match=pattern):
        opt.step()
    _assert_unchanged(before, _snapshot(opt, (a, b, c)))
    # and the optimizer still works once the grad is fixed
    c.grad = np.ones_like(c)
    opt.step()
    assert not np.array_equal(np.array(a), before[0][0])


def test_non_float_parameter_with_grad_is_named():
    w = nbopt.Parameter(np.zeros(3))
    k = nbopt.Parameter(np.arange(3), requires_grad=False)
    opt = nbopt.SGD([w, k], lr=0.1)   # accepted, as torch accepts integer tensors
    w.grad = np.ones(3)
    opt.step()                         # k has no grad: skipped
    k.grad = np.ones(3, np.int64)
    w.grad = np.ones(3)
    before = np.array(w)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[1\]: SGD can only "
                                        r"optimize floating point and complex parameters, got dtype int64"):
        opt.step()
    np.testing.assert_array_equal(w, before)


def test_parameter_of_integers_cannot_require_grad():
    with pytest.raises(RuntimeError, match="Only arrays of floating point and complex dtype"):
        nbopt.Parameter(np.arange(3))


def test_amsgrad_turned_on_after_init_raises_keyerror_like_torch():
    opt, (a, b, c) = _setup("Adam")
    opt.param_groups[0]["amsgrad"] = True
    before = _snapshot(opt, (a, b, c))
    with pytest.raises(KeyError, match="max_exp_avg_sq"):
        opt.step()
    _assert_unchanged(before, _snapshot(opt, (a, b, c)))
    if HAVE_TORCH:
        import torch

        t = torch.nn.Parameter(torch.ones(3))
        o = torch.optim.Adam([t])
        t.grad = torch.ones(3)
        o.step()
        o.param_groups[0]["amsgrad"] = True
        with pytest.raises(KeyError, match="max_exp_avg_sq"):
            o.step()


def test_grad_with_another_memory_order_is_used_correctly():
    """A Fortran-ordered grad for a C-ordered parameter is valid input; element
    (i, j) of the grad must update element (i, j) of the parameter."""
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((3, 4))
    g = np.asfortranarray(rng.standard_normal((3, 4)))
    w = nbopt.Parameter(p0.copy())
    w.grad = g
    nbopt.SGD([w], lr=0.5).step()
    np.testing.assert_array_equal(w, p0 - 0.5 * np.ascontiguousarray(g))


def test_grad_replaced_in_place_between_steps_is_reread():
    w = nbopt.Parameter(np.zeros(3))
    w.grad = np.ones(3)
    opt = nbopt.SGD([w], lr=1.0)
    opt.step()
    w.grad[...] = 2.0                   # same object, new values
    opt.step()
    np.testing.assert_array_equal(w, -3.0 * np.ones(3))
    w.grad = np.full(3, 4.0)            # new object
    opt.step()
    np.testing.assert_array_equal(w, -7.0 * np.ones(3))


def test_deepcopy_keeps_trajectories_apart():
    opt, params = _setup("Adam")
    twin = copy.deepcopy(opt)
    assert twin.state_dict()["state"][0]["exp_avg"] is not opt.state_dict()["state"][0]["exp_avg"]
