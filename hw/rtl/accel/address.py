"""The address generator: the loop nest of the layer being run, one input set per cycle."""

from amaranth.hdl import Module, Mux, Shape, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


def issue_layout(pix_shape, grp_shape, layer_shape) -> data.StructLayout:
    """One issued input set, as it follows its data through the engine.

    ``valid``: a set is issued; ``first`` / ``last``: it starts / ends its group's sums; ``inb``:
    its activations are inside the map (else padding, read as zero); ``pix``: its output pixel;
    ``grp``: its group of PE output channels; ``layer``: its layer (the next layer's sets may
    follow it before its sums are out of the pipeline).
    """
    return data.StructLayout({"valid": 1, "first": 1, "last": 1, "inb": 1, "pix": pix_shape,
                              "grp": grp_shape, "layer": layer_shape})


def in_bounds(layer, iy, ix):
    """Padding test, with only the comparisons that can fail for ``layer``'s loop bounds."""
    inb = 1
    reach_y = (layer.h_out - 1) * layer.stride + layer.kernel - 1 - layer.pad  # largest iy
    reach_x = (layer.w_out - 1) * layer.stride + layer.kernel - 1 - layer.pad
    if layer.pad:
        inb = inb & (iy >= 0) & (ix >= 0)
    if reach_y >= layer.h_in:
        inb = inb & (iy < layer.h_in)
    if reach_x >= layer.w_in:
        inb = inb & (ix < layer.w_in)
    return inb


