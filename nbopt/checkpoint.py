"""Saving and loading optimizer and scheduler state without pickle.

``save(obj, path)`` writes ``obj`` -- typically ``optimizer.state_dict()`` or
``scheduler.state_dict()`` -- to ``path``; ``load(path)`` reads it back.

File format
-----------
A checkpoint is one ``.npz`` file: an uncompressed zip archive of ``.npy``
members, as written by :func:`numpy.savez`.

* Every ndarray in ``obj`` is its own member, named ``a0``, ``a1``, ... in the
  order in which it is met.
* The member ``nbopt_checkpoint`` is a 1-D ``uint8`` array holding UTF-8 JSON
  that describes everything else::

      {"format": "nbopt-checkpoint", "version": 1, "root": NODE}

  where every ``NODE`` is an object tagged by ``"t"``:

  ==============  ==========================================================
  ``"none"``      ``None``
  ``"bool"``      ``{"v": true}``
  ``"int"``       ``{"v": 3}``, or ``{"hex": "-0x1f..."}`` beyond 64 bits
  ``"float"``     ``{"bits": "3ff0000000000000"}``: the IEEE-754 binary64
                  pattern, big-endian hex
  ``"str"``       ``{"v": "text"}``
  ``"npscalar"``  ``{"dtype": "<f4", "hex": "0000c03f"}``: the scalar's bytes
  ``"ndarray"``   ``{"name": "a0", "dtype": "<f4", "shape": [3, 4]}``
  ``"list"``      ``{"items": [NODE, ...]}``
  ``"tuple"``     ``{"items": [NODE, ...]}``
  ``"dict"``      ``{"items": [[KEY_NODE, NODE], ...]}``, in insertion order
  ==============  ==========================================================

Floats are stored as bit patterns rather than JSON numbers because JSON has no
NaN, infinities or NaN payloads; dict items are stored as pairs because JSON
object keys are strings only, and torch-style state dicts are keyed by ``int``
(``{"state": {0: ...}}``).

Why no pickle
-------------
``torch.save`` pickles, and unpickling runs whatever code the file names, so a
checkpoint downloaded from elsewhere is a program.  Here nothing is pickled on
the way out (object arrays and arbitrary objects are refused with
``TypeError``), and on the way in the archive is read with :mod:`zipfile` and
numpy's ``.npy`` header parser only: arrays are built from raw bytes, and only
for the fixed-size numeric dtypes above, so loading a file, however crafted,
only ever builds the plain types listed above.  The price is a closed set of
types; ``state_dict()`` needs no more.

Temporary files
---------------
``save`` writes to ``.NAME.nbopt-tmp.HOST.PID.RANDOM`` next to the target
``NAME`` and renames it over the target.  A process killed in between leaves
that file behind; the next ``save`` to the same target on the same host
removes such leftovers whose process no longer exists.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import socket
import struct
import zipfile
import zlib

import numpy as np

from .parameter import is_device_array

__all__ = ["save", "load"]

_FORMAT = "nbopt-checkpoint"
_VERSION = 1
_STRUCTURE = "nbopt_checkpoint"

# Only fixed-size numeric dtypes: their bytes mean the same on every platform
# (long double and complex256 do not) and none of them needs pickle.
_ALLOWED_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        np.bool_,
        np.int8, np.int16, np.int32, np.int64,
        np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64,
        np.complex64, np.complex128,
    )
)
# The dtype strings a file may name, both byte orders: np.save keeps the byte
# order of a non-native array, so ">f4" is legitimate.  Looking strings up here
# instead of handing them to np.dtype keeps file contents away from its parser.
_DTYPE_BY_STR = {
    d.newbyteorder(order).str: d.newbyteorder(order)
    for d in _ALLOWED_DTYPES
    for order in "<>"
}

_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1

# Containers nested deeper than this are refused by save.  A fixed bound, well
# below the default recursion limit, rather than whatever the interpreter's
# stack allows: the encoder, json and the decoder each recurse once or twice
# per level, and a file that save accepts must also load, even when load is
# called from a deeper stack.  State dicts nest about five levels.
_MAX_DEPTH = 100

# numpy's own default limit on a .npy header (np.load's max_header_size); the
# headers save writes are well under 200 bytes.
_MAX_HEADER_SIZE = 10_000

_TEMP_MARKER = "nbopt-tmp"


def save(obj, path) -> None:
    """Write a state dict (or any structure of supported types) to a file.

    Parameters
    ----------
    obj : object
        Nested ``dict``, ``list`` and ``tuple`` containers whose leaves are
        ndarrays, numpy scalars, ``int``, ``float``, ``bool``, ``str`` or
        ``None``.  Arrays must have a bool, (unsigned) integer, float16/32/64
        or complex64/128 dtype; any shape, memory layout or byte order.  Dict
        keys may be ``str``, ``int``, ``float``, ``bool``, ``None`` or tuples
        of these.  Subclasses of ``ndarray``, ``dict``, ``list`` and ``tuple``
        are stored as the base type; scalars must be of the exact type, since
        e.g. an ``IntEnum`` stored as ``int`` would change meaning.
    path : str or os.PathLike
        Destination file, used verbatim (no ``.npz`` suffix is added).  An
        existing file is replaced atomically: readers see the old checkpoint
        or the new one, never a partial file, even if the process dies.  The
        replaced file's permission bits are kept; a new file gets
        ``0o666 & ~umask``, as :func:`open` would give it.  If ``path`` is a
        symbolic link, the file it points to is replaced (and created if the
        link dangles); the link stays a link.

    Raises
    ------
    TypeError
        If ``obj`` contains an unsupported type, dtype or dict key.  The
        message names the location, e.g. ``obj['state'][0]['exp_avg']``.
    ValueError
        If ``obj`` contains itself, or nests containers (and tuple dict keys)
        more than 100 levels deep.

    Both are raised before anything is written, so an existing file at
    ``path`` is left untouched.

    Notes
    -----
    Shared references are not preserved: an array that occurs twice is stored
    twice and loads as two independent arrays.

    The data is first written to a temporary file next to the target (see
    the module documentation).  A leftover one from a killed process is
    removed by the next ``save`` to the same target on the same host, once no
    process with its PID exists.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> state = {"state": {0: {"step": np.float32(3.0),
    ...                        "exp_avg": np.zeros(2)}},
    ...          "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999),
    ...                            "params": [0]}]}
    >>> path = os.path.join(tempfile.mkdtemp(), "adam.ckpt")
    >>> save(state, path)
    >>> load(path)["state"][0]["exp_avg"]
    array([0., 0.])
    """
    encoder = _Encoder()
    structure = {"format": _FORMAT, "version": _VERSION, "root": encoder.encode(obj, "obj")}
    # ensure_ascii keeps lone surrogates (legal in a Python str) encodable.
    blob = json.dumps(structure, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    members = dict(encoder.arrays)
    members[_STRUCTURE] = np.frombuffer(blob, dtype=np.uint8)

    target = _resolve_target(path)
    directory, name = os.path.split(target)
    stem = _temp_stem(name)
    _remove_stale_temporaries(directory, stem)
    # Same directory, so that os.replace is a rename within one file system
    # and therefore atomic.
    fd, tmp = _create_temporary(directory, stem)
    try:
        with os.fdopen(fd, "wb") as fh:
            # A file object, not a name: np.savez would append ".npz" to a
            # name.  allow_pickle is not passed (numpy < 2.1 would store it as
            # an array); _Encoder has already refused every dtype that would
            # need pickle.
            np.savez(fh, **members)
            fh.flush()
            os.fsync(fh.fileno())
        # The temporary file was created 0600, so that a checkpoint meant to
        # be private is never readable by others while it is written; now give
        # it the mode that writing the target in place with open() would
        # leave: the existing file's, or the umask's for a new file.
        os.chmod(tmp, _target_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load(path):
    """Read a structure written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.

    Returns
    -------
    object
        The saved structure, with the same container, key and scalar types
        and dict order.  Arrays come back as ordinary ``np.ndarray`` (even if
        a subclass was saved) with the saved dtype and shape; they are
        writable and own their memory (not memory-mapped).

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError
        If the file cannot be opened.
    ValueError
        If the file is not an nbopt checkpoint, is truncated or corrupt, was
        written by a newer format version, or contains pickled data (which is
        refused, never unpickled).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "sched.ckpt")
    >>> save({"last_epoch": 4, "base_lrs": [0.1], "gamma": np.float32(0.5)}, path)
    >>> state = load(path)
    >>> state["last_epoch"], state["base_lrs"], type(state["gamma"]).__name__
    (4, [0.1], 'float32')
    """
    shown = os.fsdecode(os.fspath(path))
    # Opened here, outside the handler below, so that a missing or unreadable
    # file is reported as such and not as a corrupt checkpoint.
    with open(path, "rb") as fh:
        try:
            return _read(fh)
        except _NotACheckpoint as exc:
            raise ValueError(f"{shown!r} is not an nbopt checkpoint ({exc})") from exc.__cause__
        except (ValueError, KeyError, IndexError, EOFError, NotImplementedError,
                OverflowError, RecursionError, struct.error, zlib.error,
                zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot load nbopt checkpoint {shown!r}: {exc}") from exc
        except OSError as exc:
            # zipfile seeks to offsets read from the file; corrupt ones end in
            # EINVAL.  Other OSErrors are real I/O failures and stay as they are.
            if exc.errno != errno.EINVAL:
                raise
            raise ValueError(
                f"cannot load nbopt checkpoint {shown!r}: corrupt offsets ({exc})"
            ) from exc


class _NotACheckpoint(ValueError):
    """The file is something else, not a damaged checkpoint; load rewords it."""


# --------------------------------------------------------------------- saving


class _Encoder:
    """Turns a structure into JSON-ready nodes, collecting arrays on the way."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        # ids of the containers on the path being encoded: meeting one again
        # is a cycle, which would otherwise recurse until RecursionError.
        self._open: set[int] = set()
        # Containers on that path, the tuples of a dict key included: bounded
        # by _MAX_DEPTH, so that deep structures are refused with ValueError
        # rather than overflowing the stack here, in json or in load.
        self._depth = 0

    def encode(self, obj, where: str) -> dict:
        # numpy scalars first: np.float64 subclasses float and np.str_ str.
        if isinstance(obj, np.generic):
            dtype = _checked_dtype(obj.dtype, where, f"{_type_name(obj)} scalar")
            return {"t": "npscalar", "dtype": dtype.str, "hex": obj.tobytes().hex()}
        if not isinstance(obj, np.ndarray) and is_device_array(obj):
            # GPU state (a device optimizer's state_dict): stored as its host copy
            from .kernels._cuda import to_host

            obj = to_host(obj)
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise TypeError(
                    f"cannot save the object array at {where}: object arrays "
                    f"need pickle, which nbopt checkpoints never use"
                )
            dtype = _checked_dtype(obj.dtype, where, "array")
            name = f"a{len(self.arrays)}"
            self.arrays[name] = np.asarray(obj)
            return {"t": "ndarray", "name": name, "dtype": dtype.str, "shape": list(obj.shape)}
        if isinstance(obj, dict):
            with self._entered(obj, where):
                items = [
                    [self.key(k, where), self.encode(v, f"{where}[{k!r}]")]
                    for k, v in obj.items()
                ]
            return {"t": "dict", "items": items}
        if isinstance(obj, (list, tuple)):
            tag = "list" if isinstance(obj, list) else "tuple"
            with self._entered(obj, where):
                items = [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
            return {"t": tag, "items": items}
        node = _encode_scalar(obj)
        if node is None:
            raise TypeError(
                f"cannot save {where}: unsupported type {_type_name(obj)} (supported: dict, "
                f"list, tuple, ndarray, numpy scalar, int, float, bool, str, None)"
            )
        return node

    def key(self, key, where: str) -> dict:
        if type(key) is tuple:
            with self._deeper(where):
                return {"t": "tuple", "items": [self.key(k, where) for k in key]}
        node = _encode_scalar(key)
        if node is None:
            raise TypeError(
                f"cannot save the dict at {where}: unsupported key {key!r} of type "
                f"{_type_name(key)} (keys may be str, int, float, bool, None or tuples of these)"
            )
        return node

    @contextlib.contextmanager
    def _entered(self, container, where: str):
        ident = id(container)
        if ident in self._open:
            raise ValueError(f"cannot save {where}: the structure contains itself")
        with self._deeper(where):
            self._open.add(ident)
            try:
                yield
            finally:
                self._open.discard(ident)

    @contextlib.contextmanager
    def _deeper(self, where: str):
        if self._depth >= _MAX_DEPTH:
            raise ValueError(
                f"cannot save {where}: containers are nested more than "
                f"{_MAX_DEPTH} levels deep"
            )
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1


def _encode_scalar(obj):
    """The node for a Python scalar, or None if ``obj`` is not one."""
    # Exact types: bool is an int subclass, and IntEnum/str subclasses would
    # silently come back as their base type.
    kind = type(obj)
    if obj is None:
        return {"t": "none"}
    if kind is bool:
        return {"t": "bool", "v": obj}
    if kind is int:
        if _INT64_MIN <= obj <= _UINT64_MAX:
            return {"t": "int", "v": obj}
        # hex() is exempt from the int/str digit limit (sys.set_int_max_str_digits)
        # that would make json.dumps fail on very large ints.
        return {"t": "int", "hex": hex(obj)}
    if kind is float:
        return {"t": "float", "bits": struct.pack(">d", obj).hex()}
    if kind is str:
        return {"t": "str", "v": obj}
    return None


def _checked_dtype(dtype: np.dtype, where: str, what: str) -> np.dtype:
    # The kind test first: newbyteorder is not defined for every dtype class.
    if dtype.kind not in "biufc" or dtype.newbyteorder("=") not in _ALLOWED_DTYPES:
        raise TypeError(
            f"cannot save the {what} at {where}: unsupported dtype {dtype} (supported: bool, "
            f"int8-64, uint8-64, float16/32/64, complex64/128)"
        )
    return dtype


def _type_name(obj) -> str:
    kind = type(obj)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _resolve_target(path) -> str:
    """The file that saving to ``path`` replaces: symbolic links followed."""
    # Replacing the link itself would turn it into a plain file and leave the
    # file it points to stale; open() would write through it.  The temporary
    # file then goes next to the real file, on its file system.
    target = os.path.realpath(os.fsdecode(os.fspath(path)))
    # realpath returns a link it cannot resolve, i.e. one in a loop, as is;
    # open() would fail with ELOOP, and so does this.
    if os.path.islink(target):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fsdecode(os.fspath(path)))
    return target


