"""``python -m nbopt <command>``: dispatch to the command-line tools.

Each command is a module of :mod:`nbopt.cli` with ``main(argv) -> int``,
imported only when it runs (``python -m nbopt schedule`` does not import the
benchmark harness).  Adding a command is one entry of :data:`COMMANDS`.
"""
from __future__ import annotations

import importlib
import sys

from ._common import Parser, shadowing_folder

__all__ = ["COMMANDS", "main"]

#: command -> (module, one-line description for ``python -m nbopt --help``)
COMMANDS = {
    "bench": ("nbopt.cli.bench",
              "optimizer step time next to torch's and the memory-bandwidth floor"),
    "bench-lbfgs": ("nbopt.cli.bench_lbfgs",
                    "LBFGS per-iteration overhead next to torch's (1M elements)"),
    "bench-functional": ("nbopt.cli.bench_functional",
                         "an Adam step inside an njit loop (nbopt.functional) next to\n"
                         "a hand-written njit loop, opt.step() and torch"),
    "bench-distributed": ("nbopt.cli.bench_distributed",
                          "data-parallel and ZeRO steps on MPI next to one process; run as\n"
                          "mpiexec -n 2 python -m nbopt bench-distributed"),
    "bench-8bit": ("nbopt.cli.bench_8bit",
                   "8-bit optimizer state: bytes per element (RSS), step time and\n"
                   "loss curves next to the 32-bit optimizers"),
    "schedule": ("nbopt.cli.schedule",
                 "print (or --plot) the learning rates of an lr_scheduler, e.g.\n"
                 "python -m nbopt schedule OneCycleLR --max_lr 0.1 --total_steps 100"),
    "demo": ("nbopt.cli.demo",
             "train an MLP with BatchNorm on generated data, e.g.\n"
             "python -m nbopt demo --optimizer Adam --scheduler onecycle\n"
             "python -m nbopt demo --swa   (torch's SWA recipe)"),
}


def _version() -> str:
    import nbopt

    return getattr(nbopt, "__version__", "unknown")


def _parser() -> Parser:
    width = max(map(len, COMMANDS)) + 2
    lines = []
    for name, (_, text) in COMMANDS.items():
        first, *rest = text.split("\n")
        lines.append(f"  {name:<{width}}{first}")
        lines += [f"  {'':<{width}}{line}" for line in rest]
    parser = Parser(prog="python -m nbopt", usage="python -m nbopt [-h] [--version] COMMAND ...",
                    description="nbopt's command-line tools; python -m nbopt COMMAND --help "
                                "describes each.\n\ncommands:\n" + "\n".join(lines))
    parser.add_argument("--version", action="version", version=f"nbopt {_version()}",
                        help="print nbopt's version and exit")
    parser.add_argument("command", metavar="COMMAND", choices=list(COMMANDS),
                        help="one of: " + ", ".join(COMMANDS))
    return parser


def main(argv=None) -> int:
    """Entry point of ``python -m nbopt``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    folder = shadowing_folder()
    if folder is not None:
        import os

        where = " in the current directory" if os.path.dirname(folder) == os.getcwd() else ""
        print(f"python -m nbopt: error: the folder {folder!r}{where} is not the nbopt package "
              "but hides the installed one (Python imported it as an empty namespace package, "
              "so nbopt's names are missing: a clone named nbopt?); run the command from "
              "another directory, or rename the folder", file=sys.stderr)
        return 2
    parser = _parser()
    if argv and argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    # only the command and the top-level flags are parsed here: everything
    # after the command is that command's (its own --help included)
    parser.parse_args(argv[:1])
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])
