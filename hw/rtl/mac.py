"""The MAC array: PE output channels x SIMD input channels, one multiplier lane per input.

Structure: SIMD :class:`hw.rtl.mul.MulLane` s, one per activation input, each broadcasting its
activation (and, for POST, its one odd-exponent table read) to PE weight codes. Products are
registered; each PE then adds its SIMD products and its accumulator.

Timing (``valid``/``first``/``last`` qualify the inputs of the same cycle):

- cycle n: inputs; products registered at the end of the cycle;
- cycle n+1: ``acc[p] <= (first ? 0 : acc[p]) + sum_s prod[p][s]``;
- cycle n+2: if the item of cycle n had ``last``, ``done`` is high for one cycle and ``acc`` holds
  the group's sums (they stay until the next ``first`` item reaches the accumulators).

Throughput one input set (PE x SIMD MACs) per cycle, latency 2. The accumulator width comes from
the caller (the bundle's ``acc_width``, proved in docs/arithmetic.md); the array checks only that
it is at least as wide as one product.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.formats import DEFAULT_POST_FRAC_BITS
from hw.rtl.mul import MulLane


class MacArray(wiring.Component):
    """PE x SIMD multiply-accumulate array.

    Parameters
    ----------
    kind : {"post", "pot", "int"}
        Multiplier kind of every lane.
    w_bits, act_bits : int
        Weight and activation code widths.
    act_signed : bool
        Activation codes are signed (uniform lanes only).
    pe, simd : int
        Output channels and input channels processed per cycle.
    acc_width : int
        Signed accumulator width.
    frac_bits : int
        POST table fractional bits.
    in_logic : bool
        Uniform multipliers as shift-and-add logic, kept out of DSP blocks (see ``MulLane``).

    Ports
    -----
    valid, first, last : In(1)
        ``valid`` qualifies the cycle's inputs; ``first`` starts a new sum, ``last`` ends it.
    a : In(ArrayLayout(act, simd))
        One activation per SIMD lane (0 for padding).
    w : In(ArrayLayout(ArrayLayout(unsigned(w_bits), simd), pe))
        ``w[p][s]``: weight code of output channel ``p`` for input lane ``s``.
    acc : Out(ArrayLayout(signed(acc_width), pe))
        Accumulators.
    done : Out(1)
        One cycle pulse: ``acc`` holds finished sums (2 cycles after the ``last`` input).
    """

    #: Cycles from an input set to its products in the accumulators (``done`` after a ``last`` set).
    LATENCY = 2

    def __init__(self, kind, w_bits, act_bits, act_signed=False, *, pe=1, simd=1, acc_width=32,
                 frac_bits=DEFAULT_POST_FRAC_BITS, in_logic=False):
        for name, value in (("pe", pe), ("simd", simd)):
            if value < 1:
                raise ValueError(f"MacArray {name}={value} must be >= 1")
        self.lanes = [MulLane(kind, w_bits, act_bits, act_signed, pe, frac_bits, in_logic)
                      for _ in range(simd)]
        self.prod_shape = self.lanes[0].prod_shape
        if acc_width < self.prod_shape.width:
            raise ValueError(
                f"MacArray acc_width={acc_width} narrower than one product ({self.prod_shape.width})"
            )
        self.kind, self.w_bits, self.act_bits, self.act_signed = kind, w_bits, act_bits, act_signed
        self.pe, self.simd, self.acc_width, self.frac_bits = pe, simd, acc_width, frac_bits
        act_shape = self.lanes[0].act_shape
        super().__init__({
            "valid": In(1),
            "first": In(1),
            "last": In(1),
            "a": In(data.ArrayLayout(act_shape, simd)),
            "w": In(data.ArrayLayout(data.ArrayLayout(unsigned(w_bits), simd), pe)),
            "acc": Out(data.ArrayLayout(signed(acc_width), pe)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        prod = [[Signal(self.prod_shape, name=f"prod_{p}_{s}") for s in range(self.simd)]
                for p in range(self.pe)]
        for s, lane in enumerate(self.lanes):
            m.submodules[f"lane{s}"] = lane
            m.d.comb += lane.a.eq(self.a[s])
            for p in range(self.pe):
                m.d.comb += lane.w[p].eq(self.w[p][s])
                m.d.sync += prod[p][s].eq(lane.p[p])
        valid1, first1, last1 = Signal(), Signal(), Signal()
        m.d.sync += [valid1.eq(self.valid), first1.eq(self.first), last1.eq(self.last)]
        m.d.sync += self.done.eq(valid1 & last1)
        with m.If(valid1):
            for p in range(self.pe):
                total = sum(prod[p][1:], prod[p][0])
                base = Mux(first1, 0, self.acc[p])  # a new group starts from 0
                m.d.sync += self.acc[p].eq(base + total)
        return m
