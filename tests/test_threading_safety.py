"""Numba threading layers that cannot run a parallel kernel where nbopt would
launch one (issue 11, items 6 and 7).

Each scenario runs in its own interpreter, so that a child killed by Numba or a
process aborted by the workqueue layer fails the test instead of pytest.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from nbopt import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = config.DEFAULT_PARALLEL_THRESHOLD + 68_928         # 200k elements: a parallel step


def _run(tmp_path, code: str, timeout: float = 300, **env) -> str:
    script = tmp_path / "scenario.py"               # a file: spawn children import it
    script.write_text(textwrap.dedent(code))
    full = dict(os.environ)
    full.pop("NUMBA_THREADING_LAYER", None)
    full.pop("NBOPT_PARALLEL_THRESHOLD", None)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, full.get("PYTHONPATH")]))
    full.update(env)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "Terminating" not in proc.stderr, proc.stderr
    return proc.stdout


# For os.fork scenarios: wait for a child, killing it (instead of leaking a
# process hung in libgomp) if it takes too long; -9 then reads as a failure.
_WAIT = """
import os, signal, time


def wait(pid, limit=90.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -9
"""


# Parent: an Adam and an SGD-with-momentum optimizer over one N-element float32
# parameter each, stepped twice (the second step leaves a cached steady plan
# holding the parallel kernel).  Child: (a) a new optimizer loaded from the
# parent's state, (b) with fork, the inherited optimizer itself; each steps
# three times and sends its parameter and state back; (c) an LBFGS step.  The
# parent then takes the same steps, with the parallel kernels, and compares bit
# for bit.
_FORK_SCENARIO = """
import multiprocessing as mp
import sys

import numpy as np

import nbopt
from nbopt import config

N = {n}
METHOD = {method!r}


def build(seed):
    rng = np.random.default_rng(seed)
    w = nbopt.Parameter(rng.standard_normal(N).astype(np.float32))
    w.grad = rng.standard_normal(N).astype(np.float32)
    return w


def optimizer(name, w):
    if name == "Adam":
        return nbopt.Adam([w], lr=1e-2, weight_decay=1e-3)
    return nbopt.SGD([w], lr=1e-2, momentum=0.9, nesterov=True)


def snapshot(w, opt):
    state = opt.state_dict()["state"][0]
    return [np.array(w)] + [np.array(state[k]) for k in sorted(state)
                            if isinstance(state[k], np.ndarray) and state[k].size == N]


def three_steps(w, opt):
    for _ in range(3):
        opt.step()
    return snapshot(w, opt)


def lbfgs():
    # LBFGS picks its own kernels (config.runs_parallel), outside the engine
    rng = np.random.default_rng(7)
    a = rng.uniform(0.5, 2.0, N).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    x = nbopt.Parameter(np.zeros(N, np.float32))
    opt = nbopt.LBFGS([x], lr=1, max_iter=4, history_size=3)

    def closure():
        x.grad = a * x - b
        return float(np.sum(0.5 * a * x * x - b * x, dtype=np.float64))

    opt.step(closure)
    return [np.array(x)]


def child(queue, name, w0, grad, state_dict, inherited):
    w = nbopt.Parameter(w0.copy())
    w.grad = grad
    opt = optimizer(name, w)
    opt.load_state_dict(state_dict)
    out = {{"loaded": three_steps(w, opt), "serial": not config.parallel_allowed()}}
    if inherited is not None:
        out["inherited"] = three_steps(*inherited)
    if name == "SGD":
        out["lbfgs"] = lbfgs()
    queue.put(out)


if __name__ == "__main__":
    ctx = mp.get_context(METHOD)
    parents = {{}}
    for seed, name in enumerate(("Adam", "SGD")):
        w = build(seed)
        opt = optimizer(name, w)
        opt.step()
        opt.step()
        parents[name] = (w, opt)
    import numba
    layer = numba.threading_layer()           # started by the parent's steps
    print("layer", layer)
    for name, (w, opt) in parents.items():
        queue = ctx.Queue()
        inherited = (w, opt) if METHOD == "fork" else None
        proc = ctx.Process(target=child, args=(queue, name, np.array(w), w.grad,
                                                opt.state_dict(), inherited))
        proc.start()
        try:
            got = queue.get(timeout=120)
        except Exception:
            got = None
        proc.join()
        print(name, "child exit", proc.exitcode)
        if got is None:
            continue
        print(name, "child serial", bool(got["serial"]))
        want = {{"loaded": three_steps(w, opt), "lbfgs": lbfgs()}}
        want["inherited"] = want["loaded"]
        print(name, "parent parallel", config.parallel_allowed())
        for key in ("loaded", "inherited", "lbfgs"):
            if key in got:
                same = all(np.array_equal(a, b) for a, b in zip(got[key], want[key]))
                print(name, key, "equal", same and len(got[key]) == len(want[key]))
"""


def _fork_unsafe(layer: str) -> bool:
    if layer != "omp":
        return False
    from numba.np.ufunc import omppool
    return omppool.openmp_vendor == "GNU"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_child_steps_after_a_parallel_step_in_the_parent(tmp_path, method):
    """Item 6: a multiprocessing child of a process that ran a parallel step
    steps too (under GNU OpenMP with fork, on the serial kernels) and gets the
    parent's results bit for bit."""
    out = _run(tmp_path, _FORK_SCENARIO.format(n=N, method=method))
    lines = set(out.splitlines())
    layer = out.split("layer ", 1)[1].split()[0]
    serial = method == "fork" and _fork_unsafe(layer)
    for name in ("Adam", "SGD"):
        assert f"{name} child exit 0" in lines, out
        assert f"{name} child serial {serial}" in lines, out
        assert f"{name} parent parallel {layer != 'workqueue'}" in lines, out
        assert f"{name} loaded equal True" in lines, out
        if method == "fork":
            assert f"{name} inherited equal True" in lines, out
    assert "SGD lbfgs equal True" in lines, out


def test_fork_before_any_parallel_step_keeps_parallel_kernels(tmp_path):
    """A child forked before the parent started Numba's layer starts its own
    and keeps the parallel kernels."""
    out = _run(tmp_path, _WAIT + textwrap.dedent(f"""
        import os
        import numba
        import numpy as np
        import nbopt
        from nbopt import config

        w = nbopt.Parameter(np.zeros({N}, np.float32))
        w.grad = np.ones({N}, np.float32)
        pid = os.fork()
        if pid == 0:
            opt = nbopt.SGD([w], lr=1.0)
            opt.step(); opt.step()
            ok = np.array_equal(w, np.full({N}, -2, np.float32))
            parallel = config.parallel_allowed() == (numba.threading_layer() != "workqueue")
            os._exit(0 if ok and parallel else 3)
        print("child status", wait(pid))
    """))
    assert "child status 0" in out.splitlines(), out


def test_grandchild_of_an_openmp_parent_steps(tmp_path):
    """A process forked from a forked child inherits the parent's GNU OpenMP
    state too: it must also stay on the serial kernels."""
    out = _run(tmp_path, _WAIT + textwrap.dedent(f"""
        import os
        import numpy as np
        import nbopt
        from nbopt import config

        w = nbopt.Parameter(np.zeros({N}, np.float32))
        w.grad = np.ones({N}, np.float32)
        opt = nbopt.SGD([w], lr=1.0)
        opt.step(); opt.step()

        def fork_and_step(level):
            pid = os.fork()
            if pid == 0:
                if level:
                    os._exit(fork_and_step(level - 1))
                opt.step()
                os._exit(0 if w[0] == -3 and w[-1] == -3 else 3)
            return wait(pid, 30.0 + 30.0 * level) % 256

        print("grandchild status", fork_and_step(1))
    """))
    assert "grandchild status 0" in out.splitlines(), out     # 247: killed, hung


# Item 7: four threads each build an optimizer over their own large parameter
# and take their first steps at once, three rounds; the parallel kernel must
# not even have been compiled, and every result must equal a one-thread rerun.
_WORKQUEUE_SCENARIO = """
import threading

import numba
import numpy as np

import nbopt
from nbopt import config
from nbopt.registry import get

N, THREADS = {n}, 4


def build(seed):
    rng = np.random.default_rng(seed)
    w = nbopt.Parameter(rng.standard_normal(N).astype(np.float32))
    w.grad = rng.standard_normal(N).astype(np.float32)
    return w


def steps(w, seed):
    if seed % 3 == 2:
        # LBFGS chooses its own kernels (config.runs_parallel), outside the engine
        opt = nbopt.LBFGS([w], lr=0.5, max_iter=3, history_size=2)

        def closure():
            w.grad = (w * np.float32(2)).astype(np.float32)
            return float(np.dot(w, w))
        opt.step(closure)
        return
    opt = (nbopt.Adam if seed % 3 else nbopt.SGD)([w], lr=1e-2, weight_decay=1e-3)
    for _ in range(3):
        opt.step()


for rnd in range(3):
    seeds = [THREADS * rnd + k for k in range(THREADS)]
    params = [build(s) for s in seeds]
    barrier = threading.Barrier(THREADS)
    errors = []

    def work(w, seed):
        try:
            barrier.wait()
            steps(w, seed)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w, s)) for w, s in zip(params, seeds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for w, s in zip(params, seeds):
        ref = build(s)
        steps(ref, s)
        assert np.array_equal(w, ref), s
print("layer", numba.threading_layer())
print("parallel allowed", config.parallel_allowed())
print("parallel compiled", bool(get("adam").cpu[1].signatures or get("sgd").cpu[1].signatures))
print("done")
"""


def test_workqueue_layer_threads_stepping_at_once(tmp_path):
    """Item 7: under the workqueue layer, simultaneous first steps from four
    threads do not abort the process: the layer is known before the first
    parallel launch, and the steps run the serial kernels."""
    out = _run(tmp_path, _WORKQUEUE_SCENARIO.format(n=N), NUMBA_THREADING_LAYER="workqueue")
    lines = out.splitlines()
    assert lines == ["layer workqueue", "parallel allowed False", "parallel compiled False",
                     "done"], out


def test_default_layer_allows_parallel_kernels(tmp_path):
    """Item 7: the decision is made before any parallel launch, and with
    Numba's default layer parallel kernels stay allowed unless that layer is
    workqueue; a large step then caches the parallel kernel."""
    out = _run(tmp_path, f"""
        import numba
        import numpy as np
        import nbopt
        from nbopt import config
        from nbopt.registry import get

        assert config._serial_only is None
        allowed = config.parallel_allowed()          # starts the layer, runs no kernel
        assert not get("sgd").cpu[1].signatures
        layer = numba.threading_layer()
        assert allowed == (layer != "workqueue"), (allowed, layer)
        w = nbopt.Parameter(np.zeros({N}, np.float32))
        w.grad = np.ones({N}, np.float32)
        opt = nbopt.SGD([w], lr=1.0)
        opt.step(); opt.step()
        assert bool(get("sgd").cpu[1].signatures) == allowed   # the parallel kernel ran
        assert np.array_equal(w, np.full({N}, -2, np.float32))
        print("ok", layer, allowed)
    """)
    assert out.startswith("ok "), out


def test_unloadable_layer_warns_and_steps_serially(tmp_path):
    """A threading layer that cannot load (tbb forced without the tbb
    package) leaves large steps on the serial kernels, with a warning."""
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
        from numba.np.ufunc.parallel import _check_tbb_version_compatible
        _check_tbb_version_compatible()
        pytest.skip("tbb is installed here")
    except ImportError:
        pass
    out = _run(tmp_path, f"""
        import warnings
        import numpy as np
        import nbopt
        from nbopt import config

        w = nbopt.Parameter(np.zeros({N}, np.float32))
        w.grad = np.ones({N}, np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nbopt.SGD([w], lr=1.0).step()
        assert np.array_equal(w, -np.ones({N}, np.float32))
        assert config.parallel_allowed() is False
        print("warned", any("threading layer" in str(c.message) for c in caught))
    """, NUMBA_THREADING_LAYER="tbb")
    assert "warned True" in out.splitlines(), out


def test_the_decision_runs_once_under_a_lock(monkeypatch):
    """Threads that reach their first large step together wait for one
    decision instead of each starting Numba's layer."""
    calls = []
    started = threading.Event()

    def slow_layer():
        calls.append(1)
        started.set()
        threading.Event().wait(0.05)
        return "workqueue"

    monkeypatch.setattr(config, "_serial_only", None)
    monkeypatch.setattr(config, "threading_layer", slow_layer)
    results = []
    threads = [threading.Thread(target=lambda: results.append(config.parallel_allowed()))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]
    assert results == [False] * 8
    assert config.parallel_allowed() is False
