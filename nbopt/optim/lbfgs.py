"""``nbopt.LBFGS``: limited-memory BFGS with an optional strong-Wolfe line
search (torch.optim.LBFGS).

The control flow is torch's ``LBFGS.step`` and ``_strong_wolfe``, line for
line, on NumPy scalars of the flat vector's dtype where torch has 0-d tensors
(NumPy's promotion of such scalars with Python numbers is torch's for 0-d
tensors).  The whole-vector work (gathering the gradients, the two-loop
recursion, ``p += t d``) runs in the compiled passes of
:mod:`nbopt.kernels.lbfgs`; the closure is the user's Python.

The algorithm is written once, over a backend of flat-vector operations:
:class:`_FlatParams` (NumPy vectors, the CPU passes) or, when every parameter
is a :class:`nbopt.DeviceParameter` on one GPU,
:class:`nbopt.optim._lbfgs_cuda.DeviceFlatParams` (device vectors, the CUDA
passes, the same sums in the same order: the same bits).
"""
from __future__ import annotations

import sys
import sysconfig
from functools import partial
from typing import Callable

import numpy as np

from ..engine import check_grad_matches, param_where
from ..optimizer import Optimizer
from ..parameter import DeviceParameter, is_device_array
from ._validation import check_tensor_lr, is_tensor


class _LazyKernels:
    """nbopt.kernels.lbfgs imports Numba: it is loaded at first use, so that
    ``import nbopt`` stays light."""

    def __getattr__(self, name):
        from ..kernels import lbfgs

        return getattr(lbfgs, name)


_k = _LazyKernels()

__all__ = ["LBFGS"]


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _real_dtype(dtype: np.dtype) -> np.dtype:
    return np.finfo(dtype).dtype if dtype.kind == "c" else dtype


def _flat_copy(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A new C-order flat copy of ``a``'s real view (torch's
    ``view_as_real(a).view(-1)`` order), in ``dtype``."""
    a = np.ascontiguousarray(a.view(np.ndarray))
    if a.dtype.kind == "c":
        a = a.view(_real_dtype(a.dtype))
    return a.reshape(-1).astype(dtype, copy=True)


def _assign_flat(p: np.ndarray, flat: np.ndarray) -> None:
    """Write C-order real values ``flat`` into parameter ``p`` in place."""
    pv = p.view(np.ndarray)
    if p.dtype.kind == "c":
        values = flat.astype(_real_dtype(p.dtype)).view(p.dtype).reshape(p.shape)
    else:
        values = flat.reshape(p.shape)
    np.copyto(pv, values, casting="unsafe")


def _from_state(x):
    """A stored 0-d array (torch's 0-d tensor) as a NumPy scalar; numbers pass."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return x[()]
    return x


def _to_state(x):
    """A NumPy scalar as the 0-d array that stands in for torch's 0-d tensor."""
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x


def _is_real_scalar(x) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, (int, float)):
        return True
    if isinstance(x, (np.ndarray, np.generic)):
        return np.ndim(x) == 0 and np.asarray(x).dtype.kind in "iuf"
    return False


def _refcount(a) -> int:
    return sys.getrefcount(a)


def _unshared_refcount() -> int:
    a = np.empty(1)
    return _refcount(a)


# What _refcount(local) reports for an array that only a local variable holds,
# measured the same way as it is used, so that it holds on any interpreter.
# Free-threaded builds defer reference counts: there nothing is reused.
_UNSHARED = -1 if sysconfig.get_config_var("Py_GIL_DISABLED") else _unshared_refcount()


@np.errstate(all="ignore")   # torch's tensor maths is silent on inf/nan
def _reciprocal(x):
    return 1.0 / x


@np.errstate(all="ignore")
def _divide(a, b):
    return a / b


def _vector_dtype(params: list) -> np.dtype:
    """The flat vector's dtype (the parameters' real dtypes promoted), after
    checking that LBFGS can optimize every parameter."""
    for i, p in enumerate(params):
        if p.dtype.kind not in "fc":
            raise TypeError(f"{param_where(0, i)}: LBFGS can only optimize floating point "
                            f"and complex parameters, got dtype {p.dtype}")
    reals = [_real_dtype(p.dtype) for p in params]
    for i, r in enumerate(reals):
        if r not in (np.float32, np.float64):
            raise TypeError(f"{param_where(0, i)}: LBFGS supports float32, float64, "
                            f"complex64 and complex128 parameters, got dtype "
                            f"{params[i].dtype}")
    return np.result_type(*reals)


def _device_of(p) -> str:
    return p.device if isinstance(p, DeviceParameter) else "cpu"


