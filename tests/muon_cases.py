"""Muon's parity table: every option set of torch 2.13's
``optim_inputs_func_muon`` and a few more, over 2-D parameters of two groups.

Muon's parameters must be 2-D, so it has its own table (``cases.CASES``
steps 1-D parameters too).  The inputs come from an integer hash (exact and
the same on every machine and NumPy version), so the committed reference
(``tests/data/muon_reference.npz``, written by ``tests/make_muon_reference.py``)
holds torch's results only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reference_io import run_trajectory, torch_to_numpy, two_groups

STEPS = 20
CHECKPOINT_STEP = 10
DTYPES = ("float32", "float64")

# group 0: wide, tall (transposed iteration) and thin (torch's fallback
# GEMM loops); group 1: AMX-sized, K = 80 and 48 (uneven K tiles)
SHAPES = [[(20, 36), (40, 12), (3, 50)], [(48, 80)]]


@dataclass(frozen=True)
class MuonCase:
    options: dict
    group1: dict = field(default_factory=dict)
    tensor_lr: bool = False
    dtypes: tuple = DTYPES

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        g1 = ",".join(f"{k}={v}" for k, v in sorted(self.group1.items()))
        return f"Muon({opts})[{g1}]{'-tensor_lr' if self.tensor_lr else ''}".replace(" ", "")


CASES = [
    # torch's optim_inputs_func_muon
    MuonCase(dict(), dict()),
    MuonCase(dict(lr=0.01), dict(lr=0.02), dtypes=("float32",)),
    MuonCase(dict(lr=0.001), dict(), tensor_lr=True),
    MuonCase(dict(weight_decay=0.2), dict(weight_decay=0.0), dtypes=("float32",)),
    MuonCase(dict(momentum=0.8), dict(momentum=0.95), dtypes=("float32",)),
    MuonCase(dict(ns_steps=6), dict(ns_steps=2), dtypes=("float32",)),
    MuonCase(dict(ns_coefficients=(3.4, -4.7, 2.0)), dict(), dtypes=("float32",)),
    # the other options
    MuonCase(dict(lr=0.02, nesterov=False, adjust_lr_fn="original"), dict(momentum=0.5)),
    MuonCase(dict(lr=0.02, adjust_lr_fn="match_rms_adamw"), dict(weight_decay=0.0, lr=0.01)),
    MuonCase(dict(lr=0.02, eps=100.0, ns_steps=3), dict(nesterov=False), dtypes=("float32",)),
    MuonCase(dict(lr=0.05, momentum=0.0, weight_decay=0.0, ns_coefficients=(2.0, -1.5, 0.5)),
             dict(adjust_lr_fn="match_rms_adamw"), dtypes=("float32",)),
]


def grad_is_none(group: int, index: int, step: int) -> bool:
    """The third parameter of group 0 skips some steps; group 1 starts one
    step late."""
    if group == 0 and index == 2:
        return step % 7 == 3
    if group == 1:
        return step == 0
    return False


def _hash(seed: int, n: int) -> np.ndarray:
    """splitmix64 of ``seed * 2**32 + k`` for k < n (uint64, wrapping)."""
    with np.errstate(over="ignore"):
        z = (np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 32)) \
            * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def values(seed: int, shape, dtype) -> np.ndarray:
    """Bell-shaped values (sum of three 21-bit uniforms, variance about 1),
    computed exactly in float64 and rounded to ``dtype``."""
    n = int(np.prod(shape))
    h = _hash(seed, n)
    mask = np.uint64((1 << 21) - 1)
    parts = [((h >> np.uint64(s)) & mask).astype(np.float64) for s in (0, 21, 42)]
    x = (parts[0] + parts[1] + parts[2] - 3 * 2.0 ** 20) * 2.0 ** -20
    return x.reshape(shape).astype(dtype)


def make_inputs(case_index: int, dtype: str) -> dict[str, np.ndarray]:
    out = {}
    for gi, shapes in enumerate(SHAPES):
        for pi, shape in enumerate(shapes):
            base = 1_000_000 * (case_index + 1) + 10_000 * gi + 1000 * pi
            out[f"p{gi}{pi}"] = values(base, shape, dtype)
            out[f"g{gi}{pi}"] = np.stack([values(base + 1 + s, shape, dtype)
                                          for s in range(STEPS)])
    return out


def _run(make_params, make_opt, set_grad, to_numpy, inputs, reload: bool):
    params = make_params()
    return run_trajectory(make_opt(params), lambda: make_opt(params), params, inputs,
                          grad_is_none, set_grad, to_numpy, steps=STEPS,
                          checkpoint=CHECKPOINT_STEP, reload=reload)[0]


def run_nbopt(case: MuonCase, inputs, reload: bool = False):
    """``{step: snapshot}`` at CHECKPOINT_STEP and STEPS (``reload``: a new
    optimizer loads the state_dict at CHECKPOINT_STEP and continues)."""
    import nbopt

    def make_params():
        return [[nbopt.Parameter(inputs[f"p{gi}{pi}"].copy()) for pi in range(len(shapes))]
                for gi, shapes in enumerate(SHAPES)]

    def make_opt(params):
        groups, opts = two_groups(case, params, lambda lr: np.array(lr, np.float32))
        return nbopt.Muon(groups, **opts)

    def set_grad(p, g):
        p.grad = None if g is None else g.copy()

    return _run(make_params, make_opt, set_grad, lambda x: x, inputs, reload)


def run_torch(case: MuonCase, inputs, reload: bool = False):
    import torch

    def make_params():
        return [[torch.nn.Parameter(torch.from_numpy(inputs[f"p{gi}{pi}"].copy()))
                 for pi in range(len(shapes))] for gi, shapes in enumerate(SHAPES)]

    def make_opt(params):
        groups, opts = two_groups(case, params, lambda lr: torch.tensor(lr))
        return torch.optim.Muon(groups, **opts)

    def set_grad(p, g):
        p.grad = None if g is None else torch.from_numpy(g.copy())

    return _run(make_params, make_opt, set_grad, torch_to_numpy, inputs, reload)
