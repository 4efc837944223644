"""Random but calibrated digits-shaped bundles, for testing the hardware without a trained model.

:func:`random_bundle` builds a :class:`golden.bundle.Bundle` with the digits network's layers
(conv1 8-bit, conv2/conv3 at BITS with int/POT/POST weights and LSQ or ASQ inputs, fc 8-bit) and
random constants, calibrated on random images with the golden model so that every layer's codes
spread over their whole range (a test whose activations all clamp to 0 would prove little). The
constants obey the bundle format and docs/arithmetic.md's widths; :func:`golden.model.run` is the
reference the hardware is compared with.
"""

import numpy as np

from golden import arith, formats
from golden.bundle import Bundle, parse_manifest
from golden.formats import BETA_BITS, BETA_MIN_SHIFT, RECIP_BITS, Y_BITS
from golden.formats import BETA_FRAC as G
from golden.model import accumulate_codes

#: Fractional bits of ``y`` in the random bundles (the exporter picks one per layer).
FY = 8


def _requant(acc, *, output, qmax=None, g_on=False, rng):
    """Calibrated M, B, S so that ``acc`` maps onto the output's range."""
    chans = acc.shape[1]
    per_chan = np.moveaxis(acc, 1, 0).reshape(chans, -1).astype(np.float64)
    spread = np.maximum(per_chan.std(axis=1), 1.0)
    qmax = qmax or 0
    target = {"codes": qmax / 2.0, "y": 1500.0, "logits": 600.0}[output]
    gain = target / spread * rng.uniform(0.6, 1.4, chans)
    S = min(max(int(np.floor(np.log2(((1 << 15) - 1) / gain.max()))), 0), 40)
    M = np.floor(gain * 2.0 ** S + 0.5).astype(np.int64)
    offset = {"codes": qmax * 0.3, "y": 600.0, "logits": 0.0}[output]
    B = np.floor((offset + rng.normal(0, 0.25 * target, chans)) * 2.0 ** S + 0.5).astype(np.int64)
    lo, hi = {"codes": (0, qmax), "y": (0, (1 << Y_BITS) - 1), "logits": (None, None)}[output]
    return {"M": M.tolist(), "B": B.tolist(), "S": int(S), "G": G if g_on else 0, "output": output,
            "lo": lo, "hi": hi, "frac_bits": FY if output == "y" else (8 if output == "logits" else 0)}


def _widths(req, acc_width):
    M, B = np.array(req["M"]), np.array(req["B"])
    g_max = (1 << BETA_BITS) - 1 if req["G"] else 1
    t_bound = (1 << (acc_width - 1)) * int(np.abs(M).max()) * g_max + int(np.abs(B).max()) * (1 << req["G"])
    out_bound = int(arith.rshift_round(t_bound, req["S"] + req["G"])) + 1
    req.update(M_width=arith.signed_width(int(M.min()), int(M.max())),
               B_width=arith.signed_width(int(min(B.min(), 0)), int(max(B.max(), 0))),
               t_width=arith.signed_width(-t_bound, t_bound),
               out_width=arith.signed_width(-out_bound, out_bound) if req["hi"] is None
               else arith.unsigned_width(req["hi"]))


def _asq(y, qmax, rng):
    """Calibrated adapter constants for the map ``y`` (N, C, H, W) with FY fractional bits."""
    n, c = y.shape[:2]
    z = y.reshape(n, c, -1).sum(axis=2).astype(np.float64)
    entry = {"G": G, "beta_min": 1 << (G - BETA_MIN_SHIFT), "beta_max": (1 << BETA_BITS) - 1, "FY": FY,
             "qmax": qmax}
    if c >= 8:
        hidden = c // 4
        W1 = rng.integers(-2047, 2048, (hidden, c))
        s1 = (z @ W1.T).astype(np.float64)
        b1 = np.floor(rng.normal(0, 1, hidden) * s1.std(axis=0) + 0.5).astype(np.int64)
        S1 = max(0, int(np.ceil(np.log2(np.abs(s1).max() + 1))) - 10)
        h = np.maximum(0, arith.rshift_round((z.astype(np.int64) @ W1.T) + b1, S1))
        entry.update(W1=W1.tolist(), b1=b1.tolist(), S1=S1)
        inner = h
        W2 = rng.integers(-2047, 2048, hidden)
    else:
        entry.update(S1=0)
        inner = z.astype(np.int64)
        W2 = rng.integers(-2047, 2048, c)
    s2 = (inner @ W2).astype(np.float64)
    S2 = max(0, int(np.round(np.log2(max(s2.std(), 1.0) / (0.3 * (1 << G))))))
    b2 = int((1 << G) << S2) - int(np.round(s2.mean()))
    step = np.percentile(y, 95) / 2.0 ** FY / qmax
    FS = int(np.floor(np.log2(4095 / step)))
    s_code = int(np.floor(step * 2.0 ** FS + 0.5))
    R = (s_code << G).bit_length() + RECIP_BITS
    entry.update(W2=W2.tolist(), b2=b2, S2=S2, s_code=s_code, FS=FS, R=R, code_shift=FY + R - FS - G)
    return entry


