"""Tests of nbopt.checkpoint: pickle-free save/load of state dicts."""
from __future__ import annotations

import io
import json
import os
import pathlib
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from nbopt.checkpoint import load, save

DTYPES = [
    np.dtype(t)
    for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64,
        np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64, np.complex64, np.complex128,
    )
]


# ------------------------------------------------------------------ helpers


def assert_same(expected, actual, where="obj"):
    """Type-exact structural equality; floats and arrays compared bit for bit."""
    if isinstance(expected, np.ndarray):
        # Subclasses and views are stored as plain arrays.
        assert type(actual) is np.ndarray, where
        assert actual.dtype == expected.dtype, where
        assert actual.shape == expected.shape, where
        assert actual.tobytes() == np.asarray(expected).tobytes(), where
        assert actual.flags.writeable, where
        return
    if isinstance(expected, (list, tuple)):
        kind = list if isinstance(expected, list) else tuple
        assert type(actual) is kind, where
        assert len(actual) == len(expected), where
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, f"{where}[{i}]")
        return
    if isinstance(expected, dict):
        assert type(actual) is dict, where
        assert len(actual) == len(expected), where
        for (ek, ev), (ak, av) in zip(expected.items(), actual.items()):
            assert_same_key(ek, ak, where)
            assert_same(ev, av, f"{where}[{ek!r}]")
        return
    assert type(actual) is type(expected), (where, type(expected), type(actual))
    if isinstance(expected, np.generic):
        assert actual.tobytes() == expected.tobytes(), where
    elif type(expected) is float:
        assert struct.pack(">d", actual) == struct.pack(">d", expected), where
    else:
        assert actual == expected, where


def assert_same_key(expected, actual, where):
    assert type(actual) is type(expected), (where, expected, actual)
    if type(expected) is tuple:
        assert len(actual) == len(expected)
        for e, a in zip(expected, actual):
            assert_same_key(e, a, where)
    elif type(expected) is float:
        assert struct.pack(">d", actual) == struct.pack(">d", expected), where
    else:
        assert actual == expected, where


def roundtrip(obj, path):
    save(obj, path)
    return load(path)


def listing(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


# --------------------------------------------------------------- strategies

# Every float64 bit pattern, so NaN payloads, signalling NaNs, -0.0 and
# subnormals are all covered, besides hypothesis' own choice of floats.
any_float = st.floats() | st.binary(min_size=8, max_size=8).map(lambda b: struct.unpack(">d", b)[0])
any_int = st.integers(-(2**63), 2**64 - 1) | st.integers()
any_text = st.text() | st.just("\ud800 lone surrogate")


@st.composite
def numpy_scalars(draw):
    dtype = draw(st.sampled_from(DTYPES))
    if dtype == np.bool_:
        return np.bool_(draw(st.booleans()))
    raw = draw(st.binary(min_size=dtype.itemsize, max_size=dtype.itemsize))
    return np.frombuffer(raw, dtype=dtype)[0]


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    if draw(st.booleans()):
        dtype = dtype.newbyteorder(">")
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    array = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["c", "f", "strided"]))
    if layout == "f":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = array[..., ::2]
    return array


keys = st.recursive(
    st.none() | st.booleans() | any_int | any_float | any_text,
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=5,
)
leaves = st.none() | st.booleans() | any_int | any_float | any_text | numpy_scalars() | arrays()
structures = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    # @given runs many examples per test, and hypothesis refuses function-scoped
    # fixtures such as tmp_path; each test makes its own subdirectory of this.
    return tmp_path_factory.mktemp("hypothesis")


# ---------------------------------------------------------------- roundtrip


@settings(max_examples=300, deadline=None)
@given(obj=structures)
def test_roundtrip_any_structure(obj, shared_dir):
    directory = shared_dir / "any"
    directory.mkdir(exist_ok=True)
    assert_same(obj, roundtrip(obj, directory / "ckpt"))
    assert listing(directory) == ["ckpt"]


@settings(deadline=None)
@given(obj=st.dictionaries(keys, st.integers(), min_size=2, max_size=8))
def test_dict_key_types_and_order_roundtrip(obj, shared_dir):
    directory = shared_dir / "keys"
    directory.mkdir(exist_ok=True)
    result = roundtrip(obj, directory / "ckpt")
    assert [type(k) for k in result] == [type(k) for k in obj]
    assert list(result.values()) == list(obj.values())


