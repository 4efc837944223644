"""The engine's memory planner: a format-2 graph -> layer descriptors, ROM contents and a memory map.

The descriptor-driven engine (:class:`hw.rtl.engine.core.GraphEngine`) runs a graph as a list of
*steps*, one descriptor each, in order:

- ``conv``: a convolution (grouped and depthwise too), an fc layer, an average or a max pool
  (below) on a MAC array, one group of PE output channels and one output pixel at a time, its
  accumulators through the engine's requantizer. A conv whose raw
  accumulator feeds only the main branch of a residual ``add`` is fused with it: the step runs at
  the add's place, reads the skip branch at the position it writes and uses the add's two-term
  requantizer. A conv without requantizer that is not fused (a 1x1 shortcut) stores its raw
  accumulator (the requantizer with identity constants).
- ``pointwise``: one value of a stored tensor at a time through the requantizer: a ``requant``
  node, a ``clamp`` (identity constants, the clamp's bounds), an ``add`` that could not be fused,
  and a GAP's requantizer.
- ``asq``: the ASQ unit in front of a conv with an ASQ input, right before that conv's step: a
  pass over the ``y`` map into the unit's GAP, the adapter (beta and the reciprocal), then a pass
  quantizing the map into a codes tensor the conv reads. The beta stays in a register for the conv
  step's requantizer (``t = acc * beta * M + ...``).

A ``gap`` is not a step: its producer's step sums every value it writes per channel (on the way
out of the requantizer) and stores the sums; a ``flatten`` is free (the stored (C, H, W) order is
the flat order). Every stored tensor lives in the activation memory at a base address chosen by
liveness: a tensor occupies its words from the step that writes it to the last step that reads it,
and tensors whose lives overlap never share a word (so a step never overwrites what it reads).
On a residual network this is the ping-pong pair plus the skip buffer of the block input. The
memory has one or two banks by value width (narrow codes apart from wide accumulators, ``y``,
sums and logits) when two store fewer bits, each bank placed by liveness on its own. All
weights of a MAC array sit in its one ROM (a word holds the PE codes of one input position, each as
wide as the array's weights: 3-bit POST codes are not stored in the 8-bit slots of the int layers)
and all per-channel constants in one table; the descriptors hold the base addresses.

A raw accumulator carrying an ASQ beta that an add reads as its skip branch (a ResNet's 1x1
shortcut after an ASQ input) is stored multiplied by its beta (the identity requantizer with the
beta register), and the add's skip constants ``A`` are then not multiplied by ``2^G``.

:func:`plan_graph` refuses (``asqhw.errors.UserError``, naming the node) what the engine does not
run yet: a beta on a value a pointwise step requantizes (an add that is not fused), a raw
accumulator carrying a beta read other than as an add's skip branch.

Grouped convolutions (depthwise included) run as convolutions whose PE groups never straddle two
convolution groups (a depthwise layer keeps one lane of PE busy); an average pool runs as a
depthwise convolution with weights 1 on a MAC array of its own (2-bit int weights, activations as
wide as the pooled values), its requantizer (``1/(k k)`` folded in) or the identity after it; a max
pool likewise on a max array (:class:`hw.rtl.engine.maxarray.MaxArray`), the identity after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from asqhw.errors import UserError
from golden import arith, formats
from golden.graph import AddNode, ClampNode, ConvNode, FlattenNode, Graph, InputNode, PoolNode, RequantNode
from hw.rtl.mul import product_shape

#: Step kinds (the descriptor's ``kind`` field holds the index).
STEP_KINDS = ("conv", "pointwise", "asq")


@dataclass(frozen=True)
class ArraySpec:
    """One MAC array of the engine: every conv/fc whose weights have this format runs on it.

    ``int`` weights of any width share one array (codes sign-extended to ``w_bits``, activations
    signed ``act_bits`` wide, wide enough for every int layer's signed or unsigned codes); POST and
    POT get one array per weight width (their codes are not nested), unsigned activations; average
    pools an int array of their own (weights 1); max pools a ``max`` array (no weights).
    """

    kind: str
    w_bits: int
    act_bits: int
    act_signed: bool
    acc_width: int


@dataclass
class TensorPlan:
    """A value stored in the activation memory: ``shape`` (C, H, W) (flat values as (C, 1, 1)),
    values in ``[lo, hi]``, written by step ``first`` (-1: the input, loaded before the run) and
    last read by step ``last`` (the step count for the output, read after the run), at ``base``."""

    name: str
    shape: tuple
    lo: int
    hi: int
    first: int = -1
    last: int = -1
    base: int = 0
    #: The activation bank holding it (see :attr:`EnginePlan.banks`).
    bank: int = 0

    @property
    def words(self) -> int:
        return int(np.prod(self.shape))

    @property
    def width(self) -> int:
        """Signed width of a stored value (every word is signed)."""
        return arith.signed_width(min(self.lo, 0), max(self.hi, 0))


@dataclass
class StepPlan:
    """One descriptor. ``src``/``skip``/``dst``/``gap`` name tensors (None: absent); shapes are the
    step's input (``c_in, h_in, w_in``) and output (``c_out, h_out, w_out``); a pointwise step has
    kernel 1, stride 1, pad 0 and equal shapes. ``M``, ``A``, ``B`` (with the rounding half folded
    in), ``shift``, ``lo``, ``hi``: its requantizer (``A`` zeros without a skip)."""

    index: int
    name: str
    nodes: tuple
    kind: str
    src: str
    dst: str | None
    c_in: int
    h_in: int
    w_in: int
    c_out: int
    h_out: int
    w_out: int
    M: tuple
    A: tuple
    B: tuple
    shift: int
    lo: int | None
    hi: int | None
    skip: str | None = None
    gap: str | None = None
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    array: int = 0
    weight_base: int = 0
    weight_words: int = 0
    const_base: int = 0
    #: Passes over the output map: ``conv_groups * pgroups`` PE groups of output channels.
    groups: int = 1
    #: The engine's PE (set by the plan).
    pe: int = 1
    #: conv steps: the main term is multiplied by the beta of the ASQ step before (the register).
    beta: bool = False
    #: asq steps: the index of the ASQ unit's configuration.
    asq: int = 0
    #: conv steps: the convolution's groups (input channels ``c_in / conv_groups`` per output).
    conv_groups: int = 1

    @property
    def cout_g(self) -> int:
        """Output channels per convolution group."""
        return self.c_out // self.conv_groups

    @property
    def pgroups(self) -> int:
        """PE groups per convolution group (a PE group never straddles two convolution groups)."""
        return -(-self.cout_g // self.pe)

    @property
    def items(self) -> int:
        """Input positions summed per output value: ``(c_in / conv_groups) k k``."""
        return self.c_in // self.conv_groups * self.kernel * self.kernel


@dataclass
class EnginePlan:
    """Everything the engine is built from, and the memory map it reports.

    Attributes
    ----------
    pe : int
        Output channels computed in parallel.
    steps : list of StepPlan
    tensors : dict of str -> TensorPlan
        Every stored tensor, by name (a node's name, ``<gap>.sum`` for a GAP's raw sums).
    input, output : str
        The tensors loaded before and read after the run.
    arrays : list of ArraySpec
    weight_roms : list of list of list of int
        Per MAC array its weight ROM: each word the PE raw codes (``ArraySpec.w_bits`` wide,
        zero-padded channels).
    constants : list of tuple
        The constant table: ``(M, A, B)`` per channel of every step, in step order.
    banks : list of tuple
        The activation memory's banks, ``(word_bits, words)`` each: the tensors are split by width
        into at most two banks (narrow codes; wide accumulators, ``y``, sums, logits) when that
        stores fewer bits than one bank as wide as the widest value, each placed by liveness.
    asq_configs : list of tuple
        ``(golden.arith.AsqConstants, channels, pixels, y_max)`` per asq step, in order.
    post_frac_bits : int
        The graph's POST table precision (the MAC arrays' tables).
    """

    pe: int
    steps: list
    tensors: dict
    input: str
    output: str
    arrays: list
    weight_roms: list
    constants: list
    banks: list
    asq_configs: list = field(default_factory=list)
    post_frac_bits: int = formats.DEFAULT_POST_FRAC_BITS

    @property
    def act_width(self) -> int:
        """Width of the engine's activation data path: the widest stored value."""
        return max(t.width for t in self.tensors.values())

    @property
    def act_words(self) -> int:
        """Depth of the deepest bank (sets the address width)."""
        return max(words for _, words in self.banks)

    @property
    def act_bits(self) -> int:
        """Bits of activation memory, all banks."""
        return sum(bits * words for bits, words in self.banks)

    @property
    def acc_width(self) -> int:
        """Width of the requantizer's main operand: a MAC accumulator or a stored value."""
        return max([self.act_width] + [a.acc_width for a in self.arrays])

    def memory_map(self) -> dict:
        """The memory map as a JSON-ready dict (for report.json).

        ``activation``: the banks (word width, depth), the bits in all, the bits a buffer per
        tensor as wide as the widest would need (``bits_without_reuse``) and every tensor's bank,
        base, size and live steps (``[first, last]``: -1 the input, the step count the output);
        ``weights``: per MAC array its ROM (word width: PE codes, depth), the bits in all, and per
        conv/fc step its array, base and size; ``constants``: entries and per step its base;
        ``descriptors``: count and each step's nodes; ``arrays``: the MAC arrays;
        ``asq_units``: ASQ configurations; ``input``/``output``: tensor names.
        """
        tensors = sorted(self.tensors.values(), key=lambda t: (t.bank, t.base, t.first))
        roms = list(zip(self.arrays, self.weight_roms, strict=True))
        return {
            "pe": self.pe,
            "activation": {
                "banks": [{"word_bits": bits, "words": words} for bits, words in self.banks],
                "bits": self.act_bits,
                "bits_without_reuse": self.act_width * sum(t.words for t in self.tensors.values()),
                "tensors": [{"name": t.name, "shape": list(t.shape), "bits": t.width, "bank": t.bank,
                             "base": t.base, "words": t.words, "live": [t.first, t.last]} for t in tensors],
            },
            "weights": {
                "bits": sum(self.pe * a.w_bits * len(rom) for a, rom in roms),
                "roms": [{"array": k, "word_bits": self.pe * a.w_bits, "words": len(rom)}
                         for k, (a, rom) in enumerate(roms)],
                "layers": [{"step": s.name, "array": s.array, "base": s.weight_base, "words": s.weight_words}
                           for s in self.steps if s.kind == "conv"],
            },
            "constants": {"entries": len(self.constants),
                          "steps": [{"step": s.name, "base": s.const_base, "channels": s.c_out}
                                    for s in self.steps]},
            "descriptors": {"count": len(self.steps),
                            "steps": [{"name": s.name, "kind": s.kind, "nodes": list(s.nodes)} for s in self.steps]},
            "asq_units": len(self.asq_configs),
            "arrays": [{"kind": a.kind, "w_bits": a.w_bits, "act_bits": a.act_bits, "act_signed": a.act_signed,
                        "acc_width": a.acc_width} for a in self.arrays],
            "input": self.input, "output": self.output,
        }


