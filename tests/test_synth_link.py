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
from hw.link.rates import check_baud, fastest_baud, ft2232h_baud, ftdi_makes, link_budget, link_budget_at_clock
from hw.rtl.accel.argmax import reply_filter
from hw.rtl.uart import (
    BAUD_TOLERANCE,
    FEWEST_CYCLES_TOLERANCE,
    MIN_DIVISOR,
    StreamLink,
    UartRx,
    UartTx,
    baud_tolerance,
    divisor_for,
    sampling_margins,
)

DIV = 5


def _frame(byte, stop=1):
    """The 8N1 line levels of one byte, LSB first (the spec, written out by hand)."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def _run(dut, bench, cycles=20_000):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run_until(cycles * 1e-6)


@pytest.mark.parametrize("div", [MIN_DIVISOR, DIV])
@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=3))
def test_tx_drives_8n1_frames_at_the_divisor(div, payload):
    dut = UartTx(div)
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
                await ctx.tick().repeat(div // 2 + 1) if not levels else await ctx.tick().repeat(div)
                levels.append(ctx.get(dut.tx))
            seen.append(levels)
            await ctx.tick().repeat(div)

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


@pytest.mark.parametrize("skew", [-BAUD_TOLERANCE, 0.0, BAUD_TOLERANCE])
@pytest.mark.parametrize("after_edge", [0.1, 0.5, 0.9])
def test_rx_at_4_cycles_per_bit_takes_a_sender_off_by_the_tolerance(skew, after_edge):
    """A sender BAUD_TOLERANCE fast or slow, frames back to back, edges anywhere within a clock cycle."""
    got, errors = _receive(4, EDGE_BYTES, skew=skew, after_edge=after_edge)
    assert got == EDGE_BYTES
    assert errors == 0


@pytest.mark.parametrize("bad", [2, 2.5, "8"])
def test_uart_rejects_bad_divisor(bad):
    with pytest.raises(ValueError, match="divisor"):
        UartTx(bad)


def _receive(divisor, payload, *, skew=0.0, after_edge=0.5, cycles_before=3):
    """What :class:`UartRx` at ``divisor`` reads of ``payload`` sent back to back by a sender whose bits
    last ``divisor * (1 + skew)`` clock cycles, its first start edge ``after_edge`` of a cycle after a
    rising clock edge (the line changes between edges, as a real one does); (bytes, framing errors)."""
    dut = UartRx(divisor)
    period = 1e-6
    bit_time = divisor * period * (1 + skew)
    got, errors = [], []

    async def sender(ctx):
        # add_clock's rising edges fall at (k + 1/2) periods
        await ctx.delay((cycles_before + 0.5 + after_edge) * period)
        for byte in payload:
            for level in _frame(byte):
                ctx.set(dut.rx, level)
                await ctx.delay(bit_time)

    async def receiver(ctx):
        ctx.set(dut.o.ready, 1)
        while True:
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            errors.append(ctx.get(dut.error))

    sim = Simulator(dut)
    sim.add_clock(period)
    sim.add_testbench(sender)
    sim.add_testbench(receiver, background=True)
    sim.run_until((cycles_before + 2) * period + (len(payload) * 10 + 4) * bit_time)
    return got, sum(errors)


#: Every bit pattern next to each edge: all 0 and all 1 (a stop bit after a 0 and after a 1), alternating.
EDGE_BYTES = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0xF0, 0x0F]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=6), st.floats(0.001, 0.999),
       st.sampled_from([-FEWEST_CYCLES_TOLERANCE, 0.0, FEWEST_CYCLES_TOLERANCE]))
def test_rx_at_3_cycles_per_bit_reads_any_start_phase_within_its_tolerance(payload, after_edge, skew):
    """12 Mbaud at 36 MHz: frames back to back, the start edge anywhere in a clock cycle, the sender
    as far off as the tolerance allows."""
    assert MIN_DIVISOR == 3 and baud_tolerance(3) == FEWEST_CYCLES_TOLERANCE
    assert _receive(3, payload, skew=skew, after_edge=after_edge) == (payload, 0)


#: The start edge just after a clock edge: seen almost a cycle late, every sample at its latest in its
#: bit; just before one: every sample at its earliest.
LATEST, EARLIEST = 0.001, 0.999


@pytest.mark.parametrize("divisor", [3, 4, 5])
def test_rx_sampling_margins_are_the_derived_ones(divisor):
    """A sender just inside :func:`sampling_margins`' rate errors is read at the worst start phase; just
    outside, that phase breaks the frame: the derivation is the receiver's, not a loose bound."""
    margins = sampling_margins(divisor)
    fast, slow = -margins["fastest"], margins["slowest"]
    # fast: the stop bit ends before its latest sample; slow: it starts after its earliest
    for skew, phase in ((fast, LATEST), (slow, EARLIEST)):
        assert _receive(divisor, EDGE_BYTES, skew=0.9 * skew, after_edge=phase) == (EDGE_BYTES, 0)
        got, errors = _receive(divisor, EDGE_BYTES, skew=1.15 * skew, after_edge=phase)
        assert got != EDGE_BYTES and errors > 0
    assert baud_tolerance(divisor) < min(margins["fastest"], margins["slowest"])


