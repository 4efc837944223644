"""The accelerator bit-exact on real images whose ASQ beta is far from its median.

On plain digits beta barely moves; on ``digits-vary`` (per-image exposure) conv2's adapter spreads
beta over tens of percent. The images of the shipped ``digits-vary-b3`` bundle whose golden beta
differs from the layer's median by at least ``BETA_OFF`` in some ASQ layer drive the adapter MLP,
the divider and the code saturation with values a constant beta never produces; the most extreme
ones (lowest and highest beta of each layer) run through the whole accelerator on Verilator, every
logit and every layer's codes checked against golden.
"""

import numpy as np
import pytest

from golden.bundle import SHIPPED_MODELS
from golden.model import load_bundle

VARY_BUNDLE = SHIPPED_MODELS / "digits-vary-b3"
#: |beta / median - 1| at least this, in some ASQ layer. The shipped digits-vary-b3 spreads conv2's
#: beta from -4.4 % to +10.8 % around its median (conv3's within 0.5 %): at 5 % about 50 beta codes
#: (1/1024 each) separate an image from the median, and 46 of the 360 test images qualify.
BETA_OFF = 0.05
#: At least this many test images must qualify (else the bundle no longer adapts).
MIN_FAR_IMAGES = 4
#: Per ASQ layer, this many of the lowest and as many of the highest beta images are simulated.
EXTREMES_PER_SIDE = 3


def far_beta_images(bundle) -> tuple[list, dict]:
    """Test-vector indices with ``|beta / median - 1| >= BETA_OFF`` in some ASQ layer, and per
    layer ``{layer: relative offset of every image}``."""
    offsets = {}
    for layer in bundle.layers:
        key = f"{layer.name}.beta"
        if layer.act_in.asq is None or key not in bundle.vectors:
            continue
        beta = np.asarray(bundle.vectors[key], dtype=np.float64).reshape(-1)
        offsets[layer.name] = beta / np.median(beta) - 1
    far = np.zeros(len(next(iter(offsets.values()))), dtype=bool)
    for off in offsets.values():
        far |= np.abs(off) >= BETA_OFF
    return [int(i) for i in np.flatnonzero(far)], offsets


def extreme_picks(far: list, offsets: dict) -> list:
    """The qualifying images with the lowest and highest beta of each ASQ layer (sorted, unique)."""
    picks = set()
    far_set = set(far)
    for off in offsets.values():
        order = [int(i) for i in np.argsort(off, kind="stable") if int(i) in far_set]
        picks.update(order[:EXTREMES_PER_SIDE])
        picks.update(order[-EXTREMES_PER_SIDE:])
    return sorted(picks)


def test_the_varying_bundle_has_images_far_from_the_median_beta():
    far, offsets = far_beta_images(load_bundle(VARY_BUNDLE))
    assert len(far) >= MIN_FAR_IMAGES, {k: float(np.abs(v).max()) for k, v in offsets.items()}


@pytest.mark.sim
def test_images_with_far_beta_are_bit_exact_on_verilator():
    """The extreme-beta images of digits-vary-b3: every logit, class and layer code equals golden."""
    from sim.accel import run_accel

    bundle = load_bundle(VARY_BUNDLE)
    far, offsets = far_beta_images(bundle)
    assert len(far) >= MIN_FAR_IMAGES
    picks = extreme_picks(far, offsets)
    assert all(max(abs(off[i]) for off in offsets.values()) >= BETA_OFF for i in picks)
    summary = run_accel("verilator", VARY_BUNDLE, images=picks)
    assert summary["passed"], summary["error"] + "\n" + summary["report"]
    assert summary["images"] == len(picks)
    assert summary["logit_mismatches"] == 0 and summary["layer_mismatches"] == 0
    assert summary["rtl_accuracy"] == summary["golden_accuracy"]
    worst = {name: [round(float(off[i]), 3) for i in picks] for name, off in offsets.items()}
    print(f"\n{len(far)} of {len(bundle.vectors['labels'])} test images have |beta/median - 1| >= {BETA_OFF}; "
          f"simulated {picks}, beta/median - 1 per layer {worst}, {summary['cycles_per_image']:.0f} cycles/image")
