"""Numeric and runtime knobs of nbopt, in one place.

Every knob can be set by an ``NBOPT_*`` environment variable before nbopt is
imported; the module attributes may also be changed at run time (the engine
reads them at every step).

``PARALLEL_THRESHOLD`` (``NBOPT_PARALLEL_THRESHOLD``, default None: measured)
    Which build of a kernel, serial or ``parallel=True``, a step runs.  An
    integer is a fixed threshold: a step over fewer elements runs the serial
    build.  None (the default): an element-wise group step over 4096 to
    4M elements runs the build that was faster when measured in this
    process (a steady step times both builds, alternating, at its first
    steps, 48 steps later and then every 4096 steps, again after 48 when a
    measurement changes the choice; they compute the same
    values; the general path takes the last choice of its class: algorithm,
    dtype and the powers of two of its element and segment counts), fewer
    runs serial, more parallel; LBFGS's passes use
    ``LBFGS_PARALLEL_THRESHOLD`` (32768), the other kernels (sparse rows,
    averaging, 8-bit state) ``DEFAULT_PARALLEL_THRESHOLD`` (131072).  The
    break-even depends on the algorithm's arithmetic, the cores and their
    load: on 2 quiet cores Adam float32 runs 2x faster in parallel from 30k
    elements, on loaded ones the parallel build can be slower up to 1M.
``CHUNK_SIZE`` (``NBOPT_CHUNK_SIZE``, default 32768)
    The parallel kernels split the work into chunks of at most this many
    elements, so that one huge parameter and many tiny ones balance across
    threads.
``CUDA_THREADS`` (``NBOPT_CUDA_THREADS``, default 256)
    Threads per block of the CUDA kernels.
``CUDA_CHUNK_SIZE`` (``NBOPT_CUDA_CHUNK_SIZE``, default 4096)
    The CUDA kernels give each block chunks of at most this many elements
    (a grid-stride loop over the chunk table, the block's threads striding
    over a chunk): large enough that a block streams whole cache lines, small
    enough that one big parameter fills every multiprocessor.
``CACHE`` (``NBOPT_CACHE``, default 1)
    ``0`` turns off Numba's on-disk cache of compiled kernels.  When the
    package directory is not writable Numba falls back to a user cache
    directory (``NUMBA_CACHE_DIR`` chooses one); if none is writable the
    kernels are compiled in memory at every start.
``TORCH_THREADS`` (``NBOPT_TORCH_THREADS``, default: the CPUs this process may use)
    The intra-op thread count of the torch whose numbers Adafactor
    reproduces: torch splits a single ``mean(dim=-2)`` over 32768 rows or more
    across its threads, which sets the summation order (torch's default
    is the number of physical cores).
``MUON_PRODUCTS`` (``NBOPT_MUON_PRODUCTS``, default ``"torch"``)
    How Muon multiplies its bfloat16 matrices.  ``"torch"``: compiled
    products that add their float32 sums in torch's CPU order (oneDNN's AMX
    and AVX512-BF16 kernels, the cpublas fallbacks): bit for bit torch's
    update on CPUs with AMX-BF16.  ``"blas"``: NumPy's float32 BLAS on the
    bfloat16 values, each result rounded to bfloat16 where torch rounds it:
    about 4x faster on large matrices, but the sums are added in BLAS's
    order, so some products differ from torch's in their last bfloat16 bit
    and the update differs from torch's by bfloat16 noise (up to about 2 %
    of its largest entry, as far as torch's own update is from the exact
    iteration).  See :mod:`nbopt.kernels.muon`.
``ADAFACTOR_STORE_LIMIT`` (``NBOPT_ADAFACTOR_STORE_LIMIT``, default 1048576)
    Adafactor keeps a parameter's update between its norm and its
    application (a per-thread buffer of this many elements) when a thread
    steps the parameter whole and it has at most this many elements; larger
    ones recompute it (two divisions and a square root per element).

**Threading layers.**  Steps that reach ``PARALLEL_THRESHOLD`` run
``parallel=True`` kernels on Numba's threading layer (``NUMBA_THREADING_LAYER``;
by default the first of tbb, omp, workqueue that loads).  nbopt learns the
layer before its first parallel launch (``parallel_allowed()`` starts Numba's
layer, which runs no kernel, once, under a lock) and runs the serial kernels,
which compute the same values element for element, in two cases:

* the layer is ``workqueue``: it costs 45-70 us per launch and aborts the
  process when two threads launch at once;
* a process forked (``os.fork``, multiprocessing's default ``fork`` start
  method on Linux) from one whose layer is GNU OpenMP (``omp`` on Linux):
  libgomp is not fork-safe, so Numba terminates such a child at its first
  parallel launch, and a grandchild hangs in it.  An ``os.register_at_fork``
  hook makes the child serial-only; every serial/parallel choice (LBFGS,
  sparse and averaging kernels included: :func:`runs_parallel`) and every
  step plan cached before the fork follow it.  The parent, ``spawn`` and
  ``forkserver`` children, children forked before the layer started, and
  children of a tbb or workqueue process are unaffected.
  ``NUMBA_THREADING_LAYER=tbb`` (with the ``tbb`` package) keeps forked
  children parallel.

If no layer loads (``NUMBA_THREADING_LAYER=tbb`` without the ``tbb`` package),
large steps run the serial kernels after one warning.
"""
from __future__ import annotations