def _check_one_device(params: list) -> None:
    """LBFGS works on all its parameters as one flat vector: they must be on
    one device (torch fails in ``torch.cat`` with this message)."""
    if not params:
        return
    first = _device_of(params[0])
    for i, p in enumerate(params):
        other = _device_of(p)
        if other != first:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two "
                f"devices, {first} and {other}! (LBFGS optimizes its parameters as one flat "
                f"vector: {param_where(0, 0)} is on {first}, {param_where(0, i)} on {other})")


def _make_flat(params: list):
    """The backend of flat-vector operations for ``params``: NumPy vectors on
    the CPU, device vectors for parameters on a GPU."""
    _check_one_device(params)
    if params and isinstance(params[0], DeviceParameter):
        from ._lbfgs_cuda import DeviceFlatParams

        return DeviceFlatParams(params, _vector_dtype(params))
    return _FlatParams(params)


class _FlatParams:
    """The parameters of the single group as one flat real vector.

    Parameters whose real dtype is the vector's and that are C-contiguous are
    reached in place through a table of addresses; any other (Fortran-ordered,
    or of another dtype when dtypes are mixed) goes through a temporary C-order
    copy that is written back after the pass.

    Flat vectors come from a small pool of spare buffers: writing a freshly
    allocated 8 MB array costs 20x more than reusing one (page faults;
    measured 9 ms vs 0.4 ms here), and an iteration needs several.
    """

    MAX_SPARE = 6   # a steady iteration frees and takes back at most four

    def __init__(self, params: list):
        self.params = list(params)
        self.dtype = _vector_dtype(self.params)
        reals = [_real_dtype(p.dtype) for p in self.params]
        self.scalar = self.dtype.type
        self.sizes = np.array([p.size * (2 if p.dtype.kind == "c" else 1) for p in self.params],
                              np.int64)
        self.offsets = np.zeros(len(self.params), np.int64)
        if len(self.params) > 1:
            np.cumsum(self.sizes[:-1], out=self.offsets[1:])
        self.total = int(self.sizes.sum())
        self.direct = [r == self.dtype and p.flags.c_contiguous for p, r in zip(self.params, reals)]
        self.all_direct = all(self.direct)
        self.table = np.zeros((len(self.params), 3), np.int64)
        self.table[:, 0] = [_address(p) if ok else 0 for p, ok in zip(self.params, self.direct)]
        self.table[:, 1] = self.offsets
        self.table[:, 2] = self.sizes
        self.chunks = _k.table_chunks(self.sizes)
        # a parameter listed twice must not be written by two threads at once
        self.serial = len({id(p) for p in self.params}) != len(self.params)
        self.empty = np.empty(0, self.dtype)
        self.spare: list = []

    def _kernel(self, kernels):
        return kernels[0] if self.serial else _k.pick(kernels, self.total)

    def vector(self, a):
        """A stored flat vector in this dtype (the same object when it already is)."""
        if a is None:
            return None
        a = np.ascontiguousarray(a, dtype=self.dtype)
        return a if a.ndim == 1 else a.reshape(-1)

    def new(self) -> np.ndarray:
        return self.spare.pop() if self.spare else np.empty(self.total, self.dtype)

    @staticmethod
    def copy(x: np.ndarray) -> np.ndarray:
        return x.copy()

    @staticmethod
    def assign(dst: np.ndarray, src: np.ndarray) -> None:
        dst[...] = src

    def free(self, a) -> None:
        """Give back a vector that nothing else references any more (the
        caller's promise) for :meth:`new` to hand out again."""
        if (len(self.spare) < self.MAX_SPARE and a.base is None and a.size == self.total
                and a.dtype == self.dtype and a.flags.c_contiguous and a.flags.writeable
                and not any(a is b for b in self.spare)):
            self.spare.append(a)

    # -- parameters ------------------------------------------------------------
    def _param_table(self):
        if self.all_direct:
            return self.table, ()
        table = self.table.copy()
        temps = []
        for i, ok in enumerate(self.direct):
            if not ok:
                buf = _flat_copy(self.params[i], self.dtype)
                table[i, 0] = _address(buf)
                temps.append((i, buf))
        return table, temps

    def _write_back(self, temps) -> None:
        for i, buf in temps:
            _assign_flat(self.params[i], buf)

    def add(self, t, d: np.ndarray, x=None):
        """``p += t * d`` for every parameter, or with ``x`` (a flat copy of
        parameters, :meth:`clone`) ``p = x + t * d`` (the bits of
        ``set(x)``, then ``add(t, d)``); returns ``max|d * t|``."""
        if x is not None and (self.serial or not self.all_direct):
            # a parameter listed twice (set and add see it once per row) or
            # one reached through a copy: the two passes as they are
            self.set(x)
            x = None
        table, temps = self._param_table()
        mx = self._kernel(_k.lbfgs_add_cpu)(table, self.chunks, self.scalar(t), d,
                                            self.empty if x is None else x)
        self._write_back(temps)
        return self.scalar(mx)

    def clone(self) -> np.ndarray:
        out = self.new()
        table, _temps = self._param_table()
        self._kernel(_k.lbfgs_copy_cpu)(table, self.chunks, out, False)
        return out

    def set(self, x: np.ndarray) -> None:
        table, temps = self._param_table()
        self._kernel(_k.lbfgs_copy_cpu)(table, self.chunks, x, True)
        self._write_back(temps)

    # -- gradients -------------------------------------------------------------
    def gather(self, v=None, stats=True):
        """The flat gradient (a new array) and, with ``stats``, its ``max|g|``,
        ``sum|g|`` and ``g . v``, as scalars of the vector's dtype."""
        table = self.table.copy()
        keep = []
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                table[i, 0] = 0
                continue
            if not isinstance(g, np.ndarray):
                # a sparse gradient is densified, as torch's to_dense()
                if getattr(g, "is_sparse", False) and hasattr(g, "to_dense"):
                    g = g.to_dense()
                elif type(g).__module__.startswith("scipy.sparse") and hasattr(g, "toarray"):
                    g = np.asarray(g.toarray())
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{param_where(0, i)}: grad must be a numpy array or None, "
                                f"got {type(g).__name__}")
            check_grad_matches(param_where(0, i), p, g.shape, g.dtype)
            if self.direct[i] and g.flags.c_contiguous:
                table[i, 0] = _address(g)
            else:
                buf = _flat_copy(g, self.dtype)
                keep.append(buf)
                table[i, 0] = _address(buf)
        out = self.new()
        mx, sm, dot = self._kernel(_k.lbfgs_gather_cpu)(
            table, self.chunks, out, self.empty if v is None else v, stats)
        del keep   # the copies had to live until the kernel had read them
        s = self.scalar
        return out, s(mx), s(sm), s(dot)

    # -- flat-vector passes ----------------------------------------------------
    def memory(self, g, prev, d, t, y, s, q=None):
        """The curvature pair ``y = g - prev``, ``s = d t`` and ``prev = g``;
        returns ``(y . s, y . y, s . q)``.  With ``q`` the pass also opens
        the two-loop recursion for the new pair (``q = -g``): its ``s . q``
        is what :meth:`two_loop` takes as ``first`` (else None)."""
        ys, yy, sq = _k.pick(_k.lbfgs_memory_cpu, self.total)(
            g, prev, d, self.scalar(t), y, s, self.empty if q is None else q)
        return self.scalar(ys), self.scalar(yy), None if q is None else self.scalar(sq)

    def two_loop(self, q, g, old_dirs, old_stps, ro, al, H_diag, first=None):
        """The two-loop recursion into ``q`` (see :func:`_two_loop_passes`), in
        one compiled call that loops over the history (the same bits)."""
        dtype = self.dtype
        m = len(old_dirs)
        hist = self._history_table(old_dirs, old_stps)
        if (hist is None or len(al) < m
                or not all(isinstance(r, (np.ndarray, np.generic)) and r.dtype == dtype
                           for r in ro)):
            # a hand-edited state: vectors the table cannot hold, ro not in the
            # vector's dtype (Python numbers: NumPy's promotion decides each
            # product) or al too short (an IndexError part way, as torch)
            return _two_loop_passes(self, q, g, old_dirs, old_stps, ro, al, H_diag, first)
        al_m = np.empty(m, dtype)
        gtd = _k.pick(_k.lbfgs_two_loop_cpu, self.total)(
            q, g, hist, np.array(ro, dtype), al_m, self.scalar(H_diag),
            0.0 if first is None else float(first), first is not None)
        al[:m] = [np.asarray(a) for a in al_m]      # state["al"]: 0-d arrays, as torch's
        return self.scalar(gtd)

    def _history_table(self, old_dirs, old_stps):
        """The int64 ``(m, 2)`` address table of the pairs (``y_i``, ``s_i``),
        or None unless every one is a C-contiguous flat vector of this size
        and dtype (:meth:`vector` makes them so; a state edited between
        steps might not be) and the lists are as long."""
        m = len(old_dirs)
        if len(old_stps) != m:
            return None
        hist = np.empty((m, 2), np.int64)
        for col, vectors in enumerate((old_dirs, old_stps)):
            for i, v in enumerate(vectors):
                if not (isinstance(v, np.ndarray) and v.dtype == self.dtype and v.ndim == 1
                        and v.size == self.total and v.flags.c_contiguous):
                    return None
                hist[i, col] = _address(v)
        return hist

    def pass_(self, x, u, a, h, v, mode):
        s = self.scalar
        dot = _k.pick(_k.lbfgs_pass_cpu, self.total)(
            x, u, s(a), s(h), self.empty if v is None else v, mode)
        return s(dot)

    def max_abs(self, x):
        mx, _ = _k.pick(_k.lbfgs_stats_cpu, self.total)(x)
        return self.scalar(mx)


