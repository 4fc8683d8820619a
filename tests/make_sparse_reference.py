"""Torch 2.13 reference data for sparse gradients, and the trajectories the
sparse parity tests replay (importable; regenerating needs torch 2.13).

    python tests/make_sparse_reference.py

Writes ``tests/data/sparse_reference.npz``:

* ``traj|<dtype>|in|...``: the inputs of every trajectory of that dtype: three
  parameters -- an embedding table ``(rows, dim)`` with row indices and
  ``(nnz, dim)`` values, a 1-D parameter with full sparse dimensions, and a
  3-D one with two sparse dimensions -- and 50 steps of COO gradients with
  repeated rows (three or more entries for one row are common), rows that
  never appear, empty gradients (``nnz = 0``) and ``None`` gradients;
* ``traj|<case id>|<dtype>|<step>|...``: torch's parameters and state at steps
  25 and 50 for every case of :data:`CASES` (SparseAdam, Adagrad and SGD);
* ``coal|<name>|...``: ``coalesce()`` inputs and torch's result, among them
  keys that drive libstdc++'s introsort into its heapsort fallback and an
  input long enough for torch's radix sort; ``sort|...``: the permutation
  torch's ``sort`` gives for those adversarial keys.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

STEPS = 50
CHECKPOINT_STEP = 25
# (shape, sparse_dim): embedding table, 1-D full-sparse, two sparse dims + a dense one
PARAMS = (((24, 6), 1), ((20,), 1), ((6, 4, 2), 2))
N_MISSING = 2          # the last rows of dim 0 never get a gradient
DTYPES = ("float32", "float64", "complex64", "complex128")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sparse_reference.npz")


@dataclass(frozen=True)
class SparseCase:
    cls: str
    options: dict = field(default_factory=dict)
    tensor_lr: bool = False

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.cls}({opts}){'-tensor_lr' if self.tensor_lr else ''}".replace(" ", "")

    @property
    def dtypes(self) -> tuple:
        # torch's SparseAdam refuses complex parameters
        return DTYPES[:2] if self.cls == "SparseAdam" else DTYPES


CASES = [
    SparseCase("SparseAdam", dict(lr=0.01)),
    SparseCase("SparseAdam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, maximize=True)),
    SparseCase("SparseAdam", dict(lr=0.01, betas=(0.0, 0.5))),
    SparseCase("SparseAdam", dict(lr=0.01), tensor_lr=True),
    SparseCase("Adagrad", dict(lr=0.1)),
    SparseCase("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-6,
                               maximize=True)),
    SparseCase("Adagrad", dict(lr=0.1, lr_decay=0.05), tensor_lr=True),
    SparseCase("Adagrad", dict(lr=0.05, foreach=True)),
    SparseCase("SGD", dict(lr=0.1)),
    SparseCase("SGD", dict(lr=0.1, maximize=True), tensor_lr=True),
    SparseCase("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1)),
    SparseCase("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
]


def grad_kind(k: int, step: int) -> str:
    """``"none"``, ``"empty"`` or ``"sparse"`` for parameter ``k`` at ``step``."""
    if (step + k) % 9 == 4:
        return "none"
    if (step + 2 * k) % 7 == 0:
        return "empty"
    return "sparse"


def make_inputs(dtype: str) -> dict[str, np.ndarray]:
    """Initial parameters and every step's gradients, as flat arrays:
    ``i{k}`` (sparse_dim, total) int64 indices, ``v{k}`` (total, ...) values
    and ``o{k}`` (STEPS + 1) offsets of each step's entries."""
    rng = np.random.default_rng(2013 + DTYPES.index(dtype))
    complex_ = np.dtype(dtype).kind == "c"

    def draw(shape, scale=1.0):
        x = rng.standard_normal(shape) * scale
        if complex_:
            x = x + 1j * rng.standard_normal(shape) * scale
        return x.astype(dtype)

    out = {}
    for k, (shape, sparse_dim) in enumerate(PARAMS):
        out[f"p{k}"] = draw(shape)
        indices, values, offsets = [], [], [0]
        for step in range(STEPS):
            nnz = int(rng.integers(1, 13)) if grad_kind(k, step) == "sparse" else 0
            idx = np.empty((sparse_dim, nnz), np.int64)
            # half the entries hit a few "hot" rows: repeats of 3+ are common
            hot = rng.random(nnz) < 0.5
            live = shape[0] - N_MISSING
            idx[0] = np.where(hot, rng.integers(0, min(3, live), nnz),
                              rng.integers(0, live, nnz))
            for d in range(1, sparse_dim):
                idx[d] = rng.integers(0, shape[d], nnz)
            # mixed magnitudes: the order in which duplicates are summed shows
            scale = 10.0 ** rng.integers(-2, 3, (nnz,) + (1,) * (len(shape) - sparse_dim))
            indices.append(idx)
            values.append(draw((nnz,) + shape[sparse_dim:], scale))
            offsets.append(offsets[-1] + nnz)
        out[f"i{k}"] = np.concatenate(indices, axis=1)
        out[f"v{k}"] = np.concatenate(values, axis=0)
        out[f"o{k}"] = np.array(offsets, np.int64)
    return out


