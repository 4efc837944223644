"""``asq_accel``: the whole network of a bundle as one streaming accelerator.

Ports (docs/hardware.md gives the Verilog names and bit layouts):

- ``i``: ``lib.stream`` of conv1's input codes (signed 8-bit), one per beat, ``C*H*W`` beats per
  image in (channel, row, column) order. Accepted only while the accelerator waits for an image.
- ``o``: ``lib.stream`` of ``{value: signed(32), last: 1}``: the logits (``FL`` fractional bits) in
  class order with ``last = 0``, then the predicted class (first index of the largest logit) with
  ``last = 1``.
- ``cycles``: clock cycles of the last inference, from the cycle of the first input beat to the
  cycle of the class beat, inclusive (it counts up while an inference runs).

Architecture (sequencer unrolled per layer at generation time; one FSM state per phase per layer):

1. LOAD: input codes into layer 0's activation buffer.
2. RUN<L>: the layer's loops, outermost first: output row, output column, PE group of output
   channels, kernel row, kernel column, SIMD chunk of input channels. Each cycle issues one set:
   SIMD activations (one per bank of the input buffer, zero for padding) and the PE x SIMD weights
   (one ROM word) to the layer's engine. Engines: the main MAC array (PE x SIMD, MUL at BITS) and
   the wide engine (PE x 1, int8 weights, 9-bit signed activations) for the 8-bit first/last layers.
   A finished group's PE accumulators go to a serializer that feeds the shared requantizer one per
   cycle; a group's last set waits while the serializer could still be busy (only when a group is
   shorter than PE sets). Requantized values are written to the next layer's input buffer (codes),
   to the ``y`` buffer and the ASQ unit's GAP (when the next input is ASQ), or to the logits.
3. DRAIN<L>: PE + 7 cycles until the last value is written.
4. For an ASQ next input: ASQ<L+1>: beta and the reciprocal (:class:`hw.rtl.asq.AsqUnit`), then
   QPASS<L+1>: the buffered ``y`` map, one value per cycle, through the unit's quantizer into the
   next layer's input buffer.
5. OUT: the logits and the class on ``o``; then back to LOAD.

Buffers: the input of a layer run on an engine with SIMD lanes is one memory whose word holds
SIMD lanes: channel ``c`` in lane ``c % SIMD`` of the word at ``(c // SIMD) * H * W + y * W + x``
(lanes written one at a time through the write port's granularity); fc reads its input flattened
in (C, H, W) order, one value per cycle.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl.asq import AsqConfig, AsqUnit
from hw.rtl.mac import MacArray
from hw.rtl.plan import WIDE_ACT_BITS, WIDE_W_BITS, NetPlan
from hw.rtl.requant import Requantizer, RequantSpec

OUT_WIDTH = 32
MAC_LATENCY = 3  # issue -> memory data (1) -> products (1) -> accumulators (1) -> done


def _log2(n: int) -> int:
    return n.bit_length() - 1


def output_layout():
    """Payload of the output stream: a logit or (``last``) the predicted class."""
    return data.StructLayout({"value": signed(OUT_WIDTH), "last": unsigned(1)})


def _raw_weight(code: int, layer) -> int:
    if layer.w_kind == "int":
        return int(code) & ((1 << layer.w_bits) - 1)
    return int(code)


class AsqAccel(wiring.Component):
    """The accelerator for one :class:`hw.rtl.plan.NetPlan` (see the module docstring)."""

    def __init__(self, plan: NetPlan):
        self.plan = plan
        first = plan.layers[0]
        in_shape = signed(first.act_bits) if first.act_signed else unsigned(first.act_bits)
        self._build_units()
        super().__init__({
            "i": In(stream.Signature(in_shape)),
            "o": Out(stream.Signature(output_layout())),
            "cycles": Out(unsigned(32)),
        })

    # ------------------------------------------------------------------ generation-time units

    def _build_units(self):
        plan = self.plan
        main, wide = plan.engine_layers("main"), plan.engine_layers("wide")
        self.main = self.wide = None
        if main:
            self.main = MacArray(plan.mul, plan.bits, plan.bits, False, pe=plan.pe, simd=plan.simd,
                                 acc_width=max(la.acc_width for la in main), frac_bits=plan.frac_bits)
        if wide:
            # In logic: the UP5K's 8 DSPs go to the wider requantizer and ASQ products.
            self.wide = MacArray("int", WIDE_W_BITS, WIDE_ACT_BITS, True, pe=plan.pe, simd=1,
                                 acc_width=max(la.acc_width for la in wide), in_logic=True)
        self.acc_width = max(la.acc_width for la in plan.layers)
        specs = []
        for la in plan.layers:
            req = la.requant
            hi = req["hi"]
            specs.append(RequantSpec(M=tuple(req["M"]), B=tuple(req["B"]), S=req["S"], G=req["G"],
                                     lo=req["lo"], hi=hi,
                                     g_max=la.asq_in.beta_max if la.asq_in is not None else 1))
        self.max_pixels = max(la.out_pixels for la in plan.layers)
        self.requant = Requantizer(specs, acc_width=self.acc_width,
                                   channels=max(la.groups * la.pe for la in plan.layers),
                                   tag_width=max(self.max_pixels - 1, 1).bit_length())
        if self.requant.out_width > OUT_WIDTH:
            raise ValueError(f"logits need {self.requant.out_width} bits, more than {OUT_WIDTH}")
        self.asq_layers = [la for la in plan.layers if la.asq_in is not None]
        self.asq = None
        if self.asq_layers:
            configs = [AsqConfig(la.asq_in, la.c_in, la.in_pixels,
                                 plan.layers[la.index - 1].requant["hi"]) for la in self.asq_layers]
            self.chan_bits = max(max(la.c_in - 1 for la in self.asq_layers), 1).bit_length()
            self.pix_bits = max(max(la.in_pixels - 1 for la in self.asq_layers), 1).bit_length()
            self.asq = AsqUnit(configs, tag_width=self.chan_bits + self.pix_bits)

    # ------------------------------------------------------------------ cycle model

    @staticmethod
    def issue_cycles(layer) -> int:
        """Cycles of RUN<L>: one per set plus the serializer stalls of short groups."""
        pe, since, t = layer.pe, layer.pe, 0
        for _ in range(layer.out_pixels * layer.groups):
            for k in range(layer.group_items):
                last = k == layer.group_items - 1
                while last and since < pe:
                    t, since = t + 1, since + 1
                t += 1
                since = 1 if last else min(since + 1, pe)
        return t

    def drain_cycles(self) -> int:
        return self.plan.pe + MAC_LATENCY + Requantizer.LATENCY

    def cycles_per_inference(self) -> int:
        """Clock cycles per image with no stalls on either stream (what ``cycles`` reads)."""
        plan = self.plan
        total = plan.input_codes
        for la in plan.layers:
            total += self.issue_cycles(la) + self.drain_cycles()
            if la.index + 1 < len(plan.layers) and plan.layers[la.index + 1].asq_in is not None:
                nxt = plan.layers[la.index + 1]
                k = self.asq_layers.index(nxt)
                total += 1 + self.asq.beta_cycles(k) + nxt.c_in * nxt.in_pixels + 3
        return total + 2 * plan.n_logits + 1  # each logit: one read cycle, one beat

    # ------------------------------------------------------------------ elaboration

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        m.submodules.requant = rq = self.requant
        if self.main is not None:
            m.submodules.main = self.main
        if self.wide is not None:
            m.submodules.wide = self.wide
        if self.asq is not None:
            m.submodules.asq = self.asq
        bufs = self._bufs = [self._act_buffer(m, la) for la in plan.layers]
        roms = self._weight_roms(m)
        ybuf = self._y_buffer(m)

        cur = Signal(range(len(plan.layers) + 1))  # layer being run (requant's layer)
        m.d.comb += rq.layer.eq(cur)
        betas = {la.index: Signal(unsigned(self.asq.beta_width), name=f"beta_{la.name}")
                 for la in self.asq_layers}
        with m.Switch(cur):
            for la in plan.layers:
                with m.Case(la.index):
                    m.d.comb += rq.g.eq(betas[la.index] if la.index in betas else 1)

        issue = self._issue_signals(m)
        self._engine_feed(m, issue, bufs, roms, cur)
        self._serializer(m, issue, cur)
        self._requant_sink(m, bufs, ybuf, cur)
        logits = self._logit_regs(m, cur)
        self._fsm(m, issue, bufs, ybuf, roms, cur, betas, logits)
        return m

    # buffers ------------------------------------------------------------

    def _act_buffer(self, m, la):
        """One memory per layer input, a word = the SIMD lanes of one address (one BRAM where
        SIMD banks would take SIMD); lanes are written one at a time (write granularity)."""
        depth = (la.c_in // la.simd) * la.in_pixels
        mem = memory.Memory(shape=unsigned(la.simd * la.act_bits), depth=depth, init=[])
        m.submodules[f"act_{la.name}"] = mem
        return mem.read_port(), mem.write_port(granularity=la.act_bits)

    def _write_act(self, m, la, chan, pix, value, en):
        """Write one value of channel ``chan``, pixel ``pix`` into layer ``la``'s input buffer."""
        shift = _log2(la.simd)
        _, wp = self._bufs[la.index]
        lane_bits = [value[:la.act_bits]] * la.simd
        m.d.comb += [wp.addr.eq((chan >> shift) * la.in_pixels + pix), wp.data.eq(Cat(*lane_bits))]
        for b in range(la.simd):
            lane_hit = (chan[:shift] == b) if shift else 1
            m.d.comb += wp.en[b].eq(en & lane_hit)

    def _weight_roms(self, m):
        roms = {}
        for engine, simd, wbits in (("main", self.plan.simd, self.plan.bits), ("wide", 1, WIDE_W_BITS)):
            layers = self.plan.engine_layers(engine)
            if not layers:
                continue
            words, bases = [], {}
            for la in layers:
                bases[la.index] = len(words)
                words += self._layer_words(la, simd, wbits)
            rom = memory.Memory(shape=unsigned(self.plan.pe * simd * wbits), depth=len(words), init=words)
            m.submodules[f"weights_{engine}"] = rom
            roms[engine] = (rom.read_port(), bases)
        return roms

    def _layer_words(self, la, simd, wbits):
        """ROM words in issue order: (group, ky, kx, chunk); lane (p, s) at bit (p*simd + s)*wbits."""
        pe, w = self.plan.pe, la.weights
        words = []
        for grp in range(la.groups):
            for ky in range(la.kernel):
                for kx in range(la.kernel):
                    for ck in range(la.chunks):
                        word = 0
                        for p in range(pe):
                            co = grp * pe + p
                            for s in range(simd):
                                ci = ck * simd + s
                                raw = _raw_weight(w[co, ci, ky, kx], la) if co < la.c_out else 0
                                word |= raw << ((p * simd + s) * wbits)
                        words.append(word)
        return words

    def _y_buffer(self, m):
        if self.asq is None:
            return None
        depth = max(la.c_in * la.in_pixels for la in self.asq_layers)
        mem = memory.Memory(shape=unsigned(self.asq.y_width), depth=depth, init=[])
        m.submodules.y_buffer = mem
        return mem.read_port(), mem.write_port()

    # issue pipeline ------------------------------------------------------

    def _issue_signals(self, m):
        """Loop counters and the 3-stage tag pipeline that follows a set through the engine."""
        layers = self.plan.layers
        sig = {
            "oy": Signal(range(max(la.h_out for la in layers) + 1)),
            "ox": Signal(range(max(la.w_out for la in layers) + 1)),
            "grp": Signal(range(max(la.groups for la in layers) + 1)),
            "ky": Signal(range(max(la.kernel for la in layers) + 1)),
            "kx": Signal(range(max(la.kernel for la in layers) + 1)),
            "ck": Signal(range(max(la.chunks for la in layers) + 1)),
            "fire": Signal(),  # a set is issued this cycle
            "first": Signal(), "last": Signal(), "inb": Signal(),
            "since": Signal(range(self.plan.pe + 1), init=self.plan.pe),
        }
        pix_shape = unsigned(max(self.max_pixels - 1, 1).bit_length())
        grp_shape = sig["grp"].shape()
        for k in (1, 2, 3):
            sig[f"v{k}"] = Signal(name=f"v{k}")
            sig[f"pix{k}"] = Signal(pix_shape, name=f"pix{k}")
            sig[f"grp{k}"] = Signal(grp_shape, name=f"grp{k}")
        sig["pix0"] = Signal(pix_shape)
        sig["first1"], sig["last1"], sig["inb1"] = Signal(), Signal(), Signal()
        m.d.sync += [sig["v1"].eq(sig["fire"]), sig["first1"].eq(sig["first"]), sig["last1"].eq(sig["last"]),
                     sig["inb1"].eq(sig["inb"]), sig["pix1"].eq(sig["pix0"]), sig["grp1"].eq(sig["grp"])]
        for k in (2, 3):
            m.d.sync += [sig[f"v{k}"].eq(sig[f"v{k - 1}"]), sig[f"pix{k}"].eq(sig[f"pix{k - 1}"]),
                         sig[f"grp{k}"].eq(sig[f"grp{k - 1}"])]
        with m.If(sig["fire"] & sig["last"]):
            m.d.sync += sig["since"].eq(1)
        with m.Elif(sig["since"] < self.plan.pe):
            m.d.sync += sig["since"].eq(sig["since"] + 1)
        return sig

    def _engine_feed(self, m, issue, bufs, roms, cur):
        """Stage 1: memory data (zero for padding) and ROM words into the active engine."""
        for engine, mac in (("main", self.main), ("wide", self.wide)):
            if mac is None:
                continue
            rp = roms[engine][0]
            m.d.comb += [mac.valid.eq(0), mac.first.eq(issue["first1"]), mac.last.eq(issue["last1"]),
                         mac.w.eq(rp.data)]
            with m.Switch(cur):
                for la in self.plan.engine_layers(engine):
                    with m.Case(la.index):
                        m.d.comb += mac.valid.eq(issue["v1"])
                        word = bufs[la.index][0].data
                        for s in range(la.simd):
                            lane = word[s * la.act_bits:(s + 1) * la.act_bits]
                            value = lane.as_signed() if la.act_signed else lane
                            m.d.comb += mac.a[s].eq(Mux(issue["inb1"], value, 0))

    def _serializer(self, m, issue, cur):
        """Finished PE accumulators -> the requantizer, one channel per cycle."""
        pe = self.plan.pe
        res = [Signal(signed(self.acc_width), name=f"res{k}") for k in range(pe)]
        left = Signal(range(pe + 1))
        idx = Signal(range(pe + 1))
        grp = Signal.like(issue["grp3"], name="ser_grp")
        pix = Signal.like(issue["pix3"], name="ser_pix")
        done = Signal()
        accs = [Signal(signed(self.acc_width), name=f"done_acc{k}") for k in range(pe)]
        for engine, mac in (("main", self.main), ("wide", self.wide)):
            if mac is None:
                continue
            with m.Switch(cur):
                for la in self.plan.engine_layers(engine):
                    with m.Case(la.index):
                        m.d.comb += done.eq(mac.done)
                        m.d.comb += [accs[k].eq(mac.acc[k]) for k in range(pe)]
        with m.If(done):
            m.d.sync += [r.eq(a) for r, a in zip(res, accs, strict=True)]
            m.d.sync += [left.eq(pe), idx.eq(0), grp.eq(issue["grp3"]), pix.eq(issue["pix3"])]
        with m.Elif(left != 0):
            m.d.sync += [res[k].eq(res[k + 1]) for k in range(pe - 1)]
            m.d.sync += [left.eq(left - 1), idx.eq(idx + 1)]
        rq = self.requant
        m.d.comb += [rq.i.valid.eq(left != 0), rq.i.payload.acc.eq(res[0]),
                     rq.i.payload.chan.eq(grp * pe + idx), rq.i.payload.tag.eq(pix)]

    def _requant_sink(self, m, bufs, ybuf, cur):
        """Route each requantized value: next input buffer, y buffer + GAP, or logits."""
        rq, layers = self.requant, self.plan.layers
        out = rq.o.payload
        self._logit_we = Signal()
        with m.Switch(cur):
            for la in layers:
                with m.Case(la.index):
                    en = rq.o.valid & (out.chan < la.c_out)
                    if la.output == "codes":
                        nxt = layers[la.index + 1]
                        self._route_codes(m, nxt, out.chan, out.tag, out.value, en)
                    elif la.output == "y":
                        rp, wp = ybuf
                        m.d.comb += [wp.addr.eq(out.chan * la.out_pixels + out.tag), wp.data.eq(out.value),
                                     wp.en.eq(en)]
                        m.d.comb += [self.asq.gap.valid.eq(en), self.asq.gap.payload.chan.eq(out.chan),
                                     self.asq.gap.payload.y.eq(out.value),
                                     self.asq.gap.payload.first.eq(out.tag == 0)]  # pixel 0 first
                    else:
                        m.d.comb += self._logit_we.eq(en)

    def _route_codes(self, m, nxt, chan, pix, value, en):
        """Codes for layer ``nxt``'s input buffer (fc: flattened (C, H, W) index)."""
        if nxt.kind == "fc":
            prev = self.plan.layers[nxt.index - 1]
            flat = chan * prev.out_pixels + pix
            self._write_act(m, nxt, flat, 0, value, en)
        else:
            self._write_act(m, nxt, chan, pix, value, en)

    def _logit_regs(self, m, cur):
        """The logits in a small memory (no register file and read multiplexers)."""
        last = self.plan.layers[-1]
        mem = memory.Memory(shape=signed(self.requant.out_width), depth=last.c_out, init=[])
        m.submodules.logits = mem
        wp = mem.write_port()
        m.d.comb += [wp.en.eq(self._logit_we), wp.addr.eq(self.requant.o.payload.chan),
                     wp.data.eq(self.requant.o.payload.value)]
        return mem.read_port()

    def _fsm(self, m, issue, bufs, ybuf, roms, cur, betas, logits):
        plan = self.plan
        layers = plan.layers
        first = layers[0]
        n_in = plan.input_codes
        load_c = Signal(range(first.c_in + 1))
        load_p = Signal(range(first.in_pixels + 1))
        load_n = Signal(range(n_in + 1))
        counting = Signal()
        drain = Signal(range(max(self.drain_cycles(), 4) + 1))
        qc = Signal(range(max([la.c_in for la in self.asq_layers] + [1]) + 1))
        qp = Signal(range(max([la.in_pixels for la in self.asq_layers] + [1]) + 1))
        qv1 = Signal()
        qtag1 = Signal(unsigned(self.asq.q.payload.tag.shape().width)) if self.asq else None
        oidx = Signal(range(plan.n_logits + 1))
        best_val = Signal(signed(self.requant.out_width))
        fresh = Signal()
        best_idx = Signal(range(plan.n_logits + 1))

        with m.If(counting):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        if self.asq is not None:
            self._asq_sel = Signal.like(self.asq.sel, name="asq_sel")
            m.d.comb += self.asq.sel.eq(self._asq_sel)
            # y read (issued in QPASS) arrives one cycle later into the ASQ quantizer.
            m.d.sync += qv1.eq(0)
            m.d.comb += [self.asq.q.valid.eq(qv1), self.asq.q.payload.y.eq(ybuf[0].data),
                         self.asq.q.payload.tag.eq(qtag1)]
            self._asq_code_sink(m, cur)

        with m.FSM(name="seq"):
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    self._write_act(m, first, load_c, load_p, self.i.payload, 1)
                    with m.If(load_n == 0):
                        m.d.sync += [self.cycles.eq(1), counting.eq(1)]
                    m.d.sync += load_n.eq(load_n + 1)
                    with m.If(load_p == first.in_pixels - 1):
                        m.d.sync += [load_p.eq(0), load_c.eq(load_c + 1)]
                    with m.Else():
                        m.d.sync += load_p.eq(load_p + 1)
                    with m.If(load_n == n_in - 1):
                        m.d.sync += [load_n.eq(0), load_c.eq(0), load_p.eq(0), cur.eq(0)]
                        m.next = "RUN0"
            for la in layers:
                self._run_state(m, la, issue, bufs, roms, cur, drain)
                self._drain_state(m, la, drain, cur, qc, qp)
                nxt = layers[la.index + 1] if la.index + 1 < len(layers) else None
                if nxt is not None and nxt.asq_in is not None:
                    self._asq_states(m, nxt, betas, qc, qp, qv1, qtag1, ybuf, cur)
            with m.State("OUT"):
                # logits.data is the logit at oidx one cycle after oidx is set: ``fresh`` says so.
                is_class = oidx == plan.n_logits
                logit = logits.data
                m.d.comb += [logits.addr.eq(oidx), self.o.payload.last.eq(is_class),
                             self.o.valid.eq(is_class | fresh),
                             self.o.payload.value.eq(Mux(is_class, best_idx, logit))]
                m.d.sync += fresh.eq(1)
                with m.If(self.o.valid & self.o.ready):
                    m.d.sync += [oidx.eq(oidx + 1), fresh.eq(0)]
                    with m.If(~is_class & ((oidx == 0) | (logit > best_val))):
                        m.d.sync += [best_val.eq(logit), best_idx.eq(oidx)]
                    with m.If(is_class):
                        m.d.sync += [oidx.eq(0), counting.eq(0)]
                        m.next = "LOAD"

    def _run_state(self, m, la, issue, bufs, roms, cur, drain):
        """RUN<L>: walk the loops, one set per cycle, unrolled with this layer's constants."""
        oy, ox, grp, ky, kx, ck = (issue[k] for k in ("oy", "ox", "grp", "ky", "kx", "ck"))
        with m.State(f"RUN{la.index}"):
            width = max(la.h_in, la.w_in, la.pad + 1).bit_length() + 2
            iy = Signal(signed(width), name=f"iy_{la.name}")
            ix = Signal(signed(width), name=f"ix_{la.name}")
            m.d.comb += [iy.eq(oy * la.stride + ky - la.pad), ix.eq(ox * la.stride + kx - la.pad)]
            inb = self._in_bounds(la, iy, ix)
            first = (ky == 0) & (kx == 0) & (ck == 0)
            last = (ky == la.kernel - 1) & (kx == la.kernel - 1) & (ck == la.chunks - 1)
            fire = ~last | (issue["since"] >= la.pe)
            addr = ck * la.in_pixels + iy.as_unsigned() * la.w_in + ix.as_unsigned()
            m.d.comb += bufs[la.index][0].addr.eq(Mux(inb, addr, 0))
            rom, bases = roms[la.engine]
            m.d.comb += rom.addr.eq(bases[la.index]
                                    + ((grp * la.kernel + ky) * la.kernel + kx) * la.chunks + ck)
            m.d.comb += [issue["fire"].eq(fire), issue["first"].eq(first), issue["last"].eq(last),
                         issue["inb"].eq(inb), issue["pix0"].eq(oy * la.w_out + ox)]
            with m.If(fire):
                self._advance(m, la, issue)

    @staticmethod
    def _in_bounds(la, iy, ix):
        """Padding test, with only the comparisons that can fail for this layer's loop bounds."""
        inb = 1
        reach = (la.h_out - 1) * la.stride + la.kernel - 1 - la.pad  # largest iy
        reach_x = (la.w_out - 1) * la.stride + la.kernel - 1 - la.pad
        if la.pad:
            inb = inb & (iy >= 0) & (ix >= 0)
        if reach >= la.h_in:
            inb = inb & (iy < la.h_in)
        if reach_x >= la.w_in:
            inb = inb & (ix < la.w_in)
        return inb

    def _advance(self, m, la, issue):
        """Step the counters, innermost (SIMD chunk) first; the final set goes to DRAIN."""
        order = [("ck", la.chunks), ("kx", la.kernel), ("ky", la.kernel), ("grp", la.groups),
                 ("ox", la.w_out), ("oy", la.h_out)]
        wraps = []
        for name, bound in order:
            sig = issue[name]
            at_end = sig == bound - 1
            carry = 1
            for w in wraps:
                carry = carry & w
            with m.If(carry):
                m.d.sync += sig.eq(Mux(at_end, 0, sig + 1))
            wraps.append(at_end)
        done_all = 1
        for w in wraps:
            done_all = done_all & w
        with m.If(done_all):
            m.next = f"DRAIN{la.index}"

    def _drain_state(self, m, la, drain, cur, qc, qp):
        layers = self.plan.layers
        with m.State(f"DRAIN{la.index}"):
            with m.If(drain == self.drain_cycles() - 1):
                m.d.sync += drain.eq(0)
                nxt = layers[la.index + 1] if la.index + 1 < len(layers) else None
                if nxt is None:
                    m.next = "OUT"
                elif nxt.asq_in is not None:
                    # A register, not the FSM state: ``sel`` steers the ASQ unit's constants.
                    m.d.sync += self._asq_sel.eq(self.asq_layers.index(nxt))
                    m.next = f"ASQ{nxt.index}"
                else:
                    m.d.sync += cur.eq(nxt.index)
                    m.next = f"RUN{nxt.index}"
            with m.Else():
                m.d.sync += drain.eq(drain + 1)

    def _asq_states(self, m, nxt, betas, qc, qp, qv1, qtag1, ybuf, cur):
        """ASQ<L>: beta and reciprocal; QPASS<L>: quantize the buffered y into L's input buffer."""
        asq = self.asq
        with m.State(f"ASQ{nxt.index}"):
            m.d.comb += asq.start.eq(1)
            m.d.sync += cur.eq(nxt.index)
            m.next = f"ASQWAIT{nxt.index}"
        with m.State(f"ASQWAIT{nxt.index}"):
            with m.If(~asq.busy):
                m.d.sync += betas[nxt.index].eq(asq.beta)
                m.next = f"QPASS{nxt.index}"
        with m.State(f"QPASS{nxt.index}"):
            rp = ybuf[0]
            m.d.comb += rp.addr.eq(qc * nxt.in_pixels + qp)
            m.d.sync += [qv1.eq(1), qtag1.eq(qc << self.pix_bits | qp)]
            with m.If(qp == nxt.in_pixels - 1):
                m.d.sync += [qp.eq(0), qc.eq(qc + 1)]
                with m.If(qc == nxt.c_in - 1):
                    m.d.sync += qc.eq(0)
                    m.next = f"QDRAIN{nxt.index}"
            with m.Else():
                m.d.sync += qp.eq(qp + 1)
        with m.State(f"QDRAIN{nxt.index}"):
            # 3 cycles: y read (1), the unit's quantizer (2); the last code is written in the third.
            drain = Signal(range(4), name=f"qdrain_{nxt.name}")
            m.d.sync += drain.eq(drain + 1)
            with m.If(drain == 2):
                m.d.sync += drain.eq(0)
                m.next = f"RUN{nxt.index}"

    def _asq_code_sink(self, m, cur):
        """Codes from the ASQ unit's quantizer into the input buffer of the layer being prepared."""
        out = self.asq.c
        chan = out.payload.tag[self.pix_bits:]
        pix = out.payload.tag[:self.pix_bits]
        with m.Switch(cur):
            for la in self.asq_layers:
                with m.Case(la.index):
                    if la.kind == "fc":
                        self._write_act(m, la, chan * la.in_pixels + pix, 0, out.payload.code, out.valid)
                    else:
                        self._write_act(m, la, chan, pix, out.payload.code, out.valid)
