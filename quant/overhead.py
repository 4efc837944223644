"""The ASQ adapter's parameter and compute overhead (paper section 3.2.2, Table 1).

Counts, from the paper's formulas (eqs. 10-13), on the model with an adapter on the input of every
quantized middle layer (first and last layers are 8-bit LSQ, without adapter):

- parameters: conv ``C_in/groups * C_out * k_h * k_w``, linear ``N_in * N_out`` (+ biases, BN);
  the adapter ``C*(C/4) + C/4 + C/4 + 1`` (two Linears with biases; ``C + 1`` when ``C < 8``);
- operations: conv ``C_in/groups * C_out * k_h * k_w * H_out * W_out`` multiplications, linear
  ``2 * N_in * N_out`` (multiplications and additions, eq. 13); the adapter ``C * H * W`` additions
  for its global average pool plus eq. 13 for its Linears.

The paper leaves the adapter's own precision out of eqs. 14-16, but Table 1's columns scale exactly
as ``8 / B`` (parameters) and ``2 / B`` (compute). So ``Param% = P_adapter * 8 / (P_model * B)``
(the adapter stored in 8 bits against a B-bit model, eq. 14) and ``Compute% = O_adapter * 2 /
(O_model * B)``; with these our ResNet-18 counts (307,091 adapter parameters, 2.63 % of 11,689,512) give 2.63 / 5.25 /
7.01 / 10.51 % and 0.036 / 0.073 / 0.097 / 0.146 % against the paper's 2.67 / 5.34 / 7.11 / 10.67 %
and 0.04 / 0.07 / 0.10 / 0.14 %: parameters within 1.6 % of each value, compute equal after the
paper's rounding to two decimals except at 2 bits (0.15 vs 0.14); the paper lists no exact counts.
"""

import torch
from torch import nn

from quant.models import build_model, dataset_of

# Paper Table 1 (ResNet-18): bits -> (Param %, Compute %).
PAPER_TABLE1 = {"resnet18": {8: (2.67, 0.04), 4: (5.34, 0.07), 3: (7.11, 0.10), 2: (10.67, 0.14)}}
INPUT_SIZE = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "imagenet": (3, 224, 224)}
ADAPTER_STORAGE_BITS = 8
ADAPTER_COMPUTE_BITS = 2


def adapter_params(channels: int) -> int:
    """Parameters of the ASQ adapter on a C-channel input (weights and biases)."""
    if channels >= 8:
        hidden = channels // 4
        return channels * hidden + hidden + hidden + 1
    return channels + 1


def adapter_ops(channels: int, spatial: int) -> int:
    """Operations of one adapter: GAP additions plus mults+adds of its Linears (eq. 13)."""
    linear_macs = channels * (channels // 4) + channels // 4 if channels >= 8 else channels
    return channels * spatial + 2 * linear_macs


def _layer_ops(layer: nn.Module, out_shape: torch.Size) -> int:
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return layer.in_channels // layer.groups * layer.out_channels * kh * kw * out_shape[2] * out_shape[3]
    return 2 * layer.in_features * layer.out_features


def count_overhead(model_name: str) -> dict:
    """Parameter and operation counts of ``model_name`` and of its ASQ adapters."""
    model = build_model(model_name).eval()
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, (inp[0].shape, out.shape)))
             for n, m in layers]
    with torch.no_grad():
        model(torch.zeros(1, *INPUT_SIZE[dataset_of(model_name)]))
    for hook in hooks:
        hook.remove()
    model_ops = sum(_layer_ops(m, shapes[n][1]) for n, m in layers)
    a_params = a_ops = 0
    for name, _ in layers[1:-1]:
        in_shape = shapes[name][0]
        channels = in_shape[1]
        spatial = in_shape[2] * in_shape[3] if len(in_shape) == 4 else 1
        a_params += adapter_params(channels)
        a_ops += adapter_ops(channels, spatial)
    return {"model": model_name, "adapters": len(layers) - 2,
            "model_params": sum(p.numel() for p in model.parameters()), "adapter_params": a_params,
            "model_ops": model_ops, "adapter_ops": a_ops}


def overhead_table(model_name: str, bits_list=(8, 4, 3, 2)) -> dict:
    """Table 1 for ``model_name``: our Param%/Compute% per width, beside the paper's where it has them."""
    counts = count_overhead(model_name)
    paper = PAPER_TABLE1.get(model_name, {})
    rows = []
    for bits in bits_list:
        param = 100.0 * counts["adapter_params"] * ADAPTER_STORAGE_BITS / (counts["model_params"] * bits)
        compute = 100.0 * counts["adapter_ops"] * ADAPTER_COMPUTE_BITS / (counts["model_ops"] * bits)
        paper_param, paper_compute = paper.get(bits, (None, None))
        rows.append({"bits": bits, "param_pct": param, "compute_pct": compute,
                     "paper_param_pct": paper_param, "paper_compute_pct": paper_compute})
    return {**counts, "rows": rows}


def format_table(table: dict) -> str:
    """A plain-text table of ``overhead_table``'s result."""
    def cell(value, digits):
        return f"{value:.{digits}f}" if value is not None else "-"

    lines = [
        f"{table['model']}: {table['adapters']} adapters, {table['adapter_params']:,} adapter parameters "
        f"({100 * table['adapter_params'] / table['model_params']:.2f} % of {table['model_params']:,}), "
        f"{table['adapter_ops']:,} adapter ops ({100 * table['adapter_ops'] / table['model_ops']:.3f} % "
        f"of {table['model_ops']:,})",
        f"{'bits':>4}  {'Param %':>8}  {'paper':>6}  {'Compute %':>9}  {'paper':>6}",
    ]
    for row in table["rows"]:
        lines.append(
            f"{row['bits']:>4}  {cell(row['param_pct'], 2):>8}  {cell(row['paper_param_pct'], 2):>6}  "
            f"{cell(row['compute_pct'], 3):>9}  {cell(row['paper_compute_pct'], 2):>6}"
        )
    return "\n".join(lines)