def _two_loop_passes(flat, q, g, old_dirs, old_stps, ro, al, H_diag, first=None):
    """The two-loop recursion into ``q`` (the new direction ``d``), one
    ``flat.pass_`` per update, each fused with the dot product the next
    update needs; returns ``g . d``.  Fills ``al[:len(old_dirs)]``.

    ``first``: the opening update's ``s . q`` when it is done (``q = -g``,
    fused into ``flat.memory``), else None.  The order of the updates and
    the scalars' dtypes are torch's; ``_FlatParams.two_loop`` runs the same
    updates in one compiled call (the same bits), the device backend runs
    this.
    """
    num_old = len(old_dirs)
    if num_old == 0:
        return flat.pass_(q, g, 0, H_diag, g, _k.MODE_NEG_SCALE)
    if first is None:
        dot = flat.pass_(q, g, 0, 1, old_stps[num_old - 1], _k.MODE_NEG)
    else:
        dot = first
    for i in range(num_old - 1, -1, -1):
        al_i = dot * ro[i]
        al[i] = _to_state(al_i)
        if i > 0:
            dot = flat.pass_(q, old_dirs[i], -al_i, 1, old_stps[i - 1], _k.MODE_AXPY)
        else:
            # the last update of q, times H_diag: r (= d)
            dot = flat.pass_(q, old_dirs[0], -al_i, H_diag, old_dirs[0], _k.MODE_AXPY_SCALE)
    for i in range(num_old):
        be_i = dot * ro[i]
        nxt = old_dirs[i + 1] if i + 1 < num_old else g
        dot = flat.pass_(q, old_stps[i], _from_state(al[i]) - be_i, 1, nxt, _k.MODE_AXPY)
    return dot


