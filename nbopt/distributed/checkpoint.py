"""Sharded checkpoints of a :class:`ZeroRedundancyOptimizer`: one file per
rank, written by that rank with :func:`nbopt.save` (atomic), plus a small
index written last by rank 0; loadable on any number of ranks."""
from __future__ import annotations

import hashlib
import os
import re
import secrets

import numpy as np

from ..checkpoint import load, save
from ._common import agree
from .zero import ZeroRedundancyOptimizer

__all__ = ["save_sharded", "load_sharded", "INDEX_NAME"]

INDEX_NAME = "index.npz"
_INDEX_FORMAT = "nbopt-zero-index"
_SHARD_FORMAT = "nbopt-zero-shard"
_VERSION = 1
_SHARD_RE = re.compile(r"^shard-([0-9a-f]{16})-(\d{5})-of-(\d{5})\.npz$")


def _shard_name(token: str, rank: int, size: int) -> str:
    return f"shard-{token}-{rank:05d}-of-{size:05d}.npz"


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_zero(optimizer) -> None:
    if not isinstance(optimizer, ZeroRedundancyOptimizer):
        raise TypeError("sharded checkpoints hold a ZeroRedundancyOptimizer's shards; got "
                        f"{type(optimizer).__name__} (save its state_dict() with nbopt.save)")


def save_sharded(optimizer, path) -> None:
    """Write a :class:`ZeroRedundancyOptimizer`'s state to directory ``path``
    (call it on every rank).

    Each rank writes ``shard-<id>-<rank>-of-<P>.npz`` (its pieces' state,
    :func:`nbopt.save`: atomic, no pickle); then rank 0 writes
    ``index.npz`` (the checkpoint id, world size, the optimizer class, the
    parameters' shapes and dtypes, the param groups, and per shard its file
    name, size, SHA-256 and pieces), atomically, and removes the shards of
    older checkpoints in the directory.  The index is the commit point: a
    job killed during a save leaves the previous checkpoint loadable.
    Collectives: one ``bcast`` (the id), two agreement ``Allreduce``, one
    ``gather`` of the shard descriptions.

    Example (on every rank):

    >>> import os, tempfile, numpy as np, nbopt
    >>> from nbopt.distributed import ZeroRedundancyOptimizer, save_sharded, load_sharded
    >>> w = nbopt.Parameter(np.ones(4, np.float32))
    >>> opt = ZeroRedundancyOptimizer([w], nbopt.Adam, lr=0.1)
    >>> w.grad = np.ones(4, np.float32)
    >>> opt.step()
    >>> path = os.path.join(tempfile.mkdtemp(), "step-1")
    >>> save_sharded(opt, path)
    >>> sorted(f.split("-")[0] for f in os.listdir(path))
    ['index.npz', 'shard']
    >>> fresh = ZeroRedundancyOptimizer([w], nbopt.Adam, lr=0.1)
    >>> load_sharded(fresh, path)          # on any number of ranks
    >>> float(fresh.optim.state[fresh.optim.param_groups[0]["params"][0]]["step"])
    1.0
    """
    _check_zero(optimizer)
    comm = optimizer.process_group
    rank, size = comm.Get_rank(), comm.Get_size()
    token = comm.bcast(secrets.token_hex(8) if rank == 0 else None, root=0)
    directory = os.fspath(path)
    error, info = None, None
    try:
        optimizer._sync_param_groups(optimizer.param_groups, optimizer.optim.param_groups)
        os.makedirs(directory, exist_ok=True)
        entries = optimizer._local_entries()
        name = _shard_name(token, rank, size)
        shard = {"format": _SHARD_FORMAT, "version": _VERSION, "checkpoint": token,
                 "rank": rank, "world_size": size,
                 "pieces": [{"param": gid, "start": a, "stop": b, "state": entry}
                            for gid, a, b, entry in entries]}
        target = os.path.join(directory, name)
        save(shard, target)
        info = {"file": name, "bytes": os.path.getsize(target), "sha256": _digest(target),
                "pieces": [[gid, a, b] for gid, a, b, _ in entries]}
    except Exception as error_:   # noqa: BLE001
        error = error_
    agree(comm, error, what="save_sharded (writing the shards)")
    infos = comm.gather(info, root=0)
    error = None
    if rank == 0:
        try:
            params = optimizer._params_by_id()
            index = {"format": _INDEX_FORMAT, "version": _VERSION, "checkpoint": token,
                     "world_size": size, "optimizer": optimizer.optim.__class__.__name__,
                     "params": [{"shape": list(p.shape), "dtype": p.dtype.str} for p in params],
                     "param_groups": optimizer._packed_groups(), "shards": infos}
            save(index, os.path.join(directory, INDEX_NAME))
            for f in os.listdir(directory):
                m = _SHARD_RE.match(f)
                if m and m.group(1) != token:
                    os.unlink(os.path.join(directory, f))
        except Exception as error_:   # noqa: BLE001
            error = error_
    agree(comm, error, what="save_sharded (writing the index)")


