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
"""

import torch
from torch import nn


class DigitsNet(nn.Module):
    """conv-BN-ReLU x 3, then a Linear classifier; input pixels in [0, 1], shaped (N, 1, 8, 8)."""

    # Every quantized layer's input is post-ReLU (conv1's is the image: signed 8-bit by rule).
    signed_input_layers = frozenset()

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 2 * 2, num_classes)
        self.relu = nn.ReLU()

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> [-1, 1]: the first layer's (signed 8-bit) input is this."""
        return (x - 0.5) / 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.fc(x.flatten(1))
