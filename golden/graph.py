"""Bundle format 2: the network as a graph of integer nodes, validated, with every width proved.

A format-2 manifest holds, instead of format 1's ``layers`` chain, a ``graph`` object::

    {"nodes": [{"name": ..., "op": ..., "inputs": [...], ...}, ...], "output": "<node>"}

Nodes are listed in topological order and name their inputs. The operations (``op``):

- ``input``: the network input's codes (shape, bits, signed);
- ``conv``: k x k convolution with stride, zero padding and groups (depthwise: ``groups`` equal to
  the input channels), with its input quantizer ``act_in`` (LSQ codes, or ``y`` through an ASQ
  unit), its weights and the requantizer of its folded batch norm (``requant``; ReLU, ReLU6 or a
  saturation folded into its ``lo``/``hi``), or ``requant: null`` when the raw accumulator feeds an
  ``add``;
- ``fc``: the same on a flat input;
- ``add``: the residual add, a two-term requantizer ``t = main*M*g_m + skip*A*g_s + (B << G)``,
  ``out = clamp(rshift_round(t, S + G), lo, hi)``: each branch is multiplied into the common
  output scale and rounded once (ReLU after the sum is ``lo = 0``);
- ``requant``: a requantizer on its own, for a value that two consumers need in two formats (a
  block output kept as ``y`` for the skip of the next add and quantized to codes for the next
  conv), or after a raw pool sum;
- ``clamp``: a ReLU/clamp on codes or ``y`` that could not be folded into a requantizer;
- ``maxpool``: max over windows, on codes or ``y`` (after quantization: exact, quantization being
  monotone);
- ``avgpool`` and ``gap``: the window (or whole-map) sum in a wide accumulator, then an optional
  requantizer with ``1/(k k)`` (``1/(H W)``) folded into its multiplier;
- ``flatten``: ``(C, H, W) -> (C*H*W,)`` in C, H, W order.

``docs/arithmetic.md`` ("Graphs (bundle format 2)") states the arithmetic of every node and proves
the widths that :func:`infer` computes. :meth:`Graph.from_dict` parses and validates the JSON object
once (names, inputs, topological order, shapes, value kinds, constant counts, widths) and raises
:class:`asqhw.errors.UserError` naming the node and the field of the first problem;
:meth:`Graph.to_dict` writes the canonical object back (with every derived shape and width, so a
canonical object round-trips unchanged). :func:`run_graph` is the golden model of a graph, integer
NumPy only, built of :mod:`golden.arith` and :mod:`golden.model` primitives;
:func:`graph_from_chain` expresses a format-1 chain as a graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from asqhw.errors import UserError
from golden import arith, formats
from golden.bundle import (
    GRAPH_FORMAT_VERSION,
    ActIn,
    AsqParams,
    Manifest,
    ManifestText,
    WeightSpec,
    check_count,
    check_vector_arrays,
    int_tuple,
    json_value,
)
from golden.model import accumulate_codes

#: Every operation a format-2 graph may contain.
OPS = ("input", "conv", "fc", "add", "requant", "clamp", "maxpool", "avgpool", "gap", "flatten")
#: What a node's output holds (``NodeInfo.kind``):
#: ``codes`` activation codes; ``y`` fixed point with ``frac_bits`` fractional bits; ``acc`` a raw
#: wide sum (an accumulator or an unrequantized pool sum, possibly carrying its input's beta);
#: ``logits`` fixed point, the network's output.
KINDS = ("codes", "y", "acc", "logits")
#: What a requantizer may produce.
REQUANT_OUTPUTS = ("codes", "y", "logits")
#: The widest intermediate the golden model (int64) computes: one bit of headroom for the rounding.
MAX_WIDTH = 62

_CONV_FIELDS = ("kernel", "stride", "pad", "groups", "act_in", "weight", "requant", "fan_in", "product_range",
                "acc_width")
_POOL_FIELDS = ("kernel", "stride", "pad", "requant", "sum_width")
#: The fields a node of each op may hold (besides ``name``, ``op``, ``inputs``, ``out_shape``): any
#: other is refused, so that a field this version does not know (``ceil_mode``, ...) is never
#: silently ignored.
NODE_FIELDS = {"input": ("shape", "bits", "signed"), "conv": _CONV_FIELDS, "fc": _CONV_FIELDS,
               "add": ("requant",), "requant": ("requant",), "clamp": ("lo", "hi"), "maxpool": _POOL_FIELDS,
               "avgpool": _POOL_FIELDS, "gap": _POOL_FIELDS, "flatten": ()}
#: The fields of a ``requant`` object (the last four derived).
REQUANT_FIELDS = ("M", "A", "B", "S", "G", "output", "lo", "hi", "frac_bits", "M_width", "B_width", "t_width",
                  "out_width")


# ----------------------------------------------------------------------------- reading fields


def _need(obj: dict, key: str, at: str, types=None):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{at}: field {key!r} is missing")
    value = obj[key]
    if types is not None:
        bad_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        if bad_bool or not isinstance(value, types):
            raise UserError(f"{at}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _int(obj: dict, key: str, at: str, minimum: int | None = None) -> int:
    value = _need(obj, key, at, int)
    if minimum is not None and value < minimum:
        raise UserError(f"{at}: field {key!r} is {value}, must be >= {minimum}")
    return value


def _opt_int(obj: dict, key: str, at: str):
    if obj.get(key) is None:
        return None
    return _int(obj, key, at)


def _width(lo: int, hi: int) -> int:
    """Width of a value in ``[lo, hi]``: unsigned when ``lo >= 0``, else two's complement."""
    return arith.unsigned_width(hi) if lo >= 0 else arith.signed_width(lo, hi)


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """``[lo, hi]`` of b-bit codes: two's complement when signed, else ``0 .. 2^b - 1``."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Requantizer:
    """``t = x*M*g [+ skip*A*g_s] + (B << G)``; ``out = clamp(rshift_round(t, S + G), lo, hi)``.

    Attributes
    ----------
    M, B : tuple of int
        Multiplier and bias per output channel (``B`` at the scale of ``x*M``).
    S : int
        Shift.
    G : int
        Fractional bits of the beta codes ``g`` (``formats.BETA_FRAC``) when a term carries a per-sample
        ASQ beta, else 0; a term without one is multiplied by ``2^G``.
    output : str
        ``codes``, ``y`` (fixed point, ``frac_bits`` = FY; signed when ``lo < 0``, e.g. a linear
        bottleneck kept for a skip) or ``logits`` (``frac_bits`` = FL).
    lo, hi : int or None
        The clamp (``lo = 0`` is a folded ReLU); None where there is none (logits).
    frac_bits : int
        Fractional bits of the output (0 for codes).
    A : tuple of int or None
        ``add`` only: the skip branch's multiplier per channel, at the same scale as ``M``.
    """

    M: tuple
    B: tuple
    S: int
    G: int
    output: str
    lo: int | None
    hi: int | None
    frac_bits: int
    A: tuple | None = None

    @classmethod
    def from_dict(cls, req: dict, at: str, channels: int, with_skip: bool = False) -> Requantizer:
        if not isinstance(req, dict):
            raise UserError(f"{at}: must be a JSON object")
        _no_unknown(req, REQUANT_FIELDS, at)
        lists = {}
        for key in ("M", "A", "B") if with_skip else ("M", "B"):
            lists[key] = int_tuple(req, key, at)
            check_count(lists[key], channels, at, key)
        m_lo, m_hi = code_range(formats.M_BITS, True)
        for key in ("M", "A") if with_skip else ("M",):
            if lists[key] and not m_lo <= min(lists[key]) <= max(lists[key]) <= m_hi:
                raise UserError(f"{at}: {key} outside the {formats.M_BITS}-bit multiplier range {m_lo}..{m_hi}")
        if not with_skip and req.get("A") is not None:
            raise UserError(f"{at}: field 'A' (a skip multiplier) belongs to add nodes only")
        output = _need(req, "output", at, str)
        if output not in REQUANT_OUTPUTS:
            raise UserError(f"{at}: output {output!r} unknown (one of {', '.join(REQUANT_OUTPUTS)})")
        for key in ("lo", "hi"):
            if key not in req or not (req[key] is None or type(req[key]) is int):
                raise UserError(f"{at}: field {key!r} is missing or not an integer/null")
        lo, hi = req["lo"], req["hi"]
        if output == "logits":
            if lo is not None or hi is not None:
                raise UserError(f"{at}: logits are not clamped (lo and hi must be null)")
        elif lo is None or hi is None:
            raise UserError(f"{at}: output {output!r} needs both clamp bounds lo and hi")
        elif lo > hi:
            raise UserError(f"{at}: lo {lo} > hi {hi}")
        if output == "codes" and req.get("frac_bits", 0) != 0:
            raise UserError(f"{at}: codes have frac_bits 0")
        shift, beta_frac = _int(req, "S", at, 0), _int(req, "G", at, 0)
        if shift + beta_frac > MAX_WIDTH:
            raise UserError(f"{at}: shift S + G = {shift + beta_frac} exceeds the {MAX_WIDTH} bits the golden model "
                            "computes in")
        return cls(S=shift, G=beta_frac, output=output, lo=lo, hi=hi,
                   frac_bits=_int(req, "frac_bits", at, 0), **lists)

    def to_dict(self, widths: dict) -> dict:
        out = {"M": list(self.M)}
        if self.A is not None:
            out["A"] = list(self.A)
        out.update(B=list(self.B), S=self.S, G=self.G, output=self.output, lo=self.lo, hi=self.hi,
                   frac_bits=self.frac_bits)
        out.update(widths)
        return out


@dataclass(frozen=True)
class Node:
    """What every node has: a unique ``name`` (no ``.``), its ``op`` and its ``inputs`` (names)."""

    name: str
    op: str
    inputs: tuple


@dataclass(frozen=True)
class InputNode(Node):
    """The network input: codes of ``shape`` ((C, H, W) or (C,)), ``bits`` wide, ``signed`` or not."""

    shape: tuple
    bits: int
    signed: bool


@dataclass(frozen=True)
class ConvNode(Node):
    """A convolution (``op == "conv"``, ``kernel``/``stride``/``pad``/``groups`` set) or a fully
    connected layer (``op == "fc"``, those four None).

    ``act_in`` (the input quantizer: LSQ codes, or an ASQ unit turning ``y`` into codes and a beta)
    and ``weight`` are :mod:`golden.bundle`'s records, as in format 1; weight shape
    ``(C_out, C_in / groups, k, k)`` (fc: ``(C_out, C_in)``). ``requant`` None: the output is the
    raw accumulator (for an ``add``).
    """

    kernel: int | None
    stride: int | None
    pad: int | None
    groups: int | None
    act_in: ActIn
    weight: WeightSpec
    requant: Requantizer | None


@dataclass(frozen=True)
class AddNode(Node):
    """The residual add: inputs ``(main, skip)`` of one shape, ``requant`` with the skip's ``A``."""

    requant: Requantizer


