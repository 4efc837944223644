"""Sign-off timing: the untimed paths a routed design reports, and synthesis failing on them."""

import json

import pytest
from amaranth import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from test_synth_link import OUT_LAYOUT

from asqhw.errors import UserError
from hw.eda.synth import PnrReport, synthesize_top, untimed_dsp_cells, untimed_paths
from hw.rtl.dsp import PipelinedProduct


def _netlist(tmp_path, cells, ports=None):
    path = tmp_path / "netlist.json"
    path.write_text(json.dumps({"modules": {"top": {"ports": ports or {}, "cells": cells}}}))
    return path


def _mac16(clk, a_reg, out_select, *, reg2=0, mult_pipeline="1", lower="0"):
    return {"type": "SB_MAC16",
            "parameters": {"A_REG": a_reg, "B_REG": "1", "TOPOUTPUT_SELECT": out_select,
                           "BOTOUTPUT_SELECT": out_select, "PIPELINE_16x16_MULT_REG2": reg2,
                           "PIPELINE_16x16_MULT_REG1": mult_pipeline, "TOP_8x8_MULT_REG": mult_pipeline,
                           "BOT_8x8_MULT_REG": mult_pipeline, "TOPADDSUB_LOWERINPUT": lower,
                           "BOTADDSUB_LOWERINPUT": lower},
            "port_directions": {"O": "output"},
            "connections": {"CLK": clk, "CE": ["1"], "A": [2, 3], "B": [4, 5], "C": ["0"], "D": ["0"],
                            "O": list(range(10, 42))}}


def test_dsp_cells_are_untimed_unless_clocked_and_registered_at_both_ends(tmp_path):
    reader = {"type": "SB_LUT4", "port_directions": {"I0": "input"}, "connections": {"I0": [30]}}
    path = _netlist(tmp_path, {
        "comb": _mac16(["0"], "0", "00000000000000000000000000000011"),
        "input_only": _mac16([1], "1", "11"),
        "pipelined": _mac16([1], "1", "11", reg2="1"),
        "accumulator": _mac16([1], "1", "01"),
        "reader": reader,
    })
    found = untimed_dsp_cells(path)
    assert sorted(found) == ["comb", "input_only"]
    assert "clock tied off" in found["comb"] and "A not registered" in found["comb"]
    # only the top half (O[16:32], bit 30 is read) matters
    assert found["input_only"] == ["top output not registered (TOPOUTPUT_SELECT=3)"]


def test_a_16x16_product_between_the_block_registers_needs_the_multiplier_pipeline(tmp_path):
    """Operand and output registers alone leave the multiply inside the block untimed (nextpnr-ice40
    sees only the ports): the 16 x 16 product, read directly (select 3) or through the accumulator
    register (select 1, adder input 2), needs the multiplier's pipeline registers."""
    reader = {"type": "SB_LUT4", "port_directions": {"I0": "input"}, "connections": {"I0": [30]}}
    path = _netlist(tmp_path, {
        "direct": _mac16([1], "1", "11", reg2="1", mult_pipeline="0"),
        "through_acc": _mac16([1], "1", "01", mult_pipeline="0", lower="10"),
        "pipelined": _mac16([1], "1", "01", lower="10"),
        "adds_only": _mac16([1], "1", "01", mult_pipeline="0"),
        "reader": reader,
    })
    found = untimed_dsp_cells(path)
    assert sorted(found) == ["direct", "through_acc"]
    assert found["through_acc"] == ["top output: 16 x 16 multiplier not pipelined (TOP_8x8_MULT_REG=0, "
                                    "BOT_8x8_MULT_REG=0, PIPELINE_16x16_MULT_REG1=0)"]


def test_ecp5_multipliers_are_timed_when_combinational_or_fully_registered(tmp_path):
    def mult(**regs):
        return {"type": "MULT18X18D", "parameters": {f"REG_{k}_CLK": v for k, v in regs.items()},
                "connections": {"CLK0": [7]}}

    path = _netlist(tmp_path, {"comb": mult(), "full": mult(INPUTA="CLK0", INPUTB="CLK0", OUTPUT="CLK0"),
                               "part": mult(INPUTA="CLK0", INPUTB="CLK0")})
    assert list(untimed_dsp_cells(path)) == ["part"]


