"""8-bit optimizers (issue 18) on device parameters, against the CPU path
(which tests/test_optim8bit.py checks against the paper's algorithm and
bitsandbytes).

Bit for bit: the device kernel runs the CPU kernels' element functions and
encoder, and takes each block's absmax as an integer maximum of float32 bit
patterns, which no reduction order changes; so parameters, codes, absmax and
float state are identical to the CPU path's (absmax too, not within an ulp).
Runs on the CUDA simulator (tests/test_cuda_tiers.py: 8 threads a block and
chunks of one quantization block, so that a block's threads stride and
reduce) and unchanged on a GPU (tests/gpu/run.sh).  Sizes are small: a
simulated thread is slow.
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

import nbopt
from nbopt.optim.optim8bit import dequantize_state_dict
from nbopt.parameter import is_device_array

OPTIONS = {
    "Adam8bit": {"lr": 1e-2, "weight_decay": 0.1},
    "AdamW8bit": {"lr": 1e-2, "maximize": True},
    "SGD8bit": {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    "RMSprop8bit": {"lr": 1e-3},
    "Adagrad8bit": {"lr": 1e-2, "initial_accumulator_value": 0.1},
}
MIN = 64        # min_8bit_size: (300,) and (2, 100) quantized, (40,) float state
SHAPES = [(300,), (2, 100), (40,)]


def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.array(x)


def _values(rng, shapes, dtype):
    return [(rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2, s)).astype(dtype)
            for s in shapes]


def _pair(name, values, **extra):
    options = {**OPTIONS[name], "min_8bit_size": MIN, **extra}
    cpu = [nbopt.Parameter(v.copy()) for v in values]
    dev = [nbopt.Parameter(cuda.to_device(v)) for v in values]
    cls = getattr(nbopt, name)
    return cpu, dev, cls(cpu, **options), cls(dev, **options)


def _grads(rng, cpu, dev, skip=None):
    for i, (c, d) in enumerate(zip(cpu, dev)):
        if i == skip:
            c.grad = d.grad = None
            continue
        g = _values(rng, [c.shape], c.dtype)[0]
        c.grad = g
        d.grad = cuda.to_device(g)


def _assert_same(oc, cpu, od, dev):
    for c, d in zip(cpu, dev):
        np.testing.assert_array_equal(_host(d), np.asarray(c))
        sc, sd = oc.state[c], od.state[d]
        assert sc.keys() == sd.keys()
        for key, v in sc.items():
            got = _host(sd[key])
            assert got.dtype == v.dtype and got.shape == v.shape, key
            np.testing.assert_array_equal(got, v, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_device_steps_equal_the_cpu_path(name, dtype):
    rng = np.random.default_rng(0)
    cpu, dev, oc, od = _pair(name, _values(rng, SHAPES, dtype))
    for step in range(4):
        # step counts differ from the second step on; the last step reuses
        # the tables of the one before (new gradient arrays patched in)
        _grads(rng, cpu, dev, skip=1 if step == 1 else None)
        oc.step()
        od.step()
    _assert_same(oc, cpu, od, dev)
    # codes, absmax and float state on the device; step and the map on the host
    for d in dev:
        for key, value in od.state[d].items():
            assert is_device_array(value) == key.startswith(("state", "absmax")), key
    assert od.state[dev[0]]["state1"].dtype == np.uint8
    assert od.state[dev[2]]["state1"].dtype == dtype
    assert float(od.state[dev[1]]["step"]) == 3.0


@pytest.mark.parametrize("threads, chunk", [(3, 600), (32, 4096), (1, 16)])
def test_any_launch_shape_gives_the_same_step(threads, chunk, monkeypatch):
    """Threads per block that are not a power of two (the absmax reduction),
    one thread, several quantization blocks per chunk (a block's loop)."""
    from nbopt import config

    monkeypatch.setattr(config, "CUDA_THREADS", threads)
    monkeypatch.setattr(config, "CUDA_CHUNK_SIZE", chunk)
    rng = np.random.default_rng(6)
    cpu, dev, oc, od = _pair("Adam8bit", _values(rng, [(700,), (40,)], np.float32))
    for _ in range(2):
        _grads(rng, cpu, dev)
        oc.step()
        od.step()
    _assert_same(oc, cpu, od, dev)


def test_a_nan_moment_makes_its_block_nan_as_on_the_cpu():
    rng = np.random.default_rng(1)
    cpu, dev, oc, od = _pair("Adam8bit", _values(rng, [(300,)], np.float32))
    g = rng.standard_normal(300).astype(np.float32)
    g[260] = np.nan
    cpu[0].grad, dev[0].grad = g, cuda.to_device(g)
    oc.step()
    od.step()
    _assert_same(oc, cpu, od, dev)
    absmax = _host(od.state[dev[0]]["absmax1"])
    assert np.isnan(absmax[1]) and np.isfinite(absmax[0])


def test_mixed_cpu_and_device_parameters_one_launch_per_group_device_dtype(monkeypatch):
    from nbopt.kernels import quantized

    launches = []
    kernel = quantized.step8_cuda

    def counting(blocks, threads, table, *args):
        launches.append(table.shape[0])
        return kernel(blocks, threads, table, *args)

    monkeypatch.setattr(quantized, "step8_cuda", counting)
    rng = np.random.default_rng(2)
    values = _values(rng, [(300,), (40,), (300,), (300,)], np.float32)
    values.append(rng.standard_normal(100))                     # float64
    on_device = [True, True, False, True, True]
    params = [nbopt.Parameter(cuda.to_device(v) if d else v.copy())
              for v, d in zip(values, on_device)]
    ref = [nbopt.Parameter(v.copy()) for v in values]
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 1e-3}]
    opt = nbopt.AdamW8bit(groups, lr=1e-2, min_8bit_size=MIN)
    ref_opt = nbopt.AdamW8bit([{"params": ref[:3]}, {"params": ref[3:], "lr": 1e-3}], lr=1e-2,
                              min_8bit_size=MIN)
    for step in range(3):
        launches.clear()
        for p, r in zip(params, ref):
            g = _values(rng, [r.shape], r.dtype)[0]
            if step == 2:       # written in place: a steady step, nothing uploaded but scalars
                r.grad[...] = g
                if isinstance(p, nbopt.DeviceParameter):
                    p.grad.copy_to_device(g)
                else:
                    p.grad[...] = g
                continue
            r.grad = g
            p.grad = cuda.to_device(g) if isinstance(p, nbopt.DeviceParameter) else g.copy()
        opt.step()
        ref_opt.step()
        # group 0: two device float32 params; group 1: float32 and float64
        assert launches == [2, 1, 1]
    _assert_same(ref_opt, ref, opt, params)
    assert isinstance(opt.state[params[2]]["state1"], np.ndarray)


