"""Regenerate the committed torch reference data of ``SWALR`` (needs torch 2.13).

    python tests/make_swalr_reference.py

Writes ``tests/data/swalr_reference.npz``: for every case of :data:`CASES`,
torch 2.13's learning rates after construction and after every step (every
group's ``lr``, ``get_last_lr()``, ``last_epoch``), and in the JSON member
``index`` the warnings torch emitted, the group keys the schedulers added,
the group's ``swa_lr`` values and the scheduler's ``state_dict()`` mid-run
and at the end; for every :data:`ERROR_CASES` entry the exception type and
message.

The driver (:func:`run_case`, :func:`run_error`) runs a case through torch or
through nbopt on the same inputs; ``tests/test_swalr.py`` replays the
committed data without torch and compares against live torch when it is
importable.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scheduler_cases  # noqa: E402
from scheduler_cases import added_keys, normalize  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "swalr_reference.npz")
ARRAYS = ("lr", "last_lr", "last_epoch")


@dataclass(frozen=True)
class SWACase:
    swa_lr: float | tuple = 0.05          # a tuple is passed as a per-group list
    anneal_epochs: int | None = None      # None: torch's default (10)
    anneal_strategy: str | None = None    # None: torch's default ("cos")
    lrs: tuple = (0.1,)                   # one param group per entry
    steps: int = 30
    cosine_until: int | None = None       # the SWA recipe: CosineAnnealingLR(T_max=steps)
                                          # made first, stepped until this step, then SWALR
    tensor_lr: bool = False               # lrs as float32 tensors / 0-d float32 arrays
    optimizer: str = "SGD"                # SGD (momentum 0.9) or Adam
    resume_at: int | None = None          # new optimizer (loaded state) + SWALR(last_epoch=..)
    epochs: bool = False                  # the deprecated step(epoch) with epoch = 3 * step
    sched_first: bool = False             # first SWALR step before optimizer.step()
    probe_get_lr: bool = False            # get_lr() outside step at step 4 (warns)

    @property
    def id(self) -> str:
        parts = [f"swa_lr={list(self.swa_lr) if isinstance(self.swa_lr, tuple) else self.swa_lr}"]
        for name in ("anneal_epochs", "anneal_strategy", "cosine_until", "resume_at"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)}")
        if self.lrs != (0.1,):
            parts.append("lrs=" + ",".join(map(str, self.lrs)))
        if self.steps != 30:
            parts.append(f"steps={self.steps}")
        if self.optimizer != "SGD":
            parts.append(self.optimizer)
        for flag in ("tensor_lr", "epochs", "sched_first", "probe_get_lr"):
            if getattr(self, flag):
                parts.append(flag)
        return "-".join(parts).replace(" ", "")

    def kwargs(self) -> dict:
        out = {"swa_lr": list(self.swa_lr) if isinstance(self.swa_lr, tuple) else self.swa_lr}
        if self.anneal_epochs is not None:
            out["anneal_epochs"] = self.anneal_epochs
        if self.anneal_strategy is not None:
            out["anneal_strategy"] = self.anneal_strategy
        return out


C = SWACase
CASES = [
    C(),                                                       # defaults: cos over 10 steps
    C(anneal_epochs=3),                                        # spec 5.3's verified values
    C(anneal_epochs=3, anneal_strategy="linear"),
    C(anneal_epochs=0),
    C(anneal_epochs=0, anneal_strategy="linear"),
    C(anneal_epochs=1, anneal_strategy="linear"),
    C(swa_lr=0.3, anneal_epochs=7),                            # annealing upwards
    C(swa_lr=(0.05, 0.001, 0.2), lrs=(0.1, 0.02, 0.05), anneal_epochs=5),
    C(swa_lr=(0.01, 0.004), lrs=(0.1, 0.02), anneal_epochs=6, anneal_strategy="linear",
      optimizer="Adam"),
    C(swa_lr=0.01, lrs=(0.1, 0.03), anneal_epochs=4, tensor_lr=True),
    C(swa_lr=0.02, anneal_epochs=9, anneal_strategy="linear", tensor_lr=True),
    # torch's "putting it all together" recipe: both schedulers made up front
    C(swa_lr=0.05, cosine_until=6, steps=40),
    C(swa_lr=(0.05, 0.01), lrs=(0.1, 0.02), anneal_epochs=4, cosine_until=12, steps=40),
    C(swa_lr=0.05, anneal_epochs=0, cosine_until=10, steps=30),
    C(swa_lr=0.004, anneal_epochs=5, anneal_strategy="linear", cosine_until=8, steps=30,
      tensor_lr=True),
    # resuming: the new scheduler counts its own steps, so it anneals again
    C(anneal_epochs=8, resume_at=4),
    C(swa_lr=(0.03, 0.002), lrs=(0.1, 0.02), anneal_epochs=6, anneal_strategy="linear",
      resume_at=10),
    C(anneal_epochs=5, epochs=True),
    C(anneal_epochs=5, sched_first=True),
    C(anneal_epochs=5, probe_get_lr=True),
]


@dataclass(frozen=True)
class ErrorCase:
    kwargs: tuple                       # ((name, value), ...)
    lrs: tuple = (0.1, 0.02)
    target: str = "optimizer"           # "optimizer" or "object" (not an optimizer)

    @property
    def id(self) -> str:
        return ",".join(f"{k}={v!r}" for k, v in self.kwargs) + \
            (f"-{self.target}" if self.target != "optimizer" else "")


E = ErrorCase
ERROR_CASES = [
    E((("swa_lr", [0.05]),)),
    E((("swa_lr", [0.05, 0.01, 0.1]),)),
    E((("swa_lr", 0.05), ("anneal_strategy", "quad"))),
    E((("swa_lr", 0.05), ("anneal_strategy", "Cos"))),
    E((("swa_lr", 0.05), ("anneal_epochs", -1))),
    E((("swa_lr", 0.05), ("anneal_epochs", 2.0))),
    E((("swa_lr", 0.05), ("anneal_epochs", "3"))),
    # the checks' order: the list length first, then the strategy, then the epochs
    E((("swa_lr", [0.05]), ("anneal_strategy", "quad"), ("anneal_epochs", -1))),
    E((("swa_lr", 0.05), ("anneal_strategy", "quad"), ("anneal_epochs", -1))),
    E((("swa_lr", 0.05), ("last_epoch", 3))),
    E((("swa_lr", 0.05),), target="object"),
]


# -- the two libraries --------------------------------------------------------------------
class Lib(scheduler_cases.Lib):
    """The scheduler driver's torch/nbopt handle, plus swa_utils."""

    def __init__(self, name: str):
        super().__init__(name)
        if name == "torch":
            import torch.optim.swa_utils

            self.swa = torch.optim.swa_utils
        else:
            import nbopt.swa_utils

            self.swa = nbopt.swa_utils