@np.errstate(all="ignore")
def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    # torch's port of https://github.com/torch/optim/blob/master/polyinterp.lua
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    else:
        return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, d_norm, f, g, gtd, c1=1e-4, c2=0.9,
                  tolerance_change=1e-9, max_ls=25):
    # torch's port of https://github.com/torch/optim/blob/master/lswolfe.lua;
    # obj_func also returns g_new . d (fused with the gradient gather), and
    # gradients are fresh arrays that nothing writes to, so torch's clones of
    # them are not needed; d_norm may be a function, called when the zoom
    # phase (its only reader) starts.
    f_new, g_new, gtd_new = obj_func(x, t, d)
    ls_func_evals = 1

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break

        if abs(gtd_new) <= -c2 * gtd:
            bracket = [t]
            bracket_f = [f_new]
            bracket_g = [g_new]
            done = True
            break

        if gtd_new >= 0:
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break

        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))

        # next step
        t_prev = tmp
        f_prev = f_new
        g_prev = g_new
        gtd_prev = gtd_new
        f_new, g_new, gtd_new = obj_func(x, t, d)
        ls_func_evals += 1
        ls_iter += 1

    # reached max number of iterations?
    if ls_iter == max_ls:
        bracket = [0, t]
        bracket_f = [f, f_new]
        bracket_g = [g, g_new]

    # zoom phase: refine the bracket until a point satisfies the criteria
    if not done and ls_iter < max_ls and callable(d_norm):
        d_norm = d_norm()   # max|d|: only the zoom reads it
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        # line-search bracket is so small
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break

        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])

        # When t is within 10% of the bracket's length from one end, mark
        # insufficient progress; after two such steps in a row (or at an end)
        # move t to 10% away from the nearest end.
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        f_new, g_new, gtd_new = obj_func(x, t, d)
        ls_func_evals += 1
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than lowest point
            bracket[high_pos] = t
            bracket_f[high_pos] = f_new
            bracket_g[high_pos] = g_new
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                # Wolfe conditions satisfied
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos] = bracket[low_pos]
                bracket_f[high_pos] = bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]

            # new point becomes new low
            bracket[low_pos] = t
            bracket_f[low_pos] = f_new
            bracket_g[low_pos] = g_new
            bracket_gtd[low_pos] = gtd_new

    t = bracket[low_pos]
    f_new = bracket_f[low_pos]
    g_new = bracket_g[low_pos]
    return f_new, g_new, t, ls_func_evals


_VECTOR_KEYS = ("d", "prev_flat_grad")
_LIST_KEYS = ("old_dirs", "old_stps")


