"""``python -m nbopt <command>``: command-line entry points.

Commands: ``bench`` (step time vs torch and the bandwidth floor).
"""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"bench": "nbopt.bench"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: python -m nbopt {bench} [options]\n\n"
              "  bench   optimizer step time next to torch's and the memory-bandwidth floor")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    return importlib.import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
