"""8-bit optimizers (issue 18): the dynamic maps, block-wise quantization
bounds, the compiled steps against a NumPy transcription of the paper's
algorithm and (when importable) bitsandbytes 0.50.2's CPU optimizers, state
dicts, mixed 8-bit/32-bit groups, the small-tensor fallback and bad input."""
from __future__ import annotations

import numpy as np
import pytest

import nbopt
from nbopt.kernels import quantized as Q
from nbopt.optim.optim8bit import dequantize_state_dict

try:
    import torch
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbF
    HAVE_BNB = True
except Exception:       # noqa: BLE001 - bitsandbytes fails to import in many ways
    HAVE_BNB = False

requires_bnb = pytest.mark.skipif(not HAVE_BNB, reason="bitsandbytes is not installed")

CLASSES = {
    "Adam8bit": (nbopt.Adam8bit, nbopt.Adam, {"lr": 1e-2}),
    "AdamW8bit": (nbopt.AdamW8bit, nbopt.AdamW, {"lr": 1e-2}),
    "SGD8bit": (nbopt.SGD8bit, nbopt.SGD, {"lr": 1e-2, "momentum": 0.9}),
    "RMSprop8bit": (nbopt.RMSprop8bit, nbopt.RMSprop, {"lr": 1e-3}),
    "Adagrad8bit": (nbopt.Adagrad8bit, nbopt.Adagrad, {"lr": 1e-2}),
}


def level(qmap, q):
    """The width of the quantization cell of code ``q`` (the larger gap to a
    neighbour), in units of absmax."""
    q = q.astype(np.int64)
    lo = np.abs(qmap[q] - qmap[np.maximum(q - 1, 0)])
    hi = np.abs(qmap[np.minimum(q + 1, 255)] - qmap[q])
    return np.maximum(lo, hi)


def decode(q, absmax, qmap):
    flat = q.reshape(-1)
    return (qmap[flat] * np.repeat(absmax, Q.BLOCKSIZE)[:flat.size]).reshape(q.shape)


# -- maps and quantization ------------------------------------------------------

@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_shape(signed):
    m = Q.create_dynamic_map(signed)
    assert m.dtype == np.float32 and m.shape == (256,)
    assert np.all(np.diff(m) >= 0) and m[-1] == 1.0 and 0.0 in m
    assert (m.min() < 0) == signed
    assert len(np.unique(m)) == 256


@requires_bnb
@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_is_bitsandbytes(signed):
    np.testing.assert_array_equal(Q.create_dynamic_map(signed),
                                  bnbF.create_dynamic_map(signed=signed).numpy())


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", [1, 255, 256, 257, 5000, 300_000])
def test_quantize_round_trip_bounds_per_block(signed, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) ** 3 * 10.0 ** rng.integers(-6, 3, n)).astype(np.float32)
    if not signed:
        x = np.abs(x)
    x[: min(n, 300)] = 0        # an all-zero block
    q, absmax = Q.quantize_blockwise(x, signed)
    assert q.dtype == np.uint8 and absmax.shape == (Q.n_blocks(n),)
    qmap = Q.tables(signed)[0]
    for b in range(absmax.shape[0]):
        blk = x[b * 256:(b + 1) * 256]
        assert absmax[b] == np.abs(blk).max()
    # each code is the nearest one (ties to the lower), so the error of every
    # element is at most half its cell, and at most 0.0071 * absmax per block
    scaled = np.clip(x / np.where(np.repeat(absmax, 256)[:n] > 0, np.repeat(absmax, 256)[:n], 1),
                     -1, 1).astype(np.float32)
    mids = (qmap[:-1] + qmap[1:]) / np.float32(2)
    want = np.searchsorted(mids, scaled, side="left")
    if not signed:      # a positive second moment never becomes 0
        want = np.where((scaled > 0) & (want == 0), 1, want)
    np.testing.assert_array_equal(q, want)
    d = Q.dequantize_blockwise(q, absmax, qmap)
    err = np.abs(d - x)
    half = level(qmap, q) / 2
    if not signed:      # rounded up to the smallest positive code: at most that code
        half = np.where(q == 1, np.maximum(half, qmap[1]), half)
    bound = np.repeat(absmax, 256)[:n] * (half + 1e-7)
    assert np.all(err <= bound)
    worst = 0.00704 if signed else 0.00352
    for b in range(absmax.shape[0]):
        assert err[b * 256:(b + 1) * 256].max() <= worst * absmax[b] + 1e-30


