"""Bring your own network as a graph: your own residual ``nn.Module`` -> quantize -> train -> export ->
golden vs float -> engine Verilog -> Verilator, bit-exact.

Run from the repository root (with the project's environment, ``.venv/bin/python``)::

    python examples/byon_graph.py --out build/byon-graph             # about 2-3 minutes on one core
    python examples/byon_graph.py --out build/byon-graph --quick     # 1 + 1 epochs, 2 images
    python examples/byon_graph.py --out build/byon-graph --no-sim    # stop after the Verilog

What it does (docs/byon.md explains each step and what each prints):

1. ``MyResNet`` is a network written here, none of the project's models: a stem conv, a residual
   block with an identity shortcut, a max pool, a strided block with a 1x1 stride-2 conv shortcut,
   global average pooling and an fc layer, on sklearn's 8 x 8 digits.
2. It is trained in float, then :func:`quant.quantize.quantize_model` swaps its ``Conv2d``/``Linear``
   layers for quantized ones (ASQ activations, POST weights, BITS 3; the first and last layers at
   8 bits), :func:`quant.quantize.calibrate` initialises the activation steps and quantization-aware
   epochs follow. A line per epoch shows the progress. Seed 0, one CPU thread.
3. The trained model is saved with :func:`quant.checkpoint.save_checkpoint`, and a fresh ``MyResNet``
   quantized the same way loads it back: a checkpoint holds the state, your class the architecture.
4. :func:`quant.export.build.export_graph_model` traces it with torch.fx and writes a format-2 (graph)
   bundle, with golden against float on the 360 test images (flips, teacher-forced bounds). This is
   the Python route: ``asqhw export CHECKPOINT OUTDIR`` rebuilds only the project's own models
   (by the name a checkpoint records), not a class defined in your script.
5. ``asqhw eval --golden``, ``asqhw verilog --model`` (the descriptor-driven engine, ``graph_engine.v``)
   and ``asqhw sim --model`` (N test images on Verilator, every output against
   ``golden.graph.run_graph``) on the bundle, as from the shell.
6. The refusal: the same network with a SiLU in place of one ReLU is refused at export with one line
   naming the op and the torch.fx node; nothing is written.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from asqhw.cli import main as asqhw
from asqhw.errors import UserError
from quant.checkpoint import read_checkpoint, save_checkpoint
from quant.data import digits_split
from quant.export.build import export_graph_model
from quant.export.networks import user_network
from quant.models.digits import DIGITS_PIXEL_MAX, lossless_input_step
from quant.quantize import calibrate, quantize_model

#: The name the checkpoint and the bundle record for this network (``model`` of the manifest).
NAME = "my-resnet"


def conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """A k x k conv (no bias: the BatchNorm after it is folded into the requantizer) and its BatchNorm."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout))


class MyResNet(nn.Module):
    """A small residual CNN for 8 x 8 digits: stem, identity block, max pool, strided block, GAP, fc.

    ``activation`` builds the non-linearity (``nn.ReLU`` here; the graph exporter takes ReLU, ReLU6,
    hardtanh and clamp, and refuses others, e.g. ``nn.SiLU``).
    """

    def __init__(self, width: int = 16, activation=nn.ReLU):
        super().__init__()
        # The first quantized layer's 8-bit input quantizer gets this fixed step (read by quantize_model):
        # every pixel value 0..16 is its own input code, so the bundle's input is a lossless pixel table.
        self.input_step = lossless_input_step(DIGITS_PIXEL_MAX)
        self.stem = conv_bn(1, width, 3)                                  # 16 x 8 x 8
        self.block1_a, self.block1_b = conv_bn(width, width, 3), conv_bn(width, width, 3)
        self.pool = nn.MaxPool2d(2)                                       # 16 x 4 x 4
        self.block2_a = conv_bn(width, 2 * width, 3, stride=2)            # 32 x 2 x 2
        self.block2_b = conv_bn(2 * width, 2 * width, 3)
        self.shortcut = conv_bn(width, 2 * width, 1, stride=2)            # 1x1, stride 2
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, 10)
        self.act = activation()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: pixels / 16 in [0, 1] (quant.data.digits_split); the model normalises them itself to
        # (p - 8) / 8, and the exporter codes each pixel through this same forward.
        x = (x * DIGITS_PIXEL_MAX - 8) / 8
        x = self.act(self.stem(x))
        x = self.act(self.block1_b(self.act(self.block1_a(x))) + x)              # identity shortcut
        x = self.pool(x)
        x = self.act(self.block2_b(self.act(self.block2_a(x))) + self.shortcut(x))  # 1x1 conv shortcut
        return self.fc(torch.flatten(self.gap(x), 1))


