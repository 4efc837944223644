"""Fixed delays of a stall-free pipeline's side data (tags, indices) in a block RAM.

A ``cycles``-stage chain of flip-flops beside a pipeline costs one logic cell per bit and stage on
the iCE40 (a flip-flop with no logic of its own still takes a cell). A small memory written every
cycle at a free-running pointer and read ``cycles - 1`` entries behind it gives the same delay in
one block RAM and two pointer counters, whatever the width (up to the RAM's word).
"""

from amaranth.hdl import Signal, unsigned
from amaranth.lib import memory


def memory_delay(m, value, cycles: int, name: str):
    """``value`` as it was ``cycles`` clock cycles ago (sync domain), held in a block RAM.

    The pipeline must never stall: the memory is written every cycle. Its first ``cycles`` outputs
    after reset are the memory's initial contents (zero), like a reset-less register chain's.

    Parameters
    ----------
    m : Module
        The module the memory and its pointers are added to.
    value : Value
        What to delay (unsigned bits; the result has its width).
    cycles : int
        Delay, at least 2 (the read port's register is one of them; one cycle would need the
        read to see the same cycle's write).
    name : str
        Submodule name of the memory.

    Returns
    -------
    Value
        ``value`` delayed by ``cycles``, read from the memory's synchronous port.
    """
    if cycles < 2:
        raise ValueError(f"memory_delay of {name}: cycles={cycles} must be >= 2")
    width = len(value)
    depth = 1 << (cycles - 1).bit_length()  # >= cycles entries, a power of two: the pointers wrap
    mem = memory.Memory(shape=unsigned(width), depth=depth, init=[])
    m.submodules[name] = mem
    wr, rd = mem.write_port(), mem.read_port()
    # Written in cycle t at ``head``; read back with address ``head - (cycles - 1)`` in cycle
    # t + cycles - 1, so its data come out in cycle t + cycles.
    head = Signal(range(depth), name=f"{name}_head")
    tail = Signal(range(depth), name=f"{name}_tail", init=(-(cycles - 1)) % depth)
    m.d.sync += [head.eq(head + 1), tail.eq(tail + 1)]
    m.d.comb += [wr.en.eq(1), wr.addr.eq(head), wr.data.eq(value), rd.addr.eq(tail)]
    return rd.data
