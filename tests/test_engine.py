"""The element-wise engine's own paths give the same numbers as the plain one:
parallel chunked kernels, the cached steady-state step, segment merging."""
from __future__ import annotations

import numpy as np
import pytest

import nbopt
from nbopt import config
from conftest import HAVE_TORCH, requires_torch

ALGOS = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
         ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
         ("AdamW", dict(lr=0.01))]


def _run(cls, kwargs, dtype, *, persistent_grads, steps=12, lr_schedule=False, sizes=(37, 5, 64)):
    rng = np.random.default_rng(7)
    params = [nbopt.Parameter(rng.standard_normal(n).astype(dtype)) for n in sizes]
    grads = [[rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(steps)]
    opt = getattr(nbopt, cls)(params, **kwargs)
    held = [np.zeros(n, dtype) for n in sizes]
    for k in range(steps):
        for p, g, h in zip(params, grads[k], held):
            if persistent_grads:
                h[...] = g
                p.grad = h              # same array object every step
            else:
                p.grad = g.copy()
        if lr_schedule:
            opt.param_groups[0]["lr"] = kwargs["lr"] * (0.9 ** k)
        opt.step()
    return [np.array(p) for p in params], opt


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls,kwargs", ALGOS, ids=[a[0] for a in ALGOS])
def test_steady_state_step_matches_the_general_path(cls, kwargs, dtype):
    fast, opt = _run(cls, kwargs, dtype, persistent_grads=True, lr_schedule=True)
    assert opt._flat[0].flat[0]._steady is not None, "steady path was never taken"
    slow, _ = _run(cls, kwargs, dtype, persistent_grads=False, lr_schedule=True)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls,kwargs", ALGOS, ids=[a[0] for a in ALGOS])
def test_parallel_chunked_kernels_match_serial(cls, kwargs, dtype, monkeypatch):
    serial, _ = _run(cls, kwargs, dtype, persistent_grads=False)
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 0)
    monkeypatch.setattr(config, "CHUNK_SIZE", 7)       # many uneven chunks per parameter
    parallel, _ = _run(cls, kwargs, dtype, persistent_grads=False)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("knob,value", [("CHUNK_SIZE", 16), ("PARALLEL_THRESHOLD", 0),
                                         ("_serial_only", True)])
def test_changing_a_config_knob_mid_run_rebuilds_the_steady_plan(knob, value, monkeypatch):
    # the engine reads the knobs at every step: a cached plan made under the
    # old ones (its chunk table, its serial/parallel build) must not survive
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 1 << 40)
    monkeypatch.setattr(config, "_serial_only", False)
    p = nbopt.Parameter(np.zeros(100, np.float32))
    p.grad = np.ones(100, np.float32)
    opt = nbopt.SGD([p], lr=0.1)
    for _ in range(3):
        opt.step()
    before = opt._flat[0].flat[0]._steady
    assert before is not None and len(before.chunks) == 1
    monkeypatch.setattr(config, knob, value)
    opt.step()
    after = opt._flat[0].flat[0]._steady
    assert after is not before, f"a plan made before {knob} changed was reused"
    if knob == "CHUNK_SIZE":
        assert len(after.chunks) == 1      # still serial: one chunk
    if knob == "PARALLEL_THRESHOLD":
        assert len(after.chunks) > 1       # parallel now, in chunks
    np.testing.assert_allclose(p, np.full(100, -0.4, np.float32), rtol=1e-6)


def test_writing_a_step_count_leaves_the_steady_path():
    w = nbopt.Parameter(np.zeros(4))
    v = nbopt.Parameter(np.zeros(4))
    w.grad, v.grad = np.ones(4), np.ones(4)
    opt = nbopt.Adam([w, v], lr=0.1)
    opt.step()
    opt.step()
    opt.state[v]["step"] = 10           # v's bias correction now differs from w's
    opt.step()
    assert float(opt.state[w]["step"]) == 3 and float(opt.state[v]["step"]) == 11
    ref_w = nbopt.Parameter(np.zeros(4))
    ref_w.grad = np.ones(4)
    ref = nbopt.Adam([ref_w], lr=0.1)
    for _ in range(3):
        ref.step()
    np.testing.assert_array_equal(w, ref_w)
    assert not np.array_equal(v, w)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed (live comparison)")