import os
import sys
import threading
import types
import warnings


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


DEFAULT_PARALLEL_THRESHOLD = 1 << 17
# LBFGS's flat-vector passes (the two-loop recursion, the memory update) go
# parallel from here with PARALLEL_THRESHOLD None: measured on 2 cores
# (``python -m nbopt bench-lbfgs --n 32768``/``65536``, history 10), an
# iteration with parallel passes took 0.82x / 0.68x the time of one with
# serial passes at 32k / 64k elements (float32), 0.66x / 0.58x in float64.
LBFGS_PARALLEL_THRESHOLD = 1 << 15
PARALLEL_THRESHOLD: int | None = _env_int("NBOPT_PARALLEL_THRESHOLD", None)
CHUNK_SIZE: int = max(1, _env_int("NBOPT_CHUNK_SIZE", 1 << 15))
CACHE: bool = _env_int("NBOPT_CACHE", 1) != 0
CUDA_THREADS: int = max(1, _env_int("NBOPT_CUDA_THREADS", 256))
CUDA_CHUNK_SIZE: int = max(1, _env_int("NBOPT_CUDA_CHUNK_SIZE", 1 << 12))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        return os.cpu_count() or 1


TORCH_THREADS: int = max(1, _env_int("NBOPT_TORCH_THREADS", _cpus()))
ADAFACTOR_STORE_LIMIT: int = max(0, _env_int("NBOPT_ADAFACTOR_STORE_LIMIT", 1 << 20))
MUON_PRODUCTS: str = os.environ.get("NBOPT_MUON_PRODUCTS", "").strip() or "torch"
if MUON_PRODUCTS not in ("blas", "torch"):
    raise ValueError("environment variable NBOPT_MUON_PRODUCTS must be 'blas' or 'torch', "
                     f"got {MUON_PRODUCTS!r}")


