"""The host side of the serial link: send images, read logits and classes.

Protocol (the board side is :class:`hw.rtl.uart.StreamLink` around ``asq_accel``):

- host -> board: one image = its input codes (conv1's signed int8 codes, C*H*W of them in
  (channel, row, column) order), one byte each, two's complement;
- board -> host, reply ``"logits"`` (the default build): one beat per ``o`` beat of the accelerator,
  ``out_bytes`` bytes little-endian each (5 for ``asq_accel``: bits 0..31 the signed value, bit 32
  ``last``): the logits with ``last = 0`` in class order, then the predicted class with ``last = 1``;
- board -> host, reply ``"class"`` (built with the class-only reply): one byte per image, the class.

The graph engine (a graph bundle that is not a chain, :mod:`hw.link.engine_board`) takes its input
codes the same way and has the same class-only reply; its logits reply is its own output beats
(:class:`EngineBeats`: the values only, no class beat), and the host takes the class, the first
largest value, as the golden model does.

The boards' serial lines have no flow control: the host keeps at most ``window`` images in flight
(sent, reply not yet read), and a board built with an input buffer of ``(window - 1) * image bytes``
(:func:`hw.link.board.fifo_depth_for`) holds the ones it has not started. ``window = 1`` (the default
build, no buffer) sends each image after the previous reply.

A *port* is anything with ``write(bytes)`` and ``read(n) -> bytes``: :class:`SerialPort` (a real
board: a tty or a pyftdi ``ftdi://`` URL, through pyserial), or :class:`SimulatedBoard` (the same link
simulated in-process with Amaranth's simulator, for tests and ``asqhw host --simulate``).
"""

from dataclasses import dataclass

import numpy as np

from asqhw.errors import UserError
from golden.formats import OUT_BEAT_BYTES, OUT_LAST_BIT, decode_out_beat
from hw.rtl.accel.argmax import REPLIES

#: Bytes per output beat of asq_accel's ``{value: signed(OUT_WIDTH), last: 1}`` payload.
ACCEL_OUT_BYTES = OUT_BEAT_BYTES


@dataclass
class Result:
    """What the board answered for one image (``logits`` is None for a class-only reply)."""

    logits: list | None
    cls: int


def encode_codes(codes) -> bytes:
    """Input codes (ints in -128..127) as bytes; UserError for a code outside int8."""
    values = np.asarray(codes, dtype=np.int64).ravel()
    bad = values[(values < -128) | (values > 127)]
    if bad.size:
        raise UserError(f"input code {int(bad[0])} is outside int8 (-128..127); the host sends conv1's "
                        "signed 8-bit codes")
    return bytes(int(v) & 0xFF for v in values)


def decode_beat(raw: bytes) -> tuple[int, bool]:
    """One output beat -> (signed value, last)."""
    return decode_out_beat(int.from_bytes(raw, "little"))


#: What a result beat must look like, for the messages about one that does not.
BEAT_LAYOUT = (f"{ACCEL_OUT_BYTES}-byte beats: a little-endian signed 32-bit value, then 0x00 (a logit) or "
               "0x01 (the class, after the logits)")
#: What to check when the board's bytes are not this protocol.
PROTOCOL_FIX = ("check the baud rate (--baud) and that the board runs the `asqhw synth` bitstream of this "
                "bundle")


def _hex(raw: bytes) -> str:
    return " ".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True)
