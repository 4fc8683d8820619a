"""``swap_in_optimizer_params_and_state``: torch 2.13's context manager
(``torch.optim._stateless``) for NumPy parameters."""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any, NamedTuple

import numpy as np

from ..parameter import DeviceParameter

__all__ = ["swap_in_optimizer_params_and_state"]


class _GroupSwapinInfo(NamedTuple):
    """Per-group bookkeeping: the live ``optimizer.param_groups[i]`` (changed
    in place), the swap-in group dict (hyper-parameters plus packed
    ``params`` ids) and the parameters that replace the live group's, in the
    order of the swap-in group's ids."""

    live_group: dict[str, Any]
    swapin_group: dict[str, Any]
    swapin_params: list


def _is_tensor(x) -> bool:
    return isinstance(x, (np.ndarray, DeviceParameter))


def _validate_state_field(state: Any) -> dict[Any, Any]:
    """``state`` must map packed parameter ids to per-parameter state dicts."""
    if not isinstance(state, dict):
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires swapin_optim_state['state'] to "
            "be a dict mapping packed parameter ids to per-param state dicts, "
            f"got {type(state).__name__}.")
    if any(_is_tensor(k) for k in state):
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires optimizer.state_dict()-style "
            "state keyed by packed parameter ids.")
    if any(isinstance(k, int) and not isinstance(v, dict) for k, v in state.items()):
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires per-parameter optimizer "
            "state entries to be dictionaries.")
    return state


def _validate_param_groups_field(optimizer, param_groups: Any) -> list[dict[str, Any]]:
    """``param_groups`` must be a list as long as the live optimizer's."""
    if not isinstance(param_groups, list):
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires swapin_optim_state['param_groups'] "
            f"to be a list of param-group dicts, got {type(param_groups).__name__}.")
    if len(optimizer.param_groups) != len(param_groups):
        raise RuntimeError(
            "swapin_optim_state has a different number of parameter groups than "
            "the live optimizer.")
    return param_groups


def _validate_group_against_live(idx: int, group: dict[str, Any], swapin_group: Any) -> list:
    """A swap-in group: a dict whose ``params`` is a list of ints as long as
    the live group's params, with exactly the live group's keys; returns its
    packed ids."""
    if not isinstance(swapin_group, dict):
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires each optimizer param group "
            "to be a dictionary.")
    swapin_param_ids = swapin_group.get("params")
    if not isinstance(swapin_param_ids, list) or not all(
            isinstance(pid, int) for pid in swapin_param_ids):
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires optimizer.state_dict()-style "
            "param_groups[*]['params'] entries keyed by packed parameter ids.")
    if len(group["params"]) != len(swapin_param_ids):
        raise RuntimeError(
            f"swapin_optim_state param group {idx} has a different number of "
            "params than the live optimizer param group.")
    swapin_only = [k for k in swapin_group if k not in group]
    live_only = [k for k in group if k not in swapin_group]
    if swapin_only or live_only:
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires optimizer.state_dict()-style "
            "param group keys to exactly match the live optimizer group keys for "
            f"group {idx}. "
            f"Keys only in swap-in: {swapin_only}. Keys only in live: {live_only}.")
    return swapin_param_ids


def _prepare_swap_in(optimizer, swapin_parameters: dict, swapin_optim_state: dict):
    """Validate everything (torch's checks, in torch's order, all
    RuntimeErrors); returns the swap-in ``state`` and the per-group plan."""
    if not optimizer.state:
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires initialized optimizer state.")
    if not isinstance(swapin_optim_state, dict):
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires a DCP-style optimizer state_dict.")
    swapin_state = _validate_state_field(swapin_optim_state.get("state"))
    swapin_param_groups = _validate_param_groups_field(
        optimizer, swapin_optim_state.get("param_groups"))

    # packed ids address parameters by position: the explicit parameters are
    # aligned with optimizer.param_groups by order
    flat_parameters = list(swapin_parameters.values())
    offset = 0
    seen_param_ids: set = set()
    infos = []
    for idx, (group, swapin_group) in enumerate(
            zip(optimizer.param_groups, swapin_param_groups, strict=True)):
        swapin_param_ids = _validate_group_against_live(idx, group, swapin_group)
        seen_param_ids.update(swapin_param_ids)
        next_offset = offset + len(swapin_param_ids)
        if next_offset > len(flat_parameters):
            raise RuntimeError(
                "swap_in_optimizer_params_and_state requires the explicit parameter state to "
                "match optimizer.param_groups ordering.")
        infos.append(_GroupSwapinInfo(group, swapin_group, flat_parameters[offset:next_offset]))
        offset = next_offset

    extra_keys = [k for k in swapin_state if k not in seen_param_ids]
    if extra_keys:
        raise RuntimeError(
            "swap_in_optimizer_params_and_state requires swapin_optim_state['state'] to "
            "be keyed only by packed parameter ids from "
            f"param_groups[*]['params']; got extra keys {extra_keys!r}.")
    return swapin_state, infos


