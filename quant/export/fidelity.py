"""Golden vs float: accuracy, flips and per-layer error (``asqhw eval --golden BUNDLE``).

Two views of the per-layer error (docs/arithmetic.md, section 6):

- *free running*: golden and float each run on their own previous outputs; the table gives, per
  layer input, the fraction of codes that differ and the error of golden's dequantized activation
  against the float model's, in units of that layer's step;
- *teacher forced*: every golden stage is fed the float model's own input to that stage, and its
  output is compared with the float model's against the bound the arithmetic document derives
  (requantizer: ``E = (|acc| g + 2^G) / 2^(S+G+1) + |acc| |m_c| |g 2^-G - beta s / s_q|``, so a
  code differs by at most ``floor(E + eps) + 1``; ASQ unit: beta within ``beta_bound``, codes by
  at most ``floor(U + eps) + 1``).

Graphs (format 2, docs/arithmetic.md 7.10): :func:`graph_free_running` and
:func:`graph_teacher_forced` do the same per requantizer node (a sum of terms, each a conv/fc
accumulator or a rounded ``y``), :func:`graph_golden_report` is ``eval --golden`` of a graph bundle.
"""

from __future__ import annotations

import numpy as np
import torch

from asqhw.errors import UserError
from golden import arith, formats
from golden.bundle import GRAPH_FORMAT_VERSION, Bundle, Layer, read_bundle
from golden.model import (
    accumulate,
    layer_columns,
    pixels_to_codes,
    requant_layer,
    run,
    weight_terms,
)
from quant.export.fold import bn_fold, float_requant, round_half_up
from quant.export.networks import NETWORKS, Network, network_of
from quant.export.trace import float_trace, single_thread

#: Relative float32 error allowance of the float model's own computation.
FLOAT_EPS = 1e-4


def _input_scale(layer: Layer, beta=None) -> np.ndarray | float:
    """Golden's dequantization scale of a layer's input codes (per sample for ASQ)."""
    asq = layer.act_in.asq
    if asq is None:
        return layer.act_in.step
    return asq.step * np.asarray(beta, dtype=np.float64) * 2.0 ** -asq.G


def _per_sample(v, ndim):
    return np.asarray(v, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))


def free_running_table(bundle: Bundle, golden: dict, trace) -> list:
    """Per layer input: code disagreement and dequantized error (in steps) golden vs float."""
    rows = []
    for layer in bundle.layers:
        name = layer.name
        g_codes = golden[f"{name}.in"].reshape(trace.codes[name].shape)
        f_codes = trace.codes[name]
        nd = g_codes.ndim
        g_scale = _input_scale(layer, golden.get(f"{name}.beta"))
        f_scale = layer.act_in.step
        if name in trace.beta:
            f_scale = f_scale * trace.beta[name]
        g_val = g_codes * (_per_sample(g_scale, nd) if np.ndim(g_scale) else g_scale)
        f_val = f_codes * (_per_sample(f_scale, nd) if np.ndim(f_scale) else f_scale)
        err = np.abs(g_val - f_val) / layer.act_in.step
        row = {"layer": name, "codes_differ": float((g_codes != f_codes).mean()),
               "max_code_diff": int(np.abs(g_codes - f_codes).max()),
               "max_err_steps": float(err.max()), "mean_err_steps": float(err.mean())}
        if name in trace.beta:
            row["max_beta_err"] = float(np.abs(golden[f"{name}.beta"] * 2.0 ** -layer.act_in.asq.G
                                               - trace.beta[name]).max())
        rows.append(row)
    logit_err = np.abs(golden["logits"] * 2.0 ** -bundle.layers[-1].requant.frac_bits - trace.logits)
    rows.append({"layer": "logits", "max_abs_err": float(logit_err.max()),
                 "mean_abs_err": float(logit_err.mean())})
    return rows


def _float_multipliers(model, net: Network, bundle: Bundle, idx: int) -> tuple[np.ndarray, np.ndarray]:
    """``(m_c, b'_c)`` of layer ``idx`` in float64, as the exporter derived them."""
    layer = bundle.layers[idx]
    name = layer.name
    a, b = bn_fold(model, net, name, model.get_submodule(name))
    act = layer.act_in
    scale_in = act.step if act.asq is None else act.asq.step
    req = layer.requant
    s_next = bundle.layers[idx + 1].act_in.step if req.output == "codes" else 1.0
    return float_requant(a, b, scale_in, layer.weight.scale, layer.weight.unit_exp, req.frac_bits, s_next)


