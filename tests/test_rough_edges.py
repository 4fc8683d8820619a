"""Small things a torch user trips on (issue 16): the README's arena snippet
with ``opt.zero_grad()``, ``Parameter.detach()`` / ``.numpy()`` / ``.data``,
and warnings that no longer send users to PyTorch's tracker."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import nbopt
from nbopt import lr_scheduler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_POINTERS = re.compile(r"PyTorch|pytorch|github\.com|1\.1\.0|issues")


def readme_block(heading: str) -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_arena_snippet_runs_and_trains(capsys):
    namespace: dict = {}
    exec(readme_block("## Many small parameters: the arena"), namespace)   # noqa: S102
    arena, w1, b1 = namespace["arena"], namespace["w1"], namespace["b1"]
    assert w1.grad is arena.grad_views[0] and b1.grad is arena.grad_views[1]
    assert np.abs(arena.data).max() > 0                       # it stepped
    assert float(namespace["opt"].state[w1]["step"]) == 10.0


def test_opt_zero_grad_keeps_arena_views_zeroed_in_place():
    arena = nbopt.ParameterArena([np.ones((2, 3)), np.ones(3)], dtype=np.float32)
    w, b = arena.params
    opt = nbopt.SGD(arena.params, lr=0.5)
    for set_to_none in (True, False):
        w.grad[...] = 1.0
        b.grad = np.full(3, 2.0, np.float32)          # a replaced gradient
        opt.zero_grad(set_to_none=set_to_none)
        assert w.grad is arena.grad_views[0] and b.grad is arena.grad_views[1]
        assert not arena.grad.any()
        w.grad[...] = 2.0                             # the README's crash, now fine
        opt.step()
    np.testing.assert_array_equal(w, np.full((2, 3), -1.0, np.float32))
    np.testing.assert_array_equal(b, np.ones(3, np.float32))   # zero gradient: unchanged


def test_opt_zero_grad_zeroes_only_the_arena_parameters_it_holds():
    arena = nbopt.ParameterArena([np.ones(2), np.ones(3)])
    a, b = arena.params
    other = nbopt.Parameter(np.ones(2))
    other.grad = np.ones(2)
    opt = nbopt.SGD([a, other], lr=0.1)
    arena.grad[:] = 7.0
    opt.zero_grad()
    assert not a.grad.any() and a.grad is arena.grad_views[0]
    assert np.all(b.grad == 7.0)                      # not this optimizer's
    assert other.grad is None                         # torch's set_to_none elsewhere


def test_detach_and_numpy_are_plain_views_and_data_is_numpys():
    w = nbopt.Parameter(np.arange(3.0))
    w.grad = np.ones(3)
    for view in (w.detach(), w.numpy()):
        assert type(view) is np.ndarray and np.shares_memory(view, w)
    w.detach()[0] = 10.0
    assert w[0] == 10.0
    assert isinstance(w.data, memoryview)             # NumPy's .data, documented


def test_scheduler_warnings_keep_category_and_meaning_without_torch_pointers():
    w = nbopt.Parameter(np.zeros(1))
    opt = nbopt.SGD([w], lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=1)
    with pytest.warns(UserWarning) as record:
        sched.step()                                  # before optimizer.step()
        sched.step(3)                                 # deprecated epoch argument
    messages = [str(r.message) for r in record]
    assert any("optimizer.step()` before `lr_scheduler.step()`" in m and
               "skipping the first value" in m for m in messages)
    assert any("epoch parameter" in m and "deprecated" in m for m in messages)
    opt2 = nbopt.SGD([nbopt.Parameter(np.zeros(1))], lr=0.1)
    sched2 = lr_scheduler.StepLR(opt2, step_size=1)
    opt2.step = lambda *a, **k: None                  # step overridden after the scheduler
    with pytest.warns(UserWarning, match="overridden") as record2:
        sched2.step()
    messages += [str(r.message) for r in record2]
    for m in messages:
        assert not TORCH_POINTERS.search(m), m


def test_duplicate_parameter_warning_has_no_torch_pointer():
    w = nbopt.Parameter(np.zeros(2))
    with pytest.warns(UserWarning, match="duplicate parameters") as record:
        nbopt.SGD([w, w], lr=0.1)
    assert not TORCH_POINTERS.search(str(record[0].message))


def test_functional_errors_have_no_torch_pointer():
    from nbopt.optim.adam import adam

    w = np.zeros(2)
    with pytest.raises(RuntimeError) as info:
        adam([w], [w.copy()], [np.zeros(2), np.zeros(2)], [np.zeros(2)], [],
             [np.array(0.0, np.float32)],
             foreach=True, amsgrad=False, beta1=0.9, beta2=0.99, lr=0.1, weight_decay=0.0,
             eps=1e-8, maximize=False)
    assert "to be true, but got false." in str(info.value)
    assert not TORCH_POINTERS.search(str(info.value))
