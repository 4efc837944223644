"""What the exporter needs to know about each network beyond its quantized layers.

One :class:`Network` per exportable model, registered in :data:`NETWORKS` under the model name a
checkpoint records (``meta["model"]``). Adding a network means adding an entry here; the exporter
(:mod:`quant.export.fold`, :mod:`quant.export.build`) and the fidelity report read only these
fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from asqhw.errors import UserError


@dataclass(frozen=True)
class Network:
    """An exportable network.

    Attributes
    ----------
    name : str
        The model name (``meta["model"]`` of its checkpoints, ``model`` of its bundles).
    bn_of : dict of str -> str or None
        Every quantized layer, in forward order, with the BatchNorm module that follows it (None:
        the layer keeps its own bias and has no BN).
    in_shapes, out_shapes : dict of str -> list of int
        Each quantized layer's input and output shape as the bundle records them (fc: flat).
    input_shape : list of int
        ``(C, H, W)`` of one image.
    pixel_max : int
        Input pixels are integers ``0 .. pixel_max``; the model takes ``pixels / pixel_max``.
    normalise : callable
        The model's own map from ``pixels / pixel_max`` to its first layer's float input.
    split : callable
        ``() -> (x_train, y_train, x_test, y_test)``: the data the constants are calibrated on
        (train) and fidelity is measured on (test), images as ``pixels / pixel_max``.
    split_name : str
        How the accuracy record names the test split.
    """

    name: str
    bn_of: dict
    in_shapes: dict
    out_shapes: dict
    input_shape: list
    pixel_max: int
    normalise: Callable[[torch.Tensor], torch.Tensor]
    split: Callable[[], tuple]
    split_name: str

    @property
    def layer_names(self) -> list:
        return list(self.bn_of)

    def pixels(self, x: torch.Tensor) -> np.ndarray:
        """The integer pixels (``0 .. pixel_max``) of images given as ``pixels / pixel_max``."""
        return np.floor(x.double().numpy() * self.pixel_max + 0.5).astype(np.int64)


def _digits_split():
    from quant.data import digits_split

    return digits_split()


def _digits_normalise(x: torch.Tensor) -> torch.Tensor:
    from quant.models.digits import DigitsNet

    return DigitsNet.normalise(x)


#: sklearn's 8x8 digits on the shipped CNN (quant.models.digits).
DIGITS = Network(
    name="digits",
    bn_of={"conv1": "bn1", "conv2": "bn2", "conv3": "bn3", "fc": None},
    in_shapes={"conv1": [1, 8, 8], "conv2": [16, 8, 8], "conv3": [16, 4, 4], "fc": [128]},
    out_shapes={"conv1": [16, 8, 8], "conv2": [16, 4, 4], "conv3": [32, 2, 2], "fc": [10]},
    input_shape=[1, 8, 8],
    pixel_max=16,
    normalise=_digits_normalise,
    split=_digits_split,
    split_name="digits test (stratified, seed 0)",
)

#: Every exportable network by model name.
NETWORKS = {net.name: net for net in (DIGITS,)}


def supported_text() -> str:
    """``"the digits model"``: what the error messages name as exportable."""
    names = list(NETWORKS)
    return f"the {names[0]} model" if len(names) == 1 else f"the models {', '.join(names)}"


def network_of(model: str, where: str = "") -> Network:
    """The :class:`Network` called ``model``; :class:`UserError` (prefixed ``where``) otherwise."""
    net = NETWORKS.get(model)
    if net is None:
        prefix = f"{where}: " if where else ""
        raise UserError(f"{prefix}field 'model' is {model!r}; export supports {supported_text()} only")
    return net
