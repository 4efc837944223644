"""When each phase of an inference starts, worked out at generation time from when every value is
written and first read.

The accelerator runs one layer at a time through one address generator, but the phases around a
layer's loops overlap where the data allow:

- RUN<L+1> after RUN<L> (``L+1``'s input not ASQ): ``L+1``'s loops start as soon as each of its
  reads comes after the write of what it reads, often the cycle after ``L``'s last set, while ``L``'s
  last sums still drain through the engine, the serializer and the requantizer (every value carries
  its layer down that pipeline);
- RUN<L> during QPASS<L> (``L``'s input ASQ): ``L``'s loops start while the quantizing pass still
  writes its input buffer, as early as every read still comes after its code's write and every ``y``
  that ``L`` writes lands after the pass has read that address;
- OUT after the last layer: the logits are read out while the last ones still drain, each read after
  its write.

What cannot overlap: the first layer waits for the whole image (input stalls must not reorder
reads and writes), and an ASQ input waits for the last ``y`` of the layer before it (the adapter
needs every GAP sum, and its MLP takes the GAP memory's read port).

Times below are clock cycles. A set issued by the address generator at (counter) cycle ``t`` of its
layer's RUN presents its buffer address at ``t + AddressGenerator.LATENCY``, so it sees every write
made at or before ``t + AddressGenerator.LATENCY - 1``; a write is the cycle its write enable is
high.
"""

from dataclasses import dataclass

from hw.rtl.accel.address import AddressGenerator
from hw.rtl.accel.argmax import ArgmaxOutput
from hw.rtl.accel.buffers import READ_LATENCY
from hw.rtl.asq import AsqUnit
from hw.rtl.mac import MacArray
from hw.rtl.requant import Requantizer

#: Cycles from a set's issue to its engine's ``done``: the buffer and ROM reads, the operand
#: register (the layer's activation lanes selected and registered, so that no path chains the
#: selection into an engine's multipliers), then the array.
OPERAND_LATENCY = 1
#: Both engines' arrays take two stages more than the plain array: the wide 8-bit products in three
#: (a DSP block's operand, pipeline and output registers, or logic cut after every adder level), the
#: main array's per-PE sums in two registered stages, so that the two stay in step.
ENGINE_LATENCY = MacArray.LATENCY + 2
MAC_LATENCY = READ_LATENCY + OPERAND_LATENCY + ENGINE_LATENCY
#: The serializer sends a group's first sum the cycle after ``done``.
SERIALIZER_LATENCY = 1
#: From the counter cycle of a group's last set to the write of its first value (channel ``k`` of
#: the group is written ``k`` cycles later).
VALUE_WRITE_DELAY = AddressGenerator.LATENCY + MAC_LATENCY + SERIALIZER_LATENCY + Requantizer.LATENCY
#: The ASQ phase's own cycle, the one that starts the unit; ``AsqUnit.beta_cycles`` follow.
ASQ_START_CYCLES = 1
#: From a quantizing pass's ``y`` address to the write of its code: the ``y`` buffer read, then
#: the unit's quantizer.
CODE_WRITE_DELAY = READ_LATENCY + AsqUnit.CODE_LATENCY


@dataclass(frozen=True)
class IssuedSet:
    """One input set of a layer: its counter cycle ``t`` (from the layer's first RUN cycle), the
    activation word it reads (None: padding, nothing read), its group and output pixel, and
    whether it ends its group."""

    t: int
    word: int | None
    grp: int
    pix: int
    last: bool


