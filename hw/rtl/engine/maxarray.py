"""A max "array" for max pools: the MAC array's ports and timing, a running max instead of a sum.

A max pool runs as a depthwise step (one output channel per PE group, lane 0): the engine issues
each window position with its padding flag; a padded position is never chosen (``-inf`` in
``docs/arithmetic.md`` 7.5, and every window holds a real element since ``pad <= k / 2``).
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class MaxArray(wiring.Component):
    """Running max of one value per cycle, as wide as the pooled values.

    Parameters
    ----------
    act_bits : int
        Signed width of the pooled values.
    pe : int
        Lanes of ``acc`` (every lane holds the same max; the engine uses lane 0).

    Ports
    -----
    valid, first, last : In(1)
        As :class:`hw.rtl.mac.MacArray`'s.
    inside : In(1)
        The value is a real element (not padding).
    a : In(ArrayLayout(signed(act_bits), 1))
    w : In(ArrayLayout(ArrayLayout(unsigned(1), 1), pe))
        Unused (the MAC arrays' weight port, so that the engine drives every array alike).
    acc : Out(ArrayLayout(signed(act_bits), pe))
    done : Out(1)
        Latency :attr:`LATENCY` (``done`` two cycles after the ``last`` value, as the MAC array);
        throughput one value per cycle.
    """

    LATENCY = 2

    def __init__(self, act_bits: int, pe: int = 1):
        if act_bits < 1 or pe < 1:
            raise ValueError(f"MaxArray act_bits={act_bits} and pe={pe} must be >= 1")
        self.act_bits, self.pe, self.acc_width = act_bits, pe, act_bits
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1), "inside": In(1),
            "a": In(data.ArrayLayout(signed(act_bits), 1)),
            "w": In(data.ArrayLayout(data.ArrayLayout(unsigned(1), 1), pe)),
            "acc": Out(data.ArrayLayout(signed(act_bits), pe)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lowest = -(1 << (self.act_bits - 1))
        value = Signal(signed(self.act_bits))
        valid1, first1, last1 = Signal(), Signal(), Signal()
        m.d.sync += [value.eq(Mux(self.inside, self.a[0], lowest)), valid1.eq(self.valid),
                     first1.eq(self.first), last1.eq(self.last), self.done.eq(valid1 & last1)]
        best = Signal(signed(self.act_bits))
        m.d.comb += best.eq(Mux(first1 | (value > self.acc[0]), value, self.acc[0]))
        with m.If(valid1):
            m.d.sync += [self.acc[p].eq(best) for p in range(self.pe)]
        return m
