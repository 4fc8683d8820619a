"""``python -m nbopt <command>``: command-line entry points.

Commands: ``bench`` (step time vs torch and the bandwidth floor) and
``schedule`` (print or plot a learning-rate schedule).
"""
from __future__ import annotations

import sys

COMMANDS = {"bench": "nbopt.bench", "schedule": "nbopt.schedule_cli"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m nbopt {bench,schedule} [options]\n\n"
              "  bench      optimizer step time next to torch's and the memory-bandwidth floor\n"
              "  schedule   print (or --plot) the learning rates of an lr_scheduler, e.g.\n"
              "             python -m nbopt schedule OneCycleLR --max_lr 0.1 --total_steps 100")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