def test_torch_like_optimizer_state_dict(tmp_path):
    rng = np.random.default_rng(0)
    state = {
        "state": {
            0: {
                "step": np.array(3.0, np.float32),
                "exp_avg": rng.standard_normal((4, 3)).astype(np.float32),
                "exp_avg_sq": rng.random((4, 3)).astype(np.float32),
            },
            1: {
                "step": np.array(3.0, np.float32),
                "exp_avg": rng.standard_normal(5),
                "exp_avg_sq": rng.random(5),
                "max_exp_avg_sq": np.zeros(5),
            },
        },
        "param_groups": [
            {
                "lr": 0.01,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0,
                "amsgrad": False,
                "foreach": None,
                "maximize": False,
                "capturable": False,
                "differentiable": False,
                "fused": None,
                "params": [0, 1],
            }
        ],
    }
    result = roundtrip(state, tmp_path / "adam.ckpt")
    assert_same(state, result)
    assert list(result["state"]) == [0, 1]  # int keys, not "0" and "1"
    assert result["param_groups"][0]["betas"] == (0.9, 0.999)
    assert result["state"][0]["step"].shape == ()


@pytest.mark.parametrize("value", [
    0.0, -0.0, float("inf"), float("-inf"), float("nan"), -float("nan"), 5e-324, 0.1,
    struct.unpack(">d", bytes.fromhex("7ff0000000000001"))[0],  # signalling NaN
])
def test_float_bits_roundtrip(value, tmp_path):
    result = roundtrip({"x": value}, tmp_path / "f")["x"]
    assert type(result) is float
    assert struct.pack(">d", result) == struct.pack(">d", value)


@pytest.mark.parametrize("value", [
    0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**200),
    # Beyond the int/str digit limit, which json.dumps would trip over.
    pytest.param(10**5000, id="10**5000"), pytest.param(-(10**5000) + 7, id="-10**5000+7"),
])
def test_ints_of_any_size_roundtrip(value, tmp_path):
    result = roundtrip([value], tmp_path / "i")[0]
    assert type(result) is int
    assert result == value


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_numpy_scalar_type_roundtrips(dtype, tmp_path):
    value = dtype.type(1)
    result = roundtrip({"v": value, "arr0d": np.array(value)}, tmp_path / "s")
    assert type(result["v"]) is dtype.type
    assert result["v"] == value
    assert type(result["arr0d"]) is np.ndarray and result["arr0d"].dtype == dtype


def test_numpy_and_python_scalars_keep_their_types(tmp_path):
    obj = (np.float32(1.5), np.int64(3), np.bool_(True), np.float64("nan"), True, 1, 1.0, "1")
    result = roundtrip(obj, tmp_path / "s")
    expected_types = [np.float32, np.int64, np.bool_, np.float64, bool, int, float, str]
    assert [type(v) for v in result] == expected_types
    assert result[0] == 1.5 and result[1] == 3 and result[2] is np.True_ and np.isnan(result[3])


