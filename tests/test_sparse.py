"""Sparse gradients: SparseGrad, SparseAdam, Adagrad and SGD with sparse
gradients, and the rejection of sparse gradients by the other algorithms.

Parity with torch 2.13 is checked over 50-step trajectories (repeated and
never-touched rows, empty and None gradients; an embedding table, a 1-D
parameter with full sparse dimensions, a parameter with two sparse
dimensions; float32, float64 and, where torch allows it, complex), against
the committed reference data (``tests/make_sparse_reference.py``) and against
live torch when it is importable.  ``coalesce`` is compared bit for bit.
"""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

import nbopt
from conftest import HAVE_TORCH, load_reference, requires_torch
from make_sparse_reference import (CASES, CHECKPOINT_STEP, DTYPES, N_MISSING, PARAMS, STEPS,
                                   SparseCase, adversarial_keys, make_inputs,
                                   run_nbopt, run_torch, step_grad)
from nbopt import config
from nbopt.optim.sparse_adam import SparseAdam
from nbopt.parameter import SparseGrad, as_sparse_grad, is_sparse_grad

# torch's own Adagrad builds unchecked sparse tensors, and says so
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sparse_reference.npz")
RTOL = {"float32": 1e-5, "float64": 1e-12, "complex64": 1e-5, "complex128": 1e-12}
PAIRS = [(c, d) for c in CASES for d in c.dtypes]
PAIR_IDS = [f"{c.id}-{d}" for c, d in PAIRS]


def reference() -> dict:
    return load_reference(DATA)


def stored_inputs(dtype):
    prefix = f"traj|{dtype}|in|"
    return {k[len(prefix):]: v for k, v in reference().items() if k.startswith(prefix)}


def stored_trajectory(case, dtype):
    prefix = f"traj|{case.id}|{dtype}|"
    out = {}
    for key, value in reference().items():
        if key.startswith(prefix):
            step, name = key[len(prefix):].split("|")
            out.setdefault(int(step), {})[name] = value
    if not out:
        pytest.fail(f"no reference data for {case.id} {dtype}: run tests/make_sparse_reference.py")
    return out


def assert_same_trajectory(got, want, dtype, exact=False):
    assert sorted(got) == sorted(want) == [CHECKPOINT_STEP, STEPS]
    for step in want:
        # same state entries in the same order: torch's state_dict layout
        assert list(got[step]) == list(want[step]), f"step {step}: keys differ"
        for name, expected in want[step].items():
            have = np.asarray(got[step][name])
            assert have.shape == expected.shape, f"step {step} {name}: shape"
            if name.endswith(".step") or exact:
                np.testing.assert_array_equal(have, expected, err_msg=f"step {step} {name}")
                continue
            assert have.dtype == expected.dtype, f"step {step} {name}: dtype"
            wide = np.complex128 if np.iscomplexobj(expected) else np.float64
            # a few ulps of the array's own scale: momentum sums near zero
            # cancel, so a purely relative bound would be meaningless there
            scale = float(np.abs(expected).max()) if expected.size else 0.0
            np.testing.assert_allclose(have.astype(wide), expected.astype(wide),
                                       rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                                       err_msg=f"step {step} {name}")


def _exact(case) -> bool:
    # SGD without momentum is torch's scatter-add, replayed bit for bit; the
    # others round through torch's sqrt (not correctly rounded on CPU) or,
    # for SGD with momentum, through a sparse buffer that nbopt keeps dense
    return case.cls == "SGD" and not case.options.get("momentum")


# -- parity --------------------------------------------------------------------------

def test_reference_covers_the_cases():
    index = json.loads(reference()["index"].tobytes())
    assert index["torch"].startswith("2.13.")
    assert index["cases"] == [c.id for c in CASES]


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_have_repeats_missing_rows_and_empty_and_none_grads(dtype):
    inputs = stored_inputs(dtype)
    for k, (shape, _) in enumerate(PARAMS):
        kinds = [step_grad(inputs, k, s) for s in range(STEPS)]
        assert any(g is None for g in kinds)
        assert any(g is not None and g[0].shape[1] == 0 for g in kinds)
        rows = np.concatenate([g[0][0] for g in kinds if g is not None])
        assert rows.max() < shape[0] - N_MISSING
        counts = [np.bincount(g[0][0]).max() for g in kinds if g is not None and g[0].size]
        assert max(counts) >= 3


