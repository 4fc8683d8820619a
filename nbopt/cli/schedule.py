r"""``python -m nbopt schedule``: print or plot a learning-rate schedule.

Usage::

    python -m nbopt schedule NAME [--ARG VALUE ...] [--steps N] [--plot out.png]
                            [--lr LR] [--momentum M] [--optimizer SGD|Adam|...]
                            [--metrics m0,m1,...]

``NAME`` is a class of :mod:`nbopt.lr_scheduler` and every ``--ARG VALUE``
pair is one of its constructor arguments.  Values are read as Python
literals (``0.1``, ``100``, ``[30, 60]``, ``True``); anything else is taken
as a string (``cos``, ``triangular2``).  Each value is checked against the
argument's annotation (``--step_size abc`` or a bare ``--gamma`` is a usage
error, not a run) and against the smallest value that makes sense where a
smaller one would divide by zero a few steps later (``--step_size 0``,
``--T_max 0``).  A flag with no value means ``True`` for the boolean arguments
only (``--three_phase``).  Three arguments take expressions:

* ``--lr_lambda`` (LambdaLR, MultiplicativeLR): an arithmetic expression of
  ``epoch``, e.g. ``"0.95 ** epoch"`` or ``"min(1, (epoch + 1) / 10)"``
  (numbers, ``+ - * / // % **``, comparisons, ``a if c else b``, ``pi``,
  ``e`` and ``abs cos sin exp log sqrt floor ceil min max``);
* ``--scale_fn`` (CyclicLR): the same, of ``x``;
* ``--schedulers`` (SequentialLR, ChainedScheduler): a list of calls, e.g.
  ``"[LinearLR(start_factor=0.1, total_iters=10), CosineAnnealingLR(T_max=90)]"``.

The schedule runs on a dummy optimizer: :class:`nbopt.SGD` over one parameter
with ``--lr`` (default 0.1; a list makes one param group per entry) and
``--momentum`` (default 0.9, so that CyclicLR and OneCycleLR can cycle it), or
the class given by ``--optimizer`` (e.g. ``Adam``, whose beta1 is cycled).
Each step is ``optimizer.step()`` then ``scheduler.step()``, as in training.

Output: one line per step, ``step lr`` (one lr column per group), then the
momentum (or beta1) when the scheduler changes it, and the metric for
ReduceLROnPlateau.  Values are printed rounded to 6 significant digits;
``--exact`` prints each one's shortest round-trip repr (bit for bit the
scheduler's, for scripts).
``--steps`` defaults to 100, or to OneCycleLR's total steps.

ReduceLROnPlateau needs a metric per step: ``--metrics`` takes a comma
list (the last value repeats if the run is longer); the default is a
synthetic validation loss that falls linearly from 1.0 to 0.5 over the first
half of the run and is flat afterwards, so the plateau reductions show.

``--plot out.png`` also draws the schedule (lr, and momentum or the metric
below it) with matplotlib, an optional dependency: ``pip install
'nbopt[plot]'``.

Examples
--------
The functions behind the command:

>>> from nbopt.cli.schedule import compute, format_table
>>> print(format_table(compute(["StepLR", "--step_size", "2", "--steps", "4"])), end="")
# StepLR(step_size=2) on SGD
# step lr
0 0.1
1 0.1
2 0.01
3 0.01
>>> print(format_table(compute(["StepLR", "--step_size", "2", "--steps", "3"]), exact=True),
...       end="")
# StepLR(step_size=2) on SGD
# step lr
0 0.1
1 0.1
2 0.010000000000000002

From a shell::

    python -m nbopt schedule OneCycleLR --max_lr 0.1 --total_steps 100 --plot onecycle.png
    python -m nbopt schedule CyclicLR --base_lr 0.01 --max_lr 0.1 --step_size_up 10 \
        --mode triangular2 --steps 60
    python -m nbopt schedule LambdaLR --lr_lambda "0.9 ** epoch" --steps 20
    python -m nbopt schedule ReduceLROnPlateau --patience 3 --factor 0.5 --steps 40
    python -m nbopt schedule SequentialLR --milestones "[10]" \
        --schedulers "[LinearLR(start_factor=0.1, total_iters=10), ExponentialLR(gamma=0.95)]"
"""
from __future__ import annotations

import ast
import difflib
import inspect
import math
import sys
import textwrap
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._common import UsageError, check, integer, number, output_file, usage_error

