"""``WeightRam``: the engine's run-time-loaded weight store, one port, 16-bit lanes.

The UP5K's single-port RAMs (``SB_SPRAM256KA``, 16384 x 16 bits, four of them) cannot be set by
the bitstream, so a design keeping its weights there loads them at run time
(:class:`hw.rtl.engine.core.GraphEngine` with ``weight_store="spram"``, its loader on the input
stream). This memory is built like them: one address for reads and writes, ``lanes`` 16-bit words
side by side (a write enables any of them), the read data one cycle after its address (while
``wen`` is low). As ``cells="spram"`` it is made of ``SB_SPRAM256KA`` instances: ``lanes``
columns by ``ceil(depth / 16384)`` rows, the row chosen by the address's top bits (the cells'
``CHIPSELECT``), the read data from the row of the address a cycle before. As ``cells="memory"``
it is an :class:`amaranth.lib.memory.Memory` of the same behaviour, for simulation and for
other FPGAs' block RAM. (Yosys does not map a ``Memory`` here itself: Amaranth writes its
initial value, zeros, and ``synth_ice40 -spram`` maps only memories without one.)

Ports
-----
addr : In(range(depth))
wdata : In(16)
    The 16-bit word written to every enabled lane.
wen : In(lanes)
    Lane write enables.
rdata : Out(16 * lanes)
    The word at the address of the cycle before (lane 0 the low bits).
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

#: The UP5K's single-port RAM: words and bits of one ``SB_SPRAM256KA``.
SPRAM_WORDS, SPRAM_BITS = 16384, 16
#: The cell kinds :class:`WeightRam` is built of.
WEIGHT_RAM_CELLS = ("memory", "spram")


def spram_cells(depth: int, lanes: int) -> int:
    """``SB_SPRAM256KA`` cells a ``depth`` x ``lanes`` 16-bit-word store takes."""
    return lanes * -(-max(depth, 1) // SPRAM_WORDS)


class WeightRam(wiring.Component):
    """A single-port RAM of ``depth`` addresses of ``lanes`` 16-bit words (see the module notes).

    Parameters
    ----------
    depth : int
    lanes : int
    cells : str
        ``"memory"`` (an Amaranth ``Memory``) or ``"spram"`` (``SB_SPRAM256KA`` instances).
    """

    def __init__(self, depth: int, lanes: int, cells: str = "memory"):
        if cells not in WEIGHT_RAM_CELLS:
            raise ValueError(f"WeightRam: cells {cells!r} is not one of {WEIGHT_RAM_CELLS}")
        if depth < 1 or lanes < 1:
            raise ValueError(f"WeightRam: depth {depth} and lanes {lanes} must be >= 1")
        self.depth, self.lanes, self.cells = depth, lanes, cells
        super().__init__({
            "addr": In(range(depth)), "wdata": In(SPRAM_BITS), "wen": In(lanes),
            "rdata": Out(SPRAM_BITS * lanes),
        })

    def elaborate(self, platform):
        m = Module()
        if self.cells == "memory":
            m.submodules.mem = mem = memory.Memory(shape=unsigned(SPRAM_BITS * self.lanes), depth=self.depth,
                                                   init=[])
            wr = mem.write_port(granularity=SPRAM_BITS)
            rd = mem.read_port()
            m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.wdata.replicate(self.lanes)), wr.en.eq(self.wen),
                         rd.addr.eq(self.addr), self.rdata.eq(rd.data)]
            return m
        rows = -(-self.depth // SPRAM_WORDS)
        cell_addr = Signal(14)
        m.d.comb += cell_addr.eq(self.addr[:14])
        row = Signal(range(max(rows, 2)))
        row_q = Signal.like(row)
        if rows > 1:
            m.d.comb += row.eq(self.addr[14:])
        m.d.sync += row_q.eq(row)
        for r in range(rows):
            row_data = Signal(SPRAM_BITS * self.lanes, name=f"row{r}_data")
            for lane in range(self.lanes):
                dout = Signal(SPRAM_BITS, name=f"spram_r{r}_l{lane}_out")
                m.submodules[f"spram_r{r}_l{lane}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=cell_addr, i_DATAIN=self.wdata, i_MASKWREN=Const(0b1111, 4),
                    i_WREN=self.wen[lane], i_CHIPSELECT=row == r, i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0), i_SLEEP=Const(0), i_POWEROFF=Const(1),
                    o_DATAOUT=dout)
                m.d.comb += row_data[SPRAM_BITS * lane:SPRAM_BITS * (lane + 1)].eq(dout)
            with m.If(row_q == r):
                m.d.comb += self.rdata.eq(row_data)
        return m
