"""Turn a float model into a quantization-aware one by module swap.

``quantize_model(model, scheme, bits)`` replaces every ``nn.Conv2d`` / ``nn.Linear`` with a
``QConv2d`` / ``QLinear`` whose quantizers come from ``SCHEMES``. The first and last layers are always
8-bit LSQ (signed input for the first, unsigned for the last; never ASQ, never POT/POST), as in the
paper; every other layer gets BITS-bit activations of the scheme's kind (unsigned, being after a
ReLU, unless the model lists the layer in ``signed_input_layers``) and BITS-bit weights. A signed
input (MobileNet-V2's linear bottlenecks) gets a signed LSQ quantizer under the ASQ schemes too: the
hardware's ASQ unit adapts the step of non-negative activations only (its adapter reads the mean of
a post-ReLU map), so the network stays exportable; ASQ goes where the input is post-ReLU.

The 8-bit edge layers' weights are calibrated to use their range: their steps are ``max|w_c| / 127``,
following the weights (:class:`quant.quantizers.MaxScaleWeight`; LSQ's learned step from
``2 mean|w_c| / sqrt(127)`` left most of the 256 codes unused). The last layer's input step starts
as LSQ's (``LAST_INPUT_INIT`` says why). A model with a known
input coding (``input_step``, e.g. the digits model's lossless pixel codes) gets that fixed step on
its first layer's input instead of a learned one.
"""

import torch
from torch import nn

from asqhw.errors import UserError
from golden.formats import INT
from quant.layers import QConv2d, QLinear
from quant.quantizers import (
    ASQActivation,
    FixedStepActivation,
    LSQActivation,
    LSQWeight,
    MaxScaleWeight,
    PowerWeight,
    check_bits,
)
from quant.schemes import FLOAT_SCHEME, SCHEMES

EDGE_BITS = 8
# How the last layer's 8-bit input step starts (quant.quantizers.ACTIVATION_INITS). "percentile" makes
# the fc input codes span 0..255 (LSQ then keeps the finer step), but a finer fc code counts the POST
# table's rounding in conv3's requantizer as more codes: the bound E < 1 then needs F = 4-5 instead
# of 2-3 and the BITS-4 design outgrows the UP5K (docs/arithmetic.md 2.2). So LSQ's init stays.
LAST_INPUT_INIT = "lsq"
_FLOAT_LAYERS = {nn.Conv2d: QConv2d, nn.Linear: QLinear}


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if known (one of ``SCHEMES`` or ``'fp'``), else raise ``UserError``."""
    if scheme != FLOAT_SCHEME and scheme not in SCHEMES:
        known = ", ".join([FLOAT_SCHEME, *SCHEMES])
        raise UserError(f"quantization scheme {scheme!r} is unknown: use one of {known}")
    return scheme


def _make_activation_quantizer(kind: str, bits: int, signed: bool, channels: int) -> nn.Module:
    if kind == "asq" and not signed:
        return ASQActivation(bits, channels, signed=signed)
    return LSQActivation(bits, signed=signed)


def _make_weight_quantizer(kind: str, bits: int, weight: torch.Tensor) -> nn.Module:
    quantizer = LSQWeight(bits, weight.shape[0]) if kind == INT else PowerWeight(bits, weight.shape[0], kind)
    quantizer.to(weight.device)
    quantizer.initialize(weight)
    return quantizer


def float_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's ``nn.Conv2d`` / ``nn.Linear`` layers (exact types), in registration order."""
    return [(name, m) for name, m in model.named_modules() if type(m) in _FLOAT_LAYERS]


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's ``QConv2d`` / ``QLinear`` layers, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QConv2d | QLinear)]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize_model(model: nn.Module, scheme: str, bits: int) -> nn.Module:
    """Swap the float layers of ``model`` for quantized ones, in place; return ``model``.

    Weight quantizers are initialised from the current weights right away (load the float
    checkpoint first); activation quantizers initialise from the first batch they see (call
    ``calibrate`` before building the optimizer). ``scheme='fp'`` returns the model untouched.
    """
    if check_scheme(scheme) == FLOAT_SCHEME:
        return model
    bits = check_bits(bits)
    if quantized_layers(model):
        raise UserError("the model is already quantized: quantize_model takes a float model")
    layers = float_layers(model)
    if len(layers) < 2:
        raise UserError(f"the model has {len(layers)} Conv2d/Linear layers; quantization needs at least 2")
    act_kind, weight_kind = SCHEMES[scheme]
    signed_inputs = set(getattr(model, "signed_input_layers", ()))
    input_step = getattr(model, "input_step", None)
    for index, (name, layer) in enumerate(layers):
        first, last = index == 0, index == len(layers) - 1
        if first and input_step is not None:
            act = FixedStepActivation(EDGE_BITS, signed=True, step=input_step)
        elif first or last:
            act = LSQActivation(EDGE_BITS, signed=first or name in signed_inputs,
                                init="lsq" if first else LAST_INPUT_INIT)
        if first or last:
            weight = MaxScaleWeight(EDGE_BITS, layer.weight.shape[0]).to(layer.weight.device)
            weight.initialize(layer.weight)
        else:
            channels = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
            act = _make_activation_quantizer(act_kind, bits, name in signed_inputs, channels)
            weight = _make_weight_quantizer(weight_kind, bits, layer.weight)
        act.to(layer.weight.device)
        _replace(model, name, _FLOAT_LAYERS[type(layer)].from_float(layer, act, weight))
    return model


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor) -> None:
    """Initialise every activation quantizer from one batch ``x``, in place (no grad).

    Layers initialise in forward order, each from the input its already-quantized predecessors
    produce. BatchNorm runs on the batch's statistics, as in the first training step (running
    statistics would starve the activations of a freshly initialised deep model); its running
    statistics are restored afterwards and dropout is off, so only the quantizers change. Run it
    before building the optimizer (and before wrapping in DDP, which then broadcasts rank 0's steps).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    modes = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    try:
        model(x)
    finally:
        for m, state in zip(norms, saved, strict=True):
            m.load_state_dict(state)
        for m, mode in modes.items():
            m.training = mode
