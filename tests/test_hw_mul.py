"""Multiplier lanes and the MAC array in amaranth.sim against golden.arith (exhaustive / random)."""

import pytest
from amaranth.sim import Simulator

from golden import arith
from hw.rtl.mul import MulLane


def _act_range(act_bits, act_signed):
    if act_signed:
        return range(-(1 << (act_bits - 1)), 1 << (act_bits - 1))
    return range(1 << act_bits)


def _golden_product(kind, a, code, bits, frac):
    if kind == "int":
        return arith.int_product(a, arith.raw_to_int(code, bits))
    return arith.product(a, code, kind, bits, frac)


def _run_lane_exhaustive(kind, bits, act_bits, act_signed, frac, pe, acts=None, in_logic=False):
    """Every (activation, weight code) pair through a lane of ``pe`` multipliers."""
    lane = MulLane(kind, bits, act_bits, act_signed, pe=pe, frac_bits=frac, in_logic=in_logic)
    codes = list(range(1 << bits))
    mismatches = []

    async def bench(ctx):
        for a in acts if acts is not None else _act_range(act_bits, act_signed):
            ctx.set(lane.a, a)
            for start in range(0, len(codes), pe):
                chunk = codes[start:start + pe]
                for i, c in enumerate(chunk):
                    ctx.set(lane.w[i], c)
                for i, c in enumerate(chunk):
                    got = ctx.get(lane.p[i])
                    want = _golden_product(kind, a, c, bits, frac)
                    if got != want:
                        mismatches.append((a, c, got, want))

    sim = Simulator(lane)
    sim.add_testbench(bench)
    sim.run()
    return mismatches


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_post_lane_exhaustive(bits):
    assert _run_lane_exhaustive("post", bits, bits, False, 6, pe=1 << bits) == []


@pytest.mark.parametrize("frac", [0, 3, 9])
def test_post_lane_other_table_precisions(frac):
    assert _run_lane_exhaustive("post", 4, 4, False, frac, pe=16) == []


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pot_lane_exhaustive(bits):
    assert _run_lane_exhaustive("pot", bits, bits, False, 6, pe=1 << bits) == []


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7])
def test_int_lane_exhaustive_low_bits(bits):
    assert _run_lane_exhaustive("int", bits, bits, False, 6, pe=1 << bits) == []


@pytest.mark.parametrize("act_signed", [False, True])
def test_int8_lane_exhaustive(act_signed):
    # 8-bit first/last layers: signed image codes (conv1) and unsigned codes (fc).
    assert _run_lane_exhaustive("int", 8, 8, act_signed, 6, pe=64) == []


def test_wide_engine_lane_exhaustive():
    # The 8-bit engine's lane: 9-bit signed activations carrying conv1's int8 codes and fc's uint8
    # codes, times every int8 weight.
    # Built as shift-and-add logic (kept out of DSPs), exactly as the accelerator does.
    assert _run_lane_exhaustive("int", 8, 9, True, 6, pe=64, acts=range(-128, 256), in_logic=True) == []


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_int_lane_in_logic_exhaustive(bits):
    assert _run_lane_exhaustive("int", bits, bits, True, 6, pe=1 << bits, in_logic=True) == []


def test_post_lane_shares_one_table_per_lane():
    # The odd-exponent table is instantiated once per lane, whatever PE is (docs/design.md 2.2).
    from amaranth.lib.memory import Memory

    elab = MulLane("post", 3, 3, pe=8).elaborate(None)
    tables = [sub for sub, _ in elab._named_submodules.values() if isinstance(sub, Memory)]
    assert len(tables) == 1 and tables[0].depth == 8


def test_post_table_anchors():
    # Hand-computed: T[a] = round(a*sqrt2*64): 1 -> 91 (90.51), 7 -> 634 (633.60), 0 -> 0.
    table = arith.post_table(3, 6)
    assert (int(table[0]), int(table[1]), int(table[7])) == (0, 91, 634)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_refuses_post_pot_above_offered_width(bits):
    with pytest.raises(ValueError, match="offered"):
        MulLane("pot", 5, 5)
    with pytest.raises(ValueError, match="offered"):
        MulLane("post", 6, 6)
    with pytest.raises(ValueError, match="unsigned"):
        MulLane("post", bits, bits, act_signed=True)