def test_untimed_paths_count_dsps_constant_clocks_and_crossings(tmp_path):
    path = _netlist(tmp_path, {"comb": _mac16(["0"], "0", "11")},
                    ports={"o": {"direction": "output", "bits": [12]}})
    gnd = "$PACKER_GND_NET_$glb_clk"
    report = PnrReport("icebreaker", "iCE40UP5K", "ICESTORM_LC", 1, 5280,
                       fmax_mhz={gnd: 300.0, "cd_sync.clk": 14.0},
                       clock_pairs=[["posedge cd_sync.clk", "posedge cd_sync.clk"],
                                    [f"posedge {gnd}", "posedge cd_sync.clk"],
                                    ["<async>", "posedge cd_sync.clk"]])
    got = untimed_paths(path, [report])
    assert (got["count"], got["dsp_cells"], got["constant_clocks"]) == (3, 1, [gnd])
    assert got["cross_domain"] == [f"{gnd} -> cd_sync.clk"] and got["async_pins"] == ["<async> -> cd_sync.clk"]
    clean = PnrReport("icebreaker", "iCE40UP5K", "ICESTORM_LC", 1, 5280, fmax_mhz={"cd_sync.clk": 40.0},
                      clock_pairs=[["posedge cd_sync.clk", "posedge cd_sync.clk"]])
    assert untimed_paths(tmp_path / "missing.json", [clean])["count"] == 0


class ProductNet(wiring.Component):
    """Four byte beats load two signed 16-bit operands; one beat sends their product.

    ``registered=False``: the product is combinational logic between registers, which Yosys puts on
    an SB_MAC16 with its clock tied off. ``registered=True``: a :class:`PipelinedProduct`.
    """

    def __init__(self, registered):
        self.registered = registered
        super().__init__({"i": In(stream.Signature(signed(8))), "o": Out(stream.Signature(OUT_LAYOUT))})

    def elaborate(self, platform):
        m = Module()
        operands = Signal(32)
        count = Signal(range(4))
        wait = Signal(range(PipelinedProduct.LATENCY + 1))
        result = Signal(signed(32))
        a, b = operands[:16].as_signed(), operands[16:].as_signed()
        if self.registered:
            m.submodules.product = product = PipelinedProduct(signed(16), signed(16))
            m.d.comb += [product.a.eq(a), product.b.eq(b)]
        with m.FSM():
            with m.State("load"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [operands.eq((operands << 8) | self.i.payload.as_unsigned()), count.eq(count + 1)]
                    with m.If(count == 3):
                        m.d.sync += wait.eq(0)
                        m.next = "multiply"
            with m.State("multiply"):
                if self.registered:
                    m.d.comb += product.valid.eq(wait == 0)
                    m.d.sync += wait.eq(wait + 1)
                    with m.If(wait == PipelinedProduct.LATENCY):
                        m.d.sync += result.eq(product.p)
                        m.next = "send"
                else:
                    m.d.sync += result.eq(a * b)
                    m.next = "send"
            with m.State("send"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.value.eq(result), self.o.payload.last.eq(1)]
                with m.If(self.o.ready):
                    m.next = "load"
        return m


def _synth(tmp_path, registered):
    return synthesize_top(ProductNet(registered), "icebreaker", tmp_path / "out", design={"top": "product"},
                          macs_per_cycle=1, cycles=10, input_bytes=4, seeds=1, progress=False)


@pytest.mark.synth
def test_a_combinational_dsp_fails_synthesis_with_the_figures(tmp_path):
    with pytest.raises(UserError) as err:
        _synth(tmp_path, registered=False)
    text = str(err.value)
    assert "untimed paths, the Fmax is not sign-off" in text and "DSP cells used combinationally" in text
    report = json.loads((tmp_path / "out" / "report.json").read_text())  # kept despite the failure
    assert report["ok"] is False and report["clock_met"] is True
    assert report["untimed_paths"]["dsp_cells"] >= 1 and report["untimed_paths"]["count"] >= 1


@pytest.mark.synth
def test_a_pipelined_product_on_registered_dsps_signs_off(tmp_path):
    report = _synth(tmp_path, registered=True)
    assert report["resources"]["dsp"]["used"] == 1
    assert report["untimed_paths"]["count"] == 0 and report["ok"] is True