@pytest.mark.parametrize("case,dtype", PAIRS, ids=PAIR_IDS)
def test_matches_committed_torch_reference(case, dtype):
    inputs = stored_inputs(dtype)
    got = run_nbopt(case, inputs)
    assert_same_trajectory(got, stored_trajectory(case, dtype), dtype, exact=_exact(case))
    # rows that never had a gradient never moved
    for k in range(len(PARAMS)):
        np.testing.assert_array_equal(got[STEPS][f"param{k}"][-N_MISSING:],
                                      inputs[f"p{k}"][-N_MISSING:])


@requires_torch
@pytest.mark.parametrize("case,dtype", PAIRS, ids=PAIR_IDS)
def test_matches_live_torch(case, dtype):
    inputs = make_inputs(dtype)
    assert_same_trajectory(run_nbopt(case, inputs), run_torch(case, inputs), dtype,
                           exact=_exact(case))


@pytest.mark.parametrize("case", [CASES[1], CASES[5], CASES[8], CASES[11]], ids=lambda c: c.id)
def test_fortran_ordered_parameters_give_the_same_numbers(case):
    inputs = make_inputs("float32")
    c_order = run_nbopt(case, inputs)
    f_order = run_nbopt(case, inputs, fortran=True)
    assert_same_trajectory(f_order, c_order, "float32", exact=True)


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[8], CASES[10]], ids=lambda c: c.id)
def test_parallel_kernels_give_the_same_numbers(case, monkeypatch):
    inputs = make_inputs("float64")
    serial = run_nbopt(case, inputs)
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 1)
    assert_same_trajectory(run_nbopt(case, inputs), serial, "float64", exact=True)


# -- coalesce ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["heapsort", "radix", "three_dims"])
def test_coalesce_matches_committed_torch_result_bit_for_bit(name):
    ref = reference()
    idx = ref[f"coal|{name}|indices"].astype(np.int64)
    g = SparseGrad(idx, ref[f"coal|{name}|values"], tuple(ref[f"coal|{name}|shape"]))
    c = g.coalesce()
    assert c.is_coalesced() and not g.is_coalesced()
    np.testing.assert_array_equal(c.indices, ref[f"coal|{name}|out_indices"])
    np.testing.assert_array_equal(c.values, ref[f"coal|{name}|out_values"])


def test_introsort_replay_gives_torchs_permutation_on_adversarial_keys():
    from nbopt.kernels._sparse import _std_sort

    keys = adversarial_keys(2000)
    np.testing.assert_array_equal(keys, reference()["coal|heapsort|indices"][0])
    sorted_keys, perm = keys.copy(), np.arange(len(keys), dtype=np.int64)
    _std_sort(sorted_keys, perm)
    np.testing.assert_array_equal(perm, reference()["sort|heapsort|perm"])
    np.testing.assert_array_equal(sorted_keys, np.sort(keys))


