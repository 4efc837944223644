"""ResNets: ``resnet18`` / ``resnet34`` (ImageNet) and ``resnet20`` (CIFAR-10).

The ImageNet models have exactly torchvision's module names and ``state_dict`` keys (``conv1``,
``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``, ...), so a torchvision checkpoint
saved locally loads with ``asqhw train --init``. ResNet-20 is He et al.'s CIFAR network (16/32/64
channels, three stages of three basic blocks) with a 1x1 conv + BN shortcut where the shape
changes (option B, as in the paper's released code), in the same naming style.

ResNet-20 takes CIFAR-10 as the data loader normalises it (per-channel mean/std), or, built with
``pixel_max`` (the offline ``digits32`` set: integer pixels ``0 .. pixel_max``), ``pixels /
pixel_max`` that it normalises itself to ``(p - zero) / zero`` with conv1's fixed lossless input step,
exactly as the digits CNN does (``quant.models.digits``), so that an exporter can code every pixel.
"""

import torch
from torch import nn

from quant.models.digits import input_zero, lossless_input_step


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (torchvision's names)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(cin, cout, stride)]
    layers += [BasicBlock(cout, cout) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module) -> None:
    # torchvision's init: He normal (fan_out) convs, BN weight 1 / bias 0.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ImageNetResNet(nn.Module):
    """torchvision's ResNet with basic blocks (``blocks`` per stage, 224x224 input)."""

    signed_input_layers = frozenset()

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        cin = 64
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            setattr(self, f"layer{i + 1}", _stage(cin, width, count, 1 if i == 0 else 2))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 3x3 stem, stages of 16/32/64 channels, GAP, Linear.

    ``pixel_max`` None: the input is normalised by the data loader (CIFAR-10). An integer: the input
    is ``pixels / pixel_max`` and the model normalises it (``normalise``) for conv1, whose 8-bit
    input quantizer gets the fixed step ``input_step`` on which every pixel is its own code.
    """

    signed_input_layers = frozenset()

    def __init__(self, blocks_per_stage: int = 3, num_classes: int = 10, pixel_max: int | None = None):
        super().__init__()
        self.pixel_max = None if pixel_max is None else int(pixel_max)
        if self.pixel_max is not None:
            self.input_zero = input_zero(self.pixel_max)
            self.input_step = lossless_input_step(self.pixel_max)
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(16, 16, blocks_per_stage, 1)
        self.layer2 = _stage(16, 32, blocks_per_stage, 2)
        self.layer3 = _stage(32, 64, blocks_per_stage, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        _init_weights(self)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``pixels / pixel_max`` -> ``(pixels - zero) / zero`` in [-1, 1] (identity without ``pixel_max``)."""
        if self.pixel_max is None:
            return x
        return (x * self.pixel_max - self.input_zero) / self.input_zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.normalise(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet((2, 2, 2, 2), num_classes)


def resnet34(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet((3, 4, 6, 3), num_classes)


def resnet20(num_classes: int = 10, pixel_max: int | None = None) -> CifarResNet:
    return CifarResNet(3, num_classes, pixel_max)