def set_num_threads(n: int) -> None:
    """Threads the parallel kernels use (at most ``NUMBA_NUM_THREADS``, which
    defaults to the number of cores); Numba's thread pool is shared, so this is
    ``numba.set_num_threads``."""
    import numba

    numba.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads the parallel kernels use now."""
    import numba

    return numba.get_num_threads()


def set_flush_denormal(mode: bool) -> bool:
    """Flush subnormal floats to zero on the CPU, as ``torch.set_flush_denormal``.

    A gradient that is exactly zero for a long time decays Adam-like moments
    geometrically into the subnormal range (below ~1.2e-38 in float32), where
    x86 CPUs compute each operation in microcode: measured here, an Adam step
    over 100k float32 elements whose moments are all subnormal runs 5-12x
    slower (``nbopt.functional.adam_step`` 256 -> 1436 us, ``nbopt.Adam``
    107 -> 1333 us).  With ``mode=True`` the CPU treats subnormal inputs as
    zero and flushes subnormal results to zero (MXCSR's DAZ and FTZ bits) on
    the calling thread and on every thread of Numba's pool (nbopt's parallel
    kernels, your ``prange`` loops).

    What it changes: every value that would be subnormal becomes 0 (also in
    your own NumPy and Numba code on those threads), so results differ from
    torch's (which keeps subnormals unless you call its
    ``set_flush_denormal(True)``) once a value leaves the normal range.  Off
    by default.  Returns True where it is supported (x86-64), False otherwise,
    as torch does.
    """
    from .kernels._common import set_flush_denormal as set_bits

    return set_bits(bool(mode))


# None until decided: True runs serial kernels only, False allows parallel ones.
# Read without a lock on every non-steady step.
_serial_only: bool | None = None
_decide_lock = threading.Lock()


def parallel_allowed() -> bool:
    """Whether large steps may run the ``parallel=True`` kernels.

    Decided once, before the first parallel launch (see the module docstring):
    False under Numba's ``workqueue`` layer, in a child forked from a GNU
    OpenMP process, or when no threading layer loads.  After the first call
    this is one global read."""
    serial = _serial_only
    if serial is None:
        serial = _decide()
    return not serial


def _decide() -> bool:
    global _serial_only
    with _decide_lock:            # one thread starts Numba's layer, the others wait
        if _serial_only is None:
            layer = threading_layer()
            _serial_only = layer is None or layer == "workqueue"
            _changed()
        return _serial_only


def threading_layer() -> str | None:
    """The threading layer Numba uses for parallel kernels in this process
    (``"tbb"``, ``"omp"`` or ``"workqueue"``), starting it if no parallel code
    has run yet: ``numba.get_num_threads`` loads the layer and its threads
    without running a kernel.  ``None`` (with a warning) if no layer loads, e.g.
    ``NUMBA_THREADING_LAYER=tbb`` without the ``tbb`` package."""
    import numba

    try:
        numba.get_num_threads()
        return numba.threading_layer()
    except ValueError as exc:
        warnings.warn(f"nbopt: no Numba threading layer loads ({exc}); "
                      "large steps run the serial kernels", RuntimeWarning, stacklevel=3)
        return None


def runs_parallel(n: int, default: int | None = None) -> bool:
    """Whether a kernel over ``n`` elements runs its ``parallel=True`` build,
    by the threshold (``PARALLEL_THRESHOLD``, or when it is None ``default``,
    else ``DEFAULT_PARALLEL_THRESHOLD``): the test every serial/parallel
    choice in nbopt makes but the element-wise engine's measured one (see
    ``PARALLEL_THRESHOLD``)."""
    threshold = PARALLEL_THRESHOLD
    if threshold is None:
        threshold = DEFAULT_PARALLEL_THRESHOLD if default is None else default
    return n >= threshold and parallel_allowed()


def _fork_unsafe_layer() -> bool:
    """Whether this process inherited a started GNU OpenMP layer (read from
    Numba's modules without importing anything: nothing to do if Numba's
    threading layer never started)."""
    if "numba.np.ufunc.parallel" not in sys.modules:
        return False
    try:
        layer = sys.modules["numba"].threading_layer()
    except (KeyError, AttributeError, ValueError):   # not started
        return False
    if layer != "omp":
        return False            # tbb and workqueue are fork-safe (Numba's docs)
    omppool = sys.modules.get("numba.np.ufunc.omppool")
    vendor = getattr(omppool, "openmp_vendor", "GNU" if sys.platform.startswith("linux") else "")
    return vendor == "GNU"      # Intel and MS OpenMP are fork-safe


def _after_fork_in_child() -> None:
    global _serial_only, _decide_lock
    _decide_lock = threading.Lock()     # another thread may have held it at fork
    if _fork_unsafe_layer():
        # every kernel choice asks runs_parallel, and every cached step plan
        # checks parallel_allowed, so plans made in the parent (holding a
        # parallel kernel) are dropped at the child's next step
        _serial_only = True
        _changed()


# Bumped by every change of a knob: an assignment of any attribute of this
# module (``config.CHUNK_SIZE = ...``, monkeypatching) and the decisions
# above, so that a cached step plan sees in one comparison that none changed
# since it was made.
generation = 0


def _changed() -> None:
    global generation
    generation += 1


class _Knobs(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        _changed()


sys.modules[__name__].__class__ = _Knobs


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