@requires_torch
@pytest.mark.parametrize("n", [2, 3, 16, 17, 40, 1000, 32767, 32768])
def test_coalesce_matches_live_torch(n):
    import torch

    rng = np.random.default_rng(n)
    rows = max(2, n // 8)
    idx = np.stack([rng.integers(0, rows, n), rng.integers(0, 3, n)])
    vals = (rng.standard_normal((n, 2)) * 10.0 ** rng.integers(-6, 7, (n, 1))).astype(np.float32)
    want = torch.sparse_coo_tensor(torch.from_numpy(idx), torch.from_numpy(vals),
                                   (rows, 3, 2), check_invariants=True).coalesce()
    got = SparseGrad(idx, vals, (rows, 3, 2)).coalesce()
    np.testing.assert_array_equal(got.indices, want._indices().numpy())
    np.testing.assert_array_equal(got.values, want._values().numpy())
    np.testing.assert_array_equal(got.to_dense(), want.to_dense().numpy())


def test_coalesce_sums_duplicates_in_sorted_then_appearance_order():
    # for few entries torch's sort is an insertion sort: stable
    g = SparseGrad([[3, 3, 0, 3, 3]], np.array([1e8, 1.0, 5.0, -1e8, 1.0], np.float32), (4,))
    c = g.coalesce()
    np.testing.assert_array_equal(c.indices, [[0, 3]])
    # ((1e8 + 1) - 1e8) + 1 == 1 in float32; any other order gives 0 or 2
    np.testing.assert_array_equal(c.values, np.array([5.0, 1.0], np.float32))
    assert c.coalesce() is c


def test_coalesce_parallel_sum_matches_serial(monkeypatch):
    rng = np.random.default_rng(3)
    g = SparseGrad(rng.integers(0, 50, (1, 5000)), rng.standard_normal((5000, 4)), (50, 4))
    serial = g.coalesce()
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 1)
    parallel = g.coalesce()
    np.testing.assert_array_equal(parallel.values, serial.values)
    np.testing.assert_array_equal(parallel.indices, serial.indices)


# -- SparseGrad --------------------------------------------------------------------

def test_sparse_grad_attributes_and_shape_inference():
    g = SparseGrad([[4, 1, 4], [0, 2, 0]], np.ones((3, 5), np.float32))
    assert g.shape == (5, 3, 5) and g.dtype == np.float32 and g.ndim == 3
    assert (g.nnz, g.sparse_dim, g.dense_dim) == (3, 2, 1)
    assert g.is_sparse and is_sparse_grad(g) and as_sparse_grad(g) is g
    assert not is_sparse_grad(np.ones(3)) and not is_sparse_grad(None)
    assert g.indices.dtype == np.int64 and not g.indices.flags.writeable
    assert "nnz=3" in repr(g)
    empty = SparseGrad(np.zeros((1, 0)), np.zeros((0, 3)))
    assert empty.shape == (0, 3) and empty.nnz == 0


def test_to_dense_sums_duplicates_and_neg_negates():
    g = SparseGrad([[2, 0, 2]], np.array([[1., 2.], [3., 4.], [5., 6.]]), (3, 2))
    dense = g.to_dense()
    np.testing.assert_array_equal(dense, [[3., 4.], [0., 0.], [6., 8.]])
    np.testing.assert_array_equal((-g).to_dense(), -dense)
    assert (-g).shape == g.shape


@pytest.mark.parametrize("indices,values,shape,exc,message", [
    ([0, 1], [1., 2.], (3,), RuntimeError, "indices must be sparse_dim x nnz, but got: [2]"),
    ([[0, 1]], [1., 2., 3.], (3,), RuntimeError,
     "indices and values must have same nnz, but got nnz from indices: 2, nnz from values: 3"),
    ([[0, 5]], [1., 2.], (3,), RuntimeError,
     "size is inconsistent with indices: for dim 0, size is 3 but found index 5"),
    ([[0, -1]], [1., 2.], (3,), RuntimeError, "found negative index -1 for dim 0"),
    ([[0, 1]], [1., 2.], (3, 4), RuntimeError,
     "'len(size) == sparse_dim + dense_dim' is not satisfied: len(size) = 2, sparse_dim = 1, "
     "dense_dim = 0"),
    ([[0, 1]], np.ones((2, 5)), (3, 4), RuntimeError,
     "values has incorrect size, expected [2, 4], got [2, 5]"),
    ([[0], [1], [0]], [1.], (3, 4), RuntimeError,
     "'len(size) == sparse_dim + dense_dim' is not satisfied: len(size) = 2, sparse_dim = 3, "
     "dense_dim = 0"),
    ([[0.5]], [1.], (3,), TypeError, "indices must be an integer array, got dtype float64"),
    ([[0]], [1], (3,), TypeError, "values must be a floating point or complex array"),
    ([[0]], [1.], (-3,), ValueError, "shape must not contain negative sizes"),
    ([[0]], [1.], ("a",), TypeError, "shape must be a sequence of integers"),
])
def test_sparse_grad_validation(indices, values, shape, exc, message):
    with pytest.raises(exc) as info:
        SparseGrad(indices, values, shape)
    assert message in str(info.value)
    if HAVE_TORCH and exc is RuntimeError:
        import torch

        # the same text as torch.sparse_coo_tensor's own checks
        with pytest.raises(RuntimeError) as theirs:
            torch.sparse_coo_tensor(torch.tensor(indices), torch.tensor(values), shape,
                                    check_invariants=True)
        assert str(theirs.value) == message


