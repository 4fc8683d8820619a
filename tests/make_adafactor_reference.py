"""Adafactor parity cases, their runners, and the committed torch 2.13 reference.

    python tests/make_adafactor_reference.py

writes ``tests/data/adafactor_reference.npz``: for every case of :data:`CASES`
and dtype, the inputs (initial parameters and every step's gradients), torch's
parameters and state after :data:`CHECKPOINT_STEP` and :data:`STEPS` steps,
and the final snapshot of the same run continued by a new optimizer that
loaded the state_dict at the checkpoint.  ``tests/test_adafactor.py``
replays them through nbopt without torch (and against live torch when it is
importable), comparing bit for bit.

The table holds every option set of torch's ``optim_inputs_func_adafactor``
(default, nonzero weight_decay, maximize, non-default beta2_decay,
non-default clipping threshold d), and the paths torch rounds differently:
``foreach=True``, a Tensor lr, a given epsilon1, per-group options, Fortran-
ordered parameters.  Adafactor refuses complex parameters, so the generic
table (``cases.py``, which steps complex dtypes too) cannot take it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from reference_io import run_trajectory, torch_to_numpy, two_groups, write_trajectories

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "adafactor_reference.npz")
STEPS = 30
CHECKPOINT_STEP = 15
DTYPES = ("float32", "float64")
# group 0: a matrix, a vector, a batch of matrices; group 1: a 0-d parameter,
# a column, a row and a matrix wider than the vector lanes
SHAPES = [[(3, 4), (5,), (2, 3, 4)], [(), (6, 1), (1, 7), (9, 19)]]


@dataclass(frozen=True)
class Case:
    options: dict
    group1: dict = field(default_factory=dict)   # overrides of the second group
    tensor_lr: bool = False                      # lr as a 1-element float32 array / tensor
    order: str = "C"                             # memory order of the parameters

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        g1 = ",".join(f"{k}={v}" for k, v in sorted(self.group1.items()))
        extra = "-tensor_lr" if self.tensor_lr else ""
        extra += "-F" if self.order == "F" else ""
        return f"Adafactor({opts})[{g1}]{extra}".replace(" ", "")


CASES = [
    # torch's optim_inputs_func_adafactor
    Case(dict()),
    Case(dict(weight_decay=0.1, lr=0.01)),
    Case(dict(weight_decay=0.1, maximize=True)),
    Case(dict(beta2_decay=-1.0)),
    Case(dict(d=1.5)),
    # per-group options, and the paths that round otherwise
    Case(dict(lr=0.05, weight_decay=0.1), dict(lr=0.5, d=1.5, maximize=True)),
    Case(dict(weight_decay=0.1, foreach=True), dict(maximize=True)),
    Case(dict(eps=(1e-30, 1e-2)), dict(eps=(1e-3, 0.0), beta2_decay=-0.5)),
    Case(dict(lr=0.01, weight_decay=0.2), dict(), tensor_lr=True),
    Case(dict(lr=0.3, weight_decay=0.1), dict(maximize=True), tensor_lr=True),
    Case(dict(weight_decay=0.1), dict(d=2.0), order="F"),
]


def grad_is_none(group: int, index: int, step: int) -> bool:
    """The second parameter of group 0 skips some steps; group 1 starts one
    step late (its step counts lag)."""
    if group == 0 and index == 1:
        return step % 7 == 3
    if group == 1:
        return step == 0
    return False


def make_inputs(case_index: int, dtype: str) -> dict:
    rng = np.random.default_rng(4321 + case_index)
    out = {}
    for gi, shapes in enumerate(SHAPES):
        for pi, shape in enumerate(shapes):
            out[f"p{gi}{pi}"] = rng.standard_normal(shape).astype(dtype)
            out[f"g{gi}{pi}"] = (rng.standard_normal((STEPS, *shape))
                                 * rng.uniform(0.1, 3.0)).astype(dtype)
    return out


def _layout(a: np.ndarray, order: str) -> np.ndarray:
    return np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)


def run_nbopt(case: Case, inputs, reload: bool = False, start=None) -> dict:
    """``{step: snapshot}`` at CHECKPOINT_STEP and STEPS.  ``reload``: after the
    checkpoint, continue with a new optimizer that loaded the first one's
    state_dict.  ``start``: ``(params, state_dict)`` at the checkpoint (e.g.
    torch's, converted to NumPy) to continue from instead of stepping there."""
    import nbopt

    params = [[nbopt.Parameter(_layout(inputs[f"p{gi}{pi}"], case.order).copy(order="K"))
               for pi in range(len(shapes))] for gi, shapes in enumerate(SHAPES)]

    def make():
        groups, opts = two_groups(case, params, lambda lr: np.array([lr], np.float32))
        return nbopt.Adafactor(groups, **opts)

    def set_grad(p, g):
        p.grad = None if g is None else _layout(g, case.order).copy(order="K")

    opt = make()
    first = 0
    if start is not None:
        values, state_dict = start
        for p, v in zip((p for group in params for p in group), values):
            p[...] = v
        opt.load_state_dict(state_dict)
        first = CHECKPOINT_STEP
    return run_trajectory(opt, make, params, inputs, grad_is_none, set_grad, lambda x: x,
                          steps=STEPS, checkpoint=CHECKPOINT_STEP, reload=reload,
                          first=first)[0]


def run_torch(case: Case, inputs, reload: bool = False, stop: int | None = None):
    """As :func:`run_nbopt`, through torch.optim.Adafactor.  ``stop``: return
    ``(snapshots, params, optimizer)`` after that many steps instead."""
    import torch

    params = [[torch.nn.Parameter(torch.from_numpy(
        _layout(inputs[f"p{gi}{pi}"], case.order).copy(order="K")))
        for pi in range(len(shapes))] for gi, shapes in enumerate(SHAPES)]

    def make():
        groups, opts = two_groups(case, params, lambda lr: torch.tensor([lr]))
        return torch.optim.Adafactor(groups, **opts)

    def set_grad(p, g):
        p.grad = None if g is None else torch.from_numpy(_layout(g, case.order).copy(order="K"))

    out, opt = run_trajectory(make(), make, params, inputs, grad_is_none, set_grad,
                              torch_to_numpy, steps=STEPS, checkpoint=CHECKPOINT_STEP,
                              reload=reload, stop=stop)
    if stop is not None:
        return out, params, opt
    return out


def torch_state_dict_as_numpy(state_dict) -> dict:
    """A torch Adafactor state_dict with every tensor as a NumPy array (a 1-D
    Tensor lr as a 1-element array), as a user converts one."""
    import torch

    def conv(x):
        if isinstance(x, torch.Tensor):
            return x.detach().numpy().copy()
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(conv(v) for v in x)
        return x

    return conv(state_dict)


def main() -> None:
    write_trajectories(OUT, CASES, lambda case: DTYPES,
                       lambda ci, case, dtype: make_inputs(ci, dtype), run_torch, STEPS)


if __name__ == "__main__":
    main()