def test_tuple_and_list_stay_distinct(tmp_path):
    obj = [(), [], (1, [2, (3,)]), [(4,)]]
    result = roundtrip(obj, tmp_path / "t")
    assert result == obj
    assert type(result[0]) is tuple and type(result[1]) is list
    assert type(result[2][1]) is list and type(result[2][1][1]) is tuple


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_array_subclasses_and_views_load_as_plain_writable_arrays(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    obj = {
        "matrix": np.asmatrix(base[:2]),
        "masked": np.ma.masked_array(base[0], mask=base[0] > 3),
        "strided": base[::2, ::3],
        "transposed": base.T,
        "recarray": base.view(np.recarray),
    }
    result = roundtrip(obj, tmp_path / "sub")
    for name, value in result.items():
        assert type(value) is np.ndarray, name
        assert value.flags.writeable and value.flags.owndata, name
        np.testing.assert_array_equal(value, np.asarray(obj[name]), err_msg=name)
    result["strided"][0, 0] = -1.0  # writable, and independent of the file
    assert load(tmp_path / "sub")["strided"][0, 0] == 0.0


def test_shared_references_are_stored_separately(tmp_path):
    shared = np.ones(3)
    result = roundtrip([shared, shared], tmp_path / "shared")
    result[0][0] = 5.0
    assert result[1][0] == 1.0


def test_subclassed_containers_load_as_base_types(tmp_path):
    from collections import OrderedDict, defaultdict, namedtuple

    Pair = namedtuple("Pair", "a b")
    dd = defaultdict(list, {1: [2]})
    obj = [OrderedDict([("b", 1), ("a", 2)]), dd, Pair(1, 2)]
    result = roundtrip(obj, tmp_path / "c")
    assert result == [{"b": 1, "a": 2}, {1: [2]}, (1, 2)]
    assert [type(v) for v in result] == [dict, dict, tuple]
    assert list(result[0]) == ["b", "a"]


# ------------------------------------------------------------- file handling


def test_pathlike_and_str_paths_are_used_verbatim(tmp_path):
    save({"a": 1}, tmp_path / "model.ckpt")
    save({"a": 2}, str(tmp_path / "plain"))
    assert listing(tmp_path) == ["model.ckpt", "plain"]  # no ".npz" appended
    assert load(tmp_path / "model.ckpt") == {"a": 1}
    assert load(str(tmp_path / "plain")) == {"a": 2}
    # The file is an ordinary npz archive that numpy itself can read.
    with np.load(tmp_path / "model.ckpt", allow_pickle=False) as npz:
        assert "nbopt_checkpoint" in npz.files


def test_file_layout_is_npz_with_json_member(tmp_path):
    path = tmp_path / "layout"
    save({"state": {0: {"m": np.arange(3)}}, "lr": 0.5}, path)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["a0.npy", "nbopt_checkpoint.npy"]
    with np.load(path, allow_pickle=False) as npz:
        structure = json.loads(npz["nbopt_checkpoint"].tobytes())
        np.testing.assert_array_equal(npz["a0"], np.arange(3))
    assert structure["format"] == "nbopt-checkpoint"
    assert structure["version"] == 1
    assert structure["root"]["t"] == "dict"


def test_overwrite_replaces_existing_file(tmp_path):
    path = tmp_path / "ckpt"
    save({"step": 1}, path)
    save({"step": 2}, path)
    assert load(path) == {"step": 2}
    assert listing(tmp_path) == ["ckpt"]


def test_save_syncs_file_to_disk(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    save({"a": np.zeros(2)}, tmp_path / "ckpt")
    assert synced, "save must fsync the temporary file before renaming it"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_file_mode_follows_umask(tmp_path):
    path = tmp_path / "ckpt"
    save({}, path)
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("target", ["savez", "replace"])
@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_crash_while_writing_keeps_old_file_and_leaves_no_temporaries(
    tmp_path, monkeypatch, target, error
):
    path = tmp_path / "ckpt"
    save({"step": 1, "m": np.ones(4)}, path)
    before = path.read_bytes()

    def crash(file, *args, **kwargs):
        if target == "savez":
            file.write(b"PK\x03\x04 half a zip")  # a partial write, then the crash
        raise error

    if target == "savez":
        monkeypatch.setattr(np, "savez", crash)
    else:
        monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(type(error)):
        save({"step": 2, "m": np.zeros(4)}, path)
    monkeypatch.undo()

    assert listing(tmp_path) == ["ckpt"]
    assert path.read_bytes() == before
    assert_same({"step": 1, "m": np.ones(4)}, load(path))


def test_missing_directory_raises_and_missing_file_is_not_valueerror(tmp_path):
    with pytest.raises(FileNotFoundError):
        save({}, tmp_path / "no" / "such" / "dir" / "ckpt")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent")


# --------------------------------------------------------- refused on saving


class Opaque:
    pass


@pytest.mark.parametrize("obj, where, what", [
    ({"state": {0: {"exp_avg": Opaque()}}}, "obj['state'][0]['exp_avg']", "Opaque"),
    ({"param_groups": [{"betas": (0.9, b"x")}]}, "obj['param_groups'][0]['betas'][1]", "bytes"),
    ([1, {2, 3}], "obj[1]", "set"),
    ({"lr": 1 + 2j}, "obj['lr']", "complex"),
    ({"s": np.str_("x")}, "obj['s']", "str"),
    ({"t": np.datetime64("2020-01-01")}, "obj['t']", "datetime64"),
    ({"a": np.array(["text"])}, "obj['a']", "<U4"),
    pytest.param(
        {"a": np.zeros(2, np.longdouble)}, "obj['a']", str(np.dtype(np.longdouble)),
        marks=pytest.mark.skipif(np.dtype(np.longdouble).itemsize == 8,
                                 reason="long double is float64 on this platform"),
        id="longdouble",
    ),
    ({"a": np.zeros(2, [("x", "f4")])}, "obj['a']", "dtype"),
    ({"f": len}, "obj['f']", "builtin_function_or_method"),
])
def test_unsupported_values_raise_typeerror_naming_location(tmp_path, obj, where, what):
    path = tmp_path / "ckpt"
    path.write_bytes(b"previous checkpoint")
    with pytest.raises(TypeError) as info:
        save(obj, path)
    message = str(info.value)
    assert where in message
    assert what in message
    assert path.read_bytes() == b"previous checkpoint"
    assert listing(tmp_path) == ["ckpt"]


def test_scalar_subclasses_are_refused(tmp_path):
    import enum

    class Mode(enum.IntEnum):
        A = 1

    with pytest.raises(TypeError, match=r"obj\['mode'\].*Mode"):
        save({"mode": Mode.A}, tmp_path / "c")
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "key", [b"k", frozenset(), (1, (2, b"x")), np.int64(0), Opaque()],
    ids=["bytes", "frozenset", "tuple-with-bytes", "numpy-int", "object"],
)
def test_unsupported_dict_keys_raise_typeerror(tmp_path, key):
    path = tmp_path / "ckpt"
    path.write_bytes(b"old")
    with pytest.raises(TypeError, match=r"obj\['state'\].*key"):
        save({"state": {key: 1}}, path)
    assert path.read_bytes() == b"old"


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "ckpt"
    path.write_bytes(b"old")
    obj = {"state": {0: {"exp_avg": np.array([1.0, None], dtype=object)}}}
    with pytest.raises(TypeError) as info:
        save(obj, path)
    assert "obj['state'][0]['exp_avg']" in str(info.value)
    assert "object" in str(info.value)
    assert path.read_bytes() == b"old"
    assert listing(tmp_path) == ["ckpt"]


def test_self_containing_structure_is_refused(tmp_path):
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        save(loop, tmp_path / "c")
    assert listing(tmp_path) == []


# -------------------------------------------------------- refused on loading


def test_plain_npz_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3), bias=np.zeros(1))
    with pytest.raises(ValueError, match="not an nbopt checkpoint"):
        load(path)