def _refuse(node, what: str):
    raise UserError(f"engine: node {node.name!r} ({node.op}): {what} is not supported by the engine yet")


def _map_shape(shape) -> tuple:
    return tuple(shape) if len(shape) == 3 else (int(shape[0]), 1, 1)


def _requant_constants(req, channels: int, with_skip: bool, main_beta: bool = False, at: str = "",
                       skip_beta: bool = False):
    """``(M, A, B', shift, lo, hi)`` of a golden requantizer for the engine's requantizer: a branch
    without beta multiplied by ``2^G`` here, ``B' = (B << G) + 2^(S+G-1)`` (the rounding half), shift
    ``S + G``; ``main_beta``: the main term is multiplied by the beta register in the engine;
    ``skip_beta``: the stored skip value already holds its beta (a raw accumulator stored times its
    beta), so ``A`` is not multiplied by ``2^G``."""
    G = req.G
    if G and not (main_beta or skip_beta):
        raise UserError(f"engine: node {at!r}: a beta on a skip branch or on a requantized stored value "
                        "is not supported by the engine yet")
    shift = req.S + G
    half = (1 << (shift - 1)) if shift else 0
    A = tuple(a if skip_beta else a << G for a in req.A) if with_skip else (0,) * channels
    M = tuple(req.M) if main_beta else tuple(mv << G for mv in req.M)
    return M, A, tuple((b << G) + half for b in req.B), shift, req.lo, req.hi


