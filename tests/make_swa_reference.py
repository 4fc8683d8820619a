"""Regenerate the committed torch reference data of the SWA utilities (needs torch 2.13).

    python tests/make_swa_reference.py

Writes ``tests/data/swa_reference.npz``: the inputs (model snapshots, data
batches, arrays) and torch 2.13's results for

* ``AveragedModel.update_parameters`` over a sequence of model snapshots, in
  every configuration of :data:`CONFIGS` (default SWA, ``multi_avg_fn`` and
  ``avg_fn`` averages, with and without ``use_buffers``), for a
  Linear-BatchNorm1d-ReLU-Linear model in float32 and float64, and for a model
  holding complex parameters; the full ``state_dict`` after every update;
* ``update_bn`` on that model and on a 3-D BatchNorm1d input;
* the four averaging functions on lists of float, complex and integer arrays.

The runners used here (torch side and nbopt side, on the same stored inputs)
are imported by ``tests/test_swa_utils.py``, which replays the committed
data without torch and compares against live torch when it is importable.
"""
from __future__ import annotations

import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "swa_reference.npz")

REAL_DTYPES = ("float32", "float64")
COMPLEX_DTYPES = ("complex64", "complex128")
SNAPSHOTS = 5
N_IN, N_HIDDEN, N_OUT = 5, 8, 3

# name -> (AveragedModel keyword arguments as (kind, value) for the functions)
CONFIGS = {
    "swa": {},
    "swa_buffers": {"use_buffers": True},
    "swa_multi": {"multi_avg_fn": ("swa_multi", None)},
    "ema_multi": {"multi_avg_fn": ("ema_multi", 0.9)},
    "ema_multi_buffers": {"multi_avg_fn": ("ema_multi", 0.9), "use_buffers": True},
    "swa_avg": {"avg_fn": ("swa_avg", None)},
    "ema_avg": {"avg_fn": ("ema_avg", 0.8)},
    "ema_avg_buffers": {"avg_fn": ("ema_avg", 0.8), "use_buffers": True},
}
COMPLEX_CONFIGS = ("swa", "swa_buffers", "swa_multi", "ema_multi", "swa_avg", "ema_avg")

# list-level functions: name -> (function kind, argument, num_averaged kind)
LIST_FNS = {
    "swa_multi_tensor_n": ("swa_multi", None, "array"),
    "swa_multi_int_n": ("swa_multi", None, "int"),
    "ema_multi": ("ema_multi", 0.9, "array"),
    "swa_avg": ("swa_avg", None, "array"),
    "ema_avg": ("ema_avg", 0.7, "array"),
}
LIST_DTYPES = ("float32", "float64", "complex64", "complex128", "int64")
LIST_N = 2                 # models averaged so far, for the list functions
LIST_SHAPES = ((7,), (3, 5), (), (9, 11))


def _make_fn(swa_module, kind, arg):
    if kind == "swa_multi":
        return swa_module.get_swa_multi_avg_fn()
    if kind == "ema_multi":
        return swa_module.get_ema_multi_avg_fn(arg)
    if kind == "swa_avg":
        return swa_module.get_swa_avg_fn()
    if kind == "ema_avg":
        return swa_module.get_ema_avg_fn(arg)
    raise ValueError(kind)


def config_kwargs(swa_module, name):
    out = {}
    for key, value in CONFIGS[name].items():
        out[key] = _make_fn(swa_module, *value) if key in ("avg_fn", "multi_avg_fn") else value
    return out


# --------------------------------------------------------------------------
# inputs

