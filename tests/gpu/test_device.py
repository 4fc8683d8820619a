"""Device parameters through the whole optimizer API (issue 12), against the
CPU path, which the parity suite checks against torch 2.13.

Runs on the CUDA simulator (tier 1: ``NUMBA_ENABLE_CUDASIM=1`` set before
numba is imported; tests/test_cuda_tiers.py runs this file in a subprocess)
and unchanged on a real GPU (tier 3: tests/gpu/run.sh).  Every row of the
parity table (tests/cases.py) x float32/float64/complex64 steps device
parameters and CPU copies side by side: the results are bit-identical (the
device computes the same IEEE operations; under the simulator the Python
``fma`` reference rounds once, as the compiled one does).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from numba import cuda  # noqa: E402

import nbopt  # noqa: E402
from cases import CASES, SHAPES, VARIANT_CASES, grad_is_none  # noqa: E402
from gpu.kernel_cases import ulps  # noqa: E402

STEPS = 6
ALL = CASES + VARIANT_CASES
DTYPES = ("float32", "float64", "complex64")


def _values(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return np.asarray(x, dtype)


def _lr(case, lr):
    return np.array([lr], np.float64) if case.tensor_lr else lr


def _options(case):
    options = dict(case.options)
    if case.tensor_betas and "betas" not in options:
        options["betas"] = (np.array(0.9, np.float32), np.array(0.999, np.float32))
    if "lr" in options:
        options["lr"] = _lr(case, options["lr"])
    return options


def _pair(case, dtype, seed=0):
    """The same optimizer over device parameters and over CPU copies."""
    rng = np.random.default_rng(seed)
    hosts = [[_values(rng, s, dtype) for s in shapes] for shapes in SHAPES]
    dev = [[nbopt.Parameter(cuda.to_device(h)) for h in g] for g in hosts]
    cpu = [[nbopt.Parameter(h.copy()) for h in g] for g in hosts]
    cls = getattr(nbopt, case.cls)
    make = [cls([{"params": g[0]}, {"params": g[1], **case.group1}], **_options(case))
            for g in ((dev[0], dev[1]), (cpu[0], cpu[1]))]
    return make[0], dev, make[1], cpu, rng


def _grads(rng, dev, cpu, step, dtype):
    for gi, (dg, cg) in enumerate(zip(dev, cpu)):
        for k, (d, c) in enumerate(zip(dg, cg)):
            if grad_is_none(gi, k, step):
                d.grad = c.grad = None
            else:
                g = _values(rng, c.shape, dtype)
                c.grad = g
                d.grad = cuda.to_device(g)


def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.asarray(x)


def _real(x):
    x = np.asarray(x)
    return x.view(np.finfo(x.dtype).dtype) if x.dtype.kind == "c" else x


def _assert_same(dev_opt, dev, cpu_opt, cpu):
    for d, c in zip(sum(dev, []), sum(cpu, [])):
        assert ulps(_real(d.copy_to_host()), _real(c)) == 0
        ds, cs = dev_opt.state[d], cpu_opt.state[c]
        assert ds.keys() == cs.keys()
        for key in cs:
            assert ulps(_real(_host(ds[key])), _real(np.asarray(cs[key]))) == 0, key


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_device_steps_equal_the_cpu_path(case, dtype):
    if case.options.get("fused") and dtype.startswith("complex"):
        pytest.skip("torch's fused kernels refuse complex parameters (so does the CPU path)")
    dev_opt, dev, cpu_opt, cpu, rng = _pair(case, dtype)
    for step in range(STEPS):
        _grads(rng, dev, cpu, step, dtype)
        dev_opt.step()
        cpu_opt.step()
    _assert_same(dev_opt, dev, cpu_opt, cpu)
    # device state stays on the device, as torch keeps it on the param's
    # device; the step counts are host scalars, as torch's (not capturable)
    some = dev_opt.state[dev[0][0]]
    for key, value in some.items():
        if isinstance(value, np.ndarray):
            assert value.ndim == 0, key
        else:
            assert nbopt.parameter.is_device_array(value), key


def test_in_place_on_the_users_array():
    x = cuda.to_device(np.ones(5, np.float32))
    w = nbopt.Parameter(x)
    assert isinstance(w, nbopt.DeviceParameter) and w.device == "cuda:0"
    w.grad = cuda.to_device(np.full(5, 2, np.float32))
    nbopt.SGD([w], lr=0.25).step()
    np.testing.assert_array_equal(x.copy_to_host(), np.full(5, 0.5, np.float32))


def test_checkpoint_round_trip_and_cross_device(tmp_path):
    case = next(c for c in CASES if c.cls == "Adam" and c.options.get("amsgrad"))
    dev_opt, dev, cpu_opt, cpu, rng = _pair(case, "float32")
    for step in range(3):
        _grads(rng, dev, cpu, step, "float32")
        dev_opt.step()
        cpu_opt.step()
    path = str(tmp_path / "ckpt.npz")
    nbopt.save(dev_opt.state_dict(), path)          # device state copied to host
    loaded = nbopt.load(path)
    assert all(isinstance(v, np.ndarray) for s in loaded["state"].values()
               for v in s.values())
    # a fresh device optimizer from the file, a CPU one from the device
    # state dict, a device one from the CPU state dict: all continue alike
    fresh_dev, dev2, fresh_cpu, cpu2, _ = _pair(case, "float32", seed=0)
    for d2, d in zip(sum(dev2, []), sum(dev, [])):
        d2.data.copy_to_device(d.data)
    for c2, c in zip(sum(cpu2, []), sum(cpu, [])):
        c2[...] = c
    fresh_dev.load_state_dict(loaded)
    fresh_cpu.load_state_dict(dev_opt.state_dict())
    dev_opt.load_state_dict(cpu_opt.state_dict())
    for d in sum(dev2, []):
        assert nbopt.parameter.is_device_array(fresh_dev.state[d]["exp_avg"])
    for step in range(3, 6):
        _grads(rng, dev, cpu, step, "float32")
        for d2, d in zip(sum(dev2, []), sum(dev, [])):
            d2.grad = d.grad
        for c2, c in zip(sum(cpu2, []), sum(cpu, [])):
            c2.grad = c.grad
        for o in (dev_opt, cpu_opt, fresh_dev, fresh_cpu):
            o.step()
    _assert_same(dev_opt, dev, cpu_opt, cpu)
    _assert_same(fresh_dev, dev2, fresh_cpu, cpu2)
    _assert_same(fresh_dev, dev2, cpu_opt, cpu)


def test_mixed_cpu_and_device_parameters_in_one_group():
    rng = np.random.default_rng(1)
    a, b = _values(rng, (4, 3), "float32"), _values(rng, (6,), "float64")
    dev_a = nbopt.Parameter(cuda.to_device(a))
    cpu_b = nbopt.Parameter(b.copy())
    ref_a, ref_b = nbopt.Parameter(a.copy()), nbopt.Parameter(b.copy())
    opt = nbopt.AdamW([dev_a, cpu_b], lr=0.01, weight_decay=0.1)
    ref = nbopt.AdamW([ref_a, ref_b], lr=0.01, weight_decay=0.1)
    for _ in range(4):
        ga, gb = _values(rng, (4, 3), "float32"), _values(rng, (6,), "float64")
        dev_a.grad, cpu_b.grad, ref_a.grad, ref_b.grad = cuda.to_device(ga), gb, ga, gb.copy()
        opt.step()
        ref.step()
    assert ulps(dev_a.copy_to_host(), ref_a) == 0
    assert ulps(np.asarray(cpu_b), ref_b) == 0


def test_scheduler_drives_a_device_optimizer():
    case = next(c for c in CASES if c.cls == "SGD" and c.options.get("momentum"))
    dev_opt, dev, cpu_opt, cpu, rng = _pair(case, "float32")
    scheds = [nbopt.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10)
              for o in (dev_opt, cpu_opt)]
    for step in range(5):
        _grads(rng, dev, cpu, step, "float32")
        for o, s in zip((dev_opt, cpu_opt), scheds):
            o.step()
            s.step()
    _assert_same(dev_opt, dev, cpu_opt, cpu)


def test_state_edits_are_followed():
    case = next(c for c in CASES if c.cls == "Adam")
    dev_opt, dev, cpu_opt, cpu, rng = _pair(case, "float64")
    for step in range(2):
        _grads(rng, dev, cpu, step, "float64")
        dev_opt.step()
        cpu_opt.step()
    new = np.full(SHAPES[0][0], 0.5)
    dev_opt.state[dev[0][0]]["exp_avg"] = cuda.to_device(new)     # rebinding, on the device
    cpu_opt.state[cpu[0][0]]["exp_avg"] = new.copy()
    dev_opt.state[dev[0][1]]["exp_avg_sq"] = np.full(SHAPES[0][1], 0.25)   # a host array
    cpu_opt.state[cpu[0][1]]["exp_avg_sq"] = np.full(SHAPES[0][1], 0.25)
    dev_opt.state[dev[1][0]].clear()
    cpu_opt.state[cpu[1][0]].clear()
    for step in range(2, 5):
        _grads(rng, dev, cpu, step, "float64")
        dev_opt.step()
        cpu_opt.step()
    _assert_same(dev_opt, dev, cpu_opt, cpu)


def test_new_gradient_arrays_every_step_stay_on_the_steady_path():
    rng = np.random.default_rng(2)
    hosts = [_values(rng, (64,), "float32") for _ in range(3)]
    dev = [nbopt.Parameter(cuda.to_device(h)) for h in hosts]
    cpu = [nbopt.Parameter(h.copy()) for h in hosts]
    opts = [nbopt.Adam(p, lr=0.01) for p in (dev, cpu)]
    for step in range(4):
        for d, c in zip(dev, cpu):
            g = _values(rng, (64,), "float32")
            c.grad, d.grad = g, cuda.to_device(g)
        for o in opts:
            o.step()
    fg = opts[0]._flat[0].flat[0]
    assert fg._steady is not None
    for d, c in zip(dev, cpu):
        assert ulps(d.copy_to_host(), c) == 0


def test_zero_grad_keeps_device_arrays():
    w = nbopt.Parameter(cuda.to_device(np.ones((2, 3), np.float32)))
    g = cuda.to_device(np.ones((2, 3), np.float32))
    w.grad = g
    opt = nbopt.SGD([w], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert w.grad is g
    np.testing.assert_array_equal(g.copy_to_host(), 0)
    opt.zero_grad()
    assert w.grad is None


@pytest.mark.parametrize("grad, error, match", [
    (np.ones(4, np.float32), RuntimeError, "the gradient is on cpu but the parameter is on cuda:0"),
    ("device-shape", RuntimeError, r"grad has shape \(2, 2\) but the parameter has shape \(4,\)"),
    ("device-dtype", RuntimeError, "grad has dtype float64 but the parameter has dtype float32"),
    ([1.0, 2.0, 3.0, 4.0], TypeError, "grad must be a CUDA array or None"),
])
def test_bad_gradients_raise_before_anything_changes(grad, error, match):
    if isinstance(grad, str) and grad == "device-shape":
        grad = cuda.to_device(np.ones((2, 2), np.float32))
    elif isinstance(grad, str):
        grad = cuda.to_device(np.ones(4, np.float64))
    good = nbopt.Parameter(cuda.to_device(np.ones(4, np.float32)))
    bad = nbopt.Parameter(cuda.to_device(np.ones(4, np.float32)))
    good.grad = cuda.to_device(np.ones(4, np.float32))
    bad.grad = grad
    opt = nbopt.Adam([good, bad], lr=0.1)
    with pytest.raises(error, match=match):
        opt.step()
    np.testing.assert_array_equal(good.copy_to_host(), 1)
    assert not opt.state


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
                    reason="builds a __cuda_array_interface__ over host memory (simulator only)")
def test_any_cuda_array_interface_object_is_a_parameter_without_copy():
    host = np.arange(6, dtype=np.float32)

    class Foreign:     # what CuPy and torch CUDA tensors expose
        __cuda_array_interface__ = dict(shape=(6,), typestr="<f4", strides=None,
                                        data=(host.ctypes.data, False), version=3)

    w = nbopt.Parameter(Foreign())
    w.grad = Foreign()
    nbopt.SGD([w], lr=0.5).step()
    np.testing.assert_array_equal(host, np.arange(6, dtype=np.float32) * np.float32(0.5))


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_device_arena_is_one_segment_and_equals_the_cpu_arena(dtype):
    rng = np.random.default_rng(3)
    values = [_values(rng, s, dtype) for s in [(3, 4), (5,), (2, 3)]]
    dev = nbopt.ParameterArena(values, dtype=dtype, device="cuda")
    cpu = nbopt.ParameterArena(values, dtype=dtype)
    assert dev.device == "cuda:0" and all(isinstance(p, nbopt.DeviceParameter) for p in dev)
    opts = [nbopt.NAdam(a.params, lr=0.01, weight_decay=0.1) for a in (dev, cpu)]
    for _ in range(4):
        g = _values(rng, (dev.grad.shape[0],), dtype)
        dev.grad.copy_to_device(g)
        cpu.grad[...] = g
        for o in opts:
            o.step()
    fg = opts[0]._flat[0].flat[0]
    assert fg._steady is not None and len(fg._steady.seg) == 1      # one segment, one launch
    assert ulps(_real(dev.data.copy_to_host()), _real(cpu.data)) == 0
    dev.zero_grad()
    np.testing.assert_array_equal(dev.grad.copy_to_host(), 0)


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
                    reason="builds a __cuda_array_interface__ over host memory (simulator only)")
@pytest.mark.parametrize("make", [lambda a: a, lambda a: a.T, lambda a: a[:, ::2],
                                  lambda a: a[:1], lambda a: a[:, :1], lambda a: a.reshape(-1),
                                  lambda a: np.asfortranarray(a)])
def test_describe_reads_the_interface_like_numpy(make):
    from nbopt.kernels._cuda import describe

    host = make(np.arange(12, dtype=np.float32).reshape(3, 4))

    class Foreign:
        __cuda_array_interface__ = dict(
            shape=host.shape, typestr="<f4", data=(host.ctypes.data, False), version=3,
            strides=None if host.flags.c_contiguous else host.strides)

    shape, dtype, addr, c, f = describe(Foreign())
    assert (shape, dtype, addr) == (host.shape, host.dtype, host.ctypes.data)
    assert (c, f) == (host.flags.c_contiguous, host.flags.f_contiguous)


class _Model:
    """The swa_utils model protocol over given parameters (and host buffers)."""

    def __init__(self, params, buffers=()):
        self._params, self._buffers = list(params), list(buffers)
        self.training = True

    def parameters(self):
        return iter(self._params)

    def buffers(self):
        return iter(self._buffers)

    def modules(self):
        return iter([self])

    def train(self, mode=True):
        self.training = mode
        return self


@pytest.mark.parametrize("how", ["default", "swa_multi", "ema", "avg_fn"])
@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_averaged_model_averages_on_the_device_as_on_the_cpu(how, dtype):
    from nbopt.swa_utils import AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn

    rng = np.random.default_rng(4)
    hosts = [_values(rng, s, dtype) for s in [(3, 4), (5,)]]
    dev = _Model([nbopt.Parameter(cuda.to_device(h)) for h in hosts])
    cpu = _Model([nbopt.Parameter(h.copy()) for h in hosts])
    options = {"default": {}, "swa_multi": {"multi_avg_fn": get_swa_multi_avg_fn()},
               "ema": {"multi_avg_fn": get_ema_multi_avg_fn(0.9)}}.get(how)
    if options is None:
        # a custom avg_fn: on the device it receives numba device arrays
        def avg_fn(avg, cur, n):
            a, c = _host(avg), _host(cur)
            return a + (c - a) / (int(n) + 1)
        options = {"avg_fn": avg_fn}
    averaged = [AveragedModel(m, **options) for m in (dev, cpu)]
    first = next(averaged[0].module.parameters())
    assert isinstance(first, nbopt.DeviceParameter) and first is not dev._params[0]
    for _ in range(4):
        for d, c in zip(dev._params, cpu._params):
            new = _values(rng, c.shape, dtype)
            c[...] = new
            d.data.copy_to_device(new)
        for a, m in zip(averaged, (dev, cpu)):
            a.update_parameters(m)
    for d, c in zip(averaged[0].module.parameters(), averaged[1].module.parameters()):
        assert ulps(_real(d.copy_to_host()), _real(np.asarray(c))) == 0


def test_one_launch_per_group_device_and_dtype(monkeypatch):
    from nbopt.kernels._common import CudaKernel

    launches = []
    original = CudaKernel.__call__

    def counting(self, blocks, threads, *args):
        launches.append(self.loop.__name__)
        return original(self, blocks, threads, *args)

    monkeypatch.setattr(CudaKernel, "__call__", counting)
    rng = np.random.default_rng(5)
    f32 = [nbopt.Parameter(cuda.to_device(_values(rng, (7,), "float32"))) for _ in range(40)]
    f64 = [nbopt.Parameter(cuda.to_device(_values(rng, (3,), "float64"))) for _ in range(5)]
    opt = nbopt.Adam(f32 + f64, lr=0.01)
    for _ in range(3):
        for p in f32 + f64:
            p.grad = cuda.to_device(_values(rng, p.shape, p.dtype))
        launches.clear()
        opt.step()
        assert launches == ["adam_cuda_segments"] * 2      # 45 arrays, two dtypes
