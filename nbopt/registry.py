"""The algorithm registry: algorithm name -> :class:`AlgorithmSpec`.

A spec tells the element-wise engine (:mod:`nbopt.engine`) everything it needs
to step an algorithm without knowing its maths: which per-element state it
keeps and how that state starts, which scalars the host computes each step,
which runtime flags the kernel takes, and the compiled kernels per device.

Kernel contract (CPU).  Every element-wise kernel is a module-level loop
compiled by :func:`nbopt.kernels._common.cpu_kernels` with the signature::

    kernel(segments, chunks, scalars, <state arrays in spec order>, <flags>)

segments
    int64 ``(n_seg, 4)``: parameter address, gradient address, offset into
    the flat state arrays, element count.
chunks
    int64 ``(n_chunk, 3)``: segment index, first and last element of a piece
    of work (the parallel loop runs over chunks).
scalars
    ``(n_seg, n_scalars)`` in the parameter dtype: the row of host-side
    scalars for each segment (segments are split where parameters are at
    different step counts).
state arrays
    One flat array per :attr:`AlgorithmSpec.state` entry (an empty array when
    an optional state is not allocated).
flags
    The tuple returned by :attr:`AlgorithmSpec.flags`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Sequence

__all__ = ["StateSpec", "ScalarStateSpec", "AlgorithmSpec", "SteadyRow", "REGISTRY", "register",
           "get", "DENSIFY"]

#: What an :attr:`AlgorithmSpec.sparse` handler returns to have a sparse
#: gradient densified and stepped by the element-wise kernel.
DENSIFY = "densify"


@dataclass(frozen=True)
class StateSpec:
    """One per-element state array.

    Attributes
    ----------
    name : str
        The state key (``"exp_avg"``), as torch names it.
    init : float or callable
        The value it starts at; a callable ``init(group, defaults)`` when it
        depends on hyper-parameters (Rprop's ``step_size`` starts at lr).
    when : callable or None
        ``when(group) -> bool``: the state exists only for parameters
        initialised while this holds (Adam's ``max_exp_avg_sq`` with
        amsgrad); None means always.
    """

    name: str
    init: float | Callable[[Mapping, Mapping], float] = 0.0
    when: Callable[[Mapping], bool] | None = None

    def initial_value(self, group: Mapping, defaults: Mapping) -> float:
        return self.init(group, defaults) if callable(self.init) else self.init

    def wanted(self, group: Mapping) -> bool:
        return True if self.when is None else bool(self.when(group))


@dataclass(frozen=True)
class ScalarStateSpec:
    """One per-parameter scalar state, a 0-d array of torch's dtype (ASGD's
    ``eta`` and ``mu``, NAdam's ``mu_product``).

    Attributes
    ----------
    name : str
        The state key.
    init : float or callable
        Its first value; a callable ``init(group, defaults)`` when it depends
        on hyper-parameters (ASGD's ``eta`` starts at lr).
    """

    name: str
    init: float | Callable[[Mapping, Mapping], float] = 0.0

    def initial_value(self, group: Mapping, defaults: Mapping) -> float:
        return self.init(group, defaults) if callable(self.init) else self.init


@dataclass(frozen=True)
class AlgorithmSpec:
    """Everything the engine needs to step one algorithm.

    Attributes
    ----------
    name : str
        Registry key (lower-case torch class name).
    state : sequence of StateSpec
        The per-element state arrays, in kernel argument order.
    has_step : bool
        Whether ``state[p]["step"]`` exists (a float32 0-d counter, as torch
        stores it).
    n_scalars : int
        Length of the row :attr:`scalars` returns (the kernels' scalar columns).
    scalars : callable
        ``scalars(group, t, fresh, old, new)`` -> sequence of Python floats,
        computed in float64 exactly as torch computes them; ``t`` is the
        parameter's step count after this step's increment, ``fresh`` whether
        its state was created in this step, ``old`` and ``new`` its scalar
        state before and after :attr:`advance` (empty tuples without one;
        ``new`` carries the state's dtype as ``new.dtype``).
    flags : callable
        ``flags(group)`` -> tuple of runtime kernel arguments (booleans and
        integers).
    cpu : tuple
        ``(serial, parallel)`` compiled kernels.
    cuda : object or None
        The CUDA kernel, or None while the algorithm has none.
    scalar_state : sequence of ScalarStateSpec
        Per-parameter scalars, listed after ``step`` in the state: float32
        0-d arrays, as torch creates them; float64 once loaded into float64
        parameters (torch's load_state_dict casts them to the parameter dtype).
    advance : callable or None
        ``advance(group, t, old, dtype) -> new``: this step's update of the
        scalar state, whose 0-d arrays have ``dtype`` (np.float32 or
        np.float64); the engine stores ``new`` rounded to ``dtype``.
    extra : mapping
        Algorithm-specific facts for tools (benchmarks, docs).
    steady_row : SteadyRow or None
        The compiled scalar row of a steady step with float hyper-parameters
        (see :class:`SteadyRow`); None: the Python :attr:`scalars` always.
    sparse : callable or None
        How the algorithm takes a sparse gradient (:class:`nbopt.SparseGrad`).
        None: it does not, and a step with one raises torch's
        ``RuntimeError("<Name> does not support sparse gradients")``.
        Otherwise ``sparse(group, param)`` is called while the step is
        validated: it raises torch's error for options that exclude sparse
        gradients (weight decay, fused, ...), or returns either :data:`DENSIFY` (step
        the densified gradient with the element-wise kernel) or
        ``update(param, state, grad, group, t)``, which applies the step to
        the rows present in ``grad`` (a validated :class:`nbopt.SparseGrad`,
        not coalesced: torch coalesces or not depending on the algorithm, and
        that decides the rounding); ``state`` maps each
        allocated state name to the parameter's view (shaped and laid out
        like ``param``), ``t`` is the step count after this step's increment.
    """

    name: str
    state: Sequence[StateSpec]
    has_step: bool
    scalars: Callable[[Mapping, float, bool], Sequence[float]]
    flags: Callable[[Mapping], tuple]
    cpu: tuple[Any, Any]
    cuda: Any = None
    scalar_state: Sequence[ScalarStateSpec] = ()
    advance: Callable[[Mapping, float, tuple, type], Sequence[float]] | None = None
    n_scalars: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)
    sparse: Callable[[Mapping, Any], Any] | None = None
    steady_row: "SteadyRow | None" = None

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.state)


class SteadyRow(NamedTuple):
    """An algorithm's scalar row computed in one compiled call by the steady
    path (:class:`nbopt.engine._Steady`), for the common case of float
    hyper-parameters.

    ``keys``: the group options the row reads (and those that send it to the
    Python maths, e.g. ``fused``); ``hyper(values)``: from the options'
    values in ``keys`` order, the row's float arguments, or None where the
    Python maths must run (a Tensor hyper-parameter, an option outside the
    range torch's constructor accepts, a special mode); called only when a
    value changed.  ``row(out, steps, *scalar_state, new, commit, *hyper)``:
    a compiled function that writes the row for the step after ``steps``
    into the table ``out`` and the advanced scalar state (rounded to its
    dtype) into the float64 array ``new`` (only with scalar state), returning
    the step count ``t``, or 0.0 where the Python maths must decide (step
    counts or scalar state that disagree, a value not finite); it modifies
    nothing else, unless ``commit``: then it also writes ``t`` into
    ``steps`` and the new scalar state into its arrays (when it returns
    ``t``).  Its numbers are :attr:`AlgorithmSpec.scalars`'
    bit for bit (tests/test_steady_row.py)."""

    keys: tuple
    hyper: Callable[[tuple], Any]
    row: Any


REGISTRY: dict[str, AlgorithmSpec] = {}


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"algorithm {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> AlgorithmSpec:
    """The spec of ``name``, importing its kernels module on first use."""
    if name not in REGISTRY:
        import importlib

        try:
            importlib.import_module(f"nbopt.kernels.{name}")
        except ModuleNotFoundError:
            raise KeyError(f"no algorithm named {name!r} in the nbopt registry") from None
    return REGISTRY[name]
