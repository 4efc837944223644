"""The ASQ adapter unit on Icarus and Verilator: random, all-zero and saturating feature maps.

cocotb side, per sample: select a configuration, stream the map ``y`` into the GAP accumulators
(shuffled order, random idle cycles; ``first`` on each channel's first beat of the sample restarts
its sum), pulse ``start``, wait for ``busy`` to fall, read
``beta``, then stream the map through the quantizer (random idle cycles) while a monitor collects
the codes. Beta and every code are compared with :func:`sim.reference.asq_codes_and_beta`
(``golden.arith.asq_unit``). Maps: random at several scales, all zeros, every value at ``Y_MAX``
(codes saturate at ``2^b - 1``), and half-saturated maps; both the 16-channel (two-layer adapter)
and the 4-channel (one-layer) configurations.
"""

import cocotb
import numpy as np
import pytest

from sim.runner import SIMULATORS
from sim.units import TAG_WIDTH, UNIT_BITS, Y_MAX, run_unit_testbench

pytestmark = pytest.mark.sim

SAMPLES_PER_CONFIG = 8


def make_maps(rng, channels, side):
    """(kind, map) pairs: random at three scales, all-zero, saturated, half saturated."""
    shape = (channels, side, side)
    maps = [("zero", np.zeros(shape, dtype=np.int64)), ("saturated", np.full(shape, Y_MAX))]
    half = rng.integers(0, 3000, shape)
    half[: channels // 2] = Y_MAX
    maps.append(("half-saturated", half))
    while len(maps) < SAMPLES_PER_CONFIG:
        scale = [300, 3000, Y_MAX + 1][len(maps) % 3]
        maps.append((f"random<{scale}", rng.integers(0, scale, shape)))
    return maps


@cocotb.test()
async def asq_unit_matches_golden(dut):
    """Every sample: beta and every code equal golden's asq_unit."""
    from cocotb.triggers import ReadOnly, RisingEdge

    from sim.reference import asq_codes_and_beta
    from sim.scoreboard import InOrderChecker
    from sim.streams import StreamDriver, StreamMonitor
    from sim.tb import pack_fields, start_clock_and_reset, start_watchdog, tb_params, tb_rng, unpack_fields
    from sim.units import UnitBench

    params = tb_params()
    bench = UnitBench(params["bits"], params["seed"])
    unit = bench.units["asq"]
    chan_w, y_w = len(unit.gap.payload.chan), unit.y_width
    rng = tb_rng("asq")
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    await start_clock_and_reset(dut, idle=[dut.asq__gap__valid, dut.asq__q__valid, dut.asq__start])
    codes_check = InOrderChecker(f"ASQ unit b{params['bits']} codes (image = sample)")
    beta_check = InOrderChecker(f"ASQ unit b{params['bits']} beta (image = sample)")
    got_codes = []  # the current sample's codes, in stream order
    monitor = StreamMonitor(dut, "asq__c", callback=got_codes.append,
                            unpack=lambda v: unpack_fields(v.to_unsigned(),
                                                           [(unit.code_width, False), (TAG_WIDTH, False)])[0])
    monitor.start(keep=False)
    gap = StreamDriver(dut, "asq__gap", rng=rng, idle_prob=0.2,
                       pack=lambda cyf: pack_fields([(cyf[0], chan_w, False), (cyf[1], y_w, False),
                                                     (cyf[2], 1, False)]))
    quant = StreamDriver(dut, "asq__q", rng=rng, idle_prob=0.2,
                         pack=lambda ty: pack_fields([(ty[1], y_w, False), (ty[0], TAG_WIDTH, False)]))
    sample, kinds = 0, set()
    watchdog = start_watchdog(200_000, "ASQ unit samples")  # ~3k cycles per sample are needed
    for sel, (consts, channels, pixels) in enumerate(bench.consts.asq):
        side = int(round(pixels ** 0.5))
        for kind, ymap in make_maps(nrng, channels, side):
            codes, beta = asq_codes_and_beta(consts, ymap)
            kinds.add((kind, int(codes.max()) == consts.qmax, beta))
            dut.asq__sel.value = sel
            flat = [(c, int(v)) for c in range(channels) for v in ymap[c].ravel()]
            order, started = rng.sample(flat, len(flat)), set()  # GAP order must not matter
            beats = []
            for c, y in order:
                beats.append((c, y, int(c not in started)))  # the channel's first beat this sample
                started.add(c)
            await gap.send_all(beats)
            dut.asq__start.value = 1
            await RisingEdge(dut.clk)
            dut.asq__start.value = 0
            await RisingEdge(dut.clk)
            await ReadOnly()
            while dut.asq__busy.value == 1:
                await RisingEdge(dut.clk)
                await ReadOnly()
            beta_check.expect(sample, f"asq sel {sel} {kind}", [beta])
            beta_check.observe([dut.asq__beta.value.to_unsigned()])
            await RisingEdge(dut.clk)
            codes_check.expect(sample, f"asq sel {sel} {kind} codes (index c*H*W + h*W + w)",
                               codes.ravel())
            await quant.send_all([(i % (1 << TAG_WIDTH), y) for i, (_, y) in enumerate(flat)])
            for _ in range(unit.CODE_LATENCY + 1):  # the last code out
                await RisingEdge(dut.clk)
            codes_check.observe(got_codes)
            got_codes.clear()
            sample += 1
    monitor.stop()
    watchdog.cancel()
    beta_check.finish()
    codes_check.finish()
    # Saturating maps must have produced the top code; a zero map only zeros.
    assert any(k == "saturated" and top for k, top, _ in kinds), kinds


@pytest.mark.parametrize("bits", UNIT_BITS)
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_asq_unit(simulator, bits):
    num_tests, _ = run_unit_testbench(simulator, bits, "sim.test_asq")
    assert num_tests == 1
