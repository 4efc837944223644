"""cocotb smoke test of the toolchain: ToolchainProbe's Verilog on Icarus and Verilator.

The cocotb side drives random (a, b) pairs with random stalls on both streams and checks every sum
against plain Python arithmetic; the pytest side builds the Verilog and runs it through
:func:`sim.runner.run_cocotb`, once per simulator, each in its own build folder.
"""

import os
import random

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from sim.runner import SIMULATORS, run_cocotb

pytestmark = pytest.mark.sim

WIDTH, ACC_WIDTH = 8, 20


async def _reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


def _pack(a, b, last):
    """The StructLayout {a, b, last} as one integer (fields from bit 0 up, two's complement)."""
    mask = (1 << WIDTH) - 1
    return (a & mask) | ((b & mask) << WIDTH) | (last << (2 * WIDTH))


@cocotb.test()
async def probe_sums_match_python(dut):
    """Random groups of products, random valid/ready stalls: every emitted sum is exact."""
    rng = random.Random(int(os.environ.get("SMOKE_SEED", "1")))
    lo, hi = -(1 << (WIDTH - 1)), (1 << (WIDTH - 1)) - 1
    groups = [[(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(rng.randint(1, 12))] for _ in range(40)]
    groups.append([(lo, lo)] * 12)  # extremes: 12 * 2^14 must fit the 20-bit accumulator
    expected = [sum(a * b for a, b in g) for g in groups]
    beats = [(a, b, int(i == len(g) - 1)) for g in groups for i, (a, b) in enumerate(g)]
    await _reset(dut)

    got = []

    async def monitor():
        while len(got) < len(expected):
            dut.o__ready.value = int(rng.random() < 0.7)
            await ReadOnly()
            if dut.o__valid.value == 1 and dut.o__ready.value == 1:
                got.append(dut.o__payload.value.to_signed())
            await RisingEdge(dut.clk)

    watcher = cocotb.start_soon(monitor())
    for beat in beats:
        while rng.random() < 0.3:  # idle cycles on the input
            dut.i__valid.value = 0
            await RisingEdge(dut.clk)
        dut.i__valid.value = 1
        dut.i__payload.value = _pack(*beat)
        await ReadOnly()
        while dut.i__ready.value != 1:
            await RisingEdge(dut.clk)
            await ReadOnly()
        await RisingEdge(dut.clk)
    dut.i__valid.value = 0
    await watcher
    assert got == expected


@pytest.fixture(scope="module")
def probe_verilog(tmp_path_factory):
    from hw.eda.smoke import ToolchainProbe
    from hw.eda.verilog import write_verilog

    path = tmp_path_factory.mktemp("probe") / "probe.v"
    return write_verilog(ToolchainProbe(WIDTH, ACC_WIDTH), path, name="probe")


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_probe_on_simulator(simulator, probe_verilog, tmp_path):
    num_tests, _ = run_cocotb(
        simulator=simulator, sources=[probe_verilog], toplevel="probe",
        test_module="sim.test_smoke", build_dir=tmp_path / f"build_{simulator}",
    )
    assert num_tests == 1
