"""torch's functional optimizer API: ``nbopt.optim.adam.adam`` for
``torch.optim.adam.adam``, ... and ``nbopt.optim._functional``.

* every parity case of tests/cases.py (CASES and VARIANT_CASES), driven as
  torch's classes call their functional forms (two param groups, gradients
  None on some steps), float32/float64/complex64: bit-identical to nbopt's
  own class API on the same arrays (always), and within the parity
  tolerance of torch's functional form (live, when torch is importable);
* the signatures are torch's (committed expectations, and live torch);
* bad inputs raise torch's errors (committed expectations, and live torch),
  before anything changes;
* nbopt's own promises: arbitrary memory layouts, shared and duplicated
  arrays, sparse gradients, SparseAdam.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os

import numpy as np
import pytest

import nbopt
from cases import CASES, SHAPES, TOLERANCES, VARIANT_CASES, grad_is_none, variant_dtypes
from conftest import HAVE_TORCH, live_tolerances, requires_torch
from functional_cases import (FUNCTIONS, QUALNAMES, Lib, base_call, call_case, case_call,
                              error_cases, run_functional)
from make_functional_signatures import describe, functional_exports, resolve
from nbopt.optim._functional_core import TORCH_REPORT_SUFFIX
from trajectory import make_inputs

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                    "functional_signatures.json")
STEPS = 8               # group 0's second parameter skips step 3, group 1 starts at step 1
DTYPES = ("float32", "float64", "complex64")
NP = Lib("numpy")


def expectations() -> dict:
    with open(DATA) as f:
        return json.load(f)


def _rows():
    rows = []
    for i, case in enumerate(CASES):
        rows += [(case, dtype, i) for dtype in DTYPES]
    for i, case in enumerate(VARIANT_CASES):
        rows += [(case, dtype, 1000 + i) for dtype in DTYPES if dtype in variant_dtypes(case)]
    return rows


ROWS = _rows()
ROW_IDS = [f"{case.id}-{dtype}" for case, dtype, _ in ROWS]


def run_class(case, inputs, steps: int) -> dict:
    """nbopt's class API on the same inputs, snapshot as run_functional's."""
    params = [[nbopt.Parameter(inputs[f"p{gi}{pi}"].copy()) for pi in range(len(shapes))]
              for gi, shapes in enumerate(SHAPES)]
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = np.array(opts["lr"], np.float32)
    if case.tensor_betas:
        opts["betas"] = tuple(np.array(b, np.float32) for b in opts.get("betas", (0.9, 0.999)))
    opt = getattr(nbopt, case.cls)([{"params": params[0]},
                                    {"params": params[1], **case.group1}], **opts)
    for step in range(steps):
        for gi, shapes in enumerate(SHAPES):
            for pi in range(len(shapes)):
                params[gi][pi].grad = None if grad_is_none(gi, pi, step) else \
                    inputs[f"g{gi}{pi}"][step].copy()
        opt.step()
    out = {}
    for gi, shapes in enumerate(SHAPES):
        for pi in range(len(shapes)):
            p = params[gi][pi]
            out[f"param{gi}{pi}"] = np.array(p)
            for key, value in opt.state.get(p, {}).items():
                if value is not None:
                    out[f"state{gi}{pi}.{key}"] = np.array(value)
    return out


@pytest.mark.parametrize("case,dtype,seed", ROWS, ids=ROW_IDS)
def test_matches_the_class_api(case, dtype, seed):
    inputs = make_inputs(seed, dtype)
    got = run_functional(NP, case, inputs, STEPS)
    want = run_class(case, inputs, STEPS)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@requires_torch
@pytest.mark.parametrize("case,dtype,seed", ROWS, ids=ROW_IDS)
def test_matches_torch_functional(case, dtype, seed):
    inputs = make_inputs(seed, dtype)
    got = run_functional(NP, case, inputs, STEPS)
    want = run_functional(Lib("torch"), case, inputs, STEPS)
    assert sorted(got) == sorted(want)
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        np.testing.assert_allclose(got[key].astype(wide), value.astype(wide), err_msg=key,
                                   **live_tolerances(dtype))


# -- signatures ------------------------------------------------------------------------------

def nbopt_name(qualname: str) -> str:
    return "nbopt" + qualname[len("torch"):]


@pytest.mark.parametrize("qualname", QUALNAMES)
def test_signature_matches_committed_torch_signature(qualname):
    want = expectations()["signatures"][qualname]
    assert describe(resolve(nbopt_name(qualname))) == want


@requires_torch
@pytest.mark.parametrize("qualname", QUALNAMES)
def test_signature_matches_live_torch(qualname):
    assert describe(resolve(nbopt_name(qualname))) == describe(resolve(qualname))


def test_functional_module_reexports_as_torch():
    import nbopt.optim._functional as F

    assert functional_exports(F) == expectations()["functional_exports"]
    if HAVE_TORCH:
        import torch.optim._functional as TF

        assert functional_exports(F) == functional_exports(TF)
    for name in FUNCTIONS:
        module = importlib.import_module(f"nbopt.optim.{name}")
        assert getattr(F, name) is getattr(module, name)
        assert name in module.__all__
    from nbopt.optim.adamw import AdamW

    assert AdamW is nbopt.AdamW
    # as in torch, not attributes of the package
    assert not hasattr(nbopt, "adam")


def test_committed_expectations_are_torch_2_13():
    assert expectations()["torch"].startswith("2.13.")


# -- errors ------------------------------------------------------------------------------------

def _snapshot(args, kwargs):
    """Copies of everything a call could change."""
    def copy(x):
        if isinstance(x, np.ndarray):
            return ("array", x.copy())
        if isinstance(x, list):
            return ("list", [id(v) for v in x], [copy(v) for v in x])
        return ("value", id(x))
    return [copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()}


def _same(a, b) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "array":
        return a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1], equal_nan=True)
    if a[0] == "list":
        return a[1] == b[1] and all(_same(x, y) for x, y in zip(a[2], b[2]))
    return a[1] == b[1]


ERRORS = error_cases()
ERROR_IDS = [case_id for case_id, *_ in ERRORS]


def _nbopt_outcome(fname, mutate):
    """Run the case through nbopt; on an error, check that nothing changed."""
    args, kwargs, applies = case_call(NP, fname, mutate)
    if not applies:
        return args, kwargs, "skip"
    before = _snapshot(args, kwargs)
    try:
        NP.function(fname)(*args, **kwargs)
    except Exception as error:   # noqa: BLE001 - the error is the result
        after = _snapshot(args, kwargs)
        assert all(_same(x, y) for x, y in zip(before[0], after[0])), "changed on error"
        assert all(_same(before[1][k], after[1][k]) for k in kwargs), "changed on error"
        return args, kwargs, [type(error).__name__, str(error)]
    return args, kwargs, None


def _assert_same_error(got, want, type_only, case_id):
    if want is not None:
        # torch's C++ checks end by sending the user to PyTorch's tracker; nbopt's don't
        want = [want[0], want[1].replace(TORCH_REPORT_SUFFIX, "")]
    if want is None or got is None:
        assert got == want, f"{case_id}: nbopt {got}, torch {want}"
    elif type_only:
        assert got[0] == want[0], f"{case_id}: nbopt {got}, torch {want}"
    else:
        assert got == want, case_id


@pytest.mark.parametrize("case_id,fname,mutate,type_only", ERRORS, ids=ERROR_IDS)
def test_errors_match_committed_torch_errors(case_id, fname, mutate, type_only):
    _, _, got = _nbopt_outcome(fname, mutate)
    if got == "skip":
        assert case_id not in expectations()["errors"]
        return
    _assert_same_error(got, expectations()["errors"][case_id], type_only, case_id)


@requires_torch
@pytest.mark.parametrize("case_id,fname,mutate,type_only", ERRORS, ids=ERROR_IDS)
def test_errors_match_live_torch(case_id, fname, mutate, type_only):
    args, _, got = _nbopt_outcome(fname, mutate)
    targs, _, want = call_case(Lib("torch"), fname, mutate)
    if got == "skip":
        assert want == "skip"
        return
    _assert_same_error(got, want, type_only, case_id)
    if want is None:
        # no error: the same update (or none)
        _assert_same_values(args, targs, case_id)


def _assert_same_values(args, targs, case_id):
    torch = Lib("torch")
    for a, t in zip(args, targs):
        if isinstance(a, list):
            assert len(a) == len(t), case_id
            for x, y in zip(a, t):
                _assert_same_values([x], [y], case_id)
        elif isinstance(a, np.ndarray):
            np.testing.assert_allclose(a, torch.numpy(t), rtol=1e-6, atol=1e-7, err_msg=case_id)
        elif a is None or isinstance(a, (int, float)):
            assert a == t, case_id


def test_fused_grad_scale_is_not_supported():
    args, kwargs = base_call(NP, "adam")
    before = _snapshot(args, kwargs)
    with pytest.raises(NotImplementedError, match="grad_scale"):
        NP.function("adam")(*args, fused=True, grad_scale=np.array(1.0, np.float32), **kwargs)
    assert all(_same(x, y) for x, y in zip(before[0], _snapshot(args, kwargs)[0]))


def test_bad_values_change_nothing():
    fn = NP.function("adam")
    for change, error in (
            (lambda a, k: a[2].__setitem__(1, a[2][1].astype(np.float64)), RuntimeError),
            (lambda a, k: a[0][1].setflags(write=False), ValueError),
            (lambda a, k: a[3][1].setflags(write=False), ValueError),
            (lambda a, k: a[1].__setitem__(1, a[0][1][::-1]), RuntimeError),     # overlap
            (lambda a, k: a[0].__setitem__(1, np.zeros(3, np.int64)), TypeError),
            (lambda a, k: k.__setitem__("lr", None), TypeError),
            (lambda a, k: a[5].__setitem__(1, np.array(0, np.complex64)), TypeError)):
        args, kwargs = base_call(NP, "adam")
        change(args, kwargs)
        before = _snapshot(args, kwargs)
        with pytest.raises(error):
            fn(*args, **kwargs)
        assert all(_same(x, y) for x, y in zip(before[0], _snapshot(args, kwargs)[0]))


# -- nbopt's promises: layouts, aliasing, sparse gradients -------------------------------------

def _adam_kwargs(**kw):
    return {**dict(amsgrad=True, beta1=0.9, beta2=0.99, lr=0.01, weight_decay=0.1, eps=1e-8,
                   maximize=False), **kw}


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_any_memory_layout(dtype):
    """Non-contiguous parameters, Fortran-ordered ones, and gradients or state
    in another memory order: the same numbers as all-contiguous arrays."""
    rng = np.random.default_rng(3)
    complex_ = np.dtype(dtype).kind == "c"

    def draw(shape):
        x = rng.standard_normal(shape)
        return (x + 1j * rng.standard_normal(shape) if complex_ else x).astype(dtype)

    base = [draw((6, 8)), draw((5, 4)), draw((7,))]
    grads = [[draw(p.shape) for p in base] for _ in range(3)]

    def odd_layouts():
        big = np.zeros((12, 8), dtype)
        big[::2] = base[0]
        params = [big[::2], np.asfortranarray(base[1]), base[2].copy()]
        states = [[np.zeros((6, 8), dtype, order="F"), np.zeros((5, 4), dtype),
                   np.zeros(14, dtype)[::2]] for _ in range(3)]
        return params, states

    def contiguous():
        return [p.copy() for p in base], [[np.zeros(p.shape, dtype) for p in base]
                                          for _ in range(3)]

    results = []
    for make in (odd_layouts, contiguous):
        params, (m, v, vmax) = make()
        steps = [np.array(0.0, np.float32) for _ in params]
        for g in grads:
            g = [np.asfortranarray(x) if x.ndim == 2 else x for x in g]
            nbopt.optim.adam.adam(params, g, m, v, vmax, steps, **_adam_kwargs())
        results.append([np.array(a) for a in params + m + v + vmax + steps])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_shared_and_duplicated_arrays_step_in_order():
    """A parameter listed twice steps twice; a step array shared by two
    entries is incremented twice; a gradient that is the parameter itself is
    read before it is written: as torch's for-loop does."""
    kw = _adam_kwargs(amsgrad=False)

    def run(lib):
        rng = np.random.default_rng(5)
        p, q, g = (lib.array(rng.standard_normal(4)) for _ in range(3))
        m1, v1, m2, v2 = (lib.array(np.zeros(4)) for _ in range(4))
        shared, other = lib.scalar(0.0), lib.scalar(0.0)
        lib.function("adam")([p, p, q], [g, g, q], [m1, m1, m2], [v1, v1, v2], [],
                             [shared, shared, other], **kw)
        return [lib.numpy(x) for x in (p, q, m1, v1, m2, v2, shared, other)]

    got = run(NP)
    assert got[-2] == 2 and got[-1] == 1
    # the same as one call per entry, in order
    rng = np.random.default_rng(5)
    p, q, g = (rng.standard_normal(4) for _ in range(3))
    m1, v1, m2, v2 = (np.zeros(4) for _ in range(4))
    s1, s2 = np.array(0.0, np.float32), np.array(0.0, np.float32)
    for lists in (([p], [g], [m1], [v1], [], [s1]), ([p], [g], [m1], [v1], [], [s1]),
                  ([q], [q], [m2], [v2], [], [s2])):
        nbopt.optim.adam.adam(*lists, **kw)
    for a, b in zip(got, (p, q, m1, v1, m2, v2, s1, s2)):
        np.testing.assert_array_equal(a, b)
    if HAVE_TORCH:
        for a, b in zip(got, run(Lib("torch"))):
            np.testing.assert_allclose(a, b, **TOLERANCES["float64"])