@pytest.mark.parametrize("cls,kwargs", ALGOS, ids=[a[0] for a in ALGOS])
def test_steady_state_with_changing_lr_matches_torch(cls, kwargs):
    import torch

    got, _ = _run(cls, kwargs, "float64", persistent_grads=True, lr_schedule=True)
    rng = np.random.default_rng(7)
    sizes = (37, 5, 64)
    params = [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(n))) for n in sizes]
    grads = [[rng.standard_normal(n) for n in sizes] for _ in range(12)]
    opt = getattr(torch.optim, cls)(params, **kwargs)
    for k in range(12):
        for p, g in zip(params, grads[k]):
            p.grad = torch.from_numpy(g.copy())
        opt.param_groups[0]["lr"] = kwargs["lr"] * (0.9 ** k)
        opt.step()
    for a, b in zip(got, params):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_arena_step_is_one_segment():
    arena = nbopt.ParameterArena([np.ones((3, 4)), np.ones(5), np.ones((2, 2))],
                                 dtype=np.float32)
    opt = nbopt.SGD(arena.params, lr=0.5)
    opt.step()
    steady = opt._flat[0].flat[0]._steady
    assert steady is not None and steady.seg.shape[0] == 1
    assert steady.seg[0, 3] == arena.data.size
    np.testing.assert_array_equal(arena.data, np.ones(arena.data.size, np.float32))
    arena.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(arena.data, np.full(arena.data.size, 0.5, np.float32))


def test_import_nbopt_compiles_and_loads_no_numba():
    """Kernels load at an algorithm's first step; `import nbopt` stays light."""
    import subprocess
    import sys

    code = "import sys, nbopt, nbopt.nn, nbopt.swa_utils, nbopt.lr_scheduler; " \
           "print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_steady_path_sees_a_grad_reassigned_on_any_parameter():
    """The cached plan is trusted while no .grad is assigned anywhere; one
    assignment (here to the last of many arena parameters) must be seen."""
    arena = nbopt.ParameterArena([np.zeros(4) for _ in range(50)], dtype=np.float64)
    opt = nbopt.SGD(arena.params, lr=1.0)
    arena.grad[...] = 1.0
    opt.step()
    opt.step()                                   # steady path from here on
    assert opt._flat[0].flat[0]._steady is not None
    last = arena.params[-1]
    last.grad = np.full(4, 10.0)                 # a new array, outside the arena
    opt.step()
    np.testing.assert_array_equal(last, np.full(4, -12.0))
    np.testing.assert_array_equal(arena.params[0], np.full(4, -3.0))
    last.grad = None                             # and None skips it
    opt.step()
    np.testing.assert_array_equal(last, np.full(4, -12.0))
    np.testing.assert_array_equal(arena.params[0], np.full(4, -4.0))


@pytest.mark.parametrize("size", [1, 4])
@pytest.mark.parametrize("change", ["replace", "append", "remove", "new_list"])
def test_steps_follow_in_place_changes_to_group_params(change, size):
    """group["params"] may be edited between steps (torch reads it every step);
    the cached plan must notice, including a size-1 parameter replaced by
    another with the same value (equal by value, not the same object)."""
    arena = nbopt.ParameterArena([np.zeros(size) for _ in range(3)], dtype=np.float64)
    opt = nbopt.SGD(arena.params, lr=1.0)
    arena.grad[...] = 1.0
    opt.step()
    opt.step()                                   # steady path from here on
    params = opt.param_groups[0]["params"]
    extra = nbopt.Parameter(np.full(size, -2.0))
    extra.grad = np.full(size, 5.0)
    if change == "replace":
        params[1] = extra
    elif change == "append":
        params.append(extra)
    elif change == "remove":
        del params[2]        # list.remove would compare by value
        extra = arena.params[2]
    else:
        opt.param_groups[0]["params"] = [arena.params[0], arena.params[1], extra]
    opt.step()
    np.testing.assert_array_equal(arena.params[0], np.full(size, -3.0))
    if change == "remove":
        np.testing.assert_array_equal(extra, np.full(size, -2.0))    # no longer stepped
    else:
        np.testing.assert_array_equal(extra, np.full(size, -7.0))
    if change == "replace":
        np.testing.assert_array_equal(arena.params[1], np.full(size, -2.0))  # left alone