def issue_sets(layer, since: int | None = None) -> list[IssuedSet]:
    """The sets of ``layer`` in the address generator's order and cycles.

    ``since``: the generator's cycles since the last group end when the layer starts (PE or more:
    none recent). A group end waits until PE cycles separate it from the previous one (the
    serializer's length), as :class:`~hw.rtl.accel.address.AddressGenerator` does.
    """
    pe = layer.pe
    since = pe if since is None else min(since, pe)
    t, sets = 0, []
    for oy in range(layer.h_out):
        for ox in range(layer.w_out):
            for grp in range(layer.groups):
                for ky in range(layer.kernel):
                    for kx in range(layer.kernel):
                        for ck in range(layer.chunks):
                            last = ky == layer.kernel - 1 and kx == layer.kernel - 1 and ck == layer.chunks - 1
                            while last and since < pe:
                                t, since = t + 1, since + 1
                            iy = oy * layer.stride + ky - layer.pad
                            ix = ox * layer.stride + kx - layer.pad
                            inside = 0 <= iy < layer.h_in and 0 <= ix < layer.w_in
                            word = ck * layer.in_pixels + iy * layer.w_in + ix if inside else None
                            sets.append(IssuedSet(t, word, grp, oy * layer.w_out + ox, last))
                            t += 1
                            since = 1 if last else min(since + 1, pe)
    return sets


def output_writes(layer, sets) -> dict:
    """``(channel, pixel) -> cycle`` of each output value's write, from the layer's first RUN cycle
    (padding channels of the last group are never written)."""
    writes = {}
    for s in sets:
        if s.last:
            for k in range(layer.pe):
                chan = s.grp * layer.pe + k
                if chan < layer.c_out:
                    writes[chan, s.pix] = s.t + VALUE_WRITE_DELAY + k
    return writes


