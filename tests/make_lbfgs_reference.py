"""LBFGS parity cases, their runners, and the committed torch 2.13 reference.

    python tests/make_lbfgs_reference.py

writes ``tests/data/lbfgs_reference.npz``: for every case of :data:`CASES`,
the problem's data and initial parameters, and torch's parameters, returned
loss and complete LBFGS state after each of :data:`STEPS` ``step()`` calls.
``tests/test_lbfgs.py`` replays the cases through nbopt without torch (and
against live torch when it is importable).

Both optimizers see the same function: the closures evaluate the loss and the
gradient in NumPy from the parameters' current values, so the only
differences are in LBFGS itself (dot-product summation order).  The problems
are well-conditioned (LBFGS with strong-Wolfe branches on loss comparisons;
spec section 7.6).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from reference_io import require_torch, write

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "lbfgs_reference.npz")
STEPS = 4
RESUME_AFTER = 2          # the resume tests checkpoint after this many steps


# -- problems ---------------------------------------------------------------------

def flatten(arrays) -> np.ndarray:
    """Concatenation of the real views, as LBFGS's flat vector (float64)."""
    parts = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.kind == "c":
            a = a.view(np.finfo(a.dtype).dtype)
        parts.append(a.reshape(-1).astype(np.float64))
    return np.concatenate(parts)


def unflatten(vec: np.ndarray, like) -> list:
    out, offset = [], 0
    for a in like:
        real = np.finfo(a.dtype).dtype if a.dtype.kind == "c" else a.dtype
        n = a.size * (2 if a.dtype.kind == "c" else 1)
        piece = vec[offset:offset + n].astype(real)
        if a.dtype.kind == "c":
            piece = piece.view(a.dtype)
        out.append(piece.reshape(a.shape))
        offset += n
    return out


def make_data(problem: str, seed: int) -> dict:
    """The problem's data and initial parameters (stored with the reference)."""
    rng = np.random.default_rng(seed)
    if problem in ("quad", "quad_complex", "quad_none_grad", "mixed"):
        n = 48
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        eig = np.linspace(1.0, 25.0, n)
        data = {"A": (q * eig) @ q.T, "b": rng.standard_normal(n)}
        if problem == "quad":
            shapes = [((6, 5), np.float64), ((18,), np.float64)]
        elif problem == "quad_complex":
            shapes = [((4, 3), np.complex128), ((24,), np.float64)]
        elif problem == "quad_none_grad":
            shapes = [((30,), np.float64), ((5,), np.float64), ((18,), np.float64)]
        else:
            shapes = [((6, 5), np.float32), ((18,), np.float64)]
    elif problem == "logreg":
        m, n = 160, 24
        x = rng.standard_normal((m, n))
        w_true = rng.standard_normal(n)
        y = np.where(x @ w_true + 0.5 * rng.standard_normal(m) > 0, 1.0, -1.0)
        data = {"X": x, "y": y}
        shapes = [((4, 5), np.float64), ((4,), np.float64)]
    else:
        raise ValueError(problem)
    for i, (shape, dtype) in enumerate(shapes):
        v = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            v = v + 1j * rng.standard_normal(shape)
        data[f"p{i}"] = v.astype(dtype)
    return data


def loss_and_grads(problem: str, data: dict, values: list):
    """``(loss, grads)`` at the parameter values (grads shaped and typed like
    them; None for a parameter the loss ignores)."""
    if problem == "quad_none_grad":
        # the middle parameter is not part of the loss: its grad stays None
        x = flatten([values[0], values[2]])
        g = data["A"] @ x - data["b"]
        loss = 0.5 * x @ data["A"] @ x - data["b"] @ x
        g0, g2 = unflatten(g, [values[0], values[2]])
        return float(loss), [g0, None, g2]
    x = flatten(values)
    if problem == "logreg":
        lam = 0.1
        z = data["y"] * (data["X"] @ x)
        loss = np.mean(np.logaddexp(0.0, -z)) + 0.5 * lam * x @ x
        sig = 0.5 * (1.0 - np.tanh(0.5 * z))       # 1 / (1 + exp(z)), stable
        g = data["X"].T @ (-data["y"] * sig) / len(z) + lam * x
    else:
        g = data["A"] @ x - data["b"]
        loss = 0.5 * x @ data["A"] @ x - data["b"] @ x
    return float(loss), unflatten(g, values)


# -- cases --------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    problem: str
    options: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.problem}({opts})#{self.seed}"


SW = "strong_wolfe"
CASES = [
    Case("quad", dict(max_iter=6)),
    Case("quad", dict(max_iter=6, line_search_fn=SW)),
    Case("quad", dict(max_iter=5, history_size=1)),
    Case("quad", dict(max_iter=4, history_size=3, lr=0.5, line_search_fn=SW), seed=1),
    Case("quad", dict(max_iter=10, max_eval=7, history_size=5, lr=0.3), seed=2),
    Case("quad", dict(max_iter=1, history_size=2), seed=3),
    Case("quad", dict(max_iter=8, history_size=4, tolerance_change=1e-2), seed=4),
    Case("quad", dict(tolerance_grad=0.5, line_search_fn=SW), seed=5),
    Case("logreg", dict()),
    Case("logreg", dict(line_search_fn=SW)),
    Case("logreg", dict(max_iter=7, history_size=5, line_search_fn=SW), seed=1),
    Case("logreg", dict(max_iter=3, history_size=2, lr=0.8), seed=2),
    Case("logreg", dict(max_iter=1, line_search_fn=SW), seed=3),
    Case("quad_complex", dict(max_iter=6, history_size=4)),
    Case("quad_complex", dict(max_iter=5, line_search_fn=SW), seed=1),
    Case("quad_none_grad", dict(max_iter=5, history_size=3)),
    Case("mixed", dict(max_iter=5, history_size=3)),
]


