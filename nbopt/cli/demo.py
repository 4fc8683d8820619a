r"""``python -m nbopt demo``: train a small network with nbopt, end to end.

Usage::

    python -m nbopt demo [--optimizer NAME] [--lr LR] [--scheduler NAME] [--epochs N]
                         [--swa] [--swa-start E] [--swa-lr LR] [--swa-anneal-epochs N]
                         [--samples N] [--batch-size B] [--hidden H] [--seed S]
                         [--plot out.png]

The data are generated in code (nothing is downloaded): three interleaved
spirals in the plane, with Gaussian noise, embedded in 16 dimensions by a
random rotation together with 14 dimensions of pure noise; 80 % of the
samples train, 20 % test.  The model is an :mod:`nbopt.nn` MLP,
``Linear -> BatchNorm1d -> ReLU -> Linear -> BatchNorm1d -> ReLU -> Linear``,
trained in float32 on mini-batches with softmax cross-entropy and the
optimizer of ``--optimizer`` (any algorithm of :mod:`nbopt` that steps on
dense gradients; SGD gets momentum 0.9).  The run is deterministic for a
given ``--seed``.

``--scheduler`` picks the learning-rate schedule, stepped after every batch:

``cosine`` (default)
    :class:`~nbopt.lr_scheduler.CosineAnnealingLR` from ``--lr`` to 0 over
    the run;
``onecycle``
    :class:`~nbopt.lr_scheduler.OneCycleLR` with ``max_lr = --lr`` (cycling
    the momentum or beta1 where the optimizer has one);
``step``
    :class:`~nbopt.lr_scheduler.StepLR`, the lr divided by 10 after each
    third of the epochs;
``none``
    a constant lr.

``--swa`` runs torch's "putting it all together" recipe for Stochastic
Weight Averaging instead: :class:`~nbopt.lr_scheduler.CosineAnnealingLR`
with ``T_max = --epochs`` stepped once per epoch up to epoch ``--swa-start``;
after it, :class:`~nbopt.swa_utils.SWALR` (made, as in the recipe, before
training starts) anneals to ``--swa-lr`` over ``--swa-anneal-epochs``
epochs, and :class:`~nbopt.swa_utils.AveragedModel` averages the weights
at the end of every epoch; finally :func:`~nbopt.swa_utils.update_bn`
recomputes the batch-norm statistics of the averaged model.  The accuracy
of both the trained and the averaged model is reported.

Output: a progress bar (tqdm, an optional dependency; without it one line
per epoch), then the final train and test accuracy.  ``--plot out.png``
draws the training loss and the learning rate of every batch (matplotlib,
optional).  ``pip install 'nbopt[demo]'`` installs both.

Examples
--------
The pieces behind the command:

>>> from nbopt.cli.demo import make_spirals, build_model, accuracy
>>> x, y = make_spirals(600, seed=0)
>>> x.shape, x.dtype, sorted(set(y.tolist()))
((600, 16), dtype('float32'), [0, 1, 2])
>>> model = build_model(16, 32, 3, seed=0)
>>> 0.0 <= accuracy(model, x, y) <= 1.0
True

From a shell::

    python -m nbopt demo
    python -m nbopt demo --optimizer Adam --scheduler onecycle --epochs 10 --plot adam.png
    python -m nbopt demo --swa --epochs 30
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ._common import (Parser, UsageError, compile_notice, integer, number, one_of,
                      output_file)

__all__ = ["make_spirals", "build_model", "accuracy", "run", "plot", "main", "OPTIMIZERS",
           "SCHEDULERS", "DemoResult", "MISSING_MATPLOTLIB", "NO_TQDM_HINT"]

MISSING_MATPLOTLIB = "matplotlib is needed for --plot: pip install 'nbopt[demo]'"
NO_TQDM_HINT = "(no tqdm: one line per epoch; pip install 'nbopt[demo]' for a progress bar)"

#: The optimizers the demo can use, with the learning rate each gets by
#: default and its other options (chosen to train this problem well in the
#: default 20 epochs: 96-97 % test accuracy, Rprop excepted).  LBFGS (needs
#: a closure) and SparseAdam (sparse gradients only) do not fit a mini-batch
#: loop.
OPTIMIZERS = {
    "SGD": (0.1, {"momentum": 0.9}),
    "Adam": (1e-2, {}),
    "AdamW": (1e-2, {}),
    "NAdam": (1e-2, {}),
    "RAdam": (1e-2, {}),
    "Adamax": (2e-2, {}),
    "Adagrad": (0.1, {}),
    "Adadelta": (1.0, {}),
    "ASGD": (0.5, {}),
    "RMSprop": (1e-2, {}),
    "Rprop": (1e-2, {}),        # a full-batch method: mini-batches reach ~80 % here
    # 8-bit state (issue 18); min_8bit_size=0 quantizes every parameter's
    # moments, biases and BatchNorm vectors included
    "Adam8bit": (1e-2, {"min_8bit_size": 0}),
    "AdamW8bit": (1e-2, {"min_8bit_size": 0}),
}
SCHEDULERS = ("cosine", "onecycle", "step", "none")

CLASSES = 3
FEATURES = 16
NOISE = 0.2
TEST_FRACTION = 0.2


# -- data and model -----------------------------------------------------------------------
def make_spirals(samples: int, *, classes: int = CLASSES, features: int = FEATURES,
                 noise: float = NOISE, turns: float = 1.5, seed: int = 0):
    """``classes`` interleaved spirals, embedded in ``features`` dimensions.

    Each sample lies on the arm of its class, at a radius that grows with
    the arm's angle (``turns`` turns out to radius 4), plus Gaussian noise of
    standard deviation ``noise``; the two plane coordinates and
    ``features - 2`` coordinates of pure noise are then rotated by a random
    orthogonal matrix, so that no single input carries the structure.

    Parameters
    ----------
    samples : int
        Number of samples.
    classes, features : int
        Number of classes (spiral arms) and of input dimensions (>= 2).
    noise : float
        Noise standard deviation.
    turns : float
        Turns of each arm.
    seed : int
        Seed of the random generator: same seed, same data.

    Returns
    -------
    x : ndarray, float32, shape (samples, features)
    y : ndarray, int64, shape (samples,)
        The class of each sample.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, samples)
    # sqrt: uniform density over the area, not crowded at the centre
    t = np.sqrt(rng.uniform(0.02, 1.0, samples))
    angle = 2 * np.pi * (y / classes + turns * t)
    plane = 4.0 * t[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    plane += noise * rng.standard_normal(plane.shape)
    rest = noise * rng.standard_normal((samples, features - 2))
    rotation, _ = np.linalg.qr(rng.standard_normal((features, features)))
    x = np.concatenate([plane, rest], axis=1) @ rotation.T
    return x.astype(np.float32), y.astype(np.int64)


def build_model(features: int, hidden: int, classes: int, *, seed: int = 0):
    """``Linear -> BatchNorm1d -> ReLU -> Linear -> BatchNorm1d -> ReLU -> Linear``
    (:mod:`nbopt.nn`, float32, initialised as torch initialises it)."""
    from .. import nn

    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(features, hidden, rng=rng), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden, rng=rng), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, classes, rng=rng))


