"""``python -m nbopt demo``: training runs (tiny sizes), the SWA recipe, the
plot, the progress output with and without tqdm, and the errors."""
from __future__ import annotations

import math
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import nbopt
from nbopt.cli import demo
from nbopt.cli.main import main as nbopt_main

from conftest import requires_torch

# small enough for a fraction of a second, long enough to learn (75+ steps)
TINY = ["--samples", "1000", "--batch-size", "32", "--epochs", "4"]
CHANCE = 1 / demo.CLASSES


def run_main(argv, capsys):
    """Exit status, stdout, stderr; a usage error exits (status 2) as argparse does."""
    try:
        code = demo.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def accuracies(out: str, label: str = "") -> tuple[float, float]:
    m = re.search(rf"^{label}\s*train accuracy: ([\d.]+)%  test accuracy: ([\d.]+)%", out, re.M)
    assert m, f"no {label or 'model'} accuracy line in:\n{out}"
    return float(m.group(1)) / 100, float(m.group(2)) / 100


# -- data and model -------------------------------------------------------------------------
def test_spirals_are_deterministic_balanced_and_seeded():
    x, y = demo.make_spirals(3000, seed=5)
    x2, y2 = demo.make_spirals(3000, seed=5)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == (3000, demo.FEATURES) and x.dtype == np.float32 and y.dtype == np.int64
    counts = np.bincount(y, minlength=demo.CLASSES)
    assert counts.min() > 0.28 * 3000          # about a third each
    x3, _ = demo.make_spirals(3000, seed=6)
    assert not np.array_equal(x, x3)
    # the structure is spread over every input: no coordinate is pure signal
    assert np.all(x.std(axis=0) > 0.1)


def test_model_is_the_documented_mlp():
    model = demo.build_model(16, 32, 3, seed=0)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [p.shape for p in model.parameters()][::2] == [(32, 16), (32,), (32, 32), (32,),
                                                          (3, 32)]


def test_accuracy_restores_the_mode():
    model = demo.build_model(16, 8, 3, seed=0)
    x, y = demo.make_spirals(50, seed=0)
    assert model.training
    acc = demo.accuracy(model, x, y, batch=16)
    assert model.training and 0.0 <= acc <= 1.0
    model.eval()
    assert demo.accuracy(model, x, y, batch=7) == acc   # eval-mode forward: batch-independent
    assert not model.training


# -- training ---------------------------------------------------------------------------------
def test_tiny_run_learns_above_chance(capsys):
    code, out, err = run_main([*TINY, "--no-progress"], capsys)
    assert code == 0, err
    train, test = accuracies(out)
    assert train > CHANCE + 0.15 and test > CHANCE + 0.15
    assert "SGD(lr=0.1, momentum=0.9), CosineAnnealingLR stepped per batch, 4 epochs" in out
    assert re.search(r"^trained in [\d.]+ s$", out, re.M)


def test_runs_are_deterministic_per_seed():
    kwargs = dict(samples=600, batch_size=50, epochs=2, progress=False, out=_Null())
    a, b = demo.run(**kwargs), demo.run(**kwargs)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert a.test_accuracy == b.test_accuracy
    c = demo.run(seed=1, **kwargs)
    assert not np.array_equal(a.losses, c.losses)


class _Null:
    def write(self, text):
        return len(text)

    def flush(self):
        pass


@pytest.mark.parametrize("scheduler", demo.SCHEDULERS)
def test_schedules(scheduler):
    epochs, lr = 3, 0.1
    result = demo.run(samples=500, batch_size=100, epochs=epochs, scheduler=scheduler, lr=lr,
                      progress=False, out=_Null())
    nb = result.batches_per_epoch
    lrs = result.lrs
    assert lrs.shape == result.losses.shape == (epochs * nb,)
    assert np.all(np.isfinite(result.losses))
    if scheduler == "none":
        assert np.all(lrs == lr)
    elif scheduler == "cosine":     # per batch, from lr towards 0
        total = epochs * nb
        expected = [lr * (1 + math.cos(math.pi * k / total)) / 2 for k in range(total)]
        np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    elif scheduler == "step":       # 10x down after each third of the epochs
        np.testing.assert_allclose(lrs, np.repeat([lr, lr / 10, lr / 100], nb), rtol=1e-12)
    else:                           # onecycle: up to max_lr, then far below the start
        assert 0.9 * lr < lrs.max() <= lr
        assert lrs[0] == pytest.approx(lr / 25) and lrs[-1] < lrs[0] / 100


def test_every_listed_optimizer_exists_and_takes_its_options():
    for name, (lr, options) in demo.OPTIMIZERS.items():
        cls = getattr(nbopt, name)
        opt = cls([nbopt.Parameter(np.zeros(2, np.float32))], lr=lr, **options)
        assert opt.param_groups[0]["lr"] == lr


