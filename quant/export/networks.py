"""What the exporter needs to know about each network beyond its quantized layers.

One :class:`Network` per exportable model and data set, registered in :data:`NETWORKS` under the
name a bundle records (``model`` of its manifest); a checkpoint finds its network by its model name
(``meta["model"]``) and the data set it was trained on (``meta["config"]["data"]``), see
:func:`network_for`. Adding a network means adding an entry here; the exporter
(:mod:`quant.export.fold`, :mod:`quant.export.build`) and the fidelity report read only these
fields.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from asqhw.errors import UserError


@dataclass(frozen=True)
class Network:
    """An exportable network.

    Attributes
    ----------
    name : str
        The network's name: ``model`` of its bundles.
    model : str
        The model name its checkpoints record (``meta["model"]``).
    data : str
        The data set (variant) its checkpoints were trained on (``meta["config"]["data"]``; None
        there means this network's default, ``name == model``).
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
        The model's own map from ``pixels / pixel_max`` to its first layer's float input; the
        model's first layer quantizes it with a fixed step on which every pixel value is its own
        code (the bundle's ``input.lut`` is lossless: checked at export).
    split : callable
        ``() -> (x_train, y_train, x_test, y_test)``: the data the constants are calibrated on
        (train) and fidelity is measured on (test), images as ``pixels / pixel_max``.
    split_name : str
        How the accuracy record names the test split.
    """

    name: str
    model: str
    data: str
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


def _digits_split(variant: str):
    def split():
        from quant.data import digits_split, digits_vary_split

        return digits_split() if variant == "digits" else digits_vary_split()

    return split


def _digits_normalise(pixel_max: int):
    def normalise(x: torch.Tensor) -> torch.Tensor:
        from quant.models.digits import DigitsNet

        return DigitsNet.normalise_pixels(x, pixel_max)

    return normalise


def _digits_network(variant: str, pixel_max: int, split_name: str) -> Network:
    """The digits CNN (quant.models.digits) on one digits variant (quant.data.DIGITS_VARIANTS)."""
    return Network(
        name=variant, model="digits", data=variant,
        bn_of={"conv1": "bn1", "conv2": "bn2", "conv3": "bn3", "fc": None},
        in_shapes={"conv1": [1, 8, 8], "conv2": [16, 8, 8], "conv3": [16, 4, 4], "fc": [128]},
        out_shapes={"conv1": [16, 8, 8], "conv2": [16, 4, 4], "conv3": [32, 2, 2], "fc": [10]},
        input_shape=[1, 8, 8], pixel_max=pixel_max, normalise=_digits_normalise(pixel_max),
        split=_digits_split(variant), split_name=split_name,
    )


#: sklearn's 8x8 digits (pixels 0..16) on the shipped CNN.
DIGITS = _digits_network("digits", 16, "digits test (stratified, seed 0)")
#: digits-vary (per-image exposure, 8-bit pixels; quant.data.digits_vary_split) on the same CNN.
DIGITS_VARY = _digits_network("digits-vary", 255, "digits-vary test (stratified, seed 0; exposure seed 20240601)")

def _digits32_split():
    from quant.data import digits32_split

    return digits32_split()


#: ResNet-20 on digits32 (the digits images at 32x32x3, pixels 0..16; quant.data.digits32_split):
#: NOT CIFAR-10. Exported as a graph (format 2): ``bn_of`` and the shapes are the chain exporter's
#: and stay empty, the graph exporter reads the network from the model itself.
RESNET20_DIGITS32 = Network(
    name="resnet20-digits32", model="resnet20", data="digits32", bn_of={}, in_shapes={}, out_shapes={},
    input_shape=[3, 32, 32], pixel_max=16, normalise=_digits_normalise(16), split=_digits32_split,
    split_name="digits32 test (sklearn's 8x8 digits at 32x32x3, stratified, seed 0; NOT CIFAR-10)",
)

#: Every exportable network by name.
NETWORKS = {net.name: net for net in (DIGITS, DIGITS_VARY, RESNET20_DIGITS32)}


def supported_text() -> str:
    """``"the digits model"``: what the error messages name as exportable."""
    names = sorted({net.model for net in NETWORKS.values()})
    return f"the {names[0]} model" if len(names) == 1 else f"the models {', '.join(names)}"


def _unsupported(model, where: str) -> UserError:
    prefix = f"{where}: " if where else ""
    return UserError(f"{prefix}field 'model' is {model!r}; export supports {supported_text()} only (for "
                     "your own network pass its class: --network FILE.py:CLASS)")


def network_of(name: str, where: str = "") -> Network:
    """The :class:`Network` called ``name`` (a bundle's ``model``); :class:`UserError` (prefixed
    ``where``) otherwise."""
    net = NETWORKS.get(name)
    if net is None:
        raise _unsupported(name, where)
    return net


def user_network(name: str, data: str = "digits") -> Network:
    """The :class:`Network` of a user's own model called ``name`` (the bundle's ``model``) trained on the
    data set ``data`` of a shipped network (``digits``, ``digits-vary``, ``digits32``): that network's
    split, input shape and pixel range. For :func:`quant.export.build.export_graph_model`: the graph
    exporter reads the layers from the model itself."""
    if name in NETWORKS:
        raise UserError(f"{name!r} is a shipped network's name: give your model its own name")
    base = next((net for net in NETWORKS.values() if net.data == data), None)
    if base is None:
        raise UserError(f"data {data!r}: a user's network is trained on one of "
                        f"{', '.join(sorted({net.data for net in NETWORKS.values()}))}")
    return replace(base, name=name, model=name, bn_of={}, in_shapes={}, out_shapes={})


def user_network_for(meta: dict, where: str = "") -> Network:
    """:func:`user_network` of a checkpoint's ``meta`` of a user's own model: its ``model`` name and the
    data set its run recorded (``config["data"]``)."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    data = config.get("data")
    if not isinstance(data, str):
        prefix = f"{where}: " if where else ""
        raise UserError(f"{prefix}the checkpoint records no data set (meta['config']['data'] is {data!r}); "
                        "save your run's checkpoint with config {'data': 'digits'} (or digits-vary, digits32), "
                        "the data set it was trained on")
    try:
        return user_network(meta.get("model"), data)
    except UserError as err:
        prefix = f"{where}: " if where else ""
        raise UserError(f"{prefix}{err}") from None


def load_architecture(spec: str) -> Callable:
    """The builder of a user's float network named by ``spec``: ``FILE.py:NAME`` or ``MODULE:NAME``.

    ``NAME`` is a class (or function) of that file or importable module that builds the float
    ``nn.Module`` with no arguments (``MyResNet()``): the checkpoint holds the state, this its
    architecture. Importing the file runs it, as ``python FILE.py`` would up to its ``__main__``
    guard. Returns a callable that builds a fresh model; every failure is a :class:`UserError` naming
    ``spec``.
    """
    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UserError(f"--network {spec!r}: give FILE.py:NAME or MODULE:NAME, the class that builds your "
                        "network (e.g. examples/byon_graph.py:MyResNet)")
    module = _import_user_module(where, spec)
    builder = getattr(module, name, None)
    if builder is None or not callable(builder):
        raise UserError(f"--network {spec!r}: {where} defines no class or function {name!r}")

    def build():
        try:
            model = builder()
        except Exception as err:  # the user's constructor: any error is theirs to see in one line
            raise UserError(f"--network {spec!r}: {name}() failed ({type(err).__name__}: {err}); it must "
                            "build the network with no arguments (give its parameters defaults)") from None
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"--network {spec!r}: {name}() returned a {type(model).__name__}, not a "
                            "torch.nn.Module")
        return model

    return build


