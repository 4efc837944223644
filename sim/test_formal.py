"""Formal proofs (Yosys ``sat -prove``) that the hardware's arithmetic units equal golden's.

Multiplier lanes: every kind at every offered width, for every input. The requantizer: the one the
generator builds for every shipped bundle and one at the width limits, for every input. A wrong
reference is caught in each kind of proof, so a proof that passes means something.
"""

import dataclasses
from pathlib import Path

import pytest
from amaranth.hdl import signed, unsigned

from golden import arith, formats
from hw.rtl.dsp import PipelinedProduct
from hw.rtl.requant import Requantizer, RequantSpec
from sim import formal

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.formal

LANES = (
    [("post", b, b, False, formats.default_post_frac_bits(b)) for b in formats.POST_BITS]
    + [("post", b, b, False, 4) for b in (3, 4)]  # the export's other table precision
    + [("pot", b, b, False, 0) for b in formats.POT_BITS]
    + [("int", b, b, False, 0) for b in formats.INT_BITS]
    + [("int", 8, 8, True, 0),  # conv1: signed image codes
       ("int", 8, 9, True, 0)]  # the 8-bit engine's lane: int8 and uint8 codes in 9 signed bits
)


@pytest.mark.parametrize("kind, w_bits, act_bits, act_signed, frac_bits", LANES,
                         ids=lambda v: str(v))
def test_lane_equals_golden(kind, w_bits, act_bits, act_signed, frac_bits, tmp_path):
    proof = formal.prove_lane(kind, w_bits, act_bits, act_signed, frac_bits, workdir=tmp_path)
    assert proof.variables > 0


def test_lane_proof_catches_a_wrong_table(tmp_path):
    # A lane built with F = 2 against golden's F = 3 table differs on odd exponents.
    with pytest.raises(formal.ProofFailed, match="counterexample"):
        formal.prove_lane("post", 3, 3, False, 2, workdir=tmp_path, reference_frac_bits=3)


# ----------------------------------------------------------------------------- requantizer
#
# The requantizer is proved in parts (sim.formal; docs/arithmetic.md, section 3.1, composes them):
# its datapath with the two product units cut out, per requantizer, and each product unit by its
# partial products, per operand shapes. The shapes are proved once each (below), and every
# requantizer proved here asserts that its two shapes are among them.

SHIPPED = sorted(p for p in (ROOT / "models").glob("digits-*") if (p / "manifest.json").is_file())

#: Product unit shapes proved: the shipped requantizers' (acc 23 and 24 bits), the width limits'
#: (acc 8 and 33 bits) and every way PipelinedProduct splits an operand (one to three 16-bit
#: chunks beside an unsigned operand; one to four signed digits beside a signed one).
PRODUCT_SHAPES = [
    (signed(23), unsigned(14)), (signed(37), signed(16)),  # digits-b2 .. b4, digits-vary-b3
    (signed(24), unsigned(14)), (signed(38), signed(16)),  # digits-b8
    (signed(8), unsigned(14)), (signed(22), signed(16)),  # acc 8 bits, ASQ input
    (signed(33), unsigned(14)), (signed(47), signed(16)),  # acc 33 bits, ASQ input
    (signed(16), unsigned(14)), (signed(32), unsigned(14)), (signed(16), signed(16)),
    (signed(46), signed(16)), (signed(24), unsigned(1)), (unsigned(20), unsigned(20)),
    (unsigned(14), signed(20)),
    # acc * g on one block (the beta layers' accumulators fit a 16-bit digit), its addend at 2^15,
    # then * M_c: digits-b3, digits-b2, digits-vary-b3
    (unsigned(16), unsigned(14), signed(16), 15), (signed(29), signed(16)), (signed(25), signed(16)),
    (signed(28), signed(16)),
]


def _shape_id(shapes):
    def name(s):
        return f"{'s' if s.signed else 'u'}{s.width}"

    text = "x".join(name(s) for s in shapes[:2])
    return text + (f"+{name(shapes[2])}<<{shapes[3]}" if len(shapes) > 2 else "")


def _assert_products_proved(rq):
    # The composition needs the requantizer's product units to be the unit proved here.
    assert type(rq).product_unit is PipelinedProduct
    missing = [_shape_id(s) for s in formal.product_shapes(rq) if s not in PRODUCT_SHAPES]
    assert not missing, f"product shapes {missing} not in PRODUCT_SHAPES: add them, so they are proved"


@pytest.mark.parametrize("shapes", PRODUCT_SHAPES, ids=[_shape_id(s) for s in PRODUCT_SHAPES])
def test_product_unit_equals_product(shapes, tmp_path):
    assert formal.prove_product(shapes[0], shapes[1], tmp_path, *shapes[2:]).variables > 0


