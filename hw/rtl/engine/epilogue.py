"""The engine's requantizer: one or two terms, per-channel constants arriving with each value.

Arithmetic (``golden.graph``'s requantizers; ``docs/arithmetic.md`` 7.2-7.4)::

    t   = acc * g * M_c + skip * A_c + B'_c
    out = clamp(t >> S', lo, hi)

with the engine's constants (:mod:`hw.rtl.engine.planner`): ``S' = S + G``, ``g`` the main
branch's per-sample ASQ beta code (1 when it carries none), ``A_c`` and ``M_c`` already multiplied by
``2^G`` for a branch without beta, and ``B'_c = (B_c << G) + 2^(S+G-1)`` (the rounding half folded
in), so that ``out = clamp(rshift_round(acc M g_m + skip A g_s + (B << G), S + G), lo, hi)``.

A plain requantizer is the two-term one with ``A_c = 0``; an identity pass (a raw accumulator
stored for a later add, or a clamp) has ``M_c = 1, B'_c = 0, S = 0``. The constants travel with the
value (the engine reads them from its constant table at the channel's address), so nothing here
depends on the layer: the shift and the clamp bounds are inputs, held constant by the engine while
a step runs, which is why a single requantizer serves every layer at no cost per layer.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl.dsp import PipelinedProduct


class TwoTermRequantizer(wiring.Component):
    """``clamp((acc M + skip A + B') >> S, lo, hi)``, one value per cycle.

    Parameters
    ----------
    acc_width, skip_width : int
        Signed widths of the main operand (an accumulator or a stored value) and of the skip value.
    m_width, a_width, b_width : int
        Signed widths of the constants.
    out_width : int
        Signed width of the result (the caller proves every clamped result fits).
    max_shift : int
        Largest ``S'``.
    g_width : int
        Width of the unsigned beta code ``g`` (1: no beta, the ``acc * g`` stage is left out).
    tag_width : int
        Width of an opaque tag carried alongside (the engine's write address and lane).

    Ports
    -----
    i : In(stream.Signature({acc, skip, M, A, B, tag}, always_ready=True))
        One value per cycle, no back-pressure.
    g : In(unsigned(g_width))
        The beta code of the values in flight (hold it while the step runs).
    shift : In(range(max_shift + 1))
    lo, hi : In(signed(out_width))
    has_lo, has_hi : In(1)
        The clamp; these five are sampled at the output stage (hold them while values are in flight).
    o : Out(stream.Signature({value, tag}, always_ready=True))
        Latency :attr:`latency` cycles (:attr:`LATENCY`, plus :attr:`BETA_LATENCY` for the
        ``acc * g`` stage when ``g_width > 1``); throughput one value per cycle.

    Every product is on registered DSP blocks (:class:`hw.rtl.dsp.PipelinedProduct`). ``acc * g``
    takes its input stage: ``g`` is a multiplexer with a constant arm in the engine (the beta code
    or 1), which would otherwise leave its blocks' operand registers in logic and the blocks untimed.
    """

    #: The two products (registered DSP pieces), the sum, the shift and clamp.
    LATENCY = PipelinedProduct.LATENCY + 2
    #: The ``acc * g`` stage: a product with its input stage.
    BETA_LATENCY = PipelinedProduct.LATENCY + 1

    def __init__(self, *, acc_width, skip_width, m_width, a_width, b_width, out_width, max_shift, tag_width=1,
                 g_width=1):
        for name, value in (("acc_width", acc_width), ("skip_width", skip_width), ("m_width", m_width),
                            ("a_width", a_width), ("b_width", b_width), ("out_width", out_width),
                            ("tag_width", tag_width), ("g_width", g_width)):
            if value < 1:
                raise ValueError(f"TwoTermRequantizer {name}={value} must be >= 1")
        if max_shift < 0:
            raise ValueError(f"TwoTermRequantizer max_shift={max_shift} must be >= 0")
        self.acc_width, self.skip_width = acc_width, skip_width
        self.m_width, self.a_width, self.b_width = m_width, a_width, b_width
        self.out_width, self.max_shift, self.g_width = out_width, max_shift, g_width
        self.latency = self.LATENCY + (self.BETA_LATENCY if g_width > 1 else 0)
        self.t_width = max(acc_width + g_width + 1 + m_width, skip_width + a_width, b_width) + 2
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": signed(acc_width), "skip": signed(skip_width), "M": signed(m_width),
                "A": signed(a_width), "B": signed(b_width), "tag": unsigned(tag_width)}), always_ready=True)),
            "g": In(unsigned(g_width)),
            "shift": In(range(max_shift + 1)),
            "lo": In(signed(out_width)), "hi": In(signed(out_width)),
            "has_lo": In(1), "has_hi": In(1),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(out_width), "tag": unsigned(tag_width)}), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.i.payload
        acc, m_const, skip_term, valid_in = p.acc, p.M, None, self.i.valid
        m.submodules.skip = skip = PipelinedProduct(signed(self.skip_width), signed(self.a_width))
        m.d.comb += [skip.a.eq(p.skip), skip.b.eq(p.A), skip.valid.eq(self.i.valid)]
        skip_term = skip.p
        bias, tag = p.B, p.tag
        if self.g_width > 1:
            # acc * g first (the beta needs no delay line); M, the bias and the skip term wait.
            m.submodules.times_g = times_g = PipelinedProduct(signed(self.acc_width), unsigned(self.g_width),
                                                              input_stage=True)
            m.d.comb += [times_g.a.eq(p.acc), times_g.b.eq(self.g), times_g.valid.eq(self.i.valid)]
            acc = times_g.p
            for k in range(times_g.latency):
                regs = [Signal.like(v, name=f"{n}_g{k}", reset_less=n != "valid")
                        for n, v in (("M", m_const), ("skip_term", skip_term), ("bias", bias), ("tag", tag),
                                     ("valid", valid_in))]
                m.d.sync += [r.eq(v) for r, v in zip(regs, (m_const, skip_term, bias, tag, valid_in), strict=True)]
                m_const, skip_term, bias, tag, valid_in = regs
        m.submodules.main = main = PipelinedProduct(acc.shape(), signed(self.m_width))
        m.d.comb += [main.a.eq(acc), main.b.eq(m_const), main.valid.eq(valid_in)]
        # The bias, tag and valid travel beside the main product (the skip term is ready with it:
        # its product runs beside acc * g, or beside this one when there is no beta stage).
        valid = valid_in
        for k in range(PipelinedProduct.LATENCY):
            bias_k = Signal.like(bias, name=f"bias{k}", reset_less=True)
            tag_k = Signal.like(tag, name=f"tag{k}", reset_less=True)
            valid_k = Signal(name=f"valid{k}")
            m.d.sync += [bias_k.eq(bias), tag_k.eq(tag), valid_k.eq(valid)]
            bias, tag, valid = bias_k, tag_k, valid_k
        t = Signal(signed(self.t_width), reset_less=True)
        t_tag = Signal.like(tag, reset_less=True)
        t_valid = Signal()
        m.d.sync += [t.eq(main.p + skip_term + bias), t_tag.eq(tag), t_valid.eq(valid)]
        shifted = Signal(signed(self.t_width))
        m.d.comb += shifted.eq(t >> self.shift)  # arithmetic: floor, the half is in B'
        value = Mux(self.has_lo & (shifted < self.lo), self.lo,
                    Mux(self.has_hi & (shifted > self.hi), self.hi, shifted))
        m.d.sync += [self.o.payload.value.eq(value), self.o.payload.tag.eq(t_tag), self.o.valid.eq(t_valid)]
        return m
