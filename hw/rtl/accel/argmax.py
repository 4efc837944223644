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
    last (:data:`CLASS_BEAT_CYCLES`: the last logit's comparison, then the beat); each logit beat
    taken is registered and compared with the running maximum in the next cycle (the memory's
    data go out, not into the comparator), so the class is the first index of the largest logit.
    Logit ``c``'s address is presented ``c`` cycles after ``active`` rises (later under back-pressure),
    so a write up to the cycle before is seen: the logits may still be arriving while the first ones go
    out.

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
    #: The last logit's comparison with the running maximum, then the class beat.
    CLASS_BEAT_CYCLES = 2

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
        class_ready = Signal()  # the last logit's comparison is done: the class beat may go
        best_val = Signal(self.value_shape)
        best_idx = Signal(range(self.n_logits + 1))
        # The logit beat taken in the previous cycle, compared with the running maximum in this one.
        taken_val = Signal(self.value_shape, reset_less=True)
        taken_idx = Signal(range(self.n_logits + 1), reset_less=True)
        taken_any = Signal()
        m.d.sync += taken_any.eq(0)
        # taken > best as the sign of best - taken: one carry chain, which synthesis keeps as one.
        below = Signal(signed(len(best_val) + 1), name="best_minus_taken")
        m.d.comb += below.eq(best_val - taken_val)
        with m.If(taken_any & ((taken_idx == 0) | below[-1])):
            m.d.sync += [best_val.eq(taken_val), best_idx.eq(taken_idx)]
        # ``index`` is at the class (past the last logit): a register, so that ``o`` and ``done``
        # (which the sequencer's state follows) decode no comparison.
        is_class = Signal()
        # The read address is a register a step ahead of ``index`` (0 in the first active cycle,
        # then ``index + 1``), read when a beat is taken (the port's enable; its data hold
        # otherwise), so that the next logit comes in the cycle after its predecessor's beat
        # without the link's ``ready`` reaching the memory's address.
        read_addr = Signal(range(self.n_logits + 2))
        m.d.comb += rp.addr.eq(read_addr)
        with m.If(self.active):
            logit = rp.data
            taken = self.o.valid & self.o.ready
            m.d.comb += rp.en.eq(~fresh | taken)
            with m.If(~fresh | taken):
                m.d.sync += read_addr.eq(read_addr + 1)
            m.d.comb += [self.o.payload.last.eq(is_class),
                         self.o.valid.eq(Mux(is_class, class_ready, fresh)),
                         self.o.payload.value.eq(Mux(is_class, best_idx, logit))]
            m.d.sync += [fresh.eq(1), class_ready.eq(is_class)]
            with m.If(taken):
                m.d.sync += [index.eq(index + 1), is_class.eq(index == self.n_logits - 1)]
                with m.If(~is_class):
                    m.d.sync += [taken_val.eq(logit), taken_idx.eq(index), taken_any.eq(1)]
                with m.If(is_class):
                    m.d.sync += [index.eq(0), fresh.eq(0), class_ready.eq(0), is_class.eq(0), read_addr.eq(0)]
                    m.d.comb += self.done.eq(1)
        with m.Else():  # ``active`` may last past the class beat: start the next image afresh
            m.d.sync += [fresh.eq(0), read_addr.eq(0)]
        return m