@dataclass(frozen=True)
class RequantNode(Node):
    """A requantizer on its own: ``t = x*M*g + (B << G)``, ``out = clamp(rshift_round(t, S + G), lo, hi)``
    (``g`` the input's beta when it is an accumulator carrying one, else 1 with ``G = 0``)."""

    requant: Requantizer


@dataclass(frozen=True)
class ClampNode(Node):
    """``clamp(x, lo, hi)`` on codes or ``y`` (either bound may be None, not both)."""

    lo: int | None
    hi: int | None


@dataclass(frozen=True)
class PoolNode(Node):
    """``maxpool`` / ``avgpool`` (``kernel``, ``stride``, ``pad`` set) or ``gap`` (those None).

    ``requant`` (average pools only, optional): the requantizer of the window sum, with the
    ``1/(k k)`` (``1/(H W)``) of the average folded into ``M``; None leaves the raw sum.
    """

    kernel: int | None
    stride: int | None
    pad: int | None
    requant: Requantizer | None


@dataclass(frozen=True)
class FlattenNode(Node):
    """``(C, H, W) -> (C*H*W,)``, row-major (C, then H, then W), as ``torch.flatten(x, 1)``."""


@dataclass(frozen=True)
class NodeInfo:
    """What validation derives for one node: its output's shape, kind and proved range and widths.

    ``lo``/``hi`` bound every output value (reached when every input code and weight code is at its
    extreme, for the ops where ``docs/arithmetic.md`` says so); ``width`` is the width of that
    range (unsigned when ``lo >= 0``). ``beta`` is ``(beta_min, beta_max, G)`` when the output is
    an accumulator whose scale still carries its input's per-sample ASQ beta, else None.
    ``fan_in``/``product_range``/``acc_*`` (conv, fc), ``sum_*`` (pools), ``t_*``, ``M_width``
    (of every multiplier, ``M`` and an add's ``A``), ``B_width`` (requantizers) are the
    intermediates' ranges and widths, None where absent.
    """

    shape: tuple
    kind: str
    lo: int
    hi: int
    width: int
    frac_bits: int = 0
    beta: tuple | None = None
    fan_in: int | None = None
    product_range: tuple | None = None
    acc_range: tuple | None = None
    acc_width: int | None = None
    sum_range: tuple | None = None
    sum_width: int | None = None
    t_range: tuple | None = None
    t_width: int | None = None
    M_width: int | None = None
    B_width: int | None = None


@dataclass(frozen=True)
class Graph:
    """A validated graph: ``nodes`` in topological order, the ``output`` node's name, the POST table
    precision ``post_frac_bits`` (the manifest's), and ``infos`` (one :class:`NodeInfo` per node)."""

    nodes: tuple
    output: str
    post_frac_bits: int
    infos: tuple

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def info(self, name: str) -> NodeInfo:
        for node, info in zip(self.nodes, self.infos, strict=True):
            if node.name == name:
                return info
        raise KeyError(name)

    def consumers(self, name: str) -> tuple:
        """Names of the nodes that read ``name``'s output."""
        return tuple(n.name for n in self.nodes if name in n.inputs)

    @classmethod
    def build(cls, nodes, output: str, post_frac_bits: int = formats.DEFAULT_POST_FRAC_BITS,
              where: str = "graph") -> Graph:
        """Validate ``nodes`` (records) and derive every :class:`NodeInfo`; see :func:`infer`."""
        nodes = tuple(nodes)
        check_structure(nodes, output, where)
        infos: dict = {}
        for node in nodes:
            infos[node.name] = infer(node, [infos[i] for i in node.inputs], post_frac_bits,
                                     f"{where}: node {node.name!r}")
        for node in nodes:
            at = f"{where}: node {node.name!r}"
            if infos[node.name].kind == "logits" and node.name != output:
                raise UserError(f"{at}: yields logits but is not the graph's output {output!r}")
        return cls(nodes=nodes, output=output, post_frac_bits=post_frac_bits,
                   infos=tuple(infos[n.name] for n in nodes))

    @classmethod
    def from_dict(cls, obj: dict, post_frac_bits: int = formats.DEFAULT_POST_FRAC_BITS,
                  where: str = "graph") -> Graph:
        """Parse and validate the JSON ``graph`` object; recorded derived fields (``out_shape``,
        ``fan_in``, ``product_range`` and the widths) must equal the proved ones."""
        if not isinstance(obj, dict):
            raise UserError(f"{where}: must be a JSON object with 'nodes' and 'output'")
        raw_nodes = _need(obj, "nodes", where, list)
        output = _need(obj, "output", where, str)
        if not raw_nodes:
            raise UserError(f"{where}: nodes is empty")
        nodes = [_parse_node(raw, i, where) for i, raw in enumerate(raw_nodes)]
        graph = cls.build(nodes, output, post_frac_bits, where)
        for raw, node, info in zip(raw_nodes, graph.nodes, graph.infos, strict=True):
            _check_recorded(raw, node, info, f"{where}: node {node.name!r}")
        return graph

    def to_dict(self) -> dict:
        """The canonical JSON object (derived shapes and widths included)."""
        return {"nodes": [node_dict(n, i) for n, i in zip(self.nodes, self.infos, strict=True)],
                "output": self.output}


# ----------------------------------------------------------------------------- parsing nodes


