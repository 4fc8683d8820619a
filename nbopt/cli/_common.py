"""What every ``python -m nbopt`` command shares: argument types, the usage
error, the first-compile notice and the check for a shadowing ``nbopt`` folder.

One place for these so that the commands agree: a bad value is reported the
same way everywhere -- argparse's two lines (``usage: ...`` then ``PROG:
error: MESSAGE``) on stderr and exit status 2 -- and never as a traceback
halfway through a run.  Every type function here raises
``argparse.ArgumentTypeError``, which argparse prints as ``argument --NAME:
MESSAGE``; :func:`check` runs the same functions outside argparse (the
``schedule`` command parses scheduler arguments itself).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys

__all__ = ["Parser", "UsageError", "integer", "number", "names", "one_of", "size", "sizes",
           "output_file", "check", "usage_error", "compile_notice", "shadowing_folder",
           "COMPILE_NOTICE"]


class UsageError(Exception):
    """A bad command line found after argparse (options that do not fit
    together, a scheduler argument): reported like argparse's own errors."""


class Parser(argparse.ArgumentParser):
    """argparse with the commands' common settings: option defaults shown in
    ``--help`` unless the help says otherwise, the description kept as written."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def fail(self, message: str):
        """Report ``message`` as a usage error (exit status 2)."""
        self.error(message)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):
        # argparse's ArgumentDefaultsHelpFormatter, minus the help texts that
        # already name their default (and flags, whose default is "off")
        text = action.help or ""
        if ("default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


def usage_error(prog: str, usage: str, message: str) -> int:
    """Print argparse's error format for ``message`` and return exit status 2
    (for a command that parses part of its line itself)."""
    sys.stderr.write(f"usage: {usage}\n{prog}: error: {message}\n")
    return 2


# -- argument types ------------------------------------------------------------------------
def integer(minimum: int | None = None):
    """An argparse type: an integer, at least ``minimum`` when given."""
    def parse(text):
        try:
            value = int(str(text).strip().replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = "int"
    return parse


def number(minimum: float | None = None, *, positive: bool = False, maximum: float | None = None):
    """An argparse type: a finite float (``positive``: > 0; ``minimum`` /
    ``maximum``: inclusive bounds).  ``nan`` and ``inf`` are refused: they
    would run and print nonsense."""
    def parse(text):
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if positive and not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {text}")
        return value
    parse.__name__ = "float"
    return parse


def names(choices, what: str = "name", *, ignore_case: bool = False):
    """An argparse type: a comma-separated, non-empty list of ``choices``
    (returned in the spelling of ``choices``)."""
    choices = list(choices)

    def parse(text):
        items = [s.strip() for s in str(text).split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}s, "
                                             f"got {text!r}")
        out = []
        for item in items:
            match = [c for c in choices if c == item or (ignore_case and c.lower() == item.lower())]
            if not match:
                raise argparse.ArgumentTypeError(f"unknown {what} {item!r}; choose from "
                                                 + ", ".join(choices))
            out.append(match[0])
        return out
    parse.__name__ = f"{what} list"
    return parse


def one_of(choices, what: str = "name", *, ignore_case: bool = False):
    """An argparse type: one of ``choices`` (returned in their spelling)."""
    many = names(choices, what, ignore_case=ignore_case)

    def parse(text):
        if "," in str(text):
            raise argparse.ArgumentTypeError(f"expected one {what}, got {text!r}")
        return many(text)[0]
    parse.__name__ = what
    return parse


_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def size(text: str, minimum: int = 1) -> int:
    """A count written for people: ``1000``, ``1k``, ``2.5M``, ``1G``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)([kKmMgG]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: write a count such as 1000, 10k "
                                         "or 1M")
    value = int(float(m.group(1)) * _SCALE[m.group(2).lower()])
    if value < minimum:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: must be at least {minimum}")
    return value


