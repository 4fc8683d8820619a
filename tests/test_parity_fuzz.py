"""Random option combinations of every element-wise algorithm against live
torch 2.13 (float64), beyond the fixed rows of ``cases.py``: two param groups
with their own options, random sizes, gradients that are None on random
steps, and a mid-run ``state_dict()`` reload.  Runs only when torch is
importable.  The examples are derandomised (the same ones on every run);
``NBOPT_FUZZ_EXAMPLES=2000`` runs a longer, random sweep.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import nbopt
from conftest import HAVE_TORCH
from trajectory import reloaded

pytestmark = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed "
                                "(live comparison only)")

_unit = st.floats(0.0, 0.999)
_lr = st.floats(1e-4, 0.3)
_eps = st.sampled_from([0.0, 1e-10, 1e-8, 1e-6, 1e-3])
_wd = st.sampled_from([0.0, 0.0, 1e-4, 1e-2, 0.1])
_flag = st.booleans()


def _betas():
    return st.tuples(_unit, _unit)


@st.composite
def _sgd(draw):
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9, draw(_unit)]))
    nesterov = momentum > 0 and draw(_flag)
    dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.1, 0.5]))
    return dict(lr=draw(_lr), momentum=momentum, dampening=dampening, nesterov=nesterov,
                weight_decay=draw(_wd), maximize=draw(_flag))


@st.composite
def _rprop(draw):
    return dict(lr=draw(_lr), etas=(draw(st.floats(0.1, 0.9)), draw(st.floats(1.05, 2.0))),
                step_sizes=(draw(st.sampled_from([0.0, 1e-6, 1e-3])),
                            draw(st.sampled_from([1.0, 50.0]))),
                maximize=draw(_flag))


# (class name, options strategy): torch's valid domain of every option
ALGORITHMS = [
    ("SGD", _sgd()),
    ("Adam", st.fixed_dictionaries(dict(lr=_lr, betas=_betas(), eps=_eps, weight_decay=_wd,
                                        amsgrad=_flag, maximize=_flag))),
    ("AdamW", st.fixed_dictionaries(dict(lr=_lr, betas=_betas(), eps=_eps, weight_decay=_wd,
                                         amsgrad=_flag, maximize=_flag))),
    ("Adagrad", st.fixed_dictionaries(dict(
        lr=_lr, lr_decay=st.sampled_from([0.0, 1e-3, 0.1]), weight_decay=_wd,
        initial_accumulator_value=st.sampled_from([0.0, 0.1, 1.0]),
        eps=st.sampled_from([1e-10, 1e-6, 1e-3]), maximize=_flag))),
    ("Adadelta", st.fixed_dictionaries(dict(lr=st.floats(0.01, 1.0), rho=_unit,
                                            eps=st.sampled_from([1e-8, 1e-6, 1e-3]),
                                            weight_decay=_wd, maximize=_flag))),
    ("Adamax", st.fixed_dictionaries(dict(lr=_lr, betas=_betas(),
                                          eps=st.sampled_from([1e-10, 1e-8, 1e-3]),
                                          weight_decay=_wd, maximize=_flag))),
    ("ASGD", st.fixed_dictionaries(dict(lr=_lr, lambd=st.sampled_from([0.0, 1e-4, 0.05]),
                                        alpha=st.sampled_from([0.25, 0.75, 1.5]),
                                        t0=st.sampled_from([0.0, 3.0, 1e6]),
                                        weight_decay=_wd, maximize=_flag))),
    ("NAdam", st.fixed_dictionaries(dict(lr=_lr, betas=_betas(),
                                         eps=st.sampled_from([1e-10, 1e-8, 1e-3]),
                                         weight_decay=_wd,
                                         momentum_decay=st.sampled_from([0.0, 4e-3, 0.5]),
                                         decoupled_weight_decay=_flag, maximize=_flag))),
    ("RAdam", st.fixed_dictionaries(dict(lr=_lr, betas=_betas(),
                                         eps=st.sampled_from([1e-10, 1e-8, 1e-3]),
                                         weight_decay=_wd, decoupled_weight_decay=_flag,
                                         maximize=_flag))),
    # alpha >= 0.5: with alpha near 0, centered RMSprop's square_avg - grad_avg**2
    # cancels almost completely (about 1/alpha), and torch's CPU sqrt (MKL's, not
    # correctly rounded: 1 ulp off on ~1% of float64 inputs) then differs by far
    # more than 1e-10 after a few steps
    ("RMSprop", st.fixed_dictionaries(dict(lr=st.floats(1e-4, 0.05), alpha=st.floats(0.5, 0.999),
                                           eps=st.sampled_from([1e-8, 1e-6, 1e-3]),
                                           weight_decay=_wd,
                                           momentum=st.sampled_from([0.0, 0.5, 0.9]),
                                           centered=_flag, maximize=_flag))),
    ("Rprop", _rprop()),
]
STEPS = 12
RELOAD_AT = 6
SWEEP = int(os.environ.get("NBOPT_FUZZ_EXAMPLES", "0"))


@st.composite
def _problem(draw, options):
    sizes = draw(st.lists(st.integers(1, 9), min_size=1, max_size=3))
    group0 = draw(options)
    group1 = draw(options)
    seed = draw(st.integers(0, 2**32 - 1))
    # which parameter has no gradient at which step
    missing = draw(st.lists(st.tuples(st.integers(0, STEPS - 1), st.integers(0, len(sizes))),
                            max_size=4))
    return sizes, group0, group1, seed, set(missing)


def _run(lib, cls, sizes, group0, group1, seed, missing, dtype="float64"):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(n).astype(dtype) for n in sizes + [3]]
    grads = [[rng.standard_normal(v.shape).astype(dtype) for v in values]
             for _ in range(STEPS)]
    if lib == "torch":
        import torch

        params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
        wrap, unwrap, module = torch.from_numpy, (lambda t: t.detach().numpy()), torch.optim
    else:
        params = [nbopt.Parameter(v.copy()) for v in values]
        wrap, unwrap, module = (lambda a: a), np.asarray, nbopt

    def make():
        groups = [{"params": params[:-1]}, {"params": params[-1:], **group1}]
        return getattr(module, cls)(groups, **group0)

    opt = make()
    for step in range(STEPS):
        if step == RELOAD_AT:
            opt = reloaded(opt, make)
        for k, p in enumerate(params):
            p.grad = None if (step, k) in missing else wrap(grads[step][k].copy())
        opt.step()
    return [unwrap(p).copy() for p in params]


TOLERANCES = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cls,options", ALGORITHMS, ids=[a[0] for a in ALGORITHMS])
def test_random_options_match_torch(cls, options, dtype):
    @settings(max_examples=SWEEP or 25, deadline=None, derandomize=not SWEEP,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_problem(options))
    def check(problem):
        sizes, group0, group1, seed, missing = problem
        ours = _run("nbopt", cls, sizes, group0, group1, seed, missing, dtype)
        theirs = _run("torch", cls, sizes, group0, group1, seed, missing, dtype)
        for have, want in zip(ours, theirs):
            assert have.dtype == want.dtype
            np.testing.assert_allclose(have, want, err_msg=f"{cls} {group0} / {group1}",
                                       **TOLERANCES[dtype])

    check()
