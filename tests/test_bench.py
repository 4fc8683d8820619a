"""The bench command's plumbing (its timings are reported, never asserted)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import nbopt
from nbopt import config
from nbopt.cli import bench


def test_workloads_parse():
    assert bench.parse_workload("10M") == (1, 10_000_000, False, None, False)
    assert bench.parse_workload("1000x1k@arena") == (1000, 1000, True, None, False)
    assert bench.parse_workload("10M@f64") == (1, 10_000_000, False, "float64", False)
    assert bench.parse_workload("1000x1k@newgrads") == (1000, 1000, False, None, True)
    with pytest.raises(Exception, match="bad workload tag"):
        bench.parse_workload("10M@gpu")
    with pytest.raises(Exception, match="written in place"):
        bench.parse_workload("10x1k@arena@newgrads")


def test_targets_are_the_issue_targets():
    assert bench.target("Adam", 1, 10_000_000, False, "float32") == ("floor", 1.15)
    assert bench.target("Adam", 100, 100_000, False, "float32") == ("floor", 1.2)
    assert bench.target("Adam", 1000, 1000, True, "float32") == ("floor", 2.0)
    assert bench.target("Adam", 1000, 1000, False, "float32") == ("floor", 4.0)
    assert bench.target("Adam", 1, 1000, False, "float32") == ("us", 10.0)
    assert bench.torch_target("Adagrad") == 1.0 and bench.torch_target("NAdam") == 3.0


def test_bench_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert bench.main(["--algorithms", "SGD,Adam", "--sizes", "2x1k@arena,1k@f64,3x1k@newgrads",
                       "--repeat", "2", "--no-torch", "--skip-startup",
                       "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["algorithm"], r["workload"], r["dtype"]) for r in rows] == [
        ("SGD", "2x1000@arena", "float32"), ("SGD", "1x1000", "float64"),
        ("SGD", "3x1000@newgrads", "float32"),
        ("Adam", "2x1000@arena", "float32"), ("Adam", "1x1000", "float64"),
        ("Adam", "3x1000@newgrads", "float32")]
    for r in rows:
        assert r["nbopt_s"] > 0 and r["floor_s"] > 0
        assert isinstance(r["target_met"], bool) or r["workload"].endswith("@newgrads")
    assert "nbopt/floor" in capsys.readouterr().out


def test_thread_count_is_settable():
    n = nbopt.get_num_threads()
    nbopt.set_num_threads(1)
    try:
        assert nbopt.get_num_threads() == 1
        w = nbopt.Parameter(np.zeros(10))
        w.grad = np.ones(10)
        nbopt.SGD([w], lr=1.0).step()
        np.testing.assert_array_equal(w, -np.ones(10))
    finally:
        nbopt.set_num_threads(n)


def test_workqueue_layer_falls_back_to_serial_kernels(monkeypatch):
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 0)
    monkeypatch.setattr(config, "_serial_only", True)      # as if Numba chose workqueue
    from nbopt.engine import _launch_shape
    from nbopt.registry import get

    spec = get("sgd")
    kernel, _ = _launch_shape(spec, np.array([[0, 0, 0, 10]], np.int64))
    assert kernel is spec.cpu[0]
    monkeypatch.setattr(config, "_serial_only", False)
    kernel, _ = _launch_shape(spec, np.array([[0, 0, 0, 10]], np.int64))
    assert kernel is spec.cpu[1]


def test_first_step_split_times_numba_start_up_then_the_step():
    """The cached-first-step figure is split in one process: Numba's own
    start-up first, then the step (which must still update the parameter)."""
    code = bench._FIRST_STEP_SPLIT.format(name="SGD").replace(
        "print(time.perf_counter() - t1, t2 - t1)",
        "print(time.perf_counter() - t1, t2 - t1, float(w[0]))")
    total, numba_part, w0 = map(float, bench._run_python(code).split())
    assert 0 < numba_part < total
    assert w0 == np.float32(-1e-3)


def test_torch_verdict_marks_targets_beyond_the_floor():
    assert bench.torch_verdict("Adam", 1.02, 1.1) == "ok"
    assert bench.torch_verdict("Adam", 0.98, 1.05) == "NO"       # 1.0x torch fused is reachable
    assert bench.torch_verdict("NAdam", 3.5, 4.0) == "ok"
    assert bench.torch_verdict("NAdam", 2.5, 4.0) == "NO"       # torch 4x the floor: 3x reachable
    assert bench.torch_verdict("ASGD", 1.4, 1.6) == "NO*"       # torch at 1.6x the floor


def test_newgrads_workload_assigns_new_gradient_arrays_every_step():
    ps = [nbopt.Parameter(np.zeros(3)) for _ in range(2)]
    sets = [[np.ones(3), np.ones(3)], [np.ones(3), np.ones(3)]]
    opt = nbopt.SGD(ps, lr=0.1)
    step = bench._with_new_grads(opt.step, ps, sets)
    seen = []
    for _ in range(3):
        step()
        seen.append([id(p.grad) for p in ps])
    assert seen[0] != seen[1] and seen[0] == seen[2]
    np.testing.assert_allclose(ps[0], -0.3)