def step_grad(inputs, k: int, step: int):
    """``(indices, values, shape)`` of parameter ``k``'s gradient at ``step``,
    or None."""
    if grad_kind(k, step) == "none":
        return None
    lo, hi = inputs[f"o{k}"][step], inputs[f"o{k}"][step + 1]
    return inputs[f"i{k}"][:, lo:hi], inputs[f"v{k}"][lo:hi], PARAMS[k][0]


def _snapshot(opt, params, to_numpy) -> dict[str, np.ndarray]:
    snap = {f"param{k}": np.array(to_numpy(p)) for k, p in enumerate(params)}
    for pid, entry in opt.state_dict()["state"].items():
        for key, value in entry.items():
            snap[f"state{pid}.{key}"] = np.array(to_numpy(value))
    return snap


def nbopt_class(name: str):
    if name == "SparseAdam":
        from nbopt.optim.sparse_adam import SparseAdam

        return SparseAdam
    import nbopt

    return getattr(nbopt, name)


def run_nbopt(case: SparseCase, inputs, *, make_grad=None, fortran=False):
    """``{step: snapshot}`` at CHECKPOINT_STEP and STEPS.  ``make_grad(indices,
    values, shape)`` builds each gradient (default: a SparseGrad);
    ``fortran`` makes F-ordered parameters (compared transposed back)."""
    import nbopt
    from nbopt.parameter import SparseGrad

    make_grad = make_grad or SparseGrad
    order = "F" if fortran else "C"
    params = [nbopt.Parameter(np.array(inputs[f"p{k}"], order=order))
              for k in range(len(PARAMS))]
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = np.array(opts["lr"], np.float32)
    opt = nbopt_class(case.cls)(params, **opts)
    out = {}
    for step in range(STEPS):
        for k, p in enumerate(params):
            g = step_grad(inputs, k, step)
            p.grad = None if g is None else make_grad(*g)
        opt.step()
        if step + 1 in (CHECKPOINT_STEP, STEPS):
            out[step + 1] = _snapshot(opt, params, lambda x: x)
    return out


def run_torch(case: SparseCase, inputs):
    import torch

    params = [torch.nn.Parameter(torch.from_numpy(inputs[f"p{k}"].copy()))
              for k in range(len(PARAMS))]
    opts = dict(case.options)
    if case.tensor_lr:
        opts["lr"] = torch.tensor(opts["lr"])
    opt = getattr(torch.optim, case.cls)(params, **opts)

    def to_numpy(x):
        if isinstance(x, torch.Tensor):
            # SGD's momentum buffer is a sparse tensor after a sparse first
            # step; nbopt keeps it dense
            return (x.to_dense() if x.is_sparse else x).detach().numpy()
        return x

    out = {}
    for step in range(STEPS):
        for k, p in enumerate(params):
            g = step_grad(inputs, k, step)
            p.grad = None if g is None else torch.sparse_coo_tensor(
                torch.from_numpy(g[0].copy()), torch.from_numpy(g[1].copy()), g[2],
                check_invariants=True)
        opt.step()
        if step + 1 in (CHECKPOINT_STEP, STEPS):
            out[step + 1] = _snapshot(opt, params, to_numpy)
    return out


# -- coalesce ----------------------------------------------------------------------

