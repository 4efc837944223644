"""The serial link: UART rx/tx bit timing, the stream packing, and the host protocol end to end."""

import os
import pty

import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from asqhw.errors import UserError
from hw.link.host import SerialPort, SimulatedBoard, classify, decode_beat, encode_codes, run_images
from hw.rtl.uart import StreamLink, UartRx, UartTx, divisor_for

DIV = 5


def _frame(byte, stop=1):
    """The 8N1 line levels of one byte, LSB first (the spec, written out by hand)."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def _run(dut, bench, cycles=20_000):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run_until(cycles * 1e-6)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=3))
def test_tx_drives_8n1_frames_at_the_divisor(payload):
    dut = UartTx(DIV)
    seen = []

    async def bench(ctx):
        assert ctx.get(dut.tx) == 1  # idle high
        for byte in payload:
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            levels = []
            for _ in range(10):  # sample each bit in its middle
                await ctx.tick().repeat(DIV // 2 + 1) if not levels else await ctx.tick().repeat(DIV)
                levels.append(ctx.get(dut.tx))
            seen.append(levels)
            await ctx.tick().repeat(DIV)

    _run(dut, bench)
    assert seen == [_frame(b) for b in payload]


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=3))
def test_rx_decodes_bit_banged_frames(payload):
    dut = UartRx(DIV)
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for byte in payload:
            for level in _frame(byte):
                ctx.set(dut.rx, level)
                for _ in range(DIV):
                    await ctx.tick()
                    if ctx.get(dut.o.valid):
                        got.append(ctx.get(dut.o.payload))
        for _ in range(4 * DIV):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))

    _run(dut, bench)
    assert got == payload


def test_rx_flags_a_missing_stop_bit_and_drops_the_byte():
    dut = UartRx(DIV)
    errors, got = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for byte, stop in ((0xA5, 0), (0x3C, 1)):
            for level in _frame(byte, stop):
                ctx.set(dut.rx, level)
                for _ in range(DIV):
                    await ctx.tick()
                    errors.append(ctx.get(dut.error))
                    if ctx.get(dut.o.valid):
                        got.append(ctx.get(dut.o.payload))
            ctx.set(dut.rx, 1)
            await ctx.tick().repeat(3 * DIV)

    _run(dut, bench)
    assert got == [0x3C]
    assert sum(errors) == 1


@pytest.mark.parametrize("bad", [3, 2.5, "8"])
def test_uart_rejects_bad_divisor(bad):
    with pytest.raises(ValueError, match="divisor"):
        UartTx(bad)


def test_divisor_for_board_clocks():
    assert divisor_for(12e6, 115_200) == 104  # 12e6 / 104 = 115385 baud, 0.16 % fast
    assert divisor_for(25e6, 115_200) == 217
    with pytest.raises(ValueError, match="cannot make"):
        divisor_for(1e6, 300_000)


# ------------------------------------------------------------------------------------------------
# A small stand-in with asq_accel's stream ports: N signed codes in; logits (s, -s, 2s - 7) and the
# first argmax out. Its answer is computed by hand below, independently of the RTL.

OUT_LAYOUT = data.StructLayout({"value": signed(32), "last": unsigned(1)})


class SumNet(wiring.Component):
    def __init__(self, n):
        self.n = n
        super().__init__({"i": In(stream.Signature(signed(8))), "o": Out(stream.Signature(OUT_LAYOUT))})

    def elaborate(self, platform):
        m = Module()
        total = Signal(signed(32))
        count = Signal(range(self.n + 1))
        beat = Signal(range(4))
        logits = [total, -total, total * 2 - 7]
        best = Signal(2)
        m.d.comb += best.eq(0)
        with m.If((logits[1] > logits[0]) & (logits[1] >= logits[2])):
            m.d.comb += best.eq(1)
        with m.Elif(logits[2] > logits[0]):
            m.d.comb += best.eq(2)
        with m.FSM():
            with m.State("load"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [total.eq(total + self.i.payload), count.eq(count + 1)]
                    with m.If(count == self.n - 1):
                        m.d.sync += beat.eq(0)
                        m.next = "out"
            with m.State("out"):
                m.d.comb += self.o.valid.eq(1)
                with m.Switch(beat):
                    for k, value in enumerate(logits):
                        with m.Case(k):
                            m.d.comb += self.o.payload.value.eq(value)
                    with m.Case(3):
                        m.d.comb += [self.o.payload.value.eq(best), self.o.payload.last.eq(1)]
                with m.If(self.o.ready):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == 3):
                        m.d.sync += [total.eq(0), count.eq(0)]
                        m.next = "load"
        return m


def _expected(codes):
    s = sum(codes)
    logits = [s, -s, 2 * s - 7]
    return logits, logits.index(max(logits))


def test_host_classifies_through_the_simulated_link():
    images = [[5, -3, 17, 100], [-128, -1, 0, 3], [1, 1, 1, 1], [127, 127, 127, 127]]
    board = SimulatedBoard(StreamLink(SumNet(4), divisor=4))
    results = run_images(board, images)
    for codes, result in zip(images, results, strict=True):
        logits, cls = _expected(codes)
        assert result.logits == logits
        assert result.cls == cls


def test_link_packs_wide_input_beats_little_endian():
    class Echo(wiring.Component):  # 12-bit input beats echoed back as 12-bit outputs
        def __init__(self):
            super().__init__({"i": In(stream.Signature(unsigned(12))), "o": Out(stream.Signature(unsigned(12)))})

        def elaborate(self, platform):
            m = Module()
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m

    link = StreamLink(Echo(), divisor=4)
    assert (link.in_bytes, link.out_bytes) == (2, 2)
    board = SimulatedBoard(link)
    board.write(bytes([0x34, 0xF2, 0xFF, 0x0A]))  # 0xF234 -> 12 bits 0x234; 0x0AFF -> 0xAFF
    assert board.read(4) == bytes([0x34, 0x02, 0xFF, 0x0A])


def test_decode_beat_and_encode_codes():
    assert decode_beat(bytes([0xFE, 0xFF, 0xFF, 0xFF, 0x00])) == (-2, False)
    assert decode_beat(bytes([0x07, 0x00, 0x00, 0x00, 0x01])) == (7, True)
    assert encode_codes([-128, -1, 0, 127]) == bytes([0x80, 0xFF, 0x00, 0x7F])
    with pytest.raises(UserError, match="128 is outside int8"):
        encode_codes([128])


def test_host_times_out_loudly_on_a_silent_board():
    class Silent:
        def write(self, data):
            pass

        def read(self, n):
            return b""

    with pytest.raises(UserError, match="0 of 5 bytes"):
        classify(Silent(), [0] * 4)


def test_serial_port_talks_raw_bytes_over_a_pty():
    master, slave = pty.openpty()
    try:
        port = SerialPort(os.ttyname(slave), baud=115_200, timeout=0.5)
        with port:
            port.write(bytes(range(256)))  # raw mode: no byte is translated or swallowed
            got = b""
            while len(got) < 256:
                got += os.read(master, 256)
            assert got == bytes(range(256))
            os.write(master, b"\x00\x0a\x0d\xff")
            assert port.read(4) == b"\x00\x0a\x0d\xff"
            assert port.read(1) == b""  # timeout, nothing sent
    finally:
        os.close(master)
        os.close(slave)


def test_serial_port_names_a_missing_device():
    with pytest.raises(UserError, match="/dev/does-not-exist"):
        SerialPort("/dev/does-not-exist")


def test_host_cli_gets_golden_logits_from_the_simulated_accelerator(capsys):
    """`asqhw host --simulate`: the shipped bundle's accelerator behind the UART, as a board would run."""
    import json

    from asqhw.cli import main

    assert main(["host", "--simulate", "--bits", "3", "--count", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"images": 1, "accuracy": result["accuracy"], "classes_equal_golden": 1,
                      "logits_equal_golden": 1}
