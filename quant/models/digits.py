"""The digits model the hardware ships with: a small CNN for sklearn's 8x8 digits.

Sized for an iCE40 UP5K: 8,336 weights (conv 144 + 2,304 + 4,608, fc 1,280) plus 10 fc biases
and the BatchNorms (folded into the requantizers). Layer
names and shapes are fixed by the team contract; the exporter and the hardware rely on them:

==========  ===========================================  ==========  ===========
layer       op                                           output      bits
==========  ===========================================  ==========  ===========
``conv1``   Conv2d(1, 16, 3, stride 1, pad 1), ``bn1``    16 x 8 x 8  8 (first)
``conv2``   Conv2d(16, 16, 3, stride 2, pad 1), ``bn2``   16 x 4 x 4  BITS
``conv3``   Conv2d(16, 32, 3, stride 2, pad 1), ``bn3``   32 x 2 x 2  BITS
``fc``      Linear(128, 10) on ``flatten(1)`` (C, H, W)   10          8 (last)
==========  ===========================================  ==========  ===========

Each conv is followed by its BatchNorm and a ReLU; convs have no bias (BN supplies it).

The input is lossless: pixels are integers ``0 .. pixel_max`` (16 for sklearn's digits, 255 for the
8-bit ``digits-vary``), the model takes ``pixels / pixel_max`` and normalises them to
``(p - zero) / zero`` with ``zero = (pixel_max + 1) // 2``; conv1's 8-bit input quantizer has the
fixed step ``input_step`` (``lossless_input_step``), on which every normalised pixel is exactly a
code, ``k (p - zero)``: every distinct pixel gets its own code, and float and integer models see the
same conv1 input.
"""

import math

import torch
from torch import nn

#: Pixels of sklearn's digits are 0 .. 16.
DIGITS_PIXEL_MAX = 16
#: conv1's input codes are signed 8-bit.
INPUT_BITS = 8


def input_zero(pixel_max: int) -> int:
    """The pixel that normalises to 0 (and that the conv1 padding stands for): ``(pixel_max + 1) // 2``."""
    return (int(pixel_max) + 1) // 2


def lossless_input_step(pixel_max: int, bits: int = INPUT_BITS) -> float:
    """conv1's fixed input step: ``1 / (zero k)`` with ``k`` the largest power of two that keeps
    every code ``k (p - zero)`` within signed ``bits`` bits (``-2^(b-1) .. 2^(b-1) - 1``).

    A power of two (for a power-of-two ``zero``), so ``(p - zero) / zero`` divided by it is exact in
    float32. digits (0 .. 16): zero 8, k 8, codes ``8 (p - 8)`` in -64 .. 64; 8-bit pixels (0 .. 255):
    zero 128, k 1, codes ``p - 128`` in -128 .. 127. Raises ``ValueError`` when the pixels have more
    levels than the codes (``k < 1``).
    """
    zero = input_zero(pixel_max)
    low, high = 1 << (bits - 1), (1 << (bits - 1)) - 1
    k = min(low / zero, high / max(1, int(pixel_max) - zero))
    if k < 1:
        raise ValueError(f"pixels 0..{pixel_max} have more levels than {bits}-bit input codes")
    return 1.0 / (zero * 2 ** math.floor(math.log2(k)))


class DigitsNet(nn.Module):
    """conv-BN-ReLU x 3, then a Linear classifier; input ``pixels / pixel_max`` in [0, 1], shaped (N, 1, 8, 8).

    ``input_step`` (conv1's fixed input step, read by :func:`quant.quantize.quantize_model`) and the
    normalisation follow ``pixel_max`` (see the module docstring).
    """

    # Every quantized layer's input is post-ReLU (conv1's is the image: signed 8-bit by rule).
    signed_input_layers = frozenset()

    def __init__(self, num_classes: int = 10, pixel_max: int = DIGITS_PIXEL_MAX):
        super().__init__()
        self.pixel_max = int(pixel_max)
        self.input_zero = input_zero(self.pixel_max)
        self.input_step = lossless_input_step(self.pixel_max)
        self.conv1 = nn.Conv2d(1, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 2 * 2, num_classes)
        self.relu = nn.ReLU()

    @staticmethod
    def normalise_pixels(x: torch.Tensor, pixel_max: int) -> torch.Tensor:
        """``pixels / pixel_max`` -> ``(pixels - zero) / zero``, in [-1, 1]: conv1's input.

        For digits (``pixel_max`` 16) this is ``(x - 0.5) / 0.5``, exactly.
        """
        zero = input_zero(pixel_max)
        return (x * pixel_max - zero) / zero

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """This model's :meth:`normalise_pixels`."""
        return self.normalise_pixels(x, self.pixel_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.fc(x.flatten(1))