def _identity(channels: int, lo=None, hi=None):
    return (1,) * channels, (0,) * channels, (0,) * channels, 0, lo, hi


#: Weight code of an average pool's depthwise convolution (a 2-bit int 1).
POOL_WEIGHT_BITS = 2


def _array_key(node):
    if isinstance(node, PoolNode):
        return ("max", 0) if node.op == "maxpool" else ("int", "pool")
    w = node.weight
    return ("int", 0) if w.kind == formats.INT else (w.kind, w.bits)


def plan_graph(graph: Graph, weights: dict, pe: int = 4) -> EnginePlan:
    """Plan the engine's run of ``graph``: steps, tensors at addresses reused by liveness, ROMs.

    Parameters
    ----------
    graph : golden.graph.Graph
    weights : dict of str -> integer array
        Per conv/fc node its weight codes, as :func:`golden.graph.run_graph` takes them.
    pe : int
        Output channels the MAC arrays compute in parallel (>= 1).

    Returns
    -------
    EnginePlan

    Raises
    ------
    asqhw.errors.UserError
        A node the engine cannot run (named), or ``pe < 1``.
    """
    if pe < 1:
        raise UserError(f"engine: PE={pe} must be >= 1")
    tensors: dict = {}
    alias: dict = {}  # flatten -> the tensor it views
    steps: list = []
    consumers = {n.name: graph.consumers(n.name) for n in graph.nodes}

    def stored(name):
        return alias.get(name, name)

    def tensor(name, shape, lo, hi):
        tensors[name] = TensorPlan(name=name, shape=_map_shape(shape), lo=lo, hi=hi)
        return name

    fused_main = set()
    for node in graph.nodes:
        if isinstance(node, AddNode):
            main = graph.node(node.inputs[0])
            if (isinstance(main, ConvNode) and main.requant is None and consumers[main.name] == (node.name,)
                    and node.inputs[0] != node.inputs[1]):
                fused_main.add(main.name)

    asq_configs: list = []

    def asq_step(node: ConvNode):
        """The ASQ step before ``node``'s: ``y`` -> codes (a tensor ``<node>.in``)."""
        src = tensors[stored(node.inputs[0])]
        c, h, w = src.shape
        codes = tensor(f"{node.name}.in", src.shape, 0, node.act_in.asq.qmax)
        asq_configs.append((node.act_in.asq_constants(), c, h * w, src.hi))
        steps.append(StepPlan(index=len(steps), name=codes, nodes=(node.name,), kind="asq", src=src.name, dst=codes,
                              c_in=c, h_in=h, w_in=w, c_out=c, h_out=h, w_out=w, M=(), A=(), B=(), shift=0,
                              lo=None, hi=None, asq=len(asq_configs) - 1))
        return codes

    def conv_step(node, name, nodes, consts, skip=None):
        info = graph.info(node.name)
        if isinstance(node, ConvNode) and node.weight.kind != formats.INT and node.act_in.signed:
            _refuse(node, f"signed input codes into {node.weight.kind} weights (its {node.weight.kind} lanes "
                    "take unsigned codes)")
        beta = isinstance(node, ConvNode) and node.act_in.asq is not None
        src = tensors[asq_step(node) if beta else stored(node.inputs[0])]
        c_in, h_in, w_in = src.shape
        if node.op == "fc":
            c_in, h_in, w_in = src.words, 1, 1
        out = _map_shape(info.shape)
        M, A, B, S, lo, hi = consts
        groups = c_in if isinstance(node, PoolNode) else node.groups or 1
        return StepPlan(index=len(steps), name=name, nodes=nodes, kind="conv", src=src.name, dst=name, skip=skip,
                        c_in=c_in, h_in=h_in, w_in=w_in, c_out=out[0], h_out=out[1], w_out=out[2],
                        kernel=node.kernel or 1, stride=node.stride or 1, pad=node.pad or 0,
                        M=M, A=A, B=B, shift=S, lo=lo, hi=hi, beta=beta, conv_groups=groups)

    def pointwise_step(name, nodes, src, consts, skip=None):
        c, h, w = tensors[src].shape
        M, A, B, S, lo, hi = consts
        return StepPlan(index=len(steps), name=name, nodes=nodes, kind="pointwise", src=src, dst=name, skip=skip,
                        c_in=c, h_in=h, w_in=w, c_out=c, h_out=h, w_out=w, M=M, A=A, B=B, shift=S, lo=lo, hi=hi)

    conv_nodes: dict = {}
    beta_stored: set = set()  # raw accumulators stored times their beta
    for node in graph.nodes:
        info = graph.info(node.name)
        if isinstance(node, InputNode):
            tensor(node.name, info.shape, info.lo, info.hi)
        elif isinstance(node, ConvNode):
            if node.name in fused_main:
                continue
            c_out = info.shape[0]
            lo, hi = info.lo, info.hi
            if node.requant is None and node.act_in.asq is not None:
                # A raw accumulator carrying a beta (a ResNet's 1x1 shortcut after an ASQ input) is
                # stored times its beta (the requantizer's identity with the beta register), so the
                # add reads a skip value without a beta of its own: ``skip * A`` is golden's
                # ``acc * beta * A`` exactly. Only an add's skip branch may read it.
                if any(not (isinstance(graph.node(c), AddNode) and graph.node(c).inputs[1] == node.name
                            and graph.node(c).inputs[0] != node.name) for c in consumers[node.name]):
                    _refuse(node, "a raw accumulator carrying a beta, read other than as an add's skip branch,")
                beta_max = node.act_in.asq_constants().beta_max
                lo, hi = min(info.lo * beta_max, 0), max(info.hi * beta_max, 0)
                beta_stored.add(node.name)
            consts = (_identity(c_out) if node.requant is None
                      else _requant_constants(node.requant, c_out, False, node.act_in.asq is not None, node.name))
            step = conv_step(node, node.name, (node.name,), consts)
            tensor(node.name, info.shape, lo, hi)
            steps.append(step)
            conv_nodes[step.name] = node
        elif isinstance(node, AddNode):
            main, skip = node.inputs
            main_beta = main in fused_main and graph.node(main).act_in.asq is not None
            consts = _requant_constants(node.requant, info.shape[0], True, main_beta, node.name,
                                        skip_beta=skip in beta_stored)
            if main in fused_main:
                step = conv_step(graph.node(main), node.name, (main, node.name), consts, skip=stored(skip))
                conv_nodes[step.name] = graph.node(main)
            else:
                step = pointwise_step(node.name, (node.name,), stored(main), consts, skip=stored(skip))
            tensor(node.name, info.shape, info.lo, info.hi)
            steps.append(step)
        elif isinstance(node, RequantNode):
            step = pointwise_step(node.name, (node.name,), stored(node.inputs[0]),
                                  _requant_constants(node.requant, info.shape[0], False, at=node.name))
            tensor(node.name, info.shape, info.lo, info.hi)
            steps.append(step)
        elif isinstance(node, ClampNode):
            step = pointwise_step(node.name, (node.name,), stored(node.inputs[0]),
                                  _identity(info.shape[0], node.lo, node.hi))
            tensor(node.name, info.shape, info.lo, info.hi)
            steps.append(step)
        elif isinstance(node, FlattenNode):
            alias[node.name] = stored(node.inputs[0])
        elif isinstance(node, PoolNode) and node.op == "maxpool":
            # A depthwise step on the max array (a running max of the window), the identity after it.
            step = conv_step(node, node.name, (node.name,), _identity(info.shape[0]))
            tensor(node.name, info.shape, info.lo, info.hi)
            steps.append(step)
            conv_nodes[step.name] = node
        elif isinstance(node, PoolNode) and node.op == "avgpool":
            # A depthwise convolution with weights 1 (the window sum, zero padding) on its own array.
            consts = (_identity(info.shape[0]) if node.requant is None
                      else _requant_constants(node.requant, info.shape[0], False, at=node.name))
            step = conv_step(node, node.name, (node.name,), consts)
            tensor(node.name, info.shape, info.lo, info.hi)
            steps.append(step)
            conv_nodes[step.name] = node
        elif isinstance(node, PoolNode) and node.op == "gap":
            producer = next((s for s in reversed(steps) if s.dst == stored(node.inputs[0])), None)
            if producer is None or producer.gap is not None:
                _refuse(node, "a GAP of a value no single step writes (the input, or a second GAP)")
            sums = f"{node.name}.sum" if node.requant is not None else node.name
            lo, hi = info.sum_range
            tensor(sums, info.shape, lo, hi)
            producer.gap = sums
            producer.nodes = producer.nodes + (node.name,)
            if node.requant is not None:
                steps.append(pointwise_step(node.name, (node.name,), sums,
                                            _requant_constants(node.requant, info.shape[0], False, at=node.name)))
                tensor(node.name, info.shape, info.lo, info.hi)
        else:
            _refuse(node, "this op")

    input_name = next(n.name for n in graph.nodes if isinstance(n, InputNode))
    output_name = stored(graph.output)
    for step in steps:  # a value only a GAP reads is never stored
        if step.gap is not None and step.dst != output_name and not any(
                step.dst in (s.src, s.skip) for s in steps):
            del tensors[step.dst]
            step.dst = None
        step.pe = pe
        step.groups = step.conv_groups * step.pgroups
    if output_name == input_name or output_name not in tensors:
        raise UserError(f"engine: the graph's output {graph.output!r} is not written by any step")
    _liveness(steps, tensors, input_name, output_name)
    banks = _allocate_banks(tensors)
    arrays, weight_roms = _weights(graph, steps, conv_nodes, weights, pe)
    constants = []
    for step in steps:
        step.const_base = len(constants)
        constants += list(zip(step.M, step.A, step.B, strict=True))
    return EnginePlan(pe=pe, steps=steps, tensors=tensors, input=input_name, output=output_name, arrays=arrays,
                      weight_roms=weight_roms, constants=constants, banks=banks,
                      asq_configs=asq_configs, post_frac_bits=graph.post_frac_bits)