def random_bundle(bits: int = 3, kind: str = "post", scheme_asq: bool = True, seed: int = 0,
                  n_calib: int = 48) -> Bundle:
    """A digits-shaped bundle with random, calibrated constants.

    Parameters
    ----------
    bits : int
        BITS of conv2 and conv3 (weights and input codes).
    kind : one of :data:`golden.formats.WEIGHT_KINDS`
        Weight format of conv2 and conv3.
    scheme_asq : bool
        conv2 and conv3 inputs ASQ (True) or LSQ (False).
    seed : int
    n_calib : int
        Random images the constants are calibrated on.
    """
    formats.check_weight_format(kind, bits)
    rng = np.random.default_rng(seed)
    frac = formats.DEFAULT_POST_FRAC_BITS
    shapes = [("conv1", [1, 8, 8], [16, 8, 8], 1), ("conv2", [16, 8, 8], [16, 4, 4], 2),
              ("conv3", [16, 4, 4], [32, 2, 2], 2), ("fc", [128], [10], None)]
    lut = [int(v) for v in np.round(np.linspace(-127, 127, 17))]
    man = {"format_version": 1, "model": "digits", "scheme": ("asq" if scheme_asq else "lsq")
           + ("+" + kind if kind != formats.INT else ""), "bits": bits, "post_frac_bits": frac,
           "input": {"shape": [1, 8, 8], "pixel_max": 16, "bits": 8, "signed": True, "step": 1 / 127,
                     "lut": lut},
           "layers": [], "accuracy": {}}
    weights = {}
    x = random_images(rng, n_calib, lut)
    asq_entry, beta_in = None, None  # the ASQ unit in front of the layer being built, its betas
    for i, (name, ishape, oshape, stride) in enumerate(shapes):
        middle = name in ("conv2", "conv3")
        wkind, wbits = (kind, bits) if middle else (formats.INT, 8)
        act_bits, signed = (bits if middle else 8), name == "conv1"
        wshape = [oshape[0], ishape[0]] + ([3, 3] if stride else [])
        if wkind == formats.INT:
            w = np.clip(np.round(rng.normal(0, 0.35, wshape) * (1 << (wbits - 1))),
                        -(1 << (wbits - 1)), (1 << (wbits - 1)) - 1).astype(np.int64)
        else:
            w = rng.integers(0, 1 << wbits, wshape)
        weights[name] = w
        lo, hi = ((-128, 127) if signed else (0, (1 << act_bits) - 1))
        pmin, pmax = arith.product_range(lo, hi, wkind, wbits, frac)
        fan_in = int(np.prod(wshape[1:]))
        entry = {"name": name, "kind": "conv" if stride else "fc", "in_shape": ishape, "out_shape": oshape}
        if stride:
            entry.update(kernel=3, stride=stride, pad=1)
        entry.update(fan_in=fan_in,
                     act_in={"quant": "asq" if asq_entry else "lsq", "bits": act_bits, "signed": signed,
                             "step": 0.05, "asq": asq_entry},
                     weight={"kind": wkind, "bits": wbits, "shape": wshape, "mem": f"{name}.weights.mem",
                             "scale": [0.01] * oshape[0],
                             "unit_exp": arith.weight_unit_exponent(wkind, wbits, frac)},
                     product_range=[pmin, pmax], acc_width=arith.acc_width(fan_in, pmin, pmax))
        man["layers"].append(entry)
        if entry["kind"] == "fc":
            x = x.reshape(x.shape[0], -1)
        acc = accumulate_codes(x, w, wkind, wbits, act_bits, frac, kernel=entry.get("kernel"),
                               stride=entry.get("stride"), pad=entry.get("pad"))
        acc = acc.reshape((acc.shape[0],) + tuple(oshape))
        last = i == len(shapes) - 1
        next_asq = not last and scheme_asq and shapes[i + 1][0] in ("conv2", "conv3")
        next_qmax = None if last else (255 if shapes[i + 1][0] == "fc" else (1 << bits) - 1)
        output = "logits" if last else ("y" if next_asq else "codes")
        req = _requant(acc.astype(np.float64), output=output, qmax=next_qmax, g_on=asq_entry is not None,
                       rng=rng)
        _widths(req, entry["acc_width"])
        entry["requant"] = req
        if last:
            break
        chan = (-1,) + (1,) * (acc.ndim - 2)
        g = 1 if beta_in is None else beta_in.reshape((-1,) + (1,) * (acc.ndim - 1))
        out = arith.requantize(acc, np.asarray(req["M"]).reshape(chan), np.asarray(req["B"]).reshape(chan),
                               req["S"], g=g, G=req["G"], lo=req["lo"], hi=req["hi"])
        if next_asq:
            asq_entry = _asq(out, next_qmax, rng)
            x, beta_in = arith.asq_unit(out, _constants(asq_entry))
        else:
            x, asq_entry, beta_in = out, None, None
    return Bundle(manifest=parse_manifest(man, "random bundle"), weights=weights)