@requires_torch
@pytest.mark.parametrize("cls,kwargs", [("NAdam", dict(lr=0.05)), ("ASGD", dict(lr=0.05, t0=2))])
def test_loaded_float64_scalar_state_next_to_fresh_state_matches_torch(cls, kwargs):
    """torch's load_state_dict casts a float64 parameter's scalar state to
    float64, while state created after the load starts as float32: one group
    then holds both kinds, and each must round as torch does."""
    import torch

    rng = np.random.default_rng(3)
    a0, b0 = rng.standard_normal(6), rng.standard_normal(4)
    grads = [(rng.standard_normal(6), rng.standard_normal(4)) for _ in range(12)]

    def run(lib, make_param, to_numpy):
        a, b = make_param(a0), make_param(b0)
        opt = getattr(lib, cls)([a, b], **kwargs)
        for k, (ga, gb) in enumerate(grads):
            if k == 4:
                saved = opt.state_dict()          # only `a` has state
                opt = getattr(lib, cls)([a, b], **kwargs)
                opt.load_state_dict(saved)
            a.grad = ga.copy() if lib is nbopt else torch.from_numpy(ga.copy())
            b.grad = None if k < 4 else (gb.copy() if lib is nbopt else torch.from_numpy(gb.copy()))
            opt.step()
        dtypes = [(name, to_numpy(v).dtype) for p in (a, b) for name, v in opt.state[p].items()]
        return to_numpy(a), to_numpy(b), dtypes

    ours = run(nbopt, lambda v: nbopt.Parameter(v.copy()), np.asarray)
    theirs = run(torch.optim, lambda v: torch.nn.Parameter(torch.from_numpy(v.copy())),
                 lambda t: t.detach().numpy())
    assert ours[2] == theirs[2]                           # float64 for `a`, float32 for `b`
    for have, want in zip(ours[:2], theirs[:2]):
        np.testing.assert_allclose(have, want, rtol=1e-14, atol=0)


def test_params_snapshot_check_is_by_identity():
    """The cached-plan check of a group's params list: the same objects pass;
    a different object fails even when it compares equal by value or claims
    equality with anything."""
    from unittest import mock

    from nbopt.optimizer import _same_params

    a, b = nbopt.Parameter(np.zeros(3)), nbopt.Parameter(np.zeros(3))
    assert _same_params([a, b], [a, b], True)
    assert not _same_params([a, nbopt.Parameter(np.zeros(3))], [a, b], True)
    assert not _same_params([a, mock.ANY], [a, b], True)
    assert not _same_params([a], [a, b], True)
    one, other = nbopt.Parameter(np.zeros(1)), nbopt.Parameter(np.zeros(1))
    assert _same_params([one], [one], False)
    assert not _same_params([other], [one], False)       # equal values, other object


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
def test_flat_buffers_start_on_a_cache_line(dtype):
    """The arena's buffers and the flat state arrays nbopt allocates start on a
    64-byte boundary (a full-width vector load then stays in one cache line)."""
    arena = nbopt.ParameterArena([np.ones(3), np.ones(5)], dtype=dtype)
    assert arena.data.ctypes.data % 64 == 0 and arena.grad.ctypes.data % 64 == 0
    w = nbopt.Parameter(np.ones(7, dtype))
    w.grad = np.ones(7, dtype)
    opt = nbopt.Adam([w, *arena.params], amsgrad=True)
    opt.step()
    arrays = opt._flat[0].flat[0].arrays
    assert sorted(arrays) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    for array in arrays.values():
        assert array.ctypes.data % 64 == 0


@pytest.mark.parametrize("cls,kwargs", ALGOS, ids=[a[0] for a in ALGOS])
def test_new_gradient_arrays_every_step_stay_on_the_cached_plan(cls, kwargs):
    # the README's loop assigns new gradient arrays each step: the cached plan
    # takes their addresses instead of being rebuilt, with the same numbers
    fast, opt = _run(cls, kwargs, "float32", persistent_grads=False, lr_schedule=True)
    steady = opt._flat[0].flat[0]._steady
    assert steady is not None and steady.per_slot
    ref, _ = _run(cls, kwargs, "float32", persistent_grads=True, lr_schedule=True)
    for a, b in zip(fast, ref):
        np.testing.assert_array_equal(a, b)


