"""Any network of supported layers, traced with torch.fx, as a format-2 graph (``golden.graph``).

:func:`export_graph` traces a model built by :func:`quant.quantize.quantize_model` (``QConv2d`` and
``QLinear`` kept as leaves), follows the float values through the traced graph and emits the integer
nodes of ``docs/arithmetic.md`` section 7:

- every ``QConv2d``/``QLinear`` becomes a ``conv``/``fc`` node whose raw accumulator is a *pending*
  value: a real affine form ``sum_i coef_i,c * x_i + bias_c`` of at most two integer nodes
  (``terms``), with an optional real clamp;
- BatchNorm (eval statistics) multiplies the coefficients and the bias of a pending value (folding);
  ReLU, ReLU6, hardtanh and ``clamp`` set its clamp; a residual add merges the terms of its operands
  (a clamped operand is first written as ``y``, the form the float model adds unquantized);
- a pending value becomes an integer node only where a consumer needs it in a format: the codes of
  an LSQ input quantizer, the ``y`` of an ASQ unit, ``y`` for a skip or a pool, or the logits. One
  term gives a ``requant`` node (folded into its conv/fc, or its pool, when that is its only
  consumer), two an ``add`` node; every constant is rounded once (``round_half_up``);
- max pool and flatten commute with those quantizations (monotone, element-wise), so they are
  applied to the materialized value of their input; average pools and GAP sum ``y`` and fold the
  ``1/n`` into the multiplier of the consumer's requantizer.

The constants follow format 1's formulas and float64 evaluation order (:mod:`quant.export.fold`),
so a chain exported as a graph computes the same integers as its format-1 bundle. The operations
before the first quantized layer (the model's input normalisation) are replaced by the graph's
``input`` node (its codes come from the bundle's pixel table). Anything else is refused with a
:class:`asqhw.errors.UserError` naming the operation and the fx node where it occurs.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from asqhw.errors import UserError
from golden import formats
from golden.bundle import AsqParams
from golden.formats import BETA_FRAC, LOGIT_FRAC, M_BITS, Y_BITS, Y_MAX
from golden.graph import Graph
from quant.export.fold import asq_entry, fit_frac_bits, frac_bits_for_range, round_half_up, weight_entry
from quant.export.trace import float_trace, single_thread
from quant.layers import QConv2d, QLinear

#: Modules and functions that pass their input through in eval mode.
_IDENTITY_MODULES = (nn.Dropout, nn.Identity)
_ELEMENTWISE_PRE = (operator.mul, operator.sub, operator.add, operator.truediv, operator.neg, torch.mul, torch.sub,
                    torch.add, torch.div)
_ELEMENTWISE_PRE_METHODS = ("mul", "sub", "add", "div", "neg", "__mul__", "__sub__", "__add__", "__truediv__")


class _Tracer(fx.Tracer):
    """fx tracer keeping the quantized layers as leaves (their quantizers are not traced)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QConv2d | QLinear) or super().is_leaf_module(m, qualname)


def trace_model(model: nn.Module) -> fx.GraphModule:
    """``model`` traced by torch.fx (quantized layers as leaves); :class:`UserError` when it cannot be."""
    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        raise UserError(f"torch.fx cannot trace the model ({type(err).__name__}: {err}); the graph exporter "
                        "takes networks without data-dependent control flow") from None
    return fx.GraphModule(model, graph)


# ----------------------------------------------------------------------------- values


@dataclass
class Term:
    """One integer node in a pending value: ``real = mult * scale_in * w_scale * 2^exp2 * x`` per
    channel (format 1's float64 order; ``mult`` None is 1, ``w_scale`` None is 1), times the node's
    beta when ``beta`` (an ASQ conv's raw accumulator)."""

    node: str
    scale_in: float
    w_scale: np.ndarray | None
    exp2: int
    beta: bool = False
    mult: np.ndarray | None = None
    #: teacher-forced error bookkeeping: how many rounded elements this term sums (1: one ``y`` or
    #: code, n: a pool sum), 0 for an exact accumulator.
    rounded: int = 0

    def coef(self, out_frac: int, s_next: float) -> np.ndarray:
        """The term's multiplier in output units, before the shift (format 1's ``float_requant``)."""
        m = self.scale_in if self.mult is None else self.mult * self.scale_in
        if self.w_scale is not None:
            m = m * self.w_scale
        return np.asarray(m * 2.0 ** (out_frac + self.exp2) / s_next, dtype=np.float64)