def test_sgd_momentum_buffers_are_created_in_the_list():
    p = np.array([1.0, -2.0])
    bufs = [None]
    kw = dict(weight_decay=0.1, momentum=0.9, lr=0.1, dampening=0.0, nesterov=True,
              maximize=False)
    nbopt.optim.sgd.sgd([p], [np.ones(2)], bufs, **kw)
    assert isinstance(bufs[0], np.ndarray)
    np.testing.assert_array_equal(bufs[0], np.ones(2) + 0.1 * np.array([1.0, -2.0]))
    untouched = [None]
    nbopt.optim.sgd.sgd([p], [np.ones(2)], untouched, **{**kw, "momentum": 0.0})
    assert untouched == [None]
    with pytest.raises(TypeError, match="item assignment"):
        nbopt.optim.sgd.sgd([p], [np.ones(2)], (None,), **kw)


def test_capturable_computes_the_default_path():
    """torch refuses CPU tensors with capturable=True; nbopt, as its classes,
    computes the default path."""
    a, kw = base_call(NP, "radam")
    b, _ = base_call(NP, "radam")
    nbopt.optim.radam.radam(*a, capturable=True, **kw)
    nbopt.optim.radam.radam(*b, **kw)
    for x, y in zip(a[0] + a[2], b[0] + b[2]):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("fname,options", [
    ("sgd", dict(weight_decay=0.0, momentum=0.0, lr=0.1, dampening=0.0, nesterov=False,
                 maximize=True)),
    ("sgd", dict(weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.1, nesterov=False,
                 maximize=False)),
    ("adagrad", dict(lr=0.1, weight_decay=0.0, lr_decay=0.01, eps=1e-10, maximize=False)),
])
def test_sparse_gradients_as_the_class(fname, options):
    from nbopt.parameter import SparseGrad

    rng = np.random.default_rng(11)
    p0 = rng.standard_normal((5, 3)).astype(np.float32)
    grads = [SparseGrad([[1, 3, 1]], rng.standard_normal((3, 3)).astype(np.float32), (5, 3))
             for _ in range(3)]
    p = p0.copy()
    if fname == "sgd":
        state = [None]
        for g in grads:
            nbopt.optim.sgd.sgd([p], [g], state, **options)
        cls = nbopt.SGD(w := [nbopt.Parameter(p0.copy())], lr=options["lr"],
                        momentum=options["momentum"], dampening=options["dampening"],
                        maximize=options["maximize"])
    else:
        s, step = np.zeros_like(p), np.array(0.0, np.float32)
        for g in grads:
            nbopt.optim.adagrad.adagrad([p], [g], [s], [step], **options)
        cls = nbopt.Adagrad(w := [nbopt.Parameter(p0.copy())], lr=options["lr"],
                            lr_decay=options["lr_decay"])
    for g in grads:
        w[0].grad = g
        cls.step()
    np.testing.assert_array_equal(p, w[0])
    if fname == "adagrad":
        np.testing.assert_array_equal(s, cls.state[w[0]]["sum"])


