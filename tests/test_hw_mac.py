"""MAC array (PE x SIMD) in amaranth.sim against sums of golden.arith products."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import arith
from hw.rtl.mac import MacArray


def _golden_terms(kind, bits, a, codes, frac):
    if kind == "int":
        return arith.int_product(a, arith.raw_to_int(codes, bits))
    return arith.product(a, codes, kind, bits, frac)


def _run_groups(array, groups, gap_every=0):
    """Feed groups of (a[simd], w[pe][simd]) items; return the accumulators at each ``done``."""
    results = []

    async def bench(ctx):
        for gi, items in enumerate(groups):
            for i, (a, w) in enumerate(items):
                ctx.set(array.valid, 1)
                ctx.set(array.first, i == 0)
                ctx.set(array.last, i == len(items) - 1)
                for s in range(array.simd):
                    ctx.set(array.a[s], int(a[s]))
                    for p in range(array.pe):
                        ctx.set(array.w[p][s], int(w[p][s]))
                await ctx.tick()
                if array.done.shape().width and ctx.get(array.done):
                    results.append([ctx.get(array.acc[p]) for p in range(array.pe)])
                if gap_every and (i + gi) % gap_every == 0:
                    ctx.set(array.valid, 0)
                    await ctx.tick()
                    if ctx.get(array.done):
                        results.append([ctx.get(array.acc[p]) for p in range(array.pe)])
        ctx.set(array.valid, 0)
        for _ in range(array.latency + 2):
            await ctx.tick()
            if ctx.get(array.done):
                results.append([ctx.get(array.acc[p]) for p in range(array.pe)])

    sim = Simulator(array)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


def _expected(kind, bits, groups, frac):
    out = []
    for items in groups:
        acc = np.zeros(len(items[0][1]), dtype=np.int64)
        for a, w in items:
            w = np.asarray(w)
            acc += np.asarray(_golden_terms(kind, bits, np.asarray(a)[None, :], w, frac)).sum(axis=1)
        out.append([int(v) for v in acc])
    return out


def _act_bounds(bits, signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


@pytest.mark.parametrize("kind,bits,act_signed,pe,simd", [
    ("post", 3, False, 4, 4), ("post", 4, False, 2, 3), ("post", 2, False, 3, 2),
    ("pot", 3, False, 4, 2), ("pot", 4, False, 2, 4), ("int", 3, False, 4, 4),
    ("int", 8, True, 4, 1), ("int", 8, False, 2, 2),
])
def test_mac_array_random_groups(kind, bits, act_signed, pe, simd):
    rng = np.random.default_rng(bits * 31 + pe * 7 + simd)
    lo, hi = _act_bounds(bits, act_signed)
    groups = []
    for _ in range(6):
        n = int(rng.integers(1, 7))
        groups.append([(rng.integers(lo, hi + 1, simd), rng.integers(0, 1 << bits, (pe, simd)))
                       for _ in range(n)])
    fan_in = 6 * simd
    pmin, pmax = arith.product_range(lo, hi, kind, bits, 6)
    array = MacArray(kind, bits, bits, act_signed, pe=pe, simd=simd,
                     acc_width=arith.acc_width(fan_in, pmin, pmax), frac_bits=6)
    assert _run_groups(array, groups, gap_every=3) == _expected(kind, bits, groups, 6)


@pytest.mark.parametrize("kind,bits,act_signed", [
    ("post", 3, False), ("post", 4, False), ("pot", 4, False), ("int", 4, False), ("int", 8, True),
])
def test_mac_array_extremes_fill_the_proved_width(kind, bits, act_signed):
    """All codes at the extremes that give the largest and the smallest sums, at acc_width exactly."""
    lo, hi = _act_bounds(bits, act_signed)
    pmin, pmax = arith.product_range(lo, hi, kind, bits, 6)
    acts = np.arange(lo, hi + 1)
    codes = np.arange(1 << bits)
    table = np.asarray(_golden_terms(kind, bits, acts[:, None], codes[None, :], 6))
    (a_max, c_max), (a_min, c_min) = [np.unravel_index(f(table), table.shape) for f in
                                      (np.argmax, np.argmin)]
    pe, simd, n = 2, 3, 48  # fan-in 144 like conv2/conv3
    fan_in = n * simd
    width = arith.acc_width(fan_in, pmin, pmax)
    array = MacArray(kind, bits, bits, act_signed, pe=pe, simd=simd, acc_width=width, frac_bits=6)
    w = np.array([[codes[c_max]] * simd, [codes[c_min]] * simd])
    group_hi = [(np.full(simd, acts[a_max]), w)] * n
    w2 = np.array([[codes[c_min]] * simd, [codes[c_max]] * simd])
    group_lo = [(np.full(simd, acts[a_min]), w2)] * n
    got = _run_groups(array, [group_hi, group_lo])
    assert got[0][0] == fan_in * pmax and got[1][0] == fan_in * pmin
    assert got == _expected(kind, bits, [group_hi, group_lo], 6)
    # The width is tight: the extreme sums need every bit of it.
    assert max(abs(fan_in * pmin), fan_in * pmax + 1) > (1 << (width - 2))


@pytest.mark.parametrize("bits,act_signed,pe,simd", [(8, True, 1, 1), (8, True, 4, 1), (3, False, 4, 4),
                                                   (8, False, 2, 2)])
def test_registered_dsp_products_sum_alike_with_their_latency(bits, act_signed, pe, simd):
    """Uniform products on registered DSP blocks: the same sums as the lanes', ``done`` later."""
    rng = np.random.default_rng(bits * 13 + pe * 5 + simd)
    lo, hi = _act_bounds(bits, act_signed)
    groups = [[(rng.integers(lo, hi + 1, simd), rng.integers(0, 1 << bits, (pe, simd)))
               for _ in range(int(rng.integers(1, 7)))] for _ in range(6)]
    groups.append([(np.full(simd, lo), np.full((pe, simd), 1 << (bits - 1)))] * 3)  # the largest product
    pmin, pmax = arith.product_range(lo, hi, "int", bits, 6)
    array = MacArray("int", bits, bits, act_signed, pe=pe, simd=simd,
                     acc_width=arith.acc_width(6 * simd, pmin, pmax), registered_dsp=True)
    assert array.latency == MacArray.latency_for("int", registered_dsp=True) == 6
    assert _run_groups(array, groups, gap_every=3) == _expected("int", bits, groups, 6)


