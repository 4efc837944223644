"""Small random format-2 graphs for the engine's tests, built directly with golden.graph."""

import numpy as np

from golden import arith, formats
from golden.graph import Graph, run_graph


def inp(shape, bits=8, signed=True, name="x"):
    return {"name": name, "op": "input", "inputs": [], "shape": list(shape), "bits": bits, "signed": signed}


def req(M, B, S, lo, hi, output="codes", frac_bits=0, A=None):
    out = {"M": [int(v) for v in M]}
    if A is not None:
        out["A"] = [int(v) for v in A]
    out.update(B=[int(v) for v in B], S=int(S), G=0, output=output, lo=lo, hi=hi, frac_bits=frac_bits)
    return out


def conv(name, src, cin, cout, k, stride, requant, act_bits=3, signed=False, kind="post", wbits=3, pad=None):
    return {"name": name, "op": "conv", "inputs": [src], "kernel": k, "stride": stride,
            "pad": k // 2 if pad is None else pad, "groups": 1,
            "act_in": {"quant": "lsq", "bits": act_bits, "signed": signed, "step": 1.0, "asq": None},
            "weight": {"kind": kind, "bits": wbits, "shape": [cout, cin, k, k], "mem": "w.mem",
                       "scale": [1.0] * cout, "unit_exp": 0},
            "requant": requant}


def fc(name, src, cin, cout, requant, act_bits=8):
    return {"name": name, "op": "fc", "inputs": [src],
            "act_in": {"quant": "lsq", "bits": act_bits, "signed": False, "step": 1.0, "asq": None},
            "weight": {"kind": "int", "bits": 8, "shape": [cout, cin], "mem": "w.mem", "scale": [1.0] * cout,
                       "unit_exp": 0},
            "requant": requant}


