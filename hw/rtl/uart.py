"""A UART link that feeds a stream component from a host and sends its results back.

- :class:`UartRx` / :class:`UartTx`: 8N1 serial receiver and transmitter (LSB first, one start
  bit, one stop bit, line idle high), ``divisor`` clock cycles per bit.
- :class:`StreamLink`: a component with an ``i`` and an ``o`` stream (the accelerator) behind a
  UART: received bytes are packed little-endian into ``i`` beats, each ``o`` beat is sent back as
  little-endian bytes. Its ports are the two serial lines, so it simulates without a board.
- :class:`LinkOnBoard`: :class:`StreamLink` wired to a board's ``uart`` resource and clocked by the
  board's oscillator (the top that ``asqhw synth`` places and routes).

The host side of the protocol is :mod:`hw.link.host`.
"""

from amaranth import Module, Signal
from amaranth.lib import fifo, io, stream, wiring
from amaranth.lib.wiring import In, Out

#: The baud rate the boards use by default (both boards' FTDI bridges carry it; the host defaults to it).
DEFAULT_BAUD = 115_200
#: Fewest clock cycles per bit the receiver takes (see :class:`UartRx` for its sampling margins): 3
#: leaves one clock cycle between each sample and either edge of its bit; 2 would leave none.
MIN_DIVISOR = 3
#: How far ``clock / divisor`` may miss the baud rate at 4 or more cycles per bit (the FT2232H's own
#: rates are exact): at 4 cycles per bit the receiver samples the stop bit more than one cycle before
#: its end, which a sender 2.5 % fast reaches (:func:`sampling_margins`); 2 % leaves a fifth of a cycle.
BAUD_TOLERANCE = 0.02
#: How far ``clock / divisor`` may miss the baud rate at :data:`MIN_DIVISOR` (3) cycles per bit: 0.5 %
#: moves the stop bit's sample by 0.15 of a cycle, of the one cycle it has on either side (a sender
#: up to 3.3 % fast or 3.7 % slow is still read, :func:`sampling_margins`), leaving 0.85 of a cycle
#: (24 ns at 36 MHz, 12 Mbaud) for the line's edge distortion and the input flip-flop's aperture. The
#: clocks that use it make their rate exactly (36 MHz for the FT2232H's 12 Mbaud, 24 MHz for 8 Mbaud).
FEWEST_CYCLES_TOLERANCE = 0.005


def baud_tolerance(divisor: int) -> float:
    """How far ``clock / divisor`` may miss the baud rate at ``divisor`` cycles per bit."""
    return FEWEST_CYCLES_TOLERANCE if divisor <= MIN_DIVISOR else BAUD_TOLERANCE


def sampling_margins(divisor: int) -> dict:
    """Where :class:`UartRx` samples a bit at ``divisor`` cycles per bit, and the rate errors it survives.

    The receiver sees the start edge at the first clock edge after it (the synchronizer's flip-flops
    delay every sample alike, so they do not count), then samples the first data bit
    ``K = 3 * divisor // 2`` cycles later and each following bit ``divisor`` cycles after the last.
    The start edge falls anywhere within the clock cycle before the edge that sees it, so each sample
    lands between ``K - divisor`` and ``K - divisor + 1`` cycles after its bit's start edge:

    - ``early_cycles = K - divisor``: the least time from a bit's start edge to its sample;
    - ``late_cycles = 2 * divisor - K - 1``: the least time from a sample to its bit's end.

    A sender whose bits last ``1 + e`` times the receiver's moves the stop bit (bit 9 after the start)
    by ``9 * divisor * e`` cycles at its start and ``10 * divisor * e`` at its end, so it is read while
    ``e < early / (9 * divisor)`` (slow) and ``-e < late / (10 * divisor)`` (fast): ``slowest`` and
    ``fastest``. At 3 cycles per bit: 1 cycle each side, a sender 3.7 % slow or 3.3 % fast; at 4: 2
    and 1 cycles, 5.6 % and 2.5 %. These hold for clean edges; the tolerances
    (:func:`baud_tolerance`) keep the rest of the margin for the line.
    """
    first = 3 * divisor // 2
    early, late = first - divisor, 2 * divisor - first - 1
    return {"first_sample": first, "early_cycles": early, "late_cycles": late,
            "slowest": early / (9 * divisor), "fastest": late / (10 * divisor)}


