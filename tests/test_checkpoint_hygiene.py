"""Tests of nbopt.save/load hygiene: temporary files, permissions, symlinks, messages.

Companion to test_checkpoint.py (issue 11, items 9-11).
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nbopt.checkpoint import load, save

REPO = pathlib.Path(__file__).resolve().parent.parent
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX processes, modes and links")


def listing(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


# ----------------------------------------------- item 9: leftover temporaries

# Saves argv[2] arrays of zeros to argv[1], killed by SIGKILL at the fsync,
# i.e. after the temporary file has been written in full and before the rename.
KILLED_SAVE = """
import os, signal, sys
import numpy as np
import nbopt.checkpoint

os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
nbopt.checkpoint.save({"m": np.zeros(int(sys.argv[2]))}, sys.argv[1])
"""


def killed_save(path, size=1000):
    """Run a save to ``path`` in a subprocess, SIGKILL it mid-save; its PID."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    child = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path), str(size)],
                             env=env, cwd=REPO, stderr=subprocess.PIPE)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, stderr.decode()
    return child.pid


def dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftovers(directory, name):
    return [n for n in listing(directory) if n.startswith(f".{name}.") or
            (n.startswith(".") and "nbopt-tmp" in n)]


@posix_only
@pytest.mark.parametrize("name", ["ckpt", "my model.v2.npz", "x" * 200],
                         ids=["plain", "dots-and-space", "long-name"])
def test_killed_save_leaves_owned_temporary_that_next_save_removes(tmp_path, name):
    path = tmp_path / name
    save({"m": np.ones(3)}, path)
    for _ in range(3):
        child_pid = killed_save(path)
        # One leftover, of the last kill: each save removed its predecessor's.
        (leftover,) = [n for n in listing(tmp_path) if n != name]
        # Named after its target and owner, so that a later save can tell whose it is.
        assert re.fullmatch(rf"\.(.+)\.nbopt-tmp\.[A-Za-z0-9_-]+\.{child_pid}\.[0-9a-f]{{12}}",
                            leftover), leftover
        assert (tmp_path / leftover).stat().st_size > 8000  # the killed save's data
    # The kills left the old checkpoint intact...
    np.testing.assert_array_equal(load(path)["m"], np.ones(3))
    # ...and the next save clears up after it.
    save({"m": np.full(3, 2.0)}, path)
    assert listing(tmp_path) == [name]
    np.testing.assert_array_equal(load(path)["m"], np.full(3, 2.0))


@posix_only
def test_stale_cleanup_removes_only_dead_processes_temporaries_of_the_same_target(tmp_path):
    path = tmp_path / "ckpt"
    killed_save(path)
    (real,) = leftovers(tmp_path, "ckpt")
    host, pid = re.fullmatch(r"\.ckpt\.nbopt-tmp\.(.+)\.([0-9]+)\.[0-9a-f]{12}", real).groups()
    dead = dead_pid()
    stale = [real, f".ckpt.nbopt-tmp.{host}.{dead}.0123456789ab"]
    kept = [
        # Live owners: this process (its other thread could be saving) and its parent.
        f".ckpt.nbopt-tmp.{host}.{os.getpid()}.0123456789ab",
        f".ckpt.nbopt-tmp.{host}.{os.getppid()}.0123456789ab",
        # Another host: its PIDs say nothing about processes here.
        f".ckpt.nbopt-tmp.{host}x.{dead}.0123456789ab",
        # Another target.
        f".ckpt2.nbopt-tmp.{host}.{dead}.0123456789ab",
        f".ckp.nbopt-tmp.{host}.{dead}.0123456789ab",
        # Near misses of the exact pattern.
        f".ckpt.nbopt-tmp.{host}.{dead}.0123456789ab.bak",
        f".ckpt.nbopt-tmp.{host}.{dead}.0123456789AB",
        f".ckpt.nbopt-tmp.{host}.{dead}.0123456789a",
        f".ckpt.nbopt-tmp.{host}.0{dead}.0123456789ab",
        f".ckpt.nbopt-tmp.{host}.0.0123456789ab",
        f"ckpt.nbopt-tmp.{host}.{dead}.0123456789ab",
        f".ckpt.nbopt_tmp.{host}.{dead}.0123456789ab",
        # The old mkstemp naming: whose it is cannot be told.
        ".ckpt.k2j3h4g5.tmp",
    ]
    for name in stale[1:] + kept:
        (tmp_path / name).write_bytes(b"partial")
    # Only regular files are removed, even when the name fits.
    not_files = [f".ckpt.nbopt-tmp.{host}.{dead}.aaaaaaaaaaaa",
                 f".ckpt.nbopt-tmp.{host}.{dead}.bbbbbbbbbbbb"]
    (tmp_path / not_files[0]).mkdir()
    (tmp_path / not_files[1]).symlink_to(tmp_path / kept[0])

    save({"step": 1}, path)

    assert sorted(listing(tmp_path)) == sorted(["ckpt"] + kept + not_files)
    assert load(path) == {"step": 1}


