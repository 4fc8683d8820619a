"""nbopt.swa_utils against torch 2.13: AveragedModel (SWA, EMA, custom averages,
buffers), update_bn, the four averaging functions, errors, and the kernel
paths.

Parity runs twice: against the committed reference data
(``tests/data/swa_reference.npz``, made by ``tests/make_swa_reference.py``),
always; against live torch on the same inputs when torch is importable.  The
averaging kernels reproduce torch's rounding, so averaged arrays are compared
bit for bit; batch-norm statistics (summation order) within a few ulps.
"""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

import nbopt
from nbopt import config, nn, swa_utils
from nbopt.swa_utils import (AveragedModel, get_ema_avg_fn, get_ema_multi_avg_fn,
                             get_swa_avg_fn, get_swa_multi_avg_fn, update_bn)

from conftest import requires_torch
import make_swa_reference as ref

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "swa_reference.npz")
BN_TOL = {"float32": dict(rtol=1e-6, atol=1e-7), "float64": dict(rtol=1e-13, atol=1e-15)}

_data = None


def data() -> dict:
    global _data
    if _data is None:
        with np.load(DATA, allow_pickle=False) as z:
            _data = {k: z[k] for k in z.files}
    return _data


def index() -> dict:
    return json.loads(data()["index"].tobytes())


def stored(prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in data().items() if k.startswith(prefix)}


def stored_steps(config_name: str, dtype: str) -> dict:
    out = {}
    for key, value in stored(f"avg|{config_name}|{dtype}|").items():
        step, name = key.split("|", 1)
        out.setdefault(int(step), {})[name] = value
    # np.savez keeps insertion order, which is torch's state_dict order
    return out


