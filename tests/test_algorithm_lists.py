"""One algorithm = one kernels module, one API class, one row in the test
table, one docs entry, one benchmark entry, one README row: they must agree."""
from __future__ import annotations

import importlib.util
import os
import re

import nbopt
from nbopt.optimizer import ElementwiseOptimizer
from nbopt.registry import REGISTRY, get

from cases import CASES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def all_optimizers() -> dict[str, type]:
    """Every optimizer class nbopt exports, element-wise or not."""
    return {name: getattr(nbopt, name) for name in nbopt.__all__
            if isinstance(getattr(nbopt, name), type)
            and issubclass(getattr(nbopt, name), nbopt.Optimizer)
            and getattr(nbopt, name) is not nbopt.Optimizer}


def api_classes() -> dict[str, type]:
    return {name: getattr(nbopt, name) for name in nbopt.__all__
            if isinstance(getattr(nbopt, name), type)
            and issubclass(getattr(nbopt, name), ElementwiseOptimizer)}


# kernels modules that serve something other than an element-wise optimizer
NOT_ELEMENTWISE = {"averaging", "lbfgs", "sparse_adam", "muon", "adafactor", "quantized"}


def kernel_modules() -> set[str]:
    folder = os.path.join(ROOT, "nbopt", "kernels")
    return {f[:-3] for f in os.listdir(folder)
            if f.endswith(".py") and not f.startswith("_")} - NOT_ELEMENTWISE


def test_every_api_class_has_its_kernels_module_and_registry_entry():
    classes = api_classes()
    for cls in classes.values():
        get(cls._algorithm)
    registered = {name for name, spec in REGISTRY.items() if spec.cpu is not None}
    assert {cls._algorithm for cls in classes.values()} == kernel_modules()
    assert kernel_modules() <= registered


def test_test_table_covers_every_algorithm():
    assert {c.cls for c in CASES} == set(api_classes())


def test_docs_have_one_entry_per_algorithm():
    with open(os.path.join(ROOT, "docs", "api", "algorithms.rst")) as f:
        documented = re.findall(r"^\.\. autoclass:: (\w+)", f.read(), flags=re.M)
    assert sorted(documented) == sorted(all_optimizers())


def test_benchmarks_cover_every_algorithm():
    from nbopt.cli.bench import ALGORITHMS as BENCH

    path = os.path.join(ROOT, "asv_bench", "benchmarks", "bench_step.py")
    spec = importlib.util.spec_from_file_location("asv_bench_step", path)
    asv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(asv)
    assert {name for name, _ in asv.ALGORITHMS} == set(api_classes())
    # nbopt/cli/bench.py steps every element-wise algorithm, and the others it has workloads for
    assert set(api_classes()) <= set(BENCH) <= set(all_optimizers())
    # the others have suites of their own, with the workloads that suit them
    others = set(all_optimizers()) - set(api_classes())
    suites = ""
    for f in os.listdir(os.path.dirname(path)):
        if f.endswith(".py"):
            with open(os.path.join(os.path.dirname(path), f)) as fh:
                suites += fh.read()
    assert all(re.search(rf"\b{name}\b", suites) for name in others), others


def test_readme_table_lists_every_algorithm():
    with open(os.path.join(ROOT, "README.md")) as f:
        rows = re.findall(r"^\| `nbopt\.(\w+)` \|", f.read(), flags=re.M)
    assert sorted(rows) == sorted(all_optimizers())
