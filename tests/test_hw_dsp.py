"""PipelinedProduct: exact products of any operand shapes, on fully registered DSP blocks."""

import random

import pytest
from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
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


def _products(dut, items) -> list:
    """``dut.p`` of every ``(a, b)`` in ``items``, issued one per cycle and read ``dut.latency`` cycles later."""
    got = []

    async def bench(ctx):
        for k in range(len(items) + dut.latency):
            valid = k < len(items)
            ctx.set(dut.valid, valid)
            if valid:
                ctx.set(dut.a, items[k][0])
                ctx.set(dut.b, items[k][1])
            if k >= dut.latency:
                got.append(ctx.get(dut.p))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("a_shape, b_shape", SHAPES)
def test_product_is_exact_after_its_latency(a_shape, b_shape):
    rng = random.Random(a_shape.width * 100 + b_shape.width)
    a_vals, b_vals = _extremes_and_random(a_shape, rng), _extremes_and_random(b_shape, rng)
    items = [(a, b) for a in a_vals[:5] for b in b_vals[:5]] + list(zip(a_vals, b_vals[::-1], strict=True))
    dut = PipelinedProduct(a_shape, b_shape)
    assert _products(dut, items) == [a * b for a, b in items]


@pytest.mark.parametrize("a_shape, b_shape", [SHAPES[0], SHAPES[1], SHAPES[3], (signed(9), signed(8))])
def test_product_with_its_input_stage_is_exact_one_cycle_later(a_shape, b_shape):
    rng = random.Random(a_shape.width * 7 + b_shape.width)
    items = list(zip(_extremes_and_random(a_shape, rng), _extremes_and_random(b_shape, rng)[::-1], strict=True))
    dut = PipelinedProduct(a_shape, b_shape, input_stage=True)
    assert dut.latency == PipelinedProduct.LATENCY + 1
    assert _products(dut, items) == [a * b for a, b in items]


