"""QONNX export: the float fake-quant model as an ONNX graph with QONNX quantizer nodes.

``asqhw export --format qonnx CHECKPOINT OUT.onnx`` writes the model that the PyTorch side trains
and evaluates (the float fake-quant model, not the integer model of the bundle) as a QONNX graph that
``qonnx.core.onnx_exec.execute_onnx`` runs (docs/qonnx.md says how each quantizer is expressed and
what a consumer can do with it):

- uniform weights (LSQ, and the 8-bit edge layers' max-scale weights): the weight already on its
  grid (``codes * step``) as a constant, through a QONNX ``Quant`` with the per-channel step as scale;
- POT / POST weights: the normalised levels ``{0, +-2^(-j)}`` as constants through a QONNX
  ``FloatQuant`` with unit scale and no mantissa bits (a power-of-two quantizer), then ``Mul`` by the
  per-channel ``alpha``. POST splits its levels by exponent parity: the even ones ``2^(-k/2) =
  2^(-j)`` are scaled by ``alpha``, the odd ones ``2^(-k/2) = sqrt(1/2) 2^(-j)`` by ``alpha sqrt(1/2)``,
  and an ``Add`` joins the two; the sum is the POST weight, bit for bit the one PyTorch uses;
- LSQ activations and the fixed-step input: a QONNX ``Quant`` with a constant scale;
- ASQ activations: the adapter in standard nodes (``GlobalAveragePool``, ``Flatten``, ``Gemm``,
  ``Relu``, ``Max`` for the floor on beta), ``Mul`` by the learned step, and a QONNX ``Quant`` whose
  scale input is that computed per-sample tensor of shape ``(N, 1, 1, 1)``.

Every quantizer rounds half up (``rounding_mode="HALF_UP"``: half away from zero, the same as the
project's ``floor(u + 1/2)`` on the values met here, see docs/qonnx.md).

The graph is written with batch 1 (what QONNX consumers expect); :func:`with_batch` sets another
batch size, so a whole test split runs in one :func:`run` call. ``--format onnx`` writes the same
model in standard ONNX nodes only (:func:`lower_to_onnx`), for onnxruntime without qonnx.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asqhw.atomic import atomic_write_bytes, check_writable
from asqhw.errors import UserError
from golden import formats

#: The ONNX domain of QONNX's quantizer nodes (``Quant``, ``FloatQuant``).
QONNX_DOMAIN = "qonnx.custom_op.general"
#: ONNX opset of the standard nodes: QONNX's preferred one (``Unsqueeze`` takes ``axes`` as an attribute).
ONNX_OPSET = 11
QONNX_OPSET = 1
#: The rounding of every quantizer node: half away from zero, equal to the project's half up on
#: unsigned values and on values that are never ties (docs/qonnx.md).
ROUNDING_MODE = "HALF_UP"
INPUT = "pixels"
OUTPUT = "logits"
SUFFIX = ".onnx"


def _const(name: str, value, dtype=np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


class _Graph:
    """Nodes and initializers collected in order (the order is topological by construction)."""

    def __init__(self):
        self.nodes = []
        self.initializers = []

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.initializers.append(_const(name, value, dtype))
        return name

    def node(self, op: str, inputs: list, output: str, domain: str = "", **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def quant(self, x: str, scale: str, bits: int, signed: bool, out: str) -> str:
        """QONNX ``Quant(x, scale, 0, bits)``: ``clamp(round(x / scale), Q_N, Q_P) * scale``."""
        zero = self.const(f"{out}.zeropt", 0.0)
        width = self.const(f"{out}.bitwidth", float(bits))
        return self.node("Quant", [x, scale, zero, width], out, domain=QONNX_DOMAIN,
                         signed=int(signed), narrow=0, rounding_mode=ROUNDING_MODE)

    def power_quant(self, levels: str, scale: str, top_shift: int, out: str) -> str:
        """``Mul(FloatQuant(levels), scale)``: a QONNX ``FloatQuant`` with unit scale, no mantissa bits
        and exponents ``-top_shift .. 0`` (the values ``{0, +-2^(-j)}``, ``j = 0 .. top_shift``; qonnx
        types its output ``FLOAT<E,0,bias>``), then the per-channel scale."""
        bias = top_shift + 1  # smallest normal exponent 1 - bias = -top_shift
        exponent_bits = max(1, math.ceil(math.log2(top_shift + 2)))  # largest exponent 2^E - 1 - bias >= 0
        inputs = [levels, self.const(f"{out}.unit_scale", 1.0),
                  self.const(f"{out}.exponent_bitwidth", float(exponent_bits)),
                  self.const(f"{out}.mantissa_bitwidth", 0.0), self.const(f"{out}.exponent_bias", float(bias)),
                  self.const(f"{out}.max_val", 1.0)]
        power = self.node("FloatQuant", inputs, f"{out}.levels", domain=QONNX_DOMAIN, rounding_mode=ROUNDING_MODE,
                          has_inf=0, has_nan=0, has_subnormal=0, saturation=1)
        return self.node("Mul", [power, scale], out)


def _per_channel_shape(weight: torch.Tensor) -> tuple:
    return (weight.shape[0],) + (1,) * (weight.dim() - 1)


@torch.no_grad()
def _weight(g: _Graph, name: str, layer) -> str:
    """The quantized weight of ``layer`` as a QONNX quantizer of constants already on the grid."""
    wq = layer.weight_quant
    w_hat = wq(layer.weight).detach().float()  # exactly the weight the float model convolves with
    shape = _per_channel_shape(w_hat)
    kind = getattr(wq, "kind", formats.INT)
    if kind == formats.INT:
        step = wq.step.detach().float().reshape(shape)
        return g.quant(g.const(f"{name}.weight", w_hat.numpy()), g.const(f"{name}.weight_step", step.numpy()),
                       wq.bits, True, f"{name}.weight_q")
    alpha = wq.alpha.detach().clamp_min(torch.finfo(torch.float32).eps).float().reshape(shape)
    top = wq.top_exponent  # K: magnitudes 2^(-k) (POT) or 2^(-k/2) (POST), k = 0 .. K
    magnitude = wq.codes(layer.weight) & ((1 << (wq.bits - 1)) - 1)  # 0 = zero, else K - k + 1
    k = top - (magnitude - 1)
    sign = torch.sign(w_hat)
    if kind == formats.POT:
        levels = torch.where(magnitude > 0, sign * torch.ldexp(torch.ones_like(w_hat), -k), torch.zeros_like(w_hat))
        return g.power_quant(g.const(f"{name}.weight_levels", levels.numpy()),
                             g.const(f"{name}.weight_alpha", alpha.numpy()), top, f"{name}.weight_q")
    # POST: even k = 2j gives alpha 2^(-j); odd k = 2j + 1 gives (alpha sqrt(1/2)) 2^(-j), the product
    # PyTorch forms too (its level is the float32 2^(-j) sqrt(1/2), a power of two times sqrt(1/2)).
    odd = (magnitude > 0) & (k % 2 == 1)
    even = (magnitude > 0) & ~odd
    power = sign * torch.ldexp(torch.ones_like(w_hat), -(k // 2))  # 2^(-j)
    zero = torch.zeros_like(w_hat)
    odd_scale = alpha * torch.tensor(math.sqrt(0.5), dtype=torch.float32)
    ternary = top == 0  # 2 bits: no odd exponent, the even part is the whole weight
    q_even = g.power_quant(g.const(f"{name}.weight_even", torch.where(even, power, zero).numpy()),
                           g.const(f"{name}.weight_alpha", alpha.numpy()), top // 2,
                           f"{name}.weight_q" if ternary else f"{name}.weight_even_q")
    if ternary:
        return q_even
    q_odd = g.power_quant(g.const(f"{name}.weight_odd", torch.where(odd, power, zero).numpy()),
                          g.const(f"{name}.weight_alpha_odd", odd_scale.numpy()), (top - 1) // 2,
                          f"{name}.weight_odd_q")
    return g.node("Add", [q_even, q_odd], f"{name}.weight_q")


@torch.no_grad()
def _activation(g: _Graph, name: str, aq, x: str, rank: int) -> str:
    """The quantized input of layer ``name``: QONNX ``Quant`` with a constant or (ASQ) computed scale."""
    step = g.const(f"{name}.act_step", aq.step.detach().float().clamp_min(torch.finfo(torch.float32).eps).numpy())
    if not hasattr(aq, "adapter"):
        return g.quant(x, step, aq.bits, aq.signed, f"{name}.input_q")
    if rank > 2:
        pooled = g.node("GlobalAveragePool", [x], f"{name}.asq.gap")
        z = g.node("Flatten", [pooled], f"{name}.asq.z", axis=1)
    else:
        z = x
    for index, module in enumerate(aq.adapter):
        out = f"{name}.asq.adapter.{index}"
        if isinstance(module, torch.nn.Linear):
            z = g.node("Gemm", [z, g.const(f"{out}.weight", module.weight.detach().float().numpy()),
                                g.const(f"{out}.bias", module.bias.detach().float().numpy())], out, transB=1)
        elif isinstance(module, torch.nn.ReLU):
            z = g.node("Relu", [z], out)
        else:
            raise UserError(f"{name}: the ASQ adapter holds a {type(module).__name__}, which QONNX export "
                            "does not know (it knows Linear and ReLU)")
    from quant.quantizers import BETA_FLOOR

    beta = g.node("Max", [z, g.const(f"{name}.asq.beta_floor", BETA_FLOOR)], f"{name}.asq.beta")
    if rank > 2:
        beta = g.node("Unsqueeze", [beta], f"{name}.asq.beta_nchw", axes=list(range(2, rank)))
    scale = g.node("Mul", [step, beta], f"{name}.act_scale")
    return g.quant(x, scale, aq.bits, aq.signed, f"{name}.input_q")


def _check_supported(model, net) -> None:
    from quant.layers import QConv2d, QLinear

    for position, name in enumerate(net.layer_names):
        layer = getattr(model, name, None)
        last = position == len(net.layer_names) - 1
        expected = QLinear if last else QConv2d
        if not isinstance(layer, expected):
            raise UserError(f"QONNX export knows a chain of quantized conv-BN-ReLU layers ending in a "
                            f"Linear; layer {name!r} is {type(layer).__name__}")
        if not last and layer.padding_mode != "zeros":
            raise UserError(f"layer {name!r} pads with {layer.padding_mode!r}; QONNX export writes zero padding only")


@torch.no_grad()
def build_qonnx(model, meta: dict):
    """The QONNX ``ModelProto`` of a quantized model of a registered network (batch 1).

    Input ``pixels``: images as ``pixels / pixel_max``, shaped ``(N, C, H, W)`` (what the PyTorch
    model takes); output ``logits``. Tensor names follow the layers: ``conv2.input_q`` (quantized
    input), ``conv2.act_scale`` (ASQ's per-sample step), ``conv2.weight_q`` (quantized weight).
    """
    from onnx import TensorProto, helper

    from quant.export.networks import network_for

    net = network_for(meta, "checkpoint")
    _check_supported(model, net)
    model.eval()
    g = _Graph()
    # The model's own normalisation, in its own float32 operations: (x * pixel_max - zero) / zero.
    zero = float(model.input_zero)
    x = g.node("Mul", [INPUT, g.const("normalise.pixel_max", float(net.pixel_max))], "normalise.scaled")
    x = g.node("Sub", [x, g.const("normalise.zero", zero)], "normalise.centred")
    x = g.node("Div", [x, g.const("normalise.divisor", zero)], "normalise.out")
    names = net.layer_names
    for position, name in enumerate(names):
        layer = getattr(model, name)
        last = position == len(names) - 1
        if last:
            x = g.node("Flatten", [x], f"{name}.flat", axis=1)
        xq = _activation(g, name, layer.act_quant, x, rank=2 if last else 4)
        w = _weight(g, name, layer)
        inputs = [xq, w]
        if layer.bias is not None:
            inputs.append(g.const(f"{name}.bias", layer.bias.detach().float().numpy()))
        if last:
            x = g.node("Gemm", inputs, OUTPUT, transB=1)
            continue
        pads = [int(p) for p in layer.padding] * 2
        x = g.node("Conv", inputs, f"{name}.out", kernel_shape=list(layer.kernel_size), pads=pads,
                   strides=list(layer.stride), dilations=list(layer.dilation), group=int(layer.groups))
        bn_name = net.bn_of[name]
        if bn_name is not None:
            bn = getattr(model, bn_name)
            bn_inputs = [g.const(f"{bn_name}.{field}", getattr(bn, field).detach().float().numpy())
                         for field in ("weight", "bias", "running_mean", "running_var")]
            x = g.node("BatchNormalization", [x, *bn_inputs], f"{bn_name}.out", epsilon=float(bn.eps))
        x = g.node("Relu", [x], f"{name}.relu")
    graph = helper.make_graph(
        g.nodes, f"asqhw-{net.name}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, *net.input_shape])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, net.out_shapes[names[-1]][0]])],
        initializer=g.initializers,
    )
    proto = helper.make_model(graph, producer_name="asqhw", opset_imports=[
        helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(QONNX_DOMAIN, QONNX_OPSET)])
    props = {"asqhw.model": net.name, "asqhw.scheme": str(meta["scheme"]), "asqhw.bits": str(meta["bits"]),
             "asqhw.input": f"pixels / {net.pixel_max}, shaped (N, {', '.join(map(str, net.input_shape))})",
             "asqhw.rounding": "round half up (HALF_UP on unsigned or tie-free values)"}
    helper.set_model_props(proto, props)
    return with_batch(proto, 1)


def with_batch(proto, batch: int):
    """A copy of ``proto`` whose input and output have batch ``batch``, shapes inferred by qonnx
    (its executor needs every tensor's shape)."""
    from onnx import ModelProto
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    copy = ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.value_info[:]
    for value in (*copy.graph.input, *copy.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = int(batch)
    return ModelWrapper(copy).transform(InferShapes()).model


def run(proto, x: np.ndarray, full: bool = False) -> dict:
    """Run the QONNX model on images ``x`` (``pixels / pixel_max``, ``(N, C, H, W)``) with qonnx's
    executor; the output tensors, or with ``full`` every tensor of the graph."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    x = np.ascontiguousarray(x, dtype=np.float32)
    model = ModelWrapper(with_batch(proto, len(x)))
    return execute_onnx(model, {INPUT: x}, return_full_exec_context=full)


def lower_to_onnx(proto):
    """The QONNX model in standard ONNX nodes only, for a plain ONNX runtime (batch size free: ``N``).

    The weight quantizers, whose inputs are constants, are folded into constant weights (qonnx's
    ``FoldConstants`` runs them with its executor, so the weights are the QONNX model's, bit for
    bit). Each activation ``Quant(x, s, 0, b)`` becomes ``Div(x, s)``, ``Clip`` to its code range,
    ``Sign(u) * Floor(Abs(u) + 1/2)`` (its ``HALF_UP`` rounding) and ``Mul`` by ``s``: the same
    operations in the same order as qonnx's executor, so the two agree exactly (an ASQ scale stays
    the computed tensor). What a QONNX consumer reads from the quantizer nodes (bit widths, the POST
    levels) is lost.
    """
    from onnx import helper, numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import RemoveUnusedTensors

    model = ModelWrapper(with_batch(proto, 1)).transform(FoldConstants(exclude_op_types=[]))
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    g = _Graph()
    for node in graph.node:
        if node.domain != QONNX_DOMAIN:
            g.nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("rounding_mode", b"ROUND")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        zero, width = inits.get(node.input[2]), inits.get(node.input[3])
        if node.op_type != "Quant" or mode != ROUNDING_MODE or zero is None or np.any(zero != 0) or width is None:
            raise UserError(f"node {node.name} ({node.op_type}) has no standard-ONNX lowering here: only "
                            f"activation Quant nodes with zero point 0, a constant bit width and {ROUNDING_MODE}")
        bits, signed, narrow = int(width), bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
        low = -(1 << (bits - 1)) + int(narrow) if signed else 0
        high = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - int(narrow)
        x, scale = node.input[0], node.input[1]
        out = node.output[0]
        u = g.node("Div", [x, scale], f"{out}.u")
        bounds = [g.const(f"{out}.low", float(low)), g.const(f"{out}.high", float(high))]
        u = g.node("Clip", [u, *bounds], f"{out}.clipped")
        half = g.node("Add", [g.node("Abs", [u], f"{out}.abs"), g.const(f"{out}.half", 0.5)], f"{out}.abs_half")
        sign, floor = g.node("Sign", [u], f"{out}.sign"), g.node("Floor", [half], f"{out}.floor")
        code = g.node("Mul", [sign, floor], f"{out}.code")
        g.node("Mul", [code, scale], out)
    del graph.node[:]
    graph.node.extend(g.nodes)
    graph.initializer.extend(g.initializers)
    del graph.value_info[:]
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    model = model.transform(RemoveUnusedTensors())
    proto = model.model
    kept = [op for op in proto.opset_import if op.domain != QONNX_DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    return proto


def run_onnxruntime(proto, x: np.ndarray) -> np.ndarray:
    """The logits of a standard-ONNX model (:func:`lower_to_onnx`) on images ``x``, from onnxruntime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # one summation order, whatever the machine
    # no fused nodes (Conv with BatchNormalization, ...): each node rounds as qonnx's executor does
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]


@dataclass
class Agreement:
    """The QONNX model against the float fake-quant model on one data split."""

    n: int                 # images
    agree: int             # predictions equal
    max_abs_logit: float   # largest |logit difference|
    logit_scale: float     # largest |logit| of the float model (to judge the difference by)
    weights_exact: dict    # layer -> the executor's quantized weight equals PyTorch's bit for bit
    codes_agree: dict      # layer -> fraction of input codes equal to the float model's
    codes_differ: dict     # layer -> (input codes that differ, input codes)
    step_rel_err: dict     # ASQ layer -> largest relative difference of the per-sample step s*beta
    # standard-ONNX export only: largest |logit difference| of onnxruntime on the lowered model
    # against qonnx's executor on the QONNX model
    lowered_vs_qonnx: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        codes = ", ".join(f"{k} {d} of {n}" for k, (d, n) in self.codes_differ.items())
        exact = all(self.weights_exact.values())
        return (f"predictions agree on {self.agree} of {self.n} images, max |dlogit| {self.max_abs_logit:.2e} "
                f"(logits up to {self.logit_scale:.1f}); weights {'bit-exact' if exact else 'NOT bit-exact'}; "
                f"layer input codes that differ: {codes}"
                + ("" if self.lowered_vs_qonnx is None else "; onnxruntime on the standard-ONNX model vs "
                   f"qonnx's executor: max |dlogit| {self.lowered_vs_qonnx:.2e}"))


@torch.no_grad()
def compare(proto, model, x: torch.Tensor) -> Agreement:
    """Run the QONNX model (qonnx executor) and the float model on ``x``; measure their agreement
    per prediction, logit, quantized weight, layer input code and ASQ step."""
    from quant.export.trace import float_trace, single_thread
    from quant.quantize import quantized_layers

    with single_thread():
        trace = float_trace(model, x)
        context = run(proto, x.numpy(), full=True)
        weights_exact, codes_agree, codes_differ, step_err = {}, {}, {}, {}
        for name, layer in quantized_layers(model):
            w_torch = layer.weight_quant(layer.weight).detach().float().numpy()
            weights_exact[name] = bool(np.array_equal(context[f"{name}.weight_q"], w_torch))
            aq = layer.act_quant
            scale = context.get(f"{name}.act_scale")
            if scale is None:
                scale = context[f"{name}.act_step"]
            else:
                s_torch = (aq.step * aq.beta(torch.from_numpy(trace.x[name]).float())).double().numpy()
                step_err[name] = float(np.max(np.abs(scale.reshape(-1) / s_torch - 1)))
            codes = np.floor(context[f"{name}.input_q"].astype(np.float64) / scale + 0.5)
            equal = codes.reshape(trace.codes[name].shape) == trace.codes[name]
            codes_agree[name] = float(np.mean(equal))
            codes_differ[name] = (int(equal.size - equal.sum()), int(equal.size))
    logits = context[OUTPUT].astype(np.float64)
    return Agreement(
        n=len(x), agree=int((logits.argmax(1) == trace.logits.argmax(1)).sum()),
        max_abs_logit=float(np.max(np.abs(logits - trace.logits))),
        logit_scale=float(np.max(np.abs(trace.logits))),
        weights_exact=weights_exact, codes_agree=codes_agree, codes_differ=codes_differ, step_rel_err=step_err)


def check_out(out, update_shipped: bool = False) -> Path:
    """Refuse an output path before any work: not ``*.onnx``, a folder, inside the shipped models
    folder without ``update_shipped``, or not writable."""
    from quant.export.build import check_shipped

    out = Path(out)
    if out.suffix != SUFFIX:
        raise UserError(f"{out}: a QONNX model is written to a {SUFFIX} file; give OUTDIR a name ending in {SUFFIX}")
    check_shipped(out, update_shipped)
    check_writable(out, what="the QONNX model", fix=f"give OUTDIR a writable {SUFFIX} path")
    return out


def export_qonnx_checkpoint(checkpoint, out, update_shipped: bool = False, standard: bool = False) -> Agreement:
    """``asqhw export --format qonnx CHECKPOINT OUT``: write the QONNX model of a checkpoint to
    ``OUT`` atomically, after measuring its agreement with the float model on the test split
    (returned, and recorded in the model's ``asqhw.agreement`` property).

    ``standard`` (``--format onnx``): write the model lowered to standard ONNX nodes
    (:func:`lower_to_onnx`) instead, checked with onnxruntime against the QONNX model too.
    """
    import json

    from onnx import helper

    from quant.checkpoint import model_of, read_checkpoint
    from quant.export.networks import network_for
    from quant.schemes import FLOAT_SCHEME

    out = check_out(out, update_shipped)
    meta = read_checkpoint(checkpoint)
    net = network_for(meta, str(checkpoint))
    if meta.get("scheme") in (None, FLOAT_SCHEME):
        raise UserError(f"{checkpoint}: field 'scheme' is {meta.get('scheme')!r}; QONNX export needs a "
                        "quantized checkpoint (train with --scheme asq, asq+post, ...)")
    model, meta = model_of(meta, checkpoint)
    proto = build_qonnx(model, meta)
    _, _, x_test, _ = net.split()
    agreement = compare(proto, model, x_test)
    if standard:
        qonnx_logits = run(proto, x_test.numpy())[OUTPUT]
        proto = lower_to_onnx(proto)
        agreement.lowered_vs_qonnx = float(np.max(np.abs(run_onnxruntime(proto, x_test.numpy()) - qonnx_logits)))
    props = {p.key: p.value for p in proto.metadata_props}
    props["asqhw.agreement"] = json.dumps({"split": net.split_name, **agreement.as_dict()})
    del proto.metadata_props[:]
    helper.set_model_props(proto, props)
    atomic_write_bytes(out, proto.SerializeToString())
    return agreement
