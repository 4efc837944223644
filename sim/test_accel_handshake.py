"""``asq_accel``'s handshake at its edges: resets in every phase, long stalls, an eager producer.

Cocotb side: each test drives the ports cycle by cycle (inputs set at the falling edge, outputs
read once they settle, a transfer counted when valid and ready are high before the rising edge)
and checks every output beat against the golden model, and ``cycles`` against the generator's
model plus the stall cycles the test caused:

- a reset in the middle of the load, of the computation and of the output: no beat transfers
  while ``rst`` is high, and the next image comes out exact with the model's cycle count;
- input gaps and output stalls of hundreds of cycles;
- the next image's first code held valid through the whole computation of the previous one: it
  is taken only after the class beat, and both images are exact.

Pytest side: :func:`test_handshake_scenarios` runs them on the shipped BITS-3 design (Icarus, and
Verilator among the slow tests).
"""

import cocotb
import pytest
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from golden.formats import OUT_WIDTH as OUT_VALUE_BITS


class Ports:
    """Cycle-by-cycle access to ``asq_accel``'s ports (see the module docstring)."""

    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0

    async def step(self, *, rst=0, i_valid=0, code=0, o_ready=0):
        """Apply inputs for the next rising edge; return what transfers at it.

        Returns ``(input taken, output beat or None, i__ready, o__valid)``, the beat as
        ``(value, last)``.
        """
        dut = self.dut
        await FallingEdge(dut.clk)
        self.cycle += 1
        dut.rst.value = rst
        dut.i__valid.value = i_valid
        dut.i__payload.value = int(code) & 0xFF
        dut.o__ready.value = o_ready
        await ReadOnly()
        i_ready, o_valid = dut.i__ready.value, dut.o__valid.value
        if not (i_ready.is_resolvable and o_valid.is_resolvable):
            raise AssertionError(f"cycle {self.cycle}: i__ready={i_ready} o__valid={o_valid} (X or Z)")
        i_ready, o_valid = int(i_ready), int(o_valid)
        if rst and (i_ready or o_valid):
            raise AssertionError(f"cycle {self.cycle}: i__ready={i_ready} o__valid={o_valid} while rst is high")
        beat = None
        if o_valid and o_ready and not rst:
            raw = dut.o__payload.value.to_unsigned()
            value = raw & ((1 << OUT_VALUE_BITS) - 1)
            value -= (value >> (OUT_VALUE_BITS - 1)) << OUT_VALUE_BITS
            beat = (value, raw >> OUT_VALUE_BITS)
        return bool(i_valid and i_ready and not rst), beat, i_ready, o_valid

    def cycles(self) -> int:
        return self.dut.cycles.value.to_unsigned()


async def _setup(dut):
    from sim.reference import NetworkReference
    from sim.tb import start_clock_and_reset, start_watchdog, tb_params

    params = tb_params()
    await start_clock_and_reset(dut, idle=[dut.i__valid, dut.o__ready])
    start_watchdog(params["max_cycles"], "handshake scenario")
    return Ports(dut), NetworkReference(params["bundle"]), params


def _expected_beats(ref, image):
    return [(v, 0) for v in ref.expected_logits(image)] + [(int(ref.pred[image]), 1)]


async def _run_image(ports, ref, image, *, in_gaps=None, out_stalls=None):
    """Send ``image`` and take its beats; return (beats, stall cycles caused, cycles read).

    ``in_gaps``: {code index: idle cycles before it}; ``out_stalls``: {beat index: cycles with
    ``o__ready`` low once the beat is offered}.
    """
    in_gaps, out_stalls = in_gaps or {}, out_stalls or {}
    codes = [int(c) for c in ref.image_codes(image).ravel()]
    n_beats = len(ref.expected_logits(image)) + 1
    k, beats, stalls, idle, held = 0, [], 0, 0, 0
    while len(beats) < n_beats:
        offering = k < len(codes) and idle >= in_gaps.get(k, 0)
        o_ready = held >= out_stalls.get(len(beats), 0)
        taken, beat, i_ready, o_valid = await ports.step(i_valid=int(offering), code=codes[k] if offering else 0,
                                                         o_ready=int(o_ready))
        if k < len(codes) and not offering:
            idle += 1
            if k > 0 and i_ready:  # an idle cycle inside the image's load: one more cycle counted
                stalls += 1
        if o_valid and not o_ready:
            held += 1
            stalls += 1
        if taken:
            k, idle = k + 1, 0
        if beat is not None:
            beats.append(beat)
            held = 0
    await RisingEdge(ports.dut.clk)  # the class beat's transfer edge: the counter then holds
    await ReadOnly()
    return beats, stalls, ports.cycles()


