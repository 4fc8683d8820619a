"""The bench command's plumbing (its timings are reported, never asserted)."""
from __future__ import annotations

import json
import sys

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
    """Issue 17: 1k <= 3 us; 10x1k, 100x1k, 1000x1k <= 2x, 1.5x, 1.3x the kernel
    floor (an arena as its separate arrays); one array of 30k-1M <= 1.3x the
    kernel floor; 10M elements (one array, 100x100k, float64) <= 1.1x the
    bandwidth floor; Adafactor has none."""
    t = bench.target
    assert t("Adam", 1, 1000, False, "float32") == ("us", 3.0)
    assert t("Adam", 1, 1000, False, "float64") == ("us", 3.0)
    assert t("Adam", 10, 1000, False, "float32") == ("kernel", 2.0)
    assert t("Adam", 100, 1000, False, "float32") == ("kernel", 1.5)
    assert t("Adam", 1000, 1000, False, "float32") == ("kernel", 1.3)
    assert t("Adam", 1000, 1000, True, "float32") == ("kernel", 1.3)
    for n in (30_000, 100_000, 300_000, 1_000_000):
        assert t("SGD", 1, n, False, "float32") == ("kernel", 1.3)
    assert t("Adam", 1, 10_000_000, False, "float32") == ("bandwidth", 1.1)
    assert t("Adam", 100, 100_000, False, "float32") == ("bandwidth", 1.1)
    assert t("Adam", 1, 10_000_000, False, "float64") == ("bandwidth", 1.1)
    assert t("Adafactor", 1, 1000, False, "float32") == ("none", None)
    assert bench.torch_target("Adagrad") == 1.0 and bench.torch_target("NAdam") == 3.0


def test_default_sizes_are_the_issue_workloads():
    assert bench.DEFAULT_SIZES == ["1k", "10x1k", "100x1k", "1000x1k", "1000x1k@arena", "30k",
                                   "100k", "300k", "1M", "10M", "100x100k", "10M@f64"]
    bench.workload_list(",".join(bench.DEFAULT_SIZES))     # every one parses


