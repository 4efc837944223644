"""Requantizer and ASQ unit in amaranth.sim against golden.arith.requantize / asq_unit."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import arith
from hw.rtl.asq import AsqConfig, AsqUnit
from hw.rtl.requant import Requantizer, RequantSpec

# --------------------------------------------------------------------------- requantizer


def _run_requant(rq, items):
    """items: (layer, g, acc, chan, tag); returns (value, chan, tag) in order of output."""
    out = []

    async def bench(ctx):
        pending = list(items)
        idle = 0
        while pending or idle < rq.LATENCY + 2:
            if pending:
                layer, g, acc, chan, tag = pending.pop(0)
                ctx.set(rq.layer, layer)
                ctx.set(rq.g, g)
                ctx.set(rq.i.valid, 1)
                ctx.set(rq.i.payload, {"acc": acc, "chan": chan, "tag": tag})
            else:
                ctx.set(rq.i.valid, 0)
                idle += 1
            await ctx.tick()
            if ctx.get(rq.o.valid):
                p = ctx.get(rq.o.payload)
                out.append((p.value, p.chan, p.tag))

    sim = Simulator(rq)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


def _random_spec(rng, n, *, G, lo, hi, S):
    M = tuple(int(v) for v in rng.integers(-(1 << 15) + 1, 1 << 15, n))
    B = tuple(int(v) for v in rng.integers(-(1 << 20), 1 << 20, n))
    return RequantSpec(M=M, B=B, S=S, G=G, lo=lo, hi=hi, g_max=(1 << 14) - 1 if G else 1)


@pytest.mark.parametrize("side_ram, g_acc_width", [(False, None), (True, None), (False, 16), (True, 15)])
def test_requantizer_random_and_extreme_against_golden(side_ram, g_acc_width):
    """``g_acc_width``: the accumulators of the beta layer are that narrow, so ``acc * g`` takes
    one DSP block (the others keep their 22 bits)."""
    rng = np.random.default_rng(5)
    acc_width = 22
    specs = [
        _random_spec(rng, 16, G=0, lo=0, hi=7, S=24),             # LSQ 3-bit codes
        _random_spec(rng, 16, G=10, lo=0, hi=(1 << 16) - 1, S=14),  # y for an ASQ unit, ASQ input
        _random_spec(rng, 10, G=0, lo=None, hi=None, S=12),        # logits
    ]
    rq = Requantizer(specs, acc_width=acc_width, channels=16, tag_width=6, side_ram=side_ram,
                     g_acc_width=g_acc_width)
    assert rq.dsp_blocks == (3 if g_acc_width else 5)
    items = []
    for layer, spec in enumerate(specs):
        n = len(spec.M)
        amax = 1 << ((g_acc_width if spec.G and g_acc_width else acc_width) - 1)
        for k in range(40):
            c = int(rng.integers(0, n))
            acc = int(rng.integers(-amax, amax)) if k % 4 else [-amax, amax - 1, 0, 1][k // 4 % 4]
            g = int(rng.integers(1 << 6, 1 << 14)) if spec.G else 1
            if spec.G and k % 7 == 0:
                g = (1 << 14) - 1
            items.append((layer, g, acc, c, k))
    got = _run_requant(rq, items)
    want = []
    for layer, g, acc, c, tag in items:
        spec = specs[layer]
        v = arith.requantize(acc, spec.M[c], spec.B[c], spec.S, g=g, G=spec.G, lo=spec.lo, hi=spec.hi)
        want.append((int(v), c, tag))
    assert got == want
    # The data must exercise both clamps and both signs of the logits.
    codes = [v for (v, *_), it in zip(got, items, strict=True) if it[0] == 0]
    assert 0 in codes and 7 in codes
    logits = [v for (v, *_), it in zip(got, items, strict=True) if it[0] == 2]
    assert min(logits) < 0 < max(logits)


def test_requantizer_refuses_bad_specs():
    with pytest.raises(ValueError, match="S=-1"):
        RequantSpec(M=(1,), B=(0,), S=-1)
    with pytest.raises(ValueError, match="channels=2"):
        Requantizer([RequantSpec(M=(1, 2, 3), B=(0, 0, 0), S=1)], acc_width=8, channels=2)


# --------------------------------------------------------------------------- ASQ unit


def _random_asq(rng, channels, *, hidden, qmax, s_code=1500, FS=12, G=10, FY=8):
    R = (s_code << G).bit_length() + 16
    W2 = rng.integers(-2047, 2048, hidden if hidden else channels)
    consts = arith.AsqConstants(
        W1=rng.integers(-2047, 2048, (hidden, channels)) if hidden else None,
        b1=rng.integers(-(1 << 18), 1 << 18, hidden) if hidden else None,
        S1=18, W2=W2, b2=int(rng.integers(1 << 18, 1 << 20)), S2=12, G=G,
        beta_min=1 << (G - 4), beta_max=(1 << 14) - 1, s_code=s_code, FS=FS, R=R, FY=FY, qmax=qmax)
    return consts


def _run_asq(unit, sel, ymap):
    """GAP over ymap (C, H, W), start, wait, quantize every y; returns (codes, beta, cycles)."""
    C = ymap.shape[0]
    flat = [(c, int(v)) for c in range(C) for v in ymap[c].ravel()]
    res = {}

    async def bench(ctx):
        ctx.set(unit.sel, sel)
        order = list(range(len(flat)))
        np.random.default_rng(1).shuffle(order)  # GAP order must not matter
        seen = set()
        for i in order:
            c, y = flat[i]
            ctx.set(unit.gap.valid, 1)
            ctx.set(unit.gap.payload, {"chan": c, "y": y, "first": c not in seen})
            seen.add(c)
            await ctx.tick()
        ctx.set(unit.gap.valid, 0)
        ctx.set(unit.start, 1)
        await ctx.tick()
        ctx.set(unit.start, 0)
        cycles = 1
        while ctx.get(unit.busy):
            await ctx.tick()
            cycles += 1
        res["cycles"] = cycles
        res["beta"] = ctx.get(unit.beta)
        codes = {}
        for i, (_, y) in enumerate(flat + [(0, 0)] * unit.CODE_LATENCY):
            ctx.set(unit.q.valid, i < len(flat))
            ctx.set(unit.q.payload, {"y": y, "tag": i % 64})
            await ctx.tick()
            if ctx.get(unit.c.valid):
                assert ctx.get(unit.c.payload.tag) == len(codes) % 64  # the beat's tag comes with it
                codes[len(codes)] = ctx.get(unit.c.payload.code)
        res["codes"] = np.array([codes[i] for i in range(len(flat))]).reshape(ymap.shape)

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return res


@pytest.mark.parametrize("channels,hidden,hw,side_ram", [(16, 4, 4, True), (4, 0, 3, False), (8, 2, 2, False),
                                                    (8, 2, 2, True)])
def test_asq_unit_against_golden(channels, hidden, hw, side_ram):
    rng = np.random.default_rng(channels * 10 + hw)
    y_max = (1 << 16) - 1
    configs = []
    for qmax in (7, 15):
        consts = _random_asq(rng, channels, hidden=hidden, qmax=qmax)
        configs.append(AsqConfig(consts, channels, hw * hw, y_max))
    unit = AsqUnit(configs, tag_width=6, side_ram=side_ram)
    for sel, cfg in enumerate(configs):
        for trial in range(2):
            scale = [300, 4000][trial]
            ymap = rng.integers(0, scale, (channels, hw, hw))
            ymap[0, 0, 0] = 0
            ymap[-1, -1, -1] = y_max if trial else 0
            codes, beta = arith.asq_unit(ymap[None], cfg.k)
            res = _run_asq(unit, sel, ymap)
            assert res["beta"] == int(beta[0])
            np.testing.assert_array_equal(res["codes"], codes[0])
            assert res["cycles"] == unit.beta_cycles(sel)


def test_asq_unit_beta_saturates_and_codes_clamp():
    rng = np.random.default_rng(3)
    consts = _random_asq(rng, 4, hidden=0, qmax=7)
    # Large negative adapter output -> beta_min; large y -> codes clamp at qmax.
    consts = arith.AsqConstants(**{**consts.__dict__, "W2": np.array([-2047] * 4), "b2": 0})
    cfg = AsqConfig(consts, 4, 4, (1 << 16) - 1)
    unit = AsqUnit([cfg], tag_width=6)
    ymap = np.full((4, 2, 2), 60000)
    ymap[1] = 0
    codes, beta = arith.asq_unit(ymap[None], consts)
    assert int(beta[0]) == consts.beta_min and codes.max() == 7 and codes.min() == 0
    res = _run_asq(unit, 0, ymap)
    assert res["beta"] == consts.beta_min
    np.testing.assert_array_equal(res["codes"], codes[0])


# --------------------------------------------------------------------------- property tests

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    S=st.integers(0, 30), G=st.sampled_from([0, 4, 10]), lo_hi=st.sampled_from(["codes", "y", "logits"]),
    M=st.lists(st.integers(-(1 << 15) + 1, (1 << 15) - 1), min_size=1, max_size=4),
    data=st.data(), acc_width=st.sampled_from([20, 12]), split=st.booleans(),
)
def test_requantizer_property(S, G, lo_hi, M, data, acc_width, split):
    """Any layer constants, any accumulators and betas: the requantizer equals golden (``split``:
    ``acc * g`` on one block, the beta layer's accumulators at most 16 bits)."""
    n = len(M)
    B = data.draw(st.lists(st.integers(-(1 << 24), 1 << 24), min_size=n, max_size=n))
    lo, hi = {"codes": (0, 15), "y": (0, (1 << 16) - 1), "logits": (None, None)}[lo_hi]
    spec = RequantSpec(M=tuple(M), B=tuple(B), S=S, G=G, lo=lo, hi=hi, g_max=(1 << 14) - 1 if G else 1)
    g_acc_width = min(acc_width, 16) if G else 0
    rq = Requantizer([spec], acc_width=acc_width, channels=n, tag_width=4, g_acc_width=g_acc_width if split else None)
    items = []
    for k in range(6):
        width = g_acc_width if split and G else acc_width
        acc = data.draw(st.integers(-(1 << (width - 1)), (1 << (width - 1)) - 1))
        g = data.draw(st.integers(1, (1 << 14) - 1)) if G else 1
        items.append((0, g, acc, k % n, k))
    want = [(int(arith.requantize(acc, M[c], B[c], S, g=g, G=G, lo=lo, hi=hi)), c, tag)
            for _, g, acc, c, tag in items]
    assert _run_requant(rq, items) == want
