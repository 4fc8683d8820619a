"""``python -m nbopt schedule``: the printed sequence, the plot, the errors."""
from __future__ import annotations

import doctest
import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nbopt
from nbopt import lr_scheduler
from nbopt.cli import schedule as schedule_cli
from nbopt.cli.main import main as nbopt_main


def run(argv, capsys, exact=True):
    """The command's exit status, stdout and stderr; ``exact``: values printed
    as round-trip reprs (--exact), so that tables compare bit for bit."""
    code = nbopt_main(["schedule", *argv, *(["--exact"] if exact else [])])
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(err: str) -> str:
    """The message of an argparse-style usage error: exactly two lines,
    ``usage: ...`` and ``python -m nbopt schedule: error: MESSAGE``."""
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: python -m nbopt schedule"), err
    prefix = "python -m nbopt schedule: error: "
    assert lines[1].startswith(prefix), err
    return lines[1][len(prefix):]


def table(out: str) -> tuple[list[str], np.ndarray]:
    lines = out.splitlines()
    assert lines[0].startswith("# ") and lines[1].startswith("# step")
    header = lines[1][2:].split()
    rows = np.array([[float(x) for x in line.split()] for line in lines[2:]])
    return header, rows


def api_sequence(sched_factory, steps, opt_factory=None, metrics=None):
    """The same schedule through the API: lr and momentum/beta1 per step."""
    opt = (opt_factory or (lambda: nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1,
                                             momentum=0.9)))()
    sched = sched_factory(opt)
    lrs, moms = [], []
    for i in range(steps):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        moms.append(group["betas"][0] if "betas" in group else group["momentum"])
        if i < steps - 1:
            opt.step()
            if metrics is not None:
                sched.step(metrics[i])
            else:
                sched.step()
    return np.array(lrs), np.array(moms)


def test_onecycle_prints_every_step_exactly(capsys):
    code, out, err = run(["OneCycleLR", "--max_lr", "0.1", "--total_steps", "100",
                          "--steps", "100"], capsys)
    assert code == 0, err
    header, rows = table(out)
    assert header == ["step", "lr", "momentum"]
    lrs, moms = api_sequence(lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=100),
                             100)
    np.testing.assert_array_equal(rows[:, 0], np.arange(100))
    # repr() round-trips: the printed values are the scheduler's, bit for bit
    np.testing.assert_array_equal(rows[:, 1], lrs)
    np.testing.assert_array_equal(rows[:, 2], moms)


