"""Bundle format 2 (golden.graph): hand-computed node arithmetic, proved widths reached and never
exceeded, invalid graphs refused by name, and the digits chain as a graph equal to golden.model.run."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asqhw.errors import UserError
from golden import arith, formats
from golden.graph import Graph, graph_from_chain, predictions, run_graph
from golden.model import load_bundle, run

# ----------------------------------------------------------------------------- builders


def inp(shape, bits=3, signed=False, name="x"):
    return {"name": name, "op": "input", "inputs": [], "shape": list(shape), "bits": bits, "signed": signed}


def req(M, B=None, S=0, lo=0, hi=7, output="codes", G=0, frac_bits=0, A=None):
    out = {"M": list(M)}
    if A is not None:
        out["A"] = list(A)
    out.update(B=list(B if B is not None else [0] * len(M)), S=S, G=G, output=output, lo=lo, hi=hi,
               frac_bits=frac_bits)
    return out


def act(bits=3, signed=False):
    return {"quant": "lsq", "bits": bits, "signed": signed, "step": 1.0, "asq": None}


def weight(shape, kind="int", bits=4):
    return {"kind": kind, "bits": bits, "shape": list(shape), "mem": "w.mem", "scale": [1.0] * shape[0],
            "unit_exp": 0}


def conv(name, src, wshape, kernel=1, stride=1, pad=0, groups=1, requant=None, act_bits=3, signed=False,
         kind="int", wbits=4):
    return {"name": name, "op": "conv", "inputs": [src], "kernel": kernel, "stride": stride, "pad": pad,
            "groups": groups, "act_in": act(act_bits, signed), "weight": weight(wshape, kind, wbits),
            "requant": requant}


def fc(name, src, wshape, requant, act_bits=3):
    return {"name": name, "op": "fc", "inputs": [src], "act_in": act(act_bits), "weight": weight(wshape),
            "requant": requant}


def add(name, main, skip, requant):
    return {"name": name, "op": "add", "inputs": [main, skip], "requant": requant}


def graph(nodes, output=None, post_frac_bits=2):
    return Graph.from_dict({"nodes": nodes, "output": output or nodes[-1]["name"]}, post_frac_bits)


def batch(*maps):
    return np.asarray(maps, dtype=np.int64)


def conv_ref(x, w, stride=1, pad=0, groups=1):
    """Plain loops: an independent convolution of integer maps (N, C, H, W)."""
    n, c, h, wd = x.shape
    co, cig, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, co, ho, wo), dtype=np.int64)
    per_group = co // groups
    for b in range(n):
        for o in range(co):
            g = o // per_group
            for i in range(ho):
                for j in range(wo):
                    total = 0
                    for ci in range(cig):
                        for ky in range(k):
                            for kx in range(k):
                                a = int(xp[b, g * cig + ci, i * stride + ky, j * stride + kx])
                                total += a * int(w[o, ci, ky, kx])
                    out[b, o, i, j] = total
    return out


# ----------------------------------------------------------------------------- residual add


def test_residual_add_of_two_scales_rounds_half_up_once():
    # main: 1x1 conv, w = 2 -> acc = 2x; skip: the input codes x. t = 3*acc + 5*x, out = round(t / 4)
    g = graph([inp((1, 2, 2)), conv("a", "x", (1, 1, 1, 1)), add("sum", "a", "x", req([3], A=[5], S=2))])
    x = batch([[[1, 2], [3, 0]]])
    out = run_graph(g, {"a": np.full((1, 1, 1, 1), 2)}, x)
    # t = 11, 22, 33, 0 -> 2.75, 5.5 (the tie: up), 8.25 (saturates at hi = 7), 0
    assert out["a"].tolist() == [[[[2, 4], [6, 0]]]]
    assert out["sum"].tolist() == [[[[3, 6], [7, 0]]]]


def test_residual_add_negative_tie_rounds_up():
    g = graph([inp((1, 2, 2)), conv("a", "x", (1, 1, 1, 1)),
               add("sum", "a", "x", req([3], A=[1], S=2, lo=-8, hi=7))])
    out = run_graph(g, {"a": np.full((1, 1, 1, 1), -2)}, batch([[[1, 2], [3, 0]]]))
    # t = -5, -10, -15, 0 -> -1.25, -2.5 (tie: up to -2), -3.75, 0
    assert out["sum"].tolist() == [[[[-1, -2], [-4, 0]]]]


def test_residual_add_bias_and_relu_after_the_sum():
    g = graph([inp((2, 1, 1)), conv("a", "x", (2, 2, 1, 1)),
               add("sum", "a", "x", req([1, 2], A=[4, -4], B=[-8, 1], S=3, lo=0, hi=7))])
    w = np.array([[1, 1], [0, -1]]).reshape(2, 2, 1, 1)
    out = run_graph(g, {"a": w}, batch([[[5]], [[3]]]))
    # acc = (8, -3); t0 = 8*1 + 5*4 - 8 = 20 -> 2.5 -> 3; t1 = -3*2 + 3*(-4) + 1 = -17 -> -2.125 -> relu 0
    assert out["a"].ravel().tolist() == [8, -3]
    assert out["sum"].ravel().tolist() == [3, 0]


def test_residual_add_multiplies_a_beta_term_by_g_and_the_other_by_2_to_the_G():
    # main: a conv behind an ASQ unit (its accumulator carries the per-sample beta g); skip: y itself
    G = formats.BETA_FRAC
    asq = {"W1": None, "b1": None, "S1": 0, "W2": [3], "b2": 1 << 13, "S2": 4, "G": G,
           "beta_min": 1 << (G - 4), "beta_max": formats.BETA_MAX, "s_code": 2048, "FS": 11, "R": 28,
           "FY": 4, "qmax": 7}
    y_in = {"name": "x", "op": "input", "inputs": [], "shape": [1, 2, 2], "bits": 8, "signed": False}
    a = conv("a", "y", (1, 1, 1, 1))
    a["act_in"] = {"quant": "asq", "bits": 3, "signed": False, "step": 1.0, "asq": asq}
    to_y = conv("y", "x", (1, 1, 1, 1), act_bits=8, requant=req([1], lo=0, hi=formats.Y_MAX, output="y",
                                                                frac_bits=4))
    g = graph([y_in, to_y, a, add("sum", "a", "y", req([5], A=[-3], B=[7], S=6, G=G, lo=0, hi=255))])
    x = batch([[[16, 40], [100, 0]]], [[[255, 255], [1, 2]]])
    out = run_graph(g, {"y": np.ones((1, 1, 1, 1), dtype=np.int64), "a": np.full((1, 1, 1, 1), 3)}, x)
    codes, beta = arith.asq_unit(out["y"], g.node("a").act_in.asq_constants())
    assert np.array_equal(out["a.beta"], beta) and np.array_equal(out["a.in"], codes)
    for n in range(2):
        gb = int(beta[n])
        for i, (acc, y) in enumerate(zip(out["a"][n].ravel(), out["y"][n].ravel(), strict=True)):
            t = int(acc) * 5 * gb + int(y) * (-3) * (1 << G) + (7 << G)
            assert int(out["sum"][n].ravel()[i]) == min(max((t + (1 << (6 + G - 1))) >> (6 + G), 0), 255)


def test_block_output_kept_as_signed_y_for_the_skip_and_quantized_for_the_next_conv():
    # a: y with 2 fractional bits, signed (a linear bottleneck); q: its codes for the next conv;
    # the add takes the conv of q (main) and y itself (skip): the skip keeps y's precision
    nodes = [inp((1, 1, 2)),
             conv("a", "x", (1, 1, 1, 1), requant=req([-3], B=[2], lo=-64, hi=63, output="y", frac_bits=2)),
             {"name": "q", "op": "requant", "inputs": ["a"], "requant": req([1], S=2, lo=-4, hi=3)},
             conv("b", "q", (1, 1, 1, 1), signed=True),
             add("s", "b", "a", req([4], A=[1], S=2, lo=-128, hi=127, output="y", frac_bits=0))]
    g = graph(nodes)
    out = run_graph(g, {"a": np.full((1, 1, 1, 1), 1), "b": np.full((1, 1, 1, 1), 2)}, batch([[[1, 6]]]))
    # a = -3x + 2: -1, -16; q = round(a / 4): -0.25 -> 0, -4 -> -4; b = 2q: 0, -8
    # s = round((4b + a) / 4): -0.25 -> 0, -12 -> -12
    assert out["a"].tolist() == [[[[-1, -16]]]] and out["q"].tolist() == [[[[0, -4]]]]
    assert out["b"].tolist() == [[[[0, -8]]]] and out["s"].tolist() == [[[[0, -12]]]]
    assert (g.info("q").lo, g.info("q").hi) == (-4, 3) and g.info("a").kind == "y"


def test_resnet_block_with_a_strided_1x1_shortcut_matches_plain_loops():
    # conv1 3x3/2 + ReLU -> conv2 3x3 (raw acc) ; shortcut 1x1/2 (raw acc) ; add + ReLU
    rng = np.random.default_rng(1)
    nodes = [inp((2, 5, 5)),
             conv("c1", "x", (3, 2, 3, 3), kernel=3, stride=2, pad=1, requant=req([5, 6, 7], S=4)),
             conv("c2", "c1", (3, 3, 3, 3), kernel=3, pad=1),
             conv("sc", "x", (3, 2, 1, 1), stride=2),
             add("out", "c2", "sc", req([9, 10, 11], A=[13, 14, 15], B=[1, -2, 3], S=7, lo=0, hi=15))]
    g = graph(nodes)
    w = {"c1": rng.integers(-8, 8, (3, 2, 3, 3)), "c2": rng.integers(-8, 8, (3, 3, 3, 3)),
         "sc": rng.integers(-8, 8, (3, 2, 1, 1))}
    x = rng.integers(0, 8, (4, 2, 5, 5))
    out = run_graph(g, w, x)
    acc1 = conv_ref(x, w["c1"], 2, 1)
    c1 = np.clip((acc1 * np.array([5, 6, 7])[:, None, None] + 8) >> 4, 0, 7)
    c2, sc = conv_ref(c1, w["c2"], 1, 1), conv_ref(x, w["sc"], 2, 0)
    assert g.info("sc").shape == (3, 3, 3) and np.array_equal(out["sc"], sc)
    assert np.array_equal(out["c1"], c1) and np.array_equal(out["c2"], c2)
    t = (c2 * np.array([9, 10, 11])[:, None, None] + sc * np.array([13, 14, 15])[:, None, None]
         + np.array([1, -2, 3])[:, None, None])
    assert np.array_equal(out["out"], np.clip((t + 64) >> 7, 0, 15))


def test_strided_1x1_shortcut_by_hand():
    g = graph([inp((1, 4, 4), bits=4), conv("sc", "x", (2, 1, 1, 1), stride=2, act_bits=4,
                                              requant=req([1, 1], hi=15))])
    out = run_graph(g, {"sc": np.array([1, -2]).reshape(2, 1, 1, 1)}, np.arange(16).reshape(1, 1, 4, 4))
    assert out["sc.acc"].tolist() == [[[[0, 2], [8, 10]], [[0, -4], [-16, -20]]]]
    assert out["sc"].tolist() == [[[[0, 2], [8, 10]], [[0, 0], [0, 0]]]]


# ----------------------------------------------------------------------------- depthwise, pools


def test_depthwise_conv_by_hand_and_against_loops():
    g = graph([inp((2, 3, 3)), conv("dw", "x", (2, 1, 3, 3), kernel=3, pad=1, groups=2, requant=req([1, 1], hi=15))])
    assert g.info("dw").fan_in == 9
    w = np.zeros((2, 1, 3, 3), dtype=np.int64)
    w[0] = 1
    w[1, 0, 1, 1] = 1
    x = np.stack([np.ones((3, 3)), np.full((3, 3), 2)])[None].astype(np.int64)
    out = run_graph(g, {"dw": w}, x)
    assert out["dw.acc"].tolist() == [[[[4, 6, 4], [6, 9, 6], [4, 6, 4]], [[2, 2, 2], [2, 2, 2], [2, 2, 2]]]]
    rng = np.random.default_rng(2)
    g = graph([inp((4, 5, 5)), conv("dw", "x", (8, 2, 3, 3), kernel=3, stride=2, pad=1, groups=2, kind="post",
                                     wbits=3, requant=req([1] * 8, lo=None, hi=None, output="logits"))])
    w, x = rng.integers(0, 8, (8, 2, 3, 3)), rng.integers(0, 8, (3, 4, 5, 5))
    ref = np.concatenate([_post_conv_ref(x[:, 2 * gi:2 * gi + 2], w[4 * gi:4 * gi + 4]) for gi in range(2)], axis=1)
    assert np.array_equal(run_graph(g, {"dw": w}, x)["dw.acc"], ref)


def test_signed_codes_meet_post_weights_as_sign_times_the_unsigned_product():
    """A linear bottleneck's signed codes into a POST conv: every accumulator equals the sum of
    products taken one at a time, each the exact ``a 2^(e/2) 2^F`` rounded (T of |a|, signed)."""
    import math

    rng = np.random.default_rng(7)
    g = graph([inp((4, 5, 5), signed=True), conv("pw", "x", (6, 4, 3, 3), kernel=3, stride=2, pad=1, signed=True,
                                                  kind="post", wbits=3, requant=req([1] * 6, lo=None, hi=None,
                                                                                    output="logits"))])
    assert g.info("pw").product_range == (-32, 32)  # |-4| at e = 2: (4 << 1) << 2
    w, x = rng.integers(0, 8, (6, 4, 3, 3)), rng.integers(-4, 4, (3, 4, 5, 5))

    def product(a, code):  # 3-bit sign-magnitude POST at F = 2, from the definition
        neg, m = code >> 2, code & 3
        if m == 0:
            return 0
        e = m - 1
        mag = abs(a) << (e // 2) << 2 if e % 2 == 0 else math.floor(abs(a) * math.sqrt(2) * 4 + 0.5) << (e // 2)
        return -mag if neg != (a < 0) else mag

    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((3, 6, 3, 3), dtype=np.int64)
    for b, o, i, j in np.ndindex(ref.shape):
        ref[b, o, i, j] = sum(product(int(xp[b, c, 2 * i + ky, 2 * j + kx]), int(w[o, c, ky, kx]))
                              for c in range(4) for ky in range(3) for kx in range(3))
    assert np.array_equal(run_graph(g, {"pw": w}, x)["pw.acc"], ref)


def _post_conv_ref(x, w, stride=2, pad=1):
    """POST conv by plain loops over golden.arith.post_product (one product at a time)."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - 3) // stride + 1, (wd + 2 * pad - 3) // stride + 1
    out = np.zeros((n, w.shape[0], ho, wo), dtype=np.int64)
    for b in range(n):
        for o in range(w.shape[0]):
            for i in range(ho):
                for j in range(wo):
                    out[b, o, i, j] = sum(arith.post_product(int(xp[b, ci, i * stride + ky, j * stride + kx]),
                                                             int(w[o, ci, ky, kx]), 3, 2)
                                          for ci in range(c) for ky in range(3) for kx in range(3))
    return out


