"""Tier 3 (a real GPU): every algorithm's CUDA kernel on device memory
against the CPU kernel on the same launch, then the kernel's bandwidth on
one large array next to a device copy kernel (the floor).

    python tests/gpu/device_check.py [--elements N] [ClassName ...]

Runs under the CUDA simulator too (NUMBA_ENABLE_CUDASIM=1, tiny sizes), which
is how it is tested without a GPU.  Prints one line per (case, dtype) and a
bandwidth table; exits 1 if any result differs from the CPU kernel by more
than MAX_ULPS.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

from gpu.kernel_cases import CASES, cpu_result, launch_inputs, selected, ulps  # noqa: E402

# The GPU computes the same IEEE operations (fma, sqrt, division correctly
# rounded) unless NVVM contracts a multiply and an add that the CPU rounds
# twice: any such difference is reported in ulps.
MAX_ULPS = 2


def device_address(d) -> int:
    iface = getattr(d, "__cuda_array_interface__", None)
    if iface is not None:
        return iface["data"][0]
    return d._ary.ctypes.data          # the simulator's device arrays are host arrays


def _copy(src, dst):
    for i in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


def check(names) -> int:
    worst = 0
    for cls, options, dtype in selected(names):
        spec, params, grads, seg, chunks, scalars, state, flags = launch_inputs(
            cls, options, dtype)
        want_params, want_state = cpu_result(spec, params, grads, seg, chunks, scalars,
                                             state, flags)
        d_params = [cuda.to_device(p) for p in params]
        d_grads = [cuda.to_device(g) for g in grads]
        d_state = [cuda.to_device(s) for s in state]
        d_seg = seg.copy()
        d_seg[:, 0] = [device_address(p) for p in d_params]
        d_seg[:, 1] = [device_address(g) for g in d_grads]
        spec.cuda(len(chunks), 64, cuda.to_device(d_seg), cuda.to_device(chunks),
                  cuda.to_device(scalars), *d_state, *flags)
        cuda.synchronize()
        got_p = [p.copy_to_host() for p in d_params]
        got_s = [s.copy_to_host() for s in d_state]
        dp = max(ulps(a, b) for a, b in zip(got_p, want_params))
        ds = max([ulps(a, b) for a, b in zip(got_s, want_state)] or [0])
        worst = max(worst, dp, ds)
        print(f"{cls:8s} {str(options):60s} {dtype.__name__:7s} params {dp} ulps, "
              f"state {ds} ulps")
    print("max ulps", worst)
    return 0 if worst <= MAX_ULPS else 1


def bandwidth(n: int, names) -> None:
    """One launch over an ``n``-element float32 parameter, against a copy
    kernel moving the same bytes (the floor)."""
    from nbopt.engine import _chunks
    from nbopt.config import CUDA_THREADS as THREADS
    from nbopt.kernels._cuda import SIMULATED, launch_shape

    copy = cuda.jit(_copy)

    def timed(fn, repeat=3 if SIMULATED else 10):
        fn()
        cuda.synchronize()
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    src = cuda.to_device(np.ones(n, np.float32))
    dst = cuda.device_array(n, np.float32)
    blocks = max(1, min(1024, -(-n // THREADS)))
    floor_bps = 2 * 4 * n / timed(lambda: copy[blocks, THREADS](src, dst))
    print(f"\ncopy kernel: {floor_bps / 1e9:.0f} GB/s over {n} float32 elements")
    print(f"{'algorithm':10s} {'time':>10s} {'GB/s':>7s} {'of floor':>8s}")
    done = set()
    for cls, options in CASES:
        if (names and cls not in names) or cls in done:
            continue
        done.add(cls)
        spec, *_ = launch_inputs(cls, options, np.float32)
        p = cuda.to_device(np.zeros(n, np.float32))
        g = cuda.to_device(np.full(n, 0.5, np.float32))
        state = [cuda.to_device(np.full(n, 0.25, np.float32)) for _ in spec.state]
        seg = np.array([[device_address(p), device_address(g), 0, n, 0]], np.int64)
        chunks = _chunks(seg[:, 3], 1 << 16)
        _, _, _, _, _, scalars, _, flags = launch_inputs(cls, options, np.float32)
        d_seg, d_chunks = cuda.to_device(seg), cuda.to_device(chunks)
        d_scalars = cuda.to_device(np.ascontiguousarray(scalars[:1]))
        blocks, threads = launch_shape(len(chunks))
        seconds = timed(lambda: spec.cuda(blocks, threads, d_seg, d_chunks, d_scalars, *state,
                                          *flags))
        moved = (2 + 2 * len(spec.state)) * 4 * n       # read p, g, state; write p, state
        print(f"{cls:10s} {seconds * 1e3:8.3f}ms {moved / seconds / 1e9:7.0f} "
              f"{moved / seconds / floor_bps:8.2f}")


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=100_000_000)
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    rc = check(args.names)
    bandwidth(args.elements, args.names)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
