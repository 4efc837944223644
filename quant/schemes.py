"""Scheme names (no torch import, so the command line starts fast)."""

# scheme -> (activation quantizer kind, weight quantizer kind) for the BITS-bit layers.
SCHEMES = {
    "lsq": ("lsq", "lsq"),
    "asq": ("asq", "lsq"),
    "lsq+pot": ("lsq", "pot"),
    "lsq+post": ("lsq", "post"),
    "asq+post": ("asq", "post"),
}
# Full precision: the model is left as it is. Accepted wherever a scheme is.
FLOAT_SCHEME = "fp"


def paper_scheme(bits: int) -> str:
    """The scheme the paper pairs with a width: ASQ+POST at 3 and 4 bits, ASQ otherwise."""
    return "asq+post" if bits in (3, 4) else "asq"