def test_maxpool_on_codes_by_hand():
    g = graph([inp((1, 4, 4), bits=4), {"name": "mp", "op": "maxpool", "inputs": ["x"], "kernel": 2, "stride": 2,
                                        "pad": 0}])
    x = np.array([[1, 5, 0, 2], [3, 4, 9, 1], [0, 0, 7, 8], [15, 1, 6, 6]]).reshape(1, 1, 4, 4)
    assert run_graph(g, {}, x)["mp"].tolist() == [[[[5, 9], [15, 8]]]]
    assert g.info("mp").shape == (1, 2, 2) and (g.info("mp").lo, g.info("mp").hi) == (0, 15)


def test_maxpool_padding_never_wins():
    # signed codes all -3: the padded border must not contribute a 0 (torch pads with -inf)
    g = graph([inp((1, 4, 4), bits=3, signed=True),
               {"name": "mp", "op": "maxpool", "inputs": ["x"], "kernel": 3, "stride": 2, "pad": 1}])
    assert run_graph(g, {}, np.full((1, 1, 4, 4), -3))["mp"].tolist() == [[[[-3, -3], [-3, -3]]]]


def test_gap_on_a_2x2_map_by_hand():
    nodes = [inp((2, 2, 2)), {"name": "gap", "op": "gap", "inputs": ["x"], "requant": req([1, 1], S=2)}]
    x = np.array([[[1, 2], [3, 4]], [[7, 7], [7, 6]]]).reshape(1, 2, 2, 2)
    # sums 10, 27; 1/(H W) = 1/4 folded into the shift: 2.5 -> 3 (tie up), 6.75 -> 7
    assert run_graph(graph(nodes), {}, x)["gap"].tolist() == [[[[3]], [[7]]]]
    nodes[1]["requant"] = None
    g = graph(nodes)
    assert run_graph(g, {}, x)["gap"].tolist() == [[[[10]], [[27]]]]
    assert g.info("gap").kind == "acc" and g.info("gap").sum_width == arith.unsigned_width(4 * 7)