def assert_same_states(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for step in want:
        assert list(got[step]) == list(want[step]), f"step {step}: state_dict keys/order"
        for name, expected in want[step].items():
            have = got[step][name]
            assert have.dtype == expected.dtype and have.shape == expected.shape, (step, name)
            np.testing.assert_array_equal(have, expected, err_msg=f"step {step} {name}")


# --------------------------------------------------------------------------
# parity: AveragedModel

def test_reference_data_is_from_torch_2_13():
    idx = index()
    assert idx["torch"].startswith("2.13.")
    assert idx["configs"] == list(ref.CONFIGS)
    assert idx["complex_configs"] == list(ref.COMPLEX_CONFIGS)


@pytest.mark.parametrize("dtype", ref.REAL_DTYPES)
@pytest.mark.parametrize("config_name", list(ref.CONFIGS))
def test_averaged_model_matches_committed_torch(config_name, dtype):
    inputs = stored(f"in|{dtype}|")
    assert_same_states(ref.run_nbopt_average(config_name, inputs, dtype),
                       stored_steps(config_name, dtype))


@pytest.mark.parametrize("dtype", ref.COMPLEX_DTYPES)
@pytest.mark.parametrize("config_name", ref.COMPLEX_CONFIGS)
def test_protocol_model_with_complex_parameters_matches_committed_torch(config_name, dtype):
    inputs = stored(f"in|{dtype}|")
    assert_same_states(ref.run_nbopt_complex(config_name, inputs),
                       stored_steps(config_name, dtype))


@requires_torch
@pytest.mark.parametrize("dtype", ref.REAL_DTYPES)
@pytest.mark.parametrize("config_name", list(ref.CONFIGS))
def test_averaged_model_matches_live_torch(config_name, dtype):
    inputs = ref.make_inputs(dtype)
    assert_same_states(ref.run_nbopt_average(config_name, inputs, dtype),
                       ref.run_torch_average(config_name, inputs, dtype))


@requires_torch
@pytest.mark.parametrize("dtype", ref.COMPLEX_DTYPES)
@pytest.mark.parametrize("config_name", ref.COMPLEX_CONFIGS)
def test_protocol_model_with_complex_parameters_matches_live_torch(config_name, dtype):
    inputs = ref.make_complex_inputs(dtype)
    assert_same_states(ref.run_nbopt_complex(config_name, inputs),
                       ref.run_torch_complex(config_name, inputs))


@pytest.mark.parametrize("dtype", ref.REAL_DTYPES)
def test_state_dict_keys_are_torchs(dtype):
    model = ref.nbopt_model(dtype)
    assert list(model.state_dict()) == index()[f"keys|{dtype}"]
    averaged = AveragedModel(model)
    assert list(averaged.state_dict()) == ["n_averaged"] + [
        "module." + k for k in index()[f"keys|{dtype}"]]
    assert averaged.n_averaged.dtype == np.int64 and averaged.n_averaged.shape == ()


# --------------------------------------------------------------------------
# parity: update_bn and the list-level functions

def _compare_bn(got: dict, want: dict, dtype: str) -> None:
    assert list(got) == list(want)
    for key, expected in want.items():
        have = got[key]
        assert have.dtype == expected.dtype, key
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(have, expected, err_msg=key, **BN_TOL[dtype])
        else:
            np.testing.assert_array_equal(have, expected, err_msg=key)


@pytest.mark.parametrize("dtype", ref.REAL_DTYPES)
def test_update_bn_matches_committed_torch(dtype):
    _compare_bn(ref.run_nbopt_update_bn(stored(f"in|{dtype}|"), dtype),
                stored(f"bn|{dtype}|"), dtype)


@requires_torch
@pytest.mark.parametrize("dtype", ref.REAL_DTYPES)
def test_update_bn_matches_live_torch(dtype):
    inputs = ref.make_inputs(dtype)
    _compare_bn(ref.run_nbopt_update_bn(inputs, dtype), ref.run_torch_update_bn(inputs, dtype),
                dtype)


LIST_CASES = list(ref.list_cases())


def _compare_lists(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, expected in want.items():
        assert got[key].dtype == expected.dtype and got[key].shape == expected.shape, key
        np.testing.assert_array_equal(got[key], expected, err_msg=key)


@pytest.mark.parametrize("name,dtype", LIST_CASES, ids=[f"{n}-{d}" for n, d in LIST_CASES])
def test_averaging_functions_match_committed_torch(name, dtype):
    assert [name, dtype] in index()["lists"]
    _compare_lists(ref.run_nbopt_lists(name, stored(f"listin|{name}|{dtype}|")),
                   stored(f"list|{name}|{dtype}|"))


@requires_torch
@pytest.mark.parametrize("name,dtype", LIST_CASES, ids=[f"{n}-{d}" for n, d in LIST_CASES])
def test_averaging_functions_match_live_torch(name, dtype):
    inputs = ref.make_list_inputs(dtype)
    _compare_lists(ref.run_nbopt_lists(name, inputs), ref.run_torch_lists(name, inputs))


# --------------------------------------------------------------------------
# semantics

def _linear(dtype=np.float64, seed=0):
    return nn.Linear(3, 2, dtype=dtype, rng=seed)


def test_swa_is_the_arithmetic_mean_of_the_snapshots():
    model = _linear()
    averaged = AveragedModel(model)
    rng = np.random.default_rng(5)
    snaps = [rng.standard_normal(model.weight.shape) for _ in range(6)]
    for s in snaps:
        model.weight[...] = s
        averaged.update_parameters(model)
    np.testing.assert_allclose(averaged.module.weight, np.mean(snaps, axis=0), rtol=1e-14)
    assert int(averaged.n_averaged) == 6


def test_ema_follows_the_recurrence():
    decay = 0.8
    model = _linear()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    rng = np.random.default_rng(6)
    expected = None
    for _ in range(5):
        model.weight[...] = rng.standard_normal(model.weight.shape)
        ema.update_parameters(model)
        w = np.array(model.weight)
        expected = w if expected is None else decay * expected + (1 - decay) * w
    np.testing.assert_allclose(ema.module.weight, expected, rtol=1e-13)


def test_first_update_copies_and_the_copy_is_independent():
    model = _linear()
    averaged = AveragedModel(model)
    for p, q in zip(model.parameters(), averaged.parameters()):
        assert isinstance(q, nbopt.Parameter) and not np.shares_memory(p, q)
    model.weight[...] = 7.0
    averaged.update_parameters(model)
    np.testing.assert_array_equal(averaged.module.weight, model.weight)
    model.weight[...] = 1.0
    assert float(averaged.module.weight[0, 0]) == 7.0
    x = np.ones((4, 3))
    np.testing.assert_array_equal(averaged(x), averaged.module(x))


def test_buffers_are_copied_not_averaged_without_use_buffers():
    model = ref.nbopt_model("float64")
    averaged = AveragedModel(model)
    for k in range(3):
        model[1].running_mean[...] = k
        model[1].num_batches_tracked[...] = 10 * k
        averaged.update_parameters(model)
        np.testing.assert_array_equal(averaged.module[1].running_mean, model[1].running_mean)
        assert int(averaged.module[1].num_batches_tracked) == 10 * k


def test_non_strict_pairing_of_parameters():
    # torch pairs parameters with a non-strict zip: extra ones are ignored
    big = nn.Sequential(_linear(), nn.Linear(2, 2, dtype=np.float64, rng=1))
    small = nn.Sequential(_linear(seed=3))
    averaged = AveragedModel(big)
    before = np.array(averaged.module[1].weight)
    averaged.update_parameters(small)
    np.testing.assert_array_equal(averaged.module[0].weight, small[0].weight)
    np.testing.assert_array_equal(averaged.module[1].weight, before)


def test_avg_fn_receives_the_counter():
    seen = []

    def avg_fn(avg, cur, n):
        seen.append((type(n), n.dtype, int(n)))
        return avg + cur

    model = _linear()
    averaged = AveragedModel(model, avg_fn=avg_fn)
    for _ in range(3):
        averaged.update_parameters(model)
    assert seen == [(np.ndarray, np.dtype(np.int64), 1)] * 2 + [
        (np.ndarray, np.dtype(np.int64), 2)] * 2
    np.testing.assert_allclose(averaged.module.weight, 3 * model.weight)


def test_multi_avg_fn_is_called_once_per_dtype():
    calls = []

    class Mixed:
        def __init__(self):
            self.p = [nbopt.Parameter(np.ones(3, np.float32)), nbopt.Parameter(np.ones(2)),
                      nbopt.Parameter(np.ones(4, np.float32))]
            self.training = True

        def parameters(self):
            return list(self.p)

        def buffers(self):
            return []

        def modules(self):
            return [self]

        def train(self, mode=True):
            self.training = mode

    def multi(avg_list, cur_list, n):
        calls.append([a.dtype for a in avg_list])

    averaged = AveragedModel(Mixed(), multi_avg_fn=multi)
    averaged.update_parameters(Mixed())
    averaged.update_parameters(Mixed())
    assert calls == [[np.float32, np.float32], [np.float64]]


def test_state_dict_round_trip_through_nbopt_save(tmp_path):
    model = ref.nbopt_model("float32")
    averaged = AveragedModel(model)
    for _ in range(3):
        for p in model.parameters():
            p += 1
        averaged.update_parameters(model)
    nbopt.save(averaged.state_dict(), tmp_path / "swa.npz")
    restored = AveragedModel(ref.nbopt_model("float32"))
    restored.load_state_dict(nbopt.load(tmp_path / "swa.npz"))
    assert int(restored.n_averaged) == 3
    for (k, a), (k2, b) in zip(averaged.state_dict().items(), restored.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# update_bn

def test_update_bn_restores_mode_and_momenta_and_averages_batches():
    bn_a = nn.BatchNorm1d(3, momentum=0.25)
    bn_b = nn.BatchNorm1d(3, momentum=None)
    model = nn.Sequential(bn_a, nn.ReLU(), bn_b).eval()
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((10, 3)).astype(np.float32) * (i + 1) for i in range(3)]
    update_bn(iter(batches), model)
    assert model.training is False and bn_a.training is False
    assert bn_a.momentum == 0.25 and bn_b.momentum is None
    assert int(bn_a.num_batches_tracked) == 3
    np.testing.assert_allclose(bn_a.running_mean, np.mean([b.mean(0) for b in batches], 0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn_a.running_var,
                               np.mean([b.var(0, ddof=1) for b in batches], 0), rtol=1e-5)


def test_update_bn_without_batchnorm_leaves_the_model_alone():
    model = nn.Sequential(_linear()).eval()
    calls = []
    update_bn((calls.append(1) or np.ones((2, 3)) for _ in range(3)), model)
    assert calls == [] and model.training is False


def test_update_bn_takes_first_element_of_lists_and_tuples():
    model = nn.Sequential(nn.BatchNorm1d(2, dtype=np.float64))
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    update_bn([[x, "label"], (x, None)], model)
    np.testing.assert_array_equal(model[0].running_mean, x.mean(0))
    assert model.training is True


def test_update_bn_recognises_protocol_normalisation_layers():
    class MyNorm:
        def __init__(self):
            self.momentum = 0.5
            self.resets = 0
            self.seen_momentum = []

        def reset_running_stats(self):
            self.resets += 1

    norm = MyNorm()

    class Net:
        training = False

        def modules(self):
            return [self, norm]

        def train(self, mode=True):
            self.training = mode

        def __call__(self, x):
            norm.seen_momentum.append((norm.momentum, self.training))

    net = Net()
    update_bn([np.zeros(1), np.zeros(1)], net)
    assert norm.resets == 1 and norm.momentum == 0.5
    assert norm.seen_momentum == [(None, True), (None, True)]
    assert net.training is False


# --------------------------------------------------------------------------
# errors: torch's types and messages, raised before anything changes

def test_both_functions_given_raises_assertion_error():
    with pytest.raises(AssertionError, match="^Only one of avg_fn and multi_avg_fn should be "
                                             "provided$"):
        AveragedModel(_linear(), avg_fn=get_swa_avg_fn(), multi_avg_fn=get_swa_multi_avg_fn())


@pytest.mark.parametrize("factory", [get_ema_multi_avg_fn, get_ema_avg_fn])
@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_invalid_decay(factory, decay):
    with pytest.raises(ValueError) as info:
        factory(decay)
    assert str(info.value) == (f"Invalid decay value {decay} provided. Please provide a value "
                               "in [0,1] range.")


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_decay_bounds_are_valid(decay):
    ema = [np.zeros(2)]
    get_ema_multi_avg_fn(decay)(ema, [np.ones(2)], None)
    np.testing.assert_array_equal(ema[0], np.full(2, 1.0 - decay))


def test_device_must_be_host():
    with pytest.raises(ValueError, match="device"):
        AveragedModel(_linear(), device="cuda")
    AveragedModel(_linear(), device="cpu")


def _snapshot(m):
    return {k: np.array(v) for k, v in m.state_dict().items()}


def _assert_unchanged(m, before):
    after = _snapshot(m)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


class _Shaped:
    """A protocol model with parameters of the given shapes."""

    def __init__(self, *shapes, dtype=np.float32, buffers=()):
        self.ps = [nbopt.Parameter(np.ones(s, dtype)) for s in shapes]
        self.bs = [np.zeros(s, np.float32) for s in buffers]
        self.training = True

    def parameters(self):
        return list(self.ps)

    def buffers(self):
        return list(self.bs)

    def modules(self):
        return [self]

    def train(self, mode=True):
        self.training = mode

    def __call__(self, x):
        return x


def _torch_error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - we compare whatever torch raises
        return type(e), str(e)
    raise AssertionError("torch did not raise")


SHAPE_ERRORS = [((2, 3), (5,), 0), ((2, 3), (2, 2, 3), 0), ((2, 3), (4,), 1),
                ((2, 3), (2, 2, 3), 1)]


@pytest.mark.parametrize("avg_shape,model_shape,warm", SHAPE_ERRORS)
def test_shape_mismatch_errors(avg_shape, model_shape, warm):
    averaged = AveragedModel(_Shaped((4,), avg_shape))
    for _ in range(warm):
        averaged.update_parameters(_Shaped((4,), avg_shape))
    before = _snapshot(averaged)
    with pytest.raises(RuntimeError) as info:
        averaged.update_parameters(_Shaped((4,), model_shape))
    _assert_unchanged(averaged, before)    # nothing written, counter included
    assert "must match" in str(info.value) or "doesn't match the broadcast shape" in str(
        info.value)
    if ref_torch() is not None:
        torch = ref_torch()

        class T(torch.nn.Module):
            def __init__(self, *shapes):
                super().__init__()
                self.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(s))
                                                  for s in shapes])

        tav = torch.optim.swa_utils.AveragedModel(T((4,), avg_shape))
        for _ in range(warm):
            tav.update_parameters(T((4,), avg_shape))
        assert _torch_error(lambda: tav.update_parameters(T((4,), model_shape))) == (
            RuntimeError, str(info.value))