def test_registered_dsp_leaves_shift_lanes_alone():
    """POST and POT lanes are shift logic (no DSP block): the option changes nothing for them."""
    assert MacArray("post", 3, 3, registered_dsp=True).latency == MacArray.LATENCY == 2
    assert not MacArray("pot", 3, 3, registered_dsp=True).registered_dsp


def test_mac_array_refuses_bad_parameters():
    with pytest.raises(ValueError, match="pe=0"):
        MacArray("int", 4, 4, pe=0)
    with pytest.raises(ValueError, match="acc_width=3"):
        MacArray("int", 4, 4, acc_width=3)
    with pytest.raises(ValueError, match="exclude each other"):
        MacArray("int", 8, 8, in_logic=True, registered_dsp=True)


@pytest.mark.parametrize("kind,bits,act_signed,pe,simd,product_latency,sum_stage", [
    ("int", 8, True, 4, 1, 2, False), ("int", 8, True, 2, 1, 3, False), ("int", 8, False, 2, 2, 2, True),
    ("post", 3, False, 4, 4, 1, True), ("pot", 4, False, 2, 3, 1, True),
    # two registered sum stages: one per level of a 4-input tree (the main engine's), two runs of a
    # 3-level tree, a 2-input tree's one level and a delay, a delay alone (SIMD 1)
    ("post", 3, False, 4, 4, 1, 2), ("pot", 4, False, 2, 8, 1, 2), ("post", 3, False, 2, 2, 1, 2),
    ("int", 8, True, 2, 1, 3, 2), ("pot", 3, False, 2, 4, 1, 3),
])
def test_deeper_pipelines_sum_alike_with_their_latency(kind, bits, act_signed, pe, simd, product_latency,
                                                       sum_stage):
    """Pipelined logic products and registered per-PE sums: the same sums, ``done`` later."""
    rng = np.random.default_rng(bits * 17 + pe * 3 + simd + product_latency)
    lo, hi = _act_bounds(bits, act_signed)
    groups = [[(rng.integers(lo, hi + 1, simd), rng.integers(0, 1 << bits, (pe, simd)))
               for _ in range(int(rng.integers(1, 7)))] for _ in range(6)]
    if kind == "int":  # the largest product
        groups.append([(np.full(simd, lo), np.full((pe, simd), 1 << (bits - 1)))] * 3)
    pmin, pmax = arith.product_range(lo, hi, kind, bits, 6)
    array = MacArray(kind, bits, bits, act_signed, pe=pe, simd=simd, acc_width=arith.acc_width(6 * simd, pmin, pmax),
                     frac_bits=6, in_logic=kind == "int", product_latency=product_latency, sum_stage=sum_stage)
    assert array.latency == MacArray.LATENCY + product_latency - 1 + sum_stage
    assert array.latency == MacArray.latency_for(kind, product_latency=product_latency, sum_stage=sum_stage)
    assert _run_groups(array, groups, gap_every=3) == _expected(kind, bits, groups, 6)
    assert _run_groups(array, groups) == _expected(kind, bits, groups, 6)  # back to back


