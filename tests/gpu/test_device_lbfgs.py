"""LBFGS on device parameters against LBFGS on CPU copies (which
tests/test_lbfgs.py checks against torch 2.13).

The device path runs the same algorithm (nbopt/optim/lbfgs.py) over device
vectors and CUDA kernels that add every sum in the CPU kernels' order
(nbopt/kernels/lbfgs.py), so parameters, losses and the whole state are
compared bit for bit.  Runs on the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``
before numba is imported; tests/test_cuda_tiers.py runs this file in a
subprocess with 8 threads a block) and unchanged on a GPU (tests/gpu/run.sh).
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from numba import cuda  # noqa: E402

import nbopt  # noqa: E402
from gpu.kernel_cases import ulps  # noqa: E402
from nbopt.kernels.lbfgs import BLOCK  # noqa: E402
from nbopt.optim.lbfgs import LBFGS  # noqa: E402
from nbopt.parameter import is_device_array  # noqa: E402


# -- problems: (loss, gradient) of one parameter's values ------------------------

def quadratic(x):
    """sum(s |x|^2 / 2 - Re x), curvatures s in 1..5."""
    s = (1.0 + np.arange(x.size) % 5).reshape(x.shape)
    loss = float(np.sum(0.5 * s * np.abs(x) ** 2 - x.real))
    return loss, (s * x - 1).astype(x.dtype)


def rosenbrock(x):
    """The chained Rosenbrock function of the flat values."""
    v = x.reshape(-1)
    a, b = v[:-1], v[1:]
    loss = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
    g = np.zeros_like(v)
    g[:-1] += -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
    g[1:] += 200.0 * (b - a * a)
    return loss, g.reshape(x.shape).astype(x.dtype)


PROBLEMS = {"quadratic": quadratic, "rosenbrock": rosenbrock}


def _values(rng, shape, dtype, scale=1.0):
    x = rng.standard_normal(shape) * scale
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape) * scale
    return np.asarray(x, dtype)


def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.array(x)


def _real(x):
    x = np.ascontiguousarray(x)
    return x.view(np.finfo(x.dtype).dtype) if x.dtype.kind == "c" else x


class Run:
    """One LBFGS over device parameters or over CPU parameters, same values."""

    def __init__(self, device, hosts, problem, no_grad=(), params=None, **options):
        self.device = device
        self.problem = problem
        self.no_grad = set(no_grad)
        if params is None:
            params = [nbopt.Parameter(cuda.to_device(h) if device else h.copy()) for h in hosts]
        self.params = params
        self.opt = LBFGS(self.params, **options)
        self.losses = []

    def closure(self):
        loss = 0.0
        for i, p in enumerate(self.params):
            f, g = self.problem(_host(p))
            loss += f
            if i in self.no_grad:
                p.grad = None
            else:
                p.grad = cuda.to_device(g) if self.device else g
        return loss

    def step(self, n=1):
        for _ in range(n):
            self.losses.append(self.opt.step(self.closure))

    def values(self):
        return [_host(p) for p in self.params]


def _pair(hosts, problem, **kw):
    return Run(True, hosts, problem, **kw), Run(False, hosts, problem, **kw)


def _same_value(a, b, where):
    """Bit-identical state entries: host/device arrays, lists of them, 0-d
    arrays and numbers (of the same type)."""
    if isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_value(x, y, f"{where}[{i}]")
    elif b is None:
        assert a is None, where
    elif isinstance(b, np.ndarray) and b.ndim > 0:
        assert is_device_array(a), f"{where} is not on the device"
        assert ulps(_real(_host(a)), _real(b)) == 0, where
    elif isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype, where
        assert ulps(a.reshape(1), b.reshape(1)) == 0, where
    else:
        assert type(a) is type(b), where
        assert a == b or (a != a and b != b), where


def _assert_same(dev: Run, cpu: Run, losses: bool = True):
    for i, (d, c) in enumerate(zip(dev.values(), cpu.values())):
        assert ulps(_real(d), _real(c)) == 0, f"param {i}"
    if losses:
        assert dev.losses == cpu.losses
    ds, cs = dev.opt.state[dev.params[0]], cpu.opt.state[cpu.params[0]]
    assert list(ds) == list(cs)
    for key in cs:
        _same_value(ds[key], cs[key], key)


# -- bit for bit against the CPU -------------------------------------------------------

@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_device_lbfgs_equals_the_cpu_path(problem, dtype, line_search_fn):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,)] if problem == "quadratic" else [(2, 3)]
    scale = 1.0 if problem == "quadratic" else 0.5
    hosts = [_values(rng, s, dtype, scale) for s in shapes]
    # history_size 2: the history wraps within the first step
    dev, cpu = _pair(hosts, PROBLEMS[problem], max_iter=6, history_size=2,
                     line_search_fn=line_search_fn)
    for _ in range(2):
        dev.step()
        cpu.step()
        _assert_same(dev, cpu)
    assert cpu.opt.state[cpu.params[0]]["n_iter"] >= 6


def test_complex_parameters_and_a_missing_gradient():
    rng = np.random.default_rng(1)
    hosts = [_values(rng, (2, 3), "complex64"), _values(rng, (4,), "complex64"),
             _values(rng, (3,), "complex64")]
    dev, cpu = _pair(hosts, quadratic, no_grad={2}, max_iter=5, history_size=3,
                     line_search_fn="strong_wolfe")
    dev.step(2)
    cpu.step(2)
    _assert_same(dev, cpu)
    assert dev.opt.state[dev.params[0]]["d"].shape == (26,)     # 12 + 8 + 6 reals
    np.testing.assert_array_equal(dev.values()[2], hosts[2])    # no gradient: no move


def test_fortran_ordered_and_mixed_dtype_parameters():
    """Parameters reached through a flat copy: a Fortran-ordered one, and
    float32 ones in a float64 vector (its gradient Fortran-ordered too)."""
    rng = np.random.default_rng(2)
    hosts = [np.asfortranarray(_values(rng, (3, 4), "float64")), _values(rng, (5,), "float32"),
             np.asfortranarray(_values(rng, (2, 3), "complex64"))]
    dev, cpu = _pair(hosts, quadratic, max_iter=5, history_size=2)
    assert not dev.params[0].flags.c_contiguous
    dev.step(2)
    cpu.step(2)
    _assert_same(dev, cpu)
    assert dev.opt.state[dev.params[0]]["d"].dtype == np.float64


def test_several_chunks_and_blocks():
    """A parameter longer than BLOCK: two chunks in the gather and update
    passes, two blocks in the vector passes, each block's lanes reduced on
    the device and the blocks added in order on the host."""
    rng = np.random.default_rng(3)
    hosts = [_values(rng, (BLOCK + 40,), "float32"), _values(rng, (7,), "float32")]
    dev, cpu = _pair(hosts, quadratic, max_iter=3, history_size=2)
    dev.step()
    cpu.step()
    _assert_same(dev, cpu)


def test_a_parameter_listed_twice_is_updated_as_on_the_cpu():
    rng = np.random.default_rng(4)
    h = _values(rng, (6,), "float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pd, pc = nbopt.Parameter(cuda.to_device(h)), nbopt.Parameter(h.copy())
        dev = Run(True, None, quadratic, params=[pd, pd], max_iter=4)
        cpu = Run(False, None, quadratic, params=[pc, pc], max_iter=4)
    dev.step(2)
    cpu.step(2)
    _assert_same(dev, cpu)


# -- checkpoints ---------------------------------------------------------------------

def _fresh(device, like: Run, **options):
    hosts = like.values()
    return Run(device, hosts, like.problem, **options)


def test_checkpoint_round_trip_mid_run_and_across_devices(tmp_path):
    options = dict(max_iter=4, history_size=2, line_search_fn="strong_wolfe")
    rng = np.random.default_rng(5)
    hosts = [_values(rng, (3, 3), "float32"), _values(rng, (4,), "float32")]
    dev, cpu = _pair(hosts, rosenbrock, **options)
    dev.step(2)
    cpu.step(2)
    path = str(tmp_path / "lbfgs.npz")
    nbopt.save(dev.opt.state_dict(), path)      # device state copied to the host
    loaded = nbopt.load(path)
    st = loaded["state"][0]
    assert all(isinstance(v, np.ndarray) for v in st["old_dirs"] + [st["d"]])

    from_file = _fresh(True, dev, **options)          # GPU <- file
    from_file.opt.load_state_dict(loaded)
    from_cpu = _fresh(True, cpu, **options)           # GPU <- CPU state dict
    from_cpu.opt.load_state_dict(cpu.opt.state_dict())
    to_cpu = _fresh(False, dev, **options)            # CPU <- GPU state dict
    to_cpu.opt.load_state_dict(dev.opt.state_dict())
    for run in (from_file, from_cpu):
        state = run.opt.state[run.params[0]]
        assert is_device_array(state["d"]) and is_device_array(state["prev_flat_grad"])
        assert all(is_device_array(v) for v in state["old_dirs"] + state["old_stps"])
    assert isinstance(to_cpu.opt.state[to_cpu.params[0]]["d"], np.ndarray)

    for run in (dev, cpu, from_file, from_cpu, to_cpu):
        run.step(2)
    _assert_same(dev, cpu)
    for run in (from_file, from_cpu, to_cpu):
        assert run.losses == cpu.losses[2:]
    _assert_same(from_file, cpu, losses=False)
    _assert_same(from_cpu, cpu, losses=False)
    _assert_same(dev, to_cpu, losses=False)


def test_loaded_state_is_validated_with_device_arrays():
    rng = np.random.default_rng(6)
    dev = Run(True, [_values(rng, (5,), "float64")], quadratic, max_iter=3)
    dev.step()
    sd = dev.opt.state_dict()
    bad = dict(sd["state"][0], d=cuda.to_device(np.zeros(4)))
    before = dict(dev.opt.state[dev.params[0]])
    with pytest.raises(ValueError, match="a device array of shape"):
        dev.opt.load_state_dict({"state": {0: bad}, "param_groups": sd["param_groups"]})
    assert all(dev.opt.state[dev.params[0]][k] is v for k, v in before.items())


def test_popped_history_vectors_that_are_still_referenced_are_not_reused():
    p = nbopt.Parameter(cuda.to_device(np.linspace(-2, 2, 12)))
    run = Run(True, None, quadratic, params=[p], max_iter=3, history_size=1)
    run.step()
    kept = run.opt.state[p]["old_dirs"][0]
    copy = kept.copy_to_host()
    for _ in range(3):
        run.step()
    assert run.opt.state[p]["old_dirs"][0] is not kept
    np.testing.assert_array_equal(kept.copy_to_host(), copy)


# -- errors ----------------------------------------------------------------------------

def test_parameters_on_two_devices_are_refused():
    d = nbopt.Parameter(cuda.to_device(np.ones(3)))
    c = nbopt.Parameter(np.ones(3))
    with pytest.raises(RuntimeError, match="same device, but found at least two devices, "
                                           "cuda:0 and cpu"):
        LBFGS([d, c])
    with pytest.raises(RuntimeError, match="two devices, cpu and cuda:0"):
        LBFGS([c, d])


@pytest.mark.parametrize("grad, error, match", [
    (np.ones(4, np.float32), RuntimeError, "the gradient is on cpu but the parameter is on cuda:0"),
    ("shape", RuntimeError, r"grad has shape \(2, 2\) but the parameter has shape \(4,\)"),
    ("dtype", RuntimeError, "grad has dtype float64 but the parameter has dtype float32"),
    ([1.0, 2.0, 3.0, 4.0], TypeError, "grad must be a CUDA array or None"),
])
def test_bad_gradients_raise_before_anything_moves(grad, error, match):
    if isinstance(grad, str):
        grad = cuda.to_device(np.ones((2, 2), np.float32) if grad == "shape"
                              else np.ones(4, np.float64))
    good = nbopt.Parameter(cuda.to_device(np.ones(4, np.float32)))
    bad = nbopt.Parameter(cuda.to_device(np.ones(4, np.float32)))
    opt = LBFGS([good, bad])

    def closure():
        good.grad = cuda.to_device(np.ones(4, np.float32))
        bad.grad = grad
        return 1.0
    with pytest.raises(error, match=match):
        opt.step(closure)
    np.testing.assert_array_equal(good.copy_to_host(), 1)
    np.testing.assert_array_equal(bad.copy_to_host(), 1)