class EngineBeats:
    """The graph engine's logits reply: per output value one beat of :attr:`bytes` bytes, little-endian,
    the value in ``width`` bits (two's complement) and ``last`` (bit ``width``) on the final value;
    nothing above it. No class beat: the class is the first largest value."""

    width: int

    @property
    def bytes(self) -> int:
        return -(-(self.width + 1) // 8)

    def layout(self) -> str:
        return (f"{self.bytes}-byte beats: a little-endian signed {self.width}-bit value, then bit {self.width} set "
                "on the last value and nothing above it")

    def decode(self, raw: bytes) -> tuple[int, bool] | None:
        """(signed value, last) of one beat; None when bits above ``last`` are set."""
        word = int.from_bytes(raw, "little")
        if word >> (self.width + 1):
            return None
        value = word & ((1 << self.width) - 1)
        return value - (1 << self.width) if value >> (self.width - 1) else value, bool(word >> self.width)


def classify(port, codes, *, classes: int | None = None, max_beats: int = 1024, reply: str = "logits",
             engine: EngineBeats | None = None) -> Result:
    """Send one image's codes through ``port`` and read its reply (:func:`read_reply`)."""
    port.write(encode_codes(codes))
    return read_reply(port, classes=classes, max_beats=max_beats, reply=reply, engine=engine)


def read_reply(port, *, classes: int | None = None, max_beats: int = 1024, reply: str = "logits",
               engine: EngineBeats | None = None) -> Result:
    """Read one image's reply from ``port``: beats up to the class (``last``), or the class byte.

    Every beat is checked against the protocol (the byte above the value holds only ``last``), and
    with ``classes`` the answer must be exactly ``classes`` logits then a class in ``0..classes-1``
    (a class-only reply: a class in that range): anything else raises :class:`UserError` saying what
    was received and what was expected. ``engine``: the board runs the graph engine, whose logits
    reply is :class:`EngineBeats` (the class-only reply is the same byte).
    """
    if reply not in REPLIES:
        raise ValueError(f"reply {reply!r} is not one of {REPLIES}")
    if engine is not None and reply == "logits":
        return _read_engine_logits(port, engine, classes=classes, max_beats=max_beats)
    if reply == "class":
        raw = port.read(1)
        if len(raw) != 1:
            raise UserError("the board answered no class byte before the timeout; check the port, the baud rate, "
                            "that the bitstream is loaded and that it was built with the class-only reply")
        if classes is not None and raw[0] >= classes:
            raise UserError(f"the board answered class byte {raw[0]}; expected a class in 0..{classes - 1}; "
                            f"{PROTOCOL_FIX} with the class-only reply (--reply class)")
        return Result(logits=None, cls=raw[0])
    logits = []
    for _ in range(max_beats):
        raw = port.read(ACCEL_OUT_BYTES)
        if len(raw) != ACCEL_OUT_BYTES:
            got = f" ({_hex(raw)})" if raw else ""
            raise UserError(f"the board answered {len(raw)} of {ACCEL_OUT_BYTES} bytes of a beat{got} before "
                            "the timeout; check the port, the baud rate and that the bitstream is loaded")
        word = int.from_bytes(raw, "little")
        if word >> (OUT_LAST_BIT + 1):
            raise UserError(f"the board sent {_hex(raw)} as beat {len(logits)} of an image; expected "
                            f"{BEAT_LAYOUT}; {PROTOCOL_FIX}")
        value, last = decode_beat(raw)
        if last:
            if classes is not None and (len(logits) != classes or not 0 <= value < classes):
                raise UserError(f"the board answered {len(logits)} logits then class {value}; expected "
                                f"{classes} logits then a class in 0..{classes - 1}; {PROTOCOL_FIX}")
            return Result(logits=logits, cls=value)
        logits.append(value)
        if classes is not None and len(logits) > classes:
            raise UserError(f"the board sent more than {classes} logits without a class beat (last beat "
                            f"{_hex(raw)}); expected {BEAT_LAYOUT}; {PROTOCOL_FIX}")
    raise UserError(f"no class beat after {max_beats} beats: the board does not speak this protocol")


def _read_engine_logits(port, engine: EngineBeats, *, classes: int | None, max_beats: int) -> Result:
    """The graph engine's output values up to the ``last`` one; the class is the first largest."""
    logits = []
    for _ in range(max_beats):
        raw = port.read(engine.bytes)
        if len(raw) != engine.bytes:
            got = f" ({_hex(raw)})" if raw else ""
            raise UserError(f"the board answered {len(raw)} of {engine.bytes} bytes of a beat{got} before "
                            "the timeout; check the port, the baud rate and that the bitstream is loaded")
        beat = engine.decode(raw)
        if beat is None:
            raise UserError(f"the board sent {_hex(raw)} as beat {len(logits)} of an image; expected the graph "
                            f"engine's {engine.layout()}; {PROTOCOL_FIX}")
        value, last = beat
        logits.append(value)
        if last:
            if classes is not None and len(logits) != classes:
                raise UserError(f"the board answered {len(logits)} values; expected {classes} (the graph engine's "
                                f"{engine.layout()}); {PROTOCOL_FIX}")
            return Result(logits=logits, cls=int(np.argmax(logits)))
        if classes is not None and len(logits) >= classes:
            raise UserError(f"the board sent {classes} values without the last one marked (last beat {_hex(raw)}); "
                            f"expected the graph engine's {engine.layout()}; {PROTOCOL_FIX}")
    raise UserError(f"no last value after {max_beats} beats: the board does not speak the graph engine's protocol")


def run_images(port, images, *, classes: int | None = None, progress=None, reply: str = "logits",
               window: int = 1, engine: EngineBeats | None = None, image_prefix: bytes = b"") -> list[Result]:
    """Send every image in ``images`` (N x codes) and read the replies, ``window`` images in flight.

    ``window = 1`` sends each image after the previous reply; more keeps the link busy while the
    board computes, and needs a board that buffers ``window - 1`` images. ``progress``: a tqdm bar or None.
    ``engine``: the board runs the graph engine (:func:`read_reply`). ``image_prefix``: bytes sent
    before each image (an engine loading its weights: the image command,
    :func:`hw.link.weights.prepare_board`).
    """
    if window < 1:
        raise ValueError(f"window {window} must be at least 1 image")
    images = list(images)
    results, sent = [], 0
    while len(results) < len(images):
        while sent < len(images) and sent - len(results) < window:
            port.write(image_prefix + encode_codes(images[sent]))
            sent += 1
        try:
            results.append(read_reply(port, classes=classes, reply=reply, engine=engine))
        except UserError as err:
            if window == 1:
                raise
            # The likeliest cause: a board without the buffer, which lost the bytes sent ahead.
            raise UserError(f"{err}; with {window} images in flight the board must buffer {window - 1} images "
                            f"(a bitstream built for --window {window})") from None
        if progress is not None:
            progress.update(1)
    return results


# ----------------------------------------------------------------------------------------------
# A real board: a tty


class SerialPort:
    """A board's serial port at ``baud`` (8N1, no flow control), read with a timeout, through pyserial.

    ``path`` is a tty (``/dev/ttyUSB1``: the kernel's FTDI driver, which makes every FT2232H rate up
    to 12 Mbaud) or a pyftdi URL (``ftdi://ftdi:2232h/2``: the FT2232H's second channel through
    libusb, no kernel driver). Fast rates ask the driver for low latency (the FT2232H otherwise holds
    a short reply up to 16 ms before it sends it over USB).
    """

    def __init__(self, path, baud: int = 115_200, timeout: float = 2.0):
        import serial

        if str(path).startswith("ftdi://"):
            import pyftdi.serialext  # noqa: F401  (registers the ftdi:// URLs with pyserial)
        self.timeout = timeout
        try:
            self.serial = serial.serial_for_url(str(path), baudrate=baud, timeout=timeout, write_timeout=timeout)
        except serial.SerialException as err:
            if err.errno is not None:  # the open itself failed
                raise UserError(f"cannot open serial port {path}: {err.strerror}; is the board plugged in "
                                "(iCEBreaker: the second FTDI port, usually /dev/ttyUSB1)?") from None
            raise UserError(f"{path} is not a serial port ({err}); pass the board's serial device with "
                            "--port (iCEBreaker: the second FTDI port, usually /dev/ttyUSB1)") from None
        except (ValueError, OSError, ImportError) as err:  # pyftdi: no libusb, no such device, a rate it cannot make
            raise UserError(f"cannot open serial port {path} at {baud} baud: {err}; an ftdi:// URL needs libusb "
                            "(Debian: libusb-1.0-0) and the FT2232H channel free of the kernel's ftdi_sio driver "
                            "(or use its tty, e.g. /dev/ttyUSB1)") from None
        if baud > 115_200 and hasattr(self.serial, "set_low_latency_mode"):
            try:
                self.serial.set_low_latency_mode(True)
            except (ValueError, OSError, NotImplementedError):
                pass  # not a USB serial port (a pty): there is no latency timer to shorten
        self.serial.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self.serial.write(data)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only when ``timeout`` seconds pass first."""
        return self.serial.read(n)

    def close(self) -> None:
        self.serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------------------------
# The same link, simulated


class SimulatedBoard:
    """A :class:`hw.rtl.uart.StreamLink` simulated in-process, spoken to as a port.

    Bytes written are bit-banged onto the link's ``rx`` line at its divisor, back to back as the
    FT2232H sends them; its ``tx`` line is decoded into bytes that ``read`` returns. ``read``
    advances simulated time until the bytes are there or ``max_cycles`` clock cycles pass (then it
    returns what it has, like a tty timeout). The clock cycle each byte arrived is kept
    (:meth:`cycles_per_reply`).
    """

    #: Cycles simulated per step while waiting for bytes: how late the simulated host sees a reply
    #: (a real one sees it a USB round trip later, 0.1 to 1 ms).
    CHUNK = 250

    def __init__(self, link, *, max_cycles: int = 2_000_000):
        from amaranth.sim import Simulator

        self.link, self.max_cycles = link, max_cycles
        self.to_board, self.from_board = bytearray(), bytearray()
        self.sim = Simulator(link)
        self.period = 1e-6
        self.sim.add_clock(self.period)
        self.sim.add_testbench(self._drive_rx, background=True)
        self.sim.add_testbench(self._watch_tx, background=True)
        self.cycles = 0
        self.now = 0  # clock cycles simulated, counted by the rx driver (it always waits on the clock)
        self.arrivals = []  # the cycle each byte from the board arrived

    async def _drive_rx(self, ctx):
        div = self.link.divisor
        ctx.set(self.link.rx, 1)
        while True:
            if not self.to_board:
                await ctx.tick()
                self.now += 1
                continue
            byte = self.to_board.pop(0)
            for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                ctx.set(self.link.rx, bit)
                await ctx.tick().repeat(div)
                self.now += div

    async def _watch_tx(self, ctx):
        div = self.link.divisor
        while True:
            await ctx.negedge(self.link.tx)  # a start bit
            await ctx.tick().repeat(div + div // 2)  # middle of data bit 0
            byte = 0
            for i in range(8):
                byte |= ctx.get(self.link.tx) << i
                await ctx.tick().repeat(div)
            if ctx.get(self.link.tx) != 1:
                raise AssertionError("the board sent a byte without a stop bit")
            self.from_board.append(byte)
            self.arrivals.append(self.now)

    def write(self, data: bytes) -> None:
        self.to_board += data

    def read(self, n: int) -> bytes:
        start = self.cycles
        while len(self.from_board) < n and self.cycles - start < self.max_cycles:
            self.cycles += self.CHUNK
            self.sim.run_until(self.cycles * self.period)
        out, self.from_board = bytes(self.from_board[:n]), self.from_board[n:]
        return out

    def cycles_per_reply(self, reply_bytes: int) -> float | None:
        """Clock cycles between replies of ``reply_bytes`` bytes, from the first reply's end to the last's.

        With images in flight this is the steady rate the link and the design keep together (None
        before two replies).
        """
        replies = len(self.arrivals) // reply_bytes
        if replies < 2:
            return None
        ends = self.arrivals[reply_bytes - 1::reply_bytes]
        return (ends[replies - 1] - ends[0]) / (replies - 1)
