"""tests/gpu/test_*.py need CUDA: the simulator (NUMBA_ENABLE_CUDASIM=1, set
before numba is imported: tests/test_cuda_tiers.py runs them in a subprocess)
or a GPU (tests/gpu/run.sh sets NBOPT_GPU_TESTS=1).  Elsewhere they are not
collected."""
import os

if not (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or os.environ.get("NBOPT_GPU_TESTS") == "1"):
    collect_ignore_glob = ["test_*.py"]