__all__ = ["Schedule", "compute", "format_table", "plot_schedule", "main", "SCHEDULERS",
           "MISSING_MATPLOTLIB"]

MISSING_MATPLOTLIB = "matplotlib is needed for --plot: pip install 'nbopt[plot]'"
DEFAULT_STEPS = 100
# options of the command itself; everything else goes to the scheduler
_OWN = {"steps", "lr", "momentum", "optimizer", "metrics", "plot", "exact"}
_OWN_FLAGS = {"exact"}          # never take a value
PROG = "python -m nbopt schedule"
SHORT_USAGE = f"{PROG} NAME [--ARG VALUE ...] [options]   ({PROG} --help)"


def _scheduler_names() -> list[str]:
    from .. import lr_scheduler

    return [n for n in lr_scheduler.__all__ if n != "LRScheduler"]


SCHEDULERS = sorted(_scheduler_names())


# -- expressions --------------------------------------------------------------------------
_FUNCS = {"abs": abs, "min": min, "max": max, "cos": math.cos, "sin": math.sin,
          "exp": math.exp, "log": math.log, "sqrt": math.sqrt, "floor": math.floor,
          "ceil": math.ceil}
_CONSTS = {"pi": math.pi, "e": math.e}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
           ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
           ast.Pow: lambda a, b: a ** b}
_CMPOPS = {ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
           ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
           ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}


def _check_expr(node: ast.AST, var: str, text: str) -> None:
    """Allow arithmetic on numbers, ``var`` and a few math functions only: the
    expression is evaluated by walking the tree, never by ``eval``."""
    for sub in ast.walk(node):
        ok = isinstance(sub, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp,
                              ast.Call, ast.Name, ast.Load, ast.USub, ast.UAdd,
                              *_BINOPS, *_CMPOPS))
        if isinstance(sub, ast.Constant):
            ok = isinstance(sub.value, (int, float)) and not isinstance(sub.value, bool)
        if isinstance(sub, ast.Name):
            ok = sub.id in (var, *_FUNCS, *_CONSTS)
        if isinstance(sub, ast.Call):
            ok = (isinstance(sub.func, ast.Name) and sub.func.id in _FUNCS
                  and not sub.keywords)
        if not ok:
            what = ast.unparse(sub) if isinstance(sub, ast.expr) else type(sub).__name__
            raise UsageError(f"cannot use {what!r} in the expression {text!r}: write "
                             f"arithmetic of {var!r} (functions: {', '.join(_FUNCS)})")


def _evaluate(node: ast.AST, env: dict):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id] if node.id in env else _CONSTS[node.id]
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_evaluate(node.left, env), _evaluate(node.right, env))
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = _evaluate(comp, env)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Call):
        return _FUNCS[node.func.id](*(_evaluate(a, env) for a in node.args))
    raise AssertionError(type(node).__name__)   # _check_expr admits nothing else