@pytest.mark.parametrize("blocksize", [0, -256, 2.5, True])
def test_bad_block_sizes(blocksize):
    with pytest.raises(ValueError, match="blocksize"):
        Q.quantize_blockwise(np.ones(10, np.float32), True, blocksize)
    with pytest.raises(ValueError, match="blocksize"):
        Q.dequantize_blockwise(np.ones(10, np.uint8), np.ones(1, np.float32), Q.SIGNED_MAP,
                               blocksize)


def test_dequantize_checks_its_absmax_length():
    with pytest.raises(ValueError, match="need 2 absmax"):
        Q.dequantize_blockwise(np.ones(300, np.uint8), np.ones(1, np.float32), Q.SIGNED_MAP)


@pytest.mark.parametrize("blocksize", [64, 256, 1000])
def test_other_block_sizes_round_trip(blocksize):
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    q, a = Q.quantize_blockwise(x, True, blocksize)
    assert a.shape == (Q.n_blocks(5000, blocksize),)
    d = Q.dequantize_blockwise(q, a, Q.SIGNED_MAP, blocksize)
    assert np.all(np.abs(d - x) <= 0.00704 * np.repeat(a, blocksize)[:5000])


def test_step_hooks_run():
    w = nbopt.Parameter(np.ones(5000, np.float32))
    opt = nbopt.Adam8bit([w])
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    w.grad = np.ones_like(w)
    opt.step()
    assert calls == ["pre", "post"]


def test_quantize_nan_propagates_through_its_block():
    x = np.ones(600, np.float32)
    x[300] = np.nan
    q, a = Q.quantize_blockwise(x, True)
    d = Q.dequantize_blockwise(q, a, Q.SIGNED_MAP)
    assert np.isnan(a[1]) and np.isnan(d[256:512]).all() and np.isfinite(d[:256]).all()


# -- the step against a transcription of the paper's algorithm ------------------

def reference_adam8bit(p, g, st, lr, b1, b2, eps, wd, t):
    """Dettmers et al. 2022, Algorithm 1 (block-wise 8-bit Adam) in NumPy
    float64: dequantize, Adam update, quantize with the new block absmax."""
    m = decode(st["state1"], st["absmax1"], Q.SIGNED_MAP).astype(np.float64)
    v = decode(st["state2"], st["absmax2"], Q.UNSIGNED_MAP).astype(np.float64)
    g = g.astype(np.float64) + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)
    q1, a1 = Q.quantize_blockwise(m.astype(np.float32), True)
    q2, a2 = Q.quantize_blockwise(v.astype(np.float32), False)
    return p, {"state1": q1, "absmax1": a1, "state2": q2, "absmax2": a2}, m, v


@pytest.mark.parametrize("n", [4096, 10_000, 300_000])   # serial and parallel kernels
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam8bit_matches_reference_transcription(n, wd, dtype):
    rng = np.random.default_rng(1)
    w = nbopt.Parameter(rng.standard_normal(n).astype(dtype))
    opt = nbopt.Adam8bit([w], lr=1e-2, weight_decay=wd)
    for t in range(1, 8):
        g = (rng.standard_normal(n) * rng.uniform(0.1, 3)).astype(dtype)
        st = {k: v.copy() for k, v in opt.state[w].items()} if t > 1 else {
            "state1": np.full(n, 127, np.uint8) * 0 + np.searchsorted(Q.SIGNED_MAP, 0),
            "absmax1": np.zeros(Q.n_blocks(n), np.float32),
            "state2": np.zeros(n, np.uint8), "absmax2": np.zeros(Q.n_blocks(n), np.float32)}
        p_ref, st_ref, m_ref, v_ref = reference_adam8bit(w.astype(np.float64), g, st, 1e-2,
                                                         0.9, 0.999, 1e-8, wd, t)
        w.grad = g
        opt.step()
        s = opt.state[w]
        np.testing.assert_allclose(w, p_ref, rtol=1e-5, atol=1e-6)
        # the states are within one quantization level of the reference's
        for k, qmap in (("1", Q.SIGNED_MAP), ("2", Q.UNSIGNED_MAP)):
            np.testing.assert_allclose(s["absmax" + k], st_ref["absmax" + k], rtol=1e-5)
            mine = decode(s["state" + k], s["absmax" + k], qmap)
            ref = decode(st_ref["state" + k], st_ref["absmax" + k], qmap)
            tol = np.repeat(s["absmax" + k], 256)[:n] * level(qmap, s["state" + k]) * 1.0001
            assert np.all(np.abs(mine - ref) <= tol + 1e-30)


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_tensor_fallback_is_the_32bit_algorithm_bit_for_bit(name, dtype):
    cls8, cls32, kw = CLASSES[name]
    rng = np.random.default_rng(2)
    a = nbopt.Parameter(rng.standard_normal((10, 30)).astype(dtype))
    b = nbopt.Parameter(a.copy())
    o8, o32 = cls8([a], **kw), cls32([b], **kw)
    for _ in range(10):
        g = rng.standard_normal(a.shape).astype(dtype)
        a.grad, b.grad = g, g.copy()
        o8.step()
        o32.step()
    np.testing.assert_array_equal(a, b)
    assert o8.state[a]["state1"].dtype == dtype and "absmax1" not in o8.state[a]