def _liveness(steps, tensors, input_name, output_name) -> None:
    for step in steps:
        for name in (step.dst, step.gap):
            if name is not None:
                tensors[name].first = step.index
        for name in (step.src, step.skip):
            if name is not None:
                tensors[name].last = max(tensors[name].last, step.index)
    tensors[input_name].first = -1
    tensors[output_name].last = len(steps)
    for t in tensors.values():  # written but never read (cannot happen in a validated graph): one step
        t.last = max(t.last, t.first)


def _allocate_banks(tensors) -> list:
    """Split the tensors by width into the banks storing the fewest bits (one bank on a tie), place
    each bank's by liveness; returns ``[(word_bits, words)]`` and sets every tensor's bank and base."""
    values = list(tensors.values())
    best = None
    for narrow in sorted({t.width for t in values}, reverse=True):
        groups = [g for g in ([t for t in values if t.width <= narrow], [t for t in values if t.width > narrow]) if g]
        banks = [(max(t.width for t in g), _allocate(g)) for g in groups]
        bits = sum(w * d for w, d in banks)
        if best is None or bits < best[0]:
            best = (bits, narrow)
    groups = [g for g in ([t for t in values if t.width <= best[1]], [t for t in values if t.width > best[1]]) if g]
    banks = []
    for index, group in enumerate(groups):
        for t in group:
            t.bank = index
        banks.append((max(t.width for t in group), _allocate(group)))
    return banks