def test_a_bad_new_gradient_on_the_cached_plan_changes_nothing():
    ps = [nbopt.Parameter(np.ones(4, np.float32)) for _ in range(2)]
    opt = nbopt.Adam(ps, lr=0.1)
    for _ in range(3):
        for p in ps:
            p.grad = np.ones(4, np.float32)
        opt.step()
    fg = opt._flat[0].flat[0]
    assert fg._steady is not None
    before = [np.array(p) for p in ps] + [np.array(fg.arrays["exp_avg"]), fg.steps.copy()]
    buf = np.ones(5, np.float32)
    ps[0].grad = np.ones(4, np.float32)
    ps[1].grad = np.ones(3, np.float32)            # wrong shape
    with pytest.raises(RuntimeError, match="shape"):
        opt.step()
    ps[1].grad = ps[1].view(np.ndarray)[::-1]      # a reversed view of its own memory
    with pytest.raises(RuntimeError, match="single memory location"):
        opt.step()
    after = [np.array(p) for p in ps] + [np.array(fg.arrays["exp_avg"]), fg.steps.copy()]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    ps[1].grad = buf[1:]
    opt.step()                                      # a valid one steps again
    assert float(opt.state[ps[1]]["step"]) == 4.0


# -- the measured serial/parallel choice (issue 17) -------------------------------

def _steps_of(n, steps, monkeypatch, threshold, clock=None):
    from nbopt import engine

    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", threshold)
    monkeypatch.setattr(engine, "_PATHS", {})
    if clock is not None:
        monkeypatch.setattr(engine.time, "perf_counter", clock)
    rng = np.random.default_rng(3)
    p = nbopt.Parameter(rng.standard_normal(n).astype(np.float32))
    p.grad = rng.standard_normal(n).astype(np.float32)
    opt = nbopt.Adam([p], lr=0.01, weight_decay=0.1)
    for _ in range(steps):
        opt.step()
    return np.array(p), opt, engine._PATHS


def _timed_builds(monkeypatch, now, cost):
    """Make every measured plan's builds advance the clock ``now`` by
    ``cost[parallel]`` per call; returns the list of builds called, in order."""
    from nbopt import engine

    builds = []
    made = engine._Measure.__init__

    def init(self, key, spec, seg):
        made(self, key, spec, seg)

        def timed(kernel, parallel):
            def call(*args):
                builds.append(parallel)
                now[0] += cost[parallel]
                kernel(*args)
            return call

        self.paths = tuple((timed(k, par), c) for par, (k, c) in enumerate(self.paths))

    monkeypatch.setattr(engine._Measure, "__init__", init)
    return builds


@pytest.mark.parametrize("parallel_wins", [True, False])
def test_measured_choice_times_both_builds_and_keeps_the_numbers(parallel_wins, monkeypatch):
    from nbopt import engine

    if not config.parallel_allowed():
        pytest.skip("this process runs serial kernels only (Numba threading layer)")
    fixed, _, _ = _steps_of(20000, 20, monkeypatch, 1 << 62)       # serial throughout
    # a clock that the builds advance by a set cost each: the wanted one is faster
    now = [0.0]
    cost = {1: 1.0, 0: 2.0} if parallel_wins else {1: 2.0, 0: 1.0}
    builds = _timed_builds(monkeypatch, now, cost)
    measured, opt, paths = _steps_of(20000, 20, monkeypatch, None, clock=lambda: now[0])
    np.testing.assert_array_equal(measured, fixed)  # both builds compute the same values
    timed = builds[:engine.MEASURE_STEPS]
    # alternating blocks of consecutive steps of one build
    block = engine.MEASURE_BLOCK
    assert timed[:2 * block] == [0] * block + [1] * block
    assert timed.count(1) == timed.count(0) == engine.MEASURE_STEPS // 2
    assert list(paths.values()) == [parallel_wins]
    assert set(builds[engine.MEASURE_STEPS:]) == {int(parallel_wins)}   # then the winner
    # a new plan of the same class starts from the choice, and the general
    # path takes it too
    seg = opt._flat[0].flat[0]._steady.seg
    assert engine._runs_parallel(opt._flat[0].flat[0].spec, seg, np.float32) is parallel_wins


def test_a_changed_choice_is_measured_again_soon_before_it_holds(monkeypatch):
    # one measurement beside another pool's spinning threads can make the
    # serial build look faster: that choice must not hold for REMEASURE_EVERY steps
    from nbopt import engine

    if not config.parallel_allowed():
        pytest.skip("this process runs serial kernels only (Numba threading layer)")
    now = [0.0]
    cost = {1: 1.0, 0: 2.0}
    _timed_builds(monkeypatch, now, cost)
    _, opt, paths = _steps_of(20000, 2, monkeypatch, None, clock=lambda: now[0])
    measure = opt._flat[0].flat[0]._steady.measure
    assert measure is not None and measure.left
    # who wins each measurement: parallel, serial (a moment of interference),
    # parallel (back), parallel (confirmed)
    outcome = []
    for parallel_wins in (True, False, True, True):
        cost[1], cost[0] = (1.0, 2.0) if parallel_wins else (2.0, 1.0)
        for _ in range(engine.REMEASURE_EVERY + engine.MEASURE_STEPS):
            left = measure.left
            opt.step()
            if left == 1:           # that step ended a measurement
                break
        outcome.append((list(paths.values()), measure.until))
    assert outcome == [([True], engine.REMEASURE_FIRST), ([False], engine.REMEASURE_FIRST),
                       ([True], engine.REMEASURE_FIRST), ([True], engine.REMEASURE_EVERY)]