@pytest.mark.parametrize("content, match", [
    (b"", "is not an nbopt checkpoint"),
    (b"hello world\n", "is not an nbopt checkpoint"),
    (b"\x80\x04K\x01.", "is not an nbopt checkpoint"),  # a pickle
    (b"PK\x03\x04garbage", "cannot load nbopt checkpoint"),  # a damaged zip
])
def test_non_npz_files_raise_valueerror(tmp_path, content, match):
    path = tmp_path / "junk"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load(path)


def test_single_npy_file_raises_valueerror(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(3))
    with pytest.raises(ValueError, match="not an nbopt checkpoint"):
        load(path)


def test_corrupted_bytes_raise_valueerror_or_load_unchanged(tmp_path):
    obj = {"state": {0: {"m": np.arange(6, dtype=np.float32)}}, "lr": 0.1, "betas": (0.9, 0.99)}
    path = tmp_path / "ckpt"
    save(obj, path)
    data = path.read_bytes()
    bad = tmp_path / "bad"
    errors = 0
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x5A
        bad.write_bytes(bytes(flipped))
        try:
            result = load(bad)
        except ValueError:
            errors += 1
        else:
            # Only bytes that carry no content (e.g. zip timestamps) may change.
            assert_same(obj, result)
    assert errors > len(data) // 2


def test_structure_referencing_missing_array_raises_valueerror(tmp_path):
    path = tmp_path / "ckpt"
    root = {"t": "list", "items": [{"t": "ndarray", "name": "a7", "dtype": "<f8", "shape": [2]}]}
    write_raw_checkpoint(path, root, a0=np.zeros(2))
    with pytest.raises(ValueError, match="a7.*missing"):
        load(path)


HEAD = {"format": "nbopt-checkpoint", "version": 1}
WRONG_DTYPE = {"t": "ndarray", "name": "a0", "dtype": "<f4", "shape": [2]}  # a0 is <f8