def _libstdcxx_sort(a, less, stats):
    """libstdc++'s std::sort in Python with a comparison callback (to build
    adversarial keys and to count heapsort fallbacks)."""
    n = len(a)

    def swap(i, j):
        a[i], a[j] = a[j], a[i]

    def median(result, x, y, z):
        if less(a[x], a[y]):
            if less(a[y], a[z]):
                swap(result, y)
            elif less(a[x], a[z]):
                swap(result, z)
            else:
                swap(result, x)
        elif less(a[x], a[z]):
            swap(result, x)
        elif less(a[y], a[z]):
            swap(result, z)
        else:
            swap(result, y)

    def partition(first, last, pivot):
        while True:
            while less(a[first], a[pivot]):
                first += 1
            last -= 1
            while less(a[pivot], a[last]):
                last -= 1
            if not first < last:
                return first
            swap(first, last)
            first += 1

    def adjust(first, hole, length, v):
        top = child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if less(a[first + child], a[first + child - 1]):
                child -= 1
            a[first + hole] = a[first + child]
            hole = child
        if (length & 1) == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            a[first + hole] = a[first + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and less(a[first + parent], v):
            a[first + hole] = a[first + parent]
            hole = parent
            parent = (hole - 1) // 2
        a[first + hole] = v

    def heapsort(first, last):
        stats["heapsort"] += 1
        length = last - first
        for parent in range((length - 2) // 2, -1, -1):
            adjust(first, parent, length, a[first + parent])
        while last - first > 1:
            last -= 1
            v = a[last]
            a[last] = a[first]
            adjust(first, 0, last - first, v)

    def introsort(first, last, depth):
        while last - first > 16:
            if depth == 0:
                heapsort(first, last)
                return
            depth -= 1
            median(first, first + 1, first + (last - first) // 2, last - 1)
            cut = partition(first + 1, last, first)
            introsort(cut, last, depth)
            last = cut

    def linear_insert(last):
        v = a[last]
        while less(v, a[last - 1]):
            a[last] = a[last - 1]
            last -= 1
        a[last] = v

    def insertion_sort(first, last):
        for i in range(first + 1, last):
            if less(a[i], a[first]):
                v = a[i]
                a[first + 1:i + 1] = a[first:i]
                a[first] = v
            else:
                linear_insert(i)

    introsort(0, n, 2 * (n.bit_length() - 1))
    insertion_sort(0, min(n, 16))
    for i in range(16, n):
        linear_insert(i)


def adversarial_keys(n: int) -> np.ndarray:
    """McIlroy's "killer adversary" against libstdc++'s introsort: keys that
    exhaust its depth limit, halved so that they repeat."""
    gas = n
    val = [gas] * n
    state = {"solid": 0, "candidate": 0}

    def less(x, y):
        if val[x] == gas and val[y] == gas:
            z = x if x == state["candidate"] else y
            val[z] = state["solid"]
            state["solid"] += 1
        if val[x] == gas:
            state["candidate"] = x
        elif val[y] == gas:
            state["candidate"] = y
        return val[x] < val[y]

    _libstdcxx_sort(list(range(n)), less, {"heapsort": 0})
    keys = np.array(val, np.int64) // 2
    stats = {"heapsort": 0}
    _libstdcxx_sort(list(keys), lambda x, y: x < y, stats)
    if not stats["heapsort"]:
        raise AssertionError("the adversarial keys no longer reach the heapsort fallback")
    return keys


def coalesce_inputs() -> dict[str, tuple]:
    """name -> (indices, values, shape) of the coalesce checks."""
    rng = np.random.default_rng(77)
    # values from a small set of wide magnitudes: summation order decides the
    # float32 result, and the arrays compress well
    pool = np.array([s * 10.0 ** e for s in (1, -1, 3) for e in range(-6, 7)], np.float32)
    cases = {}
    keys = adversarial_keys(2000)
    cases["heapsort"] = (keys[None], pool[rng.integers(0, len(pool), len(keys))],
                         (int(keys.max()) + 1,))
    n = 40000           # >= GRAIN_SIZE: torch's radix sort
    cases["radix"] = (rng.integers(0, 500, (1, n)), pool[rng.integers(0, len(pool), (n, 2))],
                      (500, 2))
    n = 3000
    cases["three_dims"] = (np.stack([rng.integers(0, 4, n), rng.integers(0, 3, n),
                                     rng.integers(0, 5, n)]),
                           pool[rng.integers(0, len(pool), n)].astype(np.float64), (4, 3, 5))
    return cases


def main() -> None:
    import torch

    if not torch.__version__.startswith("2.13."):
        raise SystemExit(f"reference data must come from torch 2.13, found {torch.__version__}")
    arrays = {}
    index = {"torch": torch.__version__, "cases": [c.id for c in CASES]}
    for dtype in DTYPES:
        inputs = make_inputs(dtype)
        for name, value in inputs.items():
            arrays[f"traj|{dtype}|in|{name}"] = value
        for case in CASES:
            if dtype not in case.dtypes:
                continue
            for step, snap in run_torch(case, inputs).items():
                for name, value in snap.items():
                    arrays[f"traj|{case.id}|{dtype}|{step}|{name}"] = value
    for name, (idx, vals, shape) in coalesce_inputs().items():
        c = torch.sparse_coo_tensor(torch.from_numpy(idx), torch.from_numpy(vals), shape,
                                    check_invariants=True).coalesce()
        arrays[f"coal|{name}|indices"] = idx.astype(np.int16)   # small: stored narrow
        arrays[f"coal|{name}|values"] = vals
        arrays[f"coal|{name}|shape"] = np.array(shape, np.int64)
        arrays[f"coal|{name}|out_indices"] = c._indices().numpy().astype(np.int16)
        arrays[f"coal|{name}|out_values"] = c._values().numpy()
    keys = coalesce_inputs()["heapsort"][0][0]
    arrays["sort|heapsort|perm"] = torch.sort(torch.from_numpy(keys)).indices.numpy() \
        .astype(np.int16)
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {len(CASES)} cases to {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
