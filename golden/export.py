"""Export a trained, quantized digits model to a model bundle (``asqhw export``).

The exporter is the only place floats become fixed-point constants: it folds BN, step sizes and
the next layer's step into per-channel multipliers, quantizes the ASQ adapters, picks every
fractional width (rules in ``docs/arithmetic.md``), runs the golden model on the whole digits test
split and writes the bundle atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asqhw.errors import UserError
from golden import arith, formats
from golden.bundle import FORMAT_VERSION, MANIFEST, VECTORS, Bundle, asq_step, write_bundle
from golden.model import pixels_to_codes, run, vector_arrays
from quant.quantizers import STEP_EPS
from quant.schemes import FLOAT_SCHEME

#: Fixed widths (docs/arithmetic.md, section 2).
M_BITS = 16          # requant multiplier, signed
Y_BITS = 16          # y, the post-ReLU activation fed to an ASQ unit, unsigned
H_BITS = 16          # nominal width of the adapter's hidden h (its worst case is recorded)
ADAPTER_W_BITS = 12  # adapter weights, signed, one power-of-two scale per tensor
STEP_BITS = 12       # s_code, unsigned
BETA_FRAC = 10       # G
BETA_BITS = 14       # beta code width: beta < 16
BETA_MIN_SHIFT = 4   # beta_min = 2^(G - 4): beta >= 1/16
RECIP_BITS = 16      # r has 16-17 significant bits at beta = 1
LOGIT_FRAC = 8       # FL
PIXEL_MAX = 16
#: BN partner of each digits layer (None: the layer has its own bias and no BN).
DIGITS_BN = {"conv1": "bn1", "conv2": "bn2", "conv3": "bn3", "fc": None}


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


# ----------------------------------------------------------------------------- float trace


@dataclass
class FloatTrace:
    """What the float fake-quant model computed, per quantized layer (in forward order)."""

    x: dict        # layer -> float input of its activation quantizer (numpy float64)
    codes: dict    # layer -> the float model's input codes (int64)
    beta: dict     # layer -> per-sample beta (ASQ layers)
    hidden: dict   # layer -> adapter hidden activations (ASQ layers with C >= 8)
    logits: np.ndarray


@torch.no_grad()
def float_trace(model, x: torch.Tensor, batch: int = 512) -> FloatTrace:
    """Run the float model in eval mode, recording every activation quantizer's input and codes."""
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
            logits.append(model(x[start:start + batch]).double().numpy())
    finally:
        for h in hooks:
            h.remove()
    cat = {k: {n: np.concatenate(v) for n, v in d.items() if v} for k, d in store.items()}
    return FloatTrace(cat["x"], cat["codes"], cat["beta"], cat["hidden"], np.concatenate(logits))


# ----------------------------------------------------------------------------- constants


def _bn_fold(model, layer_name: str, layer) -> tuple[np.ndarray, np.ndarray]:
    """``(a_c, b_c)`` with ``bn(v) = a_c v + b_c`` (eval statistics), conv/fc bias folded in."""
    bn_name = DIGITS_BN[layer_name]
    out_ch = layer.weight.shape[0]
    bias = (layer.bias.detach().double().numpy() if layer.bias is not None else np.zeros(out_ch))
    if bn_name is None:
        return np.ones(out_ch), bias
    bn = getattr(model, bn_name)
    a = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
    b = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * a
    return a, b + a * bias


def _weight_entry(name: str, layer, frac_bits: int) -> tuple[dict, np.ndarray]:
    wq = layer.weight_quant
    kind = "int" if getattr(wq, "kind", "uniform") == "uniform" else wq.kind
    try:
        formats.check_weight_format(kind, wq.bits)
    except ValueError as err:
        raise UserError(f"layer {name}: {err}; retrain with a supported scheme/BITS") from None
    codes = wq.codes(layer.weight.detach()).numpy().astype(np.int64)
    scale = (wq.step if kind == "int" else wq.alpha).detach().double().clamp_min(STEP_EPS).numpy()
    entry = {"kind": kind, "bits": int(wq.bits), "shape": list(codes.shape),
             "mem": f"{name}.weights.mem", "scale": scale.tolist(),
             "unit_exp": arith.weight_unit_exponent(kind, wq.bits, frac_bits)}
    return entry, codes


def _asq_entry(aq, in_shape, fy: int, trace: FloatTrace, name: str) -> dict:
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