@posix_only
def test_temporary_file_is_private_while_written(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    save({}, path)
    os.chmod(path, 0o644)
    modes = []
    real_savez = np.savez

    def spy(file, *args, **kwargs):
        modes.append(os.stat(file.fileno()).st_mode & 0o777)
        return real_savez(file, *args, **kwargs)

    monkeypatch.setattr(np, "savez", spy)
    save({"a": np.zeros(2)}, path)
    assert modes == [0o600]
    assert os.stat(path).st_mode & 0o777 == 0o644


# ------------------------------------------------ item 10: modes and symlinks


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o666, 0o444])
def test_overwrite_keeps_the_existing_file_mode(tmp_path, mode):
    path = tmp_path / "ckpt"
    save({"step": 1}, path)
    os.chmod(path, mode)
    save({"step": 2}, path)
    assert os.stat(path).st_mode & 0o777 == mode
    assert load(path) == {"step": 2}


@posix_only
def test_save_through_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    real_dir = tmp_path / "store"
    link_dir = tmp_path / "links"
    real_dir.mkdir()
    link_dir.mkdir()
    real = real_dir / "ckpt"
    save({"step": 1}, real)
    os.chmod(real, 0o600)
    link = link_dir / "latest"
    link.symlink_to(os.path.join("..", "store", "ckpt"))  # relative

    save({"step": 2}, link)

    assert link.is_symlink()
    assert os.readlink(link) == os.path.join("..", "store", "ckpt")
    assert load(real) == {"step": 2} == load(link)
    assert os.stat(real).st_mode & 0o777 == 0o600
    assert listing(real_dir) == ["ckpt"] and listing(link_dir) == ["latest"]


@posix_only
def test_save_through_chain_of_symlinks(tmp_path):
    real = tmp_path / "ckpt"
    save({"step": 1}, real)
    (tmp_path / "link1").symlink_to(real)
    (tmp_path / "link2").symlink_to(tmp_path / "link1")
    save({"step": 2}, tmp_path / "link2")
    assert (tmp_path / "link1").is_symlink() and (tmp_path / "link2").is_symlink()
    assert load(real) == {"step": 2}
    assert listing(tmp_path) == ["ckpt", "link1", "link2"]


@posix_only
def test_save_through_dangling_symlink_creates_its_target(tmp_path):
    (tmp_path / "store").mkdir()
    link = tmp_path / "latest"
    link.symlink_to(tmp_path / "store" / "ckpt")
    save({"step": 1}, link)
    assert link.is_symlink()
    assert load(tmp_path / "store" / "ckpt") == {"step": 1}
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(tmp_path / "store" / "ckpt").st_mode & 0o777 == 0o666 & ~mask
    assert listing(tmp_path / "store") == ["ckpt"]


@posix_only
def test_save_to_symlink_loop_raises_and_changes_nothing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError):
        save({"step": 1}, a)
    assert a.is_symlink() and b.is_symlink()
    assert listing(tmp_path) == ["a", "b"]


# --------------------------------------------------------- item 11: messages

UNSAFE_HINTS = ("allow_pickle", "unsafe", "pickle.load", "trust")


def load_error(path):
    """The ValueError that loading ``path`` raises, checked never to suggest
    loading the file unsafely: not in its message, in what it was raised
    from, nor in a warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as info:
            load(path)
    texts = [str(w.message) for w in caught]
    exc, seen = info.value, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    for text in texts:
        for hint in UNSAFE_HINTS:
            assert hint not in text, text
    return info.value


def npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def structure_bytes(root):
    blob = json.dumps({"format": "nbopt-checkpoint", "version": 1, "root": root}).encode()
    return npy_bytes(np.frombuffer(blob, np.uint8))


def write_zip(path, members):
    """``members``: (name, bytes) pairs, written in order, duplicates allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members:
                zf.writestr(name, data)


