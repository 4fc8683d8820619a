"""Numeric and runtime knobs of nbopt, in one place.

Every knob can be set by an ``NBOPT_*`` environment variable before nbopt is
imported; the module attributes may also be changed at run time (the engine
reads them at every step).

``PARALLEL_THRESHOLD`` (``NBOPT_PARALLEL_THRESHOLD``, default 131072)
    A group step that touches fewer elements than this runs the serial kernel:
    below it, waking the thread pool costs more than the loop itself.
``CHUNK_SIZE`` (``NBOPT_CHUNK_SIZE``, default 32768)
    The parallel kernels split the work into chunks of at most this many
    elements, so that one huge parameter and many tiny ones balance across
    threads.
``CACHE`` (``NBOPT_CACHE``, default 1)
    ``0`` turns off Numba's on-disk cache of compiled kernels.  When the
    package directory is not writable Numba falls back to a user cache
    directory (``NUMBA_CACHE_DIR`` chooses one); if none is writable the
    kernels are compiled in memory at every start.
"""
from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


PARALLEL_THRESHOLD: int = _env_int("NBOPT_PARALLEL_THRESHOLD", 1 << 17)
CHUNK_SIZE: int = max(1, _env_int("NBOPT_CHUNK_SIZE", 1 << 15))
CACHE: bool = _env_int("NBOPT_CACHE", 1) != 0


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


_serial_only: bool | None = None


def parallel_allowed() -> bool:
    """False once Numba turns out to run the ``workqueue`` threading layer: it
    costs 45-70 us per launch and is not thread-safe, so serial kernels win."""
    return not _serial_only


def note_threading_layer() -> None:
    """Called after the first parallel launch, when Numba has chosen its layer."""
    global _serial_only
    if _serial_only is None:
        import numba

        try:
            _serial_only = numba.threading_layer() == "workqueue"
        except ValueError:  # no parallel kernel has run yet
            pass