def _sparse_adam_run(lib, steps=3):
    rng = np.random.default_rng(13)
    p = lib.array(rng.standard_normal((6, 2)).astype(np.float32))
    m, v = lib.array(np.zeros((6, 2), np.float32)), lib.array(np.zeros((6, 2), np.float32))
    grads = [(rng.integers(0, 6, (1, 4)), rng.standard_normal((4, 2)).astype(np.float32))
             for _ in range(steps)]
    fn = lib.function("sparse_adam")
    for t, (idx, vals) in enumerate(grads, start=1):
        fn([p], [lib.sparse(idx, vals, (6, 2))], [m], [v], [t], eps=1e-8, beta1=0.9,
           beta2=0.99, lr=0.1, maximize=t == 2)
    return [lib.numpy(x) for x in (p, m, v)], grads


def test_sparse_adam_as_the_class():
    from nbopt.optim.sparse_adam import SparseAdam
    from nbopt.parameter import SparseGrad

    got, grads = _sparse_adam_run(NP)
    rng = np.random.default_rng(13)
    w = nbopt.Parameter(rng.standard_normal((6, 2)).astype(np.float32))
    opt = SparseAdam([w], lr=0.1, betas=(0.9, 0.99))
    for t, (idx, vals) in enumerate(grads, start=1):
        opt.param_groups[0]["maximize"] = t == 2
        w.grad = SparseGrad(idx, vals, (6, 2))
        opt.step()
    for a, b in zip(got, (w, opt.state[w]["exp_avg"], opt.state[w]["exp_avg_sq"])):
        np.testing.assert_array_equal(a, b)