def ref_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def test_broadcastable_model_arrays_are_accepted():
    averaged = AveragedModel(_Shaped((2, 3)))
    model = _Shaped((3,))
    model.ps[0][...] = [1, 2, 3]
    averaged.update_parameters(model)
    model.ps[0][...] = [3, 4, 5]
    averaged.update_parameters(model)
    np.testing.assert_array_equal(averaged.module.ps[0], np.tile([2.0, 3.0, 4.0], (2, 1)))


def test_buffer_count_mismatch_raises_before_writing():
    averaged = AveragedModel(_Shaped((3,), buffers=[(2,)]))
    averaged.update_parameters(_Shaped((3,), buffers=[(2,)]))
    before = _snapshot(averaged)
    model = _Shaped((3,))
    model.ps[0][...] = 5
    with pytest.raises(ValueError, match=r"^zip\(\) argument 2 is shorter than argument 1$"):
        averaged.update_parameters(model)
    _assert_unchanged(averaged, before)


def test_swa_multi_on_integer_buffers_raises_torchs_error_before_writing():
    model = ref.nbopt_model("float32")
    averaged = AveragedModel(model, multi_avg_fn=get_swa_multi_avg_fn(), use_buffers=True)
    averaged.update_parameters(model)
    before = _snapshot(averaged)
    with pytest.raises(RuntimeError, match="^Integer division with addcdiv is no longer "
                                           "supported"):
        averaged.update_parameters(model)
    _assert_unchanged(averaged, before)
    with pytest.raises(RuntimeError, match="^For integral input tensors, argument alpha must "
                                           "not be a floating point number.$"):
        get_swa_multi_avg_fn()([np.zeros(2, np.int64)], [np.ones(2, np.int64)], 1)