def expression(text: str, var: str):
    """A function of ``var`` computing the arithmetic expression ``text``."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise UsageError(f"bad expression {text!r}: {exc.msg}") from None
    _check_expr(tree, var, text)

    def fn(value):
        return _evaluate(tree, {var: value})

    fn.__name__ = fn.__qualname__ = f"<{text}>"
    return fn


# -- argument parsing --------------------------------------------------------------------------
def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parameters(name: str) -> dict:
    """The constructor arguments of scheduler ``name`` (the optimizer excepted)."""
    from .. import lr_scheduler

    params = inspect.signature(getattr(lr_scheduler, name)).parameters
    return {k: p for k, p in params.items() if k != "optimizer"}


# What each annotation of nbopt.lr_scheduler's constructors admits on the
# command line; any other annotation (callables, schedulers) is parsed by the
# expression rules above.
def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(v) -> bool:
    return isinstance(v, (list, tuple)) and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v)


_KINDS = {
    "int": ("an int", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a finite number", _finite),
    "bool": ("True or False", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "None": ("None", lambda v: v is None),
    "list[float]": ("a list of numbers",
                    lambda v: isinstance(v, (list, tuple)) and bool(v) and all(map(_finite, v))),
    "list[int]": ("a list of ints", _ints),
    "Iterable[int]": ("a list of ints", _ints),
}
# The smallest sensible value of arguments that torch takes smaller and then
# divides by zero with a few steps later (StepLR's step_size=0: "integer
# modulo by zero" halfway through the table), or that make no schedule.
_MINIMUM = {"step_size": 1, "T_max": 1, "T_0": 1, "T_mult": 1, "total_steps": 1, "epochs": 1,
            "steps_per_epoch": 1, "step_size_up": 1, "step_size_down": 1, "power": 0}
# ... and those that must be > 0 (a division by them); "Name.arg" for one scheduler
_POSITIVE = {"div_factor", "final_div_factor", "ConstantLR.factor"}


def _value(name: str, key: str, text):
    """Scheduler ``name``'s argument ``key`` from its command-line ``text``
    (``True`` for a bare flag), checked against the constructor's annotation."""
    params = _parameters(name)
    option = f"--{key}"
    if key not in params:
        raise UsageError(f"unrecognized arguments: {option} ({name} takes "
                         + ", ".join(f"--{k}" for k in params) + ")")
    kinds = [k.strip() for k in str(params[key].annotation).split("|")]
    known = [k for k in kinds if k in _KINDS]
    wanted = " or ".join(_KINDS[k][0] for k in known) or "an expression"
    if text is True and "bool" not in kinds:
        raise UsageError(f"argument {option}: expected a value ({wanted})")
    if text is True:
        return True
    if key == "lr_lambda":
        value = _literal(text)
        if isinstance(value, list):          # one expression per group
            return [expression(v, "epoch") for v in value]
        return expression(text, "epoch")
    if key == "scale_fn":
        return expression(text, "x")
    if key == "schedulers":
        return _children(text)
    value = _literal(text)
    if known and not any(_KINDS[k][1](value) for k in known):
        if len(known) == 1 and known[0] in ("int", "float") and isinstance(value, str):
            raise UsageError(f"argument {option}: invalid {known[0]} value: {text!r}")
        raise UsageError(f"argument {option}: expected {wanted}, got {text!r}")
    if _finite(value):
        low = _MINIMUM.get(key)
        if low is not None and value < low:
            raise UsageError(f"argument {option}: must be >= {low}, got {text}")
        if (key in _POSITIVE or f"{name}.{key}" in _POSITIVE) and not value > 0:
            raise UsageError(f"argument {option}: must be positive, got {text}")
    return value


def _children(text: str) -> list[tuple[str, dict]]:
    """``"[LinearLR(total_iters=5), ExponentialLR(gamma=0.9)]"`` -> [(name, kwargs)]."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise UsageError(f"bad --schedulers {text!r}: {exc.msg}") from None
    items = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    out = []
    for item in items:
        if not (isinstance(item, ast.Call) and isinstance(item.func, ast.Name)) or item.args:
            raise UsageError(f"--schedulers takes a list of calls with keyword arguments, "
                             f"e.g. \"[LinearLR(total_iters=5), ExponentialLR(gamma=0.9)]\"; "
                             f"got {ast.unparse(item)!r}")
        name = _check_name(item.func.id)
        kwargs = {}
        for kw in item.keywords:
            try:
                raw = ast.literal_eval(kw.value)
            except ValueError:
                raise UsageError(f"{item.func.id}: {kw.arg}={ast.unparse(kw.value)} is not a "
                                 "literal (write expressions as strings)") from None
            # the same checks as a command-line argument (a string is its text)
            try:
                kwargs[kw.arg] = _value(name, kw.arg, raw if isinstance(raw, str) else repr(raw))
            except UsageError as exc:
                raise UsageError(f"--schedulers: {name}: {exc}") from None
        out.append((name, kwargs))
    return out


def _check_name(name: str) -> str:
    if name not in SCHEDULERS:
        close = difflib.get_close_matches(name, SCHEDULERS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"unknown scheduler {name!r}{hint}; valid names: "
                         + ", ".join(SCHEDULERS))
    return name


def parse_argv(argv: list[str]) -> tuple[str, dict, dict]:
    """Split a command line into (scheduler name, scheduler kwargs, own options)."""
    if not argv or argv[0].startswith("-"):
        raise UsageError("give a scheduler name first; valid names: " + ", ".join(SCHEDULERS))
    name = _check_name(argv[0])
    kwargs, own = {}, {}
    i = 1
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) == 2:
            raise UsageError(f"expected --ARG VALUE, got {token!r}")
        key, eq, text = token[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if key in _OWN_FLAGS:
                text = True
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                text = argv[i + 1]
                i += 1
            else:
                text = True
        i += 1
        if key in _OWN:
            if key in _OWN_FLAGS and text is not True:
                raise UsageError(f"argument --{key}: ignored explicit argument {text!r}")
            own[key] = text
        else:
            kwargs[key] = _value(name, key, text)
    missing = [k for k, p in _parameters(name).items()
               if p.default is inspect.Parameter.empty and k not in kwargs and k != "schedulers"]
    if missing:
        raise UsageError("the following arguments are required: "
                         + ", ".join(f"--{k}" for k in missing))
    return name, kwargs, own


def _own(own: dict, key: str, parse=None, default=None):
    """Option ``--key`` of the command itself, checked by ``parse`` (an
    argparse type of :mod:`nbopt.cli._common`)."""
    if key not in own:
        return default
    if own[key] is True:
        raise UsageError(f"argument --{key}: expected one argument")
    return own[key] if parse is None else check(f"--{key}", parse, own[key])


# -- running ---------------------------------------------------------------------------------
@dataclass
class Schedule:
    """A computed schedule: ``lr[i, g]`` is group ``g``'s learning rate at step ``i``."""

    title: str
    lr: np.ndarray
    momentum: np.ndarray | None = None      # only when the scheduler changes it
    momentum_name: str = "momentum"
    metrics: list[float] | None = None      # ReduceLROnPlateau's inputs
    notes: list[str] = field(default_factory=list)


