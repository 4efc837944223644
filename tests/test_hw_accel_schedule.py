"""The accelerator's phase schedule (hw.rtl.accel.schedule): the digits figures derived by hand
from the loop nests and latencies, and the back-to-back output under late logit writes.

Whether the schedule is safe (every read after its write) is shown by running the design:
tests/test_hw_top.py (amaranth.sim, random stalls) and `asqhw sim` (Verilator, the whole split).
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.eda.generate import build_top
from hw.rtl.accel.argmax import ArgmaxOutput

# Digits at PE 4 x SIMD 4, the same for BITS 3 and 4 (the same shapes, and both bundles' ASQ
# constants give the adapter 109 cycles). Cycles from the first input beat:
#   LOAD                        64   (1 x 8 x 8 codes)
#   conv1 RUN              2304 + 1  (8 x 8 pixels x 4 groups x 9 sets; + the cycle of the address
#                                    generator's registered done)
#   conv1 drain                 21   (the last value is written PE 4 + address 2 + engine 6 +
#                                    requantizer 10 = 22 cycles after the last set: every y in the GAP)
#   ASQ(conv2)                 110   (start 1 + 68 MLP steps + 3 idle steps (the last hidden value's
#                                    write) + 39 - 17 divider steps + 6 + 2 x 5 multiplier: operand
#                                    register + 4 stages, one per adder level)
#   QPASS(conv2) before RUN    129   conv2's set 35 (ky 2, kx 2, chunk 3) reads input pixel 9 of
#                                    channels 12..15; the pixel-major pass writes (15, 9) at
#                                    9 x 16 + 15 + 6 (y read 1, quantizer 5) = 165, and the set's
#                                    address comes 2 cycles after its counters: 165 - 35 - 1
#   conv2 RUN              2304 + 1  (4 x 4 pixels x 4 groups x 36 sets), the pass's rest under it
#   conv2 drain                 21
#   ASQ(conv3)                 110
#   QPASS(conv3) before RUN     65   conv3's set 35 reads pixel 5 of channels 12..15: written at
#                                    5 x 16 + 15 + 6 = 101: 101 - 35 - 1
#   conv3 RUN              1152 + 1  (2 x 2 pixels x 8 groups x 36 sets)
#   conv3 drain                  0   fc's reads of conv3's last values come > 100 cycles later
#   fc RUN                  384 + 1  (3 groups, 10 -> 12 at PE 4, x 128 sets)
#   fc drain                    10   logits 8, 9 written 19, 20 cycles after fc's last set (383):
#                                    logit c is read at OUT + c, so OUT = 403 + 1 - 9 = 395 = 385 + 10
#   OUT                         13   (first read 1 + 10 beats + the last logit's comparison 1 + class 1)
DIGITS_PE4_SIMD4_CYCLES = 6691
DIGITS_PE4_SIMD4_DRAINS = [21, 21, 0, 10]
DIGITS_PE4_SIMD4_QPASS_RUN = [None, 129, 65, None]


@pytest.mark.parametrize("bits", [3, 4])
def test_digits_cycles_per_image_follow_the_schedule_by_hand(bits, shipped_bundle):
    top = build_top(shipped_bundle(bits), pe=4, simd=4)
    sched = top.schedule()
    assert [t.drain for t in sched.layers] == DIGITS_PE4_SIMD4_DRAINS
    assert [t.qpass_run for t in sched.layers] == DIGITS_PE4_SIMD4_QPASS_RUN
    assert [t.issue for t in sched.layers] == [2304, 2304, 1152, 384]
    assert sched.out == DIGITS_PE4_SIMD4_CYCLES - 13
    assert top.cycles_per_inference() == DIGITS_PE4_SIMD4_CYCLES


def test_logits_stream_back_to_back_while_the_last_ones_arrive():
    """Logit c is written in the cycle before its read (c cycles after ``active``), with random
    back-pressure: every beat in class order, then the first index of the largest logit."""
    n = 10
    dut = ArgmaxOutput(n, value_width=12, chan_shape=range(16))
    rng = np.random.default_rng(5)
    logits = [int(v) for v in rng.integers(-2000, 2000, n)]
    logits[7] = logits[3] = max(logits) + 5  # a tie: the first index wins
    got = []

    async def writer(ctx):
        # Logit c is written in cycle A + c - 1, A the first active cycle (logit 0 just before).
        for c in range(n):
            ctx.set(dut.write.valid, 1)
            ctx.set(dut.write.payload.chan, c)
            ctx.set(dut.write.payload.value, logits[c])
            if c == 1:
                ctx.set(dut.active, 1)
            await ctx.tick()
        ctx.set(dut.write.valid, 0)

    async def reader(ctx):
        cycles = 0
        while True:
            ready = len(got) >= n or rng.random() > 0.3
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload, done = await ctx.tick().sample(dut.o.valid, dut.o.payload, dut.done)
            cycles += 1
            if valid and ready:
                got.append((payload.value, payload.last))
            if done:
                break
            assert cycles < 100

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(writer)
    sim.add_testbench(reader)
    sim.run()
    assert got == [(v, 0) for v in logits] + [(3, 1)]


def test_logits_without_back_pressure_take_the_model_cycles():
    n = 10
    dut = ArgmaxOutput(n, value_width=8, chan_shape=range(16))
    seen = []

    async def bench(ctx):
        for c in range(n):
            ctx.set(dut.write.valid, 1)
            ctx.set(dut.write.payload.chan, c)
            ctx.set(dut.write.payload.value, c - 5)
            await ctx.tick()
        ctx.set(dut.write.valid, 0)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.active, 1)
        for cycle in range(1, 30):
            _, _, valid, done = await ctx.tick().sample(dut.o.valid, dut.done)
            seen.append(valid)
            if done:
                assert cycle == ArgmaxOutput.cycles(n) == n + 3
                return
        raise AssertionError("no class beat")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [0] + [1] * n + [0, 1]


def test_layers_whose_first_reads_wait_past_the_pass_end_wait_in_qwait(monkeypatch, shipped_bundle):
    """A schedule that starts an ASQ input's loops after its quantizing pass ends (here forced: the
    codes taken to arrive 1100 cycles late, beyond conv2's 1024-cycle pass) waits in QWAIT<L>;
    the design stays bit-exact and its counter equals the model plus the stalls."""
    from golden.model import load_bundle, run
    from hw.rtl.accel import schedule as schedule_module
    from tests.test_hw_top import simulate

    monkeypatch.setattr(schedule_module, "CODE_WRITE_DELAY", 1100)
    bundle = load_bundle(shipped_bundle(3))
    top = build_top(bundle, pe=4, simd=4)
    sched = top.schedule()
    assert sched.layers[1].qpass_run > 1024 and sched.layers[2].qpass_run > 256
    images = bundle.vectors["conv1.in"][:2]
    golden = run(bundle, images)
    got = simulate(top, images, seed=7, p_in_idle=0.1, p_out_stall=0.3)
    for n, (logits, cls, cycles, stalls) in enumerate(got):
        assert logits == [int(v) for v in golden["logits"][n]]
        assert cls == int(golden["pred"][n])
        assert cycles == top.cycles_per_inference() + stalls