class AddressGenerator(wiring.Component):
    """Walks the loops of the layer being run and issues one input set per cycle.

    Loops, outermost first: output row, output column, group of PE output channels, kernel row,
    kernel column, SIMD chunk of input channels, each bound unrolled per layer at generation time.
    A group's last set waits while the serializer may still be busy with the previous group (only
    when a group is shorter than PE sets): ``PE`` cycles must separate two group ends.

    Latency :attr:`LATENCY`: the addresses and the issue record of a set come from registers, two
    cycles after the loop counters reach it (the index arithmetic in two registered stages, so
    that no path chains it from the counters into the memories' address inputs); throughput one set
    per cycle but for those waits (:meth:`issue_cycles` counts them).

    Parameters
    ----------
    layers : list of hw.rtl.plan.LayerPlan
        Every layer of the network (``layer`` selects one).
    pe : int
        Output channels per group, the serializer's length.
    rom_bases : dict of int to int
        First weight ROM word of each layer (in its engine's ROM).
    pix_shape : Shape
        Shape of the output pixel index carried in ``issue``.

    Ports
    -----
    layer : In(range)
        The layer being run (held during its RUN phase). Layers run in their order, the first
        after the last (the counters' bound flags are loaded for the next layer when one ends).
    run : In(1)
        Issue sets of ``layer`` (one per cycle, but for the serializer waits).
    issue : Out(issue_layout)
        The set issued this cycle (``valid`` low: none), registered.
    act_addr : Out(unsigned)
        Read address of ``layer``'s activation buffer (0 for padding).
    rom_addr : Out(unsigned)
        Read address of the weight ROM of ``layer``'s engine.
    done : Out(1)
        Registered: the layer's final set was issued by the counters in the previous cycle (it
        reaches ``issue`` in the next cycle); the counters issue nothing in this cycle, so the
        layer's RUN phase ends with it (:data:`DONE_CYCLES`) and the next layer's sets may follow at once.
    """

    #: Cycles from the counters reaching a set to its record on ``issue`` and its addresses.
    LATENCY = 2
    #: The cycle after a layer's final set in which ``done`` is high and nothing is issued (so the
    #: sequencer's reaction to the end of a layer starts from a register, not from the counters'
    #: bound comparisons).
    DONE_CYCLES = 1

    def __init__(self, layers, *, pe: int, rom_bases: dict, pix_shape):
        layers = list(layers)
        if not layers:
            raise ValueError("AddressGenerator needs at least one layer, got none")
        if pe < 1:
            raise ValueError(f"AddressGenerator pe={pe} must be >= 1")
        missing = [la.name for la in layers if la.index not in rom_bases]
        if missing:
            raise ValueError(f"AddressGenerator rom_bases lacks layers {missing}")
        self.layers, self.pe, self.rom_bases = layers, pe, dict(rom_bases)
        act_depth = max((la.c_in // la.simd) * la.in_pixels for la in layers)
        rom_depth = max(rom_bases[la.index] + la.groups * la.group_items for la in layers)
        grp_shape = Shape.cast(range(max(la.groups for la in layers) + 1))
        layer_shape = Shape.cast(range(len(layers) + 1))
        super().__init__({
            "layer": In(layer_shape),
            "run": In(1),
            "issue": Out(issue_layout(pix_shape, grp_shape, layer_shape)),
            "act_addr": Out(range(act_depth)),
            "rom_addr": Out(range(rom_depth)),
            "done": Out(1),
        })

    @staticmethod
    def issue_cycles(layer) -> int:
        """Cycles to issue every set of ``layer``: one per set plus the serializer waits."""
        pe, since, t = layer.pe, layer.pe, 0
        for _ in range(layer.out_pixels * layer.groups):
            for k in range(layer.group_items):
                last = k == layer.group_items - 1
                while last and since < pe:
                    t, since = t + 1, since + 1
                t += 1
                since = 1 if last else min(since + 1, pe)
        return t

    def elaborate(self, platform):
        m = Module()
        layers = self.layers
        oy = Signal(range(max(la.h_out for la in layers) + 1))
        ox = Signal(range(max(la.w_out for la in layers) + 1))
        grp = Signal(self.issue.grp.shape())
        ky = Signal(range(max(la.kernel for la in layers) + 1))
        kx = Signal(range(max(la.kernel for la in layers) + 1))
        ck = Signal(range(max(la.chunks for la in layers) + 1))
        # Cycles since the last group end, up to PE: a group end waits until the serializer is free
        # (``free``: the count reaches PE, a register computed with the count, so that a group
        # end's test is a flip-flop).
        since = Signal(range(self.pe + 1), init=self.pe)
        free = Signal(init=1)
        # The set the counters are at, registered twice onto the outputs: the first stage holds
        # the index arithmetic's pieces (the input row's address, the column, the padding test),
        # the second adds them, so that no path runs from the counters through a chain of adders
        # and the padding test into the memories' addresses.
        issue = Signal.like(self.issue, name="issue_next")
        issue1 = Signal.like(self.issue, name="issue_stage1")
        row_width = max((la.c_in // la.simd) * la.in_pixels + la.in_pixels for la in layers).bit_length() + 1
        row = Signal(signed(row_width), name="row_addr_next")  # chunk + input row part of the address
        col = Signal(signed(row_width), name="col_next")  # input column (negative: padding)
        inb = Signal(name="inb_next")
        row1, col1 = Signal.like(row, name="row_addr_stage1"), Signal.like(col, name="col_stage1")
        # The weight ROM holds a layer's words in the order of its inner loops (group, kernel row,
        # kernel column, chunk), so the set's word is a counter: one step per set, back to the
        # layer's base when the group loop wraps (a new output pixel), no index arithmetic.
        bases = [self.rom_bases[la.index] for la in layers]
        rom = Signal.like(self.rom_addr, name="rom_addr_next", init=bases[0])
        rom1 = Signal.like(self.rom_addr, name="rom_addr_stage1")
        m.d.sync += [issue1.eq(issue), row1.eq(row), col1.eq(col), rom1.eq(rom),
                     self.issue.eq(issue1), self.rom_addr.eq(rom1),
                     self.act_addr.eq(Mux(issue1.inb, (row1 + col1).as_unsigned(), 0))]
        m.d.comb += issue.inb.eq(inb)
        m.d.comb += [issue.grp.eq(grp), issue.layer.eq(self.layer)]

        # Loop counters, innermost first, each with its per-layer bound.
        loops = [("ck", ck, lambda la: la.chunks), ("kx", kx, lambda la: la.kernel),
                 ("ky", ky, lambda la: la.kernel), ("grp", grp, lambda la: la.groups),
                 ("ox", ox, lambda la: la.w_out), ("oy", oy, lambda la: la.h_out)]
        # Each counter's "at its bound" test is a register, set when the counter steps, so that
        # the step decisions (``fire``, the carries, ``done``) start from flip-flops instead of
        # per-layer comparisons. Layers run in order, the first after the last: in the ``done``
        # cycle (nothing fires) every flag is loaded for the next layer, whose counters start at
        # 0 (at its bound when the bound is 1); at reset, for the first layer.
        nxt = {la.index: layers[(k + 1) % len(layers)] for k, la in enumerate(layers)}
        at_end = []
        for name, counter, bound in loops:
            flag = Signal(name=f"{name}_at_end", init=bound(layers[0]) == 1)
            bound_one = Signal(name=f"{name}_bound_one")  # in this layer: the bound is 1
            next_bound_one = Signal(name=f"{name}_next_bound_one")  # in the next layer
            becomes_end = Signal(name=f"{name}_becomes_end")  # counter + 1 is at the bound
            with m.Switch(self.layer):
                for la in layers:
                    with m.Case(la.index):
                        m.d.comb += [bound_one.eq(bound(la) == 1), next_bound_one.eq(bound(nxt[la.index]) == 1)]
                        if bound(la) >= 2:
                            m.d.comb += becomes_end.eq(counter == bound(la) - 2)
            at_end.append((flag, Mux(flag, bound_one, becomes_end), next_bound_one))
        last = at_end[0][0] & at_end[1][0] & at_end[2][0]
        fire = Signal()
        m.d.comb += fire.eq(self.run & (~last | free) & ~self.done)
        with m.If(fire & last):
            m.d.sync += [since.eq(1), free.eq(self.pe <= 1)]
        with m.Elif(since < self.pe):
            m.d.sync += [since.eq(since + 1), free.eq(since + 1 >= self.pe)]
        # Each counter steps when every inner one is at its bound: the AND of their flags, each
        # formed from the flags themselves (not chained through the outer counters' carries).
        # Past the innermost three loops (``last``), ``~last | free`` is ``free``: those steps are
        # written as one flat AND of registers, not chained through ``fire``.
        go = self.run & ~self.done
        inner = 1
        # The row part of the activation address, ``ck * in_pixels + (oy * stride + ky - pad) * w_in``,
        # kept as three registers stepped with their counters (``ck * in_pixels``, ``ky * w_in``,
        # ``(oy * stride - pad) * w_in``), so that it is one sum of flip-flops, not a chain of
        # index arithmetic behind the counters.
        pad_row = {la.index: -la.pad * la.w_in for la in layers}
        row_regs = {name: Signal(signed(row_width), name=f"{name}_row",
                                 init=pad_row[layers[0].index] if name == "oy" else 0)
                    for name in ("ck", "ky", "oy")}
        row_step = {name: Signal(signed(row_width), name=f"{name}_row_step") for name in row_regs}
        oy_first, oy_next_first = Signal(signed(row_width)), Signal(signed(row_width))
        with m.Switch(self.layer):
            for la in layers:
                with m.Case(la.index):
                    m.d.comb += [row_step["ck"].eq(la.in_pixels), row_step["ky"].eq(la.w_in),
                                 row_step["oy"].eq(la.stride * la.w_in), oy_first.eq(pad_row[la.index]),
                                 oy_next_first.eq(pad_row[nxt[la.index].index])]
        for k, ((name, counter, _), (flag, flag_next, next_bound_one)) in enumerate(zip(loops, at_end, strict=True)):
            step = fire & inner if k <= 3 else go & free & inner
            with m.If(step):
                m.d.sync += [counter.eq(Mux(flag, 0, counter + 1)), flag.eq(flag_next)]
                if name in row_regs:
                    reg = row_regs[name]
                    m.d.sync += reg.eq(Mux(flag, oy_first if name == "oy" else 0, reg + row_step[name]))
            with m.Elif(self.done):
                m.d.sync += flag.eq(next_bound_one)
                if name == "oy":
                    m.d.sync += row_regs["oy"].eq(oy_next_first)
            inner = inner & flag
            if name == "grp":  # every loop up to the group's wraps: the next output pixel's first word
                base, next_base = Signal.like(rom, name="rom_base"), Signal.like(rom, name="rom_next_base")
                with m.Switch(self.layer):
                    for la in layers:
                        with m.Case(la.index):
                            m.d.comb += [base.eq(self.rom_bases[la.index]),
                                         next_base.eq(self.rom_bases[nxt[la.index].index])]
                with m.If(fire):
                    m.d.sync += rom.eq(Mux(inner, base, rom + 1))
                with m.Elif(self.done):
                    m.d.sync += rom.eq(next_base)
        m.d.comb += row.eq(row_regs["ck"] + row_regs["ky"] + row_regs["oy"])
        # ``fire & inner`` is now: every counter wraps, the layer's final set fires.
        m.d.sync += self.done.eq(go & free & inner)  # one cycle, after the final set
        m.d.comb += [issue.valid.eq(fire), issue.first.eq(self.run & (ky == 0) & (kx == 0) & (ck == 0)),
                     issue.last.eq(self.run & last)]
        # The addresses and the set's other fields are not gated by ``run`` (``valid`` is), so
        # that no path runs from the sequencer's state through the index arithmetic.
        with m.Switch(self.layer):
            for la in layers:
                with m.Case(la.index):
                    width = max(la.h_in, la.w_in, la.pad + 1).bit_length() + 2
                    iy = Signal(signed(width), name=f"iy_{la.name}")
                    ix = Signal(signed(width), name=f"ix_{la.name}")
                    m.d.comb += [iy.eq(oy * la.stride + ky - la.pad), ix.eq(ox * la.stride + kx - la.pad)]
                    m.d.comb += [
                        col.eq(ix), inb.eq(in_bounds(la, iy, ix)),
                        issue.pix.eq(oy * la.w_out + ox),
                    ]
        return m
