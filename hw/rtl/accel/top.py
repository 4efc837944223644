"""``asq_accel``: the accelerator's components, built for one plan and wired together.

Ports (docs/hardware.md gives the Verilog names and bit layouts):

- ``i``: ``lib.stream`` of conv1's input codes (signed 8-bit), one per beat, ``C*H*W`` beats per
  image in (channel, row, column) order. Accepted only while the accelerator waits for an image
  and not in reset.
- ``o``: ``lib.stream`` of ``{value: signed(32), last: 1}``: the logits (``FL`` fractional bits) in
  class order with ``last = 0``, then the predicted class (first index of the largest logit) with
  ``last = 1``; ``valid`` is low in reset.
- ``cycles``: clock cycles of the last inference, from the cycle of the first input beat to the
  cycle of the class beat, inclusive (it counts up while an inference runs).

Phases (:class:`~hw.rtl.accel.sequencer.Sequencer`, unrolled per layer at generation time):

1. LOAD: input codes into layer 0's activation buffer.
2. RUN<L>: the address generator walks the layer's loops, one input set per cycle: SIMD
   activations (one buffer word, zero for padding) and the PE x SIMD weights (one ROM word) to the
   layer's engine. Engines: the main MAC array (PE x SIMD, MUL at BITS) and the wide engine (PE x 1,
   int8 weights, 9-bit signed activations) for the 8-bit first/last layers. A finished group's PE
   accumulators go to the serializer that feeds the shared requantizer one per cycle. Requantized
   values are written to the next layer's input buffer (codes), to the ``y`` buffer and the ASQ
   unit's GAP (when the next input is ASQ), or to the logits.
3. DRAIN<L>: for an ASQ next input, until the last value of the layer is written
   (:meth:`AsqAccel.drain_cycles`); otherwise only as long as the next phase's first reads need
   (often none: the next layer's loops start while this one's sums drain, each value carrying its
   layer down the engine, serializer and requantizer).
4. For an ASQ next input: ASQ<L+1>: beta and the reciprocal (:class:`hw.rtl.asq.AsqUnit`), then
   QPASS<L+1>: the buffered ``y`` map, one value per cycle, through the unit's quantizer into the
   next layer's input buffer; RUN<L+1> starts during the pass, as soon as its reads follow the
   writes.
5. OUT: the logits and the class on ``o`` (while the last logits may still be written); then back
   to LOAD.

:func:`hw.rtl.accel.schedule.schedule` places the phases at generation time; the cycle model and
the sequencer's phase lengths both come from it.
"""

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl.accel.address import AddressGenerator
from hw.rtl.accel.argmax import ArgmaxOutput, output_layout
from hw.rtl.accel.buffers import ActivationBuffer, weight_rom
from hw.rtl.accel.schedule import ENGINE_LATENCY, MAC_LATENCY, Schedule, schedule
from hw.rtl.accel.sequencer import Sequencer
from hw.rtl.accel.serializer import Serializer
from hw.rtl.asq import AsqConfig, AsqUnit
from hw.rtl.dsp import PipelinedProduct
from hw.rtl.mac import MacArray
from hw.rtl.plan import DSP_BLOCKS, WIDE_ACT_BITS, WIDE_W_BITS, NetPlan
from hw.rtl.requant import Requantizer


@dataclass(frozen=True)
class Engine:
    """A MAC array with its weight ROM's read port and the layers it runs."""

    name: str
    mac: MacArray
    rom: object  # memory.ReadPort
    layers: list


def write_value(m, buffer, chan, pix, value, en) -> None:
    """Drive ``buffer``'s write beat: ``value`` at channel ``chan``, pixel ``pix`` when ``en``."""
    beat = buffer.write.payload
    m.d.comb += [buffer.write.valid.eq(en), beat.chan.eq(chan), beat.pix.eq(pix), beat.value.eq(value)]


