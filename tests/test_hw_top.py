"""The whole accelerator in amaranth.sim against the golden model, with random back-pressure.

Bundles: the shipped trained ones (models/digits-b3, -b4) on test-split images, and digits-shaped
bundles with random but calibrated constants (:func:`hw.testing.random_bundle`) for the schemes
and shapes the shipped ones do not cover. The reference is :func:`golden.model.run`.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.model import load_bundle, run
from hw.eda.generate import build_top
from hw.testing import random_bundle, random_images

N_IMAGES = 20


def simulate(top, images, *, seed, p_in_idle, p_out_stall, free_images=0):
    """Stream ``images`` through ``top``; return per image (logits, class, cycles, stall cycles).

    Stalls: before each input beat the producer idles with probability ``p_in_idle`` per cycle;
    the consumer drops ``ready`` with probability ``p_out_stall`` per cycle. The first
    ``free_images`` images see no stalls at all.
    """
    rng_in, rng_out = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    in_stalls = [0] * len(images)
    out_stalls = [0] * len(images)
    results = []

    async def producer(ctx):
        for n, image in enumerate(images):
            for k, code in enumerate(image.ravel()):
                while n >= free_images and rng_in.random() < p_in_idle:
                    ctx.set(top.i.valid, 0)
                    await ctx.tick()
                    if k:  # idle cycles inside an image count in its cycle counter
                        in_stalls[n] += 1
                ctx.set(top.i.valid, 1)
                ctx.set(top.i.payload, int(code))
                await ctx.tick().until(top.i.ready)
            ctx.set(top.i.valid, 0)

    async def consumer(ctx):
        beats = []
        while len(results) < len(images):
            n = len(results)
            ready = n < free_images or rng_out.random() >= p_out_stall
            ctx.set(top.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(top.o.valid, top.o.payload)
            if valid and not ready:
                out_stalls[n] += 1
            if valid and ready:
                beats.append(payload.value)
                if payload.last:
                    results.append((beats[:-1], beats[-1], ctx.get(top.cycles)))
                    beats = []

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return [(lg, cls, cyc, in_stalls[n] + out_stalls[n]) for n, (lg, cls, cyc) in enumerate(results)]


@pytest.mark.slow
@pytest.mark.parametrize("bits,pe,simd", [(3, 4, 4), (4, 8, 8), ("digits-vary-b3", 4, 4)])
def test_shipped_bundle_matches_golden_on_test_images_under_backpressure(bits, pe, simd, shipped_bundle):
    """The shipped digits bundles (and digits-vary's, 8-bit pixels), 20 test-split images, random
    stalls on both streams."""
    bundle = load_bundle(shipped_bundle(bits))
    images = bundle.vectors["conv1.in"][:N_IMAGES]
    golden = run(bundle, images)
    # The stored vectors are golden's own (a stale bundle would make this test meaningless).
    np.testing.assert_array_equal(golden["logits"], bundle.vectors["logits"][:N_IMAGES])
    top = build_top(bundle, pe=pe, simd=simd)
    got = simulate(top, images, seed=bundle.manifest.bits, p_in_idle=0.25, p_out_stall=0.4, free_images=1)
    cpi = top.cycles_per_inference()
    assert cpi < 10_000
    for n, (logits, cls, cycles, stalls) in enumerate(got):
        assert logits == [int(v) for v in golden["logits"][n]], f"image {n}"
        assert cls == int(golden["pred"][n]), f"image {n}"
        # The cycle counter counts exactly the generator's model plus the stalls we caused.
        assert cycles == cpi + stalls, f"image {n}"
    assert got[0][3] == 0 and sum(s for *_, s in got) > 0
    # The data exercised the design: several classes, logits of both signs.
    assert len({c for _, c, _, _ in got}) >= 5
    assert min(min(lg) for lg, *_ in got) < 0 < max(max(lg) for lg, *_ in got)


@pytest.mark.parametrize("bits,kind,asq,pe,simd", [
    (3, "int", False, 2, 16), (2, "pot", True, 16, 2), (8, "int", True, 4, 8), (5, "post", False, 16, 1),
    (4, "pot", False, 1, 4),
])
def test_other_schemes_and_shapes_match_golden(bits, kind, asq, pe, simd):
    """Random calibrated bundles: LSQ inputs, POT and uniform middle layers, BITS 2/5/8, extreme
    PE/SIMD (PE 1 and 16, SIMD 1 and 16), 2 images each."""
    bundle = random_bundle(bits, kind, scheme_asq=asq, seed=bits * 7 + pe)
    images = random_images(np.random.default_rng(bits), 2, bundle.manifest.input.lut)
    golden = run(bundle, images)
    top = build_top(bundle, pe=pe, simd=simd)
    got = simulate(top, images, seed=bundle.manifest.bits, p_in_idle=0.1, p_out_stall=0.3)
    for n, (logits, cls, cycles, stalls) in enumerate(got):
        assert logits == [int(v) for v in golden["logits"][n]]
        assert cls == int(golden["pred"][n])
        assert cycles == top.cycles_per_inference() + stalls