def _copy_back(live_state, given: list) -> None:
    """Write the swapped-in state's current values into the caller's arrays
    that the optimizer adopted by copying (the element-wise engine keeps its
    state in flat arrays): torch updates those tensors in place."""
    for param, entry in given:
        current = live_state.get(param)
        if not current:
            continue
        for key, theirs in entry.items():
            ours = current.get(key)
            if ours is theirs or not isinstance(theirs, np.ndarray) \
                    or not isinstance(ours, np.ndarray) or not theirs.flags.writeable \
                    or np.shape(ours) != theirs.shape:
                continue
            np.copyto(theirs, ours, casting="unsafe")


@contextlib.contextmanager
def swap_in_optimizer_params_and_state(optimizer, swapin_parameters: dict,
                                       swapin_optim_state: dict):
    """Temporarily replace an optimizer's parameters and state with the given
    ones, and restore them on exit (also when the body raises), as
    ``torch.optim.swap_in_optimizer_params_and_state``.

    For the duration of the context every optimizer API (``step``, hooks,
    ``state_dict``, ...) sees the swap-in values.  Unlike
    ``load_state_dict``, which only replaces the state, this also swaps the
    parameters, so that ``optimizer.step()`` updates the arrays you supply.

    Parameters
    ----------
    optimizer : nbopt.Optimizer
        The live optimizer; its state must already be initialised (it has
        stepped).
    swapin_parameters : dict
        name -> parameter to use during the context (:class:`nbopt.Parameter`
        objects, whose ``.grad`` the step reads), in the order of the
        optimizer's parameters (group by group).
    swapin_optim_state : dict
        A ``state_dict()``-shaped dict: ``"state"`` keyed by packed integer
        ids, ``"param_groups"`` mirroring ``optimizer.param_groups`` with
        ``"params"`` lists of those ids and exactly the live groups' other keys
        (the hyper-parameters installed for the context).  The optimizer's
        in-place updates of its arrays reach these arrays (after each
        ``step`` and on exit; nbopt's element-wise optimizers keep their state
        in flat arrays of their own, and copy it back into yours); other
        changes (a new state entry, a rebound key) stay inside the context.

    Raises
    ------
    RuntimeError
        torch's messages, before anything changes: uninitialised optimizer
        state, a swap-in state that is not ``state_dict()``-shaped (state not
        a dict keyed by ints with dict values, param_groups not a list of as
        many groups, ``params`` not lists of ints of the live groups' lengths,
        other keys than the live groups', ids in ``state`` that no group
        lists), or fewer parameters than the groups' ids.

    Examples
    --------
    >>> import numpy as np, nbopt
    >>> from nbopt.optim import swap_in_optimizer_params_and_state
    >>> w = nbopt.Parameter(np.ones(3))
    >>> opt = nbopt.SGD([w], lr=0.1, momentum=0.9)
    >>> w.grad = np.ones(3)
    >>> opt.step()                                  # the live state exists
    >>> other = nbopt.Parameter(np.zeros(3))
    >>> other.grad = np.ones(3)
    >>> saved = {"state": {0: {"momentum_buffer": np.full(3, 2.0)}},
    ...          "param_groups": [dict(opt.state_dict()["param_groups"][0], lr=1.0)]}
    >>> with swap_in_optimizer_params_and_state(opt, {"w": other}, saved):
    ...     opt.step()                              # steps `other` with lr 1.0
    >>> np.asarray(other)                           # 0 - 1.0 * (0.9 * 2 + 1)
    array([-2.8, -2.8, -2.8])
    >>> saved["state"][0]["momentum_buffer"]       # updated in place
    array([2.8, 2.8, 2.8])
    >>> np.asarray(w), opt.param_groups[0]["lr"]   # the live optimizer is untouched
    (array([0.9, 0.9, 0.9]), 0.1)
    """
    state, infos = _prepare_swap_in(optimizer, swapin_parameters, swapin_optim_state)

    original_state = optimizer.state
    # shallow copies: the full pre-swap contents, and the identity of each
    # group's ``params`` list
    original_group_snapshots = [dict(g) for g in optimizer.param_groups]
    # the element-wise engine's per-group plans (flat state, pointer tables)
    # belong to the live parameters: set aside and restored untouched
    original_plans = optimizer.__dict__.get("_flat")
    given = []
    hook = None
    from ..optimizer import ElementwiseOptimizer

    try:
        swapin_state: defaultdict = defaultdict(dict)
        for info in infos:
            info.live_group["params"] = info.swapin_params
            for key, value in info.swapin_group.items():
                if key != "params":
                    info.live_group[key] = value
            for param, param_id in zip(info.swapin_params, info.swapin_group["params"],
                                       strict=True):
                # shallow copies: in-place updates reach the caller's arrays,
                # structural changes stay here
                entry = state.get(param_id, {})
                swapin_state[param] = dict(entry)
                given.append((param, entry))
        if original_plans is not None:
            optimizer._flat = {}
        optimizer.state = swapin_state
        if isinstance(optimizer, ElementwiseOptimizer):
            hook = optimizer.register_step_post_hook(
                lambda opt, args, kwargs: _copy_back(opt.state, given))
        yield
    finally:
        if hook is not None:
            hook.remove()
            _copy_back(optimizer.state, given)
        for group, snapshot in zip(optimizer.param_groups, original_group_snapshots,
                                   strict=True):
            group.clear()
            group.update(snapshot)
        if original_plans is not None:
            optimizer._flat = original_plans
        optimizer.state = original_state