def test_avgpool_by_hand_every_window_a_tie():
    g = graph([inp((1, 4, 4), bits=4), {"name": "ap", "op": "avgpool", "inputs": ["x"], "kernel": 2, "stride": 2,
                                        "pad": 0, "requant": req([1], S=2, hi=15)}])
    # window sums 10, 18, 42, 50 -> 2.5, 4.5, 10.5, 12.5 -> 3, 5, 11, 13
    assert run_graph(g, {}, np.arange(16).reshape(1, 1, 4, 4))["ap"].tolist() == [[[[3, 5], [11, 13]]]]


def test_avgpool_padding_counts_zeros():
    g = graph([inp((1, 2, 2)), {"name": "ap", "op": "avgpool", "inputs": ["x"], "kernel": 3, "stride": 1, "pad": 1,
                                "requant": None}])
    assert run_graph(g, {}, np.ones((1, 1, 2, 2), dtype=np.int64))["ap"].tolist() == [[[[4, 4], [4, 4]]]]


def test_gap_flatten_fc_head():
    nodes = [inp((2, 2, 2)), {"name": "gap", "op": "gap", "inputs": ["x"], "requant": req([1, 1], S=2)},
             {"name": "flat", "op": "flatten", "inputs": ["gap"]},
             fc("fc", "flat", (3, 2), req([1, 1, 1], lo=None, hi=None, output="logits", frac_bits=0))]
    g = graph(nodes)
    x = np.array([[[1, 2], [3, 4]], [[7, 7], [7, 6]]]).reshape(1, 2, 2, 2)
    out = run_graph(g, {"fc": np.array([[1, 0], [0, 1], [1, -1]])}, x)
    assert out["flat"].tolist() == [[3, 7]] and out["fc"].tolist() == [[3, 7, -4]]
    assert predictions(g, out).tolist() == [1]