def make_inputs(dtype: str) -> dict:
    """Snapshots of the model (``snap<k>|<state_dict key>``) and data batches."""
    rng = np.random.default_rng(2024 + REAL_DTYPES.index(dtype))
    shapes = {"0.weight": (N_HIDDEN, N_IN), "0.bias": (N_HIDDEN,), "1.weight": (N_HIDDEN,),
              "1.bias": (N_HIDDEN,), "1.running_mean": (N_HIDDEN,), "1.running_var": (N_HIDDEN,),
              "3.weight": (N_OUT, N_HIDDEN), "3.bias": (N_OUT,)}
    out = {}
    for k in range(SNAPSHOTS):
        for key, shape in shapes.items():
            x = rng.standard_normal(shape)
            if key == "1.running_var":
                x = np.abs(x) + 0.5
            out[f"snap{k}|{key}"] = x.astype(dtype)
        # distinct counters, so that averaging them with truncation is visible
        out[f"snap{k}|1.num_batches_tracked"] = np.array(3 * k + 1, np.int64)
    for i in range(4):
        out[f"batch{i}|x"] = (rng.standard_normal((16, N_IN)) * 2 + 0.5).astype(dtype)
        out[f"batch{i}|y"] = rng.integers(0, N_OUT, 16).astype(np.int64)
        out[f"batch3d{i}"] = (rng.standard_normal((6, 4, 5)) * 3 - 1).astype(dtype)
    return out


def make_complex_inputs(dtype: str) -> dict:
    rng = np.random.default_rng(77 + COMPLEX_DTYPES.index(dtype))
    real = np.empty(0, dtype).real.dtype
    out = {}
    for k in range(SNAPSHOTS):
        out[f"snap{k}|a"] = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
                             ).astype(dtype)
        out[f"snap{k}|b"] = rng.standard_normal(37).astype(real)
        out[f"snap{k}|c"] = (rng.standard_normal(2) + 1j * rng.standard_normal(2)).astype(dtype)
    return out


def make_list_inputs(dtype: str) -> dict:
    rng = np.random.default_rng(99 + LIST_DTYPES.index(dtype))
    out = {}
    for i, shape in enumerate(LIST_SHAPES):
        for side in ("avg", "cur"):
            if dtype == "int64":
                x = rng.integers(-50, 50, shape)
            elif np.dtype(dtype).kind == "c":
                x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
            else:
                x = rng.standard_normal(shape)
            out[f"{side}{i}"] = np.asarray(x).astype(dtype)
    return out


def snapshot(inputs, k) -> dict:
    prefix = f"snap{k}|"
    return {key[len(prefix):]: v for key, v in inputs.items() if key.startswith(prefix)}


# --------------------------------------------------------------------------
# nbopt side

class ProtocolModel:
    """A model that follows nbopt's model protocol without being an
    ``nbopt.nn.Module``: complex parameter ``a``, real parameter ``b``, complex
    buffer ``c``."""

    def __init__(self, values: dict):
        import nbopt

        self.a = nbopt.Parameter(values["a"].copy())
        self.b = nbopt.Parameter(values["b"].copy())
        self.c = values["c"].copy()
        self.training = True

    def named_parameters(self):
        return [("a", self.a), ("b", self.b)]

    def named_buffers(self):
        return [("c", self.c)]

    def parameters(self):
        return [self.a, self.b]

    def buffers(self):
        return [self.c]

    def modules(self):
        return [self]

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def load(self, values: dict):
        self.a[...] = values["a"]
        self.b[...] = values["b"]
        self.c[...] = values["c"]

    def __call__(self, x):
        return x @ self.a


def nbopt_model(dtype: str, values: dict | None = None):
    from nbopt import nn

    model = nn.Sequential(nn.Linear(N_IN, N_HIDDEN, dtype=dtype, rng=0),
                          nn.BatchNorm1d(N_HIDDEN, dtype=dtype), nn.ReLU(),
                          nn.Linear(N_HIDDEN, N_OUT, dtype=dtype, rng=1))
    if values is not None:
        model.load_state_dict(values)
    return model


def _numpy_state(state_dict) -> dict:
    return {k: np.array(v) for k, v in state_dict.items()}


def run_nbopt_average(config: str, inputs: dict, dtype: str) -> dict:
    """``{step: AveragedModel.state_dict()}`` after each update."""
    from nbopt import swa_utils

    model = nbopt_model(dtype, snapshot(inputs, 0))
    averaged = swa_utils.AveragedModel(model, **config_kwargs(swa_utils, config))
    out = {}
    for k in range(SNAPSHOTS):
        model.load_state_dict(snapshot(inputs, k))
        averaged.update_parameters(model)
        out[k] = _numpy_state(averaged.state_dict())
    return out