def test_state_dict_round_trips_between_devices_and_files(tmp_path):
    rng = np.random.default_rng(3)
    values = _values(rng, SHAPES, np.float32)
    cpu, dev, oc, od = _pair("Adam8bit", values)
    for _ in range(2):
        _grads(rng, cpu, dev)
        oc.step()
        od.step()
    sd = od.state_dict()
    assert is_device_array(sd["state"][0]["state1"])           # live, as the 32-bit path
    path = str(tmp_path / "c.npz")
    nbopt.save(sd, path)
    loaded = nbopt.load(path)
    assert all(isinstance(v, np.ndarray) for s in loaded["state"].values() for v in s.values())
    for k, v in oc.state_dict()["state"][0].items():
        np.testing.assert_array_equal(loaded["state"][0][k], v)
    # a device optimizer from the file, a CPU one from the device state dict,
    # a device one from the CPU state dict: all continue as the originals
    cpu2, dev2, oc2, od2 = _pair("Adam8bit", [np.asarray(c) for c in cpu])
    dev3 = [nbopt.Parameter(cuda.to_device(np.asarray(c))) for c in cpu]
    od3 = nbopt.Adam8bit(dev3, **OPTIONS["Adam8bit"], min_8bit_size=MIN)
    od2.load_state_dict(loaded)
    oc2.load_state_dict(od.state_dict())
    od3.load_state_dict(oc.state_dict())
    for o, ps in ((od2, dev2), (od3, dev3)):    # host copies until the next step
        assert all(isinstance(o.state[p]["state1"], np.ndarray) for p in ps)
    for _ in range(2):
        _grads(rng, cpu, dev)
        for others in (cpu2, dev2, dev3):
            for o, c in zip(others, cpu):
                o.grad = cuda.to_device(c.grad) if isinstance(o, nbopt.DeviceParameter) \
                    else c.grad.copy()
        for o in (oc, od, oc2, od2, od3):
            o.step()
    _assert_same(oc, cpu, od, dev)
    _assert_same(oc, cpu, od2, dev2)
    _assert_same(oc, cpu, od3, dev3)
    _assert_same(oc, cpu, oc2, cpu2)
    assert is_device_array(od2.state[dev2[0]]["state1"])       # uploaded at the step
    # 8-bit device state to torch's 32-bit layout and back
    back = dequantize_state_dict(od.state_dict())
    np.testing.assert_array_equal(back["state"][0]["exp_avg"],
                                  dequantize_state_dict(oc.state_dict())["state"][0]["exp_avg"])
    dev4 = [nbopt.Parameter(cuda.to_device(np.asarray(c))) for c in cpu]
    od4 = nbopt.Adam8bit(dev4, **OPTIONS["Adam8bit"], min_8bit_size=MIN)
    od4.load_state_dict(back)                   # quantized at load, uploaded at the step
    assert od4.state[dev4[0]]["state1"].dtype == np.uint8