def divisor_for(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clock_hz``.

    Raises ValueError, saying why and the fastest rate the clock makes, when the divisor would be
    under :data:`MIN_DIVISOR` or ``clock_hz / divisor`` would miss ``baud`` by more than
    :func:`baud_tolerance` (:data:`BAUD_TOLERANCE`; :data:`FEWEST_CYCLES_TOLERANCE` at 3 cycles per bit).
    """
    mhz = clock_hz / 1e6
    divisor = round(clock_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"a {mhz:g} MHz clock cannot make {baud} baud: the UART needs at least {MIN_DIVISOR} "
                         f"clock cycles per bit, so at most {clock_hz / MIN_DIVISOR:.0f} baud")
    error = (clock_hz / divisor - baud) / baud
    tolerance = baud_tolerance(divisor)
    if abs(error) > tolerance:
        at = f" at {divisor} cycles per bit" if divisor <= MIN_DIVISOR else ""
        raise ValueError(f"a {mhz:g} MHz clock cannot make {baud} baud within {100 * tolerance:g} %{at}: divisor "
                         f"{divisor} gives {clock_hz / divisor:.0f} baud ({100 * error:+.1f} %)")
    return divisor


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor must be an int >= {MIN_DIVISOR} cycles per bit, not {divisor!r}")


class UartRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= :data:`MIN_DIVISOR`, 3).

    Ports
    -----
    rx : In(1)
        The serial line (idle high); synchronised by two flip-flops inside.
    o : Out(stream.Signature(8))
        One beat per received byte, valid from the middle of the stop bit until taken.
    error : Out(1)
        Pulses for a byte whose stop bit was low (framing error) or that arrived while the previous
        byte was still waiting on ``o`` (overrun); such a byte is dropped. After a low stop bit the
        receiver waits for the line to go high before it looks for the next start bit.

    Latency: a byte is offered 2 + 9.5 bit times after its start edge. Throughput: one byte per
    10 bit times.

    Sampling: one sample per bit, ``3 * divisor // 2`` cycles after the start edge is seen, then every
    ``divisor`` cycles; at 3 cycles per bit each sample falls 1 to 2 cycles after its bit's start edge,
    one cycle clear of either edge (:func:`sampling_margins` derives it and the rate errors it allows).
    Back looking for a start edge the cycle after the stop bit's sample, it sees the next frame's start
    edge at the first clock edge after it whenever that stop bit was read high.
    """

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        sync1, line = Signal(init=1), Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]
        timer = Signal(range(self.divisor * 3 // 2 + 1))
        bit = Signal(range(9))
        shift = Signal(8)
        m.d.sync += self.error.eq(0)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("idle"):
                with m.If(~line):  # start edge: sample the data bits 1.5 bit times later
                    m.d.sync += [timer.eq(self.divisor * 3 // 2 - 1), bit.eq(0)]
                    m.next = "data"
            with m.State("data"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(bit + 1)]
                    with m.If(bit == 8):  # the stop bit
                        with m.If(line & ~(self.o.valid & ~self.o.ready)):
                            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        with m.Else():
                            m.d.sync += self.error.eq(1)
                        # a low stop bit (framing error, break): wait for the idle line to resync
                        m.next = "idle"
                        with m.If(~line):
                            m.next = "break"
                    with m.Else():
                        m.d.sync += shift.eq((shift >> 1) | (line << 7))
            with m.State("break"):
                with m.If(line):
                    m.next = "idle"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= :data:`MIN_DIVISOR`, 3; any divisor makes whole-cycle bits).

    Ports
    -----
    i : In(stream.Signature(8))
        Bytes to send; taken when the line is idle.
    tx : Out(1)
        The serial line, idle high.

    Throughput: one byte per 10 bit times; a byte taken at cycle n starts its start bit at n + 1.
    """

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        frame = Signal(10, init=0x3FF)  # stop bit, 8 data bits, start bit; shifted out LSB first
        bits_left = Signal(range(11))
        # Counts divisor - 2 down to -1: a bit ends when the sign bit is set, a flip-flop, so the
        # decision is no compare that synthesis could fold into the decrement's carry chain.
        timer = Signal(range(-1, self.divisor - 1))
        m.d.comb += [self.tx.eq(frame[0]), self.i.ready.eq(bits_left == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [frame.eq((1 << 9) | (self.i.payload << 1)), bits_left.eq(10),
                         timer.eq(self.divisor - 2)]
        with m.Elif(bits_left != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer[-1]):
                m.d.sync += [frame.eq((frame >> 1) | (1 << 9)), bits_left.eq(bits_left - 1),
                             timer.eq(self.divisor - 2)]
        return m


def _shape_width(shape) -> int:
    from amaranth.hdl import Shape

    return Shape.cast(shape).width


class StreamLink(wiring.Component):
    """A stream component behind a UART.

    Parameters
    ----------
    inner : wiring.Component
        Has ``i: In(stream.Signature(...))`` and ``o: Out(stream.Signature(...))`` (the accelerator).
    divisor : int
        Clock cycles per UART bit.
    select : callable, optional
        ``select(o_payload) -> Value``: the part of each ``o`` beat sent back (default: all of it).
    select_width : int, optional
        Width of what ``select`` returns (required with ``select``).
    keep : callable, optional
        ``keep(o_payload) -> Value``: send back only the ``o`` beats for which it is 1 (the others
        are taken at once and dropped); default: every beat.
    fifo_depth : int
        Received bytes buffered before the ``i`` stream (0: none, only the receiver's one byte).
        The boards' serial lines have no flow control, so a byte that arrives while ``i`` does
        not take it and the buffer is full is lost: with a buffer of ``fifo_depth`` bytes the host
        may send that many bytes ahead of what ``i`` takes (e.g. the next images while one is
        computed).

    Protocol: each ``i`` beat is ``ceil(width(i.payload) / 8)`` bytes, little-endian; each ``o``
    beat (that ``keep`` keeps) comes back as ``ceil(width / 8)`` bytes, little-endian, of what
    ``select`` picks.

    Ports
    -----
    rx : In(1)
        Serial line from the host.
    tx : Out(1)
        Serial line to the host.
    """

    def __init__(self, inner, divisor: int, *, select=None, select_width: int | None = None, keep=None,
                 fifo_depth: int = 0):
        _check_divisor(divisor)
        if not isinstance(fifo_depth, int) or fifo_depth < 0:
            raise ValueError(f"StreamLink fifo_depth must be an int >= 0 bytes, not {fifo_depth!r}")
        self.keep, self.fifo_depth = keep, fifo_depth
        members = inner.signature.members
        for port in ("i", "o"):
            if port not in members or not isinstance(members[port].signature, stream.Signature):
                raise ValueError(f"StreamLink needs a component with stream ports i and o, not {inner!r}")
        if (select is None) != (select_width is None):
            raise ValueError("StreamLink: give select and select_width together")
        self.inner, self.divisor, self.select = inner, divisor, select
        self.in_width = _shape_width(members["i"].signature.members["payload"].shape)
        out_width = _shape_width(members["o"].signature.members["payload"].shape)
        self.out_width = out_width if select is None else select_width
        self.in_bytes = -(-self.in_width // 8)
        self.out_bytes = -(-self.out_width // 8)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        m.submodules.uart_rx = rx = UartRx(self.divisor)
        m.submodules.uart_tx = tx = UartTx(self.divisor)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        received = rx.o
        if self.fifo_depth:
            # Buffered in block RAM (SyncFIFOBuffered keeps its storage in a memory).
            m.submodules.rx_fifo = buffer = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth)
            m.d.comb += [buffer.w_data.eq(rx.o.payload), buffer.w_en.eq(rx.o.valid), rx.o.ready.eq(buffer.w_rdy)]
            received = stream.Signature(8).create(path=("rx_buffered",))
            m.d.comb += [received.payload.eq(buffer.r_data), received.valid.eq(buffer.r_rdy),
                         buffer.r_en.eq(received.ready)]
        self._pack_input(m, received, inner)
        self._unpack_output(m, inner, tx)
        return m

    def _pack_input(self, m, rx, inner):
        """Collect in_bytes received bytes (the byte stream ``rx``) into one ``i`` beat (little-endian)."""
        word = Signal(8 * self.in_bytes)
        count = Signal(range(self.in_bytes + 1))
        full = count == self.in_bytes
        m.d.comb += [
            rx.ready.eq(~full),
            inner.i.valid.eq(full),
            inner.i.payload.eq(word[: self.in_width]),
        ]
        with m.If(inner.i.valid & inner.i.ready):
            m.d.sync += count.eq(0)
        with m.Elif(rx.valid & rx.ready):
            m.d.sync += [word.eq((word >> 8) | (rx.payload << (8 * self.in_bytes - 8))),
                         count.eq(count + 1)]

    def _unpack_output(self, m, inner, tx):
        """Send each ``o`` beat that keep keeps (or what select picks of it) as out_bytes bytes, LSB first."""
        value = inner.o.payload if self.select is None else self.select(inner.o.payload)
        word = Signal(8 * self.out_bytes)
        left = Signal(range(self.out_bytes + 1))
        m.d.comb += [
            inner.o.ready.eq(left == 0),
            tx.i.valid.eq(left != 0),
            tx.i.payload.eq(word[:8]),
        ]
        kept = 1 if self.keep is None else self.keep(inner.o.payload)
        with m.If(inner.o.valid & inner.o.ready & kept):
            m.d.sync += [word.eq(value), left.eq(self.out_bytes)]
        with m.Elif(tx.i.valid & tx.i.ready):
            m.d.sync += [word.eq(word >> 8), left.eq(left - 1)]


class LinkOnBoard(wiring.Component):
    """:class:`StreamLink` on a board: its UART pins, its oscillator as the clock.

    Parameters
    ----------
    inner : wiring.Component
        The stream component (the accelerator).
    clock_hz : float
        The board's default clock (sets the UART divisor for ``baud``).
    baud : int
        Serial rate; the host must use the same.
    select, select_width, keep, fifo_depth
        As in :class:`StreamLink`.
    """

    def __init__(self, inner, clock_hz: float, *, baud: int = DEFAULT_BAUD, select=None,
                 select_width=None, keep=None, fifo_depth: int = 0):
        self.link = StreamLink(inner, divisor_for(clock_hz, baud), select=select, select_width=select_width,
                               keep=keep, fifo_depth=fifo_depth)
        self.baud = baud
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.rx_buf = rx_buf = io.FFBuffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.FFBuffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx_buf.i), tx_buf.o.eq(link.tx)]
        return m