def test_multi_fn_dtype_mismatch():
    averaged = AveragedModel(_Shaped((3,)), multi_avg_fn=get_ema_multi_avg_fn())
    averaged.update_parameters(_Shaped((3,), dtype=np.float64))
    with pytest.raises(RuntimeError, match="^expected dtype float for `end` but got dtype "
                                           "double$"):
        averaged.update_parameters(_Shaped((3,), dtype=np.float64))


def test_default_average_promotes_mixed_dtypes_like_torch():
    averaged = AveragedModel(_Shaped((3,)))
    model = _Shaped((3,), dtype=np.float64)
    model.ps[0][...] = 1 / 3
    averaged.update_parameters(model)
    model.ps[0][...] = 0.1
    averaged.update_parameters(model)
    # computed in float64, then rounded once into the float32 average
    expected = np.float32(np.float64(np.float32(1 / 3)) + (0.1 - np.float64(np.float32(1 / 3)))
                          / 2)
    np.testing.assert_array_equal(averaged.module.ps[0], np.full(3, expected))


# --------------------------------------------------------------------------
# kernel paths give identical results

def _random_model(rng, shapes, dtype, order="C"):
    m = _Shaped(*shapes, dtype=dtype)
    for p in m.ps:
        p[...] = rng.standard_normal(p.shape)
    if order == "F":
        m.ps = [nbopt.Parameter(np.asfortranarray(p)) for p in m.ps]
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("kind", ["swa", "ema", "swa_multi"])
def test_parallel_chunks_and_layouts_match_the_serial_kernel(dtype, kind, monkeypatch):
    rng = np.random.default_rng(11)
    shapes = [(300,), (17, 9), (), (1000,), (5, 4, 3)]
    snaps = [_random_model(rng, shapes, dtype) for _ in range(3)]
    fns = {"swa": {}, "ema": {"multi_avg_fn": get_ema_multi_avg_fn(0.7)},
           "swa_multi": {"multi_avg_fn": get_swa_multi_avg_fn()}}

    def run(snapshots):
        # the averaged copy always starts from the C-ordered, separately
        # allocated first snapshot; the model arrays vary in layout
        averaged = AveragedModel(snaps[0], **fns[kind])
        for s in snapshots:
            averaged.update_parameters(s)
        return [np.array(p) for p in averaged.parameters()]

    serial = run(snaps)
    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(config, "CHUNK_SIZE", 64)
    parallel = run(snaps)
    fortran = run([_fortran_copy(s) for s in snaps])
    monkeypatch.undo()
    arena = run([_arena_copy(s) for s in snaps])
    strided = run([_strided_copy(s) for s in snaps])
    for got in (parallel, fortran, arena, strided):
        for a, b in zip(got, serial):
            np.testing.assert_array_equal(a, b)


