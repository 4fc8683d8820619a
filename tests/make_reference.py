"""Regenerate the committed torch reference trajectories (needs torch 2.13).

    python tests/make_reference.py              # both files
    python tests/make_reference.py variants     # only torch_variants_reference.npz

Writes ``tests/data/torch_reference.npz``: for every case of ``cases.CASES``
and dtype, the inputs (initial parameters and all gradients), torch's
parameters and state at ``CHECKPOINT_STEP`` and ``STEPS``, and at ``STEPS``
again when a new optimizer loaded the state_dict at ``CHECKPOINT_STEP``.  The test
suite replays these through nbopt without torch installed.

``tests/data/torch_variants_reference.npz`` holds the same for
``cases.VARIANT_CASES`` (torch's foreach/differentiable/fused paths and Tensor
betas), run by ``test_torch_variants.run``.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import CASES, DTYPES, STEPS, VARIANT_CASES, variant_dtypes  # noqa: E402
from trajectory import make_inputs, run_torch  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch_reference.npz")
VARIANTS_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                            "torch_variants_reference.npz")


def _check_torch():
    import torch

    if not torch.__version__.startswith("2.13."):
        raise SystemExit(f"reference data must come from torch 2.13, found {torch.__version__}")
    return torch


def main() -> None:
    torch = _check_torch()
    arrays = {}
    index = {"torch": torch.__version__, "cases": []}
    for ci, case in enumerate(CASES):
        index["cases"].append(case.id)
        for dtype in DTYPES:
            inputs = make_inputs(ci, dtype)
            prefix = f"{case.id}|{dtype}"
            for k, v in inputs.items():
                arrays[f"{prefix}|in|{k}"] = v
            for step, snap in run_torch(case, inputs).items():
                for k, v in snap.items():
                    arrays[f"{prefix}|{step}|{k}"] = v
            # the same run continued by a new optimizer that loads the
            # state_dict at CHECKPOINT_STEP: its final snapshot
            for k, v in run_torch(case, inputs, reload=True)[STEPS].items():
                arrays[f"{prefix}|reload|{k}"] = v
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {len(CASES)} cases to {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


def variants() -> None:
    torch = _check_torch()
    from test_torch_variants import inputs_for, run

    arrays = {}
    index = {"torch": torch.__version__, "cases": []}
    for case in VARIANT_CASES:
        index["cases"].append(case.id)
        for dtype in variant_dtypes(case):
            inputs = inputs_for(case, dtype)
            prefix = f"{case.id}|{dtype}"
            for k, v in inputs.items():
                arrays[f"{prefix}|in|{k}"] = v
            for step, snap in run("torch", case, inputs).items():
                for k, v in snap.items():
                    arrays[f"{prefix}|{step}|{k}"] = v
            for k, v in run("torch", case, inputs, reload=True)[STEPS].items():
                arrays[f"{prefix}|reload|{k}"] = v
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    np.savez_compressed(VARIANTS_OUT, **arrays)
    print(f"wrote {len(VARIANT_CASES)} cases to {VARIANTS_OUT} "
          f"({os.path.getsize(VARIANTS_OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    if sys.argv[1:] != ["variants"]:
        main()
    variants()
