"""The requantizer: accumulator -> activation code, ``y`` for an ASQ unit, or logit.

One requantizer serves every layer of the network (the sequencer runs one layer at a time): its
per-channel constants ``M_c``, ``B_c`` sit in two ROMs, the layers one after the other, and the
``layer`` input picks the base address, the shift ``S + G`` and the saturation bounds (a small
multiplexer per layer, since they are generator constants). Arithmetic (``golden.arith.requantize``):

    t   = acc * M_c * g + (B_c << G)       # g = the layer input's beta code (ASQ) or 1, G = 0
    out = clamp(rshift_round(t, S + G), lo, hi)

Pipeline, no back-pressure (its consumers are memories, always ready): one value per cycle,
latency 10: ``acc * g`` (4), ``* M_c`` (4, ``M_c`` read while the first product finishes),
``+ (B'_c << G)`` (1, ``B'_c`` read likewise), shift and clamp (1). Both products run on registered
DSP blocks (:class:`hw.rtl.dsp.PipelinedProduct`), so every path through them is timed; ``g`` goes
into the first so that it needs no delay line.
The rounding constant is folded into the bias ROM, ``B'_c = B_c + 2^(S-1)``, since
``(B_c << G) + 2^(S+G-1) = B'_c << G``; so the shift is a slice, and the two multipliers, the adder
and the clamp are shared by all layers (only constants are selected per layer).
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.arith import signed_width
from hw.rtl.delay import memory_delay
from hw.rtl.dsp import DSP_WIDTH, PipelinedProduct


@dataclass(frozen=True)
class RequantSpec:
    """Requantization constants of one layer.

    Attributes
    ----------
    M, B : tuple of int
        Per output channel multiplier and bias (signed). Channels beyond ``len(M)`` (padding
        PE groups) read 0.
    S : int
        Shift.
    G : int
        Fractional bits of the input's beta code; 0 when the layer input is LSQ (``g`` ignored).
    lo, hi : int or None
        Saturation (``None``: none, the logits).
    g_max : int
        Largest beta code the ``g`` input carries (1 when ``G = 0``).
    """

    M: tuple
    B: tuple
    S: int
    G: int = 0
    lo: int | None = 0
    hi: int | None = None
    g_max: int = 1

    def __post_init__(self):
        if len(self.M) != len(self.B) or not self.M:
            raise ValueError(f"RequantSpec needs as many M as B constants, got {len(self.M)}, "
                             f"{len(self.B)}")
        if self.S < 0 or self.G < 0:
            raise ValueError(f"RequantSpec shifts must be >= 0, got S={self.S}, G={self.G}")

    @property
    def shift(self) -> int:
        return self.S + self.G

    @property
    def rounded_bias(self) -> tuple:
        """``B_c`` with the rounding constant folded in: ``(B << G) + 2^(S+G-1) = (B + 2^(S-1)) << G``.

        Exact for ``S >= 1``; for ``S = 0 < G`` the half, ``2^(G-1)``, is added separately.
        """
        half = (1 << (self.S - 1)) if self.S else 0
        return tuple(int(b) + half for b in self.B)

    def t_bounds(self, acc_width: int) -> tuple[int, int]:
        """Exact-enough bounds of ``t`` for an accumulator of ``acc_width`` bits."""
        amax = 1 << (acc_width - 1)
        mmax = max(abs(v) for v in self.M)
        bmax = (max(abs(v) for v in self.rounded_bias) << self.G) + _extra_half(self)
        top = amax * mmax * max(self.g_max, 1) + bmax
        return -top, top

    def out_bounds(self, acc_width: int) -> tuple[int, int]:
        lo, hi = self.t_bounds(acc_width)
        n = self.shift
        lo, hi = (lo >> n, (hi + (1 << n)) >> n) if n else (lo, hi)
        if self.lo is not None:
            lo, hi = max(lo, self.lo), max(hi, self.lo)
        if self.hi is not None:
            lo, hi = min(lo, self.hi), min(hi, self.hi)
        return lo, hi


def shifted_below(t, shift: int, lo: int):
    """``(t >> shift) < lo`` (floor shift, constant ``lo``) as a test on ``t``: ``t < lo << shift``;
    for ``lo = 0`` the sign bit."""
    if lo == 0 and t.shape().signed:
        return t[-1]
    return t < (lo << shift)


def shifted_above(t, shift: int, hi: int):
    """``(t >> shift) > hi`` (floor shift, constant ``hi``) as a test on ``t``: ``t >= (hi + 1) <<
    shift``; for ``hi + 1 = 2^e`` and a signed ``t``: not negative and a bit at ``e + shift`` or
    above set (an OR of high bits, no comparator)."""
    top = hi + 1
    if t.shape().signed and top > 0 and top & (top - 1) == 0:
        e = top.bit_length() - 1 + shift
        if e >= len(t) - 1:
            return 0  # t < 2^(len - 1) <= 2^e: never
        return ~t[-1] & t[e:-1].any()
    return t >= (top << shift)


def _extra_half(spec) -> int:
    """The rounding half that cannot be folded into ``B'`` (only when ``S = 0 < G``)."""
    return (1 << (spec.G - 1)) if spec.S == 0 and spec.G else 0