def _fortran_copy(m):
    out = copy.deepcopy(m)
    out.ps = [nbopt.Parameter(np.asfortranarray(p)) if p.ndim > 1 else p for p in out.ps]
    return out


def _arena_copy(m):
    out = copy.deepcopy(m)
    out.ps = nbopt.ParameterArena([np.array(p) for p in m.ps], dtype=m.ps[0].dtype).params
    return out


def _strided_copy(m):
    # model arrays that are non-contiguous views
    out = copy.deepcopy(m)
    out.ps = [np.repeat(np.array(p)[..., None], 2, axis=-1)[..., 0] for p in m.ps]
    return out


def test_non_contiguous_averaged_arrays_are_written_back():
    class Strided(_Shaped):
        def __init__(self):
            super().__init__()
            self.base = np.zeros((4, 6))
            self.bs = []
            self.ps = []

        def parameters(self):
            return [self.base[:, ::2]]

    averaged = AveragedModel(Strided())
    m = Strided()
    for v in (2.0, 4.0, 9.0):
        m.base[...] = v
        averaged.update_parameters(m)
    np.testing.assert_array_equal(averaged.module.base[:, ::2], 5.0)
    np.testing.assert_array_equal(averaged.module.base[:, 1::2], 0.0)


def test_averaging_many_parameters_is_one_kernel_call_per_dtype(monkeypatch):
    from nbopt.kernels import averaging

    calls = []
    real = averaging.average_

    def spy(kind, avg_list, cur_list, value, cache=None):
        calls.append((kind, len(avg_list)))
        return real(kind, avg_list, cur_list, value, cache)

    monkeypatch.setattr(swa_utils, "average_", spy)
    shapes = [(3,)] * 200
    model = _Shaped(*shapes)
    averaged = AveragedModel(model)
    averaged.update_parameters(model)
    averaged.update_parameters(model)
    assert calls == [("swa", 200)]