@pytest.mark.parametrize("structure, match", [
    ({"format": "something-else", "version": 1, "root": {"t": "none"}}, "format marker"),
    (dict(HEAD, version=99, root={"t": "none"}), "newer"),
    (HEAD, "root"),
    (dict(HEAD, root={"t": "pickle"}), "unknown"),
    (dict(HEAD, root={"t": "int", "v": True}), "boolean"),
    (dict(HEAD, root={"t": "dict", "items": [[{"t": "list", "items": []}, {"t": "none"}]]}),
     "misplaced"),
    (dict(HEAD, root={"t": "list", "items": 3}), "items"),
    (dict(HEAD, root={"t": "npscalar", "dtype": "|O", "hex": ""}), "dtype"),
    (dict(HEAD, root=WRONG_DTYPE), "structure says"),
    ([1, 2], "format marker"),
])
def test_malformed_structure_raises_valueerror(tmp_path, structure, match):
    path = tmp_path / "ckpt"
    write_raw_checkpoint(path, None, structure=structure, a0=np.zeros(2))
    with pytest.raises(ValueError, match=match):
        load(path)


def npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize("member", ["a0", "nbopt_checkpoint"])
def test_header_claiming_huge_array_raises_valueerror_without_allocating(tmp_path, member):
    # numpy allocates what a .npy header announces before reading the data;
    # here 8 PB are announced and 16 bytes follow.
    huge = [10**15]
    structure = {"format": "nbopt-checkpoint", "version": 1,
                 "root": {"t": "ndarray", "name": "a0", "dtype": "<f8", "shape": huge}}
    members = {
        "nbopt_checkpoint": npy_bytes(np.frombuffer(json.dumps(structure).encode(), np.uint8)),
        "a0": npy_bytes(np.zeros(2)),
    }
    header = io.BytesIO()
    descr = "|u1" if member == "nbopt_checkpoint" else "<f8"
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": tuple(huge)}
    )
    members[member] = header.getvalue() + bytes(16)
    path = tmp_path / "bomb"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
    with pytest.raises(ValueError, match="shorter than its header"):
        load(path)


def test_structure_member_that_is_not_json_raises_valueerror(tmp_path):
    path = tmp_path / "ckpt"
    with path.open("wb") as fh:
        np.savez(fh, nbopt_checkpoint=np.frombuffer(b"\xff{not json", np.uint8))
    with pytest.raises(ValueError, match="cannot load"):
        load(path)


def test_deeply_nested_json_raises_valueerror(tmp_path):
    path = tmp_path / "ckpt"
    deep = '{"t":"list","items":[' * 100_000 + "]}" * 100_000
    blob = ('{"format":"nbopt-checkpoint","version":1,"root":' + deep + "}").encode()
    with path.open("wb") as fh:
        np.savez(fh, nbopt_checkpoint=np.frombuffer(blob, np.uint8))
    with pytest.raises(ValueError):
        load(path)


# Set when the payload below is unpickled; it must never be.
UNPICKLED = []


def _mark_unpickled():
    UNPICKLED.append(True)
    return "pwned"


class Payload:
    def __reduce__(self):
        return (_mark_unpickled, ())


def pickled_object_array():
    array = np.empty(1, dtype=object)
    array[0] = Payload()
    return array


def write_raw_checkpoint(path, root, structure=None, **arrays):
    if structure is None:
        structure = {"format": "nbopt-checkpoint", "version": 1, "root": root}
    blob = json.dumps(structure).encode()
    with open(path, "wb") as fh:
        np.savez(fh, nbopt_checkpoint=np.frombuffer(blob, np.uint8), **arrays)


@pytest.mark.parametrize("where", ["array member", "structure member", "plain npz"])
def test_pickled_object_arrays_are_refused_and_never_unpickled(tmp_path, where):
    path = tmp_path / "evil"
    if where == "array member":
        root = {"t": "ndarray", "name": "a0", "dtype": "|O", "shape": [1]}
        write_raw_checkpoint(path, root, a0=pickled_object_array())
        # Also with a structure that lies about the dtype, so that the
        # refusal cannot rest on the structure's word alone.
        liar = tmp_path / "liar"
        write_raw_checkpoint(liar, {"t": "ndarray", "name": "a0", "dtype": "<f8", "shape": [1]},
                             a0=pickled_object_array())
    elif where == "structure member":
        with open(path, "wb") as fh:
            np.savez(fh, nbopt_checkpoint=pickled_object_array())
        liar = path
    else:
        with open(path, "wb") as fh:
            np.savez(fh, a0=pickled_object_array())
        liar = path
    UNPICKLED.clear()

    for candidate in (path, liar):
        with pytest.raises(ValueError):
            load(candidate)
    assert UNPICKLED == []

    # Control: the payload is live, so the assertion above is meaningful.
    member = "nbopt_checkpoint" if where == "structure member" else "a0"
    with np.load(path, allow_pickle=True) as npz:
        assert npz[member][0] == "pwned"
    assert UNPICKLED == [True]