def _parse_node(raw, index: int, where: str) -> Node:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: nodes[{index}] must be a JSON object")
    name = _need(raw, "name", f"{where}: nodes[{index}]", str)
    at = f"{where}: node {name!r}"
    if not name or "." in name:
        raise UserError(f"{at}: a node name must be non-empty and hold no '.'")
    op = _need(raw, "op", at, str)
    if op not in OPS:
        raise UserError(f"{at}: op {op!r} unknown (one of {', '.join(OPS)})")
    _no_unknown(raw, ("name", "op", "inputs", "out_shape", *NODE_FIELDS[op]), at)
    inputs = _need(raw, "inputs", at, list)
    if not all(isinstance(i, str) for i in inputs):
        raise UserError(f"{at}: inputs must be node names (strings)")
    arity = {"input": 0, "add": 2}.get(op, 1)
    if len(inputs) != arity:
        raise UserError(f"{at}: op {op!r} takes {arity} input(s), got {len(inputs)}")
    base = {"name": name, "op": op, "inputs": tuple(inputs)}
    if op == "input":
        shape = int_tuple(raw, "shape", at)
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise UserError(f"{at}: shape {list(shape)} must be (C, H, W) or (C,) of positive sizes")
        bits = _int(raw, "bits", at)
        if bits not in formats.INT_BITS:
            raise UserError(f"{at}: bits {bits} outside {formats.range_text(formats.INT_BITS)}")
        return InputNode(**base, shape=shape, bits=bits, signed=_need(raw, "signed", at, bool))
    if op in ("conv", "fc"):
        conv = op == "conv"
        geometry = {}
        for key, low in (("kernel", 1), ("stride", 1), ("pad", 0), ("groups", 1)):
            if conv:
                geometry[key] = 1 if key == "groups" and "groups" not in raw else _int(raw, key, at, low)
            elif raw.get(key) is not None:
                raise UserError(f"{at}: field {key!r} belongs to conv nodes, not fc")
            else:
                geometry[key] = None
        act_in = _parse_act_in(_need(raw, "act_in", at, dict), f"{at}.act_in")
        weight = _parse_weight(_need(raw, "weight", at, dict), f"{at}.weight")
        if "requant" not in raw:
            raise UserError(f"{at}: field 'requant' is missing (null for a raw accumulator)")
        req = raw["requant"]
        requant = None if req is None else Requantizer.from_dict(req, f"{at}.requant", weight.shape[0])
        return ConvNode(**base, **geometry, act_in=act_in, weight=weight, requant=requant)
    if op == "add":
        req = _need(raw, "requant", at, dict)
        channels = len(int_tuple(req, "M", f"{at}.requant"))
        return AddNode(**base, requant=Requantizer.from_dict(req, f"{at}.requant", channels, with_skip=True))
    if op == "requant":
        req = _need(raw, "requant", at, dict)
        channels = len(int_tuple(req, "M", f"{at}.requant"))
        return RequantNode(**base, requant=Requantizer.from_dict(req, f"{at}.requant", channels))
    if op == "clamp":
        lo, hi = _opt_int(raw, "lo", at), _opt_int(raw, "hi", at)
        if lo is None and hi is None:
            raise UserError(f"{at}: a clamp needs lo or hi")
        if lo is not None and hi is not None and lo > hi:
            raise UserError(f"{at}: lo {lo} > hi {hi}")
        return ClampNode(**base, lo=lo, hi=hi)
    if op in ("maxpool", "avgpool"):
        kernel, stride, pad = _int(raw, "kernel", at, 1), _int(raw, "stride", at, 1), _int(raw, "pad", at, 0)
        if 2 * pad > kernel:
            raise UserError(f"{at}: pad {pad} more than half the kernel {kernel}")
        requant = _pool_requant(raw, op, at)
        return PoolNode(**base, kernel=kernel, stride=stride, pad=pad, requant=requant)
    if op == "gap":
        for key in ("kernel", "stride", "pad"):
            if raw.get(key) is not None:
                raise UserError(f"{at}: gap takes no {key!r} (it pools the whole map)")
        return PoolNode(**base, kernel=None, stride=None, pad=None, requant=_pool_requant(raw, op, at))
    return FlattenNode(**base)


def _no_unknown(obj: dict, known, at: str) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise UserError(f"{at}: field {unknown[0]!r} unknown here (known: {', '.join(known)})")


def _pool_requant(raw: dict, op: str, at: str) -> Requantizer | None:
    req = raw.get("requant")
    if req is None:
        return None
    if op == "maxpool":
        raise UserError(f"{at}: a maxpool has no requantizer (it passes codes through)")
    return Requantizer.from_dict(req, f"{at}.requant", len(int_tuple(req, "M", f"{at}.requant")))


def _parse_act_in(act: dict, at: str) -> ActIn:
    quant = _need(act, "quant", at, str)
    if quant not in ("lsq", "asq"):
        raise UserError(f"{at}: quant {quant!r} unknown (lsq or asq)")
    bits = _int(act, "bits", at)
    if bits not in formats.INT_BITS:
        raise UserError(f"{at}: bits {bits} outside {formats.range_text(formats.INT_BITS)}")
    signed = _need(act, "signed", at, bool)
    step = _need(act, "step", at, (int, float))
    asq = None
    if quant == "asq":
        raw = _need(act, "asq", at, dict)
        channels = raw.get("channels")
        if type(channels) is not int:  # not recorded: the adapter's own width
            w1, w2 = raw.get("W1"), raw.get("W2")
            rows = w1 if isinstance(w1, list) and w1 and isinstance(w1[0], list) else None
            channels = len(rows[0]) if rows else len(w2) if isinstance(w2, list) else 0
        asq = AsqParams.from_dict(raw, f"{at}.asq", (channels,))
        if signed:
            raise UserError(f"{at}: ASQ inputs are unsigned (post-ReLU) in the integer arithmetic")
        if asq.qmax != (1 << bits) - 1:
            raise UserError(f"{at}.asq: qmax {asq.qmax} disagrees with bits {bits}")
    elif act.get("asq") is not None:
        raise UserError(f"{at}: an LSQ input has no 'asq' constants")
    return ActIn(quant=quant, bits=bits, signed=signed, step=step, asq=asq)


def _parse_weight(weight: dict, at: str) -> WeightSpec:
    kind, bits = _need(weight, "kind", at, str), _int(weight, "bits", at)
    try:
        formats.check_weight_format(kind, bits)
    except formats.WidthError as err:
        raise UserError(f"{at}: {err}") from None
    shape = int_tuple(weight, "shape", at)
    if len(shape) not in (2, 4) or min(shape) < 1:
        raise UserError(f"{at}: shape {list(shape)} must be (C_out, C_in[, k, k]) of positive sizes")
    scale = _need(weight, "scale", at, list)
    check_count(scale, shape[0], at, "scale")
    return WeightSpec(kind=kind, bits=bits, shape=shape, mem=_need(weight, "mem", at, str), scale=tuple(scale),
                      unit_exp=_int(weight, "unit_exp", at))


# ----------------------------------------------------------------------------- structure


def check_structure(nodes: tuple, output: str, where: str = "graph") -> None:
    """Unique names, one ``input`` node, known inputs, topological order (a cycle is named), the
    ``output`` node present, and every other node's output used."""
    index: dict = {}
    for i, node in enumerate(nodes):
        if node.name in index:
            raise UserError(f"{where}: node {node.name!r} is defined twice")
        index[node.name] = i
    inputs = [n.name for n in nodes if n.op == "input"]
    if len(inputs) != 1:
        raise UserError(f"{where}: the graph needs exactly one input node, found {len(inputs)} {inputs}")
    for i, node in enumerate(nodes):
        for name in node.inputs:
            if name not in index:
                raise UserError(f"{where}: node {node.name!r}: unknown input {name!r}")
        for name in node.inputs:
            if index[name] >= i:
                cycle = _cycle(nodes, index, node.name)
                if cycle:
                    raise UserError(f"{where}: node {node.name!r}: cycle {' -> '.join(cycle)}")
                raise UserError(f"{where}: node {node.name!r}: input {name!r} is listed after it "
                                "(list the nodes in topological order)")
    if output not in index:
        raise UserError(f"{where}: output {output!r} is not a node")
    used = {name for node in nodes for name in node.inputs}
    for node in nodes:
        if node.name != output and node.name not in used:
            raise UserError(f"{where}: node {node.name!r}: its output is never used")