def float_requant(a, b, scale_in: float, wentry: dict, out_frac: int, s_next: float):
    """``(m_c, b'_c)``: a layer's requant multiplier and bias in float64, before rounding.

    ``a, b`` are the BN fold (:func:`_bn_fold`), ``scale_in`` the input step, ``wentry`` the weight
    entry (``scale``, ``unit_exp``), ``out_frac`` the output's fractional bits and ``s_next`` the
    next layer's step (1 for ``y`` and logits).
    """
    scale = np.asarray(wentry["scale"], dtype=np.float64)
    m = a * scale_in * scale * 2.0 ** (out_frac - wentry["unit_exp"]) / s_next
    return m, b * 2.0 ** out_frac / s_next


def _requant_entry(name, a, b, scale_in, wentry, nxt, out_frac, acc_bound, g_max, G) -> dict:
    """M, B, S and widths of a layer's requantizer (see docs/arithmetic.md section 3)."""
    if nxt == "logits":
        s_next, lo, hi, output = 1.0, None, None, "logits"
    elif nxt == "y":
        s_next, lo, hi, output = 1.0, 0, (1 << Y_BITS) - 1, "y"
    else:
        s_next, lo, hi, output = nxt[0], 0, nxt[1], "codes"
    m, bias = float_requant(a, b, scale_in, wentry, out_frac, s_next)
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


def build_manifest(model, meta: dict, trace_train: FloatTrace,
                   post_frac_bits: int | None = None) -> tuple[dict, dict]:
    """The manifest and weight codes of a quantized digits model (no accuracy, no vectors yet).

    ``post_frac_bits`` is F of the POST table (None: ``formats.default_post_frac_bits(bits)``).
    """
    from quant.quantize import quantized_layers

    layers = quantized_layers(model)
    names = [n for n, _ in layers]
    if names != list(DIGITS_BN):
        raise UserError(f"checkpoint layers {names} are not the digits model's {list(DIGITS_BN)}")
    frac_bits = resolve_post_frac_bits(post_frac_bits, int(meta["bits"]))
    shapes = {"conv1": [1, 8, 8], "conv2": [16, 8, 8], "conv3": [16, 4, 4], "fc": [128]}
    outs = {"conv1": [16, 8, 8], "conv2": [16, 4, 4], "conv3": [32, 2, 2], "fc": [10]}
    entries, weights = [], {}
    scale_in_of = {}
    for name, layer in layers:
        aq = layer.act_quant
        is_asq = hasattr(aq, "adapter")
        wentry, codes = _weight_entry(name, layer, frac_bits)
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
        a, b = _bn_fold(model, name, layer)
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
        entry["requant"] = _requant_entry(name, a, b, scale_in_of[name], entry["weight"], nxt,
                                          out_frac, acc_bound, g_max, G)
        if nxt == "y":
            # The ASQ unit of the next layer reads y with these fractional bits.
            entries[i + 1]["act_in"]["asq"] = _asq_entry(
                layers[i + 1][1].act_quant, entries[i + 1]["in_shape"], out_frac, trace_train,
                names[i + 1])
            scale_in_of[names[i + 1]] = asq_step(entries[i + 1]["act_in"]["asq"])
    first = entries[0]["act_in"]
    manifest = {
        "format_version": FORMAT_VERSION, "model": meta["model"], "scheme": meta["scheme"],
        "bits": int(meta["bits"]), "post_frac_bits": frac_bits,
        "input": {"shape": [1, 8, 8], "pixel_max": PIXEL_MAX, "bits": first["bits"], "signed": True,
                  "step": first["step"], "lut": input_lut(model)},
        "layers": entries, "accuracy": {}, "vectors": VECTORS,
    }
    return manifest, weights


@torch.no_grad()
def input_lut(model) -> list:
    """conv1's input code of every pixel value, by the float model's own normalise-and-quantize."""
    x = torch.arange(PIXEL_MAX + 1, dtype=torch.float32) / float(PIXEL_MAX)
    x = (x - 0.5) / 0.5  # exactly DigitsNet.forward's normalisation
    return [int(v) for v in model.conv1.act_quant.codes(x.reshape(-1, 1, 1, 1)).reshape(-1)]


# ----------------------------------------------------------------------------- export


def digits_pixels(x: torch.Tensor) -> np.ndarray:
    """The integer pixels (0..16) of digits images given as ``pixels / 16``."""
    return np.floor(x.double().numpy() * PIXEL_MAX + 0.5).astype(np.int64)


def resolve_post_frac_bits(post_frac_bits: int | None, bits: int) -> int:
    """F of the POST table: the given one (checked) or ``formats.default_post_frac_bits(bits)``."""
    if post_frac_bits is None:
        return formats.default_post_frac_bits(bits)
    if isinstance(post_frac_bits, bool) or not isinstance(post_frac_bits, int) \
            or not 0 <= post_frac_bits <= formats.MAX_POST_FRAC_BITS:
        raise UserError(f"--post-frac-bits {post_frac_bits!r}: F of the POST table must be an integer "
                        f"0..{formats.MAX_POST_FRAC_BITS} (default for BITS={bits}: "
                        f"{formats.default_post_frac_bits(bits)})")
    return post_frac_bits


