"""Record torch's functional optimizer API for tests/test_functional_torch.py.

Writes ``tests/data/functional_signatures.json``: the signature of every
functional form (``torch.optim.adam.adam``, ..., ``torch.optim._functional.
sparse_adam``: parameter names, kinds and defaults), the names
``torch.optim._functional`` re-exports, and the error torch raises (type and
message) for every bad-input case of ``tests/functional_cases.py``.  The test
compares nbopt with this file always, and with live torch when it is
importable.

Run with torch 2.13 installed::

    python tests/make_functional_signatures.py
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

OUT = os.path.join(HERE, "data", "functional_signatures.json")


def describe(fn) -> list:
    """``[[name, kind, has_default, default], ...]`` of ``fn``'s signature
    (annotations left out: torch's name Tensors, nbopt's take arrays)."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        has_default = p.default is not inspect.Parameter.empty
        out.append([p.name, p.kind.name, has_default, p.default if has_default else None])
    return out


def resolve(qualname: str):
    module, name = qualname.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def functional_exports(module) -> list:
    """The optimizer functions a ``_functional`` module exposes."""
    return sorted(name for name, value in vars(module).items()
                  if not name.startswith("_") and inspect.isfunction(value))


def main() -> None:
    import torch

    from functional_cases import QUALNAMES, Lib, call_case, error_cases

    lib = Lib("torch")
    errors = {}
    for case_id, fname, mutate, _ in error_cases():
        _, _, outcome = call_case(lib, fname, mutate)
        if outcome != "skip":
            errors[case_id] = outcome
    data = {
        "torch": torch.__version__,
        "signatures": {q: describe(resolve(q)) for q in QUALNAMES},
        "functional_exports": functional_exports(importlib.import_module(
            "torch.optim._functional")),
        "errors": errors,
    }
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {OUT}: {len(data['signatures'])} signatures, {len(errors)} error cases")


if __name__ == "__main__":
    main()
