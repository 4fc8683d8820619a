#!/usr/bin/env bash
# Tier 3, on a machine with a GPU (numba, numba-cuda, CuPy, torch CUDA
# preinstalled; nothing is installed from the network).  From the repository
# root:  bash tests/gpu/run.sh   (under 8 minutes on one H200)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
rc=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python -c "import numba, numba_cuda; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__)"
echo "== tiers 1-2 (simulator, PTX)"
timeout 300 python -m pytest -q -x tests/test_cuda_tiers.py || rc=1
echo "== tier 3: kernels on the device vs the CPU kernels, and bandwidth (100M float32)"
timeout 300 python tests/gpu/device_check.py --elements 100000000 || rc=1
exit $rc
