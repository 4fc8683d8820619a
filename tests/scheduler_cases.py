"""The one table of scheduler cases that drives the scheduler parity tests.

``CASES`` lists (scheduler, constructor options, optimizer kind, steps,
metric curve, ...) runs; ``ERROR_CASES`` lists bad inputs.  The same driver
(:func:`run_case`, :func:`run_error`) runs a case through torch 2.13 or through
nbopt: ``tests/make_scheduler_reference.py`` commits torch's results under
``tests/data/scheduler_reference.npz``, ``tests/test_lr_scheduler.py`` replays
them through nbopt (and through live torch when it is importable).

Recorded after construction and after every step: every group's lr, its
momentum / beta1, ``get_last_lr()`` and ``last_epoch``; plus the warnings
(step, category, text), the group keys the scheduler added, and the
scheduler's ``state_dict()`` mid-run and at the end.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

STEPS = 200
RTOL = 1e-12          # issue 5: LR values equal within 1e-12 relative (Tensor lrs too:
                      # float32 in both, computed with the same operations)


# -- the callables a case may name -------------------------------------------------------
def exp097(epoch):
    return 0.97 ** epoch


def warmup_cos(epoch):
    return min(1.0, (epoch + 1) / 10) * (1 + math.cos(math.pi * epoch / 250)) / 2 + 0.05


def mult099(epoch):
    return 0.99


def mult_wave(epoch):
    return 1.0 + 0.05 * math.sin(epoch / 5)


def scale_decay(x):
    return 1 / (1 + 0.01 * x)


class Stateful:
    """A callable object whose value depends on its own attributes (which a
    state_dict round trip must restore)."""

    def __init__(self, rate):
        self.rate = rate
        self.calls = 0

    def __call__(self, epoch):
        self.calls += 1
        return self.rate ** epoch * (1 + 1e-3 * (self.calls % 7))


class StatefulMult(Stateful):
    def __call__(self, epoch):
        self.calls += 1
        return self.rate * (1 + 1e-3 * (self.calls % 5))


class ScaleObj:
    def __init__(self, base):
        self.base = base
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return self.base ** x


FUNCTIONS = {"exp097": exp097, "warmup_cos": warmup_cos, "mult099": mult099,
             "mult_wave": mult_wave, "scale_decay": scale_decay}
OBJECTS = {"stateful": lambda: Stateful(0.98), "stateful_mult": lambda: StatefulMult(0.995),
           "scale_obj": lambda: ScaleObj(0.9)}


def resolve(value):
    """``"fn:NAME"`` -> the function, ``"obj:NAME"`` -> a new callable object."""
    if isinstance(value, str) and value.startswith("fn:"):
        return FUNCTIONS[value[3:]]
    if isinstance(value, str) and value.startswith("obj:"):
        return OBJECTS[value[4:]]()
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


# -- metric curves for ReduceLROnPlateau -------------------------------------------------
def metric(curve: str, i: int) -> float:
    """Deterministic validation curves: stair steps with small wiggles, so that
    reductions, thresholds and cooldowns all come into play."""
    wiggle = 1e-5 * ((i * 37) % 11)
    if curve == "stairs_min":      # improves every 25 epochs, flat in between
        return 1.0 / (1 + i // 25) + wiggle
    if curve == "slow_min":        # keeps improving by ~0.3% a step, then flat
        return max(1.0 - 0.003 * i, 0.7) + wiggle
    if curve == "stairs_max":
        return 1.0 - 1.0 / (1 + i // 20) + wiggle
    if curve == "noisy_max":
        return 0.5 + 0.1 * math.sin(i / 7) + 0.002 * i
    raise KeyError(curve)


def epoch_of(kind: str, i: int):
    """The epoch passed to the deprecated ``step(epoch)`` at step ``i``."""
    if kind == "int":
        return i
    if kind == "jump":             # non-monotonic: the closed forms at any epoch
        return (i * 7) % 53
    if kind == "frac":             # fractional epochs (CosineAnnealingWarmRestarts)
        return i * 0.3
    raise KeyError(kind)


@dataclass(frozen=True)
class SchedCase:
    name: str                      # class name in torch.optim.lr_scheduler and nbopt.lr_scheduler
    kwargs: dict = field(default_factory=dict)
    optimizer: str = "SGD"         # SGD (momentum 0.9), SGD0 (momentum 0), Adam, Adagrad
    lrs: tuple = (0.1, 0.02)       # one param group per entry
    steps: int = STEPS
    children: tuple = ()           # ((name, kwargs), ...) for SequentialLR / ChainedScheduler
    metrics: str | None = None     # curve for ReduceLROnPlateau
    epochs: str | None = None      # pass step(epoch=epoch_of(kind, i)) (deprecated path)
    tensor_lr: bool = False        # lr as a float32 tensor / 0-d float32 array
    sched_first: bool = False      # first scheduler.step() before optimizer.step()
    override_step: bool = False    # replace optimizer.step after the scheduler is made
    probe_get_lr: bool = False     # call get_lr() outside step once (warns)
    resume_at: int | None = None   # rebuild optimizer + scheduler(last_epoch=k-1) at step k

    @property
    def id(self) -> str:
        def fmt(d):
            return ",".join(f"{k}={v}" for k, v in d.items())
        parts = [f"{self.name}({fmt(self.kwargs)})"]
        if self.children:
            parts.append("[" + ";".join(f"{n}({fmt(k)})" for n, k in self.children) + "]")
        parts.append(self.optimizer)
        if self.lrs != (0.1, 0.02):
            parts.append("lrs=" + ",".join(map(str, self.lrs)))
        for flag in ("metrics", "epochs", "resume_at"):
            if getattr(self, flag) is not None:
                parts.append(f"{flag}={getattr(self, flag)}")
        for flag in ("tensor_lr", "sched_first", "override_step", "probe_get_lr"):
            if getattr(self, flag):
                parts.append(flag)
        return "-".join(parts).replace(" ", "")


C = SchedCase
CASES = [
    # LambdaLR
    C("LambdaLR", dict(lr_lambda="fn:exp097")),
    C("LambdaLR", dict(lr_lambda=["fn:exp097", "fn:warmup_cos"]), probe_get_lr=True),
    C("LambdaLR", dict(lr_lambda="obj:stateful")),
    C("LambdaLR", dict(lr_lambda=["fn:warmup_cos", "obj:stateful"]), optimizer="Adam"),
    C("LambdaLR", dict(lr_lambda="fn:warmup_cos"), tensor_lr=True),
    C("LambdaLR", dict(lr_lambda="fn:exp097"), resume_at=60),
    # MultiplicativeLR
    C("MultiplicativeLR", dict(lr_lambda="fn:mult099")),
    C("MultiplicativeLR", dict(lr_lambda=["fn:mult_wave", "obj:stateful_mult"])),
    C("MultiplicativeLR", dict(lr_lambda="fn:mult_wave"), epochs="int"),
    C("MultiplicativeLR", dict(lr_lambda="fn:mult099"), resume_at=40, tensor_lr=True),
    # StepLR
    C("StepLR", dict(step_size=30, gamma=0.5)),
    C("StepLR", dict(step_size=7, gamma=0.9), tensor_lr=True),
    C("StepLR", dict(step_size=9, gamma=0.7), epochs="jump"),
    C("StepLR", dict(step_size=20, gamma=0.5), resume_at=45),
    C("StepLR", dict(step_size=10), sched_first=True),
    C("StepLR", dict(step_size=10), override_step=True),
    # MultiStepLR
    C("MultiStepLR", dict(milestones=[30, 80, 80, 150], gamma=0.5)),
    C("MultiStepLR", dict(milestones=[5, 20, 20, 41], gamma=0.6), epochs="jump"),
    C("MultiStepLR", dict(milestones=[50, 100]), resume_at=70, probe_get_lr=True),
    # ConstantLR
    C("ConstantLR", dict(factor=0.5, total_iters=40)),
    C("ConstantLR", dict()),
    C("ConstantLR", dict(factor=0.25, total_iters=30), epochs="jump"),
    C("ConstantLR", dict(factor=0.5, total_iters=40), resume_at=10),
    # LinearLR
    C("LinearLR", dict(start_factor=0.1, end_factor=1.0, total_iters=50)),
    C("LinearLR", dict(start_factor=1.0, end_factor=0.05, total_iters=150)),
    C("LinearLR", dict(start_factor=0.2, end_factor=0.9, total_iters=40), epochs="jump"),
    C("LinearLR", dict(start_factor=0.1, total_iters=100), resume_at=30),
    C("LinearLR", dict(start_factor=0.3, total_iters=60), tensor_lr=True),
    # ExponentialLR
    C("ExponentialLR", dict(gamma=0.98)),
    C("ExponentialLR", dict(gamma=0.95), epochs="jump"),
    C("ExponentialLR", dict(gamma=0.99), resume_at=50, sched_first=True),
    # PolynomialLR
    C("PolynomialLR", dict(total_iters=150, power=2.0)),
    C("PolynomialLR", dict()),
    C("PolynomialLR", dict(total_iters=45, power=0.5), epochs="jump"),
    C("PolynomialLR", dict(total_iters=120, power=1.5), resume_at=25),
    # CosineAnnealingLR
    C("CosineAnnealingLR", dict(T_max=50, eta_min=0.001)),
    C("CosineAnnealingLR", dict(T_max=200)),
    C("CosineAnnealingLR", dict(T_max=30, eta_min=0.005), epochs="jump"),
    C("CosineAnnealingLR", dict(T_max=70, eta_min=0.001), tensor_lr=True),
    C("CosineAnnealingLR", dict(T_max=100, eta_min=0.002), resume_at=33),
    # CosineAnnealingWarmRestarts
    C("CosineAnnealingWarmRestarts", dict(T_0=10)),
    C("CosineAnnealingWarmRestarts", dict(T_0=5, T_mult=2, eta_min=0.001)),
    C("CosineAnnealingWarmRestarts", dict(T_0=3, T_mult=2, eta_min=0.001), epochs="frac"),
    C("CosineAnnealingWarmRestarts", dict(T_0=7, eta_min=0.01), epochs="frac"),
    C("CosineAnnealingWarmRestarts", dict(T_0=6, T_mult=3), epochs="jump"),
    C("CosineAnnealingWarmRestarts", dict(T_0=10, T_mult=2), resume_at=37),
    # CyclicLR
    C("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=20)),
    C("CyclicLR", dict(base_lr=0.001, max_lr=0.05, step_size_up=15, step_size_down=25,
                       mode="triangular2")),
    C("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=10, mode="exp_range",
                       gamma=0.99)),
    C("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=12, scale_fn="fn:scale_decay",
                       scale_mode="iterations")),
    C("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=8, scale_fn="obj:scale_obj",
                       scale_mode="cycle"), probe_get_lr=True),
    C("CyclicLR", dict(base_lr=0.0001, max_lr=0.003, step_size_up=25), optimizer="Adam"),
    C("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=30), optimizer="SGD0"),
    C("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=30, cycle_momentum=False),
      optimizer="Adagrad"),
    C("CyclicLR", dict(base_lr=[0.01, 0.002], max_lr=[0.1, 0.05], step_size_up=17,
                       base_momentum=[0.8, 0.7], max_momentum=[0.9, 0.95])),
    C("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=20, mode="triangular2"),
      tensor_lr=True),
    C("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=20), resume_at=30),
    # OneCycleLR
    C("OneCycleLR", dict(max_lr=0.1, total_steps=200)),
    C("OneCycleLR", dict(max_lr=0.1, total_steps=250, anneal_strategy="linear",
                         three_phase=True)),
    C("OneCycleLR", dict(max_lr=0.01, total_steps=210, three_phase=True, pct_start=0.4),
      optimizer="Adam"),
    C("OneCycleLR", dict(max_lr=0.1, epochs=10, steps_per_epoch=20, pct_start=0.25,
                         div_factor=10.0, final_div_factor=100.0)),
    C("OneCycleLR", dict(max_lr=[0.1, 0.05], total_steps=200, base_momentum=[0.8, 0.85],
                         max_momentum=[0.9, 0.99])),
    C("OneCycleLR", dict(max_lr=0.1, total_steps=200, cycle_momentum=False),
      optimizer="Adagrad"),
    C("OneCycleLR", dict(max_lr=0.1, total_steps=200), tensor_lr=True, optimizer="SGD0"),
    C("OneCycleLR", dict(max_lr=0.1, total_steps=220), resume_at=80),
    # ReduceLROnPlateau
    C("ReduceLROnPlateau", dict(), metrics="stairs_min"),
    C("ReduceLROnPlateau", dict(patience=3, factor=0.5, threshold=0.01,
                                threshold_mode="abs"), metrics="slow_min"),
    C("ReduceLROnPlateau", dict(patience=2, factor=0.5, threshold=0.003), metrics="slow_min"),
    C("ReduceLROnPlateau", dict(mode="max", patience=4, factor=0.7), metrics="stairs_max"),
    C("ReduceLROnPlateau", dict(mode="max", threshold_mode="abs", threshold=0.01,
                                cooldown=4, patience=1, factor=0.8), metrics="noisy_max"),
    C("ReduceLROnPlateau", dict(patience=2, cooldown=5, factor=0.5, min_lr=[0.01, 0.001]),
      metrics="stairs_min"),
    C("ReduceLROnPlateau", dict(patience=0, factor=0.9, min_lr=0.005, eps=0.004),
      metrics="stairs_min"),
    C("ReduceLROnPlateau", dict(patience=3, factor=0.5), metrics="stairs_min", tensor_lr=True),
    C("ReduceLROnPlateau", dict(patience=3, factor=0.5), metrics="stairs_max", epochs="int"),
    # ChainedScheduler
    C("ChainedScheduler", children=(("ConstantLR", dict(factor=0.1, total_iters=20)),
                                    ("ExponentialLR", dict(gamma=0.98)))),
    C("ChainedScheduler", children=(("LinearLR", dict(start_factor=0.2, total_iters=30)),
                                    ("StepLR", dict(step_size=40, gamma=0.5)),
                                    ("MultiplicativeLR", dict(lr_lambda="fn:mult_wave")))),
    C("ChainedScheduler", children=(("CosineAnnealingLR", dict(T_max=60, eta_min=0.001)),
                                    ("MultiStepLR", dict(milestones=[50, 150], gamma=0.3)))),
    C("ChainedScheduler", children=(("ConstantLR", dict(factor=0.5, total_iters=10)),
                                    ("PolynomialLR", dict(total_iters=180, power=1.2))),
      sched_first=True, tensor_lr=True),
    # SequentialLR
    C("SequentialLR", dict(milestones=[3]),
      children=(("ConstantLR", dict(factor=0.1, total_iters=3)),
                ("ExponentialLR", dict(gamma=0.9)))),
    C("SequentialLR", dict(milestones=[20, 120]),
      children=(("LinearLR", dict(start_factor=0.05, total_iters=20)),
                ("CosineAnnealingLR", dict(T_max=100, eta_min=0.001)),
                ("StepLR", dict(step_size=15, gamma=0.5)))),
    C("SequentialLR", dict(milestones=[10, 50, 90, 140]),
      children=(("ConstantLR", dict(factor=0.2, total_iters=10)),
                ("LinearLR", dict(start_factor=0.5, total_iters=40)),
                ("ExponentialLR", dict(gamma=0.97)),
                ("CosineAnnealingWarmRestarts", dict(T_0=15, T_mult=2)),
                ("PolynomialLR", dict(total_iters=40, power=2.0)))),
    C("SequentialLR", dict(milestones=[50]),
      children=(("LambdaLR", dict(lr_lambda="obj:stateful")),
                ("OneCycleLR", dict(max_lr=0.2, total_steps=160)))),
    C("SequentialLR", dict(milestones=[40, 80]),
      children=(("MultiStepLR", dict(milestones=[10, 30])),
                ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=10)),
                ("ExponentialLR", dict(gamma=0.99))), optimizer="Adam"),
]

CHILD_NAMES = ("SequentialLR", "ChainedScheduler")


# -- bad input ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorCase:
    name: str
    kwargs: dict = field(default_factory=dict)
    optimizer: str = "SGD"
    children: tuple = ()
    action: str | None = None      # what to do after construction to trigger the error

    @property
    def id(self) -> str:
        kw = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        ch = ";".join(n for n, _ in self.children)
        return f"{self.name}({kw})[{ch}]-{self.optimizer}-{self.action}".replace(" ", "")


E = ErrorCase
ERROR_CASES = [
    E("StepLR", dict(step_size=3), optimizer="none"),
    E("LambdaLR", dict(lr_lambda=["fn:exp097"])),
    E("MultiplicativeLR", dict(lr_lambda=3)),
    E("MultiplicativeLR", dict(lr_lambda=["fn:exp097"])),
    E("StepLR", dict(step_size=3, last_epoch=3)),
    E("ConstantLR", dict(factor=1.5)),
    E("ConstantLR", dict(factor=-0.1)),
    E("LinearLR", dict(start_factor=0)),
    E("LinearLR", dict(start_factor=1.5)),
    E("LinearLR", dict(end_factor=1.5)),
    E("LinearLR", dict(end_factor=-1)),
    E("CosineAnnealingWarmRestarts", dict(T_0=0)),
    E("CosineAnnealingWarmRestarts", dict(T_0=2.5)),
    E("CosineAnnealingWarmRestarts", dict(T_0=2, T_mult=0)),
    E("CosineAnnealingWarmRestarts", dict(T_0=2, T_mult=1.5)),
    E("CosineAnnealingWarmRestarts", dict(T_0=2, eta_min="x")),
    E("CosineAnnealingWarmRestarts", dict(T_0=2), action="step_epoch:-1"),
    E("CyclicLR", dict(base_lr=0.01, max_lr=0.1, mode="bad")),
    E("CyclicLR", dict(base_lr=[0.01], max_lr=0.1)),
    E("CyclicLR", dict(base_lr=0.01, max_lr=[0.1, 0.2, 0.3])),
    E("CyclicLR", dict(base_lr=0.01, max_lr=0.1), optimizer="Adagrad"),
    E("CyclicLR", dict(base_lr=0.01, max_lr=0.1, base_momentum=[0.8])),
    E("CyclicLR", dict(base_lr=0.01, max_lr=0.1), optimizer="none"),
    E("OneCycleLR", dict(max_lr=0.1, total_steps=0)),
    E("OneCycleLR", dict(max_lr=0.1, total_steps=2.5)),
    E("OneCycleLR", dict(max_lr=0.1, epochs=0, steps_per_epoch=3)),
    E("OneCycleLR", dict(max_lr=0.1, epochs=2, steps_per_epoch=-1)),
    E("OneCycleLR", dict(max_lr=0.1)),
    E("OneCycleLR", dict(max_lr=0.1, epochs=3)),
    E("OneCycleLR", dict(max_lr=0.1, total_steps=10, pct_start=1)),
    E("OneCycleLR", dict(max_lr=0.1, total_steps=10, pct_start=1.5)),
    E("OneCycleLR", dict(max_lr=0.1, total_steps=10, anneal_strategy="quad")),
    E("OneCycleLR", dict(max_lr=[0.1], total_steps=10)),
    E("OneCycleLR", dict(max_lr=0.1, total_steps=10), optimizer="Adagrad"),
    E("OneCycleLR", dict(max_lr=0.1, total_steps=10, max_momentum=[0.9, 0.9, 0.9])),
    E("OneCycleLR", dict(max_lr=0.1, total_steps=5), action="steps:6"),
    E("ReduceLROnPlateau", dict(factor=1.0)),
    E("ReduceLROnPlateau", dict(mode="avg")),
    E("ReduceLROnPlateau", dict(threshold_mode="x")),
    E("ReduceLROnPlateau", dict(min_lr=[0.1])),
    E("ReduceLROnPlateau", dict(min_lr=[0.0, 0.0], patience=0), action="plateau_new_group"),
    E("ReduceLROnPlateau", dict(), optimizer="none"),
    E("SequentialLR", dict(milestones=[])),
    E("SequentialLR", dict(milestones=[]), children=(("StepLR", dict(step_size=2)),
                                                     ("StepLR", dict(step_size=3)))),
    E("SequentialLR", dict(milestones=[2]), children=(("StepLR", dict(step_size=2)),
                                                      ("ReduceLROnPlateau", dict()))),
    E("SequentialLR", dict(milestones=[2]), children=(("StepLR", dict(step_size=2)),
                                                      ("other:StepLR", dict(step_size=3)))),
    E("SequentialLR", dict(milestones=[2]), children=(("StepLR", dict(step_size=2)),
                                                      ("no_optimizer", dict()))),
    E("ChainedScheduler", dict()),
    E("ChainedScheduler", dict(), children=(("ReduceLROnPlateau", dict()),)),
    E("ChainedScheduler", dict(), children=(("StepLR", dict(step_size=2)),
                                            ("other:StepLR", dict(step_size=3)))),
    E("ChainedScheduler", dict(), children=(("StepLR", dict(step_size=2)),
                                            ("no_optimizer", dict()))),
]


# -- the two libraries --------------------------------------------------------------------
class Lib:
    """What the driver needs from torch or nbopt."""

    def __init__(self, name: str):
        self.name = name
        if name == "torch":
            import torch

            self.torch = torch
            self.optim = torch.optim
            self.sched = torch.optim.lr_scheduler
        else:
            import nbopt
            import nbopt.lr_scheduler

            self.optim = nbopt
            self.sched = nbopt.lr_scheduler

    def param(self):
        if self.name == "torch":
            return self.torch.nn.Parameter(self.torch.zeros(2, dtype=self.torch.float64))
        return self.optim.Parameter(np.zeros(2))

    def lr(self, value: float, tensor: bool):
        if not tensor:
            return value
        # torch.tensor(lr) is float32, and so is the array standing in for it
        return self.torch.tensor(value) if self.name == "torch" else np.array(value, np.float32)

    def optimizer(self, kind: str, lrs, tensor_lr: bool, params=None):
        params = params or [self.param() for _ in lrs]
        groups = [{"params": [p], "lr": self.lr(lr, tensor_lr)} for p, lr in zip(params, lrs)]
        if kind == "SGD":
            return self.optim.SGD(groups, lr=lrs[0], momentum=0.9)
        if kind == "SGD0":
            return self.optim.SGD(groups, lr=lrs[0])
        if kind == "Adam":
            return self.optim.Adam(groups, lr=lrs[0])
        if kind == "Adagrad":
            return self.optim.Adagrad(groups, lr=lrs[0])
        raise KeyError(kind)


def _make(lib: Lib, name: str, opt, kwargs: dict, children=(), last_epoch=None):
    kwargs = {k: resolve(v) for k, v in kwargs.items()}
    if last_epoch is not None:
        kwargs["last_epoch"] = last_epoch
    cls = getattr(lib.sched, name)
    if name == "SequentialLR":
        return cls(opt, [_make(lib, n, opt, kw) for n, kw in children], **kwargs)
    if name == "ChainedScheduler":
        return cls([_make(lib, n, opt, kw) for n, kw in children], **kwargs)
    return cls(opt, **kwargs)


def build(case: SchedCase, lib: Lib, last_epoch=None):
    opt = lib.optimizer(case.optimizer, case.lrs, case.tensor_lr)
    return opt, _make(lib, case.name, opt, case.kwargs, case.children, last_epoch)


def _momentum(group) -> float:
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return math.nan


def _row(opt, sched):
    groups = opt.param_groups
    last = sched.get_last_lr()
    return ([float(g["lr"]) for g in groups], [_momentum(g) for g in groups],
            [float(x) for x in last], getattr(sched, "last_epoch", -999))


def normalize(obj):
    """A scheduler state_dict as plain, comparable data (tensors/arrays as floats
    or lists, dict keys as strings, tuples as lists, Counters as dicts)."""
    if hasattr(obj, "detach"):
        obj = obj.detach().numpy()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (dict, Counter)):
        return {str(k): normalize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [normalize(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    return repr(type(obj).__name__)


def _sched_step(case: SchedCase, sched, i: int) -> None:
    if case.name == "ReduceLROnPlateau":
        m = metric(case.metrics, i - 1)
        if case.epochs:
            sched.step(m, epoch=epoch_of(case.epochs, i))
        else:
            sched.step(m)
    elif case.epochs:
        sched.step(epoch_of(case.epochs, i))
    else:
        sched.step()


def added_keys(opt, before):
    return [[k for k in g if k not in before[gi]] for gi, g in enumerate(opt.param_groups)]


def run_case(case: SchedCase, lib_name: str, roundtrip=None) -> dict:
    """Run one case; returns the recorded trajectory.

    ``roundtrip(opt_state, sched_state) -> (opt_state, sched_state)``, if
    given, is applied at ``case.steps // 2``: a fresh optimizer and a fresh
    scheduler then load the returned states and the run continues with them.
    """
    lib = Lib(lib_name)
    checkpoint = case.steps // 2
    lr, mom, last, epochs = [], [], [], []
    warns = []
    mid_state = None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        opt = lib.optimizer(case.optimizer, case.lrs, case.tensor_lr)
        before = [set(g) for g in opt.param_groups]
        sched = _make(lib, case.name, opt, case.kwargs, case.children)
        keys = added_keys(opt, before)
        if case.override_step:
            inner = opt.step
            opt.step = lambda *a, **k: inner(*a, **k)

        def record(i):
            row = _row(opt, sched)
            for dst, val in zip((lr, mom, last, epochs), row):
                dst.append(val)
            while len(warns) < len(rec):
                w = rec[len(warns)]
                warns.append([i, w.category.__name__, str(w.message)])

        record(0)
        for i in range(1, case.steps + 1):
            if case.probe_get_lr and i == 5:
                sched.get_lr()
            if case.resume_at == i:
                # a new process: a fresh optimizer loads the old one's state, and a
                # new scheduler picks up at the last epoch it had seen
                state = copy.deepcopy(opt.state_dict())
                opt = lib.optimizer(case.optimizer, case.lrs, case.tensor_lr)
                opt.load_state_dict(state)
                sched = _make(lib, case.name, opt, case.kwargs, case.children,
                              last_epoch=sched.last_epoch)
                record(i)
                continue
            if case.sched_first and i == 1:
                _sched_step(case, sched, i)
                opt.step()
            else:
                opt.step()
                _sched_step(case, sched, i)
            if i == checkpoint:
                mid_state = normalize(sched.state_dict())
                if roundtrip is not None:
                    opt_state, sched_state = roundtrip(opt.state_dict(), sched.state_dict())
                    opt, sched = build(case, lib)
                    opt.load_state_dict(opt_state)
                    sched.load_state_dict(sched_state)
            record(i)
    return {"lr": np.array(lr), "momentum": np.array(mom), "last_lr": np.array(last),
            "last_epoch": np.array(epochs, np.int64), "warnings": warns,
            "added_keys": keys, "mid_state": mid_state,
            "final_state": normalize(sched.state_dict())}


def run_error(case: ErrorCase, lib_name: str) -> dict:
    """Run one bad-input case; returns the exception's type and message, and
    whether the optimizer's groups were left exactly as before."""
    lib = Lib(lib_name)
    opt = lib.optimizer(case.optimizer if case.optimizer != "none" else "SGD", (0.1, 0.02),
                        False)
    other = lib.optimizer("SGD", (0.1, 0.02), False)

    def child(name, kw):
        if name == "no_optimizer":
            return object()
        if name.startswith("other:"):
            return _make(lib, name[6:], other, kw)
        return _make(lib, name, opt, kw)

    target = object() if case.optimizer == "none" else opt
    kwargs = {k: resolve(v) for k, v in case.kwargs.items()}
    cls = getattr(lib.sched, case.name)
    children = [child(n, kw) for n, kw in case.children]
    before = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    try:
        if case.name == "SequentialLR":
            sched = cls(target, children, **kwargs)
        elif case.name == "ChainedScheduler":
            sched = cls(children, **kwargs)
        else:
            sched = cls(target, **kwargs)
        if case.action is None:
            raise AssertionError(f"{case.id}: no error raised")
        kind, _, arg = case.action.partition(":")
        if kind == "steps":
            for _ in range(int(arg) - 1):
                opt.step()
                sched.step()
            opt.step()
        elif kind == "plateau_new_group":
            opt.add_param_group({"params": [lib.param()]})
            sched.step(1.0)
        before = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        if kind == "step_epoch":
            sched.step(int(arg))
        elif kind == "steps":
            sched.step()
        elif kind == "plateau_new_group":
            sched.step(2.0)
        raise AssertionError(f"{case.id}: no error raised by {case.action}")
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exception is the result
        message = str(exc.args[0]) if exc.args else ""
        message = message.replace(repr(other), "<OTHER OPTIMIZER>")
        after = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        return {"type": type(exc).__name__, "message": message,
                "unchanged": normalize(before) == normalize(after[:len(before)])}


# torch's scheduler warnings send the user to PyTorch's issue tracker, its
# docs, or "PyTorch 1.1.0"; nbopt's keep the category and the meaning without
# that (issue 16).  Recorded torch warnings, reworded as nbopt words them:
_TORCH_POINTERS = [
    (" Please open an issue if you are unable to replicate your use case: "
     "https://github.com/pytorch/pytorch/issues/new/choose.", ""),
    (" See more details at https://pytorch.org/docs/stable/optim.html"
     "#how-to-adjust-learning-rate", ""),
    ("In PyTorch 1.1.0 and later, you should call them", "You should call them"),
    ("will result in PyTorch skipping the first value", "will result in skipping the first value"),
]


def nbopt_wording(warnings_list: list) -> list:
    """``[[index, category, message], ...]`` recorded from torch, with the
    messages as nbopt words them."""
    out = []
    for index, category, message in warnings_list:
        for theirs, ours in _TORCH_POINTERS:
            message = message.replace(theirs, ours)
        out.append([index, category, message])
    return out