@dataclass
class Pending:
    """``sum(terms) + bias`` per channel, clamped to ``[lo, hi]`` (real; None: no bound)."""

    terms: list
    bias: np.ndarray
    shape: tuple
    lo: float | None = None
    hi: float | None = None

    @property
    def clamped(self) -> bool:
        return self.lo is not None or self.hi is not None


@dataclass
class Deferred:
    """``maxpool`` or ``flatten`` of ``src``: applied after ``src`` is materialized (they commute with
    every quantization: monotone, element-wise)."""

    op: str
    src: object
    src_fx: str
    shape: tuple
    params: dict = field(default_factory=dict)


class Raw:
    """The network input, possibly normalised element-wise: only the first quantized layer reads it."""


@dataclass(frozen=True)
class Format:
    """What a consumer needs: ``codes`` (an LSQ quantizer's step and range), ``y`` or ``logits``."""

    kind: str
    step: float = 1.0
    q_n: int = 0
    q_p: int = 0
    unsigned: bool = False  # y: the consumer (an ASQ unit) needs y >= 0

    @property
    def tag(self) -> str:
        return {"codes": f"codes_{self.q_p - self.q_n + 1}", "y": "y", "logits": "logits"}[self.kind]


@dataclass
class GraphExport:
    """An exported graph: the validated :class:`golden.graph.Graph`, its weight codes by conv/fc
    node, and what fidelity needs to relate nodes to the float model (``fx_of``: integer node ->
    the fx node whose float value it quantizes; ``conv_layer``: conv/fc node -> module name;
    ``requants``: requantizer node -> its terms in float, see :func:`quant.export.fidelity`)."""

    graph: Graph
    weights: dict
    fx_of: dict
    conv_layer: dict
    requants: dict


# ----------------------------------------------------------------------------- statistics


class _Stats(fx.Interpreter):
    """Per fx node: shape (without the batch) and min/max over every batch run."""

    def __init__(self, gm):
        super().__init__(gm)
        self.shape, self.lo, self.hi = {}, {}, {}

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.dim() >= 1:
            self.shape[n.name] = tuple(out.shape[1:])
            lo, hi = float(out.min()), float(out.max())
            self.lo[n.name] = min(lo, self.lo.get(n.name, lo))
            self.hi[n.name] = max(hi, self.hi.get(n.name, hi))
        return out


@torch.no_grad()
def node_stats(model, gm: fx.GraphModule, x: torch.Tensor, batch: int = 256):
    """The fx nodes' statistics and the float trace (:func:`quant.export.trace.float_trace`) of ``x``,
    in one pass."""
    stats = _Stats(gm)
    trace = float_trace(model, x, batch=batch, forward=stats.run)
    return stats, trace


# ----------------------------------------------------------------------------- the exporter


def _fx_where(n: fx.Node) -> str:
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    return f"fx node {n.name!r} ({n.op} {target})"


def _op_name(n: fx.Node, modules: dict) -> str:
    if n.op == "call_module":
        return type(modules[n.target]).__name__
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    name = getattr(n.target, "__name__", str(n.target))
    for prefix, space in (("torch", torch), ("torch.nn.functional", F), ("operator", operator)):
        if getattr(space, name, None) is n.target:
            return f"{prefix}.{name}"
    return name


def _pair(v, what: str, where: str) -> int:
    if isinstance(v, tuple | list):
        if len(set(v)) != 1:
            raise UserError(f"{where}: {what} {tuple(v)} is not square; the graph takes k x k windows only")
        v = v[0]
    return int(v)


