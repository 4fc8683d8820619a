"""``python -m nbopt <command>``: command-line entry points.

Commands: ``bench`` (step time vs torch and the bandwidth floor),
``bench-lbfgs`` (LBFGS per-iteration overhead vs torch), ``bench-functional``
(an optimizer step inside njit code vs a hand-written loop and opt.step()),
``schedule`` (print or plot a learning-rate schedule) and ``demo`` (train a
small network with an optimizer and scheduler, optionally with SWA).
"""
from __future__ import annotations

import sys

COMMANDS = {"bench": "nbopt.bench", "bench-lbfgs": "nbopt.bench_lbfgs",
            "bench-functional": "nbopt.bench_functional",
            "schedule": "nbopt.schedule_cli", "demo": "nbopt.demo"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m nbopt {bench,bench-lbfgs,bench-functional,schedule,demo} "
              "[options]\n\n"
              "  bench      optimizer step time next to torch's and the memory-bandwidth floor\n"
              "  bench-lbfgs  LBFGS per-iteration overhead next to torch's (1M elements)\n"
              "  bench-functional  an Adam step inside an njit loop (nbopt.functional) next\n"
              "             to a hand-written njit loop, opt.step() and torch\n"
              "  schedule   print (or --plot) the learning rates of an lr_scheduler, e.g.\n"
              "             python -m nbopt schedule OneCycleLR --max_lr 0.1 --total_steps 100\n"
              "  demo       train an MLP with BatchNorm on generated data, e.g.\n"
              "             python -m nbopt demo --optimizer Adam --scheduler onecycle\n"
              "             python -m nbopt demo --swa   (torch's SWA recipe)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
