"""nbopt.distributed (issue 15): MPI tests, each an ``mpiexec -n N``
subprocess with a hard timeout, so that a hung rank fails the test instead of
hanging the suite.  Skipped, with the reason, without mpi4py/mpiexec
(``pip install "nbopt[mpi]"``).  One MPI job runs at a time (a file lock):
under ``pytest -n 2`` two oversubscribed jobs would starve each other."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from test_algorithm_lists import api_classes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "mpi")
TIMEOUT = 240          # seconds per mpiexec launch: a hang becomes a failure


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'nbopt[mpi]')")
    exe = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(exe):
        pytest.skip("mpiexec not found (pip install 'nbopt[mpi]' brings mpich's)")
    return exe


@contextlib.contextmanager
def _one_mpi_job_at_a_time():
    with open(os.path.join(tempfile.gettempdir(), "nbopt-mpi-tests.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mpirun(n: int, *args, timeout: int = TIMEOUT, check: bool = True):
    exe = _mpiexec()
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    with _one_mpi_job_at_a_time():
        try:
            out = subprocess.run([exe, "-n", str(n), sys.executable, *args], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"mpiexec -n {n} {' '.join(args)} hung (killed after {timeout} s):\n"
                        f"{e.stdout}\n{e.stderr}")
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_import_nbopt_does_not_import_mpi4py():
    code = ("import sys, nbopt, nbopt.optimizer; import nbopt.cli.bench_distributed; "
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


class _FakeComm:
    def __init__(self, size, rank):
        self.size, self.rank = size, rank

    def Get_size(self):
        return self.size

    def Get_rank(self):
        return self.rank


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 7])
def test_flat_space_splits_into_equal_contiguous_shards(ranks):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'nbopt[mpi]')")
    import numpy as np

    import nbopt
    from nbopt.distributed._common import FlatSpace

    params = [nbopt.Parameter(np.zeros(s, np.float32)) for s in (5, (3, 4), 1, 9)]
    params.append(nbopt.Parameter(np.zeros(2, np.complex64)))   # 4 real elements
    total = 5 + 12 + 1 + 9 + 4
    owned = []
    for r in range(ranks):
        space = FlatSpace(_FakeComm(ranks, r), 0, params, list(range(len(params))),
                          np.float32)
        assert space.total == total and space.chunk == -(-total // ranks)
        assert space.hi - space.lo <= space.chunk
        for i, a, b in space.pieces():
            owned.extend((i, k) for k in range(a, b))
        assert space.pieces() == space.ranges_of(r)
    # every element of every parameter is owned exactly once, in order
    sizes = [5, 12, 1, 9, 4]
    assert owned == [(i, k) for i, n in enumerate(sizes) for k in range(n)]
    # equal shards: all ranks but the last one(s) hold exactly ceil(total / P)
    counts = FlatSpace(_FakeComm(ranks, 0), 0, params, list(range(5)), np.float32).counts
    assert counts.sum() == total and counts.max() - counts[counts > 0].min() < counts.max()


def test_ring_model():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'nbopt[mpi]')")
    from nbopt.distributed.bench import model_rows, ring_time

    assert ring_time(4e7, 1, 5e-6, 1e10) == 0
    # (P-1) alpha + (P-1)/P n/beta
    assert ring_time(4e7, 4, 5e-6, 1e10) == pytest.approx(3 * 5e-6 + 0.75 * 4e-3)
    rows = model_rows(10_000_000, 4, 8, 0.01, 5e-6, 12.5e9)
    assert [r[0] for r in rows] == [1, 2, 4, 8, 16, 32, 64]
    for p, comm_s, plain, zero, s_plain, s_zero in rows:
        assert plain == pytest.approx(comm_s + 0.01) and zero == pytest.approx(comm_s + 0.01 / p)
        assert s_zero == -(-10_000_000 // p) * 8 and s_plain == 80_000_000
    # the bandwidth term saturates at 2 n / beta: at 64 ranks < 2x its value at 2 ranks
    assert rows[-1][1] - 2 * 63 * 5e-6 < 2 * (rows[1][1] - 2 * 5e-6)


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_bit_identical_to_one_process_for_every_elementwise_algorithm(ranks):
    out = mpirun(ranks, os.path.join(SCRIPTS, "check_exact.py"))
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ranks"] == ranks
    assert sorted(report["algorithms"]) == sorted(api_classes())
    assert sorted(report["results"]) == sorted(api_classes())
    expected = {"dist", "zero"} | ({"dist_allreduce"} if ranks <= 2 else set())
    for name, row in report["results"].items():
        assert set(row) == expected, (name, row)
        assert all(row.values()), (name, row)


@pytest.mark.parametrize("ranks", [2, 3])
def test_features_and_fault_behaviour(ranks):
    out = mpirun(ranks, os.path.join(SCRIPTS, "check_features.py"))
    lines = out.stdout.splitlines()
    assert lines[-1] == "ALL OK", out.stdout + out.stderr
    checks = [line for line in lines if line.startswith("ok ")]
    assert len(checks) == 15, checks
    shares = re.search(r"state bytes per rank \[([\d, ]+)\] vs single process (\d+)", out.stdout)
    per_rank = [int(v) for v in shares.group(1).split(",")]
    assert len(per_rank) == ranks and max(per_rank) <= int(shares.group(2)) / ranks + 64


def test_sharded_checkpoint_loads_on_a_different_number_of_ranks(tmp_path):
    script = os.path.join(SCRIPTS, "check_reshard.py")
    assert "ALL OK (save on 2 ranks)" in mpirun(2, script, "save", str(tmp_path)).stdout
    assert "ALL OK (load on 3 ranks)" in mpirun(3, script, "load", str(tmp_path)).stdout
    assert "ALL OK (load on 1 ranks)" in mpirun(1, script, "load", str(tmp_path)).stdout
    index = os.path.join(tmp_path, "ck", "index.npz")
    import nbopt

    assert nbopt.load(index)["world_size"] == 2


def test_an_uncaught_error_ends_every_rank():
    """A bad gradient on one rank, uncaught: with the agreement every rank
    raises and the job ends (no rank waits in a collective).  An error
    outside nbopt's collectives, on one rank only, needs ``python -m mpi4py``
    (MPI_Abort on an uncaught exception; docs/distributed.rst)."""
    code = ("import numpy as np, nbopt; from mpi4py import MPI\n"
            "from nbopt.distributed import DistributedOptimizer\n"
            "w = nbopt.Parameter(np.zeros(4, np.float32))\n"
            "opt = DistributedOptimizer(nbopt.SGD([w], lr=0.1))\n"
            "w.grad = np.ones(5 if MPI.COMM_WORLD.rank == 1 else 4, np.float32)\n"
            "opt.step()\n")
    out = mpirun(2, "-c", code, timeout=120, check=False)
    assert out.returncode != 0
    assert "grad has shape (5,)" in out.stderr and "DistributedStepError" in out.stderr
    code = ("from mpi4py import MPI; import numpy as np; c = MPI.COMM_WORLD\n"
            "if c.rank == 1: raise RuntimeError('user code failed on rank 1')\n"
            "c.Allreduce(MPI.IN_PLACE, np.zeros(1))\n")
    out = mpirun(2, "-m", "mpi4py", "-c", code, timeout=120, check=False)
    assert out.returncode != 0 and "user code failed on rank 1" in out.stderr


@pytest.mark.parametrize("zero", [False, True])
def test_data_parallel_example(zero):
    args = [os.path.join(ROOT, "examples", "data_parallel.py"), "--quick"]
    out = mpirun(2, *args, *(["--zero"] if zero else [])).stdout
    losses = [float(v) for v in re.findall(r"loss ([\d.]+)", out)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert "same weights on every rank: True" in out


def test_bench_distributed_reports_comm_compute_and_state():
    out = mpirun(2, "-m", "nbopt", "bench-distributed", "--size", "200k", "--steps", "2").stdout
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^(single process|DistributedOptimizer|ZeroRedundancyOptimizer)\s+(\d+)\s+([\d.]+)"
        r"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, flags=re.M)}
    assert set(rows) == {"single process", "DistributedOptimizer", "ZeroRedundancyOptimizer"}
    assert rows["DistributedOptimizer"][0] == rows["ZeroRedundancyOptimizer"][0] == "2"
    # Adam: 8 bytes of state per float32 element; ZeRO holds half on each of 2 ranks
    assert float(rows["single process"][4]) == pytest.approx(1.6, abs=0.05)
    assert float(rows["ZeroRedundancyOptimizer"][4]) == pytest.approx(0.8, abs=0.05)
    assert re.search(r"^\s+64\s", out, flags=re.M)          # the model's 64-rank row


@pytest.mark.parametrize("module", ["nbopt.distributed.data_parallel", "nbopt.distributed.zero",
                                    "nbopt.distributed.checkpoint"])
def test_docstring_examples(module, tmp_path, monkeypatch):
    """The docstrings' examples run (in one process: a communicator of size 1)."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'nbopt[mpi]')")
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
