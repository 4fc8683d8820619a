"""Sparse gradients of device parameters (SparseAdam, Adagrad, SGD) against
the CPU path, which tests/test_sparse.py checks against torch 2.13.

Runs on the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is
imported; tests/test_cuda_tiers.py runs this file in a subprocess) and
unchanged on a real GPU (``NBOPT_GPU_TESTS=1``).  A device sparse gradient
(:class:`nbopt.parameter.DeviceSparseGrad`) is coalesced on the host by the
CPU path's own code and its rows are updated by CUDA kernels around the CPU
loops' per-element functions, so the results are the CPU path's bit for bit
(0 ulps: under the simulator the Python ``fma`` reference rounds once, as the
compiled one does).

The trajectories are tests/make_sparse_reference.py's (an embedding table,
a 1-D parameter, a 3-D one with two sparse dimensions; repeated and
never-touched rows, empty and None gradients), shortened to keep the
simulator fast.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from numba import cuda  # noqa: E402

import nbopt  # noqa: E402
from gpu.kernel_cases import ulps  # noqa: E402
from make_sparse_reference import CASES, PARAMS, make_inputs, nbopt_class, step_grad  # noqa: E402
from nbopt.optim.sparse_adam import SparseAdam  # noqa: E402
from nbopt.parameter import DeviceSparseGrad, SparseGrad, is_device_array  # noqa: E402

STEPS = 25      # None and empty gradients of every param (steps 2-4 and 0, 3, 5, 7, ...)
DEVICE_DTYPES = {"SparseAdam": ("float32", "float64"), "Adagrad": ("float32", "float64"),
                 "SGD": ("float32", "float64", "complex64")}
PAIRS = [(c, d) for c in CASES for d in DEVICE_DTYPES[c.cls]]
PAIR_IDS = [f"{c.id}-{d}" for c, d in PAIRS]


def _host(x):
    if is_device_array(x) or isinstance(x, nbopt.DeviceParameter):
        from nbopt.kernels._cuda import to_host

        return to_host(x)
    return np.asarray(x)


def _real(x):
    x = np.asarray(x)
    return x.view(np.finfo(x.dtype).dtype) if x.dtype.kind == "c" else x


def _same(a, b, what=""):
    a, b = _real(_host(a)), _real(_host(b))
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert ulps(a, b) == 0, what


def device_grad(indices, values, shape):
    return SparseGrad(cuda.to_device(np.ascontiguousarray(indices)),
                      cuda.to_device(np.ascontiguousarray(values)), shape)


def _options(case):
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = np.array(opts["lr"], np.float32)
    return opts


def run(case, inputs, device: bool, fortran: bool = False, steps: int = STEPS):
    """The optimizer, its parameters and their snapshots after ``steps``."""
    order = "F" if fortran else "C"
    hosts = [np.array(inputs[f"p{k}"], order=order) for k in range(len(PARAMS))]
    params = [nbopt.Parameter(cuda.to_device(h) if device else h) for h in hosts]
    opt = nbopt_class(case.cls)(params, **_options(case))
    for step in range(steps):
        for k, p in enumerate(params):
            g = step_grad(inputs, k, step)
            p.grad = None if g is None else (device_grad(*g) if device else SparseGrad(*g))
        opt.step()
    return opt, params


def assert_same_optimizers(dev_opt, dev, cpu_opt, cpu):
    for k, (d, c) in enumerate(zip(dev, cpu)):
        _same(d, c, f"param {k}")
        ds, cs = dev_opt.state.get(d, {}), cpu_opt.state.get(c, {})
        assert list(ds) == list(cs), f"param {k} state keys"
        for key, value in cs.items():
            if key == "step" and not isinstance(value, np.ndarray):
                assert ds[key] == value        # SparseAdam's Python int
                continue
            _same(ds[key], value, f"param {k} state {key}")


# -- trajectories ------------------------------------------------------------------------

@pytest.mark.parametrize("case,dtype", PAIRS, ids=PAIR_IDS)
def test_device_trajectory_equals_the_cpu_path(case, dtype):
    inputs = make_inputs(dtype)
    dev_opt, dev = run(case, inputs, device=True)
    cpu_opt, cpu = run(case, inputs, device=False)
    assert_same_optimizers(dev_opt, dev, cpu_opt, cpu)
    # the state stays on the parameter's device (step counts are host scalars)
    for d in dev:
        for key, value in dev_opt.state[d].items():
            assert key == "step" or is_device_array(value), key


@pytest.mark.parametrize("case", [c for c in CASES if not c.tensor_lr][::2],
                         ids=lambda c: c.id)
def test_fortran_ordered_device_parameters_equal_the_cpu_path(case):
    inputs = make_inputs("float32")
    dev_opt, dev = run(case, inputs, device=True, fortran=True, steps=6)
    cpu_opt, cpu = run(case, inputs, device=False, fortran=True, steps=6)
    assert dev[2].flags.f_contiguous and not dev[2].flags.c_contiguous
    assert_same_optimizers(dev_opt, dev, cpu_opt, cpu)
    # and the F-ordered run is the C-ordered one, transposed in memory only
    c_opt, c_params = run(case, inputs, device=False, steps=6)
    for d, c in zip(dev, c_params):
        np.testing.assert_array_equal(_host(d), c)


def test_sparse_adam_moments_decay_only_on_rows_present():
    w0 = np.arange(12, dtype=np.float32).reshape(6, 2)
    w = nbopt.Parameter(cuda.to_device(w0))
    opt = SparseAdam([w], lr=0.1)
    w.grad = device_grad([[3, 1, 3]], np.ones((3, 2), np.float32), (6, 2))
    opt.step()
    moved = np.flatnonzero((_host(w) != w0).any(axis=1))
    np.testing.assert_array_equal(moved, [1, 3])
    m = _host(opt.state[w]["exp_avg"])
    np.testing.assert_array_equal(m[3], np.float32(0.1) * 2)     # duplicates summed
    assert opt.state[w]["step"] == 1 and not m[[0, 2, 4, 5]].any()


# -- mixed dense and sparse steps ----------------------------------------------------------

@pytest.mark.parametrize("cls,kw", [
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
], ids=["Adagrad", "SGD", "SGD-momentum"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mixed_dense_and_sparse_steps_in_one_group(cls, kw, dtype):
    """An embedding table that gets sparse and dense gradients and a dense
    parameter, in one group: the device matches the CPU at every step, and
    the cached steady step is left and re-entered around the sparse ones."""
    rng = np.random.default_rng(5)
    e0 = rng.standard_normal((8, 3)).astype(dtype)
    d0 = rng.standard_normal(6).astype(dtype)
    dev = [nbopt.Parameter(cuda.to_device(e0)), nbopt.Parameter(cuda.to_device(d0))]
    cpu = [nbopt.Parameter(e0.copy()), nbopt.Parameter(d0.copy())]
    opts = [getattr(nbopt, cls)(p, **kw) for p in (dev, cpu)]
    held_dev = [cuda.to_device(np.zeros((8, 3), dtype)), cuda.to_device(np.zeros(6, dtype))]
    held_cpu = [np.zeros((8, 3), dtype), np.zeros(6, dtype)]
    sparse_steps = {2, 3, 5}
    steady = []
    for step in range(8):
        gd = rng.standard_normal(6).astype(dtype)
        held_dev[1].copy_to_device(gd)
        held_cpu[1][...] = gd
        dev[1].grad, cpu[1].grad = held_dev[1], held_cpu[1]
        if step in sparse_steps:
            idx = rng.integers(0, 8, (1, 5))
            val = rng.standard_normal((5, 3)).astype(dtype)
            dev[0].grad = device_grad(idx, val, (8, 3))
            cpu[0].grad = SparseGrad(idx, val, (8, 3))
        else:
            ge = rng.standard_normal((8, 3)).astype(dtype)
            held_dev[0].copy_to_device(ge)
            held_cpu[0][...] = ge
            dev[0].grad, cpu[0].grad = held_dev[0], held_cpu[0]
        for o in opts:
            o.step()
        assert_same_optimizers(opts[0], dev, opts[1], cpu)
        steady.append(opts[0]._flat[0].flat[0]._steady is not None)
    assert not any(steady[s] for s in sparse_steps)
    assert steady[1] and steady[-1]


def test_sparse_and_dense_parameters_of_one_sparse_adam_in_several_groups():
    rng = np.random.default_rng(6)
    shapes = [(5, 2), (7,), (4, 3)]
    hosts = [rng.standard_normal(s) for s in shapes]
    dev = [nbopt.Parameter(cuda.to_device(h)) for h in hosts]
    cpu = [nbopt.Parameter(h.copy()) for h in hosts]
    make = [SparseAdam([{"params": p[:2]}, {"params": p[2:], "lr": 0.05, "maximize": True}],
                       lr=0.01, betas=(0.8, 0.9)) for p in (dev, cpu)]
    for step in range(4):
        for d, c in zip(dev, cpu):
            idx = rng.integers(0, c.shape[0], (1, 4))
            val = rng.standard_normal((4,) + c.shape[1:])
            d.grad, c.grad = device_grad(idx, val, c.shape), SparseGrad(idx, val, c.shape)
        for o in make:
            o.step()
    assert_same_optimizers(make[0], dev, make[1], cpu)


# -- checkpoints ------------------------------------------------------------------------

def test_sparse_adam_checkpoint_round_trip_and_cross_device(tmp_path):
    case = CASES[1]        # SparseAdam with betas, eps and maximize
    inputs = make_inputs("float32")
    dev_opt, dev = run(case, inputs, device=True, steps=4)
    cpu_opt, cpu = run(case, inputs, device=False, steps=4)
    path = str(tmp_path / "ckpt.npz")
    nbopt.save(dev_opt.state_dict(), path)          # device moments copied to the host
    loaded = nbopt.load(path)
    assert all(isinstance(v, np.ndarray) for s in loaded["state"].values()
               for k, v in s.items() if k != "step")

    def fresh(device):
        params = [nbopt.Parameter(cuda.to_device(_host(p)) if device else _host(p).copy())
                  for p in dev]
        return nbopt_class(case.cls)(params, **_options(case)), params

    file_dev, file_dev_p = fresh(True)
    file_dev.load_state_dict(loaded)                # host arrays onto the device
    for p in file_dev_p:
        assert is_device_array(file_dev.state[p]["exp_avg"])
    from_dev_cpu, from_dev_cpu_p = fresh(False)
    from_dev_cpu.load_state_dict(dev_opt.state_dict())      # device arrays onto the host
    for p in from_dev_cpu_p:
        assert isinstance(from_dev_cpu.state[p]["exp_avg"], np.ndarray)
    dev_opt.load_state_dict(cpu_opt.state_dict())   # the CPU state into the device optimizer
    for p in dev:
        assert is_device_array(dev_opt.state[p]["exp_avg_sq"])
    runs = [(dev_opt, dev, True), (cpu_opt, cpu, False), (file_dev, file_dev_p, True),
            (from_dev_cpu, from_dev_cpu_p, False)]
    for step in range(4, 8):
        for k in range(len(PARAMS)):
            g = step_grad(inputs, k, step)
            for _, params, device in runs:
                params[k].grad = None if g is None else (
                    device_grad(*g) if device else SparseGrad(*g))
        for o, _, _ in runs:
            o.step()
    for o, params, _ in runs[:1] + runs[2:]:
        assert_same_optimizers(o, params, cpu_opt, cpu)


def test_sparse_adam_state_assigned_by_the_user_moves_to_the_device():
    rng = np.random.default_rng(8)
    w0 = rng.standard_normal((5, 2)).astype(np.float32)
    dev, cpu = nbopt.Parameter(cuda.to_device(w0)), nbopt.Parameter(w0.copy())
    opts = [SparseAdam([p], lr=0.1) for p in (dev, cpu)]
    idx, val = [[0, 4, 0]], rng.standard_normal((3, 2)).astype(np.float32)
    dev.grad, cpu.grad = device_grad(idx, val, (5, 2)), SparseGrad(idx, val, (5, 2))
    for o in opts:
        o.step()
    new = np.full((5, 2), 0.25)                    # a host float64 array, as a user writes it
    opts[0].state[dev]["exp_avg_sq"] = new.copy()
    opts[1].state[cpu]["exp_avg_sq"] = new.copy()
    opts[0].state[dev]["exp_avg"] = cuda.to_device(np.asfortranarray(w0))   # another layout
    opts[1].state[cpu]["exp_avg"] = np.asfortranarray(w0)
    for o in opts:
        o.step()
    assert is_device_array(opts[0].state[dev]["exp_avg_sq"])
    assert_same_optimizers(opts[0], [dev], opts[1], [cpu])


# -- DeviceSparseGrad ---------------------------------------------------------------------

def test_device_sparse_grad_attributes_coalesce_and_to_dense():
    rng = np.random.default_rng(7)
    idx = np.array([[4, 1, 4, 4, 0], [2, 0, 2, 2, 1]])
    val = (rng.standard_normal((5, 3)) * 10.0 ** rng.integers(-3, 4, (5, 1))).astype(np.float32)
    g = SparseGrad(cuda.to_device(idx), cuda.to_device(val))
    h = SparseGrad(idx, val)
    assert isinstance(g, DeviceSparseGrad) and isinstance(g, SparseGrad)
    assert g.device == "cuda:0" and h.device == "cpu" and g.is_sparse
    assert (g.shape, g.dtype, g.nnz, g.sparse_dim, g.dense_dim) == \
        (h.shape, h.dtype, h.nnz, h.sparse_dim, h.dense_dim) == ((5, 3, 3), np.float32, 5, 2, 1)
    assert is_device_array(g.indices) and is_device_array(g.values)
    np.testing.assert_array_equal(_host(g.indices), h.indices)
    assert "cuda:0" in repr(g) and "nnz=5" in repr(g)
    gc, hc = g.coalesce(), h.coalesce()
    assert gc.is_coalesced() and gc.coalesce() is gc and isinstance(gc, DeviceSparseGrad)
    np.testing.assert_array_equal(_host(gc.indices), hc.indices)
    _same(gc.values, hc.values, "coalesced values: bit for bit the host's")
    _same(g.to_dense(), h.to_dense())
    _same((-g).to_dense(), (-h).to_dense())
    back = g.copy_to_host()
    assert type(back) is SparseGrad and not back.is_coalesced()
    _same(back.values, val)
    # already sorted and unique: coalesce copies the values on the device
    u = SparseGrad(cuda.to_device(np.array([[0, 2, 3]])), cuda.to_device(val[:3]), (4, 3))
    uc = u.coalesce()
    assert uc.values is not u.values
    _same(uc.values, val[:3])


@pytest.mark.parametrize("name,kw", [("SparseAdam", dict(lr=0.1)), ("Adagrad", dict(lr=0.1)),
                                     ("SGD", dict(lr=0.1))])
def test_zero_grad_empties_a_device_sparse_gradient(name, kw):
    w = nbopt.Parameter(cuda.to_device(np.ones((3, 2), np.float32)))
    g = device_grad([[0, 2]], np.ones((2, 2), np.float32), (3, 2))
    w.grad = g
    opt = nbopt_class(name)([w], **kw)
    opt.zero_grad(set_to_none=False)
    assert w.grad is g and g.nnz == 0 and g.shape == (3, 2) and is_device_array(g.values)
    opt.step()          # an empty gradient: nothing moves
    np.testing.assert_array_equal(_host(w), 1)
    if name != "SGD":
        assert opt.state[w]["step"] == 1


# -- errors ------------------------------------------------------------------------------

def _host_grad():
    return SparseGrad([[0, 1]], np.ones((2, 3), np.float32), (4, 3))


def _scipy_grad():
    sp = pytest.importorskip("scipy.sparse")
    return sp.coo_matrix((np.ones(2, np.float32), ([0, 1], [0, 2])), shape=(4, 3))


@pytest.mark.parametrize("name,kw", [("SparseAdam", dict(lr=0.1)), ("Adagrad", dict(lr=0.1)),
                                     ("SGD", dict(lr=0.1)),
                                     ("SGD", dict(lr=0.1, momentum=0.9))])
@pytest.mark.parametrize("grad,error,match", [
    (_host_grad, RuntimeError, r"params'\]\[1\]: the gradient is on cpu but the parameter is "
                               "on cuda:0; please ensure that the gradient and the parameter "
                               "are on the same device"),
    (_scipy_grad, RuntimeError, "the gradient is on cpu but the parameter is on cuda:0"),
    (lambda: device_grad([[0, 1]], np.ones((2, 3), np.float32), (5, 3)), RuntimeError,
     r"grad has shape \(5, 3\) but the parameter has shape \(4, 3\)"),
    (lambda: device_grad([[0, 1]], np.ones((2, 3), np.float64), (4, 3)), RuntimeError,
     "grad has dtype float64 but the parameter has dtype float32"),
], ids=["host", "scipy", "shape", "dtype"])
def test_bad_sparse_gradients_of_device_params_raise_before_anything_changes(
        name, kw, grad, error, match):
    good = nbopt.Parameter(cuda.to_device(np.ones((4, 3), np.float32)))
    bad = nbopt.Parameter(cuda.to_device(np.ones((4, 3), np.float32)))
    good.grad = device_grad([[2]], np.ones((1, 3), np.float32), (4, 3))
    bad.grad = grad()
    opt = nbopt_class(name)([good, bad], **kw)
    before = {p: {k: _host(v) for k, v in opt.state[p].items()} for p in (good, bad)}
    with pytest.raises(error, match=match):
        opt.step()
    np.testing.assert_array_equal(_host(good), 1)
    for p in (good, bad):
        assert opt.state[p].keys() == before[p].keys()
        for k, v in before[p].items():
            np.testing.assert_array_equal(_host(opt.state[p][k]), v)


@pytest.mark.parametrize("name,kw", [("SparseAdam", dict(lr=0.1)), ("Adagrad", dict(lr=0.1)),
                                     ("SGD", dict(lr=0.1))])
def test_device_sparse_gradient_of_a_host_param_is_refused(name, kw):
    good = nbopt.Parameter(np.ones((4, 3), np.float32))
    bad = nbopt.Parameter(np.ones((4, 3), np.float32))
    good.grad = _host_grad()
    bad.grad = device_grad([[0, 1]], np.ones((2, 3), np.float32), (4, 3))
    opt = nbopt_class(name)([good, bad], **kw)
    with pytest.raises(RuntimeError, match=r"params'\]\[1\]: the gradient is on cuda:0 but the "
                                           "parameter is on cpu"):
        opt.step()
    np.testing.assert_array_equal(good, 1)


@pytest.mark.parametrize("name,kw,error,match", [
    ("Adam", dict(lr=0.1), RuntimeError,
     "Adam does not support sparse gradients, please consider SparseAdam instead"),
    ("RMSprop", dict(lr=0.1), RuntimeError, "RMSprop does not support sparse gradients"),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1), RuntimeError,
     "weight_decay option is not compatible with sparse gradients"),
    ("SGD", dict(lr=0.1, weight_decay=0.1), RuntimeError,
     r"add\(sparse, dense\) is not supported"),
])
def test_options_and_algorithms_without_sparse_support_raise_torchs_errors(name, kw, error,
                                                                           match):
    w = nbopt.Parameter(cuda.to_device(np.ones((4, 3), np.float32)))
    w.grad = device_grad([[0, 1]], np.ones((2, 3), np.float32), (4, 3))
    opt = getattr(nbopt, name)([w], **kw)
    with pytest.raises(error, match=match):
        opt.step()
    np.testing.assert_array_equal(_host(w), 1)


def test_sparse_adam_refuses_dense_device_gradients_and_complex_device_params():
    w = nbopt.Parameter(cuda.to_device(np.ones((4, 3), np.float32)))
    w.grad = cuda.to_device(np.ones((4, 3), np.float32))
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        SparseAdam([w]).step()
    c = nbopt.Parameter(cuda.to_device(np.ones(3, np.complex64)))
    with pytest.raises(ValueError, match="SparseAdam does not support complex parameters"):
        SparseAdam([c])


def test_adagrad_sparse_gradients_of_complex_device_params_are_not_supported():
    w = nbopt.Parameter(cuda.to_device(np.ones((4, 3), np.complex64)))
    w.grad = device_grad([[0]], np.ones((1, 3), np.complex64), (4, 3))
    opt = nbopt.Adagrad([w], lr=0.1)
    with pytest.raises(NotImplementedError, match="complex parameters on the CPU only"):
        opt.step()
    np.testing.assert_array_equal(_host(w), 1)


@pytest.mark.parametrize("indices,values,error,match", [
    (lambda: cuda.to_device(np.array([[0, 1]])), lambda: np.ones(2, np.float32), RuntimeError,
     r"device of indices \(cuda:0\) must match device of values \(cpu\)"),
    (lambda: np.array([[0, 1]]), lambda: cuda.to_device(np.ones(2, np.float32)), RuntimeError,
     r"device of indices \(cpu\) must match device of values \(cuda:0\)"),
    (lambda: cuda.to_device(np.array([[0, 5]])), lambda: cuda.to_device(np.ones(2)),
     RuntimeError, "size is inconsistent with indices: for dim 0, size is 3 but found index 5"),
    (lambda: cuda.to_device(np.array([[0, -1]])), lambda: cuda.to_device(np.ones(2)),
     RuntimeError, "found negative index -1 for dim 0"),
    (lambda: cuda.to_device(np.array([[0.5]])), lambda: cuda.to_device(np.ones(1)),
     TypeError, "indices must be an integer array"),
    (lambda: cuda.to_device(np.array([[0]])), lambda: cuda.to_device(np.ones(1, np.int32)),
     TypeError, "values must be a floating point or complex array"),
    (lambda: cuda.to_device(np.array([[0, 1]])), lambda: cuda.to_device(np.ones(3)),
     RuntimeError, "indices and values must have same nnz"),
])
def test_device_sparse_grad_validation(indices, values, error, match):
    with pytest.raises(error, match=match):
        SparseGrad(indices(), values(), (3,))