def test_fill_zero_empties_the_gradient_and_zero_grad_uses_it():
    w = nbopt.Parameter(np.ones((3, 2)))
    g = SparseGrad([[0, 2]], np.ones((2, 2)), (3, 2))
    w.grad = g
    opt = nbopt.Adagrad([w], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert w.grad is g and g.nnz == 0 and g.shape == (3, 2)
    opt.step()       # an empty gradient: step advances, nothing moves
    assert opt.state[w]["step"] == 1
    np.testing.assert_array_equal(w, np.ones((3, 2)))
    with pytest.raises(ValueError, match="filled with zeros"):
        g.fill(1.0)


# -- scipy.sparse --------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["coo_matrix", "csr_matrix", "csc_matrix", "coo_array",
                                 "csr_array"])
def test_scipy_sparse_gradients_step_like_sparse_grads(fmt):
    sp = pytest.importorskip("scipy.sparse", reason="scipy is an optional dependency")
    rng = np.random.default_rng(0)
    rows, cols = np.array([0, 2, 2, 5, 2]), np.array([1, 0, 0, 3, 0])
    vals = rng.standard_normal(5).astype(np.float32)
    coo = sp.coo_matrix((vals, (rows, cols)), shape=(6, 4))
    m = getattr(sp, fmt)(coo)
    g = SparseGrad.from_scipy(m)
    assert g.shape == (6, 4) and g.sparse_dim == 2 and g.dtype == np.float32
    np.testing.assert_allclose(g.to_dense(), coo.toarray(), rtol=1e-6)
    assert is_sparse_grad(m)
    for cls, kw in [(SparseAdam, dict(lr=0.1)), (nbopt.Adagrad, dict(lr=0.1)),
                    (nbopt.SGD, dict(lr=0.1))]:
        a = nbopt.Parameter(np.ones((6, 4), np.float32))
        b = nbopt.Parameter(np.ones((6, 4), np.float32))
        oa, ob = cls([a], **kw), cls([b], **kw)
        a.grad, b.grad = m, SparseGrad.from_scipy(m)
        oa.step()
        ob.step()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, np.ones((6, 4), np.float32))


def test_from_scipy_refuses_other_objects():
    sp = pytest.importorskip("scipy.sparse", reason="scipy is an optional dependency")
    with pytest.raises(TypeError, match="expected a scipy.sparse"):
        SparseGrad.from_scipy(np.ones((2, 2)))
    if hasattr(sp, "coo_array"):
        try:
            one_d = sp.coo_array(np.array([0.0, 1.0, 0.0]))
        except (TypeError, ValueError):   # scipy without 1-D sparse arrays
            one_d = None
        if one_d is not None and len(one_d.shape) == 1:
            with pytest.raises(ValueError, match="only 2-D"):
                SparseGrad.from_scipy(one_d)


# -- rejection by the other algorithms -------------------------------------------

def _torch_message(cls_name, grad_kind="sparse", **kw):
    import torch

    p = torch.nn.Parameter(torch.zeros(4, 3))
    opt = getattr(torch.optim, cls_name)([p], **kw)
    p.grad = torch.sparse_coo_tensor([[0, 2]], torch.ones(2, 3), (4, 3), check_invariants=True) \
        if grad_kind == "sparse" else torch.ones(4, 3)
    with pytest.raises(Exception) as info:
        opt.step()
    return type(info.value), str(info.value)