def teacher_forced(bundle: Bundle, model, trace) -> list:
    """Each golden stage fed the float model's input; error against the document's bound."""
    net = network_of(bundle.manifest.model)
    frac_bits = bundle.manifest.post_frac_bits
    rows = []
    layers = bundle.layers
    for i, layer in enumerate(layers):
        name = layer.name
        act = layer.act_in
        codes_in = trace.codes[name]
        if not layer.is_conv:
            codes_in = codes_in.reshape(codes_in.shape[0], -1)
        row = {"layer": name}
        beta_code = None
        ratio = 1.0
        if act.asq is not None:
            row.update(_asq_stage(model, layer, layers[i - 1], trace))
            a = act.asq
            ratio = trace.beta[name] * act.step / a.step
            beta_code = arith.clamp(round_half_up(ratio * 2.0 ** a.G), a.beta_min, a.beta_max)
        acc = accumulate(codes_in.astype(np.int64), layer, bundle.weights[name], frac_bits)
        out = requant_layer(acc, layer, beta_code)
        req = layer.requant
        m, bias = _float_multipliers(model, net, bundle, i)
        chan = (1, -1) + (1,) * (acc.ndim - 2)
        g = 1.0 if beta_code is None else _per_sample(beta_code, acc.ndim)
        G = req.G
        ratio_s = 1.0 if beta_code is None else _per_sample(ratio, acc.ndim)
        acc_exact, _ = exact_accumulator(codes_in, layer, bundle.weights[name], frac_bits)
        # |acc - acc*| itself (golden's integer sum minus the float64 sum of exact products), not its
        # a-priori bound: the table errors of different a have different signs and partly cancel.
        table_err = np.abs(acc - acc_exact)
        exact = m.reshape(chan) * ratio_s * acc_exact + bias.reshape(chan)
        bound = ((np.abs(acc) * g + 2.0 ** G) * 2.0 ** -(req.S + G + 1)
                 + np.abs(acc) * np.abs(m.reshape(chan)) * np.abs(g * 2.0 ** -G - ratio_s)
                 + np.abs(m.reshape(chan)) * ratio_s * table_err)
        eps = FLOAT_EPS * (1 + np.abs(exact))
        if req.output == "codes":
            ref = trace.codes[layers[i + 1].name].reshape(out.shape)
            diff = np.abs(out - ref)
            allowed = np.floor(bound + eps) + 1
        else:
            if req.output == "y":
                ref = trace.x[layers[i + 1].name].reshape(out.shape) * 2.0 ** req.frac_bits
            else:
                ref = trace.logits * 2.0 ** req.frac_bits
            inside = ref <= (req.hi if req.hi is not None else np.inf)
            diff = np.where(inside, np.abs(out - ref), 0.0)
            allowed = bound + 0.5 + eps
        row.update(requant_output=req.output, requant_max_bound=float(bound.max()),
                   requant_max_diff=float(diff.max()),
                   requant_within_bound=bool(np.all(diff <= allowed)),
                   requant_frac_differ=float((diff > 0.5).mean()) if req.output == "codes" else None)
        rows.append(row)
    return rows