@pytest.mark.parametrize("content", [
    pytest.param(b"", id="empty"),
    pytest.param(b"step,lr\n1,0.1\n", id="text"),
    pytest.param(np.random.default_rng(0).bytes(4096), id="random"),
    pytest.param(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", id="pickle"),
    pytest.param(npy_bytes(np.arange(3)), id="npy"),
])
def test_foreign_files_are_not_an_nbopt_checkpoint(tmp_path, content):
    path = tmp_path / "junk"
    path.write_bytes(content)
    message = str(load_error(path))
    assert message.startswith(f"{str(path)!r} is not an nbopt checkpoint")


def test_archives_without_the_structure_are_not_an_nbopt_checkpoint(tmp_path):
    path = tmp_path / "other.zip"
    for members in ([("readme.txt", b"hello")], []):
        write_zip(path, members)
        assert str(load_error(path)).startswith(f"{str(path)!r} is not an nbopt checkpoint")


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY\x01\x00"]),
       content=st.binary(max_size=300))
def test_arbitrary_bytes_raise_valueerror_never_suggesting_unsafe_loading(
    prefix, content, tmp_path_factory
):
    path = tmp_path_factory.mktemp("junk") / "junk"
    path.write_bytes(prefix + content)
    load_error(path)


def test_every_truncation_raises_valueerror_never_suggesting_unsafe_loading(tmp_path):
    path = tmp_path / "ckpt"
    save({"state": {0: {"m": np.arange(10.0)}}, "lr": 0.1}, path)
    data = path.read_bytes()
    cut = tmp_path / "cut"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        load_error(cut)


def npy_raw(header: str, data: bytes = b"", version=(1, 0), length=None):
    """A .npy member written by hand; ``length`` overrides the header length field."""
    text = header.encode("latin1")
    size = len(text) if length is None else length
    field = size.to_bytes(2 if version == (1, 0) else 4, "little")
    return b"\x93NUMPY" + bytes(version) + field + text + data


def header(descr="'<f8'", fortran="False", shape="(2,)"):
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}\n"


ZEROS = bytes(16)  # the data of a <f8 array of shape (2,)

# Hand-corrupted members, and what the structure says of them (a0 only).
CORRUPT_MEMBERS = {
    # The structure agrees, so only the header check stands in the way.
    "shape -1,-1": (npy_raw(header(shape="(-1, -1)"), ZEROS[:8]), [-1, -1]),
    "negative shape": (npy_raw(header(shape="(-2,)"), b""), [2]),
    "length field truncated": (b"\x93NUMPY\x01\x00\x76", [2]),
    "magic truncated": (b"\x93NUM", [2]),
    "empty member": (b"", [2]),
    "bad magic": (b"\x93NUMPZ" + npy_raw(header(), ZEROS)[6:], [2]),
    "length beyond member": (npy_raw(header(), b"", length=200), [2]),
    "header too long": (npy_raw(header() + " " * 20000, ZEROS, version=(2, 0)), [2]),
    "header not python": (npy_raw("{'descr': '<f8', 'shape': (2,", ZEROS), [2]),
    "header not a dict": (npy_raw("[1, 2]\n", ZEROS), [2]),
    "header missing keys": (npy_raw("{'descr': '<f8'}\n", ZEROS), [2]),
    "shape not ints": (npy_raw(header(shape="('a',)"), ZEROS), [2]),
    "bad descr": (npy_raw(header(descr="'<q9'"), ZEROS), [2]),
    "bad fortran_order": (npy_raw(header(fortran="1"), ZEROS), [2]),
    "version 3": (npy_raw(header(), ZEROS, version=(3, 0)), [2]),
    "version 9.9": (npy_raw(header(), ZEROS, version=(9, 9)), [2]),
    "object dtype": (npy_raw(header(descr="'|O'"), ZEROS), [2]),
    "structured dtype": (npy_raw(header(descr="[('x', '<f8')]"), ZEROS), [2]),
    "data short": (npy_raw(header(), ZEROS[:15]), [2]),
    "data long": (npy_raw(header(), ZEROS + b"\0"), [2]),
    "65 dimensions": (npy_raw(header(shape=repr((1,) * 65)), ZEROS[:8]), [1] * 65),
    "empty but huge": (npy_raw(header(shape=repr((0, 10**30))), b""), [0, 10**30]),
}


