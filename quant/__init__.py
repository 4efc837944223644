"""ASQ + POST quantization-aware training (PyTorch side of asq-hw).

Public API (imported lazily, so ``import quant.cli`` stays light): ``levels``, the quantizer modules,
``QConv2d``/``QLinear``, ``quantize_model``/``calibrate``, ``SCHEMES``, ``build_model``,
``digits_split``, ``evaluate``, ``load_checkpoint``/``save_checkpoint``.
"""

import importlib

_EXPORTS = {
    "load_checkpoint": "quant.checkpoint", "save_checkpoint": "quant.checkpoint",
    "digits_split": "quant.data",
    "QConv2d": "quant.layers", "QLinear": "quant.layers",
    "MODELS": "quant.models", "DigitsNet": "quant.models", "build_model": "quant.models",
    "calibrate": "quant.quantize", "quantize_model": "quant.quantize", "quantized_layers": "quant.quantize",
    "SCHEMES": "quant.schemes",
    "ASQActivation": "quant.quantizers", "LSQActivation": "quant.quantizers", "LSQWeight": "quant.quantizers",
    "MinMaxActivation": "quant.quantizers", "PowerWeight": "quant.quantizers", "levels": "quant.quantizers",
    "evaluate": "quant.train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quant' has no attribute {name!r}")