def _read_index(directory: str, optimizer) -> dict:
    index_path = os.path.join(directory, INDEX_NAME)
    if not os.path.exists(index_path):
        raise FileNotFoundError(f"no sharded checkpoint in {directory!r}: {INDEX_NAME} is "
                                "missing (an interrupted save_sharded leaves the previous "
                                "index in place; none was ever written here)")
    index = load(index_path)
    if not isinstance(index, dict) or index.get("format") != _INDEX_FORMAT:
        raise ValueError(f"{index_path!r} is not a sharded-checkpoint index")
    if index.get("version") != _VERSION:
        raise ValueError(f"{index_path!r} has version {index.get('version')!r}; this nbopt "
                         f"reads version {_VERSION}")
    name = optimizer.optim.__class__.__name__
    if index["optimizer"] != name:
        raise ValueError(f"the checkpoint holds {index['optimizer']} state; this optimizer is "
                         f"a ZeroRedundancyOptimizer of {name}")
    params = optimizer._params_by_id()
    saved = index["params"]
    if len(saved) != len(params):
        raise ValueError(f"the checkpoint has {len(saved)} parameters; this optimizer has "
                         f"{len(params)}")
    for k, (p, s) in enumerate(zip(params, saved)):
        if tuple(s["shape"]) != p.shape or np.dtype(s["dtype"]) != p.dtype:
            raise ValueError(f"parameter {k}: the checkpoint has shape {tuple(s['shape'])} "
                             f"dtype {np.dtype(s['dtype'])}, this optimizer shape {p.shape} "
                             f"dtype {p.dtype}")
    return index


def load_sharded(optimizer, path) -> None:
    """Load a checkpoint written by :func:`save_sharded` into a
    :class:`ZeroRedundancyOptimizer` (call it on every rank), with the same
    or a different number of ranks: each rank reads only the shards that
    overlap its ranges.

    Every rank checks the index, that every shard file exists with its
    recorded size, and the SHA-256 of each shard it reads, then validates
    the state it builds as ``load_state_dict`` would; one agreement
    ``Allreduce``; then every rank applies its part.  A missing, truncated
    or corrupt shard (or a mismatched optimizer) raises on every rank and
    nothing is loaded anywhere.
    """
    _check_zero(optimizer)
    comm = optimizer.process_group
    directory = os.fspath(path)
    error, local_sd, saved_groups = None, None, None
    try:
        index = _read_index(directory, optimizer)
        saved_groups = optimizer._check_groups(index["param_groups"])
        token = index["checkpoint"]
        shards = index["shards"]
        if len(shards) != index["world_size"]:
            raise ValueError(f"the index lists {len(shards)} shards for "
                             f"{index['world_size']} ranks")
        for r, info in enumerate(shards):
            f = os.path.join(directory, info["file"])
            if info["file"] != _shard_name(token, r, len(shards)):
                raise ValueError(f"the index names shard {r} {info['file']!r}")
            if not os.path.exists(f):
                raise FileNotFoundError(f"sharded checkpoint {directory!r}: shard {r} of "
                                        f"{len(shards)} ({info['file']}) is missing")
            if os.path.getsize(f) != info["bytes"]:
                raise ValueError(f"sharded checkpoint {directory!r}: shard {r} "
                                 f"({info['file']}) has {os.path.getsize(f)} bytes, the "
                                 f"index says {info['bytes']} (truncated or replaced)")
        # which old pieces each of my pieces needs
        ids = optimizer._global_ids()
        mine = {}
        for _, si, i, a, b, _ in optimizer._pieces:
            gid = ids[id(optimizer._spaces[si].params[i])]
            mine.setdefault(gid, []).append((a, b))
        needed = sorted({r for r, info in enumerate(shards) for gid, a, b in info["pieces"]
                         if any(a < y and x < b for x, y in mine.get(gid, ()))})
        pieces = {}
        for r in needed:
            info = shards[r]
            f = os.path.join(directory, info["file"])
            if _digest(f) != info["sha256"]:
                raise ValueError(f"sharded checkpoint {directory!r}: shard {r} "
                                 f"({info['file']}) is corrupt (its SHA-256 does not match "
                                 "the index)")
            shard = load(f)
            if shard.get("format") != _SHARD_FORMAT or shard.get("checkpoint") != token \
                    or shard.get("rank") != r:
                raise ValueError(f"sharded checkpoint {directory!r}: {info['file']} is not "
                                 f"shard {r} of checkpoint {token}")
            for piece in shard["pieces"]:
                pieces.setdefault(piece["param"], []).append(piece)
        array_names = set(optimizer.optim._spec.state_names)

        def piece_entry(gid, a, b):
            parts = sorted((p for p in pieces.get(gid, ()) if p["start"] < b and a < p["stop"]),
                           key=lambda p: p["start"])
            if not parts:
                return None
            covered = a
            for p in parts:
                if p["start"] > covered:
                    break
                covered = max(covered, p["stop"])
            if parts[0]["start"] > a or covered < b:
                raise ValueError(f"sharded checkpoint {directory!r}: the state of parameter "
                                 f"{gid} is incomplete (elements {a}:{b} are not all saved)")
            entry = {}
            for key, value in parts[0]["state"].items():
                if key in array_names and isinstance(value, np.ndarray):
                    entry[key] = np.concatenate(
                        [p["state"][key][max(a, p["start"]) - p["start"]:
                                         min(b, p["stop"]) - p["start"]] for p in parts])
                else:
                    entry[key] = value
            return entry

        local_sd = optimizer._local_state_dict(saved_groups, piece_entry)
    except Exception as error_:   # noqa: BLE001
        error = error_
    agree(comm, error, what="load_sharded")
    optimizer._apply_loaded(local_sd, saved_groups)
