"""The ASQ adapter unit: per-sample beta, one reciprocal, then activation codes.

Arithmetic (``golden.arith.asq_unit``, docs/arithmetic.md section 4), per sample:

    z_c  = sum_{h,w} y[c,h,w]
    C >= 8:  h_j  = max(0, rshift_round(sum_c W1[j,c] z_c + b1[j], S1))
             beta = clamp(rshift_round(sum_j W2[j] h_j + b2, S2), beta_min, beta_max)
    C <  8:  beta = clamp(rshift_round(sum_c W2[c] z_c + b2, S2), beta_min, beta_max)
    r    = (2^R + (q >> 1)) // q,   q = s_code * beta
    code = clamp(rshift_round(y * r, FY + R - FS - G), 0, qmax)

Hardware, one unit shared by every ASQ layer input of the network (``sel`` picks the constants):

- GAP: ``C`` accumulators in a small memory, ``z[chan] += y`` for each ``gap`` beat (``first``:
  ``z[chan] = y``), one per cycle, while the previous layer writes its ``y`` map.
- ``start``: the adapter MLP runs sequentially on one multiplier (one weight x input per cycle,
  ``C * C/4 + C/4`` cycles for ``C >= 8``, ``C`` for ``C < 8``; the multiplier's operands are
  registered, then shift-and-add logic registered every two adder levels, the accumulation and
  each hidden value's rounding and write take a stage of their own, so no path chains the
  multiplier, the accumulator and the memory write), the same multiplier forms
  ``q = s_code * beta``, then a restoring divider forms ``r`` one quotient bit per cycle
  (``R + 1`` cycles less the leading numerator bits below ``s_code * beta_min``, whose quotient
  bits are known to be 0). The MLP's rounding shifts need no adder: each neuron's sum starts from
  its bias plus the rounding half of its shift (a constant the accumulator is loaded with when
  the previous neuron ends), so ``rshift_round`` is the shift alone. The per-configuration constants (shifts, biases,
  bounds, ``s_code``, ``2^R``) are selected by ``sel``, the arithmetic is not duplicated. ``busy``
  is high until ``beta`` and ``r`` are valid; :meth:`AsqUnit.beta_cycles` gives the exact count.
- ``q`` stream: the buffered ``y`` map, one value per cycle, comes back as codes on ``c`` after
  :attr:`AsqUnit.CODE_LATENCY` cycles (``y * r`` on registered DSP blocks,
  :class:`hw.rtl.dsp.PipelinedProduct`, then round and clamp); no back-pressure.
"""

from typing import NamedTuple

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.arith import reciprocal, rshift_round, signed_width
from hw.rtl.delay import memory_delay
from hw.rtl.dsp import PipelinedProduct
from hw.rtl.mul import pipelined_logic_product, pipelined_logic_product_latency


class MlpStep(NamedTuple):
    """One weight x input step of the sequential adapter MLP.

    Attributes
    ----------
    source : str
        ``"z"`` (a GAP sum) or ``"h"`` (a hidden neuron's output).
    index : int
        Channel of ``z`` or neuron of ``h``.
    weight : int
    end : tuple or None
        ``("h", j)`` or ``("beta", 0)`` on a neuron's last step (its sum is complete), else None.
    bias : int or None
        The neuron's bias on its first step, else None.
    """

    source: str
    index: int
    weight: int
    end: tuple | None
    bias: int | None