def default_metrics(steps: int) -> list[float]:
    """The synthetic validation loss: 1.0 -> 0.5 linearly over half the run, then flat."""
    half = max(steps // 2, 1)
    return [0.5 + 0.5 * max(0.0, 1.0 - i / half) for i in range(steps)]


def _fmt_kwargs(kwargs: dict) -> str:
    def fmt(v):
        if callable(v):
            return getattr(v, "__name__", "fn").strip("<>")
        if isinstance(v, list) and v and isinstance(v[0], tuple):
            return "[" + ", ".join(f"{n}({_fmt_kwargs(k)})" for n, k in v) + "]"
        if isinstance(v, list):
            return "[" + ", ".join(map(fmt, v)) + "]"
        return repr(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in kwargs.items())


def _make(name: str, opt, kwargs: dict):
    from .. import lr_scheduler

    kwargs = dict(kwargs)
    cls = getattr(lr_scheduler, name)
    if name in ("SequentialLR", "ChainedScheduler"):
        if "schedulers" not in kwargs:
            raise UsageError(f"{name} needs --schedulers, e.g. \"[LinearLR(start_factor=0.1, "
                             "total_iters=10), ExponentialLR(gamma=0.95)]\"")
        kwargs["schedulers"] = [_make(n, opt, kw) for n, kw in kwargs["schedulers"]]
        if name == "ChainedScheduler":
            kwargs.setdefault("optimizer", opt)
            return cls(**kwargs)
    return cls(opt, **kwargs)


def _total_steps(name: str, kwargs: dict) -> int:
    if name == "OneCycleLR":
        if isinstance(kwargs.get("total_steps"), int):
            return kwargs["total_steps"]
        if isinstance(kwargs.get("epochs"), int) and isinstance(kwargs.get("steps_per_epoch"), int):
            return kwargs["epochs"] * kwargs["steps_per_epoch"]
    return DEFAULT_STEPS


def _group_momentum(group) -> float:
    if "betas" in group:
        return float(group["betas"][0])
    return float(group.get("momentum", math.nan))


def compute(argv: list[str]) -> Schedule:
    """Run the schedule a command line describes (see the module docstring)."""
    import nbopt

    name, kwargs, own = parse_argv(argv)
    # the scheduler's own arguments were checked by parse_argv, so that a bad
    # --total_steps is reported as such, not as a bad --steps
    steps = _own(own, "steps", integer(1), None) or _total_steps(name, kwargs)
    text = _own(own, "lr", None, "0.1")
    lrs = _literal(text)
    lrs = list(lrs) if isinstance(lrs, (list, tuple)) else [lrs]
    if not lrs or not all(map(_finite, lrs)):
        raise UsageError(f"argument --lr: expected a number or a list of numbers, got {text!r}")
    momentum = _own(own, "momentum", number(), 0.9)
    opt_name = _own(own, "optimizer", None, "SGD")
    opt_cls = getattr(nbopt, opt_name, None)
    if not (isinstance(opt_cls, type) and issubclass(opt_cls, nbopt.Optimizer)) \
            or opt_cls is nbopt.Optimizer:
        raise UsageError(f"unknown optimizer {opt_name!r}; e.g. SGD, Adam")
    groups = [{"params": [nbopt.Parameter(np.zeros(1))], "lr": float(v)} for v in lrs]
    opt_kwargs = {"lr": float(lrs[0])}
    if "momentum" in inspect.signature(opt_cls).parameters:
        opt_kwargs["momentum"] = momentum
    plateau = name == "ReduceLROnPlateau"
    if plateau:
        if "metrics" in own:
            text = _own(own, "metrics")
            values = _literal(text)
            if isinstance(values, (int, float)):
                values = [values]
            elif isinstance(values, str):
                values = [_literal(v) for v in values.split(",") if v.strip()]
            if not values or not all(map(_finite, values)):
                raise UsageError(f"argument --metrics: expected numbers separated by commas, "
                                 f"got {text!r}")
            metrics = [float(v) for v in values]
            metrics += [metrics[-1]] * (steps - len(metrics))
        else:
            metrics = default_metrics(steps)
    elif "metrics" in own:
        raise UsageError("argument --metrics: for ReduceLROnPlateau only")

    try:
        opt = opt_cls(groups, **opt_kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{opt_name}: {exc}") from None
    title = f"{name}({_fmt_kwargs(kwargs)})"
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sched = _make(name, opt, kwargs)
        except UsageError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise UsageError(f"{name}: {exc.args[0] if exc.args else exc}") from None
        lr = np.empty((steps, len(lrs)))
        mom = np.empty((steps, len(lrs)))
        for i in range(steps):
            lr[i] = [float(g["lr"]) for g in opt.param_groups]
            mom[i] = [_group_momentum(g) for g in opt.param_groups]
            if i == steps - 1:
                break
            opt.step()               # no gradients: counts as a step, moves nothing
            try:
                if plateau:
                    sched.step(metrics[i])
                else:
                    sched.step()
            except (ValueError, ArithmeticError, TypeError) as exc:
                # the arguments were checked, but a combination can still fail
                # in torch's arithmetic: one line that names the step, not a
                # traceback after half a table
                raise UsageError(f"{name} at step {i + 1}: {exc}") from None
    notes += sorted({str(w.message) for w in caught})
    bad = np.flatnonzero(~np.isfinite(lr).all(axis=1))
    if len(bad):
        raise UsageError(f"{name}: the learning rate is {lr[bad[0]][0]} at step {bad[0]}: "
                         "the arguments overflow")
    cycled = bool(np.any(mom != mom[:1]) and not np.all(np.isnan(mom)))
    beta = "betas" in opt.param_groups[0]
    return Schedule(title=f"{title} on {opt_name}", lr=lr, momentum=mom if cycled else None,
                    momentum_name="beta1" if beta else "momentum",
                    metrics=metrics[:steps] if plateau else None, notes=notes)


def format_table(schedule: Schedule, exact: bool = False) -> str:
    """The schedule as text: a ``#`` header, then ``step lr... [momentum...] [metric]``.

    Values are rounded to 6 significant digits for people (``0.01``, not
    ``0.010000000000000002``); ``exact`` prints each one's shortest
    round-trip repr, which parses back to the scheduler's float bit for bit.
    """
    groups = schedule.lr.shape[1]

    def fmt(v) -> str:
        return repr(float(v)) if exact else f"{float(v):.6g}"

    def names(base):
        return [base] if groups == 1 else [f"{base}{g}" for g in range(groups)]

    columns = ["step"] + names("lr")
    if schedule.momentum is not None:
        columns += names(schedule.momentum_name)
    if schedule.metrics is not None:
        columns.append("metric")
    lines = [f"# {schedule.title}", "# " + " ".join(columns)]
    for i in range(schedule.lr.shape[0]):
        row = [str(i)] + [fmt(v) for v in schedule.lr[i]]
        if schedule.momentum is not None:
            row += [fmt(v) for v in schedule.momentum[i]]
        if schedule.metrics is not None:
            row.append(fmt(schedule.metrics[i]))
        lines.append(" ".join(row))
    return "\n".join(lines) + "\n"


def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError(MISSING_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg


def plot_schedule(schedule: Schedule, path, *, title: str | None = None) -> None:
    """Draw the schedule to a PNG file (matplotlib's Agg canvas, no global state).

    Raises ``RuntimeError(MISSING_MATPLOTLIB)`` when matplotlib is missing.
    """
    Figure, FigureCanvasAgg = _import_matplotlib()
    second = schedule.momentum is not None or schedule.metrics is not None
    fig = Figure(figsize=(7.0, 5.2 if second else 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if second else 1, 1, sharex=True, squeeze=False)[:, 0]
    steps = np.arange(schedule.lr.shape[0])
    groups = schedule.lr.shape[1]

    def draw(ax, values, label):
        # piecewise-constant schedules (StepLR, plateaus) read best as stairs:
        # the value holds for the whole step
        flat = np.mean(np.diff(values, axis=0) == 0) > 0.5 if len(values) > 1 else False
        for g in range(values.shape[1]):
            ax.plot(steps, values[:, g], lw=1.6, drawstyle="steps-post" if flat else "default",
                    label=f"group {g}" if groups > 1 else None)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if groups > 1:
            ax.legend(loc="best", fontsize="small")

    draw(axes[0], schedule.lr, "learning rate")
    if schedule.momentum is not None:
        draw(axes[1], schedule.momentum, schedule.momentum_name)
    elif schedule.metrics is not None:
        axes[1].plot(steps, schedule.metrics, color="tab:gray", lw=1.6)
        axes[1].set_ylabel("metric")
        axes[1].grid(True, alpha=0.3)
    axes[-1].set_xlabel("step")
    title = schedule.title if title is None else title
    axes[0].set_title(textwrap.fill(title, 90, break_long_words=False), fontsize="medium")
    fig.savefig(path, format="png")


USAGE = f"""\
usage: python -m nbopt schedule NAME [--ARG VALUE ...] [--steps N] [--plot out.png] [--exact]
                                [--lr LR] [--momentum M] [--optimizer CLASS] [--metrics m0,m1,...]

Print the learning rate of every step of an nbopt.lr_scheduler schedule (and
the momentum / beta1 when the scheduler cycles it); --plot also draws it.

  NAME              one of: {", ".join(SCHEDULERS)}
  --ARG VALUE       a constructor argument of NAME, read as a Python literal
                    (0.1, 100, [30, 60], True) or else as a string (cos);
                    --lr_lambda / --scale_fn take an expression of epoch / x
                    ("0.95 ** epoch"); --schedulers a list of calls
                    ("[LinearLR(total_iters=5), ExponentialLR(gamma=0.9)]")
  --steps N         rows to print (default {DEFAULT_STEPS}; OneCycleLR: its total steps)
  --lr LR           the dummy optimizer's lr (default 0.1; a list = one group each)
  --momentum M      its momentum (default 0.9, so CyclicLR/OneCycleLR can cycle it)
  --optimizer CLASS nbopt optimizer class (default SGD; Adam cycles beta1)
  --metrics LIST    ReduceLROnPlateau's metric per step, comma separated (the last
                    repeats); default: falls from 1.0 to 0.5 over half the run, then flat
  --plot FILE       also write a PNG plot (needs matplotlib: pip install 'nbopt[plot]')
  --exact           print each value's shortest round-trip repr (default: 6 significant
                    digits)

examples:
  python -m nbopt schedule OneCycleLR --max_lr 0.1 --total_steps 100 --plot onecycle.png
  python -m nbopt schedule CyclicLR --base_lr 0.01 --max_lr 0.1 --step_size_up 10 --steps 60
  python -m nbopt schedule LambdaLR --lr_lambda "0.9 ** epoch" --steps 20
  python -m nbopt schedule ReduceLROnPlateau --patience 3 --factor 0.5 --steps 40
"""


def main(argv=None) -> int:
    """Entry point of ``python -m nbopt schedule``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and (argv[0] in ("-h", "--help") or "--help" in argv or "-h" in argv):
        sys.stdout.write(USAGE)
        return 0
    if not argv:
        return usage_error(PROG, SHORT_USAGE, "the following arguments are required: NAME")
    try:
        _, _, own = parse_argv(argv)
        # checked before computing anything: the table must not print and
        # then end in a traceback because the plot cannot be written
        plot = _own(own, "plot", output_file)
        if plot is not None:
            _import_matplotlib()
        schedule = compute(argv)
    except UsageError as exc:
        return usage_error(PROG, SHORT_USAGE, str(exc))
    except RuntimeError as exc:
        if str(exc) != MISSING_MATPLOTLIB:
            raise
        return usage_error(PROG, SHORT_USAGE, str(exc))
    sys.stdout.write(format_table(schedule, exact="exact" in own))
    for note in schedule.notes:
        print(f"warning: {note}", file=sys.stderr)
    if plot is not None:
        plot_schedule(schedule, plot)
        print(f"wrote {plot}", file=sys.stderr)
    return 0
