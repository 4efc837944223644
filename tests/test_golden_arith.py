"""The integer primitives of golden/arith.py against hand values, exhaustive specs and float64."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden import arith, formats


def test_rshift_round_hand_values():
    # round half up: -1.5 -> -1, -2.5 -> -2, 1.5 -> 2, 2.5 -> 3, -0.25 -> 0
    x = np.array([-3, -5, 3, 5, -1, 7, -7])
    assert arith.rshift_round(x, 1).tolist() == [-1, -2, 2, 3, 0, 4, -3]
    assert arith.rshift_round(-1, 2) == 0  # -0.25
    assert arith.rshift_round(-2, 2) == 0  # -0.5 -> 0
    assert arith.rshift_round(-3, 2) == -1  # -0.75
    assert arith.rshift_round(13, 0) == 13
    with pytest.raises(ValueError):
        arith.rshift_round(1, -1)


@given(st.integers(-(2**50), 2**50), st.integers(0, 40))
def test_rshift_round_is_floor_plus_half(x, n):
    assert arith.rshift_round(x, n) == math.floor(x / 2**n + 0.5)


def test_rshift_round_refuses_floats():
    with pytest.raises(TypeError):
        arith.rshift_round(np.array([1.5]), 1)


def test_post_table_hand_values():
    # a * sqrt(2) * 64 = 0, 90.51, 181.02, 271.53, 362.04, 452.55, 543.06, 633.57
    assert arith.post_table(3, 6).tolist() == [0, 91, 181, 272, 362, 453, 543, 634]
    # F = 4: a * 22.627..., rounded half up by hand
    assert arith.post_table(3, 4).tolist() == [0, 23, 45, 68, 91, 113, 136, 158]


@pytest.mark.parametrize("act_bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("frac_bits", [0, 4, 6, 8])
def test_post_table_within_half_lsb_exactly(act_bits, frac_bits):
    # |T - a sqrt2 2^F| <= 1/2  <=>  (2T - 1)^2 <= 8 a^2 4^F <= (2T + 1)^2, all in integers.
    table = arith.post_table(act_bits, frac_bits)
    for a, t in enumerate(table.tolist()):
        target = 8 * a * a * 4**frac_bits
        assert max(2 * t - 1, 0) ** 2 <= target <= (2 * t + 1) ** 2


def _exact_post(a, code, bits, frac_bits):
    """a * |w| / (alpha 2^-(K/2) 2^-F) with the sign: the exact real product."""
    neg, m = code >> (bits - 1), code & ((1 << (bits - 1)) - 1)
    if m == 0:
        return 0.0, 0.0
    e = m - 1
    value = a * 2.0 ** (e / 2) * 2.0**frac_bits
    bound = 0.0 if e % 2 == 0 else 2.0 ** ((e - 1) // 2) / 2
    return (-value if neg else value), bound


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
@pytest.mark.parametrize("frac_bits", [6, 8])
def test_post_product_exhaustive(bits, frac_bits):
    """Every activation code (at the weight's width and at 8 bits) times every POST code."""
    for act_bits in sorted({bits, 8}):
        acts = np.arange(1 << act_bits)
        codes = np.arange(1 << bits)
        got = arith.post_product(acts[:, None], codes[None, :], bits, frac_bits)
        for a in acts.tolist():
            for c in codes.tolist():
                exact, bound = _exact_post(a, c, bits, frac_bits)
                assert abs(got[a, c] - exact) <= bound + 1e-9, (a, c)
                if bound == 0.0:
                    assert got[a, c] == exact


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
@pytest.mark.parametrize("act_bits", [3, 4, 8])
def test_post_product_of_signed_codes_is_exhaustively_within_the_table_bound(bits, act_bits):
    """Every two's complement code (a linear bottleneck's) times every POST code: within the table's
    bound of the exact real product, exact for even exponents, and odd in ``a`` (the same rounding
    rule as for unsigned codes, ``a sqrt2 2^F`` never being a tie)."""
    frac_bits = 2
    acts = np.arange(-(1 << (act_bits - 1)), 1 << (act_bits - 1))
    codes = np.arange(1 << bits)
    got = arith.post_product(acts[:, None], codes[None, :], bits, frac_bits)
    for i, a in enumerate(acts.tolist()):
        for c in codes.tolist():
            exact, bound = _exact_post(a, c, bits, frac_bits)
            assert abs(got[i, c] - exact) <= bound + 1e-9, (a, c)
            if bound == 0.0:
                assert got[i, c] == exact, (a, c)
            if -a in acts:
                assert got[i, c] == -arith.post_product(-a, c, bits, frac_bits), (a, c)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pot_product_of_signed_codes(bits):
    acts = np.arange(-128, 128)
    for code in range(1 << bits):
        neg, m = code >> (bits - 1), code & ((1 << (bits - 1)) - 1)
        expect = 0 if m == 0 else (-1) ** neg * acts * 2 ** (m - 1)
        assert np.array_equal(arith.pot_product(acts, code, bits), np.broadcast_to(expect, acts.shape))


def test_product_range_of_signed_codes_is_the_exhaustive_one():
    # 3-bit signed codes -4..3 with 3-bit POST at F = 2: T[4] = 23, the largest magnitude is
    # |-4| * 2^(1/2) rounded: e = 1 (m = 2) -> T[4] << 0 = 23; e = 2 (m = 3) -> (4 << 1) << 2 = 32.
    assert arith.product_range(-4, 3, "post", 3, 2) == (-32, 32)
    assert arith.product_range(-4, 3, "pot", 3) == (-16, 16)


def test_post_product_shift_structure():
    # 4-bit POST, code m=5 -> e=4 (even): (a << 2) << F; m=4 -> e=3 (odd): T[a] << 1.
    t = arith.post_table(4, 6)
    assert arith.post_product(11, 5, 4, 6) == (11 << 2) << 6
    assert arith.post_product(11, 4, 4, 6) == int(t[11]) << 1
    assert arith.post_product(11, 0b1100, 4, 6) == -(int(t[11]) << 1)
    assert arith.post_product(11, 0b1000, 4, 6) == 0  # negative zero


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pot_product_exhaustive(bits):
    acts = np.arange(256)
    for code in range(1 << bits):
        neg, m = code >> (bits - 1), code & ((1 << (bits - 1)) - 1)
        expect = 0 if m == 0 else (-1) ** neg * acts * 2 ** (m - 1)
        assert np.array_equal(arith.pot_product(acts, code, bits), np.broadcast_to(expect, acts.shape))


def test_power_formats_refused_above_their_width():
    with pytest.raises(ValueError, match="post weights are not offered at 6 bits"):
        arith.post_product(1, 1, 6)
    with pytest.raises(ValueError, match="pot weights are not offered at 5 bits"):
        arith.pot_product(1, 1, 5)
    with pytest.raises(ValueError):
        formats.check_weight_format("int", 9)


@pytest.mark.parametrize("kind,bits", [("post", 2), ("post", 3), ("post", 4), ("pot", 3), ("pot", 4)])
def test_codes_mean_what_the_quantizer_means(kind, bits):
    """The sign-magnitude code decodes to the level quant's PowerWeight dequantizes it to."""
    import torch

    from quant.quantizers import PowerWeight

    wq = PowerWeight(bits, 1, kind)
    wq.alpha.data.fill_(1.0)
    codes = torch.arange(1 << bits).reshape(1, -1)
    float_levels = wq.dequantize(codes).double().numpy().reshape(-1)
    k = arith.post_k(bits)
    for c in range(1 << bits):
        neg, m = c >> (bits - 1), c & ((1 << (bits - 1)) - 1)
        e = m - 1
        value = 0.0 if m == 0 else (-1) ** neg * 2.0 ** ((e - k) / (2 if kind == "post" else 1))
        assert float_levels[c] == pytest.approx(value, rel=1e-7, abs=0)


def test_default_post_frac_bits():
    """F = 2 for the POST widths with odd exponents; 0 at BITS = 2, where K = 0 (no table read)."""
    assert [formats.default_post_frac_bits(b) for b in (2, 3, 4, 5, 8)] == [0, 2, 2, 2, 2]
    assert arith.post_k(2) == 0  # so every 2-bit POST product is an even-exponent shift


def test_product_range_and_acc_width_hand_values():
    # int8 x int8: (-128)(-128) = 16384 max, (-128)(127) = -16256 min; 9 terms -> 147456 needs 19 bits.
    assert arith.product_range(-128, 127, "int", 8) == (-16256, 16384)
    assert arith.acc_width(9, -16256, 16384) == 19
    # 4-bit POST, F=6: 15 * 2^3 * 2^6 = 7680; 144 terms: 1105920 < 2^21 -> 22 bits signed.
    assert arith.product_range(0, 15, "post", 4, 6) == (-7680, 7680)
    assert arith.acc_width(144, -7680, 7680) == 22
    # F=4: 15 * 2^3 * 2^4 = 1920 > T[15] << 2 = 339 * 4; 144 * 1920 = 276480 < 2^19: 20 bits.
    assert arith.product_range(0, 15, "post", 4, 4) == (-1920, 1920)
    assert arith.acc_width(144, -1920, 1920) == 20
    # F=2 (the default): 15 * 2^3 * 2^2 = 480 > T[15] << 2 = 85 * 4; 144 * 480 = 69120 < 2^17: 18 bits.
    assert arith.product_range(0, 15, "post", 4) == (-480, 480)
    assert arith.acc_width(144, -480, 480) == 18
    # 3-bit POST, F=4: (7 << 1) << 4 = 224 > T[7] = round(7 sqrt2 16) = 158.
    assert arith.product_range(0, 7, "post", 3, 4) == (-224, 224)
    assert arith.signed_width(-128, 127) == 8 and arith.signed_width(-129, 0) == 9
    assert arith.unsigned_width(255) == 8 and arith.unsigned_width(256) == 9


@given(st.integers(1, 4096), st.integers(-(2**20), 0), st.integers(0, 2**20))
def test_acc_width_is_tight(n, pmin, pmax):
    w = arith.acc_width(n, pmin, pmax)
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    assert lo <= n * pmin and n * pmax <= hi
    if w > 1:  # one bit fewer would not do
        assert not (-(1 << (w - 2)) <= n * pmin and n * pmax <= (1 << (w - 2)) - 1)
    # never more than product width + ceil(log2 n) guard bits
    assert w <= arith.signed_width(pmin, pmax) + math.ceil(math.log2(n))


@given(st.integers(1, 2**40), st.integers(1, 60))
def test_reciprocal_is_round_half_up(q, r_bits):
    r = arith.reciprocal(q, r_bits)
    # r = floor(2^R / q + 1/2)  <=>  2 q r - q <= 2^(R+1) < 2 q r + q
    assert 2 * q * r - q <= 2 ** (r_bits + 1) < 2 * q * r + q


# ----------------------------------------------------------------------------- random layers

def _weight_value_units(code, kind, bits, frac_bits, a):
    """Independent float64 product in the golden's product units (POST via a float64 table)."""
    if kind == "int":
        return float(a) * float(code)
    neg, m = code >> (bits - 1), code & ((1 << (bits - 1)) - 1)
    if m == 0:
        return 0.0
    e = m - 1
    if kind == "pot":
        mag = float(a) * 2.0**e
    elif e % 2 == 0:
        mag = float(a) * 2.0 ** (e // 2) * 2.0**frac_bits
    else:
        mag = math.floor(a * math.sqrt(2.0) * 2.0**frac_bits + 0.5) * 2.0 ** ((e - 1) // 2)
    return -mag if neg else mag


@st.composite
def conv_layers(draw):
    kind = draw(st.sampled_from(["int", "pot", "post"]))
    bits = draw(st.integers(2, {"int": 8, "pot": 4, "post": 5}[kind]))
    act_bits = draw(st.integers(2, 8))
    signed = kind == "int" and draw(st.booleans())
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    stride, pad = draw(st.integers(1, 2)), draw(st.integers(0, 1))
    h = draw(st.integers(k, 5))
    w = draw(st.integers(k, 5))
    n = draw(st.integers(1, 2))
    lo, hi = (-(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1) if signed else (0, (1 << act_bits) - 1)
    extreme = draw(st.booleans())
    if extreme:  # every code at an extreme
        acts = np.full((n, c_in, h, w), draw(st.sampled_from([lo, hi])), dtype=np.int64)
    else:
        acts = np.array(draw(st.lists(st.integers(lo, hi), min_size=n * c_in * h * w,
                                      max_size=n * c_in * h * w))).reshape(n, c_in, h, w)
    wlo, whi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kind == "int" else (0, (1 << bits) - 1)
    size = c_out * c_in * k * k
    weights = np.array(draw(st.lists(st.integers(wlo, whi), min_size=size, max_size=size)))
    weights = weights.reshape(c_out, c_in, k, k)
    M = np.array(draw(st.lists(st.integers(-(2**15), 2**15 - 1), min_size=c_out, max_size=c_out)))
    B = np.array(draw(st.lists(st.integers(-(2**20), 2**20), min_size=c_out, max_size=c_out)))
    S = draw(st.integers(0, 20))
    asq = draw(st.booleans())
    G = 10 if asq else 0
    g = np.array(draw(st.lists(st.integers(1, 2**14 - 1), min_size=n, max_size=n))) if asq else np.ones(n, int)
    clamp = draw(st.sampled_from(["codes", "none"]))
    layer = {"kind": "conv", "kernel": k, "stride": stride, "pad": pad,
             "out_shape": [c_out, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1],
             "act_in": {"bits": act_bits}, "weight": {"kind": kind, "bits": bits},
             "requant": {"M": M.tolist(), "B": B.tolist(), "S": S, "G": G,
                         "lo": 0 if clamp == "codes" else None, "hi": 255 if clamp == "codes" else None}}
    return layer, acts, weights, g


def _layer_record(layer: dict):
    """The typed layer the golden model takes, from the drawn fields (the others are placeholders)."""
    from golden.bundle import ActIn, Layer, Requant, WeightSpec

    req = layer["requant"]
    return Layer(
        name="conv", kind="conv", in_shape=(), out_shape=tuple(layer["out_shape"]), kernel=layer["kernel"],
        stride=layer["stride"], pad=layer["pad"], fan_in=0,
        act_in=ActIn(quant="lsq", bits=layer["act_in"]["bits"], signed=False, step=1.0, asq=None),
        weight=WeightSpec(kind=layer["weight"]["kind"], bits=layer["weight"]["bits"], shape=(), mem="",
                          scale=(), unit_exp=0),
        product_range=(0, 0), acc_width=0,
        requant=Requant(M=tuple(req["M"]), B=tuple(req["B"]), S=req["S"], G=req["G"], output="codes",
                        lo=req["lo"], hi=req["hi"], frac_bits=0, M_width=0, B_width=0, t_width=0,
                        out_width=0))


@settings(max_examples=150, deadline=None)
@given(conv_layers(), st.sampled_from([4, 6]))
def test_random_layer_equals_float64_reference(case, frac_bits):
    from golden.model import accumulate, requant_layer

    layer, acts, weights, g = case
    kind, bits = layer["weight"]["kind"], layer["weight"]["bits"]
    record = _layer_record(layer)
    acc = accumulate(acts, record, weights, frac_bits)
    out = requant_layer(acc, record, g if layer["requant"]["G"] else None)
    # Independent reference: direct loops in float64 (every value stays below 2^53, so exact).
    k, stride, pad = layer["kernel"], layer["stride"], layer["pad"]
    n, c_in, h, w = acts.shape
    c_out, ho, wo = layer["out_shape"]
    req = layer["requant"]
    for b in range(n):
        for co in range(c_out):
            for oy in range(ho):
                for ox in range(wo):
                    total = 0.0
                    for ci in range(c_in):
                        for ky in range(k):
                            for kx in range(k):
                                iy, ix = oy * stride + ky - pad, ox * stride + kx - pad
                                if 0 <= iy < h and 0 <= ix < w:
                                    total += _weight_value_units(int(weights[co, ci, ky, kx]), kind, bits,
                                                                 frac_bits, int(acts[b, ci, iy, ix]))
                    assert acc[b, co, oy, ox] == total
                    t = total * req["M"][co] * float(g[b]) + req["B"][co] * 2.0 ** req["G"]
                    ref = math.floor(t / 2.0 ** (req["S"] + req["G"]) + 0.5)
                    if req["lo"] is not None:
                        ref = min(max(ref, req["lo"]), req["hi"])
                    assert out[b, co, oy, ox] == ref


@st.composite
def asq_cases(draw):
    c = draw(st.sampled_from([4, 8, 16]))
    hw = draw(st.sampled_from([1, 4, 16]))
    n = draw(st.integers(1, 3))
    fy = draw(st.integers(4, 12))
    y_max = 2**16 - 1
    extreme = draw(st.booleans())
    if extreme:
        y = np.full((n, c, hw), draw(st.sampled_from([0, y_max])))
    else:
        y = np.array(draw(st.lists(st.integers(0, y_max), min_size=n * c * hw, max_size=n * c * hw)))
    y = y.reshape(n, c, hw)
    wide = c >= 8
    ints = lambda lo, hi, size: np.array(draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size)))  # noqa: E731
    W1 = ints(-2047, 2047, (c // 4) * c).reshape(c // 4, c) if wide else None
    b1 = ints(-(2**30), 2**30, c // 4) if wide else None
    W2 = ints(-2047, 2047, c // 4 if wide else c)
    s_code = draw(st.integers(2048, 4095))
    G = 10
    p = arith.AsqConstants(
        W1=W1, b1=b1, S1=draw(st.integers(0, 16)), W2=W2, b2=draw(st.integers(-(2**30), 2**30)),
        S2=draw(st.integers(10, 24)), G=G, beta_min=1 << (G - 4), beta_max=2**14 - 1, s_code=s_code,
        FS=draw(st.integers(8, 16)), R=(s_code << G).bit_length() + 16, FY=fy,
        qmax=(1 << draw(st.integers(2, 8))) - 1)
    return y, p


@settings(max_examples=150, deadline=None)
@given(asq_cases())
def test_asq_unit_equals_float64_reference(case):
    y, p = case
    codes, beta = arith.asq_unit(y, p)
    for b in range(y.shape[0]):
        z = [float(sum(int(v) for v in y[b, c])) for c in range(y.shape[1])]
        if p.W1 is not None:
            h = []
            for j in range(p.W1.shape[0]):
                s = sum(float(p.W1[j, c]) * z[c] for c in range(len(z))) + float(p.b1[j])
                h.append(max(0.0, math.floor(s / 2.0**p.S1 + 0.5)))
        else:
            h = z
        s2 = sum(float(p.W2[j]) * h[j] for j in range(len(h))) + float(p.b2)
        ref_beta = min(max(math.floor(s2 / 2.0**p.S2 + 0.5), p.beta_min), p.beta_max)
        assert beta[b] == ref_beta
        q = p.s_code * ref_beta
        r = math.floor(2**p.R / q + 0.5)  # exact enough: checked against the integer divider spec
        assert abs(r - 2**p.R / q) <= 0.5
        shift = p.FY + p.R - p.FS - p.G
        for c in range(y.shape[1]):
            for i in range(y.shape[2]):
                ref = min(max(math.floor(int(y[b, c, i]) * r / 2.0**shift + 0.5), 0), p.qmax)
                assert codes[b, c, i] == ref
