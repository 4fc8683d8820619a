"""Run one parity case through nbopt or torch on the same inputs.

The inputs (initial parameters and every step's gradients) are plain NumPy
arrays, made by :func:`make_inputs` and committed with the reference data, so
that nbopt and torch see bit-identical numbers.
"""
from __future__ import annotations

import numpy as np

from cases import CHECKPOINT_STEP, SHAPES, STEPS, Case, grad_is_none
from reference_io import reloaded, run_trajectory, torch_to_numpy, two_groups  # noqa: F401


def make_inputs(case_index: int, dtype: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234 + case_index)
    complex_ = np.dtype(dtype).kind == "c"

    def draw(shape):
        x = rng.standard_normal(shape)
        if complex_:
            x = x + 1j * rng.standard_normal(shape)
        return x.astype(dtype)

    out = {}
    for gi, shapes in enumerate(SHAPES):
        for pi, shape in enumerate(shapes):
            out[f"p{gi}{pi}"] = draw(shape)
            out[f"g{gi}{pi}"] = draw((STEPS, *shape))
    return out


def run_nbopt(case: Case, inputs, arena: bool = False, reload: bool = False):
    """Returns ``{step: snapshot}`` at CHECKPOINT_STEP and STEPS.  ``reload``:
    after the CHECKPOINT_STEP snapshot, continue with a new optimizer that
    loads the first one's ``state_dict()`` (torch casts loaded state to the
    parameters' dtype, which can change the numbers that follow)."""
    import nbopt

    if arena:
        values = [inputs[f"p{gi}{pi}"] for gi, shapes in enumerate(SHAPES)
                  for pi in range(len(shapes))]
        ar = nbopt.ParameterArena(values)
        it = iter(ar.params)
        params = [[next(it) for _ in shapes] for shapes in SHAPES]
    else:
        params = [[nbopt.Parameter(inputs[f"p{gi}{pi}"].copy()) for pi in range(len(shapes))]
                  for gi, shapes in enumerate(SHAPES)]

    # torch.tensor(lr) is float32, and so is the array standing in for it
    def make():
        groups, opts = two_groups(case, params, lambda lr: np.array(lr, np.float32))
        return getattr(nbopt, case.cls)(groups, **opts)

    # an arena parameter's gradient: its view of the arena's buffer
    views = {id(p): v for p, v in zip(ar.params, ar.grad_views)} if arena else {}

    def set_grad(p, g):
        if g is None:
            p.grad = None
        elif arena:
            p.grad = views[id(p)]     # written in place: the fast path
            p.grad[...] = g
        else:
            p.grad = g.copy()

    return run_trajectory(make(), make, params, inputs, grad_is_none, set_grad, lambda x: x,
                          steps=STEPS, checkpoint=CHECKPOINT_STEP, reload=reload)[0]


def run_torch(case: Case, inputs, reload: bool = False):
    import torch

    params = [[torch.nn.Parameter(torch.from_numpy(inputs[f"p{gi}{pi}"].copy()))
               for pi in range(len(shapes))] for gi, shapes in enumerate(SHAPES)]

    def make():
        groups, opts = two_groups(case, params, lambda lr: torch.tensor(lr))
        return getattr(torch.optim, case.cls)(groups, **opts)

    def set_grad(p, g):
        p.grad = None if g is None else torch.from_numpy(g.copy())

    return run_trajectory(make(), make, params, inputs, grad_is_none, set_grad, torch_to_numpy,
                          steps=STEPS, checkpoint=CHECKPOINT_STEP, reload=reload)[0]