def _constants(asq):
    return arith.AsqConstants(
        W1=None if asq.get("W1") is None else np.asarray(asq["W1"]),
        b1=None if asq.get("b1") is None else np.asarray(asq["b1"]), S1=asq["S1"],
        W2=np.asarray(asq["W2"]), b2=asq["b2"], S2=asq["S2"], G=asq["G"], beta_min=asq["beta_min"],
        beta_max=asq["beta_max"], s_code=asq["s_code"], FS=asq["FS"], R=asq["R"], FY=asq["FY"],
        qmax=asq["qmax"])


def random_images(rng, n, lut):
    """Digit-like random images as conv1 input codes: blobs of bright pixels on a dark ground."""
    pixels = np.zeros((n, 1, 8, 8), dtype=np.int64)
    for k in range(n):
        strokes = rng.integers(2, 5)
        for _ in range(strokes):
            y0, x0 = rng.integers(0, 8, 2)
            y1, x1 = rng.integers(0, 8, 2)
            for t in np.linspace(0, 1, 10):
                yy, xx = int(round(y0 + (y1 - y0) * t)), int(round(x0 + (x1 - x0) * t))
                pixels[k, 0, yy, xx] = min(16, pixels[k, 0, yy, xx] + rng.integers(6, 17))
    return np.asarray(lut, dtype=np.int64)[pixels]


def layer_hw_params(bundle: Bundle, name: str) -> dict:
    """Everything the RTL of layer ``name`` needs: widths, constants, the POST table.

    Returns
    -------
    dict
        ``act_bits``, ``act_signed``, ``weight_kind``, ``weight_bits``, ``post_frac_bits``,
        ``post_table`` (list, POST only), ``fan_in``, ``product_range``, ``product_width``,
        ``acc_width``, ``M``, ``B``, ``S``, ``G``, ``M_width``, ``B_width``, ``t_width``,
        ``output`` (codes | y | logits), ``out_lo``, ``out_hi``, ``out_width``, ``out_frac_bits``,
        ``weights`` (codes, int64 array), ``mem`` (file name), ``asq`` (the ASQ unit's
        :class:`golden.bundle.AsqParams`, or None), plus the layer's shape fields.
    """
    layer = bundle.layer(name)
    act, w, req = layer.act_in, layer.weight, layer.requant
    frac_bits = bundle.manifest.post_frac_bits
    pmin, pmax = layer.product_range
    params = {
        "name": name, "kind": layer.kind, "in_shape": list(layer.in_shape),
        "out_shape": list(layer.out_shape), "kernel": layer.kernel, "stride": layer.stride,
        "pad": layer.pad, "act_bits": act.bits, "act_signed": act.signed,
        "weight_kind": w.kind, "weight_bits": w.bits, "post_frac_bits": frac_bits,
        "post_table": arith.post_table(act.bits, frac_bits).tolist() if w.kind == formats.POST else None,
        "fan_in": layer.fan_in, "product_range": [pmin, pmax],
        "product_width": arith.signed_width(pmin, pmax), "acc_width": layer.acc_width,
        "weights": bundle.weights[name], "mem": w.mem,
    }
    params.update({k: v for k, v in req.to_dict().items() if k not in ("lo", "hi", "frac_bits")})
    params.update(out_lo=req.lo, out_hi=req.hi, out_frac_bits=req.frac_bits)
    params["asq"] = act.asq
    return params