def _temp_stem(name: str) -> str:
    """The target's name as it appears in its temporary files' names."""
    # The rest of a temporary file's name takes at most 100 bytes, and names
    # are limited to 255 on common file systems; a long name is shortened,
    # with a digest so that it still identifies the target.
    raw = os.fsencode(name)
    if len(raw) <= 128:
        return name
    return f"{name[:32]}~{hashlib.sha256(raw).hexdigest()[:16]}"


def _host_token() -> str:
    # Only characters that cannot be confused with the separators around it.
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:64] or "unknown"


def _create_temporary(directory: str, stem: str) -> tuple[int, str]:
    """Create ``.STEM.nbopt-tmp.HOST.PID.RANDOM`` in ``directory``, mode 0600.

    The host and PID say who owns the file, so that a later save can tell a
    leftover of a killed process from one that another process is writing.
    """
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    prefix = f".{stem}.{_TEMP_MARKER}.{_host_token()}.{os.getpid()}."
    for _ in range(100):
        tmp = os.path.join(directory, prefix + secrets.token_hex(6))
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", tmp)


def _remove_stale_temporaries(directory: str, stem: str) -> None:
    """Delete temporary files for this target left behind by dead processes.

    Only files named exactly as :func:`_create_temporary` names them for this
    target and this host, whose PID belongs to no running process, are
    removed: never another target's, another host's (its PIDs mean nothing
    here) or a live process's, which may be writing it right now.  Best
    effort: errors are ignored, the save goes ahead regardless.
    """
    # os.kill(pid, 0) probes for a process on POSIX, but on Windows it
    # terminates it.
    if os.name != "posix":
        return
    pattern = re.compile(
        re.escape(f".{stem}.{_TEMP_MARKER}.{_host_token()}.") + r"([1-9][0-9]{0,9})\.[0-9a-f]{12}"
    )
    stale = []
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            with contextlib.suppress(OSError):
                if (match and entry.is_file(follow_symlinks=False)
                        and not _process_exists(int(match[1]))):
                    stale.append(entry.path)
    for leftover in stale:
        with contextlib.suppress(OSError):
            os.unlink(leftover)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        # PermissionError: it exists, owned by another user.  Anything else:
        # cannot tell, so the file is kept.
        return True
    return True


