"""The board's end of the link for the graph engine, with the same two replies as ``asq_accel``.

- ``"logits"``: the engine's own output beats, one per output value, ``ceil((word + 1) / 8)`` bytes
  little-endian each (the value in ``word`` bits, two's complement, then ``last`` on the final one),
  and no class beat: the host takes the class, the first largest value (:class:`hw.link.host.EngineBeats`).
- ``"class"``: the class alone, one byte, as the chain accelerator's class-only reply: the engine is
  wrapped in :class:`hw.rtl.engine.reply.EngineWithClass` (the chain's output: the values, then the
  class beat) and the link keeps the class beat's low byte (:func:`hw.rtl.accel.argmax.reply_filter`).

One function builds the link for synthesis and simulation alike (:func:`engine_link`).
"""

from hw.link.board import MAX_FIFO_BYTES, fifo_depth_for
from hw.link.rates import check_baud
from hw.rtl.accel.argmax import REPLIES, reply_filter
from hw.rtl.engine.reply import EngineWithClass
from hw.rtl.uart import DEFAULT_BAUD, LinkOnBoard, StreamLink


def input_bytes(engine) -> int:
    """Bytes the host sends per image: one beat per input code, each ``ceil(input width / 8)`` bytes."""
    return engine.plan.tensors[engine.plan.input].words * -(-engine.in_width // 8)


def engine_link_options(engine, *, reply: str = "logits", window: int = 1) -> dict:
    """:class:`~hw.rtl.uart.StreamLink` keyword arguments for :func:`engine_link_top` of ``engine`` (a
    ``GraphEngine``): the reply filter and an input buffer of ``window - 1`` images.

    ValueError for an unknown reply, more classes than the class byte holds, or a buffer over
    :data:`hw.link.board.MAX_FIFO_BYTES`.
    """
    if reply not in REPLIES:
        raise ValueError(f"reply {reply!r} is not one of {', '.join(REPLIES)}")
    image = input_bytes(engine)
    depth = fifo_depth_for(window, image)
    if depth > MAX_FIFO_BYTES:
        raise ValueError(f"{window} images in flight need a {depth}-byte input buffer; at most {MAX_FIFO_BYTES} "
                         f"bytes ({MAX_FIFO_BYTES // image + 1} images of {image} bytes) are offered")
    filtered = reply_filter(reply, output_values(engine)) if reply == "class" else {}
    return {**filtered, "fifo_depth": depth}


def output_values(engine) -> int:
    """Values of the engine's output tensor (the logits), sent per image."""
    return engine.plan.tensors[engine.plan.output].words


def engine_link_top(engine, reply: str = "logits"):
    """What goes behind the UART: ``engine`` itself for the logits reply, with its class beat for the
    class-only one."""
    return EngineWithClass(engine) if reply == "class" else engine


def reply_beats(engine, reply: str = "logits") -> int:
    """Beats the link sends back per image: one per output value, or the class beat alone."""
    return 1 if reply == "class" else output_values(engine)


def engine_link(engine, *, divisor: int | None = None, clock_hz: float | None = None, baud: int = DEFAULT_BAUD,
                reply: str = "logits", window: int = 1):
    """``engine`` behind the UART with ``reply``: a :class:`StreamLink` at ``divisor`` (simulation) or
    a :class:`LinkOnBoard` at ``clock_hz`` (``baud`` checked against the FT2232H and the clock)."""
    options = engine_link_options(engine, reply=reply, window=window)
    top = engine_link_top(engine, reply)
    if clock_hz is None:
        return StreamLink(top, divisor, **options)
    check_baud(baud, clock_hz)
    return LinkOnBoard(top, clock_hz, baud=baud, **options)