REJECTING = [
    ("Adam", {}, "Adam does not support sparse gradients, please consider SparseAdam instead"),
    ("AdamW", {}, "Adam does not support sparse gradients, please consider SparseAdam instead"),
    ("Adadelta", {}, "Adadelta does not support sparse gradients"),
    ("Adamax", {}, "Adamax does not support sparse gradients"),
    ("ASGD", {}, "ASGD does not support sparse gradients"),
    ("NAdam", {}, "NAdam does not support sparse gradients"),
    ("RAdam", {}, "RAdam does not support sparse gradients"),
    ("RMSprop", {}, "RMSprop does not support sparse gradients"),
    ("Rprop", {}, "Rprop does not support sparse gradients"),
    ("Adagrad", dict(weight_decay=0.1),
     "weight_decay option is not compatible with sparse gradients"),
    ("Adagrad", dict(fused=True), "`fused` does not support sparse grad or complex param"),
    ("SGD", dict(weight_decay=0.1),
     "add(sparse, dense) is not supported. Use add(dense, sparse) instead."),
    ("SGD", dict(fused=True), "`_fused_sgd` does not support sparse gradients"),
]


@pytest.mark.parametrize("name,kw,message", REJECTING,
                         ids=[f"{n}{'-' + ','.join(k) if k else ''}" for n, k, _ in REJECTING])
