"""On-chip buffers of the accelerator: layer inputs (activation codes) and weight ROM contents."""

from amaranth.hdl import Cat, Module, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

#: Cycles from a buffer's read address to its data (synchronous read ports: block RAM).
READ_LATENCY = 1


def _index_shape(count: int):
    """Unsigned shape of an index below ``count``, at least one bit (no zero-width Verilog ports)."""
    return unsigned(max(count - 1, 1).bit_length())


def write_layout(layer) -> data.StructLayout:
    """One value written into ``layer``'s input buffer: its channel, pixel and code."""
    return data.StructLayout({"chan": _index_shape(layer.c_in), "pix": _index_shape(layer.in_pixels),
                              "value": unsigned(layer.act_bits)})


class ActivationBuffer(wiring.Component):
    """The input codes of one layer, channel ``c`` in lane ``c % SIMD`` of the word at
    ``(c // SIMD) * H * W + pixel``.

    One memory whose word holds the SIMD lanes the engine reads together (one block RAM where
    SIMD banks would take SIMD); lanes are written one at a time through the write port's
    granularity. fc reads its input flattened in (C, H, W) order: its writers give the flat index
    as the channel and pixel 0.

    Latency: reads :data:`READ_LATENCY` cycle; writes land at the end of the cycle. Throughput:
    one read and one write per cycle.

    Parameters
    ----------
    layer : hw.rtl.plan.LayerPlan
        The layer whose input this is (``c_in``, ``in_pixels``, ``simd``, ``act_bits``).

    Ports
    -----
    read_addr : In(unsigned)
        Word address.
    read_data : Out(ArrayLayout(unsigned(act_bits), simd))
        The SIMD lanes of the word addressed in the previous cycle.
    write : In(stream.Signature(write_layout(layer), always_ready=True))
        One value per beat (``value``: the code's low ``act_bits`` bits).
    """

    def __init__(self, layer):
        if layer.simd < 1 or layer.simd & (layer.simd - 1):
            raise ValueError(f"ActivationBuffer of {layer.name}: SIMD={layer.simd} is not a power of two")
        if layer.c_in % layer.simd:
            raise ValueError(f"ActivationBuffer of {layer.name}: SIMD={layer.simd} does not divide "
                             f"its {layer.c_in} input channels")
        self.layer = layer
        self.depth = (layer.c_in // layer.simd) * layer.in_pixels
        super().__init__({
            "read_addr": In(_index_shape(self.depth)),
            "read_data": Out(data.ArrayLayout(unsigned(layer.act_bits), layer.simd)),
            "write": In(stream.Signature(write_layout(layer), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        la = self.layer
        mem = memory.Memory(shape=unsigned(la.simd * la.act_bits), depth=self.depth, init=[])
        m.submodules.memory = mem
        rp, wp = mem.read_port(), mem.write_port(granularity=la.act_bits)
        m.d.comb += [rp.addr.eq(self.read_addr), self.read_data.eq(rp.data)]
        shift = exact_log2(la.simd)
        beat = self.write.payload
        m.d.comb += [wp.addr.eq((beat.chan >> shift) * la.in_pixels + beat.pix),
                     wp.data.eq(Cat(*[beat.value] * la.simd))]
        for b in range(la.simd):
            lane_hit = (beat.chan[:shift] == b) if shift else 1
            m.d.comb += wp.en[b].eq(self.write.valid & lane_hit)
        return m


def _raw_weight(code: int, layer) -> int:
    """A weight code as ROM bits: two's complement for uniform weights, the code itself otherwise."""
    if layer.w_kind == "int":
        return int(code) & ((1 << layer.w_bits) - 1)
    return int(code)


def layer_weight_words(layer, *, pe: int, simd: int, w_bits: int) -> list[int]:
    """ROM words in issue order (group, ky, kx, chunk); lane (p, s) at bit ``(p*simd + s)*w_bits``.

    Output channels beyond ``c_out`` (the last group's padding) read zero weights.
    """
    w = layer.weights
    words = []
    for grp in range(layer.groups):
        for ky in range(layer.kernel):
            for kx in range(layer.kernel):
                for ck in range(layer.chunks):
                    word = 0
                    for p in range(pe):
                        co = grp * pe + p
                        for s in range(simd):
                            ci = ck * simd + s
                            raw = _raw_weight(w[co, ci, ky, kx], layer) if co < layer.c_out else 0
                            word |= raw << ((p * simd + s) * w_bits)
                    words.append(word)
    return words


def weight_rom(layers, *, pe: int, simd: int, w_bits: int) -> tuple[memory.Memory, dict]:
    """One engine's weight ROM: ``layers``' words one after the other, and each layer's first word."""
    words, bases = [], {}
    for la in layers:
        bases[la.index] = len(words)
        words += layer_weight_words(la, pe=pe, simd=simd, w_bits=w_bits)
    return memory.Memory(shape=unsigned(pe * simd * w_bits), depth=len(words), init=words), bases