def exact_accumulator(codes_in: np.ndarray, layer: Layer, weights: np.ndarray, frac_bits: int):
    """The accumulator with exact real products (float64) and the a-priori bound on its error.

    Only POST odd-exponent products are inexact in golden: each is off by at most
    ``2^((e-1)/2) / 2`` (the table's rounding, section 2.2), and only when ``a != 0``.
    """
    w = layer.weight
    flat = weights.reshape(weights.shape[0], -1)
    cols = layer_columns(codes_in, layer)
    shape = (cols.shape[0],) + tuple(layer.out_shape)
    if w.kind != formats.POST:
        acc = np.matmul(weight_terms(flat, w.kind, w.bits, frac_bits)[0][0], cols)
        return acc.reshape(shape).astype(np.float64), np.zeros(shape)
    neg, m = arith.decode_signmag(flat, w.bits)
    e = np.maximum(m - 1, 0)
    exact_w = np.where(m == 0, 0.0, (1 - 2.0 * neg) * 2.0 ** (e / 2 + frac_bits))
    odd_err = np.where((m > 0) & (e % 2 == 1), 2.0 ** ((e - 1) // 2) / 2, 0.0)
    acc = np.matmul(exact_w, cols.astype(np.float64))
    err = np.matmul(odd_err, (cols != 0).astype(np.float64))
    return acc.reshape(shape), err.reshape(shape)


def _asq_stage(model, layer: Layer, prev: Layer, trace) -> dict:
    """The ASQ unit fed the float model's activation (rounded to FY bits): beta and codes."""
    name = layer.name
    a = layer.act_in.asq
    consts = a.constants()
    x = trace.x[name]
    y = arith.clamp(round_half_up(x * 2.0 ** a.FY), 0, prev.requant.hi)
    codes, beta = arith.asq_unit(y, consts)
    beta_f = trace.beta[name]
    beta_g = beta * 2.0 ** -a.G
    bound_beta = beta_error_bound(model, layer, y, x)
    s_q = a.step
    r = arith.reciprocal(a.s_code * beta, a.R).astype(np.float64)
    nd = x.ndim
    u = x / (layer.act_in.step * _per_sample(beta_f, nd))
    # u' - u: reciprocal rounding, step rounding, beta error, y rounding (docs section 6).
    rel = 1.01 * (1.0 / (2 * r) + abs(s_q / layer.act_in.step - 1)
           + bound_beta / np.minimum(beta_f, beta_g))
    bound = (np.minimum(u, a.qmax + 1) * _per_sample(rel, nd)
             + 2.0 ** -(a.FY + 1) * _per_sample(r * 2.0 ** -consts.code_shift, nd) * 2.0 ** a.FY)
    allowed = np.floor(bound + FLOAT_EPS * (1 + u)) + 1
    diff = np.abs(codes - trace.codes[name])
    return {"beta_max_err": float(np.abs(beta_g - beta_f).max()),
            "beta_bound_max": float(bound_beta.max()),
            "beta_within_bound": bool(np.all(np.abs(beta_g - beta_f) <= bound_beta)),
            "asq_bound_max": float(bound.max()),
            "asq_max_code_diff": int(diff.max()), "asq_within_bound": bool(np.all(diff <= allowed)),
            "asq_frac_differ": float((diff > 0).mean())}


def beta_error_bound(model, layer: Layer, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-sample bound on ``|beta_golden - beta_float|`` from the rounding of every constant.

    ReLU and clamps are 1-Lipschitz, so errors add: for the hidden unit ``j``
    ``|dh_j| <= 2^-(FH+1) + sum_c |dW1_jc| z_c + sum_c |W1_jc| |dz_c| + |db1_j|`` (``z`` golden's
    sum, in real units), and ``|dbeta| <= 2^-(G+1) + sum_j |dW2_j| h_j + |W2_j| |dh_j| + |db2|``.
    """
    a = layer.act_in.asq
    aq = model.get_submodule(layer.name).act_quant
    lin = [m for m in aq.adapter if isinstance(m, torch.nn.Linear)]
    hw = a.hw
    z_g = y.reshape(y.shape[0], y.shape[1], -1).sum(axis=2) * 2.0 ** -a.FY  # = HW * mean
    z_f = x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2) * hw
    dz = np.abs(z_g - z_f)
    if a.W1 is not None:
        w1 = lin[0].weight.detach().double().numpy() / hw
        b1 = lin[0].bias.detach().double().numpy()
        w1q = np.asarray(a.W1) * 2.0 ** -a.FW1
        b1q = np.asarray(a.b1) * 2.0 ** -(a.FY + a.FW1)
        dh = (2.0 ** -(a.FH + 1) + z_g @ np.abs(w1q - w1).T + dz @ np.abs(w1).T + np.abs(b1q - b1))
        h = np.maximum(0.0, z_g @ w1q.T + b1q) + dh
        w2 = lin[1].weight.detach().double().numpy().reshape(-1)
        b2 = float(lin[1].bias.detach().double())
        w2q = np.asarray(a.W2) * 2.0 ** -a.FW2
        b2q = a.b2 * 2.0 ** -(a.FH + a.FW2)
        return 2.0 ** -(a.G + 1) + h @ np.abs(w2q - w2) + dh @ np.abs(w2) + abs(b2q - b2)
    w = lin[0].weight.detach().double().numpy().reshape(-1) / hw
    b = float(lin[0].bias.detach().double())
    wq = np.asarray(a.W2) * 2.0 ** -a.FW2
    bq = a.b2 * 2.0 ** -(a.FY + a.FW2)
    return 2.0 ** -(a.G + 1) + z_g @ np.abs(wq - w) + dz @ np.abs(w) + abs(bq - b)


def beta_spread(bundle: Bundle, result: dict) -> list:
    """Per ASQ layer, how much golden's beta varies over the images of ``result``.

    One row per ASQ layer: ``layer``, ``distinct`` (distinct beta codes), ``min``, ``median``,
    ``max`` (beta as a real number, ``code / 2^G``) and ``spread`` (``(max - min) / median``).
    """
    rows = []
    for layer in bundle.layers:
        key = f"{layer.name}.beta"
        if layer.act_in.asq is None or key not in result:
            continue
        codes = np.asarray(result[key]).reshape(-1)
        beta = codes * 2.0 ** -layer.act_in.asq.G
        median = float(np.median(beta))
        rows.append({"layer": layer.name, "distinct": int(len(np.unique(codes))), "min": float(beta.min()),
                     "median": median, "max": float(beta.max()),
                     "spread": float((beta.max() - beta.min()) / median) if median > 0 else float("inf")})
    return rows


def check_checkpoint_matches(man, meta: dict, checkpoint) -> None:
    """Refuse a checkpoint whose network, scheme or BITS differ from the bundle's manifest ``man``."""
    from quant.export.networks import network_for

    network = network_for(meta, str(checkpoint)).name
    claimed = {"model": network, "scheme": meta.get("scheme"), "bits": meta.get("bits")}
    bundle = {"model": man.model, "scheme": man.scheme, "bits": man.bits}
    if claimed != bundle:
        differ = ", ".join(f"{k} {claimed[k]!r} vs {bundle[k]!r}" for k in claimed if claimed[k] != bundle[k])
        raise UserError(f"checkpoint {checkpoint} is not the bundle's model ({differ}); pass the "
                        "checkpoint the bundle was exported from")


def golden_report(bundle_path, checkpoint=None) -> dict:
    """Golden accuracy on the network's test split, and with a checkpoint the float comparison.

    Returns
    -------
    dict
        ``bundle``, ``model``, ``scheme``, ``bits``, ``n_test``, ``golden_top1`` (percent),
        ``vectors_match`` (golden reproduces the bundle's vectors), ``beta_spread`` (per ASQ layer
        over the test split, :func:`beta_spread`), ``float_top1``, ``flips``,
        ``layers`` (free-running table) and ``teacher_forced``: measured now from ``checkpoint``
        (``float_source: "checkpoint"``), or without one as recorded at export time
        (``float_source: "export"``; flips against the float predictions stored in the vectors).
    """
    bundle = read_bundle(bundle_path)
    man = bundle.manifest
    if man.format_version == GRAPH_FORMAT_VERSION:
        return graph_golden_report(bundle, bundle_path, checkpoint)
    net = network_of(man.model, f"{bundle_path}")
    _, _, x_test, y_test = net.split()
    pixels = net.pixels(x_test)
    result = run(bundle, pixels_to_codes(bundle, pixels))
    labels = y_test.numpy()
    if bundle.vectors and len(bundle.vectors["pred"]) != len(labels):
        raise UserError(f"{bundle_path}: vectors hold {len(bundle.vectors['pred'])} images, the "
                        f"{man.model} test split has {len(labels)}; re-export the bundle")
    report = {"bundle": str(bundle_path), "model": man.model, "scheme": man.scheme,
              "bits": man.bits, "n_test": int(len(labels)),
              "golden_top1": 100.0 * float((result["pred"] == labels).mean()),
              "vectors_match": all(np.array_equal(np.asarray(v), result[k].reshape(np.shape(v)))
                                   for k, v in bundle.vectors.items() if k in result),
              "beta_spread": beta_spread(bundle, result)}
    if checkpoint is None:
        # The float side as measured at export time (its predictions are in the vectors).
        acc = man.accuracy
        float_pred = np.asarray(bundle.vectors["float_pred"]) if "float_pred" in bundle.vectors else None
        report.update(float_top1=100.0 * acc["float"], float_source="export",
                      flips=int((float_pred != result["pred"]).sum()) if float_pred is not None
                      else acc["flips"],
                      layers=acc.get("layers", []), teacher_forced=acc.get("teacher_forced", []))
        return report
    from quant.checkpoint import load_checkpoint, read_checkpoint

    check_checkpoint_matches(man, read_checkpoint(checkpoint), checkpoint)
    with single_thread():
        model, _ = load_checkpoint(checkpoint)
        trace = float_trace(model, x_test)
        float_pred = trace.logits.argmax(axis=1)
        report.update(float_top1=100.0 * float((float_pred == labels).mean()),
                      float_source="checkpoint", flips=int((float_pred != result["pred"]).sum()),
                      layers=free_running_table(bundle, result, trace),
                      teacher_forced=teacher_forced(bundle, model, trace))
    return report


# ----------------------------------------------------------------------------- graphs (format 2)


def _exact_weights(node, weights: np.ndarray, frac_bits: int) -> np.ndarray:
    """A conv/fc node's weights as exact real products per input code (float64), in accumulator
    units: ``int`` the code, POT ``+-2^e``, POST ``+-2^(e/2 + F)`` (golden's table rounds the odd
    exponents)."""
    w = node.weight
    if w.kind == formats.INT:
        return weights.astype(np.float64)
    neg, m = arith.decode_signmag(weights, w.bits)
    e = np.maximum(m - 1, 0)
    power = e / 2 + frac_bits if w.kind == formats.POST else e.astype(np.float64)
    return np.where(m == 0, 0.0, (1 - 2.0 * neg) * 2.0 ** power)


def _node_accumulators(node, codes: np.ndarray, weights: np.ndarray, frac_bits: int, out_shape: tuple):
    """Golden's accumulator of ``codes`` and the one with exact real products (float64)."""
    from golden.graph import _accumulate

    acc = _accumulate(node, codes.astype(np.int64), weights.astype(np.int64), frac_bits, out_shape)
    exact_w = torch.from_numpy(_exact_weights(node, weights, frac_bits))
    x = torch.from_numpy(codes.astype(np.float64))
    if node.op == "fc":
        exact = torch.nn.functional.linear(x.reshape(x.shape[0], -1), exact_w)
    else:
        exact = torch.nn.functional.conv2d(x, exact_w, stride=node.stride, padding=node.pad, groups=node.groups)
    return acc, exact.numpy().reshape(acc.shape)


class _Recorder(torch.fx.Interpreter):
    """Runs the traced model, keeping the float64 values of the fx nodes named in ``keep``."""

    def __init__(self, gm, keep):
        super().__init__(gm)
        self.keep, self.values = set(keep), {}

    def run_node(self, n):
        out = super().run_node(n)
        if n.name in self.keep:
            self.values[n.name] = out.detach().double().numpy()
        return out


def _float_value(values: dict, name: str):
    """The float value of a (possibly exporter-made) fx name: ``<fx>_src``/``<fx>_gap`` are the
    clamped input of a max pool or flatten and a GAP before its flatten (shapes of their own)."""
    return values[name]


def graph_teacher_forced(export, model, x: torch.Tensor, batch: int = 128) -> list:
    """Every requantizer of an exported graph fed the float model's own inputs, against the bound.

    Per requantizer (a conv/fc or pool with its requantizer folded, a ``requant`` or an ``add``
    node), each term gets the float model's value: a conv/fc term the float model's input codes to
    that layer (and its beta, for an ASQ input), so golden's accumulator and the exact one are
    known; a ``y`` or pool term the float value rounded to ``y`` (the exact one unrounded). The
    golden output is compared with the float model's own value quantized to the requantizer's output
    (docs/arithmetic.md sections 6 and 7.3): ``E = sum_i (|x_i| g_i 2^-(S+G+1) + |x_i| |m_i| |g_i 2^-G
    - r_i| + |m_i| r_i (|acc_i - acc*_i| + n_i / 2)) + 2^-(S+1)`` (``r_i`` the float beta ratio,
    ``n_i`` the rounded ``y`` values a term sums); a code may differ by ``floor(E + eps) + 1``, ``y``
    and logits by ``E + 1/2 + eps``. Each ASQ unit is checked as in format 1 (:func:`_asq_stage`).
    """
    from types import SimpleNamespace

    from golden.graph import ConvNode, _per_channel
    from quant.export.graph import trace_model

    graph, weights = export.graph, export.weights
    frac_bits = graph.post_frac_bits
    gm = trace_model(model)
    keep = set()
    for info in export.requants.values():
        keep.add(info["fx"].removesuffix("_gap"))
        for term in info["terms"]:
            if term.rounded:
                keep.add(export.fx_of[_y_source(graph, term.node)])
    rows: dict = {}
    with single_thread(), torch.no_grad():
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            rec = _Recorder(gm, keep)
            trace = float_trace(model, xb, forward=rec.run)
            for name, info in export.requants.items():
                if info["fx"].endswith("_src"):  # a clamp moved before a max pool: no float value of its own
                    continue
                node = graph.node(name)
                req = node.requant
                G = req.G
                chan_nd = None
                tf_sum, ex_sum, bound = 0, 0.0, 0.0
                for i, term in enumerate(info["terms"]):
                    m = info["m"][i]
                    if term.rounded == 0:  # a conv/fc accumulator, from the float model's input codes
                        conv = graph.node(term.node)
                        layer = export.conv_layer[term.node]
                        codes = trace.codes[layer]
                        in_shape = graph.info(conv.inputs[0]).shape
                        codes = codes.reshape((codes.shape[0], *in_shape))
                        acc, exact = _node_accumulators(conv, codes, weights[term.node], frac_bits,
                                                        graph.info(term.node).shape)
                        xi, xe, err_in = acc, exact, np.abs(acc - exact)
                        ratio, g = 1.0, 1 << G
                        if term.beta:
                            a = conv.act_in.asq
                            r = trace.beta[layer] * conv.act_in.step / a.step
                            code = arith.clamp(round_half_up(r * 2.0 ** a.G), a.beta_min, a.beta_max)
                            g = np.asarray(code, dtype=np.int64).reshape((-1,) + (1,) * (acc.ndim - 1))
                            ratio = _per_sample(r, acc.ndim)
                    else:  # a y value or a pool sum of y: the float value rounded to y
                        src = _y_source(graph, term.node)
                        y_req = _requant_of(graph, src)
                        fy = y_req.frac_bits
                        v = _float_value(rec.values, export.fx_of[src]) * 2.0 ** fy
                        v = v.reshape((v.shape[0], *graph.info(src).shape))
                        y = arith.clamp(np.floor(v + 0.5).astype(np.int64), y_req.lo, y_req.hi)
                        xi, xe = _pool_like(graph, term.node, y), _pool_like(graph, term.node, v)
                        err_in = term.rounded * 0.5
                        ratio, g = 1.0, 1 << G
                    nd = xi.ndim
                    chan_nd = nd
                    mc = _per_channel_f(m, nd)
                    mult = (req.M if i == 0 else req.A)
                    tf_sum = tf_sum + xi * _per_channel(mult, nd) * g
                    ex_sum = ex_sum + mc * ratio * xe
                    bound = bound + (np.abs(xi) * g * 2.0 ** -(req.S + G + 1)
                                     + np.abs(xi) * np.abs(mc) * np.abs(g * 2.0 ** -G - ratio)
                                     + np.abs(mc) * ratio * err_in)
                t = tf_sum + (_per_channel(req.B, chan_nd) << G)
                out = arith.clamp(arith.rshift_round(t, req.S + G), req.lo, req.hi)
                exact = ex_sum + _per_channel_f(info["bias"], chan_nd)
                bound = bound + 2.0 ** -(req.S + 1)
                eps = FLOAT_EPS * (1 + np.abs(exact))
                ref = _float_value(rec.values, info["fx"].removesuffix("_gap"))
                ref = ref.reshape(out.shape)
                if req.output == "codes":
                    step = _codes_step(graph, export, name)
                    ref = np.clip(np.floor(ref / step + 0.5), req.lo, req.hi)
                    allowed = np.floor(bound + eps) + 1
                else:
                    ref = ref * 2.0 ** req.frac_bits
                    if req.lo is not None:
                        ref = np.clip(ref, req.lo, req.hi)
                    allowed = bound + 0.5 + eps
                diff = np.abs(out - ref)
                row = rows.setdefault(name, {"node": name, "op": node.op, "requant_output": req.output,
                                             "requant_max_bound": 0.0, "requant_max_diff": 0.0,
                                             "requant_within_bound": True})
                row["requant_max_bound"] = max(row["requant_max_bound"], float(bound.max()))
                row["requant_max_diff"] = max(row["requant_max_diff"], float(diff.max()))
                row["requant_within_bound"] &= bool(np.all(diff <= allowed))
            for node in graph.nodes:
                if isinstance(node, ConvNode) and node.act_in.asq is not None:
                    layer = export.conv_layer[node.name]
                    src = graph.node(node.inputs[0])
                    hi = graph.info(src.name).hi
                    stage = _asq_stage(model, SimpleNamespace(name=layer, act_in=node.act_in),
                                       SimpleNamespace(requant=SimpleNamespace(hi=hi)), trace)
                    row = rows.setdefault(f"{node.name}.asq", {"node": node.name, "op": "asq"})
                    for key, value in stage.items():
                        if key.endswith("within_bound"):
                            row[key] = row.get(key, True) and value
                        elif isinstance(value, int | float):
                            row[key] = max(row.get(key, value), value)
    return list(rows.values())


def _per_channel_f(values, nd: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape((-1,) + (1,) * (nd - 2))


def _requant_of(graph, name: str):
    """The requantizer that wrote ``name``'s values (through max pools and flattens)."""
    node = graph.node(name)
    while node.op in ("maxpool", "flatten"):
        node = graph.node(node.inputs[0])
    return node.requant


def _y_source(graph, name: str) -> str:
    """The ``y`` node a rounded term reads: the node itself, or a pool's input."""
    node = graph.node(name)
    return node.inputs[0] if node.op in ("avgpool", "gap") else name


def _pool_like(graph, name: str, y: np.ndarray) -> np.ndarray:
    """``y`` through the pool ``name`` sums (a window or the whole map), or unchanged."""
    node = graph.node(name)
    if node.op == "gap":
        return y.sum(axis=(2, 3), keepdims=True)
    if node.op == "avgpool":
        t = torch.from_numpy(np.asarray(y, dtype=np.float64))
        s = torch.nn.functional.avg_pool2d(t, node.kernel, node.stride, node.pad, count_include_pad=True)
        total = s.numpy() * node.kernel * node.kernel
        return np.rint(total).astype(np.int64) if np.asarray(y).dtype.kind in "iu" else total
    return y


def _codes_step(graph, export, name: str) -> float:
    """The step of the codes a requantizer writes: its consumers' (LSQ) input step."""
    for consumer in _code_consumers(graph, name):
        return consumer.act_in.step
    raise UserError(f"node {name!r}: codes with no LSQ consumer (report a bug)")


def _code_consumers(graph, name: str):
    """The conv/fc nodes that read ``name``'s codes (through max pools and flattens)."""
    for c in graph.consumers(name):
        node = graph.node(c)
        if node.op in ("conv", "fc"):
            yield node
        elif node.op in ("maxpool", "flatten"):
            yield from _code_consumers(graph, c)


def graph_free_running(graph, result: dict, export, model, x: torch.Tensor, batch: int = 128) -> list:
    """Per node with codes or ``y``: golden (running on its own outputs) against the float model's
    value quantized the same way: fraction of values that differ and the largest difference."""
    from quant.export.graph import trace_model

    names = [n.name for n, i in zip(graph.nodes, graph.infos, strict=True)
             if i.kind in ("codes", "y") and n.name in export.requants
             and not export.requants[n.name]["fx"].endswith("_src")]
    keep = {export.requants[n]["fx"].removesuffix("_gap") for n in names}
    gm = trace_model(model)
    stats = {n: [0, 0, 0] for n in names}  # differing, total, max diff
    with single_thread(), torch.no_grad():
        for start in range(0, len(x), batch):
            rec = _Recorder(gm, keep)
            rec.run(x[start:start + batch])
            for name in names:
                req = graph.node(name).requant
                ref = rec.values[export.requants[name]["fx"].removesuffix("_gap")]
                golden = result[name][start:start + batch]
                ref = ref.reshape(golden.shape)
                if req.output == "codes":
                    ref = np.clip(np.floor(ref / _codes_step(graph, export, name) + 0.5), req.lo, req.hi)
                else:
                    ref = np.clip(np.floor(ref * 2.0 ** req.frac_bits + 0.5), req.lo, req.hi)
                d = np.abs(golden - ref)
                s = stats[name]
                s[0] += int((d > 0).sum())
                s[1] += d.size
                s[2] = max(s[2], int(d.max()))
    return [{"node": n, "output": graph.node(n).requant.output, "differ": s[0] / max(s[1], 1), "max_diff": s[2]}
            for n, s in stats.items()]


def graph_golden_report(bundle, bundle_path, checkpoint=None) -> dict:
    """:func:`golden_report` of a format-2 bundle: golden top-1 on the network's test split (for a user's
    own network, :func:`quant.export.networks.user_network`, the test split stored in the bundle), whether
    golden reproduces the stored vectors, and the float comparison (flips, per-node free-running
    table ``nodes``, ``teacher_forced``): from ``checkpoint`` when given (its graph, exported again,
    must equal the bundle's), else as recorded at export."""
    from golden.graph import pixels_to_input, predictions, run_graph

    man = bundle.manifest
    graph = man.graph
    if man.model in NETWORKS or checkpoint is not None or "labels" not in bundle.vectors:
        net = network_of(man.model, f"{bundle_path}")
        x_train, _, x_test, y_test = net.split()
        pixels, labels = net.pixels(x_test), y_test.numpy()
    else:  # a user's own network (quant.export.networks.user_network): its test split as exported
        pixels, labels = np.asarray(bundle.vectors["pixels"]), np.asarray(bundle.vectors["labels"])
    result = run_graph(graph, bundle.weights, pixels_to_input(man, pixels))
    pred = predictions(graph, result)
    if bundle.vectors and len(bundle.vectors["pred"]) != len(labels):
        raise UserError(f"{bundle_path}: vectors hold {len(bundle.vectors['pred'])} images, the "
                        f"{man.model} test split has {len(labels)}; re-export the bundle")
    mine = {"pred": pred, "logits": result[graph.output]}
    k = len(bundle.vectors[graph.output]) if graph.output in bundle.vectors else 0
    vectors_match = True
    for key, v in bundle.vectors.items():
        got = mine.get(key, result.get(key))
        if got is None:
            continue
        got = got if key in mine else got[:k]
        vectors_match &= bool(np.array_equal(np.asarray(v), np.asarray(got).reshape(np.shape(v))))
    report = {"bundle": str(bundle_path), "model": man.model, "scheme": man.scheme, "bits": man.bits,
              "format_version": man.format_version, "n_test": int(len(labels)),
              "golden_top1": 100.0 * float((pred == labels).mean()), "vectors_match": vectors_match,
              "beta_spread": _graph_beta_spread(graph, result)}
    if checkpoint is None:
        acc = man.accuracy
        float_pred = np.asarray(bundle.vectors["float_pred"]) if "float_pred" in bundle.vectors else None
        report.update(float_top1=100.0 * acc["float"], float_source="export",
                      flips=int((float_pred != pred).sum()) if float_pred is not None else acc["flips"],
                      nodes=acc.get("nodes", []), teacher_forced=acc.get("teacher_forced", []))
        return report
    from quant.checkpoint import load_checkpoint, read_checkpoint
    from quant.export.graph import export_graph

    check_checkpoint_matches(man, read_checkpoint(checkpoint), checkpoint)
    with single_thread():
        model, _ = load_checkpoint(checkpoint)
        ex = export_graph(model, x_train, post_frac_bits=man.post_frac_bits)
        if ex.graph.to_dict() != graph.to_dict():
            raise UserError(f"checkpoint {checkpoint} does not export to the graph of {bundle_path}; pass the "
                            "checkpoint the bundle was exported from")
        trace = float_trace(model, x_test)
        float_pred = trace.logits.argmax(axis=1)
        report.update(float_top1=100.0 * float((float_pred == labels).mean()), float_source="checkpoint",
                      flips=int((float_pred != pred).sum()),
                      nodes=graph_free_running(graph, result, ex, model, x_test),
                      teacher_forced=graph_teacher_forced(ex, model, x_test))
    return report


def _graph_beta_spread(graph, result: dict) -> list:
    """:func:`beta_spread` of a graph's ASQ inputs (rows named by node)."""
    rows = []
    for node in graph.nodes:
        key = f"{node.name}.beta"
        if key not in result:
            continue
        codes = np.asarray(result[key]).reshape(-1)
        beta = codes * 2.0 ** -node.act_in.asq.G
        median = float(np.median(beta))
        rows.append({"layer": node.name, "distinct": int(len(np.unique(codes))), "min": float(beta.min()),
                     "median": median, "max": float(beta.max()),
                     "spread": float((beta.max() - beta.min()) / median) if median > 0 else float("inf")})
    return rows
