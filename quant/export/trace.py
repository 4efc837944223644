"""The float fake-quant model's activations, recorded at every activation quantizer."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


@contextmanager
def single_thread():
    """Run the block with one intra-op torch thread, and restore the setting afterwards.

    The float trace feeds every exported constant: with several threads a reduction may sum in an
    order that depends on the machine's core count, and the bundle would no longer be the same
    bytes everywhere. One thread makes the float side deterministic.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class FloatTrace:
    """What the float fake-quant model computed, per quantized layer (in forward order)."""

    x: dict        # layer -> float input of its activation quantizer (numpy float64)
    codes: dict    # layer -> the float model's input codes (int64)
    beta: dict     # layer -> per-sample beta (ASQ layers)
    hidden: dict   # layer -> adapter hidden activations (ASQ layers with C >= 8)
    logits: np.ndarray


@torch.no_grad()
def float_trace(model, x: torch.Tensor, batch: int = 512, forward=None) -> FloatTrace:
    """Run the float model in eval mode, recording every activation quantizer's input and codes.

    ``forward``: what runs one batch (default ``model``), e.g. an fx interpreter of the same
    modules recording more on the same pass.
    """
    from quant.quantize import quantized_layers

    model.eval()
    layers = quantized_layers(model)
    store = {k: {name: [] for name, _ in layers} for k in ("x", "codes", "beta", "hidden")}
    hooks = []
    for name, layer in layers:
        aq = layer.act_quant

        def pre(mod, args, name=name, aq=aq):
            xin = args[0]
            store["x"][name].append(xin.double().numpy())
            store["codes"][name].append(aq.codes(xin).numpy())
            if hasattr(aq, "adapter"):
                store["beta"][name].append(aq.beta(xin).double().numpy())

        hooks.append(aq.register_forward_pre_hook(pre))
        if hasattr(aq, "adapter") and len(aq.adapter) == 4:
            hooks.append(aq.adapter[1].register_forward_hook(
                lambda mod, args, out, name=name: store["hidden"][name].append(out.double().numpy())))
    logits = []
    try:
        for start in range(0, len(x), batch):
            logits.append((forward or model)(x[start:start + batch]).double().numpy())
    finally:
        for h in hooks:
            h.remove()
    cat = {k: {n: np.concatenate(v) for n, v in d.items() if v} for k, d in store.items()}
    return FloatTrace(cat["x"], cat["codes"], cat["beta"], cat["hidden"], np.concatenate(logits))
