"""What the serial link can carry: the FT2232H's baud rates, the design clock's, and images per second.

The iCEBreaker's USB bridge (an FT2232H, channel B, wired to the FPGA's UART pins with no
flow-control lines) makes the baud rates ``12 MHz / n`` for ``n`` = 1, 1.5 and 2, 2.125, 2.25, ...
(eighths from 2 on): 12, 8, 6, 5.647, ... Mbaud. The FPGA side makes ``clock / divisor`` with at least
:data:`hw.rtl.uart.MIN_DIVISOR` (3) clock cycles per bit. A link works when both ends make the same
rate within :func:`hw.rtl.uart.baud_tolerance` (2 %; 0.5 % at 3 cycles per bit); :func:`check_baud`
says so, or why not and what would. 12 Mbaud, 1.2 MB/s each way, takes a 36 MHz clock (3 cycles per
bit, exact) or 48 MHz (4). (The check is the
iCEBreaker's: the ULX3S's FT231X has other rates and stops at 3 Mbaud.)

:func:`link_budget` gives the bytes per image each way and the images per second the line allows, for
other code (benchmarks, reports) to call.
"""

from asqhw.errors import UserError
from hw.rtl.accel.argmax import REPLIES
from hw.rtl.uart import BAUD_TOLERANCE, DEFAULT_BAUD, MIN_DIVISOR, baud_tolerance, divisor_for

__all__ = ["DEFAULT_BAUD", "REPLIES", "check_baud", "fastest_baud", "ft2232h_baud", "ftdi_makes", "link_budget",
           "link_budget_at_clock"]

#: The FT2232H's baud generator: 120 MHz / 10 (its "hi-speed" mode, used for every rate >= 1200).
FTDI_BAUD_CLOCK_HZ = 12_000_000
#: Bits on the line per byte (8N1: a start bit, 8 data bits, a stop bit).
LINE_BITS_PER_BYTE = 10


def ft2232h_baud(baud: float) -> float:
    """The rate the FT2232H actually makes when asked for ``baud``.

    Its divisor is counted in eighths (rounded to the nearest), and below 2 only 1 and 1.5 exist
    (FTDI AN232B-05; the Linux ftdi_sio driver and pyftdi compute it the same way).
    """
    if baud <= 0:
        raise ValueError(f"baud rate {baud} must be positive")
    eighths = max(round(8 * FTDI_BAUD_CLOCK_HZ / baud), 8)
    if eighths < 16:  # 1, 1.5 or 2: the only divisors below 2
        eighths = min((8, 12, 16), key=lambda e: abs(FTDI_BAUD_CLOCK_HZ * 8 / e - baud))
    return FTDI_BAUD_CLOCK_HZ * 8 / eighths


def ftdi_makes(baud: float) -> bool:
    """Whether the FT2232H makes ``baud`` within :data:`BAUD_TOLERANCE`."""
    return abs(ft2232h_baud(baud) - baud) <= BAUD_TOLERANCE * baud


def _fast_ftdi_bauds():
    """The FT2232H's rates from 12 Mbaud down to 1 Mbaud, fastest first (rounded to whole baud)."""
    return [round(FTDI_BAUD_CLOCK_HZ * 8 / e) for e in (8, 12, *range(16, 97))]


def fastest_baud(clock_hz: float) -> int | None:
    """The fastest FT2232H rate (>= 1 Mbaud, rounded to whole baud) that ``clock_hz`` makes, or None."""
    for baud in _fast_ftdi_bauds():
        try:
            divisor_for(clock_hz, baud)
        except ValueError:
            continue
        return baud
    return None


