"""Model registry: ``build_model(name)`` and the data set each model is trained on."""

from torch import nn

from asqhw.errors import UserError
from quant.models.digits import DigitsNet
from quant.models.mobilenet import mobilenet_v2
from quant.models.resnet import resnet18, resnet20, resnet34

# name -> (constructor taking num_classes, data set name)
MODELS = {
    "digits": (DigitsNet, "digits"),
    "resnet20": (resnet20, "cifar10"),
    "resnet18": (resnet18, "imagenet"),
    "resnet34": (resnet34, "imagenet"),
    "mobilenet_v2": (mobilenet_v2, "imagenet"),
}


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a known model, else raise ``UserError`` listing the known ones."""
    if name not in MODELS:
        raise UserError(f"model {name!r} is unknown: use one of {', '.join(MODELS)}")
    return name


def dataset_of(name: str) -> str:
    """The data set a model is trained on: 'digits', 'cifar10' or 'imagenet'."""
    return MODELS[check_model_name(name)][1]


def build_model(name: str, num_classes: int | None = None, data: str | None = None) -> nn.Module:
    """A freshly initialised float model; ``num_classes`` defaults to the data set's.

    ``data``: for the digits model, the variant it is trained on (``quant.data.DIGITS_VARIANTS``;
    None: plain digits), which fixes its input coding (pixel range); for a CIFAR model, ``"digits32"``
    (``quant.data.DIGITS32``) gives it the digits' lossless pixel coding; otherwise ignored (a folder).
    """
    constructor, dataset = MODELS[check_model_name(name)]
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if dataset == "digits":
        from quant.data import DIGITS_PIXEL_MAX, digits_variant

        kwargs["pixel_max"] = DIGITS_PIXEL_MAX[digits_variant(data)]
    elif dataset == "cifar10":
        from quant.data import DIGITS32_PIXEL_MAX, is_digits32

        if is_digits32(data):
            kwargs["pixel_max"] = DIGITS32_PIXEL_MAX
    return constructor(**kwargs)


__all__ = ["MODELS", "DigitsNet", "build_model", "check_model_name", "dataset_of"]
