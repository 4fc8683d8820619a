import functools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:  # live parity runs whenever torch is importable
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

requires_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed "
                                    "(live comparison; committed reference data still runs)")


@functools.lru_cache(maxsize=None)
def torch_sqrt_is_ieee() -> bool:
    """Whether torch's float32 ``sqrt`` rounds correctly on this CPU, probed
    on fixed values (vectors and 0-d tensors).

    It does not everywhere: torch 2.13 (CPU wheel) on an AMD EPYC rounds about
    a fifth of float32 square roots an ulp away from IEEE ``sqrt`` (measured),
    where on Intel CPUs it matches it.  nbopt computes IEEE square roots, so on
    such a CPU a live comparison can only agree to that ulp; the committed
    reference data (made where torch's sqrt is IEEE) still checks the exact
    numbers.
    """
    import numpy as np
    import torch

    x = np.random.default_rng(0).random(4096, dtype=np.float32)
    if not np.array_equal(torch.sqrt(torch.from_numpy(x)).numpy(), np.sqrt(x)):
        return False
    return all(torch.tensor(v).sqrt().item() == float(np.sqrt(v)) for v in x[:256])


def live_tolerances(dtype: str) -> dict:
    """The parity tolerance of a comparison with live torch: the table's
    (tests/cases.py), except where torch's float32 sqrt is not IEEE on this
    CPU (:func:`torch_sqrt_is_ieee`): a float64 run whose variant computes its
    scalars as float32 tensors (``differentiable``, Tensor lr or betas) then
    differs by an ulp of those scalars, ~1e-8 relative over a run (measured)."""
    from cases import TOLERANCES

    if dtype in ("float32", "complex64") or torch_sqrt_is_ieee():
        return TOLERANCES[dtype]
    return dict(rtol=1e-6, atol=1e-9)


@functools.lru_cache(maxsize=None)
def load_reference(path: str) -> dict:
    """The arrays of a committed reference ``.npz`` (loaded once per process,
    never unpickled); callers must not modify them."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