class Requantizer(wiring.Component):
    """Shared per-channel requantizer for a list of layers.

    Parameters
    ----------
    specs : list of RequantSpec
        One per layer, selected by the ``layer`` input.
    acc_width : int
        Width of the signed accumulators it receives.
    channels : int
        Largest channel count of a layer (including PE padding); sizes ``chan``.
    tag_width : int
        Width of an opaque tag carried alongside (the output pixel index).
    g_acc_width : int or None
        Widest accumulator of a layer with a beta (``G > 0``; 0 if none). When it is at most 16
        bits, ``acc * g_eff`` takes one DSP block instead of one per 16 bits of ``acc`` (see
        :meth:`elaborate`); the accumulators of those layers must fit it. None: not known, the
        product of the whole accumulator.
    side_ram : bool
        Carry the tag, and the channel after its last ROM read, through the pipeline in a block RAM
        (:func:`hw.rtl.delay.memory_delay`) instead of flip-flops: the same values, fewer logic cells.

    Ports
    -----
    layer : In(range(len(specs)))
        Layer of the value on ``i`` (it travels down the pipeline with the value).
    g : In(unsigned)
        Beta code of the layer's input (used by layers with ``G > 0``); travels with the value.
    i : In(stream.Signature({acc, chan, tag}, always_ready=True))
    o : Out(stream.Signature({value, chan, tag}, always_ready=True))
        Latency :attr:`LATENCY`, one value per cycle; the consumer takes every beat.
    o_layer : Out(range(len(specs)))
        The layer of the value on ``o`` (layers may follow each other back to back).
    """

    #: ``acc * g`` and ``* M_c`` (each :attr:`PipelinedProduct.LATENCY`), bias, clamp.
    LATENCY = 2 * PipelinedProduct.LATENCY + 2

    #: Builds the two product units from their operand shapes (a proof replaces them by free outputs).
    product_unit = PipelinedProduct

    def __init__(self, specs, acc_width, channels, tag_width=1, side_ram=False, g_acc_width=None):
        specs = list(specs)
        if not specs:
            raise ValueError("Requantizer needs at least one RequantSpec")
        if max(len(s.M) for s in specs) > channels:
            raise ValueError(f"Requantizer channels={channels} smaller than a layer's "
                             f"{max(len(s.M) for s in specs)} channels")
        self.specs, self.acc_width, self.channels = specs, acc_width, channels
        self.side_ram, self.g_acc_width = side_ram, g_acc_width
        self.g_width = max(max(s.g_max for s in specs).bit_length(), 1)
        #: ``acc * g`` on one block: the accumulators of the layers with a beta fit one signed digit.
        self.split_acc = g_acc_width is not None and g_acc_width <= DSP_WIDTH
        #: Width of ``acc * g_eff`` (signed) over every layer.
        self.x_width = acc_width + self.g_width
        if self.split_acc:
            self.x_width = max(acc_width, g_acc_width + self.g_width if g_acc_width else 0)
        self.m_width = max(signed_width(min(s.M), max(s.M)) for s in specs)
        self.b_width = max(signed_width(min(s.rounded_bias + (0,)), max(s.rounded_bias + (0,)))
                           for s in specs)
        self.t_width = max(signed_width(*s.t_bounds(acc_width)) for s in specs) + 1
        self.out_width = max(signed_width(*s.out_bounds(acc_width)) for s in specs)
        chan_shape = unsigned(max(channels - 1, 1).bit_length())
        tag_shape = unsigned(tag_width)
        super().__init__({
            "layer": In(range(max(len(specs), 2))),
            "g": In(unsigned(self.g_width)),
            # Never stalls, and its consumers (memories) always take: both streams always ready.
            "i": In(stream.Signature(data.StructLayout({
                "acc": signed(acc_width), "chan": chan_shape, "tag": tag_shape,
            }), always_ready=True)),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(self.out_width), "chan": chan_shape, "tag": tag_shape,
            }), always_ready=True)),
            "o_layer": Out(range(max(len(specs), 2))),
        })

    def _acc_g_shapes(self):
        """Operand shapes (and addend) of the ``acc * g_eff`` unit."""
        if self.split_acc:
            hi_width = max(self.acc_width, DSP_WIDTH + 1) - DSP_WIDTH + 1
            corr = signed(max(hi_width + 1, self.g_width + 1) + 1)
            return unsigned(DSP_WIDTH), unsigned(self.g_width), {"addend_shape": corr, "addend_shift": DSP_WIDTH - 1}
        return signed(self.acc_width), unsigned(self.g_width), {}

    @property
    def dsp_blocks(self) -> int:
        """DSP blocks its two products take (16 x 16 pieces)."""
        a_shape, b_shape, _ = self._acc_g_shapes()
        x_shape = signed(self.x_width) if self.split_acc else PipelinedProduct.product_shape(a_shape, b_shape)
        return (PipelinedProduct.pieces_for(a_shape, b_shape)
                + PipelinedProduct.pieces_for(x_shape, signed(self.m_width)))

    def _rom(self, m, name, field, width):
        bases, words = [], []
        for spec in self.specs:
            bases.append(len(words))
            values = list(spec.M) if field == "M" else list(spec.rounded_bias)
            words += values + [0] * (self.channels - len(values))
        rom = memory.Memory(shape=signed(width), depth=len(words), init=words)
        m.submodules[name] = rom
        return rom.read_port(), bases

    def elaborate(self, platform):
        m = Module()
        m_port, bases = self._rom(m, "m_rom", "M", self.m_width)
        b_port, _ = self._rom(m, "b_rom", "B", self.b_width)
        n_rom = len(bases) * self.channels

        def rom_addr(layer, chan):
            base = Signal(range(n_rom + 1))
            with m.Switch(layer):
                for k, b in enumerate(bases):
                    with m.Case(k):
                        m.d.comb += base.eq(b)
            return base + chan

        # What travels with each value (so layers may follow each other back to back): valid,
        # channel, tag and layer, through every stage.
        last = self.LATENCY - 1
        v = [self.i.valid] + [Signal(name=f"v{k}") for k in range(1, last + 1)]
        chan = [self.i.payload.chan] + [Signal.like(self.i.payload.chan, name=f"chan{k}", reset_less=True)
                                        for k in range(1, last + 1)]
        tag = [self.i.payload.tag] + [Signal.like(self.i.payload.tag, name=f"tag{k}", reset_less=True)
                                      for k in range(1, last + 1)]
        layer = [self.layer] + [Signal.like(self.layer, name=f"layer{k}", reset_less=True)
                                for k in range(1, last + 1)]
        for k in range(1, last + 1):
            m.d.sync += [v[k].eq(v[k - 1]), chan[k].eq(chan[k - 1]), tag[k].eq(tag[k - 1]),
                         layer[k].eq(layer[k - 1])]

        # Stages 0 -> 4: acc * g (g = 1 where G = 0) on registered DSP blocks. The beta code goes
        # in first, so that it needs no delay line.
        g_eff = Signal.like(self.g, name="g_eff")
        with m.Switch(self.layer):
            for k, spec in enumerate(self.specs):
                with m.Case(k):
                    m.d.comb += g_eff.eq(self.g if spec.G else 1)
        if self.split_acc:
            # acc = d + h 2^16 with the signed digit d = acc[:16] read signed and h = (acc + 2^15) >> 16;
            # the block multiplies d + 2^15 = acc[:16] with its top bit flipped (unsigned), so
            #   acc * g_eff = (d + 2^15) g_eff + (2 h - g_eff) 2^15    when h g_eff = h,
            # which holds for every layer: g_eff = 1 without a beta, and h = 0 with one (its
            # accumulators fit the digit). The addend goes in with the operands, added where the
            # unit registers its sum: one block, no extra cycle.
            a_shape, b_shape, extra = self._acc_g_shapes()
            acc = Signal(signed(max(self.acc_width, DSP_WIDTH + 1)), name="acc_ext")
            corr = Signal(extra["addend_shape"], name="acc_g_addend")
            m.d.comb += [acc.eq(self.i.payload.acc),
                         corr.eq(((acc[DSP_WIDTH:].as_signed() + acc[DSP_WIDTH - 1]) << 1) - g_eff)]
            m.submodules.acc_g = acc_g = self.product_unit(a_shape, b_shape, **extra)
            m.d.comb += [acc_g.a.eq(acc[:DSP_WIDTH] ^ (1 << (DSP_WIDTH - 1))), acc_g.b.eq(g_eff), acc_g.c.eq(corr),
                         acc_g.valid.eq(self.i.valid)]
            acc_g_p = acc_g.p[:self.x_width].as_signed()  # |acc g_eff| < 2^(x_width - 1)
        else:
            m.submodules.acc_g = acc_g = self.product_unit(signed(self.acc_width), unsigned(self.g_width))
            m.d.comb += [acc_g.a.eq(self.i.payload.acc), acc_g.b.eq(g_eff), acc_g.valid.eq(self.i.valid)]
            acc_g_p = acc_g.p
        # Stages 4 -> 8: * M_c, M_c read in stage 3 so that it arrives with the product.
        m_stage = PipelinedProduct.LATENCY
        m.d.comb += m_port.addr.eq(rom_addr(layer[m_stage - 1], chan[m_stage - 1]))
        m.submodules.times_m = times_m = self.product_unit(acc_g_p.shape(), signed(self.m_width))
        m.d.comb += [times_m.a.eq(acc_g_p), times_m.b.eq(m_port.data), times_m.valid.eq(v[m_stage])]
        # Stage 8 -> 9: + (B'_c << G), B'_c read in stage 6 and registered, shifted, in stage 7,
        # so that the adder's carry chain starts from flip-flops.
        t_stage = m_stage + PipelinedProduct.LATENCY
        m.d.comb += b_port.addr.eq(rom_addr(layer[t_stage - 2], chan[t_stage - 2]))
        bias = Signal(signed(self.b_width + max(s.G for s in self.specs) + 1), reset_less=True)
        with m.Switch(layer[t_stage - 1]):
            for k, spec in enumerate(self.specs):
                with m.Case(k):
                    m.d.sync += bias.eq((b_port.data << spec.G) + _extra_half(spec))
        t = Signal(signed(self.t_width), reset_less=True)
        m.d.sync += t.eq(times_m.p + bias)
        # Stage 9 -> 10: shift (a slice per layer, the rounding is in B'), clamp.
        if self.side_ram:
            chan_last, tag_last = self._side_ram(m, last)
        else:
            chan_last, tag_last = chan[last], tag[last]
        m.d.sync += [self.o.valid.eq(v[last]), self.o.payload.chan.eq(chan_last),
                     self.o.payload.tag.eq(tag_last), self.o_layer.eq(layer[last])]
        # The saturation tests look at ``t`` itself against each layer's constant bounds (a sign
        # bit, or a few high bits ORed, for the usual bounds), in parallel with the shift, instead
        # of comparing the selected shifted value with selected bounds.
        shifted = Signal(signed(self.t_width))
        bounds = [b for s in self.specs for b in (s.lo, s.hi) if b is not None] + [0]
        bound_shape = signed(signed_width(min(bounds), max(bounds)))
        lo, hi = Signal(bound_shape), Signal(bound_shape)
        below, above = Signal(), Signal()
        with m.Switch(layer[last]):
            for k, spec in enumerate(self.specs):
                with m.Case(k):
                    m.d.comb += shifted.eq(t >> spec.shift)
                    if spec.lo is not None:
                        m.d.comb += [lo.eq(spec.lo), below.eq(shifted_below(t, spec.shift, spec.lo))]
                    if spec.hi is not None:
                        m.d.comb += [hi.eq(spec.hi), above.eq(shifted_above(t, spec.shift, spec.hi))]
        value = Mux(below, lo, Mux(above, hi, shifted))
        m.d.sync += self.o.payload.value.eq(value)
        return m

    def _side_ram(self, m, last):
        """The input's channel and tag at stage ``last``, through a block RAM delay line."""
        chan_in, tag_in = self.i.payload.chan, self.i.payload.tag
        both = memory_delay(m, Cat(chan_in, tag_in), last, "side_delay")
        return both[:len(chan_in)], both[len(chan_in):]