def test_rx_at_3_cycles_per_bit_needs_its_phase_margin():
    """At the exact rate every start phase is read; the margin is one cycle each side (2 would be none)."""
    assert sampling_margins(3)["early_cycles"] == sampling_margins(3)["late_cycles"] == 1
    for phase in (LATEST, 0.25, 0.5, 0.75, EARLIEST):
        assert _receive(3, EDGE_BYTES, after_edge=phase) == (EDGE_BYTES, 0)
    assert sampling_margins(2)["late_cycles"] == 0


def test_divisor_3_takes_only_a_rate_within_half_a_percent():
    assert divisor_for(36e6, 12_000_000) == 3
    assert divisor_for(24e6, 8_000_000) == 3
    with pytest.raises(ValueError, match="a 35.25 MHz clock cannot make 12000000 baud within 0.5 % at 3 cycles "
                                         "per bit: divisor 3 gives 11750000 baud \\(-2.1 %\\)"):
        divisor_for(35.25e6, 12_000_000)
    # 1.5 % fast: taken at 4 cycles per bit (the 2 % rule), refused at 3
    assert divisor_for(4.06e6, 1_000_000) == 4
    with pytest.raises(ValueError, match="within 0.5 % at 3 cycles per bit: divisor 3 gives 1015000 baud"):
        divisor_for(3.045e6, 1_000_000)
    with pytest.raises(ValueError, match="within 2 %: divisor 4 gives 1025000 baud"):
        divisor_for(4.1e6, 1_000_000)


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


@pytest.mark.parametrize("divisor", [3, 4])
def test_host_classifies_through_the_simulated_link(divisor):
    images = [[5, -3, 17, 100], [-128, -1, 0, 3], [1, 1, 1, 1], [127, 127, 127, 127]]
    board = SimulatedBoard(StreamLink(SumNet(4), divisor=divisor))
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


# ------------------------------------------------------------------------------------------------
# The fast link: FT2232H rates against the design clock, the class-only reply, images in flight


def test_ft2232h_rates_are_12_mhz_over_eighths_with_only_1_and_1_5_below_2():
    assert ft2232h_baud(12_000_000) == 12_000_000
    assert ft2232h_baud(8_000_000) == 8_000_000
    assert ft2232h_baud(6_000_000) == 6_000_000
    assert ft2232h_baud(3_000_000) == 3_000_000
    assert ft2232h_baud(10_000_000) in (8_000_000, 12_000_000)  # 1.25 is no divisor
    assert ft2232h_baud(115_200) == pytest.approx(115_246, abs=1)  # 12 MHz / 104.125
    assert ftdi_makes(115_200) and ftdi_makes(12_000_000) and not ftdi_makes(10_000_000)


