"""Regenerate the committed torch reference trajectories (needs torch 2.13).

    python tests/make_reference.py

Writes ``tests/data/torch_reference.npz``: for every case of ``cases.CASES``
and dtype, the inputs (initial parameters and all gradients), torch's
parameters and state at ``CHECKPOINT_STEP`` and ``STEPS``, and at ``STEPS``
again when a new optimizer loaded the state_dict at ``CHECKPOINT_STEP``.  The test
suite replays these through nbopt without torch installed.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import CASES, DTYPES, STEPS  # noqa: E402
from trajectory import make_inputs, run_torch  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch_reference.npz")


def main() -> None:
    import torch

    if not torch.__version__.startswith("2.13."):
        raise SystemExit(f"reference data must come from torch 2.13, found {torch.__version__}")
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


if __name__ == "__main__":
    main()
