"""The output side: the logits in a small memory, streamed out, then the predicted class."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.formats import OUT_WIDTH  # the output beat's value (a logit or the class)

#: What a link sends back per image: every ``o`` beat (the logits, then the class), or the class alone.
REPLIES = ("logits", "class")
#: The class-only reply: the class index as one unsigned byte.
CLASS_REPLY_BITS = 8


def reply_filter(reply: str, n_logits: int) -> dict:
    """How a link picks the reply from ``o`` (:class:`hw.rtl.uart.StreamLink`'s keyword arguments).

    ``"logits"``: every beat as it is (no arguments); ``"class"``: only the ``last`` beat, its value
    (the class index) in one byte. ValueError for another reply or for more classes than a byte holds.
    """
    if reply not in REPLIES:
        raise ValueError(f"reply {reply!r} is not one of {', '.join(REPLIES)}")
    if reply == "logits":
        return {}
    if n_logits > 1 << CLASS_REPLY_BITS:
        raise ValueError(f"a class-only reply is one byte; {n_logits} classes need more")
    return {"select": lambda beat: beat.value[:CLASS_REPLY_BITS], "select_width": CLASS_REPLY_BITS,
            "keep": lambda beat: beat.last}


def output_layout() -> data.StructLayout:
    """Payload of the output stream: a logit or (``last``) the predicted class."""
    return data.StructLayout({"value": signed(OUT_WIDTH), "last": unsigned(1)})


class ArgmaxOutput(wiring.Component):
    """Holds the logits of an image, then sends them in class order and the class (argmax) last.

    The logits live in a small memory (no register file and read multiplexers). While ``active``:
    the first logit's read (:data:`FIRST_READ_CYCLES`), then one beat per cycle without
    back-pressure (the next logit is read in the cycle its predecessor's beat is taken), the class
    last (:data:`CLASS_BEAT_CYCLES`); the running maximum is updated as each logit beat is taken, so
    the class is the first index of the largest logit. Logit ``c``'s address is presented ``c``
    cycles after ``active`` rises (later under back-pressure), so a write up to the cycle before
    is seen: the logits may still be arriving while the first ones go out.

    Parameters
    ----------
    n_logits : int
        Classes.
    value_width : int
        Bits of a signed logit (at most :data:`OUT_WIDTH`).
    chan_shape : Shape
        Shape of the class index written with each logit.

    Ports
    -----
    write : In(stream.Signature({chan, value}, always_ready=True))
        Logit ``value`` of class ``chan`` (any order, before ``active``).
    active : In(1)
        Send: the logits, then the class; hold until ``done``.
    o : Out(stream.Signature(output_layout()))
        Logits with ``last = 0``, then the class with ``last = 1``; all zero while not ``active``.
    done : Out(1)
        The class beat is taken this cycle.
    """

    #: The first logit's read from the memory, before its beat.
    FIRST_READ_CYCLES = 1
    #: One beat per logit.
    CYCLES_PER_LOGIT = 1
    #: The class beat (the maximum is already known).
    CLASS_BEAT_CYCLES = 1

    def __init__(self, n_logits: int, *, value_width: int, chan_shape):
        if n_logits < 1:
            raise ValueError(f"ArgmaxOutput n_logits={n_logits} must be >= 1")
        if not 1 <= value_width <= OUT_WIDTH:
            raise ValueError(f"logits need {value_width} bits, not within 1..{OUT_WIDTH}")
        self.n_logits, self.value_shape = n_logits, signed(value_width)
        value_shape = self.value_shape
        super().__init__({
            "write": In(stream.Signature(data.StructLayout({"chan": chan_shape, "value": value_shape}),
                                         always_ready=True)),
            "active": In(1),
            "o": Out(stream.Signature(output_layout())),
            "done": Out(1),
        })

    @classmethod
    def cycles(cls, n_logits: int) -> int:
        """Cycles from ``active`` to ``done`` with ``o`` never stalled."""
        return cls.FIRST_READ_CYCLES + n_logits * cls.CYCLES_PER_LOGIT + cls.CLASS_BEAT_CYCLES

    def elaborate(self, platform):
        m = Module()
        mem = memory.Memory(shape=self.value_shape, depth=self.n_logits, init=[])
        m.submodules.logits = mem
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.en.eq(self.write.valid), wp.addr.eq(self.write.payload.chan),
                     wp.data.eq(self.write.payload.value)]

        index = Signal(range(self.n_logits + 1))
        fresh = Signal()  # the memory's data is the logit at ``index`` (read from the 2nd active cycle)
        best_val = Signal(self.value_shape)
        best_idx = Signal(range(self.n_logits + 1))
        with m.If(self.active):
            is_class = index == self.n_logits
            logit = rp.data
            taken = self.o.valid & self.o.ready
            # The next logit's address as soon as this one's beat is taken, so beats go back to back.
            m.d.comb += [rp.addr.eq(Mux(taken, index + 1, index)), self.o.payload.last.eq(is_class),
                         self.o.valid.eq(is_class | fresh),
                         self.o.payload.value.eq(Mux(is_class, best_idx, logit))]
            m.d.sync += fresh.eq(1)
            with m.If(taken):
                m.d.sync += index.eq(index + 1)
                with m.If(~is_class & ((index == 0) | (logit > best_val))):
                    m.d.sync += [best_val.eq(logit), best_idx.eq(index)]
                with m.If(is_class):
                    m.d.sync += [index.eq(0), fresh.eq(0)]
                    m.d.comb += self.done.eq(1)
        return m
