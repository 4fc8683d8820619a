"""Regenerate Muon's committed torch reference (needs torch 2.13):

    python tests/make_muon_reference.py

Writes ``tests/data/muon_reference.npz``: for every case of
``muon_cases.CASES`` and its dtypes, torch's parameters and momentum buffers
at ``CHECKPOINT_STEP`` and ``STEPS``, and at ``STEPS`` again when a new
optimizer loaded the state_dict at ``CHECKPOINT_STEP``.  The inputs are
recomputed from ``muon_cases.make_inputs`` (an integer hash: the same on
every machine), so they are not stored.

torch runs Muon's Newton–Schulz iteration in bfloat16 and its CPU GEMMs
round in an order that depends on the CPU: the file records the machine's
CPU flags, and the reference is meant to come from an x86-64 CPU with
AMX-BF16 (Sapphire Rapids or newer), the path nbopt reproduces bit for bit.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from muon_cases import CASES, STEPS, make_inputs, run_torch  # noqa: E402
from reference_io import require_torch, write_trajectories  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "muon_reference.npz")


def cpu_flags() -> list[str]:
    """The bfloat16-relevant flags of this CPU (Linux), as recorded."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(w for w in line.split(":", 1)[1].split()
                                  if w.startswith(("amx", "avx512_bf16", "avx512f")))
    except OSError:
        pass
    return []


def main() -> None:
    torch = require_torch()
    write_trajectories(OUT, CASES, lambda case: case.dtypes,
                       lambda ci, case, dtype: make_inputs(ci, dtype), run_torch, STEPS,
                       index_extra={"cpu_flags": cpu_flags(), "threads": torch.get_num_threads()},
                       entry=lambda case: [case.id, list(case.dtypes)], store_inputs=False)


if __name__ == "__main__":
    main()