@pytest.mark.parametrize("case", list(CORRUPT_MEMBERS))
def test_corrupt_array_member_raises_valueerror_naming_it(tmp_path, case):
    data, claimed_shape = CORRUPT_MEMBERS[case]
    root = {"t": "ndarray", "name": "a0", "dtype": "<f8", "shape": claimed_shape}
    path = tmp_path / "ckpt"
    write_zip(path, [("a0.npy", data), ("nbopt_checkpoint.npy", structure_bytes(root))])
    error = load_error(path)
    assert "corrupt member 'a0'" in str(error)
    assert repr(str(path)) in str(error)
    assert error.__cause__ is not None  # chained from what went wrong inside


@pytest.mark.parametrize("case", ["shape -1,-1", "length field truncated", "header too long",
                                  "bad descr", "object dtype", "data long"])
def test_corrupt_structure_member_raises_valueerror_naming_it(tmp_path, case):
    data, _ = CORRUPT_MEMBERS[case]
    data = data.replace(b"<f8", b"|u1")
    path = tmp_path / "ckpt"
    write_zip(path, [("nbopt_checkpoint.npy", data)])
    assert "corrupt member 'nbopt_checkpoint'" in str(load_error(path))


@pytest.mark.parametrize("member", ["a0.npy", "nbopt_checkpoint.npy"])
def test_duplicate_member_names_are_refused(tmp_path, member):
    root = {"t": "ndarray", "name": "a0", "dtype": "<f8", "shape": [2]}
    members = [("a0.npy", npy_bytes(np.zeros(2))), ("nbopt_checkpoint.npy", structure_bytes(root))]
    duplicate = {"a0.npy": npy_bytes(np.ones(2)), "nbopt_checkpoint.npy": structure_bytes(None)}
    members.append((member, duplicate[member]))
    path = tmp_path / "ckpt"
    write_zip(path, members)
    assert len(zipfile.ZipFile(path).namelist()) == 3
    message = str(load_error(path))
    assert "several members named" in message and repr(member) in message


def test_member_without_npy_suffix_is_not_read_in_place_of_the_array(tmp_path):
    # np.load's NpzFile maps "a0" and "a0.npy" to the same key; the member that
    # was checked must be the one that is read.
    root = {"t": "ndarray", "name": "a0", "dtype": "<f8", "shape": [2]}
    path = tmp_path / "ckpt"
    write_zip(path, [("a0.npy", npy_bytes(np.arange(2.0))),
                     ("nbopt_checkpoint.npy", structure_bytes(root)),
                     ("a0", b"not an array at all")])
    np.testing.assert_array_equal(load(path), np.arange(2.0))


def nested_lists(depth):
    root = inner = []
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return root


def nested_tuple(depth):
    key = ()
    for _ in range(depth - 1):
        key = (key,)
    return key


@pytest.mark.parametrize("make", [
    pytest.param(nested_lists, id="lists"),
    pytest.param(lambda n: {"k": nested_lists(n - 1)}, id="dict-of-lists"),
    pytest.param(lambda n: {nested_tuple(n - 1): 1}, id="tuple-key"),
])
def test_nesting_deeper_than_the_limit_is_refused_before_writing(tmp_path, make):
    path = tmp_path / "ckpt"
    path.write_bytes(b"previous checkpoint")
    with pytest.raises(ValueError, match="nested more than 100 levels"):
        save(make(sys.getrecursionlimit() + 100), path)
    assert path.read_bytes() == b"previous checkpoint"
    assert listing(tmp_path) == ["ckpt"]


def test_nesting_up_to_the_limit_roundtrips(tmp_path):
    path = tmp_path / "ckpt"
    save(nested_lists(100), path)
    assert load(path) == nested_lists(100)
    with pytest.raises(ValueError, match="nested more than 100 levels"):
        save(nested_lists(101), path)
    assert load(path) == nested_lists(100)