def buffer_word(layer, chan: int, pix: int, map_pixels: int) -> int:
    """The word of ``layer``'s input buffer that holds channel ``chan`` at pixel ``pix`` of the map
    its writer produces (``map_pixels`` pixels a channel), as the writer addresses it (fc: the map
    flattened in (C, H, W) order)."""
    if layer.kind == "fc":
        chan, pix = chan * map_pixels + pix, 0
    return (chan // layer.simd) * layer.in_pixels + pix


def earliest_start(reads, word_writes: dict) -> int:
    """The smallest start cycle at which every read of ``reads`` (sets of a layer, cycles from its
    start) comes after the write of its word (``word_writes``: word -> cycle, same origin as the
    start)."""
    start = None
    for s in reads:
        if s.word is not None:
            need = word_writes[s.word] - s.t - (AddressGenerator.LATENCY - 1)
            start = need if start is None or need > start else start
    return 0 if start is None else start


def _word_writes(layer, value_writes: dict, map_pixels: int) -> dict:
    """Latest write of each word of ``layer``'s input buffer, from ``(channel, pixel) -> cycle``."""
    words = {}
    for (chan, pix), t in value_writes.items():
        w = buffer_word(layer, chan, pix, map_pixels)
        words[w] = max(words.get(w, t), t)
    return words


@dataclass
class LayerTiming:
    """Where one layer's phases fall (cycles from the image's first input beat)."""

    run: int  # first RUN cycle
    issue: int  # cycles of the loops (waits included); RUN<L> ends AddressGenerator.DONE_CYCLES later
    drain: int  # cycles after RUN<L> before the next phase (DRAIN<L>)
    asq: int | None = None  # for an ASQ input of this layer: the cycle of ASQ<L> (the unit's start)
    qpass: int | None = None  # and the first QPASS<L> cycle
    qpass_run: int | None = None  # RUN<L>'s start, counted from the first QPASS<L> cycle


@dataclass
class Schedule:
    """The whole inference's phases (:func:`schedule`)."""

    layers: list  # of LayerTiming, in layer order
    out: int  # first OUT cycle
    cycles: int  # what the ``cycles`` counter reads at the class beat, no stalls


def schedule(plan, asq_beta_cycles=None) -> Schedule:
    """Place every phase of an inference of ``plan`` as early as its data allow.

    Parameters
    ----------
    plan : hw.rtl.plan.NetPlan
    asq_beta_cycles : callable or None
        ``k -> cycles`` of the ASQ unit's beta and reciprocal for its ``k``-th configuration
        (:meth:`hw.rtl.asq.AsqUnit.beta_cycles`); needed when a layer input is ASQ.

    Returns
    -------
    Schedule
        Per layer its RUN start, issue cycles, drain and ASQ phases; the first OUT cycle and the
        cycles per image (the ``cycles`` counter at the class beat: ``OUT`` + the output's cycles).
    """
    layers = plan.layers
    asq_layers = [la for la in layers if la.asq_in is not None]
    drain_full = plan.pe + AddressGenerator.LATENCY + MAC_LATENCY + Requantizer.LATENCY
    timings = []
    free = plan.input_codes  # LOAD: one code per cycle; the first layer starts after the last one
    last_end = None  # cycle of the previous layer's last set (a group end), None: none yet
    writes = {}  # (chan, pix) -> write cycle of the previous layer's outputs
    pass_end = 0  # the cycle after the last quantizing pass's last code

    def since_at(cycle):
        return plan.pe if last_end is None else min(plan.pe, cycle - last_end)

    for la in layers:
        if la.asq_in is not None:
            # The ASQ state follows the previous layer's full drain (``free`` includes it).
            k = asq_layers.index(la)
            asq = free
            qpass = asq + ASQ_START_CYCLES + asq_beta_cycles(k)
            n = la.c_in * la.in_pixels
            # The pass goes pixel-major: (chan, pix) at its cycle pix * C + chan, written
            # CODE_WRITE_DELAY later.
            codes = {(c, p): p * la.c_in + c + CODE_WRITE_DELAY
                     for c in range(la.c_in) for p in range(la.in_pixels)}
            sets = issue_sets(la, plan.pe)
            start = earliest_start(sets, _word_writes(la, codes, la.in_pixels))
            if la.output == "y":
                # Its own y map (pixel-major too) must not overwrite what the pass has yet to read:
                # the pass reads address a at its cycle a.
                for (chan, pix), w in output_writes(la, sets).items():
                    start = max(start, pix * la.c_out + chan + 1 - w)
            # At least one pass cycle before the loops, and the loops still running when it ends.
            start = max(start, 1, n - (sets[-1].t + 1) + 1)
            if qpass + start - last_end < plan.pe:  # pragma: no cover - the adapter takes far longer
                raise ValueError(f"{la.name}: the quantizing pass starts too soon after the last layer")
            timing = LayerTiming(run=qpass + start, issue=sets[-1].t + 1, drain=0, asq=asq, qpass=qpass,
                                 qpass_run=start)
            # The next ASQ start must wait for this pass's last code (it uses ``r`` and ``sel``).
            pass_end = qpass + n + CODE_WRITE_DELAY
        else:
            # A later start can only let a group end wait less, so reads come no later: iterate to
            # the fixed point. (The first layer's input is the whole image, loaded before it.)
            run = free
            sets = issue_sets(la, since_at(run))
            while writes:
                need = max(run, earliest_start(sets, _word_writes(la, writes, layers[la.index - 1].out_pixels)))
                if need == run:
                    break
                run = need
                sets = issue_sets(la, since_at(run))
            if timings:
                timings[-1].drain = run - free  # the previous layer's drain separates the two
            timing = LayerTiming(run=run, issue=sets[-1].t + 1, drain=0)
        timings.append(timing)
        writes = {key: timing.run + w for key, w in output_writes(la, sets).items()}
        last_end = timing.run + timing.issue - 1
        # RUN<L> ends with the address generator's registered ``done``, a cycle after the last set.
        free = last_end + 1 + AddressGenerator.DONE_CYCLES
        nxt = layers[la.index + 1] if la.index + 1 < len(layers) else None
        if nxt is not None and nxt.asq_in is not None:
            # Every y into the GAP before the adapter starts (drain_full cycles after the last
            # set), and the last pass done with the unit.
            timing.drain = max(last_end + 1 + drain_full, pass_end) - free
            free += timing.drain
    # OUT: logit c is read at OUT + c (its address; the beats follow back to back), after its write.
    out = free
    for (chan, _), w in writes.items():
        out = max(out, w + 1 - chan)
    timings[-1].drain = out - free
    return Schedule(layers=timings, out=out, cycles=out + ArgmaxOutput.cycles(plan.n_logits))
