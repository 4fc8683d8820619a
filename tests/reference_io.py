"""What the committed torch references and their runners share.

The runners (``trajectory.py``, ``muon_cases.py``, ``make_adafactor_reference.py``)
build two parameter groups the same way (:func:`two_groups`) and step them
the same way (:func:`run_trajectory`: snapshots of the parameters and the
state_dict's state, :func:`snapshot`, and a continuation from a reloaded
state_dict, :func:`reloaded`).  The
makers (``make_reference.py``, ``make_adafactor_reference.py``,
``make_muon_reference.py``, ``make_lbfgs_reference.py``) check torch's version
(:func:`require_torch`), store trajectories under the same keys
(:func:`write_trajectories`) and write the file the same way (:func:`write`).

The keys of a trajectory file: ``<case id>|<dtype>|in|<input>`` (the inputs,
where stored), ``<case id>|<dtype>|<step>|<name>`` (the snapshots) and
``<case id>|<dtype>|reload|<name>`` (the final snapshot of the reloaded run);
``index`` is a JSON document as uint8.
"""
from __future__ import annotations

import json
import os

import numpy as np

TORCH_VERSION = "2.13."


def require_torch():
    """``torch``, if it is the version the references come from."""
    import torch

    if not torch.__version__.startswith(TORCH_VERSION):
        raise SystemExit(f"reference data must come from torch 2.13, found {torch.__version__}")
    return torch


def torch_to_numpy(x):
    """A torch tensor's NumPy view; anything else as it is."""
    return x.detach().numpy() if hasattr(x, "detach") else x


def two_groups(case, params, lr_wrap):
    """``([group 0, group 1], options)``: ``params[1]`` with ``case.group1``'s
    overrides, and ``case.options`` with the lr wrapped by ``lr_wrap`` when
    ``case.tensor_lr``."""
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = lr_wrap(opts["lr"])
    return [{"params": params[0]}, {"params": params[1], **case.group1}], opts


def snapshot(state_dict, params, to_numpy) -> dict[str, np.ndarray]:
    """``param<i>`` for every parameter of ``params`` (a list of groups) and
    ``state<id>.<key>`` for every entry of ``state_dict["state"]``."""
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


def run_trajectory(opt, make, params, inputs, grad_is_none, set_grad, to_numpy, *, steps: int,
                   checkpoint: int, reload: bool = False, first: int = 0, stop=None):
    """Step ``opt`` (made by ``make()``) from step ``first`` to ``stop``
    (default ``steps``).  Before each step, ``set_grad(p, g)`` for every
    parameter ``params[gi][pi]``, ``g`` being ``inputs["g<gi><pi>"][step]``
    or None where ``grad_is_none(gi, pi, step)``.  Returns ``({step:
    snapshot}, the last optimizer)``, snapshots at ``checkpoint`` and
    ``steps``; ``reload``: after the checkpoint, a new optimizer that loaded
    the state_dict continues."""
    out = {}
    for step in range(first, steps if stop is None else stop):
        for gi, group in enumerate(params):
            for pi, p in enumerate(group):
                set_grad(p, None if grad_is_none(gi, pi, step) else inputs[f"g{gi}{pi}"][step])
        opt.step()
        if step + 1 in (checkpoint, steps):
            out[step + 1] = snapshot(opt.state_dict(), params, to_numpy)
        if reload and step + 1 == checkpoint:
            opt = reloaded(opt, make)
    return out, opt


def write_trajectories(path: str, cases, dtypes, inputs, run, final_step: int, *,
                       index_extra=None, entry=None, store_inputs: bool = True) -> None:
    """Write the torch reference of ``cases`` to ``path``: for every case and
    dtype of ``dtypes(case)``, under ``<case.id>|<dtype>``, the inputs
    ``inputs(case_index, case, dtype)`` (if ``store_inputs``), every snapshot
    of ``run(case, inputs, False)`` and the ``final_step`` snapshot of
    ``run(case, inputs, True)`` (continued by an optimizer that reloaded the
    state_dict).  The index: torch's version, ``index_extra`` and each case's
    ``entry(case)`` (default its id)."""
    torch = require_torch()
    arrays = {}
    index = {"torch": torch.__version__, **(index_extra or {}), "cases": []}
    for ci, case in enumerate(cases):
        index["cases"].append(case.id if entry is None else entry(case))
        for dtype in dtypes(case):
            case_inputs = inputs(ci, case, dtype)
            prefix = f"{case.id}|{dtype}"
            if store_inputs:
                for k, v in case_inputs.items():
                    arrays[f"{prefix}|in|{k}"] = v
            for step, snap in run(case, case_inputs, False).items():
                for k, v in snap.items():
                    arrays[f"{prefix}|{step}|{k}"] = v
            for k, v in run(case, case_inputs, True)[final_step].items():
                arrays[f"{prefix}|reload|{k}"] = v
    write(path, arrays, index, len(cases))


def write(path: str, arrays: dict, index: dict, count: int) -> None:
    """Write ``arrays`` and ``index`` (as the ``index`` array) to ``path``."""
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **arrays)
    print(f"wrote {count} cases to {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


def read_trajectory(ref: dict, prefix: str) -> tuple[dict, dict, dict]:
    """``(inputs, {step: snapshot}, reloaded run's final snapshot)`` stored in
    ``ref`` under ``prefix`` (``"<case id>|<dtype>|"``); empty where absent."""
    inputs, expected, reload = {}, {}, {}
    for key, value in ref.items():
        if not key.startswith(prefix):
            continue
        step, name = key[len(prefix):].split("|")
        if step == "in":
            inputs[name] = value
        elif step == "reload":
            reload[name] = value
        else:
            expected.setdefault(int(step), {})[name] = value
    return inputs, expected, reload