def _group_value(value):
    return float(np.asarray(value.detach().numpy() if hasattr(value, "detach") else value))


def run_case(case: SWACase, lib_name: str, roundtrip=None) -> dict:
    """Run one case; returns the recorded trajectory.

    ``roundtrip(opt_state, sched_state) -> (opt_state, sched_state)``, if
    given, is applied at ``case.steps // 2``: a fresh optimizer and a fresh
    SWALR then load the returned states and the run continues with them.
    """
    lib = Lib(lib_name)
    lr, last, epochs, warns = [], [], [], []
    mid_state = None
    checkpoint = case.steps // 2
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        opt = lib.optimizer(case.optimizer, case.lrs, case.tensor_lr)
        before = [set(g) for g in opt.param_groups]
        cosine = None
        if case.cosine_until is not None:
            cosine = lib.sched.CosineAnnealingLR(opt, T_max=case.steps)
        sched = lib.swa.SWALR(opt, **case.kwargs())
        added = added_keys(opt, before)
        swa_lrs = [_group_value(g["swa_lr"]) for g in opt.param_groups]

        def record(i):
            lr.append([_group_value(g["lr"]) for g in opt.param_groups])
            last.append([_group_value(x) for x in sched.get_last_lr()])
            epochs.append(sched.last_epoch)
            while len(warns) < len(rec):
                w = rec[len(warns)]
                warns.append([i, w.category.__name__, str(w.message)])

        record(0)
        for i in range(1, case.steps + 1):
            if case.probe_get_lr and i == 4:
                sched.get_lr()
            if case.resume_at == i:
                state = copy.deepcopy(opt.state_dict())
                opt = lib.optimizer(case.optimizer, case.lrs, case.tensor_lr)
                opt.load_state_dict(state)
                sched = lib.swa.SWALR(opt, **case.kwargs(), last_epoch=sched.last_epoch)
                record(i)
                continue
            if not (case.sched_first and i == 1):
                opt.step()
            if cosine is not None and i <= case.cosine_until:
                cosine.step()
            elif case.epochs:
                sched.step(3 * i)
            else:
                sched.step()
            if case.sched_first and i == 1:
                opt.step()
            if i == checkpoint:
                mid_state = normalize(sched.state_dict())
                if roundtrip is not None:
                    opt_state, sched_state = roundtrip(opt.state_dict(), sched.state_dict())
                    # (the recipe cases hand over to SWALR before the checkpoint)
                    assert case.cosine_until is None or case.cosine_until < i
                    opt = lib.optimizer(case.optimizer, case.lrs, case.tensor_lr)
                    sched = lib.swa.SWALR(opt, **case.kwargs())
                    opt.load_state_dict(opt_state)
                    sched.load_state_dict(sched_state)
            record(i)
    return {"lr": np.array(lr), "last_lr": np.array(last),
            "last_epoch": np.array(epochs, np.int64), "warnings": warns, "added_keys": added,
            "swa_lrs": swa_lrs, "mid_state": mid_state,
            "final_state": normalize(sched.state_dict())}