def random_weights(graph, rng):
    weights = {}
    for n in graph.nodes:
        if n.op in ("conv", "fc"):
            top = 1 << n.weight.bits
            weights[n.name] = (rng.integers(0, top, n.weight.shape) if n.weight.kind != "int"
                               else rng.integers(-top // 2, top // 2, n.weight.shape))
    return weights


def _acc_std(kind, wbits, act_bits, signed, fan_in, post_frac_bits=2):
    """Typical spread of an accumulator over uniform codes and weights (sets plausible shifts)."""
    rng = np.random.default_rng(0)
    lo, hi = (-(1 << (act_bits - 1)), (1 << (act_bits - 1))) if signed else (0, 1 << act_bits)
    a = rng.integers(lo, hi, 4096)
    top = 1 << wbits
    w = rng.integers(0, top, 4096) if kind != "int" else rng.integers(-top // 2, top // 2, 4096)
    return float(np.sqrt(fan_in) * np.sqrt(np.mean(arith.product(a, w, kind, wbits, post_frac_bits) ** 2.0)))


def _requant(rng, channels, spread, lo, hi, target, output="codes", frac_bits=0, skip_spread=None, positive=False):
    """Multipliers of either sign around ``target / spread`` (a shift keeps them 15-bit), a bias."""
    S = max(0, int(np.floor(np.log2(32767 * spread / target))))
    M = rng.integers(1 << 13, 1 << 15, channels) * (1 if positive else rng.choice([1, 1, 1, -1], channels))
    A = None
    if skip_spread is not None:
        A = rng.integers(1 << 13, 1 << 15, channels) * spread / max(skip_spread, 1)
        A = np.clip(np.round(A), 1, 32767).astype(int)
    B = rng.integers(-(1 << S) * target // 4, (1 << S) * target // 4 + 1, channels) // 4 + ((1 << S) * target // 2)
    return req(M, B, S, lo, hi, output, frac_bits, A=A)


def mini_resnet(rng, size=8, c1=4, c2=8, bits=3, kind="post", n_classes=10, post_frac_bits=2):
    """stem (int8 3x3) -> identity block -> strided block with a 1x1 shortcut -> GAP -> flatten -> fc.

    Constants are random, scaled so that codes spread over their range (some clamp, most do not).
    """
    hi = (1 << bits) - 1
    s8 = _acc_std("int", 8, 8, True, 9)
    s3 = _acc_std(kind, bits, bits, False, 9 * c1)
    s3b = _acc_std(kind, bits, bits, False, 9 * c2)
    s1 = _acc_std(kind, bits, bits, False, c1)
    nodes = [
        inp((1, size, size)),
        conv("stem", "x", 1, c1, 3, 1, _requant(rng, c1, s8, 0, hi, hi), act_bits=8, signed=True, kind="int",
             wbits=8),
        conv("b1c1", "stem", c1, c1, 3, 1, _requant(rng, c1, s3, 0, hi, hi), bits, kind=kind, wbits=bits),
        conv("b1c2", "b1c1", c1, c1, 3, 1, None, bits, kind=kind, wbits=bits),
        {"name": "b1", "op": "add", "inputs": ["b1c2", "stem"],
         "requant": _requant(rng, c1, s3, 0, hi, hi, skip_spread=hi / 2)},
        conv("b2c1", "b1", c1, c2, 3, 2, _requant(rng, c2, s3, 0, hi, hi), bits, kind=kind, wbits=bits),
        conv("b2c2", "b2c1", c2, c2, 3, 1, None, bits, kind=kind, wbits=bits),
        conv("b2sc", "b1", c1, c2, 1, 2, None, bits, kind=kind, wbits=bits, pad=0),
        {"name": "b2", "op": "add", "inputs": ["b2c2", "b2sc"],
         "requant": _requant(rng, c2, s3b, 0, hi, hi, skip_spread=s1)},
        {"name": "gap", "op": "gap", "inputs": ["b2"],
         "requant": _requant(rng, c2, hi / 2 * (size // 2) ** 2, 0, 255, 128, positive=True)},
        {"name": "flat", "op": "flatten", "inputs": ["gap"]},
        fc("fc", "flat", c2, n_classes,
           _requant(rng, n_classes, _acc_std("int", 8, 8, False, c2), None, None, 1 << 10, "logits", 8)),
    ]
    nodes[-1]["requant"]["lo"] = nodes[-1]["requant"]["hi"] = None
    graph = Graph.from_dict({"nodes": nodes, "output": "fc"}, post_frac_bits)
    return graph, random_weights(graph, rng)


def pointwise_graph(rng, size=6, c=4, n_classes=5):
    """The nodes that become pointwise steps: a raw POT conv stored (identity requantizer), a standalone
    requant, a clamp, an add of two stored values (not fusable), a GAP without requantizer and a
    standalone requant of its sums, flatten, fc with 8-bit logits."""
    s3 = _acc_std("pot", 3, 3, False, 9 * 3)
    nodes = [
        inp((3, size, size), bits=3, signed=False),
        conv("c1", "x", 3, c, 3, 1, None, 3, kind="pot", wbits=3),
        {"name": "r1", "op": "requant", "inputs": ["c1"], "requant": _requant(rng, c, s3, 0, 7, 7)},
        {"name": "cl", "op": "clamp", "inputs": ["r1"], "lo": 1, "hi": 6},
        {"name": "a", "op": "add", "inputs": ["r1", "cl"], "requant": _requant(rng, c, 12, 0, 7, 7, skip_spread=12)},
        {"name": "gap", "op": "gap", "inputs": ["a"], "requant": None},
        {"name": "gq", "op": "requant", "inputs": ["gap"],
         "requant": _requant(rng, c, 7 * size * size, 0, 255, 100, positive=True)},
        {"name": "flat", "op": "flatten", "inputs": ["gq"]},
        fc("fc", "flat", c, n_classes,
           _requant(rng, n_classes, _acc_std("int", 8, 8, False, c), None, None, 1 << 10, "logits", 8)),
    ]
    nodes[-1]["requant"]["lo"] = nodes[-1]["requant"]["hi"] = None
    graph = Graph.from_dict({"nodes": nodes, "output": "fc"})
    return graph, random_weights(graph, rng)


def residual_chain(rng, blocks, size=8, c=4, bits=3):
    """A stem and ``blocks`` identity residual blocks (the planner's reuse does not grow with depth)."""
    hi = (1 << bits) - 1
    s3 = _acc_std("post", bits, bits, False, 9 * c)
    nodes = [inp((1, size, size)),
             conv("stem", "x", 1, c, 3, 1, _requant(rng, c, _acc_std("int", 8, 8, True, 9), 0, hi, hi),
                  act_bits=8, signed=True, kind="int", wbits=8)]
    prev = "stem"
    for b in range(blocks):
        nodes += [conv(f"b{b}c1", prev, c, c, 3, 1, _requant(rng, c, s3, 0, hi, hi), bits, wbits=bits),
                  conv(f"b{b}c2", f"b{b}c1", c, c, 3, 1, None, bits, wbits=bits),
                  {"name": f"b{b}", "op": "add", "inputs": [f"b{b}c2", prev],
                   "requant": _requant(rng, c, s3, 0, hi, hi, skip_spread=hi / 2)}]
        prev = f"b{b}"
    graph = Graph.from_dict({"nodes": nodes, "output": prev})
    return graph, random_weights(graph, rng)


def _asq_act_in(rng, y, bits=3, step=2.0):
    """An ASQ input for the ``y`` maps (N, C, H, W) with 4 fractional bits: adapter constants chosen so
    that beta lands near 1.0 (``2^G``) and varies from sample to sample (C >= 8: the hidden layer)."""
    G = formats.BETA_FRAC
    c = y.shape[1]
    z = y.reshape(y.shape[0], c, -1).sum(axis=2).astype(np.float64)
    asq = {"W1": None, "b1": None, "S1": 0}
    if c >= 8:
        W1 = rng.integers(20, 200, (c // 4, c))
        S1 = max(0, int(np.log2(max((z @ W1.T).mean(), 1) / 256)))
        b1 = rng.integers(-(1 << S1) * 16, (1 << S1) * 16 + 1, c // 4)
        h = np.maximum(0, np.floor(((z @ W1.T) + b1) / (1 << S1) + 0.5))
        asq.update(W1=W1.tolist(), b1=b1.tolist(), S1=S1)
    else:
        h = z
    W2 = rng.integers(50, 200, h.shape[1])
    S2 = max(0, int(np.round(np.log2(max((h @ W2).mean(), 1) / (1 << G)))))
    asq.update(W2=W2.tolist(), b2=int(rng.integers(-(1 << S2) * 64, (1 << S2) * 64 + 1)), S2=S2, G=G,
               beta_min=1 << (G - formats.BETA_MIN_SHIFT), beta_max=formats.BETA_MAX,
               s_code=int(step * 2048), FS=11, R=28, FY=4, qmax=(1 << bits) - 1)
    return {"quant": "asq", "bits": bits, "signed": False, "step": step, "asq": asq}


def asq_block(rng, size=6, c_in=2, c_mid=8, c=4, n_classes=5, calib=6):
    """ASQ inputs on a residual block: c0 -> y (8 channels) -> ASQ (adapter with a hidden layer) ->
    c1 -> y (4 channels) -> ASQ -> c2 (raw accumulator, carrying the beta) + c1's y (the skip, no
    beta) -> codes -> GAP -> flatten -> fc. Constants are calibrated on ``calib`` random images."""
    G = formats.BETA_FRAC
    images = rng.integers(0, 8, (calib, c_in, size, size))
    nodes = [inp((c_in, size, size), bits=3, signed=False)]
    weights = {}

    def grow(node, output):
        nodes.append(node)
        graph = Graph.from_dict({"nodes": nodes, "output": output})
        weights.update({k: v for k, v in random_weights(graph, rng).items() if k not in weights})
        return run_graph(graph, weights, images)

    y_req = _requant(rng, c_mid, _acc_std("post", 3, 3, False, 9 * c_in), 0, formats.Y_MAX, 100, "y", 4,
                     positive=True)
    res = grow(conv("c0", "x", c_in, c_mid, 3, 1, y_req, 3), "c0")
    node = conv("c1", "c0", c_mid, c, 3, 1, None, 3)
    node["act_in"] = _asq_act_in(rng, res["c0"])
    spread = _acc_std("post", 3, 3, False, 9 * c_mid) / 3  # ASQ codes sit low in their range
    node["requant"] = _requant(rng, c, spread, 0, formats.Y_MAX, 100, "y", 4, positive=True)
    node["requant"]["G"] = G
    res = grow(node, "c1")
    node = conv("c2", "c1", c, c, 3, 1, None, 3)
    node["act_in"] = _asq_act_in(rng, res["c1"])
    nodes.append(node)
    add_req = _requant(rng, c, _acc_std("post", 3, 3, False, 9 * c) / 3, 0, 7, 2, skip_spread=100)
    add_req["G"] = G
    res = grow({"name": "b", "op": "add", "inputs": ["c2", "c1"], "requant": add_req}, "b")
    res = grow({"name": "gap", "op": "gap", "inputs": ["b"],
                "requant": _requant(rng, c, 3.5 * size * size, 0, 255, 100, positive=True)}, "gap")
    nodes.append({"name": "flat", "op": "flatten", "inputs": ["gap"]})
    grow(fc("fc", "flat", c, n_classes,
            _requant(rng, n_classes, _acc_std("int", 8, 8, False, c), None, None, 1 << 10, "logits", 8)), "fc")
    nodes[-1]["requant"]["lo"] = nodes[-1]["requant"]["hi"] = None
    graph = Graph.from_dict({"nodes": nodes, "output": "fc"})
    return graph, weights


def asq_block_add_inputs(rng, inputs):
    """:func:`asq_block` with its add's inputs rearranged by ``inputs`` (a function of the two names)."""
    graph, weights = asq_block(rng)
    nodes = graph.to_dict()["nodes"]
    add = next(n for n in nodes if n["op"] == "add")
    add["inputs"] = inputs(add["inputs"])
    for key in ("M_width", "B_width", "t_width", "out_width"):  # derived: proved again
        add["requant"].pop(key)
    return Graph.from_dict({"nodes": nodes, "output": "fc"}), weights


def random_graph(rng):
    """A random small graph of what the engine runs: a stem, one residual block (identity, or a 1x1
    shortcut whose stride and padding land on the main branch's map; with an ASQ unit in front of the
    block's first conv, the skip is the stem's ``y``), then a GAP head, an fc on the flattened map, or
    the block's codes as the output; the block's first conv grouped (or depthwise) at random, an
    average or max pool after the block at random. Kernels 1, 3, 5, strides 1..2, paddings up to k // 2,
    sizes 4..7, every weight kind, PE left to the caller; constants calibrated on a few random images."""
    kind, wbits = [("int", 4), ("post", 3), ("post", 4), ("pot", 3), ("int", 2)][rng.integers(0, 5)]
    bits = int(rng.integers(2, 5))
    hi = (1 << bits) - 1
    c_in, size = int(rng.integers(1, 4)), int(rng.integers(4, 8))
    c, c2 = int(rng.integers(2, 6)), int(rng.integers(2, 9))
    signed_in = bool(rng.integers(0, 2))
    images = rng.integers(-128, 128, (6, c_in, size, size)) if signed_in else rng.integers(0, 8, (6, c_in, size, size))
    nodes = [inp((c_in, size, size), bits=8 if signed_in else 3, signed=signed_in)]
    weights, res = {}, {}

    def grow(*new, output=None):
        nodes.extend(new)
        graph = Graph.from_dict({"nodes": nodes, "output": output or new[-1]["name"]})
        weights.update({k: v for k, v in random_weights(graph, rng).items() if k not in weights})
        res.update(run_graph(graph, weights, images))

    def geometry(size):
        k = int(rng.choice([k for k in (1, 3, 5) if k <= size]))
        return k, int(rng.integers(1, 3)), int(rng.integers(0, k // 2 + 1))

    use_asq = bool(rng.integers(0, 3) == 0)
    k, s, p = geometry(size)
    stem_kind, stem_bits, stem_act = ("int", 8, 8) if signed_in else (kind, wbits, 3)
    spread = _acc_std(stem_kind, stem_bits, stem_act, signed_in, c_in * k * k)
    stem_req = (_requant(rng, c, spread, 0, formats.Y_MAX, 100, "y", 4, positive=True) if use_asq
                else _requant(rng, c, spread, 0, hi, hi))
    grow(conv("stem", "x", c_in, c, k, s, stem_req, stem_act, signed_in, stem_kind, stem_bits, pad=p))
    size1 = res["stem"].shape[-1]
    k, s, p = geometry(size1)
    identity = use_asq or bool(rng.integers(0, 2))
    if identity:
        c2, s, p = c, 1, k // 2
    c1 = conv("c1", "stem", c, c2, k, s, _requant(rng, c2, _acc_std(kind, wbits, bits, False, c * k * k), 0, hi, hi),
              bits, kind=kind, wbits=wbits, pad=p)
    if use_asq:
        c1["act_in"] = _asq_act_in(rng, res["stem"], bits)
        c1["requant"]["G"] = formats.BETA_FRAC
    groups = int(rng.choice([g for g in range(1, c + 1) if c % g == 0 and c2 % g == 0]))
    if groups > 1:  # grouped (depthwise when groups == c == c2)
        c1["groups"] = groups
        c1["weight"]["shape"][1] = c // groups
        c1["requant"] = _requant(rng, c2, _acc_std(kind, wbits, bits, False, c // groups * k * k), 0, hi, hi)
        if use_asq:
            c1["requant"]["G"] = formats.BETA_FRAC
    grow(c1)
    size2 = res["c1"].shape[-1]
    k2 = int(rng.choice([1, 3]))
    main = conv("c2", "c1", c2, c2, k2, 1, None, bits, kind=kind, wbits=wbits, pad=k2 // 2)
    spread = _acc_std(kind, wbits, bits, False, c2 * k2 * k2)
    if identity:
        skip, skip_spread, extra = "stem", 100 if use_asq else hi / 2, []
    else:
        sc_s, sc_p = next(((ss, pp) for ss in (1, 2, 3, 4) for pp in (0, 1)
                           if (size1 + 2 * pp - 1) // ss + 1 == size2), (None, None))
        if sc_s is None:  # no 1x1 shortcut lands there: the main branch keeps the map instead
            c1.update(stride=1, pad=k // 2)
            nodes.pop()
            grow(c1)
            sc_s, sc_p = 1, 0
        skip, skip_spread = "sc", _acc_std(kind, wbits, bits, False, c)
        extra = [conv("sc", "stem", c, c2, 1, sc_s, None, bits, kind=kind, wbits=wbits, pad=sc_p)]
    add_req = _requant(rng, c2, spread, 0, hi, hi / 3, skip_spread=skip_spread)
    grow(main, *extra, {"name": "b", "op": "add", "inputs": ["c2", skip], "requant": add_req})
    if rng.integers(0, 3) == 0:  # an average or max pool of the block's codes
        k = int(rng.integers(2, 4))
        pool = {"name": "pool", "op": "avgpool", "inputs": ["b"], "kernel": k, "stride": int(rng.integers(1, 3)),
                "pad": int(rng.integers(0, k // 2 + 1)),
                "requant": _requant(rng, c2, hi / 2 * k * k, 0, hi, hi / 2, positive=True)}
        if rng.integers(0, 2):
            pool.update(op="maxpool")
            del pool["requant"]
        if (res["b"].shape[-1] + 2 * pool["pad"] - k) >= 0:
            grow(pool)
            res["b"] = res["pool"]
    block_out = nodes[-1]["name"]
    tail = int(rng.integers(0, 3))
    if tail < 2:
        if tail == 0:
            grow({"name": "gap", "op": "gap", "inputs": [block_out],
                  "requant": _requant(rng, c2, hi / 2 * res["b"].shape[-1] ** 2, 0, 255, 100, positive=True)})
            src, n_in, act_bits = "gap", c2, 8
        else:
            src, n_in, act_bits = block_out, int(np.prod(res["b"].shape[1:])), bits
        head = fc("fc", "flat", n_in, 3, _requant(rng, 3, _acc_std("int", 8, act_bits, False, n_in), None, None,
                                                  1 << 10, "logits", 8), act_bits=act_bits)
        head["requant"]["lo"] = head["requant"]["hi"] = None
        grow({"name": "flat", "op": "flatten", "inputs": [src]}, head)
    graph = Graph.from_dict({"nodes": nodes, "output": nodes[-1]["name"]})
    return graph, weights, images


def resnet(rng, size=32, c_in=3, widths=(16, 32, 64), blocks=3, bits=3, kind="post", n_classes=10):
    """A CIFAR-style ResNet (ResNet-20 by default: 3 stages of 3 basic blocks, 1x1 strided shortcuts
    where the shape changes, GAP, fc) with random weights and constants scaled so that codes spread
    over their range: 8-bit signed input and int8 stem and fc, BITS-bit codes and ``kind`` weights
    inside."""
    hi = (1 << bits) - 1
    nodes = [inp((c_in, size, size)),
             conv("stem", "x", c_in, widths[0], 3, 1,
                  _requant(rng, widths[0], _acc_std("int", 8, 8, True, 9 * c_in), 0, hi, hi),
                  act_bits=8, signed=True, kind="int", wbits=8)]
    prev, cin = "stem", widths[0]
    for stage, cout in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage and not block else 1
            b = f"s{stage + 1}b{block + 1}"
            spread = _acc_std(kind, bits, bits, False, 9 * cin)
            nodes.append(conv(f"{b}c1", prev, cin, cout, 3, stride, _requant(rng, cout, spread, 0, hi, hi), bits,
                              kind=kind, wbits=bits))
            nodes.append(conv(f"{b}c2", f"{b}c1", cout, cout, 3, 1, None, bits, kind=kind, wbits=bits))
            skip, skip_spread = prev, hi / 2
            if stride != 1 or cin != cout:
                nodes.append(conv(f"{b}sc", prev, cin, cout, 1, stride, None, bits, kind=kind, wbits=bits, pad=0))
                skip, skip_spread = f"{b}sc", _acc_std(kind, bits, bits, False, cin)
            nodes.append({"name": b, "op": "add", "inputs": [f"{b}c2", skip],
                          "requant": _requant(rng, cout, _acc_std(kind, bits, bits, False, 9 * cout), 0, hi, hi / 3,
                                              skip_spread=skip_spread)})
            prev, cin = b, cout
    side = size // 2 ** (len(widths) - 1)
    nodes += [{"name": "gap", "op": "gap", "inputs": [prev],
               "requant": _requant(rng, cin, hi / 2 * side * side, 0, 255, 100, positive=True)},
              {"name": "flat", "op": "flatten", "inputs": ["gap"]},
              fc("fc", "flat", cin, n_classes,
                 _requant(rng, n_classes, _acc_std("int", 8, 8, False, cin), None, None, 1 << 10, "logits", 8))]
    nodes[-1]["requant"]["lo"] = nodes[-1]["requant"]["hi"] = None
    graph = Graph.from_dict({"nodes": nodes, "output": "fc"})
    return graph, random_weights(graph, rng)
