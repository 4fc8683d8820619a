"""``mpiexec -n P python -m nbopt bench-distributed``: data-parallel and ZeRO
steps on MPI next to a single-process step (see
:mod:`nbopt.distributed.bench`; mpi4py is imported only there)."""
from __future__ import annotations

__all__ = ["main"]


def main(argv=None) -> int:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        import sys

        print('python -m nbopt bench-distributed: error: needs mpi4py: pip install "nbopt[mpi]"'
              ", then run it as mpiexec -n 2 python -m nbopt bench-distributed", file=sys.stderr)
        return 2
    from nbopt.distributed.bench import main as run

    return run(argv)