def test_sparse_gradient_rejected_before_anything_changes(name, kw, message):
    rng = np.random.default_rng(1)
    a = nbopt.Parameter(rng.standard_normal((4, 3)))
    b = nbopt.Parameter(rng.standard_normal(5))
    c = nbopt.Parameter(rng.standard_normal(2))
    opt = getattr(nbopt, name)([{"params": [a]}, {"params": [b, c]}], lr=0.01, **kw)
    for p in (a, b, c):
        p.grad = np.ones(p.shape)
    opt.step()
    before = ([np.array(p) for p in (a, b, c)], copy.deepcopy(opt.state_dict()))
    c.grad = SparseGrad([[0, 1, 1]], np.ones(3), (2,))
    with pytest.raises(RuntimeError) as info:
        opt.step()
    assert str(info.value) == message
    for p, old in zip((a, b, c), before[0]):
        np.testing.assert_array_equal(p, old)
    after = opt.state_dict()
    for pid, entry in before[1]["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(after["state"][pid][key], value)
    if HAVE_TORCH:
        assert _torch_message(name, **kw) == (RuntimeError, message)


def test_sparse_grad_of_wrong_shape_or_dtype_is_refused():
    w = nbopt.Parameter(np.zeros((4, 3)))
    opt = nbopt.Adagrad([w], lr=0.1)
    w.grad = SparseGrad([[0]], np.ones((1, 2)), (4, 2))
    with pytest.raises(RuntimeError, match=r"grad has shape \(4, 2\) but the parameter has "
                                           r"shape \(4, 3\)"):
        opt.step()
    w.grad = SparseGrad([[0]], np.ones((1, 3), np.float32), (4, 3))
    with pytest.raises(RuntimeError, match="grad has dtype float32 but the parameter has dtype "
                                           "float64"):
        opt.step()
    assert opt.state[w]["step"] == 0
    w.grad = [1, 2]
    with pytest.raises(TypeError, match="grad must be a numpy array or None, got list"):
        opt.step()


# -- Adagrad and SGD specifics ----------------------------------------------------

def test_mixed_dense_and_sparse_gradients_in_one_group():
    """A sparse and a dense parameter in one Adagrad group step exactly as each
    does alone, and the cached steady-state step (dense gradients kept across
    steps) is left and re-entered correctly around the sparse steps."""
    rng = np.random.default_rng(4)
    e0, d0 = rng.standard_normal((8, 3)), rng.standard_normal(6)
    steps = 8
    sparse_steps = {3, 4, 6}
    dense_d = [rng.standard_normal(6) for _ in range(steps)]
    dense_e = [rng.standard_normal((8, 3)) for _ in range(steps)]
    sparse_e = [SparseGrad(rng.integers(0, 8, (1, 5)), rng.standard_normal((5, 3)), (8, 3))
                for _ in range(steps)]

    def grad_e(k):
        return sparse_e[k] if k in sparse_steps else dense_e[k]

    e, d = nbopt.Parameter(e0.copy()), nbopt.Parameter(d0.copy())
    opt = nbopt.Adagrad([e, d], lr=0.1, lr_decay=0.01)
    held_d, held_e = np.zeros(6), np.zeros((8, 3))
    steady_seen = []
    for k in range(steps):
        held_d[...] = dense_d[k]
        d.grad = held_d                     # the same arrays every dense step
        if k in sparse_steps:
            e.grad = sparse_e[k]
        else:
            held_e[...] = dense_e[k]
            e.grad = held_e
        opt.step()
        steady_seen.append(opt._flat[0].flat[0]._steady is not None)
    assert steady_seen[1] and steady_seen[2] and steady_seen[-1]
    assert not any(steady_seen[k] for k in sparse_steps)

    e_alone, d_alone = nbopt.Parameter(e0.copy()), nbopt.Parameter(d0.copy())
    oe = nbopt.Adagrad([e_alone], lr=0.1, lr_decay=0.01)
    od = nbopt.Adagrad([d_alone], lr=0.1, lr_decay=0.01)
    for k in range(steps):
        g = grad_e(k)
        e_alone.grad = g if k in sparse_steps else g.copy()
        d_alone.grad = dense_d[k].copy()
        oe.step()
        od.step()
    np.testing.assert_array_equal(d, d_alone)
    np.testing.assert_array_equal(e, e_alone)
    np.testing.assert_array_equal(opt.state[e]["sum"], oe.state[e_alone]["sum"])
    assert opt.state[e]["step"] == oe.state[e_alone]["step"] == steps
    if HAVE_TORCH:
        import torch

        te, td = (torch.nn.Parameter(torch.from_numpy(x.copy())) for x in (e0, d0))
        to = torch.optim.Adagrad([te, td], lr=0.1, lr_decay=0.01)
        for k in range(steps):
            g = grad_e(k)
            te.grad = torch.sparse_coo_tensor(torch.from_numpy(g.indices.copy()),
                                              torch.from_numpy(g.values), g.shape,
                                              check_invariants=True) \
                if k in sparse_steps else torch.from_numpy(g.copy())
            td.grad = torch.from_numpy(dense_d[k].copy())
            to.step()
        np.testing.assert_allclose(e, te.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(d, td.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_momentum_buffer_is_dense_and_continues_with_dense_grads():
    w = nbopt.Parameter(np.zeros((5, 2)))
    opt = nbopt.SGD([w], lr=0.1, momentum=0.5)
    w.grad = SparseGrad([[1, 1]], np.ones((2, 2)), (5, 2))
    opt.step()
    buf = opt.state[w]["momentum_buffer"]
    assert type(buf) is np.ndarray and buf.shape == (5, 2)
    np.testing.assert_array_equal(buf, [[0, 0], [2, 2], [0, 0], [0, 0], [0, 0]])
    w.grad = np.ones((5, 2))
    opt.step()
    np.testing.assert_allclose(opt.state[w]["momentum_buffer"][1], [2.0, 2.0])
    np.testing.assert_allclose(opt.state[w]["momentum_buffer"][0], [1.0, 1.0])


# -- SparseAdam ------------------------------------------------------------------------

@pytest.mark.parametrize("kw,exc,message", [
    (dict(lr=0.0), ValueError, "Invalid learning rate: 0.0"),
    (dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (dict(lr=float("nan")), ValueError, "Invalid learning rate: nan"),
    (dict(eps=0.0), ValueError, "Invalid epsilon value: 0.0"),
    (dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (dict(betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    (dict(lr="tensor:[0.1,0.2]"), ValueError, "Tensor lr must be 1-element"),
])
def test_sparse_adam_hyper_parameter_validation(kw, exc, message):
    kw = {k: (np.array(json.loads(v[7:])) if isinstance(v, str) else v) for k, v in kw.items()}
    with pytest.raises(exc) as info:
        SparseAdam([nbopt.Parameter(np.zeros(3))], **kw)
    assert str(info.value) == message
    if HAVE_TORCH:
        import torch

        tkw = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        with pytest.raises(exc) as theirs:
            torch.optim.SparseAdam([torch.nn.Parameter(torch.zeros(3))], **tkw)
        assert str(theirs.value) == message


def test_sparse_adam_defaults_and_complex_params():
    w = nbopt.Parameter(np.zeros(3))
    opt = SparseAdam([w])
    assert opt.defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "maximize": False}
    assert list(opt.param_groups[0]) == ["params", "lr", "betas", "eps", "maximize"]
    z = nbopt.Parameter(np.zeros(2, np.complex64))
    message = ("Complex params at indices [[0, 1], [1, 0]]: "
               "SparseAdam does not support complex parameters")
    with pytest.raises(ValueError) as info:
        SparseAdam([{"params": [w, z]}, {"params": [nbopt.Parameter(np.zeros(2, np.complex128))]}])
    assert str(info.value) == message
    g = SparseGrad([[0]], np.ones(1), (2,))
    with pytest.raises(ValueError) as info:
        SparseAdam([{"params": [w]}, {"params": [nbopt.Parameter(np.zeros(2)), g]}])
    assert str(info.value) == ("Sparse params at indices [[1, 1]]: "
                               "SparseAdam requires dense parameter tensors")
    if HAVE_TORCH:
        import torch

        sparse = torch.sparse_coo_tensor([[0]], torch.ones(1), (2,)).requires_grad_()
        with pytest.raises(ValueError) as theirs:
            torch.optim.SparseAdam([{"params": [torch.nn.Parameter(torch.zeros(3))]},
                                    {"params": [torch.nn.Parameter(torch.zeros(2)), sparse]}])
        assert str(theirs.value) == str(info.value)
    # torch checks at construction only; nbopt refuses a later group at step time
    opt.add_param_group({"params": [z]})
    z.grad = SparseGrad([[0]], np.ones(1, np.complex64), (2,))
    with pytest.raises(ValueError, match="SparseAdam does not support complex parameters"):
        opt.step()


def test_sparse_adam_refuses_dense_gradients_before_anything_changes():
    a, b = nbopt.Parameter(np.ones((3, 2))), nbopt.Parameter(np.ones(4))
    opt = SparseAdam([a, b], lr=0.1)
    a.grad = SparseGrad([[0, 2, 0]], np.ones((3, 2)), (3, 2))
    b.grad = np.ones(4)
    message = "SparseAdam does not support dense gradients, please consider Adam instead"
    with pytest.raises(RuntimeError) as info:
        opt.step()
    assert str(info.value) == message
    assert len(opt.state) == 0
    np.testing.assert_array_equal(a, np.ones((3, 2)))
    if HAVE_TORCH:
        assert _torch_message("SparseAdam", grad_kind="dense") == (RuntimeError, message)


def test_sparse_adam_state_layout_and_step_counting():
    w = nbopt.Parameter(np.ones((5, 2), np.float32))
    skipped = nbopt.Parameter(np.ones(3, np.float32))
    opt = SparseAdam([w, skipped], lr=0.1)
    w.grad = SparseGrad(np.zeros((1, 0)), np.zeros((0, 2), np.float32), (5, 2))
    opt.step()                                   # empty gradient: step advances only
    w.grad = SparseGrad([[4, 1, 4]], np.ones((3, 2), np.float32), (5, 2))
    opt.step()
    sd = opt.state_dict()
    assert list(sd["state"]) == [0]              # no gradient: no state
    entry = sd["state"][0]
    assert list(entry) == ["step", "exp_avg", "exp_avg_sq"]
    assert type(entry["step"]) is int and entry["step"] == 2
    assert entry["exp_avg"].dtype == np.float32 and entry["exp_avg"].shape == (5, 2)
    # rows 0, 2, 3 never had a value: nothing moved there
    for row in (0, 2, 3):
        np.testing.assert_array_equal(w[row], [1, 1])
        np.testing.assert_array_equal(entry["exp_avg"][row], [0, 0])
    np.testing.assert_allclose(entry["exp_avg"][4], [0.2, 0.2], rtol=1e-6)
    np.testing.assert_allclose(entry["exp_avg"][1], [0.1, 0.1], rtol=1e-6)
    assert sd["param_groups"][0]["params"] == [0, 1]


def test_sparse_adam_checkpoint_roundtrip_and_resume(tmp_path):
    inputs = make_inputs("float32")
    case = SparseCase("SparseAdam", dict(lr=0.02, maximize=True))
    straight = run_nbopt(case, inputs)[STEPS]

    params = [nbopt.Parameter(inputs[f"p{k}"].copy()) for k in range(len(PARAMS))]
    opt = SparseAdam(params, lr=0.02, maximize=True)

    def run(opt, params, steps):
        for step in steps:
            for k, p in enumerate(params):
                g = step_grad(inputs, k, step)
                p.grad = None if g is None else SparseGrad(*g)
            opt.step()

    run(opt, params, range(20))
    nbopt.save({"opt": opt.state_dict(), "params": [np.array(p) for p in params]},
               tmp_path / "ckpt.npz")
    loaded = nbopt.load(tmp_path / "ckpt.npz")
    assert type(loaded["opt"]["state"][0]["step"]) is int
    params2 = [nbopt.Parameter(v) for v in loaded["params"]]
    opt2 = SparseAdam(params2, lr=0.5)
    opt2.load_state_dict(loaded["opt"])
    assert opt2.param_groups[0]["lr"] == 0.02
    run(opt2, params2, range(20, STEPS))
    for k, p in enumerate(params2):
        np.testing.assert_array_equal(p, straight[f"param{k}"])


def test_sparse_adam_load_state_dict_validates_before_changing_anything():
    w = nbopt.Parameter(np.ones((3, 2)))
    opt = SparseAdam([w], lr=0.1)
    w.grad = SparseGrad([[1]], np.ones((1, 2)), (3, 2))
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(sd)
    bad["state"][0]["exp_avg"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="has shape"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    bad["state"][0]["step"] = "three"
    with pytest.raises(ValueError, match="must be a real scalar"):
        opt.load_state_dict(bad)
    assert opt.state[w]["step"] == 1
    np.testing.assert_array_equal(opt.state[w]["exp_avg"], sd["state"][0]["exp_avg"])
    # state of another dtype and layout is converted on use
    good = copy.deepcopy(sd)
    good["state"][0]["exp_avg"] = np.asfortranarray(good["state"][0]["exp_avg"], np.float32)
    opt.load_state_dict(good)
    opt.step()
    assert opt.state[w]["exp_avg"].dtype == np.float64 and opt.state[w]["step"] == 2


def test_sparse_adam_closure_and_duplicate_params():
    w = nbopt.Parameter(np.ones(4))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = SparseAdam([w, w], lr=0.1)
    w.grad = SparseGrad([[1]], np.ones(1), (4,))
    assert opt.step(lambda: 3.5) == 3.5
    assert opt.state[w]["step"] == 2             # stepped once per occurrence, as torch
    if HAVE_TORCH:
        import torch

        t = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
        with pytest.warns(UserWarning):
            to = torch.optim.SparseAdam([t, t], lr=0.1)
        t.grad = torch.sparse_coo_tensor([[1]], torch.ones(1, dtype=torch.float64), (4,),
                                         check_invariants=True)
        to.step()
        np.testing.assert_allclose(w, t.detach().numpy(), rtol=1e-12)