def _target_mode(target: str) -> int:
    try:
        return os.stat(target).st_mode & 0o777
    except OSError:  # no file yet
        return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports the umask without changing it; elsewhere os.umask must set
    # one to read the old, which briefly affects other threads.
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    # The rename is durable only once the directory entry is on disk.  Best
    # effort: not every platform or file system can open or sync a directory.
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -------------------------------------------------------------------- loading


def _read(fh):
    archive_size = os.fstat(fh.fileno()).st_size
    # Sniffed here rather than left to np.load, which would take anything
    # that is neither a zip archive nor a .npy file for a pickle, and say so.
    magic = fh.read(6)
    fh.seek(0)
    if not magic:
        raise _NotACheckpoint("the file is empty")
    if magic == np.lib.format.MAGIC_PREFIX:
        raise _NotACheckpoint("a single .npy array, not an .npz archive")
    # A local file header, or the end record of an empty archive.
    if magic[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise _NotACheckpoint("not an .npz archive")
    # zipfile itself, not np.load's NpzFile: that maps both "a0" and "a0.npy"
    # to the key "a0", so the member read could differ from the one checked.
    with zipfile.ZipFile(fh) as archive:
        names = archive.namelist()
        if len(set(names)) != len(names):
            # zipfile reads the last of them and numpy, or another reader,
            # perhaps the first: which one is the checkpoint is not defined.
            twice = min(n for n, count in collections.Counter(names).items() if count > 1)
            raise ValueError(f"the archive has several members named {twice!r}")
        if _STRUCTURE + ".npy" not in names:
            raise _NotACheckpoint(f"no {_STRUCTURE!r} member")
        header = _member_header(archive, _STRUCTURE, archive_size)
        shape, dtype = header[0], header[2]
        if dtype != np.uint8 or len(shape) != 1:
            raise _NotACheckpoint(f"{_STRUCTURE!r} is not 1-D uint8")
        blob = _member_data(archive, _STRUCTURE, header).tobytes()
        structure = json.loads(blob.decode("utf-8"))
        if not isinstance(structure, dict) or structure.get("format") != _FORMAT:
            raise _NotACheckpoint(f"format marker is not {_FORMAT!r}")
        version = structure.get("version")
        if type(version) is not int or version < 1:
            raise ValueError(f"bad format version {version!r}")
        if version > _VERSION:
            raise ValueError(
                f"format version {version} was written by a newer nbopt; "
                f"this one reads up to version {_VERSION}"
            )
        if "root" not in structure:
            raise ValueError("the structure description has no 'root'")
        return _Decoder(archive, archive_size).decode(structure["root"], "obj")


@contextlib.contextmanager
def _reading_member(name: str):
    """Report any failure to read member ``name`` as ``ValueError`` naming it.

    A damaged member fails deep in zipfile or numpy's header parser, with
    messages such as "unpack requires a buffer of 8 bytes" that say neither
    what nor where.
    """
    try:
        yield
    except MemoryError:
        raise
    except OSError as exc:
        # As in load: EINVAL comes from a corrupt offset, the rest is real I/O.
        if exc.errno != errno.EINVAL:
            raise
        raise ValueError(f"corrupt member {name!r}: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"corrupt member {name!r}: {exc or type(exc).__name__}") from exc


def _member_header(archive: zipfile.ZipFile, name: str, archive_size: int):
    """Validated header of member ``name``: (shape, fortran_order, dtype, size).

    numpy allocates the array that a ``.npy`` header announces before reading
    any data, so a corrupt or crafted header could ask for petabytes.  Checking
    first that the data fits in the member, and the member in the file, bounds
    what loading allocates by the size of the file.
    """
    with _reading_member(name):
        info = archive.getinfo(name + ".npy")
        if info.flag_bits & 0x1:  # zipfile would raise RuntimeError asking for a password
            raise ValueError("it is encrypted")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > archive_size:
            raise ValueError("it is compressed or larger than the file")
        with archive.open(info) as member:
            head = _read_exactly(member, 8, "magic string")
            if head[:6] != np.lib.format.MAGIC_PREFIX:
                raise ValueError("it is not a .npy array")
            version = (head[6], head[7])
            if version not in ((1, 0), (2, 0)):
                # 3.0 exists only for structured dtypes, which save never writes
                raise ValueError(f"unsupported .npy version {version}")
            length_field = _read_exactly(member, 2 if version == (1, 0) else 4,
                                         "header length")
            length = int.from_bytes(length_field, "little")
            # Before numpy's parser sees it, whose own refusal suggests
            # trusting the file with allow_pickle.
            if length > _MAX_HEADER_SIZE:
                raise ValueError(f"its header of {length} bytes is implausibly long")
            text = _read_exactly(member, length, "header")
        parse = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = parse(io.BytesIO(length_field + text))
        # Arrays are built from raw bytes below, which is sound only for
        # these dtypes; an object array in particular would need unpickling.
        if dtype.str not in _DTYPE_BY_STR:
            raise ValueError(f"unsupported dtype {dtype}")
        if any(n < 0 for n in shape):
            raise ValueError(f"negative dimension in shape {shape}")
        header_size = len(head) + len(length_field) + length
        data_size = math.prod(shape) * dtype.itemsize
        # Exactly: a member with bytes to spare would leave them unread, and
        # zipfile checks the CRC only on reading a member to its end.
        if data_size > info.file_size - header_size:
            raise ValueError("it is shorter than its header says")
        if data_size < info.file_size - header_size:
            raise ValueError("it is longer than its header says")
    return shape, fortran_order, dtype, header_size


def _member_data(archive: zipfile.ZipFile, name: str, header) -> np.ndarray:
    """The array in member ``name``, whose header ``_member_header`` returned."""
    shape, fortran_order, dtype, header_size = header
    with _reading_member(name):
        # Allocated here and filled in place: the array owns its memory, is
        # writable and is never held twice, as bytes and as an array.
        array = np.empty(shape, dtype, order="F" if fortran_order else "C")
        buffer = memoryview(array.reshape(-1, order="A").view(np.uint8))
        with archive.open(name + ".npy") as member:
            _read_exactly(member, header_size, "header")
            done = 0
            while done < len(buffer):
                chunk = member.read(min(len(buffer) - done, 1 << 20))
                if not chunk:
                    raise ValueError("it is shorter than its header says")
                buffer[done:done + len(chunk)] = chunk
                done += len(chunk)
            # Reading up to the end is what makes zipfile compare the CRC.
            if member.read(1):
                raise ValueError("it is longer than its header says")
    return array


def _read_exactly(stream, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"it ends within its {what}")
    return data


class _Decoder:
    """Rebuilds a structure from its nodes, validating each one."""

    def __init__(self, archive: zipfile.ZipFile, archive_size: int):
        self._archive = archive
        self._names = set(archive.namelist())
        self._archive_size = archive_size

    def decode(self, node, where: str):
        tag = _tag(node, where)
        if tag in ("list", "tuple"):
            items = [self.decode(v, f"{where}[{i}]") for i, v in enumerate(_items(node, where))]
            return items if tag == "list" else tuple(items)
        if tag == "dict":
            result = {}
            for pair in _items(node, where):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError(f"malformed dict item at {where}")
                key = _decode_key(pair[0], where)
                if key in result:
                    raise ValueError(f"duplicate key {key!r} at {where}")
                result[key] = self.decode(pair[1], f"{where}[{key!r}]")
            return result
        if tag == "ndarray":
            return self._array(node, where)
        if tag == "npscalar":
            dtype = _dtype(node, where)
            raw = bytes.fromhex(_field(node, "hex", str, where))
            if len(raw) != dtype.itemsize:
                raise ValueError(
                    f"numpy scalar at {where} has {len(raw)} bytes, not {dtype.itemsize}"
                )
            return np.frombuffer(raw, dtype=dtype)[0]
        return _decode_scalar(node, tag, where)

    def _array(self, node, where: str) -> np.ndarray:
        name = _field(node, "name", str, where)
        dtype = _dtype(node, where)
        shape = _field(node, "shape", list, where)
        if name == _STRUCTURE or name + ".npy" not in self._names:
            raise ValueError(f"the array {name!r} for {where} is missing from the file")
        header = _member_header(self._archive, name, self._archive_size)
        stored_shape, _, stored_dtype, _ = header
        if stored_dtype != dtype or list(stored_shape) != shape:
            raise ValueError(
                f"the array {name!r} for {where} is {stored_dtype}{list(stored_shape)}, "
                f"but the structure says {dtype}{shape}"
            )
        return _member_data(self._archive, name, header)


def _decode_key(node, where: str):
    tag = _tag(node, where)
    if tag == "tuple":
        return tuple(_decode_key(k, where) for k in _items(node, where))
    return _decode_scalar(node, tag, where)


def _decode_scalar(node: dict, tag: str, where: str):
    if tag == "none":
        return None
    if tag == "bool":
        return _field(node, "v", bool, where)
    if tag == "int":
        if "hex" in node:
            return int(_field(node, "hex", str, where), 16)
        value = _field(node, "v", int, where)
        if type(value) is bool:  # JSON true/false parse as bool, an int subclass
            raise ValueError(f"int at {where} is stored as a boolean")
        return value
    if tag == "float":
        bits = bytes.fromhex(_field(node, "bits", str, where))
        return struct.unpack(">d", bits)[0]
    if tag == "str":
        return _field(node, "v", str, where)
    raise ValueError(f"unknown or misplaced node type {tag!r} at {where}")


def _tag(node, where: str) -> str:
    if not isinstance(node, dict) or not isinstance(node.get("t"), str):
        raise ValueError(f"malformed node at {where}")
    return node["t"]


def _items(node: dict, where: str) -> list:
    return _field(node, "items", list, where)


def _field(node: dict, name: str, kind: type, where: str):
    value = node.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"node at {where} lacks a valid {name!r} field")
    return value


def _dtype(node: dict, where: str) -> np.dtype:
    text = _field(node, "dtype", str, where)
    if text not in _DTYPE_BY_STR:
        raise ValueError(f"unsupported dtype {text!r} at {where}")
    return _DTYPE_BY_STR[text]
