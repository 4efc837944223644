"""Multiplier lanes (POST, POT, uniform) on Icarus and Verilator: every activation x every code.

cocotb side: for each lane of the :class:`sim.units.UnitBench` of the run's BITS, every activation
code is applied with every weight code (``pe`` codes per step, so 2^b x 2^b pairs in 2^b steps at
low BITS) and each product is compared with :func:`sim.reference.lane_products`, i.e.
``golden.arith``. pytest side: one run per simulator and BITS.
"""

import cocotb
import pytest

from golden.formats import DEFAULT_POST_FRAC_BITS
from sim.runner import SIMULATORS
from sim.units import UNIT_BITS, lane_kinds, lane_pe, mac_kind, run_unit_testbench

pytestmark = pytest.mark.sim


async def _check_lane(dut, prefix, kind, bits, act_signed, checker):
    from cocotb.triggers import Timer

    from sim.reference import lane_products
    from sim.tb import pack_array, unpack_array

    a_port, w_port, p_port = (getattr(dut, f"{prefix}__{x}") for x in "awp")
    pe = lane_pe(bits)
    p_width = len(p_port) // pe
    acts = range(-(1 << (bits - 1)), 1 << (bits - 1)) if act_signed else range(1 << bits)
    codes = list(range(1 << bits))
    for a in acts:
        a_port.value = a & ((1 << bits) - 1)
        for start in range(0, len(codes), pe):
            chunk = codes[start:start + pe]
            w_port.value = pack_array(chunk + [0] * (pe - len(chunk)), bits)
            await Timer(1, "ns")
            got = unpack_array(p_port.value.to_unsigned(), p_width, pe, signed=True)[: len(chunk)]
            checker.expect(a, f"{prefix} codes {chunk[0]}..{chunk[-1]}",
                           lane_products(kind, bits, a, chunk, DEFAULT_POST_FRAC_BITS))
            checker.observe(got)
    return len(acts) * len(codes)


@cocotb.test()
async def lanes_exhaustive(dut):
    """Every lane offered at BITS: all (activation, weight code) pairs equal golden's product."""
    from sim.scoreboard import InOrderChecker
    from sim.tb import tb_params

    bits = tb_params()["bits"]
    checker = InOrderChecker(f"multipliers b{bits} (image = activation code)")
    pairs = {}
    for prefix, kind, act_signed in lane_kinds(bits):
        pairs[prefix] = await _check_lane(dut, prefix, kind, bits, act_signed, checker)
    dut._log.info("pairs checked per lane: %s", pairs)
    checker.finish()
    assert all(n == 1 << (2 * bits) for n in pairs.values())


@pytest.mark.parametrize("bits", UNIT_BITS)
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_multipliers_exhaustive(simulator, bits):
    assert mac_kind(bits) in {k for _, k, _ in lane_kinds(bits)}
    num_tests, _ = run_unit_testbench(simulator, bits, "sim.test_mul")
    assert num_tests == 1
