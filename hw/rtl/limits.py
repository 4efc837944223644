"""The widths the generator offers: those of :mod:`golden.formats` (docs/hardware.md, "Limits").

POST and POT exist for low bit widths: a b-bit code has exponents 0..2^(b-1)-2, so the barrel
shifter grows as 2^(b-1) (an 8-bit POT weight would need shifts of 62 bits). The generator offers
POST up to 5 bits (shifts up to 7) and POT up to 4 bits (shifts up to 6), as the contract fixes;
uniform integer weights go to 8 bits, which is also what the first and last layers use.
"""

from golden.formats import MAX_BITS, MIN_BITS, check_weight_format
from golden.formats import MAX_WEIGHT_BITS as MAX_MUL_BITS

__all__ = ["MAX_BITS", "MAX_MUL_BITS", "MIN_BITS", "check_mul_bits"]


def check_mul_bits(kind: str, bits: int) -> None:
    """Raise :class:`golden.formats.WidthError` when a ``kind`` multiplier is not offered at ``bits``."""
    check_weight_format(kind, bits)