def accuracy(model, x, y, batch: int = 1024) -> float:
    """Fraction of ``x`` classified as ``y``, in eval mode (running batch-norm
    statistics); the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        hits = sum(int(np.count_nonzero(model(x[i:i + batch]).argmax(axis=1) == y[i:i + batch]))
                   for i in range(0, len(x), batch))
    finally:
        model.train(was_training)
    return hits / len(x)


# -- BLAS threads ---------------------------------------------------------------------------
def _openblas_thread_apis() -> list:
    """``(get, set)`` thread-count functions of every OpenBLAS loaded in the
    process: NumPy's, and SciPy's once Numba has loaded it for its own linear
    algebra (limiting only the first one found left NumPy's threads on)."""
    import ctypes
    import glob

    paths = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs",
                                   "*openblas*"))
    with contextlib.suppress(OSError):
        with open("/proc/self/maps") as maps:
            paths += [line.split()[-1] for line in maps
                      if "openblas" in line.lower() and "/" in line]
    apis, seen = [], set()
    for path in dict.fromkeys(os.path.realpath(p) for p in paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if set_ is None or get is None:
                    continue
                address = ctypes.cast(set_, ctypes.c_void_p).value
                if address in seen:
                    continue
                seen.add(address)
                set_.argtypes, set_.restype = [ctypes.c_int], None
                get.argtypes, get.restype = [], ctypes.c_int
                apis.append((get, set_))
    return apis


@contextlib.contextmanager
def _blas_threads(n: int):
    """Limit BLAS to ``n`` threads inside the block (restored afterwards).

    The demo's matrices are small (128 x 128): threads only add
    synchronisation, and on a busy 2-core machine OpenBLAS's threads made
    each product of that size 100x slower (8-16 ms instead of 50 us,
    measured), which turned a 1.5 s run into 30 s.  threadpoolctl is used
    when installed; otherwise every loaded OpenBLAS is asked directly; with
    any other BLAS nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
        return
    apis = _openblas_thread_apis()
    before = [get() for get, _ in apis]
    for _, set_ in apis:
        set_(n)
    try:
        yield
    finally:
        for (_, set_), count in zip(apis, before):
            set_(count)


# -- progress -------------------------------------------------------------------------------
class _PlainProgress:
    """One line per epoch, for when tqdm is missing."""

    def __init__(self, epochs: int, batches: int, out) -> None:
        self.epochs, self.out = epochs, out
        print(NO_TQDM_HINT, file=out)

    def batch(self, loss: float, lr: float) -> None:
        pass

    def epoch(self, epoch: int, loss: float, lr: float, test_acc: float, note: str) -> None:
        width = len(str(self.epochs))
        print(f"epoch {epoch + 1:{width}d}/{self.epochs}  loss {loss:.4f}  lr {lr:.4g}  "
              f"test accuracy {100 * test_acc:.2f}%{note}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class _TqdmProgress:
    """One bar over all batches, with the epoch's loss, lr and test accuracy."""

    def __init__(self, tqdm, epochs: int, batches: int) -> None:
        self.epochs = epochs
        self.bar = tqdm(total=epochs * batches, unit="batch", desc="training",
                        dynamic_ncols=True, mininterval=0.2)
        self.test = ""

    def batch(self, loss: float, lr: float) -> None:
        self.bar.update(1)

    def epoch(self, epoch: int, loss: float, lr: float, test_acc: float, note: str) -> None:
        self.bar.set_postfix_str(f"epoch {epoch + 1}/{self.epochs} loss {loss:.4f} lr {lr:.3g} "
                                 f"test {100 * test_acc:.1f}%{note}", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _progress(epochs: int, batches: int, enabled: bool, out):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(epochs, batches, out)
    return _TqdmProgress(tqdm, epochs, batches)


# -- training -------------------------------------------------------------------------------
@dataclass
class DemoResult:
    """What :func:`run` returns: the curves and the accuracies."""

    losses: np.ndarray                 # training loss of every batch
    lrs: np.ndarray                    # the learning rate every batch was stepped with
    test_accuracy_per_epoch: np.ndarray
    batches_per_epoch: int
    train_accuracy: float
    test_accuracy: float
    swa_train_accuracy: float | None = None
    swa_test_accuracy: float | None = None
    swa_start: int | None = None       # the recipe's swa_start (epochs after it are averaged)
    models_averaged: int = 0
    seconds: float = 0.0
    description: list = field(default_factory=list)


def _optimizer_name(name: str) -> str:
    for known in OPTIMIZERS:
        if known.lower() == name.lower():
            return known
    raise UsageError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def _cycles_momentum(optimizer) -> bool:
    group = optimizer.param_groups[0]
    return "betas" in group or bool(group.get("momentum"))


def _make_scheduler(kind: str, optimizer, lr: float, epochs: int, batches: int):
    from .. import lr_scheduler

    total = epochs * batches
    if kind == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if kind == "onecycle":
        return lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total,
                                       cycle_momentum=_cycles_momentum(optimizer))
    if kind == "step":
        return lr_scheduler.StepLR(optimizer, step_size=batches * max(1, epochs // 3), gamma=0.1)
    return None


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each mini-batch; a last batch of one sample joins
    the one before (batch norm needs two samples per batch in training)."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def default_swa_start(epochs: int) -> int:
    """The recipe averages the epochs after ``swa_start``: by default the last
    quarter of the run (at least one epoch)."""
    return max(0, epochs - max(1, epochs // 4) - 1)


def run(*, optimizer: str = "SGD", lr: float | None = None, scheduler: str = "cosine",
        epochs: int = 20, samples: int = 10_000, batch_size: int = 128, hidden: int = 128,
        seed: int = 0, swa: bool = False, swa_start: int | None = None,
        swa_lr: float | None = None, swa_anneal_epochs: int = 2, progress: bool = True,
        out=None) -> DemoResult:
    """Train the demo network; the arguments are the command's options.

    Returns a :class:`DemoResult`.  Raises :class:`UsageError` for options
    that do not fit together.
    """
    import nbopt
    from .. import nn
    from ..swa_utils import SWALR, AveragedModel, update_bn

    out = sys.stdout if out is None else out
    name = _optimizer_name(optimizer)
    if scheduler not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    for label, value, low in (("--epochs", epochs, 1), ("--batch-size", batch_size, 2),
                              ("--hidden", hidden, 1), ("--samples", samples, 10)):
        if value < low:
            raise UsageError(f"{label} must be at least {low}, got {value}")
    default_lr, options = OPTIMIZERS[name]
    lr = default_lr if lr is None else lr
    if not lr > 0:
        raise UsageError(f"--lr must be positive, got {lr}")
    if swa:
        if scheduler != "cosine":
            raise UsageError("--swa runs torch's SWA recipe, which anneals with CosineAnnealingLR: "
                             "leave --scheduler at cosine")
        swa_start = default_swa_start(epochs) if swa_start is None else swa_start
        if not 0 <= swa_start <= epochs - 2:
            raise UsageError(f"--swa-start must be in [0, epochs - 2] = [0, {epochs - 2}] so "
                             f"that at least one epoch is averaged, got {swa_start}")
        swa_lr = lr / 2 if swa_lr is None else swa_lr
        if not swa_lr > 0:
            raise UsageError(f"--swa-lr must be positive, got {swa_lr}")
        if swa_anneal_epochs < 0:
            raise UsageError(f"--swa-anneal-epochs must be at least 0, got {swa_anneal_epochs}")

    x, y = make_spirals(samples, seed=seed)
    n_train = samples - max(1, int(round(samples * TEST_FRACTION)))
    x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    bounds = _batch_bounds(n_train, batch_size)
    batches = len(bounds)

    model = build_model(FEATURES, hidden, CLASSES, seed=seed + 1)
    loss_fn = nn.CrossEntropyLoss()
    opt = getattr(nbopt, name)(model.parameters(), lr=lr, **options)
    rng = np.random.default_rng(seed + 2)

    settings = ", ".join([f"lr={lr:g}"] + [f"{k}={v}" for k, v in options.items()])
    n_params = sum(p.size for p in model.parameters())
    description = [
        f"data: {CLASSES} noisy spirals in {FEATURES}-D, {n_train:,} train / "
        f"{samples - n_train:,} test samples (seed {seed})",
        f"model: Linear({FEATURES}, {hidden}) -> BatchNorm1d -> ReLU -> Linear({hidden}, {hidden})"
        f" -> BatchNorm1d -> ReLU -> Linear({hidden}, {CLASSES}), {n_params:,} parameters",
    ]
    if swa:
        # torch's recipe: every object made before the loop, SWALR included
        swa_model = AveragedModel(model)
        sched = nbopt.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        swa_sched = SWALR(opt, swa_lr=swa_lr, anneal_epochs=swa_anneal_epochs)
        # epochs counted from 1, as the epoch lines count them: the recipe's
        # loop variable (0-based) averages after epoch index swa_start
        first = swa_start + 2
        span = f"epoch {first}" if first == epochs else f"epochs {first}-{epochs}"
        description.append(
            f"training: {name}({settings}), {epochs} epochs x {batches} batches of {batch_size}; "
            f"CosineAnnealingLR(T_max={epochs}) per epoch, then in {span}: "
            f"SWALR(swa_lr={swa_lr:g}, anneal_epochs={swa_anneal_epochs}) and AveragedModel "
            f"(the recipe's swa_start={swa_start}), then update_bn")
    else:
        sched = _make_scheduler(scheduler, opt, lr, epochs, batches)
        label = "constant lr" if sched is None else f"{type(sched).__name__} stepped per batch"
        description.append(f"training: {name}({settings}), {label}, {epochs} epochs x "
                           f"{batches} batches of {batch_size}")
    for line in description:
        print(line, file=out)

    # Compile (or load) the kernels before the progress bar starts: a first
    # batch that compiles for seconds made the bar estimate an hour.
    nbopt.warmup([name], dtypes=[np.float32])
    if swa:
        AveragedModel(model).update_parameters(model)    # the averaging kernels
    losses = np.empty(epochs * batches)
    lrs = np.empty(epochs * batches)
    test_acc = np.empty(epochs)
    bar = _progress(epochs, batches, progress, out)
    start = time.perf_counter()
    k = 0
    with _blas_threads(1):
        try:
            for epoch in range(epochs):
                order = rng.permutation(n_train)
                for lo, hi in bounds:
                    idx = order[lo:hi]
                    lrs[k] = opt.param_groups[0]["lr"]
                    opt.zero_grad()
                    loss = loss_fn(model(x_train[idx]), y_train[idx])
                    model.backward(loss_fn.backward())
                    opt.step()
                    if sched is not None and not swa:
                        sched.step()
                    losses[k] = float(loss)
                    if bar is not None:
                        bar.batch(losses[k], lrs[k])
                    k += 1
                note = ""
                if swa:
                    if epoch > swa_start:
                        swa_model.update_parameters(model)
                        swa_sched.step()
                        note = f"  (averaged: {int(swa_model.n_averaged)})"
                    else:
                        sched.step()
                test_acc[epoch] = accuracy(model, x_test, y_test)
                if bar is not None:
                    epoch_loss = float(losses[k - batches:k].mean())
                    bar.epoch(epoch, epoch_loss, float(lrs[k - 1]), test_acc[epoch], note)
        finally:
            if bar is not None:
                bar.close()
        result = DemoResult(losses=losses, lrs=lrs, test_accuracy_per_epoch=test_acc,
                            batches_per_epoch=batches,
                            train_accuracy=accuracy(model, x_train, y_train),
                            test_accuracy=float(test_acc[-1]), description=description)
        if swa:
            loader = [(x_train[lo:hi], y_train[lo:hi]) for lo, hi in bounds]
            update_bn(loader, swa_model)
            result.swa_train_accuracy = accuracy(swa_model, x_train, y_train)
            result.swa_test_accuracy = accuracy(swa_model, x_test, y_test)
            result.swa_start = swa_start
            result.models_averaged = int(swa_model.n_averaged)
    result.seconds = time.perf_counter() - start
    return result


# -- plot -----------------------------------------------------------------------------------
def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError(MISSING_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg


def plot(result: DemoResult, path, *, title: str = "") -> None:
    """Draw the training loss and the learning rate of every batch to a PNG
    (matplotlib's Agg canvas, no global state); the SWA phase is shaded.

    Raises ``RuntimeError(MISSING_MATPLOTLIB)`` when matplotlib is missing.
    """
    Figure, FigureCanvasAgg = _import_matplotlib()
    fig = Figure(figsize=(7.5, 5.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True)
    nb = result.batches_per_epoch
    epochs_axis = np.arange(len(result.losses)) / nb
    ax_loss.plot(epochs_axis, result.losses, color="tab:blue", lw=0.6, alpha=0.35,
                 label="batch loss")
    n_epochs = len(result.losses) // nb
    epoch_mean = result.losses[:n_epochs * nb].reshape(n_epochs, nb).mean(axis=1)
    ax_loss.plot(np.arange(1, n_epochs + 1), epoch_mean, color="tab:blue", lw=2, marker="o",
                 ms=3, label="epoch mean")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss")
    ax_acc = ax_loss.twinx()
    ax_acc.plot(np.arange(1, n_epochs + 1), 100 * result.test_accuracy_per_epoch,
                color="tab:green", lw=1.5, marker="s", ms=3, label="test accuracy")
    ax_acc.set_ylabel("test accuracy (%)")
    lines = ax_loss.get_legend_handles_labels()
    more = ax_acc.get_legend_handles_labels()
    # above the panel: the curves fill it
    ax_loss.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left", ncol=3,
                   bbox_to_anchor=(0.0, 1.0), frameon=False, fontsize="small")
    ax_lr.plot(epochs_axis, result.lrs, color="tab:orange", lw=1.6)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    if result.swa_start is not None:
        for ax in (ax_loss, ax_lr):
            ax.axvspan(result.swa_start + 1, n_epochs, color="tab:purple", alpha=0.1, lw=0)
        ax_lr.text(result.swa_start + 1, ax_lr.get_ylim()[1], " SWA", va="top",
                   color="tab:purple")
    for ax in (ax_loss, ax_lr):
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.savefig(path, format="png")


# -- command line ---------------------------------------------------------------------------
def _parser() -> Parser:
    p = Parser(
        prog="python -m nbopt demo",
        description="Train an MLP with BatchNorm (nbopt.nn) on generated data (3 noisy\n"
                    "spirals in 16-D) with an nbopt optimizer and scheduler; print the train\n"
                    "and test accuracy.",
        epilog="examples:\n  python -m nbopt demo\n"
               "  python -m nbopt demo --optimizer Adam --scheduler onecycle --plot adam.png\n"
               "  python -m nbopt demo --swa --epochs 30\n")
    p.add_argument("--optimizer", default="SGD", metavar="NAME",
                   type=one_of(OPTIMIZERS, "optimizer", ignore_case=True),
                   help=f"one of {', '.join(OPTIMIZERS)} (default SGD, with momentum 0.9)")
    p.add_argument("--lr", type=number(positive=True), default=None,
                   help="learning rate (default: per optimizer, SGD 0.1, Adam 0.01, ...)")
    p.add_argument("--scheduler", default="cosine", choices=SCHEDULERS,
                   help="lr schedule, stepped per batch (default cosine)")
    p.add_argument("--epochs", type=integer(1), default=20, metavar="N",
                   help="epochs (default 20)")
    p.add_argument("--swa", action="store_true",
                   help="torch's SWA recipe: CosineAnnealingLR per epoch, then SWALR + "
                        "AveragedModel, then update_bn; report both models")
    p.add_argument("--swa-start", type=integer(0), default=None, metavar="E",
                   help="the recipe's swa_start, an epoch index counted from 0 as in torch's "
                        "loop: the epochs printed as E+2 to N are averaged (default: the last "
                        "quarter)")
    p.add_argument("--swa-lr", type=number(positive=True), default=None, metavar="LR",
                   help="SWALR's swa_lr (default lr / 2)")
    p.add_argument("--swa-anneal-epochs", type=integer(0), default=2, metavar="N",
                   help="SWALR's anneal_epochs (default 2)")
    p.add_argument("--samples", type=integer(10), default=10_000, metavar="N",
                   help="samples generated, 80%% train / 20%% test (default 10000)")
    p.add_argument("--batch-size", type=integer(2), default=128, metavar="B",
                   help="mini-batch size (default 128)")
    p.add_argument("--hidden", type=integer(1), default=128, metavar="H",
                   help="hidden width (default 128)")
    p.add_argument("--seed", type=integer(0), default=0, metavar="S",
                   help="seed of the data, initialisation and shuffling (default 0)")
    p.add_argument("--plot", metavar="FILE", default=None, type=output_file,
                   help="write the loss and lr curves to a PNG (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    return p


def main(argv=None) -> int:
    """Entry point of ``python -m nbopt demo``; returns the exit status (a
    bad command line exits with status 2, as argparse does)."""
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.plot is not None:
            _import_matplotlib()            # fail before training, not after
        with compile_notice():              # one line on stderr if kernels compile
            result = run(optimizer=args.optimizer, lr=args.lr, scheduler=args.scheduler,
                         epochs=args.epochs, samples=args.samples, batch_size=args.batch_size,
                         hidden=args.hidden, seed=args.seed, swa=args.swa,
                         swa_start=args.swa_start, swa_lr=args.swa_lr,
                         swa_anneal_epochs=args.swa_anneal_epochs,
                         progress=not args.no_progress)
    except (UsageError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and str(exc) != MISSING_MATPLOTLIB:
            raise
        parser.error(str(exc))              # options that do not fit together
    label = "model     " if args.swa else ""
    print(f"{label}train accuracy: {100 * result.train_accuracy:.2f}%  "
          f"test accuracy: {100 * result.test_accuracy:.2f}%")
    if args.swa:
        print(f"SWA model train accuracy: {100 * result.swa_train_accuracy:.2f}%  "
              f"test accuracy: {100 * result.swa_test_accuracy:.2f}%  "
              f"({result.models_averaged} epoch{'s' if result.models_averaged != 1 else ''} "
              "averaged)")
    print(f"trained in {result.seconds:.1f} s")
    if args.plot is not None:
        name = _optimizer_name(args.optimizer)
        title = f"{name}, " + ("SWA recipe" if args.swa else f"{args.scheduler} schedule")
        title += f": test accuracy {100 * result.test_accuracy:.2f}%"
        if args.swa:
            title += f", SWA model {100 * result.swa_test_accuracy:.2f}%"
        plot(result, args.plot, title=title)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