# -- runners --------------------------------------------------------------------------

STATE_KEYS = ("func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
              "prev_flat_grad", "prev_loss", "al")


def snapshot(params, loss, state, to_numpy) -> tuple[dict, dict]:
    """Arrays and a JSON-able description of the parameters, the returned
    loss and the LBFGS state (lists stacked; ``al``'s None entries as NaN)."""
    arrays = {f"param{i}": np.array(to_numpy(p)) for i, p in enumerate(params)}
    arrays["loss"] = np.array(float(loss))
    meta = {"keys": list(state), "scalar_type": {}}
    for key, value in state.items():
        if key in ("old_dirs", "old_stps"):
            arrays[key] = (np.stack([to_numpy(v) for v in value]) if value
                           else np.zeros((0, 0)))
        elif key in ("ro", "al"):
            arrays[key] = np.array([np.nan if v is None else float(to_numpy(v)) for v in value])
        elif key in ("d", "prev_flat_grad"):
            arrays[key] = np.array(to_numpy(value))
        else:
            # t and H_diag are Python numbers or 0-d tensors (arrays); record which
            meta["scalar_type"][key] = type(value).__name__ if type(value) in (int, float) \
                else "array"
            arrays[key] = np.array(float(to_numpy(value)))
    return arrays, meta


def run_nbopt(case: Case, data: dict, steps=range(STEPS), opt=None, params=None):
    """Run ``steps`` through nbopt; returns ``(snapshots, opt, params)`` with
    ``snapshots[step] = (arrays, meta)``."""
    import nbopt
    from nbopt.optim.lbfgs import LBFGS

    if params is None:
        params = [nbopt.Parameter(data[f"p{i}"].copy()) for i in range(_count(data))]
    if opt is None:
        opt = LBFGS(params, **case.options)

    def closure():
        loss, grads = loss_and_grads(case.problem, data, [np.asarray(p) for p in params])
        for p, g in zip(params, grads):
            p.grad = g
        return loss

    snaps = {}
    for step in steps:
        loss = opt.step(closure)
        snaps[step + 1] = snapshot(params, loss, opt.state[params[0]], lambda x: x)
    return snaps, opt, params


def run_torch(case: Case, data: dict, steps=range(STEPS)):
    """The same through torch.optim.LBFGS; also returns torch's state dict
    after RESUME_AFTER steps, converted to NumPy."""
    import torch

    params = [torch.nn.Parameter(torch.from_numpy(data[f"p{i}"].copy()))
              for i in range(_count(data))]
    opt = torch.optim.LBFGS(params, **case.options)

    def closure():
        values = [p.detach().numpy() for p in params]
        loss, grads = loss_and_grads(case.problem, data, values)
        for p, g in zip(params, grads):
            p.grad = None if g is None else torch.from_numpy(g)
        return loss

    def to_numpy(x):
        return x.detach().numpy() if isinstance(x, torch.Tensor) else x

    snaps = {}
    for step in steps:
        loss = opt.step(closure)
        snaps[step + 1] = snapshot(params, loss, opt.state[params[0]], to_numpy)
    return snaps


def _count(data: dict) -> int:
    return sum(1 for k in data if k.startswith("p") and k[1:].isdigit())


def state_from_snapshot(arrays: dict, meta: dict) -> dict:
    """Rebuild torch's LBFGS state (as NumPy: tensors -> arrays, 0-d tensors
    -> 0-d arrays) from a stored snapshot."""
    state = {}
    for key in meta["keys"]:
        value = arrays[key]
        if key in ("func_evals", "n_iter"):
            state[key] = int(value)
        elif key in ("old_dirs", "old_stps"):
            state[key] = [row.copy() for row in value]
        elif key == "ro":
            state[key] = [np.array(v) for v in value]
        elif key == "al":
            state[key] = [None if np.isnan(v) else np.array(v) for v in value]
        elif key in ("d", "prev_flat_grad"):
            state[key] = value.copy()
        elif key == "prev_loss":
            state[key] = float(value)
        else:
            kind = meta["scalar_type"][key]
            state[key] = np.array(value) if kind == "array" else {"int": int, "float": float}[
                kind](value)
    return state


# -- the reference file ---------------------------------------------------------------

def main() -> None:
    torch = require_torch()
    torch.set_default_dtype(torch.float32)
    arrays = {}
    index = {"torch": torch.__version__, "cases": [], "meta": {}}
    for case in CASES:
        index["cases"].append(case.id)
        data = make_data(case.problem, case.seed)
        for k, v in data.items():
            arrays[f"{case.id}|in|{k}"] = v
        for step, (snap, meta) in run_torch(case, data).items():
            for k, v in snap.items():
                arrays[f"{case.id}|{step}|{k}"] = v
            index["meta"][f"{case.id}|{step}"] = meta
    write(OUT, arrays, index, len(CASES))


if __name__ == "__main__":
    main()