class _Exporter:
    def __init__(self, model, gm, stats, trace, post_frac_bits):
        self.model, self.gm, self.stats, self.trace = model, gm, stats, trace
        self.frac_bits = post_frac_bits
        self.modules = dict(gm.named_modules())
        self.nodes: dict = {}        # graph node name -> JSON object (insertion order: topological)
        self.kinds: dict = {}        # graph node name -> (kind, frac_bits, lo >= 0)
        self.weights: dict = {}
        self.cache: dict = {}        # (fx name, Format) -> graph node name
        self.fx_of: dict = {}
        self.conv_layer: dict = {}
        self.requants: dict = {}
        self.env: dict = {}
        self.fx_nodes = {n.name: n for n in gm.graph.nodes}
        self.first_layer = next((name for name, m in model.named_modules() if isinstance(m, QConv2d | QLinear)),
                                None)
        if self.first_layer is None:
            raise UserError("the model has no quantized layer: export a model built by quantize_model")

    # --- emitting nodes

    def _name(self, base: str) -> str:
        name = base.replace(".", "_")
        k = 1
        while name in self.nodes:
            k += 1
            name = f"{base.replace('.', '_')}_{k}"
        return name

    def _add_node(self, obj: dict, kind: tuple) -> str:
        self.nodes[obj["name"]] = obj
        self.kinds[obj["name"]] = kind
        return obj["name"]

    def _alias(self, name: str, fx_name: str) -> None:
        """Float statistics for a value the exporter names itself (a clamped max pool input, a GAP
        before its flatten): those of ``fx_name``, whose maximum is the same."""
        for table in (self.stats.shape, self.stats.lo, self.stats.hi):
            table[name] = table[fx_name]

    # --- materialization

    def materialize(self, value, fmt: Format, fx_name: str, where: str) -> str:
        """The graph node holding ``value`` (the float value of fx node ``fx_name``) in ``fmt``,
        emitted once per value and format."""
        name = self._materialize(value, replace(fmt, unsigned=False), fx_name, where)
        if fmt.unsigned and not self.kinds[name][2]:
            raise UserError(f"{where}: an ASQ input takes a non-negative activation (after a ReLU); its input "
                            f"{fx_name!r} can be negative")
        return name

    def _materialize(self, value, fmt: Format, fx_name: str, where: str) -> str:
        key = (fx_name, fmt)
        if key in self.cache:
            return self.cache[key]
        if isinstance(value, Raw):
            if fmt.kind != "codes":
                raise UserError(f"{where}: the network input reaches a consumer that is not the first quantized "
                                "layer's LSQ quantizer")
            name = "input"
        elif isinstance(value, Deferred):
            src = self._materialize(value.src, fmt, value.src_fx, where)
            name = self._name(fx_name)
            self._add_node({"name": name, "op": value.op, "inputs": [src], **value.params}, self.kinds[src])
            self.fx_of[name] = fx_name
        elif len(value.terms) == 2 and fmt.kind != "y" and self._users(fx_name) > 1:
            # A sum read in several formats (a block output: y for the next skip, codes for the next
            # conv) is added once, into y, and requantized from there.
            y = self._materialize(value, Format("y"), fx_name, where)
            term = Term(node=y, scale_in=1.0, w_scale=None, exp2=-self.kinds[y][1], rounded=1)
            name = self._requantize(replace(value, terms=[term], bias=np.zeros(value.shape[0])), fmt, fx_name, where)
        else:
            name = self._requantize(value, fmt, fx_name, where)
        self.cache[key] = name
        return name

    def _users(self, fx_name: str) -> int:
        node = self.fx_nodes.get(fx_name)
        return 1 if node is None else len(node.users)

    def _y_frac(self, fx_name: str) -> int:
        top = max(abs(self.stats.lo[fx_name]), abs(self.stats.hi[fx_name]))
        return frac_bits_for_range(top, Y_BITS)

    def _requantize(self, value: Pending, fmt: Format, fx_name: str, where: str) -> str:
        if len(value.terms) > 2:
            raise UserError(f"{where}: a sum of {len(value.terms)} integer values; the graph adds two at a time")
        if fmt.kind == "logits":
            if value.clamped:
                raise UserError(f"{where}: the network's output is clamped (a ReLU/clamp before the output); "
                                "logits are not clamped in the integer model")
            s_next, out_frac, lo, hi, output = 1.0, LOGIT_FRAC, None, None, "logits"
        elif fmt.kind == "y":
            out_frac = self._y_frac(fx_name)
            s_next, output = 1.0, "y"
            lo, hi = -(Y_MAX + 1), Y_MAX
            lo, hi = self._bounds(value, lo, hi, 2.0 ** out_frac)
        else:
            s_next, out_frac, output = fmt.step, 0, "codes"
            lo, hi = self._bounds(value, fmt.q_n, fmt.q_p, 1.0 / fmt.step)
        if lo is not None and lo > hi:
            raise UserError(f"{where}: the clamp leaves no value in the consumer's range {lo}..{hi}")
        G = BETA_FRAC if any(t.beta for t in value.terms) else 0
        channels = value.shape[0]
        ms = [np.broadcast_to(t.coef(out_frac, s_next), (channels,)).copy() for t in value.terms]
        bias = np.broadcast_to(np.asarray(value.bias * 2.0 ** out_frac / s_next, dtype=np.float64), (channels,))
        S = fit_frac_bits(np.concatenate(ms), M_BITS)
        if S < 0:
            raise UserError(f"{where}: requantizer multiplier too large for {M_BITS} bits")
        req = {"M": round_half_up(ms[0] * 2.0 ** S).tolist()}
        if len(ms) == 2:
            req["A"] = round_half_up(ms[1] * 2.0 ** S).tolist()
        req.update(B=round_half_up(bias * 2.0 ** S).tolist(), S=S, G=G, output=output, lo=lo, hi=hi,
                   frac_bits=out_frac)
        op = "add" if len(value.terms) == 2 else "requant"
        name = self._name(f"{fx_name}_{fmt.tag}")
        kind = (output, out_frac, lo is not None and lo >= 0)
        self._add_node({"name": name, "op": op, "inputs": [t.node for t in value.terms], "requant": req}, kind)
        self.fx_of[name] = fx_name
        self.requants[name] = {"terms": value.terms, "m": ms, "bias": bias, "fx": fx_name}
        return name

    @staticmethod
    def _bounds(value: Pending, lo: int, hi: int, per_unit: float):
        """The requantizer's integer clamp: the consumer's range, narrowed by the value's real clamp
        (``q(v) = floor(v / unit + 1/2)``: quantization is monotone, so clamping commutes with it)."""
        if value.lo is not None:
            lo = max(lo, int(math.floor(value.lo * per_unit + 0.5)))
        if value.hi is not None:
            hi = min(hi, int(math.floor(value.hi * per_unit + 0.5)))
        return lo, hi

    def as_terms(self, arg: fx.Node, where: str) -> tuple[list, np.ndarray]:
        """A residual add's operand as terms and a bias: its own terms when it is an unclamped pending
        value of one term that only this add reads (conv2's or the 1x1 shortcut's accumulator, BN
        folded), else its ``y`` (a block input: the float model adds it unquantized)."""
        value = self.env[arg.name]
        if isinstance(value, Raw):
            raise UserError(f"{where}: the network input feeds an add; only the first quantized layer may read it")
        if isinstance(value, Pending) and not value.clamped and len(value.terms) == 1 and len(arg.users) == 1:
            return list(value.terms), value.bias
        name = self.materialize(value, Format("y"), arg.name, where)
        frac = self.kinds[name][1]
        return [Term(node=name, scale_in=1.0, w_scale=None, exp2=-frac, rounded=1)], np.zeros(value.shape[0])

    # --- fx nodes

    def run(self, x_shape: tuple) -> str:
        out_name = None
        for n in self.gm.graph.nodes:
            where = _fx_where(n)
            if n.op == "placeholder":
                if self.env:
                    raise UserError(f"{where}: the model takes more than one input")
                self.env[n.name] = Raw()
                self._add_node({"name": "input", "op": "input", "inputs": [], "shape": list(x_shape),
                                "bits": 0, "signed": True}, ("codes", 0, False))
            elif n.op == "get_attr":
                raise UserError(f"{where}: a tensor attribute used as a value ({n.target}) is not a supported op")
            elif n.op == "output":
                arg = n.args[0]
                if not isinstance(arg, fx.Node):
                    raise UserError(f"{where}: the model returns {type(arg).__name__}; the graph has one output tensor")
                out_name = self.materialize(self.env[arg.name], Format("logits"), arg.name, where)
            else:
                self.env[n.name] = self.visit(n, where)
        return out_name

    def _arg(self, n: fx.Node, i: int = 0):
        a = n.args[i] if i < len(n.args) else None
        if not isinstance(a, fx.Node):
            raise UserError(f"{_fx_where(n)}: argument {i} is not a tensor")
        return self.env[a.name], a.name

    def _unsupported(self, n: fx.Node, where: str, why: str = ""):
        op = _op_name(n, self.modules)
        return UserError(f"{where}: op {op} is not supported by the graph exporter{why} (supported: conv/linear "
                         "layers of quantize_model, BatchNorm, ReLU/ReLU6/hardtanh/clamp, residual add, max/avg "
                         "pool, global average pool, flatten, dropout)")

    def visit(self, n: fx.Node, where: str):
        mod = self.modules.get(n.target) if n.op == "call_module" else None
        tgt = n.target
        if self._is_preprocessing(n):
            return Raw()
        if isinstance(mod, QConv2d | QLinear):
            return self.layer(n, mod, where)
        if isinstance(mod, _IDENTITY_MODULES) or tgt in (F.dropout,) or (n.op == "call_method" and tgt == "contiguous"):
            return self._arg(n)[0]
        if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
            return self.batchnorm(n, mod, where)
        clamp = self._clamp_bounds(n, mod)
        if clamp is not None:
            return self.clamp(n, clamp, where)
        if isinstance(mod, nn.MaxPool2d) or tgt is F.max_pool2d:
            return self.maxpool(n, mod, where)
        if isinstance(mod, nn.AvgPool2d | nn.AdaptiveAvgPool2d) or tgt in (F.avg_pool2d, F.adaptive_avg_pool2d) \
                or (n.op == "call_method" and tgt == "mean") or tgt is torch.mean:
            return self.avgpool(n, mod, where)
        if isinstance(mod, nn.Flatten) or tgt is torch.flatten or (n.op == "call_method" and tgt == "flatten"):
            return self.flatten(n, mod, where)
        if tgt in (operator.add, operator.iadd, torch.add) or (n.op == "call_method" and tgt in ("add", "add_")):
            return self.add(n, where)
        raise self._unsupported(n, where)

    def _is_preprocessing(self, n: fx.Node) -> bool:
        elementwise = (n.op == "call_function" and n.target in _ELEMENTWISE_PRE) or (
            n.op == "call_method" and n.target in _ELEMENTWISE_PRE_METHODS)
        if not elementwise:
            return False
        tensors = [a for a in n.args if isinstance(a, fx.Node)]
        others = [a for a in n.args if not isinstance(a, fx.Node)]
        return (len(tensors) == 1 and isinstance(self.env[tensors[0].name], Raw)
                and all(isinstance(a, int | float) for a in others) and not n.kwargs)

    # layers

    def layer(self, n: fx.Node, layer, where: str) -> Pending:
        value, src_fx = self._arg(n)
        name = self._name(n.target)
        aq = layer.act_quant
        is_asq = hasattr(aq, "adapter")
        conv = isinstance(layer, QConv2d)
        in_shape = self.stats.shape[src_fx]
        if isinstance(value, Raw):
            if n.target != self.first_layer or is_asq:
                raise UserError(f"{where}: the network input (after element-wise normalisation) may only feed the "
                                "first quantized layer's LSQ quantizer")
            inp = self.nodes["input"]
            inp.update(bits=int(aq.bits), signed=bool(aq.signed))
            self.kinds["input"] = ("codes", 0, not aq.signed)
        fy = None
        if is_asq:
            src = self.materialize(value, Format("y", unsigned=True), src_fx, where)
            fy = self.kinds[src][1]
        else:
            step = float(aq.step.detach().double())
            src = self.materialize(value, Format("codes", step=step, q_n=int(aq.q_n), q_p=int(aq.q_p)), src_fx, where)
        if conv:
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str) or any(d != 1 for d in layer.dilation):
                raise UserError(f"{where}: {type(layer).__name__} with padding mode {layer.padding_mode!r}, padding "
                                f"{layer.padding!r}, dilation {layer.dilation}: the graph takes zero padding, no "
                                "dilation")
            geometry = {"kernel": _pair(layer.kernel_size, "kernel", where),
                        "stride": _pair(layer.stride, "stride", where), "pad": _pair(layer.padding, "padding", where),
                        "groups": int(layer.groups)}
        else:
            geometry = {}
            if len(in_shape) != 1:
                raise UserError(f"{where}: Linear on a {len(in_shape) + 1}-d input; the graph's fc takes (N, C)")
        wentry, codes = weight_entry(name, layer, self.frac_bits)
        self.weights[name] = codes
        act = {"quant": "asq" if is_asq else "lsq", "bits": int(aq.bits), "signed": bool(aq.signed),
               "step": float(aq.step.detach().double()), "asq": None}
        scale_in = act["step"]
        if is_asq:
            asq = asq_entry(aq, list(in_shape), fy, self.trace, n.target)
            act["asq"] = asq
            scale_in = AsqParams.from_dict(asq, n.target, list(in_shape)).step
        self._add_node({"name": name, "op": "conv" if conv else "fc", "inputs": [src], **geometry, "act_in": act,
                        "weight": wentry, "requant": None}, ("acc", 0, False))
        self.fx_of[name] = n.name
        self.conv_layer[name] = n.target
        out_ch = wentry["shape"][0]
        bias = layer.bias.detach().double().numpy() if layer.bias is not None else np.zeros(out_ch)
        term = Term(node=name, scale_in=scale_in, w_scale=np.asarray(wentry["scale"], dtype=np.float64),
                    exp2=-wentry["unit_exp"], beta=is_asq)
        return Pending(terms=[term], bias=bias, shape=self.stats.shape[n.name])

    def batchnorm(self, n, bn, where: str) -> Pending:
        value, _ = self._arg(n)
        if not isinstance(value, Pending) or value.clamped:
            raise UserError(f"{where}: a BatchNorm must follow a conv/linear layer or an add directly (here it "
                            "follows a ReLU/clamp, pool or the input); it is folded into the preceding requantizer")
        if bn.running_var is None or not bn.affine:
            raise UserError(f"{where}: a BatchNorm without running statistics or affine parameters cannot be folded")
        a = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
        b = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * a
        terms = [replace(t, mult=a if t.mult is None else a * t.mult) for t in value.terms]
        return Pending(terms=terms, bias=b + a * value.bias, shape=value.shape)

    def _clamp_bounds(self, n: fx.Node, mod):
        """``(lo, hi)`` of a ReLU/ReLU6/hardtanh/clamp node (real, None: no bound), or None."""
        tgt = n.target
        method = tgt if n.op == "call_method" else None
        if isinstance(mod, nn.ReLU) or tgt in (F.relu, torch.relu) or method in ("relu", "relu_"):
            return (0.0, None)
        if isinstance(mod, nn.ReLU6) or tgt is F.relu6:
            return (0.0, 6.0)
        if isinstance(mod, nn.Hardtanh):
            return (float(mod.min_val), float(mod.max_val))
        if tgt is F.hardtanh:
            kw = dict(zip(("min_val", "max_val"), n.args[1:3], strict=False)) | n.kwargs
            return (float(kw.get("min_val", -1.0)), float(kw.get("max_val", 1.0)))
        if tgt in (torch.clamp, torch.clip) or method in ("clamp", "clip", "clamp_"):
            kw = dict(zip(("min", "max"), n.args[1:3], strict=False)) | n.kwargs
            bounds = (kw.get("min"), kw.get("max"))
            if any(b is not None and not isinstance(b, int | float) for b in bounds):
                return None
            return tuple(None if b is None else float(b) for b in bounds)
        return None

    def clamp(self, n, bounds, where: str):
        value, src_fx = self._arg(n)
        if isinstance(value, Deferred):  # max pool and flatten commute with a clamp: clamp their input
            self._alias(n.name + "_src", n.name)
            return replace(value, src=self.clamp_value(value.src, bounds, where), src_fx=n.name + "_src")
        return self.clamp_value(value, bounds, where)

    def clamp_value(self, value, bounds, where: str):
        if not isinstance(value, Pending):
            raise UserError(f"{where}: a ReLU/clamp on the network input is not supported")
        lo, hi = bounds
        new_lo = lo if value.lo is None else (value.lo if lo is None else max(value.lo, lo))
        new_hi = hi if value.hi is None else (value.hi if hi is None else min(value.hi, hi))
        if new_lo is not None and new_hi is not None and new_lo > new_hi:
            raise UserError(f"{where}: two clamps leave a constant ({new_lo} > {new_hi})")
        return replace(value, lo=new_lo, hi=new_hi)

    def maxpool(self, n, mod, where: str) -> Deferred:
        value, src_fx = self._arg(n)
        if mod is not None:
            k, s, p, d = mod.kernel_size, mod.stride, mod.padding, mod.dilation
            ceil, ri = mod.ceil_mode, mod.return_indices
        else:
            names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
            kw = dict(zip(names, n.args[1:], strict=False)) | n.kwargs
            k, s, p = kw["kernel_size"], kw.get("stride") or kw["kernel_size"], kw.get("padding", 0)
            d, ceil, ri = kw.get("dilation", 1), kw.get("ceil_mode", False), kw.get("return_indices", False)
        if _pair(d, "dilation", where) != 1 or ceil or ri:
            raise UserError(f"{where}: max pool with dilation, ceil_mode or return_indices is not supported")
        if isinstance(value, Raw):
            raise UserError(f"{where}: a max pool on the network input is not supported")
        params = {"kernel": _pair(k, "kernel", where), "stride": _pair(s, "stride", where),
                  "pad": _pair(p, "padding", where)}
        return Deferred(op="maxpool", src=value, src_fx=src_fx, shape=self.stats.shape[n.name], params=params)

    def avgpool(self, n, mod, where: str) -> Pending:
        value, src_fx = self._arg(n)
        in_shape = self.stats.shape[src_fx]
        out_shape = self.stats.shape[n.name]
        if isinstance(value, Raw) or len(in_shape) != 3:
            raise UserError(f"{where}: average pooling takes a (C, H, W) map inside the network")
        if n.op == "call_method" or n.target is torch.mean:
            dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
            dims = tuple(sorted(d % 4 for d in (dims if isinstance(dims, tuple | list) else (dims,))))
            if dims != (2, 3):
                raise UserError(f"{where}: mean over dims {dims}; the graph averages over (H, W) only")
            op, params, count = "gap", {}, in_shape[1] * in_shape[2]
        elif isinstance(mod, nn.AdaptiveAvgPool2d) or n.target is F.adaptive_avg_pool2d:
            size = mod.output_size if mod is not None else (n.args[1] if len(n.args) > 1 else n.kwargs["output_size"])
            if tuple(out_shape[1:]) != (1, 1):
                raise UserError(f"{where}: adaptive average pool to {size}; the graph offers output size 1 (GAP)")
            op, params, count = "gap", {}, in_shape[1] * in_shape[2]
        else:
            if mod is not None:
                k, s, p, ceil, cip, div = (mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode,
                                           mod.count_include_pad, mod.divisor_override)
            else:
                names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
                kw = dict(zip(names, n.args[1:], strict=False)) | n.kwargs
                k, s, p = kw["kernel_size"], kw.get("stride") or kw["kernel_size"], kw.get("padding", 0)
                ceil, cip = kw.get("ceil_mode", False), kw.get("count_include_pad", True)
                div = kw.get("divisor_override")
            params = {"kernel": _pair(k, "kernel", where), "stride": _pair(s, "stride", where),
                      "pad": _pair(p, "padding", where)}
            if ceil or div is not None or (not cip and params["pad"]):
                raise UserError(f"{where}: average pool with ceil_mode, divisor_override or count_include_pad=False "
                                "and padding is not supported")
            op, count = "avgpool", params["kernel"] ** 2
        src = self.materialize(value, Format("y"), src_fx, where)
        _, frac, nonneg = self.kinds[src]
        name = self._name(n.name)
        self._add_node({"name": name, "op": op, "inputs": [src], **params, "requant": None}, ("acc", frac, nonneg))
        self.fx_of[name] = n.name
        shape = out_shape if op == "avgpool" or n.op != "call_method" else (in_shape[0], 1, 1)
        term = Term(node=name, scale_in=1.0 / count, w_scale=None, exp2=-frac, rounded=count)
        pending = Pending(terms=[term], bias=np.zeros(in_shape[0]), shape=tuple(shape))
        if len(out_shape) == 1:  # mean over (H, W) without keepdim: GAP, then flatten
            self._alias(n.name + "_gap", n.name)
            return Deferred(op="flatten", src=pending, src_fx=n.name + "_gap", shape=tuple(out_shape))
        return pending

    def flatten(self, n, mod, where: str) -> Deferred:
        value, src_fx = self._arg(n)
        if mod is not None:
            start, end = mod.start_dim, mod.end_dim
        else:
            start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
            end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
        if start != 1 or end != -1:
            raise UserError(f"{where}: flatten(start_dim={start}, end_dim={end}); the graph flattens (C, H, W) only "
                            "(start_dim=1)")
        if isinstance(value, Raw):
            raise UserError(f"{where}: flattening the network input is not supported")
        return Deferred(op="flatten", src=value, src_fx=src_fx, shape=self.stats.shape[n.name])

    def add(self, n, where: str) -> Pending:
        if len(n.args) != 2 or n.kwargs or not all(isinstance(a, fx.Node) for a in n.args):
            raise UserError(f"{where}: an add of two tensors (no alpha, no constant) is what the graph offers")
        a, b = n.args
        if self.stats.shape[a.name] != self.stats.shape[b.name]:
            raise UserError(f"{where}: an add of shapes {self.stats.shape[a.name]} and {self.stats.shape[b.name]} "
                            "(broadcasting is not supported)")
        operands = [self.as_terms(arg, where) for arg in (a, b)]
        terms = operands[0][0] + operands[1][0]
        # The raw accumulator first (the add's main input), the other branch as its skip.
        if len(terms) == 2 and terms[1].rounded == 0 and terms[0].rounded != 0:
            terms = terms[::-1]
        return Pending(terms=terms, bias=operands[0][1] + operands[1][1], shape=self.stats.shape[n.name])

    # --- the end

    def fuse(self, output: str) -> str:
        """Fold a ``requant`` node into its conv/fc or pool input when it is that input's only consumer."""
        consumers: dict = {}
        for obj in self.nodes.values():
            for i in obj["inputs"]:
                consumers.setdefault(i, []).append(obj["name"])
        renamed = {}
        for name in list(self.nodes):
            obj = self.nodes[name]
            if obj["op"] != "requant":
                continue
            src = obj["inputs"][0]
            target = self.nodes[src]
            if target["op"] not in ("conv", "fc", "avgpool", "gap") or target["requant"] is not None \
                    or consumers[src] != [name]:
                continue
            target["requant"] = obj["requant"]
            del self.nodes[name]
            renamed[name] = src
            self.requants[src] = self.requants.pop(name)
            self.fx_of[src] = self.fx_of.pop(name)
        for obj in self.nodes.values():
            obj["inputs"] = [renamed.get(i, i) for i in obj["inputs"]]
        for info in self.requants.values():
            info["terms"] = [replace(t, node=renamed.get(t.node, t.node)) for t in info["terms"]]
        return renamed.get(output, output)


