"""The board's end of the link for ``asq_accel``: the UART at a baud rate, the reply, the input buffer.

One function builds it for synthesis and simulation alike (:func:`accel_link`), and
:func:`link_report` says what it is and what it carries, for ``report.json`` and the benchmarks.
"""

from hw.link.rates import check_baud, link_budget
from hw.rtl.accel.argmax import REPLIES, reply_filter
from hw.rtl.uart import DEFAULT_BAUD, LinkOnBoard, StreamLink

#: Largest input buffer offered: four iCE40 block RAMs of 512 bytes. (The default digits design uses
#: 27 of the UP5K's 30, so there a window of 9 images, one block RAM, is what fits beside it.)
MAX_FIFO_BYTES = 2048


def fifo_depth_for(window: int, image_bytes: int) -> int:
    """Bytes of input buffer for ``window`` images in flight (0 for one: the default build has none).

    The image being computed was taken by the accelerator; the other ``window - 1`` wait in the buffer.
    """
    if window < 1:
        raise ValueError(f"window {window} must be at least 1 image")
    return (window - 1) * image_bytes


def link_options(top, *, reply: str = "logits", window: int = 1) -> dict:
    """:class:`~hw.rtl.uart.StreamLink` keyword arguments for ``asq_accel`` ``top``."""
    if reply not in REPLIES:
        raise ValueError(f"reply {reply!r} is not one of {', '.join(REPLIES)}")
    depth = fifo_depth_for(window, top.plan.input_codes)
    if depth > MAX_FIFO_BYTES:
        raise ValueError(f"{window} images in flight need a {depth}-byte input buffer; at most {MAX_FIFO_BYTES} "
                         f"bytes ({MAX_FIFO_BYTES // top.plan.input_codes + 1} images of {top.plan.input_codes} "
                         "bytes) are offered")
    return {**reply_filter(reply, top.plan.n_logits), "fifo_depth": depth}


def accel_link(top, *, divisor: int | None = None, clock_hz: float | None = None, baud: int = DEFAULT_BAUD,
               reply: str = "logits", window: int = 1):
    """``top`` behind the UART: a :class:`StreamLink` at ``divisor`` or a :class:`LinkOnBoard` at ``clock_hz``.

    ``baud`` is checked against the FT2232H and the clock (:func:`hw.link.rates.check_baud`) for the
    board; ``reply`` and ``window`` as in :func:`link_options`.
    """
    options = link_options(top, reply=reply, window=window)
    if clock_hz is None:
        return StreamLink(top, divisor, **options)
    check_baud(baud, clock_hz)
    return LinkOnBoard(top, clock_hz, baud=baud, **options)


def link_report(top, link, *, baud: int, reply: str = "logits", window: int = 1) -> dict:
    """What ``report.json`` says of a board link: kind, rate, divisor, reply, buffer, bytes and images/s."""
    stream_link = getattr(link, "link", link)
    budget = link_budget(input_bytes=top.plan.input_codes, n_logits=top.plan.n_logits, baud=baud, reply=reply,
                         in_beat_bytes=stream_link.in_bytes, out_beat_bytes=stream_link.out_bytes)
    return {"kind": "uart", "baud": baud, "divisor": stream_link.divisor, "reply": reply, "window": window,
            "fifo_bytes": stream_link.fifo_depth, "bytes_out_per_beat": stream_link.out_bytes, **budget}
