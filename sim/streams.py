"""cocotb driver and monitor for Amaranth ``lib.stream`` ports, with seeded random stalls.

An Amaranth stream member ``x`` of a component becomes three Verilog ports ``x__valid``,
``x__ready`` and ``x__payload`` (``ready`` is absent or constant for ``always_ready`` streams). The
driver and the monitor are generic over what a payload means: the caller passes ``pack`` (beat ->
integer) or ``unpack`` (cocotb value -> beat); :mod:`sim.tb` has the packing helpers.

Stalls: the driver inserts idle cycles (``valid`` low) before a beat with probability
``idle_prob`` per cycle; the monitor holds ``ready`` low with probability ``stall_prob`` per cycle.
Both draw from a ``random.Random`` the caller seeds, so a failing run is reproduced exactly.

The monitor also checks the stream rules while it stalls a beat: once ``valid`` is high it must stay
high, with the same payload, until the transfer (a design that drops or changes a stalled beat
fails the test with a protocol error).

Waiting is edge-driven where it can be (``RisingEdge(ready)``, ``RisingEdge(valid)``) rather than
polled every clock, which keeps long compute phases cheap in simulation time.
"""

import cocotb
from cocotb.triggers import Event, ReadOnly, RisingEdge


def _port(dut, name, member, required=True):
    handle = getattr(dut, f"{name}__{member}", None)
    if handle is None and required:
        raise AttributeError(f"design has no port {name}__{member}")
    return handle


class StreamDriver:
    """Drives beats into a stream input of the design.

    Parameters
    ----------
    dut : cocotb handle
    name : str
        The stream member's name (``i`` for ports ``i__valid``, ``i__ready``, ``i__payload``).
    pack : callable, optional
        Beat -> payload integer (default: the beat is already an integer).
    rng : random.Random, optional
        Stall source; without it, no idle cycles.
    idle_prob : float
        Probability of an idle cycle before each beat (repeated: geometric idle lengths).
    on_sent : callable, optional
        Called with each beat once the design has taken it (e.g. the reference model).
    sideband : callable, optional
        Called with each beat as it is offered, to drive ports that travel beside the stream
        (e.g. the requantizer's ``layer`` and ``g``).
    """

    def __init__(self, dut, name, *, pack=int, rng=None, idle_prob=0.0, on_sent=None, sideband=None):
        self.clk = dut.clk
        self.valid = _port(dut, name, "valid")
        self.ready = _port(dut, name, "ready", required=False)
        self.payload = _port(dut, name, "payload")
        self.pack, self.rng, self.idle_prob, self.on_sent = pack, rng, idle_prob, on_sent
        self.sideband = sideband
        self.sent = 0
        self.valid.value = 0

    async def _idle(self):
        while self.rng is not None and self.rng.random() < self.idle_prob:
            self.valid.value = 0
            await RisingEdge(self.clk)

    async def send(self, beat) -> None:
        """Offer ``beat`` and return after the clock edge that transfers it."""
        await self._idle()
        self.valid.value = 1
        self.payload.value = self.pack(beat)
        if self.sideband is not None:
            self.sideband(beat)
        if self.ready is not None:
            await ReadOnly()
            while self.ready.value != 1:
                await RisingEdge(self.ready)  # long waits cost one wake-up, not one per cycle
                await ReadOnly()
        await RisingEdge(self.clk)
        self.valid.value = 0
        self.sent += 1
        if self.on_sent is not None:
            self.on_sent(beat)

    async def send_all(self, beats) -> None:
        for beat in beats:
            await self.send(beat)


class StreamMonitor:
    """Collects the beats a stream output of the design transfers, applying random back-pressure.

    Parameters
    ----------
    dut : cocotb handle
    name : str
        The stream member's name (``o`` for ``o__valid``, ``o__ready``, ``o__payload``).
    unpack : callable, optional
        cocotb value (``LogicArray``) -> beat (default: unsigned integer).
    rng : random.Random, optional
        Back-pressure source; without it, ``ready`` is always high.
    stall_prob : float
        Probability that ``ready`` is low in a cycle.
    callback : callable, optional
        Called with each transferred beat, in order (e.g. the checker).
    check_protocol : bool
        Fail when a stalled beat is dropped or changed before its transfer.
    passive : bool
        Only watch: ``ready`` belongs to the design (an input stream, monitored beside its driver
        so that the reference model sees what the design actually took).
    """

    def __init__(self, dut, name, *, unpack=None, rng=None, stall_prob=0.0, callback=None,
                 check_protocol=True, passive=False):
        self.clk = dut.clk
        self.name = name
        self.valid = _port(dut, name, "valid")
        self.ready = _port(dut, name, "ready", required=False)
        self.payload = _port(dut, name, "payload")
        self.unpack = unpack or (lambda value: value.to_unsigned())
        self.rng, self.stall_prob = rng, stall_prob
        self.callback, self.check_protocol = callback, check_protocol
        self.beats = []
        self.count = 0
        self._waiters = []  # (count, Event)
        self._task = None
        self.passive = passive
        self._draw_ready()

    def _draw_ready(self):
        if self.ready is not None and not self.passive:
            stall = self.rng is not None and self.rng.random() < self.stall_prob
            self.ready.value = 0 if stall else 1

    def start(self, keep=True):
        """Start monitoring in the background; ``keep`` stores the beats in :attr:`beats`."""
        self.keep = keep
        self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def wait_count(self, n: int) -> None:
        """Return once ``n`` beats have been transferred in total."""
        if self.count >= n:
            return
        event = Event()
        self._waiters.append((n, event))
        await event.wait()

    def _deliver(self, beat):
        self.count += 1
        if self.keep:
            self.beats.append(beat)
        if self.callback is not None:
            self.callback(beat)
        for n, event in [w for w in self._waiters if w[0] <= self.count]:
            event.set()
            self._waiters.remove((n, event))

    async def _run(self):
        held = None  # payload of a beat stalled in the previous cycle
        while True:
            await ReadOnly()
            if self.valid.value != 1:
                if held is not None and self.check_protocol:
                    raise AssertionError(f"stream {self.name}: valid dropped before a stalled beat "
                                         f"(payload {held:#x}) was transferred")
                await RisingEdge(self.valid)
                continue
            raw = self.payload.value
            if held is not None and self.check_protocol and raw.to_unsigned() != held:
                raise AssertionError(f"stream {self.name}: stalled payload changed from {held:#x} "
                                     f"to {raw.to_unsigned():#x} before its transfer")
            if self.ready is None or self.ready.value == 1:
                beat, held = self.unpack(raw), None
                await RisingEdge(self.clk)  # the transfer
                self._deliver(beat)
                self._draw_ready()
                continue
            held = raw.to_unsigned()
            if self.passive:
                await RisingEdge(self.ready)  # the design's back-pressure: one wake-up per stall
            else:
                await RisingEdge(self.clk)
                self._draw_ready()