@pytest.mark.parametrize("name", list(CLASSES))
def test_8bit_tracks_32bit(name):
    cls8, cls32, kw = CLASSES[name]
    rng = np.random.default_rng(3)
    a = nbopt.Parameter(rng.standard_normal(20_000).astype(np.float32))
    b = nbopt.Parameter(a.copy())
    o8, o32 = cls8([a], **kw), cls32([b], **kw)
    for _ in range(30):
        g = (a - 0.5 + 0.1 * rng.standard_normal(a.shape)).astype(np.float32)
        a.grad = g
        b.grad = (b - 0.5 + 0.1 * rng.standard_normal(a.shape)).astype(np.float32)
        o8.step()
        o32.step()
    assert o8.state[a]["state1"].dtype == np.uint8
    assert np.abs(a - 0.5).mean() <= 1.05 * np.abs(b - 0.5).mean() + 1e-3


# -- parity with bitsandbytes -----------------------------------------------------

def _bnb_state(st):
    return {k: st[k].numpy() for k in ("state1", "absmax1", "state2", "absmax2")}


@requires_bnb
@pytest.mark.parametrize("variant", ["Adam8bit", "AdamW8bit"])
def test_parity_with_bitsandbytes_step_by_step(variant):
    """From identical states each step, nbopt's dequantized states are within
    one quantization level of bitsandbytes' (plus bitsandbytes' CPU
    quantizer's coarser rounding of values below 3e-5 absmax), its parameters
    within float32 rounding."""
    rng = np.random.default_rng(4)
    n = 10_000
    w0 = rng.standard_normal(n).astype(np.float32)
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8,
              weight_decay=0.0 if variant == "Adam8bit" else 0.05)
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = getattr(bnb.optim, variant)([tp], **kw)
    w = nbopt.Parameter(w0.copy())
    opt = getattr(nbopt, variant)([w], **kw)
    for t in range(1, 21):
        g = (rng.standard_normal(n) * rng.uniform(0.1, 2)).astype(np.float32)
        if t > 1:       # start the step from bitsandbytes' state and parameters
            ref = _bnb_state(topt.state[tp])
            for k, v in ref.items():
                opt.state[w][k][...] = v
            w[...] = tp.detach().numpy()
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        w.grad = g
        opt.step()
        np.testing.assert_allclose(w, tp.detach().numpy(), rtol=1e-5, atol=1e-6)
        ref = _bnb_state(topt.state[tp])
        s = opt.state[w]
        for k, qmap in (("1", Q.SIGNED_MAP), ("2", Q.UNSIGNED_MAP)):
            np.testing.assert_allclose(s["absmax" + k], ref["absmax" + k], rtol=1e-5)
            mine = decode(s["state" + k], s["absmax" + k], qmap)
            theirs = decode(ref["state" + k], ref["absmax" + k], qmap)
            am = np.repeat(s["absmax" + k], 256)[:n]
            tol = am * (np.maximum(level(qmap, s["state" + k]), level(qmap, ref["state" + k]))
                        * 1.0001 + 2.5e-5)
            assert np.all(np.abs(mine - theirs) <= tol)
    assert int(opt.state[w]["step"]) == topt.state[tp]["step"] == 20


