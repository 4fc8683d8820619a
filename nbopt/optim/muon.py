"""``nbopt.Muon`` (torch.optim.Muon): momentum orthogonalised by a bfloat16
Newton–Schulz iteration, for 2-D parameters."""
from __future__ import annotations

import operator
from typing import Callable

import numpy as np

from ..engine import check_grad_matches, check_state_array, param_where
from ..optimizer import Optimizer
from ..parameter import DeviceParameter, is_device_array, is_sparse_grad
from ._validation import check_tensor_lr, is_tensor, squeeze_scalar

__all__ = ["Muon"]

# Keller Jordan's constants, as torch.optim._muon
EPS = 1e-7
DEFAULT_A = 3.4445
DEFAULT_B = -4.7750
DEFAULT_C = 2.0315
DEFAULT_NS_STEPS = 5


def _size(shape) -> str:
    """torch's ``p.size()`` in a message, for an array shape."""
    return f"torch.Size({list(shape)})"


class Muon(Optimizer):
    r"""Muon, as ``torch.optim.Muon``: momentum whose update is orthogonalised
    by a Newton–Schulz iteration, for 2-D parameters.

    For each parameter :math:`\theta` (an :math:`m \times n` matrix) with
    gradient :math:`g` and momentum buffer :math:`B` (zeros at first):

    .. math::

        B &\leftarrow B + (1-\mu)(g - B) \\
        U &= \begin{cases} g + \mu (B - g) & \text{nesterov} \\
                           B & \text{otherwise}\end{cases} \\
        X_0 &= \frac{U}{\max(\lVert U\rVert_F, \epsilon)}
              \quad (U^\top \text{ when } m > n) \\
        A_k &= X_k X_k^\top,\qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k \qquad (k < \text{ns\_steps}) \\
        \theta &\leftarrow \theta\,(1 - \gamma\lambda) - \gamma'\, O,
              \qquad O = X_{\text{ns\_steps}} \ (\text{transposed back})

    with :math:`(a, b, c)` = ``ns_coefficients`` and the adjusted learning rate
    :math:`\gamma' = \gamma\sqrt{\max(1, m/n)}` (``adjust_lr_fn`` None or
    ``"original"``, Keller Jordan's) or :math:`0.2\,\gamma\sqrt{\max(m, n)}`
    (``"match_rms_adamw"``, Moonshot's: the update's RMS matches AdamW's, so
    AdamW's lr and weight decay carry over).  Weight decay is decoupled and
    uses the unadjusted :math:`\gamma`.  The iteration does not converge to
    the orthogonal factor :math:`UV^\top` of :math:`U = USV^\top` but to
    :math:`US'V^\top` with :math:`S'_{ii}` roughly in (0.5, 1.5), which is
    what Muon wants.

    **Precision.**  As in torch, the iteration runs in bfloat16: :math:`X_0`
    is the update rounded to bfloat16, and every product is accumulated in
    float32 and rounded to bfloat16.  NumPy has no bfloat16, so nbopt holds
    bfloat16 values in float32 arrays and rounds with compiled
    round-to-nearest-even on the bit patterns
    (:func:`nbopt.kernels.muon.round_bf16`).  A bfloat16 iteration amplifies
    any different rounding, so the matrix products are compiled kernels that
    add in torch's order on x86-64 CPUs (oneDNN's AMX tiles, its AVX512-BF16
    kernel for fewer than 8 rows, torch's fallback loops for products of at
    most 4096 multiply-adds; the norm is torch's 8-way float32 sum: see
    :mod:`nbopt.kernels.muon`): ``round_bf16`` of a float32 BLAS product of
    the same bfloat16 matrices leaves updates of 1024 x 1024 matrices 1.4 %
    of their largest entry away from torch's, as far as torch is from the
    exact float64 iteration (1.5 to 2.7 %).  Measured against torch 2.13 on
    an x86-64 CPU with AMX-BF16: bit-identical parameters and momentum
    buffers over 20 steps of every option set torch's tests use, float32 and
    float64 (``tests/test_muon.py``), bit-identical Newton–Schulz results up
    to 1024 x 1024, and bit-identical steps in 800 random shapes up to
    300 x 300.  Not reproduced: oneDNN's cache blocking of long sums (K above
    about 1000, by shape, layout and cache size) and its tile choice for
    sides that are not multiples of 32 in larger matrices; there some
    products differ in their last bit, and the update stays within bfloat16
    noise of torch's (0.1 to 0.6 % of its largest entry in the random shapes
    up to 1100 x 1100 that differed).  On CPUs where torch takes another
    bfloat16 path (no AMX) the same noise applies.

    The momentum, the conversion to bfloat16, the normalisation and the
    update are compiled element-wise loops (torch's ``lerp`` and FMA
    rounding); the update :math:`O` enters the parameter exactly (bfloat16
    values are exact in float32 and float64).

    Parameters
    ----------
    params : iterable
        2-D parameters (:class:`nbopt.Parameter`, float32 or float64) or dicts
        defining parameter groups.  Muon is for the weight matrices of hidden
        layers; optimize biases, embeddings and other parameters with a
        standard method such as AdamW.
    lr : float or 1-element ndarray, default 1e-3
        Learning rate :math:`\gamma`.
    weight_decay : float, default 0.1
        Decoupled weight decay :math:`\lambda`.
    momentum : float, default 0.95
        Momentum factor :math:`\mu`.
    nesterov : bool, default True
        Nesterov momentum.
    ns_coefficients : (float, float, float), default (3.4445, -4.7750, 2.0315)
        Coefficients :math:`(a, b, c)` of the Newton–Schulz polynomial.
    eps : float, default 1e-7
        Floor of the Frobenius norm the update is divided by.
    ns_steps : int, default 5
        Newton–Schulz iterations (fewer than 100).
    adjust_lr_fn : None, "original" or "match_rms_adamw", default None
        Learning-rate adjustment for the matrix shape (None is "original").

    Raises
    ------
    ValueError
        torch's messages: invalid hyper-parameters, a parameter that is not
        2-D (``"Muon only supports 2D parameters whereas we found a parameter
        with size: torch.Size([2, 3, 4])"``), and at ``step`` ``ns_steps >=
        100`` or ``ns_coefficients`` not of length 3.
    RuntimeError
        At ``step``, for complex parameters or sparse gradients (torch's
        messages), and gradients of the wrong shape or dtype.

    Notes
    -----
    GPU parameters (:class:`nbopt.DeviceParameter`) are stepped on their
    device (``nbopt.optim._muon_cuda``): the momentum buffer bit for bit the
    CPU path's, the update within bfloat16 noise (a few % of its largest
    entry) of the CPU path with ``MUON_PRODUCTS = "blas"``.

    Every gradient and option is validated before anything changes.

    State
    -----
    ``momentum_buffer`` (shaped like the parameter), created at the
    parameter's first step with a gradient.  No ``step`` count, as in torch.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> w = nbopt.Parameter(np.array([[3, 1, 0], [1, 2, 0], [0, 0, .5], [1, 0, 1]], np.float32))
    >>> opt = nbopt.Muon([w], lr=0.02, weight_decay=0.0)
    >>> w.grad = np.array(w)                   # the gradient of sum(w**2) / 2
    >>> before = np.array(w)
    >>> opt.step()
    >>> sorted(opt.state[w])
    ['momentum_buffer']
    >>> lr_adj = 0.02 * np.sqrt(4 / 3)         # lr * sqrt(max(1, rows / cols))
    >>> np.round(np.linalg.svd(w.grad, compute_uv=False), 2)     # the gradient's directions...
    array([3.73, 1.54, 0.99], dtype=float32)
    >>> np.round(np.linalg.svd((before - w) / lr_adj, compute_uv=False), 2)   # ...evened out
    array([1.02, 0.73, 0.68])

    References
    ----------
    Keller Jordan et al., "Muon: An optimizer for hidden layers in neural
    networks", 2024, https://kellerjordan.github.io/posts/muon/.
    Jingyuan Liu et al., "Muon is Scalable for LLM Training", 2025,
    https://arxiv.org/abs/2502.16982.
    """

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(DEFAULT_A, DEFAULT_B, DEFAULT_C), eps=EPS,
                 ns_steps=DEFAULT_NS_STEPS, adjust_lr_fn=None):
        check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 <= momentum:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = {
            "lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
            "ns_coefficients": ns_coefficients, "eps": eps, "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        self._workspaces: dict = {}
        super().__init__(params, defaults)
        for gi, group in enumerate(self.param_groups):
            for pos, p in enumerate(group["params"]):
                if p.ndim != 2:
                    raise ValueError("Muon only supports 2D parameters whereas we found a "
                                     f"parameter with size: {_size(p.shape)}")

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_workspaces", {})

    def __getstate__(self) -> dict:
        return super().__getstate__()

    # -- validation -------------------------------------------------------------------
    def _check_loaded_state(self, param, value, where: str, group: dict) -> None:
        if "momentum_buffer" in value:
            check_state_array("loaded state", "momentum_buffer", where, value["momentum_buffer"],
                              param)

    def _check_group(self, gi: int, group: dict):
        """The group's options as the step uses them (torch's errors for bad
        ones, raised before anything changes); returns the lr."""
        lr = squeeze_scalar(group["lr"])
        for key in ("lr", "weight_decay", "momentum", "eps"):
            value = group[key]
            if not (isinstance(value, (int, float, np.integer, np.floating))
                    or (is_tensor(value) and value.size == 1)) or isinstance(value, bool):
                raise TypeError(f"param_groups[{gi}][{key!r}] must be a number, "
                                f"got {type(value).__name__} {value!r}")
        steps = group["ns_steps"]
        if steps >= 100:
            raise ValueError("Number of steps must be less than 100 for computational "
                             "efficiency")
        operator.index(steps)      # range(ns_steps) in torch: a TypeError for a float
        coefficients = group["ns_coefficients"]
        if len(coefficients) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        for v in coefficients:
            float(v)
        return lr

    def _check_param(self, gi: int, pos: int, p, g):
        where = param_where(gi, pos)
        if p.dtype.kind == "c":
            raise RuntimeError("Muon does not support complex parameters")
        if is_sparse_grad(g):
            raise RuntimeError("Muon does not support sparse gradients")
        if isinstance(p, DeviceParameter):
            from ..engine_cuda import check_device_grad

            if p.dtype not in (np.float32, np.float64):
                raise TypeError(f"{where}: Muon supports float32 and float64 parameters, got "
                                f"dtype {p.dtype}")
            _, c_contiguous, f_contiguous = check_device_grad(where, p, p.device_index, g)
            if not (c_contiguous or f_contiguous):
                raise ValueError(f"{where}: the gradient of a CUDA parameter must be C- or "
                                 "F-contiguous; pass a contiguous copy")
            state = self.state.get(p)
            if state and "momentum_buffer" in state:
                check_state_array("state", "momentum_buffer", where, state["momentum_buffer"], p)
            return
        if is_device_array(g):
            raise RuntimeError(f"{where}: expected the gradient on the parameter's device "
                               "(cpu), got a CUDA array")
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{where}: grad must be a numpy array or None, got "
                            f"{type(g).__name__}")
        if p.dtype not in (np.float32, np.float64):
            raise TypeError(f"{where}: Muon supports float32 and float64 parameters, got dtype "
                            f"{p.dtype}")
        check_grad_matches(where, p, g.shape, g.dtype)
        if g.ndim != 2:
            raise ValueError("Param gradient must be a 2D matrix")
        state = self.state.get(p)
        if state and "momentum_buffer" in state:
            check_state_array("state", "momentum_buffer", where, state["momentum_buffer"], p)

    @staticmethod
    def _buffer(p, g, state) -> np.ndarray:
        """``state["momentum_buffer"]``, created (zeros laid out like the
        gradient, as torch's ``zeros_like(grad)``) or replaced by a converted
        copy when it cannot be updated in place (another dtype, read-only,
        not an ndarray)."""
        buf = state.get("momentum_buffer")
        order = "F" if (g.flags.f_contiguous and not g.flags.c_contiguous) else "C"
        if buf is None:
            buf = state["momentum_buffer"] = np.zeros(p.shape, p.dtype, order=order)
        elif not (type(buf) is np.ndarray and buf.dtype == p.dtype and buf.flags.writeable):
            if is_device_array(buf):        # a device optimizer's state dict
                from ..kernels._cuda import to_host

                buf = to_host(buf)
            buf = state["momentum_buffer"] = np.array(buf, dtype=p.dtype, order=order)
        return buf

    def _workspace(self, shape):
        from ..kernels.muon import Workspace

        key = (min(shape), max(shape))
        ws = self._workspaces.get(key)
        if ws is None:
            ws = self._workspaces[key] = Workspace(*key)
        return ws

    def _device_workspace(self, p):
        from ._muon_cuda import DeviceWorkspace

        key = (min(p.shape), max(p.shape), p.device_index)
        ws = self._workspaces.get(key)
        if ws is None:
            ws = self._workspaces[key] = DeviceWorkspace(*key)
        return ws

    # -- step ------------------------------------------------------------------------
    def step(self, closure: Callable[[], float] | None = None):
        """Perform a single optimization step.

        Every gradient and option is validated first; then each parameter
        with a gradient is updated in place.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; called once before the
            update, and its value is returned.
        """
        from ..kernels.muon import muon_step, products_mode

        loss = None
        if closure is not None:
            loss = closure()
        products = products_mode()
        work = []
        for gi, group in enumerate(self.param_groups):
            members = [(pos, p) for pos, p in enumerate(group["params"]) if p.grad is not None]
            if not members:
                continue
            for pos, p in members:
                self._check_param(gi, pos, p, p.grad)
            lr = self._check_group(gi, group)
            work.extend((p, group, lr) for _, p in members)
        for p, group, lr in work:
            g = p.grad
            if isinstance(p, DeviceParameter):
                from ._muon_cuda import device_buffer, muon_step_device

                buf = device_buffer(p, g, self.state[p])
                muon_step_device(p, g, buf, self._device_workspace(p), group, lr)
                continue
            buf = self._buffer(p, g, self.state[p])
            muon_step(p, g, buf, self._workspace(p.shape), group, lr, products)
        return loss
