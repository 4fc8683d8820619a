"""ZeRO stage 1: optimizer state sharded across ranks by contiguous ranges of
the flat parameter space (:class:`ZeroRedundancyOptimizer`)."""
from __future__ import annotations

import time
from copy import deepcopy
from itertools import chain

import numpy as np

from ..engine import param_where, parse_state
from ..optimizer import ElementwiseOptimizer, Optimizer, typename
from ..parameter import Parameter
from ._common import (Average, agree, flat_spaces, flat_view, get_comm, layout_order,
                      presence_signature, validate_local_step)

__all__ = ["ZeroRedundancyOptimizer"]


class ZeroRedundancyOptimizer(Optimizer):
    r"""Wrap an element-wise optimizer class and shard its state across the
    ranks of an MPI communicator (torch's
    ``torch.distributed.optim.ZeroRedundancyOptimizer``, ZeRO stage 1).

    **Sharding.**  For each (param group, dtype) the parameters are laid out back to back
    (each in its memory order, complex ones as their real view): a flat
    space of N elements.  Rank ``r`` owns the contiguous range
    ``[r*S, min((r+1)*S, N))`` with ``S = ceil(N/P)``: equal shards, balanced
    by bytes, a parameter split between ranks where a boundary falls inside
    it (torch assigns whole parameters).  The local optimizer
    (:attr:`optim`, an ``optimizer_class`` instance) steps *pieces*: 1-D
    :class:`nbopt.Parameter` views of this rank's range of each parameter's
    own memory, back to back in a shard gradient buffer, so its state
    (``exp_avg``, ...) is 1/P of the single-process state plus O(1), and its
    step is one kernel call per (group, dtype) as usual.  Element-wise
    algorithms treat every element alone, so stepping pieces is stepping
    the parameters; per-parameter step counts are kept per piece and agree.

    **Step (communication pattern).**

    1. Every rank validates its gradients, the options and the local step;
       one small ``Allreduce`` (MAX, P + 2 int64) agrees that all ranks
       passed (otherwise every rank raises; nothing changed anywhere).
    2. Rank-ordered reduce-scatter of the flat gradient (``Alltoallv``,
       then ``((g_0 + g_1) + ... + g_{P-1}) / P`` in the dtype): this rank's
       range of the averaged gradient, bit-identical to one process that
       averages the P gradients in rank order.
    3. The local optimizer's step on this rank's pieces (in place in the
       parameters' memory).
    4. ``Allgatherv`` of the updated parameters (in place when the
       parameters are views of one :class:`nbopt.ParameterArena` buffer,
       else through a flat mirror copied back into each parameter).

    torch's ZeRO leaves gradient averaging to ``DistributedDataParallel``;
    nbopt has no DDP, so step 2 is done here.  Step 1's agreement and the
    reduce-scatter run also for parameters whose gradient is None on every
    rank (they are skipped, as torch skips them; ranks must agree on which).

    Parameters
    ----------
    params : iterable
        Parameters or param-group dicts, as for any optimizer.
    optimizer_class : type
        An element-wise nbopt optimizer class (``nbopt.Adam``, ``nbopt.SGD``,
        ...).  LBFGS, SparseAdam, Adafactor and Muon need whole parameters
        and are refused.
    process_group : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD`` (torch's default process group).
    parameters_as_bucket_view : bool
        Stored, as torch's flag.  torch re-points parameters into a bucket;
        nbopt never re-points a user's arrays: give it parameters that are
        views of one :class:`nbopt.ParameterArena` buffer and both
        collectives run in place in that buffer (no packing), whatever the
        flag.
    overlap_with_ddp : bool
        Must be False: it needs torch's ``DistributedDataParallel``
        communication hook, which has no counterpart here.
    \*\*defaults
        The optimizer's options (``lr=...``), as torch passes them.

    Notes
    -----
    ``consolidate_state_dict(to=0)`` (on every rank) then ``state_dict()``
    on rank ``to`` returns exactly the single-process optimizer's
    ``state_dict()`` (torch's layout: whole parameters, global ids).
    ``load_state_dict`` takes such a dict on every rank and keeps this
    rank's ranges (re-sharding).  For large models,
    :func:`nbopt.distributed.save_sharded` / ``load_sharded`` write one
    file per rank and load on any number of ranks.

    Examples
    --------
    In one process the shard is everything, and the consolidated state is
    the single-process optimizer's:

    >>> import numpy as np, nbopt
    >>> from nbopt.distributed import ZeroRedundancyOptimizer
    >>> w = nbopt.Parameter(np.ones(4, np.float32))
    >>> opt = ZeroRedundancyOptimizer([w], optimizer_class=nbopt.Adam, lr=0.1)
    >>> w.grad = np.ones(4, np.float32)
    >>> opt.step()
    >>> [round(float(v), 4) for v in w]
    [0.9, 0.9, 0.9, 0.9]
    >>> opt.consolidate_state_dict(to=0)
    >>> sorted(opt.state_dict()["state"][0])
    ['exp_avg', 'exp_avg_sq', 'step']

    A training script, run with ``mpiexec -n 2 python script.py``::

        import numpy as np, nbopt
        from nbopt.distributed import ZeroRedundancyOptimizer
        arena = nbopt.ParameterArena([np.zeros((1000, 100)), np.zeros(100)],
                                     dtype=np.float32)
        opt = ZeroRedundancyOptimizer(arena.params, optimizer_class=nbopt.Adam, lr=1e-3)
        for batch in my_shard_of_the_data():
            arena.grad[...] = local_gradient(arena.data, batch)
            opt.step()     # each rank keeps half of Adam's exp_avg/exp_avg_sq
        opt.consolidate_state_dict(to=0)
        if opt.rank == 0:
            nbopt.save(opt.state_dict(), "adam.npz")   # == single-process Adam's
    """

    def __init__(self, params, optimizer_class: type, process_group=None,
                 parameters_as_bucket_view: bool = False, overlap_with_ddp: bool = False,
                 **defaults) -> None:
        if isinstance(params, np.ndarray):
            raise TypeError("`params` argument should be an iterable of "
                            f"Tensors, but got {typename(params)}")
        try:
            all_params = list(params)
        except TypeError as e:
            raise TypeError("`params` argument should be an iterable of Tensors"
                            f" or dicts, but got {typename(params)}") from e
        if len(all_params) == 0:
            raise ValueError("ZeroRedundancyOptimizer got an empty parameter list")
        all_tensors = all(isinstance(p, np.ndarray) for p in all_params)
        all_dicts = all(isinstance(p, dict) for p in all_params)
        if not all_tensors and not all_dicts:
            raise TypeError("`params` argument should be an iterable of Tensors or dicts")
        if all_dicts:
            for group in all_params:
                if "params" not in group:
                    raise ValueError("Each parameter group passed-in via `params` must "
                                     "have a 'params' key mapping to the parameters in "
                                     "the group")
        if overlap_with_ddp:
            raise ValueError("overlap_with_ddp=True needs torch's DistributedDataParallel "
                             "communication hook, which nbopt does not have: use "
                             "overlap_with_ddp=False (ZeroRedundancyOptimizer.step reduces "
                             "the gradients itself)")
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class,
                                                                 ElementwiseOptimizer)):
            name = getattr(optimizer_class, "__name__", repr(optimizer_class))
            raise TypeError("ZeroRedundancyOptimizer shards the flat parameter space, "
                            "splitting parameters between ranks, and needs an element-wise "
                            f"optimizer_class (nbopt.Adam, nbopt.SGD, ...); got {name}")
        self.process_group = get_comm(process_group)
        self.world_size = self.process_group.Get_size()
        self.rank = self.process_group.Get_rank()
        self.global_rank = self.rank
        self.parameters_as_bucket_view = bool(parameters_as_bucket_view)
        self._overlap_with_ddp = False
        self._optim_defaults = defaults
        self._optim_constructor = optimizer_class
        self._spaces: list = []
        self._pieces: list = []      # (piece, space index, param index in space, a, b)
        self._shard_grads: list = []
        self._consolidated = None
        #: seconds spent in the last step's phases: "check" (validation and
        #: the agreement Allreduce), "reduce_scatter", "step" (the local
        #: optimizer), "allgather"
        self.step_times: dict = {}
        self.initialized = False
        self.optim = None
        Optimizer.__init__(self, all_params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if not isinstance(p, Parameter):
                    raise TypeError("ZeroRedundancyOptimizer shards host (NumPy) parameters; "
                                    f"got a {type(p).__name__}")
        local_groups = [self._local_group(gi, g) for gi, g in enumerate(self.param_groups)]
        self.optim = optimizer_class(local_groups, **defaults)
        self._sync_param_groups(self.optim.param_groups, self.param_groups)
        self.initialized = True

    # -- partition ------------------------------------------------------------------
    def _local_group(self, gi: int, group: dict) -> dict:
        """Build the flat spaces and pieces of group ``gi``; returns the local
        optimizer's group (options, and this rank's pieces)."""
        start = len(self._spaces)
        self._spaces.extend(flat_spaces(self.process_group, [group]))
        pieces = []
        for si in range(start, len(self._spaces)):
            space = self._spaces[si]
            space.group_index = gi
            shard_grad = np.zeros(space.hi - space.lo, space.dtype)
            self._shard_grads.append(shard_grad)
            for i, a, b in space.pieces():
                off = int(space.offsets[i]) - space.lo
                piece = Parameter(flat_view(space.params[i])[a:b])
                self._pieces.append((piece, si, i, a, b, shard_grad[off + a:off + b]))
                pieces.append(piece)
        local = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        local["params"] = pieces
        return local

    def add_param_group(self, param_group: dict) -> None:
        """Add a param group (on every rank): its parameters get flat spaces
        and shards of their own; the existing shards do not move."""
        Optimizer.add_param_group(self, param_group)
        if self.initialized:
            gi = len(self.param_groups) - 1
            self.optim.add_param_group(self._local_group(gi, self.param_groups[gi]))
            self._sync_param_groups(self.optim.param_groups, self.param_groups)

    @staticmethod
    def _sync_param_groups(src: list, dst: list) -> None:
        """Copy every option (not the params) of ``src``'s groups into
        ``dst``'s (torch's ZeRO does the same)."""
        for s, d in zip(src, dst):
            for k, v in s.items():
                if k not in ("params", "param_names"):
                    d[k] = v

    def _global_ids(self) -> dict:
        ids: dict = {}
        for g in self.param_groups:
            for p in g["params"]:
                ids.setdefault(id(p), len(ids))
        return ids

    # -- step -----------------------------------------------------------------------
    def step(self, closure=None, **kwargs):
        """Reduce-scatter the gradients, step this rank's shard, allgather
        the parameters (see the class notes); every rank must call it.

        ``closure``, if given, is called once first (it computes this rank's
        gradients) and its value returned.
        """
        loss = closure() if closure is not None else None
        comm = self.process_group
        t0 = time.perf_counter()
        error, signature, presence = None, 0, []
        try:
            self._sync_param_groups(self.param_groups, self.optim.param_groups)
            presence = [s.check_grads("ZeroRedundancyOptimizer") for s in self._spaces]
            for piece, si, i, _, _, grad in self._pieces:
                want = grad if presence[si][i] else None
                if piece.grad is not want:
                    piece.grad = want
            validate_local_step(self.optim)
            signature = presence_signature([(s.group_index, s.dtype.str, s.total, tuple(pres))
                                            for s, pres in zip(self._spaces, presence)])
        except Exception as error_:   # noqa: BLE001 - every rank must learn of it
            error = error_
        agree(comm, error, signature, what="ZeroRedundancyOptimizer.step")
        t1 = time.perf_counter()
        for s, pres, shard_grad in zip(self._spaces, presence, self._shard_grads):
            if any(pres):
                flat, _ = s.grad_buffer(pres)
                s.reduce_scatter(flat, shard_grad, Average)
        t2 = time.perf_counter()
        self.optim.step(**kwargs)
        t3 = time.perf_counter()
        for s, pres in zip(self._spaces, presence):
            if any(pres):
                flat, in_place = s.param_buffer()
                if not in_place:
                    s.fill_own(flat)
                s.allgather(flat)
                if not in_place:
                    s.scatter_params(flat)
        self._sync_param_groups(self.optim.param_groups, self.param_groups)
        self.step_times = {"check": t1 - t0, "reduce_scatter": t2 - t1, "step": t3 - t2,
                           "allgather": time.perf_counter() - t3}
        return loss

    # -- state ----------------------------------------------------------------------
    def _local_entries(self) -> list:
        """``(global id, a, b, entry)`` for this rank's pieces with state: the
        piece's state values copied (flat arrays over elements [a, b) of the
        parameter's real view in memory order; scalars as 0-d arrays)."""
        ids = self._global_ids()
        out = []
        for piece, si, i, a, b, _ in self._pieces:
            entry = self.optim.state.get(piece)
            if entry:
                p = self._spaces[si].params[i]
                out.append((ids[id(p)], a, b,
                            {k: (np.array(v) if isinstance(v, np.ndarray) else v)
                             for k, v in entry.items()}))
        return out

    def _params_by_id(self) -> list:
        ids = self._global_ids()
        params = [None] * len(ids)
        for g in self.param_groups:
            for p in g["params"]:
                params[ids[id(p)]] = p
        return params

    def _assemble(self, entries) -> dict:
        """Whole-parameter state (the single-process layout) from pieces
        ``(gid, a, b, entry)`` of every rank."""
        params = self._params_by_id()
        array_names = set(self.optim._spec.state_names)
        by_id: dict = {}
        for gid, a, b, entry in entries:
            by_id.setdefault(gid, []).append((a, b, entry))
        state = {}
        for gid in sorted(by_id):
            p = params[gid]
            parts = sorted(by_id[gid], key=lambda t: t[0])
            n = p.size * (2 if p.dtype.kind == "c" else 1)
            edges = [0] + [b for _, b, _ in parts]
            if [a for a, _, _ in parts] != edges[:-1] or edges[-1] != n:
                raise ValueError(f"the state of parameter {gid} does not cover it: pieces "
                                 f"{[(a, b) for a, b, _ in parts]} of {n} elements")
            first = parts[0][2]
            entry = {}
            for key, value in first.items():
                if key in array_names and isinstance(value, np.ndarray):
                    flat = np.concatenate([e[key].reshape(-1) for _, _, e in parts])
                    if p.dtype.kind == "c":
                        flat = flat.view(p.dtype)
                    entry[key] = flat.reshape(p.shape, order=layout_order(p))
                else:
                    entry[key] = deepcopy(value)
            state[gid] = entry
        return state

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's shard of the state on rank ``to`` (call it on
        every rank): afterwards ``state_dict()`` there is the single-process
        optimizer's.  One ``gather`` of the pieces (mpi4py's pickle)."""
        self._sync_param_groups(self.param_groups, self.optim.param_groups)
        gathered = self.process_group.gather(self._local_entries(), root=to)
        if self.rank == to:
            self._consolidated = self._assemble(chain.from_iterable(gathered))
        else:
            self._consolidated = None

    def _packed_groups(self) -> list:
        ids = self._global_ids()
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = [ids[id(p)] for p in g["params"]]
            groups.append(packed)
        return groups

    def state_dict(self) -> dict:
        """The last consolidated global state, in the single-process
        optimizer's layout (raises unless :meth:`consolidate_state_dict` sent
        it to this rank)."""
        if self._consolidated is None:
            raise RuntimeError("Optimizer state has not been consolidated on this rank. "
                               f"Please call `consolidate_state_dict(to={self.rank})` on "
                               "all ranks beforehand if you meant to save the global state.")
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state_dict = {"state": dict(self._consolidated), "param_groups": self._packed_groups()}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    # -- loading --------------------------------------------------------------------
    def _check_groups(self, saved_groups) -> list:
        """torch's load_state_dict checks of the param groups, with its messages."""
        if not isinstance(saved_groups, (list, tuple)):
            raise TypeError("loaded state dict's 'param_groups' must be a list of dicts")
        saved_groups = deepcopy(list(saved_groups))
        if len(self.param_groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g in saved_groups:
            if not isinstance(g, dict) or "params" not in g:
                raise ValueError("loaded state dict has a parameter group without 'params'")
        if any(len(g["params"]) != len(s["params"])
               for g, s in zip(self.param_groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group "
                             "that doesn't match the size of optimizer's group")
        for gi, g in enumerate(saved_groups):
            self.optim._check_loaded_group(g, gi)
        return saved_groups

    def _local_state_dict(self, saved_groups: list, piece_entry) -> dict:
        """The local optimizer's state dict: ``piece_entry(gid, a, b)`` gives
        each piece's entry (or None); validated as the local optimizer's
        ``load_state_dict`` will validate it, so that loading cannot fail
        after the ranks agreed."""
        ids = self._global_ids()
        spec = self.optim._spec
        local_ids = {id(piece): k for k, (piece, *_) in enumerate(self._pieces)}
        state = {}
        for piece, si, i, a, b, _ in self._pieces:
            p = self._spaces[si].params[i]
            entry = piece_entry(ids[id(p)], a, b)
            if entry:
                gi = self._spaces[si].group_index
                group = {**self.optim.defaults, **self.optim._group_setdefaults,
                         **saved_groups[gi]}
                value = Optimizer._cast(piece, entry)
                where = (f"{param_where(gi, self._spaces[si].positions[i])} "
                         f"(elements {a}:{b}, held by rank {self.rank})")
                parse_state(spec, group, piece, value, where, what="loaded state")
                state[local_ids[id(piece)]] = entry
        groups = []
        for g, lg in zip(saved_groups, self.optim.param_groups):
            local = {k: v for k, v in g.items() if k not in ("params", "param_names")}
            local["params"] = [local_ids[id(piece)] for piece in lg["params"]]
            groups.append(local)
        return {"state": state, "param_groups": groups}

    def _apply_loaded(self, local_sd: dict, saved_groups: list) -> None:
        self.optim.load_state_dict(local_sd)
        new_groups = []
        for g, sg in zip(self.param_groups, saved_groups):
            new = {k: v for k, v in sg.items() if k != "params"}
            new["params"] = g["params"]
            if "param_names" in g and "param_names" not in new:
                new["param_names"] = g["param_names"]
            new_groups.append(new)
        self.param_groups = new_groups
        self._sync_param_groups(self.optim.param_groups, self.param_groups)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a single-process ``state_dict()`` (as :meth:`state_dict`
        returns it) on every rank; each keeps its own ranges (re-sharding to
        this communicator's size).  Validated on every rank first; one
        agreement ``Allreduce``; then applied: on an error every rank raises
        and nothing changed."""
        error, local_sd, saved_groups = None, None, None
        try:
            state_dict = state_dict.copy()
            for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
                result = pre_hook(self, state_dict)
                if result is not None:
                    state_dict = result
            saved_groups = self._check_groups(state_dict["param_groups"])
            saved_state = state_dict["state"]
            if not isinstance(saved_state, dict):
                raise TypeError("loaded state dict's 'state' must be a dict")
            params = self._params_by_id()
            saved_ids = list(chain.from_iterable(g["params"] for g in saved_groups))
            id_map = dict(zip(saved_ids, range(len(saved_ids))))
            spec = self.optim._spec
            full = {}
            for gi, g in enumerate(saved_groups):
                group = {**self.optim.defaults, **self.optim._group_setdefaults, **g}
                for k, sid in enumerate(g["params"]):
                    if sid not in saved_state:
                        continue
                    p, entry = params[id_map[sid]], saved_state[sid]
                    if not isinstance(entry, dict):
                        raise ValueError(f"loaded state for {param_where(gi, k)} must be a "
                                         f"dict, got {type(entry).__name__}")
                    value = Optimizer._cast(p, entry)
                    if value:
                        parse_state(spec, group, p, value, param_where(gi, k),
                                    what="loaded state")
                    full[id_map[sid]] = value
            array_names = set(spec.state_names)

            def piece_entry(gid, a, b):
                entry = full.get(gid)
                if not entry:
                    return None
                p = params[gid]
                out = {}
                for key, value in entry.items():
                    if key in array_names and isinstance(value, np.ndarray):
                        v = np.asarray(value)
                        flat = np.ravel(v, order=layout_order(p))
                        if flat.dtype.kind == "c":
                            flat = flat.view(np.finfo(flat.dtype).dtype)
                        out[key] = flat[a:b].copy()
                    else:
                        out[key] = deepcopy(value)
                return out

            local_sd = self._local_state_dict(saved_groups, piece_entry)
        except Exception as error_:   # noqa: BLE001
            error = error_
        agree(self.process_group, error, what="ZeroRedundancyOptimizer.load_state_dict")
        self._apply_loaded(local_sd, saved_groups)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __getstate__(self):
        raise TypeError("a ZeroRedundancyOptimizer holds one rank's shard and a communicator; "
                        "save its state with consolidate_state_dict()/state_dict() or "
                        "nbopt.distributed.save_sharded")

    def __repr__(self) -> str:
        return (f"ZeroRedundancyOptimizer(rank {self.rank} of {self.world_size}, "
                f"{Optimizer.__repr__(self.optim)})")