@pytest.mark.parametrize("bundle", SHIPPED, ids=lambda p: p.name)
def test_shipped_requantizer_equals_golden(bundle, tmp_path):
    """The requantizer the generator builds for a shipped bundle: every layer, channel and input."""
    from hw.eda.generate import build_top

    rq = build_top(bundle).requant
    assert formal.prove_requantizer_datapath(rq, bundle.name, workdir=tmp_path).variables > 0
    _assert_products_proved(rq)


def _limit_specs():
    """One layer per offered activation width, two ``y`` layers from an ASQ input (one with
    ``S = 0``) and two logits layers (one with ``S = 0``), with the widest constants the exporter writes (``|M|`` up to
    ``2^(M_BITS-1) - 1``, both signs)."""
    m_max = (1 << (formats.M_BITS - 1)) - 1
    bits = sorted(set(formats.INT_BITS) | set(formats.POST_BITS) | set(formats.POT_BITS))
    specs = [RequantSpec(M=(m_max, -m_max, 1), B=(-(1 << 20), (1 << 20) - 1, 0), S=formats.M_BITS + b,
                         lo=0, hi=(1 << b) - 1) for b in bits]
    specs.append(RequantSpec(M=(m_max, -m_max), B=((1 << 24) - 1, -(1 << 24)), S=14,
                             G=formats.BETA_FRAC, lo=0, hi=formats.Y_MAX, g_max=formats.BETA_MAX))
    specs.append(RequantSpec(M=(m_max, -m_max), B=(-(1 << 22), 5), S=0, lo=None, hi=None))
    specs.append(RequantSpec(M=(m_max, -3), B=(-(1 << 22), 9), S=0, G=formats.BETA_FRAC, lo=0,
                             hi=formats.Y_MAX, g_max=formats.BETA_MAX))  # S = 0 < G: the half apart
    specs.append(RequantSpec(M=(-m_max, 3), B=(1 << 22, -7), S=12, lo=None, hi=None))
    return specs


@pytest.mark.parametrize("acc_width", [8, 33])
def test_requantizer_at_the_width_limits_equals_golden(acc_width, tmp_path):
    """Every offered activation width in one requantizer, at a narrow accumulator and at the widest
    whose ``t`` stays below 63 bits (docs/arithmetic.md, section 3): 33 bits, ``t`` 62."""
    rq = Requantizer(_limit_specs(), acc_width=acc_width, channels=4, tag_width=3)
    assert max(arith.signed_width(*s.t_bounds(acc_width)) for s in rq.specs) < 63
    proof = formal.prove_requantizer_datapath(rq, f"limits acc{acc_width}", workdir=tmp_path)
    assert proof.variables > 0
    _assert_products_proved(rq)


def test_requantizer_proof_catches_round_half_down(tmp_path):
    # Golden rounds half up; a specification that rounds half down differs on every tie.
    rq = Requantizer([RequantSpec(M=(3, -5), B=(7, -9), S=4, lo=0, hi=7)], acc_width=10, channels=2)
    with pytest.raises(formal.ProofFailed, match="counterexample"):
        formal.prove_requantizer_datapath(rq, "half down", workdir=tmp_path, rounding="half_down")


@pytest.mark.parametrize("field, value", [("M", (3, -4)), ("B", (7, -8)), ("hi", 6)])
def test_requantizer_proof_catches_a_wrong_constant(field, value, tmp_path):
    # The ROMs (M, B), and the clamp, are checked against the bundle's constants, not read back.
    spec = RequantSpec(M=(3, -5), B=(7, -9), S=4, lo=0, hi=7)
    rq = Requantizer([spec, RequantSpec(M=(300, 2), B=(1000, -2), S=3, G=10, lo=0, hi=(1 << 16) - 1,
                                        g_max=(1 << 14) - 1)], acc_width=10, channels=2)
    wrong = [dataclasses.replace(spec, **{field: value})] + rq.specs[1:]
    with pytest.raises(formal.ProofFailed, match="counterexample"):
        formal.prove_requantizer_datapath(rq, f"wrong {field}", workdir=tmp_path, reference_specs=wrong)


def test_product_proof_catches_a_lost_carry(monkeypatch, tmp_path):
    # The top signed digit must be one bit wider than its share of the operand, to take the lower
    # digits' carries; one bit narrower, some operands are split wrong.
    from hw.rtl import dsp

    right = dsp._signed_digits

    def narrow_top(width):
        digits = right(width)
        return digits[:-1] + [(digits[-1][0], digits[-1][1] - 1)]

    monkeypatch.setattr(dsp, "_signed_digits", narrow_top)
    with pytest.raises(formal.ProofFailed, match="counterexample"):
        formal.prove_product(signed(24), signed(16), workdir=tmp_path)