@requires_bnb
def test_free_running_close_to_bitsandbytes():
    rng = np.random.default_rng(5)
    n = 50_000
    w0 = rng.standard_normal(n).astype(np.float32)
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = bnb.optim.Adam8bit([tp], lr=1e-2)
    w = nbopt.Parameter(w0.copy())
    opt = nbopt.Adam8bit([w], lr=1e-2)
    for _ in range(50):
        g = (w0 * 0 + rng.standard_normal(n)).astype(np.float32)
        tp.grad = torch.from_numpy(g + tp.detach().numpy())
        w.grad = g + w
        topt.step()
        opt.step()
    moved = np.abs(w - w0).mean()
    assert np.abs(w - tp.detach().numpy()).mean() < 0.01 * moved


# -- state dicts --------------------------------------------------------------------

def _trained(cls, kw, sizes=(5000, 100), dtype=np.float32, steps=3):
    rng = np.random.default_rng(6)
    ps = [nbopt.Parameter(rng.standard_normal(s).astype(dtype)) for s in sizes]
    opt = cls(ps, **kw)
    for _ in range(steps):
        for p in ps:
            p.grad = rng.standard_normal(p.shape).astype(dtype)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_dict_round_trips_exactly_through_save_load(name, tmp_path):
    cls8, _, kw = CLASSES[name]
    ps, opt = _trained(cls8, kw)
    sd = opt.state_dict()
    st = sd["state"][0]
    assert st["state1"].dtype == np.uint8 and st["absmax1"].dtype == np.float32
    assert st["qmap1"].shape == (256,) and sd["state"][1]["state1"].dtype == np.float32
    nbopt.save(sd, tmp_path / "c.npz")
    loaded = nbopt.load(tmp_path / "c.npz")
    qs = [nbopt.Parameter(p.copy()) for p in ps]
    opt2 = cls8(qs, **kw)
    opt2.load_state_dict(loaded)
    for i, p in enumerate(qs):
        for k, v in opt.state[ps[i]].items():
            assert opt2.state[p][k].dtype == v.dtype
            np.testing.assert_array_equal(opt2.state[p][k], v)
    g = [np.full(p.shape, 0.3, np.float32) for p in ps]
    for p, q, gg in zip(ps, qs, g):
        p.grad, q.grad = gg, gg.copy()
    opt.step()
    opt2.step()
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", list(CLASSES))
def test_32bit_state_dict_loads_quantized_and_back(name):
    cls8, cls32, kw = CLASSES[name]
    ps, opt32 = _trained(cls32, kw)
    sd32 = opt32.state_dict()
    qs = [nbopt.Parameter(p.copy()) for p in ps]
    opt8 = cls8(qs, **kw)
    opt8.load_state_dict(sd32)
    names = cls8._torch_names
    big, small = opt8.state[qs[0]], opt8.state[qs[1]]
    assert big["state1"].dtype == np.uint8 and small["state1"].dtype == np.float32
    for j, tname in enumerate(names):
        k = str(j + 1)
        qmap = Q.tables(cls8._signed[j])[0]
        dec = decode(big["state" + k], big["absmax" + k], qmap)
        ref = sd32["state"][0][tname]
        am = np.repeat(big["absmax" + k], 256)[:ref.size]
        assert np.all(np.abs(dec - ref) <= am * 0.00704 + 1e-30)
        np.testing.assert_array_equal(small["state" + k], sd32["state"][1][tname])
    assert float(big["step"]) == float(sd32["state"][0].get("step", 0.0))
    # and back: dequantized into torch's layout, loaded by the 32-bit class
    back = dequantize_state_dict(opt8.state_dict(), names)
    rs = [nbopt.Parameter(p.copy()) for p in ps]
    again = cls32(rs, **kw)
    again.load_state_dict(back)
    for j, tname in enumerate(names):
        np.testing.assert_allclose(again.state[rs[0]][tname], sd32["state"][0][tname],
                                   atol=float(opt8.state[qs[0]]["absmax" + str(j + 1)].max())
                                   * 0.00704)