@pytest.mark.parametrize("clock_mhz, fastest", [(12, 4_000_000), (20, 5_052_632), (40, 8_000_000), (45, 5_647_059),
                                                (48, 12_000_000), (60, 12_000_000), (36, 12_000_000),
                                                (35.25, 5_052_632), (36.375, 6_000_000)])
def test_fastest_baud_a_clock_makes(clock_mhz, fastest):
    assert fastest_baud(clock_mhz * 1e6) == fastest


def test_check_baud_gives_the_divisor_or_says_which_end_cannot():
    assert check_baud(12_000_000, 48e6) == 4
    assert check_baud(115_200, 12e6) == 104
    assert check_baud(115_200) is None  # no clock: only the FT2232H is checked
    assert check_baud(12_000_000, 36e6) == 3  # exact: 3 cycles per bit
    with pytest.raises(UserError, match="a 20 MHz clock cannot make 12000000 baud: the UART needs at least 3 "
                                        "clock cycles per bit.*fastest FT2232H rate it makes is 5052632.*"
                                        "36 MHz \\(divisor 3\\) or 48 MHz \\(divisor 4\\)"):
        check_baud(12_000_000, 20e6)
    with pytest.raises(UserError, match="a 40 MHz clock cannot make 6000000 baud within 2 %: divisor 7 gives "
                                        "5714286 baud"):
        check_baud(6_000_000, 40e6)
    with pytest.raises(UserError, match="FT2232H cannot make 10000000 baud"):
        check_baud(10_000_000, 40e6)
    # 5.6 Mbaud: the FT2232H makes 5647059 (12 MHz / 2.125, 0.8 % off, within its 2 %); a clock exact for
    # 5.6 Mbaud at 3 cycles per bit is 0.8 % from that, more than the 0.5 % the receiver allows there
    assert ftdi_makes(5_600_000) and divisor_for(16.8e6, 5_600_000) == 3
    with pytest.raises(UserError, match="the FT2232H makes 5647059 baud and a 16.8 MHz clock 5600000 at divisor 3, "
                                        "0.83 % apart; at 3 cycles per bit they must agree within 0.5 %"):
        check_baud(5_600_000, 16.8e6)
    assert check_baud(5_647_059, 16.941177e6) == 3


def test_link_budget_bytes_per_image_and_images_per_s():
    slow = link_budget(input_bytes=64, n_logits=10, baud=115_200)
    assert (slow["bytes_in_per_image"], slow["bytes_out_per_image"]) == (64, 55)
    assert slow["images_per_s_one_at_a_time"] == pytest.approx(11_520 / 119, abs=0.1)  # ~97 images/s
    fast = link_budget(input_bytes=64, n_logits=10, baud=12_000_000, reply="class")
    assert (fast["bytes_in_per_image"], fast["bytes_out_per_image"]) == (64, 1)
    assert fast["bytes_per_s"] == 1_200_000  # >= 1 MB/s each way
    assert fast["images_per_s_pipelined"] == 18_750  # the input direction: 1.2 MB/s / 64 bytes
    with pytest.raises(ValueError, match="reply 'probs'"):
        link_budget(input_bytes=64, n_logits=10, baud=115_200, reply="probs")


def _class_of(codes):
    return _expected(codes)[1]


def test_class_only_reply_sends_one_byte_per_image():
    images = [[5, -3, 17, 100], [-128, -1, 0, 3], [1, 1, 1, 1]]
    link = StreamLink(SumNet(4), divisor=4, **reply_filter("class", 3))
    assert link.out_bytes == 1
    board = SimulatedBoard(link)
    results = run_images(board, images, classes=3, reply="class")
    assert [(r.logits, r.cls) for r in results] == [(None, _class_of(codes)) for codes in images]
    assert board.from_board == b""  # nothing but the class bytes came back