def export_graph(model: nn.Module, x_calib: torch.Tensor, post_frac_bits: int | None = None,
                 bits: int | None = None) -> GraphExport:
    """The format-2 graph and weight codes of a quantized ``model``.

    Parameters
    ----------
    model : nn.Module
        Built by :func:`quant.quantize.quantize_model` (and trained or calibrated), in eval mode.
    x_calib : tensor
        Calibration images (the training split, as the model takes them): the fractional bits of
        every ``y`` and the ASQ adapters' widths come from the float values on them.
    post_frac_bits : int, optional
        F of the POST table; None: ``formats.default_post_frac_bits(bits)``.
    bits : int, optional
        The scheme's BITS, for the default F (default: the widest quantized middle layer's).
    """
    from quant.quantize import quantized_layers

    layers = quantized_layers(model)
    if not layers:
        raise UserError("the model has no quantized layer: export a model built by quantize_model")
    if post_frac_bits is None:
        if bits is None:
            middle = [int(m.weight_quant.bits) for _, m in layers[1:-1]] or [int(layers[0][1].weight_quant.bits)]
            bits = max(middle)
        post_frac_bits = formats.default_post_frac_bits(bits)
    model.eval()
    gm = trace_model(model)
    with single_thread():
        stats, trace = node_stats(model, gm, x_calib)
    exporter = _Exporter(model, gm, stats, trace, post_frac_bits)
    output = exporter.run(tuple(x_calib.shape[1:]))
    output = exporter.fuse(output)
    obj = {"nodes": list(exporter.nodes.values()), "output": output}
    graph = Graph.from_dict(obj, post_frac_bits, where=f"{type(model).__name__} graph")
    return GraphExport(graph=graph, weights=exporter.weights, fx_of=exporter.fx_of,
                       conv_layer=exporter.conv_layer, requants=exporter.requants)