def test_clamp_node():
    relu6 = {"name": "relu6", "op": "clamp", "inputs": ["x"], "lo": 0, "hi": 6}
    g = graph([inp((1, 1, 3), bits=4, signed=True), relu6])
    assert run_graph(g, {}, np.array([[[[-8, 3, 7]]]]))["relu6"].tolist() == [[[[0, 3, 6]]]]
    assert (g.info("relu6").lo, g.info("relu6").hi) == (0, 6)


# ----------------------------------------------------------------------------- worst cases


def _extreme_weight(kind, bits, a, want_max, frac_bits=2):
    """The weight code whose product with activation code ``a`` is largest (or smallest)."""
    ws = np.arange(-(1 << (bits - 1)), 1 << (bits - 1)) if kind == formats.INT else np.arange(1 << bits)
    p = arith.product(np.full(ws.shape, a), ws, kind, bits, frac_bits)
    return int(ws[np.argmax(p) if want_max else np.argmin(p)])


@pytest.mark.parametrize("kind,wbits,act_bits,groups", [("int", 8, 8, 1), ("post", 3, 3, 1), ("post", 5, 4, 2),
                                                         ("pot", 4, 3, 4), ("int", 2, 2, 4)])
def test_residual_block_widths_reached_at_the_extremes_and_never_exceeded(kind, wbits, act_bits, groups):
    c = 4
    hi = (1 << act_bits) - 1
    nodes = [inp((c, 3, 3), bits=act_bits),
             conv("main", "x", (c, c // groups, 3, 3), kernel=3, pad=1, groups=groups, act_bits=act_bits, kind=kind,
                  wbits=wbits),
             conv("sc", "x", (c, c, 1, 1), act_bits=act_bits, kind=kind, wbits=wbits),
             add("sum", "main", "sc", req([32767] * c, A=[-32768] * c, B=[5] * c, S=30, lo=None, hi=None,
                                          output="logits"))]
    g = graph(nodes)
    main, sc, out = g.info("main"), g.info("sc"), g.info("sum")
    pmin, pmax = main.product_range
    for up in (True, False):
        # every input code at its maximum, every weight code at the product's extreme; at the
        # centre position (no padding) main reaches n*pmax (n*pmin), sc the opposite end
        a = hi  # products grow with the (unsigned) activation code
        wm = np.full((c, c // groups, 3, 3), _extreme_weight(kind, wbits, a, up))
        ws = np.full((c, c, 1, 1), _extreme_weight(kind, wbits, a, not up))
        res = run_graph(g, {"main": wm, "sc": ws}, np.full((1, c, 3, 3), a))
        centre = res["main"][0, :, 1, 1]
        assert (centre == (main.acc_range[1] if up else main.acc_range[0])).all()
        assert (res["sc"] == (sc.acc_range[0] if up else sc.acc_range[1])).all()
        t = int(centre[0]) * 32767 + int(res["sc"][0, 0, 1, 1]) * -32768 + 5
        assert t == (out.t_range[1] if up else out.t_range[0])
        for name in ("main", "sc", "sum"):
            info = g.info(name)
            assert info.lo <= res[name].min() and res[name].max() <= info.hi
    assert main.acc_width == arith.signed_width(*main.acc_range)
    assert out.t_width == arith.signed_width(*out.t_range)
    # the aligned sum needs at most one bit more than its wider term
    assert out.t_width <= max(arith.signed_width(main.acc_range[0] * 32767, main.acc_range[1] * 32767),
                              arith.signed_width(sc.acc_range[1] * -32768, sc.acc_range[0] * -32768)) + 1


def test_gap_width_is_input_width_plus_log2_hw_guard_bits_and_reached():
    for h, w in ((2, 2), (8, 8), (3, 5), (7, 7)):
        g = graph([inp((3, h, w), bits=4), {"name": "gap", "op": "gap", "inputs": ["x"], "requant": None}])
        info = g.info("gap")
        assert info.sum_range == (0, 15 * h * w)
        # unsigned 4-bit codes: the sum is unsigned, with ceil(log2(H W)) guard bits at most
        assert info.sum_width == arith.unsigned_width(15 * h * w) <= 4 + int(np.ceil(np.log2(h * w)))
        res = run_graph(g, {}, np.full((1, 3, h, w), 15))
        assert (res["gap"] == info.sum_range[1]).all()
        assert res["gap"].max() < (1 << info.sum_width)
    g = graph([inp((3, 4, 4), bits=4, signed=True), {"name": "gap", "op": "gap", "inputs": ["x"], "requant": None}])
    assert g.info("gap").sum_range == (-8 * 16, 7 * 16) and g.info("gap").sum_width == 4 + 4


# ----------------------------------------------------------------------------- refusals


def _refused(nodes, match, output=None):
    with pytest.raises(UserError, match=match):
        graph(nodes, output)


def test_cycle_refused_with_the_node_named():
    nodes = [inp((1, 2, 2)), add("p", "x", "q", req([1], A=[1])), add("q", "p", "x", req([1], A=[1]))]
    _refused(nodes, r"node 'p': cycle p -> q -> p", output="q")


def test_unknown_input_refused():
    _refused([inp((1, 2, 2)), conv("c", "nope", (1, 1, 1, 1), requant=req([1]))], r"node 'c': unknown input 'nope'")


def test_topological_order_required():
    nodes = [inp((1, 2, 2)), {"name": "f", "op": "flatten", "inputs": ["m"]},
             {"name": "m", "op": "maxpool", "inputs": ["x"], "kernel": 1, "stride": 1, "pad": 0}]
    _refused(nodes, r"node 'f': input 'm' is listed after it", output="f")


def test_unknown_op_refused():
    _refused([inp((1, 2, 2)), {"name": "s", "op": "softmax", "inputs": ["x"]}], r"node 's': op 'softmax' unknown")


def test_shape_mismatch_refused():
    nodes = [inp((1, 4, 4)), conv("a", "x", (1, 1, 1, 1), stride=2), add("s", "a", "x", req([1], A=[1]))]
    _refused(nodes, r"node 's': the branches' shapes differ: 'a' \[1, 2, 2\], 'x' \[1, 4, 4\]")
    _refused([inp((2, 4, 4)), conv("c", "x", (3, 1, 3, 3), kernel=3, requant=req([1] * 3))],
             r"node 'c'.weight: shape \[3, 1, 3, 3\] disagrees with the input 'x'")
    _refused([inp((2, 4, 4)), fc("f", "x", (3, 32), req([1] * 3))], r"node 'f': fc takes a flat \(C,\) input")
    _refused([inp((3, 4, 4)), conv("c", "x", (4, 1, 3, 3), kernel=3, groups=2, requant=req([1] * 4))],
             r"node 'c': groups 2 must divide the input channels 3")


def test_other_refusals_name_the_node():
    _refused([inp((1, 2, 2)), inp((1, 2, 2), name="x")], r"node 'x' is defined twice")
    _refused([inp((1, 2, 2), bits=4), conv("c", "x", (1, 1, 1, 1), requant=req([1]))],
             r"node 'c'.act_in: codes of 'x' span 0..15, outside the unsigned 3-bit range 0..7")
    _refused([inp((1, 2, 2)), conv("c", "x", (1, 1, 1, 1)), {"name": "m", "op": "maxpool", "inputs": ["c"],
                                                               "kernel": 1, "stride": 1, "pad": 0}],
             r"node 'm': maxpool takes codes or y, but input 'c' is a raw acc")
    _refused([inp((1, 2, 2)), conv("c", "x", (1, 1, 1, 1), requant=req([1], lo=None, hi=None, output="logits")),
              {"name": "f", "op": "flatten", "inputs": ["c"]}],
             r"node 'f': input 'c' yields logits")
    _refused([inp((1, 2, 2)), conv("c", "x", (1, 1, 1, 1), requant=req([1])), conv("d", "x", (1, 1, 1, 1))],
             r"node 'c': its output is never used", output="d")
    _refused([inp((1, 2, 2)), conv("c", "x", (1, 1, 1, 1), requant=req([1, 2]))], r"node 'c'.requant: M has 2")
    _refused([inp((1, 2, 2)), conv("c", "x", (1, 1, 1, 1), requant=req([1], G=10))],
             r"node 'c'.requant: G 10 disagrees with the input's beta format")
    big = [inp((1, 2, 2), bits=8), conv("c", "x", (1, 1, 1, 1), act_bits=8, wbits=8,
                                         requant=req([1], B=[1 << 61], lo=None, hi=None, output="logits"))]
    _refused(big, r"node 'c'.requant: t needs 63 bits, more than the 62")
    big[1]["requant"]["M"] = [1 << 15]
    _refused(big, r"node 'c'.requant: M outside the 16-bit multiplier range -32768..32767")


def test_unknown_fields_refused():
    _refused([inp((1, 4, 4)), {"name": "mp", "op": "maxpool", "inputs": ["x"], "kernel": 2, "stride": 2, "pad": 0,
                               "ceil_mode": True}], r"node 'mp': field 'ceil_mode' unknown here")
    _refused([inp((1, 2, 2)), conv("c", "x", (1, 1, 1, 1), requant={**req([1]), "round": "even"})],
             r"node 'c'.requant: field 'round' unknown here")


def test_recorded_widths_must_match_the_proof():
    g = graph([inp((1, 2, 2)), conv("c", "x", (2, 1, 3, 3), kernel=3, pad=1, requant=req([1, 2]))])
    d = json.loads(json.dumps(g.to_dict()))
    assert Graph.from_dict(d).to_dict() == d
    d["nodes"][1]["acc_width"] += 1
    with pytest.raises(UserError, match=r"node 'c': acc_width \d+ recorded, \d+ derived"):
        Graph.from_dict(d)
    d = g.to_dict()
    d["nodes"][1]["out_shape"] = [2, 1, 1]
    with pytest.raises(UserError, match=r"node 'c': out_shape \[2, 1, 1\] recorded, \[2, 2, 2\] derived"):
        Graph.from_dict(d)


def test_run_refuses_bad_weights_and_inputs():
    g = graph([inp((1, 2, 2)), conv("c", "x", (1, 1, 1, 1), requant=req([1]))])
    with pytest.raises(UserError, match="weights of node 'c': missing"):
        run_graph(g, {}, np.zeros((1, 1, 2, 2), dtype=np.int64))
    with pytest.raises(UserError, match="weights of node 'c': codes outside -8..7"):
        run_graph(g, {"c": np.full((1, 1, 1, 1), 8)}, np.zeros((1, 1, 2, 2), dtype=np.int64))
    with pytest.raises(UserError, match="input codes outside 0..7"):
        run_graph(g, {"c": np.ones((1, 1, 1, 1), dtype=np.int64)}, np.full((1, 1, 2, 2), 8))


# ----------------------------------------------------------------------------- property


def _asq_act_in(draw, c, bits):
    """An ASQ input of ``c < 8`` channels with random adapter constants (y with 4 fractional bits)."""
    G = formats.BETA_FRAC
    asq = {"W1": None, "b1": None, "S1": 0, "W2": draw(st.lists(st.integers(-2047, 2047), min_size=c, max_size=c)),
           "b2": draw(st.integers(-(1 << 20), 1 << 20)), "S2": draw(st.integers(0, 12)), "G": G,
           "beta_min": 1 << (G - formats.BETA_MIN_SHIFT), "beta_max": formats.BETA_MAX,
           "s_code": draw(st.integers(1024, 4095)), "FS": 11, "R": 28, "FY": 4, "qmax": (1 << bits) - 1}
    return {"quant": "asq", "bits": bits, "signed": False, "step": 1.0, "asq": asq}


@st.composite
def residual_graphs(draw):
    c = draw(st.integers(1, 4))
    h = draw(st.integers(2, 5))
    bits = draw(st.integers(2, 4))
    kind, wbits = draw(st.sampled_from([("int", 2), ("int", 4), ("int", 8), ("pot", 3), ("post", 3), ("post", 4)]))
    stride = draw(st.sampled_from([1, 2]))
    hi = (1 << bits) - 1
    ints = st.integers(-(1 << 15), (1 << 15) - 1)
    mult = draw(st.lists(ints, min_size=3 * c, max_size=3 * c))
    depthwise = draw(st.booleans())
    nodes = [inp((c, h, h), bits=bits),
             conv("c1", "x", (c, 1 if depthwise else c, 3, 3), kernel=3, stride=stride, pad=1,
                  groups=c if depthwise else 1, act_bits=bits, kind=kind, wbits=wbits,
                  requant=req(mult[:c], B=mult[c:2 * c], S=draw(st.integers(0, 20)), hi=hi)),
             conv("c2", "c1", (c, c, 3, 3), kernel=3, pad=1, act_bits=bits, kind=kind, wbits=wbits)]
    G = 0
    if draw(st.booleans()):
        # ASQ: c1 hands y to an ASQ unit in front of c2 (whose accumulator carries the beta); the skip
        # is c1's y itself (no beta: multiplied by 2^G) or a 1x1 conv behind its own ASQ unit (a beta)
        G = formats.BETA_FRAC
        nodes[1]["requant"].update(lo=0, hi=formats.Y_MAX, output="y", frac_bits=4)
        nodes[2]["act_in"] = _asq_act_in(draw, c, bits)
        skip = draw(st.sampled_from(["c1", "sc"]))
        if skip == "sc":
            nodes.append(conv("sc", "c1", (c, c, 1, 1), act_bits=bits, kind=kind, wbits=wbits))
            nodes[-1]["act_in"] = _asq_act_in(draw, c, bits)
    elif stride == 2:
        nodes.append(conv("sc", "x", (c, c, 1, 1), stride=2, act_bits=bits, kind=kind, wbits=wbits))
        skip = "sc"
    else:
        skip = "x"
    nodes.append(add("sum", "c2", skip, req(mult[2 * c:], A=mult[:c], B=mult[c:2 * c], S=draw(st.integers(0, 30)),
                                             hi=hi, G=G)))
    tail = draw(st.sampled_from(["none", "maxpool", "avgpool", "gap"]))
    if tail == "maxpool":
        nodes.append({"name": "pool", "op": "maxpool", "inputs": ["sum"], "kernel": 2, "stride": 1, "pad": 1})
    elif tail == "avgpool":
        nodes.append({"name": "pool", "op": "avgpool", "inputs": ["sum"], "kernel": 2, "stride": 2, "pad": 1,
                      "requant": req([draw(ints)] * c, S=draw(st.integers(0, 20)), hi=hi)})
    elif tail == "gap":
        nodes.append({"name": "pool", "op": "gap", "inputs": ["sum"], "requant": None})
    g = graph(nodes)
    lo_w, hi_w = (-(1 << (wbits - 1)), (1 << (wbits - 1)) - 1) if kind == "int" else (0, (1 << wbits) - 1)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    # random weight codes, or every code at the one giving the largest (smallest) product
    extreme = draw(st.sampled_from([None, True, False]))
    if extreme is not None:
        lo_w = hi_w = _extreme_weight(kind, wbits, hi, extreme)
    return g, (lo_w, hi_w), hi, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(residual_graphs())
def test_random_residual_graphs_stay_within_their_proved_widths(case):
    g, (lo_w, hi_w), hi, seed = case
    rng = np.random.default_rng(seed)
    weights = {n.name: rng.integers(lo_w, hi_w + 1, n.weight.shape) for n in g.nodes if n.op == "conv"}
    # random codes, with whole maps at the extremes (where the bounds are reached)
    shape = g.info("x").shape
    x = np.concatenate([rng.integers(0, hi + 1, (6, *shape)), np.zeros((1, *shape), int),
                        np.full((1, *shape), hi)])
    res = run_graph(g, weights, x)
    for node, info in zip(g.nodes, g.infos, strict=True):
        v = res[node.name]
        assert v.shape[1:] == info.shape
        assert info.lo <= v.min() and v.max() <= info.hi, node.name
        assert (v.max() < (1 << info.width)) if info.lo >= 0 else (v.min() >= -(1 << (info.width - 1)))
        if info.acc_range is not None:
            acc = res[f"{node.name}.acc"]
            assert info.acc_range[0] <= acc.min() and acc.max() <= info.acc_range[1]
        if node.op == "add":
            r = node.requant
            main, skip = (res[i] for i in node.inputs)
            cm = (-1, 1, 1)
            g_m, g_s = (res[f"{i}.beta"].reshape(-1, 1, 1, 1) if f"{i}.beta" in res and g.node(i).requant is None
                        else 1 << r.G for i in node.inputs)
            t = (main * np.reshape(r.M, cm) * g_m + skip * np.reshape(r.A, cm) * g_s + (np.reshape(r.B, cm) << r.G))
            assert info.t_range[0] <= t.min() and t.max() <= info.t_range[1]
            assert info.t_width <= 62


# ----------------------------------------------------------------------------- the digits chain


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_digits_chain_as_a_graph_equals_golden_model_run(bits, shipped_bundle):
    bundle = load_bundle(shipped_bundle(bits))
    g = graph_from_chain(bundle.manifest)
    text = json.dumps(g.to_dict())
    g = Graph.from_dict(json.loads(text), bundle.manifest.post_frac_bits)
    assert json.dumps(g.to_dict()) == text
    x = bundle.vectors["conv1.in"]
    ref, got = run(bundle, x), run_graph(g, bundle.weights, x)
    for layer in bundle.manifest.layers:
        name = layer.name
        assert np.array_equal(got[f"{name}.in"], ref[f"{name}.in"]), name
        assert np.array_equal(got[f"{name}.acc"], ref[f"{name}.acc"]), name
        if layer.act_in.is_asq:
            assert np.array_equal(got[f"{name}.beta"], ref[f"{name}.beta"]), name
        if layer.requant.output == "y":
            assert np.array_equal(got[name], ref[f"{name}.y"]), name
        # the proof of format 1 and of the graph agree
        info = g.info(name)
        assert (info.fan_in, info.product_range, info.acc_width) == (layer.fan_in, layer.product_range,
                                                                      layer.acc_width)
        # format 1 records a symmetric bound (max |acc| max |M| + max |B|), the graph the exact corners:
        # never wider, at most one bit narrower
        assert layer.requant.t_width - 1 <= info.t_width <= layer.requant.t_width
        assert info.width == layer.requant.out_width
    assert np.array_equal(got["fc"], ref["logits"])
    assert np.array_equal(predictions(g, got), ref["pred"])
    # and the shipped vectors
    assert np.array_equal(got["fc"], bundle.vectors["logits"])


# ----------------------------------------------------------------------------- whole networks


def _layer_requant(rng, c, lo, hi, output="codes", frac_bits=0, skip=False):
    """Random but plausible constants: multipliers of either sign, a shift that keeps codes alive."""
    return req(rng.integers(1000, 32767, c).tolist(), B=rng.integers(-(1 << 16), 1 << 16, c).tolist(),
               S=16, lo=lo, hi=hi, output=output, frac_bits=frac_bits,
               A=rng.integers(1000, 32767, c).tolist() if skip else None)


def resnet20_nodes(rng, bits=3, kind="post"):
    """ResNet-20 (16/32/64 channels, 3 stages of 3 basic blocks, 1x1 stride-2 shortcuts) as nodes:
    8-bit signed input and fc, BITS-bit codes between layers (LSQ inputs)."""
    hi = (1 << bits) - 1

    def qconv(name, src, cin, cout, k, stride, requant):
        return conv(name, src, (cout, cin, k, k), kernel=k, stride=stride, pad=k // 2, act_bits=bits, kind=kind,
                    wbits=bits, requant=requant)

    nodes = [inp((3, 32, 32), bits=8, signed=True),
             conv("stem", "x", (16, 3, 3, 3), kernel=3, pad=1, act_bits=8, signed=True, wbits=8,
                  requant=_layer_requant(rng, 16, 0, hi))]
    prev, cin = "stem", 16
    for stage, cout in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage and not block else 1
            b = f"s{stage + 1}b{block + 1}"
            nodes.append(qconv(f"{b}c1", prev, cin, cout, 3, stride, _layer_requant(rng, cout, 0, hi)))
            nodes.append(qconv(f"{b}c2", f"{b}c1", cout, cout, 3, 1, None))
            skip = prev
            if stride != 1 or cin != cout:
                nodes.append(qconv(f"{b}sc", prev, cin, cout, 1, stride, None))
                skip = f"{b}sc"
            nodes.append(add(b, f"{b}c2", skip, _layer_requant(rng, cout, 0, hi, skip=True)))
            prev, cin = b, cout
    nodes += [{"name": "gap", "op": "gap", "inputs": [prev], "requant": _layer_requant(rng, 64, 0, 255)},
              {"name": "flat", "op": "flatten", "inputs": ["gap"]},
              fc("fc", "flat", (10, 64), _layer_requant(rng, 10, None, None, output="logits", frac_bits=8),
                 act_bits=8)]
    nodes[-1]["weight"] = weight((10, 64), bits=8)
    return nodes


def test_resnet20_is_a_graph_with_proved_widths_and_runs():
    rng = np.random.default_rng(3)
    g = graph(resnet20_nodes(rng))
    assert sum(n.op == "conv" for n in g.nodes) == 21 and sum(n.op == "add" for n in g.nodes) == 9
    assert g.info("s3b1sc").shape == (64, 8, 8) and g.info("gap").sum_width == 3 + 6
    assert max(i.t_width or 0 for i in g.infos) <= 62
    weights = {}
    for n in g.nodes:
        if n.op in ("conv", "fc"):
            top = (1 << n.weight.bits) - 1
            weights[n.name] = (rng.integers(0, top + 1, n.weight.shape) if n.weight.kind != "int"
                               else rng.integers(-(top + 1) // 2, (top + 1) // 2, n.weight.shape))
    res = run_graph(g, weights, rng.integers(-128, 128, (2, 3, 32, 32)))
    for node, info in zip(g.nodes, g.infos, strict=True):
        assert info.lo <= res[node.name].min() and res[node.name].max() <= info.hi, node.name
    assert res["fc"].shape == (2, 10)


def mobilenet_v2_nodes(rng, size=224, bits=4):
    """MobileNet-V2 (torchvision's table) as nodes: ReLU6 folded into each requantizer's hi,
    depthwise 3x3 convs as groups, linear bottlenecks kept as signed codes, residual adds, GAP."""
    hi, shi, slo = (1 << bits) - 1, (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    relu6 = min(hi, 12)  # round(6 / s) for a step s of 1/2

    def c(name, src, cin, cout, k, stride, groups, requant, signed=False):
        return conv(name, src, (cout, cin // groups, k, k), kernel=k, stride=stride, pad=k // 2, groups=groups,
                    act_bits=bits, signed=signed, kind="int", wbits=bits, requant=requant)

    nodes = [inp((3, size, size), bits=8, signed=True),
             conv("stem", "x", (32, 3, 3, 3), kernel=3, stride=2, pad=1, act_bits=8, signed=True, wbits=8,
                  requant=_layer_requant(rng, 32, 0, relu6))]
    prev, cin, signed, index = "stem", 32, False, 1
    for t, cout, repeats, first in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                                    (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(repeats):
            stride, b, hidden = first if i == 0 else 1, f"f{index}", cin * t
            src = prev
            if t != 1:
                nodes.append(c(f"{b}e", prev, cin, hidden, 1, 1, 1, _layer_requant(rng, hidden, 0, relu6), signed))
                src = f"{b}e"
            nodes.append(c(f"{b}d", src, hidden, hidden, 3, stride, hidden, _layer_requant(rng, hidden, 0, relu6)))
            residual = stride == 1 and cin == cout
            nodes.append(c(f"{b}p", f"{b}d", hidden, cout, 1, 1, 1,
                           None if residual else _layer_requant(rng, cout, slo, shi)))
            if residual:
                nodes.append(add(b, f"{b}p", prev, _layer_requant(rng, cout, slo, shi, skip=True)))
            prev, cin, signed, index = (b if residual else f"{b}p"), cout, True, index + 1
    nodes += [c("last", prev, cin, 1280, 1, 1, 1, _layer_requant(rng, 1280, 0, relu6), signed=True),
              {"name": "gap", "op": "gap", "inputs": ["last"], "requant": _layer_requant(rng, 1280, 0, 255)},
              {"name": "flat", "op": "flatten", "inputs": ["gap"]},
              fc("fc", "flat", (1000, 1280), _layer_requant(rng, 1000, None, None, output="logits", frac_bits=8),
                 act_bits=8)]
    nodes[-1]["weight"] = weight((1000, 1280), bits=8)
    return nodes


def test_mobilenet_v2_is_a_graph_with_proved_widths():
    rng = np.random.default_rng(4)
    g = graph(mobilenet_v2_nodes(rng))
    assert sum(n.op == "add" for n in g.nodes) == 10
    assert sum(n.op == "conv" and n.groups > 1 for n in g.nodes) == 17
    assert g.info("last").shape == (1280, 7, 7) and g.info("gap").sum_width == arith.unsigned_width(12 * 49)
    assert max(i.t_width or 0 for i in g.infos) <= 62
    text = json.dumps(g.to_dict())
    assert json.dumps(Graph.from_dict(json.loads(text)).to_dict()) == text


def test_the_documented_format_2_example_is_a_valid_graph():
    text = (Path(__file__).resolve().parents[1] / "docs" / "arithmetic.md").read_text(encoding="utf-8")
    section = text.split("## 7. Graphs (bundle format 2)", 1)[1]
    manifest = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    assert manifest["format_version"] == 2
    g = Graph.from_dict(manifest["graph"], manifest["post_frac_bits"])
    assert [n.op for n in g.nodes] == ["input", "conv", "conv", "conv", "add", "gap", "flatten", "fc"]
    rng = np.random.default_rng(5)
    weights = {n.name: rng.integers(0, 8, n.weight.shape) if n.weight.kind == "post"
               else rng.integers(-128, 128, n.weight.shape) for n in g.nodes if n.op in ("conv", "fc")}
    res = run_graph(g, weights, rng.integers(-8, 9, (3, 1, 8, 8)))
    assert res["fc"].shape == (3, 3) and g.info("gap").sum_width == 9
