"""Adafactor and Muon on device parameters against the CPU path (which
tests/test_adafactor.py and tests/test_muon.py check against torch 2.13).

Not bit for bit: the device reductions add in their own order (Adafactor's
row/column statistics, mean(R), ||p||, ||U||; Muon's norm and GEMMs), as
torch's CUDA kernels differ from its CPU ones.  Tolerances: Adafactor within
16 ulps (relative, per element) of the CPU path after 3 steps, measured
<= 3; Muon's momentum buffer bit for bit, its update within 3 % of the
largest update entry of the CPU path with ``MUON_PRODUCTS="blas"`` (bfloat16
noise; tiny matrices here agree exactly).  Runs on the CUDA simulator
(tests/test_cuda_tiers.py, 8 threads a block) and unchanged on a GPU
(tests/gpu/run.sh).
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

import nbopt
from nbopt import config
from nbopt.parameter import is_device_array

ADA_ULPS = 16
MUON_REL = 0.03


def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.array(x)


def _ulps(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.abs(a), np.finfo(dtype).tiny)
    return float(np.max(np.abs(a - b) / scale, initial=0.0) / np.finfo(dtype).eps)


def _values(rng, shapes, dtype):
    out = []
    for s in shapes:
        if s == "F":
            out.append(np.asfortranarray(rng.standard_normal((4, 3)).astype(dtype)))
        else:
            out.append(rng.standard_normal(s).astype(dtype))
    return out


def _grad_like(rng, v):
    g = rng.standard_normal(v.shape).astype(v.dtype)
    return np.asfortranarray(g) if v.flags.f_contiguous and not v.flags.c_contiguous else g


def _pair(cls, values, **options):
    cpu = [nbopt.Parameter(v.copy(order="K")) for v in values]
    dev = [nbopt.Parameter(cuda.to_device(v)) for v in values]
    return cpu, dev, cls(cpu, **options), cls(dev, **options)


def _step_both(rng, cpu, dev, oc, od, steps):
    for _ in range(steps):
        grads = [_grad_like(rng, np.asarray(p)) for p in cpu]
        for p, g in zip(cpu, grads):
            p.grad = g.copy(order="K")
        for p, g in zip(dev, grads):
            p.grad = cuda.to_device(g)
        oc.step()
        od.step()


# -- Adafactor --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.1, "maximize": True},
                                     {"foreach": True, "lr": 0.05}])
def test_adafactor_on_device_matches_the_cpu_path(dtype, options):
    rng = np.random.default_rng(1)
    values = _values(rng, [(3, 5), "F", (2, 2, 3), (4,), ()], dtype)
    cpu, dev, oc, od = _pair(nbopt.Adafactor, values, **options)
    _step_both(rng, cpu, dev, oc, od, 3)
    for a, b in zip(cpu, dev):
        assert _ulps(a, b.copy_to_host(), dtype) <= ADA_ULPS
        sa, sb = oc.state[a], od.state[b]
        assert sorted(sa) == sorted(sb)
        assert float(sb["step"]) == 3.0
        for key in sa:
            if key == "step":
                continue
            assert is_device_array(sb[key]), key
            assert tuple(sb[key].shape) == sa[key].shape, key
            assert _ulps(sa[key], _host(sb[key]), dtype) <= ADA_ULPS, key


def test_adafactor_checkpoints_and_mixed_devices():
    rng = np.random.default_rng(2)
    values = _values(rng, [(3, 4), (5,)], np.float32)
    host = [nbopt.Parameter(rng.standard_normal((2, 3)).astype(np.float32))]
    dev = [nbopt.Parameter(cuda.to_device(v)) for v in values]
    opt = nbopt.Adafactor([{"params": dev}, {"params": host}], lr=0.05)
    grads = [[_grad_like(rng, v) for v in values + [np.asarray(host[0])]] for _ in range(3)]

    def assign(params, gs):
        for p, g in zip(params, gs):
            p.grad = cuda.to_device(g) if isinstance(p, nbopt.DeviceParameter) else g.copy()

    assign(dev + host, grads[0])
    opt.step()
    sd = opt.state_dict()
    # a new optimizer over copies, loaded from the state dict (device state
    # arrays) and from its host copy: both continue as the original
    copies = [nbopt.Parameter(cuda.to_device(p.copy_to_host())) for p in dev]
    hcopy = [nbopt.Parameter(np.array(host[0]))]
    again = nbopt.Adafactor([{"params": copies}, {"params": hcopy}], lr=0.05)
    host_sd = {"state": {k: {n: _host(v) for n, v in s.items()} for k, s in sd["state"].items()},
               "param_groups": sd["param_groups"]}
    again.load_state_dict(host_sd)
    for gs in grads[1:]:
        assign(dev + host, gs)
        assign(copies + hcopy, gs)
        opt.step()
        again.step()
    for a, b in zip(dev + host, copies + hcopy):
        np.testing.assert_array_equal(_host(a), _host(b))
    for p in copies:
        assert all(is_device_array(v) for k, v in again.state[p].items() if k != "step")
    assert isinstance(again.state[hcopy[0]]["row_var"], np.ndarray)


def test_adafactor_device_gradient_errors():
    p = nbopt.Parameter(cuda.to_device(np.ones((2, 3), np.float32)))
    opt = nbopt.Adafactor([p])
    p.grad = np.ones((2, 3), np.float32)
    with pytest.raises(RuntimeError, match="on cpu"):
        opt.step()
    p.grad = cuda.to_device(np.ones((3, 2), np.float32))
    with pytest.raises(RuntimeError, match="shape"):
        opt.step()
    assert not opt.state


# -- Muon -------------------------------------------------------------------------

@pytest.fixture
def blas():
    old = config.MUON_PRODUCTS
    config.MUON_PRODUCTS = "blas"
    yield
    config.MUON_PRODUCTS = old


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [{"ns_steps": 2},
                                     {"ns_steps": 1, "nesterov": False,
                                      "adjust_lr_fn": "match_rms_adamw"}])
def test_muon_on_device_matches_the_cpu_path(blas, dtype, options):
    rng = np.random.default_rng(3)
    values = _values(rng, [(3, 5), (5, 3)], dtype)
    cpu, dev, oc, od = _pair(nbopt.Muon, values, lr=0.05, **options)
    before = [np.array(v) for v in values]
    _step_both(rng, cpu, dev, oc, od, 2)
    for a, b, v in zip(cpu, dev, before):
        update = np.max(np.abs(np.asarray(a) - v))
        assert np.max(np.abs(b.copy_to_host() - np.asarray(a))) <= MUON_REL * update
        buf = od.state[b]["momentum_buffer"]
        assert is_device_array(buf) and sorted(od.state[b]) == ["momentum_buffer"]
        np.testing.assert_allclose(buf.copy_to_host(), oc.state[a]["momentum_buffer"],
                                   rtol=0, atol=0)


def test_muon_checkpoints_and_mixed_devices(blas):
    rng = np.random.default_rng(4)
    d = nbopt.Parameter(cuda.to_device(rng.standard_normal((3, 4)).astype(np.float32)))
    h = nbopt.Parameter(rng.standard_normal((4, 3)).astype(np.float32))
    opt = nbopt.Muon([d, h], lr=0.05, ns_steps=1)
    gd, gh = rng.standard_normal((3, 4)).astype(np.float32), \
        rng.standard_normal((4, 3)).astype(np.float32)
    d.grad, h.grad = cuda.to_device(gd), gh
    opt.step()
    sd = opt.state_dict()
    d2 = nbopt.Parameter(cuda.to_device(d.copy_to_host()))
    h2 = nbopt.Parameter(np.array(h))
    again = nbopt.Muon([d2, h2], lr=0.05, ns_steps=1)
    again.load_state_dict({"state": {k: {n: _host(v) for n, v in s.items()}
                                     for k, s in sd["state"].items()},
                           "param_groups": sd["param_groups"]})
    for opt_, (p, q) in ((opt, (d, h)), (again, (d2, h2))):
        p.grad, q.grad = cuda.to_device(gd), gh.copy()
        opt_.step()
    np.testing.assert_array_equal(d.copy_to_host(), d2.copy_to_host())
    np.testing.assert_array_equal(np.asarray(h), np.asarray(h2))
    assert is_device_array(again.state[d2]["momentum_buffer"])
    d.grad = np.ones((3, 4), np.float32)
    with pytest.raises(RuntimeError, match="on cpu"):
        opt.step()