def test_mixed_8bit_and_32bit_groups():
    rng = np.random.default_rng(7)
    a = nbopt.Parameter(rng.standard_normal(8192).astype(np.float32))
    b = nbopt.Parameter(rng.standard_normal(8192).astype(np.float64))
    c = nbopt.Parameter(rng.standard_normal(8192).astype(np.float32))
    groups = [{"params": [a, b]}, {"params": [c], "min_8bit_size": 10**9, "lr": 1e-2}]
    opt = nbopt.AdamW8bit(groups, lr=1e-3)
    for _ in range(3):
        for p in (a, b, c):
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        opt.step()
    assert opt.state[a]["state1"].dtype == np.uint8 and opt.state[b]["state1"].dtype == np.uint8
    assert opt.state[c]["state1"].dtype == np.float32
    sd = opt.state_dict()
    assert sd["param_groups"][1]["min_8bit_size"] == 10**9
    assert b.dtype == np.float64 and opt.state[b]["absmax1"].dtype == np.float32


def test_schedulers_and_closure_work():
    rng = np.random.default_rng(8)
    w = nbopt.Parameter(rng.standard_normal(5000).astype(np.float32))
    opt = nbopt.Adam8bit([w], lr=0.1)
    sched = nbopt.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def closure():
        w.grad = 2 * w
        return float((w * w).sum())

    l0 = opt.step(closure)
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.05
    assert opt.step(closure) < l0


# -- bad input: refused before anything changes --------------------------------------

def _snapshot(opt, ps):
    return [p.copy() for p in ps], {id(p): {k: v.copy() for k, v in opt.state[p].items()}
                                    for p in ps if opt.state.get(p)}


def _unchanged(opt, ps, snap):
    for p, s in zip(ps, snap[0]):
        np.testing.assert_array_equal(p, s)
    for p in ps:
        for k, v in snap[1].get(id(p), {}).items():
            np.testing.assert_array_equal(opt.state[p][k], v)


@pytest.mark.parametrize("bad", ["half_param", "shape", "dtype", "state", "complex"])
def test_bad_input_changes_nothing(bad):
    ps, opt = _trained(nbopt.Adam8bit, {"lr": 1e-2})
    extra = nbopt.Parameter(np.zeros(5000, np.float16)) if bad == "half_param" else \
        nbopt.Parameter(np.zeros(5000, np.complex64)) if bad == "complex" else None
    if extra is not None:
        opt.add_param_group({"params": [extra]})
        extra.grad = np.ones_like(extra)
    for p in ps:
        p.grad = np.ones_like(p)
    if bad == "shape":
        ps[1].grad = np.ones(3, np.float32)
    elif bad == "dtype":
        ps[1].grad = np.ones(ps[1].shape, np.float64)
    elif bad == "state":
        opt.state[ps[1]]["state1"] = np.zeros(7, np.float32)
    snap = _snapshot(opt, ps)
    with pytest.raises((TypeError, ValueError)):
        opt.step()
    if bad == "state":
        return
    _unchanged(opt, ps, snap)


@pytest.mark.parametrize("kw, err", [
    (dict(amsgrad=True), "does not support amsgrad"),
    (dict(optim_bits=4), "optim_bits"),
    (dict(min_8bit_size=-1), "min_8bit_size"),
    (dict(min_8bit_size=1.5), "min_8bit_size"),
    (dict(lr=-1), "learning rate"),
    (dict(betas=(1.0, 0.9)), "beta"),
    (dict(is_paged=True), "paged"),
])
def test_bad_arguments(kw, err):
    w = nbopt.Parameter(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match=err):
        nbopt.Adam8bit([w], **kw)


def test_bad_loaded_state_changes_nothing():
    ps, opt = _trained(nbopt.Adam8bit, {"lr": 1e-2})
    sd = opt.state_dict()
    snap = _snapshot(opt, ps)
    for bad in ({"absmax1": np.zeros(3, np.float32)}, {"qmap1": np.zeros(256, np.float32)},
                {"state2": np.zeros(7, np.float32)}):
        broken = {"state": {0: {**sd["state"][0], **bad}, 1: sd["state"][1]},
                  "param_groups": sd["param_groups"]}
        with pytest.raises(ValueError):
            opt.load_state_dict(broken)
        _unchanged(opt, ps, snap)


