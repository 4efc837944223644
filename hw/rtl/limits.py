"""The widths the generator offers, in one place (docs/hardware.md, "Limits").

POST and POT exist for low bit widths: a b-bit code has exponents 0..2^(b-1)-2, so the barrel
shifter grows as 2^(b-1) (an 8-bit POT weight would need shifts of 62 bits). The generator offers
POST up to 5 bits (shifts up to 7) and POT up to 4 bits (shifts up to 6), as the contract fixes;
uniform integer weights go to 8 bits, which is also what the first and last layers use.
"""

from golden.arith import INT_BITS, POST_BITS, POT_BITS

MIN_BITS = INT_BITS[0]
MAX_BITS = INT_BITS[-1]
MAX_MUL_BITS = {"post": POST_BITS[-1], "pot": POT_BITS[-1], "int": INT_BITS[-1]}


def check_mul_bits(kind: str, bits: int) -> None:
    """Raise ValueError when a ``kind`` multiplier is not offered at ``bits``."""
    top = MAX_MUL_BITS[kind]
    if not MIN_BITS <= bits <= top:
        raise ValueError(
            f"{kind.upper()} weights are offered for {MIN_BITS}..{top} bits, not {bits}; "
            f"use MUL=int above {top} bits"
        )