def test_pipelined_products_need_uniform_lanes_in_logic():
    with pytest.raises(ValueError, match="in_logic"):
        MacArray("post", 3, 3, product_latency=2)
    with pytest.raises(ValueError, match="in_logic"):
        MacArray("int", 8, 8, product_latency=2)
    with pytest.raises(ValueError, match="latency 9"):
        MacArray("int", 8, 8, in_logic=True, product_latency=9)


@pytest.mark.parametrize("act_signed,pe,simd,block_pes", [(True, 4, 1, 1), (True, 4, 1, 3), (True, 4, 1, 4),
                                                          (True, 2, 2, 1)])
def test_block_products_sum_alike_with_the_logic_latency(act_signed, pe, simd, block_pes):
    """The first PEs' products on DSP blocks (operand, pipeline and output registers), the others
    in logic: the same sums with the same latency."""
    bits = 8
    rng = np.random.default_rng(pe * 7 + simd + block_pes)
    lo, hi = _act_bounds(bits, act_signed)
    groups = [[(rng.integers(lo, hi + 1, simd), rng.integers(0, 1 << bits, (pe, simd)))
               for _ in range(int(rng.integers(1, 7)))] for _ in range(6)]
    groups.append([(np.full(simd, lo), np.full((pe, simd), 1 << (bits - 1)))] * 3)  # the largest product
    pmin, pmax = arith.product_range(lo, hi, "int", bits, 6)
    array = MacArray("int", bits, bits, act_signed, pe=pe, simd=simd, acc_width=arith.acc_width(6 * simd, pmin, pmax),
                     in_logic=True, product_latency=3, block_pes=block_pes)
    assert array.latency == MacArray.latency_for("int", product_latency=3)
    assert _run_groups(array, groups, gap_every=3) == _expected("int", bits, groups, 6)
    assert _run_groups(array, groups) == _expected("int", bits, groups, 6)  # back to back


def test_block_products_need_the_three_cycle_product():
    with pytest.raises(ValueError, match="block_pes"):
        MacArray("int", 8, 8, True, in_logic=True, product_latency=2, pe=2, block_pes=1)
    with pytest.raises(ValueError, match="block_pes"):
        MacArray("int", 8, 8, True, in_logic=True, product_latency=3, pe=2, block_pes=3)
    with pytest.raises(ValueError, match="block_pes"):
        MacArray("int", 8, 8, False, in_logic=True, product_latency=3, pe=2, block_pes=1)
    with pytest.raises(ValueError, match="sum_stage"):
        MacArray("post", 3, 3, sum_stage=-1)
