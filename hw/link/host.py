"""The host side of the serial link: send images, read logits and classes.

Protocol (the board side is :class:`hw.rtl.uart.StreamLink` around ``asq_accel``):

- host -> board: one image = its input codes (conv1's signed int8 codes, C*H*W of them in
  (channel, row, column) order), one byte each, two's complement;
- board -> host: one beat per ``o`` beat of the accelerator, ``out_bytes`` bytes little-endian each
  (5 for ``asq_accel``: bits 0..31 the signed value, bit 32 ``last``): the logits with
  ``last = 0`` in class order, then the predicted class with ``last = 1``.

A *port* is anything with ``write(bytes)`` and ``read(n) -> bytes``: :class:`SerialPort` (a real
board: a tty opened with the standard library's termios, no extra package), or
:class:`SimulatedBoard` (the same link simulated in-process with Amaranth's simulator, for tests and
``asqhw host --simulate``).
"""

import os
import select
import termios
from dataclasses import dataclass

import numpy as np

from asqhw.errors import UserError
from golden.formats import OUT_BEAT_BYTES, OUT_LAST_BIT, decode_out_beat

#: Bytes per output beat of asq_accel's ``{value: signed(OUT_WIDTH), last: 1}`` payload.
ACCEL_OUT_BYTES = OUT_BEAT_BYTES


@dataclass
class Result:
    """What the board answered for one image."""

    logits: list
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


def classify(port, codes, *, classes: int | None = None, max_beats: int = 1024) -> Result:
    """Send one image's codes through ``port`` and read beats up to the class (``last``).

    Every beat is checked against the protocol (the byte above the value holds only ``last``), and
    with ``classes`` the answer must be exactly ``classes`` logits then a class in ``0..classes-1``:
    anything else raises :class:`UserError` saying what was received and what was expected.
    """
    port.write(encode_codes(codes))
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


def run_images(port, images, *, classes: int | None = None, progress=None) -> list[Result]:
    """:func:`classify` every image in ``images`` (N x codes); ``progress`` is a tqdm bar or None."""
    results = []
    for codes in images:
        results.append(classify(port, codes, classes=classes))
        if progress is not None:
            progress.update(1)
    return results


# ----------------------------------------------------------------------------------------------
# A real board: a tty


_BAUDS = {rate: getattr(termios, f"B{rate}") for rate in (9600, 19200, 38400, 57600, 115200, 230400,
                                                          460800, 921600, 1000000, 2000000, 3000000)
          if hasattr(termios, f"B{rate}")}


class SerialPort:
    """A serial tty in raw mode at ``baud`` (8N1, no flow control), read with a timeout.

    Uses only the standard library (``termios``), so a board needs no extra Python package.
    """

    def __init__(self, path, baud: int = 115_200, timeout: float = 2.0):
        if baud not in _BAUDS:
            raise UserError(f"baud rate {baud} is not one of {sorted(_BAUDS)}")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        except OSError as err:
            raise UserError(f"cannot open serial port {path}: {err.strerror}; is the board plugged in "
                            "(iCEBreaker: the second FTDI port, usually /dev/ttyUSB1)?") from None
        self.timeout = timeout
        try:
            self._configure(baud)
        except termios.error as err:
            os.close(self.fd)
            why = err.args[1] if len(err.args) > 1 else str(err)
            raise UserError(f"{path} is not a serial port ({why}); pass the board's serial device with "
                            "--port (iCEBreaker: the second FTDI port, usually /dev/ttyUSB1)") from None

    def _configure(self, baud):
        attrs = termios.tcgetattr(self.fd)
        iflag, oflag, cflag, lflag, _, _, cc = attrs
        iflag = 0
        oflag = 0
        lflag = 0
        cflag = termios.CS8 | termios.CREAD | termios.CLOCAL
        cc[termios.VMIN], cc[termios.VTIME] = 0, 0
        speed = _BAUDS[baud]
        termios.tcsetattr(self.fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only when ``timeout`` seconds pass without a byte."""
        out = bytearray()
        while len(out) < n:
            ready, _, _ = select.select([self.fd], [], [], self.timeout)
            if not ready:
                break
            out += os.read(self.fd, n - len(out))
        return bytes(out)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------------------------
# The same link, simulated


class SimulatedBoard:
    """A :class:`hw.rtl.uart.StreamLink` simulated in-process, spoken to as a port.

    Bytes written are bit-banged onto the link's ``rx`` line at its divisor; its ``tx`` line is
    decoded into bytes that ``read`` returns. ``read`` advances simulated time until the bytes are
    there or ``max_cycles`` clock cycles pass (then it returns what it has, like a tty timeout).
    """

    CHUNK = 2000  # cycles simulated per step while waiting for bytes

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

    async def _drive_rx(self, ctx):
        div = self.link.divisor
        ctx.set(self.link.rx, 1)
        while True:
            if not self.to_board:
                await ctx.tick()
                continue
            byte = self.to_board.pop(0)
            for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                ctx.set(self.link.rx, bit)
                await ctx.tick().repeat(div)

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

    def write(self, data: bytes) -> None:
        self.to_board += data

    def read(self, n: int) -> bytes:
        start = self.cycles
        while len(self.from_board) < n and self.cycles - start < self.max_cycles:
            self.cycles += self.CHUNK
            self.sim.run_until(self.cycles * self.period)
        out, self.from_board = bytes(self.from_board[:n]), self.from_board[n:]
        return out
