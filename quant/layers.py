"""Drop-in quantized layers: ``QConv2d`` and ``QLinear``.

Each is a subclass of its float layer with two quantizer modules, ``act_quant`` (applied to the
layer's input) and ``weight_quant`` (applied to its weight); the weight and bias Parameters are the
float layer's own, so ``state_dict`` keys of the float model (``conv1.weight``) stay as they were.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _adopt(layer, float_layer: nn.Module, act_quant: nn.Module, weight_quant: nn.Module):
    """``layer`` (built on the meta device) with ``float_layer``'s own weight and bias Parameters
    and the two quantizers."""
    layer.weight = float_layer.weight
    layer.bias = float_layer.bias
    layer.act_quant = act_quant
    layer.weight_quant = weight_quant
    return layer


class QConv2d(nn.Conv2d):
    """``Conv2d`` computing ``conv(act_quant(x), weight_quant(weight)) + bias``."""

    act_quant: nn.Module
    weight_quant: nn.Module

    @classmethod
    def from_float(cls, conv: nn.Conv2d, act_quant: nn.Module, weight_quant: nn.Module) -> "QConv2d":
        """A QConv2d that shares ``conv``'s parameters, with the given quantizers."""
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
            padding_mode=conv.padding_mode, device="meta",
        )
        return _adopt(layer, conv, act_quant, weight_quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.act_quant(x), self.weight_quant(self.weight), self.bias)


class QLinear(nn.Linear):
    """``Linear`` computing ``linear(act_quant(x), weight_quant(weight), bias)``."""

    act_quant: nn.Module
    weight_quant: nn.Module

    @classmethod
    def from_float(cls, linear: nn.Linear, act_quant: nn.Module, weight_quant: nn.Module) -> "QLinear":
        """A QLinear that shares ``linear``'s parameters, with the given quantizers."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        return _adopt(layer, linear, act_quant, weight_quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), self.weight_quant(self.weight), self.bias)