class AsqConfig:
    """One ASQ layer input: golden's :class:`golden.arith.AsqConstants` plus the map's shape.

    Derives every width from the constants (worst-case bounds, as docs/arithmetic.md records).
    """

    def __init__(self, consts, channels: int, pixels: int, y_max: int):
        self.k, self.channels, self.pixels, self.y_max = consts, channels, pixels, y_max
        self.hidden = 0 if consts.W1 is None else len(consts.W1)
        if self.hidden and len(consts.W1[0]) != channels:
            raise ValueError(f"ASQ W1 has {len(consts.W1[0])} inputs for {channels} channels")
        if not self.hidden and len(consts.W2) != channels:
            raise ValueError(f"ASQ W has {len(consts.W2)} inputs for {channels} channels")
        if consts.code_shift < 0:
            raise ValueError(f"ASQ code shift FY+R-FS-G={consts.code_shift} must be >= 0")
        self.z_max = y_max * pixels
        if self.hidden:
            sums = [sum(abs(int(w)) for w in row) * self.z_max + abs(int(b))
                    for row, b in zip(consts.W1, consts.b1, strict=True)]
            self.sum1_max = max(sums)
            self.h_max = rshift_round(self.sum1_max, consts.S1)
            self.sum2_max = sum(abs(int(w)) for w in consts.W2) * self.h_max + abs(int(consts.b2))
        else:
            self.sum1_max = 0
            self.h_max = 0
            self.sum2_max = sum(abs(int(w)) for w in consts.W2) * self.z_max + abs(int(consts.b2))
        self.q_max = consts.s_code * consts.beta_max
        self.num_width = consts.R + 1  # 2^R + (q >> 1) < 2^(R+1) since q <= 2^R
        # The numerator's top ``lead_zeros`` bits are below q_min = s_code * beta_min <= q: their
        # quotient bits are 0 and they pass to the remainder unchanged, so the divider skips them.
        self.lead_zeros = min((consts.s_code * consts.beta_min).bit_length() - 1, consts.R)
        self.r_max = reciprocal(consts.s_code * consts.beta_min, consts.R)

    def mlp_steps(self) -> list[MlpStep]:
        """The steps the sequential MLP walks, in order, with neuron ends and biases marked."""
        k = self.k
        steps = []
        if self.hidden:
            for j in range(self.hidden):
                for c in range(self.channels):
                    steps.append(MlpStep("z", c, int(k.W1[j][c]), ("h", j) if c == self.channels - 1 else None,
                                         int(k.b1[j]) if c == 0 else None))
            for j in range(self.hidden):
                steps.append(MlpStep("h", j, int(k.W2[j]), ("beta", 0) if j == self.hidden - 1 else None,
                                     int(k.b2) if j == 0 else None))
        else:
            for c in range(self.channels):
                steps.append(MlpStep("z", c, int(k.W2[c]), ("beta", 0) if c == self.channels - 1 else None,
                                     int(k.b2) if c == 0 else None))
        return steps