def _cycle(nodes: tuple, index: dict, start: str):
    """A cycle through ``start`` following inputs (names from ``start`` back to it), or None."""
    stack = [(start, [start])]
    seen = set()
    while stack:
        name, path = stack.pop()
        for src in nodes[index[name]].inputs:
            if src == start:
                return list(reversed(path + [start]))
            if src not in seen:
                seen.add(src)
                stack.append((src, path + [src]))
    return None


# ----------------------------------------------------------------------------- inference


def _fits(width: int, at: str, what: str) -> int:
    if width > MAX_WIDTH:
        raise UserError(f"{at}: {what} needs {width} bits, more than the {MAX_WIDTH} the golden model computes in")
    return width


def _term_range(lo: int, hi: int, m: int, g: tuple) -> tuple[int, int]:
    """Range of ``x * m * g`` over ``x`` in ``[lo, hi]`` and ``g`` in ``[g[0], g[1]]``: the extremes of
    a bilinear form over a box lie at its corners."""
    corners = [x * m * gg for x in (lo, hi) for gg in g]
    return min(corners), max(corners)


def requant_info(terms, req: Requantizer, channels: int, shape: tuple, at: str) -> NodeInfo:
    """Output range and widths of a requantizer.

    ``terms``: one ``(lo, hi, multipliers, g)`` per input term, ``g = (g_lo, g_hi)`` the range of its
    beta code, ``(2^G, 2^G)`` for a term without beta (``(1, 1)`` when ``G = 0``). Per channel ``c``, ``t_c`` lies in
    the sum of the terms' ranges plus ``B_c 2^G``; the output is the monotone image
    ``clamp(rshift_round(t, S + G), lo, hi)`` of that range.
    """
    t_lo = t_hi = None
    for c in range(channels):
        lo_c = hi_c = req.B[c] << req.G
        for lo, hi, mult, g in terms:
            a, b = _term_range(lo, hi, mult[c], g)
            _fits(arith.signed_width(a, b), at, "a requantizer term")
            lo_c, hi_c = lo_c + a, hi_c + b
        t_lo = lo_c if t_lo is None else min(t_lo, lo_c)
        t_hi = hi_c if t_hi is None else max(t_hi, hi_c)
    t_width = _fits(arith.signed_width(t_lo, t_hi), at + ".requant", "t")
    shift = req.S + req.G
    out_lo = arith.clamp(arith.rshift_round(t_lo, shift), req.lo, req.hi)
    out_hi = arith.clamp(arith.rshift_round(t_hi, shift), req.lo, req.hi)
    if req.output == "y" and (req.lo < -(formats.Y_MAX + 1) or req.hi > formats.Y_MAX):
        raise UserError(f"{at}.requant: y is clamped to {-(formats.Y_MAX + 1)}..{formats.Y_MAX} at most, got "
                        f"{req.lo}..{req.hi}")
    mults = [m for _, _, mult, _ in terms for m in mult]
    return NodeInfo(shape=shape, kind=req.output, lo=out_lo, hi=out_hi, width=_width(out_lo, out_hi),
                    frac_bits=req.frac_bits, t_range=(t_lo, t_hi), t_width=t_width,
                    M_width=arith.signed_width(min(mults), max(mults)),
                    B_width=arith.signed_width(min(req.B), max(req.B)))


def _g_range(info: NodeInfo, G: int, at: str, what: str) -> tuple[int, int]:
    """Range of a term's multiplier ``g``: its beta's ``[beta_min, beta_max]``, ``2^G`` without beta."""
    if info.beta is None:
        return (1 << G, 1 << G)
    if info.beta[2] != G:
        raise UserError(f"{at}.requant: G {G} disagrees with the {what}'s beta format (G = {info.beta[2]})")
    return info.beta[0], info.beta[1]


def _out_hw(h: int, w: int, kernel: int, stride: int, pad: int, at: str) -> tuple[int, int]:
    ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    if ho < 1 or wo < 1:
        raise UserError(f"{at}: kernel {kernel} with pad {pad} does not fit the {h}x{w} input")
    return ho, wo


def infer(node: Node, ins: list, post_frac_bits: int, at: str) -> NodeInfo:
    """Shape, kind, proved range and widths of ``node``'s output from its inputs' (``ins``).

    Raises :class:`UserError` (``at`` names the node) when the inputs' shapes or kinds do not
    fit the node, or a constant count disagrees.
    """
    if node.op == "input":
        lo, hi = code_range(node.bits, node.signed)
        return NodeInfo(shape=node.shape, kind="codes", lo=lo, hi=hi, width=node.bits)
    x = ins[0]
    if x.kind == "logits":
        raise UserError(f"{at}: input {node.inputs[0]!r} yields logits, which nothing may consume")
    if node.op in ("conv", "fc"):
        return _infer_conv(node, x, post_frac_bits, at)
    if node.op == "add":
        return _infer_add(node, x, ins[1], at)
    if node.op == "requant":
        req = node.requant
        channels = x.shape[0]
        for key in ("M", "B"):
            check_count(getattr(req, key), channels, f"{at}.requant", key)
        if req.G and x.beta is None:
            raise UserError(f"{at}.requant: G {req.G} but the input {node.inputs[0]!r} carries no beta (G must be 0)")
        g = (1, 1) if x.beta is None else _g_range(x, req.G, at, f"input {node.inputs[0]!r}")
        return requant_info([(x.lo, x.hi, req.M, g)], req, channels, x.shape, at)
    if node.op == "flatten":
        size = math.prod(x.shape)
        return NodeInfo(shape=(size,), kind=x.kind, lo=x.lo, hi=x.hi, width=x.width, frac_bits=x.frac_bits,
                        beta=x.beta)
    if x.kind not in ("codes", "y"):
        raise UserError(f"{at}: {node.op} takes codes or y, but input {node.inputs[0]!r} is a raw {x.kind} "
                        "(requantize it first: its per-channel scale may be negative)")
    if node.op == "clamp":
        # clamp is monotone: the image of [x.lo, x.hi] is [clamp(x.lo), clamp(x.hi)]
        lo, hi = arith.clamp(x.lo, node.lo, node.hi), arith.clamp(x.hi, node.lo, node.hi)
        return NodeInfo(shape=x.shape, kind=x.kind, lo=lo, hi=hi, width=_width(lo, hi), frac_bits=x.frac_bits)
    if len(x.shape) != 3:
        raise UserError(f"{at}: {node.op} takes a (C, H, W) map, input {node.inputs[0]!r} has shape {list(x.shape)}")
    c, h, w = x.shape
    if node.op == "maxpool":
        ho, wo = _out_hw(h, w, node.kernel, node.stride, node.pad, at)
        return NodeInfo(shape=(c, ho, wo), kind=x.kind, lo=x.lo, hi=x.hi, width=x.width, frac_bits=x.frac_bits)
    if node.op == "avgpool":
        ho, wo = _out_hw(h, w, node.kernel, node.stride, node.pad, at)
        shape, n = (c, ho, wo), node.kernel * node.kernel
    else:
        shape, n = (c, 1, 1), h * w
    s_lo, s_hi = n * min(x.lo, 0), n * max(x.hi, 0)
    sum_width = _fits(_width(s_lo, s_hi), at, "the pool sum")
    if node.requant is None:
        return NodeInfo(shape=shape, kind="acc", lo=s_lo, hi=s_hi, width=sum_width, frac_bits=x.frac_bits,
                        sum_range=(s_lo, s_hi), sum_width=sum_width)
    req = node.requant
    check_count(req.M, c, f"{at}.requant", "M")
    check_count(req.B, c, f"{at}.requant", "B")
    if req.G != 0:
        raise UserError(f"{at}.requant: G {req.G} must be 0 (a pool sum carries no beta)")
    info = requant_info([(s_lo, s_hi, req.M, (1, 1))], req, c, shape, at)
    return replace(info, sum_range=(s_lo, s_hi), sum_width=sum_width)