class _OperandOrOne(wiring.Component):
    """``x * (use ? g : 1)``: an operand that is a multiplexer with a constant arm, as the engine's
    beta code (``g`` where the step carries a beta, else 1)."""

    def __init__(self, input_stage):
        self.input_stage = input_stage
        super().__init__({"x": In(signed(23)), "g": In(unsigned(14)), "use": In(1), "valid": In(1),
                          "p": Out(signed(37))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.product = product = PipelinedProduct(signed(23), unsigned(14), input_stage=self.input_stage)
        m.d.comb += [product.a.eq(self.x), product.b.eq(Mux(self.use, self.g, 1)), product.valid.eq(self.valid),
                     self.p.eq(product.p)]
        return m


@pytest.mark.synth
@pytest.mark.parametrize("input_stage", [False, True])
def test_an_operand_with_a_constant_arm_needs_the_input_stage_on_ice40(tmp_path, input_stage):
    """Yosys makes the operand register of ``use ? g : 1`` a flip-flop with a synchronous set, which
    stays in logic: the blocks are untimed. The input stage gives them a plain register to take."""
    path = write_verilog(_OperandOrOne(input_stage), tmp_path / "product.v", name="product")
    synth_cells(path, "product", "icebreaker", tmp_path, netlist="netlist.json")
    untimed = untimed_dsp_cells(tmp_path / "netlist.json")
    assert (untimed == {}) == input_stage, untimed


@pytest.mark.synth
def test_the_graph_engine_uses_no_combinational_dsp_block_on_ice40(tmp_path):
    """A small engine with every kind of product the engine has: the uniform (int8) MAC array, the
    requantizer's ``acc * g`` (an asq input's beta), ``* M`` and ``skip * A`` (a residual add), and
    the ASQ unit's. Every SB_MAC16 Yosys places must be clocked and registered at both ends."""
    import numpy as np

    from hw.rtl.engine.core import GraphEngine
    from hw.rtl.engine.planner import plan_graph
    from tests.engine_graphs import asq_block

    engine = GraphEngine(plan_graph(*asq_block(np.random.default_rng(2)), pe=1))
    assert [a.kind for a in engine.plan.arrays] == ["post", "int"] and engine.asq_unit.beta_width > 1
    path = write_verilog(engine, tmp_path / "engine.v", name="graph_engine")
    cells = synth_cells(path, "graph_engine", "icebreaker", tmp_path, netlist="netlist.json")
    assert cells.get("SB_MAC16", 0) >= 5
    assert untimed_dsp_cells(tmp_path / "netlist.json") == {}


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


#: SB_MAC16 parameters that place registers: the operand registers (A, B), the multiplier's
#: internal pipeline registers (the 8 x 8 products and the 16 x 16 sum of them) and the output select.
_REGISTER_PARAMETERS = ("A_REG", "B_REG", "TOP_8x8_MULT_REG", "BOT_8x8_MULT_REG", "PIPELINE_16x16_MULT_REG1",
                        "PIPELINE_16x16_MULT_REG2", "TOPOUTPUT_SELECT", "BOTOUTPUT_SELECT")


def _block_registers(netlist_path) -> list:
    """The register parameters of every SB_MAC16 of a Yosys JSON netlist."""
    import json

    from hw.eda.synth import _param

    netlist = json.loads(netlist_path.read_text())
    return [{k: _param(cell, k) for k in _REGISTER_PARAMETERS}
            for module in netlist["modules"].values() for cell in module["cells"].values()
            if cell["type"] == "SB_MAC16"]


class _BlockProduct(wiring.Component):
    """One :func:`hw.rtl.dsp.block_product` of the wide engine's shape (9-bit activation x int8)."""

    def __init__(self):
        super().__init__({"a": In(signed(9)), "b": In(signed(8)), "enable": In(1), "p": Out(signed(17))})

    def elaborate(self, platform):
        from hw.rtl.dsp import block_product

        m = Module()
        m.d.comb += self.p.eq(block_product(m, self.a, self.b, self.enable))
        return m


@pytest.mark.synth
def test_block_products_are_registered_dsp_blocks_on_ice40(tmp_path):
    """The wide engine's products on DSP blocks: one block per product, each registered before, inside
    and after its multiplier like :class:`PipelinedProduct`'s blocks (nextpnr-ice40 sees only the
    block's ports: without the pipeline register the multiplier between its operand and output
    registers would never be timed), although every PE's block takes the same activation."""
    from hw.rtl.dsp import BLOCK_PRODUCT_LATENCY
    from hw.rtl.mac import MacArray

    reference = PipelinedProduct(signed(9), signed(8))
    path = write_verilog(reference, tmp_path / "ref" / "product.v", name="product")
    synth_cells(path, "product", "icebreaker", tmp_path / "ref", netlist="netlist.json")
    (pipelined,) = _block_registers(tmp_path / "ref" / "netlist.json")
    assert pipelined["A_REG"] == pipelined["B_REG"] == 1
    assert pipelined["PIPELINE_16x16_MULT_REG1"] == pipelined["TOP_8x8_MULT_REG"] == pipelined["BOT_8x8_MULT_REG"] == 1

    path = write_verilog(_BlockProduct(), tmp_path / "one" / "block.v", name="block")
    assert synth_cells(path, "block", "icebreaker", tmp_path / "one", netlist="netlist.json").get("SB_MAC16") == 1
    assert _block_registers(tmp_path / "one" / "netlist.json") == [pipelined]
    assert untimed_dsp_cells(tmp_path / "one" / "netlist.json") == {}

    dut = MacArray("int", 8, 9, True, pe=4, simd=1, acc_width=23, in_logic=True,
                   product_latency=BLOCK_PRODUCT_LATENCY, block_pes=3)
    path = write_verilog(dut, tmp_path / "mac" / "mac.v", name="mac")
    cells = synth_cells(path, "mac", "icebreaker", tmp_path / "mac", netlist="netlist.json")
    assert cells.get("SB_MAC16") == 3
    assert _block_registers(tmp_path / "mac" / "netlist.json") == [pipelined] * 3
    assert untimed_dsp_cells(tmp_path / "mac" / "netlist.json") == {}