class LBFGS(Optimizer):
    r"""L-BFGS, as ``torch.optim.LBFGS`` (heavily inspired by minFunc).

    All parameters form one flat vector :math:`x` (complex parameters through
    their real view, a parameter without gradient contributes zeros).  Each
    iteration ``k`` of a :meth:`step` computes a direction from the gradient
    :math:`g_k` and the last ``m <= history_size`` curvature pairs
    :math:`s_i = t_i d_i`, :math:`y_i = g_{i+1} - g_i` (a pair is kept only
    when :math:`y_i^\top s_i > 10^{-10}`), by the two-loop recursion

    .. math::

        q &= -g_k, \qquad \rho_i = 1 / (y_i^\top s_i) \\
        \alpha_i &= \rho_i\, s_i^\top q, \quad q \leftarrow q - \alpha_i y_i
            \qquad (i = k-1, \dots, k-m) \\
        r &= H_0\, q, \qquad H_0 = \frac{y_{k-1}^\top s_{k-1}}{y_{k-1}^\top y_{k-1}} \\
        \beta_i &= \rho_i\, y_i^\top r, \quad r \leftarrow r + (\alpha_i - \beta_i) s_i
            \qquad (i = k-m, \dots, k-1) \\
        d_k &= r, \qquad x_{k+1} = x_k + t_k d_k

    (the very first iteration uses :math:`d = -g` and
    :math:`t = \min(1, 1/\lVert g\rVert_1)\,\mathrm{lr}`).  Without a line
    search :math:`t_k = \mathrm{lr}`; with ``line_search_fn="strong_wolfe"`` it
    is found by torch's bracketing and cubic-interpolation zoom (``c1=1e-4``,
    ``c2=0.9``, bracket tolerance ``1e-9``).  A step stops after ``max_iter``
    iterations or ``max_eval`` closure calls, when :math:`\max|g| \le`
    ``tolerance_grad``, when :math:`\max|t d| \le` ``tolerance_change``, when
    the loss changes by less than ``tolerance_change``, or when :math:`d` is
    not a descent direction (:math:`g^\top d > -` ``tolerance_change``).

    Parameters
    ----------
    params : iterable
        Parameters (:class:`nbopt.Parameter`); one parameter group only.
    lr : float or 1-element ndarray, default 1
        Learning rate (the initial step length of each iteration).
    max_iter : int, default 20
        Maximal number of iterations per :meth:`step`.
    max_eval : int, optional
        Maximal number of closure evaluations per :meth:`step`
        (default ``max_iter * 5 // 4``).
    tolerance_grad : float, default 1e-7
        Termination tolerance on first-order optimality (:math:`\max|g|`).
    tolerance_change : float, default 1e-9
        Termination tolerance on the change of the loss or of the parameters.
    history_size : int, default 100
        Number of curvature pairs kept.
    line_search_fn : {None, "strong_wolfe"}, default None
        Any other value raises ``RuntimeError`` at the first iteration that
        would use it, as in torch.

    State
    -----
    Global, on the first parameter (``state[params[0]]``), under torch's
    keys: ``func_evals`` and ``n_iter`` (ints, cumulative), ``d`` and
    ``prev_flat_grad`` (flat vectors), ``t`` and ``H_diag`` (numbers or 0-d
    arrays), ``old_dirs`` / ``old_stps`` (lists of the ``y`` / ``s`` vectors),
    ``ro`` (list of 0-d arrays), ``prev_loss`` (float) and ``al`` (list of
    ``history_size`` 0-d arrays or None).  ``state_dict()`` round-trips through
    :func:`nbopt.save` / :func:`nbopt.load`, and a resumed run continues bit
    for bit.

    Notes
    -----
    ``step(closure)`` requires the closure: it must recompute the loss, set
    every parameter's ``.grad`` and return the loss; it is called several
    times per step, and the loss of its first call is returned.  This is a
    memory-hungry algorithm: ``2 * history_size + 3`` flat vectors of the
    parameters' total size, plus up to 6 spare ones kept for reuse (writing a
    freshly allocated large array costs far more than reusing one).
    If the closure raises during the line search the parameters are put back
    where the line search started (torch leaves them at the trial point).

    GPU parameters (:class:`nbopt.DeviceParameter`, all on one device: mixed
    devices raise ``RuntimeError``, as torch's ``cat`` does) are optimized on
    their device: the closure assigns device gradients, and the flat vectors
    of the state (``d``, ``prev_flat_grad``, ``old_dirs``, ``old_stps``) are
    device arrays, updated by CUDA kernels whose sums are the CPU kernels'
    in the same order, so a GPU run equals the CPU run bit for bit.  The
    scalars (``t``, ``ro``, ``H_diag``, ...) stay on the host, which reads
    them to branch.  :func:`nbopt.save` stores the device arrays' host
    copies; loading host state into a GPU LBFGS puts it on the device (and
    device state into a CPU one, on the host).

    Examples
    --------
    Minimise :math:`\tfrac12 x^\top A x - b^\top x`:

    >>> import numpy as np, nbopt
    >>> from nbopt.optim.lbfgs import LBFGS
    >>> A = np.array([[3.0, 1.0], [1.0, 2.0]]); b = np.array([1.0, -1.0])
    >>> x = nbopt.Parameter(np.zeros(2))
    >>> opt = LBFGS([x], line_search_fn="strong_wolfe")
    >>> def closure():
    ...     x.grad = A @ x - b
    ...     return 0.5 * x @ A @ x - b @ x
    >>> loss = opt.step(closure)
    >>> np.allclose(x, np.linalg.solve(A, b))
    True
    >>> opt.state[x]["func_evals"] <= 25
    True

    References
    ----------
    Liu & Nocedal, "On the limited memory BFGS method for large scale
    optimization", Mathematical Programming 45, 1989.
    Nocedal & Wright, "Numerical Optimization", 2nd ed., Springer 2006
    (algorithms 7.4 and 3.5-3.6).
    M. Schmidt, minFunc, https://www.cs.ubc.ca/~schmidtm/Software/minFunc.html
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        super().__init__(params, defaults)

        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        _check_one_device(self.param_groups[0]["params"])

        self._params = self.param_groups[0]["params"]
        self._numel_cache = None
        self._flat_cache = None

    def __setstate__(self, state):
        super().__setstate__(state)
        # torch keeps these attributes out of pickles and loses them; rebuilt here
        self._params = self.param_groups[0]["params"]
        self._numel_cache = None
        self._flat_cache = None

    def _numel(self) -> int:
        if self._numel_cache is None:
            self._numel_cache = sum(2 * p.size if p.dtype.kind == "c" else p.size
                                    for p in self._params)
        return self._numel_cache

    def _flat(self):
        """The backend of flat-vector operations (CPU or device), rebuilt when
        the parameter list changes."""
        key = tuple(map(id, self._params))
        cached = self._flat_cache
        if cached is None or cached[0] != key:
            cached = self._flat_cache = (key, _make_flat(self._params))
        return cached[1]

    def _cast(self, param, value, key=None):
        """The loaded global state takes the flat vector's dtype.

        torch casts it to the first parameter's dtype, which is the same
        unless dtypes are mixed (a float32 first parameter would then round
        the float64 history, and a resumed run would not continue as the
        uninterrupted one); complex first parameters keep it unchanged in
        both.
        """
        params = self.param_groups[0]["params"] if self.param_groups else ()
        if not params or param is not params[0] or not isinstance(value, dict):
            return Optimizer._cast(param, value, key)
        reals = [_real_dtype(p.dtype) for p in params]
        dtype = np.result_type(*reals) if all(r.kind == "f" for r in reals) else None
        device = params[0].device_index if isinstance(params[0], DeviceParameter) else None
        return {k: _cast_to(v, dtype, device) for k, v in value.items()}

    def _check_loaded_state(self, param, value, where: str, group: dict) -> None:
        if not self.param_groups or param is not self.param_groups[0]["params"][0]:
            return
        numel = sum(2 * p.size if p.dtype.kind == "c" else p.size
                    for p in self.param_groups[0]["params"])

        def vector(x, name):
            shape, dtype = _shape_dtype(x)
            if shape is None or len(shape) != 1 or shape[0] != numel or dtype.kind not in "f":
                raise ValueError(f"loaded state {name} for {where} must be a flat float "
                                 f"array of {numel} elements (the parameters' total size), "
                                 f"got {_describe(x)}")

        for key in ("func_evals", "n_iter"):
            if key in value and (isinstance(value[key], bool)
                                 or not isinstance(value[key], (int, np.integer))):
                raise ValueError(f"loaded state {key!r} for {where} must be an int, "
                                 f"got {value[key]!r}")
        for key in _VECTOR_KEYS:
            if value.get(key) is not None:
                vector(value[key], repr(key))
        lengths = {}
        for key in _LIST_KEYS + ("ro", "al"):
            if value.get(key) is None:
                continue
            if not isinstance(value[key], list):
                raise ValueError(f"loaded state {key!r} for {where} must be a list, "
                                 f"got {type(value[key]).__name__}")
            lengths[key] = len(value[key])
        for key in _LIST_KEYS:
            for i, x in enumerate(value.get(key) or ()):
                vector(x, f"{key!r}[{i}]")
        for x in value.get("ro") or ():
            if not _is_real_scalar(x):
                raise ValueError(f"loaded state 'ro' for {where} must hold real scalars, "
                                 f"got {x!r}")
        for x in value.get("al") or ():
            if x is not None and not _is_real_scalar(x):
                raise ValueError(f"loaded state 'al' for {where} must hold real scalars "
                                 f"or None, got {x!r}")
        sizes = {lengths[k] for k in _LIST_KEYS + ("ro",) if k in lengths}
        if len(sizes) > 1:
            raise ValueError(f"loaded state for {where}: 'old_dirs', 'old_stps' and 'ro' "
                             f"must have the same length, got "
                             f"{ {k: lengths[k] for k in _LIST_KEYS + ('ro',) if k in lengths} }")
        for key in ("t", "H_diag", "prev_loss"):
            if value.get(key) is not None and not _is_real_scalar(value[key]):
                raise ValueError(f"loaded state {key!r} for {where} must be a real scalar, "
                                 f"got {value[key]!r}")

    def step(self, closure: Callable[[], float]):
        """Perform one optimization step: up to ``max_iter`` L-BFGS iterations.

        Parameters
        ----------
        closure : callable
            Re-evaluates the model: sets every parameter's ``.grad`` and returns
            the loss.  Required.

        Returns
        -------
        The value of the closure's first call in this step.
        """
        if len(self.param_groups) != 1:
            raise AssertionError(
                f"Expected exactly one param_group, but got {len(self.param_groups)}")

        group = self.param_groups[0]
        lr = group["lr"]
        lr = lr.reshape(())[()] if is_tensor(lr) else lr
        max_iter = group["max_iter"]
        max_eval = group["max_eval"]
        tolerance_grad = group["tolerance_grad"]
        tolerance_change = group["tolerance_change"]
        line_search_fn = group["line_search_fn"]
        history_size = group["history_size"]

        flat = self._flat()
        k = _k

        # LBFGS has only global state, kept on the first parameter (as torch)
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        # evaluate initial f(x) and df/dx
        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        flat_grad, g_max, g_sum, _ = flat.gather()
        state["func_evals"] += 1
        opt_cond = g_max <= tolerance_grad

        # optimal condition
        if opt_cond:
            flat.free(flat_grad)
            return orig_loss

        d = flat.vector(state.get("d"))
        t = _from_state(state.get("t"))
        old_dirs = state.get("old_dirs")
        old_stps = state.get("old_stps")
        ro = state.get("ro")
        H_diag = _from_state(state.get("H_diag"))
        prev_flat_grad = flat.vector(state.get("prev_flat_grad"))
        prev_loss = state.get("prev_loss")
        for vectors in (old_dirs, old_stps):
            if vectors:
                # (a comprehension: a loop variable left holding the newest s
                # would keep it out of the pool when it is dropped)
                vectors[:] = [flat.vector(v) for v in vectors]

        # Pool bookkeeping (no effect on the numbers): flat gradients and the
        # line search's copy of the parameters never leave this function, and
        # a direction made in this step is not in the state yet, so all of
        # them go back to the pool once the recursion no longer needs them.
        d_is_ours = False

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # compute the descent direction (and g . d, fused into its last pass)
            if state["n_iter"] == 1:
                d = flat.new()
                d_is_ours = True
                gtd = flat.pass_(d, flat_grad, 0, 1, flat_grad, k.MODE_NEG)
                old_dirs = []
                old_stps = []
                ro = []
                H_diag = 1
                if prev_flat_grad is None:
                    prev_flat_grad = flat.copy(flat_grad)
                else:
                    flat.assign(prev_flat_grad, flat_grad)
            else:
                # update memory; this pass also copies g into prev_flat_grad and
                # opens the two-loop recursion for the new pair (q = -g)
                y = flat.new()
                s = flat.new()
                q = flat.new()
                ys, yy, first = flat.memory(flat_grad, prev_flat_grad, d, t, y, s, q)
                if d_is_ours:
                    flat.free(d)   # s = d t was its last use
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        # shift history by one (limited-memory)
                        y_old = old_dirs.pop(0)
                        s_old = old_stps.pop(0)
                        ro.pop(0)
                        # reused only if no one else (a kept state_dict) holds them
                        if _refcount(y_old) <= _UNSHARED:
                            flat.free(y_old)
                        if _refcount(s_old) <= _UNSHARED:
                            flat.free(s_old)
                        del y_old, s_old
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(_to_state(_reciprocal(ys)))
                    # scale of the initial Hessian approximation
                    H_diag = _divide(ys, yy)
                else:
                    flat.free(y)
                    flat.free(s)
                    first = None   # the recursion opens with the last kept pair

                if "al" not in state:
                    state["al"] = [None] * history_size

                # two-loop recursion (its opening update already done when the
                # new pair was kept)
                gtd = flat.two_loop(q, flat_grad, old_dirs, old_stps, ro, state["al"], H_diag,
                                    first)
                d = q
                d_is_ours = True
            prev_loss = loss

            # compute step length
            if state["n_iter"] == 1:
                t = min(1.0, _reciprocal(g_sum)) * lr
            else:
                t = lr

            # directional derivative is below tolerance
            if gtd > -tolerance_change:
                break

            ls_func_evals = 0
            if line_search_fn is not None:
                if line_search_fn != "strong_wolfe":
                    raise RuntimeError("only 'strong_wolfe' is supported")
                x_init = flat.clone()
                # the gradients evaluated, with their max|g| (from the gather)
                grads = [(flat_grad, g_max)]
                trial = []   # (t, max|d t|) of the point the parameters are at

                def obj_func(x, t, d):
                    loss, g, gtd, g_max, step_max = self._directional_evaluate(
                        closure, flat, x, t, d)
                    grads.append((g, g_max))
                    trial[:] = [t, step_max]
                    return loss, g, gtd

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, x_init, t, d, partial(flat.max_abs, d), loss, flat_grad, gtd,
                    max_ls=max_eval - current_evals)
                if flat.scalar(t) == flat.scalar(trial[0]):
                    # the parameters are at x_init + t d already, bit for bit
                    step_max = trial[1]
                else:
                    step_max = flat.add(t, d, x_init)
                for g, g_max_g in grads:
                    if g is flat_grad:
                        g_max = g_max_g
                    else:
                        flat.free(g)
                opt_cond = g_max <= tolerance_grad
                flat.free(x_init)
                del grads, g, g_max_g, x_init, trial
            else:
                # no line search, simply move with fixed-step
                step_max = flat.add(t, d)
                if n_iter != max_iter:
                    # re-evaluate the function only if not in the last iteration
                    loss = float(closure())
                    used = flat_grad
                    flat_grad, g_max, g_sum, _ = flat.gather()
                    flat.free(used)
                    del used
                    opt_cond = g_max <= tolerance_grad
                    ls_func_evals = 1

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # check conditions
            if n_iter == max_iter:
                break
            if current_evals >= max_eval:
                break
            if opt_cond:
                break
            # lack of progress
            if step_max <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        old_d = state.get("d")
        state["d"] = d
        state["t"] = _to_state(t)
        state["old_dirs"] = old_dirs
        state["old_stps"] = old_stps
        state["ro"] = ro
        state["H_diag"] = _to_state(H_diag)
        state["prev_flat_grad"] = prev_flat_grad
        state["prev_loss"] = prev_loss
        flat.free(flat_grad)
        # the previous step's direction, replaced only now (an error part way
        # leaves the state as it was), goes back to the pool unless someone
        # else (a kept state_dict) holds it
        if old_d is not None and old_d is not d and _refcount(old_d) <= _UNSHARED:
            flat.free(old_d)
        del old_d

        return orig_loss

    @staticmethod
    def _directional_evaluate(closure, flat, x, t, d):
        """Loss, flat gradient, ``g . d`` and ``max|g|`` at ``x + t d``, and
        ``max|d t|``.  The parameters stay at ``x + t d`` (torch puts them back
        at ``x`` and adds ``t d`` again once the line search has chosen ``t``:
        the same bits, two passes more); they are ``x`` again if the closure
        or the gradients fail."""
        step_max = flat.add(t, d, x)
        try:
            loss = float(closure())
            flat_grad, g_max, _, gtd = flat.gather(v=d)
        except BaseException:
            flat.set(x)
            raise
        return loss, flat_grad, gtd, g_max, step_max


def _cast_to(value, dtype, device=None):
    """``value`` with its float arrays (also inside lists) in ``dtype``, and
    on the parameters' device (torch's ``value.to(param)``): with ``device``
    (the GPU's ordinal) host arrays with dimensions go to that GPU, without
    it device arrays come to the host.  0-d arrays (``t``, ``ro``, ...) are
    host scalars on either.  Arrays already right are kept, as on the CPU."""
    if not isinstance(value, np.ndarray) and is_device_array(value):
        from ..kernels._cuda import as_device_array

        d = as_device_array(value)
        if device is not None and (dtype is None or np.dtype(d.dtype).kind != "f"
                                   or d.dtype == dtype):
            return value
        value = d.copy_to_host()
    if isinstance(value, np.ndarray):
        if dtype is not None and value.dtype.kind == "f" and value.dtype != dtype:
            value = value.astype(dtype)
        if device is not None and value.ndim > 0 and value.dtype.kind == "f":
            from numba import cuda

            from ..engine_cuda import _on

            with _on(device):
                return cuda.to_device(np.ascontiguousarray(value))
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_to(v, dtype, device) for v in value)
    return value


def _shape_dtype(x):
    """``(shape, dtype)`` of a host or device array; ``(None, None)`` otherwise."""
    if isinstance(x, np.ndarray):
        return x.shape, x.dtype
    if is_device_array(x):
        from ..kernels._cuda import describe

        shape, dtype = describe(x)[:2]
        return shape, dtype
    return None, None


def _describe(x) -> str:
    shape, dtype = _shape_dtype(x)
    if shape is not None:
        kind = "an array" if isinstance(x, np.ndarray) else "a device array"
        return f"{kind} of shape {shape} and dtype {dtype}"
    return repr(x)
