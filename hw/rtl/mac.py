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

``registered_dsp=True`` (uniform weights only): each product on a registered DSP block
(:class:`hw.rtl.dsp.PipelinedProduct` with its input stage, so that any operand source, a zero for
padding included, leaves the block's registers packable), instead of a lane's combinational
``a * w`` that Yosys puts on a DSP block with its clock tied off (an untimed path on the iCE40).
The products then reach the accumulators ``PipelinedProduct(...).latency`` cycles after their
inputs: latency :meth:`latency_for` (6 instead of 2), throughput unchanged.

Deeper pipelines, both off by default (throughput unchanged, each stage one cycle of latency):

- ``product_latency`` > 1 (uniform lanes in logic only): each product's adder tree is cut by
  registers (:func:`hw.rtl.mul.pipelined_logic_product`), so that the clock is not bounded by a
  wide shift-and-add multiplier;
- ``sum_stage`` (a count; ``True`` is 1): each PE's sum of its SIMD products, a balanced adder
  tree, is registered that many times before the accumulator, the registers spread over the
  tree's levels (after its last level with one; after each of the two levels of a 4-input tree
  with two), any beyond one per level delaying the sum.

``block_pes`` (with ``product_latency`` 3, uniform lanes in logic): the products of the first
``block_pes`` PEs on DSP blocks instead (:func:`hw.rtl.dsp.block_product`: the block's operand,
pipeline and output registers, the same 3 cycles as the logic product cut after every adder
level), the others in logic; so an engine may take as many DSP blocks as the device has left.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.formats import DEFAULT_POST_FRAC_BITS
from hw.rtl.dsp import BLOCK_PRODUCT_LATENCY, PipelinedProduct, block_product
from hw.rtl.mul import MulLane, pipelined_logic_product, pipelined_logic_product_latency


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
    registered_dsp : bool
        Uniform multipliers on registered DSP blocks (see the module notes); POST and POT lanes
        are shift logic and take no DSP block, so it leaves them as they are.
    product_latency : int
        Cycles from the inputs to the registered products: 1 (default) is the lanes'
        combinational products registered once; more (``in_logic`` uniform lanes only) cuts each
        product's adder tree with registers.
    sum_stage : bool or int
        Registered stages of each PE's sum of products before its accumulator (one cycle of
        latency each; ``True`` is one).
    block_pes : int
        With ``product_latency`` :data:`hw.rtl.dsp.BLOCK_PRODUCT_LATENCY` and signed activations:
        how many PEs (the first ones) multiply on DSP blocks (one per product) instead of logic.

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
        One cycle pulse: ``acc`` holds finished sums (:attr:`latency` cycles after the ``last`` input).
    """

    #: Cycles from an input set to its products in the accumulators (``done`` after a ``last`` set)
    #: with combinational lanes; :attr:`latency` is the array's own.
    LATENCY = 2

    @classmethod
    def latency_for(cls, kind: str, *, registered_dsp: bool = False, product_latency: int = 1,
                    sum_stage: bool | int = False) -> int:
        """:attr:`latency` of an array of ``kind`` built with these options."""
        if registered_dsp and kind == "int":
            return PipelinedProduct.LATENCY + 1 + 1  # the product with its input stage, then the accumulator
        return cls.LATENCY + (product_latency - 1) + int(sum_stage)

    def __init__(self, kind, w_bits, act_bits, act_signed=False, *, pe=1, simd=1, acc_width=32,
                 frac_bits=DEFAULT_POST_FRAC_BITS, in_logic=False, registered_dsp=False,
                 product_latency=1, sum_stage=False, block_pes=0):
        for name, value in (("pe", pe), ("simd", simd)):
            if value < 1:
                raise ValueError(f"MacArray {name}={value} must be >= 1")
        if in_logic and registered_dsp:
            raise ValueError("MacArray: in_logic (no DSP block) and registered_dsp exclude each other")
        if product_latency != 1 and not (in_logic and kind == "int"):
            raise ValueError("MacArray: product_latency other than 1 needs uniform lanes in logic (in_logic)")
        #: Adder levels between the pipelined products' registers (None: combinational lanes).
        self.levels_per_stage = None
        if product_latency != 1:
            fits = [k for k in range(1, w_bits + 1) if pipelined_logic_product_latency(w_bits, k) == product_latency]
            if not fits:
                raise ValueError(f"MacArray: no pipelined {w_bits}-bit product has latency {product_latency}")
            self.levels_per_stage = max(fits)
        if sum_stage < 0:
            raise ValueError(f"MacArray: sum_stage={sum_stage} must be >= 0")
        self.product_latency, self.sum_stage = product_latency, int(sum_stage)
        if block_pes and (product_latency != BLOCK_PRODUCT_LATENCY or not 0 <= block_pes <= pe or not act_signed):
            raise ValueError(f"MacArray: block_pes={block_pes} needs product_latency {BLOCK_PRODUCT_LATENCY}, "
                             f"at most pe={pe} and signed activations (the weights' signedness)")
        self.block_pes = block_pes
        self.lanes = [MulLane(kind, w_bits, act_bits, act_signed, pe, frac_bits, in_logic)
                      for _ in range(simd)]
        self.prod_shape = self.lanes[0].prod_shape
        #: Products on :class:`PipelinedProduct` s instead of the lanes (uniform weights only).
        self.registered_dsp = registered_dsp and kind == "int"
        self.latency = self.latency_for(kind, registered_dsp=registered_dsp, product_latency=product_latency,
                                        sum_stage=sum_stage)
        if self.registered_dsp or self.levels_per_stage is not None:
            for lane in self.lanes:  # checked and sized the lane; the products are built instead
                lane._MustUse__silence = True
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
        if self.registered_dsp:
            prod, (valid1, first1, last1) = self._registered_products(m)
        elif self.levels_per_stage is not None:
            prod, (valid1, first1, last1) = self._pipelined_products(m)
        else:
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
        if self.sum_stage:
            totals = [self._registered_sum(m, prod[p], name=f"sum_{p}") for p in range(self.pe)]
            for k in range(self.sum_stage):
                flags = [Signal(name=f"{n}_sum{k}") for n in ("valid", "first", "last")]
                m.d.sync += [f.eq(v) for f, v in zip(flags, (valid1, first1, last1), strict=True)]
                valid1, first1, last1 = flags
        else:
            totals = [sum(prod[p][1:], prod[p][0]) for p in range(self.pe)]
        m.d.sync += self.done.eq(valid1 & last1)
        with m.If(valid1):
            for p in range(self.pe):
                base = Mux(first1, 0, self.acc[p])  # a new group starts from 0
                m.d.sync += self.acc[p].eq(base + totals[p])
        return m

    def _registered_sum(self, m, terms, *, name):
        """``sum(terms)`` as a balanced adder tree registered :attr:`sum_stage` times: the registers
        cut the tree's levels into as even runs as they allow (one per level at most), the rest
        delay its sum."""
        levels = (len(terms) - 1).bit_length()
        cuts = min(self.sum_stage, levels)
        # The level after which each register goes: the ends of `cuts` even runs of levels.
        after = {levels * (k + 1) // cuts for k in range(cuts)} if cuts else set()
        level, stage = list(terms), 0
        for depth in range(1, levels + 1):
            level = [level[i] + level[i + 1] if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
            if depth in after:
                regs = [Signal(v.shape(), name=f"{name}_s{stage}_{k}") for k, v in enumerate(level)]
                m.d.sync += [r.eq(v) for r, v in zip(regs, level, strict=True)]
                level, stage = regs, stage + 1
        (value,) = level
        while stage < self.sum_stage:
            reg = Signal(value.shape(), name=f"{name}_s{stage}")
            m.d.sync += reg.eq(value)
            value, stage = reg, stage + 1
        return value

    def _pipelined_products(self, m):
        """``a[s] * w[p][s]`` as shift-and-add trees cut by registers; ``valid``, ``first``,
        ``last`` delayed alike (``product_latency`` cycles)."""
        flags, stages = [self.valid, self.first, self.last], []
        for k in range(self.product_latency):
            delayed = [Signal(name=f"{n}_d{k}") for n in ("valid", "first", "last")]
            m.d.sync += [d.eq(f) for d, f in zip(delayed, flags, strict=True)]
            flags = delayed
            stages.append(delayed)
        prod = []
        for p in range(self.pe):
            row = []
            for s in range(self.simd):
                if p < self.block_pes:  # the block's output register loads with its product's valid
                    row.append(block_product(m, self.a[s], self.w[p][s].as_signed(),
                                             stages[BLOCK_PRODUCT_LATENCY - 2][0], name=f"prod_{p}_{s}"))
                    continue
                value, latency = pipelined_logic_product(m, self.a[s], self.w[p][s].as_signed(),
                                                         levels_per_stage=self.levels_per_stage,
                                                         name=f"prod_{p}_{s}")
                assert latency == self.product_latency
                row.append(value)
            prod.append(row)
        return prod, flags

    def _registered_products(self, m):
        """``a[s] * w[p][s]`` on registered DSP blocks; the products and ``valid``, ``first``,
        ``last`` delayed alike (the block's latency)."""
        prod = []
        for p in range(self.pe):
            row = []
            for s in range(self.simd):
                unit = PipelinedProduct(self.lanes[s].act_shape, signed(self.w_bits), input_stage=True)
                m.submodules[f"product_{p}_{s}"] = unit
                m.d.comb += [unit.a.eq(self.a[s]), unit.b.eq(self.w[p][s].as_signed()), unit.valid.eq(self.valid)]
                row.append(unit.p)
            prod.append(row)
        flags = [self.valid, self.first, self.last]
        for k in range(self.latency - 1):
            delayed = [Signal(name=f"{n}_d{k}") for n in ("valid", "first", "last")]
            m.d.sync += [d.eq(f) for d, f in zip(delayed, flags, strict=True)]
            flags = delayed
        return prod, flags