def run_error(case: ErrorCase, lib_name: str) -> dict:
    """Run one bad-input case: the exception's type and message, and whether
    the optimizer's groups were left as they were."""
    lib = Lib(lib_name)
    opt = lib.optimizer("SGD", case.lrs, False)
    before = normalize([{k: v for k, v in g.items() if k != "params"}
                        for g in opt.param_groups])
    target = object() if case.target == "object" else opt
    try:
        lib.swa.SWALR(target, **dict(case.kwargs))
    except Exception as exc:  # noqa: BLE001 - the exception is the result
        after = normalize([{k: v for k, v in g.items() if k != "params"}
                           for g in opt.param_groups])
        return {"type": type(exc).__name__, "message": str(exc.args[0]) if exc.args else "",
                "unchanged": after == before}
    raise AssertionError(f"{case.id}: no error raised")


def main() -> None:
    import torch

    if not torch.__version__.startswith("2.13."):
        raise SystemExit(f"reference data must come from torch 2.13, found {torch.__version__}")
    arrays = {}
    index = {"torch": torch.__version__, "cases": {}, "errors": {}}
    for case in CASES:
        result = run_case(case, "torch")
        for name in ARRAYS:
            arrays[f"{case.id}|{name}"] = result[name]
        index["cases"][case.id] = {k: result[k] for k in ("warnings", "added_keys", "swa_lrs",
                                                          "mid_state", "final_state")}
    for case in ERROR_CASES:
        result = run_error(case, "torch")
        index["errors"][case.id] = {"type": result["type"], "message": result["message"]}
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {len(CASES)} cases and {len(ERROR_CASES)} error cases to {OUT} "
          f"({os.path.getsize(OUT) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
