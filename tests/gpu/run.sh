#!/usr/bin/env bash
# Tier 3, on a machine with a GPU (numba, numba-cuda, CuPy, torch CUDA
# preinstalled; nothing is installed from the network).  From the repository
# root:  bash tests/gpu/run.sh   (under 8 minutes on one H200)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
rc=0
# each step's timeout is its own cap or what is left of 470 s, whichever is
# less, so that the script ends within 8 minutes whatever runs long
cap() { local left=$((470 - SECONDS)); echo $(($1 < left ? $1 : (left > 1 ? left : 1))); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python -c "import numba, numba_cuda; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__)"
# tiers 1-2 (simulator, PTX) need no GPU and run in CI: not repeated here
echo "== tier 3: kernels on the device vs the CPU kernels, and bandwidth (100M float32)"
timeout "$(cap 300)" python tests/gpu/device_check.py --elements 100000000 || rc=1
echo "== tier 3: python -m nbopt bench --device cuda (default sizes; rows in bench_cuda.json)"
timeout "$(cap 240)" python -m nbopt bench --device cuda --json "${OUT:-/tmp}/bench_cuda.json" || rc=1
echo "== tier 3: device parameters through the optimizer API (tests/gpu/test_*.py on the GPU)"
NBOPT_GPU_TESTS=1 timeout "$(cap 240)" python -m pytest -q -p no:cacheprovider tests/gpu || rc=1
echo "script time: ${SECONDS} s"
exit $rc