def _check(beats, ref, image, what):
    expected = _expected_beats(ref, image)
    if beats != expected:
        raise AssertionError(f"{what}: image {image} beats {beats}, expected {expected}")


@cocotb.test()
async def reset_in_every_phase(dut):
    """A reset during the load, the computation and the output; the next image is exact."""
    ports, ref, params = await _setup(dut)
    model = params["cycles_model"]
    image_a, image_b = params["images"][:2]
    codes_a = [int(c) for c in ref.image_codes(image_a).ravel()]
    for phase in ("load", "compute", "output"):
        sent = 0
        # Image A, interrupted.
        while sent < (len(codes_a) // 3 if phase == "load" else len(codes_a)):
            taken, *_ = await ports.step(i_valid=1, code=codes_a[sent])
            sent += taken
        if phase == "compute":
            for _ in range(model // 2):
                await ports.step()
        elif phase == "output":
            taken_beats = 0
            while taken_beats < 3:
                _, beat, *_ = await ports.step(o_ready=1)
                taken_beats += beat is not None
        for _ in range(3):  # rst high, an input beat offered and the output's consumer ready
            await ports.step(rst=1, i_valid=1, code=codes_a[0], o_ready=1)
        beats, stalls, cycles = await _run_image(ports, ref, image_b)
        _check(beats, ref, image_b, f"after a reset in the {phase}")
        if stalls == 0 and cycles != model:
            raise AssertionError(f"after a reset in the {phase}: {cycles} cycles, the model says {model}")


@cocotb.test()
async def long_stalls(dut):
    """Input gaps and output stalls of hundreds of cycles: exact beats, every stall counted."""
    ports, ref, params = await _setup(dut)
    model = params["cycles_model"]
    image = params["images"][0]
    gaps = {0: 200, 1: 300, 31: 450, 63: 250}
    held = {0: 300, 5: 500, 10: 200}
    beats, stalls, cycles = await _run_image(ports, ref, image, in_gaps=gaps, out_stalls=held)
    _check(beats, ref, image, "long stalls")
    # Gaps before the first code are outside the inference; every other stall cycle counts.
    if cycles != model + stalls:
        raise AssertionError(f"long stalls: {cycles} cycles, the model {model} plus {stalls} stall cycles")


@cocotb.test()
async def eager_producer(dut):
    """The next image's first code is valid from the end of a load through the computation."""
    ports, ref, params = await _setup(dut)
    image_a, image_b = params["images"][:2]
    codes = [int(c) for c in ref.image_codes(image_a).ravel()] + [int(c) for c in ref.image_codes(image_b).ravel()]
    n_beats = len(ref.expected_logits(image_a)) + 1
    k, beats, first_b_taken_after = 0, [], None
    while len(beats) < 2 * n_beats:
        taken, beat, *_ = await ports.step(i_valid=int(k < len(codes)), code=codes[k] if k < len(codes) else 0,
                                           o_ready=1)
        if beat is not None:
            beats.append(beat)
        if taken:
            if k == len(codes) // 2:
                first_b_taken_after = len(beats)
            k += 1
    if first_b_taken_after != n_beats:
        raise AssertionError(f"the next image's first code was taken after {first_b_taken_after} output beats, "
                             f"not after the class beat ({n_beats})")
    _check(beats[:n_beats], ref, image_a, "eager producer, first image")
    _check(beats[n_beats:], ref, image_b, "eager producer, second image")


# ----------------------------------------------------------------------------- pytest side


@pytest.mark.sim
@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_handshake_scenarios(simulator, tmp_path):
    from sim.accel import default_bundle, prepare_design
    from sim.runner import run_cocotb
    from sim.tb import params_env

    bundle = default_bundle(3)
    design = prepare_design(bundle, out_root=tmp_path / "design")
    model = design["cycles_per_inference"]
    env = params_env(bundle=str(bundle.resolve()), images=[5, 17], cycles_model=model, max_cycles=40 * model)
    num_tests, _ = run_cocotb(simulator=simulator, sources=[design["verilog"]], toplevel="asq_accel",
                              test_module="sim.test_accel_handshake", build_dir=tmp_path / "build", extra_env=env)
    assert num_tests == 3
