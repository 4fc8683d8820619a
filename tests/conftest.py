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
def load_reference(path: str) -> dict:
    """The arrays of a committed reference ``.npz`` (loaded once per process,
    never unpickled); callers must not modify them."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
