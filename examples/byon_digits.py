"""Bring your own network: your own ``nn.Module`` through quantize -> train -> export -> Verilog -> simulation.

Run from the repository root::

    python examples/byon_digits.py --out build/byon            # the whole chain, 3 images on Icarus
    python examples/byon_digits.py --out build/byon --no-sim   # stop after the Verilog

What it does (docs/byon.md explains each step):

1. ``MyDigitsNet`` is a model written here, not the project's ``quant.models.digits.DigitsNet``: its
   own code, initialisation and forward pass.
2. It is trained in float for a few epochs, then :func:`quant.quantize.quantize_model` swaps its
   ``Conv2d``/``Linear`` layers for quantized ones (ASQ activations, POST weights, 3 bits),
   :func:`quant.quantize.calibrate` initialises the activation steps, and a few quantization-aware
   epochs follow.
3. :func:`quant.export.build.export_model` folds it into a bundle (the integer model the hardware
   runs) and reports golden against float on the 360 test images.
4. ``asqhw verilog`` generates the accelerator from the bundle; ``asqhw sim`` runs test images
   through it on Icarus and checks every logit against the golden model.

The limit of this route: the chain exporter and the per-layer digits accelerator run one topology,
the digits chain ``conv1 -> conv2 -> conv3 -> fc`` with the shapes and layer names below (each conv
followed by its BatchNorm ``bnK`` and a ReLU, stride 1/2/2, fc on the flattened 32 x 2 x 2 map), on
8 x 8 images of sklearn's digits. A model of other layers, shapes or data is refused at export with a
one-line error. What is yours: the module's code, its training (optimizer, epochs, seed, scheme and
BITS), and what you do with the bundle. Other topologies (residual adds, pools, GAP, ...) take the
graph route to the descriptor-driven engine: ``examples/byon_graph.py``.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from asqhw.cli import main as asqhw
from quant.data import digits_split
from quant.export.build import export_model
from quant.models.digits import DIGITS_PIXEL_MAX, lossless_input_step
from quant.quantize import calibrate, quantize_model


class MyDigitsNet(nn.Module):
    """A user's model of the supported chain: the layer names and shapes the exporter knows."""

    def __init__(self):
        super().__init__()
        # conv1's 8-bit input quantizer uses this fixed step, so that every pixel value 0..16 is its
        # own input code (read by quantize_model; without it the step would be learned).
        self.input_step = lossless_input_step(DIGITS_PIXEL_MAX)
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv3, self.bn3 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32)
        self.fc = nn.Linear(128, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x):
        # x: pixels / 16 in [0, 1]; the exporter maps pixels to codes with the same (p - 8) / 8.
        x = (x * DIGITS_PIXEL_MAX - 8) / 8
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = torch.relu(bn(conv(x)))
        return self.fc(x.flatten(1))


def fit(model, x, y, epochs: int, lr: float, seed: int) -> None:
    """Plain SGD with momentum over shuffled batches of 64."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


@torch.no_grad()
def top1(model, x, y) -> float:
    model.eval()
    return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def run(out: Path, *, float_epochs=15, qat_epochs=5, bits=3, scheme="asq+post", images=3, sim=True,
        simulator="icarus", seed=0) -> int:
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # the same weights on any machine
    started = time.perf_counter()
    x_train, y_train, x_test, y_test = digits_split()

    model = MyDigitsNet()
    fit(model, x_train, y_train, float_epochs, lr=0.05, seed=seed)
    print(f"float: {top1(model, x_test, y_test):.2f} % after {float_epochs} epochs")

    quantize_model(model, scheme, bits)
    calibrate(model, x_train[:256])
    fit(model, x_train, y_train, qat_epochs, lr=0.01, seed=seed + 1)
    print(f"{scheme} {bits}-bit: {top1(model, x_test, y_test):.2f} % after {qat_epochs} QAT epochs")

    # What a checkpoint of `asqhw train` records about the run; the exporter reads model and data to
    # find the network (the digits chain on the digits data set).
    meta = {"model": "digits", "scheme": scheme, "bits": bits, "epoch": qat_epochs, "config": {"data": "digits"}}
    bundle_dir = out / "bundle"
    bundle = export_model(model, meta, bundle_dir, progress=False)
    acc = bundle.manifest.accuracy
    print(f"export: {bundle_dir} (F = {bundle.manifest.post_frac_bits}): float {100 * acc['float']:.2f} %, "
          f"golden {100 * acc['golden']:.2f} %, {acc['flips']} of {acc['n_test']} predictions differ")

    status = asqhw(["verilog", "--model", str(bundle_dir), "--out", str(out / "verilog")])
    if status == 0 and sim:
        status = asqhw(["sim", "--simulator", simulator, "--model", str(bundle_dir), "--images", str(images)])
    print(f"done in {time.perf_counter() - started:.0f} s" if status == 0 else f"failed (exit status {status})")
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/byon"), help="output folder (default build/byon)")
    parser.add_argument("--float-epochs", type=int, default=15, help="float training epochs (default 15)")
    parser.add_argument("--qat-epochs", type=int, default=5, help="quantization-aware epochs (default 5)")
    parser.add_argument("--images", type=int, default=3, help="test images to simulate (default 3)")
    parser.add_argument("--simulator", default="icarus", help="icarus or verilator (default icarus)")
    parser.add_argument("--no-sim", action="store_true", help="stop after generating the Verilog")
    args = parser.parse_args(argv)
    return run(args.out, float_epochs=args.float_epochs, qat_epochs=args.qat_epochs, images=args.images,
               sim=not args.no_sim, simulator=args.simulator)


if __name__ == "__main__":
    sys.exit(main())
