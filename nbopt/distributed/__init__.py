"""nbopt across processes and machines, on MPI (mpi4py).

``pip install "nbopt[mpi]"`` (mpi4py and the ``mpich`` wheel), then run a
script with ``mpiexec -n 4 python train.py``.  This is the only part of
nbopt that imports mpi4py; ``import nbopt`` never does.

* :func:`DistributedOptimizer` (Horovod's shape): averages gradients over
  the ranks, then steps any nbopt optimizer; :func:`broadcast_parameters`,
  :func:`broadcast_optimizer_state`.
* :class:`ZeroRedundancyOptimizer` (torch's names): optimizer state sharded
  over the ranks by contiguous ranges of the flat parameter space (ZeRO-1).
* :func:`save_sharded` / :func:`load_sharded`: one checkpoint file per rank
  plus an index; loads on any number of ranks.

Reductions add the ranks' contributions in rank order, so a P-rank run is
bit-identical to one process that averages the same P gradients
(``((g_0 + g_1) + ...) / P``); see ``docs/distributed.rst``.  Every
collective step is preceded by local validation and one small agreement
``Allreduce``: a bad input on one rank raises on every rank, and nothing
changes anywhere.
"""
from ._common import Average, DistributedStepError, Sum, state_nbytes
from .checkpoint import load_sharded, save_sharded
from .data_parallel import DistributedOptimizer, broadcast_optimizer_state, broadcast_parameters
from .zero import ZeroRedundancyOptimizer

__all__ = ["DistributedOptimizer", "broadcast_parameters", "broadcast_optimizer_state",
           "ZeroRedundancyOptimizer", "save_sharded", "load_sharded", "Average", "Sum",
           "DistributedStepError", "state_nbytes"]