def fit(model, x, y, epochs: int, lr: float, seed: int, what: str) -> None:
    """SGD with momentum and a cosine learning rate over shuffled batches of 64; a line per epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    for epoch in range(epochs):
        model.train()
        started, total = time.perf_counter(), 0.0
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        print(f"{what} epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} "
              f"({time.perf_counter() - started:.1f} s)", flush=True)


@torch.no_grad()
def top1(model, x, y) -> float:
    model.eval()
    return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def quantized(model: nn.Module, scheme: str, bits: int, x_calib: torch.Tensor | None = None) -> nn.Module:
    """``model`` with its Conv2d/Linear layers swapped for quantized ones (in place), calibrated on
    ``x_calib`` when given."""
    quantize_model(model, scheme, bits)
    if x_calib is not None:
        calibrate(model, x_calib)
    return model


def show_refusal(x_calib: torch.Tensor, scheme: str, bits: int, outdir: Path) -> str:
    """Export ``MyResNet`` with a SiLU instead of the ReLU: the one-line refusal (nothing is written)."""
    model = quantized(MyResNet(activation=nn.SiLU), scheme, bits, x_calib)
    meta = {"model": NAME, "scheme": scheme, "bits": bits}
    try:
        export_graph_model(model, meta, user_network(NAME, "digits"), outdir, progress=False)
    except UserError as err:
        return str(err)
    raise AssertionError("the exporter accepted a SiLU")


def run(out: Path, *, float_epochs=30, qat_epochs=10, bits=3, scheme="asq+post", images=None, sim=True,
        seed=0) -> int:
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # the same weights on any machine
    started = time.perf_counter()
    x_train, y_train, x_test, y_test = digits_split()
    print(f"data: sklearn digits 8x8, stratified split seed 0: {len(x_train)} train / {len(x_test)} test; "
          f"training seed {seed}, one CPU thread", flush=True)

    model = MyResNet()
    fit(model, x_train, y_train, float_epochs, lr=0.05, seed=seed, what="float")
    print(f"float: test top-1 {top1(model, x_test, y_test):.2f} % after {float_epochs} epochs", flush=True)

    quantized(model, scheme, bits, x_train[:256])
    fit(model, x_train, y_train, qat_epochs, lr=0.02, seed=seed + 1, what=f"{scheme} {bits}-bit")
    quant_top1 = top1(model, x_test, y_test)
    print(f"{scheme} {bits}-bit: test top-1 {quant_top1:.2f} % after {qat_epochs} QAT epochs", flush=True)

    # The checkpoint: this project's format (quant.checkpoint), `model` naming the network, `config`
    # the data set it was trained on. It holds the state; the architecture is your class.
    checkpoint = out / f"{NAME}.pt"
    meta = {"model": NAME, "scheme": scheme, "bits": bits, "epoch": qat_epochs, "epochs": qat_epochs,
            "num_classes": 10, "metrics": {"top1": quant_top1},
            "config": {"data": "digits", "seed": seed, "float_epochs": float_epochs, "qat_epochs": qat_epochs}}
    save_checkpoint(checkpoint, model, meta)
    payload = read_checkpoint(checkpoint)
    model = quantized(MyResNet(), payload["scheme"], payload["bits"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    print(f"checkpoint: {checkpoint} (reloaded into a fresh MyResNet)", flush=True)

    bundle_dir = out / "bundle"
    bundle = export_graph_model(model, meta, user_network(NAME, "digits"), bundle_dir, progress=False)
    acc = bundle.manifest.accuracy
    ops = sorted({node.op for node in bundle.manifest.graph.nodes})
    print(f"export: {bundle_dir}: graph of {len(bundle.manifest.graph.nodes)} nodes ({', '.join(ops)}), "
          f"F = {bundle.manifest.post_frac_bits}; float {100 * acc['float']:.2f} %, golden "
          f"{100 * acc['golden']:.2f} %, {acc['flips']} of {acc['n_test']} predictions differ", flush=True)

    status = asqhw(["eval", "--golden", str(bundle_dir)])
    if status == 0:
        status = asqhw(["verilog", "--model", str(bundle_dir), "--out", str(out / "verilog")])
    if status == 0 and sim:
        status = asqhw(["sim", "--model", str(bundle_dir), *([] if images is None else ["--images", str(images)])])
    if status == 0:
        print(f"refused: {show_refusal(x_train[:64], scheme, bits, out / 'refused')}")
    print(f"done in {time.perf_counter() - started:.0f} s" if status == 0 else f"failed (exit status {status})")
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/byon-graph"),
                        help="output folder: checkpoint, bundle, Verilog (default build/byon-graph)")
    parser.add_argument("--float-epochs", type=int, default=30, help="float training epochs (default 30)")
    parser.add_argument("--qat-epochs", type=int, default=10, help="quantization-aware epochs (default 10)")
    parser.add_argument("--images", type=int, default=None,
                        help="test images to simulate on Verilator (default: the whole test split, 360)")
    parser.add_argument("--no-sim", action="store_true", help="stop after generating the Verilog")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 float and 1 QAT epoch, 2 images (overrides those options)")
    args = parser.parse_args(argv)
    if args.quick:
        args.float_epochs, args.qat_epochs, args.images = 1, 1, 2
    return run(args.out, float_epochs=args.float_epochs, qat_epochs=args.qat_epochs, images=args.images,
               sim=not args.no_sim)


if __name__ == "__main__":
    sys.exit(main())
