"""One learning-rate scheduler step: the host-side overhead a scheduler adds
to every training step (``nbopt.lr_scheduler``), over an ``nbopt.SGD`` with
one small parameter."""
import numpy as np

import nbopt
from nbopt import lr_scheduler

# scheduler name -> constructor options (all but the optimizer).  The
# horizons are long enough that no benchmark steps past them (OneCycleLR
# raises there), whatever number of calls asv times.
SCHEDULERS = {
    "StepLR": {"step_size": 30, "gamma": 0.1},
    "CosineAnnealingLR": {"T_max": 100},
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 10**9},
    # with the metric bench_scheduler feeds it (-1 per step), every step improves
    "ReduceLROnPlateau": {"mode": "min", "patience": 10, "threshold_mode": "abs"},
}


# The last scheduler built in this process, reused by the next setup with the
# same parameter (see bench_step.Step: asv re-runs setup before each sample).
_LAST = {}


class SchedulerStep:
    """``scheduler.step()`` (``scheduler.step(metric)`` for ReduceLROnPlateau).

    Every sample is one call right after ``setup``, which builds the optimizer
    and scheduler once per process and steps the scheduler twice, so that the
    timed call is a steady-state one.
    """

    params = [list(SCHEDULERS)]
    param_names = ["scheduler"]

    def setup(self, scheduler):
        if scheduler not in _LAST:
            _LAST.clear()
            _LAST[scheduler] = _make(scheduler)
        self._step = _LAST[scheduler]
        self._step()
        self._step()

    def time_scheduler_step(self, scheduler):
        self._step()


def _make(scheduler):
    """A callable that steps ``scheduler`` over a new one-parameter SGD."""
    p = nbopt.Parameter(np.zeros(10, np.float32))
    p.grad = np.ones(10, np.float32)
    # momentum: OneCycleLR cycles it (cycle_momentum=True by default)
    opt = nbopt.SGD([p], lr=0.01, momentum=0.9)
    sched = getattr(lr_scheduler, scheduler)(opt, **SCHEDULERS[scheduler])
    # as in training (the scheduler wraps opt.step when it is made): a
    # scheduler step before any optimizer step warns
    opt.step()
    if scheduler != "ReduceLROnPlateau":
        return sched.step
    # an ever-improving metric: every call takes the same path (no reduction,
    # no cooldown), however many calls asv makes
    metric = [1e9]

    def step():
        metric[0] -= 1.0
        sched.step(metric[0])
    return step