def test_pointer_table_is_reused_and_rebuilt_when_arrays_change():
    model = _Shaped((3,), (2, 2))
    averaged = AveragedModel(model)
    averaged.update_parameters(model)
    averaged.update_parameters(model)
    table = averaged._tables[np.dtype(np.float32)]
    averaged.update_parameters(model)
    assert averaged._tables[np.dtype(np.float32)] is table          # reused
    model.ps = [nbopt.Parameter(np.full(3, 9, np.float32)), nbopt.Parameter(np.zeros((2, 2),
                                                                                    np.float32))]
    averaged.update_parameters(model)                                # new arrays: rebuilt
    assert averaged._tables[np.dtype(np.float32)] is not table
    np.testing.assert_array_equal(averaged.module.ps[0], np.full(3, 3.0))   # (1+1+1+9)/4
    np.testing.assert_array_equal(averaged.module.ps[1], np.full((2, 2), 0.75))


def test_copies_of_an_averaged_model_do_not_share_pointer_tables():
    model = _Shaped((5,))
    averaged = AveragedModel(model)
    averaged.update_parameters(model)
    averaged.update_parameters(model)
    clone = copy.deepcopy(averaged)
    assert clone._tables == {}
    model.ps[0][...] = 4.0
    clone.update_parameters(model)          # must write the clone's arrays only
    np.testing.assert_array_equal(clone.module.ps[0], np.full(5, 2.0))
    np.testing.assert_array_equal(averaged.module.ps[0], np.ones(5))
    averaged.update_parameters(model)
    np.testing.assert_array_equal(averaged.module.ps[0], np.full(5, 2.0))


@pytest.mark.parametrize("kind", ["swa", "ema_multi", "swa_multi"])
def test_float16_goes_through_float32_like_torch(kind):
    # the kernels take float32/float64; float16 is averaged in float32 and
    # rounded once, as torch's half lerp (live check below when torch is there)
    fns = {"swa": {}, "ema_multi": {"multi_avg_fn": get_ema_multi_avg_fn(0.9)},
           "swa_multi": {"multi_avg_fn": get_swa_multi_avg_fn()}}
    rng = np.random.default_rng(1)
    snaps = [rng.standard_normal(300).astype(np.float16) for _ in range(5)]
    model = _Shaped((300,), dtype=np.float16)
    averaged = AveragedModel(model, **fns[kind])
    for s in snaps:
        model.ps[0][...] = s
        averaged.update_parameters(model)
    got = averaged.module.ps[0]
    assert got.dtype == np.float16
    if kind != "ema_multi":
        np.testing.assert_allclose(got, np.mean(np.array(snaps, np.float64), 0), atol=4e-3)
    torch = ref_torch()
    if torch is None:
        return
    tfns = {"swa": {}, "ema_multi": {"multi_avg_fn":
                                     torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)},
            "swa_multi": {"multi_avg_fn": torch.optim.swa_utils.get_swa_multi_avg_fn()}}
    tmodel = torch.nn.Module()
    tmodel.p = torch.nn.Parameter(torch.zeros(300, dtype=torch.float16))
    taveraged = torch.optim.swa_utils.AveragedModel(tmodel, **tfns[kind])
    for s in snaps:
        with torch.no_grad():
            tmodel.p.copy_(torch.from_numpy(s))
        taveraged.update_parameters(tmodel)
    np.testing.assert_array_equal(got, taveraged.module.p.detach().numpy())


def test_kernel_dtypes_agree_with_the_kernels_module():
    from nbopt import swa_utils
    from nbopt.kernels import averaging

    assert swa_utils._KERNEL_DTYPES == averaging.DTYPES
