"""The engine's output as the chain accelerator's: the logits, then the predicted class.

:class:`hw.rtl.engine.core.GraphEngine` streams its output tensor's values with ``last`` on the final
one, as wide as its activation word. A board link and ``asqhw host`` speak the chain accelerator's
protocol instead (:func:`hw.rtl.accel.argmax.output_layout`: each logit with ``last = 0`` as a
32-bit value, then the class index with ``last = 1``), so that the same replies
(:data:`hw.rtl.accel.argmax.REPLIES`, :func:`hw.rtl.accel.argmax.reply_filter`) and the same host
serve both designs. :class:`EngineWithClass` puts that output around an engine: it passes the values
through as they are taken, keeps the running maximum, and adds the class beat, one cycle after the
last value. The engine itself is unchanged (its testbenches see its own output).
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.formats import OUT_WIDTH
from hw.rtl.accel.argmax import output_layout


class EngineWithClass(wiring.Component):
    """``engine`` with the chain accelerator's output: the values (logits), then their argmax.

    Parameters
    ----------
    engine : hw.rtl.engine.core.GraphEngine
        Its ``o`` carries ``{value, last}``, ``value`` at most :data:`golden.formats.OUT_WIDTH` bits.

    Ports
    -----
    i : In(the engine's input stream)
        Passed to the engine.
    o : Out(stream.Signature(output_layout()))
        The engine's output values, sign-extended, with ``last = 0`` in the engine's order, then the
        index of the first largest of them with ``last = 1``. Back-pressure passes to the engine.
    cycles : Out(32)
        The engine's (its last image, input to last value).

    The class is the first index of the largest value (as :func:`golden.graph.predictions` and the
    chain accelerator's :class:`hw.rtl.accel.argmax.ArgmaxOutput`): each value taken replaces the
    maximum only when strictly larger. One cycle more per image (the class beat).
    """

    #: Cycles the class beat adds per image, the output never stalled.
    CLASS_BEAT_CYCLES = 1

    def __init__(self, engine):
        self.engine = engine
        out = engine.o.payload.shape()
        value_width = out["value"].shape.width
        if value_width > OUT_WIDTH:
            raise ValueError(f"engine output values of {value_width} bits do not fit the {OUT_WIDTH}-bit output beat")
        self.n_out = engine.plan.tensors[engine.plan.output].words
        self.value_shape = signed(value_width)
        super().__init__({
            "i": In(stream.Signature(signed(engine.in_width))),
            "o": Out(stream.Signature(output_layout())),
            "cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        wiring.connect(m, wiring.flipped(self.i), engine.i)
        m.d.comb += self.cycles.eq(engine.cycles)

        index = Signal(range(self.n_out + 1))
        best_val = Signal(self.value_shape)
        best_idx = Signal(range(self.n_out + 1))
        send_class = Signal()
        value = engine.o.payload.value
        with m.If(send_class):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.value.eq(best_idx), self.o.payload.last.eq(1)]
            with m.If(self.o.ready):
                m.d.sync += [send_class.eq(0), index.eq(0)]
        with m.Else():
            m.d.comb += [self.o.valid.eq(engine.o.valid), self.o.payload.value.eq(value),
                         self.o.payload.last.eq(0), engine.o.ready.eq(self.o.ready)]
            with m.If(engine.o.valid & self.o.ready):
                m.d.sync += index.eq(index + 1)
                with m.If((index == 0) | (value > best_val)):
                    m.d.sync += [best_val.eq(value), best_idx.eq(index)]
                with m.If(engine.o.payload.last):
                    m.d.sync += send_class.eq(1)
        return m