def test_one_command_from_a_shell(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nbopt", "schedule", "OneCycleLR",
                           "--max_lr", "0.1", "--total_steps", "100"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2 + 100        # --steps defaults to total_steps


def test_literals_strings_flags_and_adam_beta1(capsys):
    code, out, err = run(["CyclicLR", "--base_lr", "0.001", "--max_lr=0.01",
                          "--step_size_up", "5", "--mode", "triangular2", "--optimizer", "Adam",
                          "--steps", "40"], capsys)
    assert code == 0, err
    header, rows = table(out)
    assert header == ["step", "lr", "beta1"]
    lrs, betas = api_sequence(
        lambda o: lr_scheduler.CyclicLR(o, base_lr=0.001, max_lr=0.01, step_size_up=5,
                                        mode="triangular2"), 40,
        lambda: nbopt.Adam([nbopt.Parameter(np.zeros(1))], lr=0.1))
    np.testing.assert_array_equal(rows[:, 1], lrs)
    np.testing.assert_array_equal(rows[:, 2], betas)

    code, out, _ = run(["OneCycleLR", "--max_lr", "0.1", "--total_steps", "50",
                        "--three_phase", "--anneal_strategy", "linear"], capsys)
    assert code == 0
    _, rows = table(out)
    lrs, _ = api_sequence(lambda o: lr_scheduler.OneCycleLR(
        o, max_lr=0.1, total_steps=50, three_phase=True, anneal_strategy="linear"), 50)
    np.testing.assert_array_equal(rows[:, 1], lrs)


def test_lambda_expression_and_groups(capsys):
    code, out, err = run(["LambdaLR", "--lr_lambda", "min(1, (epoch + 1) / 5) * 0.9 ** epoch",
                          "--lr", "[0.1, 0.01]", "--steps", "12"], capsys)
    assert code == 0, err
    header, rows = table(out)
    assert header == ["step", "lr0", "lr1"]       # momentum is not changed: no column
    want = [min(1, (e + 1) / 5) * 0.9 ** e for e in range(12)]
    np.testing.assert_array_equal(rows[:, 1], [0.1 * w for w in want])
    np.testing.assert_array_equal(rows[:, 2], [0.01 * w for w in want])


@pytest.mark.parametrize("text", ["__import__('os').getcwd()", "epoch.real", "open('x')",
                                  "[epoch]", "lambda: 1", "epoch if True else 'a'"])
def test_expressions_are_not_evaluated_as_python(text, capsys):
    code, out, err = run(["LambdaLR", "--lr_lambda", text], capsys)
    assert code == 2 and out == ""
    assert usage_error(err)


def test_sequential_lr_from_calls(capsys):
    code, out, err = run(["SequentialLR", "--milestones", "[5, 15]", "--schedulers",
                          "[LinearLR(start_factor=0.2, total_iters=5), "
                          "ExponentialLR(gamma=0.9), LambdaLR(lr_lambda='0.5')]",
                          "--steps", "30"], capsys)
    assert code == 0, err
    _, rows = table(out)

    def make(o):
        return lr_scheduler.SequentialLR(
            o, [lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=5),
                lr_scheduler.ExponentialLR(o, gamma=0.9),
                lr_scheduler.LambdaLR(o, lr_lambda=lambda e: 0.5)], milestones=[5, 15])
    lrs, _ = api_sequence(make, 30)
    np.testing.assert_array_equal(rows[:, 1], lrs)


def test_plateau_metrics(capsys):
    code, out, err = run(["ReduceLROnPlateau", "--patience", "1", "--factor", "0.5",
                          "--metrics", "1,1,1,1,1,.5,.6,.7", "--steps", "12"], capsys)
    assert code == 0, err
    header, rows = table(out)
    assert header == ["step", "lr", "metric"]
    metrics = [1, 1, 1, 1, 1, .5, .6, .7, .7, .7, .7, .7]      # the last value repeats
    np.testing.assert_array_equal(rows[:, 2], metrics)
    lrs, _ = api_sequence(lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=1, factor=0.5),
                          12, metrics=metrics)
    np.testing.assert_array_equal(rows[:, 1], lrs)

    code, out, _ = run(["ReduceLROnPlateau", "--patience", "3", "--steps", "40"], capsys)
    assert code == 0
    _, rows = table(out)
    np.testing.assert_array_equal(rows[:, 2], schedule_cli.default_metrics(40))
    assert rows[0, 2] == 1.0 and rows[-1, 2] == 0.5
    assert rows[-1, 1] < rows[0, 1]               # the flat half triggers reductions


