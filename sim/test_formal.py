"""Formal proofs (Yosys ``sat -prove``) that the hardware's arithmetic units equal golden's.

Multiplier lanes: every kind at every offered width, for every input; a wrong reference is caught,
so a proof that passes means something.
"""

import pytest

from golden import formats
from sim import formal

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
