"""The serializer: a finished group's PE sums into the shared requantizer, one channel per cycle."""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


class Serializer(wiring.Component):
    """Takes the PE accumulators of a finished group and sends them one per cycle.

    Latency 1 (the first channel leaves the cycle after ``done``); throughput one group per PE
    cycles: a new ``done`` while channels are still waiting overwrites them, so its caller keeps
    PE cycles between group ends (:class:`~hw.rtl.accel.address.AddressGenerator` does).

    Parameters
    ----------
    pe : int
        Accumulators per group.
    acc_width : int
        Width of the signed accumulators.
    payload : data.StructLayout
        Output beat layout with fields ``acc``, ``chan`` (``grp * PE + k``) and ``tag`` (the
        pixel): the requantizer's input layout.
    grp_shape, pix_shape : Shape
        Shapes of the group and pixel index inputs.
    layer_shape : Shape
        Shape of the layer index carried beside the sums.

    Ports
    -----
    done : In(1)
        ``acc`` holds a finished group (one cycle pulse).
    acc : In(ArrayLayout(signed(acc_width), pe))
    grp, pix, layer : In
        The group, output pixel and layer of ``acc``.
    o : Out(stream.Signature(payload, always_ready=True))
        Channel ``grp * PE + k`` of the group in the ``k``-th cycle after ``done``.
    o_layer : Out(layer_shape)
        The layer of the sum on ``o``.
    """

    def __init__(self, *, pe: int, acc_width: int, payload, grp_shape, pix_shape, layer_shape=1):
        if pe < 1:
            raise ValueError(f"Serializer pe={pe} must be >= 1")
        if acc_width < 1:
            raise ValueError(f"Serializer acc_width={acc_width} must be >= 1")
        missing = {"acc", "chan", "tag"} - {name for name, _ in data.Layout.cast(payload)}
        if missing:
            raise ValueError(f"Serializer payload {payload!r} lacks fields {sorted(missing)}")
        self.pe, self.acc_width = pe, acc_width
        super().__init__({
            "done": In(1),
            "acc": In(data.ArrayLayout(signed(acc_width), pe)),
            "grp": In(grp_shape),
            "pix": In(pix_shape),
            "layer": In(layer_shape),
            "o": Out(stream.Signature(payload, always_ready=True)),
            "o_layer": Out(layer_shape),
        })

    def elaborate(self, platform):
        m = Module()
        pe = self.pe
        held = [Signal(signed(self.acc_width), name=f"held{k}") for k in range(pe)]
        left = Signal(range(pe + 1))
        idx = Signal(range(pe + 1))
        grp = Signal.like(self.grp, name="held_grp")
        pix = Signal.like(self.pix, name="held_pix")
        with m.If(self.done):
            m.d.sync += [h.eq(self.acc[k]) for k, h in enumerate(held)]
            m.d.sync += [left.eq(pe), idx.eq(0), grp.eq(self.grp), pix.eq(self.pix), self.o_layer.eq(self.layer)]
        with m.Elif(left != 0):
            m.d.sync += [held[k].eq(held[k + 1]) for k in range(pe - 1)]
            m.d.sync += [left.eq(left - 1), idx.eq(idx + 1)]
        m.d.comb += [self.o.valid.eq(left != 0), self.o.payload.acc.eq(held[0]),
                     self.o.payload.chan.eq(grp * pe + idx), self.o.payload.tag.eq(pix)]
        return m