@pytest.mark.parametrize("argv, message", [
    (["OneCyclLR"], "unknown scheduler 'OneCyclLR' (did you mean OneCycleLR?); valid names: "
                    + ", ".join(sorted(set(lr_scheduler.__all__) - {"LRScheduler"}))),
    (["Nope"], "valid names: ChainedScheduler, ConstantLR, CosineAnnealingLR"),
    (["StepLR", "--step_size", "3", "--bogus", "1"],
     "unrecognized arguments: --bogus (StepLR takes --step_size, --gamma, --last_epoch)"),
    (["StepLR"], "the following arguments are required: --step_size"),
    (["LambdaLR"], "the following arguments are required: --lr_lambda"),
    (["ConstantLR", "--factor", "2"], "Constant multiplicative factor expected to be between"),
    (["OneCycleLR", "--max_lr", "0.1", "--total_steps", "5", "--steps", "8"],
     "OneCycleLR at step 6: Tried to step 6 times. The specified number of total steps is 5"),
    (["StepLR", "--step_size", "3", "--steps", "0"],
     "argument --steps: must be an integer >= 1, got 0"),
    (["StepLR", "--step_size", "3", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
    (["StepLR", "--step_size", "3", "--steps"], "argument --steps: expected one argument"),
    (["StepLR", "--step_size", "3", "--optimizer", "Foo"], "unknown optimizer 'Foo'"),
    (["StepLR", "--step_size", "3", "--metrics", "1,2"],
     "argument --metrics: for ReduceLROnPlateau only"),
    (["ReduceLROnPlateau", "--metrics", "1,nan"], "argument --metrics: expected numbers"),
    (["SequentialLR", "--milestones", "[3]"], "SequentialLR needs --schedulers"),
    (["StepLR", "--step_size", "3", "--plot"], "argument --plot: expected one argument"),
    (["StepLR", "--step_size", "3", "--lr", "fast"],
     "argument --lr: expected a number or a list of numbers, got 'fast'"),
    (["StepLR", "--step_size", "3", "--momentum", "x"], "argument --momentum: invalid float"),
    # issue 16's measured cases: each was a traceback or a run with a wrong value
    (["StepLR", "--step_size", "abc"], "argument --step_size: invalid int value: 'abc'"),
    (["StepLR", "--step_size", "0"], "argument --step_size: must be >= 1, got 0"),
    (["CosineAnnealingLR", "--T_max", "0"], "argument --T_max: must be >= 1, got 0"),
    (["OneCycleLR", "--max_lr", "0.1", "--total_steps", "0"],
     "argument --total_steps: must be >= 1, got 0"),
    (["ExponentialLR", "--gamma"], "argument --gamma: expected a value (a finite number)"),
    (["StepLR", "--step_size", "3", "--gamma"], "argument --gamma: expected a value"),
    # more of the kind: values that ran into a ZeroDivisionError / TypeError mid-table
    (["StepLR", "--step_size", "3", "--gamma", "nan"], "argument --gamma: invalid float value"),
    (["StepLR", "--step_size", "3", "--gamma", "1e400"],
     "argument --gamma: expected a finite number, got '1e400'"),
    (["ConstantLR", "--factor", "0"], "argument --factor: must be positive, got 0"),
    (["CyclicLR", "--base_lr", "0.01", "--max_lr", "0.1", "--step_size_up", "0"],
     "argument --step_size_up: must be >= 1"),
    (["CyclicLR", "--base_lr", "0.01", "--max_lr", "abc"],
     "argument --max_lr: expected a finite number or a list of numbers, got 'abc'"),
    (["OneCycleLR", "--max_lr", "0.1", "--total_steps", "9", "--div_factor", "0"],
     "argument --div_factor: must be positive"),
    (["PolynomialLR", "--power", "-1"], "argument --power: must be >= 0"),
    (["CosineAnnealingWarmRestarts", "--T_0", "0"], "argument --T_0: must be >= 1"),
    (["MultiStepLR", "--milestones", "3"], "argument --milestones: expected a list of ints"),
    (["CyclicLR", "--base_lr", "0.01", "--max_lr", "0.1", "--mode", "3"],
     "argument --mode: expected a string, got '3'"),
    (["SequentialLR", "--milestones", "[2]", "--schedulers",
      "[StepLR(step_size=0), ExponentialLR(gamma=0.9)]"],
     "--schedulers: StepLR: argument --step_size: must be >= 1, got 0"),
    (["ExponentialLR", "--gamma", "10", "--steps", "400"],
     "ExponentialLR: the learning rate is inf at step 310: the arguments overflow"),
    ([], "the following arguments are required: NAME"),
])
def test_errors_exit_2_with_a_clear_message(argv, message, capsys):
    code, out, err = run(argv, capsys, exact=False)
    assert code == 2 and out == ""
    assert message in usage_error(err)


def test_a_bare_flag_is_true_for_boolean_arguments_only(capsys):
    code, out, err = run(["OneCycleLR", "--max_lr", "0.1", "--total_steps", "10",
                          "--three_phase"], capsys)
    assert code == 0 and "three_phase=True" in out.splitlines()[0], err


def test_plot_into_a_missing_folder_fails_before_the_table(tmp_path, capsys):
    path = tmp_path / "missing" / "schedule.png"
    code, out, err = run(["StepLR", "--step_size", "3", "--plot", str(path)], capsys)
    assert code == 2 and out == ""           # nothing printed, then a traceback: no more
    assert "argument --plot: cannot write" in usage_error(err) and "does not exist" in err


def test_values_are_rounded_for_people_and_exact_on_request(capsys):
    code, out, _ = run(["StepLR", "--step_size", "2", "--steps", "4"], capsys, exact=False)
    assert code == 0
    assert out.splitlines()[-1] == "3 0.01"
    code, out, _ = run(["StepLR", "--step_size", "2", "--steps", "4"], capsys)
    assert out.splitlines()[-1] == "3 0.010000000000000002"


def test_help(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "python -m nbopt schedule OneCycleLR" in out
    assert all(name in out for name in schedule_cli.SCHEDULERS)
    # every option of the command itself is described
    assert all(f"--{key} " in out for key in schedule_cli._OWN)
    assert nbopt_main(["--help"]) == 0
    assert "schedule" in capsys.readouterr().out


def test_bench_is_still_dispatched(capsys):
    with pytest.raises(SystemExit) as exc:      # argparse's --help exits 0
        nbopt_main(["bench", "--help"])
    assert exc.value.code == 0
    assert "--algorithms" in capsys.readouterr().out


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("argv", [
    ["OneCycleLR", "--max_lr", "0.1", "--total_steps", "100"],
    ["StepLR", "--step_size", "10", "--lr", "[0.1, 0.05]", "--steps", "50"],
    ["ReduceLROnPlateau", "--patience", "2", "--steps", "30"],
])
def test_plot_writes_a_png(argv, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is the optional plot extra")
    path = tmp_path / "schedule.png"
    code, out, err = run([*argv, "--plot", str(path)], capsys)
    assert code == 0, err
    width, height = _png_size(path)
    assert width >= 400 and height >= 200
    assert out.startswith("# ")                 # the sequence is printed as well


def test_missing_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    # a None entry in sys.modules makes the import raise ImportError
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends",
                 "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    path = tmp_path / "schedule.png"
    code, out, err = run(["OneCycleLR", "--max_lr", "0.1", "--total_steps", "100",
                          "--plot", str(path)], capsys)
    assert code == 2 and out == ""
    assert "matplotlib is needed for --plot: pip install 'nbopt[plot]'" in err
    assert not path.exists()
    # without --plot nothing needs matplotlib
    code, out, _ = run(["OneCycleLR", "--max_lr", "0.1", "--total_steps", "10"], capsys)
    assert code == 0 and len(out.splitlines()) == 12


def test_a_run_emits_no_scheduler_warnings(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, _, err = run(["CosineAnnealingWarmRestarts", "--T_0", "5", "--steps", "20"],
                           capsys)
    assert code == 0 and "warning" not in err


def test_docstring_examples():
    result = doctest.testmod(schedule_cli)
    assert result.attempted > 0 and result.failed == 0


def test_docs_extension_draws_the_plot_at_build_time(tmp_path):
    pytest.importorskip("sphinx", reason="Sphinx is the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("matplotlib", reason="matplotlib is the optional plot extra")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {os.path.join(root, 'docs', '_ext')!r})\n"
        "extensions = ['scheduler_plots']\n")
    (src / "index.rst").write_text(
        "Plot\n====\n\n.. scheduler-plot:: CyclicLR --base_lr 0.01 --max_lr 0.1 "
        "--step_size_up 5 --steps 30\n")
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src),
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    images = list((out / "_images").glob("CyclicLR-*.png"))
    assert len(images) == 1
    _png_size(images[0])
    html = (out / "index.html").read_text()
    assert f"_images/{images[0].name}" in html
    assert "python -m nbopt schedule CyclicLR --base_lr 0.01" in html.replace(
        '<span class="pre">', "").replace("</span>", "")
    assert not any(p.suffix == ".png" for p in src.iterdir())   # nothing in the sources