def _infer_conv(node: ConvNode, x: NodeInfo, post_frac_bits: int, at: str) -> NodeInfo:
    act, weight = node.act_in, node.weight
    src = node.inputs[0]
    if node.op == "fc":
        if len(x.shape) != 1:
            raise UserError(f"{at}: fc takes a flat (C,) input, {src!r} has shape {list(x.shape)} (flatten it)")
        c_in, c_out = x.shape[0], weight.shape[0]
        expect = (c_out, c_in)
        out_shape, fan_in = (c_out,), c_in
    else:
        if len(x.shape) != 3:
            raise UserError(f"{at}: conv takes a (C, H, W) map, {src!r} has shape {list(x.shape)}")
        c_in, h, w = x.shape
        c_out, groups = weight.shape[0], node.groups
        if c_in % groups or c_out % groups:
            raise UserError(f"{at}: groups {groups} must divide the input channels {c_in} and the output "
                            f"channels {c_out}")
        expect = (c_out, c_in // groups, node.kernel, node.kernel)
        out_shape = (c_out, *_out_hw(h, w, node.kernel, node.stride, node.pad, at))
        fan_in = (c_in // groups) * node.kernel * node.kernel
    if tuple(weight.shape) != expect:
        raise UserError(f"{at}.weight: shape {list(weight.shape)} disagrees with the input {src!r} of shape "
                        f"{list(x.shape)} (expected {list(expect)})")
    act_lo, act_hi = code_range(act.bits, act.signed)
    if act.asq is not None:
        if x.kind != "y":
            raise UserError(f"{at}.act_in: an ASQ input takes y, but {src!r} yields {x.kind}")
        if x.frac_bits != act.asq.FY:
            raise UserError(f"{at}.act_in.asq: FY {act.asq.FY} disagrees with {src!r}'s frac_bits {x.frac_bits}")
        if x.lo < 0 or x.hi > formats.Y_MAX:
            raise UserError(f"{at}.act_in: y of {src!r} spans {x.lo}..{x.hi}, the ASQ unit takes 0..{formats.Y_MAX}")
        if act.asq.W1 is not None and len(act.asq.W1[0]) != x.shape[0] or (
                act.asq.W1 is None and len(act.asq.W2) != x.shape[0]):
            raise UserError(f"{at}.act_in.asq: the adapter's width disagrees with {x.shape[0]} input channels")
        for key, value in (("channels", x.shape[0]), ("hw", math.prod(x.shape[1:]))):
            if getattr(act.asq, key) not in (None, value):
                raise UserError(f"{at}.act_in.asq: {key} {getattr(act.asq, key)} disagrees with the input {src!r} "
                                f"({value})")
        beta = (act.asq.beta_min, act.asq.beta_max, act.asq.G)
    else:
        if x.kind != "codes":
            raise UserError(f"{at}.act_in: an LSQ input takes codes, but {src!r} yields {x.kind}")
        if x.lo < act_lo or x.hi > act_hi:
            raise UserError(f"{at}.act_in: codes of {src!r} span {x.lo}..{x.hi}, outside the "
                            f"{'signed' if act.signed else 'unsigned'} {act.bits}-bit range {act_lo}..{act_hi}")
        beta = None
    pmin, pmax = arith.product_range(act_lo, act_hi, weight.kind, weight.bits, post_frac_bits)
    acc_width = _fits(arith.acc_width(fan_in, pmin, pmax), at, "the accumulator")
    a_lo, a_hi = fan_in * min(pmin, 0), fan_in * max(pmax, 0)
    facts = {"fan_in": fan_in, "product_range": (pmin, pmax), "acc_range": (a_lo, a_hi), "acc_width": acc_width}
    req = node.requant
    if req is None:
        return NodeInfo(shape=out_shape, kind="acc", lo=a_lo, hi=a_hi, width=acc_width, beta=beta, **facts)
    if req.G != (0 if beta is None else beta[2]):
        raise UserError(f"{at}.requant: G {req.G} disagrees with the input's beta format "
                        f"(G = {0 if beta is None else beta[2]})")
    g = (1, 1) if beta is None else beta[:2]
    return replace(requant_info([(a_lo, a_hi, req.M, g)], req, c_out, out_shape, at), **facts)


def _infer_add(node: AddNode, main: NodeInfo, skip: NodeInfo, at: str) -> NodeInfo:
    if main.shape != skip.shape:
        raise UserError(f"{at}: the branches' shapes differ: {node.inputs[0]!r} {list(main.shape)}, "
                        f"{node.inputs[1]!r} {list(skip.shape)}")
    req = node.requant
    channels = main.shape[0]
    for key in ("M", "A", "B"):
        check_count(getattr(req, key), channels, f"{at}.requant", key)
    g_main = _g_range(main, req.G, at, f"main branch {node.inputs[0]!r}")
    g_skip = _g_range(skip, req.G, at, f"skip branch {node.inputs[1]!r}")
    if req.G and main.beta is None and skip.beta is None:
        raise UserError(f"{at}.requant: G {req.G} but neither branch carries a beta (G must be 0)")
    terms = [(main.lo, main.hi, req.M, g_main), (skip.lo, skip.hi, req.A, g_skip)]
    return requant_info(terms, req, channels, main.shape, at)


# ----------------------------------------------------------------------------- writing


def _info_fields(node: Node, info: NodeInfo) -> dict:
    out = {}
    if isinstance(node, ConvNode):
        out = {"fan_in": info.fan_in, "product_range": list(info.product_range), "acc_width": info.acc_width}
    elif isinstance(node, PoolNode) and node.op != "maxpool":
        out = {"sum_width": info.sum_width}
    return out


def _requant_widths(info: NodeInfo) -> dict:
    return {"M_width": info.M_width, "B_width": info.B_width, "t_width": info.t_width, "out_width": info.width}


def node_dict(node: Node, info: NodeInfo) -> dict:
    """The canonical JSON object of one node (its fields, then the derived ones)."""
    out = {"name": node.name, "op": node.op, "inputs": list(node.inputs), "out_shape": list(info.shape)}
    if isinstance(node, InputNode):
        out.update(shape=list(node.shape), bits=node.bits, signed=node.signed)
    elif isinstance(node, ConvNode):
        if node.op == "conv":
            out.update(kernel=node.kernel, stride=node.stride, pad=node.pad, groups=node.groups)
        out.update(_info_fields(node, info))
        out.update(act_in=json_value(node.act_in), weight=json_value(node.weight),
                   requant=None if node.requant is None else node.requant.to_dict(_requant_widths(info)))
    elif isinstance(node, AddNode | RequantNode):
        out["requant"] = node.requant.to_dict(_requant_widths(info))
    elif isinstance(node, ClampNode):
        out.update(lo=node.lo, hi=node.hi)
    elif isinstance(node, PoolNode):
        if node.op != "gap":
            out.update(kernel=node.kernel, stride=node.stride, pad=node.pad)
        out.update(_info_fields(node, info))
        if node.op != "maxpool":
            out["requant"] = None if node.requant is None else node.requant.to_dict(_requant_widths(info))
    return out


def _check_recorded(raw: dict, node: Node, info: NodeInfo, at: str) -> None:
    """Derived fields present in the JSON must equal the proved ones."""
    canon = node_dict(node, info)
    derived = {"out_shape": canon["out_shape"], **_info_fields(node, info)}
    for key, value in derived.items():
        if key in raw and raw[key] != value:
            raise UserError(f"{at}: {key} {raw[key]} recorded, {value} derived from the graph")
    req = raw.get("requant")
    if isinstance(req, dict) and canon.get("requant"):
        for key, value in _requant_widths(info).items():
            if key in req and req[key] != value:
                raise UserError(f"{at}.requant: {key} {req[key]} recorded, {value} proved")


# ----------------------------------------------------------------------------- running


def _per_channel(values, ndim: int) -> np.ndarray:
    """Constants per channel shaped to broadcast over ``(N, C, ...)`` of ``ndim`` dimensions."""
    return np.asarray(values, dtype=np.int64).reshape((-1,) + (1,) * (ndim - 2))


def _per_sample(g, ndim: int):
    return g if isinstance(g, int) else np.asarray(g, dtype=np.int64).reshape((-1,) + (1,) * (ndim - 1))


def _requant(x: np.ndarray, req: Requantizer, g=1) -> np.ndarray:
    return arith.requantize(x, _per_channel(req.M, x.ndim), _per_channel(req.B, x.ndim), req.S,
                            g=_per_sample(g, x.ndim), G=req.G, lo=req.lo, hi=req.hi)


def _windows(x: np.ndarray, kernel: int, stride: int, pad: int, fill: int, reduce) -> np.ndarray:
    """Reduce every ``kernel x kernel`` window (padding with ``fill``) of ``(N, C, H, W)`` with ``reduce``."""
    n, c, h, w = x.shape
    ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    out = None
    for ky in range(kernel):
        for kx in range(kernel):
            part = xp[:, :, ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
            out = part.copy() if out is None else reduce(out, part)
    return out


def _accumulate(node: ConvNode, codes: np.ndarray, weights: np.ndarray, post_frac_bits: int,
                out_shape: tuple) -> np.ndarray:
    """The node's accumulators, one :func:`golden.model.accumulate_codes` per group."""
    w = node.weight
    if node.op == "fc":
        acc = accumulate_codes(codes, weights, w.kind, w.bits, node.act_in.bits, post_frac_bits)
        return acc.reshape(codes.shape[0], -1)
    groups = node.groups
    c_in, c_out = codes.shape[1] // groups, weights.shape[0] // groups
    parts = [accumulate_codes(codes[:, g * c_in:(g + 1) * c_in], weights[g * c_out:(g + 1) * c_out], w.kind, w.bits,
                              node.act_in.bits, post_frac_bits, kernel=node.kernel, stride=node.stride, pad=node.pad)
             for g in range(groups)]
    return np.concatenate(parts, axis=1).reshape((codes.shape[0],) + tuple(out_shape))


def check_weights(graph: Graph, weights: dict) -> None:
    """Every conv/fc node's weights present, of its shape, and codes of its kind and width."""
    for node in graph.nodes:
        if not isinstance(node, ConvNode):
            continue
        w = weights.get(node.name)
        at = f"weights of node {node.name!r}"
        if w is None:
            raise UserError(f"{at}: missing")
        w = np.asarray(w)
        if w.dtype.kind not in "iu" or tuple(w.shape) != tuple(node.weight.shape):
            raise UserError(f"{at}: integer array of shape {list(node.weight.shape)} expected, got "
                            f"{w.dtype} {list(w.shape)}")
        kind, bits = node.weight.kind, node.weight.bits
        lo, hi = code_range(bits, True) if kind == formats.INT else (0, (1 << bits) - 1)
        if w.size and (w.min() < lo or w.max() > hi):
            raise UserError(f"{at}: codes outside {lo}..{hi} ({kind}, {bits} bits)")


def run_graph(graph: Graph, weights: dict, input_codes) -> dict:
    """Golden inference of a batch through ``graph`` (integer NumPy only).

    Parameters
    ----------
    graph : Graph
    weights : dict of str -> integer array
        Per conv/fc node, its weight codes shaped as ``node.weight.shape`` (signed values for
        ``int``, raw sign-magnitude codes for ``pot``/``post``, as :class:`golden.bundle.Bundle`).
    input_codes : integer array (N, *shape of the input node)

    Returns
    -------
    dict of str -> int64 array
        ``"<node>"``: every node's output (N, *shape); for conv/fc nodes also ``"<node>.in"``
        (the codes multiplied, after the ASQ unit for an ASQ input), ``"<node>.acc"`` and, for an
        ASQ input, ``"<node>.beta"`` (N,).
    """
    check_weights(graph, weights)
    x = np.asarray(input_codes)
    inp = next(n for n in graph.nodes if n.op == "input")
    info = graph.info(inp.name)
    if x.dtype.kind not in "iu":
        raise UserError(f"input codes must be integers, got dtype {x.dtype}")
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(info.shape):
        raise UserError(f"input codes have shape {list(x.shape[1:])}, the graph expects {list(info.shape)}")
    if x.size and (x.min() < info.lo or x.max() > info.hi):
        raise UserError(f"input codes outside {info.lo}..{info.hi}")
    out: dict = {}
    betas: dict = {}
    for node in graph.nodes:
        name = node.name
        args = [out[i] for i in node.inputs]
        if node.op == "input":
            result = x.astype(np.int64)
        elif isinstance(node, ConvNode):
            codes, beta = args[0], None
            if node.act_in.asq is not None:
                codes, beta = arith.asq_unit(codes, node.act_in.asq_constants())
                out[f"{name}.beta"] = beta
            out[f"{name}.in"] = codes
            acc = _accumulate(node, codes, np.asarray(weights[name], dtype=np.int64), graph.post_frac_bits,
                              graph.info(name).shape)
            out[f"{name}.acc"] = acc
            if node.requant is None:
                result, betas[name] = acc, beta
            else:
                result = _requant(acc, node.requant, 1 if beta is None else beta)
        elif isinstance(node, AddNode):
            result = _add(node.requant, args, [betas.get(i) for i in node.inputs])
        elif isinstance(node, RequantNode):
            beta = betas.get(node.inputs[0])
            result = _requant(args[0], node.requant, 1 if beta is None else beta)
        elif isinstance(node, ClampNode):
            result = arith.clamp(args[0], node.lo, node.hi)
        elif node.op == "maxpool":
            result = _windows(args[0], node.kernel, node.stride, node.pad, np.iinfo(np.int64).min, np.maximum)
        elif node.op in ("avgpool", "gap"):
            if node.op == "gap":
                total = args[0].sum(axis=(2, 3), keepdims=True)
            else:
                total = _windows(args[0], node.kernel, node.stride, node.pad, 0, np.add)
            result = total if node.requant is None else _requant(total, node.requant)
        else:  # flatten
            result = args[0].reshape(args[0].shape[0], -1)
            betas[name] = betas.get(node.inputs[0])
        out[name] = np.asarray(result, dtype=np.int64)
    return out


def _add(req: Requantizer, args: list, betas: list) -> np.ndarray:
    """``t = main*M*g_m + skip*A*g_s + (B << G)``, ``out = clamp(rshift_round(t, S + G), lo, hi)``."""
    main, skip = (np.asarray(a, dtype=np.int64) for a in args)
    nd = main.ndim

    def g(beta):
        return np.int64(1 << req.G) if beta is None else _per_sample(beta, nd)

    t = (main * _per_channel(req.M, nd) * g(betas[0]) + skip * _per_channel(req.A, nd) * g(betas[1])
         + (_per_channel(req.B, nd) << req.G))
    return arith.clamp(arith.rshift_round(t, req.S + req.G), req.lo, req.hi)


def predictions(graph: Graph, result: dict) -> np.ndarray:
    """The predicted class of each sample: the first index of the largest output value."""
    return np.argmax(result[graph.output].reshape(result[graph.output].shape[0], -1), axis=1)


# ----------------------------------------------------------------------------- format 1 -> graph


def graph_from_chain(manifest: Manifest) -> Graph:
    """A format-1 chain (conv/fc layers in order) as a format-2 graph computing the same integers.

    Nodes: ``input``, then one node per layer with the layer's name (a ``flatten`` named
    ``<layer>_flat`` before each fc layer whose input is a map); the output is the last layer.
    ``run_graph`` on it gives exactly :func:`golden.model.run`'s ``<layer>.in``, ``.acc``,
    ``.beta`` and logits.
    """
    inp = manifest.input
    nodes: list = [InputNode(name="input", op="input", inputs=(), shape=tuple(inp.shape), bits=inp.bits,
                             signed=inp.signed)]
    prev, prev_shape = "input", tuple(inp.shape)
    for layer in manifest.layers:
        if not layer.is_conv and len(prev_shape) != 1:
            nodes.append(FlattenNode(name=f"{layer.name}_flat", op="flatten", inputs=(prev,)))
            prev = f"{layer.name}_flat"
        r = layer.requant
        requant = Requantizer(M=tuple(r.M), B=tuple(r.B), S=r.S, G=r.G, output=r.output, lo=r.lo, hi=r.hi,
                              frac_bits=r.frac_bits)
        conv = layer.is_conv
        nodes.append(ConvNode(name=layer.name, op=layer.kind, inputs=(prev,), kernel=layer.kernel,
                              stride=layer.stride, pad=layer.pad, groups=1 if conv else None, act_in=layer.act_in,
                              weight=layer.weight, requant=requant))
        prev, prev_shape = layer.name, tuple(layer.out_shape)
    return Graph.build(nodes, prev, manifest.post_frac_bits, "graph_from_chain")


# ----------------------------------------------------------------------------- the format-2 bundle

#: Per-node golden vectors of a graph that is not a chain are stored for the first this many test
#: images (predictions and logits for every test image): enough for an RTL run (any other image's
#: are recomputed from its pixels by :func:`run_graph`), small enough to ship a ResNet-20 bundle
#: (about 2 MB of vectors). A chain-shaped graph (digits) stores them for every test image
#: (:func:`node_vector_images`).
NODE_VECTOR_IMAGES = 8


def node_vector_images(graph: Graph, n: int) -> int:
    """How many of the ``n`` test images a bundle of ``graph`` stores per-node vectors for: all ``n``
    for a chain-shaped graph (:func:`is_chain`: it runs on the chain accelerator, whose simulation
    checks every layer's codes on every image of the split), else ``min(n, NODE_VECTOR_IMAGES)``."""
    return n if is_chain(graph) else min(n, NODE_VECTOR_IMAGES)


#: What a reader of layer chains (the chain accelerator's generator) says when handed a graph read as it
#: is (:func:`golden.model.load_bundle` gives a chain-shaped graph's chain view instead).
_NO_CHAIN = ("{what}: a format-2 (graph) bundle has no layer chain; this command reads format-1 bundles "
             "and chain-shaped graphs (digits: golden.model.load_bundle gives their chain view)")


@dataclass(frozen=True)
class GraphManifest(ManifestText):
    """The parsed ``manifest.json`` of a format-2 bundle (``docs/arithmetic.md`` 7.8).

    As :class:`golden.bundle.Manifest` (its checksum and text from :class:`golden.bundle.ManifestText`),
    with ``graph`` (a validated :class:`Graph`) instead of
    ``layers``; ``files`` and ``sha256`` are the checksums :func:`golden.bundle.write_bundle` records.
    """

    format_version: int
    model: str
    scheme: str
    bits: int
    post_frac_bits: int
    input: object
    graph: Graph
    accuracy: dict
    vectors: str | None = None
    files: dict | None = None
    sha256: str | None = None

    def to_dict(self) -> dict:
        out = {"format_version": self.format_version, "model": self.model, "scheme": self.scheme, "bits": self.bits,
               "post_frac_bits": self.post_frac_bits, "input": self.input.to_dict(), "graph": self.graph.to_dict(),
               "accuracy": self.accuracy}
        for key in ("vectors", "files", "sha256"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @property
    def layers(self):
        raise UserError(_NO_CHAIN.format(what="manifest"))

    def weight_specs(self) -> list:
        """``(node name, WeightSpec)`` of every conv/fc node, in graph order."""
        return [(n.name, n.weight) for n in self.graph.nodes if isinstance(n, ConvNode)]

    def named_files(self) -> list:
        return [w.mem for _, w in self.weight_specs()] + ([self.vectors] if self.vectors else [])


@dataclass(frozen=True)
class GraphBundle:
    """A format-2 bundle in memory: ``manifest`` (:class:`GraphManifest`), ``weights`` (codes per
    conv/fc node, as :func:`run_graph` takes them), ``vectors`` (see :func:`graph_vector_shapes`)
    and ``path``."""

    manifest: GraphManifest
    weights: dict
    vectors: dict
    path: object = None

    @property
    def graph(self) -> Graph:
        return self.manifest.graph

    @property
    def layers(self):
        raise UserError(_NO_CHAIN.format(what=self.path or "bundle"))


def _middle_layers(graph: Graph) -> set:
    """Names of the conv/fc nodes at the manifest's BITS and scheme: all but the first ones (fed by
    the input node) and the last (the classifier), which stay 8-bit as in a format-1 chain."""
    ops = {n.name: n.op for n in graph.nodes}
    convs = [n for n in graph.nodes if isinstance(n, ConvNode)]
    return {n.name for n in convs[:-1] if ops.get(n.inputs[0]) != "input"}


def parse_graph_manifest(man: dict, where: str) -> GraphManifest:
    """Validate the JSON object of a format-2 manifest (``format_version`` 2) and return it typed."""
    from golden import bundle as b

    if not isinstance(man, dict):
        raise UserError(f"{where}: top level must be a JSON object")
    version = b._need(man, "format_version", where, int)
    if version != GRAPH_FORMAT_VERSION:
        raise UserError(f"{where}: format_version {version} is not a graph bundle's ({GRAPH_FORMAT_VERSION})")
    known = ("format_version", "model", "scheme", "bits", "post_frac_bits", "input", "graph", "accuracy", "vectors",
             "files", "sha256")
    _no_unknown(man, known, where)
    model, scheme = (b._need(man, key, where, str) for key in ("model", "scheme"))
    if not model:
        raise UserError(f"{where}: field 'model' is empty")
    if scheme not in formats.BUNDLE_SCHEMES:
        raise UserError(f"{where}: field 'scheme' is {scheme!r}, not a quantization scheme "
                        f"({', '.join(formats.BUNDLE_SCHEMES)})")
    bits = b._need(man, "bits", where, int)
    if bits not in formats.INT_BITS:
        raise UserError(f"{where}: bits {bits} outside {formats.range_text(formats.INT_BITS)}")
    post_frac_bits = b._need(man, "post_frac_bits", where, int)
    b._within(post_frac_bits, 0, formats.MAX_POST_FRAC_BITS, where, "post_frac_bits")
    inp = b.InputSpec.from_dict(b._need(man, "input", where, dict), f"{where}: input")
    b._check_input(inp, f"{where}: input")
    graph = Graph.from_dict(b._need(man, "graph", where, dict), post_frac_bits, f"{where}: graph")
    first = next(n for n in graph.nodes if n.op == "input")
    if (tuple(first.shape), first.bits, first.signed) != (tuple(inp.shape), inp.bits, inp.signed):
        raise UserError(f"{where}: graph input node {first.name!r} (shape {list(first.shape)}, bits {first.bits}, "
                        f"signed {first.signed}) disagrees with field 'input'")
    act_quant, weight_kind = formats.BUNDLE_SCHEMES[scheme]
    middle = _middle_layers(graph)
    for node in graph.nodes:
        if isinstance(node, ConvNode):
            at = f"{where}: graph: node {node.name!r}"
            act, w = node.act_in, node.weight
            if node.name in middle:
                # What the manifest claims (BITS, scheme) must be what its layers are, as in format 1.
                b._equal(act.bits, bits, f"{at}.act_in", "bits", f"the manifest's bits {bits}")
                b._equal(w.bits, bits, f"{at}.weight", "bits", f"the manifest's bits {bits}")
                b._equal(act.quant, act_quant, f"{at}.act_in", "quant", f"scheme {scheme!r}")
                b._equal(w.kind, weight_kind, f"{at}.weight", "kind", f"scheme {scheme!r}")
            b._all_finite([act.step], f"{at}.act_in", "step", positive=True)
            b._all_finite(w.scale, f"{at}.weight", "scale", positive=True)
            b._within(w.unit_exp, -b._INT64_BITS, b._INT64_BITS, f"{at}.weight", "unit_exp")
            if w.unit_exp != arith.weight_unit_exponent(w.kind, w.bits, post_frac_bits):
                raise UserError(f"{at}.weight: field 'unit_exp' is {w.unit_exp}, expected "
                                f"{arith.weight_unit_exponent(w.kind, w.bits, post_frac_bits)}; re-export the bundle")
            if act.asq is not None:
                b._check_asq(act.asq, act.bits, f"{at}.act_in.asq")
                if node.requant is not None and node.requant.G != act.asq.G:
                    raise UserError(f"{at}.requant: G {node.requant.G} disagrees with the ASQ beta's {act.asq.G}")
    accuracy = b._need(man, "accuracy", where, dict)
    vectors = b._optional(man, "vectors", where, str)
    files = b._optional(man, "files", where, dict)
    sha256 = b._optional(man, "sha256", where, str)
    manifest = GraphManifest(format_version=version, model=model, scheme=scheme, bits=bits,
                             post_frac_bits=post_frac_bits, input=inp, graph=graph, accuracy=accuracy,
                             vectors=vectors, files=files, sha256=sha256)
    b.check_file_names(manifest.named_files(), manifest.files, where)
    return manifest


def graph_vector_shapes(man: GraphManifest, n: int, k: int) -> dict:
    """The shape of every golden vector of a format-2 bundle: for all ``n`` test images ``pixels``,
    ``labels``, ``float_pred``, ``pred`` and ``logits`` (the output node's values); for the first
    ``k`` (:func:`node_vector_images`) every node's output that is not a raw sum (``acc``)
    under the node's name, and for a conv/fc node with an ASQ input ``<node>.in`` (its codes) and
    ``<node>.beta``."""
    g = man.graph
    shapes = {"pixels": (n, *man.input.shape), "labels": (n,), "float_pred": (n,), "pred": (n,),
              "logits": (n, *g.info(g.output).shape)}
    for node, info in zip(g.nodes, g.infos, strict=True):
        if info.kind != "acc":
            shapes[node.name] = (k, *info.shape)
        if isinstance(node, ConvNode) and node.act_in.asq is not None:
            shapes[f"{node.name}.in"] = (k, *g.info(node.inputs[0]).shape)
            shapes[f"{node.name}.beta"] = (k,)
    return shapes


def graph_vector_arrays(graph: Graph, result: dict, pixels, labels, float_pred, k: int | None = None) -> dict:
    """The golden vectors of a format-2 bundle from :func:`run_graph`'s ``result`` (see
    :func:`graph_vector_shapes`), each in the smallest integer type that holds it."""
    from golden.model import _smallest_int

    n = len(labels)
    k = node_vector_images(graph, n) if k is None else k
    out = {"pixels": np.asarray(pixels).astype(np.uint8) if np.max(pixels, initial=0) < 256 else np.asarray(pixels),
           "labels": np.asarray(labels), "float_pred": np.asarray(float_pred), "pred": predictions(graph, result),
           "logits": result[graph.output]}
    for node, info in zip(graph.nodes, graph.infos, strict=True):
        if info.kind != "acc":
            out[node.name] = result[node.name][:k]
        if isinstance(node, ConvNode) and node.act_in.asq is not None:
            out[f"{node.name}.in"] = result[f"{node.name}.in"][:k]
            out[f"{node.name}.beta"] = result[f"{node.name}.beta"][:k]
    return {key: _smallest_int(v) for key, v in out.items()}


def check_graph_vectors(man: GraphManifest, vecs: dict, where: str) -> None:
    """The vectors hold exactly the keys of :func:`graph_vector_shapes`, integer arrays of those shapes."""
    n = man.accuracy.get("n_test")
    if type(n) is not int:
        n = np.shape(vecs["pixels"])[0] if "pixels" in vecs and np.ndim(vecs["pixels"]) else 0
    shapes = graph_vector_shapes(man, n, node_vector_images(man.graph, n))
    if sorted(vecs) != sorted(shapes):
        missing = sorted(set(shapes) - set(vecs)) or sorted(set(vecs) - set(shapes))
        raise UserError(f"{where}: keys differ from the graph's (first difference: {missing[0]!r}); re-export the "
                        "bundle")
    check_vector_arrays(vecs, shapes, man.input.pixel_max, where)


def pixels_to_input(man: GraphManifest, pixels) -> np.ndarray:
    """The graph input codes of integer pixels (``0 .. pixel_max``) through the manifest's ``input.lut``."""
    pixels = np.asarray(pixels)
    top = man.input.pixel_max
    if pixels.dtype.kind not in "iu" or (pixels.size and (pixels.min() < 0 or pixels.max() > top)):
        raise UserError(f"input pixels must be integers 0..{top}")
    return np.asarray(man.input.lut, dtype=np.int64)[pixels]


# ----------------------------------------------------------------------------- graph -> format-1 chain


def chain_layers(graph: Graph) -> tuple:
    """The format-1 layers (:class:`golden.bundle.Layer`) of a chain-shaped graph, the inverse of
    :func:`graph_from_chain`.

    A chain: ``input``, then conv/fc nodes each reading the previous one and each with its
    requantizer (a ``flatten`` allowed before an fc), the last one the output. The requantizers'
    recorded widths are format 1's (section 3's symmetric bound), so the layers equal those a
    format-1 export of the same network records. Raises :class:`UserError` naming the first node
    that breaks the chain.
    """
    from golden.bundle import Layer, Requant

    layers = []
    prev = None
    for node, info in zip(graph.nodes, graph.infos, strict=True):
        at = f"node {node.name!r}"
        if node.op == "input":
            prev = node.name
            continue
        if node.inputs != (prev,):
            raise UserError(f"{at}: not a chain (reads {list(node.inputs)}, the previous node is {prev!r})")
        if node.op == "flatten":
            prev = node.name
            continue
        if not isinstance(node, ConvNode) or node.requant is None:
            raise UserError(f"{at}: a chain holds conv/fc layers with their requantizers only, not {node.op!r}"
                            + (" without a requantizer" if isinstance(node, ConvNode) else ""))
        r = node.requant
        g_max = formats.BETA_MAX if r.G else 1
        acc_bound = info.fan_in * max(-info.product_range[0], info.product_range[1])
        t_bound = acc_bound * max(abs(m) for m in r.M) * g_max + max(abs(b) for b in r.B) * (1 << r.G)
        out_bound = int(arith.rshift_round(t_bound, r.S + r.G)) + 1
        out_width = arith.signed_width(-out_bound, out_bound) if r.hi is None else arith.unsigned_width(r.hi)
        requant = Requant(M=r.M, B=r.B, S=r.S, G=r.G, output=r.output, lo=r.lo, hi=r.hi, frac_bits=r.frac_bits,
                          M_width=arith.signed_width(min(r.M), max(r.M)),
                          B_width=arith.signed_width(min(min(r.B), 0), max(max(r.B), 0)),
                          t_width=arith.signed_width(-t_bound, t_bound), out_width=out_width)
        conv = node.op == "conv"
        if conv and node.groups != 1:
            raise UserError(f"{at}: groups {node.groups}; a format-1 chain has dense convolutions only")
        layers.append(Layer(name=node.name, kind=node.op, in_shape=tuple(graph.info(prev).shape),
                            out_shape=tuple(info.shape), kernel=node.kernel, stride=node.stride, pad=node.pad,
                            fan_in=info.fan_in, act_in=node.act_in, weight=node.weight,
                            product_range=tuple(info.product_range), acc_width=info.acc_width, requant=requant))
        prev = node.name
    if prev != graph.output:
        raise UserError(f"node {graph.output!r}: the output is not the last layer of the chain")
    return tuple(layers)


def is_chain(graph: Graph) -> bool:
    """Whether ``graph`` is chain-shaped (:func:`chain_layers` takes it): the chain accelerator runs it."""
    try:
        chain_layers(graph)
    except UserError:
        return False
    return True


def chain_vectors(graph: Graph, vectors: dict) -> dict:
    """The format-1 golden vectors (:func:`golden.bundle.vector_shapes`) of a chain-shaped graph's
    vectors: every image's ``pixels``, ``labels``, ``float_pred``, ``pred``, ``logits``, and per layer
    ``<layer>.in`` (the codes it reads: its ASQ unit's ``<layer>.in``, else its input node's output)
    and ``<layer>.beta``. Empty when ``vectors`` is (a bundle read without them)."""
    if not vectors:
        return {}
    out = {key: vectors[key] for key in ("pixels", "labels", "float_pred", "pred", "logits")}
    for layer in chain_layers(graph):
        node = graph.node(layer.name)
        if node.act_in.asq is not None:
            out[f"{layer.name}.in"] = vectors[f"{layer.name}.in"]
            out[f"{layer.name}.beta"] = vectors[f"{layer.name}.beta"]
        else:
            out[f"{layer.name}.in"] = vectors[node.inputs[0]]
    return out


def chain_bundle(bundle: GraphBundle):
    """A chain-shaped format-2 bundle as the format-1 :class:`golden.bundle.Bundle` the chain
    accelerator's generator, estimator and simulation read (same layers, weights and input, and the
    vectors in format 1's keys, :func:`chain_vectors`). The manifest is validated as a format-1
    manifest and the vectors as format-1 vectors."""
    from golden.bundle import FORMAT_VERSION, Bundle, Manifest, check_vectors, parse_manifest

    man = bundle.manifest
    where = f"{bundle.path or 'bundle'} (as a chain)"
    chain = Manifest(format_version=FORMAT_VERSION, model=man.model, scheme=man.scheme, bits=man.bits,
                     post_frac_bits=man.post_frac_bits, input=man.input, layers=chain_layers(man.graph),
                     accuracy=man.accuracy)
    chain = parse_manifest(chain.to_dict(), where)
    vectors = chain_vectors(man.graph, bundle.vectors)
    if vectors:
        check_vectors(chain, vectors, where)
    return Bundle(manifest=chain, weights=dict(bundle.weights), vectors=vectors, path=bundle.path)
