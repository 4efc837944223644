"""The requantizer on Icarus and Verilator: random and extreme accumulators, every layer kind.

cocotb side: a stream of ``(layer, g, acc, chan, tag)`` items, with the layer switching item by
item (the requantizer carries it down its pipeline), random idle cycles, random accumulators and the
extremes of the accumulator range (``-2^(w-1)``, ``2^(w-1)-1``, 0, +-1), random and extreme beta
codes ``g`` (1 and the largest) for the ASQ-input layer. The three layers of
:func:`sim.units.unit_constants` cover LSQ codes (clamp to ``0..2^b-1``), ``y`` for an ASQ unit
(``G > 0``, clamp to ``0..Y_MAX``) and logits (no clamp). A monitor on the output stream feeds an
in-order checker whose expected values come from :func:`sim.reference.requant_value` (golden).
"""

import cocotb
import pytest

from sim.runner import SIMULATORS
from sim.units import BETA_MAX, TAG_WIDTH, UNIT_BITS, run_unit_testbench

pytestmark = pytest.mark.sim

ITEMS_PER_LAYER = 120


def make_items(rng, specs, acc_width):
    amax = 1 << (acc_width - 1)
    extremes = [-amax, amax - 1, 0, 1, -1]
    items = []
    for k in range(ITEMS_PER_LAYER * len(specs)):
        layer = rng.randrange(len(specs))
        spec = specs[layer]
        acc = extremes[k % 5] if k % 3 == 0 else rng.randrange(-amax, amax)
        g = 1
        if spec.G:
            g = [1, BETA_MAX][k % 2] if k % 5 == 0 else rng.randrange(1 << (spec.G - 4), BETA_MAX + 1)
        items.append((layer, g, acc, rng.randrange(len(spec.M)), k % (1 << TAG_WIDTH)))
    return items


@cocotb.test()
async def requantizer_matches_golden(dut):
    """Random layer order, random gaps, random and extreme inputs: every output equals golden."""
    from cocotb.triggers import RisingEdge

    from sim.reference import requant_value
    from sim.scoreboard import InOrderChecker
    from sim.streams import StreamDriver, StreamMonitor
    from sim.tb import pack_fields, start_clock_and_reset, tb_params, tb_rng, unpack_fields
    from sim.units import UnitBench

    params = tb_params()
    rq = UnitBench(params["bits"], params["seed"]).units["rq"]
    specs, chan_w = rq.specs, len(rq.i.payload.chan)
    rng = tb_rng("requant")
    items = make_items(rng, specs, rq.acc_width)
    await start_clock_and_reset(dut, idle=[dut.rq__i__valid])

    checker = InOrderChecker(f"requantizer b{params['bits']} (image = item; index 0 value, 1 chan, 2 tag)")
    seen = {k: [] for k in range(len(specs))}
    for n, (layer, g, acc, chan, tag) in enumerate(items):
        checker.expect(n, f"rq layer {layer}", [requant_value(specs[layer], acc, chan, g), chan, tag])
        seen[layer].append(checker.pending[-1][2][0])
    monitor = StreamMonitor(dut, "rq__o", callback=checker.observe,
                            unpack=lambda v: unpack_fields(v.to_unsigned(),
                                                           [(rq.out_width, True), (chan_w, False),
                                                            (TAG_WIDTH, False)])).start(keep=False)

    def sideband(item):
        dut.rq__layer.value, dut.rq__g.value = item[0], item[1]

    driver = StreamDriver(dut, "rq__i", rng=rng, idle_prob=0.3, sideband=sideband,
                          pack=lambda it: pack_fields([(it[2], rq.acc_width, True), (it[3], chan_w, False),
                                                       (it[4], TAG_WIDTH, False)]))
    await driver.send_all(items)
    for _ in range(rq.LATENCY + 2):
        await RisingEdge(dut.clk)
    monitor.stop()
    checker.finish()
    # The data must have hit both clamps of the codes, the y clamp at 0, and both logit signs.
    qmax = specs[0].hi
    assert 0 in seen[0] and qmax in seen[0], sorted(set(seen[0]))
    assert 0 in seen[1] and min(seen[2]) < 0 < max(seen[2])


@pytest.mark.parametrize("bits", UNIT_BITS)
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_requantizer(simulator, bits):
    num_tests, _ = run_unit_testbench(simulator, bits, "sim.test_requant")
    assert num_tests == 1