def build_bundle(model, meta: dict, progress: bool = True, post_frac_bits: int | None = None) -> Bundle:
    """Constants from the training split, golden vectors and accuracy on the test split.

    ``post_frac_bits``: F of the POST table (None: the default for the model's BITS).
    """
    from quant.data import digits_split

    torch.set_num_threads(1)
    x_train, _, x_test, y_test = digits_split()
    steps = tqdm(total=4, desc="export", disable=not progress, leave=False)
    trace_train = float_trace(model, x_train)
    steps.update()
    manifest, weights = build_manifest(model, meta, trace_train, post_frac_bits)
    bundle = Bundle(manifest=manifest, weights=weights)
    steps.update()
    trace_test = float_trace(model, x_test)
    pixels = digits_pixels(x_test)
    codes = pixels_to_codes(bundle, pixels)
    if not np.array_equal(codes, trace_test.codes["conv1"]):
        raise UserError("input LUT disagrees with the float model's conv1 input codes (report a bug)")
    result = run(bundle, codes)
    steps.update()
    labels = y_test.numpy()
    float_pred = trace_test.logits.argmax(axis=1)
    from golden.evaluate import free_running_table, teacher_forced

    manifest["accuracy"] = {
        "split": "digits test (stratified, seed 0)", "n_test": int(len(labels)),
        "float": float((float_pred == labels).mean()),
        "golden": float((result["pred"] == labels).mean()),
        "flips": int((float_pred != result["pred"]).sum()),
        "layers": free_running_table(bundle, result, trace_test),
        "teacher_forced": teacher_forced(bundle, model, trace_test),
    }
    vectors = vector_arrays(result, labels)
    vectors["pixels"] = pixels.astype(np.uint8)
    vectors["float_pred"] = float_pred.astype(np.uint8)
    bundle.vectors = vectors
    steps.update()
    steps.close()
    return bundle


def check_outdir(outdir) -> None:
    """Refuse to replace an existing folder that is not a bundle (``export CKPT models`` would
    otherwise swap the whole ``models`` folder for one bundle)."""
    outdir = Path(outdir)
    if outdir.exists() and (not outdir.is_dir() or (any(outdir.iterdir())
                                                     and not (outdir / MANIFEST).is_file())):
        raise UserError(f"{outdir} exists and is not a model bundle: refusing to replace it; "
                        "give a new folder or an existing bundle folder as OUTDIR")


def export_model(model, meta: dict, outdir, progress: bool = True,
                 post_frac_bits: int | None = None) -> Bundle:
    """Build the bundle of a quantized digits model and write it to ``outdir`` atomically."""
    check_outdir(outdir)
    if meta.get("model") != "digits":
        raise UserError(f"checkpoint model {meta.get('model')!r} (field 'model'): export supports the "
                        "digits model only; train one with `asqhw train --model digits`")
    bundle = build_bundle(model, meta, progress=progress, post_frac_bits=post_frac_bits)
    write_bundle(bundle, outdir)
    return bundle


def export_checkpoint(checkpoint, outdir, progress: bool = True,
                      post_frac_bits: int | None = None) -> Bundle:
    """``asqhw export CHECKPOINT OUTDIR [--post-frac-bits F]``: load a checkpoint, export its bundle.

    ``post_frac_bits`` is F of the POST table; None takes ``formats.default_post_frac_bits(bits)``.
    """
    from quant.checkpoint import model_of, read_checkpoint

    check_outdir(outdir)
    meta = read_checkpoint(checkpoint)  # checks the fields before building anything
    if meta.get("model") != "digits":
        raise UserError(f"{checkpoint}: field 'model' is {meta.get('model')!r}; export supports the "
                        "digits model only")
    bits = meta.get("bits")
    if not isinstance(bits, int) or bits not in formats.INT_BITS:
        raise UserError(f"{checkpoint}: field 'bits' is {bits!r}; BITS must be 2-8")
    resolve_post_frac_bits(post_frac_bits, bits)  # a bad F is refused before any work
    if meta.get("scheme") in (None, FLOAT_SCHEME):
        raise UserError(f"{checkpoint}: field 'scheme' is {meta.get('scheme')!r}; export needs a "
                        "quantized checkpoint (train with --scheme asq, asq+post, ...)")
    model, meta = model_of(meta, checkpoint)
    return export_model(model, dict(meta), outdir, progress=progress, post_frac_bits=post_frac_bits)