def test_measured_choice_stays_out_of_fixed_thresholds_and_small_steps(monkeypatch):
    from nbopt import engine

    _, opt, paths = _steps_of(20000, 12, monkeypatch, 1 << 17)     # a fixed threshold
    assert opt._flat[0].flat[0]._steady.measure is None and paths == {}
    _, opt, paths = _steps_of(engine.MEASURE_MIN - 1, 12, monkeypatch, None)
    assert opt._flat[0].flat[0]._steady.measure is None and paths == {}


def test_parallel_chunks_split_evenly_between_threads(monkeypatch):
    import numba

    from nbopt import engine

    threads = numba.get_num_threads()
    for total in (30000, 100000, 1000003):
        chunk = engine._parallel_chunk(total)
        chunks = engine._chunks(np.array([total]), chunk)
        assert chunk <= max(16, config.CHUNK_SIZE) and chunk % 16 == 0
        assert len(chunks) % threads == 0 or len(chunks) < threads
        per_thread = np.array_split(chunks[:, 2] - chunks[:, 1], threads)
        loads = [int(x.sum()) for x in per_thread]
        assert max(loads) - min(loads) <= 16 * len(chunks), loads


@pytest.mark.parametrize("cls,key", [("Adam", "maximize"), ("SGD", "nesterov"),
                                     ("Adam", "lr"), ("RMSprop", "centered")])
def test_deleting_an_option_the_steady_plan_reads_raises_before_anything_changes(cls, key):
    # torch's step reads the option and raises KeyError; the steady plan
    # must not run its kernel or write its step counts first
    p = nbopt.Parameter(np.linspace(-1, 1, 50))
    p.grad = np.linspace(1, 2, 50)
    opt = getattr(nbopt, cls)([p], lr=0.01)
    for _ in range(3):
        opt.step()
    assert opt._flat[0].flat[0]._steady is not None
    before = np.array(p), {k: np.array(v) for k, v in opt.state[p].items()}
    del opt.param_groups[0][key]
    with pytest.raises(KeyError):
        opt.step()
    np.testing.assert_array_equal(p, before[0])
    for k, v in before[1].items():
        np.testing.assert_array_equal(opt.state[p][k], v)


@pytest.mark.parametrize("cls,key,value", [
    ("Adam", "maximize", True), ("Adam", "weight_decay", 0.1), ("SGD", "nesterov", True),
    ("RMSprop", "centered", True), ("Adam", "amsgrad", True), ("AdamW", "lr", np.ones(1) * 0.01)])
def test_steady_plan_follows_option_edits(cls, key, value):
    """The steady plan reuses its kernel flags while the options they read
    are unchanged: an edit between steps takes effect at the next step, as
    on the general path (a plan dropped before every step)."""
    def run(drop_plan):
        rng = np.random.default_rng(5)
        p = nbopt.Parameter(rng.standard_normal(50))
        g = rng.standard_normal(50)
        kwargs = dict(lr=0.01, momentum=0.9) if cls == "SGD" else dict(lr=0.01)
        opt = getattr(nbopt, cls)([p], **kwargs)
        for k in range(8):
            p.grad = g                   # the same array: the steady plan holds
            if k == 4:
                opt.param_groups[0][key] = value
            if drop_plan and opt._flat:
                for fg in opt._flat[0].flat:
                    fg._steady = None
            opt.step()
            g = g * 0.9 + 0.1
        return np.array(p)

    def outcome(drop_plan):
        try:
            return run(drop_plan)
        except KeyError as error:       # torch's, for state the new option wants
            return repr(error)

    steady, general = outcome(False), outcome(True)
    if isinstance(general, str):
        assert steady == general and key in ("amsgrad", "centered")
    else:
        np.testing.assert_array_equal(steady, general)
