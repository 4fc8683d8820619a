"""Tier 1 (CUDA simulator): every algorithm's CUDA kernel against its CPU
kernel, launch by launch.  Run as a script with NUMBA_ENABLE_CUDASIM=1 set
before numba is imported (tests/test_cuda_tiers.py does):

    NUMBA_ENABLE_CUDASIM=1 python tests/gpu/sim_check.py [ClassName ...]

Prints one line per (case, dtype, fresh): the largest difference in ulps of
the parameters and the state, and exits 1 if any exceeds MAX_ULPS.
"""
from __future__ import annotations

import os
import sys

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    sys.exit("set NUMBA_ENABLE_CUDASIM=1 before running this script")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from gpu.kernel_cases import cpu_result, launch_inputs, selected, ulps  # noqa: E402

# The simulator runs the element functions as Python: their ``fma`` rounds
# twice where the compiled kernels round once, so a few ulps are allowed here.
MAX_ULPS = 4


def main(names) -> int:
    worst = 0
    for cls, options, dtype in selected(names):
        for fresh in (False, True):
            spec, params, grads, seg, chunks, scalars, state, flags = launch_inputs(
                cls, options, dtype, fresh=fresh)
            if spec.cuda is None:
                print(f"{cls} {options}: no CUDA kernel")
                worst = max(worst, 10 ** 9)
                continue
            want_params, want_state = cpu_result(spec, params, grads, seg, chunks, scalars,
                                                 state, flags)
            before = [p.copy() for p in params]
            # 8 threads a block: chunks of 16 elements take two passes
            spec.cuda(len(chunks), 8, seg, chunks, scalars, *state, *flags)
            moved = any(not np.array_equal(a, b) for a, b in zip(params, before))
            d_params = max(ulps(a, b) for a, b in zip(params, want_params))
            d_state = max([ulps(a, b) for a, b in zip(state, want_state)] or [0])
            worst = max(worst, d_params, d_state, 0 if moved else 10 ** 9)
            print(f"{cls:8s} {str(options):60s} {dtype.__name__:7s} fresh={fresh!s:5s} "
                  f"params {d_params} ulps, state {d_state} ulps"
                  + ("" if moved else "  (KERNEL DID NOT RUN)"))
    print("max ulps", worst)
    return 0 if worst <= MAX_ULPS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