def run_nbopt_complex(config: str, inputs: dict) -> dict:
    from nbopt import swa_utils

    model = ProtocolModel(snapshot(inputs, 0))
    averaged = swa_utils.AveragedModel(model, **config_kwargs(swa_utils, config))
    out = {}
    for k in range(SNAPSHOTS):
        model.load(snapshot(inputs, k))
        averaged.update_parameters(model)
        out[k] = _numpy_state(averaged.state_dict())
    return out


def run_nbopt_update_bn(inputs: dict, dtype: str) -> dict:
    from nbopt import nn, swa_utils

    model = nbopt_model(dtype, snapshot(inputs, SNAPSHOTS - 1)).eval()
    loader = [(inputs[f"batch{i}|x"], inputs[f"batch{i}|y"]) for i in range(4)]
    swa_utils.update_bn(loader, model)
    out = {"2d|" + k: v for k, v in _numpy_state(model.state_dict()).items()}
    bn3d = nn.Sequential(nn.BatchNorm1d(4, momentum=0.3, dtype=dtype))
    swa_utils.update_bn([[inputs[f"batch3d{i}"]] for i in range(4)], bn3d)
    out.update({"3d|" + k: v for k, v in _numpy_state(bn3d.state_dict()).items()})
    return out


def _list_n(kind):
    return np.array(LIST_N, np.int64) if kind == "array" else LIST_N


def run_nbopt_lists(name: str, inputs: dict) -> dict:
    from nbopt import swa_utils

    kind, arg, n_kind = LIST_FNS[name]
    fn = _make_fn(swa_utils, kind, arg)
    avg = [inputs[f"avg{i}"].copy() for i in range(len(LIST_SHAPES))]
    cur = [inputs[f"cur{i}"] for i in range(len(LIST_SHAPES))]
    if kind.endswith("_multi"):
        fn(avg, cur, _list_n(n_kind))
        return {f"out{i}": a for i, a in enumerate(avg)}
    return {f"out{i}": np.asarray(fn(a, c, _list_n(n_kind)))
            for i, (a, c) in enumerate(zip(avg, cur))}


def list_cases():
    """(name, dtype) pairs that torch computes (integer SWA multi raises)."""
    for name, (kind, _, _) in LIST_FNS.items():
        for dtype in LIST_DTYPES:
            if dtype == "int64" and kind == "swa_multi":
                continue
            yield name, dtype


# --------------------------------------------------------------------------
# torch side

def torch_model(dtype: str, values: dict | None = None):
    import torch

    tdt = getattr(torch, dtype)
    model = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HIDDEN, dtype=tdt),
                                torch.nn.BatchNorm1d(N_HIDDEN, dtype=tdt), torch.nn.ReLU(),
                                torch.nn.Linear(N_HIDDEN, N_OUT, dtype=tdt))
    if values is not None:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in values.items()})
    return model


def _torch_state(state_dict) -> dict:
    return {k: v.detach().numpy().copy() for k, v in state_dict.items()}


def run_torch_average(config: str, inputs: dict, dtype: str) -> dict:
    import torch
    from torch.optim import swa_utils

    model = torch_model(dtype, snapshot(inputs, 0))
    averaged = swa_utils.AveragedModel(model, **config_kwargs(swa_utils, config))
    out = {}
    for k in range(SNAPSHOTS):
        model.load_state_dict({key: torch.from_numpy(np.array(v))
                               for key, v in snapshot(inputs, k).items()})
        averaged.update_parameters(model)
        out[k] = _torch_state(averaged.state_dict())
    return out


def _torch_complex_model(values):
    import torch

    class ComplexNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.from_numpy(values["a"].copy()))
            self.b = torch.nn.Parameter(torch.from_numpy(values["b"].copy()))
            self.register_buffer("c", torch.from_numpy(values["c"].copy()))

    return ComplexNet()