@pytest.mark.parametrize("edit", ["mixed", "strided", "step", "absmax"])
def test_bad_state_edits_refused_before_anything_changes(edit):
    ps, opt = _trained(nbopt.Adam8bit, {"lr": 1e-2})
    st = opt.state[ps[1]] if edit != "absmax" else opt.state[ps[0]]
    if edit == "mixed":     # one quantized state, one float: refused
        st["state1"] = np.zeros(ps[1].shape, np.uint8)
        st["absmax1"] = np.zeros(1, np.float32)
        st["qmap1"] = Q.SIGNED_MAP
    elif edit == "strided":
        st["state1"] = np.zeros(2 * ps[1].size, np.float32)[::2]
    elif edit == "step":
        st["step"] = 3.0
    else:
        st["absmax1"] = np.zeros(3, np.float32)
    for p in ps:
        p.grad = np.ones_like(p)
    snap = [p.copy() for p in ps], {k: v.copy() for k, v in opt.state[ps[0]].items()
                                    if isinstance(v, np.ndarray)}
    with pytest.raises(ValueError):
        opt.step()
    for p, s in zip(ps, snap[0]):
        np.testing.assert_array_equal(p, s)
    if edit != "absmax":
        for k, v in snap[1].items():
            np.testing.assert_array_equal(opt.state[ps[0]][k], v)


def test_sgd8bit_and_rmsprop8bit_refuse_what_bitsandbytes_refuses():
    w = nbopt.Parameter(np.zeros(10, np.float32))
    with pytest.raises(NotImplementedError, match="without momentum"):
        nbopt.SGD8bit([w], lr=0.1)
    with pytest.raises(NotImplementedError, match="Centered"):
        nbopt.RMSprop8bit([w], centered=True)


# -- one kernel call per (param group, dtype) ------------------------------------------

def _per_parameter_step(opt):
    """The step as it was before one call per group: the per-parameter
    kernels (``Q.step8_cpu``, ``Q.step32_cpu``), one call per parameter,
    with the optimizer's own state creation, scalars and flags."""
    from nbopt import config

    two = opt._two
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = opt.state[p]
            fresh = not state
            if fresh:
                state.update(opt._new_state(p, group))
            step = state["step"]
            t = float(step) + 1.0
            step[...] = t
            row = np.zeros(Q.N_SCALARS, p.dtype)
            vals = opt._scalars(group, t, fresh)
            row[:len(vals)] = vals
            row[-1] = 1
            f0, f1, f2 = opt._flags(group)
            pf, gf = p.reshape(-1), np.ascontiguousarray(p.grad).reshape(-1)
            s1 = state["state1"].reshape(-1)
            if s1.dtype == np.uint8:
                m1, mid1, lut1 = Q.tables(opt._signed[0])
                if two:
                    m2, mid2, lut2 = Q.tables(opt._signed[1])
                    q2, a2 = state["state2"].reshape(-1), state["absmax2"]
                else:
                    m2, mid2, lut2, q2, a2 = m1, mid1, lut1, s1[:0], state["absmax1"][:0]
                kernel = Q.step8_cpu[1 if config.runs_parallel(pf.size) else 0]
                kernel(pf, gf, s1, state["absmax1"], m1, mid1, lut1, q2, a2, m2, mid2, lut2,
                       row, opt._algo, two, f0, f1, f2, not opt._signed[0],
                       two and not opt._signed[1], Q.BLOCKSIZE)
            else:
                s2 = state["state2"].reshape(-1) if two else s1[:0]
                Q.step32_cpu(pf, gf, s1, s2, row, opt._algo, two, f0, f1, f2)


