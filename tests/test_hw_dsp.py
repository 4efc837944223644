"""PipelinedProduct: exact products of any operand shapes, on fully registered DSP blocks."""

import random

import pytest
from amaranth import signed, unsigned
from amaranth.sim import Simulator

from hw.eda.synth import synth_cells, untimed_dsp_cells
from hw.eda.verilog import write_verilog
from hw.rtl.dsp import PipelinedProduct

SHAPES = [
    (signed(23), signed(16)),     # the requantizer's acc * M_c: signed digits
    (signed(39), unsigned(14)),   # its * g: sign bit flipped, correction subtracted
    (unsigned(16), unsigned(21)),  # the ASQ unit's y * r: unsigned chunks
    (unsigned(14), signed(39)),
    (signed(16), signed(16)),
    (signed(47), signed(33)),
    (signed(8), signed(5)),
]


def _extremes_and_random(shape, rng):
    lo, hi = ((-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed
              else (0, (1 << shape.width) - 1))
    return [lo, hi, 0, 1, -1 if shape.signed else 2] + [rng.randint(lo, hi) for _ in range(40)]


@pytest.mark.parametrize("a_shape, b_shape", SHAPES)
def test_product_is_exact_after_its_latency(a_shape, b_shape):
    rng = random.Random(a_shape.width * 100 + b_shape.width)
    a_vals, b_vals = _extremes_and_random(a_shape, rng), _extremes_and_random(b_shape, rng)
    items = [(a, b) for a in a_vals[:5] for b in b_vals[:5]] + list(zip(a_vals, b_vals[::-1], strict=True))
    dut = PipelinedProduct(a_shape, b_shape)
    got = []

    async def bench(ctx):
        for k in range(len(items) + dut.LATENCY):
            valid = k < len(items)
            ctx.set(dut.valid, valid)
            if valid:
                ctx.set(dut.a, items[k][0])
                ctx.set(dut.b, items[k][1])
            if k >= dut.LATENCY:
                got.append(ctx.get(dut.p))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [a * b for a, b in items]


@pytest.mark.synth
@pytest.mark.parametrize("a_shape, b_shape", SHAPES[:3])
def test_every_dsp_block_is_registered_on_ice40(tmp_path, a_shape, b_shape):
    """Yosys packs the operand, pipeline and output registers into every SB_MAC16 it uses."""
    dut = PipelinedProduct(a_shape, b_shape)
    path = write_verilog(dut, tmp_path / "product.v", name="product")
    cells = synth_cells(path, "product", "icebreaker", tmp_path, netlist="netlist.json")
    assert cells.get("SB_MAC16") == dut.pieces
    assert untimed_dsp_cells(tmp_path / "netlist.json") == {}


@pytest.mark.parametrize("a_shape, b_width", [(unsigned(22), 12), (signed(23), 13), (unsigned(14), 2),
                                              (unsigned(9), 5), (signed(8), 17)])
def test_pipelined_logic_product_is_exact_after_its_latency(a_shape, b_width):
    from amaranth import Elaboratable, Module, Signal

    from hw.rtl.mul import pipelined_logic_product, pipelined_logic_product_latency

    class Top(Elaboratable):
        def __init__(self):
            self.a, self.b = Signal(a_shape), Signal(signed(b_width))
            self.p = Signal(signed(a_shape.width + b_width + 1))
            self.latency = None

        def elaborate(self, platform):
            m = Module()
            value, self.latency = pipelined_logic_product(m, self.a, self.b)
            m.d.comb += self.p.eq(value)
            return m

    rng = random.Random(b_width)
    b_shape = signed(b_width)
    items = list(zip(_extremes_and_random(a_shape, rng), _extremes_and_random(b_shape, rng)[::-1], strict=True))
    top = Top()
    latency = pipelined_logic_product_latency(b_width)
    got = []

    async def bench(ctx):
        for k in range(len(items) + latency):
            if k < len(items):
                ctx.set(top.a, items[k][0])
                ctx.set(top.b, items[k][1])
            if k >= latency:
                got.append(ctx.get(top.p))
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert top.latency == latency
    assert got == [a * b for a, b in items]