def sizes(text: str) -> list[int]:
    """An argparse type: comma-separated counts (:func:`size`)."""
    items = [s for s in str(text).split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes, got {text!r}")
    return [size(s) for s in items]


sizes.__name__ = "size list"


def output_file(text: str) -> str:
    """An argparse type: a file the command will write at the end.  Checked
    now -- its folder exists and is writable, it is not a folder -- so that a
    long run does not end in a traceback after printing its results."""
    path = os.path.expanduser(str(text))
    if not path:
        raise argparse.ArgumentTypeError("expected a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the folder {folder!r} "
                                         "does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the folder {folder!r} "
                                         "is not writable")
    return path


output_file.__name__ = "file name"


def add_torch_and_json(parser: argparse.ArgumentParser, what: str = "rows") -> None:
    """The bench commands' ``--no-torch`` and ``--json PATH`` options."""
    parser.add_argument("--no-torch", action="store_true", help="skip torch even if importable")
    parser.add_argument("--json", metavar="PATH", type=output_file,
                        help=f"also write the {what} as JSON")


def check(option: str, parse, text):
    """``parse(text)`` (an argparse type) outside argparse: its error becomes a
    :class:`UsageError` worded as argparse words it (``argument --x: ...``)."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"argument {option}: {exc}") from None


# -- first use -----------------------------------------------------------------------------------
COMPILE_NOTICE = ("nbopt: compiling kernels for their first use (a few seconds{cached})...")


@contextlib.contextmanager
def compile_notice(stream=None):
    """Inside the block, print :data:`COMPILE_NOTICE` once, when Numba starts
    compiling (a kernel loaded from Numba's disk cache is not a compilation
    and prints nothing).  Without it the first step of a command looks like a
    hang, and the demo's progress bar estimated an hour from its first batch.
    Imports Numba.
    """
    from numba.core import event

    from .. import config

    stream = sys.stderr if stream is None else stream
    cached = "; later runs load them from Numba's disk cache" if config.CACHE else ""

    class _Once(event.Listener):
        printed = False

        def on_start(self, ev):
            if not self.printed:
                self.printed = True
                print(COMPILE_NOTICE.format(cached=cached), file=stream, flush=True)

        def on_end(self, ev):
            pass

    listener = _Once()
    event.register("numba:compile", listener)
    try:
        yield
    finally:
        event.unregister("numba:compile", listener)


# -- a clone folder named nbopt --------------------------------------------------------------
def shadowing_folder() -> str | None:
    """The folder that shadows the installed nbopt, or None.

    A folder named ``nbopt`` without ``__init__.py`` in the current directory
    (typically a clone: ``git clone ... nbopt`` then ``python -m nbopt`` from
    the parent) is imported as an empty namespace package.  With an editable
    install, ``python -m nbopt`` still finds the real ``__main__`` through
    setuptools' finder, so the command starts and then fails strangely
    ("unknown optimizer 'SGD'"): nbopt's ``__init__`` never ran.
    """
    import nbopt

    if getattr(nbopt, "__file__", None) is not None and hasattr(nbopt, "Optimizer"):
        return None
    for entry in getattr(nbopt, "__path__", []):
        if not os.path.exists(os.path.join(entry, "__init__.py")):
            return entry
    return list(getattr(nbopt, "__path__", ["nbopt"]))[0]


def wait_until_quiet(max_load: float, max_wait: float, stream=None, *, clock=None,
                     sleep=None, loadavg=None) -> tuple[bool, float]:
    """Wait until the machine's 1-minute load average is at most
    ``max_load`` (checked every 5 s, at most ``max_wait`` seconds), saying so
    on ``stream`` (stdout): a shared machine's other jobs make OpenMP
    barriers swing timings 10-1000x.  Returns ``(quiet, load)``; on a
    system without ``os.getloadavg`` it reports ``(False, nan)`` at once."""
    import time

    stream = sys.stdout if stream is None else stream
    clock = time.monotonic if clock is None else clock
    sleep = time.sleep if sleep is None else sleep
    loadavg = getattr(os, "getloadavg", None) if loadavg is None else loadavg
    if loadavg is None:
        print("quiet check: this system has no load average; timing anyway", file=stream)
        return False, float("nan")
    start = clock()
    load = loadavg()[0]
    waited = False
    while load > max_load and clock() - start < max_wait:
        if not waited:
            print(f"quiet check: 1-minute load {load:.2f} > {max_load:g}, waiting up to "
                  f"{max_wait:g} s...", file=stream, flush=True)
            waited = True
        sleep(5.0)
        load = loadavg()[0]
    if load > max_load:
        print(f"quiet check: NOT quiet after {max_wait:g} s (1-minute load {load:.2f} > "
              f"{max_load:g}): the timings below may swing", file=stream, flush=True)
        return False, load
    print(f"quiet check: 1-minute load {load:.2f} <= {max_load:g}", file=stream, flush=True)
    return True, load
