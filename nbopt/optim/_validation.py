"""Hyper-parameter checks shared by the API classes, with torch's messages.

NumPy stands in for torch here: a 1-element ``ndarray`` is what torch calls a
Tensor hyper-parameter (a Tensor ``lr``), and NumPy floating scalars count as
floats.
"""
from __future__ import annotations

import numpy as np


def is_tensor(x) -> bool:
    return isinstance(x, np.ndarray)


def is_float(x) -> bool:
    return isinstance(x, (float, np.floating))


def check_tensor_lr(lr) -> None:
    if is_tensor(lr) and lr.size != 1:
        raise ValueError("Tensor lr must be 1-element")


def check_nonnegative(value, what: str) -> None:
    """``not 0 <= value`` -> ``ValueError("Invalid {what}: {value}")`` (NaN fails)."""
    if not 0.0 <= value:
        raise ValueError(f"Invalid {what}: {value}")


def check_beta(beta, index: int) -> None:
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def check_fused_flags(fused, foreach, differentiable) -> None:
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def squeeze_scalar(x):
    """torch's ``_to_scalar``: a 1-element array becomes 0-d, other values pass."""
    if is_tensor(x) and x.ndim != 0 and x.size == 1:
        return x.reshape(())
    return x


FLAGS_DOC = """\
    foreach, fused, capturable, differentiable : optional
        Stored in the param groups, as torch's.  Where one of them makes
        torch compute its per-step scalars differently, nbopt computes them
        as that path does (see :ref:`torch-flags`); fused still rejects ``differentiable``
        and ``foreach=True`` with torch's errors."""