def _allocate(tensors) -> int:
    """First fit by liveness: each tensor, in order of its first step, takes the lowest base where it
    overlaps no placed tensor that is live at the same time. Returns the memory's depth."""
    placed: list = []
    for t in sorted(tensors, key=lambda t: (t.first, -t.words, t.name)):
        busy = sorted((p.base, p.base + p.words) for p in placed if p.first <= t.last and t.first <= p.last)
        base = 0
        for lo, hi in busy:
            if base + t.words <= lo:
                break
            base = max(base, hi)
        t.base = base
        placed.append(t)
    return max(t.base + t.words for t in tensors)


def _weights(graph, steps, conv_nodes, weights, pe):
    """The MAC arrays, and their weight ROMs in the order each conv step reads them: per group of PE
    output channels, per input channel, per kernel row and column, one word of PE codes."""
    keys: dict = {}
    for step in steps:
        if step.kind != "conv":
            continue
        node = conv_nodes[step.name]
        info = graph.info(node.name)
        key = _array_key(node)
        if isinstance(node, PoolNode) and node.op == "maxpool":
            x = graph.info(node.inputs[0])
            node_w_bits = 1
            act_bits = acc_width = arith.signed_width(min(x.lo, 0), max(x.hi, 0))
        elif isinstance(node, PoolNode):
            x = graph.info(node.inputs[0])
            # the MAC array's accumulators are signed: the sum's signed width (sum_width is unsigned
            # for an unsigned input)
            node_w_bits, act_bits = POOL_WEIGHT_BITS, arith.signed_width(min(x.lo, 0), x.hi)
            acc_width = arith.signed_width(*info.sum_range)
        else:
            act = node.act_in
            node_w_bits, acc_width = node.weight.bits, info.acc_width
            act_bits = act.bits + (0 if act.signed or node.weight.kind != formats.INT else 1)
        w_bits, a_bits, acc = keys.get(key, (0, 0, 0))
        keys[key] = (max(w_bits, node_w_bits), max(a_bits, act_bits), max(acc, acc_width))
    arrays = []
    for (kind, _), (w_bits, act_bits, acc_width) in keys.items():
        signed = kind in (formats.INT, "max")
        # The accumulator holds at least one product of the array (MacArray's own check).
        prod = 1 if kind == "max" else product_shape(kind, w_bits, act_bits, signed, graph.post_frac_bits).width
        arrays.append(ArraySpec(kind=kind, w_bits=w_bits, act_bits=act_bits, act_signed=signed,
                                acc_width=max(acc_width, prod)))
    index = {key: k for k, key in enumerate(keys)}
    roms: list = [[] for _ in arrays]
    for step in steps:
        if step.kind != "conv":
            continue
        node = conv_nodes[step.name]
        spec = arrays[index[_array_key(node)]]
        cin_g = step.c_in // step.conv_groups
        if spec.kind == "max":
            step.array = index[_array_key(node)]
            continue  # no weights
        if isinstance(node, PoolNode):
            w = np.ones((step.c_out, 1, step.kernel, step.kernel), dtype=np.int64)
        else:
            w = np.asarray(weights[node.name], dtype=np.int64).reshape(step.c_out, cin_g, step.kernel, step.kernel)
        if spec.kind == formats.INT:
            w = w & ((1 << spec.w_bits) - 1)  # sign-extended to the array's width, as raw bits
        step.array = index[_array_key(node)]
        words = roms[step.array]
        step.weight_base = len(words)
        cout_g = step.cout_g
        for cg in range(step.conv_groups):
            for j in range(step.pgroups):
                for ci in range(cin_g):
                    for ky in range(step.kernel):
                        for kx in range(step.kernel):
                            words.append([int(w[cg * cout_g + c, ci, ky, kx]) if c < cout_g else 0
                                          for c in range(j * pe, (j + 1) * pe)])
        step.weight_words = len(words) - step.weight_base
    return arrays, roms


