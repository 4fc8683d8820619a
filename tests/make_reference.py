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

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import CASES, DTYPES, STEPS, VARIANT_CASES, variant_dtypes  # noqa: E402
from reference_io import write_trajectories  # noqa: E402
from trajectory import make_inputs, run_torch  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch_reference.npz")
VARIANTS_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                            "torch_variants_reference.npz")


def main() -> None:
    write_trajectories(OUT, CASES, lambda case: DTYPES,
                       lambda ci, case, dtype: make_inputs(ci, dtype), run_torch, STEPS)


def variants() -> None:
    from test_torch_variants import inputs_for, run

    write_trajectories(VARIANTS_OUT, VARIANT_CASES, variant_dtypes,
                       lambda ci, case, dtype: inputs_for(case, dtype),
                       lambda case, inputs, reload: run("torch", case, inputs, reload=reload),
                       STEPS)


if __name__ == "__main__":
    if sys.argv[1:] != ["variants"]:
        main()
    variants()
