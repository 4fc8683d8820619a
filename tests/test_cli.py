"""``python -m nbopt``: the command layout, --version, help on every option,
bad arguments as one-line usage errors in every command, the first-compile
notice and the check for a folder that shadows the package."""
from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import nbopt
from nbopt.cli import _common
from nbopt.cli.main import COMMANDS
from nbopt.cli.main import main as nbopt_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}


def run(argv, capsys):
    """Exit status, stdout and stderr of ``python -m nbopt ARGV`` run in this process."""
    try:
        code = nbopt_main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# -- layout ---------------------------------------------------------------------------------
def test_the_tools_live_in_nbopt_cli():
    top = {f[:-3] for f in os.listdir(os.path.join(ROOT, "nbopt")) if f.endswith(".py")}
    for name in ("demo", "bench", "bench_lbfgs", "bench_cuda", "bench_functional",
                 "schedule_cli"):
        assert name not in top, f"nbopt/{name}.py belongs in nbopt/cli/"
    for module, _ in COMMANDS.values():
        assert module.startswith("nbopt.cli.")
        assert callable(importlib.import_module(module).main)
    # __main__ is a shim: the dispatch logic is nbopt.cli.main's
    shim = open(os.path.join(ROOT, "nbopt", "__main__.py")).read()
    assert "from nbopt.cli.main import main" in shim and "COMMANDS" not in shim