# ----------------------------------------------------------------------------------------------
# The run-time-loaded weight store: every MAC array's weights in one space of 16-bit words

#: Bits of one word of the run-time-loaded weight store (the UP5K's SPRAM word, the loader's unit).
WEIGHT_WORD_BITS = 16


@dataclass(frozen=True)
class WeightSpace:
    """The layout of the MAC arrays' weights in one run-time-loaded memory.

    One address holds one weight word of an array (the PE codes of one input position, element 0
    in the low bits as in the ROMs), split into ``lanes`` 16-bit words side by side (lane 0 the
    low bits), so a read gives a whole word in one cycle. ``lanes`` is set by the array holding
    the most weight bits (``PE * w_bits`` over 16, rounded up: 3-bit POST codes at PE 4 take one
    16-bit lane, not the two an 8-bit int layer's would); the arrays whose words fit those lanes
    are stored, their words following each other (array ``k``'s from ``bases[k]`` on); a wider
    array (the small int layers at the network's edges, beside a narrow POST array) keeps its ROM
    (``bases[k]`` None), as does an array without weights (a max pool's).

    Attributes
    ----------
    lanes : int
        16-bit words per address.
    depth : int
        Addresses: the stored arrays' words (at least 1).
    bases : tuple of int or None
        Per MAC array the address of its first word, None for an array kept in its ROM.
    """

    lanes: int
    depth: int
    bases: tuple

    def stored(self, array: int) -> bool:
        """Whether MAC array ``array``'s weights are in this store (not in a ROM)."""
        return self.bases[array] is not None

    @property
    def word_bits(self) -> int:
        """Bits of one address (all lanes)."""
        return self.lanes * WEIGHT_WORD_BITS

    @property
    def load_words(self) -> int:
        """16-bit words the loader sends: ``depth * lanes``."""
        return self.depth * self.lanes