OPTIONS = {
    "Adam8bit": {"lr": 1e-2, "weight_decay": 0.1, "maximize": True},
    "AdamW8bit": {"lr": 1e-2},
    "SGD8bit": {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    "RMSprop8bit": {"lr": 1e-3, "weight_decay": 1e-2},
    "Adagrad8bit": {"lr": 1e-2, "lr_decay": 1e-3, "initial_accumulator_value": 0.1},
}


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["parallel", "serial"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CLASSES))
def test_group_step_is_the_per_parameter_kernels_bit_for_bit(name, dtype, threshold,
                                                             monkeypatch):
    """One call per (group, dtype) over a table of addresses computes what
    one call per parameter computed: quantized and float-state parameters,
    short last blocks, step counts that differ (a grad left None), a
    non-contiguous gradient, serial and parallel builds."""
    from nbopt import config

    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", threshold)
    rng = np.random.default_rng(9)
    shapes = [(5000,), (30, 10), (70_000,), (4096,), (1,), (257,), (0,), (40, 205)]
    values = [(rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2, s)).astype(dtype)
              for s in shapes]
    mine = [nbopt.Parameter(v.copy()) for v in values]
    ref = [nbopt.Parameter(v.copy()) for v in values]
    cls = getattr(nbopt, name)

    def groups(ps):
        return [{"params": ps[:4]}, {"params": ps[4:], "min_8bit_size": 200}]

    o1, o2 = cls(groups(mine), **OPTIONS[name]), cls(groups(ref), **OPTIONS[name])
    for step in range(5):
        for i, (a, b) in enumerate(zip(mine, ref)):
            if (i + step) % 4 == 3:
                a.grad = b.grad = None
                continue
            g = (rng.standard_normal(a.shape) * 10.0 ** rng.integers(-4, 2, a.shape)).astype(dtype)
            if i == 7:          # a Fortran-ordered gradient: stepped as a C copy
                g = np.asfortranarray(g)
            a.grad, b.grad = g, g.copy(order="K")
        o1.step()
        _per_parameter_step(o2)
    for a, b in zip(mine, ref):
        np.testing.assert_array_equal(a, b)
        assert o1.state[a].keys() == o2.state[b].keys()
        for k, v in o2.state[b].items():
            assert o1.state[a][k].dtype == v.dtype
            np.testing.assert_array_equal(o1.state[a][k], v, err_msg=k)
    assert o1.state[mine[0]]["state1"].dtype == np.uint8
    assert o1.state[mine[4]]["state1"].dtype == dtype


def test_one_kernel_call_per_group_and_dtype(monkeypatch):
    from nbopt.optim import optim8bit

    calls = []
    kernels = optim8bit.Q.step8_group_cpu

    def counting(kernel):
        def call(table, *args):
            calls.append(len(table))
            return kernel(table, *args)
        return call

    monkeypatch.setattr(optim8bit.Q, "step8_group_cpu", tuple(counting(k) for k in kernels))
    rng = np.random.default_rng(10)
    f32 = [nbopt.Parameter(rng.standard_normal(s).astype(np.float32))
           for s in [300] * 40 + [10] * 10]
    f64 = [nbopt.Parameter(rng.standard_normal(300)) for _ in range(5)]
    other = [nbopt.Parameter(rng.standard_normal(300).astype(np.float32))]
    opt = nbopt.Adam8bit([{"params": f32 + f64}, {"params": other}], min_8bit_size=256)
    for _ in range(2):
        for p in f32 + f64 + other:
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        calls.clear()
        opt.step()
        assert calls == [50, 5, 1]      # 56 parameters: group 0 float32 and float64, group 1
    assert opt.state[f32[0]]["state1"].dtype == np.uint8
    assert opt.state[f32[-1]]["state1"].dtype == np.float32


def test_group_chunks_are_block_aligned():
    table = np.zeros((4, Q.TABLE_COLUMNS), np.int64)
    table[:, Q.COL_N] = [1000, 0, 70, 600]
    table[:, Q.COL_QUANT] = [1, 1, 0, 1]
    chunks = Q.group_chunks(table, 2, 32)
    # 1000 elements: blocks 0-1, 2-3; 600: blocks 0-1, 2; 70 float elements: 0-32, 32-64, 64-70
    assert chunks.tolist() == [[0, 0, 2], [0, 2, 4], [2, 0, 32], [2, 32, 64], [2, 64, 70],
                               [3, 0, 2], [3, 2, 3]]


