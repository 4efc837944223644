"""The sequencer: the phases of one inference, one FSM state per phase per layer."""

from contextlib import contextmanager

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
    until the cycle after the class beat (:data:`OUT_DONE_CYCLES`). The cycle counts come from
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

    #: Cycles of OUT after the class beat's transfer (the sequencer registers it): the next image's
    #: first code is taken this many cycles after the class beat at the earliest (not counted in
    #: ``cycles``, which stops at the class beat).
    OUT_DONE_CYCLES = 1

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

    # One-hot state: one flip-flop per phase, so that a state's test is a flip-flop and each
    # state's next value ORs only the transitions into it (the binary encoding's decodes and its
    # next-state logic over every transition were the critical path).
    @contextmanager
    def _fsm(self, m, reset):
        self._states, self._reset_state, self._current = {}, reset, None
        yield

    def _state_bit(self, name):
        if name not in self._states:
            self._states[name] = Signal(name=f"state_{name}", init=name == self._reset_state)
        return self._states[name]

    @contextmanager
    def _state(self, m, name):
        with m.If(self._state_bit(name)):
            self._current = name
            yield
            self._current = None

    def _goto(self, m, name):
        if name != self._current:
            m.d.sync += [self._state_bit(self._current).eq(0), self._state_bit(name).eq(1)]

    def _phase_lengths(self):
        """Every counted phase's length in cycles (DRAIN<L>, QPASS<L>, QWAIT<L>)."""
        lengths = [d for d in self.drains.values() if d]
        for la in self.asq_layers:
            n = la.c_in * la.in_pixels
            lengths.append(n)
            if self.qpass_run[la.index] > n:
                lengths.append(self.qpass_run[la.index] - n)
        return lengths or [1]

    def elaborate(self, platform):
        m = Module()
        layers = self.layers
        first = layers[0]
        n_in = first.c_in * first.in_pixels
        load_n = Signal(range(n_in + 1))
        load_last = Signal(init=n_in == 1)  # the next code is the image's last (a register)
        counting = Signal()
        # The counted phases (DRAIN, QPASS, QWAIT) share one down-counter, loaded with the phase's
        # length - 2 as it is entered: the phase ends in the cycle the counter's sign bit is set, so
        # that the state's next-state logic tests a flip-flop, not a comparison.
        phase_left = Signal(range(-1, max(self._phase_lengths()) - 1), name="phase_left")
        m.d.sync += phase_left.eq(phase_left - 1)
        self._phase_left = phase_left
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

        with self._fsm(m, "LOAD"):
            with self._state(m, "LOAD"):
                m.d.comb += [self.in_ready.eq(~ResetSignal()), self.load.eq(self.in_valid & self.in_ready)]
                with m.If(self.load):
                    with m.If(load_n == 0):
                        m.d.sync += [self.cycles.eq(1), counting.eq(1)]
                    m.d.sync += [load_n.eq(load_n + 1), load_last.eq(load_n == n_in - 2)]
                    with m.If(self.load_pix == first.in_pixels - 1):
                        m.d.sync += [self.load_pix.eq(0), self.load_chan.eq(self.load_chan + 1)]
                    with m.Else():
                        m.d.sync += self.load_pix.eq(self.load_pix + 1)
                    with m.If(load_last):
                        m.d.sync += [load_n.eq(0), load_last.eq(n_in == 1), self.load_chan.eq(0),
                                     self.load_pix.eq(0), self.layer.eq(first.index), run.eq(1)]
                        self._goto(m, f"RUN{first.index}")
            for la in layers:
                with self._state(m, f"RUN{la.index}"):
                    with m.If(self.run_done):
                        if self.drains[la.index]:
                            m.d.sync += [run.eq(0), phase_left.eq(self.drains[la.index] - 2)]
                            self._goto(m, f"DRAIN{la.index}")
                        else:
                            self._after_drain(m, la, run)
                if self.drains[la.index]:
                    self._drain_state(m, la, run)
                nxt = layers[la.index + 1] if la.index + 1 < len(layers) else None
                if nxt is not None and nxt.asq_in is not None:
                    self._asq_states(m, nxt, betas, qpass_chan, qpass_pix, run)
            with self._state(m, "OUT"):
                # The class beat's transfer stops the cycle counter at once, but the state follows
                # it registered, a cycle later, so that it does not follow the output's handshake
                # (the link's ready) in the cycle it happens.
                out_done = Signal(name="out_done_reg")
                m.d.sync += out_done.eq(self.out_done)
                with m.If(self.out_done):
                    m.d.sync += counting.eq(0)
                with m.If(out_done):
                    m.d.sync += self.out_active.eq(0)
                    self._goto(m, "LOAD")
        return m

    def _after_drain(self, m, la, run):
        """Enter the phase after layer ``la``'s RUN and drain."""
        layers = self.layers
        nxt = layers[la.index + 1] if la.index + 1 < len(layers) else None
        if nxt is None:
            # ``out_active`` is a register, set and cleared with the state changes into and out of
            # OUT, not a decode of the state: the output's handshake starts from it.
            m.d.sync += [run.eq(0), self.out_active.eq(1)]
            self._goto(m, "OUT")
        elif nxt.asq_in is not None:
            # A register, not the FSM state: ``sel`` steers the ASQ unit's constants.
            m.d.sync += [self.asq_sel.eq(self.asq_layers.index(nxt)), run.eq(0)]
            self._goto(m, f"ASQ{nxt.index}")
        else:
            m.d.sync += [self.layer.eq(nxt.index), run.eq(1)]
            self._goto(m, f"RUN{nxt.index}")

    def _drain_state(self, m, la, run):
        with self._state(m, f"DRAIN{la.index}"):
            with m.If(self._phase_left[-1]):
                self._after_drain(m, la, run)

    def _asq_states(self, m, nxt, betas, chan, pix, run):
        """ASQ<L>: beta and reciprocal; QPASS<L>: quantize the buffered y into L's input buffer."""
        phase_left = self._phase_left
        n = nxt.c_in * nxt.in_pixels
        start = self.qpass_run[nxt.index]
        with self._state(m, f"ASQ{nxt.index}"):
            m.d.comb += self.asq_start.eq(1)
            m.d.sync += self.layer.eq(nxt.index)
            self._goto(m, f"ASQWAIT{nxt.index}")
        with self._state(m, f"ASQWAIT{nxt.index}"):
            with m.If(~self.asq_busy):
                m.d.sync += [betas[nxt.index].eq(self.asq_beta), phase_left.eq(n - 2)]
                self._goto(m, f"QPASS{nxt.index}")
        with self._state(m, f"QPASS{nxt.index}"):
            # Pixel-major (the y buffer's order): every channel of a pixel, then the next pixel, so
            # that the layer's loops find the pixels they read early in the pass.
            # ``y_addr`` (= pix * c_in + chan) is a register counting the pass's cycles, not a
            # decode of the state: the y buffer compares it with its write address (a read and a
            # write of one address in a cycle read the old value).
            m.d.sync += self.y_addr.eq(self.y_addr + 1)
            m.d.sync += [self.q_valid.eq(1), self.q_tag.eq(chan << self.asq_pix_bits | pix)]
            # The layer's loops start at pass cycle ``qpass_run`` (a register set the cycle before,
            # at index qpass_run - 1) and run on into RUN<L> (the schedule keeps every read after
            # its code's write).
            if start < n:
                with m.If(self.y_addr == start - 1):
                    m.d.sync += run.eq(1)
            with m.If(chan == nxt.c_in - 1):
                m.d.sync += [chan.eq(0), pix.eq(pix + 1)]
            with m.Else():
                m.d.sync += chan.eq(chan + 1)
            with m.If(phase_left[-1]):  # the pass's last cycle
                m.d.sync += [pix.eq(0), run.eq(start <= n), self.y_addr.eq(0)]
                if start <= n:
                    self._goto(m, f"RUN{nxt.index}")
                else:
                    m.d.sync += phase_left.eq(start - n - 2)
                    self._goto(m, f"QWAIT{nxt.index}")
        if start > n:
            # The loops' first reads need codes the pass writes in its last cycles: wait for them.
            with self._state(m, f"QWAIT{nxt.index}"):
                with m.If(phase_left[-1]):
                    m.d.sync += run.eq(1)
                    self._goto(m, f"RUN{nxt.index}")
