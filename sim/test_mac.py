"""The MAC array (PE x SIMD) on Icarus and Verilator: random groups, extreme groups, random gaps.

cocotb side: groups of 1..36 input sets (``first`` on the first, ``last`` on the last), separated
by random idle cycles or back to back; each set carries random codes, or every code at the
extreme that gives the largest positive / negative product (the accumulator's proved worst case),
or zeros. A monitor reads ``acc`` whenever ``done`` pulses; each group's sums are compared, in
order, with :func:`sim.reference.mac_sums` (golden's products). pytest side: one run per simulator
and BITS.
"""

import cocotb
import pytest
from cocotb.triggers import ReadOnly, RisingEdge

from golden.formats import DEFAULT_POST_FRAC_BITS
from sim.runner import SIMULATORS
from sim.units import MAC_MAX_ITEMS, MAC_PE, MAC_SIMD, UNIT_BITS, mac_acc_width, mac_kind, run_unit_testbench

pytestmark = pytest.mark.sim


def extreme_codes(kind, bits):
    """(largest activation, weight code of the largest product, of the most negative product)."""
    from sim.reference import lane_products

    a_max = (1 << bits) - 1
    codes = list(range(1 << bits))
    products = lane_products(kind, bits, a_max, codes, DEFAULT_POST_FRAC_BITS)
    return a_max, codes[products.index(max(products))], codes[products.index(min(products))]


def make_groups(rng, kind, bits, count):
    """``count`` groups of ``(acts[simd], w[pe][simd])`` items: random, extreme and zero ones."""
    a_max, w_pos, w_neg = extreme_codes(kind, bits)
    groups = []
    for g in range(count):
        mode = ["random", "random", "max", "min", "zero"][g % 5]
        n = MAC_MAX_ITEMS if mode in ("max", "min") else rng.randint(1, MAC_MAX_ITEMS)
        items = []
        for _ in range(n):
            if mode == "random":
                acts = [rng.randrange(1 << bits) for _ in range(MAC_SIMD)]
                w = [[rng.randrange(1 << bits) for _ in range(MAC_SIMD)] for _ in range(MAC_PE)]
            else:
                acts = [0 if mode == "zero" else a_max] * MAC_SIMD
                w = [[{"max": w_pos, "min": w_neg, "zero": rng.randrange(1 << bits)}[mode]] * MAC_SIMD
                     for _ in range(MAC_PE)]
            items.append((acts, w))
        groups.append(items)
    return groups


@cocotb.test()
async def mac_groups_match_golden(dut):
    """Random and worst-case groups, random gaps: every finished accumulator equals golden."""
    from sim.reference import mac_sums
    from sim.scoreboard import InOrderChecker
    from sim.tb import pack_array, start_clock_and_reset, tb_params, tb_rng, unpack_array

    bits = tb_params()["bits"]
    kind, acc_width = mac_kind(bits), mac_acc_width(bits)
    rng = tb_rng("mac")
    groups = make_groups(rng, kind, bits, 60)
    await start_clock_and_reset(dut, idle=[dut.mac__valid, dut.mac__first, dut.mac__last])
    checker = InOrderChecker(f"MAC array {kind} b{bits} (image = group)")
    for g, items in enumerate(groups):
        checker.expect(g, "acc", mac_sums(kind, bits, DEFAULT_POST_FRAC_BITS, items))
    extremes = set()

    async def monitor():
        while checker.matched < len(groups):
            await RisingEdge(dut.clk)
            await ReadOnly()
            if dut.mac__done.value == 1:
                sums = unpack_array(dut.mac__acc.value.to_unsigned(), acc_width, MAC_PE, signed=True)
                extremes.update(v for v in sums if abs(v) >= 1 << (acc_width - 2))
                checker.observe(sums)

    watcher = cocotb.start_soon(monitor())
    for items in groups:
        while rng.random() < 0.4:  # gaps between groups (and sometimes back to back)
            dut.mac__valid.value = 0
            await RisingEdge(dut.clk)
        for i, (acts, w) in enumerate(items):
            while i and rng.random() < 0.15:  # bubbles inside a group
                dut.mac__valid.value = 0
                await RisingEdge(dut.clk)
            dut.mac__valid.value = 1
            dut.mac__first.value = int(i == 0)
            dut.mac__last.value = int(i == len(items) - 1)
            dut.mac__a.value = pack_array(acts, bits)
            dut.mac__w.value = pack_array([c for row in w for c in row], bits)
            await RisingEdge(dut.clk)
    dut.mac__valid.value = 0
    for _ in range(4):
        await RisingEdge(dut.clk)
    watcher.cancel()
    checker.finish()
    # The worst-case groups must have driven the accumulator into its top bit range, both signs.
    assert any(v > 0 for v in extremes) and any(v < 0 for v in extremes), extremes


@pytest.mark.parametrize("bits", UNIT_BITS)
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_mac_array(simulator, bits):
    num_tests, _ = run_unit_testbench(simulator, bits, "sim.test_mac")
    assert num_tests == 1
