"""MobileNet-V2 with torchvision's module names and ``state_dict`` keys (width 1.0).

``features.0`` stem, ``features.1 .. 17`` inverted residual blocks (``.conv`` Sequential), ``features.18``
the 1x1 conv to 1280 channels, ``classifier`` = Dropout(0.2) + Linear. A torchvision checkpoint saved
locally loads with ``asqhw train --init``.
"""

import torch
from torch import nn

# (expand ratio t, output channels c, repeats n, first stride s), torchvision's table.
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
LAST_CHANNELS = 1280


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation: conv (no bias), BN, ReLU6 as ``.0``, ``.1``, ``.2``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """[1x1 expand-BN-ReLU6] -> 3x3 depthwise-BN-ReLU6 -> 1x1 project-BN (linear), + x if same shape."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers = [ConvBNReLU6(cin, hidden, kernel=1)] if expand != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNet-V2 (Sandler et al. 2018) as torchvision builds it."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        features = [ConvBNReLU6(3, 32, stride=2)]
        cin = 32
        signed = []
        for expand, cout, repeats, first_stride in _SETTING:
            for i in range(repeats):
                if expand != 1:
                    # The block's input is the previous linear bottleneck: it can be negative.
                    signed.append(f"features.{len(features)}.conv.0.0")
                features.append(InvertedResidual(cin, cout, first_stride if i == 0 else 1, expand))
                cin = cout
        signed.append(f"features.{len(features)}.0")
        features.append(ConvBNReLU6(cin, LAST_CHANNELS, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(LAST_CHANNELS, num_classes))
        # Layers whose input is not post-ReLU: quantize_model gives them signed activations.
        self.signed_input_layers = frozenset(signed)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    return MobileNetV2(num_classes)