def test_optimizer_names_are_case_insensitive_and_onecycle_needs_no_momentum(capsys):
    # Adagrad has neither momentum nor betas: OneCycleLR must not try to cycle them
    code, out, err = run_main(["--optimizer", "adagrad", "--scheduler", "onecycle",
                               "--samples", "300", "--epochs", "1", "--no-progress"], capsys)
    assert code == 0, err
    assert "Adagrad(lr=0.1), OneCycleLR stepped per batch" in out


def test_a_last_batch_of_one_sample_joins_the_previous_one(capsys):
    assert demo._batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert demo._batch_bounds(9, 4) == [(0, 4), (4, 9)]
    assert demo._batch_bounds(8, 4) == [(0, 4), (4, 8)]
    # 800 training samples in batches of 799: batch norm would see one sample
    code, out, err = run_main(["--samples", "1000", "--batch-size", "799", "--epochs", "2",
                               "--swa", "--no-progress"], capsys)
    assert code == 0, err
    assert "2 epochs x 1 batches of 799" in out


# -- SWA -------------------------------------------------------------------------------------
def test_swa_reports_both_models(capsys):
    code, out, err = run_main([*TINY, "--swa", "--no-progress"], capsys)
    assert code == 0, err
    for label in ("model", "SWA model"):
        train, test = accuracies(out, label)
        assert train > CHANCE + 0.15 and test > CHANCE + 0.15
    # 4 epochs: swa_start 2 (the last quarter), so epoch index 3 -- printed as
    # epoch 4, the header counts as the epoch lines do -- is averaged
    assert "(1 epoch averaged)" in out
    assert "CosineAnnealingLR(T_max=4) per epoch, then in epoch 4: SWALR(swa_lr=0.05, " \
           "anneal_epochs=2) and AveragedModel (the recipe's swa_start=2), then update_bn" in out


def test_swa_header_and_epoch_lines_count_epochs_alike(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)       # one line per epoch
    code, out, err = run_main(["--samples", "300", "--epochs", "6", "--swa", "--swa-start", "2"],
                              capsys)
    assert code == 0, err
    assert "then in epochs 4-6: SWALR" in out
    averaged = re.findall(r"^epoch (\d)/6 .*\(averaged: (\d)\)$", out, re.M)
    assert averaged == [("4", "1"), ("5", "2"), ("6", "3")]


def test_swa_recipe_schedule_and_average():
    epochs, start = 8, 3
    result = demo.run(samples=600, batch_size=100, epochs=epochs, swa=True, swa_start=start,
                      swa_lr=0.02, swa_anneal_epochs=2, progress=False, out=_Null())
    assert result.models_averaged == epochs - start - 1 and result.swa_start == start
    nb = result.batches_per_epoch
    per_epoch = result.lrs[::nb]
    # the lr is constant within an epoch (both schedulers step per epoch)
    np.testing.assert_array_equal(result.lrs, np.repeat(per_epoch, nb))
    # cosine up to the hand-over, then SWALR's cos annealing to swa_lr over 2 epochs
    cos = [0.1 * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(start + 2)]
    np.testing.assert_allclose(per_epoch[:start + 2], cos, rtol=1e-12)
    handover = cos[-1]
    alpha = (1 - math.cos(math.pi / 2)) / 2
    assert per_epoch[start + 2] == pytest.approx(alpha * 0.02 + (1 - alpha) * handover)
    np.testing.assert_allclose(per_epoch[start + 3:], 0.02, rtol=1e-12)
    assert 0 <= result.swa_test_accuracy <= 1


@requires_torch
def test_swa_recipe_lrs_match_torch():
    """The per-epoch learning rates of ``--swa`` are torch's recipe's, bit for bit."""
    import torch
    from torch.optim.swa_utils import SWALR

    epochs, start, swa_lr = 9, 4, 0.03
    result = demo.run(samples=400, batch_size=100, epochs=epochs, swa=True, swa_start=start,
                      swa_lr=swa_lr, swa_anneal_epochs=3, progress=False, out=_Null())
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    swa = SWALR(opt, swa_lr=swa_lr, anneal_epochs=3)
    want = []
    for epoch in range(epochs):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        if epoch > start:
            swa.step()
        else:
            cosine.step()
    assert result.lrs[::result.batches_per_epoch].tolist() == want


