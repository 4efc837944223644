"""A deliberately tiny component that proves the toolchain end to end.

It is what ``make test`` converts to Verilog, simulates with cocotb on Icarus and Verilator, and
places and routes for the iCEBreaker before any real design is involved, so a broken tool shows up
as a failure of this probe rather than as a puzzle inside the accelerator.
"""

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, io, stream, wiring
from amaranth.lib.wiring import In, Out


class ToolchainProbe(wiring.Component):
    """Signed multiply-accumulate over a stream of (a, b) pairs.

    Each accepted beat adds ``a * b`` to ``acc``; a beat with ``last`` set also emits the sum
    (including that beat's product) on ``o`` and clears the accumulator.

    Parameters
    ----------
    width : int
        Width of ``a`` and ``b`` (signed), 2..16.
    acc_width : int
        Width of the signed accumulator, at least ``2 * width``.

    Latency and throughput: one beat per cycle in; the sum appears on ``o`` one cycle after the
    ``last`` beat; ``i.ready`` is low while an output waits for ``o.ready``.
    """

    def __init__(self, width=8, acc_width=20):
        if not 2 <= width <= 16:
            raise ValueError(f"width must be 2..16, not {width!r}")
        if acc_width < 2 * width:
            raise ValueError(f"acc_width must be at least 2 * width = {2 * width}, not {acc_width!r}")
        self.width, self.acc_width = width, acc_width
        beat = data.StructLayout({"a": signed(width), "b": signed(width), "last": unsigned(1)})
        super().__init__({
            "i": In(stream.Signature(beat)),
            "o": Out(stream.Signature(signed(acc_width))),
        })

    def elaborate(self, platform):
        m = Module()
        acc = Signal(signed(self.acc_width))
        total = acc + self.i.payload.a * self.i.payload.b
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(self.i.payload.last):
                m.d.sync += [self.o.payload.eq(total), self.o.valid.eq(1), acc.eq(0)]
            with m.Else():
                m.d.sync += acc.eq(total)
        return m


class ProbeOnBoard(wiring.Component):
    """:class:`ToolchainProbe` wired to a board: a counter feeds it, its sum drives the LEDs.

    Enough I/O that synthesis keeps every bit of the probe, no more.
    """

    def __init__(self, width=8, acc_width=20):
        self.probe = ToolchainProbe(width, acc_width)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.probe = probe = self.probe
        count = Signal(2 * probe.width + 4)
        m.d.sync += count.eq(count + 1)
        m.d.comb += [
            probe.i.valid.eq(1),
            probe.i.payload.a.eq(count[: probe.width]),
            probe.i.payload.b.eq(count[probe.width : 2 * probe.width]),
            probe.i.payload.last.eq(count[-4:] == 0),
            probe.o.ready.eq(1),
        ]
        for i, bit in enumerate([probe.o.payload.xor(), probe.o.valid]):
            m.submodules[f"led{i}"] = led = io.FFBuffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(bit)
        return m