def weight_space(plan: EnginePlan) -> WeightSpace:
    """The one weight space of ``plan``'s arrays (see :class:`WeightSpace`)."""
    roms = list(zip(plan.arrays, plan.weight_roms, strict=True))
    weighted = [(plan.pe * a.w_bits * len(rom), plan.pe * a.w_bits) for a, rom in roms if rom]
    lanes = -(-max(weighted)[1] // WEIGHT_WORD_BITS) if weighted else 1
    bases, depth = [], 0
    for a, rom in roms:
        if rom and plan.pe * a.w_bits <= lanes * WEIGHT_WORD_BITS:
            bases.append(depth)
            depth += len(rom)
        else:
            bases.append(None)
    return WeightSpace(lanes=lanes, depth=max(depth, 1), bases=tuple(bases))


def weight_words(plan: EnginePlan) -> list:
    """The 16-bit words the loader sends for ``plan``, in load order: address by address, each
    address's lanes from lane 0 (the low 16 bits) up; an unused address (an empty plan) is zeros."""
    space = weight_space(plan)
    words = []
    for k, (spec, rom) in enumerate(zip(plan.arrays, plan.weight_roms, strict=True)):
        if not space.stored(k):
            continue
        mask = (1 << spec.w_bits) - 1
        for codes in rom:
            packed = 0
            for p, code in enumerate(codes):
                packed |= (int(code) & mask) << (p * spec.w_bits)
            words += [(packed >> (WEIGHT_WORD_BITS * lane)) & 0xFFFF for lane in range(space.lanes)]
    words += [0] * (space.load_words - len(words))
    return words


def weight_checksum(words) -> int:
    """The loader's checksum of ``words``: their sum modulo 2^16."""
    return sum(int(w) for w in words) & 0xFFFF