def run_torch_complex(config: str, inputs: dict) -> dict:
    import torch
    from torch.optim import swa_utils

    model = _torch_complex_model(snapshot(inputs, 0))
    averaged = swa_utils.AveragedModel(model, **config_kwargs(swa_utils, config))
    out = {}
    for k in range(SNAPSHOTS):
        with torch.no_grad():
            for key, value in snapshot(inputs, k).items():
                getattr(model, key).copy_(torch.from_numpy(value))
        averaged.update_parameters(model)
        out[k] = _torch_state(averaged.state_dict())
    return out


def run_torch_update_bn(inputs: dict, dtype: str) -> dict:
    import torch
    from torch.optim import swa_utils

    model = torch_model(dtype, snapshot(inputs, SNAPSHOTS - 1)).eval()
    loader = [(torch.from_numpy(inputs[f"batch{i}|x"]), torch.from_numpy(inputs[f"batch{i}|y"]))
              for i in range(4)]
    swa_utils.update_bn(loader, model)
    out = {"2d|" + k: v for k, v in _torch_state(model.state_dict()).items()}
    bn3d = torch.nn.Sequential(torch.nn.BatchNorm1d(4, momentum=0.3, dtype=getattr(torch, dtype)))
    swa_utils.update_bn([[torch.from_numpy(inputs[f"batch3d{i}"])] for i in range(4)], bn3d)
    out.update({"3d|" + k: v for k, v in _torch_state(bn3d.state_dict()).items()})
    return out


def run_torch_lists(name: str, inputs: dict) -> dict:
    import torch
    from torch.optim import swa_utils

    kind, arg, n_kind = LIST_FNS[name]
    fn = _make_fn(swa_utils, kind, arg)
    avg = [torch.from_numpy(inputs[f"avg{i}"].copy()) for i in range(len(LIST_SHAPES))]
    cur = [torch.from_numpy(inputs[f"cur{i}"]) for i in range(len(LIST_SHAPES))]
    n = torch.tensor(LIST_N) if n_kind == "array" else LIST_N
    if kind.endswith("_multi"):
        fn(avg, cur, n)
        return {f"out{i}": a.numpy().copy() for i, a in enumerate(avg)}
    return {f"out{i}": fn(a, c, n).numpy().copy() for i, (a, c) in enumerate(zip(avg, cur))}


# --------------------------------------------------------------------------

def main() -> None:
    import torch

    if not torch.__version__.startswith("2.13."):
        raise SystemExit(f"reference data must come from torch 2.13, found {torch.__version__}")
    arrays = {}
    index = {"torch": torch.__version__, "configs": list(CONFIGS),
             "complex_configs": list(COMPLEX_CONFIGS), "lists": [list(c) for c in list_cases()]}
    for dtype in REAL_DTYPES:
        inputs = make_inputs(dtype)
        arrays.update({f"in|{dtype}|{k}": v for k, v in inputs.items()})
        for config in CONFIGS:
            for step, state in run_torch_average(config, inputs, dtype).items():
                arrays.update({f"avg|{config}|{dtype}|{step}|{k}": v for k, v in state.items()})
        arrays.update({f"bn|{dtype}|{k}": v for k, v in run_torch_update_bn(inputs, dtype).items()})
        index[f"keys|{dtype}"] = list(torch_model(dtype).state_dict())
    for dtype in COMPLEX_DTYPES:
        inputs = make_complex_inputs(dtype)
        arrays.update({f"in|{dtype}|{k}": v for k, v in inputs.items()})
        for config in COMPLEX_CONFIGS:
            for step, state in run_torch_complex(config, inputs).items():
                arrays.update({f"avg|{config}|{dtype}|{step}|{k}": v for k, v in state.items()})
    for name, dtype in list_cases():
        inputs = make_list_inputs(dtype)
        arrays.update({f"listin|{name}|{dtype}|{k}": v for k, v in inputs.items()})
        arrays.update({f"list|{name}|{dtype}|{k}": v
                       for k, v in run_torch_lists(name, inputs).items()})
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {len(arrays)} arrays to {OUT} ({os.path.getsize(OUT) / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
