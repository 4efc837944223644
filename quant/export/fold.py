"""Float -> fixed point: BN folding and every constant of a bundle's manifest.

The exporter is the only place floats become fixed-point constants: it folds BN, step sizes and
the next layer's step into per-channel multipliers, quantizes the ASQ adapters and picks every
fractional width (rules in ``docs/arithmetic.md``; the fixed widths are :mod:`golden.formats`').
What is specific to a network (its BN pairs, shapes, input) comes from
:mod:`quant.export.networks`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from asqhw.errors import UserError
from golden import arith, formats
from golden.bundle import FORMAT_VERSION, VECTORS, AsqParams
from golden.formats import (
    ADAPTER_W_BITS,
    BETA_BITS,
    BETA_FRAC,
    BETA_MIN_SHIFT,
    H_BITS,
    LOGIT_FRAC,
    M_BITS,
    RECIP_BITS,
    STEP_BITS,
    Y_BITS,
)
from quant.export.networks import Network
from quant.export.trace import FloatTrace
from quant.quantizers import STEP_EPS


def round_half_up(v) -> np.ndarray:
    """The one rounding rule, for turning float64 constants into integers at export time."""
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.int64)


def fit_frac_bits(values, width: int, signed: bool = True) -> int:
    """Largest F with every ``round(|v| 2^F)`` within a ``width``-bit (signed) integer."""
    top = float(np.max(np.abs(values))) if np.size(values) else 0.0
    limit = (1 << (width - 1 if signed else width)) - 1
    if top == 0.0:
        return 0
    f = math.floor(math.log2(limit / top))
    while int(round_half_up(top * 2.0 ** f)) > limit:
        f -= 1
    return f


def frac_bits_for_range(top: float, width: int) -> int:
    """Fractional bits of an unsigned ``width``-bit format covering ``[0, 2 * top]``."""
    top = max(float(top), 2.0 ** -8)
    return width - max(0, math.ceil(math.log2(2 * top)))


def bn_fold(model, net: Network, layer_name: str, layer) -> tuple[np.ndarray, np.ndarray]:
    """``(a_c, b_c)`` with ``bn(v) = a_c v + b_c`` (eval statistics), conv/fc bias folded in."""
    bn_name = net.bn_of[layer_name]
    out_ch = layer.weight.shape[0]
    bias = (layer.bias.detach().double().numpy() if layer.bias is not None else np.zeros(out_ch))
    if bn_name is None:
        return np.ones(out_ch), bias
    bn = model.get_submodule(bn_name)
    a = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
    b = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * a
    return a, b + a * bias


def weight_entry(name: str, layer, frac_bits: int) -> tuple[dict, np.ndarray]:
    """The ``weight`` entry of layer ``name`` and its codes (what its weight quantizer gives)."""
    wq = layer.weight_quant
    kind = wq.kind
    try:
        formats.check_weight_format(kind, wq.bits)
    except formats.WidthError as err:
        raise formats.WidthError(f"layer {name}: {err}; retrain with a supported scheme/BITS") from None
    codes = wq.codes(layer.weight.detach()).numpy().astype(np.int64)
    scale = (wq.step if kind == formats.INT else wq.alpha).detach().double().clamp_min(STEP_EPS).numpy()
    entry = {"kind": kind, "bits": int(wq.bits), "shape": list(codes.shape),
             "mem": f"{name}.weights.mem", "scale": scale.tolist(),
             "unit_exp": arith.weight_unit_exponent(kind, wq.bits, frac_bits)}
    return entry, codes


def asq_entry(aq, in_shape, fy: int, trace: FloatTrace, name: str) -> dict:
    """Fixed-point constants and widths of the ASQ unit in front of layer ``name``."""
    channels, hw = in_shape[0], int(np.prod(in_shape[1:])) if len(in_shape) > 1 else 1
    g = BETA_FRAC
    y_max = (1 << Y_BITS) - 1
    z_max = hw * y_max
    ad = aq.adapter
    wf = [m.weight.detach().double().numpy() for m in ad if isinstance(m, torch.nn.Linear)]
    bf = [m.bias.detach().double().numpy() for m in ad if isinstance(m, torch.nn.Linear)]
    entry: dict = {"channels": channels, "hw": hw}
    if channels >= 8:
        w1 = wf[0] / hw
        fw1 = fit_frac_bits(w1, ADAPTER_W_BITS)
        fh = frac_bits_for_range(trace.hidden[name].max() if name in trace.hidden else 1.0, H_BITS)
        fh = min(fh, fy + fw1)
        w1q = round_half_up(w1 * 2.0 ** fw1)
        b1q = round_half_up(bf[0] * 2.0 ** (fy + fw1))
        w2 = wf[1].reshape(-1)
        fw2 = fit_frac_bits(w2, ADAPTER_W_BITS)
        w2q = round_half_up(w2 * 2.0 ** fw2)
        b2q = int(round_half_up(bf[1][0] * 2.0 ** (fh + fw2)))
        s1, s2 = fy + fw1 - fh, fh + fw2 - g
        sum1 = int((np.abs(w1q).sum(axis=1) * z_max + np.abs(b1q)).max())
        h_max = int(arith.rshift_round(sum1, s1))
        entry.update(W1=w1q.tolist(), b1=b1q.tolist(), S1=s1, FW1=fw1, FH=fh)
        sum_in_max = h_max
    else:
        w2 = wf[0].reshape(-1) / hw
        fw2 = fit_frac_bits(w2, ADAPTER_W_BITS)
        w2q = round_half_up(w2 * 2.0 ** fw2)
        b2q = int(round_half_up(bf[0][0] * 2.0 ** (fy + fw2)))
        s2 = fy + fw2 - g
        sum1 = h_max = None
        entry.update(W1=None, b1=None, S1=0, FW1=None, FH=None)
        sum_in_max = z_max
    if s2 < 0:
        raise UserError(f"layer {name}: adapter constants out of range (S2 = {s2} < 0)")
    step = float(aq.step.detach().double().clamp_min(STEP_EPS))
    fs = fit_frac_bits([step], STEP_BITS, signed=False)
    s_code = int(round_half_up(step * 2.0 ** fs))
    beta_min, beta_max = 1 << (g - BETA_MIN_SHIFT), (1 << BETA_BITS) - 1
    r_bits = (s_code << g).bit_length() + RECIP_BITS
    r_max = int(arith.reciprocal(s_code * beta_min, r_bits))
    sum2 = int(np.abs(w2q).sum() * sum_in_max + abs(b2q))
    entry.update(
        W2=w2q.tolist(), b2=b2q, S2=s2, FW2=fw2, G=g, beta_min=beta_min, beta_max=beta_max,
        s_code=s_code, FS=fs, R=r_bits, FY=fy, qmax=int(aq.q_p),
        code_shift=fy + r_bits - fs - g,
        widths={
            "y": Y_BITS, "z": arith.unsigned_width(z_max),
            "sum1": None if sum1 is None else arith.signed_width(-sum1, sum1),
            "h": None if h_max is None else arith.unsigned_width(h_max),
            "sum2": arith.signed_width(-sum2, sum2), "beta": BETA_BITS,
            "q": arith.unsigned_width(s_code * beta_max), "r": arith.unsigned_width(r_max),
            "yr": arith.unsigned_width(y_max * r_max),
        },
    )
    if entry["code_shift"] < 0:
        raise UserError(f"layer {name}: ASQ code shift {entry['code_shift']} < 0 (step {step})")
    beta_seen = trace.beta.get(name)
    entry["beta_seen"] = [float(beta_seen.min()), float(beta_seen.max())] if beta_seen is not None else None
    return entry


def float_requant(a, b, scale_in: float, scale, unit_exp: int, out_frac: int, s_next: float):
    """``(m_c, b'_c)``: a layer's requant multiplier and bias in float64, before rounding.

    ``a, b`` are the BN fold (:func:`bn_fold`), ``scale_in`` the input step, ``scale`` and
    ``unit_exp`` the weight entry's per-channel scale and product unit exponent, ``out_frac`` the
    output's fractional bits and ``s_next`` the next layer's step (1 for ``y`` and logits).
    """
    scale = np.asarray(scale, dtype=np.float64)
    m = a * scale_in * scale * 2.0 ** (out_frac - unit_exp) / s_next
    return m, b * 2.0 ** out_frac / s_next


def requant_entry(name, a, b, scale_in, wentry, nxt, out_frac, acc_bound, g_max, G) -> dict:
    """M, B, S and widths of a layer's requantizer (see docs/arithmetic.md section 3)."""
    if nxt == "logits":
        s_next, lo, hi, output = 1.0, None, None, "logits"
    elif nxt == "y":
        s_next, lo, hi, output = 1.0, 0, (1 << Y_BITS) - 1, "y"
    else:
        s_next, lo, hi, output = nxt[0], 0, nxt[1], "codes"
    m, bias = float_requant(a, b, scale_in, wentry["scale"], wentry["unit_exp"], out_frac, s_next)
    s = fit_frac_bits(m, M_BITS)
    if s < 0:
        raise UserError(f"layer {name}: requant multiplier too large for {M_BITS} bits")
    mq, bq = round_half_up(m * 2.0 ** s), round_half_up(bias * 2.0 ** s)
    t_bound = acc_bound * int(np.abs(mq).max()) * g_max + int(np.abs(bq).max()) * (1 << G)
    out_bound = int(arith.rshift_round(t_bound, s + G)) + 1
    out_width = arith.signed_width(-out_bound, out_bound) if hi is None else arith.unsigned_width(hi)
    return {"M": mq.tolist(), "B": bq.tolist(), "S": s, "G": G, "output": output, "lo": lo, "hi": hi,
            "frac_bits": out_frac,
            "M_width": arith.signed_width(int(mq.min()), int(mq.max())),
            "B_width": arith.signed_width(int(min(bq.min(), 0)), int(max(bq.max(), 0))),
            "t_width": arith.signed_width(-t_bound, t_bound), "out_width": out_width}


def manifest_dict(model, net: Network, meta: dict, trace_train: FloatTrace,
                  frac_bits: int) -> tuple[dict, dict]:
    """The manifest (a JSON object) and weight codes of a quantized model of network ``net``.

    No accuracy, no vectors yet; ``frac_bits`` is F of the POST table.
    """
    from quant.quantize import quantized_layers

    layers = quantized_layers(model)
    names = [n for n, _ in layers]
    if names != net.layer_names:
        raise UserError(f"checkpoint layers {names} are not the {net.name} model's {net.layer_names}")
    shapes, outs = net.in_shapes, net.out_shapes
    entries, weights = [], {}
    scale_in_of = {}
    for name, layer in layers:
        aq = layer.act_quant
        is_asq = hasattr(aq, "adapter")
        wentry, codes = weight_entry(name, layer, frac_bits)
        weights[name] = codes
        act = {"quant": "asq" if is_asq else "lsq", "bits": int(aq.bits), "signed": bool(aq.signed),
               "step": float(aq.step.detach().double()), "asq": None}
        if not is_asq:  # an ASQ input's constants need the previous requantizer's FY: pass 2
            scale_in_of[name] = act["step"]
        pmin, pmax = arith.product_range(aq.q_n, aq.q_p, wentry["kind"], wentry["bits"], frac_bits)
        fan_in = int(np.prod(codes.shape[1:]))
        entry = {"name": name, "kind": "conv" if codes.ndim == 4 else "fc",
                 "in_shape": shapes[name], "out_shape": outs[name]}
        if codes.ndim == 4:
            entry.update(kernel=int(layer.kernel_size[0]), stride=int(layer.stride[0]),
                         pad=int(layer.padding[0]))
        entry.update(fan_in=fan_in, act_in=act, weight=wentry, product_range=[pmin, pmax],
                     acc_width=arith.acc_width(fan_in, pmin, pmax))
        entries.append(entry)
    # Requantizers need the next layer's input format, so they are filled in a second pass.
    for i, (name, layer) in enumerate(layers):
        entry = entries[i]
        a, b = bn_fold(model, net, name, layer)
        if i == len(layers) - 1:
            nxt, out_frac = "logits", LOGIT_FRAC
        elif entries[i + 1]["act_in"]["quant"] == "asq":
            nxt = "y"
            out_frac = frac_bits_for_range(trace_train.x[names[i + 1]].max(), Y_BITS)
        else:
            nxt, out_frac = (entries[i + 1]["act_in"]["step"], int(layers[i + 1][1].act_quant.q_p)), 0
        G = BETA_FRAC if entry["act_in"]["quant"] == "asq" else 0
        g_max = (1 << BETA_BITS) - 1 if G else 1
        pmin, pmax = entry["product_range"]
        acc_bound = entry["fan_in"] * max(-pmin, pmax)
        entry["requant"] = requant_entry(name, a, b, scale_in_of[name], entry["weight"], nxt,
                                          out_frac, acc_bound, g_max, G)
        if nxt == "y":
            # The ASQ unit of the next layer reads y with these fractional bits.
            asq = asq_entry(layers[i + 1][1].act_quant, entries[i + 1]["in_shape"], out_frac, trace_train,
                            names[i + 1])
            entries[i + 1]["act_in"]["asq"] = asq
            scale_in_of[names[i + 1]] = AsqParams.from_dict(asq, names[i + 1],
                                                            entries[i + 1]["in_shape"]).step
    first = entries[0]["act_in"]
    manifest = {
        "format_version": FORMAT_VERSION, "model": net.name, "scheme": meta["scheme"],
        "bits": int(meta["bits"]), "post_frac_bits": frac_bits,
        "input": {"shape": list(net.input_shape), "pixel_max": net.pixel_max, "bits": first["bits"],
                  "signed": True, "step": first["step"], "lut": input_lut(model, net)},
        "layers": entries, "accuracy": {}, "vectors": VECTORS,
    }
    return manifest, weights


@torch.no_grad()
def input_lut(model, net: Network) -> list:
    """The first layer's input code of every pixel value, by the model's own normalise-and-quantize.

    Lossless or refused: every pixel value must get its own code (a model whose first layer learned
    its input step could merge two).
    """
    model_pixel_max = getattr(model, "pixel_max", net.pixel_max)
    if model_pixel_max != net.pixel_max:
        raise UserError(f"the model takes pixels 0..{model_pixel_max}, the {net.name} data 0..{net.pixel_max}")
    x = torch.arange(net.pixel_max + 1, dtype=torch.float32) / float(net.pixel_max)
    x = net.normalise(x)
    first = model.get_submodule(net.layer_names[0])
    lut = [int(v) for v in first.act_quant.codes(x.reshape(-1, 1, 1, 1)).reshape(-1)]
    if len(set(lut)) != len(lut):
        merged = sorted(p for p in range(len(lut)) if lut.count(lut[p]) > 1)
        raise UserError(f"the {net.layer_names[0]} input step {float(first.act_quant.step):g} maps pixels "
                        f"{merged} to shared codes: the input coding must be lossless (retrain with this "
                        "version, whose first layer has a fixed lossless step)")
    return lut