def test_link_budget_at_a_clock_uses_the_fastest_rate_it_makes():
    at_48 = link_budget_at_clock(48e6, input_bytes=64, n_logits=10)
    assert (at_48["baud"], at_48["divisor"], at_48["images_per_s_pipelined"]) == (12_000_000, 4, 18_750)
    at_12 = link_budget_at_clock(12e6, input_bytes=64, n_logits=10, reply="logits")
    assert (at_12["baud"], at_12["divisor"], at_12["bytes_out_per_image"]) == (4_000_000, 3, 55)
    too_slow = link_budget_at_clock(2e6, input_bytes=64, n_logits=10)
    assert too_slow["baud"] is None and too_slow["images_per_s_pipelined"] == 0


class BusyNet(wiring.Component):
    """Takes N codes, computes for ``busy`` cycles (taking nothing), then answers their sum, last = 1."""

    def __init__(self, n, busy):
        self.n, self.busy = n, busy
        super().__init__({"i": In(stream.Signature(signed(8))), "o": Out(stream.Signature(OUT_LAYOUT))})

    def elaborate(self, platform):
        m = Module()
        total = Signal(signed(32))
        count = Signal(range(self.n + 1))
        wait = Signal(range(self.busy + 1))
        with m.FSM():
            with m.State("load"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [total.eq(total + self.i.payload), count.eq(count + 1)]
                    with m.If(count == self.n - 1):
                        m.d.sync += wait.eq(self.busy)
                        m.next = "busy"
            with m.State("busy"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.next = "out"
            with m.State("out"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.value.eq(total), self.o.payload.last.eq(1)]
                with m.If(self.o.ready):
                    m.d.sync += [total.eq(0), count.eq(0)]
                    m.next = "load"
        return m


IMAGES = [[5, -3, 17, 100], [-128, -1, 0, 3], [1, 1, 1, 1], [127, 127, 127, 127], [-7, 9, -11, 13]]


def test_images_in_flight_need_the_input_buffer():
    """With no flow control, bytes sent while the design computes are lost unless a buffer holds them."""
    busy = 3000  # cycles of "compute": longer than the simulated host takes to react (SimulatedBoard.CHUNK)
    line = 4 * 10 * 4  # an image's 4 bytes on the line: 10 bits of 4 cycles each
    unbuffered = SimulatedBoard(StreamLink(BusyNet(4, busy), divisor=4), max_cycles=20_000)
    with pytest.raises(UserError, match="0 of 5 bytes.*with 3 images in flight the board must buffer 2 images"):
        run_images(unbuffered, IMAGES, window=3)
    buffered = SimulatedBoard(StreamLink(BusyNet(4, busy), divisor=4, fifo_depth=8), max_cycles=20_000)
    results = run_images(buffered, IMAGES, window=3)
    assert [(r.logits, r.cls) for r in results] == [([], sum(codes)) for codes in IMAGES]
    # In flight the next image waits in the buffer while one computes: an image per compute and load;
    # one at a time, the line time of the image and of the reply come on top.
    assert buffered.cycles_per_reply(5) < busy + 20
    one_at_a_time = SimulatedBoard(StreamLink(BusyNet(4, busy), divisor=4, fifo_depth=8))
    run_images(one_at_a_time, IMAGES, window=1)
    assert one_at_a_time.cycles_per_reply(5) > busy + line + 5 * 40


def test_stream_link_rejects_a_negative_buffer():
    with pytest.raises(ValueError, match="fifo_depth"):
        StreamLink(SumNet(4), divisor=4, fifo_depth=-1)


def test_serial_port_opens_a_pty_at_12_mbaud():
    master, slave = pty.openpty()
    try:
        with SerialPort(os.ttyname(slave), baud=12_000_000, timeout=0.5) as port:
            assert port.serial.baudrate == 12_000_000
            os.write(master, b"\x07")
            assert port.read(1) == b"\x07"
    finally:
        os.close(master)
        os.close(slave)


def test_serial_port_names_an_ftdi_url_it_cannot_open():
    with pytest.raises(UserError, match="cannot open serial port ftdi://ftdi:2232h/2 at 12000000 baud"):
        SerialPort("ftdi://ftdi:2232h/2", baud=12_000_000)


def _host_json(capsys, *argv):
    import json

    from asqhw.cli import main

    status = main(["host", "--simulate", "--bits", "3", "--json", *argv])
    return status, json.loads(capsys.readouterr().out)


def test_host_cli_at_12_mbaud_with_images_in_flight_is_bit_exact(capsys):
    """The shipped bundle's accelerator behind the fast link (48 MHz, 12 Mbaud), two images in flight."""
    status, result = _host_json(capsys, "--count", "2", "--baud", "12000000", "--clock-mhz", "48",
                                "--window", "2")
    assert status == 0
    assert (result["classes_equal_golden"], result["logits_equal_golden"]) == (2, 2)
    link = result["link"]
    assert (link["bytes_in_per_image"], link["bytes_out_per_image"], link["window"]) == (64, 55, 2)
    assert link["images_per_s_pipelined"] == 18_750
    measured = link["measured"]
    assert measured["source"] == "simulation" and measured["images_per_s"] > 1000


def test_host_cli_class_only_reply_at_12_mbaud(capsys):
    status, result = _host_json(capsys, "--count", "3", "--baud", "12000000", "--clock-mhz", "48",
                                "--reply", "class", "--window", "3")
    assert status == 0 and result["classes_equal_golden"] == 3 and "logits_equal_golden" not in result
    link = result["link"]
    assert (link["bytes_in_per_image"], link["bytes_out_per_image"], link["reply"]) == (64, 1, "class")
    # Compute-bound: the line (64 bytes x 10 bits x 4 cycles) keeps up with the accelerator.
    assert link["measured"]["cycles_per_image"] < 9000


@pytest.mark.parametrize("reply", ["logits", "class"])
def test_host_cli_at_12_mbaud_from_a_36_mhz_clock_is_bit_exact(reply, capsys):
    """The fast link at 3 cycles per bit: the shipped bundle's accelerator behind a 36 MHz, 12 Mbaud
    UART, every logit or the class alone, equal to golden."""
    status, result = _host_json(capsys, "--count", "2", "--baud", "12000000", "--clock-mhz", "36", "--reply", reply)
    assert status == 0 and result["classes_equal_golden"] == 2
    assert result.get("logits_equal_golden") == (2 if reply == "logits" else None)
    link = result["link"]
    assert link["bytes_per_s"] == 1_200_000 and link["bytes_out_per_image"] == (55 if reply == "logits" else 1)


def test_host_cli_refuses_12_mbaud_at_the_default_designs_clock_naming_the_clocks_that_make_it(capsys):
    from asqhw.cli import main

    assert main(["host", "--simulate", "--bits", "3", "--baud", "12000000", "--clock-mhz", "35.25"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("asqhw: error: a 35.25 MHz clock cannot make 12000000 baud within "
                                               "0.5 % at 3 cycles per bit")
    assert "needs a clock of 36 MHz (divisor 3) or 48 MHz (divisor 4)" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["--baud", "12000000"], "a 12 MHz clock cannot make 12000000 baud"),
    (["--baud", "12000000", "--clock-mhz", "20"], "fastest FT2232H rate it makes is 5052632 baud"),
    (["--baud", "10000000", "--clock-mhz", "48"], "FT2232H cannot make 10000000 baud"),
    (["--window", "0"], "--window 0"),
    (["--window", "40"], "40 images in flight need a 2496-byte input buffer"),
])
def test_host_cli_refuses_a_link_it_cannot_make(argv, message, capsys):
    from asqhw.cli import main

    assert main(["host", "--simulate", "--bits", "3", *argv]) == 2
    assert message in capsys.readouterr().err


def test_accel_link_for_a_board_and_its_report(shipped_bundle):
    from golden.model import load_bundle
    from hw.eda.generate import build_top
    from hw.link.board import accel_link, link_report
    from hw.rtl.uart import LinkOnBoard

    top = build_top(load_bundle(shipped_bundle(3), vectors=False), pe=4, simd=4, mul=None)
    board = accel_link(top, clock_hz=48e6, baud=12_000_000, reply="class", window=9)
    assert isinstance(board, LinkOnBoard)
    assert (board.link.divisor, board.link.fifo_depth, board.link.out_bytes) == (4, 8 * 64, 1)
    report = link_report(top, board, baud=12_000_000, reply="class", window=9)
    assert report["kind"] == "uart" and report["fifo_bytes"] == 512 and report["bytes_out_per_image"] == 1
    assert report["images_per_s_pipelined"] == 18_750
    default = accel_link(top, clock_hz=12e6)  # what `asqhw synth` builds: 115200 baud, every logit, no buffer
    assert (default.link.divisor, default.link.fifo_depth, default.link.out_bytes) == (104, 0, 5)
    with pytest.raises(UserError, match="a 12 MHz clock cannot make 12000000 baud"):
        accel_link(top, clock_hz=12e6, baud=12_000_000)


def test_report_link_replies_give_each_replys_images_per_s_over_the_line():
    """report.json's link.replies at 36 MHz and 12 Mbaud for the default design's 6675 cycles."""
    from hw.eda.synth import _reply_rates

    link = {"bytes_in_per_image": 64, "bytes_per_s": 1_200_000.0}
    replies = _reply_rates(link, {"logits": 55, "class": 1}, cycles=6675, mhz=36.0)
    compute = 36e6 / 6675
    assert replies["compute_images_per_s"] == pytest.approx(compute, abs=0.1)
    logits, cls = replies["logits"], replies["class"]
    assert logits["images_per_s_line"] == cls["images_per_s_line"] == 18_750  # the 64 bytes in set it
    assert logits["images_per_s_one_at_a_time"] == pytest.approx(1 / (64 / 1.2e6 + 1 / compute + 55 / 1.2e6), abs=0.1)
    assert cls["images_per_s_one_at_a_time"] == pytest.approx(1 / (65 / 1.2e6 + 1 / compute), abs=0.1)
    assert logits["images_per_s_in_flight"] == cls["images_per_s_in_flight"] == pytest.approx(compute, abs=0.1)
    slow = _reply_rates({"bytes_in_per_image": 64, "bytes_per_s": 11_520.0}, {"logits": 55}, cycles=6675, mhz=36.0)
    assert slow["logits"]["images_per_s_in_flight"] == 180.0  # at 115200 baud the line, not compute, sets it


def test_synthesize_accelerator_hands_on_both_replies_bytes(monkeypatch, shipped_bundle):
    import hw.eda.synth
    from golden.model import load_bundle

    seen = {}
    monkeypatch.setattr(hw.eda.synth, "synthesize_top", lambda *args, **kwargs: seen.update(kwargs) or {})
    hw.eda.synth.synthesize_accelerator(load_bundle(shipped_bundle(3), vectors=False), "icebreaker", "/nonexistent",
                                        baud=12_000_000, reply="class", progress=False)
    assert seen["reply_bytes"] == {"logits": 55, "class": 1} and seen["baud"] == 12_000_000
    assert seen["out_beats"] == 1 and seen["reply"] == "class"


def test_synth_refuses_12_mbaud_at_a_fixed_clock_that_cannot_make_it_naming_the_ones_that_can(
        tmp_path, capsys, monkeypatch):
    import hw.eda.synth
    from asqhw.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("synthesis started: the refusal did not happen")

    monkeypatch.setattr(hw.eda.synth, "synthesize_top", refuse)
    out = tmp_path / "fast"
    assert main(["synth", "--board", "icebreaker", "--bits", "3", "--clock", "35.25", "--baud", "12000000",
                 "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("asqhw: error: a 35.25 MHz clock cannot make 12000000 baud")
    assert "needs a clock of 36 MHz (divisor 3) or 48 MHz (divisor 4)" in err[0]
    assert not out.exists()