# -- output -------------------------------------------------------------------------------------
def _png_size(path) -> tuple[int, int]:
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("extra", [[], ["--swa"]])
def test_plot_writes_a_png(extra, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is the optional demo/plot extra")
    path = tmp_path / "demo.png"
    code, out, err = run_main(["--samples", "300", "--epochs", "2", "--no-progress", *extra,
                               "--plot", str(path)], capsys)
    assert code == 0, err
    width, height = _png_size(path)
    assert width >= 600 and height >= 400
    assert f"wrote {path}" in out


def test_missing_matplotlib_fails_before_training(tmp_path, capsys, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends",
                 "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    path = tmp_path / "demo.png"
    code, out, err = run_main(["--samples", "300", "--epochs", "1", "--plot", str(path)],
                              capsys)
    assert code == 2
    assert demo.MISSING_MATPLOTLIB in err
    assert "accuracy" not in out and not path.exists()


def test_without_tqdm_one_line_per_epoch(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)       # import tqdm -> ImportError
    code, out, err = run_main(["--samples", "300", "--epochs", "3"], capsys)
    assert code == 0, err
    assert demo.NO_TQDM_HINT in out
    lines = re.findall(r"^epoch (\d)/3  loss ([\d.]+)  lr \S+  test accuracy [\d.]+%$", out, re.M)
    assert [int(e) for e, _ in lines] == [1, 2, 3]
    assert all(float(loss) > 0 for _, loss in lines)


def test_with_tqdm_a_progress_bar(capsys):
    pytest.importorskip("tqdm", reason="tqdm is the optional demo extra")
    code, out, err = run_main(["--samples", "300", "--epochs", "2"], capsys)
    assert code == 0, err
    assert demo.NO_TQDM_HINT not in out
    assert "training: 100%" in err and "epoch 2/2" in err


def test_no_progress_prints_neither(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    code, out, err = run_main(["--samples", "300", "--epochs", "2", "--no-progress"], capsys)
    assert code == 0
    assert demo.NO_TQDM_HINT not in out and "epoch 1/2" not in out and "training:" not in err


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--optimizer", "LBFGS"],
     "argument --optimizer: unknown optimizer 'LBFGS'; choose from SGD, Adam"),
    (["--swa", "--scheduler", "step"], "--swa runs torch's SWA recipe"),
    (["--swa", "--epochs", "3", "--swa-start", "2"], "--swa-start must be in [0, epochs - 2]"),
    (["--swa", "--epochs", "1"], "--swa-start must be in [0, epochs - 2] = [0, -1]"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
    (["--batch-size", "1"], "argument --batch-size: must be an integer >= 2, got 1"),
    (["--lr", "-1"], "argument --lr: must be positive, got -1"),
    (["--lr", "nan"], "argument --lr: must be a finite number, got 'nan'"),
    (["--swa", "--swa-lr", "0"], "argument --swa-lr: must be positive"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    (["--samples", "5"], "argument --samples: must be an integer >= 10, got 5"),
    (["--swa", "--swa-start", "-1"], "argument --swa-start: must be an integer >= 0"),
    (["--plot", "/nonexistent-folder/demo.png"], "argument --plot: cannot write"),
])
def test_bad_options_exit_2(argv, message, capsys):
    code, out, err = run_main(argv, capsys)
    assert code == 2
    lines = err.splitlines()
    assert lines[0].startswith("usage: python -m nbopt demo")
    assert lines[-1].startswith("python -m nbopt demo: error: ") and message in lines[-1]
    assert "accuracy" not in out and "data:" not in out


def test_unknown_scheduler_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--scheduler", "plateau"])
    assert exc.value.code == 2
    assert "invalid choice: 'plateau'" in capsys.readouterr().err


# -- the command ---------------------------------------------------------------------------------
def test_registered_in_python_dash_m_nbopt(capsys):
    assert nbopt_main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert nbopt_main(["demo", "--samples", "200", "--epochs", "1", "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_python_dash_m_nbopt_demo_subprocess():
    proc = subprocess.run([sys.executable, "-m", "nbopt", "demo", *TINY, "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert accuracies(proc.stdout)[1] > CHANCE + 0.15


def test_warms_up_before_the_progress_bar(capsys, monkeypatch):
    """The optimizer's kernels compile before the first batch, so the bar's
    first estimate is a training estimate (issue 16: an hour on batch one)."""
    calls = []
    real_warmup, real_progress = nbopt.warmup, demo._progress
    monkeypatch.setattr(nbopt, "warmup", lambda *a, **k: calls.append("warmup")
                        or real_warmup(*a, **k))
    monkeypatch.setattr(demo, "_progress", lambda *a: calls.append("progress")
                        or real_progress(*a))
    code, _, err = run_main(["--samples", "300", "--epochs", "1", "--optimizer", "adam"], capsys)
    assert code == 0, err
    assert calls == ["warmup", "progress"]


def test_blas_threads_are_limited_and_restored():
    apis = demo._openblas_thread_apis()
    if not apis:
        pytest.skip("NumPy does not use a loadable OpenBLAS here")
    before = [get() for get, _ in apis]
    with demo._blas_threads(1):
        assert [get() for get, _ in apis] == [1] * len(apis)
    assert [get() for get, _ in apis] == before