def test_a_host_state_edit_is_uploaded_at_the_next_step():
    rng = np.random.default_rng(4)
    cpu, dev, oc, od = _pair("SGD8bit", _values(rng, SHAPES, np.float64))
    _grads(rng, cpu, dev)
    oc.step()
    od.step()
    od.state[dev[0]]["state1"] = oc.state[cpu[0]]["state1"].copy()      # host, equal
    od.state[dev[2]]["state1"] = np.asarray(oc.state[cpu[2]]["state1"]).copy()
    _grads(rng, cpu, dev)
    oc.step()
    od.step()
    _assert_same(oc, cpu, od, dev)
    assert is_device_array(od.state[dev[0]]["state1"])


@pytest.mark.parametrize("bad", ["host_grad", "shape", "dtype", "sparse", "state"])
def test_bad_input_changes_nothing(bad):
    rng = np.random.default_rng(5)
    cpu, dev, oc, od = _pair("Adam8bit", _values(rng, SHAPES, np.float32))
    _grads(rng, cpu, dev)
    od.step()
    before = [_host(d) for d in dev]
    states = [{k: _host(v) for k, v in od.state[d].items()} for d in dev]
    _grads(rng, cpu, dev)
    if bad == "host_grad":
        dev[1].grad = np.ones(dev[1].shape, np.float32)
        error, match = RuntimeError, "on cpu"
    elif bad == "shape":
        dev[1].grad = cuda.to_device(np.ones(7, np.float32))
        error, match = (RuntimeError, ValueError), "shape"
    elif bad == "dtype":
        dev[1].grad = cuda.to_device(np.ones(dev[1].shape, np.float64))
        error, match = (RuntimeError, TypeError, ValueError), "dtype"
    elif bad == "sparse":
        dev[1].grad = nbopt.SparseGrad(np.array([[0]]), np.ones((1, 100), np.float32), (2, 100))
        error, match = RuntimeError, "sparse"
    else:
        od.state[dev[1]]["absmax1"] = cuda.to_device(np.zeros(3, np.float32))
        error, match = ValueError, "absmax1"
    with pytest.raises(error, match=match):
        od.step()
    for d, b, s in zip(dev, before, states):
        np.testing.assert_array_equal(_host(d), b)
        for k, v in s.items():
            if bad == "state" and d is dev[1] and k == "absmax1":
                continue
            np.testing.assert_array_equal(_host(od.state[d][k]), v)