def test_bench_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert bench.main(["--algorithms", "SGD,Adam", "--sizes", "2x1k@arena,1k@f64,3x1k@newgrads",
                       "--repeat", "2", "--no-torch", "--no-contenders", "--skip-startup",
                       "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["algorithm"], r["workload"], r["dtype"]) for r in rows] == [
        ("SGD", "2x1000@arena", "float32"), ("SGD", "1x1000", "float64"),
        ("SGD", "3x1000@newgrads", "float32"),
        ("Adam", "2x1000@arena", "float32"), ("Adam", "1x1000", "float64"),
        ("Adam", "3x1000@newgrads", "float32")]
    for r in rows:
        assert r["nbopt_s"] > 0 and r["floor_s"] > 0
        # both floors on every row, and nbopt's ratio to each
        assert 0 < r["kernel_floor_s"] < float("inf")
        assert r["kernel_floor_mode"] in ("serial", "parallel_threads", "parallel_chunks")
        assert r["nbopt_over_floor"] == r["nbopt_s"] / r["floor_s"]
        assert r["nbopt_over_kernel_floor"] == r["nbopt_s"] / r["kernel_floor_s"]
        assert isinstance(r["target_met"], bool) or r["workload"].endswith("@newgrads")
    assert [r["target"] for r in rows[:2]] == ["<= 2x kernel floor", "<= 3 us"]
    out = capsys.readouterr().out
    assert "bw floor" in out and "kern floor" in out and "/kern" in out
    assert "optax" not in out.splitlines()[-1]           # --no-contenders: no column


def _flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


@pytest.mark.parametrize("name", [n for n in bench.ALGORITHMS if n not in ("Adafactor", "Muon")])
def test_kernel_floor_runs_the_algorithms_own_kernels_over_one_flat_array(name):
    """The kernel floor's state has taken ten steps and its scalars are the
    eleventh's: one call of its serial kernel leaves the flat parameter
    exactly where eleven nbopt steps leave the separate arrays (same maths,
    same options); every variant runs and stays finite."""
    options = bench.ALGORITHMS[name]
    values, grads = bench._workload(3, 7, "float32")
    calls = bench.kernel_floor_calls(name, options, values, grads, "float32")
    assert "serial" in calls
    assert set(calls) <= {"serial", "parallel_threads", "parallel_chunks"}
    params = [nbopt.Parameter(v.copy()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    opt = getattr(nbopt, name)(params, **options)
    for _ in range(11):
        opt.step()
    calls["serial"]()
    flat_p = calls["serial"].keep[0]
    np.testing.assert_array_equal(flat_p, _flat(params))
    for call in calls.values():
        call()
    assert np.isfinite(flat_p).all()
    for state in calls["serial"].keep[2]:
        assert np.isfinite(state).all()


def test_kernel_floor_chunk_tables(monkeypatch):
    table = bench._chunk_table(10, 4)
    assert table.tolist() == [[0, 0, 4], [0, 4, 8], [0, 8, 10]]
    assert bench._chunk_table(5, 5).tolist() == [[0, 0, 5]]
    monkeypatch.setattr(config, "CHUNK_SIZE", 16)
    values, grads = bench._workload(1, 100, "float64")
    calls = bench.kernel_floor_calls("Adam", {"lr": 1e-3}, values, grads, "float64")
    if config.parallel_allowed():
        assert set(calls) == {"serial", "parallel_threads", "parallel_chunks"}
    else:                                   # workqueue, or forked after OpenMP: serial only
        assert set(calls) == {"serial"}
    # no kernel floor for the algorithms without element-wise kernels
    assert bench.kernel_floor_calls("Adafactor", {"lr": 1e-2}, values, grads,
                                    "float64") == {}


def test_judge_picks_the_floor_of_the_target():
    row = {"algorithm": "Adam", "nbopt_s": 12e-6, "floor_s": 4e-6, "kernel_floor_s": 10e-6}
    bench.judge(row, "Adam", 1, 30_000, False, "float32", False)
    assert row["target_kind"] == "kernel" and row["target_met"] is True
    assert row["nbopt_over_kernel_floor"] == pytest.approx(1.2)
    row = {"algorithm": "Adam", "nbopt_s": 12e-3, "floor_s": 10e-3, "kernel_floor_s": 9e-3}
    bench.judge(row, "Adam", 1, 10_000_000, False, "float32", False)
    assert row["target_kind"] == "bandwidth" and row["target_met"] is False
    assert row["target"] == "<= 1.1x bandwidth floor"
    row = {"algorithm": "Adam", "nbopt_s": 2e-6, "floor_s": 1e-6, "kernel_floor_s": 1e-6,
           "optax_s": 4e-6, "deepspeed_s": 1e-6}
    bench.judge(row, "Adam", 1, 1000, False, "float32", False, contenders=["optax", "deepspeed"])
    assert row["target"] == "<= 3 us" and row["target_met"] is True
    assert row["optax_speedup"] == 2.0 and row["optax_target_met"] is True
    assert row["deepspeed_speedup"] == 0.5 and row["deepspeed_target_met"] is False
    # no kernel floor (an algorithm without element-wise kernels): no kernel target
    row = {"algorithm": "SGD", "workload": "10x1000", "dtype": "float32", "nbopt_s": 2e-6,
           "floor_s": 1e-6}
    bench.judge(row, "SGD", 10, 1000, False, "float32", False)
    assert row["nbopt_over_kernel_floor"] is None and row["target_met"] is None
    line = bench._line(row, False, [])
    # nbopt, bw floor, kern floor, /bw, /kern, target
    assert line.split()[3:] == ["2.0", "us", "1.0", "us", "-", "2.00x", "-", "-"]


# -- optional contenders ---------------------------------------------------------------

def test_contenders_are_left_out_when_not_importable(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optax", None)          # import optax: ImportError
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    found, missing = bench.find_contenders()
    assert found == [] and set(missing) == {"deepspeed", "optax"}
    assert bench.find_contenders(use_torch=False)[1]["deepspeed"] == "--no-torch"
    assert bench.main(["--algorithms", "Adam", "--sizes", "1k", "--repeat", "1", "--no-torch",
                       "--skip-startup"]) == 0
    out = capsys.readouterr().out
    assert "contenders: none" in out
    left_out = [line for line in out.splitlines() if line.startswith("left out: ")]
    assert len(left_out) == 1 and "pip install optax" in left_out[0]
    header = next(line for line in out.splitlines() if line.startswith("algorithm"))
    assert "optax" not in header and "deepspeed" not in header


def test_contender_columns_when_importable(monkeypatch, tmp_path, capsys):
    """A contender found importable gets a time and a speedup column on the
    rows of the algorithms it has; one that fails is reported in one line
    and left out of the later rows, never raised."""
    made = []

    def fake_optax(name, options, values, grad_sets, new_grads):
        if name not in bench.OPTAX:
            return None
        made.append(name)
        return lambda: sum(v[0] for v in values)

    def broken(name, options, values, grad_sets, new_grads):
        raise RuntimeError("cannot build the extension")

    monkeypatch.setattr(bench, "find_contenders", lambda use_torch=True, wanted=None: (
        ["deepspeed", "optax"], {}))
    monkeypatch.setattr(bench, "optax_step", fake_optax)
    monkeypatch.setattr(bench, "deepspeed_step", broken)
    out_json = tmp_path / "rows.json"
    assert bench.main(["--algorithms", "Adam,ASGD", "--sizes", "1k,2x1k", "--repeat", "1",
                       "--no-torch", "--skip-startup", "--json", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())
    out = capsys.readouterr().out
    assert made == ["Adam", "Adam"]                          # optax has no ASGD
    assert all(r["optax_s"] > 0 and r["optax_speedup"] > 0 for r in rows[:2])
    assert all("optax_s" not in r for r in rows[2:])
    assert rows[0]["contender_errors"] == {"deepspeed": "RuntimeError: cannot build the "
                                                        "extension"}
    assert "contender_errors" not in rows[1]                 # not tried again
    assert out.count("deepspeed failed, left out from here on") == 1
    header = next(line for line in out.splitlines() if line.startswith("algorithm"))
    assert header.split()[-4:] == ["deepspeed", "speedup", "optax", "speedup"]


def test_contenders_that_lack_the_algorithm_or_dtype_are_not_built():
    values, grads = bench._workload(2, 5, "float64")
    assert bench.deepspeed_step("SGD", {"lr": 1e-3}, values, [grads], False) is None
    assert bench.deepspeed_step("Adam", {"lr": 1e-3}, values, [grads], False) is None  # f64
    assert set(bench.DEEPSPEED) == {"Adam", "AdamW", "Adagrad"}
    assert set(bench.OPTAX) < set(bench.ALGORITHMS)


def test_optax_contender_steps_when_installed():
    try:
        import jax
        import optax  # noqa: F401
    except ImportError:                     # an optional contender, never a dependency
        pytest.skip("optax is not importable")
    values, grads = bench._workload(2, 5, "float32")
    step = bench.optax_step("Adam", {"lr": 1e-3}, values, [grads, grads], True)
    step()
    if not jax.config.jax_enable_x64:
        values64, grads64 = bench._workload(2, 5, "float64")
        assert bench.optax_step("Adam", {"lr": 1e-3}, values64, [grads64], False) is None
    assert bench.optax_step("ASGD", {"lr": 1e-2}, values, [grads], False) is None


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
