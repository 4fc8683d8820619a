"""``nbopt.warmup``: after it, a step compiles nothing.

Each check runs in a fresh process (in this one, other tests have compiled
kernels already) and counts the signatures of every Numba dispatcher in it:
a kernel a step needs and warmup did not prepare adds one, whether Numba
compiles it or loads it from its disk cache (which fires no ``numba:compile``
event, so counting events would miss it, and ``NBOPT_CACHE=0`` to force
compilation costs a minute per algorithm).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import nbopt
from nbopt._warmup import ALGORITHMS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import gc, json, sys
import numpy as np
from numba.core.dispatcher import Dispatcher
import nbopt
from nbopt.parameter import SparseGrad


def signatures():
    return {id(d): (d.py_func.__qualname__, len(d.overloads))
            for d in gc.get_objects() if isinstance(d, Dispatcher)}


def new_signatures(before):
    return sorted(name for key, (name, n) in signatures().items()
                  if n > before.get(key, (name, 0))[1])


algo, warm_dtype, other_dtype = sys.argv[1:]
cls = getattr(nbopt, algo)
# a user's parameters: one above NBOPT_PARALLEL_THRESHOLD (the parallel
# kernels), small ones (the serial kernels)
SHAPES = {"Adafactor": [(600, 300), (40, 30), (7,)], "Muon": [(600, 300), (30, 40)],
          "SparseAdam": [(3000, 100), (50, 4)]}


def steps(dtype):
    before = signatures()
    if algo == "LBFGS":
        for ls in (None, "strong_wolfe"):
            x = nbopt.Parameter(np.linspace(-1, 1, 300_000).astype(dtype))
            opt = cls([x], max_iter=4, line_search_fn=ls)

            def closure():
                x.grad = np.array(x, copy=True)
                return float(0.5 * np.dot(x, x))
            opt.step(closure)
            opt.step(closure)
        return new_signatures(before)
    params = [nbopt.Parameter(np.ones(s, dtype))
              for s in SHAPES.get(algo, [(300_000,), (1000,), (3,)])]
    # one kernel call per group: the large one parallel, the small ones serial
    opt = cls([{"params": params[:1]}, {"params": params[1:]}], lr=0.01)
    for _ in range(3):
        for p in params:
            if algo == "SparseAdam":
                rows = np.array([[0, 5, 0, len(p) - 1]])
                p.grad = SparseGrad(rows, np.full((4, p.shape[1]), 0.25, dtype), p.shape)
            else:
                p.grad = np.full(p.shape, 0.25, dtype)
        opt.step()
    return new_signatures(before)


nbopt.warmup([algo], dtypes=[warm_dtype])
warm = steps(warm_dtype)
cold = steps(other_dtype)     # the control: not warmed, so it compiles
print(json.dumps({"warm": warm, "cold": cold}))
"""


@pytest.mark.parametrize("algo, dtype, other", [
    ("Adam", "float32", "float64"),
    ("RMSprop", "float64", "float32"),
    ("Adafactor", "float32", "float64"),
    ("Muon", "float32", "float64"),
    ("SparseAdam", "float32", "float64"),
    ("LBFGS", "float64", "float32"),
])
def test_after_warmup_a_step_compiles_nothing(algo, dtype, other):
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, algo, dtype, other], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["warm"] == [], f"compiled after warmup: {result['warm']}"
    assert result["cold"], "the control step compiled nothing: the counter does not count"


def test_every_optimizer_has_a_warmup_recipe():
    classes = {name for name in nbopt.__all__
               if isinstance(getattr(nbopt, name), type)
               and issubclass(getattr(nbopt, name), nbopt.Optimizer)
               and getattr(nbopt, name) is not nbopt.Optimizer}
    assert set(ALGORITHMS) == classes


def test_arguments():
    seconds = nbopt.warmup([nbopt.SGD, "adam"], dtypes="float32")
    assert set(seconds) == {("SGD", "float32"), ("Adam", "float32")}
    assert all(s >= 0 for s in seconds.values())
    with pytest.raises(ValueError, match="unknown algorithm 'Adamm'; choose from SGD"):
        nbopt.warmup(["Adamm"])
    with pytest.raises(ValueError, match="float32 and float64 parameters, got dtype 'float16'"):
        nbopt.warmup(["SGD"], dtypes=["float16"])


def test_documented():
    root = os.path.join(ROOT, "docs")
    text = "".join(open(os.path.join(dirpath, f)).read()
                   for dirpath, _, files in os.walk(root) for f in files if f.endswith(".rst"))
    assert "nbopt.warmup" in text
