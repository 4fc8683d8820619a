"""Run one parity case through nbopt or torch on the same inputs.

The inputs (initial parameters and every step's gradients) are plain NumPy
arrays, made by :func:`make_inputs` and committed with the reference data, so
that nbopt and torch see bit-identical numbers.
"""
from __future__ import annotations

import numpy as np

from cases import CHECKPOINT_STEP, SHAPES, STEPS, Case, grad_is_none


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


def _groups(case: Case, params, lr_wrap):
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = lr_wrap(opts["lr"])
    g0 = {"params": params[0]}
    g1 = {"params": params[1], **case.group1}
    return [g0, g1], opts


def _snapshot(state_dict, params, to_numpy) -> dict[str, np.ndarray]:
    snap = {}
    flat = [p for group in params for p in group]
    for i, p in enumerate(flat):
        snap[f"param{i}"] = np.array(to_numpy(p))
    for pid, entry in state_dict["state"].items():
        for key, value in entry.items():
            snap[f"state{pid}.{key}"] = np.array(to_numpy(value))
    return snap


def reloaded(opt, make):
    """A new optimizer from ``make()`` that loaded ``opt.state_dict()``."""
    saved = opt.state_dict()
    new = make()
    new.load_state_dict(saved)
    return new


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
        groups, opts = _groups(case, params, lambda lr: np.array(lr, np.float32))
        return getattr(nbopt, case.cls)(groups, **opts)

    opt = make()
    out = {}
    for step in range(STEPS):
        k = 0
        for gi, shapes in enumerate(SHAPES):
            for pi in range(len(shapes)):
                p = params[gi][pi]
                g = inputs[f"g{gi}{pi}"][step]
                if grad_is_none(gi, pi, step):
                    p.grad = None
                elif arena:
                    p.grad = ar.grad_views[k]     # written in place: the fast path
                    p.grad[...] = g
                else:
                    p.grad = g.copy()
                k += 1
        opt.step()
        if step + 1 in (CHECKPOINT_STEP, STEPS):
            out[step + 1] = _snapshot(opt.state_dict(), params, lambda x: x)
        if reload and step + 1 == CHECKPOINT_STEP:
            opt = reloaded(opt, make)
    return out


def run_torch(case: Case, inputs, reload: bool = False):
    import torch

    params = [[torch.nn.Parameter(torch.from_numpy(inputs[f"p{gi}{pi}"].copy()))
               for pi in range(len(shapes))] for gi, shapes in enumerate(SHAPES)]

    def make():
        groups, opts = _groups(case, params, lambda lr: torch.tensor(lr))
        return getattr(torch.optim, case.cls)(groups, **opts)

    opt = make()
    out = {}
    for step in range(STEPS):
        for gi, shapes in enumerate(SHAPES):
            for pi in range(len(shapes)):
                p = params[gi][pi]
                p.grad = None if grad_is_none(gi, pi, step) else \
                    torch.from_numpy(inputs[f"g{gi}{pi}"][step].copy())
        opt.step()
        if step + 1 in (CHECKPOINT_STEP, STEPS):
            out[step + 1] = _snapshot(opt.state_dict(), params,
                                      lambda x: x.detach().numpy() if hasattr(x, "detach") else x)
        if reload and step + 1 == CHECKPOINT_STEP:
            opt = reloaded(opt, make)
    return out
