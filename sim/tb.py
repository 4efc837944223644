"""Shared pieces of the cocotb testbenches: parameters, clock and reset, payload packing.

Parameters travel from the pytest side to the cocotb side as one JSON document in an environment
variable (:func:`params_env` / :func:`tb_params`); large data (golden vectors, constants) travels as
files whose paths the parameters name.

Payload packing follows Amaranth's flattening of ``lib.data`` layouts into one Verilog port: the
first field (or array element 0) sits at bit 0, each next one directly above, signed values in
two's complement. These helpers are pure Python, so the packing itself is tested without a
simulator (``tests``-free: see ``sim/test_streams_packing.py``).
"""

import json
import os
import random

#: The environment variable that carries a testbench's parameters.
PARAMS_ENV = "ASQHW_TB_PARAMS"

CLOCK_NS = 10


def params_env(**params) -> dict:
    """Environment entries handing ``params`` (JSON-able) to the cocotb side."""
    return {PARAMS_ENV: json.dumps(params, sort_keys=True)}


def tb_params() -> dict:
    """The parameters the pytest side passed with :func:`params_env` (cocotb side)."""
    return json.loads(os.environ.get(PARAMS_ENV, "{}"))


def tb_rng(name: str) -> random.Random:
    """A random generator seeded from the parameters' ``seed`` and ``name`` (reproducible stalls)."""
    return random.Random(f"{tb_params().get('seed', 1)}:{name}")


async def start_clock_and_reset(dut, cycles: int = 2, idle=()):
    """Start a 100 MHz clock on ``dut.clk``, hold ``dut.rst`` for ``cycles`` rising edges.

    ``idle`` lists input handles set to 0 during reset (stream valids, strobes). Nothing inside
    the design is touched: the generated Verilog needs no help at time 0 (:mod:`hw.eda.verilog`).
    """
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge

    dut.rst.value = 1
    for handle in idle:
        handle.value = 0
    # Start low: the first rising edge comes half a period later, with reset and the idle inputs
    # already applied. (An edge at time 0 would sample rst and inputs still at X on a four-state
    # simulator, and Icarus then latches X into registers the design never resets again.)
    Clock(dut.clk, CLOCK_NS, unit="ns").start(start_high=False)
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


def start_watchdog(cycles: int, what: str):
    """Fail the running cocotb test if it is still running after ``cycles`` clock periods.

    A design that stops answering (a lost handshake, a stuck state machine) must fail the test
    with a message, not hang the test suite. Returns the task (cancel it when done).
    """
    import cocotb
    from cocotb.triggers import Timer

    async def bark():
        await Timer(cycles * CLOCK_NS, "ns")
        raise AssertionError(f"watchdog: {what} not finished after {cycles} cycles")

    return cocotb.start_soon(bark())


# ----------------------------------------------------------------------------- packing


def mask(width: int) -> int:
    return (1 << width) - 1


def to_signed(raw: int, width: int) -> int:
    """Two's complement ``width``-bit word -> Python int."""
    raw &= mask(width)
    return raw - (1 << width) if raw >> (width - 1) else raw


def check_fits(value: int, width: int, signed: bool, what: str = "value") -> int:
    """Return ``value`` if it fits a ``width``-bit field, else raise ``ValueError`` naming it."""
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, mask(width))
    if not lo <= value <= hi:
        raise ValueError(f"{what}={value} does not fit {'signed' if signed else 'unsigned'} {width} bits")
    return value


def pack_fields(fields) -> int:
    """Pack ``[(value, width, signed), ...]`` (first at bit 0) into one integer.

    Raises ``ValueError`` when a value does not fit its field (a testbench bug, never silent
    truncation).
    """
    word, shift = 0, 0
    for i, (value, width, signed) in enumerate(fields):
        check_fits(int(value), width, signed, f"field {i}")
        word |= (int(value) & mask(width)) << shift
        shift += width
    return word


def unpack_fields(word: int, layout) -> list[int]:
    """Inverse of :func:`pack_fields` for ``layout = [(width, signed), ...]``."""
    out, shift = [], 0
    for width, signed in layout:
        raw = (word >> shift) & mask(width)
        out.append(to_signed(raw, width) if signed else raw)
        shift += width
    return out


def unpack_value_last(value, width: int) -> list[int]:
    """An output beat's ``o__payload`` (a cocotb value) as ``[signed value, last]``; X/Z bits while valid
    fail the test."""
    if not value.is_resolvable:
        raise AssertionError(f"o__payload has X/Z bits while valid: {value}")
    return unpack_fields(value.to_unsigned(), [(width, True), (1, False)])


def pack_array(values, width: int, signed: bool = False) -> int:
    """Pack ``values`` as an Amaranth ``ArrayLayout(width, len(values))`` (element 0 at bit 0)."""
    return pack_fields([(v, width, signed) for v in values])


def unpack_array(word: int, width: int, count: int, signed: bool = False) -> list[int]:
    """Inverse of :func:`pack_array`."""
    return unpack_fields(word, [(width, signed)] * count)