def check_baud(baud: int, clock_hz: float | None = None) -> int | None:
    """Check that the FT2232H (and, with ``clock_hz``, the design clock) make ``baud``; the divisor.

    Returns the UART divisor for ``clock_hz`` (None without a clock). Raises :class:`UserError` that
    says which end cannot make the rate and which rates it can. At 3 cycles per bit the clock's rate
    must also lie within :func:`hw.rtl.uart.baud_tolerance` of the rate the FT2232H really makes (the
    two ends' errors together must stay inside the receiver's one-cycle margin).
    """
    if baud <= 0:
        raise UserError(f"--baud {baud} must be positive")
    if not ftdi_makes(baud):
        near = ft2232h_baud(baud)
        raise UserError(f"the iCEBreaker's FT2232H cannot make {baud} baud within {100 * BAUD_TOLERANCE:g} % (the "
                        f"nearest it makes is {near:.0f}); it makes 12 MHz / n for n = 1, 1.5, 2, 2.125, 2.25, "
                        "... (e.g. 12000000, 8000000, 6000000, 4000000, 3000000, 2000000, 1000000, 115200)")
    if clock_hz is None:
        return None
    try:
        divisor = divisor_for(clock_hz, baud)
    except ValueError as err:
        best = fastest_baud(clock_hz)
        hint = (f"the fastest FT2232H rate it makes is {best} baud" if best else
                f"it makes no FT2232H rate of 1 Mbaud or more (at least {MIN_DIVISOR} cycles per bit)")
        low = max(MIN_DIVISOR, int(clock_hz // baud))
        fix = (f"{baud} baud needs a clock of {baud * low / 1e6:g} MHz (divisor {low}) or "
               f"{baud * (low + 1) / 1e6:g} MHz (divisor {low + 1})")
        raise UserError(f"{err}; {hint}; {fix}") from None
    made, theirs = clock_hz / divisor, ft2232h_baud(baud)
    if divisor <= MIN_DIVISOR and abs(made - theirs) > baud_tolerance(divisor) * theirs:
        # at 3 cycles per bit the margin is too small for both ends' errors: the clock against the FT2232H's rate
        raise UserError(f"--baud {baud}: the FT2232H makes {theirs:.0f} baud and a {clock_hz / 1e6:g} MHz clock "
                        f"{made:.0f} at divisor {divisor}, {100 * abs(made - theirs) / theirs:.2f} % apart; at "
                        f"{divisor} cycles per bit they must agree within {100 * baud_tolerance(divisor):g} %")
    return divisor


def link_budget(*, input_bytes: int, n_logits: int, baud: float, reply: str = "logits",
                in_beat_bytes: int = 1, out_beat_bytes: int = 5) -> dict:
    """Bytes per image each way over the UART and the images per second the line allows.

    Parameters
    ----------
    input_bytes : int
        Input beats per image (conv1's codes: ``C*H*W``).
    n_logits : int
        Classes (the logits the full reply sends before the class).
    baud : float
        Line rate (both directions; 8N1, so ``baud / 10`` bytes per second each way).
    reply : {"logits", "class"}
        ``"logits"``: every logit, then the class, ``out_beat_bytes`` each; ``"class"``: one byte.
    in_beat_bytes, out_beat_bytes : int
        Bytes per input beat and per output beat (``asq_accel``: 1 and 5).

    Returns
    -------
    dict
        ``bytes_in_per_image``, ``bytes_out_per_image``, ``bytes_per_s`` (each way),
        ``images_per_s_pipelined`` (images in flight: the line is full duplex, so the busier
        direction sets the rate; what the link allows), ``images_per_s_one_at_a_time`` (each image
        sent only after the previous reply: both directions in turn, compute and USB latency not
        counted).
    """
    if reply not in REPLIES:
        raise ValueError(f"reply {reply!r} is not one of {REPLIES}")
    bytes_in = input_bytes * in_beat_bytes
    bytes_out = 1 if reply == "class" else (n_logits + 1) * out_beat_bytes
    per_s = baud / LINE_BITS_PER_BYTE
    return {"baud": baud, "reply": reply, "bytes_in_per_image": bytes_in, "bytes_out_per_image": bytes_out,
            "bytes_per_s": per_s,
            "images_per_s_pipelined": round(per_s / max(bytes_in, bytes_out), 1),
            "images_per_s_one_at_a_time": round(per_s / (bytes_in + bytes_out), 1)}


def link_budget_at_clock(clock_hz: float, *, input_bytes: int, n_logits: int, reply: str = "class") -> dict:
    """:func:`link_budget` at the fastest FT2232H rate ``clock_hz`` makes (:func:`fastest_baud`).

    What a design clocked at ``clock_hz`` can get over the iCEBreaker's UART; ``baud`` is None (and
    the rates 0) when the clock makes no rate of 1 Mbaud or more. Adds ``divisor``.
    """
    baud = fastest_baud(clock_hz)
    if baud is None:
        out = link_budget(input_bytes=input_bytes, n_logits=n_logits, baud=0, reply=reply)
        return {**out, "baud": None, "divisor": None}
    out = link_budget(input_bytes=input_bytes, n_logits=n_logits, baud=baud, reply=reply)
    return {**out, "divisor": divisor_for(clock_hz, baud)}
