"""Scheme names (no torch import, so the command line starts fast)."""

from golden.formats import SCHEMES

# scheme -> (activation quantizer kind, weight kind) for the BITS-bit layers; the weight kinds are
# golden.formats' names ("int" is the uniform LSQ weight). Defined in golden.formats, which the
# bundle reader checks a manifest's scheme against.
__all__ = ["SCHEMES", "FLOAT_SCHEME", "paper_scheme"]
# Full precision: the model is left as it is. Accepted wherever a scheme is.
FLOAT_SCHEME = "fp"


def paper_scheme(bits: int) -> str:
    """The scheme the paper pairs with a width: ASQ+POST at 3 and 4 bits, ASQ otherwise."""
    return "asq+post" if bits in (3, 4) else "asq"