class AsqAccel(wiring.Component):
    """The accelerator for one :class:`hw.rtl.plan.NetPlan` (see the module docstring).

    One image at a time: latency :meth:`cycles_per_inference` cycles from the first input beat to
    the class beat with no stalls, each stall cycle of either stream inside an inference adding
    one; throughput one image per that many cycles plus the load of the next.

    Parameters
    ----------
    plan : NetPlan
        The checked layer plan (:func:`hw.rtl.plan.make_plan`).

    Attributes
    ----------
    main, wide : MacArray or None
        The main (PE x SIMD, MUL at BITS) and wide (PE x 1, 8-bit) engines, None when unused.
    requant : Requantizer
        Shared by every layer.
    asq : AsqUnit or None
        Shared by every ASQ layer input, None without one.
    """

    def __init__(self, plan: NetPlan):
        if not plan.layers:
            raise ValueError("AsqAccel needs a plan with at least one layer, got none")
        self.plan = plan
        main, wide = plan.engine_layers("main"), plan.engine_layers("wide")
        self.main = self.wide = None
        if main:
            self.main = MacArray(plan.mul, plan.bits, plan.bits, False, pe=plan.pe, simd=plan.simd,
                                 acc_width=max(la.acc_width for la in main), frac_bits=plan.frac_bits,
                                 sum_stage=2)
        self.acc_width = max(la.acc_width for la in plan.layers)
        self.max_pixels = max(la.out_pixels for la in plan.layers)
        self.requant = Requantizer([la.requant for la in plan.layers], acc_width=self.acc_width,
                                   channels=max(la.groups * la.pe for la in plan.layers),
                                   tag_width=max(self.max_pixels - 1, 1).bit_length(), side_ram=True,
                                   g_acc_width=max((la.acc_width for la in plan.layers if la.requant.G), default=0))
        self.asq_layers = [la for la in plan.layers if la.asq_in is not None]
        self.asq = None
        if self.asq_layers:
            configs = [AsqConfig(la.asq_in, la.c_in, la.in_pixels, plan.layers[la.index - 1].requant.hi)
                       for la in self.asq_layers]
            self.pix_bits = max(max(la.in_pixels - 1 for la in self.asq_layers), 1).bit_length()
            chan_bits = max(max(la.c_in - 1 for la in self.asq_layers), 1).bit_length()
            self.asq = AsqUnit(configs, tag_width=chan_bits + self.pix_bits, side_ram=True)
        if wide:
            # Its products on the DSP blocks the requantizer and the ASQ unit leave (one per PE,
            # with the block's pipeline register, so the multiplier is timed), the rest in logic
            # cut by a register after every adder level; both take 3 cycles. The main engine's
            # per-PE sums take two registered stages (its adder tree cut once more), so that the
            # engines stay in step.
            self.wide_block_pes = max(0, min(plan.pe, DSP_BLOCKS - self.dsp_blocks_outside_wide()))
            self.wide = MacArray("int", WIDE_W_BITS, WIDE_ACT_BITS, True, pe=plan.pe, simd=1,
                                 acc_width=max(la.acc_width for la in wide), in_logic=True, product_latency=3,
                                 block_pes=self.wide_block_pes)
        for mac in (self.main, self.wide):
            if mac is not None and mac.latency != ENGINE_LATENCY:  # pragma: no cover - kept in step above
                raise AssertionError(f"engine latency {mac.latency}, the schedule assumes {ENGINE_LATENCY}")
        # Built here so that its parameter checks (the logits' width) run before elaboration.
        self.output = ArgmaxOutput(plan.n_logits, value_width=self.requant.out_width,
                                   chan_shape=self.requant.o.payload.chan.shape())
        first = plan.layers[0]
        in_shape = signed(first.act_bits) if first.act_signed else unsigned(first.act_bits)
        super().__init__({
            "i": In(stream.Signature(in_shape)),
            "o": Out(stream.Signature(output_layout())),
            "cycles": Out(unsigned(32)),
        })

    def dsp_blocks_outside_wide(self) -> int:
        """DSP blocks of the requantizer's products and the ASQ unit's ``y * r``."""
        blocks = self.requant.dsp_blocks
        if self.asq is not None:
            blocks += PipelinedProduct.pieces_for(unsigned(self.asq.y_width), unsigned(self.asq.r_width))
        return blocks

    # ------------------------------------------------------------------ cycle model

    def drain_cycles(self) -> int:
        """Cycles of a full DRAIN<L> (before an ASQ phase): the last set out of the address
        generator, through the engine, the serializer and the requantizer."""
        return self.plan.pe + AddressGenerator.LATENCY + MAC_LATENCY + Requantizer.LATENCY

    def schedule(self) -> Schedule:
        """Where every phase of an inference falls (:func:`hw.rtl.accel.schedule.schedule`)."""
        return schedule(self.plan, None if self.asq is None else self.asq.beta_cycles)

    def cycles_per_inference(self) -> int:
        """Clock cycles per image with no stalls on either stream (what ``cycles`` reads)."""
        return self.schedule().cycles

    # ------------------------------------------------------------------ elaboration

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        m.submodules.requant = rq = self.requant
        m.submodules.output = output = self.output
        # No beat transfers while the reset is high: ``o.valid`` (and ``i.ready``, in LOAD) low.
        in_reset = ResetSignal()
        m.d.comb += [self.o.payload.eq(output.o.payload), self.o.valid.eq(output.o.valid & ~in_reset),
                     output.o.ready.eq(self.o.ready & ~in_reset)]
        if self.asq is not None:
            m.submodules.asq = self.asq

        buffers = []
        for la in plan.layers:
            buffers.append(ActivationBuffer(la))
            m.submodules[f"act_{la.name}"] = buffers[-1]
        engines, rom_bases = [], {}
        for name, mac, simd, w_bits in (("main", self.main, plan.simd, plan.bits),
                                        ("wide", self.wide, 1, WIDE_W_BITS)):
            if mac is None:
                continue
            m.submodules[name] = mac
            layers = plan.engine_layers(name)
            rom, bases = weight_rom(layers, pe=plan.pe, simd=simd, w_bits=w_bits)
            m.submodules[f"weights_{name}"] = rom
            engines.append(Engine(name, mac, rom.read_port(), layers))
            rom_bases.update(bases)
        y_buffer = None
        if self.asq is not None:
            depth = max(la.c_in * la.in_pixels for la in self.asq_layers)
            m.submodules.y_buffer = y_buffer = memory.Memory(shape=unsigned(self.asq.y_width), depth=depth,
                                                             init=[])

        pix_shape = unsigned(max(self.max_pixels - 1, 1).bit_length())
        m.submodules.loops = loops = AddressGenerator(plan.layers, pe=plan.pe, rom_bases=rom_bases,
                                                      pix_shape=pix_shape)
        asq_ports = {}
        if self.asq is not None:
            asq_ports = dict(asq_tag_shape=self.asq.q.payload.tag.shape(), asq_sel_shape=self.asq.sel.shape(),
                             asq_beta_width=self.asq.beta_width, asq_pix_bits=self.pix_bits)
        sched = self.schedule()
        drains = {la.index: t.drain for la, t in zip(plan.layers, sched.layers, strict=True)}
        qpass_run = {la.index: t.qpass_run for la, t in zip(plan.layers, sched.layers, strict=True)
                     if t.qpass_run is not None}
        m.submodules.sequencer = seq = Sequencer(plan.layers, drains=drains, qpass_run=qpass_run,
                                                 g_shape=rq.g.shape(), **asq_ports)
        m.d.comb += [rq.g.eq(seq.g), loops.layer.eq(seq.layer), loops.run.eq(seq.run),
                     seq.run_done.eq(loops.done), output.active.eq(seq.out_active), seq.out_done.eq(output.done),
                     self.cycles.eq(seq.cycles)]
        # LOAD: the image's codes into the first layer's input.
        m.d.comb += [self.i.ready.eq(seq.in_ready), seq.in_valid.eq(self.i.valid)]
        write_value(m, buffers[0], seq.load_chan, seq.load_pix, self.i.payload, seq.load)

        self._engines(m, loops, buffers, engines, seq)
        self._requant_sink(m, buffers, y_buffer, rq.o_layer)
        if self.asq is not None:
            self._asq_pass(m, seq, buffers, y_buffer)
        return m

    # datapath -------------------------------------------------------------

    def _engines(self, m, loops, buffers, engines, seq):
        """Issued sets through the buffer/ROM reads into their layer's engine, its sums to the
        serializer and on to the requantizer, each with its layer."""
        plan = self.plan
        for buf in buffers:
            m.d.comb += buf.read_addr.eq(loops.act_addr)
        # The set being read (stage 1), its operands registered (stage 2), then its engine's
        # stages (3 .. MAC_LATENCY: the sums are done).
        read_stage = Signal(loops.issue.shape())
        operand_stage = Signal(loops.issue.shape())
        late = data.StructLayout({"valid": 1, "pix": loops.issue.pix.shape(), "grp": loops.issue.grp.shape(),
                                  "layer": loops.issue.layer.shape()})
        mac_stages = [Signal(late, name=f"issue_stage{k}") for k in range(3, MAC_LATENCY + 1)]
        m.d.sync += [read_stage.eq(loops.issue), operand_stage.eq(read_stage)]
        for prev, stage in zip([operand_stage, *mac_stages], mac_stages, strict=False):
            m.d.sync += [stage.valid.eq(prev.valid), stage.pix.eq(prev.pix), stage.grp.eq(prev.grp),
                         stage.layer.eq(prev.layer)]
        done_stage = mac_stages[-1]
        # The weight ROMs are read with the activations and their words registered beside the
        # activations' operand register, so that no block RAM's read data goes straight into a
        # product (the ECP5's critical path without it).

        m.submodules.serializer = ser = Serializer(
            pe=plan.pe, acc_width=self.acc_width, payload=self.requant.i.payload.shape(),
            grp_shape=done_stage.grp.shape(), pix_shape=done_stage.pix.shape(),
            layer_shape=done_stage.layer.shape())
        m.d.comb += [ser.grp.eq(done_stage.grp), ser.pix.eq(done_stage.pix), ser.layer.eq(done_stage.layer)]
        wiring.connect(m, ser.o, self.requant.i)
        m.d.comb += [self.requant.layer.eq(ser.o_layer), seq.g_layer.eq(ser.o_layer)]
        for engine in engines:
            mac = engine.mac
            mac_valid = Signal(name=f"{engine.name}_valid")
            mac_a = Signal.like(mac.a, name=f"{engine.name}_a", reset_less=True)
            mac_w = Signal.like(mac.w, name=f"{engine.name}_w", reset_less=True)
            m.d.sync += mac_w.eq(engine.rom.data)
            m.d.comb += [engine.rom.addr.eq(loops.rom_addr), mac.valid.eq(mac_valid), mac.first.eq(operand_stage.first),
                         mac.last.eq(operand_stage.last), mac.w.eq(mac_w), mac.a.eq(mac_a)]
            m.d.sync += mac_valid.eq(0)
            with m.Switch(read_stage.layer):
                for la in engine.layers:
                    with m.Case(la.index):
                        m.d.sync += mac_valid.eq(read_stage.valid)
                        lanes = buffers[la.index].read_data
                        for s in range(la.simd):
                            value = lanes[s].as_signed() if la.act_signed else lanes[s]
                            m.d.sync += mac_a[s].eq(Mux(read_stage.inb, value, 0))
            with m.Switch(done_stage.layer):
                for la in engine.layers:
                    with m.Case(la.index):
                        m.d.comb += [ser.done.eq(mac.done)]
                        m.d.comb += [ser.acc[k].eq(mac.acc[k]) for k in range(plan.pe)]

    def _requant_sink(self, m, buffers, y_buffer, layer):
        """Route each requantized value: next input buffer, y buffer + GAP, or logits."""
        rq, layers = self.requant, self.plan.layers
        out = rq.o.payload
        m.d.comb += [self.output.write.payload.chan.eq(out.chan), self.output.write.payload.value.eq(out.value)]
        y_write = y_buffer.write_port() if y_buffer is not None else None
        with m.Switch(layer):
            for la in layers:
                with m.Case(la.index):
                    en = rq.o.valid & (out.chan < la.c_out)
                    if la.output == "codes":
                        nxt = layers[la.index + 1]
                        if nxt.kind == "fc":  # fc's input flattened in (C, H, W) order
                            write_value(m, buffers[nxt.index], out.chan * la.out_pixels + out.tag, 0,
                                        out.value, en)
                        else:
                            write_value(m, buffers[nxt.index], out.chan, out.tag, out.value, en)
                    elif la.output == "y":
                        gap = self.asq.gap
                        # Pixel-major, the order of the quantizing pass.
                        m.d.comb += [y_write.addr.eq(out.tag * la.c_out + out.chan),
                                     y_write.data.eq(out.value), y_write.en.eq(en)]
                        m.d.comb += [gap.valid.eq(en), gap.payload.chan.eq(out.chan),
                                     gap.payload.y.eq(out.value),
                                     gap.payload.first.eq(out.tag == 0)]  # pixel 0 first
                    else:
                        m.d.comb += self.output.write.valid.eq(en)

    def _asq_pass(self, m, seq, buffers, y_buffer):
        """The ASQ unit: its configuration and start, its ``y`` reads and its codes into the input buffers."""
        asq = self.asq
        y_read = y_buffer.read_port()
        m.d.comb += [asq.sel.eq(seq.asq_sel), asq.start.eq(seq.asq_start), seq.asq_busy.eq(asq.busy),
                     seq.asq_beta.eq(asq.beta), y_read.addr.eq(seq.y_addr)]
        m.d.comb += [asq.q.valid.eq(seq.q_valid), asq.q.payload.y.eq(y_read.data), asq.q.payload.tag.eq(seq.q_tag)]
        codes = asq.c
        chan = codes.payload.tag[self.pix_bits:]
        pix = codes.payload.tag[:self.pix_bits]
        with m.Switch(seq.layer):
            for la in self.asq_layers:
                with m.Case(la.index):
                    buffer = buffers[la.index]
                    if la.kind == "fc":
                        write_value(m, buffer, chan * la.in_pixels + pix, 0, codes.payload.code, codes.valid)
                    else:
                        write_value(m, buffer, chan, pix, codes.payload.code, codes.valid)