@pytest.mark.parametrize("name", list(CLASSES))
def test_loading_a_live_state_dict_copies_it(name):
    """The loaded state is the optimizer's own: stepping it (quantized,
    float state and step counts) leaves the source optimizer alone."""
    cls8, _, kw = CLASSES[name]
    ps, opt = _trained(cls8, kw)
    qs = [nbopt.Parameter(p.copy()) for p in ps]
    opt2 = cls8(qs, **kw)
    opt2.load_state_dict(opt.state_dict())
    for p, q in zip(ps, qs):
        for k, v in opt.state[p].items():
            assert k.startswith("qmap") or not np.shares_memory(opt2.state[q][k], v), k
    for _ in range(2):
        for p, q in zip(ps, qs):
            p.grad = np.full(p.shape, 0.3, np.float32)
            q.grad = p.grad.copy()
        opt.step()
        opt2.step()
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p, q)
        for k, v in opt.state[p].items():
            np.testing.assert_array_equal(opt2.state[q][k], v)
    assert float(opt.state[ps[0]]["step"]) == 5.0


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["parallel", "serial"])
@pytest.mark.parametrize("name", ["Adam8bit", "SGD8bit"])
def test_steady_steps_follow_every_change(name, threshold, monkeypatch):
    """A step that finds nothing changed reuses the last step's tables; each
    kind of change (gradients written in place or new arrays, a rebound or
    cleared state entry, a step count edited in place, a skipped parameter,
    a load, a new group) gives what the per-parameter kernels give."""
    from nbopt import config
    from nbopt.optim import optim8bit

    monkeypatch.setattr(config, "PARALLEL_THRESHOLD", threshold)
    rng = np.random.default_rng(12)
    values = [rng.standard_normal(s).astype(np.float32) for s in (5000, 300, 70_000, 40)]
    mine = [nbopt.Parameter(v.copy()) for v in values]
    ref = [nbopt.Parameter(v.copy()) for v in values]
    cls = getattr(nbopt, name)
    o1 = cls(mine, min_8bit_size=256, **OPTIONS[name])
    o2 = cls(ref, min_8bit_size=256, **OPTIONS[name])
    for a, b in zip(mine, ref):
        a.grad, b.grad = np.zeros_like(a), np.zeros_like(b)
    steady = []

    def both(edit):
        for a, b in zip(mine, ref):
            if a.grad is not None and a.grad.shape == a.shape:
                g = rng.standard_normal(a.shape).astype(np.float32)
                a.grad[...] = g
                b.grad[...] = g
        edit(o1, mine)
        edit(o2, ref)
        plan = o1.__dict__.get("_plan8")
        steady.append(plan is not None and plan.ready(o1))
        o1.step()
        _per_parameter_step(o2)
        for a, b in zip(mine, ref):
            np.testing.assert_array_equal(a, b)
            for k, v in o2.state[b].items():
                np.testing.assert_array_equal(o1.state[a][k], v, err_msg=k)

    def nothing(o, ps):
        pass

    def new_grads(o, ps):
        for p in ps:
            p.grad = p.grad.copy()

    def rebind(o, ps):
        o.state[ps[0]]["state1"] = o.state[ps[0]]["state1"].copy()

    def clear(o, ps):
        o.state[ps[1]].clear()

    def step_count(o, ps):
        o.state[ps[2]]["step"][...] = 10

    def skip(o, ps):
        ps[3].grad = None

    def unskip(o, ps):
        ps[3].grad = np.ones(ps[3].shape, np.float32)

    def load(o, ps):
        o.load_state_dict(o.state_dict())

    def group(o, ps):
        extra = nbopt.Parameter(np.ones(600, np.float32))
        extra.grad = np.full(600, 0.5, np.float32)
        o.add_param_group({"params": [extra]})

    for edit in (nothing, nothing, new_grads, nothing, rebind, nothing, clear, step_count,
                 nothing, skip, nothing, unskip, load, nothing, group, nothing):
        both(edit)
    # which steps found the plan of the step before valid
    assert steady == [False, True, True, True, False, True, False, True, True, False, True,
                      False, False, True, False, True]
    assert isinstance(o1.__dict__["_plan8"], optim8bit._Plan)


@pytest.mark.parametrize("steady", [True, False])
def test_a_bad_option_raises_before_anything_changes(steady):
    """The scalars of every (group, dtype) are computed before any step
    count, state or parameter changes, on the general and the steady path."""
    ps, opt = _trained(nbopt.Adam8bit, {"lr": 1e-2})
    extra = nbopt.Parameter(np.ones(300, np.float32))
    opt.add_param_group({"params": [extra], "lr": 1e-2})
    everything = ps + [extra]
    for p in everything:
        p.grad = np.ones(p.shape, np.float32)
    opt.step()
    opt.step()
    if not steady:
        opt.state[ps[0]]["state1"] = opt.state[ps[0]]["state1"].copy()    # an edit
    snap = _snapshot(opt, everything)
    opt.param_groups[1]["lr"] = "fast"
    with pytest.raises((TypeError, ValueError)):
        opt.step()
    _unchanged(opt, everything, snap)
    opt.param_groups[1]["lr"] = 1e-2
    opt.step()
    assert float(opt.state[ps[0]]["step"]) == 6.0 and float(opt.state[extra]["step"]) == 3.0