def _import_user_module(where: str, spec: str):
    """The module of ``FILE.py`` (run from its path) or of an importable ``MODULE`` name."""
    try:
        if not where.endswith(".py"):
            return importlib.import_module(where)
        path = Path(where)
        if not path.is_file():
            raise UserError(f"--network {spec!r}: {path} does not exist")
        # A name of its own, registered while it runs: dataclasses and pickling look modules up by name.
        module_name = f"asqhw_user_network_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        return module
    except UserError:
        raise
    except (Exception, SystemExit) as err:  # a user's file may fail in any way while it is imported
        raise UserError(f"--network {spec!r}: importing {where} failed ({type(err).__name__}: {err})") from None


def network_for(meta: dict, where: str = "") -> Network:
    """The :class:`Network` of a checkpoint's ``meta``: its ``model`` trained on ``config["data"]``."""
    model = meta.get("model")
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    data = config.get("data") or model
    for net in NETWORKS.values():
        if net.model == model and net.data == data:
            return net
    if any(net.model == model for net in NETWORKS.values()):
        prefix = f"{where}: " if where else ""
        known = ", ".join(net.data for net in NETWORKS.values() if net.model == model)
        raise UserError(f"{prefix}the {model} model was trained on data {data!r}; export knows {known}")
    raise _unsupported(model, where)