@requires_torch
def test_sparse_adam_matches_torch():
    got, _ = _sparse_adam_run(NP)
    want, _ = _sparse_adam_run(Lib("torch"))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, **TOLERANCES["float32"])


def test_functions_are_documented():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "docs", "api", "algorithms.rst")) as f:
        text = f.read()
    for q in QUALNAMES:
        assert f".. autofunction:: {nbopt_name(q)}\n" in text, q
    for name in FUNCTIONS:
        assert inspect.getdoc(getattr(importlib.import_module(f"nbopt.optim.{name}"), name))


def test_parallel_kernels_give_the_same_numbers(monkeypatch):
    """Above config.PARALLEL_THRESHOLD the parallel kernel runs (direct
    launches and working copies alike): the same numbers as the serial one."""
    from nbopt import config

    def run():
        rng = np.random.default_rng(17)
        params = [rng.standard_normal((40, 30)).astype(np.float32),
                  np.asfortranarray(rng.standard_normal((20, 10))).astype(np.float32)]
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        state = [[np.zeros_like(p) for p in params] for _ in range(2)]
        steps = [np.array(0.0, np.float32) for _ in params]
        state[0][1] = np.zeros((20, 10), np.float32)      # C order: a working copy
        for _ in range(3):
            nbopt.optim.adam.adam(params, grads, *state, [], steps,
                                  **_adam_kwargs(amsgrad=False))
        return params + state[0] + state[1]

    serial = run()
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 16)
    monkeypatch.setattr(config, "CHUNK_SIZE", 64)
    if not config.runs_parallel(10 ** 6):
        pytest.skip("parallel kernels are off here (workqueue threading layer)")
    for a, b in zip(run(), serial):
        np.testing.assert_array_equal(a, b)


def test_integer_and_float64_step_arrays():
    """torch's ``step_t += 1`` works on any real tensor: the step's value is
    the same, so are the numbers; each array keeps its dtype."""
    def run(step):
        rng = np.random.default_rng(19)
        p, g = rng.standard_normal(5), rng.standard_normal(5)
        m, v = np.zeros(5), np.zeros(5)
        for _ in range(3):
            nbopt.optim.adam.adam([p], [g], [m], [v], [], [step], **_adam_kwargs(amsgrad=False))
        return p, step

    p32, s32 = run(np.array(0.0, np.float32))
    for step in (np.array(0, np.int64), np.array([0.0]), np.zeros(1, np.int32)):
        p, s = run(step)
        np.testing.assert_array_equal(p, p32)
        assert s.dtype == step.dtype and s.reshape(()) == 3


def test_functional_module_examples_run():
    """nbopt.optim._functional is private (tests/test_docs.py skips it) but
    documented: its example must run."""
    import doctest

    import nbopt.optim._functional as F

    result = doctest.testmod(F, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
