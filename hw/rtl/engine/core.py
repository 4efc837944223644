"""``GraphEngine``: one engine that runs a whole format-2 graph by looping over layer descriptors.

Built from an :class:`hw.rtl.engine.planner.EnginePlan`. What it holds, and what its size grows with:

- a descriptor ROM (one word per step: shapes, stride, padding, base addresses of the source,
  skip, destination and GAP tensors, of the weights and of the constants, the shift and clamp);
- one activation memory in one or two banks by width (narrow codes; wide accumulators, ``y``,
  sums and logits), each of the planner's depth (the live tensors at the busiest step, not the sum
  of all layers), one write port and two read ports (the MAC operand or a pointwise source, and
  the skip branch, built only when a pointwise step adds one: a conv step reads its skip branch
  through the operand port while it drains), the descriptor naming each tensor's bank;
- a weight ROM per MAC array (PE codes of the array's width per word), or with ``weight_store``
  ``ram``/``spram`` one store loaded at run time (below), and one constant table (``M``, ``A``,
  ``B'`` per channel);
- one MAC array per weight format of the graph (:class:`hw.rtl.mac.MacArray` of
  :class:`hw.rtl.mul.MulLane` s: POST, POT, int; average pools: int with weights 1), PE output
  channels by one input per cycle, its accumulator as wide as the widest layer's, and a
  :class:`hw.rtl.engine.maxarray.MaxArray` for max pools;
- one requantizer (:class:`hw.rtl.engine.epilogue.TwoTermRequantizer`) for every step, the
  residual add's skip term included, and PE GAP sums on its output.

Nothing is unrolled per layer: the counters and address adders are as wide as the largest layer
needs, and the layer count only sets the depth of the ROMs.

Weights loaded at run time (``weight_store`` ``ram`` or ``spram``): the arrays' weights live in one
:class:`hw.rtl.engine.weightram.WeightRam` of 16-bit lanes (:func:`hw.rtl.engine.planner.weight_space`;
an array wider than its lanes keeps its ROM), which the bitstream does not set. The input stream
then carries commands, one beat each (the command in the low byte): ``LOAD_WEIGHTS_COMMAND``
followed by the store's 16-bit words (two beats each, low byte first, when a beat is a byte) and
their sum modulo 2^16, answered by one ``o`` beat with ``last`` set, value 1 when the sum matched
(weights loaded) and 0 when not; ``IMAGE_COMMAND`` followed by an image's codes, run as usual once
weights are loaded and otherwise taken and dropped without a reply; any other byte is dropped. The
host side is :mod:`hw.link.weights`.

Ports
-----
i : In(stream.Signature(signed(beat width)))
    The input tensor's codes, ``C*H*W`` beats in (C, H, W) order (with loaded weights: whole bytes
    a beat, the codes in the low bits, after the image command). Ready while the engine waits for
    an image or a command.
o : Out(stream.Signature({value: signed(word), last: 1}))
    The output tensor's values in (C, H, W) order (the logits), ``last`` on the final one.
cycles : Out(32)
    Cycles of the last image, from its first input beat to its last output beat (counting while
    it runs).

Schedule (per step, in descriptor order): for each group of PE output channels (within one
convolution group), for each output pixel, conv steps issue the ``c_in / groups * k k`` input
positions, one per cycle (activation and weight reads: 1 cycle; the array: ``L``, 2 for POST, POT and
max, 6 for the uniform array's registered DSP products, :meth:`MacArray.latency_for`), then PE
cycles feed the accumulators to the requantizer (the skip value and the constants read on the way);
pointwise steps feed PE stored values per pixel. After each group the engine waits for the
requantizer to empty (:attr:`TwoTermRequantizer.latency`) and writes the group's GAP sums. So a conv
step takes about ``groups * H_out W_out * (c_in / conv_groups * k k + PE + 3 + L) + groups * 12``
cycles. An asq step
reads its ``y`` map twice, one value per cycle (into the unit's GAP, then through its quantizer),
with the adapter's :meth:`AsqUnit.beta_cycles` between.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.rtl.asq import AsqConfig, AsqUnit
from hw.rtl.engine.epilogue import TwoTermRequantizer
from hw.rtl.engine.maxarray import MaxArray
from hw.rtl.engine.planner import STEP_KINDS, EnginePlan, weight_space
from hw.rtl.engine.weightram import WeightRam
from hw.rtl.mac import MacArray

#: Where the engine keeps its weights: ``rom`` (block RAM set by the bitstream), ``ram`` (a RAM loaded
#: at run time over the input stream, an Amaranth ``Memory``), ``spram`` (the same, built of the
#: UP5K's ``SB_SPRAM256KA``).
WEIGHT_STORES = ("rom", "ram", "spram")
#: The loader protocol's command bytes (the low byte of a command beat, see the module notes).
LOAD_WEIGHTS_COMMAND, IMAGE_COMMAND = 0x57, 0x49


def _uint(top: int):
    """Unsigned shape holding ``0 .. top`` (at least one bit)."""
    return unsigned(max(int(top), 1).bit_length())


class GraphEngine(wiring.Component):
    """The descriptor-driven engine of one plan (see the module notes).

    Parameters
    ----------
    plan : hw.rtl.engine.planner.EnginePlan
    weight_store : str
        One of :data:`WEIGHT_STORES` (see the module notes: ``ram``/``spram`` add the loader).

    Latency: one image takes :meth:`estimate_cycles` cycles (about); throughput: one image at a
    time (the next image's input is taken after the last output beat).
    """

    def __init__(self, plan: EnginePlan, weight_store: str = "rom"):
        if weight_store not in WEIGHT_STORES:
            raise ValueError(f"GraphEngine: weight store {weight_store!r} is not one of {WEIGHT_STORES}")
        if not isinstance(plan, EnginePlan):
            raise TypeError("GraphEngine needs an EnginePlan (hw.rtl.engine.planner.plan_graph)")
        if not plan.steps:
            raise ValueError("GraphEngine: the plan has no steps")
        self.plan, self.post_frac_bits = plan, plan.post_frac_bits
        self.weight_store = weight_store
        #: Whether the weights are loaded at run time (the input stream's loader protocol).
        self.loaded = weight_store != "rom"
        #: The loaded weight store's layout (:func:`hw.rtl.engine.planner.weight_space`).
        self.weight_space = weight_space(plan)
        steps = plan.steps
        self.pe = plan.pe
        self.word_width = plan.act_width
        self.addr_shape = _uint(plan.act_words)
        dim = max([s.c_in for s in steps] + [s.c_out for s in steps] + [s.h_in for s in steps]
                  + [s.w_in for s in steps] + [s.h_in * s.w_in for s in steps]) + 1
        self.coord_width = max(dim, plan.act_words).bit_length() + 2  # signed offsets: room for -pad
        consts = plan.constants
        self.m_width = arith.signed_width(min(c[0] for c in consts), max(c[0] for c in consts))
        self.a_width = arith.signed_width(min(c[1] for c in consts), max(c[1] for c in consts))
        self.b_width = arith.signed_width(min(c[2] for c in consts), max(c[2] for c in consts))
        a = self.addr_shape
        self.desc_layout = data.StructLayout({
            "kind": range(len(STEP_KINDS)), "array": _uint(len(plan.arrays)),
            "src": a, "skip": a, "dst": a, "gap": a,
            "src_bank": 1, "skip_bank": 1, "dst_bank": 1, "gap_bank": 1,
            "write_dst": 1, "has_gap": 1, "has_lo": 1, "has_hi": 1, "beta": 1,
            "asq_sel": _uint(max(len(plan.asq_configs) - 1, 1)),
            "c_in": _uint(max(s.c_in // s.conv_groups for s in steps)),
            "cout_g": _uint(max(s.cout_g for s in steps)), "pgroups": _uint(max(s.pgroups for s in steps)),
            "in_group": _uint(max(s.c_in // s.conv_groups * s.h_in * s.w_in for s in steps)),
            "out_group": _uint(max(s.cout_g * s.h_out * s.w_out for s in steps)),
            "h_in": _uint(max(s.h_in for s in steps)),
            "w_in": _uint(max(s.w_in for s in steps)), "hw_in": _uint(max(s.h_in * s.w_in for s in steps)),
            "kernel": _uint(max(s.kernel for s in steps)), "stride": _uint(max(s.stride for s in steps)),
            "pad": _uint(max(s.pad for s in steps)),
            "stride_w": _uint(max(s.stride * s.w_in for s in steps)),
            "pad_w": _uint(max(s.pad * s.w_in for s in steps)),
            "c_out": _uint(max(s.c_out for s in steps)), "w_out": _uint(max(s.w_out for s in steps)),
            "hw_out": _uint(max(s.h_out * s.w_out for s in steps)),
            "pe_hw_out": _uint(max(self.pe * s.h_out * s.w_out for s in steps)),
            "groups": _uint(max(s.groups for s in steps)),
            "items": _uint(max(s.items for s in steps)),
            "weight_base": _uint(max([self.weight_space.depth if self.loaded else 0]
                                     + [len(rom) for rom in plan.weight_roms])),
            "const_base": _uint(len(consts)),
            "shift": _uint(max(s.shift for s in steps)),
            "lo": signed(self.word_width), "hi": signed(self.word_width),
        })
        self.in_width = plan.tensors[plan.input].width
        #: Whether the activation banks have a second read port: only for a pointwise step adding a
        #: skip branch (a conv step reads its skip branch through the operand port while it drains).
        self.skip_port = any(s.skip is not None and s.kind != "conv" for s in steps)
        #: Bits of an ``i`` beat: the input codes' width, or with the loader whole bytes (a beat
        #: carries a command or weight byte too; the link sends ``ceil(in_width / 8)`` bytes a beat).
        self.beat_width = 8 * -(-self.in_width // 8) if self.loaded else self.in_width
        self.asq_configs = [AsqConfig(k, c, pixels, y_max) for k, c, pixels, y_max in plan.asq_configs]
        #: The one ASQ unit serving every asq step (None without ASQ inputs).
        self.asq_unit = (AsqUnit(self.asq_configs, tag_width=self.addr_shape.width) if self.asq_configs
                         else None)
        super().__init__({
            "i": In(stream.Signature(signed(self.beat_width))),
            "o": Out(stream.Signature(data.StructLayout({"value": signed(self.word_width), "last": 1}))),
            "cycles": Out(32),
        })

    def descriptors(self) -> list:
        """The descriptor ROM's words (dicts of :attr:`desc_layout`'s fields), one per step."""
        t = self.plan.tensors
        # A clamp bound beyond the activation word never binds (every value is proved inside the
        # word, docs/arithmetic.md 7.2), so it is held at the word's end.
        w_lo, w_hi = -(1 << (self.word_width - 1)), (1 << (self.word_width - 1)) - 1

        def bound(v):
            return 0 if v is None else min(max(v, w_lo), w_hi)

        words = []
        for s in self.plan.steps:
            words.append({
                "kind": STEP_KINDS.index(s.kind), "array": s.array,
                "src": t[s.src].base, "skip": t[s.skip].base if s.skip else 0,
                "dst": t[s.dst].base if s.dst else 0, "gap": t[s.gap].base if s.gap else 0,
                "src_bank": t[s.src].bank, "skip_bank": t[s.skip].bank if s.skip else 0,
                "dst_bank": t[s.dst].bank if s.dst else 0, "gap_bank": t[s.gap].bank if s.gap else 0,
                "write_dst": s.dst is not None, "has_gap": s.gap is not None,
                "has_lo": s.lo is not None, "has_hi": s.hi is not None, "beta": s.beta, "asq_sel": s.asq,
                "c_in": s.c_in // s.conv_groups, "cout_g": s.cout_g, "pgroups": s.pgroups,
                "in_group": s.c_in // s.conv_groups * s.h_in * s.w_in, "out_group": s.cout_g * s.h_out * s.w_out,
                "h_in": s.h_in, "w_in": s.w_in, "hw_in": s.h_in * s.w_in,
                "kernel": s.kernel, "stride": s.stride, "pad": s.pad, "stride_w": s.stride * s.w_in,
                "pad_w": s.pad * s.w_in, "c_out": s.c_out, "w_out": s.w_out, "hw_out": s.h_out * s.w_out,
                "pe_hw_out": self.pe * s.h_out * s.w_out, "groups": s.groups, "items": s.items,
                "weight_base": s.weight_base + self._store_base(s.array),
                "const_base": s.const_base, "shift": s.shift,
                "lo": bound(s.lo), "hi": bound(s.hi),
            })
        return words

    def _store_base(self, array: int) -> int:
        """Where MAC array ``array``'s words start in the loaded store (0: its own ROM)."""
        base = self.weight_space.bases[array] if self.loaded else None
        return 0 if base is None else base

    def estimate_cycles(self) -> int:
        """Cycles of one image by the schedule in the module notes (load and output included)."""
        lat = TwoTermRequantizer.LATENCY + 3
        total = self.plan.tensors[self.plan.input].words + 2 * self.plan.tensors[self.plan.output].words
        beta_lat = TwoTermRequantizer.BETA_LATENCY if self.asq_configs else 0
        mac_lat = [MaxArray.LATENCY if a.kind == "max" else MacArray.latency_for(a.kind, registered_dsp=True)
                   for a in self.plan.arrays]
        for s in self.plan.steps:
            if s.kind == "asq":
                unit = self.asq_unit
                total += 2 * s.c_out * s.h_out * s.w_out + unit.beta_cycles(s.asq) + unit.CODE_LATENCY + 12
                continue
            per_pixel = (s.items + mac_lat[s.array] + 3 + self.pe) if s.kind == "conv" else self.pe
            total += 2 + s.groups * (s.h_out * s.w_out * per_pixel + lat + beta_lat + (self.pe if s.gap else 0))
        return total

    def elaborate(self, platform):
        m = Module()
        plan, pe, d_layout = self.plan, self.pe, self.desc_layout
        word = signed(self.word_width)

        # ------------------------------------------------------------------ memories
        m.submodules.desc_rom = desc_rom = memory.Memory(shape=d_layout, depth=len(plan.steps),
                                                         init=self.descriptors())
        # The activation banks behind one set of ports: an address goes to every bank, the data
        # comes from the bank selected in the cycle of the address, a write enables one bank.
        operand_rd = _Port(self.addr_shape, word)   # MAC operands, pointwise sources, the output
        skip_rd = _Port(self.addr_shape, word)      # the skip branch
        act_wr = _Port(self.addr_shape, word)
        operand_bank, skip_bank, write_bank = Signal(), Signal(), Signal()
        operand_bank_q, skip_bank_q = Signal(), Signal()
        m.d.sync += [operand_bank_q.eq(operand_bank), skip_bank_q.eq(skip_bank)]
        # A conv step reads its skip branch while it drains, when the operand port is idle: through
        # that port. Only a pointwise step adding a skip (an add not fused into its conv) reads two
        # values at once, and only then do the banks get a second read port (a block RAM has one:
        # each read port costs a copy of the bank).
        skip_port = self.skip_port
        for b, (bits, words) in enumerate(plan.banks):
            m.submodules[f"act_bank{b}"] = bank = memory.Memory(shape=signed(bits), depth=words, init=[])
            rd0, wr = bank.read_port(), bank.write_port()
            m.d.comb += [rd0.addr.eq(operand_rd.addr),
                         wr.addr.eq(act_wr.addr), wr.data.eq(act_wr.data), wr.en.eq(act_wr.en & (write_bank == b))]
            with m.If(operand_bank_q == b):
                m.d.comb += operand_rd.data.eq(rd0.data)
            if skip_port:
                rd1 = bank.read_port()
                m.d.comb += rd1.addr.eq(skip_rd.addr)
                with m.If(skip_bank_q == b):
                    m.d.comb += skip_rd.data.eq(rd1.data)
        weight_rds = []
        weight_ram = None
        space = self.weight_space
        if self.loaded:
            # One run-time-loaded store for the arrays it holds: one read at a time (the step's
            # array), each array's word in the low bits of an address.
            m.submodules.weight_ram = weight_ram = WeightRam(
                space.depth, space.lanes, cells="spram" if self.weight_store == "spram" else "memory")
        for k, (spec, rom) in enumerate(zip(plan.arrays, plan.weight_roms, strict=True)):
            w_layout = data.ArrayLayout(unsigned(spec.w_bits), pe)
            if self.loaded and space.stored(k):
                view = _Port(unsigned(len(weight_ram.addr)), w_layout)
                m.d.comb += view.data.eq(weight_ram.rdata[:pe * spec.w_bits])
                weight_rds.append(view)
                continue
            m.submodules[f"weight_rom{k}"] = weight_rom = memory.Memory(shape=w_layout, depth=max(len(rom), 1),
                                                                        init=rom or [[0] * pe])
            weight_rds.append(weight_rom.read_port())
        c_layout = data.StructLayout({"M": signed(self.m_width), "A": signed(self.a_width), "B": signed(self.b_width)})
        m.submodules.const_rom = const_rom = memory.Memory(
            shape=c_layout, depth=len(plan.constants),
            init=[{"M": c[0], "A": c[1], "B": c[2]} for c in plan.constants])
        const_rd = const_rom.read_port()

        # ------------------------------------------------------------------ MAC arrays
        arrays = []
        for k, spec in enumerate(plan.arrays):
            if spec.kind == "max":
                mac = MaxArray(spec.act_bits, pe=pe)
            else:
                mac = MacArray(spec.kind, spec.w_bits, spec.act_bits, spec.act_signed, pe=pe, simd=1,
                               acc_width=spec.acc_width, frac_bits=self.post_frac_bits, registered_dsp=True)
            m.submodules[f"mac{k}"] = mac
            arrays.append(mac)
        acc_width = plan.acc_width

        # ------------------------------------------------------------------ requantizer
        tag_layout = data.StructLayout({"addr": self.addr_shape, "lane": _uint(pe - 1)})
        asq = None
        if self.asq_configs:
            m.submodules.asq = asq = self.asq_unit
        beta_reg = Signal(unsigned(asq.beta_width if asq else 1))
        m.submodules.requant = rq = TwoTermRequantizer(
            acc_width=acc_width, skip_width=self.word_width, m_width=self.m_width, a_width=self.a_width,
            b_width=self.b_width, out_width=self.word_width, max_shift=max(s.shift for s in plan.steps),
            tag_width=tag_layout.size, g_width=len(beta_reg))

        # ------------------------------------------------------------------ state
        d = Signal(d_layout)                      # the running step's descriptor
        step = Signal(range(len(plan.steps) + 1))
        desc_rd = desc_rom.read_port()
        m.d.comb += desc_rd.addr.eq(step)
        cw = self.coord_width
        group = Signal(d_layout["groups"].shape)
        gchan = Signal(range(plan.act_words + pe * 2))    # group * PE
        gofs_w = Signal(range(max(len(rom) for rom in plan.weight_roms) + 1))    # group * items
        gofs_o = Signal(signed(cw + 1))                    # first channel of the group * hw_out
        # Within a convolution group: the PE group's index and first channel; the group's offsets.
        jgroup = Signal(d_layout["pgroups"].shape)
        jchan = Signal(range(max(s.cout_g for s in plan.steps) + pe + 1))
        cg_chan = Signal.like(gchan)
        cg_in = Signal(signed(cw + 2))
        cg_out = Signal(signed(cw + 2))
        ox = Signal(signed(cw))
        oys, oxs = Signal(signed(cw)), Signal(signed(cw))  # oy * stride, ox * stride
        oys_w = Signal(signed(cw + 1))                      # oy * stride * w_in
        pix = Signal(signed(cw))
        ci, ky, kx = Signal(signed(cw)), Signal(signed(cw)), Signal(signed(cw))
        ci_off, ky_w = Signal(signed(cw + 1)), Signal(signed(cw + 1))
        witem = Signal(signed(cw + 1))
        lane = Signal(range(pe + 1))
        lane_hw = Signal(signed(cw + 1))                    # lane * hw_out
        wait = Signal(range(2 * TwoTermRequantizer.LATENCY + AsqUnit.CODE_LATENCY + 8))
        count = Signal(self.addr_shape)
        gsum = [Signal(word, name=f"gap_sum{p}") for p in range(pe)]
        running = Signal()

        in_base = plan.tensors[plan.input].base
        in_words = plan.tensors[plan.input].words
        out_base = plan.tensors[plan.output].base
        out_words = plan.tensors[plan.output].words
        out_bank = plan.tensors[plan.output].bank

        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # Issue stage (conv): address of the input position, its padding test, the weight word.
        iy = oys + ky - d.pad
        ix = oxs + kx - d.pad
        inside = (iy >= 0) & (iy < d.h_in) & (ix >= 0) & (ix < d.w_in)
        operand_addr = d.src + cg_in + ci_off + oys_w + ky_w - d.pad_w + oxs + kx - d.pad
        last_item = (ci == d.c_in - 1) & (ky == d.kernel - 1) & (kx == d.kernel - 1)
        issue, issue_first, issue_last = Signal(), Signal(), Signal()
        mac_valid, mac_first, mac_last, mac_inside = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [mac_valid.eq(issue), mac_first.eq(issue_first), mac_last.eq(issue_last),
                     mac_inside.eq(inside)]
        for k, mac in enumerate(arrays):
            spec = plan.arrays[k]
            a = operand_rd.data[:spec.act_bits]
            m.d.comb += [mac.valid.eq(mac_valid & (d.array == k)), mac.first.eq(mac_first), mac.last.eq(mac_last),
                         mac.a[0].eq(Mux(mac_inside, a.as_signed() if spec.act_signed else a, 0))]
            if spec.kind == "max":
                m.d.comb += mac.inside.eq(mac_inside)
                continue
            if self.loaded and space.stored(k):
                with m.If(d.array == k):
                    m.d.comb += weight_ram.addr.eq(d.weight_base + gofs_w + witem)
            else:
                m.d.comb += weight_rds[k].addr.eq(d.weight_base + gofs_w + witem)
            for p in range(pe):
                m.d.comb += mac.w[p][0].eq(weight_rds[k].data[p])
        mac_done = Signal()
        m.d.comb += mac_done.eq(sum(mac.done for mac in arrays) != 0)
        acc_now = Signal(signed(acc_width))
        with m.Switch(d.array):
            for k, mac in enumerate(arrays):
                with m.Case(k):
                    m.d.comb += acc_now.eq(_select(mac.acc, lane, pe))

        # Drain stage: one channel of the group per cycle into the requantizer (after a 1-cycle read).
        out_ofs = gofs_o + lane_hw + pix
        drain = Signal()
        chan_ok = ((jchan + lane) < d.cout_g) & ((gchan + lane) < d.c_out)
        feed_valid, feed_acc, feed_pointwise = Signal(), Signal(signed(acc_width)), Signal()
        feed_tag = Signal(tag_layout)
        m.d.sync += [feed_valid.eq(drain & chan_ok), feed_acc.eq(acc_now), feed_pointwise.eq(d.kind == 1),
                     feed_tag.addr.eq(d.dst + out_ofs), feed_tag.lane.eq(lane)]
        m.d.comb += [
            rq.i.valid.eq(feed_valid),
            rq.i.payload.acc.eq(Mux(feed_pointwise, operand_rd.data, feed_acc)),
            rq.i.payload.skip.eq(Mux(feed_pointwise, skip_rd.data, operand_rd.data) if skip_port
                                 else operand_rd.data),
            rq.i.payload.M.eq(const_rd.data.M), rq.i.payload.A.eq(const_rd.data.A), rq.i.payload.B.eq(const_rd.data.B),
            rq.i.payload.tag.eq(feed_tag),
            rq.g.eq(Mux(d.beta, beta_reg, 1)), rq.shift.eq(d.shift),
            rq.lo.eq(d.lo), rq.hi.eq(d.hi), rq.has_lo.eq(d.has_lo), rq.has_hi.eq(d.has_hi),
            const_rd.addr.eq(d.const_base + gchan + lane),
            skip_rd.addr.eq(d.skip + out_ofs),
        ]
        # The requantizer's output: the destination word, and the GAP sums of the group's lanes.
        out_tag = data.View(tag_layout, rq.o.payload.tag)
        with m.If(rq.o.valid):
            with m.Switch(out_tag.lane):
                for p in range(pe):
                    with m.Case(p):
                        m.d.sync += gsum[p].eq(gsum[p] + rq.o.payload.value)
        flush = Signal()
        flush_value = Signal(word)
        with m.Switch(lane):
            for p in range(pe):
                with m.Case(p):
                    m.d.comb += flush_value.eq(gsum[p])
        load = Signal()
        m.d.comb += [operand_bank.eq(d.src_bank), skip_bank.eq(d.skip_bank), write_bank.eq(d.dst_bank)]
        with m.If(load):
            code = self.i.payload[:self.in_width].as_signed() if self.loaded else self.i.payload
            m.d.comb += [act_wr.addr.eq(in_base + count), act_wr.data.eq(code), act_wr.en.eq(self.i.valid),
                         write_bank.eq(plan.tensors[plan.input].bank)]
        with m.Elif(flush):
            m.d.comb += [act_wr.addr.eq(d.gap + gchan + lane), act_wr.data.eq(flush_value), act_wr.en.eq(chan_ok),
                         write_bank.eq(d.gap_bank)]
        if asq is not None:
            with m.Elif(asq.c.valid):  # the ASQ unit's codes (its requantizer is idle then)
                m.d.comb += [act_wr.addr.eq(asq.c.payload.tag), act_wr.data.eq(asq.c.payload.code), act_wr.en.eq(1)]
        with m.Else():
            m.d.comb += [act_wr.addr.eq(out_tag.addr), act_wr.data.eq(rq.o.payload.value),
                         act_wr.en.eq(rq.o.valid & d.write_dst)]

        def start_pixel_loop():
            return [ox.eq(0), oys.eq(0), oxs.eq(0), oys_w.eq(0), pix.eq(0)]

        def start_items():
            return [ci.eq(0), ky.eq(0), kx.eq(0), ci_off.eq(0), ky_w.eq(0), witem.eq(0)]

        last_pixel = pix == d.hw_out - 1
        asq_regs = self._asq_wiring(m, asq, d, operand_rd) if asq is not None else None

        with m.FSM():
            if self.loaded:  # the first state: the loader's command
                self._loader_states(m, weight_ram, in_words)
            with m.State("LOAD"):
                m.d.comb += [load.eq(1), self.i.ready.eq(1)]
                with m.If(self.i.valid):
                    with m.If(count == 0):
                        m.d.sync += [running.eq(1), self.cycles.eq(1)]
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == in_words - 1):
                        m.d.sync += [count.eq(0), step.eq(0)]
                        m.next = "DESC"
            with m.State("DESC"):  # the descriptor ROM's read
                m.next = "START"
            with m.State("START"):
                m.d.sync += [jgroup.eq(0), jchan.eq(0), cg_chan.eq(0), cg_in.eq(0), cg_out.eq(0)]
                m.d.sync += [d.eq(desc_rd.data), group.eq(0), gchan.eq(0), gofs_w.eq(0), gofs_o.eq(0), lane.eq(0),
                             lane_hw.eq(0), *start_pixel_loop(), *start_items()]
                m.d.sync += [g.eq(0) for g in gsum]
                with m.If(desc_rd.data.kind == 0):
                    m.next = "ISSUE"
                with m.Elif(desc_rd.data.kind == 1):
                    m.next = "DRAIN"
                if asq is not None:
                    with m.Else():
                        m.next = "ASQ_GAP"
            with m.State("ISSUE"):
                m.d.comb += [issue.eq(1), issue_first.eq(witem == 0), issue_last.eq(last_item),
                             operand_rd.addr.eq(operand_addr)]
                m.d.sync += [kx.eq(kx + 1), witem.eq(witem + 1)]
                with m.If(kx == d.kernel - 1):
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1), ky_w.eq(ky_w + d.w_in)]
                    with m.If(ky == d.kernel - 1):
                        m.d.sync += [ky.eq(0), ky_w.eq(0), ci.eq(ci + 1), ci_off.eq(ci_off + d.hw_in)]
                with m.If(last_item):
                    m.next = "MAC"
            with m.State("MAC"):
                with m.If(mac_done):
                    m.d.sync += [lane.eq(0), lane_hw.eq(0)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [drain.eq(1), operand_rd.addr.eq(d.src + out_ofs)]
                with m.If(d.kind == 0):  # a conv's operand port is idle here: it reads the skip branch
                    m.d.comb += [operand_rd.addr.eq(d.skip + out_ofs), operand_bank.eq(d.skip_bank)]
                m.d.sync += [lane.eq(lane + 1), lane_hw.eq(lane_hw + d.hw_out)]
                with m.If(lane == pe - 1):
                    m.d.sync += [lane.eq(0), lane_hw.eq(0), *start_items()]
                    m.d.sync += [ox.eq(ox + 1), oxs.eq(oxs + d.stride), pix.eq(pix + 1)]
                    with m.If(ox == d.w_out - 1):
                        m.d.sync += [ox.eq(0), oxs.eq(0), oys.eq(oys + d.stride),
                                     oys_w.eq(oys_w + d.stride_w)]
                    with m.If(last_pixel):
                        m.d.sync += [wait.eq(0), *start_pixel_loop()]
                        m.next = "GROUP_END"
                    with m.Elif(d.kind == 0):
                        m.next = "ISSUE"
            with m.State("GROUP_END"):  # the requantizer empties; then the GAP sums
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == rq.latency + 2):
                    m.d.sync += [lane.eq(0), lane_hw.eq(0)]
                    with m.If(d.has_gap):
                        m.next = "FLUSH"
                    with m.Else():
                        m.next = "NEXT_GROUP"
            with m.State("FLUSH"):
                m.d.comb += flush.eq(1)
                m.d.sync += lane.eq(lane + 1)
                with m.If(lane == pe - 1):
                    m.d.sync += [lane.eq(0), *[g.eq(0) for g in gsum]]
                    m.next = "NEXT_GROUP"
            with m.State("NEXT_GROUP"):
                m.d.sync += [group.eq(group + 1), gofs_w.eq(gofs_w + d.items), lane.eq(0), lane_hw.eq(0),
                             jgroup.eq(jgroup + 1), jchan.eq(jchan + pe), gchan.eq(gchan + pe),
                             gofs_o.eq(gofs_o + d.pe_hw_out)]
                with m.If(jgroup == d.pgroups - 1):  # the next convolution group
                    m.d.sync += [jgroup.eq(0), jchan.eq(0), cg_chan.eq(cg_chan + d.cout_g),
                                 gchan.eq(cg_chan + d.cout_g), cg_in.eq(cg_in + d.in_group),
                                 cg_out.eq(cg_out + d.out_group), gofs_o.eq(cg_out + d.out_group)]
                with m.If(group == d.groups - 1):
                    m.next = "NEXT_STEP"
                with m.Elif(d.kind == 0):
                    m.next = "ISSUE"
                with m.Else():
                    m.next = "DRAIN"
            with m.State("NEXT_STEP"):
                m.d.sync += [step.eq(step + 1), count.eq(0)]
                with m.If(step == len(plan.steps) - 1):
                    m.next = "OUT_ADDR"
                with m.Else():
                    m.next = "DESC"
            if asq is not None:
                self._asq_states(m, asq, d, operand_rd, count, pix, gchan, wait, beta_reg, asq_regs)
            with m.State("OUT_ADDR"):
                m.d.comb += [operand_rd.addr.eq(out_base + count), operand_bank.eq(out_bank)]
                m.next = "OUT_SEND"
            with m.State("OUT_SEND"):
                m.d.comb += [operand_rd.addr.eq(out_base + count), operand_bank.eq(out_bank), self.o.valid.eq(1),
                             self.o.payload.value.eq(operand_rd.data), self.o.payload.last.eq(count == out_words - 1)]
                with m.If(self.o.ready):
                    m.d.sync += count.eq(count + 1)
                    m.next = "OUT_ADDR"
                    with m.If(count == out_words - 1):
                        m.d.sync += [count.eq(0), running.eq(0)]
                        m.next = "COMMAND" if self.loaded else "LOAD"
        return m


    def _loader_states(self, m, weight_ram, in_words):
        """The loader protocol (module notes): commands, the weight words and their checksum, the
        acknowledgement beat, and images dropped while no weights are loaded."""
        space = self.weight_space
        beats_per_word = 2 if self.beat_width == 8 else 1
        loaded = Signal()                       # a load's checksum matched
        addr = Signal(range(space.depth + 1))
        lane = Signal(range(space.lanes + 1))
        low = Signal(8)                         # a word's first byte (byte beats)
        high = Signal()                         # the next beat is a word's second byte
        word = Signal(16)
        total = Signal(16)
        ack_ok = Signal()
        skipped = Signal(range(in_words + 1))
        beat = self.i.payload.as_unsigned()
        if beats_per_word == 2:
            m.d.comb += word.eq(beat[:8] << 8 | low)
            word_done = high
        else:
            m.d.comb += word.eq(beat[:16])
            word_done = Const(1)
        with m.State("COMMAND"):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [addr.eq(0), lane.eq(0), high.eq(0), total.eq(0), skipped.eq(0)]
                with m.If(beat[:8] == LOAD_WEIGHTS_COMMAND):
                    m.d.sync += loaded.eq(0)
                    m.next = "WEIGHTS"
                with m.Elif(beat[:8] == IMAGE_COMMAND):
                    with m.If(loaded):
                        m.next = "LOAD"
                    with m.Else():
                        m.next = "SKIP"
                # any other byte is dropped
        with m.State("WEIGHTS"):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [high.eq(~high), low.eq(beat[:8])]
                with m.If(word_done):
                    m.d.comb += [weight_ram.addr.eq(addr), weight_ram.wdata.eq(word),
                                 weight_ram.wen.eq(1 << lane)]
                    m.d.sync += [total.eq(total + word), lane.eq(lane + 1), high.eq(0)]
                    with m.If(lane == space.lanes - 1):
                        m.d.sync += [lane.eq(0), addr.eq(addr + 1)]
                        with m.If(addr == space.depth - 1):
                            m.next = "CHECKSUM"
        with m.State("CHECKSUM"):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [high.eq(~high), low.eq(beat[:8])]
                with m.If(word_done):
                    m.d.sync += [ack_ok.eq(word == total), high.eq(0)]
                    m.next = "ACK"
        with m.State("ACK"):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.value.eq(ack_ok), self.o.payload.last.eq(1)]
            with m.If(self.o.ready):
                m.d.sync += loaded.eq(ack_ok)
                m.next = "COMMAND"
        with m.State("SKIP"):  # an image before any weights loaded: its codes are dropped, no reply
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += skipped.eq(skipped + 1)
                with m.If(skipped == in_words - 1):
                    m.next = "COMMAND"
        return loaded

    @staticmethod
    def _asq_wiring(m, asq, d, operand_rd):
        """The ASQ unit's inputs: registers the asq states set, the value read the cycle before."""
        gap_v, gap_first, q_v = Signal(), Signal(), Signal()
        gap_chan = Signal.like(asq.gap.payload.chan)
        q_tag = Signal.like(asq.q.payload.tag)
        m.d.sync += [gap_v.eq(0), q_v.eq(0)]
        m.d.comb += [asq.sel.eq(d.asq_sel),
                     asq.gap.valid.eq(gap_v), asq.gap.payload.chan.eq(gap_chan), asq.gap.payload.first.eq(gap_first),
                     asq.gap.payload.y.eq(operand_rd.data), asq.q.valid.eq(q_v), asq.q.payload.tag.eq(q_tag),
                     asq.q.payload.y.eq(operand_rd.data)]
        return gap_v, gap_first, gap_chan, q_v, q_tag

    @staticmethod
    def _asq_states(m, asq, d, operand_rd, count, pix, chan, wait, beta_reg, regs):
        """An asq step: the ``y`` map into the unit's GAP, the adapter, then the map's codes.

        Each pass reads the map in (C, H, W) order, one value per cycle (``count`` the offset),
        the unit taking the value the cycle after its read.
        """
        gap_v, gap_first, gap_chan, q_v, q_tag = regs
        last = (chan == d.c_out - 1) & (pix == d.hw_out - 1)

        def advance():
            return [count.eq(count + 1), pix.eq(pix + 1)]

        with m.State("ASQ_GAP"):
            m.d.comb += operand_rd.addr.eq(d.src + count)
            m.d.sync += [gap_v.eq(1), gap_chan.eq(chan), gap_first.eq(pix == 0), *advance()]
            with m.If(pix == d.hw_out - 1):
                m.d.sync += [pix.eq(0), chan.eq(chan + 1)]
            with m.If(last):
                m.d.sync += wait.eq(0)
                m.next = "ASQ_SETTLE"
        with m.State("ASQ_SETTLE"):  # the last value reaches the unit's GAP memory
            m.d.sync += wait.eq(wait + 1)
            with m.If(wait == 3):
                m.next = "ASQ_START"
        with m.State("ASQ_START"):
            m.d.comb += asq.start.eq(1)
            m.next = "ASQ_BUSY"
        with m.State("ASQ_BUSY"):
            with m.If(~asq.busy):
                m.d.sync += [beta_reg.eq(asq.beta), count.eq(0), pix.eq(0), chan.eq(0)]
                m.next = "ASQ_QUANT"
        with m.State("ASQ_QUANT"):
            m.d.comb += operand_rd.addr.eq(d.src + count)
            m.d.sync += [q_v.eq(1), q_tag.eq(d.dst + count), *advance()]
            with m.If(pix == d.hw_out - 1):
                m.d.sync += [pix.eq(0), chan.eq(chan + 1)]
            with m.If(last):
                m.d.sync += wait.eq(0)
                m.next = "ASQ_DRAIN"
        with m.State("ASQ_DRAIN"):  # the last code is written
            m.d.sync += wait.eq(wait + 1)
            with m.If(wait == AsqUnit.CODE_LATENCY + 2):
                m.next = "NEXT_STEP"


class _Port:
    """Address, data and enable signals standing for the same port of every activation bank."""

    def __init__(self, addr_shape, data_shape):
        self.addr, self.data, self.en = Signal(addr_shape), Signal(data_shape), Signal()


def _select(acc, lane, pe):
    """``acc[lane]`` of a MAC array's PE accumulators (a multiplexer)."""
    value = acc[0]
    for p in range(1, pe):
        value = Mux(lane == p, acc[p], value)
    return value
