"""The sequencer: the phases of one inference, one FSM state per phase per layer."""

from amaranth.hdl import Module, ResetSignal, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class Sequencer(wiring.Component):
    """Runs the phases of an inference and counts its cycles.

    Phases, unrolled per layer at generation time: LOAD (the image's codes), RUN<L> (the address
    generator issues layer ``L``'s sets), DRAIN<L> (``drains[L]`` cycles, none when the next phase
    may start at once), for an ASQ input of layer ``L``: ASQ<L> (start the unit), ASQWAIT<L> (until
    beta and the reciprocal are ready), QPASS<L> (the buffered ``y`` map, one address per cycle,
    through the unit's quantizer, pixel-major; ``L``'s loops start at its ``qpass_run[L]``-th cycle
    and go on in RUN<L>, or, when that is at or after the pass's end, QWAIT<L> waits for it); then OUT
    until the class beat. The cycle counts come from
    :func:`hw.rtl.accel.schedule.schedule`, which places each phase after the writes it reads.

    Latency and throughput: one inference at a time; :meth:`hw.rtl.accel.AsqAccel.cycles_per_inference`
    gives its cycles with no stalls.

    Parameters
    ----------
    layers : list of hw.rtl.plan.LayerPlan
    drains : dict of int to int
        Cycles of DRAIN<L> after each layer's RUN (0: none).
    qpass_run : dict of int to int
        For each layer with an ASQ input: the QPASS cycle (from 0) in which its loops start, at
        least 1 (at or after the pass's length: QWAIT<L> waits until then).
    g_shape : Shape
        Shape of the requantizer's beta input ``g``.
    asq_tag_shape, asq_sel_shape : Shape
        Shapes of the ASQ unit's ``q`` tag and ``sel`` (ignored without ASQ inputs).
    asq_beta_width, asq_pix_bits : int
        The ASQ unit's beta width, and the pixel bits at the bottom of its tag.

    Ports
    -----
    in_valid : In(1)
        An input code is offered.
    in_ready, load : Out(1)
        The sequencer takes codes (LOAD, not in reset); a code is taken this cycle.
    load_chan, load_pix : Out
        Where the code goes in the first layer's input.
    layer : Out
        The layer being run (its requantizer constants, its engine).
    run : Out(1)
        RUN phase: the address generator issues ``layer``'s sets.
    run_done : In(1)
        The address generator issued the layer's final set in the previous cycle (a register).
    g_layer : In(range)
        The layer whose input beta ``g`` gives (the one entering the requantizer).
    g : Out(g_shape)
        That layer's input beta code (1 when its input is not ASQ).
    asq_sel, asq_start : Out
        The ASQ unit's configuration and start.
    asq_busy, asq_beta : In
        Its busy flag and beta code.
    y_addr : Out
        The ``y`` buffer's read address in QPASS.
    q_valid, q_tag : Out
        The ``y`` value read in the previous cycle goes to the quantizer, with this tag.
    out_active : Out(1)
        OUT phase: the logits and the class go out.
    out_done : In(1)
        The class beat is taken.
    cycles : Out(unsigned(32))
        Cycles of the current / last inference.
    """

    def __init__(self, layers, *, drains: dict, qpass_run: dict, g_shape, asq_tag_shape=1, asq_sel_shape=1,
                 asq_beta_width: int = 1, asq_pix_bits: int = 1):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequencer needs at least one layer, got none")
        self.asq_layers = [la for la in layers if la.asq_in is not None]
        for la in layers:
            if drains.get(la.index, -1) < 0:
                raise ValueError(f"Sequencer drains lacks layer {la.name} or is negative")
        for la in self.asq_layers:
            if qpass_run.get(la.index, 0) < 1:
                raise ValueError(f"Sequencer qpass_run of {la.name} must be at least 1")
        for la in layers[:-1]:
            if layers[la.index + 1].asq_in is not None and drains[la.index] < 1:
                raise ValueError(f"Sequencer: {la.name} needs a drain before the ASQ phase")
        self.layers, self.drains, self.qpass_run = layers, dict(drains), dict(qpass_run)
        self.asq_beta_width, self.asq_pix_bits = asq_beta_width, asq_pix_bits
        first = layers[0]
        y_depth = max([la.c_in * la.in_pixels for la in self.asq_layers] + [2])
        super().__init__({
            "in_valid": In(1), "in_ready": Out(1), "load": Out(1),
            "load_chan": Out(range(first.c_in + 1)), "load_pix": Out(range(first.in_pixels + 1)),
            "layer": Out(range(len(layers) + 1)), "run": Out(1), "run_done": In(1),
            "g_layer": In(range(len(layers) + 1)), "g": Out(g_shape),
            "asq_sel": Out(asq_sel_shape), "asq_start": Out(1), "asq_busy": In(1),
            "asq_beta": In(unsigned(asq_beta_width)),
            "y_addr": Out(range(y_depth)), "q_valid": Out(1), "q_tag": Out(asq_tag_shape),
            "out_active": Out(1), "out_done": In(1),
            "cycles": Out(unsigned(32)),
        })

    def elaborate(self, platform):
        m = Module()
        layers = self.layers
        first = layers[0]
        n_in = first.c_in * first.in_pixels
        load_n = Signal(range(n_in + 1))
        counting = Signal()
        drain = Signal(range(max(self.drains.values()) + 1))
        betas = {la.index: Signal(unsigned(self.asq_beta_width), name=f"beta_{la.name}") for la in self.asq_layers}
        with m.Switch(self.g_layer):
            for la in layers:
                with m.Case(la.index):
                    m.d.comb += self.g.eq(betas[la.index] if la.index in betas else 1)
        with m.If(counting):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        # A y read (issued in QPASS) arrives one cycle later into the ASQ quantizer.
        m.d.sync += self.q_valid.eq(0)
        qpass_chan = Signal(range(max([la.c_in for la in self.asq_layers] + [1]) + 1))
        qpass_pix = Signal(range(max([la.in_pixels for la in self.asq_layers] + [1]) + 1))
        # ``run`` is a register, set and cleared with the state changes that enter and leave
        # RUN<L> (and in QPASS<L> at the cycle the layer's loops start), not a decode of the FSM
        # state: it gates every step of the address generator's counters.
        run = Signal(name="run_reg")
        m.d.comb += self.run.eq(run)

        with m.FSM(name="seq"):
            with m.State("LOAD"):
                m.d.comb += [self.in_ready.eq(~ResetSignal()), self.load.eq(self.in_valid & self.in_ready)]
                with m.If(self.load):
                    with m.If(load_n == 0):
                        m.d.sync += [self.cycles.eq(1), counting.eq(1)]
                    m.d.sync += load_n.eq(load_n + 1)
                    with m.If(self.load_pix == first.in_pixels - 1):
                        m.d.sync += [self.load_pix.eq(0), self.load_chan.eq(self.load_chan + 1)]
                    with m.Else():
                        m.d.sync += self.load_pix.eq(self.load_pix + 1)
                    with m.If(load_n == n_in - 1):
                        m.d.sync += [load_n.eq(0), self.load_chan.eq(0), self.load_pix.eq(0),
                                     self.layer.eq(first.index), run.eq(1)]
                        m.next = f"RUN{first.index}"
            for la in layers:
                with m.State(f"RUN{la.index}"):
                    with m.If(self.run_done):
                        if self.drains[la.index]:
                            m.d.sync += run.eq(0)
                            m.next = f"DRAIN{la.index}"
                        else:
                            self._after_drain(m, la, run)
                if self.drains[la.index]:
                    self._drain_state(m, la, drain, run)
                nxt = layers[la.index + 1] if la.index + 1 < len(layers) else None
                if nxt is not None and nxt.asq_in is not None:
                    self._asq_states(m, nxt, betas, qpass_chan, qpass_pix, run)
            with m.State("OUT"):
                m.d.comb += self.out_active.eq(1)
                with m.If(self.out_done):
                    m.d.sync += counting.eq(0)
                    m.next = "LOAD"
        return m

    def _after_drain(self, m, la, run):
        """Enter the phase after layer ``la``'s RUN and drain."""
        layers = self.layers
        nxt = layers[la.index + 1] if la.index + 1 < len(layers) else None
        if nxt is None:
            m.d.sync += run.eq(0)
            m.next = "OUT"
        elif nxt.asq_in is not None:
            # A register, not the FSM state: ``sel`` steers the ASQ unit's constants.
            m.d.sync += [self.asq_sel.eq(self.asq_layers.index(nxt)), run.eq(0)]
            m.next = f"ASQ{nxt.index}"
        else:
            m.d.sync += [self.layer.eq(nxt.index), run.eq(1)]
            m.next = f"RUN{nxt.index}"

    def _drain_state(self, m, la, drain, run):
        with m.State(f"DRAIN{la.index}"):
            with m.If(drain == self.drains[la.index] - 1):
                m.d.sync += drain.eq(0)
                self._after_drain(m, la, run)
            with m.Else():
                m.d.sync += drain.eq(drain + 1)

    def _asq_states(self, m, nxt, betas, chan, pix, run):
        """ASQ<L>: beta and reciprocal; QPASS<L>: quantize the buffered y into L's input buffer."""
        with m.State(f"ASQ{nxt.index}"):
            m.d.comb += self.asq_start.eq(1)
            m.d.sync += self.layer.eq(nxt.index)
            m.next = f"ASQWAIT{nxt.index}"
        with m.State(f"ASQWAIT{nxt.index}"):
            with m.If(~self.asq_busy):
                m.d.sync += betas[nxt.index].eq(self.asq_beta)
                m.next = f"QPASS{nxt.index}"
        with m.State(f"QPASS{nxt.index}"):
            # Pixel-major (the y buffer's order): every channel of a pixel, then the next pixel, so
            # that the layer's loops find the pixels they read early in the pass.
            m.d.comb += self.y_addr.eq(pix * nxt.c_in + chan)
            m.d.sync += [self.q_valid.eq(1), self.q_tag.eq(chan << self.asq_pix_bits | pix)]
            # The layer's loops start at pass cycle ``qpass_run`` (a register set the cycle before,
            # at index qpass_run - 1) and run on into RUN<L> (the schedule keeps every read after
            # its code's write).
            n = nxt.c_in * nxt.in_pixels
            start = self.qpass_run[nxt.index]
            if start < n:
                before = start - 1
                with m.If((pix == before // nxt.c_in) & (chan == before % nxt.c_in)):
                    m.d.sync += run.eq(1)
            with m.If(chan == nxt.c_in - 1):
                m.d.sync += [chan.eq(0), pix.eq(pix + 1)]
                with m.If(pix == nxt.in_pixels - 1):
                    m.d.sync += [pix.eq(0), run.eq(start <= n)]
                    m.next = f"RUN{nxt.index}" if start <= n else f"QWAIT{nxt.index}"
            with m.Else():
                m.d.sync += chan.eq(chan + 1)
        if start > n:
            # The loops' first reads need codes the pass writes in its last cycles: wait for them.
            with m.State(f"QWAIT{nxt.index}"):
                wait = Signal(range(start - n), name=f"qwait_{nxt.name}")
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == start - n - 1):
                    m.d.sync += [wait.eq(0), run.eq(1)]
                    m.next = f"RUN{nxt.index}"
