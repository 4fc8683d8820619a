"""Regenerate the committed torch reference data of the LR schedulers (needs torch 2.13).

    python tests/make_scheduler_reference.py

Writes ``tests/data/scheduler_reference.npz``: for every case of
``scheduler_cases.CASES``, torch's per-step learning rates, momentum / beta1,
``get_last_lr()`` and ``last_epoch`` (arrays), and in the JSON member
``index`` the warnings torch emitted, the group keys it added, its
``state_dict()`` mid-run and at the end; for every ``ERROR_CASES`` entry the
exception type and message.  ``tests/test_lr_scheduler.py`` replays all of it
through nbopt without torch installed.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scheduler_cases import CASES, ERROR_CASES, run_case, run_error  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                   "scheduler_reference.npz")
ARRAYS = ("lr", "momentum", "last_lr", "last_epoch")


def main() -> None:
    import torch

    if not torch.__version__.startswith("2.13."):
        raise SystemExit(f"reference data must come from torch 2.13, found {torch.__version__}")
    arrays = {}
    index = {"torch": torch.__version__, "cases": {}, "errors": {}}
    for case in CASES:
        result = run_case(case, "torch")
        for name in ARRAYS:
            arrays[f"{case.id}|{name}"] = result[name]
        index["cases"][case.id] = {k: result[k] for k in
                                   ("warnings", "added_keys", "mid_state", "final_state")}
    for case in ERROR_CASES:
        result = run_error(case, "torch")
        index["errors"][case.id] = {"type": result["type"], "message": result["message"]}
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {len(CASES)} cases and {len(ERROR_CASES)} error cases to {OUT} "
          f"({os.path.getsize(OUT) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
