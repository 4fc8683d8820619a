"""The one table of (algorithm, options) that drives the generic parity tests.

Each case names the torch/nbopt class, the constructor options, and the
options the second param group overrides.  ``tests/make_reference.py`` runs
every case through torch 2.13 and commits the trajectories under
``tests/data``; ``tests/test_parity.py`` replays them through nbopt (and
through live torch when it is importable).  Adding an algorithm = adding its
rows here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

STEPS = 50
CHECKPOINT_STEP = 25          # state is also compared here, mid-run
# Complex parameters are stepped as their real view, as torch does.
DTYPES = ("float32", "float64", "complex64", "complex128")
# float64 within 1e-10 relative, float32 within 1e-5 (issue 2)
TOLERANCES = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6),
              "complex128": dict(rtol=1e-10, atol=1e-12), "complex64": dict(rtol=1e-5, atol=1e-6)}


@dataclass(frozen=True)
class Case:
    cls: str                   # class name in both torch.optim and nbopt
    options: dict
    group1: dict = field(default_factory=dict)   # overrides of the second group
    tensor_lr: bool = False    # pass lr as a 1-element array / tensor

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        g1 = ",".join(f"{k}={v}" for k, v in sorted(self.group1.items()))
        extra = "-tensor_lr" if self.tensor_lr else ""
        return f"{self.cls}({opts})[{g1}]{extra}".replace(" ", "")


CASES = [
    # SGD
    Case("SGD", dict(lr=0.05), dict(lr=0.02)),
    Case("SGD", dict(lr=0.05, momentum=0.9), dict(lr=0.02, momentum=0.0)),
    Case("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1), dict(dampening=0.5)),
    Case("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.01)),
    Case("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.01), dict(weight_decay=0.1)),
    Case("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1, maximize=True), dict(lr=0.01)),
    Case("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
         dict(momentum=0.5)),
    Case("SGD", dict(lr=0.05, momentum=0.9), dict(), tensor_lr=True),
    # Adam
    Case("Adam", dict(lr=0.01), dict(lr=0.005)),
    Case("Adam", dict(lr=0.01, amsgrad=True), dict(lr=0.02)),
    Case("Adam", dict(lr=0.01, weight_decay=0.1), dict(weight_decay=0.0)),
    Case("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
         dict(weight_decay=0.3)),
    Case("Adam", dict(lr=0.01, maximize=True), dict(amsgrad=True)),
    Case("Adam", dict(lr=0.01, amsgrad=True, maximize=True, weight_decay=0.05), dict(eps=1e-3)),
    Case("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(betas=(0.95, 0.9))),
    Case("Adam", dict(lr=0.01, betas=(0.3, 0.9)), dict(betas=(0.5, 0.5))),
    Case("Adam", dict(lr=0.01, amsgrad=True, decoupled_weight_decay=True, weight_decay=0.2),
         dict(lr=0.03)),
    Case("Adam", dict(lr=0.01), dict(), tensor_lr=True),
    # AdamW
    Case("AdamW", dict(lr=0.01), dict(lr=0.02)),
    Case("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.05), dict(weight_decay=0.5)),
    Case("AdamW", dict(lr=0.01, maximize=True), dict(amsgrad=True)),
]

# Shapes of the parameters: group 0 holds two, group 1 one.
SHAPES = [[(3, 4), (5,)], [(2, 3)]]


def grad_is_none(group: int, index: int, step: int) -> bool:
    """Which gradients are None: the second parameter of group 0 skips some
    steps, and group 1 starts one step late (its step count lags)."""
    if group == 0 and index == 1:
        return step % 7 == 3
    if group == 1:
        return step == 0
    return False