def test_import_nbopt_imports_no_tool():
    code = ("import sys, nbopt; "
            "print(sorted(m for m in sys.modules if m.startswith('nbopt.cli')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, check=True)
    assert proc.stdout.strip() == "[]"


# -- top level ------------------------------------------------------------------------------
def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"nbopt {nbopt.__version__}"


def test_unknown_command_says_so(capsys):
    code, out, err = run(["foo"], capsys)
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == (
        "python -m nbopt: error: argument COMMAND: invalid choice: 'foo' (choose from "
        + ", ".join(repr(c) for c in COMMANDS) + ")")


def test_no_command_is_a_usage_error(capsys):
    code, out, err = run([], capsys)
    assert code == 2 and out == ""
    assert "the following arguments are required: COMMAND" in err


def test_help_lists_every_command(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert all(f"  {name} " in out for name in COMMANDS)


def _parsers():
    from nbopt.cli import bench, bench_8bit, bench_functional, bench_lbfgs, demo
    from nbopt.cli.main import _parser

    return {"python -m nbopt": _parser(), "bench": bench._parser(),
            "bench-lbfgs": bench_lbfgs._parser(), "bench-functional": bench_functional._parser(),
            "bench-8bit": bench_8bit._parser(), "demo": demo._parser()}


@pytest.mark.parametrize("name", ["python -m nbopt", "bench", "bench-lbfgs",
                                  "bench-functional", "bench-8bit", "demo"])
def test_every_option_has_help(name):
    parser = _parsers()[name]
    for action in parser._actions:
        what = action.option_strings or action.dest
        assert action.help and action.help.strip(), f"{name}: {what} has no help"
    parser.format_help()        # every %(default)s and %% in the help texts formats


# -- bad arguments, every command -------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    # issue 16's measured cases
    (["bench", "--sizes", "10Q"], "argument --sizes: bad size '10Q'"),
    (["bench", "--repeat", "0"], "argument --repeat: must be an integer >= 1, got 0"),
    (["bench-lbfgs", "--dtypes", "float16"],
     "argument --dtypes: unknown dtype 'float16'; choose from float32, float64"),
    (["schedule", "StepLR", "--step_size", "abc"], "argument --step_size: invalid int value"),
    (["schedule", "OneCycleLR", "--max_lr", "0.1", "--total_steps", "0"],
     "argument --total_steps: must be >= 1"),
    # more of the kind
    (["bench", "--sizes", "0"], "argument --sizes: bad size '0'"),
    (["bench", "--sizes", "1k@gpu"], "argument --sizes: bad workload tag(s) ['gpu']"),
    (["bench", "--sizes", ","], "argument --sizes: expected comma-separated workloads"),
    (["bench", "--algorithms", "Adamm"], "argument --algorithms: unknown algorithm 'Adamm'"),
    (["bench", "--algorithms", ""], "argument --algorithms: expected a comma-separated list"),
    (["bench", "--algorithms", "SGD", "--sizes", "10x(4x4)"],
     "nothing to measure for SGD: COUNTx(MxN) workloads are for Adafactor and Muon"),
    (["bench", "--algorithms", "Muon", "--sizes", "2x(4x4x4)"],
     "'2x(4x4x4)': Muon steps 2-D matrices only"),
    (["bench", "--algorithms", "Adafactor", "--sizes", "2x(4x4)@arena"],
     "COUNTx(MxN) workloads are separate matrices"),
    (["bench", "--sizes", "1000G"], "argument --sizes: '1000G' needs about"),
    (["bench", "--json", "/nonexistent-folder/rows.json"],
     "argument --json: cannot write '/nonexistent-folder/rows.json'"),
    (["bench", "--device", "cuda", "--algorithms", "Muon"],
     "--device cuda: the CUDA bench has the element-wise algorithms only"),
    (["bench", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["bench-lbfgs", "--n", "1x"], "argument --n: bad size '1x'"),
    (["bench-lbfgs", "--history-size", "0"], "argument --history-size: must be an integer >= 1"),
    (["bench-lbfgs", "--max-iter", "ten"], "argument --max-iter: invalid int value: 'ten'"),
    (["bench-lbfgs", "--repeat", "0"], "argument --repeat: must be an integer >= 1"),
    (["bench-lbfgs", "--json", "/nonexistent-folder/x.json"], "argument --json: cannot write"),
    (["bench-functional", "--sizes", "10Q"], "argument --sizes: bad size '10Q'"),
    (["bench-functional", "--sizes", "100,0"], "argument --sizes: bad size '0'"),
    (["bench-functional", "--json", "/nonexistent-folder/x.json"],
     "argument --json: cannot write"),
    (["bench-8bit", "--repeat", "0"], "argument --repeat: must be an integer >= 1"),
    (["bench-8bit", "--what", "speed,foo"], "argument --what: unknown part 'foo'"),
    (["bench-8bit", "--memory-size", "1Q"], "argument --memory-size: bad size '1Q'"),
    (["bench-8bit", "--plot", "/nonexistent-folder/q.png"], "argument --plot: cannot write"),
    (["demo", "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["demo", "--optimizer", "Adamm"], "argument --optimizer: unknown optimizer 'Adamm'"),
    (["demo", "--lr", "inf"], "argument --lr: must be a finite number"),
    (["schedule", "StepLR", "--step_size", "2", "--plot", "/nonexistent-folder/s.png"],
     "argument --plot: cannot write"),
])
def test_bad_arguments_are_one_line_usage_errors(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert lines[0].startswith(f"usage: python -m nbopt {argv[0]}"), err
    error = [line for line in lines if ": error: " in line]
    assert len(error) == 1 and error[0] == lines[-1], err
    assert lines[-1].startswith(f"python -m nbopt {argv[0]}: error: ") and message in lines[-1]


def test_bad_arguments_from_a_shell_exit_2_without_a_traceback():
    proc = subprocess.run([sys.executable, "-m", "nbopt", "schedule", "CosineAnnealingLR",
                           "--T_max", "0"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == (
        "python -m nbopt schedule: error: argument --T_max: must be >= 1, got 0")


# -- first use -------------------------------------------------------------------------------
def test_the_compile_notice_prints_once_when_numba_compiles():
    from numba import njit

    def fn(x):
        return x + 1

    stream = io.StringIO()
    with _common.compile_notice(stream):
        kernel = njit(fn)
        kernel(1)
        kernel(1.5)           # a second compilation: no second line
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().startswith("nbopt: compiling kernels for their first use")
    kernel(np.float32(1))     # after the block: the listener is gone
    assert stream.getvalue().count("\n") == 1


def test_the_compile_notice_is_silent_without_compilation():
    stream = io.StringIO()
    from numba import njit

    kernel = njit(lambda x: x * 2)
    kernel(3)
    with _common.compile_notice(stream):
        kernel(4)             # compiled already
    assert stream.getvalue() == ""


# -- a folder named nbopt ------------------------------------------------------------------
SHADOWED = r"""
import runpy, sys
sys.path.insert(0, "")            # python -m puts the current directory first
import nbopt                      # -> the empty folder, a namespace package
if getattr(nbopt, "__file__", None):
    print("REGULAR")              # a regular install on sys.path wins over the folder
    sys.exit(0)
# what setuptools' editable-install finder does: nbopt.* submodules resolve
# in the real package, so nbopt.__main__ runs without nbopt/__init__.py
nbopt.__path__.append(sys.argv[1])
sys.argv = ["nbopt", "schedule", "StepLR", "--step_size", "2"]
runpy.run_module("nbopt", run_name="__main__", alter_sys=True)
"""


def test_a_clone_folder_named_nbopt_is_detected(tmp_path):
    (tmp_path / "nbopt").mkdir()                # a clone: no __init__.py at its top
    (tmp_path / "nbopt" / "pyproject.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", SHADOWED, os.path.join(ROOT, "nbopt")],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    if proc.stdout.strip() == "REGULAR":
        pytest.skip("nbopt is installed as a regular package, which takes precedence over "
                    "the folder: nothing is shadowed")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    message = proc.stderr.strip()
    assert message.startswith(f"python -m nbopt: error: the folder "
                              f"'{tmp_path / 'nbopt'}' in the current directory")
    assert "unknown optimizer" not in message and "rename the folder" in message


def test_no_shadowing_here():
    assert _common.shadowing_folder() is None


class _FakeClock:
    """A clock that advances only when slept on."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_quiet_check_waits_for_a_low_load():
    from nbopt.cli._common import wait_until_quiet

    loads = iter([3.0, 2.0, 0.3])
    clock = _FakeClock()
    out = io.StringIO()
    quiet, load = wait_until_quiet(0.5, 60, out, clock=clock, sleep=clock.sleep,
                                   loadavg=lambda: (next(loads), 0.0, 0.0))
    assert (quiet, load) == (True, 0.3) and clock.now == 10.0
    text = out.getvalue()
    assert "load 3.00 > 0.5, waiting up to 60 s" in text and "load 0.30 <= 0.5" in text


def test_quiet_check_says_when_the_machine_stays_busy():
    from nbopt.cli._common import wait_until_quiet

    clock = _FakeClock()
    out = io.StringIO()
    quiet, load = wait_until_quiet(0.5, 12, out, clock=clock, sleep=clock.sleep,
                                   loadavg=lambda: (3.0, 0.0, 0.0))
    assert (quiet, load) == (False, 3.0) and clock.now == 15.0
    assert "NOT quiet after 12 s (1-minute load 3.00 > 0.5)" in out.getvalue()


def test_quiet_check_runs_before_the_bench_and_its_arguments_are_checked(capsys):
    from nbopt.cli import bench

    assert bench.main(["--algorithms", "SGD", "--sizes", "1k", "--repeat", "1", "--no-torch",
                       "--skip-startup", "--quiet-check", "1000"]) == 0
    out = capsys.readouterr().out
    assert out.index("quiet check: 1-minute load") < out.index("nbopt bench:")
    for argv, message in ((["--quiet-check", "-1"], "argument --quiet-check: must be >= 0"),
                          (["--quiet-wait", "soon"], "argument --quiet-wait")):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