class AsqUnit(wiring.Component):
    """ASQ adapter unit shared by a list of ASQ layer inputs.

    Parameters
    ----------
    configs : list of AsqConfig
    tag_width : int
        Width of the opaque tag a ``q`` beat carries to its code.
    side_ram : bool
        Carry the tag beside the quantizer's pipeline in a block RAM
        (:func:`hw.rtl.delay.memory_delay`) instead of flip-flops: the same values, fewer logic cells.

    Ports
    -----
    sel : In(range)
        Which configuration (hold it during a sample's use of the unit).
    gap : In(stream {chan, y, first})
        One ``y`` value of the map per beat (always ready); ``first`` marks a channel's
        first value of the sample (it restarts that channel's sum).
    start : In(1)
        Compute beta and the reciprocal from the accumulated ``z``.
    busy : Out(1)
        High from the cycle after ``start`` until ``beta`` and the reciprocal are valid.
    beta : Out(unsigned)
        The sample's beta code (``G`` fractional bits), valid when not busy.
    q : In(stream {y, tag})
        ``y`` values to quantize with the current reciprocal (always ready).
    c : Out(stream {code, tag})
        Their codes, latency :attr:`CODE_LATENCY` (always ready: the consumer must take every beat).
    """

    #: Cycles from a ``q`` beat to its code on ``c`` (``y * r`` on registered DSP blocks, then round
    #: and clamp).
    CODE_LATENCY = PipelinedProduct.LATENCY + 1
    #: The adapter multiplier's operand registers.
    MUL_OPERAND_LATENCY = 1
    #: Adder levels of the adapter multiplier's tree between two of its registers.
    MUL_LEVELS_PER_STAGE = 1

    def __init__(self, configs, tag_width=1, side_ram=False):
        configs = list(configs)
        self.side_ram = side_ram
        if not configs:
            raise ValueError("AsqUnit needs at least one AsqConfig")
        self.configs = configs
        self.channels = max(c.channels for c in configs)
        self.y_width = max(c.y_max for c in configs).bit_length()
        self.z_width = max(c.z_max for c in configs).bit_length()
        self.w_width = max(signed_width(min(s.weight for s in c.mlp_steps()),
                                        max(s.weight for s in c.mlp_steps()))
                           for c in configs)
        bias = [b for c in configs for b in self._rounding_biases(c)]
        self.b_width = signed_width(min(bias), max(bias))
        # A neuron's sum starts from its bias plus the rounding half of its shift.
        s_max = max(max(c.sum1_max + self._half(c.k.S1 if c.hidden else 0), c.sum2_max + self._half(c.k.S2))
                    for c in configs)
        self.sum_width = signed_width(-s_max, s_max) + 1
        self.h_width = max(max(c.h_max for c in configs).bit_length(), 1)
        self.beta_width = max(c.k.beta_max for c in configs).bit_length()
        self.q_width = max(c.q_max for c in configs).bit_length()
        self.num_width = max(c.num_width for c in configs)
        self.r_width = max(c.r_max for c in configs).bit_length()
        self.code_width = max(c.k.qmax for c in configs).bit_length()
        self.hidden_max = max([c.hidden for c in configs] + [0])
        s_code_width = max(c.k.s_code for c in configs).bit_length()
        #: Weight width of the adapter multiplier (an MLP weight, or ``s_code`` for ``q``).
        self.mul_b_width = max(self.w_width, s_code_width + 1)
        #: Cycles of the adapter multiplier: its operands registered (so that no path runs from
        #: the GAP memory's data through the operand select into the partial products), then
        #: shift-and-add logic registered every two adder levels.
        self.mul_latency = self.MUL_OPERAND_LATENCY + pipelined_logic_product_latency(
            self.mul_b_width, self.MUL_LEVELS_PER_STAGE)
        chan_shape = unsigned(max(self.channels - 1, 1).bit_length())
        super().__init__({
            "sel": In(range(max(len(configs), 2))),
            # Never stalls, and its code consumer (a memory) always takes: all streams always ready.
            "gap": In(stream.Signature(data.StructLayout({
                "chan": chan_shape, "y": unsigned(self.y_width), "first": 1}), always_ready=True)),
            "start": In(1),
            "busy": Out(1),
            "beta": Out(unsigned(self.beta_width)),
            "q": In(stream.Signature(data.StructLayout({
                "y": unsigned(self.y_width), "tag": unsigned(tag_width)}), always_ready=True)),
            "c": Out(stream.Signature(data.StructLayout({
                "code": unsigned(self.code_width), "tag": unsigned(tag_width)}), always_ready=True)),
        })

    def beta_cycles(self, k: int) -> int:
        """Cycles from the one with ``start`` high to the first with ``busy`` low, config ``k``.

        1 (start) + MLP steps (with padding, :meth:`rom_steps`) + 2 + the multiplier's latency
        (pipeline) + 1 (beta's rounding) + 1 (its clamp) + 1 + the multiplier's latency
        (q = s_code * beta) + R + 1 (divider, its last step writes the result), less the
        numerator's leading bits the divider skips, known to give zero quotient bits
        (:meth:`divide_skip`).
        """
        return (len(self.rom_steps(self.configs[k])) + self.num_width - self.divide_skip(k) + 6
                + 2 * self.mul_latency)

    def divide_skip(self, k: int) -> int:
        """Numerator bits (of the unit's ``num_width``) the divider takes at once for config ``k``:
        the zero-extension above its own ``R + 1`` bits and its top bits below ``q_min``."""
        cfg = self.configs[k]
        return self.num_width - cfg.num_width + cfg.lead_zeros

    def rom_steps(self, cfg) -> list[MlpStep]:
        """The MLP steps the unit walks: ``cfg.mlp_steps()`` with idle steps (weight 0) before the
        output neuron when the hidden layer is too short to cover the write of the last ``h``.

        ``h[j]`` reaches the memory ``mul_latency + 3`` cycles after its neuron's last step is
        issued; the output neuron reads ``h[H-1]`` as its ``H``-th step, the read address one cycle
        after the issue.
        """
        steps = cfg.mlp_steps()
        if not cfg.hidden:
            return steps
        pad = max(0, self.mul_latency + 2 - cfg.hidden)
        first_out = cfg.hidden * cfg.channels
        return steps[:first_out] + [MlpStep("z", 0, 0, None, None)] * pad + steps[first_out:]

    def elaborate(self, platform):
        m = Module()
        # GAP accumulators in a memory (one block RAM instead of C registers and their muxes):
        # read-modify-write, the read port transparent so back-to-back updates of one channel see
        # each other; a channel's first value (``first``) overwrites instead of adding.
        # The adapter's hidden values h live in the same memory, after the C channels.
        zmem = memory.Memory(shape=unsigned(max(self.z_width, self.h_width)),
                             depth=self.channels + self.hidden_max, init=[])
        m.submodules.gap_z = zmem
        z_wr = zmem.write_port()
        z_rd = zmem.read_port(transparent_for=(z_wr,))
        m.d.comb += z_rd.addr.eq(self.gap.payload.chan)  # the MLP takes the port over (below)
        v1, first1 = Signal(), Signal()
        chan1, y1 = Signal.like(self.gap.payload.chan), Signal.like(self.gap.payload.y)
        m.d.sync += [v1.eq(self.gap.valid), first1.eq(self.gap.payload.first),
                     chan1.eq(self.gap.payload.chan), y1.eq(self.gap.payload.y)]
        m.d.comb += [z_wr.en.eq(v1), z_wr.addr.eq(chan1),
                     z_wr.data.eq(Mux(first1, y1, z_rd.data + y1))]
        r = self._mlp_and_divider(m, z_rd, z_wr)
        self._quantizer(m, r)
        return m

    @staticmethod
    def _biases(cfg):
        """Bias of each neuron in MLP order (b1[0..H-1], then b2)."""
        return [s.bias for s in cfg.mlp_steps() if s.bias is not None]

    @staticmethod
    def _half(shift):
        """The rounding half of ``rshift_round(x, shift)``: ``(x + half) >> shift``."""
        return (1 << (shift - 1)) if shift else 0

    @classmethod
    def _rounding_biases(cls, cfg):
        """Each neuron's bias plus the rounding half of its output shift (S1 for a hidden neuron,
        S2 for beta), in MLP order: the sum then needs only the shift, no rounding adder."""
        biases = cls._biases(cfg)
        return [b + cls._half(cfg.k.S2 if n == len(biases) - 1 else cfg.k.S1) for n, b in enumerate(biases)]

    def _shift(self, m, value, shifts, name):
        """``value >> shifts[sel]`` (a slice per configuration)."""
        out = Signal(signed(len(value)), name=name)
        self._per_config(m, out, [value >> n for n in shifts])
        return out

    def _step_rom(self, m):
        """ROM of MLP steps: (memory address of the input, weight, neuron end kind).

        The biases (one per neuron, wide) are not in it: a small per-neuron table holds them.
        """
        layout = data.StructLayout({
            "index": unsigned(max(self.channels + self.hidden_max - 1, 1).bit_length()),
            "weight": signed(self.w_width), "end": 1, "end_beta": 1,
        })
        words, bases = [], []
        for cfg in self.configs:
            bases.append(len(words))
            for s in self.rom_steps(cfg):
                # h[j] is read from the GAP memory at address C + j.
                words.append({"index": s.index + (self.channels if s.source == "h" else 0),
                              "weight": s.weight, "end": s.end is not None,
                              "end_beta": s.end is not None and s.end[0] == "beta"})
        rom = memory.Memory(shape=layout, depth=len(words), init=words)
        m.submodules.mlp_rom = rom
        return rom.read_port(), bases, len(words)  # synchronous: a block RAM, not LUTs

    def _per_config(self, m, target, values):
        """Drive ``target`` with ``values[k]`` (a constant or a value) for the selected config."""
        with m.Switch(self.sel):
            for k, v in enumerate(values):
                with m.Case(k):
                    m.d.comb += target.eq(v)

    def _rshift_round(self, m, value, shifts, name):
        """``rshift_round(value, shifts[sel])`` with one shared adder (the shift is a slice)."""
        half = Signal(unsigned(max(max(shifts), 1)), name=f"{name}_half")
        self._per_config(m, half, [(1 << (n - 1)) if n else 0 for n in shifts])
        summed = Signal(signed(len(value) + 2), name=f"{name}_sum")
        m.d.comb += summed.eq(value + half)
        out = Signal(signed(len(value) + 2), name=name)
        self._per_config(m, out, [summed >> n for n in shifts])
        return out

    def _mlp_and_divider(self, m, z_rd, z_wr):
        port, bases, n_steps = self._step_rom(m)
        pc = Signal(range(n_steps + 1))
        m.d.comb += port.addr.eq(pc)
        pc_base = Signal.like(pc)
        self._per_config(m, pc_base, bases)
        total = Signal(signed(self.sum_width))
        # The MLP is a 2-stage pipeline: cycle k reads step k (ROM) and issues its z read; cycle
        # k+1 computes it with the registered step and the z data.
        step = Signal(port.data.shape())
        step_valid, issued_all, in_mlp, a_valid = Signal(), Signal(), Signal(), Signal()
        with m.If(in_mlp):
            m.d.comb += z_rd.addr.eq(port.data.index)
        # The last step's data stops the issue (the ROM answers one cycle after its address).
        stop = a_valid & port.data.end & port.data.end_beta
        issuing = ~issued_all & ~stop
        # One multiplier: the MLP's weight x input, and in state Q, beta x s_code. ``in_q`` is a
        # register (set on entering Q, cleared on leaving it), not a decode of the FSM state, so
        # that the operand selection adds no logic levels before the multiplier.
        in_q = Signal()
        s_code = Signal(unsigned(max(c.k.s_code for c in self.configs).bit_length()))
        self._per_config(m, s_code, [c.k.s_code for c in self.configs])
        operand = Signal(unsigned(max(len(self.beta), len(z_rd.data))), name="mlp_operand", reset_less=True)
        weight = Signal(signed(self.mul_b_width), name="mlp_weight", reset_less=True)
        m.d.sync += [operand.eq(Mux(in_q, self.beta, z_rd.data)), weight.eq(Mux(in_q, s_code, step.weight))]
        product = Signal(signed(max(self.z_width, self.h_width, self.beta_width) + 1 + self.mul_b_width))
        # Shift-and-add logic: this small product stays out of the DSP blocks (docs/hardware.md);
        # registered every two adder levels, the step's flags travel beside it.
        product_out, latency = pipelined_logic_product(
            m, operand, weight, levels_per_stage=self.MUL_LEVELS_PER_STAGE, name="mlp_product")
        latency += self.MUL_OPERAND_LATENCY
        assert latency == self.mul_latency
        m.d.comb += product.eq(product_out)
        done = Signal(port.data.shape(), name="step_done")  # the step whose product is on ``product``
        done_valid = Signal()
        flags, flags_valid = step, step_valid
        for k in range(latency):
            nxt, nxt_valid = ((done, done_valid) if k == latency - 1 else
                              (Signal(port.data.shape(), name=f"step_p{k}"), Signal(name=f"step_p{k}_valid")))
            m.d.sync += [nxt.eq(flags), nxt_valid.eq(flags_valid & in_mlp)]
            flags, flags_valid = nxt, nxt_valid
        # Neuron number (counts processed neuron ends). A neuron's sum starts from its bias: the
        # accumulator itself is loaded with it (neuron 0's at ``start``, the next neuron's at each
        # neuron end, from a constant table indexed by the neuron number), so the adder always adds
        # the product to ``total`` and no select sits in front of its carry chain; the load's
        # select is after the adder, beside its carries.
        neuron = Signal(range(max(len(self._biases(c)) for c in self.configs) + 1))
        bias_first = Signal(signed(self.b_width))
        bias_next = Signal(signed(self.b_width))
        with m.Switch(self.sel):
            for k, cfg in enumerate(self.configs):
                biases = self._rounding_biases(cfg)
                with m.Case(k):
                    m.d.comb += bias_first.eq(biases[0])
                    with m.Switch(neuron):
                        for n, b in enumerate(biases[1:]):
                            with m.Case(n):
                                m.d.comb += bias_next.eq(b)
        new_total = Signal(signed(self.sum_width))
        m.d.comb += new_total.eq(total + product)
        # A hidden neuron's sum is registered, then rounded, rectified and written a cycle later.
        h_sum = Signal(signed(self.sum_width), reset_less=True)
        h_addr = Signal.like(z_wr.addr, reset_less=True)
        h_pending = Signal()
        # The bias carried the rounding half: the shift alone rounds (the same for beta below).
        h_new = self._shift(m, h_sum, [c.k.S1 for c in self.configs], "h_new")
        h_relu = Signal(unsigned(self.h_width))
        m.d.comb += h_relu.eq(Mux(h_new < 0, 0, h_new))
        m.d.sync += h_pending.eq(0)
        with m.If(h_pending):  # the GAP is idle while the MLP runs
            m.d.comb += [z_wr.en.eq(1), z_wr.addr.eq(h_addr), z_wr.data.eq(h_relu)]
        s2 = self._shift(m, total, [c.k.S2 for c in self.configs], "s2")
        s2_reg = Signal.like(s2, name="s2_reg", reset_less=True)
        beta_min = Signal(unsigned(self.beta_width))
        beta_max = Signal(unsigned(self.beta_width))
        self._per_config(m, beta_min, [c.k.beta_min for c in self.configs])
        self._per_config(m, beta_max, [c.k.beta_max for c in self.configs])
        one_r = Signal(unsigned(self.num_width))
        self._per_config(m, one_r, [1 << c.k.R for c in self.configs])

        q = Signal(unsigned(self.q_width))
        rem = Signal(signed(self.q_width + 1))  # non-restoring: -q <= rem < q
        num = Signal(unsigned(self.num_width))
        quo = Signal(unsigned(self.num_width))
        bit = Signal(range(self.num_width + 1))
        q_wait = Signal(range(self.mul_latency + 1))
        r = Signal(unsigned(self.r_width))
        dividing = Signal()

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(pc_base), total.eq(bias_first)]
                    m.d.sync += self.busy.eq(1)
                    m.next = "MLP"
            with m.State("MLP"):
                # Stages: step address (pc); step data + its z address; the product (mul_latency
                # cycles); accumulate.
                m.d.comb += in_mlp.eq(1)
                m.d.sync += [a_valid.eq(issuing), step.eq(port.data), step_valid.eq(a_valid)]
                with m.If(issuing):
                    m.d.sync += pc.eq(pc + 1)
                with m.If(stop):
                    m.d.sync += issued_all.eq(1)
                with m.If(done_valid):
                    m.d.sync += total.eq(new_total)
                    with m.If(done.end):
                        m.d.sync += neuron.eq(neuron + 1)
                    with m.If(done.end & ~done.end_beta):
                        m.d.sync += [total.eq(bias_next), h_sum.eq(new_total),
                                     h_addr.eq(self.channels + neuron), h_pending.eq(1)]
                    with m.If(done.end & done.end_beta):
                        m.d.sync += [issued_all.eq(0), step_valid.eq(0), a_valid.eq(0), neuron.eq(0)]
                        m.next = "BETA"
            with m.State("BETA"):
                # The rounding adder here, the clamp's comparisons in the next cycle: no path
                # chains the two.
                m.d.sync += s2_reg.eq(s2)
                m.next = "CLAMP"
            with m.State("CLAMP"):
                m.d.sync += self.beta.eq(Mux(s2_reg < beta_min, beta_min,
                                             Mux(s2_reg > beta_max, beta_max, s2_reg)))
                m.d.sync += [q_wait.eq(0), in_q.eq(1)]
                m.next = "Q"
            with m.State("Q"):
                # beta x s_code through the multiplier's pipeline: taken after its latency.
                m.d.sync += q_wait.eq(q_wait + 1)
                with m.If(q_wait == self.mul_latency):
                    m.d.sync += in_q.eq(0)
                    # The skipped top bits of the numerator start as the remainder (see divide_skip).
                    numerator = Signal(unsigned(self.num_width))
                    m.d.comb += numerator.eq(one_r + (product >> 1))
                    m.d.sync += [q.eq(product), quo.eq(0)]
                    with m.Switch(self.sel):
                        for k in range(len(self.configs)):
                            skip = self.divide_skip(k)
                            with m.Case(k):
                                m.d.sync += [num.eq(numerator << skip), bit.eq(self.num_width - skip),
                                             rem.eq(numerator >> (self.num_width - skip))]
                    m.d.sync += dividing.eq(1)
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                with m.If(bit == 1):
                    m.next = "IDLE"
        # Non-restoring division, most significant numerator bit first, while ``dividing`` (a
        # register beside the FSM, so that the divider's adder is not merged with the FSM's other
        # adders behind a state-decoded operand select): the partial remainder may go negative, and
        # then the next step adds ``q`` instead of subtracting it, so the remainder is the adder's
        # output itself (no restoring select after the carry chain) and the add/subtract choice is
        # the remainder's sign, a flip-flop. Each quotient bit (the new remainder is not negative)
        # is the restoring division's. The step's arithmetic is not under ``dividing`` (only its
        # registers' updates are), so that the flag is no input of the adder.
        width = self.q_width + 2  # 2 rem + bit and rem -+ q: within +-2q
        trial = Signal(signed(width))
        m.d.comb += trial.eq((rem << 1) | num[-1])
        q_wide = Signal(signed(width))
        m.d.comb += q_wide.eq(q)
        subtract = ~rem[-1]
        # trial - q = trial + ~q + 1: the + 1 rides in on an extra low bit of both operands
        # (1 + 1 carries into bit 1), so one carry chain adds or subtracts.
        both = Signal(signed(width + 1))
        m.d.comb += both.eq(((trial << 1) | 1) + ((Mux(subtract, ~q_wide, q_wide) << 1) | subtract))
        diff = Signal(signed(width), name="trial_diff")
        m.d.comb += diff.eq(both[1:])
        fits = ~diff[-1]
        quo_next = Signal.like(quo, name="quo_next")
        m.d.comb += quo_next.eq((quo << 1) | fits)
        with m.If(dividing):
            m.d.sync += [num.eq(num << 1), rem.eq(diff), quo.eq(quo_next), bit.eq(bit - 1)]
            with m.If(bit == 1):  # the last quotient bit: the result
                m.d.sync += [r.eq(quo_next), self.busy.eq(0), dividing.eq(0)]
        return r

    def _quantizer(self, m, r):
        m.submodules.y_times_r = y_r = PipelinedProduct(unsigned(self.y_width), unsigned(self.r_width))
        m.d.comb += [y_r.a.eq(self.q.payload.y), y_r.b.eq(r), y_r.valid.eq(self.q.valid)]
        v, tag = self.q.valid, self.q.payload.tag
        if self.side_ram:
            m.d.comb += self.c.payload.tag.eq(memory_delay(m, tag, self.CODE_LATENCY, "tag_delay"))
        for k in range(1, y_r.LATENCY + 1):  # the beat's valid and tag travel beside the product
            v_k, tag_k = Signal(name=f"q_valid{k}"), Signal.like(tag, name=f"q_tag{k}", reset_less=True)
            m.d.sync += [v_k.eq(v), tag_k.eq(tag)]
            v, tag = v_k, tag_k
        m.d.sync += self.c.valid.eq(v)
        if not self.side_ram:
            m.d.sync += self.c.payload.tag.eq(tag)
        shifts = [c.k.code_shift for c in self.configs]
        rounded = self._rshift_round(m, y_r.p, shifts, "code_full")
        qmax = Signal(unsigned(self.code_width))
        self._per_config(m, qmax, [c.k.qmax for c in self.configs])
        # The clamp tests the product itself against the smallest product that rounds above qmax
        # (beside the rounding adder, not after it): (p + half) >> s > qmax <=> p >= ((qmax + 1) << s) - half.
        limits = [((c.k.qmax + 1) << n) - self._half(n) for c, n in zip(self.configs, shifts, strict=True)]
        limit = Signal(unsigned(max(max(limits).bit_length(), 1)), name="code_limit")
        self._per_config(m, limit, limits)
        m.d.sync += self.c.payload.code.eq(Mux(y_r.p >= limit, qmax, rounded))
